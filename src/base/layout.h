/*
 * layout.h - the guest-physical address map Shoal presents.
 *
 *   0x0000_0000 .. 0x0009_fbff   RAM (low; real-mode area, boot structures)
 *   0x0009_fc00 .. 0x0009_ffff   reserved (EBDA; holds the MP floating pointer)
 *   0x000a_0000 .. 0x000f_ffff   reserved (legacy VGA/ROM area; ACPI tables
 *                                 at 0xe0000 where a BIOS would put them)
 *   0x0010_0000 .. low_end       RAM (kernel loaded at 1 MiB)
 *   0xc000_0000 .. 0xffff_ffff   the 32-bit hole: PCI MMIO (later), ECAM,
 *                                 IOAPIC at 0xfec0_0000, LAPIC at 0xfee0_0000
 *   0x1_0000_0000 ..             RAM above 4 GiB when memory > 3 GiB
 *
 * Fixed boot-structure addresses live in low RAM below 1 MiB; see boot.h.
 */
#ifndef SHOAL_BASE_LAYOUT_H
#define SHOAL_BASE_LAYOUT_H

#define GUEST_EBDA_START      0x0009fc00ULL
#define GUEST_BIOS_START      0x000a0000ULL   /* through 1 MiB: reserved */
#define GUEST_HIGH_START      0x00100000ULL   /* 1 MiB */
#define GUEST_MEM32_GAP_START 0xc0000000ULL   /* 3 GiB: start of the 32-bit hole */
#define GUEST_MEM32_GAP_END   0x100000000ULL  /* 4 GiB */
#define GUEST_IOAPIC_BASE     0xfec00000ULL
#define GUEST_LAPIC_BASE      0xfee00000ULL

#define GUEST_MEM_MIN         (16ULL << 20)   /* smallest VM: 16 MiB */
#define GUEST_MEM_MAX         (1ULL << 40)    /* largest VM: 1 TiB */
#define GUEST_MAX_VCPUS       64

#endif
