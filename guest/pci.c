/*
 * pci.c - PCI configuration space and bus enumeration, in ring 3.
 *
 * Config space access, chosen once:
 *   - ECAM when the ACPI MCFG table names one for segment 0 (QEMU q35 at
 *     0xb0000000), or else the DSDT's host bridge has a _CBA method (QEMU
 *     microvm,pcie=on: 0xe0000000, and no MCFG), the bus count then coming
 *     from the DSDT's bus-number range.  The address is
 *     base + (bus << 20 | dev << 15 | fn << 12 | offset).  ECAM below 4 GiB
 *     lies in the boot identity map; above it, pci.c maps the 1 GiB pages
 *     it needs (like bootinfo.c does for RAM: PDPT entries that were not
 *     present, so no TLB flush).
 *   - else the legacy mechanism: 0x80000000 | bus << 16 | dev << 11 |
 *     fn << 8 | offset in 0xCF8, data in 0xCFC..0xCFF.  It is probed by
 *     writing 0x80000000 to 0xCF8 and reading it back (QEMU microvm has no
 *     such ports and reads all-ones).
 *
 * Enumeration: bus 0, every device and (for multi-function devices) every
 * function; behind a PCI-PCI bridge only when firmware has given it a
 * secondary bus number (the guest does not number buses or program bridge
 * windows itself).
 *
 * BARs: each is sized by writing all-ones with decoding off, then restored.
 * A BAR whose address is 0 was not assigned (no firmware: QEMU microvm,
 * Shoal) and gets one here, naturally aligned, from the host bridge's
 * windows: the largest memory window below 4 GiB and the largest I/O
 * window that the DSDT's address-space descriptors (DWord/Word/QWord, as
 * in a root bridge's _CRS) describe, above every address firmware already
 * gave out.  Without such descriptors: memory 0xc0000000-0xdfffffff (QEMU
 * microvm's 32-bit window, hw/i386/microvm.h) and I/O 0xc000-0xffff.
 * 64-bit BARs are placed below 4 GiB too, so the identity map reaches
 * them.  Then memory and I/O decoding and bus mastering are turned on.
 *
 * Boot CPU only; the tables are read once and kept.
 */
#include "pci.h"
#include "arch.h"
#include "bootinfo.h"
#include "lib.h"
#include "report.h"

struct pci_dev pci_devs[PCI_DEVS_MAX];
unsigned pci_ndevs;
const char *pci_access = "none";
uint64_t pci_ecam_base;
static uint8_t ecam_bus_end;
static bool pci_done, force_ports;

/* Host bridge windows for BAR assignment: [base, end), cursor = next free. */
struct pci_window {
	uint64_t base, end, cursor;
};
static struct pci_window win_mem = { 0xc0000000, 0xe0000000, 0 };
static struct pci_window win_io = { 0xc000, 0x10000, 0 };

#define GIB (1ull << 30)

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* ---- ACPI: MCFG and the DSDT's address-space descriptors ---- */

