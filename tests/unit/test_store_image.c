/*
 * test_store_image.c - store/store.c end to end on raw images in a
 * temporary directory: add then get gives the same bytes; a second image
 * that shares most content adds few new chunks; a flipped byte in a
 * segment is caught on get and by verify, naming the segment and the
 * image, and the other image still reads; rm + gc drops the dead chunks
 * and keeps the live ones; what a killed writer leaves (bytes past a
 * table's length, a segment without a table, a lost index) is cleared
 * or rebuilt on the next open.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

#define IMG (6u << 20)

static char dir[] = "/tmp/test_store_image.XXXXXX";
static char sdir[256];
static uint8_t *img_a, *img_b;

static void fill_random(uint8_t *b, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		b[i] = (uint8_t)(seed >> 40) & 0x3f;	/* compressible */
	}
}

static void write_file(const char *path, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
	close(fd);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	img_a = malloc(IMG);
	img_b = malloc(IMG);
	fill_random(img_a, IMG, 42);
	memset(img_a + (1 << 20), 0, 1 << 20);	/* a hole of zeros */
	memcpy(img_b, img_a, IMG);
	memcpy(img_b + 3000000, "a few changed bytes", 19);
	memcpy(img_b + 5000000, "and here", 8);
	char p[300];
	snprintf(p, sizeof(p), "%s/a.raw", dir);
	write_file(p, img_a, IMG);
	snprintf(p, sizeof(p), "%s/b.raw", dir);
	write_file(p, img_b, IMG);
	return 0;
}

static int teardown(void **state)
{
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	free(img_a);
	free(img_b);
	return system(cmd);
}

static void add(const char *file, const char *name, struct store_add_stats *st)
{
	struct store *s;
	struct blockdev *bd;
	struct blockdev_opts o = { .readonly = true, .caller_reports = true };
	struct error e = { 0 };
	char p[300];

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	assert_int_equal(blockdev_open(&bd, p, &o, &e), 0);
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	int rc = store_add(s, bd, name, st, NULL, NULL, &e);
	if (rc)
		print_message("%s\n", e.msg);
	assert_int_equal(rc, 0);
	store_close(s);
	blockdev_close(bd);
}

struct sink {
	uint8_t *buf;
	uint64_t size;
};

static int sized(void *opaque, uint64_t size, const char *format, struct error *e)
{
	struct sink *k = opaque;

	k->size = size;
	k->buf = calloc(1, size);
	return 0;
}

static int sink_write(void *opaque, const void *buf, uint64_t off, uint64_t len, struct error *e)
{
	struct sink *k = opaque;

	assert_true(off + len <= k->size);
	memcpy(k->buf + off, buf, len);
	return 0;
}

/* Get `name`; 0 and the bytes in *k, or -1 and e. */
static int get(const char *name, struct sink *k, struct error *e)
{
	struct store *s;
	uint64_t size;

	memset(k, 0, sizeof(*k));
	assert_int_equal(store_open(&s, sdir, false, e), 0);
	int rc = store_get(s, name, &size, sized, sink_write, k, e);
	store_close(s);
	return rc;
}

static void collect(void *opaque, const char *line)
{
	char *out = opaque;

	strncat(out, line, 4000 - strlen(out) - 2);
	strcat(out, "\n");
}

static int verify(char *out)
{
	struct store *s;
	struct error e = { 0 };
	uint64_t n;

	out[0] = 0;
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	int rc = store_verify(s, collect, out, &n, &e);
	store_close(s);
	return rc;
}

static void test_round_trip_and_dedup(void **state)
{
	struct store_add_stats sa, sb;
	struct sink k;
	struct error e = { 0 };

	snprintf(sdir, sizeof(sdir), "%s/store1", dir);
	assert_int_equal(store_init(sdir, NULL, &e), 0);
	/* A second init of the same directory is refused. */
	assert_int_equal(store_init(sdir, NULL, &e), -1);
	add("a.raw", "a", &sa);
	assert_true(sa.zero_chunks >= 1);
	assert_true(sa.stored_bytes < sa.new_bytes);	/* zstd did something */
	add("b.raw", "b", &sb);
	assert_int_equal(sb.image_bytes, IMG);
	/* Two small edits: a handful of new chunks, a small share of bytes. */
	print_message("b adds %llu of %llu chunks, %llu bytes\n", (unsigned long long)sb.new_chunks,
		      (unsigned long long)sb.chunks, (unsigned long long)sb.new_bytes);
	assert_true(sb.new_chunks >= 2 && sb.new_chunks <= 6);
	assert_true(sb.new_bytes < IMG / 20);
	assert_int_equal(get("a", &k, &e), 0);
	assert_int_equal(k.size, IMG);
	assert_memory_equal(k.buf, img_a, IMG);
	free(k.buf);
	assert_int_equal(get("b", &k, &e), 0);
	assert_memory_equal(k.buf, img_b, IMG);
	free(k.buf);
	/* The same name twice is refused, and an unknown name is an error. */
	struct store *s;
	struct blockdev *bd;
	struct blockdev_opts o = { .readonly = true, .caller_reports = true };
	char p[300];
	snprintf(p, sizeof(p), "%s/a.raw", dir);
	assert_int_equal(blockdev_open(&bd, p, &o, &e), 0);
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_add(s, bd, "a", &sa, NULL, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "already"));
	assert_int_equal(store_add(s, bd, "../x", &sa, NULL, NULL, &e), -1);
	store_close(s);
	blockdev_close(bd);
	assert_int_equal(get("nope", &k, &e), -1);
	assert_non_null(strstr(e.msg, "no image named 'nope'"));
	char out[4096];
	assert_int_equal(verify(out), 0);
}

