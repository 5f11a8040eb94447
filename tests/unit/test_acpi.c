/*
 * test_acpi.c - the ACPI tables acpi_build() writes, read back the way a
 * guest would: RSDP -> XSDT -> FADT/MADT -> DSDT/FACS, every checksum, the
 * MADT's per-vCPU entries and interrupt overrides, the FADT's PM blocks and
 * boot flags, and the structure of the DSDT's AML.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "abi/testdev.h"
#include "base/error.h"
#include "base/exitcode.h"
#include "boot/acpi.h"
#include "boot/boot.h"
#include "devices/pci.h"
#include "boot/boot_priv.h"
#include "base/layout.h"

static struct guest_mem mem;

static int setup(void **state)
{
	struct error e;

	(void)state;
	return guest_mem_create_anon(&mem, 64 << 20, &e);
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

static uint32_t rd32(uint64_t gpa)
{
	uint32_t v;

	assert_int_equal(guest_mem_read(&mem, gpa, &v, 4), 0);
	return v;
}

static uint64_t rd64(uint64_t gpa)
{
	uint64_t v;

	assert_int_equal(guest_mem_read(&mem, gpa, &v, 8), 0);
	return v;
}

/* Check a table's placement and checksum; return its host pointer. */
static const uint8_t *table(uint64_t gpa, const char *sig)
{
	const uint8_t *p = guest_mem_ptr(&mem, gpa, 36);
	uint32_t len;

	assert_non_null(p);
	assert_memory_equal(p, sig, 4);
	len = rd32(gpa + 4);
	assert_true(len >= 36);
	assert_true(gpa >= BOOT_ACPI_ADDR && gpa + len <= BOOT_ACPI_END);
	assert_int_equal(gpa % 16, 0);
	p = guest_mem_ptr(&mem, gpa, len);
	assert_int_equal(sum(p, len), 0);
	return p;
}

/* MCFG: one allocation, ECAM at PCI_ECAM_BASE for segment 0, bus 0. */
static void check_mcfg(uint64_t mcfg)
{
	table(mcfg, "MCFG");
	assert_int_equal(rd32(mcfg + 4), 60);
	assert_int_equal(rd64(mcfg + 44), PCI_ECAM_BASE);
	assert_int_equal(rd32(mcfg + 52) & 0xffff, 0);          /* segment */
	assert_int_equal((rd32(mcfg + 52) >> 16) & 0xffff, 0);  /* buses 0..0 */
}

/* Walk RSDP and XSDT; return the FADT and MADT addresses. */
static void find_tables(uint64_t rsdp, uint64_t *fadt, uint64_t *madt)
{
	const uint8_t *r = guest_mem_ptr(&mem, rsdp, 36);
	uint64_t xsdt;
	uint32_t len;

	assert_int_equal(rsdp, BOOT_ACPI_ADDR);
	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(r[15], 2);
	assert_int_equal(sum(r, 20), 0);
	assert_int_equal(sum(r, 36), 0);
	assert_int_equal(rd32(rsdp + 20), 36);
	xsdt = rd64(rsdp + 24);
	table(xsdt, "XSDT");
	len = rd32(xsdt + 4);
	assert_int_equal(len, 36 + 24);
	*fadt = rd64(xsdt + 36);
	*madt = rd64(xsdt + 44);
	table(*fadt, "FACP");
	table(*madt, "APIC");
	check_mcfg(rd64(xsdt + 52));
}

static void check_madt(uint64_t madt, int ncpus)
{
	const uint8_t *t = table(madt, "APIC");
	uint32_t len = rd32(madt + 4);
	int cpus = 0, ioapics = 0, sci = 0;

	assert_int_equal(rd32(madt + 36), GUEST_LAPIC_BASE);
	assert_int_equal(rd32(madt + 40) & 1, 1);
	for (uint32_t off = 44; off < len; off += t[off + 1]) {
		const uint8_t *s = t + off;
		assert_true(s[1] >= 2 && off + s[1] <= len);
		if (s[0] == 0) {
			assert_int_equal(s[1], 8);
			assert_int_equal(s[2], cpus);             /* UID */
			assert_int_equal(s[3], cpus);             /* APIC id */
			assert_int_equal(s[4] & 1, 1);            /* enabled */
			cpus++;
		} else if (s[0] == 1) {
			uint32_t addr, gsi;
			memcpy(&addr, s + 4, 4);
			memcpy(&gsi, s + 8, 4);
			assert_int_equal(addr, GUEST_IOAPIC_BASE);
			assert_int_equal(gsi, 0);
			ioapics++;
		} else if (s[0] == 2) {
			uint32_t gsi;
			uint16_t flags;
			memcpy(&gsi, s + 4, 4);
			memcpy(&flags, s + 8, 2);
			assert_int_not_equal(s[3], 0);            /* no IRQ0 override */
			assert_int_equal(s[3], ACPI_SCI_IRQ);
			assert_int_equal(gsi, ACPI_SCI_IRQ);
			assert_int_equal(flags, 0xd);             /* level, active high */
			sci++;
		}
	}
	assert_int_equal(cpus, ncpus);
	assert_int_equal(ioapics, 1);
	assert_int_equal(sci, 1);
}

