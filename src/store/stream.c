/*
 * stream.c - the `store:` block driver: a disk whose image streams from an
 * image server (store/serve.c) while it is in use (docs/store.md,
 * "Streaming").
 *
 *   store:https://HOST:PORT/NAME,cache=DIR,cert=FILE,key=FILE,ca=FILE[,prefetch=on|off][,vm-key=FILE]
 *
 * (vm-key: the VM's own key pair, store/vmkey.c: each request carries its
 * proof, so the server serves what it granted this host for that VM)
 *
 * (also as a qcow2 overlay's backing file name, and in `--disk` with the
 * options as store-cache=DIR and so on: docs/store.md "Streaming into a VM")
 *
 * Open fetches the image's manifest (GET /v1/images/NAME/manifest),
 * checks it whole as `store pull` does, and keeps a copy in
 * DIR/streams/NAME.json, which a later open uses when the server cannot be
 * reached.  DIR is a local store (store.c; made if missing), opened as its
 * writer for as long as the disk is open.  A read is served chunk by
 * chunk: a zero chunk is zeros, a chunk in DIR is read from it (checked
 * against its SHA-256 by store.c), any other is fetched on demand from
 * GET /v1/chunks/HEX, checked against the SHA-256 the manifest names, put
 * in DIR, then served.  A thread prefetches the rest in manifest order
 * (prefetch=off: none).  Fetched chunks are committed every 2 MiB and at
 * close; when the last one is in, the manifest is recorded in DIR as image
 * NAME, so `shoal store get DIR NAME` rebuilds the image.
 *
 * Invariants, and what a server may not do to us:
 * - No byte reaches a reader unless it is a zero chunk or its SHA-256 is
 *   the manifest's for that chunk; a chunk whose bytes do not match is
 *   refused (the read fails with -EIO naming the chunk) and not kept.
 *   Answers are read up to a bound (the manifest 256 MiB, a chunk the
 *   store's chunk maximum).
 * - The disk is read-only: a read-write open is refused.  Writes go to a
 *   qcow2 overlay the caller puts over it (blockdev_push_overlay), so the
 *   cache only ever holds the server's image.
 * - The store is not thread-safe, so every call into it (the loader's and
 *   the prefetcher's) holds `mu`; fetching over the network does not, so
 *   a reader waits for the prefetcher's store call, never its transfer.
 *   Each thread has its own libcurl handle.  Both may fetch one chunk at
 *   once; the second put is skipped.
 * - Readers never touch the store or the network themselves: a read that
 *   needs a chunk not in `cbuf` hands its index to the loader thread and
 *   waits (`cv`), so a VM's disk I/O thread keeps its narrow seccomp
 *   filter.  The loader and the prefetcher install the `store` kind first
 *   thing (base/seccomp_rules.c: TCP sockets and the cache's file calls,
 *   nothing else).  What a filter would forbid happens at open, before
 *   any: libcurl and libcrypto are loaded, and the server's name is
 *   resolved (CURLOPT_RESOLVE, so no resolver thread and no NSS).  Hence
 *   an open is refused in a jailed VMM (no route out, no cache directory
 *   after pivot_root) and on an already filtered thread (hot-plug).
 * - Options may be spelled store-KEY= (store-cache=, ...): `--disk`'s
 *   spelling, where cache= is its own.
 * - A read that needs a chunk the server cannot give fails with -EIO and
 *   bd->err naming the chunk and the reason; chunks already in DIR read on.
 *
 * Counters (chunks fetched on demand and by prefetch, bytes, the share of
 * the image fetched) are printed as one line at close.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/curl_dl.h"
#include "base/exitcode.h"
#include "base/seccomp.h"
#include "store/pull.h"
#include "store/store.h"
#include "store/stream.h"
#include "store/vmkey.h"
#include "vmm/jail.h"

#define MANIFEST_MAX (256u << 20)
#define COMMIT_BYTES (2u << 20)

struct stream {
	char *spec;			/* the path as given, for messages */
	char *base, *name;		/* https://HOST:PORT[/prefix], NAME */
	char *cache, *cert, *key, *ca, *vm_key;
	struct store_vmproof_src vm;	/* vm-key's proofs, one per request */
	struct store *s;
	struct store_manifest m;
	uint64_t *off;			/* m.n + 1 chunk offsets */
	uint8_t *have;			/* per chunk: in DIR (or a zero chunk) */
	uint32_t missing, chunk_max;
	pthread_mutex_t mu;		/* the store, have, missing, the counters */
	CURL *c;			/* the reader's connection */
	char cerr[CURL_ERROR_SIZE];
	pthread_t th;
	bool th_on;
	atomic_bool stop;
	uint64_t n_demand, n_prefetch, bytes_fetched, since_commit;
	uint8_t *cbuf;			/* the last chunk read from DIR */
	uint32_t cidx;
	bool recorded;			/* the manifest is in DIR as image NAME */
	uint32_t *order, n_order;	/* DIR/streams/NAME.order: prefetch these first */
	uint32_t *seen, n_seen, cap_seen; /* no order file yet: the chunks this run
					 * fetched on demand, in order, written at close */
	bool record_order;
	uint64_t prefetch_max;		/* tests: stop after this many (0: no limit) */
	struct curl_slist *resolve;	/* HOST:PORT:ADDRS, resolved at open */
	/* the loader thread: it alone reads the store and the network for
	 * readers (a VM's disk I/O thread never does either) */
	pthread_cond_t cv;		/* with mu: a request, its answer, closing */
	pthread_t lt;
	bool lt_on, busy, req_set, req_done, closing;
	uint32_t req;
	int req_rc;
	struct error req_err;
};

