/*
 * vhost_user_fs.c - a vhost-user FRONT END: the virtio-fs device (id 26)
 * whose rings are served by another process, Debian's virtiofsd.
 *
 * Shoal's own vhost-user code (vhost_user.c) is a back end: it serves a
 * device model to another VMM.  Here the roles turn round.  The guest sees
 * an ordinary modern virtio PCI function made by Shoal's transport
 * (virtio_pci.c, virtio.c: registers, feature bits, status machine, queue
 * set-up, MSI-X); this file only tells the back end what the guest set up,
 * and carries the two kinds of event between them:
 *
 *   guest                 Shoal (this file)               virtiofsd
 *   -----                 -----------------               ---------
 *                         create: connect, SET_OWNER,
 *                         GET_FEATURES, GET/SET_PROTOCOL_FEATURES
 *   FEATURES_OK           (features offered = back end's & ours)
 *   DRIVER_OK  ─────────> SET_FEATURES, SET_MEM_TABLE (the
 *                         guest memfd), per ready queue:
 *                         SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE ──> maps RAM, starts
 *   kick (ioeventfd) ───> queue_notify: write the kick fd ─────────> reads the ring
 *                         (a queue enabled after DRIVER_OK is
 *                         handed over at its first kick)
 *   interrupt <───────── call fd readable (event loop):  <────────── writes the used ring
 *                         the transport's notify_queue
 *   status 0 (reset) ───> GET_VRING_BASE per live queue ─────────> stops the ring
 *
 * The kick is forwarded through the transport's ioeventfd and the event
 * loop (one write(2) per kick) rather than handed to KVM as the back end's
 * own fd: the transport owns the notify addresses and their ioeventfds, and
 * a device sees no VM.  The call is forwarded the same way so that MSI-X
 * and INTx both work through the transport's one interrupt path.
 *
 * Memory: SET_MEM_TABLE passes the guest RAM's memfd once per region (the
 * same fd; the offset in the file is the offset in the mapping, see
 * base/guest_mem.h) with the VMM's own virtual addresses, which the ring
 * addresses of SET_VRING_ADDR are given in.  RAM that is not a memfd (a
 * clone mapped privately from a memory file) cannot be shared: refused at
 * create.  The back end can read and write all of guest RAM; it is trusted
 * with the guest's data as a disk image is, but not with the VMM.
 *
 * The back end is untrusted by the VMM.  Every reply is read with a
 * timeout (VUFS_TIMEOUT_S), must be a reply (flag and version) to the
 * request just sent with exactly the expected size, and any fds it carries
 * are closed.  A back end that refuses, times out, answers garbage or
 * hangs up marks the device broken (DEVICE_NEEDS_RESET, one log line
 * naming the device and the socket); the VMM and the guest's other devices
 * go on.  At create the same failures refuse the device (EXIT_NOINPUT:
 * "not a vhost-user back end").  There is no reconnection: a new back end
 * needs a new VM.
 *
 * Threads: create on the main thread; activate, reset and queue_notify
 * under the struct device lock (vCPU thread or event loop, as the
 * transport calls them); the call and hang-up handlers on the event loop
 * take the same lock.  So the socket is used by one thread at a time, and
 * a reply is always read right after its request.
 *
 * State lives in the back end (open files, FUSE inodes), so a VM with this
 * device cannot be snapshotted or migrated: state/snapshot.c refuses it.
 */
#include "devices/vhost_user_fs.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "devices/device.h"
#include "devices/vhost_user.h"
#include "devices/virtio_pci.h"

#define VUFS_NUM_QUEUES  2            /* hiprio + one request queue */
#define VUFS_QUEUE_SIZE  1024
#define VUFS_CONFIG_SIZE 40           /* tag[36], le32 num_request_queues */
#define VUFS_TIMEOUT_S   5            /* per reply */

/* The ring features Shoal's side understands; the back end decides the
 * rest (offered = back end's & these & the core's). */
#define VUFS_RING_FEATURES \
	(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | \
	 VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))

struct vufs;

struct vufs_queue {
	struct vufs *v;
	uint16_t index;
	int kick, call;                   /* eventfds, -1 none */
	bool live;                        /* the back end has this ring */
};

struct vufs {
	char name[32];                    /* "vhost-user-fs0" */
	char tag[VUFS_TAG_MAX + 1];
	char path[108];                   /* the back end's socket */
	const struct device_host *host;
	struct device *dev;               /* the PCI function (its lock) */
	int sock;                         /* -1 after a hang-up */
	bool watching;                    /* sock is on the event loop */
	bool dead;                        /* the back end failed: no more messages */
	uint64_t features;                /* the back end's (GET_FEATURES) */
	uint64_t protocol;                /* negotiated protocol features */
	struct vufs_queue q[VUFS_NUM_QUEUES];
	char err[160];                    /* the last failure */
};

