/*
 * test_virtio_balloon.c - the virtio-balloon model driven through the
 * virtio core directly (this file is the driver: split rings from
 * tests/ring_driver.h in a memfd guest memory, as the VMM makes it).
 *
 * Checked: inflated pages leave the memfd (its allocated blocks drop and
 * SEEK_DATA skips them) and read back as zeros; hostile PFNs (past RAM, in
 * the 32-bit hole, a torn one) are ignored and counted; deflate; the
 * target and `actual` in config space, with a config notification; the
 * statistics buffer parsed, held, given back on request, and a second one
 * while held breaking the device; free page reports released, whole pages
 * only, on queue 3 or 2 by the negotiated features; inflating more pages
 * than the VM has breaks it; save/restore with a held statistics buffer;
 * the JSON settings.  And the kernel fact docs/memory.md rests on: reading
 * a punched hole through the shared mapping allocates it again, pread()
 * does not.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#include "devices/config_dev.h"
#include "devices/virtio_balloon.h"
#include "base/layout.h"

#define MEM_SIZE  (32ull << 20)
#define RING_BASE 0x100000ull            /* queue q at RING_BASE + q * 0x10000 */
#define BUF_BASE  0x200000ull            /* PFN arrays, stats buffers */
#define DATA_BASE 0x800000ull            /* pages the tests give away */
#define QSIZE     16
#define PG        4096ull

struct fix {
	struct guest_mem mem;
	struct device_host host;
	struct virtio_device dev;
	struct ring_drv q[4];
	int config_irqs;
	uint64_t bump;
};

static void on_queue(struct virtio_device *dev, uint16_t q) { (void)dev; (void)q; }

static void on_config(struct virtio_device *dev)
{
	((struct fix *)dev->transport)->config_irqs++;
}

static uint64_t qbase(int q) { return RING_BASE + 0x10000ull * q; }

