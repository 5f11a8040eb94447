/*
 * test_pv_protect.c - the pv-protect device (src/devices/pv_protect.c) on
 * a fake host with a fake slot backend: requests and their status codes,
 * the table the backend is handed, a backend that fails, faults answered
 * from another thread (allow, refuse, a refused read's value), the
 * timeout, accesses at unprotected RAM and outside RAM, and what a
 * snapshot is told.  No KVM: tests/system/guest_protect.sh runs it for
 * real.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "../fake_host.h"
#include "abi/pv_protect.h"
#include "devices/pv_protect.h"

#define RAM   (16ull << 20)
#define PAGE  0x1000ull
#define REQ   0x10000ull          /* the request block */
#define SHARED 0x20000ull         /* the shared page */
#define A     0x100000ull         /* protected ranges from here */

struct fake_be {
	int holds, releases, sets, waits_begin, waits_end;
	bool fail;
	int n;
	struct pv_protect_range r[PV_PROTECT_MAX_RANGES];
};

static void be_hold(void *o, bool on)
{
	struct fake_be *b = o;

	if (on)
		b->holds++;
	else
		b->releases++;
}

static int be_set(void *o, const struct pv_protect_range *r, int n, char *why, size_t len)
{
	struct fake_be *b = o;

	b->sets++;
	if (b->fail) {
		snprintf(why, len, "refused by the test");
		return -1;
	}
	if (n)
		memcpy(b->r, r, sizeof(*r) * (size_t)n);
	b->n = n;
	return 0;
}

static void be_wait(void *o, bool begin)
{
	struct fake_be *b = o;

	if (begin)
		b->waits_begin++;
	else
		b->waits_end++;
}

struct t {
	struct fake_host *h;
	struct fake_be be;
	struct device *d;
};

static struct t *setup(void)
{
	struct t *t = calloc(1, sizeof(*t));
	struct pv_protect_backend be = { .opaque = &t->be, .hold = be_hold, .set = be_set,
					 .wait = be_wait };
	struct error e;

	t->h = fake_host_new(RAM);
	assert_int_equal(guest_mem_create_anon(&t->h->mem, RAM, &e), 0);
	assert_int_equal(pv_protect_create(&t->h->host, &be, &t->d, &e), 0);
	return t;
}

static void teardown(struct t *t)
{
	struct guest_mem mem = t->h->mem;

	fake_host_free(t->h);      /* the device first, then the RAM it used */
	guest_mem_destroy(&mem);
	free(t);
}

static int call(struct t *t, uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2)
{
	struct pv_protect_req q = { .op = op, .status = -1, .a0 = a0, .a1 = a1, .a2 = a2 };
	uint32_t gpa = (uint32_t)REQ;

	assert_int_equal(guest_mem_write(&t->h->mem, REQ, &q, sizeof(q)), 0);
	bus_io(&t->h->iobus, PV_PROTECT_PORT, &gpa, 4, true);
	assert_int_equal(guest_mem_read(&t->h->mem, REQ, &q, sizeof(q)), 0);
	return q.status;
}

static struct pv_protect_page *page(struct t *t)
{
	return guest_mem_ptr(&t->h->mem, SHARED, PAGE);
}

