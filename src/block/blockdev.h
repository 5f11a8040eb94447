/*
 * blockdev.h - the block back-end interface.
 *
 * A struct blockdev is one open disk image (raw or qcow2) together with its
 * backing chain.  Everything above the block layer - `shoal img`, the
 * virtio-blk device, the vhost-user blk back end - talks to images only
 * through the functions here, which dispatch to a per-format ops table in
 * the manner of kvmtool's disk_image ops and QEMU's BlockDriver.
 *
 * Threads: a blockdev is owned by one thread at a time.  The synchronous
 * calls block that thread; the asynchronous ones (blockdev_submit and
 * blockdev_poll) let it keep many requests in flight through the io_uring
 * engine in aio.c, and complete them by calling back on the same thread.
 *
 * Direct I/O: with opts.direct the image file is opened O_DIRECT, so guest
 * I/O bypasses the host page cache.  The kernel then wants buffers, file
 * offsets and lengths aligned to the file's direct-I/O alignment
 * (bd->dio_align); requests that are not are carried through an aligned
 * bounce buffer (read-modify-write at the edges) rather than failed, in
 * both the synchronous helpers below and the asynchronous path.
 *
 * Errors: open and create fill a struct error.  I/O calls return 0 or
 * -errno; when the failure has a story (corrupt metadata, out of space) the
 * story is in bd->err.  A corrupt qcow2 image stays open: reads of intact
 * data go on, writes return -EIO with bd->err saying why.
 *
 * Locking: each file of an open chain is locked in QEMU's byte-range scheme
 * (block/lock.c) from before its header is read until after its last flush,
 * so Shoal and QEMU refuse an image the other is writing.
 */
#ifndef SHOAL_BLOCK_BLOCKDEV_H
#define SHOAL_BLOCK_BLOCKDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/lock.h"
#include "base/error.h"

struct blockdev;
struct aio_engine;

enum blockdev_format { BD_FMT_AUTO = 0, BD_FMT_RAW, BD_FMT_QCOW2 };

/* What a range of the guest disk is, for `map` and for convert/commit. */
enum bd_status {
	BD_UNALLOC = 0,		/* not in this image: read from the backing file */
	BD_ZERO,		/* reads as zeros, stored as a flag */
	BD_DATA,		/* allocated data at host_off */
	BD_COMPRESSED,		/* compressed data */
};

struct bd_extent {
	enum bd_status status;
	uint64_t len;		/* bytes from the queried offset with this status */
	uint64_t host_off;	/* BD_DATA: offset in the image file */
	int depth;		/* chain depth where the data lives (map only) */
};

/* Async request kinds and the request itself. */
enum bd_op { BD_OP_READ, BD_OP_WRITE, BD_OP_FLUSH, BD_OP_DISCARD, BD_OP_ZEROES };

struct bd_req;
typedef void (*bd_done_fn)(struct bd_req *req, int ret);

struct bd_req {
	enum bd_op op;
	uint64_t off;
	uint64_t len;		/* bytes; for READ/WRITE the sum of iov lengths */
	struct iovec *iov;
	int iovcnt;
	bd_done_fn done;	/* called once, on the submitting thread */
	void *opaque;		/* caller's */
	/* private to the block layer */
	int pending;		/* host I/Os still in flight */
	int result;
	struct bd_req *next;
};

struct blockdev_ops {
	const char *name;
	int (*read)(struct blockdev *bd, void *buf, uint64_t off, uint64_t len);
	int (*write)(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct blockdev *bd, uint64_t off, uint64_t len);
	int (*discard)(struct blockdev *bd, uint64_t off, uint64_t len);
	int (*flush)(struct blockdev *bd);
	int (*block_status)(struct blockdev *bd, uint64_t off, uint64_t len,
			    struct bd_extent *ext);
	/* Translate [off, off+len) to one host range if it needs no metadata
	 * change (fast path for the async engine).  Returns bytes mapped (>0),
	 * 0 if the caller must take the slow synchronous path. */
	uint64_t (*map_fast)(struct blockdev *bd, bool write, uint64_t off,
			     uint64_t len, uint64_t *host_off);
	void (*close)(struct blockdev *bd);
};

