/*
 * snapshot_live.c - guest memory of one instant, written while the guest
 * runs (a live checkpoint, seed mechanism 4), by write-protection through
 * userfaultfd, as QEMU's background snapshot does.
 *
 * While the VM is paused, live_mem_arm() registers the whole guest mapping
 * with a userfaultfd in write-protect mode and write-protects every page;
 * the VM then runs again.  From then on:
 *
 *   - the writer (live_mem_write, on the caller's thread) walks memory in
 *     chunks of CHUNK bytes, writes each chunk's non-zero pages to the
 *     memory file at their offsets, and lifts the protection of the chunk;
 *   - a guest (or device) write to a chunk not yet saved faults: KVM, or
 *     the host thread that wrote, waits on the userfaultfd, and the fault
 *     thread saves that chunk first, lifts its protection, and so wakes it.
 *
 * Invariant: a chunk's protection is lifted only after it is in the file,
 * and a chunk is saved once (the `saved` map, under `lock`), so the file
 * holds every page as it was at live_mem_arm, whatever the guest did
 * since.  Reads never fault.  The fault thread takes no lock but `lock` and
 * touches no guest memory but by reading, so it cannot wait on what it
 * serves.  Needs a kernel whose userfaultfd write-protects shared memory
 * (UFFD_FEATURE_WP_HUGETLBFS_SHMEM, Linux 5.19); elsewhere arming fails and
 * says so, and the caller can take an ordinary (paused) snapshot.
 *
 * A chunk the guest waits on costs it one 1 MiB write to the page cache
 * (no fsync), so a guest that writes everywhere at once is slowed to the
 * disk's pace until the writer has passed; one that writes little barely
 * notices.
 */
#include "state/snapshot_live.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>

#include "vmm/jail.h"
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"

#define PAGE  4096u
#define CHUNK (256u * PAGE)      /* 1 MiB: one write and one ioctl per chunk */

struct live_mem {
	const struct guest_mem *m;
	int uffd, out_fd, stop_fd;
	uint64_t nchunks;
	uint8_t *saved;              /* one byte per chunk, under lock */
	pthread_mutex_t lock;
	pthread_t fault_thread;
	bool thread_started;
	int error;                   /* first errno of a failed save (under lock) */
	_Atomic uint64_t done_bytes, data_bytes, faults;
};

static int wp_range(struct live_mem *lm, uint64_t off, uint64_t len, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)(lm->m->host + off), .len = len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(lm->uffd, UFFDIO_WRITEPROTECT, &wp);
}

/* Save chunk `c` if it is not saved yet, then lift its protection (which
 * wakes whoever waits on it).  With lm->lock held. */
static void save_chunk(struct live_mem *lm, uint64_t c)
{
	uint64_t off = c * CHUNK, end = off + CHUNK, data = 0;

	if (lm->saved[c])
		return;
	if (end > lm->m->size)
		end = lm->m->size;
	/* Only pages the memfd has are read: reading a hole would allocate it. */
	if (guest_mem_write_data(lm->m, lm->out_fd, off, end, &data) < 0 && !lm->error)
		lm->error = errno ? errno : EIO;
	atomic_fetch_add(&lm->data_bytes, data);
	lm->saved[c] = 1;
	atomic_fetch_add(&lm->done_bytes, end - off);
	/* Lifted even after a failed write: the guest must never stay stuck;
	 * the error fails the snapshot instead. */
	if (wp_range(lm, off, end - off, false) < 0 && !lm->error)
		lm->error = errno;
}

static void *fault_thread(void *arg)
{
	struct live_mem *lm = arg;
	struct pollfd pfd[2] = { { .fd = lm->uffd, .events = POLLIN },
				 { .fd = lm->stop_fd, .events = POLLIN } };

	seccomp_thread_enter(SECCOMP_SNAP_FAULT);
	for (;;) {
		struct uffd_msg msg;
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		n = read(lm->uffd, &msg, sizeof(msg));
		if (n != sizeof(msg))
			continue;            /* EAGAIN: another wake-up took it */
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address;
		uint64_t off = addr - (uintptr_t)lm->m->host;

		if (addr < (uintptr_t)lm->m->host || off >= lm->m->size)
			continue;
		atomic_fetch_add(&lm->faults, 1);
		pthread_mutex_lock(&lm->lock);
		save_chunk(lm, off / CHUNK);
		pthread_mutex_unlock(&lm->lock);
	}
	return NULL;
}

