/*
 * test_migrate_disk.c - the pieces of disk migration that need no VM:
 *   - the dirty block bitmap (block/dirty_bitmap.c): marks cover every
 *     block a range touches and nothing past the disk, a take moves the
 *     marks out and clears them, runs come out in order and capped, and
 *     marks made by two threads while a third takes are never lost;
 *   - the destination's parsing (state/migrate_disk.c): a good "disks"
 *     section and "disk" records land in the target (data and zeroes); a
 *     size mismatch names both sizes; a disk not ours, read-only, listed
 *     twice, with unknown flags, a malformed list; a disk whose base has
 *     the source's chain identity is answered "top layer only", one with
 *     another id or generation (or none) "all"; records outside the
 *     disk, of an unknown kind, cut short, too long, for a disk not
 *     listed, or before the list: each refused with status 84 and its own
 *     message, and a bad record anywhere in a section writes nothing.
 * The whole path with a guest writing during the copy is
 * tests/system/migrate_disks.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/state.h"
#include "block/dirty_bitmap.h"
#include "state/migrate_disk.h"

/* ---- the bitmap ---- */

static void test_bitmap_marks(void **state)
{
	struct bd_dirty d;
	uint64_t out[4] = { 0 }, pos, n;

	(void)state;
	assert_int_equal(bd_dirty_init(&d, 1000, 256), -EINVAL);    /* under 512 */
	assert_int_equal(bd_dirty_init(&d, 1000, 1536), -EINVAL);   /* not a power of two */
	/* 130 blocks of 64 KiB and a partial one: 131 bits over 3 words */
	assert_int_equal(bd_dirty_init(&d, 130 * 65536ULL + 100, 65536), 0);
	assert_int_equal(d.nbits, 131);
	assert_int_equal(d.words, 3);
	bd_dirty_mark(&d, 65536 - 1, 2);            /* straddles blocks 0 and 1 */
	bd_dirty_mark(&d, 62 * 65536ULL, 3 * 65536); /* 62..64: across a word */
	bd_dirty_mark(&d, 130 * 65536ULL + 50, 1ULL << 40); /* clamped to the last block */
	bd_dirty_mark(&d, 131 * 65536ULL, 65536);   /* past the end: nothing */
	bd_dirty_mark(&d, 5 * 65536ULL, 0);         /* empty: nothing */
	assert_int_equal(bd_dirty_take(&d, out), 6);
	assert_int_equal(out[0], 3ULL | 3ULL << 62);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 1ULL << 2);        /* bit 130 */
	assert_int_equal(bd_bits_count(out, 131), 6);
	assert_int_equal(bd_dirty_take(&d, out), 0); /* taken means cleared */
	pos = 0;
	assert_true(bd_bits_next_run(out, 131, &pos, &n, 16));
	assert_int_equal(pos, 0);
	assert_int_equal(n, 2);
	pos += n;
	assert_true(bd_bits_next_run(out, 131, &pos, &n, 2)); /* capped at 2 */
	assert_int_equal(pos, 62);
	assert_int_equal(n, 2);
	pos += n;
	assert_true(bd_bits_next_run(out, 131, &pos, &n, 16));
	assert_int_equal(pos, 64);
	assert_int_equal(n, 1);
	pos += n;
	assert_true(bd_bits_next_run(out, 131, &pos, &n, 16));
	assert_int_equal(pos, 130);
	pos += n;
	assert_false(bd_bits_next_run(out, 131, &pos, &n, 16));
	bd_dirty_mark(&d, 0, 65536);
	bd_dirty_clear(&d);
	memset(out, 0, sizeof(out));
	assert_int_equal(bd_dirty_take(&d, out), 0);
	bd_dirty_free(&d);
}

#define RACE_BLOCKS 4096
struct racer {
	struct bd_dirty *d;
	int first;               /* marks blocks first, first+2, ... */
};

