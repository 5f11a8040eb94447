/*
 * vmgenid.h - the ACPI Virtual Machine Generation ID device (vmgenid.c).
 */
#ifndef SHOAL_DEVICES_VMGENID_H
#define SHOAL_DEVICES_VMGENID_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "devices/device_host.h"

struct device;

#define VMGENID_SIZE 16

/* vmgenid0 on `host`: the ID at guest address `gpa`, the notification on
 * `gsi`, as the SSDT the caller added says (boot/acpi.h; vmm/devices.c
 * adds it: the device layer does not write ACPI tables).  `fresh`: the
 * tables were just written (a new VM), so a new random ID is written too;
 * else they were in the guest's memory already (a restored VM) and the
 * saved ID comes with the device's state.  With `new_on_restore` (a
 * clone), a restore gives the guest a new random ID instead of the saved
 * one and notifies it.  0, or -1 with `e`. */
int vmgenid_create(const struct device_host *host, uint64_t gpa, unsigned gsi, bool fresh,
		   bool new_on_restore, struct error *e);

/* The ID the guest reads now, and its guest-physical address. */
void vmgenid_get(struct device *d, uint8_t id[VMGENID_SIZE], uint64_t *gpa);

/* The ID as the spec's GUID text, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx":
 * the first three fields little-endian, as the guest's GUID structure
 * holds them. */
void vmgenid_format(const uint8_t id[VMGENID_SIZE], char out[37]);

#endif
