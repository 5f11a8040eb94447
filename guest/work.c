/*
 * work.c - fill, verify, dirty and spin: the guest's workloads.
 *
 * All run in ring 3 at native speed, on whichever CPU calls them, with no
 * shared state (so `allcpus` can run one per CPU at once).  Addresses are
 * physical = virtual (identity map); the command layer has already checked
 * that a range is free RAM.
 *
 * The fill pattern is a pure function of (address, seed): the SplitMix64
 * finalizer of address ^ (seed * odd constant), one 64-bit word per 8
 * bytes.  So any sub-range of a filled range can be verified alone, and a
 * range filled by N CPUs in slices verifies on one CPU.  The checksum is
 * the wrapping 64-bit sum of the words, which is order-free: the sums of
 * slices add up to the sum of the whole.
 *
 * dirty writes one word (at offset 0) per 4 KiB page, in order or in a
 * random walk, paced against the TSC: after t microseconds it has written
 * rate * 256 * t / 1e6 pages.  The value written is a running count, so a
 * page's content changes on every pass.
 */
#include "work.h"
#include "arch.h"
#include "lib.h"
#include "tsc.h"

#define PAGE 4096ul

uint64_t work_pattern(uint64_t addr, uint64_t seed)
{
	uint64_t z = addr ^ (seed * 0xd6e8feb86659fd93ull);

	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void work_fill(const struct work *w, struct work_result *r)
{
	uint64_t a, sum = 0, end = w->addr + w->len;

	for (a = w->addr; a < end; a += 8) {
		uint64_t v = work_pattern(a, w->seed);

		*(volatile uint64_t *)a = v;
		sum += v;
	}
	r->sum = sum;
	fmt(r->line, sizeof(r->line), "fill addr=0x%lx len=%lu seed=%lu sum=0x%016lx",
	    w->addr, w->len, w->seed, sum);
}

static void work_verify(const struct work *w, struct work_result *r)
{
	uint64_t a, sum = 0, end = w->addr + w->len;

	for (a = w->addr; a < end; a += 8) {
		uint64_t want = work_pattern(a, w->seed), got = *(volatile uint64_t *)a;

		if (got != want) {
			r->ok = false;
			fmt(r->line, sizeof(r->line),
			    "verify bad at=0x%lx expected=0x%016lx got=0x%016lx", a, want, got);
			return;
		}
		sum += got;
	}
	r->sum = sum;
	fmt(r->line, sizeof(r->line), "verify ok sum=0x%016lx addr=0x%lx len=%lu seed=%lu",
	    sum, w->addr, w->len, w->seed);
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Pages due after el_us microseconds at pps pages/s (flat out: always more). */
static uint64_t dirty_target(uint64_t pps, uint64_t el_us, uint64_t done)
{
	return pps ? pps * el_us / 1000000 + 1 : done + 256;
}

static void work_dirty(const struct work *w, struct work_result *r)
{
	uint64_t base = ALIGN_UP(w->addr, PAGE), npages = 0, n = 0, idx = 0;
	uint64_t pps = w->rate_mib * (1024 * 1024 / PAGE), dur = w->seconds * 1000000;
	uint64_t rng = w->seed | 1, t0 = rdtsc(), el;

	if (w->addr + w->len > base)
		npages = (w->addr + w->len - base) / PAGE;
	while (npages && (el = tsc_us_since(t0)) < dur) {
		uint64_t target = dirty_target(pps, el, n);

		for (; n < target; n++) {
			uint64_t page = w->random ? xorshift64(&rng) % npages : idx;

			*(volatile uint64_t *)(base + page * PAGE) = n + 1;
			if (++idx == npages)
				idx = 0;
		}
	}
	r->pages = n;
	fmt(r->line, sizeof(r->line),
	    "dirty pages=%lu seconds=%lu rate_mib_s=%lu addr=0x%lx len=%lu pattern=%s",
	    n, w->seconds, w->rate_mib, base, npages * PAGE, w->random ? "random" : "seq");
}

/* Spin for ms milliseconds of TSC time, and say the longest gap between
 * two TSC reads in a row (the longest time this vCPU did not run: a
 * migration's pause, as the guest itself sees it, among others) and the
 * most the TSC went backwards between two reads (it never should). */
static void work_spin(const struct work *w, struct work_result *r)
{
	uint64_t t0 = rdtsc(), last = t0, gap = 0, back = 0;

	while (tsc_us_since(t0) < w->ms * 1000) {
		uint64_t t = rdtsc();

		if (t < last) {
			if (last - t > back)
				back = last - t;
		} else if (t - last > gap) {
			gap = t - last;
		}
		last = t;
		cpu_relax();
	}
	fmt(r->line, sizeof(r->line), "spin ms=%lu max_gap_us=%lu back_us=%lu", w->ms,
	    tsc_khz ? gap * 1000 / tsc_khz : 0, tsc_khz ? back * 1000 / tsc_khz : 0);
}

void work_run(const struct work *w, struct work_result *r)
{
	r->ok = true;
	r->sum = 0;
	r->pages = 0;
	switch (w->kind) {
	case WORK_FILL:
		work_fill(w, r);
		break;
	case WORK_VERIFY:
		work_verify(w, r);
		break;
	case WORK_DIRTY:
		work_dirty(w, r);
		break;
	case WORK_SPIN:
		work_spin(w, r);
		break;
	}
}
