/*
 * test_virtio_net.c - the virtio-net device model driven through the virtio
 * core, with this file as the driver (split rings in an anonymous guest
 * memory) and, as the network, either
 *   - a socketpair(AF_UNIX, SOCK_DGRAM) passed as `fd=N`: frames are
 *     datagrams with no vnet header (tap.h); or
 *   - a real multi-queue TAP in a private network namespace (unshare; the
 *     test skips with its reason where that is not allowed), addressed
 *     10.0.2.2/24, whose kernel answers our ARP requests through the vnet
 *     header path with offloads.
 *
 * Covered: TX and RX framing in modern (12-byte header) and legacy (10-byte)
 * modes, mergeable rx buffers, frames larger than the buffers (dropped,
 * counted, buffer kept), an empty rx ring (the fd leaves the epoll set and
 * comes back on the rx kick), hostile TX chains (no header, oversized, bad
 * header flags and GSO types), the control queue (MQ VQ_PAIRS_SET and
 * refusals), save/restore with a stashed rx buffer, and reset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/virtio_net.h"
#include "devices/virtqueue.h"

#define RING_CHECK(c) assert_true(c)
#include "ring_driver.h"

#define MEM_SIZE   (16u << 20)
#define QSIZE      16
#define RING_BASE  0x100000ull       /* queue q: + q * 0x10000 */
#define BUF_BASE   0x400000ull
#define BUF_END    0xf00000ull

struct t {
	struct guest_mem mem;
	struct virtio_device vdev;
	int sock[2];                     /* [0] the device's fd, [1] the network */
	struct ring_drv q[2 * VIRTIO_NET_MAX_PAIRS + 1];   /* the driver side of each queue */
	uint64_t bump;                   /* next free buffer gpa */
	uint32_t hdr;                    /* header length in use */
	bool packed;                     /* VIRTIO_F_RING_PACKED negotiated */
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
	assert_true(t->bump < BUF_END);
	return g;
}

/* ---- bring-up ---- */

/* The driver's rings for every queue, set up and enabled. */
static void t_queues(struct t *t)
{
	for (uint16_t q = 0; q < t->vdev.num_queues; q++) {
		ring_drv_init(&t->q[q], &t->mem, QSIZE, t->packed, desc_gpa(q), avail_gpa(q),
			      used_gpa(q), RING_RESTART);
		assert_int_equal(ring_attach(&t->q[q], &t->vdev, q), 0);
	}
}

/* Negotiate `want` (intersected with the offer) and go live. */
static void t_live(struct t *t, uint64_t want, bool legacy)
{
	uint64_t f = want & t->vdev.host_features;

	t->vdev.legacy = legacy;
	virtio_set_status(&t->vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(virtio_set_features(&t->vdev, f), 0);
	if (!legacy)
		assert_true(virtio_set_status(&t->vdev, VIRTIO_STATUS_FEATURES_OK) &
			    VIRTIO_STATUS_FEATURES_OK);
	t->packed = f & VIRTIO_BIT(VIRTIO_F_RING_PACKED);
	t_queues(t);
	assert_true(virtio_set_status(&t->vdev, VIRTIO_STATUS_DRIVER_OK) & VIRTIO_STATUS_DRIVER_OK);
	t->hdr = (f & VIRTIO_BIT(VIRTIO_F_VERSION_1)) || (f & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
}

/* A device on a socketpair; the caller negotiates. */
static void t_init_fd(struct t *t)
{
	struct error e;
	struct virtio_net_params p = { .fd = -1, .queues = 1 };
	const struct virtio_device_ops *ops;
	void *priv = NULL;

	memset(t, 0, sizeof(*t));
	t->bump = BUF_BASE;
	assert_int_equal(guest_mem_create_anon(&t->mem, MEM_SIZE, &e), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM, 0, t->sock), 0);
	p.fd = t->sock[0];
	ops = virtio_net_new(&p, &priv, &e);
	assert_non_null(ops);
	assert_int_equal(virtio_device_init(&t->vdev, ops, priv, &t->mem, "virtio-net0"), 0);
}

static void t_fini(struct t *t)
{
	virtio_device_destroy(&t->vdev);    /* closes sock[0] */
	if (t->sock[1] > 0)
		close(t->sock[1]);
	guest_mem_destroy(&t->mem);
}

/* ---- the driver's rings ---- */

/* Add a chain of `n` buffers to queue `q`; returns the head (split) or the
 * buffer id (packed). */
static uint16_t t_add(struct t *t, int q, const struct ring_buf *b, int n)
{
	return (uint16_t)ring_add(&t->q[q], b, n);
}

/* Take one used entry from queue `q`. */
static bool t_used(struct t *t, int q, uint16_t *id, uint32_t *len)
{
	return ring_used(&t->q[q], id, len);
}

/* Transmit header `h` (t->hdr bytes) and `len` frame bytes as two buffers. */
static void t_tx(struct t *t, int pair, const struct virtio_net_hdr *h, const void *frame,
		 uint32_t len)
{
	struct ring_buf b[2] = { { galloc(t, t->hdr), t->hdr, false }, { galloc(t, len), len, false } };

	memcpy(gp(t, b[0].gpa, t->hdr), h, t->hdr);
	memcpy(gp(t, b[1].gpa, len), frame, len);
	t_add(t, 2 * pair + 1, b, 2);
	virtio_queue_notify(&t->vdev, (uint16_t)(2 * pair + 1));
}

/* Post one rx buffer of `len` bytes; returns its gpa. */
static uint64_t t_rx_post(struct t *t, int pair, uint32_t len)
{
	struct ring_buf b = { galloc(t, len), len, true };

	t_add(t, 2 * pair, &b, 1);
	return b.gpa;
}

static void frame_fill(uint8_t *f, uint32_t len, uint8_t seed)
{
	memset(f, 0xff, 6);                          /* broadcast */
	memcpy(f + 6, "\x52\x54\x00\x00\x00\x01", 6);
	f[12] = 0x88;
	f[13] = 0xb5;                                /* local experimental ethertype */
	for (uint32_t i = 14; i < len; i++)
		f[i] = (uint8_t)(i * 13 + seed);
}

static bool fd_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

#define MODERN (VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MAC) | \
		VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ))

