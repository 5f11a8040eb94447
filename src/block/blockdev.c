/*
 * blockdev.c - opening images and their backing chains, and the generic
 * front of the block layer: bounds checks, read-only enforcement, request
 * counters and the asynchronous request path.
 *
 * Chains: the top image is opened as asked; each backing file is opened
 * read-only, its name resolved against the directory of the image that
 * names it (as QEMU does), its format taken from the header extension or
 * probed.  Loops (an image appearing twice, by inode) and chains deeper than
 * QCOW2_MAX_CHAIN_DEPTH are refused with the chain spelled out.  Once the
 * chain is open, chain_id_verify checks that no parent changed since its
 * overlay was made.
 *
 * Locking (open_lock, after block/lock.c): each file is locked as soon as
 * its format is known, before the format reads its header (a qcow2 open may
 * repair a dirty image), and unlocked after its last flush at close.  A
 * writer holds consistent read, write and resize and refuses write and
 * resize to others; a reader (backing files included) holds consistent read
 * and refuses write and resize, unless force_share (-U), or share_writes on
 * a raw image, lets others do anything.  Backing files inherit both from
 * the top's open, as QEMU's backing children inherit force-share and share
 * writes only where their parent's users do.
 *
 * Async requests: blockdev_submit asks the format for a fast mapping
 * (map_fast: the range is already allocated, needs no metadata change) and
 * sends those host I/Os to the aio engine; everything else (allocation,
 * copy-on-write, backing reads, zeroes, discards, flushes) runs
 * synchronously at submission, and its completion is still delivered from
 * blockdev_poll so the caller sees one contract.  The expected load is
 * steady-state guest I/O to allocated clusters, which is all fast path.
 *
 * O_DIRECT: a fast-path request whose host offset or length is not a
 * multiple of the file's dio_align takes the synchronous path, whose flat
 * buffer is aligned and whose edges bd_pread/bd_pwrite bounce; one whose
 * guest buffers alone are misaligned stays asynchronous and the engine
 * bounces it (aio.c).  A read-modify-write only ever touches the aligned
 * blocks around its own request, and an aligned request covers whole
 * blocks, so the bounce cannot clobber a neighbour the guest did not also
 * write concurrently.
 */
#include "block/blockdev.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/pristine.h"
#include "block/qcow2.h"
#include "base/exitcode.h"
#include "base/path_beneath.h"

static int dio_bounce(int fd, void *buf, size_t len, uint64_t off, bool write,
		      bool zero_eof);

int bd_pread(int fd, void *buf, size_t len, uint64_t off, bool zero_eof)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL)
			return dio_bounce(fd, p, len, off, false, zero_eof);
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (!zero_eof)
				return -EIO;
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* An aligned buffer of len bytes for O_DIRECT alignment al; free() it. */
static void *memalign_at(size_t len, uint32_t al)
{
	void *p;

	return posix_memalign(&p, al > 4096 ? al : 4096, len ? len : 1) ? NULL : p;
}

void *bd_memalign(size_t len)
{
	return memalign_at(len, 4096);
}

uint32_t bd_dio_align(int fd)
{
	struct statx sx;
	struct stat st;
	unsigned int lbs = 0;
	uint32_t al;

	if (!fstat(fd, &st) && S_ISBLK(st.st_mode) && !ioctl(fd, BLKSSZGET, &lbs) && lbs)
		return lbs < 512 ? 512 : lbs;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) || !(sx.stx_mask & STATX_DIOALIGN) ||
	    !sx.stx_dio_offset_align)
		return 4096;
	al = sx.stx_dio_offset_align > sx.stx_dio_mem_align ? sx.stx_dio_offset_align
							      : sx.stx_dio_mem_align;
	return al < 512 ? 512 : al;
}

/* Read the aligned span [off, off+len) of an O_DIRECT fd into b, zero-filling
 * past the end of the file.  Returns the bytes the file held, or -errno. */
