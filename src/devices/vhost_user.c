/*
 * vhost_user.c - a vhost-user back end for any Shoal virtio device model
 * (see vhost_user.h; the protocol is QEMU's docs/interop/vhost-user.rst).
 *
 * What it is for: another VMM (QEMU, Cloud Hypervisor) runs the guest and
 * emulates the virtio PCI function; the data path (the rings and the
 * buffers they point to) is ours.  The front end shares the guest's RAM
 * with us as file descriptors we mmap, tells us where each ring is, and
 * hands us two eventfds per ring: the guest's kicks arrive on one, and we
 * raise the guest's interrupt by writing the other.
 *
 * A session, as QEMU drives it, and what each step does here:
 *
 *   front end (QEMU)                     back end (this file)
 *   ----------------                     --------------------
 *   connect ───────────────────────────> accept; one front end at a time
 *   SET_OWNER
 *   GET_FEATURES ──────────────────────> device + core bits | PROTOCOL_FEATURES
 *   GET_PROTOCOL_FEATURES ─────────────> MQ REPLY_ACK CONFIG RESET_DEVICE MEM_SLOTS
 *   SET_PROTOCOL_FEATURES
 *   GET_QUEUE_NUM ─────────────────────> ops->num_queues
 *   SET_VRING_CALL (each ring)           call fds kept per ring
 *   GET_CONFIG ────────────────────────> virtio_config_read (blk: capacity, ...)
 *        ... the guest's driver sets DRIVER_OK in the front end ...
 *   SET_FEATURES ──────────────────────> virtio_reset, then ACKNOWLEDGE|DRIVER,
 *                                        virtio_set_features, FEATURES_OK,
 *                                        DRIVER_OK: the device is live (no
 *                                        status register in this protocol)
 *   SET_MEM_TABLE + fds                  mmap each fd; guest_mem of the regions
 *     (or ADD_MEM_REG per region)        (guest_mem_add_region), user addresses
 *                                        kept to translate ring addresses
 *   SET_VRING_NUM / BASE / ADDR          kept in struct vu_vring; ADDR is in
 *                                        front-end virtual addresses, checked
 *                                        against the table now, translated to
 *                                        guest-physical when the ring runs
 *   SET_VRING_KICK + fd ───────────────> ring started; kick fd on the loop
 *   SET_VRING_ENABLE 1 ────────────────> ring enabled
 *        started && enabled && DRIVER_OK: the ring RUNS: the virtqueue gets
 *        size, addresses and indices and virtio_queue_set_ready(q, true)
 *   (kick) ────────────────────────────> virtio_queue_notify -> model
 *   <───────────────────────────────────  call fd written from notify_queue
 *   GET_VRING_BASE ────────────────────> drain the model, ring stopped, kick
 *                                        fd closed; reply the avail index
 *   disconnect ────────────────────────> every ring halted, device reset,
 *                                        memory unmapped; wait for the next
 *                                        connection (QEMU's reconnect=N)
 *
 * REPLY_ACK: a message with NEED_REPLY (and REPLY_ACK negotiated) that has
 * no reply of its own gets a u64: 0 done, 1 refused.
 *
 * Ring states: the spec's stopped / started-but-disabled / started-and-
 * enabled.  A disabled ring is not served at all (its buffers wait): the
 * spec allows a net device to drop TX there, never to take RX; waiting is
 * within both.  Without PROTOCOL_FEATURES a started ring is enabled.
 *
 * Ring indices across a stop (struct vu_vring.base): split rings carry the
 * next available index; the used index is read back from the used ring
 * when the ring runs again.  Packed rings follow QEMU: bits 0-14 the next
 * available slot and bit 15 its wrap counter, bits 16-30 the next used
 * slot and bit 31 its wrap counter (all-zero high bits: used = avail).
 *
 * Threads and locking: the listening socket, the connection and every
 * kick fd are on the event loop thread; everything there runs with s->lock
 * held, and so do the model's own threads when they call the core.  A
 * model that completes requests on its own thread gives us `drain`, and we
 * call it before a ring stops or a mapping goes away, so no request holds a
 * pointer into memory we unmap.
 *
 * Invariants: s->rings[i].running implies the virtqueue is started against
 * s->mem as it is now; every fd a message carried is either owned by a
 * ring or a mapping, or closed before the handler returns; nothing but the
 * front end's memory fds is mapped, each within the file's size.
 *
 * Not done: dirty logging (VHOST_F_LOG_ALL, so QEMU blocks migration),
 * in-flight tracking (INFLIGHT_SHMFD), a back-end request channel (config
 * change messages), IOMMU, in-band notifications, polling rings (no kick
 * fd).  A front end that shrinks a memory file under us can still make an
 * access fault (SIGBUS); QEMU does not.
 */
#include "devices/vhost_user.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/eventloop.h"
#include "devices/device_host.h"

#define VU_RECV_TIMEOUT_S 5              /* a payload must follow its header; replies must go */

/* One mapped region of the front end's memory table. */
struct vu_map {
	struct vu_mem_region r;          /* as the front end sent it */
	void *base;                      /* our mapping (page-aligned start) */
	size_t len;                      /* its length */
	uint8_t *hva;                    /* host address of r.gpa */
};

/* One ring as the protocol sees it; the virtqueue itself is in vdev. */
struct vu_vring {
	struct vu_server *s;
	uint16_t index;
	uint16_t num;                    /* SET_VRING_NUM, 0: not yet */
	uint32_t base;                   /* where the ring (re)starts, see above */
	bool addr_set;                   /* SET_VRING_ADDR seen */
	uint64_t desc_va, avail_va, used_va; /* front-end virtual addresses */
	int kick_fd, call_fd, err_fd;    /* -1: none */
	bool started;                    /* kick fd given, no GET_VRING_BASE since */
	bool enabled;                    /* SET_VRING_ENABLE 1 */
	bool running;                    /* the virtqueue is started in the core */
};

