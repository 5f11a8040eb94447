/*
 * cpuid.c - CPUID filtering, topology and templates (see cpuid.h).
 *
 * Bits are named where they are cleared so a reader can audit what the
 * guest is denied and why.  Bit positions are from the Intel SDM vol. 2A
 * (CPUID) and the AMD APM vol. 3.
 */
#include "vmm/cpuid.h"

#include <stdlib.h>
#include <string.h>

#include "util/exitcode.h"

#define BIT(n) (1u << (n))

/* Leaf 1 ECX */
#define F1C_SSE3      BIT(0)
#define F1C_PCLMUL    BIT(1)
#define F1C_DTES64    BIT(2)
#define F1C_MONITOR   BIT(3)
#define F1C_DSCPL     BIT(4)
#define F1C_VMX       BIT(5)
#define F1C_SMX       BIT(6)
#define F1C_EST       BIT(7)
#define F1C_TM2       BIT(8)
#define F1C_SSSE3     BIT(9)
#define F1C_CX16      BIT(13)
#define F1C_XTPR      BIT(14)
#define F1C_PDCM      BIT(15)
#define F1C_SSE41     BIT(19)
#define F1C_SSE42     BIT(20)
#define F1C_X2APIC    BIT(21)
#define F1C_POPCNT    BIT(23)
#define F1C_TSCDL     BIT(24)
#define F1C_XSAVE     BIT(26)
#define F1C_OSXSAVE   BIT(27)
#define F1C_AVX       BIT(28)
#define F1C_HYPERVISOR BIT(31)
/* Leaf 1 EDX: the x86-64 baseline set, FPU..SSE2 */
#define F1D_BASE      0x078bfbffu   /* fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 */
#define F1D_DS        BIT(21)
#define F1D_ACPI      BIT(22)
#define F1D_HTT       BIT(28)
#define F1D_TM        BIT(29)
#define F1D_PBE       BIT(31)
/* Leaf 0x80000001 */
#define E1C_LAHF      BIT(0)
#define E1C_SVM       BIT(2)
#define E1D_BASE      (BIT(11) | BIT(20) | BIT(29))  /* syscall nx lm */

const struct cpu_template cpu_templates[] = {
	{
		.name = "host",
		.what = "everything this host and KVM offer (after filtering); not portable",
		.leaf1_ecx = ~0u, .leaf1_edx = ~0u,
		.leaf7_ebx = ~0u, .leaf7_ecx = ~0u, .leaf7_edx = ~0u,
		.ext1_ecx = ~0u, .ext1_edx = ~0u,
		.allow_xsave_leaf = 1,
	},
	{
		.name = "baseline",
		.what = "x86-64-v2 (SSE4.2, POPCNT, CX16), no AVX/XSAVE: portable across hosts",
		.leaf1_ecx = F1C_SSE3 | F1C_SSSE3 | F1C_CX16 | F1C_SSE41 | F1C_SSE42 |
			     F1C_POPCNT | F1C_X2APIC | F1C_TSCDL | F1C_HYPERVISOR,
		.leaf1_edx = F1D_BASE | F1D_HTT,
		.ext1_ecx = E1C_LAHF, .ext1_edx = E1D_BASE,
		.req1_ecx = F1C_SSE3 | F1C_SSSE3 | F1C_CX16 | F1C_SSE41 | F1C_SSE42 | F1C_POPCNT,
		.req1_edx = F1D_BASE,
	},
	{
		.name = "minimal",
		.what = "x86-64 with SSE2 only: the oldest 64-bit processor",
		.leaf1_ecx = F1C_HYPERVISOR | F1C_X2APIC,
		.leaf1_edx = F1D_BASE | F1D_HTT,
		.ext1_ecx = 0, .ext1_edx = E1D_BASE,
		.req1_edx = F1D_BASE,
	},
};
const int cpu_templates_count = sizeof(cpu_templates) / sizeof(cpu_templates[0]);

