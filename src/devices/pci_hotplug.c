/*
 * pci_hotplug.c - the register block of ACPI PCI hotplug, as the guest's
 * AML uses it (pci_hotplug.h has the layout; src/boot/acpi.c the AML).
 *
 * The scheme is the one QEMU's PIIX machines use and Linux's acpiphp
 * driver expects: each slot of the root bus is an ACPI device \_SB.PCI0.Snn
 * with _ADR, _SUN and _EJ0; an event (here a Generic Event Device's
 * interrupt, GSI `gsi`) runs a method that reads which slots came and
 * which should go, and notifies them: Notify(Snn, 1) (device check: the
 * guest scans the slot and binds a driver) or Notify(Snn, 3) (eject
 * request: the guest stops using the device, removes it, and runs the
 * slot's _EJ0, which writes the slot's bit to B0EJ).
 *
 * The host side: pci_hotplug_plug and pci_hotplug_unplug set a bit and
 * pulse the interrupt.  An eject the guest writes is handed to the VMM on
 * the event loop thread (an eventfd), never on the vCPU thread that wrote
 * it: tearing a device down takes the PCI lock for writing and joins the
 * device's threads, which a vCPU must not wait for.  (A host without an
 * event loop, a unit test's, gets the call at once, from the writer.)
 *
 * What the guest may do: read the two status registers at any time (each
 * read takes the bits it returns), and write any bits to B0EJ, including
 * slots the host never offered.  The VMM decides what an eject means; it
 * removes only devices it hot-added, so a guest cannot unplug its boot
 * disk by writing here (it can only stop using it, as it could anyway).
 *
 * Invariants: the three bitmaps change only under the device lock; bit 0
 * (the host bridge) is never set.
 */
#include "devices/pci_hotplug.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "devices/device.h"

#define PCI_HOTPLUG_STATE_VERSION 1
#define PCI_HOTPLUG_LEN 12
#define SLOT_MASK 0xfffffffeu        /* slots 1..31: never the host bridge */

struct pci_hotplug {
	uint16_t port;
	unsigned gsi;
	uint32_t up, down;               /* not yet read by the guest */
	uint32_t ejected;                /* written by the guest, not yet handled */
	int efd;                         /* tells the event loop of `ejected` */
	pci_hotplug_eject_fn eject;
	void (*release)(void *opaque);
	void *opaque;
};

/* An edge on the GED's interrupt; the guest's _EVT reads the bits. */
static void pci_hotplug_pulse(struct device *d)
{
	struct pci_hotplug *h = d->priv;

	device_host_irq_line(d->host, h->gsi, 1);
	device_host_irq_line(d->host, h->gsi, 0);
}

static void pci_hotplug_set(struct device *d, int slot, bool up)
{
	struct pci_hotplug *h = d->priv;
	uint32_t bit = slot > 0 && slot < 32 ? 1u << slot : 0;

	if (!bit)
		return;
	pthread_mutex_lock(&d->lock);
	if (up) {
		h->up |= bit;
		h->down &= ~bit;
	} else {
		h->down |= bit;
		h->up &= ~bit;
	}
	pthread_mutex_unlock(&d->lock);
	pci_hotplug_pulse(d);
}

void pci_hotplug_plug(struct device *d, int slot)
{
	pci_hotplug_set(d, slot, true);
}

void pci_hotplug_unplug(struct device *d, int slot)
{
	pci_hotplug_set(d, slot, false);
}

void *pci_hotplug_opaque(struct device *d)
{
	return ((struct pci_hotplug *)d->priv)->opaque;
}

static void pci_hotplug_io_read(struct device *d, uint16_t port, void *data, int size)
{
	struct pci_hotplug *h = d->priv;
	uint16_t off = (uint16_t)(port - h->port);
	uint32_t v = 0;

	/* Only whole, aligned registers: the AML's fields are DWordAcc. */
	if (size == 4 && off == 0) {
		v = h->up;
		h->up = 0;
	} else if (size == 4 && off == 4) {
		v = h->down;
		h->down = 0;
	}
	memcpy(data, &v, (size_t)size);
}

