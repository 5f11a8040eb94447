/*
 * page_hash.c - memory-error recovery from page hashes (mem/page_hash.h,
 * docs/memory.md "Memory errors").
 *
 * What it keeps, for a VM restored from a snapshot's memory file:
 *   - the file, open read-only: the good copy of every page the guest has
 *     not written since the restore;
 *   - one XXH3-64 per 4 KiB page of RAM (8 bytes a page, 2 MiB per GiB),
 *     computed at the start from the pages just loaded (the file's data
 *     extents; a hole's pages all share the zero page's hash);
 *   - `written`: one bit per page written since, gathered only when an
 *     error comes, from KVM's dirty log (KVM_MEM_LOG_DIRTY_PAGES on every
 *     RAM slot, vmm/dirty.c) and the host-side marks of device writes
 *     (guest_mem_dirty_take), so a written page is never taken for clean.
 *
 * Recovery (ph_recover, called by vmm/mce.c's SIGBUS handler in signal
 * context, one error at a time; syscalls and preallocated buffers only):
 *   1. collect the dirty log into `written`; a written page has no copy;
 *   2. pread the page from the file and check it against its hash (a file
 *      changed since the restore, or a bad block, does not match);
 *   3. punch the page out of the memfd (the poisoned page leaves the page
 *      cache: shmem drops a hwpoison page on a hole punch), pwrite the good
 *      contents there (a new page), then MADV_DONTNEED the page in our
 *      mapping: that zaps the hwpoison entry the kernel left in our page
 *      table, which the punch's own unmap keeps.  The next access (KVM's
 *      fault, the device's load) maps the new page.
 * Pwrite before the zap: an access in between still faults on the old
 * entry and waits on the handler's lock, so nothing sees the hole.
 *
 * Invariants and limits.
 *   - A hash is trusted only while the dirty log is ours: a migration
 *     (vm_dirty_start) takes it over and turns it off at its end, so once
 *     vm->dirty_starts moves the layer recovers nothing more (a machine
 *     check instead), rather than restore a page from before a write.
 *   - The guest cannot make the host read or write outside RAM: every
 *     offset is a page of the mapping the handler was given, and the file
 *     is the VM's size.  A guest can only make its own errors fatal to
 *     itself (writing a page drops its copy).
 *   - Dirty logging costs the guest a write-protect fault on the first
 *     write to each page after a collection and 4 KiB EPT mappings.
 *   - Clones (a private mapping of the file: a clean page of the file's
 *     page cache is dropped and read again by the kernel itself) and
 *     compressed snapshots get the machine-check path only.
 */
#include "mem/page_hash.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "vmm/dirty.h"
#include "vmm/mce.h"
#include "vmm/vm.h"

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif

struct page_hash {
	struct vm *vm;
	int fd;                    /* the memory file, or -1: no copies */
	uint64_t npages;
	uint64_t *hash;            /* per page of the memfd */
	uint64_t *written;         /* pages written since the restore */
	uint64_t *log;             /* KVM_GET_DIRTY_LOG buffer (largest slot) */
	uint8_t *buf;              /* one page read back from the file */
	unsigned dirty_starts;     /* vm->dirty_starts when the log became ours */
	bool logging;
};

void page_hash_pages(const uint8_t *p, uint64_t npages, uint64_t *out)
{
	for (uint64_t i = 0; i < npages; i++)
		out[i] = XXH3_64bits(p + i * 4096, 4096);
}

/* Every page written since the last call into ph->written (signal-safe:
 * ioctl, atomics). */
static int collect_written(struct page_hash *ph)
{
	struct vm *vm = ph->vm;

	for (int i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *r = &vm->mem.region[i];
		uint64_t pages = r->size / 4096, words = (pages + 63) / 64, first = r->offset / 4096;
		struct kvm_dirty_log dl = { .slot = (uint32_t)i, .dirty_bitmap = ph->log };

		memset(ph->log, 0, words * 8);
		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &dl) < 0)
			return -1;
		for (uint64_t w = 0; w < words; w++) {
			uint64_t bits = ph->log[w];

			while (bits) {
				uint64_t p = first + w * 64 + (uint64_t)__builtin_ctzll(bits);

				ph->written[p / 64] |= 1ull << (p % 64);
				bits &= bits - 1;
			}
		}
	}
	guest_mem_dirty_take(&vm->mem, ph->written);
	return 0;
}

