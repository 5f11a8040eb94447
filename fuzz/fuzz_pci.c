/*
 * fuzz_pci.c - a hostile guest against the PCI host bridge and the
 * virtio-pci transport: configuration space through 0xcf8/0xcfc and ECAM,
 * and the registers behind a virtio-pci function's BARs (legacy I/O,
 * modern common configuration, notify, ISR, device configuration, the
 * MSI-X table and PBA).
 *
 * The machine is a fake device host (tests/fake_host.h: no VM, no KVM)
 * with 16 MiB of guest RAM in a memfd (pages made only where touched: a
 * calloc'd RAM costs the sanitizers a 16 MiB memset per host), the PCI host bridge, and three virtio-pci
 * functions of a small echo device defined here (two queues of 8; each
 * request's readable bytes are copied into its writable ones), one per
 * transport mode: transitional, legacy only, modern only.  The fuzzer
 * finds the functions and their BARs as a driver would, through
 * configuration space, so a BAR the input moved is followed.
 *
 * The input is a program, one operation after another until the bytes run
 * out (a missing byte reads as zero):
 *   0, 1  config write / read through 0xcf8 then 0xcfc..0xcff (a slot of
 *         one of the functions, the bridge or an empty one, or a raw 0xcf8
 *         value), 1, 2 or 4 bytes
 *   2, 3  ECAM write / read, 1 to 8 bytes, sometimes at a function > 0
 *   4, 5  BAR write / read: a function, a register block (legacy, MSI-X
 *         table, PBA, common, ISR, device config, notify, anywhere in the
 *         memory BARs), an offset in it, 1 to 8 bytes
 *   6     a driver's bring-up of one function through its registers
 *         (command register, optional MSI-X with vectors, modern or legacy
 *         status, features, queue addresses), so later operations reach
 *         live queues
 *   7     post a chain on one of a function's queues (tests/ring_driver.h)
 *         and kick it through the notify register or the legacy port
 *   8     scribble on guest memory (rings included)
 *   9     any port of the config mechanism (0xcf8..0xcff, 0xcf9's reset)
 *         or of the PCI I/O window
 *
 * Checks, besides crashes and sanitizer reports: the identity registers of
 * every function stay what they were; the state of every device, saved,
 * restores into a second, fresh, identical host, and what that host saves
 * is a fixed point: restored into a third fresh host it saves to the same
 * bytes; and the raw input given to devices_restore as a state image is
 * refused or loaded, never a crash.  (The echo device holds no request in
 * flight, and a restore maps the rings without reading them, so the
 * other hosts need no copy of guest memory.)
 *
 * A fixed point after one round, not the first save itself, because a
 * restore today does not give back everything a save wrote: virtqueue.c
 * drops its EVENT_IDX "last signalled" record (a hint: at most one
 * interrupt more), and virtio-pci takes back only the guest-writable
 * config bits, so a pending INTx's PCI status bit (and the line) is not
 * restored although the ISR is.  Fresh hosts, because a restore keeps the
 * target's own read-only config bits, so restoring into a used host is not
 * a function of the image alone.  (This fuzzer found that a legacy driver
 * could ack features the device did not offer, which restore then refused;
 * virtio_features_write now drops them.)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "devices/device.h"
#include "devices/pci.h"
#include "devices/virtio_pci.h"
#include "../tests/fake_host.h"
#define RING_CHECK(cond) ((void)(cond))     /* the guest may scribble on used rings */
#include "../tests/ring_driver.h"

#define RAM        (16u << 20)        /* the smallest guest RAM */
#define NDEV       3
#define NQ         2
#define QSIZE      8
#define RING_AREA  0x10000ull          /* dev d queue q: + (d * NQ + q) * 0x2000 */
#define BUF_AREA   0x40000ull          /* buffers: BUF_AREA .. BUF_AREA + BUF_SPAN */
#define BUF_SPAN   0x40000u
#define MAX_OPS    4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the echo device ---- */

struct toy {
	uint8_t cfg[16];                   /* bytes 0..7 read-only, 8..15 the driver's */
};

static uint64_t toy_features(struct virtio_device *dev)
{
	return VIRTIO_BIT(0) | VIRTIO_BIT(5);
}

static void toy_config_read(struct virtio_device *dev, uint32_t off, void *data, uint32_t len)
{
	memcpy(data, ((struct toy *)dev->priv)->cfg + off, len);
}

static void toy_config_write(struct virtio_device *dev, uint32_t off, const void *data,
			     uint32_t len)
{
	struct toy *t = dev->priv;

	for (uint32_t i = 0; i < len; i++)
		if (off + i >= 8)
			t->cfg[off + i] = ((const uint8_t *)data)[i];
	virtio_notify_config(dev);
}

