/*
 * chain_id.c - chain identity: detecting a backing file that changed under
 * its overlays (seed mechanisms 24 and 36).
 *
 * Every qcow2 image Shoal creates carries a compatible header extension
 * (QCOW2_EXT_SHOAL_CHAIN, ignored and preserved by QEMU) holding a random
 * 128-bit id and a generation number, plus - in an overlay - the id and
 * generation its parent had when the overlay was made.
 *
 * The generation changes whenever the image's contents may change: the
 * first change after each open bumps it on disk (header write + sync)
 * before any data moves.  Writers that do not know the extension cannot
 * bump it, so alongside it we keep an autoclear feature bit
 * (QCOW2_AUTOCLEAR_SHOAL_CHAIN): QEMU clears autoclear bits it does not
 * know when it opens an image for writing, and a cleared bit tells us the
 * generation may be stale.
 *
 * On open, each overlay's record is compared with its parent: a different
 * id (the file was replaced), a different generation, or a cleared bit is
 * refused, naming both files and both generations, unless forced.
 * `shoal img rebase` re-anchors an overlay to its current parent.
 * Images without the extension (made by qemu-img) open normally.
 */
#include "block/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"

/* A fresh random (version 4) id. */
void chain_id_generate(uint8_t id[16])
{
	if (getrandom(id, 16, 0) != 16) {
		for (int i = 0; i < 16; i++)
			id[i] = (uint8_t)(rand() ^ (getpid() << i));
	}
	id[6] = (id[6] & 0x0f) | 0x40;
	id[8] = (id[8] & 0x3f) | 0x80;
}

void chain_id_format(const uint8_t id[16], char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x", id[0], id[1], id[2], id[3], id[4], id[5],
		 id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
}

/* Parse the extension found at file offset `off`.  Too short: ignored. */
int chain_id_parse(struct qcow2 *q, const uint8_t *data, uint32_t len, uint64_t off)
{
	struct qcow2_disk_chain_id d;
	struct qcow2_chain_id *c = &q->chain;

	if (len < sizeof(d))
		return 0;
	memcpy(&d, data, sizeof(d));
	c->present = true;
	c->ext_off = off;
	memcpy(c->id, d.id, 16);
	c->generation = be64toh(d.generation);
	memcpy(c->parent_id, d.parent_id, 16);
	c->parent_generation = be64toh(d.parent_generation);
	c->flags = be32toh(d.flags);
	c->current = q->version < 3 || (q->autoclear & QCOW2_AUTOCLEAR_SHOAL_CHAIN);
	return 0;
}

/* Write the extension's data in place. */
int chain_id_write(struct qcow2 *q)
{
	struct qcow2_chain_id *c = &q->chain;
	struct qcow2_disk_chain_id d = { 0 };

	memcpy(d.id, c->id, 16);
	d.generation = htobe64(c->generation);
	memcpy(d.parent_id, c->parent_id, 16);
	d.parent_generation = htobe64(c->parent_generation);
	d.flags = htobe32(c->flags);
	return bd_pwrite(q->fd, &d, sizeof(d), c->ext_off);
}

/* Before the first change in this open: new generation, durable first. */
int chain_id_bump(struct qcow2 *q)
{
	struct qcow2_chain_id *c = &q->chain;
	int r;

	if (!c->present) {
		c->bumped = true;
		return 0;
	}
	c->generation++;
	r = chain_id_write(q);
	if (!r && q->version >= 3 && !(q->autoclear & QCOW2_AUTOCLEAR_SHOAL_CHAIN)) {
		q->autoclear |= QCOW2_AUTOCLEAR_SHOAL_CHAIN;
		r = qcow2_header_update_bits(q);
	}
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	if (r)
		return r;
	c->current = true;
	c->bumped = true;
	return 0;
}

/* Compare bd's record of its parent with the parent as opened. */
int chain_id_verify(struct blockdev *bd, bool force, struct error *e)
{
	struct qcow2 *q = bd->priv, *p;
	struct blockdev *pb = bd->backing;
	char want[37], got[37];
	int r = 0;

	if (!pb || !q->chain.present || !(q->chain.flags & QCOW2_CHAIN_F_PARENT))
		return 0;
	p = pb->format == BD_FMT_QCOW2 ? pb->priv : NULL;
	chain_id_format(q->chain.parent_id, want);
	if (!p || !p->chain.present) {
		r = error_set(e, EXIT_NOINPUT, "%s: backing file %s carries no chain identity, "
			      "but this overlay was made from image %s", bd->path, pb->path, want);
	} else if (memcmp(p->chain.id, q->chain.parent_id, 16)) {
		chain_id_format(p->chain.id, got);
		r = error_set(e, EXIT_NOINPUT, "%s: backing file %s is not the image this "
			      "overlay was made from (id %s, expected %s)", bd->path, pb->path,
			      got, want);
	} else if (p->chain.generation != q->chain.parent_generation) {
		r = error_set(e, EXIT_NOINPUT, "%s: backing file %s changed since this overlay "
			      "was made (generation %llu, expected %llu)", bd->path, pb->path,
			      (unsigned long long)p->chain.generation,
			      (unsigned long long)q->chain.parent_generation);
	} else if (!p->chain.current) {
		r = error_set(e, EXIT_NOINPUT, "%s: backing file %s was opened for writing by "
			      "another program since this overlay was made (generation %llu "
			      "may be stale)", bd->path, pb->path,
			      (unsigned long long)p->chain.generation);
	}
	if (r && force) {
		log_warn("%s (continuing: --force)", e ? e->msg : "chain identity mismatch");
		return 0;
	}
	if (r && e) {
		size_t n = strlen(e->msg);
		snprintf(e->msg + n, sizeof(e->msg) - n, "; refusing to open the chain "
			 "(--force overrides, `shoal img rebase %s` re-anchors)", bd->path);
	}
	return r;
}

