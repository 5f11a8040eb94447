/*
 * test_block_aio.c - the asynchronous request path (blockdev_submit /
 * blockdev_poll) on both engines, io_uring and the synchronous fallback:
 * a random mix of requests at queue depth 16 on a raw image and on a qcow2
 * overlay (fast-path data, slow-path allocation, reads through to the
 * backing file) must leave exactly what the same requests done
 * synchronously leave.  Also: the engine is reported, the fallback is
 * chosen when io_uring is disabled, and an image left dirty by a
 * lazy-refcount writer is repaired on a read-write open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <endian.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/qcow2.h"

#define DISK (4u << 20)
#define QD 16

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-aio.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

struct slot {
	struct bd_req req;
	struct iovec iov[2];
	uint8_t buf[2][8192];
	int done, ret;
};

static void slot_done(struct bd_req *req, int ret)
{
	struct slot *s = req->opaque;

	s->done = 1;
	s->ret = ret;
}

/* Make base (random raw), a qcow2 overlay over it and a model copy. */
static void make_chain(const char *top, uint8_t *model)
{
	struct qcow2_create_opts o = { .cluster_size = 16384, .backing_file = "base.raw",
				       .backing_format = "raw", .chain_id = true };
	char base[128];
	struct error e = { 0 };
	FILE *f;

	for (size_t i = 0; i < DISK; i++)
		model[i] = (uint8_t)(i * 2654435761u >> 13);
	snprintf(base, sizeof(base), "%s/base.raw", dir);
	f = fopen(base, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(model, 1, DISK, f), DISK);
	fclose(f);
	assert_int_equal(qcow2_create(top, &o, &e), 0);
}

/* QD requests at a time: writes (two iovecs), reads checked against the
 * model as it was when the batch started (no overlapping requests). */
static void run_async(const char *path, uint8_t *model, bool uring, uint64_t seed)
{
	struct blockdev_opts o = { .no_aio = !uring };
	struct error e = { 0 };
	struct blockdev *bd;
	struct slot *s = calloc(QD, sizeof(*s));

	if (!uring)
		setenv("SHOAL_NO_IO_URING", "1", 1);
	assert_int_equal(blockdev_open(&bd, path, &o, &e), 0);
	assert_non_null(strstr(blockdev_engine_name(bd), uring ? "io_uring" : "sync"));
	for (int round = 0; round < 60; round++) {
		for (int i = 0; i < QD; i++) {
			/* slot i owns the 256 KiB stripe i: requests never overlap */
			uint64_t off = (uint64_t)i * (DISK / QD) + (seed = seed * 6364136223846793005ull + 1442695040888963407ull) % (DISK / QD - 16384);
			bool w = (seed >> 40) & 1;
			size_t l0 = 1 + (seed >> 20) % 8192, l1 = (seed >> 33) % 8192;

			s[i] = (struct slot){ 0 };
			s[i].iov[0] = (struct iovec){ s[i].buf[0], l0 };
			s[i].iov[1] = (struct iovec){ s[i].buf[1], l1 };
			s[i].req = (struct bd_req){ .op = w ? BD_OP_WRITE : BD_OP_READ, .off = off,
				.len = l0 + l1, .iov = s[i].iov, .iovcnt = l1 ? 2 : 1,
				.done = slot_done, .opaque = &s[i] };
			if (!l1)
				s[i].req.len = l0;
			if (w) {
				memset(s[i].buf[0], round + i + 1, l0);
				memset(s[i].buf[1], round + i + 2, l1);
				memcpy(model + off, s[i].buf[0], l0);
				memcpy(model + off + l0, s[i].buf[1], l1);
			}
			assert_int_equal(blockdev_submit(bd, &s[i].req), 0);
		}
		while (blockdev_inflight(bd) > 0)
			assert_true(blockdev_poll(bd, 1) >= 0);
		for (int i = 0; i < QD; i++) {
			assert_int_equal(s[i].done, 1);
			assert_int_equal(s[i].ret, 0);
			if (s[i].req.op == BD_OP_READ) {
				assert_memory_equal(s[i].buf[0], model + s[i].req.off, s[i].iov[0].iov_len);
				assert_memory_equal(s[i].buf[1], model + s[i].req.off + s[i].iov[0].iov_len,
						    s[i].iov[1].iov_len);
			}
		}
		if (round % 10 == 9) {		/* a flush through the async path too */
			struct slot f = { 0 };
			f.req = (struct bd_req){ .op = BD_OP_FLUSH, .done = slot_done, .opaque = &f };
			assert_int_equal(blockdev_submit(bd, &f.req), 0);
			while (!f.done)
				assert_true(blockdev_poll(bd, 1) >= 0);
			assert_int_equal(f.ret, 0);
		}
	}
	blockdev_close(bd);
	unsetenv("SHOAL_NO_IO_URING");
	free(s);
}

