/*
 * pci.c - the PCI host bridge (see pci.h for the model).
 *
 * Where things are decoded:
 *
 *   ports 0xcf8-0xcff   "pci-cfg" device: CONFIG_ADDRESS latch, CONFIG_DATA,
 *                       and the PIIX reset control register at 0xcf9
 *   MMIO ECAM           "pci-ecam": bus 0, 4 KiB of config space per slot
 *   ports 0xc000-0xffff "pci-io" window: I/O BARs
 *   MMIO 0xc0000000-    "pci-mmio" window: 32-bit memory BARs; MSI-X tables
 *                       and PBAs are handled here, the rest goes to the
 *                       device's bar_read/bar_write under its lock
 *   MMIO 0xf0000000-    "pci-mmio-fw": the same, below the IOAPIC, for BARs
 *                       a BIOS moves there (firmware boot)
 *
 * Config writes go through a per-byte writable mask, which also gives BAR
 * sizing for free: writing all ones to a BAR reads back ~(size - 1) plus
 * the read-only type bits, as on hardware.
 *
 * Invariants: slots[] and BAR decode change only under `lock` held for
 * writing; window lookups take it for reading.  MSI-X entries are changed
 * and read under the owning device's lock (table accesses are BAR accesses;
 * devices raise vectors while holding their lock).  The KVM routing table is
 * rebuilt whole under `routes_lock` whenever an MSI-X entry changes.
 */
#include "devices/pci.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/device.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/state.h"
#include <linux/kvm.h>
#include <pthread.h>

#define PCI_MAX_ROUTES (PCI_MSI_GSI_BASE + PCI_MAX_SLOTS * PCI_MSIX_MAX)

struct pci_host {
	const struct device_host *host;
	struct device *win[6];           /* cfg, ecam, io, mmio, mmio-fw, mmio64 windows */
	int nwin;
	pthread_rwlock_t lock;
	struct pci_dev *slots[PCI_MAX_SLOTS];
	struct pci_dev bridge;
	uint32_t cf8;                   /* CONFIG_ADDRESS latch */
	uint64_t next_io, next_mmio;    /* BAR allocation cursors */
	uint64_t mmio64_base, next_mmio64;
	pthread_mutex_t routes_lock;
	int next_gsi;
	struct pci_msix_entry *gsi_owner[PCI_MAX_ROUTES];
};

/* ---- config space ---- */

static void cfg_put16(struct pci_dev *p, uint32_t off, uint16_t v)
{
	memcpy(&p->cfg[off], &v, 2);
}

static void cfg_put32(struct pci_dev *p, uint32_t off, uint32_t v)
{
	memcpy(&p->cfg[off], &v, 4);
}

static uint16_t cfg_get16(const struct pci_dev *p, uint32_t off)
{
	uint16_t v;

	memcpy(&v, &p->cfg[off], 2);
	return v;
}

static uint32_t cfg_get32(const struct pci_dev *p, uint32_t off)
{
	uint32_t v;

	memcpy(&v, &p->cfg[off], 4);
	return v;
}

