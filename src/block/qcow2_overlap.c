/*
 * qcow2_overlap.c - the last check before anything is written to a qcow2
 * file: does the write land on the image's own metadata?
 *
 * What it is for: in a damaged image an L2 entry can point at an L2 table
 * or a refcount block, a refcount table entry at an L2 table, a refcount
 * block can claim that a live table is free.  Each of these turns a guest
 * write into a write over the tables that describe the disk, and the
 * guest's data, acknowledged, is lost together with everything the table
 * mapped.  QEMU guards against this ("Preventing invalid write on
 * metadata"); so do we, with the same set of regions:
 *
 *   the header cluster, the active L1 table, every active L2 table, the
 *   refcount table, every refcount block, the snapshot table, and every
 *   snapshot's L1 table.
 *
 * Inactive L2 tables (those only a snapshot reaches) are not in the set:
 * finding them means reading every snapshot's tables from disk, and QEMU's
 * default leaves them out for the same reason.
 *
 * Every write of the qcow2 code goes through qcow2_pwrite with the kind of
 * thing it writes.  A write may lie inside a region of its own kind (the
 * L1 write inside the L1 table, an L2 table write on that table); any other
 * contact with a region is an overlap: the image is marked corrupt, the
 * write is refused with -EIO and nothing reaches the file.  Header writes
 * (feature bits, chain identity, table pointers) skip the check: no table
 * can start in cluster 0, since every table offset is checked to be
 * non-zero and cluster-aligned, and a zero L2 or refcount-block offset
 * means "none".
 *
 * The same test runs when a table enters the metadata cache (a miss, or a
 * newly allocated table), so a refcount table entry pointing at an L2
 * table fails the guest request that first needs it, not a flush later.
 *
 * Cost: the fixed regions are O(1); the L2 tables are one pass over the
 * in-memory L1 table, the refcount blocks one pass over the used part of
 * the in-memory refcount table (reftable_used), the snapshot L1s one pass
 * over the snapshot list.  No I/O.  With 64 KiB clusters a 1 TiB disk has
 * 2048 L1 entries, so a check is a few microseconds at worst; reads, the
 * hot path, only check the fixed regions (QCOW2_K_FIXED).
 */
#include "block/qcow2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

/* Name of one kind, for messages. */
const char *qcow2_kind_name(uint32_t kind)
{
	switch (kind) {
	case QCOW2_K_HEADER:	return "header";
	case QCOW2_K_L1:	return "active L1 table";
	case QCOW2_K_L2:	return "active L2 table";
	case QCOW2_K_REFTABLE:	return "refcount table";
	case QCOW2_K_REFBLOCK:	return "refcount block";
	case QCOW2_K_SNAPTABLE:	return "snapshot table";
	case QCOW2_K_SNAP_L1:	return "snapshot L1 table";
	default:		return "guest data";
	}
}

/* The question being asked: a write of kind `self` to [off, off+len). */
struct probe {
	uint32_t self;
	uint64_t off, len;
	uint32_t hit;		/* kind of the first region hit, 0 if none */
	uint64_t hit_off;	/* where that region starts */
};

/* Test one region of `kind` at [roff, roff+rlen); true once something hit.
 * A write that lies wholly inside a region of its own kind is that region
 * being written, not an overlap. */
static bool region(struct probe *p, uint32_t kind, uint64_t roff, uint64_t rlen)
{
	if (!rlen || p->off >= roff + rlen || roff >= p->off + p->len)
		return false;
	if (kind == p->self && roff <= p->off && p->off + p->len <= roff + rlen)
		return false;
	p->hit = kind;
	p->hit_off = roff;
	return true;
}

/* The regions whose place is one field of the header. */
static bool fixed_regions(const struct qcow2 *q, struct probe *p, uint32_t kinds)
{
	return ((kinds & QCOW2_K_HEADER) && region(p, QCOW2_K_HEADER, 0, q->cluster_size)) ||
	       ((kinds & QCOW2_K_L1) && region(p, QCOW2_K_L1, q->l1_offset,
						 (uint64_t)q->l1_size * 8)) ||
	       ((kinds & QCOW2_K_REFTABLE) &&
		region(p, QCOW2_K_REFTABLE, q->reftable_offset,
		       (uint64_t)q->reftable_clusters << q->cluster_bits)) ||
	       ((kinds & QCOW2_K_SNAPTABLE) && q->nb_snaps &&
		region(p, QCOW2_K_SNAPTABLE, q->snap_offset, q->snap_table_len));
}

/* One cluster-sized table named by a table entry; offset 0 means none. */
static bool table_region(const struct qcow2 *q, struct probe *p, uint32_t kind,
			 uint64_t roff)
{
	return roff && region(p, kind, roff, q->cluster_size);
}

/* The regions listed by an in-memory table: L2 tables, refcount blocks,
 * snapshot L1 tables. */
static bool listed_regions(const struct qcow2 *q, struct probe *p, uint32_t kinds)
{
	for (uint32_t i = 0; (kinds & QCOW2_K_L2) && i < q->l1_size; i++)
		if (table_region(q, p, QCOW2_K_L2, q->l1[i] & QCOW2_L1E_OFFSET_MASK))
			return true;
	for (uint32_t i = 0; (kinds & QCOW2_K_REFBLOCK) && i < q->reftable_used; i++)
		if (table_region(q, p, QCOW2_K_REFBLOCK, q->reftable[i] & QCOW2_REFT_OFFSET_MASK))
			return true;
	for (uint32_t i = 0; (kinds & QCOW2_K_SNAP_L1) && i < q->nb_snaps; i++)
		if (region(p, QCOW2_K_SNAP_L1, q->snaps[i].l1_offset,
			   (uint64_t)q->snaps[i].l1_size * 8))
			return true;
	return false;
}

/* Which of the metadata `kinds` does a write of `self` to [off, off+len)
 * touch?  Returns the kind of the first region hit (0: none) and, through
 * `at` if given, where that region starts. */
uint32_t qcow2_overlap(const struct qcow2 *q, uint32_t self, uint64_t off, uint64_t len,
		       uint32_t kinds, uint64_t *at)
{
	struct probe p = { .self = self, .off = off, .len = len };

	if (len && (fixed_regions(q, &p, kinds) || listed_regions(q, &p, kinds))) {
		if (at)
			*at = p.hit_off;
		return p.hit;
	}
	return 0;
}

/* 0 if [off, off+len) may hold `self`; otherwise the image is marked
 * corrupt, with a message made of `fmt` (what was about to happen) and
 * the region it would have hit, and -EIO returned. */
int qcow2_meta_guard(struct qcow2 *q, uint32_t self, uint64_t off, uint64_t len,
		     const char *fmt, ...)
{
	uint64_t at;
	uint32_t hit = qcow2_overlap(q, self, off, len, QCOW2_K_ALL, &at);
	char what[200];
	va_list ap;

	if (!hit)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return qcow2_signal_corruption(q, "%s, which overlaps the %s at 0x%llx", what,
				       qcow2_kind_name(hit), (unsigned long long)at);
}

/* Every write of the qcow2 code but the header's: checked, then written. */
int qcow2_pwrite(struct qcow2 *q, uint32_t self, const void *buf, size_t len, uint64_t off)
{
	int r = qcow2_meta_guard(q, self, off, len, "preventing a write of %s at 0x%llx "
				 "(%zu bytes)", qcow2_kind_name(self),
				 (unsigned long long)off, len);

	return r ? r : bd_pwrite(q->fd, buf, len, off);
}
