/*
 * test_virtqueue.c - the device side of split and packed rings, with this
 * file playing the driver in an anonymous guest memory.
 *
 * Three kinds of test:
 *   - hand-built rings: chains, indirect tables, region-crossing buffers,
 *     packed wrap-around, notification decisions across index wrap, queue
 *     save/restore with elements in flight;
 *   - hostile rings: each rule of virtqueue.h broken once, and the queue
 *     must end up broken with a reason and never touch memory outside RAM;
 *   - a differential test: random driver programs on split and packed
 *     rings, checked against a naive model (FIFO of requests, list of
 *     expected completions, and a one-position-at-a-time notification
 *     rule), plus one run with a flipped used length that the checker must
 *     catch.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtqueue.h"
#include "base/layout.h"

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#define MEM_SIZE   (16u << 20)
#define RING_GPA   0x10000ull      /* descriptor table / ring */
#define AVAIL_GPA  0x90000ull      /* avail ring / driver area */
#define USED_GPA   0xa0000ull      /* used ring / device area */
#define IND_GPA    0x200000ull     /* indirect tables: 16 entries per id */
#define BUF_GPA    0x400000ull     /* data buffers */
#define BUF_END    0xf00000ull
#define MAXBUF     8

/* ---- the driver ---- */

struct req {
	int n;
	uint64_t gpa[MAXBUF];
	uint32_t len[MAXBUF];
	bool write[MAXBUF];
	bool indirect;
};

struct drv {
	struct guest_mem mem;
	struct virtqueue vq;
	struct ring_drv r;              /* the driver side: free lists, indirect tables */
};

static void *gp(struct drv *d, uint64_t gpa, uint64_t len)
{
	return ring_ptr(&d->mem, gpa, len);
}

static void put16(struct drv *d, uint64_t gpa, uint16_t v)
{
	ring_put16(&d->mem, gpa, v);
}

static uint16_t get16(struct drv *d, uint64_t gpa)
{
	return ring_get16(&d->mem, gpa);
}

static void set_desc(struct drv *d, uint64_t table, uint32_t i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	ring_set_desc(&d->mem, table, i, addr, len, flags, next);
}

/* Set up guest memory and a queue of `size` entries, not started. */
static void drv_init(struct drv *d, uint16_t size, bool packed, bool event_idx, bool indirect)
{
	struct error e;

	memset(d, 0, sizeof(*d));
	assert_int_equal(guest_mem_create_anon(&d->mem, MEM_SIZE, &e), 0);
	d->vq.mem = &d->mem;
	virtq_reset(&d->vq, size);
	d->vq.packed = packed;
	d->vq.event_idx = event_idx;
	d->vq.indirect = indirect;
	d->vq.desc_gpa = RING_GPA;
	d->vq.avail_gpa = AVAIL_GPA;
	d->vq.used_gpa = USED_GPA;
	d->vq.ready = true;
	ring_drv_init(&d->r, &d->mem, size, packed, RING_GPA, AVAIL_GPA, USED_GPA, RING_FREELIST);
	d->r.indirect = IND_GPA;
}

static void drv_start(struct drv *d)
{
	assert_int_equal(virtq_start(&d->vq), 0);
}

static void drv_fini(struct drv *d)
{
	guest_mem_destroy(&d->mem);
}

/* Split: publish `head` in the available ring. */
static void split_publish(struct drv *d, uint16_t head)
{
	ring_publish(&d->r, head);
}

/* Packed: write one descriptor at the driver's next slot. */
static void packed_put(struct drv *d, uint64_t addr, uint32_t len, uint16_t id,
		       uint16_t flags, bool head, uint16_t *head_flags)
{
	ring_packed_put(&d->r, addr, len, id, flags, head, head_flags);
}

static int drv_add(struct drv *d, const struct req *r, uint16_t *id)
{
	struct ring_buf b[MAXBUF];
	int rc;

	for (int k = 0; k < r->n; k++)
		b[k] = (struct ring_buf){ r->gpa[k], r->len[k], r->write[k] };
	rc = r->indirect ? ring_add_indirect(&d->r, b, r->n) : ring_add(&d->r, b, r->n);
	if (rc < 0)
		return -1;
	*id = (uint16_t)rc;
	return 0;
}

static bool drv_reap(struct drv *d, uint16_t *id, uint32_t *len)
{
	return ring_used(&d->r, id, len);
}

static uint64_t iov_gpa(struct drv *d, const struct iovec *v)
{
	return (uint64_t)((uint8_t *)v->iov_base - d->mem.host);
}

/* Does `e` hold exactly the buffers of `r`, in order?  (Single region.) */
static bool elem_matches(struct drv *d, const struct virtq_elem *e, const struct req *r)
{
	if (e->out_num + e->in_num != (unsigned int)r->n)
		return false;
	for (int k = 0; k < r->n; k++) {
		const struct iovec *v = &e->iov[k];

		if (iov_gpa(d, v) != r->gpa[k] || v->iov_len != r->len[k] ||
		    ((unsigned int)k >= e->out_num) != r->write[k])
			return false;
	}
	return true;
}

static struct req mkreq(int n, int nout, uint32_t len)
{
	struct req r = { .n = n };

	for (int k = 0; k < n; k++) {
		r.gpa[k] = BUF_GPA + 0x10000ull * k;
		r.len[k] = len;
		r.write[k] = k >= nout;
	}
	return r;
}

