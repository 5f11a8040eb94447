/*
 * test_block_overlay.c - blockdev_push_overlay: a running disk switched to
 * a new qcow2 overlay on top of itself (the disk half of a snapshot,
 * state/snapshot_disk.c).
 *
 * For a raw and a qcow2 image, opened for writing and written (the qcow2
 * one bumps its chain-identity generation), an overlay is made with the
 * image as its backing file and pushed: afterwards writes land in the
 * overlay only (the image's bytes are read back through a plain fd), reads
 * of what was not rewritten come from the image, the image is locked as a
 * backing file (bytes 100 201 203, no write held), the async engine of the
 * new top serves requests, and the chain reopened from the overlay passes
 * its chain-identity check; blockdev_chain_id reads the identity (none on
 * raw, generation 2 after the qcow2 image's first write).  Refusals: an overlay of another file, a
 * read-only disk; each leaves the disk as it was and writable.
 *
 * The same through open files, as a jailed VMM does it (it sees no
 * names): qcow2_create_fd makes the overlay in a file it is given, from
 * the open image, and blockdev_push_overlay_fd switches to it, while the
 * image's name leads nowhere (renamed away for the switch), so neither
 * looked a name up; the chain reopened by name afterwards passes its
 * chain-identity check, so the identity was taken from the open image.
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

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-overlay.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* The lock bytes other open file descriptions hold on `path`. */
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

static void fill(uint8_t *buf, size_t len, uint8_t v)
{
	memset(buf, v, len);
}

static void assert_all(const uint8_t *buf, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != v)
			fail_msg("byte %zu is 0x%02x, expected 0x%02x", i, buf[i], v);
}

static struct blockdev *open_rw(const char *path)
{
	struct blockdev_opts o = { 0 };
	struct blockdev *bd;
	struct error e = { 0 };

	if (blockdev_open(&bd, path, &o, &e))
		fail_msg("open %s: %s", path, e.msg);
	return bd;
}

static void make_overlay(const char *path, const char *backing)
{
	struct qcow2_create_opts o = { .backing_file = backing, .chain_id = true };
	struct error e = { 0 };

	if (qcow2_create(path, &o, &e))
		fail_msg("create %s: %s", path, e.msg);
}

static int done_rc;
static void req_done(struct bd_req *r, int ret)
{
	(void)r;
	done_rc = ret;
}

/* One write through the async path, waited for. */
static void async_write(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	struct iovec iov = { buf, len };
	struct bd_req r = { .op = BD_OP_WRITE, .off = off, .len = len, .iov = &iov, .iovcnt = 1,
			    .done = req_done };

	done_rc = 1;
	assert_int_equal(blockdev_submit(bd, &r), 0);
	while (done_rc == 1)
		assert_true(blockdev_poll(bd, 1) >= 0);
	assert_int_equal(done_rc, 0);
}

static void push_and_check(const char *parent, bool qcow2, bool by_fd)
{
	char ov[160];
	uint8_t *buf = bd_memalign(65536), *chk = bd_memalign(65536);
	struct blockdev_opts o = { 0 };
	struct blockdev *bd = open_rw(parent), *old;
	struct error e = { 0 };
	int fd;

	snprintf(ov, sizeof(ov), "%s.ov.qcow2", parent);
	char id[37];
	uint64_t gen = 0;
	bool current = false;

	fill(buf, 65536, 0xaa);
	async_write(bd, buf, 0, 65536);             /* the old top has an engine */
	/* the identity a snapshot records: raw has none; the qcow2 write bumped it */
	assert_int_equal(blockdev_chain_id(bd, id, &gen, &current), qcow2 ? 0 : -1);
	if (qcow2) {
		assert_int_equal(strlen(id), 36);
		assert_int_equal(gen, 2);
		assert_true(current);
	}
	old = bd;
	if (by_fd) {
		struct qcow2_create_opts co = { .backing_file = parent, .chain_id = true };
		char away[200];
		int ofd = open(ov, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

		assert_true(ofd >= 0);
		snprintf(away, sizeof(away), "%s.away", parent);
		assert_int_equal(rename(parent, away), 0);      /* no name to look up */
		if (qcow2_create_fd(ofd, ov, &co, bd, &e))
			fail_msg("create in fd: %s", e.msg);
		if (blockdev_push_overlay_fd(&bd, ofd, ov, &o, &e))
			fail_msg("push fd: %s", e.msg);
		close(ofd);                                     /* the chain holds its own */
		assert_int_equal(rename(away, parent), 0);
	} else {
		make_overlay(ov, parent);
		assert_int_equal(blockdev_push_overlay(&bd, ov, &o, &e), 0);
	}
	assert_ptr_equal(bd->backing, old);
	assert_string_equal(bd->path, ov);
	assert_int_equal(bd->depth, 0);
	assert_int_equal(old->depth, 1);
	assert_true(old->readonly);
	assert_null(old->aio);
	assert_string_equal(bytes_held(parent), "100 201 203");
	assert_string_equal(bytes_held(ov), "100 101 103 201 203");
	/* a write now goes to the overlay, through the new top's engine */
	fill(buf, 4096, 0xbb);
	async_write(bd, buf, 0, 4096);
	assert_int_equal(blockdev_read(bd, chk, 0, 65536), 0);
	assert_all(chk, 4096, 0xbb);
	assert_all(chk + 4096, 65536 - 4096, 0xaa);
	assert_int_equal(blockdev_write(old, buf, 0, 4096), -EROFS);
	blockdev_close(bd);
	/* the image itself still holds what it held at the switch */
	if (!qcow2) {
		fd = open(parent, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, chk, 65536, 0), 65536);
		close(fd);
		assert_all(chk, 65536, 0xaa);
	} else {
		struct blockdev_opts ro = { .readonly = true };

		assert_int_equal(blockdev_open(&bd, parent, &ro, &e), 0);
		assert_int_equal(blockdev_read(bd, chk, 0, 65536), 0);
		assert_all(chk, 65536, 0xaa);
		blockdev_close(bd);
	}
	/* the chain opens again from the overlay: chain identity intact */
	if (blockdev_open(&bd, ov, &o, &e))
		fail_msg("reopen %s: %s", ov, e.msg);
	assert_int_equal(blockdev_read(bd, chk, 0, 65536), 0);
	assert_all(chk, 4096, 0xbb);
	assert_all(chk + 4096, 65536 - 4096, 0xaa);
	blockdev_close(bd);
	assert_string_equal(bytes_held(parent), "");
	free(buf);
	free(chk);
}

