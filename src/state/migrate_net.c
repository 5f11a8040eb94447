/*
 * migrate_net.c - the sockets of a live migration (state/migrate.c):
 * addresses (unix:PATH, tcp:HOST:PORT), connecting (done by `shoal
 * migrate`, never by the VMM, which gets the connected socket), listening
 * (the destination, which refuses a second source at once:
 * migrate_refuse_busy), and whole sends and receives with the peer's
 * silence bounded by MIGRATE_IO_TIMEOUT_S.  Nothing here reads the stream.
 */
#include "state/migrate_net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "state/migrate.h"

/* ---- addresses and sockets ---- */

int migrate_parse_addr(const char *uri, struct migrate_addr *a, struct error *e)
{
	memset(a, 0, sizeof(*a));
	if (!uri)
		return error_set(e, EXIT_USAGE, "migration address missing (unix:PATH or tcp:HOST:PORT)");
	if (!strncmp(uri, "unix:", 5)) {
		if (!uri[5] || strlen(uri + 5) >= sizeof(a->path))
			return error_set(e, EXIT_USAGE, "%s: a unix: address needs a path of 1 to %zu "
					 "bytes", uri, sizeof(a->path) - 1);
		snprintf(a->path, sizeof(a->path), "%s", uri + 5);
		return 0;
	}
	if (!strncmp(uri, "tcp:", 4)) {
		const char *colon = strrchr(uri + 4, ':');
		char *end;
		long port;

		if (!colon || colon == uri + 4 || (size_t)(colon - (uri + 4)) >= sizeof(a->host))
			return error_set(e, EXIT_USAGE, "%s: a tcp: address is tcp:HOST:PORT", uri);
		port = strtol(colon + 1, &end, 10);
		if (!colon[1] || *end || port < 1 || port > 65535)
			return error_set(e, EXIT_USAGE, "%s: port '%s' is not a number from 1 to 65535",
					 uri, colon + 1);
		a->tcp = true;
		memcpy(a->host, uri + 4, (size_t)(colon - (uri + 4)));
		if (a->host[0] == '[' && a->host[strlen(a->host) - 1] == ']') {
			memmove(a->host, a->host + 1, strlen(a->host));
			a->host[strlen(a->host) - 1] = 0;
		}
		snprintf(a->port, sizeof(a->port), "%ld", port);
		return 0;
	}
	return error_set(e, EXIT_USAGE, "%s: not a migration address (unix:PATH or tcp:HOST:PORT)",
			 uri);
}

void migrate_refuse_busy(int lfd, const char *uri)
{
	char msg[600], buf[8 + 4 + sizeof(msg)], sink[4096];
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	uint32_t n;

	if (fd < 0)
		return;
	n = (uint32_t)snprintf(msg, sizeof(msg), "incoming migration: a migration is already "
			       "coming in on %.400s: this connection is refused", uri);
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	memcpy(buf, "SHOALNAK", 8);
	memcpy(buf + 8, &n, 4);
	memcpy(buf + 12, msg, n);
	while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	if (send(fd, buf, 12 + n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_warn("%s: could not say so (%s)", msg, strerror(errno));
	else
		log_warn("%s", msg);
	shutdown(fd, SHUT_WR);
	while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	close(fd);
}

void migrate_set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = MIGRATE_IO_TIMEOUT_S };
	int one = 1;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));   /* fails on unix: fine */
}

static int addr_connect(const struct migrate_addr *a, const char *uri, struct error *e)
{
	int fd = -1;

	if (!a->tcp) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", a->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			error_set(e, EXIT_HOST, "%s: cannot connect: %s", uri, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *r;
		int rc = getaddrinfo(a->host, a->port, &hints, &res), err = 0;

		if (rc)
			return error_set(e, EXIT_HOST, "%s: %s", uri, gai_strerror(rc));
		for (r = res; r; r = r->ai_next) {
			fd = socket(r->ai_family, r->ai_socktype | SOCK_CLOEXEC, r->ai_protocol);
			if (fd >= 0 && connect(fd, r->ai_addr, r->ai_addrlen) == 0)
				break;
			err = errno;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		freeaddrinfo(res);
		if (fd < 0)
			return error_set(e, EXIT_HOST, "%s: cannot connect: %s", uri, strerror(err));
	}
	migrate_set_timeouts(fd);
	return fd;
}

int migrate_connect(const char *uri, struct error *e)
{
	struct migrate_addr a;

	if (migrate_parse_addr(uri, &a, e))
		return -1;
	return addr_connect(&a, uri, e);
}

int migrate_addr_listen(const struct migrate_addr *a, const char *uri, struct error *e)
{
	int fd = -1, one = 1;

	if (!a->tcp) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", a->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		unlink(a->path);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0)
			goto fail;
		return fd;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	int rc = getaddrinfo(a->host, a->port, &hints, &res);

	if (rc)
		return error_set(e, EXIT_USAGE, "%s: %s", uri, gai_strerror(rc));
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1) < 0) {
		freeaddrinfo(res);
		goto fail;
	}
	freeaddrinfo(res);
	return fd;
fail:
	error_set(e, EXIT_HOST, "%s: cannot listen: %s", uri, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int migrate_send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* 1 when all `len` bytes came, 0 at end of stream before any, -1 with
 * errno (EPIPE: the stream ended part way). */
int migrate_recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, p + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			if (!got)
				return 0;
			errno = EPIPE;
			return -1;
		}
		got += (size_t)n;
	}
	return 1;
}
