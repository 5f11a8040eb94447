/*
 * cpuid.c - CPUID filtering, topology and templates (see cpuid.h).
 *
 * Bits are named where they are cleared so a reader can audit what the
 * guest is denied and why, and where they are required, with the reason for
 * each (X64_REQ_EDX below).  Bit positions are from the Intel SDM vol. 2A
 * (CPUID) and the AMD APM vol. 3.
 */
#include "vmm/cpuid.h"

#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

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
/* Leaf 1 EDX */
#define F1D_FPU       BIT(0)
#define F1D_VME       BIT(1)
#define F1D_DE        BIT(2)
#define F1D_PSE       BIT(3)
#define F1D_TSC       BIT(4)
#define F1D_MSR       BIT(5)
#define F1D_PAE       BIT(6)
#define F1D_MCE       BIT(7)
#define F1D_CX8       BIT(8)
#define F1D_APIC      BIT(9)
#define F1D_SEP       BIT(11)
#define F1D_MTRR      BIT(12)
#define F1D_PGE       BIT(13)
#define F1D_MCA       BIT(14)
#define F1D_CMOV      BIT(15)
#define F1D_PAT       BIT(16)
#define F1D_PSE36     BIT(17)
#define F1D_CLFLUSH   BIT(19)
#define F1D_DS        BIT(21)
#define F1D_ACPI      BIT(22)
#define F1D_MMX       BIT(23)
#define F1D_FXSR      BIT(24)
#define F1D_SSE       BIT(25)
#define F1D_SSE2      BIT(26)
#define F1D_HTT       BIT(28)
#define F1D_TM        BIT(29)
#define F1D_PBE       BIT(31)
/* Leaf 0x80000001 */
#define E1C_LAHF      BIT(0)
#define E1C_SVM       BIT(2)
#define E1D_SYSCALL   BIT(11)
#define E1D_NX        BIT(20)
#define E1D_LM        BIT(29)

/*
 * What every template requires of the host: the processor a 64-bit guest
 * cannot do without.  Each bit is here for a reason from one of four
 * places: long mode itself (AMD APM vol. 2 "Enabling and Activating Long
 * Mode", Intel SDM vol. 3A "Initializing IA-32e Mode"); the x86-64 psABI
 * baseline that every 64-bit compiler and C library assumes (CMOV, CX8,
 * FPU, FXSR, MMX, OSFXSR, SCE, SSE, SSE2); Linux's x86-64 minimum
 * (arch/x86/include/asm/required-features.h, REQUIRED_MASK0/1, which
 * verify_cpu checks before the kernel runs; head_64.S); and Shoal's machine.
 *
 *   FPU      x87: psABI (long double, the x87 control word); Linux NEED_FPU
 *   PSE      Linux NEED_PSE: a kernel built without PARAVIRT_XXL stops in
 *            verify_cpu without it
 *   TSC      RDTSC: kvmclock (the templates present KVM's signature), the
 *            TSC frequency leaf 0x40000010 and the test guest are all
 *            TSC-based
 *   MSR      RDMSR/WRMSR: long mode is switched on in EFER, an MSR;
 *            Linux NEED_MSR
 *   PAE      long mode requires CR4.PAE (its 4-level paging extends PAE
 *            paging); Linux NEED_PAE
 *   CX8      CMPXCHG8B: psABI; Linux NEED_CX8
 *   APIC     Shoal's machine has only APICs: the MADT and MP table list a
 *            local APIC per vCPU, APs start by INIT/SIPI through it, and
 *            interrupts reach vCPUs through it from the in-kernel IOAPIC
 *   PGE      Linux's startup_64 sets CR4.PGE unconditionally, and KVM treats
 *            CR4.PGE as reserved when CPUID lacks PGE: a #GP that early is
 *            a triple fault
 *   CMOV     psABI; Linux NEED_CMOV
 *   MMX      psABI (its registers alias the x87 stack)
 *   FXSR     FXSAVE/FXRSTOR, how SSE state is saved without XSAVE; psABI
 *            (OSFXSR); Linux NEED_FXSR
 *   SSE SSE2 psABI: floating point is passed in XMM registers; Linux
 *            NEED_XMM, NEED_XMM2
 *   SYSCALL  the 64-bit system call; SYSENTER is #UD in 64-bit mode on AMD;
 *            psABI (SCE)
 *   LM       long mode; Linux NEED_LM
 *
 * Not required, because a 64-bit guest runs without them, though most
 * processors have them (`minimal` and `host` pass them on when the host
 * does):
 *   VME      virtual-8086 mode extensions: long mode has no virtual-8086
 *            mode.  QEMU's software CPU, under the KVM box, lacks it (leaf
 *            1 edx 0f8bfbfd), which is why requiring it was wrong
 *   DE       I/O breakpoints (CR4.DE): debuggers' business, not the guest's
 *   PSE36    36-bit addresses in 32-bit paging's 4 MiB pages: not used by
 *            4-level paging
 *   SEP      SYSENTER: #UD in 64-bit mode on AMD; Linux uses it only for
 *            32-bit programs on Intel, with int 0x80 to fall back on
 *   MCE MCA MTRR PAT CLFLUSH   machine check and cache control: present on
 *            every x86-64 processor, but a guest boots without them (Linux
 *            then skips machine-check handling and write-combining)
 *   NX       execute-disable: firmware can turn it off on Intel; Linux
 *            runs without it
 */
