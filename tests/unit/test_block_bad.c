/*
 * test_block_bad.c - hostile and broken images: every one gets a clear
 * error (checked by substring), and none crashes.  Truncated files, absurd
 * header fields, unknown incompatible features, L1/L2/refcount entries
 * pointing outside the file or at metadata, clusters referenced twice,
 * compressed clusters that do not decompress, a full disk during a write,
 * and the "corrupt is a state" rule: reads of intact data go on, writes
 * are refused.
 *
 * The overlap guard (qcow2_overlap.c): entries that make a guest write
 * land on the image's own tables (an L2 entry pointing at its own L2
 * table, at a refcount block, at the snapshot table; a refcount table entry
 * pointing at an L2 table; a live table whose refcount says "free"; an L1
 * table past the end of the file) have the write refused, synchronous or
 * asynchronous, the image marked corrupt, and nothing past the header
 * changed; qemu-img check, where installed, finds no new error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/qcow2.h"

static char dir[64], img[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-bad.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(img, sizeof(img), "%s/t.qcow2", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* A 4 MiB image with 4 KiB clusters (one L2 covers 2 MiB) and data in
 * both halves. */
static void make_image(void)
{
	struct qcow2_create_opts o = { .size = 4u << 20, .cluster_size = 4096, .chain_id = true };
	struct blockdev_opts bo = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[8192];

	assert_int_equal(qcow2_create(img, &o, &e), 0);
	assert_int_equal(blockdev_open(&bd, img, &bo, &e), 0);
	memset(buf, 0xa5, sizeof(buf));
	assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), 0);
	assert_int_equal(blockdev_write(bd, buf, 3u << 20, sizeof(buf)), 0);
	blockdev_close(bd);
}

static void poke(uint64_t off, const void *p, size_t n)
{
	int fd = open(img, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static void poke32(uint64_t off, uint32_t v) { v = htobe32(v); poke(off, &v, 4); }
static void poke64(uint64_t off, uint64_t v) { v = htobe64(v); poke(off, &v, 8); }

static uint64_t peek64(uint64_t off)
{
	uint64_t v = 0;
	int fd = open(img, O_RDONLY);

	assert_int_equal(pread(fd, &v, 8, off), 8);
	close(fd);
	return be64toh(v);
}

/* The file from offset 4096 (past the header cluster) to its end. */
static uint8_t *slurp_body(size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(img, O_RDONLY);

	assert_true(fd >= 0 && !fstat(fd, &st) && st.st_size > 4096);
	*len = st.st_size - 4096;
	b = malloc(*len);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, *len, 4096), (ssize_t)*len);
	close(fd);
	return b;
}

/* One count (`what`: "corruptions", "leaks") from qemu-img check of the
 * image; -1 without qemu-img. */
static long qemu_count(const char *what)
{
	char cmd[256], out[4096] = "", key[64];
	const char *c;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "qemu-img check --output=json %s 2>/dev/null", img);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fread(out, 1, sizeof(out) - 1, p))
		out[0] = 0;
	pclose(p);
	if (!strstr(out, "\"filename\""))
		return -1;
	snprintf(key, sizeof(key), "\"%s\":", what);
	c = strstr(out, key);
	return c ? strtol(c + strlen(key), NULL, 10) : 0;
}

/* The 16-bit big-endian value at `off` must be `want`. */
static void peek16_is(uint64_t off, uint16_t want)
{
	uint16_t v = 0;
	int fd = open(img, O_RDONLY);

	assert_int_equal(pread(fd, &v, 2, off), 2);
	close(fd);
	assert_int_equal(be16toh(v), want);
}

/* Opening must fail with a message containing `needle`. */
static void expect_open_error(const char *needle)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd = NULL;

	if (!blockdev_open(&bd, img, &o, &e))
		fail_msg("opened despite: %s", needle);
	assert_null(bd);
	if (!strstr(e.msg, needle))
		fail_msg("error '%s' lacks '%s'", e.msg, needle);
}

