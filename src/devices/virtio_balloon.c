/*
 * virtio_balloon.c - virtio memory balloon (virtio 1.2 section 5.5).
 *
 * The host sets a target (num_pages, in 4 KiB pages); the guest's driver
 * inflates toward it by giving pages on the inflate queue (arrays of le32
 * page frame numbers), deflates by taking them back on the deflate queue,
 * and writes how many it holds in `actual`.  Pages the guest gives, and
 * free page ranges it reports (VIRTIO_BALLOON_F_PAGE_REPORTING, its own
 * queue of device-writable buffers that the device never writes), are
 * released from host memory with guest_mem_discard: a punched hole in the
 * memfd.  A later guest access to such a page faults a zeroed page in
 * again (docs/memory.md), so deflating needs no host work.  The statistics
 * queue (VIRTIO_BALLOON_F_STATS_VQ) carries {le16 tag, le64 val} entries:
 * the device keeps the one buffer the driver makes available and gives it
 * back every `stats_s` seconds (a timer on the event loop) to ask for new
 * numbers.  VIRTIO_BALLOON_F_DEFLATE_ON_OOM is offered: the guest may
 * deflate under memory pressure, and `actual` then says so.
 *
 * Queues, as Linux numbers them: inflateq 0, deflateq 1, then statsq when
 * STATS_VQ was negotiated, then reporting_vq when PAGE_REPORTING was (so
 * index 2 or 3).  FREE_PAGE_HINT, PAGE_POISON and MUST_TELL_HOST are not
 * offered.
 *
 * The guest is hostile.  Every PFN is checked against guest RAM: one
 * outside it (the 32-bit hole, past the end) is ignored and counted in
 * bad_pfns.  A reported range is a descriptor, checked by the virtqueue
 * core (one that touches memory outside RAM breaks the device); only the
 * whole pages inside it are released, partial ones are kept.  A
 * driver that claims more pages in its balloon than the VM has, or makes
 * a second statistics buffer available while the device holds one (the
 * spec's "at most one buffer", so a flood cannot grow anything), marks
 * the device broken.  Nothing the guest sends makes the device allocate.
 *
 * Saved state (version 1): u32 num_pages | u32 actual | u64 balloon_pages
 * | 8 x u64 counters | u32 stats mask | 16 x u64 stats | u8 held | [the
 * held statistics buffer, virtq_elem_save].  A held buffer of a device
 * that is broken (or whose statistics queue is) is dropped on restore.
 *
 * Threads: queue_notify runs under the transport's lock (the struct device
 * lock on vCPU threads; the event loop takes the same lock for the stats
 * timer and the control socket's calls).
 */
#include "devices/virtio_balloon.h"

#include <endian.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio_pci.h"
#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/log.h"

#define BALLOON_QUEUE_SIZE  128
#define BALLOON_NUM_QUEUES  4
#define BALLOON_CONFIG_SIZE 8        /* num_pages, actual */
#define BALLOON_STATE_VERSION 1
#define BALLOON_STAT_BYTES  10       /* le16 tag, le64 val */

enum bq_role { BQ_NONE = 0, BQ_INFLATE, BQ_DEFLATE, BQ_STATS, BQ_REPORT };

struct balloon_counters {
	uint64_t inflated;               /* good PFNs the guest gave */
	uint64_t deflated;               /* good PFNs it took back */
	uint64_t bad_pfns;               /* PFNs (or reported ranges) outside RAM */
	uint64_t released_bytes;         /* bytes given back to the host */
	uint64_t discard_errors;         /* ranges the host would not release */
	uint64_t reports;                /* free page reports */
	uint64_t reported_bytes;         /* bytes in them, released or not */
	uint64_t stats_updates;          /* statistics buffers received */
};
#define BALLOON_NCOUNTERS 8

