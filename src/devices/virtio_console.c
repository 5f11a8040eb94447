/*
 * virtio_console.c - virtio console with one port (virtio 1.2 section 5.3),
 * created by `--virtio-console file:OUT[,in=IN]`.
 *
 * Port 0's queues are receiveq (0, device -> driver) and transmitq (1,
 * driver -> device).  Everything the driver transmits is appended to the
 * file OUT.  With `in=IN`, the bytes of the regular file IN are given to the
 * driver, in order, as it posts receive buffers; when IN grows later (an
 * inotify watch on the event loop says so), the new bytes follow, so IN
 * works like `tail -f`.  EMERG_WRITE is offered: a 32-bit write to
 * `emerg_wr` in the config space appends one character to OUT, as the spec
 * allows for early boot output before the queues exist.
 *
 * MULTIPORT (5.3.6.2) is offered with one port, because without it a
 * driver cannot say when it is ready for input: Linux posts receive buffers
 * and kicks before its port exists, and drops whatever arrives in between.
 * With it, queues 2 (control receiveq, device -> driver) and 3 (control
 * transmitq) carry 8-byte messages {le32 id, le16 event, le16 value}:
 *
 *    driver                              device
 *      |-- DEVICE_READY 1 ---------------->|
 *      |<-------------------- DEVICE_ADD 0-|   port 0 exists
 *      |-- PORT_READY 0,1 ---------------->|
 *      |<------------------ CONSOLE_PORT 0-|   port 0 is a console (hvc0)
 *      |<------------------- PORT_OPEN 0,1-|   the host end is connected
 *      |-- PORT_OPEN 0,1 ----------------->|   input may flow from now on
 *
 * Input waits for the driver's PORT_OPEN; a driver that does not take
 * MULTIPORT (the test guest) gets input as soon as it posts buffers.
 * Messages for other ports, unknown events and short messages are ignored;
 * device messages wait (at most VCON_CTRL_MAX) until the driver posts a
 * control buffer.
 *
 * Config space (5.3.4): u16 cols, u16 rows (both 0: unknown), u32
 * max_nr_ports (1; only meaningful with MULTIPORT), u32 emerg_wr.
 *
 * Threads: every op runs under the device lock, on a vCPU thread or the
 * event loop thread (ioeventfd kicks).  The work is a write(2) to a local
 * file (page cache) or a read(2) from one, bounded by what the driver posted,
 * so the lock is held briefly.
 *
 * Hostile guest: the transmit element's device-readable buffers are written
 * out as they are (their lengths were checked by the core); device-writable
 * parts of a transmit element and device-readable parts of a receive
 * element are ignored, as the spec tells a device to.  A write error to OUT
 * is logged once; the data is dropped and the buffers still returned, so a
 * full disk on the host cannot wedge the guest.
 *
 * Saved state (version 2): u64 bytes_out, u64 bytes_in, u64 input offset,
 * then (new in 2) u8 guest_open, u8 pending message count, the pending
 * messages.  Version 1 state restores with the port open.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/device.h"
#include "devices/virtio_console.h"
#include "devices/virtio_pci.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/eventloop.h"
#include "base/path_beneath.h"

#define VIRTIO_CONSOLE_F_SIZE        0
#define VIRTIO_CONSOLE_F_MULTIPORT   1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

#define VCON_QUEUE_SIZE   128
#define VCON_RX           0
#define VCON_TX           1
#define VCON_CTRL_RX      2
#define VCON_CTRL_TX      3
#define VCON_NUM_QUEUES   4
#define VCON_CONFIG_SIZE  12
#define VCON_EMERG_OFF    8
#define VCON_STATE_VERSION 2
#define VCON_CTRL_MAX     8            /* device messages waiting for buffers */

/* Control events (5.3.6.2). */
#define VCON_DEVICE_READY 0
#define VCON_DEVICE_ADD   1
#define VCON_PORT_READY   3
#define VCON_CONSOLE_PORT 4
#define VCON_PORT_OPEN    6

