/*
 * snapshot.c - Shoal's first state stream: a VM saved to a directory and a
 * VM built from one (`shoal snapshot create`, `shoal run --restore`).
 *
 * A snapshot is a directory of three files:
 *
 *   manifest.json  {"format": "shoal-snapshot", "version": 1, "created",
 *                  "config" (the VM's settings, the `--config` object),
 *                  "vcpus", "memory_bytes", "cpu_template", "disks"
 *                  [{path, size, mtime_ns, ino}], "files": {"state":
 *                  {size, xxh3}, "memory": {size, data_bytes, xxh3}}}
 *   state          two sections (base/state.h framing): "kvm", every
 *                  vCPU's and the VM's KVM state (vmm/kvm_state.c), and
 *                  "devices", one section per device
 *   memory         an image of guest RAM (base/guest_mem_file.c): sparse,
 *                  pages that are all zero are holes
 *
 * Invariants.
 *   - A snapshot is of one instant: the vCPUs are parked and the devices
 *     quiesced (vm_quiesce_devices: no I/O thread starts anything, nothing
 *     is in flight) before anything is saved, and stay so until the memory
 *     file is written.  The command runs on the event loop thread, the
 *     only other thread that feeds devices, so nothing else moves.
 *   - All or nothing: the files are written into "DIR.partial-PID",
 *     fsynced, and the directory is renamed to DIR last (and its parent
 *     fsynced).  A crash at any moment leaves DIR complete or absent; a
 *     leftover ".partial-" directory is never a snapshot.
 *   - Restore trusts nothing: the manifest is bounded and parsed strictly,
 *     the state file's and the memory's XXH3 checksums must match, every
 *     section is bounds-checked by its reader, the memory file's size must
 *     be the VM's, the disks must be the same files unchanged.  A failure
 *     names the file and the reason (EXIT_BADSTATE) and changes nothing.
 *
 * Disks.  The VM's disks are not copied.  A snapshot of a VM with a
 * writable disk is refused for now: the guest would go on writing it after
 * the snapshot, and a restore would then see a disk from a later instant
 * than its memory.  Live checkpoints with a copy-on-write overlay (issue
 * 10's next part) lift that.  Read-only disks are recorded by size, inode
 * and modification time, and a restore refuses one that changed.
 *
 * Checksums are XXH3-64 (libxxhash): they catch damage, not an attacker;
 * a snapshot is as trusted as the directory it is read from.
 */
#include "state/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"
#include "base/state.h"
#include "devices/device.h"
#include "vmm/kvm_state.h"
#include "vmm/vm.h"

#define MANIFEST_MAX  (1u << 20)
#define STATE_MAX     (64u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void hex64(uint64_t v, char out[17])
{
	snprintf(out, 17, "%016" PRIx64, v);
}

static uint64_t mem_hash(const struct vm *vm)
{
	return XXH3_64bits(vm->mem.host, vm->mem.size);
}

/* ---- create ---- */

/* A file in `dirfd`, written whole and fsynced. */
static int write_file(int dirfd, const char *name, const void *buf, size_t len, struct error *e)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0)
		return error_set(e, EXIT_HOST, "%s: %s", name, strerror(errno));
	int rc = write_all(fd, buf, len);

	if (rc < 0 || fsync(fd) < 0) {
		error_set(e, EXIT_HOST, "%s: %s", name, strerror(rc < 0 ? -rc : errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Disks go in the manifest; a writable one refuses the snapshot. */
static json_t *disks_json(const struct vm_config *cfg, struct error *e)
{
	json_t *a = json_array();

	for (int i = 0; i < cfg->ndisks; i++) {
		const struct vm_disk *d = &cfg->disks[i];
		struct stat st;

		if (!d->readonly) {
			json_decref(a);
			error_set(e, EXIT_USAGE, "%s: a snapshot of a VM with a writable disk is not "
				  "supported yet (the guest would go on writing it after the snapshot); "
				  "attach it readonly", d->path);
			return NULL;
		}
		if (stat(d->path, &st) < 0) {
			json_decref(a);
			error_set(e, EXIT_HOST, "%s: %s", d->path, strerror(errno));
			return NULL;
		}
		json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I}", "path", d->path,
			"size", (json_int_t)st.st_size, "ino", (json_int_t)st.st_ino,
			"mtime_ns", (json_int_t)((int64_t)st.st_mtim.tv_sec * 1000000000LL +
						 st.st_mtim.tv_nsec)));
	}
	return a;
}

