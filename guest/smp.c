/*
 * smp.c - starting the other processors and giving them work.
 *
 * Bring-up runs in ring 3 on the boot CPU: the local APIC page is mapped
 * user-accessible, so the INIT and STARTUP IPIs are plain MMIO writes to
 * the ICR.  Processors start one at a time:
 *
 *   boot CPU                               AP
 *   copy trampoline to TRAMPOLINE_PA (once)
 *   ap_boot_rsp/ap_boot_cpu = its stack/index
 *   INIT, 100 us, SIPI(TRAMPOLINE_PA>>12)
 *                                          real mode -> 32-bit -> long mode
 *                                          (entry.S), load TSS/IDT (trap.c),
 *                                          iretq to ap_main in ring 3
 *   wait for slot.online (10 ms)           lapic_enable; slot.online = 1
 *   (second SIPI and 200 ms if not)
 *
 * The AP's emulated ring-0 path is about two hundred instructions, so each
 * AP costs well under a millisecond plus the VMM's own vCPU start.  An AP
 * that misses both deadlines is left out (and reported on the console).
 *
 * Work: the boot CPU fills slot.fn/arg, bumps slot.go and sends the wake
 * IPI (VEC_WAKE).  An idle AP sleeps in user_wait_eq(&go, done): the HLT
 * trap re-checks go with interrupts off before halting, so a wake-up can
 * not slip between the check and the halt.  Finished work bumps done;
 * the boot CPU spins for it (it has just done its own share).
 */
#include "smp.h"
#include "arch.h"
#include "lapic.h"
#include "acpi.h"
#include "lib.h"
#include "report.h"
#include "trap.h"
#include "tsc.h"

#define ICR_INIT      0x4500u	/* INIT, level assert */
#define ICR_SIPI      0x4600u	/* STARTUP, vector in bits 0-7 */

struct cpu_slot cpu_slots[MAX_CPUS];
uint32_t cpus_online = 1;
uint64_t smp_start_us;

extern const char tramp_start[], tramp_end[];

static bool ap_wait_online(struct cpu_slot *s, uint64_t us)
{
	uint64_t t0 = rdtsc();

	while (!s->online)
		if (tsc_us_since(t0) > us)
			return false;
	return true;
}

static bool ap_start(uint32_t cpu, uint32_t apic_id)
{
	struct cpu_slot *s = &cpu_slots[cpu];
	uint32_t sipi = ICR_SIPI | (TRAMPOLINE_PA >> 12);

	s->apic_id = apic_id;
	ap_boot_rsp = kstack_top(cpu);
	ap_boot_cpu = cpu;
	barrier();
	lapic_ipi(apic_id, ICR_INIT);
	delay_us(100);
	lapic_ipi(apic_id, sipi);
	if (ap_wait_online(s, 10000))
		return true;
	lapic_ipi(apic_id, sipi);
	return ap_wait_online(s, 200000);
}

void smp_start(void)
{
	uint32_t bsp = lapic_id(), i;
	uint64_t t0 = rdtsc();

	lapic_enable();
	cpu_slots[0].apic_id = bsp;
	cpu_slots[0].online = 1;
	memcpy((void *)TRAMPOLINE_PA, tramp_start, tramp_end - tramp_start);
	for (i = 0; i < cpus_found && cpus_online < MAX_CPUS; i++) {
		uint32_t id = cpu_apic_ids[i];

		if (id == bsp)
			continue;
		if (id > 254 || !ap_start(cpus_online, id)) {
			console_printf(REPORT_PREFIX "cpu with apic id %u did not start\n", id);
			continue;
		}
		cpus_online++;
	}
	smp_start_us = tsc_us_since(t0);
}

void ap_main(uint32_t cpu)
{
	struct cpu_slot *s = &cpu_slots[cpu];

	lapic_enable();
	s->online = 1;
	for (;;) {
		while (s->go == s->done)
			user_wait_eq(&s->go, s->done);
		barrier();
		s->fn(cpu, s->arg);
		barrier();
		s->done = s->go;
	}
}

void smp_run_all(cpu_work_fn fn, void *arg)
{
	uint32_t cpu;

	for (cpu = 1; cpu < cpus_online; cpu++) {
		struct cpu_slot *s = &cpu_slots[cpu];

		s->fn = fn;
		s->arg = arg;
		barrier();
		s->go = s->done + 1;
		lapic_ipi(s->apic_id, VEC_WAKE);
	}
	fn(0, arg);
	for (cpu = 1; cpu < cpus_online; cpu++)
		while (cpu_slots[cpu].done != cpu_slots[cpu].go)
			cpu_relax();
}
