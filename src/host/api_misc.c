/*
 * api_misc.c - the API's streams and figures: events, metrics (JSON and
 * Prometheus text), the console log and interactive console attach.
 *
 * Event stream (GET /v1/events?follow=true): newline-delimited JSON, one
 * event per line, from the database; the reader blocks on host->event_cond,
 * sending an empty line every 15 s so a vanished client is noticed.
 *
 * Console attach (GET /v1/vms/NAME/console/attach with "Upgrade:
 * shoal-console"): the daemon first asks the VMM for console-attach, so a
 * refusal ("attached elsewhere") is an ordinary 409; then it answers 101
 * and a thread copies bytes both ways between the client's socket and the
 * VMM's control connection until either side closes.
 */
#include "host/api.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/spec.h"
#include "host/vmctl.h"

#define EVENTS_BATCH 64
#define EVENTS_HEARTBEAT_S 15
#define CONSOLE_LOG_MAX (1u << 20)

/* ---- events ---- */

/* One event as JSON. */
static json_t *api_event_json(const struct db_event *ev)
{
	char t[64];
	json_t *d = ev->detail ? json_loads(ev->detail, 0, NULL) : NULL;

	host_format_time(ev->ts_ms, t, sizeof(t));
	return json_pack("{s:I, s:s, s:s, s:s, s:o}", "id", (json_int_t)ev->id, "time", t,
			 "vm", ev->vm, "type", ev->type, "detail", d ? d : json_object());
}

struct event_stream {
	struct host *h;
	int64_t last;           /* last id sent (or skipped) */
	char vm[HOST_NAME_MAX_LEN + 1];
	char *pending;          /* formatted lines not yet handed to MHD */
	size_t len, off;
};

/* Fetch the next batch into s->pending; 0 if none (s->last advanced). */
static size_t event_stream_fetch(struct event_stream *s)
{
	struct db_event evs[EVENTS_BATCH];
	int64_t seen;
	char *line;
	int n;

	pthread_mutex_lock(&s->h->lock);
	seen = s->h->last_event_id;
	pthread_mutex_unlock(&s->h->lock);
	n = db_events_since(s->h->db, s->last, s->vm[0] ? s->vm : NULL, evs, EVENTS_BATCH);
	free(s->pending);
	s->pending = NULL;
	s->len = s->off = 0;
	for (int i = 0; i < n; i++) {
		json_t *j = api_event_json(&evs[i]);
		line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(j);
		if (line) {
			size_t l = strlen(line);
			char *p = realloc(s->pending, s->len + l + 1);
			if (p) {
				s->pending = p;
				memcpy(p + s->len, line, l);
				p[s->len + l] = '\n';
				s->len += l + 1;
			}
			free(line);
		}
		s->last = evs[i].id;
		db_event_free(&evs[i]);
	}
	if (n <= 0 && seen > s->last)
		s->last = seen;
	return s->len;
}

/* Block until an event newer than s->last, shutdown, or the heartbeat. */
static bool event_stream_wait(struct event_stream *s)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += EVENTS_HEARTBEAT_S;
	pthread_mutex_lock(&s->h->lock);
	while (s->h->last_event_id <= s->last && !s->h->stopping)
		if (pthread_cond_timedwait(&s->h->event_cond, &s->h->lock, &ts) == ETIMEDOUT)
			break;
	stop = s->h->stopping;
	pthread_mutex_unlock(&s->h->lock);
	return stop;
}

