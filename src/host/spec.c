/*
 * spec.c - reading and checking a VM spec for shoald (see spec.h).
 *
 * Order of checks, each failing with 400 and a message that names the
 * field: well-formed JSON (no duplicate keys) -> an object -> "name" ->
 * "restart" -> "limits" -> the memory manager's "memory_shares",
 * "memory_min", "memory_max" (checked against the memory and for a
 * balloon once the VMM's keys are read; host/memmgr.c) -> the VMM's keys through vm_config_from_json (unknown keys and
 * wrong types) -> vm_config_validate (ranges, required kernel) -> the CPU
 * template's name -> the command line's length -> what the host can honour and the caller may
 * name: absolute paths (400), files beneath the allowed directories (403,
 * base/path_beneath.h: this process is confined to them, so an open that
 * would leave them is refused by the kernel and opens nothing), regular
 * files (400), each disk's backing chain opened read-only by the block
 * layer under the same confinement, the cloud-init seed's files (regular
 * files beneath them, as the kernel), console files that are plain names
 * (created in the VM's directory by the VMM, never where the caller
 * says, and never disk-*), no TAP descriptor numbers, memory.  One
 * exception to "beneath the allowed directories": a disk image the daemon
 * made in the VM's own directory (spec_own_disk, below).
 *
 * These checks are for a clear answer at create (and again at each start);
 * the VMM enforces the same confinement itself when it opens the files
 * ("confine" in its config), which is what closes the window between this
 * check and that open.
 */
#include "host/spec.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "base/error.h"
#include "base/path_beneath.h"
#include "base/size.h"
#include "boot/boot.h"
#include "vmm/cpuid.h"
#include "host/net.h"

/* Files of its own the daemon keeps in a VM's directory (daemon.c). */
static const char *const spec_reserved_names[] = {
	"config.json", "config.json.tmp", "control.sock", "vmm.log", "exit", "exit.tmp",
	"migrate.sock",
};

/* The daemon's STATE_DIR/vms (host_spec_set_vms_dir), for the one
 * exception to the --allow-dir rule: a disk image the daemon itself made
 * for a VM in that VM's own directory, VMS_DIR/NAME/disk-N.raw or
 * disk-N.qcow2 (a --with-disks migration's destination, migration.c).
 * Such a path is allowed in NAME's spec only; the file must be a regular
 * file there (not a link), its chain is not opened here (the daemon made
 * it, over a base it checked beneath an --allow-dir if any: migration.c),
 * and the VMM is confined to that directory as
 * well as the --allow-dir ones, so it can open it.  A console file may
 * not take such a name (spec_check_console_name). */
static char *spec_vms_dir;

void host_spec_set_vms_dir(const char *dir, int nallow_dirs)
{
	char real[4096];

	free(spec_vms_dir);
	spec_vms_dir = NULL;
	/* its VMM's "confine" has room for the VM's directory besides them */
	if (dir && nallow_dirs < PATH_MAX_ROOTS && realpath(dir, real))
		spec_vms_dir = strdup(real);
}

/* Is `path` disk `i`'s image made by the daemon in VM `name`'s directory?
 * Its directory into dir when it is. */
static bool spec_own_disk(const char *name, int i, const char *path, char *dir, size_t size)
{
	char raw[64], qcow[64];
	size_t n;

	if (!spec_vms_dir || !name[0])
		return false;
	n = (size_t)snprintf(dir, size, "%s/%s", spec_vms_dir, name);
	if (n >= size || strncmp(path, dir, n) || path[n] != '/')
		return false;
	snprintf(raw, sizeof(raw), "disk-%d.raw", i);
	snprintf(qcow, sizeof(qcow), "disk-%d.qcow2", i);
	return !strcmp(path + n + 1, raw) || !strcmp(path + n + 1, qcow);
}

bool host_name_valid(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > HOST_NAME_MAX_LEN || !isalnum((unsigned char)name[0]))
		return false;
	for (i = 1; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return false;
	return true;
}

