/*
 * virtio_pci.h - the virtio PCI transport, legacy (0.9.5, I/O BAR0) and
 * modern (1.x, vendor capabilities), on the same transitional device.
 */
#ifndef GUEST_VIRTIO_PCI_H
#define GUEST_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>
#include "pci.h"

#define VIRTIO_PCI_VENDOR   0x1af4

/* Device types (virtio 1.x section 5). */
#define VIRTIO_ID_NET       1
#define VIRTIO_ID_BLK       2
#define VIRTIO_ID_CONSOLE   3
#define VIRTIO_ID_RNG       4

/* Device status bits. */
#define VIRTIO_S_ACK        1
#define VIRTIO_S_DRIVER     2
#define VIRTIO_S_DRIVER_OK  4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_NEEDS_RESET 64
#define VIRTIO_S_FAILED     128

/* Transport-level feature bits. */
#define VIRTIO_F_ANY_LAYOUT     27
#define VIRTIO_F_INDIRECT_DESC  28
#define VIRTIO_F_EVENT_IDX      29
#define VIRTIO_F_VERSION_1      32
#define VIRTIO_F_RING_PACKED    34
#define VIRTIO_BIT(b)           (1ull << (b))

#define VIRTIO_QUEUES_MAX 8

enum virtio_mode { VIRTIO_MODE_AUTO, VIRTIO_MODE_LEGACY, VIRTIO_MODE_MODERN };
extern enum virtio_mode virtio_mode_wanted;

/* A register window in a BAR: I/O ports or identity-mapped MMIO. */
struct vio_region {
	uint64_t addr;		/* port or physical address; 0 = absent */
	uint32_t len;
	bool io;
};

struct virtio_dev {
	struct pci_dev *pci;
	uint16_t type;		/* VIRTIO_ID_* */
	bool modern;		/* which interface this driver uses now */
	bool has_legacy, has_modern;	/* what the device offers */
	struct vio_region legacy;	/* BAR0 I/O (legacy header + config) */
	struct vio_region common, notify, isr, devcfg;	/* modern caps */
	uint32_t notify_mult;
	uint16_t qnotify[VIRTIO_QUEUES_MAX];	/* modern queue_notify_off */
	uint64_t features;	/* negotiated */
};

/* Find the index-th (0-based) virtio device of this type; NULL if none. */
struct virtio_dev *virtio_find(uint16_t type, unsigned index);
/* Every virtio device found, for listing; returns the count. */
unsigned virtio_all(struct virtio_dev **out, unsigned max);
const char *virtio_type_name(uint16_t type);
/* Scan PCI again (see pci_rescan); devices found before are forgotten. */
void virtio_rescan(bool ports);

/*
 * Reset, acknowledge, and negotiate: offer `wanted` (device bits the
 * driver understands; transport bits INDIRECT_DESC/EVENT_IDX are added
 * when `rings` says so, VERSION_1 always in modern mode), accept the
 * intersection, check FEATURES_OK (modern).  Uses virtio_mode_wanted.
 * False (reported) when the device refuses or lacks the mode.
 */
bool virtio_start(struct virtio_dev *v, uint64_t wanted, const char **why);
void virtio_driver_ok(struct virtio_dev *v);
void virtio_reset(struct virtio_dev *v);
uint8_t virtio_status(struct virtio_dev *v);
uint64_t virtio_device_features(struct virtio_dev *v);
uint8_t virtio_isr(struct virtio_dev *v);	/* read = acknowledge */

/*
 * Queue set-up.  Returns the queue size the device allows (legacy: fixed
 * by the device; modern: the device's maximum, which the driver may lower
 * with virtio_queue_set_size), 0 if the queue does not exist.
 */
uint16_t virtio_queue_max(struct virtio_dev *v, uint16_t q);
/* Give the device the rings (legacy: desc must be page-aligned and the
 * legacy layout is assumed) and enable the queue. */
bool virtio_queue_enable(struct virtio_dev *v, uint16_t q, uint16_t size, uint64_t desc,
			 uint64_t avail, uint64_t used);
void virtio_queue_notify(struct virtio_dev *v, uint16_t q);

/* Device-specific configuration space. */
uint8_t virtio_cfg8(struct virtio_dev *v, unsigned off);
uint16_t virtio_cfg16(struct virtio_dev *v, unsigned off);
uint32_t virtio_cfg32(struct virtio_dev *v, unsigned off);
uint64_t virtio_cfg64(struct virtio_dev *v, unsigned off);

#endif
