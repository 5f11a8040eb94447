/*
 * assert.c - the failure path of SHOAL_ASSERT and the lock-owner check
 * (see assert.h).  Both are compiled in every build; only the debug builds
 * call them.
 */
#include "base/assert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void shoal_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: invariant broken: %s: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	abort();
}

bool shoal_mutex_held(const pthread_mutex_t *m)
{
#ifdef __GLIBC__
	return m->__data.__owner == gettid();
#else
	(void)m;
	return true;
#endif
}