static void test_truncated(void **state)
{
	(void)state;
	make_image();
	assert_int_equal(truncate(img, 50), 0);
	expect_open_error("truncated");
}

static void test_absurd_header(void **state)
{
	(void)state;
	make_image();
	poke32(20, 30);				/* cluster_bits */
	expect_open_error("cluster_bits 30 out of range");
	make_image();
	poke32(36, 0x10000000);			/* l1_size */
	expect_open_error("L1 table of 268435456 entries is too large");
	make_image();
	poke32(36, 0);				/* l1_size too small for the disk */
	expect_open_error("too small for the disk size");
	make_image();
	poke64(48, 4096 + 100);			/* refcount table offset */
	expect_open_error("refcount table offset");
	make_image();
	poke32(56, 0x100000);			/* refcount table clusters */
	expect_open_error("refcount table of 1048576 clusters");
	make_image();
	poke64(24, 1ull << 60);			/* virtual size */
	expect_open_error("too large");
	make_image();
	poke32(4, 7);				/* version */
	expect_open_error("version 7 not supported");
	make_image();
	poke64(8, 4000);			/* backing name offset near the end */
	poke32(16, 500);
	expect_open_error("lies outside the header cluster");
	make_image();
	poke64(8, 200);				/* backing name longer than QEMU's limit */
	poke32(16, 2000);
	expect_open_error("backing file name of 2000 bytes is longer than the limit of 1023");
	make_image();
	poke32(60, 1000000);			/* nb_snapshots */
	poke64(64, 8192);
	expect_open_error("snapshot table");
	make_image();
	poke32(100, 5000);			/* header_length */
	expect_open_error("header_length");
}

static void test_unknown_incompatible(void **state)
{
	(void)state;
	make_image();
	poke64(72, 1ull << 9);
	expect_open_error("unsupported incompatible feature bit 9");
	make_image();
	poke64(72, QCOW2_INCOMPAT_DATA_FILE);
	expect_open_error("external data file");
}

/* Unknown compatible bits are kept; unknown autoclear bits are cleared on
 * the first write. */
static void test_feature_classes(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t b[512] = { 1 };

	(void)state;
	make_image();
	poke64(80, 1ull << 40);
	poke64(88, (1ull << 5) | QCOW2_AUTOCLEAR_SHOAL_CHAIN);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, b, 0, sizeof(b)), 0);
	blockdev_close(bd);
	assert_int_equal(peek64(80), 1ull << 40);
	assert_int_equal(peek64(88), QCOW2_AUTOCLEAR_SHOAL_CHAIN);
}

/* Corrupt metadata: reads of intact data go on; writes are refused. */
static void test_corrupt_is_a_state(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];
	uint64_t l1 = 0;

	(void)state;
	make_image();
	l1 = peek64(40);			/* l1_table_offset */
	poke64(l1 + 8, (1ull << 63) | l1);	/* L1[1] -> the L1 table itself */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	if (blockdev_read(bd, buf, 0, 4096))
		fail_msg("%s", bd->err.msg);
	assert_int_equal(buf[0], 0xa5);
	assert_int_equal(blockdev_read(bd, buf, 3u << 20, 4096), -EIO);
	assert_non_null(strstr(bd->err.msg, "not a valid L2 table offset"));
	assert_int_equal(blockdev_read(bd, buf, 4096, 4096), 0);	/* still reads */
	assert_int_equal(blockdev_write(bd, buf, 0, 512), -EIO);
	assert_non_null(strstr(bd->err.msg, "corrupt"));
	blockdev_close(bd);
	/* the corrupt bit is on disk now: a reopen still refuses writes */
	assert_int_equal(peek64(72) & QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_CORRUPT);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, buf, 0, 512), -EIO);
	blockdev_close(bd);
}

/* Find the L2 entry of guest offset 0 (first L2 table, entry 0). */
static uint64_t l2_table(void)
{
	return peek64(peek64(40)) & QCOW2_L1E_OFFSET_MASK;
}

