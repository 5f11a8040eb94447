/*
 * api_edit.c - the API's handlers for edit.c: PUT and PATCH of a VM's
 * spec, disks added and removed, reboot and reset.  Each answers with the
 * VM object (with its spec), or the error shape.
 */
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

/* DELETE /v1/vms/NAME/disks?path=PATH. */
int api_vm_disk_remove(struct api_call *c)
{
	struct api_err e;

	if (host_vm_disk_remove(c->h, c->name, api_query(c, "path"), &e))
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
