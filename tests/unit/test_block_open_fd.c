/*
 * test_block_open_fd.c - blockdev_open_fd: an image opened from a file
 * another process opened (shoald hands a jailed VMM a hot-added disk, the
 * VMM never opens the path).
 *
 * What it must do: use the file it is given and not the path (the path is
 * only a name: here it names nothing), keep its own duplicate (the
 * caller's descriptor stays open and usable after blockdev_close), lock the
 * image as blockdev_open would (a second writer by path is refused), and
 * refuse a writable disk on a file opened read-only (its writes would fail
 * later with EBADF, in the guest's face).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"

static char dir[64], raw[128];

static int setup(void **state)
{
	struct error e;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-openfd.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(raw, sizeof(raw), "%s/disk.raw", dir);
	if (raw_create(raw, 1 << 20, false, &e)) {
		fprintf(stderr, "setup: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(raw);
	rmdir(dir);
	return 0;
}

static void test_writable_from_fd(void **state)
{
	struct blockdev_opts o = { .no_aio = true };
	struct blockdev *bd, *other;
	struct error e = { 0 };
	char buf[512], back[512];
	int fd = open(raw, O_RDWR | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	/* the path names nothing: only the file given can be what opens */
	assert_int_equal(blockdev_open_fd(&bd, fd, "/nonexistent/hot.raw", &o, &e), 0);
	assert_int_equal(bd->size, 1 << 20);
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(blockdev_write(bd, buf, 4096, sizeof(buf)), 0);
	/* locked as a writer: a second writable open by path is refused */
	assert_int_not_equal(blockdev_open(&other, raw, &o, &e), 0);
	blockdev_close(bd);
	/* the caller's descriptor is still its own and sees the write */
	assert_int_equal(pread(fd, back, sizeof(back), 4096), (ssize_t)sizeof(back));
	assert_memory_equal(buf, back, sizeof(buf));
	close(fd);
	/* and the locks went with the close */
	assert_int_equal(blockdev_open(&other, raw, &o, &e), 0);
	blockdev_close(other);
}

static void test_readonly_file_writable_disk_refused(void **state)
{
	struct blockdev_opts o = { .no_aio = true };
	struct blockdev *bd;
	struct error e = { 0 };
	int fd = open(raw, O_RDONLY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_not_equal(blockdev_open_fd(&bd, fd, raw, &o, &e), 0);
	assert_null(bd);
	assert_non_null(strstr(e.msg, "open read-only"));
	o.readonly = true;
	assert_int_equal(blockdev_open_fd(&bd, fd, raw, &o, &e), 0);
	assert_true(bd->readonly);
	blockdev_close(bd);
	assert_int_not_equal(blockdev_open_fd(&bd, -1, raw, &o, &e), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writable_from_fd),
		cmocka_unit_test(test_readonly_file_writable_disk_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
