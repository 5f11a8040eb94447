/*
 * disk_hotplug.c - a disk added to or removed from a RUNNING VM the daemon
 * keeps: the running half of POST /v1/vms/NAME/disks and DELETE
 * /v1/vms/NAME/disks (edit.c has the stopped half and sends a running VM
 * here).  The VMM's side is vmm/hotplug.c (ACPI PCI hotplug of a
 * virtio-blk function, docs/devices.md "Disk hotplug").
 *
 * Add: the disk object ("path", "readonly", "serial": the disk's id) is
 * appended to the stored spec and the whole spec checked as a create
 * checks it (host_spec_parse: an absolute path beneath --allow-dir, a
 * regular file, its backing chain); the daemon then opens the image itself
 * (read-only or read-write, as the disk will be), asks the block layer's
 * lock bytes whether another process holds it in a way the VM cannot
 * share (409 image_locked), and sends the open file to the VMM with its
 * disk-add request (SCM_RIGHTS): a jailed VMM opens no paths.  The VMM
 * takes the image's locks on that file and plugs it; only then is the new
 * spec stored, with an "edited" event, so a restart boots the disk.
 *
 * Remove: the disk is found in the spec by its id (the serial), its path,
 * or the VMM's device id (virtio-blkN); the VMM is asked to unplug it and
 * the daemon waits, up to timeout_s, for the guest to release it (its _EJ0:
 * the device leaves the VMM's disk-list).  Only then does the spec lose it.
 * A guest that does not release it in time keeps the disk (409
 * guest_did_not_release; the spec still has it, and the VMM keeps asking
 * nothing more: a later DELETE asks again).
 *
 * Invariants: the VM is claimed (busy) for the whole exchange, so no stop,
 * start, edit or snapshot runs in between and the record changes only
 * after the VMM did what it says; the stored spec never names a disk the
 * VMM refused; only disks the VMM hot-added are removed from a running VM
 * (a disk it booted with goes on a stopped VM); a hot-added disk takes
 * "path", "readonly" and "serial" only (the rest applies at a start and
 * would make the record say what the VMM is not running).
 *
 * A client may not: name a file outside the allowed directories (403),
 * reuse a path or an id another disk of the VM has (409 duplicate), add to
 * or remove from a paused VM (409 wrong_state: its guest cannot see the
 * change), or hold the VM busy longer than its timeout (at most 60 s).
 */
#include "host/edit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/lock.h"
#include "host/api.h"
#include "host/hostutil.h"
#include "host/spec.h"
#include "host/vmctl.h"

#define HOTPLUG_TIMEOUT_MS 10000   /* one VMM round trip */

bool host_vm_is_running(struct host *h, const char *name)
{
	struct api_err e;
	struct hvm *vm = host_get(h, name, &e);
	bool running;

	if (!vm)
		return false;
	pthread_mutex_lock(&h->lock);
	running = vm->state == HVM_RUNNING || vm->state == HVM_PAUSED;
	pthread_mutex_unlock(&h->lock);
	host_put(h, vm);
	return running;
}

/* Claim NAME (running only) and copy its stored spec; NULL with `e`. */
static struct hvm *claim(struct host *h, const char *name, const char *op, json_t **spec,
			 struct api_err *e)
{
	struct hvm *vm = host_get(h, name, e);
	int rc;

	if (!vm)
		return NULL;
	pthread_mutex_lock(&h->lock);
	if (vm->state == HVM_PAUSED && !vm->busy && !vm->deleted)
		rc = api_err_set(e, 409, "wrong_state", "vm \"%s\" is paused: cannot %s; resume it "
				 "first (the guest must see the disk come or go)", name, op);
	else
		rc = hvm_claim_locked(vm, op, 1u << HVM_RUNNING, e);
	*spec = rc ? NULL : json_loads(vm->rec.spec ? vm->rec.spec : "", 0, NULL);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_put(h, vm);
		return NULL;
	}
	if (!json_is_object(*spec)) {
		json_decref(*spec);
		hvm_release(h, vm);
		api_err_set(e, 500, "internal", "vm \"%s\": its stored spec is not a JSON object", name);
		return NULL;
	}
	return vm;
}

