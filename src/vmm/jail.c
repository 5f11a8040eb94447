/*
 * jail.c - the jailer: a VMM that holds nothing it does not need.
 *
 * `shoal run --jail DIR[,uid=N][,gid=N][,bind=PATH]...` (and every VMM
 * that `shoald --jail` starts) runs in a jail, in the manner of
 * Firecracker's jailer, in two stages.
 *
 * Stage 1 (jail_stage1), first thing, while the process has one thread:
 *   - every descriptor above 2 that the caller left open is closed, but
 *     a TAP given as --net fd=N;
 *   - new mount, IPC, UTS and PID namespaces, and a new network namespace
 *     when the VM has no network card and does not wait for a migration
 *     over TCP (a Unix socket's path still reaches it: the control socket,
 *     vhost-user, vsock);
 *   - every mount made private, so nothing mounted here leaks out;
 *   - fork: the child is PID 1 of the new PID namespace and goes on to be
 *     the VMM; the parent stays outside as a small waiter that forwards
 *     SIGTERM, SIGINT, SIGHUP and SIGQUIT and ends the way the VMM ended
 *     (the same exit status, or the same signal), so a caller that waits
 *     for `shoal run` sees no difference.  As PID 1 of its namespace the
 *     VMM would ignore any signal it has no handler for, unless the kernel
 *     forces it (a fault, seccomp's SIGSYS): so each signal whose default
 *     is to end a process ends it through jail_die_by_signal, which names
 *     the signal to the waiter on a pipe and exits; the waiter then ends
 *     by that signal.  The child learns its pid as the
 *     host sees it through a pipe (jail_host_pid: the control socket's
 *     `status` reports it, and shoald kills by it).
 *
 * Stage 2 (jail_stage2), after the VM is built, every file it needs open
 * (kernel, disks and their backing chains, snapshot, TAPs, /dev/kvm) and
 * its sockets bound, and before the event loop and the vCPUs start:
 *   - a tmpfs on DIR (only in the VMM's mount namespace), holding only the
 *     `bind=` paths, each bound at its own path (a vsock socket's directory
 *     is added by `shoal run` itself), and /proc: a procfs of the VMM's
 *     own PID namespace with process directories only (subset=pid), for
 *     /proc/self/statm and /proc/self/fd/N;
 *   - pivot_root into it and the old root detached, so no other file of
 *     the host is reachable: not /etc/shadow, not another VM's disk, not
 *     the daemon's database; the root is then made read-only;
 *   - the capability bounding and ambient sets emptied, supplementary
 *     groups dropped, and the real, effective and saved gid and uid set to
 *     the jail's: with no capability left (a uid change from 0 clears
 *     them), no_new_privs (set by seccomp_enable) and no execve in any
 *     seccomp list;
 *   - /dev/userfaultfd opened before the drop (a live snapshot's
 *     write-protection must see KVM's own writes, kernel-mode faults,
 *     which an unprivileged userfaultfd(2) may not handle);
 *   - the kernel then marks the process not dumpable, so /proc/PID and
 *     ptrace are root's only; and the PID namespace hides every process of
 *     the host, so the VMM cannot even name another VMM to ptrace it.
 * A guest that takes over a device model therefore holds what the VMM
 * already holds, and nothing more.
 *
 * Why two stages: the VMM opens its files by their real paths (a qcow2
 * chain names its backing files; a snapshot names its disks), so building
 * the VM before pivot_root needs no list of them, and no copy of them in
 * the jail (Firecracker's jailer asks its user to place every file in the
 * chroot).  The namespaces must come before any thread (unshare of a
 * mount namespace is per thread), and the privilege drop after the disks'
 * I/O threads have started: glibc makes every thread change its ids
 * (its setxid broadcast), so blk-io's seccomp list has setresuid,
 * setresgid and setgroups (seccomp_rules.c).
 *
 * What a jailed VMM cannot do, and what follows: open a path at run time
 * outside its `bind=` list.  A snapshot's directory (`shoal snapshot
 * create`) must be bound in and writable by the jail's uid.
 *
 * Hand-written: libcap would cover only the capability calls, which are
 * three prctl()s here.
 */
