/*
 * report.c - the guest's voice: console lines, report lines and the end.
 *
 * A report is one line, written to the test device's report port
 * (TESTDEV_PORT_REPORT) with a single REP OUTSB so that it costs one VM
 * exit, and echoed on the console behind "shoal-guest: " so that a run
 * under QEMU (which ignores port 0xf5) carries the same information.
 * Lines are cut at TESTDEV_REPORT_MAX - 1 bytes.
 *
 * Callable from ring 3 (ports open via the TSS I/O bitmap) and ring 0 alike; buffers are on the stack.
 */
#include "report.h"
#include "arch.h"
#include "lib.h"
#include "serial.h"
#include "acpi.h"
#include "tsc.h"
#include "abi/testdev.h"

void console_write(const char *s, size_t n)
{
	serial_write(s, n);
}

void console_printf(const char *f, ...)
{
	char buf[512];
	va_list ap;
	size_t n;

	va_start(ap, f);
	n = vfmt(buf, sizeof(buf), f, ap);
	va_end(ap);
	console_write(buf, n);
}

void report(const char *f, ...)
{
	char buf[TESTDEV_REPORT_MAX + 16];
	const size_t pre = sizeof(REPORT_PREFIX) - 1;
	va_list ap;
	size_t n;

	memcpy(buf, REPORT_PREFIX, pre);
	va_start(ap, f);
	n = vfmt(buf + pre, TESTDEV_REPORT_MAX, f, ap);
	va_end(ap);
	buf[pre + n] = '\n';
	outsb(TESTDEV_PORT_REPORT, buf + pre, n + 1);
	console_write(buf, pre + n + 1);
}

void guest_exit(int code)
{
	outb(TESTDEV_PORT_EXIT, (uint8_t)code);
	for (;;)
		cpu_relax();
}

/* Hardware-reduced ACPI sleep control: SLP_TYP in bits 2-4, SLP_EN bit 5. */
static void sleep_ctl_write(void)
{
	uint8_t v = (acpi_s5_slp_typ << 2) | (1u << 5);

	if (acpi_sleep_ctl_space == 1 && acpi_sleep_ctl_addr < 0x10000)
		outb((uint16_t)acpi_sleep_ctl_addr, v);
	else if (acpi_sleep_ctl_space == 0 && acpi_sleep_ctl_addr)
		*(volatile uint8_t *)acpi_sleep_ctl_addr = v;
}

void guest_poweroff(void)
{
	uint16_t v = (acpi_s5_slp_typ << ACPI_PM1_CNT_SLP_TYP_SHIFT) | ACPI_PM1_CNT_SLP_EN;

	if (acpi_sleep_ctl_addr)
		sleep_ctl_write();
	else
		outw(acpi_pm1a_cnt_port, v);
	delay_us(10000);
	guest_exit(0);
}
