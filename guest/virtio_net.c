/*
 * virtio_net.c - `vnet`: a virtio-net self-test against a network that
 * answers, with no host privileges: QEMU's user-mode network (slirp),
 * whose gateway 10.0.2.2 answers ARP and ICMP echo.
 *
 * vnet [ip=A.B.C.D] [gw=A.B.C.D] [dev=N]   (default 10.0.2.15, 10.0.2.2)
 *
 *   1. Reads the MAC from the configuration (VIRTIO_NET_F_MAC) and, with
 *      VIRTIO_NET_F_STATUS, checks that the link is up.
 *   2. Fills the receive queue (0) with device-writable buffers.
 *   3. Sends an ARP request for the gateway on the transmit queue (1),
 *      as two descriptors (virtio-net header, frame), and waits for the
 *      ARP reply naming the gateway's MAC.
 *   4. Sends an ICMP echo request with a 1000-byte patterned payload to
 *      the gateway and waits for the reply carrying the same payload.
 *   Frames that are not the expected answer are counted and recycled.
 *   Report: "vnet ok mode=M mac=.. gw_mac=.. arp=1 ping=1 rx=N tx=N
 *   other=N ring=split|packed".
 *
 * The virtio-net header (flags, gso_type, hdr_len, gso_size, csum_start,
 * csum_offset, and num_buffers in 1.x) is 12 bytes in modern mode and 10
 * in legacy mode (MRG_RXBUF is not negotiated).  No offloads are
 * negotiated, so every header the driver sends is zero.
 */
#include "netutil.h"
#include "virtio_cmd.h"
#include "arch.h"
#include "lib.h"
#include "report.h"
#include "tsc.h"

#define VIRTIO_NET_F_MAC    5
#define VIRTIO_NET_F_STATUS 16
#define VNET_RX_BUFS        16
#define VNET_BUF            2048
#define VNET_PING_LEN       1000
#define VNET_TIMEOUT_US     2000000

struct vnet {
	struct virtio_dev *v;
	struct virtq rx, tx;
	uint8_t *rxbuf;		/* VNET_RX_BUFS x VNET_BUF */
	uint8_t *txbuf;		/* header + frame */
	uint32_t hdr_len;
	uint8_t mac[6], gw_mac[6];
	uint8_t ip[4], gw[4];
	unsigned rx_frames, tx_frames, other;
};

static bool rx_post(struct vnet *n, unsigned i)
{
	struct virtq_buf b = { (uint64_t)(n->rxbuf + (size_t)i * VNET_BUF), VNET_BUF, true };

	return virtq_add(&n->rx, &b, 1, false) >= 0;
}

static bool vnet_send(struct vnet *n, uint32_t len)
{
	struct virtq_buf b[2] = {
		{ (uint64_t)n->txbuf, n->hdr_len, false },
		{ (uint64_t)n->txbuf + n->hdr_len, len, false },
	};
	uint16_t head;
	uint32_t l;

	memset(n->txbuf, 0, n->hdr_len);
	if (virtq_add(&n->tx, b, 2, false) < 0)
		return false;
	virtq_kick(&n->tx);
	n->tx_frames++;
	return virtq_wait(&n->tx, &head, &l, VNET_TIMEOUT_US);
}

/*
 * Wait for a frame that `match` accepts; recycle every buffer.  The
 * frame handed to match starts after the virtio-net header.
 */
static bool vnet_recv(struct vnet *n, bool (*match)(struct vnet *, const uint8_t *, uint32_t))
{
	uint64_t t0 = rdtsc();
	uint16_t head;
	uint32_t len;

	while (tsc_us_since(t0) < VNET_TIMEOUT_US) {
		unsigned i;
		bool hit;

		if (!virtq_wait(&n->rx, &head, &len, 1000))
			continue;
		n->rx_frames++;
		i = (unsigned)(head % VNET_RX_BUFS);
		hit = len > n->hdr_len &&
		      match(n, n->rxbuf + (size_t)i * VNET_BUF + n->hdr_len, len - n->hdr_len);
		n->other += !hit;
		rx_post(n, i);
		virtq_kick(&n->rx);
		if (hit)
			return true;
	}
	return false;
}

static void eth_hdr(struct vnet *n, uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, n->mac, 6);
	net_put16(f + 12, type);
}

static bool arp_reply_match(struct vnet *n, const uint8_t *f, uint32_t len)
{
	if (len < 42 || net_get16(f + 12) != 0x0806 || net_get16(f + 20) != 2 ||
	    memcmp(f + 28, n->gw, 4) || memcmp(f + 32, n->mac, 6))
		return false;
	memcpy(n->gw_mac, f + 22, 6);
	return true;
}

static bool vnet_arp(struct vnet *n)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t *f = n->txbuf + n->hdr_len;

	memset(f, 0, 60);
	eth_hdr(n, f, bcast, 0x0806);
	net_put16(f + 14, 1);		/* Ethernet */
	net_put16(f + 16, 0x0800);		/* IPv4 */
	f[18] = 6;
	f[19] = 4;
	net_put16(f + 20, 1);		/* request */
	memcpy(f + 22, n->mac, 6);
	memcpy(f + 28, n->ip, 4);
	memcpy(f + 38, n->gw, 4);
	return vnet_send(n, 60) && vnet_recv(n, arp_reply_match);
}

