/*
 * store.h - the image store: deduplicated chunks in a log of segments,
 * indexed by a two-dimensional Bloom-filter bit array (store.c,
 * docs/store.md).
 *
 * A store is a directory.  Images go in through the block layer (a qcow2
 * chain is read as the guest sees it), are cut into content-defined chunks
 * (chunker.c) named by SHA-256, and each distinct chunk is kept once,
 * zstd-compressed, in a segment file.  An image is a manifest: the ordered
 * chunk names and sizes, its size, format and chain identity.
 *
 * One writer at a time (add, rm, gc take an exclusive lock on DIR/lock);
 * readers (get, ls, verify) a shared one.  Every chunk read is checked
 * against its name.
 */
#ifndef SHOAL_STORE_STORE_H
#define SHOAL_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "block/blockdev.h"
#include "store/chunker.h"

struct store;

struct store_params {
	struct chunker_params chunk;
	uint32_t segment_bytes;		/* a segment is sealed at this size ... */
	uint32_t segment_chunks;	/* ... or this many chunks */
	uint32_t bloom_bits, bloom_k;	/* rows of the index, hash functions */
	int zstd_level;
};
void store_params_default(struct store_params *p);

/* Make an empty store in `dir` (created if missing; an existing store or
 * a non-empty directory is refused).  p NULL: the defaults. */
int store_init(const char *dir, const struct store_params *p, struct error *e);
/* Open a store; `write` for add/rm/gc (exclusive lock, and the crash
 * leftovers of an earlier writer are cleared away). */
int store_open(struct store **out, const char *dir, bool write, struct error *e);
void store_close(struct store *s);
const struct store_params *store_get_params(const struct store *s);

/* 0 if `name` may name an image: 1..64 of [A-Za-z0-9._-], not starting
 * with '.'. */
int store_name_check(const char *name, struct error *e);

/* 0 if no image and no snapshot object has `name` (one namespace: rm,
 * grants and pull name either), else an error naming the one that does. */
int store_name_free(struct store *s, const char *name, struct error *e);

struct store_add_stats {
	uint64_t image_bytes;		/* the image's virtual size */
	uint64_t chunks, zero_chunks;	/* all chunks; those all zeros */
	uint64_t new_chunks, new_bytes;	/* chunks not in the store before */
	uint64_t stored_bytes;		/* new bytes after compression */
};
/* Progress: called now and then with bytes done and the total. */
typedef void (*store_progress_fn)(void *opaque, uint64_t done, uint64_t total);
/* Add the image open in bd as `name` (an existing name is refused). */
int store_add(struct store *s, struct blockdev *bd, const char *name, struct store_add_stats *st,
	      store_progress_fn progress, void *opaque, struct error *e);

/* Rebuild image `name`: write_fn gets every non-zero chunk in order
 * (zeros are left out: the output must read as zeros where nothing is
 * written).  *size_out gets the image's size before the first write. */
typedef int (*store_write_fn)(void *opaque, const void *buf, uint64_t off, uint64_t len,
			      struct error *e);
int store_get(struct store *s, const char *name, uint64_t *size_out,
	      int (*sized)(void *opaque, uint64_t size, const char *format, struct error *e),
	      store_write_fn write_fn, void *opaque, struct error *e);

struct store_image {
	char name[65];
	uint64_t size;
	char format[16];
	char chain_id[37];		/* "" if none */
	uint64_t generation;
	uint64_t added;			/* seconds since the epoch */
	uint64_t chunks, zero_chunks;
	uint64_t unique_bytes;		/* bytes in chunks no other image has */
	char parent[65];		/* its parent in a chain, or "" */
};
/* Every image, sorted by name; free(*list). */
int store_list(struct store *s, struct store_image **list, size_t *n, struct error *e);

struct store_du {
	uint64_t segments, segment_bytes;	/* files and bytes on disk */
	uint64_t chunks, chunk_bytes;		/* stored chunks, uncompressed bytes */
};
int store_du(struct store *s, struct store_du *du, struct error *e);

/* rm of an image that is another's parent in a chain is refused. */
int store_rm(struct store *s, const char *name, struct error *e);
/* The image with chain identity (chain_id, generation): 0 with its name,
 * or -1. */
int store_find_identity(struct store *s, const char *chain_id, uint64_t generation, char name[65]);
/* Is there an image `name` with chain identity (chain_id, generation)?
 * (NULL or "" for either: no.)  A parent link is kept only then. */
bool store_image_has_identity(struct store *s, const char *name, const char *chain_id, uint64_t generation);
/* The images whose parent is `name`, ", "-separated, "" if none. */
void store_children_of(struct store *s, const char *name, char *out, size_t n);

