/*
 * virtio_hostile.c - `vhostile KIND`: hand a virtio-blk device a broken
 * request and see that it refuses it without taking the guest (or other
 * devices) down.  For the device side's tests: a VMM must treat every
 * descriptor as hostile, mark the queue or device broken, and keep going.
 *
 * Kinds (each is one request on queue 0 of the first virtio-blk device):
 *   loop     header -> data -> header ...: a descriptor chain that cycles
 *            (both device-readable, so the order of the chain is legal)
 *   oob      a read whose data buffer lies at 1 TiB, outside guest RAM
 *   len      a read whose data descriptor claims 0xfffff000 bytes
 *   nested   an indirect table holding another INDIRECT descriptor
 *            (needs INDIRECT_DESC; skipped when not offered)
 *   badhead  an available-ring entry naming descriptor queue_size + 5
 *   all      each of the above in turn
 *
 * Each kind: open the device, post the request, notify, wait up to 300 ms
 * for a used element.  Outcome "stopped" (no answer; the expected
 * reaction), or "answered" with the status byte.  The device status is
 * read too: a 1.x device may set NEEDS_RESET (0x40).  Then the device is
 * reset and opened again and must serve a good read ("recovered=1"),
 * and, if there is a virtio-rng device, it must still produce bytes
 * ("others=ok"; "others=none" without one).  The command fails only when
 * recovery or the other device fails, or a wait outlives its timeout in
 * a way the guest cannot leave (it cannot: every wait is bounded).
 * Report: "vhostile KIND outcome=stopped|answered status=S dev_status=0x..
 * recovered=0|1 others=ok|none|fail".
 */
#include "virtio_blk.h"
#include "lib.h"
#include "report.h"

#define HOSTILE_WAIT_US 300000
#define HOSTILE_FAR     (1ull << 40)

enum hkind { H_LOOP, H_OOB, H_LEN, H_NESTED, H_BADHEAD, H_KINDS };
static const char *const hnames[H_KINDS] = { "loop", "oob", "len", "nested", "badhead" };

struct hostile {
	struct vblk b;
	struct vblk_hdr *hdr;
	uint8_t *status, *data;
	struct virtq_desc *table;	/* for nested: outer and inner tables */
};

static void hdesc(struct virtq_desc *d, uint64_t addr, uint32_t len, uint16_t flags,
		  uint16_t next)
{
	*d = (struct virtq_desc){ addr, len, flags, next };
}

/* A read request: header(0) -> data(1) -> status(2), then the damage. */
static uint16_t hostile_build(struct hostile *h, enum hkind k)
{
	struct virtq_desc *d = h->b.q.desc;
	uint64_t data = (uint64_t)h->data;
	uint32_t len = 512;

	*h->hdr = (struct vblk_hdr){ VIRTIO_BLK_T_IN, 0, 0 };
	if (k == H_OOB)
		data = HOSTILE_FAR;
	if (k == H_LEN)
		len = 0xfffff000u;
	hdesc(&d[0], (uint64_t)h->hdr, sizeof(*h->hdr), VIRTQ_DESC_F_NEXT, 1);
	hdesc(&d[1], data, len, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	hdesc(&d[2], (uint64_t)h->status, 1, VIRTQ_DESC_F_WRITE, 0);
	if (k == H_LOOP)	/* device-readable both, so only the cycle is wrong */
		hdesc(&d[1], data, len, VIRTQ_DESC_F_NEXT, 0);
	if (k == H_NESTED) {
		struct virtq_desc *inner = h->table + 4;

		hdesc(&inner[0], (uint64_t)h->hdr, sizeof(*h->hdr), VIRTQ_DESC_F_NEXT, 1);
		hdesc(&inner[1], data, len, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
		hdesc(&inner[2], (uint64_t)h->status, 1, VIRTQ_DESC_F_WRITE, 0);
		hdesc(&h->table[0], (uint64_t)inner, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
		hdesc(&d[0], (uint64_t)h->table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	}
	return k == H_BADHEAD ? (uint16_t)(h->b.q.size + 5) : 0;
}

/* Open blk device 0 with its DMA buffers; false (reported) if impossible. */
static bool hostile_open(struct hostile *h)
{
	if (!vblk_open(&h->b, "vhostile", 0, 0))
		return false;
	h->hdr = vpool_alloc(sizeof(*h->hdr), 16);
	h->status = vpool_alloc(1, 1);
	h->data = vpool_alloc(4096, 4096);
	h->table = vpool_alloc(8 * 16, 16);
	*h->status = 0xff;
	return h->hdr && h->status && h->data && h->table;
}

/* A good 512-byte read from sector 0. */
static bool hostile_recovered(void)
{
	struct hostile h;
	int slot;
	bool ok;

	if (!hostile_open(&h))
		return false;
	ok = vblk_submit(&h.b, 0, VIRTIO_BLK_T_IN, 0, h.data, 512, 1, false);
	virtq_kick(&h.b.q);
	slot = ok ? vblk_reap(&h.b, 1000000, NULL) : -1;
	ok = slot >= 0 && h.b.req[slot].status == VIRTIO_BLK_S_OK;
	virtio_reset(h.b.v);
	return ok;
}

static const char *others_check(void)
{
	char a0[] = "vrng", a1[] = "256";
	char *argv[] = { a0, a1 };

	if (!virtio_find(VIRTIO_ID_RNG, 0))
		return "none";
	return vrng_cmd(2, argv) ? "ok" : "fail";
}

static bool hostile_run(enum hkind k);

static bool hostile_one(enum hkind k)
{
	bool packed = virtq_packed_wanted, ok;

	virtq_packed_wanted = false;	/* the damage is written in split layout */
	ok = hostile_run(k);
	virtq_packed_wanted = packed;
	return ok;
}

static bool hostile_run(enum hkind k)
{
	struct hostile h;
	uint16_t head;
	uint32_t len = 0;
	bool answered, recovered;
	uint8_t dev_status;
	int status;
	const char *others;

	if (!hostile_open(&h))
		return false;
	if (k == H_NESTED && !h.b.q.indirect_ok) {
		virtio_reset(h.b.v);
		report("vhostile %s skipped: INDIRECT_DESC not offered", hnames[k]);
		return true;
	}
	virtq_push_raw(&h.b.q, hostile_build(&h, k));
	virtio_queue_notify(h.b.v, 0);
	answered = virtq_wait(&h.b.q, &head, &len, HOSTILE_WAIT_US);
	dev_status = virtio_status(h.b.v);
	status = answered ? *h.status : -1;	/* the pool is reused below */
	(void)virtio_isr(h.b.v);
	virtio_reset(h.b.v);
	recovered = hostile_recovered();
	others = others_check();
	report("vhostile %s outcome=%s status=%d len=%u dev_status=0x%x mode=%s recovered=%u "
	       "others=%s", hnames[k], answered ? "answered" : "stopped",
	       status, len, dev_status, virtio_mode_name(h.b.v), recovered,
	       others);
	return recovered && !str_eq(others, "fail");
}

bool vhostile_cmd(int argc, char **argv)
{
	bool ok = true;
	int k;

	if (argc == 2 && str_eq(argv[1], "all")) {
		for (k = 0; k < H_KINDS; k++)
			ok &= hostile_one((enum hkind)k);
		return ok;
	}
	for (k = 0; argc == 2 && k < H_KINDS; k++)
		if (str_eq(argv[1], hnames[k]))
			return hostile_one((enum hkind)k);
	report("error vhostile: usage: loop|oob|len|nested|badhead|all");
	return false;
}
