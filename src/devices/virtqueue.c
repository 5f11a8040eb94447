/*
 * virtqueue.c - the device side of split and packed virtio rings; see
 * virtqueue.h for the layouts, the threading and the rules we enforce.
 *
 * How the indices move (split ring, N entries, all indices free-running
 * u16 and taken mod N when used as slots):
 *
 *   driver:  avail->idx ──────────────┐      (acquire-loaded by virtq_pop)
 *   device:  last_avail ─> pop ─> ... └─ pending = idx - last_avail <= N
 *            shadow_used ─ fill ─> fill ─> flush: used->idx = shadow_used
 *            used_idx == what the driver can see   (release-stored)
 *            signalled_used == used_idx at the last notify decision
 *
 * Packed ring: `last_avail`/`avail_wrap` and `used_idx`/`used_wrap` are a
 * slot and a wrap counter each.  For the notification arithmetic a (slot,
 * wrap) pair is folded onto a line of 2N positions (vq_packed_lin), where
 * the usual "event in [old, new)" test works as it does for u16 indices.
 *
 * Every read of a descriptor copies it out of guest memory first; the
 * checks then run on the copy, so the driver cannot change a field between
 * our check and our use.
 */
#include "devices/virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- little helpers for shared little-endian fields ---- */

static inline uint16_t *vq_u16(void *base, uint64_t off)
{
	return (uint16_t *)((uint8_t *)base + off);
}

static inline uint16_t vq_load16(void *base, uint64_t off, int order)
{
	return le16toh(__atomic_load_n(vq_u16(base, off), order));
}

static inline void vq_store16(void *base, uint64_t off, uint16_t v, int order)
{
	__atomic_store_n(vq_u16(base, off), htole16(v), order);
}

static inline void vq_store32(void *base, uint64_t off, uint32_t v)
{
	__atomic_store_n((uint32_t *)((uint8_t *)base + off), htole32(v), __ATOMIC_RELAXED);
}

/* Split-ring field offsets. */
#define AVAIL_FLAGS   0
#define AVAIL_IDX     2
#define AVAIL_RING(i) (4 + 2ull * (i))
#define USED_FLAGS    0
#define USED_IDX      2
#define USED_RING(i)  (4 + 8ull * (i))
/* Packed descriptor field offsets within the ring. */
#define PDESC(i)      (16ull * (i))
#define PDESC_LEN     8
#define PDESC_ID      12
#define PDESC_FLAGS   14
/* Event suppression area. */
#define EVT_OFF_WRAP  0
#define EVT_FLAGS     2

void virtq_set_broken(struct virtqueue *vq, const char *fmt, ...)
{
	va_list ap;

	if (vq->broken)
		return;
	va_start(ap, fmt);
	vsnprintf(vq->broken_reason, sizeof(vq->broken_reason), fmt, ap);
	va_end(ap);
	vq->broken = true;
}

void virtq_reset(struct virtqueue *vq, uint16_t max_size)
{
	uint16_t index = vq->index;
	const struct guest_mem *mem = vq->mem;
	uint32_t cap = vq->max_req_bytes;
	struct virtq_stats stats = vq->stats;

	memset(vq, 0, sizeof(*vq));
	vq->index = index;
	vq->mem = mem;
	vq->max_req_bytes = cap;
	vq->stats = stats;
	vq->size = max_size;
	vq->vector = 0xffff;          /* VIRTIO_MSI_NO_VECTOR */
	vq->avail_wrap = vq->used_wrap = vq->signalled_wrap = true;
	vq->notify_enabled = true;
}

void virtq_set_legacy_layout(struct virtqueue *vq, uint64_t base, uint32_t align)
{
	uint64_t avail_end;

	vq->desc_gpa = base;
	vq->avail_gpa = base + virtq_split_desc_bytes(vq->size);
	avail_end = vq->avail_gpa + virtq_split_avail_bytes(vq->size);
	vq->used_gpa = (avail_end + align - 1) & ~((uint64_t)align - 1);
}