static const char *vufs_req_name(uint32_t r)
{
	switch (r) {
	case VHOST_USER_GET_FEATURES: return "GET_FEATURES";
	case VHOST_USER_SET_FEATURES: return "SET_FEATURES";
	case VHOST_USER_SET_OWNER: return "SET_OWNER";
	case VHOST_USER_SET_MEM_TABLE: return "SET_MEM_TABLE";
	case VHOST_USER_SET_VRING_NUM: return "SET_VRING_NUM";
	case VHOST_USER_SET_VRING_ADDR: return "SET_VRING_ADDR";
	case VHOST_USER_SET_VRING_BASE: return "SET_VRING_BASE";
	case VHOST_USER_GET_VRING_BASE: return "GET_VRING_BASE";
	case VHOST_USER_SET_VRING_KICK: return "SET_VRING_KICK";
	case VHOST_USER_SET_VRING_CALL: return "SET_VRING_CALL";
	case VHOST_USER_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
	case VHOST_USER_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
	case VHOST_USER_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
	default: return "request";
	}
}

static int vufs_fail(struct vufs *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vufs_fail(struct vufs *v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->err, sizeof(v->err), fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- the socket ---- */

static int vufs_send(struct vufs *v, uint32_t req, uint32_t flags, const void *payload,
		     uint32_t size, const int *fds, int nfds)
{
	struct vu_hdr hdr = { .request = req, .flags = VHOST_USER_VERSION | flags, .size = size };
	struct iovec iov[2] = { { &hdr, sizeof(hdr) }, { (void *)payload, size } };
	union {
		char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
	ssize_t n;

	if (v->sock < 0)
		return vufs_fail(v, "the back end is gone");
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	do {
		n = sendmsg(v->sock, &m, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)(sizeof(hdr) + size))
		return vufs_fail(v, "%s: send: %s", vufs_req_name(req),
				 n < 0 ? strerror(errno) : "short write");
	return 0;
}

/* Read exactly `len` bytes within the timeout; fds that come along are
 * closed (no reply we ask for carries any). */
static int vufs_read_all(struct vufs *v, void *buf, size_t len, const char *what)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = v->sock, .events = POLLIN };
		union {
			char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
			struct cmsghdr align;
		} u;
		struct iovec iov = { (char *)buf + got, len - got };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
				    .msg_controllen = sizeof(u.buf) };
		ssize_t n;
		int r = poll(&p, 1, VUFS_TIMEOUT_S * 1000);

		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return vufs_fail(v, "%s: no reply in %d s", what, VUFS_TIMEOUT_S);
		if (r < 0)
			return vufs_fail(v, "%s: poll: %s", what, strerror(errno));
		n = recvmsg(v->sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); n >= 0 && c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
					close(fd);
				}
		if (n < 0)
			return vufs_fail(v, "%s: receive: %s", what, strerror(errno));
		if (n == 0)
			return vufs_fail(v, "%s: the back end closed the connection", what);
		got += (size_t)n;
	}
	return 0;
}

