/*
 * httpc.h - a libcurl handle aimed at a shoald API endpoint: the daemon's
 * Unix socket (a path) or an https:// URL with a bearer token.  The CLI's
 * client (cli/client.c) and a daemon that talks to another daemon (a
 * migration, host/migration.c) both open their transfers here, so the
 * rules are one: plain http:// is refused (the token would travel in
 * clear), the certificate is checked against the system's CAs or the CA
 * given (a file, or PEM text), only http and https are followed.
 *
 * The token and CA are the caller's to find (the CLI reads its
 * environment; the daemon takes them from the request that asks it to
 * migrate) and are never logged.
 */
#ifndef SHOAL_HOST_HTTPC_H
#define SHOAL_HOST_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <curl/curl.h>

#include "base/error.h"

#define HTTPC_BODY_MAX (64u << 20)   /* largest answer httpc_request reads */

struct httpc {
	CURL *c;
	struct curl_slist *hdrs;
	char url[2300];
	char err[CURL_ERROR_SIZE];
};

/* Is `ep` a URL (https:// or http://) rather than a socket path? */
bool httpc_is_url(const char *ep);

/* A handle for `path` on endpoint `ep` with the headers every request has
 * (Content-Type: application/json when `json_body`); over https, the
 * token (NULL or "": none) as "Authorization: Bearer" and the CA from
 * `cacert_file` or `cacert_pem` (NULL: the system's).  0, or -1 with `e`
 * (64: http:// or a path too long; 70: libcurl). */
int httpc_open(struct httpc *x, const char *ep, const char *path, bool json_body,
	       const char *token, const char *cacert_file, const char *cacert_pem,
	       struct error *e);
void httpc_close(struct httpc *x);

/* One request on an opened handle: its status and whole body (malloc'd,
 * NUL-terminated, at most HTTPC_BODY_MAX) into *status, *body, *len; the
 * transfer's error code in *cc (CURLE_OK on success).  0 or -1. */
int httpc_perform(struct httpc *x, const char *method, const char *body, size_t len,
		  int *status, char **out, size_t *out_len, CURLcode *cc);

/* A failed transfer in words: the system's for a refused connection
 * (connect(2)'s), else libcurl's. */
const char *httpc_why(struct httpc *x, CURLcode rc);

#endif
