/*
 * virtio_net.c - virtio network device (virtio 1.2 section 5.1) on a TAP.
 *
 * One device per `--net`: N queue pairs (rx 2k, tx 2k+1) and a control
 * queue (2N with MQ negotiated, 2 without).  Each pair has its own host fd:
 * a TAP queue opened with IFF_VNET_HDR (and IFF_MULTI_QUEUE for N > 1), or
 * one fd handed in by the caller (a TAP or any datagram fd: tap.h).
 *
 *   guest TX ring ──pop──> header checked ──writev──> TAP ──> host stack
 *   guest RX ring <──fill── stash of popped rx buffers <──read── TAP
 *
 * TX: a kick pops up to NET_TX_BUDGET chains, checks each header (a copy:
 * the guest cannot change it after the check), and writes header + frame to
 * the fd in one writev, the frame bytes straight from guest memory.  Work
 * left over after the budget is signalled on an eventfd, so one kick never
 * holds the device lock for long and no chain is forgotten.
 *
 * RX: each pair's fd sits in the device's own epoll set, which the VM's
 * event loop watches.  A readable fd is read into a host buffer (so the true
 * frame length is known before any guest byte is written), then copied into
 * rx buffers popped from the ring: one buffer without MRG_RXBUF, as many as
 * needed with it (num_buffers in the first header).  Buffers are popped into
 * a small per-pair stash and used in order; a frame that does not fit is
 * dropped and counted while the buffers stay stashed for the next frame.
 * When the ring is empty the fd is taken out of the epoll set (EPOLL_CTL_MOD
 * to no events) until the driver kicks the rx queue: the device never spins.
 *
 * Offloads: with a vnet header the TAP accepts CSUM/TSO/UFO frames from us,
 * so CSUM and HOST_* are offered; GUEST_* only when TUNSETOFFLOAD was
 * accepted by the probe.  At DRIVER_OK the TAP gets the negotiated header
 * size (12 with VERSION_1 or MRG_RXBUF, else 10) and offload set.
 *
 * Threads: everything runs under the struct device lock: queue_notify on a
 * vCPU or the event loop (ioeventfd), the fd and eventfd events on the
 * event loop (net_on_event).  Host fds are non-blocking; nothing here waits.
 *
 * Invariants: a pair's fd is polled only while the device is live and the
 * pair active, and is switched off when a frame found no buffers (until the
 * next rx kick); every stash entry is a popped, unused element of that
 * pair's rx queue; `frame_len` > 0 means a frame is waiting for buffers.
 *
 * Saved state (version 1): mac[6] | u16 active pairs | u16 pairs | per
 * pair: u16 nstash | virtq_elem_save x nstash | 8 x u64 counters.  Stashed
 * rx buffers are walked again from the ring on first use after restore.
 */
#include "devices/virtio_net.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>
#include <jansson.h>

#include "devices/device.h"
#include "devices/tap.h"
#include "devices/virtio_pci.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "devices/devconfig.h"
#include "base/eventloop.h"

#define NET_QUEUE_SIZE    256
#define NET_CONFIG_SIZE   12          /* mac, status, max_virtqueue_pairs, mtu */
#define NET_STATE_VERSION 1
#define NET_TX_BUDGET     256         /* chains per kick before yielding */
#define NET_RX_BUDGET     256         /* frames per wake-up */
#define NET_CTRL_BUDGET   64
#define NET_RX_STASH      64          /* popped rx buffers per pair (MRG) */
#define NET_RX_MAX_IOV    32          /* iovecs kept per rx buffer */
#define NET_BOUNCE        (VIRTIO_NET_HDR_LEN + VIRTIO_NET_MAX_FRAME + 1)
#define NET_EV_KICK       0xffffu     /* epoll tag of the leftover-work eventfd */

/* An rx buffer popped from the ring and not yet used. */
struct net_rxbuf {
	uint16_t id, ndesc, slot;       /* for virtq_fill / virtq_elem_save */
	bool slot_wrap;
	uint32_t len;                   /* writable bytes in iov */
	unsigned int niov;
	struct iovec iov[NET_RX_MAX_IOV];
};

struct net_pair {
	int fd;                         /* TAP queue or frame fd; -1 none */
	bool polling;                   /* fd has EPOLLIN in the device epoll */
	bool dead;                      /* fd hung up; never polled again */
	bool tx_more;                   /* TX work left after the budget */
	uint8_t *frame;                 /* NET_BOUNCE bytes: host header + frame */
	uint32_t frame_len;             /* bytes waiting in `frame`, 0 none */
	struct net_rxbuf *stash;        /* NET_RX_STASH entries */
	unsigned int nstash;
	uint8_t *restore_pos;           /* saved stash positions to walk again */
	unsigned int nrestore;
	struct virtio_net_qstats rx, tx;
};

struct net {
	struct eventloop *loop;         /* watching epfd, or NULL (unit tests) */
	struct device *dev;             /* our PCI device (lock), NULL in tests */
	char name[32];
	struct tap_info info;           /* what the fds are */
	uint16_t npairs;                /* queue pairs the device has */
	uint16_t active;                /* pairs in use (VQ_PAIRS_SET) */
	uint8_t mac[6];
	bool keep_mac;                  /* restore: keep mac (a clone's), not the saved one */
	int epfd;                       /* the pairs' fds and kickfd */
	int kickfd;                     /* eventfd: budgeted work left over */
	bool ctrl_more;                 /* control work left after the budget */
	struct virtq_elem *elem;        /* scratch for pops */
	struct iovec *txiov;            /* scratch: VIRTQ_ELEM_MAX_IOV + 1 */
	uint8_t *txbuf;                 /* scratch: linearised frames */
	uint64_t ctrl_cmds, ctrl_errors;
	struct net_pair pair[VIRTIO_NET_MAX_PAIRS];
};

/* ---- small helpers ---- */

