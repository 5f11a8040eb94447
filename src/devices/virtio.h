/*
 * virtio.h - a transport-independent virtio device (virtio 1.2 section 2,
 * with the legacy 0.9.5 interface for old drivers: the "bimodal" device).
 *
 * A device model (blk, net, console, rng, vsock) is written once against
 * `struct virtio_device_ops`.  A transport drives it: the in-VMM virtio-pci
 * transport (src/devices/virtio_pci.c) turns register accesses into the
 * calls below, and a vhost-user back end turns protocol messages into the
 * same calls.  The core owns what the spec says about every device: the
 * status state machine, feature negotiation, the queues, the config
 * generation, the broken state and the common part of save/restore.
 *
 *   transport                 core (virtio.c)             device model
 *   ---------                 ---------------             ------------
 *   status write   ─────────> virtio_set_status ───────> ops->activate / reset
 *   features r/w   ─────────> virtio_features_read/write
 *   queue regs     ─────────> dev->queues[i].{size,*_gpa}, virtio_queue_set_ready
 *   notify (kick)  ─────────> virtio_queue_notify ─────> ops->queue_notify
 *   config r/w     ─────────> virtio_config_read/write ─> ops->config_read/write
 *   irq / irqfd    <───────── dev->notify_queue <─────── virtio_queue_complete
 *   config irq     <───────── dev->notify_config <────── virtio_notify_config
 *
 * Status state machine (bits only ever added by the driver; 0 resets):
 *
 *   0 ─> ACKNOWLEDGE ─> DRIVER ─> [features written] ─> FEATURES_OK ─> DRIVER_OK
 *                                      (legacy drivers skip FEATURES_OK)
 *   FEATURES_OK is refused (left clear) when the driver acked a feature that
 *   was not offered, or a modern driver did not ack VERSION_1.  DRIVER_OK
 *   starts the ready queues and calls ops->activate.  The device sets
 *   DEVICE_NEEDS_RESET when it breaks; the driver may set FAILED any time.
 *
 * Threads: every call into one device is serialised by the caller (the bus
 * holds the struct device lock around register handlers; the event loop
 * takes the same lock; a vhost-user back end has one thread per device or
 * its own lock).  notify_queue/notify_config are called with that
 * serialisation held and must not call back into the core.
 *
 * The guest is hostile: a config access out of range reads zeros and drops
 * writes; a queue index out of range is ignored; a queue that breaks marks
 * the device broken (DEVICE_NEEDS_RESET, one log line) and the device stops
 * serving until the driver resets it.
 */
#ifndef SHOAL_DEVICES_VIRTIO_H
#define SHOAL_DEVICES_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtqueue.h"
#include "base/guest_mem.h"
#include "base/state.h"

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE        1
#define VIRTIO_STATUS_DRIVER             2
#define VIRTIO_STATUS_DRIVER_OK          4
#define VIRTIO_STATUS_FEATURES_OK        8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED             128

/* Reserved feature bits (6) and ring features (2.7, 2.8). */
#define VIRTIO_F_NOTIFY_ON_EMPTY     24
#define VIRTIO_F_ANY_LAYOUT          27
#define VIRTIO_RING_F_INDIRECT_DESC  28
#define VIRTIO_RING_F_EVENT_IDX      29
#define VIRTIO_F_INDIRECT_DESC       VIRTIO_RING_F_INDIRECT_DESC
#define VIRTIO_F_EVENT_IDX           VIRTIO_RING_F_EVENT_IDX
#define VIRTIO_F_VERSION_1           32
#define VIRTIO_F_ACCESS_PLATFORM     33   /* never offered: no IOMMU */
#define VIRTIO_F_RING_PACKED         34
#define VIRTIO_F_IN_ORDER            35
#define VIRTIO_F_ORDER_PLATFORM      36
#define VIRTIO_F_SR_IOV              37
#define VIRTIO_F_NOTIFICATION_DATA   38
#define VIRTIO_F_NOTIF_CONFIG_DATA   39
#define VIRTIO_F_RING_RESET          40

#define VIRTIO_BIT(n)                (1ull << (n))

/* Ring features the core implements and offers on behalf of every device
 * (a transport or device may clear some in dev->host_features after init). */
#define VIRTIO_CORE_FEATURES \
	(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | \
	 VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_RING_PACKED))