struct balloon {
	const struct guest_mem *mem;
	struct device *dev;              /* virtio-pci: its device, else NULL */
	struct virtio_device *vdev;
	pthread_mutex_t *lock;           /* the transport's lock (for the timer) */
	struct eventloop *loop;          /* watching timer_fd, or NULL */
	int timer_fd;
	uint32_t stats_s;
	uint32_t num_pages;              /* the target, set by the host */
	uint32_t actual;                 /* written by the driver */
	uint64_t balloon_pages;          /* inflated minus deflated, since the reset */
	uint64_t ram_pages;
	struct balloon_counters c;
	uint32_t stats_mask;             /* tags seen */
	uint64_t stats[VIRTIO_BALLOON_NSTATS];
	uint64_t stats_ns;               /* when the last buffer came (monotonic) */
	struct virtq_elem *elem;         /* scratch for inflate/deflate/report */
	struct virtq_elem *held;         /* the statistics buffer, when held */
	bool have_held;
};

static const char *const stat_names[VIRTIO_BALLOON_NSTATS] = {
	"swap_in", "swap_out", "major_faults", "minor_faults", "free_memory",
	"total_memory", "available_memory", "disk_caches", "hugetlb_allocations",
	"hugetlb_failures", "oom_kills", "alloc_stalls", "async_scans", "direct_scans",
	"async_reclaims", "direct_reclaims",
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static enum bq_role balloon_role(const struct virtio_device *vdev, uint16_t qidx)
{
	bool stats = virtio_has_feature(vdev, VIRTIO_BALLOON_F_STATS_VQ);
	bool report = virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_REPORTING);

	switch (qidx) {
	case 0: return BQ_INFLATE;
	case 1: return BQ_DEFLATE;
	case 2: return stats ? BQ_STATS : report ? BQ_REPORT : BQ_NONE;
	case 3: return stats && report ? BQ_REPORT : BQ_NONE;
	default: return BQ_NONE;
	}
}

static int balloon_queue_of(const struct virtio_device *vdev, enum bq_role role)
{
	for (uint16_t q = 0; q < BALLOON_NUM_QUEUES; q++)
		if (balloon_role(vdev, q) == role)
			return q;
	return -1;
}

/* ---- releasing memory ---- */

/* A run of host-contiguous pages waiting to be released. */
struct run {
	uint8_t *p;
	uint64_t len;
};

static void run_flush(struct balloon *b, struct run *r)
{
	if (!r->len)
		return;
	if (guest_mem_discard(b->mem, r->p, r->len) == 0)
		b->c.released_bytes += r->len;
	else
		b->c.discard_errors++;
	r->len = 0;
}

static void run_add(struct balloon *b, struct run *r, uint8_t *p, uint64_t len)
{
	if (r->len && r->p + r->len == p) {
		r->len += len;
		return;
	}
	run_flush(b, r);
	r->p = p;
	r->len = len;
}

/* Sort up to 256 PFNs in place.  Not qsort: glibc's asks sysconf for the
 * machine's memory on its first large array (the sysinfo system call,
 * which the VMM's seccomp filter kills).  Shell sort with Ciura's gaps, no
 * allocation; a few thousand comparisons per 1 MiB the guest balloons. */
static void pfn_sort(uint32_t *a, size_t n)
{
	static const size_t gaps[] = { 132, 57, 23, 10, 4, 1 };

	for (size_t g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++)
		for (size_t i = gaps[g]; i < n; i++) {
			uint32_t v = a[i];
			size_t j = i;

			for (; j >= gaps[g] && a[j - gaps[g]] > v; j -= gaps[g])
				a[j] = a[j - gaps[g]];
			a[j] = v;
		}
}

/* The inflate or deflate queue: arrays of le32 PFNs.  Each chunk of up to
 * 256 PFNs (Linux's driver sends one such array per buffer) is sorted
 * before its pages are released, so that neighbours go in one punched hole:
 * Linux hands out the pages it balloons mostly in descending order, and a
 * hole per 4 KiB page cost a system call and a KVM MMU invalidation each
 * (bench/balloon.sh).  The order of a buffer's PFNs means nothing to the
 * device; a PFN given twice is counted twice, as before. */
