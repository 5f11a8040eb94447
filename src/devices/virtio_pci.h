/*
 * virtio_pci.h - the virtio PCI transport: one transitional ("bimodal")
 * PCI function per virtio device (seed mechanism 30).
 *
 * Each device offers, on the same function, the legacy virtio 0.9.5
 * interface (an I/O BAR) for old drivers and the modern virtio 1.x one
 * (vendor capabilities pointing into a memory BAR) for new drivers; the
 * driver's first access decides which it uses.  A per-device mode can
 * force legacy-only or modern-only.
 */
#ifndef SHOAL_DEVICES_VIRTIO_PCI_H
#define SHOAL_DEVICES_VIRTIO_PCI_H

#include "devices/virtio.h"
#include "base/error.h"

struct device;
struct device_host;

enum virtio_pci_mode {
	VIRTIO_PCI_TRANSITIONAL = 0,    /* both interfaces (default) */
	VIRTIO_PCI_LEGACY_ONLY,
	VIRTIO_PCI_MODERN_ONLY,
};

/* BAR layout (modern memory BAR 4, legacy I/O BAR 0, MSI-X in BAR 1). */
#define VIRTIO_PCI_BAR_LEGACY     0
#define VIRTIO_PCI_BAR_MSIX       1
#define VIRTIO_PCI_BAR_MODERN     4
#define VIRTIO_PCI_COMMON_OFF     0x0000
#define VIRTIO_PCI_ISR_OFF        0x1000
#define VIRTIO_PCI_DEVICE_OFF     0x2000
#define VIRTIO_PCI_NOTIFY_OFF     0x3000
#define VIRTIO_PCI_NOTIFY_MULT    4
#define VIRTIO_PCI_MODERN_SIZE    0x4000
#define VIRTIO_PCI_MSIX_TABLE     0x0000
#define VIRTIO_PCI_MSIX_PBA       0x0800
#define VIRTIO_PCI_NO_VECTOR      0xffff

/* Create a virtio PCI function for the device model `ops`/`priv`, named
 * `name`, attach it to `host` and plug it into the host's PCI bus; *out is
 * the new device (owned by the host).  On failure `priv` has been released
 * through ops->destroy. */
int virtio_pci_create(const struct device_host *host, const struct virtio_device_ops *ops,
		      void *priv, const char *name, enum virtio_pci_mode mode, struct device **out,
		      struct error *e);

/* The virtio device inside a struct device made by virtio_pci_create. */
struct virtio_device *virtio_pci_vdev(struct device *d);

/* Parse "transitional", "legacy", "modern"; -1 when unknown. */
int virtio_pci_parse_mode(const char *s, enum virtio_pci_mode *mode);

#endif
