/*
 * cgroup.h - each VM in a cgroup v2 of its own, with its spec's limits
 * (cgroup.c has the layout and the rules).
 */
#ifndef SHOAL_HOST_CGROUP_H
#define SHOAL_HOST_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host/host.h"

/* Find and set up the daemon's part of the tree (h->cgroup_dir) and start
 * the limit-event watcher, or note why cgroups are off (h->cgroup_off,
 * logged once). */
void host_cgroup_init(struct host *h);
/* Make the VM's cgroup afresh with its limits; the open cgroup.procs to
 * write "0" into from the child (>= 0), -2 when cgroups are off and the
 * spec sets no limits, or -1 with e. */
struct vm_config;
int host_cgroup_prepare(struct host *h, const char *name, const struct host_limits *l,
			const struct vm_config *c, struct api_err *e);
/* The whole disk under `path` (a file: its file system's device; a block
 * device: itself), for io.max: 0, or -1 with `why` (no block device). */
int host_cgroup_disk_device(const char *path, unsigned *maj, unsigned *min, char *why,
			    size_t size);
/* Did the cgroup's OOM killer end the VM's VMM?  Then `why` says so. */
bool host_cgroup_oom_killed(const struct host *h, const char *name, char *why, size_t size);
/* The VM's cgroup directory ("" when off). */
void host_cgroup_path(const struct host *h, const char *name, char *out, size_t size);
/* Remove the VM's cgroup (it holds no process). */
void host_cgroup_remove(const struct host *h, const char *name);
/* Stop the limit-event watcher host_cgroup_init started (host_close). */
void host_cgroup_stop(struct host *h);

#endif
