/*
 * log.c - see log.h.  One formatted line per call, written with a single
 * write(2) so lines from several vCPU threads never interleave.
 */
#include "base/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_WARN;

static const char *log_ident = "shoal";
static bool log_daemon, log_journal;

/* stderr is journald's stream: $JOURNAL_STREAM is "DEV:INODE" of it */
static bool stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_daemon_mode(const char *ident)
{
	log_ident = ident;
	log_daemon = true;
	log_journal = stderr_is_journal();
}

int log_level_parse(const char *s, enum log_level *lvl)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i])) {
			*lvl = (enum log_level)i;
			return 0;
		}
	if (!strcmp(s, "warning")) {
		*lvl = LOG_WARN;
		return 0;
	}
	return -1;
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *const tag[] = { "", "warning: ", "", "debug: " };
	static const char *const dtag[] = { "error: ", "warning: ", "info: ", "debug: " };
	static const int prio[] = { 3, 4, 6, 7 };   /* syslog's err, warning, info, debug */
	char line[2048];
	int n = 0;

	if (lvl > log_threshold)
		return;
	if (log_daemon && log_journal) {
		n = snprintf(line, sizeof(line), "<%d>", prio[lvl]);
	} else if (log_daemon) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ ", ts.tv_nsec / 1000000);
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "%s: %s", log_ident,
		      log_daemon ? dtag[lvl] : tag[lvl]);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* A failed write to stderr has nowhere better to be reported. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

void die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERROR, fmt, ap);
	va_end(ap);
	exit(status);
}