static bool echo_reply_match(struct vnet *n, const uint8_t *f, uint32_t len)
{
	const uint8_t *ip = f + 14, *icmp = ip + 20;
	unsigned i;

	if (len < 14 + 20 + 8 + VNET_PING_LEN || net_get16(f + 12) != 0x0800 || ip[9] != 1 ||
	    memcmp(ip + 12, n->gw, 4) || icmp[0] != 0 || net_get16(icmp + 4) != 0x5348)
		return false;
	for (i = 0; i < VNET_PING_LEN; i++)
		if (icmp[8 + i] != (uint8_t)(i * 7 + 3))
			return false;
	return true;
}

static bool vnet_ping(struct vnet *n)
{
	uint8_t *f = n->txbuf + n->hdr_len, *ip = f + 14, *icmp = ip + 20;
	uint16_t tot = 20 + 8 + VNET_PING_LEN;
	unsigned i;

	eth_hdr(n, f, n->gw_mac, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	net_put16(ip + 2, tot);
	ip[8] = 64;
	ip[9] = 1;			/* ICMP */
	memcpy(ip + 12, n->ip, 4);
	memcpy(ip + 16, n->gw, 4);
	net_put16(ip + 10, net_inet_sum(ip, 20));
	memset(icmp, 0, 8);
	icmp[0] = 8;			/* echo request */
	net_put16(icmp + 4, 0x5348);	/* id "SH" */
	net_put16(icmp + 6, 1);
	for (i = 0; i < VNET_PING_LEN; i++)
		icmp[8 + i] = (uint8_t)(i * 7 + 3);
	net_put16(icmp + 2, net_inet_sum(icmp, 8 + VNET_PING_LEN));
	return vnet_send(n, 14u + tot) && vnet_recv(n, echo_reply_match);
}

static bool vnet_args(struct vnet *n, int argc, char **argv)
{
	static const uint8_t ip[4] = { 10, 0, 2, 15 }, gw[4] = { 10, 0, 2, 2 };
	int i;

	memcpy(n->ip, ip, 4);
	memcpy(n->gw, gw, 4);
	for (i = 1; i < argc; i++) {
		if (str_starts(argv[i], "ip=") && net_parse_ip(argv[i] + 3, n->ip))
			continue;
		if (str_starts(argv[i], "gw=") && net_parse_ip(argv[i] + 3, n->gw))
			continue;
		report("error vnet: usage: [ip=A.B.C.D] [gw=A.B.C.D] [dev=N]");
		return false;
	}
	return true;
}

static bool vnet_setup(struct vnet *n)
{
	unsigned i;

	if (!(n->v->features & VIRTIO_BIT(VIRTIO_NET_F_MAC))) {
		report("error vnet: device offers no MAC");
		return false;
	}
	for (i = 0; i < 6; i++)
		n->mac[i] = virtio_cfg8(n->v, i);
	if ((n->v->features & VIRTIO_BIT(VIRTIO_NET_F_STATUS)) && !(virtio_cfg16(n->v, 6) & 1)) {
		report("error vnet: link is down");
		return false;
	}
	n->hdr_len = n->v->modern ? 12 : 10;
	n->rxbuf = vpool_alloc((size_t)VNET_RX_BUFS * VNET_BUF, 4096);
	n->txbuf = vpool_alloc(VNET_BUF, 64);
	if (!n->rxbuf || !n->txbuf || !virtio_open_queue("vnet", &n->rx, n->v, 0, 64) ||
	    !virtio_open_queue("vnet", &n->tx, n->v, 1, 64))
		return false;
	for (i = 0; i < VNET_RX_BUFS && i < n->rx.size; i++)
		rx_post(n, i);
	virtio_driver_ok(n->v);
	virtq_kick(&n->rx);
	return true;
}

static void mac_str(char *buf, const uint8_t *m)
{
	fmt(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

bool vnet_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	static struct vnet n;
	char mac[18], gwmac[18];
	bool arp = false, ping = false;

	memset(&n, 0, sizeof(n));
	if (!vnet_args(&n, argc, argv))
		return false;
	n.v = virtio_open("vnet", VIRTIO_ID_NET, idx,
			  VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) |
			  VIRTIO_BIT(VIRTIO_F_EVENT_IDX));
	if (!n.v)
		return false;
	if (vnet_setup(&n))
		arp = vnet_arp(&n);
	if (arp)
		ping = vnet_ping(&n);
	(void)virtio_isr(n.v);
	virtio_reset(n.v);
	mac_str(mac, n.mac);
	mac_str(gwmac, n.gw_mac);
	if (!arp || !ping) {
		report("error vnet: no %s reply from the gateway (mac=%s rx=%u tx=%u other=%u)",
		       arp ? "ICMP echo" : "ARP", mac, n.rx_frames, n.tx_frames, n.other);
		return false;
	}
	report("vnet ok mode=%s mac=%s gw_mac=%s arp=1 ping=1 rx=%u tx=%u other=%u ring=%s",
	       virtio_mode_name(n.v), mac, gwmac, n.rx_frames, n.tx_frames, n.other,
	       virtq_ring_name(&n.rx));
	return true;
}
