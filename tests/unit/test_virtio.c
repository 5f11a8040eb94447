/*
 * test_virtio.c - the transport-independent virtio device core: status
 * state machine, feature negotiation (legacy 32-bit view and modern),
 * reset, config space bounds, the broken state, and save/restore with a
 * request in flight, all through a toy echo device defined here.
 *
 * The echo device has one queue: each request's device-readable bytes are
 * copied into its device-writable buffers.  In "hold" mode it keeps the
 * elements it popped and completes them only when told, so a test can save
 * the device with requests in flight.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio.h"

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#define MEM_SIZE  (16u << 20)
#define DESC_GPA  0x10000ull
#define AVAIL_GPA 0x20000ull
#define USED_GPA  0x30000ull
#define BUF_GPA   0x100000ull
#define QSIZE     8
#define ECHO_F_TOY 0                 /* a device-specific feature bit */

struct echo {
	int activated, resets, destroyed;
	uint32_t cfg[2];                 /* config: u32 magic (ro), u32 scratch */
	bool hold;
	int nheld;
	struct virtq_elem held[2];
};

static uint64_t echo_features(struct virtio_device *dev)
{
	return VIRTIO_BIT(ECHO_F_TOY) | VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
}

static void echo_config_read(struct virtio_device *dev, uint32_t off, void *data, uint32_t len)
{
	struct echo *e = dev->priv;

	memcpy(data, (uint8_t *)e->cfg + off, len);
}

static void echo_config_write(struct virtio_device *dev, uint32_t off, const void *data,
			      uint32_t len)
{
	struct echo *e = dev->priv;

	if (off >= 4)
		memcpy((uint8_t *)e->cfg + off, data, len);
}

/* Copy the request's out bytes into its in buffers and complete it. */
static void echo_one(struct virtio_device *dev, struct virtq_elem *el)
{
	uint8_t buf[4096];
	size_t n = virtq_elem_read(el, 0, buf, sizeof(buf));

	n = virtq_elem_write(el, 0, buf, n);
	virtio_queue_complete(dev, &dev->queues[0], el, (uint32_t)n);
}

static void echo_notify(struct virtio_device *dev, uint16_t q)
{
	struct echo *e = dev->priv;
	struct virtq_elem el;

	for (;;) {
		struct virtq_elem *slot = e->hold && e->nheld < 2 ? &e->held[e->nheld] : &el;

		if (e->hold && e->nheld == 2)
			return;
		if (virtio_queue_pop(dev, &dev->queues[q], slot) != 1)
			return;
		if (e->hold)
			e->nheld++;
		else
			echo_one(dev, slot);
	}
}

static int echo_activate(struct virtio_device *dev)
{
	((struct echo *)dev->priv)->activated++;
	return 0;
}

static void echo_reset(struct virtio_device *dev)
{
	struct echo *e = dev->priv;

	e->resets++;
	e->nheld = 0;
	e->cfg[1] = 0;
}

static void echo_save(struct virtio_device *dev, struct state_writer *w)
{
	struct echo *e = dev->priv;

	state_put_u32(w, e->cfg[1]);
	state_put_u8(w, (uint8_t)e->nheld);
	for (int i = 0; i < e->nheld; i++)
		virtq_elem_save(&e->held[i], w);
}

static int echo_restore(struct virtio_device *dev, uint16_t version, struct state_reader *r)
{
	struct echo *e = dev->priv;

	e->cfg[1] = state_get_u32(r);
	e->nheld = state_get_u8(r);
	if (r->error || e->nheld > 2)
		return -1;
	for (int i = 0; i < e->nheld; i++)
		if (virtq_elem_restore(&dev->queues[0], r, &e->held[i]))
			return -1;
	return 0;
}

static void echo_destroy(struct virtio_device *dev)
{
	((struct echo *)dev->priv)->destroyed++;
}

static const struct virtio_device_ops echo_ops = {
	.device_id = 0x7fff,
	.name = "virtio-echo",
	.num_queues = 1,
	.queue_max_size = QSIZE,
	.config_size = 8,
	.state_version = 1,
	.features = echo_features,
	.config_read = echo_config_read,
	.config_write = echo_config_write,
	.queue_notify = echo_notify,
	.activate = echo_activate,
	.reset = echo_reset,
	.save = echo_save,
	.restore = echo_restore,
	.destroy = echo_destroy,
};

