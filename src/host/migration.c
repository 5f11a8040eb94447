/*
 * migration.c - live migration between two shoald (docs/daemon.md, "Live
 * migration"; the VMM's side is state/migrate.c, docs/migration.md).
 *
 * The source daemon drives it; the CLI only asks (POST
 * /v1/vms/NAME/migrate {"to": URL}):
 *
 *   source shoald                          destination shoald
 *   claim NAME "migrating" (running)
 *   POST URL/v1/migrations/incoming  ───▶  [with_disks: make the images]
 *        {"spec": NAME's spec,              check the spec as a create does
 *         "disks": [...]}                   (files beneath --allow-dir, the
 *                                           disks' chains opened, memory,
 *                                           the name free); record NAME,
 *                                           claimed "incoming", state
 *                                           starting; start its VMM with
 *                                           --config ... --incoming ADDR;
 *                               ◀───  201 {"address": ADDR} once it listens
 *   connect to ADDR (this process: the
 *   VMM may open no connection, seccomp)
 *   hand the VMM the socket with "migrate"
 *   (SCM_RIGHTS), poll migrate-status      the VMM takes the stream, acks,
 *                                           serves its control socket: NAME
 *                                           is running ("started" event)
 *   "done": the VMM exits; the record goes ("migrated", "deleted")
 *
 * ADDR is a Unix socket in the VM's directory when the request came over
 * the destination's Unix socket (two daemons on one host), else TCP on
 * the destination's --listen address and a port free at the time.
 *
 * Failures.  The destination's acknowledgement is the point of no return
 * (docs/migration.md): before it, the source VMM turns tracking off and
 * its VM runs on, and the source records "migration-failed" with the
 * reason and releases the VM.  The destination cleans up by itself: its
 * VMM exits when the stream is cut, refused or never comes (no source
 * within HOST_MIGRATE_ACCEPT_S: the VMM's own --incoming accept-timeout),
 * and the thread that waits for it (incoming_wait: the VMM's control
 * socket answers, the VM runs; or the VMM exits) then records
 * "migration-failed" and removes the half-made record and its directory.
 * A refusal before any VMM starts (a bad spec, a name taken, a disk the
 * destination cannot open) is the destination's answer, which the source
 * passes on (409 destination_refused) with the VM untouched.  With
 * postcopy_after the point of no return is the switch to post-copy.
 *
 * Post-copy recovery.  The destination's VMM keeps its listening socket
 * through the migration (--incoming ...,recover-timeout=
 * HOST_MIGRATE_RECOVER_S; another source that connects meanwhile is
 * refused at once).  When post-copy's connection drops, the source VMM
 * pauses ("postcopy-paused", its copy of the VM never resumed) and the
 * destination's waits for it with the VM; the source daemon sees the
 * state in migrate-status, records "migration-paused", and connects again
 * as it did the first time (the key's challenge, or TLS and a new relay),
 * handing the new socket to its VMM with "migrate" and "resume" (as
 * `shoal migrate --resume`), after a pause that grows from 0.1 to 2 s,
 * for HOST_MIGRATE_RECOVER_S.  Once pages flow again (or none were left)
 * it records "migration-resumed", and the migration ends as any other.
 * Only when that time passes does the VM count as lost (source_lost:
 * "migration-failed" with vm_lost, the source's copy stays paused, its
 * record too: resuming it is the operator's call).
 *
 * A daemon restarted meanwhile (docs/daemon.md, "A live migration across
 * a restart").  Each keeps in the database what it needs: the destination
 * its VMM's --incoming until the stream completes (rec.incoming), the
 * source the destination, its token and CA until the migration ends
 * (rec.outgoing, outgoing_text).  The reattach (supervisor.c) hands a
 * destination's VM still starting back to incoming_wait
 * (host_migrate_incoming_reattach), and follows a source VMM that still
 * migrates to its end (host_migrate_outgoing_reattach, outgoing_wait).  A
 * source VMM that ended unseen during a migration said, in its exit file
 * (shoal run --exit-file), whether it moved the VM: yes, the record goes
 * (outgoing_gone); not known (killed), it is kept exited and never
 * restarted, since the VM may run there.  Either way a copy the
 * destination holds in doubt is settled as host_vm_migrate would have
 * (settle_held), with the token kept for that.
 *
 * Disks: shared storage (the same paths, visible to both daemons; the
 * destination checks every disk's chain opens there), or, with
 * with_disks, mirrored by the VMMs (docs/migration.md, "Disks"): the
 * source sends each writable disk's virtual size and format with the
 * spec ("disks", null for a read-only one; a qcow2 overlay names its
 * base, and where the destination has that image, at that path with that
 * chain identity, it makes an overlay over it and only the top layer
 * comes), and the destination makes the VM's directory (it
 * must not exist: nothing is reused) and in it an empty image per disk,
 * disk-N.raw or disk-N.qcow2, before it checks the spec with the paths
 * rewritten to them (spec.c allows exactly these, in that VM's spec
 * only).  Any failure before the VM runs there removes them with the
 * directory; the source's images are left to the operator.  A vsock
 * socket path that a live process listens on is refused by the
 * destination: on one host it is the source VMM's, which the new VMM
 * would take over and the old one remove as it exits.
 *
 * What a client may not do: name the address (the destination picks it,
 * in its own directory or on its own --listen address), or reach a VM
 * being migrated (it is busy: 503 until it is gone or running again).
 * The stream between the VMMs is authenticated, and over TCP encrypted
 * (docs/migration.md, "Authentication", "Encryption"): for each incoming migration the
 * destination makes a random 32-byte key, writes it to migrate.key in the
 * VM's directory (0600) for its VMM (--incoming ADDR,key-file=...), which
 * reads it before it listens, removes the file then, and returns the key
 * in its 201 answer (over HTTPS with the token, or its Unix socket).  The
 * source runs the challenge-response on the connection it made, before
 * its VMM gets it (and on each reconnection); the destination's VMM
 * refuses any connection that fails it and goes on waiting (until
 * HOST_MIGRATE_ACCEPT_S).  Over TCP
 * the destination's VMM is started with tls=on and the source runs the
 * TLS 1.3 handshake instead, with the key as its PSK, and relays the
 * stream between its VMM (a Unix socket pair) and the TLS connection on
 * a thread (state/migrate_tls.c) until the migration ends.
 */
#include "host/host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"
#include "base/path_beneath.h"
#include "base/timespec.h"
#include "block/blockdev.h"
#include "block/qcow2.h"
#include "host/cgroup.h"
#include "host/httpc.h"
#include "host/spec.h"
#include "host/vmctl.h"
#include "state/migrate.h"
#include "state/migrate_auth.h"
#include "state/migrate_tls.h"

#define HOST_MIGRATE_ACCEPT_S 60        /* the destination waits this long for the source */
/* A post-copy whose connection dropped: the destination's VMM waits this
 * long for the source to reconnect (--incoming ...,recover-timeout=), and
 * the source daemon tries to for as long.  Above the VMMs' 30 s of
 * silence (MIGRATE_IO_TIMEOUT_S), which is how a half-open connection
 * ends at the destination: until then it refuses the new one as busy. */
#define HOST_MIGRATE_RECOVER_S 120
#define HOST_MIGRATE_RETRY_MS 2000      /* the longest pause between reconnections */
#define HOST_MIGRATE_POLL_MS 100        /* migrate-status while it runs */
#define HOST_MIGRATE_EXIT_MS 10000      /* the source VMM exits this soon after "done" */
#define HOST_MIGRATE_DEST_WAIT_MS 15000 /* the destination's record to say running */
#define HOST_MIGRATE_DROP_MS 30000      /* a held post-copy's record to go, once its VMM is killed */
#define HOST_MIGRATE_DEST_TIMEOUT_S 300 /* one call to the destination daemon, at most */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An event whose detail is the JSON object `d` (taken).  Lock held. */
static void mig_event_locked(struct host *h, const char *vm, const char *type, json_t *d)
{
	char *text = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

	host_event_locked(h, vm, type, text);
	free(text);
	json_decref(d);
}

/* ---- the destination ---- */

/* Is a TCP socket of this network namespace listening on `port`? */
static bool tcp_listening(unsigned port)
{
	static const char *const files[] = { "/proc/net/tcp", "/proc/net/tcp6" };
	char line[512];

	for (size_t i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "re");

		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			char local[80];
			unsigned st, p;
			char *colon;

			if (sscanf(line, " %*u: %79s %*s %x", local, &st) != 2)
				continue;
			colon = strrchr(local, ':');
			if (colon && sscanf(colon + 1, "%x", &p) == 1 && p == port && st == 0x0A) {
				fclose(f);
				return true;
			}
		}
		fclose(f);
	}
	return false;
}

/* Does the VMM listen on `addr` (unix:PATH or tcp:HOST:PORT) yet? */
static bool addr_listening(const char *addr)
{
	struct stat st;
	const char *colon;

	if (!strncmp(addr, "unix:", 5))
		return stat(addr + 5, &st) == 0 && S_ISSOCK(st.st_mode);
	colon = strrchr(addr, ':');
	return colon && tcp_listening((unsigned)strtoul(colon + 1, NULL, 10));
}

/* The address the incoming VMM of `name` listens on: a Unix socket in its
 * directory, or (tcp) the --listen address with a port free now. */
static int incoming_addr(struct host *h, const char *name, bool tcp, char *out, size_t size,
			 struct api_err *e)
{
	char path[4200], host[64];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	const char *colon;
	int fd;

