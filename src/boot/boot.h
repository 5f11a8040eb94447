/*
 * boot.h - loading a kernel into guest memory and describing the machine to it.
 *
 * Two entry points are supported (docs/boot.md):
 *   PVH      an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note (Linux vmlinux,
 *            the test guest).  Entered in 32-bit protected mode, paging off,
 *            EBX = guest-physical address of struct hvm_start_info.
 *   LINUX64  a Linux bzImage through the 64-bit boot protocol: protected-mode
 *            kernel loaded at 1 MiB, entered at its 64-bit entry (load + 0x200)
 *            in long mode with identity page tables, RSI = boot_params.
 * ELF files without the PVH note are refused with a clear message.
 *
 * boot_load() also writes the machine description: command line, e820 map,
 * MP table and ACPI tables (RSDP, XSDT, MADT, FADT, DSDT), all in low memory
 * at the fixed addresses below.  Everything here works on a struct guest_mem
 * and touches no KVM state, so it is unit-tested and fuzzed without /dev/kvm.
 *
 * Inputs are hostile: a kernel file may be truncated, lie about its sizes or
 * point its segments anywhere.  Every length is checked against the file and
 * against guest RAM; a bad file is an error with EXIT_BADKERNEL, never a crash.
 */
#ifndef SHOAL_BOOT_BOOT_H
#define SHOAL_BOOT_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include "base/error.h"
#include "base/guest_mem.h"

/* Fixed guest-physical addresses of boot structures (all below 640 KiB). */
#define BOOT_GDT_ADDR         0x00000500ULL
#define BOOT_START_INFO_ADDR  0x00006000ULL   /* PVH hvm_start_info + memmap */
#define BOOT_ZERO_PAGE_ADDR   0x00007000ULL   /* Linux boot_params */
#define BOOT_PML4_ADDR        0x00009000ULL   /* identity page tables, 3 pages+ */
#define BOOT_CMDLINE_ADDR     0x00020000ULL
#define BOOT_CMDLINE_MAX      4096            /* incl. NUL; bzImage may lower it */
#define BOOT_MPTABLE_ADDR     0x0009fc00ULL   /* in the EBDA */
#define BOOT_ACPI_ADDR        0x000e0000ULL   /* RSDP here, tables after it */
#define BOOT_KERNEL_ADDR      0x00100000ULL   /* 1 MiB */

enum boot_protocol { BOOT_PVH = 1, BOOT_LINUX64 = 2, BOOT_FIRMWARE = 3 };

struct boot_request {
	const char *kernel_path;   /* required, unless firmware_path */
	const char *firmware_path; /* a BIOS image (boot_firmware.c), instead of a kernel */
	const char *initrd_path;   /* NULL for none */
	const char *cmdline;       /* NULL or "" for none */
	int ncpus;                 /* 1..GUEST_MAX_VCPUS */
};

struct boot_info {
	enum boot_protocol proto;
	uint64_t entry;            /* guest-physical entry point */
	uint64_t boot_struct;      /* start_info (PVH) or boot_params (LINUX64) */
	uint64_t kernel_start;     /* loaded image range */
	uint64_t kernel_end;
	uint64_t initrd_start;     /* 0 when none */
	uint64_t initrd_size;
	uint64_t rsdp;             /* ACPI RSDP address */
	uint8_t *firmware;         /* BOOT_FIRMWARE: the image, page-aligned, */
	uint64_t firmware_size;    /* to map read-only below 4 GiB */
};

/* Load kernel (and initrd) from files, write command line, e820, MP and
 * ACPI tables.  Errors: EXIT_NOINPUT (missing/unreadable file),
 * EXIT_BADKERNEL (not a kernel, truncated, does not fit), EXIT_USAGE
 * (command line too long for the protocol). */
int boot_load(struct guest_mem *m, const struct boot_request *req,
	      struct boot_info *out, struct error *e);

/* The same, with the kernel and initrd already in memory (`name` is used in
 * messages).  This is what the fuzzers drive. */
int boot_load_buf(struct guest_mem *m, const char *name,
		  const uint8_t *kernel, size_t kernel_len,
		  const uint8_t *initrd, size_t initrd_len,
		  const char *cmdline, int ncpus,
		  struct boot_info *out, struct error *e);

/* ---- firmware boot (boot_firmware.c) ----
 * Read the BIOS image at `path` into out->firmware (BOOT_FIRMWARE): 64 KiB
 * to 16 MiB, a multiple of 4 KiB.  The VMM maps it read-only so that it
 * ends at 4 GiB.  Errors: EXIT_NOINPUT (missing: the message names Debian's
 * package seabios), EXIT_BADKERNEL (a size no BIOS has). */
#define BOOT_FIRMWARE_MIN     (64ULL << 10)
#define BOOT_FIRMWARE_MAX     (16ULL << 20)
#define BOOT_FIRMWARE_LOW     (256ULL << 10)  /* its last 256 KiB: 0xc0000-0xfffff */
int boot_firmware_read(const char *path, struct boot_info *out, struct error *e);
/* boot_firmware_read, then copy the image's last 256 KiB (all of a smaller
 * one) into RAM just below 1 MiB, where the reset vector's real-mode code
 * runs and where the BIOS expects its shadow copy (see boot_firmware.c). */
int boot_firmware_load(struct guest_mem *m, const char *path, struct boot_info *out,
		       struct error *e);
/* Free what boot_load or boot_firmware_read allocated (the image). */
void boot_info_release(struct boot_info *bi);

/* Register state for the boot vCPU per the protocol.  `regs`/`sregs` come in
 * as read from KVM (so unrelated fields keep KVM's values) and are modified
 * in place; may write the GDT and page tables into guest memory. */
int boot_setup_bsp(struct guest_mem *m, const struct boot_info *bi,
		   struct kvm_regs *regs, struct kvm_sregs *sregs, struct error *e);

/* ---- machine description builders (boot_e820.c, acpi.c, mptable.c) ---- */

#define E820_RAM       1
#define E820_RESERVED  2
#define E820_ACPI      3
#define E820_MAX       16

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* The e820 map for `m`: low RAM below the EBDA, reserved EBDA+BIOS area,
 * RAM from 1 MiB to the 32-bit hole, RAM above 4 GiB.  Returns the count. */
int e820_build(const struct guest_mem *m, struct e820_entry *out, int max);

/* Write RSDP at BOOT_ACPI_ADDR and the tables after it; returns the RSDP
 * address, or 0 with `e` filled when they would not fit. */
uint64_t acpi_build(struct guest_mem *m, int ncpus, struct error *e);

/* Write an MP floating pointer and configuration table at BOOT_MPTABLE_ADDR. */
int mptable_build(struct guest_mem *m, int ncpus, struct error *e);

#endif
