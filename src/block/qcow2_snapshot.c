/*
 * qcow2_snapshot.c - internal snapshots: load, list, create, apply, delete,
 * and a read-only view of a snapshot's contents.
 *
 * A snapshot is a frozen copy of the L1 table; the L2 tables and data
 * clusters it reaches are shared with the active image, their refcounts
 * raised by one per snapshot, and the active image's COPIED flags cleared
 * so that the next write to a shared cluster copies it first.
 *
 * The snapshot table is rewritten whole to fresh clusters on every change
 * and swapped in with one header write (nb_snapshots and snapshots_offset
 * are adjacent), after the refcount increments it relies on are durable.
 * Decrements come after the swap.  The window between "table swapped" and
 * "COPIED flags corrected" can leave flag errors that check repairs; QEMU
 * has the same window.
 *
 * Untrusted input: the table is bounded by QCOW2_MAX_SNAPSHOTS entries and
 * QCOW2_MAX_SNAPSHOT_TABLE bytes, each entry's extra data by
 * QCOW2_MAX_SNAP_EXTRA, each L1 by QCOW2_MAX_L1_BYTES.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"

void qcow2_snapshots_free(struct qcow2 *q)
{
	for (uint32_t i = 0; i < q->nb_snaps && q->snaps; i++) {
		free(q->snaps[i].id);
		free(q->snaps[i].name);
	}
	free(q->snaps);
	q->snaps = NULL;
}

/* Parse one entry at file offset *pos; advances *pos. */
static int snap_read_one(struct qcow2 *q, uint64_t *pos, struct qcow2_snapshot *s,
			 struct error *e)
{
	struct qcow2_disk_snapshot d;
	struct qcow2_disk_snapshot_extra x = { 0 };
	uint32_t xs;
	const char *p = q->bd->path;

	if (bd_pread(q->fd, &d, sizeof(d), *pos, false))
		return error_set(e, EXIT_NOINPUT, "%s: snapshot table truncated", p);
	xs = be32toh(d.extra_data_size);
	if (xs > QCOW2_MAX_SNAP_EXTRA)
		return error_set(e, EXIT_NOINPUT, "%s: snapshot extra data too large (%u)", p, xs);
	*pos += sizeof(d);
	if (bd_pread(q->fd, &x, xs < sizeof(x) ? xs : sizeof(x), *pos, false))
		return error_set(e, EXIT_NOINPUT, "%s: snapshot table truncated", p);
	*pos += xs;
	s->l1_offset = be64toh(d.l1_table_offset);
	s->l1_size = be32toh(d.l1_size);
	s->date_sec = be32toh(d.date_sec);
	s->date_nsec = be32toh(d.date_nsec);
	s->vm_clock_nsec = be64toh(d.vm_clock_nsec);
	s->vm_state_size = xs >= 8 ? be64toh(x.vm_state_size_large) : be32toh(d.vm_state_size);
	s->disk_size = xs >= 16 ? be64toh(x.disk_size) : q->size;
	s->icount = xs >= 24 ? be64toh(x.icount) : UINT64_MAX;
	s->extra_size = xs;
	if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
	    (s->l1_size && !qcow2_host_ok(q, s->l1_offset)))
		return error_set(e, EXIT_NOINPUT, "%s: snapshot L1 table invalid", p);
	s->id = calloc(1, be16toh(d.id_str_size) + 1);
	s->name = calloc(1, be16toh(d.name_size) + 1);
	if (!s->id || !s->name)
		return error_set(e, EXIT_HOST, "out of memory");
	if (bd_pread(q->fd, s->id, be16toh(d.id_str_size), *pos, false) ||
	    bd_pread(q->fd, s->name, be16toh(d.name_size), *pos + be16toh(d.id_str_size), false))
		return error_set(e, EXIT_NOINPUT, "%s: snapshot table truncated", p);
	*pos += be16toh(d.id_str_size) + be16toh(d.name_size);
	*pos = (*pos + 7) & ~7ull;
	return 0;
}