static void test_push_raw(void **state)
{
	char p[128];
	struct error e = { 0 };

	(void)state;
	snprintf(p, sizeof(p), "%s/disk.raw", dir);
	assert_int_equal(raw_create(p, 4 << 20, false, &e), 0);
	push_and_check(p, false, false);
}

static void test_push_raw_fd(void **state)
{
	char p[128];
	struct error e = { 0 };

	(void)state;
	snprintf(p, sizeof(p), "%s/fdisk.raw", dir);
	assert_int_equal(raw_create(p, 4 << 20, false, &e), 0);
	push_and_check(p, false, true);
}

static void test_push_qcow2(void **state)
{
	char p[128];
	struct qcow2_create_opts o = { .size = 4 << 20, .chain_id = true };
	struct error e = { 0 };

	(void)state;
	snprintf(p, sizeof(p), "%s/disk.qcow2", dir);
	assert_int_equal(qcow2_create(p, &o, &e), 0);
	push_and_check(p, true, false);
}

static void test_push_qcow2_fd(void **state)
{
	char p[128];
	struct qcow2_create_opts o = { .size = 4 << 20, .chain_id = true };
	struct error e = { 0 };

	(void)state;
	snprintf(p, sizeof(p), "%s/fdisk.qcow2", dir);
	assert_int_equal(qcow2_create(p, &o, &e), 0);
	push_and_check(p, true, true);
}

static void test_refusals(void **state)
{
	char a[128], b[128], ov[160];
	struct blockdev_opts o = { 0 }, ro = { .readonly = true };
	struct blockdev *bd, *was;
	struct error e = { 0 };
	uint8_t *buf = bd_memalign(4096);

	(void)state;
	snprintf(a, sizeof(a), "%s/a.raw", dir);
	snprintf(b, sizeof(b), "%s/b.raw", dir);
	snprintf(ov, sizeof(ov), "%s/b.ov.qcow2", dir);
	assert_int_equal(raw_create(a, 1 << 20, false, &e), 0);
	assert_int_equal(raw_create(b, 1 << 20, false, &e), 0);
	make_overlay(ov, b);
	bd = was = open_rw(a);
	assert_int_equal(blockdev_push_overlay(&bd, ov, &o, &e), -1);
	assert_non_null(strstr(e.msg, "not an overlay of"));
	assert_ptr_equal(bd, was);
	assert_false(bd->readonly);
	assert_string_equal(bytes_held(a), "100 101 103 201 203");
	fill(buf, 4096, 0x11);
	assert_int_equal(blockdev_write(bd, buf, 0, 4096), 0);
	assert_string_equal(bytes_held(ov), "");            /* the overlay was closed */
	blockdev_close(bd);
	assert_int_equal(blockdev_open(&bd, b, &ro, &e), 0);
	was = bd;
	assert_int_equal(blockdev_push_overlay(&bd, ov, &o, &e), -1);
	assert_non_null(strstr(e.msg, "read-only"));
	assert_ptr_equal(bd, was);
	blockdev_close(bd);
	/* given open: an overlay naming another backing file is refused too */
	bd = was = open_rw(a);
	{
		int ofd = open(ov, O_RDWR | O_CLOEXEC);

		assert_true(ofd >= 0);
		assert_int_equal(blockdev_push_overlay_fd(&bd, ofd, ov, &o, &e), -1);
		assert_non_null(strstr(e.msg, "not an overlay of"));
		assert_ptr_equal(bd, was);
		assert_false(bd->readonly);
		assert_int_equal(blockdev_push_overlay_fd(&bd, -1, ov, &o, &e), -1);
		close(ofd);
	}
	assert_string_equal(bytes_held(ov), "");
	blockdev_close(bd);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_push_raw),
		cmocka_unit_test(test_push_qcow2),
		cmocka_unit_test(test_push_raw_fd),
		cmocka_unit_test(test_push_qcow2_fd),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
