/*
 * test_seccomp.c - the per-thread seccomp filters (base/seccomp.h), no KVM.
 *
 * Each case forks: the child enables seccomp, installs one thread kind's
 * filter, makes an allowed syscall (which must work) and then a forbidden
 * one; the parent checks the child died by SIGSYS and that its stderr
 * names the thread kind and the syscall.  Some cases check instead that
 * what a thread kind really does passes its filter (expect_ok).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/seccomp.h"
#include "block/blockdev.h"
#include "seccomp_child.h"

/* ---- vCPU ---- */

static void vcpu_execve(void)
{
	char *argv[] = { "/bin/true", NULL };

	seccomp_thread_enter(SECCOMP_VCPU);
	must(write(STDERR_FILENO, "", 0) == 0, "write");
	execve("/bin/true", argv, argv + 1);
}

static void test_vcpu_execve(void **state)
{
	(void)state;
	expect_sigsys(vcpu_execve, "shoal: seccomp: thread vcpu made forbidden syscall execve (59)");
}

static void vcpu_socket_inet(void)
{
	int fd;

	seccomp_thread_enter(SECCOMP_VCPU);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(fd >= 0, "socket(AF_UNIX)");
	close(fd);
	socket(AF_INET, SOCK_STREAM, 0);
}

static void test_vcpu_socket_inet(void **state)
{
	(void)state;
	expect_sigsys(vcpu_socket_inet, "thread vcpu made forbidden syscall socket (41)");
}

static void vcpu_ioctl(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC), n;

	must(fd >= 0, "open");
	seccomp_thread_enter(SECCOMP_VCPU);
	/* KVM_RUN is allowed by the filter; /dev/null just refuses it. */
	must(ioctl(fd, KVM_RUN, 0) < 0 && errno == ENOTTY, "ioctl(KVM_RUN) reaches the kernel");
	ioctl(fd, FIONREAD, &n);
}

static void test_vcpu_ioctl(void **state)
{
	(void)state;
	expect_sigsys(vcpu_ioctl, "thread vcpu made forbidden syscall ioctl (16)");
}

static void vcpu_open(void)
{
	seccomp_thread_enter(SECCOMP_VCPU);
	open("/etc/passwd", O_RDONLY);
}

static void test_vcpu_open(void **state)
{
	(void)state;
	SKIP_UNDER_SANITIZER();
	expect_sigsys(vcpu_open, "thread vcpu made forbidden syscall openat (257)");
}

/* ---- block I/O ---- */

static void blk_mmap_exec(void)
{
	void *p;

	seccomp_thread_enter(SECCOMP_BLK_IO);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	must(p != MAP_FAILED, "mmap(PROT_READ|PROT_WRITE)");
	must(mprotect(p, 4096, PROT_READ) == 0, "mprotect(PROT_READ)");
	mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void test_blk_mmap_exec(void **state)
{
	(void)state;
	expect_sigsys(blk_mmap_exec, "thread blk-io made forbidden syscall mmap (9)");
}

static void blk_mprotect_exec(void)
{
	void *p;

	seccomp_thread_enter(SECCOMP_BLK_IO);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	must(p != MAP_FAILED, "mmap");
	mprotect(p, 4096, PROT_READ | PROT_EXEC);
}

static void test_blk_mprotect_exec(void **state)
{
	(void)state;
	expect_sigsys(blk_mprotect_exec, "thread blk-io made forbidden syscall mprotect (10)");
}

/* Exit 0 from the child and no seccomp line: what `fn` does is allowed. */
/* An O_DIRECT image on a file system that takes O_DIRECT (/var/tmp, else
 * the working directory), opened before the filter as virtio-blk opens
 * its image; -1 where none takes it. */
static int dio_fd = -1;

static void blk_dio_bounce(void)
{
	static uint8_t w[8] = "shoal-io", r[8];

	seccomp_thread_enter(SECCOMP_BLK_IO);
	/* 8 bytes at an odd offset: what a qcow2 L1/refcount update does;
	 * the kernel refuses it (EINVAL) and bd_pwrite bounces it */
	must(bd_pwrite(dio_fd, w, sizeof(w), 4096 + 24) == 0, "bounced O_DIRECT write");
	must(bd_pread(dio_fd, r, sizeof(r), 4096 + 24, false) == 0, "bounced O_DIRECT read");
	must(!memcmp(w, r, sizeof(w)), "bounced read returns the write");
}

static void test_blk_dio_bounce(void **state)
{
	static const char *dirs[] = { "/var/tmp", "." };
	static uint8_t blk[4096] __attribute__((aligned(4096)));
	char path[64];

	(void)state;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && dio_fd < 0; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/shoal-sc-dio-XXXXXX", dirs[i]);
		fd = mkstemp(path);
		if (fd < 0)
			continue;
		close(fd);
		dio_fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (dio_fd >= 0 && pwrite(dio_fd, blk, sizeof(blk), 0) != (ssize_t)sizeof(blk)) {
			close(dio_fd);
			dio_fd = -1;
		}
		unlink(path);
	}
	if (dio_fd < 0)
		skip();
	expect_ok(blk_dio_bounce);
	close(dio_fd);
	dio_fd = -1;
}

