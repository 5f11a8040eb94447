/*
 * vmctl.h - shoald's client of a VMM's control socket (docs/vmm-control.md).
 *
 * One JSON object per line each way.  A connection is a struct vmctl with
 * its own read buffer, because a reply line may be followed by raw bytes
 * (console-log) or by the console stream itself (console-attach).  Every
 * read and write has a deadline: a hung VMM must not hang a daemon thread.
 */
#ifndef SHOAL_HOST_VMCTL_H
#define SHOAL_HOST_VMCTL_H

#include <jansson.h>
#include <stddef.h>

struct vmctl {
	int fd;
	char buf[4096];     /* bytes read past the last reply line */
	size_t len;
};

/* Connect to `path` within timeout_ms.  0, or -errno with a message. */
int vmctl_connect(struct vmctl *c, const char *path, int timeout_ms, char *err, size_t errlen);
void vmctl_close(struct vmctl *c);

/* Send `req` (not consumed) and read one reply line into *reply.  A reply
 * with "ok": false is returned as -EPROTO with its "error" in `err`. */
int vmctl_request(struct vmctl *c, json_t *req, json_t **reply, int timeout_ms,
		  char *err, size_t errlen);

/* The same, with descriptor `fd` sent along (SCM_RIGHTS; the caller
 * keeps its copy): `shoal migrate` hands the VMM its connected socket. */
int vmctl_request_fd(struct vmctl *c, json_t *req, int fd, json_t **reply, int timeout_ms,
		     char *err, size_t errlen);

/* Read exactly n bytes (after a reply line) into out. */
int vmctl_read_exact(struct vmctl *c, void *out, size_t n, int timeout_ms);

/* Connect, send {"cmd": cmd}, close: the common one-shot call. */
int vmctl_call(const char *path, const char *cmd, json_t **reply, int timeout_ms,
	       char *err, size_t errlen);

#endif