/* libmicrohttpd's content reader for the stream. */
static ssize_t event_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct event_stream *s = cls;
	size_t n;

	while (s->off == s->len) {
		if (event_stream_fetch(s))
			break;
		if (event_stream_wait(s))
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (s->h->last_event_id <= s->last) {
			buf[0] = '\n';             /* heartbeat */
			return 1;
		}
	}
	n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(buf, s->pending + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

/* libmicrohttpd is done with the stream. */
static void event_stream_free(void *cls)
{
	struct event_stream *s = cls;

	free(s->pending);
	free(s);
}

/* The follow=true case. */
static int api_events_follow(struct api_call *c, int64_t since, const char *vm)
{
	struct event_stream *s = calloc(1, sizeof(*s));
	struct MHD_Response *r;
	int ret;

	if (!s)
		return MHD_NO;
	s->h = c->h;
	s->last = since;
	snprintf(s->vm, sizeof(s->vm), "%s", vm ? vm : "");
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, event_stream_read, s,
					      event_stream_free);
	if (!r) {
		free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/x-ndjson");
	ret = MHD_queue_response(c->conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

/* GET /v1/events: a page of the log, or (follow=true) the stream. */
int api_events(struct api_call *c)
{
	const char *q_since = api_query(c, "since"), *q_vm = api_query(c, "vm");
	const char *q_limit = api_query(c, "limit"), *q_follow = api_query(c, "follow");
	struct db_event *evs;
	long long since = -1, limit = 100;
	int follow = 0, n;
	struct api_err e;
	json_t *arr;

	if ((q_since && (since = api_parse_uint(q_since, INT64_MAX)) < 0) ||
	    (q_limit && ((limit = api_parse_uint(q_limit, EVENTS_BATCH * 16)) <= 0)) ||
	    (q_follow && (follow = api_parse_bool(q_follow)) < 0) ||
	    (q_vm && !host_name_valid(q_vm))) {
		api_err_set(&e, 400, "invalid_request",
			    "events: since must be an event id, limit 1 to %d, follow true or false, vm a VM name",
			    EVENTS_BATCH * 16);
		return api_reply_error(c, &e);
	}
	if (follow) {
		if (since < 0) {        /* from now on */
			pthread_mutex_lock(&c->h->lock);
			since = c->h->last_event_id;
			pthread_mutex_unlock(&c->h->lock);
		}
		return api_events_follow(c, since, q_vm);
	}
	evs = calloc((size_t)limit, sizeof(*evs));
	n = evs ? db_events_since(c->h->db, since < 0 ? 0 : since, q_vm, evs, (int)limit) : -1;
	if (n < 0) {
		free(evs);
		api_err_set(&e, 500, "internal", "events: cannot read the store");
		return api_reply_error(c, &e);
	}
	arr = json_array();
	for (int i = 0; i < n; i++) {
		json_array_append_new(arr, api_event_json(&evs[i]));
		db_event_free(&evs[i]);
	}
	since = n ? evs[n - 1].id : (since < 0 ? 0 : since);
	free(evs);
	return api_reply_json(c, 200, json_pack("{s:o, s:I}", "events", arr, "last_id",
						(json_int_t)since));
}

/* ---- metrics ---- */

struct vm_figures {
	char name[HOST_NAME_MAX_LEN + 1];
	enum hvm_state state;
	int cpus;
	uint64_t memory;
	unsigned restarts;
	json_t *m;              /* the VMM's metrics reply, or NULL */
};

/* Snapshot the table and ask each live VMM for its metrics. */
static struct vm_figures *metrics_collect(struct host *h, const char *only, size_t *count)
{
	struct vm_figures *f;
	char sock[4200], err[256];
	size_t n = 0;

	pthread_mutex_lock(&h->lock);
	f = calloc(h->nvms + 1, sizeof(*f));
	for (size_t i = 0; f && i < h->nvms; i++) {
		struct hvm *vm = h->vms[i];
		if (only && strcmp(only, vm->rec.name))
			continue;
		snprintf(f[n].name, sizeof(f[n].name), "%s", vm->rec.name);
		f[n].state = vm->state;
		f[n].cpus = vm->cpus;
		f[n].memory = vm->memory;
		f[n].restarts = vm->rec.restarts;
		n++;
	}
	pthread_mutex_unlock(&h->lock);
	for (size_t i = 0; f && i < n; i++) {
		if (f[i].state != HVM_RUNNING && f[i].state != HVM_PAUSED)
			continue;
		host_vm_path(h, f[i].name, "control.sock", sock, sizeof(sock));
		if (vmctl_call(sock, "metrics", &f[i].m, 500, err, sizeof(err)))
			f[i].m = NULL;
	}
	*count = n;
	return f;
}

/* Release what metrics_collect returned. */
static void metrics_free(struct vm_figures *f, size_t n)
{
	for (size_t i = 0; f && i < n; i++)
		json_decref(f[i].m);
	free(f);
}

/* Sum a field over the VMM's vcpus array. */
static json_int_t metrics_vcpu_sum(json_t *m, const char *key)
{
	json_int_t s = 0;
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(m, "vcpus"), i, v)
		s += json_integer_value(json_object_get(v, key));
	return s;
}

/* One VM's JSON figures. */
static json_t *metrics_vm_json(const struct vm_figures *f)
{
	json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:I}", "name", f->name,
			      "state", hvm_state_name(f->state), "cpus", f->cpus,
			      "memory", (json_int_t)f->memory, "restarts", (json_int_t)f->restarts);
	const char *pass[] = { "vcpus", "rss_bytes", "guest_rss_bytes", "devices", "disks",
			       "nets", "unclaimed_io" };

	if (!f->m)
		return o;
	json_object_set_new(o, "vcpu_time_ns", json_integer(metrics_vcpu_sum(f->m, "cpu_time_ns")));
	json_object_set_new(o, "exits", json_integer(metrics_vcpu_sum(f->m, "exits")));
	for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++) {
		json_t *v = json_object_get(f->m, pass[i]);
		if (v)
			json_object_set(o, pass[i], v);
	}
	return o;
}

