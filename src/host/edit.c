/*
 * edit.c - changing a VM the daemon keeps: its spec while it is not running
 * (replace, merge patch, add or remove a disk), and reboot and reset while
 * it runs.
 *
 *   PUT    /v1/vms/NAME          the whole spec, replaced
 *   PATCH  /v1/vms/NAME          a JSON merge patch (RFC 7396) on the spec
 *   POST   /v1/vms/NAME/disks    one disk object, appended to "disks"
 *   DELETE /v1/vms/NAME/disks?path=P   the disk whose path is P, removed
 *                                (or ?id=ID: the disk whose "serial" is ID)
 *   (a running VM's disks are hot-added and hot-removed: disk_hotplug.c)
 *   POST   /v1/vms/NAME/reboot   a graceful stop (ACPI power button, then
 *                                forced after the timeout) and a start
 *   POST   /v1/vms/NAME/reset    a forced stop and a start at once
 *
 * Invariants:
 *   - a spec is edited only while the VM is created or exited (409
 *     otherwise; a disk added to or removed from a running VM is stored
 *     by disk_hotplug.c once its VMM made the change): a running VMM keeps the spec it was started with, and
 *     the record never says something the VMM is not running;
 *   - every new spec goes through host_spec_parse, the validator a create
 *     uses (files beneath --allow-dir, memory that fits, the boot
 *     protocol's limits): what an edit may produce is what a create may;
 *   - the name cannot change (a rename would orphan the VM's directory
 *     and its events), nor the daemon-set keys;
 *   - an edit is all or nothing: a refused one leaves the stored spec as it
 *     was, and an accepted one is persisted with an "edited" event before
 *     the answer;
 *   - reboot and reset are a stop and then a start of the VMM (a fresh
 *     VMM boots the spec; disk writes the guest had acknowledged are on
 *     disk, as after any stop).  Each half holds the VM's busy claim; a
 *     request that comes between them finds the VM exited, and a start
 *     that fails leaves it exited with the reason, as `vm start` would.
 */
#include "host/edit.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "host/api.h"
#include "host/spec.h"

/* RFC 7396: apply `patch` to `target` (both objects); null removes. */
static void merge_patch(json_t *target, json_t *patch)
{
	const char *k;
	json_t *v;

	json_object_foreach(patch, k, v) {
		json_t *cur = json_object_get(target, k);

		if (json_is_null(v))
			json_object_del(target, k);
		else if (json_is_object(v) && json_is_object(cur))
			merge_patch(cur, v);
		else
			json_object_set(target, k, json_is_object(v) ? json_deep_copy(v) : v);
	}
}

/* The VM's stored spec as a JSON object (new reference), or NULL with e. */
static json_t *stored_spec(struct host *h, const char *name, struct api_err *e)
{
	struct hvm *vm;
	json_t *j = NULL;

	vm = host_get(h, name, e);
	if (!vm)
		return NULL;
	pthread_mutex_lock(&h->lock);
	if (vm->rec.spec)
		j = json_loads(vm->rec.spec, 0, NULL);
	pthread_mutex_unlock(&h->lock);
	host_put(h, vm);
	if (!json_is_object(j)) {
		json_decref(j);
		api_err_set(e, 500, "internal", "vm \"%s\": its stored spec is not a JSON object", name);
		return NULL;
	}
	return j;
}

/* Validate `spec` (taken) as the new spec of NAME and store it. */
static int host_vm_set_spec(struct host *h, const char *name, json_t *spec, const char *what,
			    struct api_err *e)
{
	const char *given = json_string_value(json_object_get(spec, "name"));
	struct host_spec s;
	/* one reference for the whole edit: 404 before any 400; a delete in
	 * between is the claim's 404 */
	struct hvm *vm = host_get(h, name, e);
	char *text, detail[160];
	int rc;