static uint64_t net_bit(unsigned int b)
{
	return 1ull << b;
}

/* Header length the driver uses (and the TAP is set to). */
static uint32_t net_hdr_len(const struct virtio_device *vdev)
{
	return virtio_has_feature(vdev, VIRTIO_F_VERSION_1) ||
	       virtio_has_feature(vdev, VIRTIO_NET_F_MRG_RXBUF) ? VIRTIO_NET_HDR_LEN
								 : VIRTIO_NET_HDR_LEN_LEGACY;
}

/* Header length on the host fd: the guest's when the fd carries one. */
static uint32_t net_host_hdr_len(const struct net *n, const struct virtio_device *vdev)
{
	return n->info.vnet_hdr ? net_hdr_len(vdev) : 0;
}

/* Control queue index under the negotiated features. */
static uint16_t net_ctrl_queue(const struct net *n, const struct virtio_device *vdev)
{
	return virtio_has_feature(vdev, VIRTIO_NET_F_MQ) ? (uint16_t)(2 * n->npairs) : 2;
}

static bool net_live(const struct net *n, const struct virtio_device *vdev)
{
	return (vdev->status & VIRTIO_STATUS_DRIVER_OK) && !vdev->broken &&
	       !(n->dev && n->dev->broken);
}

/* Start or stop watching pair `p`'s fd for frames. */
static void net_poll_set(struct net *n, uint16_t p, bool on)
{
	struct net_pair *pr = &n->pair[p];
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.u64 = p };

	if (pr->fd < 0 || pr->dead || pr->polling == on)
		return;
	if (epoll_ctl(n->epfd, EPOLL_CTL_MOD, pr->fd, &ev) == 0)
		pr->polling = on;
}

static void net_poll_all_off(struct net *n)
{
	for (uint16_t p = 0; p < n->npairs; p++)
		net_poll_set(n, p, false);
}

