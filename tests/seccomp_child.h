/*
 * seccomp_child.h - the fork-and-watch harness of the seccomp tests
 * (tests/unit/test_seccomp.c, test_seccomp_store.c): a case runs a function
 * in a child that has enabled seccomp, and judges how the child ended by
 * its status and its stderr (where the SIGSYS handler names the thread kind
 * and the forbidden call).
 */
#ifndef SHOAL_TESTS_SECCOMP_CHILD_H
#define SHOAL_TESTS_SECCOMP_CHILD_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "base/seccomp.h"
#include "child_capture.h"

/* Sanitizer builds allow what ASan and LeakSanitizer need in every thread
 * (openat, readlink, clone without CLONE_THREAD, ptrace: the group
 * `sanitizer` in seccomp_rules.c); cases about those skip there. */
#ifdef __SANITIZE_ADDRESS__
#define SKIP_UNDER_SANITIZER() skip()
#else
#define SKIP_UNDER_SANITIZER() do { } while (0)
#endif

typedef void (*child_fn)(void);

struct seccomp_child {
	child_fn fn;
};

/* In the child: seccomp on, then fn; exit 0 if it returns (the forbidden
 * call did not kill: a failure). */
static inline void seccomp_child_body(void *arg)
{
	struct error e = { 0 };

	if (seccomp_enable(&e)) {
		fprintf(stderr, "enable: %s\n", e.msg);
		_exit(3);
	}
	((struct seccomp_child *)arg)->fn();
}

/* Run `fn` in a child with seccomp on and stderr on a pipe; returns the
 * wait status and the child's stderr in `out`. */
static inline int run_child(child_fn fn, char *out, size_t size)
{
	struct seccomp_child c = { .fn = fn };

	return capture_child(seccomp_child_body, &c, out, size);
}

/* The child died by SIGSYS, its stderr saying `msg`. */
static inline void expect_sigsys(child_fn fn, const char *msg)
{
	char out[4096];
	int st = run_child(fn, out, sizeof(out));

	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail_msg("child did not die by SIGSYS (status 0x%x), stderr: %s", st, out);
	if (!strstr(out, msg))
		fail_msg("stderr lacks '%s': %s", msg, out);
}

/* The child ran to its end, and no filter spoke. */
static inline void expect_ok(child_fn fn)
{
	char out[4096];
	int st = run_child(fn, out, sizeof(out));

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strstr(out, "seccomp"))
		fail_msg("child status 0x%x, stderr: %s", st, out);
}

/* Exit 2 from the child when an allowed call fails. */
static inline void must(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "allowed call failed: %s: %s\n", what, strerror(errno));
		_exit(2);
	}
}

#endif