	if (!vm) {
		json_decref(spec);
		return -1;
	}
	if (json_object_get(spec, "name") && (!given || strcmp(given, name))) {
		json_decref(spec);
		host_put(h, vm);
		return api_err_set(e, 400, "invalid_spec", "\"name\": a VM cannot be renamed (\"%s\")",
				   name);
	}
	json_object_set_new(spec, "name", json_string(name));
	text = json_dumps(spec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(spec);
	rc = text ? host_spec_parse(text, strlen(text), true, &s, e) :
		    api_err_set(e, 500, "internal", "out of memory");
	free(text);
	if (rc) {
		host_put(h, vm);
		return -1;
	}
	pthread_mutex_lock(&h->lock);
	rc = hvm_claim_locked(vm, "edit", 1u << HVM_CREATED | 1u << HVM_EXITED, e);
	if (!rc) {
		char *old = vm->rec.spec;

		vm->rec.spec = s.spec_json;
		s.spec_json = NULL;
		vm->cpus = s.cfg.cpus;
		vm->memory = s.cfg.memory;
		vm->restart = s.restart;
		snprintf(detail, sizeof(detail), "{\"change\": \"%s\"}", what);
		if (host_persist_locked(h, vm, "edited", detail)) {
			/* not stored: the record keeps the old spec */
			free(vm->rec.spec);
			vm->rec.spec = old;
			rc = api_err_set(e, 500, "internal", "vm \"%s\": the new spec could not be stored",
					 name);
		} else {
			free(old);
		}
	}
	pthread_mutex_unlock(&h->lock);
	host_spec_free(&s);
	if (!rc)
		hvm_release(h, vm);     /* drops host_get's reference too */
	else
		host_put(h, vm);
	return rc;
}

int host_vm_edit(struct host *h, const char *name, const char *body, size_t len, bool merge,
		 struct api_err *e)
{
	json_t *patch, *spec;

	if (api_body_object(body, len, &patch, e))
		return -1;
	if (!merge)
		return host_vm_set_spec(h, name, patch, "replaced", e);
	spec = stored_spec(h, name, e);
	if (!spec) {
		json_decref(patch);
		return -1;
	}
	merge_patch(spec, patch);
	json_decref(patch);
	return host_vm_set_spec(h, name, spec, "patched", e);
}

int host_vm_disk_add(struct host *h, const char *name, const char *body, size_t len,
		     struct api_err *e)
{
	json_t *disk, *spec, *disks;

	if (api_body_object(body, len, &disk, e))
		return -1;
	if (!json_is_string(json_object_get(disk, "path"))) {
		json_decref(disk);
		return api_err_set(e, 400, "invalid_spec", "a disk needs a \"path\" (a string)");
	}
	if (host_vm_is_running(h, name))        /* hotplug: disk_hotplug.c */
		return host_vm_disk_hotadd(h, name, disk, e);
	spec = stored_spec(h, name, e);
	if (!spec) {
		json_decref(disk);
		return -1;
	}
	disks = json_object_get(spec, "disks");
	if (!json_is_array(disks)) {
		disks = json_array();
		json_object_set_new(spec, "disks", disks);
	}
	json_array_append_new(disks, disk);
	return host_vm_set_spec(h, name, spec, "disk added", e);
}

int host_vm_disk_remove(struct host *h, const char *name, const char *path, const char *id,
			int timeout_s, struct api_err *e)
{
	const char *key = path ? "path" : "serial", *want = path ? path : id;
	json_t *spec, *disks, *d;
	size_t i;

	if (!want || !*want || (path && id))
		return api_err_set(e, 400, "invalid_request", "?path=PATH or ?id=ID (not both) names "
				   "the disk to remove");
	if (host_vm_is_running(h, name))        /* hotplug: disk_hotplug.c */
		return host_vm_disk_hotremove(h, name, want, timeout_s, e);
	spec = stored_spec(h, name, e);
	if (!spec)
		return -1;
	disks = json_object_get(spec, "disks");
	json_array_foreach(disks, i, d) {
		const char *p = json_string_value(json_object_get(d, "path"));

		if ((json_is_string(json_object_get(d, key)) &&
		     !strcmp(json_string_value(json_object_get(d, key)), want)) ||
		    (id && p && !strcmp(p, id))) {   /* an id may be the path */
			json_array_remove(disks, i);
			return host_vm_set_spec(h, name, spec, "disk removed", e);
		}
	}
	json_decref(spec);
	return api_err_set(e, 404, "not_found", "vm \"%s\" has no disk %s", name, want);
}

int host_vm_reboot(struct host *h, const char *name, bool force, int timeout_s,
		   struct api_err *e)
{
	struct hvm *vm = host_get(h, name, e);
	enum hvm_state st;

	if (!vm)
		return -1;
	pthread_mutex_lock(&h->lock);
	st = vm->state;
	pthread_mutex_unlock(&h->lock);
	host_put(h, vm);
	if (st != HVM_RUNNING && st != HVM_PAUSED)
		return api_err_set(e, 409, "wrong_state", "vm \"%s\" is %s: cannot %s it", name,
				   hvm_state_name(st), force ? "reset" : "reboot");
	if (host_vm_stop(h, name, force, force ? 0 : timeout_s, e))
		return -1;
	return host_vm_start(h, name, e);
}