#include "vmm/jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"

static pid_t host_pid;          /* 0 outside a jail */
static int note_fd = -1;        /* the VMM's end of the pipe that names a fatal signal */
static int uffd_dev = -1;       /* /dev/userfaultfd, opened before the drop */
static volatile pid_t child_pid; /* the parent's: whom to forward signals to */

static int parse_id(const char *what, const char *v, unsigned *out, struct error *e)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (!*v || *end || errno || n == 0 || n >= 0xffffffffUL)
		return error_set(e, EXIT_USAGE, "--jail: %s=%s: expected a number from 1 to 4294967294 "
				 "(never 0: the jail's %s is unprivileged)", what, v, what);
	*out = (unsigned)n;
	return 0;
}

int jail_add_bind(struct jail_opts *j, const char *path, struct error *e)
{
	if (path[0] != '/')
		return error_set(e, EXIT_USAGE, "--jail: bind=%s: expected an absolute path", path);
	if (!path[strspn(path, "/")])
		return error_set(e, EXIT_USAGE, "--jail: bind=%s: that is the whole host file system", path);
	if (j->nbinds == JAIL_MAX_BINDS)
		return error_set(e, EXIT_USAGE, "--jail: at most %d bind= paths", JAIL_MAX_BINDS);
	if (!(j->binds[j->nbinds] = strdup(path)))
		return error_set(e, EXIT_HOST, "out of memory");
	j->nbinds++;
	return 0;
}

int jail_parse(struct jail_opts *j, const char *spec, struct error *e)
{
	char *copy, *tok, *save = NULL;
	unsigned id;
	int rc = 0;

	if (j->on)
		return error_set(e, EXIT_USAGE, "--jail: given twice");
	j->on = true;
	j->uid = 65534;
	j->gid = 65534;
	if (!(copy = strdup(spec)))
		return error_set(e, EXIT_HOST, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		if (!j->root) {
			if (tok[0] != '/' || strchr(tok, '='))
				rc = error_set(e, EXIT_USAGE, "--jail: '%s': expected DIR (an absolute path) "
					       "first, then uid=N, gid=N, bind=PATH", tok);
			else if (!(j->root = strdup(tok)))
				rc = error_set(e, EXIT_HOST, "out of memory");
		} else if (!strncmp(tok, "uid=", 4)) {
			if (!(rc = parse_id("uid", tok + 4, &id, e)))
				j->uid = id;
		} else if (!strncmp(tok, "gid=", 4)) {
			if (!(rc = parse_id("gid", tok + 4, &id, e)))
				j->gid = id;
		} else if (!strncmp(tok, "bind=", 5)) {
			rc = jail_add_bind(j, tok + 5, e);
		} else {
			rc = error_set(e, EXIT_USAGE, "--jail: unknown option '%s' (uid=, gid=, bind=)", tok);
		}
	}
	if (!rc && !j->root)
		rc = error_set(e, EXIT_USAGE, "--jail: expected DIR[,uid=N][,gid=N][,bind=PATH]...");
	free(copy);
	return rc;
}

void jail_opts_free(struct jail_opts *j)
{
	free(j->root);
	for (int i = 0; i < j->nbinds; i++)
		free(j->binds[i]);
	memset(j, 0, sizeof(*j));
}

pid_t jail_host_pid(void)
{
	return host_pid ? host_pid : getpid();
}