	if (!tcp) {
		host_vm_path(h, name, "migrate.sock", path, sizeof(path));
		if (strlen(path) >= 108 || snprintf(out, size, "unix:%s", path) >= (int)size)
			return api_err_set(e, 500, "internal", "%s: too long for a Unix socket "
					   "(a shorter --state-dir)", path);
		return 0;
	}
	colon = h->opt.listen ? strrchr(h->opt.listen, ':') : NULL;
	if (!colon || colon - h->opt.listen >= (long)sizeof(host))
		return api_err_set(e, 500, "internal", "no --listen address for the migration");
	snprintf(host, sizeof(host), "%.*s", (int)(colon - h->opt.listen), h->opt.listen);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return api_err_set(e, 500, "internal", "--listen %s: not an IPv4 address", host);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		api_err_set(e, 500, "internal", "a port for the migration on %s: %s", host,
			    strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	snprintf(out, size, "tcp:%s:%u", host, (unsigned)ntohs(sa.sin_port));
	return 0;
}

/* Does a live process listen on Unix socket `path` (a VMM's vsock
 * socket)?  A connection that is closed at once: the VMM drops it. */
static bool unix_listening(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool on = fd >= 0 && path_connect_unix(fd, path) == 0;

	if (fd >= 0)
		close(fd);
	return on;
}

/* A claimed incoming VM that will not run: record why, stop its VMM if it
 * still runs, and remove it (record, directory, cgroup); drops the
 * caller's reference. */
static void incoming_undo(struct host *h, struct hvm *vm, const char *why)
{
	char trash[4400] = "", name[HOST_NAME_MAX_LEN + 1];
	struct api_err ignore;

	pthread_mutex_lock(&h->lock);
	snprintf(name, sizeof(name), "%s", vm->rec.name);
	if (vm->state == HVM_STARTING && vm->rec.monitor_pid > 0)
		kill(-vm->rec.monitor_pid, SIGKILL);
	hvm_wait_leave_locked(h, vm, HVM_STARTING, 5000);
	mig_event_locked(h, name, "migration-failed",
			 json_pack("{s:s, s:s}", "direction", "incoming", "error", why));
	if (!vm->deleted && vm->state != HVM_STARTING)
		hvm_remove_claimed_locked(h, vm, trash, sizeof(trash), &ignore);
	hvm_release_unlock(h, vm, trash);
	host_cgroup_remove(h, name);
	log_warn("%s: incoming migration failed: %s", name, why);
}

/* Why the incoming VMM of `vm` ended: its exit and the last line of its
 * log (the stream's refusal, say). */
static void incoming_why(struct host *h, struct hvm *vm, const char *what, char *out,
			 size_t size)
{
	char tail[512];

	hvm_log_tail(h, vm, tail, sizeof(tail));
	pthread_mutex_lock(&h->lock);
	snprintf(out, size, "%s%s%s%s%s", what,
		 vm->state == HVM_EXITED && vm->rec.exit_reason ? ": " : "",
		 vm->state == HVM_EXITED && vm->rec.exit_reason ? vm->rec.exit_reason : "",
		 tail[0] ? ": " : "", tail);
	pthread_mutex_unlock(&h->lock);
}

/* Still starting (its VMM alive)?  Waits up to ms for a change. */
static bool incoming_alive(struct host *h, struct hvm *vm, int ms)
{
	bool alive;

	pthread_mutex_lock(&h->lock);
	hvm_wait_leave_locked(h, vm, HVM_STARTING, ms);
	alive = vm->state == HVM_STARTING;
	pthread_mutex_unlock(&h->lock);
	return alive;
}

int host_vmm_state(const char *sock, pid_t *pid, bool *paused, bool *doubt, bool *held,
		   char *err, size_t size)
{
	json_t *r;

	*paused = *doubt = *held = false;
	if (vmctl_call(sock, "status", &r, 2000, err, size))
		return -1;
	*pid = (pid_t)json_integer_value(json_object_get(r, "pid"));
	*paused = !strcmp(json_string_value(json_object_get(r, "state")) ?: "", "paused");
	json_decref(r);
	if (*paused && vmctl_call(sock, "migrate-status", &r, 2000, err, size) == 0) {
		*doubt = json_is_true(json_object_get(r, "incoming_in_doubt"));
		*held = json_is_true(json_object_get(r, "incoming_postcopy_held"));
		json_decref(r);
	}
	return 0;
}

struct incoming_job {
	struct host *h;
	struct hvm *vm;             /* claimed "incoming", with a reference */
	char addr[160];
};

/* The thread that sees an incoming VM through: the source connects, the
 * stream ends, and the VMM serves its control socket (the VM runs) or
 * exits (undo): cut, refused, or no source within its accept-timeout
 * (HOST_MIGRATE_ACCEPT_S; the VMM says so in its log).  No deadline of
 * our own: the VMM's own timeouts (30 s of silence on the stream) end a
 * stalled one. */
static void *incoming_wait(void *arg)
{
	struct incoming_job *j = arg;
	struct host *h = j->h;
	struct hvm *vm = j->vm;
	char sock[4200], err[256], why[1024], detail[200];
	bool paused = false, doubt = false;
	pid_t pid = 0;

	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	for (;;) {
		struct stat st;
		bool held = false;

		/* Paused: held in doubt, the source's go-ahead never came (its
		 * migrate-status says so); the source daemon settles it.  A
		 * post-copy held until its source reconnects is not here yet:
		 * it stays "starting" (in doubt) until the recovery runs it, or
		 * it stops. */
		if (stat(sock, &st) == 0 &&
		    host_vmm_state(sock, &pid, &paused, &doubt, &held, err, sizeof(err)) == 0) {
			if (!held)
				break;
			pthread_mutex_lock(&h->lock);
			if (!vm->in_doubt)
				log_warn("%s: post-copy came in without the source's go-ahead: held "
					 "paused, never run here, until the source reconnects (pid %d)",
					 vm->rec.name, (int)pid);
			vm->in_doubt = true;
			pthread_mutex_unlock(&h->lock);
		}
		if (!incoming_alive(h, vm, held ? 200 : 50)) {
			incoming_why(h, vm, "the migration stream did not complete", why, sizeof(why));
			goto undo;
		}
	}
	pthread_mutex_lock(&h->lock);
	if (vm->state == HVM_STARTING) {
		hvm_set_state(vm, paused ? HVM_PAUSED : HVM_RUNNING);
		vm->rec.vmm_pid = pid;
		vm->rec.started_ms = host_now_ms();
		free(vm->rec.incoming);
		vm->rec.incoming = NULL;        /* persisted: it came in */
		vm->in_doubt = doubt;
		snprintf(detail, sizeof(detail), "{\"pid\": %d, \"migrated_in\": true%s}", (int)pid,
			 doubt ? ", \"in_doubt\": true" : "");
		host_persist_locked(h, vm, "started", detail);
		if (doubt)
			log_warn("%s: migrated in, but the source's go-ahead did not come: held paused, "
				 "in doubt (pid %d), until the source's daemon (or the operator) resumes "
				 "or deletes it", vm->rec.name, (int)pid);
		else
			log_info("%s: migrated in, running (pid %d)", vm->rec.name, (int)pid);
	}
	hvm_release_unlock(h, vm, "");
	free(j);
	return NULL;
undo:
	incoming_undo(h, vm, why);
	free(j);
	return NULL;
}

bool host_migrate_incoming_reattach(struct host *h, struct hvm *vm)
{
	struct incoming_job *j;
	pthread_t t;
	bool on;

	pthread_mutex_lock(&h->lock);
	on = vm->state == HVM_STARTING && vm->rec.incoming && !vm->busy && !vm->deleted;
	if (on) {
		vm->busy = "incoming";  /* no other operation, no restart policy */
		vm->refs++;             /* the thread's */
		host_persist_locked(h, vm, "reattached", "{\"pid\": 0, \"incoming\": true}");
		log_info("%s: reattached still coming in by a live migration: its VMM waits for "
			 "the stream's end (monitor %d)", vm->rec.name, (int)vm->rec.monitor_pid);
	}
	pthread_mutex_unlock(&h->lock);
	if (!on)
		return false;
	j = calloc(1, sizeof(*j));
	if (j) {
		j->h = h;
		j->vm = vm;
	}
	if (!j || pthread_create(&t, NULL, incoming_wait, j)) {
		free(j);
		incoming_undo(h, vm, "shoald restarted during the migration and could not "
			      "start a thread to see it through");
		return true;
	}
	pthread_detach(t);
	return true;
}

int host_migrate_incoming_drop(struct host *h, struct hvm *vm, struct api_err *e)
{
	int rc = 1;

	pthread_mutex_lock(&h->lock);
	if (vm->state == HVM_STARTING && vm->in_doubt && vm->busy &&
	    !strcmp(vm->busy, "incoming") && vm->rec.monitor_pid > 0) {
		log_warn("%s: the held post-copy is deleted by request (its source ran on): "
			 "its VMM, never run here, is stopped", vm->rec.name);
		kill(-vm->rec.monitor_pid, SIGKILL);
		/* incoming_wait sees it gone within its 200 ms poll and undoes it
		 * (once, in a loaded KVM box, not within 10 s) */
		struct timespec ts = timespec_after_ms(CLOCK_REALTIME, HOST_MIGRATE_DROP_MS);

		while (!vm->deleted && !h->stopping)
			if (pthread_cond_timedwait(&h->changed, &h->lock, &ts) == ETIMEDOUT)
				break;
		rc = vm->deleted ? 0 : api_err_set(e, 500, "internal", "vm \"%s\": its held "
						   "post-copy's VMM was stopped, but its record "
						   "stays after %d s (%s, %s)", vm->rec.name,
						   HOST_MIGRATE_DROP_MS / 1000,
						   hvm_state_name(vm->state), vm->busy ?: "not busy");
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* The key for the incoming VMM (--incoming ADDR,key-file=PATH): its
 * owner's only; removed once the VMM listens (it read it first). */
static int write_key_file(const char *path, const char *hex, struct api_err *e)
{
	int fd;
	bool ok;
	char dir[4200], *slash;

	snprintf(dir, sizeof(dir), "%s", path);        /* the VM's directory (spawn makes it too) */
	slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return api_err_set(e, 500, "internal", "%s: %s", dir, strerror(errno));
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return api_err_set(e, 500, "internal", "%s: %s", path, strerror(errno));
	ok = write(fd, hex, 2 * MIGRATE_KEY_LEN) == 2 * MIGRATE_KEY_LEN;
	if (close(fd) || !ok) {
		unlink(path);
		return api_err_set(e, 500, "internal", "%s: cannot write the migration key", path);
	}
	return 0;
}

/* host_migrate_incoming once any disk images are made. */
static int incoming_start(struct host *h, const char *spec, size_t len, bool tcp,
			  char *name, size_t name_size, char *addr, size_t addr_size,
			  char key_hex[65], struct api_err *e)
{
	uint8_t key[MIGRATE_KEY_LEN];
	char key_file[4200];
	struct error kerr = { 0 };
	struct incoming_job *j;
	struct host_spec s;
	struct hvm *vm;
	long long deadline;
	char why[1024];
	pthread_t t;
	int rc;

	if (host_spec_parse(spec, len, true, &s, e))
		return -1;
	snprintf(name, name_size, "%s", s.name);
	/* Two VMMs on one host would share the vsock socket's path: ours
	 * would take it over, and the source's, exiting, remove it. */
	if (s.cfg.vsock_cid && s.cfg.vsock_socket && unix_listening(s.cfg.vsock_socket)) {
		api_err_set(e, 409, "in_use", "vm \"%s\": its vsock socket %.200s is in use on this "
			    "host (the source VMM's, when both daemons share a host): its VMM here "
			    "could not have it", s.name, s.cfg.vsock_socket);
		host_spec_free(&s);
		return -1;
	}
	vm = hvm_new(&s);
	host_spec_free(&s);
	j = calloc(1, sizeof(*j));
	if (!vm || !j) {
		free(j);
		if (vm)
			hvm_put_locked(vm);
		return api_err_set(e, 500, "internal", "out of memory");
	}
	if (incoming_addr(h, vm->rec.name, tcp, addr, addr_size, e)) {
		free(j);
		hvm_put_locked(vm);
		return -1;
	}
	/* The key its VMM demands proof of: made here, for this migration,
	 * given to the source in our answer only. */
	if (migrate_key_new(key, &kerr)) {
		free(j);
		hvm_put_locked(vm);
		return api_err_set(e, 500, "internal", "%s", kerr.msg);
	}
	migrate_key_hex(key, key_hex);
	explicit_bzero(key, sizeof(key));
	host_vm_path(h, vm->rec.name, "migrate.key", key_file, sizeof(key_file));
	/* over TCP the stream goes in TLS, the key its PSK (state/migrate_tls.c);
	 * the VMM gives up by itself without a source (accept-timeout), and
	 * keeps listening for a post-copy's source to reconnect, which the
	 * source daemon does (recover-timeout) */
	if (asprintf(&vm->rec.incoming, "%s,key-file=%s%s,recover-timeout=%d,accept-timeout=%d",
		     addr, key_file, tcp ? ",tls=on" : "", HOST_MIGRATE_RECOVER_S,
		     HOST_MIGRATE_ACCEPT_S) < 0) {
		vm->rec.incoming = NULL;
		free(j);
		hvm_put_locked(vm);
		return api_err_set(e, 500, "internal", "out of memory");
	}
	vm->busy = "incoming";          /* no other operation, no restart policy */
	pthread_mutex_lock(&h->lock);
	json_t *d = json_pack("{s:s, s:s, s:b, s:b}", "migration", "incoming", "address", addr,
			      "authenticated", 1, "encrypted", tcp);
	char *detail = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(d);
	if (host_vm_insert_locked(h, vm, detail, e)) {
		pthread_mutex_unlock(&h->lock);
		free(detail);
		free(j);
		hvm_put_locked(vm);
		return -1;
	}
	free(detail);
	vm->refs++;                     /* ours, then the waiting thread's */
	vm->rec.generation++;
	vm->rec.vmm_pid = 0;
	hvm_set_state(vm, HVM_STARTING);
	host_persist_locked(h, vm, NULL, NULL);
	pthread_mutex_unlock(&h->lock);

	if (write_key_file(key_file, key_hex, e) || supervisor_spawn(h, vm, e)) {
		pthread_mutex_lock(&h->lock);
		hvm_set_state(vm, HVM_CREATED);
		pthread_mutex_unlock(&h->lock);
		free(j);
		incoming_undo(h, vm, e->msg);
		return -1;
	}
	deadline = mono_ms() + (long long)h->opt.start_timeout_s * 1000;
	while (!addr_listening(addr)) {
		if (!incoming_alive(h, vm, 20)) {
			incoming_why(h, vm, "its VMM did not start", why, sizeof(why));
			api_err_set(e, 500, "start_failed", "vm \"%s\": %s", vm->rec.name, why);
			free(j);
			incoming_undo(h, vm, why);
			return -1;
		}
		if (mono_ms() > deadline) {
			snprintf(why, sizeof(why), "its VMM did not listen on %s within %u s "
				 "(shoald --start-timeout)", addr, h->opt.start_timeout_s);
			api_err_set(e, 500, "start_failed", "vm \"%s\": %s", vm->rec.name, why);
			free(j);
			incoming_undo(h, vm, why);
			return -1;
		}
	}
	unlink(key_file);               /* the VMM read it before it listened */
	j->h = h;
	j->vm = vm;
	snprintf(j->addr, sizeof(j->addr), "%s", addr);
	if ((rc = pthread_create(&t, NULL, incoming_wait, j))) {
		snprintf(why, sizeof(why), "cannot start a thread: %s", strerror(rc));
		api_err_set(e, 500, "internal", "vm \"%s\": %s", vm->rec.name, why);
		free(j);
		incoming_undo(h, vm, why);
		return -1;
	}
	pthread_detach(t);
	log_info("%s: incoming migration: its VMM listens on %s", name, addr);
	return 0;
}

/* ---- the source ---- */

int host_vm_migrate_cancel(struct host *h, const char *name, struct api_err *e)
{
	long long deadline = mono_ms() + (HOST_MIGRATE_DEST_TIMEOUT_S + 60) * 1000LL;
	struct hvm *vm;
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	vm = host_find_locked(h, name);
	if (!vm) {
		pthread_mutex_unlock(&h->lock);
		return api_err_set(e, 404, "not_found", "vm \"%.80s\" not found", name);
	}
	if (!vm->mig.on) {
		pthread_mutex_unlock(&h->lock);
		return api_err_set(e, 409, "wrong_state", "vm \"%s\": no migration of it is in "
				   "progress here", name);
	}
	vm->refs++;
	vm->mig.cancel = true;
	/* the migrating thread sends the VMM's cancel and records the end */
	while (vm->mig.on && !vm->deleted && mono_ms() < deadline) {
		pthread_mutex_unlock(&h->lock);
		sleep_ms(50);
		pthread_mutex_lock(&h->lock);
	}
	if (vm->deleted)
		rc = api_err_set(e, 409, "too_late", "vm \"%s\": too late to cancel: it migrated "
				 "(past the point of no return)", name);
	else if (vm->mig.on)
		rc = api_err_set(e, 500, "internal", "vm \"%s\": the migration has not ended yet "
				 "after the cancel", name);
	hvm_put_locked(vm);
	pthread_mutex_unlock(&h->lock);
	if (!rc)
		log_info("%s: migration cancelled; the VM runs on here", name);
	return rc;
}

/* A request to the destination daemon: its status and JSON answer (the
 * caller's), or -1 with a 502 in `e` when it cannot be reached. */
static int dest_call(const struct host_migrate_req *r, const char *method, const char *path,
		     json_t *body, int *status, json_t **out, struct api_err *e)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, *ans = NULL;
	struct httpc x;
	struct error err = { 0 };
	size_t alen;
	CURLcode cc;
	int rc;

	*out = NULL;
	if (httpc_open(&x, r->to, path, text != NULL, r->token, NULL, r->cacert, &err)) {
		free(text);
		return api_err_set(e, 400, "invalid_request", "to: %s", err.msg);
	}
	/* a destination that never answers must not keep the VM claimed */
	curl_easy_setopt(x.c, CURLOPT_TIMEOUT, (long)HOST_MIGRATE_DEST_TIMEOUT_S);
	rc = httpc_perform(&x, method, text, text ? strlen(text) : 0, status, &ans, &alen, &cc);
	if (rc)
		api_err_set(e, 502, "destination_unreachable", "cannot reach the destination shoald "
			    "at %s: %s", r->to, cc == CURLE_WRITE_ERROR ? "answer too large" :
			    httpc_why(&x, cc));
	httpc_close(&x);
	free(text);
	if (rc)
		return -1;
	*out = json_loadb(ans, alen, 0, NULL);
	free(ans);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = json_object();
	}
	return 0;
}

void host_migrate_connect_addr(const char *to, const char *addr, char *out, size_t size)
{
	const char *h, *end;

	if (strncmp(addr, "tcp:0.0.0.0:", 12) || strncmp(to, "https://", 8)) {
		snprintf(out, size, "%s", addr);
		return;
	}
	h = to + 8;
	end = h[0] == '[' ? strchr(h, ']') : h + strcspn(h, ":/");
	if (!end)
		end = h + strlen(h);
	else if (h[0] == '[')
		end++;
	snprintf(out, size, "tcp:%.*s:%s", (int)(end - h), h, addr + 12);
}

/* Connect to the destination VMM, a few tries (it may have bound and not
 * yet listen).  The descriptor, or -1 with `err`. */
static int connect_retry(const char *addr, struct error *err)
{
	for (int i = 0;; i++) {
		int fd = migrate_connect(addr, err);

		if (fd >= 0 || i == 20)
			return fd;
		sleep_ms(100);
	}
}

/* The connection to the destination's VMM, as our VMM has it. */
struct mig_link {
	const char *addr;           /* the destination VMM's address, as we reach it */
	uint8_t key[MIGRATE_KEY_LEN];
	bool keyed;                 /* a destination of before the keys gives none */
	struct migrate_tls *t;      /* TCP with a key: TLS, through our relay */
	int fd;                     /* what our VMM is handed (with TLS the relay's end) */
	int net_fd;                 /* the connection itself (the relay's, with TLS) */
	pid_t kill_vmm;             /* tests: SHOAL_TEST_MIGRATE_KILL_VMM, our VMM's monitor */
};

/* Connect to l->addr (a few tries with `retry`) and prove the key there:
 * the challenge-response, or over TCP the TLS 1.3 handshake and the relay
 * (our VMM writes in clear to it, it encrypts).  0 with l->fd; with `err`
 * and nothing open, -1 when the connection failed, -2 when the
 * destination refused it or the handshake failed. */
static int link_open(struct mig_link *l, bool retry, struct error *err)
{
	bool tls = l->keyed && !strncmp(l->addr, "tcp:", 4);  /* its VMM has tls=on */
	int fd = retry ? connect_retry(l->addr, err) : migrate_connect(l->addr, err);
	/* tests (daemon_migrate_indoubt.sh): the first connection is cut where
	 * this word would pass (a word lost to a failing network) */
	struct migrate_link_cut cut = { retry ? getenv("SHOAL_TEST_MIGRATE_CUT_WORD") : NULL,
					l->kill_vmm };

	l->t = NULL;
	l->fd = l->net_fd = -1;
	if (fd < 0)
		return -1;
	l->fd = migrate_link_open(fd, l->keyed ? l->key : NULL, tls, l->addr, &cut, &l->t, err);
	if (l->fd < 0)
		return -2;
	l->net_fd = fd;
	return 0;
}

/* Close our side of it: our copy of what the VMM has, and the relay (it
 * ends once the VMM closed its end, `ms` at most). */
static void link_close(struct mig_link *l, int ms)
{
	if (l->fd >= 0)
		close(l->fd);
	migrate_tls_relay_end(l->t, ms);
	l->t = NULL;
	l->fd = l->net_fd = -1;
}

/* Post-copy paused after a dropped connection: a new one, made as the
 * first was, handed to our VMM with "migrate" and "resume" (as shoal
 * migrate --resume does).  0 when the VMM took it (the recovery then runs
 * in it: migrate-status goes back to "postcopy", or pauses again); -1
 * with `why`; -2 when the control connection failed. */
static int link_resume(struct vmctl *c, struct mig_link *l, char *why, size_t size)
{
	struct error err = { 0 };
	json_t *req, *ans = NULL;
	int rc;

	link_close(l, 2000);        /* the dropped one: its relay has ended */
	if (link_open(l, false, &err) < 0) {
		snprintf(why, size, "%s", err.msg);
		return -1;
	}
	req = json_pack("{s:s, s:s, s:b}", "cmd", "migrate", "uri", l->addr, "resume", 1);
	rc = vmctl_request_fd(c, req, l->fd, &ans, 30000, why, size);
	json_decref(req);
	if (rc < 0) {
		link_close(l, 0);
		return -2;
	}
	if (!json_is_true(json_object_get(ans, "ok"))) {
		snprintf(why, size, "%s", json_string_value(json_object_get(ans, "error")) ?:
			 "our VMM refused the new connection");
		link_close(l, 0);
		rc = -1;
	}
	json_decref(ans);
	return rc;
}

/* Post-copy's pages sent so far, asked for or pushed. */
static long long pc_sent(json_t *st)
{
	return json_integer_value(json_object_get(st, "postcopy_demand_pages")) +
	       json_integer_value(json_object_get(st, "postcopy_pushed_pages"));
}

/* The figures of a migrate-status reply into vm->mig (lock held). */
static void mig_progress_locked(struct hvm *vm, json_t *st)
{
	snprintf(vm->mig.state, sizeof(vm->mig.state), "%s",
		 json_string_value(json_object_get(st, "state")) ?: "?");
	vm->mig.round = json_integer_value(json_object_get(st, "round"));
	vm->mig.bytes = json_integer_value(json_object_get(st, "bytes"));
	vm->mig.memory_bytes = json_integer_value(json_object_get(st, "memory_bytes"));
	vm->mig.dirty_pages = json_integer_value(json_object_get(st, "dirty_pages"));
	vm->mig.dirty_rate = json_integer_value(json_object_get(st, "dirty_rate"));
	vm->mig.expected_downtime_ms = json_number_value(json_object_get(st, "expected_downtime_ms"));
}

/* Hand the connection in `l` to the VM's VMM and follow its migration
 * to the end; its last status into *out.  A post-copy whose connection
 * drops (the VMM says "postcopy-paused") is resumed over a new one
 * (link_resume), tried again with a growing pause for up to
 * HOST_MIGRATE_RECOVER_S, as long as the destination's VMM waits for it;
 * after that the last status says "postcopy-paused" still.  Recorded as
 * "migration-paused" and "migration-resumed" (once pages flow again, or
 * it is done).  -1 with `why` when the VMM refused or went away. */
/* Ask our VMM, over its control connection `c`, to cancel its migration
 * (it refuses once "end" went), and log its answer. */
static void vmm_cancel(struct vmctl *c, const char *name)
{
	json_t *cq = json_pack("{s:s, s:b}", "cmd", "migrate", "cancel", 1), *ca = NULL;
	char err[256];

	if (vmctl_request(c, cq, &ca, 30000, err, sizeof(err)) == 0)
		log_info("%s: cancel: %s", name, json_is_true(json_object_get(ca, "ok")) ?
			 "cancelling" : json_string_value(json_object_get(ca, "error")) ?: "?");
	else
		log_warn("%s: cancel: %s", name, err);
	json_decref(cq);
	json_decref(ca);
}

static int vmm_migrate(struct host *h, struct hvm *vm, struct mig_link *l,
		       const struct host_migrate_req *r, json_t **out, char *why, size_t size)
{
	char sock[4200], rwhy[1024] = "";
	struct vmctl c;
	json_t *req, *st = NULL;
	bool cancel, cancel_sent = false, paused = false;
	/* tests (daemon_migrate_postcopy_recover.sh): cut post-copy's
	 * connection once, as a network that fails would, when this many of
	 * its pages were sent (past the go-ahead, which goes before them) */
	long long cut_at = atoll(getenv("SHOAL_TEST_MIGRATE_CUT_POSTCOPY") ?: "0");
	bool cut = cut_at <= 0;
	long long pause_deadline = 0, pause_t0 = 0, pause_sent = 0, backoff = 0;
	int rc, tries = 0;

	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	if (vmctl_connect(&c, sock, 2000, why, size) < 0)
		return -1;
	req = json_pack("{s:s, s:s, s:I, s:I, s:b, s:b}", "cmd", "migrate", "uri", l->addr,
			"downtime_ms",
			(json_int_t)(r->downtime_ms ? r->downtime_ms : MIGRATE_DOWNTIME_MS_DEFAULT),
			"bandwidth", (json_int_t)r->bandwidth, "with_disks", r->with_disks,
			"auto_converge", r->auto_converge);
	if (r->postcopy_after)
		json_object_set_new(req, "postcopy_after", json_integer(r->postcopy_after));
	if (r->compress_level) {
		json_object_set_new(req, "compress", json_string("zstd"));
		json_object_set_new(req, "compress_level", json_integer(r->compress_level));
	}
	rc = vmctl_request_fd(&c, req, l->fd, &st, 30000, why, size);
	json_decref(req);
	json_decref(st);
	st = NULL;
	req = json_pack("{s:s}", "cmd", "migrate-status");
	while (rc == 0) {
		const char *state;

		rc = vmctl_request(&c, req, &st, 30000, why, size);
		if (rc < 0)
			break;
		state = json_string_value(json_object_get(st, "state")) ?: "";
		pthread_mutex_lock(&h->lock);
		mig_progress_locked(vm, st);
		cancel = vm->mig.cancel;
		if (!strcmp(state, "postcopy-paused") && !paused) {
			paused = true;
			pause_t0 = mono_ms();
			pause_deadline = pause_t0 + HOST_MIGRATE_RECOVER_S * 1000LL;
			pause_sent = pc_sent(st);
			backoff = 0;
			tries = 0;
			mig_event_locked(h, vm->rec.name, "migration-paused",
					 json_pack("{s:s, s:s, s:i}", "to", r->to, "error",
						   json_string_value(json_object_get(st, "error")) ?: "",
						   "recover_timeout_s", HOST_MIGRATE_RECOVER_S));
		} else if (paused && (!strcmp(state, "done") || (!strcmp(state, "postcopy") &&
							      pc_sent(st) > pause_sent))) {
			paused = false;     /* pages flow again (or none were left) */
			mig_event_locked(h, vm->rec.name, "migration-resumed",
					 json_pack("{s:s, s:i, s:I}", "to", r->to, "tries", tries,
						   "paused_ms", (json_int_t)(mono_ms() - pause_t0)));
			log_info("%s: post-copy to %s resumed after %lld ms (%d connection%s)",
				 vm->rec.name, r->to, mono_ms() - pause_t0, tries, tries == 1 ? "" : "s");
		}
		pthread_mutex_unlock(&h->lock);
		if (!strcmp(state, "postcopy-paused")) {
			if (!tries)
				log_warn("%s: post-copy to %s: the connection dropped (%s): reconnecting "
					 "for up to %d s", vm->rec.name, r->to,
					 json_string_value(json_object_get(st, "error")) ?: "?",
					 HOST_MIGRATE_RECOVER_S);
			if (mono_ms() > pause_deadline)
				break;      /* lost: the caller says so */
			json_decref(st);
			st = NULL;
			if (backoff)
				sleep_ms((int)backoff);
			backoff = backoff ? backoff * 2 : 100;
			if (backoff > HOST_MIGRATE_RETRY_MS)
				backoff = HOST_MIGRATE_RETRY_MS;
			tries++;
			rc = link_resume(&c, l, rwhy, sizeof(rwhy));
			if (rc == -1)
				log_info("%s: post-copy to %s: reconnection %d: %s", vm->rec.name, r->to,
					 tries, rwhy);
			rc = rc == -2 ? -1 : 0;
			if (rc)
				snprintf(why, size, "%s", rwhy);
			continue;
		}
		if (strcmp(state, "active") && strcmp(state, "completing") && strcmp(state, "postcopy"))
			break;
		if (!cut && !strcmp(state, "postcopy") && pc_sent(st) >= cut_at && l->net_fd >= 0) {
			if (l->kill_vmm > 0) {      /* with SHOAL_TEST_MIGRATE_KILL_VMM */
				log_warn("%s: SHOAL_TEST_MIGRATE_CUT_POSTCOPY: killing our VMM "
					 "(process group %d) past post-copy's switch",
					 vm->rec.name, (int)l->kill_vmm);
				kill(-l->kill_vmm, SIGKILL);
			} else {
				log_warn("%s: SHOAL_TEST_MIGRATE_CUT_POSTCOPY: cutting post-copy's "
					 "connection", vm->rec.name);
				shutdown(l->net_fd, SHUT_RDWR);
			}
			cut = true;
		}
		json_decref(st);
		st = NULL;
		if (cancel && !cancel_sent) {
			cancel_sent = true;
			vmm_cancel(&c, vm->rec.name);
			continue;
		}
		sleep_ms(HOST_MIGRATE_POLL_MS);
	}
	json_decref(req);
	vmctl_close(&c);
	if (rc < 0) {
		json_decref(st);
		return -1;
	}
	*out = st;
	return 0;
}

/* The destination's record of `name`: its state into out, polled for up
 * to HOST_MIGRATE_DEST_WAIT_MS ("unknown" if it never said).  After a
 * completed migration (`done`) until the VM runs or is held paused; after
 * a failure until the record is no longer "starting" ("gone": there is
 * none) or is held in doubt (a post-copy waiting for its source).  True
 * when it holds the VM in doubt (dest_settle). */
static bool dest_state(const struct host_migrate_req *r, const char *name, bool done,
		       char *out, size_t size)
{
	char path[128];
	long long deadline = mono_ms() + HOST_MIGRATE_DEST_WAIT_MS;
	struct api_err ignore;
	bool doubt = false;

	snprintf(out, size, "unknown");
	snprintf(path, sizeof(path), "/v1/vms/%s", name);
	do {
		json_t *v;
		int status;

		if (dest_call(r, "GET", path, NULL, &status, &v, &ignore) == 0) {
			const char *s = json_string_value(json_object_get(v, "state"));

			if (status == 200 && s)
				snprintf(out, size, "%s", s);
			else if (status == 404 && !done)
				snprintf(out, size, "gone");
			doubt = status == 200 && json_is_true(json_object_get(v, "in_doubt"));
			json_decref(v);
			if (done ? !strcmp(out, "running") || !strcmp(out, "paused") :
			    doubt || (strcmp(out, "starting") && strcmp(out, "unknown")))
				return doubt;
		}
		sleep_ms(100);
	} while (mono_ms() < deadline);
	return doubt;
}

/* Settle a destination that holds the VM in doubt: its VMM acknowledged
 * and never heard our go-ahead (docs/migration.md, "In doubt"), so it
 * cannot know which copy runs.  We know: `done`, our VMM stopped its copy
 * and is gone, so the one there is the VM, resumed (its VMM takes the
 * disks' locks back, ours gave them up); else ours runs on here, and the
 * one there, older and never run, is deleted.  `dstate`, its state as
 * dest_state found it, becomes the state after ("gone" once deleted);
 * "resumed", "deleted", or NULL: after a completed post-copy, a copy held
 * for our VMM's recovery (which releases it), or it could not be settled
 * (logged: the operator's).  A held post-copy whose switch was never
 * acknowledged is deleted as any copy held after a failure. */
static const char *dest_settle(struct host *h, const struct host_migrate_req *r,
			       const char *name, bool done, char *dstate, size_t size)
{
	char path[160];
	struct api_err e = { 0 };
	json_t *v = NULL;
	const char *act = NULL;
	int status = 0;

	/* a post-copy held for its source to come back: past the switch
	 * (done), our VMM's recovery releases it; else ours ran on here and
	 * that copy, never run, goes */
	if (!strcmp(dstate, "starting") && done)
		return NULL;
	if (getenv("SHOAL_TEST_MIGRATE_NO_SETTLE")) {   /* tests: the operator's, by hand */
		log_warn("%s: the destination %s holds it paused, in doubt: not settled "
			 "(SHOAL_TEST_MIGRATE_NO_SETTLE)", name, r->to);
		return NULL;
	}
	if (done) {
		snprintf(path, sizeof(path), "/v1/vms/%s/resume", name);
		if (dest_call(r, "POST", path, NULL, &status, &v, &e) == 0 && status == 200) {
			act = "resumed";
			snprintf(dstate, size, "%s",
				 json_string_value(json_object_get(v, "state")) ?: "running");
		}
	} else {
		snprintf(path, sizeof(path), "/v1/vms/%s?force=true", name);
		if (dest_call(r, "DELETE", path, NULL, &status, &v, &e) == 0 && status == 204) {
			act = "deleted";
			snprintf(dstate, size, "gone");
		}
	}
	if (!act) {
		json_t *eo = json_object_get(v, "error");

		log_error("%s: the destination %s holds it paused, in doubt, and could not be told to "
			  "%s it: %d %s: settle it there by hand", name, r->to,
			  done ? "resume" : "delete", status, e.msg[0] ? e.msg :
			  json_string_value(json_object_get(eo, "message")) ?: "(no message)");
	} else {
		log_warn("%s: the destination %s held it paused, in doubt (%s): %s it there", name,
			 r->to, done ? "our go-ahead did not reach it; our copy is gone" :
			 "its acknowledgement did not reach us; ours runs on here", act);
		pthread_mutex_lock(&h->lock);
		mig_event_locked(h, name, "migration-settled",
				 json_pack("{s:s, s:s, s:s}", "to", r->to, "action", act,
					   "destination_state", dstate));
		pthread_mutex_unlock(&h->lock);
	}
	json_decref(v);
	return act;
}

/* --with-disks: what the destination makes for each disk of `spec`, in
 * order: null for a read-only one (not sent; the destination opens its
 * path), else {"size": its virtual size, "format": "raw"|"qcow2"}, read
 * from the image's header (shared with the running VMM).  A qcow2 overlay
 * whose backing file is a qcow2 image with a (current) chain identity also
 * names it: "base": {"path", "chain_id", "generation"}; a destination that
 * has that image at that path makes an overlay over it, and the VMMs send
 * only the top layer (docs/migration.md, "Disks").  Any other overlay goes
 * whole, as the guest sees it.  The array, or NULL with `e`. */
static json_t *source_disks(json_t *spec, const char *name, struct api_err *e)
{
	json_t *out = json_array(), *d;
	size_t i;

	json_array_foreach(json_object_get(spec, "disks"), i, d) {
		struct blockdev_opts o = { .readonly = true, .no_aio = true, .force_share = true };
		const char *path = json_string_value(json_object_get(d, "path"));
		struct blockdev *bd;
		struct error err = { 0 };
		json_t *one;
		char id[37], real[4096];
		uint64_t gen;
		bool cur;

		if (json_is_true(json_object_get(d, "readonly"))) {
			json_array_append_new(out, json_null());
			continue;
		}
		if (!path || blockdev_open(&bd, path, &o, &err)) {
			api_err_set(e, 500, "internal", "vm \"%s\": disks[%zu] %.200s: %s", name, i,
				    path ?: "(no path)", path ? err.msg : "no path");
			json_decref(out);
			return NULL;
		}
		one = json_pack("{s:I, s:s}", "size", (json_int_t)bd->size,
				"format", bd->format == BD_FMT_QCOW2 ? "qcow2" : "raw");
		if (bd->backing && bd->backing->format == BD_FMT_QCOW2 &&
		    !blockdev_chain_id(bd->backing, id, &gen, &cur) && cur && realpath(bd->backing->path, real))
			json_object_set_new(one, "base", json_pack("{s:s, s:s, s:I}", "path", real, "chain_id", id,
								   "generation", (json_int_t)gen));
		json_array_append_new(out, one);
		blockdev_close(bd);
	}
	return out;
}

/* What vms.outgoing keeps while a migration goes: {"to", "token",
 * "cacert"}, all a restarted shoald needs to ask the destination how it
 * ended and settle a copy held there in doubt.  The token is the
 * destination's credential: it sits in the database (0600, shoald's
 * alone) only while the migration goes, and goes with the column. */
static char *outgoing_text(const struct host_migrate_req *r)
{
	json_t *o = json_pack("{s:s}", "to", r->to);
	char *text;

	if (o && r->token[0])
		json_object_set_new(o, "token", json_string(r->token));
	if (o && r->cacert)
		json_object_set_new(o, "cacert", json_string(r->cacert));
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return text ?: strdup(r->to);
}

int host_migrate_outgoing_req(const char *text, struct host_migrate_req *r)
{
	json_t *o = json_loads(text, 0, NULL);
	const char *to = json_string_value(json_object_get(o, "to"));
	const char *token = json_string_value(json_object_get(o, "token"));
	const char *ca = json_string_value(json_object_get(o, "cacert"));
	int rc = 0;

	memset(r, 0, sizeof(*r));
	/* a database of schema 6 before the token was kept: `to` alone */
	snprintf(r->to, sizeof(r->to), "%s", to ?: text);
	snprintf(r->token, sizeof(r->token), "%s", token ?: "");
	if (ca && !(r->cacert = strdup(ca)))
		rc = -1;
	json_decref(o);
	return rc;
}

/* The migration failed: record "migration-failed" (direction, to, the
 * error e->msg, and the fields of `more`, taken, if any), the record no
 * longer going out, and release the VM.  Lost (`more` has vm_lost), it is
 * logged as an error; `pause` sets a running record paused, as its VMM
 * left it (source_lost).  -1. */
static int source_ended(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
			json_t *more, bool pause, struct api_err *e)
{
	json_t *d = json_pack("{s:s, s:s, s:s}", "direction", "outgoing", "to", r->to,
			      "error", e->msg);
	bool lost = json_is_true(json_object_get(more, "vm_lost"));

	if (d && more)
		json_object_update(d, more);
	json_decref(more);
	char *text = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

	json_decref(d);
	pthread_mutex_lock(&h->lock);
	vm->mig.on = false;
	free(vm->rec.outgoing);
	vm->rec.outgoing = NULL;
	if (pause && vm->state == HVM_RUNNING)
		hvm_set_state(vm, HVM_PAUSED);  /* the record says so too */
	host_persist_locked(h, vm, "migration-failed", text);
	pthread_mutex_unlock(&h->lock);
	free(text);
	if (lost)
		log_error("%s", e->msg);
	else
		log_warn("%s: migration to %s failed: %s", vm->rec.name, r->to, e->msg);
	hvm_release(h, vm);
	return -1;
}

/* The migration failed before the point of no return: the VM runs on
 * here.  Record why and release it. */
static int source_failed(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
			 struct api_err *e)
{
	return source_ended(h, vm, r, NULL, false, e);
}

/* With postcopy_after: whether the VMM switched to post-copy, and its
 * pages (missing at the switch, fetched on demand, pushed) from its last
 * migrate-status `st`, added to `o` (an event's detail, the answer). */
static json_t *postcopy_figures(json_t *o, const struct host_migrate_req *r, json_t *st)
{
	if (!r->postcopy_after || !o)
		return o;
	json_object_set_new(o, "postcopy", json_boolean(json_is_true(json_object_get(st, "postcopy"))));
	json_object_set_new(o, "postcopy_pages",
			    json_integer(json_integer_value(json_object_get(st, "postcopy_pages"))));
	json_object_set_new(o, "postcopy_demand_pages",
			    json_integer(json_integer_value(json_object_get(st, "postcopy_demand_pages"))));
	json_object_set_new(o, "postcopy_pushed_pages",
			    json_integer(json_integer_value(json_object_get(st, "postcopy_pushed_pages"))));
	return o;
}

/* A post-copy migration that failed after the switch (docs/migration.md,
 * "Post-copy"): the only running copy was the destination's, and the
 * pages it lacked are lost with it.  The source VMM keeps its copy paused
 * as it was at the switch and does not resume it; so does its record
 * here (paused, released): resuming that older copy is the operator's
 * call.  Recorded as "migration-failed" with vm_lost and source_state. */
static int source_lost(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
		       json_t *st, struct api_err *e)
{
	json_t *d;
	bool paused = !strcmp(json_string_value(json_object_get(st, "state")) ?: "", "postcopy-paused");

	api_err_set(e, 500, "migration_failed", "vm \"%s\": post-copy migration to %s failed "
		    "after the switch, the VM is lost at the destination and stays paused here, "
		    "not resumed (the operator's call): %s%s", vm->rec.name, r->to,
		    paused ? "no new connection recovered it within the recovery time: " : "",
		    json_string_value(json_object_get(st, "error")) ?: "no reason given");
	d = postcopy_figures(json_pack("{s:b, s:s}", "vm_lost", 1, "source_state", "paused"), r, st);
	json_decref(st);
	return source_ended(h, vm, r, d, true, e);
}

/* The VM is the destination's now: our record of it goes (its VMM is
 * gone), with a "migrated" event of `detail`.  Called with h->lock held,
 * which it releases. */
static void source_moved_locked(struct host *h, struct hvm *vm, json_t *detail)
{
	char name[sizeof(vm->rec.name)], trash[4400] = "";
	struct api_err e = { 0 };

	snprintf(name, sizeof(name), "%s", vm->rec.name);
	vm->mig.on = false;
	mig_event_locked(h, name, "migrated", detail);
	if (hvm_remove_claimed_locked(h, vm, trash, sizeof(trash), &e))
		log_error("%s: migrated, but its record stays: %s", name, e.msg);
	hvm_release_unlock(h, vm, trash);
	host_cgroup_remove(h, name);
}

/* Past the point of no return our VMM stops its copy and exits by
 * itself: wait for that (HOST_MIGRATE_EXIT_MS), and kill it if it did
 * not.  h->lock held. */
static void source_vmm_exit_locked(struct host *h, struct hvm *vm)
{
	vm->stop_requested = true;
	hvm_wait_leave_locked(h, vm, HVM_RUNNING, HOST_MIGRATE_EXIT_MS);
	if (vm->state == HVM_RUNNING && vm->rec.monitor_pid > 0) {
		log_warn("%s: its VMM did not exit after the migration: killed", vm->rec.name);
		kill(-vm->rec.monitor_pid, SIGKILL);
		hvm_wait_leave_locked(h, vm, HVM_RUNNING, HOST_MIGRATE_EXIT_MS);
	}
}

/* After our VMM's migration failed: did the VMM die (its control socket
 * gone and its exit recorded, within HOST_MIGRATE_EXIT_MS), rather than
 * fail and run on? */
static bool vmm_died(struct host *h, struct hvm *vm)
{
	char sock[4200], err[256];
	json_t *r = NULL;
	bool died;

	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	if (vmctl_call(sock, "status", &r, 2000, err, sizeof(err)) == 0) {
		json_decref(r);
		return false;       /* it answers: it runs on */
	}
	pthread_mutex_lock(&h->lock);
	if (vm->state != HVM_EXITED)
		hvm_wait_leave_locked(h, vm, vm->state, HOST_MIGRATE_EXIT_MS);
	died = vm->state == HVM_EXITED;
	pthread_mutex_unlock(&h->lock);
	return died;
}

/* Our VMM died during the migration (killed, crashed: its exit is
 * recorded), so our copy of the VM is gone, and no go-ahead will come
 * from it.  If the destination acknowledged having everything, it holds
 * a whole copy paused, in doubt: the only one left, so it is resumed (its
 * VMM takes the disks' locks, which ours lost as it died), and the VM has
 * moved.  If it runs there (our go-ahead went before the death), it has
 * moved too.  Else the stream never completed: the destination undid its
 * copy, and the VM is lost, its record here exited as its VMM left it
 * (docs/migration.md, "In doubt").  Past post-copy's switch the copy
 * there runs, but the pages it still lacked died with our VMM: lost too,
 * and that copy is left to its recover-timeout. */
static int source_died(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
		       const char *why, void **result, struct api_err *e)
{
	char name[sizeof(vm->rec.name)], dstate[32], *reason;
	const char *settled = NULL;
	bool postcopy;
	json_t *res;

	snprintf(name, sizeof(name), "%s", vm->rec.name);
	pthread_mutex_lock(&h->lock);
	reason = strdup(vm->rec.exit_reason ? vm->rec.exit_reason : "exited");
	postcopy = !strncmp(vm->mig.state, "postcopy", 8);
	pthread_mutex_unlock(&h->lock);
	log_error("%s: its VMM died during the migration to %s (%s; %s)%s", name, r->to,
		  reason ?: "exited", why, postcopy ? "" : ": asking the destination whether it "
		  "has a whole copy");
	if (postcopy)       /* past the switch: pages only ours had are gone with it */
		snprintf(dstate, sizeof(dstate), "%s", "running, post-copy");
	else if (dest_state(r, name, false, dstate, sizeof(dstate)))
		settled = dest_settle(h, r, name, true, dstate, sizeof(dstate));
	if (postcopy || (strcmp(dstate, "running") && strcmp(dstate, "paused"))) {
		if (postcopy)
			api_err_set(e, 500, "migration_failed", "vm \"%s\": post-copy migration to "
				    "%s failed: its VMM here died (%s) after the switch, and with it "
				    "the pages the destination still lacked: the VM is lost (the copy "
				    "there waits for them until its recover-timeout, then stops), its "
				    "record here exited", name, r->to, reason ?: "exited");
		else
			api_err_set(e, 500, "migration_failed", "vm \"%s\": migration to %s failed: "
				    "its VMM here died (%s), and the destination has no whole copy "
				    "(there it is %s): the VM is lost, its record here exited", name,
				    r->to, reason ?: "exited", dstate);
		free(reason);
		return source_ended(h, vm, r, json_pack("{s:b, s:s}", "vm_lost", 1,
							"destination_state", dstate), false, e);
	}
	log_warn("%s: its VMM died during the migration, but the destination %s has the VM, %s "
		 "there%s", name, r->to, dstate, settled ? " (resumed by us)" : "");
	pthread_mutex_lock(&h->lock);
	source_moved_locked(h, vm, json_pack("{s:s, s:b, s:s}", "to", r->to, "source_vmm_died", 1,
					     "source_exit", reason ?: "exited"));
	res = json_pack("{s:s, s:s, s:s, s:b, s:s}", "name", name, "to", r->to,
			"destination_state", dstate, "source_vmm_died", 1,
			"source_exit", reason ?: "exited");
	free(reason);
	if (res && settled)
		json_object_set_new(res, "destination_settled", json_string(settled));
	*result = res;
	return 0;
}

int host_vm_migrate(struct host *h, const char *name, const struct host_migrate_req *r,
		    void **result, struct api_err *e)
{
	char addr[256], caddr[512], why[1024], dstate[32];
	struct mig_link l = { .fd = -1, .net_fd = -1 };
	struct hvm *vm = host_get(h, name, e);
	json_t *body, *ans = NULL, *st = NULL, *spec, *res, *disks = NULL;
	struct error err = { 0 };
	const char *settled = NULL;
	int status, rc;

	*result = NULL;
	if (!vm)
		return -1;
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, "migrate", 1u << HVM_RUNNING, e);
	spec = rc ? NULL : json_loads(vm->rec.spec ? vm->rec.spec : "", 0, NULL);
	if (!rc && !spec) {
		vm->busy = NULL;
		rc = api_err_set(e, 500, "internal", "vm \"%s\": its stored spec does not parse", name);
	}
	if (!rc) {
		memset(&vm->mig, 0, sizeof(vm->mig));
		vm->mig.on = true;
		snprintf(vm->mig.to, sizeof(vm->mig.to), "%s", r->to);
		snprintf(vm->mig.state, sizeof(vm->mig.state), "connecting");
		if (getenv("SHOAL_TEST_MIGRATE_KILL_VMM"))   /* tests: with ..._CUT_WORD */
			l.kill_vmm = vm->rec.monitor_pid;
		json_t *d = json_pack("{s:s, s:b, s:b}", "to", r->to, "with_disks", r->with_disks,
				      "auto_converge", r->auto_converge);
		char *text = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

		/* kept while it goes: a restarted shoald knows the VMM may move
		 * it meanwhile, and can ask the destination how it ended
		 * (host_migrate_outgoing_reattach, host_migrate_outgoing_gone) */
		free(vm->rec.outgoing);
		vm->rec.outgoing = outgoing_text(r);
		host_persist_locked(h, vm, "migrating", text);
		free(text);
		json_decref(d);
	}
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_put(h, vm);
		return -1;
	}
	log_info("%s: migrating to %s", name, r->to);

	/* 1. the destination makes the VM (and its disks' images) and starts
	 * its VMM, listening */
	if (r->with_disks && !(disks = source_disks(spec, name, e))) {
		json_decref(spec);
		return source_failed(h, vm, r, e);
	}
	body = disks ? json_pack("{s:o, s:o}", "spec", spec, "disks", disks) :
		       json_pack("{s:o}", "spec", spec);
	rc = dest_call(r, "POST", "/v1/migrations/incoming", body, &status, &ans, e);
	json_decref(body);
	if (rc)
		return source_failed(h, vm, r, e);
	if (status != 201 || !json_is_string(json_object_get(ans, "address"))) {
		json_t *err_o = json_object_get(ans, "error");

		api_err_set(e, status == 401 || status == 403 ? 502 : 409, "destination_refused",
			    "vm \"%s\": the destination shoald at %s refused it: %d %s: %.700s", name,
			    r->to, status, json_string_value(json_object_get(err_o, "code")) ?: "?",
			    json_string_value(json_object_get(err_o, "message")) ?: "(no message)");
		json_decref(ans);
		return source_failed(h, vm, r, e);
	}
	snprintf(addr, sizeof(addr), "%s", json_string_value(json_object_get(ans, "address")));
	/* a destination of before the keys gives none: the stream goes unproven */
	l.keyed = json_is_string(json_object_get(ans, "key"));
	if (l.keyed && migrate_key_from_hex(json_string_value(json_object_get(ans, "key")), l.key)) {
		json_decref(ans);
		api_err_set(e, 502, "destination_refused", "vm \"%s\": the destination shoald at %s "
			    "answered a migration key that is not 64 hex digits", name, r->to);
		return source_failed(h, vm, r, e);
	}
	json_decref(ans);
	host_migrate_connect_addr(r->to, addr, caddr, sizeof(caddr));

	/* 2. we connect (the VMM may not), the VMM streams over our socket;
	 * a failure closes it, and the destination's VMM ends and is undone.
	 * We prove we know the key, and have the VMM there prove it, before
	 * ours gets the socket. */
	l.addr = caddr;
	rc = link_open(&l, true, &err);
	if (rc) {
		explicit_bzero(l.key, sizeof(l.key));
		if (rc == -1)
			api_err_set(e, 502, "destination_unreachable", "vm \"%s\": cannot connect to "
				    "the destination's VMM: %s", name, err.msg);
		else
			api_err_set(e, 502, "destination_refused", "vm \"%s\": %s (the VM runs on "
				    "here)", name, err.msg);
		return source_failed(h, vm, r, e);
	}
	/* a cancel before our VMM has the socket: closing it ends the
	 * destination's VMM (the stream never came), which is undone there */
	pthread_mutex_lock(&h->lock);
	rc = vm->mig.cancel ? -1 : 0;
	if (!rc)
		snprintf(vm->mig.state, sizeof(vm->mig.state), "active");
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		link_close(&l, 0);
		explicit_bzero(l.key, sizeof(l.key));
		api_err_set(e, 500, "migration_failed", "vm \"%s\": migration to %s cancelled (the "
			    "VM runs on here)", name, r->to);
		return source_failed(h, vm, r, e);
	}
	rc = vmm_migrate(h, vm, &l, r, &st, why, sizeof(why));
	link_close(&l, 2000);       /* the VMM closed its end: the relay ends */
	explicit_bzero(l.key, sizeof(l.key));
	if (getenv("SHOAL_TEST_MIGRATE_DIE_BEFORE_SETTLE")) {
		/* tests: shoald dies as its VMM's migration ends, before it
		 * settles anything; restarted, it must (supervisor.c) */
		log_warn("%s: dying before the migration is settled (SHOAL_TEST_MIGRATE_DIE_"
			 "BEFORE_SETTLE)", name);
		raise(SIGKILL);
	}
	if (rc && vmm_died(h, vm))
		return source_died(h, vm, r, why, result, e);
	if (rc) {
		api_err_set(e, 500, "migration_failed", "vm \"%s\": migration to %s failed: %s "
			    "(the VM runs on here)", name, r->to, why);
		return source_failed(h, vm, r, e);
	}
	if (strcmp(json_string_value(json_object_get(st, "state")) ?: "", "done") &&
	    json_is_true(json_object_get(st, "postcopy")))
		return source_lost(h, vm, r, st, e);
	if (strcmp(json_string_value(json_object_get(st, "state")) ?: "", "done")) {
		/* past "end", the destination may hold its copy in doubt: ours
		 * runs on, so that one goes */
		bool doubt = json_is_true(json_object_get(st, "end_sent")) &&
			dest_state(r, name, false, dstate, sizeof(dstate));

		if (doubt)
			settled = dest_settle(h, r, name, false, dstate, sizeof(dstate));
		api_err_set(e, 500, "migration_failed", "vm \"%s\": migration to %s %s: %s (the VM "
			    "runs on here%s)", name, r->to,
			    json_string_value(json_object_get(st, "state")) ?: "failed",
			    json_string_value(json_object_get(st, "error")) ?: "no reason given",
			    settled ? "; the destination's copy, held in doubt, was deleted" :
			    doubt ? "; the destination holds a copy paused, in doubt, that was not "
			    "deleted: delete that one there" : "");
		json_decref(st);
		return source_failed(h, vm, r, e);
	}

	/* 3. past the point of no return: the VM runs there; our VMM exits
	 * by itself, and the record goes */
	pthread_mutex_lock(&h->lock);
	source_vmm_exit_locked(h, vm);
	source_moved_locked(h, vm, postcopy_figures(json_pack("{s:s, s:f, s:f, s:I}", "to", r->to,
				   "downtime_ms", json_number_value(json_object_get(st, "downtime_ms")),
				   "total_ms", json_number_value(json_object_get(st, "total_ms")),
				   "bytes", json_integer_value(json_object_get(st, "bytes"))), r, st));
	if (dest_state(r, name, true, dstate, sizeof(dstate)))  /* held in doubt there? */
		settled = dest_settle(h, r, name, true, dstate, sizeof(dstate));
	log_info("%s: migrated to %s (downtime %.1f ms, total %.0f ms); there it is %s", name,
		 r->to, json_number_value(json_object_get(st, "downtime_ms")),
		 json_number_value(json_object_get(st, "total_ms")), dstate);
	res = json_pack("{s:s, s:s, s:f, s:f, s:I, s:I, s:I, s:I, s:s}", "name", name, "to", r->to,
			"downtime_ms", json_number_value(json_object_get(st, "downtime_ms")),
			"total_ms", json_number_value(json_object_get(st, "total_ms")),
			"rounds", json_integer_value(json_object_get(st, "round")) + 1,
			"bytes", json_integer_value(json_object_get(st, "bytes")),
			"pages_sent", json_integer_value(json_object_get(st, "pages_sent")),
			"zero_pages", json_integer_value(json_object_get(st, "zero_pages")),
			"destination_state", dstate);
	if (res && settled)
		json_object_set_new(res, "destination_settled", json_string(settled));
	postcopy_figures(res, r, st);
	if (res && r->compress_level) {   /* the pages' own size and what they took */
		json_object_set_new(res, "compress", json_string("zstd"));
		json_object_set_new(res, "ram_raw_bytes", json_integer(json_integer_value(
					    json_object_get(st, "ram_raw_bytes"))));
		json_object_set_new(res, "ram_data_bytes", json_integer(json_integer_value(
					    json_object_get(st, "ram_data_bytes"))));
	}
	json_decref(st);
	*result = res;
	return 0;
}


