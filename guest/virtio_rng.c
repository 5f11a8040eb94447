/*
 * virtio_rng.c - `vrng [BYTES]`: read entropy from a virtio-rng device.
 *
 * One queue (requestq, 0) of device-writable buffers; the device fills as
 * much as it likes and says how much in the used element's length.  The
 * command asks in 64-byte requests, several in flight, until BYTES have
 * come back (at most 64 KiB), then checks that they are not all one value
 * and that at least 1/4 of the 256 byte values appear (for 1 KiB or
 * more), which any working source passes and a zero-filled buffer fails.
 */
#include "virtio_cmd.h"
#include "lib.h"
#include "report.h"

#define VRNG_CHUNK    64
#define VRNG_MAX      (64u << 10)
#define VRNG_INFLIGHT 8

static bool vrng_collect(struct virtq *q, uint8_t *buf, uint32_t want, uint32_t *got)
{
	uint32_t posted = 0, len;
	uint16_t head;
	unsigned inflight = 0;

	*got = 0;
	while (*got < want) {
		while (inflight < VRNG_INFLIGHT && posted < want) {
			struct virtq_buf b = { (uint64_t)(buf + posted), VRNG_CHUNK, true };

			if (virtq_add(q, &b, 1, false) < 0)
				break;
			posted += VRNG_CHUNK;
			inflight++;
		}
		virtq_kick(q);
		if (!virtq_wait(q, &head, &len, 1000000))
			return false;
		inflight--;
		*got += len > VRNG_CHUNK ? VRNG_CHUNK : len;
	}
	return true;
}

static unsigned distinct_values(const uint8_t *b, uint32_t n)
{
	uint8_t seen[256];
	unsigned i, d = 0;

	memset(seen, 0, sizeof(seen));
	for (i = 0; i < n; i++)
		if (!seen[b[i]]++)
			d++;
	return d;
}

bool vrng_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv), distinct;
	uint64_t want = 1024;
	struct virtio_dev *v;
	struct virtq q;
	uint8_t *buf;
	uint32_t got;

	if (argc > 2 || (argc == 2 && (!parse_u64(argv[1], &want) || !want || want > VRNG_MAX))) {
		report("error vrng: usage: [BYTES (1..64K)] [dev=N]");
		return false;
	}
	want = ALIGN_UP(want, VRNG_CHUNK);
	if (!(v = virtio_open("vrng", VIRTIO_ID_RNG, idx, VIRTIO_BIT(VIRTIO_F_EVENT_IDX))))
		return false;
	buf = vpool_alloc(want, 64);
	if (!virtio_open_queue("vrng", &q, v, 0, 64))
		return false;
	virtio_driver_ok(v);
	if (!vrng_collect(&q, buf, (uint32_t)want, &got)) {
		report("error vrng: no answer after %u bytes (status 0x%x)", got, virtio_status(v));
		virtio_reset(v);
		return false;
	}
	(void)virtio_isr(v);
	virtio_reset(v);
	distinct = distinct_values(buf, got);
	if (distinct < 2 || (got >= 1024 && distinct < 64)) {
		report("error vrng: %u bytes with only %u distinct values", got, distinct);
		return false;
	}
	report("vrng ok bytes=%u mode=%s distinct=%u event_idx=%u kicks=%u ring=%s", got,
	       virtio_mode_name(v), distinct, q.event_idx, q.kicks, virtq_ring_name(&q));
	return true;
}