/* Host pointer for one ring area, or NULL with the queue broken. */
static void *vq_map_area(struct virtqueue *vq, uint64_t gpa, uint64_t len,
			 uint64_t align, const char *what)
{
	void *p;

	if (gpa & (align - 1)) {
		virtq_set_broken(vq, "queue %u: %s at %#llx is not %llu-byte aligned", vq->index,
				 what, (unsigned long long)gpa, (unsigned long long)align);
		return NULL;
	}
	p = guest_mem_ptr(vq->mem, gpa, len);
	if (!p)
		virtq_set_broken(vq, "queue %u: %s at %#llx+%llu is not in guest RAM", vq->index,
				 what, (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

/* Check the size for the ring format; false with the queue broken. */
static bool vq_check_size(struct virtqueue *vq)
{
	uint32_t n = vq->size;

	if (n == 0 || n > VIRTQ_MAX_SIZE || (!vq->packed && (n & (n - 1)))) {
		virtq_set_broken(vq, "queue %u: size %u is not valid for a %s ring", vq->index,
				 n, vq->packed ? "packed" : "split");
		return false;
	}
	return true;
}

static int vq_start_split(struct virtqueue *vq)
{
	vq->desc = vq_map_area(vq, vq->desc_gpa, virtq_split_desc_bytes(vq->size), 16,
			       "descriptor table");
	vq->avail = vq_map_area(vq, vq->avail_gpa, virtq_split_avail_bytes(vq->size), 2,
				"available ring");
	vq->used = vq_map_area(vq, vq->used_gpa, virtq_split_used_bytes(vq->size), 4,
			       "used ring");
	return vq->desc && vq->avail && vq->used ? 0 : -1;
}

static int vq_start_packed(struct virtqueue *vq)
{
	vq->desc = vq_map_area(vq, vq->desc_gpa, 16ull * vq->size, 16, "descriptor ring");
	vq->driver_event = vq_map_area(vq, vq->avail_gpa, 4, 4, "driver event area");
	vq->device_event = vq_map_area(vq, vq->used_gpa, 4, 4, "device event area");
	if (vq->last_avail >= vq->size || vq->used_idx >= vq->size)
		virtq_set_broken(vq, "queue %u: ring position past size %u", vq->index, vq->size);
	return vq->desc && vq->driver_event && vq->device_event && !vq->broken ? 0 : -1;
}

int virtq_start(struct virtqueue *vq)
{
	vq->started = false;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	vq->driver_event = vq->device_event = NULL;
	if (vq->broken)
		return -1;
	if (!vq->mem) {
		virtq_set_broken(vq, "queue %u: no guest memory", vq->index);
		return -1;
	}
	if (!vq_check_size(vq))
		return -1;
	if (vq->packed ? vq_start_packed(vq) : vq_start_split(vq))
		return -1;
	if (!vq->max_req_bytes)
		vq->max_req_bytes = VIRTQ_DEFAULT_MAX_REQ;
	vq->signalled_valid = false;
	vq->started = true;
	return 0;
}

/* ---- building an element ---- */

static void vq_elem_init(struct virtq_elem *elem)
{
	elem->id = elem->ndesc = elem->slot = 0;
	elem->slot_wrap = false;
	elem->out_num = elem->in_num = 0;
	elem->out_len = elem->in_len = 0;
}

/* Bytes of [gpa, gpa+len) that lie in the one RAM region holding gpa; 0
 * when gpa is not RAM. */
static uint64_t vq_region_span(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->region[i];
		uint64_t left;

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		left = r->size - (gpa - r->gpa);
		return len < left ? len : left;
	}
	return 0;
}

/* Append one guest buffer to `elem`, split at region boundaries; 0 or -1
 * with the queue broken. */
static int vq_elem_add(struct virtqueue *vq, struct virtq_elem *elem,
		       uint64_t addr, uint32_t len, bool write)
{
	if (!write && elem->in_num) {
		virtq_set_broken(vq, "queue %u: device-readable buffer after a device-writable one",
				 vq->index);
		return -1;
	}
	if (elem->out_len + elem->in_len + len > vq->max_req_bytes) {
		virtq_set_broken(vq, "queue %u: request longer than %u bytes", vq->index,
				 vq->max_req_bytes);
		return -1;
	}
	if (addr + len < addr) {
		virtq_set_broken(vq, "queue %u: buffer %#llx+%u wraps the address space",
				 vq->index, (unsigned long long)addr, len);
		return -1;
	}
	if (write)
		elem->in_len += len;
	else
		elem->out_len += len;
	while (len) {
		uint64_t span = vq_region_span(vq->mem, addr, len);
		unsigned int n = elem->out_num + elem->in_num;
		void *p;

		if (!span || !(p = guest_mem_ptr(vq->mem, addr, span))) {
			virtq_set_broken(vq, "queue %u: buffer at %#llx (%u bytes left) is outside guest RAM",
					 vq->index, (unsigned long long)addr, len);
			return -1;
		}
		if (n == VIRTQ_ELEM_MAX_IOV) {
			virtq_set_broken(vq, "queue %u: request has more than %u buffers", vq->index,
					 VIRTQ_ELEM_MAX_IOV);
			return -1;
		}
		elem->iov[n] = (struct iovec){ .iov_base = p, .iov_len = span };
		if (write)
			elem->in_num++;
		else
			elem->out_num++;
		addr += span;
		len -= (uint32_t)span;
	}
	return 0;
}

/* Copy descriptor `i` of a split table into host byte order. */
static void vq_read_desc(const void *table, uint32_t i, struct virtq_desc *d)
{
	memcpy(d, (const uint8_t *)table + 16ull * i, sizeof(*d));
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

/* Check an indirect descriptor and map its table; NULL with the queue broken. */
static const void *vq_indirect_table(struct virtqueue *vq, uint64_t addr, uint32_t len,
				     uint16_t flags, bool nested, uint32_t *count)
{
	const void *t;

	if (nested) {
		virtq_set_broken(vq, "queue %u: indirect descriptor inside an indirect table", vq->index);
		return NULL;
	}
	if (!vq->indirect) {
		virtq_set_broken(vq, "queue %u: indirect descriptor without INDIRECT_DESC", vq->index);
		return NULL;
	}
	if (flags & VIRTQ_DESC_F_NEXT) {
		virtq_set_broken(vq, "queue %u: indirect descriptor with NEXT set", vq->index);
		return NULL;
	}
	/*
	 * Bound the table by what one element can hold, not by the ring size:
	 * Linux sizes indirect tables by the device's seg_max, which may exceed
	 * a small ring (QEMU bounds them the same way).
	 */
	if (len == 0 || len % 16 || len / 16 > VIRTQ_ELEM_MAX_IOV) {
		virtq_set_broken(vq, "queue %u: indirect table of %u bytes (at most %u entries)",
				 vq->index, len, VIRTQ_ELEM_MAX_IOV);
		return NULL;
	}
	t = guest_mem_ptr(vq->mem, addr, len);
	if (!t)
		virtq_set_broken(vq, "queue %u: indirect table at %#llx+%u is not in guest RAM",
				 vq->index, (unsigned long long)addr, len);
	*count = len / 16;
	return t;
}

/* Walk the split chain from `head` into `elem`; 0 or -1 with the queue broken. */
static int vq_split_walk(struct virtqueue *vq, uint16_t head, struct virtq_elem *elem)
{
	const void *table = vq->desc;
	uint32_t table_n = vq->size, seen = 0;
	bool indirect = false;
	uint16_t i = head;
	struct virtq_desc d;

	for (;;) {
		if (++seen > table_n) {
			virtq_set_broken(vq, "queue %u: descriptor chain from %u loops or exceeds %u",
					 vq->index, head, table_n);
			return -1;
		}
		vq_read_desc(table, i, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			table = vq_indirect_table(vq, d.addr, d.len, d.flags, indirect, &table_n);
			if (!table)
				return -1;
			indirect = true;
			seen = 0;
			i = 0;
			continue;
		}
		if (vq_elem_add(vq, elem, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE))
			return -1;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		i = d.next;
		if (i >= table_n) {
			virtq_set_broken(vq, "queue %u: next index %u out of range %u", vq->index,
					 i, table_n);
			return -1;
		}
	}
}

/* Pop from a split ring. */
static int vq_split_pop_elem(struct virtqueue *vq, struct virtq_elem *elem)
{
	uint16_t idx = vq_load16(vq->avail, AVAIL_IDX, __ATOMIC_ACQUIRE);
	uint16_t pending = (uint16_t)(idx - vq->last_avail);
	uint16_t slot, head;

	if (!pending && vq->event_idx && vq->notify_enabled) {
		/*
		 * Empty: before believing it, publish avail_event and look again
		 * after a full fence.  Without the fence our store could pass our
		 * load (store-load reordering), a driver adding a buffer now could
		 * read a stale avail_event, skip its kick, and wait forever.
		 */
		vq_store16(vq->used, USED_RING(vq->size), vq->last_avail, __ATOMIC_RELAXED);
		guest_mem_dirty_hva(vq->mem, vq_u16(vq->used, USED_RING(vq->size)), 2);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		idx = vq_load16(vq->avail, AVAIL_IDX, __ATOMIC_ACQUIRE);
		pending = (uint16_t)(idx - vq->last_avail);
	}
	if (!pending)
		return 0;
	if (pending > vq->size) {
		virtq_set_broken(vq, "queue %u: available index %u is %u ahead of %u (size %u)",
				 vq->index, idx, pending, vq->last_avail, vq->size);
		return -EIO;
	}
	slot = vq->last_avail & (vq->size - 1);
	head = vq_load16(vq->avail, AVAIL_RING(slot), __ATOMIC_RELAXED);
	if (head >= vq->size) {
		virtq_set_broken(vq, "queue %u: head index %u out of range %u", vq->index,
				 head, vq->size);
		return -EIO;
	}
	vq_elem_init(elem);
	elem->id = head;
	elem->slot = slot;
	elem->ndesc = 1;
	if (vq_split_walk(vq, head, elem))
		return -EIO;
	vq->last_avail++;
	if (vq->event_idx && vq->notify_enabled) {
		vq_store16(vq->used, USED_RING(vq->size), vq->last_avail, __ATOMIC_RELEASE);
		guest_mem_dirty_hva(vq->mem, vq_u16(vq->used, USED_RING(vq->size)), 2);
	}
	return 1;
}

/* Is the packed descriptor with `flags` available under wrap counter `wrap`? */
static inline bool vq_packed_avail(uint16_t flags, bool wrap)
{
	bool a = flags & VIRTQ_DESC_F_AVAIL, u = flags & VIRTQ_DESC_F_USED;

	return a == wrap && u != wrap;
}

static void vq_read_pdesc(const void *ring, uint32_t i, struct virtq_packed_desc *d)
{
	memcpy(d, (const uint8_t *)ring + 16ull * i, sizeof(*d));
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->id = le16toh(d->id);
	d->flags = le16toh(d->flags);
}

/* Add every entry of a packed indirect table; 0 or -1. */
static int vq_packed_indirect(struct virtqueue *vq, const struct virtq_packed_desc *ind,
			      struct virtq_elem *elem)
{
	uint32_t n;
	const void *t = vq_indirect_table(vq, ind->addr, ind->len, ind->flags, false, &n);
	struct virtq_packed_desc d;

	if (!t)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		vq_read_pdesc(t, i, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			virtq_set_broken(vq, "queue %u: indirect descriptor inside an indirect table",
					 vq->index);
			return -1;
		}
		if (vq_elem_add(vq, elem, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE))
			return -1;
	}
	return 0;
}

/* Walk a packed chain starting at `slot` into `elem`; 0 or -1. */
static int vq_packed_walk(struct virtqueue *vq, uint16_t slot, struct virtq_elem *elem)
{
	struct virtq_packed_desc d;
	uint32_t n = 0;

	for (;;) {
		if (++n > vq->size) {
			virtq_set_broken(vq, "queue %u: packed chain at %u exceeds %u descriptors",
					 vq->index, elem->slot, vq->size);
			return -1;
		}
		vq_read_pdesc(vq->desc, slot, &d);
		if ((d.flags & VIRTQ_DESC_F_INDIRECT) && n > 1) {
			virtq_set_broken(vq, "queue %u: indirect descriptor inside a chain", vq->index);
			return -1;
		}
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (vq_packed_indirect(vq, &d, elem))
				return -1;
		} else if (vq_elem_add(vq, elem, d.addr, d.len, d.flags & VIRTQ_DESC_F_WRITE)) {
			return -1;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT) || (d.flags & VIRTQ_DESC_F_INDIRECT))
			break;
		if (++slot == vq->size)
			slot = 0;
	}
	elem->id = d.id;            /* the buffer id is in the chain's last descriptor */
	elem->ndesc = (uint16_t)n;
	return 0;
}

