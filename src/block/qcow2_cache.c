/*
 * qcow2_cache.c - a write-back cache of metadata clusters (L2 tables or
 * refcount blocks), one instance per kind, sized by the user.
 *
 * Entries hold the cluster exactly as it is on disk (big-endian); callers
 * decode through qcow2_l2e_get and the refcount accessors.  A pointer from
 * qcow2_cache_get stays valid until the next get on the same cache (which
 * may evict), so callers copy what they need before fetching another table.
 *
 * Ordering: a dirty L2 table may reference clusters whose refcounts are only
 * in the refcount cache, so evicting or flushing a dirty L2 table first
 * writes the refcount cache and syncs (see the invariant in qcow2.c).
 * Refcount blocks can be written at any time: a refcount that is ahead of
 * the references only ever makes a leak.
 *
 * Lookup is a hash on the cluster index with an LRU stamp per entry; the
 * expected load is one lookup per guest request in the fast path.
 *
 * Invariants (checked by SHOAL_ASSERT in debug builds): nb_dirty is the
 * number of dirty entries, and a dirty entry is always hashed (off != 0):
 * nothing is dropped from the cache before it is written or forgotten.
 */
#include "block/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"

struct cache_entry {
	uint64_t off;		/* host offset of the cluster, 0 if empty */
	uint64_t lru;		/* stamp of last use */
	bool dirty;
	int32_t hnext;		/* next entry in the hash chain, -1 at the end */
	uint8_t *data;
};

struct qcow2_cache {
	struct qcow2 *q;
	bool is_l2;
	uint32_t n;
	uint32_t nb_dirty;
	uint64_t clock;
	uint32_t nbuckets;
	int32_t *buckets;	/* head entry index per bucket, -1 if none */
	struct cache_entry *e;
	uint8_t *mem;
};

/* A cache of `entries` clusters; NULL on allocation failure. */
struct qcow2_cache *qcow2_cache_new(struct qcow2 *q, uint32_t entries, bool is_l2)
{
	struct qcow2_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->q = q;
	c->is_l2 = is_l2;
	c->n = entries;
	c->nbuckets = entries * 2;
	c->e = calloc(entries, sizeof(*c->e));
	c->buckets = malloc(c->nbuckets * sizeof(int32_t));
	c->mem = bd_memalign((size_t)entries << q->cluster_bits);
	if (!c->e || !c->buckets || !c->mem) {
		qcow2_cache_free(c);
		return NULL;
	}
	for (uint32_t i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	for (uint32_t i = 0; i < entries; i++) {
		c->e[i].data = c->mem + ((size_t)i << q->cluster_bits);
		c->e[i].hnext = -1;
	}
	return c;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
	if (!c)
		return;
	free(c->e);
	free(c->buckets);
	free(c->mem);
	free(c);
}

static uint32_t bucket_of(const struct qcow2_cache *c, uint64_t off)
{
	uint64_t k = off >> c->q->cluster_bits;

	return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32) % c->nbuckets;
}

static int32_t lookup(const struct qcow2_cache *c, uint64_t off)
{
	for (int32_t i = c->buckets[bucket_of(c, off)]; i >= 0; i = c->e[i].hnext)
		if (c->e[i].off == off)
			return i;
	return -1;
}

static void unhash(struct qcow2_cache *c, int32_t idx)
{
	int32_t *p = &c->buckets[bucket_of(c, c->e[idx].off)];

	while (*p >= 0 && *p != idx)
		p = &c->e[*p].hnext;
	if (*p == idx)
		*p = c->e[idx].hnext;
	c->e[idx].hnext = -1;
	c->e[idx].off = 0;
}

static void hash_in(struct qcow2_cache *c, int32_t idx, uint64_t off)
{
	uint32_t b = bucket_of(c, off);

	c->e[idx].off = off;
	c->e[idx].hnext = c->buckets[b];
	c->buckets[b] = idx;
}

/* What the cache holds, for the overlap guard. */
static uint32_t cache_kind(const struct qcow2_cache *c)
{
	return c->is_l2 ? QCOW2_K_L2 : QCOW2_K_REFBLOCK;
}

/* Before an L2 table reaches the disk, every refcount it relies on must. */
static int l2_write_barrier(struct qcow2_cache *c)
{
	struct qcow2 *q = c->q;

	if (!c->is_l2 || !q->rb_cache)
		return 0;
	if (qcow2_cache_flush(q->rb_cache))
		return -EIO;
	return fdatasync(q->fd) < 0 ? -errno : 0;
}

/* Write one dirty entry back. */
static int entry_write(struct qcow2_cache *c, struct cache_entry *ce)
{
	int r;

	if (!ce->dirty)
		return 0;
	r = qcow2_pwrite(c->q, cache_kind(c), ce->data, c->q->cluster_size, ce->off);
	if (r)
		return r;
	SHOAL_ASSERT(c->nb_dirty > 0, "qcow2 %s cache: writing a dirty entry with a dirty count of 0",
		     qcow2_kind_name(cache_kind(c)));
	ce->dirty = false;
	c->nb_dirty--;
	return 0;
}

