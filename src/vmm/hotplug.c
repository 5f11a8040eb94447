/*
 * hotplug.c - virtio-blk disks plugged into and unplugged from a running
 * VM through ACPI PCI hotplug (docs/devices.md, "Disk hotplug").
 *
 * The pieces: the DSDT declares every slot of the root bus as a hotplug
 * slot and a Generic Event Device (src/boot/acpi.c); the register block the
 * AML reads and writes is devices/pci_hotplug.c; this file is the VMM's
 * side, on the control socket:
 *
 *   {"cmd": "disk-add", "path": P, "readonly": B, "serial": S}
 *       opens P as virtio-blk<N> (N the first free index past the VM's
 *       configured disks), puts it in the first free PCI slot with its
 *       decoding off (the guest assigns its BARs as for any hot-added
 *       device), and tells the guest: {"ok": true, "id": "virtio-blkN",
 *       "slot": S}.  The guest's driver binds when it has scanned the slot.
 *       A descriptor sent with the request (SCM_RIGHTS) is the image, open
 *       already, and P only names it: shoald opens the file itself and hands
 *       it over, for a jailed VMM opens no paths.
 *   {"cmd": "disk-remove", "id": ID}
 *       asks the guest to give the disk back (an eject request) and answers
 *       at once with "state": "removing".  The device goes only when the
 *       guest runs the slot's _EJ0, that is once its driver let go; until
 *       then the disk stays fully working, and disk-list says "removing".
 *       Waiting for that, with a deadline, is the client's part (`shoal
 *       disk remove --timeout`): a guest that never answers keeps the disk.
 *   {"cmd": "disk-list"}
 *       every disk: the configured ones and the hot-added ones.
 *
 * Invariants: only disks added here are ever removed (an eject of any
 * other slot, which a guest may write, is logged and ignored: its device
 * stays where it is); the device list (vm->devices) changes on the event
 * loop thread only, where the control socket and the other readers of the
 * list run; a disk is torn down only after pci_remove_device took it off
 * the bus, so no vCPU can reach it while it is freed.  A snapshot or a
 * migration is refused while a hot-added disk is in the VM (a restore
 * builds its devices from the configuration, in which the disk is not, and
 * in a different slot order), and disk-add and disk-remove are refused
 * while one is in progress, and while the VM is paused.
 */
#include "vmm/hotplug.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "boot/acpi.h"
#include "devices/device.h"
#include "devices/pci.h"
#include "devices/pci_hotplug.h"
#include "vmm/control.h"
#include "vmm/vm.h"

#define SERIAL_MAX 20   /* VIRTIO_BLK_ID_BYTES */

struct hp_disk {
	bool used;
	bool removing;                 /* the guest was asked to give it back */
	int slot;
	struct device *dev;
	char id[32];                   /* the device's name: "virtio-blk<N>" */
	char *path;
	char *serial;
	bool readonly;
};

struct hotplug {
	struct vm *vm;
	struct hp_disk disks[HOTPLUG_MAX_DISKS];
};

static struct hotplug *hotplug_of(struct vm *vm)
{
	struct device *d = vm_find_device(vm, "pci-hotplug0");

	return d ? pci_hotplug_opaque(d) : NULL;
}

