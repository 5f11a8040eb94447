/*
 * io.c - the write-all loop (see io.h).
 *
 * One loop serves all three entry points: `deadline` is an absolute time on
 * the monotonic clock or -1 for none, `stall` the longest single wait for
 * room in milliseconds or -1 for none.  A wait that ends because either
 * limit passed is -ETIMEDOUT; one that poll reports as an error or hang-up
 * goes back to the write, which then returns the real error (EPIPE,
 * ECONNRESET ...).
 */
#include "base/io.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t io_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd has room, the deadline or the stall time passes. */
static int io_wait_room(int fd, int64_t deadline, int stall)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int64_t timeout, left;
	int rc;

	for (;;) {
		timeout = stall;
		if (deadline >= 0) {
			left = deadline - io_now_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			if (timeout < 0 || left < timeout)
				timeout = left;
		}
		if (timeout > 1000 * 1000 * 1000)
			timeout = 1000 * 1000 * 1000;
		rc = poll(&p, 1, (int)timeout);
		if (rc > 0)
			return 0;
		if (rc == 0 && (deadline < 0 || io_now_ms() < deadline))
			return -ETIMEDOUT;      /* the stall time passed */
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

static int io_write_all(int fd, const void *buf, size_t n, int64_t deadline, int stall)
{
	const char *p = buf;
	bool sock = true;
	ssize_t w;
	int rc;

	while (n) {
		if (sock) {
			w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno == ENOTSOCK) {
				sock = false;
				continue;
			}
		} else {
			w = write(fd, p, n);
		}
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w == 0) {
			rc = -EIO;              /* no progress and no error: do not spin */
			goto fail;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			rc = -errno;
			goto fail;
		}
		rc = io_wait_room(fd, deadline, stall);
		if (rc)
			goto fail;
	}
	return 0;
fail:
	errno = -rc;
	return rc;
}

int write_all(int fd, const void *buf, size_t n)
{
	return io_write_all(fd, buf, n, -1, -1);
}

int write_all_deadline(int fd, const void *buf, size_t n, int64_t deadline_ms)
{
	return io_write_all(fd, buf, n, deadline_ms < 0 ? 0 : deadline_ms, -1);
}

int write_all_stall(int fd, const void *buf, size_t n, int stall_ms)
{
	return io_write_all(fd, buf, n, -1, stall_ms < 0 ? 0 : stall_ms);
}
