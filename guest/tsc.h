/*
 * tsc.h - time from the TSC: frequency discovery and delays.
 */
#ifndef GUEST_TSC_H
#define GUEST_TSC_H

#include <stdint.h>

/* KVM's pvclock page for the boot CPU (registered by trap.c). */
struct pvclock {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags, pad[2];
} __attribute__((packed, aligned(64)));

extern volatile struct pvclock kvmclock;
extern uint64_t tsc_khz;
/* Where tsc_khz came from: "cpuid-40000010", "cpuid-15", "cpuid-16", "kvmclock", "pit". */
extern const char *tsc_source;

void tsc_init(void);
uint64_t tsc_us_since(uint64_t start_tsc);
void delay_us(uint64_t us);

#endif