/* A live device on `size` bytes of memfd RAM with `features` acked. */
static void fix_init(struct fix *f, uint64_t size, uint64_t features)
{
	struct error e;
	struct balloon *b;
	int nq = 2 + !!(features & VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ)) +
		 !!(features & VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_REPORTING));

	memset(f, 0, sizeof(*f));
	assert_int_equal(guest_mem_create(&f->mem, size, &e), 0);
	f->host.mem = &f->mem;
	f->host.ram_size = size;
	f->bump = BUF_BASE;
	/* rings and buffers allocated up front, so the memfd's blocks change
	 * only by what the device releases */
	memset(guest_mem_ptr(&f->mem, RING_BASE, 0x40000), 0, 0x40000);
	memset(guest_mem_ptr(&f->mem, BUF_BASE, 1 << 20), 0, 1 << 20);
	b = virtio_balloon_new(&f->host, 0, &e);
	assert_non_null(b);
	assert_int_equal(virtio_device_init(&f->dev, virtio_balloon_ops(), b, &f->mem, "balloon0"), 0);
	f->dev.transport = f;
	f->dev.notify_queue = on_queue;
	f->dev.notify_config = on_config;
	virtio_set_status(&f->dev, 3);
	assert_int_equal(virtio_set_features(&f->dev, features | VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	assert_true(virtio_set_status(&f->dev, 11) & VIRTIO_STATUS_FEATURES_OK);
	for (int q = 0; q < nq; q++) {
		ring_drv_init(&f->q[q], &f->mem, QSIZE, false, qbase(q), qbase(q) + 0x4000,
			      qbase(q) + 0x8000, RING_RESTART);
		assert_int_equal(ring_attach(&f->q[q], &f->dev, (uint16_t)q), 0);
	}
	assert_int_equal(virtio_set_status(&f->dev, 15), 15);
}

static void fix_fini(struct fix *f)
{
	virtio_device_destroy(&f->dev);
	guest_mem_destroy(&f->mem);
}

static uint64_t blocks(struct fix *f)
{
	struct stat st;

	assert_int_equal(fstat(f->mem.fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static json_t *info(struct fix *f)
{
	json_t *o = virtio_balloon_vdev_info(&f->dev);

	assert_non_null(o);
	return o;
}

static long long info_int(struct fix *f, const char *key)
{
	json_t *o = info(f);
	long long v = json_integer_value(json_object_get(o, key));

	json_decref(o);
	return v;
}

/* Put `n` PFNs in one driver-readable buffer on queue q, kick, and check
 * that the device used it. */
static void send_pfns(struct fix *f, int q, const uint32_t *pfn, uint32_t n, uint32_t bytes)
{
	uint64_t g = f->bump;
	struct ring_buf buf = { g, bytes ? bytes : n * 4, false };
	uint16_t id;
	uint32_t len;

	f->bump += (n * 4 + 63) & ~63u;
	assert_int_equal(guest_mem_write(&f->mem, g, pfn, n * 4ull), 0);
	ring_add(&f->q[q], &buf, 1);
	virtio_queue_notify(&f->dev, (uint16_t)q);
	assert_true(ring_used(&f->q[q], &id, &len));
	assert_int_equal(len, 0);
}

/* Write every page of [gpa, gpa + n pages) so the memfd holds them. */
static void touch(struct fix *f, uint64_t gpa, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		memset(guest_mem_ptr(&f->mem, gpa + i * PG, PG), 0xa5, PG);
}

static void test_inflate_releases(void **state)
{
	struct fix f;
	uint32_t pfn[64];
	uint64_t before;
	uint8_t *p;

	fix_init(&f, MEM_SIZE, VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
	for (int i = 0; i < 64; i++)      /* two runs: 0..31, then every other page */
		pfn[i] = (uint32_t)(DATA_BASE / PG) + (i < 32 ? (uint32_t)i : 32 + 2u * (i - 32));
	touch(&f, DATA_BASE, 96);
	before = blocks(&f);
	send_pfns(&f, 0, pfn, 64, 0);
	assert_int_equal(before - blocks(&f), 64 * PG);
	assert_int_equal(lseek(f.mem.fd, (off_t)DATA_BASE, SEEK_DATA), (off_t)(DATA_BASE + 33 * PG));
	p = guest_mem_ptr(&f.mem, DATA_BASE, PG);
	assert_int_equal(p[0] | p[4095], 0);    /* a given page reads back as zeros */
	assert_int_equal(((uint8_t *)guest_mem_ptr(&f.mem, DATA_BASE + 33 * PG, 1))[0], 0xa5);
	assert_int_equal(info_int(&f, "inflated_pages"), 64);
	assert_int_equal(info_int(&f, "released_bytes"), 64 * PG);
	assert_int_equal(info_int(&f, "bad_pfns"), 0);
	assert_false(f.dev.broken);
	fix_fini(&f);
}

static unsigned holes;
static void count_hole(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque, (void)off, (void)len;
	holes++;
}

/* Inflate the n PFNs `pfn` (offsets in pages from DATA_BASE, over `pages`
 * touched pages) in one array, and check that the memfd let go of all
 * `pages`, in `want_holes` punched holes, with every PFN counted and none
 * bad. */
static void inflate_in_holes(const uint32_t *off, uint32_t n, uint32_t pages, unsigned want_holes)
{
	struct fix f;
	uint32_t pfn[256];
	uint64_t before;

	assert_true(n <= 256);
	fix_init(&f, MEM_SIZE, VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
	for (uint32_t i = 0; i < n; i++)
		pfn[i] = (uint32_t)(DATA_BASE / PG) + off[i];
	touch(&f, DATA_BASE, pages);
	f.mem.released = count_hole;
	holes = 0;
	before = blocks(&f);
	send_pfns(&f, 0, pfn, n, 0);
	assert_int_equal(before - blocks(&f), (uint64_t)pages * PG);
	assert_int_equal(holes, want_holes);
	assert_int_equal(info_int(&f, "inflated_pages"), n);
	assert_int_equal(info_int(&f, "bad_pfns"), 0);
	f.mem.released = NULL;
	fix_fini(&f);
}

/* Linux balloons pages mostly in descending order: the device sorts each
 * array, so 128 neighbours given high to low go in one punched hole (not
 * 128), and a PFN given twice is released and counted all the same. */
static void test_inflate_descending_one_hole(void **state)
{
	uint32_t off[129];

	(void)state;
	for (uint32_t i = 0; i < 128; i++)
		off[i] = 127u - i;
	off[128] = 5;                                   /* again */
	inflate_in_holes(off, 129, 128, 2);             /* the 128 pages, then page 5 again */
}

/* 256 PFNs in a scrambled order (a permutation of 256 pages), each array
 * sorted by the device: one hole for the lot. */
static void test_inflate_scrambled_one_hole(void **state)
{
	uint32_t off[256];

	(void)state;
	for (uint32_t i = 0; i < 256; i++)
		off[i] = (i * 97u) % 256u;                  /* 97 is prime to 256 */
	inflate_in_holes(off, 256, 256, 1);
}

/* Past RAM, in the 32-bit hole, the top PFN, a torn one: ignored, counted;
 * a page above 4 GiB is RAM and is released. */
static void test_hostile_pfns(void **state)
{
	struct fix f;
	uint64_t size = GUEST_MEM32_GAP_START + (16ull << 20), high = GUEST_MEM32_GAP_END;
	uint32_t pfn[6] = { (uint32_t)((GUEST_MEM32_GAP_START + 4 * PG) / PG),
			    (uint32_t)((high + (16ull << 20)) / PG),   /* just past the end */
			    0xffffffffu, (uint32_t)(high / PG),
			    (uint32_t)(GUEST_MEM32_GAP_START / PG) - 1, 0x1234 };
	uint64_t before;

	fix_init(&f, size, 0);
	touch(&f, high, 1);
	touch(&f, GUEST_MEM32_GAP_START - PG, 1);
	before = blocks(&f);
	send_pfns(&f, 0, pfn, 6, 4 * 6 - 2);    /* the last PFN torn: 22 bytes */
	assert_int_equal(info_int(&f, "bad_pfns"), 4);   /* hole, past end, top, torn */
	assert_int_equal(info_int(&f, "inflated_pages"), 2);
	assert_int_equal(before - blocks(&f), 2 * PG);
	assert_false(f.dev.broken);
	/* deflating garbage is counted the same way, and the device goes on */
	send_pfns(&f, 1, pfn, 3, 0);
	assert_int_equal(info_int(&f, "bad_pfns"), 7);
	assert_int_equal(info_int(&f, "deflated_pages"), 0);
	assert_false(f.dev.broken);
	fix_fini(&f);
}

static void test_deflate_and_config(void **state)
{
	struct fix f;
	uint32_t pfn[8], num = 0, actual = htole32(6), v = 0;
	json_t *o;

	fix_init(&f, MEM_SIZE, 0);
	for (int i = 0; i < 8; i++)
		pfn[i] = (uint32_t)(DATA_BASE / PG) + (uint32_t)i;
	virtio_balloon_vdev_set_target(&f.dev, 8);
	assert_int_equal(f.config_irqs, 1);
	assert_int_equal(virtio_config_read(&f.dev, 0, &num, 4), 0);
	assert_int_equal(le32toh(num), 8);
	send_pfns(&f, 0, pfn, 8, 0);
	assert_int_equal(virtio_config_write(&f.dev, 4, &actual, 4), 0);
	assert_int_equal(virtio_config_write(&f.dev, 0, &actual, 4), 0);   /* num_pages: not the driver's */
	assert_int_equal(virtio_config_read(&f.dev, 0, &num, 4), 0);
	assert_int_equal(le32toh(num), 8);
	assert_int_equal(virtio_config_read(&f.dev, 4, &v, 4), 0);
	assert_int_equal(le32toh(v), 6);
	send_pfns(&f, 1, pfn, 2, 0);
	o = info(&f);
	assert_int_equal(json_integer_value(json_object_get(o, "target_bytes")), 8 * PG);
	assert_int_equal(json_integer_value(json_object_get(o, "actual_bytes")), 6 * PG);
	assert_int_equal(json_integer_value(json_object_get(o, "deflated_pages")), 2);
	assert_true(json_is_false(json_object_get(o, "stats_queue")));
	json_decref(o);
	/* a deflated page is the guest's again: it writes and reads it */
	touch(&f, DATA_BASE, 1);
	assert_int_equal(((uint8_t *)guest_mem_ptr(&f.mem, DATA_BASE, 1))[0], 0xa5);
	/* the same target again sends no notification */
	virtio_balloon_vdev_set_target(&f.dev, 8);
	assert_int_equal(f.config_irqs, 1);
	fix_fini(&f);
}

/* One {le16 tag, le64 val} entry at `p`. */
static void put_stat(uint8_t *p, uint16_t tag, uint64_t val)
{
	tag = htole16(tag);
	val = htole64(val);
	memcpy(p, &tag, 2);
	memcpy(p + 2, &val, 8);
}

static int post_stats(struct fix *f, uint64_t free_mem)
{
	uint8_t st[30];
	struct ring_buf buf = { f->bump, sizeof(st), false };

	put_stat(st, 4, free_mem);          /* VIRTIO_BALLOON_S_MEMFREE */
	put_stat(st + 10, 5, 256ull << 20); /* VIRTIO_BALLOON_S_MEMTOT */
	put_stat(st + 20, 99, 7);           /* unknown: ignored */
	assert_int_equal(guest_mem_write(&f->mem, f->bump, st, sizeof(st)), 0);
	f->bump += 64;
	return ring_add(&f->q[2], &buf, 1);
}

static void test_stats(void **state)
{
	struct fix f;
	uint16_t id;
	uint32_t len;
	json_t *o, *s;
	int head;

	fix_init(&f, MEM_SIZE, VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
	assert_false(virtio_balloon_request_stats(&f.dev));   /* none held yet */
	head = post_stats(&f, 100ull << 20);
	virtio_queue_notify(&f.dev, 2);
	assert_false(ring_used(&f.q[2], &id, &len));           /* held */
	o = info(&f);
	s = json_object_get(o, "stats");
	assert_int_equal(json_integer_value(json_object_get(s, "free_memory")), 100ull << 20);
	assert_int_equal(json_integer_value(json_object_get(s, "total_memory")), 256ull << 20);
	assert_int_equal(json_object_size(s), 2);
	assert_int_equal(json_integer_value(json_object_get(o, "stats_updates")), 1);
	assert_true(json_is_true(json_object_get(o, "stats_queue")));
	json_decref(o);
	/* asking for new numbers gives the buffer back */
	assert_true(virtio_balloon_request_stats(&f.dev));
	assert_true(ring_used(&f.q[2], &id, &len));
	assert_int_equal(id, head);
	assert_false(virtio_balloon_request_stats(&f.dev));
	post_stats(&f, 90ull << 20);
	virtio_queue_notify(&f.dev, 2);
	o = info(&f);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "stats"), "free_memory")),
			 90ull << 20);
	json_decref(o);
	/* a second buffer while the device holds one: a flood, broken */
	post_stats(&f, 1);
	virtio_queue_notify(&f.dev, 2);
	assert_true(f.dev.broken);
	fix_fini(&f);
}

/* Free page reports: device-writable buffers, whole pages released. */
static void report_on(int q, uint64_t features)
{
	struct fix f;
	struct ring_buf bufs[2] = {
		{ DATA_BASE, 16 * PG, true },
		{ DATA_BASE + 64 * PG + 100, 3 * PG, true },   /* unaligned: 2 whole pages */
	};
	uint64_t before;
	uint16_t id;
	uint32_t len;

	fix_init(&f, MEM_SIZE, features | VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_REPORTING));
	touch(&f, DATA_BASE, 80);
	before = blocks(&f);
	ring_add(&f.q[q], bufs, 2);
	virtio_queue_notify(&f.dev, (uint16_t)q);
	assert_true(ring_used(&f.q[q], &id, &len));
	assert_int_equal(len, 0);
	assert_int_equal(before - blocks(&f), 18 * PG);
	assert_int_equal(info_int(&f, "reports"), 1);
	assert_int_equal(info_int(&f, "reported_bytes"), 19 * PG);
	assert_int_equal(info_int(&f, "released_bytes"), 18 * PG);
	assert_int_equal(((uint8_t *)guest_mem_ptr(&f.mem, DATA_BASE + 64 * PG, 1))[0], 0xa5);
	assert_int_equal(((uint8_t *)guest_mem_ptr(&f.mem, DATA_BASE + 67 * PG, 1))[0], 0xa5);
	assert_false(f.dev.broken);
	fix_fini(&f);
}

static void test_reporting(void **state)
{
	report_on(3, VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
	report_on(2, 0);                   /* no statsq: reporting_vq is queue 2 */
}

static void test_inflate_past_ram(void **state)
{
	struct fix f;
	uint32_t pfn[256];

	fix_init(&f, 16ull << 20, 0);       /* 4096 pages */
	for (int i = 0; i < 256; i++)
		pfn[i] = (uint32_t)(DATA_BASE / PG);   /* the same page, again and again */
	for (int k = 0; k < 16; k++)
		send_pfns(&f, 0, pfn, 256, 0);
	assert_false(f.dev.broken);
	assert_int_equal(info_int(&f, "inflated_pages"), 4096);
	{
		struct ring_buf buf = { f.bump, 4, false };

		assert_int_equal(guest_mem_write(&f.mem, f.bump, pfn, 4), 0);
		ring_add(&f.q[0], &buf, 1);
		virtio_queue_notify(&f.dev, 0);
	}
	assert_true(f.dev.broken);
	fix_fini(&f);
}

static void test_save_restore(void **state)
{
	struct fix f, g;
	struct state_writer w;
	struct state_reader r;
	uint32_t pfn[4] = { 0x800, 0x801, 0x802, 0x9999999 };
	uint16_t id;
	uint32_t len;
	json_t *o;
	int head;

	fix_init(&f, MEM_SIZE, VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
	virtio_balloon_vdev_set_target(&f.dev, 3);
	send_pfns(&f, 0, pfn, 4, 0);
	head = post_stats(&f, 5ull << 20);
	virtio_queue_notify(&f.dev, 2);
	state_writer_init(&w);
	virtio_device_save(&f.dev, &w);

	/* the restored device is a second one on the same memory */
	memset(&g, 0, sizeof(g));
	g.mem = f.mem;
	g.host.mem = &g.mem;
	{
		struct error e;
		struct balloon *b = virtio_balloon_new(&g.host, 0, &e);

		assert_non_null(b);
		assert_int_equal(virtio_device_init(&g.dev, virtio_balloon_ops(), b, &g.mem, "b1"), 0);
	}
	g.dev.transport = &g;
	g.dev.notify_queue = on_queue;
	g.dev.notify_config = on_config;
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&g.dev, 1, &r), 0);
	o = virtio_balloon_vdev_info(&g.dev);
	assert_int_equal(json_integer_value(json_object_get(o, "target_bytes")), 3 * PG);
	assert_int_equal(json_integer_value(json_object_get(o, "inflated_pages")), 3);
	assert_int_equal(json_integer_value(json_object_get(o, "bad_pfns")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "stats"), "free_memory")),
			 5ull << 20);
	json_decref(o);
	/* the held statistics buffer came across: the new device gives it back */
	assert_true(virtio_balloon_request_stats(&g.dev));
	assert_true(ring_used(&f.q[2], &id, &len));
	assert_int_equal(id, head);

	/* a truncated state is refused */
	state_reader_init(&r, w.data, w.len - 3);
	assert_int_not_equal(virtio_device_restore(&g.dev, 1, &r), 0);
	state_writer_free(&w);
	virtio_device_destroy(&g.dev);
	fix_fini(&f);
}

