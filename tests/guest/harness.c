/* harness.c - see harness.h. */
#include "harness.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm/vm.h"

const char *harness_guest_path(void)
{
	static char path[8192];
	const char *b = getenv("BUILD");
	char self[4096];
	ssize_t n;

	if (b) {
		snprintf(path, sizeof(path), "%s/shoal-guest", b);
		return path;
	}
	/* build/tests/guest/NAME -> build/shoal-guest */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		for (int up = 0; up < 3; up++) {
			char *s = strrchr(self, '/');
			if (s)
				*s = '\0';
		}
		snprintf(path, sizeof(path), "%s/shoal-guest", self);
	}
	return path;
}

void harness_require_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR);

	if (fd < 0) {
		fprintf(stderr, "SKIP: /dev/kvm cannot be opened: %m\n");
		skip();
	}
	close(fd);
}

static void harness_on_report(void *opaque, const char *line)
{
	struct guest_result *r = opaque;

	if (r->nreports < HARNESS_MAX_REPORTS)
		r->reports[r->nreports++] = strdup(line);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void harness_read_console(const char *path, struct guest_result *r)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, r->console, sizeof(r->console) - 1) : 0;

	r->console[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

int harness_run(const struct guest_opts *o, struct guest_result *r, char *err, int errlen,
		int *err_status)
{
	char con[] = "/tmp/shoal-harness-XXXXXX";
	struct vm_config cfg;
	struct error e = { 0 };
	struct vm *vm;
	double t0;
	int fd = mkstemp(con);

	memset(r, 0, sizeof(*r));
	if (fd >= 0)
		close(fd);
	vm_config_init(&cfg);
	cfg.kernel = strdup(o->kernel ? o->kernel : harness_guest_path());
	cfg.cmdline = o->cmdline ? strdup(o->cmdline) : NULL;
	cfg.cpus = o->cpus ? o->cpus : 1;
	cfg.memory = o->memory ? o->memory : 256ULL << 20;
	cfg.cpu_template = o->cpu_template ? strdup(o->cpu_template) : NULL;
	cfg.timeout_s = o->timeout_s ? o->timeout_s : 60;
	vm_config_set_console(&cfg, "file:/dev/null", &e);
	free(cfg.console_path);
	cfg.console_path = strdup(con);
	if (o->tweak)
		o->tweak(&cfg, o->tweak_arg);
	vm = vm_create(&cfg, &e);
	vm_config_free(&cfg);
	if (!vm) {
		snprintf(err, (size_t)errlen, "%s", e.msg);
		if (err_status)
			*err_status = e.status;
		unlink(con);
		return -1;
	}
	vm_set_report_fn(vm, harness_on_report, r);
	t0 = now_s();
	r->status = vm_run(vm);
	r->seconds = now_s() - t0;
	snprintf(r->reason, sizeof(r->reason), "%s", vm->exit_reason);
	vm_destroy(vm);
	harness_read_console(con, r);
	unlink(con);
	return 0;
}

const char *harness_report(const struct guest_result *r, const char *prefix)
{
	size_t n = strlen(prefix);

	for (int i = 0; i < r->nreports; i++)
		if (!strncmp(r->reports[i], prefix, n))
			return r->reports[i];
	return NULL;
}

long long harness_field(const char *line, const char *key)
{
	char pat[64];
	const char *p;

	if (!line)
		return -1;
	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	if (!p)
		return -1;
	return strtoll(p + strlen(pat), NULL, 0);
}

void harness_free(struct guest_result *r)
{
	for (int i = 0; i < r->nreports; i++)
		free(r->reports[i]);
	r->nreports = 0;
}