/* One control message, as it is on the wire (little-endian). */
struct vcon_ctrl {
	uint32_t id;
	uint16_t event;
	uint16_t value;
} __attribute__((packed));
_Static_assert(sizeof(struct vcon_ctrl) == 8, "virtio_console_control is 8 bytes");

struct vcon {
	char name[32];
	int out_fd;                    /* OUT, opened O_APPEND */
	int in_fd;                     /* IN, or -1 */
	char *in_path;                 /* IN as named, for the inotify watch */
	uint64_t in_off;               /* next byte of IN to give */
	bool in_eof;                   /* IN is used up */
	bool write_err_logged;
	uint64_t bytes_out, bytes_in;  /* metrics */
	bool guest_open;               /* MULTIPORT: the driver opened port 0 */
	struct vcon_ctrl pending[VCON_CTRL_MAX];   /* to the driver, in order */
	unsigned npending;
	/* Set by virtio_console_create for input that grows (event loop). */
	struct eventloop *loop;        /* watching IN, or NULL */
	pthread_mutex_t *lock;         /* the device lock */
	struct virtio_device *vdev;
	int watch_fd;                  /* inotify on IN, or -1 */
};

/* Append `iov` to OUT, whole, retrying short writes; false on an error. */
static bool vcon_write_all(struct vcon *c, const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			ssize_t w = write(c->out_fd, p, left);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return false;
			p += w;
			left -= (size_t)w;
		}
	}
	return true;
}

/* Drain transmitq into OUT. */
static void vcon_transmit(struct virtio_device *vdev, struct virtq_elem *el)
{
	struct vcon *c = vdev->priv;
	struct virtqueue *vq = &vdev->queues[VCON_TX];

	while (virtio_queue_pop(vdev, vq, el) == 1) {
		if (vcon_write_all(c, virtq_elem_out(el), el->out_num))
			c->bytes_out += el->out_len;
		else if (!c->write_err_logged) {
			c->write_err_logged = true;
			log_error("%s: writing the output file: %s (output dropped)", c->name,
				  strerror(errno));
		}
		virtio_queue_fill(vdev, vq, el, 0);
	}
	virtio_queue_flush(vdev, vq);
}

