/*
 * chain.c - an image of the store (or a snapshot's disk) written back as a
 * qcow2 backing chain with the identities it had: `shoal store get
 * --chain` and `export-snapshot` (docs/store.md "Chains").
 *
 * The store keeps each layer of a chain as the guest sees it through that
 * layer, linked to its parent image by chain identity (store.c).  To
 * rebuild, each layer is streamed from its chunks into a new qcow2 file
 * whose backing file is the parent's file (written first, or found in
 * place), one 64 KiB cluster at a time, and only the clusters whose bytes
 * differ from what the new file reads already (its parent's data, or
 * zeros for a base) are written.  Then the file takes the identity the
 * store recorded (block/chain_id.c: chain_id_assume), so an overlay made
 * against the original base, a migration's base check and a snapshot's
 * disk record all see the same image.
 *
 * Invariants:
 * - A parent file already there is used only if it carries exactly the
 *   parent's identity (id, generation, current); any other file of that
 *   name is refused, never overwritten.
 * - A file this call made is removed again when it fails; files it found
 *   in place are never touched.
 * - Parent names come from manifests, which store.c checked as image names
 *   (no '/'), so every file is made in out's own directory.
 * - The chain is at most 32 deep, as the block layer's.
 */
#include "store/chain.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "block/blockdev.h"
#include "block/qcow2.h"

#define DIFF_CLUSTER 65536u
struct diff_out {
	struct blockdev *bd;
	uint8_t *cur, *old;	/* the cluster being filled; what bd reads there */
	uint64_t base;		/* the cluster's offset */
	uint32_t fill;		/* bytes of it known */
	uint64_t written;	/* clusters written */
};

static int diff_flush(struct diff_out *d, struct error *e)
{
	uint32_t n = d->fill;
	int r;

	if (!n)
		return 0;
	if ((r = blockdev_read(d->bd, d->old, d->base, n)))
		return error_set(e, EXIT_HOST, "%s: read at %llu: %s", d->bd->path, (unsigned long long)d->base,
				 strerror(-r));
	if (memcmp(d->old, d->cur, n)) {
		if ((r = blockdev_write(d->bd, d->cur, d->base, n)))
			return error_set(e, EXIT_HOST, "%s: write at %llu: %s", d->bd->path,
					 (unsigned long long)d->base, strerror(-r));
		d->written++;
	}
	d->base += n;
	d->fill = 0;
	return 0;
}

/* Bytes [off, off+len) of the image; skipped ranges are zeros. */
static int diff_write(void *opaque, const void *buf, uint64_t off, uint64_t len, struct error *e)
{
	struct diff_out *d = opaque;
	const uint8_t *p = buf;

	while (d->base + d->fill < off + len) {
		uint64_t at = d->base + d->fill;
		uint32_t room = DIFF_CLUSTER - d->fill, k;

		if (at < off) {		/* a gap: zero chunks are not written */
			k = (uint32_t)(off - at < room ? off - at : room);
			memset(d->cur + d->fill, 0, k);
		} else {
			k = (uint32_t)(off + len - at < room ? off + len - at : room);
			memcpy(d->cur + d->fill, p + (at - off), k);
		}
		d->fill += k;
		if (d->fill == DIFF_CLUSTER && diff_flush(d, e))
			return -1;
	}
	return 0;
}

static int diff_sized(void *opaque, uint64_t size, const char *format, struct error *e)
{
	(void)opaque;
	(void)size;
	(void)format;
	(void)e;
	return 0;
}


static void note(store_chain_note_fn fn, void *opaque, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(store_chain_note_fn fn, void *opaque, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!fn)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fn(opaque, line);
}

static int chain_write(struct store *s, const char *rel, const char *label, const struct store_manifest *m,
		       const char *id, uint64_t gen, const char *out, int depth, store_chain_note_fn fn,
		       void *opaque, struct error *e);

/* The parent image `parent` (identity pid, pgen) as a file in dir: found
 * in place, or written. */
static int chain_parent(struct store *s, const char *parent, const char *pid, uint64_t pgen, const char *dir,
			int depth, store_chain_note_fn fn, void *opaque, struct error *e)
{
	char ppath[4200], rel[128], label[128], id[37];
	struct blockdev *pb;
	struct store_manifest pm;
	uint64_t gen;
	bool cur;
	int rc;

	snprintf(ppath, sizeof(ppath), "%s/%s", dir, parent);
	if (!access(ppath, F_OK)) {
		struct blockdev_opts po = { .readonly = true, .caller_reports = true };

		if (blockdev_open(&pb, ppath, &po, e))
			return -1;
		rc = blockdev_chain_id(pb, id, &gen, &cur);
		blockdev_close(pb);
		if (rc || strcmp(id, pid) || gen != pgen || !cur)
			return error_set(e, EXIT_USAGE, "%s: there already, but not image '%s' of the store (chain "
					 "identity %s generation %llu, expected %s generation %llu): move it away, or "
					 "write into another directory", ppath, parent, rc ? "none" : id,
					 (unsigned long long)(rc ? 0 : gen), pid, (unsigned long long)pgen);
		note(fn, opaque, "%s: kept (image '%s', the same chain identity)", ppath, parent);
		return 0;
	}
	if (store_manifest_get(s, parent, &pm, e))
		return -1;
	if (strcmp(pm.chain_id, pid) || pm.generation != pgen) {
		error_set(e, EXIT_BADSTATE, "%s: image '%s' has chain identity %s generation %llu, not %s "
			  "generation %llu: it is not the parent recorded", store_dir(s), parent, pm.chain_id,
			  (unsigned long long)pm.generation, pid, (unsigned long long)pgen);
		store_manifest_free(&pm);
		return -1;
	}
	snprintf(rel, sizeof(rel), "images/%s", parent);
	snprintf(label, sizeof(label), "image '%s'", parent);
	rc = chain_write(s, rel, label, &pm, pm.chain_id, pm.generation, ppath, depth + 1, fn, opaque, e);
	store_manifest_free(&pm);
	return rc;
}

