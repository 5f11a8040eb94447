/*
 * virtio_net_bench.c - `vnet-bench`: UDP transmit throughput of a
 * virtio-net device, for side-by-side comparisons (Shoal against QEMU on
 * the same guest and the same TAP; never as a pass/fail threshold).
 *
 * vnet-bench MS [size=BYTES] [dst=A.B.C.D] [port=N] [ip=A.B.C.D] [dev=N]
 *     (defaults: size 1472, so 1500-byte IP packets; dst 10.0.2.2;
 *      port 5201; ip, the guest's own address, 10.0.2.15)
 *
 *   1. Opens the device as `vnet` does (MAC from the configuration, link
 *      status, 12-byte header in modern mode, 10 in legacy, no offloads)
 *      with 16 receive buffers, only so that the ARP reply can arrive.
 *   2. Resolves dst's MAC with one ARP request (three tries, 2 s each).
 *   3. Builds one frame: virtio-net header (zero), Ethernet, IPv4 (DF, TTL
 *      64, header checksum computed), UDP (checksum 0, "none"), and SIZE
 *      bytes of pattern.  Every datagram is this frame: the device only
 *      reads transmit buffers, so all descriptors may point at the same
 *      bytes, and no copy or rebuild sits in the sending loop.
 *   4. Fills the transmit queue (1) with one-descriptor chains (virtio 1.x
 *      and Shoal take any layout; QEMU does too), kicks, and for MS
 *      milliseconds polls the used ring: every completed chain is queued
 *      again at once, one kick per batch of refills (EVENT_IDX, when
 *      negotiated, lets the device skip most of them).  No interrupts.
 *   5. After MS, queues nothing more and waits for the chains in flight.
 *
 * Report: "vnet-bench ok mode=M frames=N bytes=B ms=T mib_s=R size=S
 * frames_s=F kicks=K ring=R", where frames are the chains the device
 * returned as used, bytes = frames x SIZE (UDP payload), and T runs from
 * the first kick to the last completion.  A used chain means the device
 * took the frame, not that anyone received it: the host side counts what
 * arrived (bench/virtio_net.sh), and that is the figure.
 *
 * The device set-up and ARP are a trimmed copy of virtio_net.c's (which
 * keeps its helpers static); the transport, rings and pool are shared.
 */
#include "netutil.h"
#include "virtio_cmd.h"
#include "arch.h"
#include "lib.h"
#include "report.h"
#include "tsc.h"

#define VIRTIO_NET_F_MAC    5
#define VIRTIO_NET_F_STATUS 16
#define NB_RX_BUFS          16
#define NB_BUF              2048
#define NB_TX_QUEUE         256
#define NB_SIZE_MAX         1472	/* UDP payload in a 1500-byte IP packet */
#define NB_ARP_TRIES        3
#define NB_TIMEOUT_US       2000000

struct nbench {
	struct virtio_dev *v;
	struct virtq rx, tx;
	uint8_t *rxbuf;		/* NB_RX_BUFS x NB_BUF */
	uint8_t *frame;		/* header + Ethernet frame */
	uint32_t hdr_len, flen;	/* flen: header + frame */
	uint8_t mac[6], dst_mac[6];
	uint8_t ip[4], dst[4];
	uint64_t ms, size, port;
	uint64_t frames, us;
};

/* MS and the key=value options; reports usage on anything else. */
static bool nb_args(struct nbench *n, int argc, char **argv)
{
	static const uint8_t ip[4] = { 10, 0, 2, 15 }, dst[4] = { 10, 0, 2, 2 };
	bool ok = argc >= 2 && parse_u64(argv[1], &n->ms) && n->ms;
	int i;

	memcpy(n->ip, ip, 4);
	memcpy(n->dst, dst, 4);
	n->size = NB_SIZE_MAX;
	n->port = 5201;
	for (i = 2; ok && i < argc; i++) {
		if (str_starts(argv[i], "size="))
			ok = parse_u64(argv[i] + 5, &n->size) && n->size <= NB_SIZE_MAX;
		else if (str_starts(argv[i], "port="))
			ok = parse_u64(argv[i] + 5, &n->port) && n->port && n->port < 65536;
		else if (str_starts(argv[i], "dst="))
			ok = net_parse_ip(argv[i] + 4, n->dst);
		else if (str_starts(argv[i], "ip="))
			ok = net_parse_ip(argv[i] + 3, n->ip);
		else
			ok = false;
	}
	if (!ok)
		report("error vnet-bench: usage: MS [size=0..%u] [dst=A.B.C.D] [port=N] "
		       "[ip=A.B.C.D] [dev=N]", NB_SIZE_MAX);
	return ok;
}

