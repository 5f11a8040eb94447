/*
 * test_memmgr.c - the memory manager's allocation (host/memmgr.c): ESX's
 * shares-per-page ratio with the idle tax, rho = S / (A + k (P - A)),
 * k = 1 / (1 - tau), and the reclaim that takes from the smallest rho
 * first, never below memory_min; and the sampler's averages
 * (mem/idle_sample.c).  Pure functions, no daemon.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host/memmgr.h"
#include "mem/idle_sample.h"

#define MB (1ull << 20)

/* The formula itself: no tax is plain shares per MiB; the tax weighs an
 * idle MiB k times; an allocation smaller than the active set is all
 * active. */
static void test_rho(void **state)
{
	(void)state;
	assert_true(fabs(memmgr_rho(1000, 100 * MB, 0, 0) - 10.0) < 1e-9);
	/* tau 0.75: k = 4; 100 MiB of which 20 active: 20 + 4 * 80 = 340 */
	assert_true(fabs(memmgr_rho(1000, 100 * MB, 20 * MB, 0.75) - 1000.0 / 340) < 1e-9);
	/* all active: the tax does not apply */
	assert_true(fabs(memmgr_rho(1000, 100 * MB, 100 * MB, 0.75) - 10.0) < 1e-9);
	assert_true(fabs(memmgr_rho(1000, 50 * MB, 80 * MB, 0.75) - 20.0) < 1e-9);
	/* the paper's example: tau 0 is shares only, 0.9 taxes idle 10x */
	assert_true(fabs(memmgr_rho(500, 10 * MB, 0, 0.9) - 5.0) < 1e-9);
	assert_true(isinf(memmgr_rho(1000, 0, 0, 0.75)));
}

static uint64_t sum_alloc(const struct memmgr_out *o, size_t n)
{
	uint64_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += o[i].alloc;
	return s;
}

/* The test's case (daemon_memmgr.sh): three 64 MiB VMs, equal shares, one
 * idle, active 40 and 24 MiB, 128 MiB budget.  The closed form with equal
 * rho: P_i = S c / k + A_i (1 - 1/k), c = k (B - (1 - 1/k) sum A) / sum S:
 * 26.7, 44.7 and 56.7 MiB.  The idle VM is reclaimed from first. */
static void test_three_vms(void **state)
{
	struct memmgr_in in[3] = {
		{ 64 * MB, 0, 1000, 16 * MB, 64 * MB, true },
		{ 64 * MB, 40 * MB, 1000, 16 * MB, 64 * MB, true },
		{ 64 * MB, 24 * MB, 1000, 16 * MB, 64 * MB, true },
	};
	struct memmgr_out out[3];
	double want[3] = { 80.0 / 3, 80.0 / 3 + 30, 80.0 / 3 + 18 };

	(void)state;
	memmgr_allocate(in, out, 3, 128 * MB, 0.75);
	assert_int_equal(sum_alloc(out, 3), 128 * MB);
	for (int i = 0; i < 3; i++)
		assert_true(fabs((double)out[i].alloc / MB - want[i]) <= 1.0);
	assert_int_equal(out[0].rank, 1);
	/* the ratios end (nearly) equal: within one quantum's step */
	assert_true(fabs(out[0].rho - out[1].rho) / out[1].rho < 0.05);
	assert_true(fabs(out[2].rho - out[1].rho) / out[1].rho < 0.05);
}

/* Shares: with no tax and no activity, memory splits in proportion to
 * shares (2:1:1 of a 120 MiB budget). */
static void test_shares(void **state)
{
	struct memmgr_in in[3] = {
		{ 128 * MB, 0, 2000, 0, 128 * MB, true },
		{ 128 * MB, 0, 1000, 0, 128 * MB, true },
		{ 128 * MB, 0, 1000, 0, 128 * MB, true },
	};
	struct memmgr_out out[3];

	(void)state;
	memmgr_allocate(in, out, 3, 120 * MB, 0.75);
	assert_int_equal(sum_alloc(out, 3), 120 * MB);
	assert_true(llabs((long long)out[0].alloc - (long long)(60 * MB)) <= (long long)MB);
	assert_true(llabs((long long)out[1].alloc - (long long)(30 * MB)) <= (long long)MB);
	assert_true(llabs((long long)out[2].alloc - (long long)(30 * MB)) <= (long long)MB);
}

/* The tax: two VMs with equal shares, one all idle, one all active.  Tax 0
 * splits evenly; tax 0.75 gives the active one 4 times the idle one's. */
static void test_tax(void **state)
{
	struct memmgr_in in[2] = {
		{ 100 * MB, 0, 1000, 0, 100 * MB, true },
		{ 100 * MB, 100 * MB, 1000, 0, 100 * MB, true },
	};
	struct memmgr_out out[2];

	(void)state;
	memmgr_allocate(in, out, 2, 100 * MB, 0);
	assert_true(llabs((long long)out[0].alloc - (long long)(50 * MB)) <= (long long)MB);
	memmgr_allocate(in, out, 2, 100 * MB, 0.75);
	/* P0 = 4 * ... : 4 P0 = P1 (P1 all active), P0 + P1 = 100 -> 20, 80 */
	assert_true(llabs((long long)out[0].alloc - (long long)(20 * MB)) <= (long long)MB);
	assert_true(llabs((long long)out[1].alloc - (long long)(80 * MB)) <= (long long)MB);
	assert_int_equal(out[0].rank, 1);
}

