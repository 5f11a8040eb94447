/*
 * kvm_state.c - the KVM half of a snapshot: what only the kernel holds.
 *
 * A VM's state lives in three places: guest memory (a memfd, saved by
 * mapping or copying it), the device models (vm_save_devices) and KVM.
 * This file reads and writes the third: per VM the kvmclock, the in-kernel
 * PICs and IOAPIC and the PIT; per vCPU the registers, the FPU/XSAVE area,
 * the XCRs, the MSRs, the local APIC, the debug registers, the pending
 * events, the MP state and the TSC frequency.  The format is in
 * kvm_state.h: base/state.h sections of tagged, length-prefixed records,
 * most of them a KVM ioctl structure as KVM hands it out.
 *
 * Invariants
 *
 *   - Nothing here runs while a vCPU is in KVM_RUN: both calls refuse a VM
 *     whose started vCPUs are not all parked by vm_pause.  (KVM serializes
 *     each vCPU's ioctls, but a state read while a vCPU runs is torn, and
 *     KVM_{GET,SET}_VCPU_EVENTS are unsafe while another vCPU runs.)
 *   - Saving reads KVM_GET_MP_STATE first (it makes the LAPIC accept
 *     pending INIT/SIPI, which changes state the later reads see) and
 *     KVM_GET_VCPU_EVENTS last, as Firecracker does.
 *   - The MSRs saved are exactly KVM_GET_MSR_INDEX_LIST, less those
 *     KVM_GET_MSRS refuses: KVM_GET_MSRS stops at the first MSR it cannot
 *     read and returns how many it read, so the loop skips that one and
 *     goes on (as Cloud Hypervisor does).
 *   - CPUID is not saved: vcpu_create builds it from the configuration,
 *     and a restore goes into a VM built from the same configuration.
 *
 * Restore order, per vCPU, and why (KVM's ioctls have side effects on
 * each other; the order is Firecracker's vstate/vcpu/x86_64.rs and QEMU's
 * kvm_arch_put_registers reconciled):
 *
 *   1. TSC kHz     before any TSC value, which is scaled by it.
 *   2. REGS        KVM_SET_REGS drops a pending exception, so it goes
 *                  before KVM_SET_VCPU_EVENTS, which restores it.
 *   3. SREGS       restores CR0/CR3/CR4/EFER and the APIC base MSR, which
 *                  the LAPIC restore depends on (enabled, x2APIC mode).
 *   4. XSAVE/FPU, then XCRS.
 *   5. LAPIC       after SREGS (APIC base), before the MSRs: KVM only
 *                  takes IA32_TSC_DEADLINE when the LAPIC is in TSC-deadline
 *                  mode.
 *   6. MSRS        IA32_TSC first and IA32_TSC_DEADLINE last, so the
 *                  deadline is measured against the restored TSC.
 *   7. DEBUGREGS
 *   8. EVENTS      pending/injected exception, interrupt, NMI, SMM, after
 *                  everything that may clear or queue one of those.
 *   9. MP_STATE    last: KVM_SET_SREGS may turn a BSP from INIT_RECEIVED
 *                  to RUNNABLE, and KVM_SET_MP_STATE checks the SMM and
 *                  latched-INIT state that EVENTS restores (QEMU's order).
 *
 * then the VM-wide state, after every vCPU (as Firecracker does): the
 * IOAPIC restore re-delivers lines it holds asserted to the LAPICs, which
 * must already hold their own state; the PIT after the irqchips, because
 * its restarted timer injects through them; the kvmclock last, nearest
 * to the resume (it is restored with flags 0: the saved flags such as
 * KVM_CLOCK_TSC_STABLE describe the old host and KVM_SET_CLOCK refuses
 * them).
 *
 * A live migration's restore (kvm_state_restore_fresh with the source's
 * realtime at the save) writes each IA32_TSC and the kvmclock advanced by
 * the realtime elapsed since, at most 10 s (advance()): the guest's clocks
 * run on through the pause instead of stopping for it.  A snapshot's
 * restore goes on from the saved values.
 *
 * What a hostile snapshot may not do.  The buffer is untrusted input.
 * Restore parses and checks all of it before it touches the VM: section
 * framing and lengths (base/state.h), names ("kvm-vm" once, "vcpuN" once
 * for each N below this VM's vCPU count, nothing else, no NUL inside a
 * name), versions, record tags and exact record sizes, MSR counts (at
 * most what this host's KVM lists, and the record's length must match),
 * MSR indexes (only ones this host's KVM lists, none twice, reserved field
 * zero), the XSAVE area's size (4096 bytes up to this host's size, so a
 * larger area never overruns the buffer KVM reads), the XCR count.  A
 * failure there is EXIT_BADSTATE with the section and the problem named,
 * and the VM unchanged.  So a snapshot file cannot make us read or write
 * out of bounds, allocate more than this host's sizes, or set an MSR KVM
 * would not save (a feature MSR, say).  The values themselves are KVM's
 * to check, as they are from any userspace: what passes can only make the
 * guest run in some state its own code could also have reached, give or
 * take APIC ids and MP states.  When KVM refuses a value part-way, the
 * state read just before the restore is written back, best effort.
 *
 * Not saved: nested virtualization state (KVM_GET_NESTED_STATE), because
 * cpuid.c hides VMX and SVM from every guest, so there is none; SREGS2's
 * PAE PDPTRs (KVM reloads them from guest memory on KVM_SET_SREGS, which
 * only differs for a 32-bit PAE guest that changed its PDPT without
 * reloading CR3); Hyper-V and Xen state (not offered); the GSI routing,
 * irqfds and ioeventfds, which the devices re-register when they restore.
 */
#include "vmm/kvm_state.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "base/error.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/state.h"
#include "vmm/vm.h"

#ifndef KVM_CAP_XSAVE2
#define KVM_CAP_XSAVE2 208
#endif
#ifndef KVM_GET_XSAVE2
#define KVM_GET_XSAVE2 _IOR(KVMIO, 0xcf, struct kvm_xsave)
#endif

#define MSR_IA32_TSC            0x00000010
#define MSR_IA32_TSC_DEADLINE   0x000006e0