/* ---- hand-built rings ---- */

static void run_simple_chain(bool packed, bool indirect)
{
	struct drv d;
	struct virtq_elem e;
	struct req r = mkreq(3, 2, 100);
	uint16_t id, rid;
	uint32_t len;

	r.indirect = indirect;
	drv_init(&d, 8, packed, false, indirect);
	drv_start(&d);
	assert_int_equal(virtq_pop(&d.vq, &e), 0);
	assert_false(virtq_has_avail(&d.vq));
	memcpy(gp(&d, r.gpa[0], 5), "hello", 5);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_true(virtq_has_avail(&d.vq));
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	assert_int_equal(e.id, id);
	assert_int_equal(e.out_num, 2);
	assert_int_equal(e.in_num, 1);
	assert_int_equal(e.out_len, 200);
	assert_int_equal(e.in_len, 100);
	assert_true(elem_matches(&d, &e, &r));
	{
		char buf[5];

		assert_int_equal(virtq_elem_read(&e, 0, buf, 5), 5);
		assert_memory_equal(buf, "hello", 5);
		assert_int_equal(virtq_elem_read(&e, 150, buf, 5), 5);
		assert_int_equal(virtq_elem_read(&e, 198, buf, 5), 2);
		assert_int_equal(virtq_elem_write(&e, 98, "xyzw", 4), 2);
		assert_memory_equal(gp(&d, r.gpa[2] + 98, 2), "xy", 2);
	}
	assert_int_equal(virtq_pop(&d.vq, &e), 0);
	assert_false(drv_reap(&d, &rid, &len));
	virtq_push(&d.vq, &e, 1000);          /* clamped to in_len */
	assert_true(drv_reap(&d, &rid, &len));
	assert_int_equal(rid, id);
	assert_int_equal(len, 100);
	assert_false(d.vq.broken);
	drv_fini(&d);
}

static void test_split_chain(void **state) { run_simple_chain(false, false); }
static void test_split_indirect(void **state) { run_simple_chain(false, true); }
static void test_packed_chain(void **state) { run_simple_chain(true, false); }
static void test_packed_indirect(void **state) { run_simple_chain(true, true); }

/* A buffer across two adjacent regions (a vhost-user memory table) becomes
 * two iovecs; one that runs into a hole is refused. */
static void test_region_crossing(void **state)
{
	struct guest_mem m;
	struct virtqueue vq;
	struct virtq_elem e;
	static uint8_t lo[1 << 16] __attribute__((aligned(16))), hi[1 << 16];
	uint16_t *avail;

	guest_mem_init_external(&m);
	assert_int_equal(guest_mem_add_region(&m, 0, sizeof(lo), lo), 0);
	assert_int_equal(guest_mem_add_region(&m, sizeof(lo), sizeof(hi), hi), 0);
	memset(&vq, 0, sizeof(vq));
	vq.mem = &m;
	virtq_reset(&vq, 4);
	vq.desc_gpa = 0x1000;
	vq.avail_gpa = 0x2000;
	vq.used_gpa = 0x3000;
	assert_int_equal(virtq_start(&vq), 0);
	{
		struct virtq_desc x = { .addr = sizeof(lo) - 10, .len = 30, .flags = VIRTQ_DESC_F_WRITE };

		memcpy(lo + 0x1000, &x, 16);
	}
	avail = (uint16_t *)(lo + 0x2000);
	avail[2] = 0;
	avail[1] = 1;
	assert_int_equal(virtq_pop(&vq, &e), 1);
	assert_int_equal(e.in_num, 2);
	assert_ptr_equal(e.iov[0].iov_base, lo + sizeof(lo) - 10);
	assert_int_equal(e.iov[0].iov_len, 10);
	assert_ptr_equal(e.iov[1].iov_base, hi);
	assert_int_equal(e.iov[1].iov_len, 20);
	/* Now one that runs past the end of the second region. */
	{
		struct virtq_desc x = { .addr = 2 * sizeof(lo) - 10, .len = 11 };

		memcpy(lo + 0x1010, &x, 16);
	}
	avail[3] = 1;
	avail[1] = 2;
	assert_int_equal(virtq_pop(&vq, &e), -EIO);
	assert_non_null(strstr(vq.broken_reason, "outside guest RAM"));
	guest_mem_destroy(&m);
}

/* Packed ring of a size that is not a power of two, wrapped many times with
 * chains of one to three descriptors completed out of order. */
static void test_packed_wraparound(void **state)
{
	struct drv d;
	struct virtq_elem e[4];
	uint16_t ids[4], rid;
	uint32_t len;

	drv_init(&d, 5, true, false, false);
	drv_start(&d);
	for (int round = 0; round < 40; round++) {
		int n = 1 + round % 3, got = 0;
		struct req r = mkreq(n, 1, 64);

		for (int k = 0; k < 2; k++)
			if (drv_add(&d, &r, &ids[k]) == 0)
				got++;
		assert_true(got >= 1);
		for (int k = 0; k < got; k++) {
			assert_int_equal(virtq_pop(&d.vq, &e[k]), 1);
			assert_int_equal(e[k].id, ids[k]);
			assert_int_equal(e[k].ndesc, n);
			assert_true(elem_matches(&d, &e[k], &r));
		}
		assert_int_equal(virtq_pop(&d.vq, &e[3]), 0);
		for (int k = got - 1; k >= 0; k--)      /* out of order */
			virtq_fill(&d.vq, &e[k], (uint32_t)(10 + k));
		virtq_flush(&d.vq);
		for (int k = got - 1; k >= 0; k--) {
			assert_true(drv_reap(&d, &rid, &len));
			assert_int_equal(rid, ids[k]);
			assert_int_equal(len, n > 1 ? 10 + k : 0);
		}
		assert_false(drv_reap(&d, &rid, &len));
	}
	assert_true(d.vq.stats.pops >= 40);
	assert_false(d.vq.broken);
	drv_fini(&d);
}