struct vu_server {
	struct device_host host;         /* what the model sees: loop, mem */
	struct guest_mem mem;            /* the front end's regions, mapped */
	struct eventloop *loop;
	pthread_mutex_t lock;            /* around every call into the device */
	struct virtio_device vdev;
	struct vu_model model;
	bool have_model;
	struct vu_vring *rings;          /* vdev.num_queues of them */

	int listen_fd;                   /* -1: none */
	char *path;                      /* socket file we created */
	int conn_fd;                     /* the front end, -1: none */
	int model_fd;                    /* the model's host-side fd on the loop, -1: none */
	bool loop_running;

	uint64_t features;               /* SET_FEATURES, bit 30 included */
	uint64_t protocol;               /* SET_PROTOCOL_FEATURES */
	int nmaps;
	struct vu_map maps[VU_MAX_MEM_REGIONS];
	struct vu_msg msg;               /* receive buffer (loop thread) */
	struct vu_stats stats;
	struct vu_stats at_connect;      /* stats when this front end came */
	bool hinted_size;                /* the small-ring hint was logged (per connection) */
};

/* ---- small helpers ---- */

static const char *vu_name(const struct vu_server *s)
{
	return s->vdev.name[0] ? s->vdev.name : "vhost-user";
}

static void vu_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Log why a message is refused and count it; returns -1. */
static int vu_refuse(struct vu_server *s, const struct vu_msg *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int vu_refuse(struct vu_server *s, const struct vu_msg *m, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->stats.refused++;
	log_warn("%s: refused request %u: %s", vu_name(s), m->hdr.request, why);
	return -1;
}

static bool vu_has_protocol(const struct vu_server *s, unsigned int bit)
{
	return (s->protocol >> bit) & 1;
}

/* Send a reply to `m` with `len` bytes of payload; errors show up as a
 * disconnect on the next read. */
static void vu_reply(struct vu_server *s, const struct vu_msg *m, const void *payload,
		     uint32_t len)
{
	struct vu_hdr h = {
		.request = m->hdr.request,
		.flags = VHOST_USER_VERSION | VHOST_USER_REPLY,
		.size = len,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (s->conn_fd >= 0 && sendmsg(s->conn_fd, &mh, MSG_NOSIGNAL) < 0)
		log_debug("%s: reply to request %u: %m", vu_name(s), m->hdr.request);
}

static void vu_reply_u64(struct vu_server *s, const struct vu_msg *m, uint64_t v)
{
	vu_reply(s, m, &v, sizeof(v));
}

/* The ring a state/addr message names, or NULL (refused). */
static struct vu_vring *vu_ring(struct vu_server *s, const struct vu_msg *m, uint32_t index)
{
	if (index >= s->vdev.num_queues) {
		vu_refuse(s, m, "ring %u out of range (%u rings)", index, s->vdev.num_queues);
		return NULL;
	}
	return &s->rings[index];
}

/* ---- memory ---- */

/* Front-end virtual address -> guest-physical through the table; 0 or -1. */
static int vu_va_to_gpa(const struct vu_server *s, uint64_t va, uint64_t *gpa)
{
	for (int i = 0; i < s->nmaps; i++) {
		const struct vu_mem_region *r = &s->maps[i].r;

		if (va >= r->uva && va - r->uva < r->size) {
			*gpa = r->gpa + (va - r->uva);
			return 0;
		}
	}
	return -1;
}

/* Rebuild s->mem from the mapped regions (in place: the virtqueues
 * keep pointing at it). */
static void vu_mem_rebuild(struct vu_server *s)
{
	struct guest_mem *mem = &s->mem;

	guest_mem_init_external(mem);
	for (int i = 0; i < s->nmaps; i++)
		if (guest_mem_add_region(mem, s->maps[i].r.gpa, s->maps[i].r.size, s->maps[i].hva))
			log_error("%s: region %d not added (checked before)", vu_name(s), i);
}

/* Does `r` overlap, in guest-physical or front-end virtual space, one of
 * the first `n` entries of `maps`? */
static bool vu_region_overlaps(const struct vu_mem_region *r, const struct vu_map *maps, int n)
{
	for (int i = 0; i < n; i++) {
		const struct vu_mem_region *o = &maps[i].r;

		if (r->gpa < o->gpa + o->size && o->gpa < r->gpa + r->size)
			return true;
		if (r->uva < o->uva + o->size && o->uva < r->uva + r->size)
			return true;
	}
	return false;
}

/* Check one region's numbers and map it from `fd` into `map`; 0 or -1
 * with `why` filled.  The fd is not closed here. */
static int vu_map_region(const struct vu_mem_region *r, int fd, struct vu_map *map,
			 char *why, size_t whylen)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), start, delta;
	struct stat st;
	void *p;

	if (!r->size || r->gpa + r->size < r->gpa || r->uva + r->size < r->uva ||
	    r->mmap_offset + r->size < r->mmap_offset || r->size > SIZE_MAX / 2) {
		snprintf(why, whylen, "region gpa %#llx size %#llx wraps or is empty",
			 (unsigned long long)r->gpa, (unsigned long long)r->size);
		return -1;
	}
	if (fstat(fd, &st) < 0 || (S_ISREG(st.st_mode) &&
				   (uint64_t)st.st_size < r->mmap_offset + r->size)) {
		snprintf(why, whylen, "region gpa %#llx: fd is smaller than offset %#llx + size %#llx",
			 (unsigned long long)r->gpa, (unsigned long long)r->mmap_offset,
			 (unsigned long long)r->size);
		return -1;
	}
	start = r->mmap_offset & ~(page - 1);
	delta = r->mmap_offset - start;
	p = mmap(NULL, (size_t)(delta + r->size), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_NORESERVE, fd, (off_t)start);
	if (p == MAP_FAILED) {
		snprintf(why, whylen, "region gpa %#llx: mmap: %s", (unsigned long long)r->gpa,
			 strerror(errno));
		return -1;
	}
	*map = (struct vu_map){ .r = *r, .base = p, .len = (size_t)(delta + r->size),
				.hva = (uint8_t *)p + delta };
	return 0;
}

