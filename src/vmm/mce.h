/*
 * mce.h - uncorrected memory errors in guest RAM: the VMM's SIGBUS handler
 * and machine checks delivered to the guest (issue 13 item 5,
 * docs/memory.md "Memory errors").
 *
 * When the host kernel finds a page of guest RAM poisoned (a hardware
 * memory error, or madvise(MADV_HWPOISON) in a test), the thread that
 * touches it gets SIGBUS with BUS_MCEERR_AR (a vCPU: KVM sends it from
 * KVM_RUN, which then returns EINTR; a device thread: its own load), or
 * any thread BUS_MCEERR_AO (an error found before use, early-kill only).
 * vm_mce_enable installs a handler that asks the memory layer above
 * (mem/page_hash.c) to put the page's good contents back; when it cannot,
 * the page is replaced with zeros (so that no access loops on it) and the
 * guest is told with a machine check: KVM_X86_SET_MCE on the vCPU that
 * touched it (vCPU 0 for a device thread or an AO), as QEMU does.  The
 * VMM goes on either way.  A SIGBUS that is not a memory error in guest
 * RAM is left to the default action (the process dies, as before).
 *
 * One VM per process: the handler's state is process-wide.
 */
#ifndef SHOAL_VMM_MCE_H
#define SHOAL_VMM_MCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct vm;
struct vcpu;
struct json_t;

/* What the memory layer made of an error at host page `page`. */
enum vm_mce_result {
	VM_MCE_RECOVERED,     /* the page holds its good contents again */
	VM_MCE_WRITTEN,       /* written since its copy was taken: no good copy */
	VM_MCE_NO_COPY,       /* never had a copy (not restored from a file) */
	VM_MCE_MISMATCH,      /* the copy does not match the page's hash */
	VM_MCE_FAILED,        /* the copy is good but the page could not be replaced */
	VM_MCE_NRESULTS
};

/* Called in signal context on the thread that got the SIGBUS (serialised:
 * one call at a time).  May use syscalls only (no malloc, no stdio). */
typedef enum vm_mce_result (*vm_mce_fn)(void *opaque, uint8_t *page, int code);

/* Set every vCPU's machine-check banks up (KVM_X86_SETUP_MCE: MCG_CTL_P,
 * MCG_SER_P, the banks KVM has, up to 10) and install the SIGBUS handler
 * with `fn` (NULL: every error is a machine check).  Before vm_run.  0, or
 * -1 with `e` (no KVM_CAP_MCE). */
int vm_mce_enable(struct vm *vm, vm_mce_fn fn, void *opaque, struct error *e);

/* KVM_X86_SETUP_MCE on one vCPU at its creation (every VM, as QEMU
 * does), so that snapshots carry the same machine-check MSRs with or
 * without --mem-recovery.  0, or -1 when KVM has none (ignored). */
int vm_mce_setup_vcpu(struct vm *vm, struct vcpu *v);

/* Back to the default SIGBUS action (the VM is going away).  Idempotent. */
void vm_mce_disable(void);

/* A vCPU thread says who it is (at its start), and after KVM_RUN returned
 * EINTR injects the machine checks pending for it.  Both no-ops unless
 * vm_mce_enable ran. */
void vm_mce_thread(struct vcpu *v);
void vm_mce_deliver(struct vcpu *v);

/* Counters for the `metrics` reply: "memory_errors" {events, recovered,
 * machine_checks, written, no_copy, hash_mismatch, replace_failed,
 * inject_failed}; nothing when not enabled. */
void vm_mce_metrics(struct json_t *root);
uint64_t vm_mce_count(enum vm_mce_result r);

#endif
