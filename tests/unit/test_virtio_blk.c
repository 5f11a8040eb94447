/*
 * test_virtio_blk.c - the virtio-blk device model driven through the virtio
 * core directly: this file is the driver (split rings in an anonymous
 * guest memory), the device runs its real I/O thread on a temporary raw
 * file or a qcow2 image made by `qemu-img create` (those tests skip when
 * qemu-img is missing).
 *
 * Covered: read/write/flush with the file checked on the host, GET_ID,
 * DISCARD and WRITE_ZEROES (and their refusals), a read-only disk,
 * malformed requests (short header, odd lengths, ranges past the end,
 * no status byte) that must be answered without breaking the device, the
 * config space, several queues, a reset with requests in flight, save and
 * restore onto a second device, and the synchronous vblk_execute path.
 *
 * Locking as in the VMM: every call into the virtio device is made with
 * the "device lock" (f->lock) held; completions arrive from the I/O
 * thread, and the driver polls the used ring without the lock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio_blk.h"
#include "vmm/config.h"

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#define MEM_SIZE    (32u << 20)
#define RING_BASE   0x100000ull          /* queue q's rings at RING_BASE + q * 0x10000 */
#define BUF_BASE    0x400000ull
#define BUF_END     0x1f00000ull
#define QSIZE       64
#define DISK_BYTES  (4u << 20)
#define DISK_SECT   (DISK_BYTES / 512)
#define NOSTATUS    0xee

static uint64_t desc_gpa(int q) { return RING_BASE + 0x10000ull * q; }
static uint64_t avail_gpa(int q) { return desc_gpa(q) + 0x4000; }
static uint64_t used_gpa(int q) { return desc_gpa(q) + 0x8000; }

struct fix {
	struct guest_mem mem;
	struct virtio_device dev;
	struct vblk *blk;
	pthread_mutex_t lock;
	char path[64];
	int irqs;
	uint64_t bump;                   /* buffer allocator */
	struct ring_drv q[VBLK_MAX_QUEUES];   /* the driver side of each queue */
};

static void on_irq(struct virtio_device *dev, uint16_t q)
{
	__atomic_add_fetch(&((struct fix *)dev->transport)->irqs, 1, __ATOMIC_RELAXED);
}

static void *gp(struct fix *f, uint64_t gpa, uint64_t len)
{
	return ring_ptr(&f->mem, gpa, len);
}

static uint64_t balloc(struct fix *f, uint32_t len)
{
	uint64_t g = f->bump;

	f->bump = (f->bump + len + 511) & ~511ull;
	assert_true(f->bump < BUF_END);
	return g;
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

/* A temporary image: raw of DISK_BYTES, or qcow2 through qemu-img. */
static void make_image(char *path, bool qcow2)
{
	char cmd[160];
	int fd;

	snprintf(path, 64, "/tmp/shoal-vblk-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, DISK_BYTES), 0);
	close(fd);
	if (qcow2) {
		snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s %u", path, DISK_BYTES);
		assert_int_equal(system(cmd), 0);
	}
}

/* Open the image as a device with `queues` queues and start its thread. */
static void fix_open(struct fix *f, bool ro, const char *serial, int queues)
{
	struct vm_disk disk = { .path = f->path, .readonly = ro, .serial = (char *)serial,
				.queues = queues };
	struct error e;

	assert_int_equal(vblk_new(&f->blk, &disk, "virtio-blk0", &e), 0);
	assert_int_equal(virtio_device_init(&f->dev, vblk_ops(f->blk), f->blk, &f->mem,
					    "virtio-blk0"), 0);
	f->dev.transport = f;
	f->dev.notify_queue = on_irq;
	assert_int_equal(vblk_start(f->blk, &f->lock), 0);
}

static void fix_init_opts(struct fix *f, bool qcow2, bool ro, const char *serial, int queues)
{
	struct error e;

	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->lock, NULL);
	assert_int_equal(guest_mem_create_anon(&f->mem, MEM_SIZE, &e), 0);
	f->bump = BUF_BASE;
	make_image(f->path, qcow2);
	fix_open(f, ro, serial, queues);
}

static void fix_init(struct fix *f) { fix_init_opts(f, false, false, NULL, 1); }

static void fix_close_dev(struct fix *f)
{
	virtio_device_destroy(&f->dev);
}

static void fix_fini(struct fix *f)
{
	fix_close_dev(f);
	guest_mem_destroy(&f->mem);
	unlink(f->path);
	pthread_mutex_destroy(&f->lock);
}

/* Modern bring-up of every queue, with `features` & offered. */
static void drv_up(struct fix *f, uint64_t features)
{
	pthread_mutex_lock(&f->lock);
	virtio_set_status(&f->dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(virtio_set_features(&f->dev, features & f->dev.host_features), 0);
	assert_true(virtio_set_status(&f->dev, 11) & VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < f->dev.num_queues; q++) {
		memset(gp(f, desc_gpa(q), 0x10000), 0, 0x10000);
		ring_drv_init(&f->q[q], &f->mem, QSIZE, false, desc_gpa(q), avail_gpa(q),
			      used_gpa(q), RING_WRAP);
		assert_int_equal(ring_attach(&f->q[q], &f->dev, q), 0);
	}
	assert_int_equal(virtio_set_status(&f->dev, 15), 15);
	pthread_mutex_unlock(&f->lock);
}

#define FEATS (VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) | \
	       VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES) | \
	       VIRTIO_BIT(VIRTIO_BLK_F_MQ) | VIRTIO_BIT(VIRTIO_BLK_F_RO) | \
	       VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE))

