/*
 * daemon.c - opening and closing a host: the state directory, its lock,
 * the database, the VM table loaded from it, and the supervisor (see host.h).
 *
 * State directory layout:
 *
 *   STATE_DIR/                  0711: others may reach the socket by name only
 *   STATE_DIR/shoald.lock       flock'd by the running daemon (one per dir)
 *   STATE_DIR/shoald.db         SQLite (db.c), 0600 with its -wal and -shm
 *   STATE_DIR/shoald.sock       the API (unless --socket), 0660
 *   STATE_DIR/images/           the default --allow-dir, 0700
 *   STATE_DIR/vms/              0700
 *   STATE_DIR/vms/NAME/         one directory per started VM:
 *       config.json             the VMM's settings (shoal run --config)
 *       control.sock            the VMM's control socket
 *       vmm.log                 the VMM's stdout and stderr
 *       console.log             the guest's serial console (or the name
 *                               the spec's "file:NAME" console gives)
 *       exit                    written by the monitor when the VMM exits
 *       vmm-exit                the VMM's own word on how it ended (shoal run
 *                               --exit-file): did it migrate the VM away?
 *   STATE_DIR/snapshots/        0700
 *   STATE_DIR/snapshots/SNAP/   one snapshot the daemon took (snapshots.c):
 *                               manifest.json, state, memory (docs/snapshots.md)
 *
 * Files a client names (kernels, disks, ...) live elsewhere: beneath the
 * --allow-dir directories, which the daemon confines its own checks to
 * (base/path_beneath.h) and hands to every VMM as its "confine" list.
 *
 * The helpers the other files share (errors, names, time, paths) are in
 * hostutil.c; this file is only the daemon's opening and closing.
 *
 * host_open loads the table from the database and then reattaches to the VMs
 * that were running (supervisor.c) before the API is started, so that the
 * first request already sees the truth.
 */
#include "host/host.h"
#include "host/cgroup.h"
#include "host/hoststore.h"
#include "host/net.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/spec.h"

/* mkdir that accepts an existing directory. */
static int host_mkdir(const char *path, mode_t mode, struct api_err *e)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return api_err_set(e, 500, "internal", "%s: %s", path, strerror(errno));
	return 0;
}

