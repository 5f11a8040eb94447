/*
 * sd_notify.c - systemd's readiness protocol, for shoald's Type=notify unit
 * (contrib/shoald.service).
 *
 * systemd names a datagram socket in $NOTIFY_SOCKET (a path, or "@NAME" for
 * an abstract one); the service sends "READY=1" when it serves, so that
 * `systemctl start shoald` returns only once the API socket answers, and
 * units ordered after it find it up; "STOPPING=1" when it stops.
 *
 * Why not libsystemd's sd_notify: the protocol is one datagram on a Unix
 * socket, and libsystemd would add a library (and its dependencies) to a
 * daemon that runs on hosts without systemd too.  What this does not do:
 * pass file descriptors, or the watchdog; the variable is left set (no
 * child of shoald's is a service of its own: VMMs are not told).
 *
 * Invariants: never blocks (MSG_DONTWAIT); a name longer than sun_path is
 * refused (ENAMETOOLONG), not cut.
 */
#include "host/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sd_notify_send(const char *state)
{
	const char *name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	ssize_t n;
	int fd, err;

	if (!name || !*name)
		return 1;
	len = strlen(name);
	if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path)) {
		errno = name[0] == '/' || name[0] == '@' ? ENAMETOOLONG : EINVAL;
		return -1;
	}
	memcpy(sa.sun_path, name, len);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';          /* an abstract socket */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	err = errno;
	close(fd);
	errno = err;
	return n < 0 ? -1 : 0;
}