static void check_fadt(uint64_t fadt, uint64_t *dsdt)
{
	const uint8_t *f = table(fadt, "FACP");
	uint16_t sci, arch;
	uint32_t flags;
	uint64_t facs;

	assert_true(rd32(fadt + 4) >= 244);
	memcpy(&sci, f + 46, 2);
	memcpy(&arch, f + 109, 2);
	memcpy(&flags, f + 112, 4);
	assert_int_equal(sci, ACPI_SCI_IRQ);
	assert_int_equal(rd32(fadt + 48), 0);                  /* SMI_CMD */
	assert_int_equal(rd32(fadt + 56), ACPI_PM1A_EVT_PORT);
	assert_int_equal(rd32(fadt + 64), ACPI_PM1A_CNT_PORT);
	assert_int_equal(f[88], 4);
	assert_int_equal(f[89], 2);
	assert_int_equal(arch & 0x6, 0x6);                     /* 8042, no VGA */
	assert_int_equal(flags & (1u << 10), 0);               /* no RESET_REG_SUP */
	assert_int_equal(flags & (1u << 4), 0);                /* a fixed power button */
	assert_int_equal(flags & (1u << 5), 1u << 5);          /* no sleep button */
	assert_int_equal(flags & (1u << 20), 0);               /* not HW-reduced */
	assert_int_equal(f[172], 1);                           /* X_PM1a_CNT: I/O */
	assert_int_equal(f[173], 16);
	assert_int_equal(rd64(fadt + 176), ACPI_PM1A_CNT_PORT);
	assert_int_equal(rd64(fadt + 152), ACPI_PM1A_EVT_PORT);
	*dsdt = rd64(fadt + 140);
	assert_int_equal(rd32(fadt + 40), *dsdt);
	facs = rd64(fadt + 132);
	assert_int_equal(facs % 64, 0);
	assert_memory_equal(guest_mem_ptr(&mem, facs, 4), "FACS", 4);
	assert_int_equal(rd32(facs + 4), 64);
}

/* Decode an AML PkgLength at p; returns its value and sets *n to its size. */
static uint32_t pkglen(const uint8_t *p, int *n)
{
	int extra = p[0] >> 6;
	uint32_t v = extra ? p[0] & 0xf : p[0] & 0x3f;

	for (int i = 0; i < extra; i++)
		v |= (uint32_t)p[1 + i] << (4 + 8 * i);
	*n = 1 + extra;
	return v;
}

