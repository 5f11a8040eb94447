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
 *
 * O_DIRECT fds (dio_align != 0): the caller guarantees an aligned offset and
 * length; if any buffer is misaligned the op runs through one aligned
 * bounce buffer, gathered before a write and scattered after a read.  A
 * short read that stops off the alignment is the end of the file: the rest
 * reads as zeros, as it would for a buffered fd, instead of resubmitting at
 * an offset the kernel would refuse.
 */
#include "block/aio.h"

#include <errno.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

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
	uint32_t dio_align;		/* O_DIRECT alignment, 0 if buffered */
	uint8_t *bounce;		/* aligned stand-in for orig, or NULL */
	int orig_cnt;
	struct iovec orig[AIO_MAX_IOV];	/* the caller's buffers, when bounced */
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

/* A read came back n bytes short of the rest: is that the end of the file?
 * On O_DIRECT, a count off the alignment can only be. */
static bool op_short_is_eof(const struct aio_op *op, uint64_t n)
{
	return !op->write && op->dio_align && n % op->dio_align;
}

static void op_zero_rest(struct aio_op *op)
{
	for (int i = 0; i < op->iovcnt; i++)
		memset(op->iov[i].iov_base, 0, op->iov[i].iov_len);
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
			op_zero_rest(op);	/* past EOF: reads as zeros */
			return 0;
		}
		op_advance(op, n);
		if (op->left && op_short_is_eof(op, n)) {
			op_zero_rest(op);
			return 0;
		}
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

/* True if every buffer of iov meets the O_DIRECT alignment. */
static bool iov_aligned(const struct iovec *iov, int iovcnt, uint32_t al)
{
	for (int i = 0; i < iovcnt; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (al - 1))
			return false;
	return true;
}

/* Put op's I/O through one aligned buffer; a write gathers into it now. */
static int op_bounce(struct aio_op *op)
{
	uint8_t *p;

	if (posix_memalign((void **)&op->bounce, op->dio_align > 4096 ? op->dio_align : 4096,
			   op->left ? op->left : 1))
		return op->bounce = NULL, -ENOMEM;
	memcpy(op->orig, op->iov, op->iovcnt * sizeof(op->iov[0]));
	op->orig_cnt = op->iovcnt;
	p = op->bounce;
	for (int i = 0; op->write && i < op->iovcnt; p += op->iov[i++].iov_len)
		memcpy(p, op->iov[i].iov_base, op->iov[i].iov_len);
	op->iov[0] = (struct iovec){ .iov_base = op->bounce, .iov_len = op->left };
	op->iovcnt = 1;
	return 0;
}

/* The bounce buffer's part of op's end: scatter a good read, free it. */
static void op_unbounce(struct aio_op *op)
{
	const uint8_t *p = op->bounce;

	if (!p)
		return;
	for (int i = 0; !op->write && !op->res && i < op->orig_cnt; p += op->orig[i++].iov_len)
		memcpy(op->orig[i].iov_base, p, op->orig[i].iov_len);
	free(op->bounce);
	op->bounce = NULL;
}

int aio_submit_rw(struct aio_engine *a, int fd, bool write, const struct iovec *iov,
		  int iovcnt, uint64_t off, uint64_t len, uint32_t dio_align, aio_cb cb,
		  void *opaque)
{
	struct aio_op *op;
	int r;

	if (iovcnt > AIO_MAX_IOV || iovcnt < 1)
		return -EINVAL;
	op = malloc(sizeof(*op));
	if (!op)
		return -ENOMEM;
	*op = (struct aio_op){ .cb = cb, .opaque = opaque, .write = write, .fd = fd,
			       .off = off, .left = len, .iovcnt = iovcnt,
			       .dio_align = dio_align };
	memcpy(op->iov, iov, iovcnt * sizeof(*iov));
	if (dio_align && !iov_aligned(iov, iovcnt, dio_align) && op_bounce(op)) {
		free(op);
		return -ENOMEM;
	}
	a->inflight++;
	if (!a->uring) {
		op->res = op_do_sync(op);
		done_push(a, op);
		return 0;
	}
	r = sqe_prep(a, op);
	if (r) {
		a->inflight--;
		free(op->bounce);
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
	op_unbounce(op);
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
		op_zero_rest(op);	/* read past EOF: zeros */
		op->res = 0;
	} else if ((uint64_t)res < op->left && op_short_is_eof(op, res)) {
		op_advance(op, res);
		op_zero_rest(op);
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