static void *race_mark(void *arg)
{
	struct racer *r = arg;

	for (int b = r->first; b < RACE_BLOCKS; b += 2)
		bd_dirty_mark(r->d, (uint64_t)b * 4096, 1);
	return NULL;
}

/* Two writers mark every block between them while the copier takes over
 * and over: the union of the takes is every block. */
static void test_bitmap_race(void **state)
{
	struct bd_dirty d;
	uint64_t out[RACE_BLOCKS / 64] = { 0 };
	struct racer r0 = { &d, 0 }, r1 = { &d, 1 };
	pthread_t t0, t1;

	(void)state;
	assert_int_equal(bd_dirty_init(&d, RACE_BLOCKS * 4096ULL, 4096), 0);
	assert_int_equal(pthread_create(&t0, NULL, race_mark, &r0), 0);
	assert_int_equal(pthread_create(&t1, NULL, race_mark, &r1), 0);
	for (int i = 0; i < 1000; i++)
		bd_dirty_take(&d, out);
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);
	bd_dirty_take(&d, out);
	assert_int_equal(bd_bits_count(out, RACE_BLOCKS), RACE_BLOCKS);
	bd_dirty_free(&d);
}

/* ---- the destination's parsing ---- */

#define DSIZE (4u << 20)

struct mem_disks {
	uint8_t *img[2];
	int writes;
};

static int mem_write(void *opaque, int disk, const void *buf, uint64_t off, uint64_t len)
{
	struct mem_disks *m = opaque;

	m->writes++;
	if (buf)
		memcpy(m->img[disk] + off, buf, len);
	else
		memset(m->img[disk] + off, 0, len);
	return 0;
}

/* Two disks: 0 writable of DSIZE, 1 read-only. */
static void target(struct migrate_disk_target *t, struct mem_disks *m)
{
	memset(t, 0, sizeof(*t));
	t->n = 2;
	t->size[0] = t->size[1] = DSIZE;
	t->writable[0] = true;
	t->path[0] = "dst0.img";
	t->path[1] = "seed.img";
	m->img[0] = malloc(DSIZE);
	m->img[1] = malloc(DSIZE);
	memset(m->img[0], 0xee, DSIZE);
	m->writes = 0;
	t->write = mem_write;
	t->opaque = m;
}

static void list(struct state_writer *w, uint32_t gran, uint32_t disk, uint64_t size,
		 uint32_t flags)
{
	w->len = 0;
	state_put_u32(w, gran);
	state_put_u32(w, 1);
	state_put_u32(w, disk);
	state_put_u64(w, size);
	state_put_u32(w, flags);
}

static void record(struct state_writer *w, uint8_t kind, uint64_t off, uint64_t len,
		   const void *data)
{
	state_put_u8(w, kind);
	state_put_u64(w, off);
	state_put_u64(w, len);
	if (data)
		state_put_bytes(w, data, (size_t)len);
}

static void test_good_disk(void **state)
{
	struct migrate_disk_target t;
	struct mem_disks m;
	struct state_writer w;
	struct error e = { 0 };
	uint8_t data[8192];

	(void)state;
	target(&t, &m);
	state_writer_init(&w);
	list(&w, 65536, 0, DSIZE, 0);
	assert_int_equal(migrate_disk_parse_list(&t, w.data, w.len, &e), 0);
	assert_true(t.announced[0]);
	w.len = 0;
	state_put_u32(&w, 0);
	memset(data, 0x5a, sizeof(data));
	record(&w, MIGRATE_DISK_DATA, 4096, sizeof(data), data);
	record(&w, MIGRATE_DISK_ZERO, 1 << 20, 3 << 20, NULL);     /* to the end */
	assert_int_equal(migrate_disk_apply(&t, w.data, w.len, &e), 0);
	assert_int_equal(m.writes, 2);
	assert_int_equal(m.img[0][4095], 0xee);
	assert_int_equal(m.img[0][4096], 0x5a);
	assert_int_equal(m.img[0][4096 + 8191], 0x5a);
	assert_int_equal(m.img[0][4096 + 8192], 0xee);
	assert_int_equal(m.img[0][1 << 20], 0);
	assert_int_equal(m.img[0][DSIZE - 1], 0);
	assert_int_equal(t.data_bytes, 8192);
	assert_int_equal(t.zero_bytes, 3 << 20);
	/* a second list is refused */
	list(&w, 65536, 0, DSIZE, 0);
	assert_int_equal(migrate_disk_parse_list(&t, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "second"));
	state_writer_free(&w);
	free(m.img[0]);
	free(m.img[1]);
}