/* Split EVENT_IDX: the decision follows used_event across the u16 wrap. */
static void test_split_event_idx_wrap(void **state)
{
	struct drv d;
	struct virtq_elem e;
	struct req r = mkreq(1, 0, 8);
	uint16_t id, rid;
	uint32_t len;

	drv_init(&d, 8, false, true, false);
	d.r.avail_idx = d.r.used_seen = 65533;
	d.vq.last_avail = d.vq.used_idx = d.vq.shadow_used = 65533;
	put16(&d, AVAIL_GPA + 2, 65533);
	put16(&d, USED_GPA + 2, 65533);
	drv_start(&d);
	/* First decision after start always notifies. */
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	/* Popping with notifications on publishes avail_event. */
	assert_int_equal(get16(&d, USED_GPA + 4 + 8 * 8), 65534);
	virtq_push(&d.vq, &e, 8);
	assert_true(virtq_should_notify(&d.vq));
	assert_false(virtq_should_notify(&d.vq));     /* nothing new */
	assert_true(drv_reap(&d, &rid, &len));
	/* used goes 65534 -> 65535 -> 0 -> 1 in three completions; the driver
	 * asks for an interrupt once entry 0 (the third, after the wrap) is used. */
	put16(&d, AVAIL_GPA + 4 + 2 * 8, 0);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(virtq_pop(&d.vq, &e), 1);
		virtq_push(&d.vq, &e, 8);
		assert_true(drv_reap(&d, &rid, &len));
		assert_int_equal(virtq_should_notify(&d.vq), k == 2);
	}
	assert_int_equal(d.vq.used_idx, 1);
	/* An event far behind (already passed) does not notify. */
	put16(&d, AVAIL_GPA + 4 + 2 * 8, 65000);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	virtq_push(&d.vq, &e, 8);
	assert_false(virtq_should_notify(&d.vq));
	/* Batch of two that straddles the event: one interrupt. */
	put16(&d, AVAIL_GPA + 4 + 2 * 8, 2);
	{
		struct virtq_elem e2;

		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(virtq_pop(&d.vq, &e), 1);
		assert_int_equal(virtq_pop(&d.vq, &e2), 1);
		virtq_fill(&d.vq, &e, 1);
		virtq_fill(&d.vq, &e2, 1);
		assert_int_equal(get16(&d, USED_GPA + 2), 2);   /* not yet published */
		virtq_flush(&d.vq);
		assert_int_equal(get16(&d, USED_GPA + 2), 4);
		assert_true(virtq_should_notify(&d.vq));
	}
	drv_fini(&d);
}

