/*
 * test_kvm_state.c - vmm/kvm_state.c with the test guest: a 2-vCPU guest
 * is paused mid-workload, its KVM state saved, its registers scribbled
 * over, the state restored and saved again; the two saves must match,
 * field for field, but for what moves on its own while the VM sits paused
 * (below), and the guest must then finish with its own exit status.  The
 * same state, with the memory and devices, must also run to the end in a
 * second VM that was built but never run (a clone).  And
 * the hostile inputs: a truncated buffer, a section for a vCPU the VM does
 * not have, a corrupted MSR count, each refused with a message that names
 * the problem, the VM's state unchanged; and a value only KVM refuses,
 * after which the state from before the restore is put back (or, through
 * kvm_state_restore_fresh, a migration destination's restore, which reads
 * nothing to put back, said to be left half restored).
 *
 * What legitimately differs between two saves of a paused VM:
 *   kvm-vm CLCK bytes 0-7    the kvmclock (host monotonic time goes on)
 *              bytes 8-11   KVM's flags: KVM_CLOCK_TSC_STABLE and the others
 *                           say whether the host's KVM used its master
 *                           clock at that moment, and a KVM_SET_CLOCK may
 *                           switch that on (seen in a 1-vCPU KVM box: 0
 *                           before, 0xe after)
 *   kvm-vm PIT2 count_load_time of each channel (a host ktime, reset by
 *                            KVM_SET_PIT2)
 *   vcpuN  MSRS  IA32_TSC's value (the TSC runs while the vCPU is out);
 *                HV_X64_MSR_TIME_REF_COUNT 0x40000020 (Hyper-V's reference
 *                counter: the kvmclock in 100 ns units, read-only, KVM
 *                ignores a host write); HV_X64_MSR_VP_RUNTIME 0x40000010
 *                (KVM reports the CPU time of the thread that asks, plus an
 *                offset).  KVM lists both even though Shoal offers the
 *                guest no Hyper-V interface.
 *   vcpuN  LAPI  the timer's current count, APIC offset 0x390
 * Everything else must be byte for byte equal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "base/error.h"
#include "base/exitcode.h"
#include "base/state.h"
#include "vmm/kvm_state.h"
#include "vmm/vm.h"

#define MSR_IA32_TSC  0x10
#define HV_X64_MSR_VP_RUNTIME      0x40000010
#define HV_X64_MSR_TIME_REF_COUNT  0x40000020
#define APIC_TMCCT    0x390

/* ---- building and running a VM by hand (harness_run runs to the end) ---- */

struct run {
	struct vm *vm;
	pthread_t thread;
	int status;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool ready;
	int nbad;             /* "error ..." or "... bad ..." reports */
};

static void on_report(void *opaque, const char *line)
{
	struct run *r = opaque;

	pthread_mutex_lock(&r->lock);
	if (!strncmp(line, "ready", 5))
		r->ready = true;
	if (!strncmp(line, "error", 5) || strstr(line, " bad"))
		r->nbad++;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	fprintf(stderr, "  guest: %s\n", line);
}

static void *run_thread(void *arg)
{
	struct run *r = arg;

	r->status = vm_run(r->vm);
	return NULL;
}

static struct vm *make_vm(const char *cmdline, int cpus)
{
	struct vm_config cfg;
	struct error e = { 0 };
	struct vm *vm;

	vm_config_init(&cfg);
	cfg.kernel = strdup(harness_guest_path());
	cfg.cmdline = strdup(cmdline);
	cfg.cpus = cpus;
	cfg.memory = 256ULL << 20;
	cfg.timeout_s = 300;
	assert_int_equal(vm_config_set_console(&cfg, "file:/dev/null", &e), 0);
	vm = vm_create(&cfg, &e);
	vm_config_free(&cfg);
	if (!vm)
		fprintf(stderr, "vm_create: %s\n", e.msg);
	assert_non_null(vm);
	return vm;
}

/* ---- walking a saved buffer ---- */

struct rec {
	const char *section;
	uint32_t tag, len;
	size_t off;          /* of the record's body in the buffer */
};

static char *tag_str(uint32_t tag, char out[5])
{
	memcpy(out, &tag, 4);
	out[4] = '\0';
	return out;
}

/* Find record `tag` of section `section`; returns its body's offset or
 * (size_t)-1. */
