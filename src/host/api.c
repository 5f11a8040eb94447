/*
 * api.c - serving the HTTP API with libmicrohttpd.
 *
 * Listeners: a Unix socket (always; its mode 0660 and its directory decide
 * who may connect, the caller's uid and groups what it may do) and
 * optionally TCP with TLS and a bearer token (both are required: the daemon
 * refuses to serve TCP without them; a token holder has --token-role).
 *
 * One request, as libmicrohttpd hands it to us:
 *
 *   request line  -> api_uri_seen: the raw target; a %00 is noted (a NUL
 *                    would cut the decoded path short and act on "a" for
 *                    "a%00b"), and the per-request state is made
 *   headers whole -> api_begin: token (TCP), %00 -> 400, the caller's
 *                    role against the route's -> 403, Content-Length -> 413
 *   body pieces   -> api_append
 *   body whole    -> api_dispatch: the handler runs (no deadline now)
 *   answer sent   -> api_completed: the next request's deadline starts
 *
 * Threads: libmicrohttpd's thread per connection.  A handler may block
 * (start waits for a VMM; the event stream waits for events), which costs
 * that connection's thread only.  Slow clients: a connection that sends
 * nothing for --client-timeout seconds is closed by libmicrohttpd, whether
 * it is idle or in the middle of a request, and one whose request is not
 * whole after --request-timeout seconds is closed by api_peer.c however
 * often it sends a byte; the request is then dropped before any handler
 * runs, so nothing is half-done.  One caller holds at most
 * --max-peer-connections connections.
 *
 * Request bodies are gathered into a buffer of at most HOST_BODY_MAX
 * bytes; a larger body is read and dropped (or, over 16 times that by its
 * Content-Length, refused before it is read) and gets 413; it is never
 * parsed.  Every failure is answered with the one error
 * shape {"error": {"code": "...", "message": "..."}}.
 */
#include "host/api.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include "base/mhd_dl.h"
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <unistd.h>

struct api_server {
	struct MHD_Daemon *unix_d;
	struct MHD_Daemon *tcp_d;
	int unix_fd;
	char *tls_cert, *tls_key;   /* PEM text, kept while the daemon runs */
	struct api_peers *peers;    /* every connection's caller and deadline */
};

/* Per-request state kept by libmicrohttpd between calls. */
struct api_req {
	char *body;
	size_t len, cap;
	bool too_big;
	bool begun;         /* api_begin ran */
	bool nul_in_target; /* the raw request target encodes a NUL */
	bool answered;      /* a response was queued early (413, 401, 403, 400) */
	int64_t t0_us;      /* monotonic: when the request line came */
	const char *method, *url;   /* libmicrohttpd's, valid for the request */
};

static int64_t api_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void api_access_log(const struct api_call *c, int status, size_t len)
{
	double ms = c->t0_us ? (double)(api_mono_us() - c->t0_us) / 1000.0 : 0.0;

	if (log_threshold < LOG_INFO)
		return;
	log_info("access: %s %s %s %d %zu bytes %.1f ms",
		 c->peer ? c->peer->who : "-", c->method ? c->method : "-",
		 c->url ? c->url : "-", status, len, ms);
}

int api_reply_raw(struct api_call *c, int status, const char *ctype, void *buf, size_t len)
{
	struct MHD_Response *r;
	int ret;

	r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", ctype);
	if (status == 503)
		MHD_add_response_header(r, "Retry-After", "1");
	ret = MHD_queue_response(c->conn, (unsigned)status, r);
	MHD_destroy_response(r);
	api_access_log(c, status, len);
	return ret;
}

int api_reply_error(struct api_call *c, const struct api_err *e)
{
	size_t n = 0;
	char *text = api_error_body(e, &n);

	if (!text)
		return MHD_NO;
	return api_reply_raw(c, e->http ? e->http : 500, "application/json", text, n);
}