int qcow2_snapshots_load(struct qcow2 *q, struct error *e)
{
	uint64_t pos = q->snap_offset;

	if (!q->nb_snaps)
		return 0;
	if (q->nb_snaps > QCOW2_MAX_SNAPSHOTS || !qcow2_host_ok(q, q->snap_offset))
		return error_set(e, EXIT_NOINPUT, "%s: snapshot table (%u entries at 0x%llx) "
				 "invalid", q->bd->path, q->nb_snaps,
				 (unsigned long long)q->snap_offset);
	q->snaps = calloc(q->nb_snaps, sizeof(*q->snaps));
	if (!q->snaps)
		return error_set(e, EXIT_HOST, "out of memory");
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		if (snap_read_one(q, &pos, &q->snaps[i], e))
			return -1;
		if (pos - q->snap_offset > QCOW2_MAX_SNAPSHOT_TABLE)
			return error_set(e, EXIT_NOINPUT, "%s: snapshot table too large",
					 q->bd->path);
	}
	q->snap_table_len = pos - q->snap_offset;
	return 0;
}

/* Index of the snapshot whose id or name is `name`, or -1. */
int qcow2_snapshot_find(struct qcow2 *q, const char *name)
{
	for (uint32_t i = 0; i < q->nb_snaps; i++)
		if (!strcmp(q->snaps[i].name, name) || !strcmp(q->snaps[i].id, name))
			return i;
	return -1;
}

/* Load an L1 table (host-endian). */
static int l1_read(struct qcow2 *q, uint64_t off, uint32_t n, uint64_t **out)
{
	uint64_t *l1 = calloc(n + 1, 8);

	if (!l1)
		return -ENOMEM;
	if (n && bd_pread(q->fd, l1, (size_t)n * 8, off, true)) {
		free(l1);
		return -EIO;
	}
	for (uint32_t i = 0; i < n; i++)
		l1[i] = be64toh(l1[i]);
	*out = l1;
	return 0;
}

/* Switch a read-only image to show snapshot `name` (for convert -l). */
int qcow2_snapshot_view(struct blockdev *bd, const char *name, struct error *e)
{
	struct qcow2 *q = bd->priv;
	int i = qcow2_snapshot_find(q, name);
	uint64_t *l1;

	if (i < 0)
		return error_set(e, EXIT_USAGE, "%s: no snapshot '%s'", bd->path, name);
	if (!bd->readonly)
		return error_set(e, EXIT_USAGE, "%s: snapshot views are read-only", bd->path);
	if (l1_read(q, q->snaps[i].l1_offset, q->snaps[i].l1_size, &l1))
		return error_set(e, EXIT_NOINPUT, "%s: cannot read the L1 table of snapshot %s",
				 bd->path, name);
	free(q->l1);
	q->l1 = l1;
	q->l1_size = q->snaps[i].l1_size;
	q->size = q->snaps[i].disk_size;
	{
		uint64_t cover = 1ull << (q->l2_bits + q->cluster_bits);
		if ((q->size + cover - 1) / cover > q->l1_size)
			q->size = (uint64_t)q->l1_size * cover;
	}
	bd->size = q->size;
	qcow2_cache_drop_all(q->l2_cache);
	return 0;
}

/* A walk over the clusters an L1 tree reaches (the L2 tables and the data,
 * not the L1 itself), changing each refcount by `delta`.  The order is
 * fixed, so a walk limited to the first `limit` changes undoes exactly
 * what an earlier walk did before it failed. */
struct tree_walk {
	int delta;
	uint64_t done;		/* refcounts changed so far */
	uint64_t limit;		/* stop after this many */
};

/* Change the refcount of cluster `c`; 1 once the walk is at its limit. */
static int walk_one(struct qcow2 *q, struct tree_walk *w, uint64_t c)
{
	int r;

	if (w->done == w->limit)
		return 1;
	r = qcow2_refcount_update(q, c, w->delta);
	if (!r)
		w->done++;
	return r;
}

/* The clusters one L2 entry holds: one, or those its compressed bytes touch. */
static int walk_entry(struct qcow2 *q, struct tree_walk *w, uint64_t e)
{
	uint64_t off, len, h = e & QCOW2_L2E_OFFSET_MASK;
	int r = 0;

	if (!(e & QCOW2_OFLAG_COMPRESSED))
		return h ? walk_one(q, w, h >> q->cluster_bits) : 0;
	qcow2_compressed_range(q, e, &off, &len);
	for (uint64_t c = off >> q->cluster_bits; !r &&
	     c <= (off + len - 1) >> q->cluster_bits; c++)
		r = walk_one(q, w, c);
	return r;
}