/* Ask the event loop to come back for leftover work. */
static void net_kick_self(struct net *n)
{
	uint64_t one = 1;

	if (write(n->kickfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("%s: eventfd write: %m", n->name);
}

/* Pop from `vq`, believing an empty ring only after notifications were
 * re-enabled behind a full fence and the ring checked again: the core's
 * pop publishes avail_event without a fence before it reads the available
 * index, so a driver adding a buffer just then could see a stale event
 * index, not kick, and wait for us forever.  1, 0 or -EIO. */
static int net_pop(struct virtio_device *vdev, struct virtqueue *vq, struct virtq_elem *e)
{
	int rc = virtio_queue_pop(vdev, vq, e);

	if (rc == 0 && virtq_set_notify(vq, true))
		rc = virtio_queue_pop(vdev, vq, e);
	return rc;
}

/* ---- the parsers of guest bytes ---- */

/* Does the GSO type in `h` match a negotiated HOST_* offload? */
static bool net_gso_allowed(const struct virtio_net_hdr *h, uint64_t f)
{
	uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;

	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !(f & net_bit(VIRTIO_NET_F_HOST_ECN)))
		return false;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_TCPV4: return f & net_bit(VIRTIO_NET_F_HOST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6: return f & net_bit(VIRTIO_NET_F_HOST_TSO6);
	case VIRTIO_NET_HDR_GSO_UDP:   return f & net_bit(VIRTIO_NET_F_HOST_UFO);
	default:                       return false;
	}
}

int virtio_net_tx_hdr_check(const struct virtio_net_hdr *h, size_t frame_len, uint64_t features)
{
	uint16_t cstart = le16toh(h->csum_start), coff = le16toh(h->csum_offset);

	if (frame_len < 14 || frame_len > VIRTIO_NET_MAX_FRAME)
		return -1;
	if (h->flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return -1;
	if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if (!(features & net_bit(VIRTIO_NET_F_CSUM)))
			return -1;
		if ((size_t)cstart + coff + 2 > frame_len)
			return -1;
	}
	if (h->gso_type == VIRTIO_NET_HDR_GSO_NONE)
		return 0;
	if (!net_gso_allowed(h, features) || !le16toh(h->gso_size))
		return -1;
	return 0;
}

uint8_t virtio_net_ctrl_parse(const uint8_t *req, size_t len, uint64_t features,
			      uint16_t max_pairs, uint16_t *pairs)
{
	uint16_t want;

	if (len < 2)
		return VIRTIO_NET_ERR;
	if (req[0] != VIRTIO_NET_CTRL_MQ || req[1] != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET ||
	    !(features & net_bit(VIRTIO_NET_F_MQ)) || len != 4)
		return VIRTIO_NET_ERR;
	want = (uint16_t)(req[2] | req[3] << 8);
	if (want < 1 || want > max_pairs)
		return VIRTIO_NET_ERR;
	*pairs = want;
	return VIRTIO_NET_OK;
}

/* ---- TX ---- */

/* Write `cnt` iovecs as one frame; linearise when there are too many. */
static ssize_t net_tx_write(struct net *n, int fd, struct iovec *iov, int cnt)
{
	size_t len = 0;

	if (cnt <= IOV_MAX)
		return writev(fd, iov, cnt);
	for (int i = 0; i < cnt; i++) {
		if (len + iov[i].iov_len > NET_BOUNCE)
			return -1;
		memcpy(n->txbuf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	return write(fd, n->txbuf, len);
}

/* Build the iovecs for `elem`: our checked header copy, then the frame
 * bytes (the element's out-buffers after the guest header).  Returns the
 * count. */
static int net_tx_iov(struct net *n, struct virtq_elem *elem, const void *hdr,
		      uint32_t host_hdr, uint32_t skip)
{
	int cnt = 0;

	if (host_hdr)
		n->txiov[cnt++] = (struct iovec){ .iov_base = (void *)hdr, .iov_len = host_hdr };
	for (unsigned int i = 0; i < elem->out_num; i++) {
		struct iovec v = elem->iov[i];

		if (skip >= v.iov_len) {
			skip -= (uint32_t)v.iov_len;
			continue;
		}
		v.iov_base = (uint8_t *)v.iov_base + skip;
		v.iov_len -= skip;
		skip = 0;
		n->txiov[cnt++] = v;
	}
	return cnt;
}

/* Send one TX chain; counts what happened. */
static void net_tx_one(struct net *n, struct virtio_device *vdev, struct net_pair *pr,
		       struct virtq_elem *elem)
{
	struct virtio_net_hdr h = { 0 };
	uint32_t glen = net_hdr_len(vdev);
	size_t flen;
	ssize_t w;

	if (elem->out_len < glen || virtq_elem_read(elem, 0, &h, glen) != glen) {
		pr->tx.errors++;
		return;
	}
	flen = (size_t)(elem->out_len - glen);
	if (virtio_net_tx_hdr_check(&h, flen, vdev->guest_features)) {
		pr->tx.errors++;
		return;
	}
	h.num_buffers = 0;
	w = net_tx_write(n, pr->fd, n->txiov,
			 net_tx_iov(n, elem, &h, net_host_hdr_len(n, vdev), glen));
	if (w < 0) {
		if (errno == EAGAIN || errno == ENOBUFS)
			pr->tx.dropped++;
		else
			pr->tx.errors++;
		return;
	}
	pr->tx.frames++;
	pr->tx.bytes += flen;
}

/* Drain TX queue of pair `p`, at most NET_TX_BUDGET chains. */
static void net_tx_process(struct net *n, struct virtio_device *vdev, uint16_t p)
{
	struct virtqueue *vq = &vdev->queues[2 * p + 1];
	struct net_pair *pr = &n->pair[p];
	int budget = NET_TX_BUDGET;

	pr->tx_more = false;
	while (budget > 0 && net_pop(vdev, vq, n->elem) == 1) {
		net_tx_one(n, vdev, pr, n->elem);
		virtio_queue_fill(vdev, vq, n->elem, 0);
		budget--;
	}
	virtio_queue_flush(vdev, vq);
	if (budget == 0 && virtq_has_avail(vq)) {
		pr->tx_more = true;
		net_kick_self(n);
	}
}

/* ---- RX ---- */

/* Turn the popped scratch element into a stash entry of pair `pr`. */
static void net_stash_add(struct net_pair *pr, const struct virtq_elem *e)
{
	struct net_rxbuf *b = &pr->stash[pr->nstash++];

	b->id = e->id;
	b->ndesc = e->ndesc;
	b->slot = e->slot;
	b->slot_wrap = e->slot_wrap;
	b->len = 0;
	b->niov = 0;
	for (unsigned int i = 0; i < e->in_num && i < NET_RX_MAX_IOV; i++) {
		b->iov[b->niov++] = e->iov[e->out_num + i];
		b->len += (uint32_t)e->iov[e->out_num + i].iov_len;
	}
}

/* Return the stash entry `b` to the driver with `len` bytes written. */
static void net_rxbuf_fill(struct net *n, struct virtio_device *vdev, struct virtqueue *vq,
			   const struct net_rxbuf *b, uint32_t len)
{
	struct virtq_elem *e = n->elem;

	e->id = b->id;
	e->ndesc = b->ndesc;
	e->slot = b->slot;
	e->slot_wrap = b->slot_wrap;
	e->out_num = 0;
	e->out_len = 0;
	e->in_num = 1;
	e->in_len = b->len;
	virtio_queue_fill(vdev, vq, e, len);
}

/* Walk again the rx buffers that were stashed when the state was saved. */
static int net_rx_rewalk(struct net *n, struct virtqueue *vq, struct net_pair *pr)
{
	struct state_reader r;

	state_reader_init(&r, pr->restore_pos, (size_t)pr->nrestore * 7);
	for (unsigned int i = 0; i < pr->nrestore; i++) {
		if (virtq_elem_restore(vq, &r, n->elem))
			return -1;
		net_stash_add(pr, n->elem);
	}
	free(pr->restore_pos);
	pr->restore_pos = NULL;
	pr->nrestore = 0;
	return 0;
}

/* Pop one more rx buffer into the stash: 1, 0 (ring empty) or -1 (broken). */
static int net_rx_pop(struct net *n, struct virtio_device *vdev, struct virtqueue *vq,
		      struct net_pair *pr)
{
	for (;;) {
		int rc = net_pop(vdev, vq, n->elem);

		if (rc <= 0)
			return rc < 0 ? -1 : 0;
		if (n->elem->in_num) {
			net_stash_add(pr, n->elem);
			return 1;
		}
		pr->rx.errors++;           /* a read-only rx buffer: give it back */
		virtio_queue_fill(vdev, vq, n->elem, 0);
	}
}

/* Stop using pair `pr`'s fd for good (it hung up or keeps failing). */
static void net_pair_dead(struct net *n, struct net_pair *pr, const char *why)
{
	log_warn("%s: host fd %d: %s; no more frames from it", n->name, pr->fd, why);
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, pr->fd, NULL);
	pr->dead = true;
	pr->polling = false;
}

/* Read one frame from the fd into pr->frame: 1 (read, maybe dropped),
 * 0 (nothing there), -1 (the fd failed and is now dead). */
static int net_rx_read(struct net *n, struct net_pair *pr, uint32_t host_hdr)
{
	ssize_t got = read(pr->fd, pr->frame, NET_BOUNCE);

	if (got < 0 && (errno == EAGAIN || errno == EINTR || errno == ENOBUFS || errno == ENOMEM))
		return 0;
	if (got < 0) {
		pr->rx.errors++;
		net_pair_dead(n, pr, strerror(errno));
		return -1;
	}
	if ((size_t)got >= NET_BOUNCE || (size_t)got < host_hdr + 14) {
		pr->rx.dropped += got > 0;
		return got > 0 ? 1 : 0;    /* dropped: try the next one */
	}
	pr->frame_len = (uint32_t)got;
	return 1;
}

/* Copy `len` bytes from `src` into buffer `b` at offset `off`. */
static void net_rxbuf_write(const struct net_rxbuf *b, uint32_t off, const uint8_t *src,
			    uint32_t len)
{
	for (unsigned int i = 0; i < b->niov && len; i++) {
		uint32_t l = (uint32_t)b->iov[i].iov_len, k;

		if (off >= l) {
			off -= l;
			continue;
		}
		k = l - off < len ? l - off : len;
		memcpy((uint8_t *)b->iov[i].iov_base + off, src, k);
		src += k;
		len -= k;
		off = 0;
	}
}

/* Can the guest take the frame the host header describes?  A partial
 * checksum needs GUEST_CSUM, a GSO frame the matching GUEST_* feature.  The
 * TAP's offload settings already ensure this; the check keeps a TAP fd
 * handed in by someone else from feeding the guest what it did not ask for. */
static bool net_rx_hdr_ok(const struct virtio_device *vdev, const struct net_pair *pr,
			  uint32_t host_hdr)
{
	struct virtio_net_hdr h = { 0 };
	uint8_t gso;

	memcpy(&h, pr->frame, host_hdr < 10 ? host_hdr : 10);
	gso = h.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
	if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	    !virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM))
		return false;
	if ((h.gso_type & VIRTIO_NET_HDR_GSO_ECN) && !virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_ECN))
		return false;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:  return true;
	case VIRTIO_NET_HDR_GSO_TCPV4: return virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6: return virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO6);
	case VIRTIO_NET_HDR_GSO_UDP:   return virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_UFO);
	default:                       return false;
	}
}

