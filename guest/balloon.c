/*
 * balloon.c - the test guest's virtio-balloon driver, which gives private
 * frames first (issue 13 item 4; abi/pv_shared.h, docs/memory.md "Shared
 * pages kept from guest eviction").
 *
 * `vballoon ADDR LEN [hint=0|1] [wait=SECONDS] [dev=N]`: the host sets a
 * target (config num_pages, from `{"cmd": "balloon", "target_bytes": N}`;
 * wait=S: the driver polls for one every 10 ms for up to S seconds); the
 * guest inflates to it with frames of its free pool [ADDR, ADDR+LEN),
 * which is this guest's allocator: frames are handed out lowest address
 * first.  With the hint (hint=1, the default) the order is private frames
 * first, then shared ones: before inflating, the guest asks the pv-shared
 * port (0xfc) which frames of the pool still share its template's page,
 * and gives those last, because giving them frees nothing on the host.
 * hint=0 keeps the plain order.  Either way the answer (taken once, before
 * inflating) says how many of the frames given were private, and the
 * report line says so:
 *   vballoon ok pages=N private=P shared=S hint=H clone=C
 * then the driver writes `actual` (modern mode) and leaves the device
 * running: the frames stay in the balloon until the next virtio command.
 * The guest must not touch the pool afterwards (the host has released it).
 *
 * `pvshared ADDR LEN`: just the question:
 *   pvshared ok frames=N shared=S clone=C
 *
 * Limits: the pool is at most VB_POOL_MAX (1 GiB: a 32 KiB bitmap from the
 * DMA pool); the target at most the pool.  Boot CPU only, ring 3 (port I/O
 * is allowed there, as for pv-protect).
 */
#include "balloon.h"
#include "abi/pv_shared.h"
#include "bootinfo.h"
#include "lapic.h"
#include "lib.h"
#include "report.h"
#include "virtio_cmd.h"

#define VIRTIO_ID_BALLOON 5
#define VB_POOL_MAX       (1ull << 30)
#define VB_BATCH          256		/* PFNs per inflate buffer */

static inline void vb_outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");   /* the VMM writes the request */
}

static inline uint32_t vb_inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Ask which of `n` frames from `addr` are shared into bits (one per frame);
 * returns the shared count, or -1 (reported) when the port refuses or is
 * absent.  *clone: the VMM says this VM is a clone. */
static int64_t pv_shared_ask(const char *cmd, uint64_t addr, uint64_t n, uint8_t *bits,
			     bool *clone)
{
	static struct pv_shared_req req __attribute__((aligned(8)));
	uint64_t total = 0;

	*clone = false;
	if (vb_inl(PV_SHARED_PORT) != PV_SHARED_MAGIC) {
		report("error %s: no pv-shared device at port 0x%x", cmd, PV_SHARED_PORT);
		return -1;
	}
	for (uint64_t i = 0; i < n; i += PV_SHARED_MAX_PAGES) {
		uint64_t k = n - i < PV_SHARED_MAX_PAGES ? n - i : PV_SHARED_MAX_PAGES;

		memset(&req, 0, sizeof(req));
		req.op = PV_SHARED_OP_QUERY;
		req.status = -1;
		req.gpa = addr + i * 4096;
		req.npages = k;
		req.bitmap = (uint64_t)(bits + i / 8);
		vb_outl(PV_SHARED_PORT, (uint32_t)(uint64_t)&req);
		if (req.status != PV_SHARED_OK) {
			report("error %s: pv-shared refused 0x%lx+%lu frames: status %d", cmd, req.gpa,
			       k, req.status);
			return -1;
		}
		total += req.shared;
		*clone = (req.flags & PV_SHARED_F_CLONE) != 0;
	}
	return (int64_t)total;
}

static bool bit_of(const uint8_t *bits, uint64_t i)
{
	return (bits[i / 8] >> (i % 8)) & 1;
}

/* ADDR LEN: a page-aligned usable pool of at most VB_POOL_MAX. */
static bool pool_args(const char *cmd, char **argv, uint64_t *addr, uint64_t *len)
{
	const char *why;

	if (!parse_u64(argv[1], addr) || !parse_u64(argv[2], len) || !*len ||
	    (*addr | *len) & 0xfff || *len > VB_POOL_MAX) {
		report("error %s: usage: ADDR LEN (4 KiB aligned, at most 1 GiB)", cmd);
		return false;
	}
	if (!mem_range_usable(*addr, *len, &why)) {
		report("error %s: range 0x%lx+0x%lx: %s", cmd, *addr, *len, why);
		return false;
	}
	return true;
}

