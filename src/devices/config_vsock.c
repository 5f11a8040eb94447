/*
 * config_vsock.c - virtio-vsock's settings: the guest's context ID and the
 * host-side Unix socket, from `--vsock cid=N,socket=PATH`, from the JSON
 * "vsock" value, and back to it.
 *
 *   "vsock": {"cid": 3, "socket": "/run/vm1.vsock"}     or null: no device
 *
 * The two fields live in struct vm_config (vsock_cid, vsock_socket); cid 0
 * means no device.  A device needs both: a cid from 3 to 4294967294 (0 to 2
 * are the hypervisor, the local and the host addresses, and -1 is "any")
 * and a socket path.  The readers replace the caller's fields only when
 * they succeed, so a refused value leaves the settings as they were.
 *
 * The socket is not bound here: the device does that (devices/
 * virtio_vsock.c), confined like every other file the VMM opens, and the
 * daemon checks first that the socket's directory is one it allows.
 */
#include "devices/config_dev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

#define VSOCK_CID_MIN 3
#define VSOCK_CID_MAX 0xfffffffeULL

struct vsock_flags {
	uint32_t cid;
	char *socket_copy;     /* the new path, if the spec gives one */
};

static int vsock_flag_item(void *ctx, const char *k, const char *v, struct error *e)
{
	struct vsock_flags *f = ctx;
	char *end;

	if (!v)
		return error_set(e, EXIT_USAGE, "--vsock: '%s' needs a value (cid=N,socket=PATH)", k);
	if (!strcmp(k, "cid")) {
		unsigned long long cid = strtoull(v, &end, 10);

		if (!*v || *end || *v == '-' || cid < VSOCK_CID_MIN || cid > VSOCK_CID_MAX)
			return error_set(e, EXIT_USAGE, "--vsock: cid '%s' must be from 3 to 4294967294", v);
		f->cid = (uint32_t)cid;
		return 0;
	}
	if (!strcmp(k, "socket")) {
		char *s = strdup(v);

		if (!s)
			return error_set(e, EXIT_HOST, "out of memory");
		free(f->socket_copy);
		f->socket_copy = s;
		return 0;
	}
	return error_set(e, EXIT_USAGE, "--vsock: unknown option '%s'", k);
}

int vsock_config_from_flags(uint32_t *cid, char **socket, const char *spec, struct error *e)
{
	struct vsock_flags f = { .cid = *cid };
	int rc;

	rc = config_flags_each(spec, vsock_flag_item, &f, e);
	/* as before: a second --vsock may complete the first */
	if (!rc && (!f.cid || (!f.socket_copy && !*socket)))
		rc = error_set(e, EXIT_USAGE, "--vsock '%s': needs both cid=N and socket=PATH", spec);
	if (rc) {
		free(f.socket_copy);
		return -1;
	}
	*cid = f.cid;
	if (f.socket_copy) {
		free(*socket);
		*socket = f.socket_copy;
	}
	return 0;
}

int vsock_config_from_json(uint32_t *cid, char **socket, json_t *v, const char *where,
			   struct error *e)
{
	json_t *jcid, *jsock;
	const char *k;
	json_t *x;
	char *s;

	if (json_is_null(v)) {
		*cid = 0;
		return 0;
	}
	if (!json_is_object(v))
		return error_set(e, EXIT_USAGE, "%s: \"vsock\" must be {\"cid\": N, \"socket\": PATH} or null",
				 where);
	json_object_foreach(v, k, x)
		if (strcmp(k, "cid") && strcmp(k, "socket"))
			return error_set(e, EXIT_USAGE, "%s: vsock: unknown key \"%s\"", where, k);
	jcid = json_object_get(v, "cid");
	jsock = json_object_get(v, "socket");
	if (!jcid || !jsock)
		return error_set(e, EXIT_USAGE, "%s: vsock: needs both \"cid\" and \"socket\"", where);
	if (!json_is_integer(jcid) || json_integer_value(jcid) < VSOCK_CID_MIN ||
	    (unsigned long long)json_integer_value(jcid) > VSOCK_CID_MAX)
		return error_set(e, EXIT_USAGE, "%s: vsock: \"cid\" must be an integer from 3 to 4294967294",
				 where);
	if (!json_is_string(jsock) || !json_string_value(jsock)[0])
		return error_set(e, EXIT_USAGE, "%s: vsock: \"socket\" must be a path", where);
	s = strdup(json_string_value(jsock));
	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(*socket);
	*socket = s;
	*cid = (uint32_t)json_integer_value(jcid);
	return 0;
}

json_t *vsock_config_to_json(uint32_t cid, const char *socket)
{
	if (!cid)
		return json_null();
	return json_pack("{s:I, s:s}", "cid", (json_int_t)cid, "socket", socket ? socket : "");
}