/* ---- a source daemon restarted during a migration ---- */

struct outgoing_job {
	struct host *h;
	struct hvm *vm;             /* with a reference; claimed "migrate" unless
				       gone and not migrated */
	struct host_migrate_req r;  /* the destination, as vms.outgoing kept it */
	int gone;                   /* 0: its VMM runs (outgoing_wait); 1: it
				       ended, having migrated the VM; 2: it
				       ended, the VM not migrated (outgoing_gone) */
};

static void outgoing_job_free(struct outgoing_job *j)
{
	free(j->r.cacert);
	explicit_bzero(j->r.token, sizeof(j->r.token));
	free(j);
}

/* Settle a copy the destination may hold in doubt, as host_vm_migrate
 * does (`done`: ours is gone); "resumed", "deleted" or NULL, the
 * destination's state after into dstate. */
static const char *settle_held(struct host *h, const struct host_migrate_req *r,
			       const char *name, bool done, char *dstate, size_t size)
{
	return dest_state(r, name, done, dstate, size) ?
		dest_settle(h, r, name, done, dstate, size) : NULL;
}

/* The thread that sees through, after a restart, a migration our VMM
 * still runs: its status polled until it ends.  Done, the VM has moved
 * (our VMM stops by itself), and the record goes as after any
 * migration; failed or cancelled, it runs on here; paused in post-copy,
 * it is lost, since the key to reconnect with died with the old shoald.
 * A cancel (DELETE .../migration) is passed on to the VMM, as while the
 * old shoald ran.  A copy the destination holds in doubt (a last word
 * lost, the old shoald dead before it settled it) is settled as
 * host_vm_migrate would have: vms.outgoing kept the token for that. */