/* The reply to `req`: exactly `size` bytes of payload into `out`. */
static int vufs_reply(struct vufs *v, uint32_t req, void *out, uint32_t size)
{
	struct vu_hdr h;

	if (vufs_read_all(v, &h, sizeof(h), vufs_req_name(req)))
		return -1;
	if ((h.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
	    !(h.flags & VHOST_USER_REPLY) || h.request != req || h.size != size)
		return vufs_fail(v, "%s: not a vhost-user reply (request %u, flags 0x%x, %u bytes)",
				 vufs_req_name(req), h.request, h.flags, h.size);
	return vufs_read_all(v, out, size, vufs_req_name(req));
}

/* A request that answers with a u64 (GET_*). */
static int vufs_get_u64(struct vufs *v, uint32_t req, uint64_t *out)
{
	return vufs_send(v, req, 0, NULL, 0, NULL, 0) || vufs_reply(v, req, out, sizeof(*out));
}

/* A request with no answer of its own: with REPLY_ACK the back end
 * confirms it (0) or refuses it (anything else). */
static int vufs_set(struct vufs *v, uint32_t req, const void *payload, uint32_t size,
		    const int *fds, int nfds)
{
	bool ack = v->protocol & VIRTIO_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
	uint64_t status = 0;

	if (vufs_send(v, req, ack ? VHOST_USER_NEED_REPLY : 0, payload, size, fds, nfds))
		return -1;
	if (!ack)
		return 0;
	if (vufs_reply(v, req, &status, sizeof(status)))
		return -1;
	return status ? vufs_fail(v, "%s: refused by the back end (%llu)", vufs_req_name(req),
				  (unsigned long long)status) : 0;
}

static int vufs_set_u64(struct vufs *v, uint32_t req, uint64_t val, int fd)
{
	return vufs_set(v, req, &val, sizeof(val), &fd, fd >= 0 ? 1 : 0);
}

static int vufs_set_state(struct vufs *v, uint32_t req, uint32_t index, uint32_t num)
{
	struct vu_vring_state s = { .index = index, .num = num };

	return vufs_set(v, req, &s, sizeof(s), NULL, 0);
}

/* ---- the back end's death ---- */

/* Called with the device lock held: no more messages; the guest sees
 * DEVICE_NEEDS_RESET if it is using the device. */
static void vufs_break(struct vufs *v, struct virtio_device *vdev)
{
	if (!v->dead)
		log_error("%s: vhost-user back end %s: %s; the device is broken (the VM goes on)",
			  v->name, v->path, v->err);
	v->dead = true;
	if (vdev && (vdev->status & VIRTIO_STATUS_DRIVER_OK))
		virtio_mark_broken(vdev, "vhost-user back end failed: %.80s", v->err);
}

static int vufs_on_hup(int fd, uint32_t events, void *opaque)
{
	struct vufs *v = opaque;

	pthread_mutex_lock(&v->dev->lock);
	v->watching = false;
	if (!v->dead)
		vufs_fail(v, "the back end closed the connection");
	vufs_break(v, virtio_pci_vdev(v->dev));
	pthread_mutex_unlock(&v->dev->lock);
	return -1;
}

/* ---- rings ---- */

static int vufs_on_call(int fd, uint32_t events, void *opaque)
{
	struct vufs_queue *q = opaque;
	struct virtio_device *vdev = virtio_pci_vdev(q->v->dev);
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0)
		return 0;
	pthread_mutex_lock(&q->v->dev->lock);
	if (q->live && !vdev->broken && (vdev->status & VIRTIO_STATUS_DRIVER_OK)) {
		vdev->stats.interrupts++;
		vdev->notify_queue(vdev, q->index);
	}
	pthread_mutex_unlock(&q->v->dev->lock);
	return 0;
}

static void vufs_queue_close(struct vufs *v, struct vufs_queue *q)
{
	if (q->call >= 0) {
		if (v->host->loop)
			eventloop_del(v->host->loop, q->call);
		close(q->call);
	}
	if (q->kick >= 0)
		close(q->kick);
	q->call = q->kick = -1;
	q->live = false;
}

/* Hand ring `vq` to the back end. */
static int vufs_queue_start(struct vufs *v, struct virtio_device *vdev, struct virtqueue *vq)
{
	struct vufs_queue *q = &v->q[vq->index];
	uint64_t desc_len = 16ull * vq->size, avail_len = 6 + 2ull * vq->size,
		 used_len = 6 + 8ull * vq->size;
	void *desc = guest_mem_ptr(vdev->mem, vq->desc_gpa, desc_len);
	void *avail = guest_mem_ptr(vdev->mem, vq->avail_gpa, avail_len);
	void *used = guest_mem_ptr(vdev->mem, vq->used_gpa, used_len);
	struct vu_vring_addr a = { .index = vq->index, .desc = (uintptr_t)desc,
				   .used = (uintptr_t)used, .avail = (uintptr_t)avail };

	if (vq->packed)
		return vufs_fail(v, "queue %u: packed rings are not offered", vq->index);
	if (!desc || !avail || !used)     /* virtq_start checked them already */
		return vufs_fail(v, "queue %u: ring outside guest RAM", vq->index);
	q->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->kick < 0 || q->call < 0)
		return vufs_fail(v, "queue %u: eventfd: %s", vq->index, strerror(errno));
	if (!v->host->loop || eventloop_add(v->host->loop, q->call, EPOLLIN, vufs_on_call, q)) {
		close(q->call);
		q->call = -1;
		return vufs_fail(v, "queue %u: no event loop for its interrupts", vq->index);
	}
	q->live = true;                   /* from here, reset asks for the ring back */
	if (vufs_set_state(v, VHOST_USER_SET_VRING_NUM, vq->index, vq->size) ||
	    vufs_set_state(v, VHOST_USER_SET_VRING_BASE, vq->index, vq->last_avail) ||
	    vufs_set(v, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0) ||
	    vufs_set_u64(v, VHOST_USER_SET_VRING_CALL, vq->index, q->call) ||
	    vufs_set_u64(v, VHOST_USER_SET_VRING_KICK, vq->index, q->kick))
		return -1;
	if ((v->features & VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES)) &&
	    vufs_set_state(v, VHOST_USER_SET_VRING_ENABLE, vq->index, 1))
		return -1;
	return 0;
}

