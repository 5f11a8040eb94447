/*
 * dirty.c - the dirty page log of a running VM, for pre-copy migration
 * (state/migrate.c).
 *
 * Two writers change guest RAM behind a copy of it: the vCPUs, which KVM
 * logs per memory slot once the slot has KVM_MEM_LOG_DIRTY_PAGES, and the
 * VMM's own host threads (virtio device emulation, the event loop), which
 * KVM never sees; those mark base/guest_mem.h's host-side bitmap after
 * each write while tracking is on.  vm_dirty_sync hands out the union of
 * both, indexed by memfd offset, and clears them.
 *
 * Invariants.
 *   - KVM_GET_DIRTY_LOG returns a slot's log and clears it in one ioctl
 *     (without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled, which we never
 *     enable): a page written after the ioctl re-protects it is in the
 *     next sync.  So a page is never lost between two syncs; it may be
 *     reported twice, which costs a resend only.
 *   - A host-side mark is set after the write (virtqueue.c, guest_mem.c),
 *     so a page harvested before the write is marked again.
 *   - Tracking off restores the slots' flags exactly (RAM slots have none
 *     otherwise); a failed start leaves them as they were.
 * The guest cannot influence any of this but by writing memory, which is
 * what is being logged; it never sees the log.
 */
#include "vmm/dirty.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "vmm/mem_protect.h"
#include "vmm/vm.h"

uint64_t vm_dirty_words(const struct vm *vm)
{
	return (vm->mem.size / 4096 + 63) / 64;
}

static int set_slots(struct vm *vm, uint32_t flags, int upto, struct error *e)
{
	for (int i = 0; i < upto; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)i,
			.flags = flags,
			.guest_phys_addr = vm->mem.region[i].gpa,
			.memory_size = vm->mem.region[i].size,
			.userspace_addr = (uintptr_t)vm->mem.region[i].hva,
		};

		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
			int err = errno;

			if (e)
				error_set(e, EXIT_HOST, "memory slot %d: KVM_SET_USER_MEMORY_REGION "
					  "(dirty logging %s): %s", i, flags ? "on" : "off",
					  strerror(err));
			return -1;
		}
	}
	return 0;
}

int vm_dirty_start(struct vm *vm, struct error *e)
{
	if (vm_protect_check(vm, "migration", e))   /* its slots are split (mem_protect.c) */
		return -1;
	if (guest_mem_dirty_track(&vm->mem, true))
		return error_set(e, EXIT_HOST, "out of memory for the dirty bitmap");
	atomic_fetch_add(&vm->dirty_starts, 1);   /* the log is someone else's now */
	if (set_slots(vm, KVM_MEM_LOG_DIRTY_PAGES, vm->mem.nregions, e)) {
		set_slots(vm, 0, vm->mem.nregions, NULL);
		guest_mem_dirty_track(&vm->mem, false);
		return -1;
	}
	return 0;
}

int vm_dirty_sync(struct vm *vm, uint64_t *bits, struct error *e)
{
	for (int i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *r = &vm->mem.region[i];
		uint64_t pages = r->size / 4096, words = (pages + 63) / 64;
		uint64_t first = r->offset / 4096;
		uint64_t *log = calloc(words ? words : 1, 8);
		struct kvm_dirty_log dl = { .slot = (uint32_t)i, .dirty_bitmap = log };

		if (!log)
			return error_set(e, EXIT_HOST, "out of memory for the dirty log");
		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &dl) < 0) {
			int err = errno;

			free(log);
			return error_set(e, EXIT_HOST, "memory slot %d: KVM_GET_DIRTY_LOG: %s", i,
					 strerror(err));
		}
		if (first % 64 == 0) {
			for (uint64_t w = 0; w < words; w++)
				bits[first / 64 + w] |= log[w];
		} else {
			for (uint64_t p = 0; p < pages; p++)
				if (log[p / 64] >> (p % 64) & 1)
					bits[(first + p) / 64] |= 1ull << ((first + p) % 64);
		}
		free(log);
	}
	guest_mem_dirty_take(&vm->mem, bits);
	return 0;
}

void vm_dirty_stop(struct vm *vm)
{
	guest_mem_dirty_track(&vm->mem, false);
	if (set_slots(vm, 0, vm->mem.nregions, NULL))
		log_warn("cannot turn KVM's dirty logging off: %s", strerror(errno));
}
