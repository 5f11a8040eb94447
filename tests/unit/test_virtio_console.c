/*
 * test_virtio_console.c - the virtio-console device model driven through
 * the virtio core directly (this file is the driver, split rings in an
 * anonymous guest memory): transmitted bytes land in the output file, the
 * input file reaches posted receive buffers, the emergency write, the
 * config space, save/restore of the counters, and bad specs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/virtio_console.h"

#define MEM_SIZE  (16u << 20)
#define RING_BASE 0x100000ull            /* queue q at RING_BASE + q * 0x10000 */
#define BUF_BASE  0x400000ull
#define QSIZE     16
#define F_EMERG   2
#define F_MULTI   1

struct fix {
	struct guest_mem mem;
	struct virtio_device dev;
	char out[64], in[64];
	int irqs;
	uint64_t bump;
	uint16_t next_desc[4], avail_idx[4], used_seen[4];
};

static uint64_t desc_gpa(int q) { return RING_BASE + 0x10000ull * q; }
static uint64_t avail_gpa(int q) { return desc_gpa(q) + 0x4000; }
static uint64_t used_gpa(int q) { return desc_gpa(q) + 0x8000; }

static void on_irq(struct virtio_device *dev, uint16_t q)
{
	((struct fix *)dev->transport)->irqs++;
}

static void *gp(struct fix *f, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(&f->mem, gpa, len);

	assert_non_null(p);
	return p;
}

static void tmpname(char *p)
{
	int fd;

	snprintf(p, 64, "/tmp/shoal-vcon-XXXXXX");
	fd = mkstemp(p);
	assert_true(fd >= 0);
	close(fd);
}