/* ---- a test fixture: memory, device, transport callbacks, driver ---- */

struct fix {
	struct guest_mem mem;
	struct virtio_device dev;
	struct echo echo;
	int irqs, config_irqs;
	struct ring_drv q;              /* the driver side of queue 0 */
};

static struct fix *fix_of(struct virtio_device *dev) { return dev->transport; }
static void on_irq(struct virtio_device *dev, uint16_t q) { fix_of(dev)->irqs++; }
static void on_config(struct virtio_device *dev) { fix_of(dev)->config_irqs++; }

static void *gp(struct fix *f, uint64_t gpa, uint64_t len)
{
	return ring_ptr(&f->mem, gpa, len);
}

static void fix_init(struct fix *f)
{
	struct error e;

	memset(f, 0, sizeof(*f));
	assert_int_equal(guest_mem_create_anon(&f->mem, MEM_SIZE, &e), 0);
	assert_int_equal(virtio_device_init(&f->dev, &echo_ops, &f->echo, &f->mem, "echo0"), 0);
	f->echo.cfg[0] = 0x4f484345;     /* "ECHO" */
	f->dev.transport = f;
	f->dev.notify_queue = on_irq;
	f->dev.notify_config = on_config;
	ring_drv_init(&f->q, &f->mem, QSIZE, false, DESC_GPA, AVAIL_GPA, USED_GPA, RING_WRAP);
}

static void fix_fini(struct fix *f)
{
	virtio_device_destroy(&f->dev);
	guest_mem_destroy(&f->mem);
}