/* Open-time options. */
struct blockdev_opts {
	enum blockdev_format format;	/* BD_FMT_AUTO probes */
	bool readonly;
	bool force;			/* open despite a chain-identity mismatch */
	bool no_backing;		/* do not open the backing file */
	bool no_aio;			/* never use io_uring */
	bool direct;			/* open the top image O_DIRECT */
	bool caller_reports;		/* the caller prints bd->err: the block layer
					 * does not log corruption as well */
	bool force_share;		/* share the image with every other user,
					 * writers included (-U); read-only opens only */
	bool share_writes;		/* a read-only open of a raw image lets others
					 * write it (qemu-img's readers do, a VM's do
					 * not); never for qcow2, whose metadata must
					 * not change under us.  See block/lock.c */
	uint64_t cache_bytes;		/* L2 + refcount cache; 0 = default */
	enum blockdev_format backing_format; /* overrides the header's, or AUTO */
	const char *pristine_dir;	/* the first read-only image of the chain
					 * reads through a shared cache of its
					 * blocks there (block/pristine.c) */
	uint64_t pristine_bytes;	/* its bound; 0 = default */
};

struct blockdev {
	const struct blockdev_ops *ops;
	char *path;
	int fd;
	enum blockdev_format format;
	uint64_t size;			/* virtual disk size in bytes */
	bool readonly;
	bool caller_reports;		/* from blockdev_opts: no log of bd->err */
	bool direct;			/* fd is O_DIRECT */
	uint32_t dio_align;		/* direct: alignment of buffers, offsets
					 * and lengths; 0 when buffered */
	int depth;			/* 0 for the top image */
	struct blockdev *backing;	/* NULL if none */
	void *priv;			/* format state */
	struct aio_engine *aio;		/* shared by the whole chain */
	struct lock_state lock;		/* QEMU-style lock bytes fd holds (lock.h) */
	bool inactive;			/* blockdev_inactivate: locks given up */
	struct lock_state active_lock;	/* inactive: what blockdev_activate retakes */
	struct error err;		/* last I/O error story */
	uint64_t st_reads, st_writes, st_flushes; /* request counters */
	uint64_t st_backing_bytes;	/* top: bytes read from the backing
					 * chain's files (pristine hits not) */
	struct pristine *pristine;	/* block/pristine.c, or NULL */
};

/* Open `path` and its backing chain, each file locked as QEMU would lock
 * it (block/lock.c); an image another process uses in a way this open
 * cannot share is refused, naming it and the permission.  *out is NULL on
 * failure. */
int blockdev_open(struct blockdev **out, const char *path,
		  const struct blockdev_opts *o, struct error *e);
/* A disk named SCHEME:REST that is no file (store: in store/stream.c) is
 * opened by a driver a layer above this one registers at start (the block
 * layer includes nothing above it).  blockdev_open hands such a path, and
 * its options, to `open`, which builds the struct blockdev itself (fd -1,
 * its own ops).  At most 4 schemes; 0, or -1 when full. */
typedef int (*blockdev_scheme_open_fn)(struct blockdev **out, const char *path,
				       const struct blockdev_opts *o, struct error *e);
int blockdev_register_scheme(const char *scheme, blockdev_scheme_open_fn open);
/* Whether `path` is SCHEME:... of a registered scheme (a backing file so
 * named is opened by its driver, never as a path relative to its overlay). */
bool blockdev_is_scheme(const char *path);
/* Flush, then release the locks and close, the whole chain. */
void blockdev_close(struct blockdev *bd);
/* Put the qcow2 image `path`, made with *top's file as its backing file
 * and of its size, on top of the chain *top, which stays open underneath
 * as its backing file (a live checkpoint's disk switch, state/
 * snapshot_disk.c).  *top is flushed first, and from then on is read-only
 * and locked as a backing file (consistent read held, write and resize
 * refused to others), so nothing writes it while the overlay lives.  The
 * overlay is opened with `o` (direct, cache size).  No request may be in
 * flight: the caller owns the chain and has drained it.  0, or -1 with `e`
 * and *top as it was (flushed). */
int blockdev_push_overlay(struct blockdev **top, const char *path,
			  const struct blockdev_opts *o, struct error *e);
/* The same with the overlay in the open file `fd` (not taken: the chain
 * keeps a duplicate), which `path` names: for a process that cannot open
 * names (a jailed VMM, given the file by shoald).  The overlay must name
 * *top's path as its backing file. */
int blockdev_push_overlay_fd(struct blockdev **top, int fd, const char *path,
			     const struct blockdev_opts *o, struct error *e);
/* blockdev_open of the image in the open file `fd` (not taken: the chain
 * keeps a duplicate, locked as blockdev_open locks), which `path` names:
 * for a process that cannot open names (a jailed VMM given a hot-added
 * disk by shoald).  A backing file is still opened by its name.  A writable
 * open of a file opened read-only is refused. */