/* Walk the tree of `l1` (n entries).  0, 1 (limit reached) or -errno. */
static int tree_walk(struct qcow2 *q, const uint64_t *l1, uint32_t n, struct tree_walk *w)
{
	uint64_t per = 1ull << q->l2_bits, *tmp = malloc(q->cluster_size);
	int r = tmp ? 0 : -ENOMEM;

	for (uint32_t i = 0; !r && i < n; i++) {
		uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
		uint8_t *t;

		if (!l2)
			continue;
		r = qcow2_cache_get(q->l2_cache, l2, false, &t);
		if (r)
			break;
		memcpy(tmp, t, q->cluster_size);
		for (uint64_t k = 0; !r && k < per; k++)
			r = walk_entry(q, w, qcow2_l2e_get(q, (uint8_t *)tmp, k, NULL));
		if (!r)
			r = walk_one(q, w, l2 >> q->cluster_bits);
	}
	free(tmp);
	return r;
}

/* Add `delta` to every refcount the tree of `l1` reaches, all or none: if
 * one would overflow (narrow refcounts, many snapshots) the changes made so
 * far are undone and -ERANGE returned, the image as it was.  QEMU refuses
 * the same snapshot; an overflow is a limit of the image, not damage. */
static int tree_update(struct qcow2 *q, const uint64_t *l1, uint32_t n, int delta)
{
	struct tree_walk w = { delta, 0, UINT64_MAX }, undo = { -delta, 0, 0 };
	int r = tree_walk(q, l1, n, &w);

	if (r != -ERANGE)
		return r;
	undo.limit = w.done;
	return tree_walk(q, l1, n, &undo) < 0 ? -EIO : -ERANGE;
}

/* The error of a snapshot operation that failed with `r`. */
static int snap_error(struct qcow2 *q, const char *verb, const char *name, int r,
		      struct error *e)
{
	if (r == -ERANGE)
		return error_set(e, EXIT_NOINPUT, "%s: cannot %s snapshot '%s': a cluster would "
				 "have more references than the image's %u-bit refcounts can "
				 "count (convert it with -o refcount_bits=16)", q->bd->path,
				 verb, name, 1u << q->refcount_order);
	if (r == -EIO && q->bd->err.msg[0])
		return error_set(e, EXIT_HOST, "%s", q->bd->err.msg);
	return error_set(e, EXIT_HOST, "%s: cannot %s snapshot '%s': %s", q->bd->path, verb,
			 name, strerror(-r));
}

/* Set COPIED on every active L1/L2 entry exactly when its refcount is 1;
 * clear it on compressed entries, which never have it. */
int qcow2_fix_copied(struct qcow2 *q)
{
	uint64_t per = 1ull << q->l2_bits, rc;
	int r = 0;

	for (uint32_t i = 0; !r && i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & QCOW2_L1E_OFFSET_MASK, ne;
		bool shared;
		uint8_t *t;

		if (!l2)
			continue;
		r = qcow2_refcount_get(q, l2 >> q->cluster_bits, &rc);
		ne = rc == 1 ? (q->l1[i] | QCOW2_OFLAG_COPIED) : (q->l1[i] & ~QCOW2_OFLAG_COPIED);
		if (ne != q->l1[i]) {
			q->l1[i] = ne;
			q->l1_dirty = true;
		}
		if (r)
			continue;
		shared = rc != 1;
		r = qcow2_cache_get(q->l2_cache, l2, false, &t);
		for (uint64_t k = 0; !r && k < per; k++) {
			uint64_t bm, e = qcow2_l2e_get(q, t, k, &bm), h = e & QCOW2_L2E_OFFSET_MASK;

			if (!h)
				continue;
			/* everything a shared table reaches is shared too */
			rc = 2;
			if (!shared && !(e & QCOW2_OFLAG_COMPRESSED))
				r = qcow2_refcount_get(q, h >> q->cluster_bits, &rc);
			ne = rc == 1 ? (e | QCOW2_OFLAG_COPIED) : (e & ~QCOW2_OFLAG_COPIED);
			if (!r && ne != e) {
				qcow2_l2e_set(q, t, k, ne, bm);
				qcow2_cache_dirty(q->l2_cache, t);
			}
		}
	}
	return r ? r : qcow2_flush_all(q);
}