static void vu_unmap(struct vu_map *map)
{
	if (map->base)
		munmap(map->base, map->len);
	memset(map, 0, sizeof(*map));
}

/* ---- rings ---- */

/* Should ring `v` be running now? */
static bool vu_ring_wanted(const struct vu_server *s, const struct vu_vring *v)
{
	bool enabled = v->enabled || !(s->features & VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES));

	return v->started && enabled && v->addr_set && v->num &&
	       (s->vdev.status & VIRTIO_STATUS_DRIVER_OK) && !s->vdev.broken;
}

/* Put the ring's indices from v->base into the (reset) virtqueue. */
static void vu_ring_load_base(struct vu_server *s, struct vu_vring *v, struct virtqueue *vq)
{
	const uint16_t *used_idx;

	if (virtio_has_feature(&s->vdev, VIRTIO_F_RING_PACKED)) {
		uint32_t hi = v->base >> 16;

		vq->last_avail = v->base & 0x7fff;
		vq->avail_wrap = (v->base >> 15) & 1;
		vq->used_idx = hi ? hi & 0x7fff : vq->last_avail;
		vq->used_wrap = hi ? hi >> 15 : vq->avail_wrap;
		return;
	}
	vq->last_avail = (uint16_t)v->base;
	used_idx = guest_mem_ptr(&s->mem, vq->used_gpa + 2, 2);
	vq->used_idx = used_idx ? __atomic_load_n(used_idx, __ATOMIC_ACQUIRE) : vq->last_avail;
	vq->shadow_used = vq->used_idx;
}

/* Give the virtqueue the ring's configuration and start it; serve what
 * is already queued.  0, or -1 (addresses not in the table; the ring is
 * left halted and the device broken). */
static int vu_ring_run(struct vu_server *s, struct vu_vring *v)
{
	struct virtqueue *vq = &s->vdev.queues[v->index];
	uint64_t desc, avail, used;

	if (vu_va_to_gpa(s, v->desc_va, &desc) || vu_va_to_gpa(s, v->avail_va, &avail) ||
	    vu_va_to_gpa(s, v->used_va, &used)) {
		virtio_mark_broken(&s->vdev, "ring %u: addresses not in the memory table", v->index);
		return -1;
	}
	virtq_reset(vq, v->num);
	vq->desc_gpa = desc;
	vq->avail_gpa = avail;
	vq->used_gpa = used;
	vu_ring_load_base(s, v, vq);
	if (virtio_queue_set_ready(&s->vdev, v->index, true))
		return -1;
	v->running = true;
	virtio_queue_notify(&s->vdev, v->index);
	return 0;
}

/* Stop serving the ring: let the model finish what it holds, keep the
 * indices in v->base, stop the virtqueue. */
static void vu_ring_halt(struct vu_server *s, struct vu_vring *v)
{
	struct virtqueue *vq = &s->vdev.queues[v->index];

	if (!v->running)
		return;
	if (s->model.drain)
		s->model.drain(s->model.priv);
	if (vq->packed)
		v->base = (uint32_t)(vq->last_avail & 0x7fff) | (uint32_t)vq->avail_wrap << 15 |
			  (uint32_t)(vq->used_idx & 0x7fff) << 16 | (uint32_t)vq->used_wrap << 31;
	else
		v->base = vq->last_avail;
	virtio_queue_set_ready(&s->vdev, v->index, false);
	v->running = false;
}

/* Bring ring `v` to the state its flags ask for. */
static void vu_ring_update(struct vu_server *s, struct vu_vring *v)
{
	bool want = vu_ring_wanted(s, v);

	if (want && !v->running)
		vu_ring_run(s, v);
	else if (!want && v->running)
		vu_ring_halt(s, v);
}

static void vu_rings_update(struct vu_server *s)
{
	for (uint16_t i = 0; i < s->vdev.num_queues; i++)
		vu_ring_update(s, &s->rings[i]);
}

/* Halt every running ring; the caller runs them again with
 * vu_rings_update once its change is made. */
static void vu_rings_halt(struct vu_server *s)
{
	for (uint16_t i = 0; i < s->vdev.num_queues; i++)
		vu_ring_halt(s, &s->rings[i]);
}

static bool vu_any_running(const struct vu_server *s)
{
	for (uint16_t i = 0; i < s->vdev.num_queues; i++)
		if (s->rings[i].running)
			return true;
	return false;
}

