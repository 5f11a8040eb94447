/*
 * seccomp.h - one seccomp filter per kind of VMM thread (issue 15).
 *
 * `shoal run` calls seccomp_enable() on its main thread before it builds
 * the VM: that sets no_new_privs for the process, compiles every kind's
 * filter (libseccomp, from the reviewed table in seccomp_rules.c) and
 * installs the SIGSYS handler.  From then on each VMM thread calls
 * seccomp_thread_enter(KIND) first thing (vCPU, event loop, block I/O,
 * snapshot writer and fault threads) and the main thread calls it once
 * its threads are started.  Before seccomp_enable() (the daemon, the
 * vhost-user back end, tests, --seccomp=off) seccomp_thread_enter does
 * nothing.
 *
 * Filters stack and a thread inherits its creator's: a thread started
 * from a filtered thread (the snapshot writer and fault threads, started
 * on the event loop) can only narrow.  So a creator's list holds all of
 * what its children need (checked by the unit test).
 *
 * A syscall outside the list traps (SECCOMP_RET_TRAP): the handler writes
 * "shoal: seccomp: thread <kind> made forbidden syscall <name> (<nr>)" to
 * stderr with async-signal-safe calls only and the process dies by
 * SIGSYS.  Invariant: a thread never runs guest-reachable code before its
 * filter is installed.
 *
 * For tests: SHOAL_TEST_SECCOMP_VIOLATE=<kind> in the VMM's environment
 * makes that kind's thread call socket(AF_NETLINK) right after installing
 * its filter; it traps, since no list allows it.  Without seccomp on it
 * does nothing.  The environment is the VMM launcher's, never a guest's.
 */
#ifndef SHOAL_BASE_SECCOMP_H
#define SHOAL_BASE_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

enum seccomp_kind {
	SECCOMP_MAIN,          /* main thread once the VM runs: waits, joins, tears down */
	SECCOMP_VCPU,          /* KVM_RUN and the device models' register handlers */
	SECCOMP_EVENT,         /* the event loop: devices, console, control socket, snapshots */
	SECCOMP_BLK_IO,        /* virtio-blk's I/O thread (io_uring or pread/pwrite) */
	SECCOMP_SNAP_WRITER,   /* live snapshot writer (state/snapshot.c) */
	SECCOMP_SNAP_FAULT,    /* live snapshot's userfaultfd fault thread */
	SECCOMP_MIGRATE,       /* live migration's sender (state/migrate.c) */
	SECCOMP_POSTCOPY,      /* post-copy's destination thread (state/migrate_postcopy.c) */
	SECCOMP_STORE,         /* a store: disk's loader and prefetch threads (store/stream.c) */
	SECCOMP_NKINDS
};

/* Argument checks a rule may carry. */
enum seccomp_arg {
	SC_ANY,          /* any arguments */
	SC_NO_EXEC,      /* mmap/mprotect: arg 2 (prot) without PROT_EXEC */
	SC_AF_UNIX,      /* socket: arg 0 (domain) is AF_UNIX */
	SC_AF_INET,      /* socket: arg 0 (domain) is AF_INET or AF_INET6 */
	SC_CLONE_THREAD, /* clone: arg 0 (flags) has CLONE_THREAD: threads, never a process */
	SC_IOCTL,        /* ioctl: arg 1 (request) is in the rule's request list */
	SC_ENOSYS,       /* not allowed, but fails with ENOSYS instead of killing
			    (clone3, which glibc then replaces with clone) */
};

struct seccomp_rule {
	int nr;                        /* syscall number */
	enum seccomp_arg arg;
	const unsigned long *ioctls;   /* SC_IOCTL: requests, 0-terminated */
	const char *why;               /* the reason it is allowed */
};

struct seccomp_group {
	const char *name;
	const struct seccomp_rule *rules;
	size_t n;
};

#define SECCOMP_MAX_GROUPS 16

struct seccomp_kind_def {
	const char *name;                                   /* "vcpu", "event", ... */
	const struct seccomp_group *groups[SECCOMP_MAX_GROUPS];   /* NULL-terminated */
};

/* The reviewed table (seccomp_rules.c). */
extern const struct seccomp_kind_def seccomp_kinds[SECCOMP_NKINDS];

/* Per process; 0 or -1 with `e` set.  Idempotent. */
int seccomp_enable(struct error *e);
bool seccomp_enabled(void);

/* Install `kind`'s filter on the calling thread when enabled; a failure
 * ends the process (a thread must not run unfiltered). */
void seccomp_thread_enter(enum seccomp_kind kind);
/* Whether the calling thread runs under one of these filters (a disk
 * opened from it cannot start threads of another kind: store/stream.c). */
bool seccomp_thread_filtered(void);

/* Whether `kind`'s table allows syscall `nr` at all (any arguments). */
bool seccomp_kind_allows(enum seccomp_kind kind, int nr);
/* Number of distinct syscalls a kind allows (docs, figures). */
int seccomp_kind_count(enum seccomp_kind kind);
const char *seccomp_kind_name(enum seccomp_kind kind);

#endif
