/*
 * devconfig.h - the configuration each configurable device is built from.
 *
 * These structs are what the VMM's builder (src/vmm/devices.c) hands a
 * device constructor: one disk, one network card.  They belong to the
 * devices, not to the VM: vmm/config.h includes this header and keeps an
 * array of each in struct vm_config, and the vhost-user back end fills one
 * alone.  Strings are owned by whoever owns the struct (vm_config_free for
 * the VM's); a device copies what it keeps.
 *
 * The values come from the user: a device checks them again as it opens
 * what they name (a path, a TAP) and refuses what it cannot serve.
 */
#ifndef SHOAL_DEVICES_DEVCONFIG_H
#define SHOAL_DEVICES_DEVCONFIG_H

#include <stdbool.h>
#include <stdint.h>

/* A virtio device's interface: both (transitional), legacy only, modern only. */
enum vm_virtio_mode { VM_VIRTIO_TRANSITIONAL = 0, VM_VIRTIO_LEGACY, VM_VIRTIO_MODERN };

struct vm_disk {
	char *path;                    /* image file */
	bool readonly;
	bool direct;                   /* O_DIRECT on the host: no page cache */
	char *serial;                  /* VIRTIO_BLK_T_GET_ID string, or NULL */
	int queues;                    /* 0: 1 */
	enum vm_virtio_mode mode;
	uint64_t cache_bytes;           /* qcow2 L2 + refcount cache, 0: default */
	char *pristine;                /* pristine-block cache directory, or NULL;
	                                  flags only, not in JSON (block/pristine.c) */
	uint64_t pristine_bytes;        /* its bound per image, 0: default */
	bool given_fd;                 /* the image is open in fd (not taken; path only
	                                  names it): a hot-added disk shoald opened for a
	                                  VMM that may not open paths.  Not in JSON */
	int fd;
};

struct vm_net {
	char *tap;                     /* TAP interface name, or NULL with fd */
	int fd;                        /* an open TAP fd passed in, -1 none */
	char *mac;                     /* "52:54:00:12:34:56" or NULL: generated */
	bool new_mac;                  /* a restored clone's new MAC: the device
	                                  keeps it over the snapshot's (not JSON) */
	int queues;                    /* queue pairs, 0: 1 */
	enum vm_virtio_mode mode;
};

#endif
