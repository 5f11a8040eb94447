/*
 * chunker.h - content-defined chunking for the image store (chunker.c).
 *
 * A cut point depends only on the bytes just before it, so inserting or
 * deleting a few bytes moves the cuts near the edit and no others: the
 * chunks after it are the same bytes and get the same names.  The sizes
 * (min, avg, max) are the store's parameters, written in its STORE file,
 * so a store cuts every image alike.
 */
#ifndef SHOAL_STORE_CHUNKER_H
#define SHOAL_STORE_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

struct chunker_params {
	uint32_t min, avg, max;	/* bytes; min < avg < max, avg a power of two */
};

/* The store's default: 2 KiB / 8 KiB / 64 KiB (docs/store.md has the
 * figure behind it). */
#define CHUNK_MIN_DEFAULT (2u << 10)
#define CHUNK_AVG_DEFAULT (8u << 10)
#define CHUNK_MAX_DEFAULT (64u << 10)

/* 0 if p is usable (min >= 64, min < avg < max <= 16 MiB, avg a power of
 * two), -1 otherwise. */
int chunker_params_check(const struct chunker_params *p);

/* The length of the chunk that starts at buf: a cut point found in
 * buf[0..len), or len itself when len <= max and `last` says no more bytes
 * follow, or max.  With !last and no cut before len < max it returns 0:
 * the caller must supply more bytes (up to max) first. */
size_t chunker_next(const struct chunker_params *p, const uint8_t *buf, size_t len, int last);

#endif
