/*
 * qcow2_cluster.c - the guest-to-host mapping: reads, writes, zero writes
 * and discards, one guest cluster at a time.
 *
 * A guest offset goes through the L1 table (in memory) to an L2 table (in
 * the cache) to an L2 entry, which says one of: unallocated (read the
 * backing file), zero, data at a host offset, or compressed.  With extended
 * L2 entries each of the 32 subclusters has its own allocated/zero bits.
 *
 * Writes never modify a cluster that someone else can see.  A data cluster
 * whose entry has COPIED set has refcount 1 and is written in place;
 * anything else (unallocated, zero, compressed, shared with a snapshot) is
 * copied on write: the whole guest cluster is assembled in wbuf from its
 * current contents plus the new bytes, written to a newly allocated
 * cluster, and only then does the L2 entry change.  The old cluster is
 * released by a deferred decrement (see qcow2_refcount.c).  An L2 table
 * shared with a snapshot (L1 entry without COPIED) is copied the same way
 * before its first change.
 *
 * Zero writes and discards of whole clusters change only the L2 entry
 * (zero flag on v3, "unallocated" when nothing lies beneath); partial
 * clusters are written as zeros.  Discarded ranges therefore always read
 * back as zeros, which is what the differential tests' model expects.
 *
 * Every entry read from disk is checked before use: an unaligned offset or
 * one that lands on the header, L1, refcount or snapshot table marks the
 * image corrupt (reads of other clusters continue; writes are refused).
 * Reads stop at those O(1) tests; anything that writes or releases a
 * cluster checks it against all the metadata first (qcow2_overlap.c), so
 * an entry pointing at an L2 table or a refcount block is caught before the
 * guest's bytes or a refcount decrement reach it.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"

uint64_t qcow2_l2e_get(const struct qcow2 *q, const uint8_t *t, uint32_t i,
		       uint64_t *bitmap)
{
	uint64_t v[2] = { 0, 0 };

	memcpy(v, t + (size_t)i * q->l2_entry_bytes, q->l2_entry_bytes);
	if (bitmap)
		*bitmap = q->ext_l2 ? be64toh(v[1]) : 0;
	return be64toh(v[0]);
}

void qcow2_l2e_set(const struct qcow2 *q, uint8_t *t, uint32_t i,
		   uint64_t e, uint64_t bitmap)
{
	uint64_t v[2] = { htobe64(e), htobe64(bitmap) };

	memcpy(t + (size_t)i * q->l2_entry_bytes, v, q->l2_entry_bytes);
}

/* Where the compressed bytes of entry `l2e` lie in the file. */
void qcow2_compressed_range(const struct qcow2 *q, uint64_t l2e,
			    uint64_t *off, uint64_t *len)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t nsec = ((l2e >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;

	*off = l2e & ((1ull << x) - 1);
	*len = nsec * 512 - (*off & 511);
}

/* Does [off, off+len) hit the header or a table a header field places?
 * (The O(1) part of the overlap guard, cheap enough for every read.) */
static bool overlaps_meta(const struct qcow2 *q, uint32_t self, uint64_t off, uint64_t len)
{
	return qcow2_overlap(q, self, off, len, QCOW2_K_FIXED, NULL) != 0;
}

static uint32_t l2_index(const struct qcow2 *q, uint64_t off)
{
	return (off >> q->cluster_bits) & ((1u << q->l2_bits) - 1);
}

static uint64_t l1_index(const struct qcow2 *q, uint64_t off)
{
	return off >> (q->cluster_bits + q->l2_bits);
}

/* Fetch the L2 table for guest offset `off` for reading; *t = NULL if none. */
static int l2_get(struct qcow2 *q, uint64_t off, uint8_t **t)
{
	uint64_t i = l1_index(q, off), l2off;

	*t = NULL;
	if (i >= q->l1_size)
		return 0;
	l2off = q->l1[i] & QCOW2_L1E_OFFSET_MASK;
	if (!l2off)
		return 0;
	if ((l2off & (q->cluster_size - 1)) ||
	    overlaps_meta(q, QCOW2_K_L2, l2off, q->cluster_size) ||
	    l2off >= q->file_end)
		return qcow2_signal_corruption(q, "L1 entry %llu points at 0x%llx, which is "
					       "not a valid L2 table offset",
					       (unsigned long long)i, (unsigned long long)l2off);
	return qcow2_cache_get(q->l2_cache, l2off, false, t);
}

/* Status of subcluster `sc` of an extended entry. */
static enum bd_status sc_status(uint64_t bm, unsigned sc)
{
	if (bm & (1ull << sc))
		return BD_DATA;
	if (bm & (1ull << (32 + sc)))
		return BD_ZERO;
	return BD_UNALLOC;
}

/* Decode the entry at `off` (one cluster at most); checks the offsets. */
static int map_decode(struct qcow2 *q, uint64_t off, uint64_t e, uint64_t bm,
		      struct qcow2_map *m)
{
	uint64_t oic = qcow2_off_in_cluster(q, off), host = e & QCOW2_L2E_OFFSET_MASK;

	m->l2e = e;
	m->bytes = q->cluster_size - oic;
	if (e & QCOW2_OFLAG_COMPRESSED) {
		m->status = BD_COMPRESSED;
		return 0;
	}
	if (q->ext_l2) {
		unsigned sc = oic >> q->sc_bits, last = sc;

		m->status = sc_status(bm, sc);
		while (last + 1 < QCOW2_SUBCLUSTERS && sc_status(bm, last + 1) == m->status)
			last++;
		m->bytes = ((uint64_t)(last + 1) << q->sc_bits) - oic;
	} else if (q->version >= 3 && (e & QCOW2_OFLAG_ZERO)) {
		m->status = BD_ZERO;
	} else {
		m->status = host ? BD_DATA : BD_UNALLOC;
	}
	if (m->status != BD_DATA)
		return 0;
	if (!host || (host & (q->cluster_size - 1)) ||
	    overlaps_meta(q, QCOW2_K_DATA, host, q->cluster_size))
		return qcow2_signal_corruption(q, "L2 entry for guest offset 0x%llx points at "
					       "0x%llx, which is not a valid data cluster",
					       (unsigned long long)off, (unsigned long long)host);
	if (host >= q->file_end && q->file_end)
		return qcow2_signal_corruption(q, "L2 entry for guest offset 0x%llx points at "
					       "0x%llx, beyond the end of the file",
					       (unsigned long long)off, (unsigned long long)host);
	m->host = host + oic;
	return 0;
}

/* Map [off, off+len) as far as one status and contiguous host range go,
 * within one L2 table.  m->bytes <= len. */
int qcow2_map_get(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_map *m)
{
	uint64_t l2_end = (l1_index(q, off) + 1) << (q->cluster_bits + q->l2_bits);
	uint64_t e, bm, cur;
	uint8_t *t;
	int r = l2_get(q, off, &t);

	if (len > l2_end - off)
		len = l2_end - off;
	if (r)
		return r;
	if (!t) {
		m->status = BD_UNALLOC;
		m->bytes = len;
		m->l2e = 0;
		return 0;
	}
	e = qcow2_l2e_get(q, t, l2_index(q, off), &bm);
	r = map_decode(q, off, e, bm, m);
	if (r)
		return r;
	/* Coalesce following clusters with the same status (and contiguous data). */
	for (cur = off + m->bytes; m->status != BD_COMPRESSED && cur < off + len &&
	     m->bytes == cur - off; ) {
		struct qcow2_map n;

		e = qcow2_l2e_get(q, t, l2_index(q, cur), &bm);
		if (map_decode(q, cur, e, bm, &n) || n.status != m->status ||
		    (n.status == BD_DATA && n.host != m->host + m->bytes))
			break;
		m->bytes += n.bytes;
		cur += n.bytes;
	}
	if (m->bytes > len)
		m->bytes = len;
	return 0;
}

/* Read the compressed cluster `e` into q->dbuf (cached by entry). */
static int read_compressed(struct qcow2 *q, uint64_t e)
{
	uint64_t coff, clen;
	int r;

	if (q->dbuf_valid && q->dbuf_key == e)
		return 0;
	qcow2_compressed_range(q, e, &coff, &clen);
	if (clen > 2 * q->cluster_size)
		return qcow2_signal_corruption(q, "compressed cluster too large");
	r = bd_pread(q->fd, q->cbuf, clen, coff, true);
	if (r)
		return r;
	q->dbuf_valid = false;
	if (qcow2_decompress(q, q->cbuf, clen, q->dbuf, q->cluster_size)) {
		error_set(&q->bd->err, EXIT_HOST, "%s: compressed cluster at 0x%llx does "
			  "not decompress", q->bd->path, (unsigned long long)coff);
		return -EIO;
	}
	q->dbuf_key = e;
	q->dbuf_valid = true;
	return 0;
}

/* Read guest bytes; any length, any alignment, within the disk. */
int qcow2_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	struct qcow2 *q = bd->priv;
	uint8_t *p = buf;
	int r = 0;

	while (!r && len) {
		struct qcow2_map m;

		r = qcow2_map_get(q, off, len, &m);
		if (r)
			break;
		switch (m.status) {
		case BD_UNALLOC:
			r = blockdev_read_backing(bd, p, off, m.bytes);
			break;
		case BD_ZERO:
			memset(p, 0, m.bytes);
			break;
		case BD_DATA:
			r = bd_pread(q->fd, p, m.bytes, m.host, true);
			break;
		case BD_COMPRESSED:
			r = read_compressed(q, m.l2e);
			if (!r)
				memcpy(p, q->dbuf + qcow2_off_in_cluster(q, off), m.bytes);
			break;
		}
		p += m.bytes;
		off += m.bytes;
		len -= m.bytes;
	}
	return r;
}