static ssize_t span_read(int fd, uint8_t *b, size_t len, uint64_t off, uint32_t al)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, b + got, len - got, off + got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += n;
		if (n == 0 || got % al)	/* end of file: unaligned or nothing left */
			break;
	}
	memset(b + got, 0, len - got);
	return got;
}

/* Write the aligned span; no bounce underneath, so a wrong alignment fails
 * instead of recursing. */
static int span_write(int fd, const uint8_t *b, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, b, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		b += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* The slow path of bd_pread/bd_pwrite on an O_DIRECT fd: widen the transfer
 * to aligned blocks in a bounce buffer; a write reads the edge blocks first
 * and never leaves the file longer than the caller's write would have. */
static int dio_bounce(int fd, void *buf, size_t len, uint64_t off, bool write,
		      bool zero_eof)
{
	int fl = fcntl(fd, F_GETFL);
	uint32_t al;
	uint64_t a0, a1, end = off + len;
	struct stat st;
	uint8_t *b;
	ssize_t got;
	int r = 0;

	if (fl < 0 || !(fl & O_DIRECT))
		return -EINVAL;		/* a real EINVAL, not alignment */
	al = bd_dio_align(fd);
	a0 = off & ~(uint64_t)(al - 1);
	a1 = (end + al - 1) & ~(uint64_t)(al - 1);
	if (write && fstat(fd, &st) < 0)
		return -errno;
	b = memalign_at(a1 - a0, al);
	if (!b)
		return -ENOMEM;
	got = span_read(fd, b, a1 - a0, a0, al);
	if (got < 0) {
		r = got;
	} else if (!write) {
		if (!zero_eof && a0 + got < end)
			r = -EIO;
		else
			memcpy(buf, b + (off - a0), len);
	} else {
		memcpy(b + (off - a0), buf, len);
		r = span_write(fd, b, a1 - a0, a0);
		if (!r && a1 > end && a1 > (uint64_t)st.st_size &&
		    ftruncate(fd, end > (uint64_t)st.st_size ? end : (uint64_t)st.st_size) < 0)
			r = -errno;
	}
	free(b);
	return r;
}

int bd_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL)
			return dio_bounce(fd, (void *)p, len, off, true, false);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

const char *blockdev_format_name(enum blockdev_format f)
{
	return f == BD_FMT_QCOW2 ? "qcow2" : f == BD_FMT_RAW ? "raw" : "auto";
}

int blockdev_parse_format(const char *s, enum blockdev_format *f)
{
	if (!strcmp(s, "qcow2"))
		*f = BD_FMT_QCOW2;
	else if (!strcmp(s, "raw"))
		*f = BD_FMT_RAW;
	else
		return -1;
	return 0;
}

enum blockdev_format blockdev_probe(int fd)
{
	uint32_t m = 0;

	if (bd_pread(fd, &m, 4, 0, true) == 0 && be32toh(m) == QCOW2_MAGIC)
		return BD_FMT_QCOW2;
	return BD_FMT_RAW;
}

/* The chain opened so far, for loop detection. */
struct chain_walk {
	dev_t dev[QCOW2_MAX_CHAIN_DEPTH + 2];
	ino_t ino[QCOW2_MAX_CHAIN_DEPTH + 2];
	char names[QCOW2_MAX_CHAIN_DEPTH + 2][128];
	int n;
};

static int open_one(struct blockdev **out, const char *path, int given_fd,
		    const struct blockdev_opts *o, int depth, struct chain_walk *w,
		    struct error *e);

static blockdev_scheme_open_fn scheme_of(const char *path);

/* Resolve `name` (from the header of `parent`) to a path. */
static char *backing_path(const char *parent, const char *name)
{
	char *dup, *dir, *out;

	if (name[0] == '/' || !strchr(parent, '/') || scheme_of(name))	/* SCHEME:... as named */
		return strdup(name);
	dup = strdup(parent);
	if (!dup)
		return NULL;
	dir = dirname(dup);
	if (asprintf(&out, "%s/%s", dir, name) < 0)
		out = NULL;
	free(dup);
	return out;
}

