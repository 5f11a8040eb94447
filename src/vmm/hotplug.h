/*
 * hotplug.h - disks added to and removed from a running VM (hotplug.c):
 * the control socket's disk-add, disk-remove and disk-list.
 */
#ifndef SHOAL_VMM_HOTPLUG_H
#define SHOAL_VMM_HOTPLUG_H

#include "base/error.h"
#include "devices/device_host.h"

struct vm;
struct json_t;

#define HOTPLUG_MAX_DISKS 8    /* hot-added disks at once */

/* The hotplug register block (devices/pci_hotplug.c) on the VMM's device
 * host `h`, for the slots the DSDT declares (boot/acpi.h).  0, or -1 with
 * `e`. */
int hotplug_create(const struct device_host *h, struct error *e);

/* The reply to control command `cmd` when it is one of ours (disk-add,
 * disk-remove, disk-list), else NULL.  Event loop thread. */
struct json_t *hotplug_command(struct vm *vm, const char *cmd, struct json_t *req);

/* Why `cmd` may not run now, or NULL: a snapshot or a migration of a VM
 * with a hot-added disk is refused (its device list would not match the
 * VM a restore builds from the configuration). */
const char *hotplug_refuses(struct vm *vm, const char *cmd);

#endif