/* Fill one receive element from IN; returns bytes given (0 at the end). */
static uint32_t vcon_fill_rx(struct vcon *c, struct virtq_elem *el)
{
	struct iovec *iov = virtq_elem_in(el);
	uint64_t done = 0;

	for (unsigned i = 0; i < el->in_num && !c->in_eof; i++) {
		ssize_t r = pread(c->in_fd, iov[i].iov_base, iov[i].iov_len, (off_t)c->in_off);

		if (r < 0 && errno == EINTR) {
			i--;
			continue;
		}
		if (r <= 0) {
			c->in_eof = true;
			break;
		}
		c->in_off += (uint64_t)r;
		done += (uint64_t)r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return (uint32_t)done;
}

/* Is there more of IN to give?  (Regular files; IN may grow.) */
static bool vcon_has_input(struct vcon *c)
{
	struct stat st;

	if (c->in_fd < 0)
		return false;
	if (c->in_eof && fstat(c->in_fd, &st) == 0 && (uint64_t)st.st_size > c->in_off)
		c->in_eof = false;
	if (!c->in_eof && fstat(c->in_fd, &st) == 0 && (uint64_t)st.st_size <= c->in_off)
		c->in_eof = true;
	return !c->in_eof;
}

/* May input flow?  Only once a MULTIPORT driver has opened port 0. */
static bool vcon_port_open(struct virtio_device *vdev, struct vcon *c)
{
	return !virtio_has_feature(vdev, VIRTIO_CONSOLE_F_MULTIPORT) || c->guest_open;
}

/* Give IN to the driver's posted receive buffers while it lasts. */
static void vcon_receive(struct virtio_device *vdev, struct virtq_elem *el)
{
	struct vcon *c = vdev->priv;
	struct virtqueue *vq = &vdev->queues[VCON_RX];

	if (!vcon_port_open(vdev, c))
		return;
	while (vcon_has_input(c) && virtio_queue_pop(vdev, vq, el) == 1) {
		uint32_t n = vcon_fill_rx(c, el);   /* 0 only if IN shrank meanwhile */

		c->bytes_in += n;
		virtio_queue_fill(vdev, vq, el, n);
	}
	virtio_queue_flush(vdev, vq);
}

/* Queue a message for the driver; dropped (logged) when too many wait. */
static void vcon_ctrl_queue(struct vcon *c, uint16_t event, uint16_t value)
{
	if (c->npending == VCON_CTRL_MAX) {
		log_warn("%s: control message %u dropped: the driver posts no control buffers",
			 c->name, event);
		return;
	}
	c->pending[c->npending++] = (struct vcon_ctrl){ .id = 0, .event = event, .value = value };
}

/* Hand waiting messages to the driver's control receive buffers. */
static void vcon_ctrl_send(struct virtio_device *vdev, struct virtq_elem *el)
{
	struct vcon *c = vdev->priv;
	struct virtqueue *vq = &vdev->queues[VCON_CTRL_RX];
	unsigned sent = 0;

	while (sent < c->npending && virtio_queue_pop(vdev, vq, el) == 1) {
		struct iovec *iov = virtq_elem_in(el);
		uint32_t n = 0;

		if (el->in_num && iov[0].iov_len >= sizeof(struct vcon_ctrl)) {
			memcpy(iov[0].iov_base, &c->pending[sent], sizeof(struct vcon_ctrl));
			n = sizeof(struct vcon_ctrl);
		}
		sent++;   /* a buffer too small for it loses the message, not the queue */
		virtio_queue_fill(vdev, vq, el, n);
	}
	memmove(c->pending, c->pending + sent, (c->npending - sent) * sizeof(c->pending[0]));
	c->npending -= sent;
	virtio_queue_flush(vdev, vq);
}

/* Act on one message from the driver (port 0 only). */
static void vcon_ctrl_handle(struct virtio_device *vdev, struct vcon *c,
			     const struct vcon_ctrl *m, struct virtq_elem *el)
{
	if (m->event == VCON_DEVICE_READY && m->value == 1) {
		vcon_ctrl_queue(c, VCON_DEVICE_ADD, 0);
	} else if (m->id == 0 && m->event == VCON_PORT_READY && m->value == 1) {
		vcon_ctrl_queue(c, VCON_CONSOLE_PORT, 1);
		vcon_ctrl_queue(c, VCON_PORT_OPEN, 1);
	} else if (m->id == 0 && m->event == VCON_PORT_OPEN) {
		c->guest_open = m->value != 0;
		vcon_receive(vdev, el);
	}
}

/* Read the driver's control messages (control transmitq). */
static void vcon_ctrl_receive(struct virtio_device *vdev, struct virtq_elem *el)
{
	struct vcon *c = vdev->priv;
	struct virtqueue *vq = &vdev->queues[VCON_CTRL_TX];
	struct virtq_elem *rx = malloc(sizeof(*rx));

	if (!rx)
		return;
	while (virtio_queue_pop(vdev, vq, el) == 1) {
		struct vcon_ctrl m;
		struct iovec *iov = virtq_elem_out(el);

		if (el->out_num && iov[0].iov_len >= sizeof(m)) {
			memcpy(&m, iov[0].iov_base, sizeof(m));
			vcon_ctrl_handle(vdev, c, &m, rx);
		}
		virtio_queue_fill(vdev, vq, el, 0);
	}
	virtio_queue_flush(vdev, vq);
	vcon_ctrl_send(vdev, rx);
	free(rx);
}

static void vcon_queue_notify(struct virtio_device *vdev, uint16_t qidx)
{
	struct virtq_elem *el = malloc(sizeof(*el));

	if (!el)
		return;
	if (qidx == VCON_TX)
		vcon_transmit(vdev, el);
	else if (qidx == VCON_RX)
		vcon_receive(vdev, el);
	else if (qidx == VCON_CTRL_TX)
		vcon_ctrl_receive(vdev, el);
	else if (qidx == VCON_CTRL_RX)
		vcon_ctrl_send(vdev, el);
	free(el);
}

static uint64_t vcon_features(struct virtio_device *vdev)
{
	return VIRTIO_BIT(VIRTIO_CONSOLE_F_EMERG_WRITE) | VIRTIO_BIT(VIRTIO_CONSOLE_F_MULTIPORT);
}

static void vcon_config_read(struct virtio_device *vdev, uint32_t off, void *data, uint32_t len)
{
	uint8_t cfg[VCON_CONFIG_SIZE] = { 0 };

	cfg[4] = 1;                     /* max_nr_ports = 1 (little-endian u32) */
	memcpy(data, cfg + off, len);   /* the core checked off + len */
}

/* emerg_wr: one character, appended to OUT. */
static void vcon_config_write(struct virtio_device *vdev, uint32_t off, const void *data,
			      uint32_t len)
{
	struct vcon *c = vdev->priv;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = 1 };

	if (off != VCON_EMERG_OFF || len != 4 ||
	    !virtio_has_feature(vdev, VIRTIO_CONSOLE_F_EMERG_WRITE))
		return;
	if (vcon_write_all(c, &iov, 1))
		c->bytes_out++;
}