/* Host figures: VMs by state, memory committed to live VMs. */
static json_t *metrics_host_json(struct host *h, const struct vm_figures *f, size_t n)
{
	json_int_t by[HVM_EXITED + 1] = { 0 }, committed = 0;
	json_t *states = json_object();

	for (size_t i = 0; i < n; i++) {
		by[f[i].state]++;
		if (f[i].state != HVM_CREATED && f[i].state != HVM_EXITED)
			committed += (json_int_t)f[i].memory;
	}
	for (int s = 0; s <= HVM_EXITED; s++)
		json_object_set_new(states, hvm_state_name((enum hvm_state)s), json_integer(by[s]));
	return json_pack("{s:I, s:o, s:I, s:I}", "vms", (json_int_t)n, "vms_by_state", states,
			 "memory_committed_bytes", committed,
			 "cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN));
}

/* GET /v1/metrics: host and per-VM figures as JSON. */
int api_metrics_json(struct api_call *c)
{
	size_t n;
	struct vm_figures *f = metrics_collect(c->h, NULL, &n);
	json_t *arr = json_array(), *host;

	for (size_t i = 0; f && i < n; i++)
		json_array_append_new(arr, metrics_vm_json(&f[i]));
	host = metrics_host_json(c->h, f, f ? n : 0);
	metrics_free(f, n);
	return api_reply_json(c, 200, json_pack("{s:o, s:o}", "host", host, "vms", arr));
}

/* GET /v1/vms/NAME/metrics: one VM's figures. */
int api_vm_metrics(struct api_call *c)
{
	size_t n;
	struct vm_figures *f = metrics_collect(c->h, c->name, &n);
	struct api_err e;
	json_t *o;

	if (!f || n == 0) {
		metrics_free(f, n);
		api_err_set(&e, 404, "not_found", "vm \"%s\" not found", c->name);
		return api_reply_error(c, &e);
	}
	o = metrics_vm_json(&f[0]);
	metrics_free(f, n);
	return api_reply_json(c, 200, o);
}

/* A growing text buffer for the Prometheus page. */
struct text {
	char *buf;
	size_t len, cap;
};

/* Append printf-formatted text, growing the buffer. */
static void __attribute__((format(printf, 2, 3))) text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (t->buf && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap + (size_t)n + 1) * 2;
		char *b = realloc(t->buf, cap);
		if (!b)
			return;
		t->buf = b;
		t->cap = cap;
	}
}

/* Per-vCPU series of one VM. */
static void prom_vcpus(struct text *t, const struct vm_figures *f)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(f->m, "vcpus"), i, v) {
		text_add(t, "shoal_vm_vcpu_seconds_total{vm=\"%s\",vcpu=\"%zu\"} %.9f\n", f->name, i,
			 (double)json_integer_value(json_object_get(v, "cpu_time_ns")) / 1e9);
		text_add(t, "shoal_vm_exits_total{vm=\"%s\",vcpu=\"%zu\"} %lld\n", f->name, i,
			 (long long)json_integer_value(json_object_get(v, "exits")));
	}
}

