/*
 * test_block_img.c - `shoal img` subcommands on their error paths, called
 * in-process: the exit status of a refused image is 66 for every
 * subcommand, and nothing is leaked on the way out.
 *
 * Leaks are measured with mallinfo2 around a second call (the first may set
 * up libc state once), so a plain build sees them; the sanitizer tier's
 * LeakSanitizer sees them too, at exit.  mallinfo2 counts chunks parked in
 * malloc's per-thread caches as in use, so the test runs itself again with
 * those caches off (GLIBC_TUNABLES) to make its sums exact.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/img.h"

static char dir[64], bad[128], fifo[128];

static int setup(void **state)
{
	FILE *f;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/shoal-img.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(bad, sizeof(bad), "%s/bad.qcow2", dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	f = fopen(bad, "w");		/* qcow2 magic, version 7: refused */
	if (!f || fwrite("QFI\xfb\0\0\0\x07", 8, 1, f) != 1 || fclose(f))
		return -1;
	return mkfifo(fifo, 0600);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

/* Run subcommand `fn` on `file`; its exit status. */
static int run(int (*fn)(int, char **), const char *name, char *file)
{
	char *argv[] = { (char *)name, file, NULL };

	return fn(2, argv);
}

/* Heap bytes in use. */
static size_t heap_used(void)
{
	return mallinfo2().uordblks;
}

/* info, map, check, io and convert on an image that cannot be opened (bad
 * header, missing file, FIFO): all 66, and info and map (which used to
 * leak their JSON array, 104 bytes) leave the heap as they found it. */
static void test_refused_image(void **state)
{
	static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
		{ "info", img_info }, { "map", img_map }, { "check", img_check },
		{ "io", img_io },
	};
	char *files[] = { bad, fifo, "/nonexistent/x.qcow2" };

	(void)state;
	alarm(20);
	for (size_t f = 0; f < 3; f++) {
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			size_t before;

			assert_int_equal(run(cmds[i].fn, cmds[i].name, files[f]), 66);
			before = heap_used();
			assert_int_equal(run(cmds[i].fn, cmds[i].name, files[f]), 66);
			if (heap_used() != before)
				fail_msg("img %s %s leaked %zd bytes", cmds[i].name, files[f],
					 (ssize_t)(heap_used() - before));
		}
	}
	alarm(0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_image),
	};
	(void)argc;
	if (!getenv("GLIBC_TUNABLES")) {
		setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0", 1);
		execv("/proc/self/exe", argv);
		return 1;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
