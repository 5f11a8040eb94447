/*
 * api_snapshot.c - the snapshot routes: POST /v1/vms/{name}/snapshot,
 * GET /v1/snapshots, GET/DELETE /v1/snapshots/{name} and POST
 * /v1/snapshots/{name}/restore and POST /v1/snapshots/{name}/clone.  Thin
 * wrappers around snapshots.c; the
 * snapshot object is the same in the list, show (which adds "spec") and
 * the answer to a snapshot.  A restore body may name the new VM's TAPs
 * ("taps", one per card in order) and a clone body a prefix for them
 * ("tap_prefix"); both are checked as names here and against the
 * snapshot's cards in snapshots.c.
 */
#include "host/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/spec.h"

/* The snapshot object: "restored_vms" names every VM restored from it,
 * "used_by" those that keep it from being deleted (hvm_uses_snapshot),
 * "disks" the files it depends on. */
static json_t *api_snapshot_json(struct host *h, struct snapshot_record *r, bool with_spec)
{
	char t[64];
	json_t *o = json_object(), *used = json_array(), *restored = json_array(), *spec;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nvms; i++) {
		struct hvm *vm = h->vms[i];

		if (strcmp(vm->rec.snapshot, r->name))
			continue;
		json_array_append_new(restored, json_string(vm->rec.name));
		if (hvm_uses_snapshot(vm, r->name))
			json_array_append_new(used, json_string(vm->rec.name));
	}
	pthread_mutex_unlock(&h->lock);
	json_object_set_new(o, "name", json_string(r->name));
	json_object_set_new(o, "vm", json_string(r->vm));
	json_object_set_new(o, "dir", json_string(r->dir ? r->dir : ""));
	json_object_set_new(o, "created_at", json_string(host_format_time(r->created_ms, t, sizeof(t))));
	json_object_set_new(o, "vcpus", json_integer(r->vcpus));
	json_object_set_new(o, "memory_bytes", json_integer(r->memory_bytes));
	json_object_set_new(o, "memory_data_bytes", json_integer(r->memory_data_bytes));
	json_object_set_new(o, "size_bytes", json_integer(r->size_bytes));
	json_object_set_new(o, "pause_ms", json_real(r->pause_ms));
	json_object_set_new(o, "total_ms", json_real(r->total_ms));
	json_object_set_new(o, "restored_vms", restored);
	json_object_set_new(o, "used_by", used);
	spec = r->disks ? json_loads(r->disks, 0, NULL) : NULL;
	json_object_set_new(o, "disks", json_is_array(spec) ? spec : json_array());
	if (!json_is_array(spec))
		json_decref(spec);
	if (with_spec) {
		spec = json_loads(r->spec ? r->spec : "{}", 0, NULL);
		json_object_set_new(o, "spec", spec ? spec : json_object());
	}
	return o;
}

/* Reply with snapshot `name` (200 or 201). */
static int api_reply_snapshot(struct api_call *c, const char *name, int status, bool with_spec)
{
	struct snapshot_record r;
	struct api_err e;
	json_t *o;
	int rc = db_snapshot_get(c->h->db, name, &r);

	if (rc) {
		api_err_set(&e, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "not_found" : "internal",
			    "snapshot %s: %s", name, rc == -ENOENT ? "not found" : "cannot read the store");
		return api_reply_error(c, &e);
	}
	o = api_snapshot_json(c->h, &r, with_spec);
	snapshot_record_free(&r);
	return api_reply_json(c, status, o);
}

/* A "taps" value: an array of up to HOST_TAPS_MAX TAP names into taps,
 * their count into *n.  0, or -1 with a 400 in `e`. */
#define HOST_TAPS_MAX 8
static int api_parse_taps(json_t *v, char (*taps)[HOST_TAP_NAME_MAX + 1], size_t *n,
			  struct api_err *e)
{
	json_t *t;
	size_t i;

	if (!json_is_array(v) || json_array_size(v) > HOST_TAPS_MAX)
		return api_err_set(e, 400, "invalid_request", "taps: expected a list of up to %d "
				   "TAP names, one per network card in order", HOST_TAPS_MAX);
	json_array_foreach(v, i, t) {
		if (!json_is_string(t) || !host_tap_name_valid(json_string_value(t)))
			return api_err_set(e, 400, "invalid_request", "taps[%zu]: 1 to %d letters, "
					   "digits, '.', '_' or '-'", i, HOST_TAP_NAME_MAX);
		snprintf(taps[i], sizeof(taps[i]), "%s", json_string_value(t));
	}
	*n = json_array_size(v);
	return 0;
}