static int vufs_mem_table(struct vufs *v, const struct guest_mem *mem)
{
	struct vu_mem_table t = { .nregions = (uint32_t)mem->nregions };
	int fds[VU_MAX_MEM_REGIONS];

	if (mem->fd < 0 || mem->nregions < 1 || mem->nregions > VU_MAX_MEM_REGIONS)
		return vufs_fail(v, "guest RAM is not a shareable memfd");
	for (int i = 0; i < mem->nregions; i++) {
		t.regions[i] = (struct vu_mem_region){
			.gpa = mem->region[i].gpa, .size = mem->region[i].size,
			.uva = (uintptr_t)mem->region[i].hva, .mmap_offset = mem->region[i].offset,
		};
		fds[i] = mem->fd;
	}
	return vufs_set(v, VHOST_USER_SET_MEM_TABLE, &t,
			(uint32_t)(8 + sizeof(struct vu_mem_region) * (size_t)mem->nregions), fds,
			mem->nregions);
}

/* ---- virtio_device_ops ---- */

static uint64_t vufs_features(struct virtio_device *vdev)
{
	return 0;                         /* set from the back end's after init */
}

static void vufs_config_read(struct virtio_device *vdev, uint32_t off, void *data, uint32_t len)
{
	struct vufs *v = vdev->priv;
	uint8_t cfg[VUFS_CONFIG_SIZE] = { 0 };

	memcpy(cfg, v->tag, strlen(v->tag));          /* not NUL-terminated when 36 */
	cfg[36] = 1;                                  /* le32 num_request_queues = 1 */
	memcpy(data, cfg + off, len);                 /* the core checked the range */
}

static int vufs_activate(struct virtio_device *vdev)
{
	struct vufs *v = vdev->priv;
	uint64_t f = vdev->guest_features;

	if (v->dead) {
		virtio_mark_broken(vdev, "vhost-user back end failed: %.80s", v->err);
		return -1;
	}
	if (v->features & VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES))
		f |= VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	if (vufs_set_u64(v, VHOST_USER_SET_FEATURES, f, -1) || vufs_mem_table(v, vdev->mem))
		goto fail;
	for (uint16_t i = 0; i < vdev->num_queues; i++)
		if (vdev->queues[i].started && vufs_queue_start(v, vdev, &vdev->queues[i]))
			goto fail;
	log_debug("%s: %s serves tag %s", v->name, v->path, v->tag);
	return 0;
fail:
	vufs_break(v, NULL);
	virtio_mark_broken(vdev, "vhost-user back end failed: %.80s", v->err);
	return -1;
}

static void vufs_queue_notify(struct virtio_device *vdev, uint16_t qidx)
{
	struct vufs *v = vdev->priv;
	uint64_t one = 1;

	if (qidx >= VUFS_NUM_QUEUES || v->dead)
		return;
	/* A queue the driver enabled after DRIVER_OK (the core started it,
	 * activate had not seen it): hand it over at its first kick. */
	if (!v->q[qidx].live && vdev->queues[qidx].started &&
	    vufs_queue_start(v, vdev, &vdev->queues[qidx])) {
		vufs_break(v, vdev);
		return;
	}
	if (v->q[qidx].live && write(v->q[qidx].kick, &one, sizeof(one)) < 0)
		log_debug("%s: kick queue %u: %s", v->name, qidx, strerror(errno));
}

/* The driver reset the device: take every ring back from the back end
 * (GET_VRING_BASE stops it there) and drop the eventfds. */
static void vufs_reset(struct virtio_device *vdev)
{
	struct vufs *v = vdev->priv;

	for (int i = 0; i < VUFS_NUM_QUEUES; i++) {
		struct vu_vring_state s = { .index = (uint32_t)i };

		if (v->q[i].live && !v->dead &&
		    (vufs_send(v, VHOST_USER_GET_VRING_BASE, 0, &s, sizeof(s), NULL, 0) ||
		     vufs_reply(v, VHOST_USER_GET_VRING_BASE, &s, sizeof(s))))
			vufs_break(v, NULL);
		vufs_queue_close(v, &v->q[i]);
	}
}

