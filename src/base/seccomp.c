/*
 * seccomp.c - see seccomp.h.
 *
 * Filters are compiled once, on the main thread, by libseccomp and kept
 * as BPF programs; a thread installs its own with the seccomp(2) syscall
 * alone, so a thread that already runs under a filter needs nothing more
 * than `seccomp` allowed to narrow itself (no malloc, no libseccomp).
 * Syscall names for the SIGSYS message are resolved in advance into a
 * static table: the handler only reads memory and calls write,
 * rt_sigaction, rt_sigprocmask and tgkill, which every list allows.
 */
#include "base/seccomp.h"

#include <errno.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"

#define SC_NAMES 512

static struct sock_fprog progs[SECCOMP_NKINDS];
static char sc_names[SC_NAMES][28];
static bool enabled;
static int violate_kind = -1;   /* SHOAL_TEST_SECCOMP_VIOLATE */
static __thread const char *thread_kind = "main (before its filter)";
static __thread bool thread_filtered;

bool seccomp_enabled(void)
{
	return enabled;
}

const char *seccomp_kind_name(enum seccomp_kind kind)
{
	return seccomp_kinds[kind].name;
}

bool seccomp_kind_allows(enum seccomp_kind kind, int nr)
{
	const struct seccomp_kind_def *k = &seccomp_kinds[kind];

	for (int g = 0; g < SECCOMP_MAX_GROUPS && k->groups[g]; g++)
		for (size_t i = 0; i < k->groups[g]->n; i++)
			if (k->groups[g]->rules[i].nr == nr && k->groups[g]->rules[i].arg != SC_ENOSYS)
				return true;
	return false;
}

int seccomp_kind_count(enum seccomp_kind kind)
{
	int n = 0;

	for (int nr = 0; nr < SC_NAMES; nr++)
		n += seccomp_kind_allows(kind, nr);
	return n;
}

/* ---- the SIGSYS handler: async-signal-safe only ---- */

static size_t sc_put(char *buf, size_t at, size_t size, const char *s)
{
	while (*s && at < size)
		buf[at++] = *s++;
	return at;
}

static size_t sc_put_num(char *buf, size_t at, size_t size, long v)
{
	char tmp[24];
	int n = 0;
	unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0 && at < size)
		buf[at++] = '-';
	while (n && at < size)
		buf[at++] = tmp[--n];
	return at;
}

static void sc_sigsys(int sig, siginfo_t *si, void *uc)
{
	char msg[200];
	size_t n = 0;
	int nr = si->si_syscall;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t set;

	(void)uc;
	n = sc_put(msg, n, sizeof(msg), "shoal: seccomp: thread ");
	n = sc_put(msg, n, sizeof(msg), thread_kind);
	n = sc_put(msg, n, sizeof(msg), " made forbidden syscall ");
	n = sc_put(msg, n, sizeof(msg), nr >= 0 && nr < SC_NAMES && sc_names[nr][0] ?
				      sc_names[nr] : "unknown");
	n = sc_put(msg, n, sizeof(msg), " (");
	n = sc_put_num(msg, n, sizeof(msg), nr);
	n = sc_put(msg, n, sizeof(msg) - 1, ")\n");
	if (write(STDERR_FILENO, msg, n) < 0) {
		/* nowhere better to say it */
	}
	sigaction(sig, &dfl, NULL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	syscall(SYS_tgkill, getpid(), gettid(), sig);
	_exit(128 + sig);   /* not reached */
}

/* ---- compiling ---- */

static int add_rule(scmp_filter_ctx ctx, const struct seccomp_rule *r)
{
	switch (r->arg) {
	case SC_ANY:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 0);
	case SC_ENOSYS:
		return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), r->nr, 0);
	case SC_NO_EXEC:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
					SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	case SC_AF_UNIX:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
					SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
	case SC_AF_INET: {
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_INET));

		return rc ? rc : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
						  SCMP_A0(SCMP_CMP_EQ, AF_INET6));
	}
	case SC_CLONE_THREAD:
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
					SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	case SC_IOCTL:
		for (const unsigned long *q = r->ioctls; *q; q++) {
			int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
						  SCMP_A1(SCMP_CMP_EQ, *q));
			if (rc)
				return rc;
		}
		return 0;
	}
	return -EINVAL;
}

