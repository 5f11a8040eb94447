/*
 * cgroup.c - each VM's VMM in a cgroup (v2) of its own, under the daemon's,
 * with the limits its spec asks for.
 *
 * Layout: the daemon finds its own cgroup (/proc/self/cgroup, "0::/PATH")
 * and makes BASE = /sys/fs/cgroup/PATH/shoal-ID (ID: a hash of the state
 * directory, so two daemons on one host never share a VM cgroup), enables
 * the cpu and memory controllers for BASE's children, and puts each VM at
 * BASE/vm-NAME.  cgroup v2's "no internal processes" rule forbids handing
 * controllers to children of a cgroup that holds processes (the daemon's,
 * under systemd with Delegate=yes): then the daemon first moves itself into
 * a leaf, PATH/shoald, as systemd's own delegation advice says.
 *
 * At each start (supervisor.c) the VM's cgroup is made afresh (its
 * counters start at zero), its limits written, and the monitor process is
 * moved into it between fork and exec (one write(2) of "0" to an
 * already-open cgroup.procs: async-signal-safe), so the VMM it forks is
 * born inside.  Limits:
 *   memory.max   the spec's limits.memory_max, else guest memory + 25 % +
 *                256 MiB (the VMM, its caches and page cache it causes);
 *                the OOM killer then picks the VMM, the one large process
 *                there (not memory.oom.group: the small monitor beside it
 *                must live to record how the VMM died);
 *   cpu.max      limits.cpus CPUs' worth of each 100 ms period, else "max";
 *   io.max       limits.io (bytes and operations per second, read and
 *                write) on the block device under each disk: stat(2) of
 *                the image's path gives st_dev (st_rdev for a disk that is
 *                itself a block device); a partition is turned into its
 *                whole disk (/sys/dev/block/MAJ:MIN/partition, and the
 *                parent's "dev"), as io.max takes whole disks only.  Disks
 *                on one device share its limit (io.max is per cgroup and
 *                device).  A disk whose file system has no block device
 *                (tmpfs, 9p, overlay, btrfs, NFS) cannot be limited: the
 *                start fails naming the disk; so does one where the io
 *                controller is not available.  Only the disk files are
 *                limited, not a qcow2's backing files on another device.
 * A VMM the cgroup's OOM killer ended is reported as such (memory.events'
 * oom_kill), as the VM's exit reason.
 *
 * Limit events: a thread (cg_watch) reads, every CG_WATCH_S seconds, each
 * VM cgroup's cpu.stat (nr_throttled, throttled_usec) and memory.events
 * ("max": usage reached memory.max and reclaim ran) and adds one "limit"
 * event per VM and limit whose counter rose since the last look, with the
 * count: at most one event per limit, VM and period however often it was
 * hit.  The base line is taken when the cgroup is made (a start) or, for a
 * VM reattached after a daemon restart, at the first look, so old counts
 * are never reported as new.  io.max has no such counter (io.stat counts
 * bytes, not throttling), so it has no events.
 *
 * Where cgroup v2 is not there or not writable (a container without
 * delegation), VMs run without one: the daemon says so once at start, and
 * a spec that asks for limits fails to start, naming the reason; nothing
 * is silently unenforced.
 *
 * Hand-written: libcgroup speaks v1 and its own configuration files; the
 * few v2 files written here need no library.
 */
#include "host/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "vmm/config.h"

#define CG_ROOT "/sys/fs/cgroup"
#define CG_WATCH_S 5            /* limit events: one look, and at most one event, per period */

