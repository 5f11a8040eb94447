/*
 * test_acpi_loader.c - the ACPI tables a firmware boot gets through fw_cfg
 * (acpi_build_fw_cfg, boot/acpi.h), checked by running their
 * etc/table-loader script the way SeaBIOS's romfile_loader does: each file
 * ALLOCATEd at an address of the test's choosing (two different layouts,
 * so no pointer can be right by accident), ADD_POINTER adding the source's
 * address to the field, ADD_CHECKSUM fixing a byte.  Then the result is
 * read as an OS would: the RSDP's checksums, XSDT -> FADT, MADT, MCFG,
 * FADT -> DSDT and FACS, every table's checksum, the FACS's alignment.
 * Also: the script's commands stay inside their files, the firmware DSDT
 * decodes SeaBIOS's BAR window and the direct-boot DSDT does not.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/error.h"
#include "boot/acpi.h"
#include "boot/boot.h"
#include "devices/pci.h"

#define MEM_SIZE (1u << 20)      /* the test's "guest memory" for the placed files */

struct placed {
	const struct fw_cfg_file *f;
	uint32_t addr;               /* where the loader put it, 0: not yet */
};

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static struct placed *find(struct placed *p, const char *name)
{
	for (int i = 0; i < ACPI_FW_NFILES; i++)
		if (!strncmp(p[i].f->name, name, 56))
			return &p[i];
	return NULL;
}

static uint32_t le32(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Run the loader over `mem`, placing the high file at `high` and the FSEG
 * file at `fseg`.  Returns the RSDP's address. */
static uint32_t run_loader(const struct acpi_fw_files *t, uint8_t *mem, uint32_t high, uint32_t fseg)
{
	struct placed p[ACPI_FW_NFILES];
	const struct fw_cfg_file *l = &t->files[2];
	int allocs = 0, pointers = 0, sums = 0;

	for (int i = 0; i < ACPI_FW_NFILES; i++)
		p[i] = (struct placed){ .f = &t->files[i] };
	assert_string_equal(l->name, "etc/table-loader");
	assert_int_equal(l->len % 128, 0);
	for (size_t off = 0; off < l->len; off += 128) {
		const uint8_t *e = (const uint8_t *)l->data + off;
		uint32_t cmd = le32(e);
		const uint8_t *a = e + 4;

		if (cmd == 1) {                         /* ALLOCATE */
			struct placed *f = find(p, (const char *)a);
			uint32_t align = le32(a + 56);
			uint8_t zone = a[60];

			assert_non_null(f);
			assert_memory_equal(a + 56 + 5, (uint8_t[63]){ 0 }, 63);
			assert_int_equal(f->addr, 0);
			f->addr = zone == 2 ? fseg : high;
			assert_int_equal(zone, strcmp(f->f->name, "etc/acpi/rsdp") ? 1 : 2);
			assert_int_equal(f->addr % align, 0);
			assert_true(f->addr + f->f->len <= MEM_SIZE);
			memcpy(mem + f->addr, f->f->data, f->f->len);
			allocs++;
		} else if (cmd == 2) {                  /* ADD_POINTER */
			struct placed *d = find(p, (const char *)a);
			struct placed *s = find(p, (const char *)a + 56);
			uint32_t at = le32(a + 112);
			uint8_t size = a[116];
			uint64_t v = 0;

			assert_non_null(d);
			assert_non_null(s);
			assert_true(d->addr && s->addr);
			assert_true(size == 4 || size == 8);
			assert_true(at + size <= d->f->len);
			memcpy(&v, mem + d->addr + at, size);
			assert_true(v < s->f->len);     /* an offset into the source */
			v += s->addr;
			memcpy(mem + d->addr + at, &v, size);
			pointers++;
		} else if (cmd == 3) {                  /* ADD_CHECKSUM */
			struct placed *f = find(p, (const char *)a);
			uint32_t at = le32(a + 56), start = le32(a + 60), len = le32(a + 64);

			assert_non_null(f);
			assert_true(f->addr);
			assert_true(start + len <= f->f->len && at >= start && at < start + len);
			mem[f->addr + at] = (uint8_t)(mem[f->addr + at] - sum(mem + f->addr + start, len));
			sums++;
		} else {
			fail_msg("unknown loader command %u", cmd);
		}
	}
	assert_int_equal(allocs, 2);
	/* XSDT's 3 entries, the FADT's DSDT, X_DSDT, X_FIRMWARE_CTRL, the RSDP's XSDT */
	assert_int_equal(pointers, 7);
	assert_int_equal(sums, 4);
	return find(p, "etc/acpi/rsdp")->addr;
}

static const uint8_t *table(const uint8_t *mem, uint64_t addr, const char *sig)
{
	uint32_t len;

	assert_true(addr > 0 && addr < MEM_SIZE - 36);
	assert_memory_equal(mem + addr, sig, 4);
	len = le32(mem + addr + 4);
	assert_true(addr + len <= MEM_SIZE);
	assert_int_equal(sum(mem + addr, len), 0);
	return mem + addr;
}

/* Read what the loader left as a guest OS would. */
static void check_placed(const uint8_t *mem, uint32_t rsdp, int ncpus)
{
	const uint8_t *r = mem + rsdp, *x, *fadt = NULL, *madt = NULL, *mcfg = NULL;
	uint64_t xsdt, dsdt, facs;
	uint32_t n;

	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(r[15], 2);
	assert_int_equal(sum(r, 20), 0);
	assert_int_equal(sum(r, 36), 0);
	memcpy(&xsdt, r + 24, 8);
	x = table(mem, xsdt, "XSDT");
	n = (le32(x + 4) - 36) / 8;
	assert_int_equal(n, 3);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t a;

		memcpy(&a, x + 36 + 8 * i, 8);
		if (!memcmp(mem + a, "FACP", 4))
			fadt = table(mem, a, "FACP");
		else if (!memcmp(mem + a, "APIC", 4))
			madt = table(mem, a, "APIC");
		else
			mcfg = table(mem, a, "MCFG");
	}
	assert_non_null(fadt);
	assert_non_null(madt);
	assert_non_null(mcfg);
	assert_memory_equal(fadt + 10, "SHOAL ", 6);
	/* one LAPIC entry (8 bytes) per vCPU, then IOAPIC, ISO, NMI */
	assert_int_equal(le32(madt + 4), 44 + 8 * ncpus + 12 + 10 + 6);
	assert_int_equal(le32(fadt + 40), (uint32_t)(memcpy(&dsdt, fadt + 140, 8), dsdt));
	table(mem, dsdt, "DSDT");
	memcpy(&facs, fadt + 132, 8);
	assert_int_equal(le32(fadt + 36), 0);
	assert_int_equal(facs % 64, 0);
	assert_memory_equal(mem + facs, "FACS", 4);
	/* No second RSDP left for an OS to find in the tables' blob. */
	for (uint64_t a = 0; a + 8 <= MEM_SIZE; a += 16)
		if (a != rsdp)
			assert_memory_not_equal(mem + a, "RSD PTR ", 8);
}

