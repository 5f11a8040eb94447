/*
 * mem_protect.h - the VMM's half of guest-set page protection: KVM memory
 * slots that enforce the pv-protect device's ranges (mem_protect.c,
 * devices/pv_protect.h, docs/memory.md).
 */
#ifndef SHOAL_VMM_MEM_PROTECT_H
#define SHOAL_VMM_MEM_PROTECT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

struct vm;
struct vcpu;

/* Build the pv-protect device of `vm` with this backend (vm_build). */
int vm_protect_create(struct vm *vm, struct error *e);
void vm_protect_destroy(struct vm *vm);

/* vcpu.c: an MMIO exit of `v`.  True when it was at guest RAM and has
 * been handled (a protection fault, or a range removed meanwhile). */
bool vm_protect_mmio(struct vcpu *v);

/* For snapshots and migration (after vm_pause): -1 with `e` ("WHAT:
 * ...") while the guest has protected ranges or faults in flight, which
 * saved state cannot hold; else 0. */
int vm_protect_check(struct vm *vm, const char *what, struct error *e);

#endif