/* Take "name" out of `root` into s->name. */
static int spec_take_name(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *v = json_object_get(root, "name");

	if (!v)
		return api_err_set(e, 400, "invalid_spec", "name: missing (a VM needs a name)");
	if (!json_is_string(v))
		return api_err_set(e, 400, "invalid_spec", "name: must be a string");
	if (!host_name_valid(json_string_value(v)))
		return api_err_set(e, 400, "invalid_spec",
				   "name: \"%.80s\" is not a valid VM name (1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit)",
				   json_string_value(v), HOST_NAME_MAX_LEN);
	snprintf(s->name, sizeof(s->name), "%s", json_string_value(v));
	json_object_del(root, "name");
	return 0;
}

/* A card on a managed network, {"network": NAME, ...} (net.h): NAME is
 * checked (and, at create, that the network exists), and the card goes to
 * the VMM's reader with the TAP the daemon will make for it
 * (net_tap_name); its number into nets[i] ("" for the others).  The
 * canonical spec names the network again, not the TAP (spec_put_networks). */
static int spec_take_networks(json_t *root, struct host_spec *s, bool check_host,
			      char (*nets)[NET_NAME_MAX + 1], struct api_err *e)
{
	json_t *arr = json_object_get(root, "nets"), *n, *v;
	char tap[16];
	size_t i;

	json_array_foreach(arr, i, n) {
		if (i >= VM_MAX_NETS)
			break;
		nets[i][0] = '\0';
		v = json_object_get(n, "network");
		if (!v)
			continue;
		if (!json_is_string(v) || !net_name_valid(json_string_value(v)))
			return api_err_set(e, 400, "invalid_spec",
					   "nets[%zu].network: must be a network's name (1 to %d of a-z, 0-9, '_' and '-')",
					   i, NET_NAME_MAX);
		if (json_object_get(n, "tap") || json_object_get(n, "fd"))
			return api_err_set(e, 400, "invalid_spec",
					   "nets[%zu]: give one of \"network\" or \"tap\"", i);
		if (check_host && !host_net_known(json_string_value(v)))
			return api_err_set(e, 400, "invalid_spec",
					   "nets[%zu].network: no network \"%s\" (shoal net list)", i,
					   json_string_value(v));
		snprintf(nets[i], NET_NAME_MAX + 1, "%s", json_string_value(v));
		net_tap_name(s->name, (int)i, tap);
		json_object_set_new(n, "tap", json_string(tap));
		json_object_del(n, "network");
	}
	return 0;
}

/* The canonical spec's cards on a network name it instead of the TAP. */
static int spec_put_networks(struct host_spec *s, char (*nets)[NET_NAME_MAX + 1],
			     struct api_err *e)
{
	json_t *root, *arr, *n;
	size_t i;
	bool any = false;

	for (i = 0; i < VM_MAX_NETS; i++)
		any |= nets[i][0] != '\0';
	if (!any)
		return 0;
	root = json_loads(s->spec_json, 0, NULL);
	arr = json_object_get(root, "nets");
	json_array_foreach(arr, i, n) {
		if (i >= VM_MAX_NETS || !nets[i][0])
			continue;
		json_object_del(n, "tap");
		json_object_set_new(n, "network", json_string(nets[i]));
	}
	free(s->spec_json);
	s->spec_json = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	return s->spec_json ? 0 : api_err_set(e, 500, "internal", "spec: cannot render the spec");
}

/* Keys only the daemon sets in the VMM's config: refused in a spec. */
static int spec_refuse_daemon_keys(json_t *root, struct api_err *e)
{
	if (json_object_get(root, "confine"))
		return api_err_set(e, 400, "invalid_spec",
				   "confine: set by the daemon from its --allow-dir options, not by a spec");
	return 0;
}

/* Take "restart" (optional) out of `root`. */
static int spec_take_restart(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *v = json_object_get(root, "restart");
	int p;

	s->restart = RESTART_NO;
	if (!v || json_is_null(v))
		goto out;
	if (!json_is_string(v) || (p = restart_policy_parse(json_string_value(v))) < 0)
		return api_err_set(e, 400, "invalid_spec",
				   "restart: must be \"no\", \"on-failure\" or \"always\"");
	s->restart = (enum restart_policy)p;
out:
	json_object_del(root, "restart");
	return 0;
}

/* A failed confined open of `path` as an answer: 403 for a refusal. */
static int spec_open_error(const char *key, const char *path, struct api_err *e)
{
	const char *why = path_refusal();

	if (why)
		return api_err_set(e, 403, "path_not_allowed", "%s: %s", key, why);
	return api_err_set(e, 400, "invalid_spec", "%s: %.200s: %s", key, path, strerror(errno));
}

