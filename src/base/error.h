/*
 * error.h - an error value that carries its message.
 *
 * Library code (loaders, table builders, option parsers, the block layer)
 * does not print: it fills a struct error and returns a negative value, and
 * the caller decides whether to print it, test it or wrap it.  The message
 * names the thing and the reason ("vmlinux: truncated ELF program header"),
 * and `status` is the process exit status the CLI should use (see exitcode.h).
 */
#ifndef SHOAL_BASE_ERROR_H
#define SHOAL_BASE_ERROR_H

#include <stddef.h>

struct error {
	int status;       /* exit status to use, EXIT_* from exitcode.h */
	char msg[1024];   /* one line, no trailing newline, no "shoal: " prefix */
};

/* Fill `e` (may be NULL) and return -1.  Always returns -1 so callers can
 * write `return error_set(e, EXIT_BADKERNEL, "%s: not ELF", path);`. */
int error_set(struct error *e, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "ctx: old message". Returns -1. */
int error_prefix(struct error *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
