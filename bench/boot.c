/*
 * bench/boot.c - boot time and footprint of Shoal against QEMU, side by side.
 *
 * The VMMs: Shoal, and QEMU with -accel kvm as three machines: microvm,
 * pc and q35 (the last two run SeaBIOS, and for a PVH kernel its option
 * ROM, before the kernel).  Shoal three ways, for the price of its
 * protection: as it runs by default (seccomp on), with --seccomp off
 * (shoal-noseccomp), and jailed (shoal-jail: --jail DIR on an empty
 * directory the bench makes in /tmp and removes, seccomp on; root only).
 *
 * The guests.  By default the project's test guest (build/shoal-guest),
 * whose ready mark is "shoal-guest: ready".  With --linux, Debian's kernel
 * and the busybox initramfs of the guest kit (scripts/guest-kit.sh): the
 * bzImage by default (--guest KIT/vmlinux boots the PVH entry instead),
 * 2 vCPUs, 512 MiB, and the ready mark is the kit's "shoal-kit: init
 * ready", printed by its /init after the virtio modules are loaded and just
 * before busybox init takes over.  QEMU then gets -cpu host, the CPU model
 * Shoal's default template shows, and every VMM is killed at ready (what
 * follows, the kit's orderly poweroff, is not what is measured).
 *
 * What it measures.  For each VMM it starts the same guest N times and,
 * for every run, records:
 *   ready    wall time from just before fork() to the moment the guest's
 *            ready mark arrives on the VMM's stdout (the guest's serial
 *            console, read through a pipe);
 *   cpu      CPU time the VMM process has used by then: the sum over its
 *            live threads of /proc/PID/task/TID/schedstat (nanoseconds);
 *   vmm rss  the VMM's own resident memory at that moment:
 *            RssAnon + RssFile from /proc/PID/status, i.e. VmRSS minus
 *            RssShmem.  Guest RAM is a shared memfd in both VMMs (Shoal's
 *            design; QEMU is told to use memory-backend-memfd), so the guest
 *            pages touched so far are exactly RssShmem and are left out;
 *   guest    RssShmem itself (guest pages touched, by the guest or by the
 *            VMM loading the kernel);
 *   exit     wall time to the VMM's exit, and its exit status.
 * A jailed Shoal is two processes: the one started, which becomes the
 * waiter `shoal-jail`, and its only child, the real VMM (PID 1 of its own
 * PID namespace, found in /proc/PID/task/PID/children).  The VMM is the
 * one stopped and sampled; "cpu" adds the waiter's own CPU time (the
 * exec, the dynamic linking and the namespaces it made before the fork);
 * "vmm rss" is the VMM's alone, and the waiter's resident memory
 * (RssAnon + RssFile, and the part of it no other process maps:
 * Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) is reported on
 * a line of its own.  Neither process alone is the price: fork() does not
 * copy the page-table entries of file mappings never written to (code,
 * constants), so the VMM counts only the library pages it touches again
 * after the fork, and the waiter holds the ones touched before it.  The
 * ratios against an unjailed Shoal therefore add the waiter two ways: its
 * RSS (pages both map counted twice, an upper bound) and its private
 * pages (pages no other process maps; a low estimate, since a page it
 * shares with some other process but not the VMM is left out).
 * Runs are interleaved (run 1 of every VMM, then run 2, ...) so that drift
 * in the load of a shared machine falls on all of them alike.  Medians and
 * spreads are printed, and the ratios of the medians: Shoal/QEMU, and
 * shoal-jail and shoal against shoal-noseccomp.
 *
 * Sampling at "ready".  With the guest command line "exit 0" the guest
 * leaves soon after its ready line (it prints one more console line, tens of
 * milliseconds of port I/O on kvm_pvm, then exits), so the VMM is stopped with
 * SIGSTOP as soon as the line is read, sampled, and let go with SIGCONT; a
 * stopped process can neither exit nor free memory.  If it was gone all the
 * same (a heavily loaded host), the run still counts for the times (cpu then
 * comes from wait4()'s rusage, to exit) but has no memory sample; the count
 * of runs with memory samples is printed.  A command line that keeps the
 * guest up (--cmdline shell --kill-after-ready) makes every sample count.
 *
 * This is a benchmark, not a test: it prints figures and never judges them
 * (docs/benchmarks.md, "## Boot", holds results and the method).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#define READY_MARK   "shoal-guest: ready"
#define LINUX_MARK   "shoal-kit: init ready"
#define LINUX_CMDLINE "console=ttyS0 quiet kit.quiet kit.poweroff"
#define NVMM         6               /* shoal three ways, three QEMU machines */
#define V_SHOAL      0               /* indexes in v[] */
#define V_NOSECCOMP  1
#define V_JAIL       2
#define V_QEMU       3               /* the first QEMU machine */
#define MAX_RUNS     1000
#define MAX_ARGS     48
#define OUT_KEEP     8192            /* serial output kept for diagnostics */

