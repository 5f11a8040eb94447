/*
 * spec.h - the VM spec that shoald accepts: the `shoal run --config` JSON
 * object plus the daemon's own keys.
 *
 *   { "name": "web1", "restart": "on-failure",          <- daemon keys
 *     "kernel": "/srv/vmlinux", "cpus": 2, "memory": "256M", ... }
 *
 * The daemon keys are taken out and the rest goes through the VMM's own
 * reader and validator (vmm/config.h), on the parsed JSON object: one
 * validator, one set of defaults, and the body is parsed once.
 * On top of those, the daemon checks what only a long-lived service must:
 * paths are absolute (the daemon's working directory is not the client's),
 * every file the spec names (and each disk's whole backing chain) lies
 * beneath the --allow-dir directories (403 otherwise, nothing opened),
 * console files are plain names inside the VM's own directory, TAP file
 * descriptors are not the client's to name, the command line fits the
 * boot protocol, and memory fits the host.
 *
 * This is a parser of untrusted bytes (an API request body) and has a
 * libFuzzer target, fuzz/fuzz_api_spec.c.
 */
#ifndef SHOAL_HOST_SPEC_H
#define SHOAL_HOST_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "host/host.h"
#include "vmm/config.h"

struct host_spec {
	char name[HOST_NAME_MAX_LEN + 1];
	enum restart_policy restart;
	struct host_limits limits;  /* "limits": the VM's cgroup (cgroup.c) */
	/* "memory_shares", "memory_min", "memory_max": the memory manager's
	 * (memmgr.c); 0 each: not set (1000 shares, 0, the VM's memory) */
	struct { uint32_t shares; uint64_t min, max; } mem;
	struct vm_config cfg;       /* the VMM's settings, defaults filled in */
	char *spec_json;            /* the canonical spec (stored): see below */
};

/* Parse and check a spec.  `check_host`: also check files and host memory
 * (off in the fuzzer).  0, or -1 with a 400 naming the field in `e`.
 *
 * s->spec_json is the canonical form: "name" and "restart", then
 * vm_config_to_json(&s->cfg), compact.  It is what the daemon stores and
 * what it parses again at each start (where the host checks run again);
 * parsing it gives the same spec back.  The VMM's config.json is rendered
 * from s->cfg, never from text. */
int host_spec_parse(const char *text, size_t len, bool check_host,
		    struct host_spec *s, struct api_err *e);
void host_spec_free(struct host_spec *s);

/* The daemon's STATE_DIR/vms, set once at its start: a disk image the
 * daemon made in a VM's own directory there (VMS_DIR/NAME/disk-N.raw or
 * .qcow2, a --with-disks migration) is allowed in that VM's spec although
 * it is not beneath --allow-dir (spec.c).  Not set (no such exception)
 * when the --allow-dir count leaves no room in a VMM's "confine". */
void host_spec_set_vms_dir(const char *dir, int nallow_dirs);

/* Is `name` a valid VM name? */
bool host_name_valid(const char *name);

/* The console file a VM's serial console is written to, a name inside its
 * directory ("console.log" for the default "stdio"), or NULL for "none". */
const char *host_console_name(const struct vm_config *c);

#endif