/* Post a chain of `n` segments on queue q and kick; returns the head. */
static uint16_t drv_post(struct fix *f, int q, const struct ring_buf *s, int n)
{
	return (uint16_t)ring_add(&f->q[q], s, n);
}

static void drv_kick(struct fix *f, int q)
{
	pthread_mutex_lock(&f->lock);
	virtio_queue_notify(&f->dev, (uint16_t)q);
	pthread_mutex_unlock(&f->lock);
}

/* Wait (up to 5 s) for the next used element of queue q. */
static bool drv_reap(struct fix *f, int q, uint16_t *id, uint32_t *len)
{
	for (int i = 0; i < 5000; i++) {
		if (ring_used(&f->q[q], id, len))
			return true;
		usleep(1000);
	}
	return false;
}

/* A request on the wire: header, data (or none), status byte. */
struct breq {
	uint64_t hdr, data, status;
	uint32_t len;
	uint16_t head;
};

/* Build and post a request of `type` at `sector` with `len` data bytes
 * (device-writable for IN and GET_ID); data filled from `src` if given. */
static struct breq blk_post(struct fix *f, int q, uint32_t type, uint64_t sector,
			    const void *src, uint32_t len)
{
	struct virtio_blk_outhdr h = { .type = type, .sector = sector };
	bool in = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
	struct breq r = { .hdr = balloc(f, 16), .len = len };
	struct ring_buf s[3];
	int n = 0;

	r.data = len ? balloc(f, len) : 0;
	r.status = balloc(f, 1);
	memcpy(gp(f, r.hdr, 16), &h, 16);
	if (len && src)
		memcpy(gp(f, r.data, len), src, len);
	else if (len)
		memset(gp(f, r.data, len), 0x5a, len);
	*(uint8_t *)gp(f, r.status, 1) = NOSTATUS;
	s[n++] = (struct ring_buf){ r.hdr, 16, false };
	if (len)
		s[n++] = (struct ring_buf){ r.data, len, in };
	s[n++] = (struct ring_buf){ r.status, 1, true };
	r.head = drv_post(f, q, s, n);
	return r;
}

/* Wait for `r` (the next completion on q) and return its status byte. */
static int blk_wait(struct fix *f, int q, const struct breq *r, uint32_t *used)
{
	uint16_t id;
	uint32_t len;

	assert_true(drv_reap(f, q, &id, &len));
	assert_int_equal(id, r->head);
	if (used)
		*used = len;
	return *(uint8_t *)gp(f, r->status, 1);
}

/* One request, start to finish, on queue 0. */
static int blk_do(struct fix *f, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
	struct breq r = blk_post(f, 0, type, sector, buf, len);
	int st;

	drv_kick(f, 0);
	st = blk_wait(f, 0, &r, NULL);
	if (buf && len && (type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID))
		memcpy(buf, gp(f, r.data, len), len);
	return st;
}

