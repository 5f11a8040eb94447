/*
 * lifecycle.c - the VM table and the one internal command set: create,
 * start, stop, pause, resume, delete.  The HTTP handlers (api_vm.c) are
 * thin wrappers around these, and the supervisor's restart policy calls
 * the same start.
 *
 * Each operation follows one pattern (see host.h for the locking rule):
 *
 *   lock; check the state (409) and that no other operation runs (503);
 *   mark busy; unlock;  ...slow work: fork, control socket, wait...;
 *   lock; publish the new state, persist it with its event; clear busy.
 *
 * The supervisor may record an exit at any moment, even while an operation
 * is busy; operations therefore re-read the state after their slow work
 * instead of assuming it.
 *
 * States and the operations allowed in each:
 *
 *   created --start--> starting --(control socket answers)--> running
 *   running --pause--> paused --resume--> running
 *   running|paused --stop--> stopping --(VMM exits)--> exited
 *   any running state --(VMM exits)--> exited --start--> starting ...
 *   created|exited --delete--> (gone)
 */
#include "host/host.h"
#include "host/cgroup.h"
#include "base/log.h"
#include "base/timespec.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/spec.h"
#include "host/vmctl.h"

#define FORCE_WAIT_MS 5000

struct hvm *host_find_locked(struct host *h, const char *name)
{
	for (size_t i = 0; i < h->nvms; i++)
		if (!strcmp(h->vms[i]->rec.name, name))
			return h->vms[i];
	return NULL;
}

struct hvm *host_get(struct host *h, const char *name, struct api_err *e)
{
	struct hvm *vm;

	pthread_mutex_lock(&h->lock);
	vm = host_find_locked(h, name);
	if (vm)
		vm->refs++;
	pthread_mutex_unlock(&h->lock);
	if (!vm)
		api_err_set(e, 404, "not_found", "vm \"%.80s\" not found", name);
	return vm;
}

void hvm_put_locked(struct hvm *vm)
{
	if (--vm->refs)
		return;
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm_record_free(&vm->rec);
	free(vm);
}

void host_put(struct host *h, struct hvm *vm)
{
	pthread_mutex_lock(&h->lock);
	hvm_put_locked(vm);
	pthread_mutex_unlock(&h->lock);
}

/* Set the state in memory and in the record. */
void hvm_set_state(struct hvm *vm, enum hvm_state s)
{
	vm->state = s;
	snprintf(vm->rec.state, sizeof(vm->rec.state), "%s", hvm_state_name(s));
}

int host_event_locked(struct host *h, const char *vm, const char *type,
		      const char *detail_json)
{
	int64_t id = 0;

	if (db_event_add(h->db, vm, type, detail_json, &id))
		return -EIO;
	h->last_event_id = id;
	pthread_cond_broadcast(&h->event_cond);
	return 0;
}

int host_persist_locked(struct host *h, struct hvm *vm, const char *type,
			const char *detail_json)
{
	int64_t id = 0;
	int rc;

	rc = db_vm_update(h->db, &vm->rec, type, detail_json, &id);
	if (rc)
		log_error("%s: cannot persist the record: %s", vm->rec.name,
			strerror(-rc));
	if (id > h->last_event_id) {
		h->last_event_id = id;
		pthread_cond_broadcast(&h->event_cond);
	}
	pthread_cond_broadcast(&h->changed);
	return rc;
}

/* Take `vm` for an operation: not busy (503), state in `allowed` (409). */
int hvm_claim_locked(struct hvm *vm, const char *op, unsigned allowed,
			    struct api_err *e)
{
	if (vm->deleted)
		return api_err_set(e, 404, "not_found", "vm \"%s\" not found", vm->rec.name);
	if (vm->busy)
		return api_err_set(e, 503, "busy", "vm \"%s\" is busy (%s in progress); try again",
				   vm->rec.name, vm->busy);
	if (!(allowed & (1u << vm->state)))
		return api_err_set(e, 409, "wrong_state", "vm \"%s\" is %s: cannot %s it",
				   vm->rec.name, hvm_state_name(vm->state), op);
	vm->busy = op;
	return 0;
}

