/*
 * test_pci.c - the PCI host bridge as a guest's firmware or OS sees it:
 * config space through 0xcf8/0xcfc and ECAM, BAR sizing and moving, decode
 * following the command register, the capability list, and the MSI-X
 * table.  A fake device host (tests/fake_host.h), no VM, no KVM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/device.h"
#include "base/log.h"
#include "devices/pci.h"
#include "base/state.h"
#include "fake_host.h"

struct fake {
	struct pci_dev pci;
	uint8_t regs[4096];
	int moved;
};

static void fake_bar_read(struct pci_dev *p, int bar, uint64_t off, void *data, int size)
{
	struct fake *f = p->priv;

	memcpy(data, &f->regs[(bar * 1024 + off) % sizeof(f->regs)], (size_t)size);
}

static void fake_bar_write(struct pci_dev *p, int bar, uint64_t off, const void *data, int size)
{
	struct fake *f = p->priv;

	memcpy(&f->regs[(bar * 1024 + off) % sizeof(f->regs)], data, (size_t)size);
}

static void fake_bar_moved(struct pci_dev *p, int bar, uint64_t addr, bool mapped)
{
	((struct fake *)p->priv)->moved++;
}

static const struct pci_dev_ops fake_ops = {
	.bar_read = fake_bar_read, .bar_write = fake_bar_write, .bar_moved = fake_bar_moved,
};

static struct fake_host *host;
static struct fake *fk, *fk64;

static void fake_destroy(struct device *d)
{
	(void)d;   /* the test frees the fake */
}

static const struct device_ops fake_dev_ops = { .type = "fake", .destroy = fake_destroy };

static int setup(void **state)
{
	struct error e;
	struct device *d;

	log_threshold = LOG_ERROR;
	host = fake_host_new(0);
	assert_int_equal(fake_host_pci(host, &e), 0);
	fk = calloc(1, sizeof(*fk));
	d = device_new(&host->host, &fake_dev_ops, "fake0", fk);
	device_host_attach(&host->host, d);
	pci_dev_init(&fk->pci, d, &fake_ops, 0x1af4, 0x1000, 0x020000, 0x1af4, 1);
	fk->pci.priv = fk;
	pci_dev_set_bar(&fk->pci, 0, PCI_BAR_IO, 64);
	pci_dev_set_bar(&fk->pci, 1, PCI_BAR_MEM32, 8192);
	assert_int_equal(pci_msix_init(&fk->pci, 1, 0x1000, 0x1800, 3), 0);
	assert_int_equal(pci_add_device(&host->host, &fk->pci, &e), 0);
	return 0;
}

static int teardown(void **state)
{
	fake_host_free(host);   /* the PCI bus, then every device */
	free(fk);
	free(fk64);
	return 0;
}

static uint32_t cfg_read(int slot, int off, int size)
{
	uint32_t addr = 0x80000000u | ((uint32_t)slot << 11) | (off & 0xfc), v = 0;

	bus_io(&host->iobus, 0xcf8, &addr, 4, true);
	bus_io(&host->iobus, (uint16_t)(0xcfc + (off & 3)), &v, size, false);
	return size == 4 ? v : v & ((1u << (8 * size)) - 1);
}

static void cfg_write(int slot, int off, uint32_t v, int size)
{
	uint32_t addr = 0x80000000u | ((uint32_t)slot << 11) | (off & 0xfc);

	bus_io(&host->iobus, 0xcf8, &addr, 4, true);
	bus_io(&host->iobus, (uint16_t)(0xcfc + (off & 3)), &v, size, true);
}