static void *outgoing_wait(void *arg)
{
	struct outgoing_job *j = arg;
	struct host *h = j->h;
	struct hvm *vm = j->vm;
	char sock[4200], err[256], name[sizeof(vm->rec.name)], dstate[32] = "unknown";
	struct api_err e = { 0 };
	json_t *st = NULL, *req = json_pack("{s:s}", "cmd", "migrate-status");
	const char *state = "", *settled = NULL;
	bool cancel, cancel_sent = false, on, end_sent;
	struct vmctl c;

	snprintf(name, sizeof(name), "%s", vm->rec.name);
	host_vm_path(h, name, "control.sock", sock, sizeof(sock));
	/* one connection, as vmm_migrate's: its status, and a cancel */
	on = vmctl_connect(&c, sock, 2000, err, sizeof(err)) == 0;
	while (on) {
		json_decref(st);
		st = NULL;
		if (vmctl_request(&c, req, &st, 30000, err, sizeof(err)))
			break;
		state = json_string_value(json_object_get(st, "state")) ?: "";
		pthread_mutex_lock(&h->lock);
		mig_progress_locked(vm, st);
		cancel = vm->mig.cancel && !cancel_sent;
		pthread_mutex_unlock(&h->lock);
		if (strcmp(state, "active") && strcmp(state, "completing") && strcmp(state, "postcopy"))
			break;
		if (cancel) {
			cancel_sent = true;
			vmm_cancel(&c, name);
			continue;
		}
		sleep_ms(HOST_MIGRATE_POLL_MS);
	}
	if (on)
		vmctl_close(&c);
	json_decref(req);
	if (!st)
		state = "";
	if (!strcmp(state, "done")) {
		pthread_mutex_lock(&h->lock);
		source_vmm_exit_locked(h, vm);
		log_info("%s: migrated to %s, begun before shoald restarted (its VMM went on with "
			 "it)", name, j->r.to);
		source_moved_locked(h, vm, json_pack("{s:s, s:b, s:f, s:f, s:I}", "to", j->r.to,
						     "reattached", 1, "downtime_ms",
						     json_number_value(json_object_get(st, "downtime_ms")),
						     "total_ms",
						     json_number_value(json_object_get(st, "total_ms")),
						     "bytes",
						     json_integer_value(json_object_get(st, "bytes"))));
		json_decref(st);
		settle_held(h, &j->r, name, true, dstate, sizeof(dstate));
	} else if (!strcmp(state, "postcopy-paused")) {
		source_lost(h, vm, &j->r, st, &e);
	} else {
		/* past "end", the destination may hold its copy in doubt: ours
		 * runs on, so that one goes */
		end_sent = st && json_is_true(json_object_get(st, "end_sent"));
		if (end_sent)
			settled = settle_held(h, &j->r, name, false, dstate, sizeof(dstate));
		api_err_set(&e, 500, "migration_failed", "vm \"%s\": migration to %s, begun before "
			    "shoald restarted, %s: %s (the VM runs on here%s)", name, j->r.to,
			    state[0] ? state : "ended unseen",
			    st ? json_string_value(json_object_get(st, "error")) ?: "no reason given" :
			    err, settled ? "; the destination's copy, held in doubt, was deleted" : "");
		json_decref(st);
		source_ended(h, vm, &j->r, json_pack("{s:b}", "reattached", 1), false, &e);
	}
	outgoing_job_free(j);
	return NULL;
}

