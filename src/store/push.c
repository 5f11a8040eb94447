/*
 * push.c - `shoal store push DIR NAME --to DIR2`: an authoring host puts an
 * image or a snapshot object (memory, device state, its disks and their
 * chain links) into another store: a shared one that access hosts pull
 * from (`shoal store serve` over it), or one on removable or network
 * storage (docs/store.md, "Push").  Mechanism 34 of the vision, the
 * authoring side; `pull` (pull.c) is the access side over HTTPS.
 *
 * Only the chunks the target lacks are copied, each read back checked
 * against its SHA-256 at the source (store_chunk_read) and checked again
 * as the target appends it (store_chunk_put).  The target's manifest or
 * object is recorded last, after its chunks are committed, so a push
 * killed at any point leaves no image or object there, and a rerun copies
 * only the rest.  A name the target has already is refused; the source
 * store is only read (a shared lock), so serves and pulls from it go on.
 * A parent link (an image's parent in a chain, a snapshot disk's parent
 * image) survives only where the target has that parent, the same (push
 * the base first), as with pull.
 */
#include "store/push.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/exitcode.h"
#include "store/pull.h"
#include "store/snapobj.h"

#define COMMIT_BYTES (2u << 20)

/* The chunks of m that `to` lacks, from `from`. */
static int copy_chunks(struct store *from, struct store *to, const struct store_manifest *m, const char *what,
		       uint8_t *buf, struct store_push_stats *st, uint64_t *since, store_progress_fn progress,
		       void *opaque, struct error *e)
{
	for (uint32_t i = 0; i < m->n; i++) {
		uint32_t len;

		st->chunks++;
		if (m->c[i].flags & STORE_CHUNK_ZERO) {
			st->zero_chunks++;
			continue;
		}
		if (store_chunk_has(to, m->c[i].hash)) {
			st->present++;
			continue;
		}
		if (store_chunk_read(from, m->c[i].hash, buf, &len, e))
			return error_prefix(e, "%s", what);
		if (len != m->c[i].len)
			return error_set(e, EXIT_BADSTATE, "%s: chunk #%u is %u bytes, the manifest says %u", what, i,
					 len, m->c[i].len);
		if (store_chunk_put(to, m->c[i].hash, buf, len, e))
			return -1;
		st->copied++;
		st->copied_bytes += len;
		*since += len;
		if (*since >= COMMIT_BYTES) {
			if (store_commit(to, e))
				return -1;
			*since = 0;
		}
		if (progress && !(st->copied % 64))
			progress(opaque, st->copied_bytes, st->size);
	}
	return 0;
}

static int push_snapshot(struct store *from, struct store *to, const char *name, uint8_t *buf,
			 struct store_push_stats *st, store_progress_fn progress, void *opaque, struct error *e)
{
	json_t *desc = store_snap_describe(from, name, e), *part;
	struct store_manifest *pm = NULL;
	const char **pn = NULL, *key;
	char what[200];
	uint64_t since = 0;
	size_t n = 0;
	int rc = -1;

	st->snapshot = true;
	if (!desc)
		return -1;
	if (store_snap_check_desc(desc, name, e))
		goto out;
	pm = calloc(json_object_size(json_object_get(desc, "parts")) + 1, sizeof(*pm));
	pn = calloc(json_object_size(json_object_get(desc, "parts")) + 1, sizeof(*pn));
	if (!pm || !pn) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	json_object_foreach(json_object_get(desc, "parts"), key, part) {
		char *text = json_dumps(part, JSON_COMPACT);
		int r;

		snprintf(what, sizeof(what), "snapshot %s/%s", name, key);
		r = text ? store_pull_parse_manifest(what, text, strlen(text), store_get_params(to)->chunk.max,
						     &pm[n], e)
			 : error_set(e, EXIT_HOST, "out of memory");
		free(text);
		if (r)
			goto out;
		pn[n++] = key;
		st->size += pm[n - 1].size;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "snapshot %s/%s", name, pn[i]);
		if (copy_chunks(from, to, &pm[i], what, buf, st, &since, progress, opaque, e))
			goto out;
	}
	if (store_snap_put(to, name, desc, pn, pm, n, e))
		goto out;
	{	/* did a disk's parent link survive? (store_snap_put drops the others) */
		json_t *got = store_snap_describe(to, name, NULL), *o;
		size_t i;

		json_array_foreach(json_object_get(got, "disks"), i, o)
			st->kept_parent |= json_object_get(o, "parent") != NULL;
		json_decref(got);
	}
	rc = 0;
out:
	for (size_t i = 0; pm && i < n; i++)
		store_manifest_free(&pm[i]);
	free(pm);
	free(pn);
	json_decref(desc);
	return rc;
}

static int push_image(struct store *from, struct store *to, const char *name, uint8_t *buf,
		      struct store_push_stats *st, store_progress_fn progress, void *opaque, struct error *e)
{
	struct store_manifest m, got;
	char what[120];
	uint64_t since = 0;
	int rc = -1;

	if (store_manifest_get(from, name, &m, e))
		return -1;
	st->size = m.size;
	snprintf(what, sizeof(what), "image %s", name);
	if (!copy_chunks(from, to, &m, what, buf, st, &since, progress, opaque, e) &&
	    !store_manifest_put(to, name, &m, e)) {
		rc = 0;
		if (m.parent[0] && !store_manifest_get(to, name, &got, NULL)) {
			st->kept_parent = got.parent[0] != 0;
			store_manifest_free(&got);
		}
	}
	store_manifest_free(&m);
	return rc;
}

int store_push(const char *from_dir, const char *name, const char *to_dir, struct store_push_stats *st,
	       store_progress_fn progress, void *opaque, struct error *e)
{
	struct store *from = NULL, *to = NULL;
	struct stat sb;
	uint8_t *buf = NULL;
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (store_name_check(name, e))
		return -1;
	if (store_open(&from, from_dir, false, e))
		return -1;
	if (!store_snap_exists(from, name)) {
		struct store_manifest m;

		if (store_manifest_get(from, name, &m, e))	/* "no image named ..." */
			goto out;
		store_manifest_free(&m);
	}
	if (stat(to_dir, &sb) && store_init(to_dir, NULL, e))
		goto out;
	if (store_open(&to, to_dir, true, e))
		goto out;
	if (store_name_free(to, name, e))
		goto out;
	buf = malloc(store_get_params(from)->chunk.max);
	if (!buf) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	rc = store_snap_exists(from, name) ? push_snapshot(from, to, name, buf, st, progress, opaque, e)
					   : push_image(from, to, name, buf, st, progress, opaque, e);
	if (rc && st->copied)
		store_commit(to, NULL);	/* keep the whole chunks for a rerun */
	if (!rc && progress)
		progress(opaque, st->size, st->size);
out:
	free(buf);
	store_close(to);
	store_close(from);
	return rc;
}
