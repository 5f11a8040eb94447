/*
 * config.c - filling and checking struct vm_config (see config.h): the
 * VM-level settings, and the JSON object that holds them.
 *
 * The JSON reader is strict: an unknown key or a value of the wrong type is
 * an error that names the key, because a typo in a config file that is
 * silently ignored boots the wrong VM.  It reads a json_t: the daemon hands
 * it the object it already parsed, `--config FILE` parses the file once
 * (vm_config_load_file), and nothing here goes through text on the way.
 * Each device key's value is read and written by the device's own code
 * (devices/config_dev.h); this file keeps the arrays, their limits, and the
 * VM's own keys (kernel, memory, console, ...).
 */
#include "vmm/config.h"
#include "base/size.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/layout.h"
#include "devices/config_dev.h"

void vm_config_init(struct vm_config *c)
{
	memset(c, 0, sizeof(*c));
	c->cpus = VM_CONFIG_DEFAULT_CPUS;
	c->memory = VM_CONFIG_DEFAULT_MEMORY;
	c->console = CONSOLE_STDIO;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

void vm_config_copy(struct vm_config *dst, const struct vm_config *src)
{
	*dst = *src;
	dst->kernel = dup_or_null(src->kernel);
	dst->firmware = dup_or_null(src->firmware);
	dst->initrd = dup_or_null(src->initrd);
	dst->cmdline = dup_or_null(src->cmdline);
	dst->console_path = dup_or_null(src->console_path);
	dst->cpu_template = dup_or_null(src->cpu_template);
	for (int i = 0; i < src->nconfine; i++)
		dst->confine[i] = dup_or_null(src->confine[i]);
	for (int i = 0; i < src->ndisks; i++)
		disk_config_copy(&dst->disks[i], &src->disks[i]);
	for (int i = 0; i < src->nnets; i++)
		net_config_copy(&dst->nets[i], &src->nets[i]);
	dst->vsock_socket = dup_or_null(src->vsock_socket);
	for (int i = 0; i < src->nfs; i++)
		fs_config_copy(&dst->fs[i], &src->fs[i]);
	dst->vconsole = dup_or_null(src->vconsole);
	cidata_copy(&dst->cloud_init, &src->cloud_init);
}

void vm_config_free(struct vm_config *c)
{
	for (int i = 0; i < c->ndisks; i++)
		disk_config_free(&c->disks[i]);
	for (int i = 0; i < c->nnets; i++)
		net_config_free(&c->nets[i]);
	free(c->vsock_socket);
	for (int i = 0; i < c->nfs; i++)
		fs_config_free(&c->fs[i]);
	free(c->vconsole);
	cidata_free(&c->cloud_init);
	free(c->kernel);
	free(c->firmware);
	free(c->initrd);
	free(c->cmdline);
	free(c->console_path);
	free(c->cpu_template);
	for (int i = 0; i < c->nconfine; i++)
		free(c->confine[i]);
	memset(c, 0, sizeof(*c));
}

static void replace_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? strdup(src) : NULL;
}

/* ---- devices: the flag forms (`shoal run`, `shoal vhost-user`) ---- */

int vm_config_add_disk(struct vm_config *c, const char *spec, struct error *e)
{
	if (c->ndisks == VM_MAX_DISKS)
		return error_set(e, EXIT_USAGE, "--disk: at most %d disks", VM_MAX_DISKS);
	if (disk_config_from_flags(&c->disks[c->ndisks], spec, e))
		return -1;
	c->ndisks++;
	return 0;
}

int vm_config_add_net(struct vm_config *c, const char *spec, struct error *e)
{
	if (c->nnets == VM_MAX_NETS)
		return error_set(e, EXIT_USAGE, "--net: at most %d interfaces", VM_MAX_NETS);
	if (net_config_from_flags(&c->nets[c->nnets], spec, e))
		return -1;
	c->nnets++;
	return 0;
}