static const struct { uint32_t bit; const char *name; } leaf1_names[] = {
	{ F1C_SSE3, "sse3" }, { F1C_SSSE3, "ssse3" }, { F1C_CX16, "cx16" },
	{ F1C_SSE41, "sse4_1" }, { F1C_SSE42, "sse4_2" }, { F1C_POPCNT, "popcnt" },
};

const struct cpu_template *cpu_template_find(const char *name)
{
	if (!name)
		return &cpu_templates[0];
	for (int i = 0; i < cpu_templates_count; i++)
		if (!strcmp(cpu_templates[i].name, name))
			return &cpu_templates[i];
	return NULL;
}

struct kvm_cpuid2 *cpuid_alloc(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(c->entries[0]));

	if (c)
		c->nent = CPUID_MAX_ENTRIES;
	return c;
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *en = &c->entries[i];

		if (en->function == fn &&
		    (!(en->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || en->index == idx))
			return en;
	}
	return NULL;
}

static void cpuid_remove(struct kvm_cpuid2 *c, uint32_t fn)
{
	uint32_t j = 0;

	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function != fn)
			c->entries[j++] = c->entries[i];
	c->nent = j;
}

static struct kvm_cpuid_entry2 *cpuid_add(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx, uint32_t flags)
{
	struct kvm_cpuid_entry2 *en;

	if (c->nent >= CPUID_MAX_ENTRIES)
		return NULL;
	en = &c->entries[c->nent++];
	memset(en, 0, sizeof(*en));
	en->function = fn;
	en->index = idx;
	en->flags = flags;
	return en;
}

/* Ceiling log2 for topology shifts. */
static uint32_t order(int n)
{
	uint32_t s = 0;

	while ((1 << s) < n)
		s++;
	return s;
}

/* Leaf 1: features, APIC id, logical count. */
static void cpuid_leaf1(struct kvm_cpuid2 *c, const struct cpu_template *t, int index, int ncpus)
{
	struct kvm_cpuid_entry2 *en = cpuid_find(c, 1, 0);

	if (!en)
		return;
	en->ecx &= ~(F1C_DTES64 | F1C_MONITOR | F1C_DSCPL | F1C_VMX | F1C_SMX | F1C_EST |
		     F1C_TM2 | F1C_XTPR | F1C_PDCM | F1C_OSXSAVE);
	en->ecx |= F1C_HYPERVISOR;
	en->edx &= ~(F1D_DS | F1D_ACPI | F1D_TM | F1D_PBE);
	en->ecx &= t->leaf1_ecx;
	en->edx &= t->leaf1_edx;
	en->ebx = (en->ebx & 0x0000ffffu) | ((uint32_t)index << 24) |
		  ((uint32_t)(ncpus > 255 ? 255 : ncpus) << 16);
	if (ncpus > 1)
		en->edx |= F1D_HTT;
	else
		en->edx &= ~F1D_HTT;
}

/* Leaf 4 (Intel cache topology) and 0xB (x2APIC topology): ncpus cores
 * in one package, one thread each. */
static void cpuid_topology(struct kvm_cpuid2 *c, int index, int ncpus)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *en = &c->entries[i];

		if (en->function == 4 && (en->eax & 0x1f)) {
			en->eax &= 0x3ff;  /* keep type, level, self-init, fully-assoc */
			en->eax |= (uint32_t)(ncpus - 1 > 63 ? 63 : ncpus - 1) << 26;
		}
		if (en->function == 0xb) {
			if (en->index == 0) {
				en->eax = 0; en->ebx = 1; en->ecx = 0x100;
			} else if (en->index == 1) {
				en->eax = order(ncpus); en->ebx = (uint32_t)ncpus; en->ecx = 0x201;
			} else {
				en->eax = 0; en->ebx = 0; en->ecx = en->index;
			}
			en->edx = (uint32_t)index;
		}
	}
	cpuid_remove(c, 0x1f);
}