void pci_dev_init(struct pci_dev *p, struct device *dev, const struct pci_dev_ops *ops,
		  uint16_t vendor, uint16_t device, uint32_t class_code,
		  uint16_t subsys_vendor, uint16_t subsys_id)
{
	memset(p, 0, sizeof(*p));
	p->dev = dev;
	p->ops = ops;
	p->slot = -1;
	cfg_put16(p, PCI_VENDOR_ID, vendor);
	cfg_put16(p, PCI_DEVICE_ID, device);
	cfg_put32(p, PCI_REVISION_ID, class_code << 8);
	cfg_put16(p, PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
	cfg_put16(p, PCI_SUBSYSTEM_ID, subsys_id);
	{
		/* command: I/O, memory, bus master, INTx disable are writable */
		uint16_t cmd_mask = PCI_COMMAND_IO | PCI_COMMAND_MEM | PCI_COMMAND_MASTER |
				    PCI_COMMAND_INTX_DISABLE;

		memcpy(&p->wmask[PCI_COMMAND], &cmd_mask, 2);
	}
	p->wmask[PCI_INTERRUPT_LINE] = 0xff;
	p->next_cap = 0x40;
}

/* The read-only type bits of a BAR register. */
static uint32_t pci_bar_type_bits(enum pci_bar_type type)
{
	return type == PCI_BAR_IO ? 0x1 : type == PCI_BAR_MEM64 ? 0x4 | 0x8 : 0x0;
}

void pci_dev_set_bar(struct pci_dev *p, int bar, enum pci_bar_type type, uint64_t size)
{
	uint64_t mask;

	if (type != PCI_BAR_IO && size < 4096)
		size = 4096;
	if (type == PCI_BAR_MEM64 && bar == PCI_NUM_BARS - 1)
		return;   /* needs two registers */
	p->bar[bar].type = type;
	p->bar[bar].size = size;
	mask = ~(size - 1) & (type == PCI_BAR_IO ? ~3ull : ~15ull);
	memcpy(&p->wmask[PCI_BAR0 + 4 * bar], &mask, 4);
	cfg_put32(p, PCI_BAR0 + 4 * bar, pci_bar_type_bits(type));
	if (type == PCI_BAR_MEM64) {
		uint32_t hi = (uint32_t)(mask >> 32);

		memcpy(&p->wmask[PCI_BAR0 + 4 * (bar + 1)], &hi, 4);
		cfg_put32(p, PCI_BAR0 + 4 * (bar + 1), 0);
	}
}

uint8_t pci_dev_add_cap(struct pci_dev *p, uint8_t id, uint8_t len)
{
	uint8_t off = p->next_cap, *link = &p->cfg[PCI_CAPABILITY_LIST];

	if (off + len > 0x100 || len < 2)
		return 0;
	while (*link)
		link = &p->cfg[*link + 1];
	*link = off;
	p->cfg[off] = id;
	p->cfg[off + 1] = 0;
	p->next_cap = (uint8_t)((off + len + 3) & ~3);
	cfg_put16(p, PCI_STATUS, cfg_get16(p, PCI_STATUS) | PCI_STATUS_CAP_LIST);
	return off;
}

/* Is BAR `i` decoded now, given the command register and its address? */
static bool pci_bar_decoded(const struct pci_dev *p, int i, uint64_t *addr)
{
	const struct pci_bar *b = &p->bar[i];
	uint16_t cmd = cfg_get16(p, PCI_COMMAND);
	uint32_t raw = cfg_get32(p, PCI_BAR0 + 4 * i);

	if (b->type == PCI_BAR_IO) {
		*addr = raw & ~3u;
		return (cmd & PCI_COMMAND_IO) && *addr >= PCI_IO_BASE &&
		       *addr + b->size <= PCI_IO_BASE + PCI_IO_SIZE;
	}
	if (b->type == PCI_BAR_MEM32 || b->type == PCI_BAR_MEM64) {
		const struct pci_host *h = p->host ? p->host->pci : NULL;

		*addr = raw & ~15u;
		if (b->type == PCI_BAR_MEM64)
			*addr |= (uint64_t)cfg_get32(p, PCI_BAR0 + 4 * (i + 1)) << 32;
		if (!(cmd & PCI_COMMAND_MEM))
			return false;
		if (*addr >= PCI_MMIO32_BASE && *addr + b->size <= PCI_MMIO32_BASE + PCI_MMIO32_SIZE)
			return true;
		if (*addr >= PCI_MMIO32_FW_BASE &&
		    *addr + b->size <= PCI_MMIO32_FW_BASE + PCI_MMIO32_FW_SIZE)
			return true;
		return b->type == PCI_BAR_MEM64 && h && *addr >= h->mmio64_base &&
		       *addr + b->size <= h->mmio64_base + PCI_MMIO64_SIZE;
	}
	return false;
}

/* Recompute BAR decoding after a config write; tell the device. */
static void pci_update_bars(struct pci_dev *p)
{
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &p->bar[i];
		uint64_t addr = 0;
		bool mapped = b->type != PCI_BAR_NONE && pci_bar_decoded(p, i, &addr);

		if (mapped == b->mapped && (!mapped || addr == b->addr))
			continue;
		if (b->mapped && p->ops && p->ops->bar_moved)
			p->ops->bar_moved(p, i, b->addr, false);
		b->mapped = mapped;
		b->addr = addr;
		if (mapped && p->ops && p->ops->bar_moved)
			p->ops->bar_moved(p, i, addr, true);
	}
}

static void pci_msix_config_changed(struct pci_dev *p);

static struct pci_dev *pci_slot_dev(struct pci_host *h, int slot)
{
	return slot >= 0 && slot < PCI_MAX_SLOTS ? h->slots[slot] : NULL;
}

void pci_config_read(struct pci_host *h, int slot, uint32_t off, void *data, int size)
{
	struct pci_dev *p;

	memset(data, 0xff, (size_t)size);
	if (!h || off >= PCI_CFG_SIZE || off + (uint32_t)size > PCI_CFG_SIZE)
		return;
	pthread_rwlock_rdlock(&h->lock);
	p = pci_slot_dev(h, slot);
	if (p) {
		memcpy(data, &p->cfg[off], (size_t)size);
		if (p->ops && p->ops->config_read) {
			pthread_mutex_lock(&p->dev->lock);
			p->ops->config_read(p, off, data, size);
			pthread_mutex_unlock(&p->dev->lock);
		}
	}
	pthread_rwlock_unlock(&h->lock);
}

