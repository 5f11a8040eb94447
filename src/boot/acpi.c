/*
 * acpi.c - the ACPI tables that describe the machine to the guest.
 *
 * Shoal has no firmware, so the VMM writes what a BIOS would leave in the
 * 0xe0000-0xfffff area before handing over to the kernel:
 *
 *   RSDP (rev 2) -> XSDT -> FADT -> DSDT   (\_S5, \_SB.COM1, \_SB.PCI0 with
 *                                            its hotplug slots, \_SB.HPGE)
 *                        |       -> FACS
 *                        -> MADT           (LAPIC per vCPU, IOAPIC, SCI override)
 *                        -> MCFG           (ECAM for PCI bus 0)
 *
 * The machine is a classic (not hardware-reduced) PC: the FADT points at the
 * ACPI PM1a event and control blocks that src/devices/acpi_pm.c emulates
 * (abi/testdev.h), SCI is ISA IRQ 9 (level, active high, as QEMU wires it),
 * SMI_CMD is 0 so the guest finds ACPI already enabled, and the boot
 * architecture flags say an i8042 is present (the VMM resets through it) and
 * VGA is not.  There is no reset register: reboot goes through the i8042.
 *
 * Interrupt routing: KVM's default routing sends ISA IRQ n to IOAPIC pin n,
 * so the MADT has no override for IRQ 0 (a BIOS on real hardware would map
 * it to pin 2); the only override is the SCI's, to declare it level-high.
 *
 * A device that only some VMs have (the VM generation ID) adds an SSDT of
 * its own later, in the last page of the area, which the tables here leave
 * free (acpi_add_vmgenid, boot/acpi.h).
 *
 * A firmware boot gets the same tables through fw_cfg instead
 * (acpi_build_fw_cfg, boot/acpi.h): built into a scratch copy of the area,
 * their pointers turned into offsets, with a linker/loader script that has
 * the BIOS place them and patch the pointers and checksums.  Their DSDT
 * differs in one place: PCI0's _CRS also decodes the firmware's BAR window
 * (PCI_MMIO32_FW_BASE), where SeaBIOS assigns the BARs.
 *
 * Invariants: every table lies in [BOOT_ACPI_ADDR, BOOT_ACPI_END), which the
 * e820 map marks reserved; each starts 16-byte aligned (the FACS 64-byte
 * aligned, as the spec requires); every checksum makes its table sum to 0.
 * The AML in the DSDT is assembled by a tiny encoder below rather than
 * carried as an opaque blob, so its package lengths are computed, not
 * counted by hand.
 */
#include "boot/boot.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "boot/acpi.h"

#include "abi/testdev.h"
#include "base/exitcode.h"
#include "boot/boot_priv.h"
#include "base/layout.h"
#include "devices/pci.h"

/* ---- on-memory table layouts (ACPI 6.x) ---- */

struct acpi_rsdp {
	char     signature[8];      /* "RSD PTR " */
	uint8_t  checksum;          /* over the first 20 bytes */
	char     oem_id[6];
	uint8_t  revision;          /* 2: has XSDT */
	uint32_t rsdt_addr;         /* 0: no RSDT */
	uint32_t length;            /* 36 */
	uint64_t xsdt_addr;
	uint8_t  ext_checksum;      /* over all 36 bytes */
	uint8_t  reserved[3];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");

struct acpi_header {
	char     signature[4];
	uint32_t length;            /* whole table, header included */
	uint8_t  revision;
	uint8_t  checksum;
	char     oem_id[6];
	char     oem_table_id[8];
	uint32_t oem_revision;
	char     creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_header) == 36, "SDT header layout");

