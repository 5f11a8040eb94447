/*
 * console.h - where the guest's serial console goes: the terminal, a file,
 * or nowhere.
 *
 * On a terminal, stdin is put in raw mode so every key reaches the guest;
 * Ctrl-A x quits (the VM stops with EXIT_ESCAPE), Ctrl-A Ctrl-A sends a
 * literal Ctrl-A, Ctrl-A h prints help.  The terminal is restored on every
 * way out, including SIGTERM and SIGHUP.  When stdin is not a terminal
 * (a pipe), its bytes are passed to the guest unchanged.
 */
#ifndef SHOAL_VMM_CONSOLE_H
#define SHOAL_VMM_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "vmm/config.h"

struct vm;
struct console;

/* Input sink: called on the event loop thread with bytes for the guest. */
typedef void (*console_input_fn)(void *opaque, const uint8_t *buf, int len);

struct console *console_open(struct vm *vm, enum console_kind kind, const char *path,
			     struct error *e);
void console_close(struct console *c);

/* Route keyboard input to `fn` and start reading stdin (stdio only). */
int console_attach_input(struct console *c, console_input_fn fn, void *opaque);

/* Write guest output; never blocks the guest for long on a full pipe. */
void console_write(struct console *c, const void *buf, size_t len);

/* The tail of the console output (up to 1 MiB is kept): copies at most
 * `max` bytes into `out`, returns the count. */
size_t console_log_copy(struct console *c, uint8_t *out, size_t max);

/* Make `fd` (a control-socket client) receive console output; -1 detaches.
 * Refused (-1) when another client is attached, unless `force`. */
int console_set_attached(struct console *c, int fd, bool force);
int console_attached_fd(struct console *c);

/* Bytes typed by an attached client, for the guest. */
void console_input(struct console *c, const uint8_t *buf, int len);

/* Restore the terminal if we changed it (safe to call more than once). */
void console_restore_terminal(void);

#endif
