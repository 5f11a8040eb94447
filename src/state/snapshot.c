/*
 * snapshot.c - Shoal's first state stream: a VM saved to a directory and a
 * VM built from one (`shoal snapshot create`, `shoal run --restore`).
 *
 * A snapshot is a directory of three files:
 *
 *   manifest.json  {"format": "shoal-snapshot", "version": 1, "created",
 *                  "config" (the VM's settings, the `--config` object),
 *                  "vcpus", "memory_bytes", "cpu_template", "disks"
 *                  [{path, size, mtime_ns, ino[, writable, format,
 *                  virtual_size, chain_id, overlay]}], "cpu" (vCPU 0's CPUID
 *                  feature words), "live", "files": {"state":
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
 * Disks (snapshot_disk.c).  The VM's disks are not copied.  During the
 * pause each writable disk is switched to a new copy-on-write overlay, and
 * the image it wrote until then, frozen from that instant, is the
 * snapshot's disk (the parent), referenced in place with its chain
 * identity; a restore writes a new overlay of its own on it, and refuses a
 * parent that changed.  Read-only disks are recorded by size, inode and
 * modification time, and a restore refuses one that changed.
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
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "base/state.h"
#include "devices/device.h"
#include "state/snapshot_identity.h"
#include "state/snapshot_disk.h"
#include "state/snapshot_live.h"
#include "vmm/control.h"
#include "vmm/cpuid.h"
#include "vmm/kvm_state.h"
#include "vmm/mem_protect.h"
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

/* ---- the CPU a snapshot's guest saw (mechanism 27) ----
 *
 * The feature words of vCPU 0's CPUID go in the manifest.  A restore reads
 * the CPUID its own vCPU 0 was given on this host (the same template) and
 * refuses a snapshot whose guest used a feature this one lacks, naming
 * each missing bit: a guest that found AVX2 at boot would fault on its
 * first AVX2 instruction on a CPU without it.  Bits that KVM changes while
 * the guest runs (OSXSAVE and OSPKE follow CR4, APIC follows the APIC base
 * MSR) are left out: a Linux that turned on protection keys (CR4.PKE) has
 * OSPKE set, which a freshly made vCPU lacks until its CR4 is restored. */
static const struct cpu_word {
	const char *name;
	uint32_t leaf, index;
	int reg;                             /* 0 eax, 1 ebx, 2 ecx, 3 edx */
	uint32_t volatile_bits;
} cpu_words[] = {
	{ "1.ecx", 1, 0, 2, 1u << 27 }, { "1.edx", 1, 0, 3, 1u << 9 },
	{ "7.0.ebx", 7, 0, 1, 0 }, { "7.0.ecx", 7, 0, 2, 1u << 4 }, { "7.0.edx", 7, 0, 3, 0 },
	{ "0xd.1.eax", 0xd, 1, 0, 0 },
	{ "0x80000001.ecx", 0x80000001, 0, 2, 0 }, { "0x80000001.edx", 0x80000001, 0, 3, 0 },
};

static uint32_t cpu_word_of(const struct kvm_cpuid2 *c, const struct cpu_word *w)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *en = &c->entries[i];

		if (en->function == w->leaf && en->index == w->index) {
			uint32_t r[4] = { en->eax, en->ebx, en->ecx, en->edx };

			return r[w->reg] & ~w->volatile_bits;
		}
	}
	return 0;
}

static struct kvm_cpuid2 *vcpu0_cpuid(struct vm *vm, struct error *e)
{
	struct kvm_cpuid2 *c = cpuid_alloc();

	if (!c) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	if (ioctl(vm->vcpus[0].fd, KVM_GET_CPUID2, c) < 0) {
		error_set(e, EXIT_NOKVM, "vcpu0: KVM_GET_CPUID2: %s", strerror(errno));
		free(c);
		return NULL;
	}
	return c;
}

json_t *snapshot_cpu_json(struct vm *vm, struct error *e)
{
	struct kvm_cpuid2 *c = vcpu0_cpuid(vm, e);
	json_t *o;

	if (!c)
		return NULL;
	o = json_object();
	for (size_t i = 0; i < sizeof(cpu_words) / sizeof(cpu_words[0]); i++)
		json_object_set_new(o, cpu_words[i].name,
				    json_integer((json_int_t)cpu_word_of(c, &cpu_words[i])));
	free(c);
	return o;
}