struct acpi_gas {                   /* Generic Address Structure */
	uint8_t  space_id;          /* 1: system I/O */
	uint8_t  bit_width;
	uint8_t  bit_offset;
	uint8_t  access_size;       /* 0: undefined (legacy) */
	uint64_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS layout");

struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;     /* 36 */
	uint32_t dsdt;              /* 40 */
	uint8_t  reserved0;
	uint8_t  pm_profile;
	uint16_t sci_int;           /* 46 */
	uint32_t smi_cmd;           /* 48 */
	uint8_t  acpi_enable;
	uint8_t  acpi_disable;
	uint8_t  s4bios_req;
	uint8_t  pstate_cnt;
	uint32_t pm1a_evt_blk;      /* 56 */
	uint32_t pm1b_evt_blk;
	uint32_t pm1a_cnt_blk;      /* 64 */
	uint32_t pm1b_cnt_blk;
	uint32_t pm2_cnt_blk;
	uint32_t pm_tmr_blk;
	uint32_t gpe0_blk;
	uint32_t gpe1_blk;
	uint8_t  pm1_evt_len;       /* 88 */
	uint8_t  pm1_cnt_len;
	uint8_t  pm2_cnt_len;
	uint8_t  pm_tmr_len;
	uint8_t  gpe0_blk_len;
	uint8_t  gpe1_blk_len;
	uint8_t  gpe1_base;
	uint8_t  cst_cnt;
	uint16_t p_lvl2_lat;
	uint16_t p_lvl3_lat;
	uint16_t flush_size;
	uint16_t flush_stride;
	uint8_t  duty_offset;
	uint8_t  duty_width;
	uint8_t  day_alrm;
	uint8_t  mon_alrm;
	uint8_t  century;
	uint16_t iapc_boot_arch;    /* 109 */
	uint8_t  reserved1;
	uint32_t flags;             /* 112 */
	struct acpi_gas reset_reg;  /* 116 */
	uint8_t  reset_value;
	uint16_t arm_boot_arch;
	uint8_t  minor_version;
	uint64_t x_firmware_ctrl;   /* 132 */
	uint64_t x_dsdt;            /* 140 */
	struct acpi_gas x_pm1a_evt_blk; /* 148 */
	struct acpi_gas x_pm1b_evt_blk;
	struct acpi_gas x_pm1a_cnt_blk; /* 172 */
	struct acpi_gas x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk;
	struct acpi_gas x_pm_tmr_blk;
	struct acpi_gas x_gpe0_blk;
	struct acpi_gas x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_vendor;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT layout (revision 6)");
_Static_assert(offsetof(struct acpi_fadt, iapc_boot_arch) == 109, "FADT layout");
_Static_assert(offsetof(struct acpi_fadt, x_pm1a_cnt_blk) == 172, "FADT layout");

#define FADT_BOOT_8042          (1u << 1)
#define FADT_BOOT_NO_VGA        (1u << 2)
#define FADT_F_WBINVD           (1u << 0)
#define FADT_F_PROC_C1          (1u << 2)
#define FADT_F_PWR_BUTTON       (1u << 4)   /* 1: no fixed power button */
#define FADT_F_SLP_BUTTON       (1u << 5)   /* 1: no fixed sleep button */

struct acpi_facs {
	char     signature[4];      /* "FACS" */
	uint32_t length;            /* 64 */
	uint32_t hardware_signature;
	uint32_t waking_vector;
	uint32_t global_lock;
	uint32_t flags;
	uint64_t x_waking_vector;
	uint8_t  version;           /* 2 */
	uint8_t  reserved[3];
	uint32_t ospm_flags;
	uint8_t  reserved2[24];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS layout");

struct acpi_madt {
	struct acpi_header h;
	uint32_t lapic_addr;
	uint32_t flags;             /* bit 0: PC-AT compatible dual 8259 */
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT layout");

struct madt_lapic {                 /* type 0 */
	uint8_t  type, length;
	uint8_t  uid;
	uint8_t  apic_id;
	uint32_t flags;             /* bit 0: enabled */
} __attribute__((packed));
_Static_assert(sizeof(struct madt_lapic) == 8, "MADT LAPIC layout");

struct madt_ioapic {                /* type 1 */
	uint8_t  type, length;
	uint8_t  id;
	uint8_t  reserved;
	uint32_t addr;
	uint32_t gsi_base;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT IOAPIC layout");

struct madt_iso {                   /* type 2: interrupt source override */
	uint8_t  type, length;
	uint8_t  bus;               /* 0: ISA */
	uint8_t  source;            /* ISA IRQ */
	uint32_t gsi;
	uint16_t flags;             /* polarity bits 0-1, trigger bits 2-3 */
} __attribute__((packed));
_Static_assert(sizeof(struct madt_iso) == 10, "MADT ISO layout");

struct madt_lapic_nmi {             /* type 4 */
	uint8_t  type, length;
	uint8_t  uid;               /* 0xff: all processors */
	uint16_t flags;
	uint8_t  lint;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT LAPIC NMI layout");

#define MADT_ISO_ACTIVE_HIGH    0x1
#define MADT_ISO_LEVEL          0xc
#define ACPI_IOAPIC_ID          0

/* ---- placement ---- */

/* acpi_build()'s tables end where the VM generation ID page begins. */
#define ACPI_TABLES_END ACPI_VMGENID_PAGE
_Static_assert(ACPI_VMGENID_PAGE + 0x1000 == BOOT_ACPI_END, "the VMGenID page ends the area");

/* A bump allocator over the ACPI area of guest RAM. */
struct acpi_area {
	struct guest_mem *m;
	uint64_t next;
};

/* Reserve `len` bytes aligned to `align` and return a zeroed host pointer,
 * or NULL when the ACPI area is full. */
static void *acpi_alloc(struct acpi_area *a, size_t len, uint64_t align, uint64_t *gpa)
{
	uint64_t at = (a->next + align - 1) & ~(align - 1);
	void *p;

	if (at > ACPI_TABLES_END || len > ACPI_TABLES_END - at)
		return NULL;
	p = guest_mem_ptr(a->m, at, len);
	if (!p)
		return NULL;
	memset(p, 0, len);
	a->next = at + len;
	*gpa = at;
	return p;
}

/* Fill a standard table header; the checksum is set by acpi_finish(). */
static void acpi_header_init(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, "SHOAL ", 6);
	memcpy(h->oem_table_id, "SHOALVM ", 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, "SHOL", 4);
	h->creator_revision = 1;
}

/* Make the table at `h` (its header length) sum to zero. */
static void acpi_finish(struct acpi_header *h)
{
	h->checksum = 0;
	h->checksum = boot_checksum(h, h->length);
}

/* ---- DSDT: a minimal AML encoder ---- */

struct aml {
	uint8_t buf[8192];
	size_t len;
	int overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (n > sizeof(a->buf) - a->len) {
		a->overflow = 1;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

/* Emit `op` (1 or 2 bytes), a PkgLength covering `body`, then the body.
 * PkgLength counts its own bytes: one byte up to 63, two up to 4095,
 * three beyond (the hotplug slots make \_SB longer than 4095). */
static void aml_pkg(struct aml *a, const uint8_t *op, size_t oplen, const struct aml *body)
{
	size_t n = body->len;

	aml_bytes(a, op, oplen);
	if (n + 1 < 64) {
		aml_byte(a, (uint8_t)(n + 1));
	} else if (n + 2 <= 0xfff) {
		size_t t = n + 2;

		aml_byte(a, (uint8_t)(0x40 | (t & 0xf)));
		aml_byte(a, (uint8_t)(t >> 4));
	} else {
		size_t t = n + 3;

		if (t > 0xfffff)
			a->overflow = 1;   /* would need a 4-byte PkgLength */
		aml_byte(a, (uint8_t)(0x80 | (t & 0xf)));
		aml_byte(a, (uint8_t)(t >> 4));
		aml_byte(a, (uint8_t)(t >> 12));
	}
	aml_bytes(a, body->buf, n);
	a->overflow |= body->overflow;
}

#define AML_ZERO      0x00
#define AML_ONE       0x01
#define AML_NAME      0x08
#define AML_BYTE      0x0a
#define AML_DWORD     0x0c
#define AML_SCOPE     0x10
#define AML_BUFFER    0x11
#define AML_PACKAGE   0x12

/* Name(_S5_, Package() { 5, 5, 0, 0 }): SLP_TYPa, SLP_TYPb for soft-off. */
static void aml_s5(struct aml *a)
{
	static const uint8_t pkg = AML_PACKAGE;
	struct aml body = { .len = 0 };

	aml_byte(&body, 4);                 /* NumElements */
	aml_byte(&body, AML_BYTE);
	aml_byte(&body, ACPI_S5_SLP_TYP);
	aml_byte(&body, AML_BYTE);
	aml_byte(&body, ACPI_S5_SLP_TYP);
	aml_byte(&body, AML_ZERO);
	aml_byte(&body, AML_ZERO);
	aml_byte(a, AML_NAME);
	aml_bytes(a, "_S5_", 4);
	aml_pkg(a, &pkg, 1, &body);
}

/* Device(COM1) { _HID PNP0501, _UID 1, _CRS { IO 0x3f8/8, IRQ 4 } } */
static void aml_com1(struct aml *a)
{
	static const uint8_t devop[2] = { 0x5b, 0x82 };
	static const uint8_t bufop = AML_BUFFER;
	/* EISA id "PNP0501", compressed as the ACPI EISAID() macro does. */
	static const uint8_t hid[4] = { 0x41, 0xd0, 0x05, 0x01 };
	const uint8_t crs[] = {
		0x47, 0x01,                             /* IO, decode 16 bit */
		COM1_PORT & 0xff, COM1_PORT >> 8,       /* min */
		COM1_PORT & 0xff, COM1_PORT >> 8,       /* max */
		0x01, 0x08,                             /* align, length */
		0x22, 1u << COM1_IRQ, 0x00,             /* IRQNoFlags {4} */
		0x79, 0x00,                             /* end tag */
	};
	struct aml dev = { .len = 0 }, buf = { .len = 0 };

	aml_bytes(&dev, "COM1", 4);
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_HID", 4);
	aml_byte(&dev, AML_DWORD);
	aml_bytes(&dev, hid, 4);
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_UID", 4);
	aml_byte(&dev, AML_ONE);
	aml_byte(&buf, AML_BYTE);
	aml_byte(&buf, sizeof(crs));
	aml_bytes(&buf, crs, sizeof(crs));
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_CRS", 4);
	aml_pkg(&dev, &bufop, 1, &buf);
	aml_pkg(a, devop, 2, &dev);
}

static void aml_name_dword(struct aml *a, const char *name, uint32_t v)
{
	aml_byte(a, AML_NAME);
	aml_bytes(a, name, 4);
	aml_byte(a, AML_DWORD);
	aml_bytes(a, &v, 4);
}

static void aml_name_zero(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME);
	aml_bytes(a, name, 4);
	aml_byte(a, AML_ZERO);
}

/* The host bridge's resources: bus 0, the config ports, all I/O but them,
 * and the 32-bit BAR window (src/devices/pci.h). */
static void aml_qword(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* QWordMemory (producer, fixed, read-write, prefetchable): the 64-bit
 * BAR window above RAM. */
static void aml_qword_memory(uint8_t out[46], uint64_t base, uint64_t len)
{
	static const uint8_t head[6] = { 0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03 };

	memset(out, 0, 46);
	memcpy(out, head, sizeof(head));
	aml_qword(out + 14, base);                /* min */
	aml_qword(out + 22, base + len - 1);      /* max */
	aml_qword(out + 38, len);                 /* length */
}

static void aml_pci_crs(struct aml *a, uint64_t mmio64_base, int fw)
{
	static const uint8_t bufop = AML_BUFFER;
	const uint32_t mlo = (uint32_t)PCI_MMIO32_BASE;
	const uint32_t mhi = (uint32_t)(PCI_MMIO32_BASE + PCI_MMIO32_SIZE - 1);
	const uint32_t mlen = (uint32_t)PCI_MMIO32_SIZE;
	const uint8_t crs[] = {
		/* WordBusNumber (producer, fixed) 0..0 */
		0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
		/* IO (Decode16) 0xcf8, 8 ports */
		0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08,
		/* WordIO 0x0000-0x0cf7 */
		0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x00, 0xf7, 0x0c, 0, 0, 0xf8, 0x0c,
		/* WordIO 0x0d00-0xffff */
		0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3,
		/* DWordMemory, read-write, the 32-bit BAR window */
		0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0,
		(uint8_t)mlo, (uint8_t)(mlo >> 8), (uint8_t)(mlo >> 16), (uint8_t)(mlo >> 24),
		(uint8_t)mhi, (uint8_t)(mhi >> 8), (uint8_t)(mhi >> 16), (uint8_t)(mhi >> 24),
		0, 0, 0, 0,
		(uint8_t)mlen, (uint8_t)(mlen >> 8), (uint8_t)(mlen >> 16), (uint8_t)(mlen >> 24),
	};
	/* A firmware boot's second 32-bit window, where SeaBIOS puts the BARs. */
	const uint32_t flo = (uint32_t)PCI_MMIO32_FW_BASE;
	const uint32_t fhi = (uint32_t)(PCI_MMIO32_FW_BASE + PCI_MMIO32_FW_SIZE - 1);
	const uint32_t flen = (uint32_t)PCI_MMIO32_FW_SIZE;
	const uint8_t fwin[] = {
		0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0,
		(uint8_t)flo, (uint8_t)(flo >> 8), (uint8_t)(flo >> 16), (uint8_t)(flo >> 24),
		(uint8_t)fhi, (uint8_t)(fhi >> 8), (uint8_t)(fhi >> 16), (uint8_t)(fhi >> 24),
		0, 0, 0, 0,
		(uint8_t)flen, (uint8_t)(flen >> 8), (uint8_t)(flen >> 16), (uint8_t)(flen >> 24),
	};
	static const uint8_t end_tag[2] = { 0x79, 0x00 };
	uint8_t q[46];
	struct aml buf = { .len = 0 };

	aml_qword_memory(q, mmio64_base, PCI_MMIO64_SIZE);
	aml_byte(&buf, AML_BYTE);
	aml_byte(&buf, (uint8_t)(sizeof(crs) + (fw ? sizeof(fwin) : 0) + sizeof(q) + sizeof(end_tag)));
	aml_bytes(&buf, crs, sizeof(crs));
	if (fw)
		aml_bytes(&buf, fwin, sizeof(fwin));
	aml_bytes(&buf, q, sizeof(q));
	aml_bytes(&buf, end_tag, sizeof(end_tag));
	aml_byte(a, AML_NAME);
	aml_bytes(a, "_CRS", 4);
	aml_pkg(a, &bufop, 1, &buf);
}

/* _PRT: INTA# of slot s goes to GSI PCI_INTX_GSI_BASE + s % 4 (pci.c). */
static void aml_pci_prt(struct aml *a)
{
	static const uint8_t pkgop = AML_PACKAGE;
	struct aml all = { .len = 0 };

	aml_byte(&all, PCI_MAX_SLOTS - 1);          /* NumElements */
	for (int s = 1; s < PCI_MAX_SLOTS; s++) {
		struct aml e = { .len = 0 };
		uint32_t adr = ((uint32_t)s << 16) | 0xffff;

		aml_byte(&e, 4);
		aml_byte(&e, AML_DWORD);
		aml_bytes(&e, &adr, 4);
		aml_byte(&e, AML_ZERO);                 /* pin: INTA */
		aml_byte(&e, AML_ZERO);                 /* source: global GSI */
		aml_byte(&e, AML_BYTE);
		aml_byte(&e, (uint8_t)(PCI_INTX_GSI_BASE + s % 4));
		aml_pkg(&all, &pkgop, 1, &e);
	}
	aml_byte(a, AML_NAME);
	aml_bytes(a, "_PRT", 4);
	aml_pkg(a, &pkgop, 1, &all);
}

/* ---- ACPI PCI hotplug (src/devices/pci_hotplug.c has the registers) ----
 *
 * In \_SB.PCI0:
 *   OperationRegion(PCST, SystemIO, ACPI_PCIHP_PORT, 12)
 *   Field(PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32 }
 *   Device(Snn) { Name(_ADR, nn << 16)  Name(_SUN, nn)
 *                 Method(_EJ0, 1) { Store(1 << nn, B0EJ) } }   for nn = 1..31
 *   Method(DVNT, 2) { If (And(Arg0, 1 << nn)) { Notify(Snn, Arg1) } ... }
 *   Method(PCNT, 0, Serialized) { DVNT(PCIU, 1)  DVNT(PCID, 3) }
 * and in \_SB a Generic Event Device on ACPI_PCIHP_GSI:
 *   Device(HPGE) { _HID "ACPI0013", _CRS { Interrupt(edge) },
 *                  Method(_EVT, 1) { \_SB.PCI0.PCNT() } }
 * Linux's acpiphp registers a hotplug slot for each Snn (it has _ADR and
 * _EJ0); Notify 1 makes it scan the slot, Notify 3 makes it remove the
 * device and call _EJ0.  Every slot is declared, occupied or not: which
 * slots the VM's devices take is decided after the tables are written. */

#define AML_WORD      0x0b
#define AML_METHOD    0x14
#define AML_ROOT      0x5c
#define AML_DUAL_NAME 0x2e
#define AML_MULTI_NAME 0x2f
#define AML_EXT       0x5b
#define AML_ARG0      0x68
#define AML_ARG1      0x69
#define AML_STORE     0x70
#define AML_AND       0x7b
#define AML_NOTIFY    0x86
#define AML_IF        0xa0

static void aml_const_dword(struct aml *a, uint32_t v)
{
	aml_byte(a, AML_DWORD);
	aml_bytes(a, &v, 4);
}

/* "Snn_": slot nn in two upper-case hex digits, as a NameSeg. */
static void aml_slot_seg(struct aml *a, int slot)
{
	static const char hex[] = "0123456789ABCDEF";
	const char seg[4] = { 'S', hex[(slot >> 4) & 0xf], hex[slot & 0xf], '_' };

	aml_bytes(a, seg, 4);
}

static void aml_method(struct aml *a, const char *name, uint8_t flags, const struct aml *body)
{
	static const uint8_t methodop = AML_METHOD;
	struct aml m = { .len = 0 };

	aml_bytes(&m, name, 4);
	aml_byte(&m, flags);
	aml_bytes(&m, body->buf, body->len);
	m.overflow = body->overflow;
	aml_pkg(a, &methodop, 1, &m);
}

static void aml_pcihp_slot(struct aml *a, int slot)
{
	static const uint8_t devop[2] = { AML_EXT, 0x82 };
	struct aml dev = { .len = 0 }, ej0 = { .len = 0 };

	aml_slot_seg(&dev, slot);
	aml_name_dword(&dev, "_ADR", (uint32_t)slot << 16);
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_SUN", 4);
	aml_byte(&dev, AML_BYTE);
	aml_byte(&dev, (uint8_t)slot);
	aml_byte(&ej0, AML_STORE);
	aml_const_dword(&ej0, 1u << slot);
	aml_bytes(&ej0, "B0EJ", 4);
	aml_method(&dev, "_EJ0", 1, &ej0);
	aml_pkg(a, devop, 2, &dev);
}

static void aml_pcihp(struct aml *a)
{
	static const uint8_t opregion[2] = { AML_EXT, 0x80 }, fieldop[2] = { AML_EXT, 0x81 };
	static const uint8_t ifop = AML_IF;
	struct aml field = { .len = 0 }, dvnt = { .len = 0 }, pcnt = { .len = 0 };

	aml_bytes(a, opregion, 2);
	aml_bytes(a, "PCST", 4);
	aml_byte(a, 0x01);                          /* SystemIO */
	aml_byte(a, AML_WORD);
	aml_byte(a, ACPI_PCIHP_PORT & 0xff);
	aml_byte(a, ACPI_PCIHP_PORT >> 8);
	aml_byte(a, AML_BYTE);
	aml_byte(a, ACPI_PCIHP_LEN);
	aml_bytes(&field, "PCST", 4);
	aml_byte(&field, 0x43);                     /* DWordAcc, NoLock, WriteAsZeros */
	aml_bytes(&field, "PCIU", 4);
	aml_byte(&field, 32);
	aml_bytes(&field, "PCID", 4);
	aml_byte(&field, 32);
	aml_bytes(&field, "B0EJ", 4);
	aml_byte(&field, 32);
	aml_pkg(a, fieldop, 2, &field);

	for (int s = 1; s < PCI_MAX_SLOTS; s++) {
		struct aml body = { .len = 0 };

		aml_pcihp_slot(a, s);
		aml_byte(&body, AML_AND);               /* And(Arg0, 1 << s, Zero) */
		aml_byte(&body, AML_ARG0);
		aml_const_dword(&body, 1u << s);
		aml_byte(&body, AML_ZERO);
		aml_byte(&body, AML_NOTIFY);            /* Notify(Snn, Arg1) */
		aml_slot_seg(&body, s);
		aml_byte(&body, AML_ARG1);
		aml_pkg(&dvnt, &ifop, 1, &body);
	}
	aml_method(a, "DVNT", 2, &dvnt);
	aml_bytes(&pcnt, "DVNT", 4);
	aml_bytes(&pcnt, "PCIU", 4);
	aml_byte(&pcnt, AML_ONE);                   /* device check */
	aml_bytes(&pcnt, "DVNT", 4);
	aml_bytes(&pcnt, "PCID", 4);
	aml_byte(&pcnt, AML_BYTE);
	aml_byte(&pcnt, 3);                         /* eject request */
	aml_method(a, "PCNT", 0x08, &pcnt);         /* serialized */
}

/* Device(HPGE): the Generic Event Device whose interrupt says "look at the
 * hotplug registers". */
static void aml_pcihp_ged(struct aml *a)
{
	static const uint8_t devop[2] = { AML_EXT, 0x82 };
	static const uint8_t bufop = AML_BUFFER;
	const unsigned gsi = ACPI_PCIHP_GSI;
	const uint8_t crs[] = {
		0x89, 0x06, 0x00,       /* Extended Interrupt, 6 bytes follow */
		0x03,                   /* consumer, edge, active high, exclusive */
		0x01,                   /* one interrupt */
		(uint8_t)gsi, (uint8_t)(gsi >> 8), (uint8_t)(gsi >> 16), (uint8_t)(gsi >> 24),
		0x79, 0x00,             /* end tag */
	};
	static const uint8_t call[] = {
		AML_ROOT, AML_MULTI_NAME, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'P', 'C', 'N', 'T',
	};
	struct aml dev = { .len = 0 }, buf = { .len = 0 }, evt = { .len = 0 };

	aml_bytes(&dev, "HPGE", 4);
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_HID", 4);
	aml_byte(&dev, 0x0d);                       /* String */
	aml_bytes(&dev, "ACPI0013", 9);
	aml_byte(&buf, AML_BYTE);
	aml_byte(&buf, sizeof(crs));
	aml_bytes(&buf, crs, sizeof(crs));
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_CRS", 4);
	aml_pkg(&dev, &bufop, 1, &buf);
	aml_bytes(&evt, call, sizeof(call));
	aml_method(&dev, "_EVT", 1, &evt);
	aml_pkg(a, devop, 2, &dev);
}

/* Device(PCI0): a PCI Express root bridge (PNP0A08, compatible PNP0A03). */
static void aml_pci0(struct aml *a, uint64_t mmio64_base, int fw)
{
	static const uint8_t devop[2] = { 0x5b, 0x82 };
	struct aml dev = { .len = 0 };

	aml_bytes(&dev, "PCI0", 4);
	aml_name_dword(&dev, "_HID", 0x080ad041);   /* EISAID("PNP0A08") */
	aml_name_dword(&dev, "_CID", 0x030ad041);   /* EISAID("PNP0A03") */
	aml_name_zero(&dev, "_ADR");
	aml_name_zero(&dev, "_UID");
	aml_name_zero(&dev, "_SEG");
	aml_name_zero(&dev, "_BBN");
	aml_pci_crs(&dev, mmio64_base, fw);
	aml_pci_prt(&dev);
	aml_pcihp(&dev);
	aml_pkg(a, devop, 2, &dev);
}

/* The DSDT body: \_S5 at the root and Scope(\_SB) { COM1, PCI0, HPGE }. */
static void aml_dsdt_body(struct aml *a, uint64_t mmio64_base, int fw)
{
	static const uint8_t scope = AML_SCOPE;
	struct aml sb = { .len = 0 };

	aml_s5(a);
	aml_bytes(&sb, "\\_SB_", 5);
	aml_com1(&sb);
	aml_pci0(&sb, mmio64_base, fw);
	aml_pcihp_ged(&sb);
	aml_pkg(a, &scope, 1, &sb);
}

/* ---- tables ---- */

static int acpi_build_dsdt(struct acpi_area *ar, int fw, uint64_t *gpa)
{
	struct aml aml = { .len = 0 };
	struct acpi_header *h;
	size_t len;

	aml_dsdt_body(&aml, pci_mmio64_base(ar->m->size), fw);
	if (aml.overflow)
		return -1;
	len = sizeof(*h) + aml.len;
	h = acpi_alloc(ar, len, 16, gpa);
	if (!h)
		return -1;
	acpi_header_init(h, "DSDT", (uint32_t)len, 2);
	memcpy(h + 1, aml.buf, aml.len);
	acpi_finish(h);
	return 0;
}

static int acpi_build_facs(struct acpi_area *ar, uint64_t *gpa)
{
	struct acpi_facs *f = acpi_alloc(ar, sizeof(*f), 64, gpa);

	if (!f)
		return -1;
	memcpy(f->signature, "FACS", 4);
	f->length = sizeof(*f);
	f->version = 2;
	return 0;
}

/* A system-I/O generic address for `len` bytes at `port`. */
static struct acpi_gas acpi_gas_io(uint16_t port, uint8_t len)
{
	return (struct acpi_gas){ .space_id = 1, .bit_width = (uint8_t)(len * 8),
				  .address = port };
}

static int acpi_build_fadt(struct acpi_area *ar, uint64_t dsdt, uint64_t facs, uint64_t *gpa)
{
	struct acpi_fadt *f = acpi_alloc(ar, sizeof(*f), 16, gpa);

	if (!f)
		return -1;
	acpi_header_init(&f->h, "FACP", sizeof(*f), 6);
	f->dsdt = (uint32_t)dsdt;
	f->x_dsdt = dsdt;
	f->x_firmware_ctrl = facs;          /* FIRMWARE_CTRL stays 0: X_ wins */
	f->sci_int = ACPI_SCI_IRQ;
	f->smi_cmd = 0;                     /* no SMI: ACPI mode is always on */
	f->pm1a_evt_blk = ACPI_PM1A_EVT_PORT;
	f->pm1a_cnt_blk = ACPI_PM1A_CNT_PORT;
	f->pm1_evt_len = 4;
	f->pm1_cnt_len = 2;
	f->x_pm1a_evt_blk = acpi_gas_io(ACPI_PM1A_EVT_PORT, 4);
	f->x_pm1a_cnt_blk = acpi_gas_io(ACPI_PM1A_CNT_PORT, 2);
	f->p_lvl2_lat = 101;                /* > 100: C2 not supported */
	f->p_lvl3_lat = 1001;               /* > 1000: C3 not supported */
	f->iapc_boot_arch = FADT_BOOT_8042 | FADT_BOOT_NO_VGA;
	/*
	 * A fixed-feature power button (PWR_BUTTON clear) and no sleep button:
	 * with PWR_BUTTON set Linux registers no button at all, so a graceful
	 * stop (acpi_pm_power_button) raised a status bit nobody listened to.
	 */
	f->flags = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON;
	f->minor_version = 0;
	acpi_finish(&f->h);
	return 0;
}

/* Append one MADT entry of `len` bytes; NULL when the area is full. */
static void *madt_add(struct acpi_area *ar, struct acpi_madt *t, size_t len)
{
	uint64_t gpa;
	uint8_t *p = acpi_alloc(ar, len, 1, &gpa);

	if (p)
		t->h.length += (uint32_t)len;
	return p;
}

static int acpi_build_madt(struct acpi_area *ar, int ncpus, uint64_t *gpa)
{
	struct acpi_madt *t = acpi_alloc(ar, sizeof(*t), 16, gpa);
	struct madt_ioapic *io;
	struct madt_iso *iso;
	struct madt_lapic_nmi *nmi;

	if (!t)
		return -1;
	acpi_header_init(&t->h, "APIC", sizeof(*t), 5);
	t->lapic_addr = (uint32_t)GUEST_LAPIC_BASE;
	t->flags = 1;                       /* PCAT_COMPAT: KVM emulates the 8259s */
	for (int i = 0; i < ncpus; i++) {
		struct madt_lapic *l = madt_add(ar, t, sizeof(*l));
		if (!l)
			return -1;
		*l = (struct madt_lapic){ .type = 0, .length = sizeof(*l),
					  .uid = (uint8_t)i, .apic_id = (uint8_t)i, .flags = 1 };
	}
	io = madt_add(ar, t, sizeof(*io));
	iso = io ? madt_add(ar, t, sizeof(*iso)) : NULL;
	nmi = iso ? madt_add(ar, t, sizeof(*nmi)) : NULL;
	if (!nmi)
		return -1;
	*io = (struct madt_ioapic){ .type = 1, .length = sizeof(*io), .id = ACPI_IOAPIC_ID,
				    .addr = (uint32_t)GUEST_IOAPIC_BASE, .gsi_base = 0 };
	*iso = (struct madt_iso){ .type = 2, .length = sizeof(*iso), .bus = 0,
				  .source = ACPI_SCI_IRQ, .gsi = ACPI_SCI_IRQ,
				  .flags = MADT_ISO_ACTIVE_HIGH | MADT_ISO_LEVEL };
	*nmi = (struct madt_lapic_nmi){ .type = 4, .length = sizeof(*nmi), .uid = 0xff,
					.flags = 0, .lint = 1 };
	acpi_finish(&t->h);
	return 0;
}

/* MCFG: ECAM for segment 0, bus 0 (src/devices/pci.h). */
struct acpi_mcfg {
	struct acpi_header h;
	uint64_t reserved;
	uint64_t base;
	uint16_t segment;
	uint8_t  start_bus, end_bus;
	uint32_t reserved2;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_mcfg) == 60, "MCFG layout");

static int acpi_build_mcfg(struct acpi_area *ar, uint64_t *gpa)
{
	struct acpi_mcfg *t = acpi_alloc(ar, sizeof(*t), 16, gpa);

	if (!t)
		return -1;
	acpi_header_init(&t->h, "MCFG", sizeof(*t), 1);
	t->base = PCI_ECAM_BASE;
	t->segment = 0;
	t->start_bus = 0;
	t->end_bus = 0;
	acpi_finish(&t->h);
	return 0;
}

static int acpi_build_xsdt(struct acpi_area *ar, const uint64_t *ents, int n, uint64_t *gpa)
{
	size_t len = sizeof(struct acpi_header) + (size_t)n * 8;
	struct acpi_header *h = acpi_alloc(ar, len, 16, gpa);

	if (!h)
		return -1;
	acpi_header_init(h, "XSDT", (uint32_t)len, 1);
	memcpy(h + 1, ents, (size_t)n * 8);
	acpi_finish(h);
	return 0;
}

static void acpi_fill_rsdp(struct acpi_rsdp *r, uint64_t xsdt)
{
	memcpy(r->signature, "RSD PTR ", 8);
	memcpy(r->oem_id, "SHOAL ", 6);
	r->revision = 2;
	r->length = sizeof(*r);
	r->xsdt_addr = xsdt;
	r->checksum = boot_checksum(r, 20);
	r->ext_checksum = boot_checksum(r, sizeof(*r));
}

/* acpi_build, and for a firmware boot (`fw`) the DSDT's PCI0 also
 * decodes the firmware's BAR window. */
static uint64_t acpi_build_tables(struct guest_mem *m, int ncpus, int fw, struct error *e)
{
	struct acpi_area ar = { .m = m, .next = BOOT_ACPI_ADDR };
	uint64_t rsdp, dsdt, facs, fadt, madt, mcfg, xsdt, ents[3];
	struct acpi_rsdp *r;

	if (ncpus < 1 || ncpus > GUEST_MAX_VCPUS) {
		error_set(e, EXIT_USAGE, "ACPI: %d vCPUs is out of range (1..%d)",
			  ncpus, GUEST_MAX_VCPUS);
		return 0;
	}
	r = acpi_alloc(&ar, sizeof(*r), 16, &rsdp);
	if (!r || acpi_build_dsdt(&ar, fw, &dsdt) || acpi_build_facs(&ar, &facs) ||
	    acpi_build_fadt(&ar, dsdt, facs, &fadt) || acpi_build_madt(&ar, ncpus, &madt) ||
	    acpi_build_mcfg(&ar, &mcfg)) {
		error_set(e, EXIT_HOST, "ACPI tables do not fit in 0x%llx-0x%llx",
			  (unsigned long long)BOOT_ACPI_ADDR, (unsigned long long)ACPI_TABLES_END);
		return 0;
	}
	ents[0] = fadt;
	ents[1] = madt;
	ents[2] = mcfg;
	if (acpi_build_xsdt(&ar, ents, 3, &xsdt)) {
		error_set(e, EXIT_HOST, "ACPI tables do not fit in 0x%llx-0x%llx",
			  (unsigned long long)BOOT_ACPI_ADDR, (unsigned long long)ACPI_TABLES_END);
		return 0;
	}
	acpi_fill_rsdp(r, xsdt);
	return rsdp;
}

uint64_t acpi_build(struct guest_mem *m, int ncpus, struct error *e)
{
	return acpi_build_tables(m, ncpus, 0, e);
}

/* ---- the VM generation ID SSDT (boot/acpi.h) ---- */

#define AML_STRING    0x0d

static void aml_name_string(struct aml *a, const char *name, const char *str)
{
	aml_byte(a, AML_NAME);
	aml_bytes(a, name, 4);
	aml_byte(a, AML_STRING);
	aml_bytes(a, str, strlen(str) + 1);
}

/* Device(VGEN): _HID "SHOL0001" (ours; an ACPI ID is 4 letters and 4 hex
 * digits), _CID "VM_GEN_COUNTER" (what the spec and Linux's vmgenid driver
 * match), and ADDR, a package of two DWORDs: the low and high halves of
 * the generation ID's address. */
static void aml_vgen(struct aml *a, uint64_t guid_gpa)
{
	static const uint8_t devop[2] = { 0x5b, 0x82 };
	static const uint8_t pkgop = AML_PACKAGE;
	struct aml dev = { .len = 0 }, pkg = { .len = 0 };
	uint32_t lo = (uint32_t)guid_gpa, hi = (uint32_t)(guid_gpa >> 32);

	aml_bytes(&dev, "VGEN", 4);
	aml_name_string(&dev, "_HID", "SHOL0001");
	aml_name_string(&dev, "_CID", "VM_GEN_COUNTER");
	aml_name_string(&dev, "_DDN", "VM_Gen_Counter");
	aml_byte(&pkg, 2);                          /* NumElements */
	aml_byte(&pkg, AML_DWORD);
	aml_bytes(&pkg, &lo, 4);
	aml_byte(&pkg, AML_DWORD);
	aml_bytes(&pkg, &hi, 4);
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "ADDR", 4);
	aml_pkg(&dev, &pkgop, 1, &pkg);
	aml_pkg(a, devop, 2, &dev);
}

/* Device(VGED): a Generic Event Device (ACPI0013) with one interrupt, GSI
 * `gsi` (edge, active high, exclusive), whose _EVT tells VGEN that the ID
 * changed: Notify(\_SB.VGEN, 0x80). */
static void aml_vged(struct aml *a, unsigned gsi)
{
	static const uint8_t devop[2] = { 0x5b, 0x82 };
	static const uint8_t bufop = AML_BUFFER, methodop = AML_METHOD;
	const uint8_t crs[] = {
		0x89, 0x06, 0x00,       /* Extended Interrupt, 6 bytes follow */
		0x03,                   /* consumer, edge, active high, exclusive */
		0x01,                   /* one interrupt */
		(uint8_t)gsi, (uint8_t)(gsi >> 8), (uint8_t)(gsi >> 16), (uint8_t)(gsi >> 24),
		0x79, 0x00,             /* end tag */
	};
	static const uint8_t notify[] = {
		AML_NOTIFY, AML_ROOT, AML_DUAL_NAME, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N',
		AML_BYTE, 0x80,
	};
	struct aml dev = { .len = 0 }, buf = { .len = 0 }, m = { .len = 0 };

	aml_bytes(&dev, "VGED", 4);
	aml_name_string(&dev, "_HID", "ACPI0013");
	aml_byte(&buf, AML_BYTE);
	aml_byte(&buf, sizeof(crs));
	aml_bytes(&buf, crs, sizeof(crs));
	aml_byte(&dev, AML_NAME);
	aml_bytes(&dev, "_CRS", 4);
	aml_pkg(&dev, &bufop, 1, &buf);
	aml_bytes(&m, "_EVT", 4);
	aml_byte(&m, 0x01);                         /* one argument, not serialized */
	aml_bytes(&m, notify, sizeof(notify));
	aml_pkg(&dev, &methodop, 1, &m);
	aml_pkg(a, devop, 2, &dev);
}

/* A table header at `gpa` of acpi_build()'s area, or NULL: in bounds, its
 * length at least a header's and at most `max`, its checksum right. */
static struct acpi_header *acpi_table_at(struct guest_mem *m, uint64_t gpa, uint32_t max)
{
	struct acpi_header *h;