static void test_l2_outside_file(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];

	(void)state;
	make_image();
	poke64(l2_table(), (1ull << 63) | (1ull << 40));
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_read(bd, buf, 0, 4096), -EIO);
	assert_non_null(strstr(bd->err.msg, "beyond the end of the file"));
	blockdev_close(bd);
}

static void test_l2_points_at_metadata(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];

	(void)state;
	make_image();
	poke64(l2_table(), (1ull << 63) | 4096);	/* the refcount table */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(blockdev_write(bd, buf, 0, 4096), -EIO);	/* no overwrite */
	blockdev_close(bd);
	make_image();
	poke64(peek64(48), 0);			/* refcount table entry 0 -> header */
	poke64(peek64(48), 0x200);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, buf, 1u << 20, 4096), -EIO);
	assert_non_null(strstr(bd->err.msg, "refcount"));
	blockdev_close(bd);
}

/* Two L2 entries sharing a host cluster (refcount 1): check finds it. */
static void test_cross_linked(void **state)
{
	struct blockdev_opts o = { .readonly = true };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;
	uint64_t t = l2_table();

	(void)state;
	make_image();
	t = l2_table();
	poke64(t + 16, peek64(t));		/* guest cluster 2 -> cluster 0's data */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(qcow2_check(bd, false, &r, &e), 1);
	assert_true(r.corruptions > 0);
	blockdev_close(bd);
}

static void test_bad_compressed(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];
	uint64_t t, host;

	(void)state;
	make_image();
	t = l2_table();
	host = peek64(t) & QCOW2_L2E_OFFSET_MASK;
	poke64(t, QCOW2_OFLAG_COMPRESSED | host);	/* 1 sector of garbage (0xa5...) */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_read(bd, buf, 0, 512), -EIO);
	assert_non_null(strstr(bd->err.msg, "does not decompress"));
	assert_int_equal(blockdev_read(bd, buf, 3u << 20, 512), 0);	/* others fine */
	blockdev_close(bd);
}

/* A full disk mid-write: an error, no crash, and a consistent image. */
static void test_disk_full(void **state)
{
	struct blockdev_opts o = { 0 };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;
	struct rlimit old, lim;
	static uint8_t buf[1u << 20];
	int rc = 0;

	(void)state;
	make_image();
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 300 * 1024;
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	setrlimit(RLIMIT_FSIZE, &lim);
	memset(buf, 0x3c, sizeof(buf));
	for (int i = 0; i < 4 && !rc; i++)
		rc = blockdev_write(bd, buf, (uint64_t)i << 20, sizeof(buf));
	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(bd->err.msg, "t.qcow2"));
	setrlimit(RLIMIT_FSIZE, &old);
	assert_int_equal(blockdev_flush(bd), 0);
	assert_int_equal(qcow2_check(bd, false, &r, &e) >= 0, 1);
	assert_int_equal(r.corruptions, 0);	/* leaks allowed */
	blockdev_close(bd);
}

static void async_done(struct bd_req *req, int ret)
{
	req->result = ret;
	*(int *)req->opaque = 1;
}

/* Write one cluster at guest `off`, synchronously or through the async
 * engine; the result. */
static int write_one(struct blockdev *bd, uint64_t off, bool async)
{
	static uint8_t buf[4096];
	struct iovec iov = { buf, sizeof(buf) };
	struct bd_req req = { .op = BD_OP_WRITE, .off = off, .len = sizeof(buf),
			      .iov = &iov, .iovcnt = 1 };
	int done = 0;

	if (!async) {
		memset(buf, 0x77, sizeof(buf));
		return blockdev_write(bd, buf, off, sizeof(buf));
	}
	/* The fast path starts after the first change of the open (the chain
	 * generation bump): rewrite bytes the image already holds. */
	memset(buf, 0xa5, sizeof(buf));
	if (blockdev_write(bd, buf, 3u << 20, sizeof(buf)))
		return -EINVAL;
	memset(buf, 0x77, sizeof(buf));
	req.done = async_done;
	req.opaque = &done;
	if (blockdev_submit(bd, &req))
		return -EINVAL;
	while (blockdev_poll(bd, 1) >= 0 && !done)
		;
	return done ? req.result : -ETIME;
}

