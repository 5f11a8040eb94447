/*
 * qcow2.c - opening a qcow2 image: header, extensions, feature bits, and
 * the ordering rules that keep the image consistent across a crash.
 *
 * What it is for: turning the first cluster of an untrusted file into a
 * struct qcow2 that the mapping code can trust, or into a clear refusal.
 * Every field read from the header is range-checked against the caps in
 * qcow2_format.h before anything is allocated from it.
 *
 * Feature bits follow the spec's three classes: an unknown incompatible bit
 * refuses the open (naming the bit, and its name if the image's feature
 * table has one); unknown compatible bits are kept; autoclear bits we do not
 * maintain are cleared on the first write, so that a program that does
 * maintain them knows its data (e.g. bitmaps) may be stale.
 *
 * Crash ordering (qcow2_flush_all), the one invariant everything relies on:
 * no on-disk L1/L2 entry ever points at a cluster whose on-disk refcount is
 * zero.  So a flush writes dirty refcount blocks, syncs (this also makes new
 * data clusters durable), writes dirty L2 tables and the L1 table, syncs,
 * and only then applies the refcount decrements queued since the last flush.
 * A crash anywhere leaves at worst leaked clusters, which `qemu-img check -r
 * leaks` reclaims.  We never use lazy refcounts, so we never set the dirty
 * bit; an image opened with it set (written lazily by QEMU) is repaired
 * before the first write.
 *
 * Threads: none of its own; the owner thread calls in.  Load: open and
 * flush are rare; header writes happen once per open (generation bump).
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"

/* Mark the image corrupt: remember it and why, tell the log (unless the
 * caller prints bd->err itself: one line per failure), set the on-disk bit
 * if we can write.  Always returns -EIO so callers can `return` it. */
int qcow2_signal_corruption(struct qcow2 *q, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!q->corrupt) {
		snprintf(q->corrupt_why, sizeof(q->corrupt_why), "%.255s", msg);
		if (!q->bd->caller_reports)
			log_error("%s: image is corrupt: %s; further writes refused",
				  q->bd->path, msg);
		q->corrupt = true;
		if (!q->bd->readonly && q->version >= 3) {
			q->incompat |= QCOW2_INCOMPAT_CORRUPT;
			qcow2_header_update_bits(q);
		}
	}
	error_set(&q->bd->err, EXIT_HOST, "%s: image is corrupt: %s", q->bd->path, msg);
	return -EIO;
}

/* The host file's current size (a block device's, for an image on one). */
uint64_t qcow2_file_size(const struct qcow2 *q)
{
	struct stat st;
	uint64_t sz;

	if (fstat(q->fd, &st) < 0)
		return 0;
	if (S_ISBLK(st.st_mode))
		return ioctl(q->fd, BLKGETSIZE64, &sz) < 0 ? 0 : sz;
	return st.st_size;
}

/* True if `off` is a plausible host cluster offset (aligned, in range). */
bool qcow2_host_ok(const struct qcow2 *q, uint64_t off)
{
	return off && !(off & (q->cluster_size - 1)) && off < (1ull << 56);
}

/* Write the v3 feature words that we may change (incompatible, autoclear). */
int qcow2_header_update_bits(struct qcow2 *q)
{
	uint64_t be[3];

	if (q->version < 3)
		return 0;
	be[0] = htobe64(q->incompat);
	be[1] = htobe64(q->compat);
	be[2] = htobe64(q->autoclear);
	return bd_pwrite(q->fd, be, sizeof(be), QCOW2_OFF_INCOMPAT);
}

/* Append one extension to buf at *pos; -ENOSPC if it will not fit. */
static int hdr_put_ext(uint8_t *buf, size_t cap, size_t *pos, uint32_t type,
		       const void *data, uint32_t len)
{
	struct qcow2_disk_ext x = { htobe32(type), htobe32(len) };
	size_t padded = (len + 7) & ~7u;

	if (*pos + sizeof(x) + padded > cap)
		return -ENOSPC;
	memcpy(buf + *pos, &x, sizeof(x));
	memset(buf + *pos + sizeof(x), 0, padded);
	if (len && data)
		memcpy(buf + *pos + sizeof(x), data, len);
	*pos += sizeof(x) + padded;
	return 0;
}