/* Build the guest's header from the host's (or none) for `nbufs` buffers;
 * checksum flags only for a driver that negotiated GUEST_CSUM (5.1.6.4). */
static void net_rx_hdr(const struct virtio_device *vdev, const struct net_pair *pr,
		       uint32_t host_hdr, uint16_t nbufs, struct virtio_net_hdr *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h, pr->frame, host_hdr < 10 ? host_hdr : 10);
	if (!virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM))
		h->flags = 0;
	h->num_buffers = htole16(nbufs);
}

/* How many stashed buffers the frame needs; 0 when the stash (full) cannot
 * hold it, -1 when more must be popped first. */
static int net_rx_fit(const struct net_pair *pr, uint32_t need, unsigned int cap)
{
	uint32_t have = 0;

	for (unsigned int i = 0; i < pr->nstash && i < cap; i++) {
		have += pr->stash[i].len;
		if (have >= need)
			return (int)i + 1;
	}
	return pr->nstash >= cap ? 0 : -1;
}

/* Copy the waiting frame into the first `nb` stash entries and return them. */
static void net_rx_copy(struct net *n, struct virtio_device *vdev, struct virtqueue *vq,
			struct net_pair *pr, int nb, uint32_t host_hdr, uint32_t glen)
{
	struct virtio_net_hdr h;
	uint32_t flen = pr->frame_len - host_hdr, total = glen + flen, done = 0;
	const uint8_t *src = pr->frame + host_hdr;

	net_rx_hdr(vdev, pr, host_hdr, (uint16_t)nb, &h);
	for (int i = 0; i < nb; i++) {
		const struct net_rxbuf *b = &pr->stash[i];
		uint32_t put = b->len < total - done ? b->len : total - done, hpart = 0;

		if (done < glen) {
			hpart = glen - done < put ? glen - done : put;
			net_rxbuf_write(b, 0, (const uint8_t *)&h + done, hpart);
		}
		if (put > hpart)
			net_rxbuf_write(b, hpart, src + (done + hpart - glen), put - hpart);
		done += put;
		net_rxbuf_fill(n, vdev, vq, b, put);
	}
	pr->nstash -= (unsigned int)nb;
	memmove(pr->stash, pr->stash + nb, pr->nstash * sizeof(*pr->stash));
	pr->rx.frames++;
	pr->rx.bytes += flen;
}

/* Deliver the waiting frame: 1 done (or dropped), 0 need buffers, -1 broken. */
static int net_rx_deliver(struct net *n, struct virtio_device *vdev, struct virtqueue *vq,
			  struct net_pair *pr)
{
	uint32_t host_hdr = net_host_hdr_len(n, vdev), glen = net_hdr_len(vdev);
	unsigned int cap = virtio_has_feature(vdev, VIRTIO_NET_F_MRG_RXBUF) ? NET_RX_STASH : 1;
	uint32_t need = glen + pr->frame_len - host_hdr;
	int nb;

	if (!net_rx_hdr_ok(vdev, pr, host_hdr)) {
		pr->rx.errors++;
		pr->frame_len = 0;
		return 1;
	}
	while ((nb = net_rx_fit(pr, need, cap)) < 0) {
		int rc = net_rx_pop(n, vdev, vq, pr);

		if (rc <= 0)
			return rc;
	}
	if (nb == 0)
		pr->rx.dropped++;          /* larger than the buffers: drop it */
	else
		net_rx_copy(n, vdev, vq, pr, nb, host_hdr, glen);
	pr->frame_len = 0;
	return 1;
}

/* Move frames from pair `p`'s fd into its rx queue until the fd is empty,
 * the ring is empty (stop polling until a kick) or the budget is spent. */
