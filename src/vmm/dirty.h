/*
 * dirty.h - which guest pages were written since the last look: KVM's
 * dirty log for the vCPUs' writes, and base/guest_mem.h's host-side marks
 * for the devices' (for live migration, state/migrate.c).
 */
#ifndef SHOAL_VMM_DIRTY_H
#define SHOAL_VMM_DIRTY_H

#include <stdint.h>

#include "base/error.h"

struct vm;

/* Words of a page bitmap of the VM's RAM: one bit per 4 KiB page, indexed
 * by the page's offset in the memfd (base/guest_mem.h). */
uint64_t vm_dirty_words(const struct vm *vm);

/* Turn tracking on: KVM_MEM_LOG_DIRTY_PAGES on every RAM slot and the
 * host-side marks; the first vm_dirty_sync after it reports the pages
 * written since.  0, or -1 with `e` (and tracking off). */
int vm_dirty_start(struct vm *vm, struct error *e);

/* OR the pages written since the last call (or since vm_dirty_start) into
 * `bits` (vm_dirty_words long), and start over.  0, or -1 with `e`. */
int vm_dirty_sync(struct vm *vm, uint64_t *bits, struct error *e);

/* Turn tracking off (the slots as they were).  Idempotent. */
void vm_dirty_stop(struct vm *vm);

#endif
