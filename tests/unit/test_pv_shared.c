/*
 * test_pv_shared.c - the pv-shared device (src/devices/pv_shared.c) on a
 * fake host with a fake pagemap backend: which entries count as shared,
 * the bitmap a QUERY writes (bit order, a range over several 512-entry
 * chunks, a partial last byte), a VM with no backend (not a clone), a
 * backend that fails, and hostile requests (frames or bitmap outside RAM,
 * a range that wraps, too many frames, a misaligned gpa, an unknown op, a
 * request block outside RAM or misaligned, a 2-byte OUT): each refused
 * with its status, or ignored, and the device still answers afterwards.
 * No KVM: tests/system/clone_shared_hint.sh runs it for real.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "../fake_host.h"
#include "abi/pv_shared.h"
#include "devices/pv_shared.h"

#define RAM    (136ull << 20)     /* room for the largest request */
#define REQ    0x10000ull         /* the request block */
#define BITMAP 0x20000ull         /* the answer */
#define FRAMES 0x100000ull        /* frames asked about from here */

struct fake_be {
	uint64_t base;                /* host address of guest RAM */
	bool fail;
	int calls, released;
	uint64_t max_n;
};

/* Frame f (counted from guest RAM's start) is private when f % 3 == 0,
 * shared otherwise; the entries vary in how they say so. */
static uint64_t entry_of(uint64_t f)
{
	if (f % 3 == 0)
		return f % 2 ? PV_SHARED_PM_SWAPPED : PV_SHARED_PM_PRESENT;   /* anonymous */
	return f % 2 ? 0 : PV_SHARED_PM_PRESENT | PV_SHARED_PM_FILE;     /* untouched, file */
}

static int be_pagemap(void *o, const void *hva, uint64_t n, uint64_t *ent)
{
	struct fake_be *b = o;
	uint64_t f0 = ((uint64_t)(uintptr_t)hva - b->base) / 4096;

	b->calls++;
	if (n > b->max_n)
		b->max_n = n;
	if (b->fail) {
		errno = EIO;
		return -1;
	}
	for (uint64_t i = 0; i < n; i++)
		ent[i] = entry_of(f0 + i);
	return 0;
}

static void be_release(void *o)
{
	((struct fake_be *)o)->released++;
}

struct t {
	struct fake_host *h;
	struct fake_be be;
	struct device *d;
};

static struct t *setup(bool clone)
{
	struct t *t = calloc(1, sizeof(*t));
	struct pv_shared_backend be = { .opaque = &t->be, .pagemap = be_pagemap,
					.release = be_release };
	struct error e;

	t->h = fake_host_new(RAM);
	assert_int_equal(guest_mem_create_anon(&t->h->mem, RAM, &e), 0);
	t->be.base = (uint64_t)(uintptr_t)t->h->mem.host;
	assert_int_equal(pv_shared_create(&t->h->host, clone ? &be : NULL, &t->d, &e), 0);
	return t;
}

static void teardown(struct t *t)
{
	struct guest_mem mem = t->h->mem;

	fake_host_free(t->h);
	guest_mem_destroy(&mem);
	free(t);
}

static int query(struct t *t, uint32_t op, uint64_t gpa, uint64_t n, uint64_t bitmap,
		 struct pv_shared_req *out)
{
	struct pv_shared_req q = { .op = op, .status = -1, .gpa = gpa, .npages = n,
				   .bitmap = bitmap, .shared = 12345 };
	uint32_t a = (uint32_t)REQ;

	assert_int_equal(guest_mem_write(&t->h->mem, REQ, &q, sizeof(q)), 0);
	bus_io(&t->h->iobus, PV_SHARED_PORT, &a, 4, true);
	assert_int_equal(guest_mem_read(&t->h->mem, REQ, &q, sizeof(q)), 0);
	if (out)
		*out = q;
	return q.status;
}

static bool bit(struct t *t, uint64_t i)
{
	uint8_t b = 0;

	assert_int_equal(guest_mem_read(&t->h->mem, BITMAP + i / 8, &b, 1), 0);
	return (b >> (i % 8)) & 1;
}

static void test_entries(void **state)
{
	uint64_t ent[4] = { 0, PV_SHARED_PM_PRESENT | PV_SHARED_PM_FILE, PV_SHARED_PM_PRESENT,
			    PV_SHARED_PM_SWAPPED };
	uint8_t bits[2] = { 0xff, 0x00 };

	(void)state;
	assert_true(pv_shared_entry_shared(ent[0]));      /* untouched: the file's page */
	assert_true(pv_shared_entry_shared(ent[1]));      /* mapped file page */
	assert_false(pv_shared_entry_shared(ent[2]));     /* anonymous: the clone's copy */
	assert_false(pv_shared_entry_shared(ent[3]));     /* swapped: only anonymous pages swap */
	/* bits 6..9: shared, shared, private, private; others kept */
	assert_int_equal(pv_shared_bits(ent, 4, bits, 6), 2);
	assert_int_equal(bits[0], 0xff);
	assert_int_equal(bits[1], 0x00);
	bits[0] = 0;
	bits[1] = 0xff;
	assert_int_equal(pv_shared_bits(ent, 4, bits, 6), 2);
	assert_int_equal(bits[0], 0xc0);
	assert_int_equal(bits[1], 0xfc);
}

