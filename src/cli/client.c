/*
 * client.c - the CLI's HTTP client for shoald (see client.h): libcurl over
 * the daemon's Unix socket or over TLS to a remote daemon.
 *
 * The response parser below reads only the console attach's answer (an
 * HTTP Upgrade, which libcurl does not hand over).  It is strict about what it needs and bounded everywhere: headers
 * at most 64 KiB, bodies at most CLIENT_RESP_MAX, chunk sizes checked
 * against what is left.  It trusts nothing in the response (the fuzzer
 * feeds it arbitrary bytes).
 */
#include "cli/client.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"
#include "base/size.h"
#include "host/httpc.h"

#define HEAD_MAX (64 * 1024)

const char *client_socket(const char *opt)
{
	const char *host = getenv("SHOAL_HOST"), *env = getenv("SHOAL_SOCKET");

	if (opt && *opt)
		return opt;
	if (host && *host)
		return host;
	return env && *env ? env : CLIENT_DEFAULT_SOCKET;
}

void client_resp_free(struct client_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

void client_urlencode(const char *s, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s && o + 4 < size; s++) {
		unsigned char ch = (unsigned char)*s;
		if (isalnum(ch) || strchr("-._~", ch)) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
}

/* ---- the parser ---- */

/* Chunked transfer decoding, fed in pieces. */
struct chunker {
	enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE } st;
	uint64_t left;          /* data bytes left in this chunk */
	char line[40];          /* the size line being read */
	size_t ll;
	bool bad;
};

/* Feed n bytes; decoded data goes to out(arg, data, len).  -1 on a bad
 * stream or when out returns non-zero. */
static int chunker_feed(struct chunker *c, const char *p, size_t n,
			int (*out)(void *arg, const char *d, size_t len), void *arg)
{
	while (n && c->st != CH_DONE) {
		if (c->st == CH_DATA) {
			size_t take = c->left < n ? (size_t)c->left : n;
			if (out(arg, p, take))
				return -1;
			p += take;
			n -= take;
			c->left -= take;
			if (!c->left)
				c->st = CH_DATA_END;
			continue;
		}
		char ch = *p++;
		n--;
		if (ch != '\n') {
			if (ch != '\r' && c->ll < sizeof(c->line) - 1)
				c->line[c->ll++] = ch;
			else if (ch != '\r') {
				c->bad = true;
				return -1;
			}
			continue;
		}
		c->line[c->ll] = '\0';
		if (c->st == CH_SIZE) {
			char *end;
			errno = 0;
			c->left = strtoull(c->line, &end, 16);
			if (end == c->line || errno || (*end && *end != ';') ||
			    c->left > CLIENT_RESP_MAX) {
				c->bad = true;
				return -1;
			}
			c->st = c->left ? CH_DATA : CH_TRAILER;
		} else if (c->st == CH_DATA_END) {
			if (c->ll) {
				c->bad = true;
				return -1;
			}
			c->st = CH_SIZE;
		} else if (c->st == CH_TRAILER && c->ll == 0) {
			c->st = CH_DONE;
		}
		c->ll = 0;
	}
	return 0;
}

/* A growing buffer for a decoded body. */
struct growbuf {
	char *p;
	size_t len, cap;
};

/* Append n bytes (the chunker's output callback); -1 past CLIENT_RESP_MAX. */
static int growbuf_add(void *arg, const char *d, size_t n)
{
	struct growbuf *g = arg;
	char *np;

	if (g->len + n + 1 > CLIENT_RESP_MAX)
		return -1;
	if (g->len + n + 1 > g->cap) {
		size_t cap = (g->len + n + 1) * 2;
		np = realloc(g->p, cap);
		if (!np)
			return -1;
		g->p = np;
		g->cap = cap;
	}
	memcpy(g->p + g->len, d, n);
	g->len += n;
	g->p[g->len] = '\0';
	return 0;
}

/* What the head says about the body. */
struct head {
	long long content_length;   /* -1 if absent */
	bool chunked;
};

