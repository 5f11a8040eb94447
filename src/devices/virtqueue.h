/*
 * virtqueue.h - the device side of a virtio ring (virtio 1.2, sections 2.7
 * split and 2.8 packed), transport-independent.
 *
 * One `struct virtqueue` is one ring shared with a hostile driver.  The
 * in-VMM virtio-pci transport and a vhost-user back end both drive it: the
 * transport fills in the configuration (size, ring addresses, features) and
 * calls virtq_start; the device model pops elements, works on their iovecs
 * (which point straight into guest memory) and pushes them back with the
 * number of bytes it wrote.
 *
 * Split ring (size N, a power of two, N <= 32768), all little-endian:
 *
 *   descriptor table (16-byte aligned, 16*N bytes)
 *   +----------------+-----------+-----------+-----------+
 *   | u64 addr       | u32 len   | u16 flags | u16 next  |  x N
 *   +----------------+-----------+-----------+-----------+
 *   available ring, written by the driver (2-byte aligned, 6+2*N bytes)
 *   +-----------+-----------+------------------+-----------------+
 *   | u16 flags | u16 idx   | u16 ring[N]      | u16 used_event  |
 *   +-----------+-----------+------------------+-----------------+
 *   used ring, written by the device (4-byte aligned, 6+8*N bytes)
 *   +-----------+-----------+------------------------+-----------------+
 *   | u16 flags | u16 idx   | {u32 id, u32 len}[N]   | u16 avail_event |
 *   +-----------+-----------+------------------------+-----------------+
 *
 * Packed ring (any N <= 32768): one descriptor ring, both sides write it.
 *
 *   descriptor ring (16-byte aligned, 16*N bytes)
 *   +----------------+-----------+-----------+------------------------+
 *   | u64 addr       | u32 len   | u16 id    | u16 flags (AVAIL=b7,   |  x N
 *   |                |           |           |   USED=b15, NEXT, ...) |
 *   +----------------+-----------+-----------+------------------------+
 *   driver event suppression (driver area)  | u16 off_wrap | u16 flags |
 *   device event suppression (device area)  | u16 off_wrap | u16 flags |
 *
 *   A descriptor is available when AVAIL == the device's avail wrap counter
 *   and USED != it; the device writes one used descriptor per buffer with
 *   AVAIL == USED == its used wrap counter, then skips as many slots as the
 *   buffer had descriptors.  Each counter flips when its index wraps.
 *
 * Threads: a virtqueue has one device-side user at a time (the device's
 * lock, or the back end's queue thread).  The driver runs concurrently on a
 * vCPU or in another process, so every index and flag the two sides
 * exchange is read with acquire and written with release (__atomic), and
 * the notification decisions have a full fence between publishing and
 * reading the other side's event index.
 *
 * Hostile-guest discipline: descriptors are copied out of guest memory once
 * and the copy is checked (no double fetch).  A chain is bounded by the
 * queue size (which also catches loops), indirect tables by the queue size
 * and a 16-byte multiple, nesting is refused, device-writable descriptors
 * must follow device-readable ones, every buffer's both ends are checked
 * against guest RAM through guest_mem_ptr (a buffer that crosses from one
 * memory region into an adjacent one becomes two iovecs; one that touches
 * a hole is refused), the total length is capped (max_req_bytes) and the
 * available index may not run ahead by more than N.  Any violation sets
 * `broken` with a one-line reason; from then on pop returns -EIO and push
 * does nothing.  The caller (virtio.c) marks the device as needing reset.
 *
 * Byte order: every ring field is little-endian.  A legacy (pre-1.0) driver
 * uses the guest's native order, which on x86 is little-endian too, so one
 * code path serves both.
 *
 * Invariants: the cached host ring pointers (`desc`, `avail`, `used`, ...)
 * were checked by virtq_start against `mem` as it was then; whoever changes
 * the memory map (vhost-user SET_MEM_TABLE) calls virtq_start again.
 */
#ifndef SHOAL_DEVICES_VIRTQUEUE_H
#define SHOAL_DEVICES_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "base/guest_mem.h"
#include "base/state.h"

#define VIRTQ_MAX_SIZE           32768
#define VIRTQ_ELEM_MAX_IOV       1024        /* iovecs per element (as QEMU) */
#define VIRTQ_DEFAULT_MAX_REQ    (256u << 20) /* bytes per element, default cap */
#define VIRTQ_STATE_VERSION      1
#define VIRTQ_LEGACY_ALIGN       4096        /* legacy PCI: used ring alignment */

