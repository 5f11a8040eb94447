/*
 * virtio_pci.c - the virtio PCI transport, both interfaces of a
 * transitional device, driven from ring 3 without interrupts.
 *
 * Legacy (virtio 0.9.5): BAR0 is an I/O window, little-endian:
 *   0x00 host features (32)   0x04 guest features (32)   0x08 queue PFN
 *   0x0c queue size (16, read-only)   0x0e queue select   0x10 queue notify
 *   0x12 status (8)   0x13 ISR (8, read clears)
 *   then, only while MSI-X is enabled, 0x14 config vector, 0x16 queue
 *   vector; the device configuration follows (0x14 or 0x18).
 * The guest leaves MSI-X disabled, so its configuration is at 0x14 (but it
 * checks the MSI-X capability's enable bit rather than assume).  Queue
 * rings are given as one page frame number: descriptors there, the
 * available ring right after, the used ring at the next 4 KiB boundary
 * (virtq.c allocates every queue in that layout, for both interfaces).
 * Only the low 32 feature bits exist.
 *
 * Modern (virtio 1.x): vendor-specific capabilities (id 0x09) in config
 * space point into BARs: common configuration (type 1), notifications (2,
 * with notify_off_multiplier), ISR (3), device configuration (4).  Feature
 * words are selected 32 bits at a time; VERSION_1 must be accepted, and
 * the device must keep FEATURES_OK set after the driver writes it.  Queue
 * addresses are three 64-bit fields; a queue is notified by writing its
 * index at notify base + queue_notify_off * multiplier.
 *
 * Device ids: vendor 0x1af4; transitional 0x1000 + n (type from the
 * subsystem id), modern-only 0x1040 + type.
 *
 * `virtio-mode` picks the interface: legacy, modern, or auto (modern when
 * the device has the capabilities).  Interrupts are never used: drivers
 * poll the used rings, and read ISR only to acknowledge.
 */
#include "virtio_pci.h"
#include "virtq.h"
#include "arch.h"
#include "lib.h"
#include "report.h"

enum virtio_mode virtio_mode_wanted = VIRTIO_MODE_AUTO;

static struct virtio_dev vdevs[PCI_DEVS_MAX];
static unsigned nvdevs;
static bool vdevs_done;

/* Legacy header offsets. */
#define VL_HOST_F    0x00
#define VL_GUEST_F   0x04
#define VL_QPFN      0x08
#define VL_QSIZE     0x0c
#define VL_QSEL      0x0e
#define VL_QNOTIFY   0x10
#define VL_STATUS    0x12
#define VL_ISR       0x13
#define VL_CFG       0x14
#define VL_CFG_MSIX  0x18

/* Modern common configuration offsets. */
#define VC_DFSEL     0x00
#define VC_DF        0x04
#define VC_GFSEL     0x08
#define VC_GF        0x0c
#define VC_NUMQ      0x12
#define VC_STATUS    0x14
#define VC_GEN       0x15
#define VC_QSEL      0x16
#define VC_QSIZE     0x18
#define VC_QMSIX     0x1a
#define VC_QENABLE   0x1c
#define VC_QNOFF     0x1e
#define VC_QDESC     0x20
#define VC_QAVAIL    0x28
#define VC_QUSED     0x30

/* ---- register windows ---- */