/* The dirty count against the entries (debug builds: O(entries)). */
static uint32_t count_dirty(const struct qcow2_cache *c)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < c->n; i++)
		n += c->e[i].dirty;
	return n;
}

/* Pick a victim: an empty slot or the least recently used; write it back. */
static int32_t evict(struct qcow2_cache *c)
{
	int32_t best = -1;

	for (uint32_t i = 0; i < c->n; i++) {
		if (!c->e[i].off)
			return i;
		if (best < 0 || c->e[i].lru < c->e[best].lru)
			best = i;
	}
	if (c->e[best].dirty) {
		if (l2_write_barrier(c) || entry_write(c, &c->e[best]))
			return -1;
	}
	SHOAL_ASSERT(!c->e[best].dirty, "qcow2 %s cache: evicting a dirty entry",
		     qcow2_kind_name(cache_kind(c)));
	unhash(c, best);
	return best;
}

/* Fetch the cluster at `off` (reading it, or zero-filling it if `fresh`,
 * for a cluster just allocated).  0 or -errno. */
int qcow2_cache_get(struct qcow2_cache *c, uint64_t off, bool fresh, uint8_t **table)
{
	int32_t i = lookup(c, off);
	int r;

	if (i >= 0) {
		if (fresh)
			memset(c->e[i].data, 0, c->q->cluster_size);
		goto hit;
	}
	/* A table past the end of the file (it would read as zeros, and its
	 * write-back would stretch the file to it), or one that shares its
	 * cluster with other metadata, is refused before anyone reads or
	 * changes it through us. */
	if (!fresh && off >= c->q->file_end)
		return qcow2_signal_corruption(c->q, "the %s at 0x%llx lies beyond the end of "
					       "the file", qcow2_kind_name(cache_kind(c)),
					       (unsigned long long)off);
	r = qcow2_meta_guard(c->q, cache_kind(c), off, c->q->cluster_size, "refusing to use "
			     "the %s at 0x%llx", qcow2_kind_name(cache_kind(c)),
			     (unsigned long long)off);
	if (r)
		return r;
	i = evict(c);
	if (i < 0)
		return -EIO;
	if (fresh) {
		memset(c->e[i].data, 0, c->q->cluster_size);
	} else {
		r = bd_pread(c->q->fd, c->e[i].data, c->q->cluster_size, off, true);
		if (r)
			return r;
	}
	hash_in(c, i, off);
hit:
	c->e[i].lru = ++c->clock;
	*table = c->e[i].data;
	return 0;
}

/* Mark the entry holding `table` dirty. */
void qcow2_cache_dirty(struct qcow2_cache *c, uint8_t *table)
{
	size_t i = (size_t)(table - c->mem) >> c->q->cluster_bits;

	SHOAL_ASSERT(table >= c->mem && i < c->n && c->e[i].data == table && c->e[i].off,
		     "qcow2 %s cache: dirtying a table the cache does not hold",
		     qcow2_kind_name(cache_kind(c)));
	if (!c->e[i].dirty) {
		c->e[i].dirty = true;
		c->nb_dirty++;
	}
}

bool qcow2_cache_has_dirty(const struct qcow2_cache *c)
{
	return c && c->nb_dirty;
}

/* Write every dirty entry, in offset order (kinder to the disk). */
int qcow2_cache_flush(struct qcow2_cache *c)
{
	int r;

	if (!c || !c->nb_dirty)
		return 0;
	r = l2_write_barrier(c);
	for (uint32_t i = 0; !r && i < c->n; i++)
		r = entry_write(c, &c->e[i]);
	SHOAL_ASSERT(r || (c->nb_dirty == 0 && count_dirty(c) == 0),
		     "qcow2 %s cache: %u dirty after a flush (%u entries dirty)",
		     qcow2_kind_name(cache_kind(c)), c->nb_dirty, count_dirty(c));
	return r;
}

/* Drop the entry for `off` without writing it (cluster freed or reused). */
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off)
{
	int32_t i = lookup(c, off);

	if (i < 0)
		return;
	SHOAL_ASSERT(!c->e[i].dirty || c->nb_dirty > 0,
		     "qcow2 %s cache: forgetting a dirty entry with a dirty count of 0",
		     qcow2_kind_name(cache_kind(c)));
	if (c->e[i].dirty)
		c->nb_dirty--;
	c->e[i].dirty = false;
	unhash(c, i);
}

/* Drop everything (after a repair rewrote the metadata under us). */
void qcow2_cache_drop_all(struct qcow2_cache *c)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (c->e[i].off)
			qcow2_cache_forget(c, c->e[i].off);
	SHOAL_ASSERT(c->nb_dirty == 0, "qcow2 %s cache: %u dirty after dropping everything",
		     qcow2_kind_name(cache_kind(c)), c->nb_dirty);
}
