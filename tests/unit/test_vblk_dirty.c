/*
 * test_vblk_dirty.c - virtio-blk's side of disk migration
 * (devices/virtio_blk.c), on a 1 MiB memfd raw disk, requests run with
 * vblk_execute (no rings):
 *   - with tracking on, a write, a write-zeroes and a discard mark the
 *     4 KiB blocks they touch, a read and a flush mark none, and a take
 *     clears what it returns; with tracking off nothing is marked, and a
 *     second start with another block size is refused;
 *   - vblk_call runs its function with the disk's block device and
 *     returns its value: here when no I/O thread runs, and on the I/O
 *     thread (not the caller's) once it does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "devices/virtio_blk.h"
#include "vmm/config.h"

#define DISK (1u << 20)
#define GRAN 4096u
#define WORDS (DISK / GRAN / 64)

static struct vblk *open_disk(void)
{
	char path[64];
	struct error e = { 0 };
	struct vblk *b;
	int fd = memfd_create("test-vblk-dirty", 0);
	struct vm_disk d = { .path = path };

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, DISK), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	assert_int_equal(vblk_new(&b, &d, "vblk-dirty", &e), 0);
	close(fd);
	return b;
}

/* One request: header, `len` bytes out (write, discard, zeroes) or in
 * (read), a status byte.  Returns the status. */
static int request(struct vblk *b, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
	static struct virtq_elem el;
	struct virtio_blk_outhdr h = { .type = htole32(type), .sector = htole64(sector) };
	uint8_t status = 0xff;
	uint32_t used;
	bool out = type != VIRTIO_BLK_T_IN;

	memset(&el, 0, sizeof(el));
	el.iov[0] = (struct iovec){ &h, sizeof(h) };
	el.out_num = 1;
	el.out_len = sizeof(h);
	if (len && out) {
		el.iov[el.out_num++] = (struct iovec){ data, len };
		el.out_len += len;
	}
	if (len && !out) {
		el.iov[el.out_num + el.in_num++] = (struct iovec){ data, len };
		el.in_len += len;
	}
	el.iov[el.out_num + el.in_num++] = (struct iovec){ &status, 1 };
	el.in_len += 1;
	assert_int_equal(vblk_execute(b, &el, &used), VIRTIO_BLK_S_OK);
	return status;
}

static uint64_t take(struct vblk *b, uint64_t *bits)
{
	memset(bits, 0, WORDS * 8);
	return vblk_dirty_take(b, bits);
}

static void test_marks(void **state)
{
	struct vblk *b = open_disk();
	uint64_t bits[WORDS];
	static uint8_t buf[16384];
	struct virtio_blk_dwz_seg seg;

	(void)state;
	request(b, VIRTIO_BLK_T_OUT, 0, buf, 4096);          /* before tracking */
	assert_int_equal(vblk_dirty_start(b, GRAN), 0);
	assert_int_equal(take(b, bits), 0);
	request(b, VIRTIO_BLK_T_OUT, 7, buf, 1024);          /* bytes 3584..4607: blocks 0, 1 */
	request(b, VIRTIO_BLK_T_IN, 64, buf, 8192);           /* a read: nothing */
	request(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);           /* a flush: nothing */
	assert_int_equal(take(b, bits), 2);
	assert_int_equal(bits[0], 3);
	assert_int_equal(take(b, bits), 0);                   /* taken, so cleared */
	seg = (struct virtio_blk_dwz_seg){ htole64(80), htole32(16), 0 };  /* blocks 10, 11 */
	request(b, VIRTIO_BLK_T_WRITE_ZEROES, 0, &seg, sizeof(seg));
	seg = (struct virtio_blk_dwz_seg){ htole64(2040), htole32(8), 0 }; /* block 255 */
	request(b, VIRTIO_BLK_T_DISCARD, 0, &seg, sizeof(seg));
	assert_int_equal(take(b, bits), 3);
	assert_int_equal(bits[0], 3ULL << 10);
	assert_int_equal(bits[3], 1ULL << 63);
	vblk_dirty_stop(b);
	request(b, VIRTIO_BLK_T_OUT, 0, buf, 4096);
	assert_int_equal(take(b, bits), 0);
	assert_int_equal(vblk_dirty_start(b, 2 * GRAN), -EINVAL);
	assert_int_equal(vblk_dirty_start(b, GRAN), 0);       /* again: a clear map */
	assert_int_equal(take(b, bits), 0);
	vblk_dirty_stop(b);
	vblk_free(b);
}

struct call_arg {
	pthread_t thread;
	uint64_t size;
};

static int call_fn(struct blockdev *bd, void *arg)
{
	struct call_arg *a = arg;

	a->thread = pthread_self();
	a->size = bd->size;
	return 42;
}

static void test_call(void **state)
{
	struct vblk *b = open_disk();
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct call_arg a = { 0 };

	(void)state;
	assert_int_equal(vblk_call(b, call_fn, &a), 42);      /* no thread: here */
	assert_true(pthread_equal(a.thread, pthread_self()));
	assert_int_equal(a.size, DISK);
	assert_int_equal(vblk_start(b, &lock), 0);
	for (int i = 0; i < 100; i++) {
		memset(&a, 0, sizeof(a));
		a.thread = pthread_self();
		assert_int_equal(vblk_call(b, call_fn, &a), 42);
		assert_false(pthread_equal(a.thread, pthread_self()));   /* the I/O thread */
		assert_int_equal(a.size, DISK);
	}
	vblk_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_marks),
		cmocka_unit_test(test_call),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