static void balloon_pfns(struct balloon *b, struct virtio_device *vdev, struct virtqueue *vq,
			 bool inflate)
{
	while (!vdev->broken && virtio_queue_pop(vdev, vq, b->elem) == 1) {
		uint32_t pfns[256];
		uint64_t total = b->elem->out_len / 4;
		struct run run = { 0 };

		if (b->elem->out_len % 4)
			b->c.bad_pfns++;             /* a torn PFN at the end */
		for (uint64_t done = 0; done < total;) {
			size_t n = total - done < 256 ? (size_t)(total - done) : 256;

			n = virtq_elem_read(b->elem, (size_t)(done * 4), pfns, n * 4) / 4;
			if (!n)
				break;
			for (size_t i = 0; i < n; i++)
				pfns[i] = le32toh(pfns[i]);
			if (inflate)
				pfn_sort(pfns, n);
			for (size_t i = 0; i < n; i++) {
				uint64_t gpa = (uint64_t)pfns[i] * VIRTIO_BALLOON_PAGE;
				uint8_t *p = guest_mem_ptr(b->mem, gpa, VIRTIO_BALLOON_PAGE);

				if (!p) {
					b->c.bad_pfns++;
					continue;
				}
				if (!inflate) {
					b->c.deflated++;
					if (b->balloon_pages)
						b->balloon_pages--;
					continue;
				}
				if (b->balloon_pages >= b->ram_pages) {
					run_flush(b, &run);
					virtio_mark_broken(vdev, "balloon: the driver inflated more "
							   "pages than the VM has (%llu)",
							   (unsigned long long)b->ram_pages);
					return;
				}
				b->c.inflated++;
				b->balloon_pages++;
				run_add(b, &run, p, VIRTIO_BALLOON_PAGE);
			}
			done += n;
		}
		run_flush(b, &run);
		virtio_queue_fill(vdev, vq, b->elem, 0);
	}
	virtio_queue_flush(vdev, vq);
}

/* The reporting queue: each device-writable buffer is a free range. */
static void balloon_report(struct balloon *b, struct virtio_device *vdev, struct virtqueue *vq)
{
	while (!vdev->broken && virtio_queue_pop(vdev, vq, b->elem) == 1) {
		struct run run = { 0 };

		b->c.reports++;
		for (unsigned i = 0; i < b->elem->in_num; i++) {
			const struct iovec *v = &virtq_elem_in(b->elem)[i];
			uintptr_t a = (uintptr_t)v->iov_base, end = a + v->iov_len;
			uintptr_t pa = (a + VIRTIO_BALLOON_PAGE - 1) & ~(uintptr_t)(VIRTIO_BALLOON_PAGE - 1);
			uintptr_t pend = end & ~(uintptr_t)(VIRTIO_BALLOON_PAGE - 1);

			b->c.reported_bytes += v->iov_len;
			if (pend > pa)
				run_add(b, &run, (uint8_t *)pa, pend - pa);
		}
		if (b->elem->out_num)       /* a report is device-writable buffers only */
			b->c.bad_pfns++;
		run_flush(b, &run);
		virtio_queue_fill(vdev, vq, b->elem, 0);
	}
	virtio_queue_flush(vdev, vq);
}

/* ---- statistics ---- */

static void balloon_stats_parse(struct balloon *b, struct virtq_elem *elem)
{
	uint8_t buf[64 * BALLOON_STAT_BYTES];
	size_t n = virtq_elem_read(elem, 0, buf, sizeof(buf)) / BALLOON_STAT_BYTES;

	for (size_t i = 0; i < n; i++) {
		uint16_t tag;
		uint64_t val;

		memcpy(&tag, buf + i * BALLOON_STAT_BYTES, 2);
		memcpy(&val, buf + i * BALLOON_STAT_BYTES + 2, 8);
		tag = le16toh(tag);
		if (tag < VIRTIO_BALLOON_NSTATS) {
			b->stats[tag] = le64toh(val);
			b->stats_mask |= 1u << tag;
		}
	}
	b->c.stats_updates++;
	b->stats_ns = mono_ns();
}