/* The thread for a source VMM that ended while shoald was down, during
 * its migration, having said how (host_migrate_outgoing_gone). */
static void *outgoing_gone(void *arg)
{
	struct outgoing_job *j = arg;
	struct host *h = j->h;
	struct hvm *vm = j->vm;
	char name[sizeof(vm->rec.name)], dstate[32] = "unknown";
	const char *settled;

	snprintf(name, sizeof(name), "%s", vm->rec.name);
	settled = settle_held(h, &j->r, name, j->gone == 1, dstate, sizeof(dstate));
	if (j->gone == 1) {
		json_t *d = json_pack("{s:s, s:b, s:s, s:s}", "to", j->r.to, "reattached", 1,
				      "source_exit", "while shoald was down",
				      "destination_state", dstate);

		if (d && settled)
			json_object_set_new(d, "destination_settled", json_string(settled));
		log_info("%s: migrated to %s while shoald was down (its VMM said so as it ended); "
			 "there it is %s%s", name, j->r.to, dstate, settled ? ", resumed by us" : "");
		pthread_mutex_lock(&h->lock);
		source_moved_locked(h, vm, d);
	} else {
		pthread_mutex_lock(&h->lock);
		hvm_put_locked(vm);
		pthread_mutex_unlock(&h->lock);
	}
	outgoing_job_free(j);
	return NULL;
}

