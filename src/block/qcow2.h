/*
 * qcow2.h - in-memory state of an open qcow2 image and the functions the
 * qcow2_*.c files share.  The on-disk layout is in qcow2_format.h; users
 * of the block layer see only blockdev.h and the qcow2_create / snapshot /
 * check entry points at the end of this file.
 *
 * One file per concern:
 *   qcow2.c           header parsing, open, close, flush ordering, header updates
 *   qcow2_cluster.c   guest-to-host mapping: read, write, zero, discard
 *   qcow2_refcount.c  refcounts and cluster allocation
 *   qcow2_cache.c     the L2-table and refcount-block cache
 *   qcow2_compress.c  zlib and zstd cluster (de)compression
 *   qcow2_snapshot.c  internal snapshots
 *   qcow2_check.c     consistency check and repair
 *   qcow2_overlap.c   the metadata-overlap guard in front of every write
 *   qcow2_create.c    new images
 *   chain_id.c        chain identity extension
 */
#ifndef SHOAL_BLOCK_QCOW2_H
#define SHOAL_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "block/blockdev.h"
#include "block/qcow2_format.h"

struct qcow2_cache;

/* A header extension we do not interpret, kept to be written back as is. */
struct qcow2_ext {
	uint32_t type;
	uint32_t len;
	uint8_t *data;
};

/* One internal snapshot, parsed. */
struct qcow2_snapshot {
	uint64_t l1_offset;
	uint32_t l1_size;
	char *id;
	char *name;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint64_t icount;
	uint32_t extra_size;		/* as read; we write 24 */
};

/* The chain identity as read from (or to be written to) the extension. */
struct qcow2_chain_id {
	bool present;			/* the extension exists in the image */
	bool current;			/* our autoclear bit was still set */
	uint64_t ext_off;		/* file offset of the extension's data */
	uint8_t id[16];
	uint64_t generation;
	uint8_t parent_id[16];
	uint64_t parent_generation;
	uint32_t flags;
	bool bumped;			/* generation already bumped this open */
};

/* A cluster whose refcount drops once metadata no longer points at it. */
struct qcow2_deferred_free {
	uint64_t off;
	uint64_t nb;			/* clusters */
};

struct qcow2 {
	struct blockdev *bd;
	int fd;

	/* header, host-endian */
	uint32_t version;
	uint32_t cluster_bits;
	uint64_t cluster_size;
	uint64_t size;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
	char *backing_file;		/* NULL if none */
	char *backing_format;		/* NULL if not recorded */
	char *data_file;		/* external data file name, refused for I/O */

	/* mapping */
	bool ext_l2;
	uint32_t l2_entry_bytes;	/* 8, or 16 with extended L2 */
	uint32_t l2_bits;		/* log2(entries per L2 table) */
	uint32_t sc_bits;		/* log2(subcluster size) */
	uint64_t *l1;			/* host-endian copy */
	uint32_t l1_size;
	uint64_t l1_offset;
	bool l1_dirty;
	uint64_t file_end;		/* bytes: file size at open, grown by allocation */

	/* refcounts */
	uint64_t *reftable;		/* host-endian copy */
	uint32_t reftable_size;		/* entries */
	uint32_t reftable_used;		/* 1 + index of the last non-zero entry */
	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	uint32_t rb_bits;		/* log2(refcounts per block) */
	uint64_t free_hint;		/* lowest cluster index that may be free */
	uint64_t cpack_off;		/* next free byte for packed compressed data, 0: none */
	uint64_t resv_lo, resv_hi;	/* clusters being allocated: the scan for a
					 * new refcount block skips them */
	struct qcow2_deferred_free *frees;
	size_t nb_frees, cap_frees;

	struct qcow2_cache *l2_cache;
	struct qcow2_cache *rb_cache;

	/* snapshots */
	struct qcow2_snapshot *snaps;
	uint32_t nb_snaps;
	uint64_t snap_offset;
	uint64_t snap_table_len;		/* bytes, as loaded or written */

	/* other extensions, written back unchanged by header rewrites */
	struct qcow2_ext *exts;
	uint32_t nb_exts;

	struct qcow2_chain_id chain;
	bool corrupt;			/* metadata inconsistent: no more writes */
	char corrupt_why[256];		/* what made it so, when seen in this open */
	bool dirty_marked;		/* we set the dirty bit on disk */
	uint8_t *cbuf, *dbuf;		/* compression scratch, 2 clusters each */
	uint8_t *wbuf;			/* one cluster: copy-on-write assembly */
	uint64_t dbuf_key;		/* L2 entry whose cluster dbuf holds */
	bool dbuf_valid;
};