static CURL *client_new(struct stream *st, char *errbuf)
{
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "shoal-store-stream");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, store_http_body_write);
	if (st->resolve)
		curl_easy_setopt(c, CURLOPT_RESOLVE, st->resolve);
	if (st->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, st->ca);
	if (st->cert)
		curl_easy_setopt(c, CURLOPT_SSLCERT, st->cert);
	if (st->key)
		curl_easy_setopt(c, CURLOPT_SSLKEY, st->key);
	return c;
}

/* GET base+path into b (at most max bytes): 0 on a 200, else -1 with e
 * naming the URL and the reason (the server's, from its JSON). */
static int get(struct stream *st, CURL *c, char *errbuf, const char *path, struct store_http_body *b,
	       size_t max, struct error *e)
{
	char url[2048];
	long code = 0;
	struct curl_slist *h;
	CURLcode rc;

	if (store_vmproof_src_curl(&st->vm, &h, e))
		return -1;
	snprintf(url, sizeof(url), "%s%s", st->base, path);
	b->n = 0;
	b->over = false;
	b->max = max;
	errbuf[0] = 0;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (b->over)
		return error_set(e, EXIT_BADSTATE, "%s: the answer is longer than %zu bytes (refused)", url, max);
	if (rc != CURLE_OK)
		return error_set(e, EXIT_HOST, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
	if (code != 200) {
		/* the server's refusals are {"error": WHY}: quote WHY */
		const char *p = b->n ? strstr((const char *)b->p, "\"error\"") : NULL;
		int len = 0;

		if (p && (p = strchr(p + 7, '"')))
			len = (int)strcspn(++p, "\"");
		return error_set(e, code == 404 ? EXIT_NOINPUT : code == 401 || code == 403 ? EXIT_USAGE : EXIT_HOST,
				 "%s: %ld: %.*s", url, code, len ? len : 17, len ? p : "(no reason given)");
	}
	return 0;
}

/* ---- the spec ---- */

static void stream_free(struct stream *st)
{
	if (!st)
		return;
	if (st->c)
		curl_easy_cleanup(st->c);
	store_close(st->s);
	store_manifest_free(&st->m);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	curl_slist_free_all(st->resolve);
	free(st->off);
	free(st->have);
	free(st->cbuf);
	free(st->order);
	free(st->seen);
	free(st->spec);
	free(st->base);
	free(st->name);
	free(st->cache);
	free(st->cert);
	free(st->key);
	free(st->ca);
	free(st->vm_key);
	store_vmproof_src_fini(&st->vm);
	free(st);
}

/* store:URL,key=value,...: fills st's strings and *prefetch. */
static int parse_spec(struct stream *st, const char *path, bool *prefetch, struct error *e)
{
	char *dup = strdup(path + 6), *save = NULL, *url, *slash, *kv;

	*prefetch = true;
	if (!dup)
		return error_set(e, EXIT_HOST, "out of memory");
	url = strtok_r(dup, ",", &save);
	if (!url || strncmp(url, "https://", 8) || !(slash = strrchr(url + 8, '/')) || !slash[1]) {
		free(dup);
		return error_set(e, EXIT_USAGE, "%s: expected store:https://HOST:PORT/NAME,cache=DIR"
				 "[,cert=FILE,key=FILE,ca=FILE,prefetch=on|off,vm-key=FILE]", path);
	}
	st->name = strdup(slash + 1);
	st->base = strndup(url, (size_t)(slash - url));
	while ((kv = strtok_r(NULL, ",", &save))) {
		char *v = strchr(kv, '='), **to = NULL;

		if (v)
			*v++ = 0;
		if (!strncmp(kv, "store-", 6))	/* --disk's spelling (docs/store.md) */
			kv += 6;
		if (!strcmp(kv, "cache"))
			to = &st->cache;
		else if (!strcmp(kv, "cert"))
			to = &st->cert;
		else if (!strcmp(kv, "key"))
			to = &st->key;
		else if (!strcmp(kv, "ca"))
			to = &st->ca;
		else if (!strcmp(kv, "vm-key"))
			to = &st->vm_key;
		if (to && v && *v) {
			free(*to);
			*to = strdup(v);
		} else if (!strcmp(kv, "prefetch") && v && (!strcmp(v, "on") || !strcmp(v, "off"))) {
			*prefetch = !strcmp(v, "on");
		} else {
			error_set(e, EXIT_USAGE, "%s: unknown or empty option '%s' (cache=DIR, cert=FILE, "
				  "key=FILE, ca=FILE, prefetch=on|off, vm-key=FILE)", path, kv);
			free(dup);
			return -1;
		}
	}
	free(dup);
	if (!st->name || !st->base)
		return error_set(e, EXIT_HOST, "out of memory");
	if (!st->cache)
		return error_set(e, EXIT_USAGE, "%s: needs cache=DIR (a local store for the chunks)", path);
	return store_name_check(st->name, e);
}

/* ---- chunks ---- */

/* Under mu: every chunk is in; record the manifest as image NAME unless
 * an image of that name is there already. */
static void record_image(struct stream *st)
{
	struct store_manifest have;
	struct error e = { 0 };

	if (st->recorded)
		return;
	st->recorded = true;
	if (!store_manifest_get(st->s, st->name, &have, NULL))
		store_manifest_free(&have);
	else if (store_manifest_put(st->s, st->name, &st->m, &e))
		fprintf(stderr, "shoal: %s: %s\n", st->spec, e.msg);
}

/* Under mu: chunk i arrived; commit now and then, and record the image
 * when it is whole. */
static void arrived(struct stream *st, uint32_t i)
{
	struct error e = { 0 };

	st->have[i] = 1;
	st->missing--;
	st->bytes_fetched += st->m.c[i].len;
	st->since_commit += st->m.c[i].len;
	if (st->since_commit >= COMMIT_BYTES || !st->missing) {
		if (store_commit(st->s, &e))
			fprintf(stderr, "shoal: %s: %s\n", st->spec, e.msg);
		st->since_commit = 0;
	}
	if (!st->missing)
		record_image(st);
}

/* Fetch chunk i over connection c (not under mu), check it, and put it in
 * the cache.  0, or -1 with e naming the chunk. */
static int fetch(struct stream *st, CURL *c, char *errbuf, struct store_http_body *b, uint32_t i,
		 bool demand, struct error *e)
{
	char hex[65], path[128];
	uint8_t md[32];
	int r = 0;

	store_hash_hex(st->m.c[i].hash, hex);
	snprintf(path, sizeof(path), "/v1/chunks/%s", hex);
	if (get(st, c, errbuf, path, b, st->chunk_max, e)) {
		char why[sizeof(e->msg)];

		snprintf(why, sizeof(why), "%s", e->msg);
		return error_set(e, e->status, "%s: chunk %.16s (image %s at offset %llu) is not in the cache "
				 "and cannot be fetched: %s", st->spec, hex, st->name,
				 (unsigned long long)st->off[i], why);
	}
	store_hash(b->p, b->n, md);
	if (b->n != st->m.c[i].len || memcmp(md, st->m.c[i].hash, 32))
		return error_set(e, EXIT_BADSTATE, "%s: chunk %.16s (image %s at offset %llu): the bytes "
				 "received do not match its SHA-256 (refused)", st->spec, hex, st->name,
				 (unsigned long long)st->off[i]);
	pthread_mutex_lock(&st->mu);
	if (!st->have[i]) {
		r = store_chunk_put(st->s, st->m.c[i].hash, b->p, (uint32_t)b->n, e);
		if (!r) {
			if (demand && st->record_order && st->n_seen < st->m.n) {
				if (st->n_seen == st->cap_seen) {
					uint32_t cap = st->cap_seen ? 2 * st->cap_seen : 256;
					uint32_t *q = realloc(st->seen, cap * sizeof(*q));

					if (q) {
						st->seen = q;
						st->cap_seen = cap;
					}
				}
				if (st->n_seen < st->cap_seen)
					st->seen[st->n_seen++] = i;
			}
			if (demand)
				st->n_demand++;
			else
				st->n_prefetch++;
			arrived(st, i);
		}
	}
	pthread_mutex_unlock(&st->mu);
	return r;
}

static void *prefetch_main(void *opaque)
{
	struct stream *st = opaque;
	char errbuf[CURL_ERROR_SIZE];
	struct store_http_body b = { 0 };
	struct error e = { 0 };
	CURL *c;
	uint64_t done = 0;

	seccomp_thread_enter(SECCOMP_STORE);	/* first thing: no guest data before it */
	c = client_new(st, errbuf);

	for (uint64_t k = 0; c && k < (uint64_t)st->n_order + st->m.n && !atomic_load(&st->stop); k++) {
		uint32_t i = k < st->n_order ? st->order[k] : (uint32_t)(k - st->n_order);
		bool need;

		if (st->prefetch_max && done >= st->prefetch_max)
			break;

		pthread_mutex_lock(&st->mu);
		need = !st->have[i];
		pthread_mutex_unlock(&st->mu);
		if (need && fetch(st, c, errbuf, &b, i, false, &e)) {
			fprintf(stderr, "shoal: %s: prefetch stopped: %s\n", st->spec, e.msg);
			break;
		}
		done += need;
	}
	if (c)
		curl_easy_cleanup(c);
	free(b.p);
	return NULL;
}

/* ---- the first run's read order ---- */

static void order_path(const struct stream *st, char *path, size_t n)
{
	snprintf(path, n, "%s/streams/%s.order", st->cache, st->name);
}

/* DIR/streams/NAME.order: one chunk index a line, the chunks the first run
 * fetched on demand, in the order it needed them; written once. */
static void order_save(struct stream *st)
{
	char path[4200], dir[4200];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/streams", st->cache);
	mkdir(dir, 0755);
	order_path(st, path, sizeof(path));
	f = fopen(path, "wxe");		/* never over an existing one */
	if (!f)
		return;
	for (uint32_t k = 0; k < st->n_seen; k++)
		fprintf(f, "%u\n", st->seen[k]);
	if (fclose(f))
		unlink(path);
}

/* Load the order file if there is one (indices past the manifest's end are
 * dropped: the file is a hint, not trusted); else record this run's. */
static void order_load(struct stream *st)
{
	char path[4200];
	unsigned long v;
	FILE *f;

	order_path(st, path, sizeof(path));
	f = fopen(path, "re");
	if (!f) {
		st->record_order = true;
		return;
	}
	st->order = calloc((size_t)st->m.n + 1, sizeof(*st->order));
	while (st->order && st->n_order < st->m.n && fscanf(f, "%lu", &v) == 1)
		if (v < st->m.n)
			st->order[st->n_order++] = (uint32_t)v;
	fclose(f);
}

/* ---- block driver ---- */

/* Under mu: chunk i into cbuf (cidx = i): from the cache, or fetched
 * (mu is let go for the transfer).  0, or -1 with e. */
static int load(struct stream *st, uint32_t i, struct store_http_body *b, struct error *e)
{
	uint32_t got;

	if (st->cidx == i)
		return 0;
	if (!st->have[i]) {
		int r;

		pthread_mutex_unlock(&st->mu);
		r = fetch(st, st->c, st->cerr, b, i, true, e);
		pthread_mutex_lock(&st->mu);
		if (r)
			return -1;
		memcpy(st->cbuf, b->p, b->n);
		st->cidx = i;
		return 0;
	}
	st->cidx = UINT32_MAX;
	if (store_chunk_read(st->s, st->m.c[i].hash, st->cbuf, &got, e))
		return -1;
	if (got != st->m.c[i].len)
		return error_set(e, EXIT_BADSTATE, "%s: chunk %u of image %s: %u bytes in the cache, the "
				 "manifest says %u", st->spec, i, st->name, got, st->m.c[i].len);
	st->cidx = i;
	return 0;
}

static void close_work(struct stream *st);

/* The loader thread: serves readers' requests (req) one at a time, under
 * the store filter; at close, commits and writes the read order. */
static void *loader_main(void *opaque)
{
	struct stream *st = opaque;
	struct store_http_body b = { 0 };

	seccomp_thread_enter(SECCOMP_STORE);
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->req_set && !st->closing)
			pthread_cond_wait(&st->cv, &st->mu);
		if (!st->req_set)
			break;
		memset(&st->req_err, 0, sizeof(st->req_err));
		st->req_rc = load(st, st->req, &b, &st->req_err);
		st->req_set = false;
		st->req_done = true;
		pthread_cond_broadcast(&st->cv);
	}
	pthread_mutex_unlock(&st->mu);
	free(b.p);
	close_work(st);
	return NULL;
}