/* Split without EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags. */
static void test_split_flags(void **state)
{
	struct drv d;
	struct virtq_elem e;
	struct req r = mkreq(1, 0, 8);
	uint16_t id;

	drv_init(&d, 4, false, false, false);
	drv_start(&d);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	virtq_push(&d.vq, &e, 0);
	assert_true(virtq_should_notify(&d.vq));
	put16(&d, AVAIL_GPA, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	virtq_push(&d.vq, &e, 0);
	assert_false(virtq_should_notify(&d.vq));
	assert_int_equal(d.vq.stats.suppressed, 1);
	/* Poll then sleep: disabling sets NO_NOTIFY; enabling with work
	 * pending tells the device to keep polling. */
	assert_false(virtq_set_notify(&d.vq, false));
	assert_int_equal(get16(&d, USED_GPA), VIRTQ_USED_F_NO_NOTIFY);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_true(virtq_set_notify(&d.vq, true));
	assert_int_equal(get16(&d, USED_GPA), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	assert_false(virtq_set_notify(&d.vq, true));
	drv_fini(&d);
}

/* Packed event suppression: DISABLE, ENABLE, and DESC across a wrap. */
static void test_packed_event_suppression(void **state)
{
	struct drv d;
	struct virtq_elem e;
	struct req r = mkreq(1, 0, 8);
	uint16_t id, rid;
	uint32_t len;

	drv_init(&d, 3, true, true, false);
	drv_start(&d);
	put16(&d, AVAIL_GPA + 2, VIRTQ_EVENT_F_DISABLE);
	for (int k = 0; k < 2; k++) {             /* first decision always notifies */
		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(virtq_pop(&d.vq, &e), 1);
		virtq_push(&d.vq, &e, 4);
		assert_true(drv_reap(&d, &rid, &len));
		assert_int_equal(virtq_should_notify(&d.vq), k == 0);
	}
	put16(&d, AVAIL_GPA + 2, VIRTQ_EVENT_F_ENABLE);
	assert_int_equal(drv_add(&d, &r, &id), 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	virtq_push(&d.vq, &e, 4);
	assert_true(drv_reap(&d, &rid, &len));
	assert_true(virtq_should_notify(&d.vq));
	/* used position is now slot 0 with wrap 0: ask for slot 1, wrap 0. */
	assert_int_equal(d.vq.used_idx, 0);
	assert_false(d.vq.used_wrap);
	put16(&d, AVAIL_GPA, 1);
	put16(&d, AVAIL_GPA + 2, VIRTQ_EVENT_F_DESC);
	for (int k = 0; k < 4; k++) {
		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(virtq_pop(&d.vq, &e), 1);
		virtq_push(&d.vq, &e, 4);
		assert_true(drv_reap(&d, &rid, &len));
		assert_int_equal(virtq_should_notify(&d.vq), k == 1);
	}
	/* Same slot with the other wrap counter comes a ring later. */
	put16(&d, AVAIL_GPA, 1 | 0x8000);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(drv_add(&d, &r, &id), 0);
		assert_int_equal(virtq_pop(&d.vq, &e), 1);
		virtq_push(&d.vq, &e, 4);
		assert_true(drv_reap(&d, &rid, &len));
		assert_int_equal(virtq_should_notify(&d.vq), k == 0);
	}
	/* Device side: disable writes DISABLE, enable with EVENT_IDX writes DESC
	 * pointing at our next avail position. */
	virtq_set_notify(&d.vq, false);
	assert_int_equal(get16(&d, USED_GPA + 2), VIRTQ_EVENT_F_DISABLE);
	assert_false(virtq_set_notify(&d.vq, true));
	assert_int_equal(get16(&d, USED_GPA + 2), VIRTQ_EVENT_F_DESC);
	assert_int_equal(get16(&d, USED_GPA), d.vq.last_avail | (d.vq.avail_wrap ? 0x8000 : 0));
	drv_fini(&d);
}

/* ---- hostile rings ---- */

/* Expect the next pop to break the queue with `why` in the reason. */
static void expect_broken(struct drv *d, const char *why)
{
	struct virtq_elem e;

	assert_int_equal(virtq_pop(&d->vq, &e), -EIO);
	assert_true(d->vq.broken);
	if (!strstr(d->vq.broken_reason, why))
		fail_msg("reason '%s' lacks '%s'", d->vq.broken_reason, why);
	assert_int_equal(virtq_pop(&d->vq, &e), -EIO);   /* stays broken */
	virtq_push(&d->vq, &e, 0);                      /* and push is a no-op */
	drv_fini(d);
}

static void test_hostile_loop(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&d, RING_GPA, 1, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 0);
	split_publish(&d, 0);
	expect_broken(&d, "loops or exceeds");
}

static void test_hostile_indirect_loop(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, true);
	drv_start(&d);
	set_desc(&d, IND_GPA, 0, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&d, IND_GPA, 1, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 1);   /* self loop */
	set_desc(&d, RING_GPA, 3, IND_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	split_publish(&d, 3);
	expect_broken(&d, "loops or exceeds");
}

static void test_hostile_packed_too_long(void **state)
{
	struct drv d;
	uint16_t hf = 0;

	drv_init(&d, 4, true, false, false);
	drv_start(&d);
	for (int k = 0; k < 5; k++)       /* five NEXT descriptors in a ring of 4 */
		packed_put(&d, BUF_GPA, 8, 0, VIRTQ_DESC_F_NEXT, k == 0, &hf);
	put16(&d, RING_GPA + 14, hf);
	expect_broken(&d, "exceeds 4 descriptors");
}

static void test_hostile_past_ram(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, MEM_SIZE - 4, 8, 0, 0);
	split_publish(&d, 0);
	expect_broken(&d, "outside guest RAM");
}

static void test_hostile_wrapping_addr(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, UINT64_MAX - 4, 8, 0, 0);
	split_publish(&d, 0);
	expect_broken(&d, "wraps");
}

/* A VM-shaped memory of 3 GiB + 64 KiB: a buffer that starts in low RAM and
 * runs into the 32-bit hole is refused (no memory is touched: anonymous
 * calloc pages stay untouched). */
static void test_hostile_into_hole(void **state)
{
	struct drv d;
	struct error err;

	drv_init(&d, 8, false, false, false);
	guest_mem_destroy(&d.mem);
	if (guest_mem_create_anon(&d.mem, GUEST_MEM32_GAP_START + (64u << 10), &err))
		skip();
	assert_int_equal(d.mem.nregions, 2);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, GUEST_MEM32_GAP_START - 16, 32, VIRTQ_DESC_F_WRITE, 0);
	split_publish(&d, 0);
	expect_broken(&d, "outside guest RAM");
}