/* One VMM under test: how to start it and what it gave. */
struct vmm {
	const char *name;            /* "shoal", "shoal-noseccomp", "shoal-jail", "qemu-..." */
	char *argv[MAX_ARGS];        /* command line, NULL-terminated */
	int jailed;                  /* the VMM is the started process's child */
	int want_status;             /* exit status of a clean guest exit */
	int disabled;                /* 1 after a run that could not start */
	char why[256];               /* reason when disabled */
	int nruns;                   /* runs that reached ready */
	double ready_ms[MAX_RUNS];
	double exit_ms[MAX_RUNS];
	double cpu_ms[MAX_RUNS];
	double vmm_kib[MAX_RUNS];    /* RssAnon + RssFile */
	double guest_kib[MAX_RUNS];  /* RssShmem */
	double rss_kib[MAX_RUNS];    /* VmRSS */
	double waiter_kib[MAX_RUNS]; /* jailed: the waiter's RssAnon + RssFile */
	double waiter_priv_kib[MAX_RUNS]; /* jailed: the waiter's private pages */
	double total_kib[MAX_RUNS];  /* jailed: vmm_kib + waiter_kib */
	double distinct_kib[MAX_RUNS]; /* jailed: vmm_kib + waiter_priv_kib */
	int nmem;                    /* runs with a memory sample */
	int bad_status;              /* runs whose exit status was unexpected */
	int last_status;
};

/* One run's results before they are filed. */
struct sample {
	double ready_ms, exit_ms, cpu_ms;
	long rss, anon, file, shmem;   /* KiB; rss < 0 when not sampled */
	long waiter, waiter_priv;      /* KiB, jailed only */
	int status;                    /* exit status, or 128+signal */
};

static struct {
	int runs;
	double timeout_s;
	int kill_after_ready;
	int verbose;
	int linux_mode;              /* --linux: the guest kit's kernel */
	const char *mark;            /* ready mark on the console */
	const char *cmdline;
	const char *guest;
	const char *initrd;          /* NULL: none */
	const char *shoal;
	const char *qemu;
	const char *memory;          /* e.g. "256M" */
	const char *cpus;
	const char *only;            /* comma list, NULL for all */
} opt = {
	.runs = 10, .shoal = "build/shoal", .qemu = "qemu-system-x86_64",
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- reading /proc ---- */

/* Fill anon/file/shmem/rss (KiB) from /proc/PID/status; -1 if gone. */
static int proc_mem(pid_t pid, struct sample *s)
{
	char path[64], line[256];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		n += sscanf(line, "VmRSS: %ld", &s->rss) == 1;
		n += sscanf(line, "RssAnon: %ld", &s->anon) == 1;
		n += sscanf(line, "RssFile: %ld", &s->file) == 1;
		n += sscanf(line, "RssShmem: %ld", &s->shmem) == 1;
	}
	fclose(f);
	/* A zombie has no Vm* lines: the memory is already gone. */
	return n == 4 ? 0 : -1;
}