char *api_json_text(const void *json)
{
	/* 15 significant digits: a double's decimal value as written
	 * (uptime_s 0.149, never 0.14899999999999999), exact for integers */
	return json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
}

int api_reply_json(struct api_call *c, int status, void *json)
{
	char *text = json ? api_json_text(json) : NULL;
	struct api_err e;
	size_t n;

	json_decref(json);
	if (!text) {
		/* only strings the daemon itself checked go into answers, but a
		 * failure here must still be the one error shape */
		api_err_set(&e, 500, "internal", "cannot encode the answer as JSON");
		return api_reply_error(c, &e);
	}
	n = strlen(text);
	text = realloc(text, n + 2) ?: text;
	text[n++] = '\n';
	return api_reply_raw(c, status, "application/json", text, n);
}

const char *api_query(struct api_call *c, const char *key)
{
	return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* The bearer token check for TCP connections (constant-time compare). */
static bool api_token_ok(struct host *h, struct MHD_Connection *conn)
{
	const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	size_t n, want;
	unsigned char diff = 0;

	if (!h->token || !auth || strncmp(auth, "Bearer ", 7))
		return false;
	auth += 7;
	n = strlen(auth);
	want = strlen(h->token);
	for (size_t i = 0; i < want; i++)
		diff |= (unsigned char)(h->token[i] ^ (i < n ? auth[i] : 0));
	return diff == 0 && n == want;
}

/* Answer early, before the body is read (413, 401). */
static int api_early_error(struct host *h, struct MHD_Connection *conn, struct api_req *r,
			   int status, const char *code, const char *msg)
{
	struct api_call c = { .h = h, .conn = conn, .peer = api_peer_of(conn),
			      .method = r->method, .url = r->url, .t0_us = r->t0_us };
	struct api_err e;

	api_err_set(&e, status, code, "%s", msg);
	r->answered = true;
	return api_reply_error(&c, &e);
}

/* The caller's role allows the route (unknown routes fall through to 404
 * and 405 at dispatch); a 403 queued otherwise. */
static int api_authorize(struct host *h, struct MHD_Connection *conn, struct api_req *r,
			 struct api_peer *p, const char *method, const char *url)
{
	char name[HOST_NAME_MAX_LEN + 1], msg[300];
	const struct api_route *route;
	enum host_role role = p ? p->role : HOST_ROLE_NONE;
	int status;

	route = api_route_find(method, url, name, sizeof(name), &status);
	if (!route || role >= route->need)
		return MHD_YES;
	snprintf(msg, sizeof(msg), "%s %s: %s has the role \"%s\"; this needs \"%s\" "
		 "(granted with shoald --grant)", route->method, route->path,
		 p ? p->who : "this caller", host_role_name(role), host_role_name(route->need));
	log_warn("forbidden: %s", msg);
	return api_early_error(h, conn, r, 403, "forbidden", msg);
}

/* First call for a request: checks that need only the headers. */
static int api_begin(struct host *h, struct MHD_Connection *conn, struct api_req *r,
		     const char *method, const char *url, bool tcp)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
	struct api_peer *p = api_peer_of(conn);
	struct api_err e;
	char msg[128];
	int ret;

	r->begun = true;
	r->method = method;
	r->url = url;
	if (p && p->refused)
		return MHD_NO;
	if (tcp && !api_token_ok(h, conn))
		return api_early_error(h, conn, r, 401, "unauthorized",
				       "a valid \"Authorization: Bearer TOKEN\" header is required");
	if (tcp && p)
		p->role = h->opt.token_role;
	if (r->nul_in_target) {
		api_target_check("%00", &e);
		return api_early_error(h, conn, r, 400, e.code, e.msg);
	}
	ret = api_authorize(h, conn, r, p, method, url);
	if (r->answered)
		return ret;
	/* A body a little too large is read and dropped, then answered 413
	 * (answering first and closing on unread bytes makes the kernel reset
	 * the connection, and the client may never see the answer); an absurd
	 * one is refused at once. */
	if (cl && strtoull(cl, NULL, 10) > 16 * HOST_BODY_MAX) {
		snprintf(msg, sizeof(msg), "request body: %s bytes is more than the %u allowed",
			 cl, HOST_BODY_MAX);
		return api_early_error(h, conn, r, 413, "too_large", msg);
	}
	return MHD_YES;
}