/* Take the state directory's lock: one daemon per directory. */
static int host_lock_dir(struct host *h, struct api_err *e)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/shoald.lock", h->state_dir);
	h->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (h->lock_fd < 0)
		return api_err_set(e, 500, "internal", "%s: %s", path, strerror(errno));
	if (flock(h->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return api_err_set(e, 409, "busy", "%s: another shoald uses this state directory",
				   h->state_dir);
	return 0;
}

/* The `shoal` binary next to our own executable. */
static char *host_default_vmm(void)
{
	char self[4096], path[4200];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return strdup("shoal");
	self[n] = '\0';
	snprintf(path, sizeof(path), "%s/shoal", dirname(self));
	return strdup(path);
}

/* db_vm_load_all callback: a record becomes a table entry. */
static void host_load_one(void *arg, struct vm_record *r)
{
	struct host *h = arg;
	struct host_spec s;
	struct hvm *vm = calloc(1, sizeof(*vm));
	int st;

	if (!vm) {
		vm_record_free(r);
		return;
	}
	vm->rec = *r;
	vm->pidfd = -1;
	vm->refs = 1;
	st = hvm_state_parse(r->state);
	vm->state = st < 0 ? HVM_EXITED : (enum hvm_state)st;
	vm->cpus = 1;
	if (r->spec && host_spec_parse(r->spec, strlen(r->spec), false, &s, NULL) == 0) {
		vm->cpus = s.cfg.cpus;
		vm->memory = s.cfg.memory;
		vm->restart = s.restart;
		host_spec_free(&s);
	}
	if (h->nvms == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct hvm **t = realloc(h->vms, cap * sizeof(*t));
		if (!t) {
			vm_record_free(&vm->rec);
			free(vm);
			return;
		}
		h->vms = t;
		h->cap = cap;
	}
	h->vms[h->nvms++] = vm;
}

/* Option defaults for what `opt` leaves at 0. */
static void host_defaults(struct host_options *o)
{
	if (!o->client_timeout_s)
		o->client_timeout_s = 30;
	if (!o->request_timeout_s)
		o->request_timeout_s = 60;
	if (!o->max_peer_conns)
		o->max_peer_conns = 128;
	if (!o->stop_timeout_s)
		o->stop_timeout_s = 10;
	if (!o->start_timeout_s)
		o->start_timeout_s = 30;
	if (!o->token_role)
		o->token_role = HOST_ROLE_ADMIN;
}

/* Warn about an allowed directory that holds the state directory: clients
 * could name the daemon's database or another VM's files. */
static void host_warn_overlap(const struct host *h, const char *dir)
{
	char a[PATH_MAX], st[PATH_MAX];
	size_t n;

	if (!realpath(dir, a) || !realpath(h->state_dir, st))
		return;
	n = strlen(a);
	if (!strncmp(st, a, n) && (st[n] == '/' || st[n] == '\0' || n == 1))
		log_warn("--allow-dir %s holds the state directory %s: "
			"clients can name the daemon's own files", dir, h->state_dir);
}

/* The directories clients may name files in: --allow-dir, or
 * STATE_DIR/images (made here, 0700); the process confines itself to them. */
static int host_allow_dirs(struct host *h, struct api_err *e)
{
	char buf[4096];
	struct error err;

	if (!h->opt.nallow_dirs) {
		snprintf(buf, sizeof(buf), "%s/images", h->state_dir);
		if (host_mkdir(buf, 0700, e))
			return -1;
		h->allow_dirs[h->nallow_dirs++] = strdup(buf);
	}
	for (int i = 0; i < h->opt.nallow_dirs; i++)
		h->allow_dirs[h->nallow_dirs++] = strdup(h->opt.allow_dirs[i]);
	for (int i = 0; i < h->nallow_dirs; i++) {
		if (!h->allow_dirs[i])
			return api_err_set(e, 500, "internal", "out of memory");
		if (h->opt.nallow_dirs)
			host_warn_overlap(h, h->allow_dirs[i]);
	}
	if (path_confine((const char *const *)h->allow_dirs, h->nallow_dirs, &err))
		return api_err_set(e, 400, "invalid_request", "--allow-dir: %s", err.msg);
	return 0;
}

/* The state directory: made 0711, and an existing one that others may
 * read or anyone but us write is narrowed (only the socket is for them). */
static int host_state_dir(struct host *h, struct api_err *e)
{
	struct stat st;
	mode_t loose = S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH;

	if (host_mkdir(h->state_dir, 0711, e))
		return -1;
	if (stat(h->state_dir, &st) < 0)
		return api_err_set(e, 500, "internal", "%s: %s", h->state_dir, strerror(errno));
	if ((st.st_mode & loose) && chmod(h->state_dir, (st.st_mode & 07777 & ~loose)) < 0)
		return api_err_set(e, 500, "internal", "%s: cannot narrow mode %o: %s",
				   h->state_dir, (unsigned)(st.st_mode & 07777), strerror(errno));
	return 0;
}

/* Fill in paths and options from `opt`. */
static int host_paths(struct host *h, const struct host_options *opt, struct api_err *e)
{
	char buf[4096];

	h->opt = *opt;
	host_defaults(&h->opt);
	h->state_dir = strdup(opt->state_dir ? opt->state_dir : "/var/lib/shoal");
	snprintf(buf, sizeof(buf), "%s/shoald.sock", h->state_dir);
	h->socket_path = strdup(opt->socket_path ? opt->socket_path : buf);
	snprintf(buf, sizeof(buf), "%s/vms", h->state_dir);
	h->vms_dir = strdup(buf);
	snprintf(buf, sizeof(buf), "%s/snapshots", h->state_dir);
	h->snapshots_dir = strdup(buf);
	h->vmm_path = opt->vmm_path ? strdup(opt->vmm_path) : host_default_vmm();
	if (!h->state_dir || !h->socket_path || !h->vms_dir || !h->snapshots_dir || !h->vmm_path)
		return api_err_set(e, 500, "internal", "out of memory");
	if (access(h->vmm_path, X_OK) < 0)
		return api_err_set(e, 500, "internal", "VMM %s: %s (--vmm PATH)", h->vmm_path,
				   strerror(errno));
	return 0;
}

/* The jail: on by default when the daemon is root (it makes namespaces and
 * changes ids), and said either way in the log. */
static int host_jail_init(struct host *h, const struct host_options *opt, struct api_err *e)
{
	bool root = geteuid() == 0;

	if (opt->jail > 0 && !root)
		return api_err_set(e, 400, "invalid_request", "--jail on: needs root (each VMM gets "
				   "namespaces of its own and drops to a uid of its own)");
	h->jail = opt->jail > 0 || (opt->jail == 0 && root);
	h->opt.jail_uid_base = opt->jail_uid_base ? opt->jail_uid_base : HOST_JAIL_UID_BASE;
	if (h->jail)
		log_info("VMMs run jailed (docs/security.md): namespaces of their own, an empty "
			 "root, uids and gids from %u", h->opt.jail_uid_base);
	else
		log_warn("VMMs run without a jail (%s): a guest that breaks a device model holds "
			 "what shoald's user holds", opt->jail < 0 ? "--jail off" : "shoald is not root");
	return 0;
}

int host_open(struct host *h, const struct host_options *opt, struct api_err *e)
{
	char path[4096], err[512];

	memset(h, 0, sizeof(*h));
	h->lock_fd = h->epfd = h->wake_fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->changed, NULL);
	pthread_cond_init(&h->event_cond, NULL);
	h->started_ms = host_now_ms();
	if (host_paths(h, opt, e) || host_state_dir(h, e) ||
	    host_mkdir(h->vms_dir, 0700, e) || host_mkdir(h->snapshots_dir, 0700, e) ||
	    host_lock_dir(h, e) || host_allow_dirs(h, e) || host_store_open(h, e))
		goto fail;
	host_spec_set_vms_dir(h->vms_dir, h->nallow_dirs);     /* its own disk images (spec.c) */
	snprintf(path, sizeof(path), "%s/shoald.db", h->state_dir);
	h->db = db_open(path, err, sizeof(err));
	if (!h->db) {
		api_err_set(e, 500, "internal", "%s", err);
		goto fail;
	}
	if (db_vm_load_all(h->db, host_load_one, h) < 0) {
		api_err_set(e, 500, "internal", "%s: cannot read the VM table", path);
		goto fail;
	}
	h->last_event_id = db_last_event_id(h->db);
	if (host_nets_open(h, e))       /* bridges, firewall tables, dnsmasq (net.c) */
		goto fail;
	host_cgroup_init(h);
	if (host_jail_init(h, opt, e))
		goto fail;
	if (supervisor_start(h)) {
		api_err_set(e, 500, "internal", "supervisor: %s", strerror(errno));
		goto fail;
	}
	supervisor_reattach(h);
	return 0;
fail:
	host_close(h);
	return -1;
}

void host_close(struct host *h)
{
	host_cgroup_stop(h);
	supervisor_stop(h);
	host_nets_close(h);             /* stops each dnsmasq; the bridges stay */
	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nvms; i++) {
		h->vms[i]->deleted = true;
		hvm_put_locked(h->vms[i]);
	}
	h->nvms = 0;
	pthread_mutex_unlock(&h->lock);
	free(h->vms);
	db_close(h->db);
	if (h->lock_fd >= 0)
		close(h->lock_fd);
	free(h->state_dir);
	free(h->socket_path);
	free(h->vms_dir);
	free(h->snapshots_dir);
	free(h->store_dir);
	h->store_dir = NULL;
	free(h->cgroup_dir);
	h->cgroup_dir = NULL;
	free(h->snap_pending);
	h->snap_pending = NULL;
	h->nsnap_pending = 0;
	h->snapshots_dir = NULL;
	free(h->vmm_path);
	free(h->token);
	for (int i = 0; i < h->nallow_dirs; i++)
		free(h->allow_dirs[i]);
	h->nallow_dirs = 0;
	h->vms = NULL;
	h->db = NULL;
	h->lock_fd = -1;
	h->state_dir = h->socket_path = h->vms_dir = h->vmm_path = h->token = NULL;
}