/* Copy a header value (trimmed) into dst. */
static void head_value(const char *v, const char *eol, char *dst, size_t size)
{
	size_t n;

	while (v < eol && (*v == ' ' || *v == '\t'))
		v++;
	while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t' || eol[-1] == '\r' || eol[-1] == '\n'))
		eol--;
	n = (size_t)(eol - v) < size - 1 ? (size_t)(eol - v) : size - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* The headers a response keeps (Content-Type, Upgrade): true if k is one,
 * its value v..eol copied into r.  The parser below and libcurl's header
 * callback both use it. */
static bool resp_header(struct client_resp *r, const char *k, size_t klen, const char *v,
			const char *eol)
{
	if (klen == 12 && !strncasecmp(k, "Content-Type", 12))
		head_value(v, eol, r->ctype, sizeof(r->ctype));
	else if (klen == 7 && !strncasecmp(k, "Upgrade", 7))
		head_value(v, eol, r->upgrade, sizeof(r->upgrade));
	else
		return false;
	return true;
}

/* Parse the status line and headers in buf[0..hlen). */
static int parse_head(const char *buf, size_t hlen, struct client_resp *r, struct head *h,
		      struct error *e)
{
	const char *p = buf, *end = buf + hlen, *eol, *colon;
	char val[128];
	int status;

	h->content_length = -1;
	h->chunked = false;
	if (hlen < 12 || strncmp(p, "HTTP/1.", 7) || !isdigit((unsigned char)p[9]) ||
	    sscanf(p + 9, "%3d", &status) != 1 || status < 100 || status > 599)
		return error_set(e, 70, "shoald: malformed response status line");
	r->status = status;
	while ((eol = memchr(p, '\n', (size_t)(end - p)))) {
		p = eol + 1;
		eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			break;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon)
			continue;
		size_t klen = (size_t)(colon - p);
		if (resp_header(r, p, klen, colon + 1, eol))
			continue;
		head_value(colon + 1, eol, val, sizeof(val));
		if (klen == 14 && !strncasecmp(p, "Content-Length", 14))
			h->content_length = isdigit((unsigned char)val[0]) ? strtoll(val, NULL, 10) : -2;
		else if (klen == 17 && !strncasecmp(p, "Transfer-Encoding", 17))
			h->chunked = strcasestr(val, "chunked") != NULL;
	}
	if (h->content_length < -1 || h->content_length > CLIENT_RESP_MAX)
		return error_set(e, 70, "shoald: malformed Content-Length");
	return 0;
}

/* Length of the head including its blank line, or 0 if incomplete. */
static size_t head_length(const char *buf, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (buf[i] == '\n' && buf[i + 1] == '\n')
			return i + 2;
		if (i + 3 < len && !memcmp(buf + i, "\r\n\r\n", 4))
			return i + 4;
	}
	return 0;
}

int client_parse_response(const char *buf, size_t len, struct client_resp *r,
			  struct error *e)
{
	size_t hlen = head_length(buf, len);
	struct growbuf g = { 0 };
	struct chunker ch = { 0 };
	struct head h;

	memset(r, 0, sizeof(*r));
	if (!hlen || hlen > HEAD_MAX)
		return error_set(e, 70, "shoald: incomplete response headers");
	if (parse_head(buf, hlen, r, &h, e))
		return -1;
	buf += hlen;
	len -= hlen;
	if (h.chunked) {
		if (chunker_feed(&ch, buf, len, growbuf_add, &g) || ch.st != CH_DONE) {
			free(g.p);
			return error_set(e, 70, "shoald: malformed chunked response");
		}
	} else {
		if (h.content_length >= 0 && (size_t)h.content_length > len)
			return error_set(e, 70, "shoald: response shorter than its Content-Length");
		if (h.content_length >= 0)
			len = (size_t)h.content_length;
		if (growbuf_add(&g, buf, len) && len) {
			free(g.p);
			return error_set(e, 70, "shoald: response too large");
		}
	}
	r->body = g.p ? g.p : strdup("");
	r->len = g.len;
	return r->body ? 0 : error_set(e, 70, "out of memory");
}

/* ---- the transport: libcurl ---- */

