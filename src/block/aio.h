/*
 * aio.h - the asynchronous host I/O engine under the format code.
 *
 * io_uring (liburing) when the kernel offers it, otherwise a synchronous
 * fallback that performs each I/O at submission and reports its completion
 * at the next poll, so callers see the same contract either way: callbacks
 * run only from aio_poll, on the caller's thread.  The choice is made at run
 * time (aio_engine_new) and reported by aio_engine_name.
 */
#ifndef SHOAL_BLOCK_AIO_H
#define SHOAL_BLOCK_AIO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct aio_engine;
typedef void (*aio_cb)(void *opaque, int res);

/* depth: queue entries.  allow_uring=false forces the fallback. */
int aio_engine_new(struct aio_engine **out, unsigned depth, bool allow_uring);
void aio_engine_free(struct aio_engine *a);
const char *aio_engine_name(const struct aio_engine *a);
bool aio_engine_is_uring(const struct aio_engine *a);

/* Queue a readv/writev of the host file.  The iovec array must stay valid
 * until the callback.  res is 0 on full transfer, -errno otherwise.
 * dio_align: 0 for a buffered fd; for an O_DIRECT fd its alignment, which
 * off and len must already have - misaligned buffers are bounced here. */
int aio_submit_rw(struct aio_engine *a, int fd, bool write, const struct iovec *iov,
		  int iovcnt, uint64_t off, uint64_t len, uint32_t dio_align, aio_cb cb,
		  void *opaque);
/* Queue a completion that needs no I/O (the sync slow path's result). */
int aio_submit_done(struct aio_engine *a, int res, aio_cb cb, void *opaque);
/* Run callbacks of completed I/O; block for at least `min`.  Returns the
 * number of callbacks run or -errno. */
int aio_poll(struct aio_engine *a, int min);
int aio_inflight(const struct aio_engine *a);
/* An eventfd that becomes readable when completions are waiting (io_uring
 * registered eventfd, or written by the fallback); -1 if unavailable. */
int aio_event_fd(struct aio_engine *a);

#endif