static void test_enumeration(void **state)
{
	int slot = fk->pci.slot;
	uint32_t v = 0;

	assert_int_equal(cfg_read(0, 0, 4), 0x00081b36);        /* host bridge */
	assert_int_equal(cfg_read(0, 0x0a, 2), 0x0600);
	assert_int_equal(cfg_read(slot, 0, 4), 0x10001af4);
	assert_int_equal(cfg_read(slot, 0x0b, 1), 0x02);
	assert_int_equal(cfg_read(slot + 1, 0, 4), 0xffffffff);   /* empty slot */
	/* function 1, and bus 1, do not exist */
	{
		uint32_t addr = 0x80000000u | ((uint32_t)slot << 11) | (1 << 8);
		bus_io(&host->iobus, 0xcf8, &addr, 4, true);
		bus_io(&host->iobus, 0xcfc, &v, 4, false);
		assert_int_equal(v, 0xffffffff);
	}
	/* ECAM gives the same bytes */
	bus_mmio(&host->mmiobus, PCI_ECAM_BASE + ((uint64_t)slot << 15), &v, 4, false);
	assert_int_equal(v, 0x10001af4);
	/* interrupt pin A, line 16 + slot % 4 */
	assert_int_equal(cfg_read(slot, 0x3d, 1), 1);
	assert_int_equal(cfg_read(slot, 0x3c, 1), 16 + slot % 4);
	/* read-only registers stay read-only */
	cfg_write(slot, 0, 0x12345678, 4);
	assert_int_equal(cfg_read(slot, 0, 4), 0x10001af4);
}

static void test_bar_sizing_and_moving(void **state)
{
	int slot = fk->pci.slot;
	uint32_t io = cfg_read(slot, 0x10, 4), mem = cfg_read(slot, 0x14, 4), v = 0xabcd1234;
	uint64_t newmem = PCI_MMIO32_BASE + 0x100000;

	assert_int_equal(io & 1, 1);
	assert_true((io & ~3u) >= PCI_IO_BASE);
	assert_true(mem >= PCI_MMIO32_BASE && !(mem & 0xf));
	/* sizing: all ones reads back the size mask */
	cfg_write(slot, 0x14, 0xffffffff, 4);
	assert_int_equal(cfg_read(slot, 0x14, 4), ~(8192u - 1));
	cfg_write(slot, 0x10, 0xffffffff, 4);
	assert_int_equal(cfg_read(slot, 0x10, 4), (~(64u - 1) & 0xffffffff) | 1);
	cfg_write(slot, 0x10, io, 4);
	/* move the memory BAR; accesses follow it */
	cfg_write(slot, 0x14, (uint32_t)newmem, 4);
	bus_mmio(&host->mmiobus, newmem + 8, &v, 4, true);
	assert_int_equal(*(uint32_t *)&fk->regs[1024 + 8], 0xabcd1234);
	v = 0;
	bus_mmio(&host->mmiobus, mem + 8, &v, 4, false);
	assert_int_equal(v, 0xffffffff);                        /* old place is empty */
	assert_true(fk->moved >= 2);
	/* memory decode off: the BAR disappears */
	cfg_write(slot, 0x04, 0x1, 2);
	bus_mmio(&host->mmiobus, newmem + 8, &v, 4, false);
	assert_int_equal(v, 0xffffffff);
	cfg_write(slot, 0x04, 0x7, 2);
	bus_mmio(&host->mmiobus, newmem + 8, &v, 4, false);
	assert_int_equal(v, 0xabcd1234);
	/* I/O BAR works through the I/O window */
	v = 0x5a;
	bus_io(&host->iobus, (uint16_t)((io & ~3u) + 4), &v, 1, true);
	assert_int_equal(fk->regs[4], 0x5a);
}

