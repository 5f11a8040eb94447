/*
 * client.h - the `shoal` CLI's HTTP client for shoald's API: libcurl, over
 * the daemon's Unix socket or over HTTPS to a daemon on another host.
 *
 * The endpoint: a verb's --socket (a path, or an https:// URL), else
 * $SHOAL_HOST (`shoal --host URL VERB ...` sets it), else $SHOAL_SOCKET,
 * else /var/lib/shoal/shoald.sock.  Over HTTPS every request carries
 * "Authorization: Bearer TOKEN", the token read from $SHOAL_TOKEN_FILE
 * (`shoal --token-file FILE`) or $SHOAL_TOKEN, and the daemon's certificate
 * is checked against the system's CAs or $SHOAL_CACERT (`--cacert FILE`).
 * Plain http:// is refused: the token never travels in clear.
 *
 * The console's HTTP Upgrade (client_upgrade) returns a file descriptor
 * carrying the raw stream either way: the socket itself, or over TLS one
 * end of a socket pair that a thread relays through libcurl.
 */
#ifndef SHOAL_CLI_CLIENT_H
#define SHOAL_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
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

/* The endpoint: `opt`, $SHOAL_HOST, $SHOAL_SOCKET or the default. */
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
/* A migration's --downtime-ms (1 to 3600000) and --bandwidth (a rate in
 * bytes per second, "100M"; not 0, at most 1 PiB/s): 0, or EXIT_USAGE
 * after saying why (`shoal migrate` and `shoal vm migrate` alike). */
int cli_parse_downtime_ms(const char *arg, long *out);
int cli_parse_bandwidth(const char *arg, uint64_t *out);

/* A 2xx answer: print its JSON (c->json or !print) or call print(json);
 * else print the API's error.  Returns the exit status. */
int cli_print_result(const struct cli_common *c, const struct client_resp *r,
		     int (*print)(json_t *));

void cli_fmt_size(long long bytes, char *out, size_t size);
void cli_fmt_duration(double seconds, char *out, size_t size);

/* Percent-encode `s` for a query value into out. */
void client_urlencode(const char *s, char *out, size_t size);

#endif
