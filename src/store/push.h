/*
 * push.h - `shoal store push`: copy an image or a snapshot object from one
 * store into another, only the chunks that one lacks (push.c).
 */
#ifndef SHOAL_STORE_PUSH_H
#define SHOAL_STORE_PUSH_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

struct store_push_stats {
	bool snapshot;			/* a snapshot object, not an image */
	uint64_t size, chunks, zero_chunks;
	uint64_t present;		/* chunks the other store had */
	uint64_t copied, copied_bytes;
	bool kept_parent;		/* an image's or disk's parent link survived */
};

/* Image or snapshot `name` of the store at `from` into the store at `to`
 * (made if missing), under the same name. */
int store_push(const char *from, const char *name, const char *to, struct store_push_stats *st,
	       store_progress_fn progress, void *opaque, struct error *e);

#endif
