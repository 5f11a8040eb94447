/*
 * bloom2d.h - the two-dimensional Bloom-filter bit array (bloom2d.c).
 *
 * One column per log segment; each column is a Bloom filter of the chunk
 * hashes in that segment.  A lookup ANDs k rows and gives the segments
 * that may hold the chunk; the segment's own table then says yes or no.
 * No false negatives: every hash added to a column is found in it.
 */
#ifndef SHOAL_STORE_BLOOM2D_H
#define SHOAL_STORE_BLOOM2D_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct bloom2d {
	uint32_t m;		/* bits per filter: rows */
	uint32_t k;		/* hash functions */
	uint32_t ncols;		/* columns in use */
	uint32_t cap;		/* columns allocated (a multiple of 64) */
	uint32_t *seg;		/* [cap] the segment id of each column */
	uint32_t *count;	/* [cap] hashes added to each column */
	uint64_t *bits;		/* [m][cap/64]: row-major, one row per bit */
};

/* An empty array of m rows (>= 64) and k hash functions (1..32). */
int bloom2d_init(struct bloom2d *b, uint32_t m, uint32_t k, struct error *e);
void bloom2d_free(struct bloom2d *b);
/* Add a column for segment `seg`; its index, or -1 (out of memory). */
int bloom2d_add_column(struct bloom2d *b, uint32_t seg);
/* The column of segment `seg`, or -1. */
int bloom2d_column(const struct bloom2d *b, uint32_t seg);
/* Drop column `col` (the last column moves into its place). */
void bloom2d_drop_column(struct bloom2d *b, uint32_t col);
/* Clear column `col` (count 0, no bits). */
void bloom2d_clear_column(struct bloom2d *b, uint32_t col);
/* Add a 32-byte hash to column `col`. */
void bloom2d_add(struct bloom2d *b, uint32_t col, const uint8_t hash[32]);
/* The candidate columns for `hash`: their indexes in out[], at most max of
 * them; returns how many there are (may exceed max). */
size_t bloom2d_lookup(const struct bloom2d *b, const uint8_t hash[32], uint32_t *out, size_t max);
/* The false-positive rate the formula gives for n hashes in a column:
 * (1 - e^(-kn/m))^k. */
double bloom2d_fp_rate(uint32_t m, uint32_t k, uint64_t n);

/* Persist to `path` (written to path.tmp, fsynced, renamed) / load. */
int bloom2d_save(const struct bloom2d *b, const char *path, struct error *e);
int bloom2d_load(struct bloom2d *b, const char *path, struct error *e);

#endif