static void vcon_save(struct virtio_device *vdev, struct state_writer *w)
{
	struct vcon *c = vdev->priv;

	state_put_u64(w, c->bytes_out);
	state_put_u64(w, c->bytes_in);
	state_put_u64(w, c->in_off);
	state_put_u8(w, c->guest_open);
	state_put_u8(w, (uint8_t)c->npending);
	for (unsigned i = 0; i < c->npending; i++) {
		state_put_u32(w, c->pending[i].id);
		state_put_u16(w, c->pending[i].event);
		state_put_u16(w, c->pending[i].value);
	}
}

static int vcon_restore(struct virtio_device *vdev, uint16_t version, struct state_reader *r)
{
	struct vcon *c = vdev->priv;

	c->bytes_out = state_get_u64(r);
	c->bytes_in = state_get_u64(r);
	c->in_off = state_get_u64(r);
	c->in_eof = false;
	c->guest_open = true;          /* version 1 knew no MULTIPORT */
	c->npending = 0;
	if (version >= 2) {
		c->guest_open = state_get_u8(r);
		c->npending = state_get_u8(r);
		if (c->npending > VCON_CTRL_MAX)
			return -1;
		for (unsigned i = 0; i < c->npending; i++) {
			c->pending[i].id = state_get_u32(r);
			c->pending[i].event = state_get_u16(r);
			c->pending[i].value = state_get_u16(r);
		}
	}
	return r->error ? -1 : 0;
}

static void vcon_free(struct vcon *c)
{
	if (!c)
		return;
	if (c->out_fd >= 0)
		close(c->out_fd);
	if (c->in_fd >= 0)
		close(c->in_fd);
	if (c->watch_fd >= 0) {
		if (c->loop)
			eventloop_del(c->loop, c->watch_fd);
		close(c->watch_fd);
	}
	free(c->in_path);
	free(c);
}

static void vcon_destroy(struct virtio_device *vdev)
{
	vcon_free(vdev->priv);
	vdev->priv = NULL;
}

static const struct virtio_device_ops vcon_ops = {
	.device_id = VIRTIO_ID_CONSOLE,
	.name = "virtio-console",
	.num_queues = VCON_NUM_QUEUES,
	.queue_max_size = VCON_QUEUE_SIZE,
	.config_size = VCON_CONFIG_SIZE,
	.state_version = VCON_STATE_VERSION,
	.features = vcon_features,
	.config_read = vcon_config_read,
	.config_write = vcon_config_write,
	.queue_notify = vcon_queue_notify,
	.save = vcon_save,
	.restore = vcon_restore,
	.destroy = vcon_destroy,
};