static void loader_boots(int ncpus)
{
	struct acpi_fw_files t;
	struct error e = { 0 };
	uint8_t *mem = calloc(1, MEM_SIZE);
	uint8_t *mem2 = calloc(1, MEM_SIZE);

	assert_non_null(mem);
	assert_non_null(mem2);
	assert_int_equal(acpi_build_fw_cfg(512ull << 20, ncpus, &t, &e), 0);
	assert_string_equal(t.files[0].name, "etc/acpi/tables");
	assert_string_equal(t.files[1].name, "etc/acpi/rsdp");
	assert_int_equal(t.files[1].len, 36);
	check_placed(mem, run_loader(&t, mem, 0x40000, 0xf5a30 - 0xf0000 + 0x80000), ncpus);
	check_placed(mem2, run_loader(&t, mem2, 0x10040, 0xc0010), ncpus);
	acpi_fw_files_free(&t);
	free(mem);
	free(mem2);
}

static void test_loader_1cpu(void **state) { (void)state; loader_boots(1); }
static void test_loader_8cpu(void **state) { (void)state; loader_boots(8); }

/* memmem for the DSDT's bytes: the DWordMemory descriptor of the window. */
static int has_window(const uint8_t *p, size_t n)
{
	const uint32_t lo = (uint32_t)PCI_MMIO32_FW_BASE;
	const uint32_t hi = (uint32_t)(PCI_MMIO32_FW_BASE + PCI_MMIO32_FW_SIZE - 1);
	uint8_t want[8];

	memcpy(want, &lo, 4);
	memcpy(want + 4, &hi, 4);
	for (size_t i = 0; i + 8 <= n; i++)
		if (!memcmp(p + i, want, 8))
			return 1;
	return 0;
}

static void test_firmware_window(void **state)
{
	struct acpi_fw_files t;
	struct error e = { 0 };
	struct guest_mem m;
	uint64_t rsdp, xsdt, fadt, dsdt;
	const uint8_t *blob;
	uint32_t len;

	(void)state;
	assert_int_equal(acpi_build_fw_cfg(256ull << 20, 1, &t, &e), 0);
	/* In the unplaced blob the DSDT pointer is an offset into it. */
	blob = t.files[0].data;
	memcpy(&xsdt, (const uint8_t *)t.files[1].data + 24, 8);
	memcpy(&fadt, blob + xsdt + 36, 8);
	assert_memory_equal(blob + fadt, "FACP", 4);
	memcpy(&dsdt, blob + fadt + 140, 8);
	assert_memory_equal(blob + dsdt, "DSDT", 4);
	len = le32(blob + dsdt + 4);
	assert_true(has_window(blob + dsdt, len));
	acpi_fw_files_free(&t);

	/* Direct kernel boot's DSDT is as it was: no firmware window. */
	assert_int_equal(guest_mem_create_anon(&m, 256ull << 20, &e), 0);
	rsdp = acpi_build(&m, 1, &e);
	assert_int_equal(rsdp, BOOT_ACPI_ADDR);
	assert_int_equal(guest_mem_read(&m, rsdp + 24, &xsdt, 8), 0);
	assert_int_equal(guest_mem_read(&m, xsdt + 36, &fadt, 8), 0);
	assert_int_equal(guest_mem_read(&m, fadt + 140, &dsdt, 8), 0);
	blob = guest_mem_ptr(&m, dsdt, 36);
	assert_non_null(blob);
	assert_memory_equal(blob, "DSDT", 4);
	assert_false(has_window(blob, le32(blob + 4)));
	/* and 26 bytes (one DWordMemory descriptor) shorter than the firmware's */
	assert_int_equal(le32(blob + 4) + 26, len);
	guest_mem_destroy(&m);
}

static void test_bad_ncpus(void **state)
{
	struct acpi_fw_files t;
	struct error e = { 0 };

	(void)state;
	assert_int_equal(acpi_build_fw_cfg(256ull << 20, 0, &t, &e), -1);
	assert_non_null(strstr(e.msg, "vCPUs"));
	acpi_fw_files_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loader_1cpu),
		cmocka_unit_test(test_loader_8cpu),
		cmocka_unit_test(test_firmware_window),
		cmocka_unit_test(test_bad_ncpus),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
