/*
 * log.h - the VMM's logger.
 *
 * Every message the VMM prints goes through here so that it has one prefix
 * ("shoal: "), one destination (stderr) and one verbosity switch.  Messages
 * name the thing and the reason: "shoal: vmlinux: not an ELF file".
 * Thread-safe: each call is one write(2) of a formatted line.
 */
#ifndef SHOAL_BASE_LOG_H
#define SHOAL_BASE_LOG_H

#include <stdarg.h>
#include <stdnoreturn.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Messages above this level are dropped.  Default LOG_WARN; -v raises it. */
extern enum log_level log_threshold;

/*
 * A daemon's log (shoald): every line says its level ("info: ", ...), and
 * either starts with a UTC timestamp (2026-12-05T17:20:01.123Z) or, when
 * stderr is journald's stream (systemd sets $JOURNAL_STREAM to its
 * device:inode), with the sd-daemon priority prefix ("<6>") and no
 * timestamp, since journald stamps lines itself.  The command-line tools
 * keep the plain "shoal: message" lines.
 */
void log_daemon_mode(const char *ident);
/* "error", "warn"/"warning", "info", "debug" -> 0 and *lvl; else -1. */
int log_level_parse(const char *s, enum log_level *lvl);

void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* For start-up configuration errors only: print and exit(status). */
noreturn void die(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
