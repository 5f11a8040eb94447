/*
 * fuzz_virtio_blk.c - libFuzzer target for the virtio-blk request parser
 * and executor: arbitrary request bytes in arbitrary buffer layouts.
 *
 * Input layout:
 *   u8 flags        bit 0: the read-only disk; bit 1: ask the in-buffers to
 *                   start with junk instead of zeros
 *   u8 nout, nin    device-readable / device-writable buffer counts (mod 9)
 *   u16 len[nout + nin]   each buffer's length (mod 70000)
 *   rest            the bytes the readable buffers hold, in order (header,
 *                   data, discard segments, ...), zero-padded if short
 *
 * Each input becomes a struct virtq_elem whose iovecs point into host
 * buffers (the virtqueue core, fuzzed on its own, is what makes iovecs from
 * a ring), and goes through vblk_execute against a 1 MiB raw disk in a
 * memfd.  Checks: the status is OK, IOERR, UNSUPP, or -1 exactly when there
 * is no writable byte; it sits in the last writable byte; the used length
 * is the writable length; the read-only device never counts a write,
 * discard or write-zeroes as done.  Any crash or sanitizer report is a bug.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "devices/virtio_blk.h"
#include "base/log.h"
#include "vmm/config.h"

#define DISK_BYTES (1u << 20)
#define MAX_BUF    70000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vblk *disks[2];           /* read-write, read-only */
static uint8_t outbuf[8 * MAX_BUF], inbuf[8 * MAX_BUF];
static struct virtq_elem elem;

/* Two memfd disks, one read-write and one read-only.  Two files, not one
 * opened twice: the block layer's image lock (block/lock.c) rightly keeps
 * a reader off a file that a writer without shared access holds. */
static void disks_open(void)
{
	char path[64];
	struct error e;

	for (int i = 0; i < 2; i++) {
		int fd = memfd_create(i ? "fuzz-vblk-ro" : "fuzz-vblk-rw", 0);
		struct vm_disk d = { .path = path, .readonly = i == 1, .serial = "fuzz" };

		if (fd < 0 || ftruncate(fd, DISK_BYTES) < 0) {
			perror("fuzz_virtio_blk: memfd");
			abort();
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (vblk_new(&disks[i], &d, i ? "vblk-ro" : "vblk-rw", &e)) {
			fprintf(stderr, "fuzz_virtio_blk: %s\n", e.msg);
			abort();
		}
	}
}

/* Lay the input out as an element; false if the input is too short. */
static bool elem_build(const uint8_t *data, size_t size, bool junk)
{
	unsigned nout, nin, n;
	size_t pos = 3, opos = 0, ipos = 0;

	if (size < 3)
		return false;
	nout = data[1] % 9;
	nin = data[2] % 9;
	n = nout + nin;
	if (size < pos + 2 * n)
		return false;
	memset(&elem, 0, sizeof(elem));
	for (unsigned i = 0; i < n; i++, pos += 2) {
		uint32_t len = (uint32_t)(data[pos] | data[pos + 1] << 8) % MAX_BUF;
		uint8_t *base = i < nout ? outbuf + opos : inbuf + ipos;

		elem.iov[i] = (struct iovec){ base, len };
		if (i < nout) {
			opos += len;
			elem.out_len += len;
		} else {
			memset(base, junk ? 0xa5 : 0, len);
			ipos += len;
			elem.in_len += len;
		}
	}
	elem.out_num = nout;
	elem.in_num = nin;
	memset(outbuf, 0, opos);
	memcpy(outbuf, data + pos, size - pos < opos ? size - pos : opos);
	return true;
}

/* The byte at `off` of the element's writable side. */
static uint8_t in_byte(uint64_t off)
{
	for (unsigned i = 0; i < elem.in_num; i++) {
		struct iovec *v = &elem.iov[elem.out_num + i];

		if (off < v->iov_len)
			return ((uint8_t *)v->iov_base)[off];
		off -= v->iov_len;
	}
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct vblk_stats *ro;
	uint32_t used;
	int st;

	log_threshold = LOG_ERROR;
	if (!disks[0])
		disks_open();
	if (!elem_build(data, size, data[0] & 2))
		return 0;
	st = vblk_execute(disks[data[0] & 1], &elem, &used);
	if ((st == -1) != (elem.in_len == 0))
		abort();
	if (st != -1 && st != 0 && st != 1 && st != 2)
		abort();
	if (st >= 0 && in_byte(elem.in_len - 1) != st)
		abort();
	if (used != elem.in_len)
		abort();
	ro = vblk_get_stats(disks[1]);
	if (ro->writes || ro->discards || ro->write_zeroes)
		abort();
	return 0;
}