/* A write at guest `off` must be refused with a message naming `needle`,
 * the image marked corrupt, nothing after the header cluster changed but
 * the cluster at file offset `except` (if not 0), and qemu-img check must
 * see no more corruption than before. */
static void expect_write_refused(uint64_t off, bool async, const char *needle,
				 uint64_t except)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	size_t n0, n1;
	uint8_t *before = slurp_body(&n0), *after;
	long qc = qemu_count("corruptions");
	int r;

	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	r = write_one(bd, off, async);
	if (r != -EIO || !strstr(bd->err.msg, needle))
		fail_msg("write at 0x%llx: %d '%s', wanted -EIO and '%s'",
			 (unsigned long long)off, r, bd->err.msg, needle);
	blockdev_close(bd);
	after = slurp_body(&n1);
	assert_int_equal(n0, n1);
	if (except)
		memcpy(after + except - 4096, before + except - 4096, 4096);
	assert_memory_equal(before, after, n0);
	assert_int_equal(peek64(72) & QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_CORRUPT);
	if (qc >= 0)
		assert_true(qemu_count("corruptions") <= qc);
	free(before);
	free(after);
}

/* An L2 entry (COPIED, so written in place) pointing at its own L2 table,
 * at the other L2 table, at a refcount block: the guest's bytes would
 * overwrite the table. */
static void test_overlap_l2_entry(void **state)
{
	static const struct { const char *what; int target; bool async; } cases[] = {
		{ "active L2 table", 0, false }, { "active L2 table", 0, true },
		{ "active L2 table", 1, false }, { "refcount block", 2, false },
		{ "refcount block", 2, true },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t t, other, target;

		make_image();
		t = l2_table();
		other = peek64(peek64(40) + 8) & QCOW2_L1E_OFFSET_MASK;
		target = cases[i].target == 0 ? t : cases[i].target == 1 ? other :
			 peek64(peek64(48)) & QCOW2_REFT_OFFSET_MASK;
		poke64(t, QCOW2_OFLAG_COPIED | target);
		expect_write_refused(0, cases[i].async, cases[i].what, 0);
	}
}

/* A refcount table entry pointing at an L2 table: the first allocation
 * needs that "refcount block", and is refused before it changes it. */
static void test_overlap_refblock_is_l2(void **state)
{
	(void)state;
	make_image();
	poke64(peek64(48), l2_table());
	expect_write_refused(1u << 20, false, "refusing to use the active L2 table", 0);
}

/* A live L2 table whose refcount says "free": the allocator hands it out
 * for guest data, and the write of that data is refused.  (The refcount
 * the allocation set, 1, reaches the disk: that is the table's true count.) */
static void test_overlap_alloc_on_table(void **state)
{
	uint64_t t, rb;
	uint16_t zero = 0;

	(void)state;
	make_image();
	t = l2_table();
	rb = peek64(peek64(48)) & QCOW2_REFT_OFFSET_MASK;
	poke(rb + 2 * (t / 4096), &zero, 2);	/* 16-bit refcounts */
	expect_write_refused(1u << 20, false, "preventing a write of guest data", rb);
	peek16_is(rb + 2 * (t / 4096), 1);
}

/* Snapshot metadata is guarded too: the snapshot table and a snapshot's
 * L1 table. */
static void test_overlap_snapshot_tables(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	struct qcow2 *q;
	uint64_t targets[2];
	const char *what[2] = { "snapshot table", "snapshot L1 table" };
	uint8_t buf[4096] = { 1 };

	(void)state;
	for (int i = 0; i < 2; i++) {
		make_image();
		assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
		assert_int_equal(qcow2_snapshot_create(bd, "s", &e), 0);
		assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), 0);	/* COPIED again */
		q = bd->priv;
		targets[0] = q->snap_offset;
		targets[1] = q->snaps[0].l1_offset;
		blockdev_close(bd);
		poke64(l2_table(), QCOW2_OFLAG_COPIED | targets[i]);
		expect_write_refused(0, false, what[i], 0);
	}
}

