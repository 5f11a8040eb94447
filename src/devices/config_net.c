/*
 * config_net.c - a virtio-net interface's settings (struct vm_net): from
 * `--net tap=NAME|fd=N[,mac=MAC][,queues=N][,mode=M]`, from its JSON
 * object in "nets", and back to that object.
 *
 *   {"tap": "tap0", "mac": "52:54:00:12:34:56", "queues": 2, "mode": "modern"}
 *
 * Exactly one of "tap" (an interface name, at most 15 bytes: IFNAMSIZ) and
 * "fd" (an open TAP descriptor, 0 to 65535) names the back end; fd is -1
 * when there is none, and an empty slot holds fd -1 too.  The MAC is
 * unicast "xx:xx:xx:xx:xx:xx" or absent (null: the device makes one up).
 * Queue pairs 1 to 16.  The same checks run on the flag and the JSON form.
 *
 * Nothing is opened here: the TAP is attached by the device (devices/tap.c),
 * and the daemon refuses "fd" in a spec, since a number would name one of
 * its VMM's descriptors rather than the client's.
 */
#include "devices/config_dev.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/exitcode.h"

#define NET_TAP_NAME_MAX 15     /* IFNAMSIZ - 1 */
#define NET_FD_MAX       65535

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

static int net_set_str(char **dst, const char *v, struct error *e)
{
	char *s = strdup(v);

	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(*dst);
	*dst = s;
	return 0;
}

static int net_set_tap(struct vm_net *n, const char *what, const char *v, struct error *e)
{
	if (strlen(v) > NET_TAP_NAME_MAX)
		return error_set(e, EXIT_USAGE, "%s: TAP name '%s' is longer than %d bytes", what, v,
				 NET_TAP_NAME_MAX);
	return net_set_str(&n->tap, v, e);
}

static int net_set_mac(struct vm_net *n, const char *what, const char *v, struct error *e)
{
	if (!mac_valid(v))
		return error_set(e, EXIT_USAGE, "%s: '%s' is not a unicast MAC address", what, v);
	return net_set_str(&n->mac, v, e);
}

static int net_set_fd(struct vm_net *n, const char *what, long long fd, const char *text,
		      struct error *e)
{
	if (fd < 0 || fd > NET_FD_MAX)
		return error_set(e, EXIT_USAGE, "%s: fd '%s' is not a file descriptor number", what, text);
	n->fd = (int)fd;
	return 0;
}

/* ---- flags ---- */

static int net_flag_item(void *ctx, const char *k, const char *v, struct error *e)
{
	struct vm_net *n = ctx;
	char *end;
	long num;

	if (!v)
		return error_set(e, EXIT_USAGE, "--net: '%s' needs a value (tap=NAME, fd=N, mac=...)", k);
	if (!strcmp(k, "tap"))
		return net_set_tap(n, "--net", v, e);
	if (!strcmp(k, "fd")) {
		num = strtol(v, &end, 10);
		return net_set_fd(n, "--net", *v && !*end ? num : -1, v, e);
	}
	if (!strcmp(k, "mac"))
		return net_set_mac(n, "--net", v, e);
	if (!strcmp(k, "queues")) {
		num = strtol(v, &end, 10);
		return config_queues_check("--net", *v && !*end ? num : 0, v, &n->queues, e);
	}
	if (!strcmp(k, "mode"))
		return config_mode_parse("--net", v, &n->mode, e);
	return error_set(e, EXIT_USAGE, "--net: unknown option '%s'", k);
}

int net_config_from_flags(struct vm_net *n, const char *spec, struct error *e)
{
	int rc;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	rc = config_flags_each(spec, net_flag_item, n, e);
	if (!rc && !n->tap == (n->fd < 0))
		rc = error_set(e, EXIT_USAGE, "--net '%s': give exactly one of tap=NAME or fd=N", spec);
	if (rc)
		net_config_free(n);
	return rc;
}

/* ---- JSON ---- */

static int net_json_key(struct vm_net *n, const char *where, const char *k, json_t *v,
			struct error *e)
{
	char num[32];
	long long x;

	if (!strcmp(k, "tap")) {
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"tap\" must be a string", where);
		return net_set_tap(n, where, json_string_value(v), e);
	}
	if (!strcmp(k, "mac")) {
		if (json_is_null(v))
			return free(n->mac), n->mac = NULL, 0;
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"mac\" must be a string or null", where);
		return net_set_mac(n, where, json_string_value(v), e);
	}
	if (!strcmp(k, "fd") || !strcmp(k, "queues")) {
		if (!json_is_integer(v))
			return error_set(e, EXIT_USAGE, "%s: \"%s\" must be an integer", where, k);
		x = json_integer_value(v);
		snprintf(num, sizeof(num), "%lld", x);
		return k[0] == 'f' ? net_set_fd(n, where, x, num, e)
				   : config_queues_check(where, x, num, &n->queues, e);
	}
	if (!strcmp(k, "mode")) {
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"mode\" must be a string", where);
		return config_mode_parse(where, json_string_value(v), &n->mode, e);
	}
	return error_set(e, EXIT_USAGE, "%s: unknown key \"%s\"", where, k);
}

int net_config_from_json(struct vm_net *n, json_t *o, const char *where, struct error *e)
{
	const char *k;
	json_t *v;
	int rc = 0;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	if (!json_is_object(o))
		return error_set(e, EXIT_USAGE, "%s: must be an object", where);
	json_object_foreach(o, k, v) {
		rc = net_json_key(n, where, k, v, e);
		if (rc)
			break;
	}
	if (!rc && !n->tap == (n->fd < 0))
		rc = error_set(e, EXIT_USAGE, "%s: give exactly one of \"tap\" or \"fd\"", where);
	if (rc)
		net_config_free(n);
	return rc;
}

json_t *net_config_to_json(const struct vm_net *n)
{
	json_t *j = json_object();

	if (!j)
		return NULL;
	/* the order of the former renderer, so stored specs read the same */
	json_object_set_new(j, "mode", json_string(config_mode_name(n->mode)));
	if (n->tap)
		json_object_set_new(j, "tap", json_string(n->tap));
	if (n->fd >= 0)
		json_object_set_new(j, "fd", json_integer(n->fd));
	if (n->mac)
		json_object_set_new(j, "mac", json_string(n->mac));
	if (n->queues)
		json_object_set_new(j, "queues", json_integer(n->queues));
	return j;
}

void net_config_free(struct vm_net *n)
{
	free(n->tap);
	free(n->mac);
	memset(n, 0, sizeof(*n));
	n->fd = -1;
}

int net_config_new_mac(struct vm_net *n, const char *mac, const char *what, struct error *e)
{
	uint8_t b[6];
	char buf[18];

	if (!mac) {
		if (getrandom(b, sizeof(b), 0) != sizeof(b))
			return error_set(e, EXIT_HOST, "%s: no random bytes for a MAC", what);
		b[0] = (uint8_t)((b[0] & 0xfc) | 0x02);      /* unicast, locally administered */
		snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3],
			 b[4], b[5]);
		mac = buf;
	}
	if (net_set_mac(n, what, mac, e))
		return -1;
	n->new_mac = true;
	return 0;
}

void net_config_copy(struct vm_net *dst, const struct vm_net *src)
{
	*dst = *src;
	dst->tap = src->tap ? strdup(src->tap) : NULL;
	dst->mac = src->mac ? strdup(src->mac) : NULL;
}
