/*
 * vcpu.c - one thread per vCPU and the run loop.
 *
 * The run loop is one switch on the exit reason (as kvmtool's kvm-cpu.c).
 * Port I/O and MMIO go to the buses; everything the guest can do that
 * Shoal does not handle stops the VM with a distinct status and a
 * one-line reason, never a crash of the host process:
 *
 *   KVM_EXIT_IO, KVM_EXIT_MMIO   device access (string I/O: `count` items)
 *   KVM_EXIT_SHUTDOWN            triple fault          -> EXIT_TRIPLE_FAULT
 *   KVM_EXIT_INTERNAL_ERROR      emulation failure...  -> EXIT_KVM_INTERNAL
 *   KVM_EXIT_FAIL_ENTRY          bad guest state       -> EXIT_KVM_INTERNAL
 *   KVM_EXIT_SYSTEM_EVENT        PSCI-style shutdown/reset -> EXIT_POWEROFF
 *   KVM_EXIT_HLT                 (only without an in-kernel LAPIC) ignored
 *   anything else                                      -> EXIT_GUEST_BAD
 *
 * Only the boot vCPU gets registers from the boot protocol.  The others stay
 * in KVM's wait-for-SIPI state until the guest starts them through its LAPIC,
 * as on real hardware.  vcpu_kick() sets immediate_exit and signals the
 * thread so a KVM_RUN in progress (or about to start) returns at once.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "vmm/mem_protect.h"
#include "vmm/mtrace.h"
#include "vmm/vcpu_throttle.h"
#include "vmm/vm.h"
#include "vmm/mce.h"

#define MSR_IA32_MISC_ENABLE      0x000001a0
#define MSR_MTRR_DEF_TYPE         0x000002ff
#define MISC_ENABLE_FAST_STRING   0x1
#define APIC_LVT_LINT0            0x350
#define APIC_LVT_LINT1            0x360
#define APIC_MODE_EXTINT          0x7
#define APIC_MODE_NMI             0x4

static int vcpu_set_cpuid(struct vm *vm, struct vcpu *v, struct error *e)
{
	struct kvm_cpuid2 *host = cpuid_alloc(), *out = cpuid_alloc();
	int khz, rc = -1;

	if (!host || !out) {
		error_set(e, EXIT_HOST, "out of memory");
		goto done;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, host) < 0) {
		error_set(e, EXIT_NOKVM, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
		goto done;
	}
	khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (cpuid_build(host, vm->tmpl, v->index, vm->ncpus, khz > 0 ? (uint32_t)khz : 0, out, e))
		goto done;
	if (ioctl(v->fd, KVM_SET_CPUID2, out) < 0) {
		error_set(e, EXIT_NOKVM, "vcpu%d: KVM_SET_CPUID2: %s", v->index, strerror(errno));
		goto done;
	}
	rc = 0;
done:
	free(host);
	free(out);
	return rc;
}

/* LINT0 as ExtINT (the PIC) and LINT1 as NMI, as a BIOS leaves them. */
static void vcpu_setup_lapic(struct vcpu *v)
{
	struct kvm_lapic_state la;
	uint32_t *lint0 = (uint32_t *)&la.regs[APIC_LVT_LINT0];
	uint32_t *lint1 = (uint32_t *)&la.regs[APIC_LVT_LINT1];

	if (ioctl(v->fd, KVM_GET_LAPIC, &la) < 0)
		return;
	*lint0 = (*lint0 & ~0x700u) | (APIC_MODE_EXTINT << 8);
	*lint1 = (*lint1 & ~0x700u) | (APIC_MODE_NMI << 8);
	if (ioctl(v->fd, KVM_SET_LAPIC, &la) < 0)
		log_debug("vcpu%d: KVM_SET_LAPIC: %s", v->index, strerror(errno));
}

/* MSRs a BIOS would leave set: write-back default memory type, fast strings. */
static void vcpu_setup_msrs(struct vcpu *v)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + 2 * sizeof(struct kvm_msr_entry));

	if (!m)
		return;
	m->nmsrs = 2;
	m->entries[0] = (struct kvm_msr_entry){ .index = MSR_IA32_MISC_ENABLE, .data = MISC_ENABLE_FAST_STRING };
	m->entries[1] = (struct kvm_msr_entry){ .index = MSR_MTRR_DEF_TYPE, .data = 0x806 };
	if (ioctl(v->fd, KVM_SET_MSRS, m) != 2)
		log_debug("vcpu%d: KVM_SET_MSRS: not all set (ignored)", v->index);
	free(m);
}

