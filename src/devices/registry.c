/*
 * registry.c - every built-in device type, in one table.
 *
 * This is the one place to audit what a Shoal VM contains.  Each entry's
 * create function attaches its instances to the VM (ports, MMIO ranges,
 * event loop fds).  Order matters only for readability; devices do not
 * depend on one another.  PCI and virtio devices will be added here.
 */
#include "devices/device.h"

#include "vmm/config.h"

const struct device_type device_types[] = {
	{ "serial",  "16550A UART on COM1 (0x3f8, IRQ 4): the console", serial_create },
	{ "i8042",   "keyboard controller (0x60, 0x64): only the reset line",  i8042_create },
	{ "rtc",     "MC146818 CMOS real-time clock (0x70, 0x71), host time",   rtc_create },
	{ "acpi-pm", "ACPI PM1a event/control blocks (0x600-0x605): power off", acpi_pm_create },
	{ "testdev", "test/exit device (0xf4 exit code, 0xf5 report lines)",    testdev_create },
	{ "legacy",  "POST port 0x80, I/O delay 0xed, fast A20/reset 0x92",      legacy_create },
	{ "virtio-rng", "virtio entropy source on PCI (--rng), rate-capped",      virtio_rng_create },
	{ "virtio-net", "virtio network card per --net, on a TAP or a frame fd",   virtio_net_create },
	{ "virtio-vsock", "virtio socket (--vsock): host side on Unix sockets",    virtio_vsock_create },
	{ "virtio-blk", "virtio block disks on PCI (--disk): raw or qcow2, I/O thread", virtio_blk_create },
	{ "virtio-console", "virtio console port on PCI (--virtio-console file:PATH)", virtio_console_create },
	{ NULL, NULL, NULL },
};

int devices_create_all(struct vm *vm, const struct vm_config *cfg, struct error *e)
{
	for (const struct device_type *t = device_types; t->type; t++)
		if (t->create(vm, cfg, e))
			return error_prefix(e, "device %s", t->type);
	return 0;
}