static json_t *hp_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *hp_error(const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* Take `d` out of the VM's device list and free it (event loop thread). */
static void hp_forget_device(struct vm *vm, struct device *d)
{
	for (int i = 0; i < vm->ndevices; i++)
		if (vm->devices[i] == d) {
			memmove(&vm->devices[i], &vm->devices[i + 1],
				(size_t)(vm->ndevices - i - 1) * sizeof(vm->devices[0]));
			vm->devices[--vm->ndevices] = NULL;
			break;
		}
	device_free(d);
}

/* Take the device named `name` off the bus and out of the VM, if it is
 * there (a failed disk-add may leave it half built). */
static void hp_drop_named(struct vm *vm, const char *name)
{
	struct device *d = vm_find_device(vm, name);
	int slot;

	if (!d)
		return;
	slot = pci_device_slot(vm->host.pci, d);
	if (slot > 0)
		pci_remove_device(vm->host.pci, slot);
	hp_forget_device(vm, d);
}

static void hp_disk_clear(struct hp_disk *k)
{
	free(k->path);
	free(k->serial);
	memset(k, 0, sizeof(*k));
}

/* The guest ran slot `slot`'s _EJ0 (event loop thread). */
static void hp_on_eject(void *opaque, int slot)
{
	struct hotplug *hp = opaque;

	for (int i = 0; i < HOTPLUG_MAX_DISKS; i++) {
		struct hp_disk *k = &hp->disks[i];

		if (!k->used || k->slot != slot)
			continue;
		if (pci_remove_device(hp->vm->host.pci, slot) != k->dev) {
			log_warn("%s: slot %d holds another device; not removed", k->id, slot);
			return;
		}
		log_info("%s: the guest released it (slot %d)%s; removed", k->id, slot,
			 k->removing ? "" : ", unasked");
		hp_forget_device(hp->vm, k->dev);
		hp_disk_clear(k);
		return;
	}
	log_info("pci-hotplug0: the guest ejected slot %d, which holds no hot-added disk; "
		 "ignored (its device stays)", slot);
}

static void hp_release(void *opaque)
{
	struct hotplug *hp = opaque;

	/* The devices themselves are in vm->devices, which vm_destroy frees. */
	for (int i = 0; i < HOTPLUG_MAX_DISKS; i++) {
		free(hp->disks[i].path);
		free(hp->disks[i].serial);
	}
	free(hp);
}

int hotplug_create(const struct device_host *h, struct error *e)
{
	struct hotplug *hp = calloc(1, sizeof(*hp));
	struct device *d;

	if (!hp)
		return error_set(e, EXIT_HOST, "out of memory");
	hp->vm = h->opaque;
	return pci_hotplug_create(h, ACPI_PCIHP_PORT, ACPI_PCIHP_GSI, hp_on_eject, hp_release, hp,
				  &d, e);
}

/* A snapshot or migration in progress, by what their status commands say
 * (state/ adds them): the device list must hold still for them. */
static const char *hp_busy(struct vm *vm)
{
	for (int i = 0; i < vm->ncommands; i++) {
		const char *name = vm->commands[i].name, *state;
		json_t *req, *rep;
		bool busy;

		if (strcmp(name, "snapshot-status") && strcmp(name, "migrate-status"))
			continue;
		req = json_pack("{s:s}", "cmd", name);
		rep = vm->commands[i].fn(vm, req, vm->commands[i].opaque);
		state = json_string_value(json_object_get(rep, "state"));
		busy = state && (!strcmp(name, "snapshot-status") ? !strcmp(state, "writing")
				 : strcmp(state, "none") && strcmp(state, "done") &&
				   strcmp(state, "failed") && strcmp(state, "cancelled"));
		json_decref(req);
		json_decref(rep);
		if (busy)
			return !strcmp(name, "snapshot-status") ? "a live snapshot is being written"
								 : "a migration is in progress";
	}
	return NULL;
}

const char *hotplug_refuses(struct vm *vm, const char *cmd)
{
	struct hotplug *hp;

	if (strcmp(cmd, "snapshot") && strcmp(cmd, "migrate"))
		return NULL;
	hp = hotplug_of(vm);
	for (int i = 0; hp && i < HOTPLUG_MAX_DISKS; i++)
		if (hp->disks[i].used)
			return !strcmp(cmd, "snapshot")
			       ? "snapshot: the VM has a hot-added disk (disk-list); a snapshot of it "
				 "cannot be restored, so remove the disk first (disk-remove)"
			       : "migrate: the VM has a hot-added disk (disk-list); the destination "
				 "cannot have it, so remove the disk first (disk-remove)";
	return NULL;
}

static json_t *hp_disk_add(struct vm *vm, struct hotplug *hp, json_t *req)
{
	json_t *jpath = json_object_get(req, "path"), *jro = json_object_get(req, "readonly");
	json_t *jserial = json_object_get(req, "serial");
	const char *path = json_string_value(jpath), *serial = json_string_value(jserial);
	struct vm_disk disk = { 0 };
	struct hp_disk *k = NULL;
	struct device *d;
	struct error e = { 0 };
	char name[32];
	uint16_t off = 0;
	int slot, rc;

	if (!path || !*path)
		return hp_error("%s", "disk-add: \"path\" must be a non-empty string");
	if (jro && !json_is_boolean(jro))
		return hp_error("%s", "disk-add: \"readonly\" must be true or false");
	if (jserial && !json_is_null(jserial) && (!serial || strlen(serial) > SERIAL_MAX))
		return hp_error("disk-add: \"serial\" must be a string of at most %d bytes", SERIAL_MAX);
	for (int i = 0; i < HOTPLUG_MAX_DISKS && !k; i++)
		if (!hp->disks[i].used)
			k = &hp->disks[i];
	if (!k)
		return hp_error("disk-add: %s: the VM has %d hot-added disks already, the most it "
				"takes; remove one first", path, HOTPLUG_MAX_DISKS);
	for (int n = vm->cfg.ndisks;; n++) {
		snprintf(name, sizeof(name), "virtio-blk%d", n);
		if (!vm_find_device(vm, name))
			break;
	}
	disk.path = (char *)path;
	disk.readonly = json_is_true(jro);
	disk.serial = (char *)serial;
	disk.fd = control_take_fd();            /* shoald's open image, or -1 */
	disk.given_fd = disk.fd >= 0;
	rc = virtio_blk_create(&vm->host, &disk, atoi(name + strlen("virtio-blk")), &e);
	if (disk.given_fd)
		close(disk.fd);                 /* the block layer keeps its own */
	if (rc) {
		hp_drop_named(vm, name);
		return hp_error("disk-add: %s: %s", path, e.msg);
	}
	d = vm_find_device(vm, name);
	slot = d ? pci_device_slot(vm->host.pci, d) : -1;
	if (slot < 1) {
		hp_drop_named(vm, name);
		return hp_error("disk-add: %s: the new device is on no PCI slot", path);
	}
	/* The guest assigns a hot-added device's BARs itself: no decoding
	 * where we put them until it has (they might shadow a BAR it moved). */
	pci_config_write(vm->host.pci, slot, PCI_COMMAND, &off, 2);
	*k = (struct hp_disk){ .used = true, .slot = slot, .dev = d, .readonly = disk.readonly,
			       .path = strdup(path), .serial = serial ? strdup(serial) : NULL };
	snprintf(k->id, sizeof(k->id), "%s", name);
	pci_hotplug_plug(vm_find_device(vm, "pci-hotplug0"), slot);
	log_info("%s: %s hot-added in PCI slot %d%s", name, path, slot,
		 disk.readonly ? ", read-only" : "");
	return json_pack("{s:b, s:s, s:i}", "ok", 1, "id", name, "slot", slot);
}

static json_t *hp_disk_remove(struct vm *vm, struct hotplug *hp, json_t *req)
{
	const char *id = json_string_value(json_object_get(req, "id"));

	if (!id || !*id)
		return hp_error("%s", "disk-remove: \"id\" must be a disk's id (disk-list)");
	for (int i = 0; i < HOTPLUG_MAX_DISKS; i++) {
		struct hp_disk *k = &hp->disks[i];

		if (!k->used || strcmp(k->id, id))
			continue;
		k->removing = true;       /* asked again: the guest is told again */
		pci_hotplug_unplug(vm_find_device(vm, "pci-hotplug0"), k->slot);
		log_info("%s: the guest is asked to release it (slot %d)", k->id, k->slot);
		return json_pack("{s:b, s:s, s:s, s:i}", "ok", 1, "id", k->id, "state", "removing",
				 "slot", k->slot);
	}
	if (vm_find_device(vm, id) && !strncmp(id, "virtio-blk", 10))
		return hp_error("disk-remove: %s: it was not hot-added (it is in the VM's "
				"configuration); only disks added with disk-add can be removed", id);
	return hp_error("disk-remove: %s: no such disk in this VM (disk-list shows them)", id);
}

static json_t *hp_disk_list(struct vm *vm, struct hotplug *hp)
{
	json_t *arr = json_array();

	for (int i = 0; i < vm->cfg.ndisks; i++) {
		char id[32];

		json_t *o;

		snprintf(id, sizeof(id), "virtio-blk%d", i);
		o = json_pack("{s:s, s:s, s:b, s:b, s:s}", "id", id,
			"path", vm->cfg.disks[i].path ? vm->cfg.disks[i].path : "",
			"readonly", vm->cfg.disks[i].readonly, "hotplugged", 0, "state", "attached");
		if (vm->cfg.disks[i].serial)
			json_object_set_new(o, "serial", json_string(vm->cfg.disks[i].serial));
		json_array_append_new(arr, o);
	}
	for (int i = 0; hp && i < HOTPLUG_MAX_DISKS; i++) {
		struct hp_disk *k = &hp->disks[i];
		json_t *o;

		if (!k->used)
			continue;
		o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:i}", "id", k->id, "path", k->path,
			      "readonly", k->readonly, "hotplugged", 1,
			      "state", k->removing ? "removing" : "attached", "slot", k->slot);
		if (k->serial)
			json_object_set_new(o, "serial", json_string(k->serial));
		json_array_append_new(arr, o);
	}
	return json_pack("{s:b, s:o}", "ok", 1, "disks", arr);
}

