/*
 * qcow2_refcount.c - reference counts and cluster allocation.
 *
 * Every host cluster has a counter of 2^refcount_order bits, kept in
 * refcount blocks that the refcount table points at.  A cluster is free when
 * its count is zero; clusters past the last refcount block count as free.
 *
 * Allocation scans upwards from free_hint (the lowest index that may be
 * free) and sets the found clusters to 1.  Setting a count may need a new
 * refcount block, which itself needs a cluster: that cluster is found by the
 * same scan, skipping the range being allocated, and if it falls inside the
 * range the new block covers, it counts itself.  When the refcount table is
 * full it is moved to the end of the file, bigger, together with whatever
 * refcount blocks cover its new home.
 *
 * Decrements are deferred (qcow2_free_deferred): a cluster stays allocated
 * until the flush that has made the metadata no longer referencing it
 * durable, so it can never be reused while an on-disk L2 entry still
 * points at it.  That and "refcount blocks reach the disk before the L2
 * entries they cover" (qcow2.c) are the crash-safety invariants.
 *
 * New refcount blocks and table entries are written through at once, with a
 * sync in between, since a table entry pointing at a block of garbage would
 * be worse than a leak.  This happens once per 2 GiB of image with the
 * default 64 KiB clusters.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"

uint64_t qcow2_refcount_max(const struct qcow2 *q)
{
	return q->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << q->refcount_order)) - 1;
}

/* Counter `i` of a refcount block. */
static uint64_t rb_get(const struct qcow2 *q, const uint8_t *b, uint64_t i)
{
	switch (q->refcount_order) {
	case 0: return (b[i / 8] >> (i % 8)) & 1;
	case 1: return (b[i / 4] >> (2 * (i % 4))) & 3;
	case 2: return (b[i / 2] >> (4 * (i % 2))) & 15;
	case 3: return b[i];
	case 4: { uint16_t v; memcpy(&v, b + 2 * i, 2); return be16toh(v); }
	case 5: { uint32_t v; memcpy(&v, b + 4 * i, 4); return be32toh(v); }
	default: { uint64_t v; memcpy(&v, b + 8 * i, 8); return be64toh(v); }
	}
}

static void rb_set(const struct qcow2 *q, uint8_t *b, uint64_t i, uint64_t val)
{
	unsigned sh, bits;

	switch (q->refcount_order) {
	case 0: case 1: case 2:
		bits = 1u << q->refcount_order;
		sh = (i % (8 / bits)) * bits;
		b[i * bits / 8] = (b[i * bits / 8] & ~(((1u << bits) - 1) << sh)) | (val << sh);
		return;
	case 3: b[i] = val; return;
	case 4: { uint16_t v = htobe16(val); memcpy(b + 2 * i, &v, 2); return; }
	case 5: { uint32_t v = htobe32(val); memcpy(b + 4 * i, &v, 4); return; }
	default: { uint64_t v = htobe64(val); memcpy(b + 8 * i, &v, 8); return; }
	}
}

/* Recount reftable_used, which bounds the overlap guard's pass over the
 * refcount blocks, after the table was loaded or replaced. */
static void reftable_note_used(struct qcow2 *q)
{
	q->reftable_used = q->reftable_size;
	while (q->reftable_used && !q->reftable[q->reftable_used - 1])
		q->reftable_used--;
}

/* Read the refcount table; cap its size. */
int qcow2_refcount_load(struct qcow2 *q, struct error *e)
{
	size_t bytes = (size_t)q->reftable_clusters << q->cluster_bits;

	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
	q->reftable_size = bytes / 8;
	q->reftable = malloc(bytes);
	if (!q->reftable)
		return error_set(e, EXIT_HOST, "out of memory");
	if (bd_pread(q->fd, q->reftable, bytes, q->reftable_offset, true))
		return error_set(e, EXIT_NOINPUT, "%s: cannot read refcount table", q->bd->path);
	for (uint32_t i = 0; i < q->reftable_size; i++)
		q->reftable[i] = be64toh(q->reftable[i]);
	reftable_note_used(q);
	q->free_hint = 1;
	return 0;
}

/* The refcount block covering cluster `c`, or NULL (and *r = 0) if none. */
static int rb_block(struct qcow2 *q, uint64_t c, uint8_t **b)
{
	uint64_t t = c >> q->rb_bits, off;

	*b = NULL;
	if (t >= q->reftable_size)
		return 0;
	off = q->reftable[t] & QCOW2_REFT_OFFSET_MASK;
	if (!off)
		return 0;
	if ((off & (q->cluster_size - 1)) || off < q->cluster_size ||
	    (off >= q->reftable_offset && off < q->reftable_offset +
	     ((uint64_t)q->reftable_clusters << q->cluster_bits)))
		return qcow2_signal_corruption(q, "refcount table entry %llu points at 0x%llx, "
					       "which is not a valid refcount block offset",
					       (unsigned long long)t, (unsigned long long)off);
	return qcow2_cache_get(q->rb_cache, off, false, b);
}

