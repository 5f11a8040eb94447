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

int guest_mem_save_file(const struct guest_mem *m, int fd, uint64_t *data_bytes,
			struct error *e)
{
	uint64_t run = 0, start = 0, data = 0;

	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)m->size) < 0)
		return error_set(e, EXIT_HOST, "cannot size the memory file: %s", strerror(errno));
	/* Runs of non-zero pages are written with one pwrite each. */
	for (uint64_t off = 0; off <= m->size; off += PAGE) {
		bool zero = off == m->size || guest_mem_page_zero(m->host + off);

		if (!zero) {
			if (!run)
				start = off;
			run += PAGE;
			continue;
		}
		if (run && pwrite_all(fd, m->host + start, run, start) < 0)
			return error_set(e, EXIT_HOST, "cannot write the memory file: %s",
					 errno ? strerror(errno) : "short write");
		data += run;
		run = 0;
	}
	if (data_bytes)
		*data_bytes = data;
	return 0;
}

int guest_mem_load_file(const struct guest_mem *m, int fd, struct error *e)
{
	struct stat st;
	off_t pos = 0, end;

	if (fstat(fd, &st) < 0)
		return error_set(e, EXIT_HOST, "memory file: %s", strerror(errno));
	if ((uint64_t)st.st_size != m->size)
		return error_set(e, EXIT_BADSTATE, "memory file is %llu bytes, the VM has %llu",
				 (unsigned long long)st.st_size, (unsigned long long)m->size);
	while (pos < st.st_size) {
		pos = lseek(fd, pos, SEEK_DATA);
		if (pos < 0) {
			if (errno == ENXIO)
				break;                   /* only holes from here on */
			return error_set(e, EXIT_HOST, "memory file: %s", strerror(errno));
		}
		end = lseek(fd, pos, SEEK_HOLE);
		if (end < 0)
			end = st.st_size;
		while (pos < end) {
			ssize_t n = pread(fd, m->host + pos, (size_t)(end - pos), pos);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return error_set(e, EXIT_BADSTATE, "memory file: %s at offset %lld",
						 n < 0 ? strerror(errno) : "unexpected end",
						 (long long)pos);
			pos += n;
		}
	}
	return 0;
}
