/*
 * mce.c - memory errors in guest RAM: the SIGBUS handler, and machine
 * checks delivered to the guest as QEMU delivers them (vmm/mce.h).
 *
 * The path of one error:
 *
 *   kernel: page poisoned, unmapped everywhere (a hwpoison PTE stays in
 *           our mapping); the next access from user space, or KVM's
 *           fault on it for a vCPU, sends SIGBUS BUS_MCEERR_AR to that
 *           thread (si_addr: the host address, si_addr_lsb: 12)
 *   mce_sigbus (that thread, signal context, one at a time):
 *           host address -> guest-physical; the memory layer's hook
 *           (mem/page_hash.c) puts the good copy back, or says why not;
 *           not recovered: the page is replaced with zeros (memfd hole
 *           punched, the hwpoison PTE zapped with MADV_DONTNEED) so that
 *           the access can go on, and a machine check is queued for the
 *           vCPU that touched it (vCPU 0 for any other thread), which is
 *           made to leave KVM_RUN
 *   vm_mce_deliver (that vCPU's thread, after KVM_RUN returned EINTR):
 *           KVM_X86_SET_MCE: bank 9 (the last of 10), MCi_STATUS VAL UC
 *           EN MISCV ADDRV S, for AR also the AR bit and MCACOD 0x134 (a
 *           data load error: SRAR) with MCG_STATUS RIPV|EIPV|MCIP, for AO
 *           MCACOD 0xc0 (a memory scrub error: SRAO) with RIPV|MCIP;
 *           MCi_ADDR the guest-physical page, MCi_MISC a physical address
 *           with LSB 12 (0x8c).  These are QEMU's values (target/i386/kvm).
 *
 * Invariants.
 *   - Only a memory error (si_code BUS_MCEERR_AR/AO) at an address in
 *     guest RAM is handled; any other SIGBUS gets the default action, as
 *     without the handler.
 *   - The handler never returns to an access that would fault again: the
 *     page is good (recovered) or zero (replaced) when it returns; only
 *     if both fail (counted as replace_failed) can the access fault again,
 *     and then each fault is one more counted machine check, not a crash.
 *   - A vCPU holds at most one pending machine check; a second one before
 *     delivery overwrites the first (the guest would see MCIP set and
 *     shut down on hardware anyway).
 *   - The guest decides nothing here: it can only touch its own RAM, and a
 *     guest that clears CR4.MCE gets KVM's answer to a machine check then,
 *     a shutdown (EXIT_TRIPLE_FAULT), as on hardware.
 */
#include "vmm/mce.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "vmm/vm.h"

#define MCG_CTL_P        (1ull << 8)
#define MCG_SER_P        (1ull << 24)
#define MCG_STATUS_RIPV  (1ull << 0)
#define MCG_STATUS_EIPV  (1ull << 1)
#define MCG_STATUS_MCIP  (1ull << 2)
#define MCI_STATUS_VAL   (1ull << 63)
#define MCI_STATUS_UC    (1ull << 61)
#define MCI_STATUS_EN    (1ull << 60)
#define MCI_STATUS_MISCV (1ull << 59)
#define MCI_STATUS_ADDRV (1ull << 58)
#define MCI_STATUS_S     (1ull << 56)
#define MCI_STATUS_AR    (1ull << 55)
#define MCE_BANKS        10u
#define PENDING_VALID    1ull
#define PENDING_AR       2ull

static struct {
	struct vm *vm;                 /* set once by vm_mce_enable */
	vm_mce_fn fn;
	void *opaque;
	int bank;
	_Atomic uint64_t *pending;     /* per vCPU: gpa | PENDING_* */
	pthread_mutex_t lock;          /* one error at a time */
	_Atomic uint64_t events, machine_checks, inject_failed, replace_failed;
	_Atomic uint64_t result[VM_MCE_NRESULTS];
} mce = { .lock = PTHREAD_MUTEX_INITIALIZER };

static __thread struct vcpu *mce_self;

