/*
 * virtio_pci.c - the virtio PCI transport (see virtio_pci.h).
 *
 * Register map, modern interface (virtio 1.2 section 4.1.4), memory BAR 4:
 *
 *   0x0000 common configuration     features, status, queue set-up
 *   0x1000 ISR status               read-to-clear: bit 0 queue, bit 1 config
 *   0x2000 device configuration     the device model's config space
 *   0x3000 notifications            queue i at 0x3000 + 4 * i
 *
 * Legacy interface (virtio 0.9.5), I/O BAR 0:
 *
 *   0x00 host features   0x04 guest features   0x08 queue PFN
 *   0x0c queue size      0x0e queue select     0x10 queue notify
 *   0x12 status          0x13 ISR              [0x14 config vector
 *   0x16 queue vector, with MSI-X on]  then device configuration
 *
 * MSI-X table and PBA live in memory BAR 1 (handled by pci.c).  Queue
 * notifications are turned into KVM ioeventfds whenever a BAR is mapped, so
 * a kick costs the vCPU no exit to user space; the event loop thread reads
 * the eventfd and calls the device.  Without ioeventfd the register write
 * exits and is handled inline: same code, slower.
 *
 * Interrupts: with MSI-X enabled, a queue's or config's vector is raised
 * through its irqfd; otherwise the ISR bit is set and INTx asserted until
 * the driver reads the ISR.
 *
 * Threads: register handlers run on vCPU threads under the device lock
 * (taken by pci.c); ioeventfd handlers run on the event loop thread and
 * take the same lock.  The device model therefore sees one caller at a time.
 */
#include "devices/virtio_pci.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/device.h"
#include "base/assert.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/eventloop.h"
#include "devices/pci.h"
#include <jansson.h>
#include <linux/kvm.h>

#define VIRTIO_PCI_STATE_VERSION 2   /* 2: the MSI-X table after the config space */
#define VIRTIO_PCI_MAX_QUEUES    64       /* notify region and ioeventfds */
#define VIRTIO_PCI_VECTORS       (VIRTIO_PCI_MAX_QUEUES + 1)

/* Modern capability types (4.1.4) */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4, CAP_PCI_CFG = 5 };

struct virtio_pci;

struct vp_ioeventfd {
	struct virtio_pci *vp;
	int fd;                  /* -1: none */
	uint16_t qidx;
	uint64_t addr;           /* where it is registered */
	int len;                 /* 0 = any length (MMIO), 2 = legacy port with datamatch */
	bool pio;
};

struct virtio_pci {
	struct pci_dev pci;
	struct virtio_device vdev;
	struct device *dev;
	const struct device_host *host;
	enum virtio_pci_mode mode;
	uint32_t dfselect, gfselect;       /* feature window selects */
	uint16_t queue_select;
	uint16_t config_vector;
	uint8_t isr;
	uint8_t cfg_cap;                   /* config offset of the PCI cfg access cap */
	struct vp_ioeventfd modern_ev[VIRTIO_PCI_MAX_QUEUES];
	struct vp_ioeventfd legacy_ev[VIRTIO_PCI_MAX_QUEUES];
};

static struct virtqueue *vp_queue(struct virtio_pci *vp, uint16_t q)
{
	return q < vp->vdev.num_queues ? &vp->vdev.queues[q] : NULL;
}

/* ---- interrupts ---- */

static void vp_raise(struct virtio_pci *vp, uint16_t vector, uint8_t isr_bit)
{
	/* isr and the MSI-X pending bits are under the device lock: every
	 * caller (bus handler, ioeventfd, a model's thread or timer) holds it */
	SHOAL_ASSERT(shoal_mutex_held(&vp->dev->lock), "%s: interrupt raised without the device lock",
		     vp->dev->name);
	if (pci_msix_enabled(&vp->pci)) {
		if (vector != VIRTIO_PCI_NO_VECTOR)
			pci_msix_notify(&vp->pci, vector);
		return;
	}
	vp->isr |= isr_bit;
	pci_intx_set(&vp->pci, 1);
}