void pci_config_write(struct pci_host *h, int slot, uint32_t off, const void *data, int size)
{
	const uint8_t *src = data;
	struct pci_dev *p;

	if (!h || off >= PCI_CFG_SIZE || off + (uint32_t)size > PCI_CFG_SIZE)
		return;
	pthread_rwlock_wrlock(&h->lock);
	p = pci_slot_dev(h, slot);
	if (p) {
		if (p->dev)
			pthread_mutex_lock(&p->dev->lock);
		for (int i = 0; i < size; i++)
			p->cfg[off + i] = (uint8_t)((p->cfg[off + i] & ~p->wmask[off + i]) |
						    (src[i] & p->wmask[off + i]));
		if (p->ops && p->ops->config_write)
			p->ops->config_write(p, off, data, size);
		if (p->msix && off <= p->msix->cap + 3u && off + (uint32_t)size > p->msix->cap + 2u)
			pci_msix_config_changed(p);
		pci_update_bars(p);
		if (p->dev)
			pthread_mutex_unlock(&p->dev->lock);
	}
	pthread_rwlock_unlock(&h->lock);
}

/* ---- 0xcf8/0xcfc ---- */

static void pci_cfgio_read(struct device *d, uint16_t port, void *data, int size)
{
	struct pci_host *h = d->priv;
	uint32_t a = h->cf8;

	if (port == 0xcf8 && size == 4) {
		memcpy(data, &h->cf8, 4);
		return;
	}
	memset(data, 0xff, (size_t)size);
	if (port < 0xcfc || !(a & 0x80000000u) || ((a >> 16) & 0xff) || ((a >> 8) & 7))
		return;
	pci_config_read(h, (a >> 11) & 0x1f, (a & 0xfc) + (port - 0xcfc), data, size);
}

static void pci_cfgio_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct pci_host *h = d->priv;
	uint32_t a = h->cf8;

	if (port == 0xcf8 && size == 4) {
		memcpy(&h->cf8, data, 4);
		return;
	}
	if (port == 0xcf9 && size == 1) {
		if (*(const uint8_t *)data & 0x04)
			device_host_stop(h->host, EXIT_POWEROFF, "guest requested a reset through port 0xcf9; stopping");
		return;
	}
	if (port < 0xcfc || !(a & 0x80000000u) || ((a >> 16) & 0xff) || ((a >> 8) & 7))
		return;
	pci_config_write(h, (a >> 11) & 0x1f, (a & 0xfc) + (port - 0xcfc), data, size);
}

static const struct device_ops pci_cfgio_ops = {
	.type = "pci-cfg",
	.state_version = 1,
	.io_read = pci_cfgio_read,
	.io_write = pci_cfgio_write,
	.destroy = NULL,
};

/* ---- ECAM ---- */

static void pci_ecam_read(struct device *d, uint64_t addr, void *data, int size)
{
	struct pci_host *h = d->priv;
	uint64_t off = addr - PCI_ECAM_BASE;

	if (size > 4) {
		memset(data, 0xff, (size_t)size);
		return;
	}
	pci_config_read(h, (int)(off >> 15) & 0x1f, (uint32_t)(off & 0xfff), data, size);
	if ((off >> 12) & 7)   /* functions 1-7 do not exist */
		memset(data, 0xff, (size_t)size);
}

static void pci_ecam_write(struct device *d, uint64_t addr, const void *data, int size)
{
	struct pci_host *h = d->priv;
	uint64_t off = addr - PCI_ECAM_BASE;

	if (size > 4 || ((off >> 12) & 7))
		return;
	pci_config_write(h, (int)(off >> 15) & 0x1f, (uint32_t)(off & 0xfff), data, size);
}

static const struct device_ops pci_ecam_ops = {
	.type = "pci-ecam",
	.state_version = 1,
	.mmio_read = pci_ecam_read,
	.mmio_write = pci_ecam_write,
};

/* ---- MSI-X ---- */

bool pci_msix_enabled(const struct pci_dev *p)
{
	return p->msix && (p->cfg[p->msix->cap + 3] & 0x80);
}

static bool pci_msix_masked(const struct pci_dev *p, int vec)
{
	return (p->cfg[p->msix->cap + 3] & 0x40) || (p->msix->v[vec].ctrl & 1);
}

/* Rebuild KVM's routing table: the default ISA/IOAPIC routes plus one MSI
 * route per MSI-X vector ever set up. */
