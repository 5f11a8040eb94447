/*
 * test_migrate_postcopy.c - post-copy's "postcopy" section
 * (state/migrate_postcopy.c) without a VM:
 *   - the list the source writes parses back to the same bitmap and its
 *     count of missing pages, for a page count that is a multiple of 64
 *     and one that is not;
 *   - a destination refuses, with status 84 and its own message, a list of
 *     another page count, one cut short or too long, and a bit set past
 *     the last page (which would name a page outside its RAM).
 * The whole path (faults, requests, pushes, a killed destination) is
 * tests/system/migrate_postcopy.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/state.h"
#include "state/migrate_postcopy.h"

static void roundtrip(uint64_t pages)
{
	uint64_t words = (pages + 63) / 64, *src = calloc(words, 8), *got = NULL, missing = 0;
	uint64_t want = 0;
	struct state_writer w;
	struct error e = { 0 };

	assert_non_null(src);
	for (uint64_t p = 0; p < pages; p += 3) {      /* every third page, the last too */
		src[p / 64] |= 1ULL << (p % 64);
		want++;
	}
	if ((pages - 1) % 3) {
		src[(pages - 1) / 64] |= 1ULL << ((pages - 1) % 64);
		want++;
	}
	state_writer_init(&w);
	migrate_postcopy_put_list(&w, src, pages);
	assert_false(w.error);
	assert_int_equal(w.len, 8 + words * 8);
	assert_int_equal(migrate_postcopy_parse(pages * 4096, w.data, w.len, &got, &missing, &e), 0);
	assert_non_null(got);
	assert_int_equal(missing, want);
	assert_memory_equal(got, src, words * 8);
	free(got);
	free(src);
	state_writer_free(&w);
}

static void test_roundtrip(void **state)
{
	(void)state;
	roundtrip(32768);       /* 128 MiB */
	roundtrip(1000);        /* not a multiple of 64 */
	roundtrip(1);
}

static void expect_refused(uint64_t mem, const struct state_writer *w, const char *words)
{
	uint64_t *bits = (uint64_t *)1, missing = 7;
	struct error e = { 0 };

	assert_int_equal(migrate_postcopy_parse(mem, w->data, w->len, &bits, &missing, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_null(bits);
	assert_int_equal(missing, 0);
	if (!strstr(e.msg, words))
		fail_msg("'%s' does not say '%s'", e.msg, words);
}

static void test_refused(void **state)
{
	uint64_t bits[2] = { 1, 0 };
	struct state_writer w;

	(void)state;
	state_writer_init(&w);
	migrate_postcopy_put_list(&w, bits, 100);       /* 100 pages: 2 words */
	/* another VM size */
	expect_refused(200 * 4096, &w, "lists 100 pages, this VM has 200");
	/* cut short, and one byte too many */
	w.len -= 1;
	expect_refused(100 * 4096, &w, "is 23 bytes, a list of 100 pages is 24");
	w.len += 1;
	state_put_u8(&w, 0);
	expect_refused(100 * 4096, &w, "is 25 bytes");
	w.len -= 1;
	/* a bit past page 99 */
	w.data[8 + 8 + 4] = 0x10;                      /* bit 36 of word 1: page 100 */
	expect_refused(100 * 4096, &w, "past the end of RAM");
	/* nothing at all */
	w.len = 4;
	expect_refused(100 * 4096, &w, "lists 0 pages");
	state_writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