static void balloon_stats_queue(struct balloon *b, struct virtio_device *vdev, struct virtqueue *vq)
{
	if (vdev->broken)
		return;
	if (b->have_held) {
		/* The driver may have only one buffer out (5.5.6.3): one more is
		 * a driver that floods the queue. */
		if (virtq_has_avail(vq))
			virtio_mark_broken(vdev, "balloon: a second statistics buffer while "
					   "the device holds one");
		return;
	}
	if (virtio_queue_pop(vdev, vq, b->held) != 1)
		return;
	balloon_stats_parse(b, b->held);
	b->have_held = true;
}

bool virtio_balloon_request_stats(struct virtio_device *vdev)
{
	struct balloon *b = vdev->priv;
	int q = balloon_queue_of(vdev, BQ_STATS);

	if (!b->have_held || q < 0 || vdev->broken || !(vdev->status & VIRTIO_STATUS_DRIVER_OK) ||
	    !vdev->queues[q].started)
		return false;
	b->have_held = false;
	virtio_queue_complete(vdev, &vdev->queues[q], b->held, 0);
	return true;
}

static int balloon_on_timer(int fd, uint32_t events, void *opaque)
{
	struct balloon *b = opaque;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 || !b->lock || !b->vdev)
		return 0;
	pthread_mutex_lock(b->lock);
	if (!(b->dev && b->dev->broken))
		virtio_balloon_request_stats(b->vdev);
	pthread_mutex_unlock(b->lock);
	return 0;
}

/* ---- the virtio device ---- */

static void balloon_queue_notify(struct virtio_device *vdev, uint16_t qidx)
{
	struct balloon *b = vdev->priv;
	struct virtqueue *vq = &vdev->queues[qidx];

	b->vdev = vdev;
	switch (balloon_role(vdev, qidx)) {
	case BQ_INFLATE: balloon_pfns(b, vdev, vq, true); break;
	case BQ_DEFLATE: balloon_pfns(b, vdev, vq, false); break;
	case BQ_STATS: balloon_stats_queue(b, vdev, vq); break;
	case BQ_REPORT: balloon_report(b, vdev, vq); break;
	case BQ_NONE: break;
	}
}

static uint64_t balloon_features(struct virtio_device *vdev)
{
	return VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ) | VIRTIO_BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM) |
	       VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_REPORTING);
}

static void balloon_config_read(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
	struct balloon *b = vdev->priv;
	uint32_t cfg[2] = { htole32(b->num_pages), htole32(b->actual) };

	memcpy(data, (uint8_t *)cfg + offset, len);
}

/* Only `actual` (bytes 4..7) is the driver's to write. */
static void balloon_config_write(struct virtio_device *vdev, uint32_t offset, const void *data,
				 uint32_t len)
{
	struct balloon *b = vdev->priv;
	uint32_t actual = htole32(b->actual);

	for (uint32_t i = 0; i < len; i++)
		if (offset + i >= 4 && offset + i < 8)
			((uint8_t *)&actual)[offset + i - 4] = ((const uint8_t *)data)[i];
	b->actual = le32toh(actual);
}

static int balloon_activate(struct virtio_device *vdev)
{
	((struct balloon *)vdev->priv)->vdev = vdev;
	return 0;
}

/* The driver starts again with an empty balloon; the target stays. */
static void balloon_reset(struct virtio_device *vdev)
{
	struct balloon *b = vdev->priv;

	b->actual = 0;
	b->balloon_pages = 0;
	b->have_held = false;
}

static void balloon_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct balloon *b = vdev->priv;
	const uint64_t *c = (const uint64_t *)&b->c;

	state_put_u32(w, b->num_pages);
	state_put_u32(w, b->actual);
	state_put_u64(w, b->balloon_pages);
	for (int i = 0; i < BALLOON_NCOUNTERS; i++)
		state_put_u64(w, c[i]);
	state_put_u32(w, b->stats_mask);
	for (int i = 0; i < VIRTIO_BALLOON_NSTATS; i++)
		state_put_u64(w, b->stats[i]);
	state_put_u8(w, b->have_held);
	if (b->have_held)
		virtq_elem_save(b->held, w);
}