/* Split "file:OUT[,in=IN]" into OUT and IN (IN may be NULL); 0 or -1. */
static int vcon_parse(const char *spec, char **out, char **in, struct error *e)
{
	char *comma;

	*out = *in = NULL;
	if (strncmp(spec, "file:", 5) || !spec[5])
		return error_set(e, EXIT_USAGE, "--virtio-console '%s': expected file:PATH[,in=PATH]",
				 spec);
	*out = strdup(spec + 5);
	if (!*out)
		return error_set(e, EXIT_HOST, "out of memory");
	comma = strstr(*out, ",in=");
	if (comma) {
		*comma = '\0';
		*in = comma + 4;
		if (!**in || !**out) {
			free(*out);
			return error_set(e, EXIT_USAGE, "--virtio-console '%s': empty path", spec);
		}
	}
	return 0;
}

/* Open the port's files as `spec` names them.  0 or -1 with `e`. */
static int vcon_open(struct vcon *c, const char *spec, struct error *e)
{
	char *out, *in;
	int rc = 0;

	if (vcon_parse(spec, &out, &in, e))
		return -1;
	c->out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (c->out_fd < 0)
		rc = error_set(e, EXIT_NOINPUT, "%s: %s", out, strerror(errno));
	else if (in && (c->in_fd = path_open(in, O_RDONLY | O_CLOEXEC, 0)) < 0)
		rc = error_set(e, EXIT_NOINPUT, "%s: %s", in, strerror(errno));
	else if (in && !(c->in_path = strdup(in)))
		rc = error_set(e, EXIT_HOST, "out of memory");
	free(out);
	return rc;
}

const struct virtio_device_ops *virtio_console_ops(void)
{
	return &vcon_ops;
}

struct vcon *virtio_console_new(const char *spec, struct error *e)
{
	struct vcon *c = calloc(1, sizeof(*c));

	if (!c) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	snprintf(c->name, sizeof(c->name), "virtio-console0");
	c->out_fd = c->in_fd = c->watch_fd = -1;
	if (vcon_open(c, spec, e)) {
		vcon_free(c);
		return NULL;
	}
	return c;
}

/* IN grew (or changed): give the driver what is new (event loop thread). */
static int vcon_on_input(int fd, uint32_t events, void *opaque)
{
	struct vcon *c = opaque;
	char buf[4096];
	struct virtq_elem *el;

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	el = malloc(sizeof(*el));
	if (!el)
		return 0;
	pthread_mutex_lock(c->lock);
	if (c->vdev && (c->vdev->status & VIRTIO_STATUS_DRIVER_OK) && !c->vdev->broken &&
	    c->vdev->queues[VCON_RX].started)
		vcon_receive(c->vdev, el);
	pthread_mutex_unlock(c->lock);
	free(el);
	return 0;
}

/* Watch IN for growth with inotify on the VM's event loop.  Without it the
 * device still works; input then reaches the driver on its next kick. */
static void vcon_watch_input(struct vcon *c, struct eventloop *loop)
{
	char self[64];

	if (c->in_fd < 0 || !loop)
		return;
	snprintf(self, sizeof(self), "/proc/self/fd/%d", c->in_fd);
	c->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (c->watch_fd < 0 || inotify_add_watch(c->watch_fd, self, IN_MODIFY) < 0 ||
	    eventloop_add(loop, c->watch_fd, EPOLLIN, vcon_on_input, c) < 0) {
		log_warn("%s: cannot watch %s for new input (%s); input is read on the "
			 "driver's kicks only", c->name, c->in_path, strerror(errno));
		if (c->watch_fd >= 0)
			close(c->watch_fd);
		c->watch_fd = -1;
		return;
	}
	c->loop = loop;
}

int virtio_console_create(const struct device_host *host, const char *spec, struct error *e)
{
	struct vcon *c;
	struct device *d = NULL;

	c = virtio_console_new(spec, e);
	if (!c)
		return error_prefix(e, "virtio-console0");
	if (virtio_pci_create(host, &vcon_ops, c, "virtio-console0", VIRTIO_PCI_TRANSITIONAL, &d, e))
		return -1;
	c->lock = &d->lock;
	c->vdev = virtio_pci_vdev(d);
	vcon_watch_input(c, host->loop);
	return 0;
}
