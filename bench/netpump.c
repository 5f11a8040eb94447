/*
 * bench/netpump.c - the host end of bench/linux_net.sh: TCP bulk transfers
 * to and from a guest, timed on the host.
 *
 *   netpump recv ADDR PORT COUNT   listen on ADDR:PORT, take COUNT
 *                                  connections one after another, read each
 *                                  to EOF, print one line per connection:
 *                                  "recv bytes=N us=T" (T: first byte to
 *                                  EOF), then close it
 *   netpump send ADDR PORT BYTES   connect to ADDR:PORT (retrying while it
 *                                  is refused: the guest's listener may not
 *                                  be up yet), write BYTES zero bytes,
 *                                  shut the write side, read to EOF and
 *                                  print "send bytes=N us=T" (T: connected
 *                                  to EOF)
 *
 * Why these end points.  Receiving, the clock starts at the first byte, so
 * the guest's connection set-up is not counted, and stops at the sender's
 * FIN, which follows its last byte.  Sending, writes only fill socket
 * buffers, so the clock stops when the guest closes: its busybox nc exits
 * at EOF, after it has read everything (bench/linux_net.sh keeps the nc's
 * stdin open, so nc does not shut its own side early).  Megabytes of data
 * per transfer keep the round trips at either end negligible.
 *
 * Every wait is bounded (60 s without progress) so a guest that hangs
 * cannot hang the benchmark; a failure prints one line on stderr and
 * exits 1.  A benchmark helper, not a test: it judges nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK      (256 * 1024)   /* bytes per read or write */
#define IDLE_S     60             /* give up after this long without progress */
#define CONNECT_S  30             /* how long a refused connect is retried */

static char buf[CHUNK];

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int fail(const char *what)
{
	fprintf(stderr, "netpump: %s: %s\n", what, strerror(errno));
	return 1;
}

/* Parse ADDR and PORT into *a; 0 or -1. */
static int parse_addr(struct sockaddr_in *a, const char *addr, const char *port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((unsigned short)atoi(port));
	return inet_pton(AF_INET, addr, &a->sin_addr) == 1 ? 0 : -1;
}

/* Read fd to EOF; *bytes and *first_us (time of the first byte) set. */
static int drain(int fd, unsigned long long *bytes, double *first_us)
{
	struct timeval idle = { IDLE_S, 0 };
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
	*bytes = 0;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (*bytes == 0)
			*first_us = now_us();
		*bytes += (unsigned long long)n;
	}
	return 0;
}

static int cmd_recv(const char *addr, const char *port, int count)
{
	struct sockaddr_in a;
	struct pollfd p;
	int s, one = 1;

	if (parse_addr(&a, addr, port) < 0)
		return fail("bad address");
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
		return fail("listen");
	for (int i = 0; i < count; i++) {
		unsigned long long bytes;
		double first = 0;
		int c;

		p = (struct pollfd){ .fd = s, .events = POLLIN };
		if (poll(&p, 1, 4 * IDLE_S * 1000) <= 0)
			return fail("no connection came");
		c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0 || drain(c, &bytes, &first) < 0)
			return fail("receive");
		printf("recv bytes=%llu us=%.0f\n", bytes, bytes ? now_us() - first : 0);
		fflush(stdout);
		close(c);
	}
	close(s);
	return 0;
}

/* Connect to *a, retrying while refused for up to CONNECT_S seconds. */
static int connect_retry(const struct sockaddr_in *a)
{
	double give_up = now_us() + CONNECT_S * 1e6;

	for (;;) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (s < 0)
			return -1;
		if (connect(s, (const struct sockaddr *)a, sizeof(*a)) == 0)
			return s;
		close(s);
		if (errno != ECONNREFUSED || now_us() > give_up)
			return -1;
		usleep(20000);
	}
}

static int cmd_send(const char *addr, const char *port, unsigned long long total)
{
	struct sockaddr_in a;
	struct timeval idle = { IDLE_S, 0 };
	unsigned long long sent = 0, back;
	double t0, first = 0;
	int s;

	if (parse_addr(&a, addr, port) < 0)
		return fail("bad address");
	s = connect_retry(&a);
	if (s < 0)
		return fail("connect");
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof(idle));
	t0 = now_us();
	while (sent < total) {
		size_t want = total - sent < sizeof(buf) ? total - sent : sizeof(buf);
		ssize_t n = write(s, buf, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fail("send");
		sent += (unsigned long long)n;
	}
	if (shutdown(s, SHUT_WR) < 0 || drain(s, &back, &first) < 0)
		return fail("waiting for the guest to close");
	printf("send bytes=%llu us=%.0f\n", sent, now_us() - t0);
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "recv"))
		return cmd_recv(argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "send"))
		return cmd_send(argv[2], argv[3], strtoull(argv[4], NULL, 0));
	fprintf(stderr, "usage: netpump recv ADDR PORT COUNT | netpump send ADDR PORT BYTES\n");
	return 2;
}
