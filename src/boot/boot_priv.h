/*
 * boot_priv.h - what the boot layer's files share with each other and with
 * their unit tests, but not with the rest of the VMM.
 *
 * Two groups of things live here:
 *   - the guest-visible structures the loaders write (PVH hvm_start_info and
 *     its module and memory-map entries, Linux's setup header and
 *     boot_params).  They are packed, their sizes and key offsets are checked
 *     at compile time, and they are written exactly as the specs lay them
 *     out (Xen public/arch-x86/hvm/start_info.h; Linux
 *     Documentation/arch/x86/boot.rst and asm/bootparam.h);
 *   - struct boot_ctx, the state boot.c hands to one of the two loaders, and
 *     the helpers the loaders call back into (initrd placement).
 *
 * Everything is little-endian on the wire and in guest memory; Shoal only
 * runs on x86-64 hosts, so the structs are read and written directly.
 */
#ifndef SHOAL_BOOT_BOOT_PRIV_H
#define SHOAL_BOOT_BOOT_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "boot/boot.h"

/* ---- PVH (Xen start_info.h, version 1) ---- */

#define HVM_START_MAGIC        0x336ec578u
#define HVM_START_VERSION      1
#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct hvm_start_info {
	uint32_t magic;            /* HVM_START_MAGIC */
	uint32_t version;          /* 1: memmap fields are valid */
	uint32_t flags;            /* SIF_*: none set */
	uint32_t nr_modules;       /* 1 with an initrd, else 0 */
	uint64_t modlist_paddr;    /* array of hvm_modlist_entry */
	uint64_t cmdline_paddr;    /* NUL-terminated command line */
	uint64_t rsdp_paddr;       /* ACPI RSDP */
	uint64_t memmap_paddr;     /* array of hvm_memmap_table_entry */
	uint32_t memmap_entries;
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;    /* 0: no per-module command line */
	uint64_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;             /* E820_* values */
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");

/* Where the PVH structures sit inside the start-info page. */
#define BOOT_START_INFO_MODLIST  (BOOT_START_INFO_ADDR + 64)
#define BOOT_START_INFO_MEMMAP   (BOOT_START_INFO_ADDR + 128)

/* ---- Linux x86 boot protocol ---- */

#define BZ_HDR_MAGIC           0x53726448u   /* "HdrS" */
#define BZ_BOOT_FLAG           0xaa55
#define BZ_MIN_VERSION         0x020c        /* 2.12: xloadflags, 64-bit entry */
#define BZ_LOADED_HIGH         0x01
#define BZ_CAN_USE_HEAP        0x80
#define BZ_XLF_KERNEL_64       0x0001
#define BZ_ENTRY64_OFFSET      0x200

struct setup_header {
	uint8_t  setup_sects;          /* 0x1f1 */
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;            /* 0x1fe: 0xaa55 */
	uint16_t jump;                 /* 0x200: high byte = header length - 2 */
	uint32_t header;               /* 0x202: "HdrS" */
	uint16_t version;              /* 0x206 */
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t  type_of_loader;       /* 0x210 */
	uint8_t  loadflags;            /* 0x211 */
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;        /* 0x218 */
	uint32_t ramdisk_size;         /* 0x21c */
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;         /* 0x224 */
	uint8_t  ext_loader_ver;
	uint8_t  ext_loader_type;
	uint32_t cmd_line_ptr;         /* 0x228 */
	uint32_t initrd_addr_max;      /* 0x22c */
	uint32_t kernel_alignment;     /* 0x230 */
	uint8_t  relocatable_kernel;
	uint8_t  min_alignment;
	uint16_t xloadflags;           /* 0x236 */
	uint32_t cmdline_size;         /* 0x238 */
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;           /* 0x250 */
	uint64_t pref_address;         /* 0x258 */
	uint32_t init_size;            /* 0x260 */
	uint32_t handover_offset;
	uint32_t kernel_info_offset;   /* 0x268 (2.15) */
} __attribute__((packed));
_Static_assert(sizeof(struct setup_header) == 0x26c - 0x1f1, "setup_header layout");
_Static_assert(offsetof(struct setup_header, init_size) == 0x260 - 0x1f1, "setup_header layout");

#define BZ_HDR_OFFSET 0x1f1
#define BZ_E820_MAX   128

