/*
 * test_host_confine.c - confined opens (base/path_beneath.c) and what the
 * daemon and the VMM build on them (issue 16): names that lead out of the
 * allowed directory by "..", an absolute or relative symbolic link, a
 * /proc magic link, or a qcow2 backing-file name are refused with EACCES
 * and open nothing; the block layer refuses such a backing file itself,
 * also one swapped in after a first check; a FIFO does not hang an open;
 * Unix sockets are bound and reached only beneath the directory; the
 * daemon's spec checks answer 403 for all of it, and do not trip over a
 * disk a running VM holds.
 *
 * Layout under a fresh temporary directory T:
 *   T/secret          a file outside
 *   T/ok/             the allowed directory
 *   T/ok/file         a file inside
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "block/qcow2.h"
#include "host/spec.h"
#include "base/path_beneath.h"

static char T[64], OK[96];

/* T/NAME (or T/ok/NAME) into a static buffer, one of four in turn. */
static const char *at(const char *dir, const char *name)
{
	static char bufs[4][256];
	static int i;
	char *b = bufs[i++ & 3];

	snprintf(b, 256, "%s/%s", dir, name);
	return b;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void confine_ok(void)
{
	const char *dirs[] = { OK };
	struct error e;

	assert_int_equal(path_confine(dirs, 1, &e), 0);
	assert_true(path_confined());
}

static int setup(void **state)
{
	snprintf(T, sizeof(T), "/tmp/shoal-confine.XXXXXX");
	assert_non_null(mkdtemp(T));
	snprintf(OK, sizeof(OK), "%s/ok", T);
	assert_int_equal(mkdir(OK, 0755), 0);
	write_file(at(T, "secret"), "secret\n");
	write_file(at(OK, "file"), "inside\n");
	confine_ok();
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	assert_int_equal(path_confine(NULL, 0, NULL), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", T);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* path_open(path) is refused: -1, EACCES, a reason naming the path. */
static void assert_refused(const char *path, int flags)
{
	int fd = path_open(path, flags, 0600);

	if (fd >= 0)
		fail_msg("%s: opened, should have been refused", path);
	assert_int_equal(errno, EACCES);
	assert_non_null(path_refusal());
	assert_non_null(strstr(path_refusal(), path));
}

static void test_inside_opens(void **state)
{
	char buf[16] = "";
	int fd = path_open(at(OK, "file"), O_RDONLY | O_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_null(path_refusal());
	assert_int_equal(read(fd, buf, sizeof(buf) - 1), 7);
	assert_string_equal(buf, "inside\n");
	close(fd);
	assert_int_equal(symlink("file", at(OK, "rel-inside")), 0);     /* stays inside */
	fd = path_open(at(OK, "rel-inside"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	fd = path_open(at(OK, "new"), O_WRONLY | O_CREAT | O_EXCL, 0600);   /* create inside */
	assert_true(fd >= 0);
	close(fd);
	fd = path_open(at(OK, "missing"), O_RDONLY, 0);               /* plain errors stay */
	assert_int_equal(fd, -1);
	assert_int_equal(errno, ENOENT);
	assert_null(path_refusal());
}

static void test_escapes_refused(void **state)
{
	char path[256];

	assert_refused(at(T, "secret"), O_RDONLY);                    /* not beneath */
	assert_refused("/etc/passwd", O_RDONLY);
	assert_refused("relative/name", O_RDONLY);
	assert_refused(at(OK, "../secret"), O_RDONLY);                /* ".." out */
	snprintf(path, sizeof(path), "%sX/file", OK);                 /* "ok" is not "okX" */
	assert_refused(path, O_RDONLY);
	assert_int_equal(symlink(at(T, "secret"), at(OK, "abs-link")), 0);
	assert_refused(at(OK, "abs-link"), O_RDONLY);                 /* absolute symlink */
	assert_int_equal(symlink("../secret", at(OK, "rel-link")), 0);
	assert_refused(at(OK, "rel-link"), O_RDWR);                   /* relative, out */
	assert_int_equal(symlink("/proc/self/root", at(OK, "root")), 0);
	snprintf(path, sizeof(path), "%s/root%s", OK, at(T, "secret"));
	assert_refused(path, O_RDONLY);
	assert_refused(at(OK, "../created"), O_WRONLY | O_CREAT);     /* nothing created */
	assert_int_equal(access(at(T, "created"), F_OK), -1);
	assert_refused(at(OK, "rel-link"), O_PATH);
}

/* /proc/self/root is a magic link: refused even with /proc allowed. */
static void test_magic_link_refused(void **state)
{
	const char *dirs[] = { "/proc" };
	struct error e;

	assert_int_equal(path_confine(dirs, 1, &e), 0);
	assert_refused("/proc/self/root/etc/passwd", O_RDONLY);
	assert_refused("/proc/self/cwd/x", O_RDONLY);
	assert_refused("/proc/thread-self/root/etc/passwd", O_RDONLY);
}

/* Unconfined, path_open is open(2). */
static void test_unconfined(void **state)
{
	int fd;

	assert_int_equal(path_confine(NULL, 0, NULL), 0);
	assert_false(path_confined());
	fd = path_open(at(T, "secret"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
}

static void alarm_fail(int sig)
{
	(void)sig;
	_exit(99);   /* an open hung on the FIFO */
}

/* A FIFO swapped in for a disk must not hang the daemon's open. */
static void test_fifo_does_not_hang(void **state)
{
	int fd;

	assert_int_equal(mkfifo(at(OK, "fifo"), 0600), 0);
	signal(SIGALRM, alarm_fail);
	alarm(5);
	fd = path_open(at(OK, "fifo"), O_RDONLY | O_CLOEXEC, 0);
	alarm(0);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);        /* as asked */
	close(fd);
}

/* A qcow2 whose backing file lies outside: the block layer, confined,
 * refuses to open it, whatever the name's form, also after a swap. */
static void test_backing_chain_refused(void **state)
{
	struct qcow2_create_opts o = { .size = 1 << 20, .backing_format = "raw" };
	struct blockdev_opts bo = { .readonly = true, .no_aio = true };
	struct blockdev *bd;
	struct error e;
	const char *names[] = { "../secret", NULL, "root-link/secret" };

	write_file(at(OK, "base.raw"), "");
	assert_int_equal(truncate(at(OK, "base.raw"), 1 << 20), 0);
	assert_int_equal(truncate(at(T, "secret"), 1 << 20), 0);
	assert_int_equal(symlink(T, at(OK, "root-link")), 0);
	names[1] = at(T, "secret");
	assert_int_equal(path_confine(NULL, 0, NULL), 0);       /* made unconfined */
	for (int i = 0; i < 3; i++) {
		o.backing_file = names[i];
		assert_int_equal(qcow2_create(at(OK, "top.qcow2"), &o, &e), 0);
		confine_ok();
		assert_int_equal(blockdev_open(&bd, at(OK, "top.qcow2"), &bo, &e), -1);
		assert_null(bd);
		assert_non_null(path_refusal());
		assert_int_equal(path_confine(NULL, 0, NULL), 0);
	}
	/* an allowed chain opens; then its backing name is swapped to a
	 * symbolic link out: the next open (the VMM's) refuses it */
	o.backing_file = "base.raw";
	assert_int_equal(qcow2_create(at(OK, "top.qcow2"), &o, &e), 0);
	confine_ok();
	assert_int_equal(blockdev_open(&bd, at(OK, "top.qcow2"), &bo, &e), 0);
	blockdev_close(bd);
	assert_int_equal(unlink(at(OK, "base.raw")), 0);
	assert_int_equal(symlink(at(T, "secret"), at(OK, "base.raw")), 0);
	assert_int_equal(blockdev_open(&bd, at(OK, "top.qcow2"), &bo, &e), -1);
	assert_non_null(path_refusal());
}

/* bind and connect beneath the directory; refused outside and through a
 * symbolic link out; a stale socket is replaced. */
static void test_unix_sockets(void **state)
{
	int l = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
	int l2 = socket(AF_UNIX, SOCK_STREAM, 0), out = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	assert_int_equal(path_bind_unix(l, at(OK, "v.sock")), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(path_connect_unix(c, at(OK, "v.sock")), 0);
	close(l);
	assert_int_equal(path_bind_unix(l2, at(OK, "v.sock")), 0);    /* stale: replaced */
	close(l2);
	assert_int_equal(path_bind_unix(socket(AF_UNIX, SOCK_STREAM, 0), at(T, "o.sock")), -1);
	assert_int_equal(errno, EACCES);
	assert_int_equal(access(at(T, "o.sock"), F_OK), -1);
	/* a listener outside, reached through a symbolic link inside: refused */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", at(T, "o.sock"));
	assert_int_equal(bind(out, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(out, 1), 0);
	assert_int_equal(symlink(at(T, "o.sock"), at(OK, "link.sock")), 0);
	assert_int_equal(path_connect_unix(socket(AF_UNIX, SOCK_STREAM, 0), at(OK, "link.sock")), -1);
	assert_int_equal(errno, EACCES);
	close(out);
	close(c);
}

/* The daemon's spec checks in a confined process: 403 for each way out. */
static void expect_403(const char *text, const char *needle)
{
	struct host_spec s;
	struct api_err e;

	memset(&e, 0, sizeof(e));
	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &e), -1);
	if (e.http != 403 || strcmp(e.code, "path_not_allowed") || !strstr(e.msg, needle))
		fail_msg("%s: got %d %s \"%s\"", text, e.http, e.code, e.msg);
}

#define SPEC(...) (snprintf(text, sizeof(text), __VA_ARGS__), text)

static void test_spec_refusals(void **state)
{
	struct qcow2_create_opts o = { .size = 1 << 20, .backing_format = "raw" };
	char k[256], text[1024];
	struct host_spec s;
	struct api_err ae;
	struct error e;

	snprintf(k, sizeof(k), "%s", at(OK, "file"));
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\"}", at(T, "secret")), "not beneath");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\"}", at(OK, "../secret")), "leads out");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"/proc/self/root%s\"}", at(T, "secret")),
		   "not beneath");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"initrd\": \"/etc/shadow\"}", k),
		   "initrd");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"disks\": [{\"path\": \"/etc/shadow\"}]}",
			k), "disks[0].path");
	assert_int_equal(path_confine(NULL, 0, NULL), 0);
	o.backing_file = at(T, "secret");
	assert_int_equal(qcow2_create(at(OK, "top.qcow2"), &o, &e), 0);
	confine_ok();
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"disks\": [{\"path\": \"%s\"}]}", k,
			at(OK, "top.qcow2")), "backing chain");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"vsock\": {\"cid\": 3, \"socket\": \"%s\"}}",
			k, at(T, "v.sock")), "vsock.socket");
	expect_403(SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"virtio_console\": "
			"\"file:hvc0.log,in=/etc/shadow\"}", k), "virtio_console: in");
	/* and what is allowed passes */
	SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"console\": \"file:serial.log\", "
	     "\"vsock\": {\"cid\": 3, \"socket\": \"%s\"}}", k, at(OK, "v.sock"));
	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &ae), 0);
	assert_string_equal(host_console_name(&s.cfg), "serial.log");
	host_spec_free(&s);
}

/* The daemon's chain check reads headers only: a VM writing the disk
 * (holding a writer's image locks) does not make a create fail. */
static void test_spec_disk_in_use(void **state)
{
	struct blockdev_opts wo = { .no_aio = true };
	char text[1024];
	struct blockdev *w;
	struct host_spec s;
	struct api_err ae;
	struct error e;

	write_file(at(OK, "disk.raw"), "");
	assert_int_equal(truncate(at(OK, "disk.raw"), 1 << 20), 0);
	assert_int_equal(blockdev_open(&w, at(OK, "disk.raw"), &wo, &e), 0);
	SPEC("{\"name\": \"a\", \"kernel\": \"%s\", \"disks\": [{\"path\": \"%s\"}]}",
	     at(OK, "file"), at(OK, "disk.raw"));
	if (host_spec_parse(text, strlen(text), true, &s, &ae))
		fail_msg("a disk in use: %d %s", ae.http, ae.msg);
	host_spec_free(&s);
	blockdev_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_inside_opens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escapes_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_magic_link_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unconfined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fifo_does_not_hang, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_chain_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unix_sockets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_disk_in_use, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
