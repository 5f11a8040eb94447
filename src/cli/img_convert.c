/*
 * img_convert.c - `shoal img convert`, `compare`, `commit` and `rebase`:
 * the subcommands that copy data between images.
 *
 * All of them walk the guest disk in chunks, skip what reads as zeros
 * (using the chain's block status so a sparse 1 TiB image is not read
 * byte by byte), and write only what differs.  Chain identity: commit and
 * rebase change what an overlay's parent is, so they finish by
 * re-anchoring the overlay (chain_id_anchor).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "base/exitcode.h"

#define CHUNK (1u << 20)

/* Does [off, off+len) read as zeros through the whole chain? (cheap) */
static bool chain_zero(struct blockdev *bd, uint64_t off, uint64_t len, uint64_t *span)
{
	struct bd_extent x;
	const char *f;

	if (img_chain_status(bd, off, len, &x, &f) || !x.len) {
		*span = len;
		return false;
	}
	*span = x.len;
	return x.status == BD_ZERO;
}

/* ---- convert ---- */

struct conv {
	struct blockdev *src, *dst;
	bool compress, progress;
	uint64_t chunk;
	uint8_t *buf, *bbuf;
};

/* Copy one chunk at off (len bytes) if it is not redundant. */
static int conv_chunk(struct conv *cv, uint64_t off, uint64_t len)
{
	struct blockdev *d = cv->dst;

	if (blockdev_read(cv->src, cv->buf, off, len))
		return -1;
	if (d->backing) {
		if (blockdev_read_backing(d, cv->bbuf, off, len))
			return -1;
		if (!memcmp(cv->buf, cv->bbuf, len))
			return 0;
	} else if (img_is_zero(cv->buf, len)) {
		return 0;
	}
	if (cv->compress && d->format == BD_FMT_QCOW2) {
		int r = qcow2_before_change(d->priv);
		if (!r)
			r = qcow2_write_compressed(d->priv, off, cv->buf);
		if (r && r != -EIO)	/* -EIO: the story is in d->err already */
			error_set(&d->err, EXIT_HOST, "%s: compressed write: %s", d->path,
				  strerror(-r));
		return r ? -1 : 0;
	}
	return blockdev_write(d, cv->buf, off, len) ? -1 : 0;
}

static int conv_run(struct conv *cv)
{
	uint64_t size = cv->src->size, span;

	for (uint64_t off = 0; off < size; ) {
		uint64_t len = size - off < cv->chunk ? size - off : cv->chunk;

		if (!cv->dst->backing && chain_zero(cv->src, off, len, &span) && span >= len) {
			off += len;
			continue;
		}
		if (conv_chunk(cv, off, len)) {
			fprintf(stderr, "shoal: convert: %s\n",
				cv->src->err.msg[0] ? cv->src->err.msg : cv->dst->err.msg);
			return EXIT_HOST;
		}
		off += len;
		img_progress(cv->progress, off, size);
	}
	img_progress(cv->progress, size, size);
	if (blockdev_flush(cv->dst)) {
		fprintf(stderr, "shoal: convert: %s\n", cv->dst->err.msg);
		return EXIT_HOST;
	}
	return 0;
}

int img_convert(int argc, char **argv)
{
	struct create_args a = { .fmt = "raw" };
	const char *fmt = NULL, *snap = NULL;
	struct conv cv = { 0 };
	struct error e = { 0 };
	unsigned share = 0;
	int c, r;

	a.q.chain_id = true;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:O:o:B:F:cl:pUqW", img_share_longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': a.fmt = optarg; break;
		case 'o': if ((r = img_parse_create_opts(&a, optarg))) return r; break;
		case 'B': a.backing = optarg; break;
		case 'F': a.bfmt = optarg; break;
		case 'c': cv.compress = true; break;
		case 'l': snap = optarg; break;
		case 'p': cv.progress = true; break;
		case 'U': share = IMG_SHARE; break;
		case 'q': case 'W': break;
		default: return EXIT_USAGE;
		}
	}
	if (optind + 2 != argc)
		return img_usage("convert: SRC DST expected");
	if (cv.compress && strcmp(a.fmt, "qcow2"))
		return img_usage("convert: -c needs -O qcow2");
	r = img_open(&cv.src, argv[optind], fmt, IMG_CONSISTENT | share);
	if (r)
		return r;
	if (snap && (cv.src->format != BD_FMT_QCOW2 || qcow2_snapshot_view(cv.src, snap, &e))) {
		r = e.msg[0] ? img_fail(&e) : img_usage("convert: -l needs a qcow2 source");
		goto out;
	}
	a.q.size = cv.src->size;
	a.q.backing_file = a.backing;
	a.q.backing_format = a.bfmt;
	if (!strcmp(a.fmt, "qcow2"))
		r = qcow2_create(argv[optind + 1], &a.q, &e);
	else if (!strcmp(a.fmt, "raw") && !a.backing)
		r = raw_create(argv[optind + 1], a.q.size, a.prealloc_raw, &e);
	else
		r = error_set(&e, EXIT_USAGE, "convert: output format must be raw or qcow2 "
			      "(raw cannot have a backing file)");
	if (r) {
		r = img_fail(&e);
		goto out;
	}
	r = img_open(&cv.dst, argv[optind + 1], a.fmt, IMG_RW);
	if (r)
		goto out;
	cv.chunk = cv.dst->format == BD_FMT_QCOW2 ?
		((struct qcow2 *)cv.dst->priv)->cluster_size : 1u << 20;
	cv.buf = malloc(cv.chunk);
	cv.bbuf = malloc(cv.chunk);
	r = cv.buf && cv.bbuf ? conv_run(&cv) : EXIT_HOST;