static uint64_t mcg_cap_for(struct vm *vm)
{
	int n = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MCE);
	uint64_t sup = 0;

	if (n <= 0 || ioctl(vm->kvm_fd, KVM_X86_GET_MCE_CAP_SUPPORTED, &sup) < 0)
		return 0;
	return (sup & (MCG_CTL_P | MCG_SER_P)) | ((unsigned)n < MCE_BANKS ? (unsigned)n : MCE_BANKS);
}

int vm_mce_setup_vcpu(struct vm *vm, struct vcpu *v)
{
	uint64_t cap = mcg_cap_for(vm);

	if (!cap || ioctl(v->fd, KVM_X86_SETUP_MCE, &cap) < 0)
		return -1;
	return 0;
}

static bool hva_to_gpa(const struct vm *vm, const uint8_t *p, uint64_t *gpa)
{
	for (int i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *r = &vm->mem.region[i];

		if (p >= r->hva && p < r->hva + r->size) {
			*gpa = r->gpa + (uint64_t)(p - r->hva);
			return true;
		}
	}
	return false;
}

/* The page's contents are lost: make it a zero page the guest can touch
 * again.  The memfd's page goes (a punched hole) and the hwpoison entry
 * in our page table with it (MADV_DONTNEED zaps it; the punch's own unmap
 * leaves hwpoison entries in place).  A clone's private page falls back
 * to its file's. */
static bool zero_page(const struct vm *vm, uint8_t *page)
{
	if (vm->mem.fd >= 0 &&
	    fallocate(vm->mem.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(page - vm->mem.host), 4096) < 0)
		return false;
	return madvise(page, 4096, MADV_DONTNEED) == 0;
}

static const char *const result_text[VM_MCE_NRESULTS] = {
	[VM_MCE_RECOVERED] = "recovered from its good copy (hash checked)",
	[VM_MCE_WRITTEN] = "written since its copy was taken: no good copy",
	[VM_MCE_NO_COPY] = "no good copy",
	[VM_MCE_MISMATCH] = "its copy does not match the page's hash",
	[VM_MCE_FAILED] = "its copy is good but the page could not be replaced",
};

