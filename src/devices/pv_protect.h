/*
 * pv_protect.h - guest-set page protection, the device half (pv_protect.c;
 * the guest's contract is abi/pv_protect.h, docs/memory.md).
 *
 * The device owns the guest's requests, the table of protected ranges,
 * the fault records and the wait for the guest handler's answer.  It
 * enforces nothing itself: a backend (the VMM's src/vmm/mem_protect.c)
 * makes KVM's view of RAM match the table and sends the vCPUs' MMIO exits
 * at RAM addresses to pv_protect_access.  The backend is the device's
 * whole view of the machine beyond struct device_host.
 */
#ifndef SHOAL_DEVICES_PV_PROTECT_H
#define SHOAL_DEVICES_PV_PROTECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "devices/device_host.h"

struct device;

struct pv_protect_range {
	uint64_t gpa, len;           /* 4 KiB aligned, inside one RAM region */
	int mode;                    /* PV_PROTECT_READONLY or _NOACCESS */
};

struct pv_protect_backend {
	void *opaque;
	/* Keep every other vCPU out of the guest (on), or let them go (off).
	 * Called on a vCPU thread without the device's lock. */
	void (*hold)(void *opaque, bool on);
	/* Make the memory slots match ranges[0..n) (sorted by gpa), while
	 * held.  0, or -1 with the old layout back in place (`why` says). */
	int (*set)(void *opaque, const struct pv_protect_range *r, int n, char *why, size_t len);
	/* The calling vCPU waits outside the guest (begin), or is done
	 * waiting (end: returns once no pause or hold asks it to stay out). */
	void (*wait)(void *opaque, bool begin);
	/* The machine is stopping: a waiting fault gives up. */
	bool (*stopping)(void *opaque);
};

/* Build the device ("pv-protect", port PV_PROTECT_PORT) on `host` and
 * return it in *out; the host owns it.  0, or -1 with `e`. */
int pv_protect_create(const struct device_host *host, const struct pv_protect_backend *be,
		      struct device **out, struct error *e);

/* A vCPU's MMIO exit at `gpa` (vcpu `cpu`, `len` bytes at `data`).
 * Returns false when [gpa, gpa+len) is not guest RAM (a device's MMIO);
 * otherwise handles it: a protected page is a fault for the guest's
 * handler, an unprotected one (a range removed meanwhile) is done on RAM. */
bool pv_protect_access(struct device *d, int cpu, uint64_t gpa, void *data, int len,
		       bool write);

/* Ranges protected plus faults in flight (0: nothing a snapshot would
 * lose); `why` gets a sentence when not 0. */
int pv_protect_busy(struct device *d, char *why, size_t len);

#endif