/* Serialize the snapshot table to new clusters and swap it in. */
static int table_write(struct qcow2 *q)
{
	size_t cap = 0, len = 0;
	uint8_t *buf = NULL;
	int64_t off = 0;
	uint64_t old = q->snap_offset, oldlen = 0;
	int r = 0;

	for (uint32_t i = 0; i < q->nb_snaps; i++)
		cap += sizeof(struct qcow2_disk_snapshot) + 24 + strlen(q->snaps[i].id) +
		       strlen(q->snaps[i].name) + 8;
	buf = calloc(1, cap + 8);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct qcow2_snapshot *s = &q->snaps[i];
		struct qcow2_disk_snapshot d = {
			htobe64(s->l1_offset), htobe32(s->l1_size), htobe16(strlen(s->id)),
			htobe16(strlen(s->name)), htobe32(s->date_sec), htobe32(s->date_nsec),
			htobe64(s->vm_clock_nsec), htobe32(s->vm_state_size > UINT32_MAX ? 0 :
							   s->vm_state_size), htobe32(24) };
		struct qcow2_disk_snapshot_extra x = { htobe64(s->vm_state_size),
						       htobe64(s->disk_size), htobe64(s->icount) };
		memcpy(buf + len, &d, sizeof(d));
		memcpy(buf + len + sizeof(d), &x, sizeof(x));
		len += sizeof(d) + sizeof(x);
		memcpy(buf + len, s->id, strlen(s->id));
		len += strlen(s->id);
		memcpy(buf + len, s->name, strlen(s->name));
		len = (len + strlen(s->name) + 7) & ~7ull;
	}
	if (len) {
		off = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, len));
		r = off < 0 ? (int)off : qcow2_pwrite(q, QCOW2_K_SNAPTABLE, buf, len, off);
	}
	free(buf);
	if (!r)
		r = qcow2_flush_all(q);
	if (!r) {
		struct { uint32_t n; uint64_t off; } __attribute__((packed)) h = {
			htobe32(q->nb_snaps), htobe64(off) };
		r = bd_pwrite(q->fd, &h, sizeof(h), QCOW2_OFF_NB_SNAP);
		if (!r && fdatasync(q->fd) < 0)
			r = -errno;
	}
	if (r)
		return r;
	/* the old table's length: recompute is not needed, we know its extent */
	oldlen = q->snap_table_len;
	q->snap_table_len = len;
	q->snap_offset = off;
	if (old && oldlen)
		r = qcow2_free_deferred(q, old, qcow2_size_to_clusters(q, oldlen));
	return r;
}

/* Write a frozen copy of the active L1 table (COPIED flags cleared) to new
 * clusters; *off is where, 0 for an empty table. */
static int snap_l1_write(struct qcow2 *q, int64_t *off)
{
	uint64_t l1b = (uint64_t)q->l1_size * 8, *be;
	int r;

	*off = 0;
	if (!l1b)
		return 0;
	be = malloc(l1b);
	if (!be)
		return -ENOMEM;
	for (uint32_t i = 0; i < q->l1_size; i++)
		be[i] = htobe64(q->l1[i] & ~QCOW2_OFLAG_COPIED);
	*off = qcow2_alloc_clusters(q, qcow2_size_to_clusters(q, l1b));
	r = *off < 0 ? (int)*off : qcow2_pwrite(q, QCOW2_K_SNAP_L1, be, l1b, *off);
	if (*off < 0)
		*off = 0;
	free(be);
	return r;
}

/* Add the entry for a snapshot of the active image, its L1 copy at `off`. */
static int snap_append(struct qcow2 *q, const char *name, int64_t off)
{
	struct qcow2_snapshot *s, *ns = realloc(q->snaps, (q->nb_snaps + 1) * sizeof(*ns));
	struct timespec ts;
	uint32_t maxid = 0;
	char id[16];

	if (!ns)
		return -ENOMEM;
	q->snaps = ns;
	for (uint32_t i = 0; i < q->nb_snaps; i++)
		if ((uint32_t)atoi(q->snaps[i].id) > maxid)
			maxid = atoi(q->snaps[i].id);
	snprintf(id, sizeof(id), "%u", maxid + 1);
	clock_gettime(CLOCK_REALTIME, &ts);
	s = &q->snaps[q->nb_snaps];
	*s = (struct qcow2_snapshot){ .l1_offset = off, .l1_size = q->l1_size,
		.id = strdup(id), .name = strdup(name), .date_sec = ts.tv_sec,
		.date_nsec = ts.tv_nsec, .disk_size = q->size, .extra_size = 24 };
	q->nb_snaps++;
	return 0;
}