/* Append a piece of the body, or note that it is too big. */
static void api_append(struct api_req *r, const char *data, size_t n)
{
	char *b;

	if (r->too_big || r->len + n > HOST_BODY_MAX) {
		r->too_big = true;
		return;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = (r->len + n + 1) * 2;
		if (cap > HOST_BODY_MAX + 1)
			cap = HOST_BODY_MAX + 1;
		b = realloc(r->body, cap);
		if (!b) {
			r->too_big = true;
			return;
		}
		r->body = b;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	r->body[r->len] = '\0';
}

/* The whole request is in: route it. */
static int api_dispatch(struct host *h, struct MHD_Connection *conn, const char *url,
			const char *method, struct api_req *r)
{
	struct api_call c = { .h = h, .conn = conn, .peer = api_peer_of(conn),
			      .method = method, .url = url,
			      .body = r->body ? r->body : "", .body_len = r->len,
			      .t0_us = r->t0_us };
	const struct api_route *route;
	struct api_err e;
	int status;

	if (r->too_big) {
		api_err_set(&e, 413, "too_large", "request body: more than the %u bytes allowed",
			    HOST_BODY_MAX);
		return api_reply_error(&c, &e);
	}
	route = api_route_find(method, url, c.name, sizeof(c.name), &status);
	if (!route) {
		api_route_error(method, url, status, &e);
		return api_reply_error(&c, &e);
	}
	api_peer_handling(c.peer, true);
	return route->fn(&c);
}

/* libmicrohttpd's access handler, called several times per request. */
static enum MHD_Result api_access(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls, bool tcp)
{
	struct host *h = cls;
	struct api_req *r = *con_cls;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		*con_cls = r;
	}
	if (!r->begun)
		return (enum MHD_Result)api_begin(h, conn, r, method, url, tcp);
	if (r->answered) {
		*upload_data_size = 0;        /* discard the rest */
		return MHD_YES;
	}
	if (*upload_data_size) {
		api_append(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	return (enum MHD_Result)api_dispatch(h, conn, url, method, r);
}

/* Access handler for the Unix socket: no token needed, the socket's mode decides. */
static enum MHD_Result api_access_unix(void *cls, struct MHD_Connection *conn,
				       const char *url, const char *method,
				       const char *version, const char *upload_data,
				       size_t *upload_data_size, void **con_cls)
{
	return api_access(cls, conn, url, method, version, upload_data, upload_data_size,
			  con_cls, false);
}

/* Access handler for TCP: every request must carry the bearer token. */
static enum MHD_Result api_access_tcp(void *cls, struct MHD_Connection *conn,
				      const char *url, const char *method,
				      const char *version, const char *upload_data,
				      size_t *upload_data_size, void **con_cls)
{
	return api_access(cls, conn, url, method, version, upload_data, upload_data_size,
			  con_cls, true);
}

/* The request line is in: note a %00 in the raw target (libmicrohttpd
 * decodes it in place afterwards) and make the per-request state. */
static void *api_uri_seen(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct api_req *r = calloc(1, sizeof(*r));

	if (r) {
		r->nul_in_target = api_target_check(uri, NULL) < 0;
		r->t0_us = api_mono_us();
	}
	return r;
}

/* Free the per-request state when libmicrohttpd is done with a request;
 * the connection's next request starts its deadline now. */
static void api_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			  enum MHD_RequestTerminationCode toe)
{
	struct api_req *r = *con_cls;

	if (r) {
		free(r->body);
		free(r);
	}
	*con_cls = NULL;
	api_peer_handling(api_peer_of(conn), false);
}

/* libmicrohttpd's own error log goes to our stderr. */
static void api_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_warn("http: %s", line);
}