static void net_rx_process(struct net *n, struct virtio_device *vdev, uint16_t p)
{
	struct virtqueue *vq = &vdev->queues[2 * p];
	struct net_pair *pr = &n->pair[p];
	uint32_t host_hdr = net_host_hdr_len(n, vdev);

	if (!net_live(n, vdev) || p >= n->active || !vq->started || pr->dead) {
		net_poll_set(n, p, false);
		return;
	}
	if (pr->nrestore && net_rx_rewalk(n, vq, pr)) {
		virtio_mark_broken(vdev, "rx queue %u: saved buffers no longer in the ring", 2 * p);
		return;
	}
	for (int budget = NET_RX_BUDGET; budget > 0; budget--) {
		int rc = pr->frame_len ? 1 : net_rx_read(n, pr, host_hdr);

		if (rc == 0)
			net_poll_set(n, p, true);      /* drained: wait for the next frame */
		if (rc <= 0)
			break;
		if (!pr->frame_len)
			continue;
		rc = net_rx_deliver(n, vdev, vq, pr);
		if (rc < 0)
			break;
		if (rc == 0 && !virtq_set_notify(vq, true)) {
			net_poll_set(n, p, false);     /* until the driver adds buffers */
			break;
		}
	}
	virtio_queue_flush(vdev, vq);
}

/* ---- control queue ---- */

/* Apply a new number of active pairs: attach/detach TAP queues, polling. */
static void net_set_active(struct net *n, struct virtio_device *vdev, uint16_t pairs)
{
	n->active = pairs;
	for (uint16_t p = 0; p < n->npairs; p++) {
		bool on = p < pairs;

		if (n->pair[p].fd >= 0 && tap_set_queue_enabled(n->pair[p].fd, &n->info, on))
			log_warn("%s: cannot %s TAP queue %u: %m", n->name, on ? "attach" : "detach", p);
		net_poll_set(n, p, on && net_live(n, vdev));
	}
}

/* Execute one control chain; returns the ack. */
static uint8_t net_ctrl_one(struct net *n, struct virtio_device *vdev, struct virtq_elem *e)
{
	uint8_t req[8];
	size_t len = e->out_len < sizeof(req) ? (size_t)e->out_len : sizeof(req);
	uint16_t pairs = n->active;
	uint8_t ack;

	if (e->out_len > 64)
		len = 0;                   /* no command of ours is this long */
	virtq_elem_read(e, 0, req, len);
	ack = virtio_net_ctrl_parse(req, len, vdev->guest_features, n->npairs, &pairs);
	if (ack == VIRTIO_NET_OK && pairs != n->active)
		net_set_active(n, vdev, pairs);
	return ack;
}

static void net_ctrl_process(struct net *n, struct virtio_device *vdev, uint16_t q)
{
	struct virtqueue *vq = &vdev->queues[q];
	int budget = NET_CTRL_BUDGET;

	n->ctrl_more = false;
	while (budget > 0 && net_pop(vdev, vq, n->elem) == 1) {
		uint8_t ack = net_ctrl_one(n, vdev, n->elem);

		n->ctrl_cmds++;
		n->ctrl_errors += ack != VIRTIO_NET_OK;
		virtq_elem_write(n->elem, 0, &ack, 1);
		virtio_queue_fill(vdev, vq, n->elem, n->elem->in_len ? 1 : 0);
		budget--;
	}
	virtio_queue_flush(vdev, vq);
	if (budget == 0 && virtq_has_avail(vq)) {
		n->ctrl_more = true;
		net_kick_self(n);
	}
}

/* ---- virtio ops ---- */

static void net_queue_notify(struct virtio_device *vdev, uint16_t q)
{
	struct net *n = vdev->priv;
	uint16_t p = q / 2;

	if (virtio_has_feature(vdev, VIRTIO_NET_F_CTRL_VQ) && q == net_ctrl_queue(n, vdev)) {
		net_ctrl_process(n, vdev, q);
		return;
	}
	if (p >= n->active)
		return;                    /* an inactive pair: nothing to do */
	if (q & 1) {
		net_tx_process(n, vdev, p);
		return;
	}
	net_poll_set(n, p, true);          /* buffers may have come: look again */
	net_rx_process(n, vdev, p);
}

static uint64_t net_features(struct virtio_device *vdev)
{
	const struct net *n = vdev->priv;
	uint64_t f = net_bit(VIRTIO_NET_F_MAC) | net_bit(VIRTIO_NET_F_STATUS) |
		     net_bit(VIRTIO_NET_F_MRG_RXBUF) | net_bit(VIRTIO_NET_F_CTRL_VQ);

	if (n->npairs > 1)
		f |= net_bit(VIRTIO_NET_F_MQ);
	if (n->info.vnet_hdr)
		f |= net_bit(VIRTIO_NET_F_CSUM) | net_bit(VIRTIO_NET_F_HOST_TSO4) |
		     net_bit(VIRTIO_NET_F_HOST_TSO6) | net_bit(VIRTIO_NET_F_HOST_ECN) |
		     (n->info.ufo ? net_bit(VIRTIO_NET_F_HOST_UFO) : 0);
	if (n->info.offload)
		f |= net_bit(VIRTIO_NET_F_GUEST_CSUM) | net_bit(VIRTIO_NET_F_GUEST_TSO4) |
		     net_bit(VIRTIO_NET_F_GUEST_TSO6) | net_bit(VIRTIO_NET_F_GUEST_ECN) |
		     (n->info.ufo ? net_bit(VIRTIO_NET_F_GUEST_UFO) : 0);
	return f;
}

static void net_config_read(struct virtio_device *vdev, uint32_t off, void *data, uint32_t len)
{
	const struct net *n = vdev->priv;
	uint8_t cfg[NET_CONFIG_SIZE] = { 0 };

	memcpy(cfg, n->mac, 6);
	cfg[6] = VIRTIO_NET_S_LINK_UP;
	cfg[8] = (uint8_t)n->npairs;
	cfg[9] = (uint8_t)(n->npairs >> 8);
	memcpy(data, cfg + off, len);
}

/* Legacy drivers set the MAC by writing the config space. */
static void net_config_write(struct virtio_device *vdev, uint32_t off, const void *data,
			     uint32_t len)
{
	struct net *n = vdev->priv;

	if (vdev->legacy && !virtio_has_feature(vdev, VIRTIO_F_VERSION_1) && off + len <= 6)
		memcpy(n->mac + off, data, len);
}