/* `path` (for field `key`) is absolute and lies beneath an allowed
 * directory; its mode into *mode.  Opened O_PATH only: never read. */
static int spec_check_beneath(const char *key, const char *path, mode_t *mode,
			      struct api_err *e)
{
	struct stat st;
	int fd, rc;

	if (path[0] != '/')
		return api_err_set(e, 400, "invalid_spec",
				   "%s: \"%.200s\" is not an absolute path (the daemon does not share the client's working directory)",
				   key, path);
	fd = path_open(path, O_PATH | O_CLOEXEC, 0);
	if (fd < 0)
		return spec_open_error(key, path, e);
	rc = fstat(fd, &st);
	close(fd);
	if (rc < 0)
		return api_err_set(e, 400, "invalid_spec", "%s: %.200s: %s", key, path,
				   strerror(errno));
	*mode = st.st_mode;
	return 0;
}

/* `path` (for field `key`) is absolute, allowed, and a regular file. */
static int spec_check_file(const char *key, const char *path, struct api_err *e)
{
	mode_t mode;

	if (spec_check_beneath(key, path, &mode, e))
		return -1;
	if (!S_ISREG(mode))
		return api_err_set(e, 400, "invalid_spec", "%s: %.200s: not a regular file",
				   key, path);
	return 0;
}

/* A store: disk (store/stream.c) fetches over the network and writes its
 * cache at run time, which the daemon's jailed VMMs cannot do yet
 * (docs/store.md, "Streaming into a VM"): refused, saying what to do. */
static int spec_refuse_store(const char *key, const char *what, const char *path, struct api_err *e)
{
	return api_err_set(e, 400, "invalid_spec", "%s: %s%.200s: a store: disk is not supported through "
			   "shoald yet (its VMMs are jailed, and a store: disk fetches over the network and "
			   "writes its cache at run time); `shoal store pull` the image and give the local "
			   "image, or stream it with `shoal run`", key, what, path);
}

/* Disk `i`: the image and its whole backing chain, opened read-only by the
 * block layer in this confined process (so a backing file outside the
 * allowed directories is refused by the kernel, not opened).  Shared with
 * every other user (-U): only the headers are read, and a VM already
 * running on the image must neither refuse this check nor be refused. */
static int spec_check_disk(int i, const struct vm_disk *d, const char *name,
			   struct api_err *e)
{
	struct blockdev_opts o = { .readonly = true, .no_aio = true, .force_share = true };
	struct blockdev *bd;
	struct error err;
	char key[32], dir[4200];
	struct stat st;
	int fd;

