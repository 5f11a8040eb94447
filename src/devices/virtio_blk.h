/*
 * virtio_blk.h - the virtio-blk device model's private interface: what the
 * PCI constructor in virtio_blk.c uses, and what the unit tests and the
 * fuzz target drive directly (no VM, no PCI).
 *
 * A struct vblk is one disk: the block back end, its limits and the I/O
 * thread.  It is written against struct virtio_device_ops (vblk_ops), so
 * any transport can carry it: virtio-pci today, vhost-user later.
 */
#ifndef SHOAL_DEVICES_VIRTIO_BLK_H
#define SHOAL_DEVICES_VIRTIO_BLK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio.h"
#include "base/error.h"

struct vm_disk;
struct vblk;

/* Feature bits (virtio 1.2 section 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX      1
#define VIRTIO_BLK_F_SEG_MAX       2
#define VIRTIO_BLK_F_GEOMETRY      4
#define VIRTIO_BLK_F_RO            5
#define VIRTIO_BLK_F_BLK_SIZE      6
#define VIRTIO_BLK_F_FLUSH         9
#define VIRTIO_BLK_F_TOPOLOGY      10
#define VIRTIO_BLK_F_CONFIG_WCE    11
#define VIRTIO_BLK_F_MQ            12
#define VIRTIO_BLK_F_DISCARD       13
#define VIRTIO_BLK_F_WRITE_ZEROES  14

/* Request types (5.2.6). */
#define VIRTIO_BLK_T_IN            0
#define VIRTIO_BLK_T_OUT           1
#define VIRTIO_BLK_T_FLUSH         4
#define VIRTIO_BLK_T_GET_ID        8
#define VIRTIO_BLK_T_DISCARD       11
#define VIRTIO_BLK_T_WRITE_ZEROES  13

/* Status byte values. */
#define VIRTIO_BLK_S_OK            0
#define VIRTIO_BLK_S_IOERR         1
#define VIRTIO_BLK_S_UNSUPP        2

#define VIRTIO_BLK_ID_BYTES        20
#define VIRTIO_BLK_DWZ_F_UNMAP     1     /* discard/write-zeroes segment flag */

/* Limits this device advertises and enforces. */
#define VBLK_QUEUE_SIZE            256
#define VBLK_MAX_QUEUES            16    /* config.c allows 1..16 */
#define VBLK_SEG_MAX               (VBLK_QUEUE_SIZE - 2)
#define VBLK_SIZE_MAX              (64u << 10)          /* bytes per segment */
#define VBLK_MAX_DATA              (16u << 20)          /* bytes per read/write */
#define VBLK_MAX_RANGE_SEGS        16    /* discard / write-zeroes segments */
#define VBLK_MAX_RANGE_SECTORS     (1u << 21)           /* 1 GiB per segment */
#define VBLK_MAX_INFLIGHT          128   /* requests held by the device */
#define VBLK_CONFIG_SIZE           60    /* through write_zeroes_may_unmap + pad */

/* The request header, device-readable (5.2.6). */
struct virtio_blk_outhdr {
	uint32_t type;
	uint32_t ioprio;                  /* "reserved" in 1.x */
	uint64_t sector;                  /* 512-byte units */
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_blk_outhdr) == 16, "virtio-blk header is 16 bytes");

/* One discard / write-zeroes segment. */
struct virtio_blk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_blk_dwz_seg) == 16, "discard segment is 16 bytes");

/* Metrics, per disk. */
struct vblk_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t ioerr, unsupp;           /* requests answered with an error */
};

/* Open `disk` (raw or qcow2, probed) as the back end of a device named
 * `name`.  0, or -1 with `e` (EXIT_NOINPUT for a missing image, ...). */
int vblk_new(struct vblk **out, const struct vm_disk *disk, const char *name,
	     struct error *e);

/* The ops table for this disk (its queue count decides which). */
const struct virtio_device_ops *vblk_ops(const struct vblk *b);

/* Start the disk's I/O thread; `lock` is the lock every call into the
 * virtio device is made under (the struct device lock).  0 or -errno. */
int vblk_start(struct vblk *b, pthread_mutex_t *lock);