/* Fetch (creating or un-sharing as needed) the L2 table for a write at
 * guest offset `off`. */
static int l2_get_for_write(struct qcow2 *q, uint64_t off, uint8_t **t)
{
	uint64_t i = l1_index(q, off), old = q->l1[i] & QCOW2_L1E_OFFSET_MASK;
	int64_t n;
	int r;

	if (old && (q->l1[i] & QCOW2_OFLAG_COPIED))
		return l2_get(q, off, t);
	if (old) {
		r = l2_get(q, off, t);
		if (r)
			return r;
		memcpy(q->wbuf, *t, q->cluster_size);
	}
	n = qcow2_alloc_clusters(q, 1);
	if (n < 0)
		return n;
	r = qcow2_cache_get(q->l2_cache, n, true, t);
	if (r)
		return r;
	if (old) {
		/* The table was shared, so is everything it points at. */
		memcpy(*t, q->wbuf, q->cluster_size);
		for (uint32_t k = 0; k < (1u << q->l2_bits); k++) {
			uint64_t bm, e = qcow2_l2e_get(q, *t, k, &bm);

			if (e & QCOW2_OFLAG_COPIED)
				qcow2_l2e_set(q, *t, k, e & ~QCOW2_OFLAG_COPIED, bm);
		}
		r = qcow2_free_deferred(q, old, 1);
	}
	qcow2_cache_dirty(q->l2_cache, *t);
	q->l1[i] = (uint64_t)n | QCOW2_OFLAG_COPIED;
	q->l1_dirty = true;
	return r;
}