/* Serialize the header, all extensions and the backing file name into buf
 * (one cluster).  Records where the chain extension landed. */
static int hdr_build(struct qcow2 *q, uint8_t *buf, size_t cap)
{
	struct qcow2_disk_header h = { 0 };
	size_t hlen = q->version >= 3 ? q->header_length : QCOW2_V2_HDR_LEN;
	size_t pos = hlen, blen;
	int r = 0;

	h.magic = htobe32(QCOW2_MAGIC);
	h.version = htobe32(q->version);
	h.cluster_bits = htobe32(q->cluster_bits);
	h.size = htobe64(q->size);
	h.l1_size = htobe32(q->l1_size);
	h.l1_table_offset = htobe64(q->l1_offset);
	h.refcount_table_offset = htobe64(q->reftable_offset);
	h.refcount_table_clusters = htobe32(q->reftable_clusters);
	h.nb_snapshots = htobe32(q->nb_snaps);
	h.snapshots_offset = htobe64(q->snap_offset);
	h.incompatible_features = htobe64(q->incompat);
	h.compatible_features = htobe64(q->compat);
	h.autoclear_features = htobe64(q->autoclear);
	h.refcount_order = htobe32(q->refcount_order);
	h.header_length = htobe32(hlen);
	h.compression_type = q->compression_type;
	memset(buf, 0, cap);
	memcpy(buf, &h, hlen < sizeof(h) ? hlen : sizeof(h));
	if (q->backing_format)
		r |= hdr_put_ext(buf, cap, &pos, QCOW2_EXT_BACKING_FMT,
				 q->backing_format, strlen(q->backing_format));
	if (q->chain.present) {
		q->chain.ext_off = pos + sizeof(struct qcow2_disk_ext);
		r |= hdr_put_ext(buf, cap, &pos, QCOW2_EXT_SHOAL_CHAIN, NULL,
				 sizeof(struct qcow2_disk_chain_id));
	}
	for (uint32_t i = 0; i < q->nb_exts; i++)
		r |= hdr_put_ext(buf, cap, &pos, q->exts[i].type, q->exts[i].data,
				 q->exts[i].len);
	r |= hdr_put_ext(buf, cap, &pos, QCOW2_EXT_END, NULL, 0);
	if (r)
		return -ENOSPC;
	if (q->backing_file) {
		blen = strlen(q->backing_file);
		if (pos + blen > cap)
			return -ENOSPC;
		memcpy(buf + pos, q->backing_file, blen);
		h.backing_file_offset = htobe64(pos);
		h.backing_file_size = htobe32(blen);
		memcpy(buf + 8, &h.backing_file_offset, 12);
	}
	return 0;
}

/* Rewrite the whole header cluster from q (create, rebase).  The caller
 * makes sure everything the header points at is already on disk. */
int qcow2_header_rewrite(struct qcow2 *q)
{
	uint8_t *buf = calloc(1, q->cluster_size);
	int r;

	if (!buf)
		return -ENOMEM;
	r = hdr_build(q, buf, q->cluster_size);
	if (!r)
		r = bd_pwrite(q->fd, buf, q->cluster_size, 0);
	free(buf);
	if (!r && q->chain.present)
		r = chain_id_write(q);
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	return r;
}

/* Called before the first change to the image's contents in this open:
 * refuse if we must, clear autoclear bits we do not maintain, and bump the
 * chain generation so that overlays of this image notice. */