static void pci_routes_commit(struct pci_host *h)
{
	size_t n = 0, cap = 40 + (size_t)h->next_gsi;
	struct kvm_irq_routing *r = calloc(1, sizeof(*r) + cap * sizeof(r->entries[0]));

	if (!r)
		return;
	for (unsigned gsi = 0; gsi < 24; gsi++) {
		if (gsi < 16) {
			r->entries[n++] = (struct kvm_irq_routing_entry){ .gsi = gsi,
				.type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
					       .pin = gsi % 8 } };
		}
		r->entries[n++] = (struct kvm_irq_routing_entry){ .gsi = gsi,
			.type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi } };
	}
	for (int gsi = PCI_MSI_GSI_BASE; gsi < h->next_gsi; gsi++) {
		struct pci_msix_entry *v = h->gsi_owner[gsi];

		if (!v)
			continue;   /* its device was unplugged (pci_remove_device) */
		r->entries[n++] = (struct kvm_irq_routing_entry){ .gsi = (uint32_t)gsi,
			.type = KVM_IRQ_ROUTING_MSI,
			.u.msi = { .address_lo = (uint32_t)v->addr, .address_hi = (uint32_t)(v->addr >> 32),
				   .data = v->data } };
	}
	r->nr = (uint32_t)n;
	if (h->host->set_irq_routing && h->host->set_irq_routing(h->host, r) < 0)
		log_warn("KVM_SET_GSI_ROUTING: %s", strerror(errno));
	free(r);
}

int pci_msix_init(struct pci_dev *p, int bar, uint32_t table_off, uint32_t pba_off, int nvec)
{
	struct pci_msix *m;
	uint8_t cap;

	if (nvec < 1 || nvec > PCI_MSIX_MAX)
		return -1;
	cap = pci_dev_add_cap(p, PCI_CAP_ID_MSIX, 12);
	m = cap ? calloc(1, sizeof(*m)) : NULL;
	if (!m)
		return -1;
	m->bar = bar;
	m->table_off = table_off;
	m->pba_off = pba_off;
	m->nvec = nvec;
	m->cap = cap;
	for (int i = 0; i < nvec; i++) {
		m->v[i].ctrl = 1;           /* masked at reset */
		m->v[i].gsi = -1;
		m->v[i].irqfd = -1;
	}
	cfg_put16(p, cap + 2, (uint16_t)(nvec - 1));
	cfg_put32(p, cap + 4, table_off | (uint32_t)bar);
	cfg_put32(p, cap + 8, pba_off | (uint32_t)bar);
	p->wmask[cap + 3] = 0xc0;       /* enable, function mask */
	p->msix = m;
	return 0;
}

/* Give vector `vec` a GSI and an irqfd the first time it is used. */
static int pci_msix_route(struct pci_dev *p, int vec)
{
	struct pci_host *h = p->host->pci;
	struct pci_msix_entry *v = &p->msix->v[vec];

	pthread_mutex_lock(&h->routes_lock);
	if (v->gsi < 0 && h->next_gsi < PCI_MAX_ROUTES) {
		v->gsi = h->next_gsi++;
		h->gsi_owner[v->gsi] = v;
	}
	if (v->gsi >= 0)
		pci_routes_commit(h);
	pthread_mutex_unlock(&h->routes_lock);
	if (v->gsi < 0 || v->irqfd >= 0)
		return v->gsi < 0 ? -1 : 0;
	v->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->irqfd >= 0 && !p->host->irqfd)
		errno = ENODEV;
	if (v->irqfd < 0 || !p->host->irqfd || p->host->irqfd(p->host, v->irqfd, (unsigned)v->gsi) < 0) {
		log_warn("%s: MSI-X vector %d: KVM_IRQFD: %s", p->dev->name, vec, strerror(errno));
		if (v->irqfd >= 0)
			close(v->irqfd);
		v->irqfd = -1;
		return -1;
	}
	return 0;
}

static void pci_msix_fire(struct pci_dev *p, int vec)
{
	struct pci_msix_entry *v = &p->msix->v[vec];
	uint64_t one = 1;

	if (v->irqfd < 0 && pci_msix_route(p, vec) < 0)
		return;
	if (write(v->irqfd, &one, sizeof(one)) < 0)
		log_debug("%s: MSI-X vector %d: irqfd write: %s", p->dev->name, vec, strerror(errno));
}

void pci_msix_notify(struct pci_dev *p, int vec)
{
	if (!p->msix || vec < 0 || vec >= p->msix->nvec)
		return;
	if (pci_msix_masked(p, vec)) {
		p->msix->v[vec].pending = true;
		return;
	}
	pci_msix_fire(p, vec);
}