/* Write `text` into DIR/FILE. */
static int cg_write(const char *dir, const char *file, const char *text)
{
	char path[8800];
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* Read DIR/FILE into buf (NUL-terminated); bytes read or -errno. */
static ssize_t cg_read(const char *dir, const char *file, char *buf, size_t size)
{
	char path[8800];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* FNV-1a of the state directory: the daemon's part of the tree. */
static unsigned long cg_id(const char *s)
{
	unsigned long h = 1469598103934665603UL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211UL;
	return h & 0xffffffffUL;
}

/* The daemon's own cgroup directory. */
static int cg_self(char *out, size_t size)
{
	char buf[4096], *p;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return -errno;
	while (fgets(buf, sizeof(buf), f)) {
		if (strncmp(buf, "0::", 3))
			continue;
		fclose(f);
		p = buf + 3;
		p[strcspn(p, "\n")] = '\0';
		snprintf(out, size, CG_ROOT "%s", strcmp(p, "/") ? p : "");
		return 0;
	}
	fclose(f);
	return -ENOENT;
}

/* Does DIR hold processes of its own? */
static bool cg_populated_here(const char *dir)
{
	char buf[64];

	return cg_read(dir, "cgroup.procs", buf, sizeof(buf)) > 0;
}

static void cg_vm_dir(const struct host *h, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/vm-%s", h->cgroup_dir, name);
}

/* ---- limit events (see the essay) ---- */

struct cg_count {
	uint64_t throttled, throttled_usec, mem_max;
};

struct cg_seen {
	char name[HOST_NAME_MAX_LEN + 1];
	struct cg_count c;
};

struct cg_watch {
	struct host *h;
	pthread_t thread;
	pthread_mutex_t mu;         /* guards everything below */
	pthread_cond_t cond;
	bool stop;
	struct cg_seen *seen;       /* last counts per VM */
	size_t n;
};

/* The value after `key ` in a flat-keyed cgroup file. */
static uint64_t cg_key(const char *buf, const char *key)
{
	size_t len = strlen(key);
	const char *p = buf;

	while ((p = strstr(p, key))) {
		if ((p == buf || p[-1] == '\n') && p[len] == ' ')
			return strtoull(p + len + 1, NULL, 10);
		p += len;
	}
	return 0;
}

/* The counters of the cgroup at `dir`; -1 when it is gone. */
static int cg_counts(const char *dir, struct cg_count *c)
{
	char buf[1024];

	memset(c, 0, sizeof(*c));
	if (cg_read(dir, "cpu.stat", buf, sizeof(buf)) < 0)
		return -1;
	c->throttled = cg_key(buf, "nr_throttled");
	c->throttled_usec = cg_key(buf, "throttled_usec");
	if (cg_read(dir, "memory.events", buf, sizeof(buf)) > 0)
		c->mem_max = cg_key(buf, "max");
	return 0;
}

static struct cg_seen *cg_seen_find(struct cg_watch *w, const char *name)
{
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->seen[i].name, name))
			return &w->seen[i];
	return NULL;
}

/* A VM's cgroup was just made: its counts now are the base line. */
static void cg_watch_baseline(struct host *h, const char *name, const char *dir)
{
	struct cg_watch *w = h->cgroup_watch;
	struct cg_seen *s, *grown;
	struct cg_count c;

	if (!w || cg_counts(dir, &c))
		return;
	pthread_mutex_lock(&w->mu);
	s = cg_seen_find(w, name);
	if (!s && (grown = realloc(w->seen, (w->n + 1) * sizeof(*grown)))) {
		w->seen = grown;
		s = &w->seen[w->n++];
		snprintf(s->name, sizeof(s->name), "%s", name);
	}
	if (s)
		s->c = c;
	pthread_mutex_unlock(&w->mu);
}

/* Add one "limit" event (h->lock held). */
static void cg_event_locked(struct host *h, const char *vm, const char *limit,
			    uint64_t count, const char *message)
{
	json_t *d = json_pack("{s:s, s:I, s:i, s:s}", "limit", limit, "count", (json_int_t)count,
			      "period_s", CG_WATCH_S, "message", message);
	char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;

	if (text)
		host_event_locked(h, vm, "limit", text);
	free(text);
	json_decref(d);
}

