/*
 * virtio.c - the transport-independent virtio device; see virtio.h for the
 * call map between transport, core and device model, and the status state
 * machine.
 *
 * What the core guarantees a device model:
 *   - ops->queue_notify is only called for a started queue of a live device
 *     (DRIVER_OK set, not broken), so a model never sees a ring the core has
 *     not checked against guest memory;
 *   - ops->activate runs once per DRIVER_OK, after the ready queues started;
 *   - ops->reset runs after the core reset status, features and queues;
 *   - a queue that breaks takes the device with it (DEVICE_NEEDS_RESET and
 *     one log line), and nothing more is served until the driver resets.
 *
 * Saved state (VIRTIO_STATE_VERSION 1), little-endian, all lengths checked:
 *
 *   u16 version | u64 host_features | u64 guest_features | u8 legacy
 *   u8 status | u8 config_generation | u8 broken | u8 n | reason[n]
 *   u32 max_req_bytes | u16 num_queues | virtq_save() x num_queues
 *   u64 x 6 statistics | u16 device version | u32 len | ops->save payload
 */
#include "devices/virtio.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

int virtio_device_init(struct virtio_device *dev, const struct virtio_device_ops *ops,
		       void *priv, const struct guest_mem *mem, const char *name)
{
	uint16_t qmax = ops ? ops->queue_max_size : 0;

	memset(dev, 0, sizeof(*dev));
	if (!ops || !ops->num_queues || ops->num_queues > VIRTIO_MAX_QUEUES || !qmax ||
	    qmax > VIRTQ_MAX_SIZE || (qmax & (qmax - 1)))
		return -EINVAL;
	dev->queues = calloc(ops->num_queues, sizeof(*dev->queues));
	if (!dev->queues)
		return -ENOMEM;
	dev->ops = ops;
	dev->priv = priv;
	dev->mem = mem;
	snprintf(dev->name, sizeof(dev->name), "%s", name ? name : ops->name);
	dev->num_queues = ops->num_queues;
	dev->max_req_bytes = VIRTQ_DEFAULT_MAX_REQ;
	for (uint16_t i = 0; i < dev->num_queues; i++) {
		dev->queues[i].index = i;
		dev->queues[i].mem = mem;
		dev->queues[i].max_req_bytes = dev->max_req_bytes;
		virtq_reset(&dev->queues[i], qmax);
	}
	dev->host_features = (ops->features ? ops->features(dev) : 0) | VIRTIO_CORE_FEATURES;
	dev->host_features &= ~VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
	return 0;
}

void virtio_device_destroy(struct virtio_device *dev)
{
	if (dev->ops && dev->ops->destroy)
		dev->ops->destroy(dev);
	free(dev->queues);
	dev->queues = NULL;
	dev->num_queues = 0;
}

uint32_t virtio_features_read(const struct virtio_device *dev, uint32_t select)
{
	if (select > 1 || (select == 1 && dev->legacy))
		return 0;
	return (uint32_t)(dev->host_features >> (32 * select));
}

void virtio_features_write(struct virtio_device *dev, uint32_t select, uint32_t value)
{
	if (dev->status & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK)) {
		log_debug("%s: feature write after negotiation ignored", dev->name);
		return;
	}
	/* A legacy driver has no FEATURES_OK step to refuse it at, so what it
	 * acks beyond the offer is dropped here (it would otherwise sit in the
	 * state, which restore rightly refuses: found by fuzz_pci). */
	if (select == 0 && dev->legacy)
		dev->guest_features = value & dev->host_features;
	else if (select == 0)
		dev->guest_features = (dev->guest_features & ~0xffffffffull) | value;
	else if (select == 1 && !dev->legacy)
		dev->guest_features = (dev->guest_features & 0xffffffffull) | ((uint64_t)value << 32);
}

int virtio_set_features(struct virtio_device *dev, uint64_t features)
{
	dev->guest_features = features;
	return features & ~dev->host_features ? -EINVAL : 0;
}

/* May FEATURES_OK be set with the features acked now? */
static bool virtio_features_acceptable(struct virtio_device *dev)
{
	if (dev->guest_features & ~dev->host_features) {
		log_info("%s: driver acked features %#llx that were not offered", dev->name,
			 (unsigned long long)(dev->guest_features & ~dev->host_features));
		return false;
	}
	if (!virtio_has_feature(dev, VIRTIO_F_VERSION_1)) {
		log_info("%s: modern driver did not accept VERSION_1", dev->name);
		return false;
	}
	return true;
}