/* Chunk i into cbuf, by the loader thread when there is one.  Under mu. */
static int want(struct stream *st, uint32_t i, struct store_http_body *b, struct error *e)
{
	int r;

	if (st->cidx == i)
		return 0;
	if (!st->lt_on)
		return load(st, i, b, e);
	while (st->busy)
		pthread_cond_wait(&st->cv, &st->mu);
	st->busy = true;
	st->req = i;
	st->req_set = true;
	pthread_cond_broadcast(&st->cv);
	while (!st->req_done)
		pthread_cond_wait(&st->cv, &st->mu);
	st->req_done = false;
	st->busy = false;
	r = st->req_rc;
	if (r && e)
		*e = st->req_err;
	pthread_cond_broadcast(&st->cv);
	return r;
}

static int stream_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len)
{
	struct stream *st = bd->priv;
	uint8_t *out = buf;
	struct store_http_body b = { 0 };
	uint32_t lo = 0, hi = st->m.n, i;
	int r = 0;

	while (hi - lo > 1) {	/* the chunk holding off: off[i] <= off < off[i+1] */
		uint32_t mid = lo + (hi - lo) / 2;

		if (st->off[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (i = lo; len && i < st->m.n; i++) {
		uint64_t in = off - st->off[i];
		uint64_t n = st->m.c[i].len - in < len ? st->m.c[i].len - in : len;

		if (st->m.c[i].flags & STORE_CHUNK_ZERO) {
			memset(out, 0, n);
		} else {
			pthread_mutex_lock(&st->mu);
			r = want(st, i, &b, &bd->err);
			if (!r)
				memcpy(out, st->cbuf + in, n);
			pthread_mutex_unlock(&st->mu);
			if (r) {
				r = -EIO;
				break;
			}
		}
		out += n;
		off += n;
		len -= n;
	}
	free(b.p);
	return r;
}

static int stream_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len)
{
	return -EROFS;
}

static int stream_zeroes(struct blockdev *bd, uint64_t off, uint64_t len)
{
	return -EROFS;
}

static int stream_flush(struct blockdev *bd)
{
	return 0;
}

static int stream_block_status(struct blockdev *bd, uint64_t off, uint64_t len, struct bd_extent *ext)
{
	ext->depth = 0;
	ext->host_off = 0;
	ext->status = BD_DATA;
	ext->len = len;
	return 0;
}

static uint64_t stream_map_fast(struct blockdev *bd, bool write, uint64_t off, uint64_t len,
				uint64_t *host_off)
{
	return 0;	/* always the synchronous path */
}

/* At close, once the prefetcher has stopped: the last commit, the read
 * order, the reader's connection closed.  On the loader thread when there
 * is one (its filter has what the store and libcurl need). */
static void close_work(struct stream *st)
{
	struct error e = { 0 };

	if (st->record_order && st->n_seen)
		order_save(st);
	pthread_mutex_lock(&st->mu);
	if (st->since_commit && store_commit(st->s, &e))
		fprintf(stderr, "shoal: %s: %s\n", st->spec, e.msg);
	st->since_commit = 0;
	pthread_mutex_unlock(&st->mu);
	if (st->c)
		curl_easy_cleanup(st->c);
	st->c = NULL;
}

static void stream_close(struct blockdev *bd)
{
	struct stream *st = bd->priv;

	if (!st)
		return;
	if (st->th_on) {
		/* tests: let the prefetch finish instead of stopping it */
		if (!getenv("SHOAL_TEST_STREAM_WAIT_PREFETCH"))
			atomic_store(&st->stop, true);
		pthread_join(st->th, NULL);
	}
	if (st->lt_on) {
		pthread_mutex_lock(&st->mu);
		st->closing = true;
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->lt, NULL);
	} else {
		close_work(st);
	}
	pthread_mutex_lock(&st->mu);
	fprintf(stderr, "shoal: store:%s/%s: fetched %llu chunks on demand, %llu by prefetch, %llu bytes "
		"(%.1f%% of the image); %u of %u chunks still missing\n", st->base, st->name,
		(unsigned long long)st->n_demand, (unsigned long long)st->n_prefetch,
		(unsigned long long)st->bytes_fetched,
		st->m.size ? 100.0 * (double)st->bytes_fetched / (double)st->m.size : 0.0,
		st->missing, st->m.n);
	pthread_mutex_unlock(&st->mu);
	stream_free(st);
	bd->priv = NULL;
}

static const struct blockdev_ops stream_ops = {
	.name = "store",
	.read = stream_read,
	.write = stream_write,
	.write_zeroes = stream_zeroes,
	.discard = stream_zeroes,
	.flush = stream_flush,
	.block_status = stream_block_status,
	.map_fast = stream_map_fast,
	.close = stream_close,
};

/* ---- open ---- */

static int write_file(const char *path, const void *p, size_t n)
{
	char tmp[4400];
	int fd, r = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, p, n) == (ssize_t)n && !fsync(fd))
		r = rename(tmp, path);
	close(fd);
	if (r)
		unlink(tmp);
	return r;
}

