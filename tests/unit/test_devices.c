/*
 * test_devices.c - the legacy devices driven through the I/O bus of a fake
 * device host (tests/fake_host.h: no VM, no KVM), and each device's
 * save/restore round trip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi/testdev.h"
#include "devices/device.h"
#include "base/exitcode.h"
#include "fake_host.h"
#include "vmm/vm.h"

static struct fake_host *bare_vm(void)
{
	return fake_host_new(256ULL << 20);
}

static void bare_vm_free(struct fake_host *h)
{
	fake_host_free(h);
}

static uint8_t inb(struct fake_host *h, uint16_t port)
{
	uint8_t v = 0;

	bus_io(&h->iobus, port, &v, 1, false);
	return v;
}

static void outb(struct fake_host *h, uint16_t port, uint8_t v)
{
	bus_io(&h->iobus, port, &v, 1, true);
}

static void test_bus(void **state)
{
	struct bus b;
	struct device d1 = { 0 }, d2 = { 0 };

	bus_init(&b, "io");
	assert_int_equal(bus_register(&b, 0x100, 8, &d1), 0);
	assert_int_equal(bus_register(&b, 0x10, 2, &d2), 0);
	assert_int_equal(bus_register(&b, 0x107, 2, &d2), -1);   /* overlap */
	assert_int_equal(bus_register(&b, 0x0f, 2, &d2), -1);
	assert_ptr_equal(bus_find(&b, 0x100), &d1);
	assert_ptr_equal(bus_find(&b, 0x107), &d1);
	assert_null(bus_find(&b, 0x108));
	assert_ptr_equal(bus_find(&b, 0x11), &d2);
	assert_null(bus_find(&b, 0x12));
}

static void test_unclaimed_reads_ones(void **state)
{
	struct fake_host *h = bare_vm();
	uint32_t v = 0;

	assert_false(bus_io(&h->iobus, 0x2f8, &v, 4, false));
	assert_int_equal(v, 0xffffffff);
	assert_int_equal(h->iobus.unclaimed, 1);
	bare_vm_free(h);
}

static void test_serial_loopback_and_iir(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;

	assert_int_equal(serial_create(&h->host, &e), 0);
	assert_int_equal(inb(h, COM1_PORT + 5) & 0x60, 0x60);     /* THRE|TEMT */
	assert_int_equal(inb(h, COM1_PORT + 2) & 0x0f, 0x01);     /* no interrupt */
	/* Linux's 8250 probe: loopback with OUT2|RTS must show DCD|CTS */
	outb(h, COM1_PORT + 4, 0x10 | 0x0a);
	assert_int_equal(inb(h, COM1_PORT + 6) & 0xf0, 0x90);
	outb(h, COM1_PORT, 'Q');                                 /* loops to RBR */
	assert_int_equal(inb(h, COM1_PORT + 5) & 0x01, 0x01);     /* DR */
	outb(h, COM1_PORT + 1, 0x01);                            /* IER: rx data */
	assert_int_equal(inb(h, COM1_PORT + 2) & 0x0f, 0x04);     /* rx interrupt */
	assert_int_equal(inb(h, COM1_PORT), 'Q');
	assert_int_equal(inb(h, COM1_PORT + 5) & 0x01, 0);
	/* THRE interrupt: pending on enable, cleared by reading IIR */
	outb(h, COM1_PORT + 1, 0x02);
	assert_int_equal(inb(h, COM1_PORT + 2) & 0x0f, 0x02);
	assert_int_equal(inb(h, COM1_PORT + 2) & 0x0f, 0x01);
	/* DLAB: divisor latch instead of data/IER */
	outb(h, COM1_PORT + 3, 0x80);
	outb(h, COM1_PORT, 0x0c);
	outb(h, COM1_PORT + 1, 0x00);
	assert_int_equal(inb(h, COM1_PORT), 0x0c);
	outb(h, COM1_PORT + 3, 0x03);
	bare_vm_free(h);
}