/* A thread's heap shrinking under its filter: glibc reads
 * /proc/sys/vm/overcommit_memory the first time, unless seccomp_enable
 * already made that happen (heap_warm). */
static void *thread_heap_shrink(void *arg)
{
	void *p[64];

	seccomp_thread_enter(SECCOMP_BLK_IO);
	for (int i = 0; i < 64; i++)
		p[i] = malloc(64 << 10);
	for (int i = 0; i < 64; i++)
		free(p[i]);
	return arg;
}

static void blk_heap_shrink(void)
{
	pthread_t t;

	must(pthread_create(&t, NULL, thread_heap_shrink, NULL) == 0, "pthread_create");
	must(pthread_join(t, NULL) == 0, "pthread_join");
}

static void test_blk_heap_shrink(void **state)
{
	(void)state;
	expect_ok(blk_heap_shrink);
}

/* The RTC's gmtime_r on a vCPU (a Linux guest reads the clock at boot):
 * glibc loads the time zone on the first one, unless seccomp_enable did. */
static void vcpu_gmtime(void)
{
	time_t t = time(NULL);
	struct tm tm;

	seccomp_thread_enter(SECCOMP_VCPU);
	must(gmtime_r(&t, &tm) != NULL, "gmtime_r");
	must(timegm(&tm) == t, "timegm");
}

static void test_vcpu_gmtime(void **state)
{
	(void)state;
	expect_ok(vcpu_gmtime);
}

/* ---- event loop: threads yes, processes no ---- */

static void *thread_noop(void *arg)
{
	return arg;
}

static void *thread_fault_socket(void *arg)
{
	seccomp_thread_enter(SECCOMP_SNAP_FAULT);
	socket(AF_UNIX, SOCK_STREAM, 0);
	return arg;
}

static void event_fork(void)
{
	pthread_t t;

	seccomp_thread_enter(SECCOMP_EVENT);
	must(pthread_create(&t, NULL, thread_noop, NULL) == 0, "pthread_create");
	must(pthread_join(t, NULL) == 0, "pthread_join");
	fork();
}

static void test_event_fork(void **state)
{
	(void)state;
	SKIP_UNDER_SANITIZER();
	expect_sigsys(event_fork, "thread event made forbidden syscall clone (56)");
}

/* A thread started from the event loop narrows to its own kind: the fault
 * thread may not make a socket although the event loop may. */
static void event_child_narrows(void)
{
	pthread_t t;
	int fd;

	seccomp_thread_enter(SECCOMP_EVENT);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(fd >= 0, "socket(AF_UNIX) on the event loop");
	close(fd);
	must(pthread_create(&t, NULL, thread_fault_socket, NULL) == 0, "pthread_create");
	pthread_join(t, NULL);
}

static void test_event_child_narrows(void **state)
{
	(void)state;
	expect_sigsys(event_child_narrows, "thread snap-fault made forbidden syscall socket (41)");
}

static void main_ptrace(void)
{
	seccomp_thread_enter(SECCOMP_MAIN);
	syscall(SYS_ptrace, 0, 0, 0, 0);
}