/* CPU time (ms) of PID's live threads, from schedstat; -1 if unreadable. */
static double proc_cpu_ms(pid_t pid)
{
	char path[96];
	struct dirent *d;
	unsigned long long ns, sum = 0;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir))) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &ns) == 1) {
			sum += ns;
			n++;
		}
		fclose(f);
	}
	closedir(dir);
	return n ? sum / 1e6 : -1;
}

/* The private pages (KiB) of PID, from /proc/PID/smaps_rollup; -1 if gone. */
static long proc_private_kib(pid_t pid)
{
	char path[64], line[256];
	long v, sum = 0;
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Private_Clean: %ld", &v) == 1 ||
		    sscanf(line, "Private_Dirty: %ld", &v) == 1) {
			sum += v;
			n++;
		}
	fclose(f);
	return n == 2 ? sum : -1;
}

/* The first child of PID (a jail's waiter has one: the VMM); -1 if none. */
static pid_t proc_child(pid_t pid)
{
	char path[96];
	int child = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &child) != 1)
		child = -1;
	fclose(f);
	return child;
}

/* ---- one run ---- */

/* Start argv with stdout on a pipe, stdin from /dev/null, stderr to errfd. */
static pid_t spawn(char *const argv[], int *outfd, int errfd)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		if (nul < 0 || dup2(nul, 0) < 0 || dup2(p[1], 1) < 0 || dup2(errfd, 2) < 0)
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	*outfd = p[0];
	return pid;
}

/* Append new output to the kept window; return 1 once the ready mark is seen. */
static int scan_output(char *keep, size_t *len, const char *buf, size_t n)
{
	size_t room = OUT_KEEP - 1 - *len;

	if (n > room) {            /* drop the oldest bytes, keep the newest */
		size_t drop = n - room > *len ? *len : n - room;

		memmove(keep, keep + drop, *len - drop);
		*len -= drop;
		if (n > OUT_KEEP - 1 - *len) {
			buf += n - (OUT_KEEP - 1 - *len);
			n = OUT_KEEP - 1 - *len;
		}
	}
	memcpy(keep + *len, buf, n);
	*len += n;
	keep[*len] = 0;
	return strstr(keep, opt.mark) != NULL;
}

/* Read the pipe until ready (want_ready) or EOF, or until the deadline.
 * Returns 1 ready, 0 EOF, -1 deadline passed. */
