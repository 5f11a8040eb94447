/*
 * virtq_packed.c - packed virtqueues (virtio 1.1 section 2.8), the
 * driver's half: negotiated with VIRTIO_F_RING_PACKED, modern interface
 * only, chosen by `virtio-ring packed`.
 *
 * One ring of 16-byte descriptors {addr, len, id, flags} that both sides
 * write: the driver makes a descriptor available by setting its AVAIL
 * flag to the driver's wrap counter and USED to the inverse; the device
 * marks a chain used by writing one descriptor, at the position of the
 * chain's first, with AVAIL = USED = the device's wrap counter, the
 * buffer id and the length written.  Wrap counters start at 1 and flip
 * each time a position passes the end of the ring.
 *
 * Invariants: buffer ids are 0..size-1, kept in a LIFO of free ids (so a
 * driver that re-posts the buffer it just consumed gets the same id,
 * like the split ring's head); chain_len[id] remembers how many ring
 * positions the chain took, so the used position advances by it.  A
 * chain's first descriptor's flags are written last, after a compiler
 * barrier (x86 keeps stores in order), which publishes the whole chain.
 * Indirect: one ring descriptor with INDIRECT pointing at a table of
 * packed descriptors (flags WRITE only, no NEXT: entries are consecutive).
 *
 * Event suppression: the driver's area says DISABLE (the guest polls and
 * takes no interrupts); the device's area is read before notifying:
 * DISABLE skips the notification, ENABLE and DESC (EVENT_IDX) notify.
 */
#include "virtq.h"
#include "arch.h"
#include "lib.h"

bool virtq_packed_wanted;

bool virtq_packed_setup(struct virtq *q, uint16_t size)
{
	uint8_t *ring = vpool_alloc((size_t)size * 16, 4096);
	uint16_t i;

	q->drv_evt = vpool_alloc(4, 4);
	q->dev_evt = vpool_alloc(4, 4);
	q->id_free = vpool_alloc(2u * size, 8);
	q->chain_len = vpool_alloc(2u * size, 8);
	q->event_idx = q->dev->features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	q->indirect_ok = q->dev->features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	if (q->indirect_ok)
		q->indirect = vpool_alloc((size_t)size * VIRTQ_INDIRECT_MAX * 16, 16);
	if (!ring || !q->drv_evt || !q->dev_evt || !q->id_free || !q->chain_len ||
	    (q->indirect_ok && !q->indirect))
		return false;
	q->size = size;
	q->pdesc = (volatile struct virtq_pdesc *)ring;
	for (i = 0; i < size; i++)
		q->id_free[i] = (uint16_t)(size - 1 - i);
	q->nid_free = size;
	q->nfree = size;
	q->avail_wrap = q->used_wrap = true;
	q->drv_evt[1] = VIRTQ_EVT_DISABLE;
	return virtio_queue_enable(q->dev, q->index, size, (uint64_t)ring, (uint64_t)q->drv_evt,
				   (uint64_t)q->dev_evt);
}

static uint16_t avail_flags(const struct virtq *q, bool write, bool next)
{
	uint16_t f = (uint16_t)((write ? VIRTQ_DESC_F_WRITE : 0) | (next ? VIRTQ_DESC_F_NEXT : 0));

	return (uint16_t)(f | (q->avail_wrap ? VIRTQ_PDESC_F_AVAIL : VIRTQ_PDESC_F_USED));
}

static void pos_advance(struct virtq *q)
{
	if (++q->next_avail == q->size) {
		q->next_avail = 0;
		q->avail_wrap = !q->avail_wrap;
	}
}

/* Write the table for an indirect chain; returns its guest address. */
static uint64_t indirect_fill(struct virtq *q, uint16_t id, const struct virtq_buf *b, unsigned n)
{
	struct virtq_pdesc *t = (struct virtq_pdesc *)&q->indirect[(size_t)id * VIRTQ_INDIRECT_MAX];
	unsigned i;

	for (i = 0; i < n; i++)
		t[i] = (struct virtq_pdesc){ b[i].addr, b[i].len, id,
					     (uint16_t)(b[i].write ? VIRTQ_DESC_F_WRITE : 0) };
	return (uint64_t)t;
}

int virtq_packed_add(struct virtq *q, const struct virtq_buf *b, unsigned n, bool indirect)
{
	uint16_t id, first = q->next_avail, first_flags = 0, slots;
	unsigned i;

	indirect = indirect && q->indirect_ok && n <= VIRTQ_INDIRECT_MAX;
	slots = (uint16_t)(indirect ? 1 : n);
	if (!q->nid_free || q->nfree < slots)
		return -1;
	id = q->id_free[--q->nid_free];
	q->chain_len[id] = slots;
	q->nfree = (uint16_t)(q->nfree - slots);
	for (i = 0; i < slots; i++) {
		volatile struct virtq_pdesc *d = &q->pdesc[q->next_avail];
		uint16_t f;

		if (indirect) {
			d->addr = indirect_fill(q, id, b, n);
			d->len = n * 16;
			f = (uint16_t)(avail_flags(q, false, false) | VIRTQ_DESC_F_INDIRECT);
		} else {
			d->addr = b[i].addr;
			d->len = b[i].len;
			f = avail_flags(q, b[i].write, i + 1 < n);
		}
		d->id = id;
		if (i == 0)
			first_flags = f;
		else
			d->flags = f;
		pos_advance(q);
	}
	barrier();
	q->pdesc[first].flags = first_flags;
	q->avail_idx++;
	return id;
}

bool virtq_packed_kick_needed(struct virtq *q)
{
	return q->dev_evt[1] != VIRTQ_EVT_DISABLE;
}

bool virtq_packed_get(struct virtq *q, uint16_t *id, uint32_t *len)
{
	volatile struct virtq_pdesc *d = &q->pdesc[q->next_used];
	uint16_t f = d->flags, n;
	bool avail = f & VIRTQ_PDESC_F_AVAIL, used = f & VIRTQ_PDESC_F_USED;

	if (avail != used || used != q->used_wrap)
		return false;
	barrier();
	*id = d->id;
	*len = d->len;
	n = *id < q->size && q->chain_len[*id] ? q->chain_len[*id] : 1;
	if (*id < q->size && q->chain_len[*id]) {
		q->chain_len[*id] = 0;
		q->id_free[q->nid_free++] = *id;
		q->nfree = (uint16_t)(q->nfree + n);
	}
	q->next_used = (uint16_t)(q->next_used + n);
	if (q->next_used >= q->size) {
		q->next_used = (uint16_t)(q->next_used - q->size);
		q->used_wrap = !q->used_wrap;
	}
	q->last_used++;
	return true;
}