/* TAP offload bits for the negotiated GUEST_* features. */
static unsigned int net_tun_offloads(const struct virtio_device *vdev)
{
	unsigned int t = 0;

	if (!virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM))
		return 0;
	t |= 0x01;                                                  /* TUN_F_CSUM */
	t |= virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO4) ? 0x02 : 0;
	t |= virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO6) ? 0x04 : 0;
	t |= virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_ECN) ? 0x08 : 0;
	t |= virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_UFO) ? 0x10 : 0;
	return t;
}

/* Configure the host fds for the negotiated features; 0 or -1. */
static int net_apply(struct net *n, struct virtio_device *vdev)
{
	int hl = (int)net_hdr_len(vdev);

	for (uint16_t p = 0; p < n->npairs; p++) {
		int fd = n->pair[p].fd;

		if (tap_set_vnet_hdr_len(fd, &n->info, hl) ||
		    tap_set_offload(fd, &n->info, net_tun_offloads(vdev))) {
			log_error("%s: TAP set-up for the negotiated features failed: %m", n->name);
			return -1;
		}
	}
	net_set_active(n, vdev, n->active ? n->active : 1);
	return 0;
}

static int net_activate(struct virtio_device *vdev)
{
	struct net *n = vdev->priv;

	n->active = 1;
	return net_apply(n, vdev);
}

/* Forget everything the driver gave us; stop polling. */
static void net_reset(struct virtio_device *vdev)
{
	struct net *n = vdev->priv;

	net_poll_all_off(n);
	for (uint16_t p = 0; p < n->npairs; p++) {
		struct net_pair *pr = &n->pair[p];

		pr->nstash = 0;
		pr->frame_len = 0;
		pr->tx_more = false;
		free(pr->restore_pos);
		pr->restore_pos = NULL;
		pr->nrestore = 0;
		tap_set_offload(pr->fd, &n->info, 0);
	}
	n->ctrl_more = false;
	n->active = 1;
}

static void net_save_stats(struct state_writer *w, const struct virtio_net_qstats *s)
{
	state_put_u64(w, s->frames);
	state_put_u64(w, s->bytes);
	state_put_u64(w, s->dropped);
	state_put_u64(w, s->errors);
}

static void net_load_stats(struct state_reader *r, struct virtio_net_qstats *s)
{
	s->frames = state_get_u64(r);
	s->bytes = state_get_u64(r);
	s->dropped = state_get_u64(r);
	s->errors = state_get_u64(r);
}

static void net_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct net *n = vdev->priv;

	state_put_bytes(w, n->mac, 6);
	state_put_u16(w, n->active);
	state_put_u16(w, n->npairs);
	for (uint16_t p = 0; p < n->npairs; p++) {
		struct net_pair *pr = &n->pair[p];

		state_put_u16(w, (uint16_t)(pr->nstash + pr->nrestore));
		if (pr->nrestore)
			state_put_bytes(w, pr->restore_pos, (size_t)pr->nrestore * 7);
		for (unsigned int i = 0; i < pr->nstash; i++) {
			struct virtq_elem *e = n->elem;

			e->id = pr->stash[i].id;
			e->ndesc = pr->stash[i].ndesc;
			e->slot = pr->stash[i].slot;
			e->slot_wrap = pr->stash[i].slot_wrap;
			virtq_elem_save(e, w);
		}
		net_save_stats(w, &pr->rx);
		net_save_stats(w, &pr->tx);
	}
}

/* Keep pair `pr`'s saved stash positions for net_rx_rewalk. */
static int net_restore_stash(struct net_pair *pr, struct state_reader *r)
{
	uint16_t cnt = state_get_u16(r);

	if (r->error || cnt > NET_RX_STASH || (size_t)cnt * 7 > r->len - r->pos)
		return -1;
	pr->nstash = 0;
	pr->frame_len = 0;
	free(pr->restore_pos);
	pr->restore_pos = NULL;
	pr->nrestore = cnt;
	if (!cnt)
		return 0;
	pr->restore_pos = malloc((size_t)cnt * 7);
	if (!pr->restore_pos)
		return -1;
	state_get_bytes(r, pr->restore_pos, (size_t)cnt * 7);
	return r->error ? -1 : 0;
}

static int net_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *r)
{
	struct net *n = vdev->priv;
	uint16_t active, npairs;
	uint8_t mac[6];

	state_get_bytes(r, mac, 6);
	if (!n->keep_mac)       /* a clone's new MAC is what the guest reads now */
		memcpy(n->mac, mac, 6);
	active = state_get_u16(r);
	npairs = state_get_u16(r);
	if (r->error || npairs != n->npairs || active < 1 || active > npairs)
		return -1;
	for (uint16_t p = 0; p < npairs; p++) {
		if (net_restore_stash(&n->pair[p], r))
			return -1;
		net_load_stats(r, &n->pair[p].rx);
		net_load_stats(r, &n->pair[p].tx);
	}
	if (r->error)
		return -1;
	n->active = active;
	net_poll_all_off(n);
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK && !vdev->broken)
		return net_apply(n, vdev);
	return 0;
}

static void net_free(struct net *n)
{
	if (n->epfd >= 0) {
		if (n->loop)
			eventloop_del(n->loop, n->epfd);
		close(n->epfd);
	}
	if (n->kickfd >= 0)
		close(n->kickfd);
	for (int p = 0; p < VIRTIO_NET_MAX_PAIRS; p++) {
		struct net_pair *pr = &n->pair[p];

		if (pr->fd >= 0)
			close(pr->fd);
		free(pr->frame);
		free(pr->stash);
		free(pr->restore_pos);
	}
	free(n->elem);
	free(n->txiov);
	free(n->txbuf);
	free(n);
}

