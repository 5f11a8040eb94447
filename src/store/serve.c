/*
 * serve.c - `shoal store serve`: the image server (docs/store.md "The
 * image server").  Hosts pull images from it over HTTPS; both ends have a
 * key pair, and the client's public key is its identity.
 *
 *   GET /v1/images                 the images granted to this client (JSON)
 *   GET /v1/images/NAME/manifest   size, format, chain identity, the
 *                                  ordered chunk hashes and lengths (JSON)
 *   GET /v1/images/NAME/raw        the image's bytes, with Range
 *   GET /v1/chunks/HEX             one chunk's bytes
 *   GET /v1/snapshots/NAME         a snapshot object: its files, disks and
 *                                  each part's chunks (store/snapobj.c)
 *   GET /v1/snapshots/NAME/PART/raw  a part's bytes, with Range, as /raw
 *
 * Why libmicrohttpd: shoald already links it (so `shoal` maps nothing it
 * did not map before), it does HTTP/1.1 parsing, limits (connections,
 * request memory, timeouts) and Range-free streaming for us, and
 * Debian's build uses GnuTLS, which asks the client for a certificate
 * when given a trust list (MHD_OPTION_HTTPS_MEM_TRUST).  libmicrohttpd
 * does not check that certificate; this file does, on the first request
 * of each connection, with gnutls_certificate_verify_peers2 against the
 * client CA (signature chain, validity dates), and then names the client
 * by the SHA-256 of the certificate's public key (store/grants.c).  The
 * two GnuTLS calls come through base/dl_lib.c from the libgnutls that
 * libmicrohttpd already loaded, so the binary does not link it.  OpenSSL
 * directly would have meant writing the HTTP side ourselves.
 *
 * Invariants, and what a client may not do:
 * - Every request is authenticated before it is parsed further: no
 *   certificate, or one the client CA did not sign (or expired), is 401;
 *   so is a Shoal-VM-Proof header that does not hold (store/vmkey.c): a
 *   request with one acts for that VM, and gets what the client host was
 *   granted plus what was granted to the host for that VM.
 * - A client sees only images granted to it (DIR/grants, read again when
 *   the file changes, so a revoke counts at the next request); any other
 *   name, existing or not, is 403, so names are not disclosed.  A chunk is
 *   served only if some image granted to the client refers to it.
 * - Every chunk sent was read back and checked against its SHA-256 first
 *   (store_chunk_read).  A damaged chunk is a 500 naming the image, the
 *   segment and the chunk; in the middle of a /raw stream, whose status
 *   is already sent, the connection is cut (the client sees a short
 *   transfer) and the server logs the same line.  Other requests go on.
 * - Only GET and HEAD; no request body; a URL or headers past 16 KiB are
 *   refused by libmicrohttpd (414/431); at most max_connections at once,
 *   each on its own thread, idle ones closed after timeout_s.
 * - The store is opened read-only (a shared lock) while requests are in
 *   flight and closed when the server is idle, so `shoal store add`, rm
 *   and gc run between transfers (a writer waits up to 30 s).  One lock
 *   serialises the store handle and the caches; the work under it is one
 *   chunk's read and check.
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include "base/mhd_dl.h"
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "base/dl_lib.h"
#include "base/exitcode.h"
#include "store/grants.h"
#include "store/serve.h"
#include "store/snapobj.h"
#include "store/store.h"
#include "store/vmkey.h"

#define PEM_MAX (1u << 20)
#define IDLE_CLOSE_MS 300	/* close the store after this long with no request */

/* ---- the two GnuTLS functions, from the library libmicrohttpd loaded ---- */