/* Kinds of metadata region, for the overlap guard (qcow2_overlap.c).  A
 * write names the kind it writes; guest data is 0 and overlaps them all. */
enum {
	QCOW2_K_DATA = 0,
	QCOW2_K_HEADER = 1u << 0,
	QCOW2_K_L1 = 1u << 1,		/* the active L1 table */
	QCOW2_K_L2 = 1u << 2,		/* the active L2 tables */
	QCOW2_K_REFTABLE = 1u << 3,
	QCOW2_K_REFBLOCK = 1u << 4,
	QCOW2_K_SNAPTABLE = 1u << 5,
	QCOW2_K_SNAP_L1 = 1u << 6,	/* snapshots' L1 tables */
	/* the regions a header field places: O(1) to test, so reads use them */
	QCOW2_K_FIXED = QCOW2_K_HEADER | QCOW2_K_L1 | QCOW2_K_REFTABLE | QCOW2_K_SNAPTABLE,
	QCOW2_K_ALL = 0x7f,
};

/* Guest cluster mapping, as qcow2_cluster.c decodes one L2 entry. */
struct qcow2_map {
	enum bd_status status;
	uint64_t host;			/* DATA: host offset of the guest offset */
	uint64_t bytes;			/* bytes from the offset with this status */
	uint64_t l2e;			/* raw entry (standard part) */
};

#define QCOW2_DEFAULT_CACHE	(4u << 20)

static inline uint64_t qcow2_off_in_cluster(const struct qcow2 *q, uint64_t off)
{
	return off & (q->cluster_size - 1);
}

static inline uint64_t qcow2_size_to_clusters(const struct qcow2 *q, uint64_t sz)
{
	return (sz + q->cluster_size - 1) >> q->cluster_bits;
}

/* qcow2.c */
extern const struct blockdev_ops qcow2_ops;
int qcow2_open(struct blockdev *bd, const struct blockdev_opts *o, struct error *e);
int qcow2_signal_corruption(struct qcow2 *q, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int qcow2_write_l1_entry(struct qcow2 *q, uint32_t idx);
int qcow2_flush_all(struct qcow2 *q);
int qcow2_header_update_bits(struct qcow2 *q);
int qcow2_header_rewrite(struct qcow2 *q);
int qcow2_before_change(struct qcow2 *q);
bool qcow2_host_ok(const struct qcow2 *q, uint64_t off);
uint64_t qcow2_file_size(const struct qcow2 *q);
int qcow2_resize(struct blockdev *bd, uint64_t size, struct error *e);
int qcow2_set_backing(struct blockdev *bd, const char *name, const char *fmt,
		      struct error *e);

/* qcow2_overlap.c */
const char *qcow2_kind_name(uint32_t kind);
uint32_t qcow2_overlap(const struct qcow2 *q, uint32_t self, uint64_t off, uint64_t len,
		       uint32_t kinds, uint64_t *at);
int qcow2_meta_guard(struct qcow2 *q, uint32_t self, uint64_t off, uint64_t len,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int qcow2_pwrite(struct qcow2 *q, uint32_t self, const void *buf, size_t len, uint64_t off);

/* qcow2_cache.c */
struct qcow2_cache *qcow2_cache_new(struct qcow2 *q, uint32_t entries, bool is_l2);
void qcow2_cache_free(struct qcow2_cache *c);
int qcow2_cache_get(struct qcow2_cache *c, uint64_t off, bool fresh, uint8_t **table);
void qcow2_cache_dirty(struct qcow2_cache *c, uint8_t *table);
int qcow2_cache_flush(struct qcow2_cache *c);
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off);
void qcow2_cache_drop_all(struct qcow2_cache *c);
bool qcow2_cache_has_dirty(const struct qcow2_cache *c);

/* qcow2_refcount.c */
int qcow2_refcount_load(struct qcow2 *q, struct error *e);
int qcow2_refcount_get(struct qcow2 *q, uint64_t cluster, uint64_t *rc);
int qcow2_refcount_update(struct qcow2 *q, uint64_t cluster, int64_t delta);
int qcow2_refcount_set(struct qcow2 *q, uint64_t cluster, uint64_t val);
int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t nb);
int qcow2_free_deferred(struct qcow2 *q, uint64_t off, uint64_t nb);
int qcow2_free_apply(struct qcow2 *q);
int qcow2_free_compressed(struct qcow2 *q, uint64_t l2e);
uint64_t qcow2_refcount_max(const struct qcow2 *q);