static int blk_segs(struct fix *f, uint32_t type, const struct virtio_blk_dwz_seg *segs, int n)
{
	return blk_do(f, type, 0, (void *)segs, (uint32_t)(n * sizeof(*segs)));
}

static void pattern(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + seed * 13 + (i >> 9));
}

static bool device_ok(struct fix *f)
{
	bool ok;

	pthread_mutex_lock(&f->lock);
	ok = !f->dev.broken && (f->dev.status & VIRTIO_STATUS_DRIVER_OK);
	pthread_mutex_unlock(&f->lock);
	return ok;
}

/* ---- tests ---- */

static void run_rw(bool qcow2)
{
	static uint8_t w[8192], r[8192], file[8192];
	struct fix f;
	int fd;

	if (qcow2 && !have_qemu_img())
		skip();
	fix_init_opts(&f, qcow2, false, NULL, 1);
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 1);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 10, w, sizeof(w)), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 10, r, sizeof(r)), VIRTIO_BLK_S_OK);
	assert_memory_equal(w, r, sizeof(w));
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_FLUSH, 0, NULL, 0), VIRTIO_BLK_S_OK);
	/* the last sector of the disk is reachable */
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, DISK_SECT - 1, w, 512), VIRTIO_BLK_S_OK);
	assert_true(__atomic_load_n(&f.irqs, __ATOMIC_RELAXED) >= 4);
	assert_int_equal(vblk_get_stats(f.blk)->writes, 2);
	assert_int_equal(vblk_get_stats(f.blk)->reads, 1);
	assert_int_equal(vblk_get_stats(f.blk)->flushes, 1);
	fix_close_dev(&f);
	if (!qcow2) {
		fd = open(f.path, O_RDONLY);
		assert_int_equal(pread(fd, file, sizeof(file), 10 * 512), (ssize_t)sizeof(file));
		close(fd);
		assert_memory_equal(w, file, sizeof(file));
	} else {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", f.path);
		assert_int_equal(system(cmd), 0);
		snprintf(cmd, sizeof(cmd), "qemu-img info %s | grep -q 'file format: qcow2'", f.path);
		assert_int_equal(system(cmd), 0);
	}
	guest_mem_destroy(&f.mem);
	unlink(f.path);
}

static void test_rw_raw(void **state) { run_rw(false); }
static void test_rw_qcow2(void **state) { run_rw(true); }

/* Many requests in flight at once, chains with the data split in two. */
static void test_many_in_flight(void **state)
{
	static uint8_t w[32 * 4096];
	struct breq rq[32];
	struct fix f;

	fix_init(&f);
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 3);
	for (int i = 0; i < 16; i++)
		rq[i] = blk_post(&f, 0, VIRTIO_BLK_T_OUT, 8ull * i, w + 4096 * i, 4096);
	drv_kick(&f, 0);
	for (int i = 0; i < 16; i++) {
		uint16_t id;
		uint32_t len;

		assert_true(drv_reap(&f, 0, &id, &len));
		assert_int_equal(len, 1);
		for (int k = 0; k < 16; k++)
			if (rq[k].head == id)
				assert_int_equal(*(uint8_t *)gp(&f, rq[k].status, 1), VIRTIO_BLK_S_OK);
	}
	for (int i = 0; i < 16; i++) {
		uint8_t r[4096];

		assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 8ull * i, r, 4096), VIRTIO_BLK_S_OK);
		assert_memory_equal(r, w + 4096 * i, 4096);
	}
	fix_fini(&f);
}

static void test_get_id(void **state)
{
	char id[VIRTIO_BLK_ID_BYTES + 4];
	struct fix f;

	fix_init_opts(&f, false, false, "0123456789abcdefghij", 1);
	drv_up(&f, FEATS);
	memset(id, 'x', sizeof(id));
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES), 0);
	assert_memory_equal(id, "0123456789abcdefghij", 20);
	fix_fini(&f);

	fix_init_opts(&f, false, false, "d0", 1);
	drv_up(&f, FEATS);
	memset(id, 'x', sizeof(id));
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES), 0);
	assert_memory_equal(id, "d0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
	/* a short buffer gets what fits */
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_GET_ID, 0, id, 1), 0);
	assert_int_equal(id[0], 'd');
	fix_fini(&f);
}

