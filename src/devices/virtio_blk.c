/*
 * virtio_blk.c - virtio block device (virtio 1.2 section 5.2), one per
 * `--disk`, on the block layer (raw or qcow2, io_uring with a synchronous
 * fallback).
 *
 * A request is a descriptor chain: a 16-byte header {type, ioprio, sector}
 * the device reads, then data (read by the device for OUT, DISCARD and
 * WRITE_ZEROES, written by it for IN and GET_ID), then one status byte the
 * device writes: the last device-writable byte of the chain.  The layout
 * of the buffers does not matter (ANY_LAYOUT); only their lengths do.
 *
 *   vCPU / event loop            I/O thread (one per disk)          block layer
 *   -----------------            -------------------------          -----------
 *   kick -> queue_notify ──────> wakes on kick_fd
 *     (device lock; only           lock: pop up to VBLK_MAX_INFLIGHT
 *      writes an eventfd)          unlock: parse, blockdev_submit ───> io_uring / sync
 *                                  blockdev_poll (sleeps on disk) <─── completions
 *                                  lock: status bytes, used ring,
 *                                        one flush (irq) per queue
 *
 * Threads and locks: every call into the virtio device (the core's rings,
 * status, our ops) is made under the device lock `b->lock`; the I/O thread
 * takes it only to pop and to complete, never across disk I/O, so a vCPU
 * or the event loop never waits on the disk.  The block device itself is
 * owned by the I/O thread (blockdev.h: one owner at a time).  The request
 * pool and the done list are the I/O thread's own.  `busy`, `epoch`,
 * `quiesce`, `stopping` and the stats are under the lock.
 *
 * Invariants:
 *   - busy == requests popped and not yet returned to the driver (or
 *     dropped); vblk_drain waits (lock released) for it to reach zero.
 *   - A request is answered only if the device's epoch is still the one it
 *     was popped in; a driver reset bumps the epoch and drains, so nothing
 *     lands in a ring (or guest memory) after reset returns.  The vCPU that
 *     wrote status 0 waits for that drain (as QEMU's does), with the device
 *     lock released: the one place a vCPU may wait on the disk.
 *   - While requests are in flight the thread sleeps in blockdev_poll, not
 *     on the kick eventfd (the block layer has no pollable completion fd
 *     yet), so a kick arriving then is served at the next completion.
 *   - FLUSH goes to the block layer after every write completed before it
 *     was popped, and blockdev_flush makes those durable; that is the
 *     spec's promise (writes still in flight are not covered).
 *
 * Hostile guest: every length is checked (a 16-byte readable header, and
 * nothing more readable for IN; a status byte; data a multiple of 512 and at most VBLK_MAX_DATA, the
 * sector range inside the disk, at most VBLK_MAX_RANGE_SEGS discard
 * segments each bounded); a bad request gets IOERR or UNSUPP and the device
 * goes on.  Ring violations are the core's: it marks the device broken.
 * Host memory per disk is capped at VBLK_MAX_INFLIGHT request slots.
 *
 * Live migration's mirror (state/migrate_disk.c): while `tracking` is on,
 * every write, write-zeroes and discard marks the blocks it touched in
 * `track` (block/dirty_bitmap.h) when it completes, success or not, so a
 * copier that reads a block after taking its mark sends what the write
 * left.  The copier never touches the block device itself: vblk_call
 * queues a function under the lock and the I/O thread, the device's one
 * owner, runs it between batches (while held for a snapshot too) and
 * wakes the caller.
 *
 * Shared storage (the same image at both ends of a live migration): a
 * VMM started with --incoming (vblk_set_incoming) opens a writable disk
 * whose write lock another process holds "inactive" - read-only, sharing
 * everything, holding only byte 100 - when that holder is a writer (the
 * source, presumably; a process that only refuses writes is not, and is
 * refused as before).  vblk_activate opens it again for writing with the
 * locks of a writer once the source has given up its own
 * (vblk_inactivate), fresh: a qcow2 image's metadata read while the
 * source still wrote is dropped with the old open.  Nothing is written
 * to the image while it is inactive; the guest does not run then.
 *
 u64 capacity, u8 readonly,
 * u16 num_queues, then the ten u64 counters of struct vblk_stats.  Saving
 * drains in-flight requests first (the caller holds the device lock once;
 * it is released while waiting), so nothing in flight is saved; restore
 * refuses a disk of another size, read-only flag or queue count.
 */
#include "devices/virtio_blk.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <jansson.h>

#include "block/blockdev.h"
#include "block/dirty_bitmap.h"
#include "block/pristine.h"
#include "devices/device.h"
#include "devices/virtio_pci.h"
#include "base/assert.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "devices/devconfig.h"

#define VBLK_STATE_VERSION 1
#define VBLK_PENDING       0xff          /* status: still needs I/O */

/* One request taken from a ring. */
struct vblk_req {
	struct vblk *blk;
	uint16_t qidx;                   /* queue it came from */
	uint32_t epoch;                  /* device epoch when popped */
	uint32_t type;                   /* VIRTIO_BLK_T_*, for the stats */
	uint8_t status;                  /* VIRTIO_BLK_S_* or VBLK_PENDING */
	int pending;                     /* block requests not yet done */
	int nbd;                         /* block requests used */
	uint64_t bytes;                  /* data bytes moved, for the stats */
	struct bd_req bd[VBLK_MAX_RANGE_SEGS];
	struct vblk_req *next;           /* free list or done list */
	struct iovec data[VIRTQ_ELEM_MAX_IOV]; /* the data part of elem */
	struct virtq_elem elem;
};

