/*
 * page_hash.h - memory-error recovery from page hashes (issue 13 item 5,
 * docs/memory.md "Memory errors").
 *
 * A VM restored from a snapshot's memory file (`shoal run --restore DIR
 * --mem-recovery`) has a good copy of every page it has not written since:
 * the file, which stays open read-only.  The layer keeps an XXH3-64 hash
 * of each 4 KiB page as loaded and KVM's dirty log (with the host-side
 * marks of device writes) on, so that it knows which pages were written.
 * On an uncorrected memory error (vmm/mce.h) a page not written since is
 * read back from the file, checked against its hash, and put in place of
 * the poisoned one; the guest goes on unaware.  Any other page becomes a
 * machine check for the guest.
 */
#ifndef SHOAL_MEM_PAGE_HASH_H
#define SHOAL_MEM_PAGE_HASH_H

#include <stdint.h>

#include "base/error.h"

struct vm;
struct page_hash;

/* Start it for `vm` (before vm_run).  `copy` is the memory file the VM's
 * RAM was loaded from (an image of the memfd, the same size), or NULL
 * (a new VM, a clone, a compressed snapshot): then every memory error is
 * a machine check.  Adds the control command "inject-memory-error".  0,
 * or -1 with `e`. */
int page_hash_start(struct page_hash **out, struct vm *vm, const char *copy, struct error *e);

/* Stop (after vm_run): SIGBUS back to its default, the file closed.
 * NULL is a no-op. */
void page_hash_stop(struct page_hash *ph);

/* XXH3-64 of each of `npages` 4 KiB pages at `p` into `out` (the bench). */
void page_hash_pages(const uint8_t *p, uint64_t npages, uint64_t *out);

#endif
