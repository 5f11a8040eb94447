/*
 * test_virtio_vsock.c - the virtio-vsock packet state machine, driven
 * through the virtio core with split rings in an anonymous guest memory.
 * This file is both the guest driver (it reads packets from the rx queue
 * and writes them to the tx queue) and the host program on the Unix
 * sockets (Firecracker's convention: "CONNECT <port>\n" / "OK <port>\n" on
 * the device's socket, PATH_<port> for guest-initiated connections).
 *
 * Covered: host-initiated and guest-initiated connections with data both
 * ways, refusal (RST) when nobody listens or the guest does not answer,
 * credit flow control in both directions (host bytes held back until the
 * guest grants credit; a guest that ignores ours is reset), hostile
 * headers, half and full shutdown, reset, and save/restore (connections
 * dropped, TRANSPORT_RESET on the event queue; a state saved with
 * another CID restores with the device's own, a clone's).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/virtio_vsock.h"
#include "devices/virtqueue.h"

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#define MEM_SIZE   (16u << 20)
#define QSIZE      16
#define RING_BASE  0x100000ull
#define BUF_BASE   0x400000ull
#define BUF_END    0xf00000ull
#define GUEST_CID  3

struct t {
	struct guest_mem mem;
	struct virtio_device vdev;
	struct ring_drv q[3];             /* the driver side of rx, tx, event */
	uint64_t bump;
	uint64_t rxbuf[QSIZE];           /* gpa of the rx buffer at each head */
	char dir[64], path[96];
};

static uint64_t desc_gpa(int q) { return RING_BASE + 0x10000ull * q; }
static uint64_t avail_gpa(int q) { return desc_gpa(q) + 0x4000; }
static uint64_t used_gpa(int q) { return desc_gpa(q) + 0x8000; }

static void *gp(struct t *t, uint64_t gpa, uint64_t len)
{
	return ring_ptr(&t->mem, gpa, len);
}

static uint64_t galloc(struct t *t, uint32_t len)
{
	uint64_t g = t->bump;

	t->bump += (len + 63) & ~63u;
	if (t->bump >= BUF_END)                 /* long tests recycle the area */
		t->bump = BUF_BASE, g = t->bump, t->bump += (len + 63) & ~63u;
	return g;
}

/* Add one chain of `n` buffers to queue `q`; returns the head. */
static uint16_t t_add(struct t *t, int q, const uint64_t *gpa, const uint32_t *len,
		      const bool *write, int n)
{
	struct ring_buf b[4];

	assert_true(n <= 4);
	for (int k = 0; k < n; k++)
		b[k] = (struct ring_buf){ gpa[k], len[k], write[k] };
	return (uint16_t)ring_add(&t->q[q], b, n);
}

static bool t_used(struct t *t, int q, uint16_t *id, uint32_t *len)
{
	return ring_used(&t->q[q], id, len);
}

/* Post `n` rx buffers of 4 KiB + header and kick. */
static void t_rx_post(struct t *t, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t g = galloc(t, 4096 + 44);
		uint32_t l = 4096 + 44;
		bool w = true;
		uint16_t head = t_add(t, 0, &g, &l, &w, 1);

		t->rxbuf[head] = g;
	}
	virtio_queue_notify(&t->vdev, 0);
}

/* Next packet the device sent the guest: header and payload; false if none. */
static bool t_recv(struct t *t, struct vsock_hdr *h, void *payload, size_t cap)
{
	uint16_t id;
	uint32_t len;

	if (!t_used(t, 0, &id, &len))
		return false;
	assert_true(len >= 44);
	memcpy(h, gp(t, t->rxbuf[id], 44), 44);
	assert_int_equal(h->len, len - 44);
	assert_true(h->len <= cap);
	if (h->len)
		memcpy(payload, gp(t, t->rxbuf[id] + 44, h->len), h->len);
	assert_int_equal(h->src_cid, VSOCK_HOST_CID);
	assert_int_equal(h->dst_cid, GUEST_CID);
	return true;
}

/* The guest sends `op` with `len` payload bytes (header and payload in two
 * descriptors, as Linux does). */