int qcow2_before_change(struct qcow2 *q)
{
	struct blockdev *bd = q->bd;
	int r;

	if (bd->readonly)
		return -EROFS;
	if (q->corrupt) {
		error_set(&bd->err, EXIT_HOST, "%s: image is marked corrupt%s%s%s; writes "
			  "refused (run `shoal img check -r all`)", bd->path,
			  q->corrupt_why[0] ? " (" : "", q->corrupt_why,
			  q->corrupt_why[0] ? ")" : "");
		return -EIO;
	}
	if (q->chain.bumped)
		return 0;
	if (q->autoclear & ~QCOW2_AUTOCLEAR_MAINTAINED) {
		q->autoclear &= QCOW2_AUTOCLEAR_MAINTAINED;
		r = qcow2_header_update_bits(q);
		if (r)
			return r;
	}
	return chain_id_bump(q);
}

/* Write the in-memory L1 table to disk. */
static int l1_write(struct qcow2 *q)
{
	size_t n = q->l1_size;
	uint64_t *be = malloc(n * 8 + 8);
	int r;

	if (!be)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		be[i] = htobe64(q->l1[i]);
	r = qcow2_pwrite(q, QCOW2_K_L1, be, n * 8, q->l1_offset);
	free(be);
	if (!r)
		q->l1_dirty = false;
	return r;
}

/* Make everything written so far durable, in the crash-safe order
 * described at the top of this file. */
int qcow2_flush_all(struct qcow2 *q)
{
	int r;

	if (q->bd->readonly)
		return 0;
	r = qcow2_cache_flush(q->rb_cache);
	if (r)
		return r;
	if (fdatasync(q->fd) < 0)
		return -errno;
	r = qcow2_cache_flush(q->l2_cache);
	if (!r && q->l1_dirty)
		r = l1_write(q);
	if (r)
		return r;
	if (fdatasync(q->fd) < 0)
		return -errno;
	if (!q->nb_frees)
		return 0;
	r = qcow2_free_apply(q);
	if (!r)
		r = qcow2_cache_flush(q->rb_cache);
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	return r;
}

static int qcow2_flush_op(struct blockdev *bd)
{
	struct qcow2 *q = bd->priv;
	int r = qcow2_flush_all(q);

	if (r && !q->corrupt)
		error_set(&bd->err, EXIT_HOST, "%s: flush: %s", bd->path, strerror(-r));
	return r;
}

/* Name of feature `bit` of class `type` from the image's table, or NULL. */
static const char *feature_name(struct qcow2 *q, int type, int bit)
{
	static char name[47];

	for (uint32_t i = 0; i < q->nb_exts; i++) {
		struct qcow2_ext *x = &q->exts[i];

		if (x->type != QCOW2_EXT_FEATURES)
			continue;
		for (uint32_t o = 0; o + 48 <= x->len; o += 48) {
			const struct qcow2_disk_feature *f = (const void *)(x->data + o);

			if (f->type == type && f->bit == bit) {
				memcpy(name, f->name, 46);
				name[46] = 0;
				return name;
			}
		}
	}
	return NULL;
}

