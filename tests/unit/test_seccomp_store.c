/*
 * test_seccomp_store.c - the `store` thread kind's filter (a store: disk's
 * loader and prefetch threads, store/stream.c; base/seccomp_rules.c), no
 * KVM.  As test_seccomp.c: each case forks, the child enables seccomp and
 * installs the filter, makes what the threads really make (which must
 * work), then one call the kind must not have; the parent checks that the
 * child died by SIGSYS naming the kind and the call.  What no other kind
 * gets: a TCP socket (AF_INET, AF_INET6); what none gets, this one
 * included: other socket families (AF_NETLINK, AF_PACKET), execve, clone
 * (the threads start no threads), ioctl beyond the terminal's.  And a
 * VM key's proof (store/vmkey.c) is renewed under the filter, as a
 * store: disk with vm-key= does once its first proof has half run out.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/seccomp.h"
#include "seccomp_child.h"
#include "store/vmkey.h"

/* What a fetch does: a TCP connection (refused on a closed loopback port
 * is fine: the calls were allowed), libcurl's wake-up pair, and a cache
 * segment written and renamed into place. */
static char dir[] = "/tmp/test_seccomp_store.XXXXXX";	/* made and removed by the parent */

static void store_fetch_calls(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char f[64], g[64];
	int fd, sv[2], one = 1;

	seccomp_thread_enter(SECCOMP_STORE);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(fd >= 0, "socket(AF_INET)");
	must(!setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one)), "setsockopt");
	connect(fd, (struct sockaddr *)&a, sizeof(a));	/* port 0: refused, but allowed */
	close(fd);
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(fd >= 0 || errno == EAFNOSUPPORT, "socket(AF_INET6)");
	if (fd >= 0)
		close(fd);
	must(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair(AF_UNIX)");
	close(sv[0]);
	close(sv[1]);
	snprintf(f, sizeof(f), "%s/seg.tmp", dir);
	snprintf(g, sizeof(g), "%s/seg", dir);
	fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	must(fd >= 0, "open a cache file");
	must(write(fd, "x", 1) == 1 && !fsync(fd), "write and fsync");
	close(fd);
	must(!rename(f, g), "rename");
	must(!unlink(g), "unlink");
	_exit(0);
}

static void test_store_allows_fetch(void **state)
{
	char out[4096];
	int st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	st = run_child(store_fetch_calls, out, sizeof(out));
	rmdir(dir);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail_msg("status 0x%x, stderr: %s", st, out);
}

/* The stream's proof source after its first proof (made at open, before
 * any filter): renewal signs with libcrypto on the loader thread. */
static struct store_vmproof_src vsrc;

static void store_renew_proof(void)
{
	char line[STORE_VMPROOF_MAX + 32];
	struct error e = { 0 };

	seccomp_thread_enter(SECCOMP_STORE);
	vsrc.until = 0;		/* run out: the next request makes a new one */
	must(store_vmproof_src_line(&vsrc, line, &e) == 1, "renew the proof");
	must(!strncmp(line, "Shoal-VM-Proof: v1 ", 19) && vsrc.until > 0, "a new proof");
	_exit(0);
}

static void test_store_renews_vm_proof(void **state)
{
	char kdir[] = "/tmp/test_seccomp_vmkey.XXXXXX", path[80], out[4096];
	struct error e = { 0 };
	int st;

	(void)state;
	assert_non_null(mkdtemp(kdir));
	snprintf(path, sizeof(path), "%s/vm", kdir);
	assert_int_equal(store_vmkey_generate(path, &vsrc.k, &e), 0);
	pthread_mutex_init(&vsrc.mu, NULL);
	vsrc.mode = 1;
	memset(vsrc.client, 'a', 64);
	assert_int_equal(store_vmproof_make(&vsrc.k, vsrc.client, 1, vsrc.value, &e), 0);	/* open's */
	st = run_child(store_renew_proof, out, sizeof(out));
	unlink(path);
	strcat(path, ".pub");
	unlink(path);
	rmdir(kdir);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail_msg("status 0x%x, stderr: %s", st, out);
}

static void store_netlink(void)
{
	seccomp_thread_enter(SECCOMP_STORE);
	syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 0);
}

static void test_store_netlink(void **state)
{
	(void)state;
	expect_sigsys(store_netlink, "thread store made forbidden syscall socket (41)");
}

static void store_clone(void)
{
	seccomp_thread_enter(SECCOMP_STORE);
	syscall(SYS_clone, 0x10000 /* CLONE_THREAD */, 0, 0, 0, 0);
}

static void test_store_clone(void **state)
{
	(void)state;
	SKIP_UNDER_SANITIZER();        /* LSan's tracer: clone in every kind there */
	expect_sigsys(store_clone, "thread store made forbidden syscall clone (56)");
}

/* No other kind may open a TCP socket: only a store: disk's threads. */
static void test_inet_only_store(void **state)
{
	(void)state;
	for (int k = 0; k < SECCOMP_NKINDS; k++) {
		if (k == SECCOMP_STORE)
			continue;
		if (seccomp_kind_allows(k, SYS_socketpair) && k != SECCOMP_STORE)
			fail_msg("%s allows socketpair", seccomp_kind_name(k));
	}
	assert_string_equal(seccomp_kind_name(SECCOMP_STORE), "store");
	assert_false(seccomp_kind_allows(SECCOMP_STORE, SYS_execve));
	assert_false(seccomp_kind_allows(SECCOMP_STORE, SYS_ioctl) &&
		     !seccomp_kind_allows(SECCOMP_VCPU, SYS_ioctl));
#ifndef __SANITIZE_ADDRESS__
	assert_false(seccomp_kind_allows(SECCOMP_STORE, SYS_clone));   /* LSan's tracer needs it there */
#endif
	assert_false(seccomp_kind_allows(SECCOMP_STORE, SYS_io_uring_setup));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store_allows_fetch),
		cmocka_unit_test(test_store_renews_vm_proof),
		cmocka_unit_test(test_store_netlink),
		cmocka_unit_test(test_store_clone),
		cmocka_unit_test(test_inet_only_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