static int balloon_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *r)
{
	struct balloon *b = vdev->priv;
	uint64_t *c = (uint64_t *)&b->c;
	int q;

	b->vdev = vdev;
	b->num_pages = state_get_u32(r);
	b->actual = state_get_u32(r);
	b->balloon_pages = state_get_u64(r);
	for (int i = 0; i < BALLOON_NCOUNTERS; i++)
		c[i] = state_get_u64(r);
	b->stats_mask = state_get_u32(r);
	for (int i = 0; i < VIRTIO_BALLOON_NSTATS; i++)
		b->stats[i] = state_get_u64(r);
	b->have_held = state_get_u8(r);
	if (r->error || b->balloon_pages > b->ram_pages)
		return -1;
	b->stats_ns = b->stats_mask ? mono_ns() : 0;
	if (!b->have_held)
		return 0;
	q = balloon_queue_of(vdev, BQ_STATS);
	b->have_held = false;
	if (q >= 0 && (vdev->broken || !vdev->queues[q].started || vdev->queues[q].broken)) {
		/* A broken device never gives the buffer back (a reset forgets
		 * it), and its ring is not walked again: drop it.  (Found by
		 * fuzz_virtio_balloon: a guest that broke the device while it
		 * held one made its VM's snapshot unrestorable.) */
		uint8_t skip[7];        /* virtq_elem_save's bytes */

		state_get_bytes(r, skip, sizeof(skip));
		return r->error ? -1 : 0;
	}
	if (q < 0 || virtq_elem_restore(&vdev->queues[q], r, b->held))
		return -1;
	b->have_held = true;
	return 0;
}

static void balloon_metrics(struct virtio_device *vdev, const char *name, json_t *root)
{
	json_object_set_new(root, "balloon", virtio_balloon_vdev_info(vdev));
}

static void balloon_destroy(struct virtio_device *vdev)
{
	struct balloon *b = vdev->priv;

	if (!b)
		return;
	if (b->timer_fd >= 0) {
		if (b->loop)
			eventloop_del(b->loop, b->timer_fd);
		close(b->timer_fd);
	}
	free(b->elem);
	free(b->held);
	free(b);
	vdev->priv = NULL;
}

static const struct virtio_device_ops balloon_ops = {
	.device_id = VIRTIO_ID_BALLOON,
	.name = "virtio-balloon",
	.num_queues = BALLOON_NUM_QUEUES,
	.queue_max_size = BALLOON_QUEUE_SIZE,
	.config_size = BALLOON_CONFIG_SIZE,
	.state_version = BALLOON_STATE_VERSION,
	.features = balloon_features,
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.queue_notify = balloon_queue_notify,
	.activate = balloon_activate,
	.reset = balloon_reset,
	.save = balloon_save,
	.restore = balloon_restore,
	.metrics = balloon_metrics,
	.destroy = balloon_destroy,
};

const struct virtio_device_ops *virtio_balloon_ops(void)
{
	return &balloon_ops;
}

void virtio_balloon_vdev_set_target(struct virtio_device *vdev, uint32_t pages)
{
	struct balloon *b = vdev->priv;

	if (b->num_pages == pages)
		return;
	b->num_pages = pages;
	virtio_notify_config(vdev);
}

