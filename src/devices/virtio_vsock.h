/*
 * virtio_vsock.h - the virtio-vsock device model's interface beyond the
 * constructor virtio_vsock_create: what unit tests and fuzzing use to drive
 * one device through the virtio core without a VM.
 *
 * Packet header (virtio 1.2 section 5.10.6), 44 bytes, little-endian,
 * followed by `len` payload bytes:
 *
 *   u64 src_cid | u64 dst_cid | u32 src_port | u32 dst_port | u32 len |
 *   u16 type | u16 op | u32 flags | u32 buf_alloc | u32 fwd_cnt
 */
#ifndef SHOAL_DEVICES_VIRTIO_VSOCK_H
#define SHOAL_DEVICES_VIRTIO_VSOCK_H

#include <stddef.h>
#include <stdint.h>

#include "devices/virtio.h"
#include "base/error.h"

#define VSOCK_HOST_CID        2
#define VSOCK_TYPE_STREAM     1

enum vsock_op {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

#define VSOCK_SHUTDOWN_RCV    1
#define VSOCK_SHUTDOWN_SEND   2
#define VSOCK_EVENT_TRANSPORT_RESET 0

#define VSOCK_BUF_ALLOC       (256u << 10)  /* host buffer per connection we advertise */
#define VSOCK_MAX_PAYLOAD     (64u << 10)   /* a guest packet carrying more is refused */
#define VSOCK_MAX_CONNS       256

struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio-vsock header is 44 bytes");

/* Make the device's state for guest CID `cid` with its host side at the
 * Unix socket `path` (bound and listening now).  Returns the ops table for
 * virtio_device_init with *priv, or NULL with `e`. */
const struct virtio_device_ops *virtio_vsock_new(uint64_t cid, const char *path, void **priv,
						 struct error *e);

/* The device's epoll fd (listener, connections, wake-ups). */
int virtio_vsock_event_fd(struct virtio_device *vdev);

/* Handle whatever the host side has for us now; the caller holds the
 * device's serialisation. */
void virtio_vsock_poll(struct virtio_device *vdev);

/* Connections open now. */
int virtio_vsock_conn_count(struct virtio_device *vdev);

/* Check a header the guest sent with `payload` bytes after it, for a guest
 * of CID `cid`.  0: well formed (it may still name an unknown connection);
 * -1: drop it. */
int virtio_vsock_hdr_check(const struct vsock_hdr *h, size_t payload, uint64_t cid);

#endif