struct vblk {
	char name[32];
	struct blockdev *bd;             /* owned by the I/O thread once started */
	struct virtio_device *vdev;      /* bound when the core sets us up */
	pthread_mutex_t *lock;           /* the device lock */
	uint64_t capacity;               /* 512-byte sectors */
	bool readonly;
	uint16_t num_queues;
	char serial[VIRTIO_BLK_ID_BYTES];/* NUL-padded, not terminated */

	int kick_fd;                     /* eventfd: kicks and stop */
	pthread_t thread;
	bool running;                    /* thread started */
	pthread_cond_t idle;             /* broadcast when busy drops to 0 */

	/* under the lock */
	unsigned busy;
	uint32_t epoch;
	bool quiesce;                    /* save in progress: pop nothing */
	bool held;                       /* quiesced for a snapshot: pop nothing */
	bool stopping;
	struct vblk_stats stats;
	struct vblk_call *calls;         /* to run on the I/O thread */
	pthread_cond_t call_done;        /* broadcast when calls ran */

	/* live migration over shared storage: opened inactive (its writer,
	 * the source, holds the lock) with these options, to open again */
	bool opened_inactive;
	struct blockdev_opts opts;

	/* live migration: marks while tracking (read atomically) */
	struct bd_dirty track;
	bool tracking;

	/* I/O thread only */
	struct vblk_req *free_reqs;
	struct vblk_req *done_head, *done_tail;
	unsigned nreqs;                  /* allocated request slots */
	bool poll_err_logged;
};

/* A function to run on the I/O thread (vblk_call). */
struct vblk_call {
	int (*fn)(struct blockdev *bd, void *arg);
	void *arg;
	int rc;
	bool done;
	struct vblk_call *next;
};

/* ---- request slots ---- */

static struct vblk_req *vblk_req_get(struct vblk *b)
{
	struct vblk_req *r = b->free_reqs;

	if (r) {
		b->free_reqs = r->next;
		return r;
	}
	if (b->nreqs >= VBLK_MAX_INFLIGHT)
		return NULL;
	r = malloc(sizeof(*r));
	if (r)
		b->nreqs++;
	return r;
}

static void vblk_req_put(struct vblk *b, struct vblk_req *r)
{
	r->next = b->free_reqs;
	b->free_reqs = r;
}

/* Queue `r` for completion under the lock. */
static void vblk_req_done(struct vblk_req *r)
{
	struct vblk *b = r->blk;

	r->next = NULL;
	if (b->done_tail)
		b->done_tail->next = r;
	else
		b->done_head = r;
	b->done_tail = r;
}

/* ---- parsing: every length checked, no I/O ---- */

/* Point `dst` at bytes [off, off + len) of `src`; returns the iovec count,
 * or -1 if `src` is too short or the slice needs more than `max`. */
static int vblk_iov_slice(struct iovec *dst, int max, const struct iovec *src, unsigned n,
			  uint64_t off, uint64_t len)
{
	int k = 0;

	for (unsigned i = 0; i < n && len; i++) {
		uint64_t l = src[i].iov_len, take;

		if (off >= l) {
			off -= l;
			continue;
		}
		take = l - off < len ? l - off : len;
		if (k == max)
			return -1;
		dst[k].iov_base = (uint8_t *)src[i].iov_base + off;
		dst[k].iov_len = take;
		k++;
		len -= take;
		off = 0;
	}
	return len ? -1 : k;
}

/* Is [sector, sector + count) inside the disk? */
static bool vblk_range_ok(const struct vblk *b, uint64_t sector, uint64_t count)
{
	return sector <= b->capacity && count <= b->capacity - sector;
}

/* IN / OUT: the data is everything between header and status byte. */
static uint8_t vblk_prepare_rw(struct vblk *b, struct vblk_req *r, bool write, uint64_t sector)
{
	struct virtq_elem *el = &r->elem;
	uint64_t len = write ? el->out_len - sizeof(struct virtio_blk_outhdr) : el->in_len - 1;
	int n;

	if (!write && el->out_len != sizeof(struct virtio_blk_outhdr))
		return VIRTIO_BLK_S_IOERR;
	if (len % 512 || len > VBLK_MAX_DATA || !vblk_range_ok(b, sector, len / 512))
		return VIRTIO_BLK_S_IOERR;
	if (write && b->readonly)
		return VIRTIO_BLK_S_IOERR;
	if (!len)
		return VIRTIO_BLK_S_OK;
	n = write ? vblk_iov_slice(r->data, VIRTQ_ELEM_MAX_IOV, virtq_elem_out(el), el->out_num,
				   sizeof(struct virtio_blk_outhdr), len)
		  : vblk_iov_slice(r->data, VIRTQ_ELEM_MAX_IOV, virtq_elem_in(el), el->in_num, 0, len);
	if (n < 1)
		return VIRTIO_BLK_S_IOERR;
	r->bd[0] = (struct bd_req){ .op = write ? BD_OP_WRITE : BD_OP_READ, .off = sector * 512,
				    .len = len, .iov = r->data, .iovcnt = n };
	r->nbd = 1;
	r->bytes = len;
	return VBLK_PENDING;
}