/* ---- tests ---- */

static void test_config_and_features(void **state)
{
	struct t t;
	uint8_t mac[6], st[2];

	t_init_fd(&t);
	/* a datagram fd has no vnet header: no offloads offered */
	assert_false(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_CSUM));
	assert_false(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4));
	assert_false(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_MQ));
	assert_true(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
	assert_int_equal(t.vdev.num_queues, 3);
	for (int i = 0; i < 6; i++)
		assert_int_equal(virtio_config_read(&t.vdev, (uint32_t)i, &mac[i], 1), 0);
	assert_int_equal(mac[0], 0x52);
	assert_int_equal(mac[1], 0x54);
	assert_int_equal(mac[2], 0x00);
	assert_int_equal(virtio_config_read(&t.vdev, 6, st, 2), 0);
	assert_int_equal(st[0], 1);                 /* link up */
	assert_int_equal(virtio_config_read(&t.vdev, 12, st, 1), -1);
	t_fini(&t);
}

static void test_tx_modern(void **state)
{
	struct t t;
	uint8_t f[300], got[400];
	struct virtio_net_hdr h = { 0 };
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	assert_int_equal(t.hdr, 12);
	frame_fill(f, sizeof(f), 1);
	t_tx(&t, 0, &h, f, sizeof(f));
	assert_int_equal(recv(t.sock[1], got, sizeof(got), MSG_DONTWAIT), sizeof(f));
	assert_memory_equal(got, f, sizeof(f));
	assert_true(t_used(&t, 1, &id, &len));
	assert_int_equal(len, 0);
	assert_int_equal(virtio_net_stats(&t.vdev, 0, true)->frames, 1);
	assert_int_equal(virtio_net_stats(&t.vdev, 0, true)->bytes, sizeof(f));
	t_fini(&t);
}

/* Hostile TX chains: each is returned and counted, none is sent, and the
 * device stays live. */
