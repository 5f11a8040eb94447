/*
 * zero_blocks.c - see zero_blocks.h.
 *
 * One mutex guards the block states and every change of the mapping.  The
 * handler thread reads fault messages from the userfaultfd, takes the
 * mutex, and answers: a read gets zero pages (write-protected), a write
 * gets the memfd mapped back.  A fault on a block that is no longer zero
 * (the scanner gave it back, or an earlier fault did) is only woken: the
 * thread retries on the memfd.  The handler never touches the mapping of a
 * zero block except pages mincore says are present, so it cannot fault on
 * itself.
 */
#include "mem/zero_blocks.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <seccomp.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"

#define PAGE 4096ull
#define BLOCK_PAGES (ZERO_BLOCK_SIZE / PAGE)

struct zero_blocks {
	struct guest_mem *m;
	int uffd;
	int stop_fd;             /* eventfd: the threads end */
	int kick_fd;             /* eventfd: blocks are pending */
	uint8_t *pending;        /* one byte per block: released by the hook, to switch */
	uint8_t *chk_buf;        /* one block, for the checked switch (under lock) */
	pthread_mutex_t lock;
	uint64_t nblocks;
	uint8_t *zero;           /* one byte per block: 1 while anonymous */
	uint64_t max_runs;
	uint64_t scan_rate;      /* pages per second, 0: no scanner */
	uint64_t scan_next;      /* next block the scanner reads */
	uint8_t *scan_buf;       /* one block, for pread */
	pthread_t handler, scanner;
	bool have_scanner;
	struct zero_blocks_stats st;   /* under lock */
};

static uint64_t process_pending(struct zero_blocks *z);

/* ---- the block table and the VMA bound ---- */

static bool is_zero(const struct zero_blocks *z, uint64_t b)
{
	return b < z->nblocks && z->zero[b];
}

/* How the number of runs changes when block b flips to zero (+1, 0, -1). */
static int runs_delta(const struct zero_blocks *z, uint64_t b)
{
	int left = b > 0 && is_zero(z, b - 1);
	int right = is_zero(z, b + 1);

	return 1 - left - right;
}

static void set_zero(struct zero_blocks *z, uint64_t b, bool on)
{
	int d = runs_delta(z, b);

	z->zero[b] = on;
	z->st.runs += on ? d : -d;
	z->st.zero_blocks += on ? 1 : -1;
}

static bool all_zero(const uint8_t *p, uint64_t len)
{
	const uint64_t *q = (const uint64_t *)p;

	for (uint64_t i = 0; i < len / 8; i++)
		if (q[i])
			return false;
	return true;
}

/* ---- switching a block ---- */

/* Replace block b of the mapping by an anonymous, userfaultfd-registered
 * one.  The memfd's bytes of it must be zero (punched, or about to be).
 * Lock held.  0 or -1 (the mapping is left as it was if mmap failed). */
static int map_anon(struct zero_blocks *z, uint64_t b)
{
	uint8_t *p = z->m->host + b * ZERO_BLOCK_SIZE;
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)p, .len = ZERO_BLOCK_SIZE },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};

	if (mmap(p, ZERO_BLOCK_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
		/* MAP_FIXED failed: the old mapping may be gone; map the memfd again */
		log_error("zero-page layer: mmap of block %llu: %s", (unsigned long long)b,
			  strerror(errno));
		if (mmap(p, ZERO_BLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
			 z->m->fd, (off_t)(b * ZERO_BLOCK_SIZE)) == MAP_FAILED)
			abort();   /* guest memory with a hole in the mapping: cannot go on */
		return -1;
	}
	(void)madvise(p, ZERO_BLOCK_SIZE, MADV_NOHUGEPAGE);
	if (ioctl(z->uffd, UFFDIO_REGISTER, &reg) < 0) {
		log_error("zero-page layer: register block %llu: %s", (unsigned long long)b,
			  strerror(errno));
		if (mmap(p, ZERO_BLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
			 z->m->fd, (off_t)(b * ZERO_BLOCK_SIZE)) == MAP_FAILED)
			abort();
		return -1;
	}
	set_zero(z, b, true);
	z->st.released++;
	return 0;
}

/* Map the memfd back over zero block b, first copying into the memfd any
 * present page of the anonymous block that is not all zero (a write in
 * the zeropage/write-protect window).  Lock held. */