#define KS_MSR_CHUNK      255           /* KVM takes fewer than 256 per call */
#define KS_MAX_MSRS       4096          /* ceiling, whatever the host lists */
#define KS_LEGACY_XSAVE   ((uint32_t)sizeof(struct kvm_xsave))
#define KS_MAX_XSAVE      (1u << 20)    /* ceiling on KVM_CAP_XSAVE2's size */
#define KS_VM_SECTION     "kvm-vm"

enum {
	T_CLCK = KVM_STATE_TAG('C', 'L', 'C', 'K'),
	T_PICM = KVM_STATE_TAG('P', 'I', 'C', 'M'),
	T_PICS = KVM_STATE_TAG('P', 'I', 'C', 'S'),
	T_IOAP = KVM_STATE_TAG('I', 'O', 'A', 'P'),
	T_PIT2 = KVM_STATE_TAG('P', 'I', 'T', '2'),
	T_TSCK = KVM_STATE_TAG('T', 'S', 'C', 'K'),
	T_REGS = KVM_STATE_TAG('R', 'E', 'G', 'S'),
	T_SREG = KVM_STATE_TAG('S', 'R', 'E', 'G'),
	T_XSAV = KVM_STATE_TAG('X', 'S', 'A', 'V'),
	T_FPU  = KVM_STATE_TAG('F', 'P', 'U', ' '),
	T_XCRS = KVM_STATE_TAG('X', 'C', 'R', 'S'),
	T_LAPI = KVM_STATE_TAG('L', 'A', 'P', 'I'),
	T_DBGR = KVM_STATE_TAG('D', 'B', 'G', 'R'),
	T_EVNT = KVM_STATE_TAG('E', 'V', 'N', 'T'),
	T_MPST = KVM_STATE_TAG('M', 'P', 'S', 'T'),
	T_MSRS = KVM_STATE_TAG('M', 'S', 'R', 'S'),
};

/* What this host's KVM can do, asked once per call. */
struct ks_host {
	uint32_t xsave_size;      /* 0: no XSAVE, use KVM_GET_FPU */
	bool xsave2;              /* KVM_GET_XSAVE2 with xsave_size bytes */
	bool xcrs;
	uint32_t nmsrs;
	uint32_t *msr_index;      /* KVM_GET_MSR_INDEX_LIST */
};

struct ks_vcpu {
	uint32_t tsc_khz;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint8_t *xsave;           /* host xsave_size bytes, or NULL: fpu */
	struct kvm_fpu fpu;
	bool has_xcrs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_debugregs dregs;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	uint32_t nmsrs;
	struct kvm_msr_entry *msrs;
};

struct ks_state {
	uint64_t clock;
	uint32_t clock_flags;
	struct kvm_pic_state pic[2];
	struct kvm_ioapic_state ioapic;
	struct kvm_pit_state2 pit;
	int ncpus;
	struct ks_vcpu *vcpus;
};

/* ---- errors ---- */

static int ks_status(int err)
{
	if (err == ENOTTY || err == ENOSYS)
		return EXIT_NOKVM;
	return EXIT_HOST;
}

/* A failed ioctl while saving (or reading the state to fall back on). */
static int get_fail(struct error *e, int cpu, const char *ioctl_name)
{
	int err = errno;

	if (cpu < 0)
		return error_set(e, ks_status(err), "kvm state: %s: %s", ioctl_name, strerror(err));
	return error_set(e, ks_status(err), "kvm state: vcpu%d: %s: %s", cpu, ioctl_name,
			 strerror(err));
}

/* A failed ioctl while restoring: EINVAL is KVM refusing the snapshot's
 * value, which makes it the snapshot's fault. */
static int set_fail(struct error *e, int cpu, const char *ioctl_name)
{
	int err = errno, st = err == EINVAL ? EXIT_BADSTATE : ks_status(err);

	if (cpu < 0)
		return error_set(e, st, "kvm state: %s: %s", ioctl_name, strerror(err));
	return error_set(e, st, "kvm state: vcpu%d: %s: %s", cpu, ioctl_name, strerror(err));
}

/* The snapshot is wrong: name the section and the problem. */
static int bad(struct error *e, const char *section, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(struct error *e, const char *section, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (section)
		return error_set(e, EXIT_BADSTATE, "kvm state: section %s: %s", section, what);
	return error_set(e, EXIT_BADSTATE, "kvm state: %s", what);
}

/* A tag for a message: its four characters, or hex when not printable. */
static const char *tag_name(uint32_t tag, char out[16])
{
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)(tag >> (8 * i));

		if (c < 0x20 || c > 0x7e) {
			snprintf(out, 16, "0x%08x", tag);
			return out;
		}
		out[i] = (char)c;
	}
	out[4] = '\0';
	return out;
}

/* ---- the host ---- */

static void host_free(struct ks_host *h)
{
	free(h->msr_index);
	h->msr_index = NULL;
}

static int host_probe_kvm(struct vm *vm, struct ks_host *h, struct error *e)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;
	int n;

	memset(h, 0, sizeof(*h));
	n = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (n > 0) {
		if ((uint32_t)n > KS_MAX_XSAVE)
			return error_set(e, EXIT_NOKVM, "kvm state: KVM_CAP_XSAVE2 says %d bytes", n);
		h->xsave2 = true;
		h->xsave_size = (uint32_t)n < KS_LEGACY_XSAVE ? KS_LEGACY_XSAVE : (uint32_t)n;
	} else if (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		h->xsave_size = KS_LEGACY_XSAVE;
	}
	h->xcrs = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;

	/* The first call fails with E2BIG and says how many there are. */
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return get_fail(e, -1, "KVM_GET_MSR_INDEX_LIST");
	if (probe.nmsrs > KS_MAX_MSRS)
		return error_set(e, EXIT_NOKVM, "kvm state: KVM lists %u MSRs, more than %u",
				 probe.nmsrs, KS_MAX_MSRS);
	list = calloc(1, sizeof(*list) + (probe.nmsrs + 1) * sizeof(list->indices[0]));
	if (!list)
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	list->nmsrs = probe.nmsrs;
	if (probe.nmsrs && ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return get_fail(e, -1, "KVM_GET_MSR_INDEX_LIST");
	}
	h->nmsrs = list->nmsrs < probe.nmsrs ? list->nmsrs : probe.nmsrs;
	h->msr_index = malloc((h->nmsrs + 1) * sizeof(uint32_t));
	if (!h->msr_index) {
		free(list);
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	}
	memcpy(h->msr_index, list->indices, h->nmsrs * sizeof(uint32_t));
	free(list);
	return 0;
}