static void t_send(struct t *t, uint32_t gport, uint32_t hport, uint16_t op, uint32_t flags,
		   uint32_t buf_alloc, uint32_t fwd_cnt, const void *data, uint32_t len)
{
	struct vsock_hdr h = {
		.src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = gport,
		.dst_port = hport, .len = len, .type = VSOCK_TYPE_STREAM, .op = op,
		.flags = flags, .buf_alloc = buf_alloc, .fwd_cnt = fwd_cnt,
	};
	uint64_t g[2] = { galloc(t, 44), len ? galloc(t, len) : 0 };
	uint32_t l[2] = { 44, len };
	bool w[2] = { false, false };
	uint16_t id;
	uint32_t ulen;

	memcpy(gp(t, g[0], 44), &h, 44);
	if (len)
		memcpy(gp(t, g[1], len), data, len);
	t_add(t, 1, g, l, w, len ? 2 : 1);
	virtio_queue_notify(&t->vdev, 1);
	assert_true(t_used(t, 1, &id, &ulen));
}

static void t_init(struct t *t)
{
	struct error e;
	const struct virtio_device_ops *ops;
	void *priv = NULL;

	memset(t, 0, sizeof(*t));
	t->bump = BUF_BASE;
	snprintf(t->dir, sizeof(t->dir), "/tmp/shoal-vsock.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/v.sock", t->dir);
	assert_int_equal(guest_mem_create_anon(&t->mem, MEM_SIZE, &e), 0);
	ops = virtio_vsock_new(GUEST_CID, t->path, &priv, &e);
	assert_non_null(ops);
	assert_int_equal(virtio_device_init(&t->vdev, ops, priv, &t->mem, "virtio-vsock0"), 0);
	virtio_set_status(&t->vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(virtio_set_features(&t->vdev, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	virtio_set_status(&t->vdev, VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < 3; q++) {
		ring_drv_init(&t->q[q], &t->mem, QSIZE, false, desc_gpa(q), avail_gpa(q),
			      used_gpa(q), RING_RESTART);
		assert_int_equal(ring_attach(&t->q[q], &t->vdev, q), 0);
	}
	assert_true(virtio_set_status(&t->vdev, VIRTIO_STATUS_DRIVER_OK) & VIRTIO_STATUS_DRIVER_OK);
}

static void t_fini(struct t *t)
{
	char p[128];

	virtio_device_destroy(&t->vdev);
	guest_mem_destroy(&t->mem);
	for (int port = 5000; port < 5003; port++) {
		snprintf(p, sizeof(p), "%s_%d", t->path, port);
		unlink(p);
	}
	unlink(t->path);
	rmdir(t->dir);
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static int unix_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* Read exactly `len` bytes with a deadline. */
static void host_read(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&p, 1, 2000), 1);
		n = read(fd, (char *)buf + got, len - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
}

static void t_poll(struct t *t)
{
	struct pollfd p = { .fd = virtio_vsock_event_fd(&t->vdev), .events = POLLIN };

	poll(&p, 1, 100);
	virtio_vsock_poll(&t->vdev);
}

/* Host-initiated connection up to ESTABLISHED; returns the host fd and
 * the device's host port.  The guest grants `credit`. */
static int host_connect(struct t *t, uint32_t gport, uint32_t credit, uint32_t *hport)
{
	struct vsock_hdr h;
	char line[32], want[32];
	int fd = unix_connect(t->path), n;

	n = snprintf(line, sizeof(line), "CONNECT %u\n", gport);
	assert_int_equal(write(fd, line, (size_t)n), n);
	t_poll(t);
	assert_true(t_recv(t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_REQUEST);
	assert_int_equal(h.dst_port, gport);
	assert_true(h.src_port >= 1u << 30);
	assert_int_equal(h.type, VSOCK_TYPE_STREAM);
	assert_int_equal(h.buf_alloc, VSOCK_BUF_ALLOC);
	*hport = h.src_port;
	t_send(t, gport, *hport, VSOCK_OP_RESPONSE, 0, credit, 0, NULL, 0);
	n = snprintf(want, sizeof(want), "OK %u\n", *hport);
	host_read(fd, line, (size_t)n);
	assert_memory_equal(line, want, (size_t)n);
	return fd;
}

/* ---- tests ---- */

static void test_config_cid(void **state)
{
	struct t t;
	uint64_t cid = 0;

	t_init(&t);
	assert_int_equal(virtio_config_read(&t.vdev, 0, &cid, 8), 0);
	assert_int_equal(cid, GUEST_CID);
	assert_int_equal(virtio_config_read(&t.vdev, 8, &cid, 1), -1);
	t_fini(&t);
}

static void test_host_initiated(void **state)
{
	struct t t;
	struct vsock_hdr h;
	char buf[64];
	uint32_t hport;
	int fd;

	t_init(&t);
	t_rx_post(&t, 8);
	fd = host_connect(&t, 1234, 65536, &hport);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 1);
	assert_int_equal(write(fd, "hello", 5), 5);
	t_poll(&t);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, VSOCK_OP_RW);
	assert_int_equal(h.len, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(h.src_port, hport);
	assert_int_equal(h.dst_port, 1234);
	t_send(&t, 1234, hport, VSOCK_OP_RW, 0, 65536, 5, "world", 5);
	host_read(fd, buf, 5);
	assert_memory_equal(buf, "world", 5);
	/* guest closes both ways: host sees EOF, the guest gets RST */
	t_send(&t, 1234, hport, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND,
	       65536, 5, NULL, 0);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 0);
	close(fd);
	t_fini(&t);
}

/* The guest has no listener: it answers RST, the host socket is closed. */
static void test_host_initiated_refused(void **state)
{
	struct t t;
	struct vsock_hdr h;
	char buf[8];
	int fd;

	t_init(&t);
	t_rx_post(&t, 4);
	fd = unix_connect(t.path);
	assert_int_equal(write(fd, "CONNECT 99\n", 11), 11);
	t_poll(&t);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_REQUEST);
	t_send(&t, 99, h.src_port, VSOCK_OP_RST, 0, 0, 0, NULL, 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 0);
	close(fd);
	/* a bad handshake line is dropped without bothering the guest */
	fd = unix_connect(t.path);
	assert_int_equal(write(fd, "HELLO 1\n", 8), 8);
	t_poll(&t);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	assert_false(t_recv(&t, &h, NULL, 0));
	close(fd);
	t_fini(&t);
}

static void test_guest_initiated(void **state)
{
	struct t t;
	struct vsock_hdr h;
	char p[128], buf[64];
	int lfd, fd;

	t_init(&t);
	t_rx_post(&t, 8);
	snprintf(p, sizeof(p), "%s_5000", t.path);
	lfd = unix_listen(p);
	t_send(&t, 40000, 5000, VSOCK_OP_REQUEST, 0, 65536, 0, NULL, 0);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RESPONSE);
	assert_int_equal(h.src_port, 5000);
	assert_int_equal(h.dst_port, 40000);
	fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	t_send(&t, 40000, 5000, VSOCK_OP_RW, 0, 65536, 0, "ping", 4);
	host_read(fd, buf, 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(write(fd, "pong!", 5), 5);
	t_poll(&t);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, VSOCK_OP_RW);
	assert_memory_equal(buf, "pong!", 5);
	assert_int_equal(h.fwd_cnt, 4);
	/* host closes: the guest is told with SHUTDOWN, then answers RST */
	close(fd);
	t_poll(&t);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_SHUTDOWN);
	assert_int_equal(h.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	t_send(&t, 40000, 5000, VSOCK_OP_RST, 0, 65536, 0, NULL, 0);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 0);
	/* nobody on port 5001: RST */
	t_send(&t, 40001, 5001, VSOCK_OP_REQUEST, 0, 65536, 0, NULL, 0);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(h.dst_port, 40001);
	close(lfd);
	t_fini(&t);
}