/* Discarding a cluster whose entry points at an L2 table must not queue a
 * decrement of the table's refcount (which would free it for reuse). */
static void test_overlap_release(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint64_t t, rb;

	(void)state;
	make_image();
	t = l2_table();
	rb = peek64(peek64(48)) & QCOW2_REFT_OFFSET_MASK;
	poke64(t, t);				/* not COPIED: discard releases it */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_discard(bd, 0, 4096), -EIO);
	assert_non_null(strstr(bd->err.msg, "overlaps the active L2 table"));
	blockdev_close(bd);
	peek16_is(rb + 2 * (t / 4096), 1);
	assert_int_equal(peek64(t), t);
}

/* An L1 table past the end of the file: the image opens corrupt, reads see
 * zeros, a write is refused and the file keeps its size (it used to grow
 * to 1 TiB, sparse). */
static void test_l1_past_end(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	struct stat st0, st1;
	uint8_t buf[4096];

	(void)state;
	make_image();
	poke64(40, 1ull << 40);			/* l1_table_offset */
	assert_int_equal(stat(img, &st0), 0);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_read(bd, buf, 0, sizeof(buf)), 0);
	assert_int_equal(buf[0], 0);
	assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), -EIO);
	assert_non_null(strstr(bd->err.msg, "beyond the end of the file"));
	assert_int_equal(blockdev_flush(bd), 0);
	blockdev_close(bd);
	assert_int_equal(stat(img, &st1), 0);
	assert_int_equal(st0.st_size, st1.st_size);
	assert_int_equal(peek64(72) & QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_CORRUPT);
}

/* A write through a refcount block or to a data cluster past the end of
 * the file is refused, and the file keeps its size (each used to stretch
 * the file, sparse, to wherever the entry pointed). */
static void test_tables_past_end(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	struct stat st0, st1;
	uint8_t buf[4096] = { 1 };

	(void)state;
	for (int i = 0; i < 2; i++) {
		make_image();
		if (i == 0)
			poke64(peek64(48), 1ull << 40);		/* refcount table entry 0 */
		else
			poke64(l2_table(), QCOW2_OFLAG_COPIED | (1ull << 40));
		assert_int_equal(stat(img, &st0), 0);
		assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
		assert_int_equal(blockdev_write(bd, buf, i ? 0 : 1u << 20, sizeof(buf)), -EIO);
		assert_non_null(strstr(bd->err.msg, "beyond the end of the file"));
		blockdev_close(bd);
		assert_int_equal(stat(img, &st1), 0);
		assert_int_equal(st0.st_size, st1.st_size);
	}
}

/* A refcount table far smaller than the file (512-byte clusters: one table
 * cluster covers 8 MiB; the file is 64 MiB) must grow to cover the blocks
 * it puts past the end of the file.  The snapshot's refcount walk meets a
 * data cluster no block covers and grows the table; it used to write past
 * the new table in memory (the sanitizer build sees the overflow). */
static void test_reftable_grows_past_file(void **state)
{
	struct qcow2_create_opts co = { .size = 1u << 20, .cluster_size = 512 };
	struct blockdev_opts o = { 0 };
	struct qcow2_check_result cr;
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[512] = { 1 };

	(void)state;
	assert_int_equal(qcow2_create(img, &co, &e), 0);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), 0);
	blockdev_close(bd);
	assert_int_equal(truncate(img, 64u << 20), 0);
	poke64(l2_table() + 8, 8u << 20);	/* guest 512 -> 8 MiB, refcount 0 */
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	if (qcow2_snapshot_create(bd, "s", &e))
		fail_msg("%s", e.msg);
	assert_true(((struct qcow2 *)bd->priv)->reftable_size > (64u << 20) / 512 / 256);
	assert_int_equal(qcow2_check(bd, false, &cr, &e), 1);	/* the poked entry */
	blockdev_close(bd);
}

