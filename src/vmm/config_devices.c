/*
 * config_devices.c - the device part of struct vm_config: disks, network
 * interfaces, rng, vsock and the virtio console, from `shoal run` flags
 * (comma-separated key=value specs, as kvmtool and QEMU users know) and
 * from the JSON config.  Both feed the same fields, and the same checks
 * run on both.
 */
#include "vmm/config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

static int parse_mode(const char *what, const char *v, enum vm_virtio_mode *m, struct error *e)
{
	if (!strcmp(v, "transitional"))
		*m = VM_VIRTIO_TRANSITIONAL;
	else if (!strcmp(v, "legacy"))
		*m = VM_VIRTIO_LEGACY;
	else if (!strcmp(v, "modern"))
		*m = VM_VIRTIO_MODERN;
	else
		return error_set(e, EXIT_USAGE, "%s: mode '%s' is not transitional, legacy or modern",
				 what, v);
	return 0;
}

static int parse_queues(const char *what, const char *v, int *q, struct error *e)
{
	char *end;
	long n = strtol(v, &end, 10);

	if (!*v || *end || n < 1 || n > 16)
		return error_set(e, EXIT_USAGE, "%s: queues '%s' is not a number from 1 to 16", what, v);
	*q = (int)n;
	return 0;
}

/* "52:54:00:12:34:56", unicast. */
static bool mac_valid(const char *s)
{
	unsigned b[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &tail) != 6 || strlen(s) != 17)
		return false;
	return !(b[0] & 1);
}

/* Split "a,b=c,d" in place; calls fn(key, value-or-NULL) for each item. */
static int spec_each(char *spec, int (*fn)(void *ctx, char *k, char *v, struct error *e),
		     void *ctx, struct error *e)
{
	char *save = NULL;

	for (char *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');

		if (eq)
			*eq++ = '\0';
		if (fn(ctx, item, eq, e))
			return -1;
	}
	return 0;
}

static int disk_item(void *ctx, char *k, char *v, struct error *e)
{
	struct vm_disk *d = ctx;

	if (!d->path && !v) {
		d->path = strdup(k);
		return 0;
	}
	if (!strcmp(k, "path") && v)
		return free(d->path), d->path = strdup(v), 0;
	if (!strcmp(k, "readonly") || !strcmp(k, "ro"))
		return d->readonly = !v || !strcmp(v, "on") || !strcmp(v, "true"), 0;
	if (!strcmp(k, "direct"))
		return d->direct = !v || !strcmp(v, "on") || !strcmp(v, "true"), 0;
	if (!strcmp(k, "serial") && v) {
		if (strlen(v) > 20)
			return error_set(e, EXIT_USAGE, "--disk: serial '%s' is longer than 20 bytes", v);
		return free(d->serial), d->serial = strdup(v), 0;
	}
	if (!strcmp(k, "queues") && v)
		return parse_queues("--disk", v, &d->queues, e);
	if (!strcmp(k, "cache") && v) {
		if (parse_size(v, &d->cache_bytes) || d->cache_bytes < (64u << 10))
			return error_set(e, EXIT_USAGE, "--disk: cache '%s' is not a size of at least 64K", v);
		return 0;
	}
	if (!strcmp(k, "mode") && v)
		return parse_mode("--disk", v, &d->mode, e);
	return error_set(e, EXIT_USAGE, "--disk: unknown option '%s'", k);
}

int vm_config_add_disk(struct vm_config *c, const char *spec, struct error *e)
{
	struct vm_disk *d;
	char *s;
	int rc;

	if (c->ndisks == VM_MAX_DISKS)
		return error_set(e, EXIT_USAGE, "--disk: at most %d disks", VM_MAX_DISKS);
	d = &c->disks[c->ndisks];
	memset(d, 0, sizeof(*d));
	s = strdup(spec);
	rc = s ? spec_each(s, disk_item, d, e) : -1;
	free(s);
	if (!rc && (!d->path || !*d->path))
		rc = error_set(e, EXIT_USAGE, "--disk '%s': no image path", spec);
	if (rc) {
		free(d->path);
		free(d->serial);
		memset(d, 0, sizeof(*d));
		return -1;
	}
	c->ndisks++;
	return 0;
}

