/*
 * mptable.c - the Intel MultiProcessor Specification 1.4 tables.
 *
 * ACPI's MADT is what modern guests read; the MP table is the fallback for
 * kernels booted with acpi=off and for small guests that do not parse ACPI.
 * It says the same things: one processor entry per vCPU (APIC ids 0..n-1,
 * cpu 0 the bootstrap processor), one ISA bus, one IOAPIC, ISA IRQ n wired
 * to IOAPIC pin n (KVM's default GSI routing, hence no pin-2 timer quirk),
 * and LINT0 = ExtINT, LINT1 = NMI on every local APIC (virtual wire mode).
 *
 * Placement: the 16-byte floating pointer sits at BOOT_MPTABLE_ADDR, the
 * last KiB of base memory, where Linux looks first.  The configuration
 * table is up to ~1.5 KiB for 64 vCPUs, more than the EBDA's 1 KiB, so it
 * goes at BOOT_MPCONF_ADDR in the reserved BIOS area, after the ACPI tables.
 * Both checksums make their structures sum to zero.
 */
#include "boot/boot.h"

#include <string.h>

#include "base/exitcode.h"
#include "boot/boot_priv.h"
#include "base/layout.h"

struct mpf_intel {                  /* floating pointer structure */
	char     signature[4];      /* "_MP_" */
	uint32_t physptr;           /* configuration table */
	uint8_t  length;            /* in 16-byte units: 1 */
	uint8_t  specification;     /* 4: version 1.4 */
	uint8_t  checksum;
	uint8_t  feature1;          /* 0: a configuration table is present */
	uint8_t  feature2;          /* bit 7 clear: virtual wire mode */
	uint8_t  feature3[3];
} __attribute__((packed));
_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer layout");

struct mpc_table {                  /* configuration table header */
	char     signature[4];      /* "PCMP" */
	uint16_t length;            /* base table incl. entries */
	uint8_t  spec;              /* 4 */
	uint8_t  checksum;
	char     oem[8];
	char     product[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t count;             /* number of entries */
	uint32_t lapic;             /* local APIC address */
	uint16_t ext_length;
	uint8_t  ext_checksum;
	uint8_t  reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_table) == 44, "MP config table layout");

struct mpc_cpu {                    /* entry type 0 */
	uint8_t  type;
	uint8_t  apicid;
	uint8_t  apicver;
	uint8_t  cpuflag;           /* bit 0 enabled, bit 1 bootstrap */
	uint32_t cpufeature;        /* CPUID(1).EAX signature */
	uint32_t featureflag;       /* CPUID(1).EDX */
	uint32_t reserved[2];
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_cpu) == 20, "MP processor entry layout");

struct mpc_bus {                    /* entry type 1 */
	uint8_t  type;
	uint8_t  busid;
	char     bustype[6];
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_bus) == 8, "MP bus entry layout");

struct mpc_ioapic {                 /* entry type 2 */
	uint8_t  type;
	uint8_t  apicid;
	uint8_t  apicver;
	uint8_t  flags;             /* bit 0: usable */
	uint32_t apicaddr;
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_ioapic) == 8, "MP IOAPIC entry layout");

struct mpc_intsrc {                 /* entry types 3 (I/O) and 4 (local) */
	uint8_t  type;
	uint8_t  irqtype;           /* 0 INT, 1 NMI, 2 SMI, 3 ExtINT */
	uint16_t irqflag;           /* 0: conforms to the bus */
	uint8_t  srcbus;
	uint8_t  srcbusirq;
	uint8_t  dstapic;           /* IOAPIC id, or LAPIC id (0xff: all) */
	uint8_t  dstirq;            /* IOAPIC pin, or LINT# */
} __attribute__((packed));
_Static_assert(sizeof(struct mpc_intsrc) == 8, "MP interrupt entry layout");

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_IRQ_INT, MP_IRQ_NMI, MP_IRQ_SMI, MP_IRQ_EXTINT };

#define MP_LAPIC_VERSION   0x14
#define MP_IOAPIC_VERSION  0x11
#define MP_IOAPIC_ID       0        /* as in the MADT and KVM's reset value */
#define MP_CPU_ENABLED     0x01
#define MP_CPU_BSP         0x02
#define MP_CPU_SIGNATURE   0x600    /* family 6 */
#define MP_CPU_FEATURES    0x201    /* FPU, APIC */
#define MP_ISA_IRQS        16