static void map_memfd(struct zero_blocks *z, uint64_t b, bool punched)
{
	uint8_t *p = z->m->host + b * ZERO_BLOCK_SIZE;
	uint64_t off = b * ZERO_BLOCK_SIZE;
	unsigned char vec[BLOCK_PAGES];

	if (mincore(p, ZERO_BLOCK_SIZE, vec) == 0) {
		for (uint64_t i = 0; i < BLOCK_PAGES; i++) {
			/* a zero page needs no copy only where the memfd is a hole */
			if (!(vec[i] & 1) || (punched && all_zero(p + i * PAGE, PAGE)))
				continue;
			if (pwrite(z->m->fd, p + i * PAGE, PAGE, (off_t)(off + i * PAGE)) != (ssize_t)PAGE)
				log_error("zero-page layer: copy of page %llu into the memfd: %s",
					  (unsigned long long)(off + i * PAGE), strerror(errno));
			z->st.raced_pages++;
		}
	} else {
		log_error("zero-page layer: mincore of block %llu: %s", (unsigned long long)b,
			  strerror(errno));
	}
	if (mmap(p, ZERO_BLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
		 z->m->fd, (off_t)off) == MAP_FAILED) {
		log_error("zero-page layer: mapping the memfd back over block %llu: %s",
			  (unsigned long long)b, strerror(errno));
		abort();   /* the guest's memory would be lost */
	}
	set_zero(z, b, false);
	z->st.restored++;
}

static void wake(struct zero_blocks *z, uint64_t b)
{
	struct uffdio_range r = { .start = (uintptr_t)(z->m->host + b * ZERO_BLOCK_SIZE),
				  .len = ZERO_BLOCK_SIZE };

	(void)ioctl(z->uffd, UFFDIO_WAKE, &r);
}

/* Zero pages over every empty page of block b, then write-protect it. */
static int fill_zero(struct zero_blocks *z, uint64_t b)
{
	uint64_t start = (uintptr_t)(z->m->host + b * ZERO_BLOCK_SIZE);
	uint64_t done = 0;

	while (done < ZERO_BLOCK_SIZE) {
		struct uffdio_zeropage zp = {
			.range = { .start = start + done, .len = ZERO_BLOCK_SIZE - done },
			.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
		};
		if (ioctl(z->uffd, UFFDIO_ZEROPAGE, &zp) == 0) {
			done = ZERO_BLOCK_SIZE;
			break;
		}
		if (errno == EAGAIN && zp.zeropage > 0) {
			done += (uint64_t)zp.zeropage;
			continue;
		}
		if (errno != EEXIST)
			return -1;
		done += (zp.zeropage > 0 ? (uint64_t)zp.zeropage : 0) + PAGE;   /* skip the present page */
	}
	struct uffdio_writeprotect wp = {
		.range = { .start = start, .len = ZERO_BLOCK_SIZE },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,   /* WP with DONTWAKE is EINVAL */
	};
	return ioctl(z->uffd, UFFDIO_WRITEPROTECT, &wp);
}

/* The layer's threads' own seccomp filter (base/seccomp.h's kinds have no
 * UFFDIO_ZEROPAGE or UFFDIO_WAKE, and its table is not this file's): what
 * the handler and the scanner call, and what glibc's abort, malloc and the
 * log need.  A syscall outside it traps, as everywhere in the VMM.
 * Installed first thing in each thread when seccomp is on; not under a
 * sanitizer, whose runtime needs more. */
static void zb_filter(void)
{
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	static const int allow[] = {
		SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(writev), SCMP_SYS(poll), SCMP_SYS(ppoll),
		SCMP_SYS(munmap), SCMP_SYS(madvise), SCMP_SYS(mincore), SCMP_SYS(pread64),
		SCMP_SYS(pwrite64), SCMP_SYS(lseek), SCMP_SYS(fallocate), SCMP_SYS(futex),
		SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn),
		SCMP_SYS(rt_sigprocmask), SCMP_SYS(restart_syscall), SCMP_SYS(clock_gettime),
		SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(getpid), SCMP_SYS(gettid),
		SCMP_SYS(tgkill), SCMP_SYS(brk), SCMP_SYS(fstat), SCMP_SYS(newfstatat),
		SCMP_SYS(sched_yield), SCMP_SYS(mremap),
		/* the jail's drop after the threads started: glibc makes every
		 * thread change its own ids (setxid broadcast) */
		SCMP_SYS(setgroups), SCMP_SYS(setresgid), SCMP_SYS(setresuid),
	};
	static const unsigned long ioctls[] = { UFFDIO_ZEROPAGE, UFFDIO_WAKE, UFFDIO_REGISTER,
						UFFDIO_WRITEPROTECT };
	scmp_filter_ctx ctx;
	int rc = 0;

	if (!seccomp_enabled())
		return;
	ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		abort();
	for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]); i++)
		rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allow[i], 0);
	for (size_t i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++)
		rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				       SCMP_A1(SCMP_CMP_EQ, ioctls[i]));
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
			       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
			       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (rc || seccomp_load(ctx)) {
		log_error("zero-page layer: cannot install its seccomp filter");
		abort();   /* a thread that handles guest faults never runs unfiltered */
	}
	seccomp_release(ctx);