/* Open the backing file named in bd's qcow2 header, if any. */
static int open_backing(struct blockdev *bd, const struct blockdev_opts *o,
			struct chain_walk *w, struct error *e)
{
	struct qcow2 *q = bd->priv;
	struct blockdev_opts bo = { .readonly = true, .force = o->force, .no_aio = true,
				    .caller_reports = o->caller_reports,
				    .force_share = o->force_share,
				    .share_writes = o->share_writes && o->readonly,
				    .cache_bytes = o->cache_bytes };
	char *path;
	int r;

	if (bd->format != BD_FMT_QCOW2 || !q->backing_file || o->no_backing)
		return 0;
	if (bd->depth == 0 && o->backing_format)
		bo.format = o->backing_format;
	else if (q->backing_format && blockdev_parse_format(q->backing_format, &bo.format))
		return error_set(e, EXIT_NOINPUT, "%s: backing file format '%s' is not "
				 "supported", bd->path, q->backing_format);
	path = backing_path(bd->path, q->backing_file);
	if (!path)
		return error_set(e, EXIT_HOST, "out of memory");
	if (scheme_of(path)) {	/* SCHEME:... (store:), by its driver, as blockdev_open does */
		r = scheme_of(path)(&bd->backing, path, &bo, e);
		if (!r)
			bd->backing->depth = bd->depth + 1;
		free(path);
		return r;
	}
	r = open_one(&bd->backing, path, -1, &bo, bd->depth + 1, w, e);
	free(path);
	return r;
}

/* Record this image in the walk; refuse loops and overlong chains. */
static int walk_add(struct chain_walk *w, int fd, const char *path, int depth,
		    struct error *e)
{
	struct stat st;
	char chain[512] = "";

