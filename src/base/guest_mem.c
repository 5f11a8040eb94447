/*
 * guest_mem.c - see guest_mem.h.
 *
 * The memfd is sealed against shrinking so that a later mapping by another
 * process (vhost-user back end, migration sender) can never fault on a page
 * that was cut off under it.
 */
#include "base/guest_mem.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/layout.h"

static int guest_mem_check_size(uint64_t size, struct error *e)
{
	if (size < GUEST_MEM_MIN)
		return error_set(e, EXIT_USAGE, "memory size %llu MiB is too small (minimum %llu MiB)",
				 (unsigned long long)(size >> 20),
				 (unsigned long long)(GUEST_MEM_MIN >> 20));
	if (size > GUEST_MEM_MAX)
		return error_set(e, EXIT_RESOURCE, "memory size %llu GiB is too large (maximum %llu GiB)",
				 (unsigned long long)(size >> 30),
				 (unsigned long long)(GUEST_MEM_MAX >> 30));
	if (size & 0xfff)
		return error_set(e, EXIT_USAGE, "memory size %llu is not a multiple of 4 KiB",
				 (unsigned long long)size);
	return 0;
}

/* Fill the region table for `size` bytes split around the 32-bit hole. */
static void guest_mem_layout(struct guest_mem *m, uint64_t size)
{
	uint64_t low = size < GUEST_MEM32_GAP_START ? size : GUEST_MEM32_GAP_START;

	m->size = size;
	m->nregions = 1;
	m->region[0] = (struct guest_region){ .gpa = 0, .size = low, .offset = 0, .hva = m->host };
	if (size > low) {
		m->region[1] = (struct guest_region){
			.gpa = GUEST_MEM32_GAP_END, .size = size - low, .offset = low,
			.hva = m->host + low };
		m->nregions = 2;
	}
}

void guest_mem_init_external(struct guest_mem *m)
{
	memset(m, 0, sizeof(*m));
	m->fd = -2;   /* external: nothing to free */
}

int guest_mem_add_region(struct guest_mem *m, uint64_t gpa, uint64_t size, void *hva)
{
	if (m->nregions == GUEST_MEM_MAX_REGIONS || !size || gpa + size < gpa)
		return -1;
	for (int i = 0; i < m->nregions; i++)
		if (gpa < m->region[i].gpa + m->region[i].size && m->region[i].gpa < gpa + size)
			return -1;
	m->region[m->nregions++] = (struct guest_region){
		.gpa = gpa, .size = size, .offset = m->size, .hva = hva };
	m->size += size;
	return 0;
}

int guest_mem_create(struct guest_mem *m, uint64_t size, struct error *e)
{
	void *p;
	int fd;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (guest_mem_check_size(size, e))
		return -1;
	fd = memfd_create("shoal-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return error_set(e, EXIT_HOST, "memfd_create: %s", strerror(errno));
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;
		close(fd);
		return error_set(e, EXIT_RESOURCE, "cannot size guest memory to %llu MiB: %s",
				 (unsigned long long)(size >> 20), strerror(err));
	}
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		int err = errno;
		close(fd);
		return error_set(e, EXIT_RESOURCE, "cannot map %llu MiB of guest memory: %s",
				 (unsigned long long)(size >> 20), strerror(err));
	}
	madvise(p, size, MADV_DONTDUMP);
	m->fd = fd;
	m->host = p;
	guest_mem_layout(m, size);   /* after m->host: regions point into it */
	return 0;
}

int guest_mem_create_anon(struct guest_mem *m, uint64_t size, struct error *e)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (guest_mem_check_size(size, e))
		return -1;
	m->host = calloc(1, size);
	if (!m->host)
		return error_set(e, EXIT_RESOURCE, "cannot allocate %llu MiB", (unsigned long long)(size >> 20));
	guest_mem_layout(m, size);
	return 0;
}

