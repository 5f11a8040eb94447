/*
 * devices.c - the builder: which devices a VM has, wired in from above.
 *
 * This is the one place to audit what a Shoal VM contains.  The devices
 * layer below knows nothing of struct vm_config: each entry here reads the
 * VM's configuration and calls a device constructor with the device host
 * (devices/device_host.h) and that device's own settings (a struct
 * vm_disk, a struct vm_net, a rate, a CID).  Order matters only for
 * readability and instance names; devices do not depend on one another.
 * The PCI bus is set up by vm.c before this runs.
 *
 * The configuration was validated (vm_config_validate) before we get here;
 * each constructor still refuses what it cannot open or serve.
 */
#include "vmm/devices.h"

#include <stdio.h>
#include <string.h>

#include "boot/acpi.h"
#include "devices/device.h"
#include "devices/fw_cfg.h"
#include "devices/virtio_balloon.h"
#include "devices/virtio.h"
#include "devices/virtio_pci.h"
#include "devices/vmgenid.h"
#include "vmm/config.h"
#include "vmm/hotplug.h"
#include "vmm/vm.h"

static int create_serial(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return serial_create(h, e);
}

static int create_i8042(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return i8042_create(h, e);
}

static int create_rtc(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return rtc_create(h, e);
}

static int create_acpi_pm(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return acpi_pm_create(h, e);
}

static int create_testdev(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return testdev_create(h, e);
}

static int create_legacy(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return legacy_create(h, e);
}

/* Firmware boot only; with Shoal's ACPI tables and their loader script. */
static int create_fw_cfg(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	struct acpi_fw_files t;
	int r;

	if (!c->firmware)
		return 0;
	if (acpi_build_fw_cfg(h->mem ? h->mem->size : h->ram_size, c->cpus, &t, e))
		return -1;
	r = fw_cfg_create_files(h, c->cpus, t.files, ACPI_FW_NFILES, e);
	acpi_fw_files_free(&t);
	return r;
}

static int create_rng(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->rng ? virtio_rng_create(h, c->rng_rate, e) : 0;
}

static int create_balloon(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->balloon ? virtio_balloon_create(h, c->balloon_stats_s, e) : 0;
}

static int create_nets(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	for (int i = 0; i < c->nnets && i < VM_MAX_NETS; i++)
		if (virtio_net_create(h, &c->nets[i], i, e))
			return -1;
	return 0;
}

static int create_vsock(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->vsock_cid ? virtio_vsock_create(h, c->vsock_cid, c->vsock_socket, e) : 0;
}

static int create_disks(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	for (int i = 0; i < c->ndisks && i < VM_MAX_DISKS; i++)
		if (virtio_blk_create(h, &c->disks[i], i, e))
			return -1;
	return 0;
}

static int create_fs(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	for (int i = 0; i < c->nfs && i < VM_MAX_FS; i++)
		if (vhost_user_fs_create(h, &c->fs[i], i, e))
			return -1;
	return 0;
}

static int create_vconsole(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->vconsole ? virtio_console_create(h, c->vconsole, e) : 0;
}

struct device *vm_disk_device(struct vm *vm, int i, struct vblk **b)
{
	char name[32];

	snprintf(name, sizeof(name), "virtio-blk%d", i);
	for (int k = 0; k < vm->ndevices; k++) {
		struct virtio_device *vd;

		if (strcmp(vm->devices[k]->name, name))
			continue;
		vd = virtio_pci_vdev(vm->devices[k]);
		if (!vd || vd->ops->device_id != VIRTIO_ID_BLOCK || !vd->priv)
			return NULL;
		*b = vd->priv;
		return vm->devices[k];
	}
	return NULL;
}

int devices_add_vmgenid(const struct device_host *h, bool new_on_restore, struct error *e)
{
	int added = acpi_add_vmgenid(h->mem, ACPI_VMGENID_GUID, ACPI_VMGENID_GSI, e);

	if (added < 0)
		return -1;
	return vmgenid_create(h, ACPI_VMGENID_GUID, ACPI_VMGENID_GSI, added == 0, new_on_restore,
			      e);
}

static int create_vmgenid(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->vmgenid ? devices_add_vmgenid(h, c->vmgenid_new, e) : 0;
}

/* Not in a firmware boot: the firmware's tables have no hotplug slots. */
static int create_pci_hotplug(const struct device_host *h, const struct vm_config *c, struct error *e)
{
	return c->firmware ? 0 : hotplug_create(h, e);
}

const struct device_type device_types[] = {
	{ "serial",  "16550A UART on COM1 (0x3f8, IRQ 4): the console", create_serial },
	{ "i8042",   "keyboard controller (0x60, 0x64): only the reset line",  create_i8042 },
	{ "rtc",     "MC146818 CMOS real-time clock (0x70, 0x71), host time",   create_rtc },
	{ "acpi-pm", "ACPI PM1a event/control blocks (0x600-0x605): power off", create_acpi_pm },
	{ "testdev", "test/exit device (0xf4 exit code, 0xf5 report lines)",    create_testdev },
	{ "legacy",  "POST port 0x80, I/O delay 0xed, fast A20/reset 0x92",      create_legacy },
	{ "fw_cfg",  "firmware boot only: fw_cfg (0x510-0x51b), debug port 0x402", create_fw_cfg },
	{ "virtio-rng", "virtio entropy source on PCI (--rng), rate-capped",      create_rng },
	{ "virtio-net", "virtio network card per --net, on a TAP or a frame fd",   create_nets },
	{ "virtio-vsock", "virtio socket (--vsock): host side on Unix sockets",    create_vsock },
	{ "virtio-blk", "virtio block disks on PCI (--disk): raw or qcow2, I/O thread", create_disks },
	{ "virtio-console", "virtio console port on PCI (--virtio-console file:PATH)", create_vconsole },
	{ "virtio-balloon", "virtio memory balloon on PCI (--balloon): stats, free page reporting", create_balloon },
	{ "vhost-user-fs", "shared file tree per --fs: virtio-fs served by virtiofsd (vhost-user)", create_fs },
	{ "vmgenid", "ACPI VM generation ID (--vmgenid): new on every clone, GSI 23", create_vmgenid },
	{ "pci-hotplug", "ACPI PCI hotplug registers (0xae00-0xae0b, GSI 22): disk-add, disk-remove", create_pci_hotplug },
	{ NULL, NULL, NULL },
};

int devices_create_all(const struct device_host *host, const struct vm_config *cfg,
		       struct error *e)
{
	for (const struct device_type *t = device_types; t->type; t++)
		if (t->create(host, cfg, e))
			return error_prefix(e, "device %s", t->type);
	return 0;
}
