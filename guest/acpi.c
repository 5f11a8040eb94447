/*
 * acpi.c - read the firmware tables the test guest cares about, in ring 3.
 *
 * RSDP: from start_info (PVH) or by scanning 0xe0000-0xfffff on 16-byte
 * boundaries for "RSD PTR " with a valid checksum.  Then the XSDT (revision
 * >= 2 and a non-zero address) or the RSDT, and in it:
 *   "APIC" (MADT): the local APIC address, and one processor per Local APIC
 *                  entry (type 0) or x2APIC entry (type 9) with the Enabled
 *                  flag set.  x2APIC ids above 254 are counted as found but
 *                  cannot be started through the xAPIC.
 *   "FACP" (FADT): PM1a_CNT_BLK, the port for the S5 poweroff; and, when
 *                  the HW_REDUCED_ACPI flag is set (QEMU microvm), the
 *                  SLEEP_CONTROL_REG (a generic address at offset 244).
 *                  Also the DSDT, searched for the \_S5 package whose first
 *                  element is SLP_TYP for poweroff (Shoal: 5, QEMU pc: 0).
 * If no MADT is found: the Intel MP table ("_MP_" floating pointer in the
 * first KiB of the EBDA, the last KiB of base memory, or 0xf0000-0xfffff),
 * whose processor entries (type 0, 20 bytes) carry the APIC id and an
 * enabled flag.  With neither, the guest runs on the boot CPU alone.
 *
 * The tables are firmware-written and trusted; only their lengths are
 * bounded so a broken table cannot send the walk across all of memory.
 */
#include "acpi.h"
#include "lib.h"
#include "arch.h"
#include "report.h"
#include "abi/testdev.h"

uint64_t lapic_base = 0xfee00000;
uint16_t acpi_pm1a_cnt_port = 0x604;
uint16_t acpi_pm1a_evt_port;
uint64_t acpi_sleep_ctl_addr;
uint8_t acpi_sleep_ctl_space;
uint8_t acpi_s5_slp_typ = ACPI_S5_SLP_TYP;
uint32_t cpu_apic_ids[MAX_CPUS];
uint32_t cpus_found;
const char *cpu_source = "none";

#define TABLE_MAX_LEN (1u << 20)