static struct {
	int (*verify_peers2)(gnutls_session_t, unsigned int *);
	const gnutls_datum_t *(*get_peers)(gnutls_session_t, unsigned int *);
} gt;
static const char *const gt_names[] = { "gnutls_certificate_verify_peers2", "gnutls_certificate_get_peers" };
_Static_assert(sizeof(gt) == sizeof(gt_names) / sizeof(gt_names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib gt_lib = DL_LIB_INIT("libgnutls.so.30", "libgnutls30", gt_names, &gt);

/* ---- server state ---- */

struct img_hashes {		/* the sorted chunk hashes of one image */
	char name[65];
	ino_t ino;
	struct timespec mtime;
	off_t size;
	uint8_t (*h)[32];
	size_t n;
};

struct srv {
	const char *dir;
	pthread_mutex_t mu;	/* everything below */
	struct store *st;	/* open while requests are in flight */
	unsigned users;
	struct timespec idle_since;
	uint32_t chunk_max;
	uint8_t *cbuf;		/* one chunk, for /v1/chunks */
	struct store_grant *g;	/* DIR/grants, as of (gino, gmtime, gsize) */
	size_t ng;
	ino_t gino;
	struct timespec gmtime;
	off_t gsize;
	bool gloaded;
	struct img_hashes *ih;
	size_t nih;
	char last_log[300];
};

struct conn {			/* per connection: who the client is */
	int state;		/* 0 not yet checked, 1 known, -1 refused */
	char fp[65];
	char vm[65];		/* the request's VM (its proof checked), or "" */
	char why[200];
	char addr[64];
};

static int64_t mono_ms(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000 + t->tv_nsec / 1000000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	flockfile(stderr);
	fprintf(stderr, "shoal: serve: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

/* With mu held: the store, opened if it is not. */
static struct store *srv_store(struct srv *s, struct error *e)
{
	if (!s->st) {
		if (store_open(&s->st, s->dir, false, e))
			return NULL;
		s->chunk_max = store_get_params(s->st)->chunk.max;
		free(s->cbuf);
		s->cbuf = malloc(s->chunk_max);
		if (!s->cbuf) {
			store_close(s->st);
			s->st = NULL;
			error_set(e, EXIT_HOST, "out of memory");
			return NULL;
		}
	}
	return s->st;
}

static void srv_enter(struct srv *s)
{
	pthread_mutex_lock(&s->mu);
	s->users++;
	pthread_mutex_unlock(&s->mu);
}

static void srv_leave(struct srv *s)
{
	pthread_mutex_lock(&s->mu);
	if (!--s->users)
		clock_gettime(CLOCK_MONOTONIC, &s->idle_since);
	pthread_mutex_unlock(&s->mu);
}

/* With mu held: the grants, read again if the file changed. */
static int srv_grants(struct srv *s, struct error *e)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/grants", s->dir);
	if (stat(path, &st)) {
		memset(&st, 0, sizeof(st));
		if (errno != ENOENT)
			return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	}
	if (s->gloaded && st.st_ino == s->gino && st.st_size == s->gsize &&
	    st.st_mtim.tv_sec == s->gmtime.tv_sec && st.st_mtim.tv_nsec == s->gmtime.tv_nsec)
		return 0;
	free(s->g);
	s->g = NULL;
	s->gloaded = false;
	if (store_grants_load(s->dir, &s->g, &s->ng, e))
		return -1;
	s->gino = st.st_ino;
	s->gsize = st.st_size;
	s->gmtime = st.st_mtim;
	s->gloaded = true;
	return 0;
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* With mu held: the sorted chunk hashes of image `name`, kept while its
 * manifest file is unchanged.  NULL with e if it cannot be read. */
static struct img_hashes *srv_hashes(struct srv *s, const char *name, struct error *e)
{
	char path[4096];
	struct stat st;
	struct img_hashes *ih = NULL;
	struct store_manifest m;
	struct store *sto;

	bool snap = false;

	snprintf(path, sizeof(path), "%s/images/%s", s->dir, name);
	if (stat(path, &st)) {
		/* A snapshot object: the chunks of all its parts. */
		snprintf(path, sizeof(path), "%s/snapshots/%s/snapshot.json", s->dir, name);
		if (stat(path, &st)) {
			error_set(e, EXIT_NOINPUT, "no image named '%s' in the store", name);
			return NULL;
		}
		snap = true;
	}
	for (size_t i = 0; i < s->nih; i++)
		if (!strcmp(s->ih[i].name, name))
			ih = &s->ih[i];
	if (ih && ih->ino == st.st_ino && ih->size == st.st_size &&
	    ih->mtime.tv_sec == st.st_mtim.tv_sec && ih->mtime.tv_nsec == st.st_mtim.tv_nsec)
		return ih;
	if (snap) {
		uint8_t(*h)[32];
		size_t n;

		if (!(sto = srv_store(s, e)) || store_snap_hashes(sto, name, &h, &n, e))
			return NULL;
		m.n = (uint32_t)n;
		m.c = calloc(n + 1, sizeof(*m.c));
		for (size_t i = 0; m.c && i < n; i++)
			memcpy(m.c[i].hash, h[i], 32);
		free(h);
		if (!m.c) {
			error_set(e, EXIT_HOST, "out of memory");
			return NULL;
		}
	} else if (!(sto = srv_store(s, e)) || store_manifest_get(sto, name, &m, e)) {
		return NULL;
	}
	if (!ih) {
		struct img_hashes *v = realloc(s->ih, (s->nih + 1) * sizeof(*v));

		if (!v) {
			store_manifest_free(&m);
			error_set(e, EXIT_HOST, "out of memory");
			return NULL;
		}
		s->ih = v;
		ih = &s->ih[s->nih++];
		memset(ih, 0, sizeof(*ih));
		snprintf(ih->name, sizeof(ih->name), "%s", name);
	}
	free(ih->h);
	ih->h = malloc(((size_t)m.n + 1) * 32);
	ih->n = 0;
	if (!ih->h) {
		store_manifest_free(&m);
		ih->ino = 0;
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	for (uint32_t i = 0; i < m.n; i++)
		if (!(m.c[i].flags & STORE_CHUNK_ZERO))
			memcpy(ih->h[ih->n++], m.c[i].hash, 32);
	qsort(ih->h, ih->n, 32, hash_cmp);
	store_manifest_free(&m);
	ih->ino = st.st_ino;
	ih->size = st.st_size;
	ih->mtime = st.st_mtim;
	return ih;
}

/* ---- responses ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     const void *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "TLS-client-certificate");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);
	enum MHD_Result ret;

	json_decref(j);
	if (!text)
		return MHD_NO;
	ret = reply(c, status, "application/json", text, strlen(text));
	free(text);
	return ret;
}

/* A refusal: {"error": why, "status": N}, and one line on stderr. */
static enum MHD_Result refuse(struct MHD_Connection *c, const struct conn *k, const char *method,
			      const char *url, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static enum MHD_Result refuse(struct MHD_Connection *c, const struct conn *k, const char *method,
			      const char *url, unsigned status, const char *fmt, ...)
{
	char why[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	say("%s client %.16s: %s %.200s: %u %s", k ? k->addr : "?", k && k->state == 1 ? k->fp : "-",
	    method, url, status, why);
	return reply_json(c, status, json_pack("{s:s, s:i}", "error", why, "status", (int)status));
}

/* Who is at the other end: verify its certificate once per connection. */
static void identify(struct MHD_Connection *c, struct conn *k)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	gnutls_session_t sess = ci ? (gnutls_session_t)ci->tls_session : NULL;
	const gnutls_datum_t *certs;
	unsigned int n = 0, status = 0;

	k->state = -1;
	if (!dl_lib_ready(&gt_lib)) {
		snprintf(k->why, sizeof(k->why), "the server cannot check client certificates: %.150s", gt_lib.why);
		return;
	}
	if (!sess || !(certs = gt.get_peers(sess, &n)) || !n) {
		snprintf(k->why, sizeof(k->why),
			 "no client certificate: this server takes only clients with a certificate signed by its client CA");
		return;
	}
	if (gt.verify_peers2(sess, &status) < 0 || status) {
		snprintf(k->why, sizeof(k->why), "client certificate refused: %s",
			 status & GNUTLS_CERT_SIGNER_NOT_FOUND ? "not signed by this server's client CA" :
			 status & GNUTLS_CERT_EXPIRED ? "expired" :
			 status & GNUTLS_CERT_NOT_ACTIVATED ? "not valid yet" :
			 status & GNUTLS_CERT_REVOKED ? "revoked" :
			 status & GNUTLS_CERT_SIGNATURE_FAILURE ? "bad signature" : "does not verify");
		return;
	}
	if (store_fingerprint_cert_der(certs[0].data, certs[0].size, k->fp)) {
		snprintf(k->why, sizeof(k->why), "client certificate refused: its public key cannot be read");
		return;
	}
	k->state = 1;
}

static bool valid_hex64(const char *p, uint8_t out[32])
{
	if (strlen(p) != 64)
		return false;
	for (int i = 0; i < 32; i++) {
		unsigned v;

		if (!strchr("0123456789abcdef", p[2 * i]) || !strchr("0123456789abcdef", p[2 * i + 1]) ||
		    sscanf(p + 2 * i, "%2x", &v) != 1)
			return false;
		out[i] = (uint8_t)v;
	}
	return true;
}

/* The request's Shoal-VM-Proof, if any: k->vm is the VM it acts for, or
 * "" without one; -1 (with why) for a proof that does not hold, which is
 * refused, never ignored. */
static int vm_proof(struct srv *s, struct MHD_Connection *c, struct conn *k, char *why, size_t n)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, STORE_VMPROOF_HEADER);
	struct error e = { 0 };
	const uint8_t *key;
	uint8_t pub[32], sig[64];
	char vm[65];
	uint64_t until;

	k->vm[0] = 0;
	if (!v)
		return 0;
	if (store_vmproof_parse(v, vm, &until, sig, why, n))
		return -1;
	pthread_mutex_lock(&s->mu);
	if (srv_grants(s, &e)) {
		pthread_mutex_unlock(&s->mu);
		snprintf(why, n, "%.250s", e.msg);
		return -1;
	}
	key = store_grants_vm_key(s->g, s->ng, vm);
	if (key)
		memcpy(pub, key, 32);
	pthread_mutex_unlock(&s->mu);
	if (!key) {
		snprintf(why, n, "VM key %.16s... is named by no grant of this store", vm);
		return -1;
	}
	if (store_vmproof_check(pub, k->fp, vm, until, sig, (uint64_t)time(NULL), why, n))
		return -1;
	memcpy(k->vm, vm, sizeof(vm));
	return 0;
}

/* /v1/images */
static enum MHD_Result get_images(struct srv *s, struct MHD_Connection *c, struct conn *k,
				  const char *method, const char *url)
{
	struct error e = { 0 };
	json_t *arr = json_array();
	struct store *sto;

	pthread_mutex_lock(&s->mu);
	if (srv_grants(s, &e) || !(sto = srv_store(s, &e))) {
		pthread_mutex_unlock(&s->mu);
		json_decref(arr);
		return refuse(c, k, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", e.msg);
	}
	for (size_t i = 0; i < s->ng; i++) {
		struct store_manifest m;
		char sum[65];

		bool seen = false;

		if (!store_grant_applies(&s->g[i], k->fp, k->vm))
			continue;
		for (size_t j = 0; j < i && !seen; j++)	/* granted twice: host and VM */
			seen = store_grant_applies(&s->g[j], k->fp, k->vm) && !strcmp(s->g[j].image, s->g[i].image);
		if (seen || store_manifest_get(sto, s->g[i].image, &m, NULL))
			continue;
		store_hash_hex(m.sum, sum);
		json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s?, s:I, s:I, s:s}", "name", s->g[i].image,
						     "size", (json_int_t)m.size, "format", m.format, "chain_id",
						     m.chain_id[0] ? m.chain_id : NULL, "chunks", (json_int_t)m.n,
						     "added", (json_int_t)m.added, "sha256", sum));
		store_manifest_free(&m);
	}
	pthread_mutex_unlock(&s->mu);
	return reply_json(c, MHD_HTTP_OK, json_pack("{s:s, s:s?, s:o}", "client", k->fp, "vm",
						    k->vm[0] ? k->vm : NULL, "images", arr));
}

/* With mu held: may this client see image `name`?  0 yes; else a status
 * and why. */
static unsigned may_see(struct srv *s, const struct conn *k, const char *name, char *why, size_t n)
{
	struct error e = { 0 };

	if (srv_grants(s, &e)) {
		snprintf(why, n, "%.250s", e.msg);
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	if (!store_granted(s->g, s->ng, k->fp, k->vm, name)) {
		if (k->vm[0])
			snprintf(why, n, "client %.16s... has no grant for image '%s' (for itself or for VM key %.16s...)",
				 k->fp, name, k->vm);
		else
			snprintf(why, n, "client %.16s... has no grant for image '%s'", k->fp, name);
		return MHD_HTTP_FORBIDDEN;
	}
	return 0;
}

static enum MHD_Result get_manifest(struct srv *s, struct MHD_Connection *c, struct conn *k,
				    const char *method, const char *url, const char *name)
{
	struct error e = { 0 };
	struct store_manifest m;
	struct store *sto;
	char why[300], hex[65], sum[65];
	unsigned st;
	json_t *arr;

	pthread_mutex_lock(&s->mu);
	if ((st = may_see(s, k, name, why, sizeof(why)))) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, st, "%s", why);
	}
	if (!(sto = srv_store(s, &e)) || store_manifest_get(sto, name, &m, &e)) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, e.status == EXIT_NOINPUT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_INTERNAL_SERVER_ERROR,
			      "image %s: %s", name, e.msg);
	}
	pthread_mutex_unlock(&s->mu);
	arr = json_array();
	for (uint32_t i = 0; i < m.n; i++) {
		if (m.c[i].flags & STORE_CHUNK_ZERO) {
			json_array_append_new(arr, json_pack("{s:I, s:b}", "len", (json_int_t)m.c[i].len, "zero", 1));
			continue;
		}
		store_hash_hex(m.c[i].hash, hex);
		json_array_append_new(arr, json_pack("{s:s, s:I}", "hash", hex, "len", (json_int_t)m.c[i].len));
	}
	store_hash_hex(m.sum, sum);
	json_t *j = json_pack("{s:s, s:I, s:s, s:s?, s:I, s:b, s:I, s:s, s:s, s:o}", "name", name, "size",
			      (json_int_t)m.size, "format", m.format, "chain_id",
			      m.chain_id[0] ? m.chain_id : NULL, "generation", (json_int_t)m.generation,
			      "chain_current", m.chain_current, "added", (json_int_t)m.added, "hash",
			      "sha256", "sha256", sum, "chunks", arr);
	if (m.parent[0])	/* its parent in a chain (pull keeps the link where it has that image) */
		json_object_set_new(j, "parent", json_pack("{s:s, s:s, s:I}", "name", m.parent, "chain_id",
							   m.parent_chain_id, "generation",
							   (json_int_t)m.parent_generation));
	store_manifest_free(&m);
	return reply_json(c, MHD_HTTP_OK, j);
}