/* Parse and range-check the fixed header fields. */
static int hdr_parse(struct qcow2 *q, const struct qcow2_disk_header *h,
		     uint64_t fsize, struct error *e)
{
	const char *p = q->bd->path;

	if (be32toh(h->magic) != QCOW2_MAGIC)
		return error_set(e, EXIT_NOINPUT, "%s: not a qcow2 image", p);
	q->version = be32toh(h->version);
	if (q->version != 2 && q->version != 3)
		return error_set(e, EXIT_NOINPUT, "%s: qcow2 version %u not supported",
				 p, q->version);
	q->cluster_bits = be32toh(h->cluster_bits);
	if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return error_set(e, EXIT_NOINPUT, "%s: cluster_bits %u out of range 9..21",
				 p, q->cluster_bits);
	q->cluster_size = 1ull << q->cluster_bits;
	q->size = be64toh(h->size);
	if (q->size > QCOW2_MAX_SIZE)
		return error_set(e, EXIT_NOINPUT, "%s: virtual size %llu too large",
				 p, (unsigned long long)q->size);
	if (be32toh(h->crypt_method))
		return error_set(e, EXIT_NOINPUT, "%s: encrypted qcow2 images are not supported", p);
	q->l1_size = be32toh(h->l1_size);
	q->l1_offset = be64toh(h->l1_table_offset);
	q->reftable_offset = be64toh(h->refcount_table_offset);
	q->reftable_clusters = be32toh(h->refcount_table_clusters);
	q->nb_snaps = be32toh(h->nb_snapshots);
	q->snap_offset = be64toh(h->snapshots_offset);
	q->refcount_order = 4;
	q->header_length = QCOW2_V2_HDR_LEN;
	if (q->version >= 3) {
		q->incompat = be64toh(h->incompatible_features);
		q->compat = be64toh(h->compatible_features);
		q->autoclear = be64toh(h->autoclear_features);
		q->refcount_order = be32toh(h->refcount_order);
		q->header_length = be32toh(h->header_length);
		if (q->header_length < QCOW2_V3_HDR_LEN || q->header_length > q->cluster_size ||
		    (q->header_length & 7))
			return error_set(e, EXIT_NOINPUT, "%s: bad header_length %u",
					 p, q->header_length);
		if (q->header_length > 104)
			q->compression_type = h->compression_type;
	}
	if (q->refcount_order > 6)
		return error_set(e, EXIT_NOINPUT, "%s: refcount_order %u out of range 0..6",
				 p, q->refcount_order);
	(void)fsize;
	return 0;
}

/* Check the tables the header points at: alignment and caps. */
static int hdr_check_tables(struct qcow2 *q, struct error *e)
{
	const char *p = q->bd->path;
	uint64_t l2_cover, need;

	q->ext_l2 = q->incompat & QCOW2_INCOMPAT_EXTL2;
	q->l2_entry_bytes = q->ext_l2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->ext_l2 ? 4 : 3);
	q->sc_bits = q->cluster_bits - (q->ext_l2 ? 5 : 0);
	if (q->ext_l2 && q->cluster_bits < 14)
		return error_set(e, EXIT_NOINPUT, "%s: extended L2 entries need clusters of "
				 "16 KiB or more", p);
	l2_cover = 1ull << (q->l2_bits + q->cluster_bits);
	need = (q->size + l2_cover - 1) / l2_cover;
	if ((uint64_t)q->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return error_set(e, EXIT_NOINPUT, "%s: L1 table of %u entries is too large",
				 p, q->l1_size);
	if (q->l1_size < need)
		return error_set(e, EXIT_NOINPUT, "%s: L1 table (%u entries) too small for "
				 "the disk size (needs %llu)", p, q->l1_size,
				 (unsigned long long)need);
	if (q->l1_size && !qcow2_host_ok(q, q->l1_offset))
		return error_set(e, EXIT_NOINPUT, "%s: L1 table offset 0x%llx invalid",
				 p, (unsigned long long)q->l1_offset);
	if ((uint64_t)q->reftable_clusters << q->cluster_bits > QCOW2_MAX_REFTABLE_BYTES ||
	    !q->reftable_clusters)
		return error_set(e, EXIT_NOINPUT, "%s: refcount table of %u clusters is "
				 "out of range", p, q->reftable_clusters);
	if (!qcow2_host_ok(q, q->reftable_offset))
		return error_set(e, EXIT_NOINPUT, "%s: refcount table offset 0x%llx invalid",
				 p, (unsigned long long)q->reftable_offset);
	return 0;
}

