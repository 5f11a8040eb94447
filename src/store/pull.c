/*
 * pull.c - `shoal store pull DIR NAME --from https://HOST:PORT`: copy an
 * image from an image server (store/serve.c) into a local store.
 *
 * It asks for the manifest (GET /v1/images/NAME/manifest), then for the
 * chunks the local store lacks: a run of consecutive missing chunks is
 * one GET /v1/images/NAME/raw with a Range of up to 4 MiB (cut into its
 * chunks by the manifest's lengths), a missing chunk alone is one
 * GET /v1/chunks/HEX; one request per chunk cost a round trip each and
 * pulled at a tenth of the speed.  The manifest is recorded last.  libcurl (base/curl_dl.c, loaded on first use) speaks
 * HTTPS with this host's certificate and key, and checks the server's
 * certificate against --ca; one connection is kept for every request.
 *
 * Invariants, and what a server may not do to us:
 * - Every chunk's bytes are checked against the SHA-256 the manifest
 *   names before they go into the store (store_chunk_put checks again),
 *   and its length against the manifest's; a mismatch stops the pull with
 *   an error naming the chunk, and nothing of it is kept.  Answers are
 *   read up to a bound (the manifest 256 MiB, a chunk the store's largest
 *   chunk), so a server cannot make us hold more.
 * - The manifest is checked whole before anything is fetched: names,
 *   lengths, and that the lengths add up to the size.
 * - Resumable: the fetched chunks are committed to the store every few
 *   MiB (store_commit), and a chunk already in the store is never fetched
 *   again.  A pull killed at any point leaves committed chunks (the next
 *   pull skips them) and no image; the image appears only when every
 *   chunk is in, by the manifest's atomic rename.  gc may drop the
 *   orphaned chunks of a pull that is never rerun.
 * - The local store is opened as a writer (exclusive lock) for the pull.
 * - A snapshot object (store_pull_snapshot) is pulled the same way, part by
 *   part, its description checked whole first (store_snap_check_desc: no
 *   part name becomes a path outside the object), and recorded last.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/curl_dl.h"
#include "base/exitcode.h"
#include "store/pull.h"
#include "store/vmkey.h"
#include "store/snapobj.h"

#define MANIFEST_MAX (256u << 20)
#define COMMIT_BYTES (2u << 20)
#define RUN_BYTES (4u << 20)	/* the most one Range asks for */

/* A libcurl write callback into a growing buffer (struct store_http_body,
 * pull.h); also the streaming driver's (stream.c). */
size_t store_http_body_write(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct store_http_body *b = opaque;
	size_t n = size * nmemb;

	if (b->n + n > b->max) {
		b->over = true;
		return 0;	/* stops the transfer */
	}
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		uint8_t *q;

		while (cap < b->n + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q)
			return 0;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, data, n);
	b->n += n;
	b->p[b->n] = 0;
	return n;
}

struct client {
	CURL *c;
	const char *from;
	char err[CURL_ERROR_SIZE];
	struct store_vmproof_src vm;	/* Shoal-VM-Proof for each request */
};

/* GET from+path into b (at most max bytes), with "Range: bytes=range"
 * unless range is NULL.  0 on a 200 (206 with a range); else -1 with e
 * naming the URL and the server's reason, or -2 when a 206 was cut short
 * (b holds the bytes that came). */
static int get(struct client *x, const char *path, const char *range, struct store_http_body *b, size_t max,
	       struct error *e)
{
	char url[2048];
	size_t n = strlen(x->from);
	long code = 0;
	struct curl_slist *h;
	CURLcode rc;