/*
 * Requests and streams go through libcurl, over the daemon's Unix socket
 * (CURLOPT_UNIX_SOCKET_PATH) or, for an https:// endpoint, over TLS with the
 * bearer token.  The console's HTTP Upgrade needs the raw connection after
 * the 101, which libcurl does not hand over: there libcurl only connects
 * (CONNECT_ONLY, TLS included), the request head is written and the answer
 * read with curl_easy_send/recv and parsed above, and the connection is
 * given to the caller as a file descriptor: the socket itself on a Unix
 * socket, or one end of a socket pair that a thread relays through TLS.
 */

/* The bearer token: $SHOAL_TOKEN_FILE's first line, else $SHOAL_TOKEN. */
static int client_token(char *out, size_t size, struct error *e)
{
	const char *file = getenv("SHOAL_TOKEN_FILE"), *tok = getenv("SHOAL_TOKEN");
	FILE *f;

	out[0] = '\0';
	if (file && *file) {
		f = fopen(file, "re");
		if (!f)
			return error_set(e, 66, "%s: cannot read the token: %s", file, strerror(errno));
		if (!fgets(out, (int)size, f))
			out[0] = '\0';
		fclose(f);
		out[strcspn(out, "\r\n")] = '\0';
		if (!out[0])
			return error_set(e, 66, "%s: the token file is empty", file);
	} else if (tok && *tok) {
		snprintf(out, size, "%s", tok);
	}
	return 0;
}

/* A libcurl handle aimed at ep + path (host/httpc.c), with the token and
 * CA this process's environment names. */
static int xfer_open(struct httpc *x, const char *ep, const char *path, bool json_body,
		     struct error *e)
{
	char tok[512] = "";

	memset(x, 0, sizeof(*x));
	if (httpc_is_url(ep) && strncmp(ep, "http://", 7) && client_token(tok, sizeof(tok), e))
		return -1;
	return httpc_open(x, ep, path, json_body, tok, getenv("SHOAL_CACERT"), NULL, e);
}

/* A failed transfer as the CLI says it: 69 when shoald cannot be reached. */
static int xfer_error(struct httpc *x, const char *ep, CURLcode rc, struct error *e)
{
	/* a refused or missing socket: the system's words, as connect(2) gave them */
	const char *why = httpc_why(x, rc);

	if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
	    rc == CURLE_OPERATION_TIMEDOUT)
		return error_set(e, 69, "cannot reach shoald at %s: %s (is it running? --socket, "
				 "SHOAL_SOCKET, or shoal --host URL)", ep, why);
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
	    rc == CURLE_SSL_CACERT_BADFILE)
		return error_set(e, 69, "%s: TLS: %s (shoal --cacert FILE names the daemon's "
				 "certificate or its CA)", ep, why);
	return error_set(e, 70, "shoald at %s: %s", ep, why);
}

/* Response headers: Content-Type and Upgrade. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct client_resp *r = arg;
	size_t len = size * n;
	const char *colon = memchr(p, ':', len);

	if (colon)
		resp_header(r, p, (size_t)(colon - p), colon + 1, p + len);
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	return growbuf_add(arg, p, size * n) ? 0 : size * n;
}

int client_request(const char *sock, const char *method, const char *path,
		   const char *body, size_t len, struct client_resp *r, struct error *e)
{
	struct growbuf g = { 0 };
	struct httpc x;
	CURLcode rc;
	long status = 0;

	memset(r, 0, sizeof(*r));
	if (xfer_open(&x, sock, path, len > 0, e))
		return -1;
	curl_easy_setopt(x.c, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(x.c, CURLOPT_NOBODY, 1L);
	if (len || strcmp(method, "GET")) {
		curl_easy_setopt(x.c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(x.c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	curl_easy_setopt(x.c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(x.c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(x.c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(x.c, CURLOPT_WRITEDATA, &g);
	rc = curl_easy_perform(x.c);
	if (rc == CURLE_WRITE_ERROR) {
		error_set(e, 70, "shoald: response larger than %u bytes", CLIENT_RESP_MAX);
	} else if (rc) {
		xfer_error(&x, sock, rc, e);
	} else {
		curl_easy_getinfo(x.c, CURLINFO_RESPONSE_CODE, &status);
		r->status = (int)status;
		r->body = g.p ? g.p : strdup("");
		r->len = g.len;
		g.p = NULL;
	}
	free(g.p);
	httpc_close(&x);
	return r->body ? 0 : -1;
}

struct stream_ctx {
	CURL *c;
	int (*fn)(void *arg, const char *data, size_t n);
	void *arg;
	struct growbuf whole;   /* an answer other than 200: kept whole */
	bool stopped;           /* fn asked to stop */
};