/* Advance a packed (slot, wrap) position by `n` slots. */
static void vq_packed_advance(const struct virtqueue *vq, uint16_t *slot, bool *wrap, uint32_t n)
{
	uint32_t s = *slot + n;

	if (s >= vq->size) {
		s -= vq->size;
		*wrap = !*wrap;
	}
	*slot = (uint16_t)s;
}

/* Point the device event area at our next slot (packed, EVENT_IDX). */
static void vq_packed_set_event(struct virtqueue *vq)
{
	uint16_t off_wrap = vq->last_avail | (vq->avail_wrap ? 0x8000 : 0);

	vq_store16(vq->device_event, EVT_OFF_WRAP, off_wrap, __ATOMIC_RELAXED);
	vq_store16(vq->device_event, EVT_FLAGS, VIRTQ_EVENT_F_DESC, __ATOMIC_RELEASE);
	guest_mem_dirty_hva(vq->mem, vq->device_event, 4);
}

/* Pop from a packed ring. */
static int vq_packed_pop_elem(struct virtqueue *vq, struct virtq_elem *elem)
{
	uint16_t flags = vq_load16(vq->desc, PDESC(vq->last_avail) + PDESC_FLAGS, __ATOMIC_ACQUIRE);

	if (!vq_packed_avail(flags, vq->avail_wrap) && vq->event_idx && vq->notify_enabled) {
		/* Empty: publish the event offset, fence, look again (see split). */
		vq_packed_set_event(vq);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		flags = vq_load16(vq->desc, PDESC(vq->last_avail) + PDESC_FLAGS, __ATOMIC_ACQUIRE);
	}
	if (!vq_packed_avail(flags, vq->avail_wrap))
		return 0;
	vq_elem_init(elem);
	elem->slot = vq->last_avail;
	elem->slot_wrap = vq->avail_wrap;
	if (vq_packed_walk(vq, vq->last_avail, elem))
		return -EIO;
	vq_packed_advance(vq, &vq->last_avail, &vq->avail_wrap, elem->ndesc);
	if (vq->event_idx && vq->notify_enabled)
		vq_packed_set_event(vq);
	return 1;
}