static void check_dsdt(uint64_t dsdt)
{
	static const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
				      0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00 };
	static const uint8_t hid[] = { '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01 };
	static const uint8_t pci_hid[] = { '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x08 };
	static const uint8_t prt5[] = { 0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x05, 0x00,
					0x00, 0x00, 0x0a, 17 };
	const uint8_t *t = table(dsdt, "DSDT");
	uint32_t len = rd32(dsdt + 4), off = 36, plen;
	int n;

	assert_int_equal(t[8], 2);                             /* 64-bit AML */
	assert_memory_equal(t + off, s5, sizeof(s5));
	off += sizeof(s5);
	assert_int_equal(t[off], 0x10);                        /* Scope */
	plen = pkglen(t + off + 1, &n);
	assert_int_equal(off + 1 + plen, len);                 /* ends with the table */
	assert_memory_equal(t + off + 1 + n, "\\_SB_", 5);
	off += 1 + n + 5;
	assert_int_equal(t[off], 0x5b);                        /* Device */
	assert_int_equal(t[off + 1], 0x82);
	plen = pkglen(t + off + 2, &n);
	assert_memory_equal(t + off + 2 + n, "COM1", 4);
	assert_non_null(memmem(t, len, hid, sizeof(hid)));
	off += 2 + plen;                                       /* next: PCI0 */
	assert_int_equal(t[off], 0x5b);
	assert_int_equal(t[off + 1], 0x82);
	plen = pkglen(t + off + 2, &n);
	assert_memory_equal(t + off + 2 + n, "PCI0", 4);
	/* after PCI0, and last in \_SB: HPGE, the hotplug event device */
	{
		uint32_t ged = off + 2 + plen, glen;
		int gn;
		static const uint8_t irq[] = { 0x89, 0x06, 0x00, 0x03, 0x01, ACPI_PCIHP_GSI, 0, 0, 0 };

		assert_int_equal(t[ged], 0x5b);
		assert_int_equal(t[ged + 1], 0x82);
		glen = pkglen(t + ged + 2, &gn);
		assert_int_equal(ged + 2 + glen, len);
		assert_memory_equal(t + ged + 2 + gn, "HPGE", 4);
		assert_non_null(memmem(t + ged, len - ged, "ACPI0013", 9));
		assert_non_null(memmem(t + ged, len - ged, irq, sizeof(irq)));
		assert_non_null(memmem(t + ged, len - ged, "_EVT", 4));
	}
	/* PCI0's hotplug slots: OperationRegion(PCST, SystemIO, 0xae00, 12),
	 * and Device(S05_) { _ADR 0x00050000, _SUN 5, _EJ0 { B0EJ = 1 << 5 } } */
	{
		static const uint8_t region[] = { 0x5b, 0x80, 'P', 'C', 'S', 'T', 0x01, 0x0b,
						  ACPI_PCIHP_PORT & 0xff, ACPI_PCIHP_PORT >> 8,
						  0x0a, ACPI_PCIHP_LEN };
		static const uint8_t s05[] = { 'S', '0', '5', '_', 0x08, '_', 'A', 'D', 'R', 0x0c,
					       0x00, 0x00, 0x05, 0x00, 0x08, '_', 'S', 'U', 'N',
					       0x0a, 0x05, 0x14 };
		static const uint8_t ej05[] = { '_', 'E', 'J', '0', 0x01, 0x70, 0x0c, 0x20, 0, 0, 0,
						'B', '0', 'E', 'J' };

		assert_non_null(memmem(t + off, len - off, region, sizeof(region)));
		assert_non_null(memmem(t + off, len - off, s05, sizeof(s05)));
		assert_non_null(memmem(t + off, len - off, ej05, sizeof(ej05)));
		assert_non_null(memmem(t + off, len - off, "S1F_", 4));
		assert_null(memmem(t + off, len - off, "S00_", 4));    /* not the host bridge */
		assert_non_null(memmem(t + off, len - off, "PCNT", 4));
	}
	assert_non_null(memmem(t + off, len - off, pci_hid, sizeof(pci_hid)));
	assert_non_null(memmem(t + off, len - off, "_PRT", 4));
	assert_non_null(memmem(t + off, len - off, "_CRS", 4));
	/* the 64-bit BAR window: a QWordMemory descriptor from above RAM */
	{
		uint8_t q[14] = { 0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03 };
		uint64_t base = pci_mmio64_base(mem.size);
		const uint8_t *at = memmem(t + off, len - off, q, 6);

		assert_non_null(at);
		assert_memory_equal(at + 14, &base, 8);
		assert_true(base >= 0x100000000ULL && base % (1ULL << 30) == 0);
	}
	/* the _PRT entry for slot 5: address 0x0005ffff, pin 0, GSI 16 + 5 % 4 */
	assert_non_null(memmem(t + off, len - off, prt5, sizeof(prt5)));
}

static void check_all(int ncpus)
{
	struct error e;
	uint64_t rsdp, fadt, madt, dsdt;

	memset(mem.host, 0xaa, 1 << 20);
	rsdp = acpi_build(&mem, ncpus, &e);
	assert_int_not_equal(rsdp, 0);
	find_tables(rsdp, &fadt, &madt);
	check_madt(madt, ncpus);
	check_fadt(fadt, &dsdt);
	check_dsdt(dsdt);
}

static void test_acpi_1cpu(void **state) { (void)state; check_all(1); }
static void test_acpi_4cpu(void **state) { (void)state; check_all(4); }
static void test_acpi_64cpu(void **state) { (void)state; check_all(GUEST_MAX_VCPUS); }

static void test_acpi_bad_ncpus(void **state)
{
	struct error e;

	(void)state;
	assert_int_equal(acpi_build(&mem, 0, &e), 0);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_int_equal(acpi_build(&mem, GUEST_MAX_VCPUS + 1, &e), 0);
	assert_int_equal(e.status, EXIT_USAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_acpi_1cpu),
		cmocka_unit_test(test_acpi_4cpu),
		cmocka_unit_test(test_acpi_64cpu),
		cmocka_unit_test(test_acpi_bad_ncpus),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