/* The entry `e` of guest offset `off` must point at guest data inside the
 * file, not at metadata: written in place or released, it would damage a
 * table.  0, or the image is marked corrupt and -EIO returned. */
static int entry_guard(struct qcow2 *q, uint64_t off, uint64_t e)
{
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK, len = q->cluster_size;

	if (e & QCOW2_OFLAG_COMPRESSED)
		qcow2_compressed_range(q, e, &host, &len);
	else if (host & (q->cluster_size - 1))
		return qcow2_signal_corruption(q, "L2 entry for guest offset 0x%llx points "
					       "at 0x%llx, which is not cluster-aligned",
					       (unsigned long long)off, (unsigned long long)host);
	if (!host)
		return 0;
	if (host >= q->file_end)	/* written, it would stretch the file */
		return qcow2_signal_corruption(q, "L2 entry for guest offset 0x%llx points at "
					       "0x%llx, beyond the end of the file",
					       (unsigned long long)off, (unsigned long long)host);
	return qcow2_meta_guard(q, QCOW2_K_DATA, host, len, "L2 entry for guest offset "
				"0x%llx points at 0x%llx", (unsigned long long)off,
				(unsigned long long)host);
}

/* Release whatever the entry `e` of guest offset `off` held, for when it is
 * replaced.  An entry pointing at metadata releases nothing: the decrement
 * would free a live table for the next allocation to overwrite. */
static int release_entry(struct qcow2 *q, uint64_t off, uint64_t e)
{
	int r = entry_guard(q, off, e);

	if (r || !(e & QCOW2_L2E_OFFSET_MASK))
		return r;
	if (e & QCOW2_OFLAG_COMPRESSED)
		return qcow2_free_compressed(q, e);
	return qcow2_free_deferred(q, e & QCOW2_L2E_OFFSET_MASK, 1);
}

/* True if the entry's cluster is ours alone and holds data for every
 * subcluster of [oic, oic+n), so the bytes can go straight to disk. */