static int read_file(const char *path, struct store_http_body *b)
{
	FILE *f = fopen(path, "re");
	char buf[65536];
	size_t n;

	if (!f)
		return -1;
	b->n = 0;
	b->max = MANIFEST_MAX;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (store_http_body_write(buf, 1, n, b) != n)
			break;
	fclose(f);
	return b->n ? 0 : -1;
}

/* The manifest from the server, kept in DIR/streams/NAME.json; from that
 * copy when the server cannot be reached (not when it refuses). */
static int get_manifest(struct stream *st, struct error *e)
{
	char path[200], file[4200], url[2100];
	struct store_http_body b = { 0 };
	struct error ge = { 0 };
	int r;

	snprintf(path, sizeof(path), "/v1/images/%s/manifest", st->name);
	snprintf(url, sizeof(url), "%s%s", st->base, path);
	snprintf(file, sizeof(file), "%s/streams/%s.json", st->cache, st->name);
	r = get(st, st->c, st->cerr, path, &b, MANIFEST_MAX, &ge);
	if (r && ge.status == EXIT_HOST && !read_file(file, &b)) {
		fprintf(stderr, "shoal: %s: %s; using the manifest kept in %s\n", st->spec, ge.msg, file);
		r = store_pull_parse_manifest(file, b.p, b.n, st->chunk_max, &st->m, e);
	} else if (r) {
		*e = ge;
	} else if (!(r = store_pull_parse_manifest(url, b.p, b.n, st->chunk_max, &st->m, e))) {
		char dir[4200];

		snprintf(dir, sizeof(dir), "%s/streams", st->cache);
		mkdir(dir, 0755);
		if (write_file(file, b.p, b.n))
			fprintf(stderr, "shoal: %s: %s: %s (the manifest is not kept)\n", st->spec, file,
				strerror(errno));
	}
	free(b.p);
	return r;
}

