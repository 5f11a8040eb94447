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
 *
 * tick (and dirty with tick=US) writes one byte on COM1 every US
 * microseconds of TSC time: 0x80 | (n & 0x7f) for the n-th tick, a byte
 * no text line holds, so that a reader on the host can pick the ticks out
 * of the console and timestamp each on its own clock.  The gap between two
 * ticks as the host sees them is a pause of the guest measured outside it
 * (bench/migrate.sh: the downtime as the guest sees it, which the guest's
 * own TSC gap would misstate wherever a VMM restores the TSC at its saved
 * value).  A tick is one port access, one exit to the VMM (the byte; no
 * wait for the transmitter, serial.c), and `tick` reads the line status
 * too on about one tick in 50 ms, for input; the report gives a tick's
 * average cost in the guest's TSC time (cost_ns), so that a reader can
 * tell the ticks' own share of the interval.  A tick that falls due more than one interval late (the
 * guest did not run: a pause) is written at once and the next one a full
 * interval later, never a burst.  `tick` sleeps in HLT between ticks
 * (APIC timer) and stops once a byte waits on COM1's input, which it
 * leaves there for the shell; dirty ticks from its busy loop.  Boot CPU
 * only (the console is its), so `allcpus` refuses both.
 */
#include "work.h"
#include "arch.h"
#include "lapic.h"
#include "lib.h"
#include "serial.h"
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

/* The ticks of one workload, in TSC units. */
struct ticker {
	uint64_t every;		/* interval; 0: no ticks */
	uint64_t next;		/* when the next one is due */
	uint64_t last;		/* when the last one was written */
	uint64_t n;		/* ticks written */
	uint64_t gap;		/* longest time between two in a row */
	uint64_t cost;		/* TSC time inside serial_tick, all ticks */
	uint64_t look;		/* look for input every look-th tick; 0: never */
	bool input;		/* a byte waited on COM1 when last looked */
};

/* Ticks every us microseconds from now; with input, look for it about
 * every 50 ms. */
static void ticker_start(struct ticker *k, uint64_t us, uint64_t now, bool input)
{
	*k = (struct ticker){ .every = us * tsc_khz / 1000, .next = now };
	if (us && !k->every)
		k->every = 1;
	if (input)
		k->look = us && us < 50000 ? 50000 / us : 1;
}

/* Write a tick if one is due at TSC time t. */
static void ticker_poll(struct ticker *k, uint64_t t)
{
	uint64_t t0, t1;

	if (!k->every || t < k->next)
		return;
	t0 = rdtsc();
	k->input = serial_tick((uint8_t)(0x80 | (k->n & 0x7f)), k->look && k->n % k->look == 0);
	t1 = rdtsc();
	k->cost += t1 - t0;
	if (k->n && t0 > k->last && t0 - k->last > k->gap)
		k->gap = t0 - k->last;
	k->last = t0;
	k->n++;
	k->next += k->every;
	if (k->next <= t1)
		k->next = t1 + k->every;
}

/* " ticks=N max_gap_us=G cost_ns=C" into buf, or "" without ticks. */
static void ticker_say(const struct ticker *k, char *buf, size_t cap)
{
	buf[0] = 0;
	if (k->every && tsc_khz)
		fmt(buf, cap, " ticks=%lu max_gap_us=%lu cost_ns=%lu", k->n,
		    k->gap * 1000 / tsc_khz, k->n ? k->cost * 1000000 / tsc_khz / k->n : 0);
}

static void work_dirty(const struct work *w, struct work_result *r)
{
	uint64_t base = ALIGN_UP(w->addr, PAGE), npages = 0, n = 0, idx = 0;
	uint64_t pps = w->rate_mib * (1024 * 1024 / PAGE), dur = w->seconds * 1000000;
	uint64_t rng = w->seed | 1, t0 = rdtsc(), el;
	struct ticker k;
	char ticks[64];

	ticker_start(&k, w->tick_us, t0, false);
	if (w->addr + w->len > base)
		npages = (w->addr + w->len - base) / PAGE;
	while (npages && (el = tsc_us_since(t0)) < dur) {
		uint64_t target = dirty_target(pps, el, n);

		ticker_poll(&k, rdtsc());

		for (; n < target; n++) {
			uint64_t page = w->random ? xorshift64(&rng) % npages : idx;

			*(volatile uint64_t *)(base + page * PAGE) = n + 1;
			if (++idx == npages)
				idx = 0;
		}
	}
	r->pages = n;
	r->ticks = k.n;
	ticker_say(&k, ticks, sizeof(ticks));
	fmt(r->line, sizeof(r->line),
	    "dirty pages=%lu seconds=%lu rate_mib_s=%lu addr=0x%lx len=%lu pattern=%s%s",
	    n, w->seconds, w->rate_mib, base, npages * PAGE, w->random ? "random" : "seq", ticks);
}

/* Tick every tick_us for seconds, or until a byte waits on COM1. */
static void work_tick(const struct work *w, struct work_result *r)
{
	uint64_t t0 = rdtsc(), t, dur = w->seconds * 1000000;
	struct ticker k;
	char ticks[64];

	ticker_start(&k, w->tick_us, t0, true);
	while (!k.input && tsc_us_since(t0) < dur) {
		ticker_poll(&k, rdtsc());
		t = rdtsc();
		if (k.next > t)
			lapic_sleep_us((k.next - t) * 1000 / tsc_khz);
	}
	r->ticks = k.n;
	ticker_say(&k, ticks, sizeof(ticks));
	fmt(r->line, sizeof(r->line), "tick us=%lu seconds=%lu stopped=%s%s", w->tick_us,
	    w->seconds, k.input ? "input" : "time", ticks);
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
	r->ticks = 0;
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
	case WORK_TICK:
		work_tick(w, r);
		break;
	}
}