/* Copy the negotiated ring features into `vq`. */
static void virtio_queue_configure(struct virtio_device *dev, struct virtqueue *vq)
{
	vq->packed = virtio_has_feature(dev, VIRTIO_F_RING_PACKED);
	vq->event_idx = virtio_has_feature(dev, VIRTIO_RING_F_EVENT_IDX);
	vq->indirect = virtio_has_feature(dev, VIRTIO_RING_F_INDIRECT_DESC);
	vq->mem = dev->mem;
	vq->max_req_bytes = dev->max_req_bytes;
}

/* Start one ready queue; 0, or -1 with the device broken. */
static int virtio_queue_start(struct virtio_device *dev, struct virtqueue *vq)
{
	if (virtq_start(vq) == 0)
		return 0;
	virtio_mark_broken(dev, "%s", vq->broken_reason);
	return -1;
}

/* DRIVER_OK: start the ready queues, activate the model, and serve anything
 * the driver queued before it set DRIVER_OK. */
static void virtio_go_live(struct virtio_device *dev)
{
	for (uint16_t i = 0; i < dev->num_queues; i++) {
		struct virtqueue *vq = &dev->queues[i];

		if (!vq->ready || vq->started)
			continue;
		virtio_queue_configure(dev, vq);
		if (virtio_queue_start(dev, vq))
			return;
	}
	if (dev->ops->activate && dev->ops->activate(dev)) {
		virtio_mark_broken(dev, "device failed to activate");
		return;
	}
	for (uint16_t i = 0; i < dev->num_queues && !dev->broken; i++)
		if (virtq_has_avail(&dev->queues[i]))
			virtio_queue_notify(dev, i);
}

uint8_t virtio_set_status(struct virtio_device *dev, uint8_t status)
{
	uint8_t old = dev->status, add;

	if (status == 0) {
		virtio_reset(dev);
		return 0;
	}
	status |= old;                      /* the driver may only add bits */
	add = status & ~old;
	if ((add & VIRTIO_STATUS_FEATURES_OK) &&
	    (dev->legacy || !virtio_features_acceptable(dev)))
		status &= ~VIRTIO_STATUS_FEATURES_OK;
	if ((add & VIRTIO_STATUS_DRIVER_OK) &&
	    (!(status & VIRTIO_STATUS_DRIVER) ||
	     (!dev->legacy && !(status & VIRTIO_STATUS_FEATURES_OK)))) {
		log_info("%s: DRIVER_OK before feature negotiation ignored", dev->name);
		status &= ~VIRTIO_STATUS_DRIVER_OK;
	}
	dev->status = status;
	if ((status & ~old & VIRTIO_STATUS_DRIVER_OK) && !dev->broken)
		virtio_go_live(dev);
	return dev->status;
}

void virtio_reset(struct virtio_device *dev)
{
	dev->status = 0;
	dev->guest_features = 0;
	dev->broken = false;
	dev->broken_reason[0] = 0;
	for (uint16_t i = 0; i < dev->num_queues; i++)
		virtq_reset(&dev->queues[i], dev->ops->queue_max_size);
	if (dev->ops->reset)
		dev->ops->reset(dev);
}

int virtio_queue_set_ready(struct virtio_device *dev, uint16_t qidx, bool ready)
{
	struct virtqueue *vq;

	if (qidx >= dev->num_queues)
		return -1;
	vq = &dev->queues[qidx];
	if (!ready) {
		vq->ready = false;
		vq->started = false;
		return 0;
	}
	vq->ready = true;
	virtio_queue_configure(dev, vq);
	if (!(dev->status & VIRTIO_STATUS_DRIVER_OK) || dev->broken || vq->started)
		return 0;
	return virtio_queue_start(dev, vq);
}

void virtio_queue_notify(struct virtio_device *dev, uint16_t qidx)
{
	dev->stats.kicks++;
	if (qidx >= dev->num_queues || dev->broken ||
	    !(dev->status & VIRTIO_STATUS_DRIVER_OK) || !dev->queues[qidx].started)
		return;
	if (dev->ops->queue_notify)
		dev->ops->queue_notify(dev, qidx);
}

