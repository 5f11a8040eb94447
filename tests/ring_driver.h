/*
 * ring_driver.h - a fake virtio driver's side of one virtqueue, for unit
 * tests and fuzzers: it lays descriptors, the available ring and (packed)
 * the descriptor flags out in guest memory as a guest driver would, and
 * reads back what the device put in the used ring.
 *
 * The device under test reads these rings through its real virtqueue code
 * (src/devices/virtqueue.c); this file is only the other side, written
 * once instead of once per test.  Header only (static inline), so the
 * tests (-Itests) and the fuzzers (#include "../tests/ring_driver.h") need
 * no extra object.
 *
 * Layouts:
 *   split:  desc = the descriptor table (16 bytes an entry), avail = the
 *           available ring (flags, idx, ring[size]), used = the used ring
 *           (flags, idx, {id, len}[size]);
 *   packed: desc = the descriptor ring, avail = the driver event area,
 *           used = the device event area.
 *
 * Where descriptors go (struct ring_drv.alloc, split rings):
 *   RING_RESTART   a chain takes the next free-running entries, starting
 *                  again at 0 when it would run past the table's end;
 *   RING_WRAP      a chain takes the next entries modulo the size, so it
 *                  may run on round the end;
 *   RING_FREELIST  entries come from a free list and go back to it when the
 *                  chain is used; indirect chains are possible
 *                  (ring_add_indirect).  Packed rings then take buffer ids
 *                  from the same list and count their free slots.
 * RESTART and WRAP never run out: they overwrite old descriptors, which is
 * what the simpler tests want (they do not reap everything); FREELIST
 * refuses a chain (-1) when the ring is full, as a real driver must.
 *
 * Ordering: every descriptor is written before what makes it visible (the
 * avail index, or the packed head's flags), and those are stored with
 * release semantics; the used index and packed flags are loaded with
 * acquire.  So a device on another thread (an I/O thread) sees whole
 * chains.
 *
 * A client may not move a ring (change desc/avail/used or size) without
 * ring_drv_init again, and may not use one struct ring_drv from two
 * threads at once.  Failed checks (memory outside guest RAM, a used id out
 * of range or never made available) go to RING_CHECK, abort() unless the
 * includer defines it (the cmocka tests define it as assert_true; a
 * fuzzer whose device may legitimately write garbage defines it as
 * nothing, and ring_used then stops at an entry that is not its own).
 */
#ifndef SHOAL_TESTS_RING_DRIVER_H
#define SHOAL_TESTS_RING_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/guest_mem.h"
#include "devices/virtio.h"
#include "devices/virtqueue.h"

#ifndef RING_CHECK
#define RING_CHECK(cond) do { if (!(cond)) abort(); } while (0)
#endif

#define RING_DRV_MAX   1024     /* largest queue a ring_drv drives */
#define RING_MAX_CHAIN 8        /* longest chain RING_FREELIST keeps track of */

enum ring_alloc { RING_RESTART = 0, RING_WRAP, RING_FREELIST };

/* One buffer of a chain: where, how long, and whether the device writes it. */
struct ring_buf {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

struct ring_drv {
	struct guest_mem *mem;
	uint64_t desc, avail, used;        /* see the layouts above */
	uint64_t indirect;                 /* indirect tables: 256 bytes per head or id */
	uint16_t size;
	bool packed;
	enum ring_alloc alloc;
	/* split */
	uint16_t avail_idx, used_seen, next_desc;
	/* packed */
	uint16_t slot, used_slot, next_id;
	bool wrap, used_wrap;
	int free_slots;
	uint16_t ndesc_of[RING_DRV_MAX];   /* descriptors of each buffer id */
	/* RING_FREELIST */
	uint16_t free_stack[RING_DRV_MAX];
	int nfree;
	uint16_t chain[RING_DRV_MAX][RING_MAX_CHAIN];   /* split: the entries of each head */
	uint8_t chain_n[RING_DRV_MAX];
};

/* Host pointer to `len` bytes of guest memory at `gpa` (checked). */
static inline void *ring_ptr(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	RING_CHECK(p != NULL);
	return p;
}

static inline void ring_put16(struct guest_mem *m, uint64_t gpa, uint16_t v)
{
	__atomic_store_n((uint16_t *)ring_ptr(m, gpa, 2), v, __ATOMIC_RELEASE);
}

static inline uint16_t ring_get16(struct guest_mem *m, uint64_t gpa)
{
	return __atomic_load_n((uint16_t *)ring_ptr(m, gpa, 2), __ATOMIC_ACQUIRE);
}

static inline uint32_t ring_get32(struct guest_mem *m, uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, ring_ptr(m, gpa, 4), 4);
	return v;
}