static void vp_notify_queue(struct virtio_device *vdev, uint16_t qidx)
{
	struct virtio_pci *vp = vdev->transport;
	struct virtqueue *vq = vp_queue(vp, qidx);

	if (vq)
		vp_raise(vp, vq->vector, 1);
}

static void vp_notify_config(struct virtio_device *vdev)
{
	struct virtio_pci *vp = vdev->transport;

	vp_raise(vp, vp->config_vector, 2);
}

static uint8_t vp_read_isr(struct virtio_pci *vp)
{
	uint8_t v = vp->isr;

	vp->isr = 0;
	pci_intx_set(&vp->pci, 0);
	return v;
}

/* ---- notifications (kicks) ---- */

static void vp_kick(struct virtio_pci *vp, uint16_t qidx)
{
	if (qidx < vp->vdev.num_queues)
		virtio_queue_notify(&vp->vdev, qidx);
}

static int vp_on_ioeventfd(int fd, uint32_t events, void *opaque)
{
	struct vp_ioeventfd *ev = opaque;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0)
		return 0;
	pthread_mutex_lock(&ev->vp->dev->lock);
	if (!ev->vp->dev->broken)
		vp_kick(ev->vp, ev->qidx);
	pthread_mutex_unlock(&ev->vp->dev->lock);
	return 0;
}