static void test_hostile_nested_indirect(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, true);
	drv_start(&d);
	set_desc(&d, IND_GPA, 0, IND_GPA + 256, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(&d, RING_GPA, 0, IND_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	split_publish(&d, 0);
	expect_broken(&d, "inside an indirect table");
}

static void test_hostile_packed_nested_indirect(void **state)
{
	struct drv d;
	uint16_t hf = 0;
	struct virtq_packed_desc x = { .addr = IND_GPA, .len = 16, .flags = VIRTQ_DESC_F_INDIRECT };

	drv_init(&d, 8, true, false, true);
	drv_start(&d);
	memcpy(gp(&d, IND_GPA, 16), &x, 16);
	packed_put(&d, IND_GPA, 16, 0, VIRTQ_DESC_F_INDIRECT, true, &hf);
	put16(&d, RING_GPA + 14, hf);
	expect_broken(&d, "inside an indirect table");
}

/* Packed: an indirect descriptor may not sit in a NEXT-linked list (2.8.9). */
static void test_hostile_packed_indirect_in_chain(void **state)
{
	struct drv d;
	uint16_t hf = 0;

	drv_init(&d, 8, true, false, true);
	drv_start(&d);
	packed_put(&d, BUF_GPA, 8, 0, VIRTQ_DESC_F_NEXT, true, &hf);
	packed_put(&d, IND_GPA, 16, 0, VIRTQ_DESC_F_INDIRECT, false, &hf);
	put16(&d, RING_GPA + 14, hf);
	expect_broken(&d, "inside a chain");
}

static void test_hostile_indirect_rules(void **state)
{
	static const struct { bool feat; uint32_t len; uint16_t flags; const char *why; } c[] = {
		{ false, 16, 0, "without INDIRECT_DESC" },
		{ true, 20, 0, "indirect table of 20" },
		{ true, 0, 0, "indirect table of 0" },
		{ true, 16 * 1025, 0, "indirect table of 16400" },     /* > 1024 entries */
		{ true, 16, VIRTQ_DESC_F_NEXT, "with NEXT" },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct drv d;

		drv_init(&d, 8, false, false, c[i].feat);
		drv_start(&d);
		set_desc(&d, IND_GPA, 0, BUF_GPA, 8, 0, 0);
		set_desc(&d, RING_GPA, 0, IND_GPA, c[i].len, VIRTQ_DESC_F_INDIRECT | c[i].flags, 1);
		split_publish(&d, 0);
		expect_broken(&d, c[i].why);
	}
}

/* An indirect table longer than a small ring is legal: Linux sizes it by
 * the device's seg_max (virtio-blk: 254), not by the queue size. */
static void test_indirect_longer_than_ring(void **state)
{
	struct drv d;
	struct virtq_elem e;

	drv_init(&d, 8, false, false, true);
	drv_start(&d);
	for (uint32_t i = 0; i < 40; i++)
		set_desc(&d, IND_GPA, i, BUF_GPA + 512ull * i, 512, i + 1 < 40 ? VIRTQ_DESC_F_NEXT : 0,
			 (uint16_t)(i + 1));
	set_desc(&d, RING_GPA, 0, IND_GPA, 16 * 40, VIRTQ_DESC_F_INDIRECT, 0);
	split_publish(&d, 0);
	assert_int_equal(virtq_pop(&d.vq, &e), 1);
	assert_int_equal(e.out_num, 40);
	assert_int_equal(e.out_len, 40 * 512);
	assert_false(d.vq.broken);
	drv_fini(&d);
}

static void test_hostile_bad_head(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	split_publish(&d, 8);
	expect_broken(&d, "head index 8");
}

static void test_hostile_bad_next(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 9);
	split_publish(&d, 0);
	expect_broken(&d, "next index 9");
}

static void test_hostile_idx_jump(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	put16(&d, AVAIL_GPA + 2, 9);
	expect_broken(&d, "ahead");
}

static void test_hostile_out_after_in(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, BUF_GPA, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(&d, RING_GPA, 1, BUF_GPA, 8, 0, 0);
	split_publish(&d, 0);
	expect_broken(&d, "after a device-writable");
}

static void test_hostile_too_long(void **state)
{
	struct drv d;

	drv_init(&d, 8, false, false, false);
	d.vq.max_req_bytes = 4096;
	drv_start(&d);
	set_desc(&d, RING_GPA, 0, BUF_GPA, 4000, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&d, RING_GPA, 1, BUF_GPA, 97, 0, 0);
	split_publish(&d, 0);
	expect_broken(&d, "longer than 4096");
}

static void test_hostile_config(void **state)
{
	struct drv d;

	drv_init(&d, 6, false, false, false);            /* split needs 2^n */
	assert_int_equal(virtq_start(&d.vq), -1);
	assert_non_null(strstr(d.vq.broken_reason, "size 6"));
	drv_fini(&d);
	drv_init(&d, 8, false, false, false);
	d.vq.avail_gpa = AVAIL_GPA + 1;
	assert_int_equal(virtq_start(&d.vq), -1);
	assert_non_null(strstr(d.vq.broken_reason, "aligned"));
	drv_fini(&d);
	drv_init(&d, 8, false, false, false);
	d.vq.used_gpa = MEM_SIZE - 16;
	assert_int_equal(virtq_start(&d.vq), -1);
	assert_non_null(strstr(d.vq.broken_reason, "not in guest RAM"));
	drv_fini(&d);
	drv_init(&d, 0, true, false, false);
	assert_int_equal(virtq_start(&d.vq), -1);
	drv_fini(&d);
}

/* ---- save / restore with elements in flight ---- */