struct store_gc_stats {
	uint64_t live_chunks, dead_chunks;
	uint64_t segments_rewritten, segments_removed;
	uint64_t bytes_before, bytes_after;
};
int store_gc(struct store *s, struct store_gc_stats *st, struct error *e);

/* Re-read and re-hash every chunk of every segment, and check that every
 * image's chunks are present.  Each problem is handed to bad() as one
 * line naming the segment, the chunk and the images it breaks; returns the
 * number of problems (0: all well), or -1 with e when it could not run. */
int store_verify(struct store *s, void (*bad)(void *opaque, const char *line), void *opaque,
		 uint64_t *chunks_checked, struct error *e);

/* Testing and benchmarks: SHA-256 of a buffer. */
void store_hash(const void *buf, size_t len, uint8_t out[32]);
void store_hash_hex(const uint8_t h[32], char out[65]);

/* ---- chunks and manifests one at a time: the image server
 * (store/serve.c) and `shoal store pull` (store/pull.c) ---- */

#define STORE_CHUNK_ZERO 1u		/* the chunk is all zeros: not stored */
struct store_chunk_ref {
	uint8_t hash[32];		/* all zeros for a zero chunk */
	uint32_t len, flags;
};
struct store_manifest {
	uint64_t size, added, generation;
	char format[16];
	char chain_id[37];		/* "" if none */
	bool chain_current;
	char parent[65];		/* its parent in a chain, an image of the store; "" if none */
	char parent_chain_id[37];	/* that parent's identity */
	uint64_t parent_generation;
	uint8_t sum[32];		/* SHA-256 of the manifest file: its identity */
	uint32_t n;
	struct store_chunk_ref *c;	/* n, in image order */
};
/* Read image `name`'s manifest (free with store_manifest_free).  No such
 * image: -1 with e->status EXIT_NOINPUT. */
int store_manifest_get(struct store *s, const char *name, struct store_manifest *m, struct error *e);
void store_manifest_free(struct store_manifest *m);
/* Whether chunk `hash` is in a committed (or this writer's) segment. */
bool store_chunk_has(struct store *s, const uint8_t hash[32]);
/* Read chunk `hash` into buf (at least the store's chunk max), checked
 * against its SHA-256; *len gets its length.  Not in the store: -1 with
 * EXIT_NOINPUT; damaged: -1 with EXIT_BADSTATE and "segment X: chunk H:
 * why (it breaks images: a, b)". */
int store_chunk_read(struct store *s, const uint8_t hash[32], uint8_t *buf, uint32_t *len,
		     struct error *e);
/* Writers: add chunk `hash` (its bytes are checked against it first; one
 * already here is skipped).  Appended chunks are part of the store only
 * after store_commit (or store_manifest_put). */
int store_chunk_put(struct store *s, const uint8_t hash[32], const void *data, uint32_t len,
		    struct error *e);
int store_commit(struct store *s, struct error *e);
/* Writers: commit, then record manifest m as image `name` (every chunk
 * must be in the store; an existing name is refused). */
int store_manifest_put(struct store *s, const char *name, const struct store_manifest *m,
		       struct error *e);
/* The store's directory, as opened. */
const char *store_dir(const struct store *s);

/* ---- manifests at other places than images/NAME: the parts of snapshot
 * objects (store/snapobj.c).  `rel` is a path under the store directory
 * (snapshots/NAME/PART.mf, or a writer's snapshots/.NAME.tmp-PID/PART.mf);
 * `label` names the thing in errors ("snapshot s1/memory").  gc, verify
 * and the "it breaks" lists count every snapshots/NAME/PART.mf with the
 * images. ---- */
int store_add_at(struct store *s, struct blockdev *bd, const char *rel, struct store_add_stats *st,
		 store_progress_fn progress, void *opaque, struct error *e);
int store_get_at(struct store *s, const char *rel, const char *label, uint64_t *size_out,
		 int (*sized)(void *opaque, uint64_t size, const char *format, struct error *e),
		 store_write_fn write_fn, void *opaque, struct error *e);
int store_manifest_get_at(struct store *s, const char *rel, const char *label,
			  struct store_manifest *m, struct error *e);
int store_manifest_put_at(struct store *s, const char *rel, const char *label,
			  const struct store_manifest *m, struct error *e);
/* The snapshot objects' names (snapshots/NAME), sorted; free with
 * store_names_free.  None (no snapshots/ directory): 0 and n 0. */
int store_snapshot_names(struct store *s, char ***names, size_t *n, struct error *e);
void store_names_free(char **names, size_t n);
/* Remove snapshots/SUB and the files in it. */
int store_rm_dir(struct store *s, const char *sub);

#endif
