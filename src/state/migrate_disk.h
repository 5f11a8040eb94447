/*
 * migrate_disk.h - the disks of a live migration (`shoal migrate
 * --with-disks`): each writable disk mirrored to the destination's own
 * image beside the memory rounds.  The design and the stream's "disks" and
 * "disk" sections are described in migrate_disk.c; users' page:
 * docs/migration.md.
 */
#ifndef SHOAL_STATE_MIGRATE_DISK_H
#define SHOAL_STATE_MIGRATE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/state.h"
#include "vmm/config.h"

struct vm;

#define MIGRATE_DISK_BLOCK (64u << 10)   /* bytes a dirty bit stands for */
#define MIGRATE_DISK_CHUNK (1u << 20)    /* data bytes per record, and per section */
#define MIGRATE_DISK_ZERO  1             /* record kinds */
#define MIGRATE_DISK_DATA  2
#define MIGRATE_DISK_F_BASE 1            /* "disks" flags: the backing image's identity follows */
#define MIGRATE_DISK_ANSWER "SHOALDSK"   /* the destination's answer to "disks" */

/* ---- the destination ----
 *
 * What the destination has, and where the records go: `write` writes
 * `len` bytes of `buf` at `off` of disk `disk`, or zeroes when `buf` is
 * NULL; 0 or -errno.  migrate_disk_target_init fills it from a VM (the
 * disk's I/O thread does the writes); unit tests fill it by hand. */
struct migrate_disk_target {
	int n;                                 /* the VM's disks */
	uint64_t size[VM_MAX_DISKS];
	bool writable[VM_MAX_DISKS];
	const char *path[VM_MAX_DISKS];
	void *dev[VM_MAX_DISKS];               /* migrate_disk_target_init: the devices */
	/* the chain identity of a qcow2 disk's backing image (docs/block.md),
	 * when it has one that no other program changed */
	bool has_base[VM_MAX_DISKS];
	char base_id[VM_MAX_DISKS][37];
	uint64_t base_gen[VM_MAX_DISKS];
	bool announced[VM_MAX_DISKS];          /* named by the "disks" section */
	bool top_only[VM_MAX_DISKS];           /* ... with our base: only its top layer comes */
	int order[VM_MAX_DISKS], nlisted;      /* the disks in the order listed */
	bool listed;                           /* a "disks" section came */
	int (*write)(void *opaque, int disk, const void *buf, uint64_t off, uint64_t len);
	void *opaque;
	uint64_t data_bytes, zero_bytes;       /* applied so far */
};

/* Fill `t` from the destination VM's disks.  0, or -1 with `e`. */
int migrate_disk_target_init(struct migrate_disk_target *t, struct vm *vm, struct error *e);
/* A "disks" section's payload: u32 block size, u32 count, then count
 * times u32 disk index, u64 size in bytes, u32 flags, and with
 * MIGRATE_DISK_F_BASE the source's backing image's identity: 36 bytes of
 * id, u64 generation.  Each disk must be one of ours, writable, named
 * once, and of our size: else -1 with `e` (EXIT_BADSTATE, naming the disk
 * and both sizes for a size mismatch).  A disk whose backing image has
 * the same identity as the source's is marked top_only. */
int migrate_disk_parse_list(struct migrate_disk_target *t, const uint8_t *p, size_t len,
			    struct error *e);
/* The answer to the "disks" section, into `w`: MIGRATE_DISK_ANSWER, u32
 * count, then for each disk in the order listed u8 1 (send only the top
 * layer: our base has the rest) or 0 (send all the guest sees). */
void migrate_disk_answer(const struct migrate_disk_target *t, struct state_writer *w);
/* A "disk" section's payload: u32 disk index, then records of u8 kind
 * (1 zeroes, 2 data), u64 offset, u64 length[, length bytes].  Every record
 * is checked (a listed disk, a known kind, 0 < length, inside the disk,
 * data at most MIGRATE_DISK_CHUNK and all present) before any is written.
 * 0, or -1 with `e` (EXIT_BADSTATE when malformed, EXIT_HOST when a write
 * fails). */
int migrate_disk_apply(struct migrate_disk_target *t, const uint8_t *p, size_t len,
		       struct error *e);
/* Flush the announced disks (before the acknowledgement).  0 or -1 with `e`. */
int migrate_disk_target_flush(struct migrate_disk_target *t, struct error *e);

/* ---- the source ---- */

struct migrate_disks;

struct migrate_disk_stats {
	uint64_t disks, size;                  /* mirrored disks, their bytes */
	uint64_t data_bytes, zero_bytes;       /* sent as bytes, sent as a flag */
	uint64_t dirty_blocks;                 /* waiting to be sent again */
	uint64_t resent_blocks;                /* sent again after the bulk copy */
	uint64_t top_only;                     /* disks sent as their top layer only */
	uint64_t base_bytes;                   /* left to the destination's base */
};

/* Where sections go: the caller's writer, and `flush` to send the section
 * begun with `mark` (0, or -1 with `e`). */
struct migrate_disk_out {
	struct state_writer *w;
	int (*flush)(void *opaque, size_t mark, struct error *e);
	void *opaque;
};

/* Start mirroring the VM's writable disks: their tracking goes on.  0, or
 * -1 with `e` and nothing started.  The VM's disks must not change until
 * migrate_disks_end, which turns tracking off and frees (NULL is fine). */
int migrate_disks_start(struct vm *vm, struct migrate_disks **out, struct error *e);
void migrate_disks_end(struct migrate_disks *md);
/* The "disks" section (its payload) into o->w, and flush it. */
int migrate_disks_send_list(struct migrate_disks *md, const struct migrate_disk_out *o,
			    struct error *e);
/* The destination's answer after MIGRATE_DISK_ANSWER: `n` bytes, one a
 * disk in the order listed, 1 to send only its top layer.  0, or -1 with
 * `e` when it does not fit what was listed. */
int migrate_disks_set_modes(struct migrate_disks *md, const uint8_t *modes, uint32_t n,
			    struct error *e);
/* The bulk copy: every block of every disk, zero ranges as a flag. */
int migrate_disks_send_all(struct migrate_disks *md, const struct migrate_disk_out *o,
			   struct error *e);
/* Take the blocks written since the last take; returns how many wait. */
uint64_t migrate_disks_sync(struct migrate_disks *md);
/* Send the blocks waiting (after migrate_disks_sync), and forget them. */
int migrate_disks_send_dirty(struct migrate_disks *md, const struct migrate_disk_out *o,
			     struct error *e);
void migrate_disks_get_stats(const struct migrate_disks *md, struct migrate_disk_stats *st);

/* ---- shared storage: the write lock moves (docs/migration.md) ---- */

/* The source, paused and quiesced, before "end": flush every writable disk
 * and give up its locks (vblk_inactivate), so that the destination can
 * take them.  0, or -1 with `e` and every disk active again. */
int migrate_disks_inactivate(struct vm *vm, struct error *e);
/* Take every writable disk's locks (back): the destination when "end"
 * has come (a disk opened inactive is opened again for writing), the
 * source when the migration failed.  With `retry` (the source), a disk
 * another process still holds is tried again for up to 2 s.  0, or -1
 * with `e` naming the disk; then the disks this call activated are
 * inactive again, so the other end can retake them. */
int migrate_disks_activate(struct vm *vm, bool retry, struct error *e);

#endif
