/*
 * mem_protect.c - KVM memory slots that enforce guest-set page protection
 * (the backend of devices/pv_protect.c; docs/memory.md has the guest's
 * view).
 *
 * Why memory slots and not userfaultfd write-protection: a slot change
 * works without privileges (no userfaultfd for kernel faults, which needs
 * root or a sysctl), makes the violating access a KVM_EXIT_MMIO on the
 * vCPU's own thread with its address, size and data (so the VMM can drop
 * a refused write and hand a refused read any value, which a blocked
 * userfaultfd fault cannot: the thread can only retry the access), covers
 * reads too (a hole), and leaves the mapping alone, which the zero-page
 * layer and live snapshots already register with userfaultfds of their
 * own (a second registration fails).  The price: only vCPU accesses are
 * caught (devices write through the mapping), each fault is an
 * instruction emulated by KVM, and the guest cannot run code from, or
 * keep page tables in, an inaccessible page.
 *
 * Layout.  Each RAM region (guest_mem) is cut by the protected ranges in
 * it into pieces: plain slots between ranges, a KVM_MEM_READONLY slot per
 * read-only range, nothing (a hole) for an inaccessible one.  With no
 * range a region is one slot numbered as vm_map_memory numbered it (its
 * index), which dirty.c relies on; other pieces take slots from
 * VP_SLOT_BASE up.  A change deletes the old pieces that differ and
 * creates the new ones, and on any refusal by KVM puts the old ones back
 * (if that fails too, the VM stops: its memory is no longer what it was).
 *
 * Other vCPUs.  KVM has no atomic re-slotting: between deleting a slot
 * and creating its pieces, a vCPU touching that memory would find no
 * slot, and KVM cannot emulate an instruction fetch or a page walk
 * there.  So every change runs while all other vCPUs are held out of
 * KVM_RUN (vp_hold: vm->hold, which the vCPU loop treats like a pause
 * request).  A vCPU waiting for a fault's answer counts as parked
 * (vp_wait), so a handler on another vCPU can change ranges meanwhile.
 */
#include "vmm/mem_protect.h"

#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include "abi/pv_protect.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "devices/device.h"
#include "devices/pv_protect.h"
#include "vmm/vm.h"

#define VP_SLOT_BASE   32
#define VP_MAX_PIECES  (GUEST_MEM_MAX_REGIONS + 2 * PV_PROTECT_MAX_RANGES)
#define VP_MAX_SLOTS   (VP_SLOT_BASE + VP_MAX_PIECES)

struct vp_piece {
	uint32_t slot;
	uint32_t flags;
	uint64_t gpa, size;
	uint8_t *hva;
};

struct vm_protect {
	struct vm *vm;
	bool readonly_ok;             /* KVM_CAP_READONLY_MEM */
	int n;
	struct vp_piece cur[VP_MAX_PIECES];
};

/* ---- holding the other vCPUs ---- */

