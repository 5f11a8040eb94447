/*
 * fake_host.h - a struct device_host for unit tests and fuzzers: devices
 * built on it without a VM, KVM or event loop.
 *
 * It keeps what a test wants to look at: two buses (port and MMIO) the
 * devices claim ranges on and the test drives with bus_io/bus_mmio, the
 * devices it owns, the first stop (status and reason, first call wins as
 * in the VMM), test-device report lines (through report_fn), and the last
 * level of each interrupt line.  There are no irqfds, ioeventfds or MSI
 * routes: the callbacks are NULL, so PCI devices fall back as they do on a
 * host without them.  Guest memory is `mem`, empty until a test creates it.
 *
 * Header only (static inline), shared by tests/unit and fuzz/.
 */
#ifndef SHOAL_TESTS_FAKE_HOST_H
#define SHOAL_TESTS_FAKE_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/guest_mem.h"
#include "devices/device.h"
#include "devices/pci.h"
#include "vmm/bus.h"

#define FAKE_HOST_MAX_DEVICES 64
#define FAKE_HOST_IRQS        64

struct fake_host {
	struct device_host host;
	struct bus iobus, mmiobus;
	struct device *devices[FAKE_HOST_MAX_DEVICES];
	int ndevices;
	struct guest_mem mem;
	pthread_mutex_t lock;             /* guards the stop fields */
	bool stopping;
	int exit_status;
	char exit_reason[256];
	int irq[FAKE_HOST_IRQS];          /* last level of each line */
	void (*report_fn)(void *opaque, const char *line);
	void *report_opaque;
};

static inline int fake_host_add_device(const struct device_host *h, struct device *d)
{
	struct fake_host *f = h->opaque;

	if (f->ndevices == FAKE_HOST_MAX_DEVICES) {
		device_free(d);
		return -1;
	}
	f->devices[f->ndevices++] = d;
	return 0;
}

static inline int fake_host_map(const struct device_host *h, enum device_space space,
				uint64_t base, uint64_t len, struct device *d)
{
	struct fake_host *f = h->opaque;

	return bus_register(space == DEVICE_SPACE_IO ? &f->iobus : &f->mmiobus, base, len, d);
}

static inline void fake_host_irq_line(const struct device_host *h, unsigned gsi, int level)
{
	struct fake_host *f = h->opaque;

	if (gsi < FAKE_HOST_IRQS)
		f->irq[gsi] = level;
}

static inline void fake_host_stop(const struct device_host *h, int status, const char *reason)
{
	struct fake_host *f = h->opaque;

	pthread_mutex_lock(&f->lock);
	if (!f->stopping) {
		f->stopping = true;
		f->exit_status = status;
		snprintf(f->exit_reason, sizeof(f->exit_reason), "%s", reason);
	}
	pthread_mutex_unlock(&f->lock);
}

static inline void fake_host_report(const struct device_host *h, const char *line)
{
	struct fake_host *f = h->opaque;

	if (f->report_fn)
		f->report_fn(f->report_opaque, line);
}

/* A host for a guest of `ram_size` bytes (what the RTC and the PCI
 * windows are told); NULL when out of memory. */
static inline struct fake_host *fake_host_new(uint64_t ram_size)
{
	struct fake_host *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	bus_init(&f->iobus, "io");
	bus_init(&f->mmiobus, "mmio");
	f->mem.fd = -1;
	pthread_mutex_init(&f->lock, NULL);
	f->host = (struct device_host){
		.opaque = f,
		.mem = &f->mem,
		.ram_size = ram_size,
		.add_device = fake_host_add_device,
		.map = fake_host_map,
		.irq_line = fake_host_irq_line,
		.stop = fake_host_stop,
		.report = fake_host_report,
	};
	return f;
}

/* Add the PCI host bridge and its windows; 0 or -1 with `e`. */
static inline int fake_host_pci(struct fake_host *f, struct error *e)
{
	return pci_init(&f->host, &f->host.pci, e);
}

/* The PCI bus, then every device, then the host. */
static inline void fake_host_free(struct fake_host *f)
{
	if (!f)
		return;
	pci_destroy(f->host.pci);
	for (int i = 0; i < f->ndevices; i++)
		device_free(f->devices[i]);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

#endif