/* Host -> guest: never more than the guest's credit; a CREDIT_REQUEST when
 * it runs out; more after the guest's CREDIT_UPDATE. */
static void test_credit_to_guest(void **state)
{
	struct t t;
	struct vsock_hdr h;
	char buf[64];
	uint32_t hport;
	int fd;

	t_init(&t);
	t_rx_post(&t, 8);
	fd = host_connect(&t, 7, 8, &hport);
	assert_int_equal(write(fd, "0123456789abcdefghij", 20), 20);
	t_poll(&t);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, VSOCK_OP_RW);
	assert_int_equal(h.len, 8);
	assert_memory_equal(buf, "01234567", 8);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_CREDIT_REQUEST);
	assert_false(t_recv(&t, &h, NULL, 0));
	t_poll(&t);                                  /* nothing more: no credit */
	assert_false(t_recv(&t, &h, NULL, 0));
	t_send(&t, 7, hport, VSOCK_OP_CREDIT_UPDATE, 0, 8, 8, NULL, 0);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.len, 8);
	assert_memory_equal(buf, "89abcdef", 8);
	assert_true(t_recv(&t, &h, NULL, 0));      /* out of credit again: one request */
	assert_int_equal(h.op, VSOCK_OP_CREDIT_REQUEST);
	t_send(&t, 7, hport, VSOCK_OP_CREDIT_UPDATE, 0, 1024, 16, NULL, 0);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.len, 4);
	assert_memory_equal(buf, "ghij", 4);
	/* the guest asks for our credit */
	t_send(&t, 7, hport, VSOCK_OP_CREDIT_REQUEST, 0, 1024, 20, NULL, 0);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_CREDIT_UPDATE);
	assert_int_equal(h.buf_alloc, VSOCK_BUF_ALLOC);
	close(fd);
	t_fini(&t);
}