int virtio_queue_pop(struct virtio_device *dev, struct virtqueue *vq, struct virtq_elem *elem)
{
	int rc;

	if (dev->broken)
		return -EIO;
	rc = virtq_pop(vq, elem);
	if (rc < 0)
		virtio_mark_broken(dev, "%s", vq->broken_reason);
	return rc;
}

void virtio_queue_fill(struct virtio_device *dev, struct virtqueue *vq,
		       const struct virtq_elem *elem, uint32_t len)
{
	if (dev->broken)
		return;
	dev->stats.requests++;
	dev->stats.bytes_out += elem->out_len;
	dev->stats.bytes_in += len < elem->in_len ? len : elem->in_len;
	virtq_fill(vq, elem, len);
}

void virtio_queue_flush(struct virtio_device *dev, struct virtqueue *vq)
{
	if (dev->broken)
		return;
	virtq_flush(vq);
	if (!virtq_should_notify(vq))
		return;
	dev->stats.interrupts++;
	if (dev->notify_queue)
		dev->notify_queue(dev, vq->index);
}

void virtio_queue_complete(struct virtio_device *dev, struct virtqueue *vq,
			   const struct virtq_elem *elem, uint32_t len)
{
	virtio_queue_fill(dev, vq, elem, len);
	virtio_queue_flush(dev, vq);
}

/* Is [offset, offset+len) a legal config access? */
static bool virtio_config_ok(const struct virtio_device *dev, uint32_t offset, uint32_t len)
{
	return len >= 1 && len <= 8 && offset <= dev->ops->config_size &&
	       len <= dev->ops->config_size - offset;
}

int virtio_config_read(struct virtio_device *dev, uint32_t offset, void *data, uint32_t len)
{
	if (!virtio_config_ok(dev, offset, len)) {
		if (len <= 8)
			memset(data, 0, len);
		return -1;
	}
	memset(data, 0, len);
	if (dev->ops->config_read)
		dev->ops->config_read(dev, offset, data, len);
	return 0;
}

int virtio_config_write(struct virtio_device *dev, uint32_t offset, const void *data, uint32_t len)
{
	if (!virtio_config_ok(dev, offset, len))
		return -1;
	if (dev->ops->config_write)
		dev->ops->config_write(dev, offset, data, len);
	return 0;
}

void virtio_notify_config(struct virtio_device *dev)
{
	dev->config_generation++;
	if (!(dev->status & VIRTIO_STATUS_DRIVER_OK))
		return;
	dev->stats.config_interrupts++;
	if (dev->notify_config)
		dev->notify_config(dev);
}

void virtio_mark_broken(struct virtio_device *dev, const char *fmt, ...)
{
	va_list ap;

	if (dev->broken)
		return;
	va_start(ap, fmt);
	vsnprintf(dev->broken_reason, sizeof(dev->broken_reason), fmt, ap);
	va_end(ap);
	dev->broken = true;
	dev->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	log_warn("%s: device needs reset: %s", dev->name, dev->broken_reason);
	virtio_notify_config(dev);
}

/* ---- save / restore ---- */

void virtio_device_save(struct virtio_device *dev, struct state_writer *w)
{
	size_t rlen = strnlen(dev->broken_reason, sizeof(dev->broken_reason) - 1), mark;
	const struct virtio_stats *s = &dev->stats;

	state_put_u16(w, VIRTIO_STATE_VERSION);
	state_put_u64(w, dev->host_features);
	state_put_u64(w, dev->guest_features);
	state_put_u8(w, dev->legacy);
	state_put_u8(w, dev->status);
	state_put_u8(w, dev->config_generation);
	state_put_u8(w, dev->broken);
	state_put_u8(w, (uint8_t)rlen);
	state_put_bytes(w, dev->broken_reason, rlen);
	state_put_u32(w, dev->max_req_bytes);
	state_put_u16(w, dev->num_queues);
	for (uint16_t i = 0; i < dev->num_queues; i++)
		virtq_save(&dev->queues[i], w);
	state_put_u64(w, s->requests);
	state_put_u64(w, s->bytes_out);
	state_put_u64(w, s->bytes_in);
	state_put_u64(w, s->kicks);
	state_put_u64(w, s->interrupts);
	state_put_u64(w, s->config_interrupts);
	state_put_u16(w, dev->ops->state_version);
	mark = w->len;
	state_put_u32(w, 0);
	if (dev->ops->save)
		dev->ops->save(dev, w);
	if (!w->error) {
		uint32_t len = (uint32_t)(w->len - mark - 4);

		memcpy(w->data + mark, &len, 4);   /* same byte order as state_put_u32 */
	}
}