struct sdt_header {
	char sig[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem[6], oem_table[8];
	uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

/* A physical address as a pointer, hidden from the compiler's bounds
 * checks (which take small constant addresses for null-pointer offsets). */
static const void *phys(uint64_t pa)
{
	__asm__("" : "+r"(pa));
	return (const void *)pa;
}

static uint8_t sum8(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	while (n--)
		s += *b++;
	return s;
}

static void cpu_add(uint32_t apic_id)
{
	if (cpus_found < MAX_CPUS)
		cpu_apic_ids[cpus_found] = apic_id;
	cpus_found++;
}

static uint64_t rsdp_scan(uint64_t start, uint64_t end, const char *sig, size_t chk_len)
{
	for (; start + 16 <= end; start += 16)
		if (!memcmp(phys(start), sig, strlen(sig)) &&
		    sum8(phys(start), chk_len) == 0)
			return start;
	return 0;
}

static void madt_parse(const struct sdt_header *h)
{
	const uint8_t *p = (const uint8_t *)h + 44, *end = (const uint8_t *)h + h->length;

	lapic_base = *(const uint32_t *)((const uint8_t *)h + 36);
	for (; p + 2 <= end && p[1] >= 2; p += p[1]) {
		if (p[0] == 0 && (*(const uint32_t *)(p + 4) & 1))
			cpu_add(p[3]);
		else if (p[0] == 9 && (*(const uint32_t *)(p + 8) & 1))
			cpu_add(*(const uint32_t *)(p + 4));
	}
	cpu_source = "madt";
}

/* Name(_S5_, Package(){ typ, ... }): 08 '_S5_' 12 pkglen count typ */
static void dsdt_find_s5(uint64_t pa)
{
	const struct sdt_header *h = phys(pa);
	const uint8_t *p, *end;

	if (!pa || h->length < sizeof(*h) || h->length > TABLE_MAX_LEN)
		return;
	p = (const uint8_t *)(h + 1);
	end = (const uint8_t *)h + h->length - 12;
	for (; p < end; p++) {
		if (memcmp(p, "_S5_", 4) || p[4] != 0x12)
			continue;
		p += 5 + 1 + (p[5] >> 6) + 1;		/* PkgLength, NumElements */
		if (*p == 0x0a)				/* BytePrefix */
			p++;
		if (*p < 8)
			acpi_s5_slp_typ = *p;
		return;
	}
}

static void fadt_parse(const struct sdt_header *h)
{
	uint32_t port;

	if (h->length < 68)
		return;
	port = *(const uint32_t *)((const uint8_t *)h + 64);
	if (port && port < 0x10000)
		acpi_pm1a_cnt_port = (uint16_t)port;
	port = *(const uint32_t *)((const uint8_t *)h + 56);   /* PM1a_EVT_BLK */
	if (port && port < 0x10000)
		acpi_pm1a_evt_port = (uint16_t)port;
	if (h->length >= 148 && *(const uint64_t *)((const uint8_t *)h + 140))
		dsdt_find_s5(*(const uint64_t *)((const uint8_t *)h + 140));
	else
		dsdt_find_s5(*(const uint32_t *)((const uint8_t *)h + 40));
	if (h->length >= 256 && (*(const uint32_t *)((const uint8_t *)h + 112) & (1u << 20))) {
		acpi_sleep_ctl_space = *((const uint8_t *)h + 244);
		acpi_sleep_ctl_addr = *(const uint64_t *)((const uint8_t *)h + 248);
	}
}

static void sdt_visit(uint64_t pa)
{
	const struct sdt_header *h = (const void *)pa;

	if (!pa || h->length < sizeof(*h) || h->length > TABLE_MAX_LEN)
		return;
	if (!memcmp(h->sig, "APIC", 4) && !cpus_found)
		madt_parse(h);
	else if (!memcmp(h->sig, "FACP", 4))
		fadt_parse(h);
}

/* Walk the RSDT (4-byte entries) or XSDT (8-byte entries). */
static void root_walk(uint64_t pa, unsigned entry_size)
{
	const struct sdt_header *h = (const void *)pa;
	const uint8_t *p = (const uint8_t *)(h + 1);
	uint32_t n, i;

	if (h->length < sizeof(*h) || h->length > TABLE_MAX_LEN)
		return;
	n = (h->length - sizeof(*h)) / entry_size;
	for (i = 0; i < n; i++, p += entry_size)
		sdt_visit(entry_size == 8 ? *(const uint64_t *)p : *(const uint32_t *)p);
}

static bool acpi_walk(uint64_t rsdp)
{
	const uint8_t *r;

	if (!rsdp)
		rsdp = rsdp_scan(0xe0000, 0x100000, "RSD PTR ", 20);
	if (!rsdp)
		return false;
	r = (const uint8_t *)rsdp;
	if (r[15] >= 2 && *(const uint64_t *)(r + 24))
		root_walk(*(const uint64_t *)(r + 24), 8);
	else
		root_walk(*(const uint32_t *)(r + 16), 4);
	return true;
}

static void mp_parse(uint64_t fp)
{
	uint64_t cfg = *(const uint32_t *)(fp + 4);
	const uint8_t *p, *end;
	uint16_t count;

	if (!cfg || memcmp((const void *)cfg, "PCMP", 4))
		return;
	lapic_base = *(const uint32_t *)(cfg + 36);
	count = *(const uint16_t *)(cfg + 34);
	p = (const uint8_t *)cfg + 44;
	end = (const uint8_t *)cfg + *(const uint16_t *)(cfg + 4);
	for (; count-- && p < end; p += (p[0] == 0) ? 20 : 8)
		if (p[0] == 0 && (p[3] & 1))
			cpu_add(p[1]);
	cpu_source = "mp";
}

static void mp_find(void)
{
	uint64_t ebda = (uint64_t)*(const uint16_t *)phys(0x40e) << 4;
	uint64_t fp = 0;

	if (ebda >= 0x80000 && ebda < 0xa0000)
		fp = rsdp_scan(ebda, ebda + 1024, "_MP_", 16);
	if (!fp)
		fp = rsdp_scan(0x9fc00, 0xa0000, "_MP_", 16);
	if (!fp)
		fp = rsdp_scan(0xf0000, 0x100000, "_MP_", 16);
	if (fp)
		mp_parse(fp);
}

void acpi_init(uint64_t rsdp_pa)
{
	acpi_walk(rsdp_pa);
	if (!cpus_found)
		mp_find();
	if (cpus_found > MAX_CPUS) {
		console_printf(REPORT_PREFIX "%u processors found, using %u\n",
			       cpus_found, MAX_CPUS);
		cpus_found = MAX_CPUS;
	}
}
