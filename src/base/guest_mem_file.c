/*
 * guest_mem_file.c - guest RAM to and from a plain file of the same layout.
 *
 * A snapshot's memory file is an image of the memfd: byte N of the file is
 * byte N of the memfd (guest_mem.h: the low part, then the part above the
 * 32-bit hole).  Pages that are all zero are not written, so they stay
 * holes in a sparse file and cost no disk; reading back, only the file's
 * data extents (SEEK_DATA/SEEK_HOLE) are read, and a fresh memfd is zero
 * everywhere else.
 *
 * Invariants: the file is exactly m->size bytes; a short read or write is
 * an error, never a silently partial guest.  The file is untrusted when it
 * is loaded: its size is checked against the VM's before a byte is read.
 *
 * A compressed memory file (`shoal snapshot create --compress`) is one
 * zstd frame of records instead (below): smaller on disk and to copy, but
 * it cannot be mapped, so clones need the plain one.
 */
#include "base/guest_mem.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>
#include <xxhash.h>
#include <zstd.h>

#include "base/exitcode.h"

#define PAGE 4096u

bool guest_mem_page_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;

	for (unsigned i = 0; i < PAGE / 8; i++)
		if (q[i])
			return false;
	return true;
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n; off += (uint64_t)n; len -= (uint64_t)n;
	}
	return 0;
}

/* The next stretch [*a, *b) at or after `off`, before `end`, of the file
 * `fd` that holds data; 0, or 1 when only holes are left.  fd < 0: all of
 * it is data.  Holes are never read: reading a hole of a memfd or a tmpfs
 * file through a mapping allocates it. */
static int next_data(int fd, uint64_t off, uint64_t end, uint64_t *a, uint64_t *b)
{
	off_t d, h;

	if (off >= end)
		return 1;
	if (fd < 0) {
		*a = off;
		*b = end;
		return 0;
	}
	d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d < 0 && errno != ENXIO) {          /* cannot tell: all of it */
		*a = off;
		*b = end;
		return 0;
	}
	if (d < 0 || (uint64_t)d >= end)        /* ENXIO: holes to the end */
		return 1;
	h = lseek(fd, d, SEEK_HOLE);
	*a = (uint64_t)d;
	*b = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
	return 0;
}

/* Write the runs of non-zero pages of [a, b) (memfd data) at their
 * offsets in `fd`, one pwrite a run; add their bytes to *data. */
static int write_runs(const struct guest_mem *m, int fd, uint64_t a, uint64_t b, uint64_t *data)
{
	for (uint64_t p = a; p < b; p += PAGE) {
		uint64_t q = p + PAGE;

		if (guest_mem_page_zero(m->host + p))
			continue;
		while (q < b && !guest_mem_page_zero(m->host + q))
			q += PAGE;
		if (pwrite_all(fd, m->host + p, q - p, p) < 0)
			return -1;
		*data += q - p;
		p = q - PAGE;
	}
	return 0;
}

int guest_mem_write_data(const struct guest_mem *m, int fd, uint64_t off, uint64_t end,
			 uint64_t *data)
{
	for (uint64_t a, b; !next_data(m->fd, off, end, &a, &b); off = b)
		if (write_runs(m, fd, a, b, data) < 0)
			return -1;
	return 0;
}

static void hash_zeros(XXH3_state_t *h, uint64_t n)
{
	static const uint8_t zero[1 << 16];

	while (n) {
		size_t k = n < sizeof(zero) ? (size_t)n : sizeof(zero);

		XXH3_64bits_update(h, zero, k);
		n -= k;
	}
}

int guest_mem_save_file(const struct guest_mem *m, int fd, uint64_t *data_bytes,
			uint64_t *hash, struct error *e)
{
	XXH3_state_t *h = XXH3_createState();
	uint64_t pos = 0, a, b, data = 0;
	int rc = -1;

	if (!h)
		return error_set(e, EXIT_HOST, "out of memory");
	XXH3_64bits_reset(h);
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)m->size) < 0) {
		error_set(e, EXIT_HOST, "cannot size the memory file: %s", strerror(errno));
		goto out;
	}
	/* Only the memfd's data is read; in it, runs of non-zero pages are
	 * written with one pwrite each. */
	while (!next_data(m->fd, pos, m->size, &a, &b)) {
		hash_zeros(h, a - pos);
		XXH3_64bits_update(h, m->host + a, b - a);
		if (write_runs(m, fd, a, b, &data) < 0) {
			error_set(e, EXIT_HOST, "cannot write the memory file: %s",
				  errno ? strerror(errno) : "short write");
			goto out;
		}
		pos = b;
	}
	hash_zeros(h, m->size - pos);
	if (data_bytes)
		*data_bytes = data;
	if (hash)
		*hash = XXH3_64bits_digest(h);
	rc = 0;