int virtq_pop(struct virtqueue *vq, struct virtq_elem *elem)
{
	int rc;

	if (vq->broken)
		return -EIO;
	if (!vq->started)
		return 0;
	rc = vq->packed ? vq_packed_pop_elem(vq, elem) : vq_split_pop_elem(vq, elem);
	if (rc == 1)
		vq->stats.pops++;
	return rc;
}

bool virtq_has_avail(struct virtqueue *vq)
{
	uint16_t v;

	if (!vq->started || vq->broken)
		return false;
	if (!vq->packed)
		return vq_load16(vq->avail, AVAIL_IDX, __ATOMIC_ACQUIRE) != vq->last_avail;
	v = vq_load16(vq->desc, PDESC(vq->last_avail) + PDESC_FLAGS, __ATOMIC_ACQUIRE);
	return vq_packed_avail(v, vq->avail_wrap);
}

/* ---- returning elements ---- */

/* Migration's dirty tracking (base/guest_mem.h): the ring areas the
 * device writes, marked after each write to them.  A no-op unless a
 * migration tracks host writes. */
static void vq_mark_rings(const struct virtqueue *vq)
{
	if (!atomic_load_explicit(&vq->mem->dirty, memory_order_relaxed))
		return;
	if (!vq->packed) {
		guest_mem_dirty_hva(vq->mem, vq->used, virtq_split_used_bytes(vq->size));
		return;
	}
	guest_mem_dirty_hva(vq->mem, vq->desc, 16ull * vq->size);
	guest_mem_dirty_hva(vq->mem, vq->device_event, 4);
}