static void toy_notify(struct virtio_device *dev, uint16_t q)
{
	struct virtq_elem el;
	uint8_t buf[256];

	for (int i = 0; i < 4 * QSIZE; i++) {
		size_t n;

		if (virtio_queue_pop(dev, &dev->queues[q], &el) != 1)
			return;
		n = virtq_elem_read(&el, 0, buf, sizeof(buf));
		n = virtq_elem_write(&el, 0, buf, n);
		virtio_queue_complete(dev, &dev->queues[q], &el, (uint32_t)n);
	}
}

static void toy_reset(struct virtio_device *dev)
{
	memset(((struct toy *)dev->priv)->cfg + 8, 0, 8);
}

static void toy_save(struct virtio_device *dev, struct state_writer *w)
{
	state_put_bytes(w, ((struct toy *)dev->priv)->cfg + 8, 8);
}

static int toy_restore(struct virtio_device *dev, uint16_t version, struct state_reader *r)
{
	state_get_bytes(r, ((struct toy *)dev->priv)->cfg + 8, 8);
	return r->error ? -1 : 0;
}

static void toy_destroy(struct virtio_device *dev)
{
	free(dev->priv);
}

static const struct virtio_device_ops toy_ops = {
	.device_id = VIRTIO_ID_RNG,
	.name = "virtio-fuzz",
	.num_queues = NQ,
	.queue_max_size = QSIZE,
	.config_size = 16,
	.state_version = 1,
	.features = toy_features,
	.config_read = toy_config_read,
	.config_write = toy_config_write,
	.queue_notify = toy_notify,
	.reset = toy_reset,
	.save = toy_save,
	.restore = toy_restore,
	.destroy = toy_destroy,
};

/* ---- the machine ---- */

static const enum virtio_pci_mode modes[NDEV] = {
	VIRTIO_PCI_TRANSITIONAL, VIRTIO_PCI_LEGACY_ONLY, VIRTIO_PCI_MODERN_ONLY,
};

struct machine {
	struct fake_host *f;
	int slot[NDEV];                     /* each function's slot */
	uint32_t id[NDEV];                  /* its vendor and device id register */
	struct ring_drv ring[NDEV][NQ];     /* mem == NULL until brought up */
};

static struct machine *machine_new(void)
{
	struct machine *m = calloc(1, sizeof(*m));
	struct error e;
	int n = 0;

	if (!m || !(m->f = fake_host_new(RAM)) ||
	    guest_mem_create(&m->f->mem, RAM, &e) || fake_host_pci(m->f, &e))
		abort();
	for (int i = 0; i < NDEV; i++) {
		struct toy *t = calloc(1, sizeof(*t));
		struct device *d;
		char name[16];

		if (!t)
			abort();
		memcpy(t->cfg, "shoalfz", 8);
		snprintf(name, sizeof(name), "virtio-fz%d", i);
		if (virtio_pci_create(&m->f->host, &toy_ops, t, name, modes[i], &d, &e))
			abort();
	}
	for (int s = 1; s < PCI_MAX_SLOTS && n < NDEV; s++) {
		uint32_t v = 0;

		pci_config_read(m->f->host.pci, s, 0, &v, 4);
		if ((v & 0xffff) == 0x1af4) {
			m->slot[n] = s;
			m->id[n++] = v;
		}
	}
	if (n != NDEV)
		abort();
	return m;
}

static void machine_free(struct machine *m)
{
	struct guest_mem mem = m->f->mem;

	fake_host_free(m->f);
	guest_mem_destroy(&mem);
	free(m);
}

static uint32_t cfg_get(struct machine *m, int slot, uint32_t off, int size)
{
	uint32_t v = 0;

	pci_config_read(m->f->host.pci, slot, off, &v, size);
	return v;
}

static void cfg_set(struct machine *m, int slot, uint32_t off, uint32_t v, int size)
{
	pci_config_write(m->f->host.pci, slot, off, &v, size);
}

/* Where BAR `bar` of function `dev` is now, as its register says. */
static uint64_t bar_addr(struct machine *m, int dev, int bar)
{
	uint32_t v = cfg_get(m, m->slot[dev], PCI_BAR0 + 4u * (uint32_t)bar, 4);

	return v & 1 ? v & ~3u : v & ~0xfu;
}

static void bar_access(struct machine *m, int dev, int bar, uint64_t off, void *data, int size,
		       bool write)
{
	uint64_t a = bar_addr(m, dev, bar) + off;

	if (bar == VIRTIO_PCI_BAR_LEGACY)
		bus_io(&m->f->iobus, (uint16_t)a, data, size > 4 ? 4 : size, write);
	else
		bus_mmio(&m->f->mmiobus, a, data, size, write);
}