int pci_msix_irqfd(struct pci_dev *p, int vec)
{
	if (!p->msix || vec < 0 || vec >= p->msix->nvec)
		return -1;
	if (p->msix->v[vec].irqfd < 0)
		pci_msix_route(p, vec);
	return p->msix->v[vec].irqfd;
}

void pci_msix_save(const struct pci_dev *p, struct state_writer *w)
{
	int n = p->msix ? p->msix->nvec : 0;

	state_put_u16(w, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		const struct pci_msix_entry *v = &p->msix->v[i];

		state_put_u64(w, v->addr);
		state_put_u32(w, v->data);
		state_put_u32(w, v->ctrl);
		state_put_u8(w, v->pending);
	}
}

int pci_msix_restore(struct pci_dev *p, struct state_reader *r)
{
	int n = p->msix ? p->msix->nvec : 0;
	bool routed = false;

	if (state_get_u16(r) != n || r->error) {
		r->error = true;
		return -1;
	}
	for (int i = 0; i < n; i++) {
		struct pci_msix_entry *v = &p->msix->v[i];

		v->addr = state_get_u64(r);
		v->data = state_get_u32(r);
		v->ctrl = state_get_u32(r) & 1;
		v->pending = state_get_u8(r) != 0;
		routed |= v->gsi >= 0;
	}
	if (r->error)
		return -1;
	/* Route every vector the guest had programmed now, on the restoring
	 * thread: routed lazily, the first interrupt would do it on whichever
	 * thread raised it, and a disk's I/O thread may not make KVM's routing
	 * ioctls (its seccomp filter allows KVM_IRQ_LINE only). */
	for (int i = 0; i < n && p->host->irqfd; i++)
		if (p->msix->v[i].addr && p->msix->v[i].irqfd < 0 && pci_msix_route(p, i) == 0)
			routed = false;        /* committed with this vector's address */
	if (routed) {   /* routes made before the restore carry the old address */
		struct pci_host *h = p->host->pci;

		pthread_mutex_lock(&h->routes_lock);
		pci_routes_commit(h);
		pthread_mutex_unlock(&h->routes_lock);
	}
	return 0;
}

static void pci_msix_table_read(struct pci_dev *p, uint64_t off, void *data, int size)
{
	struct pci_msix *m = p->msix;
	int vec = (int)(off / 16);
	uint32_t words[4];

	memset(data, 0, (size_t)size);
	if (vec >= m->nvec || (off % 16) + (uint64_t)size > 16)
		return;
	words[0] = (uint32_t)m->v[vec].addr;
	words[1] = (uint32_t)(m->v[vec].addr >> 32);
	words[2] = m->v[vec].data;
	words[3] = m->v[vec].ctrl;
	memcpy(data, (uint8_t *)words + off % 16, (size_t)size);
}

static void pci_msix_table_write(struct pci_dev *p, uint64_t off, const void *data, int size)
{
	struct pci_msix *m = p->msix;
	int vec = (int)(off / 16);
	struct pci_msix_entry *v;
	uint32_t words[4];
	bool was_masked;

	if (vec >= m->nvec || (off % 16) + (uint64_t)size > 16)
		return;
	v = &m->v[vec];
	was_masked = pci_msix_masked(p, vec);
	words[0] = (uint32_t)v->addr;
	words[1] = (uint32_t)(v->addr >> 32);
	words[2] = v->data;
	words[3] = v->ctrl;
	memcpy((uint8_t *)words + off % 16, data, (size_t)size);
	v->addr = words[0] | ((uint64_t)words[1] << 32);
	v->data = words[2];
	v->ctrl = words[3] & 1;
	if (!pci_msix_masked(p, vec) && (off % 16 < 12 || was_masked))
		pci_msix_route(p, vec);     /* address/data may have changed */
	if (was_masked && !pci_msix_masked(p, vec) && v->pending) {
		v->pending = false;
		pci_msix_fire(p, vec);
	}
}

static void pci_msix_pba_read(struct pci_dev *p, uint64_t off, void *data, int size)
{
	uint8_t bits[PCI_MSIX_MAX / 8] = { 0 };

	for (int i = 0; i < p->msix->nvec; i++)
		if (p->msix->v[i].pending)
			bits[i / 8] |= (uint8_t)(1u << (i % 8));
	memset(data, 0, (size_t)size);
	if (off < sizeof(bits))
		memcpy(data, bits + off, off + (uint64_t)size <= sizeof(bits) ? (size_t)size
						      : sizeof(bits) - off);
}