int vm_config_add_fs(struct vm_config *c, const char *spec, struct error *e)
{
	if (c->nfs == VM_MAX_FS)
		return error_set(e, EXIT_USAGE, "--fs: at most %d shared trees", VM_MAX_FS);
	if (fs_config_from_flags(&c->fs[c->nfs], spec, e))
		return -1;
	c->nfs++;
	return 0;
}

/* "fs": [{"tag": T, "socket": P}, ...] replaces the list. */
static int json_get_fs(struct vm_config *c, const char *name, json_t *v, struct error *e)
{
	char where[256];
	size_t i;
	json_t *it;

	if (!json_is_array(v))
		return error_set(e, EXIT_USAGE, "%s: \"fs\" must be an array", name);
	for (int k = 0; k < c->nfs; k++)
		fs_config_free(&c->fs[k]);
	c->nfs = 0;
	json_array_foreach(v, i, it) {
		snprintf(where, sizeof(where), "%s: fs[%zu]", name, i);
		if (c->nfs == VM_MAX_FS)
			return error_set(e, EXIT_USAGE, "%s: at most %d shared trees", where, VM_MAX_FS);
		if (fs_config_from_json(&c->fs[c->nfs], it, where, e))
			return -1;
		c->nfs++;
	}
	return 0;
}

int vm_config_set_vsock(struct vm_config *c, const char *spec, struct error *e)
{
	return vsock_config_from_flags(&c->vsock_cid, &c->vsock_socket, spec, e);
}

int vm_config_set_console(struct vm_config *c, const char *spec, struct error *e)
{
	if (!strcmp(spec, "stdio")) {
		c->console = CONSOLE_STDIO;
	} else if (!strcmp(spec, "none")) {
		c->console = CONSOLE_NONE;
	} else if (!strncmp(spec, "file:", 5) && spec[5]) {
		c->console = CONSOLE_FILE;
		replace_str(&c->console_path, spec + 5);
	} else {
		return error_set(e, EXIT_USAGE,
				 "console '%s': expected stdio, none or file:PATH", spec);
	}
	return 0;
}

int vm_config_validate(const struct vm_config *c, struct error *e)
{
	if (c->firmware && c->kernel)
		return error_set(e, EXIT_USAGE, "--firmware boots a BIOS, --kernel a kernel: give one, not both");
	if (c->firmware && !*c->firmware)
		return error_set(e, EXIT_USAGE, "firmware: empty path");
	if (c->firmware && (c->initrd || c->cmdline))
		return error_set(e, EXIT_USAGE, "--initrd and --cmdline go with --kernel, not with firmware boot");
	if (!c->firmware && (!c->kernel || !*c->kernel))
		return error_set(e, EXIT_USAGE, "no kernel given (--kernel PATH)");
	if (c->firmware && c->vmgenid)
		return error_set(e, EXIT_USAGE, "--vmgenid needs a kernel boot (--kernel): a firmware "
				 "boot's ACPI tables are the BIOS's, which do not describe the device");
	if (c->mem_recovery && c->zero_on && !c->zero_off)
		return error_set(e, EXIT_USAGE, "mem_recovery: cannot go with zero_scan yet (a zero "
				 "block's pages are the kernel's shared zero page, not the memfd's)");
	if (c->cpus < 1)
		return error_set(e, EXIT_USAGE, "cpus: %d is not a valid vCPU count (at least 1)", c->cpus);
	if (c->cpus > GUEST_MAX_VCPUS)
		return error_set(e, EXIT_USAGE, "cpus: %d vCPUs is more than Shoal supports (%d)",
				 c->cpus, GUEST_MAX_VCPUS);
	if (c->memory < GUEST_MEM_MIN)
		return error_set(e, EXIT_USAGE, "memory: %llu KiB is too small (minimum %llu MiB)",
				 (unsigned long long)(c->memory >> 10),
				 (unsigned long long)(GUEST_MEM_MIN >> 20));
	if (c->memory > GUEST_MEM_MAX)
		return error_set(e, EXIT_USAGE, "memory: %llu GiB is more than Shoal supports (%llu GiB)",
				 (unsigned long long)(c->memory >> 30),
				 (unsigned long long)(GUEST_MEM_MAX >> 30));
	if (c->memory & 0xfff)
		return error_set(e, EXIT_USAGE, "memory: %llu bytes is not a multiple of 4 KiB",
				 (unsigned long long)c->memory);
	return 0;
}