/* Compile `kind` into progs[kind]. */
static int compile(enum seccomp_kind kind, struct error *e)
{
	const struct seccomp_kind_def *k = &seccomp_kinds[kind];
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
	int rc = 0, fd = -1;
	off_t len;

	if (!ctx)
		return error_set(e, EXIT_HOST, "seccomp: cannot create the %s filter", k->name);
	/* no_new_privs is set once for the process (seccomp_enable). */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	for (int g = 0; !rc && g < SECCOMP_MAX_GROUPS && k->groups[g]; g++)
		for (size_t i = 0; !rc && i < k->groups[g]->n; i++) {
			rc = add_rule(ctx, &k->groups[g]->rules[i]);
			if (rc)
				error_set(e, EXIT_HOST, "seccomp: %s filter, group %s, syscall %d: %s",
					  k->name, k->groups[g]->name, k->groups[g]->rules[i].nr,
					  strerror(-rc));
		}
	if (!rc) {
		fd = memfd_create("shoal-seccomp", MFD_CLOEXEC);
		if (fd < 0 || seccomp_export_bpf(ctx, fd) < 0 ||
		    (len = lseek(fd, 0, SEEK_END)) <= 0 ||
		    len % (off_t)sizeof(struct sock_filter) ||
		    !(progs[kind].filter = malloc((size_t)len)) ||
		    pread(fd, progs[kind].filter, (size_t)len, 0) != len)
			rc = error_set(e, EXIT_HOST, "seccomp: cannot compile the %s filter", k->name);
		else
			progs[kind].len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
	}
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return rc ? -1 : 0;
}

/* glibc reads /proc/sys/vm/overcommit_memory (openat) the first time a
 * thread's heap (a malloc arena other than the main one) shrinks, and
 * keeps the answer (check_may_shrink_heap in malloc-sysdep.h).  A VMM
 * thread's heap first shrinks under its filter, which has no openat: a
 * disk's I/O thread died so on exit after a qcow2 O_DIRECT run ("thread
 * blk-io made forbidden syscall openat (257)").  So a thread of our own
 * makes its heap shrink once, before any filter: 64 blocks of 64 KiB from
 * its own arena, freed, go back to the top of its heap, which glibc trims. */
static void *heap_warm(void *arg)
{
	void *p[64];

	for (int i = 0; i < 64; i++)
		p[i] = malloc(64 << 10);
	for (int i = 0; i < 64; i++)
		free(p[i]);
	return arg;
}

int seccomp_enable(struct error *e)
{
	pthread_t warm;

	struct sigaction sa = { .sa_sigaction = sc_sigsys, .sa_flags = SA_SIGINFO };

	if (enabled)
		return 0;
	if (!pthread_create(&warm, NULL, heap_warm, NULL))
		pthread_join(warm, NULL);
	/* glibc loads the time zone (openat of /etc/localtime) on the first
	 * gmtime_r of the process: the RTC's, on a vCPU, when a Linux guest
	 * reads the clock at boot ("thread vcpu made forbidden syscall
	 * openat" in the slow_linux_*.sh tests).  Load it now. */
	tzset();
	for (int nr = 0; nr < SC_NAMES; nr++) {
		char *s = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);

		if (s)
			snprintf(sc_names[nr], sizeof(sc_names[nr]), "%s", s);
		free(s);
	}
	for (int k = 0; k < SECCOMP_NKINDS; k++)
		if (compile(k, e))
			return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return error_set(e, EXIT_HOST, "seccomp: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	/* The test trigger (docs/security.md): the thread of this kind makes
	 * a forbidden syscall right after installing its filter, so it only
	 * ever traps.  It is read from the VMM's environment, which no guest
	 * reaches. */
	const char *v = getenv("SHOAL_TEST_SECCOMP_VIOLATE");

	for (int k = 0; v && k < SECCOMP_NKINDS; k++)
		if (!strcmp(v, seccomp_kinds[k].name))
			violate_kind = k;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return error_set(e, EXIT_HOST, "seccomp: cannot install the SIGSYS handler: %s",
				 strerror(errno));
	enabled = true;
	return 0;
}

void seccomp_thread_enter(enum seccomp_kind kind)
{
	if (!enabled)
		return;
	thread_kind = seccomp_kinds[kind].name;
	thread_filtered = true;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &progs[kind]) < 0) {
		char msg[] = "shoal: seccomp: cannot install a thread's filter\n";

		if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
			/* nothing more to do */
		}
		_exit(EXIT_HOST);
	}
	if ((int)kind == violate_kind)
		syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 0);   /* traps: no list allows AF_NETLINK */
}

bool seccomp_thread_filtered(void)
{
	return enabled && thread_filtered;
}