/* ---- stage 1 ---- */

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* The parent outside: forward signals, wait, end as the VMM ended. */
static void __attribute__((__noreturn__)) jail_wait_child(pid_t pid, int note)
{
	static const int fwd[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };
	struct sigaction sa = { .sa_handler = forward_signal };
	unsigned char noted = 0;
	int st;

	prctl(PR_SET_NAME, "shoal-jail");
	child_pid = pid;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
		sigaction(fwd[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			_exit(EXIT_HOST);
	if (WIFEXITED(st) && read(note, &noted, 1) == 1 && noted > 0 && noted < 65)
		st = noted;     /* as if WIFSIGNALED: the VMM ended by that signal */
	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);
		sigset_t set;

		signal(sig, SIG_DFL);
		sigemptyset(&set);
		sigaddset(&set, sig);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(sig);
		_exit(128 + sig);
	}
	_exit(EXIT_HOST);
}

/* Close every descriptor above 2 the caller left open, but the ones the
 * VM is told to use (--net fd=N): the VMM then holds only what it opens. */
static void close_inherited(const struct jail_opts *j)
{
	unsigned lo = 3;

	for (;;) {
		unsigned next = ~0U;

		for (int i = 0; i < j->nkeep; i++)
			if (j->keep_fds[i] >= (int)lo && (unsigned)j->keep_fds[i] < next)
				next = (unsigned)j->keep_fds[i];
		if (next > lo)
			syscall(SYS_close_range, lo, next == ~0U ? ~0U : next - 1, 0);
		if (next == ~0U)
			break;
		lo = next + 1;
	}
}

