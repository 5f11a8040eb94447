/*
 * config.h - what a VM is made of: the one internal description of a VM.
 *
 * Design rule: one internal command set.  `shoal run` flags, the JSON file
 * of `--config vm.json` and (later) the HTTP API all fill this same struct;
 * docs/cli.md describes its JSON shape:
 *
 *   { "kernel": "build/shoal-guest", "initrd": null, "cmdline": "info",
 *     "cpus": 2, "memory": "256M", "console": "stdio",
 *     "cpu_template": "host", "timeout": 0,
 *     "disks": [ { "path": "disk.img", "readonly": false, "serial": "d0",
 *                  "queues": 1, "mode": "transitional" } ],
 *     "nets": [ { "tap": "tap0", "mac": "52:54:00:12:34:56", "queues": 1 } ],
 *     "rng": true, "vsock": { "cid": 3, "socket": "/run/v.sock" },
 *     "virtio_console": "file:/tmp/hvc0.log", "confine": ["/srv/vm"],
 *     "vmgenid": true,
 *     "cloud_init": { "user_data": "/srv/u", "meta_data": "/srv/m" } }
 *
 * Strings are owned (malloc'd) by the struct; vm_config_free releases them.
 */
#ifndef SHOAL_VMM_CONFIG_H
#define SHOAL_VMM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "base/error.h"
#include "base/path_beneath.h"
#include "boot/cidata.h"          /* struct cidata_files */
#include "devices/devconfig.h"    /* struct vm_disk, struct vm_net */
#include "devices/vhost_user_fs.h" /* struct vm_fs (--fs) */

enum console_kind { CONSOLE_STDIO = 0, CONSOLE_FILE, CONSOLE_NONE };

#define VM_MAX_DISKS 16
#define VM_MAX_NETS  8

struct vm_config {
	char *kernel;                  /* path, required unless firmware */
	char *firmware;                /* a BIOS image to boot instead (docs/boot.md) */
	char *initrd;                  /* path or NULL */
	char *cmdline;                 /* or NULL */
	int cpus;                      /* 1..GUEST_MAX_VCPUS */
	uint64_t memory;               /* bytes */
	enum console_kind console;
	char *console_path;            /* CONSOLE_FILE only */
	char *cpu_template;            /* NULL means "host" */
	unsigned timeout_s;            /* 0: none; else stop the guest after it */

	int ndisks;
	struct vm_disk disks[VM_MAX_DISKS];
	int nnets;
	struct vm_net nets[VM_MAX_NETS];
	bool rng;                      /* virtio-rng */
	uint32_t rng_rate;             /* bytes per second cap, 0: default */
	bool balloon;                  /* virtio-balloon */
	uint32_t balloon_stats_s;      /* its statistics period, 0: default */
	uint32_t zero_scan;            /* --zero-scan: zero-page scanner, pages/s, 0: none
	                                  (mem/zero_blocks.h; JSON "zero_scan": N | "off") */
	bool zero_off;                 /* --zero-scan off: no zero-page layer at all */
	bool zero_on;                  /* --zero-scan N (0 too): the layer is wanted */
	bool mem_recovery;             /* JSON "mem_recovery": true, as --mem-recovery */
	uint32_t vsock_cid;            /* 0: no virtio-vsock */
	char *vsock_socket;            /* host-side Unix socket path */
	char *vconsole;                /* virtio-console port: "file:PATH", or NULL */
	bool vmgenid;                  /* the ACPI VM generation ID (devices/vmgenid.c) */
	bool vmgenid_new;              /* a restored clone: a new ID (not in JSON) */
	int nfs;                       /* --fs: vhost-user-fs devices ("fs") */
	struct vm_fs fs[VM_MAX_FS];
	struct cidata_files cloud_init; /* a NoCloud seed disk from these files
	                                  (shoal run builds it; boot/cidata.h) */
	int nconfine;                  /* "confine": open named files only beneath */
	char *confine[PATH_MAX_ROOTS]; /* these directories (base/path_beneath.h) */
};

/* Parse "PATH[,readonly][,direct][,serial=ID][,queues=N][,cache=SIZE][,mode=legacy|modern|transitional]"
 * and append it.  0 or -1 with `e`. */
int vm_config_add_disk(struct vm_config *c, const char *spec, struct error *e);

/* Parse "tap=NAME|fd=N[,mac=XX:..][,queues=N][,mode=...]" and append it. */
int vm_config_add_net(struct vm_config *c, const char *spec, struct error *e);

/* Parse "tag=TAG,socket=PATH" (--fs) and append it. */
int vm_config_add_fs(struct vm_config *c, const char *spec, struct error *e);

/* Parse "cid=N,socket=PATH". */
int vm_config_set_vsock(struct vm_config *c, const char *spec, struct error *e);

#define VM_CONFIG_DEFAULT_CPUS   1
#define VM_CONFIG_DEFAULT_MEMORY (256ULL << 20)

void vm_config_init(struct vm_config *c);
void vm_config_free(struct vm_config *c);

/* Parse "256M", "2G", "1048576", "512K", "1T" (binary units). 0 or -1. */

/* Parse a console spec: "stdio", "none" or "file:PATH". 0 or -1 with e. */
int vm_config_set_console(struct vm_config *c, const char *spec, struct error *e);

/* The BIOS `shoal run --disk IMAGE` boots when no --kernel is given:
 * Debian's SeaBIOS, as QEMU's default PC machine uses. */
#define VM_CONFIG_DEFAULT_FIRMWARE "/usr/share/seabios/bios-256k.bin"

/* Check ranges and required fields; 0 or -1 with `e` (EXIT_USAGE). */
int vm_config_validate(const struct vm_config *c, struct error *e);

/* Merge a JSON object into `c`: keys present override.  Unknown keys and
 * wrong types are errors naming the key.  `name` is used in messages.  The
 * object is only read.  0 or -1 with `e` (EXIT_USAGE). */
int vm_config_from_json(struct vm_config *c, const char *name, json_t *root,
			struct error *e);
/* The same from JSON text (duplicate keys refused), and from a file. */
int vm_config_from_json_text(struct vm_config *c, const char *name, const char *text,
			     struct error *e);
int vm_config_load_file(struct vm_config *c, const char *path, struct error *e);

/* Deep-copy `src` into `dst` (strings duplicated); vm_config_free on both. */
void vm_config_copy(struct vm_config *dst, const struct vm_config *src);

/* Render as a new JSON object (the caller's reference), the same shape
 * vm_config_from_json reads; NULL only when out of memory. */
json_t *vm_config_to_json(const struct vm_config *c);
/* The same as indented text (malloc'd), for files and --print-config. */
char *vm_config_to_json_text(const struct vm_config *c);

#endif