/* Guest -> host: a guest that keeps sending while the host reads nothing is
 * held to our credit and then reset. */
static void test_guest_over_credit(void **state)
{
	struct t t;
	struct vsock_hdr h;
	static char chunk[VSOCK_MAX_PAYLOAD];
	uint32_t hport, sent = 0;
	bool reset = false;
	int fd, small = 4096;

	t_init(&t);
	t_rx_post(&t, 8);
	fd = host_connect(&t, 8, 65536, &hport);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	for (int i = 0; i < 64 && !reset; i++) {
		t_send(&t, 8, hport, VSOCK_OP_RW, 0, 65536, 0, chunk, sizeof(chunk));
		sent += sizeof(chunk);
		while (t_recv(&t, &h, NULL, 0))
			reset |= h.op == VSOCK_OP_RST;
	}
	assert_true(reset);
	assert_true(sent > VSOCK_BUF_ALLOC);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 0);
	close(fd);
	t_fini(&t);
}

/* Malformed packets are dropped; packets for unknown connections and of
 * unknown types get RST; the device stays live. */
static void test_hostile_headers(void **state)
{
	struct t t;
	struct vsock_hdr h = { .src_cid = GUEST_CID, .dst_cid = 2, .src_port = 1, .dst_port = 2,
			       .type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_RW, .len = 100 };
	uint64_t g;
	uint32_t l = 44;
	bool w = false;
	uint16_t id;
	uint32_t ulen;

	t_init(&t);
	t_rx_post(&t, 8);
	g = galloc(&t, 64);
	/* len says 100, the chain has none */
	memcpy(gp(&t, g, 44), &h, 44);
	t_add(&t, 1, &g, &l, &w, 1);
	/* short header */
	l = 20;
	t_add(&t, 1, &g, &l, &w, 1);
	virtio_queue_notify(&t.vdev, 1);
	assert_true(t_used(&t, 1, &id, &ulen));
	assert_true(t_used(&t, 1, &id, &ulen));
	assert_false(t_recv(&t, &h, NULL, 0));
	/* wrong source CID: dropped, no answer */
	h.len = 0;
	h.src_cid = 77;
	memcpy(gp(&t, g, 44), &h, 44);
	l = 44;
	t_add(&t, 1, &g, &l, &w, 1);
	virtio_queue_notify(&t.vdev, 1);
	assert_false(t_recv(&t, &h, NULL, 0));
	/* unknown connection: RST; a datagram type: RST; RST itself: nothing */
	t_send(&t, 11, 22, VSOCK_OP_RW, 0, 0, 0, "x", 1);
	assert_true(t_recv(&t, &h, NULL, 0));
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(h.dst_port, 11);
	assert_int_equal(h.src_port, 22);
	t_send(&t, 12, 22, VSOCK_OP_RST, 0, 0, 0, NULL, 0);
	assert_false(t_recv(&t, &h, NULL, 0));
	assert_false(t.vdev.broken);
	{
		struct vsock_hdr x = { .src_cid = GUEST_CID, .dst_cid = 2, .len = 0 };

		assert_int_equal(virtio_vsock_hdr_check(&x, 0, GUEST_CID), 0);
		x.len = VSOCK_MAX_PAYLOAD + 1;
		assert_int_equal(virtio_vsock_hdr_check(&x, VSOCK_MAX_PAYLOAD + 1, GUEST_CID), -1);
		x.len = 0;
		x.dst_cid = 3;
		assert_int_equal(virtio_vsock_hdr_check(&x, 0, GUEST_CID), -1);
	}
	t_fini(&t);
}

/* With the rx ring empty nothing is lost: packets wait for buffers. */
static void test_rx_ring_empty(void **state)
{
	struct t t;
	struct vsock_hdr h;
	char buf[64];
	uint32_t hport;
	int fd;

	t_init(&t);
	t_rx_post(&t, 2);
	fd = host_connect(&t, 9, 65536, &hport);       /* uses 1 buffer (REQUEST) */
	assert_int_equal(write(fd, "one", 3), 3);
	t_poll(&t);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));  /* the last buffer */
	assert_int_equal(write(fd, "two", 3), 3);
	t_poll(&t);
	assert_false(t_recv(&t, &h, buf, sizeof(buf)));
	t_rx_post(&t, 1);
	assert_true(t_recv(&t, &h, buf, sizeof(buf)));
	assert_int_equal(h.len, 3);
	assert_memory_equal(buf, "two", 3);
	close(fd);
	t_fini(&t);
}