/* One discard / write-zeroes segment: checked and turned into a bd_req. */
static uint8_t vblk_prepare_seg(struct vblk *b, struct vblk_req *r,
				const struct virtio_blk_dwz_seg *s)
{
	uint64_t sector = le64toh(s->sector);
	uint32_t num = le32toh(s->num_sectors), flags = le32toh(s->flags);
	bool discard = r->type == VIRTIO_BLK_T_DISCARD;

	if ((flags & ~VIRTIO_BLK_DWZ_F_UNMAP) || (discard && (flags & VIRTIO_BLK_DWZ_F_UNMAP)))
		return VIRTIO_BLK_S_UNSUPP;
	if (num > VBLK_MAX_RANGE_SECTORS || !vblk_range_ok(b, sector, num))
		return VIRTIO_BLK_S_IOERR;
	if (!num)
		return VIRTIO_BLK_S_OK;
	r->bd[r->nbd++] = (struct bd_req){ .op = discard ? BD_OP_DISCARD : BD_OP_ZEROES,
					   .off = sector * 512, .len = (uint64_t)num * 512 };
	r->bytes += (uint64_t)num * 512;
	return VBLK_PENDING;
}

/* DISCARD / WRITE_ZEROES: 1..VBLK_MAX_RANGE_SEGS segments after the header. */
static uint8_t vblk_prepare_ranges(struct vblk *b, struct vblk_req *r)
{
	struct virtio_blk_dwz_seg segs[VBLK_MAX_RANGE_SEGS];
	uint64_t len = r->elem.out_len - sizeof(struct virtio_blk_outhdr);
	size_t nseg = (size_t)(len / sizeof(segs[0]));

	if (b->readonly)
		return VIRTIO_BLK_S_IOERR;
	if (!len || len % sizeof(segs[0]))
		return VIRTIO_BLK_S_IOERR;
	if (nseg > VBLK_MAX_RANGE_SEGS)
		return VIRTIO_BLK_S_UNSUPP;
	/* one copy out of guest memory: no double fetch */
	if (virtq_elem_read(&r->elem, sizeof(struct virtio_blk_outhdr), segs,
			    nseg * sizeof(segs[0])) != nseg * sizeof(segs[0]))
		return VIRTIO_BLK_S_IOERR;
	for (size_t i = 0; i < nseg; i++) {
		uint8_t st = vblk_prepare_seg(b, r, &segs[i]);

		if (st != VBLK_PENDING && st != VIRTIO_BLK_S_OK)
			return st;
	}
	return r->nbd ? VBLK_PENDING : VIRTIO_BLK_S_OK;
}

/* GET_ID: the serial, NUL-padded, into the data part (up to 20 bytes). */
static uint8_t vblk_get_id(struct vblk *b, struct vblk_req *r)
{
	uint64_t room = r->elem.in_len - 1;

	virtq_elem_write(&r->elem, 0, b->serial,
			 room < VIRTIO_BLK_ID_BYTES ? (size_t)room : VIRTIO_BLK_ID_BYTES);
	return VIRTIO_BLK_S_OK;
}

/* Decide what `r` asks for: a final status now, or VBLK_PENDING with
 * r->bd[0 .. nbd) set up.  The element has at least one writable byte. */
static uint8_t vblk_prepare(struct vblk *b, struct vblk_req *r)
{
	struct virtio_blk_outhdr h;

	r->nbd = 0;
	r->bytes = 0;
	r->type = UINT32_MAX;
	if (r->elem.out_len < sizeof(h) || virtq_elem_read(&r->elem, 0, &h, sizeof(h)) != sizeof(h))
		return VIRTIO_BLK_S_IOERR;
	r->type = le32toh(h.type);
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		return vblk_prepare_rw(b, r, false, le64toh(h.sector));
	case VIRTIO_BLK_T_OUT:
		return vblk_prepare_rw(b, r, true, le64toh(h.sector));
	case VIRTIO_BLK_T_FLUSH:
		if (b->readonly)
			return VIRTIO_BLK_S_OK;
		r->bd[r->nbd++] = (struct bd_req){ .op = BD_OP_FLUSH };
		return VBLK_PENDING;
	case VIRTIO_BLK_T_GET_ID:
		return vblk_get_id(b, r);
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return vblk_prepare_ranges(b, r);
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
}

/* ---- I/O: I/O thread, no lock held ---- */

/* A block request of `r` finished (from blockdev_poll). */
static void vblk_bd_done(struct bd_req *bd, int ret)
{
	struct vblk_req *r = bd->opaque;

	if (bd->op != BD_OP_READ && bd->op != BD_OP_FLUSH &&
	    __atomic_load_n(&r->blk->tracking, __ATOMIC_ACQUIRE))
		bd_dirty_mark(&r->blk->track, bd->off, bd->len);
	if (ret < 0) {
		r->status = VIRTIO_BLK_S_IOERR;
		log_debug("%s: I/O error at %llu: %s", r->blk->name, (unsigned long long)bd->off,
			  strerror(-ret));
	}
	if (--r->pending == 0)
		vblk_req_done(r);
}

/* Parse `r` and hand its I/O to the block layer; a request that needs no
 * I/O (or is refused) goes straight to the done list. */
static void vblk_req_start(struct vblk *b, struct vblk_req *r)
{
	r->blk = b;
	r->pending = 0;
	if (r->elem.in_len < 1) {
		r->status = VBLK_PENDING;   /* nowhere to put a status: returned as is */
		vblk_req_done(r);
		return;
	}
	r->status = vblk_prepare(b, r);
	if (r->status != VBLK_PENDING ||
	    r->epoch != __atomic_load_n(&b->epoch, __ATOMIC_ACQUIRE)) {
		vblk_req_done(r);
		return;
	}
	r->status = VIRTIO_BLK_S_OK;
	r->pending = r->nbd + 1;        /* +1 until every submit is made */
	for (int i = 0; i < r->nbd; i++) {
		r->bd[i].done = vblk_bd_done;
		r->bd[i].opaque = r;
		if (blockdev_submit(b->bd, &r->bd[i]) < 0) {
			r->status = VIRTIO_BLK_S_IOERR;
			r->pending--;
		}
	}
	if (--r->pending == 0)
		vblk_req_done(r);
}