/* /v1/snapshots/NAME: a snapshot object, its parts' chunk lists inline
 * (store/snapobj.c); granted like an image, by name. */
static enum MHD_Result get_snapshot(struct srv *s, struct MHD_Connection *c, struct conn *k,
				    const char *method, const char *url, const char *name)
{
	struct error e = { 0 };
	struct store *sto;
	char why[300];
	unsigned st;
	json_t *j;

	pthread_mutex_lock(&s->mu);
	if ((st = may_see(s, k, name, why, sizeof(why)))) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, st, "%s", why);
	}
	if (!(sto = srv_store(s, &e)) || !(j = store_snap_describe(sto, name, &e))) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, e.status == EXIT_NOINPUT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_INTERNAL_SERVER_ERROR,
			      "snapshot %s: %s", name, e.msg);
	}
	pthread_mutex_unlock(&s->mu);
	return reply_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result get_chunk(struct srv *s, struct MHD_Connection *c, struct conn *k,
				 const char *method, const char *url, const char *hex)
{
	struct error e = { 0 };
	uint8_t h[32];
	uint32_t len;
	struct store *sto;
	bool ok = false;

	if (!valid_hex64(hex, h))
		return refuse(c, k, method, url, MHD_HTTP_BAD_REQUEST,
			      "chunk name '%.80s': not a SHA-256 (64 lowercase hex digits)", hex);
	pthread_mutex_lock(&s->mu);
	if (srv_grants(s, &e)) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", e.msg);
	}
	for (size_t i = 0; i < s->ng && !ok; i++) {
		struct img_hashes *ih;

		if (!store_grant_applies(&s->g[i], k->fp, k->vm) || !(ih = srv_hashes(s, s->g[i].image, NULL)))
			continue;
		ok = bsearch(h, ih->h, ih->n, 32, hash_cmp) != NULL;
	}
	if (!ok) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, MHD_HTTP_FORBIDDEN,
			      "client %.16s...: chunk %.16s is in no image granted to it", k->fp, hex);
	}
	if (!(sto = srv_store(s, &e)) || store_chunk_read(sto, h, s->cbuf, &len, &e)) {
		pthread_mutex_unlock(&s->mu);
		return refuse(c, k, method, url, e.status == EXIT_NOINPUT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_INTERNAL_SERVER_ERROR,
			      "%s", e.msg);
	}
	enum MHD_Result r = reply(c, MHD_HTTP_OK, "application/octet-stream", s->cbuf, len);
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* ---- /raw: the image's bytes, rebuilt chunk by chunk, with Range ---- */

