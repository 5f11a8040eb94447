/*
 * pristine.h - disk reads served from pristine copies (issue 13 item 6,
 * seed mechanism 19): a cache of blocks of read-only images, shared by
 * every VMM process of the host that uses the same image.  See pristine.c
 * for the design and its invariants, docs/block.md for the user's view.
 */
#ifndef SHOAL_BLOCK_PRISTINE_H
#define SHOAL_BLOCK_PRISTINE_H

#include <stdint.h>

#include "block/blockdev.h"

#define PRISTINE_BLOCK 4096u			/* bytes of one entry */
#define PRISTINE_DEFAULT_BYTES (256ull << 20)	/* cache data per image */

struct pristine;

/* This process's counts for one cache (the shared file keeps none). */
struct pristine_stats {
	uint64_t hits;		/* blocks served from the cache */
	uint64_t hit_bytes;	/* bytes of guest reads served from it */
	uint64_t file_bytes;	/* bytes read from the image's files on misses */
	uint64_t refused;	/* entries found torn or corrupt, read from the file instead */
};

/* Give the read-only image `img` (and the chain beneath it) the cache in
 * directory `dir` that belongs to its identity, creating it if none;
 * `max_bytes` (0: the default) bounds its data.  0, or -1 with `e`. */
int pristine_attach(struct blockdev *img, const char *dir, uint64_t max_bytes,
		    struct error *e);
/* blockdev_open's part: attach to the first read-only image of the chain
 * `top` (top itself when read-only, else its backing file), when
 * o->pristine_dir is set.  An image others may write (force_share,
 * share_writes), or one over a SCHEME: image that is no file, gets none.
 * 0, or -1 with `e`. */
int pristine_attach_chain(struct blockdev *top, const struct blockdev_opts *o,
			  struct error *e);
/* Unmap; logs this process's counts at info level. */
void pristine_close(struct pristine *p);

/* Read [off, off+len) of img, inside img->size, through its cache: blocks
 * found intact are copied from it, the rest read with img->ops->read and
 * put in.  *file_bytes (may be NULL) gets the bytes read from files.
 * 0 or -errno (of the file read). */
int pristine_read(struct pristine *p, struct blockdev *img, void *buf, uint64_t off,
		  uint64_t len, uint64_t *file_bytes);

/* The counts of the cache in bd's chain; -1 when it has none. */
int blockdev_pristine_stats(const struct blockdev *bd, struct pristine_stats *st);

/* For tests: the shared file's path, and where block `blk`'s data lies in it. */
const char *pristine_file(const struct pristine *p);
uint64_t pristine_data_offset(const struct pristine *p, uint64_t blk);

#endif
