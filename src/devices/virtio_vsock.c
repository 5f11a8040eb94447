/*
 * virtio_vsock.c - virtio socket device (virtio 1.2 section 5.10) with its
 * host side on Unix sockets, as Firecracker does it.
 *
 * Queues: 0 rx (device -> driver packets), 1 tx (driver -> device), 2 event
 * (TRANSPORT_RESET after a restore).  Only SOCK_STREAM; the host is CID 2.
 *
 * Host-initiated connection:
 *
 *   host program          device                       guest
 *   connect(PATH) ──────> accept
 *   "CONNECT 1234\n" ───> REQUEST h:P -> g:1234 ──────> (listener on 1234)
 *                         <──────────────────────────── RESPONSE
 *   <──── "OK P\n"        established; bytes both ways as RW packets
 *
 * Guest-initiated connection:
 *
 *   guest                 device                       host program
 *   REQUEST g:G -> 2:P ─> connect(PATH_P) ───────────> accept
 *   <──── RESPONSE        (RST when nobody listens)
 *
 * Closing: a guest RST frees the connection; a guest SHUTDOWN with both
 * flags is answered with RST and frees it; SHUTDOWN SEND half-closes the
 * host socket once buffered bytes are out.  Host EOF sends SHUTDOWN (both)
 * and waits for the guest's RST; a host socket error sends RST.
 *
 * Credit (5.10.6.3): each side advertises buf_alloc and fwd_cnt (bytes it
 * has taken out of its buffer).  We advertise VSOCK_BUF_ALLOC per
 * connection and count as forwarded what reached the host socket; what the
 * socket would not take waits in the connection's buffer, which is exactly
 * that credit: a guest that sends beyond it gets RST.  Towards the guest we
 * read from the host socket no more than its credit allows, and ask for
 * more (CREDIT_REQUEST) when it runs out.
 *
 * Events: the listener and every connection are in the device's own epoll
 * set (watched by the VM's event loop); connections are edge-triggered and
 * we keep `readable`/`writable` flags, so a connection we cannot serve
 * (no rx buffers, no credit) costs no wake-ups.  Packets for the guest are
 * produced by one pump (vsock_rx_pump) whenever rx buffers, credit or work
 * may have appeared; with the rx ring empty it stops and the rx kick
 * restarts it.
 *
 * Threads: everything runs under the struct device lock (queue_notify from
 * a vCPU or the event loop; host events from the event loop).
 *
 * Hostile guest: every header is checked (length against the chain, CIDs,
 * type, payload cap), unknown connections get RST (from a bounded queue),
 * a guest over its credit gets RST, the number of connections is capped.
 *
 * Saved state (version 1): u64 cid | u8 held | [virtq_elem_save of the rx
 * buffer popped but not yet used, walked again on first use so the guest
 * does not lose it].  Connections are host resources and are not carried
 * across a restore: they are dropped and the guest gets TRANSPORT_RESET on
 * the event queue, which the spec provides for exactly this (migration).
 * The device's CID is its configuration's, which a clone's restore may
 * have changed from the saved one: config space then says the new one,
 * and the reset makes a running driver read it again (Linux's
 * virtio_transport does, virtio_vsock_update_guest_cid).
 */
#include "devices/virtio_vsock.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/device.h"
#include "devices/virtio_pci.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/path_beneath.h"
#include "base/eventloop.h"

#define VSOCK_QUEUE_SIZE   256
#define VSOCK_STATE_VERSION 1
#define VSOCK_HDR_LEN      44
#define VSOCK_TX_BUDGET    256
#define VSOCK_RX_BUDGET    256
#define VSOCK_RST_QUEUE    64
#define VSOCK_LINE_MAX     32         /* "CONNECT 4294967295\n" fits */
#define VSOCK_TBUF_CAP     (VSOCK_BUF_ALLOC + VSOCK_LINE_MAX)
#define VSOCK_PORT_BASE    (1u << 30) /* host ports for host-initiated connections */

enum vconn_state {
	VC_HANDSHAKE,     /* host connected, reading "CONNECT <port>\n" */
	VC_CONNECTING,    /* REQUEST to the guest sent or pending */
	VC_ESTABLISHED,
	VC_CLOSING,       /* we sent SHUTDOWN or owe an RST; freed after the RST */
};

/* Control packets a connection owes the guest. */
#define VP_REQUEST        0x01
#define VP_RESPONSE       0x02
#define VP_RST            0x04
#define VP_SHUTDOWN       0x08
#define VP_CREDIT_UPDATE  0x10
#define VP_CREDIT_REQUEST 0x20