/* The device-writable buffers of `elem`, `len` bytes of them written. */
static void vq_mark_written(const struct virtqueue *vq, const struct virtq_elem *elem,
			    uint32_t len)
{
	if (!atomic_load_explicit(&vq->mem->dirty, memory_order_relaxed))
		return;
	for (unsigned int i = 0; i < elem->in_num && len; i++) {
		const struct iovec *v = &elem->iov[elem->out_num + i];
		uint32_t n = v->iov_len < len ? (uint32_t)v->iov_len : len;

		guest_mem_dirty_hva(vq->mem, v->iov_base, n);
		len -= n;
	}
}

void virtq_fill(struct virtqueue *vq, const struct virtq_elem *elem, uint32_t len)
{
	uint16_t slot, flags;

	if (!vq->started || vq->broken)
		return;
	if (len > elem->in_len)
		len = (uint32_t)elem->in_len;
	vq_mark_written(vq, elem, len);
	vq->stats.pushes++;
	if (!vq->packed) {
		slot = vq->shadow_used & (vq->size - 1);
		vq_store32(vq->used, USED_RING(slot), elem->id);
		vq_store32(vq->used, USED_RING(slot) + 4, len);
		vq->shadow_used++;
		vq->since_signal++;
		return;
	}
	slot = vq->used_idx;
	vq_store32(vq->desc, PDESC(slot) + PDESC_LEN, len);
	vq_store16(vq->desc, PDESC(slot) + PDESC_ID, elem->id, __ATOMIC_RELAXED);
	flags = vq->used_wrap ? (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) : 0;
	if (len)                     /* "the device wrote data" (2.8.4) */
		flags |= VIRTQ_DESC_F_WRITE;
	if (!vq->batch_open) {       /* the batch's first flags are written last */
		vq->batch_open = true;
		vq->batch_slot = slot;
		vq->batch_flags = flags;
	} else {
		vq_store16(vq->desc, PDESC(slot) + PDESC_FLAGS, flags, __ATOMIC_RELEASE);
	}
	vq_packed_advance(vq, &vq->used_idx, &vq->used_wrap, elem->ndesc ? elem->ndesc : 1);
	vq->since_signal += elem->ndesc ? elem->ndesc : 1;
}

