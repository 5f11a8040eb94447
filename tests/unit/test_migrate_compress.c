/*
 * test_migrate_compress.c - zstd for the migration stream's pages
 * (state/migrate_compress.c) and its ram records (kind 3, state/migrate.c),
 * without KVM:
 *   - compressible pages go as one frame that migrate_apply_ram decodes
 *     into exactly its range of guest memory;
 *   - incompressible (random) pages are not compressed: the source sends
 *     them raw;
 *   - a frame that decompresses to another size than its pages, a
 *     truncated frame, a frame with bytes after its end, a record over
 *     256 pages, and a compressed record where post-copy reads records
 *     (migrate_ram_next) are refused, each with its reason;
 *   - --compress's values: zstd, zstd:LEVEL, and wrong ones named;
 *   - hello's options: an unknown codec is refused by name;
 *   - the daemon's migrate body (host/api_migrate.c): "compress" takes
 *     "zstd" and "zstd:LEVEL" and refuses anything else, naming it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/guest_mem.h"
#include "base/state.h"
#include "host/api.h"
#include "host/host.h"
#include "state/migrate.h"
#include "state/migrate_compress.h"

#define MEM  (16u << 20)
#define PAGE 4096u

static void fill_pattern(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i / 64 * 7);
}

static void fill_random(uint8_t *p, size_t n)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

/* A ram payload of one kind-3 record of `pages` at `off` carrying `frame`. */
static void put_z(struct state_writer *w, uint64_t off, uint32_t pages, const void *frame,
		  size_t n)
{
	state_put_u64(w, off | MIGRATE_RAM_ZSTD);
	state_put_u32(w, pages);
	state_put_u32(w, (uint32_t)n);
	state_put_bytes(w, frame, n);
}

static void expect(const struct guest_mem *m, const struct state_writer *w, const char *what)
{
	struct error e = { 0 };

	if (migrate_apply_ram(m, w->data, w->len, &e) != -1)
		fail_msg("expected a refusal with \"%s\"", what);
	if (!strstr(e.msg, what))
		fail_msg("expected \"%s\" in: %s", what, e.msg);
}

static void test_round_trip(void **state)
{
	struct error e = { 0 };
	struct migrate_z *z = migrate_z_new(1, &e);
	size_t n = MIGRATE_Z_CHUNK_PAGES * PAGE, flen;
	uint8_t *src = malloc(n);
	const void *frame;
	struct guest_mem m;
	struct state_writer w;

	(void)state;
	assert_non_null(z);
	assert_non_null(src);
	fill_pattern(src, n);
	flen = migrate_z_compress(z, src, n, &frame);
	assert_true(flen > 0 && flen < n / 4);        /* the pattern compresses well */
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	memset(m.host, 0x55, MEM);
	state_writer_init(&w);
	put_z(&w, 8 * PAGE, MIGRATE_Z_CHUNK_PAGES, frame, flen);
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), 0);
	assert_memory_equal(m.host + 8 * PAGE, src, n);
	assert_int_equal(m.host[8 * PAGE - 1], 0x55);           /* nothing around it */
	assert_int_equal(m.host[8 * PAGE + n], 0x55);
	/* the context is reused: a second chunk compresses as well */
	fill_pattern(src, PAGE);
	flen = migrate_z_compress(z, src, PAGE, &frame);
	assert_true(flen > 0 && flen < PAGE);
	state_writer_free(&w);
	guest_mem_destroy(&m);
	migrate_z_free(z);
	free(src);
}

static void test_incompressible_raw(void **state)
{
	struct error e = { 0 };
	struct migrate_z *z = migrate_z_new(1, &e);
	size_t n = 16 * PAGE;
	uint8_t *src = malloc(n);
	const void *frame = NULL;

	(void)state;
	assert_non_null(z);
	fill_random(src, n);
	assert_int_equal(migrate_z_compress(z, src, n, &frame), 0);   /* send it raw */
	/* and the context still works after the refusal */
	fill_pattern(src, n);
	assert_true(migrate_z_compress(z, src, n, &frame) > 0);
	migrate_z_free(z);
	free(src);
}

