/*
 * lapic.c - the local APIC from ring 3: enable, IPIs, and a one-shot timer
 * used to sleep.
 *
 * The APIC page (lapic_base, normally 0xfee00000) is inside the identity
 * map and user-accessible, so every register access is a plain MMIO load
 * or store from ring 3 (an exit to the in-kernel APIC).
 *
 * Sleeping: program the timer in one-shot mode on VEC_WAKE, then HLT
 * through user_wait_eq (trap.c).  Interrupts are off in ring 3, so a timer
 * that fires before the HLT stays pending and ends the HLT at once; the
 * wake handler sends the EOI.  The timer's rate is measured once against
 * the TSC (divide by 1, free count for 1 ms) on the first sleep.
 */
#include "lapic.h"
#include "acpi.h"
#include "arch.h"
#include "layout.h"
#include "trap.h"
#include "tsc.h"

#define LAPIC_ID        0x20
#define LAPIC_TPR       0x80
#define LAPIC_SVR       0xf0
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TMR_INIT  0x380
#define LAPIC_TMR_CUR   0x390
#define LAPIC_TMR_DIV   0x3e0
#define ICR_PENDING     (1u << 12)
#define LVT_MASKED      (1u << 16)

static uint64_t lapic_ticks_per_ms;
static bool lapic_calibrated;
static volatile uint32_t lapic_sleep_word;	/* never changes: sleep until an IRQ */

static uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(lapic_base + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(lapic_base + reg, v);
}

void lapic_enable(void)
{
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
}

uint32_t lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

void lapic_ipi(uint32_t apic_id, uint32_t icr_lo)
{
	unsigned spins = 100000;

	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, icr_lo);
	while ((lapic_read(LAPIC_ICR_LO) & ICR_PENDING) && --spins)
		cpu_relax();
}

void lapic_timer_calibrate(void)
{
	uint32_t left;

	lapic_calibrated = true;
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_WAKE);
	lapic_write(LAPIC_TMR_DIV, 0xb);		/* divide by 1 */
	lapic_write(LAPIC_TMR_INIT, 0xffffffff);
	delay_us(1000);
	left = lapic_read(LAPIC_TMR_CUR);
	lapic_write(LAPIC_TMR_INIT, 0);
	if (left && left != 0xffffffff)
		lapic_ticks_per_ms = 0xffffffffu - left;
}

void lapic_sleep_us(uint64_t us)
{
	uint64_t ticks;

	if (!lapic_calibrated)
		lapic_timer_calibrate();
	ticks = us * lapic_ticks_per_ms / 1000;
	if (!lapic_ticks_per_ms || !ticks || ticks > 0xffffffffu) {
		delay_us(us);
		return;
	}
	lapic_write(LAPIC_LVT_TIMER, VEC_WAKE);		/* one-shot, unmasked */
	lapic_write(LAPIC_TMR_INIT, (uint32_t)ticks);
	user_wait_eq(&lapic_sleep_word, 0);
	lapic_write(LAPIC_TMR_INIT, 0);
}