#endif
}

static void handle_fault(struct zero_blocks *z, const struct uffd_msg *msg)
{
	uint64_t addr = msg->arg.pagefault.address;
	uint64_t b = (addr - (uintptr_t)z->m->host) / ZERO_BLOCK_SIZE;
	bool write = msg->arg.pagefault.flags &
		     (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);

	pthread_mutex_lock(&z->lock);
	if (b < z->nblocks && z->zero[b]) {
		if (!write && fill_zero(z, b) == 0) {
			z->st.read_faults++;
		} else {
			if (!write)
				log_warn("zero-page layer: zero pages for block %llu: %s; mapping the memfd",
					 (unsigned long long)b, strerror(errno));
			map_memfd(z, b, true);
			z->st.write_faults++;
		}
	}
	pthread_mutex_unlock(&z->lock);
	if (b < z->nblocks)
		wake(z, b);
}

static void *handler_main(void *arg)
{
	struct zero_blocks *z = arg;
	struct pollfd pfd[3] = { { .fd = z->uffd, .events = POLLIN },
				 { .fd = z->stop_fd, .events = POLLIN },
				 { .fd = z->kick_fd, .events = POLLIN } };

	zb_filter();
	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[2].revents) {
			uint64_t v;
			if (read(z->kick_fd, &v, sizeof(v)) == sizeof(v))
				process_pending(z);
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		struct uffd_msg msg[16];
		ssize_t n = read(z->uffd, msg, sizeof(msg));
		if (n < 0)
			continue;   /* EAGAIN: another wake took it */
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				handle_fault(z, &msg[i]);
	}
	return NULL;
}

/* ---- releasing ---- */

static bool runs_allow(const struct zero_blocks *z, uint64_t b)
{
	return runs_delta(z, b) <= 0 || z->st.runs < z->max_runs;
}

uint64_t zero_blocks_release(struct zero_blocks *z, uint64_t off, uint64_t len)
{
	uint64_t first = (off + ZERO_BLOCK_SIZE - 1) / ZERO_BLOCK_SIZE;
	uint64_t end = (off + len) / ZERO_BLOCK_SIZE;
	uint64_t n = 0;

	if (!z || off + len > z->m->size)
		return 0;
	pthread_mutex_lock(&z->lock);
	for (uint64_t b = first; b < end && b < z->nblocks; b++) {
		if (z->zero[b])
			continue;
		if (!runs_allow(z, b)) {
			z->st.vma_limited++;
			continue;
		}
		if (map_anon(z, b) == 0)
			n++;
	}
	pthread_mutex_unlock(&z->lock);
	return n;
}

/* guest_mem_discard's hook, on the caller's thread (the event loop, whose
 * seccomp filter has no userfaultfd ioctls): only mark the whole blocks
 * pending and kick the handler, which switches them checked. */
static void released_hook(void *opaque, uint64_t off, uint64_t len)
{
	struct zero_blocks *z = opaque;
	uint64_t first = (off + ZERO_BLOCK_SIZE - 1) / ZERO_BLOCK_SIZE;
	uint64_t end = (off + len) / ZERO_BLOCK_SIZE, one = 1;
	bool any = false;

	pthread_mutex_lock(&z->lock);
	for (uint64_t b = first; b < end && b < z->nblocks; b++)
		if (!z->zero[b]) {
			z->pending[b] = 1;
			any = true;
		}
	pthread_mutex_unlock(&z->lock);
	if (any && write(z->kick_fd, &one, sizeof(one)) < 0)
		log_warn("zero-page layer: kick: %s", strerror(errno));
}

/* No page of block b's (anonymous) mapping is present. */
static bool block_untouched(struct zero_blocks *z, uint64_t b)
{
	unsigned char vec[BLOCK_PAGES];

	if (mincore(z->m->host + b * ZERO_BLOCK_SIZE, ZERO_BLOCK_SIZE, vec) != 0)
		return false;
	for (uint64_t i = 0; i < BLOCK_PAGES; i++)
		if (vec[i] & 1)
			return false;
	return true;
}