static enum vm_mce_result ph_recover(void *opaque, uint8_t *page, int code)
{
	struct page_hash *ph = opaque;
	struct guest_mem *m = &ph->vm->mem;
	uint64_t off = (uint64_t)(page - m->host), pg = off / 4096;

	(void)code;
	if (ph->fd < 0 || pg >= ph->npages)
		return VM_MCE_NO_COPY;
	if (atomic_load(&ph->vm->dirty_starts) != ph->dirty_starts || collect_written(ph))
		return VM_MCE_WRITTEN;     /* the log is not ours (a migration) */
	if (ph->written[pg / 64] >> (pg % 64) & 1)
		return VM_MCE_WRITTEN;
	if (pread(ph->fd, ph->buf, 4096, (off_t)off) != 4096)
		return VM_MCE_NO_COPY;
	if (XXH3_64bits(ph->buf, 4096) != ph->hash[pg])
		return VM_MCE_MISMATCH;
	if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, 4096) < 0 ||
	    pwrite(m->fd, ph->buf, 4096, (off_t)off) != 4096 ||
	    madvise(page, 4096, MADV_DONTNEED) < 0)
		return VM_MCE_FAILED;
	return VM_MCE_RECOVERED;
}

/* {"cmd": "inject-memory-error", "gpa": N}: poison the guest page at N
 * (madvise MADV_HWPOISON: the kernel treats it as a real uncorrected
 * error).  For tests; needs CAP_SYS_ADMIN and CONFIG_MEMORY_FAILURE. */
static json_t *inject_cmd(struct vm *vm, json_t *req, void *opaque)
{
	json_t *g = json_object_get(req, "gpa");
	uint64_t gpa;
	void *p;

	(void)opaque;
	if (!json_is_integer(g) || json_integer_value(g) < 0)
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 "inject-memory-error: \"gpa\" must be a non-negative integer");
	gpa = (uint64_t)json_integer_value(g) & ~4095ull;
	p = guest_mem_ptr(&vm->mem, gpa, 4096);
	if (!p)
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 "inject-memory-error: gpa is not in guest RAM");
	if (vm->mem.private_map)
		return json_pack("{s:b, s:s}", "ok", 0, "error", "inject-memory-error: a clone's "
				 "unwritten pages are its snapshot file's page cache, shared with "
				 "every clone: not poisoned from here");
	if (madvise(p, 4096, MADV_HWPOISON) < 0) {
		char msg[256];
		int err = errno;

		snprintf(msg, sizeof(msg), "inject-memory-error: madvise(MADV_HWPOISON): %s%s",
			 strerror(err), err == EPERM ? " (needs CAP_SYS_ADMIN: an unjailed VMM "
			 "run as root)" : err == EINVAL ? " (a host kernel without "
			 "CONFIG_MEMORY_FAILURE?)" : "");
		return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	}
	log_warn("inject-memory-error: guest page 0x%llx poisoned (MADV_HWPOISON)",
		 (unsigned long long)gpa);
	return json_pack("{s:b, s:I}", "ok", 1, "gpa", (json_int_t)gpa);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The hashes of the pages just loaded: the file's data extents, read
 * through the mapping (they are the memfd's data too, so nothing new is
 * allocated); every other page is a hole, zero. */