static void run_discard_zeroes(bool qcow2)
{
	static uint8_t w[16 * 512], r[16 * 512], z[16 * 512];
	struct virtio_blk_dwz_seg s[VBLK_MAX_RANGE_SEGS + 1];
	struct fix f;

	if (qcow2 && !have_qemu_img())
		skip();
	fix_init_opts(&f, qcow2, false, NULL, 1);
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 5);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 100, w, sizeof(w)), 0);
	/* zero sectors 102..105 and 110..111 in one request */
	s[0] = (struct virtio_blk_dwz_seg){ 102, 4, 0 };
	s[1] = (struct virtio_blk_dwz_seg){ 110, 2, VIRTIO_BLK_DWZ_F_UNMAP };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_WRITE_ZEROES, s, 2), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 100, r, sizeof(r)), 0);
	assert_memory_equal(r, w, 2 * 512);
	assert_memory_equal(r + 2 * 512, z, 4 * 512);
	assert_memory_equal(r + 6 * 512, w + 6 * 512, 4 * 512);
	assert_memory_equal(r + 10 * 512, z, 2 * 512);
	assert_memory_equal(r + 12 * 512, w + 12 * 512, 4 * 512);
	/* discard: accepted; contents unspecified */
	s[0] = (struct virtio_blk_dwz_seg){ 0, 128, 0 };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, 1), VIRTIO_BLK_S_OK);
	/* refusals: unmap on discard, reserved flags, too many segments */
	s[0].flags = VIRTIO_BLK_DWZ_F_UNMAP;
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, 1), VIRTIO_BLK_S_UNSUPP);
	s[0].flags = 4;
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_WRITE_ZEROES, s, 1), VIRTIO_BLK_S_UNSUPP);
	for (int i = 0; i <= VBLK_MAX_RANGE_SEGS; i++)
		s[i] = (struct virtio_blk_dwz_seg){ (uint64_t)i, 1, 0 };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, VBLK_MAX_RANGE_SEGS + 1),
			 VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, VBLK_MAX_RANGE_SEGS), 0);
	/* ranges: past the end, too long, overflowing, a partial segment */
	s[0] = (struct virtio_blk_dwz_seg){ DISK_SECT - 1, 2, 0 };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_WRITE_ZEROES, s, 1), VIRTIO_BLK_S_IOERR);
	s[0] = (struct virtio_blk_dwz_seg){ 0, VBLK_MAX_RANGE_SECTORS + 1, 0 };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, 1), VIRTIO_BLK_S_IOERR);
	s[0] = (struct virtio_blk_dwz_seg){ UINT64_MAX - 1, 4, 0 };
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, s, 1), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_DISCARD, 0, s, 15), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_DISCARD, 0, NULL, 0), VIRTIO_BLK_S_IOERR);
	assert_true(device_ok(&f));
	fix_fini(&f);
}

static void test_discard_zeroes_raw(void **state) { run_discard_zeroes(false); }
static void test_discard_zeroes_qcow2(void **state) { run_discard_zeroes(true); }

static void test_readonly(void **state)
{
	static uint8_t w[4096], r[4096], file[4096];
	struct virtio_blk_dwz_seg s = { 0, 8, 0 };
	struct fix f;
	int fd;

	fix_init_opts(&f, false, true, NULL, 1);
	assert_true(f.dev.host_features & VIRTIO_BIT(VIRTIO_BLK_F_RO));
	assert_false(f.dev.host_features & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD));
	assert_false(f.dev.host_features & VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES));
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 9);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 0, w, sizeof(w)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_WRITE_ZEROES, &s, 1), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_segs(&f, VIRTIO_BLK_T_DISCARD, &s, 1), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 0, r, sizeof(r)), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_FLUSH, 0, NULL, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(vblk_get_stats(f.blk)->ioerr, 3);
	fd = open(f.path, O_RDONLY);
	assert_int_equal(pread(fd, file, sizeof(file), 0), (ssize_t)sizeof(file));
	close(fd);
	memset(r, 0, sizeof(r));
	assert_memory_equal(file, r, sizeof(file));   /* nothing written */
	fix_fini(&f);
}

