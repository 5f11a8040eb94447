/*
 * api.h - shoald's HTTP API: the route table and what a handler gets.
 *
 * api/openapi.yaml documents every route in api_routes[]; the system test
 * tests/system/daemon_openapi.sh checks both directions (`shoald
 * --list-routes` prints this table).  Route matching and the small query
 * and body parsers are pure functions, fuzzed by fuzz/fuzz_api_request.c,
 * and so is the rendering of an error answer.
 *
 * Every route names the least role that may call it (authz.c); a caller
 * below it gets 403 before its body is read.
 */
#ifndef SHOAL_HOST_API_H
#define SHOAL_HOST_API_H

#include "base/mhd_dl.h"
#include <stdbool.h>
#include <stddef.h>

#include "host/host.h"

struct api_peers;

/* One connection's caller and its request deadline (api_peer.c). */
struct api_peer {
	struct api_peers *set;
	int fd;                     /* libmicrohttpd's; only shut down here */
	bool tcp;
	uid_t uid;                  /* SO_PEERCRED; (uid_t)-1 on TCP */
	pid_t pid;
	enum host_role role;        /* from the grants; TCP: --token-role with the token */
	char who[64];               /* "uid 1000 (pid 42)", for messages and logs */
	int64_t deadline_ms;        /* monotonic; the request must be whole by then; 0: none */
	bool upgraded;              /* console attach: a raw stream, no deadline */
	bool cut;                   /* shut down at its deadline */
	bool refused;               /* over the per-peer limit, answered 429 */
	struct api_peer *next, *prev;
};

/* One request, as a handler sees it. */
struct api_call {
	struct host *h;
	struct MHD_Connection *conn;
	struct api_peer *peer;              /* who calls (NULL in tests without one) */
	const char *method, *url;
	char name[HOST_NAME_MAX_LEN + 1];   /* the {name} in the path, if any */
	const char *body;                   /* NUL-terminated, may be empty */
	size_t body_len;
	int64_t t0_us;                      /* monotonic, the request line's arrival (access log) */
};

/* A handler queues exactly one response and returns MHD_YES/MHD_NO. */
typedef int (*api_handler)(struct api_call *c);

struct api_route {
	const char *method;
	const char *path;        /* OpenAPI template: "/v1/vms/{name}/start" */
	api_handler fn;
	enum host_role need;     /* the least role that may call it */
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

/* The 404 or 405 for a request no route takes (status from api_route_find). */
void api_route_error(const char *method, const char *path, int status, struct api_err *e);

/* A request target as it came, before percent-decoding: 0, or -1 with a
 * 400 in `e` when it encodes a NUL (which would cut the decoded path short). */
int api_target_check(const char *raw, struct api_err *e);

/* Replace every byte of `s` that is not part of valid UTF-8 with '?', in
 * place (a sequence cut short by truncation included). */
void api_utf8_scrub(char *s);

/* The body of an error answer: {"error": {"code", "message"}} and a
 * newline, malloc'd, length in *len; any message bytes are made valid
 * UTF-8 first.  NULL only without memory. */
char *api_error_body(const struct api_err *e, size_t *len);

/* Parse a boolean query value ("true", "false", "1", "0"); -1 if invalid. */
int api_parse_bool(const char *s);
/* Parse a non-negative integer query value up to max; -1 if invalid. */
long long api_parse_uint(const char *s, long long max);
/* Parse the optional stop body {"mode": "graceful"|"force", "timeout_s": N}. */
/* A request body that must be one JSON object (duplicate keys refused):
 * 0 with *out (the caller's reference), or -1 with a 400 in `e`. */
struct json_t;
int api_body_object(const char *body, size_t len, struct json_t **out, struct api_err *e);

int api_parse_stop_body(const char *body, size_t len, bool *force, int *timeout_s,
			struct api_err *e);

/* Connections (api_peer.c): libmicrohttpd's open/close notification, the
 * caller of a connection, and its request deadline. */
struct api_peers *api_peers_new(struct host *h);
void api_peers_free(struct api_peers *ps);
void api_peer_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
		     enum MHD_ConnectionNotificationCode toe);
