/*
 * pci.h - a PCI host bridge: configuration space, BARs, MSI-X and INTx.
 *
 * One bus (bus 0), 32 slots, function 0 only.  Configuration space is
 * reachable both through the legacy ports 0xcf8/0xcfc and through ECAM
 * (memory-mapped, described to the guest by an ACPI MCFG table).  The host
 * bridge sits in slot 0.
 *
 * BARs are assigned by the VMM when a device is added, like firmware would
 * (I/O from PCI_IO_BASE, 32-bit memory from PCI_MMIO32_BASE), and the guest
 * may move them: BAR decoding is done by pci.c itself, behind two window
 * devices that cover the whole I/O and MMIO windows on the VM buses, so the
 * VM's buses stay static while BARs move.  BAR access handlers run under
 * the owning device's lock.
 *
 * MSI-X: the table and PBA are emulated here for every device that calls
 * pci_msix_init().  Each vector gets a KVM GSI route (KVM_SET_GSI_ROUTING)
 * and an irqfd, so raising a vector is one eventfd write, from any thread
 * or from another process (vhost-user back ends get the same fd).
 *
 * INTx: pin A of slot s is wired to IOAPIC pin PCI_INTX_GSI_BASE + s % 4,
 * level-triggered; the interrupt line register says so to the guest.
 *
 * Threads: config space and BAR moves are serialized by the PCI lock;
 * BAR lookups take it shared.
 */
#ifndef SHOAL_DEVICES_PCI_H
#define SHOAL_DEVICES_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

struct device;
struct device_host;
struct pci_host;

#define PCI_MAX_SLOTS      32
#define PCI_CFG_SIZE       4096      /* PCIe extended space, ECAM-reachable */
#define PCI_NUM_BARS       6
#define PCI_ECAM_BASE      0xe0000000ULL   /* bus 0 only: 1 MiB */
#define PCI_ECAM_SIZE      0x00100000ULL
#define PCI_MMIO32_BASE    0xc0000000ULL   /* 32-bit BAR window */
#define PCI_MMIO32_SIZE    0x20000000ULL   /* to 0xdfffffff */
/* A second 32-bit window, up to the IOAPIC: where a BIOS puts BARs (SeaBIOS
 * assigns them top-down from 0xfec00000).  Shoal's own assignment never
 * uses it; a guest may move BARs there. */
#define PCI_MMIO32_FW_BASE 0xf0000000ULL
#define PCI_MMIO32_FW_SIZE 0x0ec00000ULL   /* to 0xfebfffff */
#define PCI_MMIO64_SIZE    (64ULL << 30)   /* 64-bit BAR window, above RAM */
#define PCI_MMIO64_ALIGN   (1ULL << 30)
#define PCI_IO_BASE        0xc000          /* I/O BAR window */
#define PCI_IO_SIZE        0x4000          /* to 0xffff */
#define PCI_INTX_GSI_BASE  16              /* IOAPIC pins 16..19 */
#define PCI_MSIX_MAX       64              /* vectors per device */
#define PCI_MSI_GSI_BASE   24              /* GSIs for MSI routes */

/* Standard config space offsets and bits */
#define PCI_VENDOR_ID      0x00
#define PCI_DEVICE_ID      0x02
#define PCI_COMMAND        0x04
#define  PCI_COMMAND_IO    0x1
#define  PCI_COMMAND_MEM   0x2
#define  PCI_COMMAND_MASTER 0x4
#define  PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS         0x06
#define  PCI_STATUS_CAP_LIST 0x10
#define  PCI_STATUS_INTERRUPT 0x08
#define PCI_REVISION_ID    0x08
#define PCI_CLASS_PROG     0x09
#define PCI_CLASS_DEVICE   0x0a
#define PCI_HEADER_TYPE    0x0e
#define PCI_BAR0           0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID   0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN  0x3d
#define PCI_CAP_ID_VNDR    0x09
#define PCI_CAP_ID_MSIX    0x11

/* MEM64 BARs are 64-bit prefetchable and take two BAR registers (i, i+1). */
enum pci_bar_type { PCI_BAR_NONE = 0, PCI_BAR_IO, PCI_BAR_MEM32, PCI_BAR_MEM64 };

/* Where the 64-bit BAR window starts for a VM with `mem_size` bytes of RAM:
 * the first GiB boundary above the end of RAM (RAM beyond 3 GiB lives above
 * 4 GiB, layout.h).  ACPI describes it and pci.c allocates from it. */
static inline unsigned long long pci_mmio64_base(unsigned long long mem_size)
{
	unsigned long long end = mem_size > 0xc0000000ULL ? 0x100000000ULL + mem_size - 0xc0000000ULL
							  : 0x100000000ULL;

	return (end + PCI_MMIO64_ALIGN - 1) & ~(PCI_MMIO64_ALIGN - 1);
}

struct pci_dev;

