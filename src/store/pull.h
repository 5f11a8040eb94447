/*
 * pull.h - `shoal store pull`: copy an image from `shoal store serve`
 * into a local store, fetching only the chunks it lacks (pull.c).
 */
#ifndef SHOAL_STORE_PULL_H
#define SHOAL_STORE_PULL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

struct store_pull_opts {
	const char *dir, *name;		/* the local store; the image */
	const char *from;		/* https://HOST:PORT */
	const char *cert, *key;		/* this client host's certificate and key */
	const char *ca;			/* the CA that signed the server's certificate */
	const char *vm_key, *vm_proof;	/* acting for a VM: its key, or a proof (store/vmkey.h) */
	store_progress_fn progress;
	void *opaque;
};

struct store_pull_stats {
	uint64_t size, chunks, zero_chunks;
	uint64_t present;		/* chunks already in the local store */
	uint64_t fetched, fetched_bytes;
	bool up_to_date;		/* the image was here already, the same */
};

int store_pull(const struct store_pull_opts *o, struct store_pull_stats *st, struct error *e);
/* The same for a snapshot object (GET /v1/snapshots/NAME; snapobj.h):
 * size and chunks are the sums over its parts. */
int store_pull_snapshot(const struct store_pull_opts *o, struct store_pull_stats *st, struct error *e);
/* The manifest JSON a server sent for `url`, checked whole (names, lengths
 * within chunk_max, lengths adding up to the size): store/stream.c. */
/* A response body kept in memory: at most max bytes (over: it had more),
 * NUL-terminated; free(p) when done. */
struct store_http_body {
	uint8_t *p;
	size_t n, cap, max;
	bool over;
};

/* libcurl's CURLOPT_WRITEFUNCTION for a struct store_http_body. */
size_t store_http_body_write(char *data, size_t size, size_t nmemb, void *opaque);

int store_pull_parse_manifest(const char *url, const void *json, size_t n, uint32_t chunk_max,
			      struct store_manifest *m, struct error *e);

#endif
