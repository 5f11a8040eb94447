/*
 * vcpu_throttle.h - slowing the vCPUs down for live migration's
 * auto-converge (state/migrate.c, docs/migration.md): at `pct` percent
 * each vCPU thread, after running a slice of VCPU_THROTTLE_SLICE_MS,
 * sleeps slice * pct / (100 - pct) outside KVM_RUN (QEMU's
 * cpu-throttle), so the guest gets (100 - pct) % of its time, and a guest
 * that dirties memory as fast as it runs dirties that much less.
 *
 * Invariants: the sleep ends at once when the VM pauses or stops (a
 * pause does not wait for a throttled vCPU: vm_pause's kick interrupts
 * it), or when the throttle goes back to 0.  The vCPU only sees the
 * throttle when it leaves KVM_RUN, so whoever throttles kicks the vCPUs
 * every slice (migrate.c does, from the event loop) - a guest that never
 * exits would otherwise never be slowed.  One VM per process: the
 * throttle is the process's.  The guest cannot affect any of it; it only
 * runs slower.
 */
#ifndef SHOAL_VMM_VCPU_THROTTLE_H
#define SHOAL_VMM_VCPU_THROTTLE_H

#define VCPU_THROTTLE_SLICE_MS 10
#define VCPU_THROTTLE_MAX      99

/* 0 (off) to VCPU_THROTTLE_MAX percent of each vCPU's time asleep. */
void vcpu_throttle_set(int pct);
int vcpu_throttle_get(void);

#endif