struct vconn {
	struct vconn *next;
	int fd;                           /* host Unix socket */
	enum vconn_state state;
	uint32_t host_port, guest_port;
	unsigned int pending;             /* VP_* */
	bool readable, writable;          /* edge-triggered readiness we hold */
	bool host_eof;                    /* read 0: SHUTDOWN sent or pending */
	bool shut_wr;                     /* guest will send no more */
	uint32_t peer_buf_alloc;          /* guest's receive buffer */
	uint32_t peer_fwd_cnt;            /* guest's bytes consumed */
	uint32_t rx_cnt;                  /* bytes we sent to the guest */
	uint32_t fwd_cnt;                 /* guest bytes written to the host socket */
	uint32_t fwd_sent;                /* fwd_cnt the guest last heard of */
	uint8_t *tbuf;                    /* guest -> host bytes the socket refused */
	uint32_t tlen;
	uint32_t tskip;                   /* leading tbuf bytes that are ours ("OK") */
	bool credit_asked;                /* CREDIT_REQUEST sent, no update since */
	char line[VSOCK_LINE_MAX];        /* handshake line */
	unsigned int linelen;
};

struct vsock_rst {
	uint32_t guest_port, host_port;
};

struct vsock {
	struct eventloop *loop;           /* watching epfd, or NULL (unit tests) */
	struct device *dev;               /* our PCI device (lock), NULL in tests */
	uint64_t cid;
	char *path;                       /* listener path; PATH_<port> for guest connects */
	int listen_fd;
	int epfd;
	int kickfd;                       /* eventfd: work to do on the loop */
	struct vconn *conns;
	int nconns;
	uint32_t next_port;
	bool event_pending;               /* TRANSPORT_RESET owed to the guest */
	struct vsock_rst rst[VSOCK_RST_QUEUE];
	unsigned int nrst;
	struct virtq_elem *elem;          /* scratch for pops */
	struct virtq_elem *held;          /* a popped rx buffer not yet used */
	bool have_held;
	bool listen_paused;               /* listener out of the epoll set (EMFILE) */
	uint8_t held_pos[7];              /* restored: its position, to walk again */
	bool held_restore;
	uint64_t errors;                  /* malformed guest packets */
	char listen_tag, kick_tag;        /* epoll tags (addresses only) */
};

/* ---- helpers ---- */

static bool vsock_live(const struct vsock *v, const struct virtio_device *vdev)
{
	return (vdev->status & VIRTIO_STATUS_DRIVER_OK) && !vdev->broken &&
	       !(v->dev && v->dev->broken);
}