/* Function mask or enable changed: deliver what was pending. */
static void pci_msix_config_changed(struct pci_dev *p)
{
	if (!pci_msix_enabled(p))
		return;
	for (int i = 0; i < p->msix->nvec; i++)
		if (p->msix->v[i].pending && !pci_msix_masked(p, i)) {
			p->msix->v[i].pending = false;
			pci_msix_fire(p, i);
		}
}

/* ---- INTx ---- */

void pci_intx_set(struct pci_dev *p, int level)
{
	uint16_t st = cfg_get16(p, PCI_STATUS);

	cfg_put16(p, PCI_STATUS, level ? st | PCI_STATUS_INTERRUPT : st & ~PCI_STATUS_INTERRUPT);
	if (cfg_get16(p, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE)
		level = 0;
	if (level == p->intx_level)
		return;
	p->intx_level = level;
	device_host_irq_line(p->host, p->cfg[PCI_INTERRUPT_LINE], level);
}

/* ---- BAR windows ---- */

/* Find the decoded BAR of `type` holding `addr`; returns the device with
 * its bar index and offset, or NULL.  Called with h->lock held shared. */
static struct pci_dev *pci_find_bar(struct pci_host *h, enum pci_bar_type type, uint64_t addr,
				    int *bar, uint64_t *off)
{
	for (int s = 0; s < PCI_MAX_SLOTS; s++) {
		struct pci_dev *p = h->slots[s];

		for (int i = 0; p && i < PCI_NUM_BARS; i++) {
			struct pci_bar *b = &p->bar[i];

			bool same = b->type == type ||
				    (type != PCI_BAR_IO && b->type != PCI_BAR_IO && b->type != PCI_BAR_NONE);

			if (b->mapped && same && addr >= b->addr && addr - b->addr < b->size) {
				*bar = i;
				*off = addr - b->addr;
				return p;
			}
		}
	}
	return NULL;
}

static void pci_bar_access(struct pci_host *h, enum pci_bar_type type, uint64_t addr,
			   void *data, int size, bool write)
{
	struct pci_dev *p;
	struct pci_msix *m;
	uint64_t off;
	int bar;

	pthread_rwlock_rdlock(&h->lock);
	p = pci_find_bar(h, type, addr, &bar, &off);
	if (!p) {
		if (!write)
			memset(data, 0xff, (size_t)size);
		pthread_rwlock_unlock(&h->lock);
		return;
	}
	pthread_mutex_lock(&p->dev->lock);
	m = p->msix;
	if (m && bar == m->bar && off >= m->table_off && off < m->table_off + 16u * (unsigned)m->nvec) {
		if (write)
			pci_msix_table_write(p, off - m->table_off, data, size);
		else
			pci_msix_table_read(p, off - m->table_off, data, size);
	} else if (m && bar == m->bar && off >= m->pba_off && off < m->pba_off + 8) {
		if (!write)
			pci_msix_pba_read(p, off - m->pba_off, data, size);
	} else if (p->dev->broken) {
		if (!write)
			memset(data, 0xff, (size_t)size);
	} else if (write) {
		if (p->ops->bar_write)
			p->ops->bar_write(p, bar, off, data, size);
	} else {
		memset(data, 0, (size_t)size);
		if (p->ops->bar_read)
			p->ops->bar_read(p, bar, off, data, size);
	}
	pthread_mutex_unlock(&p->dev->lock);
	pthread_rwlock_unlock(&h->lock);
}

static void pci_iowin_read(struct device *d, uint16_t port, void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_IO, port, data, size, false);
}

static void pci_iowin_write(struct device *d, uint16_t port, const void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_IO, port, (void *)data, size, true);
}

static void pci_mmiowin_read(struct device *d, uint64_t addr, void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_MEM32, addr, data, size, false);
}

static void pci_mmiowin_write(struct device *d, uint64_t addr, const void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_MEM32, addr, (void *)data, size, true);
}

static void pci_mmio64win_read(struct device *d, uint64_t addr, void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_MEM64, addr, data, size, false);
}

static void pci_mmio64win_write(struct device *d, uint64_t addr, const void *data, int size)
{
	pci_bar_access(d->priv, PCI_BAR_MEM64, addr, (void *)data, size, true);
}

static const struct device_ops pci_window64_ops = {
	.type = "pci-window",
	.state_version = 1,
	.mmio_read = pci_mmio64win_read,
	.mmio_write = pci_mmio64win_write,
};

static const struct device_ops pci_window_ops = {
	.type = "pci-window",
	.state_version = 1,
	.io_read = pci_iowin_read,
	.io_write = pci_iowin_write,
	.mmio_read = pci_mmiowin_read,
	.mmio_write = pci_mmiowin_write,
};