static void test_serial_receive_and_restore(void **state)
{
	struct fake_host *h = bare_vm(), *h2 = bare_vm();
	struct state_writer w;
	struct state_reader r, payload;
	struct error e;
	char name[64];
	uint16_t ver;

	assert_int_equal(serial_create(&h->host, &e), 0);
	assert_int_equal(serial_create(&h2->host, &e), 0);
	serial_receive(h->devices[0], (const uint8_t *)"hi!", 3);
	outb(h, COM1_PORT + 7, 0x5a);                            /* scratch */
	assert_int_equal(inb(h, COM1_PORT), 'h');
	state_writer_init(&w);
	device_save(h->devices[0], &w);
	assert_false(w.error);
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(state_section_read(&r, name, &ver, &payload), 0);
	assert_string_equal(name, "serial0");
	assert_int_equal(device_restore(h2->devices[0], ver, &payload), 0);
	assert_int_equal(inb(h2, COM1_PORT), 'i');
	assert_int_equal(inb(h2, COM1_PORT), '!');
	assert_int_equal(inb(h2, COM1_PORT + 5) & 0x01, 0);
	assert_int_equal(inb(h2, COM1_PORT + 7), 0x5a);
	/* a truncated payload is refused, not read past its end */
	state_reader_init(&payload, w.data + 20, 5);
	assert_int_equal(device_restore(h2->devices[0], ver, &payload), -1);
	/* a newer version than the device knows is refused */
	state_reader_init(&r, w.data, w.len);
	state_section_read(&r, name, &ver, &payload);
	assert_int_equal(device_restore(h2->devices[0], ver + 1, &payload), -1);
	state_writer_free(&w);
	bare_vm_free(h);
	bare_vm_free(h2);
}

static time_t fixed_now(void)
{
	return 1700000000;  /* 2023-11-14 22:13:20 UTC, a Tuesday */
}

static void test_rtc(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;

	assert_int_equal(rtc_create(&h->host, &e), 0);
	rtc_set_clock(h->devices[0], fixed_now);
	outb(h, 0x70, 0x0b);
	assert_int_equal(inb(h, 0x71), 0x02);                    /* 24h, BCD */
	outb(h, 0x70, 0x00); assert_int_equal(inb(h, 0x71), 0x20);   /* sec */
	outb(h, 0x70, 0x02); assert_int_equal(inb(h, 0x71), 0x13);   /* min */
	outb(h, 0x70, 0x04); assert_int_equal(inb(h, 0x71), 0x22);   /* hour */
	outb(h, 0x70, 0x07); assert_int_equal(inb(h, 0x71), 0x14);   /* day */
	outb(h, 0x70, 0x08); assert_int_equal(inb(h, 0x71), 0x11);   /* month */
	outb(h, 0x70, 0x09); assert_int_equal(inb(h, 0x71), 0x23);   /* year */
	outb(h, 0x70, 0x32); assert_int_equal(inb(h, 0x71), 0x20);   /* century */
	outb(h, 0x70, 0x0d); assert_int_equal(inb(h, 0x71), 0x80);   /* valid */
	/* binary, 12-hour mode: 22h reads as 10 PM */
	outb(h, 0x70, 0x0b); outb(h, 0x71, 0x04);
	outb(h, 0x70, 0x04); assert_int_equal(inb(h, 0x71), 0x80 | 10);
	/* setting the year moves the guest clock, not the host */
	outb(h, 0x70, 0x0b); outb(h, 0x71, 0x06);
	outb(h, 0x70, 0x09); outb(h, 0x71, 30);
	assert_int_equal(inb(h, 0x71), 30);
	outb(h, 0x70, 0x08); assert_int_equal(inb(h, 0x71), 11);
	/* memory size in CMOS: 256M - 1M = 261120 KiB above 1 MiB, capped 0xffff */
	outb(h, 0x70, 0x17); assert_int_equal(inb(h, 0x71), 0xff);
	outb(h, 0x70, 0x34); assert_int_equal(inb(h, 0x71), (240 * 16) & 0xff);
	bare_vm_free(h);
}

static void test_i8042(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;

	assert_int_equal(i8042_create(&h->host, &e), 0);
	outb(h, 0x64, 0xaa);                                     /* self test */
	assert_int_equal(inb(h, 0x64) & 0x01, 0x01);
	assert_int_equal(inb(h, 0x60), 0x55);
	assert_int_equal(inb(h, 0x64) & 0x01, 0x00);
	outb(h, 0x64, 0x60); outb(h, 0x60, 0x65);               /* write CTR */
	outb(h, 0x64, 0x20);
	assert_int_equal(inb(h, 0x60), 0x65);
	assert_false(h->stopping);
	outb(h, 0x64, 0xfe);                                     /* reset */
	assert_true(h->stopping);
	assert_int_equal(h->exit_status, EXIT_POWEROFF);
	assert_non_null(strstr(h->exit_reason, "reset"));
	bare_vm_free(h);
}