void virtq_flush(struct virtqueue *vq)
{
	if (!vq->started || vq->broken)
		return;
	if (!vq->packed) {
		if (vq->shadow_used != vq->used_idx)
			vq_store16(vq->used, USED_IDX, vq->shadow_used, __ATOMIC_RELEASE);
		vq->used_idx = vq->shadow_used;
		vq_mark_rings(vq);
		return;
	}
	if (vq->batch_open) {
		vq_store16(vq->desc, PDESC(vq->batch_slot) + PDESC_FLAGS, vq->batch_flags,
			   __ATOMIC_RELEASE);
		vq->batch_open = false;
	}
	vq_mark_rings(vq);
}

void virtq_push(struct virtqueue *vq, const struct virtq_elem *elem, uint32_t len)
{
	virtq_fill(vq, elem, len);
	virtq_flush(vq);
}

/* Did the index move from `old` to `new` across `event`?  (u16 arithmetic) */
static inline bool vq_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

/* A packed (slot, wrap) position on the line of 2N positions. */
static inline uint32_t vq_packed_lin(const struct virtqueue *vq, uint16_t slot, bool wrap)
{
	return wrap ? slot : (uint32_t)slot + vq->size;
}

static bool vq_packed_should_notify(struct virtqueue *vq)
{
	uint16_t flags = vq_load16(vq->driver_event, EVT_FLAGS, __ATOMIC_ACQUIRE);
	uint16_t off_wrap;
	uint32_t two_n = 2u * vq->size, ev, nw, old;

	if (flags == VIRTQ_EVENT_F_DISABLE)
		return false;
	if (flags != VIRTQ_EVENT_F_DESC || !vq->event_idx)
		return true;
	off_wrap = vq_load16(vq->driver_event, EVT_OFF_WRAP, __ATOMIC_RELAXED);
	if ((off_wrap & 0x7fff) >= vq->size)
		return true;             /* nonsense event: err on the side of notifying */
	ev = vq_packed_lin(vq, off_wrap & 0x7fff, off_wrap >> 15);
	nw = vq_packed_lin(vq, vq->used_idx, vq->used_wrap);
	old = vq_packed_lin(vq, vq->signalled_used, vq->signalled_wrap);
	return (nw + two_n - ev - 1) % two_n < (nw + two_n - old) % two_n;
}