static void test_tx_hostile(void **state)
{
	struct t t;
	uint8_t f[100], got[200];
	struct virtio_net_hdr h = { 0 };
	uint16_t id;
	uint32_t len;
	int used = 0;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	frame_fill(f, sizeof(f), 2);
	{       /* shorter than the header */
		struct ring_buf b = { galloc(&t, 8), 8, false };

		t_add(&t, 1, &b, 1);
		virtio_queue_notify(&t.vdev, 1);
	}
	h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;       /* CSUM not negotiated */
	t_tx(&t, 0, &h, f, sizeof(f));
	h.flags = 0x80;                              /* unknown flag */
	t_tx(&t, 0, &h, f, sizeof(f));
	h.flags = 0;
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;       /* TSO not negotiated */
	h.gso_size = 1400;
	t_tx(&t, 0, &h, f, sizeof(f));
	h.gso_type = 0;
	t_tx(&t, 0, &h, f, 10);                      /* runt */
	{       /* oversized: header + 70000 bytes in 4 buffers */
		struct ring_buf b[5] = { { galloc(&t, 12), 12, false } };

		memset(gp(&t, b[0].gpa, 12), 0, 12);
		for (int k = 1; k < 5; k++)
			b[k] = (struct ring_buf){ galloc(&t, 17500), 17500, false };
		t_add(&t, 1, b, 5);
		virtio_queue_notify(&t.vdev, 1);
	}
	while (t_used(&t, 1, &id, &len))
		used++;
	assert_int_equal(used, 6);
	assert_int_equal(recv(t.sock[1], got, sizeof(got), MSG_DONTWAIT), -1);
	assert_int_equal(virtio_net_stats(&t.vdev, 0, true)->errors, 6);
	assert_int_equal(virtio_net_stats(&t.vdev, 0, true)->frames, 0);
	assert_false(t.vdev.broken);
	/* and a good one still goes through */
	t_tx(&t, 0, &h, f, sizeof(f));
	assert_int_equal(recv(t.sock[1], got, sizeof(got), MSG_DONTWAIT), sizeof(f));
	t_fini(&t);
}

static void test_rx_modern(void **state)
{
	struct t t;
	uint8_t f[600];
	uint64_t g[2];
	struct virtio_net_hdr h;
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	g[0] = t_rx_post(&t, 0, 2048);
	g[1] = t_rx_post(&t, 0, 2048);
	virtio_queue_notify(&t.vdev, 0);
	for (int k = 0; k < 2; k++) {
		frame_fill(f, sizeof(f), (uint8_t)k);
		assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	}
	assert_true(fd_readable(virtio_net_event_fd(&t.vdev)));
	virtio_net_poll(&t.vdev);
	for (int k = 0; k < 2; k++) {
		assert_true(t_used(&t, 0, &id, &len));
		assert_int_equal(id, k);
		assert_int_equal(len, 12 + sizeof(f));
		memcpy(&h, gp(&t, g[k], 12), 12);
		assert_int_equal(h.flags, 0);
		assert_int_equal(h.gso_type, 0);
		assert_int_equal(h.num_buffers, 1);
		frame_fill(f, sizeof(f), (uint8_t)k);
		assert_memory_equal(gp(&t, g[k] + 12, sizeof(f)), f, sizeof(f));
	}
	assert_int_equal(virtio_net_stats(&t.vdev, 0, false)->frames, 2);
	t_fini(&t);
}

/* No rx buffers: the fd leaves the epoll set (no spinning) until the rx
 * kick; then the waiting frame and the next one are delivered. */
static void test_rx_empty_ring_stops_polling(void **state)
{
	struct t t;
	uint8_t f[100];
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	frame_fill(f, sizeof(f), 3);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	assert_int_equal(send(t.sock[1], f, 80, 0), 80);
	assert_true(fd_readable(virtio_net_event_fd(&t.vdev)));
	virtio_net_poll(&t.vdev);
	assert_false(fd_readable(virtio_net_event_fd(&t.vdev)));
	assert_false(t_used(&t, 0, &id, &len));
	t_rx_post(&t, 0, 1024);
	virtio_queue_notify(&t.vdev, 0);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 12 + sizeof(f));
	/* one buffer used, none left: polling is off again, the second waits */
	assert_false(fd_readable(virtio_net_event_fd(&t.vdev)));
	t_rx_post(&t, 0, 1024);
	virtio_queue_notify(&t.vdev, 0);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 12 + 80);
	/* buffers again, fd drained: polling is back on for the next frame */
	t_rx_post(&t, 0, 1024);
	virtio_queue_notify(&t.vdev, 0);
	assert_false(fd_readable(virtio_net_event_fd(&t.vdev)));
	assert_int_equal(send(t.sock[1], f, 60, 0), 60);
	assert_true(fd_readable(virtio_net_event_fd(&t.vdev)));
	virtio_net_poll(&t.vdev);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 12 + 60);
	assert_int_equal(virtio_net_stats(&t.vdev, 0, false)->dropped, 0);
	t_fini(&t);
}

