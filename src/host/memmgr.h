/*
 * memmgr.h - shoald's host memory manager: proportional shares with an
 * idle-memory tax, reclaiming through each VM's balloon (issue 13 item 3;
 * docs/memory.md "Shares and the idle-memory tax").
 */
#ifndef SHOAL_HOST_MEMMGR_H
#define SHOAL_HOST_MEMMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "host/hostutil.h"

struct host;

#define MEMMGR_DEFAULT_SHARES 1000
#define MEMMGR_DEFAULT_TAU    0.75
#define MEMMGR_QUANTUM        (1ull << 20)

/* One VM as the allocation sees it. */
struct memmgr_in {
	uint64_t memory;            /* its RAM */
	uint64_t active;            /* bytes of it in active use (estimate) */
	uint32_t shares;            /* > 0 */
	uint64_t min, max;          /* bounds of its allocation, min <= max <= memory */
	bool managed;               /* has a balloon: else its allocation is its memory */
};

struct memmgr_out {
	uint64_t alloc;             /* bytes it may keep: memory - balloon target */
	double rho;                 /* shares per MiB, idle MiB taxed (memmgr_rho) */
	int rank;                   /* 1 for the VM reclaimed from first, 2 ... ; 0: none */
};

/* ESX's shares-per-page ratio with the idle tax, per MiB here:
 * rho = S / (P * (f + k (1 - f))), k = 1 / (1 - tau), with f = A / P (A
 * capped at P), that is S / (A + k (P - A)) in MiB.  Larger is richer:
 * memory is taken first from the smallest.  P 0: infinite (HUGE_VAL). */
double memmgr_rho(uint32_t shares, uint64_t alloc, uint64_t active, double tau);

/* The allocation: every managed VM starts at its max (the others at their
 * memory); while their sum is over `budget`, take a quantum from the
 * managed VM with the smallest rho that is above its min (ties: the first
 * in the array).  Stops when the sum fits or every VM is at its min.
 * Pure: no I/O, for tests. */
void memmgr_allocate(const struct memmgr_in *in, struct memmgr_out *out, size_t n,
		     uint64_t budget, double tau);

/* Start the manager thread (a budget of 0: nothing is started), every
 * `period_ms`.  0, or -1 with `e`. */
int memmgr_start(struct host *h, uint64_t budget, double tau, unsigned period_ms,
		 struct api_err *e);
void memmgr_stop(struct host *h);

/* What the manager last decided for VM `name` ("memory_manager" in vm
 * show's stats), or NULL when it is off or does not manage the VM. */
json_t *memmgr_vm_json(struct host *h, const char *name);

/* The manager's Prometheus series, malloc'd text ("" when off). */
char *memmgr_prom_text(struct host *h);

#endif