/* Read block b of the memfd (pread: a hole reads as zeros unallocated). */
static bool block_reads_zero(struct zero_blocks *z, uint64_t b, uint8_t *buf)
{
	uint64_t off = b * ZERO_BLOCK_SIZE;

	/* a block with no data at all needs no read */
	off_t d = lseek(z->m->fd, (off_t)off, SEEK_DATA);
	if (d < 0 || (uint64_t)d >= off + ZERO_BLOCK_SIZE)
		return errno == ENXIO || d >= 0;
	ssize_t r = pread(z->m->fd, buf, ZERO_BLOCK_SIZE, (off_t)off);
	return r == (ssize_t)ZERO_BLOCK_SIZE && all_zero(buf, ZERO_BLOCK_SIZE);
}

/* Switch block b, then read the memfd again: from the switch on, every
 * access through the mapping waits for the lock, so what reads zero now
 * stays zero; punch it.  Otherwise map the memfd back.  Lock held; the
 * caller wakes the block.  True when the block is now zero. */
static bool checked_release(struct zero_blocks *z, uint64_t b)
{
	if (z->zero[b] || !runs_allow(z, b) || map_anon(z, b))
		return false;
	/* Between map_anon's mmap and its userfaultfd registration an access
	 * faulted in an ordinary anonymous page, unseen by the handler: a
	 * write there is in that page, not in the memfd.  Any page present
	 * now came that way (from the registration on, every new page waits
	 * for the lock we hold), so the block is not released, and map_memfd
	 * copies every present page back, zero or not (the memfd is not a
	 * hole here: a zero written over data must reach it too). */
	if (!block_untouched(z, b) || !block_reads_zero(z, b, z->chk_buf) ||
	    fallocate(z->m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(b * ZERO_BLOCK_SIZE), (off_t)ZERO_BLOCK_SIZE) != 0) {
		z->st.released--;
		map_memfd(z, b, false);
		z->st.restored--;
		return false;
	}
	guest_mem_dirty_hva(z->m, z->m->host + b * ZERO_BLOCK_SIZE, ZERO_BLOCK_SIZE);
	return true;
}

/* Switch the blocks the hook left pending (checked: the guest may have
 * written them since it released them).  Returns how many switched. */
static uint64_t process_pending(struct zero_blocks *z)
{
	uint64_t n = 0;

	pthread_mutex_lock(&z->lock);
	for (uint64_t b = 0; b < z->nblocks; b++) {
		if (!z->pending[b])
			continue;
		z->pending[b] = 0;
		if (checked_release(z, b))
			n++;
		else if (!z->zero[b] && !runs_allow(z, b))
			z->st.vma_limited++;
		wake(z, b);
	}
	pthread_mutex_unlock(&z->lock);
	return n;
}

uint64_t zero_blocks_settle(struct zero_blocks *z)
{
	return z ? process_pending(z) : 0;
}

uint64_t zero_blocks_scan(struct zero_blocks *z, uint64_t max_pages)
{
	uint64_t n = 0;

	for (uint64_t done = 0; done + BLOCK_PAGES <= max_pages && done / BLOCK_PAGES < z->nblocks;
	     done += BLOCK_PAGES) {
		uint64_t b = z->scan_next;
		z->scan_next = (b + 1) % z->nblocks;
		pthread_mutex_lock(&z->lock);
		bool skip = z->zero[b] || !runs_allow(z, b);
		z->st.scanned_pages += skip ? 0 : BLOCK_PAGES;
		pthread_mutex_unlock(&z->lock);
		/* first read without the lock: most blocks are not zero */
		if (skip || !block_reads_zero(z, b, z->scan_buf))
			continue;
		pthread_mutex_lock(&z->lock);
		if (checked_release(z, b)) {
			z->st.scan_released++;
			n++;
		}
		pthread_mutex_unlock(&z->lock);
		wake(z, b);
	}
	return n;
}

static void *scanner_main(void *arg)
{
	struct zero_blocks *z = arg;
	/* one block per tick: ticks of BLOCK_PAGES / rate seconds */
	uint64_t tick_ns = BLOCK_PAGES * 1000000000ull / z->scan_rate;
	struct pollfd pfd = { .fd = z->stop_fd, .events = POLLIN };

	zb_filter();
	for (;;) {
		int ms = (int)(tick_ns / 1000000);
		if (poll(&pfd, 1, ms > 0 ? ms : 1) != 0)
			break;
		zero_blocks_scan(z, BLOCK_PAGES);
	}
	return NULL;
}

/* ---- start and stop ---- */

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM) {
		/* /dev/userfaultfd (Linux 6.1) grants kernel faults by file mode */
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, _IO(0xAA, 0x00), O_CLOEXEC | O_NONBLOCK);   /* USERFAULTFD_IOC_NEW */
			close(dev);
		}
		if (fd < 0)
			errno = EPERM;
	}
	return fd;
}