/* The refcount of host cluster index `c` (0 if no block covers it). */
int qcow2_refcount_get(struct qcow2 *q, uint64_t c, uint64_t *rc)
{
	uint8_t *b;
	int r = rb_block(q, c, &b);

	*rc = (!r && b) ? rb_get(q, b, c & ((1ull << q->rb_bits) - 1)) : 0;
	return r;
}

/* First cluster index at or after `from` with refcount 0, outside the
 * reserved range.  Clusters not covered by any block count as free. */
static int64_t scan_free(struct qcow2 *q, uint64_t from, uint64_t nb)
{
	uint64_t c = from, run = 0, rc;

	for (;; c++) {
		if (c >= q->resv_lo && c < q->resv_hi) {
			run = 0;
			c = q->resv_hi - 1;
			continue;
		}
		if (c >= (1ull << (56 - q->cluster_bits)))
			return -ENOSPC;
		/* Past the end of the file everything should be free; a hostile
		 * refcount table must not make this scan run for hours. */
		if (c > (q->file_end >> q->cluster_bits) + (1u << 20) + nb)
			return qcow2_signal_corruption(q, "refcounts claim clusters far past "
						       "the end of the file");
		if (qcow2_refcount_get(q, c, &rc))
			return -EIO;
		run = rc ? 0 : run + 1;
		if (run == nb)
			return c + 1 - nb;
	}
}

static int set_locked(struct qcow2 *q, uint64_t c, uint64_t val, int depth);

/* Write the new table entry `t` through (block already written, synced). */
static int reftable_entry_write(struct qcow2 *q, uint64_t t)
{
	uint64_t be = htobe64(q->reftable[t]);
	int r = qcow2_pwrite(q, QCOW2_K_REFTABLE, &be, 8, q->reftable_offset + t * 8);

	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	return r;
}

/* Where a grown refcount table goes: `ncl` clusters at `p` (past everything
 * allocated, even clusters not yet written), followed by the new refcount
 * blocks covering [p, *end). */
static void grow_layout(struct qcow2 *q, uint64_t ncl, uint64_t *p, uint64_t *end)
{
	uint64_t per_rb = 1ull << q->rb_bits, nb = 0, need;
	uint64_t fsz = qcow2_size_to_clusters(q, qcow2_file_size(q));
	uint64_t fend = qcow2_size_to_clusters(q, q->file_end);

	*p = fsz > fend ? fsz : fend;
	if (q->resv_hi > *p)
		*p = q->resv_hi;
	for (;;) {
		*end = *p + ncl + nb;
		need = 0;
		for (uint64_t bi = *p / per_rb; bi <= (*end - 1) / per_rb; bi++)
			if (bi >= q->reftable_size || !q->reftable[bi])
				need++;
		if (need <= nb)
			return;
		nb = need;
	}
}

/* Size and place a grown table with room for index `t`: `ncl` clusters at
 * *p, its new blocks up to *end.  The table must also cover those blocks,
 * which lie past the end of the file: a table far smaller than the file (a
 * hostile header) grows until it does.  -EFBIG past the cap. */
static int grow_size(struct qcow2 *q, uint64_t t, uint64_t *ncl, uint64_t *p, uint64_t *end)
{
	uint64_t per_cl = q->cluster_size / 8, per_rb = 1ull << q->rb_bits;
	uint64_t n_ent = t + 1 > (uint64_t)q->reftable_size * 2 ? t + 1
							       : (uint64_t)q->reftable_size * 2;

	for (;;) {
		*ncl = (n_ent + per_cl - 1) / per_cl + 1;
		if (*ncl << q->cluster_bits > QCOW2_MAX_REFTABLE_BYTES)
			return -EFBIG;
		grow_layout(q, *ncl, p, end);
		if ((*end - 1) / per_rb < *ncl * per_cl)
			return 0;
		n_ent = (*end - 1) / per_rb + 1;
	}
}

/* Fill the new table `nt` with homes for the missing blocks covering
 * [p, end) and write those blocks, each counting the new clusters. */
