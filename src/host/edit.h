/*
 * edit.h - changing a VM the daemon keeps (edit.c): its spec while it is
 * not running, reboot and reset while it runs.  Each returns 0, or -1 with
 * the API error in `e`.
 */
#ifndef SHOAL_HOST_EDIT_H
#define SHOAL_HOST_EDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "host/host.h"

/* PUT (merge false: body is the whole spec) or PATCH (merge true: an RFC
 * 7396 merge patch on the stored spec); the VM must be created or exited. */
int host_vm_edit(struct host *h, const char *name, const char *body, size_t len, bool merge,
		 struct api_err *e);
/* Append the disk object in `body` to the spec's "disks"; a running VM
 * gets it hot-added first (disk_hotplug.c). */
int host_vm_disk_add(struct host *h, const char *name, const char *body, size_t len,
		     struct api_err *e);
/* Remove the disk whose "path" is `path`, or (path NULL) whose id (its
 * "serial"; on a running VM the VMM's virtio-blkN too) is `id`; a running
 * VM's guest is given timeout_s to release it (disk_hotplug.c). */
int host_vm_disk_remove(struct host *h, const char *name, const char *path, const char *id,
			int timeout_s, struct api_err *e);

/* ---- disk_hotplug.c: the running half of the two above ---- */
bool host_vm_is_running(struct host *h, const char *name);   /* running or paused */
/* Hot-add the disk object `disk` (taken) to running VM NAME and store it. */
int host_vm_disk_hotadd(struct host *h, const char *name, json_t *disk, struct api_err *e);
/* Hot-remove the disk `id` (an id, a path or virtio-blkN) and store that. */
int host_vm_disk_hotremove(struct host *h, const char *name, const char *id, int timeout_s,
			   struct api_err *e);
/* Stop (graceful with timeout_s, <0 the default; or forced) and start again. */
int host_vm_reboot(struct host *h, const char *name, bool force, int timeout_s,
		   struct api_err *e);

#endif
