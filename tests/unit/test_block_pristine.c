/*
 * test_block_pristine.c - the pristine-block cache (block/pristine.c):
 * disk reads of a read-only image served from a shared-memory copy.
 *
 * - hit and miss: a read-only raw image opened with pristine_dir reads
 *   right the first time (all misses, bytes read from the file), and the
 *   same from a second open (all hits, nothing read from the file), for
 *   aligned, unaligned and end-of-image ranges; a qcow2 overlay's reads of
 *   unallocated clusters go to the cache of its backing file, and what the
 *   overlay wrote never does (its bytes are not in the cache file).
 * - a changed base is never served: the base rewritten with other bytes
 *   (even with its old modification time put back) opens with another
 *   cache file and reads the new bytes.
 * - a corrupt entry is refused: a cached block's data changed in the cache
 *   file reads right (from the image), counted as refused; a slot whose
 *   tag says "being written" (a writer killed half way) is a plain miss.
 * - two processes share: a forked child fills the cache, the parent hits
 *   on every block; two children racing over one small cache (every block
 *   evicting another) never read a wrong byte.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "block/blockdev.h"
#include "block/pristine.h"
#include "block/qcow2.h"

#define IMG_SIZE (1u << 20)

static char dir[64], cache[80], base[80];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-pristine.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(base, sizeof(base), "%s/base.raw", dir);
	return mkdir(cache, 0700);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* The byte at offset i of an image made with seed s. */
static uint8_t pat(uint64_t i, unsigned s)
{
	return (uint8_t)((i * 131 + (i >> 12) * 7 + s) ^ (i >> 9));
}

static void make_base(unsigned seed)
{
	uint8_t *b = malloc(IMG_SIZE);
	int fd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);

	assert_non_null(b);
	assert_true(fd >= 0);
	for (uint64_t i = 0; i < IMG_SIZE; i++)
		b[i] = pat(i, seed);
	assert_int_equal(pwrite(fd, b, IMG_SIZE, 0), IMG_SIZE);
	close(fd);
	free(b);
}

static struct blockdev *open_ro(const char *path, uint64_t bytes)
{
	struct blockdev_opts o = { .readonly = true, .pristine_dir = cache,
				   .pristine_bytes = bytes };
	struct blockdev *bd;
	struct error e = { 0 };

	if (blockdev_open(&bd, path, &o, &e))
		fail_msg("open %s: %s", path, e.msg);
	assert_non_null(bd->pristine);
	return bd;
}

/* Read [off, off+len) and check it against seed s. */
static void read_check(struct blockdev *bd, uint64_t off, uint64_t len, unsigned s)
{
	uint8_t *b = malloc(len);

	assert_int_equal(blockdev_read(bd, b, off, len), 0);
	for (uint64_t i = 0; i < len; i++)
		if (b[i] != pat(off + i, s))
			fail_msg("byte %llu: %u, expected %u", (unsigned long long)(off + i), b[i],
				 pat(off + i, s));
	free(b);
}

static struct pristine_stats stats(struct blockdev *bd)
{
	struct pristine_stats st;

	assert_int_equal(blockdev_pristine_stats(bd, &st), 0);
	return st;
}

static int cache_files(void)
{
	char cmd[160];
	FILE *f;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "ls %s | grep -c '\\.pristine$'", cache);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &n), 1);
	pclose(f);
	return n;
}

static void clear_cache(void)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -f %s/*", cache);
	assert_int_equal(system(cmd), 0);
}

static void test_hit_miss(void **state)
{
	struct blockdev *bd;
	struct pristine_stats st;

	(void)state;
	clear_cache();
	make_base(1);
	bd = open_ro(base, 0);
	read_check(bd, 0, 65536, 1);
	read_check(bd, 70000, 5000, 1);		/* unaligned: blocks 17..18 */
	read_check(bd, IMG_SIZE - 700, 700, 1);
	st = stats(bd);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.file_bytes, 65536 + 2 * 4096 + 4096);
	blockdev_close(bd);

	bd = open_ro(base, 0);			/* a second user: all hits */
	read_check(bd, 0, 65536, 1);
	read_check(bd, 70000, 5000, 1);
	read_check(bd, IMG_SIZE - 700, 700, 1);
	read_check(bd, 71000, 100, 1);		/* inside a block read before */
	st = stats(bd);
	assert_int_equal(st.hits, 16 + 2 + 1 + 1);
	assert_int_equal(st.hit_bytes, 65536 + 5000 + 700 + 100);
	assert_int_equal(st.file_bytes, 0);
	assert_int_equal(st.refused, 0);
	read_check(bd, 204800, 4096, 1);	/* not read before: a miss */
	assert_int_equal(stats(bd).file_bytes, 4096);
	blockdev_close(bd);
	assert_int_equal(cache_files(), 1);
}