static size_t find_rec(const uint8_t *buf, size_t len, const char *section, uint32_t tag,
		       uint32_t *rec_len)
{
	struct state_reader r, p;
	char name[64];
	uint16_t ver;

	state_reader_init(&r, buf, len);
	while (r.pos < r.len && !state_section_read(&r, name, &ver, &p)) {
		if (strcmp(name, section))
			continue;
		while (p.len - p.pos >= 8) {
			uint32_t t = state_get_u32(&p), l = state_get_u32(&p);

			if (t == tag) {
				if (rec_len)
					*rec_len = l;
				return (size_t)(p.data + p.pos - buf);
			}
			p.pos += l;
		}
	}
	return (size_t)-1;
}

/* Where a difference in `rec` at byte `i` is expected (see the top). */
static bool moves(const char *section, uint32_t tag, const uint8_t *body, size_t i)
{
	if (!strcmp(section, "kvm-vm") && tag == KVM_STATE_TAG('C', 'L', 'C', 'K'))
		return i < 12;
	if (!strcmp(section, "kvm-vm") && tag == KVM_STATE_TAG('P', 'I', 'T', '2')) {
		for (int c = 0; c < 3; c++) {
			size_t o = offsetof(struct kvm_pit_state2, channels) +
				   c * sizeof(struct kvm_pit_channel_state) +
				   offsetof(struct kvm_pit_channel_state, count_load_time);

			if (i >= o && i < o + 8)
				return true;
		}
		return false;
	}
	if (tag == KVM_STATE_TAG('L', 'A', 'P', 'I'))
		return i >= APIC_TMCCT && i < APIC_TMCCT + 4;
	if (tag == KVM_STATE_TAG('M', 'S', 'R', 'S') && i >= 4) {
		size_t entry = (i - 4) / 16, in = (i - 4) % 16;
		uint32_t index;

		memcpy(&index, body + 4 + entry * 16, 4);
		return (index == MSR_IA32_TSC || index == HV_X64_MSR_TIME_REF_COUNT ||
			index == HV_X64_MSR_VP_RUNTIME) && in >= 8;
	}
	return false;
}

/* Compare two saves section by section, record by record; prints and
 * counts the differences that are not expected to move. */
static int compare_saves(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
			 bool verbose)
{
	struct state_reader ra, rb, pa, pb;
	char na[64], nb[64], tn[5];
	uint16_t va, vb;
	int diffs = 0;

	state_reader_init(&ra, a, alen);
	state_reader_init(&rb, b, blen);
	while (ra.pos < ra.len || rb.pos < rb.len) {
		if (state_section_read(&ra, na, &va, &pa) || state_section_read(&rb, nb, &vb, &pb)) {
			fprintf(stderr, "  differ: the saves have different sections\n");
			return diffs + 1;
		}
		if (strcmp(na, nb) || va != vb || pa.len != pb.len) {
			fprintf(stderr, "  differ: section %s v%u (%zu bytes) vs %s v%u (%zu bytes)\n",
				na, va, pa.len, nb, vb, pb.len);
			return diffs + 1;
		}
		while (pa.pos < pa.len) {
			uint32_t ta = state_get_u32(&pa), la = state_get_u32(&pa);
			uint32_t tb = state_get_u32(&pb), lb = state_get_u32(&pb);
			const uint8_t *ba = pa.data + pa.pos, *bb = pb.data + pb.pos;
			int moved = 0;

			if (pa.error || pb.error || ta != tb || la != lb ||
			    la > pa.len - pa.pos) {
				fprintf(stderr, "  differ: section %s: record layout\n", na);
				return diffs + 1;
			}
			for (size_t i = 0; i < la; i++) {
				if (ba[i] == bb[i])
					continue;
				if (moves(na, ta, ba, i)) {
					moved++;
					continue;
				}
				if (diffs < 20 && ta == KVM_STATE_TAG('M', 'S', 'R', 'S') && i >= 4) {
					uint32_t index;

					memcpy(&index, ba + 4 + (i - 4) / 16 * 16, 4);
					fprintf(stderr, "  differ: section %s MSR 0x%x byte %zu: "
						"0x%02x vs 0x%02x\n", na, index, (i - 4) % 16,
						ba[i], bb[i]);
				} else if (diffs < 20) {
					fprintf(stderr, "  differ: section %s record %s byte %zu: "
						"0x%02x vs 0x%02x\n", na, tag_str(ta, tn), i, ba[i], bb[i]);
				}
				diffs++;
			}
			if (moved && verbose)
				fprintf(stderr, "  moved (expected): section %s record %s, %d bytes\n",
					na, tag_str(ta, tn), moved);
			pa.pos += la;
			pb.pos += lb;
		}
	}
	return diffs;
}