/* A kick arrived on a ring's eventfd (loop thread). */
static int vu_on_kick(int fd, uint32_t events, void *opaque)
{
	struct vu_vring *v = opaque;
	struct vu_server *s = v->s;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint64_t n;

	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN) && read(fd, &n, sizeof(n)) < 0)
		log_debug("%s: kick fd: %m", vu_name(s));
	pthread_mutex_lock(&s->lock);
	if (v->kick_fd == fd && v->running) {
		s->stats.kicks++;
		virtio_queue_notify(&s->vdev, v->index);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void vu_ring_set_kick(struct vu_server *s, struct vu_vring *v, int fd)
{
	if (v->kick_fd >= 0) {
		eventloop_del(s->loop, v->kick_fd);
		vu_close(&v->kick_fd);
	}
	v->kick_fd = fd;
}

/* Forget everything about ring `v` (it is halted first). */
static void vu_ring_clear(struct vu_server *s, struct vu_vring *v)
{
	vu_ring_halt(s, v);
	vu_ring_set_kick(s, v, -1);
	vu_close(&v->call_fd);
	vu_close(&v->err_fd);
	*v = (struct vu_vring){ .s = s, .index = v->index, .kick_fd = -1, .call_fd = -1,
				.err_fd = -1 };
}

/* Raise the guest's interrupt for queue `qidx` (core callback, lock held). */
static void vu_notify_queue(struct virtio_device *dev, uint16_t qidx)
{
	struct vu_server *s = dev->transport;
	uint64_t one = 1;

	if (qidx >= dev->num_queues || s->rings[qidx].call_fd < 0)
		return;
	s->stats.calls++;
	if (write(s->rings[qidx].call_fd, &one, sizeof(one)) < 0)
		log_debug("%s: call fd of ring %u: %m", vu_name(s), qidx);
}

/* Config change (core callback): without a back-end channel the front end
 * cannot be told; a broken device signals every ring's error fd. */
static void vu_notify_config(struct virtio_device *dev)
{
	struct vu_server *s = dev->transport;
	uint64_t one = 1;

	if (!dev->broken)
		return;
	for (uint16_t i = 0; i < dev->num_queues; i++)
		if (s->rings[i].err_fd >= 0 && write(s->rings[i].err_fd, &one, sizeof(one)) < 0)
			log_debug("%s: error fd of ring %u: %m", vu_name(s), i);
}

/* ---- device state ---- */

/* Back to the state of a fresh connection's device: rings forgotten,
 * device reset, features cleared (memory and protocol features kept). */
static void vu_reset_device(struct vu_server *s)
{
	for (uint16_t i = 0; i < s->vdev.num_queues; i++)
		vu_ring_clear(s, &s->rings[i]);
	virtio_reset(&s->vdev);
	s->features = 0;
}

/* Negotiate `f` with the core as a driver would, ending at DRIVER_OK. */
static int vu_negotiate(struct vu_server *s, const struct vu_msg *m, uint64_t f)
{
	struct virtio_device *d = &s->vdev;
	uint64_t vf = f & ~VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	uint8_t st;

	if (vu_any_running(s)) {
		if (vf != d->guest_features)
			return vu_refuse(s, m, "features changed to %#llx while rings run",
					 (unsigned long long)vf);
		s->features = f;
		return 0;
	}
	virtio_reset(d);
	d->legacy = !(vf & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	if (virtio_set_features(d, vf)) {
		virtio_reset(d);
		return vu_refuse(s, m, "features %#llx were not offered",
				 (unsigned long long)(vf & ~d->host_features));
	}
	st = virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK);
	if (!d->legacy && !(st & VIRTIO_STATUS_FEATURES_OK)) {
		virtio_reset(d);
		return vu_refuse(s, m, "the device refused features %#llx", (unsigned long long)vf);
	}
	virtio_set_status(d, st | VIRTIO_STATUS_DRIVER_OK);
	s->features = f;
	vu_rings_update(s);
	return 0;
}

/* ---- message handlers: one per request, in request order ---- */

static int vu_get_features(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reply_u64(s, m, s->vdev.host_features | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES));
	return 0;
}

static int vu_set_features(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	return vu_negotiate(s, m, m->p.u64);
}

static int vu_set_owner(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	return 0;
}

static int vu_reset_owner(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reset_device(s);
	return 0;
}

/* Replace the whole table with `maps` (already mapped): rings halted
 * around the change and run again against the new table. */
static void vu_mem_install(struct vu_server *s, struct vu_map *maps, int n)
{
	vu_rings_halt(s);
	for (int i = 0; i < s->nmaps; i++)
		vu_unmap(&s->maps[i]);
	memcpy(s->maps, maps, sizeof(*maps) * (size_t)n);
	s->nmaps = n;
	vu_mem_rebuild(s);
	vu_rings_update(s);
}

static int vu_set_mem_table(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_map maps[VU_MAX_MEM_REGIONS];
	uint32_t n = m->p.mem.nregions;
	char why[160];

	if (n > VU_MAX_MEM_REGIONS || m->hdr.size < 8 + 32 * n)
		return vu_refuse(s, m, "%u regions in %u bytes", n, m->hdr.size);
	if ((uint32_t)nfds != n)
		return vu_refuse(s, m, "%u regions but %d fds", n, nfds);
	for (uint32_t i = 0; i < n; i++) {
		if (vu_region_overlaps(&m->p.mem.regions[i], maps, (int)i)) {
			snprintf(why, sizeof(why), "region %u overlaps another", i);
		} else if (vu_map_region(&m->p.mem.regions[i], fds[i], &maps[i], why, sizeof(why)) == 0) {
			vu_close(&fds[i]);
			continue;
		}
		while (i--)
			vu_unmap(&maps[i]);
		return vu_refuse(s, m, "%s", why);
	}
	vu_mem_install(s, maps, (int)n);
	return 0;
}

static int vu_set_vring_num(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_vring *v = vu_ring(s, m, m->p.state.index);

	if (!v)
		return -1;
	if (v->running)
		return vu_refuse(s, m, "ring %u is running", v->index);
	if (!m->p.state.num || m->p.state.num > s->vdev.ops->queue_max_size)
		return vu_refuse(s, m, "ring %u size %u (max %u)", v->index, m->p.state.num,
				 s->vdev.ops->queue_max_size);
	v->num = (uint16_t)m->p.state.num;
	if (v->num < s->vdev.ops->queue_max_size && !s->hinted_size) {
		s->hinted_size = true;
		log_info("%s: ring %u has %u entries, fewer than the device's %u; a driver that "
			 "sizes requests from the device's limits (virtio-blk seg_max) may be "
			 "refused; QEMU: queue-size=%u", vu_name(s), v->index, v->num,
			 s->vdev.ops->queue_max_size, s->vdev.ops->queue_max_size);
	}
	return 0;
}

static int vu_set_vring_addr(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_vring_addr *a = &m->p.addr;
	struct vu_vring *v = vu_ring(s, m, a->index);
	uint64_t gpa;

	if (!v)
		return -1;
	if (vu_va_to_gpa(s, a->desc, &gpa) || vu_va_to_gpa(s, a->avail, &gpa) ||
	    vu_va_to_gpa(s, a->used, &gpa))
		return vu_refuse(s, m, "ring %u addresses %#llx/%#llx/%#llx not in the memory table",
				 v->index, (unsigned long long)a->desc,
				 (unsigned long long)a->avail, (unsigned long long)a->used);
	vu_ring_halt(s, v);
	v->desc_va = a->desc;
	v->avail_va = a->avail;
	v->used_va = a->used;
	v->addr_set = true;
	vu_ring_update(s, v);
	return 0;
}