static void run_save_restore(bool packed)
{
	struct drv d;
	struct virtqueue vq2;
	struct virtq_elem e[3], back;
	struct req r = mkreq(2, 1, 32);
	struct state_writer w;
	struct state_reader rd;
	uint16_t id[3], rid;
	uint32_t len;

	drv_init(&d, 8, packed, true, false);
	drv_start(&d);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(drv_add(&d, &r, &id[k]), 0);
		if (k < 2)
			assert_int_equal(virtq_pop(&d.vq, &e[k]), 1);
	}
	virtq_push(&d.vq, &e[0], 5);
	state_writer_init(&w);
	virtq_save(&d.vq, &w);
	virtq_elem_save(&e[1], &w);
	assert_false(w.error);

	memset(&vq2, 0, sizeof(vq2));
	state_reader_init(&rd, w.data, w.len);
	assert_int_equal(virtq_restore(&vq2, &rd), 0);
	vq2.mem = &d.mem;
	assert_int_equal(virtq_start(&vq2), 0);
	assert_int_equal(virtq_elem_restore(&vq2, &rd, &back), 0);
	assert_false(rd.error);
	assert_int_equal(rd.pos, rd.len);
	assert_int_equal(back.id, e[1].id);
	assert_true(elem_matches(&d, &back, &r));
	/* The restored queue carries on: the third request, then completions. */
	assert_int_equal(virtq_pop(&vq2, &e[2]), 1);
	assert_int_equal(e[2].id, id[2]);
	virtq_push(&vq2, &back, 6);
	virtq_push(&vq2, &e[2], 7);
	for (int k = 0; k < 3; k++) {
		assert_true(drv_reap(&d, &rid, &len));
		assert_int_equal(rid, id[k]);
		assert_int_equal(len, 5 + k);
	}
	/* Truncated and corrupted state is refused. */
	for (size_t cut = 0; cut < 40; cut += 3) {
		struct virtqueue vq3;

		memset(&vq3, 0, sizeof(vq3));
		state_reader_init(&rd, w.data, cut);
		assert_int_equal(virtq_restore(&vq3, &rd), -1);
	}
	w.data[4] = 0xff;                  /* size 0xff.. > 32768 */
	w.data[5] = 0xff;
	state_reader_init(&rd, w.data, w.len);
	assert_int_equal(virtq_restore(&vq2, &rd), -1);
	state_writer_free(&w);
	drv_fini(&d);
}

static void test_split_save_restore(void **state) { run_save_restore(false); }
static void test_packed_save_restore(void **state) { run_save_restore(true); }

/* ---- differential test against a naive model ---- */

struct model {
	struct req fifo[1024];         /* requests made available, not yet popped */
	uint16_t fifo_id[1024];
	int fhead, ftail;
	uint16_t exp_id[4096];         /* completions flushed, not yet reaped */
	uint32_t exp_len[4096];
	int ehead, etail;
	/* notification model: positions since the last decision */
	bool valid;
	uint32_t steps;                /* slots used since the last decision */
	uint16_t old_idx;              /* split: used idx at the last decision */
	uint16_t old_slot;             /* packed */
	bool old_wrap;
};

static uint64_t rng_state;
/* Coverage of the differential runs: what the checker actually compared. */
static struct { uint64_t pops, reaps, notify_yes, notify_no, indirect; } cov;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static struct req random_req(bool indirect_ok)
{
	struct req r = { .n = 1 + (int)rnd(MAXBUF) };
	int nout = (int)rnd((uint32_t)r.n + 1);

	for (int k = 0; k < r.n; k++) {
		r.len[k] = 1 + rnd(4096);
		r.gpa[k] = BUF_GPA + rnd((uint32_t)(BUF_END - BUF_GPA - 4096));
		r.write[k] = k >= nout;
	}
	r.indirect = indirect_ok && rnd(3) == 0;
	return r;
}

/* Naive rule: did any used position in [old, new) equal the event?
 * Walks one position at a time. */
static bool model_split_event(struct model *m, uint16_t event, uint16_t new_idx)
{
	for (uint16_t p = m->old_idx; p != new_idx; p++)
		if (p == event)
			return true;
	return false;
}

static bool model_packed_event(struct model *m, uint16_t size, uint16_t off, bool wrap)
{
	uint16_t s = m->old_slot;
	bool w = m->old_wrap;

	for (uint32_t k = 0; k < m->steps; k++) {
		if (s == off && w == wrap)
			return true;
		if (++s == size) {
			s = 0;
			w = !w;
		}
	}
	return false;
}

/* What the model says the notification decision must be. */
static bool model_should_notify(struct drv *d, struct model *m)
{
	uint16_t flags;

	if (!m->steps)
		return false;
	if (!m->valid || m->steps >= d->r.size)
		return true;
	if (!d->r.packed) {
		if (!d->vq.event_idx)
			return !(get16(d, AVAIL_GPA) & VIRTQ_AVAIL_F_NO_INTERRUPT);
		return model_split_event(m, get16(d, AVAIL_GPA + 4 + 2ull * d->r.size), d->vq.used_idx);
	}
	flags = get16(d, AVAIL_GPA + 2);
	if (flags == VIRTQ_EVENT_F_DISABLE)
		return false;
	if (flags != VIRTQ_EVENT_F_DESC || !d->vq.event_idx)
		return true;
	{
		uint16_t ow = get16(d, AVAIL_GPA);

		if ((ow & 0x7fff) >= d->r.size)
			return true;
		return model_packed_event(m, d->r.size, ow & 0x7fff, ow >> 15);
	}
}

static void model_decided(struct drv *d, struct model *m)
{
	if (!m->steps)
		return;                /* nothing new: the decision point stays */
	m->valid = true;
	m->steps = 0;
	m->old_idx = d->vq.used_idx;
	m->old_slot = d->vq.used_idx;
	m->old_wrap = d->vq.used_wrap;
}

/* The checker: does a reaped completion match the next expected one? */
static bool check_completion(struct model *m, uint16_t id, uint32_t len)
{
	bool ok = m->ehead != m->etail && m->exp_id[m->ehead % 4096] == id &&
		  m->exp_len[m->ehead % 4096] == len;

	m->ehead++;
	return ok;
}