static int net_item(void *ctx, char *k, char *v, struct error *e)
{
	struct vm_net *n = ctx;
	char *end;

	if (!v)
		return error_set(e, EXIT_USAGE, "--net: '%s' needs a value (tap=NAME, fd=N, mac=...)", k);
	if (!strcmp(k, "tap")) {
		if (strlen(v) >= 16)
			return error_set(e, EXIT_USAGE, "--net: TAP name '%s' is longer than 15 bytes", v);
		return free(n->tap), n->tap = strdup(v), 0;
	}
	if (!strcmp(k, "fd")) {
		long fd = strtol(v, &end, 10);

		if (!*v || *end || fd < 0 || fd > 65535)
			return error_set(e, EXIT_USAGE, "--net: fd '%s' is not a file descriptor number", v);
		n->fd = (int)fd;
		return 0;
	}
	if (!strcmp(k, "mac")) {
		if (!mac_valid(v))
			return error_set(e, EXIT_USAGE, "--net: '%s' is not a unicast MAC address", v);
		return free(n->mac), n->mac = strdup(v), 0;
	}
	if (!strcmp(k, "queues"))
		return parse_queues("--net", v, &n->queues, e);
	if (!strcmp(k, "mode"))
		return parse_mode("--net", v, &n->mode, e);
	return error_set(e, EXIT_USAGE, "--net: unknown option '%s'", k);
}

int vm_config_add_net(struct vm_config *c, const char *spec, struct error *e)
{
	struct vm_net *n;
	char *s;
	int rc;

	if (c->nnets == VM_MAX_NETS)
		return error_set(e, EXIT_USAGE, "--net: at most %d interfaces", VM_MAX_NETS);
	n = &c->nets[c->nnets];
	memset(n, 0, sizeof(*n));
	n->fd = -1;
	s = strdup(spec);
	rc = s ? spec_each(s, net_item, n, e) : -1;
	free(s);
	if (!rc && !n->tap == (n->fd < 0))
		rc = error_set(e, EXIT_USAGE, "--net '%s': give exactly one of tap=NAME or fd=N", spec);
	if (rc) {
		free(n->tap);
		free(n->mac);
		memset(n, 0, sizeof(*n));
		return -1;
	}
	c->nnets++;
	return 0;
}

static int vsock_item(void *ctx, char *k, char *v, struct error *e)
{
	struct vm_config *c = ctx;
	char *end;

	if (!v)
		return error_set(e, EXIT_USAGE, "--vsock: '%s' needs a value (cid=N,socket=PATH)", k);
	if (!strcmp(k, "cid")) {
		unsigned long cid = strtoul(v, &end, 10);

		if (!*v || *end || cid < 3 || cid > 0xfffffffeUL)
			return error_set(e, EXIT_USAGE, "--vsock: cid '%s' must be from 3 to 4294967294", v);
		c->vsock_cid = (uint32_t)cid;
		return 0;
	}
	if (!strcmp(k, "socket"))
		return free(c->vsock_socket), c->vsock_socket = strdup(v), 0;
	return error_set(e, EXIT_USAGE, "--vsock: unknown option '%s'", k);
}

int vm_config_set_vsock(struct vm_config *c, const char *spec, struct error *e)
{
	char *s = strdup(spec);
	int rc = s ? spec_each(s, vsock_item, c, e) : -1;

	free(s);
	if (!rc && (!c->vsock_cid || !c->vsock_socket))
		rc = error_set(e, EXIT_USAGE, "--vsock '%s': needs both cid=N and socket=PATH", spec);
	return rc;
}

/* ---- JSON ---- */

