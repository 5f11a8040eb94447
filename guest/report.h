/*
 * report.h - console output, report lines (port 0xf5 + console), and the
 * ways the guest ends (exit code on port 0xf4, ACPI poweroff).
 */
#ifndef GUEST_REPORT_H
#define GUEST_REPORT_H

#include <stddef.h>

#define REPORT_PREFIX "shoal-guest: "

void console_write(const char *s, size_t n);
void console_printf(const char *f, ...) __attribute__((format(printf, 1, 2)));

/*
 * Send one report line (no trailing newline in f): "LINE\n" on the test
 * device's report port and "shoal-guest: LINE\n" on the console.
 */
void report(const char *f, ...) __attribute__((format(printf, 1, 2)));

/* Exit the VM with this status through port 0xf4. */
void guest_exit(int code) __attribute__((noreturn));

/* ACPI S5 through PM1a_CNT; if the VM is still running, guest_exit(0). */
void guest_poweroff(void) __attribute__((noreturn));

#endif