/* ---- JSON ---- */

static int json_get_string(json_t *v, const char *name, const char *key, char **dst,
			   struct error *e)
{
	if (json_is_null(v)) {
		replace_str(dst, NULL);
		return 0;
	}
	if (!json_is_string(v))
		return error_set(e, EXIT_USAGE, "%s: \"%s\" must be a string", name, key);
	replace_str(dst, json_string_value(v));
	return 0;
}

static int json_get_memory(json_t *v, const char *name, uint64_t *dst, struct error *e)
{
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*dst = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v) && size_parse(json_string_value(v), dst) == 0)
		return 0;
	return error_set(e, EXIT_USAGE,
			 "%s: \"memory\" must be a size such as \"256M\" or a byte count", name);
}

static int json_get_uint(json_t *v, const char *name, const char *key, long long max,
			 long long *dst, struct error *e)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return error_set(e, EXIT_USAGE, "%s: \"%s\" must be an integer from 0 to %lld",
				 name, key, max);
	*dst = json_integer_value(v);
	return 0;
}

/* "confine": absolute directory paths that every named file must lie beneath. */
static int json_get_confine(json_t *v, const char *name, struct vm_config *c, struct error *e)
{
	size_t i;
	json_t *d;

	if (!json_is_array(v) || json_array_size(v) > PATH_MAX_ROOTS)
		return error_set(e, EXIT_USAGE, "%s: \"confine\" must be an array of at most %d directories",
				 name, PATH_MAX_ROOTS);
	json_array_foreach(v, i, d)
		if (!json_is_string(d) || json_string_value(d)[0] != '/')
			return error_set(e, EXIT_USAGE, "%s: \"confine\"[%zu] must be an absolute path",
					 name, i);
	while (c->nconfine)
		free(c->confine[--c->nconfine]);
	json_array_foreach(v, i, d)
		c->confine[c->nconfine++] = strdup(json_string_value(d));
	return 0;
}

/* "disks": each entry read by the disk's own code, appended. */
static int json_get_disks(struct vm_config *c, const char *name, json_t *v, struct error *e)
{
	char where[256];
	size_t i;
	json_t *it;

	if (!json_is_array(v))
		return error_set(e, EXIT_USAGE, "%s: \"disks\" must be an array", name);
	json_array_foreach(v, i, it) {
		snprintf(where, sizeof(where), "%s: disks[%zu]", name, i);
		if (c->ndisks == VM_MAX_DISKS)
			return error_set(e, EXIT_USAGE, "%s: at most %d disks", where, VM_MAX_DISKS);
		if (disk_config_from_json(&c->disks[c->ndisks], it, where, e))
			return -1;
		c->ndisks++;
	}
	return 0;
}

/* "nets": the same for network interfaces. */
static int json_get_nets(struct vm_config *c, const char *name, json_t *v, struct error *e)
{
	char where[256];
	size_t i;
	json_t *it;

	if (!json_is_array(v))
		return error_set(e, EXIT_USAGE, "%s: \"nets\" must be an array", name);
	json_array_foreach(v, i, it) {
		snprintf(where, sizeof(where), "%s: nets[%zu]", name, i);
		if (c->nnets == VM_MAX_NETS)
			return error_set(e, EXIT_USAGE, "%s: at most %d interfaces", where, VM_MAX_NETS);
		if (net_config_from_json(&c->nets[c->nnets], it, where, e))
			return -1;
		c->nnets++;
	}
	return 0;
}

/* "zero_scan": N (0 to 10000000 pages/s; 0: the balloon's blocks only) or
 * "off", as --zero-scan (docs/memory.md). */