	if (fstat(fd, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	for (int i = 0; i < w->n; i++) {
		if (w->dev[i] != st.st_dev || w->ino[i] != st.st_ino)
			continue;
		for (int k = 0; k < w->n && strlen(chain) < 300; k++) {
			strncat(chain, w->names[k], 100);
			strcat(chain, " -> ");
		}
		return error_set(e, EXIT_NOINPUT, "backing file loop: %s%s", chain, path);
	}
	if (depth > QCOW2_MAX_CHAIN_DEPTH)
		return error_set(e, EXIT_NOINPUT, "%s: backing chain deeper than %d images",
				 w->names[0], QCOW2_MAX_CHAIN_DEPTH);
	w->dev[w->n] = st.st_dev;
	w->ino[w->n] = st.st_ino;
	snprintf(w->names[w->n], sizeof(w->names[0]), "%s", path);
	w->n++;
	return 0;
}

/* An image is a regular file or a block device.  A FIFO would hang the
 * first read (the open itself is O_NONBLOCK for this reason), a directory
 * would read as an empty raw disk.  Refuses the rest; clears O_NONBLOCK. */
static int open_check_kind(int fd, const char *path, struct error *e)
{
	struct stat st;
	int fl;

	if (fstat(fd, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return error_set(e, EXIT_NOINPUT, "%s: not a regular file or a block device "
				 "(a %s)", path, S_ISFIFO(st.st_mode) ? "FIFO" :
				 S_ISDIR(st.st_mode) ? "directory" : S_ISCHR(st.st_mode) ?
				 "character device" : "socket");
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	return 0;
}

/* Lock bd's file for this open (see the top of this file and lock.c); a
 * refusal names the file, as a backing file below the top. */
static int open_lock(struct blockdev *bd, const struct blockdev_opts *o, struct error *e)
{
	unsigned perm = LOCK_PERM_CONSISTENT_READ;
	unsigned shared = LOCK_PERM_CONSISTENT_READ | LOCK_PERM_WRITE_UNCHANGED;
	char name[600];

	snprintf(name, sizeof(name), "%s%.500s", bd->depth ? "backing file " : "", bd->path);
	if (!o->readonly)
		perm |= LOCK_PERM_WRITE | LOCK_PERM_RESIZE;
	else if (o->share_writes && bd->format == BD_FMT_RAW)
		shared = LOCK_PERM_ALL;
	if (o->force_share)
		shared = LOCK_PERM_ALL;
	return lock_set(bd->fd, name, perm, shared, &bd->lock, e);
}

/* Open `path`, or take the open file given_fd (>= 0: bd owns it from now
 * on, failing or not) which `path` then names. */
static int open_one(struct blockdev **out, const char *path, int given_fd,
		    const struct blockdev_opts *o, int depth, struct chain_walk *w,
		    struct error *e)
{
	struct blockdev *bd = calloc(1, sizeof(*bd));
	enum blockdev_format f = o->format;
	int r;

	*out = NULL;
	if (!bd)
		return error_set(e, EXIT_HOST, "out of memory");
	bd->fd = -1;
	bd->path = strdup(path);
	bd->readonly = o->readonly;
	bd->caller_reports = o->caller_reports;
	bd->depth = depth;
	if (given_fd >= 0) {
		int fl = o->direct ? fcntl(given_fd, F_GETFL) : 0;

		bd->fd = given_fd;
		if (fl < 0 || (o->direct && fcntl(given_fd, F_SETFL, fl | O_DIRECT) < 0)) {
			int err = errno;        /* EINVAL: no O_DIRECT here, said below */

			close(given_fd);
			bd->fd = -1;
			errno = err;
		}
	} else {
		bd->fd = path_open(path, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
				   O_NONBLOCK | (o->direct ? O_DIRECT : 0), 0);   /* the whole
								     * chain, when confined */
	}
	if (bd->fd < 0 && o->direct && errno == EINVAL) {
		r = error_set(e, EXIT_NOINPUT, "%s: the file system does not support O_DIRECT "
			      "('direct'); put the image elsewhere or drop 'direct'", path);
		goto fail;
	}
	if (bd->fd < 0) {
		r = error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
		goto fail;
	}
	bd->direct = o->direct;
	bd->dio_align = o->direct ? bd_dio_align(bd->fd) : 0;
	r = open_check_kind(bd->fd, path, e);
	if (!r)
		r = walk_add(w, bd->fd, path, depth, e);
	if (r)
		goto fail;
	if (f == BD_FMT_AUTO)
		f = blockdev_probe(bd->fd);
	bd->format = f;
	r = open_lock(bd, o, e);
	if (!r)
		r = f == BD_FMT_QCOW2 ? qcow2_open(bd, o, e) : raw_open(bd, o, e);
	if (!r && f == BD_FMT_QCOW2 && bd->dio_align &&
	    ((struct qcow2 *)bd->priv)->cluster_size < bd->dio_align)
		r = error_set(e, EXIT_NOINPUT, "%s: 'direct' needs clusters of at least %u "
			      "bytes here, the image has %llu", path, bd->dio_align,
			      (unsigned long long)((struct qcow2 *)bd->priv)->cluster_size);
	if (r)
		goto fail;
	r = open_backing(bd, o, w, e);
	if (!r && bd->format == BD_FMT_QCOW2)
		r = chain_id_verify(bd, o->force, e);
	if (r)
		goto fail;
	*out = bd;
	return 0;
fail:
	blockdev_close(bd);
	return -1;
}

/* A freshly opened chain gets its pristine cache (block/pristine.c); a
 * failure closes it again. */
static int pristine_open_chain(struct blockdev **out, const struct blockdev_opts *o,
			       struct error *e)
{
	if (!pristine_attach_chain(*out, o, e))
		return 0;
	blockdev_close(*out);
	*out = NULL;
	return -1;
}

/* Drivers of SCHEME: paths (blockdev.h), registered at start. */
static struct { const char *scheme; blockdev_scheme_open_fn open; } schemes[4];

int blockdev_register_scheme(const char *scheme, blockdev_scheme_open_fn open)
{
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		if (schemes[i].scheme && strcmp(schemes[i].scheme, scheme))
			continue;
		schemes[i].scheme = scheme;
		schemes[i].open = open;
		return 0;
	}
	return -1;
}

static blockdev_scheme_open_fn scheme_of(const char *path)
{
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && schemes[i].scheme; i++) {
		size_t n = strlen(schemes[i].scheme);

		if (!strncmp(path, schemes[i].scheme, n) && path[n] == ':')
			return schemes[i].open;
	}
	return NULL;
}

bool blockdev_is_scheme(const char *path)
{
	return scheme_of(path) != NULL;
}

int blockdev_open(struct blockdev **out, const char *path,
		  const struct blockdev_opts *o, struct error *e)
{
	static const struct blockdev_opts defaults;
	struct chain_walk *w;
	int r;

	*out = NULL;
	if (o && o->force_share && !o->readonly)
		return error_set(e, EXIT_USAGE, "%s: force share (-U) is for read-only opens: "
				 "a writer cannot let others write too", path);
	if (scheme_of(path))
		return scheme_of(path)(out, path, o ? o : &defaults, e);
	w = calloc(1, sizeof(*w));
	if (!w)
		return error_set(e, EXIT_HOST, "out of memory");
	r = open_one(out, path, -1, o ? o : &defaults, 0, w, e);
	free(w);
	return r ? r : pristine_open_chain(out, o ? o : &defaults, e);
}

int blockdev_open_fd(struct blockdev **out, int fd, const char *path,
		     const struct blockdev_opts *o, struct error *e)
{
	static const struct blockdev_opts defaults;
	struct chain_walk *w;
	int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1, own, r;

	*out = NULL;
	if (!o)
		o = &defaults;
	if (fl < 0)
		return error_set(e, EXIT_USAGE, "%s: no open file given", path);
	if (!o->readonly && (fl & O_ACCMODE) == O_RDONLY)
		return error_set(e, EXIT_USAGE, "%s: the file given is open read-only, and the "
				 "disk is writable", path);
	if (o->force_share && !o->readonly)
		return error_set(e, EXIT_USAGE, "%s: force share (-U) is for read-only opens: "
				 "a writer cannot let others write too", path);
	w = calloc(1, sizeof(*w));
	if (!w)
		return error_set(e, EXIT_HOST, "out of memory");
	own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	r = own < 0 ? error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno)) :
		      open_one(out, path, own, o, 0, w, e);
	free(w);
	return r ? r : pristine_open_chain(out, o, e);
}