/* Without MRG_RXBUF a frame larger than the buffer is dropped and counted;
 * the buffer is kept for the next frame. */
static void test_rx_too_big(void **state)
{
	struct t t;
	uint8_t f[500];
	uint64_t g;
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	g = t_rx_post(&t, 0, 200);
	virtio_queue_notify(&t.vdev, 0);
	frame_fill(f, sizeof(f), 4);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	virtio_net_poll(&t.vdev);
	assert_false(t_used(&t, 0, &id, &len));
	assert_int_equal(virtio_net_stats(&t.vdev, 0, false)->dropped, 1);
	assert_int_equal(send(t.sock[1], f, 150, 0), 150);
	virtio_net_poll(&t.vdev);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 162);
	assert_memory_equal(gp(&t, g + 12, 150), f, 150);
	t_fini(&t);
}

/* MRG_RXBUF: a frame spread over several small buffers, num_buffers set. */
static void test_rx_mergeable(void **state)
{
	struct t t;
	uint8_t f[1000], got[1100];
	uint64_t g[8];
	struct virtio_net_hdr h;
	uint16_t id;
	uint32_t len, off = 0;
	int k = 0;

	t_init_fd(&t);
	t_live(&t, MODERN | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF), false);
	for (int i = 0; i < 8; i++)
		g[i] = t_rx_post(&t, 0, 256);
	virtio_queue_notify(&t.vdev, 0);
	frame_fill(f, sizeof(f), 5);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	virtio_net_poll(&t.vdev);
	while (t_used(&t, 0, &id, &len)) {
		assert_int_equal(id, k);
		memcpy(got + off, gp(&t, g[k], len), len);
		off += len;
		k++;
	}
	assert_int_equal(k, 4);                      /* 1012 bytes in 256-byte buffers */
	assert_int_equal(off, 12 + sizeof(f));
	memcpy(&h, got, 12);
	assert_int_equal(h.num_buffers, 4);
	assert_memory_equal(got + 12, f, sizeof(f));
	/* the remaining 4 buffers take a 700-byte frame: 3 buffers */
	assert_int_equal(send(t.sock[1], f, 700, 0), 700);
	virtio_net_poll(&t.vdev);
	for (k = 0; t_used(&t, 0, &id, &len); k++)
		;
	assert_int_equal(k, 3);
	t_fini(&t);
}

/* Packed rings: TX, and mergeable RX whose used entries skip the right
 * number of slots; many rounds so the rings wrap. */
static void test_packed_ring(void **state)
{
	struct t t;
	uint8_t f[700], got[800];
	struct virtio_net_hdr h = { 0 };
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN | VIRTIO_BIT(VIRTIO_F_RING_PACKED) | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF),
	       false);
	assert_true(t.packed);
	for (int round = 0; round < 20; round++) {
		uint64_t g[3];
		uint32_t off = 0;
		int k = 0;

		frame_fill(f, sizeof(f), (uint8_t)round);
		t_tx(&t, 0, &h, f, sizeof(f));
		assert_int_equal(recv(t.sock[1], got, sizeof(got), MSG_DONTWAIT), sizeof(f));
		assert_memory_equal(got, f, sizeof(f));
		assert_true(t_used(&t, 1, &id, &len));
		for (int i = 0; i < 3; i++) {       /* 300-byte buffers of 2 descriptors */
			struct ring_buf b[2] = { { galloc(&t, 100), 100, true }, { galloc(&t, 200), 200, true } };

			assert_int_equal(b[1].gpa, b[0].gpa + 128);
			g[i] = b[0].gpa;
			t_add(&t, 0, b, 2);
		}
		virtio_queue_notify(&t.vdev, 0);
		assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
		virtio_net_poll(&t.vdev);
		while (t_used(&t, 0, &id, &len)) {
			assert_true(len <= 300);
			memcpy(got + off, gp(&t, g[k], len < 100 ? len : 100), len < 100 ? len : 100);
			if (len > 100)
				memcpy(got + off + 100, gp(&t, g[k] + 128, len - 100), len - 100);
			off += len;
			k++;
		}
		assert_int_equal(k, 3);                  /* 712 bytes in 300-byte buffers */
		assert_int_equal(off, 12 + sizeof(f));
		memcpy(&h, got, 12);
		assert_int_equal(h.num_buffers, 3);
		assert_memory_equal(got + 12, f, sizeof(f));
		memset(&h, 0, sizeof(h));
	}
	assert_false(t.vdev.broken);
	t_fini(&t);
}

