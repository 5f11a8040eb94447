/*
 * pci.h - PCI configuration space and bus enumeration from ring 3.
 *
 * See pci.c for how config space is reached (ECAM from the ACPI MCFG, or
 * the legacy 0xCF8/0xCFC ports) and how BARs without an address get one.
 */
#ifndef GUEST_PCI_H
#define GUEST_PCI_H

#include <stdbool.h>
#include <stdint.h>

#define PCI_DEVS_MAX 32

#define PCI_CFG_VENDOR     0x00
#define PCI_CFG_DEVICE     0x02
#define PCI_CFG_COMMAND    0x04
#define PCI_CFG_STATUS     0x06
#define PCI_CFG_REVISION   0x08
#define PCI_CFG_CLASS      0x09	/* prog-if, subclass, class: 3 bytes */
#define PCI_CFG_HEADER     0x0e
#define PCI_CFG_BAR0       0x10
#define PCI_CFG_SUBSYS_ID  0x2e
#define PCI_CFG_CAP_PTR    0x34
#define PCI_CFG_BRIDGE_BUS 0x18	/* type 1: primary, secondary, subordinate */

#define PCI_CMD_IO         0x0001
#define PCI_CMD_MEM        0x0002
#define PCI_CMD_MASTER     0x0004
#define PCI_STATUS_CAPS    0x0010

#define PCI_CAP_VENDOR     0x09
#define PCI_CAP_MSIX       0x11

struct pci_bar {
	uint64_t addr;		/* bus = guest physical address, 0 if none */
	uint64_t size;		/* 0: not implemented */
	bool io;		/* I/O space (else memory) */
	bool is64;		/* takes this and the next BAR slot */
	bool assigned;		/* the guest gave it its address */
};

struct pci_dev {
	uint8_t bus, dev, fn;
	uint16_t vendor, device, subsys;
	uint32_t class;		/* class << 16 | subclass << 8 | prog-if */
	struct pci_bar bar[6];
};

extern struct pci_dev pci_devs[PCI_DEVS_MAX];
extern unsigned pci_ndevs;
extern const char *pci_access;	/* "ecam", "ports" or "none" */
extern uint64_t pci_ecam_base;	/* 0 when there is no MCFG */

/*
 * Find config space access, scan bus 0 (and the buses behind simple
 * bridges), size every BAR and give an address to those left at 0, then
 * enable decoding and bus mastering.  Idempotent: runs once, later calls
 * return the first result.  False if no host bridge answered.
 */
bool pci_init(void);

/*
 * Forget the scan and do it again on the next pci_init, through the
 * legacy ports if `ports` (to check both access paths of a VMM), else
 * through ECAM when there is one.  Assigned BARs keep their addresses.
 */
void pci_rescan(bool ports);

uint32_t pci_read32(const struct pci_dev *d, unsigned off);
uint16_t pci_read16(const struct pci_dev *d, unsigned off);
uint8_t pci_read8(const struct pci_dev *d, unsigned off);
void pci_write32(const struct pci_dev *d, unsigned off, uint32_t v);
void pci_write16(const struct pci_dev *d, unsigned off, uint16_t v);

/* Offset of the next capability with this id after `after` (0: first). */
unsigned pci_cap_next(const struct pci_dev *d, uint8_t id, unsigned after);

#endif