static const char *mode_name(enum vm_virtio_mode m)
{
	return m == VM_VIRTIO_LEGACY ? "legacy" : m == VM_VIRTIO_MODERN ? "modern" : "transitional";
}

/* Render one JSON object as a flag spec and reuse the flag parser, so the
 * two front ends cannot drift apart. */
/* One JSON scalar as flag text; -1 for objects, arrays and null. */
static int json_scalar_text(json_t *v, char *out, size_t cap)
{
	if (json_is_string(v))
		snprintf(out, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(out, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_boolean(v))
		snprintf(out, cap, "%s", json_is_true(v) ? "true" : "false");
	else
		return -1;
	return 0;
}

/* Render one JSON object as a flag spec ("first=..,k=v,..") and reuse the
 * flag parser, so the two front ends cannot drift apart.  False booleans
 * are left out (the flag form has no "off"). */
static int json_obj_to_spec(json_t *o, const char *what, const char *first_key, char *out,
			    size_t cap, struct error *e)
{
	const char *k;
	json_t *v;
	size_t n = 0;
	char val[4200];

	if (!json_is_object(o))
		return error_set(e, EXIT_USAGE, "\"%s\" entries must be objects", what);
	out[0] = '\0';
	v = json_object_get(o, first_key);
	if (v && json_scalar_text(v, val, sizeof(val)) == 0)
		n += (size_t)snprintf(out, cap, "%s=%s", first_key, val);
	json_object_foreach(o, k, v) {
		if (json_scalar_text(v, val, sizeof(val)))
			return error_set(e, EXIT_USAGE, "\"%s\": \"%s\" has a value of the wrong type", what, k);
		if (strchr(val, ','))
			return error_set(e, EXIT_USAGE, "\"%s\": \"%s\" may not contain a comma", what, k);
		if (!strcmp(k, first_key) || (json_is_boolean(v) && !json_is_true(v)))
			continue;
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s=%s", n ? "," : "", k, val);
	}
	return n >= cap ? error_set(e, EXIT_USAGE, "\"%s\" entry too long", what) : 0;
}

int vm_config_json_devices(struct vm_config *c, const char *name, const char *key, json_t *v,
			   struct error *e);

int vm_config_json_devices(struct vm_config *c, const char *name, const char *key, json_t *v,
			   struct error *e)
{
	char spec[8400];
	size_t i;
	json_t *it;

	if (!strcmp(key, "disks") || !strcmp(key, "nets")) {
		bool disks = key[0] == 'd';

		if (!json_is_array(v))
			return error_set(e, EXIT_USAGE, "%s: \"%s\" must be an array", name, key);
		json_array_foreach(v, i, it) {
			if (json_obj_to_spec(it, key, disks ? "path" : "tap", spec, sizeof(spec), e) ||
			    (disks ? vm_config_add_disk(c, spec, e) : vm_config_add_net(c, spec, e)))
				return error_prefix(e, "%s: %s[%zu]", name, key, i);
		}
		return 0;
	}
	if (!strcmp(key, "rng")) {
		if (json_is_boolean(v))
			return c->rng = json_is_true(v), 0;
		if (json_is_object(v) && json_is_integer(json_object_get(v, "rate")) &&
		    json_integer_value(json_object_get(v, "rate")) > 0 && json_object_size(v) == 1) {
			c->rng = true;
			c->rng_rate = (uint32_t)json_integer_value(json_object_get(v, "rate"));
			return 0;
		}
		return error_set(e, EXIT_USAGE, "%s: \"rng\" must be true, false or {\"rate\": BYTES_PER_S}", name);
	}
	if (!strcmp(key, "vsock")) {
		if (json_is_null(v))
			return c->vsock_cid = 0, 0;
		if (json_obj_to_spec(v, key, "cid", spec, sizeof(spec), e) ||
		    vm_config_set_vsock(c, spec, e))
			return error_prefix(e, "%s", name);
		return 0;
	}
	if (!strcmp(key, "virtio_console")) {
		if (json_is_null(v))
			return free(c->vconsole), c->vconsole = NULL, 0;
		if (!json_is_string(v) || strncmp(json_string_value(v), "file:", 5))
			return error_set(e, EXIT_USAGE, "%s: \"virtio_console\" must be \"file:PATH\"", name);
		free(c->vconsole);
		c->vconsole = strdup(json_string_value(v));
		return 0;
	}
	return 1;   /* not a device key */
}

void vm_config_devices_to_json(const struct vm_config *c, json_t *o);

void vm_config_devices_to_json(const struct vm_config *c, json_t *o)
{
	json_t *disks = json_array(), *nets = json_array();

	for (int i = 0; i < c->ndisks; i++) {
		const struct vm_disk *d = &c->disks[i];
		json_t *j = json_pack("{s:s, s:b, s:s}", "path", d->path, "readonly", d->readonly,
				      "mode", mode_name(d->mode));

		if (d->serial)
			json_object_set_new(j, "serial", json_string(d->serial));
		if (d->queues)
			json_object_set_new(j, "queues", json_integer(d->queues));
		if (d->cache_bytes)
			json_object_set_new(j, "cache", json_integer((json_int_t)d->cache_bytes));
		if (d->direct)
			json_object_set_new(j, "direct", json_true());
		json_array_append_new(disks, j);
	}
	for (int i = 0; i < c->nnets; i++) {
		const struct vm_net *n = &c->nets[i];
		json_t *j = json_pack("{s:s}", "mode", mode_name(n->mode));

		if (n->tap)
			json_object_set_new(j, "tap", json_string(n->tap));
		if (n->fd >= 0)
			json_object_set_new(j, "fd", json_integer(n->fd));
		if (n->mac)
			json_object_set_new(j, "mac", json_string(n->mac));
		if (n->queues)
			json_object_set_new(j, "queues", json_integer(n->queues));
		json_array_append_new(nets, j);
	}
	json_object_set_new(o, "disks", disks);
	json_object_set_new(o, "nets", nets);
	json_object_set_new(o, "rng", c->rng_rate ? json_pack("{s:i}", "rate", c->rng_rate)
						  : json_boolean(c->rng));
	json_object_set_new(o, "vsock", c->vsock_cid ? json_pack("{s:I, s:s}", "cid",
			    (json_int_t)c->vsock_cid, "socket", c->vsock_socket) : json_null());
	json_object_set_new(o, "virtio_console", c->vconsole ? json_string(c->vconsole) : json_null());
}

void vm_config_devices_free(struct vm_config *c);

void vm_config_devices_free(struct vm_config *c)
{
	for (int i = 0; i < c->ndisks; i++) {
		free(c->disks[i].path);
		free(c->disks[i].serial);
	}
	for (int i = 0; i < c->nnets; i++) {
		free(c->nets[i].tap);
		free(c->nets[i].mac);
	}
	free(c->vsock_socket);
	free(c->vconsole);
}

void vm_config_devices_copy(struct vm_config *dst, const struct vm_config *src);

void vm_config_devices_copy(struct vm_config *dst, const struct vm_config *src)
{
	for (int i = 0; i < src->ndisks; i++) {
		dst->disks[i].path = src->disks[i].path ? strdup(src->disks[i].path) : NULL;
		dst->disks[i].serial = src->disks[i].serial ? strdup(src->disks[i].serial) : NULL;
	}
	for (int i = 0; i < src->nnets; i++) {
		dst->nets[i].tap = src->nets[i].tap ? strdup(src->nets[i].tap) : NULL;
		dst->nets[i].mac = src->nets[i].mac ? strdup(src->nets[i].mac) : NULL;
	}
	dst->vsock_socket = src->vsock_socket ? strdup(src->vsock_socket) : NULL;
	dst->vconsole = src->vconsole ? strdup(src->vconsole) : NULL;
}