/* What KVM_CHECK_EXTENSION and KVM_GET_MSR_INDEX_LIST say is the same
 * for every VM of the process (one host, one KVM module): asked once, by
 * kvm_state_prepare or the first save or restore, and kept.  A copy is
 * handed out, so that host_free stays the caller's; after a failed probe
 * *h is zeroed, so the callers' host_free on their way out is safe (the
 * fuzzers, whose KVM refuses everything, reach that way). */
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ks_host host_cached;
static bool host_known;

static int host_probe(struct vm *vm, struct ks_host *h, struct error *e)
{
	int rc = 0;

	memset(h, 0, sizeof(*h));	/* host_free of it is safe on every way out */
	pthread_mutex_lock(&host_lock);
	if (!host_known) {
		rc = host_probe_kvm(vm, &host_cached, e);
		host_known = rc == 0;
	}
	if (!rc) {
		*h = host_cached;
		h->msr_index = malloc((h->nmsrs + 1) * sizeof(uint32_t));
		if (h->msr_index)
			memcpy(h->msr_index, host_cached.msr_index, h->nmsrs * sizeof(uint32_t));
		else
			rc = error_set(e, EXIT_HOST, "kvm state: out of memory");
	}
	pthread_mutex_unlock(&host_lock);
	return rc;
}

int kvm_state_prepare(struct vm *vm, struct error *e)
{
	struct ks_host h;

	if (host_probe(vm, &h, e))
		return -1;
	host_free(&h);
	return 0;
}

/* Position of `index` in the host's MSR list, or -1.  A save lists the
 * MSRs in the host's order, so the one after `hint` is tried first. */
static int host_msr_pos(const struct ks_host *h, uint32_t index, int hint)
{
	if (hint >= 0 && (uint32_t)hint + 1 < h->nmsrs && h->msr_index[hint + 1] == index)
		return hint + 1;
	for (uint32_t i = 0; i < h->nmsrs; i++)
		if (h->msr_index[i] == index)
			return (int)i;
	return -1;
}

/* ---- the VM must be quiet ---- */

static int check_quiet(struct vm *vm, const char *what, struct error *e)
{
	bool running = false;

	pthread_mutex_lock(&vm->stop_lock);
	for (int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].started)
			running = true;
	if (running && atomic_load(&vm->pause_requested) && vm->parked == vm->ncpus)
		running = false;
	pthread_mutex_unlock(&vm->stop_lock);
	if (running)
		return error_set(e, EXIT_HOST,
				 "kvm state: %s: the VM's vCPUs are running; pause it first", what);
	return 0;
}

/* ---- reading KVM ---- */

static void state_free(struct ks_state *s)
{
	for (int i = 0; s->vcpus && i < s->ncpus; i++) {
		free(s->vcpus[i].xsave);
		free(s->vcpus[i].msrs);
	}
	free(s->vcpus);
	s->vcpus = NULL;
}

static int state_alloc(struct ks_state *s, int ncpus, struct error *e)
{
	memset(s, 0, sizeof(*s));
	s->ncpus = ncpus;
	s->vcpus = calloc((size_t)ncpus, sizeof(*s->vcpus));
	if (!s->vcpus)
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	return 0;
}

static int get_msrs(int fd, int cpu, const struct ks_host *h, struct ks_vcpu *c, struct error *e)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + KS_MSR_CHUNK * sizeof(m->entries[0]));
	uint32_t i = 0;

	c->msrs = calloc(h->nmsrs + 1, sizeof(*c->msrs));
	c->nmsrs = 0;
	if (!m || !c->msrs) {
		free(m);
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	}
	while (i < h->nmsrs) {
		uint32_t k = h->nmsrs - i < KS_MSR_CHUNK ? h->nmsrs - i : KS_MSR_CHUNK;
		int got;

		memset(m->entries, 0, k * sizeof(m->entries[0]));
		m->nmsrs = k;
		for (uint32_t j = 0; j < k; j++)
			m->entries[j].index = h->msr_index[i + j];
		got = ioctl(fd, KVM_GET_MSRS, m);
		if (got < 0 || (uint32_t)got > k) {
			free(m);
			return get_fail(e, cpu, "KVM_GET_MSRS");
		}
		memcpy(c->msrs + c->nmsrs, m->entries, (size_t)got * sizeof(m->entries[0]));
		c->nmsrs += (uint32_t)got;
		i += (uint32_t)got;
		if ((uint32_t)got < k) {
			log_debug("vcpu%d: KVM_GET_MSRS will not read MSR 0x%x; not saved",
				  cpu, h->msr_index[i]);
			i++;
		}
	}
	for (uint32_t j = 0; j < c->nmsrs; j++)
		c->msrs[j].reserved = 0;
	free(m);
	return 0;
}

/* Read one vCPU: MP state first (it makes the LAPIC accept pending
 * INIT/SIPI), events last. */
static int get_vcpu(struct vm *vm, const struct ks_host *h, int cpu, struct ks_vcpu *c,
		    struct error *e)
{
	int fd = vm->vcpus[cpu].fd, khz;

	if (ioctl(fd, KVM_GET_MP_STATE, &c->mp) < 0)
		return get_fail(e, cpu, "KVM_GET_MP_STATE");
	if (ioctl(fd, KVM_GET_REGS, &c->regs) < 0)
		return get_fail(e, cpu, "KVM_GET_REGS");
	if (ioctl(fd, KVM_GET_SREGS, &c->sregs) < 0)
		return get_fail(e, cpu, "KVM_GET_SREGS");
	if (h->xsave_size) {
		c->xsave = calloc(1, h->xsave_size);
		if (!c->xsave)
			return error_set(e, EXIT_HOST, "kvm state: out of memory");
		if (h->xsave2 ? ioctl(fd, KVM_GET_XSAVE2, c->xsave) < 0
			      : ioctl(fd, KVM_GET_XSAVE, c->xsave) < 0)
			return get_fail(e, cpu, h->xsave2 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE");
	} else if (ioctl(fd, KVM_GET_FPU, &c->fpu) < 0) {
		return get_fail(e, cpu, "KVM_GET_FPU");
	}
	if (h->xcrs) {
		if (ioctl(fd, KVM_GET_XCRS, &c->xcrs) < 0)
			return get_fail(e, cpu, "KVM_GET_XCRS");
		c->has_xcrs = true;
	}
	if (ioctl(fd, KVM_GET_DEBUGREGS, &c->dregs) < 0)
		return get_fail(e, cpu, "KVM_GET_DEBUGREGS");
	if (ioctl(fd, KVM_GET_LAPIC, &c->lapic) < 0)
		return get_fail(e, cpu, "KVM_GET_LAPIC");
	khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	c->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
	if (get_msrs(fd, cpu, h, c, e))
		return -1;
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &c->events) < 0)
		return get_fail(e, cpu, "KVM_GET_VCPU_EVENTS");
	return 0;
}

