/*
 * qcow2_create.c - making new qcow2 images.
 *
 * A new image is laid out as: cluster 0 header (with the backing format,
 * chain identity and feature-name extensions, then the backing file name),
 * the refcount table, the refcount blocks that cover the initial metadata,
 * then the L1 table.  Everything but the header is written first and
 * synced, so a crash during create leaves either no usable header or a
 * complete image.  Preallocation then goes through the ordinary allocation
 * path of an opened image.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"

static const struct { uint8_t type, bit; const char *name; } feature_names[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
	{ 2, 63, "shoal chain identity" },
};

/* The feature name table extension, as one kept extension of q. */
static int add_feature_table(struct qcow2 *q)
{
	size_t n = sizeof(feature_names) / sizeof(feature_names[0]);
	struct qcow2_disk_feature *f = calloc(n, sizeof(*f));

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		f[i].type = feature_names[i].type;
		f[i].bit = feature_names[i].bit;
		strncpy(f[i].name, feature_names[i].name, sizeof(f[i].name));
	}
	q->exts = calloc(1, sizeof(*q->exts));
	if (!q->exts) {
		free(f);
		return -ENOMEM;
	}
	q->exts[0] = (struct qcow2_ext){ QCOW2_EXT_FEATURES, n * sizeof(*f), (uint8_t *)f };
	q->nb_exts = 1;
	return 0;
}

/* Validate options and fill the geometry of q. */
static int geometry(struct qcow2 *q, const struct qcow2_create_opts *o, const char *path,
		    struct error *e)
{
	uint32_t cs = o->cluster_size ? o->cluster_size : 65536, rb = o->refcount_bits;

	if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
		return error_set(e, EXIT_USAGE, "%s: cluster size %u must be a power of two "
				 "between 512 and 2M", path, cs);
	rb = rb ? rb : 16;
	if (rb > 64 || (rb & (rb - 1)))
		return error_set(e, EXIT_USAGE, "%s: refcount_bits %u must be a power of two "
				 "up to 64", path, rb);
	q->version = o->version ? o->version : 3;
	if (q->version != 2 && q->version != 3)
		return error_set(e, EXIT_USAGE, "%s: version must be 2 or 3", path);
	if (q->version == 2 && (rb != 16 || o->ext_l2 || o->compression_type || o->lazy_refcounts))
		return error_set(e, EXIT_USAGE, "%s: refcount_bits, extended_l2, lazy "
				 "refcounts and zstd need compat=1.1 (version 3)", path);
	if (o->ext_l2 && cs < 16384)
		return error_set(e, EXIT_USAGE, "%s: extended_l2 needs a cluster size of at "
				 "least 16k", path);
	if (o->size > QCOW2_MAX_SIZE)
		return error_set(e, EXIT_USAGE, "%s: size too large", path);
	q->cluster_bits = __builtin_ctz(cs);
	q->cluster_size = cs;
	q->refcount_order = __builtin_ctz(rb);
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
	q->size = o->size;
	q->ext_l2 = o->ext_l2;
	q->l2_bits = q->cluster_bits - (o->ext_l2 ? 4 : 3);
	q->compression_type = o->compression_type;
	q->header_length = QCOW2_HDR_LEN_CT;
	if (o->ext_l2)
		q->incompat |= QCOW2_INCOMPAT_EXTL2;
	if (o->compression_type)
		q->incompat |= QCOW2_INCOMPAT_COMPRESSION;
	if (o->lazy_refcounts)
		q->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	{
		uint64_t cover = 1ull << (q->l2_bits + q->cluster_bits);
		uint64_t l1 = (o->size + cover - 1) / cover;

		if (l1 * 8 > QCOW2_MAX_L1_BYTES)
			return error_set(e, EXIT_USAGE, "%s: size too large for this cluster size",
					 path);
		q->l1_size = l1;
	}
	return 0;
}

