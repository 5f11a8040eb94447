/*
 * idle_sample.c - estimating how much of its memory a guest uses, by
 * sampling, as ESX does (Waldspurger, OSDI'02, section 5.3; issue 13 item
 * 3; docs/memory.md "Idle memory").
 *
 * Each period a few hundred guest pages are picked at random, and the
 * VMM's own mapping of each is dropped: madvise(MADV_DONTNEED) on the
 * MAP_SHARED memfd mapping removes the page-table entry only (the page
 * stays in the memfd, nothing is lost), and the kernel's MMU notifier
 * makes KVM drop its EPT entry for it too.  The guest's next access to the
 * page, a read or a write, is then an EPT fault that KVM resolves through
 * the VMM's mapping (get_user_pages), which maps the page again.  At the
 * end of the period /proc/self/pagemap says, per sampled page, whether it
 * is mapped again (bit 63, "present"): touched.  This is the paper's
 * mechanism (invalidate the mapping, see whether the next access traps)
 * with the kernel doing the trapping.  What it measures is any access,
 * reads included, by the vCPUs or by the VMM's devices on the guest's
 * behalf.  The alternatives measure less or cost more: KVM's dirty log
 * sees writes only and write-protects every page, page_idle (accessed
 * bits through the MMU notifier) needs CONFIG_IDLE_PAGE_TRACKING, which
 * Debian's kernels lack, and root for PFNs; soft-dirty (clear_refs)
 * write-protects the whole process each period.
 *
 * Invariants.
 *   - At most one sampled page per 64 KiB of guest memory: a read fault of
 *     a file mapping maps the page's neighbours already in the page cache
 *     (fault-around, 64 KiB), which would show a second sampled page in
 *     the same window as touched when only the first was.
 *   - Dropping the mapping of a shared mapping never changes the memory.
 *     A clone's copy-on-write (private) mapping would lose its copies, so
 *     it is never sampled (the command refuses).
 *   - A page that was not mapped at the start (never touched, or a
 *     ballooned hole) counts as idle unless mapped by the end: an access
 *     maps it.
 *   - A period is the time between two calls; the caller (shoald's memory
 *     manager) sets it.  The averages: fast = fast + (x - fast)/2, slow =
 *     slow + (x - slow)/16 per period, both starting at the first period's
 *     fraction; the estimate is the larger of the two, so it follows a
 *     rise quickly and a fall slowly (ESX takes the largest of a slow
 *     average, a fast one, and the fast one with the current period's
 *     samples so far; here a period is closed before it is read, so the
 *     last two are one).
 *
 * The guest cannot see the sampling, only a slightly slower first access
 * to a sampled page; it can make its memory look active by touching it,
 * which is what "active" means.  It cannot make the VMM touch anything.
 */
#include "mem/idle_sample.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "devices/virtio_balloon.h"
#include "vmm/vm.h"

#define WINDOW_PAGES 16       /* 64 KiB: the kernel's fault_around_bytes */
#define PM_PRESENT (1ull << 63)

int idle_sampler_open(struct idle_sampler *s, void *base, uint64_t size, struct error *e)
{
	uint64_t seed = 0;

	memset(s, 0, sizeof(*s));
	s->base = base;
	s->size = size & ~4095ull;
	s->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0)
		return error_set(e, EXIT_HOST, "memory-activity: /proc/self/pagemap: %s",
				 strerror(errno));
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)s;
	s->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
	return 0;
}

void idle_sampler_close(struct idle_sampler *s)
{
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	s->pagemap_fd = -1;
	s->n = 0;
}

static uint64_t rng_next(struct idle_sampler *s)
{
	uint64_t x = s->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return s->rng = x;
}

void idle_sampler_fold(struct idle_sampler *s, double x)
{
	if (s->periods++ == 0) {
		s->fast = s->slow = x;
	} else {
		s->fast += (x - s->fast) / 2;
		s->slow += (x - s->slow) / 16;
	}
	s->last = x;
}

double idle_sampler_estimate(const struct idle_sampler *s)
{
	return s->fast > s->slow ? s->fast : s->slow;
}

/* Is page `p` mapped in our page tables?  1, 0, or -1 (errno). */
static int page_present(struct idle_sampler *s, uint64_t p)
{
	uint64_t vpn = ((uintptr_t)s->base >> 12) + p, ent;

	if (pread(s->pagemap_fd, &ent, sizeof(ent), (off_t)(vpn * 8)) != sizeof(ent))
		return -1;
	return (ent & PM_PRESENT) != 0;
}