static void bar_put(struct machine *m, int dev, int bar, uint64_t off, uint64_t v, int size)
{
	bar_access(m, dev, bar, off, &v, size, true);
}

static uint64_t bar_get(struct machine *m, int dev, int bar, uint64_t off, int size)
{
	uint64_t v = 0;

	bar_access(m, dev, bar, off, &v, size, false);
	return v;
}

/* ---- the program ---- */

struct prog {
	const uint8_t *p;
	size_t n, i;
};

static uint32_t next8(struct prog *g)
{
	return g->i < g->n ? g->p[g->i++] : 0;
}

static uint32_t next16(struct prog *g)
{
	return next8(g) | next8(g) << 8;
}

static uint64_t next64(struct prog *g)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)next8(g) << (8 * i);
	return v;
}

/* A slot: mostly one of the functions, else the bridge or any slot. */
static int pick_slot(struct machine *m, uint32_t b)
{
	if (b & 0x80)
		return (int)(b & 0x1f);
	return b % 4 == 3 ? 0 : m->slot[b % 4];
}

static int pick_size(uint32_t b, int max)
{
	int s = 1 << (b & 3);

	return s > max ? max : s;
}

/* Register blocks of a function: BAR, where, how many bytes. */
static const struct { int bar; uint32_t base, span; } blocks[] = {
	{ VIRTIO_PCI_BAR_LEGACY, 0, 0x40 },
	{ VIRTIO_PCI_BAR_MSIX, VIRTIO_PCI_MSIX_TABLE, 0x40 },
	{ VIRTIO_PCI_BAR_MSIX, VIRTIO_PCI_MSIX_PBA, 0x10 },
	{ VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_COMMON_OFF, 0x40 },
	{ VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_ISR_OFF, 4 },
	{ VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_DEVICE_OFF, 0x20 },
	{ VIRTIO_PCI_BAR_MODERN, VIRTIO_PCI_NOTIFY_OFF, 0x10 },
	{ VIRTIO_PCI_BAR_MODERN, 0, VIRTIO_PCI_MODERN_SIZE },
	{ VIRTIO_PCI_BAR_MSIX, 0, 0x1000 },
};

static void op_config_port(struct machine *m, struct prog *g, bool write)
{
	uint32_t b = next8(g), reg = next8(g), o = next8(g), v = (uint32_t)next64(g);
	uint32_t cf8 = 0x80000000u | (uint32_t)pick_slot(m, b) << 11 | (reg & 0xfc);
	int size = pick_size(o >> 2, 4);

	if (b & 0x40)
		cf8 = (uint32_t)next64(g);            /* any value: bus, function, enable */
	bus_io(&m->f->iobus, 0xcf8, &cf8, 4, true);
	bus_io(&m->f->iobus, (uint16_t)(0xcfc + (o & 3)), &v, size, write);
}

static void op_config_ecam(struct machine *m, struct prog *g, bool write)
{
	uint32_t b = next8(g), off = next16(g) & 0xfff, f = next8(g);
	uint64_t v = next64(g), a = PCI_ECAM_BASE + ((uint64_t)pick_slot(m, b) << 15) + off;

	if (f & 0x80)
		a += (uint64_t)(f & 7) << 12;         /* functions 1..7 */
	bus_mmio(&m->f->mmiobus, a, &v, pick_size(f >> 3, 8), write);
}

static void op_bar(struct machine *m, struct prog *g, bool write)
{
	int dev = (int)(next8(g) % NDEV), k = (int)(next8(g) % (sizeof(blocks) / sizeof(blocks[0])));
	uint64_t off = blocks[k].base + next16(g) % blocks[k].span, v = next64(g);
	int size = pick_size(next8(g), 8);

	if (write)
		bar_put(m, dev, blocks[k].bar, off, v, size);
	else
		bar_get(m, dev, blocks[k].bar, off, size);
}

static uint64_t ring_gpa(int dev, int q)
{
	return RING_AREA + 0x2000ull * (uint64_t)(dev * NQ + q);
}

