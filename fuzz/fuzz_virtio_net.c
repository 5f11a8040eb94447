/*
 * fuzz_virtio_net.c - a hostile virtio-net driver.
 *
 * The input is, in order:
 *   u8  feature choice: bit 0 VERSION_1 (else a legacy driver), bit 1
 *       MRG_RXBUF, bit 2 CSUM, bit 3 MQ-less control queue kick first
 *   per queue (rx 0, tx 1, ctrl 2): 8 descriptors (128 bytes, addresses and
 *       lengths as the guest wrote them), u16 avail idx, 8 x u16 ring
 *   then: the bytes of guest memory at BUF_GPA (up to 32 KiB); the first
 *       half of them is also sent as a frame from the "network"
 * The device runs on a socketpair: TX chains go through the header parser
 * and out, the frame comes in through the RX path (stash, merge), the
 * control chains through the control parser.  Then the pure parsers get the
 * raw input.  Crashes and sanitizer reports are findings; the device may
 * end up broken, but must never touch memory outside guest RAM.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/virtio_net.h"
#include "base/log.h"
#include "../tests/ring_driver.h"

#define MEM_SIZE (16u << 20)      /* the smallest guest RAM; made once */
#define MEM_USED (1u << 20)       /* what an input can reach through valid rings */
#define QSIZE    8
#define BUF_GPA  0x10000u
#define BUF_MAX  (32u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_device(const uint8_t *data, size_t size)
{
	static struct guest_mem m;
	static bool have_mem;
	struct virtio_device v;
	struct virtio_net_params prm = { .fd = -1, .queues = 1 };
	const struct virtio_device_ops *ops;
	const uint8_t *p = data + 1;
	size_t left = size - 1, blen;
	struct error e;
	void *priv;
	int sp[2];
	uint64_t f = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ);

	if (!have_mem && guest_mem_create_anon(&m, MEM_SIZE, &e))
		abort();
	have_mem = true;
	memset(m.host, 0, MEM_USED);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp))
		abort();
	prm.fd = sp[0];
	ops = virtio_net_new(&prm, &priv, &e);
	if (!ops || virtio_device_init(&v, ops, priv, &m, "virtio-net0"))
		abort();
	f |= data[0] & 1 ? VIRTIO_BIT(VIRTIO_F_VERSION_1) : 0;
	f |= data[0] & 2 ? VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) : 0;
	f |= data[0] & 4 ? VIRTIO_BIT(VIRTIO_NET_F_CSUM) : 0;
	v.legacy = !(data[0] & 1);
	virtio_set_status(&v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	virtio_set_features(&v, f & v.host_features);
	virtio_set_status(&v, VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < 3; q++)
		ring_fuzz_queue(&v, &m, q, QSIZE, 0x1000 + 0x1000ull * q, &p, &left);
	blen = left < BUF_MAX ? left : BUF_MAX;
	guest_mem_write(&m, BUF_GPA, p, blen);
	virtio_set_status(&v, VIRTIO_STATUS_DRIVER_OK);
	if (data[0] & 8)
		virtio_queue_notify(&v, 2);
	virtio_queue_notify(&v, 1);
	if (blen / 2)
		send(sp[1], p, blen / 2, MSG_DONTWAIT);
	virtio_queue_notify(&v, 0);
	virtio_net_poll(&v);
	virtio_queue_notify(&v, 2);
	virtio_device_destroy(&v);
	close(sp[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct virtio_net_hdr h;
	uint16_t pairs = 1;

	log_threshold = LOG_ERROR;
	if (size < 1)
		return 0;
	fuzz_device(data, size);
	if (size >= 12) {
		memcpy(&h, data, sizeof(h));
		virtio_net_tx_hdr_check(&h, size - 12, ~0ull);
		virtio_net_tx_hdr_check(&h, size - 12, (uint64_t)data[0] << 8 | data[1]);
	}
	virtio_net_ctrl_parse(data, size, VIRTIO_BIT(VIRTIO_NET_F_MQ), 4, &pairs);
	return 0;
}
