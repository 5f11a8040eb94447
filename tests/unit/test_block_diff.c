/*
 * test_block_diff.c - differential tests of the qcow2 code against a naive
 * reference model (style guide, practice 10).
 *
 * The model is a flat byte array the size of the disk.  A seeded random
 * program of writes, zero writes, discards, flushes, reopens and internal
 * snapshots runs against both; every read is compared byte for byte with
 * the model, and at the end the whole disk is compared, the image is
 * checked (no corruptions, no leaks) and - when qemu-img is installed -
 * checked by QEMU too.  Configurations cover v2/v3, 4 KiB to 2 MiB
 * clusters, extended L2 entries, refcount widths, tiny caches (constant
 * eviction), and backing chains (qcow2 over raw, qcow2 over qcow2).
 *
 * One test deliberately breaks the model to prove the comparison can fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/qcow2.h"

struct cfg {
	const char *name;
	uint32_t version, cluster, refbits;
	bool ext_l2;
	int backing;		/* 0 none, 1 raw base, 2 qcow2 base over raw */
	uint64_t size;
	uint64_t cache;
	int ops;
	bool snapshots;
};

struct ctx {
	char dir[64], top[96], base[96], mid[96];
	uint8_t *model;
	uint8_t *buf;
	struct blockdev *bd;
	const struct cfg *c;
	uint64_t seed;
	bool break_model;	/* the deliberate fault */
	int mismatches;
	int nsnap, snap_seq;
	char snap_name[4][16];
	uint8_t *snap_model[4];	/* the model at each snapshot */
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill_random(uint8_t *p, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rnd(s) >> 24) | 1;	/* never all-zero by accident */
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

static void reopen(struct ctx *x)
{
	struct blockdev_opts o = { .cache_bytes = x->c->cache };
	struct error e = { 0 };

	blockdev_close(x->bd);
	x->bd = NULL;
	if (blockdev_open(&x->bd, x->top, &o, &e))
		fail_msg("reopen: %s", e.msg);
}

/* Build the chain for this configuration and fill the model from it. */
static void setup_chain(struct ctx *x)
{
	struct qcow2_create_opts q = { .size = x->c->size, .version = x->c->version,
		.cluster_size = x->c->cluster, .refcount_bits = x->c->refbits,
		.ext_l2 = x->c->ext_l2, .chain_id = true };
	struct error e = { 0 };
	uint64_t s = x->seed * 7 + 1;

	snprintf(x->dir, sizeof(x->dir), "/tmp/shoal-diff.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->top, sizeof(x->top), "%s/top.qcow2", x->dir);
	snprintf(x->base, sizeof(x->base), "%s/base.raw", x->dir);
	snprintf(x->mid, sizeof(x->mid), "%s/mid.qcow2", x->dir);
	memset(x->model, 0, x->c->size);
	if (x->c->backing) {
		/* base: raw, 3/4 of the disk (the rest reads as zeros), random data */
		uint64_t bsz = x->c->size / 4 * 3;
		FILE *f = fopen(x->base, "w");
		assert_non_null(f);
		fill_random(x->model, bsz, &s);
		assert_int_equal(fwrite(x->model, 1, bsz, f), bsz);
		fclose(f);
		q.backing_file = "base.raw";
		q.backing_format = "raw";
	}
	if (x->c->backing == 2) {
		struct blockdev *m;
		struct blockdev_opts o = { 0 };
		assert_int_equal(qcow2_create(x->mid, &q, &e), 0);
		assert_int_equal(blockdev_open(&m, x->mid, &o, &e), 0);
		for (int i = 0; i < 8; i++) {	/* a few clusters in the middle layer */
			uint64_t off = rnd(&s) % (x->c->size - 8192), len = 1 + rnd(&s) % 8192;
			fill_random(x->buf, len, &s);
			assert_int_equal(blockdev_write(m, x->buf, off, len), 0);
			memcpy(x->model + off, x->buf, len);
		}
		blockdev_close(m);
		q.backing_file = "mid.qcow2";
		q.backing_format = "qcow2";
	}
	if (qcow2_create(x->top, &q, &e))
		fail_msg("%s: create %s: %s", x->c->name, x->top, e.msg);
	reopen(x);
}

/* A random (offset, length), biased towards cluster boundaries. */
static void pick(struct ctx *x, uint64_t *off, uint64_t *len)
{
	uint64_t cs = x->c->cluster, sz = x->c->size, r = rnd(&x->seed) % 4;

	if (r == 0) {		/* whole clusters */
		*off = (rnd(&x->seed) % (sz / cs)) * cs;
		*len = cs * (1 + rnd(&x->seed) % 3);
	} else if (r == 1) {	/* small, unaligned */
		*off = rnd(&x->seed) % sz;
		*len = 1 + rnd(&x->seed) % 700;
	} else if (r == 2) {	/* straddling a cluster boundary */
		*off = (1 + rnd(&x->seed) % (sz / cs - 1)) * cs - 1 - rnd(&x->seed) % 512;
		*len = 2 + rnd(&x->seed) % (cs + 1024);
	} else {		/* anything */
		*off = rnd(&x->seed) % sz;
		*len = 1 + rnd(&x->seed) % (3 * cs);
	}
	if (*off >= sz)
		*off = sz - 1;
	if (*len > sz - *off)
		*len = sz - *off;
	if (*len > 4u << 20)
		*len = 4u << 20;
}

static void check_read(struct ctx *x, uint64_t off, uint64_t len, int step)
{
	assert_int_equal(blockdev_read(x->bd, x->buf, off, len), 0);
	if (memcmp(x->buf, x->model + off, len)) {
		uint64_t i = 0;

		x->mismatches++;
		if (x->break_model)
			return;
		while (x->buf[i] == x->model[off + i])
			i++;
		fail_msg("%s seed %llu step %d: read %llu+%llu differs at %llu (got %02x want %02x)",
			 x->c->name, (unsigned long long)x->seed, step, (unsigned long long)off,
			 (unsigned long long)len, (unsigned long long)(off + i), x->buf[i],
			 x->model[off + i]);
	}
}

/* Create, apply or delete an internal snapshot, keeping model copies. */
static void snapshot_op(struct ctx *x)
{
	struct error e = { 0 };
	uint64_t r = rnd(&x->seed) % 3;
	int i;

	if (x->nsnap < 4 && (r == 0 || !x->nsnap)) {
		i = x->nsnap++;
		snprintf(x->snap_name[i], sizeof(x->snap_name[i]), "s%d", ++x->snap_seq);
		x->snap_model[i] = malloc(x->c->size);
		memcpy(x->snap_model[i], x->model, x->c->size);
		if (qcow2_snapshot_create(x->bd, x->snap_name[i], &e))
			fail_msg("snapshot create: %s", e.msg);
		return;
	}
	i = rnd(&x->seed) % x->nsnap;
	if (r == 1) {
		if (qcow2_snapshot_apply(x->bd, x->snap_name[i], &e))
			fail_msg("snapshot apply: %s", e.msg);
		memcpy(x->model, x->snap_model[i], x->c->size);
		return;
	}
	if (qcow2_snapshot_delete(x->bd, x->snap_name[i], &e))
		fail_msg("snapshot delete: %s", e.msg);
	free(x->snap_model[i]);
	x->nsnap--;
	x->snap_model[i] = x->snap_model[x->nsnap];
	memcpy(x->snap_name[i], x->snap_name[x->nsnap], sizeof(x->snap_name[i]));
}

/* Every remaining snapshot still reads as it was when taken. */
static void check_snapshots(struct ctx *x)
{
	struct blockdev_opts o = { .readonly = true };
	struct error e = { 0 };
	struct blockdev *bd;

	for (int i = 0; i < x->nsnap; i++) {
		assert_int_equal(blockdev_open(&bd, x->top, &o, &e), 0);
		if (qcow2_snapshot_view(bd, x->snap_name[i], &e))
			fail_msg("snapshot view: %s", e.msg);
		assert_int_equal(blockdev_read(bd, x->buf, 0, x->c->size), 0);
		if (memcmp(x->buf, x->snap_model[i], x->c->size))
			fail_msg("%s seed %llu: snapshot %s content differs", x->c->name,
				 (unsigned long long)x->seed, x->snap_name[i]);
		blockdev_close(bd);
		free(x->snap_model[i]);
	}
}

/* A whole cluster written compressed (compressible: runs of bytes). */
static void compressed_write(struct ctx *x)
{
	uint64_t cs = x->c->cluster, off = (rnd(&x->seed) % (x->c->size / cs)) * cs;

	for (uint64_t i = 0; i < cs; i += 64)
		memset(x->buf + i, (uint8_t)rnd(&x->seed) | 1, 64);
	if (qcow2_write_compressed(x->bd->priv, off, x->buf))
		fail_msg("compressed write failed: %s", x->bd->err.msg);
	memcpy(x->model + off, x->buf, cs);
}

static void one_op(struct ctx *x, int step)
{
	uint64_t off, len, r = rnd(&x->seed) % 100;

	pick(x, &off, &len);
	if (r < 35) {
		fill_random(x->buf, len, &x->seed);
		assert_int_equal(blockdev_write(x->bd, x->buf, off, len), 0);
		memcpy(x->model + off, x->buf, len);
		if (x->break_model && step >= 5 && !x->mismatches) {
			x->model[off] ^= 0x55;	/* lose one byte of one write */
			check_read(x, off, len, step);
		}
	} else if (r < 45) {
		assert_int_equal(blockdev_write_zeroes(x->bd, off, len), 0);
		memset(x->model + off, 0, len);
	} else if (r < 52) {
		assert_int_equal(blockdev_discard(x->bd, off, len), 0);
		memset(x->model + off, 0, len);
	} else if (r < 57) {
		assert_int_equal(blockdev_flush(x->bd), 0);
	} else if (r < 59) {
		reopen(x);
	} else if (r < 61 && x->c->snapshots) {
		snapshot_op(x);
	} else if (r < 64) {
		compressed_write(x);
	} else {
		check_read(x, off, len, step);
	}
}

static void final_checks(struct ctx *x)
{
	struct qcow2_check_result res;
	struct error e = { 0 };
	char cmd[256];

	for (uint64_t off = 0; off < x->c->size; off += 1u << 20)
		check_read(x, off, x->c->size - off < (1u << 20) ? x->c->size - off : 1u << 20, -1);
	assert_int_equal(blockdev_flush(x->bd), 0);
	assert_int_equal(qcow2_check(x->bd, false, &res, &e), 0);
	assert_int_equal(res.corruptions, 0);
	assert_int_equal(res.leaks, 0);
	blockdev_close(x->bd);
	x->bd = NULL;
	check_snapshots(x);
	if (have_qemu_img()) {
		snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", x->top);
		assert_int_equal(system(cmd), 0);
	}
}

static void cleanup(struct ctx *x)
{
	char cmd[128];

	blockdev_close(x->bd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", x->dir);
	if (system(cmd))
		(void)0;
	free(x->model);
	free(x->buf);
}

static int run_cfg(const struct cfg *c, uint64_t seed, bool break_model)
{
	struct ctx x = { .c = c, .seed = seed, .break_model = break_model };

	x.model = malloc(c->size);
	x.buf = malloc(8u << 20);
	assert_non_null(x.model);
	assert_non_null(x.buf);
	setup_chain(&x);
	for (int i = 0; i < c->ops; i++)
		one_op(&x, i);
	final_checks(&x);
	cleanup(&x);
	return x.mismatches;
}

static const struct cfg cfgs[] = {
	{ "v3-64k", 3, 65536, 16, false, 0, 8u << 20, 0, 600, false },
	{ "v2-64k", 2, 65536, 16, false, 0, 8u << 20, 0, 400, false },
	{ "v3-4k-tinycache", 3, 4096, 16, false, 0, 4u << 20, 16384, 600, false },
	{ "v3-512b-rb1", 3, 512, 1, false, 0, 1u << 20, 8192, 300, false },
	{ "v3-2M", 3, 2u << 20, 16, false, 0, 16u << 20, 0, 150, false },
	{ "v3-extl2-64k", 3, 65536, 16, true, 0, 8u << 20, 0, 500, false },
	{ "v3-64k-raw-base", 3, 65536, 16, false, 1, 8u << 20, 0, 500, false },
	{ "v2-4k-raw-base", 2, 4096, 16, false, 1, 2u << 20, 0, 400, false },
	{ "v3-extl2-32k-chain", 3, 32768, 16, true, 2, 4u << 20, 0, 500, false },
	{ "v3-16k-chain-rb64", 3, 16384, 64, false, 2, 4u << 20, 32768, 500, false },
	{ "v3-4k-rb8", 3, 4096, 8, false, 0, 24u << 20, 0, 300, false },
	{ "v3-512b-rb64-reftable-grow", 3, 512, 64, false, 0, 4u << 20, 0, 400, false },
	{ "v3-64k-snapshots", 3, 65536, 16, false, 0, 8u << 20, 0, 600, true },
	{ "v2-4k-snapshots-tinycache", 2, 4096, 16, false, 0, 2u << 20, 16384, 600, true },
	{ "v3-extl2-snapshots-chain", 3, 65536, 16, true, 2, 8u << 20, 0, 500, true },
};

static void test_diff_all(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		for (uint64_t seed = 1; seed <= 3; seed++)
			run_cfg(&cfgs[i], seed * 1000003 + i, false);
}

/* The deliberate fault: a model that is wrong must make the test fail. */
static void test_diff_catches_fault(void **state)
{
	(void)state;
	assert_true(run_cfg(&cfgs[0], 42, true) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_diff_all),
		cmocka_unit_test(test_diff_catches_fault),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