/* Device, disk and network series of one VM (whatever the VMM reports). */
static void prom_devices(struct text *t, const struct vm_figures *f)
{
	static const char *const kinds[] = { "disks", "nets" };
	static const char *const ctr[] = { "read_bytes", "write_bytes", "read_ops", "write_ops",
					   "rx_bytes", "tx_bytes", "rx_packets", "tx_packets" };
	const char *key;
	json_t *v, *d;
	size_t i;

	json_object_foreach(json_object_get(f->m, "devices"), key, v) {
		text_add(t, "shoal_vm_device_io_total{vm=\"%s\",device=\"%s\",op=\"read\"} %lld\n",
			 f->name, key, (long long)(json_integer_value(json_object_get(v, "io_reads")) +
						   json_integer_value(json_object_get(v, "mmio_reads"))));
		text_add(t, "shoal_vm_device_io_total{vm=\"%s\",device=\"%s\",op=\"write\"} %lld\n",
			 f->name, key, (long long)(json_integer_value(json_object_get(v, "io_writes")) +
						   json_integer_value(json_object_get(v, "mmio_writes"))));
	}
	for (size_t k = 0; k < 2; k++)
		json_array_foreach(json_object_get(f->m, kinds[k]), i, d)
			for (size_t c = 0; c < sizeof(ctr) / sizeof(ctr[0]); c++)
				if (json_is_integer(json_object_get(d, ctr[c])))
					text_add(t, "shoal_vm_%s_%s_total{vm=\"%s\",%s=\"%zu\"} %lld\n",
						 k ? "net" : "disk", ctr[c], f->name,
						 k ? "net" : "disk", i,
						 (long long)json_integer_value(json_object_get(d, ctr[c])));
}

/* GET /metrics: the same figures in the Prometheus text format. */
int api_metrics_prometheus(struct api_call *c)
{
	size_t n;
	struct vm_figures *f = metrics_collect(c->h, NULL, &n);
	json_t *host = metrics_host_json(c->h, f, f ? n : 0), *v;
	struct text t = { 0 };
	const char *key;

	text_add(&t, "# HELP shoal_host_vms VMs defined on this host, by state.\n# TYPE shoal_host_vms gauge\n");
	json_object_foreach(json_object_get(host, "vms_by_state"), key, v)
		text_add(&t, "shoal_host_vms{state=\"%s\"} %lld\n", key, (long long)json_integer_value(v));
	text_add(&t, "# HELP shoal_host_memory_committed_bytes Guest memory of VMs not stopped.\n"
		 "# TYPE shoal_host_memory_committed_bytes gauge\nshoal_host_memory_committed_bytes %lld\n",
		 (long long)json_integer_value(json_object_get(host, "memory_committed_bytes")));
	text_add(&t, "# TYPE shoal_vm_up gauge\n# TYPE shoal_vm_restarts_total counter\n"
		 "# TYPE shoal_vm_memory_bytes gauge\n# TYPE shoal_vm_vcpu_seconds_total counter\n"
		 "# TYPE shoal_vm_exits_total counter\n# TYPE shoal_vm_resident_bytes gauge\n"
		 "# TYPE shoal_vm_guest_resident_bytes gauge\n# TYPE shoal_vm_device_io_total counter\n");
	for (size_t i = 0; f && i < n; i++) {
		text_add(&t, "shoal_vm_up{vm=\"%s\"} %d\n", f[i].name, f[i].m ? 1 : 0);
		text_add(&t, "shoal_vm_restarts_total{vm=\"%s\"} %u\n", f[i].name, f[i].restarts);
		text_add(&t, "shoal_vm_memory_bytes{vm=\"%s\"} %llu\n", f[i].name,
			 (unsigned long long)f[i].memory);
		if (!f[i].m)
			continue;
		prom_vcpus(&t, &f[i]);
		text_add(&t, "shoal_vm_resident_bytes{vm=\"%s\"} %lld\n", f[i].name,
			 (long long)json_integer_value(json_object_get(f[i].m, "rss_bytes")));
		text_add(&t, "shoal_vm_guest_resident_bytes{vm=\"%s\"} %lld\n", f[i].name,
			 (long long)json_integer_value(json_object_get(f[i].m, "guest_rss_bytes")));
		prom_devices(&t, &f[i]);
	}
	json_decref(host);
	metrics_free(f, n);
	return api_reply_raw(c, 200, "text/plain; version=0.0.4", t.buf, t.len);
}

/* ---- console ---- */

/* The tail (at most max bytes) of a file, for exited VMs. */
static int console_file_tail(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || !(*out = malloc(max + 1))) {
		close(fd);
		return -EIO;
	}
	off_t from = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	n = pread(fd, *out, max, from);
	close(fd);
	*len = n > 0 ? (size_t)n : 0;
	return 0;
}