/* The server's name resolved now, before any thread or filter, and given
 * to every connection (CURLOPT_RESOLVE): the threads never resolve (no
 * resolver thread, no NSS modules loaded under a filter).  A literal
 * address needs nothing. */
static int resolve_server(struct stream *st, struct error *e)
{
	const char *h = st->base + 8, *end, *colon;
	char host[256], port[8] = "443", entry[1024];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *a;
	size_t n, used;
	int rc;

	if (*h == '[')		/* an IPv6 literal */
		return 0;
	end = h + strcspn(h, "/");
	colon = memchr(h, ':', (size_t)(end - h));
	n = (size_t)((colon ? colon : end) - h);
	if (!n || n >= sizeof(host))
		return error_set(e, EXIT_USAGE, "%s: no host name in the URL", st->spec);
	memcpy(host, h, n);
	host[n] = 0;
	if (colon && (size_t)(end - colon - 1) < sizeof(port))
		snprintf(port, sizeof(port), "%.*s", (int)(end - colon - 1), colon + 1);
	hints.ai_flags = AI_NUMERICHOST;
	if (!getaddrinfo(host, port, &hints, &res)) {
		freeaddrinfo(res);
		return 0;
	}
	hints.ai_flags = 0;
	if ((rc = getaddrinfo(host, port, &hints, &res)))
		return error_set(e, EXIT_HOST, "%s: %s: %s", st->spec, host, gai_strerror(rc));
	used = (size_t)snprintf(entry, sizeof(entry), "%s:%s:", host, port);
	for (a = res; a && used < sizeof(entry) - 64; a = a->ai_next) {
		char ip[64];

		if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST))
			continue;
		used += (size_t)snprintf(entry + used, sizeof(entry) - used, "%s%s%s%s",
					 entry[used - 1] == ':' ? "" : ",", a->ai_family == AF_INET6 ? "[" : "",
					 ip, a->ai_family == AF_INET6 ? "]" : "");
	}
	freeaddrinfo(res);
	st->resolve = curl_slist_append(NULL, entry);
	if (!st->resolve)
		return error_set(e, EXIT_HOST, "out of memory");
	return 0;
}