static int get_vm(struct vm *vm, struct ks_state *s, struct error *e)
{
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;

	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return get_fail(e, -1, "KVM_GET_CLOCK");
	s->clock = clock.clock;
	s->clock_flags = clock.flags;
	for (int i = 0; i < 3; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = (uint32_t)i;   /* KVM_IRQCHIP_PIC_MASTER, _SLAVE, _IOAPIC */
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return get_fail(e, -1, i == KVM_IRQCHIP_IOAPIC ? "KVM_GET_IRQCHIP (IOAPIC)"
				       : i == KVM_IRQCHIP_PIC_MASTER ? "KVM_GET_IRQCHIP (PIC master)"
				       : "KVM_GET_IRQCHIP (PIC slave)");
		if (i == KVM_IRQCHIP_IOAPIC)
			s->ioapic = chip.chip.ioapic;
		else
			s->pic[i] = chip.chip.pic;
	}
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &s->pit) < 0)
		return get_fail(e, -1, "KVM_GET_PIT2");
	return 0;
}

static int get_all(struct vm *vm, const struct ks_host *h, struct ks_state *s, struct error *e)
{
	if (state_alloc(s, vm->ncpus, e))
		return -1;
	if (get_vm(vm, s, e))
		return -1;
	for (int i = 0; i < vm->ncpus; i++)
		if (get_vcpu(vm, h, i, &s->vcpus[i], e))
			return -1;
	return 0;
}

/* ---- writing the buffer ---- */

static void put_rec(struct state_writer *w, uint32_t tag, const void *p, size_t n)
{
	state_put_u32(w, tag);
	state_put_u32(w, (uint32_t)n);
	state_put_bytes(w, p, n);
}

static void put_state(struct state_writer *w, const struct ks_state *s, const struct ks_host *h)
{
	size_t mark = state_section_begin(w, KS_VM_SECTION, KVM_STATE_VERSION);
	char name[32];

	state_put_u32(w, T_CLCK);
	state_put_u32(w, 12);
	state_put_u64(w, s->clock);
	state_put_u32(w, s->clock_flags);
	put_rec(w, T_PICM, &s->pic[0], sizeof(s->pic[0]));
	put_rec(w, T_PICS, &s->pic[1], sizeof(s->pic[1]));
	put_rec(w, T_IOAP, &s->ioapic, sizeof(s->ioapic));
	put_rec(w, T_PIT2, &s->pit, sizeof(s->pit));
	state_section_end(w, mark);

	for (int i = 0; i < s->ncpus; i++) {
		const struct ks_vcpu *c = &s->vcpus[i];

		snprintf(name, sizeof(name), "vcpu%d", i);
		mark = state_section_begin(w, name, KVM_STATE_VERSION);
		state_put_u32(w, T_TSCK);
		state_put_u32(w, 4);
		state_put_u32(w, c->tsc_khz);
		put_rec(w, T_REGS, &c->regs, sizeof(c->regs));
		put_rec(w, T_SREG, &c->sregs, sizeof(c->sregs));
		if (c->xsave)
			put_rec(w, T_XSAV, c->xsave, h->xsave_size);
		else
			put_rec(w, T_FPU, &c->fpu, sizeof(c->fpu));
		if (c->has_xcrs)
			put_rec(w, T_XCRS, &c->xcrs, sizeof(c->xcrs));
		put_rec(w, T_LAPI, &c->lapic, sizeof(c->lapic));
		put_rec(w, T_DBGR, &c->dregs, sizeof(c->dregs));
		put_rec(w, T_EVNT, &c->events, sizeof(c->events));
		put_rec(w, T_MPST, &c->mp, sizeof(c->mp));
		state_put_u32(w, T_MSRS);
		state_put_u32(w, 4 + 16 * c->nmsrs);
		state_put_u32(w, c->nmsrs);
		for (uint32_t j = 0; j < c->nmsrs; j++) {
			state_put_u32(w, c->msrs[j].index);
			state_put_u32(w, 0);
			state_put_u64(w, c->msrs[j].data);
		}
		state_section_end(w, mark);
	}
}

int kvm_state_save(struct vm *vm, struct state_writer *w, struct error *e)
{
	struct ks_host h;
	struct ks_state s = { 0 };
	int rc = -1;

	if (check_quiet(vm, "save", e))
		return -1;
	if (host_probe(vm, &h, e))
		goto out;
	if (get_all(vm, &h, &s, e))
		goto out;
	put_state(w, &s, &h);
	if (w->error) {
		error_set(e, EXIT_HOST, "kvm state: out of memory");
		goto out;
	}
	rc = 0;
out:
	state_free(&s);
	host_free(&h);
	return rc;
}

/* ---- parsing the buffer (untrusted) ---- */

/* "vcpuN": N decimal, no sign, no leading zero, at most 4 digits. */
static bool vcpu_name(const char *name, int *idx)
{
	const char *d = name + 4;
	size_t n;

	if (strncmp(name, "vcpu", 4))
		return false;
	n = strlen(d);
	if (n == 0 || n > 4 || (n > 1 && d[0] == '0'))
		return false;
	*idx = 0;
	for (size_t i = 0; i < n; i++) {
		if (d[i] < '0' || d[i] > '9')
			return false;
		*idx = *idx * 10 + (d[i] - '0');
	}
	return true;
}

/* One record: tag, length, body; the length checked against what is left. */
struct ks_rec {
	uint32_t tag, len;
	const uint8_t *body;
};