static size_t on_stream(char *p, size_t size, size_t n, void *arg)
{
	struct stream_ctx *s = arg;
	long status = 0;

	curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return growbuf_add(&s->whole, p, size * n) ? 0 : size * n;
	if (s->fn(s->arg, p, size * n)) {
		s->stopped = true;
		return 0;
	}
	return size * n;
}

int client_stream(const char *sock, const char *path,
		  int (*fn)(void *arg, const char *data, size_t n), void *arg,
		  struct client_resp *r, struct error *e)
{
	struct stream_ctx s = { .fn = fn, .arg = arg };
	struct httpc x;
	CURLcode rc;
	long status = 0;

	memset(r, 0, sizeof(*r));
	if (xfer_open(&x, sock, path, false, e))
		return -1;
	s.c = x.c;
	curl_easy_setopt(x.c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(x.c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(x.c, CURLOPT_WRITEFUNCTION, on_stream);
	curl_easy_setopt(x.c, CURLOPT_WRITEDATA, &s);
	rc = curl_easy_perform(x.c);
	curl_easy_getinfo(x.c, CURLINFO_RESPONSE_CODE, &status);
	r->status = (int)status;
	if (rc && !(rc == CURLE_WRITE_ERROR && s.stopped) &&
	    !(status == 200 && (rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR))) {
		/* a 200 stream cut short ends the stream, as the daemon stopping does */
		free(s.whole.p);
		xfer_error(&x, sock, rc, e);
		httpc_close(&x);
		return -1;
	}
	r->body = s.whole.p ? s.whole.p : strdup("");
	r->len = s.whole.len;
	httpc_close(&x);
	return 0;
}

/* Wait until the connection libcurl holds can be read (or written). */
static void xfer_wait(CURL *c, bool out)
{
	curl_socket_t fd = CURL_SOCKET_BAD;
	struct pollfd p;

	curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &fd);
	if (fd == CURL_SOCKET_BAD)
		return;
	p = (struct pollfd){ .fd = fd, .events = out ? POLLOUT : POLLIN };
	poll(&p, 1, 1000);
}

static int xfer_send_all(CURL *c, const char *p, size_t n)
{
	while (n) {
		size_t sent = 0;
		CURLcode rc = curl_easy_send(c, p, n, &sent);
		if (rc == CURLE_AGAIN) {
			xfer_wait(c, true);
			continue;
		}
		if (rc)
			return -1;
		p += sent;
		n -= sent;
	}
	return 0;
}

/* Bytes from the connection: > 0, 0 at its end, -1 on an error. */
static ssize_t xfer_recv(CURL *c, char *buf, size_t size, bool wait)
{
	for (;;) {
		size_t got = 0;
		CURLcode rc = curl_easy_recv(c, buf, size, &got);
		if (rc == CURLE_AGAIN) {
			if (!wait)
				return -2;
			xfer_wait(c, false);
			continue;
		}
		return rc ? -1 : (ssize_t)got;
	}
}

/* The TLS console: relay between the socket pair's end and libcurl. */
struct relay {
	CURL *c;
	int fd;
};

static void *relay_main(void *arg)
{
	struct relay *rl = arg;
	curl_socket_t net = CURL_SOCKET_BAD;
	char buf[16384];
	ssize_t n;

	curl_easy_getinfo(rl->c, CURLINFO_ACTIVESOCKET, &net);
	for (;;) {
		struct pollfd p[2] = { { .fd = rl->fd, .events = POLLIN },
				       { .fd = net, .events = POLLIN } };
		/* TLS may hold decrypted bytes the socket no longer shows */
		while ((n = xfer_recv(rl->c, buf, sizeof(buf), false)) > 0)
			if (write_all(rl->fd, buf, (size_t)n))
				goto out;
		if (n != -2)
			goto out;
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			goto out;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(rl->fd, buf, sizeof(buf));
			if (n <= 0 || xfer_send_all(rl->c, buf, (size_t)n))
				goto out;
		}
	}
out:
	shutdown(rl->fd, SHUT_RDWR);
	close(rl->fd);
	curl_easy_cleanup(rl->c);
	free(rl);
	return NULL;
}