struct live_mem *live_mem_arm(const struct guest_mem *m, int out_fd, struct error *e)
{
	struct live_mem *lm = calloc(1, sizeof(*lm));
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
	struct uffdio_register reg;

	if (!lm) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	lm->m = m;
	lm->out_fd = out_fd;
	lm->stop_fd = -1;
	pthread_mutex_init(&lm->lock, NULL);
	lm->nchunks = (m->size + CHUNK - 1) / CHUNK;
	lm->saved = calloc(lm->nchunks, 1);
	lm->uffd = jail_userfaultfd(O_CLOEXEC | O_NONBLOCK);
	if (!lm->saved || lm->uffd < 0) {
		error_set(e, EXIT_HOST, "live snapshot: userfaultfd: %s",
			  lm->saved ? strerror(errno) : "out of memory");
		goto fail;
	}
	if (ioctl(lm->uffd, UFFDIO_API, &api) < 0) {
		error_set(e, EXIT_HOST, "live snapshot: this kernel's userfaultfd cannot "
			  "write-protect shared memory (%s); take the snapshot without --live",
			  strerror(errno));
		goto fail;
	}
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)m->host, .len = m->size },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(lm->uffd, UFFDIO_REGISTER, &reg) < 0 ||
	    !(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT))) {
		error_set(e, EXIT_HOST, "live snapshot: cannot write-protect guest memory (%s); "
			  "take the snapshot without --live", strerror(errno ? errno : ENOTSUP));
		goto fail;
	}
	if (wp_range(lm, 0, m->size, true) < 0) {
		error_set(e, EXIT_HOST, "live snapshot: UFFDIO_WRITEPROTECT: %s", strerror(errno));
		goto fail;
	}
	lm->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (lm->stop_fd < 0 || pthread_create(&lm->fault_thread, NULL, fault_thread, lm)) {
		error_set(e, EXIT_HOST, "live snapshot: cannot start the fault thread");
		wp_range(lm, 0, m->size, false);
		goto fail;
	}
	lm->thread_started = true;
	return lm;
fail:
	live_mem_free(lm);
	return NULL;
}

int live_mem_write(struct live_mem *lm, uint64_t *data_bytes, struct error *e)
{
	int err;

	if (ftruncate(lm->out_fd, (off_t)lm->m->size) < 0)
		lm->error = errno;
	for (uint64_t c = 0; c < lm->nchunks; c++) {
		pthread_mutex_lock(&lm->lock);
		save_chunk(lm, c);
		pthread_mutex_unlock(&lm->lock);
	}
	pthread_mutex_lock(&lm->lock);
	err = lm->error;
	pthread_mutex_unlock(&lm->lock);
	if (data_bytes)
		*data_bytes = atomic_load(&lm->data_bytes);
	if (err)
		return error_set(e, EXIT_HOST, "cannot write the memory file: %s", strerror(err));
	return 0;
}

uint64_t live_mem_done_bytes(const struct live_mem *lm)
{
	return lm ? atomic_load(&lm->done_bytes) : 0;
}

uint64_t live_mem_faults(const struct live_mem *lm)
{
	return lm ? atomic_load(&lm->faults) : 0;
}

void live_mem_free(struct live_mem *lm)
{
	uint64_t one = 1;

	if (!lm)
		return;
	if (lm->thread_started) {
		/* every chunk saved lifts every protection; make sure anyway */
		for (uint64_t c = 0; c < lm->nchunks; c++) {
			pthread_mutex_lock(&lm->lock);
			save_chunk(lm, c);
			pthread_mutex_unlock(&lm->lock);
		}
		if (write(lm->stop_fd, &one, sizeof(one)) < 0)
			log_warn("live snapshot: cannot stop the fault thread: %s", strerror(errno));
		pthread_join(lm->fault_thread, NULL);
	}
	if (lm->uffd >= 0)
		close(lm->uffd);     /* unregisters the range */
	if (lm->stop_fd >= 0)
		close(lm->stop_fd);
	pthread_mutex_destroy(&lm->lock);
	free(lm->saved);
	free(lm);
}