/* The live ring buffer through console-log. */
static int console_live_log(const char *sock, size_t max, char **out, size_t *len,
			    char *err, size_t errlen)
{
	struct vmctl c;
	json_t *req, *r = NULL;
	json_int_t n;
	int rc;

	*out = NULL;
	rc = vmctl_connect(&c, sock, 2000, err, errlen);
	if (rc)
		return rc;
	req = json_pack("{s:s, s:I}", "cmd", "console-log", "max", (json_int_t)max);
	rc = vmctl_request(&c, req, &r, 5000, err, errlen);
	json_decref(req);
	n = rc ? 0 : json_integer_value(json_object_get(r, "bytes"));
	json_decref(r);
	if (!rc && (n < 0 || (size_t)n > CONSOLE_LOG_MAX)) {
		snprintf(err, errlen, "console-log: reply of %lld bytes", (long long)n);
		rc = -EPROTO;
	}
	if (!rc && !(*out = malloc((size_t)n + 1)))
		rc = -ENOMEM;
	if (!rc)
		rc = vmctl_read_exact(&c, *out, (size_t)n, 5000);
	vmctl_close(&c);
	if (rc) {
		free(*out);
		*out = NULL;
		return rc;
	}
	*len = (size_t)n;
	return 0;
}

/* The file in the VM's directory its serial console goes to, from its spec
 * ("console.log" unless the spec names one); `path` empty for "none". */
static void console_file_path(struct api_call *c, char *spec, char *path, size_t size)
{
	struct host_spec s;
	const char *name = "console.log";
	bool parsed = spec && host_spec_parse(spec, strlen(spec), false, &s, NULL) == 0;

	if (parsed)
		name = host_console_name(&s.cfg);
	path[0] = '\0';
	if (name)
		host_vm_path(c->h, c->name, name, path, size);
	if (parsed)
		host_spec_free(&s);
	free(spec);
}

/* GET /v1/vms/NAME/console: the ring while the VM runs, the log file after. */
int api_vm_console(struct api_call *c)
{
	const char *q_max = api_query(c, "max");
	long long max = CONSOLE_LOG_MAX;
	char path[4200], err[256], *spec;
	struct api_err e;
	struct hvm *vm;
	bool live;
	char *buf;
	size_t len;
	int rc;

	if (q_max && (max = api_parse_uint(q_max, CONSOLE_LOG_MAX)) < 0) {
		api_err_set(&e, 400, "invalid_request", "max: must be a byte count up to %u",
			    CONSOLE_LOG_MAX);
		return api_reply_error(c, &e);
	}
	vm = host_get(c->h, c->name, &e);
	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	spec = vm->rec.spec ? strdup(vm->rec.spec) : NULL;
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	rc = -1;
	if (live)
		rc = console_live_log(host_vm_path(c->h, c->name, "control.sock", path, sizeof(path)),
				      (size_t)max, &buf, &len, err, sizeof(err));
	console_file_path(c, spec, path, sizeof(path));
	if (rc && !path[0]) {       /* console "none": nothing was ever kept */
		buf = NULL;
		len = 0;
		rc = 0;
	} else if (rc) {            /* not running, or it just stopped: the file */
		rc = console_file_tail(path, (size_t)max, &buf, &len);
	}
	if (rc) {
		api_err_set(&e, 500, "internal", "vm \"%s\": console log: %s", c->name, strerror(-rc));
		return api_reply_error(c, &e);
	}
	return api_reply_raw(c, 200, "application/octet-stream", buf, len);
}

/* ---- console attach ---- */

struct console_proxy {
	struct vmctl vm;            /* the VMM's control connection, now the console */
	MHD_socket sock;            /* the client's upgraded socket */
	struct MHD_UpgradeResponseHandle *urh;
	char *extra;                /* client bytes libmicrohttpd read ahead */
	size_t extra_len;
};

