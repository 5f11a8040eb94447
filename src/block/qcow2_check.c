/*
 * qcow2_check.c - consistency check and repair.
 *
 * The check rebuilds every refcount from first principles - the header
 * cluster, the refcount table and blocks, the active L1 tree and every
 * snapshot's L1 tree, the snapshot table - into an in-memory array, and
 * compares it with the stored refcounts.  A stored count that is too high
 * is a leak (harmless, space lost); too low is a corruption (a later
 * allocation could overwrite live data).  Entries that point outside the
 * file or at unaligned offsets are corruptions too, and are not followed.
 *
 * Repair sets every stored refcount to the computed one (new refcount
 * blocks this needs are counted on the next pass; we iterate until a pass
 * finds nothing) and then makes the COPIED flags agree with the counts.
 *
 * Load: proportional to the metadata; the array is one u32 per host
 * cluster, capped at QCOW2_CHECK_MAX_CLUSTERS.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/exitcode.h"

#define QCOW2_CHECK_MAX_CLUSTERS (256ull << 20)

struct check {
	struct qcow2 *q;
	struct qcow2_check_result *r;
	uint32_t *ref;		/* computed refcounts */
	uint64_t n;		/* clusters covered by ref[] (file size) */
	uint8_t *tbuf;
};

static void problem(struct check *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void problem(struct check *c, const char *fmt, ...)
{
	va_list ap;

	c->r->corruptions++;
	if (c->r->first_problem[0])
		return;
	va_start(ap, fmt);
	vsnprintf(c->r->first_problem, sizeof(c->r->first_problem), fmt, ap);
	va_end(ap);
}

/* Count a reference to [off, off+len); false if it lies outside the file. */
static bool ref_range(struct check *c, uint64_t off, uint64_t len, const char *what)
{
	uint64_t first = off >> c->q->cluster_bits;
	uint64_t last = (off + len - 1) >> c->q->cluster_bits;

	if (!len)
		return true;
	if (last >= c->n) {
		problem(c, "%s at 0x%llx lies beyond the end of the file", what,
			(unsigned long long)off);
		return false;
	}
	for (uint64_t i = first; i <= last; i++)
		if (c->ref[i] != UINT32_MAX)
			c->ref[i]++;
	return true;
}

/* Walk one L2 table. */
static void walk_l2(struct check *c, uint64_t l2off, bool active)
{
	struct qcow2 *q = c->q;
	uint64_t per = 1ull << q->l2_bits, prev = 0;

	if (bd_pread(q->fd, c->tbuf, q->cluster_size, l2off, true)) {
		problem(c, "cannot read L2 table at 0x%llx", (unsigned long long)l2off);
		return;
	}
	for (uint64_t k = 0; k < per; k++) {
		uint64_t e = qcow2_l2e_get(q, c->tbuf, k, NULL), h = e & QCOW2_L2E_OFFSET_MASK;
		uint64_t off, len;

		if (e & QCOW2_OFLAG_COMPRESSED) {
			qcow2_compressed_range(q, e, &off, &len);
			ref_range(c, off, len, "compressed cluster");
			if (active)
				c->r->compressed_clusters++, c->r->allocated_clusters++;
			continue;
		}
		if (!h)
			continue;
		if (h & (q->cluster_size - 1)) {
			problem(c, "L2 entry 0x%llx: unaligned data offset", (unsigned long long)e);
			continue;
		}
		if (active) {
			c->r->allocated_clusters++;
			if (prev && h != prev + q->cluster_size)
				c->r->fragmented++;
			prev = h;
		}
		ref_range(c, h, q->cluster_size, "data cluster");
	}
}

/* Walk an L1 table (active or a snapshot's). */
static void walk_l1(struct check *c, const uint64_t *l1, uint32_t n, bool active)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2)
			continue;
		if (l2 & (c->q->cluster_size - 1)) {
			problem(c, "L1 entry %u: unaligned L2 offset 0x%llx", i,
				(unsigned long long)l2);
			continue;
		}
		if (ref_range(c, l2, c->q->cluster_size, "L2 table"))
			walk_l2(c, l2, active);
	}
}

static void walk_snapshots(struct check *c)
{
	struct qcow2 *q = c->q;

	if (q->nb_snaps)
		ref_range(c, q->snap_offset, q->snap_table_len, "snapshot table");
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct qcow2_snapshot *s = &q->snaps[i];
		uint64_t *l1 = calloc(s->l1_size + 1, 8);

		if (!l1)
			continue;
		if (ref_range(c, s->l1_offset, (uint64_t)s->l1_size * 8, "snapshot L1 table") &&
		    !bd_pread(q->fd, l1, (size_t)s->l1_size * 8, s->l1_offset, true)) {
			for (uint32_t k = 0; k < s->l1_size; k++)
				l1[k] = be64toh(l1[k]);
			walk_l1(c, l1, s->l1_size, false);
		}
		free(l1);
	}
}