/* Modern driver bring-up, as virtio-pci's common config would see it. */
static void fix_modern_up(struct fix *f, uint64_t features)
{
	struct virtqueue *vq = &f->dev.queues[0];

	assert_int_equal(virtio_set_status(&f->dev, VIRTIO_STATUS_ACKNOWLEDGE), 1);
	virtio_set_status(&f->dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	virtio_features_write(&f->dev, 0, (uint32_t)features);
	virtio_features_write(&f->dev, 1, (uint32_t)(features >> 32));
	assert_true(virtio_set_status(&f->dev, 11) & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(ring_attach(&f->q, &f->dev, 0), 0);
	assert_int_equal(virtio_set_status(&f->dev, 15), 15);
	f->q.packed = features & VIRTIO_BIT(VIRTIO_F_RING_PACKED);
	assert_int_equal(vq->packed, f->q.packed);
	assert_true(vq->started);
}

/* The driver's count of chains (packed: buffer ids) so far: where its
 * next buffers go. */
static uint16_t drv_count(const struct fix *f)
{
	return f->q.packed ? f->q.next_id : f->q.next_desc;
}

/* The driver posts "out" bytes and one writable buffer; returns the id. */
static uint16_t drv_post(struct fix *f, const char *out, uint32_t in_len)
{
	uint32_t olen = (uint32_t)strlen(out);
	uint64_t ob = BUF_GPA + 0x2000ull * drv_count(f), ib = ob + 0x1000;
	struct ring_buf b[2] = { { ob, olen, false }, { ib, in_len, true } };

	memcpy(gp(f, ob, olen), out, olen);
	memset(gp(f, ib, in_len), 0, in_len);
	return (uint16_t)ring_add(&f->q, b, 2);
}

/* The driver reaps one completion: true with id and len. */
static bool drv_reap(struct fix *f, uint16_t *id, uint32_t *len)
{
	return ring_used(&f->q, id, len);
}

#define MODERN (VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(ECHO_F_TOY))

/* ---- tests ---- */

static void test_init_and_features(void **state)
{
	struct fix f;
	struct virtio_device bad;
	struct virtio_device_ops odd = echo_ops;

	fix_init(&f);
	assert_true(f.dev.host_features & VIRTIO_BIT(ECHO_F_TOY));
	assert_int_equal(f.dev.host_features & VIRTIO_CORE_FEATURES, VIRTIO_CORE_FEATURES);
	assert_false(f.dev.host_features & VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM));
	assert_int_equal(virtio_features_read(&f.dev, 0), (uint32_t)f.dev.host_features);
	assert_int_equal(virtio_features_read(&f.dev, 1), (uint32_t)(f.dev.host_features >> 32));
	assert_int_equal(virtio_features_read(&f.dev, 2), 0);
	assert_int_equal(f.dev.queues[0].size, QSIZE);
	/* The legacy view: only the low 32 bits, and a write clears the rest. */
	f.dev.legacy = true;
	assert_int_equal(virtio_features_read(&f.dev, 1), 0);
	f.dev.guest_features = ~0ull;
	virtio_features_write(&f.dev, 0, 3);
	assert_int_equal(f.dev.guest_features, 3 & f.dev.host_features);
	virtio_features_write(&f.dev, 1, 1);
	assert_int_equal(f.dev.guest_features, 3 & f.dev.host_features);
	/* ... and what a legacy driver acks beyond the offer is dropped. */
	virtio_features_write(&f.dev, 0, 0xffffffffu);
	assert_int_equal(f.dev.guest_features, f.dev.host_features & 0xffffffffull);
	assert_int_equal(virtio_set_features(&f.dev, VIRTIO_BIT(60)), -EINVAL);
	assert_int_equal(virtio_set_features(&f.dev, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	fix_fini(&f);
	assert_int_equal(f.echo.destroyed, 1);
	odd.queue_max_size = 12;            /* not a power of two */
	assert_int_equal(virtio_device_init(&bad, &odd, NULL, NULL, NULL), -EINVAL);
	odd.queue_max_size = 8;
	odd.num_queues = 0;
	assert_int_equal(virtio_device_init(&bad, &odd, NULL, NULL, NULL), -EINVAL);
}

static void test_status_machine(void **state)
{
	struct fix f;
	uint8_t s;

	fix_init(&f);
	/* DRIVER_OK before FEATURES_OK is refused for a modern driver. */
	virtio_set_status(&f.dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	s = virtio_set_status(&f.dev, 7);
	assert_int_equal(s, 3);
	assert_int_equal(f.echo.activated, 0);
	/* A feature that was not offered: FEATURES_OK stays clear. */
	virtio_features_write(&f.dev, 0, 1u << 5);
	virtio_features_write(&f.dev, 1, 1);
	assert_int_equal(virtio_set_status(&f.dev, 11), 3);
	/* No VERSION_1 from a modern driver: refused too. */
	virtio_features_write(&f.dev, 0, 1);
	virtio_features_write(&f.dev, 1, 0);
	assert_int_equal(virtio_set_status(&f.dev, 11), 3);
	/* A good set is accepted, then feature writes are ignored. */
	virtio_features_write(&f.dev, 0, 1);
	virtio_features_write(&f.dev, 1, 1);
	assert_int_equal(virtio_set_status(&f.dev, 11), 11);
	virtio_features_write(&f.dev, 0, 0xff);
	assert_int_equal(f.dev.guest_features, MODERN);
	/* The driver cannot clear bits except by writing 0. */
	assert_int_equal(virtio_set_status(&f.dev, 1), 11);
	assert_int_equal(virtio_set_status(&f.dev, 15), 15);
	assert_int_equal(f.echo.activated, 1);
	assert_int_equal(virtio_set_status(&f.dev, 15), 15);
	assert_int_equal(f.echo.activated, 1);          /* once per DRIVER_OK */
	assert_int_equal(virtio_set_status(&f.dev, 15 | VIRTIO_STATUS_FAILED), 143);
	/* A queue that was never made ready is not started at DRIVER_OK. */
	assert_false(f.dev.queues[0].started);
	assert_int_equal(virtio_set_status(&f.dev, 0), 0);
	assert_int_equal(f.echo.resets, 1);
	assert_int_equal(f.dev.guest_features, 0);
	fix_fini(&f);
}

static void run_echo(uint64_t features)
{
	struct fix f;
	uint16_t id, rid;
	uint32_t len;

	fix_init(&f);
	fix_modern_up(&f, features);
	for (int round = 0; round < 20; round++) {
		char msg[32];

		snprintf(msg, sizeof(msg), "ping %d", round);
		id = drv_post(&f, msg, 64);
		virtio_queue_notify(&f.dev, 0);
		assert_true(drv_reap(&f, &rid, &len));
		assert_int_equal(rid, id);
		assert_int_equal(len, strlen(msg));
		assert_memory_equal(gp(&f, BUF_GPA + 0x2000ull * (drv_count(&f) - (f.q.packed ? 1 : 2)) + 0x1000,
				       len), msg, len);
	}
	assert_int_equal(f.dev.stats.requests, 20);
	assert_int_equal(f.dev.stats.kicks, 20);
	assert_true(f.irqs >= 1 && f.irqs <= 20);
	assert_int_equal(f.dev.stats.interrupts, (uint64_t)f.irqs);
	fix_fini(&f);
}

static void test_echo_split(void **state) { run_echo(MODERN); }
static void test_echo_split_event_idx(void **state)
{
	run_echo(MODERN | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
}
static void test_echo_packed(void **state)
{
	run_echo(MODERN | VIRTIO_BIT(VIRTIO_F_RING_PACKED) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
}

/* A legacy driver: no FEATURES_OK, 32-bit features, one contiguous ring at
 * a page frame with the used ring 4 KiB aligned. */
static void test_legacy_driver(void **state)
{
	struct fix f;
	struct virtqueue *vq;
	uint16_t id, rid;
	uint32_t len;

	fix_init(&f);
	vq = &f.dev.queues[0];
	f.dev.legacy = true;
	virtio_set_status(&f.dev, 3);
	virtio_features_write(&f.dev, 0, virtio_features_read(&f.dev, 0));
	assert_false(virtio_has_feature(&f.dev, VIRTIO_F_VERSION_1));
	virtq_set_legacy_layout(vq, DESC_GPA, VIRTQ_LEGACY_ALIGN);
	assert_int_equal(vq->avail_gpa, DESC_GPA + 16 * QSIZE);
	assert_int_equal(vq->used_gpa, DESC_GPA + 0x1000);
	assert_int_equal(virtio_queue_set_ready(&f.dev, 0, true), 0);
	assert_int_equal(virtio_set_status(&f.dev, 7), 7);   /* no FEATURES_OK */
	assert_int_equal(f.echo.activated, 1);
	assert_true(vq->started && vq->event_idx && vq->indirect && !vq->packed);
	/* Drive the ring where the legacy layout put it. */
	{
		struct virtq_desc d0 = { BUF_GPA, 3, VIRTQ_DESC_F_NEXT, 1 };
		struct virtq_desc d1 = { BUF_GPA + 0x1000, 16, VIRTQ_DESC_F_WRITE, 0 };

		memcpy(gp(&f, BUF_GPA, 3), "abc", 3);
		memcpy(gp(&f, DESC_GPA, 16), &d0, 16);
		memcpy(gp(&f, DESC_GPA + 16, 16), &d1, 16);
		*(uint16_t *)gp(&f, vq->avail_gpa + 4, 2) = 0;
		*(uint16_t *)gp(&f, vq->avail_gpa + 2, 2) = 1;
		id = 0;
	}
	virtio_queue_notify(&f.dev, 0);
	{
		uint16_t uidx = *(uint16_t *)gp(&f, vq->used_gpa + 2, 2);

		rid = (uint16_t)*(uint32_t *)gp(&f, vq->used_gpa + 4, 4);
		len = *(uint32_t *)gp(&f, vq->used_gpa + 8, 4);
		assert_int_equal(uidx, 1);
	}
	assert_int_equal(rid, id);
	assert_int_equal(len, 3);
	assert_memory_equal(gp(&f, BUF_GPA + 0x1000, 3), "abc", 3);
	fix_fini(&f);
}

/* Kicks before DRIVER_OK, for bad queues, or after a break are ignored;
 * buffers posted before DRIVER_OK are served when it is set. */
static void test_notify_rules(void **state)
{
	struct fix f;
	uint16_t rid;
	uint32_t len;

	fix_init(&f);
	virtio_queue_notify(&f.dev, 0);
	virtio_queue_notify(&f.dev, 7);
	assert_int_equal(f.dev.stats.kicks, 2);
	assert_int_equal(virtio_queue_set_ready(&f.dev, 3, true), -1);
	/* Post before DRIVER_OK (as virtio-net fills its receive queue). */
	virtio_set_status(&f.dev, 3);
	virtio_features_write(&f.dev, 1, 1);
	virtio_set_status(&f.dev, 11);
	f.dev.queues[0].desc_gpa = DESC_GPA;
	f.dev.queues[0].avail_gpa = AVAIL_GPA;
	f.dev.queues[0].used_gpa = USED_GPA;
	virtio_queue_set_ready(&f.dev, 0, true);
	drv_post(&f, "early", 8);
	assert_false(drv_reap(&f, &rid, &len));
	virtio_set_status(&f.dev, 15);
	assert_true(drv_reap(&f, &rid, &len));
	assert_int_equal(len, 5);
	fix_fini(&f);
}

/* A hostile chain breaks the device: NEEDS_RESET, a config interrupt, and
 * nothing more is served until reset. */
static void test_broken_device(void **state)
{
	struct fix f;
	struct virtq_desc loop = { BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 0 };

	fix_init(&f);
	fix_modern_up(&f, MODERN);
	memcpy(gp(&f, DESC_GPA, 16), &loop, 16);
	*(uint16_t *)gp(&f, AVAIL_GPA + 2, 2) = 1;
	virtio_queue_notify(&f.dev, 0);
	assert_true(f.dev.broken);
	assert_non_null(strstr(f.dev.broken_reason, "loops"));
	assert_true(f.dev.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_int_equal(f.config_irqs, 1);
	virtio_queue_notify(&f.dev, 0);
	assert_int_equal(f.dev.stats.requests, 0);
	/* The driver's read-modify-write of status keeps NEEDS_RESET. */
	assert_true(virtio_set_status(&f.dev, 15) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	virtio_reset(&f.dev);
	assert_false(f.dev.broken);
	assert_false(f.dev.queues[0].broken);
	assert_int_equal(f.dev.status, 0);
	/* A queue whose rings are outside RAM breaks the device at DRIVER_OK. */
	virtio_set_status(&f.dev, 3);
	virtio_features_write(&f.dev, 1, 1);
	virtio_set_status(&f.dev, 11);
	f.dev.queues[0].desc_gpa = MEM_SIZE;
	virtio_queue_set_ready(&f.dev, 0, true);
	virtio_set_status(&f.dev, 15);
	assert_true(f.dev.broken);
	assert_int_equal(f.echo.activated, 1);          /* not activated again */
	fix_fini(&f);
}

static void test_config_space(void **state)
{
	struct fix f;
	uint32_t v = 0xdeadbeef;
	uint64_t big = 1;

	fix_init(&f);
	assert_int_equal(virtio_config_read(&f.dev, 0, &v, 4), 0);
	assert_int_equal(v, 0x4f484345);
	assert_int_equal(virtio_config_write(&f.dev, 4, "\x01\x02", 2), 0);
	assert_int_equal(virtio_config_read(&f.dev, 4, &v, 4), 0);
	assert_int_equal(v, 0x0201);
	assert_int_equal(virtio_config_read(&f.dev, 6, &v, 4), -1);     /* runs past 8 */
	assert_int_equal(v, 0);
	assert_int_equal(virtio_config_read(&f.dev, 0xffffffffu, &v, 2), -1);
	assert_int_equal(virtio_config_read(&f.dev, 0, &big, 0), -1);
	assert_int_equal(virtio_config_write(&f.dev, 8, &v, 1), -1);
	assert_int_equal(virtio_config_read(&f.dev, 0, &big, 8), 0);
	/* Config change: generation moves; interrupt only once live. */
	virtio_notify_config(&f.dev);
	assert_int_equal(f.dev.config_generation, 1);
	assert_int_equal(f.config_irqs, 0);
	fix_modern_up(&f, MODERN);
	virtio_notify_config(&f.dev);
	assert_int_equal(f.dev.config_generation, 2);
	assert_int_equal(f.config_irqs, 1);
	fix_fini(&f);
}

/* Save with two requests in flight (held by the device), restore into a
 * fresh device over the same memory, and finish them there. */
static void run_save_restore(uint64_t features)
{
	static struct fix f, g;
	struct state_writer w;
	struct state_reader r;
	uint16_t id[3], rid;
	uint32_t len;

	fix_init(&f);
	fix_modern_up(&f, features);
	f.echo.hold = true;
	f.echo.cfg[1] = 77;
	id[0] = drv_post(&f, "one", 8);
	id[1] = drv_post(&f, "two!", 8);
	virtio_queue_notify(&f.dev, 0);
	assert_int_equal(f.echo.nheld, 2);
	id[2] = drv_post(&f, "three", 8);           /* available, not yet popped */
	state_writer_init(&w);
	virtio_device_save(&f.dev, &w);
	assert_false(w.error);

	/* The destination: same memory (as after a snapshot load), new device. */
	memset(&g, 0, sizeof(g));
	g.mem = f.mem;
	assert_int_equal(virtio_device_init(&g.dev, &echo_ops, &g.echo, &g.mem, "echo1"), 0);
	g.dev.transport = &g;
	g.dev.notify_queue = on_irq;
	g.dev.notify_config = on_config;
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&g.dev, 1, &r), 0);
	assert_int_equal(r.pos, r.len);
	assert_int_equal(g.dev.status, 15);
	assert_int_equal(g.dev.guest_features, f.dev.guest_features);
	assert_true(g.dev.queues[0].started);
	assert_int_equal(g.echo.cfg[1], 77);
	assert_int_equal(g.echo.nheld, 2);
	assert_int_equal(g.dev.stats.kicks, 1);
	/* Finish the held pair, then the third request through a kick. */
	for (int i = 0; i < 2; i++)
		echo_one(&g.dev, &g.echo.held[i]);
	g.echo.hold = false;
	virtio_queue_notify(&g.dev, 0);
	g.q = f.q;                          /* the same rings, reaped from the start */
	g.q.mem = &g.mem;
	g.q.used_seen = g.q.used_slot = 0;
	g.q.used_wrap = true;
	for (int i = 0; i < 3; i++) {
		static const uint32_t want[] = { 3, 4, 5 };

		assert_true(drv_reap(&g, &rid, &len));
		assert_int_equal(rid, id[i]);
		assert_int_equal(len, want[i]);
	}
	assert_false(drv_reap(&g, &rid, &len));
	/* Every truncation of the state is refused. */
	for (size_t cut = 0; cut < w.len; cut++) {
		struct virtio_device h;
		struct echo he = { 0 };

		assert_int_equal(virtio_device_init(&h, &echo_ops, &he, &g.mem, "echo2"), 0);
		state_reader_init(&r, w.data, cut);
		assert_int_equal(virtio_device_restore(&h, 1, &r), -1);
		virtio_device_destroy(&h);
	}
	state_writer_free(&w);
	virtio_device_destroy(&g.dev);
	fix_fini(&f);
}

/* Restore takes acks a modern driver wrote before FEATURES_OK as they are
 * (FEATURES_OK refuses unoffered ones later), and refuses unoffered bits
 * only once features were negotiated (found by fuzz_pci). */
static void test_restore_feature_acks(void **state)
{
	static const uint8_t negotiated[] = { 0, VIRTIO_STATUS_FEATURES_OK };
	struct fix f;

	fix_init(&f);
	for (size_t i = 0; i < sizeof(negotiated); i++) {
		struct state_writer w;
		struct state_reader r;
		struct virtio_device h;
		struct echo he = { 0 };

		f.dev.status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
		virtio_features_write(&f.dev, 1, 1u << (60 - 32));     /* bit 60: not offered */
		f.dev.status |= negotiated[i];
		assert_true(f.dev.guest_features & ~f.dev.host_features);
		state_writer_init(&w);
		virtio_device_save(&f.dev, &w);
		assert_int_equal(virtio_device_init(&h, &echo_ops, &he, &f.mem, "echo3"), 0);
		state_reader_init(&r, w.data, w.len);
		assert_int_equal(virtio_device_restore(&h, 1, &r), negotiated[i] ? -1 : 0);
		virtio_device_destroy(&h);
		state_writer_free(&w);
	}
	fix_fini(&f);
}

static void test_save_restore_split(void **state)
{
	run_save_restore(MODERN | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
}
static void test_save_restore_packed(void **state)
{
	run_save_restore(MODERN | VIRTIO_BIT(VIRTIO_F_RING_PACKED));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_and_features),
		cmocka_unit_test(test_status_machine),
		cmocka_unit_test(test_echo_split),
		cmocka_unit_test(test_echo_split_event_idx),
		cmocka_unit_test(test_echo_packed),
		cmocka_unit_test(test_legacy_driver),
		cmocka_unit_test(test_notify_rules),
		cmocka_unit_test(test_broken_device),
		cmocka_unit_test(test_config_space),
		cmocka_unit_test(test_restore_feature_acks),
		cmocka_unit_test(test_save_restore_split),
		cmocka_unit_test(test_save_restore_packed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
