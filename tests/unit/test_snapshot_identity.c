/*
 * test_snapshot_identity.c - a restored VM's new identity
 * (state/snapshot_identity.c) and its flags (`shoal run --mac/--cid`):
 * clones get new random MACs (unicast, locally administered, marked for
 * the device to keep) and a new CID that is never the snapshot's; given
 * ones are taken as given; a plain restore changes nothing; a MAC or CID
 * for a device the VM lacks is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "cli/run.h"
#include "devices/config_dev.h"
#include "state/snapshot_identity.h"

/* A snapshot's settings: two cards (the first with a MAC) and vsock CID 7. */
static void snap_cfg(struct vm_config *c)
{
	struct error e;

	vm_config_init(c);
	assert_int_equal(vm_config_add_net(c, "tap=t0,mac=52:54:00:00:00:01", &e), 0);
	assert_int_equal(vm_config_add_net(c, "tap=t1", &e), 0);
	assert_int_equal(vm_config_set_vsock(c, "cid=7,socket=/tmp/v.sock", &e), 0);
}

static unsigned first_byte(const char *mac)
{
	return (unsigned)strtoul(mac, NULL, 16);
}

static void test_clone_gets_new_identity(void **state)
{
	struct snapshot_overrides ov = { .clone = true };
	struct vm_config c, d;
	struct error e;

	snap_cfg(&c);
	assert_int_equal(snapshot_new_identity(&c, &ov, &e), 0);
	for (int i = 0; i < 2; i++) {
		assert_non_null(c.nets[i].mac);
		assert_true(c.nets[i].new_mac);
		assert_int_equal(first_byte(c.nets[i].mac) & 3, 2);   /* unicast, local */
		assert_int_equal(strlen(c.nets[i].mac), 17);
	}
	assert_string_not_equal(c.nets[0].mac, "52:54:00:00:00:01");
	assert_string_not_equal(c.nets[0].mac, c.nets[1].mac);
	assert_true(c.vsock_cid >= 3 && c.vsock_cid != 7 && c.vsock_cid != 0xffffffffu);
	/* a second clone: other values */
	snap_cfg(&d);
	assert_int_equal(snapshot_new_identity(&d, &ov, &e), 0);
	assert_string_not_equal(c.nets[0].mac, d.nets[0].mac);
	assert_int_not_equal(c.vsock_cid, d.vsock_cid);
	vm_config_free(&c);
	vm_config_free(&d);
}

static void test_given_and_plain(void **state)
{
	const char *macs[] = { "52:54:00:aa:bb:01" };
	struct snapshot_overrides given = { .macs = macs, .nmacs = 1, .cid = 42 };
	struct snapshot_overrides plain = { 0 };
	struct vm_config c;
	struct error e;

	snap_cfg(&c);           /* given, on a plain restore: card 1 is left alone */
	assert_int_equal(snapshot_new_identity(&c, &given, &e), 0);
	assert_string_equal(c.nets[0].mac, "52:54:00:aa:bb:01");
	assert_true(c.nets[0].new_mac);
	assert_null(c.nets[1].mac);
	assert_false(c.nets[1].new_mac);
	assert_int_equal(c.vsock_cid, 42);
	vm_config_free(&c);

	snap_cfg(&c);           /* a plain restore keeps everything */
	assert_int_equal(snapshot_new_identity(&c, &plain, &e), 0);
	assert_string_equal(c.nets[0].mac, "52:54:00:00:00:01");
	assert_false(c.nets[0].new_mac);
	assert_null(c.nets[1].mac);
	assert_int_equal(c.vsock_cid, 7);
	vm_config_free(&c);
}

static void test_refused(void **state)
{
	const char *three[] = { "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03" };
	struct snapshot_overrides many = { .macs = three, .nmacs = 3 };
	struct snapshot_overrides cid = { .cid = 9 };
	struct vm_config c;
	struct error e;

	snap_cfg(&c);
	assert_int_equal(snapshot_new_identity(&c, &many, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_string_equal(e.msg, "--mac: 3 given, but the snapshot's VM has 2 network cards");
	vm_config_free(&c);
	vm_config_init(&c);     /* no vsock device */
	assert_int_equal(snapshot_new_identity(&c, &cid, &e), -1);
	assert_string_equal(e.msg, "--cid 9: the snapshot's VM has no vsock device");
	vm_config_free(&c);
}

static int parse(struct vm_config *c, struct run_opts *o, struct error *e, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;

	va_start(ap, e);
	argv[argc++] = "run";
	for (char *a; (a = va_arg(ap, char *)); )
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return run_parse_args(argc, argv, c, o, e);
}

static void test_run_flags(void **state)
{
	struct vm_config c;
	struct run_opts o;
	struct error e;

	vm_config_init(&c);
	assert_int_equal(parse(&c, &o, &e, "--restore", "/s", "--clone", "--mac", "52:54:00:aa:bb:01",
			       "--mac", "02:00:00:00:00:02", "--cid", "42", NULL), 0);
	assert_int_equal(o.nmacs, 2);
	assert_string_equal(o.macs[0], "52:54:00:aa:bb:01");
	assert_string_equal(o.macs[1], "02:00:00:00:00:02");
	assert_int_equal(o.cid, 42);
	assert_int_equal(o.vm_flag, 0);         /* they go with --restore */
	free(o.restore);
	assert_int_equal(parse(&c, &o, &e, "--mac", "01:00:5e:00:00:01", NULL), -1);
	assert_string_equal(e.msg, "--mac: '01:00:5e:00:00:01' is not a unicast MAC address");
	assert_int_equal(parse(&c, &o, &e, "--mac", "52:54:00", NULL), -1);
	assert_int_equal(parse(&c, &o, &e, "--cid", "2", NULL), -1);
	assert_string_equal(e.msg, "--cid: 2 is reserved; a guest's CID is 3 or more");
	assert_int_equal(parse(&c, &o, &e, "--cid", "4294967295", NULL), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	vm_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clone_gets_new_identity),
		cmocka_unit_test(test_given_and_plain),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_run_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