static int next_rec(struct state_reader *p, const char *sect, struct ks_rec *rec, struct error *e)
{
	char tn[16];
	size_t at = p->pos;

	if (p->len - p->pos < 8)
		return bad(e, sect, "a record header at payload byte %zu is cut short "
			   "(%zu bytes left, 8 needed)", at, p->len - p->pos);
	rec->tag = state_get_u32(p);
	rec->len = state_get_u32(p);
	if (rec->len > p->len - p->pos)
		return bad(e, sect, "record %s at payload byte %zu says %u bytes, only %zu are left",
			   tag_name(rec->tag, tn), at, rec->len, p->len - p->pos);
	rec->body = p->data + p->pos;
	p->pos += rec->len;
	return 0;
}

/* The record must be exactly `want` bytes and seen once (bit `bit`). */
static int rec_once(const struct ks_rec *rec, size_t want, uint32_t *seen, int bit,
		    const char *sect, struct error *e)
{
	char tn[16];

	if (*seen & (1u << bit))
		return bad(e, sect, "record %s appears twice", tag_name(rec->tag, tn));
	*seen |= 1u << bit;
	if (want != (size_t)-1 && rec->len != want)
		return bad(e, sect, "record %s is %u bytes, expected %zu",
			   tag_name(rec->tag, tn), rec->len, want);
	return 0;
}

static int parse_vm(struct state_reader *p, const char *sect, struct ks_state *s, struct error *e)
{
	struct ks_rec rec;
	uint32_t seen = 0;
	char tn[16];

	while (p->pos < p->len) {
		if (next_rec(p, sect, &rec, e))
			return -1;
		switch (rec.tag) {
		case T_CLCK:
			if (rec_once(&rec, 12, &seen, 0, sect, e))
				return -1;
			memcpy(&s->clock, rec.body, 8);
			memcpy(&s->clock_flags, rec.body + 8, 4);
			break;
		case T_PICM:
			if (rec_once(&rec, sizeof(s->pic[0]), &seen, 1, sect, e))
				return -1;
			memcpy(&s->pic[0], rec.body, rec.len);
			break;
		case T_PICS:
			if (rec_once(&rec, sizeof(s->pic[1]), &seen, 2, sect, e))
				return -1;
			memcpy(&s->pic[1], rec.body, rec.len);
			break;
		case T_IOAP:
			if (rec_once(&rec, sizeof(s->ioapic), &seen, 3, sect, e))
				return -1;
			memcpy(&s->ioapic, rec.body, rec.len);
			break;
		case T_PIT2:
			if (rec_once(&rec, sizeof(s->pit), &seen, 4, sect, e))
				return -1;
			memcpy(&s->pit, rec.body, rec.len);
			break;
		default:
			return bad(e, sect, "unknown record %s", tag_name(rec.tag, tn));
		}
	}
	if (seen != 0x1f) {
		static const char *const names[] = { "CLCK", "PICM", "PICS", "IOAP", "PIT2" };

		for (int i = 0; i < 5; i++)
			if (!(seen & (1u << i)))
				return bad(e, sect, "no %s record", names[i]);
	}
	return 0;
}

static int parse_msrs(const struct ks_rec *rec, const char *sect, const struct ks_host *h,
		      struct ks_vcpu *c, struct error *e)
{
	uint32_t n;
	bool *seen;
	int pos = -1;

	if (rec->len < 4)
		return bad(e, sect, "record MSRS is %u bytes, too short for its count", rec->len);
	memcpy(&n, rec->body, 4);
	if (n > h->nmsrs || n > KS_MAX_MSRS)
		return bad(e, sect, "record MSRS: %u MSRs, more than the %u this host's KVM lists",
			   n, h->nmsrs);
	if (rec->len != 4 + 16 * (uint64_t)n)
		return bad(e, sect, "record MSRS: %u MSRs need %u bytes, the record has %u",
			   n, 4 + 16 * n, rec->len);
	c->msrs = calloc((size_t)n + 1, sizeof(*c->msrs));
	seen = calloc((size_t)h->nmsrs + 1, sizeof(*seen));
	if (!c->msrs || !seen) {
		free(seen);
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *q = rec->body + 4 + 16 * (size_t)i;
		uint32_t index, reserved;
		uint64_t data;

		memcpy(&index, q, 4);
		memcpy(&reserved, q + 4, 4);
		memcpy(&data, q + 8, 8);
		pos = host_msr_pos(h, index, pos);
		if (reserved || pos < 0 || seen[pos]) {
			free(seen);
			if (reserved)
				return bad(e, sect, "record MSRS: entry %u (MSR 0x%x) has reserved "
					   "bits set", i, index);
			if (pos < 0)
				return bad(e, sect, "record MSRS: MSR 0x%x is not one this host's "
					   "KVM lists", index);
			return bad(e, sect, "record MSRS: MSR 0x%x appears twice", index);
		}
		seen[pos] = true;
		c->msrs[i] = (struct kvm_msr_entry){ .index = index, .data = data };
	}
	c->nmsrs = n;
	free(seen);
	return 0;
}

static int parse_vcpu(struct state_reader *p, const char *sect, const struct ks_host *h,
		      struct ks_vcpu *c, struct error *e)
{
	enum { B_TSCK, B_REGS, B_SREG, B_FPU, B_XCRS, B_LAPI, B_DBGR, B_EVNT, B_MPST, B_MSRS };
	static const char *const names[] = {
		"TSCK", "REGS", "SREG", "XSAV or FPU", "XCRS", "LAPI", "DBGR", "EVNT", "MPST",
		"MSRS",
	};
	struct ks_rec rec;
	uint32_t seen = 0;
	char tn[16];