/* An overlay's own writes stay in the overlay; its backing reads hit. */
static void test_overlay(void **state)
{
	struct qcow2_create_opts co = { .size = IMG_SIZE, .cluster_size = 4096, .backing_file = base,
					.backing_format = "raw", .chain_id = true };
	struct blockdev_opts o = { .pristine_dir = cache };
	char ov[96], cmd[256];
	uint8_t secret[4096];
	struct blockdev *bd;
	struct error e = { 0 };

	(void)state;
	clear_cache();
	make_base(2);
	snprintf(ov, sizeof(ov), "%s/ov.qcow2", dir);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(qcow2_create(ov, &co, &e), 0);
		if (blockdev_open(&bd, ov, &o, &e))
			fail_msg("open %s: %s", ov, e.msg);
		assert_null(bd->pristine);
		assert_non_null(bd->backing->pristine);
		memset(secret, 'Z', sizeof(secret));
		memcpy(secret, "guest-secret-bytes", 18);
		assert_int_equal(blockdev_write(bd, secret, 8192, 4096), 0);
		read_check(bd, 0, 8192, 2);
		read_check(bd, 12288, 65536, 2);
		assert_int_equal(stats(bd).hits, round ? 2 + 16 : 0);
		assert_int_equal(stats(bd).file_bytes, round ? 0 : 8192 + 65536);
		assert_int_equal(bd->st_backing_bytes, round ? 0 : 8192 + 65536);
		blockdev_close(bd);
	}
	snprintf(cmd, sizeof(cmd), "grep -rqa guest-secret-bytes %s", cache);
	assert_int_not_equal(system(cmd), 0);
}

/* The base rewritten, even with its old mtime put back: another cache. */
static void test_changed_base(void **state)
{
	struct blockdev *bd;
	struct stat st;
	struct timespec ts[2];

	(void)state;
	clear_cache();
	make_base(3);
	bd = open_ro(base, 0);
	read_check(bd, 0, 65536, 3);
	blockdev_close(bd);
	assert_int_equal(stat(base, &st), 0);
	make_base(4);				/* same size, same inode */
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	assert_int_equal(utimensat(AT_FDCWD, base, ts, 0), 0);
	bd = open_ro(base, 0);
	read_check(bd, 0, 65536, 4);
	assert_int_equal(stats(bd).hits, 0);
	assert_int_equal(stats(bd).file_bytes, 65536);
	blockdev_close(bd);
	assert_int_equal(cache_files(), 2);
}

/* Flip a byte of block blk's cached data, or zero its tag. */
static void poke(struct blockdev *bd, uint64_t blk, bool tag)
{
	int fd = open(pristine_file(bd->pristine), O_RDWR);
	uint64_t off = pristine_data_offset(bd->pristine, blk);
	uint8_t c;

	assert_true(fd >= 0);
	if (tag) {
		uint64_t z = 0, slot = 4096 + (blk % ((IMG_SIZE) / 4096)) * 16;

		assert_int_equal(pwrite(fd, &z, 8, slot), 8);
	} else {
		assert_int_equal(pread(fd, &c, 1, off + 100), 1);
		c ^= 0x40;
		assert_int_equal(pwrite(fd, &c, 1, off + 100), 1);
	}
	close(fd);
}

static void test_corrupt(void **state)
{
	struct blockdev *bd;
	struct pristine_stats st;

	(void)state;
	clear_cache();
	make_base(5);
	bd = open_ro(base, 0);
	read_check(bd, 0, 8 * 4096, 5);
	poke(bd, 3, false);			/* torn or corrupt data */
	poke(bd, 5, true);			/* a writer killed before its tag */
	read_check(bd, 0, 8 * 4096, 5);
	st = stats(bd);
	assert_int_equal(st.hits, 6);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.file_bytes, 8 * 4096 + 2 * 4096);
	read_check(bd, 0, 8 * 4096, 5);		/* repaired by the re-insert */
	assert_int_equal(stats(bd).hits, 14);
	blockdev_close(bd);
}

static void test_two_processes(void **state)
{
	struct blockdev *bd;
	pid_t kid[2];
	int ws;

	(void)state;
	clear_cache();
	make_base(6);
	kid[0] = fork();
	if (!kid[0]) {
		bd = open_ro(base, 0);
		read_check(bd, 0, IMG_SIZE, 6);
		blockdev_close(bd);
		_exit(0);
	}
	assert_int_equal(waitpid(kid[0], &ws, 0), kid[0]);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	bd = open_ro(base, 0);
	read_check(bd, 0, IMG_SIZE, 6);
	assert_int_equal(stats(bd).hits, IMG_SIZE / 4096);
	assert_int_equal(stats(bd).file_bytes, 0);
	blockdev_close(bd);

	/* racing over a cache of 16 blocks: slots rewritten all the time */
	clear_cache();
	for (int k = 0; k < 2; k++) {
		kid[k] = fork();
		if (!kid[k]) {
			bd = open_ro(base, 16 * 4096);
			for (int i = 0; i < 40; i++)
				read_check(bd, (uint64_t)((i * 7 + k * 3) % 64) * 4096 + k * 100,
					   3 * 4096, 6);
			blockdev_close(bd);
			_exit(0);
		}
	}
	for (int k = 0; k < 2; k++) {
		assert_int_equal(waitpid(kid[k], &ws, 0), kid[k]);
		assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_miss),
		cmocka_unit_test(test_overlay),
		cmocka_unit_test(test_changed_base),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_two_processes),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