void blockdev_close(struct blockdev *bd)
{
	if (!bd)
		return;
	if (bd->aio)
		aio_engine_free(bd->aio);
	if (bd->ops)
		bd->ops->close(bd);
	pristine_close(bd->pristine);
	blockdev_close(bd->backing);
	if (bd->fd >= 0) {
		lock_release(bd->fd, &bd->lock);	/* explicit: a dup elsewhere
							 * would keep them alive */
		close(bd->fd);
	}
	free(bd->path);
	free(bd);
}

/* Add 1 to the depth of every image of a chain (it gets a new top). */
static void chain_deepen(struct blockdev *bd)
{
	for (; bd; bd = bd->backing)
		bd->depth++;
}

/* blockdev_push_overlay, of the image at `path` or (fd >= 0) in fd. */
static int push_overlay(struct blockdev **top, const char *path, int fd,
			const struct blockdev_opts *o, struct error *e)
{
	struct blockdev_opts oo = *o;
	struct blockdev *old = *top, *ov;
	struct chain_walk *w;
	struct qcow2 *q;
	struct stat a, b;
	char *bpath;
	int r;

	if (old->readonly)
		return error_set(e, EXIT_USAGE, "%s: read-only: no overlay is needed", old->path);
	r = blockdev_flush(old);
	if (r)
		return error_set(e, EXIT_HOST, "%s: flush before the overlay: %s", old->path,
				 strerror(-r));
	oo.format = BD_FMT_QCOW2;
	oo.readonly = false;
	oo.no_backing = true;
	oo.force_share = false;
	if (fd < 0) {
		r = blockdev_open(&ov, path, &oo, e);
	} else if (!(w = calloc(1, sizeof(*w)))) {
		r = error_set(e, EXIT_HOST, "out of memory");
	} else {
		int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);

		r = own < 0 ? error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno)) :
			      open_one(&ov, path, own, &oo, 0, w, e);
		free(w);
	}
	if (r)
		return -1;
	/* the overlay must name this very file as its backing file: by
	 * file, or, given an open file (no names to look up), by old's name */
	q = ov->priv;
	bpath = q->backing_file ? backing_path(ov->path, q->backing_file) : NULL;
	if (fd >= 0)
		r = !bpath || strcmp(bpath, old->path) || ov->size != old->size;
	else
		r = !bpath || stat(bpath, &a) < 0 || fstat(old->fd, &b) < 0 ||
		    a.st_dev != b.st_dev || a.st_ino != b.st_ino || ov->size != old->size;
	free(bpath);
	if (r) {
		blockdev_close(ov);
		return error_set(e, EXIT_NOINPUT, "%s: not an overlay of %s (backing file or "
				 "size differ)", path, old->path);
	}
	/* from now on a backing file: read only, and locked as one (consistent
	 * read held, write and resize refused to others); dropping held bytes
	 * cannot conflict with anyone */
	if (lock_set(old->fd, old->path, LOCK_PERM_CONSISTENT_READ,
		     LOCK_PERM_CONSISTENT_READ | LOCK_PERM_WRITE_UNCHANGED, &old->lock, e)) {
		blockdev_close(ov);
		return -1;
	}
	old->readonly = true;
	if (old->aio) {			/* the new top's engine serves the chain */
		aio_engine_free(old->aio);
		old->aio = NULL;
	}
	chain_deepen(old);
	ov->backing = old;
	*top = ov;
	return 0;
}

