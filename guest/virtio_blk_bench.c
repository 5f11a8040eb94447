/*
 * virtio_blk_bench.c - `vblk-bench [MS] [dev=N]`: virtio-blk request
 * rates, timed with the TSC, for side-by-side comparisons (Shoal against
 * QEMU on the same guest and image; never as a pass/fail threshold).
 *
 * Six runs of MS milliseconds each (default 300):
 *   randread/randwrite, 4 KiB, queue depth 1 and 32 (IOPS),
 *   seqread/seqwrite, 1 MiB, queue depth 2 (MiB/s).
 * Random offsets are 4 KiB aligned within the first min(capacity, 1 GiB)
 * of the disk (xorshift, fixed seed); sequential runs wrap there.  A
 * queue of `depth` requests is kept full: each completion is reaped and a
 * new request queued, one notify per refill (EVENT_IDX may skip some).
 * Requests go through indirect tables when negotiated (one ring slot
 * each, as Linux does), so depth 32 fits any queue of 32 or more.
 * The disk's contents are overwritten: use a scratch image.
 * One report per run: "vblk-bench NAME bs=B qd=D ops=N ms=T iops=I
 * mib_s=M avg_us=U", then "vblk-bench ok mode=M".
 */
#include "virtio_blk.h"
#include "arch.h"
#include "lib.h"
#include "report.h"
#include "tsc.h"

struct bench_run {
	const char *name;
	uint32_t type, bs, qd;
	bool random;
};

static const struct bench_run runs[] = {
	{ "randread", VIRTIO_BLK_T_IN, 4096, 1, true },
	{ "randread", VIRTIO_BLK_T_IN, 4096, 32, true },
	{ "randwrite", VIRTIO_BLK_T_OUT, 4096, 1, true },
	{ "randwrite", VIRTIO_BLK_T_OUT, 4096, 32, true },
	{ "seqread", VIRTIO_BLK_T_IN, 1u << 20, 2, false },
	{ "seqwrite", VIRTIO_BLK_T_OUT, 1u << 20, 2, false },
};

struct bench_state {
	struct vblk *b;
	const struct bench_run *r;
	uint8_t *buf;		/* qd x bs */
	uint64_t blocks, next, rng;
	uint64_t ops, lat_sum;
};

static uint64_t bench_block(struct bench_state *s)
{
	if (!s->r->random)
		return s->next++ % s->blocks;
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng % s->blocks;
}

static bool bench_submit(struct bench_state *s, unsigned slot)
{
	uint64_t sector = bench_block(s) * (s->r->bs / 512);

	s->b->req[slot].t0 = rdtsc();
	return vblk_submit(s->b, slot, s->r->type, sector, s->buf + (size_t)slot * s->r->bs,
			   s->r->bs, 1, true);
}

static bool bench_one(struct bench_state *s, uint64_t ms)
{
	uint64_t t0 = rdtsc(), us;
	unsigned i, inflight = 0;
	int slot;

	for (i = 0; i < s->r->qd; i++, inflight++)
		if (!bench_submit(s, i))
			return false;
	virtq_kick(&s->b->q);
	while (inflight) {
		if ((slot = vblk_reap(s->b, 5000000, NULL)) < 0 ||
		    s->b->req[slot].status != VIRTIO_BLK_S_OK)
			return false;
		inflight--;
		s->ops++;
		s->lat_sum += rdtsc() - s->b->req[slot].t0;
		if (tsc_us_since(t0) < ms * 1000) {
			if (!bench_submit(s, (unsigned)slot))
				return false;
			inflight++;
			virtq_kick(&s->b->q);
		}
	}
	us = tsc_us_since(t0);
	report("vblk-bench %s bs=%u qd=%u ops=%lu ms=%lu iops=%lu mib_s=%lu avg_us=%lu",
	       s->r->name, s->r->bs, s->r->qd, s->ops, us / 1000, us ? s->ops * 1000000 / us : 0,
	       us ? s->ops * s->r->bs * 1000000 / us / (1u << 20) : 0,
	       s->ops ? s->lat_sum / s->ops * 1000 / (tsc_khz ? tsc_khz : 1000000) : 0);
	return true;
}

bool vblk_bench_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv), i;
	uint64_t ms = 300, span;
	struct vblk b;
	uint8_t *buf;
	bool ok = true;

	if (argc > 2 || (argc == 2 && (!parse_u64(argv[1], &ms) || !ms))) {
		report("error vblk-bench: usage: [MS_PER_RUN] [dev=N]");
		return false;
	}
	if (!vblk_open(&b, "vblk-bench", idx, 0))
		return false;
	buf = vpool_alloc(2u << 20, 4096);
	span = b.capacity * 512 < (1ull << 30) ? b.capacity * 512 : (1ull << 30);
	if (!buf || b.ro || span < (4u << 20) || b.slots < 32) {
		report("error vblk-bench: need a writable disk of 4 MiB or more, 32 slots and "
		       "2 MiB of pool (ro=%u capacity=%lu slots=%u)", b.ro, b.capacity, b.slots);
		virtio_reset(b.v);
		return false;
	}
	for (i = 0; ok && i < ARRAY_SIZE(runs); i++) {
		struct bench_state s = { &b, &runs[i], buf, span / runs[i].bs, 0,
					 0x9e3779b97f4a7c15ull, 0, 0 };

		ok = bench_one(&s, ms);
	}
	virtio_reset(b.v);
	if (!ok)
		report("error vblk-bench: a request failed or timed out");
	else
		report("vblk-bench ok mode=%s", virtio_mode_name(b.v));
	return ok;
}
