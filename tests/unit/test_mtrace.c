/*
 * test_mtrace.c - the live migration's trace (vmm/mtrace.c), each case in
 * a child process of its own (the switch is read from the environment
 * once per process), its stderr a pipe the parent reads:
 *
 *   - without SHOAL_MIGRATE_TRACE, or with a value other than "1", no
 *     point writes anything and arming arms nothing;
 *   - with SHOAL_MIGRATE_TRACE=1 a point is one line, "shoal:
 *     migrate-trace: POINT US", US the CLOCK_MONOTONIC microseconds
 *     between the child's readings before and after it;
 *   - a one-shot point writes only once armed, and only once after each
 *     arming; one not armed stays silent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_capture.h"
#include "vmm/mtrace.h"

static unsigned long long mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u;
}

/* Run `body` in a child with SHOAL_MIGRATE_TRACE set to `env` (NULL:
 * unset); its stderr into `out` (NUL-terminated).  The child exits with
 * body's status. */
struct trace_child {
	const char *env;
	int (*body)(void);
};

static void trace_child_body(void *arg)
{
	struct trace_child *c = arg;

	if (c->env)
		setenv("SHOAL_MIGRATE_TRACE", c->env, 1);
	else
		unsetenv("SHOAL_MIGRATE_TRACE");
	_exit(c->body());
}

static int in_child(const char *env, int (*body)(void), char *out, size_t max)
{
	struct trace_child c = { .env = env, .body = body };
	int st = capture_child(trace_child_body, &c, out, max);

	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static int all_points(void)
{
	mtrace("src.pause");
	mtrace_arm(MTRACE_ALL);
	mtrace_first(MTRACE_KVM_RUN, "dst.kvm_run");
	mtrace_first(MTRACE_CONSOLE, "dst.console");
	return (mtrace_on() ? 1 : 0) | (atomic_load(&mtrace_armed) ? 2 : 0);
}

static void test_off(void **state)
{
	static const char *const offs[] = { NULL, "", "0", "yes", "11" };
	char out[4096];

	(void)state;
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		assert_int_equal(in_child(offs[i], all_points, out, sizeof(out)), 0);
		assert_string_equal(out, "");
	}
}

static int one_point(void)
{
	unsigned long long a = mono_us(), b;

	mtrace("dst.end");
	b = mono_us();
	/* the bounds go to the parent after it, on stderr too */
	fprintf(stderr, "bounds %llu %llu\n", a, b);
	return mtrace_on() ? 0 : 1;
}

static void test_on_line(void **state)
{
	char out[4096], point[64];
	unsigned long long us, t_before, t_after;
	int used = 0;

	(void)state;
	assert_int_equal(in_child("1", one_point, out, sizeof(out)), 0);
	assert_int_equal(sscanf(out, "shoal: migrate-trace: %63s %llu\nbounds %llu %llu\n%n", point,
				&us, &t_before, &t_after, &used), 4);
	assert_string_equal(point, "dst.end");
	assert_int_equal((size_t)used, strlen(out));
	assert_true(t_before <= us && us <= t_after);
}

static int one_shots(void)
{
	mtrace_first(MTRACE_KVM_RUN, "early");          /* not armed yet */
	mtrace_arm(MTRACE_KVM_RUN | MTRACE_CONSOLE);
	mtrace_first(MTRACE_KVM_RUN, "dst.kvm_run");
	mtrace_first(MTRACE_KVM_RUN, "dst.kvm_run.again");
	mtrace_first(MTRACE_RUN_EXIT, "dst.first_exit"); /* not armed */
	mtrace_first(MTRACE_CONSOLE, "dst.console");
	mtrace_first(MTRACE_CONSOLE, "dst.console.again");
	mtrace_arm(MTRACE_KVM_RUN);                      /* armed again: once more */
	mtrace_first(MTRACE_KVM_RUN, "dst.kvm_run.second");
	return atomic_load(&mtrace_armed) ? 1 : 0;
}

static void test_one_shots(void **state)
{
	char out[4096], a[64], b[64], c[64];
	unsigned long long x, y, z;
	int used = 0;

	(void)state;
	assert_int_equal(in_child("1", one_shots, out, sizeof(out)), 0);
	assert_int_equal(sscanf(out, "shoal: migrate-trace: %63s %llu\nshoal: migrate-trace: %63s "
				"%llu\nshoal: migrate-trace: %63s %llu\n%n", a, &x, b, &y, c, &z, &used),
			 6);
	assert_int_equal((size_t)used, strlen(out));
	assert_string_equal(a, "dst.kvm_run");
	assert_string_equal(b, "dst.console");
	assert_string_equal(c, "dst.kvm_run.second");
	assert_true(x <= y && y <= z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_on_line),
		cmocka_unit_test(test_one_shots),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