int idle_sampler_period(struct idle_sampler *s, int npages, struct error *e)
{
	uint64_t windows = s->size / (WINDOW_PAGES * 4096ull);

	if (s->pagemap_fd < 0)
		return error_set(e, EXIT_HOST, "memory-activity: /proc/self/pagemap is not open");
	if (s->n) {               /* close the open period */
		int touched = 0;

		for (int i = 0; i < s->n; i++) {
			int r = page_present(s, s->pages[i]);

			if (r < 0) {
				s->n = 0;
				return error_set(e, EXIT_HOST, "memory-activity: reading "
						 "/proc/self/pagemap: %s", strerror(errno));
			}
			touched += r;
		}
		s->last_touched = (uint64_t)touched;
		s->last_sampled = (uint64_t)s->n;
		idle_sampler_fold(s, (double)touched / s->n);
		s->n = 0;
	}
	if (npages > IDLE_SAMPLE_MAX)
		npages = IDLE_SAMPLE_MAX;
	if ((uint64_t)npages > windows)
		npages = (int)windows;
	/* distinct windows (a retry on a repeat; n is small against windows
	 * or, when it is not, bounded by them), one random page in each */
	for (int i = 0, tries = 0; i < npages && tries < npages * 64; tries++) {
		uint64_t w = rng_next(s) % windows, p = w * WINDOW_PAGES + rng_next(s) % WINDOW_PAGES;
		bool dup = false;

		for (int j = 0; j < i && !dup; j++)
			dup = s->pages[j] / WINDOW_PAGES == w;
		if (!dup)
			s->pages[i++] = p, s->n = i;
	}
	for (int i = 0; i < s->n; i++)
		if (madvise(s->base + s->pages[i] * 4096, 4096, MADV_DONTNEED) < 0) {
			int err = errno;

			s->n = 0;
			return error_set(e, EXIT_HOST, "memory-activity: madvise(MADV_DONTNEED): %s",
					 strerror(err));
		}
	return 0;
}

/* ---- the control command ---- */

static struct idle_sampler sampler = { .pagemap_fd = -1 };
static char sampler_error[1024];
static uint64_t sampler_period_ns;    /* CLOCK_MONOTONIC at the last call */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static json_t *activity_error(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* {"cmd": "memory-activity", "pages": N}: end the sampling period that the
 * last call began, begin the next, and answer the estimate. */
static json_t *memory_activity_cmd(struct vm *vm, json_t *req, void *opaque)
{
	json_t *jp = json_object_get(req, "pages"), *o, *b;
	struct device *bd;
	struct error e = { 0 };
	int pages = IDLE_SAMPLE_DEFAULT;
	uint64_t now = mono_ns();
	double est;

	(void)opaque;
	if (jp && (!json_is_integer(jp) || json_integer_value(jp) < 1 ||
		   json_integer_value(jp) > IDLE_SAMPLE_MAX))
		return activity_error("memory-activity: \"pages\" must be an integer from 1 to 4096");
	if (jp)
		pages = (int)json_integer_value(jp);
	if (sampler_error[0])
		return activity_error(sampler_error);
	if (idle_sampler_period(&sampler, pages, &e))
		return activity_error(e.msg);
	est = idle_sampler_estimate(&sampler);
	o = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I}", "ok", 1,
		      "memory", (json_int_t)vm->mem.size,
		      "periods", (json_int_t)sampler.periods,
		      "sampled", (json_int_t)sampler.last_sampled,
		      "touched", (json_int_t)sampler.last_touched,
		      "period_ms", (json_int_t)(sampler_period_ns ?
				(now - sampler_period_ns) / 1000000 : 0));
	sampler_period_ns = now;
	if (sampler.periods) {
		json_object_set_new(o, "active_fraction", json_real(est));
		json_object_set_new(o, "active_bytes",
				    json_integer((json_int_t)(est * (double)vm->mem.size)));
		json_object_set_new(o, "last", json_real(sampler.last));
		json_object_set_new(o, "fast", json_real(sampler.fast));
		json_object_set_new(o, "slow", json_real(sampler.slow));
	} else {
		json_object_set_new(o, "active_fraction", json_null());
	}
	bd = vm_find_device(vm, "virtio-balloon0");
	b = bd ? virtio_balloon_info(bd) : NULL;
	if (b)
		json_object_set(o, "balloon_target_bytes", json_object_get(b, "target_bytes"));
	json_decref(b);
	return o;
}

void idle_sample_add_command(struct vm *vm)
{
	struct error e = { 0 };

	if (vm->mem.private_map)
		snprintf(sampler_error, sizeof(sampler_error), "memory-activity: a clone's "
			 "copy-on-write memory is not sampled (dropping a page would drop its copy)");
	else if (idle_sampler_open(&sampler, vm->mem.host, vm->mem.size, &e))
		snprintf(sampler_error, sizeof(sampler_error), "%s", e.msg);
	if (vm_add_command(vm, "memory-activity", memory_activity_cmd, NULL))
		log_warn("memory-activity: the control socket has no room for the command");
}