static void vufs_destroy(struct virtio_device *vdev)
{
	struct vufs *v = vdev->priv;

	if (!v)
		return;
	for (int i = 0; i < VUFS_NUM_QUEUES; i++)
		vufs_queue_close(v, &v->q[i]);
	if (v->watching && v->host->loop)
		eventloop_del(v->host->loop, v->sock);
	if (v->sock >= 0)
		close(v->sock);
	free(v);
	vdev->priv = NULL;
}

static const struct virtio_device_ops vufs_ops = {
	.device_id = VIRTIO_ID_FS,
	.name = "vhost-user-fs",
	.num_queues = VUFS_NUM_QUEUES,
	.queue_max_size = VUFS_QUEUE_SIZE,
	.config_size = VUFS_CONFIG_SIZE,
	.state_version = 1,
	.features = vufs_features,
	.config_read = vufs_config_read,
	.queue_notify = vufs_queue_notify,
	.activate = vufs_activate,
	.reset = vufs_reset,
	.destroy = vufs_destroy,
};

/* ---- create ---- */

/* Connect and negotiate: SET_OWNER, GET_FEATURES, and the protocol
 * features when the back end has them (we take REPLY_ACK only). */
static int vufs_connect(struct vufs *v)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t pf = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", v->path);
	v->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (v->sock < 0)
		return vufs_fail(v, "socket: %s", strerror(errno));
	if (connect(v->sock, (struct sockaddr *)&sa, sizeof(sa)))
		return vufs_fail(v, "connect: %s", strerror(errno));
	if (vufs_send(v, VHOST_USER_SET_OWNER, 0, NULL, 0, NULL, 0) ||
	    vufs_get_u64(v, VHOST_USER_GET_FEATURES, &v->features))
		return -1;
	if (!(v->features & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		return vufs_fail(v, "the back end does not offer VIRTIO_F_VERSION_1 (features 0x%llx)",
				 (unsigned long long)v->features);
	if (v->features & VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES)) {
		if (vufs_get_u64(v, VHOST_USER_GET_PROTOCOL_FEATURES, &pf))
			return -1;
		pf &= VIRTIO_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
		if (vufs_set_u64(v, VHOST_USER_SET_PROTOCOL_FEATURES, pf, -1))
			return -1;
		v->protocol = pf;
	}
	return 0;
}

int vhost_user_fs_create(const struct device_host *host, const struct vm_fs *fs, int index,
			 struct error *e)
{
	struct vufs *v = calloc(1, sizeof(*v));
	struct virtio_device *vdev;

	if (!v)
		return error_set(e, EXIT_HOST, "out of memory");
	snprintf(v->name, sizeof(v->name), "vhost-user-fs%d", index);
	snprintf(v->tag, sizeof(v->tag), "%s", fs->tag);
	snprintf(v->path, sizeof(v->path), "%s", fs->socket);
	v->host = host;
	for (int i = 0; i < VUFS_NUM_QUEUES; i++)
		v->q[i] = (struct vufs_queue){ .v = v, .index = (uint16_t)i, .kick = -1, .call = -1 };
	if (!host->mem || host->mem->fd < 0) {
		free(v);
		return error_set(e, EXIT_USAGE, "--fs %s: guest RAM is not a memfd here (a clone "
				 "mapped from a memory file cannot share it with a back end)", fs->tag);
	}
	if (vufs_connect(v)) {
		error_set(e, EXIT_NOINPUT, "--fs %s: %s: not a usable vhost-user back end: %s",
			  fs->tag, fs->socket, v->err);
		if (v->sock >= 0)
			close(v->sock);
		free(v);
		return -1;
	}
	if (virtio_pci_create(host, &vufs_ops, v, v->name, VIRTIO_PCI_MODERN_ONLY, &v->dev, e))
		return -1;                /* v freed through vufs_destroy */
	vdev = virtio_pci_vdev(v->dev);
	vdev->host_features &= v->features & VUFS_RING_FEATURES;
	if (host->loop && eventloop_add(host->loop, v->sock, EPOLLRDHUP, vufs_on_hup, v) == 0)
		v->watching = true;
	log_info("%s: tag %s, back end %s (features 0x%llx, protocol 0x%llx)", v->name, v->tag,
		 v->path, (unsigned long long)v->features, (unsigned long long)v->protocol);
	return 0;
}
