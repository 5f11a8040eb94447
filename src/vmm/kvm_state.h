/*
 * kvm_state.h - save and restore every piece of KVM state of a VM (the
 * in-kernel irqchip, PIT and clock, and each vCPU's registers, FPU, MSRs,
 * LAPIC and events), for snapshots.  Guest memory and device models are
 * saved elsewhere (guest_mem, vm_save_devices); this is what only KVM holds.
 *
 * The buffer is base/state.h sections, one "kvm-vm" then "vcpu0",
 * "vcpu1", ... in order, each version 1.  A section's payload is a list of
 * records, each
 *
 *   u32 tag (four ASCII bytes, first byte lowest) | u32 length | bytes
 *
 * where the bytes of most records are the KVM ioctl structure as KVM
 * returns it (x86-64, little-endian, <linux/kvm.h> layout):
 *
 *   kvm-vm  "CLCK"  u64 kvmclock ns | u32 KVM_GET_CLOCK flags (12 bytes)
 *           "PICM"  struct kvm_pic_state      (KVM_GET_IRQCHIP, PIC master)
 *           "PICS"  struct kvm_pic_state      (PIC slave)
 *           "IOAP"  struct kvm_ioapic_state
 *           "PIT2"  struct kvm_pit_state2
 *   vcpuN   "TSCK"  u32 TSC kHz (0: KVM could not say)
 *           "REGS"  struct kvm_regs        "SREG"  struct kvm_sregs
 *           "XSAV"  the KVM_GET_XSAVE(2) area (4096 bytes or more), or
 *           "FPU "  struct kvm_fpu (a host without XSAVE)
 *           "XCRS"  struct kvm_xcrs (only where KVM has KVM_CAP_XCRS)
 *           "LAPI"  struct kvm_lapic_state "DBGR"  struct kvm_debugregs
 *           "EVNT"  struct kvm_vcpu_events "MPST"  struct kvm_mp_state
 *           "MSRS"  u32 count | count x struct kvm_msr_entry (16 bytes:
 *                   u32 index, u32 reserved 0, u64 data)
 *
 * A restore takes the records in any order within a section, each at most
 * once; every record above is required but XCRS, and exactly one of XSAV
 * and FPU.  A record or section it does not know is refused (version 1
 * has no optional parts).
 */
#ifndef SHOAL_VMM_KVM_STATE_H
#define SHOAL_VMM_KVM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct state_writer;
struct error;

#define KVM_STATE_VERSION 1

/* A record tag from its four characters: KVM_STATE_TAG('R','E','G','S'). */
#define KVM_STATE_TAG(a, b, c, d) \
	((uint32_t)(uint8_t)(a) | (uint32_t)(uint8_t)(b) << 8 | \
	 (uint32_t)(uint8_t)(c) << 16 | (uint32_t)(uint8_t)(d) << 24)

/* Save all KVM state of a VM whose vCPUs are all out of KVM_RUN (paused
 * with vm_pause, or never run) as the sections above, appended to `w`.
 * An MSR that KVM lists but KVM_GET_MSRS will not read is left out.
 * Returns 0, or -1 with `e` filled (EXIT_HOST, or EXIT_NOKVM where KVM
 * lacks an ioctl), naming the vCPU and the ioctl.  A VM that is running
 * is refused (EXIT_HOST). */
int kvm_state_save(struct vm *vm, struct state_writer *w, struct error *e);

/* Restore such a buffer into a VM of the same shape (the same vCPU count)
 * that has been created but not run, or is paused.  The buffer is
 * untrusted: it is parsed and checked whole before anything is applied,
 * and anything wrong in it (a length, a section or record name, a vCPU
 * that this VM lacks or a missing one, an MSR count, an MSR this host's
 * KVM does not list, an XSAVE area larger than this host's) is refused
 * with EXIT_GUEST_BAD and a message naming the section and the problem,
 * the VM untouched.  Should KVM itself refuse a value part-way through,
 * the state read just before is put back (best effort) and -1 returned.
 * Order: each vCPU (TSC kHz, regs, sregs, XSAVE, XCRs, LAPIC, MSRs, debug
 * registers, events, MP state), then the irqchips, PIT and clock; see
 * kvm_state.c for why. */
int kvm_state_restore(struct vm *vm, const void *buf, size_t len, struct error *e);

/* The same into a VM that has never run (vm_run not called) and that the
 * caller destroys if this fails, as a migration's destination does: the
 * state is not read first to be put back, which halves the ioctls of a
 * restore.  Should KVM refuse a value part-way, -1 says the VM is left
 * half restored.  A VM whose vCPUs have run is refused (EXIT_HOST). */
int kvm_state_restore_fresh(struct vm *vm, const void *buf, size_t len, uint64_t saved_rt,
			    struct error *e);

/* ... where `saved_rt` is not 0: the host CLOCK_REALTIME (ns) at which the
 * source saved this state, in a live migration.  Each vCPU's IA32_TSC (at
 * its saved TSC kHz) and the kvmclock are restored advanced by the
 * realtime elapsed since then, so that the guest's clocks run on through
 * the pause (KVM's documented migration of the TSC, with the two hosts'
 * realtime clocks in agreement), by at most this much: */
#define KVM_STATE_ADVANCE_MAX_NS (10ull * 1000000000ull)

/* Ask KVM now what every save and restore needs to know of it (the XSAVE
 * size, XCRs, the MSR list): it is asked once per process and kept, so
 * that a migration does it before the pause.  0, or -1 with `e`. */
int kvm_state_prepare(struct vm *vm, struct error *e);

/* The checks kvm_state_restore makes of `buf` before it touches KVM, for
 * a VM of `ncpus` vCPUs on a host whose KVM has an XSAVE area of
 * `xsave_size` bytes (0: none, the FPU instead), XCRs or not, and lists the
 * `nmsrs` MSRs `msrs`: 0 when a restore would go on to apply it, or -1
 * with the error it would give.  Nothing is applied; no KVM is needed
 * (for the fuzzer, fuzz/fuzz_snapshot.c). */
int kvm_state_check(int ncpus, uint32_t xsave_size, bool xcrs, const uint32_t *msrs,
		    uint32_t nmsrs, const void *buf, size_t len, struct error *e);

/* A short human list of what is saved, for docs (a static string). */
const char *kvm_state_what(void);

#endif
