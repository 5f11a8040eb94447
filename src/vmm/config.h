/*
 * config.h - what a VM is made of: the one internal description of a VM.
 *
 * Design rule: one internal command set.  `shoal run` flags, the JSON file
 * of `--config vm.json` and (later) the HTTP API all fill this same struct;
 * docs/cli.md describes its JSON shape:
 *
 *   { "kernel": "build/shoal-guest", "initrd": null, "cmdline": "info",
 *     "cpus": 2, "memory": "256M", "console": "stdio",
 *     "cpu_template": "host", "timeout": 0 }
 *
 * Strings are owned (malloc'd) by the struct; vm_config_free releases them.
 */
#ifndef SHOAL_VMM_CONFIG_H
#define SHOAL_VMM_CONFIG_H

#include <stdint.h>

#include "util/error.h"

enum console_kind { CONSOLE_STDIO = 0, CONSOLE_FILE, CONSOLE_NONE };

struct vm_config {
	char *kernel;                  /* path, required */
	char *initrd;                  /* path or NULL */
	char *cmdline;                 /* or NULL */
	int cpus;                      /* 1..GUEST_MAX_VCPUS */
	uint64_t memory;               /* bytes */
	enum console_kind console;
	char *console_path;            /* CONSOLE_FILE only */
	char *cpu_template;            /* NULL means "host" */
	unsigned timeout_s;            /* 0: none; else stop the guest after it */
};

#define VM_CONFIG_DEFAULT_CPUS   1
#define VM_CONFIG_DEFAULT_MEMORY (256ULL << 20)

void vm_config_init(struct vm_config *c);
void vm_config_free(struct vm_config *c);

/* Parse "256M", "2G", "1048576", "512K", "1T" (binary units). 0 or -1. */
int parse_size(const char *s, uint64_t *out);

/* Parse a console spec: "stdio", "none" or "file:PATH". 0 or -1 with e. */
int vm_config_set_console(struct vm_config *c, const char *spec, struct error *e);

/* Check ranges and required fields; 0 or -1 with `e` (EXIT_USAGE). */
int vm_config_validate(const struct vm_config *c, struct error *e);

/* Merge a JSON document (text) into `c`: keys present override.  Unknown
 * keys and wrong types are errors naming the key.  `name` is used in
 * messages.  0 or -1 with `e` (EXIT_USAGE). */
int vm_config_from_json(struct vm_config *c, const char *name, const char *text,
			struct error *e);
int vm_config_load_file(struct vm_config *c, const char *path, struct error *e);

/* Render as JSON (malloc'd string), the same shape vm_config_from_json reads. */
char *vm_config_to_json(const struct vm_config *c);

#endif
