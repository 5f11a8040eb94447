/*
 * control.h - the VMM's control socket (`shoal run --api-socket PATH`).
 * The protocol is documented in docs/vmm-control.md.
 */
#ifndef SHOAL_VMM_CONTROL_H
#define SHOAL_VMM_CONTROL_H

#include <stdint.h>

#include "base/error.h"

struct vm;
struct control;

/* Listen on `path` and serve on the VM's event loop.  Refuses a path where
 * another VMM is listening; removes a stale socket file.  0 or -1 with e. */
int control_start(struct vm *vm, const char *path, struct error *e);

/* Close every connection and remove the socket file. */
void control_stop(struct vm *vm);

/* The descriptor that came with the request being handled (SCM_RIGHTS),
 * or -1; the caller owns it from then on.  Event loop thread only. */
int control_take_fd(void);

/* The number of the connection whose request is being handled (1, 2, ...
 * in the order they were accepted; never reused), or 0 outside a
 * connection's request.  Event loop thread only. */
uint64_t control_client_serial(void);

/* Handle one request line and return the reply object as a malloc'd JSON
 * line (with '\n').  `*extra`/`*extra_len` receive raw bytes to send after
 * it (console-log), `*attach` is set for console-attach.  Exposed for the
 * fuzzer and unit tests. */
char *control_handle_line(struct vm *vm, const char *line, int client_fd,
			  unsigned char **extra, size_t *extra_len, int *attach);

#endif
