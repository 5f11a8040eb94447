/*
 * cpuid.h - what the guest sees of the processor: CPUID templates.
 *
 * The guest's CPUID starts from what KVM supports on this host
 * (KVM_GET_SUPPORTED_CPUID), is filtered to what Shoal virtualizes (no
 * nested virtualization, no PMU, no MONITOR/MWAIT, no thermal or debug-store
 * features), gets the VM's topology (APIC ids, counts) and a hypervisor
 * leaf, and is then narrowed by a named template:
 *
 *   host      everything the host and KVM offer, after filtering.
 *   baseline  x86-64-v2 (SSE4.2, POPCNT, CX16, LAHF) and nothing newer, no
 *             XSAVE: the common denominator for restoring or migrating a VM
 *             onto a different host (seed mechanism 27).  It shows the
 *             guest only what it requires, so the guest sees the same
 *             processor on every host that accepts it.
 *   minimal   x86-64 baseline (SSE2) only: the oldest 64-bit processor.
 *
 * Every template requires what a 64-bit guest cannot run without (long
 * mode, the psABI baseline, Linux's x86-64 minimum; cpuid.c says why for
 * each bit) and nothing that only legacy modes use, and is refused with a
 * message naming the missing feature on a host that cannot offer it.
 *
 * `shoal cpu-templates` lists them.
 */
#ifndef SHOAL_VMM_CPUID_H
#define SHOAL_VMM_CPUID_H

#include <linux/kvm.h>
#include <stdint.h>

#include "base/error.h"

#define CPUID_MAX_ENTRIES 256

struct cpu_template {
	const char *name;
	const char *what;            /* one line for listings */
	/* Feature words the template allows (AND mask) and requires. */
	uint32_t leaf1_ecx, leaf1_edx;
	uint32_t leaf7_ebx, leaf7_ecx, leaf7_edx;
	uint32_t ext1_ecx, ext1_edx; /* leaf 0x80000001 */
	/* Required from the host (cpuid.c says why for each bit); a subset of
	 * what the template allows. */
	uint32_t req1_ecx, req1_edx;
	uint32_t req_ext1_ecx, req_ext1_edx; /* leaf 0x80000001 */
	int allow_xsave_leaf;        /* keep leaf 0xd */
};

extern const struct cpu_template cpu_templates[];
extern const int cpu_templates_count;

/* Look up a template by name (NULL means "host"); NULL when unknown. */
const struct cpu_template *cpu_template_find(const char *name);

/* Build the CPUID table for vCPU `index` of `ncpus` from `host` (KVM's
 * supported list).  `tsc_khz` goes in leaf 0x40000010 (0 to omit).
 * Returns 0, or -1 with `e` when the host lacks a feature the template
 * requires. */
int cpuid_build(const struct kvm_cpuid2 *host, const struct cpu_template *t,
		int index, int ncpus, uint32_t tsc_khz,
		struct kvm_cpuid2 *out, struct error *e);

/* Allocate a kvm_cpuid2 with room for CPUID_MAX_ENTRIES. */
struct kvm_cpuid2 *cpuid_alloc(void);

/* Find an entry; NULL if absent. */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx);

#endif