/* ---- set-up ---- */

static void pci_noop_destroy(struct device *d)
{
	(void)d;   /* priv is the host, freed by pci_destroy */
}

static int pci_attach(struct pci_host *h, const struct device_ops *ops, const char *name,
		      enum device_space space, uint64_t base, uint64_t len, struct error *e)
{
	struct device_ops *o = malloc(sizeof(*o));
	struct device *d;

	if (!o)
		return error_set(e, EXIT_HOST, "out of memory");
	*o = *ops;
	o->destroy = pci_noop_destroy;
	d = device_new(h->host, o, name, h);
	if (!d) {
		free(o);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(h->host, d))     /* it freed d */
		return error_set(e, EXIT_RESOURCE, "%s: too many devices", name);
	h->win[h->nwin++] = d;
	if (device_host_map(h->host, space, base, len, d))
		return error_set(e, EXIT_HOST, "%s: cannot claim 0x%llx-0x%llx", name,
				 (unsigned long long)base, (unsigned long long)(base + len - 1));
	return 0;
}

int pci_init(const struct device_host *host, struct pci_host **out, struct error *e)
{
	struct pci_host *h = calloc(1, sizeof(*h));

	*out = h;
	if (!h)
		return error_set(e, EXIT_HOST, "out of memory");
	h->host = host;
	pthread_rwlock_init(&h->lock, NULL);
	pthread_mutex_init(&h->routes_lock, NULL);
	h->next_io = PCI_IO_BASE;
	h->next_mmio = PCI_MMIO32_BASE;
	h->mmio64_base = h->next_mmio64 = pci_mmio64_base(host->ram_size);
	h->next_gsi = PCI_MSI_GSI_BASE;
	/* host bridge: Red Hat's "QEMU PCIe host bridge" ids, class 0600 */
	pci_dev_init(&h->bridge, NULL, NULL, 0x1b36, 0x0008, 0x060000, 0x1af4, 0x1100);
	h->bridge.slot = 0;
	h->bridge.host = host;
	h->slots[0] = &h->bridge;
	if (pci_attach(h, &pci_cfgio_ops, "pci-cfg", DEVICE_SPACE_IO, 0xcf8, 8, e) ||
	    pci_attach(h, &pci_ecam_ops, "pci-ecam", DEVICE_SPACE_MMIO, PCI_ECAM_BASE, PCI_ECAM_SIZE, e) ||
	    pci_attach(h, &pci_window_ops, "pci-io", DEVICE_SPACE_IO, PCI_IO_BASE, PCI_IO_SIZE, e) ||
	    pci_attach(h, &pci_window_ops, "pci-mmio", DEVICE_SPACE_MMIO, PCI_MMIO32_BASE,
		       PCI_MMIO32_SIZE, e) ||
	    pci_attach(h, &pci_window_ops, "pci-mmio-fw", DEVICE_SPACE_MMIO, PCI_MMIO32_FW_BASE,
		       PCI_MMIO32_FW_SIZE, e) ||
	    pci_attach(h, &pci_window64_ops, "pci-mmio64", DEVICE_SPACE_MMIO, h->mmio64_base,
		       PCI_MMIO64_SIZE, e))
		return -1;
	return 0;
}