/* m (at rel) as the new file out, identity (id, gen) if id. */
static int chain_write(struct store *s, const char *rel, const char *label, const struct store_manifest *m,
		       const char *id, uint64_t gen, const char *out, int depth, store_chain_note_fn fn,
		       void *opaque, struct error *e)
{
	char tmp[4096], dir[4096];
	struct qcow2_create_opts q = { .chain_id = true };
	struct blockdev_opts bo = { .format = BD_FMT_QCOW2, .caller_reports = true };
	struct diff_out d = { 0 };
	uint64_t size;
	int rc = -1;

	if (depth > 32)
		return error_set(e, EXIT_BADSTATE, "%s: a chain deeper than 32 images", label);
	if (!access(out, F_OK))
		return error_set(e, EXIT_USAGE, "%s: already there (a new file is written)", out);
	snprintf(tmp, sizeof(tmp), "%s", out);
	snprintf(dir, sizeof(dir), "%s", dirname(tmp));
	if (m->parent[0]) {
		if (chain_parent(s, m->parent, m->parent_chain_id, m->parent_generation, dir, depth, fn, opaque, e))
			return -1;
		q.backing_file = m->parent;	/* beside it: relative */
		q.backing_format = "qcow2";
	}
	q.size = m->size;
	d.cur = malloc(DIFF_CLUSTER);
	d.old = malloc(DIFF_CLUSTER);
	if (!d.cur || !d.old) {
		error_set(e, EXIT_HOST, "out of memory");
		goto out;
	}
	if (qcow2_create(out, &q, e))
		goto out;
	if (blockdev_open(&d.bd, out, &bo, e))
		goto out;
	if (store_get_at(s, rel, label, &size, diff_sized, diff_write, &d, e) ||
	    diff_write(&d, NULL, m->size, 0, e) || diff_flush(&d, e))	/* trailing zeros */
		goto out;
	if (id && id[0] && chain_id_assume(d.bd, id, gen, e))
		goto out;
	if (blockdev_flush(d.bd)) {
		error_set(e, EXIT_HOST, "%s: flush failed", out);
		goto out;
	}
	note(fn, opaque, "%s: %s%s%s, %llu of %llu clusters written", out, label, m->parent[0] ? " over " : "",
	     m->parent, (unsigned long long)d.written, (unsigned long long)((m->size + DIFF_CLUSTER - 1) / DIFF_CLUSTER));
	rc = 0;
out:
	if (d.bd)
		blockdev_close(d.bd);
	if (rc)
		unlink(out);	/* made here (refused above when it was there): no half-written file */
	free(d.cur);
	free(d.old);
	return rc;
}

int store_get_chain(struct store *s, const char *name, const char *out, store_chain_note_fn fn, void *opaque,
		    struct error *e)
{
	struct store_manifest m;
	char rel[128], label[128];
	int rc;

	if (store_manifest_get(s, name, &m, e))
		return -1;
	snprintf(rel, sizeof(rel), "images/%s", name);
	snprintf(label, sizeof(label), "image '%s'", name);
	rc = chain_write(s, rel, label, &m, m.chain_id, m.generation, out, 0, fn, opaque, e);
	store_manifest_free(&m);
	return rc;
}

int store_get_chain_at(struct store *s, const char *rel, const char *label, const char *parent,
		       const char *parent_id, uint64_t parent_gen, const char *id, uint64_t gen,
		       const char *out, store_chain_note_fn fn, void *opaque, struct error *e)
{
	struct store_manifest m;
	int rc;

	if (store_manifest_get_at(s, rel, label, &m, e))
		return -1;
	if (parent) {
		snprintf(m.parent, sizeof(m.parent), "%s", parent);
		snprintf(m.parent_chain_id, sizeof(m.parent_chain_id), "%s", parent_id);
		m.parent_generation = parent_gen;
	}
	rc = chain_write(s, rel, label, &m, id, gen, out, 0, fn, opaque, e);
	store_manifest_free(&m);
	return rc;
}