/* A snapshot that would overflow a refcount is refused with a clear
 * message (status 66), and leaves the image as it was: not corrupt, no
 * leak, no snapshot, still writable.  1-bit refcounts overflow at the first
 * cluster; with 2-bit ones the walk overflows after changing two counts,
 * which must be undone. */
static void snap_refused(struct blockdev *bd, bool apply, const char *name)
{
	struct error e = { 0 };
	struct qcow2_check_result cr;
	struct qcow2 *q = bd->priv;
	uint32_t nb = q->nb_snaps;
	int r = apply ? qcow2_snapshot_apply(bd, name, &e) : qcow2_snapshot_create(bd, name, &e);

	assert_int_not_equal(r, 0);
	if (e.status != 66 || !strstr(e.msg, "refcounts can count"))
		fail_msg("status %d: %s", e.status, e.msg);
	assert_false(q->corrupt);
	assert_int_equal(q->nb_snaps, nb);
	assert_int_equal(qcow2_check(bd, false, &cr, &e), 0);
	assert_int_equal(cr.corruptions + cr.leaks, 0);
}

static void test_snapshot_refcount_overflow(void **state)
{
	struct qcow2_create_opts co = { .size = 4u << 20, .cluster_size = 4096,
					.refcount_bits = 1, .chain_id = true };
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];
	uint64_t rc;

	(void)state;
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(qcow2_create(img, &co, &e), 0);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), 0);
	snap_refused(bd, false, "s1");
	assert_int_equal(blockdev_write(bd, buf, 4096, sizeof(buf)), 0);
	blockdev_close(bd);
	assert_int_equal(peek64(72) & QCOW2_INCOMPAT_CORRUPT, 0);
	if (qemu_count("leaks") >= 0)
		assert_int_equal(qemu_count("corruptions") + qemu_count("leaks"), 0);

	co.refcount_bits = 2;			/* counts up to 3 */
	assert_int_equal(qcow2_create(img, &co, &e), 0);
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(blockdev_write(bd, buf, 3u << 20, sizeof(buf)), 0);
	assert_int_equal(qcow2_snapshot_create(bd, "s1", &e), 0);
	assert_int_equal(qcow2_snapshot_create(bd, "s2", &e), 0);	/* 3M: count 3 */
	assert_int_equal(blockdev_write(bd, buf, 0, sizeof(buf)), 0);	/* count 1 */
	snap_refused(bd, false, "s3");		/* 0 and its L2 raised, 3M overflows */
	assert_int_equal(qcow2_refcount_get(bd->priv, l2_table() / 4096, &rc), 0);
	assert_int_equal(rc, 1);
	snap_refused(bd, true, "s1");
	assert_int_equal(blockdev_write(bd, buf, 4096, sizeof(buf)), 0);
	blockdev_close(bd);
	if (qemu_count("leaks") >= 0)
		assert_int_equal(qemu_count("corruptions") + qemu_count("leaks"), 0);
}

/* One damaged entry, as qemu-img check sees it: check counts exactly one
 * corruption and describes it (never "first: " with nothing after it). */
static void expect_check_finds(const char *needle, long qemu_wants)
{
	struct blockdev_opts o = { .readonly = true };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;

	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(qcow2_check(bd, false, &r, &e), 1);
	blockdev_close(bd);
	if (r.corruptions != 1 || !strstr(r.first_problem, needle))
		fail_msg("%llu corruptions, first '%s'; wanted 1, '%s'",
			 (unsigned long long)r.corruptions, r.first_problem, needle);
	if (qemu_count("corruptions") >= 0)
		assert_int_equal(qemu_count("corruptions"), qemu_wants);
}

/* `check -r all`: what it can repair it repairs; reserved bits stay (as
 * QEMU leaves them), so the count stays 1. */
static void expect_repair_leaves(uint64_t corruptions)
{
	struct blockdev_opts o = { 0 };
	struct qcow2_check_result r;
	struct error e = { 0 };
	struct blockdev *bd;

	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	assert_int_equal(qcow2_check(bd, true, &r, &e), corruptions ? 1 : 0);
	assert_int_equal(r.corruptions, corruptions);
	blockdev_close(bd);
}