static int refuse_unsaveable(struct vm *vm, struct error *e)
{
	for (int i = 0; i < vm->cfg.nnets; i++)
		if (vm->cfg.nets[i].fd >= 0)
			return error_set(e, EXIT_USAGE, "net%d: a network card on a passed-in fd "
					 "cannot be restored (use tap=NAME)", i);
	for (int i = 0; i < vm->ndevices; i++)
		if (!strncmp(vm->devices[i]->ops->type, "vhost-user", 10))
			return error_set(e, EXIT_USAGE, "%s: vhost-user devices cannot be "
					 "snapshotted yet", vm->devices[i]->name);
	return 0;
}

/* Everything but the rename, into the directory `dirfd`, with the VM
 * paused and quiet. */
static int save_all(struct vm *vm, int dirfd, json_t *manifest, struct snapshot_stats *st,
		    struct error *e)
{
	struct state_writer w, kvm, devs;
	uint64_t data = 0, hash;
	char hex[17];
	size_t mark;
	int fd, rc = -1;

	state_writer_init(&w);
	state_writer_init(&kvm);
	state_writer_init(&devs);
	if (kvm_state_save(vm, &kvm, e))
		goto out;
	if (vm_save_devices(vm, &devs) || kvm.error || devs.error) {
		error_set(e, EXIT_HOST, "cannot save the device state (out of memory?)");
		goto out;
	}
	mark = state_section_begin(&w, "kvm", 1);
	state_put_bytes(&w, kvm.data, kvm.len);
	state_section_end(&w, mark);
	mark = state_section_begin(&w, "devices", 1);
	state_put_bytes(&w, devs.data, devs.len);
	state_section_end(&w, mark);
	if (w.error) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	if (write_file(dirfd, "state", w.data, w.len, e))
		goto out;
	fd = openat(dirfd, "memory", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		error_set(e, EXIT_HOST, "memory: %s", strerror(errno));
		goto out;
	}
	hash = mem_hash(vm);
	if (guest_mem_save_file(&vm->mem, fd, &data, e) || fsync(fd) < 0) {
		if (!e->msg[0])
			error_set(e, EXIT_HOST, "memory: %s", strerror(errno));
		close(fd);
		goto out;
	}
	close(fd);
	st->memory_bytes = vm->mem.size;
	st->memory_data_bytes = data;
	st->state_bytes = w.len;
	hex64(hash, hex);
	json_object_set_new(manifest, "memory_bytes", json_integer((json_int_t)vm->mem.size));
	json_t *files = json_object();
	json_object_set_new(files, "memory", json_pack("{s:I, s:I, s:s}",
		"size", (json_int_t)vm->mem.size, "data_bytes", (json_int_t)data, "xxh3", hex));
	hex64(XXH3_64bits(w.data, w.len), hex);
	json_object_set_new(files, "state", json_pack("{s:I, s:s}", "size", (json_int_t)w.len,
						      "xxh3", hex));
	json_object_set_new(manifest, "files", files);
	rc = 0;
out:
	state_writer_free(&w);
	state_writer_free(&kvm);
	state_writer_free(&devs);
	return rc;
}

static void remove_partial(const char *path)
{
	static const char *const names[] = { "manifest.json", "state", "memory" };
	int dfd = open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC);

	if (dfd >= 0) {
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			unlinkat(dfd, names[i], 0);
		close(dfd);
	}
	rmdir(path);
}