static void test_requests(void **state)
{
	struct t *t = setup();
	uint32_t magic = 0;

	bus_io(&t->h->iobus, PV_PROTECT_PORT, &magic, 4, false);
	assert_int_equal(magic, PV_PROTECT_MAGIC);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, PAGE, PV_PROTECT_READONLY),
			 PV_PROTECT_ENOHANDLER);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, 5, 0), PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED + 8, PV_PROTECT_GSI, 0),
			 PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, PV_PROTECT_GSI, 10001),
			 PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, RAM, PV_PROTECT_GSI, 0), PV_PROTECT_ERANGE);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, PV_PROTECT_GSI, 0), PV_PROTECT_OK);
	assert_int_equal(page(t)->magic, PV_PROTECT_MAGIC);
	assert_int_equal(page(t)->nrecords, PV_PROTECT_MAX_RECORDS);

	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A + 8, PAGE, 1), PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, 0, 1), PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, PAGE, 3), PV_PROTECT_EINVAL);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, RAM, PAGE, 1), PV_PROTECT_ERANGE);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, 0xfffffffffffff000ull, 1),
			 PV_PROTECT_ERANGE);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, SHARED - PAGE, 2 * PAGE, 2),
			 PV_PROTECT_ESHARED);
	assert_int_equal(call(t, 99, 0, 0, 0), PV_PROTECT_EINVAL);
	assert_int_equal(t->be.sets, 0);

	/* the table is sorted, the backend gets all of it, under a hold */
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A + 4 * PAGE, PAGE, 2), PV_PROTECT_OK);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, 2 * PAGE, 1), PV_PROTECT_OK);
	assert_int_equal(t->be.n, 2);
	assert_true(t->be.r[0].gpa == A && t->be.r[0].len == 2 * PAGE && t->be.r[0].mode == 1);
	assert_true(t->be.r[1].gpa == A + 4 * PAGE && t->be.r[1].mode == 2);
	assert_int_equal(t->be.holds, t->be.releases);
	assert_true(t->be.holds >= 2);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A + PAGE, 2 * PAGE, 1), PV_PROTECT_EOVERLAP);
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, PV_PROTECT_GSI, 0), PV_PROTECT_EBUSY);
	for (int i = 2; i < PV_PROTECT_MAX_RANGES; i++)
		assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A + (uint64_t)(8 + 2 * i) * PAGE,
				      PAGE, 1), PV_PROTECT_OK);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, 0x800000, PAGE, 1), PV_PROTECT_ENOSPC);
	assert_int_equal(t->be.n, PV_PROTECT_MAX_RANGES);

	/* a backend that fails: EHOST, and the table stays */
	t->be.fail = true;
	assert_int_equal(call(t, PV_PROTECT_OP_UNPROTECT, A, 2 * PAGE, 0), PV_PROTECT_EHOST);
	t->be.fail = false;
	assert_int_equal(call(t, PV_PROTECT_OP_UNPROTECT, A, PAGE, 0), PV_PROTECT_ENOENT);
	assert_int_equal(call(t, PV_PROTECT_OP_UNPROTECT, A, 2 * PAGE, 0), PV_PROTECT_OK);
	assert_int_equal(t->be.n, PV_PROTECT_MAX_RANGES - 1);
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, 12345, PV_PROTECT_ALLOW, 0), PV_PROTECT_ENOENT);
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, 1, 7, 0), PV_PROTECT_EINVAL);

	/* a snapshot is told why not; UNREGISTER clears everything */
	{
		char why[256];

		assert_int_equal(pv_protect_busy(t->d, why, sizeof(why)), PV_PROTECT_MAX_RANGES - 1);
		assert_non_null(strstr(why, "15 protected page ranges"));
	}
	assert_int_equal(call(t, PV_PROTECT_OP_UNREGISTER, 0, 0, 0), PV_PROTECT_OK);
	assert_int_equal(t->be.n, 0);
	assert_int_equal(pv_protect_busy(t->d, NULL, 0), 0);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, PAGE, 1), PV_PROTECT_ENOHANDLER);
	teardown(t);
}

static void test_bad_blocks(void **state)
{
	struct t *t = setup();
	struct pv_protect_req q = { .op = PV_PROTECT_OP_REGISTER, .status = 77, .a0 = SHARED,
				    .a1 = PV_PROTECT_GSI };
	uint32_t gpa;
	uint16_t small = 0;

	/* misaligned, outside RAM, a 2-byte write: ignored, nothing written */
	assert_int_equal(guest_mem_write(&t->h->mem, REQ + 4, &q, sizeof(q)), 0);
	gpa = (uint32_t)REQ + 4;
	bus_io(&t->h->iobus, PV_PROTECT_PORT, &gpa, 4, true);
	gpa = (uint32_t)RAM;
	bus_io(&t->h->iobus, PV_PROTECT_PORT, &gpa, 4, true);
	bus_io(&t->h->iobus, PV_PROTECT_PORT, &small, 2, true);
	assert_int_equal(guest_mem_read(&t->h->mem, REQ + 4, &q, sizeof(q)), 0);
	assert_int_equal(q.status, 77);
	assert_int_equal(page(t)->magic, 0);
	/* a block inside a protected range: ignored too */
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, PV_PROTECT_GSI, 0), 0);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, REQ, PAGE, 1), 0);
	q = (struct pv_protect_req){ .op = PV_PROTECT_OP_UNREGISTER, .status = 77 };
	assert_int_equal(guest_mem_write(&t->h->mem, REQ + 64, &q, sizeof(q)), 0);
	gpa = (uint32_t)REQ + 64;
	bus_io(&t->h->iobus, PV_PROTECT_PORT, &gpa, 4, true);
	assert_int_equal(t->be.n, 1);
	teardown(t);
}

struct fault {
	struct t *t;
	int cpu;
	uint64_t gpa, data;
	int len;
	bool write, handled;
};

static void *fault_thread(void *arg)
{
	struct fault *f = arg;

	f->handled = pv_protect_access(f->t->d, f->cpu, f->gpa, &f->data, f->len, f->write);
	return NULL;
}

