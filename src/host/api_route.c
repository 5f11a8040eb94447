/*
 * api_route.c - the route table and the pure parsing around it: path
 * templates, query values, the stop body, and the bytes of an error
 * answer.  No libmicrohttpd calls here, so the fuzzer and the unit tests can
 * call it directly.
 *
 * Error messages quote what the client sent (a path, a key), and a client
 * may send any bytes, including a valid character cut in half by a "%.200s".
 * JSON text must be UTF-8, so api_error_body scrubs the message first;
 * without that, jansson refuses to encode it and the answer was a fallback
 * with a wrong length (issue 16).
 */
#include "host/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/hoststore.h"
#include "host/net.h"
#include "host/spec.h"

#define R HOST_ROLE_READ
#define O HOST_ROLE_OPERATE
#define A HOST_ROLE_ADMIN
const struct api_route api_routes[] = {
	{ "GET",    "/v1/version",                   api_version,           R },
	{ "GET",    "/v1/vms",                       api_vm_list,           R },
	{ "POST",   "/v1/vms",                       api_vm_create,         A },
	{ "GET",    "/v1/vms/{name}",                api_vm_show,           R },
	{ "DELETE", "/v1/vms/{name}",                api_vm_delete,         A },
	{ "POST",   "/v1/vms/{name}/start",          api_vm_start,          O },
	{ "POST",   "/v1/vms/{name}/stop",           api_vm_stop,           O },
	{ "POST",   "/v1/vms/{name}/pause",          api_vm_pause,          O },
	{ "POST",   "/v1/vms/{name}/resume",         api_vm_resume,         O },
	{ "PUT",    "/v1/vms/{name}",                api_vm_replace,        A },
	{ "PATCH",  "/v1/vms/{name}",                api_vm_patch,          A },
	{ "POST",   "/v1/vms/{name}/disks",          api_vm_disk_add,       A },
	{ "DELETE", "/v1/vms/{name}/disks",          api_vm_disk_remove,    A },
	{ "POST",   "/v1/vms/{name}/reboot",         api_vm_reboot,         O },
	{ "POST",   "/v1/vms/{name}/reset",          api_vm_reset,          O },
	{ "GET",    "/v1/vms/{name}/console",        api_vm_console,        O },
	{ "GET",    "/v1/vms/{name}/console/attach", api_vm_console_attach, O },
	{ "GET",    "/v1/vms/{name}/metrics",        api_vm_metrics,        R },
	{ "POST",   "/v1/vms/{name}/balloon",        api_vm_balloon,        O },
	{ "POST",   "/v1/vms/{name}/snapshot",       api_vm_snapshot,       A },
	{ "GET",    "/v1/snapshots",                 api_snapshot_list,     R },
	{ "GET",    "/v1/snapshots/{name}",          api_snapshot_show,     R },
	{ "DELETE", "/v1/snapshots/{name}",          api_snapshot_delete,   A },
	{ "POST",   "/v1/snapshots/{name}/restore",  api_snapshot_restore,  A },
	{ "POST",   "/v1/snapshots/{name}/clone",    api_snapshot_clone,    A },
	{ "POST",   "/v1/snapshots/{name}/push",     api_snapshot_push,     A },
	{ "POST",   "/v1/snapshots/{name}/pull",     api_snapshot_pull,     A },
	{ "POST",   "/v1/vms/{name}/migrate",        api_vm_migrate,        A },
	{ "DELETE", "/v1/vms/{name}/migration",      api_vm_migrate_cancel, A },
	{ "POST",   "/v1/migrations/incoming",       api_migration_incoming, A },
	{ "GET",    "/v1/events",                    api_events,            R },
	{ "GET",    "/v1/metrics",                   api_metrics_json,      R },
	{ "GET",    "/metrics",                      api_metrics_prometheus, R },
	{ "GET",    "/v1/networks",                  api_net_list,          R },
	{ "POST",   "/v1/networks",                  api_net_create,        A },
	{ "GET",    "/v1/networks/{name}",           api_net_show,          R },
	{ "DELETE", "/v1/networks/{name}",           api_net_delete,        A },
};
#undef R
#undef O
#undef A
const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);

