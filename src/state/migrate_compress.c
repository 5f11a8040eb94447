/*
 * migrate_compress.c - zstd for the migration stream's memory pages.
 *
 * With `shoal migrate --compress zstd[:LEVEL]` (the control request's
 * "compress" and "compress_level") the source announces "ram_compress":
 * "zstd" in its hello section and sends runs of data pages as frames: it
 * compresses each run in chunks of up to MIGRATE_Z_CHUNK_PAGES pages
 * (256 KiB) with one reused ZSTD_CCtx, and where a chunk's frame is not
 * smaller than its pages (incompressible data: already compressed or
 * random) it sends the pages raw, as without compression.  All-zero
 * pages stay zero records: nothing to compress.  The records themselves
 * (kind 3: u32 frame length, then the frame) are state/migrate.c's.
 *
 * Invariants.  A frame holds exactly the pages its record names: its
 * header records the content size (zstd's default), and the destination
 * requires that size, one whole frame filling the record's length (no
 * trailing bytes, no second frame), and a decompression that yields
 * exactly pages × 4096 bytes into the record's range of guest memory,
 * whose bounds migrate.c has checked.  A record may name at most
 * MIGRATE_Z_MAX_PAGES pages (1 MiB), so a small frame cannot make the
 * destination write more than that for it.
 *
 * What the source may not do: anything else.  A frame that is damaged,
 * truncated, claims another size, or decompresses to more or less than
 * its pages is refused with the reason, and the destination never runs
 * the VM (it may have written part of the frame into guest memory that
 * it then discards).  zstd's own decoder checks the frame's structure;
 * its output is bounded by the capacity given, the record's range.
 *
 * zstd (libzstd) is linked into the VMM already (snapshots' memory,
 * qcow2's compressed clusters); its contexts are plain heap memory, so
 * the migrate thread's seccomp filter (malloc's mmap/brk) covers them.
 */
#include "state/migrate_compress.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/exitcode.h"

#define PAGE 4096u

struct migrate_z {
	ZSTD_CCtx *cctx;
	void *buf;
	size_t cap;
};

int migrate_z_parse(const char *spec, int *level, struct error *e)
{
	const char *p;
	char *end;
	long l;

	*level = MIGRATE_Z_LEVEL_DEFAULT;
	if (!spec || strncmp(spec, MIGRATE_Z_NAME, 4) || (spec[4] && spec[4] != ':'))
		return error_set(e, EXIT_USAGE, "migrate: --compress: '%s' is not a compression "
				 "(zstd or zstd:LEVEL)", spec ? spec : "");
	if (!spec[4])
		return 0;
	p = spec + 5;
	errno = 0;
	l = strtol(p, &end, 10);
	if (errno || end == p || *end || l < 1 || l > MIGRATE_Z_LEVEL_MAX)
		return error_set(e, EXIT_USAGE, "migrate: --compress: '%s': the level is 1 to %d",
				 spec, MIGRATE_Z_LEVEL_MAX);
	*level = (int)l;
	return 0;
}

struct migrate_z *migrate_z_new(int level, struct error *e)
{
	struct migrate_z *z = calloc(1, sizeof(*z));

	if (z) {
		z->cap = ZSTD_compressBound((size_t)MIGRATE_Z_CHUNK_PAGES * PAGE);
		z->buf = malloc(z->cap);
		z->cctx = ZSTD_createCCtx();
	}
	if (!z || !z->buf || !z->cctx ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1))) {
		migrate_z_free(z);
		error_set(e, EXIT_HOST, "migration: cannot set up zstd (level %d): out of memory",
			  level);
		return NULL;
	}
	return z;
}

void migrate_z_free(struct migrate_z *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	free(z->buf);
	free(z);
}

size_t migrate_z_compress(struct migrate_z *z, const void *src, size_t n, const void **out)
{
	size_t r;

	if (n > (size_t)MIGRATE_Z_CHUNK_PAGES * PAGE || n <= 4)
		return 0;
	/* only a frame that saves its own length is worth it: the output
	 * buffer is that small, and a frame that does not fit is sent raw */
	r = ZSTD_compress2(z->cctx, z->buf, n - 4, src, n);
	if (ZSTD_isError(r) || r == 0 || r >= n - 4) {
		ZSTD_CCtx_reset(z->cctx, ZSTD_reset_session_only);
		return 0;
	}
	*out = z->buf;
	return r;
}

/* One decoder for the process: the destination reads one stream. */
static pthread_mutex_t dlock = PTHREAD_MUTEX_INITIALIZER;
static ZSTD_DCtx *dctx;

int migrate_z_decode(void *dst, size_t dst_len, const void *frame, size_t clen,
		     const char **why)
{
	unsigned long long size;
	size_t whole, r;

	size = ZSTD_getFrameContentSize(frame, clen);
	if (size == ZSTD_CONTENTSIZE_ERROR) {
		*why = "is not a zstd frame";
		return -1;
	}
	if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
		*why = "does not record its size";
		return -1;
	}
	if (size != dst_len) {
		*why = "claims another size than its pages";
		return -1;
	}
	whole = ZSTD_findFrameCompressedSize(frame, clen);
	if (ZSTD_isError(whole)) {
		*why = "is cut short or damaged";
		return -1;
	}
	if (whole != clen) {
		*why = "has bytes after its end";
		return -1;
	}
	pthread_mutex_lock(&dlock);
	if (!dctx)
		dctx = ZSTD_createDCtx();
	r = dctx ? ZSTD_decompressDCtx(dctx, dst, dst_len, frame, clen) : 0;
	if (dctx && ZSTD_isError(r))
		ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
	pthread_mutex_unlock(&dlock);
	if (!dctx) {
		*why = "cannot be decoded: out of memory";
		return -1;
	}
	if (ZSTD_isError(r)) {
		*why = "is damaged";
		return -1;
	}
	if (r != dst_len) {
		*why = "decompresses to another size than its pages";
		return -1;
	}
	return 0;
}
