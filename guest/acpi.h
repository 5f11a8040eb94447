/*
 * acpi.h - what the guest learns from firmware tables: the processors
 * (ACPI MADT, or the MP table as a fallback), the local APIC address and
 * the PM1a control port.
 */
#ifndef GUEST_ACPI_H
#define GUEST_ACPI_H

#include <stdint.h>
#include "layout.h"

extern uint64_t lapic_base;		/* default 0xfee00000 */
extern uint16_t acpi_pm1a_cnt_port;	/* FADT PM1a_CNT_BLK, default 0x604 */
extern uint16_t acpi_pm1a_evt_port;	/* FADT PM1a_EVT_BLK, 0 when absent */
/* Hardware-reduced ACPI (QEMU microvm): FADT SLEEP_CONTROL_REG, else 0. */
extern uint64_t acpi_sleep_ctl_addr;
extern uint8_t acpi_sleep_ctl_space;	/* 0 = memory, 1 = I/O port */
extern uint8_t acpi_s5_slp_typ;		/* from the DSDT's \_S5, default 5 */
extern uint32_t cpu_apic_ids[MAX_CPUS];	/* enabled processors, in table order */
extern uint32_t cpus_found;
extern const char *cpu_source;		/* "madt", "mp" or "none" */

/* rsdp_pa: start_info's rsdp_paddr, or 0 to scan the BIOS area. */
void acpi_init(uint64_t rsdp_pa);

#endif
