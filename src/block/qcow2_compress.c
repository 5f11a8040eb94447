/*
 * qcow2_compress.c - compressed clusters: zlib (raw deflate, 4 KiB window,
 * as the spec requires) and zstd.
 *
 * A compressed cluster on disk is a byte range that starts anywhere and may
 * run into padding (the L2 entry counts 512-byte sectors), so decompression
 * stops when the output cluster is full and treats "input ran out first" as
 * a corrupt cluster.  Nothing here trusts the input: sizes are bounded by
 * the caller's buffers, and errors become -EIO, never a crash.
 */
#include "block/qcow2.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

static int zlib_inflate(const void *src, size_t slen, void *dst, size_t dlen)
{
	z_stream s;
	int r;

	memset(&s, 0, sizeof(s));
	if (inflateInit2(&s, -12) != Z_OK)
		return -ENOMEM;
	s.next_in = (Bytef *)src;
	s.avail_in = slen;
	s.next_out = dst;
	s.avail_out = dlen;
	r = inflate(&s, Z_FINISH);
	inflateEnd(&s);
	if ((r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) && s.avail_out == 0)
		return 0;
	return -EIO;
}

static int zstd_inflate(const void *src, size_t slen, void *dst, size_t dlen)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer in = { src, slen, 0 };
	ZSTD_outBuffer out = { dst, dlen, 0 };
	int r = -EIO;

	if (!d)
		return -ENOMEM;
	while (out.pos < out.size) {
		size_t z = ZSTD_decompressStream(d, &out, &in);

		if (ZSTD_isError(z))
			break;
		if (out.pos == out.size) {
			r = 0;
			break;
		}
		if (z == 0 || in.pos == in.size)
			break;	/* frame ended or input exhausted before a full cluster */
	}
	ZSTD_freeDCtx(d);
	return r;
}

/* Decompress one cluster (dlen bytes exactly) from src; 0 or -EIO. */
int qcow2_decompress(struct qcow2 *q, const void *src, size_t slen, void *dst, size_t dlen)
{
	if (q->compression_type == QCOW2_COMPRESS_ZSTD)
		return zstd_inflate(src, slen, dst, dlen);
	return zlib_inflate(src, slen, dst, dlen);
}

/* Compress slen bytes into dst (at most dlen); returns the compressed size
 * or -ENOSPC when it does not shrink (the caller stores it plain). */
long qcow2_compress(struct qcow2 *q, const void *src, size_t slen, void *dst, size_t dlen)
{
	if (q->compression_type == QCOW2_COMPRESS_ZSTD) {
		size_t z = ZSTD_compress(dst, dlen, src, slen, 3);

		return ZSTD_isError(z) || z >= slen ? -ENOSPC : (long)z;
	}
	z_stream s;
	long n;
	int r;

	memset(&s, 0, sizeof(s));
	if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	s.next_in = (Bytef *)src;
	s.avail_in = slen;
	s.next_out = dst;
	s.avail_out = dlen;
	r = deflate(&s, Z_FINISH);
	n = dlen - s.avail_out;
	deflateEnd(&s);
	return r == Z_STREAM_END && (size_t)n < slen ? n : -ENOSPC;
}