out:
	free(cv.buf);
	free(cv.bbuf);
	blockdev_close(cv.dst);
	blockdev_close(cv.src);
	return r;
}

/* ---- compare ---- */

int img_compare(int argc, char **argv)
{
	const char *f1 = NULL, *f2 = NULL;
	struct blockdev *a = NULL, *b = NULL;
	uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
	bool strict = false;
	unsigned share = 0;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:F:spqU", img_share_longopts, NULL)) != -1) {
		if (c == 'f')
			f1 = optarg;
		else if (c == 'F')
			f2 = optarg;
		else if (c == 's')
			strict = true;
		else if (c == 'U')
			share = IMG_SHARE;
		else if (c != 'p' && c != 'q')
			return EXIT_USAGE;
	}
	if (optind + 2 != argc || !ba || !bb)
		return img_usage("compare: FILE1 FILE2 expected");
	r = img_open(&a, argv[optind], f1, share);
	if (!r)
		r = img_open(&b, argv[optind + 1], f2, share);
	if (r) {
		r = 2;
		goto out;
	}
	if (strict && a->size != b->size) {
		printf("Image size mismatch!\n");
		r = 1;
		goto out;
	}
	uint64_t max = a->size > b->size ? a->size : b->size;
	for (uint64_t off = 0; off < max; ) {
		uint64_t len = max - off < CHUNK ? max - off : CHUNK, sa = 0, sb = 0;
		uint64_t la = off < a->size ? (a->size - off < len ? a->size - off : len) : 0;
		uint64_t lb = off < b->size ? (b->size - off < len ? b->size - off : len) : 0;

		if (la == len && lb == len && chain_zero(a, off, len, &sa) && sa >= len &&
		    chain_zero(b, off, len, &sb) && sb >= len) {
			off += len;
			continue;
		}
		memset(ba, 0, len);
		memset(bb, 0, len);
		if ((la && blockdev_read(a, ba, off, la)) || (lb && blockdev_read(b, bb, off, lb))) {
			fprintf(stderr, "shoal: compare: %s%s\n", a->err.msg, b->err.msg);
			r = 2;
			goto out;
		}
		if (memcmp(ba, bb, len)) {
			uint64_t i = 0;
			while (ba[i] == bb[i])
				i++;
			printf("Content mismatch at offset %llu!\n", (unsigned long long)(off + i));
			r = 1;
			goto out;
		}
		off += len;
	}
	printf("Images are identical.\n");
out:
	free(ba);
	free(bb);
	blockdev_close(a);
	blockdev_close(b);
	return r;
}

/* ---- commit ---- */

/* Copy every cluster the top image holds itself into `base`. */
static int commit_copy(struct blockdev *top, struct blockdev *base, bool progress)
{
	uint8_t *buf = malloc(CHUNK);
	int r = 0;

	if (!buf)
		return EXIT_HOST;
	for (uint64_t off = 0; !r && off < top->size; ) {
		struct bd_extent x = { 0 };
		uint64_t len = top->size - off < CHUNK ? top->size - off : CHUNK;

		r = blockdev_block_status(top, off, len, &x) || !x.len;
		if (!r && x.status == BD_ZERO)
			r = blockdev_write_zeroes(base, off, x.len);
		else if (!r && x.status != BD_UNALLOC)
			r = blockdev_read(top, buf, off, x.len) ||
			    blockdev_write(base, buf, off, x.len);
		off += x.len;
		img_progress(progress, off, top->size);
	}
	free(buf);
	if (!r)
		r = blockdev_flush(base);
	if (r)
		fprintf(stderr, "shoal: commit: %s%s\n", top->err.msg, base->err.msg);
	return r ? EXIT_HOST : 0;
}

/* Reopen `path` and record its current parent (after commit, rebase). */
static int reanchor(const char *path, const char *fmt)
{
	struct blockdev *bd;
	struct error e = { 0 };
	int r = img_open(&bd, path, fmt, IMG_RW | IMG_FORCE);

	if (r)
		return r;
	r = chain_id_anchor(bd, &e) ? img_fail(&e) : 0;
	blockdev_close(bd);
	return r;
}