/* Device IDs (5). */
#define VIRTIO_ID_NET      1
#define VIRTIO_ID_BLOCK    2
#define VIRTIO_ID_CONSOLE  3
#define VIRTIO_ID_RNG      4
#define VIRTIO_ID_BALLOON  5
#define VIRTIO_ID_VSOCK    19

#define VIRTIO_STATE_VERSION 1          /* common state written by virtio_device_save */
#define VIRTIO_MAX_QUEUES    256        /* a device may have no more */

struct virtio_device;
struct json_t;

struct virtio_device_ops {
	uint16_t device_id;               /* VIRTIO_ID_* */
	const char *name;                 /* "virtio-blk" */
	uint16_t num_queues;              /* queues the device has (max) */
	uint16_t queue_max_size;          /* largest queue size offered */
	uint32_t config_size;             /* bytes of device config space */
	uint16_t state_version;           /* version written by ops->save */
	/* Device-specific feature bits offered (the core adds its own). */
	uint64_t (*features)(struct virtio_device *dev);
	/* Config space access; the core has checked offset + len <= config_size
	 * and len in 1..8.  Either may be NULL (reads zero, writes dropped). */
	void (*config_read)(struct virtio_device *dev, uint32_t offset, void *data, uint32_t len);
	void (*config_write)(struct virtio_device *dev, uint32_t offset, const void *data, uint32_t len);
	/* The driver kicked queue `qidx` (started, device live): pop and work. */
	void (*queue_notify)(struct virtio_device *dev, uint16_t qidx);
	/* DRIVER_OK was set and the ready queues started: go live.  0 or -1
	 * (the core then marks the device broken).  May be NULL. */
	int (*activate)(struct virtio_device *dev);
	/* The driver reset the device: drop in-flight work and device state.
	 * The core has already reset status, features and queues.  May be NULL. */
	void (*reset)(struct virtio_device *dev);
	/* Device-specific state after the common state; may be NULL. */
	void (*save)(struct virtio_device *dev, struct state_writer *w);
	int (*restore)(struct virtio_device *dev, uint16_t version, struct state_reader *r);
	/* Add the model's counters to a metrics reply (device.h's metrics op):
	 * the device named `name` appends to `root`'s arrays.  Called under the
	 * transport's lock.  May be NULL. */
	void (*metrics)(struct virtio_device *dev, const char *name, struct json_t *root);
	/* device.h's quiesce op, for a model with a thread of its own.  May
	 * be NULL. */
	void (*quiesce)(struct virtio_device *dev, bool on);
	/* Free `priv`; may be NULL. */
	void (*destroy)(struct virtio_device *dev);
};

struct virtio_stats {
	uint64_t requests;                /* elements completed */
	uint64_t bytes_out;               /* driver -> device bytes in those elements */
	uint64_t bytes_in;                /* device -> driver bytes written */
	uint64_t kicks;                   /* queue notifications from the driver */
	uint64_t interrupts;              /* used-buffer notifications sent */
	uint64_t config_interrupts;       /* config-change notifications sent */
};

struct virtio_device {
	const struct virtio_device_ops *ops;
	void *priv;                       /* the device model's state */
	char name[32];                    /* instance name for log lines */
	const struct guest_mem *mem;

	uint64_t host_features;           /* offered */
	uint64_t guest_features;          /* acked by the driver */
	bool legacy;                      /* driver uses the legacy interface (transport sets) */
	uint8_t status;                   /* VIRTIO_STATUS_* */
	uint8_t config_generation;        /* bumped on every config change */
	uint32_t max_req_bytes;           /* per-element cap for every queue */

	uint16_t num_queues;
	struct virtqueue *queues;         /* num_queues of them */

	bool broken;                      /* needs reset; serving nothing */
	char broken_reason[128];
	struct virtio_stats stats;

	/* Filled in by the transport. */
	void *transport;                  /* the transport's own state */
	void (*notify_queue)(struct virtio_device *dev, uint16_t qidx);
	void (*notify_config)(struct virtio_device *dev);
};

/* Set up `dev` for `ops` with `priv` on `mem`: queues allocated and reset,
 * offered features = ops->features() | VIRTIO_CORE_FEATURES minus
 * ACCESS_PLATFORM.  0 or -ENOMEM / -EINVAL. */