/* The driver sets a random event point near the used position. */
static void drv_random_event(struct drv *d)
{
	if (!d->r.packed) {
		if (d->vq.event_idx)
			put16(d, AVAIL_GPA + 4 + 2ull * d->r.size,
			      (uint16_t)(d->r.used_seen + rnd(d->r.size + 2u) - 1));
		else
			put16(d, AVAIL_GPA, rnd(2) ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
		return;
	}
	{
		uint32_t pos = d->r.used_slot + rnd(d->r.size);
		bool w = d->r.used_wrap;

		if (pos >= d->r.size) {
			pos -= d->r.size;
			w = !w;
		}
		put16(d, AVAIL_GPA, (uint16_t)(pos | (w ? 0x8000 : 0)));
		put16(d, AVAIL_GPA + 2, (uint16_t)rnd(d->vq.event_idx ? 3 : 2));
	}
}

/* Run one random program; returns the number of mismatches the checker saw.
 * With `flip` set, the length of one reaped completion is corrupted. */
static int run_program(uint64_t seed, bool packed, bool event_idx, bool indirect,
		       uint16_t size, int steps, bool flip)
{
	static struct drv d;
	static struct model m;
	static struct virtq_elem held[1024];
	int nheld = 0, bad = 0, reaped = 0;
	uint16_t id;
	uint32_t len;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
	drv_init(&d, size, packed, event_idx, indirect);
	d.r.avail_idx = d.r.used_seen = (uint16_t)(65536 - 40);   /* cross the u16 wrap */
	if (!packed) {
		d.vq.last_avail = d.vq.used_idx = d.vq.shadow_used = d.r.avail_idx;
		put16(&d, AVAIL_GPA + 2, d.r.avail_idx);
		put16(&d, USED_GPA + 2, d.r.avail_idx);
	}
	drv_start(&d);
	memset(&m, 0, sizeof(m));
	m.old_wrap = true;
	for (int s = 0; s < steps; s++) {
		switch (rnd(6)) {
		case 0:
		case 1: {                                 /* driver adds */
			struct req r = random_req(indirect);

			if (r.n > size)
				r.indirect = false;      /* tables are at most `size` long */

			if (drv_add(&d, &r, &id) == 0) {
				m.fifo[m.ftail % 1024] = r;
				m.fifo_id[m.ftail++ % 1024] = id;
			}
			break;
		}
		case 2:                                   /* device pops */
			for (int k = (int)rnd(4); k > 0 && nheld < 1024; k--) {
				int rc = virtq_pop(&d.vq, &held[nheld]);

				if (rc < 0)
					return bad + 1000;
				if (rc == 0) {
					bad += m.fhead != m.ftail;
					break;
				}
				bad += m.fhead == m.ftail ||
				       held[nheld].id != m.fifo_id[m.fhead % 1024] ||
				       !elem_matches(&d, &held[nheld], &m.fifo[m.fhead % 1024]);
				cov.indirect += m.fifo[m.fhead % 1024].indirect;
				m.fhead++;
				nheld++;
				cov.pops++;
			}
			break;
		case 3:                                   /* device completes some */
			for (int k = (int)rnd(4); k > 0 && nheld; k--) {
				int i = (int)rnd((uint32_t)nheld);
				uint32_t l = rnd((uint32_t)held[i].in_len + 1);

				virtq_fill(&d.vq, &held[i], l);
				m.exp_id[m.etail % 4096] = held[i].id;
				m.exp_len[m.etail++ % 4096] = l;
				m.steps += packed ? held[i].ndesc : 1;
				held[i] = held[--nheld];
			}
			virtq_flush(&d.vq);
			if (rnd(2)) {
				bool want = model_should_notify(&d, &m);

				bad += virtq_should_notify(&d.vq) != want;
				if (m.steps)
					want ? cov.notify_yes++ : cov.notify_no++;
				model_decided(&d, &m);
			}
			break;
		case 4:                                   /* driver reaps */
			while (rnd(4) && drv_reap(&d, &id, &len)) {
				if (flip && ++reaped == 7)
					len ^= 1;
				bad += !check_completion(&m, id, len);
				cov.reaps++;
			}
			break;
		case 5:
			drv_random_event(&d);
			break;
		}
	}
	bad += d.vq.broken;
	drv_fini(&d);
	return bad;
}

static void test_differential(void **state)
{
	static const uint16_t sizes[] = { 1, 2, 4, 16, 256 };
	static const uint16_t psizes[] = { 1, 3, 5, 16, 100 };
	int runs = 0;

	for (int cfg = 0; cfg < 8; cfg++) {
		bool packed = cfg & 1, ev = cfg & 2, ind = cfg & 4;

		for (int si = 0; si < 5; si++) {
			uint16_t size = packed ? psizes[si] : sizes[si];

			for (uint64_t seed = 1; seed <= 6; seed++, runs++) {
				int bad = run_program(seed * 131 + (uint64_t)cfg * 7 + si, packed, ev,
						      ind, size, 3000, false);

				if (bad)
					fail_msg("cfg %d size %u seed %llu: %d mismatches", cfg, size,
						 (unsigned long long)seed, bad);
			}
		}
	}
	assert_int_equal(runs, 240);
	print_message("differential: %llu pops (%llu indirect), %llu reaps, %llu/%llu notify yes/no\n",
		      (unsigned long long)cov.pops, (unsigned long long)cov.indirect,
		      (unsigned long long)cov.reaps, (unsigned long long)cov.notify_yes,
		      (unsigned long long)cov.notify_no);
	assert_true(cov.pops > 50000 && cov.indirect > 5000 && cov.reaps > 50000);
	assert_true(cov.notify_yes > 1000 && cov.notify_no > 1000);
}

/* The deliberate fault: a flipped used length must be caught. */
static void test_differential_catches_fault(void **state)
{
	assert_int_equal(run_program(42, false, true, true, 16, 3000, false), 0);
	assert_true(run_program(42, false, true, true, 16, 3000, true) > 0);
	assert_int_equal(run_program(43, true, true, true, 7, 3000, false), 0);
	assert_true(run_program(43, true, true, true, 7, 3000, true) > 0);
}

/* ---- a driver thread against a device thread ---- */

#define RACE_N 20000

struct race {
	struct drv *d;
	int errors;
};

/* The device: pop, read the sequence number, write it back plus one. */
static void *race_device(void *arg)
{
	struct race *r = arg;
	struct virtq_elem *e = malloc(sizeof(*e));
	uint32_t seq;

	for (int done = 0; done < RACE_N;) {
		int rc = virtq_pop(&r->d->vq, e);

		if (rc < 0) {
			r->errors++;
			break;
		}
		if (rc == 0) {
			sched_yield();
			continue;
		}
		if (virtq_elem_read(e, 0, &seq, 4) != 4)
			r->errors++;
		seq++;
		virtq_elem_write(e, 0, &seq, 4);
		virtq_push(&r->d->vq, e, 4);
		done++;
	}
	free(e);
	return NULL;
}

/* The driver: keep the ring full of numbered requests and check each reply. */
static int race_driver(struct drv *d)
{
	static uint32_t seq_of[VIRTQ_MAX_SIZE];
	uint32_t sent = 0, reaped = 0, len, v;
	int errors = 0;
	uint16_t id;

	while (reaped < RACE_N) {
		struct req r = { .n = 2 };

		r.len[0] = r.len[1] = 4;
		r.write[1] = true;
		/* Buffers are per id, so reserve the id's slot before writing. */
		if (sent < RACE_N && d->r.nfree >= (d->r.packed ? 1 : 2)) {
			id = d->r.free_stack[d->r.nfree - 1];    /* the id drv_add takes next */
			r.gpa[0] = BUF_GPA + 16ull * id;
			r.gpa[1] = r.gpa[0] + 8;
			memcpy(gp(d, r.gpa[0], 4), &sent, 4);
			if (drv_add(d, &r, &id) == 0)
				seq_of[id] = sent++;
		}
		while (drv_reap(d, &id, &len)) {
			memcpy(&v, gp(d, BUF_GPA + 16ull * id + 8, 4), 4);
			errors += len != 4 || v != seq_of[id] + 1;
			reaped++;
		}
		if (sent == RACE_N || !d->r.nfree)
			sched_yield();
	}
	return errors;
}

static void run_race(bool packed)
{
	static struct drv d;
	struct race r = { .d = &d };
	pthread_t t;
	int errors;

	drv_init(&d, packed ? 24 : 32, packed, true, false);
	drv_start(&d);
	assert_int_equal(pthread_create(&t, NULL, race_device, &r), 0);
	errors = race_driver(&d);
	pthread_join(t, NULL);
	assert_int_equal(errors, 0);
	assert_int_equal(r.errors, 0);
	assert_int_equal(d.vq.stats.pops, RACE_N);
	drv_fini(&d);
}

static void test_race_split(void **state) { run_race(false); }
static void test_race_packed(void **state) { run_race(true); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_chain),
		cmocka_unit_test(test_split_indirect),
		cmocka_unit_test(test_packed_chain),
		cmocka_unit_test(test_packed_indirect),
		cmocka_unit_test(test_region_crossing),
		cmocka_unit_test(test_packed_wraparound),
		cmocka_unit_test(test_split_event_idx_wrap),
		cmocka_unit_test(test_split_flags),
		cmocka_unit_test(test_packed_event_suppression),
		cmocka_unit_test(test_hostile_loop),
		cmocka_unit_test(test_hostile_indirect_loop),
		cmocka_unit_test(test_hostile_packed_too_long),
		cmocka_unit_test(test_hostile_past_ram),
		cmocka_unit_test(test_hostile_wrapping_addr),
		cmocka_unit_test(test_hostile_into_hole),
		cmocka_unit_test(test_hostile_nested_indirect),
		cmocka_unit_test(test_hostile_packed_nested_indirect),
		cmocka_unit_test(test_hostile_packed_indirect_in_chain),
		cmocka_unit_test(test_hostile_indirect_rules),
		cmocka_unit_test(test_indirect_longer_than_ring),
		cmocka_unit_test(test_hostile_bad_head),
		cmocka_unit_test(test_hostile_bad_next),
		cmocka_unit_test(test_hostile_idx_jump),
		cmocka_unit_test(test_hostile_out_after_in),
		cmocka_unit_test(test_hostile_too_long),
		cmocka_unit_test(test_hostile_config),
		cmocka_unit_test(test_split_save_restore),
		cmocka_unit_test(test_packed_save_restore),
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_differential_catches_fault),
		cmocka_unit_test(test_race_split),
		cmocka_unit_test(test_race_packed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