/* qcow2_cluster.c */
int qcow2_map_get(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_map *m);
int qcow2_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len);
int qcow2_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len);
int qcow2_write_zeroes(struct blockdev *bd, uint64_t off, uint64_t len);
int qcow2_discard(struct blockdev *bd, uint64_t off, uint64_t len);
int qcow2_block_status(struct blockdev *bd, uint64_t off, uint64_t len,
		       struct bd_extent *ext);
uint64_t qcow2_map_fast(struct blockdev *bd, bool write, uint64_t off,
			uint64_t len, uint64_t *host_off);
void qcow2_compressed_range(const struct qcow2 *q, uint64_t l2e,
			    uint64_t *off, uint64_t *len);
int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf);
int qcow2_preallocate(struct qcow2 *q, bool full);
int qcow2_make_empty(struct qcow2 *q);
uint64_t qcow2_l2e_get(const struct qcow2 *q, const uint8_t *t, uint32_t i,
		       uint64_t *bitmap);
void qcow2_l2e_set(const struct qcow2 *q, uint8_t *t, uint32_t i,
		   uint64_t e, uint64_t bitmap);

/* qcow2_compress.c */
int qcow2_decompress(struct qcow2 *q, const void *src, size_t slen, void *dst, size_t dlen);
long qcow2_compress(struct qcow2 *q, const void *src, size_t slen, void *dst, size_t dlen);

/* qcow2_snapshot.c */
int qcow2_snapshots_load(struct qcow2 *q, struct error *e);
void qcow2_snapshots_free(struct qcow2 *q);
int qcow2_snapshot_create(struct blockdev *bd, const char *name, struct error *e);
int qcow2_snapshot_delete(struct blockdev *bd, const char *name, struct error *e);
int qcow2_snapshot_apply(struct blockdev *bd, const char *name, struct error *e);
int qcow2_snapshot_find(struct qcow2 *q, const char *name);
int qcow2_fix_copied(struct qcow2 *q);
int qcow2_snapshot_view(struct blockdev *bd, const char *name, struct error *e);

/* qcow2_check.c */
struct qcow2_check_result {
	uint64_t corruptions;		/* refcount too low, bad offsets, overlaps */
	uint64_t leaks;			/* refcount too high */
	uint64_t fixed;
	uint64_t allocated_clusters, total_clusters, fragmented, compressed_clusters;
	uint64_t image_end;
	char first_problem[256];
};
int qcow2_check(struct blockdev *bd, bool repair, struct qcow2_check_result *r,
		struct error *e);

/* qcow2_create.c */
struct qcow2_create_opts {
	uint64_t size;
	uint32_t version;		/* 2 or 3 (default 3) */
	uint32_t cluster_size;		/* default 65536 */
	uint32_t refcount_bits;		/* default 16 */
	bool ext_l2;
	bool lazy_refcounts;
	uint8_t compression_type;
	const char *backing_file;
	const char *backing_format;	/* "raw", "qcow2" or NULL */
	int prealloc;			/* 0 off, 1 metadata, 2 full */
	bool chain_id;			/* write the chain-identity extension (default on) */
	bool force;			/* ignore backing chain mismatches */
};
int qcow2_create(const char *path, const struct qcow2_create_opts *o, struct error *e);
/* The same in the open file `fd` (truncated; left open), which `path`
 * names in messages only: for a process that cannot open names (a jailed
 * VMM, given the file by shoald).  `backing`, when not NULL, is the open
 * image that o->backing_file names: its size, format and chain identity
 * are taken from it instead of opening that name.  No preallocation. */
int qcow2_create_fd(int fd, const char *path, const struct qcow2_create_opts *o,
		    const struct blockdev *backing, struct error *e);

/* chain_id.c */
void chain_id_generate(uint8_t id[16]);
int chain_id_parse(struct qcow2 *q, const uint8_t *data, uint32_t len, uint64_t off);
int chain_id_verify(struct blockdev *bd, bool force, struct error *e);
int chain_id_bump(struct qcow2 *q);
int chain_id_write(struct qcow2 *q);
int chain_id_anchor(struct blockdev *bd, struct error *e);
void chain_id_format(const uint8_t id[16], char out[37]);
int chain_id_assume(struct blockdev *bd, const char *id, uint64_t generation, struct error *e);

#endif
