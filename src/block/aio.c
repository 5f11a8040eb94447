/*
 * aio.c - io_uring engine with a synchronous fallback (see aio.h).
 *
 * Each queued operation is an aio_op carrying the callback; io_uring's
 * user_data points at it.  Submissions are batched: SQEs are prepared at
 * aio_submit_rw and handed to the kernel by aio_poll (or when the ring is
 * full), so a caller that queues 32 requests and then polls pays one
 * io_uring_enter.  Short transfers are completed by resubmitting the rest
 * from the same op, so callers only see full transfers or an error.
 *
 * The fallback does the I/O inline with preadv/pwritev and appends the op
 * to a done list that aio_poll drains.  Threads: one owner thread.
 */
#include "block/aio.h"

#include <errno.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#define AIO_MAX_IOV 16

struct aio_op {
	aio_cb cb;
	void *opaque;
	int res;
	bool write;
	int fd;
	uint64_t off, left;		/* remaining transfer */
	int iovcnt;
	struct iovec iov[AIO_MAX_IOV];	/* our copy, advanced on short I/O */
	struct aio_op *next;
};

struct aio_engine {
	bool uring;
	struct io_uring ring;
	unsigned depth;
	int inflight;			/* submitted, callback not yet run */
	int unsubmitted;		/* SQEs prepared, not yet entered */
	struct aio_op *done_head, *done_tail; /* fallback/immediate completions */
	int efd;			/* eventfd signalled on completions, -1 if none */
	char name[96];
};

/* The completion eventfd, created on first request (for epoll users). */
int aio_event_fd(struct aio_engine *a)
{
	if (a->efd >= 0)
		return a->efd;
	a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->efd >= 0 && a->uring && io_uring_register_eventfd(&a->ring, a->efd) < 0) {
		close(a->efd);
		a->efd = -1;
	}
	if (a->efd >= 0 && a->done_head)
		eventfd_write(a->efd, 1);
	return a->efd;
}

int aio_engine_new(struct aio_engine **out, unsigned depth, bool allow_uring)
{
	struct aio_engine *a = calloc(1, sizeof(*a));
	const char *env = getenv("SHOAL_NO_IO_URING");
	int r = -ENOTSUP;

	if (!a)
		return -ENOMEM;
	a->depth = depth ? depth : 64;
	a->efd = -1;
	if (allow_uring && !(env && *env && *env != '0'))
		r = io_uring_queue_init(a->depth, &a->ring, 0);
	a->uring = r == 0;
	if (a->uring)
		snprintf(a->name, sizeof(a->name), "io_uring");
	else
		snprintf(a->name, sizeof(a->name), "sync (io_uring %s)",
			 !allow_uring || (env && *env && *env != '0') ? "disabled" :
			 strerror(-r));
	if (!a->uring)
		log_info("block: io_uring unavailable, using synchronous I/O: %s", a->name);
	*out = a;
	return 0;
}

void aio_engine_free(struct aio_engine *a)
{
	if (!a)
		return;
	while (a->inflight > 0 && aio_poll(a, 1) > 0)
		;
	if (a->uring)
		io_uring_queue_exit(&a->ring);
	if (a->efd >= 0)
		close(a->efd);
	free(a);
}

const char *aio_engine_name(const struct aio_engine *a)
{
	return a ? a->name : "none";
}

bool aio_engine_is_uring(const struct aio_engine *a)
{
	return a && a->uring;
}

int aio_inflight(const struct aio_engine *a)
{
	return a ? a->inflight : 0;
}

static void done_push(struct aio_engine *a, struct aio_op *op)
{
	if (a->efd >= 0 && !a->done_head)
		eventfd_write(a->efd, 1);
	op->next = NULL;
	if (a->done_tail)
		a->done_tail->next = op;
	else
		a->done_head = op;
	a->done_tail = op;
}

/* Advance op's iovecs past `n` transferred bytes. */
static void op_advance(struct aio_op *op, uint64_t n)
{
	int i = 0;

	op->off += n;
	op->left -= n;
	while (i < op->iovcnt && n >= op->iov[i].iov_len)
		n -= op->iov[i++].iov_len;
	memmove(op->iov, op->iov + i, (op->iovcnt - i) * sizeof(op->iov[0]));
	op->iovcnt -= i;
	if (op->iovcnt && n) {
		op->iov[0].iov_base = (char *)op->iov[0].iov_base + n;
		op->iov[0].iov_len -= n;
	}
}