bool pvshared_cmd(int argc, char **argv)
{
	uint64_t addr, len;
	uint8_t *bits;
	int64_t shared;
	bool clone;

	if (argc != 3) {
		report("error pvshared: usage: ADDR LEN");
		return false;
	}
	if (!pool_args("pvshared", argv, &addr, &len))
		return false;
	vpool_reset();
	bits = vpool_alloc(len / 4096 / 8 + 1, 8);
	shared = bits ? pv_shared_ask("pvshared", addr, len / 4096, bits, &clone) : -1;
	if (shared < 0)
		return false;
	report("pvshared ok frames=%lu shared=%ld clone=%u", len / 4096, shared, clone);
	return true;
}

/* Give frames to the inflate queue, VB_BATCH at a time. */
struct vb_sender {
	struct virtq *q;
	uint32_t *pfns;
	unsigned n;
	bool ok;
};

static void vb_flush(struct vb_sender *s)
{
	struct virtq_buf b = { (uint64_t)s->pfns, s->n * 4, false };
	uint16_t head;
	uint32_t len;

	if (!s->n || !s->ok)
		return;
	if (virtq_add(s->q, &b, 1, false) < 0) {
		s->ok = false;
		return;
	}
	virtq_kick(s->q);
	s->ok = virtq_wait(s->q, &head, &len, 2000000);
	s->n = 0;
}

static void vb_give(struct vb_sender *s, uint64_t gpa)
{
	s->pfns[s->n++] = (uint32_t)(gpa / 4096);
	if (s->n == VB_BATCH)
		vb_flush(s);
}

bool vballoon_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	uint64_t addr, len, n, target, hint = 1, wait_s = 0, given = 0, priv = 0;
	struct virtio_dev *v;
	struct virtq q;
	struct vb_sender s;
	uint8_t *bits;
	int64_t shared;
	bool clone;

	while (argc > 3 && ((str_starts(argv[argc - 1], "hint=") &&
			     parse_u64(argv[argc - 1] + 5, &hint) && hint <= 1) ||
			    (str_starts(argv[argc - 1], "wait=") &&
			     parse_u64(argv[argc - 1] + 5, &wait_s) && wait_s <= 600)))
		argc--;
	if (argc != 3) {
		report("error vballoon: usage: ADDR LEN [hint=0|1] [wait=SECONDS] [dev=N]");
		return false;
	}
	if (!pool_args("vballoon", argv, &addr, &len))
		return false;
	n = len / 4096;
	if (!(v = virtio_open("vballoon", VIRTIO_ID_BALLOON, idx, 0)))
		return false;
	target = virtio_cfg32(v, 0);
	for (uint64_t t = 0; !target && t < wait_s * 100; t++) {   /* wait for the host to ask */
		lapic_sleep_us(10000);
		target = virtio_cfg32(v, 0);
	}
	if (!target || target > n) {
		report("error vballoon: the host's target is %lu pages; the pool has %lu", target, n);
		virtio_reset(v);
		return false;
	}
	bits = vpool_alloc(n / 8 + 1, 8);
	s.pfns = vpool_alloc(VB_BATCH * 4, 64);
	s.n = 0;
	s.ok = true;
	s.q = &q;
	if (!bits || !s.pfns || (shared = pv_shared_ask("vballoon", addr, n, bits, &clone)) < 0) {
		virtio_reset(v);
		return false;
	}
	if (!virtio_open_queue("vballoon", &q, v, 0, 64))
		return false;
	virtio_driver_ok(v);
	/* pass 0: private frames (with the hint); pass 1: the rest in order */
	for (int pass = hint ? 0 : 1; pass < 2 && given < target; pass++)
		for (uint64_t i = 0; i < n && given < target; i++) {
			bool sh = bit_of(bits, i);

			if (pass == 0 ? sh : (hint && !sh))
				continue;       /* pass 0 takes private only; pass 1 skips those taken */
			vb_give(&s, addr + i * 4096);
			given++;
			priv += !sh;
		}
	vb_flush(&s);
	if (!s.ok) {
		report("error vballoon: the device did not take the frames (%lu given, status 0x%x)",
		       given, virtio_status(v));
		virtio_reset(v);
		return false;
	}
	(void)virtio_isr(v);
	if (v->modern && v->devcfg.addr && !v->devcfg.io)
		*(volatile uint32_t *)(v->devcfg.addr + 4) = (uint32_t)given;   /* actual */
	else if (v->modern && v->devcfg.addr)
		vb_outl((uint16_t)(v->devcfg.addr + 4), (uint32_t)given);
	report("vballoon ok pages=%lu private=%lu shared=%lu hint=%lu clone=%u", given, priv,
	       given - priv, hint, clone);
	return true;
}
