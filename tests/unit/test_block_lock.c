/*
 * test_block_lock.c - image locking (block/lock.c) in one process.
 *
 * OFD locks belong to the open file description, so two opens of one file
 * in one process conflict exactly as two processes do: each test plays both
 * users here.  The bytes are read back by this file's own F_OFD_GETLK on
 * literal offsets, not through lock.c, so the wire format is checked
 * independently of the code under test.  The expected byte sets are what
 * QEMU 7.2 holds, read from /proc/locks (tests/system/img_lock.sh checks
 * the same against the real qemu-io and qemu-img):
 *
 *   qcow2 writer (qemu-io)           100 101 103 201 203
 *   qcow2 reader (qemu-io -r)        100 201 203
 *   reader with -U, raw reader of
 *   qemu-img info / qemu-io -r       100
 *   backing file of an open overlay  100 201 203
 *
 * Without the feature no byte is held and every refusal below is an open
 * that succeeds, so every test here fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/lock.h"
#include "block/qcow2.h"

static char dir[64], base[128], top[128], raw[128];

static int setup(void **state)
{
	struct qcow2_create_opts b = { .size = 4 << 20, .chain_id = true };
	struct qcow2_create_opts t = { .backing_file = "base.qcow2", .backing_format = "qcow2",
				       .chain_id = true };
	struct error e;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-lock.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	snprintf(raw, sizeof(raw), "%s/disk.raw", dir);
	if (qcow2_create(base, &b, &e) || qcow2_create(top, &t, &e) ||
	    raw_create(raw, 4 << 20, false, &e)) {
		fprintf(stderr, "setup: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* The lock bytes 100..103 and 200..203 that other open file descriptions
 * hold on `path`, as "100 101 ..." (empty: none), seen through a new fd. */
static const char *bytes_held(const char *path)
{
	static char out[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	out[0] = 0;
	for (int b = 100; b < 204; b += (b == 103 ? 97 : 1)) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b,
				    .l_len = 1 };

		assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
		if (fl.l_type != F_UNLCK)
			snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%d",
				 out[0] ? " " : "", b);
	}
	close(fd);
	return out;
}

/* Open path with the given options; 0 or -1 with e filled. */
static int open_as(struct blockdev **bd, const char *path, bool ro, bool share,
		   bool share_writes, struct error *e)
{
	struct blockdev_opts o = { .readonly = ro, .force_share = share,
				   .share_writes = share_writes, .no_aio = true,
				   .caller_reports = true };

	memset(e, 0, sizeof(*e));
	return blockdev_open(bd, path, &o, e);
}

/* Each kind of open holds QEMU 7.2's bytes, and drops them all at close. */
static void test_bytes_per_open(void **state)
{
	static const struct { const char *path; bool ro, share, sw; const char *want; } c[] = {
		{ base, false, false, false, "100 101 103 201 203" },	/* writer */
		{ base, true, false, false, "100 201 203" },		/* reader */
		{ base, true, true, false, "100" },			/* -U */
		{ base, true, false, true, "100 201 203" },	/* qcow2 ignores share_writes */
		{ raw, false, false, false, "100 101 103 201 203" },
		{ raw, true, false, false, "100 201 203" },		/* a VM's reader */
		{ raw, true, false, true, "100" },			/* qemu-img's reader */
	};
	struct blockdev *bd;
	struct error e;

	(void)state;
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		assert_int_equal(open_as(&bd, c[i].path, c[i].ro, c[i].share, c[i].sw, &e), 0);
		if (strcmp(bytes_held(c[i].path), c[i].want))
			fail_msg("case %zu: %s holds \"%s\", QEMU holds \"%s\"", i, c[i].path,
				 bytes_held(c[i].path), c[i].want);
		blockdev_close(bd);
		assert_string_equal(bytes_held(c[i].path), "");
	}
}

/* A second open that conflicts is refused, names the file and the
 * permission in QEMU's words, and leaves no byte of its own behind. */
static void expect_refused(const char *path, bool ro, bool share, const char *what)
{
	struct blockdev *bd2;
	struct error e;
	char before[64];

	snprintf(before, sizeof(before), "%s", bytes_held(path));
	assert_int_equal(open_as(&bd2, path, ro, share, false, &e), -1);
	assert_null(bd2);
	assert_int_equal(e.status, 66);
	if (!strstr(e.msg, what) || !strstr(e.msg, path) ||
	    !strstr(e.msg, "Is another process using the image?"))
		fail_msg("refusal \"%s\" lacks \"%s\" or the file name", e.msg, what);
	assert_string_equal(bytes_held(path), before);
}

/* Who may join whom: QEMU's answers, both orders. */
static void test_conflicts(void **state)
{
	struct blockdev *w, *r, *u, *r2;
	struct error e;

	(void)state;
	assert_int_equal(open_as(&w, base, false, false, false, &e), 0);
	expect_refused(base, false, false, "Failed to get \"write\" lock");
	expect_refused(base, true, false, "Failed to get shared \"write\" lock");
	assert_int_equal(open_as(&u, base, true, true, false, &e), 0);	/* -U reads */
	blockdev_close(u);
	blockdev_close(w);

	assert_int_equal(open_as(&r, base, true, false, false, &e), 0);
	assert_int_equal(open_as(&r2, base, true, false, false, &e), 0);	/* readers share */
	expect_refused(base, false, false, "Failed to get \"write\" lock");
	blockdev_close(r2);
	blockdev_close(r);

	assert_int_equal(open_as(&u, base, true, true, false, &e), 0);
	assert_int_equal(open_as(&w, base, false, false, false, &e), 0);	/* as QEMU */
	blockdev_close(w);
	blockdev_close(u);
	assert_string_equal(bytes_held(base), "");
}