struct raw {
	struct srv *s;
	struct conn k;
	char name[65];
	struct store_manifest m;
	uint64_t *off;		/* off[i]: where chunk i starts; off[n] = size */
	uint64_t start, end;	/* the bytes sent: [start, end) */
	uint32_t cur;		/* chunk in buf, or UINT32_MAX */
	uint8_t *buf;
};

static void raw_free(void *cls)
{
	struct raw *r = cls;

	store_manifest_free(&r->m);
	free(r->off);
	free(r->buf);
	srv_leave(r->s);
	free(r);
}

/* Make chunk i the one in r->buf. */
static int raw_load(struct raw *r, uint32_t i, struct error *e)
{
	uint32_t len;
	struct store *sto;

	if (r->cur == i)
		return 0;
	r->cur = UINT32_MAX;
	if (r->m.c[i].flags & STORE_CHUNK_ZERO) {
		memset(r->buf, 0, r->m.c[i].len);
		r->cur = i;
		return 0;
	}
	pthread_mutex_lock(&r->s->mu);
	if (!(sto = srv_store(r->s, e)) || store_chunk_read(sto, r->m.c[i].hash, r->buf, &len, e)) {
		pthread_mutex_unlock(&r->s->mu);
		return error_prefix(e, "image %s at offset %llu", r->name, (unsigned long long)r->off[i]);
	}
	pthread_mutex_unlock(&r->s->mu);
	if (len != r->m.c[i].len)
		return error_set(e, EXIT_BADSTATE, "image %s at offset %llu: chunk length %u, the manifest says %u",
				 r->name, (unsigned long long)r->off[i], len, r->m.c[i].len);
	r->cur = i;
	return 0;
}