int blockdev_push_overlay(struct blockdev **top, const char *path,
			  const struct blockdev_opts *o, struct error *e)
{
	return push_overlay(top, path, -1, o, e);
}

int blockdev_push_overlay_fd(struct blockdev **top, int fd, const char *path,
			     const struct blockdev_opts *o, struct error *e)
{
	if (fd < 0)
		return error_set(e, EXIT_USAGE, "%s: no open file given for the overlay", path);
	return push_overlay(top, path, fd, o, e);
}

void blockdev_share_all(struct blockdev *bd)
{
	struct error e;

	/* Drops refusals and keeps what is held, so nothing can refuse it. */
	lock_set(bd->fd, bd->path, bd->lock.held, LOCK_PERM_ALL, &bd->lock, &e);
}

int blockdev_inactivate(struct blockdev *bd, struct error *e)
{
	int r;

	if (bd->inactive)
		return 0;
	r = blockdev_flush(bd);
	if (r)
		return error_set(e, EXIT_HOST, "%s: flush before giving up its lock: %s", bd->path,
				 strerror(-r));
	bd->active_lock = bd->lock;
	lock_release(bd->fd, &bd->lock);
	bd->inactive = true;
	return 0;
}

int blockdev_activate(struct blockdev *bd, struct error *e)
{
	if (!bd->inactive)
		return 0;
	if (lock_set(bd->fd, bd->path, bd->active_lock.held,
		     ~bd->active_lock.unshared & LOCK_PERM_ALL, &bd->lock, e))
		return -1;
	bd->inactive = false;
	return 0;
}

static int range_ok(struct blockdev *bd, uint64_t off, uint64_t len)
{
	if (off > bd->size || len > bd->size - off) {
		error_set(&bd->err, EXIT_USAGE, "%s: request at %llu+%llu beyond the end "
			  "of the disk (%llu)", bd->path, (unsigned long long)off,
			  (unsigned long long)len, (unsigned long long)bd->size);
		return -EINVAL;
	}
	return 0;
}