static int vu_set_vring_base(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_vring *v = vu_ring(s, m, m->p.state.index);

	if (!v)
		return -1;
	if (v->running)
		return vu_refuse(s, m, "ring %u is running", v->index);
	if (!virtio_has_feature(&s->vdev, VIRTIO_F_RING_PACKED) && m->p.state.num > 0xffff)
		return vu_refuse(s, m, "ring %u base %u", v->index, m->p.state.num);
	v->base = m->p.state.num;
	return 0;
}

/* Stop the ring and answer where it stopped. */
static int vu_get_vring_base(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_vring_state st = { .index = m->p.state.index };
	struct vu_vring *v = vu_ring(s, m, st.index);

	if (v) {
		vu_ring_halt(s, v);
		v->started = false;
		vu_ring_set_kick(s, v, -1);
		st.num = v->base;
	}
	vu_reply(s, m, &st, sizeof(st));
	return v ? 0 : -1;
}

/* The ring a KICK/CALL/ERR u64 names, with its fd checked; NULL refused. */
static struct vu_vring *vu_ring_fd_msg(struct vu_server *s, struct vu_msg *m, int nfds, int *fd)
{
	uint64_t u = m->p.u64;
	bool nofd = u & VU_VRING_NOFD_MASK;

	if (u & ~(uint64_t)(VU_VRING_INDEX_MASK | VU_VRING_NOFD_MASK)) {
		vu_refuse(s, m, "unknown bits in %#llx", (unsigned long long)u);
		return NULL;
	}
	if (nfds != (nofd ? 0 : 1)) {
		vu_refuse(s, m, "%d fds with%s the no-fd flag", nfds, nofd ? "" : "out");
		return NULL;
	}
	*fd = nofd ? -1 : -2;   /* -2: take fds[0] */
	return vu_ring(s, m, (uint32_t)(u & VU_VRING_INDEX_MASK));
}

static int vu_set_vring_kick(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	int fd;
	struct vu_vring *v = vu_ring_fd_msg(s, m, nfds, &fd);

	if (!v)
		return -1;
	if (fd == -1)
		return vu_refuse(s, m, "ring %u: polling (no kick fd) is not supported", v->index);
	vu_ring_set_kick(s, v, -1);
	if (eventloop_add(s->loop, fds[0], EPOLLIN, vu_on_kick, v) < 0)
		return vu_refuse(s, m, "ring %u: kick fd not watched: %m", v->index);
	v->kick_fd = fds[0];
	fds[0] = -1;
	v->started = true;
	vu_ring_update(s, v);
	return 0;
}

static int vu_set_vring_call(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	int fd;
	struct vu_vring *v = vu_ring_fd_msg(s, m, nfds, &fd);

	if (!v)
		return -1;
	vu_close(&v->call_fd);
	if (fd == -2) {
		v->call_fd = fds[0];
		fds[0] = -1;
	}
	return 0;
}

static int vu_set_vring_err(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	int fd;
	struct vu_vring *v = vu_ring_fd_msg(s, m, nfds, &fd);

	if (!v)
		return -1;
	vu_close(&v->err_fd);
	if (fd == -2) {
		v->err_fd = fds[0];
		fds[0] = -1;
	}
	return 0;
}

/* The protocol features offered: CONFIG only for a device that has a
 * config space and whose front ends read it through us (QEMU's virtio-net
 * keeps its own and warns when CONFIG is offered). */
static uint64_t vu_protocol_offered(const struct vu_server *s)
{
	uint64_t f = VU_PROTOCOL_FEATURES;

	if (!s->vdev.ops->config_size || s->vdev.ops->device_id == VIRTIO_ID_NET)
		f &= ~VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIG);
	return f;
}

static int vu_get_protocol_features(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reply_u64(s, m, vu_protocol_offered(s));
	return 0;
}

static int vu_set_protocol_features(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	uint64_t extra = m->p.u64 & ~vu_protocol_offered(s);

	if (extra)
		return vu_refuse(s, m, "protocol features %#llx were not offered",
				 (unsigned long long)extra);
	s->protocol = m->p.u64;
	return 0;
}

static int vu_get_queue_num(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reply_u64(s, m, s->vdev.num_queues);
	return 0;
}

static int vu_set_vring_enable(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_vring *v = vu_ring(s, m, m->p.state.index);

	if (!v)
		return -1;
	if (m->p.state.num > 1)
		return vu_refuse(s, m, "ring %u enable value %u", v->index, m->p.state.num);
	v->enabled = m->p.state.num;
	vu_ring_update(s, v);
	return 0;
}

/* Is a GET/SET_CONFIG payload well formed?  0 or -1 (refused). */
static int vu_config_check(struct vu_server *s, struct vu_msg *m)
{
	struct vu_config *c = &m->p.config;

	if (m->hdr.size < 12 || c->size > VU_MAX_CONFIG || m->hdr.size != 12 + c->size)
		return vu_refuse(s, m, "config access of %u bytes in a %u-byte payload",
				 m->hdr.size < 12 ? 0 : c->size, m->hdr.size);
	if (c->offset > VU_MAX_CONFIG || c->size > VU_MAX_CONFIG - c->offset)
		return vu_refuse(s, m, "config access %u+%u", c->offset, c->size);
	return 0;
}

