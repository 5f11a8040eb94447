/*
 * api_metrics.c - the API's figures: GET /v1/metrics and
 * GET /v1/vms/NAME/metrics (JSON), GET /metrics (Prometheus text).
 *
 * The table is copied under host->lock into a flat array first; then, with
 * no lock held, each running or paused VMM is asked for its own metrics
 * over its control socket (500 ms each), so a slow or hung VMM delays the
 * answer but never the daemon.  A VMM that does not answer is reported with
 * the daemon's figures only (and shoal_vm_up 0).
 *
 * The daemon passes the VMM's device, disk and net figures through by name
 * and never names a device type: what a VMM reports is what a client sees.
 */
#include "host/api.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/memmgr.h"
#include "host/vmctl.h"

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
			       "nets", "unclaimed_io", "balloon" };

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

/* The Prometheus families, in the order GET /metrics writes them.  Each
 * is written whole (HELP, TYPE, then every VM's series), as the text
 * format wants; a family with no series (no VM runs, no VMM reports a
 * disk) is left out.  The disk and net families are named after the keys
 * of the VMM's "disks" and "nets" entries (docs/vmm-control.md). */
enum prom_family {
	PF_HOST_VMS, PF_HOST_MEMORY, PF_VM_UP, PF_VM_RESTARTS, PF_VM_MEMORY, PF_VCPU_SECONDS,
	PF_EXITS, PF_RESIDENT, PF_GUEST_RESIDENT, PF_DEVICE_IO,
	PF_DISK_READ_BYTES, PF_DISK_WRITE_BYTES, PF_DISK_READ_OPS, PF_DISK_WRITE_OPS,
	PF_DISK_FLUSH_OPS,
	PF_NET_RX_BYTES, PF_NET_TX_BYTES, PF_NET_RX_PACKETS, PF_NET_TX_PACKETS, PF_NET_DROPPED,
	PF_BALLOON_TARGET, PF_BALLOON_ACTUAL, PF_BALLOON_RELEASED, PF_BALLOON_REPORTED,
	PF_BALLOON_GUEST,
	PF_COUNT
};

static const struct {
	const char *name, *type, *help;
	const char *key;        /* disk and net families: the VMM's key */
} prom_families[PF_COUNT] = {
	[PF_HOST_VMS] = { "shoal_host_vms", "gauge", "VMs defined on this host, by state.", NULL },
	[PF_HOST_MEMORY] = { "shoal_host_memory_committed_bytes", "gauge",
			     "Guest memory of VMs neither created nor exited.", NULL },
	[PF_VM_UP] = { "shoal_vm_up", "gauge",
		       "1 if the VM's VMM answered for this scrape, else 0 (not running, or no answer in 500 ms).",
		       NULL },
	[PF_VM_RESTARTS] = { "shoal_vm_restarts_total", "counter",
			     "Restarts by the VM's restart policy.", NULL },
	[PF_VM_MEMORY] = { "shoal_vm_memory_bytes", "gauge", "Guest memory the VM's spec gives it.",
			   NULL },
	[PF_VCPU_SECONDS] = { "shoal_vm_vcpu_seconds_total", "counter",
			      "CPU time of each vCPU thread.", NULL },
	[PF_EXITS] = { "shoal_vm_exits_total", "counter", "VM exits of each vCPU.", NULL },
	[PF_RESIDENT] = { "shoal_vm_resident_bytes", "gauge",
			  "Resident set of the VM's VMM process, guest pages included.", NULL },
	[PF_GUEST_RESIDENT] = { "shoal_vm_guest_resident_bytes", "gauge",
				"Guest memory pages resident on the host.", NULL },
	[PF_DEVICE_IO] = { "shoal_vm_device_io_total", "counter",
			   "Port and MMIO accesses of the guest to each device, reads and writes.",
			   NULL },
	[PF_DISK_READ_BYTES] = { "shoal_vm_disk_read_bytes_total", "counter",
				 "Bytes the guest read from each disk.", "read_bytes" },
	[PF_DISK_WRITE_BYTES] = { "shoal_vm_disk_write_bytes_total", "counter",
				  "Bytes the guest wrote to each disk.", "write_bytes" },
	[PF_DISK_READ_OPS] = { "shoal_vm_disk_read_ops_total", "counter",
			       "Read requests of the guest to each disk.", "read_ops" },
	[PF_DISK_WRITE_OPS] = { "shoal_vm_disk_write_ops_total", "counter",
				"Write requests of the guest to each disk.", "write_ops" },
	[PF_DISK_FLUSH_OPS] = { "shoal_vm_disk_flush_ops_total", "counter",
				"Flush requests of the guest to each disk.", "flush_ops" },
	[PF_NET_RX_BYTES] = { "shoal_vm_net_rx_bytes_total", "counter",
			      "Bytes each NIC received for the guest.", "rx_bytes" },
	[PF_NET_TX_BYTES] = { "shoal_vm_net_tx_bytes_total", "counter",
			      "Bytes each NIC sent for the guest.", "tx_bytes" },
	[PF_NET_RX_PACKETS] = { "shoal_vm_net_rx_packets_total", "counter",
				"Frames each NIC received for the guest.", "rx_packets" },
	[PF_NET_TX_PACKETS] = { "shoal_vm_net_tx_packets_total", "counter",
				"Frames each NIC sent for the guest.", "tx_packets" },
	[PF_NET_DROPPED] = { "shoal_vm_net_dropped_total", "counter",
			     "Frames each NIC dropped, both ways.", "dropped" },
	[PF_BALLOON_TARGET] = { "shoal_vm_balloon_target_bytes", "gauge",
				"Memory the host asks the guest to give back through its balloon.",
				"target_bytes" },
	[PF_BALLOON_ACTUAL] = { "shoal_vm_balloon_actual_bytes", "gauge",
				"Memory the guest's balloon holds now.", "actual_bytes" },
	[PF_BALLOON_RELEASED] = { "shoal_vm_balloon_released_bytes_total", "counter",
				  "Guest memory given back to the host (holes punched): inflations and free page reports.",
				  "released_bytes" },
	[PF_BALLOON_REPORTED] = { "shoal_vm_balloon_reported_bytes_total", "counter",
				  "Free memory the guest reported through free page reporting.",
				  "reported_bytes" },
	[PF_BALLOON_GUEST] = { "shoal_vm_balloon_guest_memory_bytes", "gauge",
			       "The guest's own memory figures, as its balloon driver last reported them.",
			       NULL },
};