int snapshot_check_cpu(struct vm *vm, const char *dir, json_t *saved, struct error *e)
{
	struct kvm_cpuid2 *c;
	char missing[512] = "";
	size_t n = 0;

	if (!json_is_object(saved))
		return error_set(e, EXIT_BADSTATE, "%s: no \"cpu\" object", dir);
	c = vcpu0_cpuid(vm, e);
	if (!c)
		return -1;
	for (size_t i = 0; i < sizeof(cpu_words) / sizeof(cpu_words[0]); i++) {
		json_t *v = json_object_get(saved, cpu_words[i].name);
		uint32_t want, have = cpu_word_of(c, &cpu_words[i]);

		if (!json_is_integer(v)) {
			free(c);
			return error_set(e, EXIT_BADSTATE, "%s: cpu: no \"%s\"", dir,
					 cpu_words[i].name);
		}
		want = (uint32_t)json_integer_value(v) & ~cpu_words[i].volatile_bits;
		for (int bit = 0; bit < 32; bit++)
			if ((want >> bit & 1) && !(have >> bit & 1) && n < sizeof(missing) - 40)
				n += (size_t)snprintf(missing + n, sizeof(missing) - n, "%sleaf %s bit %d",
						      n ? ", " : "", cpu_words[i].name, bit);
	}
	free(c);
	if (n)
		return error_set(e, EXIT_RESOURCE, "%s: the guest was using CPU features this host "
				 "does not offer with CPU template %s: %s (a guest started with "
				 "--cpu-template baseline moves to any x86-64 host)", dir,
				 vm->tmpl ? vm->tmpl->name : "host", missing);
	return 0;
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

static int refuse_unsaveable(struct vm *vm, struct error *e)
{
	for (int i = 0; i < vm->cfg.nnets; i++)
		if (vm->cfg.nets[i].fd >= 0)
			return error_set(e, EXIT_USAGE, "net%d: a network card on a passed-in fd "
					 "cannot be restored (use tap=NAME)", i);
	if (vm->cfg.nfs)   /* devices/vhost_user_fs.c: the back end holds the state */
		return error_set(e, EXIT_USAGE, "vhost-user-fs0 (--fs %s): a shared file tree's "
				 "state lives in its back end (virtiofsd), so a VM with one "
				 "cannot be snapshotted", vm->cfg.fs[0].tag);
	return 0;
}

/* Everything but the rename, into the directory `dirfd`, with the VM
 * paused and quiet. */
/* One snapshot being taken: begun (the partial directory), captured with
 * the VM paused, finished (files, manifest, rename) with the VM paused or,
 * for a live one, running. */
#define SNAPSHOT_ZSTD_LEVEL 3   /* zstd's default: fast, and most of the gain */

struct snap_job {
	struct vm *vm;
	char dir[PATH_MAX], partial[PATH_MAX];
	int dirfd, memfd;
	json_t *manifest;
	struct state_writer state;       /* the "kvm" and "devices" sections */
	struct live_mem *live;           /* memory written while the VM runs */
	struct snap_disks *disks;        /* writable disks: their overlays */
	uint64_t hash, t0;
	bool compress;                   /* memory.zst instead of memory */
	struct snapshot_stats st;
};

static void remove_partial(const char *path)
{
	static const char *const names[] = { "manifest.json", "state", "memory", "memory.zst",
					     SNAP_SEED_FILE };
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

/* Free a job; one that did not finish leaves no directory behind. */
static void job_free(struct snap_job *j, bool done)
{
	if (!j)
		return;
	live_mem_free(j->live);
	snap_disks_free(j->disks);
	if (j->memfd >= 0)
		close(j->memfd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	if (!done && j->partial[0])
		remove_partial(j->partial);
	state_writer_free(&j->state);
	json_decref(j->manifest);
	free(j);
}

/* Check what can be checked before the VM is touched, and make the
 * partial directory. */
static struct snap_job *job_begin(struct vm *vm, const char *dir,
				   const struct snap_overlay_file *given, bool compress,
				   struct error *e)
{
	struct snap_job *j;
	char created[32];
	json_t *disks = NULL;
	struct snap_disks *plan;
	time_t now = time(NULL);

	if (!dir || !*dir) {
		error_set(e, EXIT_USAGE, "snapshot: no directory given");
		return NULL;
	}
	if (access(dir, F_OK) == 0) {
		error_set(e, EXIT_USAGE, "%s: already exists (a snapshot goes into a new directory)", dir);
		return NULL;
	}
	if (refuse_unsaveable(vm, e) || !(plan = snap_disks_plan(vm, dir, given, &disks, e)))
		return NULL;
	j = calloc(1, sizeof(*j));
	if (!j) {
		json_decref(disks);
		snap_disks_free(plan);
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	j->vm = vm;
	j->disks = plan;
	j->compress = compress;
	j->dirfd = j->memfd = -1;
	j->t0 = now_ns();
	state_writer_init(&j->state);
	if (snprintf(j->dir, sizeof(j->dir), "%s", dir) >= (int)sizeof(j->dir) ||
	    snprintf(j->partial, sizeof(j->partial), "%s.partial-%d", dir, (int)getpid()) >=
	    (int)sizeof(j->partial)) {
		json_decref(disks);
		j->partial[0] = 0;
		error_set(e, EXIT_USAGE, "%s: path too long", dir);
		goto fail;
	}
	if (mkdir(j->partial, 0700) < 0) {
		json_decref(disks);
		error_set(e, EXIT_HOST, "%s: %s", j->partial, strerror(errno));
		j->partial[0] = 0;
		goto fail;
	}
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	j->manifest = json_pack("{s:s, s:i, s:s, s:o, s:i, s:s, s:o, s:I}",
		"format", SNAPSHOT_FORMAT, "version", SNAPSHOT_VERSION, "created", created,
		"config", vm_config_to_json(&vm->cfg), "vcpus", vm->ncpus,
		"cpu_template", vm->cfg.cpu_template ? vm->cfg.cpu_template : "host",
		"disks", disks, "memory_bytes", (json_int_t)vm->mem.size);
	j->dirfd = open(j->partial, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (j->dirfd >= 0)
		j->memfd = openat(j->dirfd, compress ? "memory.zst" : "memory",
				  O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (!j->manifest || j->memfd < 0) {
		error_set(e, EXIT_HOST, "%s: %s", j->partial, j->manifest ? strerror(errno) : "out of memory");
		goto fail;
	}
	return j;
fail:
	job_free(j, false);
	return NULL;
}

/* With the VM paused and its devices quiesced: the vCPU, KVM and device
 * state into memory, and the memory itself (written now, or, live, armed
 * to be written while the VM runs). */
int snapshot_state_save(struct vm *vm, struct state_writer *w, struct error *e)
{
	struct state_writer kvm, devs;
	size_t mark;
	int rc = -1;

	if (vm->cfg.nfs)   /* a migration's state too: virtiofsd's is not ours to send */
		return error_set(e, EXIT_USAGE, "vhost-user-fs0 (--fs %s): its state lives in "
				 "virtiofsd; a VM with a shared file tree cannot be saved or "
				 "migrated", vm->cfg.fs[0].tag);
	state_writer_init(&kvm);
	state_writer_init(&devs);
	if (vm_protect_check(vm, "pv-protect", e))   /* ranges cannot be saved (vmm/mem_protect.c) */
		goto out;
	if (kvm_state_save(vm, &kvm, e))
		goto out;
	if (vm_save_devices(vm, &devs) || kvm.error || devs.error) {
		error_set(e, EXIT_HOST, "cannot save the device state (out of memory?)");
		goto out;
	}
	mark = state_section_begin(w, "kvm", 1);
	state_put_bytes(w, kvm.data, kvm.len);
	state_section_end(w, mark);
	mark = state_section_begin(w, "devices", 1);
	state_put_bytes(w, devs.data, devs.len);
	state_section_end(w, mark);
	if (w->error)
		error_set(e, EXIT_HOST, "out of memory");
	else
		rc = 0;
out:
	state_writer_free(&kvm);
	state_writer_free(&devs);
	return rc;
}

static int job_capture(struct snap_job *j, bool live, struct error *e)
{
	int rc = -1;

	if (snapshot_state_save(j->vm, &j->state, e))
		return -1;
	json_t *cpu = snapshot_cpu_json(j->vm, e);
	if (!cpu)
		goto out;
	json_object_set_new(j->manifest, "cpu", cpu);
	if (live) {
		j->live = live_mem_arm(&j->vm->mem, j->memfd, e);
		rc = j->live ? 0 : -1;
		goto out;
	}
	if (j->compress)
		rc = guest_mem_save_zstd(&j->vm->mem, j->memfd, SNAPSHOT_ZSTD_LEVEL,
					 &j->st.memory_data_bytes, &j->st.memory_file_bytes, &j->hash, e);
	else
		rc = guest_mem_save_file(&j->vm->mem, j->memfd, &j->st.memory_data_bytes, &j->hash, e);
out:
	return rc;
}

/* The rest: a live snapshot's memory, the state file, the checksums, the
 * manifest, fsyncs and the rename.  0, or -1 with `e`. */
static int job_finish(struct snap_job *j, struct error *e)
{
	char hex[17], *text;
	json_t *files;
	uint64_t seed_size = 0, seed_hash = 0;
	int rc, seed;

	if (j->live) {
		if (live_mem_write(j->live, &j->st.memory_data_bytes, e))
			return -1;
		j->st.waits = live_mem_faults(j->live);
		/* the memory of the pause instant is the file's, not the guest's */
		if (guest_mem_file_hash(j->memfd, j->vm->mem.size, &j->hash, e))
			return -1;
	}
	if (fsync(j->memfd) < 0)
		return error_set(e, EXIT_HOST, "memory: %s", strerror(errno));
	if (write_file(j->dirfd, "state", j->state.data, j->state.len, e))
		return -1;
	seed = snap_disks_save_seed(j->disks, j->vm, j->dirfd, &seed_size, &seed_hash, e);
	if (seed < 0)
		return -1;
	j->st.memory_bytes = j->vm->mem.size;
	j->st.state_bytes = j->state.len;
	files = json_object();
	hex64(j->hash, hex);
	json_object_set_new(files, "memory", json_pack("{s:I, s:I, s:s}",
		"size", (json_int_t)j->vm->mem.size, "data_bytes", (json_int_t)j->st.memory_data_bytes,
		"xxh3", hex));
	if (j->compress) {      /* the xxh3 is of the RAM, not of the file */
		json_t *mo = json_object_get(files, "memory");

		json_object_set_new(mo, "compression", json_string("zstd"));
		json_object_set_new(mo, "file", json_string("memory.zst"));
		json_object_set_new(mo, "file_bytes", json_integer((json_int_t)j->st.memory_file_bytes));
	}
	hex64(XXH3_64bits(j->state.data, j->state.len), hex);
	json_object_set_new(files, "state", json_pack("{s:I, s:s}", "size",
						      (json_int_t)j->state.len, "xxh3", hex));
	if (seed) {
		hex64(seed_hash, hex);
		json_object_set_new(files, SNAP_SEED_FILE, json_pack("{s:I, s:s}", "size",
								     (json_int_t)seed_size, "xxh3", hex));
	}
	json_object_set_new(j->manifest, "files", files);
	json_object_set_new(j->manifest, "live", json_boolean(j->live != NULL));
	text = json_dumps(j->manifest, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text)
		return error_set(e, EXIT_HOST, "out of memory");
	rc = write_file(j->dirfd, "manifest.json", text, strlen(text), e);
	free(text);
	if (rc)
		return -1;
	if (fsync(j->dirfd) < 0 || rename(j->partial, j->dir) < 0)
		return error_set(e, EXIT_HOST, "%s: %s", j->dir, strerror(errno));
	fsync_parent(j->dir);
	j->st.total_ns = now_ns() - j->t0;
	return 0;
}

/* Pause (unless paused), quiesce, capture, and let the VM go on. */
static int job_pause_and_capture(struct snap_job *j, bool live, struct error *e)
{
	bool was_paused = vm_is_paused(j->vm);
	uint64_t tp = now_ns();
	int rc;

	vm_pause(j->vm);
	vm_quiesce_devices(j->vm, true);
	rc = job_capture(j, live, e);
	if (!rc)      /* the disks of this instant: frozen, the VM on overlays */
		rc = snap_disks_switch(j->disks, j->vm, e);
	vm_quiesce_devices(j->vm, false);
	if (!was_paused)
		vm_resume(j->vm);
	j->st.pause_ns = now_ns() - tp;
	return rc;
}

int snapshot_create(struct vm *vm, const char *dir, const struct snap_overlay_file *given,
		    bool compress, struct snapshot_stats *st, struct error *e)
{
	struct snap_job *j = job_begin(vm, dir, given, compress, e);
	int rc;

	if (!j)
		return -1;
	rc = job_pause_and_capture(j, false, e) || job_finish(j, e) ? -1 : 0;
	if (st)
		*st = j->st;
	job_free(j, rc == 0);
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

/* How much memory this process may still take: the host's MemAvailable,
 * or less where its cgroup (v2) has a memory.max.  UINT64_MAX if unknown. */
static uint64_t memory_available(void)
{
	uint64_t avail = UINT64_MAX, max, cur;
	char line[4096 + 16], path[4200];
	FILE *f = fopen("/proc/meminfo", "re");

	if (f) {
		unsigned long long kib;

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
				avail = (uint64_t)kib << 10;
		fclose(f);
	}
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return avail;
	while (fgets(line, sizeof(line), f)) {
		FILE *m, *c;

		if (strncmp(line, "0::/", 4))
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
		m = fopen(path, "re");
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", line + 3);
		c = fopen(path, "re");
		if (m && c && fscanf(m, "%" SCNu64, &max) == 1 && fscanf(c, "%" SCNu64, &cur) == 1)
			avail = cur >= max ? 0 : max - cur < avail ? max - cur : avail;
		if (m)
			fclose(m);
		if (c)
			fclose(c);
	}
	fclose(f);
	return avail;
}

/* A plain restore copies the snapshot's memory data into new RAM: refuse
 * up front (EXIT_RESOURCE) where the host or this process's cgroup has not
 * that much memory, instead of failing part way or waking the OOM killer.
 * (A clone maps the file and shares its pages: not checked.) */
static int check_room(const char *dir, json_t *jmem, struct error *e)
{
	uint64_t need = (uint64_t)json_integer_value(json_object_get(jmem, "data_bytes"));
	uint64_t avail = memory_available();

	if (need > avail)
		return error_set(e, EXIT_RESOURCE, "%s: restoring needs %" PRIu64 " MiB of memory for "
				 "the snapshot's data, and this host (or this process's cgroup) has %"
				 PRIu64 " MiB available; free some, or start it as a --clone, which "
				 "shares the snapshot's pages", dir, need >> 20, avail >> 20);
	return 0;
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

/* The copy of the cloud-init seed, when a disk of the manifest is one
 * (state/snapshot_disk.h): whole, as its checksum says. */
#define SEED_FILE_MAX (64u << 20)

static int check_seed(const char *dir, json_t *disks, json_t *files, struct error *e)
{
	size_t i, len;
	json_t *o;
	void *buf;
	int rc;

	json_array_foreach(disks, i, o) {
		if (!json_is_true(json_object_get(o, "seed")))
			continue;
		buf = read_file(dir, SNAP_SEED_FILE, SEED_FILE_MAX, &len, e);
		if (!buf)
			return -1;
		rc = check_hash(dir, SNAP_SEED_FILE, json_object_get(files, SNAP_SEED_FILE), len,
				XXH3_64bits(buf, len), e);
		free(buf);
		return rc;
	}
	return 0;
}

static int state_restore(struct vm *vm, const char *what, const void *buf, size_t len,
			 bool fresh, uint64_t saved_rt, struct error *e)
{
	struct state_reader r, payload;
	bool have_kvm = false, have_devs = false;
	char name[64];
	uint16_t ver;

	state_reader_init(&r, buf, len);
	while (r.pos < r.len) {
		if (state_section_read(&r, name, &ver, &payload) < 0)
			return error_set(e, EXIT_BADSTATE, "%s: a damaged section at offset %zu",
					 what, r.pos);
		if (ver != 1)
			return error_set(e, EXIT_BADSTATE, "%s: section \"%s\" has version %u, "
					 "this Shoal reads 1", what, name, ver);
		if (!strcmp(name, "devices") && !have_devs) {
			if (vm_restore_devices(vm, payload.data + payload.pos,
					       payload.len - payload.pos, e)) {
				e->status = EXIT_BADSTATE;
				return -1;
			}
			have_devs = true;
		} else if (!strcmp(name, "kvm") && !have_kvm) {
			if (fresh ? kvm_state_restore_fresh(vm, payload.data + payload.pos,
							    payload.len - payload.pos, saved_rt, e)
				  : kvm_state_restore(vm, payload.data + payload.pos,
						      payload.len - payload.pos, e))
				return -1;
			have_kvm = true;
		} else {
			return error_set(e, EXIT_BADSTATE, "%s: unexpected section \"%s\"",
					 what, name);
		}
	}
	if (!have_kvm || !have_devs)
		return error_set(e, EXIT_BADSTATE, "%s: no \"%s\" section", what,
				 have_kvm ? "devices" : "kvm");
	return 0;
}

int snapshot_state_restore(struct vm *vm, const char *what, const void *buf, size_t len,
			   struct error *e)
{
	return state_restore(vm, what, buf, len, false, 0, e);
}

int snapshot_state_restore_fresh(struct vm *vm, const char *what, const void *buf, size_t len,
				 uint64_t saved_rt, struct error *e)
{
	return state_restore(vm, what, buf, len, true, saved_rt, e);
}

json_t *snapshot_parse_manifest(const char *dir, const char *text, size_t len,
				struct vm_config *cfg, struct error *e)
{
	json_error_t je;
	json_t *m, *v;
	const char *fmt;

	m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
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

/* The manifest file: at most MANIFEST_MAX bytes, then parsed as above. */
static json_t *load_manifest(const char *dir, struct vm_config *cfg, struct error *e)
{
	size_t len;
	char *text = read_file(dir, "manifest.json", MANIFEST_MAX, &len, e);
	json_t *m;

	if (!text)
		return NULL;
	m = snapshot_parse_manifest(dir, text, len, cfg, e);
	free(text);
	return m;
}

int snapshot_read_config(const char *dir, struct vm_config *cfg, struct error *e)
{
	json_t *m = load_manifest(dir, cfg, e);

	json_decref(m);
	return m ? 0 : -1;
}

struct vm *snapshot_restore(const char *dir, const struct snapshot_overrides *ov,
			    struct error *e)
{
	struct vm_config cfg;
	struct vm *vm = NULL;
	json_t *m, *files, *zmem;
	void *state = NULL;
	size_t state_len = 0;
	char path[PATH_MAX], **overlays = NULL;
	int memfd = -1;

	vm_config_init(&cfg);
	m = load_manifest(dir, &cfg, e);
	if (!m)
		goto out;
	files = json_object_get(m, "files");
	if (snap_disks_check(dir, json_object_get(m, "disks"), &cfg, e) ||
	    check_seed(dir, json_object_get(m, "disks"), files, e))
		goto out;
	state = read_file(dir, "state", STATE_MAX, &state_len, e);
	if (!state || check_hash(dir, "state", json_object_get(files, "state"), state_len,
				 XXH3_64bits(state, state_len), e))
		goto out;
	zmem = json_object_get(json_object_get(files, "memory"), "compression");
	if (zmem && !(json_is_string(zmem) && !strcmp(json_string_value(zmem), "zstd"))) {
		error_set(e, EXIT_BADSTATE, "%s/manifest.json: memory compression %s: this Shoal "
			  "reads zstd only", dir, json_is_string(zmem) ? json_string_value(zmem) : "?");
		goto out;
	}
	if (zmem && ov && ov->clone) {
		error_set(e, EXIT_USAGE, "%s: its memory is compressed (--compress), and a clone maps "
			  "the memory file: take the template's snapshot without --compress, or "
			  "restore this one without --clone", dir);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, zmem ? "memory.zst" : "memory");
	memfd = open(path, O_RDONLY | O_CLOEXEC);
	if (memfd < 0) {
		error_set(e, EXIT_BADSTATE, "%s: %s", path, strerror(errno));
		goto out;
	}
	/* The file is checked before the VM is built (a clone reads only what
	 * its guest touches, so its start does not read the whole file; a
	 * compressed one is checked as it is decompressed, below). */
	if (zmem && check_room(dir, json_object_get(files, "memory"), e))
		goto out;
	if (!(ov && ov->clone) && !zmem) {
		struct stat st;
		uint64_t hash;

		if (fstat(memfd, &st) < 0) {
			error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (check_room(dir, json_object_get(files, "memory"), e))
			goto out;
		if (guest_mem_file_hash(memfd, (uint64_t)st.st_size, &hash, e) ||
		    check_hash(dir, "memory", json_object_get(files, "memory"),
			       (uint64_t)st.st_size, hash, e))
			goto out;
	}
	if (ov) {
		if (ov->console_set) {
			cfg.console = ov->console;
			free(cfg.console_path);
			cfg.console_path = ov->console_path ? strdup(ov->console_path) : NULL;
		}
		cfg.timeout_s = ov->timeout_s;
		if (snapshot_new_identity(&cfg, ov, e) ||
		    snapshot_own_host_resources(dir, &cfg, ov, e))
			goto out;
	}
	if (snap_disks_restore(dir, json_object_get(m, "disks"), &cfg,
			       ov ? ov->disk_overlay_dir : NULL, &overlays, e))
		goto out;
	vm = zmem ? vm_create_incoming(&cfg, e) : vm_create_restored(&cfg, memfd, ov && ov->clone, e);
	if (vm && zmem) {       /* RAM from the records; the whole of it hashed */
		uint64_t hash;

		if (guest_mem_load_zstd(&vm->mem, memfd, &hash, e) ||
		    check_hash(dir, "memory", json_object_get(files, "memory"), vm->mem.size, hash, e)) {
			vm_destroy(vm);
			vm = NULL;
		}
	}
	if (!vm) {
		if (strstr(e->msg, "memory file"))
			snprintf(e->msg + strlen(e->msg), sizeof(e->msg) - strlen(e->msg), " (%s)", path);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	if (snapshot_check_cpu(vm, path, json_object_get(m, "cpu"), e)) {
		vm_destroy(vm);
		vm = NULL;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/state", dir);
	if (snapshot_state_restore(vm, path, state, state_len, e)) {
		vm_destroy(vm);
		vm = NULL;
	}
out:
	snap_disks_created_free(overlays, !vm);   /* a failed restore leaves none */
	if (memfd >= 0)
		close(memfd);
	free(state);
	json_decref(m);
	vm_config_free(&cfg);
	return vm;
}

/* ---- the control commands ---- */

/* A VM's live snapshot in progress (one at a time), and how the last one
 * ended.  `job` and `state` are under `lock`; the writer thread owns the
 * job's files until it sets `state`. */
struct snap_ctl {
	pthread_mutex_t lock;
	struct snap_job *job;
	pthread_t thread;
	bool running, joined;
	const char *state;               /* "none", "writing", "done", "failed" */
	char error[1024];
	struct snapshot_stats st;
	char dir[PATH_MAX];
};

static json_t *stats_json(const char *dir, const struct snapshot_stats *st)
{
	json_t *o = json_pack("{s:b, s:s, s:f, s:f, s:I, s:I, s:I, s:I}", "ok", 1, "dir", dir,
			      "pause_ms", st->pause_ns / 1e6, "total_ms", st->total_ns / 1e6,
			      "memory_bytes", (json_int_t)st->memory_bytes,
			      "memory_data_bytes", (json_int_t)st->memory_data_bytes,
			      "state_bytes", (json_int_t)st->state_bytes,
			      "writes_waited", (json_int_t)st->waits);

	if (o && st->memory_file_bytes)
		json_object_set_new(o, "memory_file_bytes", json_integer((json_int_t)st->memory_file_bytes));
	return o;
}

static void *live_writer(void *arg)
{
	struct snap_ctl *c = arg;
	struct snap_job *j = c->job;
	struct error e = { 0 };
	int rc;

	seccomp_thread_enter(SECCOMP_SNAP_WRITER);
	rc = job_finish(j, &e);

	pthread_mutex_lock(&c->lock);
	c->st = j->st;
	if (rc)
		snprintf(c->error, sizeof(c->error), "%s", e.msg);
	c->state = rc ? "failed" : "done";
	c->job = NULL;
	pthread_mutex_unlock(&c->lock);
	if (rc)
		log_error("live snapshot %s: %s", j->dir, e.msg);
	else
		log_info("live snapshot %s: written in %.1f ms", j->dir, j->st.total_ns / 1e6);
	job_free(j, rc == 0);
	return NULL;
}

static json_t *snapshot_live_cmd(struct vm *vm, struct snap_ctl *c, const char *dir,
				 const struct snap_overlay_file *given)
{
	struct error e = { 0 };
	struct snap_job *j;

	/* The zero-page layer (mem/zero_blocks.c) maps and write-protects
	 * blocks of the same mapping with a userfaultfd of its own: a block it
	 * switched during the write would leave the live snapshot's
	 * protection, and the file would hold memory newer than the pause. */
	if (vm->mem.released)
		return json_pack("{s:b, s:s}", "ok", 0, "error", "snapshot: --live is not available "
				 "while the zero-page layer is on (shoal run --zero-scan): take the "
				 "snapshot without --live");

	pthread_mutex_lock(&c->lock);
	if (c->running && !c->joined && c->job) {
		pthread_mutex_unlock(&c->lock);
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 "snapshot: a live snapshot of this VM is still being written");
	}
	pthread_mutex_unlock(&c->lock);
	if (c->running && !c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
	}
	j = job_begin(vm, dir, given, false, &e);
	if (!j || job_pause_and_capture(j, true, &e)) {
		job_free(j, false);
		return json_pack("{s:b, s:s}", "ok", 0, "error", e.msg);
	}
	pthread_mutex_lock(&c->lock);
	c->job = j;
	c->state = "writing";
	c->error[0] = 0;
	c->st = j->st;
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	c->running = true;
	c->joined = false;
	if (pthread_create(&c->thread, NULL, live_writer, c)) {
		c->running = false;
		c->job = NULL;
		c->state = "failed";
		pthread_mutex_unlock(&c->lock);
		job_free(j, false);
		return json_pack("{s:b, s:s}", "ok", 0, "error", "snapshot: cannot start the writer");
	}
	pthread_mutex_unlock(&c->lock);
	log_info("live snapshot %s: paused %.2f ms; memory is written while the VM runs", dir,
		 j->st.pause_ns / 1e6);
	return json_pack("{s:b, s:s, s:s, s:b, s:f}", "ok", 1, "dir", dir, "state", "writing",
			 "live", 1, "pause_ms", j->st.pause_ns / 1e6);
}

/* {"cmd": "snapshot", "dir": DIR[, "live": true][, "overlay": PATH]}; with
 * "overlay", the request brings that file open (SCM_RIGHTS): shoald's
 * new overlay for a jailed VMM's writable disk (snapshot_disk.h). */
static json_t *snapshot_cmd(struct vm *vm, json_t *req, void *opaque)
{
	const char *dir = json_string_value(json_object_get(req, "dir"));
	json_t *ov = json_object_get(req, "overlay");
	struct snap_overlay_file given = { .fd = control_take_fd(), .path = json_string_value(ov) };
	struct snapshot_stats st;
	struct error e = { 0 };
	json_t *reply = NULL;

	if (!dir || dir[0] != '/')
		reply = json_pack("{s:b, s:s}", "ok", 0, "error",
				  "snapshot: \"dir\" must be an absolute path");
	else if ((ov && (!given.path || given.path[0] != '/')) || (given.fd >= 0) != !!ov)
		reply = json_pack("{s:b, s:s}", "ok", 0, "error", "snapshot: \"overlay\" is an "
				  "absolute path, sent with that file open, or neither");
	else if (json_is_true(json_object_get(req, "live")) &&
		 json_is_true(json_object_get(req, "compress")))
		reply = json_pack("{s:b, s:s}", "ok", 0, "error", "snapshot: --compress and --live "
				  "cannot go together (a live snapshot writes memory in the order the "
				  "guest touches it; a compressed file is written in one pass)");
	else if (json_is_true(json_object_get(req, "live")))
		reply = snapshot_live_cmd(vm, opaque, dir, ov ? &given : NULL);
	else if (snapshot_create(vm, dir, ov ? &given : NULL,
				 json_is_true(json_object_get(req, "compress")), &st, &e))
		reply = json_pack("{s:b, s:s}", "ok", 0, "error", e.msg);
	if (given.fd >= 0)
		close(given.fd);        /* a switched disk holds its own duplicate */
	if (reply)
		return reply;
	log_info("snapshot %s: %.1f ms paused, %" PRIu64 " of %" PRIu64 " MiB of memory written",
		 dir, st.pause_ns / 1e6, st.memory_data_bytes >> 20, st.memory_bytes >> 20);
	return stats_json(dir, &st);
}

/* {"cmd": "snapshot-status"}: the live snapshot being written, or how the
 * last one ended. */
static json_t *snapshot_status_cmd(struct vm *vm, json_t *req, void *opaque)
{
	struct snap_ctl *c = opaque;
	json_t *o;

	pthread_mutex_lock(&c->lock);
	if (!strcmp(c->state, "done")) {
		o = stats_json(c->dir, &c->st);
		json_object_set_new(o, "state", json_string("done"));
	} else {
		o = json_pack("{s:b, s:s, s:s}", "ok", 1, "state", c->state, "dir", c->dir);
		if (c->job)
			json_object_set_new(o, "done_bytes",
					    json_integer((json_int_t)live_mem_done_bytes(c->job->live)));
		json_object_set_new(o, "memory_bytes", json_integer((json_int_t)vm->mem.size));
		if (c->error[0])
			json_object_set_new(o, "error", json_string(c->error));
	}
	pthread_mutex_unlock(&c->lock);
	return o;
}

static struct snap_ctl *snap_ctl_of(struct vm *vm)
{
	for (int i = 0; i < vm->ncommands; i++)
		if (vm->commands[i].fn == snapshot_status_cmd)
			return vm->commands[i].opaque;
	return NULL;
}

void snapshot_add_command(struct vm *vm)
{
	struct snap_ctl *c = calloc(1, sizeof(*c));

	if (!c)
		return;
	pthread_mutex_init(&c->lock, NULL);
	c->state = "none";
	if (vm_add_command(vm, "snapshot", snapshot_cmd, c) ||
	    vm_add_command(vm, "snapshot-status", snapshot_status_cmd, c))
		log_warn("snapshot: the control socket has no room for its commands");
}

void snapshot_wait(struct vm *vm)
{
	struct snap_ctl *c = snap_ctl_of(vm);

	if (!c)
		return;
	if (c->running && !c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}