int img_commit(int argc, char **argv)
{
	const char *fmt = NULL;
	struct blockdev *top = NULL, *base = NULL;
	bool keep = false, progress = false;
	int c, r;

	optind = 1;
	while ((c = getopt(argc, argv, "f:dpqt:")) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'd')
			keep = true;
		else if (c == 'p')
			progress = true;
		else if (c != 'q' && c != 't')
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("commit: FILE expected");
	r = img_open(&top, argv[optind], fmt, IMG_RW);
	if (r)
		return r;
	if (!top->backing || top->format != BD_FMT_QCOW2) {
		blockdev_close(top);
		return img_usage("commit: %s has no backing file", argv[optind]);
	}
	if (top->size > top->backing->size) {
		blockdev_close(top);
		return img_usage("commit: the backing file is smaller than the image; resize it first");
	}
	/* The base is read through top's chain and written through a second
	 * open of its own, so the first stops refusing writes to the second. */
	blockdev_share_all(top->backing);
	r = img_open(&base, top->backing->path, blockdev_format_name(top->backing->format),
		     IMG_RW | IMG_FORCE | IMG_NO_BACKING);
	if (!r)
		r = commit_copy(top, base, progress);
	blockdev_close(base);
	if (!r && !keep && qcow2_make_empty(top->priv)) {
		fprintf(stderr, "shoal: commit: cannot empty %s: %s\n", top->path,
			top->err.msg[0] ? top->err.msg : "it has internal snapshots");
		r = EXIT_HOST;
	}
	blockdev_close(top);
	if (!r)
		r = reanchor(argv[optind], fmt);
	if (!r)
		printf("Image committed.\n");
	return r;
}

/* ---- rebase ---- */

/* Safe rebase: keep in the overlay whatever the new backing would change. */
static int rebase_copy(struct blockdev *top, struct blockdev *nb, bool progress)
{
	struct qcow2 *q = top->priv;
	uint64_t cs = q->cluster_size;
	uint8_t *o = malloc(cs), *n = malloc(cs);
	int r = 0;

	for (uint64_t off = 0; o && n && !r && off < top->size; off += cs) {
		uint64_t len = top->size - off < cs ? top->size - off : cs, k = 0;
		struct bd_extent x;

		if (blockdev_block_status(top, off, len, &x)) {
			r = -1;
			break;
		}
		if (x.status != BD_UNALLOC)
			continue;
		r = blockdev_read_backing(top, o, off, len);
		memset(n, 0, len);
		if (!r && nb && off < nb->size)
			k = nb->size - off < len ? nb->size - off : len;
		if (!r && k)
			r = blockdev_read(nb, n, off, k);
		if (!r && memcmp(o, n, len))
			r = blockdev_write(top, o, off, len);
		img_progress(progress, off + len, top->size);
	}
	if (!o || !n)
		r = -1;
	free(o);
	free(n);
	return r;
}

int img_rebase(int argc, char **argv)
{
	const char *fmt = NULL, *nbname = NULL, *nbfmt = NULL;
	struct blockdev *top = NULL, *nb = NULL;
	struct error e = { 0 };
	bool unsafe = false, progress = false;
	unsigned share = 0;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:b:F:upqU", img_share_longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'b': nbname = optarg; break;
		case 'F': nbfmt = optarg; break;
		case 'u': unsafe = true; break;
		case 'p': progress = true; break;
		case 'U': share = IMG_SHARE; break;
		case 'q': break;
		default: return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return img_usage("rebase: FILE expected");
	r = img_open(&top, argv[optind], fmt, IMG_RW | IMG_FORCE | (unsafe ? IMG_NO_BACKING : 0));
	if (r)
		return r;
	if (top->format != BD_FMT_QCOW2) {
		blockdev_close(top);
		return img_usage("rebase: %s is not a qcow2 image", argv[optind]);
	}
	if (!nbname) {		/* re-anchor to the current backing file */
		blockdev_close(top);
		r = reanchor(argv[optind], fmt);
		if (!r)
			printf("Re-anchored %s to its current backing file.\n", argv[optind]);
		return r;
	}
	if (!unsafe && *nbname) {
		char *path = NULL;
		if (nbname[0] != '/' && strchr(argv[optind], '/'))
			r = asprintf(&path, "%.*s/%s", (int)(strrchr(argv[optind], '/') - argv[optind]),
				     argv[optind], nbname) < 0;
		r = r ? EXIT_HOST : img_open(&nb, path ? path : nbname, nbfmt,
								 share);
		free(path);
		if (!r && rebase_copy(top, nb, progress)) {
			fprintf(stderr, "shoal: rebase: %s%s\n", top->err.msg, nb->err.msg);
			r = EXIT_HOST;
		}
		if (!r && !nbfmt)
			nbfmt = blockdev_format_name(nb->format);
	} else if (!unsafe && rebase_copy(top, NULL, progress)) {
		fprintf(stderr, "shoal: rebase: %s\n", top->err.msg);
		r = EXIT_HOST;
	}
	if (!r && qcow2_set_backing(top, *nbname ? nbname : NULL, *nbname ? nbfmt : NULL, &e))
		r = img_fail(&e);
	blockdev_close(nb);
	blockdev_close(top);
	if (!r)
		r = reanchor(argv[optind], fmt);
	return r;
}
