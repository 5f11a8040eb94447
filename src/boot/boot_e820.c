/*
 * boot_e820.c - the guest's physical memory map, as a BIOS would report it
 * through INT 15h/E820.
 *
 * The same list feeds both boot protocols: Linux's boot_params.e820_table
 * and PVH's hvm_memmap_table (whose type values are the e820 ones).  It is
 * derived only from the guest_mem region table and the fixed layout in
 * layout.h, so it can never disagree with the memory KVM actually maps:
 *
 *   [0, EBDA)               RAM      real-mode area and our boot structures
 *   [EBDA, 1 MiB)           reserved EBDA, VGA hole, BIOS area; the MP
 *                                    table and ACPI tables live here
 *   [1 MiB, low_end)        RAM      kernel, initrd; low_end <= 3 GiB
 *   [4 GiB, 4 GiB + high)   RAM      only when the VM has more than 3 GiB
 *
 * The 32-bit hole (3 GiB..4 GiB: IOAPIC, LAPIC, future PCI windows) is left
 * out of the map entirely, which tells the guest it is not RAM and is free
 * for MMIO, as on real machines.  Entries are sorted and never overlap.
 */
#include "boot/boot.h"

#include "base/layout.h"

/* Append one entry when there is room and it is not empty. */
static void e820_add(struct e820_entry *out, int max, int *n,
		     uint64_t addr, uint64_t size, uint32_t type)
{
	if (size == 0 || *n >= max)
		return;
	out[*n] = (struct e820_entry){ .addr = addr, .size = size, .type = type };
	(*n)++;
}

int e820_build(const struct guest_mem *m, struct e820_entry *out, int max)
{
	uint64_t low_end = guest_mem_low_end(m);
	int n = 0;

	e820_add(out, max, &n, 0, GUEST_EBDA_START, E820_RAM);
	e820_add(out, max, &n, GUEST_EBDA_START, GUEST_HIGH_START - GUEST_EBDA_START,
		 E820_RESERVED);
	if (low_end > GUEST_HIGH_START)
		e820_add(out, max, &n, GUEST_HIGH_START, low_end - GUEST_HIGH_START, E820_RAM);
	for (int i = 1; i < m->nregions; i++)
		e820_add(out, max, &n, m->region[i].gpa, m->region[i].size, E820_RAM);
	return n;
}