static int fsync_parent(const char *dir)
{
	char *copy = strdup(dir), *slash;
	int fd, rc;

	if (!copy)
		return -1;
	slash = strrchr(copy, '/');
	if (!slash)
		strcpy(copy, ".");
	else if (slash == copy)
		slash[1] = 0;
	else
		*slash = 0;
	fd = open(copy, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

int snapshot_create(struct vm *vm, const char *dir, struct snapshot_stats *st, struct error *e)
{
	char partial[PATH_MAX], created[32];
	struct snapshot_stats local;
	bool was_paused;
	uint64_t t0 = now_ns(), tp;
	json_t *manifest = NULL, *disks;
	char *text = NULL;
	int dirfd = -1, rc = -1;
	time_t now = time(NULL);

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	if (!dir || !*dir)
		return error_set(e, EXIT_USAGE, "snapshot: no directory given");
	if (access(dir, F_OK) == 0)
		return error_set(e, EXIT_USAGE, "%s: already exists (a snapshot goes into a new "
				 "directory)", dir);
	if (refuse_unsaveable(vm, e))
		return -1;
	disks = disks_json(&vm->cfg, e);
	if (!disks)
		return -1;
	if (snprintf(partial, sizeof(partial), "%s.partial-%d", dir, (int)getpid()) >=
	    (int)sizeof(partial)) {
		json_decref(disks);
		return error_set(e, EXIT_USAGE, "%s: path too long", dir);
	}
	if (mkdir(partial, 0700) < 0) {
		json_decref(disks);
		return error_set(e, EXIT_HOST, "%s: %s", partial, strerror(errno));
	}
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	manifest = json_pack("{s:s, s:i, s:s, s:o, s:i, s:s, s:o}",
		"format", SNAPSHOT_FORMAT, "version", SNAPSHOT_VERSION, "created", created,
		"config", vm_config_to_json(&vm->cfg), "vcpus", vm->ncpus,
		"cpu_template", vm->cfg.cpu_template ? vm->cfg.cpu_template : "host",
		"disks", disks);
	dirfd = open(partial, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (!manifest || dirfd < 0) {
		error_set(e, EXIT_HOST, "%s: %s", partial, manifest ? strerror(errno) : "out of memory");
		goto out;
	}

	was_paused = vm_is_paused(vm);
	tp = now_ns();
	vm_pause(vm);
	vm_quiesce_devices(vm, true);
	rc = save_all(vm, dirfd, manifest, st, e);
	vm_quiesce_devices(vm, false);
	if (!was_paused)
		vm_resume(vm);
	st->pause_ns = now_ns() - tp;
	if (rc)
		goto out;
	rc = -1;
	text = json_dumps(manifest, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text || write_file(dirfd, "manifest.json", text, strlen(text), e))
		goto out;
	if (fsync(dirfd) < 0 || rename(partial, dir) < 0) {
		error_set(e, EXIT_HOST, "%s: %s", dir, strerror(errno));
		goto out;
	}
	fsync_parent(dir);
	rc = 0;
out:
	if (rc)
		remove_partial(partial);
	if (dirfd >= 0)
		close(dirfd);
	free(text);
	json_decref(manifest);
	st->total_ns = now_ns() - t0;
	return rc;
}

/* ---- restore ---- */

static ssize_t read_all(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Read a whole file of at most `max` bytes from `dir`. */
static void *read_file(const char *dir, const char *name, size_t max, size_t *len,
		       struct error *e)
{
	char path[PATH_MAX];
	struct stat st;
	void *buf = NULL;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		error_set(e, errno == ENOENT ? EXIT_BADSTATE : EXIT_HOST, "%s: %s%s", path,
			  strerror(errno), errno == ENOENT ? " (not a complete snapshot)" : "");
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		error_set(e, EXIT_BADSTATE, "%s: %s", path,
			  (size_t)st.st_size > max ? "too large" : "not a regular file");
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		error_set(e, EXIT_HOST, "%s: out of memory", path);
		goto out;
	}
	n = read_all(fd, buf, (size_t)st.st_size);
	if (n != st.st_size) {
		error_set(e, EXIT_BADSTATE, "%s: %s", path, n < 0 ? strerror(errno) : "short read");
		free(buf);
		buf = NULL;
		goto out;
	}
	((char *)buf)[n] = 0;
	*len = (size_t)n;
out:
	close(fd);
	return buf;
}

static int check_hash(const char *dir, const char *name, json_t *jfile, uint64_t size,
		      uint64_t hash, struct error *e)
{
	const char *want = json_string_value(json_object_get(jfile, "xxh3"));
	json_t *jsize = json_object_get(jfile, "size");
	char hex[17];

	if (!want || !json_is_integer(jsize))
		return error_set(e, EXIT_BADSTATE, "%s/manifest.json: no size or checksum for %s",
				 dir, name);
	if ((uint64_t)json_integer_value(jsize) != size)
		return error_set(e, EXIT_BADSTATE, "%s/%s: %" PRIu64 " bytes, the manifest says %"
				 PRIu64 " (truncated or replaced)", dir, name, size,
				 (uint64_t)json_integer_value(jsize));
	hex64(hash, hex);
	if (strcmp(hex, want))
		return error_set(e, EXIT_BADSTATE, "%s/%s: checksum %s, the manifest says %s "
				 "(the file is damaged)", dir, name, hex, want);
	return 0;
}

/* The read-only disks the snapshot saw must be the same files, unchanged. */
static int check_disks(const char *dir, json_t *disks, struct error *e)
{
	size_t i;
	json_t *d;

	if (!json_is_array(disks))
		return error_set(e, EXIT_BADSTATE, "%s/manifest.json: \"disks\" is not a list", dir);
	json_array_foreach(disks, i, d) {
		const char *path = json_string_value(json_object_get(d, "path"));
		struct stat st;

		if (!path)
			return error_set(e, EXIT_BADSTATE, "%s/manifest.json: a disk has no path", dir);
		if (stat(path, &st) < 0)
			return error_set(e, EXIT_NOINPUT, "%s: %s (a disk of this snapshot)", path,
					 strerror(errno));
		if ((json_int_t)st.st_size != json_integer_value(json_object_get(d, "size")) ||
		    (json_int_t)st.st_ino != json_integer_value(json_object_get(d, "ino")) ||
		    (json_int_t)((int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec) !=
		    json_integer_value(json_object_get(d, "mtime_ns")))
			return error_set(e, EXIT_BADSTATE, "%s: changed or replaced since the snapshot "
					 "was taken (size, inode or modification time differ)", path);
	}
	return 0;
}

/* Restore the "kvm" and "devices" sections of the state file. */
static int restore_state(struct vm *vm, const char *dir, const void *buf, size_t len,
			 struct error *e)
{
	struct state_reader r, payload;
	bool have_kvm = false, have_devs = false;
	char name[64];
	uint16_t ver;

	state_reader_init(&r, buf, len);
	while (r.pos < r.len) {
		if (state_section_read(&r, name, &ver, &payload) < 0)
			return error_set(e, EXIT_BADSTATE, "%s/state: a damaged section at offset %zu",
					 dir, r.pos);
		if (ver != 1)
			return error_set(e, EXIT_BADSTATE, "%s/state: section \"%s\" has version %u, "
					 "this Shoal reads 1", dir, name, ver);
		if (!strcmp(name, "devices") && !have_devs) {
			if (vm_restore_devices(vm, payload.data + payload.pos,
					       payload.len - payload.pos, e)) {
				e->status = EXIT_BADSTATE;
				return -1;
			}
			have_devs = true;
		} else if (!strcmp(name, "kvm") && !have_kvm) {
			if (kvm_state_restore(vm, payload.data + payload.pos,
					      payload.len - payload.pos, e))
				return -1;
			have_kvm = true;
		} else {
			return error_set(e, EXIT_BADSTATE, "%s/state: unexpected section \"%s\"",
					 dir, name);
		}
	}
	if (!have_kvm || !have_devs)
		return error_set(e, EXIT_BADSTATE, "%s/state: no \"%s\" section", dir,
				 have_kvm ? "devices" : "kvm");
	return 0;
}

/* The manifest: its format, version and shape; fills `cfg`. */
static json_t *load_manifest(const char *dir, struct vm_config *cfg, struct error *e)
{
	char *text;
	size_t len;
	json_error_t je;
	json_t *m, *v;
	const char *fmt;

	text = read_file(dir, "manifest.json", MANIFEST_MAX, &len, e);
	if (!text)
		return NULL;
	m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	free(text);
	if (!m || !json_is_object(m)) {
		error_set(e, EXIT_BADSTATE, "%s/manifest.json: %s (line %d)", dir,
			  m ? "not a JSON object" : je.text, je.line);
		json_decref(m);
		return NULL;
	}
	fmt = json_string_value(json_object_get(m, "format"));
	v = json_object_get(m, "version");
	if (!fmt || strcmp(fmt, SNAPSHOT_FORMAT)) {
		error_set(e, EXIT_BADSTATE, "%s/manifest.json: not a Shoal snapshot (format %s)", dir,
			  fmt ? fmt : "missing");
		goto bad;
	}
	if (!json_is_integer(v) || json_integer_value(v) != SNAPSHOT_VERSION) {
		error_set(e, EXIT_BADSTATE, "%s/manifest.json: snapshot version %lld, this Shoal "
			  "reads version %d", dir, json_is_integer(v) ? (long long)json_integer_value(v) : -1LL,
			  SNAPSHOT_VERSION);
		goto bad;
	}
	if (vm_config_from_json(cfg, "manifest.json config", json_object_get(m, "config"), e)) {
		e->status = EXIT_BADSTATE;
		goto bad;
	}
	if (json_integer_value(json_object_get(m, "vcpus")) != cfg->cpus ||
	    (uint64_t)json_integer_value(json_object_get(m, "memory_bytes")) != cfg->memory) {
		error_set(e, EXIT_BADSTATE, "%s/manifest.json: vcpus or memory_bytes disagree with "
			  "the config", dir);
		goto bad;
	}
	return m;
bad:
	json_decref(m);
	return NULL;
}

struct vm *snapshot_restore(const char *dir, const struct snapshot_overrides *ov,
			    struct error *e)
{
	struct vm_config cfg;
	struct vm *vm = NULL;
	json_t *m, *files;
	void *state = NULL;
	size_t state_len = 0;
	char path[PATH_MAX];
	int memfd = -1;

	vm_config_init(&cfg);
	m = load_manifest(dir, &cfg, e);
	if (!m)
		goto out;
	files = json_object_get(m, "files");
	if (check_disks(dir, json_object_get(m, "disks"), e))
		goto out;
	state = read_file(dir, "state", STATE_MAX, &state_len, e);
	if (!state || check_hash(dir, "state", json_object_get(files, "state"), state_len,
				 XXH3_64bits(state, state_len), e))
		goto out;
	snprintf(path, sizeof(path), "%s/memory", dir);
	memfd = open(path, O_RDONLY | O_CLOEXEC);
	if (memfd < 0) {
		error_set(e, EXIT_BADSTATE, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (ov) {
		if (ov->console_set) {
			cfg.console = ov->console;
			free(cfg.console_path);
			cfg.console_path = ov->console_path ? strdup(ov->console_path) : NULL;
		}
		cfg.timeout_s = ov->timeout_s;
	}
	vm = vm_create_restored(&cfg, memfd, ov && ov->clone, e);
	if (!vm) {
		if (strstr(e->msg, "memory file"))
			snprintf(e->msg + strlen(e->msg), sizeof(e->msg) - strlen(e->msg), " (%s)", path);
		goto out;
	}
	if ((!(ov && ov->clone) &&   /* a clone reads only what its guest touches */
	     check_hash(dir, "memory", json_object_get(files, "memory"), vm->mem.size,
			mem_hash(vm), e)) ||
	    restore_state(vm, dir, state, state_len, e)) {
		vm_destroy(vm);
		vm = NULL;
	}
out:
	if (memfd >= 0)
		close(memfd);
	free(state);
	json_decref(m);
	vm_config_free(&cfg);
	return vm;
}

/* ---- the control command ---- */

static json_t *snapshot_cmd(struct vm *vm, json_t *req, void *opaque)
{
	const char *dir = json_string_value(json_object_get(req, "dir"));
	struct snapshot_stats st;
	struct error e = { 0 };

	(void)opaque;
	if (!dir || dir[0] != '/')
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 "snapshot: \"dir\" must be an absolute path");
	if (snapshot_create(vm, dir, &st, &e))
		return json_pack("{s:b, s:s}", "ok", 0, "error", e.msg);
	log_info("snapshot %s: %.1f ms paused, %" PRIu64 " of %" PRIu64 " MiB of memory written",
		 dir, st.pause_ns / 1e6, st.memory_data_bytes >> 20, st.memory_bytes >> 20);
	return json_pack("{s:b, s:s, s:f, s:f, s:I, s:I, s:I}", "ok", 1, "dir", dir,
			 "pause_ms", st.pause_ns / 1e6, "total_ms", st.total_ns / 1e6,
			 "memory_bytes", (json_int_t)st.memory_bytes,
			 "memory_data_bytes", (json_int_t)st.memory_data_bytes,
			 "state_bytes", (json_int_t)st.state_bytes);
}

void snapshot_add_command(struct vm *vm)
{
	vm_add_command(vm, "snapshot", snapshot_cmd, NULL);
}