static void test_capabilities_and_msix(void **state)
{
	int slot = fk->pci.slot;
	uint8_t cap = (uint8_t)cfg_read(slot, 0x34, 1);
	uint32_t mem = cfg_read(slot, 0x14, 4) & ~15u, v;

	assert_true(cfg_read(slot, 0x06, 2) & 0x10);             /* cap list */
	assert_int_equal(cfg_read(slot, cap, 1), PCI_CAP_ID_MSIX);
	assert_int_equal(cfg_read(slot, cap + 2, 2) & 0x7ff, 2);  /* 3 vectors */
	assert_int_equal(cfg_read(slot, cap + 4, 4), 0x1000 | 1);
	assert_int_equal(cfg_read(slot, cap + 8, 4), 0x1800 | 1);
	/* vectors start masked; the table round-trips */
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 2 + 12, &v, 4, false);
	assert_int_equal(v, 1);
	v = 0xfee00000;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 2, &v, 4, true);
	v = 0x4041;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 2 + 8, &v, 4, true);
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 2 + 8, &v, 4, false);
	assert_int_equal(v, 0x4041);
	/* a masked vector that fires becomes pending in the PBA */
	assert_false(pci_msix_enabled(&fk->pci));
	cfg_write(slot, cap + 3, 0x80, 1);                        /* enable */
	assert_true(pci_msix_enabled(&fk->pci));
	pthread_mutex_lock(&fk->pci.dev->lock);
	pci_msix_notify(&fk->pci, 2);
	pthread_mutex_unlock(&fk->pci.dev->lock);
	v = 0;
	bus_mmio(&host->mmiobus, mem + 0x1800, &v, 4, false);
	assert_int_equal(v, 1u << 2);
	/* an access straddling two entries is ignored, not trusted */
	v = 0xdeadbeef;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 1 + 14, &v, 4, true);
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 1 + 12, &v, 4, false);
	assert_int_equal(v, 1);                                   /* still masked */
	/* unmasking delivers the pending vector and clears the PBA bit */
	v = 0;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 16 * 2 + 12, &v, 4, true);
	bus_mmio(&host->mmiobus, mem + 0x1800, &v, 4, false);
	assert_int_equal(v, 0);
}

/* The MSI-X table lives in a BAR, not in configuration space: a snapshot
 * carries it (pci_msix_save), and a restore puts back each vector's
 * address, data, mask and pending bit.  Without it a restored Linux, which
 * enables MSI-X, found every vector masked at address 0 and no virtio
 * interrupt arrived.  A count of vectors that differs is refused. */
static int irqfds_made;

static int count_irqfd(const struct device_host *h, int fd, unsigned gsi)
{
	irqfds_made++;
	return 0;
}

static void test_msix_save_restore(void **state)
{
	uint32_t mem = cfg_read(fk->pci.slot, 0x14, 4) & ~15u, v;
	struct state_writer w, w2;
	struct state_reader r;

	v = 0xfee01000;
	bus_mmio(&host->mmiobus, mem + 0x1000, &v, 4, true);
	v = 0x4022;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 8, &v, 4, true);
	v = 0;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 12, &v, 4, true);   /* unmask 0 */
	fk->pci.msix->v[1].pending = true;
	state_writer_init(&w);
	pci_msix_save(&fk->pci, &w);
	/* the guest's table changes after the snapshot */
	v = 0x12345678;
	bus_mmio(&host->mmiobus, mem + 0x1000, &v, 4, true);
	bus_mmio(&host->mmiobus, mem + 0x1000 + 8, &v, 4, true);
	v = 1;
	bus_mmio(&host->mmiobus, mem + 0x1000 + 12, &v, 4, true);
	fk->pci.msix->v[1].pending = false;
	/* as in a VM just built to restore into: no vector routed yet */
	for (int i = 0; i < fk->pci.msix->nvec; i++) {
		if (fk->pci.msix->v[i].irqfd >= 0)
			close(fk->pci.msix->v[i].irqfd);
		fk->pci.msix->v[i].irqfd = -1;
	}
	host->host.irqfd = count_irqfd;
	irqfds_made = 0;
	state_reader_init(&r, w.data, w.len);
	assert_int_equal(pci_msix_restore(&fk->pci, &r), 0);
	/* the programmed vector is routed by the restore itself, not later by
	 * whichever thread (a disk's I/O thread) raises its first interrupt */
	{
		int programmed = 0;

		for (int i = 0; i < fk->pci.msix->nvec; i++) {
			programmed += fk->pci.msix->v[i].addr != 0;
			assert_true((fk->pci.msix->v[i].irqfd >= 0) == (fk->pci.msix->v[i].addr != 0));
		}
		assert_int_equal(irqfds_made, programmed);
	}
	assert_true(fk->pci.msix->v[0].irqfd >= 0);
	host->host.irqfd = NULL;
	bus_mmio(&host->mmiobus, mem + 0x1000, &v, 4, false);
	assert_int_equal(v, 0xfee01000);
	bus_mmio(&host->mmiobus, mem + 0x1000 + 8, &v, 4, false);
	assert_int_equal(v, 0x4022);
	bus_mmio(&host->mmiobus, mem + 0x1000 + 12, &v, 4, false);
	assert_int_equal(v, 0);                                   /* unmasked again */
	assert_true(fk->pci.msix->v[1].pending);
	/* cut short, or another count of vectors: refused */
	state_reader_init(&r, w.data, w.len - 1);
	assert_int_equal(pci_msix_restore(&fk->pci, &r), -1);
	state_writer_init(&w2);
	state_put_u16(&w2, 4);
	state_reader_init(&r, w2.data, w2.len);
	assert_int_equal(pci_msix_restore(&fk->pci, &r), -1);
	state_writer_free(&w2);
	state_writer_free(&w);
}