/* One look at every VM's cgroup: compare with the last, report rises. */
static void cg_watch_once(struct cg_watch *w)
{
	struct host *h = w->h;
	char (*names)[HOST_NAME_MAX_LEN + 1] = NULL, dir[4400], msg[200];
	struct cg_seen *now = NULL, *old;
	struct { size_t vm; struct cg_count d; } *rise = NULL;
	size_t n = 0, nnow = 0, nrise = 0;

	pthread_mutex_lock(&h->lock);
	if (h->nvms) {
		names = calloc(h->nvms, sizeof(*names));
		for (size_t i = 0; names && i < h->nvms; i++)
			snprintf(names[n++], sizeof(*names), "%s", h->vms[i]->rec.name);
	}
	pthread_mutex_unlock(&h->lock);
	if (n) {
		now = calloc(n, sizeof(*now));
		rise = calloc(n, sizeof(*rise));
	}
	if (n && (!now || !rise))
		goto out;
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < n; i++) {
		struct cg_count c;

		cg_vm_dir(h, names[i], dir, sizeof(dir));
		if (cg_counts(dir, &c))
			continue;               /* no cgroup (deleted, never started) */
		old = cg_seen_find(w, names[i]);
		if (old) {
			/* a counter that fell was reset: all of it is new */
			uint64_t dt = c.throttled >= old->c.throttled ? c.throttled - old->c.throttled : c.throttled;
			uint64_t du = c.throttled_usec >= old->c.throttled_usec ?
				      c.throttled_usec - old->c.throttled_usec : c.throttled_usec;
			uint64_t dm = c.mem_max >= old->c.mem_max ? c.mem_max - old->c.mem_max : c.mem_max;

			if (dt || dm) {
				rise[nrise].vm = i;
				rise[nrise].d = (struct cg_count){ dt, du, dm };
				nrise++;
			}
		}
		snprintf(now[nnow].name, sizeof(now[nnow].name), "%s", names[i]);
		now[nnow++].c = c;
	}
	free(w->seen);                  /* VMs gone are forgotten */
	w->seen = now;
	w->n = nnow;
	now = NULL;
	pthread_mutex_unlock(&w->mu);
	if (!nrise)
		goto out;
	pthread_mutex_lock(&h->lock);
	for (size_t r = 0; r < nrise; r++) {
		const char *vm = names[rise[r].vm];

		if (rise[r].d.throttled) {
			snprintf(msg, sizeof(msg), "throttled %llu times (%.2f s held back) in the last %d s",
				 (unsigned long long)rise[r].d.throttled,
				 rise[r].d.throttled_usec / 1e6, CG_WATCH_S);
			cg_event_locked(h, vm, "cpu.max", rise[r].d.throttled, msg);
		}
		if (rise[r].d.mem_max) {
			snprintf(msg, sizeof(msg), "memory use reached memory.max %llu times in the last %d s",
				 (unsigned long long)rise[r].d.mem_max, CG_WATCH_S);
			cg_event_locked(h, vm, "memory.max", rise[r].d.mem_max, msg);
		}
	}
	pthread_mutex_unlock(&h->lock);
out:
	free(now);
	free(rise);
	free(names);
}

static void *cg_watch_thread(void *arg)
{
	struct cg_watch *w = arg;
	struct timespec t;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_sec += CG_WATCH_S;
		while (!w->stop && pthread_cond_timedwait(&w->cond, &w->mu, &t) != ETIMEDOUT)
			;
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->mu);
		cg_watch_once(w);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void cg_watch_start(struct host *h)
{
	struct cg_watch *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;

	if (!w) {
		log_warn("cgroups: out of memory: no limit events");
		return;
	}
	w->h = h;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&w->thread, NULL, cg_watch_thread, w)) {
		log_warn("cgroups: cannot start the limit watcher: no limit events");
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->mu);
		free(w);
		return;
	}
	h->cgroup_watch = w;
}

void host_cgroup_stop(struct host *h)
{
	struct cg_watch *w = h->cgroup_watch;

	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->mu);
	free(w->seen);
	free(w);
	h->cgroup_watch = NULL;
}

void host_cgroup_init(struct host *h)
{
	char self[4200], base[4300], leaf[4300], why[200] = "";
	struct stat st;
	int rc;

	h->cgroup_dir = NULL;
	if (stat(CG_ROOT "/cgroup.controllers", &st)) {
		snprintf(why, sizeof(why), "cgroup v2 is not mounted at " CG_ROOT);
		goto off;
	}
	if (cg_self(self, sizeof(self))) {
		snprintf(why, sizeof(why), "/proc/self/cgroup names no cgroup v2");
		goto off;
	}
	/* the root may hold processes and still hand out controllers */
	if (strcmp(self, CG_ROOT) && cg_populated_here(self)) {
		snprintf(leaf, sizeof(leaf), "%s/shoald", self);
		if ((mkdir(leaf, 0755) && errno != EEXIST) || cg_write(leaf, "cgroup.procs", "0")) {
			snprintf(why, sizeof(why), "%.120s: cannot move the daemon into a leaf (%s)",
				 self, strerror(errno));
			goto off;
		}
	}
	if ((rc = cg_write(self, "cgroup.subtree_control", "+memory +cpu"))) {
		snprintf(why, sizeof(why), "%.120s: cannot enable the memory and cpu controllers (%s)",
			 self, strerror(-rc));
		goto off;
	}
	snprintf(base, sizeof(base), "%s/shoal-%08lx", self, cg_id(h->state_dir));
	if (mkdir(base, 0755) && errno != EEXIST) {
		snprintf(why, sizeof(why), "%.120s: %s", base, strerror(errno));
		goto off;
	}
	if ((rc = cg_write(base, "cgroup.subtree_control", "+memory +cpu"))) {
		snprintf(why, sizeof(why), "%.120s: cannot enable the memory and cpu controllers (%s)",
			 base, strerror(-rc));
		goto off;
	}
	/* io is optional: without it only specs that set limits.io fail */
	if ((rc = cg_write(self, "cgroup.subtree_control", "+io")) ||
	    (rc = cg_write(base, "cgroup.subtree_control", "+io")))
		log_warn("cgroups: the io controller is not available (%s): "
			 "VMs whose spec sets limits.io will not start", strerror(-rc));
	h->cgroup_dir = strdup(base);
	log_info("cgroups: each VM in %s/vm-NAME", base);
	cg_watch_start(h);
	return;
off:
	snprintf(h->cgroup_off, sizeof(h->cgroup_off), "%s", why);
	log_warn("cgroups: off, VMs run without limits: %s", why);
}