static void vp_hold(void *opaque, bool on)
{
	struct vm *vm = ((struct vm_protect *)opaque)->vm;

	pthread_mutex_lock(&vm->stop_lock);
	if (!on) {
		atomic_store(&vm->hold, false);
		pthread_cond_broadcast(&vm->stop_cond);
		pthread_mutex_unlock(&vm->stop_lock);
		return;
	}
	while (atomic_load(&vm->hold) && !atomic_load(&vm->stopping)) {
		vm->parked++;           /* another vCPU holds: be held meanwhile */
		pthread_cond_broadcast(&vm->stop_cond);
		while (atomic_load(&vm->hold) && !atomic_load(&vm->stopping))
			pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
		vm->parked--;
	}
	atomic_store(&vm->hold, true);
	for (int i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	while (vm->parked < vm->ncpus - 1 && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
	pthread_mutex_unlock(&vm->stop_lock);
}

static void vp_wait(void *opaque, bool begin)
{
	struct vm *vm = ((struct vm_protect *)opaque)->vm;

	pthread_mutex_lock(&vm->stop_lock);
	if (begin) {
		vm->parked++;
		pthread_cond_broadcast(&vm->stop_cond);
	} else {
		while ((atomic_load(&vm->pause_requested) || atomic_load(&vm->hold)) &&
		       !atomic_load(&vm->stopping))
			pthread_cond_wait(&vm->stop_cond, &vm->stop_lock);
		vm->parked--;
	}
	pthread_mutex_unlock(&vm->stop_lock);
}

static bool vp_stopping(void *opaque)
{
	return atomic_load(&((struct vm_protect *)opaque)->vm->stopping);
}

/* ---- slots ---- */

static int vp_slot_ioctl(struct vm *vm, const struct vp_piece *pc, bool create)
{
	struct kvm_userspace_memory_region r = {
		.slot = pc->slot,
		.flags = pc->flags,
		.guest_phys_addr = pc->gpa,
		.memory_size = create ? pc->size : 0,
		.userspace_addr = (uintptr_t)pc->hva,
	};

	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

/* The pieces of RAM for ranges r[0..n) (sorted, each inside one region). */
static int vp_layout(const struct vm *vm, const struct pv_protect_range *r, int n,
		     struct vp_piece *out)
{
	int k = 0;

	for (int i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *g = &vm->mem.region[i];
		uint64_t pos = g->gpa, end = g->gpa + g->size;

		for (int j = 0; j < n; j++) {
			if (r[j].gpa < g->gpa || r[j].gpa >= end)
				continue;
			if (r[j].gpa > pos)
				out[k++] = (struct vp_piece){ UINT32_MAX, 0, pos, r[j].gpa - pos,
							      g->hva + (pos - g->gpa) };
			if (r[j].mode == PV_PROTECT_READONLY)
				out[k++] = (struct vp_piece){ UINT32_MAX, KVM_MEM_READONLY, r[j].gpa,
							      r[j].len, g->hva + (r[j].gpa - g->gpa) };
			pos = r[j].gpa + r[j].len;
		}
		if (pos < end)
			out[k++] = (struct vp_piece){ UINT32_MAX, 0, pos, end - pos,
						      g->hva + (pos - g->gpa) };
	}
	return k;
}

static int vp_region_of(const struct vm *vm, uint64_t gpa)
{
	for (int i = 0; i < vm->mem.nregions; i++)
		if (gpa - vm->mem.region[i].gpa < vm->mem.region[i].size)
			return i;
	return -1;
}

/* Go from old[0..no) to new[0..nn): delete what differs, create what is
 * new.  On failure, undo.  0, or -1 with `why`. */
static int vp_switch(struct vm *vm, const struct vp_piece *old, int no, struct vp_piece *nw,
		     int nn, char *why, size_t len)
{
	bool kept[VP_MAX_PIECES] = { false }, used[VP_MAX_SLOTS] = { false };
	bool made[VP_MAX_PIECES] = { false }, gone[VP_MAX_PIECES] = { false };
	int i, j, err = 0;

	for (j = 0; j < nn; j++)
		for (i = 0; i < no; i++)
			if (!kept[i] && old[i].gpa == nw[j].gpa && old[i].size == nw[j].size &&
			    old[i].flags == nw[j].flags) {
				kept[i] = true;
				nw[j].slot = old[i].slot;
				if (nw[j].slot < VP_MAX_SLOTS)
					used[nw[j].slot] = true;
				break;
			}
	for (j = 0; j < nn; j++) {
		int reg = vp_region_of(vm, nw[j].gpa);
		uint32_t s;

		if (nw[j].slot != UINT32_MAX)
			continue;
		if (reg >= 0 && !used[reg])
			s = (uint32_t)reg;
		else
			for (s = VP_SLOT_BASE; s < VP_MAX_SLOTS && used[s]; s++)
				;
		used[s] = true;
		nw[j].slot = s;
	}
	for (i = 0; i < no && !err; i++)
		if (!kept[i]) {
			if (vp_slot_ioctl(vm, &old[i], false) < 0)
				err = errno;
			else
				gone[i] = true;
		}
	for (j = 0; j < nn && !err; j++) {
		bool was = false;

		for (i = 0; i < no; i++)
			was |= kept[i] && old[i].slot == nw[j].slot;
		if (was)
			continue;
		if (vp_slot_ioctl(vm, &nw[j], true) < 0)
			err = errno;
		else
			made[j] = true;
	}
	if (!err)
		return 0;
	snprintf(why, len, "KVM_SET_USER_MEMORY_REGION: %s", strerror(err));
	for (j = 0; j < nn; j++)
		if (made[j] && vp_slot_ioctl(vm, &nw[j], false) < 0)
			goto lost;
	for (i = 0; i < no; i++)
		if (gone[i] && vp_slot_ioctl(vm, &old[i], true) < 0)
			goto lost;
	return -1;
lost:
	vm_stop(vm, EXIT_HOST, "pv-protect: cannot put the memory slots back after %s: %s",
		why, strerror(errno));
	return -1;
}

static int vp_set(void *opaque, const struct pv_protect_range *r, int n, char *why, size_t len)
{
	struct vm_protect *p = opaque;
	struct vp_piece nw[VP_MAX_PIECES];
	int nn;

	for (int i = 0; i < n; i++)
		if (r[i].mode == PV_PROTECT_READONLY && !p->readonly_ok) {
			snprintf(why, len, "/dev/kvm lacks KVM_CAP_READONLY_MEM");
			return -1;
		}
	nn = vp_layout(p->vm, r, n, nw);
	if (vp_switch(p->vm, p->cur, p->n, nw, nn, why, len))
		return -1;
	memcpy(p->cur, nw, sizeof(nw[0]) * (size_t)nn);
	p->n = nn;
	return 0;
}

/* ---- the VM's side ---- */

int vm_protect_create(struct vm *vm, struct error *e)
{
	struct vm_protect *p = calloc(1, sizeof(*p));
	struct pv_protect_backend be = {
		.opaque = p, .hold = vp_hold, .set = vp_set, .wait = vp_wait,
		.stopping = vp_stopping,
	};

	if (!p)
		return error_set(e, EXIT_HOST, "out of memory");
	p->vm = vm;
	p->readonly_ok = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
	for (int i = 0; i < vm->mem.nregions; i++)      /* as vm_map_memory made them */
		p->cur[p->n++] = (struct vp_piece){ (uint32_t)i, 0, vm->mem.region[i].gpa,
						    vm->mem.region[i].size, vm->mem.region[i].hva };
	vm->protect_be = p;
	return pv_protect_create(&vm->host, &be, &vm->protect, e);
}

void vm_protect_destroy(struct vm *vm)
{
	free(vm->protect_be);
	vm->protect_be = NULL;
	vm->protect = NULL;     /* the device is freed with the others */
}

bool vm_protect_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	return v->vm->protect &&
	       pv_protect_access(v->vm->protect, v->index, run->mmio.phys_addr, run->mmio.data,
				 (int)run->mmio.len, run->mmio.is_write);
}

int vm_protect_check(struct vm *vm, const char *what, struct error *e)
{
	char why[256];

	if (vm->protect && pv_protect_busy(vm->protect, why, sizeof(why)))
		return error_set(e, EXIT_USAGE, "%s: %s", what, why);
	return 0;
}