static void test_query(void **state)
{
	struct t *t = setup(true);
	struct pv_shared_req q;
	uint32_t magic = 0;
	uint64_t n = 1300, f0 = FRAMES / 4096, want = 0;
	bool ok = true;

	(void)state;
	bus_io(&t->h->iobus, PV_SHARED_PORT, &magic, 4, false);
	assert_int_equal(magic, PV_SHARED_MAGIC);
	/* garbage where the answer goes: every bit is written */
	memset(guest_mem_ptr(&t->h->mem, BITMAP, 4096), 0xa5, 4096);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, n, BITMAP, &q), PV_SHARED_OK);
	for (uint64_t i = 0; i < n; i++) {
		bool s = (f0 + i) % 3 != 0;

		want += s;
		ok = ok && bit(t, i) == s;
	}
	assert_true(ok);
	assert_int_equal(q.shared, want);
	assert_int_equal(q.flags, PV_SHARED_F_CLONE);
	assert_int_equal(q.version, PV_SHARED_VERSION);
	assert_int_equal(t->be.calls, 3);                 /* 512 + 512 + 276 */
	assert_int_equal(t->be.max_n, 512);
	/* the byte after the bitmap (1300 bits = 162.5 bytes) is untouched */
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&t->h->mem, BITMAP + 163, 1), 0xa5);
	/* the most a request may ask, at the end of RAM */
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, RAM - PV_SHARED_MAX_PAGES * 4096ull,
			       PV_SHARED_MAX_PAGES, BITMAP, &q), PV_SHARED_OK);
	f0 = (RAM - PV_SHARED_MAX_PAGES * 4096ull) / 4096;
	want = 0;
	for (uint64_t i = 0; i < PV_SHARED_MAX_PAGES; i++)
		want += (f0 + i) % 3 != 0;
	assert_int_equal(q.shared, want);
	ok = true;
	for (uint64_t i = 0; i < PV_SHARED_MAX_PAGES; i += 97)
		ok = ok && bit(t, i) == ((f0 + i) % 3 != 0);
	assert_true(ok);
	teardown(t);
}

static void test_not_clone(void **state)
{
	struct t *t = setup(false);
	struct pv_shared_req q;

	(void)state;
	memset(guest_mem_ptr(&t->h->mem, BITMAP, 16), 0xff, 16);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 100, BITMAP, &q), PV_SHARED_OK);
	assert_int_equal(q.shared, 0);
	assert_int_equal(q.flags, 0);
	for (int i = 0; i < 100; i++)
		assert_false(bit(t, (uint64_t)i));
	assert_true(bit(t, 100) || bit(t, 101) || bit(t, 127));   /* past the answer: kept */
	teardown(t);
}

static void test_hostile(void **state)
{
	struct t *t = setup(true);
	struct pv_shared_req q;
	uint32_t a;
	uint16_t small = (uint16_t)REQ;
	int calls;

	(void)state;
	memset(guest_mem_ptr(&t->h->mem, BITMAP, 4096), 0x5a, 4096);
	assert_int_equal(query(t, 7, FRAMES, 1, BITMAP, &q), PV_SHARED_EINVAL);
	assert_int_equal(q.shared, 0);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 0, BITMAP, NULL), PV_SHARED_EINVAL);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, PV_SHARED_MAX_PAGES + 1, BITMAP, NULL),
			 PV_SHARED_EINVAL);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES + 8, 1, BITMAP, NULL), PV_SHARED_EINVAL);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, ~0ull << 20, 1, BITMAP, NULL), PV_SHARED_ERANGE);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, ~0ull & ~0xfffull, 2, BITMAP, NULL),
			 PV_SHARED_ERANGE);                    /* wraps */
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, RAM - 4096, 2, BITMAP, NULL),
			 PV_SHARED_ERANGE);                    /* past the end of RAM */
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, RAM + (1ull << 30), 1, BITMAP, NULL),
			 PV_SHARED_ERANGE);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 64, RAM - 4, NULL), PV_SHARED_ERANGE);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 8, ~0ull, NULL), PV_SHARED_ERANGE);
	assert_int_equal(t->be.calls, 0);                 /* none of them reached the host */
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&t->h->mem, BITMAP, 1), 0x5a);
	/* request blocks that cannot be answered: ignored */
	calls = t->be.calls;
	a = (uint32_t)(RAM - 8);                          /* block runs past RAM */
	bus_io(&t->h->iobus, PV_SHARED_PORT, &a, 4, true);
	a = (uint32_t)REQ + 4;                            /* misaligned */
	bus_io(&t->h->iobus, PV_SHARED_PORT, &a, 4, true);
	a = 0xfee00000u;                                  /* not RAM */
	bus_io(&t->h->iobus, PV_SHARED_PORT, &a, 4, true);
	bus_io(&t->h->iobus, PV_SHARED_PORT, &small, 2, true);
	assert_int_equal(t->be.calls, calls);
	/* a backend that fails: EHOST, and the device goes on */
	t->be.fail = true;
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 8, BITMAP, NULL), PV_SHARED_EHOST);
	t->be.fail = false;
	assert_false(t->d->broken);
	assert_int_equal(query(t, PV_SHARED_OP_QUERY, FRAMES, 8, BITMAP, &q), PV_SHARED_OK);
	assert_int_equal(q.shared, 8 - 2);                /* frames 256..263: 258, 261 private */
	teardown(t);
}

static void test_release(void **state)
{
	struct t *t = setup(true);
	struct fake_be *b = calloc(1, sizeof(*b));

	(void)state;
	*b = t->be;
	/* the backend's opaque is t->be, which teardown frees with t: check
	 * through a second device whose backend outlives it */
	{
		struct pv_shared_backend be = { .opaque = b, .pagemap = be_pagemap,
						.release = be_release };
		struct fake_host *h = fake_host_new(RAM);
		struct error e;

		assert_int_equal(pv_shared_create(&h->host, &be, NULL, &e), 0);
		assert_int_equal(b->released, 0);
		fake_host_free(h);
		assert_int_equal(b->released, 1);
	}
	free(b);
	teardown(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entries),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_not_clone),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