/* Legacy interface: 10-byte header both ways. */
static void test_legacy_header(void **state)
{
	struct t t;
	uint8_t f[64], got[100];
	struct virtio_net_hdr h = { 0 };
	uint64_t g;
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, VIRTIO_BIT(VIRTIO_NET_F_MAC), true);
	assert_int_equal(t.hdr, 10);
	frame_fill(f, sizeof(f), 6);
	t_tx(&t, 0, &h, f, sizeof(f));
	assert_int_equal(recv(t.sock[1], got, sizeof(got), MSG_DONTWAIT), sizeof(f));
	assert_memory_equal(got, f, sizeof(f));
	g = t_rx_post(&t, 0, 128);
	virtio_queue_notify(&t.vdev, 0);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	virtio_net_poll(&t.vdev);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 10 + sizeof(f));
	assert_memory_equal(gp(&t, g + 10, sizeof(f)), f, sizeof(f));
	t_fini(&t);
}

/* Control queue on a one-pair device: every command is refused, politely. */
static void test_ctrl_queue(void **state)
{
	struct t t;
	uint16_t id;
	uint32_t len;
	static const uint8_t cmds[][4] = {
		{ VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 1, 0 },  /* no MQ */
		{ 0, 0, 1, 0 },                                                  /* RX promisc */
		{ 9, 9, 0, 0 },
	};

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	for (unsigned i = 0; i < 3; i++) {
		struct ring_buf b[2] = { { galloc(&t, 4), 4, false }, { galloc(&t, 1), 1, true } };

		memcpy(gp(&t, b[0].gpa, 4), cmds[i], 4);
		*(uint8_t *)gp(&t, b[1].gpa, 1) = 0x55;
		t_add(&t, 2, b, 2);
		virtio_queue_notify(&t.vdev, 2);
		assert_true(t_used(&t, 2, &id, &len));
		assert_int_equal(len, 1);
		assert_int_equal(*(uint8_t *)gp(&t, b[1].gpa, 1), VIRTIO_NET_ERR);
	}
	{       /* no status byte at all: returned with length 0 */
		struct ring_buf b = { galloc(&t, 4), 4, false };

		t_add(&t, 2, &b, 1);
		virtio_queue_notify(&t.vdev, 2);
		assert_true(t_used(&t, 2, &id, &len));
		assert_int_equal(len, 0);
	}
	assert_false(t.vdev.broken);
	t_fini(&t);
}

static void test_ctrl_parse(void **state)
{
	uint64_t mq = VIRTIO_BIT(VIRTIO_NET_F_MQ);
	uint8_t r[4] = { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 3, 0 };
	uint16_t pairs = 1;

	assert_int_equal(virtio_net_ctrl_parse(r, 4, mq, 4, &pairs), VIRTIO_NET_OK);
	assert_int_equal(pairs, 3);
	assert_int_equal(virtio_net_ctrl_parse(r, 4, mq, 2, &pairs), VIRTIO_NET_ERR);   /* > max */
	assert_int_equal(virtio_net_ctrl_parse(r, 3, mq, 4, &pairs), VIRTIO_NET_ERR);   /* short */
	assert_int_equal(virtio_net_ctrl_parse(r, 4, 0, 4, &pairs), VIRTIO_NET_ERR);    /* no MQ */
	r[2] = 0;
	assert_int_equal(virtio_net_ctrl_parse(r, 4, mq, 4, &pairs), VIRTIO_NET_ERR);   /* zero */
	assert_int_equal(virtio_net_ctrl_parse(r, 1, mq, 4, &pairs), VIRTIO_NET_ERR);
	assert_int_equal(pairs, 3);
}

static void test_tx_hdr_check(void **state)
{
	uint64_t f = VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4);
	struct virtio_net_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
				    .csum_offset = 16 };

	assert_int_equal(virtio_net_tx_hdr_check(&h, 100, f), 0);
	assert_int_equal(virtio_net_tx_hdr_check(&h, 51, f), -1);     /* csum past the end */
	assert_int_equal(virtio_net_tx_hdr_check(&h, 100, 0), -1);    /* CSUM not negotiated */
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	h.gso_size = 1448;
	assert_int_equal(virtio_net_tx_hdr_check(&h, 60000, f), 0);
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
	assert_int_equal(virtio_net_tx_hdr_check(&h, 60000, f), -1);  /* no HOST_ECN */
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
	assert_int_equal(virtio_net_tx_hdr_check(&h, 60000, f), -1);
	h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	h.gso_size = 0;
	assert_int_equal(virtio_net_tx_hdr_check(&h, 60000, f), -1);
	h.gso_size = 1448;
	assert_int_equal(virtio_net_tx_hdr_check(&h, VIRTIO_NET_MAX_FRAME + 1, f), -1);
	assert_int_equal(virtio_net_tx_hdr_check(&h, 13, f), -1);
}