/* Descriptor flags (split and packed). */
#define VIRTQ_DESC_F_NEXT        1
#define VIRTQ_DESC_F_WRITE       2
#define VIRTQ_DESC_F_INDIRECT    4
#define VIRTQ_DESC_F_AVAIL       (1u << 7)   /* packed only */
#define VIRTQ_DESC_F_USED        (1u << 15)  /* packed only */

/* Split ring flags. */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1         /* driver: no used-buffer interrupt */
#define VIRTQ_USED_F_NO_NOTIFY     1         /* device: no available-buffer kick */

/* Packed event suppression flags. */
#define VIRTQ_EVENT_F_ENABLE     0
#define VIRTQ_EVENT_F_DISABLE    1
#define VIRTQ_EVENT_F_DESC       2           /* only with EVENT_IDX */

/* ---- ring layouts in guest memory (little-endian) ---- */

struct virtq_desc {                  /* split descriptor */
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc is 16 bytes");

struct virtq_packed_desc {           /* packed descriptor */
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_packed_desc) == 16, "virtq_packed_desc is 16 bytes");

struct virtq_avail {                 /* followed by u16 used_event */
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_avail) == 4, "virtq_avail header is 4 bytes");

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem is 8 bytes");

struct virtq_used {                  /* followed by u16 avail_event */
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_used) == 4, "virtq_used header is 4 bytes");

struct virtq_event_suppress {        /* packed: driver and device areas */
	uint16_t off_wrap;               /* bits 0-14 offset, bit 15 wrap counter */
	uint16_t flags;                  /* VIRTQ_EVENT_F_* */
} __attribute__((packed));
_Static_assert(sizeof(struct virtq_event_suppress) == 4, "event suppression is 4 bytes");

/* Bytes of each split area for `size` entries (event fields included). */
static inline uint64_t virtq_split_desc_bytes(uint32_t size) { return 16ull * size; }
static inline uint64_t virtq_split_avail_bytes(uint32_t size) { return 6 + 2ull * size; }
static inline uint64_t virtq_split_used_bytes(uint32_t size) { return 6 + 8ull * size; }

/* ---- one popped request ---- */

/*
 * An element is about 16 KiB (VIRTQ_ELEM_MAX_IOV iovecs): keep one on the
 * stack for synchronous work, or a pool for requests held in flight.
 * The device-readable buffers come first: iov[0 .. out_num), then the
 * device-writable ones: iov[out_num .. out_num + in_num).  Pointers go
 * straight into guest memory and stay valid while `mem` is unchanged.
 */
struct virtq_elem {
	uint16_t id;                     /* split: head index; packed: buffer id */
	uint16_t ndesc;                  /* ring slots the chain used (packed skip) */
	uint16_t slot;                   /* ring slot of the head descriptor */
	bool slot_wrap;                  /* packed: avail wrap counter at `slot` */
	unsigned int out_num, in_num;    /* iovec counts */
	uint64_t out_len, in_len;        /* total bytes each way */
	struct iovec iov[VIRTQ_ELEM_MAX_IOV];
};

static inline struct iovec *virtq_elem_out(struct virtq_elem *e) { return e->iov; }
static inline struct iovec *virtq_elem_in(struct virtq_elem *e) { return e->iov + e->out_num; }

/* ---- the queue ---- */

struct virtq_stats {
	uint64_t pops;                   /* elements taken */
	uint64_t pushes;                 /* elements returned */
	uint64_t notifies;               /* driver interrupts we decided to send */
	uint64_t suppressed;             /* ... and ones the driver suppressed */
};

struct virtqueue {
	/* Configuration: written by the transport while the queue is stopped. */
	uint16_t index;                  /* queue number in its device */
	uint16_t size;                   /* entries; 0 = not configured */
	uint16_t vector;                 /* transport's interrupt vector (opaque here) */
	bool ready;                      /* driver enabled it (queue_enable / PFN) */
	bool packed;                     /* VIRTIO_F_RING_PACKED negotiated */
	bool event_idx;                  /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;                   /* VIRTIO_F_INDIRECT_DESC negotiated */
	uint64_t desc_gpa;               /* descriptor table / ring */
	uint64_t avail_gpa;              /* split: available ring; packed: driver area */
	uint64_t used_gpa;               /* split: used ring; packed: device area */
	uint32_t max_req_bytes;          /* per-element length cap (0 = default) */
	const struct guest_mem *mem;

