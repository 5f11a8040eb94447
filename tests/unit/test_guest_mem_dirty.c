/*
 * test_guest_mem_dirty.c - the host-side dirty marks that live migration
 * reads besides KVM's log (base/guest_mem.c, devices/virtqueue.c):
 *   - guest_mem_write marks the pages it wrote while tracking is on, and
 *     nothing while it is off; taking the marks clears them;
 *   - a device completing a virtqueue element marks the buffer pages it
 *     wrote (as far as the length it reports) and the used ring, after
 *     the write, and not what it only read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/guest_mem.h"
#include "devices/virtqueue.h"
#include "ring_driver.h"

#define MEM (16u << 20)

static bool bit(const uint64_t *b, uint64_t page)
{
	return b[page / 64] >> (page % 64) & 1;
}

static void test_dirty_marks(void **state)
{
	struct guest_mem m;
	struct error e = { 0 };
	uint64_t words = (MEM / 4096 + 63) / 64, *bits = calloc(words, 8);

	(void)state;
	assert_non_null(bits);
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	assert_int_equal(guest_mem_write(&m, 5 * 4096, "x", 1), 0);   /* tracking off */
	assert_int_equal(guest_mem_dirty_track(&m, true), 0);
	guest_mem_dirty_take(&m, bits);
	for (uint64_t i = 0; i < words; i++)
		assert_int_equal(bits[i], 0);
	assert_int_equal(guest_mem_write(&m, 7 * 4096 + 4000, "0123456789abcdefghij"
					 "0123456789abcdefghij0123456789abcdefghij0123456789abc"
					 "defghij0123456789abcdefghij0123456789", 100), 0);
	guest_mem_dirty_take(&m, bits);
	assert_false(bit(bits, 5));
	assert_true(bit(bits, 7));
	assert_true(bit(bits, 8));                 /* the write crossed into page 8 */
	assert_false(bit(bits, 9));
	memset(bits, 0, words * 8);
	guest_mem_dirty_take(&m, bits);           /* taking cleared them */
	assert_false(bit(bits, 7));
	assert_int_equal(guest_mem_dirty_track(&m, false), 0);
	assert_int_equal(guest_mem_write(&m, 9 * 4096, "x", 1), 0);
	guest_mem_dirty_take(&m, bits);
	assert_false(bit(bits, 9));
	free(bits);
	guest_mem_destroy(&m);
}

/* A device completing a split-ring element marks the buffer it wrote and
 * the used ring, as a virtio device emulated on a host thread does. */
static void test_virtqueue_marks(void **state)
{
	struct guest_mem m;
	struct error e = { 0 };
	struct virtqueue vq;
	struct ring_drv r;
	struct virtq_elem elem;
	uint64_t words = (MEM / 4096 + 63) / 64, *bits = calloc(words, 8);
	const uint64_t desc = 0x10000, avail = 0x11000, used = 0x12000, buf = 0x100000;
	struct ring_buf b[2] = { { 0x80000, 16, false }, { buf, 3 * 4096, true } };

	(void)state;
	assert_non_null(bits);
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	memset(&vq, 0, sizeof(vq));
	vq.mem = &m;
	virtq_reset(&vq, 16);
	vq.desc_gpa = desc;
	vq.avail_gpa = avail;
	vq.used_gpa = used;
	vq.ready = true;
	ring_drv_init(&r, &m, 16, false, desc, avail, used, RING_RESTART);
	assert_int_equal(virtq_start(&vq), 0);
	assert_true(ring_add(&r, b, 2) >= 0);
	assert_int_equal(guest_mem_dirty_track(&m, true), 0);
	assert_int_equal(virtq_pop(&vq, &elem), 1);
	virtq_elem_write(&elem, 0, "written", 7);
	guest_mem_dirty_take(&m, bits);
	assert_false(bit(bits, buf / 4096));      /* not marked before it is pushed */
	virtq_push(&vq, &elem, 4096 + 1);           /* two of its three pages written */
	guest_mem_dirty_take(&m, bits);
	assert_true(bit(bits, buf / 4096));
	assert_true(bit(bits, buf / 4096 + 1));
	assert_false(bit(bits, buf / 4096 + 2));
	assert_true(bit(bits, used / 4096));       /* the used ring */
	assert_false(bit(bits, 0x80000 / 4096));   /* what the device only read */
	guest_mem_dirty_track(&m, false);
	free(bits);
	guest_mem_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dirty_marks),
		cmocka_unit_test(test_virtqueue_marks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