/* Malformed requests get a status (or none) and the device goes on. */
static void test_bad_requests(void **state)
{
	static uint8_t buf[4096];
	struct fix f;
	struct breq r;
	struct ring_buf s[3];
	uint64_t hdr, st;
	uint16_t id;
	uint32_t len;

	fix_init(&f);
	drv_up(&f, FEATS);
	/* data not a multiple of 512, past the end, crossing the end, overflow */
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 0, buf, 511), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 0, buf, 513), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, DISK_SECT, buf, 512), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, DISK_SECT - 1, buf, 1024), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, UINT64_MAX, buf, 512), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, (UINT64_MAX >> 9) + 1, buf, 512),
			 VIRTIO_BLK_S_IOERR);
	/* zero-length read at the end: fine; one past: not */
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, DISK_SECT, NULL, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, DISK_SECT + 1, NULL, 0), VIRTIO_BLK_S_IOERR);
	/* unknown types, and the legacy SCSI command */
	assert_int_equal(blk_do(&f, 99, 0, NULL, 0), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(blk_do(&f, 2, 0, NULL, 0), VIRTIO_BLK_S_UNSUPP);
	/* a short header: 8 readable bytes */
	hdr = balloc(&f, 16);
	st = balloc(&f, 1);
	*(uint8_t *)gp(&f, st, 1) = NOSTATUS;
	s[0] = (struct ring_buf){ hdr, 8, false };
	s[1] = (struct ring_buf){ st, 1, true };
	r = (struct breq){ .hdr = hdr, .status = st, .head = drv_post(&f, 0, s, 2) };
	drv_kick(&f, 0);
	assert_int_equal(blk_wait(&f, 0, &r, &len), VIRTIO_BLK_S_IOERR);
	assert_int_equal(len, 1);
	/* a read whose header is 32 readable bytes (IN wants exactly 16) */
	memset(gp(&f, hdr, 16), 0, 16);
	s[0] = (struct ring_buf){ hdr, 32, false };
	s[1] = (struct ring_buf){ balloc(&f, 512), 512, true };
	s[2] = (struct ring_buf){ st, 1, true };
	r.head = drv_post(&f, 0, s, 3);
	drv_kick(&f, 0);
	assert_int_equal(blk_wait(&f, 0, &r, &len), VIRTIO_BLK_S_IOERR);
	/* no device-writable byte: returned with length 0, nothing written */
	s[0] = (struct ring_buf){ hdr, 16, false };
	drv_post(&f, 0, s, 1);
	drv_kick(&f, 0);
	assert_true(drv_reap(&f, 0, &id, &len));
	assert_int_equal(len, 0);
	/* header and status in one writable buffer: no readable header */
	s[0] = (struct ring_buf){ hdr, 17, true };
	drv_post(&f, 0, s, 1);
	drv_kick(&f, 0);
	assert_true(drv_reap(&f, 0, &id, &len));
	assert_int_equal(*(uint8_t *)gp(&f, hdr + 16, 1), VIRTIO_BLK_S_IOERR);
	/* a request bigger than VBLK_MAX_DATA */
	s[0] = (struct ring_buf){ hdr, 16, false };
	s[1] = (struct ring_buf){ BUF_BASE, VBLK_MAX_DATA + 512, true };
	s[2] = (struct ring_buf){ st, 1, true };
	*(uint64_t *)gp(&f, hdr, 8) = VIRTIO_BLK_T_IN;
	r.head = drv_post(&f, 0, s, 3);
	drv_kick(&f, 0);
	assert_int_equal(blk_wait(&f, 0, &r, &len), VIRTIO_BLK_S_IOERR);
	/* and after all that, the device still works */
	assert_true(device_ok(&f));
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 0, buf, 4096), VIRTIO_BLK_S_OK);
	assert_true(vblk_get_stats(f.blk)->ioerr >= 10);
	fix_fini(&f);
}

/* A ring violation is the core's business: the device is broken, the
 * host is fine, and a reset brings it back. */
