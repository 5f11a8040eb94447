/*
 * test_migrate_stream.c - the migration stream's reader (state/migrate.c),
 * without KVM:
 *   - a stream of sections written by the writer reads back and its ram
 *     records land in guest memory (data pages copied, zero pages zeroed);
 *   - a flipped byte fails the checksum, a truncated stream says it ended
 *     early, a bad magic or a bad section header is refused, a ram record
 *     outside RAM or cut short is refused, each with its own message.
 * The dirty tracking of host writes is test_guest_mem_dirty.c's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/guest_mem.h"
#include "base/state.h"
#include "state/migrate.h"

#define MEM (16u << 20)

/* A stream: magic, one "ram" section (2 data pages at 8 KiB, 3 zero pages
 * at 64 KiB), one "end" section. */
static size_t build(uint8_t **out)
{
	struct state_writer w;
	uint8_t page[4096];
	size_t start, mark;

	state_writer_init(&w);
	state_put_bytes(&w, MIGRATE_MAGIC, 8);
	start = w.len;
	mark = migrate_section_begin(&w, "ram");
	state_put_u64(&w, 8192 | MIGRATE_RAM_DATA);
	state_put_u32(&w, 2);
	memset(page, 0xab, sizeof(page));
	state_put_bytes(&w, page, sizeof(page));
	memset(page, 0xcd, sizeof(page));
	state_put_bytes(&w, page, sizeof(page));
	state_put_u64(&w, 65536 | MIGRATE_RAM_ZERO);
	state_put_u32(&w, 3);
	migrate_section_end(&w, start, mark);
	start = w.len;
	mark = migrate_section_begin(&w, "end");
	migrate_section_end(&w, start, mark);
	assert_false(w.error);
	*out = w.data;
	return w.len;
}

/* Feed `len` bytes of `buf` through a socket and read the stream back into
 * `m`; returns 0 or -1 with `e`. */
static int read_stream(const uint8_t *buf, size_t len, struct guest_mem *m, struct error *e)
{
	int fds[2], rc;
	struct migrate_in in = { 0 };

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_true(len < 65536);           /* fits the socket's buffer */
	assert_int_equal(write(fds[1], buf, len), (ssize_t)len);
	close(fds[1]);
	in.fd = fds[0];
	rc = migrate_read_magic(&in, e);
	while (!rc) {
		char name[64];
		const uint8_t *p;
		size_t n;

		rc = migrate_read_section(&in, name, &p, &n, e);
		if (rc)
			break;
		if (!strcmp(name, "end"))
			break;
		assert_string_equal(name, "ram");
		rc = migrate_apply_ram(m, p, n, e);
	}
	close(fds[0]);
	migrate_in_free(&in);
	return rc;
}

static void test_good_stream(void **state)
{
	struct guest_mem m;
	struct error e = { 0 };
	uint8_t *buf;
	size_t len = build(&buf);

	(void)state;
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	memset(m.host + 65536, 0x77, 3 * 4096);     /* zero records must clear it */
	assert_int_equal(read_stream(buf, len, &m, &e), 0);
	assert_int_equal(m.host[8192], 0xab);
	assert_int_equal(m.host[8192 + 4095], 0xab);
	assert_int_equal(m.host[12288], 0xcd);
	assert_int_equal(m.host[65536], 0);
	assert_int_equal(m.host[65536 + 3 * 4096 - 1], 0);
	assert_int_equal(m.host[4096], 0);
	free(buf);
	guest_mem_destroy(&m);
}

static void expect_refusal(size_t cut, long flip, const char *what)
{
	struct guest_mem m;
	struct error e = { 0 };
	uint8_t *buf;
	size_t len = build(&buf);

	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	if (flip >= 0)
		buf[flip] ^= 0x40;
	assert_int_equal(read_stream(buf, cut ? cut : len, &m, &e), -1);
	if (!strstr(e.msg, what))
		fail_msg("expected \"%s\" in: %s", what, e.msg);
	free(buf);
	guest_mem_destroy(&m);
}

static void test_corrupt_payload(void **state)
{
	(void)state;
	expect_refusal(0, 8 + 20 + 100, "fails its checksum");   /* inside page data */
}

static void test_truncated(void **state)
{
	(void)state;
	expect_refusal(8 + 3000, -1, "ended early");
	expect_refusal(8 + 2, -1, "ended early");
}

static void test_bad_magic(void **state)
{
	(void)state;
	expect_refusal(0, 2, "not a Shoal migration stream");
	expect_refusal(0, 8, "no section header");
}

static void test_huge_section(void **state)
{
	struct guest_mem m;
	struct error e = { 0 };
	uint8_t *buf;
	size_t len = build(&buf);
	uint32_t big = STATE_SECTION_MAX + 1;

	(void)state;
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	memcpy(buf + 8 + 5 + 3 + 2, &big, 4);         /* "ram": name 3 bytes */
	assert_int_equal(read_stream(buf, len, &m, &e), -1);
	assert_non_null(strstr(e.msg, "claims"));
	free(buf);
	guest_mem_destroy(&m);
}

/* A first section whose name has the 63 bytes a name may have: its header
 * (74 bytes) is read whole into the reader's buffer (it once held 71, and
 * the san-unit tier's ASan caught the write past it; found by
 * fuzz/fuzz_migrate.c). */
static void test_longest_name(void **state)
{
	struct state_writer w;
	struct error e = { 0 };
	struct migrate_in in = { 0 };
	char name[64], longest[64];
	const uint8_t *p;
	size_t start, mark, n;
	int fds[2];

	(void)state;
	memset(longest, 'n', 63);
	longest[63] = '\0';
	state_writer_init(&w);
	state_put_bytes(&w, MIGRATE_MAGIC, 8);
	start = w.len;
	mark = migrate_section_begin(&w, longest);
	state_put_u32(&w, 7);
	migrate_section_end(&w, start, mark);
	assert_false(w.error);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	assert_int_equal(write(fds[1], w.data, w.len), (ssize_t)w.len);
	close(fds[1]);
	in.fd = fds[0];
	assert_int_equal(migrate_read_magic(&in, &e), 0);
	assert_int_equal(migrate_read_section(&in, name, &p, &n, &e), 0);
	assert_string_equal(name, longest);
	assert_int_equal(n, 4);
	close(fds[0]);
	migrate_in_free(&in);
	state_writer_free(&w);
}

static void test_ram_out_of_range(void **state)
{
	struct guest_mem m;
	struct error e = { 0 };
	struct state_writer w;

	(void)state;
	assert_int_equal(guest_mem_create_anon(&m, MEM, &e), 0);
	state_writer_init(&w);
	state_put_u64(&w, (MEM - 4096) | MIGRATE_RAM_ZERO);
	state_put_u32(&w, 2);                               /* one page past the end */
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "outside"));
	w.len = 0;
	state_put_u64(&w, 0 | MIGRATE_RAM_DATA);
	state_put_u32(&w, 1);
	state_put_bytes(&w, "short", 5);                    /* the page is cut short */
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "cut short"));
	w.len = 0;
	state_put_u64(&w, 4096 | 3);                        /* no such kind */
	state_put_u32(&w, 1);
	assert_int_equal(migrate_apply_ram(&m, w.data, w.len, &e), -1);
	state_writer_free(&w);
	guest_mem_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_stream),
		cmocka_unit_test(test_corrupt_payload),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_magic),
		cmocka_unit_test(test_huge_section),
		cmocka_unit_test(test_ram_out_of_range),
		cmocka_unit_test(test_longest_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