/* Sleep until there is something to do: completions to reap, or a kick. */
static void vblk_wait(struct vblk *b)
{
	struct pollfd p = { .fd = b->kick_fd, .events = POLLIN };
	uint64_t n;
	int rc;

	if (!b->done_head && blockdev_inflight(b->bd) > 0) {
		rc = blockdev_poll(b->bd, 1);
		if (rc < 0 && !b->poll_err_logged) {
			b->poll_err_logged = true;
			log_error("%s: waiting for disk I/O: %s", b->name, strerror(-rc));
		}
		if (rc < 0)
			usleep(1000);
	} else if (!b->done_head) {
		while (poll(&p, 1, -1) < 0 && errno == EINTR)
			;
	}
	if (read(b->kick_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_debug("%s: kick eventfd: %s", b->name, strerror(errno));
	blockdev_poll(b->bd, 0);        /* reap what is ready, submit what is queued */
}

/* ---- completion and popping: I/O thread, lock held ---- */

static void vblk_count(struct vblk *b, const struct vblk_req *r)
{
	struct vblk_stats *s = &b->stats;

	if (r->status == VIRTIO_BLK_S_IOERR)
		s->ioerr++;
	else if (r->status == VIRTIO_BLK_S_UNSUPP)
		s->unsupp++;
	if (r->status != VIRTIO_BLK_S_OK)
		return;
	switch (r->type) {
	case VIRTIO_BLK_T_IN: s->reads++; s->bytes_read += r->bytes; break;
	case VIRTIO_BLK_T_OUT: s->writes++; s->bytes_written += r->bytes; break;
	case VIRTIO_BLK_T_FLUSH: s->flushes++; break;
	case VIRTIO_BLK_T_GET_ID: s->get_ids++; break;
	case VIRTIO_BLK_T_DISCARD: s->discards++; break;
	case VIRTIO_BLK_T_WRITE_ZEROES: s->write_zeroes++; break;
	default: break;
	}
}

/* Write the status byte and return the element to its used ring (not yet
 * published).  Returns false when the request is dropped instead. */
static bool vblk_answer(struct vblk *b, struct vblk_req *r)
{
	struct virtio_device *vdev = b->vdev;
	uint32_t used = r->elem.in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)r->elem.in_len;

	if (!vdev || b->stopping || r->epoch != b->epoch || r->qidx >= vdev->num_queues)
		return false;
	if (r->status != VBLK_PENDING) {
		virtq_elem_write(&r->elem, r->elem.in_len - 1, &r->status, 1);
		vblk_count(b, r);
	}
	virtio_queue_fill(vdev, &vdev->queues[r->qidx], &r->elem, used);
	return true;
}

/* Answer everything on the done list, one flush (and interrupt) per queue. */
static void vblk_finish_done(struct vblk *b)
{
	uint8_t touched[VBLK_MAX_QUEUES] = { 0 };
	struct vblk_req *r;

	while ((r = b->done_head)) {
		b->done_head = r->next;
		if (vblk_answer(b, r))
			touched[r->qidx] = 1;
		SHOAL_ASSERT(b->busy > 0, "%s: a request came back with none in flight", b->name);
		b->busy--;
		vblk_req_put(b, r);
	}
	b->done_tail = NULL;
	for (uint16_t q = 0; b->vdev && q < b->num_queues; q++)
		if (touched[q])
			virtio_queue_flush(b->vdev, &b->vdev->queues[q]);
}

/* Pop one element from queue `q` into a fresh slot; NULL if none. */
static struct vblk_req *vblk_pop_one(struct vblk *b, uint16_t q, bool *stop)
{
	struct vblk_req *r = vblk_req_get(b);
	int rc;

	if (!r) {
		*stop = true;
		return NULL;
	}
	rc = virtio_queue_pop(b->vdev, &b->vdev->queues[q], &r->elem);
	if (rc != 1) {
		vblk_req_put(b, r);
		*stop = rc < 0;
		return NULL;
	}
	r->qidx = q;
	r->epoch = b->epoch;
	r->next = NULL;
	b->busy++;
	SHOAL_ASSERT(b->busy <= VBLK_MAX_INFLIGHT, "%s: %u requests in flight, cap %d", b->name,
		     b->busy, VBLK_MAX_INFLIGHT);
	return r;
}

/* Take what the driver made available, round-robin over the queues, up to
 * the in-flight cap.  Returns a list to start once the lock is dropped. */
static struct vblk_req *vblk_pop_batch(struct vblk *b)
{
	struct virtio_device *vdev = b->vdev;
	struct vblk_req *head = NULL, **tail = &head, *r;
	bool progress = true, stop = false;

	if (!vdev || vdev->broken || !(vdev->status & VIRTIO_STATUS_DRIVER_OK))
		return NULL;
	while (progress && !stop) {
		progress = false;
		for (uint16_t q = 0; q < vdev->num_queues && !stop; q++) {
			if (!vdev->queues[q].started || b->busy >= VBLK_MAX_INFLIGHT)
				continue;
			r = vblk_pop_one(b, q, &stop);
			if (r) {
				*tail = r;
				tail = &r->next;
				progress = true;
			}
		}
	}
	return head;
}

/* Run the calls taken from b->calls (no lock held), then mark them done. */
static void vblk_run_calls(struct vblk *b, struct vblk_call *calls)
{
	for (struct vblk_call *c = calls; c; c = c->next)
		c->rc = c->fn(b->bd, c->arg);
	pthread_mutex_lock(b->lock);
	for (struct vblk_call *c = calls, *next; c; c = next) {
		next = c->next;
		c->done = true;          /* c is the caller's: gone once it sees this */
	}
	pthread_cond_broadcast(&b->call_done);
	pthread_mutex_unlock(b->lock);
}

/* The I/O thread: wait, complete, pop, start; until told to stop and
 * nothing is in flight. */
static void *vblk_thread(void *arg)
{
	struct vblk *b = arg;

	seccomp_thread_enter(SECCOMP_BLK_IO);
	for (;;) {
		struct vblk_req *batch, *next;
		struct vblk_call *calls;
		bool stop;

		vblk_wait(b);
		pthread_mutex_lock(b->lock);
		vblk_finish_done(b);
		calls = b->calls;
		b->calls = NULL;
		batch = b->stopping || b->quiesce || b->held ? NULL : vblk_pop_batch(b);
		if (!b->busy)
			pthread_cond_broadcast(&b->idle);
		stop = b->stopping && !b->busy;
		pthread_mutex_unlock(b->lock);
		if (calls)
			vblk_run_calls(b, calls);
		if (stop)
			return NULL;
		for (; batch; batch = next) {
			next = batch->next;
			vblk_req_start(b, batch);
		}
	}
}

static void vblk_kick(struct vblk *b)
{
	uint64_t one = 1;

	if (b->kick_fd >= 0 && write(b->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("%s: kick: %s", b->name, strerror(errno));
}

void vblk_drain(struct vblk *b)
{
	if (!b->running)
		return;
	SHOAL_ASSERT(shoal_mutex_held(b->lock), "%s: drained without the device lock", b->name);
	while (b->busy)
		pthread_cond_wait(&b->idle, b->lock);
}

/* ---- the virtio device ops ---- */

static uint64_t vblk_features(struct virtio_device *vdev)
{
	struct vblk *b = vdev->priv;
	uint64_t f = VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
		     VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
		     VIRTIO_BIT(VIRTIO_BLK_F_MQ) | VIRTIO_BIT(VIRTIO_F_ANY_LAYOUT);

	b->vdev = vdev;                 /* the core calls this once, from init */
	if (b->readonly)
		return f | VIRTIO_BIT(VIRTIO_BLK_F_RO);
	return f | VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES);
}

/* The config space (5.2.4), little-endian, VBLK_CONFIG_SIZE bytes. */
struct vblk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
} __attribute__((packed));
_Static_assert(sizeof(struct vblk_config) == VBLK_CONFIG_SIZE, "virtio-blk config layout");
_Static_assert(offsetof(struct vblk_config, num_queues) == 34, "num_queues at 34");
_Static_assert(offsetof(struct vblk_config, max_discard_sectors) == 36, "discard at 36");

static void vblk_config_read(struct virtio_device *vdev, uint32_t off, void *data, uint32_t len)
{
	struct vblk *b = vdev->priv;
	struct vblk_config c = {
		.capacity = htole64(b->capacity),
		.size_max = htole32(VBLK_SIZE_MAX),
		.seg_max = htole32(VBLK_SEG_MAX),
		.blk_size = htole32(512),
		.writeback = 1,
		.num_queues = htole16(b->num_queues),
	};

	if (!b->readonly) {
		c.max_discard_sectors = htole32(VBLK_MAX_RANGE_SECTORS);
		c.max_discard_seg = htole32(VBLK_MAX_RANGE_SEGS);
		c.discard_sector_alignment = htole32(1);
		c.max_write_zeroes_sectors = htole32(VBLK_MAX_RANGE_SECTORS);
		c.max_write_zeroes_seg = htole32(VBLK_MAX_RANGE_SEGS);
	}
	memcpy(data, (const uint8_t *)&c + off, len);   /* the core checked off + len */
}

static void vblk_queue_notify(struct virtio_device *vdev, uint16_t qidx)
{
	vblk_kick(vdev->priv);
}

/* The driver reset the device: forget in-flight requests (they complete
 * into nothing) and wait for them, so none touches memory after this. */
static void vblk_reset(struct virtio_device *vdev)
{
	struct vblk *b = vdev->priv;

	__atomic_store_n(&b->epoch, b->epoch + 1, __ATOMIC_RELEASE);
	vblk_drain(b);
	/* the epoch invariant: nothing popped before the reset is left to land */
	SHOAL_ASSERT(!b->running || b->busy == 0, "%s: %u requests in flight after reset",
		     b->name, b->busy);
}

static void vblk_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct vblk *b = vdev->priv;
	const uint64_t *s = (const uint64_t *)&b->stats;

	b->quiesce = true;
	vblk_drain(b);
	SHOAL_ASSERT(!b->running || b->busy == 0, "%s: %u requests in flight while saving",
		     b->name, b->busy);
	state_put_u64(w, b->capacity);
	state_put_u8(w, b->readonly);
	state_put_u16(w, b->num_queues);
	for (size_t i = 0; i < sizeof(b->stats) / sizeof(uint64_t); i++)
		state_put_u64(w, s[i]);
	b->quiesce = false;
	if (!b->held)
		vblk_kick(b);           /* serve what arrived meanwhile */
}

