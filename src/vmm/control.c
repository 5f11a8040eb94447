/*
 * control.c - the control socket: how the host daemon drives one VMM.
 *
 * A Unix stream socket served on the VM's event loop thread: one JSON
 * object per line each way (docs/vmm-control.md).  It is an internal
 * protocol, kept small so the VMM stays small; the public API is shoald's.
 *
 * Threads: everything here runs on the event loop thread, except that the
 * console module copies guest output to an attached client from vCPU
 * threads (console_record, never blocking).  pause waits on the event loop
 * thread until every vCPU is parked; vCPU threads never wait for the event
 * loop, so this cannot deadlock.
 *
 * Limits: 16 connections, 64 KiB per request line; replies are written with
 * a 5 s send timeout so a client that stops reading cannot wedge the VMM.
 * A client on the console (console-attach) sends raw bytes from then on.
 *
 * A request may bring one file descriptor (SCM_RIGHTS, sent with the
 * request's bytes): `migrate` takes the connected socket `shoal migrate`
 * opened, so that the VMM itself never opens a network connection (its
 * seccomp filters allow Unix sockets only).  A command takes it with
 * control_take_fd(); one no command took is closed after the request.
 */
#include "vmm/control.h"

#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "devices/device.h"
#include "devices/virtio_balloon.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "vmm/console.h"
#include "vmm/hotplug.h"
#include "vmm/jail.h"
#include "base/eventloop.h"
#include "vmm/vm.h"
#include "vmm/mce.h"

#define CONTROL_MAX_CLIENTS 16
#define CONTROL_LINE_MAX    (64 * 1024)

struct control_client {
	struct control *ctl;
	int fd;
	bool attached;                  /* raw console mode */
	int passed_fd;                  /* SCM_RIGHTS with the request being read, or -1 */
	uint64_t serial;                /* this connection's number, from 1 */
	size_t len;
	char buf[CONTROL_LINE_MAX + 1];
};

struct control {
	struct vm *vm;
	int listen_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct control_client *clients[CONTROL_MAX_CLIENTS];
	uint64_t serials;               /* connections accepted so far */
};

/* The client whose request is being handled (event loop thread only). */
static struct control_client *handling;

uint64_t control_client_serial(void)
{
	return handling ? handling->serial : 0;
}

int control_take_fd(void)
{
	int fd = handling ? handling->passed_fd : -1;

	if (handling)
		handling->passed_fd = -1;
	return fd;
}

