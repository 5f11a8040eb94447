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
 *   cpu.max      limits.cpus CPUs' worth of each 100 ms period, else "max".
 * A VMM the cgroup's OOM killer ended is reported as such (memory.events'
 * oom_kill), as the VM's exit reason.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

#define CG_ROOT "/sys/fs/cgroup"

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
	h->cgroup_dir = strdup(base);
	log_info("cgroups: each VM in %s/vm-NAME", base);
	return;
off:
	snprintf(h->cgroup_off, sizeof(h->cgroup_off), "%s", why);
	log_warn("cgroups: off, VMs run without limits: %s", why);
}

static void cg_vm_dir(const struct host *h, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/vm-%s", h->cgroup_dir, name);
}

int host_cgroup_prepare(struct host *h, const char *name, const struct host_limits *l,
			uint64_t guest_memory, struct api_err *e)
{
	char dir[4400], val[64];
	uint64_t max;
	int rc, fd;

	if (!h->cgroup_dir) {
		if (l->cpus > 0 || l->memory_max)
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