/* The segment file that holds chunk hash `h` and the offset of its bytes:
 * found by scanning the segments for the record header. */
static void flip_in_segment_of(const uint8_t *data, size_t len, char *seg_out)
{
	uint8_t h[32];
	char segdir[300];
	DIR *d;
	struct dirent *de;

	store_hash(data, len, h);
	snprintf(segdir, sizeof(segdir), "%s/segments", sdir);
	d = opendir(segdir);
	assert_non_null(d);
	while ((de = readdir(d))) {
		char p[600];
		struct stat st;

		if (!strstr(de->d_name, ".seg"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", segdir, de->d_name);
		stat(p, &st);
		uint8_t *b = malloc(st.st_size);
		int fd = open(p, O_RDWR);
		assert_int_equal(read(fd, b, st.st_size), st.st_size);
		for (off_t i = 16; i + 32 <= st.st_size; i++)
			if (!memcmp(b + i, h, 32)) {
				/* header is 16 bytes + hash; flip a byte of the body */
				uint8_t x = b[i + 32 + 10] ^ 0x55;

				assert_int_equal(pwrite(fd, &x, 1, i + 32 + 10), 1);
				snprintf(seg_out, 16, "%.8s", de->d_name);
				close(fd);
				free(b);
				closedir(d);
				return;
			}
		close(fd);
		free(b);
	}
	closedir(d);
	fail_msg("chunk not found in any segment");
}

static void test_corrupt_segment(void **state)
{
	struct sink k;
	struct error e = { 0 };
	char seg[16], out[4096];
	const struct chunker_params *cp;
	struct store *s;

	/* The first chunk of a is shared by a and b: cut it as the store does. */
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	cp = &store_get_params(s)->chunk;
	size_t first = chunker_next(cp, img_a, IMG, 1);
	store_close(s);
	flip_in_segment_of(img_a, first, seg);
	assert_int_equal(get("a", &k, &e), -1);
	free(k.buf);
	print_message("%s\n", e.msg);
	assert_non_null(strstr(e.msg, seg));
	assert_non_null(strstr(e.msg, "image a"));
	assert_non_null(strstr(e.msg, "breaks images: a, b"));
	assert_int_equal(verify(out), 1);
	assert_non_null(strstr(out, seg));
	assert_non_null(strstr(out, "breaks images: a, b"));
	/* Put the byte back: all is well again, nothing else was lost. */
	flip_in_segment_of(img_a, first, seg);
	assert_int_equal(verify(out), 0);
	assert_int_equal(get("b", &k, &e), 0);
	assert_memory_equal(k.buf, img_b, IMG);
	free(k.buf);
}

static void test_rm_gc(void **state)
{
	struct store *s;
	struct error e = { 0 };
	struct store_gc_stats gs;
	struct store_du du0, du1;
	struct sink k;
	char out[4096];

	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_du(s, &du0, &e), 0);
	assert_int_equal(store_rm(s, "a", &e), 0);
	assert_int_equal(store_rm(s, "a", &e), -1);
	assert_int_equal(store_gc(s, &gs, &e), 0);
	assert_true(gs.dead_chunks >= 2);	/* a's own chunks around the edits */
	assert_int_equal(store_du(s, &du1, &e), 0);
	assert_int_equal(du1.chunks, du0.chunks - gs.dead_chunks);
	store_close(s);
	assert_int_equal(get("b", &k, &e), 0);
	assert_memory_equal(k.buf, img_b, IMG);
	free(k.buf);
	assert_int_equal(verify(out), 0);
	/* A second gc finds nothing to do. */
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_gc(s, &gs, &e), 0);
	assert_int_equal(gs.dead_chunks, 0);
	assert_int_equal(gs.segments_rewritten, 0);
	store_close(s);
}

static void test_crash_leftovers(void **state)
{
	char p[400], segdir[300];
	struct store *s;
	struct error e = { 0 };
	struct sink k;
	struct stat st;
	char out[4096];
	DIR *d;
	struct dirent *de;
	char last[300] = "";

	/* Garbage past the committed length of the last segment, a segment
	 * with no table, no index: what a writer killed mid-add leaves. */
	snprintf(segdir, sizeof(segdir), "%s/segments", sdir);
	d = opendir(segdir);
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".seg") && strcmp(de->d_name, last) > 0)
			snprintf(last, sizeof(last), "%s", de->d_name);
	closedir(d);
	snprintf(p, sizeof(p), "%s/%s", segdir, last);
	assert_int_equal(stat(p, &st), 0);
	off_t committed = st.st_size;
	int fd = open(p, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, "garbage!", 8), 8);
	close(fd);
	snprintf(p, sizeof(p), "%s/ffffff00.seg", segdir);
	write_file(p, "orphan", 6);
	snprintf(p, sizeof(p), "%s/index.bloom", sdir);
	assert_int_equal(unlink(p), 0);
	/* A reader copes (rebuilds the index in memory) ... */
	assert_int_equal(get("b", &k, &e), 0);
	assert_memory_equal(k.buf, img_b, IMG);
	free(k.buf);
	/* ... and a writer clears it all away. */
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	store_close(s);
	snprintf(p, sizeof(p), "%s/%s", segdir, last);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, committed);
	snprintf(p, sizeof(p), "%s/ffffff00.seg", segdir);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "%s/index.bloom", sdir);
	assert_int_equal(access(p, F_OK), 0);
	assert_int_equal(verify(out), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_and_dedup),
		cmocka_unit_test(test_corrupt_segment),
		cmocka_unit_test(test_rm_gc),
		cmocka_unit_test(test_crash_leftovers),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
