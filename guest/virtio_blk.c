/*
 * virtio_blk.c - `vblk`: a virtio-blk self-test, and `vblk-bench`.
 *
 * vblk [SECTORS] [SEED] [dev=N]   (default 64 sectors, seed 1)
 *
 *   1. Reads the configuration: capacity (512-byte sectors), seg_max,
 *      blk_size, the read-only flag, discard/write-zeroes limits.
 *   2. GET_ID: the serial (up to 20 bytes, NUL-padded).
 *   3. Writes SECTORS sectors from sector 0 in 4 KiB requests, all in
 *      flight at once (as many as the queue holds), each request as
 *      header + two 2 KiB data descriptors + status; every other request
 *      through an indirect table when INDIRECT_DESC was negotiated.
 *      Sector s holds the text "shoal vblk seed=SEED sector=s" padded
 *      with '.' to 511 bytes and a '\n' (easy to rebuild on the host).
 *   4. Reads them back the same way into a zeroed buffer and compares.
 *   5. FLUSH, if offered.
 *   6. WRITE_ZEROES (if offered) over the 8 sectors after the pattern:
 *      written with the pattern first, then zeroed, then read back as
 *      zeros.  DISCARD (if offered) over the next 8 sectors: only its
 *      status is checked (discarded contents are unspecified).
 *   Read-only device: one write must fail with IOERR; nothing else is
 *   written.
 *   Report: "vblk ok mode=M capacity=N serial=S ro=0|1 sectors=N seed=S
 *   indirect=0|1 event_idx=0|1 flush=0|1 write_zeroes=0|1 discard=0|1
 *   kicks=N qsize=N ring=split|packed".
 *
 * vblk-verify [SECTORS] [SEED] [dev=N]
 *
 *   Reads SECTORS sectors from sector 0 and compares each with vblk's
 *   pattern for SEED; writes nothing (a snapshot test checks the disk a
 *   restored VM sees).  Report: "vblk-verify ok sectors=N seed=S", or
 *   "verify bad vblk sector=N" for the first sector that differs.
 *
 * Requests: struct virtio_blk_req header {type u32, reserved u32,
 * sector u64}, then data, then one status byte (0 OK, 1 IOERR,
 * 2 UNSUPP) written by the device.  Discard and write-zeroes carry one
 * segment {sector u64, num_sectors u32, flags u32} as data.
 */
#include "virtio_cmd.h"
#include "virtio_blk.h"
#include "lib.h"
#include "report.h"

#define VBLK_DEFAULT_SECTORS 64
#define VBLK_MAX_SECTORS     2048	/* 1 MiB of pattern */
#define VBLK_REQ_SECTORS     8
#define VBLK_TIMEOUT_US      5000000

static const uint64_t vblk_wanted =
	VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_RO) |
	VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
	VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES) |
	VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_F_EVENT_IDX);

bool vblk_open(struct vblk *b, const char *cmd, unsigned idx, uint16_t qsize)
{
	unsigned i;

	b->v = virtio_open(cmd, VIRTIO_ID_BLK, idx, vblk_wanted);
	if (!b->v)
		return false;
	b->capacity = virtio_cfg64(b->v, 0);
	b->ro = b->v->features & VIRTIO_BIT(VIRTIO_BLK_F_RO);
	if (!virtio_open_queue(cmd, &b->q, b->v, 0, qsize))
		return false;
	b->slots = b->q.size < VBLK_SLOTS ? b->q.size : VBLK_SLOTS;
	b->req = vpool_alloc(sizeof(*b->req) * VBLK_SLOTS, 64);
	if (!b->req) {
		report("error %s: out of DMA pool", cmd);
		return false;
	}
	for (i = 0; i < VBLK_SLOTS; i++)
		b->req[i].status = 0xff;
	virtio_driver_ok(b->v);
	return true;
}

/* Slot whose request has this head, or -1. */
static int slot_of(struct vblk *b, uint16_t head)
{
	unsigned i;

	for (i = 0; i < b->slots; i++)
		if (b->req[i].busy && b->req[i].head == head)
			return (int)i;
	return -1;
}

bool vblk_submit(struct vblk *b, unsigned slot, uint32_t type, uint64_t sector, void *data,
		 uint32_t len, unsigned split, bool indirect)
{
	struct vblk_req *r = &b->req[slot];
	struct virtq_buf bufs[2 + 8];
	unsigned n = 0, i;
	uint32_t part = split ? len / split : len;
	int head;

	r->hdr.type = type;
	r->hdr.reserved = 0;
	r->hdr.sector = sector;
	r->status = 0xff;
	bufs[n++] = (struct virtq_buf){ (uint64_t)&r->hdr, sizeof(r->hdr), false };
	for (i = 0; len && i < (split ? split : 1) && i < 8; i++)
		bufs[n++] = (struct virtq_buf){ (uint64_t)data + i * part, part,
						type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID };
	bufs[n++] = (struct virtq_buf){ (uint64_t)&r->status, 1, true };
	head = virtq_add(&b->q, bufs, n, indirect);
	if (head < 0)
		return false;
	r->head = (uint16_t)head;
	r->busy = true;
	return true;
}

