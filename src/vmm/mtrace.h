/*
 * mtrace.h - the live migration's trace: where a migrated guest's pause
 * goes, on the host's clock (docs/migration.md "Tracing the switch").
 *
 * With SHOAL_MIGRATE_TRACE=1 in its environment the VMM writes one line
 * to stderr at each point of a migration's switch, at both ends:
 *
 *   shoal: migrate-trace: POINT US
 *
 * US is CLOCK_MONOTONIC in microseconds: the same clock for every
 * process of a host, so the source's and the destination's lines, and
 * any outside observer's stamps (bench/tickstamp), fall on one time line.
 * Each line is one write(2), unbuffered, as the log's are.
 *
 * Most points are in state/migrate.c, called where they happen.  A few
 * are in the VMM's own paths (the vCPU loop, the console, vm_run), and
 * only the first time after the destination's go-ahead: the destination
 * arms them (mtrace_arm) and each fires once (mtrace_first).  Off, the
 * trace costs one relaxed atomic load in those paths and nothing else; it
 * never changes what the VMM does.
 */
#ifndef SHOAL_VMM_MTRACE_H
#define SHOAL_VMM_MTRACE_H

#include <stdatomic.h>
#include <stdbool.h>

/* The one-shot points, armed at the go-ahead (the destination's when it
 * reads it, the source's once it is sent). */
enum {
	MTRACE_VM_RUN   = 1u << 0,   /* "dst.vm_run": the main thread enters vm_run */
	MTRACE_LOOP     = 1u << 1,   /* "dst.loop_started": its event loop thread started */
	MTRACE_THREADS  = 1u << 2,   /* "dst.vcpu_threads": the vCPU threads created */
	MTRACE_VCPU_START = 1u << 3, /* "dst.vcpu_start": a vCPU thread begins */
	MTRACE_KVM_RUN  = 1u << 4,   /* "dst.kvm_run": a vCPU's first KVM_RUN entry */
	MTRACE_RUN_EXIT = 1u << 5,   /* "dst.first_exit": the first KVM_RUN return */
	MTRACE_CONSOLE  = 1u << 6,   /* "dst.console": the first console write, before it */
	MTRACE_ALL      = (1u << 7) - 1,
	/* the source's, armed once its go-ahead is sent: its VM's teardown */
	MTRACE_DESTROY  = 1u << 7,   /* "src.destroy": vm_destroy begins */
	MTRACE_DESTROYED = 1u << 8,  /* "src.destroyed": vm_destroy is done */
};

extern atomic_uint mtrace_armed;

/* Whether SHOAL_MIGRATE_TRACE=1 (read once). */
bool mtrace_on(void);
/* When on: one line, POINT and now. */
void mtrace(const char *point);
/* When on: arm the one-shot points in `bits`. */
void mtrace_arm(unsigned bits);
/* The one-shot point `bit` fired: its line, if it was still armed. */
void mtrace_fire(unsigned bit, const char *point);

static inline void mtrace_first(unsigned bit, const char *point)
{
	if (__builtin_expect(atomic_load_explicit(&mtrace_armed, memory_order_relaxed) & bit, 0))
		mtrace_fire(bit, point);
}

#endif
