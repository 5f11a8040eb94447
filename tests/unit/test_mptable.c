/*
 * test_mptable.c - the MP floating pointer and configuration table: both
 * checksums, where they sit, one processor entry per vCPU with the BSP flag
 * on cpu 0 only, the ISA bus, the IOAPIC and identity-mapped ISA IRQs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "base/error.h"
#include "base/exitcode.h"
#include "boot/boot.h"
#include "boot/boot_priv.h"
#include "base/layout.h"

static struct guest_mem mem;

static int setup(void **state)
{
	struct error e;

	(void)state;
	return guest_mem_create_anon(&mem, 16 << 20, &e);
}

static int teardown(void **state)
{
	(void)state;
	guest_mem_destroy(&mem);
	return 0;
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static void check_mp(int ncpus)
{
	const uint8_t *f, *t;
	uint32_t conf, lapic;
	uint16_t len, count;
	int cpus = 0, bsp = 0, irqs = 0, lints = 0, buses = 0, ioapics = 0;
	struct error e;
	uint32_t off;

	memset(mem.host, 0x55, 1 << 20);
	assert_int_equal(mptable_build(&mem, ncpus, &e), 0);
	f = guest_mem_ptr(&mem, BOOT_MPTABLE_ADDR, 16);
	assert_memory_equal(f, "_MP_", 4);
	assert_int_equal(f[8], 1);
	assert_int_equal(f[9], 4);
	assert_int_equal(sum(f, 16), 0);
	memcpy(&conf, f + 4, 4);
	t = guest_mem_ptr(&mem, conf, 44);
	assert_memory_equal(t, "PCMP", 4);
	memcpy(&len, t + 4, 2);
	memcpy(&count, t + 34, 2);
	memcpy(&lapic, t + 36, 4);
	assert_int_equal(lapic, GUEST_LAPIC_BASE);
	assert_true(conf >= GUEST_EBDA_START && conf + len <= GUEST_HIGH_START);
	assert_int_equal(sum(t, len), 0);
	off = 44;
	for (int i = 0; i < count; i++) {
		assert_true(off < len);
		switch (t[off]) {
		case 0:
			assert_int_equal(t[off + 1], cpus);
			assert_int_equal(t[off + 3] & 1, 1);
			if (t[off + 3] & 2)
				bsp++, assert_int_equal(cpus, 0);
			cpus++;
			off += 20;
			break;
		case 1:
			assert_memory_equal(t + off + 2, "ISA   ", 6);
			buses++;
			off += 8;
			break;
		case 2: {
			uint32_t a;
			memcpy(&a, t + off + 4, 4);
			assert_int_equal(a, GUEST_IOAPIC_BASE);
			ioapics++;
			off += 8;
			break;
		}
		case 3:
			assert_int_equal(t[off + 5], irqs);      /* ISA IRQ n ... */
			assert_int_equal(t[off + 7], irqs);      /* ... to pin n */
			irqs++;
			off += 8;
			break;
		case 4:
			lints++;
			off += 8;
			break;
		default:
			fail_msg("unknown MP entry type %u", t[off]);
		}
	}
	assert_int_equal(off, len);
	assert_int_equal(cpus, ncpus);
	assert_int_equal(bsp, 1);
	assert_int_equal(buses, 1);
	assert_int_equal(ioapics, 1);
	assert_int_equal(irqs, 16);
	assert_int_equal(lints, 2);
}

static void test_mp_1cpu(void **state) { (void)state; check_mp(1); }
static void test_mp_2cpu(void **state) { (void)state; check_mp(2); }
static void test_mp_64cpu(void **state) { (void)state; check_mp(GUEST_MAX_VCPUS); }

static void test_mp_bad_ncpus(void **state)
{
	struct error e;

	(void)state;
	assert_int_equal(mptable_build(&mem, 0, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_int_equal(mptable_build(&mem, GUEST_MAX_VCPUS + 1, &e), -1);
}

/* ACPI and the MP configuration table share the BIOS area: no overlap. */
static void test_mp_acpi_disjoint(void **state)
{
	struct error e;
	uint8_t copy[64];

	(void)state;
	assert_int_equal(mptable_build(&mem, GUEST_MAX_VCPUS, &e), 0);
	memcpy(copy, guest_mem_ptr(&mem, BOOT_MPCONF_ADDR, 64), 64);
	assert_int_not_equal(acpi_build(&mem, GUEST_MAX_VCPUS, &e), 0);
	assert_memory_equal(copy, guest_mem_ptr(&mem, BOOT_MPCONF_ADDR, 64), 64);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mp_1cpu),
		cmocka_unit_test(test_mp_2cpu),
		cmocka_unit_test(test_mp_64cpu),
		cmocka_unit_test(test_mp_bad_ncpus),
		cmocka_unit_test(test_mp_acpi_disjoint),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