struct api_peer *api_peer_of(struct MHD_Connection *conn);
/* A handler starts (no deadline) or the answer is done (a new deadline). */
void api_peer_handling(struct api_peer *p, bool handling);
/* The connection became a raw stream (console attach): no deadline again. */
void api_peer_upgraded(struct api_peer *p);

/* Start and stop serving (api.c). */
int api_start(struct host *h, struct api_err *e);
void api_stop(struct host *h);

/* Handlers (api_vm.c, api_events.c, api_metrics.c, api_console.c). */
int api_vm_list(struct api_call *c);
int api_vm_create(struct api_call *c);
int api_vm_show(struct api_call *c);
int api_vm_delete(struct api_call *c);
int api_vm_start(struct api_call *c);
int api_vm_stop(struct api_call *c);
int api_vm_pause(struct api_call *c);
int api_vm_resume(struct api_call *c);
int api_vm_replace(struct api_call *c);      /* api_edit.c */
int api_vm_patch(struct api_call *c);
int api_vm_disk_add(struct api_call *c);
int api_vm_disk_remove(struct api_call *c);
int api_vm_reboot(struct api_call *c);
int api_vm_reset(struct api_call *c);
int api_vm_console(struct api_call *c);
int api_vm_console_attach(struct api_call *c);
int api_vm_metrics(struct api_call *c);
int api_vm_balloon(struct api_call *c);        /* api_balloon.c */
int api_events(struct api_call *c);
int api_metrics_json(struct api_call *c);
int api_metrics_prometheus(struct api_call *c);
int api_version(struct api_call *c);
/* api_snapshot.c */
int api_vm_snapshot(struct api_call *c);
int api_snapshot_list(struct api_call *c);
int api_snapshot_show(struct api_call *c);
int api_snapshot_delete(struct api_call *c);
int api_snapshot_restore(struct api_call *c);
int api_snapshot_clone(struct api_call *c);
/* api_migrate.c */
int api_vm_migrate(struct api_call *c);
int api_vm_migrate_cancel(struct api_call *c);
int api_migration_incoming(struct api_call *c);
/* The migrate body {"to", "token", "cacert", "downtime_ms", "bandwidth",
 * "with_disks", "auto_converge"} into r (free with api_migrate_req_free),
 * and the incoming body {"spec": SPEC, "disks": [...]} as JSON texts
 * (malloc'd; *disks NULL when absent).  0, or -1 with a 400 in `e`. */
int api_parse_migrate_body(const char *body, size_t len, struct host_migrate_req *r,
			   struct api_err *e);
void api_migrate_req_free(struct host_migrate_req *r);
int api_parse_incoming_body(const char *body, size_t len, char **spec, char **disks,
			    struct api_err *e);

/* Response helpers (api.c). */
int api_reply_json(struct api_call *c, int status, void *json /* json_t *, taken */);
/* One access-log line (info level) for an answer being queued: who,
 * method, path, status, body bytes and the time since the request line. */
void api_access_log(const struct api_call *c, int status, size_t len);
/* The text of an answer or event (json_t *): compact, keys in order, reals
 * to 15 significant digits; malloc'd, NULL when it cannot be encoded. */
char *api_json_text(const void *json);
int api_reply_error(struct api_call *c, const struct api_err *e);
int api_reply_raw(struct api_call *c, int status, const char *ctype, void *buf, size_t len);
/* Reply with the VM object of c->name (api_vm.c); `with_spec` as show. */
int api_reply_vm(struct api_call *c, int status, bool with_spec);
/* The VM object of GET /v1/vms/NAME (h->lock held). */
struct hvm;
struct json_t *api_vm_json_locked(struct hvm *vm, bool with_spec);
/* A query argument, or NULL. */
const char *api_query(struct api_call *c, const char *key);

#endif
