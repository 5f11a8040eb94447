/*
 * hoststore.h - the host's image store in shoald (api_store.c,
 * docs/daemon.md "Snapshots through the store"): push a daemon's snapshot
 * into it, pull one from it (or, through it, from an image server) as a
 * snapshot of this daemon.
 */
#ifndef SHOAL_HOST_HOSTSTORE_H
#define SHOAL_HOST_HOSTSTORE_H

#include <jansson.h>
#include <stddef.h>

#include "host/api.h"
#include "host/db.h"

/* --store and the server options: the store is made when missing, the
 * options checked, leftovers of a killed pull removed.  No --store: 0,
 * nothing.  0, or -1 with a 400 or 500 in `e`.  (daemon.c) */
int host_store_open(struct host *h, struct api_err *e);

/* POST /v1/snapshots/{name}/push {"as": STORE_NAME} and
 * POST /v1/snapshots/{name}/pull {"from": "store" | "server"}. */
int api_snapshot_push(struct api_call *c);
int api_snapshot_pull(struct api_call *c);

/* ---- pure parts (tests/unit/test_host_store.c) ---- */

/* The file a pushed snapshot carries for the daemon that pulls it:
 * {"format": "shoald-snapshot", "version": 1, "name", "vm", "spec",
 * "created_ms", "vcpus", "memory_bytes", "memory_data_bytes", "pause_ms",
 * "total_ms"}.  Malloc'd text, or NULL (out of memory). */
#define HSTORE_META "shoald.json"
char *hstore_meta_dump(const struct snapshot_record *r);
/* Its fields into `r` (name, dir and disks untouched; r->spec malloc'd,
 * the caller's to free).  0, or -1 with why in err.  A "vm" that is not a
 * VM name becomes "-". */
int hstore_meta_parse(const char *text, struct snapshot_record *r, char *err, size_t len);

/* An exported snapshot's manifest.json made this host's: each disk record
 * (and the config's disk at the same index) whose path is
 * FROM_DIR/disk-N.raw is pointed at TO_DIR/disk-N.raw, and the config's
 * "confine" becomes confine[0..n) (this daemon's --allow-dir directories,
 * not the pushing host's).  The basenames moved go into moved[] (up to
 * max, each 32 bytes).  Their count, or -1 with why in err. */
int hstore_relocate(json_t *man, const char *from_dir, const char *to_dir,
		    const char *const *confine, int nconfine, char (*moved)[32], int max,
		    char *err, size_t len);

#endif