	if (gpa < BOOT_ACPI_ADDR || gpa > BOOT_ACPI_END - sizeof(*h))
		return NULL;
	h = guest_mem_ptr(m, gpa, sizeof(*h));
	if (!h || h->length < sizeof(*h) || h->length > max || h->length > BOOT_ACPI_END - gpa)
		return NULL;
	if (boot_checksum(h, h->length) != 0)
		return NULL;
	return h;
}

int acpi_add_vmgenid(struct guest_mem *m, uint64_t guid_gpa, unsigned gsi, struct error *e)
{
	static const uint8_t scope = AML_SCOPE;
	struct acpi_rsdp *r = guest_mem_ptr(m, BOOT_ACPI_ADDR, sizeof(*r));
	struct acpi_header *x, *h;
	struct aml aml = { .len = 0 }, sb = { .len = 0 };
	uint64_t ents[16];
	uint8_t *p;
	int n;

	static const uint8_t zero[sizeof(*r)];

	if (r && !memcmp(r, zero, sizeof(*r)))
		return 1;                   /* RAM still empty: it comes later */
	if (!r || memcmp(r->signature, "RSD PTR ", 8) || r->revision != 2 ||
	    boot_checksum(r, sizeof(*r)) != 0)
		return error_set(e, EXIT_USAGE, "VM generation ID: the guest has no ACPI tables of "
				 "Shoal's (a firmware boot brings its own), so it could not find the device");
	x = acpi_table_at(m, r->xsdt_addr, sizeof(*x) + sizeof(ents) - 8);
	if (!x || memcmp(x->signature, "XSDT", 4) || (x->length - sizeof(*x)) % 8)
		return error_set(e, EXIT_HOST, "VM generation ID: the guest's XSDT is damaged");
	n = (int)((x->length - sizeof(*x)) / 8);
	memcpy(ents, x + 1, (size_t)n * 8);
	for (int i = 0; i < n; i++) {
		h = acpi_table_at(m, ents[i], ACPI_TABLES_END - BOOT_ACPI_ADDR);
		if (h && !memcmp(h->signature, "SSDT", 4) &&
		    !memcmp(h->oem_table_id, ACPI_VMGENID_OEM_TABLE, 8))
			return 1;           /* a restored VM: its memory has it */
	}

	aml_bytes(&sb, "\\_SB_", 5);
	aml_vgen(&sb, guid_gpa);
	aml_vged(&sb, gsi);
	aml_pkg(&aml, &scope, 1, &sb);
	if (aml.overflow || sizeof(*h) + aml.len > ACPI_VMGENID_XSDT - ACPI_VMGENID_SSDT)
		return error_set(e, EXIT_HOST, "VM generation ID: its SSDT does not fit");
	p = guest_mem_ptr(m, ACPI_VMGENID_PAGE, BOOT_ACPI_END - ACPI_VMGENID_PAGE);
	if (!p)
		return error_set(e, EXIT_HOST, "VM generation ID: no guest memory at 0x%llx",
				 (unsigned long long)ACPI_VMGENID_PAGE);
	memset(p, 0, BOOT_ACPI_END - ACPI_VMGENID_PAGE);
	h = (struct acpi_header *)(p + (ACPI_VMGENID_SSDT - ACPI_VMGENID_PAGE));
	acpi_header_init(h, "SSDT", (uint32_t)(sizeof(*h) + aml.len), 2);
	memcpy(h->oem_table_id, ACPI_VMGENID_OEM_TABLE, 8);
	memcpy(h + 1, aml.buf, aml.len);
	acpi_finish(h);

	ents[n++] = ACPI_VMGENID_SSDT;
	x = (struct acpi_header *)(p + (ACPI_VMGENID_XSDT - ACPI_VMGENID_PAGE));
	acpi_header_init(x, "XSDT", (uint32_t)(sizeof(*x) + (size_t)n * 8), 1);
	memcpy(x + 1, ents, (size_t)n * 8);
	acpi_finish(x);
	r->checksum = 0;
	r->ext_checksum = 0;
	acpi_fill_rsdp(r, ACPI_VMGENID_XSDT);
	guest_mem_dirty_gpa(m, BOOT_ACPI_ADDR, sizeof(*r));
	guest_mem_dirty_gpa(m, ACPI_VMGENID_PAGE, BOOT_ACPI_END - ACPI_VMGENID_PAGE);
	return 0;
}

/* ---- ACPI for a firmware boot: fw_cfg's table-loader (boot/acpi.h) ---- */

#define LOADER_ALLOCATE     1
#define LOADER_ADD_POINTER  2
#define LOADER_ADD_CHECKSUM 3
#define LOADER_ZONE_HIGH    1
#define LOADER_ZONE_FSEG    2
#define LOADER_FILESZ       56
#define LOADER_ENTRY        128
#define LOADER_MAX          (2 + 16 + 16)   /* allocations, pointers, checksums */

struct loader {
	uint8_t *buf;
	int n;
};

static uint8_t *loader_entry(struct loader *l, uint32_t cmd)
{
	uint8_t *p = l->buf + (size_t)l->n++ * LOADER_ENTRY;

	memset(p, 0, LOADER_ENTRY);
	memcpy(p, &(uint32_t){ htole32(cmd) }, 4);
	return p + 4;
}

static void loader_name(uint8_t *at, const char *name)
{
	memcpy(at, name, strlen(name) + 1);     /* names here are short literals */
}

static void loader_u32(uint8_t *at, uint32_t v)
{
	v = htole32(v);
	memcpy(at, &v, 4);
}

static void loader_alloc(struct loader *l, const char *file, uint32_t align, uint8_t zone)
{
	uint8_t *p = loader_entry(l, LOADER_ALLOCATE);

	loader_name(p, file);
	loader_u32(p + LOADER_FILESZ, align);
	p[LOADER_FILESZ + 4] = zone;
}

/* The `size` bytes at `offset` of `dst` hold an offset into `src`; the
 * firmware adds the address where it placed `src`. */
static void loader_pointer(struct loader *l, const char *dst, const char *src,
			   uint32_t offset, uint8_t size)
{
	uint8_t *p = loader_entry(l, LOADER_ADD_POINTER);

	loader_name(p, dst);
	loader_name(p + LOADER_FILESZ, src);
	loader_u32(p + 2 * LOADER_FILESZ, offset);
	p[2 * LOADER_FILESZ + 4] = size;
}

/* The byte at `offset` of `file` is set so that [start, start+len) sums to 0. */
static void loader_checksum(struct loader *l, const char *file, uint32_t offset,
			    uint32_t start, uint32_t len)
{
	uint8_t *p = loader_entry(l, LOADER_ADD_CHECKSUM);

	loader_name(p, file);
	loader_u32(p + LOADER_FILESZ, offset);
	loader_u32(p + LOADER_FILESZ + 4, start);
	loader_u32(p + LOADER_FILESZ + 8, len);
}

/* A table of the scratch area at `gpa`, checked like acpi_table_at. */
static struct acpi_header *fw_table(struct guest_mem *m, uint64_t gpa, uint64_t *end)
{
	struct acpi_header *h = acpi_table_at(m, gpa, BOOT_ACPI_END - BOOT_ACPI_ADDR);

