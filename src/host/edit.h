/*
 * edit.h - changing a VM the daemon keeps (edit.c): its spec while it is
 * not running, reboot and reset while it runs.  Each returns 0, or -1 with
 * the API error in `e`.
 */
#ifndef SHOAL_HOST_EDIT_H
#define SHOAL_HOST_EDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "host/host.h"

/* PUT (merge false: body is the whole spec) or PATCH (merge true: an RFC
 * 7396 merge patch on the stored spec); the VM must be created or exited. */
int host_vm_edit(struct host *h, const char *name, const char *body, size_t len, bool merge,
		 struct api_err *e);
/* Append the disk object in `body` to the spec's "disks". */
int host_vm_disk_add(struct host *h, const char *name, const char *body, size_t len,
		     struct api_err *e);
/* Remove the disk whose "path" is `path`. */
int host_vm_disk_remove(struct host *h, const char *name, const char *path, struct api_err *e);
/* Stop (graceful with timeout_s, <0 the default; or forced) and start again. */
int host_vm_reboot(struct host *h, const char *name, bool force, int timeout_s,
		   struct api_err *e);

#endif