static void pci_hotplug_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct pci_hotplug *h = d->priv;
	uint64_t one = 1;
	uint32_t v;

	if (size != 4 || port - h->port != 8)
		return;
	memcpy(&v, data, 4);
	v &= SLOT_MASK;
	if (!v)
		return;
	h->ejected |= v;
	if (h->efd < 0) {
		/* No event loop (a unit test's host): hand them over here. */
		h->ejected = 0;
		for (int s = 1; s < 32; s++)
			if ((v & (1u << s)) && h->eject)
				h->eject(h->opaque, s);
		return;
	}
	if (write(h->efd, &one, sizeof(one)) < 0)
		log_debug("%s: eventfd write: %s", d->name, strerror(errno));
}

/* Event loop thread: hand each ejected slot to the VMM, without the lock
 * (the VMM tears devices down, which may take a while). */
static int pci_hotplug_on_eject(int fd, uint32_t events, void *opaque)
{
	struct device *d = opaque;
	struct pci_hotplug *h = d->priv;
	uint64_t n;
	uint32_t bits;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_debug("%s: eventfd read: %s", d->name, strerror(errno));
	pthread_mutex_lock(&d->lock);
	bits = h->ejected;
	h->ejected = 0;
	pthread_mutex_unlock(&d->lock);
	for (int s = 1; s < 32; s++)
		if ((bits & (1u << s)) && h->eject)
			h->eject(h->opaque, s);
	return 0;
}

static void pci_hotplug_save(struct device *d, struct state_writer *w)
{
	struct pci_hotplug *h = d->priv;

	state_put_u32(w, h->up);
	state_put_u32(w, h->down);
}

static int pci_hotplug_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct pci_hotplug *h = d->priv;

	(void)version;
	h->up = state_get_u32(r) & SLOT_MASK;
	h->down = state_get_u32(r) & SLOT_MASK;
	return r->error ? -1 : 0;
}

static void pci_hotplug_destroy(struct device *d)
{
	struct pci_hotplug *h = d->priv;

	if (h->efd >= 0) {
		if (d->host && d->host->loop)
			eventloop_del(d->host->loop, h->efd);
		close(h->efd);
	}
	if (h->release)
		h->release(h->opaque);
	free(h);
}

static const struct device_ops pci_hotplug_ops = {
	.type = "pci-hotplug",
	.state_version = PCI_HOTPLUG_STATE_VERSION,
	.io_read = pci_hotplug_io_read,
	.io_write = pci_hotplug_io_write,
	.save = pci_hotplug_save,
	.restore = pci_hotplug_restore,
	.destroy = pci_hotplug_destroy,
};

int pci_hotplug_create(const struct device_host *host, uint16_t port, unsigned gsi,
		       pci_hotplug_eject_fn eject, void (*release)(void *opaque), void *opaque,
		       struct device **out, struct error *e)
{
	struct pci_hotplug *h = calloc(1, sizeof(*h));
	struct device *d = h ? device_new(host, &pci_hotplug_ops, "pci-hotplug0", h) : NULL;

	if (!d) {
		free(h);
		if (release)
			release(opaque);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	*h = (struct pci_hotplug){ .port = port, .gsi = gsi, .efd = -1, .eject = eject,
				   .release = release, .opaque = opaque };
	if (device_host_attach(host, d))        /* it freed d, and so released opaque */
		return error_set(e, EXIT_RESOURCE, "pci-hotplug0: too many devices");
	if (device_host_map(host, DEVICE_SPACE_IO, port, PCI_HOTPLUG_LEN, d))
		return error_set(e, EXIT_HOST, "pci-hotplug0: cannot claim ports 0x%x-0x%x", port,
				 port + PCI_HOTPLUG_LEN - 1);
	if (host->loop) {
		h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (h->efd < 0 || eventloop_add(host->loop, h->efd, EPOLLIN, pci_hotplug_on_eject, d) < 0)
			return error_set(e, EXIT_HOST, "pci-hotplug0: eventfd: %s", strerror(errno));
	}
	*out = d;
	return 0;
}