	if (h && gpa + h->length > *end)
		*end = gpa + h->length;
	return h;
}

/* Turn the 4- or 8-byte guest-physical address at `field` of the tables
 * (which start at BOOT_ACPI_ADDR) into an offset, and say so in the loader. */
static void fw_pointer(struct loader *l, uint8_t *tables, void *field, uint8_t size)
{
	uint64_t v = 0;

	memcpy(&v, field, size);
	v -= BOOT_ACPI_ADDR;
	memcpy(field, &v, size);
	loader_pointer(l, ACPI_FW_TABLES, ACPI_FW_TABLES, (uint32_t)((uint8_t *)field - tables), size);
}

void acpi_fw_files_free(struct acpi_fw_files *f)
{
	for (int i = 0; i < ACPI_FW_NFILES; i++) {
		free((void *)f->files[i].data);
		f->files[i].data = NULL;
	}
}

int acpi_build_fw_cfg(uint64_t ram_size, int ncpus, struct acpi_fw_files *out, struct error *e)
{
	const uint64_t area = BOOT_ACPI_END - BOOT_ACPI_ADDR;
	struct guest_mem scratch = { .fd = -1, .size = ram_size, .nregions = 1 };
	struct loader l = { .n = 0 };
	struct acpi_rsdp *r, *rsdp = NULL;
	struct acpi_header *x, *h;
	struct acpi_fadt *f = NULL;
	uint64_t end, ents[16];
	uint8_t *buf;
	int n;

	memset(out, 0, sizeof(*out));
	buf = calloc(1, area);
	l.buf = calloc(LOADER_MAX, LOADER_ENTRY);
	rsdp = calloc(1, sizeof(*rsdp));
	if (!buf || !l.buf || !rsdp) {
		free(buf);
		free(l.buf);
		free(rsdp);
		return error_set(e, EXIT_HOST, "ACPI for the firmware: out of memory");
	}
	scratch.host = buf;
	scratch.region[0] = (struct guest_region){ .gpa = BOOT_ACPI_ADDR, .size = area, .hva = buf };
	if (!acpi_build_tables(&scratch, ncpus, 1, e))
		goto fail;

	/* Walk what was built: RSDP -> XSDT -> tables, FADT -> DSDT, FACS. */
	r = (struct acpi_rsdp *)buf;
	end = BOOT_ACPI_ADDR + sizeof(*r);
	x = fw_table(&scratch, r->xsdt_addr, &end);
	if (!x || (x->length - sizeof(*x)) % 8 || x->length - sizeof(*x) > sizeof(ents))
		goto damaged;
	n = (int)((x->length - sizeof(*x)) / 8);
	memcpy(ents, x + 1, (size_t)n * 8);
	for (int i = 0; i < n; i++) {
		h = fw_table(&scratch, ents[i], &end);
		if (!h)
			goto damaged;
		if (!memcmp(h->signature, "FACP", 4) && h->length >= sizeof(*f))
			f = (struct acpi_fadt *)h;
	}
	if (!f || !fw_table(&scratch, f->x_dsdt, &end) || f->dsdt != f->x_dsdt ||
	    f->firmware_ctrl || f->x_firmware_ctrl < BOOT_ACPI_ADDR ||
	    f->x_firmware_ctrl > BOOT_ACPI_END - sizeof(struct acpi_facs))
		goto damaged;
	if (f->x_firmware_ctrl + sizeof(struct acpi_facs) > end)
		end = f->x_firmware_ctrl + sizeof(struct acpi_facs);

	/* The loader: place both files, link the pointers, fix the checksums.
	 * The tables file starts at BOOT_ACPI_ADDR (64-byte aligned, so the
	 * FACS stays aligned) with the RSDP's bytes there zeroed. */
	*rsdp = *r;
	memset(buf, 0, sizeof(*r));
	loader_alloc(&l, ACPI_FW_TABLES, 64, LOADER_ZONE_HIGH);
	loader_alloc(&l, ACPI_FW_RSDP, 16, LOADER_ZONE_FSEG);
	for (int i = 0; i < n; i++)
		fw_pointer(&l, buf, (uint8_t *)(x + 1) + i * 8, 8);
	loader_checksum(&l, ACPI_FW_TABLES, (uint32_t)((uint8_t *)&x->checksum - buf),
			(uint32_t)((uint8_t *)x - buf), x->length);
	fw_pointer(&l, buf, (uint8_t *)f + offsetof(struct acpi_fadt, dsdt), 4);
	fw_pointer(&l, buf, (uint8_t *)f + offsetof(struct acpi_fadt, x_dsdt), 8);
	fw_pointer(&l, buf, (uint8_t *)f + offsetof(struct acpi_fadt, x_firmware_ctrl), 8);
	loader_checksum(&l, ACPI_FW_TABLES, (uint32_t)((uint8_t *)&f->h.checksum - buf),
			(uint32_t)((uint8_t *)f - buf), f->h.length);
	rsdp->xsdt_addr -= BOOT_ACPI_ADDR;
	loader_pointer(&l, ACPI_FW_RSDP, ACPI_FW_TABLES, offsetof(struct acpi_rsdp, xsdt_addr), 8);
	loader_checksum(&l, ACPI_FW_RSDP, offsetof(struct acpi_rsdp, checksum), 0, 20);
	loader_checksum(&l, ACPI_FW_RSDP, offsetof(struct acpi_rsdp, ext_checksum), 0, sizeof(*rsdp));

	out->files[0] = (struct fw_cfg_file){ ACPI_FW_TABLES, buf, end - BOOT_ACPI_ADDR };
	out->files[1] = (struct fw_cfg_file){ ACPI_FW_RSDP, rsdp, sizeof(*rsdp) };
	out->files[2] = (struct fw_cfg_file){ ACPI_FW_LOADER, l.buf, (size_t)l.n * LOADER_ENTRY };
	return 0;

damaged:
	error_set(e, EXIT_HOST, "ACPI for the firmware: the tables just built do not read back");
fail:
	free(buf);
	free(l.buf);
	free(rsdp);
	return -1;
}