out:
	XXH3_freeState(h);
	return rc;
}

int guest_mem_file_hash(int fd, uint64_t size, uint64_t *hash, struct error *e)
{
	XXH3_state_t *h = XXH3_createState();
	uint8_t *buf = malloc(1 << 20);
	uint64_t pos = 0, a, b;
	int rc = -1;

	if (!h || !buf) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	XXH3_64bits_reset(h);
	while (!next_data(fd, pos, size, &a, &b)) {
		hash_zeros(h, a - pos);
		for (pos = a; pos < b;) {
			size_t want = b - pos < (1 << 20) ? (size_t)(b - pos) : 1 << 20;
			ssize_t n = pread(fd, buf, want, (off_t)pos);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				error_set(e, EXIT_BADSTATE, "memory file: %s at offset %llu",
					  n < 0 ? strerror(errno) : "unexpected end",
					  (unsigned long long)pos);
				goto out;
			}
			XXH3_64bits_update(h, buf, (size_t)n);
			pos += (uint64_t)n;
		}
	}
	hash_zeros(h, size - pos);
	*hash = XXH3_64bits_digest(h);
	rc = 0;
out:
	XXH3_freeState(h);
	free(buf);
	return rc;
}

int guest_mem_load_file(const struct guest_mem *m, int fd, struct error *e)
{
	struct stat st;
	uint64_t pos = 0, a, b;

	if (fstat(fd, &st) < 0)
		return error_set(e, EXIT_HOST, "memory file: %s", strerror(errno));
	if ((uint64_t)st.st_size != m->size)
		return error_set(e, EXIT_BADSTATE, "memory file is %llu bytes, the VM has %llu",
				 (unsigned long long)st.st_size, (unsigned long long)m->size);
	while (!next_data(fd, pos, m->size, &a, &b)) {
		for (pos = a; pos < b;) {
			ssize_t n = pread(fd, m->host + pos, (size_t)(b - pos), (off_t)pos);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return error_set(e, EXIT_BADSTATE, "memory file: %s at offset %llu",
						 n < 0 ? strerror(errno) : "unexpected end",
						 (unsigned long long)pos);
			pos += (uint64_t)n;
		}
	}
	return 0;
}

/* ---- the compressed memory file (zstd) ----
 *
 * One zstd frame holding records: a 16-byte header, offset and length
 * (little-endian u64, both multiples of 4096, the length not 0, each
 * record after the one before), then that many bytes of RAM; a header with
 * offset UINT64_MAX ends it.  Only pages that are not all zero are in
 * records; the rest of RAM is zero.  Read back, every header is checked
 * against the VM's RAM before a byte of its data is copied, and nothing
 * may follow the end. */

#define ZREC_END UINT64_MAX

struct zwriter {
	ZSTD_CCtx *c;
	int fd;
	uint8_t *out;
	size_t out_size;
	uint64_t file_bytes;
};