/* End an operation. */
void hvm_release(struct host *h, struct hvm *vm)
{
	pthread_mutex_lock(&h->lock);
	hvm_release_unlock(h, vm, "");
}

void hvm_release_unlock(struct host *h, struct hvm *vm, const char *trash)
{
	vm->busy = NULL;
	pthread_cond_broadcast(&h->changed);
	hvm_put_locked(vm);
	pthread_mutex_unlock(&h->lock);
	if (trash[0])
		host_rm_tree(trash);
}

/* Wait (lock held) until `vm` leaves `state` or the deadline (ms) passes. */
void hvm_wait_leave_locked(struct host *h, struct hvm *vm, enum hvm_state state,
			   int timeout_ms)
{
	struct timespec ts;

	ts = timespec_after_ms(CLOCK_REALTIME, timeout_ms);
	while (vm->state == state && !h->stopping)
		if (pthread_cond_timedwait(&h->changed, &h->lock, &ts) == ETIMEDOUT)
			break;
}

/* ---- create ---- */

/* Append to the table (lock held). */
int host_table_add_locked(struct host *h, struct hvm *vm)
{
	if (h->nvms == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct hvm **t = realloc(h->vms, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		h->vms = t;
		h->cap = cap;
	}
	h->vms[h->nvms++] = vm;
	return 0;
}

/* Remove from the table (lock held) and drop the table's reference. */
void host_table_remove_locked(struct host *h, struct hvm *vm)
{
	for (size_t i = 0; i < h->nvms; i++) {
		if (h->vms[i] != vm)
			continue;
		memmove(&h->vms[i], &h->vms[i + 1], (h->nvms - i - 1) * sizeof(*h->vms));
		h->nvms--;
		vm->deleted = true;
		hvm_put_locked(vm);
		return;
	}
}

/* A new hvm from a parsed spec; takes s->spec_json. */
struct hvm *hvm_new(struct host_spec *s)
{
	struct hvm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	snprintf(vm->rec.name, sizeof(vm->rec.name), "%s", s->name);
	vm->rec.spec = s->spec_json;
	s->spec_json = NULL;
	vm->rec.created_ms = host_now_ms();
	vm->rec.exit_status = -1;
	hvm_set_state(vm, HVM_CREATED);
	vm->restart = s->restart;
	vm->cpus = s->cfg.cpus;
	vm->memory = s->cfg.memory;
	vm->pidfd = -1;
	vm->refs = 1;
	return vm;
}

int host_vm_insert_locked(struct host *h, struct hvm *vm, const char *detail, struct api_err *e)
{
	int64_t id = 0;
	int rc;

	if (host_find_locked(h, vm->rec.name))
		return api_err_set(e, 409, "name_taken", "vm \"%s\" already exists", vm->rec.name);
	rc = db_vm_insert(h->db, &vm->rec, "created", detail, &id);
	if (rc)
		return api_err_set(e, rc == -EEXIST ? 409 : 500, rc == -EEXIST ? "name_taken" : "internal",
				   "vm \"%s\": %s", vm->rec.name,
				   rc == -EEXIST ? "already exists" : "cannot write the store");
	if (host_table_add_locked(h, vm)) {
		db_vm_delete(h->db, vm->rec.name, NULL, NULL, NULL);
		return api_err_set(e, 500, "internal", "out of memory");
	}
	h->last_event_id = id;
	pthread_cond_broadcast(&h->event_cond);
	return 0;
}

struct hvm *host_vm_create(struct host *h, const char *body, size_t len, struct api_err *e)
{
	struct host_spec s;
	struct hvm *vm;

	if (host_spec_parse(body, len, true, &s, e))
		return NULL;
	vm = hvm_new(&s);
	host_spec_free(&s);
	if (!vm) {
		api_err_set(e, 500, "internal", "out of memory");
		return NULL;
	}
	pthread_mutex_lock(&h->lock);
	if (host_vm_insert_locked(h, vm, NULL, e))
		goto fail;
	vm->refs++;                 /* the caller's */
	pthread_mutex_unlock(&h->lock);
	return vm;
fail:
	pthread_mutex_unlock(&h->lock);
	hvm_put_locked(vm);
	return NULL;
}

/* ---- start ---- */

/* The last line of the VM's vmm.log, for a start failure's message. */
void hvm_log_tail(struct host *h, struct hvm *vm, char *out, size_t size)
{
	char path[4200], buf[1024];
	ssize_t n = 0;
	int fd;

	out[0] = '\0';
	fd = open(host_vm_path(h, vm->rec.name, "vmm.log", path, sizeof(path)),
		  O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	if (end > 0)
		n = pread(fd, buf, sizeof(buf) - 1, end > (off_t)sizeof(buf) - 1 ?
			  end - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n <= 0)
		return;
	buf[n] = '\0';
	char *nl = strrchr(buf, '\n'), *line = nl ? nl + 1 : buf;
	size_t l = strlen(line) < size - 1 ? strlen(line) : size - 1;
	memcpy(out, line, l);
	out[l] = '\0';
}

/* Poll the control socket until it answers status; 0 with its pid and
 * state, or -1 when the VM left "starting" (exited) or time ran out. */
static int hvm_wait_ready(struct host *h, struct hvm *vm, pid_t *pid, bool *paused)
{
	char sock[4200], err[256];
	json_t *r;
	int waited = 0, step = 1;
	struct stat st;

	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	while (waited < (int)h->opt.start_timeout_s * 1000) {
		if (stat(sock, &st) == 0 && vmctl_call(sock, "status", &r, 2000, err, sizeof(err)) == 0) {
			*pid = (pid_t)json_integer_value(json_object_get(r, "pid"));
			*paused = !strcmp(json_string_value(json_object_get(r, "state")) ?: "", "paused");
			json_decref(r);
			return 0;
		}
		pthread_mutex_lock(&h->lock);
		hvm_wait_leave_locked(h, vm, HVM_STARTING, step);
		bool gone = vm->state != HVM_STARTING;
		pthread_mutex_unlock(&h->lock);
		if (gone)
			return -1;
		waited += step;
		step = step < 4 ? step * 2 : 4;
	}
	return -1;
}

int hvm_do_start(struct host *h, struct hvm *vm, struct api_err *e)
{
	char tail[512], detail[200];
	const char *sc = supervisor_seccomp_off() ? ", \"seccomp\": \"off\"" : "";
	bool paused = false;
	pid_t pid = 0;

	pthread_mutex_lock(&h->lock);
	vm->stop_requested = false;
	vm->rec.generation++;
	vm->rec.vmm_pid = 0;
	hvm_set_state(vm, HVM_STARTING);
	pthread_mutex_unlock(&h->lock);
	if (supervisor_spawn(h, vm, e)) {
		pthread_mutex_lock(&h->lock);
		hvm_set_state(vm, vm->rec.started_ms ? HVM_EXITED : HVM_CREATED);
		host_persist_locked(h, vm, NULL, NULL);
		pthread_mutex_unlock(&h->lock);
		return -1;
	}
	if (hvm_wait_ready(h, vm, &pid, &paused) < 0) {
		pthread_mutex_lock(&h->lock);
		bool timed_out = vm->state == HVM_STARTING;   /* still starting: no answer */

		if (timed_out && vm->rec.monitor_pid > 0)
			kill(-vm->rec.monitor_pid, SIGKILL);   /* its whole session */
		hvm_wait_leave_locked(h, vm, HVM_STARTING, FORCE_WAIT_MS);
		hvm_log_tail(h, vm, tail, sizeof(tail));
		if (!timed_out && vm->rec.exit_reason)
			api_err_set(e, 500, "start_failed", "vm \"%s\" did not start: %s%s%s",
				    vm->rec.name, vm->rec.exit_reason, tail[0] ? ": " : "", tail);
		else
			api_err_set(e, 500, "start_failed",
				    "vm \"%s\" did not start: no answer from its VMM within %u s "
				    "(shoald --start-timeout)%s%s", vm->rec.name,
				    h->opt.start_timeout_s, tail[0] ? ": " : "", tail);
		pthread_mutex_unlock(&h->lock);
		return -1;
	}
	pthread_mutex_lock(&h->lock);
	if (vm->state == HVM_STARTING) {
		hvm_set_state(vm, paused ? HVM_PAUSED : HVM_RUNNING);
		vm->rec.vmm_pid = pid;
		vm->rec.started_ms = host_now_ms();
		if (hvm_restored_now(vm))
			snprintf(detail, sizeof(detail), "{\"pid\": %d, \"restored_from\": \"%s\"%s%s}",
				 (int)pid, vm->rec.snapshot,
				 vm->rec.snapshot_clone ? ", \"clone\": true" : "", sc);
		else
			snprintf(detail, sizeof(detail), "{\"pid\": %d%s}", (int)pid, sc);
		host_persist_locked(h, vm, "started", detail);
	}
	pthread_mutex_unlock(&h->lock);
	return 0;
}

int host_vm_start(struct host *h, const char *name, struct api_err *e)
{
	struct hvm *vm = host_get(h, name, e);
	int rc;

	if (!vm)
		return -1;
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, "start", 1u << HVM_CREATED | 1u << HVM_EXITED, e);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_put(h, vm);
		return -1;
	}
	rc = hvm_do_start(h, vm, e);
	hvm_release(h, vm);
	return rc;
}