static int vcpu_setup_boot_regs(struct vm *vm, struct vcpu *v, struct error *e)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return error_set(e, EXIT_NOKVM, "vcpu0: cannot read registers: %s", strerror(errno));
	if (boot_setup_bsp(&vm->mem, &vm->boot, &regs, &sregs, e))
		return -1;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return error_set(e, EXIT_NOKVM, "vcpu0: cannot set boot registers: %s", strerror(errno));
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		log_debug("vcpu0: KVM_SET_FPU: %s (ignored)", strerror(errno));
	return 0;
}

int vcpu_create(struct vm *vm, struct vcpu *v, int index, struct error *e)
{
	int sz;

	v->vm = vm;
	v->index = index;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (v->fd < 0)
		return error_set(e, EXIT_RESOURCE, "vcpu%d: KVM_CREATE_VCPU: %s", index, strerror(errno));
	sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0)
		return error_set(e, EXIT_NOKVM, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	v->run_size = (size_t)sz;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return error_set(e, EXIT_HOST, "vcpu%d: mmap kvm_run: %s", index, strerror(errno));
	}
	if (vcpu_set_cpuid(vm, v, e))
		return -1;
	vcpu_setup_lapic(v);
	vcpu_setup_msrs(v);
	if (vm_mce_setup_vcpu(vm, v))   /* machine-check banks, as QEMU (vmm/mce.h) */
		log_debug("vcpu%d: KVM_X86_SETUP_MCE: %s (no machine checks)", index, strerror(errno));
	if (index == 0 && !vm->restoring)   /* a restore sets every register itself */
		return vcpu_setup_boot_regs(vm, v, e);
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd > 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

void vcpu_kick(struct vcpu *v)
{
	if (v->run)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->started)
		pthread_kill(v->thread, SIGUSR1);
}

void vcpu_dump_regs(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		log_error("vcpu%d: cannot read registers for the dump: %s", v->index, strerror(errno));
		return;
	}
	fprintf(stderr,
		"vcpu%d registers:\n"
		" rip %016llx rsp %016llx rflags %016llx\n"
		" rax %016llx rbx %016llx rcx %016llx rdx %016llx\n"
		" rsi %016llx rdi %016llx rbp %016llx\n"
		" r8  %016llx r9  %016llx r10 %016llx r11 %016llx\n"
		" r12 %016llx r13 %016llx r14 %016llx r15 %016llx\n"
		" cr0 %016llx cr2 %016llx cr3 %016llx cr4 %016llx efer %016llx\n"
		" cs %04x (base %llx dpl %u l %u db %u) ss %04x ds %04x\n"
		" gdt %llx/%x idt %llx/%x\n",
		v->index, r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx,
		r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
		s.cr0, s.cr2, s.cr3, s.cr4, s.efer,
		s.cs.selector, s.cs.base, s.cs.dpl, s.cs.l, s.cs.db, s.ss.selector, s.ds.selector,
		s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
}

static void vcpu_handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool write = run->io.direction == KVM_EXIT_IO_OUT;

	for (uint32_t i = 0; i < run->io.count; i++) {
		bus_io(&v->vm->iobus, run->io.port, data, run->io.size, write);
		data += run->io.size;
	}
}

static const char *internal_suberror(uint32_t s)
{
	switch (s) {
	case KVM_INTERNAL_ERROR_EMULATION: return "emulation failure: an instruction KVM cannot emulate";
	case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering an exception";
	case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
	default: return "unknown";
	}
}

static uint64_t vcpu_rip(struct vcpu *v)
{
	struct kvm_regs r;

	return ioctl(v->fd, KVM_GET_REGS, &r) < 0 ? 0 : r.rip;
}

/* Handle one exit; returns false when the vCPU must stop. */
static bool vcpu_handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct vm *vm = v->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		if (vm_protect_mmio(v))   /* RAM: a guest-set protection fault */
			return true;
		bus_mmio(&vm->mmiobus, run->mmio.phys_addr, run->mmio.data,
			 (int)run->mmio.len, run->mmio.is_write);
		return true;
	case KVM_EXIT_HLT:
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		vcpu_dump_regs(v);
		vm_stop(vm, EXIT_TRIPLE_FAULT, "vcpu%d: guest triple fault at rip 0x%llx",
			v->index, (unsigned long long)vcpu_rip(v));
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vcpu_dump_regs(v);
		vm_stop(vm, EXIT_KVM_INTERNAL, "vcpu%d: KVM internal error %u (%s) at rip 0x%llx",
			v->index, run->internal.suberror, internal_suberror(run->internal.suberror),
			(unsigned long long)vcpu_rip(v));
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_dump_regs(v);
		vm_stop(vm, EXIT_KVM_INTERNAL, "vcpu%d: KVM could not enter the guest (reason 0x%llx)",
			v->index, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		vm_stop(vm, EXIT_POWEROFF, "vcpu%d: guest system event %u (shutdown or reset)",
			v->index, run->system_event.type);
		return false;
	default:
		vcpu_dump_regs(v);
		vm_stop(vm, EXIT_GUEST_BAD, "vcpu%d: unhandled KVM exit reason %u",
			v->index, run->exit_reason);
		return false;
	}
}