#define X64_REQ_EDX  (F1D_FPU | F1D_PSE | F1D_TSC | F1D_MSR | F1D_PAE | F1D_CX8 | \
		      F1D_APIC | F1D_PGE | F1D_CMOV | F1D_MMX | F1D_FXSR | F1D_SSE | F1D_SSE2)
#define X64_REQ_EXT_EDX  (E1D_SYSCALL | E1D_LM)
/* The leaf 1 EDX bits above that are not required, passed on when present. */
#define X64_OPT_EDX  (F1D_VME | F1D_DE | F1D_MCE | F1D_SEP | F1D_MTRR | F1D_MCA | \
		      F1D_PAT | F1D_PSE36 | F1D_CLFLUSH)

/*
 * baseline is x86-64-v2 as the psABI defines it (CMPXCHG16B, LAHF-SAHF,
 * POPCNT, SSE3, SSE4_1, SSE4_2, SSSE3; glibc's x86-64-v2 check tests the
 * same list) on top of the 64-bit minimum.  A VM that moves between hosts
 * must see the same processor on each, so baseline shows only what it
 * requires, plus what KVM's in-kernel APIC and Shoal supply on every host
 * (x2APIC, the TSC-deadline timer, the hypervisor bit, HTT for topology).
 * Of the optional bits it keeps those a guest uses and every x86-64-v2
 * processor has (MCE, MCA, MTRR, PAT, CLFLUSH, NX), and requires them;
 * it drops the legacy-mode ones (VME, DE, PSE36, SEP), so a host that lacks
 * them, like the KVM box, still offers baseline.
 */
#define V2_REQ_ECX      (F1C_SSE3 | F1C_SSSE3 | F1C_CX16 | F1C_SSE41 | F1C_SSE42 | F1C_POPCNT)
#define V2_REQ_EDX      (X64_REQ_EDX | F1D_MCE | F1D_MCA | F1D_MTRR | F1D_PAT | F1D_CLFLUSH)
#define V2_REQ_EXT_ECX  E1C_LAHF
#define V2_REQ_EXT_EDX  (X64_REQ_EXT_EDX | E1D_NX)

const struct cpu_template cpu_templates[] = {
	{
		.name = "host",
		.what = "everything this host and KVM offer (after filtering); not portable",
		.leaf1_ecx = ~0u, .leaf1_edx = ~0u,
		.leaf7_ebx = ~0u, .leaf7_ecx = ~0u, .leaf7_edx = ~0u,
		.ext1_ecx = ~0u, .ext1_edx = ~0u,
		.req1_edx = X64_REQ_EDX, .req_ext1_edx = X64_REQ_EXT_EDX,
		.allow_xsave_leaf = 1,
	},
	{
		.name = "baseline",
		.what = "x86-64-v2 (SSE4.2, POPCNT, CX16), no AVX/XSAVE: portable across hosts",
		.leaf1_ecx = V2_REQ_ECX | F1C_X2APIC | F1C_TSCDL | F1C_HYPERVISOR,
		.leaf1_edx = V2_REQ_EDX | F1D_HTT,
		.ext1_ecx = V2_REQ_EXT_ECX, .ext1_edx = V2_REQ_EXT_EDX,
		.req1_ecx = V2_REQ_ECX, .req1_edx = V2_REQ_EDX,
		.req_ext1_ecx = V2_REQ_EXT_ECX, .req_ext1_edx = V2_REQ_EXT_EDX,
	},
	{
		.name = "minimal",
		.what = "x86-64 with SSE2 only: the oldest 64-bit processor",
		.leaf1_ecx = F1C_HYPERVISOR | F1C_X2APIC,
		.leaf1_edx = X64_REQ_EDX | X64_OPT_EDX | F1D_HTT,
		.ext1_ecx = 0, .ext1_edx = X64_REQ_EXT_EDX | E1D_NX,
		.req1_edx = X64_REQ_EDX, .req_ext1_edx = X64_REQ_EXT_EDX,
	},
};
const int cpu_templates_count = sizeof(cpu_templates) / sizeof(cpu_templates[0]);