static int zw_put(struct zwriter *w, const void *p, size_t len, ZSTD_EndDirective end)
{
	ZSTD_inBuffer in = { p, len, 0 };

	for (;;) {
		ZSTD_outBuffer out = { w->out, w->out_size, 0 };
		size_t left = ZSTD_compressStream2(w->c, &out, &in, end);

		if (ZSTD_isError(left)) {
			errno = EIO;
			return -1;
		}
		if (out.pos && pwrite_all(w->fd, w->out, out.pos, w->file_bytes) < 0)
			return -1;
		w->file_bytes += out.pos;
		if (end == ZSTD_e_end ? left == 0 : in.pos == in.size)
			return 0;
	}
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int guest_mem_save_zstd(const struct guest_mem *m, int fd, int level, uint64_t *data_bytes,
			uint64_t *file_bytes, uint64_t *hash, struct error *e)
{
	struct zwriter w = { .c = ZSTD_createCCtx(), .fd = fd, .out_size = ZSTD_CStreamOutSize() };
	XXH3_state_t *h = XXH3_createState();
	uint64_t pos = 0, a, b, data = 0;
	uint8_t hdr[16];
	int rc = -1;

	w.out = malloc(w.out_size);
	if (!w.c || !h || !w.out) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	XXH3_64bits_reset(h);
	ZSTD_CCtx_setParameter(w.c, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(w.c, ZSTD_c_checksumFlag, 1);
	if (ftruncate(fd, 0) < 0)
		goto io;
	while (!next_data(m->fd, pos, m->size, &a, &b)) {
		hash_zeros(h, a - pos);
		XXH3_64bits_update(h, m->host + a, b - a);
		for (uint64_t p = a; p < b; p += PAGE) {
			uint64_t q = p + PAGE;

			if (guest_mem_page_zero(m->host + p))
				continue;
			while (q < b && !guest_mem_page_zero(m->host + q))
				q += PAGE;
			put_le64(hdr, p);
			put_le64(hdr + 8, q - p);
			if (zw_put(&w, hdr, sizeof(hdr), ZSTD_e_continue) ||
			    zw_put(&w, m->host + p, q - p, ZSTD_e_continue))
				goto io;
			data += q - p;
			p = q - PAGE;
		}
		pos = b;
	}
	hash_zeros(h, m->size - pos);
	put_le64(hdr, ZREC_END);
	put_le64(hdr + 8, 0);
	if (zw_put(&w, hdr, sizeof(hdr), ZSTD_e_end))
		goto io;
	if (data_bytes)
		*data_bytes = data;
	if (file_bytes)
		*file_bytes = w.file_bytes;
	if (hash)
		*hash = XXH3_64bits_digest(h);
	rc = 0;
	goto out;
io:
	error_set(e, EXIT_HOST, "cannot write the compressed memory file: %s",
		  errno ? strerror(errno) : "short write");
out:
	ZSTD_freeCCtx(w.c);
	XXH3_freeState(h);
	free(w.out);
	return rc;
}

int guest_mem_load_zstd(const struct guest_mem *m, int fd, uint64_t *hash, struct error *e)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	XXH3_state_t *h = XXH3_createState();
	size_t in_size = ZSTD_DStreamInSize(), out_size = ZSTD_DStreamOutSize();
	uint8_t *inb = malloc(in_size), *outb = malloc(out_size), hdr[16];
	uint64_t next = 0, off = 0, left = 0, file_off = 0;  /* left: data bytes of the record */
	size_t have = 0, zret = 1;     /* have: header bytes gathered */
	bool ended = false;
	int rc = -1;

	if (!d || !h || !inb || !outb) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	XXH3_64bits_reset(h);
	for (;;) {
		ssize_t n = pread(fd, inb, in_size, (off_t)file_off);
		ZSTD_inBuffer in = { inb, 0, 0 };

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			error_set(e, EXIT_BADSTATE, "compressed memory file: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		file_off += (uint64_t)n;
		in.size = (size_t)n;
		while (in.pos < in.size) {
			ZSTD_outBuffer out = { outb, out_size, 0 };

			if (ended) {
				error_set(e, EXIT_BADSTATE, "compressed memory file: data after its end");
				goto out;
			}
			zret = ZSTD_decompressStream(d, &out, &in);
			if (ZSTD_isError(zret)) {
				error_set(e, EXIT_BADSTATE, "compressed memory file: %s",
					  ZSTD_getErrorName(zret));
				goto out;
			}
			for (size_t k = 0; k < out.pos;) {
				if (ended) {
					error_set(e, EXIT_BADSTATE, "compressed memory file: bytes after "
						  "its end record");
					goto out;
				}
				if (left) {             /* data of the record being read */
					size_t c = out.pos - k < left ? out.pos - k : (size_t)left;

					memcpy(m->host + off, outb + k, c);
					XXH3_64bits_update(h, outb + k, c);
					off += c; left -= c; k += c;
					continue;
				}
				hdr[have++] = outb[k++];
				if (have < sizeof(hdr))
					continue;
				have = 0;
				off = get_le64(hdr);
				left = get_le64(hdr + 8);
				if (off == ZREC_END && left == 0) {
					ended = true;
					continue;
				}
				if (off % PAGE || left % PAGE || !left || off < next ||
				    off > m->size || left > m->size - off) {
					error_set(e, EXIT_BADSTATE, "compressed memory file: a record "
						  "at %llu of %llu bytes does not fit the VM's %llu "
						  "bytes in order", (unsigned long long)off,
						  (unsigned long long)left, (unsigned long long)m->size);
					goto out;
				}
				hash_zeros(h, off - next);
				next = off + left;
			}
		}
	}
	if (!ended || left || have || zret != 0) {
		error_set(e, EXIT_BADSTATE, "compressed memory file: cut short");
		goto out;
	}
	hash_zeros(h, m->size - next);
	*hash = XXH3_64bits_digest(h);
	rc = 0;
out:
	ZSTD_freeDCtx(d);
	XXH3_freeState(h);
	free(inb);
	free(outb);
	return rc;
}
