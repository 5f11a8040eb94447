/*
 * io.h - writing a whole buffer to a file descriptor: the one write-all
 * loop of the CLI and the daemon.
 *
 * write(2) and send(2) may write less than asked (a pipe or socket buffer
 * filling up, a signal arriving), may fail with EINTR, and on a
 * non-blocking descriptor fail with EAGAIN.  These functions loop until
 * every byte is written or a real error comes:
 *
 *   - a socket is written with send(MSG_NOSIGNAL | MSG_DONTWAIT): a peer
 *     that closed gives -EPIPE, never SIGPIPE; anything else (a file, a
 *     pipe, a terminal) with write(2), found out by the first send's
 *     ENOTSOCK;
 *   - EINTR is retried;
 *   - EAGAIN waits with poll(POLLOUT) for room, for ever (write_all), up to
 *     an absolute deadline (write_all_deadline) or while no byte can be
 *     written for a stall time (write_all_stall); then -ETIMEDOUT.
 *
 * So a blocking and a non-blocking descriptor behave the same, and the
 * caller never needs its own loop.
 *
 * Every function returns 0 when all n bytes are written, otherwise a
 * negative errno, with errno set to the same value, so a caller may test
 * for non-zero and print strerror(errno).  Bytes written before a failure
 * stay written: a caller may not retry the whole buffer after an error and
 * expect the other end to see it once.  A deadline or stall limit bounds
 * only the waits for room; a blocking descriptor that blocks inside
 * write(2) (a regular file, a terminal) is not bounded.
 */
#ifndef SHOAL_BASE_IO_H
#define SHOAL_BASE_IO_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC, the clock of write_all_deadline. */
int64_t io_now_ms(void);

/* Write all n bytes of buf to fd; waits for room as long as it takes. */
int write_all(int fd, const void *buf, size_t n);
/* The same, giving up with -ETIMEDOUT at deadline_ms (io_now_ms's clock). */
int write_all_deadline(int fd, const void *buf, size_t n, int64_t deadline_ms);
/* The same, giving up with -ETIMEDOUT when no byte could be written for
 * stall_ms milliseconds in a row. */
int write_all_stall(int fd, const void *buf, size_t n, int stall_ms);

#endif