/* A 64-bit prefetchable BAR: two registers, allocated above RAM, sizing
 * of both halves, and decode at a 64-bit address. */
static void test_bar64(void **state)
{
	struct fake *f = fk64 = calloc(1, sizeof(*f));
	struct error e;
	struct device *d = device_new(&host->host, &fake_dev_ops, "fake64", f);
	uint32_t lo, hi, v = 0x600df00d;
	uint64_t addr, base = pci_mmio64_base(0);

	device_host_attach(&host->host, d);
	pci_dev_init(&f->pci, d, &fake_ops, 0x1af4, 0x1001, 0x010000, 0x1af4, 2);
	f->pci.priv = f;
	pci_dev_set_bar(&f->pci, 2, PCI_BAR_MEM64, 1 << 20);
	assert_int_equal(pci_add_device(&host->host, &f->pci, &e), 0);
	lo = cfg_read(f->pci.slot, 0x18, 4);
	hi = cfg_read(f->pci.slot, 0x1c, 4);
	assert_int_equal(lo & 0xf, 0xc);                          /* 64-bit, prefetchable */
	addr = (lo & ~15u) | ((uint64_t)hi << 32);
	assert_true(addr >= base && addr < base + PCI_MMIO64_SIZE);
	bus_mmio(&host->mmiobus, addr + 16, &v, 4, true);
	assert_int_equal(*(uint32_t *)&f->regs[2 * 1024 + 16], 0x600df00d);
	cfg_write(f->pci.slot, 0x18, 0xffffffff, 4);
	cfg_write(f->pci.slot, 0x1c, 0xffffffff, 4);
	assert_int_equal(cfg_read(f->pci.slot, 0x18, 4), (~((1u << 20) - 1)) | 0xc);
	assert_int_equal(cfg_read(f->pci.slot, 0x1c, 4), 0xffffffff);
	cfg_write(f->pci.slot, 0x18, lo, 4);
	cfg_write(f->pci.slot, 0x1c, hi, 4);
	v = 0;
	bus_mmio(&host->mmiobus, addr + 16, &v, 4, false);
	assert_int_equal(v, 0x600df00d);
	/* the guest may put it in the 32-bit window instead */
	cfg_write(f->pci.slot, 0x18, (uint32_t)(PCI_MMIO32_BASE + 0x800000), 4);
	cfg_write(f->pci.slot, 0x1c, 0, 4);
	v = 0;
	bus_mmio(&host->mmiobus, PCI_MMIO32_BASE + 0x800000 + 16, &v, 4, false);
	assert_int_equal(v, 0x600df00d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enumeration),
		cmocka_unit_test(test_bar_sizing_and_moving),
		cmocka_unit_test(test_capabilities_and_msix),
		cmocka_unit_test(test_bar64),
		cmocka_unit_test(test_msix_save_restore),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
