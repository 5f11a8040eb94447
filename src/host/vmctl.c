/*
 * vmctl.c - the control-socket client (see vmctl.h).
 *
 * Blocking sockets with poll() deadlines (writes go through base/io.h's
 * write_all_deadline).  Replies are capped at 64 KiB, the protocol's own
 * limit for a line, so a confused VMM cannot make the daemon allocate
 * without bound.
 */
#include "host/vmctl.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/io.h"

#define VMCTL_LINE_MAX (64 * 1024)

int vmctl_connect(struct vmctl *c, const char *path, int timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	long long deadline = io_now_ms() + timeout_ms;
	int rc;

	c->fd = -1;
	c->len = 0;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: path too long for a Unix socket", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	for (;;) {
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0)
			break;
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		rc = -errno;
		close(c->fd);
		c->fd = -1;
		/* EAGAIN: the VMM's backlog is full for a moment */
		if (rc != -EAGAIN || io_now_ms() >= deadline) {
			snprintf(err, errlen, "%s: %s", path, strerror(-rc));
			return rc;
		}
		usleep(1000);
	}
	rc = -errno;
	snprintf(err, errlen, "socket: %s", strerror(errno));
	return rc;
}

void vmctl_close(struct vmctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
}

/* Wait until fd is ready for `events` or the deadline passes. */
static int vmctl_wait(int fd, short events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	long long left;
	int rc;

	for (;;) {
		left = deadline - io_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

/* Read more bytes into c->buf; 0 on EOF is -ECONNRESET. */
static int vmctl_fill(struct vmctl *c, long long deadline)
{
	ssize_t r;
	int rc;

	if (c->len == sizeof(c->buf))
		return -ENOBUFS;
	rc = vmctl_wait(c->fd, POLLIN, deadline);
	if (rc)
		return rc;
	r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
	if (r < 0)
		return (errno == EINTR || errno == EAGAIN) ? 0 : -errno;
	if (r == 0)
		return -ECONNRESET;
	c->len += (size_t)r;
	return 0;
}

/* Read one line (without its newline) into a malloc'd string. */
static int vmctl_read_line(struct vmctl *c, char **line, long long deadline)
{
	size_t have = 0;
	char *out = NULL, *nl, *tmp;
	int rc;

	for (;;) {
		nl = memchr(c->buf, '\n', c->len);
		size_t take = nl ? (size_t)(nl - c->buf) : c->len;
		if (have + take > VMCTL_LINE_MAX) {
			free(out);
			return -EMSGSIZE;
		}
		tmp = realloc(out, have + take + 1);
		if (!tmp) {
			free(out);
			return -ENOMEM;
		}
		out = tmp;
		memcpy(out + have, c->buf, take);
		have += take;
		out[have] = '\0';
		if (nl)
			take++;
		memmove(c->buf, c->buf + take, c->len - take);
		c->len -= take;
		if (nl) {
			*line = out;
			return 0;
		}
		rc = vmctl_fill(c, deadline);
		if (rc) {
			free(out);
			return rc;
		}
	}
}

/* The request's first byte, with `fd` as SCM_RIGHTS: the descriptor
 * arrives with the request it belongs to.  0 or -errno. */
static int send_first_with_fd(int sock, const char *text, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u = { 0 };
	struct iovec iov = { (void *)text, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	ssize_t n;

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	do
		n = sendmsg(sock, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : n < 0 ? -errno : -EIO;
}

int vmctl_request(struct vmctl *c, json_t *req, json_t **reply, int timeout_ms,
		  char *err, size_t errlen)
{
	return vmctl_request_fd(c, req, -1, reply, timeout_ms, err, errlen);
}

int vmctl_request_fd(struct vmctl *c, json_t *req, int fd, json_t **reply, int timeout_ms,
		     char *err, size_t errlen)
{
	long long deadline = io_now_ms() + timeout_ms;
	char *text = json_dumps(req, JSON_COMPACT), *line = NULL;
	size_t skip = 0;
	json_t *r;
	int rc = 0;

	*reply = NULL;
	if (!text) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (fd >= 0) {
		rc = send_first_with_fd(c->fd, text, fd);
		skip = 1;
	}
	if (!rc)
		rc = write_all_deadline(c->fd, text + skip, strlen(text) - skip, deadline);
	if (!rc)
		rc = write_all_deadline(c->fd, "\n", 1, deadline);
	free(text);
	if (!rc)
		rc = vmctl_read_line(c, &line, deadline);
	if (rc) {
		snprintf(err, errlen, "control socket: %s", strerror(-rc));
		return rc;
	}
	r = json_loads(line, 0, NULL);
	free(line);
	if (!json_is_object(r)) {
		json_decref(r);
		snprintf(err, errlen, "control socket: reply is not a JSON object");
		return -EPROTO;
	}
	if (!json_is_true(json_object_get(r, "ok"))) {
		const char *m = json_string_value(json_object_get(r, "error"));
		snprintf(err, errlen, "%s", m ? m : "request refused");
		json_decref(r);
		return -EPROTO;
	}
	*reply = r;
	return 0;
}

int vmctl_read_exact(struct vmctl *c, void *out, size_t n, int timeout_ms)
{
	long long deadline = io_now_ms() + timeout_ms;
	char *p = out;
	size_t take;
	int rc;

	while (n) {
		if (c->len == 0) {
			rc = vmctl_fill(c, deadline);
			if (rc)
				return rc;
			continue;
		}
		take = c->len < n ? c->len : n;
		memcpy(p, c->buf, take);
		memmove(c->buf, c->buf + take, c->len - take);
		c->len -= take;
		p += take;
		n -= take;
	}
	return 0;
}

int vmctl_call(const char *path, const char *cmd, json_t **reply, int timeout_ms,
	       char *err, size_t errlen)
{
	struct vmctl c;
	json_t *req;
	int rc;

	*reply = NULL;
	rc = vmctl_connect(&c, path, timeout_ms, err, errlen);
	if (rc)
		return rc;
	req = json_pack("{s:s}", "cmd", cmd);
	rc = vmctl_request(&c, req, reply, timeout_ms, err, errlen);
	json_decref(req);
	vmctl_close(&c);
	return rc;
}