/* Leaf 7: structured extended features masked by the template. */
static void cpuid_leaf7(struct kvm_cpuid2 *c, const struct cpu_template *t)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *en = &c->entries[i];

		if (en->function != 7)
			continue;
		if (en->index == 0) {
			en->ebx &= t->leaf7_ebx;
			en->ecx &= t->leaf7_ecx;
			en->edx &= t->leaf7_edx;
		} else if (t->leaf7_ebx != ~0u) {
			en->eax = en->ebx = en->ecx = en->edx = 0;
		}
	}
}

/* Hypervisor leaves: KVM's signature (so Linux uses kvmclock and PV
 * features KVM offers) and the timing leaf with the TSC frequency. */
static void cpuid_hypervisor(struct kvm_cpuid2 *c, uint32_t tsc_khz)
{
	struct kvm_cpuid_entry2 *en = cpuid_find(c, 0x40000000, 0);

	if (!en)
		en = cpuid_add(c, 0x40000000, 0, 0);
	if (!en)
		return;
	memcpy(&en->ebx, "KVMK", 4);
	memcpy(&en->ecx, "VMKV", 4);
	memcpy(&en->edx, "M\0\0\0", 4);
	if (!tsc_khz)
		return;
	en->eax = 0x40000010;
	en = cpuid_find(c, 0x40000010, 0);
	if (!en)
		en = cpuid_add(c, 0x40000010, 0, 0);
	if (!en)
		return;
	en->eax = tsc_khz;
	en->ebx = 1000000;   /* KVM's local APIC timer runs at 1 GHz */
	en->ecx = en->edx = 0;
}

static int cpuid_check_required(const struct kvm_cpuid2 *host, const struct cpu_template *t,
				struct error *e)
{
	uint32_t ecx = 0, edx = 0;

	for (uint32_t i = 0; i < host->nent; i++)
		if (host->entries[i].function == 1) {
			ecx = host->entries[i].ecx;
			edx = host->entries[i].edx;
		}
	for (size_t i = 0; i < sizeof(leaf1_names) / sizeof(leaf1_names[0]); i++)
		if ((t->req1_ecx & leaf1_names[i].bit) && !(ecx & leaf1_names[i].bit))
			return error_set(e, EXIT_RESOURCE,
					 "cpu template %s needs %s, which this host lacks",
					 t->name, leaf1_names[i].name);
	if ((edx & t->req1_edx) != t->req1_edx)
		return error_set(e, EXIT_RESOURCE,
				 "cpu template %s needs x86-64 base features (leaf 1 edx %08x), this host has %08x",
				 t->name, t->req1_edx, edx);
	return 0;
}

int cpuid_build(const struct kvm_cpuid2 *host, const struct cpu_template *t,
		int index, int ncpus, uint32_t tsc_khz,
		struct kvm_cpuid2 *out, struct error *e)
{
	struct kvm_cpuid_entry2 *en;

	if (cpuid_check_required(host, t, e))
		return -1;
	out->nent = host->nent > CPUID_MAX_ENTRIES ? CPUID_MAX_ENTRIES : host->nent;
	memcpy(out->entries, host->entries, out->nent * sizeof(out->entries[0]));
	cpuid_leaf1(out, t, index, ncpus);
	cpuid_topology(out, index, ncpus);
	cpuid_leaf7(out, t);
	cpuid_remove(out, 6);    /* thermal and power management */
	cpuid_remove(out, 0xa);  /* architectural PMU: not virtualized */
	if (!t->allow_xsave_leaf)
		cpuid_remove(out, 0xd);
	en = cpuid_find(out, 0x80000001, 0);
	if (en) {
		en->ecx &= ~E1C_SVM;
		en->ecx &= t->ext1_ecx;
		en->edx &= t->ext1_edx;
	}
	cpuid_hypervisor(out, tsc_khz);
	return 0;
}
