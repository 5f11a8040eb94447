/*
 * test_block_direct.c - images opened with O_DIRECT (blockdev_opts.direct).
 *
 * The kernel refuses O_DIRECT transfers whose buffer, offset or length is
 * off the file's alignment; the block layer must bounce those instead of
 * failing them.  Random programs of reads and writes - aligned, with only
 * the buffers misaligned, with misaligned offsets and lengths, and 512-byte
 * sector I/O - run through the synchronous calls and through the
 * asynchronous path on both engines, on a raw image whose size is not a
 * multiple of the alignment (so the tail is bounced too) and on a qcow2
 * image, and are checked against a flat model, then once more by reading
 * the file back without O_DIRECT.  The file's size must not change.  Also:
 * a file system without O_DIRECT (tmpfs) is refused with a clear message.
 *
 * The images live under /var/tmp, not /tmp, which may be tmpfs; where
 * /var/tmp refuses O_DIRECT too, the tests skip with the reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/qcow2.h"
#include "base/exitcode.h"

#define DISK ((1u << 20) + 1000)	/* a raw size off any alignment */
#define QD 8				/* requests in flight, one stripe each */
#define STRIPE (DISK / QD)
#define MAXLEN 20000

static char dir[64];
static uint64_t seed = 0x5eed;

static uint64_t rnd(void)
{
	seed = seed * 6364136223846793005ull + 1442695040888963407ull;
	return seed >> 17;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/var/tmp/shoal-direct.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* A raw file of DISK bytes of a pattern, mirrored in model. */
static void make_raw(const char *path, uint8_t *model)
{
	FILE *f = fopen(path, "w");

	for (size_t i = 0; i < DISK; i++)
		model[i] = (uint8_t)(i * 2654435761u >> 13);
	assert_non_null(f);
	assert_int_equal(fwrite(model, 1, DISK, f), DISK);
	fclose(f);
}

/* Open path O_DIRECT; false (test skipped) if the file system refuses. */
static bool open_direct(struct blockdev **bd, const char *path)
{
	struct blockdev_opts o = { .direct = true };
	struct error e = { 0 };

	if (blockdev_open(bd, path, &o, &e)) {
		if (strstr(e.msg, "O_DIRECT"))
			return false;
		fail_msg("open %s: %s", path, e.msg);
	}
	assert_true((*bd)->direct);
	assert_true(fcntl((*bd)->fd, F_GETFL) & O_DIRECT);
	assert_true((*bd)->dio_align >= 512);
	assert_int_equal((*bd)->dio_align & ((*bd)->dio_align - 1), 0);
	return true;
}

/* One request shape: where in [lo, lo+span) and how (mis)aligned. */
struct shape {
	uint64_t off, len;
	size_t boff;		/* buffer offset from an aligned base */
	size_t split;		/* first iovec's length, 0 for one iovec */
};

static struct shape shape_pick(uint64_t lo, uint64_t span, uint32_t al)
{
	struct shape s = { 0 };
	uint64_t kind = rnd() % 4;

	if (kind <= 1) {		/* aligned; kind 1: misaligned buffers */
		s.len = al * (1 + rnd() % (MAXLEN / al));
		s.off = lo + (rnd() % (span - s.len)) / al * al;
		s.off = (s.off + al - 1) / al * al;
		s.boff = kind ? 1 + rnd() % 511 : 0;
		s.split = rnd() % 2 ? al * (rnd() % (s.len / al)) : 0;
	} else if (kind == 2) {		/* anything goes */
		s.len = 1 + rnd() % MAXLEN;
		s.off = lo + rnd() % (span - s.len);
		s.boff = rnd() % 4096;
		s.split = rnd() % 2 ? rnd() % s.len : 0;
	} else {			/* guest-style 512-byte sectors */
		s.len = 512 * (1 + rnd() % (MAXLEN / 512));
		s.off = lo + (rnd() % (span - s.len)) / 512 * 512;
		s.off = (s.off + 511) / 512 * 512;
		s.split = rnd() % 2 ? 512 * (rnd() % (s.len / 512)) : 0;
	}
	if (s.off + s.len > lo + span)	/* rounding up may overrun: clip */
		s.len = lo + span - s.off;
	if (s.split >= s.len)
		s.split = 0;
	return s;
}

/* Synchronous reads and writes anywhere, including the unaligned tail. */
static void run_sync(struct blockdev *bd, uint8_t *model, uint64_t size, int n)
{
	uint8_t *base = bd_memalign(MAXLEN + 4096 + 8192);

	for (int i = 0; i < n; i++) {
		struct shape s = shape_pick(0, size, bd->dio_align);
		uint8_t *buf = base + s.boff;

		if (i % 50 == 0) {		/* the very last bytes */
			s.len = 1 + rnd() % 3000;
			s.off = size - s.len;
		}
		if (rnd() % 2) {
			for (uint64_t k = 0; k < s.len; k++)
				buf[k] = (uint8_t)rnd();
			assert_int_equal(blockdev_write(bd, buf, s.off, s.len), 0);
			memcpy(model + s.off, buf, s.len);
		} else {
			assert_int_equal(blockdev_read(bd, buf, s.off, s.len), 0);
			assert_memory_equal(buf, model + s.off, s.len);
		}
	}
	free(base);
}

struct slot {
	struct bd_req req;
	struct iovec iov[2];
	uint8_t *base;
	int done, ret;
};

static void slot_done(struct bd_req *req, int ret)
{
	struct slot *s = req->opaque;

	s->done = 1;
	s->ret = ret;
}

/* QD requests at a time, slot i in stripe i so none overlap. */
static void run_async(struct blockdev *bd, uint8_t *model, uint64_t size, int rounds)
{
	struct slot s[QD];
	uint64_t stripe = size / QD;

	for (int i = 0; i < QD; i++)
		s[i].base = bd_memalign(MAXLEN + 4096 + 8192);
	for (int round = 0; round < rounds; round++) {
		for (int i = 0; i < QD; i++) {
			uint64_t span = i == QD - 1 ? size - i * stripe : stripe;
			struct shape sh = shape_pick(i * stripe, span, bd->dio_align);
			uint8_t *buf = s[i].base + sh.boff;
			bool w = rnd() % 2;

			s[i].done = s[i].ret = 0;
			s[i].iov[0] = (struct iovec){ buf, sh.split ? sh.split : sh.len };
			/* the second buffer sits apart, with its own misalignment */
			s[i].iov[1] = (struct iovec){ buf + sh.split + (sh.boff % 3) * 1024,
						     sh.len - sh.split };
			s[i].req = (struct bd_req){ .op = w ? BD_OP_WRITE : BD_OP_READ,
				.off = sh.off, .len = sh.len, .iov = s[i].iov,
				.iovcnt = sh.split ? 2 : 1, .done = slot_done, .opaque = &s[i] };
			for (int k = 0; w && k < s[i].req.iovcnt; k++) {
				uint8_t *p = s[i].iov[k].iov_base;

				for (size_t j = 0; j < s[i].iov[k].iov_len; j++)
					p[j] = (uint8_t)rnd();
				memcpy(model + sh.off + (k ? sh.split : 0), p, s[i].iov[k].iov_len);
			}
			assert_int_equal(blockdev_submit(bd, &s[i].req), 0);
		}
		while (blockdev_inflight(bd) > 0)
			assert_true(blockdev_poll(bd, 1) >= 0);
		for (int i = 0; i < QD; i++) {
			assert_int_equal(s[i].done, 1);
			assert_int_equal(s[i].ret, 0);	/* never EINVAL */
			for (int k = 0; s[i].req.op == BD_OP_READ && k < s[i].req.iovcnt; k++)
				assert_memory_equal(s[i].iov[k].iov_base,
						    model + s[i].req.off + (k ? s[i].iov[0].iov_len : 0),
						    s[i].iov[k].iov_len);
		}
	}
	for (int i = 0; i < QD; i++)
		free(s[i].base);
}

/* The whole disk read without O_DIRECT equals the model. */
static void check_buffered(const char *path, const uint8_t *model, uint64_t size)
{
	struct blockdev_opts o = { .readonly = true };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t *all = malloc(size);

	assert_int_equal(blockdev_open(&bd, path, &o, &e), 0);
	assert_int_equal(blockdev_read(bd, all, 0, size), 0);
	assert_memory_equal(all, model, size);
	blockdev_close(bd);
	free(all);
}

static void test_raw_sync(void **state)
{
	uint8_t *model = malloc(DISK);
	struct blockdev *bd;
	struct stat st;
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/sync.raw", dir);
	make_raw(path, model);
	if (!open_direct(&bd, path)) {
		free(model);
		skip();
	}
	assert_int_equal(bd->size, DISK);
	run_sync(bd, model, DISK, 600);
	assert_int_equal(blockdev_write_zeroes(bd, 1000, 5000), 0);	/* bounced zeros */
	memset(model + 1000, 0, 5000);
	assert_int_equal(blockdev_flush(bd), 0);
	blockdev_close(bd);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, DISK);	/* tail writes did not grow it */
	check_buffered(path, model, DISK);
	free(model);
}