static uint64_t max_runs_bound(void)
{
	uint64_t n = 65530;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");

	if (f) {
		unsigned long long v;
		if (fscanf(f, "%llu", &v) == 1)
			n = v;
		fclose(f);
	}
	n /= 4;
	return n > 16384 ? 16384 : n;
}

int zero_blocks_start(struct zero_blocks **out, struct guest_mem *m,
		      uint64_t scan_pages_per_s, struct error *e)
{
	struct zero_blocks *z;

	*out = NULL;
	if (m->fd < 0 || !m->host)
		return error_set(e, EXIT_USAGE, "zero-page layer: guest memory is not a memfd mapping");
	z = calloc(1, sizeof(*z));
	if (!z)
		return error_set(e, EXIT_RESOURCE, "zero-page layer: out of memory");
	z->m = m;
	z->nblocks = m->size / ZERO_BLOCK_SIZE;
	z->st.blocks = z->nblocks;
	z->max_runs = max_runs_bound();
	z->scan_rate = scan_pages_per_s;
	z->stop_fd = -1;
	z->kick_fd = -1;
	pthread_mutex_init(&z->lock, NULL);
	z->zero = calloc(z->nblocks ? z->nblocks : 1, 1);
	z->pending = calloc(z->nblocks ? z->nblocks : 1, 1);
	z->uffd = open_uffd();
	if (!z->zero || !z->pending || z->uffd < 0) {
		int err = errno;
		error_set(e, EXIT_RESOURCE, "zero-page layer: userfaultfd: %s%s", strerror(err),
			  err == EPERM ? " (needs CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 "
					 "or access to /dev/userfaultfd)" : "");
		goto fail;
	}
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(z->uffd, UFFDIO_API, &api) < 0) {
		error_set(e, EXIT_RESOURCE, "zero-page layer: UFFDIO_API: %s", strerror(errno));
		goto fail;
	}
	if (!(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
		error_set(e, EXIT_RESOURCE,
			  "zero-page layer: the kernel has no userfaultfd write-protect for anonymous memory");
		goto fail;
	}
	z->stop_fd = eventfd(0, EFD_CLOEXEC);
	z->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (z->stop_fd < 0 || z->kick_fd < 0 || !(z->scan_buf = malloc(ZERO_BLOCK_SIZE)) ||
	    !(z->chk_buf = malloc(ZERO_BLOCK_SIZE))) {
		error_set(e, EXIT_RESOURCE, "zero-page layer: %s", strerror(errno));
		goto fail;
	}
	if (pthread_create(&z->handler, NULL, handler_main, z)) {
		error_set(e, EXIT_RESOURCE, "zero-page layer: cannot start its fault handler");
		goto fail;
	}
	if (scan_pages_per_s) {
		if (pthread_create(&z->scanner, NULL, scanner_main, z) == 0)
			z->have_scanner = true;
		else
			log_warn("zero-page layer: cannot start the scanner; reported pages only");
	}
	m->released_opaque = z;
	m->released = released_hook;
	*out = z;
	return 0;
fail:
	if (z->uffd >= 0)
		close(z->uffd);
	if (z->stop_fd >= 0)
		close(z->stop_fd);
	if (z->kick_fd >= 0)
		close(z->kick_fd);
	free(z->zero);
	free(z->pending);
	free(z->scan_buf);
	free(z->chk_buf);
	pthread_mutex_destroy(&z->lock);
	free(z);
	return -1;
}

void zero_blocks_get_stats(struct zero_blocks *z, struct zero_blocks_stats *s)
{
	pthread_mutex_lock(&z->lock);
	*s = z->st;
	pthread_mutex_unlock(&z->lock);
}

void zero_blocks_stop(struct zero_blocks *z)
{
	uint64_t one = 1;

	if (!z)
		return;
	z->m->released = NULL;
	z->m->released_opaque = NULL;
	if (write(z->stop_fd, &one, sizeof(one)) < 0)
		log_warn("zero-page layer: stop: %s", strerror(errno));
	if (z->have_scanner)
		pthread_join(z->scanner, NULL);
	pthread_join(z->handler, NULL);
	pthread_mutex_lock(&z->lock);
	for (uint64_t b = 0; b < z->nblocks; b++)
		if (z->zero[b])
			map_memfd(z, b, true);
	pthread_mutex_unlock(&z->lock);
	close(z->uffd);
	close(z->stop_fd);
	close(z->kick_fd);
	free(z->zero);
	free(z->pending);
	free(z->scan_buf);
	free(z->chk_buf);
	pthread_mutex_destroy(&z->lock);
	free(z);
}