static int write_ok(struct blockdev *bd, uint64_t off, uint64_t len)
{
	if (bd->readonly) {
		error_set(&bd->err, EXIT_USAGE, "%s: image is open read-only", bd->path);
		return -EROFS;
	}
	if (bd->inactive) {     /* its lock given up to a migration's destination */
		error_set(&bd->err, EXIT_HOST, "%s: image is inactive (migrating)", bd->path);
		return -EROFS;
	}
	return range_ok(bd, off, len);
}

/* Fill in bd->err from an errno if the format left no story. */
static int io_result(struct blockdev *bd, const char *what, int r)
{
	if (r < 0 && r != -EIO && r != -EINVAL && r != -EROFS)
		error_set(&bd->err, EXIT_HOST, "%s: %s: %s", bd->path, what, strerror(-r));
	else if (r == -EIO && !bd->err.msg[0])
		error_set(&bd->err, EXIT_HOST, "%s: %s: I/O error", bd->path, what);
	return r;
}

int blockdev_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	int r = range_ok(bd, off, len);

	bd->st_reads++;
	if (!r && bd->pristine)		/* a read-only disk with a cache */
		r = pristine_read(bd->pristine, bd, buf, off, len, NULL);
	else if (!r)
		r = bd->ops->read(bd, buf, off, len);
	return io_result(bd, "read", r);
}

int blockdev_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len)
{
	int r = write_ok(bd, off, len);

	bd->st_writes++;
	return r ? r : io_result(bd, "write", bd->ops->write(bd, buf, off, len));
}

int blockdev_write_zeroes(struct blockdev *bd, uint64_t off, uint64_t len)
{
	int r = write_ok(bd, off, len);

	return r ? r : io_result(bd, "write zeroes", bd->ops->write_zeroes(bd, off, len));
}

int blockdev_discard(struct blockdev *bd, uint64_t off, uint64_t len)
{
	int r = write_ok(bd, off, len);

	return r ? r : io_result(bd, "discard", bd->ops->discard(bd, off, len));
}

int blockdev_flush(struct blockdev *bd)
{
	bd->st_flushes++;
	if (bd->readonly)
		return 0;
	return io_result(bd, "flush", bd->ops->flush(bd));
}

int blockdev_block_status(struct blockdev *bd, uint64_t off, uint64_t len,
			  struct bd_extent *ext)
{
	int r = range_ok(bd, off, len);

	return r ? r : bd->ops->block_status(bd, off, len, ext);
}

int blockdev_read_backing(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	struct blockdev *b = bd->backing;
	uint64_t n = 0;
	int r = 0;

	if (b && off < b->size) {
		uint64_t file = n = b->size - off < len ? b->size - off : len;

		r = b->pristine ? pristine_read(b->pristine, b, buf, off, n, &file)
				: b->ops->read(b, buf, off, n);
		if (!r && !bd->depth)
			bd->st_backing_bytes += file;
		if (r && !bd->err.msg[0] && b->err.msg[0])
			bd->err = b->err;
	}
	if (!r && n < len)
		memset((uint8_t *)buf + n, 0, len - n);
	return r;
}

/* ---- asynchronous requests ---- */

static int aio_ensure(struct blockdev *bd)
{
	if (bd->aio)
		return 0;
	return aio_engine_new(&bd->aio, 128, true);
}

const char *blockdev_engine_name(struct blockdev *bd)
{
	if (aio_ensure(bd))
		return "none";
	return aio_engine_name(bd->aio);
}

int blockdev_event_fd(struct blockdev *bd)
{
	if (aio_ensure(bd))
		return -1;
	return aio_event_fd(bd->aio);
}

int blockdev_inflight(struct blockdev *bd)
{
	return aio_inflight(bd->aio);
}

/* One host I/O of a request finished. */
static void req_piece_done(void *opaque, int res)
{
	struct bd_req *req = opaque;

	if (res < 0 && !req->result)
		req->result = res;
	if (--req->pending == 0)
		req->done(req, req->result);
}