static uint64_t reg_rip(struct vm *vm, int cpu)
{
	struct kvm_regs regs;

	assert_int_equal(ioctl(vm->vcpus[cpu].fd, KVM_GET_REGS, &regs), 0);
	return regs.rip;
}

/* ---- the round trip ---- */

static void test_round_trip(void **state)
{
	struct run r = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct state_writer w1, w2;
	struct error e = { 0 };
	struct timespec until;
	uint32_t mlen;
	size_t off;
	int rc;

	harness_require_kvm();
	r.vm = make_vm("allcpus spin 2500; exit 9", 2);
	vm_set_report_fn(r.vm, on_report, &r);
	assert_int_equal(pthread_create(&r.thread, NULL, run_thread, &r), 0);

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 120;
	pthread_mutex_lock(&r.lock);
	while (!r.ready && pthread_cond_timedwait(&r.cond, &r.lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&r.lock);
	assert_true(r.ready);
	usleep(400 * 1000);   /* into the spin on both vCPUs */

	/* A running VM is refused. */
	state_writer_init(&w1);
	assert_int_equal(kvm_state_save(r.vm, &w1, &e), -1);
	fprintf(stderr, "  running: %s\n", e.msg);
	assert_non_null(strstr(e.msg, "pause it first"));

	vm_pause(r.vm);
	assert_false(atomic_load(&r.vm->stopping));
	rc = kvm_state_save(r.vm, &w1, &e);
	if (rc)
		fprintf(stderr, "save: %s\n", e.msg);
	assert_int_equal(rc, 0);
	off = find_rec(w1.data, w1.len, "vcpu0", KVM_STATE_TAG('M', 'S', 'R', 'S'), &mlen);
	assert_true(off != (size_t)-1);
	fprintf(stderr, "  saved %zu bytes; vcpu0: %u MSRs, rip 0x%llx; vcpu1 rip 0x%llx\n",
		w1.len, (mlen - 4) / 16, (unsigned long long)reg_rip(r.vm, 0),
		(unsigned long long)reg_rip(r.vm, 1));

	/* Scribble over both vCPUs' registers. */
	for (int i = 0; i < 2; i++) {
		struct kvm_regs regs;

		memset(&regs, 0xa5, sizeof(regs));
		regs.rip = 0xdead0000beefULL + (uint64_t)i;
		regs.rflags = 0x2;
		assert_int_equal(ioctl(r.vm->vcpus[i].fd, KVM_SET_REGS, &regs), 0);
		assert_int_equal(reg_rip(r.vm, i), 0xdead0000beefULL + (uint64_t)i);
	}

	rc = kvm_state_restore(r.vm, w1.data, w1.len, &e);
	if (rc)
		fprintf(stderr, "restore: %s\n", e.msg);
	assert_int_equal(rc, 0);
	assert_true(reg_rip(r.vm, 0) != 0xdead0000beefULL);

	state_writer_init(&w2);
	assert_int_equal(kvm_state_save(r.vm, &w2, &e), 0);
	assert_int_equal(w1.len, w2.len);
	assert_int_equal(compare_saves(w1.data, w1.len, w2.data, w2.len, true), 0);

	vm_resume(r.vm);
	pthread_join(r.thread, NULL);
	fprintf(stderr, "  guest finished: status %d (%s)\n", r.status, r.vm->exit_reason);
	assert_int_equal(r.status, 9);
	assert_int_equal(r.nbad, 0);
	vm_destroy(r.vm);
	state_writer_free(&w1);
	state_writer_free(&w2);
}

/* The snapshot use: pause a guest mid-workload, copy its memory, devices
 * and KVM state into a second VM that was built but never run, and run
 * that one to the end; the first is then stopped.  The restore is
 * kvm_state_restore_fresh, a migration destination's (no state read to put
 * back), which the clone, once it has run, must refuse. */
static void test_clone_into_fresh_vm(void **state)
{
	struct run a = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct run b = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct state_writer kw, dw;
	struct error e = { 0 };
	struct timespec until;
	int rc;

	harness_require_kvm();
	a.vm = make_vm("allcpus spin 2500; exit 9", 2);
	b.vm = make_vm("allcpus spin 2500; exit 9", 2);
	vm_set_report_fn(a.vm, on_report, &a);
	vm_set_report_fn(b.vm, on_report, &b);
	assert_int_equal(pthread_create(&a.thread, NULL, run_thread, &a), 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 120;
	pthread_mutex_lock(&a.lock);
	while (!a.ready && pthread_cond_timedwait(&a.cond, &a.lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&a.lock);
	assert_true(a.ready);
	usleep(400 * 1000);
	vm_pause(a.vm);
	assert_false(atomic_load(&a.vm->stopping));

	state_writer_init(&kw);
	state_writer_init(&dw);
	assert_int_equal(kvm_state_save(a.vm, &kw, &e), 0);
	assert_int_equal(vm_save_devices(a.vm, &dw), 0);
	assert_int_equal(a.vm->mem.size, b.vm->mem.size);
	memcpy(b.vm->mem.host, a.vm->mem.host, a.vm->mem.size);
	assert_int_equal(vm_restore_devices(b.vm, dw.data, dw.len, &e), 0);
	rc = kvm_state_restore_fresh(b.vm, kw.data, kw.len, 0, &e);
	if (rc)
		fprintf(stderr, "restore into the fresh VM: %s\n", e.msg);
	assert_int_equal(rc, 0);

	fprintf(stderr, "  running the clone\n");
	b.status = vm_run(b.vm);
	fprintf(stderr, "  clone finished: status %d (%s)\n", b.status, b.vm->exit_reason);
	assert_int_equal(b.status, 9);
	assert_int_equal(b.nbad, 0);
	assert_int_equal(kvm_state_restore_fresh(b.vm, kw.data, kw.len, 0, &e), -1);
	fprintf(stderr, "  refused after running: %s\n", e.msg);
	assert_non_null(strstr(e.msg, "has run"));

	vm_stop(a.vm, 0, "test: the original is not needed");
	vm_resume(a.vm);
	pthread_join(a.thread, NULL);
	vm_destroy(a.vm);
	vm_destroy(b.vm);
	state_writer_free(&kw);
	state_writer_free(&dw);
}

/* vCPU 0's IA32_TSC and the kvmclock of a VM, read now. */
static void read_clocks(struct vm *vm, uint64_t *tsc, uint64_t *clock)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = 0x10 };
	struct kvm_clock_data c = { 0 };

	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &m), 1);
	assert_int_equal(ioctl(vm->vm_fd, KVM_GET_CLOCK, &c), 0);
	*tsc = m.e.data;
	*clock = c.clock;
}

