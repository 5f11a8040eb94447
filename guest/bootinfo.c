/*
 * bootinfo.c - the PVH start info, the memory map and the identity map's
 * extension above 4 GiB.  Ring 3, boot CPU, before the APs start.
 *
 * struct hvm_start_info (Xen public/arch-x86/hvm/start_info.h), offsets:
 *    0 magic (0x336ec578)   4 version   8 flags   12 nr_modules
 *   16 modlist_paddr  24 cmdline_paddr  32 rsdp_paddr
 *   40 memmap_paddr   48 memmap_entries (version >= 1)   52 reserved
 * struct hvm_memmap_table_entry: addr u64, size u64, type u32, reserved u32.
 *
 * Everything is copied out first: the loader may have put the start info in
 * memory the workloads will later overwrite (e.g. low RAM).
 *
 * The identity map: entry.S maps [0, 4 GiB) with 2 MiB pages.  For RAM
 * above that, this file writes PDPT entries from ring 3 (the tables are
 * user-writable, like all memory here): 1 GiB pages when CPUID says the CPU
 * has them, otherwise page directories from a static pool (HIGH_PD_MAX
 * GiB).  Those PDPT entries were not present before, so no TLB flush (a
 * ring-0 INVLPG) is needed: not-present entries are never cached.
 */
#include "bootinfo.h"
#include "arch.h"
#include "lib.h"
#include "report.h"

#define START_INFO_MAGIC 0x336ec578u
#define GIB              (1ull << 30)
#define HIGH_PD_MAX      60	/* GiB above 4 GiB mappable without 1G pages */
#define PDPT_ENTRIES     512

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries, reserved;
} __attribute__((packed));

struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct hvm_start_info) == 56, "start_info layout");
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "memmap entry layout");

struct mem_region mem_map[MEMMAP_MAX];
unsigned mem_map_n;
uint64_t mem_total;
uint64_t mapped_top = 4 * GIB;
uint64_t boot_rsdp;
char boot_cmdline[CMDLINE_MAX];

extern uint64_t pdpt[PDPT_ENTRIES];
extern char __image_start[], __image_end[];
static uint64_t pd_high[HIGH_PD_MAX][512] __attribute__((aligned(4096)));

static void memmap_copy(const struct hvm_start_info *si)
{
	const struct hvm_memmap_entry *e = (const void *)si->memmap_paddr;
	unsigned i;

	if (si->version < 1 || !si->memmap_paddr)
		return;
	for (i = 0; i < si->memmap_entries && mem_map_n < MEMMAP_MAX; i++) {
		mem_map[mem_map_n++] = (struct mem_region){ e[i].addr, e[i].size, e[i].type };
		if (e[i].type == 1)
			mem_total += e[i].size;
	}
}

bool bootinfo_init(uint64_t start_info_pa)
{
	const struct hvm_start_info *si = (const void *)start_info_pa;
	const char *cl;
	size_t i;

	if (!start_info_pa || si->magic != START_INFO_MAGIC)
		return false;
	memmap_copy(si);
	boot_rsdp = si->rsdp_paddr;
	cl = (const char *)si->cmdline_paddr;
	for (i = 0; cl && cl[i] && i < CMDLINE_MAX - 1; i++)
		boot_cmdline[i] = cl[i];
	boot_cmdline[i] = 0;
	return true;
}

static uint64_t ram_top(void)
{
	uint64_t top = 0;
	unsigned i;

	for (i = 0; i < mem_map_n; i++)
		if (mem_map[i].type == 1 && mem_map[i].addr + mem_map[i].len > top)
			top = mem_map[i].addr + mem_map[i].len;
	return top;
}

static bool cpu_has_1g_pages(void)
{
	uint32_t r[4];

	cpuid(0x80000000, 0, r);
	if (r[0] < 0x80000001)
		return false;
	cpuid(0x80000001, 0, r);
	return r[3] & (1u << 26);
}

/* Map GiB number g (>= 4) with one 1 GiB page or a pool page directory. */
static bool map_gib(uint64_t g, bool huge)
{
	uint64_t *pd;
	unsigned i;

	if (huge) {
		pdpt[g] = (g * GIB) | 0x87;
		return true;
	}
	if (g - 4 >= HIGH_PD_MAX)
		return false;
	pd = pd_high[g - 4];
	for (i = 0; i < 512; i++)
		pd[i] = (g * GIB + ((uint64_t)i << 21)) | 0x87;
	barrier();
	pdpt[g] = (uint64_t)pd | 0x7;
	return true;
}

void mem_map_high(void)
{
	uint64_t top = ram_top(), g;
	bool huge = cpu_has_1g_pages();

	for (g = 4; g * GIB < top && g < PDPT_ENTRIES; g++) {
		if (!map_gib(g, huge))
			break;
		mapped_top = (g + 1) * GIB;
	}
	if (mapped_top < top)
		console_printf(REPORT_PREFIX "RAM above 0x%lx is not mapped\n", mapped_top);
}

bool mem_range_usable(uint64_t addr, uint64_t len, const char **why)
{
	uint64_t end = addr + len, img0 = (uint64_t)__image_start, img1 = (uint64_t)__image_end;
	unsigned i;

	*why = "empty or wrapping range";
	if (!len || end < addr)
		return false;
	*why = "beyond the identity map";
	if (end > mapped_top)
		return false;
	*why = "overlaps the guest image";
	if (addr < img1 && end > img0)
		return false;
	*why = "not inside one RAM entry of the memory map";
	for (i = 0; i < mem_map_n; i++)
		if (mem_map[i].type == 1 && addr >= mem_map[i].addr &&
		    end <= mem_map[i].addr + mem_map[i].len)
			return true;
	return false;
}

bool mem_default_region(uint64_t *addr, uint64_t *len)
{
	uint64_t best_a = 0, best_l = 0, img1 = (uint64_t)__image_end;
	unsigned i;

	for (i = 0; i < mem_map_n; i++) {
		uint64_t a = mem_map[i].addr, e = a + mem_map[i].len;

		if (mem_map[i].type != 1)
			continue;
		if (a < img1)
			a = img1;
		a = ALIGN_UP(a, 1ull << 21);
		if (e > mapped_top)
			e = mapped_top;
		if (e > a && e - a > best_l)
			best_a = a, best_l = e - a;
	}
	*addr = best_a;
	*len = best_l;
	return best_l != 0;
}
