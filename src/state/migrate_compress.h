/*
 * migrate_compress.h - zstd for the migration stream's memory pages
 * (`shoal migrate --compress zstd[:LEVEL]`): the source's compressor and
 * the destination's bounded decoder.  The records that carry the frames
 * are state/migrate.c's; the design is in migrate_compress.c.
 */
#ifndef SHOAL_STATE_MIGRATE_COMPRESS_H
#define SHOAL_STATE_MIGRATE_COMPRESS_H

#include <stddef.h>

#include "base/error.h"

#define MIGRATE_Z_NAME          "zstd"   /* the one codec: hello's "ram_compress" */
#define MIGRATE_Z_LEVEL_DEFAULT 1        /* fastest: the stream waits on it */
#define MIGRATE_Z_LEVEL_MAX     19
#define MIGRATE_Z_CHUNK_PAGES   64       /* the source's frames: 256 KiB of pages at most */
#define MIGRATE_Z_MAX_PAGES     256      /* the most a destination takes in one frame */

/* "zstd" or "zstd:LEVEL" (1 to MIGRATE_Z_LEVEL_MAX): 0 with *level, or -1
 * with `e` (EXIT_USAGE) naming the value. */
int migrate_z_parse(const char *spec, int *level, struct error *e);

/* The source's compressor: one context and one output buffer, reused for
 * every chunk.  NULL with `e` when out of memory. */
struct migrate_z;
struct migrate_z *migrate_z_new(int level, struct error *e);
void migrate_z_free(struct migrate_z *z);

/* Compress `n` bytes (at most MIGRATE_Z_CHUNK_PAGES pages) at `src` into
 * one zstd frame that records its content size.  Its length, with *out
 * pointing at it (valid until the next call), or 0 when the frame would
 * not save at least its 4-byte length over sending the bytes as they are
 * (or zstd failed): send them raw then. */
size_t migrate_z_compress(struct migrate_z *z, const void *src, size_t n, const void **out);

/* The destination: decode the frame of `clen` bytes at `frame` into
 * exactly `dst_len` bytes at `dst`.  It must be one whole frame whose
 * recorded content size is `dst_len` and that decompresses to exactly
 * that; anything else is refused: -1 with *why saying what was wrong
 * (`dst` may then hold part of the frame's bytes).  0 on success. */
int migrate_z_decode(void *dst, size_t dst_len, const void *frame, size_t clen,
		     const char **why);

#endif