/* ---- stop ---- */

/* Ask the VMM to stop in `mode`; then wait up to timeout_ms for the exit. */
static bool hvm_stop_step(struct host *h, struct hvm *vm, const char *mode, int timeout_ms)
{
	char sock[4200], err[256];
	struct vmctl c;
	json_t *req, *r = NULL;
	bool done;

	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	if (vmctl_connect(&c, sock, 1000, err, sizeof(err)) == 0) {
		req = json_pack("{s:s, s:s}", "cmd", "stop", "mode", mode);
		vmctl_request(&c, req, &r, 2000, err, sizeof(err));
		json_decref(req);
		json_decref(r);
		vmctl_close(&c);
	}
	pthread_mutex_lock(&h->lock);
	hvm_wait_leave_locked(h, vm, HVM_STOPPING, timeout_ms);
	done = vm->state != HVM_STOPPING;
	pthread_mutex_unlock(&h->lock);
	return done;
}

/* Stop a claimed VM: graceful (unless force or paused), then force, then
 * SIGKILL to the VMM's session. */
static void hvm_do_stop(struct host *h, struct hvm *vm, bool force, bool was_paused,
			int timeout_s)
{
	pid_t monitor;

	if (!force && !was_paused && hvm_stop_step(h, vm, "graceful", timeout_s * 1000))
		return;
	if (hvm_stop_step(h, vm, "force", FORCE_WAIT_MS))
		return;
	pthread_mutex_lock(&h->lock);
	monitor = vm->rec.monitor_pid;
	if (vm->state == HVM_STOPPING && vm->rec.vmm_pid > 0)
		kill(vm->rec.vmm_pid, SIGKILL);
	/* A killed VMM is gone once the kernel has torn it down, which for
	 * many at once on a slow host (24 in a KVM box) took more than 5 s:
	 * wait as long as a graceful stop may take, if that is longer. */
	hvm_wait_leave_locked(h, vm, HVM_STOPPING,
			      timeout_s * 1000 > FORCE_WAIT_MS ? timeout_s * 1000 : FORCE_WAIT_MS);
	if (vm->state == HVM_STOPPING && monitor > 0)
		kill(-monitor, SIGKILL);
	pthread_mutex_unlock(&h->lock);
}