json_t *hotplug_command(struct vm *vm, const char *cmd, json_t *req)
{
	struct hotplug *hp;
	const char *busy;

	if (strcmp(cmd, "disk-add") && strcmp(cmd, "disk-remove") && strcmp(cmd, "disk-list"))
		return NULL;
	hp = hotplug_of(vm);
	if (!strcmp(cmd, "disk-list"))
		return hp_disk_list(vm, hp);
	if (!hp)
		return hp_error("%s: this VM has no ACPI hotplug (a firmware boot brings the "
				"firmware's ACPI tables, which have no Shoal hotplug slots)", cmd);
	/* A paused guest cannot see a disk come or go; and a migration that
	 * ended or is ending has the VM paused (its status must not be asked
	 * for then: the first look at "done" lets the VMM exit). */
	if (atomic_load(&vm->stopping))
		return hp_error("%s: the VM is stopping", cmd);
	if (vm_is_paused(vm))
		return hp_error("%s: the VM is paused; resume it first (the guest must see the "
				"disk come or go)", cmd);
	busy = hp_busy(vm);
	if (busy)
		return hp_error("%s: %s; try again when it has ended", cmd, busy);
	if (!strcmp(cmd, "disk-add"))
		return hp_disk_add(vm, hp, req);
	return hp_disk_remove(vm, hp, req);
}
