/*
 * mem_shared.c - the backend of the pv-shared device (devices/pv_shared.c,
 * abi/pv_shared.h; docs/memory.md "Shared pages kept from guest
 * eviction"): the page-table entries of the VMM's mapping of guest RAM,
 * from /proc/self/pagemap.
 *
 * Only a clone gets a backend: its RAM is a MAP_PRIVATE mapping of the
 * template's memory file (guest_mem.private_map), where a page-table
 * entry that is an anonymous page is the clone's own copy and anything
 * else is the file's page (pv_shared_entry_shared says why).  Every other
 * VM's RAM is its own memfd, shared with no template: the device answers
 * "nothing shared" without asking.
 *
 * The file is opened when the VM is built, before the jail and the
 * seccomp filter (which allows pread64); reading one's own pagemap needs
 * no privilege (the PFNs read as 0 without CAP_SYS_ADMIN, the flags are
 * there).  A VMM that cannot open it still runs: the device then answers
 * as for a VM that is not a clone, and says so once in the log.
 */
#include "vmm/mem_shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "devices/pv_shared.h"
#include "vmm/vm.h"

struct vm_shared {
	int fd;                  /* /proc/self/pagemap */
};

static int vs_pagemap(void *opaque, const void *hva, uint64_t n, uint64_t *ent)
{
	struct vm_shared *s = opaque;
	off_t off = (off_t)(((uintptr_t)hva >> 12) * 8);
	size_t want = (size_t)n * 8;
	ssize_t got = pread(s->fd, ent, want, off);

	if (got < 0)
		return -1;
	if ((size_t)got != want) {
		errno = EIO;
		return -1;
	}
	return 0;
}

static void vs_release(void *opaque)
{
	struct vm_shared *s = opaque;

	close(s->fd);
	free(s);
}

int vm_shared_create(struct vm *vm, struct error *e)
{
	struct pv_shared_backend be = { .pagemap = vs_pagemap, .release = vs_release };
	struct vm_shared *s;

	if (!vm->mem.private_map)
		return pv_shared_create(&vm->host, NULL, NULL, e);
	s = calloc(1, sizeof(*s));
	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	s->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (s->fd < 0) {
		log_warn("pv-shared: /proc/self/pagemap: %s (the guest is told nothing is shared)",
			 strerror(errno));
		free(s);
		return pv_shared_create(&vm->host, NULL, NULL, e);
	}
	be.opaque = s;
	return pv_shared_create(&vm->host, &be, NULL, e);
}