static int json_get_zero_scan(struct vm_config *c, const char *name, json_t *v,
			      struct error *e)
{
	if (json_is_string(v) && !strcmp(json_string_value(v), "off")) {
		c->zero_off = true;
		c->zero_on = false;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 10000000)
		return error_set(e, EXIT_USAGE, "%s: \"zero_scan\" must be \"off\" or a page rate "
				 "(0 to 10000000 pages/s)", name);
	c->zero_scan = (uint32_t)json_integer_value(v);
	c->zero_off = false;
	c->zero_on = true;
	return 0;
}

/* The device keys; 1 when `key` is none of them. */
static int json_apply_device_key(struct vm_config *c, const char *name, const char *key,
				 json_t *v, struct error *e)
{
	if (!strcmp(key, "disks"))
		return json_get_disks(c, name, v, e);
	if (!strcmp(key, "nets"))
		return json_get_nets(c, name, v, e);
	if (!strcmp(key, "rng"))
		return rng_config_from_json(&c->rng, &c->rng_rate, v, name, e);
	if (!strcmp(key, "balloon"))
		return balloon_config_from_json(&c->balloon, &c->balloon_stats_s, v, name, e);
	if (!strcmp(key, "vsock"))
		return vsock_config_from_json(&c->vsock_cid, &c->vsock_socket, v, name, e);
	if (!strcmp(key, "fs"))
		return json_get_fs(c, name, v, e);
	if (!strcmp(key, "virtio_console"))
		return vconsole_config_from_json(&c->vconsole, v, name, e);
	if (!strcmp(key, "cloud_init"))
		return cidata_from_json(&c->cloud_init, v, name, e);
	if (!strcmp(key, "vmgenid"))
		return config_json_bool(v, name, key, &c->vmgenid, e);
	if (!strcmp(key, "zero_scan"))
		return json_get_zero_scan(c, name, v, e);
	if (!strcmp(key, "mem_recovery"))
		return config_json_bool(v, name, key, &c->mem_recovery, e);
	return 1;
}

static int json_apply_key(struct vm_config *c, const char *name, const char *key,
			  json_t *v, struct error *e)
{
	long long n;
	int rc;

	if (!strcmp(key, "kernel"))
		return json_get_string(v, name, key, &c->kernel, e);
	if (!strcmp(key, "firmware"))
		return json_get_string(v, name, key, &c->firmware, e);
	if (!strcmp(key, "initrd"))
		return json_get_string(v, name, key, &c->initrd, e);
	if (!strcmp(key, "cmdline"))
		return json_get_string(v, name, key, &c->cmdline, e);
	if (!strcmp(key, "cpu_template"))
		return json_get_string(v, name, key, &c->cpu_template, e);
	if (!strcmp(key, "memory"))
		return json_get_memory(v, name, &c->memory, e);
	if (!strcmp(key, "confine"))
		return json_get_confine(v, name, c, e);
	if (!strcmp(key, "cpus")) {
		if (json_get_uint(v, name, key, 1 << 20, &n, e))
			return -1;
		c->cpus = (int)n;
		return 0;
	}
	if (!strcmp(key, "timeout")) {
		if (json_get_uint(v, name, key, 1 << 30, &n, e))
			return -1;
		c->timeout_s = (unsigned)n;
		return 0;
	}
	if (!strcmp(key, "console")) {
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"console\" must be a string", name);
		if (vm_config_set_console(c, json_string_value(v), e))
			return error_prefix(e, "%s", name);
		return 0;
	}
	rc = json_apply_device_key(c, name, key, v, e);
	if (rc <= 0)
		return rc;
	return error_set(e, EXIT_USAGE, "%s: unknown key \"%s\"", name, key);
}

int vm_config_from_json(struct vm_config *c, const char *name, json_t *root,
			struct error *e)
{
	const char *key;
	json_t *v;

	if (!json_is_object(root))
		return error_set(e, EXIT_USAGE, "%s: expected a JSON object", name);
	json_object_foreach(root, key, v)
		if (json_apply_key(c, name, key, v, e))
			return -1;
	return 0;
}