/* Name a file system that has no block device, for the error. */
static const char *cg_fs_name(const char *path, char *buf, size_t size)
{
	struct statfs sf;

	if (statfs(path, &sf))
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case TMPFS_MAGIC: return "tmpfs";
	case V9FS_MAGIC: return "9p";
	case OVERLAYFS_SUPER_MAGIC: return "overlay";
	case BTRFS_SUPER_MAGIC: return "btrfs";
	case NFS_SUPER_MAGIC: return "nfs";
	case FUSE_SUPER_MAGIC: return "fuse";
	case RAMFS_MAGIC: return "ramfs";
	default:
		snprintf(buf, size, "type 0x%lx", (unsigned long)sf.f_type);
		return buf;
	}
}

int host_cgroup_disk_device(const char *path, unsigned *maj, unsigned *min, char *why,
			    size_t size)
{
	char sys[128], buf[64];
	struct stat st;
	unsigned a, b;
	dev_t d;
	int fd;
	ssize_t n;

	if (stat(path, &st)) {
		snprintf(why, size, "cannot stat it (%s)", strerror(errno));
		return -1;
	}
	d = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(d), minor(d));
	if (access(sys, F_OK)) {
		snprintf(why, size, "its file system (%s) has no block device to limit (device %u:%u)",
			 cg_fs_name(path, buf, sizeof(buf)), major(d), minor(d));
		return -1;
	}
	/* a partition: io.max wants its whole disk, the parent in sysfs */
	snprintf(sys + strlen(sys), sizeof(sys) - strlen(sys), "/partition");
	if (!access(sys, F_OK)) {
		snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/../dev", major(d), minor(d));
		fd = open(sys, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n <= 0 || (buf[n] = '\0', sscanf(buf, "%u:%u", &a, &b) != 2)) {
			snprintf(why, size, "partition %u:%u: cannot find its whole disk in sysfs",
				 major(d), minor(d));
			return -1;
		}
		d = makedev(a, b);
	}
	*maj = major(d);
	*min = minor(d);
	return 0;
}

static bool cg_has_io(const struct host_limits *l)
{
	return l->read_bps || l->write_bps || l->read_iops || l->write_iops;
}

/* One io.max value: the number, or "max". */
static const char *cg_io_val(uint64_t v, char *buf, size_t size)
{
	if (!v)
		return "max";
	snprintf(buf, size, "%llu", (unsigned long long)v);
	return buf;
}