int qcow2_snapshot_create(struct blockdev *bd, const char *name, struct error *e)
{
	struct qcow2 *q = bd->priv;
	int64_t off = 0;
	int r;

	if (qcow2_snapshot_find(q, name) >= 0)
		return error_set(e, EXIT_USAGE, "%s: snapshot '%s' already exists", bd->path, name);
	if (q->nb_snaps >= QCOW2_MAX_SNAPSHOTS)
		return error_set(e, EXIT_USAGE, "%s: too many snapshots", bd->path);
	r = qcow2_before_change(q);
	if (!r)
		r = qcow2_flush_all(q);
	if (!r)
		r = snap_l1_write(q, &off);
	if (!r)
		r = tree_update(q, q->l1, q->l1_size, 1);
	if (r && off) {
		/* refused before anything pointed at the copy: give it back */
		qcow2_free_deferred(q, off, qcow2_size_to_clusters(q, (uint64_t)q->l1_size * 8));
		qcow2_flush_all(q);
	}
	if (!r)
		r = snap_append(q, name, off);
	if (!r)
		r = table_write(q);
	if (!r)
		r = qcow2_fix_copied(q);
	return r ? snap_error(q, "create", name, r, e) : 0;
}

int qcow2_snapshot_delete(struct blockdev *bd, const char *name, struct error *e)
{
	struct qcow2 *q = bd->priv;
	int i = qcow2_snapshot_find(q, name), r;
	struct qcow2_snapshot s;
	uint64_t *l1 = NULL;

	if (i < 0)
		return error_set(e, EXIT_USAGE, "%s: no snapshot '%s'", bd->path, name);
	r = qcow2_before_change(q);
	if (!r)
		r = l1_read(q, q->snaps[i].l1_offset, q->snaps[i].l1_size, &l1);
	if (r)
		goto out;
	s = q->snaps[i];
	memmove(&q->snaps[i], &q->snaps[i + 1], (q->nb_snaps - i - 1) * sizeof(s));
	q->nb_snaps--;
	r = table_write(q);
	if (!r)
		r = tree_update(q, l1, s.l1_size, -1);
	if (!r && s.l1_size)
		r = qcow2_free_deferred(q, s.l1_offset,
					qcow2_size_to_clusters(q, (uint64_t)s.l1_size * 8));
	if (!r)
		r = qcow2_flush_all(q);
	if (!r)
		r = qcow2_fix_copied(q);
	free(s.id);
	free(s.name);
out:
	free(l1);
	return r ? snap_error(q, "delete", name, r, e) : 0;
}

int qcow2_snapshot_apply(struct blockdev *bd, const char *name, struct error *e)
{
	struct qcow2 *q = bd->priv;
	int i = qcow2_snapshot_find(q, name), r;
	uint64_t *snap_l1 = NULL, *old = q->l1;
	uint32_t old_n = q->l1_size;

	if (i < 0)
		return error_set(e, EXIT_USAGE, "%s: no snapshot '%s'", bd->path, name);
	if (q->snaps[i].l1_size > q->l1_size)
		return error_set(e, EXIT_USAGE, "%s: snapshot '%s' is larger than the disk; "
				 "resize first", bd->path, name);
	r = qcow2_before_change(q);
	if (!r)
		r = qcow2_flush_all(q);
	if (!r)
		r = l1_read(q, q->snaps[i].l1_offset, q->snaps[i].l1_size, &snap_l1);
	if (!r)
		r = tree_update(q, snap_l1, q->snaps[i].l1_size, 1);
	if (!r)
		r = qcow2_flush_all(q);
	if (r)
		goto out;
	/* The new active table, padded with empty entries to the old size. */
	q->l1 = calloc(old_n + 1, 8);
	if (!q->l1) {
		q->l1 = old;
		r = -ENOMEM;
		goto out;
	}
	memcpy(q->l1, snap_l1, (size_t)q->snaps[i].l1_size * 8);
	q->l1_dirty = true;
	r = qcow2_flush_all(q);
	if (!r)
		r = tree_update(q, old, old_n, -1);
	if (!r)
		r = qcow2_fix_copied(q);
	free(old);
out:
	free(snap_l1);
	return r ? snap_error(q, "apply", name, r, e) : 0;
}
