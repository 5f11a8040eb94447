/*
 * jail.h - a VMM that holds nothing it does not need: its own namespaces,
 * an empty root, an unprivileged uid and gid, no capabilities (jail.c has
 * the why and the order).
 */
#ifndef SHOAL_VMM_JAIL_H
#define SHOAL_VMM_JAIL_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"

#define JAIL_MAX_BINDS 8

struct jail_opts {
	bool on;
	char *root;                      /* an existing empty directory */
	uid_t uid;                       /* default 65534 (nobody) */
	gid_t gid;                       /* default 65534 (nogroup) */
	char *binds[JAIL_MAX_BINDS];     /* absolute paths seen inside at the same path */
	int nbinds;
	bool netns;                      /* a network namespace of its own */
	int keep_fds[JAIL_MAX_BINDS];    /* inherited descriptors the VM uses (--net fd=N) */
	int nkeep;
};

/* Parse `--jail DIR[,uid=N][,gid=N][,bind=PATH]...` into `j` (zeroed or
 * already holding a parse; a second --jail is refused). */
int jail_parse(struct jail_opts *j, const char *spec, struct error *e);
/* Add a path to be bound into the jail (a vsock socket's directory). */
int jail_add_bind(struct jail_opts *j, const char *path, struct error *e);
void jail_opts_free(struct jail_opts *j);

/* Stage 1, before any thread and before the VM is built: every inherited
 * descriptor above 2 closed but j->keep_fds; new mount, IPC, UTS and PID
 * namespaces (and network, when j->netns), mounts made private.  Forks: the parent stays outside, forwards SIGTERM, SIGINT,
 * SIGHUP and SIGQUIT and ends as the VMM ended (jail_stage1 never returns
 * there); the child returns 0 as PID 1 of the new namespace.  -1 with e. */
int jail_stage1(const struct jail_opts *j, struct error *e);
/* Stage 2, once the VM is built, its files open and its sockets bound,
 * before the event loop and the vCPUs start: pivot_root into a read-only
 * tmpfs on j->root that holds only the bind paths, then drop to j->uid and
 * j->gid with no capabilities.  -1 with e. */
int jail_stage2(const struct jail_opts *j, struct error *e);
/* A new userfaultfd (flags as userfaultfd(2)): through the /dev/userfaultfd
 * opened before the jail's drop, else the syscall.  -1 with errno. */
int jail_userfaultfd(int flags);
/* End the process as if by `sig` (a fatal signal's handler): in a jail,
 * where the VMM is PID 1 and raise() of an unhandled signal does nothing,
 * the waiter outside is told and ends by it; else SIG_DFL and raise. */
void jail_die_by_signal(int sig);
/* The VMM's pid as the host sees it (getpid() outside a jail). */
pid_t jail_host_pid(void);
/* For tests: SHOAL_TEST_JAIL_PROBE="open:PATH;ptrace:PID;..." makes stage 2
 * try each after the drop and print "shoal: jail probe: ..." lines. */
void jail_probe(void);

#endif