/* The kernel fact behind docs/memory.md: a hole punched in a shared memfd
 * is allocated again (a zeroed page) by a read through the mapping, while
 * pread() of it reads zeros without allocating. */
static void test_hole_read_fault(void **state)
{
	struct fix f;
	uint8_t buf[PG];
	volatile uint8_t *p;
	uint64_t base;

	fix_init(&f, MEM_SIZE, 0);
	touch(&f, DATA_BASE, 16);
	p = guest_mem_ptr(&f.mem, DATA_BASE, 16 * PG);
	assert_int_equal(guest_mem_discard(&f.mem, (void *)p, 16 * PG), 0);
	base = blocks(&f);
	assert_int_equal(pread(f.mem.fd, buf, PG, (off_t)DATA_BASE), (ssize_t)PG);
	assert_int_equal(buf[0], 0);
	assert_int_equal(blocks(&f), base);              /* read(): no allocation */
	for (int i = 0; i < 16; i++)
		assert_int_equal(p[i * PG], 0);
	assert_int_equal(blocks(&f) - base, 16 * PG);    /* a mapped read fault: allocated */
	/* and a bad range is refused */
	assert_int_equal(guest_mem_discard(&f.mem, (void *)(p + 1), PG), -1);
	assert_int_equal(guest_mem_discard(&f.mem, (void *)p, MEM_SIZE), -1);
	fix_fini(&f);
}

