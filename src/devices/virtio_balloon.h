/*
 * virtio_balloon.h - the virtio-balloon device (virtio 1.2 section 5.5):
 * how the VMM builds it, sets its target and reads its state, and the
 * model's own interface for the unit test (its ops table, driven through
 * the virtio core directly).
 *
 * Sizes: the target and `actual` are counted in 4 KiB pages by the device
 * (as the spec's num_pages), in bytes by everything above it.
 */
#ifndef SHOAL_DEVICES_VIRTIO_BALLOON_H
#define SHOAL_DEVICES_VIRTIO_BALLOON_H

#include <stdint.h>

#include "devices/device.h"
#include "devices/virtio.h"
#include "base/error.h"

/* Feature bits (5.5.3). */
#define VIRTIO_BALLOON_F_MUST_TELL_HOST   0
#define VIRTIO_BALLOON_F_STATS_VQ         1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM   2
#define VIRTIO_BALLOON_F_FREE_PAGE_HINT   3
#define VIRTIO_BALLOON_F_PAGE_POISON      4
#define VIRTIO_BALLOON_F_PAGE_REPORTING   5

#define VIRTIO_BALLOON_PAGE     4096u   /* the unit of a PFN and of num_pages */
#define VIRTIO_BALLOON_NSTATS   16      /* statistics tags kept (0..15) */
#define VIRTIO_BALLOON_DEFAULT_STATS_S 5

struct balloon;
struct json_t;

/* virtio-balloon0 on virtio-pci, asking the driver for fresh statistics
 * every `stats_s` seconds (0: the default, 5). */
int virtio_balloon_create(const struct device_host *host, uint32_t stats_s, struct error *e);

/* Set the target of the balloon made by virtio_balloon_create: `bytes`
 * (rounded down to whole pages) is how much memory the guest should give
 * back.  The caller checked it against the VM's memory.  Takes the
 * device's lock.  0, or -1 when `d` is not a balloon. */
int virtio_balloon_set_target(struct device *d, uint64_t bytes);

/* The balloon's state as a new JSON object (target_bytes, actual_bytes,
 * the counters, the guest's last statistics), or NULL when `d` is not a
 * balloon.  Takes the device's lock. */
struct json_t *virtio_balloon_info(struct device *d);

/* ---- the model, for tests ---- */

/* The ops table: four queues (inflateq 0, deflateq 1, then statsq and
 * reporting_vq where negotiated, in that order, as Linux numbers them). */
const struct virtio_device_ops *virtio_balloon_ops(void);

/* A model on `host` (its memory, and its event loop for the statistics
 * timer when there is one); freed by ops->destroy. */
struct balloon *virtio_balloon_new(const struct device_host *host, uint32_t stats_s,
				   struct error *e);

/* The same as the device-level calls, on the model's virtio device, with
 * the transport's serialisation already held.  The target in pages. */
void virtio_balloon_vdev_set_target(struct virtio_device *vdev, uint32_t pages);
struct json_t *virtio_balloon_vdev_info(struct virtio_device *vdev);
/* Return the statistics buffer the device holds, asking the driver for
 * new numbers (what the timer does); false when it holds none. */
bool virtio_balloon_request_stats(struct virtio_device *vdev);

#endif