/* Start `fn` on job j (taken); false, logged, if no thread starts. */
static bool outgoing_thread(struct outgoing_job *j, void *(*fn)(void *), char *why, size_t size)
{
	pthread_t t;
	int rc = pthread_create(&t, NULL, fn, j);

	if (rc) {
		snprintf(why, size, "%s", strerror(rc));
		return false;
	}
	pthread_detach(t);
	return true;
}

bool host_migrate_outgoing_reattach(struct host *h, struct hvm *vm)
{
	struct outgoing_job *j = calloc(1, sizeof(*j));
	struct api_err e = { 0 };
	char why[128] = "out of memory";
	bool on;

	pthread_mutex_lock(&h->lock);
	on = j && vm->rec.outgoing && !vm->deleted &&
		hvm_claim_locked(vm, "migrate", 1u << HVM_RUNNING | 1u << HVM_PAUSED, &e) == 0;
	if (on) {
		vm->refs++;             /* the thread's, dropped as it releases */
		host_migrate_outgoing_req(vm->rec.outgoing, &j->r);
		memset(&vm->mig, 0, sizeof(vm->mig));
		vm->mig.on = true;
		snprintf(vm->mig.to, sizeof(vm->mig.to), "%s", j->r.to);
		snprintf(vm->mig.state, sizeof(vm->mig.state), "reattached");
		log_info("%s: reattached during its migration to %s: following its VMM's", vm->rec.name,
			 j->r.to);
	} else if (j && vm->rec.outgoing && !vm->deleted) {
		/* not running (stopping, say): no migration goes on */
		free(vm->rec.outgoing);
		vm->rec.outgoing = NULL;
		host_persist_locked(h, vm, NULL, NULL);
	}
	pthread_mutex_unlock(&h->lock);
	if (!j) {               /* vms.outgoing stays: the restart policy must not apply */
		log_error("%s: cannot follow its migration after a restart: out of memory",
			  vm->rec.name);
		return false;
	}
	if (!on) {
		free(j);
		return false;
	}
	j->h = h;
	j->vm = vm;
	if (!outgoing_thread(j, outgoing_wait, why, sizeof(why))) {
		api_err_set(&e, 500, "internal", "vm \"%s\": cannot start a thread to follow its "
			    "migration to %s after a restart: %s", vm->rec.name, j->r.to, why);
		source_ended(h, vm, &j->r, NULL, false, &e);
		outgoing_job_free(j);
	}
	return true;
}