/* Record bd's current backing file as its parent (rebase, commit, create).
 * Adds the extension to an image that lacks it. */
int chain_id_anchor(struct blockdev *bd, struct error *e)
{
	struct qcow2 *q = bd->priv, *p;
	struct blockdev *pb = bd->backing;
	int r;

	if (bd->format != BD_FMT_QCOW2)
		return 0;
	p = pb && pb->format == BD_FMT_QCOW2 ? pb->priv : NULL;
	if (!q->chain.present) {
		q->chain.present = true;
		chain_id_generate(q->chain.id);
		q->chain.generation = 1;
		q->chain.bumped = true;
		if (q->version >= 3)
			q->autoclear |= QCOW2_AUTOCLEAR_SHOAL_CHAIN;
		q->chain.flags = 0;
		r = qcow2_header_rewrite(q);
		if (r)
			return error_set(e, EXIT_HOST, "%s: cannot add the chain identity: %s",
					 bd->path, strerror(-r));
	}
	memset(q->chain.parent_id, 0, 16);
	q->chain.parent_generation = 0;
	q->chain.flags &= ~QCOW2_CHAIN_F_PARENT;
	if (p && p->chain.present) {
		memcpy(q->chain.parent_id, p->chain.id, 16);
		q->chain.parent_generation = p->chain.generation;
		q->chain.flags |= QCOW2_CHAIN_F_PARENT;
	}
	r = chain_id_write(q);
	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	return r ? error_set(e, EXIT_HOST, "%s: cannot write the chain identity: %s",
			     bd->path, strerror(-r)) : 0;
}

int blockdev_chain_id(const struct blockdev *bd, char id[37], uint64_t *generation,
		      bool *current)
{
	const struct qcow2 *q = bd->format == BD_FMT_QCOW2 ? bd->priv : NULL;

	if (!q || !q->chain.present)
		return -1;
	chain_id_format(q->chain.id, id);
	*generation = q->chain.generation;
	*current = q->chain.current;
	return 0;
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into 16 bytes: 0, or -1. */
static int chain_id_scan(const char *t, uint8_t id[16])
{
	int k = 0;

	for (const char *p = t; *p && k < 32; p++) {
		int v;

		if (*p == '-')
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			v = *p - 'a' + 10;
		else
			return -1;
		if (k % 2)
			id[k / 2] = (uint8_t)(id[k / 2] << 4 | v);
		else
			id[k / 2] = (uint8_t)v;
		k++;
	}
	return k == 32 && strlen(t) == 36 ? 0 : -1;
}

/* Give bd, a qcow2 image this process made and wrote, the identity an
 * image had elsewhere (an image store's record of it): its id and
 * generation, its parent the backing file as opened.  Rebuilding a chain
 * this way keeps the identities its overlays (and a migration's checks)
 * were made against. */
int chain_id_assume(struct blockdev *bd, const char *id, uint64_t generation, struct error *e)
{
	struct qcow2 *q = bd->format == BD_FMT_QCOW2 ? bd->priv : NULL;
	uint8_t raw[16];

	if (!q)
		return error_set(e, EXIT_USAGE, "%s: not a qcow2 image: it cannot carry a chain identity", bd->path);
	if (chain_id_scan(id, raw))
		return error_set(e, EXIT_USAGE, "%s: chain identity '%s' is not a UUID", bd->path, id);
	if (chain_id_anchor(bd, e))	/* the extension, and the parent as opened */
		return -1;
	memcpy(q->chain.id, raw, 16);
	q->chain.generation = generation;
	q->chain.bumped = true;		/* no bump from here on in this open */
	int r = chain_id_write(q);

	if (!r && fdatasync(q->fd) < 0)
		r = -errno;
	return r ? error_set(e, EXIT_HOST, "%s: cannot write the chain identity: %s", bd->path, strerror(-r)) : 0;
}