int vblk_call(struct vblk *b, int (*fn)(struct blockdev *bd, void *arg), void *arg)
{
	struct vblk_call c = { .fn = fn, .arg = arg };

	if (!b->running)
		return fn(b->bd, arg);
	pthread_mutex_lock(b->lock);
	c.next = b->calls;
	b->calls = &c;
	pthread_mutex_unlock(b->lock);
	vblk_kick(b);
	pthread_mutex_lock(b->lock);
	while (!c.done)
		pthread_cond_wait(&b->call_done, b->lock);
	pthread_mutex_unlock(b->lock);
	return c.rc;
}

int vblk_dirty_start(struct vblk *b, uint32_t gran)
{
	int rc = 0;

	__atomic_store_n(&b->tracking, false, __ATOMIC_RELEASE);
	/* Once made, the map stays until vblk_free: a completion that read
	 * `tracking` just before it went off may still mark it. */
	if (!b->track.bits)
		rc = bd_dirty_init(&b->track, b->bd->size, gran);
	else if (b->track.gran != gran || b->track.size != b->bd->size)
		rc = -EINVAL;
	else
		bd_dirty_clear(&b->track);
	if (!rc)
		__atomic_store_n(&b->tracking, true, __ATOMIC_RELEASE);
	return rc;
}

