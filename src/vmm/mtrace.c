/*
 * mtrace.c - see mtrace.h.
 *
 * The switch is read from $SHOAL_MIGRATE_TRACE once, on the first call
 * (any thread: the environment is not changed after start, and two racing
 * first calls read the same answer).  A line is formatted on the stack
 * and written with one write(2) to stderr, which every thread's seccomp
 * filter allows (the log's lines go the same way).
 */
#include "vmm/mtrace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

atomic_uint mtrace_armed;

static atomic_int trace_state;     /* 0 not read yet, 1 off, 2 on */

bool mtrace_on(void)
{
	int s = atomic_load_explicit(&trace_state, memory_order_relaxed);

	if (!s) {
		const char *v = getenv("SHOAL_MIGRATE_TRACE");

		s = v && !strcmp(v, "1") ? 2 : 1;
		atomic_store_explicit(&trace_state, s, memory_order_relaxed);
	}
	return s == 2;
}

void mtrace(const char *point)
{
	struct timespec ts;
	char line[128];
	int n;

	if (!mtrace_on())
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof(line), "shoal: migrate-trace: %s %llu\n", point,
		     (unsigned long long)ts.tv_sec * 1000000ull +
		     (unsigned long long)ts.tv_nsec / 1000u);
	if (n > 0 && (size_t)n < sizeof(line) && write(STDERR_FILENO, line, (size_t)n) < 0)
		return;          /* a trace line lost is no error */
}

void mtrace_arm(unsigned bits)
{
	if (mtrace_on())
		atomic_fetch_or(&mtrace_armed, bits);
}

void mtrace_fire(unsigned bit, const char *point)
{
	if (atomic_fetch_and(&mtrace_armed, ~bit) & bit)
		mtrace(point);
}