static void vp_ioeventfd_del(struct virtio_pci *vp, struct vp_ioeventfd *ev)
{
	struct kvm_ioeventfd k = {
		.addr = ev->addr, .len = (uint32_t)ev->len, .fd = ev->fd,
		.flags = KVM_IOEVENTFD_FLAG_DEASSIGN | (ev->pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
			 (ev->len == 2 ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0),
		.datamatch = ev->qidx,
	};

	if (ev->fd < 0)
		return;
	if (vp->host->ioeventfd)
		vp->host->ioeventfd(vp->host, &k);
	eventloop_del(vp->host->loop, ev->fd);
	close(ev->fd);
	ev->fd = -1;
}

/* Register an ioeventfd for queue `q` at `addr`: modern MMIO (any length)
 * or the legacy notify port (2 bytes, matching the queue index). */
static void vp_ioeventfd_add(struct virtio_pci *vp, struct vp_ioeventfd *ev, uint16_t q,
			     uint64_t addr, bool pio)
{
	struct kvm_ioeventfd k = { .addr = addr, .datamatch = q };

	ev->vp = vp;
	ev->qidx = q;
	ev->addr = addr;
	ev->pio = pio;
	ev->len = pio ? 2 : 0;
	if (!vp->host->ioeventfd || !vp->host->loop)
		return;
	ev->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	k.len = (uint32_t)ev->len;
	k.fd = ev->fd;
	k.flags = pio ? KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DATAMATCH : 0;
	if (ev->fd < 0 || vp->host->ioeventfd(vp->host, &k) < 0 ||
	    eventloop_add(vp->host->loop, ev->fd, EPOLLIN, vp_on_ioeventfd, ev) < 0) {
		log_debug("%s: no ioeventfd for queue %u (%s); kicks exit to the VMM",
			  vp->dev->name, q, strerror(errno));
		if (ev->fd >= 0)
			close(ev->fd);
		ev->fd = -1;
	}
}

static void vp_bar_moved(struct pci_dev *p, int bar, uint64_t addr, bool mapped)
{
	struct virtio_pci *vp = p->priv;
	uint16_t n = vp->vdev.num_queues;

	for (uint16_t q = 0; q < n && q < VIRTIO_PCI_MAX_QUEUES; q++) {
		if (bar == VIRTIO_PCI_BAR_MODERN) {
			vp_ioeventfd_del(vp, &vp->modern_ev[q]);
			if (mapped)
				vp_ioeventfd_add(vp, &vp->modern_ev[q], q,
						 addr + VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, false);
		} else if (bar == VIRTIO_PCI_BAR_LEGACY) {
			vp_ioeventfd_del(vp, &vp->legacy_ev[q]);
			if (mapped)
				vp_ioeventfd_add(vp, &vp->legacy_ev[q], q, addr + 0x10, true);
		}
	}
}

/* After a reset every vector is NO_VECTOR again (4.1.4.3). */
static void vp_reset_vectors(struct virtio_pci *vp)
{
	vp->isr = 0;
	pci_intx_set(&vp->pci, 0);
	vp->config_vector = VIRTIO_PCI_NO_VECTOR;
	for (uint16_t q = 0; q < vp->vdev.num_queues; q++)
		vp->vdev.queues[q].vector = VIRTIO_PCI_NO_VECTOR;
}

static void vp_set_status(struct virtio_pci *vp, uint8_t v)
{
	virtio_set_status(&vp->vdev, v);
	if (v == 0)
		vp_reset_vectors(vp);
}

/* ---- modern common configuration ---- */

static uint32_t vp_common_read(struct virtio_pci *vp, uint32_t off)
{
	struct virtio_device *d = &vp->vdev;
	struct virtqueue *vq = vp_queue(vp, vp->queue_select);

	switch (off) {
	case 0x00: return vp->dfselect;
	case 0x04: return virtio_features_read(d, vp->dfselect);
	case 0x08: return vp->gfselect;
	case 0x0c: return vp->gfselect < 2 ? (uint32_t)(d->guest_features >> (32 * vp->gfselect)) : 0;
	case 0x10: return vp->config_vector;
	case 0x12: return d->num_queues;
	case 0x14: return d->status;
	case 0x15: return d->config_generation;
	case 0x16: return vp->queue_select;
	case 0x18: return vq ? vq->size : 0;
	case 0x1a: return vq ? vq->vector : VIRTIO_PCI_NO_VECTOR;
	case 0x1c: return vq ? vq->ready : 0;
	case 0x1e: return vp->queue_select;   /* queue_notify_off = index */
	case 0x20: return vq ? (uint32_t)vq->desc_gpa : 0;
	case 0x24: return vq ? (uint32_t)(vq->desc_gpa >> 32) : 0;
	case 0x28: return vq ? (uint32_t)vq->avail_gpa : 0;
	case 0x2c: return vq ? (uint32_t)(vq->avail_gpa >> 32) : 0;
	case 0x30: return vq ? (uint32_t)vq->used_gpa : 0;
	case 0x34: return vq ? (uint32_t)(vq->used_gpa >> 32) : 0;
	default: return 0;
	}
}

static void vp_set_addr(uint64_t *dst, uint32_t off, uint32_t v)
{
	if (off & 4)
		*dst = (*dst & 0xffffffffu) | ((uint64_t)v << 32);
	else
		*dst = (*dst & ~0xffffffffull) | v;
}

static void vp_common_write_queue(struct virtio_pci *vp, uint32_t off, uint32_t v)
{
	struct virtqueue *vq = vp_queue(vp, vp->queue_select);

	if (!vq)
		return;
	if (off == 0x1c) {
		if (v == 1 && !vq->ready)
			virtio_queue_set_ready(&vp->vdev, vp->queue_select, true);
		return;
	}
	if (off == 0x1a) {
		vq->vector = (uint16_t)v;
		return;
	}
	if (vq->ready)
		return;   /* ring set-up is frozen once the queue is enabled */
	if (off == 0x18) {
		/* a split ring's size is a power of two (2.7); packed rings any */
		bool packed = virtio_has_feature(&vp->vdev, VIRTIO_F_RING_PACKED);

		if (v && v <= vp->vdev.ops->queue_max_size && (packed || !(v & (v - 1))))
			vq->size = (uint16_t)v;
	} else if (off >= 0x20 && off < 0x28) {
		vp_set_addr(&vq->desc_gpa, off, v);
	} else if (off >= 0x28 && off < 0x30) {
		vp_set_addr(&vq->avail_gpa, off, v);
	} else if (off >= 0x30 && off < 0x38) {
		vp_set_addr(&vq->used_gpa, off, v);
	}
}

static void vp_common_write(struct virtio_pci *vp, uint32_t off, uint32_t v, int size)
{
	struct virtio_device *d = &vp->vdev;

	d->legacy = false;
	switch (off) {
	case 0x00: vp->dfselect = v; break;
	case 0x08: vp->gfselect = v; break;
	case 0x0c: virtio_features_write(d, vp->gfselect, v); break;
	case 0x10: vp->config_vector = (uint16_t)v; break;
	case 0x14:
		vp_set_status(vp, (uint8_t)v);
		break;
	case 0x16: vp->queue_select = (uint16_t)v; break;
	default:
		vp_common_write_queue(vp, off, v);
		break;
	}
}

/* ---- BAR access ---- */

static uint32_t vp_get(const void *data, int size)
{
	uint32_t v = 0;

	memcpy(&v, data, size > 4 ? 4 : (size_t)size);
	return v;
}

static void vp_put(void *data, int size, uint32_t v)
{
	memset(data, 0, (size_t)size);
	memcpy(data, &v, size > 4 ? 4 : (size_t)size);
}

/* The common configuration as bytes, so any aligned or unaligned read of
 * any width is a copy. */
static void vp_common_snapshot(struct virtio_pci *vp, uint8_t buf[0x40])
{
	static const struct { uint8_t off, size; } f[] = {
		{ 0x00, 4 }, { 0x04, 4 }, { 0x08, 4 }, { 0x0c, 4 }, { 0x10, 2 }, { 0x12, 2 },
		{ 0x14, 1 }, { 0x15, 1 }, { 0x16, 2 }, { 0x18, 2 }, { 0x1a, 2 }, { 0x1c, 2 },
		{ 0x1e, 2 }, { 0x20, 4 }, { 0x24, 4 }, { 0x28, 4 }, { 0x2c, 4 }, { 0x30, 4 },
		{ 0x34, 4 },
	};

	memset(buf, 0, 0x40);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		uint32_t v = vp_common_read(vp, f[i].off);

		memcpy(buf + f[i].off, &v, f[i].size);
	}
}