static void mce_sigbus(int sig, siginfo_t *si, void *ctx)
{
	int code = si->si_code, saved = errno;
	struct vm *vm = mce.vm;
	uint8_t *page = (uint8_t *)((uintptr_t)si->si_addr & ~(uintptr_t)4095);
	enum vm_mce_result res;
	struct vcpu *v = NULL;
	uint64_t gpa = 0;
	bool zeroed = false;
	char line[320];
	int n;

	(void)ctx;
	if ((code != BUS_MCEERR_AR && code != BUS_MCEERR_AO) || !vm || !hva_to_gpa(vm, page, &gpa)) {
		signal(sig, SIG_DFL);   /* as without the handler: the process dies */
		raise(sig);
		return;
	}
	pthread_mutex_lock(&mce.lock);
	atomic_fetch_add(&mce.events, 1);
	res = mce.fn ? mce.fn(mce.opaque, page, code) : VM_MCE_NO_COPY;
	atomic_fetch_add(&mce.result[res], 1);
	if (res != VM_MCE_RECOVERED) {
		zeroed = zero_page(vm, page);
		if (!zeroed)
			atomic_fetch_add(&mce.replace_failed, 1);
		v = mce_self ? mce_self : &vm->vcpus[0];
		atomic_store(&mce.pending[v->index],
			     gpa | PENDING_VALID | (code == BUS_MCEERR_AR ? PENDING_AR : 0));
		if (v == mce_self)
			__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		else
			vcpu_kick(v);
	}
	pthread_mutex_unlock(&mce.lock);
	n = snprintf(line, sizeof(line), "shoal: memory error (%s) at guest page 0x%llx: %s%s%s\n",
		     code == BUS_MCEERR_AR ? "action required" : "action optional",
		     (unsigned long long)gpa, result_text[res],
		     res == VM_MCE_RECOVERED ? "" : zeroed ? "; page replaced with zeros, machine check "
		     "for the guest" : "; the page could not be replaced, machine check for the guest",
		     v ? (mce_self ? "" : " (on vcpu0)") : "");
	if (n > 0 && write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
		(void)0;
	errno = saved;
}

int vm_mce_enable(struct vm *vm, vm_mce_fn fn, void *opaque, struct error *e)
{
	struct sigaction sa = { .sa_sigaction = mce_sigbus, .sa_flags = SA_SIGINFO };
	uint64_t cap = mcg_cap_for(vm);

	if (!cap)
		return error_set(e, EXIT_NOKVM, "--mem-recovery: KVM has no machine-check support "
				 "(KVM_CAP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED)");
	/* Again, after a restore's MSRs: a snapshot's MCG_CTL may be 0, and
	 * KVM then drops every uncorrected error it is given. */
	for (int i = 0; i < vm->ncpus; i++)
		if (ioctl(vm->vcpus[i].fd, KVM_X86_SETUP_MCE, &cap) < 0)
			return error_set(e, EXIT_NOKVM, "vcpu%d: KVM_X86_SETUP_MCE: %s", i,
					 strerror(errno));
	mce.pending = calloc((size_t)vm->ncpus, sizeof(*mce.pending));
	if (!mce.pending)
		return error_set(e, EXIT_HOST, "out of memory");
	mce.bank = (int)(cap & 0xff) - 1;
	mce.fn = fn;
	mce.opaque = opaque;
	mce.vm = vm;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		return error_set(e, EXIT_HOST, "--mem-recovery: sigaction(SIGBUS): %s", strerror(errno));
	return 0;
}

void vm_mce_disable(void)
{
	pthread_mutex_lock(&mce.lock);
	if (mce.vm)
		signal(SIGBUS, SIG_DFL);
	mce.vm = NULL;
	mce.fn = NULL;
	pthread_mutex_unlock(&mce.lock);
}

void vm_mce_thread(struct vcpu *v)
{
	mce_self = v;
}

void vm_mce_deliver(struct vcpu *v)
{
	uint64_t x, gpa;
	struct kvm_x86_mce m;
	bool ar;

	if (!mce.pending || !(x = atomic_exchange(&mce.pending[v->index], 0)))
		return;
	gpa = x & ~4095ull;
	ar = x & PENDING_AR;
	memset(&m, 0, sizeof(m));
	m.bank = (uint8_t)mce.bank;
	m.status = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_EN | MCI_STATUS_MISCV |
		   MCI_STATUS_ADDRV | MCI_STATUS_S | (ar ? MCI_STATUS_AR | 0x134 : 0xc0);
	m.mcg_status = MCG_STATUS_MCIP | MCG_STATUS_RIPV | (ar ? MCG_STATUS_EIPV : 0);
	m.addr = gpa;
	m.misc = (2u << 6) | 0xc;     /* physical address, LSB 12 */
	if (ioctl(v->fd, KVM_X86_SET_MCE, &m) < 0) {
		atomic_fetch_add(&mce.inject_failed, 1);
		log_error("vcpu%d: KVM_X86_SET_MCE for guest page 0x%llx: %s", v->index,
			  (unsigned long long)gpa, strerror(errno));
		return;
	}
	atomic_fetch_add(&mce.machine_checks, 1);
	log_warn("vcpu%d: machine check delivered to the guest: guest page 0x%llx (%s)", v->index,
		 (unsigned long long)gpa, ar ? "SRAR data load" : "SRAO");
}

uint64_t vm_mce_count(enum vm_mce_result r)
{
	return atomic_load(&mce.result[r]);
}

void vm_mce_metrics(json_t *root)
{
	if (!mce.vm)
		return;
	json_object_set_new(root, "memory_errors", json_pack(
		"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"events", (json_int_t)atomic_load(&mce.events),
		"recovered", (json_int_t)vm_mce_count(VM_MCE_RECOVERED),
		"machine_checks", (json_int_t)atomic_load(&mce.machine_checks),
		"written", (json_int_t)vm_mce_count(VM_MCE_WRITTEN),
		"no_copy", (json_int_t)vm_mce_count(VM_MCE_NO_COPY),
		"hash_mismatch", (json_int_t)vm_mce_count(VM_MCE_MISMATCH),
		"replace_failed", (json_int_t)(vm_mce_count(VM_MCE_FAILED) +
					       atomic_load(&mce.replace_failed)),
		"inject_failed", (json_int_t)atomic_load(&mce.inject_failed)));
}