int vblk_reap(struct vblk *b, uint64_t timeout_us, uint32_t *len)
{
	uint16_t head;
	uint32_t l;
	int slot;

	if (!virtq_wait(&b->q, &head, &l, timeout_us))
		return -1;
	slot = slot_of(b, head);
	if (slot >= 0)
		b->req[slot].busy = false;
	if (len)
		*len = l;
	return slot;
}

/* One request, waited for; returns the status byte, or -1 on timeout. */
static int vblk_sync(struct vblk *b, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
	int slot;

	if (!vblk_submit(b, 0, type, sector, data, len, 0, false))
		return -1;
	virtq_kick(&b->q);
	slot = vblk_reap(b, VBLK_TIMEOUT_US, NULL);
	return slot < 0 ? -1 : b->req[slot].status;
}

static void pattern_sector(uint8_t *p, uint64_t seed, uint64_t sector)
{
	size_t n = fmt((char *)p, 512, "shoal vblk seed=%lu sector=%lu", seed, sector);

	memset(p + n, '.', 511 - n);
	p[511] = '\n';
}

/*
 * Every request of [0, sectors) in VBLK_REQ_SECTORS pieces, all queued
 * that fit, reaped as they complete.  Returns false (reported) on a bad
 * status or a timeout.
 */
static bool vblk_rw_all(struct vblk *b, uint32_t type, uint8_t *buf, uint64_t first,
			uint32_t sectors)
{
	uint32_t next = 0, done = 0, reqs = (sectors + VBLK_REQ_SECTORS - 1) / VBLK_REQ_SECTORS;
	unsigned slot = 0, i;
	int s;

	while (done < reqs) {
		for (i = 0; i < b->slots && next < reqs; i++) {
			uint32_t n = sectors - next * VBLK_REQ_SECTORS;

			slot = (slot + 1) % b->slots;
			if (b->req[slot].busy)
				continue;
			n = n > VBLK_REQ_SECTORS ? VBLK_REQ_SECTORS : n;
			if (!vblk_submit(b, slot, type, first + next * VBLK_REQ_SECTORS,
					 buf + (size_t)next * VBLK_REQ_SECTORS * 512, n * 512,
					 n % 2 ? 1 : 2, next % 2))
				break;
			next++;
		}
		virtq_kick(&b->q);
		s = vblk_reap(b, VBLK_TIMEOUT_US, NULL);
		if (s < 0 || b->req[s].status != VIRTIO_BLK_S_OK) {
			report("error vblk: %s request %s (status %d, device status 0x%x)",
			       type == VIRTIO_BLK_T_IN ? "read" : "write",
			       s < 0 ? "timed out" : "failed", s < 0 ? -1 : b->req[s].status,
			       virtio_status(b->v));
			return false;
		}
		done++;
	}
	return true;
}

static bool vblk_get_id(struct vblk *b, char serial[21])
{
	uint8_t *id = vpool_alloc(20, 8);
	unsigned i;

	serial[0] = 0;
	if (!id || vblk_sync(b, VIRTIO_BLK_T_GET_ID, 0, id, 20) != VIRTIO_BLK_S_OK)
		return false;
	for (i = 0; i < 20 && id[i]; i++)
		serial[i] = id[i] > 0x20 && id[i] < 0x7f ? (char)id[i] : '_';
	serial[i] = 0;
	return true;
}

/* Segment payload of discard / write-zeroes. */
static int vblk_range_op(struct vblk *b, uint32_t type, uint64_t sector, uint32_t n)
{
	struct vblk_seg *seg = vpool_alloc(sizeof(*seg), 16);

	if (!seg)
		return -1;
	*seg = (struct vblk_seg){ sector, n, 0 };
	return vblk_sync(b, type, 0, seg, sizeof(*seg));
}

static bool vblk_zeroes_check(struct vblk *b, uint8_t *buf, uint64_t first, uint64_t seed)
{
	unsigned i;
	int st;

	for (i = 0; i < 8; i++)
		pattern_sector(buf + i * 512, seed, first + i);
	if (!vblk_rw_all(b, VIRTIO_BLK_T_OUT, buf, first, 8))
		return false;
	st = vblk_range_op(b, VIRTIO_BLK_T_WRITE_ZEROES, first, 8);
	if (st != VIRTIO_BLK_S_OK) {
		report("error vblk: write-zeroes status %d", st);
		return false;
	}
	memset(buf, 0xa5, 8 * 512);
	if (!vblk_rw_all(b, VIRTIO_BLK_T_IN, buf, first, 8))
		return false;
	for (i = 0; i < 8 * 512; i++)
		if (buf[i]) {
			report("error vblk: byte %u after write-zeroes is 0x%x", i, buf[i]);
			return false;
		}
	return true;
}