/* Save/restore: the connection is dropped and the guest is told. */
static void test_restore_transport_reset(void **state)
{
	struct t t;
	struct state_writer w;
	struct state_reader r;
	struct virtio_device v2;
	const struct virtio_device_ops *ops;
	void *priv;
	struct error e;
	uint32_t hport, ev = 0xffffffff, len;
	uint64_t eg;
	uint16_t id;
	int fd;
	char p2[128];

	t_init(&t);
	t_rx_post(&t, 4);
	eg = galloc(&t, 4);
	{
		uint32_t l = 4;
		bool wr = true;

		memcpy(gp(&t, eg, 4), &ev, 4);
		t_add(&t, 2, &eg, &l, &wr, 1);
	}
	fd = host_connect(&t, 10, 65536, &hport);
	state_writer_init(&w);
	virtio_device_save(&t.vdev, &w);
	assert_false(w.error);
	snprintf(p2, sizeof(p2), "%s/v2.sock", t.dir);
	ops = virtio_vsock_new(GUEST_CID, p2, &priv, &e);
	assert_non_null(ops);
	assert_int_equal(virtio_device_init(&v2, ops, priv, &t.mem, "virtio-vsock0"), 0);
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&v2, 1, &r), 0);
	assert_int_equal(virtio_vsock_conn_count(&v2), 0);
	virtio_vsock_poll(&v2);
	assert_true(t_used(&t, 2, &id, &len));
	assert_int_equal(len, 4);
	memcpy(&ev, gp(&t, eg, 4), 4);
	assert_int_equal(ev, VSOCK_EVENT_TRANSPORT_RESET);
	{       /* the rx buffer the old device held is used by the new one */
		struct vsock_hdr h;
		struct virtio_device old = t.vdev;
		int fd2;

		t.vdev = v2;
		fd2 = unix_connect(p2);
		assert_int_equal(write(fd2, "CONNECT 12\n", 11), 11);
		t_poll(&t);
		assert_true(t_recv(&t, &h, NULL, 0));
		assert_int_equal(h.op, VSOCK_OP_REQUEST);
		assert_int_equal(h.dst_port, 12);
		/* head 1: held by the old device at save time (0 took the REQUEST) */
		assert_int_equal(*(uint32_t *)gp(&t, used_gpa(0) + 4 + 8ull * ((t.q[0].used_seen - 1) % QSIZE), 4), 1);
		t.vdev = old;
		close(fd2);
	}
	virtio_device_destroy(&v2);
	state_writer_free(&w);
	/* a state for another CID (a clone's new one): the device keeps its
	 * own, which config space says, and the restore does not fail */
	ops = virtio_vsock_new(GUEST_CID + 1, p2, &priv, &e);
	assert_int_equal(virtio_device_init(&v2, ops, priv, &t.mem, "virtio-vsock0"), 0);
	state_writer_init(&w);
	virtio_device_save(&t.vdev, &w);
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&v2, 1, &r), 0);
	{
		uint64_t cid = 0;

		ops->config_read(&v2, 0, &cid, sizeof(cid));
		assert_int_equal(le64toh(cid), GUEST_CID + 1);
	}
	virtio_device_destroy(&v2);
	state_writer_free(&w);
	close(fd);
	t_fini(&t);
}

static void test_reset_drops_connections(void **state)
{
	struct t t;
	uint32_t hport;
	char buf[8];
	int fd;

	t_init(&t);
	t_rx_post(&t, 4);
	fd = host_connect(&t, 11, 65536, &hport);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 1);
	virtio_set_status(&t.vdev, 0);
	assert_int_equal(virtio_vsock_conn_count(&t.vdev), 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	/* while the driver is not live, host connections are refused */
	fd = unix_connect(t.path);
	virtio_vsock_poll(&t.vdev);
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	t_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_cid),
		cmocka_unit_test(test_host_initiated),
		cmocka_unit_test(test_host_initiated_refused),
		cmocka_unit_test(test_guest_initiated),
		cmocka_unit_test(test_credit_to_guest),
		cmocka_unit_test(test_guest_over_credit),
		cmocka_unit_test(test_hostile_headers),
		cmocka_unit_test(test_rx_ring_empty),
		cmocka_unit_test(test_restore_transport_reset),
		cmocka_unit_test(test_reset_drops_connections),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