/* A device on "file:OUT" (plus ",in=IN" with `input`), driver live. */
static void fix_init(struct fix *f, const char *input, uint64_t features)
{
	char spec[160];
	struct error e;
	struct vcon *c;

	memset(f, 0, sizeof(*f));
	assert_int_equal(guest_mem_create_anon(&f->mem, MEM_SIZE, &e), 0);
	f->bump = BUF_BASE;
	tmpname(f->out);
	if (input) {
		FILE *fp;

		tmpname(f->in);
		fp = fopen(f->in, "w");
		fputs(input, fp);
		fclose(fp);
		snprintf(spec, sizeof(spec), "file:%s,in=%s", f->out, f->in);
	} else {
		snprintf(spec, sizeof(spec), "file:%s", f->out);
	}
	c = virtio_console_new(spec, &e);
	assert_non_null(c);
	assert_int_equal(virtio_device_init(&f->dev, virtio_console_ops(), c, &f->mem, "vcon0"), 0);
	f->dev.transport = f;
	f->dev.notify_queue = on_irq;
	virtio_set_status(&f->dev, 3);
	assert_int_equal(virtio_set_features(&f->dev, features | VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	assert_true(virtio_set_status(&f->dev, 11) & VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < ((features & VIRTIO_BIT(F_MULTI)) ? 4 : 2); q++) {
		struct virtqueue *vq = &f->dev.queues[q];

		vq->size = QSIZE;
		vq->desc_gpa = desc_gpa(q);
		vq->avail_gpa = avail_gpa(q);
		vq->used_gpa = used_gpa(q);
		assert_int_equal(virtio_queue_set_ready(&f->dev, q, true), 0);
	}
	assert_int_equal(virtio_set_status(&f->dev, 15), 15);
}

static void fix_fini(struct fix *f)
{
	virtio_device_destroy(&f->dev);
	guest_mem_destroy(&f->mem);
	unlink(f->out);
	if (f->in[0])
		unlink(f->in);
}

/* Post one buffer of `len` bytes (device-writable if `w`) on queue q. */
static uint64_t post(struct fix *f, int q, const char *text, uint32_t len, bool w)
{
	uint64_t g = f->bump;
	uint16_t d = f->next_desc[q]++ % QSIZE;
	struct virtq_desc desc = { g, len, w ? VIRTQ_DESC_F_WRITE : 0, 0 };

	f->bump += (len + 63) & ~63u;
	if (text)
		memcpy(gp(f, g, len), text, len);
	memcpy(gp(f, desc_gpa(q) + 16ull * d, 16), &desc, 16);
	*(uint16_t *)gp(f, avail_gpa(q) + 4 + 2ull * (f->avail_idx[q] % QSIZE), 2) = d;
	__atomic_store_n((uint16_t *)gp(f, avail_gpa(q) + 2, 2), ++f->avail_idx[q], __ATOMIC_RELEASE);
	return g;
}

static bool reap(struct fix *f, int q, uint32_t *len)
{
	uint64_t e = used_gpa(q) + 4 + 8ull * (f->used_seen[q] % QSIZE);

	if (*(uint16_t *)gp(f, used_gpa(q) + 2, 2) == f->used_seen[q])
		return false;
	*len = *(uint32_t *)gp(f, e + 4, 4);
	f->used_seen[q]++;
	return true;
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = read(fd, buf, cap - 1);

	close(fd);
	assert_true(n >= 0);
	buf[n] = 0;
	return (size_t)n;
}

static void test_transmit(void **state)
{
	struct fix f;
	char buf[256];
	uint32_t len;

	fix_init(&f, NULL, 0);
	post(&f, 1, "hello ", 6, false);
	post(&f, 1, "world\n", 6, false);
	virtio_queue_notify(&f.dev, 1);
	assert_true(reap(&f, 1, &len));
	assert_int_equal(len, 0);
	assert_true(reap(&f, 1, &len));
	assert_false(reap(&f, 1, &len));
	assert_true(f.irqs >= 1);
	assert_int_equal(slurp(f.out, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "hello world\n");
	/* a receive kick without input: nothing is taken */
	post(&f, 0, NULL, 64, true);
	virtio_queue_notify(&f.dev, 0);
	assert_false(reap(&f, 0, &len));
	fix_fini(&f);
}

/* Output appends to what the file held. */
static void test_append(void **state)
{
	struct fix f;
	char buf[256];
	FILE *fp;

	fix_init(&f, NULL, 0);
	fp = fopen(f.out, "a");
	fputs("before\n", fp);
	fclose(fp);
	post(&f, 1, "after\n", 6, false);
	virtio_queue_notify(&f.dev, 1);
	slurp(f.out, buf, sizeof(buf));
	assert_string_equal(buf, "before\nafter\n");
	fix_fini(&f);
}

static void test_receive(void **state)
{
	struct fix f;
	uint64_t g1, g2;
	uint32_t len;

	fix_init(&f, "0123456789", 0);
	g1 = post(&f, 0, NULL, 4, true);
	g2 = post(&f, 0, NULL, 64, true);
	post(&f, 0, NULL, 64, true);
	virtio_queue_notify(&f.dev, 0);
	assert_true(reap(&f, 0, &len));
	assert_int_equal(len, 4);
	assert_memory_equal(gp(&f, g1, 4), "0123", 4);
	assert_true(reap(&f, 0, &len));
	assert_int_equal(len, 6);
	assert_memory_equal(gp(&f, g2, 6), "456789", 6);
	assert_false(reap(&f, 0, &len));   /* input used up: third buffer kept */
	fix_fini(&f);
}

static void test_emergency_write_and_config(void **state)
{
	struct fix f;
	uint32_t v = 'Z', ports;
	char buf[16];

	fix_init(&f, NULL, VIRTIO_BIT(F_EMERG));
	assert_true(f.dev.host_features & VIRTIO_BIT(F_EMERG));
	assert_int_equal(virtio_config_write(&f.dev, 8, &v, 4), 0);
	virtio_config_write(&f.dev, 8, &v, 2);     /* not a 32-bit write: ignored */
	assert_int_equal(virtio_config_read(&f.dev, 4, &ports, 4), 0);
	assert_int_equal(ports, 1);
	assert_int_equal(virtio_config_read(&f.dev, 0, &ports, 4), 0);
	assert_int_equal(ports, 0);                /* cols, rows unknown */
	assert_int_equal(virtio_config_read(&f.dev, 10, &ports, 4), -1);
	assert_int_equal(slurp(f.out, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "Z");
	fix_fini(&f);
}

static void test_save_restore(void **state)
{
	struct state_writer w;
	struct state_reader r;
	struct fix f, g;
	uint32_t len;

	fix_init(&f, "abcdef", 0);
	post(&f, 1, "x\n", 2, false);
	virtio_queue_notify(&f.dev, 1);
	post(&f, 0, NULL, 3, true);
	virtio_queue_notify(&f.dev, 0);
	assert_true(reap(&f, 0, &len));
	state_writer_init(&w);
	virtio_device_save(&f.dev, &w);
	assert_false(w.error);
	/* a new device on the same input resumes after "abc" */
	fix_init(&g, "abcdef", 0);
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&g.dev, 2, &r), 0);
	g.avail_idx[0] = f.avail_idx[0];
	g.next_desc[0] = f.next_desc[0];
	g.used_seen[0] = f.used_seen[0];
	g.bump = f.bump;
	{
		uint64_t b = post(&g, 0, NULL, 8, true);

		virtio_queue_notify(&g.dev, 0);
		assert_true(reap(&g, 0, &len));
		assert_int_equal(len, 3);
		assert_memory_equal(gp(&g, b, 3), "def", 3);
	}
	state_writer_free(&w);
	fix_fini(&f);
	fix_fini(&g);
}

/* Send one control message {id, event, value} on the control transmitq. */
static void ctrl_out(struct fix *f, uint32_t id, uint16_t event, uint16_t value)
{
	uint8_t m[8];

	memcpy(m, &id, 4);
	memcpy(m + 4, &event, 2);
	memcpy(m + 6, &value, 2);
	post(f, 3, (const char *)m, 8, false);
	virtio_queue_notify(&f->dev, 3);
}

/* Reap one control message from the control receiveq at `gpa`. */
static void ctrl_in(struct fix *f, uint64_t gpa, uint16_t event, uint16_t value)
{
	uint32_t len;
	uint16_t ev, val;
	uint32_t id;

	assert_true(reap(f, 2, &len));
	assert_int_equal(len, 8);
	memcpy(&id, gp(f, gpa, 8), 4);
	memcpy(&ev, gp(f, gpa + 4, 2), 2);
	memcpy(&val, gp(f, gpa + 6, 2), 2);
	assert_int_equal(id, 0);
	assert_int_equal(ev, event);
	assert_int_equal(val, value);
}

/*
 * MULTIPORT, as Linux drives it: no input before the driver opens port 0
 * (Linux kicks its receive queue before the port exists and would drop
 * it), then the handshake, then the input.
 */
static void test_multiport(void **state)
{
	struct fix f;
	uint64_t rx, c[4];
	uint32_t len;

	fix_init(&f, "early bytes", VIRTIO_BIT(F_MULTI));
	rx = post(&f, 0, NULL, 64, true);
	virtio_queue_notify(&f.dev, 0);
	assert_false(reap(&f, 0, &len));            /* port not open: input waits */
	ctrl_out(&f, 0xffffffffu, 0, 1);            /* DEVICE_READY, before any buffer */
	for (int i = 0; i < 4; i++)
		c[i] = post(&f, 2, NULL, 8, true);
	virtio_queue_notify(&f.dev, 2);
	ctrl_in(&f, c[0], 1, 0);                    /* DEVICE_ADD port 0 */
	ctrl_out(&f, 0, 3, 1);                      /* PORT_READY */
	ctrl_in(&f, c[1], 4, 1);                    /* CONSOLE_PORT */
	ctrl_in(&f, c[2], 6, 1);                    /* PORT_OPEN: host connected */
	assert_false(reap(&f, 0, &len));            /* still waiting for the driver */
	ctrl_out(&f, 0, 6, 1);                      /* the driver opens the port */
	assert_true(reap(&f, 0, &len));
	assert_int_equal(len, 11);
	assert_memory_equal(gp(&f, rx, 11), "early bytes", 11);
	ctrl_out(&f, 7, 3, 1);                      /* another port: ignored */
	assert_false(reap(&f, 2, &len));
	fix_fini(&f);
}

static void test_bad_specs(void **state)
{
	struct error e;

	assert_null(virtio_console_new("stdio", &e));
	assert_int_equal(e.status, 64);
	assert_null(virtio_console_new("file:", &e));
	assert_null(virtio_console_new("file:/tmp/x,in=", &e));
	assert_null(virtio_console_new("file:/nonexistent/dir/out", &e));
	assert_int_equal(e.status, 66);
	assert_null(virtio_console_new("file:/dev/null,in=/nonexistent/in", &e));
	assert_int_equal(e.status, 66);
	assert_non_null(strstr(e.msg, "/nonexistent/in"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transmit),
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_receive),
		cmocka_unit_test(test_emergency_write_and_config),
		cmocka_unit_test(test_save_restore),
		cmocka_unit_test(test_multiport),
		cmocka_unit_test(test_bad_specs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