/* Store `spec_json` (taken) as the claimed VM's spec, with an "edited"
 * event whose detail is `detail` (taken). */
static int store(struct host *h, struct hvm *vm, char *spec_json, json_t *detail,
		 struct api_err *e)
{
	char *old, *d = json_dumps(detail, JSON_COMPACT);
	int rc = 0;

	json_decref(detail);
	pthread_mutex_lock(&h->lock);
	old = vm->rec.spec;
	vm->rec.spec = spec_json;
	if (host_persist_locked(h, vm, "edited", d)) {
		vm->rec.spec = old;
		free(spec_json);
		rc = api_err_set(e, 500, "internal", "vm \"%s\": the VMM made the change but the new "
				 "spec could not be stored", vm->rec.name);
	} else {
		free(old);
	}
	pthread_mutex_unlock(&h->lock);
	free(d);
	return rc;
}

/* One request to the claimed VM's VMM, with `fd` (>= 0) sent along. */
static int vmm_call(struct host *h, const char *name, json_t *req, int fd, json_t **reply,
		    char *err, size_t errlen)
{
	char sock[4200];
	struct vmctl ctl;
	int rc;

	*reply = NULL;
	host_vm_path(h, name, "control.sock", sock, sizeof(sock));
	rc = vmctl_connect(&ctl, sock, HOTPLUG_TIMEOUT_MS, err, errlen);
	if (rc)
		return rc;
	rc = fd >= 0 ? vmctl_request_fd(&ctl, req, fd, reply, HOTPLUG_TIMEOUT_MS, err, errlen)
		     : vmctl_request(&ctl, req, reply, HOTPLUG_TIMEOUT_MS, err, errlen);
	vmctl_close(&ctl);
	return rc;
}

static const char *str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Another process holds the image in a way this VM's disk cannot share? */
static int check_lock(int fd, const char *name, const char *path, bool ro, struct api_err *e)
{
	struct lock_state o;
	unsigned need = LOCK_PERM_CONSISTENT_READ | (ro ? 0 : LOCK_PERM_WRITE);

	if (lock_query(fd, &o))
		return 0;       /* no answer: the VMM's own lock_set decides */
	if ((o.unshared & need) || (o.held & LOCK_PERM_WRITE))
		return api_err_set(e, 409, "image_locked", "vm \"%s\": disk %s: the image is locked "
				   "by another process (%s it); not added", name, path,
				   o.held & LOCK_PERM_WRITE ? "it writes" : "it refuses others to use");
	return 0;
}