/* A body {"name": NAME} (optional when `optional`; with "live": BOOL
 * too when `live` is not NULL, "taps": [TAP...] when `taps` is not NULL):
 * NAME into out ("" if absent).  0, or -1 with a 400 in `e`. */
static int api_parse_name_body(const char *body, size_t len, bool optional, char *out,
			       size_t size, bool *live, char (*taps)[HOST_TAP_NAME_MAX + 1],
			       size_t *ntaps, struct api_err *e)
{
	const char *key;
	json_t *o, *v;
	int rc = 0;

	out[0] = '\0';
	if (len == 0 && optional)
		return 0;
	if (len == 0)
		return api_err_set(e, 400, "invalid_request", "body: expected {\"name\": NEW}");
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, key, v) {
		if (live && !strcmp(key, "live")) {
			if (!json_is_boolean(v)) {
				rc = api_err_set(e, 400, "invalid_request", "live: expected true or false");
				break;
			}
			*live = json_is_true(v);
			continue;
		}
		if (taps && !strcmp(key, "taps")) {
			if ((rc = api_parse_taps(v, taps, ntaps, e)))
				break;
			continue;
		}
		if (strcmp(key, "name")) {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", key);
			break;
		}
		if (!json_is_string(v) || !host_name_valid(json_string_value(v))) {
			rc = api_err_set(e, 400, "invalid_request", "name: 1 to 63 letters, digits, "
					 "'.', '_' or '-', starting with a letter or digit");
			break;
		}
		snprintf(out, size, "%s", json_string_value(v));
	}
	json_decref(o);
	if (!rc && !out[0] && !optional)
		rc = api_err_set(e, 400, "invalid_request", "name: missing (the new VM's name)");
	return rc;
}

/* POST /v1/vms/NAME/snapshot [{"name": SNAP, "live": BOOL}]: 201 with the
 * snapshot (live: once its memory is written). */
int api_vm_snapshot(struct api_call *c)
{
	char snap[HOST_NAME_MAX_LEN + 1], taken[HOST_NAME_MAX_LEN + 1];
	struct api_err e;
	bool live = false;

	if (api_parse_name_body(c->body, c->body_len, true, snap, sizeof(snap), &live, NULL, NULL,
				&e) ||
	    host_vm_snapshot(c->h, c->name, snap[0] ? snap : NULL, live, taken, &e))
		return api_reply_error(c, &e);
	return api_reply_snapshot(c, taken, 201, false);
}

/* Records collected first, rendered after: the callback runs under the
 * database's lock, and rendering takes the host lock, which is taken
 * before the database's everywhere else. */
struct api_snap_list {
	struct snapshot_record *r;
	size_t n, cap;
	bool oom;
};

static void api_snapshot_list_one(void *arg, struct snapshot_record *r)
{
	struct api_snap_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct snapshot_record *t = realloc(l->r, cap * sizeof(*t));

		if (!t) {
			l->oom = true;
			snapshot_record_free(r);
			return;
		}
		l->r = t;
		l->cap = cap;
	}
	l->r[l->n++] = *r;
}

/* GET /v1/snapshots: every snapshot, oldest first. */
int api_snapshot_list(struct api_call *c)
{
	struct api_snap_list l = { 0 };
	struct api_err e;
	json_t *arr = json_array();
	int rc = db_snapshot_load_all(c->h->db, api_snapshot_list_one, &l);

	for (size_t i = 0; i < l.n; i++) {
		if (rc >= 0 && !l.oom)
			json_array_append_new(arr, api_snapshot_json(c->h, &l.r[i], false));
		snapshot_record_free(&l.r[i]);
	}
	free(l.r);
	if (rc < 0 || l.oom) {
		json_decref(arr);
		api_err_set(&e, 500, "internal", "cannot read the snapshot table");
		return api_reply_error(c, &e);
	}
	return api_reply_json(c, 200, json_pack("{s:o}", "snapshots", arr));
}

/* GET /v1/snapshots/NAME: the snapshot and the spec of the VM it was taken of. */
int api_snapshot_show(struct api_call *c)
{
	return api_reply_snapshot(c, c->name, 200, true);
}

