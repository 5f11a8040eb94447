/*
 * lapic.h - the local APIC (xAPIC, MMIO), driven from ring 3.
 */
#ifndef GUEST_LAPIC_H
#define GUEST_LAPIC_H

#include <stdint.h>

/* Software-enable this CPU's APIC (spurious vector VEC_SPURIOUS), TPR 0. */
void lapic_enable(void);
uint32_t lapic_id(void);
/* Send an IPI (ICR low word icr_lo) to a physical APIC id. */
void lapic_ipi(uint32_t apic_id, uint32_t icr_lo);
/* Measure the APIC timer against the TSC (~1 ms); done on first sleep. */
void lapic_timer_calibrate(void);
/* Sleep about us microseconds in HLT, woken by a one-shot APIC timer
 * (falls back to spinning if the timer could not be calibrated). */
void lapic_sleep_us(uint64_t us);

#endif