static void test_main_ptrace(void **state)
{
	(void)state;
	SKIP_UNDER_SANITIZER();
	expect_sigsys(main_ptrace, "thread main made forbidden syscall ptrace (101)");
}

/* The migration sender streams over the socket it was handed: it may send
 * on it, and may not connect anywhere itself (shoal migrate connects). */
static void migrate_socket_inet(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		_exit(3);
	seccomp_thread_enter(SECCOMP_MIGRATE);
	if (send(sv[0], "x", 1, MSG_NOSIGNAL) != 1 || recv(sv[1], (char[1]){ 0 }, 1, 0) != 1)
		_exit(4);
	syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
}

static void test_migrate_socket_inet(void **state)
{
	(void)state;
	SKIP_UNDER_SANITIZER();
	expect_sigsys(migrate_socket_inet, "thread migrate made forbidden syscall socket (41)");
}

/* ---- the table itself ---- */

/* A thread inherits its creator's filter: whatever the threads the event
 * loop starts may do (the snapshot threads, and a disk's I/O thread,
 * should it restart one), the event loop must allow. */
static void test_creator_allows_children(void **state)
{
	static const enum seccomp_kind kids[] = { SECCOMP_SNAP_WRITER, SECCOMP_SNAP_FAULT,
						  SECCOMP_BLK_IO, SECCOMP_MIGRATE };

	(void)state;
	for (size_t k = 0; k < sizeof(kids) / sizeof(kids[0]); k++)
		for (int nr = 0; nr < 512; nr++)
			if (seccomp_kind_allows(kids[k], nr) && !seccomp_kind_allows(SECCOMP_EVENT, nr))
				fail_msg("%s allows syscall %d but the event loop, which starts it, does not",
					 seccomp_kind_name(kids[k]), nr);
	assert_true(seccomp_kind_allows(SECCOMP_EVENT, SYS_seccomp));
	assert_true(seccomp_kind_allows(SECCOMP_EVENT, SYS_clone));
	/* the jail's drop reaches the disks' I/O threads (vmm/jail.c) */
	assert_true(seccomp_kind_allows(SECCOMP_BLK_IO, SYS_setresuid));
	assert_true(seccomp_kind_allows(SECCOMP_BLK_IO, SYS_setresgid));
	assert_true(seccomp_kind_allows(SECCOMP_BLK_IO, SYS_setgroups));
}

/* Never allowed to any VMM thread. */
static void test_never_allowed(void **state)
{
	static const int never[] = { SYS_execve, SYS_execveat, SYS_fork, SYS_vfork, SYS_mount,
				     SYS_setuid, SYS_bpf, SYS_kexec_load, SYS_init_module,
				     SYS_process_vm_writev, SYS_open_by_handle_at, SYS_clone3 };

	(void)state;
	for (int k = 0; k < SECCOMP_NKINDS; k++) {
		assert_true(seccomp_kind_count(k) > 20);
		for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
			if (seccomp_kind_allows(k, never[i]))
				fail_msg("%s allows syscall %d", seccomp_kind_name(k), never[i]);
	}
}

/* Without seccomp_enable (the daemon, --seccomp=off) entering is a no-op. */
static void test_not_enabled_noop(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd;

		seccomp_thread_enter(SECCOMP_VCPU);
		fd = open("/dev/null", O_RDONLY);
		_exit(fd >= 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vcpu_execve),
		cmocka_unit_test(test_vcpu_socket_inet),
		cmocka_unit_test(test_vcpu_ioctl),
		cmocka_unit_test(test_vcpu_open),
		cmocka_unit_test(test_blk_mmap_exec),
		cmocka_unit_test(test_blk_mprotect_exec),
		cmocka_unit_test(test_blk_dio_bounce),
		cmocka_unit_test(test_blk_heap_shrink),
		cmocka_unit_test(test_vcpu_gmtime),
		cmocka_unit_test(test_event_fork),
		cmocka_unit_test(test_event_child_narrows),
		cmocka_unit_test(test_main_ptrace),
		cmocka_unit_test(test_migrate_socket_inet),
		cmocka_unit_test(test_creator_allows_children),
		cmocka_unit_test(test_never_allowed),
		cmocka_unit_test(test_not_enabled_noop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