static bool in_place_ok(const struct qcow2 *q, uint64_t e, uint64_t bm,
			uint64_t oic, uint64_t n)
{
	uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

	if (!(e & QCOW2_OFLAG_COPIED) || (e & QCOW2_OFLAG_COMPRESSED) || !host)
		return false;
	if (!q->ext_l2)
		return !(q->version >= 3 && (e & QCOW2_OFLAG_ZERO));
	for (uint64_t sc = oic >> q->sc_bits; sc <= (oic + n - 1) >> q->sc_bits; sc++)
		if (!(bm & (1ull << sc)))
			return false;
	return true;
}

/* Bytes of the guest cluster starting at `cstart` that lie inside the disk. */
static uint64_t cluster_len(const struct qcow2 *q, uint64_t cstart)
{
	uint64_t l = q->size - cstart;

	return l < q->cluster_size ? l : q->cluster_size;
}

/* Write n bytes at off, all within one guest cluster (data == NULL: zeros). */
static int write_cluster(struct qcow2 *q, uint64_t off, const void *data, uint64_t n)
{
	uint64_t oic = qcow2_off_in_cluster(q, off), cstart = off - oic, e, bm, host;
	uint64_t clen = cluster_len(q, cstart);
	uint8_t *t;
	int64_t nc;
	int r = l2_get_for_write(q, off, &t);

	if (r)
		return r;
	e = qcow2_l2e_get(q, t, l2_index(q, off), &bm);
	host = e & QCOW2_L2E_OFFSET_MASK;
	r = entry_guard(q, off, e);
	if (r)
		return r;
	if (in_place_ok(q, e, bm, oic, n)) {
		if (!data)
			memset(q->wbuf, 0, n);
		return qcow2_pwrite(q, QCOW2_K_DATA, data ? data : q->wbuf, n, host + oic);
	}
	/* Copy on write: assemble the whole cluster. */
	if (n < clen)
		r = qcow2_read(q->bd, q->wbuf, cstart, clen);
	if (r)
		return r;
	memset(q->wbuf + clen, 0, q->cluster_size - clen);
	if (data)
		memcpy(q->wbuf + oic, data, n);
	else
		memset(q->wbuf + oic, 0, n);
	if (host && (e & QCOW2_OFLAG_COPIED) && !(e & QCOW2_OFLAG_COMPRESSED)) {
		nc = host;	/* ours already (zero-flagged or partly allocated) */
	} else {
		nc = qcow2_alloc_clusters(q, 1);
		if (nc < 0)
			return nc;
	}
	r = qcow2_pwrite(q, QCOW2_K_DATA, q->wbuf, q->cluster_size, nc);
	if (r)
		return r;
	r = l2_get_for_write(q, off, &t);	/* the read above may have evicted it */
	if (r)
		return r;
	if ((uint64_t)nc != host)
		r = release_entry(q, off, e);
	qcow2_l2e_set(q, t, l2_index(q, off), (uint64_t)nc | QCOW2_OFLAG_COPIED,
		      q->ext_l2 ? 0xffffffffull : 0);
	qcow2_cache_dirty(q->l2_cache, t);
	return r;
}

/* Common prologue of every change: state checks, generation bump. */
static int change_begin(struct qcow2 *q, uint64_t off, uint64_t len)
{
	if (off > q->size || len > q->size - off)
		return -EINVAL;
	q->dbuf_valid = false;
	return qcow2_before_change(q);
}

/* Write guest bytes; any length, any alignment, within the disk. */
int qcow2_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len)
{
	struct qcow2 *q = bd->priv;
	const uint8_t *p = buf;
	int r = change_begin(q, off, len);

	while (!r && len) {
		uint64_t n = q->cluster_size - qcow2_off_in_cluster(q, off);

		if (n > len)
			n = len;
		r = write_cluster(q, off, p, n);
		p += n;
		off += n;
		len -= n;
	}
	return r;
}

/* Does the guest cluster at cstart already read as zeros without help? */
static int reads_zero(struct qcow2 *q, uint64_t off, uint64_t n, bool *yes)
{
	struct qcow2_map m;
	int r = qcow2_map_get(q, off, n, &m);

	*yes = !r && m.bytes >= n && (m.status == BD_ZERO ||
				      (m.status == BD_UNALLOC && !q->bd->backing));
	return r;
}

