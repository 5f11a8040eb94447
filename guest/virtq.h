/*
 * virtq.h - split virtqueues, driver side, polled; and the DMA pool the
 * virtio drivers take rings and buffers from.
 */
#ifndef GUEST_VIRTQ_H
#define GUEST_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "virtio_pci.h"

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1
#define VIRTQ_INDIRECT_MAX    16	/* descriptors per indirect table */
#define VIRTQ_SIZE_MAX        1024

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
} __attribute__((packed));

struct virtq_used_elem {
	uint32_t id, len;
} __attribute__((packed));

_Static_assert(sizeof(struct virtq_desc) == 16, "descriptor layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "used element layout");

/* One buffer of a request: guest-physical address, length, direction. */
struct virtq_buf {
	uint64_t addr;
	uint32_t len;
	bool write;		/* device writes it */
};

struct virtq {
	struct virtio_dev *dev;
	uint16_t index, size;
	struct virtq_desc *desc;
	volatile uint16_t *avail;	/* flags, idx, ring[size], used_event */
	volatile uint16_t *used;	/* flags, idx, elems..., avail_event */
	struct virtq_desc *indirect;	/* VIRTQ_INDIRECT_MAX per head */
	uint16_t *chain_len;		/* descriptors taken by each head */
	uint16_t free_head, nfree;
	uint16_t avail_idx;		/* next avail->idx to publish */
	uint16_t kicked_idx;		/* avail_idx at the last notify */
	uint16_t last_used;		/* next used->idx entry to consume */
	bool event_idx, indirect_ok;
	uint32_t kicks, kicks_skipped;
	/* Packed ring (VIRTIO_F_RING_PACKED, modern only; virtq_packed.c). */
	bool packed;
	volatile struct virtq_pdesc *pdesc;	/* the ring, size entries */
	volatile uint16_t *drv_evt, *dev_evt;	/* off_wrap, flags */
	uint16_t *id_free;		/* stack of free buffer ids */
	uint16_t nid_free;
	uint16_t next_avail, next_used;	/* ring positions */
	bool avail_wrap, used_wrap;
};

/* Packed-ring descriptor (virtio 1.1 2.8.13). */
struct virtq_pdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t id, flags;
} __attribute__((packed));

_Static_assert(sizeof(struct virtq_pdesc) == 16, "packed descriptor layout");

#define VIRTQ_PDESC_F_AVAIL (1u << 7)
#define VIRTQ_PDESC_F_USED  (1u << 15)
#define VIRTQ_EVT_ENABLE    0
#define VIRTQ_EVT_DISABLE   1
#define VIRTQ_EVT_DESC      2

/* Split ring or packed ring for the next queues set up (`virtio-ring`). */
extern bool virtq_packed_wanted;

/* The packed-ring halves of the calls below (virtq_packed.c). */
bool virtq_packed_setup(struct virtq *q, uint16_t size);
int virtq_packed_add(struct virtq *q, const struct virtq_buf *b, unsigned n, bool indirect);
bool virtq_packed_kick_needed(struct virtq *q);
bool virtq_packed_get(struct virtq *q, uint16_t *id, uint32_t *len);

/* "packed" or "split". */
static inline const char *virtq_ring_name(const struct virtq *q)
{
	return q->packed ? "packed" : "split";
}

/* The pool: a bump allocator over static memory, reset by each command. */
void vpool_reset(void);
void *vpool_alloc(size_t size, size_t align);	/* zeroed, NULL if full */
size_t vpool_free_bytes(void);

/*
 * Allocate queue q of v (legacy layout, so either interface can take it),
 * size min(device's, want), and hand it to the device.  EVENT_IDX and
 * INDIRECT_DESC are used if negotiated in v->features.
 */
bool virtq_setup(struct virtq *q, struct virtio_dev *v, uint16_t index, uint16_t want);

/*
 * Put one request (n buffers, device-readable ones first) on the
 * available ring, through an indirect table when `indirect` (and
 * negotiated).  Returns the head, or -1 when there is no room.
 * The device sees it only after virtq_kick.
 */
int virtq_add(struct virtq *q, const struct virtq_buf *b, unsigned n, bool indirect);

/* Publish and notify the device unless it asked not to be (EVENT_IDX/flags). */
void virtq_kick(struct virtq *q);

/* Take one used element if there is one; frees its descriptors. */
bool virtq_get(struct virtq *q, uint16_t *head, uint32_t *len);

/* virtq_get, polling up to timeout_us. */
bool virtq_wait(struct virtq *q, uint16_t *head, uint32_t *len, uint64_t timeout_us);

/* Raw access for the hostile tests: descriptor i and an avail slot. */
void virtq_push_raw(struct virtq *q, uint16_t head);

#endif