int host_vm_disk_hotadd(struct host *h, const char *name, json_t *disk, struct api_err *e)
{
	const char *k, *path = str(disk, "path"), *serial = str(disk, "serial");
	json_t *v, *spec = NULL, *disks, *d, *req, *reply;
	bool ro = json_is_true(json_object_get(disk, "readonly")) ||
		  json_is_true(json_object_get(disk, "ro"));
	struct host_spec s;
	struct hvm *vm;
	char *text, err[512];
	size_t i;
	int fd = -1, rc;

	json_object_foreach(disk, k, v)
		if (strcmp(k, "path") && strcmp(k, "readonly") && strcmp(k, "ro") &&
		    strcmp(k, "serial")) {
			json_decref(disk);
			return api_err_set(e, 400, "invalid_spec", "vm \"%s\" is running: a disk added "
					   "to it takes \"path\", \"readonly\" and \"serial\" only, "
					   "not \"%s\"", name, k);
		}
	vm = claim(h, name, "add a disk to", &spec, e);
	if (!vm) {
		json_decref(disk);
		return -1;
	}
	disks = json_object_get(spec, "disks");
	if (!json_is_array(disks)) {
		disks = json_array();
		json_object_set_new(spec, "disks", disks);
	}
	json_array_foreach(disks, i, d) {
		if (str(d, "path") && !strcmp(str(d, "path"), path))
			rc = api_err_set(e, 409, "duplicate", "vm \"%s\": disk %s: the VM has this "
					 "image already (disks[%zu])", name, path, i);
		else if (serial && str(d, "serial") && !strcmp(str(d, "serial"), serial))
			rc = api_err_set(e, 409, "duplicate", "vm \"%s\": disk %s: id \"%s\" is "
					 "disks[%zu]'s already", name, path, serial, i);
		else
			continue;
		json_decref(disk);
		goto out;
	}
	json_array_append(disks, disk);
	text = json_dumps(spec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	rc = text ? host_spec_parse(text, strlen(text), true, &s, e) :
		    api_err_set(e, 500, "internal", "out of memory");
	free(text);
	if (rc) {       /* the check's message, with the VM and the disk */
		char msg[sizeof(e->msg)], code[sizeof(e->code)];

		snprintf(msg, sizeof(msg), "%s", e->msg);
		snprintf(code, sizeof(code), "%s", e->code);
		api_err_set(e, e->http, code, "vm \"%s\": disk %.200s: %s", name, path, msg);
		json_decref(disk);
		goto out;
	}
	/* the same confinement as the check above: an open beneath the
	 * allowed directories, of the file the check saw */
	fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		rc = api_err_set(e, errno == ENOENT ? 404 : errno == EACCES ? 403 : 400,
				 errno == ENOENT ? "not_found" : "invalid_spec",
				 "vm \"%s\": disk %s: %s", name, path, strerror(errno));
	else
		rc = check_lock(fd, name, path, ro, e);
	if (rc) {
		json_decref(disk);
		host_spec_free(&s);
		goto out;
	}
	req = json_pack("{s:s, s:s, s:b}", "cmd", "disk-add", "path", path, "readonly", ro);
	if (serial)
		json_object_set_new(req, "serial", json_string(serial));
	rc = vmm_call(h, name, req, fd, &reply, err, sizeof(err));
	json_decref(req);
	close(fd);
	if (rc == -EPROTO && strstr(err, "the most it takes"))
		rc = api_err_set(e, 409, "no_slot", "vm \"%s\": disk %s: no free hotplug slot (%s)",
				 name, path, err);
	else if (rc == -EPROTO && (strstr(err, "another process") || strstr(err, "locked")))
		rc = api_err_set(e, 409, "image_locked", "vm \"%s\": disk %s: %s", name, path, err);
	else if (rc)
		rc = api_err_set(e, rc == -EPROTO ? 409 : 500, rc == -EPROTO ? "hotplug_refused" :
				 "vmm_error", "vm \"%s\": disk %s: %s", name, path, err);
	if (!rc) {
		json_t *detail = json_pack("{s:s, s:s, s:s}", "change", "disk hot-added",
					   "disk", path, "id", str(reply, "id") ?: "");

		rc = store(h, vm, s.spec_json, detail, e);
		s.spec_json = NULL;
	}
	json_decref(reply);
	json_decref(disk);
	host_spec_free(&s);
out:
	json_decref(spec);
	hvm_release(h, vm);
	return rc;
}

/* The VMM's entry for `path` in its disk-list (new reference), or NULL. */
static json_t *vmm_disk(struct host *h, const char *name, const char *path, char *err,
			size_t errlen, int *rc)
{
	json_t *req = json_pack("{s:s}", "cmd", "disk-list"), *reply, *d, *out = NULL;
	size_t i;

	*rc = vmm_call(h, name, req, -1, &reply, err, errlen);
	json_decref(req);
	json_array_foreach(json_object_get(reply, "disks"), i, d)
		if (str(d, "path") && !strcmp(str(d, "path"), path))
			out = json_incref(d);
	json_decref(reply);
	return out;
}

int host_vm_disk_hotremove(struct host *h, const char *name, const char *id, int timeout_s,
			   struct api_err *e)
{
	json_t *spec, *disks, *d, *vd = NULL, *req, *reply;
	const char *path = NULL;
	struct hvm *vm;
	char err[512], vid[32];
	size_t i, at = 0;
	int rc = 0;

	vm = claim(h, name, "remove a disk from", &spec, e);
	if (!vm)
		return -1;
	disks = json_object_get(spec, "disks");
	json_array_foreach(disks, i, d)
		if ((str(d, "path") && !strcmp(str(d, "path"), id)) ||
		    (str(d, "serial") && !strcmp(str(d, "serial"), id))) {
			path = str(d, "path");
			at = i;
			break;
		}
	if (!path && !strncmp(id, "virtio-blk", 10)) {
		/* the VMM's id: its disk-list says which path */
		json_t *r2, *x;

		req = json_pack("{s:s}", "cmd", "disk-list");
		rc = vmm_call(h, name, req, -1, &r2, err, sizeof(err));
		json_decref(req);
		json_array_foreach(json_object_get(r2, "disks"), i, x)
			if (str(x, "id") && !strcmp(str(x, "id"), id) && str(x, "path")) {
				size_t j;

				json_array_foreach(disks, j, d)
					if (str(d, "path") && !strcmp(str(d, "path"), str(x, "path"))) {
						path = str(d, "path");
						at = j;
					}
			}
		json_decref(r2);
	}
	if (!path) {
		rc = api_err_set(e, 404, "not_found", "vm \"%s\" has no disk %s (an id, a path or "
				 "the VMM's virtio-blkN)", name, id);
		goto out;
	}
	vd = vmm_disk(h, name, path, err, sizeof(err), &rc);
	if (rc) {
		rc = api_err_set(e, 500, "vmm_error", "vm \"%s\": disk %s: %s", name, id, err);
		goto out;
	}
	if (!vd || !json_is_true(json_object_get(vd, "hotplugged"))) {
		rc = api_err_set(e, 409, "not_hotplugged", "vm \"%s\": disk %s: it was not hot-added "
				 "(the VM booted with it); stop the VM to remove it", name, id);
		goto out;
	}
	snprintf(vid, sizeof(vid), "%s", str(vd, "id") ?: "");
	req = json_pack("{s:s, s:s}", "cmd", "disk-remove", "id", vid);
	rc = vmm_call(h, name, req, -1, &reply, err, sizeof(err));
	json_decref(req);
	json_decref(reply);
	if (rc) {
		rc = api_err_set(e, rc == -EPROTO ? 409 : 500, rc == -EPROTO ? "hotplug_refused" :
				 "vmm_error", "vm \"%s\": disk %s: %s", name, id, err);
		goto out;
	}
	/* the guest's part: it runs the slot's _EJ0 once its driver let go */
	for (int ms = 0;; ms += 100) {
		json_t *still = vmm_disk(h, name, path, err, sizeof(err), &rc);

		json_decref(still);
		if (rc) {
			rc = api_err_set(e, 500, "vmm_error", "vm \"%s\": disk %s: %s", name, id, err);
			goto out;
		}
		if (!still)
			break;
		if (ms >= timeout_s * 1000) {
			rc = api_err_set(e, 409, "guest_did_not_release", "vm \"%s\": disk %s (%s): "
					 "the guest did not release the device within %d s; it "
					 "stays in the VM and in its spec", name, id, vid, timeout_s);
			goto out;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
	}
	{
		json_t *detail = json_pack("{s:s, s:s, s:s}", "change", "disk hot-removed",
					   "disk", path, "id", vid);
		char *text;

		json_array_remove(disks, at);   /* path points into it: after its last use */
		text = json_dumps(spec, JSON_COMPACT | JSON_PRESERVE_ORDER);
		rc = text ? store(h, vm, text, detail, e) :
			    (json_decref(detail), api_err_set(e, 500, "internal", "out of memory"));
	}
out:
	json_decref(vd);
	json_decref(spec);
	hvm_release(h, vm);
	return rc;
}
