/*
 * test_snapshot_identity.c - a restored VM's new identity
 * (state/snapshot_identity.c) and its flags (`shoal run --mac/--cid`):
 * clones get new random MACs (unicast, locally administered, marked for
 * the device to keep) and a new CID that is never the snapshot's; given
 * ones are taken as given; a plain restore changes nothing; a MAC or CID
 * for a device the VM lacks is refused.  A restored VM's own TAP and vsock
 * socket (--tap, --vsock-socket) replace the snapshot's, and a vsock
 * socket another VM listens on is refused, naming it; a stale one is not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

/* A Unix socket listening on `path` (a running VM's vsock socket). */
static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void test_own_host_resources(void **state)
{
	char dir[] = "/tmp/shoal-ident-XXXXXX", vs[128], mine[128];
	const char *taps[] = { "clonetap9" }, *three[] = { "a", "b", "c" };
	struct snapshot_overrides clone = { .clone = true }, plain = { 0 };
	struct snapshot_overrides given = { .clone = true, .taps = taps, .ntaps = 1, .vsock_socket = mine };
	struct snapshot_overrides many = { .taps = three, .ntaps = 3 };
	struct vm_config c;
	struct error e;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(vs, sizeof(vs), "%s/v.sock", dir);
	snprintf(mine, sizeof(mine), "%s/mine.sock", dir);
	snap_cfg(&c);
	free(c.vsock_socket);
	c.vsock_socket = strdup(vs);
	fd = listen_on(vs);             /* another VM holds the snapshot's socket */
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &clone, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	char want[400];
	snprintf(want, sizeof(want), "snap/: the snapshot's vsock socket %s is in use by another VM; "
		 "give this clone its own with --vsock-socket PATH", vs);
	assert_string_equal(e.msg, want);
	/* given its own: taken, card 1 keeps its TAP */
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &given, &e), 0);
	assert_string_equal(c.vsock_socket, mine);
	assert_string_equal(c.nets[0].tap, "clonetap9");
	assert_string_equal(c.nets[1].tap, "t1");
	vm_config_free(&c);
	close(fd);                      /* that VM is gone: its socket file is stale */
	snap_cfg(&c);
	free(c.vsock_socket);
	c.vsock_socket = strdup(vs);
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &plain, &e), 0);
	assert_string_equal(c.vsock_socket, vs);
	fd = listen_on(mine);           /* a given path in use is refused too */
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &given, &e), -1);
	snprintf(want, sizeof(want), "snap/: --vsock-socket %s is in use by another VM (something "
		 "listens there); give this clone a free path", mine);
	assert_string_equal(e.msg, want);
	close(fd);
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &many, &e), -1);
	assert_string_equal(e.msg, "--tap: 3 given, but the snapshot's VM has 2 network cards");
	vm_config_free(&c);
	vm_config_init(&c);             /* no vsock device */
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &given, &e), -1);
	snprintf(want, sizeof(want), "--tap: 1 given, but the snapshot's VM has 0 network cards");
	assert_string_equal(e.msg, want);
	given.ntaps = 0;
	assert_int_equal(snapshot_own_host_resources("snap/", &c, &given, &e), -1);
	snprintf(want, sizeof(want), "--vsock-socket %s: the snapshot's VM has no vsock device", mine);
	assert_string_equal(e.msg, want);
	vm_config_free(&c);
	unlink(vs);
	unlink(mine);
	rmdir(dir);
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
	assert_int_equal(parse(&c, &o, &e, "--restore", "/s", "--tap", "t7", "--tap", "t8",
			       "--vsock-socket", "/tmp/c.sock", NULL), 0);
	assert_int_equal(o.ntaps, 2);
	assert_string_equal(o.taps[1], "t8");
	assert_string_equal(o.vsock_socket, "/tmp/c.sock");
	assert_int_equal(o.vm_flag, 0);
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
		cmocka_unit_test(test_own_host_resources),
		cmocka_unit_test(test_run_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