	if (store_vmproof_src_curl(&x->vm, &h, e))
		return -1;
	while (n > 8 && x->from[n - 1] == '/')
		n--;
	snprintf(url, sizeof(url), "%.*s%s", (int)n, x->from, path);
	b->n = 0;
	b->over = false;
	b->max = max;
	x->err[0] = 0;
	curl_easy_setopt(x->c, CURLOPT_URL, url);
	curl_easy_setopt(x->c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(x->c, CURLOPT_RANGE, range);
	curl_easy_setopt(x->c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(x->c);
	curl_easy_setopt(x->c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);
	curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &code);
	if (b->over)
		return error_set(e, EXIT_BADSTATE, "%s: the answer is longer than %zu bytes (refused)", url, max);
	if (rc != CURLE_OK) {
		error_set(e, EXIT_HOST, "%s: %s", url, x->err[0] ? x->err : curl_easy_strerror(rc));
		return range && code == 206 ? -2 : -1;	/* cut short: b has what came */
	}
	if (range && code == 200)
		return error_set(e, EXIT_BADSTATE, "%s: the server ignored the Range %s (refused)", url, range);
	if (code != (range ? 206 : 200)) {
		json_t *j = b->n ? json_loadb((const char *)b->p, b->n, 0, NULL) : NULL;
		const char *why = json_string_value(json_object_get(j, "error"));

		error_set(e, code == 404 ? EXIT_NOINPUT : code == 401 || code == 403 ? EXIT_USAGE : EXIT_HOST,
			  "%s: %ld: %s", url, code, why ? why : "(no reason given)");
		json_decref(j);
		return -1;
	}
	return 0;
}

static int hex32(const char *p, uint8_t out[32])
{
	if (!p || strlen(p) != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;

		if (!strchr("0123456789abcdef", p[2 * i]) || !strchr("0123456789abcdef", p[2 * i + 1]) ||
		    sscanf(p + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* The manifest from the server's JSON, checked whole. */
static int parse_manifest(const char *url, const struct store_http_body *b, uint32_t chunk_max,
			  struct store_manifest *m, struct error *e)
{
	json_error_t je;
	json_t *j = json_loadb((const char *)b->p, b->n, 0, &je), *arr;
	const char *fmt, *chain;
	uint64_t total = 0;
	size_t i;

	memset(m, 0, sizeof(*m));
	if (!j)
		return error_set(e, EXIT_BADSTATE, "%s: the manifest is not JSON (%s)", url, je.text);
	arr = json_object_get(j, "chunks");
	fmt = json_string_value(json_object_get(j, "format"));
	chain = json_string_value(json_object_get(j, "chain_id"));
	if (!json_is_integer(json_object_get(j, "size")) || !json_is_array(arr) || !fmt ||
	    json_array_size(arr) > UINT32_MAX) {
		json_decref(j);
		return error_set(e, EXIT_BADSTATE, "%s: the manifest lacks size, format or chunks", url);
	}
	m->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	m->generation = (uint64_t)json_integer_value(json_object_get(j, "generation"));
	m->added = (uint64_t)json_integer_value(json_object_get(j, "added"));
	m->chain_current = json_is_true(json_object_get(j, "chain_current"));
	snprintf(m->format, sizeof(m->format), "%s", fmt);
	snprintf(m->chain_id, sizeof(m->chain_id), "%s", chain && strlen(chain) <= 36 ? chain : "");
	{	/* its parent in a chain: kept by store.c only where the local
		 * store has that image with that identity */
		json_t *p = json_object_get(j, "parent");
		const char *pn = json_string_value(json_object_get(p, "name"));
		const char *pc = json_string_value(json_object_get(p, "chain_id"));

		if (pn && pc && !store_name_check(pn, NULL) && strlen(pc) == 36) {
			snprintf(m->parent, sizeof(m->parent), "%s", pn);
			snprintf(m->parent_chain_id, sizeof(m->parent_chain_id), "%s", pc);
			m->parent_generation = (uint64_t)json_integer_value(json_object_get(p, "generation"));
		}
	}
	m->n = (uint32_t)json_array_size(arr);
	m->c = calloc((size_t)m->n + 1, sizeof(*m->c));
	if (!m->c) {
		json_decref(j);
		return error_set(e, EXIT_HOST, "%s: out of memory", url);
	}
	for (i = 0; i < m->n; i++) {
		json_t *c = json_array_get(arr, i);
		json_int_t len = json_integer_value(json_object_get(c, "len"));

		if (len <= 0 || (uint64_t)len > chunk_max) {
			json_decref(j);
			store_manifest_free(m);
			return error_set(e, EXIT_BADSTATE, "%s: chunk %zu: length %lld (this store takes 1 to %u)",
					 url, i, (long long)len, chunk_max);
		}
		m->c[i].len = (uint32_t)len;
		total += (uint64_t)len;
		if (json_is_true(json_object_get(c, "zero"))) {
			m->c[i].flags = STORE_CHUNK_ZERO;
		} else if (hex32(json_string_value(json_object_get(c, "hash")), m->c[i].hash)) {
			json_decref(j);
			store_manifest_free(m);
			return error_set(e, EXIT_BADSTATE, "%s: chunk %zu: no SHA-256 hash", url, i);
		}
	}
	json_decref(j);
	if (total != m->size) {
		store_manifest_free(m);
		return error_set(e, EXIT_BADSTATE, "%s: the chunks add up to %llu bytes, not the size %llu", url,
				 (unsigned long long)total, (unsigned long long)m->size);
	}
	return 0;
}

static bool same_manifest(const struct store_manifest *a, const struct store_manifest *b)
{
	if (a->size != b->size || a->n != b->n)
		return false;
	for (uint32_t i = 0; i < a->n; i++)
		if (a->c[i].len != b->c[i].len || a->c[i].flags != b->c[i].flags ||
		    (!(a->c[i].flags & STORE_CHUNK_ZERO) && memcmp(a->c[i].hash, b->c[i].hash, 32)))
			return false;
	return true;
}

/* libcurl for o->from with this host's certificate and key. */
static int client_open(struct client *x, const struct store_pull_opts *o, struct error *e)
{
	x->from = o->from;
	if (store_vmproof_src_init(&x->vm, o->vm_key, o->vm_proof, o->cert, e))
		return -1;
	x->c = curl_easy_init();
	if (!x->c)
		return error_set(e, EXIT_HOST, "libcurl: out of memory");
	curl_easy_setopt(x->c, CURLOPT_ERRORBUFFER, x->err);
	curl_easy_setopt(x->c, CURLOPT_USERAGENT, "shoal-store-pull");
	curl_easy_setopt(x->c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(x->c, CURLOPT_LOW_SPEED_LIMIT, 1L);	/* a stalled server: give up after 60 s */
	curl_easy_setopt(x->c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(x->c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(x->c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(x->c, CURLOPT_WRITEFUNCTION, store_http_body_write);
	if (o->ca)
		curl_easy_setopt(x->c, CURLOPT_CAINFO, o->ca);
	if (o->cert)
		curl_easy_setopt(x->c, CURLOPT_SSLCERT, o->cert);
	if (o->key)
		curl_easy_setopt(x->c, CURLOPT_SSLKEY, o->key);
	return 0;
}

/* Fetch the chunks of m that store s lacks, checked, and append them
 * (committed every COMMIT_BYTES; *since_commit carries over between
 * calls).  raw: the path of m's bytes for Range runs (an image's /raw);
 * NULL: one GET /v1/chunks/HEX per missing chunk.  `what` names m in
 * errors ("image a", "snapshot s/memory"). */
static int fetch_missing(struct client *x, struct store *s, const struct store_manifest *m,
			 const char *raw, const char *what, const struct store_pull_opts *o,
			 struct store_pull_stats *st, uint64_t *since_commit, struct store_http_body *bp,
			 struct error *e)
{
	struct store_http_body b = *bp;
	char path[200], hex[65];
	uint64_t *off;
	uint32_t next_progress = 0, chunk_max = store_get_params(s)->chunk.max;
	const char *kill_env = getenv("SHOAL_TEST_PULL_KILL_AFTER");	/* tests: die mid-pull */
	long kill_after = kill_env ? atol(kill_env) : -1;
	int rc = -1;

	off = malloc(((size_t)m->n + 1) * sizeof(*off));
	if (!off)
		return error_set(e, EXIT_HOST, "out of memory");
	off[0] = 0;
	for (uint32_t i = 0; i < m->n; i++)
		off[i + 1] = off[i] + m->c[i].len;
	for (uint32_t i = 0, j; i < m->n; i = j) {
		uint64_t run = 0;

		if (o->progress && i >= next_progress) {
			o->progress(o->opaque, off[i], m->size);
			next_progress = i + 256;
		}
		j = i + 1;
		if (m->c[i].flags & STORE_CHUNK_ZERO) {
			st->zero_chunks++;
			continue;
		}
		if (store_chunk_has(s, m->c[i].hash)) {
			st->present++;
			continue;
		}
		/* A run of missing chunks: one Range of /raw; one alone: /v1/chunks. */
		for (j = i, run = 0; j < m->n && !(m->c[j].flags & STORE_CHUNK_ZERO) && run + m->c[j].len <= RUN_BYTES &&
				     (j == i || (raw && !store_chunk_has(s, m->c[j].hash))); j++)
			run += m->c[j].len;
		if (j == i + 1) {
			store_hash_hex(m->c[i].hash, hex);
			snprintf(path, sizeof(path), "/v1/chunks/%s", hex);
			if (get(x, path, NULL, &b, chunk_max, e))
				goto out;
		} else {
			char range[64];

			snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off[i],
				 (unsigned long long)off[j] - 1);
			int r = get(x, raw, range, &b, run, e);

			if (r == -2) {
				/* Cut short (the server stops at a damaged chunk, or
				 * the link dropped): keep the whole chunks that came
				 * and go on from the first missing one, which the next
				 * request asks for first (the server checks a range's
				 * first chunk before it answers, and names a bad one). */
				uint32_t k = i;

				while (k < j && off[k + 1] - off[i] <= b.n)
					k++;
				if (k == i)
					goto out;
				j = k;
				run = off[j] - off[i];
				b.n = run;
			} else if (r) {
				goto out;
			}
		}
		if (b.n != run) {
			error_set(e, EXIT_BADSTATE, "%s: bytes %llu to %llu of %s: %zu bytes came, not %llu (refused)",
				  o->from, (unsigned long long)off[i], (unsigned long long)off[j],
				  what, b.n, (unsigned long long)run);
			goto out;
		}
		for (uint32_t k = i; k < j; k++) {
			const uint8_t *p = b.p + (off[k] - off[i]);
			uint8_t md[32];

			store_hash(p, m->c[k].len, md);
			if (memcmp(md, m->c[k].hash, 32)) {
				store_hash_hex(m->c[k].hash, hex);
				error_set(e, EXIT_BADSTATE, "%s: chunk %.16s (%s at offset %llu): the bytes received do not match its SHA-256 (refused)",
					  o->from, hex, what, (unsigned long long)off[k]);
				goto out;
			}
			if (store_chunk_has(s, m->c[k].hash)) {	/* twice in the run */
				st->present++;
				continue;
			}
			if (store_chunk_put(s, m->c[k].hash, p, m->c[k].len, e))
				goto out;
			st->fetched++;
			st->fetched_bytes += m->c[k].len;
			*since_commit += m->c[k].len;
			if (*since_commit >= COMMIT_BYTES) {
				if (store_commit(s, e))
					goto out;
				*since_commit = 0;
			}
			if (kill_after >= 0 && st->fetched >= (uint64_t)kill_after)
				raise(SIGKILL);
		}
	}
	if (o->progress)
		o->progress(o->opaque, m->size, m->size);
	rc = 0;
out:
	*bp = b;
	free(off);
	return rc;
}

/* What a pull checks and opens first: the URL, the name, libcurl, and the
 * store, for writing. */
static int pull_open(const struct store_pull_opts *o, struct store **s, uint32_t *chunk_max,
		     struct error *e)
{
	if (strncmp(o->from, "https://", 8))
		return error_set(e, EXIT_USAGE, "--from %s: an https:// URL", o->from);
	if (store_name_check(o->name, e))
		return -1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		return error_set(e, EXIT_HOST, "libcurl: %s", curl_dl_error() ? curl_dl_error() : "initialisation failed");
	if (store_open(s, o->dir, true, e))
		return -1;
	*chunk_max = store_get_params(*s)->chunk.max;
	return 0;
}

int store_pull(const struct store_pull_opts *o, struct store_pull_stats *st, struct error *e)
{
	struct client x = { .from = o->from };
	struct store_http_body b = { 0 };
	struct store *s = NULL;
	struct store_manifest m = { 0 }, have;
	char path[200], what[80];
	uint64_t since_commit = 0;
	uint32_t chunk_max;
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (pull_open(o, &s, &chunk_max, e))
		return -1;
	if (client_open(&x, o, e))
		goto out;
	snprintf(path, sizeof(path), "/v1/images/%s/manifest", o->name);
	if (get(&x, path, NULL, &b, MANIFEST_MAX, e) || parse_manifest(o->from, &b, chunk_max, &m, e))
		goto out;
	st->size = m.size;
	st->chunks = m.n;
	if (!store_manifest_get(s, o->name, &have, NULL)) {
		bool same = same_manifest(&have, &m);

		store_manifest_free(&have);
		if (!same) {
			error_set(e, EXIT_USAGE, "%s: an image named '%s' is already here, with other content (rm it first)",
				  o->dir, o->name);
			goto out;
		}
		st->up_to_date = true;
		for (uint32_t i = 0; i < m.n; i++)
			st->zero_chunks += !!(m.c[i].flags & STORE_CHUNK_ZERO);
		st->present = m.n - st->zero_chunks;
		rc = 0;
		goto out;
	}
	snprintf(path, sizeof(path), "/v1/images/%s/raw", o->name);
	snprintf(what, sizeof(what), "image %s", o->name);
	if (fetch_missing(&x, s, &m, path, what, o, st, &since_commit, &b, e))
		goto out;
	if (store_manifest_put(s, o->name, &m, e))
		goto out;
	rc = 0;
out:
	if (rc && s && st->fetched)
		store_commit(s, NULL);	/* keep what arrived whole for the next try */
	if (x.c)
		curl_easy_cleanup(x.c);
	store_vmproof_src_fini(&x.vm);
	free(b.p);
	store_manifest_free(&m);
	store_close(s);
	return rc;
}

/* A snapshot object (GET /v1/snapshots/NAME, store/snapobj.c): every
 * part's missing chunks, as an image's (runs as Ranges of
 * /v1/snapshots/NAME/PART/raw, a chunk alone from /v1/chunks), then the
 * object, recorded last (as an image's manifest is). */
int store_pull_snapshot(const struct store_pull_opts *o, struct store_pull_stats *st, struct error *e)
{
	struct client x = { .from = o->from };
	struct store_http_body b = { 0 };
	struct store *s = NULL;
	struct store_manifest *pm = NULL;
	const char **pn = NULL;
	json_t *desc = NULL, *part;
	const char *key;
	char path[200], url[2300], what[2600];
	uint64_t since_commit = 0;
	uint32_t chunk_max;
	size_t n = 0;
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (pull_open(o, &s, &chunk_max, e))
		return -1;
	if (store_snap_exists(s, o->name)) {
		error_set(e, EXIT_USAGE, "%s: a snapshot named '%s' is already here (rm it first)", o->dir, o->name);
		goto out;
	}
	if (client_open(&x, o, e))
		goto out;
	snprintf(path, sizeof(path), "/v1/snapshots/%s", o->name);
	snprintf(url, sizeof(url), "%s%s", o->from, path);
	if (get(&x, path, NULL, &b, MANIFEST_MAX, e))
		goto out;
	desc = json_loadb((const char *)b.p, b.n, JSON_REJECT_DUPLICATES, NULL);
	if (!desc) {
		error_set(e, EXIT_BADSTATE, "%s: the answer is not JSON", url);
		goto out;
	}
	if (store_snap_check_desc(desc, url, e))
		goto out;
	n = json_object_size(json_object_get(desc, "parts"));
	pm = calloc(n + 1, sizeof(*pm));
	pn = calloc(n + 1, sizeof(*pn));
	if (!pm || !pn) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	n = 0;
	json_object_foreach(json_object_get(desc, "parts"), key, part) {
		char *text = json_dumps(part, JSON_COMPACT);
		int r;

		snprintf(what, sizeof(what), "%s: part %s", url, key);
		r = text ? store_pull_parse_manifest(what, text, strlen(text), chunk_max, &pm[n], e)
			 : error_set(e, EXIT_HOST, "out of memory");
		free(text);
		if (r)
			goto out;
		pn[n++] = key;
		st->size += pm[n - 1].size;
		st->chunks += pm[n - 1].n;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "snapshot %s/%s", o->name, pn[i]);
		snprintf(path, sizeof(path), "/v1/snapshots/%s/%s/raw", o->name, pn[i]);
		if (fetch_missing(&x, s, &pm[i], path, what, o, st, &since_commit, &b, e))
			goto out;
	}
	if (store_snap_put(s, o->name, desc, pn, pm, n, e))
		goto out;
	rc = 0;
out:
	if (rc && s && st->fetched)
		store_commit(s, NULL);	/* keep what arrived whole for the next try */
	if (x.c)
		curl_easy_cleanup(x.c);
	store_vmproof_src_fini(&x.vm);
	free(b.p);
	for (size_t i = 0; pm && i < n; i++)
		store_manifest_free(&pm[i]);
	free(pm);
	free(pn);
	json_decref(desc);
	store_close(s);
	return rc;
}

/* For store/stream.c: the server's manifest JSON, checked as pull checks it. */
int store_pull_parse_manifest(const char *url, const void *json, size_t n, uint32_t chunk_max,
			      struct store_manifest *m, struct error *e)
{
	struct store_http_body b = { .p = (uint8_t *)json, .n = n };

	return parse_manifest(url, &b, chunk_max, m, e);
}
