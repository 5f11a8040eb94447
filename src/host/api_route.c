/*
 * api_route.c - the route table and the pure parsing around it: path
 * templates, query values, the stop body.  No libmicrohttpd here, so the
 * fuzzer and the unit tests can call it directly.
 */
#include "host/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/spec.h"

const struct api_route api_routes[] = {
	{ "GET",    "/v1/version",                   api_version },
	{ "GET",    "/v1/vms",                       api_vm_list },
	{ "POST",   "/v1/vms",                       api_vm_create },
	{ "GET",    "/v1/vms/{name}",                api_vm_show },
	{ "DELETE", "/v1/vms/{name}",                api_vm_delete },
	{ "POST",   "/v1/vms/{name}/start",          api_vm_start },
	{ "POST",   "/v1/vms/{name}/stop",           api_vm_stop },
	{ "POST",   "/v1/vms/{name}/pause",          api_vm_pause },
	{ "POST",   "/v1/vms/{name}/resume",         api_vm_resume },
	{ "GET",    "/v1/vms/{name}/console",        api_vm_console },
	{ "GET",    "/v1/vms/{name}/console/attach", api_vm_console_attach },
	{ "GET",    "/v1/vms/{name}/metrics",        api_vm_metrics },
	{ "GET",    "/v1/events",                    api_events },
	{ "GET",    "/v1/metrics",                   api_metrics_json },
	{ "GET",    "/metrics",                      api_metrics_prometheus },
};
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

int api_parse_stop_body(const char *body, size_t len, bool *force, int *timeout_s,
			struct api_err *e)
{
	json_error_t jerr;
	json_t *o, *v;
	const char *key;
	int rc = 0;

	if (len == 0)
		return 0;
	o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return api_err_set(e, 400, "invalid_json", "body: line %d column %d: %s",
				   jerr.line, jerr.column, jerr.text);
	if (!json_is_object(o)) {
		json_decref(o);
		return api_err_set(e, 400, "invalid_request", "body: expected a JSON object");
	}
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