static int grow_write_blocks(struct qcow2 *q, uint64_t *nt, uint64_t p, uint64_t ncl,
			     uint64_t end)
{
	uint64_t per_rb = 1ull << q->rb_bits, next = p + ncl;
	uint8_t *blk = calloc(1, q->cluster_size);
	int r = blk ? 0 : -ENOMEM;

	for (uint64_t bi = p / per_rb; !r && bi <= (end - 1) / per_rb; bi++) {
		if (nt[bi])
			continue;
		nt[bi] = next++ << q->cluster_bits;
		for (uint64_t c = bi * per_rb; c < (bi + 1) * per_rb; c++)
			rb_set(q, blk, c - bi * per_rb, c >= p && c < end ? 1 : 0);
		r = qcow2_pwrite(q, QCOW2_K_REFBLOCK, blk, q->cluster_size, nt[bi]);
	}
	free(blk);
	return r;
}

/* Write table `nt` (host-endian, n entries) big-endian at cluster p. */
static int grow_write_table(struct qcow2 *q, const uint64_t *nt, uint64_t n, uint64_t p)
{
	uint64_t *be = malloc(n * 8);
	int r;

	if (!be)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		be[i] = htobe64(nt[i]);
	r = qcow2_pwrite(q, QCOW2_K_REFTABLE, be, n * 8, p << q->cluster_bits);
	free(be);
	return r;
}

/* Move the refcount table to the end of the file with room for index `t`:
 * new blocks and table written and synced, then one header write switches
 * to them, then the old table is released. */
static int reftable_grow(struct qcow2 *q, uint64_t t)
{
	uint64_t per_cl = q->cluster_size / 8, per_rb = 1ull << q->rb_bits, n_ent, ncl;
	uint64_t p, end, *nt, old_off = q->reftable_offset, old_n = q->reftable_size;
	uint32_t old_cl = q->reftable_clusters;
	int r = grow_size(q, t, &ncl, &p, &end);

	if (r)
		return r;
	n_ent = ncl * per_cl;
	nt = calloc(n_ent, 8);
	if (!nt)
		return -ENOMEM;
	memcpy(nt, q->reftable, (size_t)old_n * 8);
	r = grow_write_blocks(q, nt, p, ncl, end);
	/* Blocks that already existed and cover part of the new range. */
	for (uint64_t c = p; !r && c < end; c++)
		if (c / per_rb < old_n && q->reftable[c / per_rb])
			r = set_locked(q, c, 1, 4);
	if (!r)
		r = grow_write_table(q, nt, n_ent, p);
	if (!r)
		r = qcow2_cache_flush(q->rb_cache);
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	if (!r) {
		struct { uint64_t off; uint32_t cl; } __attribute__((packed)) h = {
			htobe64(p << q->cluster_bits), htobe32(ncl) };
		r = bd_pwrite(q->fd, &h, sizeof(h), QCOW2_OFF_REFTABLE);
		if (!r && fdatasync(q->fd) < 0)
			r = -errno;
	}
	if (r) {
		free(nt);
		return r;
	}
	free(q->reftable);
	q->reftable = nt;
	q->reftable_size = n_ent;
	q->reftable_offset = p << q->cluster_bits;
	q->reftable_clusters = ncl;
	reftable_note_used(q);
	if (end << q->cluster_bits > q->file_end)
		q->file_end = end << q->cluster_bits;
	return qcow2_free_deferred(q, old_off, old_cl);
}

/* Give table entry `t` a fresh, zeroed refcount block. */
static int rb_create(struct qcow2 *q, uint64_t t, int depth)
{
	uint64_t per_rb = 1ull << q->rb_bits;
	int64_t c;
	uint8_t *b;
	int r;

	if (t >= q->reftable_size) {
		r = reftable_grow(q, t);
		if (r || q->reftable[t])
			return r;
	}
	c = scan_free(q, q->free_hint, 1);
	if (c < 0)
		return c;
	r = qcow2_cache_get(q->rb_cache, (uint64_t)c << q->cluster_bits, true, &b);
	if (r)
		return r;
	if ((uint64_t)c >> q->rb_bits == t)
		rb_set(q, b, c & (per_rb - 1), 1);
	if ((uint64_t)(c + 1) << q->cluster_bits > q->file_end)
		q->file_end = (uint64_t)(c + 1) << q->cluster_bits;
	r = qcow2_pwrite(q, QCOW2_K_REFBLOCK, b, q->cluster_size, (uint64_t)c << q->cluster_bits);
	if (!r && (uint64_t)c >> q->rb_bits != t)
		r = set_locked(q, c, 1, depth + 1);
	if (!r)
		r = qcow2_cache_flush(q->rb_cache);
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	if (r)
		return r;
	q->reftable[t] = (uint64_t)c << q->cluster_bits;
	if (t >= q->reftable_used)
		q->reftable_used = t + 1;
	return reftable_entry_write(q, t);
}

