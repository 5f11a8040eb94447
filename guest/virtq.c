/*
 * virtq.c - split virtqueues (virtio 1.x section 2.7), the driver's half,
 * polled from ring 3; and the pool their memory comes from.
 *
 * Layout: every queue is allocated as legacy virtio requires (and modern
 * allows): the descriptor table at a 4 KiB boundary, the available ring
 * (flags, idx, ring[size], used_event) right after it, the used ring
 * (flags, idx, ring[size] of {id, len}, avail_event) at the next 4 KiB
 * boundary.  Memory is identity-mapped, so a pointer is also the
 * guest-physical address the device is given.
 *
 * Invariants: free descriptors form a list through `next` (free_head,
 * nfree); a request's chain is recorded by its head in chain_len so that
 * the used element frees exactly what was taken (the driver never trusts
 * the device's id beyond a range check).  An indirect request takes one
 * ring descriptor and its own table (VIRTQ_INDIRECT_MAX entries reserved
 * per head, so tables are never shared).
 *
 * Ordering: x86 keeps stores in order and loads in order, so a compiler
 * barrier separates "descriptors written" from "avail idx published" and
 * "used idx seen" from "element read".  Publishing avail idx and then
 * reading the device's notification suppression (used flags or
 * avail_event) is a store followed by a load: that needs MFENCE.
 *
 * EVENT_IDX: the driver notifies only when the device's avail_event lies
 * in (kicked_idx, avail_idx], and keeps used_event = last_used.  Without
 * it, the used ring's NO_NOTIFY flag is honoured.  The guest takes no
 * interrupts, so the avail ring's NO_INTERRUPT flag is set (or used_event
 * left behind); ISR is read by drivers to acknowledge only.
 */
#include "virtq.h"
#include "arch.h"
#include "layout.h"
#include "lib.h"
#include "tsc.h"

static uint8_t vpool[VIRTIO_POOL_SIZE] __attribute__((aligned(4096)));
static size_t vpool_used;

void vpool_reset(void)
{
	vpool_used = 0;
}

void *vpool_alloc(size_t size, size_t align)
{
	size_t at = ALIGN_UP(vpool_used, align ? align : 8);
	void *p;

	if (at + size > sizeof(vpool) || at + size < at)
		return NULL;
	p = &vpool[at];
	vpool_used = at + size;
	memset(p, 0, size);
	return p;
}

size_t vpool_free_bytes(void)
{
	return sizeof(vpool) - vpool_used;
}

static inline void mfence(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

#define AVAIL_FLAGS 0
#define AVAIL_IDX   1
#define USED_FLAGS  0
#define USED_IDX    1

static size_t ring_bytes(uint16_t size, size_t *used_off)
{
	size_t avail_end = 16u * size + 6 + 2u * size;

	*used_off = ALIGN_UP(avail_end, 4096);
	return *used_off + ALIGN_UP(6 + 8u * size, 4096);
}

static void free_list_init(struct virtq *q)
{
	uint16_t i;

	for (i = 0; i < q->size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->free_head = 0;
	q->nfree = q->size;
}

bool virtq_setup(struct virtq *q, struct virtio_dev *v, uint16_t index, uint16_t want)
{
	uint16_t max = virtio_queue_max(v, index), size;
	size_t used_off, bytes;
	uint8_t *mem;

	*q = (struct virtq){ .dev = v, .index = index };
	q->packed = v->modern && (v->features & VIRTIO_BIT(VIRTIO_F_RING_PACKED));
	if (!max || max > VIRTQ_SIZE_MAX || (!q->packed && (max & (max - 1))))
		return false;
	size = v->modern && want && want < max ? want : max;
	if (q->packed)
		return virtq_packed_setup(q, size);
	bytes = ring_bytes(size, &used_off);
	mem = vpool_alloc(bytes, 4096);
	q->chain_len = vpool_alloc(2u * size, 8);
	q->event_idx = v->features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	q->indirect_ok = v->features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	if (q->indirect_ok)
		q->indirect = vpool_alloc((size_t)size * VIRTQ_INDIRECT_MAX * 16, 16);
	if (!mem || !q->chain_len || (q->indirect_ok && !q->indirect))
		return false;
	q->size = size;
	q->desc = (struct virtq_desc *)mem;
	q->avail = (volatile uint16_t *)(mem + 16u * size);
	q->used = (volatile uint16_t *)(mem + used_off);
	free_list_init(q);
	if (!q->event_idx)
		q->avail[AVAIL_FLAGS] = VIRTQ_AVAIL_F_NO_INTERRUPT;
	return virtio_queue_enable(v, index, size, (uint64_t)q->desc, (uint64_t)q->avail,
				   (uint64_t)q->used);
}

/* Fill descriptors d[0..n) as one chain linked by index `link`. */
static void chain_fill(struct virtq_desc *d, const struct virtq_buf *b, unsigned n,
		       const uint16_t *link)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		d[link[i]].addr = b[i].addr;
		d[link[i]].len = b[i].len;
		d[link[i]].flags = (uint16_t)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) |
					      (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		if (i + 1 < n)
			d[link[i]].next = link[i + 1];
	}
}