int guest_mem_map_file_private(struct guest_mem *m, int fd, uint64_t size, struct error *e)
{
	struct stat st;
	void *p;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (guest_mem_check_size(size, e))
		return -1;
	if (fstat(fd, &st) < 0)
		return error_set(e, EXIT_HOST, "memory file: %s", strerror(errno));
	if ((uint64_t)st.st_size != size)
		return error_set(e, EXIT_BADSTATE, "memory file is %llu bytes, the VM has %llu",
				 (unsigned long long)st.st_size, (unsigned long long)size);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED)
		return error_set(e, EXIT_RESOURCE, "cannot map the memory file (%llu MiB): %s",
				 (unsigned long long)(size >> 20), strerror(errno));
	madvise(p, size, MADV_DONTDUMP);
	m->host = p;
	m->private_map = true;
	guest_mem_layout(m, size);
	return 0;
}

void guest_mem_destroy(struct guest_mem *m)
{
	free(m->dirty_alloc);
	if (m->fd == -2 || !m->host) {
		memset(m, 0, sizeof(*m));
		m->fd = -1;
		return;
	}
	if (m->fd >= 0 || m->private_map) {
		munmap(m->host, m->size);
		close(m->fd);
	} else {
		free(m->host);
	}
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->region[i];

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		if (len > r->size - (gpa - r->gpa))
			return NULL;
		return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -1;
	memcpy(p, src, len);
	guest_mem_dirty_hva(m, p, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -1;
	memcpy(dst, p, len);
	return 0;
}

/* ---- host-side dirty tracking ---- */

int guest_mem_dirty_track(struct guest_mem *m, bool on)
{
	uint64_t words = (m->size / 4096 + 63) / 64;

	if (!on) {
		atomic_store(&m->dirty, NULL);
		return 0;
	}
	if (!m->dirty_alloc && !(m->dirty_alloc = calloc(words ? words : 1, 8)))
		return -1;
	for (uint64_t i = 0; i < words; i++)
		__atomic_store_n(&m->dirty_alloc[i], 0, __ATOMIC_RELAXED);
	atomic_store(&m->dirty, m->dirty_alloc);
	return 0;
}

void guest_mem_dirty_hva(const struct guest_mem *m, const void *p, uint64_t len)
{
	uint64_t *bits = atomic_load_explicit(&m->dirty, memory_order_acquire);
	uint64_t off, first, last;

	if (!bits || !len || (const uint8_t *)p < m->host ||
	    (uint64_t)((const uint8_t *)p - m->host) >= m->size)
		return;
	off = (uint64_t)((const uint8_t *)p - m->host);
	if (len > m->size - off)
		len = m->size - off;
	first = off / 4096;
	last = (off + len - 1) / 4096;
	for (uint64_t pg = first; pg <= last; pg++)
		__atomic_fetch_or(&bits[pg / 64], 1ull << (pg % 64), __ATOMIC_RELEASE);
}

void guest_mem_dirty_gpa(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	void *p;

	if (!atomic_load_explicit(&m->dirty, memory_order_relaxed))
		return;
	p = guest_mem_ptr(m, gpa, len);
	if (p)
		guest_mem_dirty_hva(m, p, len);
}

void guest_mem_dirty_take(const struct guest_mem *m, uint64_t *out)
{
	uint64_t *bits = atomic_load(&m->dirty), words = (m->size / 4096 + 63) / 64;

	if (!bits)
		return;
	for (uint64_t i = 0; i < words; i++)
		if (__atomic_load_n(&bits[i], __ATOMIC_RELAXED))
			out[i] |= __atomic_exchange_n(&bits[i], 0, __ATOMIC_ACQ_REL);
}

int guest_mem_discard(const struct guest_mem *m, void *p, uint64_t len)
{
	uint64_t off = (uint64_t)((uint8_t *)p - m->host);

	if (!m->host || (uint8_t *)p < m->host || off > m->size || len > m->size - off ||
	    (off | len) & 0xfff) {
		errno = EINVAL;
		return -1;
	}
	if (!len)
		return 0;
	if (m->fd >= 0) {
		if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) < 0)
			return -1;
		if (m->released)
			m->released(m->released_opaque, off, len);
	} else if (m->private_map) {
		if (madvise(p, len, MADV_DONTNEED) < 0)
			return -1;
	} else {
		errno = EOPNOTSUPP;
		return -1;
	}
	guest_mem_dirty_hva(m, p, len);
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *m)
{
	return m->region[0].size;
}
