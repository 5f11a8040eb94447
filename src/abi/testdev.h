/*
 * abi/testdev.h - the contract between the test guest and the VMM.
 *
 * Shared by guest/ (freestanding) and src/ (host), so it holds only
 * constants.  Documented for users in docs/test-guest.md.
 *
 * Test/exit device (src/devices/testdev.c), I/O ports:
 *   0xf4  OUT (8/16/32 bit): exit the VMM with status (value & 0xff).
 *         Same port as QEMU's isa-debug-exit (iobase=0xf4,iosize=1), where
 *         QEMU exits with (value << 1) | 1 instead.
 *   0xf5  OUT 8-bit, or REP OUTSB: a byte stream of report lines.  Each
 *         '\n'-terminated line is one report, e.g. "ready cpus=2 mem=268435456".
 *         Lines longer than TESTDEV_REPORT_MAX are cut.  Ignored by QEMU; the
 *         guest prints every report on the serial console as well, prefixed
 *         with "shoal-guest: ", so a QEMU run carries the same information.
 *
 * ACPI power management (src/devices/acpi_pm.c), described by the FADT:
 *   0x600 PM1a event block (4 bytes), 0x604 PM1a control block (2 bytes).
 *   Writing SLP_EN (bit 13) with SLP_TYP 5 (bits 10-12) powers off; the DSDT
 *   declares \_S5 = {5, 5}.
 *
 * CPUID leaf 0x40000010 EAX: TSC frequency in kHz (as VMware and QEMU's
 * vmware-cpuid-freq publish it) so the guest can keep time without a
 * calibration loop.
 */
#ifndef SHOAL_ABI_TESTDEV_H
#define SHOAL_ABI_TESTDEV_H

#define TESTDEV_PORT_EXIT     0xf4
#define TESTDEV_PORT_REPORT   0xf5
#define TESTDEV_REPORT_MAX    1024

#define ACPI_PM1A_EVT_PORT    0x600
#define ACPI_PM1A_CNT_PORT    0x604
#define ACPI_PM1_CNT_SLP_EN   (1u << 13)
#define ACPI_PM1_CNT_SLP_TYP_SHIFT 10
#define ACPI_S5_SLP_TYP       5
#define ACPI_SCI_IRQ          9

#define CPUID_LEAF_HV_TIMING  0x40000010u

#define COM1_PORT             0x3f8
#define COM1_IRQ              4

#endif
