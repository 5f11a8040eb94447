/*
 * chain.h - an image of the store, or a snapshot's disk, written back as a
 * qcow2 backing chain with the chain identities it had (chain.c,
 * docs/store.md "Chains").
 */
#ifndef SHOAL_STORE_CHAIN_H
#define SHOAL_STORE_CHAIN_H

#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

/* One line for the user ("out/base.qcow2: kept (...)"). */
typedef void (*store_chain_note_fn)(void *opaque, const char *line);

/* Image `name` as the new qcow2 file `out`: its parent (if it has one) is
 * the file named after the parent image in out's directory, kept when it
 * is there with the parent's identity, refused when it is there with
 * another, else written the same way first, down the chain.  Each file
 * holds only the 64 KiB clusters that differ from its backing file, and
 * gets the identity the store recorded.  A failure leaves no file it
 * made. */
int store_get_chain(struct store *s, const char *name, const char *out, store_chain_note_fn note,
		    void *opaque, struct error *e);

/* The same for manifest `rel` of the store (a snapshot's disk part,
 * `label` in messages) over image `parent` (whose identity must be
 * parent_id/parent_gen), written as `out` with identity (id, gen) when
 * id is not NULL. */
int store_get_chain_at(struct store *s, const char *rel, const char *label, const char *parent,
		       const char *parent_id, uint64_t parent_gen, const char *id, uint64_t gen,
		       const char *out, store_chain_note_fn note, void *opaque, struct error *e);

#endif
