/*
 * supervisor.c - starting VMMs, noticing their exit, restarting them, and
 * finding them again after a daemon restart.
 *
 * Process tree of one VM:
 *
 *   shoald ──fork──▶ monitor ("shoal-monitor", its own session) ──fork+exec──▶ shoal run
 *
 * The monitor is shoald re-executed as `shoal-monitor --monitor ...` (or,
 * without --monitor support, e.g. in unit tests, a plain forked copy) that
 * does nothing but wait for the VMM and write its exit status to
 * STATE_DIR/vms/NAME/exit (as conmon does for containers).  It is what lets a VMM outlive the daemon and still have
 * its exit status known: waitpid() only works for one's own children, and a
 * restarted daemon is not the VMM's parent.  The monitor is the session
 * leader, so killing -monitor_pid reaches both processes.  Between fork and
 * exec only async-signal-safe calls are made (the daemon is threaded).
 *
 * The supervisor thread holds a pidfd per monitor in an epoll set; when one
 * becomes readable the monitor has exited, the exit file says how the VMM
 * ended, and hvm_exited() records it and applies the restart policy.
 *
 * The VMM's config.json is the spec as the VMM reads it, plus what only
 * the daemon decides: "confine" (the --allow-dir directories: the VMM and
 * its block layer open every named file, backing files included, beneath
 * them, base/path_beneath.h), and console files turned into paths inside
 * the VM's own directory.
 *
 * A VM restored from a snapshot (snapshots.c) is started, the first time,
 * with `shoal run --restore STATE_DIR/snapshots/SNAP` instead of
 * --config (the console and control socket as always; config.json is
 * still written, for the record), and with --clone after it when the VM
 * is a clone (`shoal vm clone`); every later start boots it fresh from
 * its config.
 *
 * A VM coming in by live migration (migration.c) is started with
 * --incoming ADDR after --config: its VMM builds the VM, waits for the
 * source's stream on ADDR, and only then serves its control socket.
 *
 * Reattach (daemon start): for each VM recorded as starting, running,
 * paused or stopping, a live monitor (pid, name and session checked) is
 * watched again and the VMM's state read from its control socket; a dead
 * one means the VMM ended while the daemon was down, and the exit file
 * says how.  A VM still coming in by a live migration (its --incoming
 * kept in the database until the stream completes) is handed back to
 * migration.c's incoming thread, which runs it, holds it in doubt, or
 * removes it when the stream fails, as if shoald had never stopped; one
 * whose VMM ended meanwhile stays, exited, since whether its stream had
 * completed is not known.  A VM going out by a live migration (its
 * destination kept until the migration ends) whose VMM still runs is
 * followed to the migration's end (migration.c): moved, its record goes;
 * else it runs on here.  One whose VMM ended meanwhile may run at the
 * destination now: its record stays, exited, and its restart policy does
 * not start a second copy here.
 */
#include "host/host.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/cgroup.h"
#include "host/net.h"
#include "host/spec.h"
#include "host/vmctl.h"
#include "base/log.h"
#include "base/exitcode.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define MONITOR_COMM "shoal-monitor"
#define RESTART_WINDOW_MS 60000
#define RESTART_MAX 5           /* restarts per window before giving up */

/* pidfd_open(2), which glibc 2.36 does not wrap. */
static int sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

