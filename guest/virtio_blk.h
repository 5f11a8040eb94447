/*
 * virtio_blk.h - the virtio-blk driver's request machinery, shared by the
 * self-test (virtio_blk.c) and the benchmark (virtio_blk_bench.c).
 */
#ifndef GUEST_VIRTIO_BLK_H
#define GUEST_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include "virtio_cmd.h"

#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2

#define VBLK_SLOTS 64			/* requests in flight at most */

struct vblk_hdr {
	uint32_t type, reserved;
	uint64_t sector;
} __attribute__((packed));

struct vblk_seg {
	uint64_t sector;
	uint32_t num_sectors, flags;
} __attribute__((packed));

_Static_assert(sizeof(struct vblk_hdr) == 16, "virtio_blk_req header");
_Static_assert(sizeof(struct vblk_seg) == 16, "discard/write-zeroes segment");

/* A request slot: its header and status live in the DMA pool. */
struct vblk_req {
	struct vblk_hdr hdr;
	uint8_t status;		/* written by the device */
	bool busy;		/* on the ring, not yet reaped */
	uint16_t head;
	uint64_t t0;		/* submit time (bench) */
} __attribute__((aligned(64)));

struct vblk {
	struct virtio_dev *v;
	struct virtq q;
	struct vblk_req *req;
	unsigned slots;		/* min(VBLK_SLOTS, queue size) */
	uint64_t capacity;	/* 512-byte sectors */
	bool ro;
};

/* Open device idx, queue 0 (size at most qsize; 0 = device's), DRIVER_OK. */
bool vblk_open(struct vblk *b, const char *cmd, unsigned idx, uint16_t qsize);

/*
 * Queue one request in slot `slot`: header, data split into `split`
 * descriptors (0 or 1: one), status; indirect if asked and negotiated.
 * The caller kicks.  False when the ring is full.
 */
bool vblk_submit(struct vblk *b, unsigned slot, uint32_t type, uint64_t sector, void *data,
		 uint32_t len, unsigned split, bool indirect);

/* Wait for one completion; returns its slot (-1 on timeout or unknown). */
int vblk_reap(struct vblk *b, uint64_t timeout_us, uint32_t *len);

#endif
