/*
 * snapobj.h - snapshots as store objects (snapobj.c, docs/store.md
 * "Snapshots in the store"): a snapshot directory (docs/snapshots.md) goes
 * into an image store as one object whose files and disks are chunked and
 * deduplicated like images, and comes back out as a directory that
 * `shoal run --restore` takes.
 */
#ifndef SHOAL_STORE_SNAPOBJ_H
#define SHOAL_STORE_SNAPOBJ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "store/chain.h"
#include "store/store.h"

struct store_snap_stats {
	uint64_t files, disks;		/* parts stored from the directory, disks */
	uint64_t disks_by_ref;		/* disks that are images already in the store */
	uint64_t raw_bytes;		/* bytes of the parts read (logical) */
	uint64_t chunks, zero_chunks, new_chunks, new_bytes, stored_bytes;
};

/* Store snapshot directory `snapdir` as object `name` (a name no image or
 * snapshot has).  All or nothing: a failure or a kill leaves no object. */
int store_snap_import(struct store *s, const char *snapdir, const char *name,
		      struct store_snap_stats *st, store_progress_fn progress, void *opaque,
		      struct error *e);
/* Write snapshot `name` to the new directory `outdir` (it must not exist):
 * its files byte for byte (zero chunks as holes), each disk as
 * outdir/disk-N.raw, and manifest.json's disks pointed at them.  A failure
 * leaves no outdir. */
int store_snap_export(struct store *s, const char *name, const char *outdir, struct error *e);
/* The same; with chain, a disk that was a qcow2 chain (a stored image
 * referred to, or a disk linked to its parent image) comes back as one,
 * OUTDIR/disk-N.qcow2 over its parents' files in OUTDIR, each with its
 * identity, and manifest.json keeps the disk's chain identity
 * (store/chain.c); note() gets a line per file. */
int store_snap_export_chain(struct store *s, const char *name, const char *outdir, bool chain,
			    store_chain_note_fn note, void *opaque, struct error *e);

bool store_snap_exists(struct store *s, const char *name);
/* Forget snapshot `name` (gc frees its chunks). */
int store_snap_rm(struct store *s, const char *name, struct error *e);
/* "a, b": the snapshots whose disks refer to image `image` ("" if none). */
void store_snap_users_of(struct store *s, const char *image, char *out, size_t len);

struct store_snap_info {
	char name[65];
	uint64_t added, files, disks, bytes;	/* bytes: the parts' logical sizes */
	uint64_t chunks;
};
/* Every snapshot object, sorted by name; free(*v). */
int store_snap_list(struct store *s, struct store_snap_info **v, size_t *n, struct error *e);

/* The image server and pull (serve.c, pull.c).  The object as JSON, its
 * snapshot.json with "parts": {PART: {size, format, chunks: [{hash, len}
 * or {len, zero}]}}; a disk that refers to an image travels as a part
 * "disk-N" of its own (the puller need not have the image). */
json_t *store_snap_describe(struct store *s, const char *name, struct error *e);
/* The sorted SHA-256s of every stored chunk of snapshot `name`'s parts
 * (with repeats); free(*h).  The server serves a client these chunks. */
int store_snap_hashes(struct store *s, const char *name, uint8_t (**h)[32], size_t *n,
		      struct error *e);
/* The manifest of part `part` of snapshot `name` (a file's name, or
 * "disk-N"; the image it refers to for a disk by reference). */
int store_snap_part_manifest(struct store *s, const char *name, const char *part,
			     struct store_manifest *m, struct error *e);
/* A description from a server, checked: its files and disks each name a
 * part, the names are image names (so no path leaves the object). */
int store_snap_check_desc(json_t *desc, const char *where, struct error *e);
/* Record a pulled object: the parts pn[i] with manifests pm[i] (every
 * chunk already in the store), and the description's files and disks. */
int store_snap_put(struct store *s, const char *name, json_t *desc, const char *const *pn,
		   const struct store_manifest *pm, size_t n, struct error *e);

#endif
