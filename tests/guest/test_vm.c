/*
 * test_vm.c - the VMM with the test guest: boot, SMP bring-up, memory
 * above the 32-bit hole, pattern fill and verify, dirtying, workloads on
 * every vCPU, exit codes, power-off, CPU templates, and every bad input
 * that `shoal run` must refuse with a clear message and a distinct status.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "base/exitcode.h"

static void run_ok(const struct guest_opts *o, struct guest_result *r)
{
	char err[1024];

	harness_require_kvm();
	if (harness_run(o, r, err, sizeof(err), NULL)) {
		fprintf(stderr, "vm_create failed: %s\n", err);
		fail();
	}
}

static void test_ready_and_info(void **state)
{
	struct guest_opts o = { .cmdline = "info; exit 0" };
	struct guest_result r;
	const char *ready;

	run_ok(&o, &r);
	assert_int_equal(r.status, 0);
	ready = harness_report(&r, "ready");
	assert_non_null(ready);
	assert_int_equal(harness_field(ready, "cpus"), 1);
	/* e820: 256 MiB less the EBDA/BIOS hole (0x9fc00-0x100000) */
	assert_int_equal(harness_field(ready, "mem"), (256 << 20) - (0x100000 - 0x9fc00));
	assert_true(harness_field(harness_report(&r, "info"), "tsc_khz") > 0);
	assert_non_null(strstr(r.console, "shoal-guest: ready cpus=1"));
	harness_free(&r);
}

static void smp_boot(int n)
{
	struct guest_opts o = { .cmdline = "exit 0", .cpus = n };
	struct guest_result r;

	run_ok(&o, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(harness_field(harness_report(&r, "ready"), "cpus"), n);
	harness_free(&r);
}

static void test_smp_2(void **state) { smp_boot(2); }
static void test_smp_4(void **state) { smp_boot(4); }
static void test_smp_8(void **state) { smp_boot(8); }

/* 4 GiB: 3 GiB below the hole and 1 GiB above 4 GiB, written and read back
 * on both sides of the hole. */
static void test_memory_above_4g(void **state)
{
	struct guest_opts o = {
		.memory = 4ULL << 30,
		.cmdline = "fill 0xbff00000 1M 5; fill 0x100000000 1M 6; "
			   "verify 0xbff00000 1M 5; verify 0x100000000 1M 6; exit 0",
	};
	struct guest_result r;
	long long mem;

	run_ok(&o, &r);
	assert_int_equal(r.status, 0);
	mem = harness_field(harness_report(&r, "ready"), "mem");
	assert_int_equal(mem, (4LL << 30) - (0x100000 - 0x9fc00));
	assert_int_equal(harness_report(&r, "verify bad") == NULL, 1);
	assert_non_null(harness_report(&r, "verify ok"));
	harness_free(&r);
}

static void test_pattern_verify(void **state)
{
	struct guest_opts o = { .cmdline = "fill 0x2000000 32M 1234; verify 0x2000000 32M 1234; "
					   "verify 0x2000000 32M 99" };
	struct guest_result r;
	const char *fill, *ok;

	run_ok(&o, &r);
	fill = harness_report(&r, "fill");
	ok = harness_report(&r, "verify ok");
	assert_non_null(fill);
	assert_non_null(ok);
	/* the checksum the guest computed on fill and on verify agree */
	assert_string_equal(strstr(fill, "sum="), strstr(ok, "sum=") ? strstr(fill, "sum=") : "");
	assert_int_equal(harness_field(ok, "sum"), harness_field(fill, "sum"));
	/* a wrong seed is caught, at the first byte */
	assert_int_equal(harness_field(harness_report(&r, "verify bad"), "at"), 0x2000000);
	/* and a failed command makes the guest's final status non-zero */
	assert_int_not_equal(r.status, 0);
	harness_free(&r);
}

static void test_exit_codes(void **state)
{
	static const int codes[] = { 0, 1, 7, 42, 63 };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char cmd[32];
		struct guest_opts o = { .cmdline = cmd };
		struct guest_result r;

		snprintf(cmd, sizeof(cmd), "exit %d", codes[i]);
		run_ok(&o, &r);
		assert_int_equal(r.status, codes[i]);
		harness_free(&r);
	}
}

static void test_poweroff(void **state)
{
	struct guest_opts o = { .cmdline = "poweroff" };
	struct guest_result r;

	run_ok(&o, &r);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.reason, "guest powered off");
	harness_free(&r);
}

static void test_dirty(void **state)
{
	struct guest_opts o = { .cmdline = "dirty 64 1 0x1000000 64M; exit 0" };
	struct guest_result r;
	const char *d;

	run_ok(&o, &r);
	d = harness_report(&r, "dirty");
	assert_non_null(d);
	/*
	 * 64 MiB/s for one second is at most 16384 pages (plus timer slack):
	 * the rate is a cap.  How close a guest comes to it depends on the
	 * CPU it gets (in the KVM box, on a loaded host, far less), so the
	 * floor is only that it dirtied something.
	 */
	assert_in_range(harness_field(d, "pages"), 1, 20000);
	harness_free(&r);
}