static void test_bad_frames(void **state)
{
	struct error e = { 0 };
	size_t n = 4 * PAGE, flen;
	uint8_t *src = malloc(n), *frame, *two;
	struct guest_mem m;
	struct state_writer w;

	(void)state;
	fill_pattern(src, n);
	frame = malloc(ZSTD_compressBound(n));
	two = malloc(2 * ZSTD_compressBound(n));
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	state_writer_init(&w);

	/* a frame of 4 pages in a record of 3: another size */
	flen = ZSTD_compress(frame, ZSTD_compressBound(n), src, n, 1);
	assert_false(ZSTD_isError(flen));
	put_z(&w, 0, 3, frame, flen);
	expect(&m, &w, "claims another size");
	/* a frame of 3 pages in a record of 4 */
	w.len = 0;
	flen = ZSTD_compress(frame, ZSTD_compressBound(n), src, 3 * PAGE, 1);
	put_z(&w, 0, 4, frame, flen);
	expect(&m, &w, "claims another size");
	/* truncated: the frame's last bytes missing (the record says so) */
	w.len = 0;
	flen = ZSTD_compress(frame, ZSTD_compressBound(n), src, n, 1);
	put_z(&w, 0, 4, frame, flen - 3);
	expect(&m, &w, "cut short or damaged");
	/* truncated: the record claims more bytes than the section has */
	w.len = 0;
	state_put_u64(&w, 0 | MIGRATE_RAM_ZSTD);
	state_put_u32(&w, 4);
	state_put_u32(&w, (uint32_t)flen + 10);
	state_put_bytes(&w, frame, flen);
	expect(&m, &w, "frame is cut short");
	/* two frames of 2 pages each: 4 pages in all, but not one frame */
	w.len = 0;
	{
		size_t a = ZSTD_compress(two, 2 * ZSTD_compressBound(n), src, 2 * PAGE, 1);
		size_t b = ZSTD_compress(two + a, ZSTD_compressBound(n), src, 2 * PAGE, 1);

		put_z(&w, 0, 4, two, a + b);
		expect(&m, &w, "claims another size");
	}
	/* a frame of the right size followed by garbage */
	w.len = 0;
	memcpy(two, frame, flen);
	memset(two + flen, 0, 8);
	put_z(&w, 0, 4, two, flen + 8);
	expect(&m, &w, "has bytes after its end");
	/* without a recorded size */
	w.len = 0;
	{
		ZSTD_CCtx *c = ZSTD_createCCtx();
		size_t k;

		ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
		k = ZSTD_compress2(c, two, 2 * ZSTD_compressBound(n), src, n);
		assert_false(ZSTD_isError(k));
		ZSTD_freeCCtx(c);
		put_z(&w, 0, 4, two, k);
		expect(&m, &w, "does not record its size");
	}
	/* a damaged frame: the right header, garbage after it */
	w.len = 0;
	memcpy(two, frame, flen);
	for (size_t i = 8; i < flen; i++)
		two[i] ^= 0xa5;
	put_z(&w, 0, 4, two, flen);
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "zstd frame"));
	/* not zstd at all */
	w.len = 0;
	put_z(&w, 0, 4, "not a zstd frame", 16);
	expect(&m, &w, "is not a zstd frame");
	/* over 256 pages */
	w.len = 0;
	put_z(&w, 0, MIGRATE_Z_MAX_PAGES + 1, frame, flen);
	expect(&m, &w, "at most 256");
	/* outside RAM */
	w.len = 0;
	put_z(&w, MEM - 2 * PAGE, 4, frame, flen);
	expect(&m, &w, "outside");
	/* an empty frame length */
	w.len = 0;
	put_z(&w, 0, 4, frame, 0);
	expect(&m, &w, "cut short");
	/* an unknown kind is named */
	w.len = 0;
	state_put_u64(&w, 4096 | 7);
	state_put_u32(&w, 1);
	expect(&m, &w, "kind 7, which this Shoal does not know");
	/* post-copy's reader takes no compressed record */
	w.len = 0;
	put_z(&w, 0, 4, frame, flen);
	{
		struct state_reader r;
		struct migrate_ram_rec rec;

		state_reader_init(&r, w.data, w.len);
		assert_int_equal(migrate_ram_next(&r, MEM, &rec, &e), -1);
		assert_non_null(strstr(e.msg, "kind 3"));
	}
	/* and the good one still applies */
	w.len = 0;
	put_z(&w, 0, 4, frame, flen);
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), 0);
	assert_memory_equal(m.host, src, n);
	state_writer_free(&w);
	guest_mem_destroy(&m);
	free(frame);
	free(two);
	free(src);
}

