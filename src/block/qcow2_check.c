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
 * So, as qemu-img check counts them, are L1 and L2 entries with reserved
 * bits set and compressed entries with the COPIED flag, and active entries
 * whose COPIED flag disagrees with the refcount.  Every corruption counted
 * comes with a sentence; the first one is kept for the report.
 *
 * Repair sets every stored refcount to the computed one (new refcount
 * blocks this needs are counted on the next pass; we iterate until a pass
 * finds nothing) and then makes the COPIED flags agree with the counts
 * (clearing it on compressed entries).  Reserved bits are left as they are,
 * as QEMU leaves them: we cannot know what they meant, so the image stays
 * marked corrupt.
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

#include "base/exitcode.h"

#define QCOW2_CHECK_MAX_CLUSTERS (256ull << 20)

struct check {
	struct qcow2 *q;
	struct qcow2_check_result *r;
	uint32_t *ref;		/* computed refcounts */
	uint64_t n;		/* clusters covered by ref[] (file size) */
	uint64_t flags;		/* entry flag errors of the last pass (reserved
				 * bits, COPIED on compressed): counted apart
				 * so that they do not stop a refcount repair */
	uint8_t *tbuf;
};

/* Keep the first problem's sentence for the report. */
static void note(struct check *c, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void note(struct check *c, const char *fmt, va_list ap)
{
	if (!c->r->first_problem[0])
		vsnprintf(c->r->first_problem, sizeof(c->r->first_problem), fmt, ap);
}

/* A corruption. */
static void problem(struct check *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void problem(struct check *c, const char *fmt, ...)
{
	va_list ap;

	c->r->corruptions++;
	va_start(ap, fmt);
	note(c, fmt, ap);
	va_end(ap);
}

/* An entry flag error: a corruption, added to the count at the end. */
static void flag_problem(struct check *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void flag_problem(struct check *c, const char *fmt, ...)
{
	va_list ap;

	c->flags++;
	va_start(ap, fmt);
	note(c, fmt, ap);
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
			if (e & QCOW2_OFLAG_COPIED)
				flag_problem(c, "compressed cluster at 0x%llx: the COPIED flag is "
					     "set, which compressed clusters never have",
					     (unsigned long long)off);
			ref_range(c, off, len, "compressed cluster");
			if (active)
				c->r->compressed_clusters++, c->r->allocated_clusters++;
			continue;
		}
		if (e & QCOW2_L2E_STD_RESERVED)
			flag_problem(c, "L2 entry 0x%llx (table 0x%llx, index %llu) has reserved "
				     "bits set", (unsigned long long)e,
				     (unsigned long long)l2off, (unsigned long long)k);
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

		if (l1[i] & QCOW2_L1E_RESERVED)
			flag_problem(c, "L1 entry %u (0x%llx) has reserved bits set", i,
				     (unsigned long long)l1[i]);
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

/* Compute every refcount into c->ref, and the statistics. */
static void compute(struct check *c)
{
	struct qcow2 *q = c->q;

	c->r->allocated_clusters = c->r->fragmented = c->r->compressed_clusters = 0;
	c->flags = 0;
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

/* Compare computed and stored counts; fix them if asked.  0 or -errno
 * (only when repairing: a check goes on past what it cannot read). */
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
		if (r && !repair) {	/* a block we cannot use: say so, go on */
			problem(c, "the refcount block for cluster 0x%llx cannot be used: %s",
				(unsigned long long)i << q->cluster_bits, strerror(-r));
			i |= (1ull << q->rb_bits) - 1;
			r = 0;
			continue;
		}
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

/* Does the COPIED flag in `e` agree with refcount `rc`?  If not, a
 * corruption, saying which entry (`what`) is wrong and how. */
static void copied_check(struct check *c, uint64_t e, uint64_t rc, const char *what)
{
	if ((rc == 1) == !!(e & QCOW2_OFLAG_COPIED))
		return;
	problem(c, "%s: the COPIED flag is %s, but the refcount of 0x%llx is %llu", what,
		rc == 1 ? "clear" : "set", (unsigned long long)(e & QCOW2_L2E_OFFSET_MASK),
		(unsigned long long)rc);
}

/* The COPIED flags of active L2 table `l2` (L1 index i) against the
 * refcounts of its clusters. */
static void copied_errors_l2(struct check *c, uint64_t l2, uint32_t i)
{
	struct qcow2 *q = c->q;
	uint64_t rc;
	char what[64];

	if (bd_pread(q->fd, c->tbuf, q->cluster_size, l2, true))
		return;
	for (uint64_t k = 0; k < (1ull << q->l2_bits); k++) {
		uint64_t e = qcow2_l2e_get(q, c->tbuf, k, NULL), h = e & QCOW2_L2E_OFFSET_MASK;

		if (!h || (e & QCOW2_OFLAG_COMPRESSED) || (h & (q->cluster_size - 1)))
			continue;
		if (qcow2_refcount_get(q, h >> q->cluster_bits, &rc))
			break;
		snprintf(what, sizeof(what), "L2 entry for guest offset 0x%llx",
			 (unsigned long long)((((uint64_t)i << q->l2_bits) + k) << q->cluster_bits));
		copied_check(c, e, rc, what);
	}
}

/* Active entries whose COPIED flag disagrees with the refcount are
 * corruptions (as qemu-img check counts them); repair rewrites them. */
static void copied_errors(struct check *c)
{
	struct qcow2 *q = c->q;
	uint64_t rc;
	char what[32];

	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2 || (l2 & (q->cluster_size - 1)) || l2 >= qcow2_file_size(q))
			continue;
		if (qcow2_refcount_get(q, l2 >> q->cluster_bits, &rc))
			return;
		snprintf(what, sizeof(what), "L1 entry %u", i);
		copied_check(c, q->l1[i], rc, what);
		copied_errors_l2(c, l2, i);
	}
}

/* Count, and with `repair` fix, the refcounts, pass after pass until they
 * hold still (a repair can need new refcount blocks, counted next pass).
 * Structural damage stops it: counts alone cannot fix that.  0 or -1. */
static int check_passes(struct check *c, bool repair, struct error *e)
{
	struct qcow2 *q = c->q;
	uint64_t mism = 0;

	for (int pass = 0; pass < 4; pass++) {
		uint64_t corr = c->r->corruptions;

		compute(c);
		if (c->r->corruptions > corr)
			return 0;
		c->r->leaks = 0;
		if (compare(c, repair, &mism))
			return error_set(e, EXIT_HOST, "%s: cannot write repaired refcounts: %s",
					 q->bd->path, q->bd->err.msg[0] ? q->bd->err.msg : "I/O error");
		if (!repair || !mism)
			return 0;
		if (qcow2_flush_all(q))
			return error_set(e, EXIT_HOST, "%s: cannot write repaired refcounts",
					 q->bd->path);
		c->n = qcow2_size_to_clusters(q, qcow2_file_size(q));
		free(c->ref);
		c->ref = calloc(c->n + 1, sizeof(uint32_t));
		if (!c->ref)
			return error_set(e, EXIT_HOST, "out of memory");
		c->r->corruptions = 0;
		c->r->first_problem[0] = 0;
	}
	return 0;
}

/* After a refcount repair: make the COPIED flags agree (clearing it on
 * compressed entries), count the flag errors that remain (reserved bits)
 * and, if nothing does, clear the corrupt bit.  0 or -1. */
static int repair_flags(struct check *c, struct error *e)
{
	struct qcow2 *q = c->q;

	if (qcow2_fix_copied(q))
		return error_set(e, EXIT_HOST, "%s: cannot repair COPIED flags", q->bd->path);
	c->r->first_problem[0] = 0;
	if (c->flags)
		compute(c);		/* what fix_copied left */
	c->r->corruptions += c->flags;
	if (!c->r->corruptions && (q->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		q->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
		q->corrupt = false;
		q->corrupt_why[0] = 0;
		qcow2_header_update_bits(q);
	}
	return 0;
}

/* Check (and with `repair`, fix) the image.  Returns 0 if the image is
 * (now) consistent, 1 if problems remain, -1 on failure to check. */
int qcow2_check(struct blockdev *bd, bool repair, struct qcow2_check_result *res,
		struct error *e)
{
	struct qcow2 *q = bd->priv;
	struct check c = { .q = q, .r = res };
	uint64_t fsize;
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
	r = check_passes(&c, repair, e);
	if (!r && !repair) {
		res->corruptions += c.flags;
		copied_errors(&c);
	} else if (!r && !res->corruptions) {
		r = repair_flags(&c, e);
	} else if (!r) {
		res->corruptions += c.flags;
	}
	if (!r)
		r = res->corruptions || res->leaks ? 1 : 0;
out:
	free(c.ref);
	free(c.tbuf);
	return r;
}