static void raw_async(bool uring)
{
	uint8_t *model = malloc(DISK);
	struct blockdev *bd;
	struct stat st;
	char path[128];

	snprintf(path, sizeof(path), "%s/async%d.raw", dir, uring);
	make_raw(path, model);
	if (!uring)
		setenv("SHOAL_NO_IO_URING", "1", 1);
	if (!open_direct(&bd, path)) {
		unsetenv("SHOAL_NO_IO_URING");
		free(model);
		skip();
	}
	assert_non_null(strstr(blockdev_engine_name(bd), uring ? "io_uring" : "sync"));
	run_async(bd, model, DISK, 80);
	blockdev_close(bd);
	unsetenv("SHOAL_NO_IO_URING");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, DISK);
	check_buffered(path, model, DISK);
	free(model);
}

static void test_raw_async_uring(void **state)
{
	(void)state;
	raw_async(true);
}

static void test_raw_async_fallback(void **state)
{
	(void)state;
	raw_async(false);
}

/* qcow2: metadata (header, L1/L2, refcounts) and data through one O_DIRECT
 * fd; allocation takes the synchronous path, rewrites the fast path. */
static void test_qcow2(void **state)
{
	struct qcow2_create_opts co = { .size = 1u << 20, .chain_id = true };
	uint64_t size = 1u << 20;
	uint8_t *model = calloc(1, size);
	struct error e = { 0 };
	struct blockdev *bd;
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/d.qcow2", dir);
	assert_int_equal(qcow2_create(path, &co, &e), 0);
	if (!open_direct(&bd, path)) {
		free(model);
		skip();
	}
	run_sync(bd, model, size, 200);
	run_async(bd, model, size, 40);
	blockdev_close(bd);
	check_buffered(path, model, size);
	assert_true(open_direct(&bd, path));	/* and again, reopened direct */
	run_async(bd, model, size, 20);
	blockdev_close(bd);
	check_buffered(path, model, size);
	free(model);
}

/* tmpfs before Linux 6.6 has no O_DIRECT: the open fails, naming the file
 * and the reason.  Where tmpfs has it, the test skips. */
static void test_tmpfs_refused(void **state)
{
	struct blockdev_opts o = { .direct = true };
	struct error e = { 0 };
	struct blockdev *bd;
	struct statfs sf;
	char path[64];
	int fd;

	(void)state;
	if (statfs("/dev/shm", &sf) || sf.f_type != 0x01021994 /* TMPFS_MAGIC */)
		skip();
	snprintf(path, sizeof(path), "/dev/shm/shoal-direct-%d.raw", (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 65536), 0);
	close(fd);
	if (!blockdev_open(&bd, path, &o, &e)) {
		blockdev_close(bd);
		unlink(path);
		print_message("tmpfs here supports O_DIRECT (Linux >= 6.6): nothing to refuse\n");
		skip();
	}
	unlink(path);
	assert_null(bd);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, path));
	assert_non_null(strstr(e.msg, "does not support O_DIRECT"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw_sync),
		cmocka_unit_test(test_raw_async_uring),
		cmocka_unit_test(test_raw_async_fallback),
		cmocka_unit_test(test_qcow2),
		cmocka_unit_test(test_tmpfs_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
