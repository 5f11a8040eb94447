/*
 * migrate.h - live migration of a running VM to another Shoal process:
 * the stream, the source's pre-copy loop and the destination's loader.
 * The design and the stream are described in migrate.c and, for users,
 * in docs/migration.md.
 */
#ifndef SHOAL_STATE_MIGRATE_H
#define SHOAL_STATE_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/guest_mem.h"
#include "base/state.h"

struct vm;

#define MIGRATE_MAGIC    "SHOALMIG"   /* the stream's first 8 bytes */
#define MIGRATE_VERSION  1
#define MIGRATE_READY    "SHOALRDY"   /* the destination's answer to "sync" */
#define MIGRATE_RUN      "SHOALRUN"   /* the source's answer to SHOALACK: run it there */
#define MIGRATE_DOWNTIME_MS_DEFAULT 300
#define MIGRATE_MAX_ROUNDS 30         /* then stop and copy, converged or not */
#define MIGRATE_THROTTLE_FIRST 20     /* --auto-converge: % of vCPU time asleep */
#define MIGRATE_THROTTLE_STEP  10     /* ... and the increment, up to 99 */

/* An address: "unix:PATH" or "tcp:HOST:PORT".  0, or -1 with `e`
 * (EXIT_USAGE) naming what is wrong. */
struct migrate_addr {
	bool tcp;
	char path[108];                   /* unix: the socket's path */
	char host[256], port[16];         /* tcp */
};
int migrate_parse_addr(const char *uri, struct migrate_addr *a, struct error *e);

/* Connect to the destination at `uri` (a stream socket with 30 s send and
 * receive timeouts): `shoal migrate` does it and hands the socket to the
 * VMM with its request, so that the VMM, under seccomp, opens no network
 * connection itself.  The descriptor, or -1 with `e`. */
int migrate_connect(const char *uri, struct error *e);

/* The destination (`shoal run --incoming URI`): listen on `uri`, take one
 * connection, fill `vm` (built by vm_create_incoming, not yet run) from
 * its stream, restore its vCPU, KVM and device state, and acknowledge.
 * The VM may then run.  A bad, damaged, truncated or foreign stream is
 * refused: -1 with `e` (EXIT_BADSTATE, one line naming the reason), and
 * the source is told why; the VM must then be destroyed, not run. */
int migrate_incoming(struct vm *vm, const char *uri, struct error *e);
/* Before vm_create_incoming: a writable disk whose write lock another
 * writer (the source, on shared storage) holds opens inactive, and the
 * VM takes the lock when the stream ends, after the source gave it up
 * (migrate_disk.c, docs/migration.md "Shared storage"). */
void migrate_incoming_prepare(void);

/* Add the "migrate" and "migrate-status" commands to the VM's control
 * socket (docs/vmm-control.md); migrate_wait cancels a migration still
 * going and frees them (before vm_destroy). */
void migrate_add_command(struct vm *vm);
void migrate_wait(struct vm *vm);

/* ---- the stream's pieces, exposed for unit tests ----
 *
 * A section is base/state.h's framing (magic, name, version 1, length,
 * payload) followed by the XXH3-64 of all of it.  migrate_section_begin
 * starts one in `w`; migrate_section_end closes it and appends the
 * checksum. */
size_t migrate_section_begin(struct state_writer *w, const char *name);
void migrate_section_end(struct state_writer *w, size_t start, size_t mark);

/* Reading a stream from `fd`: `bytes` counts what was read (for errors). */
struct migrate_tls;
struct migrate_in {
	int fd;
	struct migrate_tls *tls;          /* NULL: in clear (state/migrate_tls.h) */
	uint8_t *buf;
	size_t cap;
	uint64_t bytes, sections;
};
/* Read the 8-byte magic; 0 or -1 with `e`. */
int migrate_read_magic(struct migrate_in *in, struct error *e);
/* Read one section: its name, and a pointer to its payload (valid until
 * the next call).  Checks the framing, the version and the checksum.
 * 0, or -1 with `e` (EXIT_BADSTATE) saying what and where. */
int migrate_read_section(struct migrate_in *in, char name[64], const uint8_t **payload,
			 size_t *len, struct error *e);
void migrate_in_free(struct migrate_in *in);

/* A "ram" section's payload: records of u64 (page offset | kind: 1 zero
 * pages, 2 data follows, 3 compressed), u32 pages[, pages * 4096 bytes |
 * u32 n, n bytes of one zstd frame of exactly the pages, at most
 * MIGRATE_Z_MAX_PAGES].  Applies them to `m`; every range is checked
 * against it, and every frame must decode to exactly its pages
 * (state/migrate_compress.h).  0, or -1 with `e`. */
int migrate_apply_ram(const struct guest_mem *m, const uint8_t *p, size_t len,
		      struct error *e);

/* One record of such a payload, read from `r` (its pages skipped) and
 * checked against a RAM of `mem_size` bytes: the range at `off`, of
 * `pages` pages, zero (`data` NULL) or with their bytes at `data`.  0, or
 * -1 with `e` (EXIT_BADSTATE) saying what is wrong; post-copy's
 * destination reads records with it, and it refuses compressed ones
 * (kind 3), which only migrate_apply_ram takes. */
struct migrate_ram_rec {
	uint64_t off;
	uint32_t kind, pages;
	const uint8_t *data;
	uint32_t clen;                    /* kind 3 (migrate_apply_ram only): the frame's bytes */
};
struct state_reader;
int migrate_ram_next(struct state_reader *r, uint64_t mem_size, struct migrate_ram_rec *rec,
		     struct error *e);
/* A "hello" section's payload for a destination of `mem_size` bytes of RAM
 * and `ncpus` vCPUs: the page size, memory and vCPU count must be its own,
 * and `*cpu` receives the CPU the guest saw (a JSON object for
 * snapshot_check_cpu, the caller's to free).  0, or -1 with `e`
 * (EXIT_BADSTATE) and *cpu NULL. */
struct json_t;
int migrate_parse_hello(uint64_t mem_size, int ncpus, const uint8_t *p, size_t len,
			struct json_t **cpu, struct error *e);

#define MIGRATE_RAM_ZERO 1
#define MIGRATE_RAM_DATA 2
#define MIGRATE_RAM_ZSTD 3                /* --compress: a zstd frame of the pages */

#endif
