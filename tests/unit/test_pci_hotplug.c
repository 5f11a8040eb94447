/*
 * test_pci_hotplug.c - the ACPI PCI hotplug register block
 * (src/devices/pci_hotplug.c) as the guest's AML drives it, and
 * pci_remove_device (src/devices/pci.c), on a fake host.
 *
 * The register block: a plug sets the slot's bit in PCIU and pulses the
 * GED's GSI once; reading PCIU returns the bits and clears them (a second
 * read is 0); an unplug does the same through PCID and takes back a plug
 * not yet read; partial reads return nothing and clear nothing; a B0EJ
 * write hands each slot to the eject callback, never slot 0 (the host
 * bridge).  Unplugging: the device leaves its slot (config reads all
 * ones), its BAR stops decoding, and a second removal finds nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "boot/acpi.h"
#include "devices/pci_hotplug.h"
#include "fake_host.h"

static int edges[FAKE_HOST_IRQS];
static uint32_t ejected;
static int released;

static void count_irq(const struct device_host *h, unsigned gsi, int level)
{
	struct fake_host *f = h->opaque;

	if (gsi < FAKE_HOST_IRQS && level && !f->irq[gsi])
		edges[gsi]++;
	fake_host_irq_line(h, gsi, level);
}

static void on_eject(void *opaque, int slot)
{
	assert_ptr_equal(opaque, &ejected);
	ejected |= 1u << slot;
}

static void on_release(void *opaque)
{
	assert_ptr_equal(opaque, &ejected);
	released++;
}

static uint32_t rd(struct fake_host *f, uint16_t off, int size)
{
	uint32_t v = 0xdeadbeef;

	assert_true(bus_io(&f->iobus, ACPI_PCIHP_PORT + off, &v, size, false));
	return size == 4 ? v : v & ((1u << (8 * size)) - 1);
}

static void wr(struct fake_host *f, uint16_t off, uint32_t v)
{
	assert_true(bus_io(&f->iobus, ACPI_PCIHP_PORT + off, &v, 4, true));
}

static void test_registers(void **state)
{
	struct fake_host *f = fake_host_new(64 << 20);
	struct device *d = NULL;
	struct error e;

	(void)state;
	memset(edges, 0, sizeof(edges));
	ejected = 0;
	released = 0;
	f->host.irq_line = count_irq;
	assert_int_equal(pci_hotplug_create(&f->host, ACPI_PCIHP_PORT, ACPI_PCIHP_GSI, on_eject,
					    on_release, &ejected, &d, &e), 0);
	assert_ptr_equal(pci_hotplug_opaque(d), &ejected);

	assert_int_equal(rd(f, 0, 4), 0);
	pci_hotplug_plug(d, 5);
	assert_int_equal(edges[ACPI_PCIHP_GSI], 1);
	assert_int_equal(f->irq[ACPI_PCIHP_GSI], 0);          /* an edge, not a level */
	assert_int_equal(rd(f, 0, 2), 0);                       /* partial: nothing, kept */
	assert_int_equal(rd(f, 0, 4), 1u << 5);
	assert_int_equal(rd(f, 0, 4), 0);                       /* read clears */

	pci_hotplug_plug(d, 7);
	pci_hotplug_unplug(d, 7);                               /* takes the plug back */
	assert_int_equal(edges[ACPI_PCIHP_GSI], 3);
	assert_int_equal(rd(f, 0, 4), 0);
	assert_int_equal(rd(f, 4, 4), 1u << 7);
	assert_int_equal(rd(f, 4, 4), 0);

	pci_hotplug_plug(d, 0);                                 /* the host bridge: never */
	pci_hotplug_plug(d, 32);
	assert_int_equal(rd(f, 0, 4), 0);

	wr(f, 8, (1u << 7) | (1u << 31) | 1u);
	assert_int_equal(ejected, (1u << 7) | (1u << 31));     /* not slot 0 */
	assert_int_equal(rd(f, 8, 4), 0);                       /* B0EJ reads 0 */
	fake_host_free(f);
	assert_int_equal(released, 1);
}

static void test_remove_device(void **state)
{
	struct fake_host *f = fake_host_new(64 << 20);
	struct device *rng;
	struct error e;
	uint32_t id = 0, bar = 0;
	uint16_t cmd = 0;
	int slot;

	(void)state;
	assert_int_equal(fake_host_pci(f, &e), 0);
	assert_int_equal(virtio_rng_create(&f->host, 0, &e), 0);
	rng = f->devices[f->ndevices - 1];
	slot = pci_device_slot(f->host.pci, rng);
	assert_int_equal(slot, 1);
	pci_config_read(f->host.pci, slot, PCI_VENDOR_ID, &id, 4);
	assert_int_equal(id & 0xffff, 0x1af4);
	pci_config_read(f->host.pci, slot, PCI_COMMAND, &cmd, 2);
	assert_true(cmd & (PCI_COMMAND_MEM | PCI_COMMAND_IO));
	pci_config_read(f->host.pci, slot, PCI_BAR0 + 4, &bar, 4);

	assert_ptr_equal(pci_remove_device(f->host.pci, slot), rng);
	pci_config_read(f->host.pci, slot, PCI_VENDOR_ID, &id, 4);
	assert_int_equal(id, 0xffffffffu);                      /* an empty slot */
	assert_int_equal(pci_device_slot(f->host.pci, rng), -1);
	assert_null(pci_remove_device(f->host.pci, slot));
	assert_null(pci_remove_device(f->host.pci, 0));         /* never the bridge */
	assert_null(pci_remove_device(f->host.pci, 32));
	/* the next device takes the freed slot */
	assert_int_equal(virtio_rng_create(&f->host, 0, &e), 0);
	assert_int_equal(pci_device_slot(f->host.pci, f->devices[f->ndevices - 1]), slot);
	fake_host_free(f);                                      /* frees rng too */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registers),
		cmocka_unit_test(test_remove_device),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