/* Read the device's config space; bytes past its end read as zero. */
static int vu_get_config(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_config *c = &m->p.config;

	if (vu_config_check(s, m)) {
		vu_reply(s, m, NULL, 0);
		return -1;
	}
	memset(c->data, 0, c->size);
	for (uint32_t off = 0; off < c->size; off += 8) {
		uint32_t len = c->size - off < 8 ? c->size - off : 8;

		if (c->offset + off + len <= s->vdev.ops->config_size)
			virtio_config_read(&s->vdev, c->offset + off, c->data + off, len);
		else
			for (uint32_t k = 0; k < len; k++)
				virtio_config_read(&s->vdev, c->offset + off + k, c->data + off + k, 1);
	}
	vu_reply(s, m, c, 12 + c->size);
	return 0;
}

static int vu_set_config(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_config *c = &m->p.config;

	if (vu_config_check(s, m))
		return -1;
	if (c->flags > 1 || c->offset + c->size > s->vdev.ops->config_size)
		return vu_refuse(s, m, "config write %u+%u flags %u", c->offset, c->size, c->flags);
	for (uint32_t off = 0; off < c->size; off += 8)
		virtio_config_write(&s->vdev, c->offset + off, c->data + off,
				    c->size - off < 8 ? c->size - off : 8);
	return 0;
}

static int vu_reset_device_msg(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reset_device(s);
	return 0;
}

static int vu_get_max_mem_slots(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	vu_reply_u64(s, m, VU_MAX_MEM_REGIONS);
	return 0;
}

static int vu_add_mem_reg(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	struct vu_map map;
	char why[160];

	if (nfds != 1)
		return vu_refuse(s, m, "%d fds (want 1)", nfds);
	if (s->nmaps == VU_MAX_MEM_REGIONS)
		return vu_refuse(s, m, "all %d memory slots are used", VU_MAX_MEM_REGIONS);
	if (vu_region_overlaps(&m->p.single.region, s->maps, s->nmaps))
		return vu_refuse(s, m, "region gpa %#llx overlaps another",
				 (unsigned long long)m->p.single.region.gpa);
	if (vu_map_region(&m->p.single.region, fds[0], &map, why, sizeof(why)))
		return vu_refuse(s, m, "%s", why);
	vu_close(&fds[0]);
	vu_rings_halt(s);
	s->maps[s->nmaps++] = map;
	vu_mem_rebuild(s);
	vu_rings_update(s);
	return 0;
}

static int vu_rem_mem_reg(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	const struct vu_mem_region *r = &m->p.single.region;

	for (int i = 0; i < s->nmaps; i++) {
		const struct vu_mem_region *o = &s->maps[i].r;

		if (o->gpa != r->gpa || o->size != r->size || o->uva != r->uva)
			continue;
		vu_rings_halt(s);
		vu_unmap(&s->maps[i]);
		memmove(&s->maps[i], &s->maps[i + 1], sizeof(s->maps[0]) * (size_t)(s->nmaps - i - 1));
		s->nmaps--;
		vu_mem_rebuild(s);
		vu_rings_update(s);
		return 0;
	}
	return vu_refuse(s, m, "no region gpa %#llx size %#llx", (unsigned long long)r->gpa,
			 (unsigned long long)r->size);
}

typedef int (*vu_handler_fn)(struct vu_server *s, struct vu_msg *m, int *fds, int nfds);

/* The request table: payload size range, fds allowed, own reply. */
static const struct vu_handler {
	const char *name;
	vu_handler_fn fn;
	uint32_t min, max;               /* payload bytes */
	uint8_t max_fds;
	bool reply;                      /* answers on its own (no REPLY_ACK) */
} vu_handlers[VHOST_USER_MAX_REQUEST] = {
	[VHOST_USER_GET_FEATURES] = { "GET_FEATURES", vu_get_features, 0, 8, 0, true },
	[VHOST_USER_SET_FEATURES] = { "SET_FEATURES", vu_set_features, 8, 8, 0, false },
	[VHOST_USER_SET_OWNER] = { "SET_OWNER", vu_set_owner, 0, 8, 0, false },
	[VHOST_USER_RESET_OWNER] = { "RESET_OWNER", vu_reset_owner, 0, 8, 0, false },
	[VHOST_USER_SET_MEM_TABLE] = { "SET_MEM_TABLE", vu_set_mem_table, 8,
				       sizeof(struct vu_mem_table), VU_MAX_FDS, false },
	[VHOST_USER_SET_VRING_NUM] = { "SET_VRING_NUM", vu_set_vring_num, 8, 8, 0, false },
	[VHOST_USER_SET_VRING_ADDR] = { "SET_VRING_ADDR", vu_set_vring_addr, 40, 40, 0, false },
	[VHOST_USER_SET_VRING_BASE] = { "SET_VRING_BASE", vu_set_vring_base, 8, 8, 0, false },
	[VHOST_USER_GET_VRING_BASE] = { "GET_VRING_BASE", vu_get_vring_base, 8, 8, 0, true },
	[VHOST_USER_SET_VRING_KICK] = { "SET_VRING_KICK", vu_set_vring_kick, 8, 8, 1, false },
	[VHOST_USER_SET_VRING_CALL] = { "SET_VRING_CALL", vu_set_vring_call, 8, 8, 1, false },
	[VHOST_USER_SET_VRING_ERR] = { "SET_VRING_ERR", vu_set_vring_err, 8, 8, 1, false },
	[VHOST_USER_GET_PROTOCOL_FEATURES] = { "GET_PROTOCOL_FEATURES", vu_get_protocol_features,
					       0, 8, 0, true },
	[VHOST_USER_SET_PROTOCOL_FEATURES] = { "SET_PROTOCOL_FEATURES", vu_set_protocol_features,
					       8, 8, 0, false },
	[VHOST_USER_GET_QUEUE_NUM] = { "GET_QUEUE_NUM", vu_get_queue_num, 0, 8, 0, true },
	[VHOST_USER_SET_VRING_ENABLE] = { "SET_VRING_ENABLE", vu_set_vring_enable, 8, 8, 0, false },
	[VHOST_USER_GET_CONFIG] = { "GET_CONFIG", vu_get_config, 12, 12 + VU_MAX_CONFIG, 0, true },
	[VHOST_USER_SET_CONFIG] = { "SET_CONFIG", vu_set_config, 12, 12 + VU_MAX_CONFIG, 0, false },
	[VHOST_USER_RESET_DEVICE] = { "RESET_DEVICE", vu_reset_device_msg, 0, 8, 0, false },
	[VHOST_USER_GET_MAX_MEM_SLOTS] = { "GET_MAX_MEM_SLOTS", vu_get_max_mem_slots, 0, 8, 0, true },
	[VHOST_USER_ADD_MEM_REG] = { "ADD_MEM_REG", vu_add_mem_reg, 40, 40, 1, false },
	[VHOST_USER_REM_MEM_REG] = { "REM_MEM_REG", vu_rem_mem_reg, 40, 40, 1, false },
};