/* Bytes the configuration table takes for `ncpus` processors. */
static size_t mptable_size(int ncpus)
{
	return sizeof(struct mpc_table) + (size_t)ncpus * sizeof(struct mpc_cpu) +
	       sizeof(struct mpc_bus) + sizeof(struct mpc_ioapic) +
	       (MP_ISA_IRQS + 2) * sizeof(struct mpc_intsrc);
}

/* Write the entries after the header at `p`; returns the entry count. */
static uint16_t mptable_entries(uint8_t *p, int ncpus)
{
	uint16_t n = 0;

	for (int i = 0; i < ncpus; i++, n++, p += sizeof(struct mpc_cpu)) {
		struct mpc_cpu c = {
			.type = MP_PROCESSOR, .apicid = (uint8_t)i, .apicver = MP_LAPIC_VERSION,
			.cpuflag = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
			.cpufeature = MP_CPU_SIGNATURE, .featureflag = MP_CPU_FEATURES,
		};
		memcpy(p, &c, sizeof(c));
	}
	struct mpc_bus bus = { .type = MP_BUS, .busid = 0 };
	memcpy(bus.bustype, "ISA   ", 6);
	memcpy(p, &bus, sizeof(bus));
	p += sizeof(bus), n++;
	struct mpc_ioapic io = { .type = MP_IOAPIC, .apicid = MP_IOAPIC_ID,
				 .apicver = MP_IOAPIC_VERSION, .flags = 1,
				 .apicaddr = (uint32_t)GUEST_IOAPIC_BASE };
	memcpy(p, &io, sizeof(io));
	p += sizeof(io), n++;
	for (int irq = 0; irq < MP_ISA_IRQS; irq++, n++, p += sizeof(struct mpc_intsrc)) {
		struct mpc_intsrc s = { .type = MP_INTSRC, .irqtype = MP_IRQ_INT, .srcbus = 0,
					.srcbusirq = (uint8_t)irq, .dstapic = MP_IOAPIC_ID,
					.dstirq = (uint8_t)irq };
		memcpy(p, &s, sizeof(s));
	}
	struct mpc_intsrc lint[2] = {
		{ .type = MP_LINTSRC, .irqtype = MP_IRQ_EXTINT, .dstapic = 0xff, .dstirq = 0 },
		{ .type = MP_LINTSRC, .irqtype = MP_IRQ_NMI, .dstapic = 0xff, .dstirq = 1 },
	};
	memcpy(p, lint, sizeof(lint));
	return (uint16_t)(n + 2);
}

int mptable_build(struct guest_mem *m, int ncpus, struct error *e)
{
	size_t len = mptable_size(ncpus);
	struct mpf_intel *mpf;
	struct mpc_table *mpc;

	if (ncpus < 1 || ncpus > GUEST_MAX_VCPUS)
		return error_set(e, EXIT_USAGE, "MP table: %d vCPUs is out of range (1..%d)",
				 ncpus, GUEST_MAX_VCPUS);
	_Static_assert(BOOT_MPCONF_END - BOOT_MPCONF_ADDR >=
		       sizeof(struct mpc_table) + GUEST_MAX_VCPUS * sizeof(struct mpc_cpu) + 256,
		       "MP configuration table area too small");
	mpf = guest_mem_ptr(m, BOOT_MPTABLE_ADDR, sizeof(*mpf));
	mpc = guest_mem_ptr(m, BOOT_MPCONF_ADDR, len);
	if (!mpf || !mpc)
		return error_set(e, EXIT_HOST, "MP table: no guest RAM at 0x%llx",
				 (unsigned long long)BOOT_MPTABLE_ADDR);
	memset(mpc, 0, len);
	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)len;
	mpc->spec = 4;
	memcpy(mpc->oem, "SHOAL   ", 8);
	memcpy(mpc->product, "SHOALVM     ", 12);
	mpc->lapic = (uint32_t)GUEST_LAPIC_BASE;
	mpc->count = mptable_entries((uint8_t *)(mpc + 1), ncpus);
	mpc->checksum = boot_checksum(mpc, len);

	memset(mpf, 0, sizeof(*mpf));
	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)BOOT_MPCONF_ADDR;
	mpf->length = 1;
	mpf->specification = 4;
	mpf->checksum = boot_checksum(mpf, sizeof(*mpf));
	return 0;
}