/* With `lock` held: wait until every request the device took from the
 * rings is back in a used ring (the lock is released while waiting). */
void vblk_drain(struct vblk *b);

/* With `lock` held and the disk quiesced (the quiesce op, on): switch the
 * device to the qcow2 overlay `path`, made by the caller with this disk's
 * image as its backing file.  The image is flushed and stays open under
 * the overlay, read-only from now on (blockdev_push_overlay); the guest
 * sees the same disk and writes go to the overlay.  The I/O thread is
 * stopped for the switch and started again.  0, or -1 with `e` (the disk
 * as it was). */
int vblk_push_overlay(struct vblk *b, const char *path, int fd, bool direct,
		      uint64_t cache_bytes, struct error *e);
/* (fd >= 0: the overlay is that open file, which `path` names; the chain
 * keeps a duplicate.  For a jailed VMM, which cannot open names.) */

/* The disk's open image chain, top first: for reading its files' identity
 * (fstat, format, chain identity) while the disk is held or before it
 * runs; the I/O thread owns it otherwise. */
struct blockdev;
const struct blockdev *vblk_image(const struct vblk *b);

/* Run fn(the block device, arg) on the disk's I/O thread, the device's
 * one owner, between its batches (held for a snapshot or not), and return
 * what it returned; the caller waits.  Without a running thread, here.
 * The caller holds no device lock.  (Live migration reads and writes the
 * disk with it: state/migrate_disk.c.) */
struct blockdev;
int vblk_call(struct vblk *b, int (*fn)(struct blockdev *bd, void *arg), void *arg);

/* Dirty block tracking for live migration: from vblk_dirty_start on, every
 * write, write-zeroes and discard marks its blocks of `gran` bytes as it
 * completes (block/dirty_bitmap.h); vblk_dirty_take moves the marks into
 * `out` (one bit a block, (size + gran - 1) / gran bits) and returns how
 * many; vblk_dirty_stop ends it.  Start: 0 or -errno (-EINVAL for another
 * `gran` than the first time). */
int vblk_dirty_start(struct vblk *b, uint32_t gran);
void vblk_dirty_stop(struct vblk *b);
uint64_t vblk_dirty_take(struct vblk *b, uint64_t *out);
/* Live migration over shared storage (docs/migration.md): with
 * vblk_set_incoming(true) before vblk_new, a writable disk whose write lock
 * another writer (the source) holds opens inactive instead of failing;
 * vblk_activate opens it again for writing, locked (0, or -1 with `e`:
 * another process holds it, it stays inactive).  At the source,
 * vblk_inactivate flushes the image and gives up its locks, and
 * vblk_activate takes them back.  Read-only disks: nothing to do.  The
 * caller holds no device lock; the disk is quiesced or not yet running. */
void vblk_set_incoming(bool on);
bool vblk_is_inactive(const struct vblk *b);
int vblk_inactivate(struct vblk *b, struct error *e);
int vblk_activate(struct vblk *b, struct error *e);
/* The disk's size in bytes, and whether the guest may only read it. */
uint64_t vblk_disk_size(const struct vblk *b);
bool vblk_is_readonly(const struct vblk *b);

/* Stop the I/O thread (if started), close the image, free `b`.  Called
 * through ops->destroy; exported for the fuzz target. */
void vblk_free(struct vblk *b);

/* Run one request element to completion on the calling thread, without a
 * queue or the I/O thread (fuzz target, tests).  Writes the status byte
 * into the element and returns it, or -1 when the element has no
 * device-writable byte to hold it.  *used gets the used length. */
int vblk_execute(struct vblk *b, const struct virtq_elem *elem, uint32_t *used);

/* The descriptor of a raw image that the device only reads (for a
 * snapshot's copy of the cloud-init seed, whose file is gone once the VM
 * holds it), or -1 for a writable or qcow2 disk.  The I/O thread reads it
 * with pread too; the caller must not change its offset. */
int vblk_raw_readonly_fd(const struct vblk *b);

/* Counters so far (read under the device lock). */
const struct vblk_stats *vblk_get_stats(const struct vblk *b);

#endif