	snprintf(key, sizeof(key), "disks[%d].path", i);
	if (!strncmp(d->path, "store:", 6))
		return spec_refuse_store(key, "", d->path, e);
	if (spec_own_disk(name, i, d->path, dir, sizeof(dir))) {       /* the daemon's own */
		fd = open(d->path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			api_err_set(e, 400, "invalid_spec", "%s: %.200s: %s", key, d->path,
				    fd < 0 ? strerror(errno) : "not a regular file");
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	if (spec_check_file(key, d->path, e))
		return -1;
	if (blockdev_open(&bd, d->path, &o, &err) == 0) {
		blockdev_close(bd);
		return 0;
	}
	if (strstr(err.msg, "store:https://"))
		return spec_refuse_store(key, "the backing file of ", d->path, e);
	if (path_refusal())
		return api_err_set(e, 403, "path_not_allowed", "%s: backing chain of %.200s: %s",
				   key, d->path, path_refusal());
	return api_err_set(e, 400, "invalid_spec", "%s: %s", key, err.msg);
}

/* A console file name: created by the VMM in the VM's own directory, so a
 * plain name that is none of the daemon's files there. */
static int spec_check_console_name(const char *key, const char *name, struct api_err *e)
{
	if (strchr(name, '/'))
		return api_err_set(e, 403, "path_not_allowed",
				   "%s: \"file:%.200s\": a VM's console file is made in its own directory "
				   "on the daemon's side; give a plain name such as \"file:console.log\"",
				   key, name);
	if (!name[0] || name[0] == '.' || strlen(name) > 64 || !strncmp(name, "disk-", 5))
		goto bad;
	for (size_t i = 0; i < sizeof(spec_reserved_names) / sizeof(spec_reserved_names[0]); i++)
		if (!strcmp(name, spec_reserved_names[i]))
			goto bad;
	return 0;
bad:
	return api_err_set(e, 400, "invalid_spec",
			   "%s: \"file:%.80s\": not a usable file name (at most 64 bytes, not hidden, "
			   "not one of the daemon's own files, not disk-*)", key, name);
}

/* The virtio console: "file:NAME" in the VM's directory, and an optional
 * ",in=PATH" input file beneath the allowed directories. */
static int spec_check_vconsole(const char *spec, struct api_err *e)
{
	char out[256];
	const char *in = strstr(spec, ",in=");
	size_t n = in ? (size_t)(in - spec) - 5 : strlen(spec) - 5;
	mode_t mode;

	if (n >= sizeof(out))
		return api_err_set(e, 400, "invalid_spec", "virtio_console: file name too long");
	snprintf(out, sizeof(out), "%.*s", (int)n, spec + 5);
	if (spec_check_console_name("virtio_console", out, e))
		return -1;
	if (in && spec_check_beneath("virtio_console: in", in + 4, &mode, e))
		return -1;
	if (in && S_ISDIR(mode))
		return api_err_set(e, 400, "invalid_spec", "virtio_console: in: %.200s is a directory",
				   in + 4);
	return 0;
}

/* The vsock socket's directory lies beneath an allowed directory (the
 * VMM binds and connects through it, confined the same way). */
static int spec_check_vsock(const char *path, struct api_err *e)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	mode_t mode;

	if (path[0] != '/' || !slash[1])
		return api_err_set(e, 400, "invalid_spec",
				   "vsock.socket: \"%.200s\" is not an absolute path to a socket", path);
	snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	if (spec_check_beneath("vsock.socket", dir, &mode, e))
		return -1;
	if (!S_ISDIR(mode))
		return api_err_set(e, 400, "invalid_spec", "vsock.socket: %.200s is not a directory",
				   dir);
	return 0;
}

/* Devices: disks and their chains, consoles, vsock, TAPs by name only. */
static int spec_check_devices(const struct vm_config *c, const char *name, struct api_err *e)
{
	for (int i = 0; i < c->ndisks; i++)
		if (spec_check_disk(i, &c->disks[i], name, e))
			return -1;
	for (int i = 0; i < c->nnets; i++)
		if (c->nets[i].fd >= 0)
			return api_err_set(e, 403, "path_not_allowed",
					   "nets[%d]: fd=%d would name a descriptor of the daemon's VMM, "
					   "not one of yours; give tap=NAME", i, c->nets[i].fd);
	if (c->console == CONSOLE_FILE && spec_check_console_name("console", c->console_path, e))
		return -1;
	if (c->vconsole && spec_check_vconsole(c->vconsole, e))
		return -1;
	if (c->vsock_cid && spec_check_vsock(c->vsock_socket, e))
		return -1;
	if (c->nfs)   /* the VMM would connect to any Unix socket the client names */
		return api_err_set(e, 400, "invalid_spec", "fs: shared file trees (vhost-user-fs) "
				   "are not offered through shoald yet; use shoal run --fs");
	return 0;
}

/* The cloud-init seed's files (the VMM builds the seed from them, confined
 * the same way), and the disk slot the seed takes. */
static int spec_check_cloud_init(const struct vm_config *c, struct api_err *e)
{
	const struct cidata_files *f = &c->cloud_init;

	if (!cidata_wanted(f))
		return 0;
	if (c->ndisks == VM_MAX_DISKS)
		return api_err_set(e, 400, "invalid_spec", "cloud_init: the seed is one more disk, "
				   "and disks has the most there may be (%d)", VM_MAX_DISKS);
	if (spec_check_file("cloud_init.user_data", f->user_data, e) ||
	    spec_check_file("cloud_init.meta_data", f->meta_data, e))
		return -1;
	if (f->network_config && spec_check_file("cloud_init.network_config", f->network_config, e))
		return -1;
	return 0;
}

/* What the host must honour and the caller may name: files and memory. */
static int spec_check_host(const struct vm_config *c, const char *name, struct api_err *e)
{
	struct sysinfo si;
	uint64_t avail;

	if (spec_check_file("kernel", c->kernel, e))
		return -1;
	if (c->initrd && spec_check_file("initrd", c->initrd, e))
		return -1;
	if (spec_check_devices(c, name, e) || spec_check_cloud_init(c, e))
		return -1;
	if (sysinfo(&si) == 0) {
		avail = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
		if (c->memory > avail)
			return api_err_set(e, 400, "invalid_spec",
					   "memory: %llu MiB is more than this host has (%llu MiB RAM and swap)",
					   (unsigned long long)(c->memory >> 20),
					   (unsigned long long)(avail >> 20));
	}
	return 0;
}

const char *host_console_name(const struct vm_config *c)
{
	if (c->console == CONSOLE_NONE)
		return NULL;
	return c->console == CONSOLE_FILE ? c->console_path : "console.log";
}

/* The VMM's keys: its own reader and validator. */
static int spec_vm_config(json_t *root, struct host_spec *s, bool check_host,
			  struct api_err *e)
{
	struct error err;