struct sdt {
	char sig[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem[6], oem_table[8];
	uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static const struct sdt *sdt_at(uint64_t pa)
{
	const struct sdt *h;

	__asm__("" : "+r"(pa));
	h = (const void *)pa;
	if (!pa || pa >= mapped_top || h->length < sizeof(*h) || h->length > (1u << 20))
		return NULL;
	return h;
}

static uint64_t rsdp_find(void)
{
	uint64_t p;

	if (boot_rsdp)
		return boot_rsdp;
	for (p = 0xe0000; p < 0x100000; p += 16)
		if (!memcmp((const void *)p, "RSD PTR ", 8))
			return p;
	return 0;
}

static void mcfg_parse(const struct sdt *h)
{
	const uint8_t *p = (const uint8_t *)h + 44, *end = (const uint8_t *)h + h->length;

	for (; p + 16 <= end; p += 16) {
		if (*(const uint16_t *)(p + 8) != 0 || p[10] != 0)
			continue;		/* segment 0, starting at bus 0 */
		pci_ecam_base = *(const uint64_t *)p;
		ecam_bus_end = p[11];
		return;
	}
}

/* Address-space descriptors seen in the DSDT: candidate windows. */
struct pci_range {
	uint8_t type;		/* 0 memory, 1 I/O, 2 bus numbers */
	uint64_t min, len;
};
static struct pci_range ranges[16];
static unsigned nranges;

static void range_add(uint8_t type, uint64_t min, uint64_t len)
{
	if (nranges < ARRAY_SIZE(ranges) && len)
		ranges[nranges++] = (struct pci_range){ type, min, len };
}

/*
 * The largest memory range below 4 GiB (16 MiB or more, clear of ECAM:
 * QEMU's DSDT describes ECAM itself as a QWord memory range) and the
 * largest I/O range; the bus range sets the ECAM bus count when no MCFG.
 */
static void windows_choose(bool have_mcfg)
{
	uint64_t ecam_end = pci_ecam_base + (((uint64_t)ecam_bus_end + 1) << 20);
	bool mem = false, io = false;
	unsigned i;

	for (i = 0; i < nranges; i++) {
		const struct pci_range *r = &ranges[i];

		if (r->type == 2 && !have_mcfg && r->min == 0 && r->len <= 256)
			ecam_bus_end = (uint8_t)(r->len - 1), ecam_end = pci_ecam_base + (r->len << 20);
		if (r->type == 0 && r->len >= (16u << 20) && r->min >= (1u << 20) &&
		    r->min + r->len <= 4 * GIB &&
		    (r->min >= ecam_end || r->min + r->len <= pci_ecam_base) &&
		    (!mem || r->len > win_mem.end - win_mem.base)) {
			win_mem.base = r->min, win_mem.end = r->min + r->len;
			mem = true;
		}
		if (r->type == 1 && r->len >= 0x100 && r->min + r->len <= 0x10000 &&
		    (!io || r->len > win_io.end - win_io.base)) {
			win_io.base = r->min, win_io.end = r->min + r->len;
			io = true;
		}
	}
}

/*
 * QEMU's generic PCIe host (microvm) has no MCFG; its DSDT says
 * Method (_CBA) { Return (base) }: 14 len "_CBA" flags A4 0C/0E value.
 */
static void dsdt_cba(const uint8_t *p, const uint8_t *end)
{
	unsigned i;

	for (i = 4; i < 10 && p + i + 10 <= end; i++) {
		if (p[i] != 0xa4)
			continue;
		if (p[i + 1] == 0x0c)
			pci_ecam_base = *(const uint32_t *)(p + i + 2);
		else if (p[i + 1] == 0x0e)
			pci_ecam_base = *(const uint64_t *)(p + i + 2);
		return;
	}
}

/*
 * Large resource descriptors: tag, u16 length, resource type, flags,
 * then granularity, min, max, translation, length in 2, 4 or 8 bytes.
 */
static void dsdt_windows(const struct sdt *h, bool have_mcfg)
{
	const uint8_t *p = (const uint8_t *)(h + 1), *end = (const uint8_t *)h + h->length;

	for (; p + 46 <= end; p++) {
		uint16_t len = *(const uint16_t *)(p + 1);

		if (p[0] == 0x87 && len == 23)
			range_add(p[3], *(const uint32_t *)(p + 10), *(const uint32_t *)(p + 22));
		else if (p[0] == 0x88 && len == 13)
			range_add(p[3], *(const uint16_t *)(p + 8), *(const uint16_t *)(p + 14));
		else if (p[0] == 0x8a && len == 43)
			range_add(p[3], *(const uint64_t *)(p + 14), *(const uint64_t *)(p + 38));
		else if (!have_mcfg && !memcmp(p, "_CBA", 4))
			dsdt_cba(p, end);
	}
}

static uint64_t dsdt_pa;

static void sdt_visit(uint64_t pa)
{
	const struct sdt *h = sdt_at(pa);

	if (!h)
		return;
	if (!memcmp(h->sig, "MCFG", 4))
		mcfg_parse(h);
	else if (!memcmp(h->sig, "FACP", 4) && h->length >= 44)
		dsdt_pa = h->length >= 148 && *(const uint64_t *)((const uint8_t *)h + 140)
			  ? *(const uint64_t *)((const uint8_t *)h + 140)
			  : *(const uint32_t *)((const uint8_t *)h + 40);
}

static void acpi_scan(void)
{
	const uint8_t *r;
	const struct sdt *root;
	unsigned esz, i, n;
	uint64_t rsdp = rsdp_find();
	bool have_mcfg;

	if (!rsdp)
		return;
	r = (const uint8_t *)rsdp;
	esz = r[15] >= 2 && *(const uint64_t *)(r + 24) ? 8 : 4;
	root = sdt_at(esz == 8 ? *(const uint64_t *)(r + 24) : *(const uint32_t *)(r + 16));
	if (!root)
		return;
	n = (root->length - sizeof(*root)) / esz;
	for (i = 0; i < n; i++) {
		const uint8_t *e = (const uint8_t *)(root + 1) + i * esz;

		sdt_visit(esz == 8 ? *(const uint64_t *)e : *(const uint32_t *)e);
	}
	have_mcfg = pci_ecam_base != 0;
	root = sdt_at(dsdt_pa);
	if (root && !memcmp(root->sig, "DSDT", 4))
		dsdt_windows(root, have_mcfg);
	windows_choose(have_mcfg);
}

/* ---- config space access ---- */

/* Map [pa, pa+len) with 1 GiB pages where the identity map ends short. */
extern uint64_t pdpt[512];	/* entry.S: the identity map's PDPT */

static bool ecam_map(uint64_t pa, uint64_t len)
{
	uint64_t g;

	for (g = pa / GIB; g * GIB < pa + len; g++) {
		if (g >= 512)
			return false;
		if (g * GIB >= mapped_top && !(pdpt[g] & 1))
			pdpt[g] = (g * GIB) | 0x9f;	/* P RW US PWT PCD PS */
	}
	barrier();
	return true;
}

static uint64_t ecam_addr(const struct pci_dev *d, unsigned off)
{
	return pci_ecam_base + ((uint64_t)d->bus << 20) + ((uint64_t)d->dev << 15) +
	       ((uint64_t)d->fn << 12) + (off & 0xfff);
}

static uint32_t cf8_addr(const struct pci_dev *d, unsigned off)
{
	return 0x80000000u | (uint32_t)d->bus << 16 | (uint32_t)d->dev << 11 |
	       (uint32_t)d->fn << 8 | (off & 0xfc);
}

static bool use_ecam(const struct pci_dev *d)
{
	return !force_ports && pci_ecam_base && d->bus <= ecam_bus_end;
}

uint32_t pci_read32(const struct pci_dev *d, unsigned off)
{
	if (use_ecam(d))
		return mmio_read32(ecam_addr(d, off & ~3u));
	outl(0xcf8, cf8_addr(d, off));
	return inl(0xcfc);
}

uint16_t pci_read16(const struct pci_dev *d, unsigned off)
{
	return (uint16_t)(pci_read32(d, off & ~3u) >> ((off & 2) * 8));
}

uint8_t pci_read8(const struct pci_dev *d, unsigned off)
{
	return (uint8_t)(pci_read32(d, off & ~3u) >> ((off & 3) * 8));
}

void pci_write32(const struct pci_dev *d, unsigned off, uint32_t v)
{
	if (use_ecam(d)) {
		mmio_write32(ecam_addr(d, off & ~3u), v);
		return;
	}
	outl(0xcf8, cf8_addr(d, off));
	outl(0xcfc, v);
}

/* A 16-bit write as a 16-bit access (never read-modify-write: RW1C bits). */
void pci_write16(const struct pci_dev *d, unsigned off, uint16_t v)
{
	if (use_ecam(d)) {
		*(volatile uint16_t *)ecam_addr(d, off & ~1u) = v;
		return;
	}
	outl(0xcf8, cf8_addr(d, off));
	outw((uint16_t)(0xcfc + (off & 2)), v);
}

unsigned pci_cap_next(const struct pci_dev *d, uint8_t id, unsigned after)
{
	unsigned off, guard;

	if (!(pci_read16(d, PCI_CFG_STATUS) & PCI_STATUS_CAPS))
		return 0;
	off = after ? pci_read8(d, after + 1) : pci_read8(d, PCI_CFG_CAP_PTR);
	for (guard = 0; off >= 0x40 && off < 0x100 && guard < 48; guard++) {
		off &= ~3u;
		if (pci_read8(d, off) == id)
			return off;
		off = pci_read8(d, off + 1);
	}
	return 0;
}

static bool ports_present(void)
{
	uint32_t old = inl(0xcf8), v;

	outl(0xcf8, 0x80000000u);
	v = inl(0xcf8);
	outl(0xcf8, old);
	return v == 0x80000000u;
}

/* ---- BARs ---- */

/* Size BAR i (decoding must be off); returns the slots it takes (1 or 2). */
static unsigned bar_probe(struct pci_dev *d, unsigned i)
{
	unsigned off = PCI_CFG_BAR0 + 4 * i;
	uint32_t lo = pci_read32(d, off), mlo, hi = 0, mhi = 0xffffffffu;
	struct pci_bar *b = &d->bar[i];

	pci_write32(d, off, 0xffffffffu);
	mlo = pci_read32(d, off);
	pci_write32(d, off, lo);
	if (!mlo || mlo == 0xffffffffu)
		return 1;			/* unimplemented */
	b->io = lo & 1;
	if (b->io) {
		b->addr = lo & ~3u;
		b->size = (uint16_t)~(mlo & ~3u) + 1u;
		return 1;
	}
	b->is64 = ((lo >> 1) & 3) == 2 && i < 5;
	if (b->is64) {
		hi = pci_read32(d, off + 4);
		pci_write32(d, off + 4, 0xffffffffu);
		mhi = pci_read32(d, off + 4);
		pci_write32(d, off + 4, hi);
	}
	b->addr = ((uint64_t)hi << 32) | (lo & ~0xfu);
	b->size = ~(((uint64_t)mhi << 32) | (mlo & ~0xfu)) + 1;
	return b->is64 ? 2 : 1;
}

/* Move a window's cursor past what firmware already assigned inside it. */
static void window_skip(struct pci_window *w, const struct pci_bar *b)
{
	if (b->addr >= w->base && b->addr < w->end && b->addr + b->size > w->cursor)
		w->cursor = b->addr + b->size;
}

static bool window_take(struct pci_window *w, uint64_t size, uint64_t *addr)
{
	uint64_t a = ALIGN_UP(w->cursor ? w->cursor : w->base, size);

	if (a + size > w->end || a + size < a)
		return false;
	*addr = a;
	w->cursor = a + size;
	return true;
}

static void bar_assign(struct pci_dev *d, unsigned i)
{
	struct pci_bar *b = &d->bar[i];
	unsigned off = PCI_CFG_BAR0 + 4 * i;
	uint64_t a;

	if (!window_take(b->io ? &win_io : &win_mem, b->size, &a)) {
		console_printf(REPORT_PREFIX "pci %02x:%02x.%u BAR%u: no room for 0x%lx\n",
			       d->bus, d->dev, d->fn, i, b->size);
		return;
	}
	pci_write32(d, off, (uint32_t)a | (pci_read32(d, off) & (b->io ? 3u : 0xfu)));
	if (b->is64)
		pci_write32(d, off + 4, (uint32_t)(a >> 32));
	b->addr = a;
	b->assigned = true;
}

/* ---- enumeration ---- */

static void dev_probe_bars(struct pci_dev *d)
{
	uint16_t cmd = pci_read16(d, PCI_CFG_COMMAND);
	unsigned i, bars = (pci_read8(d, PCI_CFG_HEADER) & 0x7f) == 0 ? 6 : 2;

	pci_write16(d, PCI_CFG_COMMAND, cmd & ~(PCI_CMD_IO | PCI_CMD_MEM));
	for (i = 0; i < bars; i += bar_probe(d, i))
		;
	pci_write16(d, PCI_CFG_COMMAND, cmd);
}

static bool dev_add(uint8_t bus, uint8_t dev, uint8_t fn)
{
	struct pci_dev t = { .bus = bus, .dev = dev, .fn = fn }, *d;
	uint32_t id = pci_read32(&t, 0);

	if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
		return false;
	if (pci_ndevs == PCI_DEVS_MAX)
		return true;
	d = &pci_devs[pci_ndevs++];
	*d = t;
	d->vendor = (uint16_t)id;
	d->device = (uint16_t)(id >> 16);
	d->class = pci_read32(d, PCI_CFG_REVISION) >> 8;
	d->subsys = pci_read16(d, PCI_CFG_SUBSYS_ID);
	dev_probe_bars(d);
	return true;
}

static void bus_scan(uint8_t bus, unsigned depth)
{
	unsigned dev, fn;

	for (dev = 0; dev < 32; dev++) {
		struct pci_dev t = { .bus = bus, .dev = (uint8_t)dev };

		for (fn = 0; fn < 8; fn++) {
			t.fn = (uint8_t)fn;
			if (!dev_add(bus, (uint8_t)dev, (uint8_t)fn)) {
				if (fn == 0)
					break;
				continue;
			}
			if ((pci_read8(&t, PCI_CFG_HEADER) & 0x7f) == 1 && depth < 4) {
				uint8_t sec = pci_read8(&t, PCI_CFG_BRIDGE_BUS + 1);

				if (sec > bus)
					bus_scan(sec, depth + 1);
			}
			if (fn == 0 && !(pci_read8(&t, PCI_CFG_HEADER) & 0x80))
				break;
		}
	}
}

/* Give addresses to unassigned BARs, then turn decoding on. */
static void devs_assign(void)
{
	unsigned i, j;

	for (i = 0; i < pci_ndevs; i++)
		for (j = 0; j < 6; j++)
			if (pci_devs[i].bar[j].size && pci_devs[i].bar[j].addr) {
				window_skip(&win_mem, &pci_devs[i].bar[j]);
				window_skip(&win_io, &pci_devs[i].bar[j]);
			}
	for (i = 0; i < pci_ndevs; i++) {
		struct pci_dev *d = &pci_devs[i];
		uint16_t cmd = PCI_CMD_MASTER;

		if ((pci_read8(d, PCI_CFG_HEADER) & 0x7f) != 0)
			continue;
		for (j = 0; j < 6; j++) {
			if (!d->bar[j].size)
				continue;
			if (!d->bar[j].addr)
				bar_assign(d, j);
			if (d->bar[j].addr)
				cmd |= d->bar[j].io ? PCI_CMD_IO : PCI_CMD_MEM;
		}
		pci_write16(d, PCI_CFG_COMMAND, pci_read16(d, PCI_CFG_COMMAND) | cmd);
	}
}

bool pci_init(void)
{
	if (pci_done)
		return pci_ndevs != 0;
	pci_done = true;
	if (!nranges && !pci_ecam_base)
		acpi_scan();
	if (!force_ports && pci_ecam_base && ecam_map(pci_ecam_base, ((uint64_t)ecam_bus_end + 1) << 20))
		pci_access = "ecam";
	else if (ports_present())
		pci_access = "ports";
	else
		return false;
	bus_scan(0, 0);
	devs_assign();
	return pci_ndevs != 0;
}

void pci_rescan(bool ports)
{
	pci_done = false;
	pci_ndevs = 0;
	force_ports = ports;
	pci_access = "none";
	win_mem.cursor = win_io.cursor = 0;
}