/* Write split descriptor `i` of the table at `table`. */
static inline void ring_set_desc(struct guest_mem *m, uint64_t table, uint32_t i, uint64_t addr,
				 uint32_t len, uint16_t flags, uint16_t next)
{
	struct virtq_desc x = { .addr = addr, .len = len, .flags = flags, .next = next };

	memcpy(ring_ptr(m, table + 16ull * i, 16), &x, 16);
}

/* The driver state for a ring of `size` entries at desc/avail/used; the
 * guest memory is left as it is. */
static inline void ring_drv_init(struct ring_drv *r, struct guest_mem *m, uint16_t size,
				 bool packed, uint64_t desc, uint64_t avail, uint64_t used,
				 enum ring_alloc alloc)
{
	memset(r, 0, sizeof(*r));
	RING_CHECK(size <= RING_DRV_MAX);
	r->mem = m;
	r->size = size;
	r->packed = packed;
	r->desc = desc;
	r->avail = avail;
	r->used = used;
	r->alloc = alloc;
	r->wrap = r->used_wrap = true;
	r->free_slots = size;
	for (int i = 0; i < size; i++)
		r->free_stack[r->nfree++] = (uint16_t)(size - 1 - i);
}

/* Split: make `head` available (ring entry, then the index). */
static inline void ring_publish(struct ring_drv *r, uint16_t head)
{
	ring_put16(r->mem, r->avail + 4 + 2ull * (r->avail_idx % r->size), head);
	r->avail_idx++;
	ring_put16(r->mem, r->avail + 2, r->avail_idx);
}