	while (p->pos < p->len) {
		if (next_rec(p, sect, &rec, e))
			return -1;
		switch (rec.tag) {
		case T_TSCK:
			if (rec_once(&rec, 4, &seen, B_TSCK, sect, e))
				return -1;
			memcpy(&c->tsc_khz, rec.body, 4);
			break;
		case T_REGS:
			if (rec_once(&rec, sizeof(c->regs), &seen, B_REGS, sect, e))
				return -1;
			memcpy(&c->regs, rec.body, rec.len);
			break;
		case T_SREG:
			if (rec_once(&rec, sizeof(c->sregs), &seen, B_SREG, sect, e))
				return -1;
			memcpy(&c->sregs, rec.body, rec.len);
			break;
		case T_XSAV:
			if (seen & (1u << B_FPU))
				return bad(e, sect, "both an XSAV and an FPU record, or XSAV twice");
			seen |= 1u << B_FPU;
			if (!h->xsave_size)
				return bad(e, sect, "record XSAV: this host's KVM has no XSAVE");
			if (rec.len < KS_LEGACY_XSAVE || rec.len > h->xsave_size)
				return bad(e, sect, "record XSAV is %u bytes; this host takes %u to %u",
					   rec.len, KS_LEGACY_XSAVE, h->xsave_size);
			c->xsave = calloc(1, h->xsave_size);
			if (!c->xsave)
				return error_set(e, EXIT_HOST, "kvm state: out of memory");
			memcpy(c->xsave, rec.body, rec.len);   /* the rest: components absent */
			break;
		case T_FPU:
			if (seen & (1u << B_FPU))
				return bad(e, sect, "both an XSAV and an FPU record, or FPU twice");
			if (rec_once(&rec, sizeof(c->fpu), &seen, B_FPU, sect, e))
				return -1;
			memcpy(&c->fpu, rec.body, rec.len);
			break;
		case T_XCRS:
			if (rec_once(&rec, sizeof(c->xcrs), &seen, B_XCRS, sect, e))
				return -1;
			if (!h->xcrs)
				return bad(e, sect, "record XCRS: this host's KVM has no KVM_CAP_XCRS");
			memcpy(&c->xcrs, rec.body, rec.len);
			if (c->xcrs.nr_xcrs > KVM_MAX_XCRS)
				return bad(e, sect, "record XCRS: %u XCRs, at most %d",
					   c->xcrs.nr_xcrs, KVM_MAX_XCRS);
			c->has_xcrs = true;
			break;
		case T_LAPI:
			if (rec_once(&rec, sizeof(c->lapic), &seen, B_LAPI, sect, e))
				return -1;
			memcpy(&c->lapic, rec.body, rec.len);
			break;
		case T_DBGR:
			if (rec_once(&rec, sizeof(c->dregs), &seen, B_DBGR, sect, e))
				return -1;
			memcpy(&c->dregs, rec.body, rec.len);
			break;
		case T_EVNT:
			if (rec_once(&rec, sizeof(c->events), &seen, B_EVNT, sect, e))
				return -1;
			memcpy(&c->events, rec.body, rec.len);
			break;
		case T_MPST:
			if (rec_once(&rec, sizeof(c->mp), &seen, B_MPST, sect, e))
				return -1;
			memcpy(&c->mp, rec.body, rec.len);
			break;
		case T_MSRS:
			if (rec_once(&rec, (size_t)-1, &seen, B_MSRS, sect, e))
				return -1;
			if (parse_msrs(&rec, sect, h, c, e))
				return -1;
			break;
		default:
			return bad(e, sect, "unknown record %s", tag_name(rec.tag, tn));
		}
	}
	for (int i = 0; i <= B_MSRS; i++)
		if (i != B_XCRS && !(seen & (1u << i)))
			return bad(e, sect, "no %s record", names[i]);
	return 0;
}

/* Say why the section header at `at` would not read: a cut or a bad
 * header, naming the section where its name can be read. */
static int section_fail(const uint8_t *buf, size_t len, size_t at, struct error *e)
{
	size_t left = len - at;
	uint32_t magic, slen;
	char name[64];
	uint8_t nlen;

	if (left < 5)
		return bad(e, NULL, "the buffer is cut short: it ends inside a section header "
			   "at byte %zu", at);
	memcpy(&magic, buf + at, 4);
	nlen = buf[at + 4];
	if (magic != STATE_SECTION_MAGIC || nlen > 63)
		return bad(e, NULL, "no section header at byte %zu (bad magic or name length)", at);
	if (left < 5u + nlen + 6u)
		return bad(e, NULL, "the buffer is cut short: it ends inside a section header "
			   "at byte %zu", at);
	memcpy(name, buf + at + 5, nlen);
	name[nlen] = '\0';
	memcpy(&slen, buf + at + 5 + nlen + 2, 4);
	left -= 5u + nlen + 6u;
	if (slen > STATE_SECTION_MAX)
		return bad(e, name, "%u bytes long, more than a section may be", slen);
	return bad(e, name, "the buffer is cut short: the section says %u bytes, %zu are left",
		   slen, left);
}

static int parse_all(int ncpus, const struct ks_host *h, const void *buf, size_t len,
		     struct ks_state *s, struct error *e)
{
	struct state_reader r, p;
	bool seen_vm = false, *seen = NULL;
	char name[64];
	uint16_t version;
	int idx, rc = -1;

	if (state_alloc(s, ncpus, e))
		return -1;
	seen = calloc((size_t)ncpus, sizeof(*seen));
	if (!seen)
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	state_reader_init(&r, buf, len);
	while (r.pos < r.len) {
		size_t at = r.pos;

		if (state_section_read(&r, name, &version, &p)) {
			section_fail(buf, len, at, e);
			goto out;
		}
		if (strlen(name) != r.data[at + 4]) {
			bad(e, NULL, "the section at byte %zu has a NUL byte in its name", at);
			goto out;
		}
		if (!strcmp(name, KS_VM_SECTION)) {
			if (seen_vm) {
				bad(e, name, "appears twice");
				goto out;
			}
			seen_vm = true;
		} else if (vcpu_name(name, &idx)) {
			if (idx >= ncpus) {
				bad(e, name, "this VM has no such vCPU (it has %d: vcpu0 to vcpu%d)",
				    ncpus, ncpus - 1);
				goto out;
			}
			if (seen[idx]) {
				bad(e, name, "appears twice");
				goto out;
			}
			seen[idx] = true;
		} else {
			bad(e, name, "not a KVM state section (kvm-vm or vcpuN)");
			goto out;
		}
		if (version != KVM_STATE_VERSION) {
			bad(e, name, "version %u; this Shoal reads version %d", version,
			    KVM_STATE_VERSION);
			goto out;
		}
		if (!strcmp(name, KS_VM_SECTION) ? parse_vm(&p, name, s, e)
						 : parse_vcpu(&p, name, h, &s->vcpus[idx], e))
			goto out;
	}
	if (!seen_vm) {
		bad(e, NULL, "no section %s", KS_VM_SECTION);
		goto out;
	}
	for (int i = 0; i < ncpus; i++)
		if (!seen[i]) {
			bad(e, NULL, "no section vcpu%d (this VM has %d vCPUs)", i, ncpus);
			goto out;
		}
	rc = 0;
out:
	free(seen);
	return rc;
}

