/*
 * api.h - shoald's HTTP API: the route table and what a handler gets.
 *
 * api/openapi.yaml documents every route in api_routes[]; the system test
 * tests/system/daemon_openapi.sh checks both directions (`shoald
 * --list-routes` prints this table).  Route matching and the small query
 * and body parsers are pure functions, fuzzed by fuzz/fuzz_api_request.c.
 */
#ifndef SHOAL_HOST_API_H
#define SHOAL_HOST_API_H

#include <stdbool.h>
#include <stddef.h>

#include "host/host.h"

struct MHD_Connection;

/* One request, as a handler sees it. */
struct api_call {
	struct host *h;
	struct MHD_Connection *conn;
	const char *method, *url;
	char name[HOST_NAME_MAX_LEN + 1];   /* the {name} in the path, if any */
	const char *body;                   /* NUL-terminated, may be empty */
	size_t body_len;
};

/* A handler queues exactly one response and returns MHD_YES/MHD_NO. */
typedef int (*api_handler)(struct api_call *c);

struct api_route {
	const char *method;
	const char *path;        /* OpenAPI template: "/v1/vms/{name}/start" */
	api_handler fn;
};

extern const struct api_route api_routes[];
extern const size_t api_nroutes;

/* Match a request path against a template; copies {name} (checked with
 * host_name_valid) into `name`.  True on a match. */
bool api_path_match(const char *tmpl, const char *path, char *name, size_t namelen);

/* Find the route for method+path.  NULL with *status 404 (no such path)
 * or 405 (path exists, not with this method). */
const struct api_route *api_route_find(const char *method, const char *path,
				       char *name, size_t namelen, int *status);

/* Parse a boolean query value ("true", "false", "1", "0"); -1 if invalid. */
int api_parse_bool(const char *s);
/* Parse a non-negative integer query value up to max; -1 if invalid. */
long long api_parse_uint(const char *s, long long max);
/* Parse the optional stop body {"mode": "graceful"|"force", "timeout_s": N}. */
int api_parse_stop_body(const char *body, size_t len, bool *force, int *timeout_s,
			struct api_err *e);

/* Start and stop serving (api.c). */
int api_start(struct host *h, struct api_err *e);
void api_stop(struct host *h);

/* Handlers (api_vm.c, api_misc.c). */
int api_vm_list(struct api_call *c);
int api_vm_create(struct api_call *c);
int api_vm_show(struct api_call *c);
int api_vm_delete(struct api_call *c);
int api_vm_start(struct api_call *c);
int api_vm_stop(struct api_call *c);
int api_vm_pause(struct api_call *c);
int api_vm_resume(struct api_call *c);
int api_vm_console(struct api_call *c);
int api_vm_console_attach(struct api_call *c);
int api_vm_metrics(struct api_call *c);
int api_events(struct api_call *c);
int api_metrics_json(struct api_call *c);
int api_metrics_prometheus(struct api_call *c);
int api_version(struct api_call *c);

/* Response helpers (api.c). */
int api_reply_json(struct api_call *c, int status, void *json /* json_t *, taken */);
int api_reply_error(struct api_call *c, const struct api_err *e);
int api_reply_raw(struct api_call *c, int status, const char *ctype, void *buf, size_t len);
/* A query argument, or NULL. */
const char *api_query(struct api_call *c, const char *key);

#endif
