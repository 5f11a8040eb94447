/*
 * child_capture.h - run a function in a forked child whose stderr goes to
 * a pipe, and give the parent that stderr and the child's wait status.
 * The unit tests whose subject is per process (the seccomp filters of
 * tests/seccomp_child.h, the migration trace of test_mtrace.c, read from
 * the environment once) each judge one child this way.  Include after
 * cmocka.h.
 */
#ifndef SHOAL_TESTS_CHILD_CAPTURE_H
#define SHOAL_TESTS_CHILD_CAPTURE_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Fork; in the child, stderr to a pipe and child(arg), then exit 0 if it
 * returns.  The child's stderr into out (NUL-terminated, at most size - 1
 * bytes), its wait status returned. */
static inline int capture_child(void (*child)(void *), void *arg, char *out, size_t size)
{
	int p[2], st;
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], STDERR_FILENO);
		child(arg);
		_exit(0);
	}
	close(p[1]);
	while (got + 1 < size && (n = read(p[0], out + got, size - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

#endif