static inline void outl_(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl_(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static uint8_t rd8(const struct vio_region *r, unsigned off)
{
	if (r->io)
		return inb((uint16_t)(r->addr + off));
	return *(volatile uint8_t *)(r->addr + off);
}

static uint16_t rd16(const struct vio_region *r, unsigned off)
{
	if (r->io)
		return inw((uint16_t)(r->addr + off));
	return *(volatile uint16_t *)(r->addr + off);
}

static uint32_t rd32(const struct vio_region *r, unsigned off)
{
	if (r->io)
		return inl_((uint16_t)(r->addr + off));
	return *(volatile uint32_t *)(r->addr + off);
}

static void wr8(const struct vio_region *r, unsigned off, uint8_t v)
{
	if (r->io)
		outb((uint16_t)(r->addr + off), v);
	else
		*(volatile uint8_t *)(r->addr + off) = v;
}

static void wr16(const struct vio_region *r, unsigned off, uint16_t v)
{
	if (r->io)
		outw((uint16_t)(r->addr + off), v);
	else
		*(volatile uint16_t *)(r->addr + off) = v;
}

static void wr32(const struct vio_region *r, unsigned off, uint32_t v)
{
	if (r->io)
		outl_((uint16_t)(r->addr + off), v);
	else
		*(volatile uint32_t *)(r->addr + off) = v;
}

/* 64-bit fields of the common configuration: low word first. */
static void wr64(const struct vio_region *r, unsigned off, uint64_t v)
{
	wr32(r, off, (uint32_t)v);
	wr32(r, off + 4, (uint32_t)(v >> 32));
}

/* ---- discovery ---- */

static bool region_from_cap(const struct pci_dev *d, unsigned cap, struct vio_region *r)
{
	uint8_t bar = pci_read8(d, cap + 4);
	uint32_t off = pci_read32(d, cap + 8), len = pci_read32(d, cap + 12);

	if (bar > 5 || !d->bar[bar].addr || !d->bar[bar].size ||
	    (uint64_t)off + len > d->bar[bar].size)
		return false;
	r->addr = d->bar[bar].addr + off;
	r->len = len;
	r->io = d->bar[bar].io;
	return true;
}

static void caps_parse(struct virtio_dev *v)
{
	unsigned cap = 0;

	while ((cap = pci_cap_next(v->pci, PCI_CAP_VENDOR, cap)) != 0) {
		uint8_t type = pci_read8(v->pci, cap + 3);
		struct vio_region *r = type == 1 ? &v->common : type == 2 ? &v->notify :
				       type == 3 ? &v->isr : type == 4 ? &v->devcfg : NULL;

		if (!r || r->addr)
			continue;		/* unknown, or not the first */
		if (region_from_cap(v->pci, cap, r) && type == 2)
			v->notify_mult = pci_read32(v->pci, cap + 16);
	}
	v->has_modern = v->common.addr && v->notify.addr && v->isr.addr;
}

static void vdev_add(struct pci_dev *d)
{
	struct virtio_dev *v = &vdevs[nvdevs];

	*v = (struct virtio_dev){ .pci = d };
	if (d->device >= 0x1040 && d->device < 0x1080)
		v->type = d->device - 0x1040;
	else if (d->device >= 0x1000 && d->device < 0x1040)
		v->type = d->subsys;
	else
		return;
	if (d->device < 0x1040 && d->bar[0].io && d->bar[0].addr) {
		v->legacy = (struct vio_region){ d->bar[0].addr, (uint32_t)d->bar[0].size, true };
		/* A host bridge without an I/O window (QEMU microvm) reads all-ones. */
		v->has_legacy = rd32(&v->legacy, VL_HOST_F) != 0xffffffffu ||
				rd8(&v->legacy, VL_STATUS) != 0xff;
	}
	caps_parse(v);
	nvdevs++;
}

static void vdevs_scan(void)
{
	unsigned i;

	if (vdevs_done)
		return;
	vdevs_done = true;
	if (!pci_init())
		return;
	for (i = 0; i < pci_ndevs; i++)
		if (pci_devs[i].vendor == VIRTIO_PCI_VENDOR)
			vdev_add(&pci_devs[i]);
}

void virtio_rescan(bool ports)
{
	pci_rescan(ports);
	vdevs_done = false;
	nvdevs = 0;
}

struct virtio_dev *virtio_find(uint16_t type, unsigned index)
{
	unsigned i;

	vdevs_scan();
	for (i = 0; i < nvdevs; i++)
		if (vdevs[i].type == type && index-- == 0)
			return &vdevs[i];
	return NULL;
}

unsigned virtio_all(struct virtio_dev **out, unsigned max)
{
	unsigned i;

	vdevs_scan();
	for (i = 0; i < nvdevs && i < max; i++)
		out[i] = &vdevs[i];
	return i;
}

const char *virtio_type_name(uint16_t type)
{
	switch (type) {
	case VIRTIO_ID_NET: return "net";
	case VIRTIO_ID_BLK: return "blk";
	case VIRTIO_ID_CONSOLE: return "console";
	case VIRTIO_ID_RNG: return "rng";
	case 5: return "balloon";
	case 8: return "scsi";
	case 9: return "9p";
	case 16: return "gpu";
	case 18: return "input";
	case 19: return "vsock";
	default: return "other";
	}
}

/* ---- status and features ---- */

uint8_t virtio_status(struct virtio_dev *v)
{
	return v->modern ? rd8(&v->common, VC_STATUS) : rd8(&v->legacy, VL_STATUS);
}

static void status_set(struct virtio_dev *v, uint8_t s)
{
	if (v->modern)
		wr8(&v->common, VC_STATUS, s);
	else
		wr8(&v->legacy, VL_STATUS, s);
}

/* Write 0 and, for modern devices, wait until the device reads 0 back. */
void virtio_reset(struct virtio_dev *v)
{
	unsigned i;

	status_set(v, 0);
	for (i = 0; i < 100000 && virtio_status(v) != 0; i++)
		cpu_relax();
}

uint64_t virtio_device_features(struct virtio_dev *v)
{
	uint64_t lo;

	if (!v->modern)
		return rd32(&v->legacy, VL_HOST_F);
	wr32(&v->common, VC_DFSEL, 0);
	lo = rd32(&v->common, VC_DF);
	wr32(&v->common, VC_DFSEL, 1);
	return lo | (uint64_t)rd32(&v->common, VC_DF) << 32;
}

static void driver_features_set(struct virtio_dev *v, uint64_t f)
{
	if (!v->modern) {
		wr32(&v->legacy, VL_GUEST_F, (uint32_t)f);
		return;
	}
	wr32(&v->common, VC_GFSEL, 0);
	wr32(&v->common, VC_GF, (uint32_t)f);
	wr32(&v->common, VC_GFSEL, 1);
	wr32(&v->common, VC_GF, (uint32_t)(f >> 32));
}

static bool mode_pick(struct virtio_dev *v, const char **why)
{
	switch (virtio_mode_wanted) {
	case VIRTIO_MODE_LEGACY:
		v->modern = false;
		*why = "device has no legacy interface";
		return v->has_legacy;
	case VIRTIO_MODE_MODERN:
		v->modern = true;
		*why = "device has no modern capabilities";
		return v->has_modern;
	default:
		v->modern = v->has_modern;
		*why = "device has neither interface";
		return v->has_modern || v->has_legacy;
	}
}

bool virtio_start(struct virtio_dev *v, uint64_t wanted, const char **why)
{
	uint64_t dev_f;

	if (!mode_pick(v, why))
		return false;
	virtio_reset(v);
	status_set(v, VIRTIO_S_ACK);
	status_set(v, VIRTIO_S_ACK | VIRTIO_S_DRIVER);
	dev_f = virtio_device_features(v);
	if (v->modern)
		wanted |= VIRTIO_BIT(VIRTIO_F_VERSION_1) |
			  (virtq_packed_wanted ? VIRTIO_BIT(VIRTIO_F_RING_PACKED) : 0);
	else
		wanted &= 0xffffffffu;
	v->features = dev_f & wanted;
	driver_features_set(v, v->features);
	if (!v->modern)
		return true;
	*why = "device does not offer VERSION_1";
	if (!(v->features & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		return false;
	status_set(v, VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	*why = "device cleared FEATURES_OK";
	return virtio_status(v) & VIRTIO_S_FEATURES_OK;
}

void virtio_driver_ok(struct virtio_dev *v)
{
	uint8_t s = VIRTIO_S_ACK | VIRTIO_S_DRIVER | VIRTIO_S_DRIVER_OK;

	status_set(v, v->modern ? s | VIRTIO_S_FEATURES_OK : s);
}

uint8_t virtio_isr(struct virtio_dev *v)
{
	return v->modern ? rd8(&v->isr, 0) : rd8(&v->legacy, VL_ISR);
}

/* ---- queues ---- */

uint16_t virtio_queue_max(struct virtio_dev *v, uint16_t q)
{
	if (!v->modern) {
		wr16(&v->legacy, VL_QSEL, q);
		return rd16(&v->legacy, VL_QSIZE);
	}
	if (q >= rd16(&v->common, VC_NUMQ))
		return 0;
	wr16(&v->common, VC_QSEL, q);
	return rd16(&v->common, VC_QSIZE);
}

bool virtio_queue_enable(struct virtio_dev *v, uint16_t q, uint16_t size, uint64_t desc,
			 uint64_t avail, uint64_t used)
{
	if (q >= VIRTIO_QUEUES_MAX)
		return false;
	if (!v->modern) {
		if ((desc & 4095) || (desc >> 12) > 0xffffffffu)
			return false;
		wr16(&v->legacy, VL_QSEL, q);
		wr32(&v->legacy, VL_QPFN, (uint32_t)(desc >> 12));
		return true;
	}
	wr16(&v->common, VC_QSEL, q);
	wr16(&v->common, VC_QSIZE, size);
	wr16(&v->common, VC_QMSIX, 0xffff);	/* VIRTIO_MSI_NO_VECTOR */
	wr64(&v->common, VC_QDESC, desc);
	wr64(&v->common, VC_QAVAIL, avail);
	wr64(&v->common, VC_QUSED, used);
	v->qnotify[q] = rd16(&v->common, VC_QNOFF);
	wr16(&v->common, VC_QENABLE, 1);
	return rd16(&v->common, VC_QENABLE) == 1;
}

void virtio_queue_notify(struct virtio_dev *v, uint16_t q)
{
	if (!v->modern)
		wr16(&v->legacy, VL_QNOTIFY, q);
	else
		wr16(&v->notify, (uint32_t)v->qnotify[q % VIRTIO_QUEUES_MAX] * v->notify_mult, q);
}

/* ---- device configuration ---- */

static unsigned legacy_cfg_base(struct virtio_dev *v)
{
	unsigned cap = pci_cap_next(v->pci, PCI_CAP_MSIX, 0);

	return cap && (pci_read16(v->pci, cap + 2) & 0x8000) ? VL_CFG_MSIX : VL_CFG;
}

static const struct vio_region *cfg_region(struct virtio_dev *v, unsigned *off)
{
	if (v->modern)
		return &v->devcfg;
	*off += legacy_cfg_base(v);
	return &v->legacy;
}

uint8_t virtio_cfg8(struct virtio_dev *v, unsigned off)
{
	const struct vio_region *r = cfg_region(v, &off);

	return r->addr ? rd8(r, off) : 0;
}

uint16_t virtio_cfg16(struct virtio_dev *v, unsigned off)
{
	const struct vio_region *r = cfg_region(v, &off);

	return r->addr ? rd16(r, off) : 0;
}

uint32_t virtio_cfg32(struct virtio_dev *v, unsigned off)
{
	const struct vio_region *r = cfg_region(v, &off);

	return r->addr ? rd32(r, off) : 0;
}

/* Two 32-bit reads; modern devices are re-read until the generation holds. */
uint64_t virtio_cfg64(struct virtio_dev *v, unsigned off)
{
	uint64_t val;
	uint8_t gen;
	unsigned tries = 0;

	do {
		gen = v->modern ? rd8(&v->common, VC_GEN) : 0;
		val = virtio_cfg32(v, off) | (uint64_t)virtio_cfg32(v, off + 4) << 32;
	} while (v->modern && gen != rd8(&v->common, VC_GEN) && ++tries < 16);
	return val;
}