static void control_close_passed(struct control_client *cl)
{
	if (cl->passed_fd >= 0)
		close(cl->passed_fd);
	cl->passed_fd = -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const char *control_state(struct vm *vm)
{
	if (atomic_load(&vm->stopping))
		return "stopping";
	return vm_is_paused(vm) ? "paused" : "running";
}

static json_t *control_status(struct vm *vm)
{
	json_t *cfg = vm_config_to_json(&vm->cfg), *balloon;
	json_t *o = json_pack("{s:b, s:s, s:i, s:i, s:I, s:I, s:s?, s:s?}",
			      "ok", 1, "state", control_state(vm), "pid", (int)jail_host_pid(),
			      "cpus", vm->ncpus, "memory", (json_int_t)vm->cfg.memory,
			      "uptime_ms", (json_int_t)((now_ns() - vm->started_ns) / 1000000),
			      "kernel", vm->cfg.kernel, "cmdline", vm->cfg.cmdline);

	if (cfg)
		json_object_set_new(o, "config", cfg);
	balloon = virtio_balloon_info(vm_find_device(vm, "virtio-balloon0"));
	if (balloon)
		json_object_set_new(o, "balloon", balloon);
	return o;
}

/* Bytes of guest RAM resident in memory (pages the guest has touched). */
static uint64_t control_guest_rss(struct vm *vm)
{
	const uint64_t chunk = 1ULL << 30;
	unsigned char *vec = malloc(chunk / 4096);
	uint64_t pages = 0;

	if (!vec || !vm->mem.host)
		goto out;
	for (uint64_t off = 0; off < vm->mem.size; off += chunk) {
		uint64_t len = vm->mem.size - off < chunk ? vm->mem.size - off : chunk;

		if (mincore(vm->mem.host + off, len, vec) < 0)
			break;
		for (uint64_t i = 0; i < len / 4096; i++)
			pages += vec[i] & 1;
	}
out:
	free(vec);
	return pages * 4096;
}

static uint64_t control_rss(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static json_t *control_metrics(struct vm *vm)
{
	json_t *vcpus = json_array(), *devs = json_object(), *root;

	for (int i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		struct timespec ts = { 0 };

		if (v->started)
			clock_gettime(v->cpu_clock, &ts);
		json_array_append_new(vcpus, json_pack("{s:I, s:I}",
			"exits", (json_int_t)atomic_load(&v->exits),
			"cpu_time_ns", (json_int_t)((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec)));
	}
	/* The reply's shape: the arrays devices append to ("disks": one entry
	 * per disk, "nets": one per network card) exist even when empty. */
	root = json_pack("{s:b, s:o, s:I, s:I, s:o, s:I, s:[], s:[]}", "ok", 1, "vcpus", vcpus,
			 "rss_bytes", (json_int_t)control_rss(),
			 "guest_rss_bytes", (json_int_t)control_guest_rss(vm),
			 "devices", devs, "unclaimed_io", (json_int_t)vm->iobus.unclaimed,
			 "disks", "nets");
	vm_mce_metrics(root);          /* --mem-recovery's counters (vmm/mce.h) */
	for (int i = 0; i < vm->ndevices; i++) {
		struct device *d = vm->devices[i];
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:b}",
			"io_reads", (json_int_t)d->stats.io_reads,
			"io_writes", (json_int_t)d->stats.io_writes,
			"mmio_reads", (json_int_t)d->stats.mmio_reads,
			"mmio_writes", (json_int_t)d->stats.mmio_writes,
			"broken", d->broken);

		if (d->ops->metrics) {   /* what only the device knows */
			pthread_mutex_lock(&d->lock);
			d->ops->metrics(d, o, root);
			pthread_mutex_unlock(&d->lock);
		}
		json_object_set_new(devs, d->name, o);
	}
	return root;
}

static json_t *control_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *control_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

static json_t *control_stop_cmd(struct vm *vm, json_t *req)
{
	const char *mode = json_string_value(json_object_get(req, "mode"));
	struct device *pm;

	if (!mode || !strcmp(mode, "graceful")) {
		pm = vm_find_device(vm, "acpi-pm");
		if (!pm)
			return control_error("%s", "no ACPI power button in this VM");
		acpi_pm_power_button(pm);
		if (vm_is_paused(vm))
			vm_resume(vm);   /* a paused guest cannot see the button */
	} else if (!strcmp(mode, "force")) {
		vm_stop(vm, EXIT_POWEROFF, "stopped through the control socket");
	} else {
		return control_error("stop: mode \"%s\" is not graceful or force", mode);
	}
	return json_pack("{s:b, s:s}", "ok", 1, "state", control_state(vm));
}

static json_t *control_console_log(struct vm *vm, json_t *req, unsigned char **extra,
				   size_t *extra_len)
{
	json_t *jmax = json_object_get(req, "max");
	size_t max = 1u << 20;

	if (jmax && (!json_is_integer(jmax) || json_integer_value(jmax) < 0))
		return control_error("%s", "console-log: \"max\" must be a non-negative integer");
	if (jmax && (size_t)json_integer_value(jmax) < max)
		max = (size_t)json_integer_value(jmax);
	*extra = malloc(max ? max : 1);
	*extra_len = *extra && vm->console ? console_log_copy(vm->console, *extra, max) : 0;
	return json_pack("{s:b, s:I}", "ok", 1, "bytes", (json_int_t)*extra_len);
}

/* {"cmd": "balloon", "target_bytes": N}: how much memory the guest should
 * give back through its balloon (docs/memory.md). */
static json_t *control_balloon_cmd(struct vm *vm, json_t *req)
{
	json_t *t = json_object_get(req, "target_bytes");
	struct device *d = vm_find_device(vm, "virtio-balloon0");

	if (!d)
		return control_error("%s", "balloon: this VM has no balloon device (shoal run --balloon)");
	if (!json_is_integer(t) || json_integer_value(t) < 0)
		return control_error("%s", "balloon: \"target_bytes\" must be a non-negative integer");
	if ((uint64_t)json_integer_value(t) > vm->cfg.memory)
		return control_error("balloon: target_bytes %lld is larger than the VM's memory (%llu)",
				     (long long)json_integer_value(t),
				     (unsigned long long)vm->cfg.memory);
	virtio_balloon_set_target(d, (uint64_t)json_integer_value(t));
	return json_pack("{s:b, s:o}", "ok", 1, "balloon", virtio_balloon_info(d));
}

static json_t *control_dispatch(struct vm *vm, const char *cmd, json_t *req, int client_fd,
				unsigned char **extra, size_t *extra_len, int *attach)
{
	const char *refused;
	json_t *rep;

	if (!strcmp(cmd, "status"))
		return control_status(vm);
	if (!strcmp(cmd, "metrics"))
		return control_metrics(vm);
	if (!strcmp(cmd, "pause")) {
		vm_pause(vm);
		return json_pack("{s:b, s:s}", "ok", 1, "state", control_state(vm));
	}
	if (!strcmp(cmd, "resume")) {
		struct error e = { 0 };

		if (vm->resume_gate && vm->resume_gate(vm, &e))
			return control_error("%s", e.msg);
		vm_resume(vm);
		return json_pack("{s:b, s:s}", "ok", 1, "state", control_state(vm));
	}
	if (!strcmp(cmd, "stop"))
		return control_stop_cmd(vm, req);
	if (!strcmp(cmd, "console-log"))
		return control_console_log(vm, req, extra, extra_len);
	if (!strcmp(cmd, "balloon"))
		return control_balloon_cmd(vm, req);
	if (!strcmp(cmd, "console-attach")) {
		/* attached once the reply is out (control_process): guest
		 * output must not reach the client before its "ok" */
		if (!vm->console || (console_attached_fd(vm->console) >= 0 &&
				     !json_is_true(json_object_get(req, "force"))))
			return control_error("%s", "console is attached elsewhere");
		*attach = 1;
		return json_pack("{s:b}", "ok", 1);
	}
	if ((rep = hotplug_command(vm, cmd, req)) || (refused = hotplug_refuses(vm, cmd)))
		return rep ? rep : control_error("%s", refused);   /* vmm/hotplug.c */
	for (int i = 0; i < vm->ncommands; i++)   /* added from above (vm_add_command) */
		if (!strcmp(cmd, vm->commands[i].name))
			return vm->commands[i].fn(vm, req, vm->commands[i].opaque);
	return control_error("unknown command \"%s\"", cmd);
}

char *control_handle_line(struct vm *vm, const char *line, int client_fd,
			  unsigned char **extra, size_t *extra_len, int *attach)
{
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, NULL), *rep;
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	char *out, *s;

	*extra = NULL;
	*extra_len = 0;
	*attach = 0;
	if (!json_is_object(req) || !cmd)
		rep = control_error("%s", "expected a JSON object with a string \"cmd\"");
	else
		rep = control_dispatch(vm, cmd, req, client_fd, extra, extra_len, attach);
	json_decref(req);
	s = json_dumps(rep, JSON_COMPACT);
	json_decref(rep);
	if (!s)
		return NULL;
	out = malloc(strlen(s) + 2);
	if (out)
		sprintf(out, "%s\n", s);
	free(s);
	return out;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void control_drop(struct control_client *cl)
{
	struct control *ctl = cl->ctl;

	if (cl->attached && ctl->vm->console && console_attached_fd(ctl->vm->console) == cl->fd)
		console_set_attached(ctl->vm->console, -1, true);
	eventloop_del(ctl->vm->loop, cl->fd);
	close(cl->fd);
	control_close_passed(cl);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i] == cl)
			ctl->clients[i] = NULL;
	free(cl);
}