	vm_config_init(&s->cfg);
	if (vm_config_from_json(&s->cfg, "spec", root, &err) ||
	    vm_config_validate(&s->cfg, &err))
		/* "spec: unknown key "x"" and "cpus: ..." both name the field */
		return api_err_set(e, 400, "invalid_spec", "%s",
				   strncmp(err.msg, "spec: ", 6) ? err.msg : err.msg + 6);
	if (s->cfg.cpu_template && !*s->cfg.cpu_template)
		return api_err_set(e, 400, "invalid_spec", "cpu_template: must not be empty");
	if (!cpu_template_find(s->cfg.cpu_template))
		return api_err_set(e, 400, "invalid_spec",
				   "cpu_template: \"%.64s\" is not a CPU template (shoal cpu-templates lists them)",
				   s->cfg.cpu_template);
	if (s->cfg.cmdline && strlen(s->cfg.cmdline) >= BOOT_CMDLINE_MAX)
		return api_err_set(e, 400, "invalid_spec",
				   "cmdline: %zu bytes is more than the boot protocol carries (at most %d, as `shoal run` allows)",
				   strlen(s->cfg.cmdline), BOOT_CMDLINE_MAX - 1);
	return check_host ? spec_check_host(&s->cfg, s->name, e) : 0;
}

/* limits.io as rendered: null when no I/O limit is set, else each of the
 * four keys (null where not set). */
static json_t *spec_render_io(const struct host_limits *l)
{
	const uint64_t v[4] = { l->read_bps, l->write_bps, l->read_iops, l->write_iops };
	static const char *const keys[4] = { "read_bps", "write_bps", "read_iops", "write_iops" };
	json_t *o;

	if (!(v[0] | v[1] | v[2] | v[3]))
		return json_null();
	o = json_object();
	for (int i = 0; i < 4; i++)
		json_object_set_new(o, keys[i], v[i] ? json_integer((json_int_t)v[i]) : json_null());
	return o;
}

/* The canonical spec: daemon keys first, then the VMM's settings as the
 * parsed struct renders them (struct -> JSON, no text in between). */
static int spec_render(struct host_spec *s, struct api_err *e)
{
	json_t *cfg = vm_config_to_json(&s->cfg), *out = json_object();

	if (cfg && out) {
		json_object_set_new(out, "name", json_string(s->name));
		json_object_set_new(out, "restart", json_string(restart_policy_name(s->restart)));
		json_object_set_new(out, "limits", json_pack("{s:o, s:o, s:o}",
			"cpus", s->limits.cpus > 0 ? json_real(s->limits.cpus) : json_null(),
			"memory_max", s->limits.memory_max ?
				json_integer((json_int_t)s->limits.memory_max) : json_null(),
			"io", spec_render_io(&s->limits)));
		if (s->mem.shares)
			json_object_set_new(out, "memory_shares", json_integer(s->mem.shares));
		if (s->mem.min)
			json_object_set_new(out, "memory_min", json_integer((json_int_t)s->mem.min));
		if (s->mem.max)
			json_object_set_new(out, "memory_max", json_integer((json_int_t)s->mem.max));
		json_object_update(out, cfg);
		s->spec_json = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
	}
	json_decref(cfg);
	json_decref(out);
	return s->spec_json ? 0 : api_err_set(e, 500, "internal", "spec: cannot render the spec");
}

/* limits.io: {"read_bps": SIZE, "write_bps": SIZE, "read_iops": N,
 * "write_iops": N}, each optional or null; io.max wants at least 1. */
static int spec_take_io(json_t *v, struct host_limits *l, struct api_err *e)
{
	static const char *const keys[4] = { "read_bps", "write_bps", "read_iops", "write_iops" };
	uint64_t *dst[4] = { &l->read_bps, &l->write_bps, &l->read_iops, &l->write_iops };
	const char *k;
	json_t *x;
	int i;

	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return api_err_set(e, 400, "invalid_spec",
				   "limits.io: must be an object (read_bps, write_bps, read_iops, write_iops)");
	json_object_foreach(v, k, x) {
		for (i = 0; i < 4 && strcmp(k, keys[i]); i++)
			;
		if (i == 4)
			return api_err_set(e, 400, "invalid_spec",
					   "limits.io: unknown key \"%.64s\" (read_bps, write_bps, read_iops, write_iops)",
					   k);
		if (json_is_null(x))
			continue;
		if (json_is_integer(x) && json_integer_value(x) > 0) {
			*dst[i] = (uint64_t)json_integer_value(x);
			continue;
		}
		if (i < 2 && json_is_string(x) && !size_parse(json_string_value(x), dst[i]) &&
		    *dst[i] > 0)
			continue;
		if (i < 2)
			return api_err_set(e, 400, "invalid_spec",
					   "limits.io.%s: must be bytes per second, a size such as \"10M\" or a byte count, at least 1",
					   k);
		return api_err_set(e, 400, "invalid_spec",
				   "limits.io.%s: must be a whole number of operations per second, at least 1",
				   k);
	}
	return 0;
}

/* One size key of the memory manager's: bytes or "512M", 0 allowed. */
static int spec_mem_size(json_t *x, const char *k, uint64_t *out, struct api_err *e)
{
	if (json_is_integer(x) && json_integer_value(x) >= 0)
		*out = (uint64_t)json_integer_value(x);
	else if (!json_is_string(x) || size_parse(json_string_value(x), out))
		return api_err_set(e, 400, "invalid_spec", "%s: must be a size such as \"512M\" or "
				   "a byte count", k);
	*out &= ~4095ull;           /* whole pages, as the balloon counts */
	return 0;
}

/* Take "memory_shares", "memory_min" and "memory_max" (optional, null: not
 * set) out of `root`; spec_check_mem checks them against the memory. */
static int spec_take_mem(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *x;

	memset(&s->mem, 0, sizeof(s->mem));
	x = json_object_get(root, "memory_shares");
	if (x && !json_is_null(x)) {
		if (!json_is_integer(x) || json_integer_value(x) < 1 ||
		    json_integer_value(x) > 1000000)
			return api_err_set(e, 400, "invalid_spec",
					   "memory_shares: must be a whole number from 1 to 1000000");
		s->mem.shares = (uint32_t)json_integer_value(x);
	}
	x = json_object_get(root, "memory_min");
	if (x && !json_is_null(x) && spec_mem_size(x, "memory_min", &s->mem.min, e))
		return -1;
	x = json_object_get(root, "memory_max");
	if (x && !json_is_null(x) && spec_mem_size(x, "memory_max", &s->mem.max, e))
		return -1;
	if (x && !json_is_null(x) && !s->mem.max)
		return api_err_set(e, 400, "invalid_spec", "memory_max: at least one page (4096)");
	json_object_del(root, "memory_shares");
	json_object_del(root, "memory_min");
	json_object_del(root, "memory_max");
	return 0;
}

/* The memory manager's keys against the VM: bounds within its memory, and
 * a balloon to reclaim through. */
static int spec_check_mem(const struct host_spec *s, struct api_err *e)
{
	const char *k = s->mem.shares ? "memory_shares" : s->mem.min ? "memory_min" :
		s->mem.max ? "memory_max" : NULL;

	if (!k)
		return 0;
	if (!s->cfg.balloon)
		return api_err_set(e, 400, "invalid_spec", "%s: needs \"balloon\": true (the "
				   "memory manager reclaims through the balloon)", k);
	if (s->mem.max > s->cfg.memory)
		return api_err_set(e, 400, "invalid_spec", "memory_max: more than the VM's memory");
	if (s->mem.min > (s->mem.max ? s->mem.max : s->cfg.memory))
		return api_err_set(e, 400, "invalid_spec", "memory_min: more than %s",
				   s->mem.max ? "memory_max" : "the VM's memory");
	return 0;
}

/* Take "limits" (optional) out of `root`: {"cpus": N, "memory_max": SIZE,
 * "io": {...}}, each member optional or null (cgroup.c applies them). */
static int spec_take_limits(json_t *root, struct host_spec *s, struct api_err *e)
{
	json_t *v = json_object_get(root, "limits"), *x;
	const char *k;

	memset(&s->limits, 0, sizeof(s->limits));
	if (!v || json_is_null(v))
		goto out;
	if (!json_is_object(v))
		return api_err_set(e, 400, "invalid_spec", "limits: must be an object");
	json_object_foreach(v, k, x) {
		if (!strcmp(k, "cpus")) {
			if (json_is_null(x))
				continue;
			if (!json_is_number(x) || json_number_value(x) < 0.01 ||
			    json_number_value(x) > 1024)
				return api_err_set(e, 400, "invalid_spec",
						   "limits.cpus: must be a number of CPUs from 0.01 to 1024");
			s->limits.cpus = json_number_value(x);
		} else if (!strcmp(k, "memory_max")) {
			if (json_is_null(x))
				continue;
			if (json_is_integer(x) && json_integer_value(x) > 0)
				s->limits.memory_max = (uint64_t)json_integer_value(x);
			else if (!json_is_string(x) ||
				 size_parse(json_string_value(x), &s->limits.memory_max))
				return api_err_set(e, 400, "invalid_spec",
						   "limits.memory_max: must be a size such as \"512M\" or a byte count");
			if (s->limits.memory_max < (16ULL << 20))
				return api_err_set(e, 400, "invalid_spec",
						   "limits.memory_max: at least 16M");
		} else if (!strcmp(k, "io")) {
			if (spec_take_io(x, &s->limits, e))
				return -1;
		} else {
			return api_err_set(e, 400, "invalid_spec",
					   "limits: unknown key \"%.64s\" (cpus, memory_max, io)", k);
		}
	}
out:
	json_object_del(root, "limits");
	return 0;
}

int host_spec_parse(const char *text, size_t len, bool check_host,
		    struct host_spec *s, struct api_err *e)
{
	char nets[VM_MAX_NETS][NET_NAME_MAX + 1] = { { 0 } };
	json_error_t jerr;
	json_t *root;
	int rc = -1;