/* The socket's group: --socket-group NAME|GID, else the group "shoal"
 * when the host has one, else the daemon's own (logged either way).  Its
 * members may connect (mode 0660); what they may do is --grant's. */
static int api_socket_group(struct host *h, struct api_err *e)
{
	const char *want = h->opt.socket_group;
	struct group *g = NULL;
	char *end;
	gid_t gid;

	if (want) {
		unsigned long n = strtoul(want, &end, 10);

		if (*want && !*end && n < 0xffffffffUL) {
			gid = (gid_t)n;
		} else if ((g = getgrnam(want))) {
			gid = g->gr_gid;
		} else {
			return api_err_set(e, 400, "invalid_request", "--socket-group %s: no such group",
					   want);
		}
	} else if ((g = getgrnam("shoal"))) {
		gid = g->gr_gid;
	} else {
		log_info("API socket %s: group %u, the daemon's (no group \"shoal\" on this host; "
			 "--socket-group names another)", h->socket_path, (unsigned)getegid());
		return 0;
	}
	if (chown(h->socket_path, (uid_t)-1, gid) < 0)
		return api_err_set(e, 500, "internal", "%s: giving it to group %u: %s",
				   h->socket_path, (unsigned)gid, strerror(errno));
	log_info("API socket %s: mode 0660, group %s (%u)", h->socket_path,
		 want ? want : "shoal", (unsigned)gid);
	return 0;
}

/* Bind the Unix socket: refuse if another daemon answers there. */
static int api_unix_listen(struct host *h, struct api_err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(h->socket_path) >= sizeof(sa.sun_path))
		return api_err_set(e, 500, "internal", "%s: path too long for a Unix socket",
				   h->socket_path);
	strcpy(sa.sun_path, h->socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return api_err_set(e, 500, "internal", "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		return api_err_set(e, 409, "busy", "%s: another daemon is listening there",
				   h->socket_path);
	}
	unlink(h->socket_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(h->socket_path, 0660) < 0 || listen(fd, 512) < 0) {
		api_err_set(e, 500, "internal", "%s: %s", h->socket_path, strerror(errno));
		close(fd);
		return -1;
	}
	if (api_socket_group(h, e)) {
		close(fd);
		unlink(h->socket_path);
		return -1;
	}
	return fd;
}

/* Read a whole (small) file into a string. */
static char *api_read_file(const char *path, struct api_err *e)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		api_err_set(e, 500, "internal", "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = calloc(1, 1 << 20);
	if (buf)
		n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	if (buf)
		buf[n] = '\0';
	return buf;
}

/* Parse "ADDR:PORT" (IPv4) into sa. */
static int api_parse_listen(const char *spec, struct sockaddr_in *sa, struct api_err *e)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	long long port;

	if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host) ||
	    (port = api_parse_uint(colon + 1, 65535)) <= 0)
		return api_err_set(e, 400, "invalid_request", "--listen %s: expected ADDR:PORT", spec);
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return api_err_set(e, 400, "invalid_request", "--listen %s: not an IPv4 address", spec);
	return 0;
}