/* One list that must be refused with `want` in its message. */
static void bad_list(struct state_writer *w, const char *want)
{
	struct migrate_disk_target t;
	struct mem_disks m;
	struct error e = { 0 };

	target(&t, &m);
	assert_int_equal(migrate_disk_parse_list(&t, w->data, w->len, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	if (!strstr(e.msg, want))
		fail_msg("'%s' not in '%s'", want, e.msg);
	assert_false(t.listed);
	free(m.img[0]);
	free(m.img[1]);
}

/* The source's base identity against ours: the answer for each case. */
static void test_top_only(void **state)
{
	static const char id[] = "0f1e2d3c-4b5a-4697-8877-665544332211";
	static const char other[] = "0f1e2d3c-4b5a-4697-8877-665544332212";
	struct { const char *ours, *theirs; uint64_t gen_ours, gen_theirs; uint8_t want; } c[] = {
		{ id, id, 5, 5, 1 },          /* the same base: the top layer only */
		{ id, other, 5, 5, 0 },       /* another image */
		{ id, id, 5, 6, 0 },          /* the same image, changed since */
		{ NULL, id, 0, 5, 0 },        /* no base (or one not to be trusted) here */
		{ id, NULL, 5, 0, 0 },        /* the source offers none */
	};

	(void)state;
	for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
		struct migrate_disk_target t;
		struct mem_disks m;
		struct state_writer w;
		struct error e = { 0 };
		uint32_t n;

		target(&t, &m);
		if (c[k].ours) {
			t.has_base[0] = true;
			memcpy(t.base_id[0], c[k].ours, 37);
			t.base_gen[0] = c[k].gen_ours;
		}
		state_writer_init(&w);
		list(&w, 65536, 0, DSIZE, c[k].theirs ? MIGRATE_DISK_F_BASE : 0);
		if (c[k].theirs) {
			state_put_bytes(&w, c[k].theirs, 36);
			state_put_u64(&w, c[k].gen_theirs);
		}
		assert_int_equal(migrate_disk_parse_list(&t, w.data, w.len, &e), 0);
		assert_int_equal(t.top_only[0], c[k].want);
		w.len = 0;
		migrate_disk_answer(&t, &w);
		assert_int_equal(w.len, 13);
		assert_memory_equal(w.data, MIGRATE_DISK_ANSWER, 8);
		memcpy(&n, w.data + 8, 4);
		assert_int_equal(n, 1);
		assert_int_equal(w.data[12], c[k].want);
		state_writer_free(&w);
		free(m.img[0]);
		free(m.img[1]);
	}
}

static void test_bad_lists(void **state)
{
	struct state_writer w;

	(void)state;
	state_writer_init(&w);
	list(&w, 65536, 0, DSIZE / 2, 0);
	bad_list(&w, "2097152 bytes (2 MiB), this one (dst0.img) 4194304 bytes (4 MiB)");
	list(&w, 65536, 2, DSIZE, 0);
	bad_list(&w, "this VM has 2 disks");
	list(&w, 65536, 1, DSIZE, 0);
	bad_list(&w, "read-only here");
	list(&w, 65536, 0, DSIZE, 2);
	bad_list(&w, "unknown flags");
	list(&w, 65536, 0, DSIZE, MIGRATE_DISK_F_BASE);          /* no identity follows */
	bad_list(&w, "cut short in disk 1 of 1");
	list(&w, 65536, 0, DSIZE, 0);
	state_put_u8(&w, 0);                                     /* a byte too many */
	bad_list(&w, "1 bytes after its 1 disks");
	list(&w, 1000, 0, DSIZE, 0);
	bad_list(&w, "power of two");
	list(&w, 65536, 0, DSIZE, 0);
	w.len -= 1;                                      /* cut short */
	bad_list(&w, "malformed");
	w.len = 0;
	state_put_u32(&w, 65536);
	state_put_u32(&w, 2);                            /* disk 0 twice */
	for (int i = 0; i < 2; i++) {
		state_put_u32(&w, 0);
		state_put_u64(&w, DSIZE);
		state_put_u32(&w, 0);
	}
	bad_list(&w, "listed twice");
	state_writer_free(&w);
}

/* A "disk" payload that must be refused with `want`, writing nothing. */
static void bad_disk(struct state_writer *w, const char *want, bool listed)
{
	struct migrate_disk_target t;
	struct mem_disks m;
	struct state_writer l;
	struct error e = { 0 };

	target(&t, &m);
	state_writer_init(&l);
	list(&l, 65536, 0, DSIZE, 0);
	if (listed)
		assert_int_equal(migrate_disk_parse_list(&t, l.data, l.len, &e), 0);
	assert_int_equal(migrate_disk_apply(&t, w->data, w->len, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	if (!strstr(e.msg, want))
		fail_msg("'%s' not in '%s'", want, e.msg);
	assert_int_equal(m.writes, 0);
	state_writer_free(&l);
	free(m.img[0]);
	free(m.img[1]);
}

static void test_bad_records(void **state)
{
	struct state_writer w;
	uint8_t *big = calloc(1, MIGRATE_DISK_CHUNK + 4096);

	(void)state;
	state_writer_init(&w);
	/* a good record first: the bad one after it must stop both */
#define GOOD() do { w.len = 0; state_put_u32(&w, 0); \
		    record(&w, MIGRATE_DISK_ZERO, 0, 4096, NULL); } while (0)
	GOOD();
	record(&w, MIGRATE_DISK_ZERO, DSIZE - 4096, 8192, NULL);
	bad_disk(&w, "outside the disk", true);
	GOOD();
	record(&w, MIGRATE_DISK_ZERO, ~0ULL - 10, 100, NULL);    /* wraps */
	bad_disk(&w, "outside the disk", true);
	GOOD();
	record(&w, MIGRATE_DISK_ZERO, 0, 0, NULL);
	bad_disk(&w, "outside the disk", true);
	GOOD();
	record(&w, 7, 0, 4096, NULL);
	bad_disk(&w, "unknown kind 7", true);
	GOOD();
	record(&w, MIGRATE_DISK_DATA, 0, 4096, big);
	w.len -= 1;                                              /* a byte short */
	bad_disk(&w, "4096 bytes of data, and 4095 follow", true);
	GOOD();
	record(&w, MIGRATE_DISK_DATA, 0, MIGRATE_DISK_CHUNK + 4096, big);
	bad_disk(&w, "at most", true);
	GOOD();
	state_put_u8(&w, MIGRATE_DISK_DATA);                     /* header cut short */
	state_put_u32(&w, 0);
	bad_disk(&w, "cut short", true);
	w.len = 0;
	state_put_u32(&w, 1);                                    /* disk 1: not listed */
	record(&w, MIGRATE_DISK_ZERO, 0, 4096, NULL);
	bad_disk(&w, "did not list", true);
	w.len = 0;
	state_put_u16(&w, 0);                                    /* no index */
	bad_disk(&w, "cut short", true);
	GOOD();
	bad_disk(&w, "before the disks section", false);
#undef GOOD
	state_writer_free(&w);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bitmap_marks),
		cmocka_unit_test(test_bitmap_race),
		cmocka_unit_test(test_good_disk),
		cmocka_unit_test(test_bad_lists),
		cmocka_unit_test(test_top_only),
		cmocka_unit_test(test_bad_records),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
