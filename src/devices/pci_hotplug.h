/*
 * pci_hotplug.h - the ACPI PCI hotplug register block (pci_hotplug.c).
 *
 * What the guest's AML (src/boot/acpi.c, \_SB.PCI0) reads and writes to
 * learn of added and removed slots and to say it let go of one.  The
 * layout, at port `port` (12 bytes, 32-bit registers):
 *
 *   +0  PCIU  read: slots plugged since the last read (bit n: slot n);
 *             reading clears it
 *   +4  PCID  read: slots whose removal was asked since the last read;
 *             reading clears it
 *   +8  B0EJ  write: the guest ejects these slots (a slot's _EJ0)
 *
 * Every plug or unplug request pulses GSI `gsi` (edge), the interrupt of
 * the Generic Event Device whose _EVT reads PCIU and PCID and notifies the
 * slots.  The block never touches the bus: the VMM adds the device to a
 * slot before pci_hotplug_plug, and removes it when the eject callback
 * says so.
 */
#ifndef SHOAL_DEVICES_PCI_HOTPLUG_H
#define SHOAL_DEVICES_PCI_HOTPLUG_H

#include "base/error.h"
#include "devices/device_host.h"

struct device;

/* Called on the event loop thread for each slot the guest ejected. */
typedef void (*pci_hotplug_eject_fn)(void *opaque, int slot);

/* Create "pci-hotplug0" on `host` at ports [port, port + 12) with GSI
 * `gsi`; `eject` is called as above with `opaque`, which `release` (may
 * be NULL) frees when the device goes.  *out: the device.  0, or -1 with
 * `e`. */
int pci_hotplug_create(const struct device_host *host, uint16_t port, unsigned gsi,
		       pci_hotplug_eject_fn eject, void (*release)(void *opaque), void *opaque,
		       struct device **out, struct error *e);

/* Tell the guest that slot `slot` holds a new device (plug) or that the
 * host wants it back (unplug).  Any thread. */
void pci_hotplug_plug(struct device *d, int slot);
void pci_hotplug_unplug(struct device *d, int slot);

/* The opaque pointer given at creation. */
void *pci_hotplug_opaque(struct device *d);

#endif