/* Make one whole guest cluster read as zeros by changing only its entry. */
static int zero_whole_cluster(struct qcow2 *q, uint64_t off)
{
	uint64_t e, ne = 0, nbm = 0;
	uint8_t *t;
	int r;

	if (q->ext_l2)
		nbm = q->bd->backing ? 0xffffffff00000000ull : 0;
	else if (q->version >= 3 && q->bd->backing)
		ne = QCOW2_OFLAG_ZERO;
	else if (q->bd->backing)
		return write_cluster(q, off, NULL, cluster_len(q, off));	/* v2 */
	r = l2_get_for_write(q, off, &t);
	if (r)
		return r;
	e = qcow2_l2e_get(q, t, l2_index(q, off), NULL);
	r = release_entry(q, off, e);
	if (r)
		return r;
	qcow2_l2e_set(q, t, l2_index(q, off), ne, nbm);
	qcow2_cache_dirty(q->l2_cache, t);
	return r;
}

/* Make [off, off+len) read as zeros. */
int qcow2_write_zeroes(struct blockdev *bd, uint64_t off, uint64_t len)
{
	struct qcow2 *q = bd->priv;
	int r = change_begin(q, off, len);

	while (!r && len) {
		uint64_t oic = qcow2_off_in_cluster(q, off), n = q->cluster_size - oic;
		bool z;

		if (n > len)
			n = len;
		r = reads_zero(q, off, n, &z);
		if (r || z)
			goto next;
		if (!oic && n == cluster_len(q, off))
			r = zero_whole_cluster(q, off);
		else
			r = write_cluster(q, off, NULL, n);
next:
		off += n;
		len -= n;
	}
	return r;
}

/* Discard: release whole clusters; the range reads back as zeros. */
int qcow2_discard(struct blockdev *bd, uint64_t off, uint64_t len)
{
	return qcow2_write_zeroes(bd, off, len);
}

/* Status of the range at off, for `map` and for convert. */
int qcow2_block_status(struct blockdev *bd, uint64_t off, uint64_t len,
		       struct bd_extent *ext)
{
	struct qcow2_map m;
	int r = qcow2_map_get(bd->priv, off, len, &m);

	if (r)
		return r;
	ext->status = m.status;
	ext->len = m.bytes;
	ext->host_off = m.status == BD_DATA ? m.host : 0;
	ext->depth = 0;
	return 0;
}

/* Fast path for the async engine: [off, off+len) maps to one host range
 * and needs no metadata change.  Returns the bytes mapped or 0. */
uint64_t qcow2_map_fast(struct blockdev *bd, bool write, uint64_t off,
			uint64_t len, uint64_t *host_off)
{
	struct qcow2 *q = bd->priv;
	struct qcow2_map m;
	uint64_t e, bm, oic;
	uint8_t *t;

	if (!write) {
		if (qcow2_map_get(q, off, len, &m) || m.status != BD_DATA)
			return 0;
		*host_off = m.host;
		return m.bytes;
	}
	if (!q->chain.bumped || q->corrupt || bd->readonly)
		return 0;
	oic = qcow2_off_in_cluster(q, off);
	if (len > q->cluster_size - oic)
		len = q->cluster_size - oic;
	if (!(q->l1[l1_index(q, off)] & QCOW2_OFLAG_COPIED) || l2_get(q, off, &t) || !t)
		return 0;
	e = qcow2_l2e_get(q, t, l2_index(q, off), &bm);
	if (!in_place_ok(q, e, bm, oic, len) ||
	    qcow2_overlap(q, QCOW2_K_DATA, (e & QCOW2_L2E_OFFSET_MASK) + oic, len,
			  QCOW2_K_ALL, NULL))
		return 0;	/* the slow path refuses it, marking the image corrupt */
	*host_off = (e & QCOW2_L2E_OFFSET_MASK) + oic;
	return len;
}

/* Room for `n` compressed bytes, packed after the previous compressed
 * cluster as QEMU does: each host cluster the bytes touch gains one
 * reference.  Returns the byte offset or -errno. */
static int64_t qcow2_alloc_compressed(struct qcow2 *q, uint64_t n)
{
	uint64_t cs = q->cluster_size, at = q->cpack_off, room;
	int64_t c;
	int r;

	if (qcow2_refcount_max(q) <= (cs >> 9))
		at = 0;		/* narrow refcounts: a cluster cannot hold enough sharers */
	room = at ? cs - (at & (cs - 1)) : 0;
	if (at && (at & (cs - 1)) && n <= room) {
		r = qcow2_refcount_update(q, at >> q->cluster_bits, 1);
		if (r)
			return r;
		q->cpack_off = at + n;
		return at;
	}
	c = qcow2_alloc_clusters(q, 1);
	if (c < 0)
		return c;
	if (at && (at & (cs - 1)) && (uint64_t)c == (at | (cs - 1)) + 1) {
		/* contiguous: span the end of the last cluster into the new one */
		r = qcow2_refcount_update(q, at >> q->cluster_bits, 1);
		if (r)
			return r;
		q->cpack_off = at + n;
		return at;
	}
	q->cpack_off = c + n;
	return c;
}