/* Read the common header fields; 0 or -1. */
static int virtio_restore_common(struct virtio_device *dev, struct state_reader *r)
{
	uint64_t host = state_get_u64(r);
	uint8_t rlen;

	(void)host;                         /* we offer what this build offers */
	dev->guest_features = state_get_u64(r);
	dev->legacy = state_get_u8(r);
	dev->status = state_get_u8(r);
	dev->config_generation = state_get_u8(r);
	dev->broken = state_get_u8(r);
	rlen = state_get_u8(r);
	memset(dev->broken_reason, 0, sizeof(dev->broken_reason));
	if (rlen >= sizeof(dev->broken_reason))
		return -1;
	state_get_bytes(r, dev->broken_reason, rlen);
	dev->max_req_bytes = state_get_u32(r);
	if (r->error || !dev->max_req_bytes)
		return -1;
	/* Before FEATURES_OK the acked bits are only what the driver wrote so
	 * far (FEATURES_OK refuses unoffered ones, after the restore as
	 * before); once negotiated they must all be on offer here. */
	if ((dev->status & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK)) &&
	    (dev->guest_features & ~dev->host_features)) {
		log_error("%s: saved state uses features %#llx this device does not offer", dev->name,
			  (unsigned long long)(dev->guest_features & ~dev->host_features));
		return -1;
	}
	return 0;
}

static int virtio_restore_queues(struct virtio_device *dev, struct state_reader *r)
{
	if (state_get_u16(r) != dev->num_queues || r->error)
		return -1;
	for (uint16_t i = 0; i < dev->num_queues; i++) {
		struct virtqueue *vq = &dev->queues[i];

		if (virtq_restore(vq, r) || vq->index != i)
			return -1;
		vq->mem = dev->mem;
	}
	dev->stats.requests = state_get_u64(r);
	dev->stats.bytes_out = state_get_u64(r);
	dev->stats.bytes_in = state_get_u64(r);
	dev->stats.kicks = state_get_u64(r);
	dev->stats.interrupts = state_get_u64(r);
	dev->stats.config_interrupts = state_get_u64(r);
	return r->error ? -1 : 0;
}

/* The device model's payload, framed by its version and length. */
static int virtio_restore_model(struct virtio_device *dev, struct state_reader *r)
{
	uint16_t version = state_get_u16(r);
	uint32_t len = state_get_u32(r);
	struct state_reader sub;

	if (r->error || len > r->len - r->pos || version > dev->ops->state_version)
		return -1;
	state_reader_init(&sub, r->data + r->pos, len);
	r->pos += len;
	if (!dev->ops->restore)
		return 0;
	return dev->ops->restore(dev, version, &sub) || sub.error ? -1 : 0;
}

int virtio_device_restore(struct virtio_device *dev, uint16_t version, struct state_reader *r)
{
	uint16_t v = state_get_u16(r);

	(void)version;                      /* the common state carries its own */
	if (r->error || v < 1 || v > VIRTIO_STATE_VERSION)
		return -1;
	if (virtio_restore_common(dev, r) || virtio_restore_queues(dev, r))
		return -1;
	/* Start the queues first: the model may re-walk in-flight elements. */
	for (uint16_t i = 0; i < dev->num_queues; i++) {
		struct virtqueue *vq = &dev->queues[i];

		if (dev->broken || !(dev->status & VIRTIO_STATUS_DRIVER_OK))
			break;
		/* A ring the guest placed where it cannot start (found by
		 * fuzz_pci: made ready after DRIVER_OK, never kicked) breaks
		 * that queue, as its first kick would have; the state is
		 * still restored. */
		if (vq->ready && !vq->broken && virtq_start(vq) && !vq->broken)
			virtq_set_broken(vq, "queue %u: its ring does not start after a restore", i);
	}
	return virtio_restore_model(dev, r);
}