static int add_indirect(struct virtq *q, const struct virtq_buf *b, unsigned n)
{
	uint16_t head = q->free_head, link[VIRTQ_INDIRECT_MAX];
	struct virtq_desc *t;
	unsigned i;

	t = &q->indirect[(size_t)head * VIRTQ_INDIRECT_MAX];
	for (i = 0; i < n; i++)
		link[i] = (uint16_t)i;
	chain_fill(t, b, n, link);
	q->free_head = q->desc[head].next;
	q->nfree--;
	q->desc[head] = (struct virtq_desc){ (uint64_t)t, (uint32_t)(n * 16),
					     VIRTQ_DESC_F_INDIRECT, 0 };
	q->chain_len[head] = 1;
	return head;
}

static int add_direct(struct virtq *q, const struct virtq_buf *b, unsigned n)
{
	uint16_t link[VIRTQ_INDIRECT_MAX * 4], head = q->free_head, cur = head;
	unsigned i;

	for (i = 0; i < n; i++) {
		link[i] = cur;
		cur = q->desc[cur].next;
	}
	q->free_head = cur;
	q->nfree = (uint16_t)(q->nfree - n);
	chain_fill(q->desc, b, n, link);
	q->chain_len[head] = (uint16_t)n;
	return head;
}

void virtq_push_raw(struct virtq *q, uint16_t head)
{
	q->avail[2 + q->avail_idx % q->size] = head;
	barrier();
	q->avail_idx++;
	q->avail[AVAIL_IDX] = q->avail_idx;
}

int virtq_add(struct virtq *q, const struct virtq_buf *b, unsigned n, bool indirect)
{
	int head;

	if (!n || n > VIRTQ_INDIRECT_MAX * 4)
		return -1;
	if (q->packed)
		return virtq_packed_add(q, b, n, indirect);
	indirect = indirect && q->indirect_ok && n <= VIRTQ_INDIRECT_MAX;
	if (q->nfree < (indirect ? 1 : n))
		return -1;
	head = indirect ? add_indirect(q, b, n) : add_direct(q, b, n);
	if (q->event_idx)
		q->avail[2 + q->size] = q->last_used;	/* used_event */
	barrier();
	virtq_push_raw(q, (uint16_t)head);
	return head;
}

/* Whether the device asked for a notification between old and new. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

void virtq_kick(struct virtq *q)
{
	bool notify;

	mfence();
	if (q->packed)
		notify = virtq_packed_kick_needed(q);
	else if (q->event_idx)
		notify = need_event(q->used[2 + 4u * q->size], q->avail_idx, q->kicked_idx);
	else
		notify = !(q->used[USED_FLAGS] & VIRTQ_USED_F_NO_NOTIFY);
	q->kicked_idx = q->avail_idx;
	if (notify) {
		q->kicks++;
		virtio_queue_notify(q->dev, q->index);
	} else {
		q->kicks_skipped++;
	}
}

static void chain_free(struct virtq *q, uint16_t head)
{
	uint16_t n = q->chain_len[head], last = head, i;

	for (i = 1; i < n; i++)
		last = q->desc[last].next;
	q->desc[last].next = q->free_head;
	q->free_head = head;
	q->nfree = (uint16_t)(q->nfree + n);
	q->chain_len[head] = 0;
}

bool virtq_get(struct virtq *q, uint16_t *head, uint32_t *len)
{
	const volatile struct virtq_used_elem *e;
	uint32_t id;

	if (q->packed)
		return virtq_packed_get(q, head, len);
	if (q->last_used == q->used[USED_IDX])
		return false;
	barrier();
	e = (const volatile struct virtq_used_elem *)&q->used[2];
	e += q->last_used % q->size;
	id = e->id;
	*len = e->len;
	q->last_used++;
	if (q->event_idx)
		q->avail[2 + q->size] = q->last_used;
	*head = (uint16_t)id;
	if (id < q->size && q->chain_len[id])
		chain_free(q, (uint16_t)id);
	return true;
}

bool virtq_wait(struct virtq *q, uint16_t *head, uint32_t *len, uint64_t timeout_us)
{
	uint64_t t0 = rdtsc();
	unsigned spins = 0;

	for (;;) {
		if (virtq_get(q, head, len))
			return true;
		if ((++spins & 255) == 0 && tsc_us_since(t0) > timeout_us)
			return false;
		cpu_relax();
	}
}