/* Copy between a request's iovecs and a flat buffer. */
static void iov_copy(struct bd_req *req, uint8_t *flat, bool to_flat)
{
	for (int i = 0; i < req->iovcnt; i++) {
		if (to_flat)
			memcpy(flat, req->iov[i].iov_base, req->iov[i].iov_len);
		else
			memcpy(req->iov[i].iov_base, flat, req->iov[i].iov_len);
		flat += req->iov[i].iov_len;
	}
}

/* The slow path: run the request synchronously, complete it at poll. */
static int submit_sync(struct blockdev *bd, struct bd_req *req)
{
	uint8_t *flat = NULL;
	int r;

	if (req->op == BD_OP_READ || req->op == BD_OP_WRITE) {
		flat = bd_memalign(req->len);	/* aligned, for O_DIRECT */
		if (!flat)
			return -ENOMEM;
	}
	switch (req->op) {
	case BD_OP_READ:
		r = blockdev_read(bd, flat, req->off, req->len);
		if (!r)
			iov_copy(req, flat, false);
		break;
	case BD_OP_WRITE:
		iov_copy(req, flat, true);
		r = blockdev_write(bd, flat, req->off, req->len);
		break;
	case BD_OP_FLUSH:
		r = blockdev_flush(bd);
		break;
	case BD_OP_DISCARD:
		r = blockdev_discard(bd, req->off, req->len);
		break;
	default:
		r = blockdev_write_zeroes(bd, req->off, req->len);
		break;
	}
	free(flat);
	req->pending = 1;
	return aio_submit_done(bd->aio, r, req_piece_done, req);
}

/* Whole request maps to one host range of one file in the chain (reads of
 * unallocated ranges go down to the backing file): one host I/O, to the
 * file of *owner. */
static bool fast_map(struct blockdev *bd, struct bd_req *req, struct blockdev **owner,
		     uint64_t *host)
{
	bool w = req->op == BD_OP_WRITE;
	uint64_t h0, h, done, n;
	struct bd_extent x;

	if ((w && bd->readonly) || req->iovcnt > 16 || (!w && bd->pristine))
		return false;		/* a cached image is read through its cache */
	n = bd->ops->map_fast(bd, w, req->off, req->len, &h0);
	if (!n && !w && bd->backing && req->off + req->len <= bd->backing->size &&
	    !bd->ops->block_status(bd, req->off, req->len, &x) && x.status == BD_UNALLOC &&
	    x.len >= req->len)
		return fast_map(bd->backing, req, owner, host);
	for (done = n; n && done < req->len; done += n) {
		n = bd->ops->map_fast(bd, w, req->off + done, req->len - done, &h);
		if (n && h != h0 + done)
			return false;
	}
	*owner = bd;
	*host = h0;
	return n && done == req->len;
}

int blockdev_submit(struct blockdev *bd, struct bd_req *req)
{
	struct blockdev *owner;
	uint64_t host;
	int r = aio_ensure(bd);

	if (r)
		return r;
	req->result = 0;
	req->pending = 0;
	if (req->op == BD_OP_READ || req->op == BD_OP_WRITE) {
		r = req->op == BD_OP_WRITE ? write_ok(bd, req->off, req->len)
					   : range_ok(bd, req->off, req->len);
		if (r)
			return r;
		if (req->op == BD_OP_READ)
			bd->st_reads++;
		else
			bd->st_writes++;
		if (req->len && fast_map(bd, req, &owner, &host) &&
		    !((host | req->len) & (owner->dio_align ? owner->dio_align - 1 : 0))) {
			if (owner != bd)
				bd->st_backing_bytes += req->len;
			req->pending = 1;
			return aio_submit_rw(bd->aio, owner->fd, req->op == BD_OP_WRITE, req->iov,
					     req->iovcnt, host, req->len, owner->dio_align,
					     req_piece_done, req);
		}
	}
	return submit_sync(bd, req);
}

int blockdev_poll(struct blockdev *bd, int min)
{
	if (!bd->aio)
		return 0;
	return aio_poll(bd->aio, min);
}