/* Write one whole guest cluster compressed (convert -c).  The cluster must
 * be unallocated so far.  Falls back to a plain write if it will not shrink. */
int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf)
{
	uint64_t clen = cluster_len(q, off), nsec, hoff, e;
	unsigned x = 62 - (q->cluster_bits - 8);
	long n;
	uint8_t *t;
	int r = change_begin(q, off, clen);

	if (r)
		return r;
	memset(q->wbuf, 0, q->cluster_size);
	memcpy(q->wbuf, buf, clen);
	n = qcow2_compress(q, q->wbuf, q->cluster_size, q->cbuf, q->cluster_size - 512);
	if (n < 0)
		return write_cluster(q, off, buf, clen);
	r = l2_get_for_write(q, off, &t);	/* L2 first: keeps the packing contiguous */
	if (r)
		return r;
	hoff = qcow2_alloc_compressed(q, n);
	if ((int64_t)hoff < 0)
		return (int64_t)hoff;
	r = qcow2_pwrite(q, QCOW2_K_DATA, q->cbuf, n, hoff);
	if (r)
		return r;
	r = l2_get_for_write(q, off, &t);
	if (r)
		return r;
	nsec = ((hoff + n - 1) >> 9) - (hoff >> 9);	/* additional sectors */
	e = QCOW2_OFLAG_COMPRESSED | (nsec << x) | hoff;
	r = release_entry(q, off, qcow2_l2e_get(q, t, l2_index(q, off), NULL));
	if (r)
		return r;
	qcow2_l2e_set(q, t, l2_index(q, off), e, 0);
	qcow2_cache_dirty(q->l2_cache, t);
	return r;
}

/* Give every guest cluster a host cluster (preallocation).  With `full`
 * the space is reserved in the file system too; either way the clusters
 * read as zeros because the file is extended over them. */
int qcow2_preallocate(struct qcow2 *q, bool full)
{
	uint64_t end = 0;
	int r = change_begin(q, 0, 0);

	for (uint64_t off = 0; !r && off < q->size; off += q->cluster_size) {
		uint8_t *t;
		int64_t nc;

		r = l2_get_for_write(q, off, &t);
		if (r)
			break;
		if (qcow2_l2e_get(q, t, l2_index(q, off), NULL))
			continue;
		nc = qcow2_alloc_clusters(q, 1);
		if (nc < 0)
			return nc;
		r = l2_get_for_write(q, off, &t);
		if (r)
			break;
		qcow2_l2e_set(q, t, l2_index(q, off), (uint64_t)nc | QCOW2_OFLAG_COPIED,
			      q->ext_l2 ? 0xffffffffull : 0);
		qcow2_cache_dirty(q->l2_cache, t);
		if ((uint64_t)nc + q->cluster_size > end)
			end = nc + q->cluster_size;
	}
	if (r || !end)
		return r;
	if (full)
		return posix_fallocate(q->fd, 0, end) ? -ENOSPC : 0;
	return ftruncate(q->fd, end) < 0 ? -errno : 0;
}

/* Drop every cluster of the active image so that it reads entirely from
 * its backing file (after commit).  Refused with internal snapshots. */
int qcow2_make_empty(struct qcow2 *q)
{
	uint64_t per = 1ull << q->l2_bits;
	int r = q->nb_snaps ? -ENOTSUP : change_begin(q, 0, 0);

	for (uint32_t i = 0; !r && i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & QCOW2_L1E_OFFSET_MASK;
		uint8_t *t;

		if (!l2)
			continue;
		r = qcow2_cache_get(q->l2_cache, l2, false, &t);
		for (uint64_t k = 0; !r && k < per; k++)
			r = release_entry(q, ((uint64_t)i * per + k) << q->cluster_bits,
					  qcow2_l2e_get(q, t, k, NULL));
		if (!r)
			r = qcow2_free_deferred(q, l2, 1);
		q->l1[i] = 0;
		q->l1_dirty = true;
	}
	return r ? r : qcow2_flush_all(q);
}
