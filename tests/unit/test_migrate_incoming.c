/*
 * test_migrate_incoming.c - the destination's wait for its source
 * (state/migrate.c's migrate_incoming), without KVM: nothing here gets as
 * far as a VM.
 *   - accept-timeout=S: with no source within S seconds it gives up with
 *     EXIT_HOST, naming the address and the seconds, and removes its
 *     unix: socket; a bad value is a usage error naming it;
 *   - with the listening socket kept (recover-timeout above 0), a second
 *     source that connects while the first one's stream is coming in is
 *     refused at once with SHOALNAK and "a migration is already coming
 *     in on ADDR" (not left in the backlog), and the first one goes on;
 *   - with recover-timeout=0 the socket is gone once the source is in: a
 *     second one finds nobody listening.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "state/migrate.h"
#include "state/migrate_auth.h"
#include "state/migrate_net.h"

static char g_addr[128];

/* --incoming's value with `opts`: the address left in g_addr. */
static void options(const char *opts)
{
	char in[256];
	struct error e = { 0 };

	snprintf(g_addr, sizeof(g_addr), "unix:/tmp/test_mig_in.%d.sock", (int)getpid());
	snprintf(in, sizeof(in), "%s%s", g_addr, opts);
	assert_int_equal(migrate_incoming_key(in, &e), 0);
	assert_string_equal(in, g_addr);
}

static int dial(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", g_addr + 5);
	for (int i = 0; i < 200; i++) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		usleep(10000);
	}
	close(fd);
	return -1;
}

static void test_accept_timeout(void **state)
{
	struct error e = { 0 };
	struct stat st;
	char bad[64];

	(void)state;
	snprintf(bad, sizeof(bad), "unix:/tmp/x.sock,accept-timeout=soon");
	assert_int_equal(migrate_incoming_key(bad, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_non_null(strstr(e.msg, "accept-timeout=soon"));

	options(",accept-timeout=1");
	assert_int_equal(migrate_incoming_accept_timeout(), 1);
	assert_int_equal(migrate_incoming(NULL, g_addr, &e), -1);
	assert_int_equal(e.status, EXIT_HOST);
	assert_non_null(strstr(e.msg, g_addr));
	assert_non_null(strstr(e.msg, "within 1 s (accept-timeout)"));
	assert_int_equal(stat(g_addr + 5, &st), -1);    /* its socket is gone */
	options(",accept-timeout=0");
	assert_int_equal(migrate_incoming_accept_timeout(), 0);
}

struct dest {
	pthread_t t;
	int rc;
	struct error e;
};

static void *dest_thread(void *arg)
{
	struct dest *d = arg;

	d->rc = migrate_incoming(NULL, g_addr, &d->e);
	return NULL;
}

static void test_second_source_refused(void **state)
{
	struct dest d = { 0 };
	char word[8], msg[600];
	uint32_t n = 0;
	int first, second;

	(void)state;
	options(",recover-timeout=60");
	unlink(g_addr + 5);
	assert_int_equal(pthread_create(&d.t, NULL, dest_thread, &d), 0);
	first = dial();
	assert_true(first >= 0);
	/* the first source is in (its stream not yet begun): a second one
	 * hears at once that a migration is already coming in */
	second = dial();
	assert_true(second >= 0);
	assert_int_equal(migrate_recv_all(second, word, 8), 1);
	assert_memory_equal(word, "SHOALNAK", 8);
	assert_int_equal(migrate_recv_all(second, &n, 4), 1);
	assert_true(n > 0 && n < sizeof(msg));
	assert_int_equal(migrate_recv_all(second, msg, n), 1);
	msg[n] = 0;
	assert_non_null(strstr(msg, "a migration is already coming in on "));
	assert_non_null(strstr(msg, g_addr));
	assert_int_equal(migrate_recv_all(second, word, 1), 0);     /* and closed */
	close(second);
	/* the first is still the one being read: its stream ends it */
	assert_int_equal(migrate_send_all(first, "NOTSHOAL", 8), 0);
	close(first);
	pthread_join(d.t, NULL);
	assert_int_equal(d.rc, -1);
	assert_null(strstr(d.e.msg, "already coming in"));
}

static void test_no_recovery_no_listener(void **state)
{
	struct dest d = { 0 };
	int first, second;

	(void)state;
	options(",recover-timeout=0");
	unlink(g_addr + 5);
	assert_int_equal(pthread_create(&d.t, NULL, dest_thread, &d), 0);
	first = dial();
	assert_true(first >= 0);
	for (int i = 0; i < 200 && access(g_addr + 5, F_OK) == 0; i++)
		usleep(10000);
	second = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", g_addr + 5);
		assert_int_equal(connect(second, (struct sockaddr *)&sa, sizeof(sa)), -1);
	}
	close(second);
	close(first);
	pthread_join(d.t, NULL);
	assert_int_equal(d.rc, -1);
	options(",recover-timeout=300");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_timeout),
		cmocka_unit_test(test_second_source_refused),
		cmocka_unit_test(test_no_recovery_no_listener),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
