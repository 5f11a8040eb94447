/*
 * pv_shared.h - which guest frames still share a template's page, the
 * device half (pv_shared.c; the guest's contract is abi/pv_shared.h,
 * docs/memory.md "Shared pages kept from guest eviction").
 *
 * The device owns the guest's requests: it checks them, turns page-table
 * entries into the guest's bitmap and writes the answer.  What a frame's
 * host page is comes from a backend (the VMM's src/vmm/mem_shared.c reads
 * /proc/self/pagemap); without one (a VM that is not a clone) every frame
 * is private.  The backend is the device's whole view of the machine
 * beyond struct device_host.
 */
#ifndef SHOAL_DEVICES_PV_SHARED_H
#define SHOAL_DEVICES_PV_SHARED_H

#include <stdint.h>

#include "base/error.h"
#include "devices/device_host.h"

struct device;

/* /proc/self/pagemap's bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PV_SHARED_PM_PRESENT  (1ull << 63)
#define PV_SHARED_PM_SWAPPED  (1ull << 62)
#define PV_SHARED_PM_FILE     (1ull << 61)   /* file page or shared anonymous */

struct pv_shared_backend {
	void *opaque;
	/* The page-table entries (pagemap format) of the `n` host pages from
	 * `hva` into ent[0..n).  0, or -1 (errno). */
	int (*pagemap)(void *opaque, const void *hva, uint64_t n, uint64_t *ent);
	/* The device is going away: free `opaque`.  May be NULL. */
	void (*release)(void *opaque);
};

/* Build the device ("pv-shared", port PV_SHARED_PORT) on `host` and return
 * it in *out (may be NULL); the host owns it.  `be` NULL: not a clone.
 * 0, or -1 with `e` (the backend released). */
int pv_shared_create(const struct device_host *host, const struct pv_shared_backend *be,
		     struct device **out, struct error *e);

/* Does a page of a clone's copy-on-write mapping with pagemap entry `ent`
 * still share the file's page?  Not present (never touched, or released):
 * yes, a read maps the file's page.  Present as a file page: yes.  Present
 * as an anonymous page, or swapped out (only anonymous pages swap): no,
 * the clone wrote it. */
static inline int pv_shared_entry_shared(uint64_t ent)
{
	if (ent & PV_SHARED_PM_SWAPPED)
		return 0;
	return !(ent & PV_SHARED_PM_PRESENT) || (ent & PV_SHARED_PM_FILE);
}

/* Set bit first+i of `bits` for each shared entry ent[i] (i < n), clear it
 * otherwise; returns how many were shared. */
uint64_t pv_shared_bits(const uint64_t *ent, uint64_t n, uint8_t *bits, uint64_t first);

#endif
