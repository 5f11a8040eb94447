/*
 * hostutil.h - the small helpers every part of shoald shares: the API error
 * a function hands back, the names of VM states and restart policies, the
 * clock, and where a VM's files live.
 *
 * They sit below everything else in src/host/: the daemon (daemon.c), the
 * VM table and lifecycle (lifecycle.c), the supervisor, the spec checks
 * and the API handlers call them, and they call none of those.  So the
 * other files depend on this one and on the daemon only where they really
 * open or close a host.
 *
 * Invariants:
 *   - api_err_set always returns -1, so `return api_err_set(...)` is the
 *     idiom for a failing int function; it accepts e == NULL.
 *   - the name tables and the parsers agree: X_parse(X_name(v)) == v for
 *     every value of each enum, and an unknown name parses to -1.
 *   - host_vm_path only formats; it never creates, checks or opens.
 *
 * A client may not rely on host_now_ms being monotonic: it is the wall
 * clock (CLOCK_REALTIME), for time stamps that people read; use
 * CLOCK_MONOTONIC for deadlines.
 */
#ifndef SHOAL_HOST_HOSTUTIL_H
#define SHOAL_HOST_HOSTUTIL_H

#include <stddef.h>
#include <stdint.h>

struct host;

/* An error for an API client: HTTP status, a stable code, a message that
 * names the thing and the reason. */
struct api_err {
	int http;            /* 400, 404, 409, 413, 500, 503 ... */
	char code[32];       /* "invalid_spec", "not_found", "wrong_state" ... */
	char msg[1024];
};

/* Fill `e` (may be NULL); always returns -1. */
int api_err_set(struct api_err *e, int http, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

enum hvm_state {
	HVM_CREATED = 0,   /* defined, never started */
	HVM_STARTING,      /* VMM spawned, control socket not answering yet */
	HVM_RUNNING,
	HVM_PAUSED,
	HVM_STOPPING,      /* a stop was asked for, the VMM has not exited yet */
	HVM_EXITED,        /* the VMM exited; exit_status/exit_reason say why */
};

enum restart_policy { RESTART_NO = 0, RESTART_ON_FAILURE, RESTART_ALWAYS };

const char *hvm_state_name(enum hvm_state s);
int hvm_state_parse(const char *s);               /* -1 if unknown */
const char *restart_policy_name(enum restart_policy p);
int restart_policy_parse(const char *s);          /* -1 if unknown */

/* Wall-clock milliseconds since the epoch. */
int64_t host_now_ms(void);
/* RFC 3339 UTC with milliseconds: "2026-11-21T19:50:00.123Z"; returns buf. */
char *host_format_time(int64_t ms, char *buf, size_t size);
/* Path of a file in a VM's directory into buf (the directory itself when
 * file is NULL); returns buf. */
char *host_vm_path(const struct host *h, const char *name, const char *file,
		   char *buf, size_t size);
/* Disk space of the files in `dir`, not its dot files or subdirectories'
 * contents (blocks: a snapshot's sparse memory file counts what it holds);
 * 0 when it cannot be read. */
int64_t host_dir_size(const char *dir);

#endif
