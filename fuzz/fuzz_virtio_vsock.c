/*
 * fuzz_virtio_vsock.c - a hostile virtio-vsock driver and a hostile host
 * program at once.
 *
 * The input is, in order:
 *   u8  choices: bit 0 open a host connection first ("CONNECT <b1>\n"),
 *       bit 1 a guest listener on PATH_5 (guest connects succeed),
 *       bit 2 kick tx twice
 *   u8  guest port for the host connection
 *   per queue (rx 0, tx 1, event 2): 8 descriptors (128 bytes), u16 avail
 *       idx, 8 x u16 ring
 *   then the bytes of guest memory at BUF_GPA (up to 32 KiB); the first 64
 *       are also written by the host program on its connection
 * The rings point wherever the input says; packets in them run through the
 * header checks and the connection state machine.  Crashes, sanitizer
 * reports and leaks are findings.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/virtio_vsock.h"
#include "base/log.h"
#include "../tests/ring_driver.h"

#define MEM_SIZE (16u << 20)
#define MEM_USED (1u << 20)
#define QSIZE    8
#define BUF_GPA  0x10000u
#define BUF_MAX  (32u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int unix_sock(const char *path, bool listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0)
		return -1;
	if (listening ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)
		      : connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem m;
	static bool have_mem;
	static char dir[64], path[96], lpath[112];
	struct virtio_device v;
	const struct virtio_device_ops *ops;
	const uint8_t *p = data + 2;
	size_t left, blen;
	struct error e;
	void *priv;
	int hfd = -1, lfd = -1;

	log_threshold = LOG_ERROR;
	if (size < 2)
		return 0;
	if (!have_mem) {
		snprintf(dir, sizeof(dir), "/tmp/shoal-fz-vsock.XXXXXX");
		if (guest_mem_create_anon(&m, MEM_SIZE, &e) || !mkdtemp(dir))
			abort();
		snprintf(path, sizeof(path), "%s/v", dir);
		snprintf(lpath, sizeof(lpath), "%s_5", path);
		have_mem = true;
	}
	memset(m.host, 0, MEM_USED);
	left = size - 2;
	ops = virtio_vsock_new(3, path, &priv, &e);
	if (!ops || virtio_device_init(&v, ops, priv, &m, "virtio-vsock0"))
		abort();
	virtio_set_status(&v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	virtio_set_features(&v, VIRTIO_BIT(VIRTIO_F_VERSION_1));
	virtio_set_status(&v, VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < 3; q++)
		ring_fuzz_queue(&v, &m, q, QSIZE, 0x1000 + 0x1000ull * q, &p, &left);
	blen = left < BUF_MAX ? left : BUF_MAX;
	guest_mem_write(&m, BUF_GPA, p, blen);
	virtio_set_status(&v, VIRTIO_STATUS_DRIVER_OK);
	if (data[0] & 2)
		lfd = unix_sock(lpath, true);
	if (data[0] & 1 && (hfd = unix_sock(path, false)) >= 0) {
		char line[32];
		int n = snprintf(line, sizeof(line), "CONNECT %u\n", data[1]);

		if (write(hfd, line, (size_t)n) < 0 ||
		    write(hfd, p, blen < 64 ? blen : 64) < 0)
			(void)0;
	}
	virtio_vsock_poll(&v);
	virtio_queue_notify(&v, 1);
	if (data[0] & 4)
		virtio_queue_notify(&v, 1);
	virtio_vsock_poll(&v);
	virtio_queue_notify(&v, 0);
	virtio_queue_notify(&v, 2);
	virtio_device_destroy(&v);
	if (hfd >= 0)
		close(hfd);
	if (lfd >= 0) {
		close(lfd);
		unlink(lpath);
	}
	if (size >= 44) {
		struct vsock_hdr h;

		memcpy(&h, data, sizeof(h));
		virtio_vsock_hdr_check(&h, size - 44, 3);
	}
	return 0;
}