void pci_destroy(struct pci_host *h)
{
	if (!h)
		return;
	for (int s = 1; s < PCI_MAX_SLOTS; s++) {
		struct pci_dev *p = h->slots[s];

		if (!p || !p->msix)
			continue;
		/* a device thread may still complete work and raise a vector */
		pthread_mutex_lock(&p->dev->lock);
		for (int i = 0; i < p->msix->nvec; i++)
			if (p->msix->v[i].irqfd >= 0)
				close(p->msix->v[i].irqfd);
		free(p->msix);
		p->msix = NULL;
		pthread_mutex_unlock(&p->dev->lock);
	}
	/* The window devices stay with the host, which frees them later: give
	 * them back static ops without a destroy and no pointer to us. */
	for (int i = 0; i < h->nwin; i++)
		if (h->win[i] && h->win[i]->priv == h) {
			free((void *)h->win[i]->ops);
			h->win[i]->ops = &pci_window_ops;   /* static, no destroy */
			h->win[i]->priv = NULL;
		}
	pthread_rwlock_destroy(&h->lock);
	pthread_mutex_destroy(&h->routes_lock);
	free(h);
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Give each declared BAR an address, as firmware would, and enable decode. */
static int pci_assign_bars(struct pci_host *h, struct pci_dev *p, struct error *e)
{
	uint16_t cmd = 0;

	for (int i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &p->bar[i];
		uint64_t *cur, end, addr;

		if (b->type == PCI_BAR_NONE)
			continue;
		if (b->type == PCI_BAR_IO) {
			cur = &h->next_io;
			end = PCI_IO_BASE + PCI_IO_SIZE;
		} else if (b->type == PCI_BAR_MEM32) {
			cur = &h->next_mmio;
			end = PCI_MMIO32_BASE + PCI_MMIO32_SIZE;
		} else {
			cur = &h->next_mmio64;
			end = h->mmio64_base + PCI_MMIO64_SIZE;
		}
		addr = align_up(*cur, b->size);
		if (addr + b->size > end)
			return error_set(e, EXIT_RESOURCE, "%s: no room for BAR%d (%llu bytes) in the PCI window",
					 p->dev->name, i, (unsigned long long)b->size);
		*cur = addr + b->size;
		cfg_put32(p, PCI_BAR0 + 4 * i, (uint32_t)addr | pci_bar_type_bits(b->type));
		if (b->type == PCI_BAR_MEM64)
			cfg_put32(p, PCI_BAR0 + 4 * (i + 1), (uint32_t)(addr >> 32));
		cmd |= b->type == PCI_BAR_IO ? PCI_COMMAND_IO : PCI_COMMAND_MEM;
	}
	cfg_put16(p, PCI_COMMAND, cmd);
	return 0;
}

int pci_add_device(const struct device_host *host, struct pci_dev *p, struct error *e)
{
	struct pci_host *h = host->pci;
	int slot = -1;

	if (!h)
		return error_set(e, EXIT_HOST, "no PCI bus in this VM");
	for (int s = 1; s < PCI_MAX_SLOTS && slot < 0; s++)
		if (!h->slots[s])
			slot = s;
	if (slot < 0)
		return error_set(e, EXIT_RESOURCE, "%s: all %d PCI slots are taken", p->dev->name,
				 PCI_MAX_SLOTS - 1);
	p->host = host;
	p->slot = slot;
	p->cfg[PCI_INTERRUPT_PIN] = 1;   /* INTA# */
	p->cfg[PCI_INTERRUPT_LINE] = (uint8_t)(PCI_INTX_GSI_BASE + slot % 4);
	if (pci_assign_bars(h, p, e))
		return -1;
	pthread_rwlock_wrlock(&h->lock);
	h->slots[slot] = p;
	pci_update_bars(p);
	pthread_rwlock_unlock(&h->lock);
	return 0;
}

int pci_device_slot(struct pci_host *h, const struct device *d)
{
	int slot = -1;

	if (!h || !d)
		return -1;
	pthread_rwlock_rdlock(&h->lock);
	for (int s = 1; s < PCI_MAX_SLOTS && slot < 0; s++)
		if (h->slots[s] && h->slots[s]->dev == d)
			slot = s;
	pthread_rwlock_unlock(&h->lock);
	return slot;
}

struct device *pci_remove_device(struct pci_host *h, int slot)
{
	struct pci_dev *p;
	struct device *d;

	if (!h || slot < 1 || slot >= PCI_MAX_SLOTS)
		return NULL;
	pthread_rwlock_wrlock(&h->lock);
	p = h->slots[slot];
	if (!p) {
		pthread_rwlock_unlock(&h->lock);
		return NULL;
	}
	d = p->dev;
	pthread_mutex_lock(&d->lock);
	for (int i = 0; i < PCI_NUM_BARS; i++)      /* ioeventfds go with the BARs */
		if (p->bar[i].mapped) {
			p->bar[i].mapped = false;
			if (p->ops && p->ops->bar_moved)
				p->ops->bar_moved(p, i, p->bar[i].addr, false);
		}
	if (p->intx_level) {
		p->intx_level = 0;
		device_host_irq_line(p->host, p->cfg[PCI_INTERRUPT_LINE], 0);
	}
	if (p->msix) {
		/* Closing an irqfd's eventfd detaches it from KVM; the routes
		 * lose their owner, and the next commit leaves them out. */
		pthread_mutex_lock(&h->routes_lock);
		for (int i = 0; i < p->msix->nvec; i++) {
			struct pci_msix_entry *v = &p->msix->v[i];

			if (v->irqfd >= 0)
				close(v->irqfd);
			if (v->gsi >= 0)
				h->gsi_owner[v->gsi] = NULL;
		}
		pci_routes_commit(h);
		pthread_mutex_unlock(&h->routes_lock);
		free(p->msix);
		p->msix = NULL;
	}
	h->slots[slot] = NULL;
	p->slot = -1;
	pthread_mutex_unlock(&d->lock);
	pthread_rwlock_unlock(&h->lock);
	return d;
}
