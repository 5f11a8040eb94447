/*
 * api_vm.c - the /v1/vms handlers: inventory and lifecycle.
 *
 * Each handler parses its query and body, calls the lifecycle function
 * (lifecycle.c) and renders the VM as JSON.  The VM object is the same in
 * every answer (list items, show, and the result of every operation), with
 * "spec" added by show.
 */
#include "host/api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/memmgr.h"
#include "host/vmctl.h"

/* RFC 3339 UTC with milliseconds, or JSON null for 0. */
static json_t *api_time(int64_t ms)
{
	char buf[64];

	return ms ? json_string(host_format_time(ms, buf, sizeof(buf))) : json_null();
}

/* The VM object (lock held). */
json_t *api_vm_json_locked(struct hvm *vm, bool with_spec)
{
	bool live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED ||
		    vm->state == HVM_STOPPING;
	json_t *o = json_object(), *spec;

	json_object_set_new(o, "name", json_string(vm->rec.name));
	json_object_set_new(o, "state", json_string(hvm_state_name(vm->state)));
	json_object_set_new(o, "busy", vm->busy ? json_string(vm->busy) : json_null());
	json_object_set_new(o, "cpus", json_integer(vm->cpus));
	json_object_set_new(o, "memory", json_integer((json_int_t)vm->memory));
	json_object_set_new(o, "restart", json_string(restart_policy_name(vm->restart)));
	json_object_set_new(o, "pid", live && vm->rec.vmm_pid ? json_integer(vm->rec.vmm_pid) : json_null());
	json_object_set_new(o, "created_at", api_time(vm->rec.created_ms));
	json_object_set_new(o, "started_at", api_time(vm->rec.started_ms));
	json_object_set_new(o, "uptime_s", live && vm->rec.started_ms ?
			    json_real((double)(host_now_ms() - vm->rec.started_ms) / 1000.0) :
			    json_null());
	json_object_set_new(o, "restarts", json_integer(vm->rec.restarts));
	json_object_set_new(o, "restored_from", vm->rec.snapshot[0] ?
			    json_string(vm->rec.snapshot) : json_null());
	json_object_set_new(o, "clone", json_boolean(vm->rec.snapshot[0] &&
						     vm->rec.snapshot_clone));
	if (vm->rec.exited_ms)
		json_object_set_new(o, "last_exit", json_pack("{s:i, s:s, s:o}",
			"status", vm->rec.exit_status,
			"reason", vm->rec.exit_reason ? vm->rec.exit_reason : "",
			"at", api_time(vm->rec.exited_ms)));
	else
		json_object_set_new(o, "last_exit", json_null());
	if (vm->mig.on)         /* an outgoing migration's progress (migration.c) */
		json_object_set_new(o, "migration", json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f}",
			"to", vm->mig.to, "state", vm->mig.state, "round", vm->mig.round,
			"bytes", vm->mig.bytes, "memory_bytes", vm->mig.memory_bytes,
			"dirty_pages", vm->mig.dirty_pages, "dirty_rate", vm->mig.dirty_rate,
			"expected_downtime_ms", vm->mig.expected_downtime_ms));
	if (vm->in_doubt)       /* held paused after an incoming migration (migration.c) */
		json_object_set_new(o, "in_doubt", json_true());
	if (with_spec) {
		spec = json_loads(vm->rec.spec ? vm->rec.spec : "{}", 0, NULL);
		json_object_set_new(o, "spec", spec ? spec : json_object());
	}
	return o;
}

/* Reply with the VM object of `name` (after an operation). */
int api_reply_vm(struct api_call *c, int status, bool with_spec)
{
	struct api_err e;
	struct hvm *vm = host_get(c->h, c->name, &e);
	json_t *o;

	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	o = api_vm_json_locked(vm, with_spec);
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	return api_reply_json(c, status, o);
}

/* A boolean query argument; -1 (and a 400 queued in *ret) if malformed. */
static int api_query_bool(struct api_call *c, const char *key, int *ret)
{
	const char *v = api_query(c, key);
	struct api_err e;
	int b;

	if (!v)
		return 0;
	b = api_parse_bool(v);
	if (b < 0) {
		api_err_set(&e, 400, "invalid_request", "%s: \"%.40s\" is not true or false", key, v);
		*ret = api_reply_error(c, &e);
	}
	return b;
}

/* GET /v1/vms: the inventory (no VMM is asked: cheap at any size). */
int api_vm_list(struct api_call *c)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&c->h->lock);
	for (size_t i = 0; i < c->h->nvms; i++)
		json_array_append_new(arr, api_vm_json_locked(c->h->vms[i], false));
	pthread_mutex_unlock(&c->h->lock);
	return api_reply_json(c, 200, json_pack("{s:o}", "vms", arr));
}