/* The guest's memory statistics (the balloon's stats queue) that are
 * amounts of memory; the others (faults, swap, scans) are left to JSON. */
static const char *const prom_balloon_stats[] = {
	"free_memory", "total_memory", "available_memory", "disk_caches",
};

/* A label value as the text format quotes it: \, " and newline escaped. */
static const char *prom_esc(const char *s, char *buf, size_t size)
{
	size_t n = 0;

	for (; s && *s && n + 3 < size; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n')
			buf[n++] = '\\';
		buf[n++] = *s == '\n' ? 'n' : *s;
	}
	buf[n] = '\0';
	return buf;
}

/* Per-vCPU series of one VM. */
static void prom_vcpus(struct text *fam, const struct vm_figures *f)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(f->m, "vcpus"), i, v) {
		text_add(&fam[PF_VCPU_SECONDS], "shoal_vm_vcpu_seconds_total{vm=\"%s\",vcpu=\"%zu\"} %.9f\n",
			 f->name, i, (double)json_integer_value(json_object_get(v, "cpu_time_ns")) / 1e9);
		text_add(&fam[PF_EXITS], "shoal_vm_exits_total{vm=\"%s\",vcpu=\"%zu\"} %lld\n", f->name, i,
			 (long long)json_integer_value(json_object_get(v, "exits")));
	}
}

/* The series of the families from `first` to `last` for each entry of the
 * VMM's array `kind` ("disks", "nets"), labelled `label` with the entry's
 * "name" (the name the JSON figures give it). */
static void prom_entries(struct text *fam, const struct vm_figures *f, const char *kind,
			 const char *label, enum prom_family first, enum prom_family last)
{
	char name[256], idx[32];
	const char *n;
	json_t *d, *v;
	size_t i;

	json_array_foreach(json_object_get(f->m, kind), i, d) {
		n = json_string_value(json_object_get(d, "name"));
		if (!n) {
			snprintf(idx, sizeof(idx), "%zu", i);
			n = idx;
		}
		prom_esc(n, name, sizeof(name));
		for (enum prom_family k = first; k <= last; k++) {
			v = json_object_get(d, prom_families[k].key);
			if (json_is_integer(v))
				text_add(&fam[k], "%s{vm=\"%s\",%s=\"%s\"} %lld\n", prom_families[k].name,
					 f->name, label, name, (long long)json_integer_value(v));
		}
	}
}