/* A client forced off the console by another: close its connection. */
static void control_drop_stale_attached(struct control *ctl, int keep_fd)
{
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct control_client *o = ctl->clients[i];

		if (o && o->attached && o->fd != keep_fd)
			control_drop(o);
	}
}

/* Process complete lines; returns -1 when the client must be dropped. */
static int control_process(struct control_client *cl)
{
	char *nl;

	while ((nl = memchr(cl->buf, '\n', cl->len))) {
		unsigned char *extra;
		size_t extra_len, used = (size_t)(nl - cl->buf) + 1;
		int attach, rc;
		char *rep;

		*nl = '\0';
		handling = cl;
		rep = control_handle_line(cl->ctl->vm, cl->buf, cl->fd, &extra, &extra_len, &attach);
		handling = NULL;
		control_close_passed(cl);   /* a descriptor belongs to its request only */
		rc = !rep || send_all(cl->fd, rep, strlen(rep)) ||
		     (extra_len && send_all(cl->fd, extra, extra_len)) ? -1 : 0;
		free(rep);
		free(extra);
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
		if (rc)
			return -1;
		if (attach) {
			console_set_attached(cl->ctl->vm->console, cl->fd, true);
			cl->attached = true;
			control_drop_stale_attached(cl->ctl, cl->fd);
			if (cl->len && cl->ctl->vm->console)   /* typed-ahead bytes */
				console_input(cl->ctl->vm->console, (uint8_t *)cl->buf, (int)cl->len);
			cl->len = 0;
			return 0;
		}
	}
	if (cl->len >= CONTROL_LINE_MAX) {
		const char *msg = "{\"ok\":false,\"error\":\"request line longer than 64 KiB\"}\n";

		send_all(cl->fd, msg, strlen(msg));
		return -1;
	}
	return 0;
}