bool api_path_match(const char *tmpl, const char *path, char *name, size_t namelen)
{
	const char *t = tmpl, *p = path;
	size_t n;

	while (*t) {
		if (!strncmp(t, "{name}", 6)) {
			n = strcspn(p, "/");
			if (n == 0 || n >= namelen)
				return false;
			memcpy(name, p, n);
			name[n] = '\0';
			if (!host_name_valid(name))
				return false;
			p += n;
			t += 6;
			continue;
		}
		if (*t++ != *p++)
			return false;
	}
	return *p == '\0';
}

const struct api_route *api_route_find(const char *method, const char *path,
				       char *name, size_t namelen, int *status)
{
	bool path_known = false;

	*status = 404;
	for (size_t i = 0; i < api_nroutes; i++) {
		if (!api_path_match(api_routes[i].path, path, name, namelen))
			continue;
		path_known = true;
		if (!strcmp(api_routes[i].method, method))
			return &api_routes[i];
	}
	if (path_known)
		*status = 405;
	return NULL;
}

void api_route_error(const char *method, const char *path, int status, struct api_err *e)
{
	if (status == 405)
		api_err_set(e, 405, "method_not_allowed", "%.16s %.200s: method not allowed",
			    method, path);
	else
		api_err_set(e, 404, "not_found", "%.200s: no such route (see api/openapi.yaml)", path);
}

int api_target_check(const char *raw, struct api_err *e)
{
	if (raw && strstr(raw, "%00"))
		return api_err_set(e, 400, "invalid_request",
				   "the request path or query encodes a NUL byte (%%00)");
	return 0;
}

/* Length of the valid UTF-8 sequence at `s`, or 0 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

void api_utf8_scrub(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n;

	while (*p) {
		n = utf8_seq_len(p);
		if (n)
			p += n;
		else
			*p++ = '?';
	}
}

char *api_error_body(const struct api_err *e, size_t *len)
{
	static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
	char code[sizeof(e->code)], msg[sizeof(e->msg)], *text;
	json_t *j;

	snprintf(code, sizeof(code), "%s", e->code[0] ? e->code : "internal");
	snprintf(msg, sizeof(msg), "%s", e->msg);
	api_utf8_scrub(code);
	api_utf8_scrub(msg);
	j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	if (text) {
		*len = strlen(text);
		char *t = realloc(text, *len + 2);
		if (t) {
			t[(*len)++] = '\n';
			t[*len] = '\0';
			return t;
		}
		return text;
	}
	*len = sizeof(oom) - 1;
	return strdup(oom);
}

int api_parse_bool(const char *s)
{
	if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, ""))
		return 1;
	if (!strcmp(s, "false") || !strcmp(s, "0"))
		return 0;
	return -1;
}

long long api_parse_uint(const char *s, long long max)
{
	char *end;
	long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	return v;
}

int api_body_object(const char *body, size_t len, json_t **out, struct api_err *e)
{
	json_error_t jerr;
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!o)
		return api_err_set(e, 400, "invalid_json", "body: line %d column %d: %s",
				   jerr.line, jerr.column, jerr.text);
	if (!json_is_object(o)) {
		json_decref(o);
		return api_err_set(e, 400, "invalid_request", "body: expected a JSON object");
	}
	*out = o;
	return 0;
}

int api_parse_stop_body(const char *body, size_t len, bool *force, int *timeout_s,
			struct api_err *e)
{
	json_t *o, *v;
	const char *key;
	int rc = 0;

	if (len == 0)
		return 0;
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, key, v) {
		if (!strcmp(key, "mode") && json_is_string(v) &&
		    (!strcmp(json_string_value(v), "graceful") || !strcmp(json_string_value(v), "force"))) {
			*force = !strcmp(json_string_value(v), "force");
		} else if (!strcmp(key, "timeout_s") && json_is_integer(v) &&
			   json_integer_value(v) >= 0 && json_integer_value(v) <= 3600) {
			*timeout_s = (int)json_integer_value(v);
		} else if (!strcmp(key, "mode") || !strcmp(key, "timeout_s")) {
			rc = api_err_set(e, 400, "invalid_request", !strcmp(key, "mode") ?
					 "mode: must be \"graceful\" or \"force\"" :
					 "timeout_s: must be an integer from 0 to 3600");
			break;
		} else {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", key);
			break;
		}
	}
	json_decref(o);
	return rc;
}
