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

/* Find and set up the daemon's part of the tree (h->cgroup_dir), or note
 * why cgroups are off (h->cgroup_off, logged once). */
void host_cgroup_init(struct host *h);
/* Make the VM's cgroup afresh with its limits; the open cgroup.procs to
 * write "0" into from the child (>= 0), -2 when cgroups are off and the
 * spec sets no limits, or -1 with e. */
int host_cgroup_prepare(struct host *h, const char *name, const struct host_limits *l,
			uint64_t guest_memory, struct api_err *e);
/* Did the cgroup's OOM killer end the VM's VMM?  Then `why` says so. */
bool host_cgroup_oom_killed(const struct host *h, const char *name, char *why, size_t size);
/* The VM's cgroup directory ("" when off). */
void host_cgroup_path(const struct host *h, const char *name, char *out, size_t size);
/* Remove the VM's cgroup (it holds no process). */
void host_cgroup_remove(const struct host *h, const char *name);

#endif