/* Fallback: do the whole transfer now. */
static int op_do_sync(struct aio_op *op)
{
	while (op->left) {
		ssize_t n = op->write ? pwritev(op->fd, op->iov, op->iovcnt, op->off)
				      : preadv(op->fd, op->iov, op->iovcnt, op->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (op->write)
				return -EIO;
			/* past EOF: reads as zeros */
			for (int i = 0; i < op->iovcnt; i++)
				memset(op->iov[i].iov_base, 0, op->iov[i].iov_len);
			return 0;
		}
		op_advance(op, n);
	}
	return 0;
}

static int sqe_prep(struct aio_engine *a, struct aio_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&a->ring);

	if (!sqe) {
		int r = io_uring_submit(&a->ring);
		if (r < 0)
			return r;
		a->unsubmitted = 0;
		sqe = io_uring_get_sqe(&a->ring);
		if (!sqe)
			return -EAGAIN;
	}
	if (op->write)
		io_uring_prep_writev(sqe, op->fd, op->iov, op->iovcnt, op->off);
	else
		io_uring_prep_readv(sqe, op->fd, op->iov, op->iovcnt, op->off);
	io_uring_sqe_set_data(sqe, op);
	a->unsubmitted++;
	return 0;
}

int aio_submit_rw(struct aio_engine *a, int fd, bool write, const struct iovec *iov,
		  int iovcnt, uint64_t off, uint64_t len, aio_cb cb, void *opaque)
{
	struct aio_op *op;
	int r;

	if (iovcnt > AIO_MAX_IOV || iovcnt < 1)
		return -EINVAL;
	op = malloc(sizeof(*op));
	if (!op)
		return -ENOMEM;
	*op = (struct aio_op){ .cb = cb, .opaque = opaque, .write = write, .fd = fd,
			       .off = off, .left = len, .iovcnt = iovcnt };
	memcpy(op->iov, iov, iovcnt * sizeof(*iov));
	a->inflight++;
	if (!a->uring) {
		op->res = op_do_sync(op);
		done_push(a, op);
		return 0;
	}
	r = sqe_prep(a, op);
	if (r) {
		a->inflight--;
		free(op);
	}
	return r;
}

int aio_submit_done(struct aio_engine *a, int res, aio_cb cb, void *opaque)
{
	struct aio_op *op = calloc(1, sizeof(*op));

	if (!op)
		return -ENOMEM;
	op->cb = cb;
	op->opaque = opaque;
	op->res = res;
	a->inflight++;
	done_push(a, op);
	return 0;
}

static void op_finish(struct aio_engine *a, struct aio_op *op)
{
	a->inflight--;
	op->cb(op->opaque, op->res);
	free(op);
}

/* Handle one CQE: finish the op, or resubmit the rest of a short transfer. */
static int cqe_handle(struct aio_engine *a, struct io_uring_cqe *cqe)
{
	struct aio_op *op = io_uring_cqe_get_data(cqe);
	int res = cqe->res;

	io_uring_cqe_seen(&a->ring, cqe);
	if (res == -EAGAIN || res == -EINTR)
		return sqe_prep(a, op) ? (op->res = -EIO, op_finish(a, op), 1) : 0;
	if (res < 0 || (res == 0 && op->write)) {
		op->res = res < 0 ? res : -EIO;
	} else if (res == 0) {
		for (int i = 0; i < op->iovcnt; i++)	/* read past EOF: zeros */
			memset(op->iov[i].iov_base, 0, op->iov[i].iov_len);
		op->res = 0;
	} else if ((uint64_t)res < op->left) {
		op_advance(op, res);
		return sqe_prep(a, op) ? (op->res = -EIO, op_finish(a, op), 1) : 0;
	} else {
		op->res = 0;
	}
	op_finish(a, op);
	return 1;
}

int aio_poll(struct aio_engine *a, int min)
{
	eventfd_t v;
	int n = 0;

	if (a->efd >= 0)
		eventfd_read(a->efd, &v);	/* reset; we reap everything below */

	while (a->done_head) {
		struct aio_op *op = a->done_head;

		a->done_head = op->next;
		if (!a->done_head)
			a->done_tail = NULL;
		op_finish(a, op);
		n++;
	}
	if (!a->uring)
		return n;
	while (a->inflight > 0) {
		struct io_uring_cqe *cqe;
		int r;

		if (a->unsubmitted) {
			r = io_uring_submit(&a->ring);
			if (r < 0)
				return r;
			a->unsubmitted = 0;
		}
		if (n >= min) {
			r = io_uring_peek_cqe(&a->ring, &cqe);
			if (r == -EAGAIN)
				break;
		} else {
			r = io_uring_wait_cqe(&a->ring, &cqe);
		}
		if (r == -EINTR)
			continue;
		if (r < 0)
			return r;
		n += cqe_handle(a, cqe);
	}
	return n;
}