int vm_config_from_json_text(struct vm_config *c, const char *name, const char *text,
			     struct error *e)
{
	json_error_t jerr;
	json_t *root;
	int rc;

	root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return error_set(e, EXIT_USAGE, "%s: line %d: %s", name, jerr.line, jerr.text);
	rc = vm_config_from_json(c, name, root, e);
	json_decref(root);
	return rc;
}

int vm_config_load_file(struct vm_config *c, const char *path, struct error *e)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;
	int rc;

	if (!f)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || len > (1 << 20) ||
	    fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return error_set(e, EXIT_USAGE, "%s: not a regular file of at most 1 MiB", path);
	}
	buf = malloc((size_t)len + 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		fclose(f);
		return error_set(e, EXIT_NOINPUT, "%s: read failed", path);
	}
	buf[len] = '\0';
	fclose(f);
	rc = vm_config_from_json_text(c, path, buf, e);
	free(buf);
	return rc;
}

json_t *vm_config_to_json(const struct vm_config *c)
{
	json_t *o = json_object(), *disks, *nets;
	char con[4200];

	if (!o)
		return NULL;
	json_object_set_new(o, "kernel", c->kernel ? json_string(c->kernel) : json_null());
	if (c->firmware)
		json_object_set_new(o, "firmware", json_string(c->firmware));
	json_object_set_new(o, "initrd", c->initrd ? json_string(c->initrd) : json_null());
	json_object_set_new(o, "cmdline", c->cmdline ? json_string(c->cmdline) : json_null());
	json_object_set_new(o, "cpus", json_integer(c->cpus));
	json_object_set_new(o, "memory", json_integer((json_int_t)c->memory));
	if (c->console == CONSOLE_FILE)
		snprintf(con, sizeof(con), "file:%s", c->console_path);
	else
		snprintf(con, sizeof(con), "%s", c->console == CONSOLE_NONE ? "none" : "stdio");
	json_object_set_new(o, "console", json_string(con));
	json_object_set_new(o, "cpu_template",
			    json_string(c->cpu_template ? c->cpu_template : "host"));
	json_object_set_new(o, "timeout", json_integer(c->timeout_s));
	disks = json_array();
	for (int i = 0; i < c->ndisks; i++)
		json_array_append_new(disks, disk_config_to_json(&c->disks[i]));
	json_object_set_new(o, "disks", disks);
	nets = json_array();
	for (int i = 0; i < c->nnets; i++)
		json_array_append_new(nets, net_config_to_json(&c->nets[i]));
	json_object_set_new(o, "nets", nets);
	json_object_set_new(o, "rng", rng_config_to_json(c->rng, c->rng_rate));
	json_object_set_new(o, "balloon", balloon_config_to_json(c->balloon, c->balloon_stats_s));
	json_object_set_new(o, "vsock", vsock_config_to_json(c->vsock_cid, c->vsock_socket));
	json_object_set_new(o, "virtio_console", vconsole_config_to_json(c->vconsole));
	if (c->nfs) {
		json_t *fs = json_array();

		for (int i = 0; i < c->nfs; i++)
			json_array_append_new(fs, fs_config_to_json(&c->fs[i]));
		json_object_set_new(o, "fs", fs);
	}
	if (cidata_wanted(&c->cloud_init))
		json_object_set_new(o, "cloud_init", cidata_to_json(&c->cloud_init));
	if (c->vmgenid)
		json_object_set_new(o, "vmgenid", json_true());
	if (c->zero_on && !c->zero_off)
		json_object_set_new(o, "zero_scan", json_integer(c->zero_scan));
	if (c->mem_recovery)
		json_object_set_new(o, "mem_recovery", json_true());
	if (c->nconfine) {
		json_t *dirs = json_array();

		for (int i = 0; i < c->nconfine; i++)
			json_array_append_new(dirs, json_string(c->confine[i]));
		json_object_set_new(o, "confine", dirs);
	}
	return o;
}

char *vm_config_to_json_text(const struct vm_config *c)
{
	json_t *o = vm_config_to_json(c);
	char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

	json_decref(o);
	return s;
}
