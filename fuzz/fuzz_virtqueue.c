/*
 * fuzz_virtqueue.c - a hostile driver's ring memory against the device side
 * of split and packed virtqueues.
 *
 * Input: byte 0 picks the ring format and features (bit 0 packed, bit 1
 * EVENT_IDX, bit 2 INDIRECT_DESC), byte 1 the queue size; the rest is
 * copied into guest memory from gpa 0 (where the rings live) and is also
 * read, cyclically, as a program of driver and device actions: set the
 * available index, make a packed slot available, scribble on guest memory,
 * pop (and touch every byte of every iovec), complete a held element with
 * an arbitrary length, flush and decide on notification, toggle
 * notifications, and save/restore the queue with elements in flight.
 *
 * Guest memory is three separately malloc'd regions (0..64K and 64K..68K
 * back to back, then 16K at 1 MiB), so AddressSanitizer catches any access
 * outside guest RAM exactly at a region's edge.  A crash, a sanitizer report,
 * or a broken queue that still pops is a finding.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtqueue.h"

#define REG_A   (64u << 10)
#define REG_B   (4u << 10)
#define REG_C   (16u << 10)
#define C_GPA   0x100000ull
#define AVAIL_GPA 0x800ull
#define USED_GPA  0xc00ull
#define HELD    8

struct prog {
	const uint8_t *p;
	size_t n, i;
};

static uint32_t next8(struct prog *g)
{
	return g->n ? g->p[g->i++ % g->n] : 0;
}

static uint32_t next16(struct prog *g)
{
	return next8(g) | next8(g) << 8;
}

static uint32_t next32(struct prog *g)
{
	return next16(g) | next16(g) << 16;
}

/* Read every out byte and write every in byte of `e`. */
static void touch(struct virtq_elem *e)
{
	volatile uint8_t sum = 0;

	for (unsigned int i = 0; i < e->out_num; i++)
		for (size_t k = 0; k < e->iov[i].iov_len; k += 512)
			sum += ((uint8_t *)e->iov[i].iov_base)[k];
	for (unsigned int i = 0; i < e->in_num; i++) {
		struct iovec *v = &e->iov[e->out_num + i];

		((uint8_t *)v->iov_base)[0] = sum;
		((uint8_t *)v->iov_base)[v->iov_len - 1] = sum;
	}
}

/* Save `vq` and the held elements, restore them into a fresh queue (the
 * elements by walking their chains again, which the driver may have
 * scribbled on since), start it and carry on with the copy. */
static void roundtrip(struct virtqueue *vq, struct virtq_elem *held, int *nheld)
{
	struct state_writer w;
	struct state_reader r;
	struct virtqueue copy;

	virtq_flush(vq);
	state_writer_init(&w);
	virtq_save(vq, &w);
	for (int i = 0; i < *nheld; i++)
		virtq_elem_save(&held[i], &w);
	memset(&copy, 0, sizeof(copy));
	state_reader_init(&r, w.data, w.len);
	if (virtq_restore(&copy, &r))
		abort();
	copy.mem = vq->mem;
	if (!copy.broken && virtq_start(&copy) == 0) {
		for (int i = 0; i < *nheld; i++)
			if (virtq_elem_restore(&copy, &r, &held[i])) {
				*nheld = 0;
				break;
			}
		*vq = copy;
	}
	state_writer_free(&w);
}

static void step(struct virtqueue *vq, struct prog *g, uint8_t *a,
		 struct virtq_elem *held, int *nheld)
{
	switch (next8(g) % 8) {
	case 0:                               /* driver: avail idx / event area */
		if (!vq->packed) {
			memcpy(a + AVAIL_GPA + 2, &(uint16_t){ (uint16_t)next16(g) }, 2);
		} else {
			memcpy(a + AVAIL_GPA, &(uint16_t){ (uint16_t)next16(g) }, 2);
			memcpy(a + AVAIL_GPA + 2, &(uint16_t){ (uint16_t)(next8(g) % 4) }, 2);
		}
		break;
	case 1: {                             /* driver: make a slot available */
		uint32_t s = next8(g) % vq->size;
		uint16_t f = (uint16_t)next16(g);

		memcpy(a + 16 * s + 14, &f, 2);
		break;
	}
	case 2: {                             /* driver: scribble on memory */
		uint32_t sel = next8(g), off = next16(g) % (sel & 1 ? REG_A : 0x1000);

		a[off] = (uint8_t)next8(g);
		break;
	}
	case 3: {                             /* device: pop */
		struct virtq_elem *e = &held[*nheld < HELD ? *nheld : HELD - 1];
		int rc = virtq_pop(vq, e);

		if (rc == 1) {
			touch(e);
			if (*nheld < HELD)
				(*nheld)++;
		} else if (rc < 0 && !vq->broken) {
			abort();
		}
		break;
	}
	case 4:                               /* device: complete one */
		if (*nheld) {
			int i = (int)(next8(g) % (uint32_t)*nheld);
			uint8_t buf[64];
			size_t n = virtq_elem_read(&held[i], next8(g), buf, next8(g) % sizeof(buf));

			virtq_elem_write(&held[i], next8(g), buf, n);
			if (next8(g) & 1)
				virtq_push(vq, &held[i], next32(g));
			else
				virtq_fill(vq, &held[i], next32(g));
			held[i] = held[--(*nheld)];
		}
		break;
	case 5:
		virtq_flush(vq);
		virtq_should_notify(vq);
		break;
	case 6:
		virtq_set_notify(vq, next8(g) & 1);
		break;
	case 7:
		roundtrip(vq, held, nheld);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct virtq_elem held[HELD];
	struct guest_mem m;
	struct virtqueue vq;
	struct prog g = { data + 2, size > 2 ? size - 2 : 0, 0 };
	uint8_t *a, *b, *c;
	int nheld = 0;

	if (size < 2)
		return 0;
	a = calloc(1, REG_A);
	b = calloc(1, REG_B);
	c = calloc(1, REG_C);
	memcpy(a, data + 2, size - 2 < REG_A ? size - 2 : REG_A);
	guest_mem_init_external(&m);
	guest_mem_add_region(&m, 0, REG_A, a);
	guest_mem_add_region(&m, REG_A, REG_B, b);
	guest_mem_add_region(&m, C_GPA, REG_C, c);

	memset(&vq, 0, sizeof(vq));
	vq.mem = &m;
	virtq_reset(&vq, 1);
	vq.packed = data[0] & 1;
	vq.event_idx = data[0] & 2;
	vq.indirect = data[0] & 4;
	vq.size = vq.packed ? 1 + data[1] % 64 : 1u << (data[1] % 7);
	vq.max_req_bytes = data[0] & 8 ? 4096 : 0;
	vq.desc_gpa = 0;
	vq.avail_gpa = AVAIL_GPA;
	vq.used_gpa = USED_GPA;
	if (virtq_start(&vq) == 0) {
		for (int i = 0; i < 256 && !vq.broken; i++)
			step(&vq, &g, a, held, &nheld);
		if (vq.broken && virtq_pop(&vq, &held[0]) != -EIO)
			abort();
	}
	guest_mem_destroy(&m);
	free(a);
	free(b);
	free(c);
	return 0;
}