static int hash_loaded(struct page_hash *ph, struct error *e)
{
	struct guest_mem *m = &ph->vm->mem;
	static const uint8_t zero[4096];
	uint64_t zh = XXH3_64bits(zero, sizeof(zero)), t0 = mono_ns(), data = 0;
	off_t pos = 0, end = (off_t)m->size;

	for (uint64_t i = 0; i < ph->npages; i++)
		ph->hash[i] = zh;
	while (pos < end) {
		off_t d = lseek(ph->fd, pos, SEEK_DATA), h;

		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0 || (h = lseek(ph->fd, d, SEEK_HOLE)) < 0)
			return error_set(e, EXIT_HOST, "--mem-recovery: SEEK_DATA/SEEK_HOLE: %s",
					 strerror(errno));
		d &= ~(off_t)4095;
		if (h > end)
			h = end;
		h = (h + 4095) & ~(off_t)4095;
		page_hash_pages(m->host + d, (uint64_t)(h - d) / 4096, ph->hash + d / 4096);
		data += (uint64_t)(h - d);
		pos = h;
	}
	log_info("mem-recovery: hashed %llu MiB of restored pages in %.1f ms (%llu pages, "
		 "%llu KiB of hashes)", (unsigned long long)(data >> 20), (mono_ns() - t0) / 1e6,
		 (unsigned long long)ph->npages, (unsigned long long)(ph->npages * 8 / 1024));
	return 0;
}

int page_hash_start(struct page_hash **out, struct vm *vm, const char *copy, struct error *e)
{
	struct page_hash *ph = calloc(1, sizeof(*ph));
	uint64_t maxpages = 0;
	struct stat st;

	*out = NULL;
	if (!ph)
		return error_set(e, EXIT_HOST, "out of memory");
	ph->vm = vm;
	ph->fd = -1;
	ph->npages = vm->mem.size / 4096;
	if (copy && (vm->mem.private_map || vm->mem.fd < 0))
		copy = NULL;       /* a clone: the kernel reads its clean pages again */
	if (copy) {
		for (int i = 0; i < vm->mem.nregions; i++)
			if (vm->mem.region[i].size / 4096 > maxpages)
				maxpages = vm->mem.region[i].size / 4096;
		ph->fd = open(copy, O_RDONLY | O_CLOEXEC);
		if (ph->fd < 0) {
			error_set(e, EXIT_BADSTATE, "--mem-recovery: %s: %s", copy, strerror(errno));
			goto fail;
		}
		if (fstat(ph->fd, &st) < 0 || (uint64_t)st.st_size != vm->mem.size) {
			error_set(e, EXIT_BADSTATE, "--mem-recovery: %s: not an image of the VM's "
				  "%llu bytes of RAM", copy, (unsigned long long)vm->mem.size);
			goto fail;
		}
		ph->hash = malloc(ph->npages * 8);
		ph->written = calloc((ph->npages + 63) / 64, 8);
		ph->log = calloc((maxpages + 63) / 64 + 1, 8);
		ph->buf = aligned_alloc(4096, 4096);
		if (!ph->hash || !ph->written || !ph->log || !ph->buf) {
			error_set(e, EXIT_HOST, "out of memory for the page hashes");
			goto fail;
		}
		if (vm_dirty_start(vm, e))
			goto fail;
		ph->logging = true;
		ph->dirty_starts = atomic_load(&vm->dirty_starts);
		if (hash_loaded(ph, e))
			goto fail;
	}
	if (vm_mce_enable(vm, ph_recover, ph, e))
		goto fail;
	if (vm_add_command(vm, "inject-memory-error", inject_cmd, ph)) {
		error_set(e, EXIT_HOST, "--mem-recovery: the control command table is full");
		vm_mce_disable();
		goto fail;
	}
	log_info("mem-recovery: on; %s", ph->fd >= 0 ? "pages restored from the memory file are "
		 "recovered from it" : "no good copies (not restored from a plain memory file): "
		 "memory errors become machine checks");
	*out = ph;
	return 0;
fail:
	page_hash_stop(ph);
	return -1;
}

void page_hash_stop(struct page_hash *ph)
{
	if (!ph)
		return;
	vm_mce_disable();
	if (ph->logging && atomic_load(&ph->vm->dirty_starts) == ph->dirty_starts)
		vm_dirty_stop(ph->vm);
	if (ph->fd >= 0)
		close(ph->fd);
	free(ph->hash);
	free(ph->written);
	free(ph->log);
	free(ph->buf);
	free(ph);
}
