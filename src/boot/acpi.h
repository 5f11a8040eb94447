/*
 * acpi.h - ACPI additions that a device brings to the tables acpi_build()
 * wrote (acpi.c).
 *
 * acpi_build() runs while the guest is loaded, before the devices exist,
 * and describes the fixed machine.  A device that the guest must find
 * through ACPI and that only some VMs have adds its own SSDT afterwards:
 * the table is written into the last page of the ACPI area, which
 * acpi_build() leaves free, and a new XSDT listing it replaces the old one
 * (the RSDP points at it).  All of it lies in the e820-reserved area below
 * 1 MiB, which the guest never takes for RAM.
 *
 * The page (ACPI_VMGENID_PAGE, 4 KiB):
 *   +0x000  the VM generation ID, 16 bytes (src/devices/vmgenid.c writes it)
 *   +0x100  the SSDT: \_SB.VGEN (the generation ID device) and \_SB.VGED
 *           (an ACPI Generic Event Device on GSI ACPI_VMGENID_GSI whose
 *           _EVT does Notify(\_SB.VGEN, 0x80))
 *   +0x800  the XSDT: acpi_build()'s entries, then the SSDT
 *
 * Invariant: adding is idempotent.  A VM restored from a snapshot already
 * has the SSDT in its memory, and the call then changes nothing.
 */
#ifndef SHOAL_BOOT_ACPI_H
#define SHOAL_BOOT_ACPI_H

#include <stdint.h>

#include "base/error.h"
#include "base/guest_mem.h"
#include "devices/fw_cfg.h"

#define ACPI_VMGENID_PAGE   0x000ef000ULL   /* the last page of the ACPI area */
#define ACPI_VMGENID_GUID   ACPI_VMGENID_PAGE
#define ACPI_VMGENID_SSDT   (ACPI_VMGENID_PAGE + 0x100)
#define ACPI_VMGENID_XSDT   (ACPI_VMGENID_PAGE + 0x800)
#define ACPI_VMGENID_GSI    23              /* IOAPIC pin, edge, active high:
                                               PCI INTx uses 16..19 */
#define ACPI_VMGENID_OEM_TABLE "VMGENID "   /* the SSDT's oem_table_id */

/* ACPI PCI hotplug: the register block the DSDT's \_SB.PCI0 reads and
 * writes (devices/pci_hotplug.h has its layout), and the GSI of the
 * Generic Event Device \_SB.HPGE that says when to look (edge, active
 * high).  Every VM booted with Shoal's tables has them. */
#define ACPI_PCIHP_PORT     0xae00
#define ACPI_PCIHP_LEN      12
#define ACPI_PCIHP_GSI      22

/* Add the VM generation ID SSDT to the tables acpi_build() wrote in `m`:
 * its ADDR names the 16 bytes at `guid_gpa`, its GED interrupt is `gsi`.
 * Returns 0 when added; 1 when nothing is written: the tables already
 * have it (a restored VM), or there are none yet, the RSDP's bytes all
 * zero (an incoming migration, whose RAM arrives later); -1 with `e` when
 * `m` holds something else there (a firmware boot's BIOS) or the tables
 * are damaged. */
int acpi_add_vmgenid(struct guest_mem *m, uint64_t guid_gpa, unsigned gsi, struct error *e);

/* ---- ACPI for a firmware boot ----
 *
 * SeaBIOS builds ACPI tables only for QEMU's i440FX and Q35; on any other
 * machine it loads them from fw_cfg, as QEMU's "linker/loader" describes:
 *
 *   "etc/acpi/tables"  Shoal's tables (acpi_build's: DSDT, FACS, FADT,
 *                      MADT, MCFG, XSDT), their pointers written as
 *                      offsets into this file; the firmware puts it in
 *                      high memory (below 4 GiB), 64-byte aligned
 *   "etc/acpi/rsdp"    the RSDP, its XSDT address an offset into the
 *                      tables; placed in the F segment, where an OS scans
 *   "etc/table-loader" the script: 128-byte entries, le32 command first
 *                      1 ALLOCATE    file[56], le32 align, u8 zone (1 high, 2 FSEG)
 *                      2 ADD_POINTER dst[56], src[56], le32 offset, u8 size:
 *                                    add src's address to the size bytes at
 *                                    offset in dst
 *                      3 ADD_CHECKSUM file[56], le32 offset, le32 start,
 *                                    le32 length: set the byte at offset so
 *                                    the range sums to zero
 *
 * Patched: the XSDT's entries, the FADT's DSDT, X_DSDT and X_FIRMWARE_CTRL
 * (FACS), the RSDP's XSDT; then the XSDT's, the FADT's and both RSDP
 * checksums.  The guest only reads these files.
 */
#define ACPI_FW_TABLES  "etc/acpi/tables"
#define ACPI_FW_RSDP    "etc/acpi/rsdp"
#define ACPI_FW_LOADER  "etc/table-loader"
#define ACPI_FW_NFILES  3

struct acpi_fw_files {
	struct fw_cfg_file files[ACPI_FW_NFILES];   /* tables, rsdp, loader (malloc'd) */
};

/* Build the three files for a machine of `ram_size` bytes and `ncpus`
 * vCPUs.  0, or -1 with `e`.  acpi_fw_files_free frees them. */
int acpi_build_fw_cfg(uint64_t ram_size, int ncpus, struct acpi_fw_files *out, struct error *e);
void acpi_fw_files_free(struct acpi_fw_files *f);

#endif