void vblk_dirty_stop(struct vblk *b)
{
	__atomic_store_n(&b->tracking, false, __ATOMIC_RELEASE);
}

uint64_t vblk_dirty_take(struct vblk *b, uint64_t *out)
{
	return bd_dirty_take(&b->track, out);
}

uint64_t vblk_disk_size(const struct vblk *b)
{
	return b->bd->size;
}

bool vblk_is_readonly(const struct vblk *b)
{
	return b->readonly;
}

/* Held for a snapshot: start nothing new, and wait for what is in flight
 * (its completions are written before the memory is saved). */
static void vblk_quiesce(struct virtio_device *vdev, bool on)
{
	struct vblk *b = vdev->priv;

	b->held = on;
	if (on)
		vblk_drain(b);
	else
		vblk_kick(b);           /* serve what arrived meanwhile */
}

const struct blockdev *vblk_image(const struct vblk *b)
{
	return b->bd;
}

int vblk_push_overlay(struct vblk *b, const char *path, int fd, bool direct,
		      uint64_t cache_bytes, struct error *e)
{
	struct blockdev_opts o = { .direct = direct, .cache_bytes = cache_bytes };
	int rc, trc;

	SHOAL_ASSERT(!b->running || shoal_mutex_held(b->lock), "%s: overlay without the device lock",
		     b->name);
	if (!b->held || b->busy)
		return error_set(e, EXIT_HOST, "%s: the disk is not quiesced", b->name);
	/* The I/O thread owns the chain and polls it without the lock: it
	 * stops for the switch (nothing is in flight, the disk is held) and
	 * starts again on the new top. */
	if (b->running) {
		b->stopping = true;
		pthread_mutex_unlock(b->lock);
		vblk_kick(b);
		pthread_join(b->thread, NULL);
		pthread_mutex_lock(b->lock);
		b->stopping = false;
		b->running = false;
	}
	rc = fd >= 0 ? blockdev_push_overlay_fd(&b->bd, fd, path, &o, e) :
		       blockdev_push_overlay(&b->bd, path, &o, e);
	if (b->lock && (trc = vblk_start(b, b->lock)) != 0) {
		log_error("%s: cannot restart the I/O thread: %s", b->name, strerror(-trc));
		if (!rc)
			rc = error_set(e, EXIT_HOST, "%s: I/O thread: %s", b->name, strerror(-trc));
	}
	if (!rc)
		log_info("%s: now writes to %s (over %s)", b->name, b->bd->path,
			 b->bd->backing->path);
	return rc;
}

static int vblk_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *r)
{
	struct vblk *b = vdev->priv;
	uint64_t *s = (uint64_t *)&b->stats, cap;
	uint8_t ro;
	uint16_t nq;

	__atomic_store_n(&b->epoch, b->epoch + 1, __ATOMIC_RELEASE);
	vblk_drain(b);
	cap = state_get_u64(r);
	ro = state_get_u8(r);
	nq = state_get_u16(r);
	if (r->error || cap != b->capacity || ro != b->readonly || nq != b->num_queues) {
		log_error("%s: saved disk (%llu sectors, ro=%u, %u queues) differs from this one "
			  "(%llu, %u, %u)", b->name, (unsigned long long)cap, ro, nq,
			  (unsigned long long)b->capacity, b->readonly, b->num_queues);
		return -1;
	}
	for (size_t i = 0; i < sizeof(b->stats) / sizeof(uint64_t); i++)
		s[i] = state_get_u64(r);
	vblk_kick(b);                   /* the rings may hold requests nobody will kick for */
	return r->error ? -1 : 0;
}

/* One entry per disk under "disks" (shoald names its Prometheus series
 * after these keys). */
