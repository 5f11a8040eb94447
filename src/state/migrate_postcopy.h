/*
 * migrate_postcopy.h - post-copy live migration (`shoal migrate
 * --postcopy-after N`): the destination runs the VM before it has all of
 * its memory and fetches the missing pages from the source on demand
 * (userfaultfd), while the source pushes the rest.  The design, the wire
 * and the point of no return: migrate_postcopy.c and docs/migration.md.
 */
#ifndef SHOAL_STATE_MIGRATE_POSTCOPY_H
#define SHOAL_STATE_MIGRATE_POSTCOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/guest_mem.h"
#include "base/state.h"

#define MIGRATE_POSTCOPY_MAX_AFTER 30      /* --postcopy-after 1..30 rounds */
#define MIGRATE_PC_REQUEST "SHOALPRQ"      /* dest -> source: u64 page index */
#define MIGRATE_PC_FINISHED "SHOALFIN"     /* dest -> source: u64 pages fetched on demand */
#define MIGRATE_PC_RECOVER "SHOALRCV"      /* dest -> source: the missing pages, on recovery */
#define MIGRATE_PC_BYE "SHOALBYE"          /* source -> dest: u64 0, it has SHOALFIN */
#define MIGRATE_PC_ID_LEN 16               /* the post-copy's identity, in its sections */
#define MIGRATE_RECOVER_TIMEOUT_S 300      /* --incoming ...,recover-timeout=S by default */

/* ---- the "postcopy" section: u64 pages of RAM, then ceil(pages / 64)
 * u64 words of a bitmap, bit p set when page p is not current at the
 * destination (the source sends it after the switch), then the
 * post-copy's identity (MIGRATE_PC_ID_LEN bytes the source made up, unique
 * but not secret: the key, if any, authenticates). ---- */

/* Append the section's payload for `bits` over `pages` pages. */
void migrate_postcopy_put_list(struct state_writer *w, const uint64_t *bits, uint64_t pages,
			       const uint8_t id[MIGRATE_PC_ID_LEN]);
/* Parse it for a destination of `mem_size` bytes of RAM: *bits (the
 * caller's to free), *missing (bits set) and `id`.  0, or -1 with `e`
 * (EXIT_BADSTATE): a page count not ours, a length not exact, a bit past
 * the last page. */
int migrate_postcopy_parse(uint64_t mem_size, const uint8_t *p, size_t len, uint64_t **bits,
			   uint64_t *missing, uint8_t id[MIGRATE_PC_ID_LEN], struct error *e);

/* ---- recovery after a dropped connection: the source's new connection
 * sends "SHOALMIG" and a "recover" section: u64 memory bytes, u64 pages,
 * the identity from the "postcopy" section.  The destination answers
 * MIGRATE_PC_RECOVER, u64 pages and the bitmap of the pages it still
 * lacks (or SHOALNAK, u32 n, n bytes: why not), then asks again for the
 * pages its faults still wait for. ---- */

void migrate_postcopy_put_recover(struct state_writer *w, uint64_t mem_size,
				  const uint8_t id[MIGRATE_PC_ID_LEN]);
/* Whether a "recover" payload is this post-copy's: 0, or -1 with `e`
 * (another VM's size, another identity, a length not exact). */
int migrate_postcopy_parse_recover(uint64_t mem_size, const uint8_t id[MIGRATE_PC_ID_LEN],
				   const uint8_t *p, size_t len, struct error *e);

/* ---- the source, after the destination's acknowledgement ---- */

struct migrate_pc_src {
	int fd;                           /* the connection */
	const char *uri;                  /* for messages */
	uint64_t *bits, pages;            /* the pages still to send; cleared as they go */
	/* Send pages [first, first + n) as "ram" sections (`demand`: asked
	 * for by the destination, else pushed); 0 or -1 with `e`. */
	int (*send)(void *opaque, uint64_t first, uint64_t n, bool demand, struct error *e);
	/* Send the "end" section; 0 or -1 with `e`. */
	int (*send_end)(void *opaque, struct error *e);
	/* The connection dropped (`why`): close it, say so, and wait for
	 * `shoal migrate --resume` to hand over a new one; send "SHOALMIG"
	 * and the "recover" section on it.  The new fd, or -1 with `e` (the
	 * VMM stops: nothing more to wait for).  NULL: no recovery. */
	int (*wait_resume)(void *opaque, const char *why, struct error *e);
	void *opaque;
};
/* Serve the destination's requests first and push every other page in the
 * background, send "end", and wait for its word that it has them all.  If
 * the connection drops, wait_resume gives a new one, the destination's
 * answer says which pages it still lacks, and the serving goes on with
 * those (again after each drop).  0, or -1 with `e` naming how many pages
 * it never got. */
int migrate_postcopy_serve(struct migrate_pc_src *ps, struct error *e);

/* ---- the destination ---- */

struct migrate_in;
struct migrate_pc_dst;
/* Before the acknowledgement: drop the stale copy of every missing page
 * (punch it out of the memfd) and register guest memory with a
 * userfaultfd in MISSING mode, so that any access to a missing page, by a
 * vCPU or by device emulation, waits for it.  Takes `bits` (freed on every
 * way out).  0 and *out, or -1 with `e` (the VM must not run: the source
 * keeps it). */
int migrate_postcopy_arm(struct guest_mem *m, bool tls, bool zero_layer, uint64_t *bits,
			 uint64_t missing, const uint8_t id[MIGRATE_PC_ID_LEN],
			 struct migrate_pc_dst **out, struct error *e);
/* After the acknowledgement: start the thread that asks for missing pages
 * as they fault and places what the source sends.  It owns `in` (its fd
 * and buffer) and `lfd` (the listening socket, -1: none) from here.  If
 * the source goes away before every page is here, the thread waits
 * `recover_s` seconds for it to come back on `lfd` (its faults wait too);
 * with no `lfd`, or when that time is up, the VM cannot go on: the thread
 * says so, naming how many pages are missing, and ends the process
 * (status 70).  When every page is here, it unregisters, tells the source,
 * closes `lfd` (removing `unlink_path` if not NULL) and ends.  0, or -1
 * with `e`. */
int migrate_postcopy_start(struct migrate_pc_dst *d, struct migrate_in *in, int lfd,
			   const char *uri, const char *unlink_path, unsigned recover_s,
			   struct error *e);
/* Before migrate_postcopy_start: the source's go-ahead (MIGRATE_RUN) did
 * not come.  The thread starts as after a drop (`why`, a string that
 * lives on): it waits for the source on its listening socket, the VM held
 * paused until the source reconnects (only a source past the switch,
 * which had our acknowledgement, comes back for a recovery).  The thread
 * then writes 1 (a u64) to `release_fd`, an eventfd, once; the caller
 * resumes the VM on it.  Without a reconnection within recover-timeout
 * the VM, never run here, is stopped. */
void migrate_postcopy_held(struct migrate_pc_dst *d, const char *why, int release_fd);
/* A destination armed but never started (the acknowledgement failed). */
void migrate_postcopy_free(struct migrate_pc_dst *d);

#endif