static int stream_open(struct blockdev **out, const char *path, const struct blockdev_opts *o,
		       struct error *e)
{
	struct stream *st = calloc(1, sizeof(*st));
	struct blockdev *bd = NULL;
	struct stat sb;
	bool prefetch;

	*out = NULL;
	if (!st)
		return error_set(e, EXIT_HOST, "out of memory");
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	st->cidx = UINT32_MAX;
	st->spec = strdup(path);
	if (!st->spec || parse_spec(st, path, &prefetch, e) ||
	    store_vmproof_src_init(&st->vm, st->vm_key, NULL, st->cert, e))
		goto fail;
	/* the message names the disk, without its key and certificate paths */
	free(st->spec);
	if (asprintf(&st->spec, "store:%s/%s", st->base, st->name) < 0) {
		st->spec = NULL;
		error_set(e, EXIT_HOST, "out of memory");
		goto fail;
	}
	if (!o->readonly) {
		error_set(e, EXIT_USAGE, "%s: a store: disk is read-only (open it read-only, or put a qcow2 "
			  "overlay over it for the writes)", st->spec);
		goto fail;
	}
	/* Its threads reach the server and write the cache by path at run
	 * time: a jail (no route out of its network namespace, no cache
	 * directory after pivot_root) and a running VM's filters (hot-plug:
	 * the event loop's filter would be theirs too) forbid both. */
	if (jail_host_pid() != getpid()) {
		error_set(e, EXIT_USAGE, "%s: a store: disk cannot be used by a jailed VMM yet (--jail, and "
			  "every VMM shoald starts): it fetches over the network and writes its cache at run "
			  "time; use `shoal run` without --jail, or `shoal store pull` and a local image",
			  st->spec);
		goto fail;
	}
	if (seccomp_thread_filtered()) {
		error_set(e, EXIT_USAGE, "%s: a store: disk cannot be added to a running VM; give it "
			  "with --disk at start (or `shoal store pull` the image and add that)", st->spec);
		goto fail;
	}
	if (resolve_server(st, e))
		goto fail;
	if (stat(st->cache, &sb) && errno == ENOENT && store_init(st->cache, NULL, e))
		goto fail;
	if (store_open(&st->s, st->cache, true, e))
		goto fail;
	st->chunk_max = store_get_params(st->s)->chunk.max;
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		error_set(e, EXIT_HOST, "libcurl: %s", curl_dl_error() ? curl_dl_error() : "initialisation failed");
		goto fail;
	}
	st->c = client_new(st, st->cerr);
	st->cbuf = malloc(st->chunk_max);
	if (!st->c || !st->cbuf) {
		error_set(e, EXIT_HOST, "out of memory");
		goto fail;
	}
	if (get_manifest(st, e))
		goto fail;
	st->off = malloc(((size_t)st->m.n + 1) * sizeof(*st->off));
	st->have = calloc((size_t)st->m.n + 1, 1);
	if (!st->off || !st->have) {
		error_set(e, EXIT_HOST, "out of memory");
		goto fail;
	}
	st->off[0] = 0;
	for (uint32_t i = 0; i < st->m.n; i++) {
		st->off[i + 1] = st->off[i] + st->m.c[i].len;
		st->have[i] = (st->m.c[i].flags & STORE_CHUNK_ZERO) || store_chunk_has(st->s, st->m.c[i].hash);
		st->missing += !st->have[i];
	}
	if (!st->missing)	/* whole already: record it if it is not */
		record_image(st);
	order_load(st);
	if (getenv("SHOAL_TEST_STREAM_PREFETCH_MAX"))	/* tests: a partial prefetch */
		st->prefetch_max = strtoull(getenv("SHOAL_TEST_STREAM_PREFETCH_MAX"), NULL, 10);
	bd = calloc(1, sizeof(*bd));
	if (!bd || !(bd->path = strdup(st->spec))) {
		free(bd);
		error_set(e, EXIT_HOST, "out of memory");
		goto fail;
	}
	bd->fd = -1;
	bd->ops = &stream_ops;
	bd->format = BD_FMT_RAW;
	bd->size = st->m.size;
	bd->readonly = true;
	bd->caller_reports = o->caller_reports;
	bd->priv = st;
	if (pthread_create(&st->lt, NULL, loader_main, st))
		fprintf(stderr, "shoal: %s: no loader thread (reads fetch themselves): %s\n", st->spec,
			strerror(errno));
	else
		st->lt_on = true;
	if (prefetch && st->missing) {
		if (pthread_create(&st->th, NULL, prefetch_main, st)) {
			fprintf(stderr, "shoal: %s: no prefetch thread: %s\n", st->spec, strerror(errno));
		} else {
			st->th_on = true;
		}
	}
	*out = bd;
	return 0;
fail:
	stream_free(st);
	return -1;
}

void store_stream_register(void)
{
	blockdev_register_scheme("store", stream_open);
}