static void test_ring_violation_then_reset(void **state)
{
	static uint8_t buf[512];
	struct fix f;
	struct ring_buf s = { 0x7fffffff0000ull, 16, false };   /* outside guest RAM */

	fix_init(&f);
	drv_up(&f, FEATS);
	drv_post(&f, 0, &s, 1);
	drv_kick(&f, 0);
	for (int i = 0; i < 1000 && device_ok(&f); i++)
		usleep(1000);
	assert_false(device_ok(&f));
	pthread_mutex_lock(&f.lock);
	virtio_set_status(&f.dev, 0);
	pthread_mutex_unlock(&f.lock);
	drv_up(&f, FEATS);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 0, buf, 512), VIRTIO_BLK_S_OK);
	fix_fini(&f);
}

static void test_config(void **state)
{
	struct fix f;
	uint64_t cap;
	uint32_t v;
	uint16_t nq;

	fix_init_opts(&f, false, false, NULL, 3);
	assert_int_equal(f.dev.num_queues, 3);
	assert_true(f.dev.host_features & VIRTIO_BIT(VIRTIO_BLK_F_MQ));
	assert_true(f.dev.host_features & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH));
	pthread_mutex_lock(&f.lock);
	assert_int_equal(virtio_config_read(&f.dev, 0, &cap, 8), 0);
	assert_int_equal(cap, DISK_SECT);
	virtio_config_read(&f.dev, 8, &v, 4);
	assert_int_equal(v, VBLK_SIZE_MAX);
	virtio_config_read(&f.dev, 12, &v, 4);
	assert_int_equal(v, VBLK_SEG_MAX);
	virtio_config_read(&f.dev, 20, &v, 4);
	assert_int_equal(v, 512);
	virtio_config_read(&f.dev, 34, &nq, 2);
	assert_int_equal(nq, 3);
	virtio_config_read(&f.dev, 36, &v, 4);
	assert_int_equal(v, VBLK_MAX_RANGE_SECTORS);
	virtio_config_read(&f.dev, 40, &v, 4);
	assert_int_equal(v, VBLK_MAX_RANGE_SEGS);
	virtio_config_read(&f.dev, 52, &v, 4);
	assert_int_equal(v, VBLK_MAX_RANGE_SEGS);
	/* out of range: zeros, and the device does not care */
	v = 0xffffffff;
	assert_int_equal(virtio_config_read(&f.dev, VBLK_CONFIG_SIZE - 2, &v, 4), -1);
	assert_int_equal(v, 0);
	/* writes are ignored (no CONFIG_WCE) */
	cap = 1;
	virtio_config_write(&f.dev, 0, &cap, 8);
	virtio_config_read(&f.dev, 0, &cap, 8);
	assert_int_equal(cap, DISK_SECT);
	pthread_mutex_unlock(&f.lock);
	fix_fini(&f);
}

/* Several queues: each request completes on the queue it came from. */
static void test_multiqueue(void **state)
{
	static uint8_t w[4][1024], r[1024];
	struct breq rq[4];
	struct fix f;

	fix_init_opts(&f, false, false, NULL, 4);
	drv_up(&f, FEATS);
	for (int q = 0; q < 4; q++) {
		pattern(w[q], sizeof(w[q]), (unsigned)q + 20);
		rq[q] = blk_post(&f, q, VIRTIO_BLK_T_OUT, 16ull * q, w[q], sizeof(w[q]));
	}
	for (int q = 3; q >= 0; q--)
		drv_kick(&f, q);
	for (int q = 0; q < 4; q++)
		assert_int_equal(blk_wait(&f, q, &rq[q], NULL), VIRTIO_BLK_S_OK);
	for (int q = 0; q < 4; q++) {
		assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 16ull * q, r, sizeof(r)), 0);
		assert_memory_equal(r, w[q], sizeof(r));
	}
	fix_fini(&f);
}

/* A reset with requests in flight: none lands afterwards, the device
 * comes back clean. */
static void test_reset_in_flight(void **state)
{
	static uint8_t w[4096], r[4096];
	struct fix f;

	fix_init(&f);
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 4);
	for (int i = 0; i < 12; i++)
		blk_post(&f, 0, VIRTIO_BLK_T_OUT, 8ull * i, w, sizeof(w));
	pthread_mutex_lock(&f.lock);
	virtio_queue_notify(&f.dev, 0);
	virtio_set_status(&f.dev, 0);      /* waits for the in-flight ones */
	pthread_mutex_unlock(&f.lock);
	usleep(20000);
	assert_int_equal(*(uint16_t *)gp(&f, used_gpa(0) + 2, 2), 0);
	drv_up(&f, FEATS);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 0, w, sizeof(w)), 0);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 0, r, sizeof(r)), 0);
	assert_memory_equal(w, r, sizeof(r));
	fix_fini(&f);
}