	memset(s, 0, sizeof(*s));
	vm_config_init(&s->cfg);
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return api_err_set(e, 400, "invalid_json", "spec: line %d column %d: %s",
				   jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		api_err_set(e, 400, "invalid_spec", "spec: expected a JSON object");
		goto out;
	}
	if (spec_take_name(root, s, e) || spec_take_restart(root, s, e) ||
	    spec_take_limits(root, s, e) || spec_take_mem(root, s, e) ||
	    spec_refuse_daemon_keys(root, e) ||
	    spec_take_networks(root, s, check_host, nets, e) ||
	    spec_vm_config(root, s, check_host, e) || spec_check_mem(s, e) || spec_render(s, e) ||
	    spec_put_networks(s, nets, e))
		goto out;
	/* an image the daemon made in the VM's directory: its VMM may open it
	 * there (after rendering: "confine" is never part of a stored spec) */
	for (int i = 0; check_host && i < s->cfg.ndisks; i++) {
		char dir[4200];

		if (spec_own_disk(s->name, i, s->cfg.disks[i].path, dir, sizeof(dir))) {
			s->cfg.confine[s->cfg.nconfine] = strdup(dir);
			if (!s->cfg.confine[s->cfg.nconfine]) {
				api_err_set(e, 500, "internal", "out of memory");
				goto out;
			}
			s->cfg.nconfine++;
			break;
		}
	}
	rc = 0;
out:
	json_decref(root);
	if (rc)
		host_spec_free(s);
	return rc;
}

void host_spec_free(struct host_spec *s)
{
	vm_config_free(&s->cfg);
	free(s->spec_json);
	s->spec_json = NULL;
}
