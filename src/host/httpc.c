/*
 * httpc.c - libcurl handles aimed at a shoald API endpoint (see httpc.h).
 *
 * Invariants: a handle never follows a redirect, never speaks anything
 * but http (to a Unix socket) and https, never sends a token over
 * anything but https, and reads at most HTTPC_BODY_MAX bytes of an
 * answer.  curl_global_init runs once, whatever thread asks first (the
 * daemon's handlers run on many).
 */
#include "host/httpc.h"
#include "base/curl_dl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static pthread_once_t httpc_once = PTHREAD_ONCE_INIT;
static CURLcode httpc_init_rc;

static void httpc_init(void)
{
	httpc_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool httpc_is_url(const char *ep)
{
	return !strncmp(ep, "https://", 8) || !strncmp(ep, "http://", 7);
}

int httpc_open(struct httpc *x, const char *ep, const char *path, bool json_body,
	       const char *token, const char *cacert_file, const char *cacert_pem,
	       struct error *e)
{
	char auth[600];

	memset(x, 0, sizeof(*x));
	pthread_once(&httpc_once, httpc_init);
	if (httpc_init_rc)
		return error_set(e, 70, "libcurl: %s", curl_dl_error() ? curl_dl_error() :
				 "initialisation failed");
	if (!strncmp(ep, "http://", 7))
		return error_set(e, 64, "%s: shoald serves TCP only over TLS: use https://", ep);
	if (httpc_is_url(ep)) {
		size_t n = strlen(ep);
		while (n > 8 && ep[n - 1] == '/')
			n--;
		if (snprintf(x->url, sizeof(x->url), "%.*s%s", (int)n, ep, path) >= (int)sizeof(x->url))
			return error_set(e, 64, "%.100s: request path too long", path);
	} else {
		struct sockaddr_un sa;
		if (strlen(ep) >= sizeof(sa.sun_path))
			return error_set(e, 64, "%s: path too long for a Unix socket", ep);
		if (snprintf(x->url, sizeof(x->url), "http://shoald%s", path) >= (int)sizeof(x->url))
			return error_set(e, 64, "%.100s: request path too long", path);
	}
	if (token && strlen(token) > 500)
		return error_set(e, 64, "the bearer token is longer than 500 bytes");
	x->c = curl_easy_init();
	if (!x->c)
		return error_set(e, 70, "libcurl: out of memory");
	curl_easy_setopt(x->c, CURLOPT_URL, x->url);
	curl_easy_setopt(x->c, CURLOPT_ERRORBUFFER, x->err);
	curl_easy_setopt(x->c, CURLOPT_USERAGENT, "shoal");
	curl_easy_setopt(x->c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(x->c, CURLOPT_PROTOCOLS_STR, "http,https");
	x->hdrs = curl_slist_append(x->hdrs, "Expect:");
	if (json_body)
		x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/json");
	if (httpc_is_url(ep)) {
		if (token && token[0]) {
			snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
			x->hdrs = curl_slist_append(x->hdrs, auth);
		}
		if (cacert_file && *cacert_file) {
			curl_easy_setopt(x->c, CURLOPT_CAINFO, cacert_file);
		} else if (cacert_pem && *cacert_pem) {
			struct curl_blob blob = { .data = (void *)cacert_pem, .len = strlen(cacert_pem),
						  .flags = CURL_BLOB_COPY };
			curl_easy_setopt(x->c, CURLOPT_CAINFO_BLOB, &blob);
		}
	} else {
		curl_easy_setopt(x->c, CURLOPT_UNIX_SOCKET_PATH, ep);
	}
	curl_easy_setopt(x->c, CURLOPT_HTTPHEADER, x->hdrs);
	return 0;
}

void httpc_close(struct httpc *x)
{
	if (x->c)
		curl_easy_cleanup(x->c);
	curl_slist_free_all(x->hdrs);
	x->c = NULL;
	x->hdrs = NULL;
}

const char *httpc_why(struct httpc *x, CURLcode rc)
{
	long oserr = 0;

	if (rc == CURLE_COULDNT_CONNECT &&
	    curl_easy_getinfo(x->c, CURLINFO_OS_ERRNO, &oserr) == CURLE_OK && oserr > 0)
		return strerror((int)oserr);
	return x->err[0] ? x->err : curl_easy_strerror(rc);
}

struct httpc_buf {
	char *p;
	size_t len, cap;
};

static size_t httpc_on_body(char *p, size_t size, size_t n, void *arg)
{
	struct httpc_buf *b = arg;
	size_t add = size * n;

	if (b->len + add + 1 > HTTPC_BODY_MAX)
		return 0;
	if (b->len + add + 1 > b->cap) {
		size_t cap = (b->len + add + 1) * 2;
		char *np = realloc(b->p, cap);

		if (!np)
			return 0;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

int httpc_perform(struct httpc *x, const char *method, const char *body, size_t len,
		  int *status, char **out, size_t *out_len, CURLcode *cc)
{
	struct httpc_buf b = { 0 };
	long st = 0;

	*status = 0;
	*out = NULL;
	*out_len = 0;
	curl_easy_setopt(x->c, CURLOPT_CUSTOMREQUEST, method);
	if (len || strcmp(method, "GET")) {
		curl_easy_setopt(x->c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(x->c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	curl_easy_setopt(x->c, CURLOPT_WRITEFUNCTION, httpc_on_body);
	curl_easy_setopt(x->c, CURLOPT_WRITEDATA, &b);
	*cc = curl_easy_perform(x->c);
	if (*cc != CURLE_OK) {
		free(b.p);
		return -1;
	}
	curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &st);
	*status = (int)st;
	*out = b.p ? b.p : strdup("");
	*out_len = b.len;
	return *out ? 0 : -1;
}