static bool vq_split_should_notify(struct virtqueue *vq)
{
	uint16_t ev;

	if (!vq->event_idx)
		return !(vq_load16(vq->avail, AVAIL_FLAGS, __ATOMIC_ACQUIRE) &
			 VIRTQ_AVAIL_F_NO_INTERRUPT);
	ev = vq_load16(vq->avail, AVAIL_RING(vq->size), __ATOMIC_ACQUIRE);
	return vq_need_event(ev, vq->used_idx, vq->signalled_used);
}

bool virtq_should_notify(struct virtqueue *vq)
{
	bool notify;

	if (!vq->started || vq->broken || !vq->since_signal)
		return false;
	/* Our used index must be visible before we read the driver's event. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->signalled_valid || vq->since_signal >= vq->size)
		notify = true;
	else
		notify = vq->packed ? vq_packed_should_notify(vq) : vq_split_should_notify(vq);
	vq->signalled_used = vq->used_idx;
	vq->signalled_wrap = vq->used_wrap;
	vq->signalled_valid = true;
	vq->since_signal = 0;
	if (notify)
		vq->stats.notifies++;
	else
		vq->stats.suppressed++;
	return notify;
}

bool virtq_set_notify(struct virtqueue *vq, bool enable)
{
	if (!vq->started || vq->broken)
		return false;
	vq->notify_enabled = enable;
	if (!vq->packed && vq->event_idx) {
		if (enable)
			vq_store16(vq->used, USED_RING(vq->size), vq->last_avail, __ATOMIC_RELAXED);
	} else if (!vq->packed) {
		vq_store16(vq->used, USED_FLAGS, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY,
			   __ATOMIC_RELAXED);
	} else if (enable && vq->event_idx) {
		vq_packed_set_event(vq);
	} else {
		vq_store16(vq->device_event, EVT_FLAGS,
			   enable ? VIRTQ_EVENT_F_ENABLE : VIRTQ_EVENT_F_DISABLE, __ATOMIC_RELAXED);
	}
	vq_mark_rings(vq);
	if (!enable)
		return false;
	/* The driver must see our request before we look at the ring again. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return virtq_has_avail(vq);
}

/* ---- copying through an element ---- */

size_t virtq_elem_read(const struct virtq_elem *elem, size_t off, void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned int i = 0; i < elem->out_num && done < len; i++) {
		const struct iovec *v = &elem->iov[i];
		size_t n;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		n = v->iov_len - off < len - done ? v->iov_len - off : len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)v->iov_base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t virtq_elem_write(struct virtq_elem *elem, size_t off, const void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned int i = 0; i < elem->in_num && done < len; i++) {
		struct iovec *v = &elem->iov[elem->out_num + i];
		size_t n;

		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		n = v->iov_len - off < len - done ? v->iov_len - off : len - done;
		memcpy((uint8_t *)v->iov_base + off, (const uint8_t *)buf + done, n);
		done += n;
		off = 0;
	}
	return done;
}

/* ---- save / restore ---- */

enum {
	VQS_READY = 1, VQS_PACKED = 2, VQS_EVENT_IDX = 4, VQS_INDIRECT = 8,
	VQS_AVAIL_WRAP = 16, VQS_USED_WRAP = 32, VQS_SIG_WRAP = 64, VQS_SIG_VALID = 128,
	VQS_NOTIFY = 256, VQS_BROKEN = 512,
};

void virtq_save(const struct virtqueue *vq, struct state_writer *w)
{
	uint16_t bits = (vq->ready ? VQS_READY : 0) | (vq->packed ? VQS_PACKED : 0) |
		(vq->event_idx ? VQS_EVENT_IDX : 0) | (vq->indirect ? VQS_INDIRECT : 0) |
		(vq->avail_wrap ? VQS_AVAIL_WRAP : 0) | (vq->used_wrap ? VQS_USED_WRAP : 0) |
		(vq->signalled_wrap ? VQS_SIG_WRAP : 0) | (vq->signalled_valid ? VQS_SIG_VALID : 0) |
		(vq->notify_enabled ? VQS_NOTIFY : 0) | (vq->broken ? VQS_BROKEN : 0);
	size_t rlen = strnlen(vq->broken_reason, sizeof(vq->broken_reason) - 1);

	state_put_u16(w, VIRTQ_STATE_VERSION);
	state_put_u16(w, vq->index);
	state_put_u16(w, vq->size);
	state_put_u16(w, vq->vector);
	state_put_u16(w, bits);
	state_put_u64(w, vq->desc_gpa);
	state_put_u64(w, vq->avail_gpa);
	state_put_u64(w, vq->used_gpa);
	state_put_u32(w, vq->max_req_bytes);
	state_put_u16(w, vq->last_avail);
	state_put_u16(w, vq->used_idx);
	state_put_u16(w, vq->shadow_used);
	state_put_u16(w, vq->signalled_used);
	state_put_u32(w, vq->since_signal);
	state_put_u8(w, (uint8_t)rlen);
	state_put_bytes(w, vq->broken_reason, rlen);
}