/* -U is for readers only. */
static void test_force_share_needs_read_only(void **state)
{
	struct blockdev *bd;
	struct error e;

	(void)state;
	assert_int_equal(open_as(&bd, base, false, true, false, &e), -1);
	assert_int_equal(e.status, 64);
	assert_non_null(strstr(e.msg, "read-only"));
	assert_string_equal(bytes_held(base), "");
}

/* The backing file of an open overlay is held as a reader: a writer of
 * the base is refused, and an overlay whose base has a writer is refused,
 * naming the backing file. */
static void test_backing_chain(void **state)
{
	struct blockdev *t, *w;
	struct error e;

	(void)state;
	assert_int_equal(open_as(&t, top, false, false, false, &e), 0);
	assert_string_equal(bytes_held(base), "100 201 203");
	expect_refused(base, false, false, "Failed to get \"write\" lock");
	blockdev_close(t);

	assert_int_equal(open_as(&w, base, false, false, false, &e), 0);
	assert_int_equal(open_as(&t, top, true, false, false, &e), -1);
	assert_non_null(strstr(e.msg, "backing file"));
	assert_non_null(strstr(e.msg, "Failed to get shared \"write\" lock"));
	assert_string_equal(bytes_held(top), "");	/* the top's bytes went too */
	assert_int_equal(open_as(&t, top, true, true, false, &e), 0);	/* -U: whole chain */
	assert_string_equal(bytes_held(base), "100 101 103 201 203");
	blockdev_close(t);
	blockdev_close(w);
}

/* commit's dance: the overlay's open shares its base, then the base opens
 * for writing through a second description. */
static void test_share_all(void **state)
{
	struct blockdev *t, *b;
	struct error e;

	(void)state;
	assert_int_equal(open_as(&t, top, false, false, false, &e), 0);
	expect_refused(base, false, false, "Failed to get \"write\" lock");
	blockdev_share_all(t->backing);
	assert_string_equal(bytes_held(base), "100");
	assert_int_equal(open_as(&b, base, false, false, false, &e), 0);
	blockdev_close(b);
	blockdev_close(t);
	assert_string_equal(bytes_held(base), "");
}

/* Closing another descriptor of the same file - which drops every classic
 * POSIX lock the process holds on it - leaves the OFD locks in place. */
static void test_other_close_keeps_locks(void **state)
{
	struct blockdev *w;
	struct error e;
	int fd;

	(void)state;
	assert_int_equal(open_as(&w, raw, false, false, false, &e), 0);
	fd = open(raw, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
	assert_string_equal(bytes_held(raw), "100 101 103 201 203");
	expect_refused(raw, false, false, "Failed to get \"write\" lock");
	blockdev_close(w);
}

/* lock_set moves between states without a refusal in between, and a
 * refused change leaves the old state both in *st and in the kernel. */
static void test_lock_set_transitions(void **state)
{
	struct lock_state a = { 0 }, b = { 0 }, seen;
	struct error e;
	int fa = open(raw, O_RDWR | O_CLOEXEC), fb = open(raw, O_RDONLY | O_CLOEXEC);

	(void)state;
	assert_true(fa >= 0 && fb >= 0);
	assert_int_equal(lock_set(fa, raw, LOCK_PERM_CONSISTENT_READ, LOCK_PERM_ALL, &a, &e), 0);
	assert_string_equal(bytes_held(raw), "100");
	assert_int_equal(lock_set(fb, raw, LOCK_PERM_CONSISTENT_READ,
				  LOCK_PERM_CONSISTENT_READ, &b, &e), 0);
	/* a wants to write now: b refuses it, a keeps what it had */
	assert_int_equal(lock_set(fa, raw, LOCK_PERM_CONSISTENT_READ | LOCK_PERM_WRITE,
				  LOCK_PERM_ALL, &a, &e), -1);
	assert_non_null(strstr(e.msg, "Failed to get \"write\" lock"));
	assert_int_equal(a.held, LOCK_PERM_CONSISTENT_READ);
	assert_int_equal(a.unshared, 0);
	lock_release(fb, &b);
	assert_int_equal(b.held | b.unshared, 0);
	assert_string_equal(bytes_held(raw), "100");
	assert_int_equal(lock_set(fa, raw, LOCK_PERM_CONSISTENT_READ | LOCK_PERM_WRITE,
				  LOCK_PERM_CONSISTENT_READ, &a, &e), 0);
	assert_int_equal(lock_query(fb, &seen), 0);	/* fa's bytes, as fb sees them */
	assert_int_equal(seen.held, LOCK_PERM_CONSISTENT_READ | LOCK_PERM_WRITE);
	assert_int_equal(seen.unshared, LOCK_PERM_ALL & ~LOCK_PERM_CONSISTENT_READ);
	close(fa);				/* the description goes, its locks too */
	assert_string_equal(bytes_held(raw), "");
	close(fb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytes_per_open),
		cmocka_unit_test(test_conflicts),
		cmocka_unit_test(test_force_share_needs_read_only),
		cmocka_unit_test(test_backing_chain),
		cmocka_unit_test(test_share_all),
		cmocka_unit_test(test_other_close_keeps_locks),
		cmocka_unit_test(test_lock_set_transitions),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
