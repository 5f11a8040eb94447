/*
 * virtio_net.h - the virtio-net device model's interface beyond the
 * constructor virtio_net_create: what unit tests and the fuzz target use to
 * drive one device through the virtio core without a VM or a PCI bus.
 *
 * Wire formats (virtio 1.2 section 5.1.6), little-endian:
 *
 *   struct virtio_net_hdr (10 bytes; 12 with num_buffers, when VERSION_1
 *   or MRG_RXBUF is negotiated):
 *     u8 flags | u8 gso_type | u16 hdr_len | u16 gso_size |
 *     u16 csum_start | u16 csum_offset | [u16 num_buffers]
 *
 *   control queue request: u8 class | u8 command | data... (driver ->
 *   device), then u8 ack (device -> driver): 0 OK, 1 ERR.
 */
#ifndef SHOAL_DEVICES_VIRTIO_NET_H
#define SHOAL_DEVICES_VIRTIO_NET_H

#include <stddef.h>
#include <stdint.h>

#include "devices/virtio.h"
#include "base/error.h"

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM            0
#define VIRTIO_NET_F_GUEST_CSUM      1
#define VIRTIO_NET_F_MAC             5
#define VIRTIO_NET_F_GUEST_TSO4      7
#define VIRTIO_NET_F_GUEST_TSO6      8
#define VIRTIO_NET_F_GUEST_ECN       9
#define VIRTIO_NET_F_GUEST_UFO       10
#define VIRTIO_NET_F_HOST_TSO4       11
#define VIRTIO_NET_F_HOST_TSO6       12
#define VIRTIO_NET_F_HOST_ECN        13
#define VIRTIO_NET_F_HOST_UFO        14
#define VIRTIO_NET_F_MRG_RXBUF       15
#define VIRTIO_NET_F_STATUS          16
#define VIRTIO_NET_F_CTRL_VQ         17
#define VIRTIO_NET_F_MQ              22

#define VIRTIO_NET_S_LINK_UP         1

/* Header flags and GSO types (5.1.6). */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM  1
#define VIRTIO_NET_HDR_F_DATA_VALID  2
#define VIRTIO_NET_HDR_GSO_NONE      0
#define VIRTIO_NET_HDR_GSO_TCPV4     1
#define VIRTIO_NET_HDR_GSO_UDP       3
#define VIRTIO_NET_HDR_GSO_TCPV6     4
#define VIRTIO_NET_HDR_GSO_ECN       0x80

/* Control queue (5.1.6.5). */
#define VIRTIO_NET_OK                0
#define VIRTIO_NET_ERR               1
#define VIRTIO_NET_CTRL_MQ           4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

#define VIRTIO_NET_HDR_LEN_LEGACY    10
#define VIRTIO_NET_HDR_LEN           12
#define VIRTIO_NET_MAX_PAIRS         16
/* Largest frame after the header: 64 KiB of GSO payload plus Ethernet and
 * VLAN headers.  A TX frame longer than this is dropped. */
#define VIRTIO_NET_MAX_FRAME         (65536 + 14 + 4)

struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_net_hdr) == 12, "virtio_net_hdr with num_buffers is 12 bytes");

/* Counters of one direction of one queue pair. */
struct virtio_net_qstats {
	uint64_t frames;                /* delivered (rx) or sent (tx) */
	uint64_t bytes;                 /* frame bytes, headers excluded */
	uint64_t dropped;               /* too big, no room, host busy */
	uint64_t errors;                /* malformed by the guest or host errors */
};

struct virtio_net_params {
	const char *tap;                /* TAP name, or NULL with fd */
	int fd;                         /* open frame fd (TAP or datagram socket), -1 none */
	const uint8_t *mac;             /* 6 bytes, or NULL: generated */
	int queues;                     /* queue pairs, 1..VIRTIO_NET_MAX_PAIRS */
	int index;                      /* instance number: name and MAC seed */
	bool keep_mac;                  /* a restore keeps `mac`, not the saved one
	                                   (a clone's new identity) */
};

/* Make the device model's state for `p` (opens the TAP, or probes and takes
 * ownership of p->fd).  Returns the ops table to pass to virtio_device_init
 * with *priv, or NULL with `e`.  The state is released by ops->destroy. */
const struct virtio_device_ops *virtio_net_new(const struct virtio_net_params *p, void **priv,
					       struct error *e);

/* The device's epoll fd: readable when host-side work is waiting (frames on
 * the TAP, TX work left over from a budgeted kick). */
int virtio_net_event_fd(struct virtio_device *vdev);

/* Do that work now; the caller holds the device's serialisation (in the VMM
 * the event loop callback does this under the struct device lock). */
void virtio_net_poll(struct virtio_device *vdev);

/* Counters of queue pair `pair`; NULL when out of range. */
const struct virtio_net_qstats *virtio_net_stats(struct virtio_device *vdev, int pair, bool tx);

/* ---- the parsers of guest bytes, for the fuzz target ---- */

/* Check a TX header the guest wrote before `frame_len` frame bytes, under
 * the negotiated `features`.  0: send it; -1: drop it. */
int virtio_net_tx_hdr_check(const struct virtio_net_hdr *h, size_t frame_len, uint64_t features);

/* Execute a control request `req` (class, command, data; `len` bytes)
 * against a device with `max_pairs` queue pairs and `features`; on
 * VQ_PAIRS_SET sets *pairs.  Returns the ack byte. */
uint8_t virtio_net_ctrl_parse(const uint8_t *req, size_t len, uint64_t features,
			      uint16_t max_pairs, uint16_t *pairs);

#endif