/* Device, disk and network series of one VM (whatever the VMM reports). */
static void prom_devices(struct text *fam, const struct vm_figures *f)
{
	char dev[256];
	const char *key;
	json_t *v;

	json_object_foreach(json_object_get(f->m, "devices"), key, v) {
		prom_esc(key, dev, sizeof(dev));
		text_add(&fam[PF_DEVICE_IO], "shoal_vm_device_io_total{vm=\"%s\",device=\"%s\",op=\"read\"} %lld\n",
			 f->name, dev, (long long)(json_integer_value(json_object_get(v, "io_reads")) +
						   json_integer_value(json_object_get(v, "mmio_reads"))));
		text_add(&fam[PF_DEVICE_IO], "shoal_vm_device_io_total{vm=\"%s\",device=\"%s\",op=\"write\"} %lld\n",
			 f->name, dev, (long long)(json_integer_value(json_object_get(v, "io_writes")) +
						   json_integer_value(json_object_get(v, "mmio_writes"))));
	}
	prom_entries(fam, f, "disks", "disk", PF_DISK_READ_BYTES, PF_DISK_FLUSH_OPS);
	prom_entries(fam, f, "nets", "net", PF_NET_RX_BYTES, PF_NET_DROPPED);
}

/* The balloon's series of one VM, when it has a balloon: the device's
 * figures, and the guest's own memory figures once its driver sent any. */
static void prom_balloon(struct text *fam, const struct vm_figures *f)
{
	json_t *b = json_object_get(f->m, "balloon"), *stats, *v;

	if (!json_is_object(b))
		return;
	for (int k = PF_BALLOON_TARGET; k <= PF_BALLOON_REPORTED; k++)
		text_add(&fam[k], "%s{vm=\"%s\"} %lld\n", prom_families[k].name, f->name,
			 (long long)json_integer_value(json_object_get(b, prom_families[k].key)));
	stats = json_object_get(b, "stats");
	for (size_t i = 0; i < sizeof(prom_balloon_stats) / sizeof(prom_balloon_stats[0]); i++)
		if (json_is_integer(v = json_object_get(stats, prom_balloon_stats[i])))
			text_add(&fam[PF_BALLOON_GUEST], "%s{vm=\"%s\",stat=\"%s\"} %lld\n",
				 prom_families[PF_BALLOON_GUEST].name, f->name, prom_balloon_stats[i],
				 (long long)json_integer_value(v));
}

/* GET /metrics: the same figures in the Prometheus text format. */
int api_metrics_prometheus(struct api_call *c)
{
	size_t n;
	struct vm_figures *f = metrics_collect(c->h, NULL, &n);
	json_t *host = metrics_host_json(c->h, f, f ? n : 0), *v;
	struct text fam[PF_COUNT] = { { 0 } }, t = { 0 };
	char *mm;
	const char *key;

	json_object_foreach(json_object_get(host, "vms_by_state"), key, v)
		text_add(&fam[PF_HOST_VMS], "shoal_host_vms{state=\"%s\"} %lld\n", key,
			 (long long)json_integer_value(v));
	text_add(&fam[PF_HOST_MEMORY], "shoal_host_memory_committed_bytes %lld\n",
		 (long long)json_integer_value(json_object_get(host, "memory_committed_bytes")));
	for (size_t i = 0; f && i < n; i++) {
		text_add(&fam[PF_VM_UP], "shoal_vm_up{vm=\"%s\"} %d\n", f[i].name, f[i].m ? 1 : 0);
		text_add(&fam[PF_VM_RESTARTS], "shoal_vm_restarts_total{vm=\"%s\"} %u\n", f[i].name,
			 f[i].restarts);
		text_add(&fam[PF_VM_MEMORY], "shoal_vm_memory_bytes{vm=\"%s\"} %llu\n", f[i].name,
			 (unsigned long long)f[i].memory);
		if (!f[i].m)
			continue;
		prom_vcpus(fam, &f[i]);
		text_add(&fam[PF_RESIDENT], "shoal_vm_resident_bytes{vm=\"%s\"} %lld\n", f[i].name,
			 (long long)json_integer_value(json_object_get(f[i].m, "rss_bytes")));
		text_add(&fam[PF_GUEST_RESIDENT], "shoal_vm_guest_resident_bytes{vm=\"%s\"} %lld\n",
			 f[i].name, (long long)json_integer_value(json_object_get(f[i].m, "guest_rss_bytes")));
		prom_devices(fam, &f[i]);
		prom_balloon(fam, &f[i]);
	}
	for (int k = 0; k < PF_COUNT; k++) {
		if (fam[k].len)
			text_add(&t, "# HELP %s %s\n# TYPE %s %s\n%s", prom_families[k].name,
				 prom_families[k].help, prom_families[k].name, prom_families[k].type,
				 fam[k].buf);
		free(fam[k].buf);
	}
	mm = memmgr_prom_text(c->h);   /* the memory manager's series (memmgr.c) */
	if (mm && *mm)
		text_add(&t, "%s", mm);
	free(mm);
	json_decref(host);
	metrics_free(f, n);
	return api_reply_raw(c, 200, "text/plain; version=0.0.4", t.buf, t.len);
}