/* ---- writing KVM ---- */

/* IA32_TSC first, IA32_TSC_DEADLINE last, the rest in the saved order. */
static int set_msrs(int fd, int cpu, const struct ks_vcpu *c, struct error *e)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + KS_MSR_CHUNK * sizeof(m->entries[0]));
	struct kvm_msr_entry *order = calloc((size_t)c->nmsrs + 1, sizeof(*order));
	uint32_t n = 0, i = 0;
	int rc = -1;

	if (!m || !order) {
		error_set(e, EXIT_HOST, "kvm state: out of memory");
		goto out;
	}
	for (int pass = 0; pass < 3; pass++)
		for (uint32_t j = 0; j < c->nmsrs; j++) {
			uint32_t idx = c->msrs[j].index;
			int which = idx == MSR_IA32_TSC ? 0 : idx == MSR_IA32_TSC_DEADLINE ? 2 : 1;

			if (which == pass)
				order[n++] = c->msrs[j];
		}
	/* KVM (before Linux 6.6) takes a host's IA32_TSC write that lands
	 * within a second of where the last write's TSC would be now for an
	 * attempt to synchronize vCPUs, and keeps the old offset instead of
	 * the value: a VM restored into one created less than a second of TSC
	 * time away from the saved value (a short-lived guest, a test) had
	 * its TSC go on from the new VM's creation, backwards by up to a
	 * second.  So vCPU 0's TSC is written 4 s ahead first, then for real:
	 * neither lands in that window, and the other vCPUs' writes, a few
	 * microseconds from vCPU 0's, then do synchronize with it, as they
	 * should. */
	if (cpu == 0 && n && order[0].index == MSR_IA32_TSC && c->tsc_khz) {
		m->nmsrs = 1;
		m->entries[0] = order[0];
		m->entries[0].data += 4000ull * c->tsc_khz;
		if (ioctl(fd, KVM_SET_MSRS, m) != 1) {
			set_fail(e, cpu, "KVM_SET_MSRS (IA32_TSC)");
			goto out;
		}
	}
	while (i < n) {
		uint32_t k = n - i < KS_MSR_CHUNK ? n - i : KS_MSR_CHUNK;
		int done;

		m->nmsrs = k;
		memcpy(m->entries, order + i, k * sizeof(m->entries[0]));
		done = ioctl(fd, KVM_SET_MSRS, m);
		if (done < 0) {
			set_fail(e, cpu, "KVM_SET_MSRS");
			goto out;
		}
		if ((uint32_t)done < k) {
			error_set(e, EXIT_BADSTATE,
				  "kvm state: vcpu%d: KVM_SET_MSRS: KVM refused MSR 0x%x = 0x%llx",
				  cpu, order[i + (uint32_t)done].index,
				  (unsigned long long)order[i + (uint32_t)done].data);
			goto out;
		}
		i += k;
	}
	rc = 0;
out:
	free(m);
	free(order);
	return rc;
}

static int set_vcpu(struct vm *vm, const struct ks_host *h, int cpu, const struct ks_vcpu *c,
		    struct error *e)
{
	int fd = vm->vcpus[cpu].fd;

	if (c->tsc_khz) {
		int cur = ioctl(fd, KVM_GET_TSC_KHZ, 0);
		uint64_t tol = c->tsc_khz / 4000u;   /* 250 ppm, as QEMU and Firecracker */

		if (cur > 0 && ((uint64_t)cur > c->tsc_khz + tol ||
				(uint64_t)cur + tol < c->tsc_khz) &&
		    ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)c->tsc_khz) < 0)
			return error_set(e, EXIT_NOKVM, "kvm state: vcpu%d: KVM_SET_TSC_KHZ %u: %s "
					 "(the snapshot's TSC ran at %u kHz, this host's at %d)",
					 cpu, c->tsc_khz, strerror(errno), c->tsc_khz, cur);
	}
	if (ioctl(fd, KVM_SET_REGS, &c->regs) < 0)
		return set_fail(e, cpu, "KVM_SET_REGS");
	if (ioctl(fd, KVM_SET_SREGS, &c->sregs) < 0)
		return set_fail(e, cpu, "KVM_SET_SREGS");
	if (c->xsave) {
		/* KVM_SET_XSAVE reads the host's whole XSAVE size (KVM_CAP_XSAVE2). */
		if (ioctl(fd, KVM_SET_XSAVE, c->xsave) < 0)
			return set_fail(e, cpu, "KVM_SET_XSAVE");
	} else if (ioctl(fd, KVM_SET_FPU, &c->fpu) < 0) {
		return set_fail(e, cpu, "KVM_SET_FPU");
	}
	if (c->has_xcrs && h->xcrs && ioctl(fd, KVM_SET_XCRS, &c->xcrs) < 0)
		return set_fail(e, cpu, "KVM_SET_XCRS");
	if (ioctl(fd, KVM_SET_LAPIC, &c->lapic) < 0)
		return set_fail(e, cpu, "KVM_SET_LAPIC");
	if (set_msrs(fd, cpu, c, e))
		return -1;
	if (ioctl(fd, KVM_SET_DEBUGREGS, &c->dregs) < 0)
		return set_fail(e, cpu, "KVM_SET_DEBUGREGS");
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &c->events) < 0)
		return set_fail(e, cpu, "KVM_SET_VCPU_EVENTS");
	if (ioctl(fd, KVM_SET_MP_STATE, &c->mp) < 0)
		return set_fail(e, cpu, "KVM_SET_MP_STATE");
	return 0;
}