static void vsock_kick_self(struct vsock *v)
{
	uint64_t one = 1;

	if (write(v->kickfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("vsock: eventfd write: %m");
}

/* Credit the guest gives us now. */
static uint32_t vconn_peer_credit(const struct vconn *c)
{
	uint32_t used = c->rx_cnt - c->peer_fwd_cnt;

	return used >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - used;
}

static struct vconn *vsock_find(struct vsock *v, uint32_t guest_port, uint32_t host_port)
{
	for (struct vconn *c = v->conns; c; c = c->next)
		if (c->guest_port == guest_port && c->host_port == host_port)
			return c;
	return NULL;
}

static void vsock_listen_set(struct vsock *v, bool on);

static void vconn_free(struct vsock *v, struct vconn *c)
{
	for (struct vconn **pp = &v->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->fd >= 0) {
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	free(c->tbuf);
	free(c);
	v->nconns--;
	if (v->listen_paused)
		vsock_listen_set(v, true);
}

static void vsock_drop_all(struct vsock *v)
{
	while (v->conns)
		vconn_free(v, v->conns);
	v->nrst = 0;
}

/* New connection on host socket `fd` (owned from now on), or NULL. */
static struct vconn *vconn_new(struct vsock *v, int fd, enum vconn_state st)
{
	struct vconn *c;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET };

	if (v->nconns >= VSOCK_MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->state = st;
	c->writable = true;              /* until a write says EAGAIN */
	ev.data.ptr = c;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		free(c);
		return NULL;
	}
	c->next = v->conns;
	v->conns = c;
	v->nconns++;
	return c;
}

/* Queue an RST for a connection we do not have (bounded; excess dropped). */
static void vsock_orphan_rst(struct vsock *v, uint32_t guest_port, uint32_t host_port)
{
	if (v->nrst < VSOCK_RST_QUEUE)
		v->rst[v->nrst++] = (struct vsock_rst){ guest_port, host_port };
}

/* Abort `c`: the guest gets RST, then it is freed. */
static void vconn_reset(struct vconn *c)
{
	c->state = VC_CLOSING;
	c->pending = VP_RST;
	c->readable = false;
}

/* Pop from `vq`, believing an empty ring only after notifications were
 * re-enabled behind a full fence and the ring checked again: the core's
 * pop publishes avail_event without a fence before it reads the available
 * index, so a driver adding a buffer just then could see a stale event
 * index, not kick, and wait for us forever.  1, 0 or -EIO. */
static int vsock_pop(struct virtio_device *vdev, struct virtqueue *vq, struct virtq_elem *e)
{
	int rc = virtio_queue_pop(vdev, vq, e);

	if (rc == 0 && virtq_set_notify(vq, true))
		rc = virtio_queue_pop(vdev, vq, e);
	return rc;
}

/* ---- guest -> host bytes ---- */

/* Write buffered bytes to the host socket; true when all are out. */
static bool vconn_flush(struct vconn *c)
{
	while (c->tlen && c->writable) {
		ssize_t w = write(c->fd, c->tbuf, c->tlen);

		if (w < 0) {
			if (errno == EAGAIN)
				c->writable = false;
			else
				vconn_reset(c);
			break;
		}
		uint32_t ours = (uint32_t)w < c->tskip ? (uint32_t)w : c->tskip;

		memmove(c->tbuf, c->tbuf + w, c->tlen - (uint32_t)w);
		c->tlen -= (uint32_t)w;
		c->tskip -= ours;
		c->fwd_cnt += (uint32_t)w - ours;
	}
	if (!c->tlen && c->shut_wr)
		shutdown(c->fd, SHUT_WR);
	if (c->state == VC_ESTABLISHED && c->fwd_cnt - c->fwd_sent >= VSOCK_BUF_ALLOC / 4)
		c->pending |= VP_CREDIT_UPDATE;
	return c->tlen == 0;
}

/* Append `len` guest bytes to the connection's buffer; -1 when that goes
 * past the credit we gave. */
static int vconn_buffer(struct vconn *c, const struct virtq_elem *e, size_t off, uint32_t len)
{
	if (c->tlen - c->tskip + len > VSOCK_BUF_ALLOC)
		return -1;
	if (!c->tbuf && !(c->tbuf = malloc(VSOCK_TBUF_CAP)))
		return -1;
	virtq_elem_read(e, off, c->tbuf + c->tlen, len);
	c->tlen += len;
	return 0;
}

/* The handshake reply; not guest data, so not counted in fwd_cnt. */
static void vconn_send_ok(struct vconn *c)
{
	char line[VSOCK_LINE_MAX];
	int n = snprintf(line, sizeof(line), "OK %u\n", c->host_port);

	if (!c->tbuf && !(c->tbuf = malloc(VSOCK_TBUF_CAP))) {
		vconn_reset(c);
		return;
	}
	memcpy(c->tbuf + c->tlen, line, (size_t)n);
	c->tlen += (uint32_t)n;
	c->tskip += (uint32_t)n;
	vconn_flush(c);
}

/* ---- the parsers of guest bytes ---- */

int virtio_vsock_hdr_check(const struct vsock_hdr *h, size_t payload, uint64_t cid)
{
	if (le32toh(h->len) > VSOCK_MAX_PAYLOAD || le32toh(h->len) > payload)
		return -1;
	if (le64toh(h->src_cid) != cid || le64toh(h->dst_cid) != VSOCK_HOST_CID)
		return -1;
	return 0;
}

/* ---- guest -> device packets (tx queue) ---- */

/* The guest asked to connect to host port `port`. */
static void vsock_guest_connect(struct vsock *v, const struct vsock_hdr *h)
{
	uint32_t gport = le32toh(h->src_port), hport = le32toh(h->dst_port);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vconn *c;
	int fd;

	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->path, hport) >=
	    sizeof(sa.sun_path) ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		vsock_orphan_rst(v, gport, hport);
		return;
	}
	if (path_connect_unix(fd, sa.sun_path) < 0) {   /* confined for shoald */
		close(fd);
		vsock_orphan_rst(v, gport, hport);
		return;
	}
	c = vconn_new(v, fd, VC_ESTABLISHED);
	if (!c) {
		vsock_orphan_rst(v, gport, hport);
		return;
	}
	c->guest_port = gport;
	c->host_port = hport;
	c->peer_buf_alloc = le32toh(h->buf_alloc);
	c->peer_fwd_cnt = le32toh(h->fwd_cnt);
	c->pending |= VP_RESPONSE;
}

/* Up to `cap` iovecs covering bytes [VSOCK_HDR_LEN, VSOCK_HDR_LEN + max)
 * of the `n` buffers in `src`; returns the count. */
