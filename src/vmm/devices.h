/*
 * devices.h - the builder of a VM's devices (devices.c): the table of
 * built-in device types, each entry reading its part of the VM's
 * configuration and calling that device's constructor on a device host.
 *
 * Devices never see struct vm_config; this is where it is taken apart.
 */
#ifndef SHOAL_VMM_DEVICES_H
#define SHOAL_VMM_DEVICES_H

#include <stdbool.h>

#include "base/error.h"

struct device_host;
struct vm_config;

struct device_type {
	const char *type;
	const char *what;                 /* one line for --help and docs */
	/* Create and attach this type's instances for `cfg`; 0 or -1 with `e`. */
	int (*create)(const struct device_host *host, const struct vm_config *cfg,
		      struct error *e);
};

extern const struct device_type device_types[];

/* Create every built-in device `cfg` asks for on `host`; 0 or -1 with `e`. */
/* The VM generation ID device (devices/vmgenid.c) with its SSDT added to
 * the ACPI tables boot_load wrote (boot/acpi.h; nothing is added where a
 * restored VM's memory has it already).  0, or -1 with `e` (EXIT_USAGE:
 * the guest has no ACPI tables of Shoal's, as in a firmware boot). */
int devices_add_vmgenid(const struct device_host *h, bool new_on_restore, struct error *e);

/* Disk i's device ("virtio-blk<i>") and its virtio-blk model into *b, or
 * NULL when the VM has no such disk (snapshots and migration reach a
 * disk's image through it). */
struct vm;
struct vblk;
struct device *vm_disk_device(struct vm *vm, int i, struct vblk **b);

int devices_create_all(const struct device_host *host, const struct vm_config *cfg,
		       struct error *e);

#endif