static bool vblk_pattern(struct vblk *b, uint32_t sectors, uint64_t seed, uint8_t *wbuf,
			 uint8_t *rbuf)
{
	uint32_t i;

	for (i = 0; i < sectors; i++)
		pattern_sector(wbuf + (size_t)i * 512, seed, i);
	if (!vblk_rw_all(b, VIRTIO_BLK_T_OUT, wbuf, 0, sectors) ||
	    !vblk_rw_all(b, VIRTIO_BLK_T_IN, rbuf, 0, sectors))
		return false;
	for (i = 0; i < sectors * 512; i++)
		if (wbuf[i] != rbuf[i]) {
			report("error vblk: read back differs at byte %u: 0x%x, wrote 0x%x", i,
			       rbuf[i], wbuf[i]);
			return false;
		}
	return true;
}

static bool vblk_ro_check(struct vblk *b, uint8_t *buf)
{
	int st = vblk_sync(b, VIRTIO_BLK_T_OUT, 0, buf, 512);

	if (st == VIRTIO_BLK_S_IOERR || st == VIRTIO_BLK_S_UNSUPP)
		return true;
	report("error vblk: write to a read-only device gave status %d", st);
	return false;
}

static bool vblk_args(int argc, char **argv, uint64_t *sectors, uint64_t *seed)
{
	*sectors = VBLK_DEFAULT_SECTORS;
	*seed = 1;
	if (argc > 3 || (argc > 1 && !parse_u64(argv[1], sectors)) ||
	    (argc > 2 && !parse_u64(argv[2], seed)) || !*sectors || *sectors > VBLK_MAX_SECTORS) {
		report("error vblk: usage: [SECTORS (1..%u)] [SEED] [dev=N]", VBLK_MAX_SECTORS);
		return false;
	}
	return true;
}

static bool vblk_run(struct vblk *b, uint32_t sectors, uint64_t seed, bool *wz, bool *dc)
{
	uint8_t *wbuf = vpool_alloc((size_t)sectors * 512, 4096);
	uint8_t *rbuf = vpool_alloc((size_t)sectors * 512 + 8 * 512, 4096);
	int st;

	if (!wbuf || !rbuf) {
		report("error vblk: out of DMA pool");
		return false;
	}
	if (b->ro)
		return vblk_ro_check(b, wbuf);
	if (b->capacity < sectors + 16) {
		report("error vblk: capacity %lu sectors < %u needed", b->capacity, sectors + 16);
		return false;
	}
	if (!vblk_pattern(b, sectors, seed, wbuf, rbuf))
		return false;
	if ((b->v->features & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH)) &&
	    (st = vblk_sync(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0)) != VIRTIO_BLK_S_OK) {
		report("error vblk: flush status %d", st);
		return false;
	}
	*wz = b->v->features & VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES);
	if (*wz && !vblk_zeroes_check(b, rbuf, sectors, seed))
		return false;
	*dc = b->v->features & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD);
	if (*dc && (st = vblk_range_op(b, VIRTIO_BLK_T_DISCARD, sectors + 8, 8)) != 0) {
		report("error vblk: discard status %d", st);
		return false;
	}
	return true;
}

bool vblk_verify_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	uint64_t sectors, seed;
	uint8_t *buf, want[512];
	bool ok = true;
	struct vblk b;

	if (!vblk_args(argc, argv, &sectors, &seed) || !vblk_open(&b, "vblk-verify", idx, 0))
		return false;
	buf = vpool_alloc((size_t)sectors * 512, 4096);
	if (!buf || b.capacity < sectors) {
		report("error vblk-verify: %s", buf ? "the disk is smaller than that" : "out of DMA pool");
		ok = false;
	} else if (!vblk_rw_all(&b, VIRTIO_BLK_T_IN, buf, 0, (uint32_t)sectors)) {
		ok = false;
	}
	for (uint64_t s = 0; ok && s < sectors; s++) {
		pattern_sector(want, seed, s);
		if (memcmp(buf + s * 512, want, 512)) {
			report("verify bad vblk sector=%lu", s);
			ok = false;
		}
	}
	(void)virtio_isr(b.v);
	virtio_reset(b.v);
	if (ok)
		report("vblk-verify ok sectors=%lu seed=%lu", sectors, seed);
	return ok;
}

bool vblk_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	uint64_t sectors, seed;
	bool wz = false, dc = false, ok;
	char serial[21];
	struct vblk b;

	if (!vblk_args(argc, argv, &sectors, &seed) || !vblk_open(&b, "vblk", idx, 0))
		return false;
	if (!vblk_get_id(&b, serial)) {
		report("error vblk: GET_ID failed");
		virtio_reset(b.v);
		return false;
	}
	ok = vblk_run(&b, (uint32_t)sectors, seed, &wz, &dc);
	(void)virtio_isr(b.v);
	virtio_reset(b.v);
	if (!ok)
		return false;
	report("vblk ok mode=%s capacity=%lu serial=%s ro=%u sectors=%lu seed=%lu indirect=%u "
	       "event_idx=%u flush=%u write_zeroes=%u discard=%u kicks=%u qsize=%u ring=%s",
	       virtio_mode_name(b.v), b.capacity, serial[0] ? serial : "-", b.ro,
	       b.ro ? 0 : sectors, seed, b.q.indirect_ok, b.q.event_idx,
	       !!(b.v->features & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH)), wz, dc, b.q.kicks, b.q.size,
	       virtq_ring_name(&b.q));
	return true;
}