void jail_die_by_signal(int sig)
{
	if (note_fd >= 0) {
		unsigned char b = (unsigned char)sig;

		if (write(note_fd, &b, 1) < 0) {
			/* the waiter then sees only the exit status */
		}
		_exit(128 + sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* PID 1 of a namespace ignores a signal it has no handler for unless the
 * kernel forces it (a fault, seccomp's SIGSYS): a `kill -TERM` or `kill
 * -SEGV` from outside would do nothing.  So every signal whose default is
 * to end the process, and that nothing else handles, ends the VMM through
 * jail_die_by_signal, and the waiter ends by the same signal. */
static void fatal_handlers(void)
{
	static const int fatal[] = { SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS,
				     SIGFPE, SIGUSR2, SIGSEGV, SIGALRM, SIGTERM, SIGXCPU, SIGXFSZ,
				     SIGVTALRM, SIGPROF, SIGSTKFLT, SIGPWR };
	struct sigaction sa = { .sa_handler = jail_die_by_signal }, old;

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		if (sigaction(fatal[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
			sigaction(fatal[i], &sa, NULL);
}

int jail_stage1(const struct jail_opts *j, struct error *e)
{
	int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID;
	struct stat st;
	pid_t pid, got = 0;
	int p[2], n[2];

	if (geteuid() != 0)
		return error_set(e, EXIT_USAGE, "--jail: needs root: it makes namespaces and mounts, "
				 "then drops to uid %u", (unsigned)j->uid);
	if (stat(j->root, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "--jail: %s: %s", j->root, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return error_set(e, EXIT_USAGE, "--jail: %s: not a directory", j->root);
	close_inherited(j);
	if (j->netns)
		flags |= CLONE_NEWNET;
	if (unshare(flags) < 0)
		return error_set(e, EXIT_HOST, "--jail: unshare (mount, IPC, UTS, PID%s namespaces): %s",
				 j->netns ? ", network" : "", strerror(errno));
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return error_set(e, EXIT_HOST, "--jail: making the mounts private: %s", strerror(errno));
	if (sethostname("shoal-vmm", 9) < 0)
		return error_set(e, EXIT_HOST, "--jail: sethostname: %s", strerror(errno));
	if (pipe2(p, O_CLOEXEC) < 0)
		return error_set(e, EXIT_HOST, "--jail: pipe: %s", strerror(errno));
	if (pipe2(n, O_CLOEXEC | O_NONBLOCK) < 0) {
		close(p[0]);
		close(p[1]);
		return error_set(e, EXIT_HOST, "--jail: pipe: %s", strerror(errno));
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		close(n[0]);
		close(n[1]);
		return error_set(e, EXIT_HOST, "--jail: fork: %s", strerror(errno));
	}
	if (pid > 0) {
		close(p[0]);
		close(n[1]);
		if (write(p[1], &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
			kill(pid, SIGKILL);
		close(p[1]);
		jail_wait_child(pid, n[0]);
	}
	close(n[0]);
	note_fd = n[1];
	fatal_handlers();
	close(p[1]);
	if (read(p[0], &got, sizeof(got)) != (ssize_t)sizeof(got) || got <= 0) {
		close(p[0]);
		return error_set(e, EXIT_HOST, "--jail: the waiting parent went away");
	}
	close(p[0]);
	host_pid = got;
	/* The VMM must not outlive its waiter (whom callers wait for and kill). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	return 0;
}

/* ---- stage 2 ---- */

/* mkdir -p of `path`'s parents (not `path` itself). */
static int mkdir_parents(char *path)
{
	for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			*s = '/';
			return -1;
		}
		*s = '/';
	}
	return 0;
}

/* Bind `src` (a real path) at the same path under `root`. */
static int bind_one(const char *root, const char *src, struct error *e)
{
	char target[PATH_MAX];
	struct stat st;
	int fd;

	if (stat(src, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "--jail: bind=%s: %s", src, strerror(errno));
	if (snprintf(target, sizeof(target), "%s%s", root, src) >= (int)sizeof(target))
		return error_set(e, EXIT_USAGE, "--jail: bind=%s: path too long", src);
	if (mkdir_parents(target) < 0)
		return error_set(e, EXIT_HOST, "--jail: %s: %s", target, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(target, 0755) < 0 && errno != EEXIST)
			return error_set(e, EXIT_HOST, "--jail: %s: %s", target, strerror(errno));
	} else {
		fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return error_set(e, EXIT_HOST, "--jail: %s: %s", target, strerror(errno));
		close(fd);
	}
	if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0)
		return error_set(e, EXIT_HOST, "--jail: bind=%s: %s", src, strerror(errno));
	return 0;
}

/* A procfs of the VMM's own PID namespace at ROOT/proc, with the process
 * directories only (subset=pid: no /proc/sys, no kallsyms): the VMM reads
 * /proc/self/statm for its metrics and reaches files it holds through
 * /proc/self/fd/N (base/path_beneath.c).  Its own fds stay reachable after
 * the drop, though the kernel then makes /proc/self root's. */
static int jail_proc(const char *root, struct error *e)
{
	char target[PATH_MAX];

	if (snprintf(target, sizeof(target), "%s/proc", root) >= (int)sizeof(target))
		return error_set(e, EXIT_USAGE, "--jail: %s: path too long", root);
	if (mkdir(target, 0555) < 0 && errno != EEXIST)
		return error_set(e, EXIT_HOST, "--jail: %s: %s", target, strerror(errno));
	if (mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "subset=pid,hidepid=invisible") < 0)
		return error_set(e, EXIT_HOST, "--jail: mounting /proc (subset=pid) in the jail: %s",
				 strerror(errno));
	return 0;
}

static int drop_privileges(const struct jail_opts *j, struct error *e)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	uid_t r, ef, s;

	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return error_set(e, EXIT_HOST, "--jail: dropping capability %d: %s", cap,
					 strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return error_set(e, EXIT_HOST, "--jail: clearing ambient capabilities: %s", strerror(errno));
	if (setgroups(0, NULL) < 0 || setresgid(j->gid, j->gid, j->gid) < 0)
		return error_set(e, EXIT_HOST, "--jail: setting gid %u: %s", (unsigned)j->gid,
				 strerror(errno));
	if (setresuid(j->uid, j->uid, j->uid) < 0)
		return error_set(e, EXIT_HOST, "--jail: setting uid %u: %s", (unsigned)j->uid,
				 strerror(errno));
	if (getresuid(&r, &ef, &s) < 0 || r != j->uid || ef != j->uid || s != j->uid)
		return error_set(e, EXIT_HOST, "--jail: uid %u did not stick", (unsigned)j->uid);
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0 || data[0].effective || data[0].permitted ||
	    data[1].effective || data[1].permitted)
		return error_set(e, EXIT_HOST, "--jail: capabilities remain after the drop");
	/* A change of credentials cleared it (stage 1 set it). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	return 0;
}

int jail_stage2(const struct jail_opts *j, struct error *e)
{
	char real[JAIL_MAX_BINDS][PATH_MAX];

	for (int i = 0; i < j->nbinds; i++)
		if (!realpath(j->binds[i], real[i]))
			return error_set(e, EXIT_NOINPUT, "--jail: bind=%s: %s", j->binds[i], strerror(errno));
	/* A live snapshot's userfaultfd must handle KVM's own writes to guest
	 * memory (kernel-mode faults), which an unprivileged process may not
	 * ask of userfaultfd(2); the device node's permission is checked at
	 * open, so the descriptor opened now serves after the drop. */
	uffd_dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (mount("shoal-jail", j->root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "mode=0755,size=1m") < 0)
		return error_set(e, EXIT_HOST, "--jail: a tmpfs on %s: %s", j->root, strerror(errno));
	for (int i = 0; i < j->nbinds; i++)
		if (bind_one(j->root, real[i], e))
			return -1;
	if (jail_proc(j->root, e))
		return -1;
	if (chdir(j->root) < 0)
		return error_set(e, EXIT_HOST, "--jail: %s: %s", j->root, strerror(errno));
	/* The old root stacks under the new one and is then detached. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return error_set(e, EXIT_HOST, "--jail: pivot_root into %s: %s", j->root, strerror(errno));
	if (umount2(".", MNT_DETACH) < 0)
		return error_set(e, EXIT_HOST, "--jail: detaching the old root: %s", strerror(errno));
	if (chdir("/") < 0)
		return error_set(e, EXIT_HOST, "--jail: chdir /: %s", strerror(errno));
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  NULL) < 0)
		return error_set(e, EXIT_HOST, "--jail: making the root read-only: %s", strerror(errno));
	if (drop_privileges(j, e))
		return -1;
	log_info("jail: %s, uid %u, gid %u, %d path%s bound, pid %d on the host", j->root,
		 (unsigned)j->uid, (unsigned)j->gid, j->nbinds, j->nbinds == 1 ? "" : "s",
		 (int)jail_host_pid());
	jail_probe();
	return 0;
}

int jail_userfaultfd(int flags)
{
	if (uffd_dev >= 0)
		return ioctl(uffd_dev, USERFAULTFD_IOC_NEW, flags);
	return (int)syscall(SYS_userfaultfd, flags);
}

/* ---- the test probe ---- */

void jail_probe(void)
{
	const char *v = getenv("SHOAL_TEST_JAIL_PROBE");
	char *copy, *tok, *save = NULL;

	if (!v || !(copy = strdup(v)))
		return;
	fprintf(stderr, "shoal: jail probe: uid %u gid %u pid %d\n", (unsigned)getuid(),
		(unsigned)getgid(), (int)getpid());
	for (tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
		if (!strncmp(tok, "open:", 5)) {
			int fd = open(tok + 5, O_RDONLY | O_CLOEXEC);

			fprintf(stderr, "shoal: jail probe: open %s: %s\n", tok + 5,
				fd >= 0 ? "opened" : strerror(errno));
			if (fd >= 0)
				close(fd);
		} else if (!strncmp(tok, "ptrace:", 7)) {
			pid_t pid = (pid_t)atoi(tok + 7);
			long rc = ptrace(PTRACE_ATTACH, pid, NULL, NULL);

			fprintf(stderr, "shoal: jail probe: ptrace %d: %s\n", (int)pid,
				rc == 0 ? "attached" : strerror(errno));
			if (rc == 0)
				ptrace(PTRACE_DETACH, pid, NULL, NULL);
		}
	}
	free(copy);
}