/* Reference the clusters of a bitmaps extension that is still valid (its
 * autoclear bit set): the directory, each bitmap table and its data.
 * Without this, repairing an image with persistent bitmaps would free them. */
static void walk_bitmaps(struct check *c)
{
	struct qcow2 *q = c->q;
	struct { uint32_t nb, res; uint64_t dsize, doff; } __attribute__((packed)) h;
	uint8_t *dir = NULL;
	uint64_t pos = 0;

	if (!(q->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return;
	for (uint32_t i = 0; i < q->nb_exts; i++) {
		if (q->exts[i].type != QCOW2_EXT_BITMAPS || q->exts[i].len < sizeof(h))
			continue;
		memcpy(&h, q->exts[i].data, sizeof(h));
		h.nb = be32toh(h.nb);
		h.dsize = be64toh(h.dsize);
		h.doff = be64toh(h.doff);
		if (h.dsize > (64u << 20) || !ref_range(c, h.doff, h.dsize, "bitmap directory"))
			return;
		dir = malloc(h.dsize + 1);
		if (!dir || bd_pread(q->fd, dir, h.dsize, h.doff, true))
			break;
		for (uint32_t k = 0; k < h.nb && pos + 24 <= h.dsize; k++) {
			uint64_t toff, e;
			uint32_t tsize, xs;
			uint16_t ns;

			memcpy(&toff, dir + pos, 8);
			memcpy(&tsize, dir + pos + 8, 4);
			memcpy(&ns, dir + pos + 18, 2);
			memcpy(&xs, dir + pos + 20, 4);
			toff = be64toh(toff);
			tsize = be32toh(tsize);
			pos = (pos + 24 + be32toh(xs) + be16toh(ns) + 7) & ~7ull;
			if ((uint64_t)tsize * 8 > (64u << 20) ||
			    !ref_range(c, toff, (uint64_t)tsize * 8, "bitmap table"))
				continue;
			for (uint32_t j = 0; j < tsize; j++) {
				if (bd_pread(q->fd, &e, 8, toff + 8ull * j, true))
					break;
				e = be64toh(e) & QCOW2_L2E_OFFSET_MASK;
				if (e)
					ref_range(c, e, q->cluster_size, "bitmap data");
			}
		}
		break;
	}
	free(dir);
}

/* Compute every refcount into c->ref. */
static void compute(struct check *c)
{
	struct qcow2 *q = c->q;

	memset(c->ref, 0, c->n * sizeof(uint32_t));
	ref_range(c, 0, q->cluster_size, "header");
	ref_range(c, q->l1_offset, (uint64_t)q->l1_size * 8, "L1 table");
	walk_l1(c, q->l1, q->l1_size, true);
	walk_snapshots(c);
	walk_bitmaps(c);
	ref_range(c, q->reftable_offset, (uint64_t)q->reftable_clusters << q->cluster_bits,
		  "refcount table");
	for (uint32_t i = 0; i < q->reftable_size; i++) {
		uint64_t b = q->reftable[i] & QCOW2_REFT_OFFSET_MASK;

		if (!b)
			continue;
		if (b & (q->cluster_size - 1))
			problem(c, "refcount block %u at unaligned offset 0x%llx", i,
				(unsigned long long)b);
		else
			ref_range(c, b, q->cluster_size, "refcount block");
	}
}

/* Compare computed and stored counts; fix them if asked. */
static int compare(struct check *c, bool repair, uint64_t *mismatches)
{
	struct qcow2 *q = c->q;
	uint64_t end = (uint64_t)q->reftable_size << q->rb_bits;
	int r = 0;

	/* Counts past the end of the file can only be leaks; look at a bounded
	 * number of them so a hostile refcount table cannot make this spin. */
	if (end > c->n + (1ull << 24))
		end = c->n + (1ull << 24);

	*mismatches = 0;
	for (uint64_t i = 0; !r && i < (end > c->n ? end : c->n); i++) {
		uint64_t stored, want = i < c->n ? c->ref[i] : 0;

		if (i >= c->n && (i & ((1ull << q->rb_bits) - 1)) == 0 &&
		    !(q->reftable[i >> q->rb_bits] & QCOW2_REFT_OFFSET_MASK)) {
			i += (1ull << q->rb_bits) - 1;	/* no block: all zero */
			continue;
		}
		r = qcow2_refcount_get(q, i, &stored);
		if (r || stored == want)
			continue;
		(*mismatches)++;
		if (!repair) {
			if (stored > want)
				c->r->leaks++;
			else
				problem(c, "cluster 0x%llx: refcount %llu, but %llu references",
					(unsigned long long)i << q->cluster_bits,
					(unsigned long long)stored, (unsigned long long)want);
			continue;
		}
		r = qcow2_refcount_set(q, i, want);
		if (!r)
			c->r->fixed++;
	}
	return r;
}

/* Count the COPIED flags of one active L2 table that disagree with the
 * refcounts of its clusters. */
static uint64_t copied_errors_l2(struct check *c, uint64_t l2)
{
	struct qcow2 *q = c->q;
	uint64_t bad = 0, rc;

	if (bd_pread(q->fd, c->tbuf, q->cluster_size, l2, true))
		return 0;
	for (uint64_t k = 0; k < (1ull << q->l2_bits); k++) {
		uint64_t e = qcow2_l2e_get(q, c->tbuf, k, NULL), h = e & QCOW2_L2E_OFFSET_MASK;

		if (!h || (e & QCOW2_OFLAG_COMPRESSED) || (h & (q->cluster_size - 1)))
			continue;
		if (qcow2_refcount_get(q, h >> q->cluster_bits, &rc))
			break;
		if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED))
			bad++;
	}
	return bad;
}

