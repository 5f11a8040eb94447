/*
 * test_store_chunker.c - store/chunker.c: the same bytes give the same
 * cuts; a few bytes inserted early change only the chunks near the edit;
 * sizes stay within min and max and average near avg; a run of zeros
 * becomes max-size chunks; unusable sizes are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/chunker.h"
#include "store/store.h"

#define LEN (4u << 20)

static const struct chunker_params P = { CHUNK_MIN_DEFAULT, CHUNK_AVG_DEFAULT, CHUNK_MAX_DEFAULT };

static void fill_random(uint8_t *b, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		b[i] = (uint8_t)(seed >> 33);
	}
}

/* Cut buf into chunks; their hashes into h (up to max), count returned. */
static size_t cut(const uint8_t *buf, size_t len, uint8_t (*h)[32], size_t *sizes, size_t max)
{
	size_t pos = 0, n = 0;

	while (pos < len) {
		size_t c = chunker_next(&P, buf + pos, len - pos, 1);

		assert_true(c > 0);
		assert_true(c <= P.max);
		if (pos + c < len)
			assert_true(c >= P.min);
		assert_true(n < max);
		store_hash(buf + pos, c, h[n]);
		sizes[n++] = c;
		pos += c;
	}
	assert_int_equal(pos, len);
	return n;
}

static void test_deterministic(void **state)
{
	uint8_t *a = malloc(LEN), (*h1)[32] = malloc(4096 * 32), (*h2)[32] = malloc(4096 * 32);
	size_t *s1 = malloc(4096 * sizeof(size_t)), *s2 = malloc(4096 * sizeof(size_t));

	fill_random(a, LEN, 1);
	size_t n1 = cut(a, LEN, h1, s1, 4096), n2 = cut(a, LEN, h2, s2, 4096);
	assert_int_equal(n1, n2);
	assert_memory_equal(h1, h2, n1 * 32);
	/* The mean size is near avg (normalized chunking): within 25 %. */
	double mean = (double)LEN / (double)n1;
	assert_true(mean > P.avg * 0.75 && mean < P.avg * 1.25);
	free(a);
	free(h1);
	free(h2);
	free(s1);
	free(s2);
}

/* Insert 7 bytes at 100 KiB: the chunks before the edit are the same, and
 * after it all but the few around it are found again. */
static void test_insertion_is_local(void **state)
{
	uint8_t *a = malloc(LEN), *b = malloc(LEN + 7), (*h1)[32] = malloc(4096 * 32),
		(*h2)[32] = malloc(4096 * 32);
	size_t *s1 = malloc(4096 * sizeof(size_t)), *s2 = malloc(4096 * sizeof(size_t));
	size_t at = 100 << 10;

	fill_random(a, LEN, 2);
	memcpy(b, a, at);
	memcpy(b + at, "INSERT!", 7);
	memcpy(b + at + 7, a + at, LEN - at);
	size_t n1 = cut(a, LEN, h1, s1, 4096), n2 = cut(b, LEN + 7, h2, s2, 4096);
	size_t same_prefix = 0, pos = 0;
	while (same_prefix < n1 && same_prefix < n2 && !memcmp(h1[same_prefix], h2[same_prefix], 32)) {
		pos += s1[same_prefix];
		same_prefix++;
	}
	/* Every chunk ending before the edit is unchanged. */
	assert_true(pos <= at);
	assert_true(at - pos <= P.max);
	/* Of b's chunks, those not in a are only the ones near the edit. */
	size_t fresh = 0;
	for (size_t i = 0; i < n2; i++) {
		bool found = false;

		for (size_t j = 0; j < n1 && !found; j++)
			found = !memcmp(h2[i], h1[j], 32);
		fresh += !found;
	}
	assert_true(fresh >= 1);
	assert_true(fresh <= 3);
	free(a);
	free(b);
	free(h1);
	free(h2);
	free(s1);
	free(s2);
}

static void test_zeros_are_max_chunks(void **state)
{
	uint8_t *z = calloc(1, 1u << 20);

	assert_int_equal(chunker_next(&P, z, 1u << 20, 1), P.max);
	/* Not enough bytes and more to come: ask for more. */
	assert_int_equal(chunker_next(&P, z, P.max - 1, 0), 0);
	/* The end of the input is a cut. */
	assert_int_equal(chunker_next(&P, z, 100, 1), 100);
	free(z);
}

static void test_params(void **state)
{
	struct chunker_params p = P;

	assert_int_equal(chunker_params_check(&p), 0);
	p.avg = 6000;	/* not a power of two */
	assert_int_equal(chunker_params_check(&p), -1);
	p = P;
	p.min = p.avg;
	assert_int_equal(chunker_params_check(&p), -1);
	p = P;
	p.max = 32u << 20;
	assert_int_equal(chunker_params_check(&p), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_insertion_is_local),
		cmocka_unit_test(test_zeros_are_max_chunks),
		cmocka_unit_test(test_params),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