static inline uint16_t ring_buf_flags(const struct ring_buf *b, int k, int n)
{
	return (uint16_t)((b[k].write ? VIRTQ_DESC_F_WRITE : 0) |
			  (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
}

/* Split, RESTART or WRAP: lay the chain out and publish it; the head. */
static inline uint16_t ring_add_split_simple(struct ring_drv *r, const struct ring_buf *b, int n)
{
	uint16_t head;

	if (r->alloc == RING_RESTART && r->next_desc + n > r->size)
		r->next_desc = 0;
	head = r->next_desc % r->size;
	for (int k = 0; k < n; k++) {
		uint16_t d = (uint16_t)((r->next_desc + k) % r->size);

		ring_set_desc(r->mem, r->desc, d, b[k].gpa, b[k].len, ring_buf_flags(b, k, n),
			      (uint16_t)((d + 1) % r->size));
	}
	r->next_desc = (uint16_t)(r->next_desc + n);
	ring_publish(r, head);
	return head;
}

/* Split, FREELIST: -1 when the ring has too few free entries. */
static inline int ring_add_split_free(struct ring_drv *r, const struct ring_buf *b, int n,
				      bool indirect, uint16_t *id)
{
	int need = indirect ? 1 : n;
	uint16_t head, tmp[RING_MAX_CHAIN] = { 0 };

	if (r->nfree < need || n > RING_MAX_CHAIN)
		return -1;
	for (int k = 0; k < need; k++)
		tmp[k] = r->free_stack[--r->nfree];
	head = tmp[0];
	memcpy(r->chain[head], tmp, sizeof(tmp));
	r->chain_n[head] = (uint8_t)need;
	if (indirect) {
		uint64_t t = r->indirect + 256ull * head;

		for (int k = 0; k < n; k++)
			ring_set_desc(r->mem, t, (uint32_t)k, b[k].gpa, b[k].len,
				      ring_buf_flags(b, k, n), (uint16_t)(k + 1));
		ring_set_desc(r->mem, r->desc, head, t, 16u * (uint32_t)n, VIRTQ_DESC_F_INDIRECT, 0);
	} else {
		for (int k = 0; k < n; k++)
			ring_set_desc(r->mem, r->desc, r->chain[head][k], b[k].gpa, b[k].len,
				      ring_buf_flags(b, k, n),
				      k + 1 < n ? r->chain[head][k + 1] : 0);
	}
	ring_publish(r, head);
	*id = head;
	return 0;
}

/* Packed: one descriptor at the driver's next slot; a head's flags are
 * handed back to be stored last. */
static inline void ring_packed_put(struct ring_drv *r, uint64_t addr, uint32_t len, uint16_t id,
				   uint16_t flags, bool head, uint16_t *head_flags)
{
	uint64_t g = r->desc + 16ull * r->slot;
	struct virtq_packed_desc x = { .addr = addr, .len = len, .id = id };

	flags |= r->wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
	memcpy(ring_ptr(r->mem, g, 16), &x, 14);
	if (head)
		*head_flags = flags;
	else
		ring_put16(r->mem, g + 14, flags);
	if (++r->slot == r->size) {
		r->slot = 0;
		r->wrap = !r->wrap;
	}
}

/* Packed: a chain (or, FREELIST only, an indirect table) at the next slots,
 * the head's flags written last; -1 when FREELIST finds no room. */
static inline int ring_add_packed(struct ring_drv *r, const struct ring_buf *b, int n,
				  bool indirect, uint16_t *id)
{
	int need = indirect ? 1 : n;
	uint16_t head_slot = r->slot, hf = 0, bid;

	if (r->alloc == RING_FREELIST) {
		if (r->free_slots < need || !r->nfree)
			return -1;
		bid = r->free_stack[--r->nfree];
		r->free_slots -= need;
	} else {
		bid = (uint16_t)(r->next_id++ % r->size);
	}
	r->ndesc_of[bid] = (uint16_t)need;
	if (indirect) {
		uint64_t t = r->indirect + 256ull * bid;

		for (int k = 0; k < n; k++) {
			struct virtq_packed_desc x = { .addr = b[k].gpa, .len = b[k].len,
				.flags = b[k].write ? VIRTQ_DESC_F_WRITE : 0 };

			memcpy(ring_ptr(r->mem, t + 16ull * k, 16), &x, 16);
		}
		ring_packed_put(r, t, 16u * (uint32_t)n, bid, VIRTQ_DESC_F_INDIRECT, true, &hf);
	} else {
		for (int k = 0; k < n; k++)
			ring_packed_put(r, b[k].gpa, b[k].len, bid, ring_buf_flags(b, k, n), k == 0, &hf);
	}
	ring_put16(r->mem, r->desc + 16ull * head_slot + 14, hf);
	*id = bid;
	return 0;
}

/* Add a chain of `n` buffers and make it available; returns the head
 * (split) or buffer id (packed), or -1 (FREELIST only) when full. */
static inline int ring_add(struct ring_drv *r, const struct ring_buf *b, int n)
{
	uint16_t id;

	if (r->packed)
		return ring_add_packed(r, b, n, false, &id) ? -1 : id;
	if (r->alloc == RING_FREELIST)
		return ring_add_split_free(r, b, n, false, &id) ? -1 : id;
	return ring_add_split_simple(r, b, n);
}

/* The same through one indirect table at r->indirect (FREELIST only). */
static inline int ring_add_indirect(struct ring_drv *r, const struct ring_buf *b, int n)
{
	uint16_t id;

	RING_CHECK(r->alloc == RING_FREELIST && r->indirect);
	if (r->packed)
		return ring_add_packed(r, b, n, true, &id) ? -1 : id;
	return ring_add_split_free(r, b, n, true, &id) ? -1 : id;
}

/* Take the next used entry: true with its id and length. */
static inline bool ring_used(struct ring_drv *r, uint16_t *id, uint32_t *len)
{
	if (r->packed) {
		uint64_t g = r->desc + 16ull * r->used_slot;
		uint16_t f = ring_get16(r->mem, g + 14);

		if (!!(f & VIRTQ_DESC_F_AVAIL) != r->used_wrap ||
		    !!(f & VIRTQ_DESC_F_USED) != r->used_wrap)
			return false;
		memcpy(id, ring_ptr(r->mem, g + 12, 2), 2);
		*len = ring_get32(r->mem, g + 8);
		RING_CHECK(*id < r->size && r->ndesc_of[*id]);
		if (*id >= r->size || !r->ndesc_of[*id])
			return false;           /* not ours: stop, do not spin */
		r->used_slot = (uint16_t)(r->used_slot + r->ndesc_of[*id]);
		if (r->used_slot >= r->size) {
			r->used_slot = (uint16_t)(r->used_slot - r->size);
			r->used_wrap = !r->used_wrap;
		}
		if (r->alloc == RING_FREELIST) {
			r->free_slots += r->ndesc_of[*id];
			r->free_stack[r->nfree++] = *id;
		}
		return true;
	}
	if (ring_get16(r->mem, r->used + 2) == r->used_seen)
		return false;
	{
		uint64_t e = r->used + 4 + 8ull * (r->used_seen % r->size);

		*id = (uint16_t)ring_get32(r->mem, e);
		*len = ring_get32(r->mem, e + 4);
	}
	RING_CHECK(*id < r->size);
	if (*id >= r->size)
		return false;
	r->used_seen++;
	if (r->alloc == RING_FREELIST) {
		for (int k = 0; k < r->chain_n[*id]; k++)
			r->free_stack[r->nfree++] = r->chain[*id][k];
		r->chain_n[*id] = 0;
	}
	return true;
}

/* Point queue `q` of `dev` at r's rings and size, as a driver's queue
 * set-up registers would, and enable it; virtio_queue_set_ready's result. */
static inline int ring_attach(const struct ring_drv *r, struct virtio_device *dev, uint16_t q)
{
	struct virtqueue *vq = &dev->queues[q];

	vq->size = r->size;
	vq->desc_gpa = r->desc;
	vq->avail_gpa = r->avail;
	vq->used_gpa = r->used;
	return virtio_queue_set_ready(dev, q, true);
}

/* Fuzzers: a split ring exactly as hostile bytes say.  From *p (advanced
 * past what it takes, when *left holds enough): `size` descriptors
 * (16 * size bytes) into the table at `desc`, then the u16 avail index and
 * `size` u16 ring entries into the available ring at `avail`.  An input
 * too short leaves memory as it was.  Returns the bytes taken. */
static inline size_t ring_load_split(struct guest_mem *m, uint16_t size, uint64_t desc,
				     uint64_t avail, const uint8_t **p, size_t *left)
{
	size_t tbl = 16u * size, n = tbl + 2 + 2u * size;

	if (*left < n)
		return 0;
	guest_mem_write(m, desc, *p, tbl);
	guest_mem_write(m, avail + 2, *p + tbl, 2);
	guest_mem_write(m, avail + 4, *p + tbl + 2, 2u * size);
	*p += n;
	*left -= n;
	return n;
}

/* Fuzzers: queue `q` of `dev` on a hostile split ring of `size` entries,
 * the table at `desc`, the available ring at desc + 0x800 and the used ring
 * at desc + 0xc00 (so size <= 64), its bytes taken from the input as
 * ring_load_split says, then enabled. */
static inline void ring_fuzz_queue(struct virtio_device *dev, struct guest_mem *m, uint16_t q,
				   uint16_t size, uint64_t desc, const uint8_t **p, size_t *left)
{
	struct ring_drv r;

	ring_load_split(m, size, desc, desc + 0x800, p, left);
	ring_drv_init(&r, m, size, false, desc, desc + 0x800, desc + 0xc00, RING_RESTART);
	ring_attach(&r, dev, q);
}

#endif