static int set_locked(struct qcow2 *q, uint64_t c, uint64_t val, int depth)
{
	uint64_t t = c >> q->rb_bits;
	uint8_t *b;
	int r;

	if (depth > 8)
		return qcow2_signal_corruption(q, "refcount block allocation does not converge");
	if (t >= q->reftable_size || !q->reftable[t]) {
		r = rb_create(q, t, depth);
		if (r)
			return r;
	}
	r = rb_block(q, c, &b);
	if (r)
		return r;
	if (!b)
		return qcow2_signal_corruption(q, "no refcount block for cluster %llu",
					       (unsigned long long)c);
	rb_set(q, b, c & ((1ull << q->rb_bits) - 1), val);
	qcow2_cache_dirty(q->rb_cache, b);
	return 0;
}

/* Set the refcount of cluster index `c` to `val` (in the cache). */
int qcow2_refcount_set(struct qcow2 *q, uint64_t c, uint64_t val)
{
	if (val > qcow2_refcount_max(q))
		return -ERANGE;
	if (!val && c < q->free_hint)
		q->free_hint = c;
	return set_locked(q, c, val, 0);
}

/* Add `delta` to the refcount of cluster index `c`.  Underflow is
 * corruption (more releases than references); overflow is -ERANGE, and
 * nothing changes: the count is as wide as the image allows (1-bit
 * refcounts cannot share a cluster at all), which refuses a snapshot but
 * says nothing wrong about the image. */
int qcow2_refcount_update(struct qcow2 *q, uint64_t c, int64_t delta)
{
	uint64_t rc;
	int r = qcow2_refcount_get(q, c, &rc);

	if (r)
		return r;
	if (delta > 0 && qcow2_refcount_max(q) - rc < (uint64_t)delta)
		return -ERANGE;
	if (delta < 0 && rc < (uint64_t)-delta)
		return qcow2_signal_corruption(q, "refcount of cluster 0x%llx would go "
					       "from %llu by %lld", (unsigned long long)c <<
					       q->cluster_bits, (unsigned long long)rc,
					       (long long)delta);
	if (rc + delta == 0) {
		qcow2_cache_forget(q->l2_cache, c << q->cluster_bits);
		qcow2_cache_forget(q->rb_cache, c << q->cluster_bits);
	}
	return qcow2_refcount_set(q, c, rc + delta);
}

/* Allocate `nb` contiguous clusters; returns the host offset or -errno. */
int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t nb)
{
	int64_t c = scan_free(q, q->free_hint, nb);
	int r = 0;

	if (c < 0)
		return c;
	q->resv_lo = c;
	q->resv_hi = c + nb;
	for (uint64_t i = 0; !r && i < nb; i++)
		r = qcow2_refcount_set(q, c + i, 1);
	q->resv_lo = q->resv_hi = 0;
	if (r)
		return r;
	/* For one cluster the scan proved everything below c is in use. */
	if (nb == 1 || (uint64_t)c == q->free_hint)
		q->free_hint = c + nb;
	if ((uint64_t)(c + nb) << q->cluster_bits > q->file_end)
		q->file_end = (uint64_t)(c + nb) << q->cluster_bits;
	return c << q->cluster_bits;
}

/* Queue a decrement of `nb` clusters at `off` for the next flush. */
int qcow2_free_deferred(struct qcow2 *q, uint64_t off, uint64_t nb)
{
	if (q->nb_frees == q->cap_frees) {
		size_t n = q->cap_frees ? q->cap_frees * 2 : 64;
		void *p = realloc(q->frees, n * sizeof(*q->frees));
		if (!p)
			return -ENOMEM;
		q->frees = p;
		q->cap_frees = n;
	}
	q->frees[q->nb_frees].off = off;
	q->frees[q->nb_frees].nb = nb;
	q->nb_frees++;
	return 0;
}

/* Apply the queued decrements (the metadata that referenced them is durable). */
int qcow2_free_apply(struct qcow2 *q)
{
	int r = 0;

	q->cpack_off = 0;	/* the packing cluster may be among the freed */
	for (size_t i = 0; !r && i < q->nb_frees; i++)
		for (uint64_t k = 0; !r && k < q->frees[i].nb; k++)
			r = qcow2_refcount_update(q, (q->frees[i].off >> q->cluster_bits) + k, -1);
	q->nb_frees = 0;
	return r;
}

/* Queue the release of every host cluster a compressed entry touches. */
int qcow2_free_compressed(struct qcow2 *q, uint64_t l2e)
{
	uint64_t off, len, first, last;

	qcow2_compressed_range(q, l2e, &off, &len);
	first = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	return qcow2_free_deferred(q, first << q->cluster_bits, last - first + 1);
}