/* TCP with TLS and a bearer token. */
static int api_start_tcp(struct host *h, struct api_server *s, struct api_err *e)
{
	struct sockaddr_in sa;
	char *tok;

	if (!h->opt.tls_cert || !h->opt.tls_key || !h->opt.token_file)
		return api_err_set(e, 400, "invalid_request",
				   "--listen needs --tls-cert, --tls-key and --token-file: no TCP without TLS and a token");
	if (api_parse_listen(h->opt.listen, &sa, e))
		return -1;
	s->tls_cert = api_read_file(h->opt.tls_cert, e);
	s->tls_key = s->tls_cert ? api_read_file(h->opt.tls_key, e) : NULL;
	tok = s->tls_key ? api_read_file(h->opt.token_file, e) : NULL;
	if (!tok)
		return -1;
	tok[strcspn(tok, "\r\n")] = '\0';
	if (strlen(tok) < 16) {
		free(tok);
		return api_err_set(e, 400, "invalid_request", "%s: token shorter than 16 characters",
				   h->opt.token_file);
	}
	h->token = tok;
	s->tcp_d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
				    MHD_USE_TLS | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				    api_access_tcp, h,
				     MHD_OPTION_EXTERNAL_LOGGER, api_log, h,
				    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				    MHD_OPTION_HTTPS_MEM_CERT, s->tls_cert,
				    MHD_OPTION_HTTPS_MEM_KEY, s->tls_key,
				    MHD_OPTION_CONNECTION_TIMEOUT, h->opt.client_timeout_s,
				    MHD_OPTION_CONNECTION_LIMIT, 1000u,
				    MHD_OPTION_PER_IP_CONNECTION_LIMIT, h->opt.max_peer_conns,
				    MHD_OPTION_NOTIFY_CONNECTION, api_peer_notify, s->peers,
				    MHD_OPTION_URI_LOG_CALLBACK, api_uri_seen, h,
				    MHD_OPTION_NOTIFY_COMPLETED, api_completed, h,
				    MHD_OPTION_END);
	if (!s->tcp_d)
		return api_err_set(e, 500, "internal", "%s: cannot serve TLS there (certificate, key or address)",
				   h->opt.listen);
	return 0;
}

/* Listen on the Unix socket (and TCP+TLS if asked) and serve. */
int api_start(struct host *h, struct api_err *e)
{
	struct api_server *s = calloc(1, sizeof(*s));

	if (!s)
		return api_err_set(e, 500, "internal", "out of memory");
	h->api = s;
	s->unix_fd = -1;
	s->peers = api_peers_new(h);
	if (!s->peers) {
		api_err_set(e, 500, "internal", "cannot start the connection deadline thread");
		goto fail;
	}
	s->unix_fd = api_unix_listen(h, e);
	if (s->unix_fd < 0)
		goto fail;
	s->unix_d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
				     MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				     api_access_unix, h,
				     MHD_OPTION_EXTERNAL_LOGGER, api_log, h,
				     MHD_OPTION_LISTEN_SOCKET, s->unix_fd,
				     MHD_OPTION_CONNECTION_TIMEOUT, h->opt.client_timeout_s,
				     MHD_OPTION_CONNECTION_LIMIT, 2000u,
				     MHD_OPTION_NOTIFY_CONNECTION, api_peer_notify, s->peers,
				     MHD_OPTION_URI_LOG_CALLBACK, api_uri_seen, h,
				     MHD_OPTION_NOTIFY_COMPLETED, api_completed, h,
				     MHD_OPTION_END);
	if (!s->unix_d) {
		api_err_set(e, 500, "internal", "%s: cannot start the HTTP server", h->socket_path);
		goto fail;
	}
	if (h->opt.listen && api_start_tcp(h, s, e))
		goto fail;
	return 0;
fail:
	api_stop(h);
	return -1;
}

/* Stop serving: end event streams, stop libmicrohttpd, remove the socket. */
void api_stop(struct host *h)
{
	struct api_server *s = h->api;

	if (!s)
		return;
	pthread_mutex_lock(&h->lock);
	h->stopping = true;           /* event streams end */
	pthread_cond_broadcast(&h->event_cond);
	pthread_cond_broadcast(&h->changed);
	pthread_mutex_unlock(&h->lock);
	if (s->tcp_d)
		MHD_stop_daemon(s->tcp_d);
	if (s->unix_d)
		MHD_stop_daemon(s->unix_d);
	else if (s->unix_fd >= 0)
		close(s->unix_fd);
	if (s->unix_fd >= 0)
		unlink(h->socket_path);
	api_peers_free(s->peers);
	free(s->tls_cert);
	free(s->tls_key);
	free(s);
	h->api = NULL;
}