static void net_destroy(struct virtio_device *vdev)
{
	struct net *n = vdev->priv;

	if (!n)
		return;
	for (uint16_t p = 0; p < n->npairs; p++)
		log_debug("%s: pair %u: rx %llu frames %llu dropped %llu errors, "
			  "tx %llu frames %llu dropped %llu errors", n->name, p,
			  (unsigned long long)n->pair[p].rx.frames,
			  (unsigned long long)n->pair[p].rx.dropped,
			  (unsigned long long)n->pair[p].rx.errors,
			  (unsigned long long)n->pair[p].tx.frames,
			  (unsigned long long)n->pair[p].tx.dropped,
			  (unsigned long long)n->pair[p].tx.errors);
	net_free(n);
	vdev->priv = NULL;
}

/* One ops table per queue-pair count (num_queues differs); built once. */
static struct virtio_device_ops net_ops[VIRTIO_NET_MAX_PAIRS];
static pthread_once_t net_ops_once = PTHREAD_ONCE_INIT;

static void net_metrics(struct virtio_device *vdev, const char *name, json_t *root);

static void net_ops_init(void)
{
	for (int i = 0; i < VIRTIO_NET_MAX_PAIRS; i++)
		net_ops[i] = (struct virtio_device_ops){
			.device_id = VIRTIO_ID_NET,
			.name = "virtio-net",
			.num_queues = (uint16_t)(2 * (i + 1) + 1),
			.queue_max_size = NET_QUEUE_SIZE,
			.config_size = NET_CONFIG_SIZE,
			.state_version = NET_STATE_VERSION,
			.features = net_features,
			.config_read = net_config_read,
			.config_write = net_config_write,
			.queue_notify = net_queue_notify,
			.activate = net_activate,
			.reset = net_reset,
			.save = net_save,
			.restore = net_restore,
			.metrics = net_metrics,
			.destroy = net_destroy,
		};
}

/* ---- host events ---- */

/* The leftover-work eventfd fired: continue budgeted TX and control work. */
static void net_on_kick(struct net *n, struct virtio_device *vdev)
{
	uint64_t v;

	if (read(n->kickfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	if (!net_live(n, vdev))
		return;
	for (uint16_t p = 0; p < n->active; p++)
		if (n->pair[p].tx_more && vdev->queues[2 * p + 1].started)
			net_tx_process(n, vdev, p);
	if (n->ctrl_more) {
		uint16_t q = net_ctrl_queue(n, vdev);

		if (q < vdev->num_queues && vdev->queues[q].started)
			net_ctrl_process(n, vdev, q);
	}
}

/* A pair's fd reported something. */
static void net_on_fd(struct net *n, struct virtio_device *vdev, uint16_t p, uint32_t events)
{
	struct net_pair *pr = &n->pair[p];

	if (p >= n->npairs)
		return;
	if (events & (EPOLLERR | EPOLLHUP)) {
		net_pair_dead(n, pr, "hung up");
		return;
	}
	net_rx_process(n, vdev, p);
}

void virtio_net_poll(struct virtio_device *vdev)
{
	struct net *n = vdev->priv;
	struct epoll_event evs[VIRTIO_NET_MAX_PAIRS + 1];
	int cnt = epoll_wait(n->epfd, evs, VIRTIO_NET_MAX_PAIRS + 1, 0);

	for (int i = 0; i < cnt; i++) {
		uint64_t tag = evs[i].data.u64;

		if (tag == NET_EV_KICK)
			net_on_kick(n, vdev);
		else
			net_on_fd(n, vdev, (uint16_t)tag, evs[i].events);
	}
}

int virtio_net_event_fd(struct virtio_device *vdev)
{
	return ((struct net *)vdev->priv)->epfd;
}

const struct virtio_net_qstats *virtio_net_stats(struct virtio_device *vdev, int pair, bool tx)
{
	struct net *n = vdev->priv;

	if (!n || pair < 0 || pair >= n->npairs)
		return NULL;
	return tx ? &n->pair[pair].tx : &n->pair[pair].rx;
}

/* One entry per network interface under "nets": frames and bytes each way,
 * summed over queue pairs. */
static void net_metrics(struct virtio_device *vdev, const char *name, json_t *root)
{
	uint64_t rxb = 0, txb = 0, rxp = 0, txp = 0, drop = 0;
	const struct virtio_net_qstats *q;

	for (int pair = 0; (q = virtio_net_stats(vdev, pair, false)); pair++) {
		rxb += q->bytes; rxp += q->frames; drop += q->dropped;
		q = virtio_net_stats(vdev, pair, true);
		txb += q->bytes; txp += q->frames; drop += q->dropped;
	}
	json_array_append_new(json_object_get(root, "nets"),
		json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", name,
			  "rx_bytes", (json_int_t)rxb, "tx_bytes", (json_int_t)txb,
			  "rx_packets", (json_int_t)rxp, "tx_packets", (json_int_t)txp,
			  "dropped", (json_int_t)drop));
}

/* Event loop callback: the device epoll is readable. */
static int net_on_event(int fd, uint32_t events, void *opaque)
{
	struct net *n = opaque;
	struct virtio_device *vdev;

	pthread_mutex_lock(&n->dev->lock);
	vdev = virtio_pci_vdev(n->dev);
	if (vdev)
		virtio_net_poll(vdev);
	pthread_mutex_unlock(&n->dev->lock);
	return 0;
}

/* ---- construction ---- */

/* A stable locally administered MAC, 52:54:00:xx:xx:xx, from the TAP name
 * (or fd number) and the instance index. */
static void net_gen_mac(const struct virtio_net_params *p, uint8_t mac[6])
{
	char seed[64];
	uint32_t h = 2166136261u;

	snprintf(seed, sizeof(seed), "%s/%d/%d", p->tap ? p->tap : "fd", p->tap ? -1 : p->fd,
		 p->index);
	for (const char *s = seed; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	mac[0] = 0x52;
	mac[1] = 0x54;
	mac[2] = 0x00;
	mac[3] = (uint8_t)(h >> 16);
	mac[4] = (uint8_t)(h >> 8);
	mac[5] = (uint8_t)h;
}

/* Open (or take) the fds, one per pair, and probe what they are. */
static int net_open_fds(struct net *n, const struct virtio_net_params *p, struct error *e)
{
	if (p->fd >= 0) {
		if (p->queues > 1)
			return error_set(e, EXIT_USAGE, "%s: fd=N carries one queue pair, not %d",
					 n->name, p->queues);
		n->pair[0].fd = p->fd;
		tap_probe(p->fd, &n->info);
		return 0;
	}
	for (int q = 0; q < p->queues; q++) {
		n->pair[q].fd = tap_open(p->tap, p->queues > 1, e);
		if (n->pair[q].fd < 0)
			return error_prefix(e, "%s", n->name);
	}
	tap_probe(n->pair[0].fd, &n->info);
	if (!n->info.vnet_hdr)
		return error_set(e, EXIT_HOST, "%s: TAP '%s' has no vnet header", n->name, p->tap);
	return 0;
}

/* Allocate the per-pair buffers and the device epoll set. */
static int net_alloc(struct net *n, struct error *e)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = NET_EV_KICK };

	n->elem = malloc(sizeof(*n->elem));
	n->txiov = calloc(VIRTQ_ELEM_MAX_IOV + 1, sizeof(*n->txiov));
	n->txbuf = malloc(NET_BOUNCE);
	n->epfd = epoll_create1(EPOLL_CLOEXEC);
	n->kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!n->elem || !n->txiov || !n->txbuf || n->epfd < 0 || n->kickfd < 0 ||
	    epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->kickfd, &ev) < 0)
		return error_set(e, EXIT_HOST, "%s: out of memory or fds", n->name);
	for (uint16_t p = 0; p < n->npairs; p++) {
		struct net_pair *pr = &n->pair[p];
		struct epoll_event pev = { .events = 0, .data.u64 = p };

		pr->frame = malloc(NET_BOUNCE);
		pr->stash = calloc(NET_RX_STASH, sizeof(*pr->stash));
		if (!pr->frame || !pr->stash || epoll_ctl(n->epfd, EPOLL_CTL_ADD, pr->fd, &pev) < 0)
			return error_set(e, EXIT_HOST, "%s: cannot set up queue pair %u: %s", n->name,
					 p, strerror(errno ? errno : ENOMEM));
	}
	return 0;
}

