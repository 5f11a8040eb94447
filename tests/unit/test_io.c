/*
 * test_io.c - base/io.h's write-all loop: everything arrives through a
 * socket and a pipe whose reader is slower than the writer, a
 * non-blocking descriptor waits for room instead of failing, a reader
 * that never reads ends a deadline or a stall with -ETIMEDOUT, and a
 * closed peer is -EPIPE with errno set, not SIGPIPE.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/io.h"

#define BIG (4u << 20)

struct reader {
	int fd;
	size_t got;
	uint32_t sum;
};

/* Read slowly, in small pieces, to the end. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned char buf[3000];
	ssize_t n;

	while ((n = read(r->fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++)
			r->sum = r->sum * 31 + buf[i];
		r->got += (size_t)n;
	}
	return NULL;
}

static unsigned char *pattern(uint32_t *sum)
{
	unsigned char *b = malloc(BIG);

	*sum = 0;
	for (size_t i = 0; i < BIG; i++) {
		b[i] = (unsigned char)(i * 7 + (i >> 12));
		*sum = *sum * 31 + b[i];
	}
	return b;
}

/* A whole buffer through fds[1] reaches the reader on fds[0]. */
static void check_all_arrives(int fds[2], bool nonblock)
{
	struct reader r = { .fd = fds[0] };
	uint32_t want;
	unsigned char *b = pattern(&want);
	pthread_t t;

	if (nonblock)
		fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	assert_int_equal(write_all(fds[1], b, BIG), 0);
	close(fds[1]);
	pthread_join(t, NULL);
	close(fds[0]);
	assert_int_equal(r.got, BIG);
	assert_int_equal(r.sum, want);
	free(b);
}

static void test_socket(void **state)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	check_all_arrives(fds, false);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	check_all_arrives(fds, true);
}

static void test_pipe(void **state)
{
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	check_all_arrives(fds, false);
	assert_int_equal(pipe(fds), 0);
	check_all_arrives(fds, true);
}

/* Nobody reads: the deadline and the stall limit end the wait. */
static void test_timeouts(void **state)
{
	unsigned char *b = calloc(1, BIG);
	int fds[2];
	int64_t t0;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	t0 = io_now_ms();
	assert_int_equal(write_all_deadline(fds[1], b, BIG, t0 + 200), -ETIMEDOUT);
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(io_now_ms() - t0 >= 190);
	t0 = io_now_ms();
	assert_int_equal(write_all_stall(fds[1], b, BIG, 150), -ETIMEDOUT);
	assert_true(io_now_ms() - t0 >= 140);
	assert_int_equal(write_all_deadline(fds[1], b, 1, t0 - 1) == 0 ||
			 errno == ETIMEDOUT, 1);        /* past: at most what fits */
	close(fds[0]);
	close(fds[1]);
	free(b);
}

/* A closed peer: -EPIPE, and the process is still here (no SIGPIPE). */
static void test_closed_peer(void **state)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	close(fds[0]);
	assert_int_equal(write_all(fds[1], "x", 1), -EPIPE);
	assert_int_equal(errno, EPIPE);
	close(fds[1]);
	assert_int_equal(write_all(fds[1], "x", 1), -EBADF);
	assert_int_equal(write_all(fds[1], "", 0), 0);         /* nothing to write */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_socket),
		cmocka_unit_test(test_pipe),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_closed_peer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