static int set_vm(struct vm *vm, const struct ks_state *s, struct error *e)
{
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;

	for (int i = 0; i < 3; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = (uint32_t)i;
		if (i == KVM_IRQCHIP_IOAPIC)
			chip.chip.ioapic = s->ioapic;
		else
			chip.chip.pic = s->pic[i];
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return set_fail(e, -1, i == KVM_IRQCHIP_IOAPIC ? "KVM_SET_IRQCHIP (IOAPIC)"
				       : i == KVM_IRQCHIP_PIC_MASTER ? "KVM_SET_IRQCHIP (PIC master)"
				       : "KVM_SET_IRQCHIP (PIC slave)");
	}
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &s->pit) < 0)
		return set_fail(e, -1, "KVM_SET_PIT2");
	memset(&clock, 0, sizeof(clock));
	clock.clock = s->clock;   /* flags 0: see the top of the file */
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return set_fail(e, -1, "KVM_SET_CLOCK");
	return 0;
}

static int set_all(struct vm *vm, const struct ks_host *h, const struct ks_state *s,
		   struct error *e)
{
	for (int i = 0; i < s->ncpus; i++)
		if (set_vcpu(vm, h, i, &s->vcpus[i], e))
			return -1;
	return set_vm(vm, s, e);
}

/* A live migration's time: the guest's TSCs and kvmclock go on from the
 * saved values plus the host realtime elapsed since the source saved them
 * (`saved_rt`, CLOCK_REALTIME ns), as if they had kept running through the
 * pause, so that the guest sees its downtime and its clocks do not fall
 * behind.  The source's and this host's realtime clocks must agree (NTP);
 * a gap below 0 (this clock behind) advances nothing, and one above
 * KVM_STATE_ADVANCE_MAX_NS is cut there and said. */
static void advance(struct ks_state *s, uint64_t saved_rt)
{
	struct timespec ts;
	uint64_t now, ns;

	if (!saved_rt || clock_gettime(CLOCK_REALTIME, &ts))
		return;
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (now <= saved_rt)
		return;
	ns = now - saved_rt;
	if (ns > KVM_STATE_ADVANCE_MAX_NS) {
		log_warn("kvm state: %.1f s passed since the source saved the VM's clocks (by the "
			 "two hosts' realtime clocks); the guest's clocks go on by %.0f s only",
			 (double)ns / 1e9, KVM_STATE_ADVANCE_MAX_NS / 1e9);
		ns = KVM_STATE_ADVANCE_MAX_NS;
	}
	s->clock += ns;
	for (int i = 0; i < s->ncpus; i++) {
		struct ks_vcpu *c = &s->vcpus[i];

		for (uint32_t j = 0; j < c->nmsrs && c->tsc_khz; j++)
			if (c->msrs[j].index == MSR_IA32_TSC)
				c->msrs[j].data += ns * c->tsc_khz / 1000000u; /* < 2^64: 1e10 x 1e7 */
	}
}

static int restore(struct vm *vm, const void *buf, size_t len, bool fresh, uint64_t saved_rt,
		   struct error *e)
{
	struct ks_host h;
	struct ks_state in = { 0 }, before = { 0 };
	struct error e2 = { 0 };
	int rc = -1;

	if (check_quiet(vm, "restore", e))
		return -1;
	if (host_probe(vm, &h, e))
		goto out;
	if (parse_all(vm->ncpus, &h, buf, len, &in, e))
		goto out;
	/* What to put back should KVM refuse something part-way; a fresh
	 * VM is destroyed instead, and is spared the reading. */
	if (!fresh && get_all(vm, &h, &before, e)) {
		error_prefix(e, "cannot read the VM's state before restoring");
		goto out;
	}
	advance(&in, saved_rt);
	if (set_all(vm, &h, &in, e)) {
		size_t n = strlen(e->msg);

		if (fresh) {
			snprintf(e->msg + n, sizeof(e->msg) - n, " (the VM is left half restored)");
			goto out;
		}
		if (set_all(vm, &h, &before, &e2)) {
			log_error("kvm state: putting the previous state back failed too: %s", e2.msg);
			snprintf(e->msg + n, sizeof(e->msg) - n, " (the VM is left half restored)");
		} else {
			snprintf(e->msg + n, sizeof(e->msg) - n, " (the VM's state was put back)");
		}
		goto out;
	}
	rc = 0;
out:
	state_free(&in);
	state_free(&before);
	host_free(&h);
	return rc;
}

int kvm_state_restore(struct vm *vm, const void *buf, size_t len, struct error *e)
{
	return restore(vm, buf, len, false, 0, e);
}

int kvm_state_restore_fresh(struct vm *vm, const void *buf, size_t len, uint64_t saved_rt,
			    struct error *e)
{
	if (vm->started_ns)    /* vm_run sets it, and it stays */
		return error_set(e, EXIT_HOST, "kvm state: restore: the VM has run; "
				 "kvm_state_restore_fresh is for one that never did");
	return restore(vm, buf, len, true, saved_rt, e);
}

int kvm_state_check(int ncpus, uint32_t xsave_size, bool xcrs, const uint32_t *msrs,
		    uint32_t nmsrs, const void *buf, size_t len, struct error *e)
{
	struct ks_host h = { .xsave_size = xsave_size, .xsave2 = xsave_size > KS_LEGACY_XSAVE,
			     .xcrs = xcrs, .nmsrs = nmsrs };
	struct ks_state in = { 0 };
	int rc;

	if (xsave_size > KS_MAX_XSAVE || (xsave_size && xsave_size < KS_LEGACY_XSAVE) ||
	    nmsrs > KS_MAX_MSRS)
		return error_set(e, EXIT_HOST, "kvm state: a host with %u bytes of XSAVE and %u "
				 "MSRs is not one KVM describes", xsave_size, nmsrs);
	h.msr_index = malloc((nmsrs + 1) * sizeof(uint32_t));
	if (!h.msr_index)
		return error_set(e, EXIT_HOST, "kvm state: out of memory");
	if (nmsrs)
		memcpy(h.msr_index, msrs, nmsrs * sizeof(uint32_t));
	rc = parse_all(ncpus, &h, buf, len, &in, e);
	state_free(&in);
	host_free(&h);
	return rc;
}

const char *kvm_state_what(void)
{
	return "per VM: the kvmclock, the in-kernel PIC master and slave, IOAPIC and PIT; "
	       "per vCPU: general and special registers, the XSAVE area (or the FPU) and "
	       "XCRs, every MSR KVM lists and will read, the local APIC, debug registers, "
	       "pending events (exception, interrupt, NMI, SMM), the MP state and the TSC "
	       "frequency";
}