/* DELETE /v1/snapshots/NAME: 204. */
int api_snapshot_delete(struct api_call *c)
{
	struct api_err e;

	if (host_snapshot_delete(c->h, c->name, &e))
		return api_reply_error(c, &e);
	return api_reply_raw(c, 204, "application/json", NULL, 0);
}

/* POST /v1/snapshots/NAME/restore {"name": NEW, "taps": [TAP...]}: 201
 * with the new VM, answered once its VMM serves its control socket. */
int api_snapshot_restore(struct api_call *c)
{
	char new_name[HOST_NAME_MAX_LEN + 1], taps[HOST_TAPS_MAX][HOST_TAP_NAME_MAX + 1];
	size_t ntaps = 0;
	struct api_err e;

	if (api_parse_name_body(c->body, c->body_len, false, new_name, sizeof(new_name), NULL,
				taps, &ntaps, &e) ||
	    host_snapshot_restore(c->h, c->name, new_name, taps, ntaps, &e))
		return api_reply_error(c, &e);
	snprintf(c->name, sizeof(c->name), "%s", new_name);
	return api_reply_vm(c, 201, true);
}

/* A clone body {"count": N, "prefix": P, "tap_prefix": T}: count
 * required, the prefixes optional ("" if absent).  0, or -1 with a 400
 * in `e`. */
static int api_parse_clone_body(const char *body, size_t len, unsigned *count, char *prefix,
				size_t size, char *tap_prefix, struct api_err *e)
{
	const char *key;
	json_t *o, *v;
	int rc = 0;

	*count = 0;
	prefix[0] = tap_prefix[0] = '\0';
	if (len == 0)
		return api_err_set(e, 400, "invalid_request", "body: expected {\"count\": N}");
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, key, v) {
		if (!strcmp(key, "count")) {
			json_int_t n = json_integer_value(v);

			if (!json_is_integer(v) || n < 1 || n > HOST_CLONE_MAX) {
				rc = api_err_set(e, 400, "invalid_request", "count: expected 1 to %d "
						 "clones", HOST_CLONE_MAX);
				break;
			}
			*count = (unsigned)n;
		} else if (!strcmp(key, "prefix")) {
			if (!json_is_string(v) || !host_name_valid(json_string_value(v))) {
				rc = api_err_set(e, 400, "invalid_request", "prefix: 1 to 63 letters, "
						 "digits, '.', '_' or '-', starting with a letter or digit");
				break;
			}
			snprintf(prefix, size, "%s", json_string_value(v));
		} else if (!strcmp(key, "tap_prefix")) {
			if (!json_is_string(v) || !host_tap_name_valid(json_string_value(v))) {
				rc = api_err_set(e, 400, "invalid_request", "tap_prefix: 1 to %d "
						 "letters, digits, '.', '_' or '-'", HOST_TAP_NAME_MAX);
				break;
			}
			snprintf(tap_prefix, HOST_TAP_NAME_MAX + 1, "%s", json_string_value(v));
		} else {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", key);
			break;
		}
	}
	json_decref(o);
	if (!rc && !*count)
		rc = api_err_set(e, 400, "invalid_request", "count: missing (how many clones)");
	return rc;
}

/* POST /v1/snapshots/NAME/clone {"count": N, "prefix": P, "tap_prefix":
 * T}: 201 with {"snapshot": NAME, "vms": [the new VMs]}, answered once
 * every clone's VMM serves its control socket. */
int api_snapshot_clone(struct api_call *c)
{
	char prefix[HOST_NAME_MAX_LEN + 1], (*names)[HOST_NAME_MAX_LEN + 1] = NULL;
	char tap_prefix[HOST_TAP_NAME_MAX + 1];
	struct api_err e;
	unsigned count;
	json_t *vms;

	if (api_parse_clone_body(c->body, c->body_len, &count, prefix, sizeof(prefix), tap_prefix,
				 &e) ||
	    host_snapshot_clone(c->h, c->name, count, prefix, tap_prefix, &names, &e))
		return api_reply_error(c, &e);
	vms = json_array();
	pthread_mutex_lock(&c->h->lock);
	for (unsigned i = 0; i < count; i++) {
		struct hvm *vm = host_find_locked(c->h, names[i]);

		json_array_append_new(vms, vm ? api_vm_json_locked(vm, false) :
				      json_pack("{s:s, s:s}", "name", names[i], "state", "deleted"));
	}
	pthread_mutex_unlock(&c->h->lock);
	free(names);
	return api_reply_json(c, 201, json_pack("{s:s, s:o}", "snapshot", c->name, "vms", vms));
}