static void vblk_metrics(struct virtio_device *vdev, const char *name, json_t *root)
{
	const struct vblk *b = vdev->priv;
	const struct vblk_stats *st;
	struct pristine_stats ps;
	json_t *j;

	if (!b)
		return;
	st = vblk_get_stats(b);
	j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", name,
		      "read_bytes", (json_int_t)st->bytes_read,
		      "write_bytes", (json_int_t)st->bytes_written,
		      "read_ops", (json_int_t)st->reads, "write_ops", (json_int_t)st->writes,
		      "flush_ops", (json_int_t)st->flushes);
	if (j && b->bd && !blockdev_pristine_stats(b->bd, &ps))   /* --disk ...,pristine= */
		json_object_update_new(j, json_pack("{s:I, s:I, s:I, s:I, s:I}",
			"pristine_hits", (json_int_t)ps.hits,
			"pristine_bytes", (json_int_t)ps.hit_bytes,
			"pristine_file_bytes", (json_int_t)ps.file_bytes,
			"pristine_refused", (json_int_t)ps.refused,
			"backing_read_bytes", (json_int_t)b->bd->st_backing_bytes));
	json_array_append_new(json_object_get(root, "disks"), j);
}

static void vblk_destroy(struct virtio_device *vdev)
{
	vblk_free(vdev->priv);
	vdev->priv = NULL;
}

/* One ops table per queue count: virtio_device_init takes the count from
 * the ops, and a table that lives as long as the program outlives every
 * device that points at it. */
#define VBLK_OPS(n) {                                               \
	.device_id = VIRTIO_ID_BLOCK, .name = "virtio-blk",          \
	.num_queues = (n), .queue_max_size = VBLK_QUEUE_SIZE,        \
	.config_size = VBLK_CONFIG_SIZE,                             \
	.state_version = VBLK_STATE_VERSION,                         \
	.features = vblk_features, .config_read = vblk_config_read,  \
	.queue_notify = vblk_queue_notify, .reset = vblk_reset,      \
	.save = vblk_save, .restore = vblk_restore,                  \
	.metrics = vblk_metrics, .quiesce = vblk_quiesce,           \
	.destroy = vblk_destroy }

static const struct virtio_device_ops vblk_ops_table[VBLK_MAX_QUEUES] = {
	VBLK_OPS(1), VBLK_OPS(2), VBLK_OPS(3), VBLK_OPS(4), VBLK_OPS(5), VBLK_OPS(6),
	VBLK_OPS(7), VBLK_OPS(8), VBLK_OPS(9), VBLK_OPS(10), VBLK_OPS(11), VBLK_OPS(12),
	VBLK_OPS(13), VBLK_OPS(14), VBLK_OPS(15), VBLK_OPS(16),
};

const struct virtio_device_ops *vblk_ops(const struct vblk *b)
{
	return &vblk_ops_table[b->num_queues - 1];
}

int vblk_raw_readonly_fd(const struct vblk *b)
{
	return b->bd && b->bd->format == BD_FMT_RAW && b->bd->readonly ? b->bd->fd : -1;
}

const struct vblk_stats *vblk_get_stats(const struct vblk *b)
{
	return &b->stats;
}

/* ---- shared storage for live migration ---- */

static bool vblk_incoming;

void vblk_set_incoming(bool on)
{
	vblk_incoming = on;
}

bool vblk_is_inactive(const struct vblk *b)
{
	return b->opened_inactive || (b->bd && b->bd->inactive);
}

/* The writable open of an --incoming VMM was refused for a lock: open it
 * inactive if the holder is a writer, else 0 with b->bd NULL. */
static int open_inactive(struct vblk *b, const char *path, const struct blockdev_opts *o)
{
	struct blockdev_opts io = *o;
	struct lock_state others;
	struct error e2 = { 0 };

	io.readonly = true;
	io.force_share = true;
	if (blockdev_open(&b->bd, path, &io, &e2))
		return -1;
	if (lock_query(b->bd->fd, &others) || !(others.held & LOCK_PERM_WRITE)) {
		blockdev_close(b->bd);  /* a reader refusing writes, not a source */
		b->bd = NULL;
		return -1;
	}
	b->opened_inactive = true;
	log_info("%s: %s is opened inactive: another process (the migration's source) writes "
		 "it; the VM takes its write lock when it arrives", b->name, path);
	return 0;
}

struct vblk_swap {
	struct vblk *b;
	struct blockdev *bd;       /* in: the new one; out: the old one */
	struct error *e;
};

static int swap_fn(struct blockdev *bd, void *arg)
{
	struct vblk_swap *s = arg;

	s->b->bd = s->bd;
	s->bd = bd;
	return 0;
}

static int inactivate_fn(struct blockdev *bd, void *arg)
{
	return blockdev_inactivate(bd, arg);
}

static int activate_fn(struct blockdev *bd, void *arg)
{
	return blockdev_activate(bd, arg);
}

int vblk_inactivate(struct vblk *b, struct error *e)
{
	if (b->readonly || b->opened_inactive)
		return 0;
	return vblk_call(b, inactivate_fn, e) ? -1 : 0;
}

int vblk_activate(struct vblk *b, struct error *e)
{
	struct vblk_swap s = { .b = b, .e = e };

	if (b->readonly)
		return 0;
	if (!b->opened_inactive)
		return vblk_call(b, activate_fn, e) ? -1 : 0;
	if (blockdev_open(&s.bd, b->bd->path, &b->opts, e))
		return -1;
	if (s.bd->size != b->bd->size) {
		error_set(e, EXIT_NOINPUT, "%s: %s changed size while inactive (%" PRIu64 " -> %"
			  PRIu64 " bytes)", b->name, b->bd->path, b->bd->size, s.bd->size);
		blockdev_close(s.bd);
		return -1;
	}
	vblk_call(b, swap_fn, &s);       /* the I/O thread owns b->bd */
	blockdev_close(s.bd);            /* the inactive open */
	b->opened_inactive = false;
	log_info("%s: %s is active: the write lock is ours", b->name, b->bd->path);
	return 0;
}