/* A live migration's restore (kvm_state_restore_fresh with the source's
 * realtime at the save) runs the guest's TSC and kvmclock on by the time
 * elapsed since, so that the guest sees its pause: restored "2 s after"
 * the save, both are 2 s past the saved values; without a time they go
 * on from the saved values; a time in the future advances nothing; 100 s
 * is cut to KVM_STATE_ADVANCE_MAX_NS (10 s).  The saved VM ran 0.6 s
 * before its save, and each restored VM is new: KVM before Linux 6.6 took
 * a TSC write within a second of a new VM's own TSC for a vCPU
 * synchronization and kept the new VM's TSC, which went on from its
 * creation, 0.6 s behind the saved value (the "none" case caught it). */
static void test_fresh_restore_advances_clocks(void **state)
{
	struct { int64_t ago_ms; double lo, hi; } cases[] = {
		{ 2000, 1.95, 2.5 }, { 0, -0.05, 0.5 }, { -5000, -0.05, 0.5 }, { 100000, 9.95, 10.5 },
	};
	struct state_writer kw;
	struct error e = { 0 };
	uint64_t ta, ca;
	struct vm *a;
	long khz;

	(void)state;
	harness_require_kvm();
	a = make_vm("exit 0", 1);
	khz = ioctl(a->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	assert_true(khz > 0);
	usleep(600 * 1000);
	state_writer_init(&kw);
	assert_int_equal(kvm_state_save(a, &kw, &e), 0);
	read_clocks(a, &ta, &ca);           /* the saved values, give or take microseconds */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm *b = make_vm("exit 0", 1);
		uint64_t tb, cb, rt = 0;
		struct timespec ts;
		double dt, dc;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (cases[i].ago_ms)
			rt = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec -
			     (uint64_t)(cases[i].ago_ms * 1000000);
		assert_int_equal(kvm_state_restore_fresh(b, kw.data, kw.len, rt, &e), 0);
		read_clocks(b, &tb, &cb);
		dt = ((double)tb - (double)ta) / ((double)khz * 1000.0);
		dc = ((double)cb - (double)ca) / 1e9;
		fprintf(stderr, "  restored with the save %lld ms ago: TSC %+.3f s, kvmclock %+.3f s "
			"past the saved values\n", (long long)cases[i].ago_ms, dt, dc);
		assert_true(dt > cases[i].lo && dt < cases[i].hi);
		assert_true(dc > cases[i].lo && dc < cases[i].hi);
		vm_destroy(b);
	}
	vm_destroy(a);
	state_writer_free(&kw);
}