json_t *virtio_balloon_vdev_info(struct virtio_device *vdev)
{
	struct balloon *b = vdev->priv;
	json_t *stats = json_object(), *o;

	for (int i = 0; i < VIRTIO_BALLOON_NSTATS; i++)
		if (b->stats_mask & (1u << i))
			json_object_set_new(stats, stat_names[i], json_integer((json_int_t)b->stats[i]));
	o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:o}",
		      "target_bytes", (json_int_t)b->num_pages * VIRTIO_BALLOON_PAGE,
		      "actual_bytes", (json_int_t)b->actual * VIRTIO_BALLOON_PAGE,
		      "inflated_pages", (json_int_t)b->c.inflated,
		      "deflated_pages", (json_int_t)b->c.deflated,
		      "bad_pfns", (json_int_t)b->c.bad_pfns,
		      "released_bytes", (json_int_t)b->c.released_bytes,
		      "discard_errors", (json_int_t)b->c.discard_errors,
		      "reports", (json_int_t)b->c.reports,
		      "reported_bytes", (json_int_t)b->c.reported_bytes,
		      "stats_updates", (json_int_t)b->c.stats_updates,
		      "stats_age_ms", b->stats_ns ? (json_int_t)((mono_ns() - b->stats_ns) / 1000000) : -1,
		      "stats_queue", virtio_has_feature(vdev, VIRTIO_BALLOON_F_STATS_VQ),
		      "reporting", virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_REPORTING),
		      "deflate_on_oom", virtio_has_feature(vdev, VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
		      "stats", stats);
	if (o)
		json_object_set_new(o, "broken", json_boolean(vdev->broken));
	return o;
}

struct balloon *virtio_balloon_new(const struct device_host *host, uint32_t stats_s,
				   struct error *e)
{
	struct balloon *b = calloc(1, sizeof(*b));

	if (b) {
		b->elem = malloc(sizeof(*b->elem));
		b->held = malloc(sizeof(*b->held));
	}
	if (!b || !b->elem || !b->held) {
		if (b) {
			free(b->elem);
			free(b->held);
		}
		free(b);
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	b->mem = host->mem;
	b->ram_pages = host->mem->size / VIRTIO_BALLOON_PAGE;
	b->stats_s = stats_s ? stats_s : VIRTIO_BALLOON_DEFAULT_STATS_S;
	b->timer_fd = -1;
	if (host->loop) {
		struct itimerspec its = { .it_value = { .tv_sec = b->stats_s },
					  .it_interval = { .tv_sec = b->stats_s } };

		b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (b->timer_fd < 0 || timerfd_settime(b->timer_fd, 0, &its, NULL) < 0 ||
		    eventloop_add(host->loop, b->timer_fd, EPOLLIN, balloon_on_timer, b) < 0)
			log_warn("virtio-balloon: no statistics timer; the guest's numbers "
				 "will not be refreshed");
		else
			b->loop = host->loop;
	}
	return b;
}

int virtio_balloon_create(const struct device_host *host, uint32_t stats_s, struct error *e)
{
	struct balloon *b = virtio_balloon_new(host, stats_s, e);

	if (!b)
		return -1;
	if (virtio_pci_create(host, &balloon_ops, b, "virtio-balloon0", VIRTIO_PCI_TRANSITIONAL,
			      &b->dev, e))
		return -1;
	b->vdev = virtio_pci_vdev(b->dev);
	b->lock = &b->dev->lock;
	return 0;
}

static struct virtio_device *balloon_vdev(struct device *d)
{
	struct virtio_device *vdev = virtio_pci_vdev(d);

	return vdev && vdev->ops == &balloon_ops && vdev->priv ? vdev : NULL;
}

int virtio_balloon_set_target(struct device *d, uint64_t bytes)
{
	struct virtio_device *vdev = balloon_vdev(d);
	uint64_t pages = bytes / VIRTIO_BALLOON_PAGE;

	if (!vdev)
		return -1;
	pthread_mutex_lock(&d->lock);
	virtio_balloon_vdev_set_target(vdev, pages > UINT32_MAX ? UINT32_MAX : (uint32_t)pages);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

json_t *virtio_balloon_info(struct device *d)
{
	struct virtio_device *vdev = balloon_vdev(d);
	json_t *o;

	if (!vdev)
		return NULL;
	pthread_mutex_lock(&d->lock);
	o = virtio_balloon_vdev_info(vdev);
	pthread_mutex_unlock(&d->lock);
	return o;
}