/* A stashed rx buffer survives save/restore into a fresh device. */
static void test_save_restore(void **state)
{
	struct t t;
	struct state_writer w;
	struct state_reader r;
	struct virtio_device v2;
	const struct virtio_device_ops *ops;
	struct virtio_net_params p = { .fd = -1, .queues = 1 };
	int sp[2];
	void *priv;
	struct error e;
	uint8_t f[300];
	uint64_t g;
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	g = t_rx_post(&t, 0, 200);
	virtio_queue_notify(&t.vdev, 0);
	frame_fill(f, sizeof(f), 7);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	virtio_net_poll(&t.vdev);               /* dropped: buffer now stashed */
	assert_false(t_used(&t, 0, &id, &len));
	state_writer_init(&w);
	virtio_device_save(&t.vdev, &w);
	assert_false(w.error);

	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp), 0);
	p.fd = sp[0];
	ops = virtio_net_new(&p, &priv, &e);
	assert_non_null(ops);
	assert_int_equal(virtio_device_init(&v2, ops, priv, &t.mem, "virtio-net0"), 0);
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(virtio_device_restore(&v2, 1, &r), 0);
	assert_int_equal(virtio_net_stats(&v2, 0, false)->dropped, 1);
	assert_int_equal(send(sp[1], f, 100, 0), 100);
	assert_true(fd_readable(virtio_net_event_fd(&v2)));
	virtio_net_poll(&v2);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(id, 0);
	assert_int_equal(len, 112);
	assert_memory_equal(gp(&t, g + 12, 100), f, 100);
	/* a truncated state is refused */
	state_reader_init(&r, w.data, w.len - 3);
	assert_int_equal(virtio_device_restore(&v2, 1, &r), -1);
	virtio_device_destroy(&v2);
	close(sp[1]);
	state_writer_free(&w);
	t_fini(&t);
}

/* Reset drops stashed buffers and stops polling; the device comes back. */
static void test_reset(void **state)
{
	struct t t;
	uint8_t f[100];
	uint16_t id;
	uint32_t len;

	t_init_fd(&t);
	t_live(&t, MODERN, false);
	frame_fill(f, sizeof(f), 8);
	assert_int_equal(send(t.sock[1], f, sizeof(f), 0), sizeof(f));
	virtio_set_status(&t.vdev, 0);
	assert_false(fd_readable(virtio_net_event_fd(&t.vdev)));
	memset(t.q, 0, sizeof(t.q));
	for (int q = 0; q < 3; q++)
		memset(gp(&t, desc_gpa(q), 0x9000), 0, 0x9000);
	t_live(&t, MODERN, false);
	t_rx_post(&t, 0, 512);
	virtio_queue_notify(&t.vdev, 0);
	virtio_net_poll(&t.vdev);
	assert_true(t_used(&t, 0, &id, &len));
	assert_int_equal(len, 112);
	t_fini(&t);
}

/* ---- a real TAP in a private network namespace ---- */

static int if_up_with_addr(const char *name, const char *ip)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	int s = socket(AF_INET, SOCK_DGRAM, 0), rc = -1;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &sin->sin_addr);
	if (s >= 0 && ioctl(s, SIOCSIFADDR, &ifr) == 0) {
		inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr);
		if (ioctl(s, SIOCSIFNETMASK, &ifr) == 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
			ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
			rc = ioctl(s, SIOCSIFFLAGS, &ifr);
		}
	}
	if (s >= 0)
		close(s);
	return rc;
}

static void arp_request(uint8_t *f, const uint8_t mac[6])
{
	static const uint8_t ip[4] = { 10, 0, 2, 15 }, gw[4] = { 10, 0, 2, 2 };

	memset(f, 0, 42);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x08; f[13] = 0x06;
	f[15] = 1; f[16] = 0x08; f[18] = 6; f[19] = 4; f[21] = 1;
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, ip, 4);
	memcpy(f + 38, gw, 4);
}