/* Count active entries whose COPIED flag disagrees with the refcount (as
 * qemu-img check does); repair rewrites them from the refcounts. */
static uint64_t copied_errors(struct check *c)
{
	struct qcow2 *q = c->q;
	uint64_t bad = 0, rc;

	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2 || (l2 & (q->cluster_size - 1)) || l2 >= qcow2_file_size(q))
			continue;
		if (qcow2_refcount_get(q, l2 >> q->cluster_bits, &rc))
			return bad;
		if ((rc == 1) != !!(q->l1[i] & QCOW2_OFLAG_COPIED))
			bad++;
		bad += copied_errors_l2(c, l2);
	}
	return bad;
}

/* Check (and with `repair`, fix) the image.  Returns 0 if the image is
 * (now) consistent, 1 if problems remain, -1 on failure to check. */
int qcow2_check(struct blockdev *bd, bool repair, struct qcow2_check_result *res,
		struct error *e)
{
	struct qcow2 *q = bd->priv;
	struct check c = { .q = q, .r = res };
	uint64_t fsize = qcow2_file_size(q), mism = 0;
	int r = 0;

	memset(res, 0, sizeof(*res));
	if (!bd->readonly && qcow2_flush_all(q))	/* the walk reads the disk */
		return error_set(e, EXIT_HOST, "%s: cannot flush before checking", bd->path);
	fsize = qcow2_file_size(q);
	c.n = qcow2_size_to_clusters(q, fsize);
	if (c.n > QCOW2_CHECK_MAX_CLUSTERS)
		return error_set(e, EXIT_HOST, "%s: image too large to check", bd->path);
	c.ref = calloc(c.n + 1, sizeof(uint32_t));
	c.tbuf = malloc(q->cluster_size);
	if (!c.ref || !c.tbuf) {
		r = error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	res->total_clusters = qcow2_size_to_clusters(q, q->size);
	res->image_end = fsize;
	for (int pass = 0; pass < 4; pass++) {
		uint64_t corr = res->corruptions;

		res->allocated_clusters = res->fragmented = res->compressed_clusters = 0;
		compute(&c);
		if (res->corruptions > corr)
			break;	/* structural damage: counts alone cannot fix it */
		res->leaks = 0;
		if (compare(&c, repair, &mism) || !repair || !mism)
			break;
		if (qcow2_flush_all(q)) {
			r = error_set(e, EXIT_HOST, "%s: cannot write repaired refcounts", bd->path);
			goto out;
		}
		c.n = qcow2_size_to_clusters(q, qcow2_file_size(q));
		free(c.ref);
		c.ref = calloc(c.n + 1, sizeof(uint32_t));
		if (!c.ref) {
			r = error_set(e, EXIT_HOST, "out of memory");
			goto out;
		}
		res->corruptions = 0;
	}
	if (!repair) {
		res->corruptions += copied_errors(&c);
	} else if (!res->corruptions) {
		if (qcow2_fix_copied(q)) {
			r = error_set(e, EXIT_HOST, "%s: cannot repair COPIED flags", bd->path);
			goto out;
		}
		if (q->incompat & QCOW2_INCOMPAT_CORRUPT) {
			q->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
			q->corrupt = false;
			qcow2_header_update_bits(q);
		}
	}
	r = res->corruptions || res->leaks ? 1 : 0;
out:
	free(c.ref);
	free(c.tbuf);
	return r;
}