int client_upgrade(const char *sock, const char *path, const char *proto,
		   struct client_resp *r, struct error *e)
{
	struct growbuf g = { 0 };
	char head[2600], tok[512] = "", auth[600] = "";
	curl_socket_t net = CURL_SOCKET_BAD;
	struct httpc x;
	struct head h;
	size_t hlen = 0;
	CURLcode rc;
	ssize_t n;
	int fd = -1, len;

	memset(r, 0, sizeof(*r));
	if (xfer_open(&x, sock, path, false, e))
		return -1;
	curl_easy_setopt(x.c, CURLOPT_CONNECT_ONLY, 1L);
	rc = curl_easy_perform(x.c);
	if (rc) {
		xfer_error(&x, sock, rc, e);
		goto fail;
	}
	if (httpc_is_url(sock)) {
		if (client_token(tok, sizeof(tok), e))
			goto fail;
		if (tok[0])
			snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", tok);
	}
	len = snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: shoald\r\nUser-Agent: shoal\r\n"
		       "Connection: Upgrade\r\nUpgrade: %s\r\n%sContent-Length: 0\r\n\r\n",
		       path, proto, auth);
	if (len < 0 || len >= (int)sizeof(head)) {
		error_set(e, 64, "%.100s: request path too long", path);
		goto fail;
	}
	if (xfer_send_all(x.c, head, (size_t)len)) {
		error_set(e, 70, "shoald at %s: sending the request failed", sock);
		goto fail;
	}
	/* the head, then (not 101) the rest of the answer to its end */
	while (!(hlen = head_length(g.p ? g.p : "", g.len))) {
		char buf[4096];
		if (g.len > HEAD_MAX) {
			error_set(e, 70, "shoald: response headers too long");
			goto fail;
		}
		n = xfer_recv(x.c, buf, sizeof(buf), true);
		if (n <= 0) {
			error_set(e, 70, "shoald closed the connection before answering");
			goto fail;
		}
		if (growbuf_add(&g, buf, (size_t)n)) {
			error_set(e, 70, "out of memory");
			goto fail;
		}
	}
	if (parse_head(g.p, hlen, r, &h, e))
		goto fail;
	if (r->status != 101) {
		char buf[16384];
		/* to its Content-Length (the connection may stay open), else its end */
		while ((h.content_length < 0 || g.len < hlen + (size_t)h.content_length) &&
		       (n = xfer_recv(x.c, buf, sizeof(buf), true)) > 0)
			if (growbuf_add(&g, buf, (size_t)n))
				break;
		client_parse_response(g.p, g.len, r, e);
		goto fail;
	}
	r->len = g.len - hlen;
	r->body = malloc(r->len + 1);
	if (!r->body) {
		error_set(e, 70, "out of memory");
		goto fail;
	}
	memcpy(r->body, g.p + hlen, r->len);
	r->body[r->len] = '\0';
	free(g.p);
	if (!httpc_is_url(sock)) {
		/* a Unix socket: keep the socket itself, libcurl lets go of it */
		curl_easy_getinfo(x.c, CURLINFO_ACTIVESOCKET, &net);
		fd = net == CURL_SOCKET_BAD ? -1 : fcntl(net, F_DUPFD_CLOEXEC, 0);
		httpc_close(&x);
		if (fd < 0)
			error_set(e, 70, "shoald: the console connection was lost");
		return fd;
	} else {
		int sv[2];
		pthread_t t;
		struct relay *rl = malloc(sizeof(*rl));

		if (!rl || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
			free(rl);
			error_set(e, 70, "socketpair: %s", strerror(errno));
			client_resp_free(r);
			goto fail_nobuf;
		}
		*rl = (struct relay){ .c = x.c, .fd = sv[1] };
		curl_easy_setopt(x.c, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(x.hdrs);
		if (pthread_create(&t, NULL, relay_main, rl)) {
			close(sv[0]);
			close(sv[1]);
			free(rl);
			curl_easy_cleanup(x.c);
			error_set(e, 70, "cannot start the console relay");
			client_resp_free(r);
			return -1;
		}
		pthread_detach(t);
		return sv[0];
	}
fail:
	free(g.p);
fail_nobuf:
	httpc_close(&x);
	return -1;
}