/* Read request bytes, and a descriptor that may come with them (one; any
 * more, or any other ancillary data, is closed by the kernel's MSG_CTRUNC
 * path or here). */
static ssize_t control_recv(struct control_client *cl)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { cl->buf + cl->len, CONTROL_LINE_MAX - cl->len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b) };
	ssize_t n = recvmsg(cl->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len != CMSG_LEN(sizeof(int)))
			continue;
		control_close_passed(cl);
		memcpy(&cl->passed_fd, CMSG_DATA(c), sizeof(int));
	}
	return n;
}

static int control_on_client(int fd, uint32_t events, void *opaque)
{
	struct control_client *cl = opaque;
	ssize_t n;

	if (cl->attached) {
		uint8_t buf[4096];

		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0 && cl->ctl->vm->console && console_attached_fd(cl->ctl->vm->console) == fd)
			console_input(cl->ctl->vm->console, buf, (int)n);
	} else {
		n = control_recv(cl);
		if (n > 0) {
			cl->len += (size_t)n;
			if (control_process(cl) == 0)
				return 0;
			n = 0;
		}
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		control_drop(cl);   /* removes itself from the loop */
		return 0;
	}
	return 0;
}

static int control_on_accept(int fd, uint32_t events, void *opaque)
{
	struct control *ctl = opaque;
	struct timeval tv = { .tv_sec = 5 };
	struct control_client *cl;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC), slot = -1;

	if (cfd < 0)
		return 0;
	for (int i = 0; i < CONTROL_MAX_CLIENTS && slot < 0; i++)
		if (!ctl->clients[i])
			slot = i;
	cl = slot >= 0 ? calloc(1, sizeof(*cl)) : NULL;
	if (!cl) {
		const char *msg = "{\"ok\":false,\"error\":\"too many control connections\"}\n";

		send_all(cfd, msg, strlen(msg));
		close(cfd);
		return 0;
	}
	setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	cl->ctl = ctl;
	cl->fd = cfd;
	cl->passed_fd = -1;
	cl->serial = ++ctl->serials;
	ctl->clients[slot] = cl;
	if (eventloop_add(ctl->vm->loop, cfd, EPOLLIN | EPOLLRDHUP, control_on_client, cl) < 0) {
		ctl->clients[slot] = NULL;
		close(cfd);
		free(cl);
	}
	return 0;
}

/* Is something already answering on `path`? */
static bool control_path_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;

	if (fd >= 0)
		close(fd);
	return live;
}

int control_start(struct vm *vm, const char *path, struct error *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *ctl;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return error_set(e, EXIT_USAGE, "--api-socket %s: path longer than %zu bytes",
				 path, sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (control_path_live(&sa))
		return error_set(e, EXIT_USAGE, "--api-socket %s: another process is listening there", path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return error_set(e, EXIT_HOST, "socket: %s", strerror(errno));
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int err = errno;

		umask(old);
		close(fd);
		return error_set(e, EXIT_HOST, "--api-socket %s: %s", path, strerror(err));
	}
	umask(old);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl || eventloop_add(vm->loop, fd, EPOLLIN, control_on_accept, ctl) < 0) {
		free(ctl);
		close(fd);
		unlink(path);
		return error_set(e, EXIT_HOST, "--api-socket %s: cannot serve it", path);
	}
	ctl->vm = vm;
	ctl->listen_fd = fd;
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	vm->control = ctl;
	return 0;
}

void control_stop(struct vm *vm)
{
	struct control *ctl = vm->control;

	if (!ctl)
		return;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i])
			control_drop(ctl->clients[i]);
	eventloop_del(vm->loop, ctl->listen_fd);
	close(ctl->listen_fd);
	unlink(ctl->path);
	free(ctl);
	vm->control = NULL;
}