/* Write reftable, refblocks and L1 for an empty image; fills the offsets. */
static int write_tables(struct qcow2 *q)
{
	uint64_t cs = q->cluster_size, per_rb = 1ull << q->rb_bits;
	uint64_t l1c = ((uint64_t)q->l1_size * 8 + cs - 1) / cs, nrb = 1, rtc = 1, total;
	uint64_t *rt;
	uint8_t *blk;
	int r = 0;

	l1c = l1c ? l1c : 1;
	for (;;) {
		total = 1 + rtc + nrb + l1c;
		uint64_t need_rb = (total + per_rb - 1) / per_rb;
		uint64_t need_rt = (need_rb * 8 + cs - 1) / cs;
		if (need_rb <= nrb && need_rt <= rtc)
			break;
		nrb = need_rb;
		rtc = need_rt;
	}
	q->reftable_offset = cs;
	q->reftable_clusters = rtc;
	q->l1_offset = (1 + rtc + nrb) * cs;
	rt = calloc(rtc, cs);
	blk = calloc(1, cs);
	if (!rt || !blk) {
		r = -ENOMEM;
		goto out;
	}
	if (ftruncate(q->fd, total * cs) < 0) {
		r = -errno;
		goto out;
	}
	for (uint64_t b = 0; !r && b < nrb; b++) {
		memset(blk, 0, cs);
		for (uint64_t c = b * per_rb; c < (b + 1) * per_rb && c < total; c++) {
			uint64_t i = c - b * per_rb;
			/* set refcount 1, in the width of refcount_order */
			unsigned bits = 1u << q->refcount_order;
			uint64_t bitpos = i * bits;
			if (bits < 8)
				blk[bitpos / 8] |= 1u << (bitpos % 8);
			else
				blk[bitpos / 8 + bits / 8 - 1] = 1;
		}
		rt[b] = htobe64((1 + rtc + b) * cs);
		r = bd_pwrite(q->fd, blk, cs, (1 + rtc + b) * cs);
	}
	if (!r)
		r = bd_pwrite(q->fd, rt, rtc * cs, cs);
out:
	free(rt);
	free(blk);
	return r;
}

/* Read the backing file's size and identity. */
/* What a new overlay records of its backing file b: its format and, when
 * b has a chain identity, b's id and generation as the parent's; *size
 * gets b's virtual size. */
static void backing_take(struct qcow2 *q, const struct blockdev *b, uint64_t *size)
{
	*size = b->size;
	q->backing_format = strdup(blockdev_format_name(b->format));
	if (b->format == BD_FMT_QCOW2 && ((struct qcow2 *)b->priv)->chain.present) {
		const struct qcow2 *p = b->priv;

		memcpy(q->chain.parent_id, p->chain.id, 16);
		q->chain.parent_generation = p->chain.generation;
		q->chain.flags |= QCOW2_CHAIN_F_PARENT;
	}
}

static int backing_probe(struct qcow2 *q, const struct qcow2_create_opts *o,
			 const char *path, uint64_t *size, struct error *e)
{
	/* force_share: reading the parent's size and identity is no reason to
	 * refuse an overlay of an image in use, as qemu-img create does not */
	struct blockdev_opts bo = { .readonly = true, .no_aio = true, .force = o->force,
				    .force_share = true };
	struct blockdev *b;
	char *tmp = NULL;

	if (o->backing_format && blockdev_parse_format(o->backing_format, &bo.format))
		return error_set(e, EXIT_USAGE, "backing format '%s' not supported "
				 "(raw or qcow2)", o->backing_format);
	/* Relative names are relative to the new image, as when it is opened. */
	if (o->backing_file[0] != '/' && strchr(path, '/') && !blockdev_is_scheme(o->backing_file)) {
		const char *slash = strrchr(path, '/');
		if (asprintf(&tmp, "%.*s/%s", (int)(slash - path), path, o->backing_file) < 0)
			return error_set(e, EXIT_HOST, "out of memory");
	}
	if (blockdev_open(&b, tmp ? tmp : o->backing_file, &bo, e)) {
		free(tmp);
		return error_prefix(e, "%s: cannot open backing file", path);
	}
	free(tmp);
	backing_take(q, b, size);
	blockdev_close(b);
	return 0;
}

