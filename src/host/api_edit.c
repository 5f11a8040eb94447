/*
 * api_edit.c - the API's handlers for edit.c: PUT and PATCH of a VM's
 * spec, disks added and removed, reboot and reset.  Each answers with the
 * VM object (with its spec), or the error shape.
 */
#include <stdlib.h>

#include "host/api.h"
#include "host/edit.h"

/* PUT /v1/vms/NAME: the whole spec. */
int api_vm_replace(struct api_call *c)
{
	struct api_err e;

	if (host_vm_edit(c->h, c->name, c->body, c->body_len, false, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, true);
}

/* PATCH /v1/vms/NAME: a JSON merge patch. */
int api_vm_patch(struct api_call *c)
{
	struct api_err e;

	if (host_vm_edit(c->h, c->name, c->body, c->body_len, true, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, true);
}

/* POST /v1/vms/NAME/disks: one disk object. */
int api_vm_disk_add(struct api_call *c)
{
	struct api_err e;

	if (host_vm_disk_add(c->h, c->name, c->body, c->body_len, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, true);
}

/* DELETE /v1/vms/NAME/disks?path=PATH or ?id=ID [&timeout_s=S: how long a
 * running VM's guest has to release it, 0 to 60, default 10]. */
int api_vm_disk_remove(struct api_call *c)
{
	const char *t = api_query(c, "timeout_s");
	struct api_err e;
	char *end = NULL;
	long timeout_s = t ? strtol(t, &end, 10) : 10;

	if (t && (!*t || *end || timeout_s < 0 || timeout_s > 60)) {
		api_err_set(&e, 400, "invalid_request", "timeout_s: expected seconds from 0 to 60");
		return api_reply_error(c, &e);
	}
	if (host_vm_disk_remove(c->h, c->name, api_query(c, "path"), api_query(c, "id"),
				(int)timeout_s, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, true);
}

/* POST /v1/vms/NAME/reboot: the stop body's timeout_s (force: reset). */
int api_vm_reboot(struct api_call *c)
{
	struct api_err e;
	bool force = false;
	int timeout_s = -1;

	if (api_parse_stop_body(c->body, c->body_len, &force, &timeout_s, &e) ||
	    host_vm_reboot(c->h, c->name, force, timeout_s, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}

/* POST /v1/vms/NAME/reset: forced stop, then start. */
int api_vm_reset(struct api_call *c)
{
	struct api_err e;

	if (host_vm_reboot(c->h, c->name, true, 0, &e))
		return api_reply_error(c, &e);
	return api_reply_vm(c, 200, false);
}