static void vp_modern_read(struct virtio_pci *vp, uint64_t off, void *data, int size)
{
	uint8_t common[0x40];

	memset(data, 0, (size_t)size);
	if (off < VIRTIO_PCI_ISR_OFF) {
		if (off + (uint64_t)size <= sizeof(common)) {
			vp_common_snapshot(vp, common);
			memcpy(data, common + off, (size_t)size);
		}
	} else if (off < VIRTIO_PCI_DEVICE_OFF) {
		if (off == VIRTIO_PCI_ISR_OFF)
			*(uint8_t *)data = vp_read_isr(vp);
	} else if (off < VIRTIO_PCI_NOTIFY_OFF) {
		virtio_config_read(&vp->vdev, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, (uint32_t)size);
	}
}

static void vp_modern_write(struct virtio_pci *vp, uint64_t off, const void *data, int size)
{
	uint32_t v = vp_get(data, size);

	if (off < VIRTIO_PCI_ISR_OFF && size == 8) {   /* a 64-bit address: two halves */
		vp_common_write(vp, (uint32_t)off, v, 4);
		vp_common_write(vp, (uint32_t)off + 4, vp_get((const uint8_t *)data + 4, 4), 4);
	} else if (off < VIRTIO_PCI_ISR_OFF)
		vp_common_write(vp, (uint32_t)off, v, size);
	else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_NOTIFY_OFF)
		virtio_config_write(&vp->vdev, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, (uint32_t)size);
	else if (off >= VIRTIO_PCI_NOTIFY_OFF)
		vp_kick(vp, (uint16_t)((off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT));
}

/* Offset of the device config in the legacy BAR: 0x14, or 0x18 with MSI-X. */
static uint32_t vp_legacy_cfg_off(struct virtio_pci *vp)
{
	return pci_msix_enabled(&vp->pci) ? 0x18 : 0x14;
}