static int vsock_payload_iov(const struct iovec *src, unsigned int n, struct iovec *iov,
			     int cap, size_t max)
{
	size_t skip = VSOCK_HDR_LEN;
	int cnt = 0;

	for (unsigned int i = 0; i < n && cnt < cap && max; i++) {
		struct iovec x = src[i];

		if (skip >= x.iov_len) {
			skip -= x.iov_len;
			continue;
		}
		x.iov_base = (uint8_t *)x.iov_base + skip;
		x.iov_len -= skip;
		skip = 0;
		if (x.iov_len > max)
			x.iov_len = max;
		max -= x.iov_len;
		iov[cnt++] = x;
	}
	return cnt;
}

/* Guest payload for an established connection. */
static void vsock_guest_rw(struct vconn *c, const struct virtq_elem *e, uint32_t len)
{
	struct iovec iov[64];
	ssize_t w = 0;

	if (c->state != VC_ESTABLISHED || c->shut_wr) {
		vconn_reset(c);
		return;
	}
	if (!c->tlen && c->writable && len) {    /* straight from guest memory */
		w = writev(c->fd, iov, vsock_payload_iov(e->iov, e->out_num, iov, 64, len));
		if (w < 0 && errno != EAGAIN) {
			vconn_reset(c);
			return;
		}
		if (w < 0) {
			c->writable = false;
			w = 0;
		}
		if ((uint32_t)w > len)
			w = len;
		c->fwd_cnt += (uint32_t)w;
	}
	if ((uint32_t)w < len &&
	    vconn_buffer(c, e, VSOCK_HDR_LEN + (size_t)w, len - (uint32_t)w)) {
		vconn_reset(c);          /* the guest ignored our credit */
		return;
	}
	vconn_flush(c);
}