const struct virtio_device_ops *virtio_net_new(const struct virtio_net_params *p, void **priv,
					       struct error *e)
{
	struct virtio_net_params q = *p;
	int queues = p->queues ? p->queues : 1;
	struct net *n;

	if (queues < 1 || queues > VIRTIO_NET_MAX_PAIRS) {
		error_set(e, EXIT_USAGE, "virtio-net%d: %d queue pairs (1 to %d)", p->index, queues,
			  VIRTIO_NET_MAX_PAIRS);
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	n->epfd = n->kickfd = -1;
	for (int i = 0; i < VIRTIO_NET_MAX_PAIRS; i++)
		n->pair[i].fd = -1;
	snprintf(n->name, sizeof(n->name), "virtio-net%d", p->index);
	n->npairs = (uint16_t)queues;
	n->active = 1;
	q.queues = queues;
	if (p->mac)
		memcpy(n->mac, p->mac, 6);
	else
		net_gen_mac(p, n->mac);
	n->keep_mac = p->keep_mac && p->mac;
	if (net_open_fds(n, &q, e) || net_alloc(n, e)) {
		if (p->fd >= 0)
			n->pair[0].fd = -1;    /* the caller still owns it */
		net_free(n);
		return NULL;
	}
	pthread_once(&net_ops_once, net_ops_init);
	*priv = n;
	return &net_ops[queues - 1];
}

/* "52:54:00:12:34:56" (already checked by the config parser). */
static int net_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

static enum virtio_pci_mode net_pci_mode(enum vm_virtio_mode m)
{
	return m == VM_VIRTIO_LEGACY ? VIRTIO_PCI_LEGACY_ONLY :
	       m == VM_VIRTIO_MODERN ? VIRTIO_PCI_MODERN_ONLY : VIRTIO_PCI_TRANSITIONAL;
}

/* Create virtio-net<i> for `c` and hook its epoll into the host's loop. */
int virtio_net_create(const struct device_host *host, const struct vm_net *c, int i,
		      struct error *e)
{
	uint8_t mac[6];
	struct virtio_net_params p = { .tap = c->tap, .fd = c->fd, .queues = c->queues, .index = i,
				       .keep_mac = c->new_mac };
	const struct virtio_device_ops *ops;
	void *priv = NULL;
	struct net *n;

	if (c->mac) {
		if (net_parse_mac(c->mac, mac))
			return error_set(e, EXIT_USAGE, "virtio-net%d: bad MAC '%s'", i, c->mac);
		p.mac = mac;
	}
	ops = virtio_net_new(&p, &priv, e);
	if (!ops)
		return -1;
	n = priv;
	if (virtio_pci_create(host, ops, priv, n->name, net_pci_mode(c->mode), &n->dev, e))
		return -1;
	if (!host->loop || eventloop_add(host->loop, n->epfd, EPOLLIN, net_on_event, n) < 0)
		return error_set(e, EXIT_HOST, "%s: cannot watch the TAP: %s", n->name,
				 strerror(errno));
	n->loop = host->loop;
	log_debug("%s: %s%s, %u pair(s), mac %02x:%02x:%02x:%02x:%02x:%02x%s", n->name,
		  n->info.is_tap ? "TAP " : "frame fd", n->info.ifname, n->npairs, n->mac[0],
		  n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5],
		  n->info.offload ? ", offloads" : "");
	return 0;
}