void host_migrate_outgoing_gone(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
				bool migrated)
{
	struct outgoing_job *j = calloc(1, sizeof(*j));
	struct api_err e = { 0 };
	char why[128] = "out of memory";
	bool on;

	pthread_mutex_lock(&h->lock);
	if (vm->deleted) {      /* deleted meanwhile: nothing of ours to settle */
		pthread_mutex_unlock(&h->lock);
		free(j);
		return;
	}
	/* moved: claimed until its record goes, so nothing starts it here */
	on = j && (!migrated || hvm_claim_locked(vm, "migrate", 1u << HVM_EXITED, &e) == 0);
	if (on)
		vm->refs++;
	pthread_mutex_unlock(&h->lock);
	if (on) {
		j->h = h;
		j->vm = vm;
		j->r = *r;
		j->r.cacert = r->cacert ? strdup(r->cacert) : NULL;
		j->gone = migrated ? 1 : 2;
		if ((!r->cacert || j->r.cacert) && outgoing_thread(j, outgoing_gone, why, sizeof(why)))
			return;
	}
	if (migrated)
		log_error("%s: its VMM migrated it to %s while shoald was down, but %s: its record "
			  "stays, exited: delete it here once it runs there", vm->rec.name, r->to,
			  e.msg[0] ? e.msg : why);
	else
		log_error("%s: cannot ask %s whether it holds a copy in doubt (its VMM here did not "
			  "migrate it): %s: delete any such copy there", vm->rec.name, r->to, why);
	if (on) {
		pthread_mutex_lock(&h->lock);
		if (migrated) {
			hvm_release_unlock(h, vm, "");  /* the claim and the reference */
		} else {
			hvm_put_locked(vm);
			pthread_mutex_unlock(&h->lock);
		}
		outgoing_job_free(j);
	} else {
		free(j);
	}
}

