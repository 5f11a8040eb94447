/*
 * bootinfo.h - what the PVH loader handed over (struct hvm_start_info):
 * the memory map, the command line and the RSDP; plus the identity map's
 * reach and the ranges of RAM the workloads may touch.
 */
#ifndef GUEST_BOOTINFO_H
#define GUEST_BOOTINFO_H

#include <stdbool.h>
#include <stdint.h>

#define MEMMAP_MAX  128
#define CMDLINE_MAX 4096

struct mem_region {
	uint64_t addr, len;
	uint32_t type;		/* 1 = RAM, as in E820 */
};

extern struct mem_region mem_map[MEMMAP_MAX];
extern unsigned mem_map_n;
extern uint64_t mem_total;	/* sum of the type-1 entries */
extern uint64_t mapped_top;	/* the identity map covers [0, mapped_top) */
extern uint64_t boot_rsdp;	/* start_info rsdp_paddr, 0 if none */
extern char boot_cmdline[CMDLINE_MAX];

/* Copy start_info's contents into the guest's own memory; false if bad. */
bool bootinfo_init(uint64_t start_info_pa);

/* Extend the identity map over RAM above 4 GiB (ring 3, see boot.c). */
void mem_map_high(void);

/*
 * Whether [addr, addr+len) lies in one RAM entry below mapped_top and
 * clear of the guest image; if not, *why says which rule failed.
 */
bool mem_range_usable(uint64_t addr, uint64_t len, const char **why);

/* The largest free RAM range above the guest image, 2 MiB aligned. */
bool mem_default_region(uint64_t *addr, uint64_t *len);

#endif