int client_print_error(const struct client_resp *r)
{
	json_t *j = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));

	if (msg)
		log_error("%s", msg);
	else
		log_error("shoald answered HTTP %d", r->status);
	json_decref(j);
	return CLIENT_EXIT_API;
}

/* ---- shared by the verbs ---- */

int cli_set_output(struct cli_common *c, const char *v)
{
	c->json = !strcmp(v, "json");
	c->prometheus = !strcmp(v, "prometheus");
	if (c->json || c->prometheus || !strcmp(v, "table") || !strcmp(v, "text"))
		return 0;
	log_error("--output %s: expected json, table or prometheus", v);
	return -1;
}

int cli_parse_downtime_ms(const char *arg, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(arg, &end, 10);
	if (!*arg || *end || errno || *out < 1 || *out > 3600000) {
		log_error("--downtime-ms: '%s' is not a number of milliseconds from 1 to 3600000", arg);
		return EXIT_USAGE;
	}
	return 0;
}

int cli_parse_bandwidth(const char *arg, uint64_t *out)
{
	if (size_parse(arg, out) || *out == 0 || *out > (1ULL << 50)) {
		log_error("--bandwidth: '%s' is not a rate in bytes per second (100M, 1G ...)", arg);
		return EXIT_USAGE;
	}
	return 0;
}

int cli_print_result(const struct cli_common *c, const struct client_resp *r,
		     int (*print)(json_t *))
{
	json_t *j;
	int rc;

	if (r->status < 200 || r->status > 299)
		return client_print_error(r);
	if (!print) {
		if (c->json)
			fwrite(r->body, 1, r->len, stdout);
		return 0;
	}
	if (c->json) {
		fwrite(r->body, 1, r->len, stdout);
		return 0;
	}
	j = json_loadb(r->body, r->len, 0, NULL);
	if (!j) {
		log_error("shoald answered with something that is not JSON");
		return EXIT_HOST;
	}
	rc = print(j);
	json_decref(j);
	return rc;
}

/* One format for every size the CLI prints: "512" bytes below 1 KiB, else
 * the largest binary unit it reaches, exact ("64M", "2G") or to one decimal
 * ("11.5M"); the JSON output always carries the byte count. */
void cli_fmt_size(long long b, char *out, size_t size)
{
	static const char units[] = "KMGTP";
	long long div = 1;
	int u = -1;

	if (b < 1024) {
		snprintf(out, size, "%lld", b);
		return;
	}
	while (u < 4 && b / div >= 1024) {
		div *= 1024;
		u++;
	}
	if (b % div == 0)
		snprintf(out, size, "%lld%c", b / div, units[u]);
	else
		snprintf(out, size, "%.1f%c", (double)b / (double)div, units[u]);
}

void cli_fmt_duration(double s, char *out, size_t size)
{
	long long t = (long long)s;

	if (s < 0)
		snprintf(out, size, "-");
	else if (t >= 86400)
		snprintf(out, size, "%lldd%lldh", t / 86400, t % 86400 / 3600);
	else if (t >= 3600)
		snprintf(out, size, "%lldh%02lldm", t / 3600, t % 3600 / 60);
	else if (t >= 60)
		snprintf(out, size, "%lldm%02llds", t / 60, t % 60);
	else
		snprintf(out, size, "%.1fs", s);
}

