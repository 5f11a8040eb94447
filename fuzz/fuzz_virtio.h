/*
 * fuzz_virtio.h - what the per-device virtio targets share (header only:
 * every .c in fuzz/ is a target of its own): a hostile driver's bring-up of
 * a device model on the virtio core (no transport), and the state round
 * trip of a model that has state.
 *
 * fuzz_virtio_start: features acked from what the device offers and the
 * input's mask, `nq` queues on hostile split rings (tests/ring_driver.h's
 * ring_fuzz_queue: 8 descriptors each, the tables at 0x1000 + 0x1000 * q),
 * then DRIVER_OK.  The caller has reset the first FUZZ_VIRTIO_MEM_USED
 * bytes of guest memory.
 *
 * fuzz_virtio_roundtrip: the device `a`'s state is saved, restored into a
 * fresh device of the same kind (which must accept it), saved again, and
 * that image restored into a third fresh device must save to the same
 * bytes (a fixed point after one round, not the first save itself: the
 * virtqueue core drops its EVENT_IDX "last signalled" record, see
 * fuzz_pci.c).  Then the raw input is given to one more fresh device's
 * restore as a corrupt image: refused or loaded, never a crash.
 */
#ifndef SHOAL_FUZZ_VIRTIO_H
#define SHOAL_FUZZ_VIRTIO_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/state.h"
#include "devices/virtio.h"
#include "../tests/ring_driver.h"

#define FUZZ_VIRTIO_MEM_USED (1u << 20)   /* what an input reaches through valid rings */
#define FUZZ_VIRTIO_QSIZE    8
#define FUZZ_VIRTIO_BUF_GPA  0x10000u     /* the input's buffer bytes */
#define FUZZ_VIRTIO_BUF_MAX  (32u << 10)

/* Make a fresh model's private state (the caller's own kind), or abort. */
typedef void *(*fuzz_virtio_make_fn)(void);

static inline void fuzz_virtio_init(struct virtio_device *v, const struct virtio_device_ops *ops,
				    fuzz_virtio_make_fn make, const struct guest_mem *m)
{
	if (virtio_device_init(v, ops, make(), m, "fuzz-virtio"))
		abort();
}

static inline void fuzz_virtio_start(struct virtio_device *v, struct guest_mem *m, uint64_t want,
				     bool legacy, uint16_t nq, const uint8_t **p, size_t *left)
{
	v->legacy = legacy;
	virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	virtio_set_features(v, want & v->host_features);
	virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			  VIRTIO_STATUS_FEATURES_OK);
	for (uint16_t q = 0; q < nq; q++)
		ring_fuzz_queue(v, m, q, FUZZ_VIRTIO_QSIZE, 0x1000 + 0x1000ull * q, p, left);
	virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

static inline void fuzz_virtio_save(struct virtio_device *v, struct state_writer *w)
{
	state_writer_init(w);
	virtio_device_save(v, w);
	if (w->error)
		abort();
}

static inline void fuzz_virtio_roundtrip(struct virtio_device *a, const struct virtio_device_ops *ops,
					 fuzz_virtio_make_fn make, const struct guest_mem *m,
					 const uint8_t *raw, size_t rawlen)
{
	struct virtio_device b, c, d;
	struct state_writer w1, w2, w3;
	struct state_reader r;

	fuzz_virtio_save(a, &w1);
	fuzz_virtio_init(&b, ops, make, m);
	state_reader_init(&r, w1.data, w1.len);
	if (virtio_device_restore(&b, 1, &r))
		abort();   /* the device's own image must restore */
	fuzz_virtio_save(&b, &w2);
	fuzz_virtio_init(&c, ops, make, m);
	state_reader_init(&r, w2.data, w2.len);
	if (virtio_device_restore(&c, 1, &r))
		abort();
	fuzz_virtio_save(&c, &w3);
	if (w2.len != w3.len || memcmp(w2.data, w3.data, w2.len))
		abort();   /* not a fixed point: a restore lost or changed state */
	virtio_device_destroy(&b);
	virtio_device_destroy(&c);
	state_writer_free(&w1);
	state_writer_free(&w2);
	state_writer_free(&w3);
	fuzz_virtio_init(&d, ops, make, m);
	state_reader_init(&r, raw, rawlen);
	virtio_device_restore(&d, 1, &r);
	virtio_device_destroy(&d);
}

#endif