	/* Device-side ring state (saved and restored). */
	bool started;                    /* virtq_start succeeded; pointers valid */
	uint16_t last_avail;             /* split: free-running avail index; packed: next slot */
	bool avail_wrap;                 /* packed: driver wrap counter we expect */
	uint16_t used_idx;               /* split: free-running used index; packed: next slot */
	bool used_wrap;                  /* packed: our used wrap counter */
	uint16_t shadow_used;            /* split: used idx written but not yet published */
	uint16_t signalled_used;         /* used idx (packed: slot) at the last notify */
	bool signalled_wrap;             /* packed: used_wrap at the last notify */
	bool signalled_valid;            /* false: next decision notifies regardless */
	uint32_t since_signal;           /* slots used since the last notify */
	bool batch_open;                 /* packed: first used flags not yet written */
	uint16_t batch_slot;             /* packed: slot of the batch's first used desc */
	uint16_t batch_flags;            /* ... and its flags, written at flush */
	bool notify_enabled;             /* device wants kicks (virtq_set_notify) */

	/* Host pointers into guest memory, valid while started. */
	void *desc;                      /* struct virtq_desc[] or virtq_packed_desc[] */
	struct virtq_avail *avail;       /* split */
	struct virtq_used *used;         /* split */
	struct virtq_event_suppress *driver_event;   /* packed */
	struct virtq_event_suppress *device_event;   /* packed */

	bool broken;                     /* the driver broke a rule; queue is dead */
	char broken_reason[128];         /* one line: why */
	struct virtq_stats stats;
};

/* Put `vq` in its reset state: not ready, size `max_size`, addresses zero,
 * indices zero, wrap counters 1, not broken; `index` and `mem` kept. */
void virtq_reset(struct virtqueue *vq, uint16_t max_size);

/* Check the configuration against guest memory and the spec (size, ring
 * alignment and extent), cache the ring pointers and make the queue usable.
 * Keeps the indices (so it also serves after restore or a memory-map change).
 * 0, or -1 with the queue broken. */
int virtq_start(struct virtqueue *vq);

/* Legacy (virtio 0.9.5 PCI) layout: the three split areas back to back from
 * `base`, the used ring aligned to `align`.  Fills the ring addresses. */
void virtq_set_legacy_layout(struct virtqueue *vq, uint64_t base, uint32_t align);

/* Take the next available element into `elem`.  1: got one; 0: ring empty;
 * -EIO: the queue is (now) broken, see vq->broken_reason. */
int virtq_pop(struct virtqueue *vq, struct virtq_elem *elem);

/* True when the driver has made at least one element available (the queue
 * is started and not broken). */
bool virtq_has_avail(struct virtqueue *vq);

/* Return `elem` with `len` bytes written into its in-buffers, unpublished:
 * a batch ends with virtq_flush.  `len` is clamped to elem->in_len. */
void virtq_fill(struct virtqueue *vq, const struct virtq_elem *elem, uint32_t len);

/* Publish every element filled since the last flush (release ordering). */
void virtq_flush(struct virtqueue *vq);

/* virtq_fill + virtq_flush. */
void virtq_push(struct virtqueue *vq, const struct virtq_elem *elem, uint32_t len);

/* After a flush: does the driver want an interrupt for what was published
 * since the last notification?  Honours VIRTIO_F_EVENT_IDX (used_event /
 * packed descriptor event) and the NO_INTERRUPT / DISABLE flags.  Records the
 * decision point, so call it once per flush. */
bool virtq_should_notify(struct virtqueue *vq);

/* Ask the driver for kicks (`enable`) or not, for poll-then-sleep.  Returns
 * true when enabling found more available elements after the fence: the
 * caller should keep popping instead of sleeping. */
bool virtq_set_notify(struct virtqueue *vq, bool enable);

/* Mark the queue broken with a one-line reason (first reason wins). */
void virtq_set_broken(struct virtqueue *vq, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Copy up to `len` bytes from the element's out-buffers starting at byte
 * `off` into `buf`; returns bytes copied. */
size_t virtq_elem_read(const struct virtq_elem *elem, size_t off, void *buf, size_t len);

/* Copy up to `len` bytes from `buf` into the element's in-buffers starting
 * at byte `off`; returns bytes copied. */
size_t virtq_elem_write(struct virtq_elem *elem, size_t off, const void *buf, size_t len);

/* Append the queue's configuration and ring state (versioned). */
void virtq_save(const struct virtqueue *vq, struct state_writer *w);

/* Read what virtq_save wrote, checking every field; the queue is left
 * stopped (the caller runs virtq_start once memory is in place).
 * 0, or -1 (r->error set or a field out of range). */
int virtq_restore(struct virtqueue *vq, struct state_reader *r);

/* An element held in flight across save/restore: save its position, and on
 * restore walk the same chain again to rebuild its iovecs.  0 or -1. */
void virtq_elem_save(const struct virtq_elem *elem, struct state_writer *w);
int virtq_elem_restore(struct virtqueue *vq, struct state_reader *r, struct virtq_elem *elem);

#endif