static void test_allcpus(void **state)
{
	struct guest_opts o = { .cpus = 3,
		.cmdline = "allcpus fill 0x1000000 48M 9; allcpus verify 0x1000000 48M 9; exit 0" };
	struct guest_result r;
	int per_cpu = 0;

	run_ok(&o, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(harness_report(&r, "allcpus ok"));
	assert_int_equal(harness_field(harness_report(&r, "allcpus ok"), "n"), 3);
	for (int i = 0; i < r.nreports; i++)
		if (strstr(r.reports[i], "verify ok"))
			per_cpu++;
	assert_true(per_cpu >= 3);
	assert_null(harness_report(&r, "verify bad"));
	harness_free(&r);
}

/* Every template boots, on every KVM host: each requires only what a
 * 64-bit guest needs (src/vmm/cpuid.c), which real Intel and AMD hosts and
 * the KVM box (QEMU's software CPU, no VME) all offer; baseline's x86-64-v2
 * too.  A refusal here is a failure, not an allowed outcome. */
static void test_cpu_templates_boot(void **state)
{
	static const char *names[] = { "host", "minimal", "baseline" };

	harness_require_kvm();
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct guest_opts o = { .cmdline = "info; exit 0", .cpu_template = names[i],
					.cpus = 2 };
		struct guest_result r;
		char err[1024];

		if (harness_run(&o, &r, err, sizeof(err), NULL))
			fail_msg("template %s refused: %s", names[i], err);
		if (r.status != 0)
			fail_msg("template %s: guest status %d (%s)", names[i], r.status, r.reason);
		assert_int_equal(harness_field(harness_report(&r, "ready"), "cpus"), 2);
		assert_true(harness_field(harness_report(&r, "info"), "tsc_khz") > 0);
		harness_free(&r);
	}
}

static void test_timeout(void **state)
{
	struct guest_opts o = { .cmdline = "spin 20000", .timeout_s = 1 };
	struct guest_result r;

	run_ok(&o, &r);
	assert_int_equal(r.status, EXIT_GUEST_BAD);
	assert_non_null(strstr(r.reason, "did not finish within 1 s"));
	harness_free(&r);
}

/* ---- bad input: one clear line, a distinct status, no crash ---- */

static void expect_refused(const struct guest_opts *o, int status, const char *needle)
{
	struct guest_result r;
	char err[1024];
	int st = -1;

	harness_require_kvm();
	assert_int_equal(harness_run(o, &r, err, sizeof(err), &st), -1);
	if (!strstr(err, needle))
		fprintf(stderr, "message was: %s\n", err);
	assert_non_null(strstr(err, needle));
	assert_int_equal(st, status);
	assert_null(strchr(err, '\n'));
}

static void test_bad_inputs(void **state)
{
	char big[8192], notkernel[] = "/tmp/shoal-notkernel-XXXXXX";
	int fd = mkstemp(notkernel);
	struct guest_opts o = { 0 };

	assert_true(write(fd, "#!/bin/sh\necho hello\n", 21) == 21);
	close(fd);
	o.kernel = "/nonexistent/vmlinux";
	expect_refused(&o, EXIT_NOINPUT, "/nonexistent/vmlinux");
	o.kernel = notkernel;
	expect_refused(&o, EXIT_BADKERNEL, notkernel);
	o.kernel = NULL;
	o.cpus = 65;
	expect_refused(&o, EXIT_USAGE, "65");
	o.cpus = 1;
	o.memory = 1 << 20;
	expect_refused(&o, EXIT_USAGE, "too small");
	o.memory = 1ULL << 39;   /* 512 GiB: more than this host */
	expect_refused(&o, EXIT_RESOURCE, "more than this host has");
	o.memory = 0;
	o.cpu_template = "pentium";
	expect_refused(&o, EXIT_USAGE, "unknown CPU template 'pentium'");
	o.cpu_template = NULL;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	o.cmdline = big;
	expect_refused(&o, EXIT_USAGE, "command line");
	unlink(notkernel);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ready_and_info),
		cmocka_unit_test(test_smp_2),
		cmocka_unit_test(test_smp_4),
		cmocka_unit_test(test_smp_8),
		cmocka_unit_test(test_memory_above_4g),
		cmocka_unit_test(test_pattern_verify),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_poweroff),
		cmocka_unit_test(test_dirty),
		cmocka_unit_test(test_allcpus),
		cmocka_unit_test(test_cpu_templates_boot),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_bad_inputs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