/* Range checks on a restored queue; false when the saved state is nonsense. */
static bool vq_restored_sane(const struct virtqueue *vq)
{
	if (vq->size > VIRTQ_MAX_SIZE)
		return false;
	if (!vq->packed && vq->size && (vq->size & (vq->size - 1)))
		return false;
	if (vq->packed && vq->size && (vq->last_avail >= vq->size || vq->used_idx >= vq->size ||
				       vq->signalled_used >= vq->size))
		return false;
	if (!vq->packed && (uint16_t)(vq->shadow_used - vq->used_idx) > vq->size)
		return false;
	return true;
}

int virtq_restore(struct virtqueue *vq, struct state_reader *r)
{
	uint16_t version = state_get_u16(r), bits;
	uint8_t rlen;

	if (r->error || version < 1 || version > VIRTQ_STATE_VERSION)
		return -1;
	vq->index = state_get_u16(r);
	vq->size = state_get_u16(r);
	vq->vector = state_get_u16(r);
	bits = state_get_u16(r);
	vq->desc_gpa = state_get_u64(r);
	vq->avail_gpa = state_get_u64(r);
	vq->used_gpa = state_get_u64(r);
	vq->max_req_bytes = state_get_u32(r);
	vq->last_avail = state_get_u16(r);
	vq->used_idx = state_get_u16(r);
	vq->shadow_used = state_get_u16(r);
	vq->signalled_used = state_get_u16(r);
	vq->since_signal = state_get_u32(r);
	rlen = state_get_u8(r);
	memset(vq->broken_reason, 0, sizeof(vq->broken_reason));
	if (rlen >= sizeof(vq->broken_reason))
		return -1;
	state_get_bytes(r, vq->broken_reason, rlen);
	if (r->error)
		return -1;
	vq->ready = bits & VQS_READY;
	vq->packed = bits & VQS_PACKED;
	vq->event_idx = bits & VQS_EVENT_IDX;
	vq->indirect = bits & VQS_INDIRECT;
	vq->avail_wrap = bits & VQS_AVAIL_WRAP;
	vq->used_wrap = bits & VQS_USED_WRAP;
	vq->signalled_wrap = bits & VQS_SIG_WRAP;
	vq->signalled_valid = bits & VQS_SIG_VALID;
	vq->notify_enabled = bits & VQS_NOTIFY;
	vq->broken = bits & VQS_BROKEN;
	vq->started = false;
	vq->batch_open = false;
	if (!vq->packed)
		vq->shadow_used = vq->used_idx;   /* unflushed fills are not state */
	return vq_restored_sane(vq) ? 0 : -1;
}

void virtq_elem_save(const struct virtq_elem *elem, struct state_writer *w)
{
	state_put_u16(w, elem->id);
	state_put_u16(w, elem->ndesc);
	state_put_u16(w, elem->slot);
	state_put_u8(w, elem->slot_wrap);
}

int virtq_elem_restore(struct virtqueue *vq, struct state_reader *r, struct virtq_elem *elem)
{
	uint16_t id = state_get_u16(r), ndesc = state_get_u16(r), slot = state_get_u16(r);
	bool wrap = state_get_u8(r);

	if (r->error || !vq->started || vq->broken || slot >= vq->size)
		return -1;
	vq_elem_init(elem);
	elem->slot = slot;
	elem->slot_wrap = wrap;
	if (!vq->packed) {
		if (id >= vq->size)
			return -1;
		elem->id = id;
		elem->ndesc = 1;
		return vq_split_walk(vq, id, elem) ? -1 : 0;
	}
	if (vq_packed_walk(vq, slot, elem))
		return -1;
	return elem->id == id && elem->ndesc == ndesc ? 0 : -1;
}