static uint32_t raw_find(const struct raw *r, uint64_t pos)
{
	uint32_t lo = 0, hi = r->m.n;	/* off[lo] <= pos < off[hi] */

	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (r->off[mid] <= pos)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static ssize_t raw_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct raw *r = cls;
	struct error e = { 0 };
	uint64_t at = r->start + pos;
	uint32_t i;
	size_t n;

	if (at >= r->end)
		return MHD_CONTENT_READER_END_OF_STREAM;
	i = raw_find(r, at);
	if (raw_load(r, i, &e)) {
		say("%s client %.16s: GET /v1/images/%s/raw: cut at byte %llu: %s", r->k.addr, r->k.fp, r->name,
		    (unsigned long long)at, e.msg);
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	n = (size_t)(r->off[i + 1] - at);
	if (n > max)
		n = max;
	if (n > r->end - at)
		n = (size_t)(r->end - at);
	memcpy(out, r->buf + (at - r->off[i]), n);
	return (ssize_t)n;
}

/* Parse "bytes=A-B", "bytes=A-" or "bytes=-N" against size: 1 and
 * [*a, *b) if it is one satisfiable range, 0 if malformed or not
 * satisfiable (416). */
static int parse_range(const char *v, uint64_t size, uint64_t *a, uint64_t *b)
{
	unsigned long long x = 0, y = 0;
	int nx = 0, ny = 0;
	const char *p;

	while (*v == ' ')
		v++;
	if (strncmp(v, "bytes=", 6))
		return 0;
	p = v + 6;
	while (*p == ' ')
		p++;
	for (; *p >= '0' && *p <= '9' && nx < 19; p++, nx++)
		x = x * 10 + (unsigned)(*p - '0');
	if (*p++ != '-')
		return 0;
	for (; *p >= '0' && *p <= '9' && ny < 19; p++, ny++)
		y = y * 10 + (unsigned)(*p - '0');
	while (*p == ' ')
		p++;
	if (*p || (!nx && !ny) || !size)
		return 0;
	if (!nx) {		/* the last y bytes */
		if (!y)
			return 0;
		*a = y >= size ? 0 : size - y;
		*b = size;
		return 1;
	}
	if (x >= size || (ny && y < x))
		return 0;
	*a = x;
	*b = ny && y < size - 1 ? y + 1 : size;
	return 1;
}

/* An image's bytes; with `part`, those of part PART of snapshot `name`
 * (/v1/snapshots/NAME/PART/raw, granted as the snapshot is). */
static enum MHD_Result get_raw(struct srv *s, struct MHD_Connection *c, struct conn *k,
			       const char *method, const char *url, const char *name, const char *part)
{
	struct error e = { 0 };
	struct store *sto;
	struct raw *r;
	struct MHD_Response *resp;
	char why[300], etag[70], cr[100], sum[65];
	const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	const char *ifr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_RANGE);
	unsigned st, status = MHD_HTTP_OK;
	enum MHD_Result ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return MHD_NO;
	r->s = s;
	r->k = *k;
	r->cur = UINT32_MAX;
	snprintf(r->name, sizeof(r->name), "%s", name);
	srv_enter(s);
	pthread_mutex_lock(&s->mu);
	if ((st = may_see(s, k, name, why, sizeof(why)))) {
		pthread_mutex_unlock(&s->mu);
		raw_free(r);
		return refuse(c, k, method, url, st, "%s", why);
	}
	if (!(sto = srv_store(s, &e)) ||
	    (part ? store_snap_part_manifest(sto, name, part, &r->m, &e) : store_manifest_get(sto, name, &r->m, &e))) {
		pthread_mutex_unlock(&s->mu);
		raw_free(r);
		return refuse(c, k, method, url, e.status == EXIT_NOINPUT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_INTERNAL_SERVER_ERROR,
			      "%s %s: %s", part ? "snapshot" : "image", name, e.msg);
	}
	pthread_mutex_unlock(&s->mu);
	r->off = malloc(((size_t)r->m.n + 1) * sizeof(*r->off));
	r->buf = malloc(s->chunk_max ? s->chunk_max : (1u << 20));
	if (!r->off || !r->buf) {
		raw_free(r);
		return refuse(c, k, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	r->off[0] = 0;
	for (uint32_t i = 0; i < r->m.n; i++) {
		if (r->m.c[i].len > s->chunk_max) {
			raw_free(r);
			return refuse(c, k, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
				      "image %s: damaged manifest (chunk %u too long)", name, i);
		}
		r->off[i + 1] = r->off[i] + r->m.c[i].len;
	}
	store_hash_hex(r->m.sum, sum);
	snprintf(etag, sizeof(etag), "\"%s\"", sum);
	r->start = 0;
	r->end = r->m.size;
	if (range && (!ifr || !strcmp(ifr, etag))) {
		if (!parse_range(range, r->m.size, &r->start, &r->end)) {
			uint64_t size = r->m.size;

			raw_free(r);
			ret = refuse(c, k, method, url, MHD_HTTP_RANGE_NOT_SATISFIABLE,
				     "Range '%.100s': not one satisfiable range of bytes=A-B, A- or -N within %llu bytes",
				     range, (unsigned long long)size);
			return ret;
		}
		status = MHD_HTTP_PARTIAL_CONTENT;
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)r->start,
			 (unsigned long long)r->end - 1, (unsigned long long)r->m.size);
	}
	/* The first chunk is read before the status goes out, so a damaged
	 * one is a 500 naming it rather than a cut connection. */
	if (r->end > r->start && raw_load(r, raw_find(r, r->start), &e)) {
		raw_free(r);
		return refuse(c, k, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", e.msg);
	}
	resp = MHD_create_response_from_callback(r->end - r->start, 64 * 1024, raw_read, r, raw_free);
	if (!resp) {
		raw_free(r);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	if (status == MHD_HTTP_PARTIAL_CONTENT)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- dispatch ---- */

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_size,
			      void **req)
{
	struct srv *s = cls;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *k = ci ? ci->socket_context : NULL;
	char name[80], why[300];
	const char *p, *slash;
	enum MHD_Result ret;

	(void)version;
	(void)upload_data;
	if (!k)
		return MHD_NO;
	/* The first call comes with the headers: refusals that close the
	 * connection are answered there; the rest on the second call (a
	 * response queued on the first makes libmicrohttpd 0.9.75 close the
	 * connection after it, and a pull would pay a TLS handshake per chunk). */
	if (!*req) {
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

		*req = (void *)1;
		if (!k->state)
			identify(c, k);
		if (k->state < 0)
			return refuse(c, k, method, url, MHD_HTTP_UNAUTHORIZED, "%s", k->why);
		if (vm_proof(s, c, k, why, sizeof(why)))
			return refuse(c, k, method, url, MHD_HTTP_UNAUTHORIZED, "%s", why);
		if (strcmp(method, "GET") && strcmp(method, "HEAD"))
			return refuse(c, k, method, url, MHD_HTTP_METHOD_NOT_ALLOWED, "method %.20s: only GET and HEAD", method);
		if ((cl && strcmp(cl, "0")) ||
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
			return refuse(c, k, method, url, MHD_HTTP_BAD_REQUEST, "a request body is not taken");
		return MHD_YES;
	}
	if (*upload_size)
		return MHD_NO;	/* a body after all: drop the connection */
	srv_enter(s);
	if (!strcmp(url, "/v1/images") || !strcmp(url, "/v1/images/")) {
		ret = get_images(s, c, k, method, url);
	} else if (!strncmp(url, "/v1/images/", 11)) {
		p = url + 11;
		slash = strchr(p, '/');
		if (!slash || (size_t)(slash - p) >= sizeof(name) ||
		    (strcmp(slash, "/manifest") && strcmp(slash, "/raw"))) {
			ret = refuse(c, k, method, url, MHD_HTTP_NOT_FOUND,
				     "no such path: the paths are /v1/images, /v1/images/NAME/manifest, /v1/images/NAME/raw and /v1/chunks/SHA256");
		} else {
			snprintf(name, sizeof(name), "%.*s", (int)(slash - p), p);
			if (store_name_check(name, NULL))
				ret = refuse(c, k, method, url, MHD_HTTP_BAD_REQUEST,
					     "image name '%.80s': 1 to 64 of letters, digits, '.', '_' and '-', not starting with '.'", name);
			else if (!strcmp(slash, "/manifest"))
				ret = get_manifest(s, c, k, method, url, name);
			else
				ret = get_raw(s, c, k, method, url, name, NULL);
		}
	} else if (!strncmp(url, "/v1/chunks/", 11)) {
		ret = get_chunk(s, c, k, method, url, url + 11);
	} else if (!strncmp(url, "/v1/snapshots/", 14)) {
		/* NAME, or NAME/PART/raw */
		char part[80] = "";

		p = url + 14;
		slash = strchr(p, '/');
		snprintf(name, sizeof(name), "%.*s", slash ? (int)(slash - p) : 79, p);
		if (slash) {
			const char *s2 = strchr(slash + 1, '/');

			if (s2 && !strcmp(s2, "/raw") && s2 - slash - 1 < (long)sizeof(part))
				snprintf(part, sizeof(part), "%.*s", (int)(s2 - slash - 1), slash + 1);
		}
		if (store_name_check(name, NULL) || (slash && store_name_check(part, NULL)))
			ret = refuse(c, k, method, url, MHD_HTTP_BAD_REQUEST,
				     "'%.120s': /v1/snapshots/NAME or /v1/snapshots/NAME/PART/raw, names of 1 to 64 letters, digits, '.', '_' and '-', not starting with '.'", p);
		else if (slash)
			ret = get_raw(s, c, k, method, url, name, part);
		else
			ret = get_snapshot(s, c, k, method, url, name);
	} else {
		ret = refuse(c, k, method, url, MHD_HTTP_NOT_FOUND,
			     "no such path: the paths are /v1/images, /v1/images/NAME/manifest, /v1/images/NAME/raw and /v1/chunks/SHA256");
	}
	srv_leave(s);
	return ret;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn *k = calloc(1, sizeof(*k));
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		if (k && ci && ci->client_addr) {
			const struct sockaddr *sa = ci->client_addr;
			char host[INET6_ADDRSTRLEN] = "?";

			if (sa->sa_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
			else if (sa->sa_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
			snprintf(k->addr, sizeof(k->addr), "%s", host);
		}
		*socket_context = k;
	} else {
		free(*socket_context);
		*socket_context = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct srv *s = cls;
	char line[300];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = 0;
	snprintf(s->last_log, sizeof(s->last_log), "%s", line);
	say("http: %s", line);
}

static char *read_pem(const char *path, const char *what, const char *label, struct error *e)
{
	char *buf = store_read_text(path, PEM_MAX, e);

	if (!buf) {
		error_prefix(e, "%s", what);
		return NULL;
	}
	if (!strstr(buf, label)) {
		free(buf);
		error_set(e, EXIT_USAGE, "%s: %s: no PEM '%s' in it", what, path, label);
		return NULL;
	}
	return buf;
}

static int parse_listen(const char *spec, struct sockaddr_storage *sa, socklen_t *len, struct error *e)
{
	char host[256];
	const char *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
	int rc;

	if (spec[0] == '[') {
		const char *z = strchr(spec, ']');

		if (!z || z[1] != ':' || (size_t)(z - spec - 1) >= sizeof(host))
			return error_set(e, EXIT_USAGE, "--listen %s: HOST:PORT or [IPV6]:PORT", spec);
		snprintf(host, sizeof(host), "%.*s", (int)(z - spec - 1), spec + 1);
		port = z + 2;
	} else {
		const char *z = strrchr(spec, ':');

		if (!z || z == spec || (size_t)(z - spec) >= sizeof(host))
			return error_set(e, EXIT_USAGE, "--listen %s: HOST:PORT or [IPV6]:PORT", spec);
		snprintf(host, sizeof(host), "%.*s", (int)(z - spec), spec);
		port = z + 1;
	}
	if (!*port || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
		return error_set(e, EXIT_USAGE, "--listen %s: port '%s' is no number 0 to 65535", spec, port);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc)
		return error_set(e, EXIT_USAGE, "--listen %s: %s", spec, gai_strerror(rc));
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int store_serve(const struct store_serve_opts *o, struct error *e)
{
	struct srv s = { .dir = o->dir, .mu = PTHREAD_MUTEX_INITIALIZER };
	struct sockaddr_storage sa;
	socklen_t salen;
	char *cert = NULL, *key = NULL, *ca = NULL, host[INET6_ADDRSTRLEN + 2] = "";
	struct MHD_Daemon *d;
	sigset_t set;
	int sig, rc = -1;
	const union MHD_DaemonInfo *di;
	unsigned max = o->max_connections ? o->max_connections : 64;
	unsigned timeout = o->timeout_s ? o->timeout_s : 30;

	/* The store must open now (a wrong DIR fails here, not per request). */
	if (!srv_store(&s, e) || srv_grants(&s, e))
		goto out;
	store_close(s.st);
	s.st = NULL;
	clock_gettime(CLOCK_MONOTONIC, &s.idle_since);
	if (!dl_lib_ready(&gt_lib)) {
		error_set(e, EXIT_HOST, "cannot check client certificates: %s", gt_lib.why);
		goto out;
	}
	if (parse_listen(o->listen, &sa, &salen, e) ||
	    !(cert = read_pem(o->cert, "--cert", "CERTIFICATE", e)) ||
	    !(key = read_pem(o->key, "--key", "PRIVATE KEY", e)) ||
	    !(ca = read_pem(o->client_ca, "--client-ca", "CERTIFICATE", e)))
		goto out;
	/* Signals go to this thread only: the server's threads inherit the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS |
			     MHD_USE_ERROR_LOG | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     0, NULL, NULL, handle, &s,
			     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &s,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
			     MHD_OPTION_HTTPS_MEM_CERT, cert,
			     MHD_OPTION_HTTPS_MEM_KEY, key,
			     MHD_OPTION_HTTPS_MEM_TRUST, ca,
			     MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
			     MHD_OPTION_CONNECTION_LIMIT, max,
			     MHD_OPTION_CONNECTION_TIMEOUT, timeout,
			     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
			     MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s,
			     MHD_OPTION_END);
	if (!d) {
		error_set(e, EXIT_HOST, "cannot serve on %s: %s", o->listen,
			  s.last_log[0] ? s.last_log : "the certificate, key or address was refused");
		goto out;
	}
	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (sa.ss_family == AF_INET6) {
		host[0] = '[';
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host + 1, INET6_ADDRSTRLEN);
		strcat(host, "]");
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof(host));
	}
	printf("serving %s on https://%s:%u (at most %u connections)\n", o->dir, host,
	       di ? (unsigned)di->port : 0, max);
	fflush(stdout);
	for (;;) {
		struct timespec t = { 0, 100 * 1000000 }, now;

		sig = sigtimedwait(&set, NULL, &t);
		if (sig == SIGINT || sig == SIGTERM)
			break;
		/* Idle: let writers (add, rm, gc) have the store. */
		pthread_mutex_lock(&s.mu);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (s.st && !s.users && mono_ms(&now) - mono_ms(&s.idle_since) >= IDLE_CLOSE_MS) {
			store_close(s.st);
			s.st = NULL;
		}
		pthread_mutex_unlock(&s.mu);
	}
	MHD_stop_daemon(d);
	say("stopped by signal %d", sig);
	rc = 0;
out:
	store_close(s.st);
	free(s.cbuf);
	free(s.g);
	for (size_t i = 0; i < s.nih; i++)
		free(s.ih[i].h);
	free(s.ih);
	free(cert);
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	free(ca);
	return rc;
}