int host_vm_stop(struct host *h, const char *name, bool force, int timeout_s,
		 struct api_err *e)
{
	struct hvm *vm = host_get(h, name, e);
	char detail[96];
	bool was_paused;
	int rc;

	if (!vm)
		return -1;
	if (timeout_s < 0)
		timeout_s = (int)h->opt.stop_timeout_s;
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, "stop", 1u << HVM_RUNNING | 1u << HVM_PAUSED, e);
	if (!rc) {
		was_paused = vm->state == HVM_PAUSED;
		vm->stop_requested = true;
		hvm_set_state(vm, HVM_STOPPING);
		snprintf(detail, sizeof(detail), "{\"force\": %s, \"timeout_s\": %d}",
			 force ? "true" : "false", timeout_s);
		host_persist_locked(h, vm, "stopping", detail);
	}
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_put(h, vm);
		return -1;
	}
	hvm_do_stop(h, vm, force, was_paused, timeout_s);
	pthread_mutex_lock(&h->lock);
	if (vm->state == HVM_STOPPING)
		rc = api_err_set(e, 500, "stop_failed", "vm \"%s\": its VMM did not exit", name);
	pthread_mutex_unlock(&h->lock);
	hvm_release(h, vm);
	return rc;
}

/* ---- pause, resume ---- */

