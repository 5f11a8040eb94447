/*
 * vhost_user.h - serve a virtio device model to another VMM (QEMU, Cloud
 * Hypervisor) as a vhost-user back end.
 *
 * The device models (blk, net, rng, ...) are written once against struct
 * virtio_device_ops (devices/virtio.h).  Inside `shoal run` the virtio-pci
 * transport drives them; here the vhost-user protocol does: the front end
 * owns the guest and its PCI device, shares the guest's memory and the
 * rings with us through file descriptors, and kicks/calls through eventfds.
 * The protocol, and how each message maps onto the virtio core, is drawn at
 * the top of vhost_user.c; docs/vhost-user.md is the user's page.
 *
 * Life cycle:
 *
 *   s = vu_server_new(&e)            a device host: event loop, shared memory
 *   model built with vu_server_host(s) and vu_server_lock(s)
 *   vu_server_set_model(s, &model)   the one virtio device this server serves
 *   vu_server_listen(s, path)        or vu_server_add_conn(s, fd)
 *   vu_server_start(s)               the event loop thread serves from now on
 *   ...                              (connections come and go)
 *   vu_server_stop(s); vu_server_free(s)
 *
 * Threads: everything the protocol does runs on the event loop thread with
 * the server lock held; a model's own threads (virtio-blk's I/O thread)
 * call into the virtio core with the same lock held, so the device sees one
 * caller at a time, as under the PCI transport.
 *
 * The front end is untrusted: every length, index, address, fd count and
 * memory region is checked; a message that breaks a rule is refused
 * (REPLY_ACK answers 1, one log line) and the fds it carried are closed; a
 * message that breaks the framing (bad version, payload over
 * VU_MAX_PAYLOAD, short read) ends the connection.
 */
#ifndef SHOAL_DEVICES_VHOST_USER_H
#define SHOAL_DEVICES_VHOST_USER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio.h"
#include "base/error.h"

struct device_host;
struct vu_server;

/* ---- the wire format (QEMU docs/interop/vhost-user.rst), host byte order ---- */

enum vu_request {
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_LOG_BASE = 6,
	VHOST_USER_SET_LOG_FD = 7,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_RESET_DEVICE = 34,
	VHOST_USER_GET_MAX_MEM_SLOTS = 36,
	VHOST_USER_ADD_MEM_REG = 37,
	VHOST_USER_REM_MEM_REG = 38,
	VHOST_USER_MAX_REQUEST = 41,      /* table size; ids above are refused */
};

/* Header flags. */
#define VHOST_USER_VERSION          1
#define VHOST_USER_VERSION_MASK     3
#define VHOST_USER_REPLY            (1u << 2)
#define VHOST_USER_NEED_REPLY       (1u << 3)

/* Feature bit 30 (reserved in virtio) says the back end speaks protocol
 * features; VHOST_F_LOG_ALL (26) would be dirty logging, not offered. */
#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VHOST_F_LOG_ALL                26

/* Protocol feature bits. */
#define VHOST_USER_PROTOCOL_F_MQ                   0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK            3
#define VHOST_USER_PROTOCOL_F_CONFIG               9
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE         13
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS  15

/* The protocol features this back end offers. */
#define VU_PROTOCOL_FEATURES \
	(VIRTIO_BIT(VHOST_USER_PROTOCOL_F_MQ) | VIRTIO_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
	 VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIG) | VIRTIO_BIT(VHOST_USER_PROTOCOL_F_RESET_DEVICE) | \
	 VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

#define VU_MAX_FDS            8        /* fds one message may carry */
#define VU_MAX_MEM_REGIONS    8        /* memory table entries (= GUEST_MEM_MAX_REGIONS) */
#define VU_MAX_CONFIG         256      /* bytes per GET/SET_CONFIG */
#define VU_MAX_PAYLOAD        4096     /* larger payloads end the connection */
#define VU_VRING_INDEX_MASK   0xff     /* SET_VRING_KICK/CALL/ERR u64: bits 0-7 index */
#define VU_VRING_NOFD_MASK    (1u << 8) /* ... bit 8: no fd (polling) */

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;                    /* payload bytes that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct vu_hdr) == 12, "vhost-user header is 12 bytes");

struct vu_vring_state {
	uint32_t index;
	uint32_t num;
} __attribute__((packed));
_Static_assert(sizeof(struct vu_vring_state) == 8, "vring state is 8 bytes");

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;                   /* bit 0: log used ring writes (unsupported) */
	uint64_t desc;                    /* front-end virtual addresses */
	uint64_t used;
	uint64_t avail;
	uint64_t log;
} __attribute__((packed));
_Static_assert(sizeof(struct vu_vring_addr) == 40, "vring address is 40 bytes");