/* MSI-X on, every vector aimed somewhere and unmasked (or not). */
static void msix_on(struct machine *m, int dev, uint32_t flags)
{
	int slot = m->slot[dev];
	uint32_t cap = cfg_get(m, slot, PCI_CAPABILITY_LIST, 1);

	for (int hops = 0; cap && hops < 48; hops++) {
		if (cfg_get(m, slot, cap, 1) == PCI_CAP_ID_MSIX) {
			cfg_set(m, slot, cap + 2, 0x8000, 2);
			break;
		}
		cap = cfg_get(m, slot, cap + 1, 1);
	}
	for (int v = 0; v <= NQ; v++) {
		uint64_t e = VIRTIO_PCI_MSIX_TABLE + 16u * (unsigned)v;

		bar_put(m, dev, VIRTIO_PCI_BAR_MSIX, e, 0xfee00000u, 4);
		bar_put(m, dev, VIRTIO_PCI_BAR_MSIX, e + 8, 0x40u + (unsigned)v, 4);
		bar_put(m, dev, VIRTIO_PCI_BAR_MSIX, e + 12, (flags >> v) & 1, 4);
	}
}

/* A driver's bring-up of function `dev` through its registers. */
static void op_bring_up(struct machine *m, struct prog *g)
{
	int dev = (int)(next8(g) % NDEV), slot = m->slot[dev];
	uint32_t flags = next8(g), fmask = next8(g);
	bool modern = modes[dev] == VIRTIO_PCI_MODERN_ONLY ||
		      (modes[dev] == VIRTIO_PCI_TRANSITIONAL && !(flags & 4));
	bool packed = modern && (flags & 8);
	bool msix = flags & 2;

	cfg_set(m, slot, PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEM | PCI_COMMAND_MASTER |
		(flags & 1 ? PCI_COMMAND_INTX_DISABLE : 0), 2);
	if (msix)
		msix_on(m, dev, next8(g));
	if (modern) {
		int bar = VIRTIO_PCI_BAR_MODERN;
		uint32_t lo, hi;

		bar_put(m, dev, bar, 0x14, 0, 1);                          /* reset */
		bar_put(m, dev, bar, 0x14, VIRTIO_STATUS_ACKNOWLEDGE, 1);
		bar_put(m, dev, bar, 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
		bar_put(m, dev, bar, 0x00, 0, 4);
		lo = (uint32_t)bar_get(m, dev, bar, 0x04, 4);
		bar_put(m, dev, bar, 0x00, 1, 4);
		hi = (uint32_t)bar_get(m, dev, bar, 0x04, 4);
		hi &= packed ? ~0u : ~(uint32_t)(VIRTIO_BIT(VIRTIO_F_RING_PACKED) >> 32);
		bar_put(m, dev, bar, 0x08, 0, 4);
		bar_put(m, dev, bar, 0x0c, lo & (fmask | ~0xffu), 4);
		bar_put(m, dev, bar, 0x08, 1, 4);
		bar_put(m, dev, bar, 0x0c, hi, 4);
		bar_put(m, dev, bar, 0x14, 11, 1);                         /* FEATURES_OK */
		if (msix)
			bar_put(m, dev, bar, 0x10, 0, 2);
		for (int q = 0; q < NQ; q++) {
			uint64_t d = ring_gpa(dev, q);

			bar_put(m, dev, bar, 0x16, (uint64_t)q, 2);
			bar_put(m, dev, bar, 0x18, QSIZE, 2);
			if (msix)
				bar_put(m, dev, bar, 0x1a, (uint64_t)q + 1, 2);
			bar_put(m, dev, bar, 0x20, d, 8);
			bar_put(m, dev, bar, 0x28, d + 0x800, 8);
			bar_put(m, dev, bar, 0x30, d + 0x1000, 8);
			bar_put(m, dev, bar, 0x1c, 1, 2);
			ring_drv_init(&m->ring[dev][q], &m->f->mem, QSIZE, packed, d, d + 0x800,
				      d + 0x1000, RING_RESTART);
		}
		bar_put(m, dev, bar, 0x14, 15, 1);                         /* DRIVER_OK */
	} else {
		int bar = VIRTIO_PCI_BAR_LEGACY;

		bar_put(m, dev, bar, 0x12, 0, 1);
		bar_put(m, dev, bar, 0x12, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
		bar_put(m, dev, bar, 0x04, bar_get(m, dev, bar, 0x00, 4) & (fmask | ~0xffu), 4);
		if (msix)
			bar_put(m, dev, bar, 0x14, 0, 2);
		for (int q = 0; q < NQ; q++) {
			uint64_t d = ring_gpa(dev, q);
			uint16_t size;

			bar_put(m, dev, bar, 0x0e, (uint64_t)q, 2);
			size = (uint16_t)bar_get(m, dev, bar, 0x0c, 2);
			if (msix)
				bar_put(m, dev, bar, 0x16, (uint64_t)q + 1, 2);
			bar_put(m, dev, bar, 0x08, d >> 12, 4);
			if (size && size <= RING_DRV_MAX)
				ring_drv_init(&m->ring[dev][q], &m->f->mem, size, false, d,
					      d + 16ull * size,
					      (d + 16ull * size + 6 + 2ull * size + 4095) & ~4095ull,
					      RING_RESTART);
		}
		bar_put(m, dev, bar, 0x12, 7, 1);
	}
}

/* Post a chain on a queue and kick it. */
static void op_post(struct machine *m, struct prog *g)
{
	int dev = (int)(next8(g) % NDEV), q = (int)(next8(g) % NQ), n = 1 + (int)(next8(g) % 4);
	uint32_t how = next8(g);
	struct ring_drv *r = &m->ring[dev][q];
	struct ring_buf b[4];

	for (int k = 0; k < n; k++) {
		uint32_t len = next16(g) % 600;

		b[k] = (struct ring_buf){ BUF_AREA + next16(g) % (BUF_SPAN - 600), len,
					  (next8(g) & 1) != 0 };
	}
	if (r->mem && !(how & 1))
		ring_add(r, b, n);
	if (how & 2)
		bar_put(m, dev, VIRTIO_PCI_BAR_LEGACY, 0x10, (uint64_t)q, 2);
	else
		bar_put(m, dev, VIRTIO_PCI_BAR_MODERN,
			VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * (uint64_t)q, (uint64_t)q,
			pick_size(how >> 2, 4));
	if (r->mem && (how & 0x20)) {
		uint16_t id;
		uint32_t len;

		for (int i = 0; i < 4 * QSIZE && ring_used(r, &id, &len); i++)
			;
	}
}

static void op_scribble(struct machine *m, struct prog *g)
{
	uint64_t gpa = RING_AREA + next16(g) % (BUF_AREA + BUF_SPAN - RING_AREA);
	uint32_t n = next8(g) % 16;

	for (uint32_t i = 0; i < n; i++) {
		uint8_t v = (uint8_t)next8(g);

		guest_mem_write(&m->f->mem, gpa + i, &v, 1);
	}
}

static void op_port(struct machine *m, struct prog *g)
{
	uint32_t b = next8(g);
	uint16_t port = b & 1 ? (uint16_t)(0xcf8 + next8(g) % 8)
			      : (uint16_t)(PCI_IO_BASE + next16(g) % PCI_IO_SIZE);
	uint32_t v = (uint32_t)next64(g);

	bus_io(&m->f->iobus, port, &v, pick_size(b >> 1, 4), (b & 8) != 0);
}

static void run(struct machine *m, struct prog *g)
{
	for (int ops = 0; ops < MAX_OPS && g->i < g->n; ops++) {
		switch (next8(g) % 10) {
		case 0: op_config_port(m, g, true); break;
		case 1: op_config_port(m, g, false); break;
		case 2: op_config_ecam(m, g, true); break;
		case 3: op_config_ecam(m, g, false); break;
		case 4: op_bar(m, g, true); break;
		case 5: op_bar(m, g, false); break;
		case 6: op_bring_up(m, g); break;
		case 7: op_post(m, g); break;
		case 8: op_scribble(m, g); break;
		case 9: op_port(m, g); break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct machine *a, *b, *c;
	struct prog g = { data, size, 0 };
	struct state_writer w1, w2, w3;
	struct error e;

	log_threshold = LOG_ERROR;            /* quiet: broken devices warn */
	a = machine_new();
	b = machine_new();
	c = machine_new();
	run(a, &g);
	for (int i = 0; i < NDEV; i++)
		if (cfg_get(a, a->slot[i], 0, 4) != a->id[i])
			abort();                  /* identity registers are read-only */
	state_writer_init(&w1);
	state_writer_init(&w2);
	state_writer_init(&w3);
	if (devices_save(a->f->devices, a->f->ndevices, &w1) ||
	    devices_restore(b->f->devices, b->f->ndevices, w1.data, w1.len, &e) ||
	    devices_save(b->f->devices, b->f->ndevices, &w2) ||
	    devices_restore(c->f->devices, c->f->ndevices, w2.data, w2.len, &e) ||
	    devices_save(c->f->devices, c->f->ndevices, &w3)) {
		fprintf(stderr, "fuzz_pci: save/restore round trip: %s\n", e.msg);
		abort();
	}
	if (w2.len != w3.len || memcmp(w2.data, w3.data, w2.len))
		abort();
	devices_restore(b->f->devices, b->f->ndevices, data, size, &e);
	state_writer_free(&w1);
	state_writer_free(&w2);
	state_writer_free(&w3);
	machine_free(a);
	machine_free(b);
	machine_free(c);
	return 0;
}
