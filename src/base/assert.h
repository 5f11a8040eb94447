/*
 * assert.h - run-time checks of the invariants that comments state.
 *
 * SHOAL_ASSERT(cond, fmt, ...) checks `cond` in debug builds (SHOAL_DEBUG
 * defined: `make DEBUG=1`, and every sanitizer or fuzz build) and, when it
 * is false, prints the file, line, condition and the formatted message on
 * stderr and aborts, so a broken invariant stops a test or a fuzzer at the
 * place it broke instead of corrupting state further on.  In other builds
 * it compiles to nothing: `cond` is not evaluated, so it must have no side
 * effects, and the release binary behaves exactly as without it.
 *
 * What belongs here: the program's own bookkeeping (reference and busy
 * counts, epochs, "called with the lock held"), never a check of guest or
 * file input.  A guest, a front end or an image that breaks a rule gets an
 * error path (a broken device, a refused message, EXIT_GUEST_BAD), not an
 * assertion, because those inputs are expected to be hostile.
 */
#ifndef SHOAL_BASE_ASSERT_H
#define SHOAL_BASE_ASSERT_H

#include <pthread.h>
#include <stdbool.h>

void shoal_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));

#ifdef SHOAL_DEBUG
#define SHOAL_ASSERT(cond, ...)                                                 \
	do {                                                                    \
		if (!(cond))                                                    \
			shoal_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
	} while (0)
#else
#define SHOAL_ASSERT(cond, ...) do { (void)sizeof(!(cond)); } while (0)
#endif

/* True when the calling thread holds `m` (glibc records the owner of a
 * locked mutex); true where that cannot be known.  For SHOAL_ASSERT only. */
bool shoal_mutex_held(const pthread_mutex_t *m);

#endif