/* Remove the images in made[0..n) that are there, and directory `dir`
 * if it is empty then. */
static void incoming_disks_remove(char (*made)[4200], int n, const char *dir)
{
	for (int i = 0; i < n; i++)
		if (made[i][0])
			unlink(made[i]);
	rmdir(dir);
}

/* The base a --with-disks source named for disk i ({"path", "chain_id",
 * "generation"}, or NULL): true, with it open in *out, where this host has
 * that image at that path, with that identity, current, beneath an
 * --allow-dir (the VMM, confined to those, opens it as the new overlay's
 * backing file) and not in a VM's directory (another VM's disk is never a
 * base).  Otherwise false, and the disk comes whole: said in the log. */
static bool incoming_base(struct host *h, const char *name, size_t i, json_t *b, struct blockdev **out)
{
	struct blockdev_opts o = { .readonly = true, .no_aio = true, .force_share = true };
	const char *path = json_string_value(json_object_get(b, "path"));
	const char *want = json_string_value(json_object_get(b, "chain_id"));
	uint64_t wgen = (uint64_t)json_integer_value(json_object_get(b, "generation"));
	char vms[4096], real[4096], id[37];
	struct error err = { 0 };
	struct blockdev *bd;
	uint64_t gen;
	bool cur, allowed = false;
	size_t n;

	*out = NULL;
	if (!path || !want)
		return false;
	if (!realpath(path, real) || !realpath(h->vms_dir, vms)) {
		log_info("%s: disk %zu: the source's base %s is not here (%s): the whole disk comes", name, i,
			 path, strerror(errno));
		return false;
	}
	n = strlen(vms);
	for (int k = 0; k < h->nallow_dirs && !allowed; k++) {
		char ad[4096];
		size_t m;

		if (!realpath(h->allow_dirs[k], ad))
			continue;
		m = strlen(ad);
		allowed = !strncmp(real, ad, m) && (real[m] == '/' || !real[m]);
	}
	if (!allowed || (!strncmp(real, vms, n) && real[n] == '/')) {
		log_info("%s: disk %zu: the source's base %s is not beneath an --allow-dir here (or is a VM's own "
			 "disk): the whole disk comes", name, i, real);
		return false;
	}
	if (blockdev_open(&bd, real, &o, &err)) {
		log_info("%s: disk %zu: the source's base %s: %s: the whole disk comes", name, i, real, err.msg);
		return false;
	}
	if (bd->format != BD_FMT_QCOW2 || blockdev_chain_id(bd, id, &gen, &cur) || !cur || strcmp(id, want) ||
	    gen != wgen) {
		log_info("%s: disk %zu: %s here is not the source's base (chain identity %s generation %llu): the "
			 "whole disk comes", name, i, real, want, (unsigned long long)wgen);
		blockdev_close(bd);
		return false;
	}
	*out = bd;
	return true;
}

/* A --with-disks migration's destination images: for each entry of
 * `disks` that is not null, an empty image of that size and format made
 * in VM NAME's own directory (VMS_DIR/NAME/disk-I.raw or .qcow2, the
 * exception spec.c allows), and the spec's disks[I].path set to it.  The
 * directory must not exist yet: nothing of another VM or of a stale one
 * is reused or overwritten.  The rewritten spec into *out (malloc'd), the
 * directory into dir, the paths made into made[] (all removed again here
 * on a failure). */
static int incoming_disks_make(struct host *h, const char *spec, size_t len, const char *disks,
			       char **out, char *dir, size_t dir_size, char (*made)[4200],
			       struct api_err *e)
{
	json_t *root = json_loadb(spec, len, 0, NULL), *want = json_loads(disks, 0, NULL);
	json_t *sd = json_object_get(root, "disks"), *d;
	const char *name = json_string_value(json_object_get(root, "name"));
	char vms[4096];
	struct hvm *other;
	size_t i;
	int rc = -1;

	*out = NULL;
	if (!json_is_object(root) || !name || !host_name_valid(name)) {
		api_err_set(e, 400, "invalid_spec", "spec: no valid \"name\"");
		goto done;
	}
	if (!json_is_array(sd) || json_array_size(sd) != json_array_size(want)) {
		api_err_set(e, 400, "invalid_request", "disks: %zu entries for a spec with %zu disks",
			    json_array_size(want), json_array_size(sd));
		goto done;
	}
	pthread_mutex_lock(&h->lock);
	other = host_find_locked(h, name);
	pthread_mutex_unlock(&h->lock);
	if (other) {
		api_err_set(e, 409, "name_taken", "vm \"%s\" already exists", name);
		goto done;
	}
	if (!realpath(h->vms_dir, vms) || snprintf(dir, dir_size, "%s/%s", vms, name) >= (int)dir_size) {
		api_err_set(e, 500, "internal", "%s: %s", h->vms_dir, strerror(errno));
		goto done;
	}
	if (mkdir(dir, 0700) < 0) {
		bool there = errno == EEXIST;

		api_err_set(e, there ? 409 : 500, there ? "in_use" : "internal",
			    "vm \"%s\": cannot make its directory %.200s for its disk images: %s%s",
			    name, dir, strerror(errno), there ?
			    " (something of that name is left there)" : "");
		goto done;
	}
	json_array_foreach(want, i, d) {
		uint64_t size = (uint64_t)json_integer_value(json_object_get(d, "size"));
		bool qcow = !strcmp(json_string_value(json_object_get(d, "format")) ?: "", "qcow2");
		json_t *disk = json_array_get(sd, i);
		struct qcow2_create_opts qo = { .size = size };
		struct error err = { 0 };
		struct blockdev *base = NULL;
		int fd;

		if (json_is_null(d))
			continue;
		if (!json_is_object(disk) || json_is_true(json_object_get(disk, "readonly"))) {
			api_err_set(e, 400, "invalid_request", "disks[%zu]: the spec's disk %zu is not "
				    "a writable disk: only those are sent", i, i);
			goto undo;
		}
		if (snprintf(made[i], sizeof(made[i]), "%s/disk-%zu.%s", dir, i,
			     qcow ? "qcow2" : "raw") >= (int)sizeof(made[i])) {
			made[i][0] = '\0';
			api_err_set(e, 500, "internal", "disks[%zu]: %.200s: path too long", i, dir);
			goto undo;
		}
		fd = open(made[i], O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			api_err_set(e, 500, "internal", "disks[%zu]: %s: %s", i, made[i], strerror(errno));
			made[i][0] = '\0';
			goto undo;
		}
		if (qcow && incoming_base(h, name, i, json_object_get(d, "base"), &base)) {
			qo.backing_file = base->path;
			qo.backing_format = "qcow2";
		}
		rc = qcow ? qcow2_create_fd(fd, made[i], &qo, base, &err) :
		     ftruncate(fd, (off_t)size) < 0 ? -1 : 0;
		if (base) {
			log_info("%s: disk %zu: an overlay over %s, which has the source's base identity: "
				 "only the top layer will come", name, i, base->path);
			blockdev_close(base);
			base = NULL;
		}
		if (rc)
			api_err_set(e, 500, "internal", "disks[%zu]: cannot make %s (%llu bytes): %s",
				    i, made[i], (unsigned long long)size, qcow ? err.msg : strerror(errno));
		close(fd);
		if (rc)
			goto undo;
		json_object_set_new(disk, "path", json_string(made[i]));
	}
	*out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (*out) {
		rc = 0;
		goto done;
	}
	api_err_set(e, 500, "internal", "out of memory");
undo:
	rc = -1;
	incoming_disks_remove(made, VM_MAX_DISKS, dir);
done:
	json_decref(root);
	json_decref(want);
	return rc;
}

int host_migrate_incoming(struct host *h, const char *spec, size_t len, const char *disks,
			  bool tcp, char *name, size_t name_size, char *addr, size_t addr_size,
			  char key_hex[65], struct api_err *e)
{
	char (*made)[4200], dir[4200], *spec2;
	int rc;

	if (!disks)
		return incoming_start(h, spec, len, tcp, name, name_size, addr, addr_size, key_hex, e);
	made = calloc(VM_MAX_DISKS, sizeof(*made));
	if (!made)
		return api_err_set(e, 500, "internal", "out of memory");
	rc = incoming_disks_make(h, spec, len, disks, &spec2, dir, sizeof(dir), made, e);
	if (!rc) {
		rc = incoming_start(h, spec2, strlen(spec2), tcp, name, name_size, addr, addr_size,
				    key_hex, e);
		/* refused before its VMM ran: the images go (a failure once its
		 * record exists has removed its directory with them already) */
		if (rc)
			incoming_disks_remove(made, VM_MAX_DISKS, dir);
		else
			log_info("%s: incoming migration with its disks: images made in %s", name, dir);
	}
	free(spec2);
	free(made);
	return rc;
}
