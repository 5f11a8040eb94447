/*
 * test_block_inactivate.c - the write lock moving between two opens of one
 * image, as live migration over shared storage moves it (block/blockdev.c's
 * blockdev_inactivate and blockdev_activate; docs/migration.md, "Shared
 * storage").  OFD locks conflict between two opens in one process as
 * between two processes, so this process plays the source (`src`), the
 * destination and a third process.  For a raw and a qcow2 image:
 *
 *   - while the source writes, a writable open is refused, and an open
 *     sharing everything (how an --incoming VMM opens it inactive) is not;
 *   - inactivate: byte 101 (write) is free, the source's writes fail with
 *     EROFS, and a new writable open (the destination taking the lock)
 *     reads what the source wrote before (the flush made it durable, the
 *     qcow2 metadata included);
 *   - while that one holds the image the source cannot take it back and
 *     stays inactive; once it is closed it can, writes again, and a
 *     writable open is refused again.
 *
 * Without the feature inactivate does not exist (or keeps the locks) and
 * the destination's open is refused.
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

static char dir[64], qc[128], raw[128];

static int setup(void **state)
{
	struct qcow2_create_opts q = { .size = 4 << 20 };
	struct error e;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-inact.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(qc, sizeof(qc), "%s/d.qcow2", dir);
	snprintf(raw, sizeof(raw), "%s/d.raw", dir);
	if (qcow2_create(qc, &q, &e) || raw_create(raw, 4 << 20, false, &e)) {
		fprintf(stderr, "setup: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(qc);
	unlink(raw);
	rmdir(dir);
	return 0;
}

/* Whether some open file description holds byte `off` of path. */
static bool byte_held(const char *path, int off)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };
	int fd = open(path, O_RDONLY);
	bool held;

	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
	held = fl.l_type != F_UNLCK;
	close(fd);
	return held;
}

static void move_lock(const char *path)
{
	struct blockdev_opts w = { 0 }, inact = { .readonly = true, .force_share = true };
	struct blockdev *src, *dst, *other;
	struct error e = { 0 };
	uint8_t buf[65536], back[65536];

	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(blockdev_open(&src, path, &w, &e), 0);
	assert_int_equal(blockdev_write(src, buf, 1 << 20, sizeof(buf)), 0);
	assert_int_not_equal(blockdev_open(&other, path, &w, &e), 0);
	assert_non_null(strstr(e.msg, "Failed to get"));
	assert_int_equal(blockdev_open(&dst, path, &inact, &e), 0);   /* inactive */
	assert_true(byte_held(path, 101));

	assert_int_equal(blockdev_inactivate(src, &e), 0);
	assert_true(src->inactive);
	assert_false(byte_held(path, 101));
	assert_false(byte_held(path, 201));
	assert_int_equal(blockdev_write(src, buf, 0, 4096), -EROFS);
	blockdev_close(dst);
	assert_int_equal(blockdev_open(&dst, path, &w, &e), 0);       /* takes it */
	assert_int_equal(blockdev_read(dst, back, 1 << 20, sizeof(back)), 0);
	assert_memory_equal(back, buf, sizeof(buf));
	assert_true(byte_held(path, 101));

	assert_int_not_equal(blockdev_activate(src, &e), 0);           /* held elsewhere */
	assert_non_null(strstr(e.msg, "lock"));
	assert_true(src->inactive);
	blockdev_close(dst);                                           /* the NAK */
	assert_int_equal(blockdev_activate(src, &e), 0);
	assert_false(src->inactive);
	assert_int_equal(blockdev_write(src, buf, 0, 4096), 0);
	assert_int_not_equal(blockdev_open(&other, path, &w, &e), 0);
	blockdev_close(src);
}

static void test_raw(void **state)
{
	(void)state;
	move_lock(raw);
}

static void test_qcow2(void **state)
{
	(void)state;
	move_lock(qc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw),
		cmocka_unit_test(test_qcow2),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