/* Every bit a template may require, by where CPUID reports it, with the
 * name Linux's /proc/cpuinfo gives it (but "sse3" for "pni"), so a refusal
 * names what is missing. */
enum { REG_ECX, REG_EDX };
static const struct cpuid_feature {
	uint32_t leaf;
	int reg;
	uint32_t bit;
	const char *name;
} cpuid_features[] = {
	{ 1, REG_EDX, F1D_FPU, "fpu" }, { 1, REG_EDX, F1D_PSE, "pse" },
	{ 1, REG_EDX, F1D_TSC, "tsc" }, { 1, REG_EDX, F1D_MSR, "msr" },
	{ 1, REG_EDX, F1D_PAE, "pae" }, { 1, REG_EDX, F1D_MCE, "mce" },
	{ 1, REG_EDX, F1D_CX8, "cx8" }, { 1, REG_EDX, F1D_APIC, "apic" },
	{ 1, REG_EDX, F1D_MTRR, "mtrr" }, { 1, REG_EDX, F1D_PGE, "pge" },
	{ 1, REG_EDX, F1D_MCA, "mca" }, { 1, REG_EDX, F1D_CMOV, "cmov" },
	{ 1, REG_EDX, F1D_PAT, "pat" }, { 1, REG_EDX, F1D_CLFLUSH, "clflush" },
	{ 1, REG_EDX, F1D_MMX, "mmx" }, { 1, REG_EDX, F1D_FXSR, "fxsr" },
	{ 1, REG_EDX, F1D_SSE, "sse" }, { 1, REG_EDX, F1D_SSE2, "sse2" },
	{ 1, REG_ECX, F1C_SSE3, "sse3" }, { 1, REG_ECX, F1C_SSSE3, "ssse3" },
	{ 1, REG_ECX, F1C_CX16, "cx16" }, { 1, REG_ECX, F1C_SSE41, "sse4_1" },
	{ 1, REG_ECX, F1C_SSE42, "sse4_2" }, { 1, REG_ECX, F1C_POPCNT, "popcnt" },
	{ 0x80000001, REG_ECX, E1C_LAHF, "lahf_lm" },
	{ 0x80000001, REG_EDX, E1D_SYSCALL, "syscall" },
	{ 0x80000001, REG_EDX, E1D_NX, "nx" },
	{ 0x80000001, REG_EDX, E1D_LM, "lm" },
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

/* The register `reg` of leaf `leaf` in the host's table, 0 when absent. */
static uint32_t cpuid_host_reg(const struct kvm_cpuid2 *host, uint32_t leaf, int reg)
{
	for (uint32_t i = 0; i < host->nent; i++)
		if (host->entries[i].function == leaf)
			return reg == REG_ECX ? host->entries[i].ecx : host->entries[i].edx;
	return 0;
}

/* The template's required bits in the register `f` names. */
static uint32_t cpuid_required(const struct cpu_template *t, const struct cpuid_feature *f)
{
	if (f->leaf == 1)
		return f->reg == REG_ECX ? t->req1_ecx : t->req1_edx;
	return f->reg == REG_ECX ? t->req_ext1_ecx : t->req_ext1_edx;
}

/* Refuse, naming the first missing feature, a template this host cannot
 * offer. */
static int cpuid_check_required(const struct kvm_cpuid2 *host, const struct cpu_template *t,
				struct error *e)
{
	for (size_t i = 0; i < sizeof(cpuid_features) / sizeof(cpuid_features[0]); i++) {
		const struct cpuid_feature *f = &cpuid_features[i];
		uint32_t have = cpuid_host_reg(host, f->leaf, f->reg);

		if ((cpuid_required(t, f) & f->bit) && !(have & f->bit))
			return error_set(e, EXIT_RESOURCE,
					 "cpu template %s needs %s, which this host lacks",
					 t->name, f->name);
	}
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