/* POST /v1/vms[?start=true]: 201 with the VM; a failed start leaves it exited. */
int api_vm_create(struct api_call *c)
{
	struct api_err e;
	struct hvm *vm;
	int ret = 0, start = api_query_bool(c, "start", &ret);

	if (start < 0)
		return ret;
	vm = host_vm_create(c->h, c->body, c->body_len, &e);
	if (!vm)
		return api_reply_error(c, &e);
	snprintf(c->name, sizeof(c->name), "%s", vm->rec.name);
	host_put(c->h, vm);
	if (start && host_vm_start(c->h, c->name, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 201, true);
}

/* Live figures for show: one metrics call, short deadline. */
static void api_vm_add_stats(struct api_call *c, json_t *o)
{
	char sock[4200], err[256];
	json_t *r, *v, *vc, *mm;
	json_int_t ns = 0, exits = 0;
	size_t i;

	host_vm_path(c->h, c->name, "control.sock", sock, sizeof(sock));
	if (vmctl_call(sock, "metrics", &r, 500, err, sizeof(err)))
		return;
	json_array_foreach(json_object_get(r, "vcpus"), i, vc) {
		ns += json_integer_value(json_object_get(vc, "cpu_time_ns"));
		exits += json_integer_value(json_object_get(vc, "exits"));
	}
	v = json_object();
	json_object_set_new(v, "vcpu_time_ns", json_integer(ns));
	json_object_set_new(v, "exits", json_integer(exits));
	json_object_set(v, "rss_bytes", json_object_get(r, "rss_bytes") ?: json_null());
	json_object_set(v, "guest_rss_bytes", json_object_get(r, "guest_rss_bytes") ?: json_null());
	if (json_is_object(json_object_get(r, "balloon")))   /* a VM with a balloon */
		json_object_set(v, "balloon", json_object_get(r, "balloon"));
	if ((mm = memmgr_vm_json(c->h, c->name)))   /* shoald --memory-budget */
		json_object_set_new(v, "memory_manager", mm);
	json_object_set_new(o, "stats", v);
	json_decref(r);
}

/* GET /v1/vms/NAME: the VM, its spec, and live figures while it runs. */
int api_vm_show(struct api_call *c)
{
	struct api_err e;
	struct hvm *vm = host_get(c->h, c->name, &e);
	bool live;
	json_t *o;

	if (!vm)
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	o = api_vm_json_locked(vm, true);
	live = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	hvm_put_locked(vm);
	pthread_mutex_unlock(&c->h->lock);
	if (live)
		api_vm_add_stats(c, o);
	else
		json_object_set_new(o, "stats", json_null());
	return api_reply_json(c, 200, o);
}

/* DELETE /v1/vms/NAME[?force=true]: 204. */
int api_vm_delete(struct api_call *c)
{
	struct api_err e;
	int ret = 0, force = api_query_bool(c, "force", &ret);

	if (force < 0)
		return ret;
	if (host_vm_delete(c->h, c->name, force, &e))
		return api_reply_error(c, &e);
	return api_reply_raw(c, 204, "application/json", NULL, 0);
}

/* POST /v1/vms/NAME/start: answers once the VMM serves its control socket. */
int api_vm_start(struct api_call *c)
{
	struct api_err e;

	if (host_vm_start(c->h, c->name, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}

/* POST /v1/vms/NAME/stop: answers once the VMM has exited. */
int api_vm_stop(struct api_call *c)
{
	struct api_err e;
	bool force = false;
	int timeout_s = -1;

	if (api_parse_stop_body(c->body, c->body_len, &force, &timeout_s, &e) ||
	    host_vm_stop(c->h, c->name, force, timeout_s, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}

/* POST /v1/vms/NAME/pause. */
int api_vm_pause(struct api_call *c)
{
	struct api_err e;

	if (host_vm_pause(c->h, c->name, true, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}

/* POST /v1/vms/NAME/resume. */
int api_vm_resume(struct api_call *c)
{
	struct api_err e;

	if (host_vm_pause(c->h, c->name, false, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}

/* GET /v1/version. */
int api_version(struct api_call *c)
{
	size_t n;

	pthread_mutex_lock(&c->h->lock);
	n = c->h->nvms;
	pthread_mutex_unlock(&c->h->lock);
	return api_reply_json(c, 200, json_pack("{s:s, s:s, s:I, s:I, s:s}",
		"version", SHOALD_VERSION, "api", "v1", "vms", (json_int_t)n,
		"uptime_ms", (json_int_t)(host_now_ms() - c->h->started_ms),
		"state_dir", c->h->state_dir));
}