/* Reserved bits in L1 and L2 entries, COPIED on a compressed cluster, a
 * COPIED flag that disagrees with the refcount: what qemu-img check flags,
 * check flags too, with a sentence each. */
static void test_check_entry_flags(void **state)
{
	struct blockdev_opts o = { 0 };
	struct error e = { 0 };
	struct blockdev *bd;
	uint8_t buf[4096];
	uint64_t l1;

	(void)state;
	make_image();
	l1 = peek64(40);
	poke64(l1, peek64(l1) | (1ull << 56));
	expect_check_finds("L1 entry 0 (0x81", 1);
	expect_repair_leaves(1);
	make_image();
	poke64(l2_table(), peek64(l2_table()) | (1ull << 57));
	expect_check_finds("has reserved bits set", 1);
	make_image();
	poke64(l2_table(), peek64(l2_table()) & ~QCOW2_OFLAG_COPIED);
	expect_check_finds("L2 entry for guest offset 0x0: the COPIED flag is clear", 1);
	expect_repair_leaves(0);
	make_image();
	assert_int_equal(blockdev_open(&bd, img, &o, &e), 0);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(qcow2_write_compressed(bd->priv, 1u << 20, buf), 0);
	blockdev_close(bd);
	poke64(l2_table() + 8 * 256, peek64(l2_table() + 8 * 256) | QCOW2_OFLAG_COPIED);
	expect_check_finds("COPIED flag is set, which compressed clusters never have", 1);
	expect_repair_leaves(0);
	if (qemu_count("corruptions") >= 0)
		assert_int_equal(qemu_count("corruptions"), 0);
}

/* A FIFO or a directory as a backing file (or as the image) is refused at
 * once: a FIFO used to hang the open, a directory read as an empty disk. */
static void test_not_a_file(void **state)
{
	struct qcow2_create_opts co = { .size = 1u << 20, .cluster_size = 4096,
					.backing_file = "b", .backing_format = "raw" };
	struct error e = { 0 };
	char b[160];

	(void)state;
	snprintf(b, sizeof(b), "%s/b", dir);
	assert_int_equal(raw_create(b, 1u << 20, false, &e), 0);
	assert_int_equal(qcow2_create(img, &co, &e), 0);
	alarm(10);				/* a hang is a failure, not a stuck suite */
	assert_int_equal(unlink(b) || mkfifo(b, 0600), 0);
	expect_open_error("b: not a regular file or a block device (a FIFO)");
	assert_int_equal(unlink(b) || mkdir(b, 0700), 0);
	expect_open_error("b: not a regular file or a block device (a directory)");
	assert_int_equal(unlink(img) || mkfifo(img, 0600), 0);
	expect_open_error("t.qcow2: not a regular file or a block device (a FIFO)");
	alarm(0);
	unlink(img);
	rmdir(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_absurd_header),
		cmocka_unit_test(test_unknown_incompatible),
		cmocka_unit_test(test_feature_classes),
		cmocka_unit_test(test_corrupt_is_a_state),
		cmocka_unit_test(test_l2_outside_file),
		cmocka_unit_test(test_l2_points_at_metadata),
		cmocka_unit_test(test_cross_linked),
		cmocka_unit_test(test_bad_compressed),
		cmocka_unit_test(test_disk_full),
		cmocka_unit_test(test_overlap_l2_entry),
		cmocka_unit_test(test_overlap_refblock_is_l2),
		cmocka_unit_test(test_overlap_alloc_on_table),
		cmocka_unit_test(test_overlap_snapshot_tables),
		cmocka_unit_test(test_overlap_release),
		cmocka_unit_test(test_l1_past_end),
		cmocka_unit_test(test_tables_past_end),
		cmocka_unit_test(test_reftable_grows_past_file),
		cmocka_unit_test(test_snapshot_refcount_overflow),
		cmocka_unit_test(test_check_entry_flags),
		cmocka_unit_test(test_not_a_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