static void test_config_json(void **state)
{
	struct error e;
	bool on = false;
	uint32_t s = 0;
	json_t *v;

	v = json_loads("{\"stats_interval\": 2}", 0, NULL);
	assert_int_equal(balloon_config_from_json(&on, &s, v, "t", &e), 0);
	json_decref(v);
	assert_true(on);
	assert_int_equal(s, 2);
	v = balloon_config_to_json(on, s);
	assert_int_equal(json_integer_value(json_object_get(v, "stats_interval")), 2);
	json_decref(v);
	v = json_false();
	assert_int_equal(balloon_config_from_json(&on, &s, v, "t", &e), 0);
	assert_false(on);
	v = balloon_config_to_json(false, 0);
	assert_true(json_is_false(v));
	json_decref(v);
	on = true;
	v = json_loads("{\"stats_interval\": 0}", 0, NULL);
	assert_int_equal(balloon_config_from_json(&on, &s, v, "vm.json", &e), -1);
	assert_non_null(strstr(e.msg, "vm.json: \"balloon\" must be"));
	json_decref(v);
	v = json_string("yes");
	assert_int_equal(balloon_config_from_json(&on, &s, v, "t", &e), -1);
	json_decref(v);
	assert_true(on);
	assert_int_equal(s, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inflate_releases),
		cmocka_unit_test(test_inflate_descending_one_hole),
		cmocka_unit_test(test_inflate_scrambled_one_hole),
		cmocka_unit_test(test_hostile_pfns),
		cmocka_unit_test(test_deflate_and_config),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_reporting),
		cmocka_unit_test(test_inflate_past_ram),
		cmocka_unit_test(test_save_restore),
		cmocka_unit_test(test_hole_read_fault),
		cmocka_unit_test(test_config_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
