/*
 * tsc.c - TSC frequency, from the cheapest source that has it:
 *
 *   1. CPUID 0x40000010 EAX (kHz), when the hypervisor's leaf range
 *      (CPUID 0x40000000 EAX) reaches it.  Shoal provides it.
 *   2. CPUID 0x15 (TSC/crystal ratio and crystal Hz), then 0x16 (base MHz).
 *   3. KVM's pvclock page, if trap.c could register it: its
 *      tsc_to_system_mul/tsc_shift scale TSC ticks to nanoseconds.
 *   4. PIT channel 2 in mode 0 for 10 ms, gated through port 0x61, timed
 *      with RDTSC.  About 600 port reads (each a VM exit), ~10 ms in all.
 *
 * Runs in ring 3 on the boot CPU before the APs start; afterwards tsc_khz
 * is read-only and shared.  If nothing works, 1 GHz is assumed and said so.
 */
#include "tsc.h"
#include "arch.h"

volatile struct pvclock kvmclock;
uint64_t tsc_khz;
const char *tsc_source = "none";

#define PIT_HZ       1193182u
#define PIT_CAL_MS   10u

static uint64_t tsc_from_hv_leaf(void)
{
	uint32_t r[4];

	cpuid(0x40000000, 0, r);
	if (r[0] < 0x40000010 || r[0] > 0x400000ff)
		return 0;
	cpuid(0x40000010, 0, r);
	return r[0];
}

static uint64_t tsc_from_leaf15(void)
{
	uint32_t r[4];

	cpuid(0, 0, r);
	if (r[0] < 0x15)
		return 0;
	cpuid(0x15, 0, r);
	if (r[0] && r[1] && r[2]) {
		tsc_source = "cpuid-15";
		return (uint64_t)r[2] * r[1] / r[0] / 1000;
	}
	if (r[0] < 0x16)
		return 0;
	cpuid(0x16, 0, r);
	tsc_source = "cpuid-16";
	return (uint64_t)(r[0] & 0xffff) * 1000;
}

static uint64_t tsc_from_kvmclock(void)
{
	uint64_t khz = 1000000ull << 32;

	if (!kvmclock.version || !kvmclock.tsc_to_system_mul)
		return 0;
	khz /= kvmclock.tsc_to_system_mul;
	if (kvmclock.tsc_shift < 0)
		return khz << -kvmclock.tsc_shift;
	return khz >> kvmclock.tsc_shift;
}

static uint64_t tsc_from_pit(void)
{
	uint16_t count = PIT_HZ * PIT_CAL_MS / 1000;
	uint8_t gate = (inb(0x61) & ~0x02) | 0x01;	/* speaker off, gate on */
	unsigned spins = 200000;
	uint64_t t0;

	if (inb(0x61) == 0xff)				/* no port 0x61 */
		return 0;
	outb(0x61, gate & ~0x01);			/* gate low: hold */
	outb(0x43, 0xb0);				/* ch2, lo/hi, mode 0 */
	outb(0x42, count & 0xff);
	outb(0x42, count >> 8);
	t0 = rdtsc();
	outb(0x61, gate);				/* start counting */
	while (!(inb(0x61) & 0x20) && --spins)
		;
	if (!spins)
		return 0;
	return (rdtsc() - t0) / PIT_CAL_MS;
}

void tsc_init(void)
{
	tsc_source = "cpuid-40000010";
	tsc_khz = tsc_from_hv_leaf();
	if (!tsc_khz)
		tsc_khz = tsc_from_leaf15();
	if (!tsc_khz) {
		tsc_source = "kvmclock";
		tsc_khz = tsc_from_kvmclock();
	}
	if (!tsc_khz) {
		tsc_source = "pit";
		tsc_khz = tsc_from_pit();
	}
	if (!tsc_khz) {
		tsc_source = "assumed";
		tsc_khz = 1000000;
	}
}

uint64_t tsc_us_since(uint64_t start_tsc)
{
	return (rdtsc() - start_tsc) * 1000 / tsc_khz;
}

void delay_us(uint64_t us)
{
	uint64_t t0 = rdtsc();

	while (tsc_us_since(t0) < us)
		cpu_relax();
}