/* ---- life cycle ---- */

int vblk_new(struct vblk **out, const struct vm_disk *disk, const char *name, struct error *e)
{
	struct blockdev_opts o = { .format = BD_FMT_AUTO, .readonly = disk->readonly,
				   .direct = disk->direct, .cache_bytes = disk->cache_bytes,
				   .pristine_dir = disk->pristine,
				   .pristine_bytes = disk->pristine_bytes };
	struct vblk *b = calloc(1, sizeof(*b));

	*out = NULL;
	if (!b)
		return error_set(e, EXIT_HOST, "out of memory");
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->kick_fd = -1;
	b->readonly = disk->readonly;
	b->num_queues = disk->queues < 1 ? 1 : disk->queues > VBLK_MAX_QUEUES ? VBLK_MAX_QUEUES
									: (uint16_t)disk->queues;
	if (disk->serial)   /* NUL-padded, not terminated when 20 bytes long */
		memcpy(b->serial, disk->serial, strnlen(disk->serial, sizeof(b->serial)));
	pthread_cond_init(&b->idle, NULL);
	pthread_cond_init(&b->call_done, NULL);
	b->opts = o;
	b->opts.pristine_dir = NULL;    /* a reopen (vblk_activate) goes without:
	                                 * the string is the config's */
	if (disk->given_fd) {           /* a hot-added disk shoald opened */
		if (blockdev_open_fd(&b->bd, disk->fd, disk->path, &o, e)) {
			vblk_free(b);
			return -1;
		}
	} else if (blockdev_open(&b->bd, disk->path, &o, e) &&
	    (!vblk_incoming || disk->readonly || !strstr(e->msg, "Is another process using") ||
	     open_inactive(b, disk->path, &o))) {
		vblk_free(b);
		return -1;
	}
	b->capacity = b->bd->size / 512;
	b->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->kick_fd < 0) {
		vblk_free(b);
		return error_set(e, EXIT_HOST, "%s: eventfd: %s", name, strerror(errno));
	}
	*out = b;
	return 0;
}

int vblk_start(struct vblk *b, pthread_mutex_t *lock)
{
	int rc;

	b->lock = lock;
	rc = pthread_create(&b->thread, NULL, vblk_thread, b);
	if (rc)
		return -rc;
	b->running = true;
	return 0;
}

void vblk_free(struct vblk *b)
{
	struct vblk_req *r;

	if (!b)
		return;
	if (b->running) {
		pthread_mutex_lock(b->lock);
		b->stopping = true;
		pthread_mutex_unlock(b->lock);
		vblk_kick(b);
		pthread_join(b->thread, NULL);
	}
	while ((r = b->free_reqs)) {
		b->free_reqs = r->next;
		free(r);
	}
	blockdev_close(b->bd);
	if (b->kick_fd >= 0)
		close(b->kick_fd);
	pthread_cond_destroy(&b->idle);
	pthread_cond_destroy(&b->call_done);
	bd_dirty_free(&b->track);
	free(b);
}

int vblk_execute(struct vblk *b, const struct virtq_elem *elem, uint32_t *used)
{
	struct vblk_req *r = vblk_req_get(b);
	int status;

	if (!r)
		return -1;
	memcpy(&r->elem, elem, sizeof(*elem));
	r->epoch = b->epoch;
	r->qidx = 0;
	vblk_req_start(b, r);
	while (!b->done_head)
		if (blockdev_poll(b->bd, 1) < 0)
			break;
	b->done_head = b->done_tail = NULL;
	status = r->status == VBLK_PENDING ? -1 : r->status;
	if (status >= 0) {
		virtq_elem_write(&r->elem, r->elem.in_len - 1, &r->status, 1);
		vblk_count(b, r);
	}
	*used = r->elem.in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)r->elem.in_len;
	vblk_req_put(b, r);
	return status;
}

static enum virtio_pci_mode vblk_pci_mode(enum vm_virtio_mode m)
{
	return m == VM_VIRTIO_LEGACY ? VIRTIO_PCI_LEGACY_ONLY :
	       m == VM_VIRTIO_MODERN ? VIRTIO_PCI_MODERN_ONLY : VIRTIO_PCI_TRANSITIONAL;
}

/* Create disk `i`: open the image, plug the PCI function, start the thread. */
int virtio_blk_create(const struct device_host *host, const struct vm_disk *disk, int i,
		      struct error *e)
{
	char name[32];
	struct vblk *b;
	struct device *d = NULL;
	int rc;

	snprintf(name, sizeof(name), "virtio-blk%d", i);
	if (vblk_new(&b, disk, name, e))
		return error_prefix(e, "%s", name);
	if (virtio_pci_create(host, vblk_ops(b), b, name, vblk_pci_mode(disk->mode), &d, e))
		return -1;              /* b was freed through ops->destroy */
	rc = vblk_start(b, &d->lock);
	if (rc)
		return error_set(e, EXIT_HOST, "%s: I/O thread: %s", name, strerror(-rc));
	log_debug("%s: %s (%s), %llu sectors%s, %u queue(s)", name, disk->path,
		  blockdev_format_name(b->bd->format),
		  (unsigned long long)b->capacity, b->readonly ? ", read-only" : "", b->num_queues);
	return 0;
}
