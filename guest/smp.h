/*
 * smp.h - application processors: bring-up and a tiny work dispatcher.
 */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

#include <stdint.h>
#include "layout.h"

typedef void (*cpu_work_fn)(uint32_t cpu, void *arg);

/* One per CPU; index 0 is the boot CPU.  Written by the boot CPU only,
 * except online and done, which the owning AP writes. */
struct cpu_slot {
	volatile uint32_t go;		/* work generation requested */
	volatile uint32_t done;		/* work generation finished */
	volatile uint32_t online;	/* the AP reached ring 3 */
	uint32_t apic_id;
	cpu_work_fn fn;			/* work for generation go */
	void *arg;
} __attribute__((aligned(64)));

extern struct cpu_slot cpu_slots[MAX_CPUS];
extern uint32_t cpus_online;
extern uint64_t smp_start_us;	/* how long smp_start took */

/* Boot CPU, ring 3: start every processor the firmware tables list. */
void smp_start(void);

/* Ring-3 entry of each AP (from trap.c); waits for work forever. */
void ap_main(uint32_t cpu) __attribute__((noreturn));

/* Run fn(cpu, arg) on every online CPU at once (boot CPU included) and
 * return when all have finished. */
void smp_run_all(cpu_work_fn fn, void *arg);

#endif