/* Two queue pairs on a multi-queue TAP, offloads negotiated, MQ switched on
 * through the control queue; an ARP request to the kernel gets its reply
 * through the vnet-header path. */
static void test_real_tap(void **state)
{
	struct t t;
	struct error e;
	struct virtio_net_params p = { .tap = "shoaltest0", .fd = -1, .queues = 2 };
	const struct virtio_device_ops *ops;
	void *priv = NULL;
	uint8_t f[64], mac[6];
	uint64_t rxg[2][4];
	uint64_t want = MODERN | VIRTIO_BIT(VIRTIO_NET_F_MQ) | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) |
			VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) |
			VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4);
	uint16_t id;
	uint32_t len;
	bool got = false;

	if (unshare(CLONE_NEWNET) < 0) {
		print_message("skip: cannot make a network namespace (%s)\n", strerror(errno));
		skip();
	}
	memset(&t, 0, sizeof(t));
	t.bump = BUF_BASE;
	t.sock[1] = -1;
	assert_int_equal(guest_mem_create_anon(&t.mem, MEM_SIZE, &e), 0);
	ops = virtio_net_new(&p, &priv, &e);
	if (!ops) {
		guest_mem_destroy(&t.mem);
		print_message("skip: %s\n", e.msg);
		skip();
	}
	assert_int_equal(virtio_device_init(&t.vdev, ops, priv, &t.mem, "virtio-net0"), 0);
	assert_int_equal(t.vdev.num_queues, 5);
	assert_true(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_MQ));
	assert_true(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_CSUM));
	assert_true(t.vdev.host_features & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4));
	assert_int_equal(if_up_with_addr("shoaltest0", "10.0.2.2"), 0);
	t_live(&t, want, false);
	{       /* two pairs */
		uint8_t cmd[4] = { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0 };
		struct ring_buf b[2] = { { galloc(&t, 4), 4, false }, { galloc(&t, 1), 1, true } };

		memcpy(gp(&t, b[0].gpa, 4), cmd, 4);
		t_add(&t, 4, b, 2);
		virtio_queue_notify(&t.vdev, 4);
		assert_true(t_used(&t, 4, &id, &len));
		assert_int_equal(*(uint8_t *)gp(&t, b[1].gpa, 1), VIRTIO_NET_OK);
	}
	for (int pr = 0; pr < 2; pr++) {
		for (int k = 0; k < 4; k++)
			rxg[pr][k] = t_rx_post(&t, pr, 2048);
		virtio_queue_notify(&t.vdev, (uint16_t)(2 * pr));
	}
	for (int i = 0; i < 6; i++)
		virtio_config_read(&t.vdev, (uint32_t)i, &mac[i], 1);
	arp_request(f, mac);
	{
		struct virtio_net_hdr h = { 0 };

		t_tx(&t, 1, &h, f, 42);
		assert_true(t_used(&t, 3, &id, &len));
		assert_int_equal(virtio_net_stats(&t.vdev, 1, true)->frames, 1);
	}
	for (int tries = 0; tries < 200 && !got; tries++) {
		struct pollfd pf = { .fd = virtio_net_event_fd(&t.vdev), .events = POLLIN };

		poll(&pf, 1, 10);
		virtio_net_poll(&t.vdev);
		for (int pr = 0; pr < 2 && !got; pr++) {
			while (t_used(&t, 2 * pr, &id, &len)) {
				const uint8_t *fr = gp(&t, rxg[pr][id % 4] + 12, 42);

				if (len >= 12 + 42 && fr[12] == 0x08 && fr[13] == 0x06 && fr[21] == 2 &&
				    !memcmp(fr, mac, 6))
					got = true;
			}
		}
	}
	assert_true(got);
	t_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_and_features),
		cmocka_unit_test(test_tx_modern),
		cmocka_unit_test(test_tx_hostile),
		cmocka_unit_test(test_rx_modern),
		cmocka_unit_test(test_rx_empty_ring_stops_polling),
		cmocka_unit_test(test_rx_too_big),
		cmocka_unit_test(test_rx_mergeable),
		cmocka_unit_test(test_packed_ring),
		cmocka_unit_test(test_legacy_header),
		cmocka_unit_test(test_ctrl_queue),
		cmocka_unit_test(test_ctrl_parse),
		cmocka_unit_test(test_tx_hdr_check),
		cmocka_unit_test(test_save_restore),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_real_tap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