static bool rx_post(struct nbench *n, unsigned i)
{
	struct virtq_buf b = { (uint64_t)(n->rxbuf + (size_t)i * NB_BUF), NB_BUF, true };

	return virtq_add(&n->rx, &b, 1, false) >= 0;
}

/* MAC, link, queues, receive buffers, DRIVER_OK; as vnet_setup does. */
static bool nb_setup(struct nbench *n)
{
	unsigned i;

	if (!(n->v->features & VIRTIO_BIT(VIRTIO_NET_F_MAC))) {
		report("error vnet-bench: device offers no MAC");
		return false;
	}
	for (i = 0; i < 6; i++)
		n->mac[i] = virtio_cfg8(n->v, i);
	if ((n->v->features & VIRTIO_BIT(VIRTIO_NET_F_STATUS)) && !(virtio_cfg16(n->v, 6) & 1)) {
		report("error vnet-bench: link is down");
		return false;
	}
	n->hdr_len = n->v->modern ? 12 : 10;
	n->rxbuf = vpool_alloc((size_t)NB_RX_BUFS * NB_BUF, 4096);
	n->frame = vpool_alloc(NB_BUF, 64);
	if (!n->rxbuf || !n->frame || !virtio_open_queue("vnet-bench", &n->rx, n->v, 0, 64) ||
	    !virtio_open_queue("vnet-bench", &n->tx, n->v, 1, NB_TX_QUEUE))
		return false;
	for (i = 0; i < NB_RX_BUFS && i < n->rx.size; i++)
		rx_post(n, i);
	virtio_driver_ok(n->v);
	virtq_kick(&n->rx);
	return true;
}

/* Send n->frame (flen bytes) once and wait for the device to take it. */
static bool nb_send_one(struct nbench *n)
{
	struct virtq_buf b = { (uint64_t)n->frame, n->flen, false };
	uint16_t head;
	uint32_t len;

	if (virtq_add(&n->tx, &b, 1, false) < 0)
		return false;
	virtq_kick(&n->tx);
	return virtq_wait(&n->tx, &head, &len, NB_TIMEOUT_US);
}

/* Whether frame f (after the virtio-net header) is dst's ARP reply to us. */
static bool arp_reply(struct nbench *n, const uint8_t *f, uint32_t len)
{
	if (len < 42 || net_get16(f + 12) != 0x0806 || net_get16(f + 20) != 2 ||
	    memcmp(f + 28, n->dst, 4) || memcmp(f + 32, n->mac, 6))
		return false;
	memcpy(n->dst_mac, f + 22, 6);
	return true;
}

/* Poll the receive queue up to NB_TIMEOUT_US for the ARP reply. */
static bool nb_arp_wait(struct nbench *n)
{
	uint64_t t0 = rdtsc();
	uint16_t head;
	uint32_t len;

	while (tsc_us_since(t0) < NB_TIMEOUT_US) {
		unsigned i;
		bool hit;

		if (!virtq_wait(&n->rx, &head, &len, 1000))
			continue;
		i = (unsigned)(head % NB_RX_BUFS);
		hit = len > n->hdr_len &&
		      arp_reply(n, n->rxbuf + (size_t)i * NB_BUF + n->hdr_len, len - n->hdr_len);
		rx_post(n, i);
		virtq_kick(&n->rx);
		if (hit)
			return true;
	}
	return false;
}

/* ARP request for dst, up to NB_ARP_TRIES times. */
static bool nb_arp(struct nbench *n)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t *f = n->frame + n->hdr_len;
	unsigned t;

	memset(n->frame, 0, n->hdr_len + 60);
	memcpy(f, bcast, 6);
	memcpy(f + 6, n->mac, 6);
	net_put16(f + 12, 0x0806);
	net_put16(f + 14, 1);		/* Ethernet */
	net_put16(f + 16, 0x0800);		/* IPv4 */
	f[18] = 6;
	f[19] = 4;
	net_put16(f + 20, 1);		/* request */
	memcpy(f + 22, n->mac, 6);
	memcpy(f + 28, n->ip, 4);
	memcpy(f + 38, n->dst, 4);
	n->flen = n->hdr_len + 60;
	for (t = 0; t < NB_ARP_TRIES; t++)
		if (nb_send_one(n) && nb_arp_wait(n))
			return true;
	return false;
}