int virtio_device_init(struct virtio_device *dev, const struct virtio_device_ops *ops,
		       void *priv, const struct guest_mem *mem, const char *name);

/* Call ops->destroy and free the queues. */
void virtio_device_destroy(struct virtio_device *dev);

/* A 32-bit window of the offered features: select 0 = bits 0-31, 1 = 32-63,
 * anything else 0.  Legacy drivers only see select 0. */
uint32_t virtio_features_read(const struct virtio_device *dev, uint32_t select);

/* The driver writes a 32-bit window of its acked features.  Ignored unless
 * status has DRIVER and not FEATURES_OK.  A legacy write (select 0 with
 * dev->legacy) also clears the high half. */
void virtio_features_write(struct virtio_device *dev, uint32_t select, uint32_t value);

/* Set all acked features at once (vhost-user SET_FEATURES, tests).  Returns
 * 0, or -EINVAL when a bit was not offered (the bits are still recorded, so
 * FEATURES_OK will be refused). */
int virtio_set_features(struct virtio_device *dev, uint64_t features);

/* True when feature bit `bit` was negotiated. */
static inline bool virtio_has_feature(const struct virtio_device *dev, unsigned int bit)
{
	return bit < 64 && (dev->guest_features >> bit) & 1;
}

/* The driver wrote the status register.  0 resets the device; otherwise the
 * state machine above applies.  Returns the status now in effect (the
 * transport reads it back for FEATURES_OK). */
uint8_t virtio_set_status(struct virtio_device *dev, uint8_t status);

/* Reset: status 0, features 0, every queue reset, not broken, ops->reset. */
void virtio_reset(struct virtio_device *dev);

/* The driver enabled (or, with RING_RESET, disabled) queue `qidx`.  The ring
 * format follows the negotiated features; if DRIVER_OK is already set the
 * queue starts now, else at DRIVER_OK.  0, or -1 (bad index or the queue's
 * configuration is refused; the device is then broken). */
int virtio_queue_set_ready(struct virtio_device *dev, uint16_t qidx, bool ready);

/* The driver kicked queue `qidx`: count it and call ops->queue_notify when
 * the device is live and the queue started; otherwise ignore it. */
void virtio_queue_notify(struct virtio_device *dev, uint16_t qidx);

/* Pop from `vq`; on a violation the device is marked broken.  1, 0 or -EIO. */
int virtio_queue_pop(struct virtio_device *dev, struct virtqueue *vq, struct virtq_elem *elem);

/* Return `elem` with `len` bytes written and notify the driver if it wants
 * it (virtq_push + virtq_should_notify + dev->notify_queue). */
void virtio_queue_complete(struct virtio_device *dev, struct virtqueue *vq,
			   const struct virtq_elem *elem, uint32_t len);

/* Batched form: fill several with virtq_fill (counted by this), then call
 * virtio_queue_flush once to publish and notify. */
void virtio_queue_fill(struct virtio_device *dev, struct virtqueue *vq,
		       const struct virtq_elem *elem, uint32_t len);
void virtio_queue_flush(struct virtio_device *dev, struct virtqueue *vq);

/* Config space access from the transport, bounds-checked: out of range (or
 * len not 1..8) reads zeros and drops writes, returning -1. */
int virtio_config_read(struct virtio_device *dev, uint32_t offset, void *data, uint32_t len);
int virtio_config_write(struct virtio_device *dev, uint32_t offset, const void *data, uint32_t len);

/* The device changed its config space: bump the generation and, if the
 * driver is live, send a config-change notification. */
void virtio_notify_config(struct virtio_device *dev);

/* Mark the device broken: DEVICE_NEEDS_RESET, one log line (first reason
 * only), a config notification if the driver is live. */
void virtio_mark_broken(struct virtio_device *dev, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Save the common state (features, status, generation, every queue), then
 * ops->save framed with its own version.  The transport calls this from its
 * struct device save and adds its own registers. */
void virtio_device_save(struct virtio_device *dev, struct state_writer *w);

/* Restore what virtio_device_save wrote into a device set up by
 * virtio_device_init with the same ops.  The common state carries its own
 * version (so `version`, the caller's section version, is not used by the
 * core today).  Ready queues of a live device are started again against
 * dev->mem, which must already hold the guest's memory.  0 or -1. */
int virtio_device_restore(struct virtio_device *dev, uint16_t version, struct state_reader *r);

#endif