/* Check `m` against its table entry and run the handler; 0 or -1. */
static int vu_dispatch(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	uint32_t req = m->hdr.request;
	const struct vu_handler *h = req < VHOST_USER_MAX_REQUEST ? &vu_handlers[req] : NULL;
	int rc = 0;

	if (!h || !h->fn)
		return vu_refuse(s, m, "not supported");
	if (m->hdr.size < h->min || m->hdr.size > h->max)
		rc = vu_refuse(s, m, "%s with a %u-byte payload", h->name, m->hdr.size);
	else if (nfds > h->max_fds)
		rc = vu_refuse(s, m, "%s with %d fds", h->name, nfds);
	if (rc) {
		if (h->reply)
			vu_reply(s, m, NULL, 0);   /* the front end waits for one */
		return rc;
	}
	log_debug("%s: %s", vu_name(s), h->name);
	return h->fn(s, m, fds, nfds);
}

int vu_server_handle(struct vu_server *s, struct vu_msg *m, int *fds, int nfds)
{
	uint32_t req = m->hdr.request;
	bool own_reply = req < VHOST_USER_MAX_REQUEST && vu_handlers[req].fn && vu_handlers[req].reply;
	int rc;

	if ((m->hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
	    m->hdr.size > VU_MAX_PAYLOAD) {
		log_warn("%s: message %u with flags %#x and %u bytes breaks the framing", vu_name(s),
			 req, m->hdr.flags, m->hdr.size);
		rc = -EPROTO;
	} else if (!s->have_model) {
		rc = -1;
	} else {
		s->stats.messages++;
		rc = vu_dispatch(s, m, fds, nfds);
	}
	for (int i = 0; i < nfds; i++)
		vu_close(&fds[i]);
	if (rc != -EPROTO && !own_reply && (m->hdr.flags & VHOST_USER_NEED_REPLY) &&
	    vu_has_protocol(s, VHOST_USER_PROTOCOL_F_REPLY_ACK))
		vu_reply_u64(s, m, rc ? 1 : 0);
	return rc;
}

/* ---- the connection ---- */

/* Take the fds out of a received control buffer. */
static int vu_collect_fds(struct msghdr *mh, int *fds)
{
	int n = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n < VU_MAX_FDS)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* Read what recvmsg did not: the rest of the header (`got` bytes came)
 * and the payload.  0 or -1.  An oversized payload is left unread: the
 * header alone makes vu_server_handle end the connection. */
static int vu_recv_rest(struct vu_server *s, struct vu_msg *m, size_t got)
{
	size_t want = sizeof(m->hdr) - got;

	if (want && recv(s->conn_fd, (char *)&m->hdr + got, want, MSG_WAITALL) != (ssize_t)want)
		return -1;
	if (!m->hdr.size || m->hdr.size > VU_MAX_PAYLOAD)
		return 0;
	return recv(s->conn_fd, m->p.bytes, m->hdr.size, MSG_WAITALL) == (ssize_t)m->hdr.size ? 0 : -1;
}

/* Read one message and the fds that came with it.  1: got one; 0: nothing
 * yet; -1: the connection ended or broke the framing (fds closed). */
static int vu_recv(struct vu_server *s, struct vu_msg *m, int *fds, int *nfds)
{
	char cbuf[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(s->conn_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	*nfds = 0;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return -1;
	*nfds = vu_collect_fds(&mh, fds);
	if (!(mh.msg_flags & MSG_CTRUNC) && vu_recv_rest(s, m, (size_t)n) == 0)
		return 1;
	if (mh.msg_flags & MSG_CTRUNC)
		log_warn("%s: a message carried more than %d fds", vu_name(s), VU_MAX_FDS);
	for (int i = 0; i < *nfds; i++)
		close(fds[i]);
	*nfds = 0;
	return -1;
}

/* The front end went away: forget its session and wait for the next. */
void vu_server_disconnect(struct vu_server *s)
{
	if (s->conn_fd < 0)
		return;
	if (s->have_model)
		vu_reset_device(s);
	for (int i = 0; i < s->nmaps; i++)
		vu_unmap(&s->maps[i]);
	s->nmaps = 0;
	vu_mem_rebuild(s);
	s->protocol = 0;
	if (s->loop)
		eventloop_del(s->loop, s->conn_fd);
	vu_close(&s->conn_fd);
	s->stats.disconnects++;
	log_info("%s: front end disconnected (%llu messages, %llu refused, %llu kicks, %llu "
		 "interrupts); waiting for the next", vu_name(s),
		 (unsigned long long)(s->stats.messages - s->at_connect.messages),
		 (unsigned long long)(s->stats.refused - s->at_connect.refused),
		 (unsigned long long)(s->stats.kicks - s->at_connect.kicks),
		 (unsigned long long)(s->stats.calls - s->at_connect.calls));
}

/* A message (or the end) on the connection (loop thread). */
static int vu_on_conn(int fd, uint32_t events, void *opaque)
{
	struct vu_server *s = opaque;
	int fds[VU_MAX_FDS], nfds = 0, rc;

	if (fd != s->conn_fd)
		return 0;
	rc = vu_recv(s, &s->msg, fds, &nfds);
	if (rc == 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	if (rc < 0 || vu_server_handle(s, &s->msg, fds, nfds) == -EPROTO)
		vu_server_disconnect(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int vu_server_add_conn(struct vu_server *s, int fd)
{
	struct timeval tv = { .tv_sec = VU_RECV_TIMEOUT_S };

	if (s->conn_fd >= 0)
		return -1;
	/* Bounded waits: a payload that never comes, a reply never read. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (eventloop_add(s->loop, fd, EPOLLIN, vu_on_conn, s) < 0)
		return -1;
	s->conn_fd = fd;
	s->stats.connects++;
	s->at_connect = s->stats;
	s->hinted_size = false;
	log_info("%s: front end connected", vu_name(s));
	return 0;
}

/* A front end knocks on the listening socket (loop thread). */
static int vu_on_listen(int fd, uint32_t events, void *opaque)
{
	struct vu_server *s = opaque;
	int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

	if (c < 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	if (vu_server_add_conn(s, c)) {
		log_warn("%s: a second front end was turned away (one at a time)", vu_name(s));
		close(c);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- life cycle ---- */

struct vu_server *vu_server_new(struct error *e)
{
	struct vu_server *s = calloc(1, sizeof(*s));

	if (!s) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	s->listen_fd = s->conn_fd = s->model_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	guest_mem_init_external(&s->mem);
	s->loop = eventloop_new();
	/* No interrupts, buses or stop: the front end owns the guest. */
	s->host = (struct device_host){ .opaque = s, .mem = &s->mem, .loop = s->loop };
	if (!s->loop) {
		error_set(e, EXIT_HOST, "cannot create the event loop: %s", strerror(errno));
		vu_server_free(s);
		return NULL;
	}
	return s;
}

const struct device_host *vu_server_host(struct vu_server *s)
{
	return &s->host;
}

pthread_mutex_t *vu_server_lock(struct vu_server *s)
{
	return &s->lock;
}

/* The model's host-side fd is readable (loop thread). */
static int vu_on_model_event(int fd, uint32_t events, void *opaque)
{
	struct vu_server *s = opaque;

	pthread_mutex_lock(&s->lock);
	s->model.poll(&s->vdev);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Watch the model's host-side fd, if it has one; 0 or -1 with `e`. */
static int vu_watch_model(struct vu_server *s, struct error *e)
{
	int fd;

	if (!s->model.event_fd || !s->model.poll)
		return 0;
	fd = s->model.event_fd(&s->vdev);
	if (fd >= 0 && eventloop_add(s->loop, fd, EPOLLIN, vu_on_model_event, s) < 0)
		return error_set(e, EXIT_HOST, "%s: cannot watch its host fd: %s", vu_name(s),
				 strerror(errno));
	s->model_fd = fd;
	return 0;
}

int vu_server_set_model(struct vu_server *s, const struct vu_model *m, struct error *e)
{
	int rc;

	if (s->have_model)
		return error_set(e, EXIT_USAGE, "a vhost-user server serves one device");
	rc = virtio_device_init(&s->vdev, m->ops, m->priv, &s->mem, m->name);
	if (rc == 0 && m->ops->num_queues > VU_VRING_INDEX_MASK + 1)
		rc = -EINVAL;
	if (rc == 0 && !(s->rings = calloc(m->ops->num_queues, sizeof(*s->rings))))
		rc = -ENOMEM;
	if (rc) {
		virtio_device_destroy(&s->vdev);
		return error_set(e, EXIT_HOST, "%s: cannot set up the device: %s", m->name,
				 strerror(-rc));
	}
	for (uint16_t i = 0; i < m->ops->num_queues; i++)
		s->rings[i] = (struct vu_vring){ .s = s, .index = i, .kick_fd = -1, .call_fd = -1,
						 .err_fd = -1 };
	s->vdev.transport = s;
	s->vdev.notify_queue = vu_notify_queue;
	s->vdev.notify_config = vu_notify_config;
	s->model = *m;
	s->have_model = true;
	return vu_watch_model(s, e);
}

int vu_server_listen(struct vu_server *s, const char *path, struct error *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return error_set(e, EXIT_USAGE, "%s: socket path too long", path);
	strcpy(sa.sun_path, path);
	if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		return error_set(e, EXIT_HOST, "%s: cannot listen: %s", path, strerror(err));
	}
	if (eventloop_add(s->loop, fd, EPOLLIN, vu_on_listen, s) < 0) {
		close(fd);
		unlink(path);
		return error_set(e, EXIT_HOST, "%s: event loop: %s", path, strerror(errno));
	}
	s->listen_fd = fd;
	s->path = strdup(path);
	return 0;
}

int vu_server_start(struct vu_server *s)
{
	if (eventloop_start(s->loop))
		return -1;
	s->loop_running = true;
	return 0;
}

void vu_server_stop(struct vu_server *s)
{
	if (s->loop_running)
		eventloop_stop(s->loop);
	s->loop_running = false;
	pthread_mutex_lock(&s->lock);
	vu_server_disconnect(s);
	pthread_mutex_unlock(&s->lock);
}

void vu_server_free(struct vu_server *s)
{
	if (!s)
		return;
	if (s->loop)
		vu_server_stop(s);
	if (s->model_fd >= 0)
		eventloop_del(s->loop, s->model_fd);
	if (s->have_model)
		virtio_device_destroy(&s->vdev);
	free(s->rings);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		if (s->path)
			unlink(s->path);
	}
	free(s->path);
	if (s->loop)
		eventloop_free(s->loop);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

struct virtio_device *vu_server_vdev(struct vu_server *s)
{
	return &s->vdev;
}

const struct vu_stats *vu_server_stats(struct vu_server *s)
{
	return &s->stats;
}

bool vu_server_connected(struct vu_server *s)
{
	return s->conn_fd >= 0;
}