int host_vm_pause(struct host *h, const char *name, bool pause, struct api_err *e)
{
	struct hvm *vm = host_get(h, name, e);
	char sock[4200], err[256];
	json_t *r;
	int rc;

	if (!vm)
		return -1;
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, pause ? "pause" : "resume",
			      1u << (pause ? HVM_RUNNING : HVM_PAUSED), e);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_put(h, vm);
		return -1;
	}
	host_vm_path(h, name, "control.sock", sock, sizeof(sock));
	rc = vmctl_call(sock, pause ? "pause" : "resume", &r, 10000, err, sizeof(err));
	pthread_mutex_lock(&h->lock);
	if (rc && !pause && vm->in_doubt) {     /* its VMM's gate: the locks are elsewhere */
		api_err_set(e, 409, "in_doubt", "vm \"%s\": resume: %s", name, err);
	} else if (rc) {
		api_err_set(e, 500, "vmm_error", "vm \"%s\": %s: %s", name,
			    pause ? "pause" : "resume", err);
	} else if (vm->state == (pause ? HVM_RUNNING : HVM_PAUSED)) {
		hvm_set_state(vm, pause ? HVM_PAUSED : HVM_RUNNING);
		host_persist_locked(h, vm, pause ? "paused" : "resumed",
				    !pause && vm->in_doubt ? "{\"in_doubt\": true}" : NULL);
		if (!pause)
			vm->in_doubt = false;   /* its VMM took its disks' locks back */
	}
	pthread_mutex_unlock(&h->lock);
	json_decref(r);
	hvm_release(h, vm);
	return rc ? -1 : 0;
}

/* ---- delete ---- */

/* nftw callback: remove one entry, keep going whatever happens. */
static int host_rm_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	remove(path);
	return 0;
}

void host_rm_tree(const char *path)
{
	nftw(path, host_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int hvm_remove_claimed_locked(struct host *h, struct hvm *vm, char *trash, size_t size,
			      struct api_err *e)
{
	char dir[4200];
	const char *name = vm->rec.name;
	int64_t id = 0;

	trash[0] = '\0';
	if (db_vm_delete(h->db, name, "deleted", NULL, &id)) {
		vm->busy = NULL;
		return api_err_set(e, 500, "internal", "vm \"%s\": cannot delete from the store", name);
	}
	h->last_event_id = id;
	pthread_cond_broadcast(&h->event_cond);
	host_vm_overlays_remove_locked(h, vm);  /* the disk overlays made for it (snapshots.c) */
	/* out of the name's way now, removed outside the lock */
	snprintf(trash, size, "%s/.deleted-%s-%lld", h->vms_dir, name, (long long)id);
	if (rename(host_vm_path(h, name, NULL, dir, sizeof(dir)), trash) < 0)
		trash[0] = '\0';
	host_table_remove_locked(h, vm);
	return 0;
}

int host_vm_delete(struct host *h, const char *name, bool force, struct api_err *e)
{
	struct hvm *vm;
	char trash[4400] = "";
	int rc;

	if (force) {
		struct api_err ignore;
		host_vm_stop(h, name, true, 0, &ignore);   /* 409 if not running: fine */
	}
	vm = host_get(h, name, e);
	if (!vm)
		return -1;
	if (force && (rc = host_migrate_incoming_drop(h, vm, e)) != 1) {
		host_put(h, vm);
		return rc ? -1 : 0;
	}
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, "delete", 1u << HVM_CREATED | 1u << HVM_EXITED, e);
	if (!rc)
		rc = hvm_remove_claimed_locked(h, vm, trash, sizeof(trash), e);
	pthread_mutex_unlock(&h->lock);
	if (!rc && trash[0])
		host_rm_tree(trash);
	if (!rc)
		host_cgroup_remove(h, name);
	host_put(h, vm);
	return rc ? -1 : 0;
}