struct vu_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uva;                     /* front-end virtual address of gpa */
	uint64_t mmap_offset;             /* where gpa lies in the fd */
} __attribute__((packed));
_Static_assert(sizeof(struct vu_mem_region) == 32, "memory region is 32 bytes");

struct vu_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct vu_mem_region regions[VU_MAX_MEM_REGIONS];
} __attribute__((packed));

struct vu_mem_single {                    /* ADD_MEM_REG / REM_MEM_REG */
	uint64_t padding;
	struct vu_mem_region region;
} __attribute__((packed));
_Static_assert(sizeof(struct vu_mem_single) == 40, "single region is 40 bytes");

struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;                   /* 0: driver write, 1: migration */
	uint8_t data[VU_MAX_CONFIG];
} __attribute__((packed));

/* One message as read off the socket: header and payload. */
struct vu_msg {
	struct vu_hdr hdr;
	union {
		uint64_t u64;
		struct vu_vring_state state;
		struct vu_vring_addr addr;
		struct vu_mem_table mem;
		struct vu_mem_single single;
		struct vu_config config;
		uint8_t bytes[VU_MAX_PAYLOAD];
	} p;
};

/* ---- the server ---- */

/* The device a server serves: a model's ops and state, and optionally
 *   drain:    wait for the requests it holds (called with the server lock
 *             held, before a ring stops or the memory map changes);
 *   event_fd: an fd that is readable when the model has host-side work
 *             (net: frames on the TAP), watched on the event loop, and
 *   poll:     doing that work, called with the lock held. */
struct vu_model {
	const struct virtio_device_ops *ops;
	void *priv;
	const char *name;                 /* instance name for log lines */
	void (*drain)(void *priv);
	int (*event_fd)(struct virtio_device *dev);
	void (*poll)(struct virtio_device *dev);
};

struct vu_stats {
	uint64_t connects, disconnects;
	uint64_t messages;                /* handled */
	uint64_t refused;                 /* messages refused (log line each) */
	uint64_t kicks, calls;
};

/* A server with its own device host (an event loop, the guest memory the
 * front end shares, no interrupts, buses or VM) and no device yet.  NULL
 * with `e`. */
struct vu_server *vu_server_new(struct error *e);

/* The device host the models are built on (host->loop, host->mem). */
const struct device_host *vu_server_host(struct vu_server *s);

/* The lock every call into the virtio device is made under. */
pthread_mutex_t *vu_server_lock(struct vu_server *s);

/* Serve `m` (the server keeps a copy; ops->destroy runs at free).
 * 0 or -1 with `e`. */
int vu_server_set_model(struct vu_server *s, const struct vu_model *m, struct error *e);

/* Listen on a Unix socket at `path` (a stale socket file is replaced).
 * 0 or -1 with `e`. */
int vu_server_listen(struct vu_server *s, const char *path, struct error *e);

/* Serve an already connected socket (tests, or a socket handed in).  With
 * the loop running, call it only from the loop thread or before start.
 * 0, or -1 (a connection is already up). */
int vu_server_add_conn(struct vu_server *s, int fd);

/* Drop the front end now, as if it had disconnected: rings halted, device
 * reset, memory unmapped.  Takes no lock (the caller holds it, or the loop
 * is not running). */
void vu_server_disconnect(struct vu_server *s);

/* Start / stop the event loop thread.  Stop also drops the connection. */
int vu_server_start(struct vu_server *s);
void vu_server_stop(struct vu_server *s);

/* Stop, drop the connection, destroy the device, unmap, close, free. */
void vu_server_free(struct vu_server *s);

/* The served virtio device, for tests (take the lock to read it). */
struct virtio_device *vu_server_vdev(struct vu_server *s);

/* Counters so far (take the lock). */
const struct vu_stats *vu_server_stats(struct vu_server *s);

/* True while a front end is connected (take the lock). */
bool vu_server_connected(struct vu_server *s);

/* Handle one message already read: the fds it carried are taken (kept or
 * closed).  Replies go to the connection, if any.  Returns 0, -1 when
 * refused, or -EPROTO when the connection must end.  Takes no lock: the
 * fuzz target calls it on a server whose loop is not running. */
int vu_server_handle(struct vu_server *s, struct vu_msg *m, int *fds, int nfds);

/* ---- device models built without a transport ----
 *
 * Each fills `ops` and `priv` for a model on `host` (its event loop);
 * `lock` is the lock the transport calls the device under, which the
 * model's own timers and threads take too.  On failure nothing is left
 * allocated.  (These belong in devices/device.h next to the *_create
 * constructors.)
 */
/* virtio-rng capped at `rate` bytes a second (0: the default). */
int virtio_rng_model(const struct device_host *host, uint32_t rate, pthread_mutex_t *lock,
		     const struct virtio_device_ops **ops, void **priv, struct error *e);

#endif
