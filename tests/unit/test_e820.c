/*
 * test_e820.c - the guest memory map for small, medium, 3 GiB and >4 GiB VMs.
 *
 * Invariants checked on every map: entries sorted and disjoint, the RAM they
 * list adds up to the guest's RAM minus the reserved EBDA/BIOS area, and no
 * entry touches the 32-bit hole.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/error.h"
#include "boot/boot.h"
#include "base/layout.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* Build the map for `size` bytes and check the common invariants. */
static int check_map(uint64_t size, struct e820_entry *ent)
{
	struct guest_mem m;
	struct error e;
	uint64_t ram = 0;
	int n;

	assert_int_equal(guest_mem_create_anon(&m, size, &e), 0);
	n = e820_build(&m, ent, E820_MAX);
	for (int i = 0; i < n; i++) {
		if (i > 0)
			assert_true(ent[i].addr >= ent[i - 1].addr + ent[i - 1].size);
		assert_true(ent[i].size > 0);
		assert_false(ent[i].addr < GUEST_MEM32_GAP_END &&
			     ent[i].addr + ent[i].size > GUEST_MEM32_GAP_START);
		if (ent[i].type == E820_RAM)
			ram += ent[i].size;
	}
	assert_int_equal(ram, size - (GUEST_HIGH_START - GUEST_EBDA_START));
	guest_mem_destroy(&m);
	return n;
}

static void test_e820_16m(void **state)
{
	struct e820_entry ent[E820_MAX];

	(void)state;
	assert_int_equal(check_map(16 * MiB, ent), 3);
	assert_int_equal(ent[0].addr, 0);
	assert_int_equal(ent[0].size, 0x9fc00);
	assert_int_equal(ent[0].type, E820_RAM);
	assert_int_equal(ent[1].addr, 0x9fc00);
	assert_int_equal(ent[1].addr + ent[1].size, 0x100000);
	assert_int_equal(ent[1].type, E820_RESERVED);
	assert_int_equal(ent[2].addr, 0x100000);
	assert_int_equal(ent[2].addr + ent[2].size, 16 * MiB);
	assert_int_equal(ent[2].type, E820_RAM);
}

static void test_e820_256m(void **state)
{
	struct e820_entry ent[E820_MAX];

	(void)state;
	assert_int_equal(check_map(256 * MiB, ent), 3);
	assert_int_equal(ent[2].addr + ent[2].size, 256 * MiB);
}

static void test_e820_3g(void **state)
{
	struct e820_entry ent[E820_MAX];

	(void)state;
	assert_int_equal(check_map(3 * GiB, ent), 3);
	assert_int_equal(ent[2].addr + ent[2].size, GUEST_MEM32_GAP_START);
}

static void test_e820_5g(void **state)
{
	struct e820_entry ent[E820_MAX];

	(void)state;
	assert_int_equal(check_map(5 * GiB, ent), 4);
	assert_int_equal(ent[2].addr + ent[2].size, GUEST_MEM32_GAP_START);
	assert_int_equal(ent[3].addr, 4 * GiB);
	assert_int_equal(ent[3].size, 2 * GiB);
	assert_int_equal(ent[3].type, E820_RAM);
}

/* A short output array is never overrun. */
static void test_e820_max(void **state)
{
	struct e820_entry ent[3];
	struct guest_mem m;
	struct error e;

	(void)state;
	assert_int_equal(guest_mem_create_anon(&m, 5 * GiB, &e), 0);
	assert_int_equal(e820_build(&m, ent, 2), 2);
	assert_int_equal(e820_build(&m, ent, 0), 0);
	guest_mem_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_e820_16m),
		cmocka_unit_test(test_e820_256m),
		cmocka_unit_test(test_e820_3g),
		cmocka_unit_test(test_e820_5g),
		cmocka_unit_test(test_e820_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