/* A guest packet for the known connection `c`. */
static void vsock_guest_op(struct vsock *v, struct vconn *c, const struct vsock_hdr *h,
			   const struct virtq_elem *e)
{
	uint32_t flags = le32toh(h->flags);

	c->peer_buf_alloc = le32toh(h->buf_alloc);
	c->peer_fwd_cnt = le32toh(h->fwd_cnt);
	c->credit_asked = false;
	switch (le16toh(h->op)) {
	case VSOCK_OP_RESPONSE:
		if (c->state != VC_CONNECTING) {
			vconn_reset(c);
			return;
		}
		c->state = VC_ESTABLISHED;
		vconn_send_ok(c);
		return;
	case VSOCK_OP_RW:
		vsock_guest_rw(c, e, le32toh(h->len));
		return;
	case VSOCK_OP_CREDIT_UPDATE:
		return;
	case VSOCK_OP_CREDIT_REQUEST:
		c->pending |= VP_CREDIT_UPDATE;
		return;
	case VSOCK_OP_SHUTDOWN:
		if ((flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) ==
		    (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) {
			vconn_flush(c);
			vconn_reset(c);
			return;
		}
		if (flags & VSOCK_SHUTDOWN_SEND) {
			c->shut_wr = true;
			vconn_flush(c);
		}
		return;
	case VSOCK_OP_RST:
		vconn_free(v, c);
		return;
	default:                                 /* INVALID, REQUEST again, unknown */
		vconn_reset(c);
		return;
	}
}

/* One tx chain from the guest. */
static void vsock_tx_one(struct vsock *v, struct virtq_elem *e)
{
	struct vsock_hdr h;
	struct vconn *c;
	uint16_t op;

	if (e->out_len < VSOCK_HDR_LEN ||
	    virtq_elem_read(e, 0, &h, VSOCK_HDR_LEN) != VSOCK_HDR_LEN ||
	    virtio_vsock_hdr_check(&h, (size_t)(e->out_len - VSOCK_HDR_LEN), v->cid)) {
		v->errors++;
		return;
	}
	op = le16toh(h.op);
	c = vsock_find(v, le32toh(h.src_port), le32toh(h.dst_port));
	if (le16toh(h.type) != VSOCK_TYPE_STREAM) {
		if (op != VSOCK_OP_RST)
			vsock_orphan_rst(v, le32toh(h.src_port), le32toh(h.dst_port));
		return;
	}
	if (!c && op == VSOCK_OP_REQUEST) {
		vsock_guest_connect(v, &h);
		return;
	}
	if (!c) {
		if (op != VSOCK_OP_RST)
			vsock_orphan_rst(v, le32toh(h.src_port), le32toh(h.dst_port));
		return;
	}
	if (c->state == VC_CLOSING && op != VSOCK_OP_RST)
		return;                          /* our RST is on its way */
	vsock_guest_op(v, c, &h, e);
}

static void vsock_rx_pump(struct vsock *v, struct virtio_device *vdev);

static void vsock_tx_process(struct vsock *v, struct virtio_device *vdev)
{
	struct virtqueue *vq = &vdev->queues[1];
	int budget = VSOCK_TX_BUDGET;

	while (budget > 0 && vsock_pop(vdev, vq, v->elem) == 1) {
		vsock_tx_one(v, v->elem);
		virtio_queue_fill(vdev, vq, v->elem, 0);
		budget--;
	}
	virtio_queue_flush(vdev, vq);
	if (budget == 0 && virtq_has_avail(vq))
		vsock_kick_self(v);
	vsock_rx_pump(v, vdev);
}

/* ---- device -> guest packets (rx queue) ---- */

/* The rx buffer to use next: held or freshly popped; NULL when none. */
static struct virtq_elem *vsock_rx_buf(struct vsock *v, struct virtio_device *vdev)
{
	struct virtqueue *vq = &vdev->queues[0];

	if (v->held_restore) {
		struct state_reader r;

		v->held_restore = false;
		state_reader_init(&r, v->held_pos, sizeof(v->held_pos));
		if (virtq_elem_restore(vq, &r, v->held)) {
			virtio_mark_broken(vdev, "vsock: saved rx buffer is no longer in the ring");
			return NULL;
		}
		v->have_held = true;
	}
	while (!v->have_held) {
		if (vsock_pop(vdev, vq, v->held) != 1)
			return NULL;
		if (v->held->in_len >= VSOCK_HDR_LEN)
			v->have_held = true;
		else
			virtio_queue_fill(vdev, vq, v->held, 0);   /* too small to use */
	}
	return v->held;
}

/* Write header `op` for connection (guest_port, host_port) and return the
 * held rx buffer with `len` payload bytes already in it. */
static void vsock_rx_put(struct vsock *v, struct virtio_device *vdev, struct vconn *c,
			 uint32_t gport, uint32_t hport, uint16_t op, uint32_t flags, uint32_t len)
{
	struct vsock_hdr h = {
		.src_cid = htole64(VSOCK_HOST_CID), .dst_cid = htole64(v->cid),
		.src_port = htole32(hport), .dst_port = htole32(gport), .len = htole32(len),
		.type = htole16(VSOCK_TYPE_STREAM), .op = htole16(op), .flags = htole32(flags),
		.buf_alloc = htole32(VSOCK_BUF_ALLOC), .fwd_cnt = htole32(c ? c->fwd_cnt : 0),
	};

	if (c)
		c->fwd_sent = c->fwd_cnt;
	virtq_elem_write(v->held, 0, &h, sizeof(h));
	virtio_queue_fill(vdev, &vdev->queues[0], v->held, VSOCK_HDR_LEN + len);
	v->have_held = false;
}

/* Send the most urgent control packet `c` owes; false when none. */
static bool vconn_send_ctrl(struct vsock *v, struct virtio_device *vdev, struct vconn *c)
{
	static const struct { unsigned int bit; uint16_t op; uint32_t flags; } order[] = {
		{ VP_RST, VSOCK_OP_RST, 0 },
		{ VP_REQUEST, VSOCK_OP_REQUEST, 0 },
		{ VP_RESPONSE, VSOCK_OP_RESPONSE, 0 },
		{ VP_SHUTDOWN, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND },
		{ VP_CREDIT_UPDATE, VSOCK_OP_CREDIT_UPDATE, 0 },
		{ VP_CREDIT_REQUEST, VSOCK_OP_CREDIT_REQUEST, 0 },
	};

	for (unsigned int i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (!(c->pending & order[i].bit))
			continue;
		c->pending &= ~order[i].bit;
		vsock_rx_put(v, vdev, c, c->guest_port, c->host_port, order[i].op, order[i].flags, 0);
		if (order[i].bit == VP_RST)
			vconn_free(v, c);
		return true;
	}
	return false;
}

/* Move host bytes of `c` into the held buffer as one RW packet; false when
 * nothing was produced. */
static bool vconn_send_data(struct vsock *v, struct virtio_device *vdev, struct vconn *c)
{
	struct iovec iov[64];
	uint32_t credit = vconn_peer_credit(c);
	size_t room = (size_t)(v->held->in_len - VSOCK_HDR_LEN), max;
	ssize_t n;

	if (c->state != VC_ESTABLISHED || !c->readable || c->host_eof)
		return false;
	if (!credit) {                     /* ask once per stall */
		if (c->credit_asked)
			return false;
		c->credit_asked = true;
		c->pending |= VP_CREDIT_REQUEST;
		return vconn_send_ctrl(v, vdev, c);
	}
	max = room < credit ? room : credit;
	if (max > VSOCK_MAX_PAYLOAD)
		max = VSOCK_MAX_PAYLOAD;
	n = readv(c->fd, iov, vsock_payload_iov(v->held->iov + v->held->out_num, v->held->in_num,
						iov, 64, max));
	if (n < 0 && errno == EAGAIN) {
		c->readable = false;
		return false;
	}
	if (n <= 0) {                                  /* EOF or error */
		c->host_eof = true;
		c->state = n == 0 ? VC_CLOSING : c->state;
		vsock_rx_put(v, vdev, c, c->guest_port, c->host_port,
			     n == 0 ? VSOCK_OP_SHUTDOWN : VSOCK_OP_RST,
			     n == 0 ? VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND : 0, 0);
		if (n < 0)
			vconn_free(v, c);
		return true;
	}
	c->rx_cnt += (uint32_t)n;
	vsock_rx_put(v, vdev, c, c->guest_port, c->host_port, VSOCK_OP_RW, 0, (uint32_t)n);
	return true;
}

/* One packet for `c` if it has one; `c` may be freed. */
static bool vconn_rx_one(struct vsock *v, struct virtio_device *vdev, struct vconn *c)
{
	if (c->pending && vconn_send_ctrl(v, vdev, c))
		return true;
	return vconn_send_data(v, vdev, c);
}

/* Fill rx buffers with whatever is owed: orphan RSTs, then per connection
 * control packets and data, round robin, until out of buffers or work. */
static void vsock_rx_pump(struct vsock *v, struct virtio_device *vdev)
{
	int budget = VSOCK_RX_BUDGET;
	bool progress = true;

	if (!vsock_live(v, vdev) || !vdev->queues[0].started)
		return;
	while (budget > 0 && progress && vsock_rx_buf(v, vdev)) {
		progress = false;
		if (v->nrst) {
			struct vsock_rst r = v->rst[--v->nrst];

			vsock_rx_put(v, vdev, NULL, r.guest_port, r.host_port, VSOCK_OP_RST, 0, 0);
			progress = true;
			budget--;
			continue;
		}
		for (struct vconn *c = v->conns, *next; c && budget > 0; c = next) {
			next = c->next;
			if (!vsock_rx_buf(v, vdev))
				break;
			if (vconn_rx_one(v, vdev, c)) {
				progress = true;
				budget--;
			}
		}
	}
	virtio_queue_flush(vdev, &vdev->queues[0]);
	if (budget == 0)
		vsock_kick_self(v);
}

/* Deliver TRANSPORT_RESET on the event queue if one is owed. */
static void vsock_send_event(struct vsock *v, struct virtio_device *vdev)
{
	struct virtqueue *vq = &vdev->queues[2];
	uint32_t id = htole32(VSOCK_EVENT_TRANSPORT_RESET);

	if (!v->event_pending || !vq->started || vsock_pop(vdev, vq, v->elem) != 1)
		return;
	virtq_elem_write(v->elem, 0, &id, sizeof(id));
	virtio_queue_complete(vdev, vq, v->elem, v->elem->in_len >= 4 ? 4 : 0);
	v->event_pending = false;
}

/* ---- host events ---- */

/* A host port for host-initiated `c` that no other connection to the same
 * guest port uses (at most VSOCK_MAX_CONNS tries fail). */
static void vconn_pick_port(struct vsock *v, struct vconn *c)
{
	for (;;) {
		struct vconn *o;

		c->host_port = VSOCK_PORT_BASE | (v->next_port++ & (VSOCK_PORT_BASE - 1));
		for (o = v->conns; o; o = o->next)
			if (o != c && o->guest_port == c->guest_port && o->host_port == c->host_port)
				break;
		if (!o)
			return;
	}
}

/* Read the handshake line; once complete, owe the guest a REQUEST.
 * 0 (done or more to come), -1 to drop the connection. */
static int vconn_handshake(struct vsock *v, struct vconn *c)
{
	while (c->linelen < VSOCK_LINE_MAX - 1) {
		char ch;
		ssize_t n = read(c->fd, &ch, 1);
		unsigned long port;
		char *end;

		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		if (ch != '\n') {
			c->line[c->linelen++] = ch;
			continue;
		}
		c->line[c->linelen] = 0;
		if (strncmp(c->line, "CONNECT ", 8) || !c->line[8])
			return -1;
		port = strtoul(c->line + 8, &end, 10);
		if (*end || port > UINT32_MAX)
			return -1;
		c->guest_port = (uint32_t)port;
		vconn_pick_port(v, c);
		c->state = VC_CONNECTING;
		c->pending |= VP_REQUEST;
		return 0;
	}
	return -1;
}

/* Watch the listener (or stop: out of fds, accept would fail forever and
 * the level-triggered listener would spin the loop). */
static void vsock_listen_set(struct vsock *v, bool on)
{
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &v->listen_tag };

	if (v->listen_paused == !on)
		return;
	if (epoll_ctl(v->epfd, EPOLL_CTL_MOD, v->listen_fd, &ev) == 0)
		v->listen_paused = !on;
}

