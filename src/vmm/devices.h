/*
 * devices.h - the builder of a VM's devices (devices.c): the table of
 * built-in device types, each entry reading its part of the VM's
 * configuration and calling that device's constructor on a device host.
 *
 * Devices never see struct vm_config; this is where it is taken apart.
 */
#ifndef SHOAL_VMM_DEVICES_H
#define SHOAL_VMM_DEVICES_H

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
int devices_create_all(const struct device_host *host, const struct vm_config *cfg,
		       struct error *e);

#endif
