/*
 * test_store_bloom.c - store/bloom2d.c, the two-dimensional Bloom array:
 * every hash added to a column is found in it (no false negatives), among
 * many columns; the measured false-positive rate is near the formula's;
 * dropping a column moves the last one into its place without losing its
 * bits; the file round-trips and a damaged file is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/bloom2d.h"
#include "store/store.h"

#define COLS 200
#define PER 1024

static void key(uint32_t col, uint32_t i, uint8_t h[32])
{
	uint32_t v[2] = { col, i };

	store_hash(v, sizeof(v), h);
}

static void fill(struct bloom2d *b)
{
	assert_int_equal(bloom2d_init(b, 16384, 7, NULL), 0);
	for (uint32_t c = 0; c < COLS; c++) {
		assert_int_equal(bloom2d_add_column(b, 1000 + c), (int)c);
		for (uint32_t i = 0; i < PER; i++) {
			uint8_t h[32];

			key(c, i, h);
			bloom2d_add(b, c, h);
		}
	}
}

static bool has(const uint32_t *v, size_t n, uint32_t c)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == c)
			return true;
	return false;
}

static void test_no_false_negatives(void **state)
{
	struct bloom2d b;
	uint32_t out[COLS];

	fill(&b);
	for (uint32_t c = 0; c < COLS; c++)
		for (uint32_t i = 0; i < PER; i += 7) {
			uint8_t h[32];

			key(c, i, h);
			size_t n = bloom2d_lookup(&b, h, out, COLS);
			assert_true(has(out, n, c));
		}
	bloom2d_free(&b);
}

/* Hashes never added: the share of (hash, column) pairs that answer yes
 * is the false-positive rate.  The formula gives 7.1e-4 here; 200 columns
 * x 20000 hashes = 4e6 trials, so ~2800 expected: within 20 %. */
static void test_fp_rate_near_formula(void **state)
{
	struct bloom2d b;
	uint32_t out[COLS];
	uint64_t hits = 0, trials = 0;

	fill(&b);
	for (uint32_t i = 0; i < 20000; i++) {
		uint8_t h[32];

		key(999999, i, h);
		hits += bloom2d_lookup(&b, h, out, COLS);
		trials += COLS;
	}
	double measured = (double)hits / (double)trials, formula = bloom2d_fp_rate(16384, 7, PER);
	print_message("false positives: measured %.3g, formula %.3g\n", measured, formula);
	assert_true(measured > formula * 0.8 && measured < formula * 1.2);
	bloom2d_free(&b);
}

static void test_drop_column(void **state)
{
	struct bloom2d b;
	uint32_t out[COLS];
	uint8_t h[32];

	fill(&b);
	bloom2d_drop_column(&b, 3);
	assert_int_equal(b.ncols, COLS - 1);
	assert_int_equal(b.seg[3], 1000 + COLS - 1);
	assert_int_equal(bloom2d_column(&b, 1000 + 3), -1);
	/* The moved column's hashes are found at its new place. */
	for (uint32_t i = 0; i < PER; i++) {
		key(COLS - 1, i, h);
		assert_true(has(out, bloom2d_lookup(&b, h, out, COLS), 3));
	}
	/* No column answers beyond ncols. */
	key(COLS - 1, 0, h);
	size_t n = bloom2d_lookup(&b, h, out, COLS);
	for (size_t i = 0; i < n; i++)
		assert_true(out[i] < b.ncols);
	bloom2d_free(&b);
}

static void test_save_load(void **state)
{
	struct bloom2d b, c;
	char path[] = "/tmp/test_store_bloom.XXXXXX";
	int fd = mkstemp(path);
	uint8_t h[32];
	uint32_t o1[COLS], o2[COLS];

	assert_true(fd >= 0);
	close(fd);
	fill(&b);
	assert_int_equal(bloom2d_save(&b, path, NULL), 0);
	assert_int_equal(bloom2d_load(&c, path, NULL), 0);
	assert_int_equal(c.ncols, b.ncols);
	assert_memory_equal(c.seg, b.seg, b.ncols * 4);
	assert_memory_equal(c.count, b.count, b.ncols * 4);
	for (uint32_t i = 0; i < 500; i++) {
		key(i % COLS, i, h);
		size_t n1 = bloom2d_lookup(&b, h, o1, COLS), n2 = bloom2d_lookup(&c, h, o2, COLS);
		assert_int_equal(n1, n2);
		assert_memory_equal(o1, o2, n1 * 4);
	}
	bloom2d_free(&c);
	/* One flipped byte: refused. */
	FILE *f = fopen(path, "r+b");
	fseek(f, 5000, SEEK_SET);
	int ch = fgetc(f);
	fseek(f, 5000, SEEK_SET);
	fputc(ch ^ 1, f);
	fclose(f);
	struct error e = { 0 };
	assert_int_equal(bloom2d_load(&c, path, &e), -1);
	assert_non_null(strstr(e.msg, "checksum"));
	unlink(path);
	bloom2d_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_false_negatives),
		cmocka_unit_test(test_fp_rate_near_formula),
		cmocka_unit_test(test_drop_column),
		cmocka_unit_test(test_save_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
