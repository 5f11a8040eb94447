/*
 * mem_shared.h - the VMM's side of pv-shared (devices/pv_shared.c): which
 * guest frames of a clone still share the template's page.
 */
#ifndef SHOAL_VMM_MEM_SHARED_H
#define SHOAL_VMM_MEM_SHARED_H

#include "base/error.h"

struct vm;

/* Add the pv-shared device to `vm`; a clone's (a private mapping of a
 * memory file) reads /proc/self/pagemap, opened here (before the jail).
 * 0, or -1 with `e`. */
int vm_shared_create(struct vm *vm, struct error *e);

#endif