static int pump(int fd, double deadline, int want_ready, char *keep, size_t *len)
{
	char buf[4096];

	for (;;) {
		double left = deadline - now_ms();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;
		int r;

		if (left <= 0)
			return -1;
		r = poll(&pfd, 1, (int)left + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		if (scan_output(keep, len, buf, (size_t)n) && want_ready)
			return 1;
	}
}

/* Print the tail of the child's stderr and serial output, for a failed run. */
static void show_failure(struct vmm *v, int errfd, const char *keep)
{
	char buf[1024];
	ssize_t n;
	off_t end = lseek(errfd, 0, SEEK_END);

	lseek(errfd, end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	n = read(errfd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	fprintf(stderr, "%s: stderr tail:\n%s\n%s: serial tail:\n%.600s\n", v->name, buf,
		v->name, strlen(keep) > 600 ? keep + strlen(keep) - 600 : keep);
}

static int decode_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

/* Run the VMM once.  Returns 0 with *s filled when the guest got ready. */
static int run_once(struct vmm *v, struct sample *s)
{
	char keep[OUT_KEEP] = "";
	char errpath[] = "/tmp/shoal-bench-err.XXXXXX";
	size_t len = 0;
	struct rusage ru;
	int outfd, errfd, st = 0, r;
	double t0, deadline;
	pid_t pid, vmm;

	memset(s, 0, sizeof(*s));
	s->rss = -1;
	errfd = mkstemp(errpath);
	if (errfd < 0)
		return -1;
	unlink(errpath);
	t0 = now_ms();
	deadline = t0 + opt.timeout_s * 1e3;
	pid = spawn(v->argv, &outfd, errfd);
	if (pid < 0) {
		close(errfd);
		return -1;
	}
	r = pump(outfd, deadline, 1, keep, &len);
	if (r == 1) {
		s->ready_ms = now_ms() - t0;
		/* Freeze, sample, thaw: with "exit 0" the VMM is about to leave
		 * (the guest prints one more console line first, a few ms of
		 * port writes), and a stopped process cannot free its memory.
		 * Jailed, the VMM is the waiter's child; the waiter only waits. */
		vmm = v->jailed ? proc_child(pid) : pid;
		if (vmm > 0) {
			kill(vmm, SIGSTOP);
			s->cpu_ms = proc_cpu_ms(vmm);
			if (v->jailed && s->cpu_ms >= 0) {
				double w = proc_cpu_ms(pid);

				s->cpu_ms = w < 0 ? -1 : s->cpu_ms + w;
			}
			if (proc_mem(vmm, s) < 0)
				s->rss = -1;
			if (v->jailed && s->rss >= 0) {
				struct sample w = { .rss = -1 };

				s->waiter_priv = proc_private_kib(pid);
				if (proc_mem(pid, &w) < 0 || s->waiter_priv < 0)
					s->rss = -1;   /* both or neither */
				s->waiter = w.anon + w.file;
			}
			kill(vmm, SIGCONT);
			if (opt.kill_after_ready)
				kill(vmm, SIGKILL);   /* a jail's waiter then ends the same way */
		} else {
			s->cpu_ms = -1;
		}
		r = pump(outfd, deadline, 0, keep, &len);
	}
	if (r < 0) {
		/* The VMM first: a killed waiter would leave a jailed one running. */
		if (v->jailed && (vmm = proc_child(pid)) > 0)
			kill(vmm, SIGKILL);
		kill(pid, SIGKILL);
	}
	wait4(pid, &st, 0, &ru);
	s->exit_ms = now_ms() - t0;
	s->status = decode_status(st);
	if (s->ready_ms > 0 && s->cpu_ms < 0)   /* gone before sampling: to exit */
		s->cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
			    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
	close(outfd);
	if (s->ready_ms <= 0 || opt.verbose) {
		if (s->ready_ms <= 0)
			fprintf(stderr, "%s: no \"%s\" line (%s, status %d)\n", v->name, opt.mark,
				r < 0 ? "timed out" : "exited", s->status);
		show_failure(v, errfd, keep);
	}
	close(errfd);
	return s->ready_ms > 0 ? 0 : -1;
}

static void file_sample(struct vmm *v, const struct sample *s)
{
	int i = v->nruns++;

	v->ready_ms[i] = s->ready_ms;
	v->exit_ms[i] = s->exit_ms;
	v->cpu_ms[i] = s->cpu_ms;
	v->last_status = s->status;
	if (!opt.kill_after_ready && s->status != v->want_status)
		v->bad_status++;
	if (s->rss >= 0) {
		int j = v->nmem++;

		v->vmm_kib[j] = s->anon + s->file;
		v->guest_kib[j] = s->shmem;
		v->rss_kib[j] = s->rss;
		v->waiter_kib[j] = s->waiter;
		v->waiter_priv_kib[j] = s->waiter_priv;
		v->total_kib[j] = s->anon + s->file + s->waiter;
		v->distinct_kib[j] = s->anon + s->file + s->waiter_priv;
	}
}

/* ---- statistics and report ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Quantile q (0..1) of n values, linear interpolation; NAN when n == 0. */
static double quantile(const double *vals, int n, double q)
{
	double tmp[MAX_RUNS], pos;
	int lo;

	if (n <= 0)
		return NAN;
	memcpy(tmp, vals, n * sizeof(*vals));
	qsort(tmp, n, sizeof(*tmp), cmp_double);
	pos = q * (n - 1);
	lo = (int)pos;
	if (lo + 1 >= n)
		return tmp[n - 1];
	return tmp[lo] + (pos - lo) * (tmp[lo + 1] - tmp[lo]);
}

/* "median [min..max]" of n values scaled by k, into buf. */
static const char *spread(char *buf, size_t sz, const double *vals, int n, double k, int prec)
{
	if (n <= 0) {
		snprintf(buf, sz, "-");
		return buf;
	}
	snprintf(buf, sz, "%.*f [%.*f..%.*f]", prec, quantile(vals, n, 0.5) * k,
		 prec, quantile(vals, n, 0) * k, prec, quantile(vals, n, 1) * k);
	return buf;
}

#define COLS "%-16s %-24s %-22s %-20s %-20s %-24s %s\n"

static void report_vmm(const struct vmm *v)
{
	char a[64], b[64], c[64], d[64], e[64], f[32];

	if (v->nruns == 0) {
		printf("%-16s not measured: %s\n", v->name, v->why[0] ? v->why : "no run got ready");
		return;
	}
	snprintf(f, sizeof(f), "%d/%d", v->nmem, v->nruns);
	printf(COLS, v->name,
	       spread(a, sizeof(a), v->ready_ms, v->nruns, 1, 1),
	       spread(b, sizeof(b), v->cpu_ms, v->nruns, 1, 1),
	       spread(c, sizeof(c), v->vmm_kib, v->nmem, 1 / 1024.0, 2),
	       spread(d, sizeof(d), v->guest_kib, v->nmem, 1 / 1024.0, 2),
	       spread(e, sizeof(e), v->exit_ms, v->nruns, 1, 1), f);
	if (v->jailed && v->nmem)
		printf("%-16s + the waiter shoal-jail, not in vmm rss: rss MiB %s, of which private %s\n",
		       "", spread(c, sizeof(c), v->waiter_kib, v->nmem, 1 / 1024.0, 2),
		       spread(d, sizeof(d), v->waiter_priv_kib, v->nmem, 1 / 1024.0, 2));
	if (v->bad_status)
		printf("%-16s (%d runs exited with an unexpected status, last %d; expected %d)\n", "",
		       v->bad_status, v->last_status, v->want_status);
}

static void report_ratio(const struct vmm *s, const struct vmm *q)
{
	double r = quantile(s->ready_ms, s->nruns, .5) / quantile(q->ready_ms, q->nruns, .5);
	double c = quantile(s->cpu_ms, s->nruns, .5) / quantile(q->cpu_ms, q->nruns, .5);
	double m = quantile(s->vmm_kib, s->nmem, .5) / quantile(q->vmm_kib, q->nmem, .5);

	if (s->nruns == 0 || q->nruns == 0)
		return;
	printf("ratio %s/%s: ready %.3f, cpu %.3f, vmm rss %.3f", s->name, q->name, r, c, m);
	/* The whole price, the waiter too: its RSS counts the pages it shares
	 * with the VMM twice (an upper bound); its private pages do not. */
	if (s->jailed && !q->jailed)
		printf(", vmm + waiter rss %.3f, vmm + waiter private %.3f",
		       quantile(s->total_kib, s->nmem, .5) / quantile(q->vmm_kib, q->nmem, .5),
		       quantile(s->distinct_kib, s->nmem, .5) / quantile(q->vmm_kib, q->nmem, .5));
	printf("\n");
}

/* ---- set-up ---- */

static void add_args(struct vmm *v, int *n, const char *first, ...)
{
	va_list ap;
	const char *a;

	va_start(ap, first);
	for (a = first; a; a = va_arg(ap, const char *))
		if (*n < MAX_ARGS - 1)
			v->argv[(*n)++] = (char *)a;
	va_end(ap);
	v->argv[*n] = NULL;
}

static int wanted(const char *name)
{
	char list[256], *tok, *save = NULL;

	if (!opt.only)
		return 1;
	snprintf(list, sizeof(list), "%s", opt.only);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (!strcmp(tok, name) || (!strcmp(tok, "qemu") && !strncmp(name, "qemu", 4)))
			return 1;
	return 0;
}

/* The QEMU machines, after Shoal's variants in v[]. */
static const char *const qemu_machines[NVMM - V_QEMU][2] = {
	{ "qemu-microvm", "microvm" }, { "qemu-pc", "pc" }, { "qemu-q35", "q35" },
};
static char membackend[96], qmachine[NVMM - V_QEMU][96];

/* shoal-jail's DIR: made empty by setup_jail, removed at exit. */
static char jail_dir[] = "/tmp/shoal-bench-jail.XXXXXX";
static int jail_dir_made;

static void remove_jail_dir(void)
{
	if (jail_dir_made && rmdir(jail_dir) < 0)
		fprintf(stderr, "boot: %s: %s (left behind)\n", jail_dir, strerror(errno));
}

/* The kit file NAME: $SHOAL_KIT_<ENV>, else the guest kit's cache folder
 * (${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}/kit), as
 * scripts/guest-kit.sh places it. */
static const char *kit_file(const char *env, const char *name)
{
	static char paths[2][512];
	static int next;
	const char *e = getenv(env), *c = getenv("SHOAL_CACHE"), *x = getenv("XDG_CACHE_HOME");
	char *p = paths[next++ % 2];

	if (e && *e)
		return e;
	if (c && *c)
		snprintf(p, sizeof(paths[0]), "%s/kit/%s", c, name);
	else if (x && *x)
		snprintf(p, sizeof(paths[0]), "%s/shoal/kit/%s", x, name);
	else
		snprintf(p, sizeof(paths[0]), "%s/.cache/shoal/kit/%s", getenv("HOME") ?: "", name);
	return p;
}

/* Shoal as NAME, with EXTRA (NULL, or an option and its value) after "run". */
static void setup_shoal(struct vmm *v, const char *name, const char *extra, const char *value)
{
	int n = 0;

	v->name = name;
	v->want_status = 0;
	add_args(v, &n, opt.shoal, "run", NULL);
	if (extra)
		add_args(v, &n, extra, value, NULL);
	add_args(v, &n, "--kernel", opt.guest, "--cmdline", opt.cmdline,
		 "--console", "stdio", "--memory", opt.memory, "--cpus", opt.cpus, NULL);
	if (opt.initrd)
		add_args(v, &n, "--initrd", opt.initrd, NULL);
	if (access(opt.shoal, X_OK) != 0)
		snprintf(v->why, sizeof(v->why), "%s: %s", opt.shoal, strerror(errno));
}

/* shoal-jail: --jail on a fresh empty directory, if root (the jail needs it). */
static void setup_jail(struct vmm *v)
{
	setup_shoal(v, "shoal-jail", "--jail", jail_dir);
	v->jailed = 1;
	if (v->why[0] || !wanted(v->name))
		return;
	if (geteuid() != 0) {
		snprintf(v->why, sizeof(v->why), "--jail needs root");
	} else if (!mkdtemp(jail_dir)) {
		snprintf(v->why, sizeof(v->why), "%s: %s", jail_dir, strerror(errno));
	} else {
		jail_dir_made = 1;
		atexit(remove_jail_dir);
	}
}

/* QEMU machine i (qemu_machines[i]), the same guest and sizes as Shoal. */
static void setup_qemu(struct vmm *v, int i)
{
	int n = 0;

	snprintf(qmachine[i], sizeof(qmachine[i]), "%s,memory-backend=mem", qemu_machines[i][1]);
	v->name = qemu_machines[i][0];
	v->want_status = 1;   /* isa-debug-exit: (0 << 1) | 1 */
	add_args(v, &n, opt.qemu, "-accel", "kvm", "-M", qmachine[i], "-m", opt.memory,
		 "-object", membackend, "-smp", opt.cpus, "-display", "none", "-nodefaults",
		 "-no-user-config", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
		 "-kernel", opt.guest, "-append", opt.cmdline, NULL);
	if (opt.linux_mode)
		add_args(v, &n, "-cpu", "host", NULL);
	if (opt.initrd)
		add_args(v, &n, "-initrd", opt.initrd, NULL);
}

static void setup_vmms(struct vmm *v)
{
	setup_shoal(&v[V_SHOAL], "shoal", NULL, NULL);
	setup_shoal(&v[V_NOSECCOMP], "shoal-noseccomp", "--seccomp", "off");
	setup_jail(&v[V_JAIL]);
	/* Guest RAM as a shared memfd, as Shoal keeps it, so RssShmem = guest. */
	snprintf(membackend, sizeof(membackend),
		 "memory-backend-memfd,id=mem,size=%s,share=on", opt.memory);
	for (int i = V_QEMU; i < NVMM; i++)
		setup_qemu(&v[i], i - V_QEMU);
	for (int i = 0; i < NVMM; i++)
		if (!wanted(v[i].name)) {
			v[i].disabled = 1;
			snprintf(v[i].why, sizeof(v[i].why), "left out by --only");
		} else if (v[i].why[0]) {
			v[i].disabled = 1;
		}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: boot [-n RUNS] [--linux]\n"
		"            [--only shoal,shoal-noseccomp,shoal-jail,qemu-microvm,qemu-pc,qemu-q35]\n"
		"            [--guest KERNEL] [--initrd FILE] [--mark TEXT] [--shoal PATH]\n"
		"            [--qemu PATH] [--cmdline STR] [--memory SIZE] [--cpus N]\n"
		"            [--timeout SECONDS] [--kill-after-ready] [-v]\n"
		"Boots a guest RUNS times (default 10) in each VMM, interleaved, and prints\n"
		"median [min..max] of: time to the guest's ready line, VMM CPU time by then,\n"
		"VMM resident memory (RSS minus guest RAM), guest RAM touched, and time to\n"
		"exit.  Run from the repository root.  shoal-noseccomp is shoal --seccomp off;\n"
		"shoal-jail is shoal --jail on an empty temporary directory (root only).\n"
		"  default   the test guest build/shoal-guest, \"exit 0\", 256M, 1 vCPU, ready\n"
		"            at \"" READY_MARK "\"\n"
		"  --linux   the guest kit's bzImage and initramfs (scripts/guest-kit.sh;\n"
		"            $SHOAL_KIT_BZIMAGE and $SHOAL_KIT_INITRD, else its cache),\n"
		"            \"" LINUX_CMDLINE "\", 512M, 2 vCPUs, QEMU with -cpu host,\n"
		"            ready at \"" LINUX_MARK "\", killed there\n");
}

/* Defaults that depend on the mode, for what the command line left unset. */
static void apply_mode_defaults(void)
{
	if (opt.linux_mode) {
		opt.kill_after_ready = 1;
		opt.guest = opt.guest ?: kit_file("SHOAL_KIT_BZIMAGE", "bzImage");
		opt.initrd = opt.initrd ?: kit_file("SHOAL_KIT_INITRD", "initrd.cpio.gz");
	}
	opt.mark = opt.mark ?: opt.linux_mode ? LINUX_MARK : READY_MARK;
	opt.cmdline = opt.cmdline ?: opt.linux_mode ? LINUX_CMDLINE : "exit 0";
	opt.guest = opt.guest ?: "build/shoal-guest";
	opt.memory = opt.memory ?: opt.linux_mode ? "512M" : "256M";
	opt.cpus = opt.cpus ?: opt.linux_mode ? "2" : "1";
	if (opt.timeout_s == 0)
		opt.timeout_s = opt.linux_mode ? 120 : 30;
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "runs", 1, 0, 'n' }, { "only", 1, 0, 'o' }, { "guest", 1, 0, 'g' },
		{ "shoal", 1, 0, 's' }, { "qemu", 1, 0, 'q' }, { "cmdline", 1, 0, 'c' },
		{ "memory", 1, 0, 'm' }, { "cpus", 1, 0, 'p' }, { "timeout", 1, 0, 't' },
		{ "kill-after-ready", 0, 0, 'k' }, { "verbose", 0, 0, 'v' }, { "help", 0, 0, 'h' },
		{ "linux", 0, 0, 'L' }, { "initrd", 1, 0, 'i' }, { "mark", 1, 0, 'M' },
		{ 0, 0, 0, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "n:o:g:s:q:c:m:p:t:kvhLi:M:", lo, NULL)) != -1) {
		switch (c) {
		case 'n': opt.runs = atoi(optarg); break;
		case 'o': opt.only = optarg; break;
		case 'g': opt.guest = optarg; break;
		case 's': opt.shoal = optarg; break;
		case 'q': opt.qemu = optarg; break;
		case 'c': opt.cmdline = optarg; break;
		case 'm': opt.memory = optarg; break;
		case 'p': opt.cpus = optarg; break;
		case 't': opt.timeout_s = atof(optarg); break;
		case 'k': opt.kill_after_ready = 1; break;
		case 'v': opt.verbose = 1; break;
		case 'L': opt.linux_mode = 1; break;
		case 'i': opt.initrd = optarg; break;
		case 'M': opt.mark = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (opt.runs < 1 || opt.runs > MAX_RUNS || opt.timeout_s < 0 || optind != argc) {
		usage(stderr);
		exit(2);
	}
	apply_mode_defaults();
}

static void print_header(void)
{
	struct utsname u;
	time_t t = time(NULL);
	char date[64];

	uname(&u);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	printf("boot benchmark, %s, host %s %s, %ld cpus\n", date, u.sysname, u.release,
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf("guest %s%s%s, cmdline \"%s\", memory %s, %s vCPU(s), ready at \"%s\"\n",
	       opt.guest, opt.initrd ? " + " : "", opt.initrd ?: "", opt.cmdline, opt.memory,
	       opt.cpus, opt.mark);
	if (jail_dir_made)
		printf("shoal-jail: --jail %s (empty; uid and gid 65534), seccomp on\n", jail_dir);
	printf("%d runs each, interleaved%s\n", opt.runs,
	       opt.kill_after_ready ? ", each VMM killed at ready (exit ms is the kill)" : "");
}

/* One round: every VMM once, starting with a different one each round so
 * that none always runs right after the same neighbour. */
static void run_round(struct vmm *v, int run)
{
	struct sample s;

	for (int k = 0; k < NVMM; k++) {
		struct vmm *m = &v[(run + k) % NVMM];

		if (m->disabled)
			continue;
		if (run_once(m, &s) == 0) {
			file_sample(m, &s);
		} else if (m->nruns == 0) {
			m->disabled = 1;   /* never started: do not retry N times */
			snprintf(m->why, sizeof(m->why),
				 "the first run never printed the ready line (see stderr)");
		}
	}
}

int main(int argc, char **argv)
{
	static struct vmm v[NVMM];

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (access(opt.guest, R_OK) != 0 || (opt.initrd && access(opt.initrd, R_OK) != 0)) {
		fprintf(stderr, "boot: %s: %s (make guest, or scripts/guest-kit.sh for --linux)\n",
			access(opt.guest, R_OK) ? opt.guest : opt.initrd, strerror(errno));
		return 1;
	}
	setup_vmms(v);
	print_header();
	for (int run = 0; run < opt.runs; run++)
		run_round(v, run);
	printf("\nmedian [min..max] of %d runs\n", opt.runs);
	printf(COLS, "", "ready ms", "cpu ms to ready", "vmm rss MiB", "guest MiB touched",
	       "exit ms", "mem");
	printf(COLS, "", "(fork to ready line)", "(schedstat)", "(RSS - RssShmem)", "(RssShmem)",
	       "(fork to exit)", "samples");
	for (int i = 0; i < NVMM; i++)
		report_vmm(&v[i]);
	printf("\n");
	for (int i = V_QEMU; i < NVMM; i++)
		report_ratio(&v[V_SHOAL], &v[i]);
	report_ratio(&v[V_JAIL], &v[V_NOSECCOMP]);
	report_ratio(&v[V_SHOAL], &v[V_NOSECCOMP]);
	report_ratio(&v[V_JAIL], &v[V_SHOAL]);
	printf("anchor: Firecracker starts its VMM in about 8 ms of CPU and keeps its overhead "
	       "under 5 MiB (its published specification).\n");
	return 0;
}