static void vp_legacy_read(struct virtio_pci *vp, uint64_t off, void *data, int size)
{
	struct virtqueue *vq = vp_queue(vp, vp->queue_select);
	uint32_t cfg = vp_legacy_cfg_off(vp);

	if (off >= cfg) {
		virtio_config_read(&vp->vdev, (uint32_t)(off - cfg), data, (uint32_t)size);
		return;
	}
	switch (off) {
	case 0x00: vp_put(data, size, virtio_features_read(&vp->vdev, 0)); break;
	case 0x04: vp_put(data, size, (uint32_t)vp->vdev.guest_features); break;
	case 0x08: vp_put(data, size, vq && vq->ready ? (uint32_t)(vq->desc_gpa >> 12) : 0); break;
	case 0x0c: vp_put(data, size, vq ? vq->size : 0); break;
	case 0x0e: vp_put(data, size, vp->queue_select); break;
	case 0x12: vp_put(data, size, vp->vdev.status); break;
	case 0x13: vp_put(data, size, vp_read_isr(vp)); break;
	case 0x14: vp_put(data, size, vp->config_vector); break;
	case 0x16: vp_put(data, size, vq ? vq->vector : VIRTIO_PCI_NO_VECTOR); break;
	default: vp_put(data, size, 0); break;
	}
}

static void vp_legacy_set_pfn(struct virtio_pci *vp, uint32_t pfn)
{
	struct virtqueue *vq = vp_queue(vp, vp->queue_select);

	if (!vq)
		return;
	if (!pfn) {
		virtio_queue_set_ready(&vp->vdev, vp->queue_select, false);
		return;
	}
	vq->size = vp->vdev.ops->queue_max_size;
	virtq_set_legacy_layout(vq, (uint64_t)pfn << 12, VIRTQ_LEGACY_ALIGN);
	virtio_queue_set_ready(&vp->vdev, vp->queue_select, true);
}

static void vp_legacy_write(struct virtio_pci *vp, uint64_t off, const void *data, int size)
{
	struct virtqueue *vq = vp_queue(vp, vp->queue_select);
	uint32_t cfg = vp_legacy_cfg_off(vp), v = vp_get(data, size);

	if (off >= cfg) {
		virtio_config_write(&vp->vdev, (uint32_t)(off - cfg), data, (uint32_t)size);
		return;
	}
	vp->vdev.legacy = true;
	switch (off) {
	case 0x04: virtio_features_write(&vp->vdev, 0, v); break;
	case 0x08: vp_legacy_set_pfn(vp, v); break;
	case 0x0e: vp->queue_select = (uint16_t)v; break;
	case 0x10: vp_kick(vp, (uint16_t)v); break;
	case 0x12: vp_set_status(vp, (uint8_t)v); break;
	case 0x14: vp->config_vector = (uint16_t)v; break;
	case 0x16: if (vq) vq->vector = (uint16_t)v; break;
	default: break;
	}
}

static void vp_bar_read(struct pci_dev *p, int bar, uint64_t off, void *data, int size)
{
	struct virtio_pci *vp = p->priv;

	if (bar == VIRTIO_PCI_BAR_MODERN)
		vp_modern_read(vp, off, data, size);
	else if (bar == VIRTIO_PCI_BAR_LEGACY)
		vp_legacy_read(vp, off, data, size);
}

static void vp_bar_write(struct pci_dev *p, int bar, uint64_t off, const void *data, int size)
{
	struct virtio_pci *vp = p->priv;

	if (bar == VIRTIO_PCI_BAR_MODERN)
		vp_modern_write(vp, off, data, size);
	else if (bar == VIRTIO_PCI_BAR_LEGACY)
		vp_legacy_write(vp, off, data, size);
}

/* VIRTIO_PCI_CAP_PCI_CFG: a window into the BARs through config space.
 * The driver sets bar/offset/length in the capability, then reads or
 * writes pci_cfg_data (cap + 16). */
static bool vp_cfg_window(struct virtio_pci *vp, uint32_t off, int size, int *bar,
			  uint32_t *boff, int *len)
{
	uint8_t c = vp->cfg_cap;

	if (!c || off != c + 16u)
		return false;
	*bar = vp->pci.cfg[c + 4];
	memcpy(boff, &vp->pci.cfg[c + 8], 4);
	memcpy(len, &vp->pci.cfg[c + 12], 4);
	return (*len == 1 || *len == 2 || *len == 4) && *len <= size + 3 && *bar < PCI_NUM_BARS;
}