struct pci_dev_ops {
	/* Access to BAR `bar` at byte offset `off`, size 1..8. */
	void (*bar_read)(struct pci_dev *p, int bar, uint64_t off, void *data, int size);
	void (*bar_write)(struct pci_dev *p, int bar, uint64_t off, const void *data, int size);
	/* Optional: config space read/write hooks, after the generic handling. */
	void (*config_read)(struct pci_dev *p, uint32_t off, void *data, int size);
	void (*config_write)(struct pci_dev *p, uint32_t off, const void *data, int size);
	/* Optional: a BAR was mapped at `addr` (or unmapped: mapped == false). */
	void (*bar_moved)(struct pci_dev *p, int bar, uint64_t addr, bool mapped);
};

struct pci_bar {
	enum pci_bar_type type;
	uint64_t size;                  /* power of two, >= 16 (io 4) */
	uint64_t addr;                  /* as programmed */
	bool mapped;                    /* decoded now (command bits + addr) */
};

struct pci_msix_entry {
	uint64_t addr;
	uint32_t data;
	uint32_t ctrl;                  /* bit 0: masked */
	int gsi;                        /* KVM route, -1 none */
	int irqfd;                      /* eventfd bound to gsi, -1 none */
	bool pending;                   /* PBA bit: raised while masked */
};

struct pci_msix {
	int bar;                        /* BAR holding table and PBA */
	uint32_t table_off, pba_off;
	int nvec;
	uint8_t cap;                    /* config offset of the capability */
	struct pci_msix_entry v[PCI_MSIX_MAX];
};

struct pci_dev {
	struct device *dev;             /* owner: its lock guards BAR handlers */
	const struct pci_dev_ops *ops;
	void *priv;
	int slot;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];     /* guest-writable bits */
	uint8_t next_cap;                /* where the next capability goes */
	struct pci_bar bar[PCI_NUM_BARS];
	struct pci_msix *msix;          /* NULL without MSI-X */
	int intx_level;
	const struct device_host *host;  /* set by pci_add_device */
};

/* Set up the host bridge, config access paths and BAR windows on `host`
 * (its window devices are attached there).  *out is set at once, also on
 * failure, so that the host can store it in host->pci, which the devices
 * added later find it through, and pass it to pci_destroy. */
int pci_init(const struct device_host *host, struct pci_host **out, struct error *e);
/* Close the MSI-X irqfds and free the bus; before the host frees devices. */
void pci_destroy(struct pci_host *h);

/* Fill identity registers of a new device (zeroes the rest). */
void pci_dev_init(struct pci_dev *p, struct device *dev, const struct pci_dev_ops *ops,
		  uint16_t vendor, uint16_t device, uint32_t class_code,
		  uint16_t subsys_vendor, uint16_t subsys_id);

/* Declare a BAR before pci_add_device assigns it an address. */
void pci_dev_set_bar(struct pci_dev *p, int bar, enum pci_bar_type type, uint64_t size);

/* Append a capability of `len` bytes with id `id`; returns its config
 * offset (the caller fills bytes 2..len-1), 0 when config space is full. */
uint8_t pci_dev_add_cap(struct pci_dev *p, uint8_t id, uint8_t len);

/* Add MSI-X with `nvec` vectors, table and PBA in `bar` at the offsets. */
int pci_msix_init(struct pci_dev *p, int bar, uint32_t table_off, uint32_t pba_off,
		  int nvec);

/* Plug `p` into the next free slot, assign BAR addresses and INTx. */
int pci_add_device(const struct device_host *host, struct pci_dev *p, struct error *e);

/* The slot `d` sits in (1..PCI_MAX_SLOTS-1), or -1 when it is on no slot. */
int pci_device_slot(struct pci_host *h, const struct device *d);

/* Unplug slot `slot` (a hot-unplug the guest acknowledged): its BARs stop
 * decoding (bar_moved(..., false) drops the device's ioeventfds), its INTx
 * line drops, its MSI-X irqfds close and their routes are left out of
 * KVM's table from then on (a GSI is never given out twice).  The device
 * itself is not freed: the caller owns it and frees it (device_free) once
 * nothing else refers to it.  Returns the device, or NULL for an empty or
 * invalid slot.  Not for the host bridge (slot 0). */
struct device *pci_remove_device(struct pci_host *h, int slot);

/* Interrupts: MSI-X vector (when enabled and unmasked, else pending), or
 * the INTx line.  pci_msix_enabled says which a device should use. */
bool pci_msix_enabled(const struct pci_dev *p);
void pci_msix_notify(struct pci_dev *p, int vec);
void pci_intx_set(struct pci_dev *p, int level);

/* The irqfd that raises vector `vec` (for vhost-user), or -1. */
int pci_msix_irqfd(struct pci_dev *p, int vec);

struct state_writer;
struct state_reader;
/* The MSI-X table and pending bits, which live in a BAR and not in
 * configuration space, for a device's snapshot: a restored guest that
 * enabled MSI-X otherwise finds every vector masked with no address, and
 * none of its device's interrupts arrive.  restore checks the vector
 * count against this device's; 0 or -1 (the reader's error set). */
void pci_msix_save(const struct pci_dev *p, struct state_writer *w);
int pci_msix_restore(struct pci_dev *p, struct state_reader *r);

/* Config space access as the guest sees it (tests, fuzzers). */
void pci_config_read(struct pci_host *h, int slot, uint32_t off, void *data, int size);
void pci_config_write(struct pci_host *h, int slot, uint32_t off, const void *data, int size);

#endif
