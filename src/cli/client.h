/*
 * client.h - the `shoal` CLI's HTTP/1.1 client for shoald's API, over the
 * daemon's Unix socket.
 *
 * Hand-written rather than libcurl: the CLI needs three things a general
 * client makes awkward together - plain requests, an endless chunked
 * stream read line by line (shoal events --follow) and an HTTP Upgrade
 * that leaves a raw socket (shoal console) - and all three fit in a few
 * hundred lines with one parser, which has its own fuzz target
 * (fuzz/fuzz_api_request.c).  Every request says "Connection: close".
 *
 * Socket: --socket PATH, else $SHOAL_SOCKET, else /var/lib/shoal/shoald.sock.
 */
#ifndef SHOAL_CLI_CLIENT_H
#define SHOAL_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

#define CLIENT_DEFAULT_SOCKET "/var/lib/shoal/shoald.sock"
#define CLIENT_EXIT_API 1           /* the API answered with an error */
#define CLIENT_RESP_MAX (64u << 20) /* largest response body read */

struct client_resp {
	int status;                 /* HTTP status */
	char ctype[128];            /* Content-Type */
	char upgrade[128];          /* Upgrade header, if any */
	char *body;                 /* NUL-terminated */
	size_t len;
};

/* The socket path: `opt`, $SHOAL_SOCKET or the default. */
const char *client_socket(const char *opt);

/* One request; the whole response is read.  0, or -1 with `e` (cannot
 * reach the daemon, or a malformed response).  An HTTP error status is
 * not a failure here: look at r->status. */
int client_request(const char *sock, const char *method, const char *path,
		   const char *body, size_t len, struct client_resp *r, struct error *e);
void client_resp_free(struct client_resp *r);

/* GET a streamed (chunked) response, calling `fn` with each piece of the
 * body as it arrives; stops when fn returns non-zero or the stream ends.
 * An error status is returned whole in `r` (then fn is not called). */
int client_stream(const char *sock, const char *path,
		  int (*fn)(void *arg, const char *data, size_t n), void *arg,
		  struct client_resp *r, struct error *e);

/* GET with "Upgrade: proto": on 101 returns the connected fd (>= 0) and
 * any bytes after the headers in r->body; else -1 with the answer in `r`
 * (r->status != 0) or `e` (r->status == 0). */
int client_upgrade(const char *sock, const char *path, const char *proto,
		   struct client_resp *r, struct error *e);

/* Parse a complete response held in memory (status line, headers,
 * Content-Length, chunked or close-delimited body).  Used by the above
 * and by the fuzzer. */
int client_parse_response(const char *buf, size_t len, struct client_resp *r,
			  struct error *e);

/* Print the API's error message ("shoal: ...") and return CLIENT_EXIT_API. */
int client_print_error(const struct client_resp *r);

/* ---- what the daemon-client verbs (vm, console, events, metrics) share ---- */

struct cli_common {
	const char *socket;     /* resolved with client_socket() */
	bool json;              /* --output json */
	bool prometheus;        /* --output prometheus (metrics only) */
};

/* Parse --output: "json", "table" (or "text"), "prometheus". */
int cli_set_output(struct cli_common *c, const char *v);

/* A 2xx answer: print its JSON (c->json or !print) or call print(json);
 * else print the API's error.  Returns the exit status. */
int cli_print_result(const struct cli_common *c, const struct client_resp *r,
		     int (*print)(json_t *));

void cli_fmt_size(long long bytes, char *out, size_t size);
void cli_fmt_duration(double seconds, char *out, size_t size);

/* Percent-encode `s` for a query value into out. */
void client_urlencode(const char *s, char *out, size_t size);

#endif