/* ---- auto-converge's throttle (vmm/vcpu_throttle.h) ---- */

static atomic_int throttle_pct;

void vcpu_throttle_set(int pct)
{
	atomic_store(&throttle_pct, pct < 0 ? 0 : pct > VCPU_THROTTLE_MAX ? VCPU_THROTTLE_MAX : pct);
}

int vcpu_throttle_get(void)
{
	return atomic_load(&throttle_pct);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* After each slice run (*slice: when it began, 0 when unthrottled), sleep
 * the throttle's share; a kick (pause, stop) ends the sleep early. */
static void vcpu_throttle(struct vm *vm, uint64_t *slice)
{
	const uint64_t slice_ns = VCPU_THROTTLE_SLICE_MS * 1000000ULL;
	int pct = atomic_load(&throttle_pct);
	uint64_t now, until;

	if (!pct) {
		*slice = 0;
		return;
	}
	now = mono_ns();
	if (!*slice || now - *slice < slice_ns) {
		if (!*slice)
			*slice = now;
		return;
	}
	/* in pieces of a slice at most: a kick that came just before a
	 * piece began is seen at the next one */
	until = now + slice_ns * (uint64_t)pct / (uint64_t)(100 - pct);
	while (!atomic_load(&vm->pause_requested) && !atomic_load(&vm->stopping) &&
	       atomic_load(&throttle_pct) && (now = mono_ns()) < until) {
		uint64_t d = until - now < slice_ns ? until - now : slice_ns;
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)d };

		nanosleep(&ts, NULL);
	}
	*slice = mono_ns();
}

/*
 * Finish the port or MMIO access of the last exit before the vCPU parks.
 * KVM completes an exit's access (a read's value into its register, the
 * instruction's end, a string access's next item) only at the next KVM_RUN;
 * until then the registers a snapshot or a migration reads are those of the
 * instruction not yet done, and the restored guest would do the access a
 * second time (a read-to-clear register read twice loses its first value).
 * KVM_RUN with immediate_exit set completes it and returns EINTR before any
 * guest instruction runs (KVM's API document, KVM_EXIT_IO).  A string
 * access may need another exit for its next item: handled, then again.
 */
static bool vcpu_complete_access(struct vcpu *v)
{
	for (int i = 0; i < 4096; i++) {
		int r;

		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		r = ioctl(v->fd, KVM_RUN, 0);
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (r < 0)
			return true;           /* EINTR: nothing left pending */
		v->exits++;
		if (!vcpu_handle_exit(v))
			return false;
	}
	return true;
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	char name[16];
	uint64_t slice = 0;

	snprintf(name, sizeof(name), "vcpu%d", v->index);
	pthread_setname_np(pthread_self(), name);
	pthread_getcpuclockid(pthread_self(), &v->cpu_clock);
	mtrace_first(MTRACE_VCPU_START, "dst.vcpu_start");
	seccomp_thread_enter(SECCOMP_VCPU);   /* before the guest runs */
	vm_mce_thread(v);
	while (!atomic_load(&vm->stopping)) {
		if (atomic_load(&vm->pause_requested) || atomic_load(&vm->hold)) {
			if (!vcpu_complete_access(v))
				break;
			vm_park_vcpu(vm);
			__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		vcpu_throttle(vm, &slice);
		mtrace_first(MTRACE_KVM_RUN, "dst.kvm_run");
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			mtrace_first(MTRACE_RUN_EXIT, "dst.first_exit");
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				vm_mce_deliver(v);   /* a memory error's machine check */
				continue;
			}
			vm_stop(vm, EXIT_HOST, "vcpu%d: KVM_RUN: %s", v->index, strerror(errno));
			break;
		}
		mtrace_first(MTRACE_RUN_EXIT, "dst.first_exit");
		v->exits++;
		if (!vcpu_handle_exit(v))
			break;
	}
	return NULL;
}