/* io.max for each distinct block device under the VM's disks. */
static int cg_set_io(struct host *h, const char *name, const char *dir,
		     const struct host_limits *l, const struct vm_config *c, struct api_err *e)
{
	char line[256], why[256], v[4][24];
	unsigned devs[VM_MAX_DISKS][2], maj, min;
	int ndev = 0, i, j, rc;

	if (cg_read(h->cgroup_dir, "cgroup.subtree_control", line, sizeof(line)) < 0 ||
	    !strstr(line, "io"))
		return api_err_set(e, 409, "no_cgroups",
				   "vm \"%s\": its spec sets limits.io, but the io controller is not "
				   "available to %s (see its parent's cgroup.controllers)", name,
				   h->cgroup_dir);
	if (c->ndisks == 0)
		return api_err_set(e, 409, "no_cgroups",
				   "vm \"%s\": its spec sets limits.io, but it has no disk", name);
	for (i = 0; i < c->ndisks; i++) {
		if (host_cgroup_disk_device(c->disks[i].path, &maj, &min, why, sizeof(why)))
			return api_err_set(e, 409, "no_cgroups",
					   "vm \"%s\": limits.io cannot be enforced on disk %s: %s",
					   name, c->disks[i].path, why);
		for (j = 0; j < ndev && (devs[j][0] != maj || devs[j][1] != min); j++)
			;
		if (j < ndev)
			continue;
		devs[ndev][0] = maj;
		devs[ndev++][1] = min;
		snprintf(line, sizeof(line), "%u:%u rbps=%s wbps=%s riops=%s wiops=%s", maj, min,
			 cg_io_val(l->read_bps, v[0], sizeof(v[0])),
			 cg_io_val(l->write_bps, v[1], sizeof(v[1])),
			 cg_io_val(l->read_iops, v[2], sizeof(v[2])),
			 cg_io_val(l->write_iops, v[3], sizeof(v[3])));
		if ((rc = cg_write(dir, "io.max", line)))
			return api_err_set(e, 500, "internal", "cgroup %s: io.max \"%s\" (disk %s): %s",
					   dir, line, c->disks[i].path, strerror(-rc));
	}
	return 0;
}

int host_cgroup_prepare(struct host *h, const char *name, const struct host_limits *l,
			const struct vm_config *c, struct api_err *e)
{
	char dir[4400], val[64];
	uint64_t max, guest_memory = c->memory;
	int rc, fd;

	if (!h->cgroup_dir) {
		if (l->cpus > 0 || l->memory_max || cg_has_io(l))
			return api_err_set(e, 409, "no_cgroups",
					   "vm \"%s\": its spec sets limits, but cgroups are off: %s",
					   name, h->cgroup_off);
		return -2;
	}
	cg_vm_dir(h, name, dir, sizeof(dir));
	rmdir(dir);             /* fresh counters; fails harmlessly while in use */
	if (mkdir(dir, 0755) && errno != EEXIST)
		return api_err_set(e, 500, "internal", "cgroup %s: %s", dir, strerror(errno));
	max = l->memory_max ? l->memory_max : guest_memory + guest_memory / 4 + (256ULL << 20);
	snprintf(val, sizeof(val), "%llu", (unsigned long long)max);
	if ((rc = cg_write(dir, "memory.max", val)))
		return api_err_set(e, 500, "internal", "cgroup %s: memory: %s", dir, strerror(-rc));
	if (l->cpus > 0)
		snprintf(val, sizeof(val), "%llu 100000", (unsigned long long)(l->cpus * 100000.0 + 0.5));
	else
		snprintf(val, sizeof(val), "max 100000");
	if ((rc = cg_write(dir, "cpu.max", val)))
		return api_err_set(e, 500, "internal", "cgroup %s: cpu.max %s: %s", dir, val,
				   strerror(-rc));
	if (cg_has_io(l) && cg_set_io(h, name, dir, l, c, e))
		return -1;
	cg_watch_baseline(h, name, dir);
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/cgroup.procs");
	fd = open(dir, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return api_err_set(e, 500, "internal", "%s: %s", dir, strerror(errno));
	return fd;
}

bool host_cgroup_oom_killed(const struct host *h, const char *name, char *why, size_t size)
{
	char dir[4400], buf[512], *p;
	unsigned long long kills = 0, max = 0;

	if (!h->cgroup_dir)
		return false;
	cg_vm_dir(h, name, dir, sizeof(dir));
	if (cg_read(dir, "memory.events", buf, sizeof(buf)) <= 0)
		return false;
	p = strstr(buf, "oom_kill ");
	if (!p || sscanf(p + 9, "%llu", &kills) != 1 || !kills)
		return false;
	if (cg_read(dir, "memory.max", buf, sizeof(buf)) > 0)
		max = strtoull(buf, NULL, 10);
	snprintf(why, size, ": killed by the OOM killer of its cgroup: memory.max %llu MiB exceeded",
		 max >> 20);
	return true;
}

void host_cgroup_remove(const struct host *h, const char *name)
{
	char dir[4400];

	if (!h->cgroup_dir)
		return;
	cg_vm_dir(h, name, dir, sizeof(dir));
	rmdir(dir);
}

void host_cgroup_path(const struct host *h, const char *name, char *out, size_t size)
{
	if (!h->cgroup_dir) {
		out[0] = '\0';
		return;
	}
	cg_vm_dir(h, name, out, size);
}