static void create_state_free(struct qcow2 *q)
{
	for (uint32_t i = 0; i < q->nb_exts; i++)
		free(q->exts[i].data);
	free(q->exts);
	free(q->backing_file);
	free(q->backing_format);
}

/* Allocate every cluster now (preallocation=metadata or full). */
static int preallocate(const char *path, int mode, struct error *e)
{
	struct blockdev_opts bo = { .format = BD_FMT_QCOW2, .no_aio = true };
	struct blockdev *bd;
	int r;

	if (blockdev_open(&bd, path, &bo, e))
		return -1;
	r = qcow2_preallocate(bd->priv, mode == 2);
	if (!r)
		r = blockdev_flush(bd);
	if (r)
		error_set(e, EXIT_HOST, "%s: preallocation failed: %s", path, strerror(-r));
	blockdev_close(bd);
	return r ? -1 : 0;
}

/* Create a qcow2 image in `fd` (truncated), or at `path` when fd is -1;
 * its backing file is read from `backing` when given, else opened by
 * name. */
static int create(int fd, const char *path, const struct qcow2_create_opts *o,
		  const struct blockdev *backing, struct error *e)
{
	struct qcow2 q = { 0 };
	struct qcow2_create_opts oo = *o;
	uint64_t bsize = 0;
	int r;

	if (o->backing_file) {
		if (o->prealloc)
			return error_set(e, EXIT_USAGE, "%s: preallocation and a backing file "
					 "cannot be used together", path);
		if (backing)
			backing_take(&q, backing, &bsize);
		else if (backing_probe(&q, o, path, &bsize, e))
			goto fail;
		if (o->backing_format) {
			free(q.backing_format);
			q.backing_format = strdup(o->backing_format);
		}
		if (!oo.size)
			oo.size = bsize;
		q.backing_file = strdup(o->backing_file);
	}
	if (geometry(&q, &oo, path, e))
		goto fail;
	q.chain.present = o->chain_id;
	chain_id_generate(q.chain.id);
	q.chain.generation = 1;
	if (o->chain_id && q.version >= 3)
		q.autoclear |= QCOW2_AUTOCLEAR_SHOAL_CHAIN;
	if (q.cluster_size >= 4096 && add_feature_table(&q))
		goto oom;	/* (it does not fit in the header of tiny clusters) */
	q.fd = fd >= 0 ? fd : open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (q.fd < 0 || (fd >= 0 && ftruncate(fd, 0) < 0)) {
		error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
		goto fail;
	}
	r = write_tables(&q);
	if (!r && fdatasync(q.fd) < 0)
		r = -errno;
	if (!r)
		r = qcow2_header_rewrite(&q);
	if (fd < 0)
		close(q.fd);
	if (r) {
		error_set(e, EXIT_HOST, "%s: %s", path, r == -ENOSPC && q.backing_file ?
			  "backing file name too long for the header cluster" : strerror(-r));
		goto fail;
	}
	create_state_free(&q);
	return o->prealloc ? preallocate(path, o->prealloc, e) : 0;
oom:
	error_set(e, EXIT_HOST, "out of memory");
fail:
	create_state_free(&q);
	return -1;
}

/* Create a qcow2 image at `path` (truncating any file there). */
int qcow2_create(const char *path, const struct qcow2_create_opts *o, struct error *e)
{
	return create(-1, path, o, NULL, e);
}

int qcow2_create_fd(int fd, const char *path, const struct qcow2_create_opts *o,
		    const struct blockdev *backing, struct error *e)
{
	if (fd < 0 || o->prealloc)
		return error_set(e, EXIT_USAGE, "%s: %s", path, fd < 0 ? "no file to create in" :
				 "no preallocation when creating in an open file");
	return create(fd, path, o, backing, e);
}
