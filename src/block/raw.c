/*
 * raw.c - raw images: the guest disk is the file, byte for byte.
 *
 * Zero writes and discards punch holes where the file system can (so a
 * raw file stays sparse), falling back to writing zeros.  The virtual size
 * is the file size.  Nothing here can be corrupt.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "base/exitcode.h"

static int raw_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	return bd_pread(bd->fd, buf, len, off, true);
}

static int raw_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len)
{
	return bd_pwrite(bd->fd, buf, len, off);
}

/* Zeros by hole punching; writes zeros if the file system cannot. */
static int raw_write_zeroes(struct blockdev *bd, uint64_t off, uint64_t len)
{
	static const uint8_t zero[65536];

	if (!fallocate(bd->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
		return 0;
	while (len) {
		uint64_t n = len < sizeof(zero) ? len : sizeof(zero);
		int r = bd_pwrite(bd->fd, zero, n, off);

		if (r)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int raw_flush(struct blockdev *bd)
{
	return fdatasync(bd->fd) < 0 ? -errno : 0;
}

/* Raw files report holes as zero and everything else as data. */
static int raw_block_status(struct blockdev *bd, uint64_t off, uint64_t len,
			    struct bd_extent *ext)
{
	off_t d = lseek(bd->fd, off, SEEK_DATA), h;

	ext->depth = 0;
	if (d < 0 || (uint64_t)d > off) {
		uint64_t end = d < 0 ? off + len : (uint64_t)d;

		ext->status = BD_ZERO;
		ext->len = (end > off + len ? off + len : end) - off;
		ext->host_off = 0;
		return 0;
	}
	h = lseek(bd->fd, off, SEEK_HOLE);
	ext->status = BD_DATA;
	ext->host_off = off;
	ext->len = (h < 0 || (uint64_t)h > off + len ? off + len : (uint64_t)h) - off;
	if (!ext->len)
		ext->len = len;
	return 0;
}

static uint64_t raw_map_fast(struct blockdev *bd, bool write, uint64_t off,
			     uint64_t len, uint64_t *host_off)
{
	*host_off = off;
	return len;
}

static void raw_close(struct blockdev *bd)
{
}

const struct blockdev_ops raw_ops = {
	.name = "raw",
	.read = raw_read,
	.write = raw_write,
	.write_zeroes = raw_write_zeroes,
	.discard = raw_write_zeroes,
	.flush = raw_flush,
	.block_status = raw_block_status,
	.map_fast = raw_map_fast,
	.close = raw_close,
};

/* The virtual size of a raw image is its file size. */
int raw_open(struct blockdev *bd, const struct blockdev_opts *o, struct error *e)
{
	struct stat st;

	if (fstat(bd->fd, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", bd->path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(bd->fd, 0, SEEK_END);
		bd->size = end < 0 ? 0 : (uint64_t)end;
	} else {
		bd->size = st.st_size;
	}
	bd->ops = &raw_ops;
	return 0;
}

/* Create (or truncate) a raw image of `size` bytes, sparse unless prealloc. */
int raw_create(const char *path, uint64_t size, bool prealloc, struct error *e)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	int r = 0;

	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	if (ftruncate(fd, size) < 0)
		r = error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	else if (prealloc && size && posix_fallocate(fd, 0, size))
		r = error_set(e, EXIT_HOST, "%s: cannot preallocate %llu bytes", path,
			      (unsigned long long)size);
	close(fd);
	return r;
}
