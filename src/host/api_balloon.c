/*
 * api_balloon.c - POST /v1/vms/{name}/balloon {"target": BYTES | "SIZE"}:
 * set the target of a running VM's virtio-balloon (docs/memory.md), how
 * much memory its guest should give back.  The daemon forwards it to the
 * VMM's control socket ({"cmd": "balloon", "target_bytes": N}) and answers
 * with the VMM's `balloon` object.
 *
 * What a client may not do: send anything but {"target": ...} (400), a
 * target that is not a byte count or a size (400), more than the VM's
 * memory (400), to a VM that is not running or paused (409 wrong_state) or
 * that has no balloon device (409 no_balloon).  The VM is claimed (busy)
 * only for the one request to its VMM.
 */
#include "host/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "base/size.h"
#include "host/hostutil.h"
#include "host/vmctl.h"

/* The body's target, in bytes: 0, or -1 with a 400 in `e`. */
static int balloon_body(const char *body, size_t len, uint64_t *target, struct api_err *e)
{
	json_t *o, *t;
	int rc = 0;

	if (len == 0)
		return api_err_set(e, 400, "invalid_request", "body: expected {\"target\": BYTES or SIZE}");
	if (api_body_object(body, len, &o, e))
		return -1;
	t = json_object_get(o, "target");
	if (!t || json_object_size(o) != 1)
		rc = api_err_set(e, 400, "invalid_request", "body: expected {\"target\": BYTES or SIZE} "
				 "and nothing else");
	else if (json_is_integer(t) && json_integer_value(t) >= 0)
		*target = (uint64_t)json_integer_value(t);
	else if (!json_is_string(t) || size_parse(json_string_value(t), target))
		rc = api_err_set(e, 400, "invalid_request", "target: expected a byte count or a size "
				 "such as \"512M\"");
	json_decref(o);
	return rc;
}

int api_vm_balloon(struct api_call *c)
{
	char sock[4200], err[256];
	struct api_err e;
	struct vmctl ctl;
	struct hvm *vm;
	uint64_t target;
	json_t *req, *reply = NULL, *b;
	int rc;

	if (balloon_body(c->body, c->body_len, &target, &e) || !(vm = host_get(c->h, c->name, &e)))
		return api_reply_error(c, &e);
	pthread_mutex_lock(&c->h->lock);
	if (target > vm->memory)
		rc = api_err_set(&e, 400, "invalid_request", "target: %llu bytes is more than the "
				 "VM's memory (%llu)", (unsigned long long)target,
				 (unsigned long long)vm->memory);
	else
		rc = hvm_claim_locked(vm, "balloon", 1u << HVM_RUNNING | 1u << HVM_PAUSED, &e);
	pthread_mutex_unlock(&c->h->lock);
	if (rc) {
		host_put(c->h, vm);
		return api_reply_error(c, &e);
	}
	host_vm_path(c->h, c->name, "control.sock", sock, sizeof(sock));
	req = json_pack("{s:s, s:I}", "cmd", "balloon", "target_bytes", (json_int_t)target);
	rc = vmctl_connect(&ctl, sock, 10000, err, sizeof(err));
	if (!rc) {
		rc = vmctl_request(&ctl, req, &reply, 10000, err, sizeof(err));
		vmctl_close(&ctl);
	}
	json_decref(req);
	hvm_release(c->h, vm);
	if (rc == -EPROTO && strstr(err, "no balloon device"))
		api_err_set(&e, 409, "no_balloon", "vm \"%s\" has no balloon device (\"balloon\": "
			    "true in its spec)", c->name);
	else if (rc)
		api_err_set(&e, 500, "vmm_error", "vm \"%s\": balloon: %s", c->name, err);
	if (rc) {
		json_decref(reply);
		return api_reply_error(c, &e);
	}
	b = json_incref(json_object_get(reply, "balloon"));
	json_decref(reply);
	return api_reply_json(c, 200, b ? b : json_object());
}