/* ---- hostile buffers: refused, the VM unchanged ---- */

struct fixture {
	struct vm *vm;
	struct state_writer good;
};

static void fixture_init(struct fixture *f)
{
	struct error e = { 0 };

	harness_require_kvm();
	f->vm = make_vm("exit 0", 2);
	state_writer_init(&f->good);
	assert_int_equal(kvm_state_save(f->vm, &f->good, &e), 0);
}

static void fixture_free(struct fixture *f)
{
	vm_destroy(f->vm);
	state_writer_free(&f->good);
}

/* A copy of the good save whose vcpu0 rip is 0x1234, so that a restore that
 * applied vcpu0 before finding the fault later on would show. */
static uint8_t *bad_copy(const struct fixture *f, size_t extra)
{
	uint8_t *b = malloc(f->good.len + extra);
	size_t off;

	assert_non_null(b);
	memcpy(b, f->good.data, f->good.len);
	off = find_rec(b, f->good.len, "vcpu0", KVM_STATE_TAG('R', 'E', 'G', 'S'), NULL);
	assert_true(off != (size_t)-1);
	memcpy(b + off + offsetof(struct kvm_regs, rip), &(uint64_t){ 0x1234 }, 8);
	return b;
}

/* Restore `b` and expect a refusal naming `want1` and `want2`; then the
 * VM's state must be what it was. */
static void expect_refused(struct fixture *f, const uint8_t *b, size_t len, const char *want1,
			   const char *want2)
{
	struct error e = { 0 };
	struct state_writer after;

	assert_int_equal(kvm_state_restore(f->vm, b, len, &e), -1);
	fprintf(stderr, "  refused (status %d): %s\n", e.status, e.msg);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_non_null(strstr(e.msg, want1));
	if (want2)
		assert_non_null(strstr(e.msg, want2));
	assert_true(reg_rip(f->vm, 0) != 0x1234);
	state_writer_init(&after);
	assert_int_equal(kvm_state_save(f->vm, &after, &e), 0);
	assert_int_equal(compare_saves(f->good.data, f->good.len, after.data, after.len, false), 0);
	state_writer_free(&after);
}

static void test_truncated(void **state)
{
	struct fixture f;
	uint8_t *b;

	fixture_init(&f);
	b = bad_copy(&f, 0);
	expect_refused(&f, b, f.good.len - 7, "cut short", NULL);
	expect_refused(&f, b, f.good.len / 2, "cut short", NULL);
	expect_refused(&f, b, 3, "cut short", NULL);
	/* And the untouched copy, so the refusals above were the cuts. */
	{
		struct error e = { 0 };

		assert_int_equal(kvm_state_restore(f.vm, f.good.data, f.good.len, &e), 0);
	}
	free(b);
	fixture_free(&f);
}

static void test_vcpu_that_does_not_exist(void **state)
{
	struct fixture f;
	struct state_reader r, p;
	char name[64];
	uint16_t ver;
	size_t start = 0, at;
	uint8_t *b;

	fixture_init(&f);
	/* Find the vcpu1 section and append a copy of it named vcpu2. */
	state_reader_init(&r, f.good.data, f.good.len);
	for (;;) {
		at = r.pos;
		assert_int_equal(state_section_read(&r, name, &ver, &p), 0);
		if (!strcmp(name, "vcpu1")) {
			start = at;
			break;
		}
	}
	b = bad_copy(&f, r.pos - start);
	memcpy(b + f.good.len, f.good.data + start, r.pos - start);
	assert_int_equal(b[f.good.len + 4], 5);          /* name length */
	assert_int_equal(b[f.good.len + 9], '1');        /* "vcpu1" */
	b[f.good.len + 9] = '2';
	expect_refused(&f, b, f.good.len + (r.pos - start), "section vcpu2", "no such vCPU");
	free(b);
	fixture_free(&f);
}