static void vp_config_read(struct pci_dev *p, uint32_t off, void *data, int size)
{
	struct virtio_pci *vp = p->priv;
	uint32_t boff;
	int bar, len;

	if (vp_cfg_window(vp, off, size, &bar, &boff, &len))
		vp_bar_read(p, bar, boff, data, len < size ? len : size);
}

static void vp_config_write(struct pci_dev *p, uint32_t off, const void *data, int size)
{
	struct virtio_pci *vp = p->priv;
	uint32_t boff;
	int bar, len;

	if (vp_cfg_window(vp, off, size, &bar, &boff, &len))
		vp_bar_write(p, bar, boff, data, len < size ? len : size);
}

static const struct pci_dev_ops vp_pci_ops = {
	.bar_read = vp_bar_read,
	.bar_write = vp_bar_write,
	.config_read = vp_config_read,
	.config_write = vp_config_write,
	.bar_moved = vp_bar_moved,
};

/* ---- the struct device side: save/restore and teardown ---- */

/* Saved state, version 2: the selectors, config vector and ISR, the 256
 * bytes of configuration space (of which restore takes only what the guest
 * may write), the MSI-X table (pci_msix_save; version 1 lacked it, so a
 * restored guest that had enabled MSI-X got no interrupt), then the common
 * virtio state. */
static void vp_save(struct device *d, struct state_writer *w)
{
	struct virtio_pci *vp = d->priv;

	state_put_u32(w, vp->dfselect);
	state_put_u32(w, vp->gfselect);
	state_put_u16(w, vp->queue_select);
	state_put_u16(w, vp->config_vector);
	state_put_u8(w, vp->isr);
	state_put_bytes(w, vp->pci.cfg, 256);
	pci_msix_save(&vp->pci, w);
	virtio_device_save(&vp->vdev, w);
}

static int vp_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct virtio_pci *vp = d->priv;
	uint8_t cfg[256];

	vp->dfselect = state_get_u32(r);
	vp->gfselect = state_get_u32(r);
	vp->queue_select = state_get_u16(r);
	vp->config_vector = state_get_u16(r);
	vp->isr = state_get_u8(r);
	state_get_bytes(r, cfg, sizeof(cfg));
	if (r->error)
		return -1;
	/* identity and capabilities are ours; take only what the guest wrote */
	for (int i = 0; i < 256; i++)
		vp->pci.cfg[i] = (uint8_t)((vp->pci.cfg[i] & ~vp->pci.wmask[i]) | (cfg[i] & vp->pci.wmask[i]));
	/* Version 1 had no MSI-X table: its vectors stay masked, as before. */
	if (version >= 2 && pci_msix_restore(&vp->pci, r))
		return -1;
	return virtio_device_restore(&vp->vdev, VIRTIO_STATE_VERSION, r);
}

static void vp_destroy(struct device *d)
{
	struct virtio_pci *vp = d->priv;

	for (int q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++) {
		vp_ioeventfd_del(vp, &vp->modern_ev[q]);
		vp_ioeventfd_del(vp, &vp->legacy_ev[q]);
	}
	virtio_device_destroy(&vp->vdev);
	free(vp);
}

/* The transport's counters under "virtio" in the device's object, then the
 * model's own (a disk's, a network card's). */
static void vp_metrics(struct device *d, json_t *dev, json_t *root)
{
	struct virtio_pci *vp = d->priv;
	struct virtio_device *vd = &vp->vdev;

	json_object_set_new(dev, "virtio", json_pack("{s:I, s:I, s:I, s:I, s:I, s:b}",
		"requests", (json_int_t)vd->stats.requests,
		"bytes_out", (json_int_t)vd->stats.bytes_out,
		"bytes_in", (json_int_t)vd->stats.bytes_in,
		"kicks", (json_int_t)vd->stats.kicks,
		"interrupts", (json_int_t)vd->stats.interrupts,
		"broken", vd->broken));
	if (vd->ops->metrics)
		vd->ops->metrics(vd, d->name, root);
}

