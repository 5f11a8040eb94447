/*
 * hostutil.c - shoald's shared helpers (see hostutil.h): API errors, the
 * names of VM states and restart policies, time stamps, VM file paths.
 *
 * Nothing here takes host->lock or touches the VM table; the only part of
 * struct host read is vms_dir, which is set once by host_open and never
 * changes while the host is open.
 */
#include "host/hostutil.h"

#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "host/host.h"

static const char *const hvm_state_names[] = {
	[HVM_CREATED] = "created", [HVM_STARTING] = "starting", [HVM_RUNNING] = "running",
	[HVM_PAUSED] = "paused", [HVM_STOPPING] = "stopping", [HVM_EXITED] = "exited",
};

static const char *const restart_names[] = {
	[RESTART_NO] = "no", [RESTART_ON_FAILURE] = "on-failure", [RESTART_ALWAYS] = "always",
};

int api_err_set(struct api_err *e, int http, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return -1;
	e->http = http;
	snprintf(e->code, sizeof(e->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

const char *hvm_state_name(enum hvm_state s)
{
	return (unsigned)s < sizeof(hvm_state_names) / sizeof(hvm_state_names[0]) ?
		hvm_state_names[s] : "unknown";
}

int hvm_state_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(hvm_state_names) / sizeof(hvm_state_names[0]); i++)
		if (!strcmp(s, hvm_state_names[i]))
			return (int)i;
	return -1;
}

const char *restart_policy_name(enum restart_policy p)
{
	return (unsigned)p < 3 ? restart_names[p] : "no";
}

int restart_policy_parse(const char *s)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(s, restart_names[i]))
			return i;
	return -1;
}

int64_t host_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *host_format_time(int64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	return buf;
}

char *host_vm_path(const struct host *h, const char *name, const char *file,
		   char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s%s%s", h->vms_dir, name, file ? "/" : "", file ? file : "");
	return buf;
}

int64_t host_dir_size(const char *dir)
{
	char path[PATH_MAX + 300];
	struct dirent *d;
	struct stat st;
	int64_t sum = 0;
	DIR *D = opendir(dir);

	if (!D)
		return 0;
	while ((d = readdir(D))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		if (lstat(path, &st) == 0)
			sum += (int64_t)st.st_blocks * 512;
	}
	closedir(D);
	return sum;
}
