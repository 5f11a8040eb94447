/*
 * dirty_bitmap.h - a dirty block bitmap over a disk: one bit per block of
 * `gran` bytes, set by whoever writes the disk, taken (read and cleared)
 * by whoever copies it.  Live migration mirrors a disk with it
 * (state/migrate_disk.c): the device marks every write, discard and
 * write-zeroes as it completes, and each round takes the marks and sends
 * those blocks again.
 *
 * Threads: marking and taking may run on different threads at once.  Each
 * word is changed with one atomic operation (a fetch-or to mark, an
 * exchange with zero to take), so a mark is either in what a take returns
 * or still in the bitmap for the next take: never lost.  init and free
 * belong to one owner, with no marker running.
 *
 * Invariants: bits past the last block (nbits) are never set; a range is
 * clamped to the disk, so a mark can never reach outside the map.
 */
#ifndef SHOAL_BLOCK_DIRTY_BITMAP_H
#define SHOAL_BLOCK_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct bd_dirty {
	uint64_t size;          /* bytes covered */
	uint32_t gran;          /* bytes per bit: a power of two, 512 or more */
	uint64_t nbits, words;  /* blocks, and 64-bit words holding them */
	uint64_t *bits;
};

/* A clear map of a disk of `size` bytes in blocks of `gran` bytes.
 * 0, -EINVAL (gran not a power of two of at least 512) or -ENOMEM. */
int bd_dirty_init(struct bd_dirty *d, uint64_t size, uint32_t gran);
void bd_dirty_free(struct bd_dirty *d);

/* Mark the blocks [off, off+len) touches (clamped to the disk; len 0 marks
 * nothing). */
void bd_dirty_mark(struct bd_dirty *d, uint64_t off, uint64_t len);
/* Move every mark into `out` (d->words words, OR-ed in) and clear them
 * here.  Returns how many bits were taken. */
uint64_t bd_dirty_take(struct bd_dirty *d, uint64_t *out);
/* Clear every mark. */
void bd_dirty_clear(struct bd_dirty *d);

/* In a plain bitmap of `nbits` bits: the next run of set bits at or after
 * *pos, at most `max` long.  True with *pos at its first bit and *n its
 * length; false when none is left. */
bool bd_bits_next_run(const uint64_t *bits, uint64_t nbits, uint64_t *pos, uint64_t *n,
		      uint64_t max);
/* Set bits among the first `nbits` of `bits`. */
uint64_t bd_bits_count(const uint64_t *bits, uint64_t nbits);

#endif