static void test_acpi_pm_poweroff(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;
	uint16_t v;

	assert_int_equal(acpi_pm_create(&h->host, &e), 0);
	bus_io(&h->iobus, ACPI_PM1A_CNT_PORT, &v, 2, false);
	assert_int_equal(v & 1, 1);                               /* SCI_EN */
	v = (3 << ACPI_PM1_CNT_SLP_TYP_SHIFT) | ACPI_PM1_CNT_SLP_EN;   /* S3: not offered */
	bus_io(&h->iobus, ACPI_PM1A_CNT_PORT, &v, 2, true);
	assert_false(h->stopping);
	v = (ACPI_S5_SLP_TYP << ACPI_PM1_CNT_SLP_TYP_SHIFT);      /* no SLP_EN */
	bus_io(&h->iobus, ACPI_PM1A_CNT_PORT, &v, 2, true);
	assert_false(h->stopping);
	v |= ACPI_PM1_CNT_SLP_EN;
	bus_io(&h->iobus, ACPI_PM1A_CNT_PORT, &v, 2, true);
	assert_true(h->stopping);
	assert_int_equal(h->exit_status, 0);
	bare_vm_free(h);
}

static char last_report[TESTDEV_REPORT_MAX + 8];
static int nreports;

static void on_report(void *opaque, const char *line)
{
	snprintf(last_report, sizeof(last_report), "%s", line);
	nreports++;
}

static void test_testdev(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;
	const char *msg = "ready cpus=2\n";
	uint32_t code = 0x107;

	assert_int_equal(testdev_create(&h->host, &e), 0);
	h->report_fn = on_report;
	for (const char *p = msg; *p; p++)
		outb(h, TESTDEV_PORT_REPORT, (uint8_t)*p);
	assert_int_equal(nreports, 1);
	assert_string_equal(last_report, "ready cpus=2");
	/* an over-long line is cut at TESTDEV_REPORT_MAX, the rest dropped */
	for (int i = 0; i < 3 * TESTDEV_REPORT_MAX; i++)
		outb(h, TESTDEV_PORT_REPORT, 'x');
	outb(h, TESTDEV_PORT_REPORT, '\n');
	assert_int_equal(nreports, 2);
	assert_int_equal(strlen(last_report), TESTDEV_REPORT_MAX);
	/* exit: status is the low byte of the value */
	bus_io(&h->iobus, TESTDEV_PORT_EXIT, &code, 4, true);
	assert_true(h->stopping);
	assert_int_equal(h->exit_status, 7);
	bare_vm_free(h);
}

static void test_first_stop_wins(void **state)
{
	struct vm *vm = calloc(1, sizeof(*vm));   /* a shell: vm_stop needs its lock only */

	pthread_mutex_init(&vm->stop_lock, NULL);
	pthread_cond_init(&vm->stop_cond, NULL);
	vm_stop(vm, 3, "first");
	vm_stop(vm, 80, "second");
	assert_int_equal(vm->exit_status, 3);
	assert_string_equal(vm->exit_reason, "first");
	pthread_cond_destroy(&vm->stop_cond);
	pthread_mutex_destroy(&vm->stop_lock);
	free(vm);
}

static void test_broken_device_is_isolated(void **state)
{
	struct fake_host *h = bare_vm();
	struct error e;

	assert_int_equal(serial_create(&h->host, &e), 0);
	assert_int_equal(rtc_create(&h->host, &e), 0);
	device_mark_broken(h->devices[0], "test: guest wrote nonsense");
	assert_int_equal(inb(h, COM1_PORT + 5), 0xff);           /* dead: all ones */
	outb(h, 0x70, 0x0d);
	assert_int_equal(inb(h, 0x71), 0x80);                    /* others work */
	bare_vm_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bus),
		cmocka_unit_test(test_unclaimed_reads_ones),
		cmocka_unit_test(test_serial_loopback_and_iir),
		cmocka_unit_test(test_serial_receive_and_restore),
		cmocka_unit_test(test_rtc),
		cmocka_unit_test(test_i8042),
		cmocka_unit_test(test_acpi_pm_poweroff),
		cmocka_unit_test(test_testdev),
		cmocka_unit_test(test_first_stop_wins),
		cmocka_unit_test(test_broken_device_is_isolated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
