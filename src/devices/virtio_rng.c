/*
 * virtio_rng.c - virtio entropy device (virtio 1.2 section 5.4).
 *
 * One queue; the driver posts device-writable buffers and the device fills
 * them from the host's getrandom().  A token bucket caps the rate (default
 * 1 MiB/s, `"rng": {"rate": N}` in the config) so a guest cannot drain the
 * host's entropy pool or burn a host core: when the bucket is empty the
 * device stops taking buffers and a timer on the event loop resumes it.
 *
 * The model is built without a transport by virtio_rng_model (the
 * vhost-user back end serves it that way); virtio_rng_create puts it on
 * virtio-pci for `shoal run`.
 *
 * Threads: queue_notify runs under the transport's lock (the struct device
 * lock on vCPU threads or the event loop, see virtio_pci.c; the vhost-user
 * server's lock); the refill timer takes the same lock (`lock`).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "devices/device.h"
#include "devices/vhost_user.h"
#include "devices/virtio_pci.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/eventloop.h"

#define RNG_DEFAULT_RATE (1u << 20)    /* bytes per second */
#define RNG_QUEUE_SIZE   256

struct rng {
	struct eventloop *loop;        /* watching timer_fd, or NULL */
	struct device *dev;            /* virtio-pci: its device, else NULL */
	struct virtio_device *vdev;    /* seen at the first kick, for the timer */
	pthread_mutex_t *lock;         /* the transport's lock, NULL until known */
	uint32_t rate;                 /* bytes per second */
	uint64_t tokens;               /* bytes we may give now */
	uint64_t last_ns;              /* last refill */
	int timer_fd;                  /* refill wake-up, -1 none */
	bool timer_armed;
	uint64_t bytes;                /* given so far */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Add tokens for the time passed, up to one second's worth. */
static void rng_refill(struct rng *r)
{
	uint64_t now = mono_ns(), add = (now - r->last_ns) * r->rate / 1000000000ULL;

	if (add) {
		r->tokens = r->tokens + add > r->rate ? r->rate : r->tokens + add;
		r->last_ns = now;
	}
}

static void rng_arm_timer(struct rng *r)
{
	struct itimerspec its = { .it_value = { .tv_nsec = 50 * 1000000L } };

	if (r->timer_fd >= 0 && !r->timer_armed && timerfd_settime(r->timer_fd, 0, &its, NULL) == 0)
		r->timer_armed = true;
}

/* Fill one element's writable buffers with at most `max` random bytes. */
static uint32_t rng_fill(struct virtq_elem *elem, uint64_t max)
{
	uint8_t buf[4096];
	uint64_t done = 0, want = elem->in_len < max ? elem->in_len : max;

	while (done < want) {
		size_t n = want - done < sizeof(buf) ? (size_t)(want - done) : sizeof(buf);
		ssize_t got = getrandom(buf, n, GRND_NONBLOCK);

		if (got <= 0)
			break;
		virtq_elem_write(elem, (size_t)done, buf, (size_t)got);
		done += (uint64_t)got;
	}
	return (uint32_t)done;
}

static void rng_process(struct virtio_device *vdev)
{
	struct rng *r = vdev->priv;
	struct virtqueue *vq = &vdev->queues[0];
	struct virtq_elem *elem = malloc(sizeof(*elem));

	if (!elem)
		return;
	rng_refill(r);
	while (r->tokens > 0 && virtio_queue_pop(vdev, vq, elem) == 1) {
		uint32_t n = rng_fill(elem, r->tokens);

		r->tokens -= n;
		r->bytes += n;
		virtio_queue_fill(vdev, vq, elem, n);
	}
	virtio_queue_flush(vdev, vq);
	if (r->tokens == 0 && virtq_has_avail(vq))
		rng_arm_timer(r);
	free(elem);
}

static void rng_queue_notify(struct virtio_device *vdev, uint16_t qidx)
{
	struct rng *r = vdev->priv;

	r->vdev = vdev;
	if (qidx == 0)
		rng_process(vdev);
}

static int rng_on_timer(int fd, uint32_t events, void *opaque)
{
	struct rng *r = opaque;
	uint64_t n;
	struct virtio_device *vdev;

	if (read(fd, &n, sizeof(n)) < 0 || !r->lock)
		return 0;
	pthread_mutex_lock(r->lock);
	r->timer_armed = false;
	vdev = r->vdev;
	if (vdev && !(r->dev && r->dev->broken) && (vdev->status & VIRTIO_STATUS_DRIVER_OK) &&
	    !vdev->broken && vdev->queues[0].started)
		rng_process(vdev);
	pthread_mutex_unlock(r->lock);
	return 0;
}

static uint64_t rng_features(struct virtio_device *vdev)
{
	return 0;
}

static void rng_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct rng *r = vdev->priv;

	state_put_u64(w, r->bytes);
}

static int rng_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *rd)
{
	struct rng *r = vdev->priv;

	r->bytes = state_get_u64(rd);
	return rd->error ? -1 : 0;
}

static void rng_destroy(struct virtio_device *vdev)
{
	struct rng *r = vdev->priv;

	if (!r)
		return;
	if (r->timer_fd >= 0) {
		if (r->loop)
			eventloop_del(r->loop, r->timer_fd);
		close(r->timer_fd);
	}
	free(r);
	vdev->priv = NULL;
}

static const struct virtio_device_ops rng_ops = {
	.device_id = VIRTIO_ID_RNG,
	.name = "virtio-rng",
	.num_queues = 1,
	.queue_max_size = RNG_QUEUE_SIZE,
	.config_size = 0,
	.state_version = 1,
	.features = rng_features,
	.queue_notify = rng_queue_notify,
	.save = rng_save,
	.restore = rng_restore,
	.destroy = rng_destroy,
};

int virtio_rng_model(const struct device_host *host, uint32_t rate, pthread_mutex_t *lock,
		     const struct virtio_device_ops **ops, void **priv, struct error *e)
{
	struct rng *r = calloc(1, sizeof(*r));

	if (!r)
		return error_set(e, EXIT_HOST, "out of memory");
	r->lock = lock;
	r->rate = rate ? rate : RNG_DEFAULT_RATE;
	r->tokens = r->rate;
	r->last_ns = mono_ns();
	r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (r->timer_fd >= 0 && host->loop) {
		if (eventloop_add(host->loop, r->timer_fd, EPOLLIN, rng_on_timer, r) < 0)
			log_warn("virtio-rng: no refill timer; the rate cap may stall the device");
		else
			r->loop = host->loop;
	}
	*ops = &rng_ops;
	*priv = r;
	return 0;
}

int virtio_rng_create(const struct device_host *host, uint32_t rate, struct error *e)
{
	const struct virtio_device_ops *ops;
	struct rng *r;
	void *priv;

	if (virtio_rng_model(host, rate, NULL, &ops, &priv, e))
		return -1;
	r = priv;
	if (virtio_pci_create(host, ops, priv, "virtio-rng0", VIRTIO_PCI_TRANSITIONAL, &r->dev, e))
		return -1;
	r->vdev = virtio_pci_vdev(r->dev);
	r->lock = &r->dev->lock;
	return 0;
}
