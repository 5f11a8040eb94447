/*
 * zero_blocks.h - the zero-page layer: released guest memory that stays
 * unallocated when it is read (issue 13, item 2; docs/memory.md).
 *
 * Guest RAM is one memfd mapped MAP_SHARED (base/guest_mem.h).  A punched
 * hole there is allocated again by any read fault through the mapping
 * (shmem_fault allocates for reads too).  This layer works in 2 MiB blocks
 * of the mapping.  A block that is wholly released (the balloon's reported
 * or inflated pages, through guest_mem_discard's hook, or a block the
 * rate-limited scanner finds all zero) is punched out of the memfd and, in
 * the VMM's mapping only, replaced (mmap MAP_FIXED) by a private anonymous
 * mapping registered with userfaultfd (missing + write-protect faults):
 *
 *  - a read fault is answered with UFFDIO_ZEROPAGE over the block and the
 *    block is write-protected (UFFDIO_WRITEPROTECT): the kernel's shared
 *    zero page, nothing allocated;
 *  - the first write fault (missing or write-protect) maps the memfd back
 *    over the block (MAP_FIXED) and wakes the writer, which then writes the
 *    memfd.
 *
 * Invariant: the memfd always holds the guest's memory.  A zero block's
 * bytes are zero in the memfd (a hole) and in the mapping (zero pages);
 * no write ever lands in the anonymous mapping except in the instant
 * between UFFDIO_ZEROPAGE and UFFDIO_WRITEPROTECT, and the switch back
 * copies any page written then into the memfd first (it checks every
 * present page of the block).  Snapshots, migration and the memory file
 * read the memfd and see the right bytes.
 *
 * KVM's faults (GUP from vCPU threads) and device or io_uring writes go
 * through the same mapping, so they fault into the same handler.  The
 * handler is one thread; every block change takes one mutex.  A vhost-user
 * back end maps the memfd itself and could write a zero block behind the
 * mapping's back: the caller must not start the layer then.
 *
 * The handler thread and the scanner install their own seccomp filter
 * (zero_blocks.c: no kind of base/seccomp_rules.c allows UFFDIO_ZEROPAGE
 * and UFFDIO_WAKE), so they must be started from a thread without a
 * filter yet: start the layer before the main thread installs its own.
 *
 * The scanner reads a block with pread (which does not allocate a hole)
 * and, if it is all zero, switches the block to the anonymous mapping
 * first, then reads it again: from the switch on, every access through
 * the mapping waits in the handler (which waits for the mutex), so no
 * write can land in the memfd between the second check and the punch.
 *
 * VMAs: each run of zero blocks splits the mapping; the layer keeps the
 * runs under a bound (a quarter of vm.max_map_count, at most 16384) and
 * leaves further blocks as plain holes (counted in vma_limited).
 */
#ifndef SHOAL_MEM_ZERO_BLOCKS_H
#define SHOAL_MEM_ZERO_BLOCKS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/guest_mem.h"

#define ZERO_BLOCK_SIZE (2ull << 20)

struct zero_blocks;

struct zero_blocks_stats {
	uint64_t blocks;          /* 2 MiB blocks of the mapping */
	uint64_t zero_blocks;     /* now served from the anonymous mapping */
	uint64_t runs;            /* maximal runs of zero blocks (VMAs ~ 2 * runs + 1) */
	uint64_t released;        /* blocks switched to zero, in all */
	uint64_t restored;        /* blocks mapped back after a write */
	uint64_t read_faults;     /* faults answered with the zero page */
	uint64_t write_faults;    /* faults that mapped the memfd back */
	uint64_t raced_pages;     /* pages written in the zeropage/protect window, copied */
	uint64_t scanned_pages;   /* pages the scanner read */
	uint64_t scan_released;   /* blocks the scanner found zero */
	uint64_t vma_limited;     /* blocks left as plain holes (VMA bound) */
};

/* Start the layer over `m` (a memfd-backed mapping; EXIT_USAGE otherwise),
 * with a handler thread and, when scan_pages_per_s > 0, a scanner that
 * reads at most that many pages a second.  Installs m->released.  Fails
 * with EXIT_RESOURCE when userfaultfd is not available (not permitted:
 * vm.unprivileged_userfaultfd and no CAP_SYS_PTRACE; or no write-protect
 * support for anonymous memory).  0 or -1 with `e`. */
int zero_blocks_start(struct zero_blocks **out, struct guest_mem *m,
		      uint64_t scan_pages_per_s, struct error *e);

/* Release the whole 2 MiB blocks inside [off, off+len) of the mapping:
 * their memory must already be punched out of the memfd and not be
 * written meanwhile (the balloon's pages).  Returns how many blocks were
 * switched. */
uint64_t zero_blocks_release(struct zero_blocks *z, uint64_t off, uint64_t len);

/* guest_mem_discard's hook only marks whole released blocks pending (it
 * runs on the event loop, whose seccomp filter has no userfaultfd ioctls)
 * and the handler thread switches them, checked as the scanner does (the
 * guest may write a reported block as soon as it gets it back).  This
 * switches the pending blocks now, on the caller's thread (tests).
 * Returns how many were switched. */
uint64_t zero_blocks_settle(struct zero_blocks *z);

/* One scanner pass over at most `max_pages` pages (whole blocks), from
 * where the last one stopped; what the scanner thread calls.  Returns
 * the blocks released. */
uint64_t zero_blocks_scan(struct zero_blocks *z, uint64_t max_pages);

void zero_blocks_get_stats(struct zero_blocks *z, struct zero_blocks_stats *s);

/* Map the memfd back over every zero block, stop the threads, clear
 * m->released.  No vCPU or device may run.  NULL is fine. */
void zero_blocks_stop(struct zero_blocks *z);

#endif