/* accept4 failed with errno: pause the listener unless it is transient. */
static void vsock_accept_failed(struct vsock *v)
{
	if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
		return;
	log_warn("vsock: accept on '%s': %m; not accepting until a connection closes", v->path);
	vsock_listen_set(v, false);
}

static void vsock_accept(struct vsock *v)
{
	for (;;) {
		int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct vconn *c;

		if (fd < 0) {
			vsock_accept_failed(v);
			return;
		}
		c = vconn_new(v, fd, VC_HANDSHAKE);
		if (c && vconn_handshake(v, c))
			vconn_free(v, c);
	}
}

/* Not live: take waiting host connections off the backlog and close them. */
static void vsock_refuse(struct vsock *v)
{
	int fd;

	while ((fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		close(fd);
	vsock_accept_failed(v);
}

/* Readiness on a connection's host socket. */
static void vconn_event(struct vsock *v, struct vconn *c, uint32_t ev)
{
	if (ev & EPOLLOUT)
		c->writable = true;
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
		c->readable = true;
	if (c->state == VC_HANDSHAKE) {
		if (vconn_handshake(v, c) || (ev & (EPOLLHUP | EPOLLERR)))
			vconn_free(v, c);
		return;
	}
	if (ev & EPOLLERR) {
		vconn_reset(c);
		return;
	}
	if (c->tlen)
		vconn_flush(c);
}

void virtio_vsock_poll(struct virtio_device *vdev)
{
	struct vsock *v = vdev->priv;
	struct epoll_event evs[32];
	int n = epoll_wait(v->epfd, evs, 32, 0);
	bool live = vsock_live(v, vdev);

	for (int i = 0; i < n; i++) {
		void *tag = evs[i].data.ptr;
		uint64_t x;

		if (tag == &v->kick_tag) {
			if (read(v->kickfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
				log_debug("vsock: eventfd read: %m");
		} else if (tag == &v->listen_tag) {
			if (live)
				vsock_accept(v);
			else
				vsock_refuse(v);
		} else {
			vconn_event(v, (struct vconn *)tag, evs[i].events);
		}
	}
	if (!live)
		return;
	vsock_send_event(v, vdev);
	if (virtq_has_avail(&vdev->queues[1]))
		vsock_tx_process(v, vdev);
	else
		vsock_rx_pump(v, vdev);
}

/* Event loop callback: the device epoll is readable. */
static int vsock_on_event(int fd, uint32_t events, void *opaque)
{
	struct vsock *v = opaque;
	struct virtio_device *vdev;

	pthread_mutex_lock(&v->dev->lock);
	vdev = virtio_pci_vdev(v->dev);
	if (vdev)
		virtio_vsock_poll(vdev);
	pthread_mutex_unlock(&v->dev->lock);
	return 0;
}

int virtio_vsock_event_fd(struct virtio_device *vdev)
{
	return ((struct vsock *)vdev->priv)->epfd;
}

int virtio_vsock_conn_count(struct virtio_device *vdev)
{
	return ((struct vsock *)vdev->priv)->nconns;
}

/* ---- virtio ops ---- */

static void vsock_queue_notify(struct virtio_device *vdev, uint16_t q)
{
	struct vsock *v = vdev->priv;

	if (q == 1)
		vsock_tx_process(v, vdev);
	else if (q == 0)
		vsock_rx_pump(v, vdev);
	else if (q == 2)
		vsock_send_event(v, vdev);
}

static uint64_t vsock_features(struct virtio_device *vdev)
{
	return 0;                  /* stream only: no feature bit needed */
}

static void vsock_config_read(struct virtio_device *vdev, uint32_t off, void *data, uint32_t len)
{
	const struct vsock *v = vdev->priv;
	uint64_t cid = htole64(v->cid);

	memcpy(data, (uint8_t *)&cid + off, len);
}

static int vsock_activate(struct virtio_device *vdev)
{
	vsock_kick_self(vdev->priv);     /* serve connections that waited */
	return 0;
}

static void vsock_reset(struct virtio_device *vdev)
{
	struct vsock *v = vdev->priv;

	vsock_drop_all(v);
	v->have_held = false;
	v->held_restore = false;
	v->event_pending = false;
}

static void vsock_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct vsock *v = vdev->priv;

	state_put_u64(w, v->cid);
	state_put_u8(w, v->have_held || v->held_restore);
	if (v->held_restore)
		state_put_bytes(w, v->held_pos, sizeof(v->held_pos));
	else if (v->have_held)
		virtq_elem_save(v->held, w);
}

static int vsock_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *r)
{
	struct vsock *v = vdev->priv;
	uint64_t cid = state_get_u64(r);

	if (r->error)
		return -1;
	if (cid != v->cid)      /* a clone's new CID: read again at the reset below */
		log_info("vsock: CID %llu (the snapshot's was %llu)", (unsigned long long)v->cid,
			 (unsigned long long)cid);
	v->have_held = false;
	v->held_restore = state_get_u8(r) != 0;
	if (v->held_restore)
		state_get_bytes(r, v->held_pos, sizeof(v->held_pos));
	if (r->error)
		return -1;
	vsock_drop_all(v);
	v->event_pending = (vdev->status & VIRTIO_STATUS_DRIVER_OK) != 0;
	vsock_kick_self(v);
	return 0;
}

static void vsock_free(struct vsock *v)
{
	vsock_drop_all(v);
	if (v->epfd >= 0) {
		if (v->loop)
			eventloop_del(v->loop, v->epfd);
		close(v->epfd);
	}
	if (v->kickfd >= 0)
		close(v->kickfd);
	if (v->listen_fd >= 0) {
		close(v->listen_fd);
		unlink(v->path);
	}
	free(v->path);
	free(v->elem);
	free(v->held);
	free(v);
}

static void vsock_destroy(struct virtio_device *vdev)
{
	if (vdev->priv)
		vsock_free(vdev->priv);
	vdev->priv = NULL;
}

static const struct virtio_device_ops vsock_ops = {
	.device_id = VIRTIO_ID_VSOCK,
	.name = "virtio-vsock",
	.num_queues = 3,
	.queue_max_size = VSOCK_QUEUE_SIZE,
	.config_size = 8,
	.state_version = VSOCK_STATE_VERSION,
	.features = vsock_features,
	.config_read = vsock_config_read,
	.queue_notify = vsock_queue_notify,
	.activate = vsock_activate,
	.reset = vsock_reset,
	.save = vsock_save,
	.restore = vsock_restore,
	.destroy = vsock_destroy,
};

/* ---- construction ---- */

/* Bind and listen on `path`, replacing a stale socket; fd or -1 with `e`. */
static int vsock_listen(const char *path, struct error *e)
{
	struct sockaddr_un sa;
	int fd;

	if (strlen(path) + 12 >= sizeof(sa.sun_path))
		return error_set(e, EXIT_USAGE, "vsock: socket path '%s' is too long", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* path_bind_unix replaces a stale socket; confined for shoald */
	if (fd < 0 || path_bind_unix(fd, path) < 0 || listen(fd, 64) < 0) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		return error_set(e, EXIT_HOST, "vsock: cannot listen on '%s': %s", path, strerror(err));
	}
	return fd;
}

const struct virtio_device_ops *virtio_vsock_new(uint64_t cid, const char *path, void **priv,
						 struct error *e)
{
	struct vsock *v = calloc(1, sizeof(*v));
	struct epoll_event lev = { .events = EPOLLIN }, kev = { .events = EPOLLIN };

	if (!v) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	v->listen_fd = v->epfd = v->kickfd = -1;
	v->cid = cid;
	v->next_port = 0;
	v->path = strdup(path);
	v->elem = malloc(sizeof(*v->elem));
	v->held = malloc(sizeof(*v->held));
	if (!v->path || !v->elem || !v->held) {
		error_set(e, EXIT_HOST, "out of memory");
		goto fail;
	}
	v->listen_fd = vsock_listen(path, e);
	if (v->listen_fd < 0)
		goto fail;
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	v->kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lev.data.ptr = &v->listen_tag;
	kev.data.ptr = &v->kick_tag;
	if (v->epfd < 0 || v->kickfd < 0 ||
	    epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->listen_fd, &lev) < 0 ||
	    epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->kickfd, &kev) < 0) {
		error_set(e, EXIT_HOST, "vsock: cannot set up events: %s", strerror(errno));
		goto fail;
	}
	*priv = v;
	return &vsock_ops;
fail:
	vsock_free(v);
	return NULL;
}

int virtio_vsock_create(const struct device_host *host, uint32_t cid, const char *path,
			struct error *e)
{
	const struct virtio_device_ops *ops;
	void *priv = NULL;
	struct vsock *v;

	if (!path)
		return error_set(e, EXIT_USAGE, "vsock: no socket path");
	ops = virtio_vsock_new(cid, path, &priv, e);
	if (!ops)
		return -1;
	v = priv;
	/* virtio-vsock has no legacy interface (it came after virtio 1.0) */
	if (virtio_pci_create(host, ops, priv, "virtio-vsock0", VIRTIO_PCI_MODERN_ONLY, &v->dev, e))
		return -1;
	if (!host->loop || eventloop_add(host->loop, v->epfd, EPOLLIN, vsock_on_event, v) < 0)
		return error_set(e, EXIT_HOST, "vsock: cannot watch the socket: %s", strerror(errno));
	v->loop = host->loop;
	return 0;
}