/* Wait for record[cpu] to be pending; its seq. */
static uint64_t wait_pending(struct t *t, int cpu)
{
	for (int i = 0; i < 5000; i++) {
		struct pv_protect_record *r = &page(t)->record[cpu];

		if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) == PV_PROTECT_REC_PENDING)
			return r->seq;
		usleep(1000);
	}
	fail_msg("no fault record for vcpu %d", cpu);
	return 0;
}

static void test_faults(void **state)
{
	struct t *t = setup();
	uint64_t *ram = guest_mem_ptr(&t->h->mem, A, 2 * PAGE), seq;
	struct fault f;
	pthread_t th;

	ram[0] = 0x1111;
	ram[PAGE / 8] = 0x5555;
	assert_int_equal(call(t, PV_PROTECT_OP_REGISTER, SHARED, PV_PROTECT_GSI, 100), 0);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A, PAGE, PV_PROTECT_READONLY), 0);
	assert_int_equal(call(t, PV_PROTECT_OP_PROTECT, A + PAGE, PAGE, PV_PROTECT_NOACCESS), 0);

	/* a write, refused: the record says what, the page keeps its bytes */
	f = (struct fault){ t, 3, A, 0x2222, 8, true, false };
	pthread_create(&th, NULL, fault_thread, &f);
	seq = wait_pending(t, 3);
	assert_int_equal(page(t)->record[3].gpa, A);
	assert_int_equal(page(t)->record[3].cpu, 3);
	assert_int_equal(page(t)->record[3].kind, PV_PROTECT_FAULT_WRITE);
	assert_int_equal(page(t)->record[3].len, 8);
	assert_int_equal(page(t)->record[3].data, 0x2222);
	assert_int_equal(page(t)->seq, seq);
	assert_int_equal(pv_protect_busy(t->d, NULL, 0), 3);   /* 2 ranges, 1 in flight */
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, seq, PV_PROTECT_REFUSE, 0), 0);
	pthread_join(th, NULL);
	assert_true(f.handled);
	assert_int_equal(ram[0], 0x1111);
	assert_int_equal(page(t)->record[3].state, PV_PROTECT_REC_DONE);
	assert_int_equal(t->be.waits_begin, 1);
	assert_int_equal(t->be.waits_end, 1);

	/* allowed: stored */
	f = (struct fault){ t, 3, A + 8, 0x3333, 8, true, false };
	pthread_create(&th, NULL, fault_thread, &f);
	seq = wait_pending(t, 3);
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, seq, PV_PROTECT_ALLOW, 0), 0);
	pthread_join(th, NULL);
	assert_int_equal(ram[1], 0x3333);

	/* a read of the inaccessible page: refused gets the handler's value,
	 * allowed the real bytes */
	f = (struct fault){ t, 0, A + PAGE, 0, 4, false, false };
	pthread_create(&th, NULL, fault_thread, &f);
	seq = wait_pending(t, 0);
	assert_int_equal(page(t)->record[0].kind, PV_PROTECT_FAULT_READ);
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, seq, PV_PROTECT_REFUSE, 0xdeadbeefcafe), 0);
	pthread_join(th, NULL);
	assert_int_equal(f.data, 0xbeefcafe);
	f = (struct fault){ t, 0, A + PAGE, 0, 8, false, false };
	pthread_create(&th, NULL, fault_thread, &f);
	seq = wait_pending(t, 0);
	assert_int_equal(call(t, PV_PROTECT_OP_ANSWER, seq, PV_PROTECT_ALLOW, 0), 0);
	pthread_join(th, NULL);
	assert_int_equal(f.data, 0x5555);

	/* nobody answers: refused after 100 ms, counted in the page */
	f = (struct fault){ t, 1, A + 16, 0x4444, 8, true, false };
	fault_thread(&f);
	assert_true(f.handled);
	assert_int_equal(ram[2], 0);
	assert_int_equal(page(t)->timeouts, 1);
	assert_int_equal(page(t)->faults, 5);

	/* a read of the read-only page, unprotected RAM: done on RAM, no
	 * record; outside RAM: not ours (a device's MMIO) */
	f = (struct fault){ t, 1, A, 0, 8, false, false };
	fault_thread(&f);
	assert_true(f.handled);
	assert_int_equal(f.data, 0x1111);
	f = (struct fault){ t, 1, A + 4 * PAGE, 0x77, 8, true, false };
	fault_thread(&f);
	assert_true(f.handled);
	assert_int_equal(*(uint64_t *)guest_mem_ptr(&t->h->mem, A + 4 * PAGE, 8), 0x77);
	f = (struct fault){ t, 1, RAM + PAGE, 0x77, 8, true, false };
	fault_thread(&f);
	assert_false(f.handled);
	assert_int_equal(page(t)->faults, 5);
	teardown(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_requests),
		cmocka_unit_test(test_bad_blocks),
		cmocka_unit_test(test_faults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