struct boot_params {
	uint8_t  screen_info[0x40];        /* 0x000 */
	uint8_t  apm_bios_info[0x14];      /* 0x040 */
	uint8_t  pad1[4];
	uint64_t tboot_addr;               /* 0x058 */
	uint8_t  ist_info[0x10];           /* 0x060 */
	uint64_t acpi_rsdp_addr;           /* 0x070 (2.14) */
	uint8_t  pad2[8];
	uint8_t  hd0_info[16];             /* 0x080 */
	uint8_t  hd1_info[16];
	uint8_t  sys_desc_table[16];       /* 0x0a0 */
	uint8_t  olpc_ofw_header[16];
	uint32_t ext_ramdisk_image;        /* 0x0c0 */
	uint32_t ext_ramdisk_size;
	uint32_t ext_cmd_line_ptr;
	uint8_t  pad3[0x74];
	uint8_t  edid_info[0x80];          /* 0x140 */
	uint8_t  efi_info[0x20];           /* 0x1c0 */
	uint32_t alt_mem_k;                /* 0x1e0 */
	uint32_t scratch;
	uint8_t  e820_entries;             /* 0x1e8 */
	uint8_t  eddbuf_entries;
	uint8_t  edd_mbr_sig_buf_entries;
	uint8_t  kbd_status;
	uint8_t  secure_boot;
	uint8_t  pad4[2];
	uint8_t  sentinel;                 /* 0x1ef: must stay 0 */
	uint8_t  pad5[1];
	struct setup_header hdr;           /* 0x1f1 */
	uint8_t  pad6[0x290 - 0x26c];
	uint32_t edd_mbr_sig_buffer[16];   /* 0x290 */
	struct e820_entry e820_table[BZ_E820_MAX]; /* 0x2d0 */
	uint8_t  pad7[48];
	uint8_t  eddbuf[0x1ec];            /* 0xd00 */
	uint8_t  pad8[276];
} __attribute__((packed));
_Static_assert(sizeof(struct boot_params) == 4096, "boot_params layout");
_Static_assert(offsetof(struct boot_params, acpi_rsdp_addr) == 0x070, "boot_params layout");
_Static_assert(offsetof(struct boot_params, ext_ramdisk_image) == 0x0c0, "boot_params layout");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "boot_params layout");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "boot_params layout");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "boot_params layout");
_Static_assert(offsetof(struct boot_params, eddbuf) == 0xd00, "boot_params layout");

/* ---- ACPI / MP table placement (acpi.c, mptable.c) ---- */

/* The MP configuration table does not fit in the 1 KiB EBDA for 64 vCPUs,
 * so it lives in the BIOS area after the ACPI tables; the floating pointer
 * stays at BOOT_MPTABLE_ADDR where Linux scans for it. */
#define BOOT_MPCONF_ADDR  0x000f0000ULL
#define BOOT_ACPI_END     BOOT_MPCONF_ADDR
#define BOOT_MPCONF_END   0x00100000ULL

/* Byte sum helper shared by ACPI and MP tables: returns the value that makes
 * the `len` bytes at `p` sum to zero (mod 256) once stored in them. */
uint8_t boot_checksum(const void *p, size_t len);

/* ---- loader context ---- */

struct boot_ctx {
	struct guest_mem *m;
	const char *name;          /* kernel name for messages */
	const uint8_t *initrd;     /* NULL when none */
	size_t initrd_len;
	size_t cmdline_len;        /* strlen of the command line */
	int ncpus;
	struct boot_info *bi;      /* filled by the loader */
	struct e820_entry e820[E820_MAX];
	int ne820;
};

/* Copy the initrd (if any) into guest RAM, page aligned and as high as it
 * fits below `limit` (exclusive) and above bi->kernel_end; fills
 * bi->initrd_start/size.  Fails with EXIT_BADKERNEL when it does not fit. */
int boot_place_initrd(struct boot_ctx *c, uint64_t limit, struct error *e);

/* Loaders: check the image, copy it into guest RAM, place the initrd and
 * write the protocol's boot structure.  The command line is already at
 * BOOT_CMDLINE_ADDR and the e820 map in c->e820. */
int boot_elf_load(struct boot_ctx *c, const uint8_t *k, size_t len, struct error *e);
int boot_bzimage_load(struct boot_ctx *c, const uint8_t *k, size_t len, struct error *e);

/* Read a whole regular file of at most `max` bytes (boot.c). */
int boot_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *len,
		   struct error *e);

/* The x86 reset state a BIOS starts from (boot_firmware.c). */
int boot_firmware_reset_state(struct kvm_regs *regs, struct kvm_sregs *sregs);

#endif