static void verify(const char *path, const uint8_t *model)
{
	struct blockdev_opts o = { .readonly = true };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t *buf = malloc(DISK);

	assert_int_equal(blockdev_open(&bd, path, &o, &e), 0);
	assert_int_equal(blockdev_read(bd, buf, 0, DISK), 0);
	assert_memory_equal(buf, model, DISK);
	if (bd->format == BD_FMT_QCOW2) {
		assert_int_equal(qcow2_check(bd, false, &r, &e), 0);
	}
	blockdev_close(bd);
	free(buf);
}

static void test_async_qcow2(void **state)
{
	uint8_t *model = malloc(DISK);
	char top[128];

	(void)state;
	for (int uring = 0; uring < 2; uring++) {
		snprintf(top, sizeof(top), "%s/top%d.qcow2", dir, uring);
		make_chain(top, model);
		run_async(top, model, uring, 77 + uring);
		run_async(top, model, uring, 99 + uring);	/* now mostly in place */
		verify(top, model);
	}
	free(model);
}

static void test_async_raw(void **state)
{
	uint8_t *model = malloc(DISK);
	char path[128];
	struct error e = { 0 };

	(void)state;
	snprintf(path, sizeof(path), "%s/r.raw", dir);
	memset(model, 0, DISK);
	assert_int_equal(raw_create(path, DISK, false, &e), 0);
	run_async(path, model, true, 5);
	run_async(path, model, false, 6);
	verify(path, model);
	free(model);
}

/* An image with the dirty bit (lazy refcounts) and a leaked cluster is
 * repaired when opened read-write. */
static void test_dirty_repair(void **state)
{
	struct qcow2_create_opts o = { .size = 1u << 20, .lazy_refcounts = true, .chain_id = true };
	struct blockdev_opts bo = { 0 };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;
	char path[128];
	uint8_t b[4096] = { 9 };
	uint64_t v;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/dirty.qcow2", dir);
	assert_int_equal(qcow2_create(path, &o, &e), 0);
	assert_int_equal(blockdev_open(&bd, path, &bo, &e), 0);
	assert_int_equal(blockdev_write(bd, b, 0, sizeof(b)), 0);
	assert_int_equal(qcow2_alloc_clusters(bd->priv, 1) > 0, 1);	/* a leak */
	blockdev_close(bd);
	fd = open(path, O_RDWR);
	v = htobe64(QCOW2_INCOMPAT_DIRTY);
	assert_int_equal(pwrite(fd, &v, 8, 72), 8);
	close(fd);
	assert_int_equal(blockdev_open(&bd, path, &bo, &e), 0);	/* repairs */
	assert_int_equal(qcow2_check(bd, false, &r, &e), 0);
	assert_int_equal(r.leaks, 0);
	assert_int_equal(((struct qcow2 *)bd->priv)->incompat & QCOW2_INCOMPAT_DIRTY, 0);
	assert_int_equal(blockdev_read(bd, b, 0, sizeof(b)), 0);
	assert_int_equal(b[0], 9);
	blockdev_close(bd);
}

/* The event fd wakes an epoll/poll loop when a completion is waiting. */
static void test_event_fd(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	char path[128];
	static uint8_t buf[4096];

	(void)state;
	snprintf(path, sizeof(path), "%s/ev.raw", dir);
	assert_int_equal(raw_create(path, 1u << 20, false, &e), 0);
	for (int uring = 0; uring < 2; uring++) {
		struct slot s = { 0 };
		struct pollfd p;

		if (!uring)
			setenv("SHOAL_NO_IO_URING", "1", 1);
		assert_int_equal(blockdev_open(&bd, path, &o, &e), 0);
		p = (struct pollfd){ .fd = blockdev_event_fd(bd), .events = POLLIN };
		assert_true(p.fd >= 0);
		s.iov[0] = (struct iovec){ buf, sizeof(buf) };
		s.req = (struct bd_req){ .op = BD_OP_READ, .off = 4096, .len = sizeof(buf),
					 .iov = s.iov, .iovcnt = 1, .done = slot_done, .opaque = &s };
		assert_int_equal(blockdev_submit(bd, &s.req), 0);
		if (uring)	/* io_uring needs the SQE handed over; poll(0) does it */
			assert_true(blockdev_poll(bd, 0) >= 0);
		assert_int_equal(poll(&p, 1, 2000), 1);
		while (!s.done)
			assert_true(blockdev_poll(bd, 0) >= 0);
		assert_int_equal(s.ret, 0);
		blockdev_close(bd);
		unsetenv("SHOAL_NO_IO_URING");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_async_qcow2),
		cmocka_unit_test(test_async_raw),
		cmocka_unit_test(test_dirty_repair),
		cmocka_unit_test(test_event_fd),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
