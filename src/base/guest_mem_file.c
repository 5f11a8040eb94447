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
 */
#include "base/guest_mem.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>
#include <xxhash.h>

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