const char *supervisor_exit_reason(int status, char *buf, size_t size)
{
	static const struct { int status; const char *what; } known[] = {
		{ EXIT_POWEROFF, "guest powered off" },
		{ EXIT_USAGE, "bad VMM configuration" },
		{ EXIT_BADKERNEL, "kernel or initrd not loadable" },
		{ EXIT_NOINPUT, "a file is missing or unreadable" },
		{ EXIT_RESOURCE, "not enough memory or vCPUs on the host" },
		{ EXIT_NOKVM, "/dev/kvm missing or lacking a capability" },
		{ EXIT_HOST, "fatal host error in the VMM" },
		{ EXIT_TRIPLE_FAULT, "guest triple fault" },
		{ EXIT_KVM_INTERNAL, "KVM internal error" },
		{ EXIT_GUEST_BAD, "guest did something Shoal does not handle, or timed out" },
		{ EXIT_ESCAPE, "quit from the console" },
		{ 127, "the VMM could not be executed" },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (known[i].status == status) {
			snprintf(buf, size, "%s", known[i].what);
			return buf;
		}
	if (status > 0 && status <= EXIT_GUEST_MAX)
		snprintf(buf, size, "guest exit code %d", status);
	else if (status > 128 && status < 128 + 65)
		snprintf(buf, size, "VMM killed by signal %d (%s)", status - 128,
			 sigabbrev_np(status - 128) ? sigabbrev_np(status - 128) : "?");
	else if (status < 0)
		snprintf(buf, size, "VMM ended, exit status unknown (its monitor left no exit file)");
	else
		snprintf(buf, size, "VMM exit status %d", status);
	return buf;
}

/* ---- the monitor process (async-signal-safe code only) ---- */

struct spawn_args {
	char *argv[36];             /* the VMM's command line */
	char *margv[40];            /* the monitor's, when it is re-executed */
	char restore_args[8400];    /* a restore's own vsock socket and TAPs (snapshots.c) */
	char incoming[4400];        /* an incoming migration's --incoming (migration.c) */
	char log[4200], exitf[4200], exit_tmp[4300];
	char vmm_exit[4200];        /* the VMM's --exit-file (read_vmm_exit) */
	int cgroup_fd;              /* the VM cgroup's cgroup.procs (cgroup.c), or -1 */
};

/* Format "exit N\n" / "signal N\n" without stdio. */
static size_t monitor_format(char *out, const char *word, int n)
{
	char digits[12];
	size_t len = 0, d = 0;

	while (*word)
		out[len++] = *word++;
	out[len++] = ' ';
	do {
		digits[d++] = (char)('0' + n % 10);
		n /= 10;
	} while (n && d < sizeof(digits));
	while (d)
		out[len++] = digits[--d];
	out[len++] = '\n';
	return len;
}

/* The monitor: new session, stdio set up, fork the VMM, wait, record. */
static void __attribute__((__noreturn__)) monitor_main(const struct spawn_args *a)
{
	sigset_t none;
	char buf[32];
	pid_t pid, mon;
	int st, fd;

	setsid();
	prctl(PR_SET_NAME, MONITOR_COMM);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGHUP, SIG_IGN);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0 && fd != 0) {
		dup2(fd, 0);
		close(fd);
	}
	fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	syscall(SYS_close_range, 3, ~0U, 0);
	mon = getpid();
	pid = fork();
	if (pid == 0) {
		/* A VMM never outlives its monitor: without the monitor no one
		 * records its exit, and the daemon, told "exited", would let a
		 * second VMM start on the same disks. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != mon)
			_exit(125);
		signal(SIGHUP, SIG_DFL);
		execv(a->argv[0], a->argv);
		_exit(127);
	}
	if (pid < 0)
		_exit(126);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			_exit(125);
	fd = open(a->exit_tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		size_t n = WIFEXITED(st) ? monitor_format(buf, "exit", WEXITSTATUS(st)) :
					    monitor_format(buf, "signal", WTERMSIG(st));
		if (write(fd, buf, n) < 0)
			_exit(124);
		close(fd);
		rename(a->exit_tmp, a->exitf);
	}
	_exit(0);
}

/* Write `text` to `path` through a temporary file and rename. */
static int write_file_atomic(const char *path, const char *text, struct api_err *e)
{
	char tmp[4300];
	size_t n = strlen(text);
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return api_err_set(e, 500, "internal", "%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return api_err_set(e, 500, "internal", "%s: %s", tmp, strerror(errno));
	if (write(fd, text, n) != (ssize_t)n || close(fd) < 0 || rename(tmp, path) < 0) {
		api_err_set(e, 500, "internal", "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* The VMM's config: the spec's, confined to the allowed directories, with
 * its console files placed in the VM's directory, rendered from the parsed
 * struct (the VMM parses the file once, `shoal run --config`).  The serial
 * console's --console value into `console`.  Malloc'd JSON, or NULL with `e`. */
static char *spawn_vmm_config(struct host *h, const char *name, struct vm_config *c,
			      char *console, size_t size, struct api_err *e)
{
	char path[8500], dir[4200], *in, *text;
	const char *con = host_console_name(c);
	struct error err;

	for (int i = 0; i < h->nallow_dirs; i++)
		c->confine[c->nconfine++] = strdup(h->allow_dirs[i]);
	snprintf(console, size, "none");
	if (con)
		snprintf(console, size, "file:%s", host_vm_path(h, name, con, path, sizeof(path)));
	if (vm_config_set_console(c, console, &err)) {
		api_err_set(e, 500, "internal", "console: %s", err.msg);
		return NULL;
	}
	if (c->vconsole) {      /* "file:NAME[,in=PATH]" -> "file:VMDIR/NAME[,in=PATH]" */
		in = strstr(c->vconsole, ",in=");
		if (in)
			*in = '\0';
		host_vm_path(h, name, c->vconsole + 5, dir, sizeof(dir));
		if (in)
			*in = ',';
		snprintf(path, sizeof(path), "file:%s%s", dir, in ? in : "");
		free(c->vconsole);
		c->vconsole = strdup(path);
	}
	text = vm_config_to_json_text(c);
	if (!text)
		api_err_set(e, 500, "internal", "config.json: out of memory");
	return text;
}

/* The VM's jail (shoal run --jail, vmm/jail.c): a uid and gid no other VM
 * of this daemon holds, an empty VMDIR/root for the jail's tmpfs, and
 * VMDIR/snap, the one directory the jailed VMM may write at run time,
 * owned by that uid: snapshots are written there and moved into
 * STATE_DIR/snapshots (snapshots.c).  The --jail value into `out`. */
static int spawn_jail(struct host *h, struct hvm *vm, char *out, size_t size, struct api_err *e)
{
	char root[4200], snap[4200];
	unsigned uid;

	pthread_mutex_lock(&h->lock);
	if (!vm->jail_uid) {
		for (uid = h->opt.jail_uid_base;; uid++) {
			size_t i;

			for (i = 0; i < h->nvms; i++)
				if (h->vms[i] != vm && h->vms[i]->jail_uid == uid)
					break;
			if (i == h->nvms)
				break;
		}
		vm->jail_uid = uid;
	}
	uid = vm->jail_uid;
	pthread_mutex_unlock(&h->lock);
	host_vm_path(h, vm->rec.name, "root", root, sizeof(root));
	host_vm_path(h, vm->rec.name, "snap", snap, sizeof(snap));
	if (mkdir(root, 0700) < 0 && errno != EEXIST)
		return api_err_set(e, 500, "internal", "%s: %s", root, strerror(errno));
	host_rm_tree(snap);                     /* a snapshot a crash left half-moved */
	if (mkdir(snap, 0700) < 0 || chown(snap, uid, uid) < 0)
		return api_err_set(e, 500, "internal", "%s: %s", snap, strerror(errno));
	if (snprintf(out, size, "%s,uid=%u,gid=%u,bind=%s", root, uid, uid, snap) >= (int)size)
		return api_err_set(e, 500, "internal", "%s: path too long", root);
	return 0;
}

/* Everything the monitor needs, prepared before fork. */
static int spawn_prepare(struct host *h, struct hvm *vm, struct spawn_args *a,
			 char (*store)[4200], struct api_err *e)
{
	struct host_spec s;
	const char *name = vm->rec.name;
	bool restore;
	char *config;
	int rc;

	pthread_mutex_lock(&h->lock);
	restore = hvm_restored_now(vm);
	pthread_mutex_unlock(&h->lock);
	a->cgroup_fd = -1;
	if (host_spec_parse(vm->rec.spec, strlen(vm->rec.spec), true, &s, e))
		return -1;
	rc = host_cgroup_prepare(h, name, &s.limits, &s.cfg, e);
	if (rc == -1) {
		host_spec_free(&s);
		return -1;
	}
	a->cgroup_fd = rc;
	if (mkdir(host_vm_path(h, name, NULL, store[0], 4200), 0700) < 0 && errno != EEXIST) {
		host_spec_free(&s);
		return api_err_set(e, 500, "internal", "%s: %s", store[0], strerror(errno));
	}
	config = spawn_vmm_config(h, name, &s.cfg, store[2], 4200, e);
	host_vm_path(h, name, "config.json", store[0], 4200);
	rc = config ? write_file_atomic(store[0], config, e) : -1;
	free(config);
	host_vm_path(h, name, "control.sock", store[1], 4200);
	host_spec_free(&s);
	if (rc)
		return -1;
	unlink(store[1]);
	host_vm_path(h, name, "vmm.log", a->log, sizeof(a->log));
	host_vm_path(h, name, "exit", a->exitf, sizeof(a->exitf));
	if (snprintf(a->exit_tmp, sizeof(a->exit_tmp), "%s.tmp", a->exitf) >= (int)sizeof(a->exit_tmp))
		return api_err_set(e, 500, "internal", "%s: path too long", a->exitf);
	unlink(a->exitf);
	host_vm_path(h, name, "vmm-exit", a->vmm_exit, sizeof(a->vmm_exit));
	unlink(a->vmm_exit);
	if (restore) {          /* this start restores the VM's snapshot */
		struct snapshot_record sr;
		int g = db_snapshot_get(h->db, vm->rec.snapshot, &sr);

		if (g)
			return api_err_set(e, g == -ENOENT ? 404 : 500, g == -ENOENT ? "not_found" : "internal",
					   "snapshot %s: %s", vm->rec.snapshot,
					   g == -ENOENT ? "not found" : "cannot read the store");
		snprintf(store[3], 4200, "%s", sr.dir);
		snapshot_record_free(&sr);
	}
	int i = 0;
	a->argv[i++] = h->vmm_path;
	a->argv[i++] = "run";
	a->argv[i++] = restore ? "--restore" : "--config";
	a->argv[i++] = restore ? store[3] : store[0];
	if (restore && vm->rec.snapshot_clone)
		a->argv[i++] = "--clone";
	if (restore) {          /* its own vsock socket and TAPs, as its spec names them */
		int n = host_snapshot_restore_args(name, vm->rec.spec, a->argv + i, 16, a->restore_args,
						   sizeof(a->restore_args));

		if (n < 0)
			return api_err_set(e, 500, "internal", "vm \"%s\": too many TAPs for the "
					   "restore's command line", name);
		i += n;
	}
	pthread_mutex_lock(&h->lock);
	snprintf(a->incoming, sizeof(a->incoming), "%s", vm->rec.incoming ?: "");
	pthread_mutex_unlock(&h->lock);
	if (a->incoming[0] && !restore) {       /* a migration fills the VM, then it runs */
		a->argv[i++] = "--incoming";
		a->argv[i++] = a->incoming;
	}
	a->argv[i++] = "--api-socket";
	a->argv[i++] = store[1];
	a->argv[i++] = "--exit-file";
	a->argv[i++] = a->vmm_exit;
	a->argv[i++] = "--console";  /* as in config.json: the VM's directory, or none */
	a->argv[i++] = store[2];
	if (h->jail) {
		if (spawn_jail(h, vm, store[4], 4200, e))
			return -1;
		a->argv[i++] = "--jail";
		a->argv[i++] = store[4];
	}
	a->argv[i] = NULL;
	return 0;
}

int supervisor_monitor_main(int argc, char **argv)
{
	struct spawn_args a;
	int i;

	/* shoal-monitor --monitor EXITFILE LOGFILE VMM ARGS... */
	if (argc < 5 || argc - 4 >= (int)(sizeof(a.argv) / sizeof(a.argv[0])))
		return EXIT_USAGE;
	memset(&a, 0, sizeof(a));
	snprintf(a.exitf, sizeof(a.exitf), "%s", argv[2]);
	snprintf(a.log, sizeof(a.log), "%s", argv[3]);
	if (snprintf(a.exit_tmp, sizeof(a.exit_tmp), "%s.tmp", a.exitf) >= (int)sizeof(a.exit_tmp))
		return EXIT_USAGE;
	for (i = 4; i < argc; i++)
		a.argv[i - 4] = argv[i];
	a.argv[i - 4] = NULL;
	monitor_main(&a);
}

/* The re-executed monitor's command line (see supervisor_monitor_main). */
static void spawn_monitor_argv(struct spawn_args *a)
{
	int i = 0, j;

	a->margv[i++] = "shoal-monitor";
	a->margv[i++] = "--monitor";
	a->margv[i++] = a->exitf;
	a->margv[i++] = a->log;
	for (j = 0; a->argv[j]; j++)
		a->margv[i++] = a->argv[j];
	a->margv[i] = NULL;
}

bool supervisor_seccomp_off(void)
{
	const char *v = getenv("SHOAL_SECCOMP");

	return v && !strcmp(v, "off");
}

/* Remove the TAPs the daemon made for `vm`'s cards on a network (net.c),
 * once its VMM has exited or did not start. */
static void spawn_taps_down(struct host *h, struct hvm *vm)
{
	char *spec;

	pthread_mutex_lock(&h->lock);
	spec = vm->rec.spec ? strdup(vm->rec.spec) : NULL;
	pthread_mutex_unlock(&h->lock);
	if (spec && strstr(spec, "\"network\""))
		host_net_taps_down(h, vm->rec.name, spec);
	free(spec);
}

int supervisor_spawn(struct host *h, struct hvm *vm, struct api_err *e)
{
	char store[5][4200];
	struct spawn_args a;
	pid_t pid;

	memset(&a, 0, sizeof(a));
	if (spawn_prepare(h, vm, &a, store, e)) {
		if (a.cgroup_fd >= 0)
			close(a.cgroup_fd);
		return -1;
	}
	/* the TAPs of its cards on a network, made before the VMM opens them
	 * by name (before its jail, as any TAP a spec names) */
	if (host_net_taps_up(h, vm->rec.name, vm->rec.spec, e)) {
		if (a.cgroup_fd >= 0)
			close(a.cgroup_fd);
		return -1;
	}
	spawn_monitor_argv(&a);
	if (supervisor_seccomp_off())   /* the VMM says so in vmm.log too */
		log_warn("%s: seccomp is OFF for its VMM (SHOAL_SECCOMP=off in shoald's "
			 "environment): no syscall filter; for debugging only", vm->rec.name);
	pid = fork();
	if (pid < 0) {
		if (a.cgroup_fd >= 0)
			close(a.cgroup_fd);
		spawn_taps_down(h, vm);
		return api_err_set(e, 500, "internal", "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		/* into the VM's cgroup before anything else: the VMM is born there */
		if (a.cgroup_fd >= 0 && write(a.cgroup_fd, "0", 1) != 1)
			_exit(123);
		/* Re-executed, the monitor is a small process of its own whose
		 * command line says what it is; else a forked copy does it. */
		if (h->opt.monitor_exe)
			execv(h->opt.monitor_exe, a.margv);
		monitor_main(&a);
	}
	if (a.cgroup_fd >= 0)
		close(a.cgroup_fd);
	pthread_mutex_lock(&h->lock);
	vm->rec.monitor_pid = pid;
	host_persist_locked(h, vm, NULL, NULL);
	pthread_mutex_unlock(&h->lock);
	if (supervisor_watch(h, vm, pid) < 0) {
		kill(-pid, SIGKILL);
		return api_err_set(e, 500, "internal", "pidfd_open: %s", strerror(errno));
	}
	return 0;
}

/* A process's real uid (/proc/PID/status), or 0. */
static unsigned proc_uid(pid_t pid)
{
	char path[64], line[256];
	unsigned uid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u", &uid) == 1)
			break;
	fclose(f);
	return uid;
}

/* ---- watching and exits ---- */

int supervisor_watch(struct host *h, struct hvm *vm, pid_t pid)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fd = sys_pidfd_open(pid);

	if (fd < 0)
		return -1;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	pthread_mutex_lock(&h->lock);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	vm->pidfd = fd;
	vm->refs++;
	ev.data.ptr = vm;
	if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		vm->refs--;
		vm->pidfd = -1;
		close(fd);
		fd = -1;
	}
	pthread_mutex_unlock(&h->lock);
	return fd < 0 ? -1 : 0;
}

/* The VMM's exit status from the monitor's exit file, or -1. */
static int read_exit_file(struct host *h, const char *name)
{
	char path[4200], buf[64] = "";
	int fd, n, v;

	fd = open(host_vm_path(h, name, "exit", path, sizeof(path)), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (sscanf(buf, "exit %d", &v) == 1)
		return v & 0xff;
	if (sscanf(buf, "signal %d", &v) == 1)
		return 128 + v;
	return -1;
}

/* Did the VMM migrate its VM away before it ended?  Its --exit-file
 * (vms/NAME/vmm-exit, one JSON line written as it ends) says: 1 yes, 0
 * no, -1 not known (empty: it was killed, or never got to say). */
static int read_vmm_exit(struct host *h, const char *name)
{
	char path[4200];
	json_error_t err;
	json_t *j = json_load_file(host_vm_path(h, name, "vmm-exit", path, sizeof(path)), 0, &err);
	json_t *m = json_object_get(j, "migrated");
	int v = json_is_boolean(m) ? json_is_true(m) : -1;
	struct stat st;

	if (!j && stat(path, &st) == 0 && st.st_size > 0)
		log_warn("%s: %s: %s (line %d)", name, path, err.text, err.line);
	json_decref(j);
	return v;
}

/* A VMM killed by SIGSYS broke its seccomp filter (base/seccomp.h); its
 * handler wrote "shoal: seccomp: thread KIND made forbidden syscall NAME
 * (NR)" to stderr, which is the VM's vmm.log.  Puts ": seccomp: thread
 * ..." (the last such line) into `out`, or "" when there is none. */
static void seccomp_context(struct host *h, const char *name, char *out, size_t size)
{
	static const char tag[] = "shoal: seccomp: ";
	char path[4200], buf[4096], *p, *line = NULL;
	ssize_t n = 0;
	off_t end;
	int fd;

	out[0] = '\0';
	fd = open(host_vm_path(h, name, "vmm.log", path, sizeof(path)), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	if (end > 0)
		n = pread(fd, buf, sizeof(buf) - 1,
			  end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (p = strstr(buf, tag); p; p = strstr(p + 1, tag))
		line = p + sizeof(tag) - 1;
	if (!line)
		return;
	line[strcspn(line, "\n")] = '\0';
	snprintf(out, size, ": seccomp: %s", line);
}

struct restart_job {
	struct host *h;
	struct hvm *vm;
};

/* Thread: restart a VM per its policy (the VM is claimed as "restarting"). */
static void *restart_thread(void *arg)
{
	struct restart_job *j = arg;
	struct api_err e;

	if (hvm_do_start(j->h, j->vm, &e))
		log_error("%s: restart failed: %s", j->vm->rec.name, e.msg);
	pthread_mutex_lock(&j->h->lock);
	hvm_release_unlock(j->h, j->vm, "");
	free(j);
	return NULL;
}

/* Decide (lock held) whether the policy restarts `vm`, and start it. */
static void hvm_maybe_restart_locked(struct host *h, struct hvm *vm, int status)
{
	struct restart_job *j;
	pthread_t t;
	int64_t now = host_now_ms();

	if (vm->stop_requested || vm->deleted || vm->busy || h->stopping ||
	    vm->restart == RESTART_NO || (vm->restart == RESTART_ON_FAILURE && status == 0))
		return;
	if (now - vm->restart_window_ms > RESTART_WINDOW_MS) {
		vm->restart_window_ms = now;
		vm->restart_count = 0;
	}
	if (++vm->restart_count > RESTART_MAX) {
		host_event_locked(h, vm->rec.name, "restart-abandoned",
				  "{\"reason\": \"more than 5 restarts in 60 s\"}");
		return;
	}
	j = malloc(sizeof(*j));
	if (!j)
		return;
	j->h = h;
	j->vm = vm;
	vm->busy = "restarting";
	vm->refs++;
	vm->rec.restarts++;
	host_event_locked(h, vm->rec.name, "restarting", NULL);
	if (pthread_create(&t, NULL, restart_thread, j)) {
		vm->busy = NULL;
		vm->refs--;
		free(j);
		return;
	}
	pthread_detach(t);
}

/* Record that `vm`'s VMM ended with `status` (-1: unknown), its reason
 * `what` (NULL: the status's meaning, docs/cli.md) and `context`; its
 * restart policy applies unless `no_restart`. */
static void hvm_exited(struct host *h, struct hvm *vm, int status, const char *what,
		       const char *context, bool no_restart)
{
	char reason[1536], words[160], *detail;
	json_t *d;

	pthread_mutex_lock(&h->lock);
	if (vm->deleted || vm->state == HVM_EXITED || vm->state == HVM_CREATED) {
		pthread_mutex_unlock(&h->lock);
		return;
	}
	if (what)
		snprintf(words, sizeof(words), "%s", what);
	else
		supervisor_exit_reason(status, words, sizeof(words));
	if (vm->stop_requested)
		snprintf(reason, sizeof(reason), "stopped on request (%s)",
			 status == 0 ? "VMM exited normally" : words);
	else
		snprintf(reason, sizeof(reason), "%s%s", words, context ? context : "");
	free(vm->rec.exit_reason);
	vm->rec.exit_reason = strdup(reason);
	vm->rec.exit_status = status;
	vm->rec.exited_ms = host_now_ms();
	vm->rec.vmm_pid = 0;
	vm->rec.monitor_pid = 0;
	vm->state = HVM_EXITED;
	snprintf(vm->rec.state, sizeof(vm->rec.state), "exited");
	d = json_pack("{s:i, s:s}", "status", status, "reason", reason);
	detail = json_dumps(d, JSON_COMPACT);
	json_decref(d);
	host_persist_locked(h, vm, "exited", detail);
	free(detail);
	if (!no_restart)
		hvm_maybe_restart_locked(h, vm, status);
	pthread_mutex_unlock(&h->lock);
}

/* Why a monitor that is our child left no exit file, from its own status
 * (monitor_main's _exit codes), as ": ..." in `out`; "" when not known. */
static void monitor_context(const siginfo_t *si, char *out, size_t size)
{
	static const char *const codes[] = {
		[123 - 123] = "could not join the VM's cgroup",
		[124 - 123] = "could not write the exit file",
		[125 - 123] = "lost its VMM (waitpid failed)",
		[126 - 123] = "could not fork the VMM",
	};

	out[0] = '\0';
	if (!si->si_pid)
		return;
	if (si->si_code == CLD_EXITED && si->si_status >= 123 && si->si_status <= 126)
		snprintf(out, size, ": its monitor %s", codes[si->si_status - 123]);
	else if (si->si_code == CLD_EXITED)
		snprintf(out, size, ": its monitor exited with status %d", si->si_status);
	else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
		snprintf(out, size, ": its monitor was killed by signal %d (%s)", si->si_status,
			 sigabbrev_np(si->si_status) ? sigabbrev_np(si->si_status) : "?");
}

/* `vm`'s VMM ended with `status` and no migration thread saw it (`when`:
 * shoald was down, or its VMM did not answer as shoald came back).  Coming
 * in by a live migration (rec.incoming), whether that completed is not
 * known here: the record stays, exited, for the operator (its disks may be
 * the VM's only copy).  Going out (rec.outgoing), its exit file says
 * whether it moved the VM: yes, the restart policy must not start a
 * second copy here, and the record goes once the destination is asked
 * (host_migrate_outgoing_gone); no, this is an ordinary exit, and a copy
 * the destination holds in doubt is deleted; not known (killed), the VM
 * may run there now, and the record stays, exited, without the restart
 * policy.  Neither: an ordinary exit. */
static void exited_unwatched(struct host *h, struct hvm *vm, int status, const char *when)
{
	char ctx[1400];
	struct host_migrate_req r = { 0 };
	bool moving, out;
	int migrated = read_vmm_exit(h, vm->rec.name);

	pthread_mutex_lock(&h->lock);
	out = vm->rec.outgoing != NULL;
	if (out)
		host_migrate_outgoing_req(vm->rec.outgoing, &r);
	moving = vm->rec.incoming || (out && migrated != 0);
	if (vm->rec.incoming)
		snprintf(ctx, sizeof(ctx), " (%s, as it came in by a live migration: whether that "
			 "completed is not known; delete it if its source runs on)", when);
	else if (out && migrated == 1)  /* its status, 0, is not a power-off */
		snprintf(ctx, sizeof(ctx), " to %.1000s (its VMM ended %s, its exit file saying "
			 "so)", r.to, when);
	else if (out && migrated == 0)
		snprintf(ctx, sizeof(ctx), " (%s, its live migration to %.1000s having ended "
			 "without moving it)", when, r.to);
	else if (out)
		snprintf(ctx, sizeof(ctx), " (%s, during its live migration to %.1000s: it may run "
			 "there now; look there before starting it here)", when, r.to);
	else
		snprintf(ctx, sizeof(ctx), " (%s)", when);
	free(vm->rec.incoming);
	free(vm->rec.outgoing);
	vm->rec.incoming = vm->rec.outgoing = NULL;
	pthread_mutex_unlock(&h->lock);
	if (out)
		log_warn("%s: its VMM ended %s, during its live migration to %s: %s", vm->rec.name,
			 when, r.to, migrated == 1 ? "its exit file says it migrated the VM" :
			 migrated == 0 ? "its exit file says it did not migrate the VM" :
			 "it left no exit file (killed?): whether the VM moved is not known here");
	spawn_taps_down(h, vm);
	hvm_exited(h, vm, status, out && migrated == 1 ? "the VM migrated" : NULL, ctx, moving);
	if (out && migrated >= 0)
		host_migrate_outgoing_gone(h, vm, &r, migrated == 1);
	free(r.cacert);
	explicit_bzero(r.token, sizeof(r.token));
}

/* A pidfd fired: reap if it is our child, read the exit file, record. */
static void supervisor_handle(struct host *h, struct hvm *vm)
{
	char why[256] = "";
	siginfo_t si;
	int fd, status;
	bool unwatched;

	memset(&si, 0, sizeof(si));
	pthread_mutex_lock(&h->lock);
	fd = vm->pidfd;
	vm->pidfd = -1;
	pthread_mutex_unlock(&h->lock);
	if (fd >= 0) {
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, NULL);
		waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG);   /* ECHILD if reattached */
		close(fd);
	}
	status = read_exit_file(h, vm->rec.name);
	if (status < 0)
		monitor_context(&si, why, sizeof(why));
	if (status == 128 + SIGKILL)
		host_cgroup_oom_killed(h, vm->rec.name, why, sizeof(why));
	if (status == 128 + SIGSYS)
		seccomp_context(h, vm->rec.name, why, sizeof(why));
	pthread_mutex_lock(&h->lock);
	/* going out, or coming in, with no migration thread on it (its VMM
	 * did not answer as shoald came back) */
	unwatched = (vm->rec.outgoing || vm->rec.incoming) && !vm->busy;
	pthread_mutex_unlock(&h->lock);
	if (unwatched) {
		exited_unwatched(h, vm, status, "unwatched since shoald restarted");
	} else {
		spawn_taps_down(h, vm);         /* before a restart makes them again */
		hvm_exited(h, vm, status, NULL, why[0] ? why : NULL, false);
	}
	host_put(h, vm);
}

/* The supervisor: wait on every pidfd, handle each exit; a NULL event is the wake-up to quit. */
static void *supervisor_thread(void *arg)
{
	struct host *h = arg;
	struct epoll_event evs[32];
	int n;

	for (;;) {
		n = epoll_wait(h->epfd, evs, 32, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				return NULL;            /* wake_fd: shutting down */
			supervisor_handle(h, evs[i].data.ptr);
		}
	}
	return NULL;
}

int supervisor_start(struct host *h)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	h->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (h->epfd < 0 || h->wake_fd < 0 ||
	    epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->wake_fd, &ev) < 0)
		return -1;
	if (pthread_create(&h->supervisor, NULL, supervisor_thread, h))
		return -1;
	h->supervisor_started = true;
	return 0;
}

void supervisor_stop(struct host *h)
{
	uint64_t one = 1;

	if (h->supervisor_started) {
		if (write(h->wake_fd, &one, sizeof(one)) < 0)
			perror("shoald: supervisor wake");
		pthread_join(h->supervisor, NULL);
		h->supervisor_started = false;
	}
	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nvms; i++) {
		struct hvm *vm = h->vms[i];
		if (vm->pidfd >= 0) {   /* drop the watch's reference */
			close(vm->pidfd);
			vm->pidfd = -1;
			vm->refs--;
		}
	}
	pthread_mutex_unlock(&h->lock);
	if (h->epfd >= 0)
		close(h->epfd);
	if (h->wake_fd >= 0)
		close(h->wake_fd);
	h->epfd = h->wake_fd = -1;
}

/* ---- reattach ---- */

/* Is `pid` a live monitor process of ours (name, session leader)? */
static bool monitor_alive(pid_t pid)
{
	char path[64], buf[512];
	int fd, n, sid = -1;
	char *p;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* "pid (comm) state ppid pgrp session ..." */
	if (!strstr(buf, "(" MONITOR_COMM ")") || !(p = strrchr(buf, ')')))
		return false;
	if (sscanf(p + 1, " %*c %*d %*d %d", &sid) != 1 || sid != pid)
		return false;
	return p[2] != 'Z';
}

/* Reattach one VM recorded as live, or record that it ended. */
static void supervisor_reattach_one(struct host *h, struct hvm *vm)
{
	char sock[4200], err[256], detail[96];
	pid_t pid = 0;
	bool paused = false, doubt = false, held;

	if (!monitor_alive(vm->rec.monitor_pid) ||
	    supervisor_watch(h, vm, vm->rec.monitor_pid) < 0) {
		exited_unwatched(h, vm, read_exit_file(h, vm->rec.name), "while shoald was down");
		return;
	}
	/* still coming in by a live migration: its VMM serves no control
	 * socket until the stream ends (nor is it in its jail yet: the uid
	 * its jail will have owns VMDIR/snap); the incoming thread sees it
	 * through as it would have (migration.c) */
	if (h->jail) {
		struct stat st;

		host_vm_path(h, vm->rec.name, "snap", sock, sizeof(sock));
		pthread_mutex_lock(&h->lock);
		if (!vm->jail_uid && vm->rec.incoming && stat(sock, &st) == 0)
			vm->jail_uid = st.st_uid;
		pthread_mutex_unlock(&h->lock);
	}
	if (host_migrate_incoming_reattach(h, vm))
		return;
	host_vm_path(h, vm->rec.name, "control.sock", sock, sizeof(sock));
	/* held paused in doubt after an incoming migration: its VMM knows
	 * (the database does not keep it) */
	if (host_vmm_state(sock, &pid, &paused, &doubt, &held, err, sizeof(err))) {
		log_warn("%s: monitor alive but the VMM does not answer: %s",
			vm->rec.name, err);
	}
	pthread_mutex_lock(&h->lock);
	if (pid && vm->rec.vmm_pid && pid != vm->rec.vmm_pid)
		log_warn("%s: VMM pid %d, recorded %d", vm->rec.name,
			(int)pid, (int)vm->rec.vmm_pid);
	if (vm->state != HVM_EXITED) {
		if (pid)
			vm->rec.vmm_pid = pid;
		if (pid && h->jail)
			vm->jail_uid = proc_uid(pid);       /* its jail's, or 0 */
		if (pid && !vm->rec.started_ms)
			vm->rec.started_ms = host_now_ms();
		vm->state = pid ? (paused ? HVM_PAUSED : HVM_RUNNING) : vm->state;
		vm->in_doubt = pid && doubt;
		if (vm->in_doubt)
			log_warn("%s: reattached held paused, in doubt (it came in by a migration whose "
				 "source's go-ahead never came): resume it if the source's copy stopped, "
				 "else delete it", vm->rec.name);
		snprintf(vm->rec.state, sizeof(vm->rec.state), "%s", hvm_state_name(vm->state));
		snprintf(detail, sizeof(detail), "{\"pid\": %d}", (int)pid);
		host_persist_locked(h, vm, "reattached", detail);
	}
	pthread_mutex_unlock(&h->lock);
	/* going out by a live migration that its VMM may still run (over a
	 * socket it was handed, the stream needs no shoald): followed to its
	 * end (migration.c) */
	if (pid && vm->rec.outgoing)
		host_migrate_outgoing_reattach(h, vm);
}

void supervisor_reattach(struct host *h)
{
	struct hvm **live;
	size_t n = 0;

	pthread_mutex_lock(&h->lock);
	live = calloc(h->nvms + 1, sizeof(*live));
	for (size_t i = 0; live && i < h->nvms; i++) {
		enum hvm_state s = h->vms[i]->state;
		if (s == HVM_STARTING || s == HVM_RUNNING || s == HVM_PAUSED || s == HVM_STOPPING) {
			live[n++] = h->vms[i];
			h->vms[i]->refs++;
		}
	}
	pthread_mutex_unlock(&h->lock);
	for (size_t i = 0; i < n; i++) {
		supervisor_reattach_one(h, live[i]);
		host_put(h, live[i]);
	}
	free(live);
}