/* Save with requests made before; restore onto a second device on the
 * same image; the ring continues where it was. */
static void test_save_restore(void **state)
{
	static uint8_t w[2048], r[2048];
	struct state_writer sw;
	struct state_reader sr;
	struct fix f;

	fix_init(&f);
	drv_up(&f, FEATS);
	pattern(w, sizeof(w), 11);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_OUT, 40, w, sizeof(w)), 0);
	state_writer_init(&sw);
	pthread_mutex_lock(&f.lock);
	virtio_device_save(&f.dev, &sw);
	pthread_mutex_unlock(&f.lock);
	assert_false(sw.error);
	fix_close_dev(&f);                  /* the old device goes away */
	fix_open(&f, false, NULL, 1);       /* a new one on the same image */
	state_reader_init(&sr, sw.data, sw.len);
	pthread_mutex_lock(&f.lock);
	assert_int_equal(virtio_device_restore(&f.dev, 1, &sr), 0);
	pthread_mutex_unlock(&f.lock);
	assert_true(device_ok(&f));
	assert_int_equal(vblk_get_stats(f.blk)->writes, 1);
	assert_int_equal(blk_do(&f, VIRTIO_BLK_T_IN, 40, r, sizeof(r)), 0);
	assert_memory_equal(w, r, sizeof(r));
	fix_close_dev(&f);
	/* a disk of another size is refused */
	assert_int_equal(truncate(f.path, DISK_BYTES * 2), 0);
	fix_open(&f, false, NULL, 1);
	state_reader_init(&sr, sw.data, sw.len);
	pthread_mutex_lock(&f.lock);
	assert_int_equal(virtio_device_restore(&f.dev, 1, &sr), -1);
	pthread_mutex_unlock(&f.lock);
	state_writer_free(&sw);
	fix_fini(&f);
}

/* The synchronous path used by the fuzz target. */
static void test_execute(void **state)
{
	uint8_t hdr[16] = { VIRTIO_BLK_T_OUT }, data[512], st = NOSTATUS;
	struct virtq_elem *el = calloc(1, sizeof(*el));
	struct vm_disk disk = { 0 };
	struct vblk *b;
	struct error e;
	char path[64];
	uint32_t used;

	make_image(path, false);
	disk.path = path;
	assert_int_equal(vblk_new(&b, &disk, "x", &e), 0);
	memset(data, 0xab, sizeof(data));
	el->iov[0] = (struct iovec){ hdr, 16 };
	el->iov[1] = (struct iovec){ data, 512 };
	el->iov[2] = (struct iovec){ &st, 1 };
	el->out_num = 2;
	el->in_num = 1;
	el->out_len = 528;
	el->in_len = 1;
	assert_int_equal(vblk_execute(b, el, &used), VIRTIO_BLK_S_OK);
	assert_int_equal(st, 0);
	assert_int_equal(used, 1);
	el->in_num = 0;
	el->in_len = 0;
	assert_int_equal(vblk_execute(b, el, &used), -1);
	vblk_free(b);
	/* a missing image is a clear error */
	disk.path = "/nonexistent/shoal.img";
	assert_int_equal(vblk_new(&b, &disk, "x", &e), -1);
	assert_int_equal(e.status, 66);
	assert_non_null(strstr(e.msg, "/nonexistent/shoal.img"));
	unlink(path);
	free(el);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rw_raw),
		cmocka_unit_test(test_rw_qcow2),
		cmocka_unit_test(test_many_in_flight),
		cmocka_unit_test(test_get_id),
		cmocka_unit_test(test_discard_zeroes_raw),
		cmocka_unit_test(test_discard_zeroes_qcow2),
		cmocka_unit_test(test_readonly),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_ring_violation_then_reset),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_multiqueue),
		cmocka_unit_test(test_reset_in_flight),
		cmocka_unit_test(test_save_restore),
		cmocka_unit_test(test_execute),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