static void test_bad_msr_count(void **state)
{
	static const int64_t deltas[] = { 0, +1, -1 };   /* 0: set to 0xffffffff */
	struct fixture f;
	uint32_t rlen, count;
	size_t off;
	uint8_t *b;

	fixture_init(&f);
	off = find_rec(f.good.data, f.good.len, "vcpu1", KVM_STATE_TAG('M', 'S', 'R', 'S'), &rlen);
	assert_true(off != (size_t)-1);
	memcpy(&count, f.good.data + off, 4);
	assert_int_equal(rlen, 4 + 16 * count);
	assert_true(count > 0);
	for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
		uint32_t bad = deltas[i] ? (uint32_t)((int64_t)count + deltas[i]) : 0xffffffffu;

		b = bad_copy(&f, 0);
		memcpy(b + off, &bad, 4);
		fprintf(stderr, "  vcpu1 MSR count %u -> %u\n", count, bad);
		/* count+1 may also exceed what the host lists: either message */
		expect_refused(&f, b, f.good.len, "section vcpu1: record MSRS",
			       deltas[i] < 0 ? "need" : deltas[i] ? NULL : "more than");
		free(b);
	}
	fixture_free(&f);
}

/* A value only KVM can refuse (an unknown vCPU-events flag on vcpu1, after
 * vcpu0 was applied with rip 0x1234): refused, and the state read before
 * the restore is put back. */
static void test_kvm_refusal_puts_back(void **state)
{
	struct fixture f;
	uint32_t rlen, flags = 0x80000000u;
	size_t off;
	uint8_t *b;

	fixture_init(&f);
	b = bad_copy(&f, 0);
	off = find_rec(b, f.good.len, "vcpu1", KVM_STATE_TAG('E', 'V', 'N', 'T'), &rlen);
	assert_true(off != (size_t)-1);
	assert_int_equal(rlen, sizeof(struct kvm_vcpu_events));
	memcpy(b + off + offsetof(struct kvm_vcpu_events, flags), &flags, 4);
	expect_refused(&f, b, f.good.len, "vcpu1: KVM_SET_VCPU_EVENTS", "put back");
	free(b);
	fixture_free(&f);
}

/* The same refusal through kvm_state_restore_fresh: refused, and said to
 * leave the VM half restored, since nothing was read to put back (its
 * caller destroys the VM). */
static void test_kvm_refusal_fresh(void **state)
{
	struct fixture f;
	struct error e = { 0 };
	uint32_t rlen, flags = 0x80000000u;
	size_t off;
	uint8_t *b;

	fixture_init(&f);
	b = bad_copy(&f, 0);
	off = find_rec(b, f.good.len, "vcpu1", KVM_STATE_TAG('E', 'V', 'N', 'T'), &rlen);
	assert_true(off != (size_t)-1);
	memcpy(b + off + offsetof(struct kvm_vcpu_events, flags), &flags, 4);
	assert_int_equal(kvm_state_restore_fresh(f.vm, b, f.good.len, 0, &e), -1);
	fprintf(stderr, "  refused (status %d): %s\n", e.status, e.msg);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_non_null(strstr(e.msg, "vcpu1: KVM_SET_VCPU_EVENTS"));
	assert_non_null(strstr(e.msg, "half restored"));
	assert_null(strstr(e.msg, "put back"));
	free(b);
	fixture_free(&f);
}

static void test_what(void **state)
{
	assert_non_null(strstr(kvm_state_what(), "MSR"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_what),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_clone_into_fresh_vm),
		cmocka_unit_test(test_fresh_restore_advances_clocks),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_vcpu_that_does_not_exist),
		cmocka_unit_test(test_bad_msr_count),
		cmocka_unit_test(test_kvm_refusal_puts_back),
		cmocka_unit_test(test_kvm_refusal_fresh),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