/* Handle the feature bits after extensions (and so feature names) are known. */
static int hdr_check_features(struct qcow2 *q, bool readonly, struct error *e)
{
	const char *p = q->bd->path, *n;
	uint64_t unknown = q->incompat & ~QCOW2_INCOMPAT_KNOWN;

	if (unknown) {
		int bit = __builtin_ctzll(unknown);

		n = feature_name(q, 0, bit);
		return error_set(e, EXIT_NOINPUT, "%s: unsupported incompatible feature bit "
				 "%d%s%s%s", p, bit, n ? " (" : "", n ? n : "", n ? ")" : "");
	}
	if (q->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return error_set(e, EXIT_NOINPUT, "%s: images with an external data file "
				 "(%s) are not supported", p, q->data_file ? q->data_file : "?");
	if (q->compression_type > QCOW2_COMPRESS_ZSTD)
		return error_set(e, EXIT_NOINPUT, "%s: unknown compression type %u", p,
				 q->compression_type);
	if (q->compression_type && !(q->incompat & QCOW2_INCOMPAT_COMPRESSION))
		return error_set(e, EXIT_NOINPUT, "%s: compression type set without its "
				 "incompatible feature bit", p);
	if (q->incompat & QCOW2_INCOMPAT_CORRUPT) {
		q->corrupt = true;
		if (!readonly && !q->bd->caller_reports)
			log_warn("%s: image is marked corrupt; writes will be refused", p);
	}
	return 0;
}

/* Parse one header extension. */
static int ext_parse_one(struct qcow2 *q, uint32_t type, const uint8_t *d,
			 uint32_t len, uint64_t off, struct error *e)
{
	struct qcow2_ext *x;
	char **dst = NULL;

	if (type == QCOW2_EXT_BACKING_FMT)
		dst = &q->backing_format;
	else if (type == QCOW2_EXT_DATA_FILE)
		dst = &q->data_file;
	if (dst) {
		free(*dst);
		*dst = strndup((const char *)d, len);
		return *dst ? 0 : error_set(e, EXIT_HOST, "out of memory");
	}
	if (type == QCOW2_EXT_SHOAL_CHAIN)
		return chain_id_parse(q, d, len, off);
	if (q->nb_exts >= QCOW2_MAX_EXTENSIONS)
		return error_set(e, EXIT_NOINPUT, "%s: too many header extensions", q->bd->path);
	x = realloc(q->exts, (q->nb_exts + 1) * sizeof(*x));
	if (!x)
		return error_set(e, EXIT_HOST, "out of memory");
	q->exts = x;
	x = &q->exts[q->nb_exts];
	x->type = type;
	x->len = len;
	x->data = malloc(len + 1);
	if (!x->data)
		return error_set(e, EXIT_HOST, "out of memory");
	memcpy(x->data, d, len);
	q->nb_exts++;
	return 0;
}

/* Walk the extension list in cluster 0 (`c`, `clen` bytes valid). */
static int ext_parse(struct qcow2 *q, const uint8_t *c, size_t clen,
		     uint64_t bf_off, struct error *e)
{
	size_t pos = q->version >= 3 ? q->header_length : QCOW2_V2_HDR_LEN;
	size_t end = clen;

	if (bf_off && bf_off < end)
		end = bf_off;
	while (pos + 8 <= end) {
		struct qcow2_disk_ext x;
		uint32_t type, len;

		memcpy(&x, c + pos, sizeof(x));
		type = be32toh(x.type);
		len = be32toh(x.len);
		if (type == QCOW2_EXT_END)
			return 0;
		pos += 8;
		if (len > end - pos)
			return error_set(e, EXIT_NOINPUT, "%s: header extension 0x%08x "
					 "overruns the header cluster", q->bd->path, type);
		if (ext_parse_one(q, type, c + pos, len, pos, e))
			return -1;
		pos += (len + 7) & ~7ull;
	}
	return 0;
}

/* Read cluster 0 and fill q from it. */
static int hdr_read(struct qcow2 *q, bool readonly, struct error *e)
{
	struct qcow2_disk_header h;
	uint64_t fsize = qcow2_file_size(q), bf_off;
	uint32_t bf_len;
	uint8_t *c = NULL;
	size_t clen;
	int r;

	memset(&h, 0, sizeof(h));
	if (fsize < QCOW2_V2_HDR_LEN)
		return error_set(e, EXIT_NOINPUT, "%s: truncated qcow2 header (%llu bytes)",
				 q->bd->path, (unsigned long long)fsize);
	if (bd_pread(q->fd, &h, sizeof(h), 0, true) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: cannot read header", q->bd->path);
	if (hdr_parse(q, &h, fsize, e) || hdr_check_tables(q, e))
		return -1;
	clen = q->cluster_size < fsize ? q->cluster_size : fsize;
	c = calloc(1, q->cluster_size);
	if (!c)
		return error_set(e, EXIT_HOST, "out of memory");
	r = bd_pread(q->fd, c, clen, 0, true);
	bf_off = be64toh(h.backing_file_offset);
	bf_len = be32toh(h.backing_file_size);
	if (!r && bf_off && bf_len > QCOW2_MAX_BACKING_NAME) {
		r = error_set(e, EXIT_NOINPUT, "%s: backing file name of %u bytes is longer "
			      "than the limit of %u", q->bd->path, bf_len, QCOW2_MAX_BACKING_NAME);
		goto out;
	}
	if (!r && bf_off) {
		if (bf_off > clen || bf_len > clen - bf_off) {
			r = error_set(e, EXIT_NOINPUT, "%s: backing file name (offset %llu, "
				      "%u bytes) lies outside the header cluster", q->bd->path,
				      (unsigned long long)bf_off, bf_len);
			goto out;
		}
		q->backing_file = strndup((char *)c + bf_off, bf_len);
	}
	if (r)
		r = error_set(e, EXIT_NOINPUT, "%s: cannot read header cluster", q->bd->path);
	else
		r = ext_parse(q, c, clen, bf_off, e);
	if (!r)
		r = hdr_check_features(q, readonly, e);
out:
	free(c);
	return r;
}

/* Load the active L1 table. */
static int l1_load(struct qcow2 *q, struct error *e)
{
	size_t n = q->l1_size;

	q->l1 = calloc(n + 1, 8);
	if (!q->l1)
		return error_set(e, EXIT_HOST, "out of memory");
	if (n && bd_pread(q->fd, q->l1, n * 8, q->l1_offset, true) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: cannot read L1 table", q->bd->path);
	for (size_t i = 0; i < n; i++)
		q->l1[i] = be64toh(q->l1[i]);
	return 0;
}

static void qcow2_free_state(struct qcow2 *q)
{
	qcow2_cache_free(q->l2_cache);
	qcow2_cache_free(q->rb_cache);
	qcow2_snapshots_free(q);
	for (uint32_t i = 0; i < q->nb_exts; i++)
		free(q->exts[i].data);
	free(q->exts);
	free(q->l1);
	free(q->reftable);
	free(q->frees);
	free(q->backing_file);
	free(q->backing_format);
	free(q->data_file);
	free(q->cbuf);
	free(q->dbuf);
	free(q->wbuf);
	free(q);
}

/* Size the two caches from the user's byte budget: L2 gets most of it. */
static int caches_init(struct qcow2 *q, uint64_t bytes, struct error *e)
{
	uint64_t n;

	if (!bytes)
		bytes = QCOW2_DEFAULT_CACHE;
	if (bytes > QCOW2_MAX_CACHE_BYTES)
		bytes = QCOW2_MAX_CACHE_BYTES;
	n = bytes / q->cluster_size;
	q->l2_cache = qcow2_cache_new(q, n * 3 / 4 < 4 ? 4 : n * 3 / 4, true);
	q->rb_cache = qcow2_cache_new(q, n / 4 < 4 ? 4 : n / 4, false);
	q->cbuf = malloc(2 * q->cluster_size);
	q->dbuf = malloc(2 * q->cluster_size);
	q->wbuf = bd_memalign(q->cluster_size);
	if (!q->l2_cache || !q->rb_cache || !q->cbuf || !q->dbuf || !q->wbuf)
		return error_set(e, EXIT_HOST, "out of memory for the qcow2 cache");
	return 0;
}

/* Open-time repair of an image left dirty by a lazy-refcount writer. */
static int repair_if_dirty(struct qcow2 *q, struct error *e)
{
	struct qcow2_check_result cr;

	if (q->bd->readonly || !(q->incompat & QCOW2_INCOMPAT_DIRTY))
		return 0;
	log_warn("%s: image was not closed cleanly (lazy refcounts); repairing",
		 q->bd->path);
	if (qcow2_check(q->bd, true, &cr, e) < 0)
		return -1;
	q->incompat &= ~QCOW2_INCOMPAT_DIRTY;
	if (qcow2_header_update_bits(q) || fdatasync(q->fd) < 0)
		return error_set(e, EXIT_HOST, "%s: cannot clear the dirty bit", q->bd->path);
	return 0;
}

/* A table the header places must lie inside the file: one past the end
 * reads as zeros, and writing it would stretch the file to wherever the
 * header points (an L1 table at 1 TiB made a 1 TiB sparse file).  True if
 * [off, off+len) reaches past `end` (the file size, rounded up to a
 * cluster: a short last cluster reads as zeros too). */
static bool past_end(uint64_t off, uint64_t len, uint64_t end)
{
	return len && (off > end || len > end - off);
}

/* Such an image opens, marked corrupt: reads of what is intact go on. */
static void tables_in_file(struct qcow2 *q)
{
	uint64_t end = qcow2_size_to_clusters(q, q->file_end) << q->cluster_bits;
	uint64_t rtlen = (uint64_t)q->reftable_clusters << q->cluster_bits;

	if (past_end(q->l1_offset, (uint64_t)q->l1_size * 8, end))
		qcow2_signal_corruption(q, "the L1 table (0x%llx, %u entries) lies beyond the "
					"end of the file (%llu bytes)",
					(unsigned long long)q->l1_offset, q->l1_size,
					(unsigned long long)q->file_end);
	else if (past_end(q->reftable_offset, rtlen, end))
		qcow2_signal_corruption(q, "the refcount table (0x%llx, %u clusters) lies beyond "
					"the end of the file (%llu bytes)",
					(unsigned long long)q->reftable_offset,
					q->reftable_clusters, (unsigned long long)q->file_end);
	for (uint32_t i = 0; !q->corrupt && i < q->nb_snaps; i++)
		if (past_end(q->snaps[i].l1_offset, (uint64_t)q->snaps[i].l1_size * 8, end))
			qcow2_signal_corruption(q, "the L1 table of snapshot '%s' lies beyond "
						"the end of the file", q->snaps[i].name);
}

/* Open bd->fd as qcow2.  On failure everything allocated here is freed. */
int qcow2_open(struct blockdev *bd, const struct blockdev_opts *o, struct error *e)
{
	struct qcow2 *q = calloc(1, sizeof(*q));

	if (!q)
		return error_set(e, EXIT_HOST, "out of memory");
	q->bd = bd;
	q->fd = bd->fd;
	bd->priv = q;
	if (hdr_read(q, bd->readonly, e) || l1_load(q, e) ||
	    qcow2_refcount_load(q, e) || qcow2_snapshots_load(q, e) ||
	    caches_init(q, o ? o->cache_bytes : 0, e))
		goto fail;
	bd->size = q->size;
	bd->ops = &qcow2_ops;
	q->file_end = qcow2_file_size(q);
	tables_in_file(q);
	if (repair_if_dirty(q, e))
		goto fail;
	return 0;
fail:
	qcow2_free_state(q);
	bd->priv = NULL;
	return -1;
}

static void qcow2_close(struct blockdev *bd)
{
	struct qcow2 *q = bd->priv;

	if (!q)
		return;
	if (!bd->readonly && qcow2_flush_all(q))
		log_error("%s: flush on close failed", bd->path);
	qcow2_free_state(q);
	bd->priv = NULL;
}

const struct blockdev_ops qcow2_ops = {
	.name = "qcow2",
	.read = qcow2_read,
	.write = qcow2_write,
	.write_zeroes = qcow2_write_zeroes,
	.discard = qcow2_discard,
	.flush = qcow2_flush_op,
	.block_status = qcow2_block_status,
	.map_fast = qcow2_map_fast,
	.close = qcow2_close,
};

/* Grow the virtual disk to `size` (shrinking is refused: it would need
 * every cluster past the end released, and data there lost). */
int qcow2_resize(struct blockdev *bd, uint64_t size, struct error *e)
{
	struct qcow2 *q = bd->priv;
	uint64_t cover = 1ull << (q->l2_bits + q->cluster_bits);
	uint64_t need = (size + cover - 1) / cover, old_cl, new_cl, be;
	int64_t off;
	int r;

	if (size < q->size)
		return error_set(e, EXIT_USAGE, "%s: shrinking qcow2 images is not supported",
				 bd->path);
	if (size > QCOW2_MAX_SIZE || need * 8 > QCOW2_MAX_L1_BYTES)
		return error_set(e, EXIT_USAGE, "%s: size too large", bd->path);
	if (q->nb_snaps)
		return error_set(e, EXIT_USAGE, "%s: cannot resize an image with internal "
				 "snapshots", bd->path);
	r = qcow2_before_change(q);
	if (!r)
		r = qcow2_flush_all(q);
	old_cl = qcow2_size_to_clusters(q, (uint64_t)q->l1_size * 8);
	new_cl = qcow2_size_to_clusters(q, need * 8);
	if (!r && need > q->l1_size) {
		uint64_t *l1 = calloc(new_cl << q->cluster_bits, 1), old_off = q->l1_offset;

		if (!l1)
			return error_set(e, EXIT_HOST, "out of memory");
		memcpy(l1, q->l1, (size_t)q->l1_size * 8);
		free(q->l1);
		q->l1 = l1;
		off = new_cl > old_cl || !q->l1_size ? qcow2_alloc_clusters(q, new_cl) : (int64_t)q->l1_offset;
		r = off < 0 ? (int)off : 0;
		if (!r) {
			uint32_t old_n = q->l1_size;
			q->l1_offset = off;
			q->l1_size = need;
			q->l1_dirty = true;
			r = qcow2_flush_all(q);	/* rb first, then the L1 at its new home */
			if (!r) {
				struct { uint32_t n; uint64_t o; } __attribute__((packed)) h = {
					htobe32(need), htobe64(off) };
				r = bd_pwrite(q->fd, &h, sizeof(h), QCOW2_OFF_L1_SIZE);
			}
			if (!r && (uint64_t)off != old_off && old_n)
				r = qcow2_free_deferred(q, old_off, old_cl);
		}
	}
	if (!r) {
		be = htobe64(size);
		r = bd_pwrite(q->fd, &be, 8, QCOW2_OFF_SIZE);
	}
	if (!r)
		r = qcow2_flush_all(q);
	if (r)
		return error_set(e, EXIT_HOST, "%s: resize failed: %s", bd->path, strerror(-r));
	q->size = bd->size = size;
	return 0;
}

/* Point the image at a new backing file (NULL: none); header rewrite. */
int qcow2_set_backing(struct blockdev *bd, const char *name, const char *fmt,
		      struct error *e)
{
	struct qcow2 *q = bd->priv;
	char *nb = name ? strdup(name) : NULL, *nf = fmt ? strdup(fmt) : NULL;
	int r;

	free(q->backing_file);
	free(q->backing_format);
	q->backing_file = nb;
	q->backing_format = nf;
	r = qcow2_before_change(q);
	if (!r)
		r = qcow2_flush_all(q);
	if (!r)
		r = qcow2_header_rewrite(q);
	if (r)
		return error_set(e, EXIT_HOST, "%s: cannot rewrite the header: %s", bd->path,
				 strerror(-r));
	return 0;
}