static void vp_quiesce(struct device *d, bool on)
{
	struct virtio_pci *vp = d->priv;

	if (vp->vdev.ops->quiesce)
		vp->vdev.ops->quiesce(&vp->vdev, on);
}

static const struct device_ops virtio_pci_dev_ops = {
	.type = "virtio-pci",
	.state_version = VIRTIO_PCI_STATE_VERSION,
	.save = vp_save,
	.restore = vp_restore,
	.metrics = vp_metrics,
	.quiesce = vp_quiesce,
	.destroy = vp_destroy,
};

struct virtio_device *virtio_pci_vdev(struct device *d)
{
	return d && d->ops == &virtio_pci_dev_ops ? &((struct virtio_pci *)d->priv)->vdev : NULL;
}

int virtio_pci_parse_mode(const char *s, enum virtio_pci_mode *mode)
{
	if (!strcmp(s, "transitional"))
		*mode = VIRTIO_PCI_TRANSITIONAL;
	else if (!strcmp(s, "legacy"))
		*mode = VIRTIO_PCI_LEGACY_ONLY;
	else if (!strcmp(s, "modern"))
		*mode = VIRTIO_PCI_MODERN_ONLY;
	else
		return -1;
	return 0;
}

/* ---- construction ---- */

static void vp_add_vcap(struct virtio_pci *vp, uint8_t type, uint8_t bar, uint32_t off,
			uint32_t len, uint8_t caplen)
{
	uint8_t c = pci_dev_add_cap(&vp->pci, PCI_CAP_ID_VNDR, caplen);

	if (!c)
		return;
	vp->pci.cfg[c + 2] = caplen;
	vp->pci.cfg[c + 3] = type;
	vp->pci.cfg[c + 4] = bar;
	memcpy(&vp->pci.cfg[c + 8], &off, 4);
	memcpy(&vp->pci.cfg[c + 12], &len, 4);
	if (type == CAP_NOTIFY) {
		uint32_t mult = VIRTIO_PCI_NOTIFY_MULT;

		memcpy(&vp->pci.cfg[c + 16], &mult, 4);
	}
	if (type == CAP_PCI_CFG) {
		vp->cfg_cap = c;
		/* bar, offset, length and the data window are the driver's */
		vp->pci.wmask[c + 4] = 0xff;
		memset(&vp->pci.wmask[c + 8], 0xff, 8);
		memset(&vp->pci.wmask[c + 16], 0xff, 4);
	}
}

static uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

/* Transitional PCI device ids exist for the original devices only, and
 * are not in virtio id order (4.1.2.3).  0 when there is none. */
static uint16_t vp_transitional_id(uint16_t virtio_id)
{
	switch (virtio_id) {
	case VIRTIO_ID_NET: return 0x1000;
	case VIRTIO_ID_BLOCK: return 0x1001;
	case VIRTIO_ID_BALLOON: return 0x1002;
	case VIRTIO_ID_CONSOLE: return 0x1003;
	case 8: return 0x1004;                 /* SCSI host */
	case VIRTIO_ID_RNG: return 0x1005;
	case 9: return 0x1009;                 /* 9P transport */
	default: return 0;
	}
}