/* Write everything, waiting with poll on a non-blocking socket. */
static int proxy_write(int fd, const char *p, size_t n)
{
	struct pollfd pf = { .fd = fd, .events = POLLOUT };
	ssize_t w;

	while (n) {
		w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (poll(&pf, 1, 10000) <= 0)
				return -1;
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Thread: copy both ways until one side closes. */
static void *console_proxy_thread(void *arg)
{
	struct console_proxy *p = arg;
	struct pollfd pf[2] = { { .fd = p->sock, .events = POLLIN },
				{ .fd = p->vm.fd, .events = POLLIN } };
	char buf[8192];
	ssize_t n;

	if ((p->vm.len && proxy_write(p->sock, p->vm.buf, p->vm.len)) ||
	    (p->extra_len && proxy_write(p->vm.fd, p->extra, p->extra_len)))
		goto out;
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents) {
			n = recv(p->sock, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n > 0 && proxy_write(p->vm.fd, buf, (size_t)n))
				break;
		}
		if (pf[1].revents) {
			n = recv(p->vm.fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n > 0 && proxy_write(p->sock, buf, (size_t)n))
				break;
		}
	}
out:
	vmctl_close(&p->vm);
	MHD_upgrade_action(p->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(p->extra);
	free(p);
	return NULL;
}

/* libmicrohttpd's upgrade callback: hand the socket to a proxy thread. */
static void console_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
			     const char *extra_in, size_t extra_in_size, MHD_socket sock,
			     struct MHD_UpgradeResponseHandle *urh)
{
	struct console_proxy *p = cls;
	pthread_t t;

	p->sock = sock;
	p->urh = urh;
	if (extra_in_size && (p->extra = malloc(extra_in_size))) {
		memcpy(p->extra, extra_in, extra_in_size);
		p->extra_len = extra_in_size;
	}
	if (pthread_create(&t, NULL, console_proxy_thread, p)) {
		vmctl_close(&p->vm);
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(p->extra);
		free(p);
		return;
	}
	pthread_detach(t);
}

/* Open the VMM side: console-attach on a fresh control connection. */
static struct console_proxy *console_open_vmm(struct api_call *c, bool force,
					      struct api_err *e)
{
	struct console_proxy *p = calloc(1, sizeof(*p));
	char sock[4200], err[256];
	json_t *req, *r = NULL;
	int rc;

	if (!p) {
		api_err_set(e, 500, "internal", "out of memory");
		return NULL;
	}
	host_vm_path(c->h, c->name, "control.sock", sock, sizeof(sock));
	rc = vmctl_connect(&p->vm, sock, 2000, err, sizeof(err));
	if (!rc) {
		req = json_pack("{s:s, s:b}", "cmd", "console-attach", "force", force);
		rc = vmctl_request(&p->vm, req, &r, 5000, err, sizeof(err));
		json_decref(req);
		json_decref(r);
	}
	if (rc) {
		vmctl_close(&p->vm);
		free(p);
		if (strstr(err, "attached elsewhere"))
			api_err_set(e, 409, "console_busy",
				    "vm \"%s\": the console is attached elsewhere (force=true takes it over)",
				    c->name);
		else
			api_err_set(e, 500, "vmm_error", "vm \"%s\": console: %s", c->name, err);
		return NULL;
	}
	return p;
}

/* GET /v1/vms/NAME/console/attach: VMM first (so a refusal is a 409), then 101. */
int api_vm_console_attach(struct api_call *c)
{
	const char *up = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Upgrade");
	struct console_proxy *p;
	struct MHD_Response *r;
	struct api_err e;
	struct hvm *vm;
	bool live;
	int ret = 0, force;

	if (!up || strcasecmp(up, "shoal-console")) {
		api_err_set(&e, 400, "invalid_request",
			    "console attach needs \"Connection: Upgrade\" and \"Upgrade: shoal-console\"");
		return api_reply_error(c, &e);
	}
	force = api_query(c, "force") ? api_parse_bool(api_query(c, "force")) : 0;
	if (force < 0) {
		api_err_set(&e, 400, "invalid_request", "force: not true or false");
		return api_reply_error(c, &e);
	}
	vm = host_get(c->h, c->name, &e);
	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	if (!live)
		api_err_set(&e, 409, "wrong_state", "vm \"%s\" is %s: no console to attach to",
			    c->name, hvm_state_name(vm->state));
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	if (!live || !(p = console_open_vmm(c, force, &e)))
		return api_reply_error(c, &e);
	r = MHD_create_response_for_upgrade(console_upgraded, p);
	if (!r) {
		vmctl_close(&p->vm);
		free(p);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "shoal-console");
	api_peer_upgraded(c->peer);      /* a stream now: no request deadline */
	ret = MHD_queue_response(c->conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	MHD_destroy_response(r);
	return ret;
}