int blockdev_open_fd(struct blockdev **out, int fd, const char *path,
		     const struct blockdev_opts *o, struct error *e);
/* bd's own chain identity (docs/block.md): its id as text, its
 * generation, and whether the generation can be trusted (no other program
 * opened it for writing since).  0, or -1 when bd has none (raw, or a
 * qcow2 image made elsewhere). */
int blockdev_chain_id(const struct blockdev *bd, char id[37], uint64_t *generation,
		      bool *current);
/* From now on share bd's file (not the rest of its chain) with every other
 * user, writers included, as force_share would have at open: for a caller
 * about to open that file for writing itself (commit opens its base). */
void blockdev_share_all(struct blockdev *bd);

/* Live migration over shared storage (state/migrate.c, docs/migration.md):
 * flush the image, then give up its lock bytes (the top file's, as QEMU's
 * "inactivate" gives up its permissions), so that the destination can
 * take the write lock; bd must not be written until blockdev_activate.
 * The backing files, readers, keep theirs.  0, or -1 with `e` (the flush
 * failed: the locks are kept). */
int blockdev_inactivate(struct blockdev *bd, struct error *e);
/* Take back what blockdev_inactivate gave up; 0 when bd is active.  -1
 * with `e` when another process took the image meanwhile (lock_set's
 * refusal, naming it): bd stays inactive. */
int blockdev_activate(struct blockdev *bd, struct error *e);

int blockdev_read(struct blockdev *bd, void *buf, uint64_t off, uint64_t len);
int blockdev_write(struct blockdev *bd, const void *buf, uint64_t off, uint64_t len);
int blockdev_write_zeroes(struct blockdev *bd, uint64_t off, uint64_t len);
int blockdev_discard(struct blockdev *bd, uint64_t off, uint64_t len);
int blockdev_flush(struct blockdev *bd);
int blockdev_block_status(struct blockdev *bd, uint64_t off, uint64_t len,
			  struct bd_extent *ext);

/* Async: queue `req`; its done() runs from a later blockdev_poll().
 * Returns 0, or -errno if the request was refused before queueing.
 * Submissions are batched: the next blockdev_poll() (with min 0 for "don't
 * wait") hands everything queued so far to the kernel in one call. */
int blockdev_submit(struct blockdev *bd, struct bd_req *req);
/* Reap completions; wait for at least `min` if that many are in flight.
 * Returns the number completed, or -errno. */
int blockdev_poll(struct blockdev *bd, int min);
/* Requests in flight. */
int blockdev_inflight(struct blockdev *bd);
/* An eventfd that is readable when blockdev_poll(bd, 0) has completions to
 * deliver, for an epoll loop; -1 if none can be had. */
int blockdev_event_fd(struct blockdev *bd);
/* "io_uring" or "sync (reason)" - which engine this device uses. */
const char *blockdev_engine_name(struct blockdev *bd);

/* Probe the format of an open file (magic only). */
enum blockdev_format blockdev_probe(int fd);
const char *blockdev_format_name(enum blockdev_format f);
int blockdev_parse_format(const char *s, enum blockdev_format *f);

/* Read through the backing file at `off`, zero-filling beyond its end.
 * For format code: the "unallocated" case. */
int blockdev_read_backing(struct blockdev *bd, void *buf, uint64_t off, uint64_t len);

/* Helpers: full pread/pwrite loops returning 0 or -errno (-EIO on EOF for
 * reads, unless zero_eof, which zero-fills past the end of the file).  On
 * an O_DIRECT fd a transfer the kernel refuses as misaligned is redone
 * through an aligned bounce buffer, so callers need not care. */
int bd_pread(int fd, void *buf, size_t len, uint64_t off, bool zero_eof);
int bd_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* len bytes aligned for O_DIRECT-friendly I/O (4 KiB); free() it. */
void *bd_memalign(size_t len);
/* The alignment O_DIRECT I/O on fd needs for buffers, offsets and lengths:
 * the logical block size of a block device, the file system's answer
 * (statx STATX_DIOALIGN) for a file, else a safe 4096.  At least 512. */
uint32_t bd_dio_align(int fd);

/* raw.c */
extern const struct blockdev_ops raw_ops;
int raw_open(struct blockdev *bd, const struct blockdev_opts *o, struct error *e);
int raw_create(const char *path, uint64_t size, bool prealloc, struct error *e);

#endif