static void vp_setup_pci(struct virtio_pci *vp)
{
	const struct virtio_device_ops *ops = vp->vdev.ops;
	bool legacy = vp->mode != VIRTIO_PCI_MODERN_ONLY, modern = vp->mode != VIRTIO_PCI_LEGACY_ONLY;
	uint16_t tid = vp_transitional_id(ops->device_id);
	uint16_t devid = legacy && tid ? tid : (uint16_t)(0x1040 + ops->device_id);
	uint32_t class_code = ops->device_id == VIRTIO_ID_NET ? 0x020000 :
			      ops->device_id == VIRTIO_ID_BLOCK ? 0x010000 :
			      ops->device_id == VIRTIO_ID_CONSOLE ? 0x078000 : 0xff0000;

	pci_dev_init(&vp->pci, vp->dev, &vp_pci_ops, 0x1af4, devid, class_code, 0x1af4,
		     ops->device_id);
	vp->pci.priv = vp;
	vp->pci.cfg[PCI_REVISION_ID] = modern && !legacy ? 1 : 0;
	if (legacy)
		pci_dev_set_bar(&vp->pci, VIRTIO_PCI_BAR_LEGACY, PCI_BAR_IO,
				pow2_at_least(0x18 + ops->config_size));
	pci_dev_set_bar(&vp->pci, VIRTIO_PCI_BAR_MSIX, PCI_BAR_MEM32, 4096);
	pci_msix_init(&vp->pci, VIRTIO_PCI_BAR_MSIX, VIRTIO_PCI_MSIX_TABLE, VIRTIO_PCI_MSIX_PBA,
		      vp->vdev.num_queues + 1 > VIRTIO_PCI_VECTORS ? VIRTIO_PCI_VECTORS
								   : vp->vdev.num_queues + 1);
	if (!modern)
		return;
	pci_dev_set_bar(&vp->pci, VIRTIO_PCI_BAR_MODERN, PCI_BAR_MEM32, VIRTIO_PCI_MODERN_SIZE);
	vp_add_vcap(vp, CAP_COMMON, VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_COMMON_OFF, 0x38, 16);
	vp_add_vcap(vp, CAP_ISR, VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_ISR_OFF, 1, 16);
	vp_add_vcap(vp, CAP_DEVICE, VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_DEVICE_OFF,
		    ops->config_size ? ops->config_size : 4, 16);
	vp_add_vcap(vp, CAP_NOTIFY, VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_NOTIFY_OFF,
		    VIRTIO_PCI_NOTIFY_MULT * vp->vdev.num_queues, 20);
	vp_add_vcap(vp, CAP_PCI_CFG, 0, 0, 0, 20);
}

int virtio_pci_create(const struct device_host *host, const struct virtio_device_ops *ops,
		      void *priv, const char *name, enum virtio_pci_mode mode, struct device **out,
		      struct error *e)
{
	struct virtio_pci *vp = calloc(1, sizeof(*vp));
	struct device *d;

	if (ops->num_queues > VIRTIO_PCI_MAX_QUEUES) {
		free(vp);
		vp = NULL;
		error_set(e, EXIT_USAGE, "%s: %u queues is more than %d", name,
			  ops->num_queues, VIRTIO_PCI_MAX_QUEUES);
	} else if (!vp || virtio_device_init(&vp->vdev, ops, priv, host->mem, name)) {
		free(vp);
		vp = NULL;
		error_set(e, EXIT_HOST, "%s: cannot set up the virtio device", name);
	}
	if (!vp) {
		if (ops->destroy) {
			struct virtio_device tmp = { .ops = ops, .priv = priv };
			ops->destroy(&tmp);
		}
		return -1;
	}
	d = device_new(host, &virtio_pci_dev_ops, name, vp);
	if (!d) {
		virtio_device_destroy(&vp->vdev);
		free(vp);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	for (int q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++)
		vp->modern_ev[q].fd = vp->legacy_ev[q].fd = -1;
	vp->dev = d;
	vp->host = host;
	vp->mode = mode;
	vp->config_vector = VIRTIO_PCI_NO_VECTOR;
	vp->vdev.transport = vp;
	vp->vdev.notify_queue = vp_notify_queue;
	vp->vdev.notify_config = vp_notify_config;
	if (mode == VIRTIO_PCI_LEGACY_ONLY)
		vp->vdev.host_features &= ~(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_PACKED));
	for (uint16_t q = 0; q < vp->vdev.num_queues; q++)
		vp->vdev.queues[q].vector = VIRTIO_PCI_NO_VECTOR;
	if (device_host_attach(host, d))
		return error_set(e, EXIT_RESOURCE, "%s: too many devices", name);
	*out = d;
	vp_setup_pci(vp);
	return pci_add_device(host, &vp->pci, e);
}