/* The one UDP datagram every descriptor carries. */
static void nb_build_udp(struct nbench *n)
{
	uint8_t *f = n->frame + n->hdr_len, *ip = f + 14, *udp = ip + 20;
	uint16_t ulen = (uint16_t)(8 + n->size);
	uint64_t i;

	memset(n->frame, 0, n->hdr_len);
	memcpy(f, n->dst_mac, 6);
	memcpy(f + 6, n->mac, 6);
	net_put16(f + 12, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	net_put16(ip + 2, (uint16_t)(20 + ulen));
	net_put16(ip + 6, 0x4000);		/* DF: the id may repeat */
	ip[8] = 64;
	ip[9] = 17;			/* UDP */
	memcpy(ip + 12, n->ip, 4);
	memcpy(ip + 16, n->dst, 4);
	net_put16(ip + 10, net_inet_sum(ip, 20));
	net_put16(udp, 5201);		/* source port */
	net_put16(udp + 2, (uint16_t)n->port);
	net_put16(udp + 4, ulen);
	net_put16(udp + 6, 0);		/* no checksum (RFC 768) */
	for (i = 0; i < n->size; i++)
		udp[8 + i] = (uint8_t)(i * 7 + 3);
	n->flen = n->hdr_len + 14 + 20 + ulen;
}

/* Queue the frame while there is room; returns how many went on. */
static unsigned nb_fill(struct nbench *n)
{
	struct virtq_buf b = { (uint64_t)n->frame, n->flen, false };
	unsigned added = 0;

	while (virtq_add(&n->tx, &b, 1, false) >= 0)
		added++;
	return added;
}

/* The sending loop: keep the ring full for n->ms, then drain it. */
static bool nb_blast(struct nbench *n)
{
	uint64_t t0 = rdtsc(), last = t0, deadline = n->ms * 1000;
	unsigned inflight = nb_fill(n);
	uint16_t head;
	uint32_t len;

	virtq_kick(&n->tx);
	while (inflight) {
		unsigned done = 0;

		while (virtq_get(&n->tx, &head, &len))
			done++;
		if (done) {
			last = rdtsc();
			n->frames += done;
			inflight -= done;
		} else if (tsc_us_since(last) > NB_TIMEOUT_US) {
			return false;
		}
		if (done && tsc_us_since(t0) < deadline) {
			inflight += nb_fill(n);
			virtq_kick(&n->tx);
		}
		cpu_relax();
	}
	n->us = (last - t0) * 1000 / tsc_khz;
	return true;
}

static void nb_report(struct nbench *n)
{
	uint64_t bytes = n->frames * n->size, us = n->us ? n->us : 1;

	report("vnet-bench ok mode=%s frames=%lu bytes=%lu ms=%lu mib_s=%lu size=%lu "
	       "frames_s=%lu kicks=%u ring=%s",
	       virtio_mode_name(n->v), n->frames, bytes, n->us / 1000,
	       bytes * 1000000 / us / (1u << 20), n->size, n->frames * 1000000 / us,
	       n->tx.kicks, virtq_ring_name(&n->tx));
}

bool vnet_bench_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	static struct nbench n;
	bool arp = false, sent = false;

	memset(&n, 0, sizeof(n));
	if (!nb_args(&n, argc, argv))
		return false;
	n.v = virtio_open("vnet-bench", VIRTIO_ID_NET, idx,
			  VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) |
			  VIRTIO_BIT(VIRTIO_F_EVENT_IDX));
	if (!n.v)
		return false;
	if (nb_setup(&n) && (arp = nb_arp(&n))) {
		nb_build_udp(&n);
		sent = nb_blast(&n);
	}
	(void)virtio_isr(n.v);
	virtio_reset(n.v);
	if (!sent) {
		report("error vnet-bench: %s (frames=%lu)",
		       arp ? "transmit queue stalled" : "no ARP reply from dst", n.frames);
		return false;
	}
	nb_report(&n);
	return true;
}