/* Bounds: never below memory_min (the rest comes from the others), never
 * above memory_max; unmanaged VMs keep their memory and count against the
 * budget; a budget below every minimum leaves them all at their minimum. */
static void test_bounds(void **state)
{
	struct memmgr_in in[3] = {
		{ 64 * MB, 0, 1000, 48 * MB, 64 * MB, true },      /* idle but protected */
		{ 64 * MB, 64 * MB, 1000, 0, 32 * MB, true },      /* capped at 32 */
		{ 32 * MB, 0, 1000, 0, 32 * MB, false },           /* no balloon */
	};
	struct memmgr_out out[3];

	(void)state;
	memmgr_allocate(in, out, 3, 200 * MB, 0.75);
	assert_int_equal(out[0].alloc, 64 * MB);
	assert_int_equal(out[1].alloc, 32 * MB);      /* its max, though there is room */
	assert_int_equal(out[2].alloc, 32 * MB);
	assert_int_equal(out[0].rank, 0);
	memmgr_allocate(in, out, 3, 100 * MB, 0.75);
	assert_int_equal(out[0].alloc, 48 * MB);      /* the idle one stops at its min */
	assert_int_equal(out[1].alloc, 20 * MB);
	assert_int_equal(out[2].alloc, 32 * MB);
	memmgr_allocate(in, out, 3, 10 * MB, 0.75);
	assert_int_equal(out[0].alloc, 48 * MB);
	assert_int_equal(out[1].alloc, 0);
	assert_int_equal(out[2].alloc, 32 * MB);
}

/* The sampler's averages: the first period sets both; the estimate is the
 * larger of fast and slow, so a rise shows quickly and a fall slowly. */
static void test_averages(void **state)
{
	struct idle_sampler s;

	(void)state;
	memset(&s, 0, sizeof(s));
	idle_sampler_fold(&s, 0.5);
	assert_true(fabs(idle_sampler_estimate(&s) - 0.5) < 1e-12);
	idle_sampler_fold(&s, 0.1);               /* fast 0.3, slow 0.475 */
	assert_true(fabs(s.fast - 0.3) < 1e-12);
	assert_true(fabs(s.slow - 0.475) < 1e-12);
	assert_true(fabs(idle_sampler_estimate(&s) - 0.475) < 1e-12);
	idle_sampler_fold(&s, 0.9);               /* up quickly: fast 0.6 */
	assert_true(fabs(idle_sampler_estimate(&s) - 0.6) < 1e-12);
	idle_sampler_fold(&s, 0.9);               /* fast 0.75 */
	assert_true(fabs(idle_sampler_estimate(&s) - 0.75) < 1e-12);
}

/* The sampler on a memfd mapped MAP_SHARED, as the VMM's RAM is: the
 * pages it picks are unmapped (their contents stay), and at the end of the
 * period exactly those written or read since are mapped again.  The
 * sampled pages lie in distinct 64 KiB windows (fault-around). */
static void test_sampler_memfd(void **state)
{
	const uint64_t size = 64 * MB, pages = size / 4096;
	int fd = memfd_create("idle-test", MFD_CLOEXEC);
	struct idle_sampler *s = calloc(1, sizeof(*s));
	struct error e = { 0 };
	volatile uint8_t *m;
	uint64_t want = 0, sum = 0;

	(void)state;
	assert_true(fd >= 0 && s);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	for (uint64_t p = 0; p < pages; p++)
		m[p * 4096] = (uint8_t)p;
	assert_int_equal(idle_sampler_open(s, (void *)m, size, &e), 0);
	assert_int_equal(idle_sampler_period(s, 400, &e), 0);
	assert_int_equal(s->n, 400);
	for (int i = 0; i < s->n; i++) {
		for (int j = 0; j < i; j++)
			assert_true(s->pages[i] / 16 != s->pages[j] / 16);
		want += s->pages[i] < pages / 2;
	}
	for (uint64_t p = 0; p < pages / 4; p++)            /* writes */
		m[p * 4096 + 1] = 1;
	for (uint64_t p = pages / 4; p < pages / 2; p++)    /* reads */
		sum += m[p * 4096];
	assert_int_equal(idle_sampler_period(s, 400, &e), 0);
	assert_int_equal(s->last_sampled, 400);
	assert_int_equal(s->last_touched, want);
	assert_true(fabs(s->last - (double)want / 400) < 1e-12);
	/* nothing touched in the next period: nothing counted */
	assert_int_equal(idle_sampler_period(s, 400, &e), 0);
	assert_int_equal(s->last_touched, 0);
	/* the contents survived the unmapping */
	for (uint64_t p = 0; p < pages; p++)
		assert_int_equal(m[p * 4096], (uint8_t)p);
	(void)sum;
	idle_sampler_close(s);
	munmap((void *)m, size);
	close(fd);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rho),
		cmocka_unit_test(test_three_vms),
		cmocka_unit_test(test_shares),
		cmocka_unit_test(test_tax),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_averages),
		cmocka_unit_test(test_sampler_memfd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
