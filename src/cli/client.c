/*
 * client.c - HTTP/1.1 over a Unix socket for the CLI (see client.h).
 *
 * The parser is strict about what it needs and bounded everywhere: headers
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

#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"

#define HEAD_MAX (64 * 1024)

const char *client_socket(const char *opt)
{
	const char *env = getenv("SHOAL_SOCKET");

	if (opt && *opt)
		return opt;
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
	while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t' || eol[-1] == '\r'))
		eol--;
	n = (size_t)(eol - v) < size - 1 ? (size_t)(eol - v) : size - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
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
		head_value(colon + 1, eol, val, sizeof(val));
		size_t klen = (size_t)(colon - p);
		if (klen == 12 && !strncasecmp(p, "Content-Type", 12))
			snprintf(r->ctype, sizeof(r->ctype), "%s", val);
		else if (klen == 7 && !strncasecmp(p, "Upgrade", 7))
			snprintf(r->upgrade, sizeof(r->upgrade), "%s", val);
		else if (klen == 14 && !strncasecmp(p, "Content-Length", 14))
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

/* ---- the socket ---- */

/* Connect to the daemon's socket, or say why not (exit status 69). */
static int client_connect(const char *sock, struct error *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(sock) >= sizeof(sa.sun_path))
		return error_set(e, 64, "%s: path too long for a Unix socket", sock);
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return error_set(e, 70, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		error_set(e, 69, "cannot reach shoald at %s: %s (is it running? --socket or SHOAL_SOCKET)",
			  sock, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Send the request line, headers and body. */
static int client_send(int fd, const char *method, const char *path, const char *extra,
		       const char *body, size_t len, struct error *e)
{
	char head[2048];
	int n;

	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: shoald\r\nUser-Agent: shoal\r\n%s%s"
		     "Content-Length: %zu\r\n\r\n", method, path,
		     extra ? extra : "Connection: close\r\n",
		     len ? "Content-Type: application/json\r\n" : "", len);
	if (n < 0 || n >= (int)sizeof(head))
		return error_set(e, 64, "%.100s: request path too long", path);
	if (write_all(fd, head, (size_t)n) || (len && write_all(fd, body, len)))
		return error_set(e, 70, "shoald: sending the request: %s", strerror(errno));
	return 0;
}

/* Read until the head is complete; the buffer may hold body bytes too. */
static int read_head(int fd, struct growbuf *g, size_t *hlen, struct error *e)
{
	char buf[4096];
	ssize_t n;

	for (;;) {
		*hlen = head_length(g->p ? g->p : "", g->len);
		if (*hlen)
			return 0;
		if (g->len > HEAD_MAX)
			return error_set(e, 70, "shoald: response headers too long");
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return error_set(e, 70, "shoald closed the connection before answering");
		if (growbuf_add(g, buf, (size_t)n))
			return error_set(e, 70, "out of memory");
	}
}

/* Read to EOF, appending to g. */
static int read_rest(int fd, struct growbuf *g, struct error *e)
{
	char buf[16384];
	ssize_t n;

	for (;;) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return error_set(e, 70, "shoald: reading the response: %s", strerror(errno));
		if (n == 0)
			return 0;
		if (growbuf_add(g, buf, (size_t)n))
			return error_set(e, 70, "shoald: response too large");
	}
}

int client_request(const char *sock, const char *method, const char *path,
		   const char *body, size_t len, struct client_resp *r, struct error *e)
{
	struct growbuf g = { 0 };
	int fd, rc = -1;

	memset(r, 0, sizeof(*r));
	fd = client_connect(sock, e);
	if (fd < 0)
		return -1;
	if (!client_send(fd, method, path, NULL, body, len, e) && !read_rest(fd, &g, e))
		rc = client_parse_response(g.p ? g.p : "", g.len, r, e);
	free(g.p);
	close(fd);
	return rc;
}

int client_stream(const char *sock, const char *path,
		  int (*fn)(void *arg, const char *data, size_t n), void *arg,
		  struct client_resp *r, struct error *e)
{
	struct growbuf g = { 0 };
	struct chunker ch = { 0 };
	char buf[16384];
	struct head h;
	size_t hlen;
	ssize_t n;
	int fd, rc = -1;

	memset(r, 0, sizeof(*r));
	fd = client_connect(sock, e);
	if (fd < 0)
		return -1;
	if (client_send(fd, "GET", path, NULL, NULL, 0, e) || read_head(fd, &g, &hlen, e) ||
	    parse_head(g.p, hlen, r, &h, e))
		goto out;
	if (r->status != 200 || !h.chunked) {     /* a whole answer: read it */
		if (!read_rest(fd, &g, e))
			rc = client_parse_response(g.p, g.len, r, e);
		goto out;
	}
	rc = 0;
	if (chunker_feed(&ch, g.p + hlen, g.len - hlen, fn, arg))
		goto out;
	while (ch.st != CH_DONE) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || chunker_feed(&ch, buf, (size_t)n, fn, arg))
			break;
	}
out:
	free(g.p);
	close(fd);
	return rc;
}

int client_upgrade(const char *sock, const char *path, const char *proto,
		   struct client_resp *r, struct error *e)
{
	struct growbuf g = { 0 };
	char extra[256];
	struct head h;
	size_t hlen;
	int fd;

	memset(r, 0, sizeof(*r));
	fd = client_connect(sock, e);
	if (fd < 0)
		return -1;
	snprintf(extra, sizeof(extra), "Connection: Upgrade\r\nUpgrade: %s\r\n", proto);
	if (client_send(fd, "GET", path, extra, NULL, 0, e) || read_head(fd, &g, &hlen, e) ||
	    parse_head(g.p, hlen, r, &h, e))
		goto fail;
	if (r->status == 101) {
		r->len = g.len - hlen;
		r->body = malloc(r->len + 1);
		if (!r->body)
			goto fail;
		memcpy(r->body, g.p + hlen, r->len);
		free(g.p);
		return fd;
	}
	if (!read_rest(fd, &g, e))
		client_parse_response(g.p, g.len, r, e);
fail:
	free(g.p);
	close(fd);
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

