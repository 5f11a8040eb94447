/*
 * test_virtio_guest.c - Shoal's virtio-pci transport driven by the test
 * guest's own drivers (ring 3, written against the spec and checked against
 * QEMU's devices in tests/system/guest_virtio_qemu.sh): enumeration through
 * both config mechanisms, transitional ids, and virtio-rng in legacy and
 * modern mode, on split and packed rings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "vmm/config.h"

static void add_rng(struct vm_config *c, void *arg)
{
	c->rng = true;
}

static void run_rng(const char *cmdline, struct guest_result *r)
{
	struct guest_opts o = { .cmdline = cmdline, .tweak = add_rng };
	char err[1024];

	harness_require_kvm();
	if (harness_run(&o, r, err, sizeof(err), NULL)) {
		fprintf(stderr, "vm_create: %s\n", err);
		fail();
	}
	if (r->status != 0)
		fprintf(stderr, "reason: %s\nconsole tail: %s\n", r->reason,
			r->console + (strlen(r->console) > 600 ? strlen(r->console) - 600 : 0));
}

static void test_enumeration(void **state)
{
	struct guest_result r;
	const char *d;

	run_rng("vdevs; vdevs access=ports; exit 0", &r);
	assert_int_equal(r.status, 0);
	d = harness_report(&r, "vdev ");
	assert_non_null(d);
	assert_non_null(strstr(d, "id=1af4:1005"));   /* transitional rng */
	assert_non_null(strstr(d, "legacy=1 modern=1"));
	assert_null(harness_report(&r, "error"));
	harness_free(&r);
}

static void rng_mode(const char *mode, const char *ring)
{
	char cmd[160];
	struct guest_result r;
	const char *ok;

	snprintf(cmd, sizeof(cmd), "virtio-mode %s; virtio-ring %s; vrng 8192; exit 0", mode, ring);
	run_rng(cmd, &r);
	assert_int_equal(r.status, 0);
	ok = harness_report(&r, "vrng ok");
	assert_non_null(ok);
	assert_int_equal(harness_field(ok, "bytes"), 8192);
	assert_true(harness_field(ok, "distinct") > 200);
	if (strcmp(mode, "auto"))
		assert_non_null(strstr(ok, mode));
	assert_non_null(strstr(ok, ring));
	harness_free(&r);
}

static void test_rng_legacy(void **state) { rng_mode("legacy", "split"); }
static void test_rng_modern(void **state) { rng_mode("modern", "split"); }
static void test_rng_packed(void **state) { rng_mode("modern", "packed"); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enumeration),
		cmocka_unit_test(test_rng_legacy),
		cmocka_unit_test(test_rng_modern),
		cmocka_unit_test(test_rng_packed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