static void test_parse(void **state)
{
	struct error e = { 0 };
	int level = 0;

	(void)state;
	assert_int_equal(migrate_z_parse("zstd", &level, &e), 0);
	assert_int_equal(level, MIGRATE_Z_LEVEL_DEFAULT);
	assert_int_equal(migrate_z_parse("zstd:9", &level, &e), 0);
	assert_int_equal(level, 9);
	assert_int_equal(migrate_z_parse("lz4", &level, &e), -1);
	assert_non_null(strstr(e.msg, "'lz4' is not a compression"));
	assert_int_equal(migrate_z_parse("zstdx", &level, &e), -1);
	assert_int_equal(migrate_z_parse("zstd:0", &level, &e), -1);
	assert_non_null(strstr(e.msg, "'zstd:0': the level is 1 to 19"));
	assert_int_equal(migrate_z_parse("zstd:20", &level, &e), -1);
	assert_int_equal(migrate_z_parse("zstd:", &level, &e), -1);
	assert_int_equal(migrate_z_parse("zstd:3x", &level, &e), -1);
}

/* hello: the fixed fields, settings, the CPU, then the options `opt`
 * (NULL: none, as an older source sends). */
static size_t hello(struct state_writer *w, const char *opt)
{
	static const char cpu[] = "{\"leaves\":[]}";

	w->len = 0;
	state_put_u64(w, MEM);
	state_put_u32(w, 1);
	state_put_u32(w, PAGE);
	state_put_u32(w, 2);
	state_put_bytes(w, "{}", 2);
	state_put_u32(w, (uint32_t)strlen(cpu));
	state_put_bytes(w, cpu, strlen(cpu));
	if (opt) {
		state_put_u32(w, (uint32_t)strlen(opt));
		state_put_bytes(w, opt, strlen(opt));
	}
	return w->len;
}

static void test_hello_options(void **state)
{
	struct state_writer w;
	struct error e = { 0 };
	json_t *cpu;

	(void)state;
	state_writer_init(&w);
	hello(&w, NULL);
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), 0);
	json_decref(cpu);
	hello(&w, "{}");
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), 0);
	json_decref(cpu);
	hello(&w, "{\"ram_compress\":\"zstd\"}");
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), 0);
	json_decref(cpu);
	hello(&w, "{\"ram_compress\":\"lz4\"}");
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), -1);
	assert_null(cpu);
	assert_non_null(strstr(e.msg, "\"lz4\", which this Shoal does not read"));
	hello(&w, "[1]");
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), -1);
	assert_non_null(strstr(e.msg, "not a JSON object"));
	hello(&w, "{}");
	w.len -= 1;                                      /* cut short */
	assert_int_equal(migrate_parse_hello(MEM, 1, w.data, w.len, &cpu, &e), -1);
	assert_non_null(strstr(e.msg, "options are cut short"));
	state_writer_free(&w);
}

static void test_daemon_body(void **state)
{
	static const char *const bad[] = { "{\"to\": \"/s\", \"compress\": \"lz4\"}",
					   "{\"to\": \"/s\", \"compress\": \"zstd:0\"}",
					   "{\"to\": \"/s\", \"compress\": true}" };
	static const char *const why[] = { "compress: 'lz4' is not a compression",
					   "compress: 'zstd:0': the level is 1 to 19",
					   "compress: expected \"zstd\"" };
	struct host_migrate_req r;
	struct api_err e;
	const char *b;

	(void)state;
	b = "{\"to\": \"/s\"}";
	assert_int_equal(api_parse_migrate_body(b, strlen(b), &r, &e), 0);
	assert_int_equal(r.compress_level, 0);
	api_migrate_req_free(&r);
	b = "{\"to\": \"/s\", \"compress\": \"zstd\"}";
	assert_int_equal(api_parse_migrate_body(b, strlen(b), &r, &e), 0);
	assert_int_equal(r.compress_level, MIGRATE_Z_LEVEL_DEFAULT);
	api_migrate_req_free(&r);
	b = "{\"to\": \"/s\", \"compress\": \"zstd:7\"}";
	assert_int_equal(api_parse_migrate_body(b, strlen(b), &r, &e), 0);
	assert_int_equal(r.compress_level, 7);
	api_migrate_req_free(&r);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&e, 0, sizeof(e));
		assert_int_equal(api_parse_migrate_body(bad[i], strlen(bad[i]), &r, &e), -1);
		assert_int_equal(e.http, 400);
		if (!strstr(e.msg, why[i]))
			fail_msg("%s: \"%s\" does not say \"%s\"", bad[i], e.msg, why[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_incompressible_raw),
		cmocka_unit_test(test_bad_frames),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_hello_options),
		cmocka_unit_test(test_daemon_body),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
