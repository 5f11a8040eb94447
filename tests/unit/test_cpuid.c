/*
 * test_cpuid.c - CPUID filtering, topology and templates on synthetic
 * "host" tables, no KVM needed: a modern Intel part's leaves, and what KVM
 * reports inside the KVM box (QEMU's software CPU, which lacks VME).  The
 * templates must hold on both, require the 64-bit minimum by name, never
 * require a legacy-mode feature, and baseline must look the same on both.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "vmm/cpuid.h"

static struct kvm_cpuid2 *fake_host(void)
{
	struct kvm_cpuid2 *c = cpuid_alloc();
	static const struct kvm_cpuid_entry2 e[] = {
		{ .function = 0, .eax = 0x1c },
		{ .function = 1, .eax = 0x806f2, .ebx = 0x00010800,
		  .ecx = 0xfffa3223 | (1u << 5) | (1u << 3), .edx = 0xbfebfbff },
		{ .function = 4, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0xfc004121 },
		{ .function = 6, .eax = 4 },
		{ .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1,
		  .ebx = 0xf3bfbfbf, .ecx = 0x1b, .edx = 0xfc1c4410 },
		{ .function = 7, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x30 },
		{ .function = 0xa, .eax = 0x07300805 },
		{ .function = 0xb, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0xb, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0xd, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0xe7 },
		{ .function = 0x1f, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ .function = 0x40000001, .eax = 0x01007afb },
		{ .function = 0x80000001, .ecx = 0x121 | (1u << 2), .edx = 0x2c100800 },
	};

	c->nent = sizeof(e) / sizeof(e[0]);
	memcpy(c->entries, e, sizeof(e));
	return c;
}

static void test_filtering_and_topology(void **state)
{
	struct kvm_cpuid2 *host = fake_host(), *out = cpuid_alloc();
	struct kvm_cpuid_entry2 *en;
	struct error e;

	assert_int_equal(cpuid_build(host, cpu_template_find("host"), 2, 4, 2300000, out, &e), 0);
	en = cpuid_find(out, 1, 0);
	assert_non_null(en);
	assert_int_equal(en->ecx & (1u << 5), 0);          /* no VMX: no nested virt */
	assert_int_equal(en->ecx & (1u << 3), 0);          /* no MONITOR/MWAIT */
	assert_int_not_equal(en->ecx & (1u << 31), 0);     /* hypervisor bit */
	assert_int_not_equal(en->ecx & (1u << 20), 0);     /* sse4.2 kept */
	assert_int_equal(en->ebx >> 24, 2);                /* APIC id = vCPU index */
	assert_int_equal((en->ebx >> 16) & 0xff, 4);       /* logical count */
	assert_int_not_equal(en->edx & (1u << 28), 0);     /* HTT with >1 CPU */
	assert_null(cpuid_find(out, 6, 0));                /* thermal hidden */
	assert_null(cpuid_find(out, 0xa, 0));              /* no PMU */
	assert_null(cpuid_find(out, 0x1f, 0));
	assert_int_equal(cpuid_find(out, 0xb, 1)->ebx, 4);
	assert_int_equal(cpuid_find(out, 0xb, 1)->eax, 2);  /* shift for 4 CPUs */
	assert_int_equal(cpuid_find(out, 0xb, 0)->edx, 2);  /* x2APIC id */
	assert_int_equal(cpuid_find(out, 4, 0)->eax >> 26, 3);
	assert_int_equal(cpuid_find(out, 0x80000001, 0)->ecx & (1u << 2), 0);  /* no SVM */
	en = cpuid_find(out, 0x40000000, 0);
	assert_non_null(en);
	assert_memory_equal(&en->ebx, "KVMK", 4);
	assert_int_equal(en->eax, 0x40000010);
	assert_int_equal(cpuid_find(out, 0x40000010, 0)->eax, 2300000);
	assert_non_null(cpuid_find(out, 0xd, 0));          /* host keeps XSAVE */
	free(host);
	free(out);
}

static void test_baseline_template(void **state)
{
	struct kvm_cpuid2 *host = fake_host(), *out = cpuid_alloc();
	struct kvm_cpuid_entry2 *en;
	struct error e;

	assert_int_equal(cpuid_build(host, cpu_template_find("baseline"), 0, 1, 0, out, &e), 0);
	en = cpuid_find(out, 1, 0);
	assert_int_equal(en->ecx & (1u << 28), 0);         /* no AVX */
	assert_int_equal(en->ecx & (1u << 26), 0);         /* no XSAVE */
	assert_int_not_equal(en->ecx & (1u << 23), 0);     /* popcnt */
	assert_int_equal(en->edx & (1u << 28), 0);         /* no HTT with 1 CPU */
	assert_null(cpuid_find(out, 0xd, 0));
	assert_int_equal(cpuid_find(out, 7, 0)->ebx, 0);   /* no AVX2, BMI... */
	assert_int_equal(cpuid_find(out, 7, 1)->eax, 0);
	/* no timing leaf when the TSC frequency is unknown */
	assert_null(cpuid_find(out, 0x40000010, 0));
	/* a host without SSE4.2 cannot offer baseline: refused by name */
	cpuid_find(host, 1, 0)->ecx &= ~(1u << 20);
	assert_int_equal(cpuid_build(host, cpu_template_find("baseline"), 0, 1, 0, out, &e), -1);
	assert_string_equal(e.msg, "cpu template baseline needs sse4_2, which this host lacks");
	assert_int_equal(e.status, EXIT_RESOURCE);
	/* ...while minimal still works there */
	assert_int_equal(cpuid_build(host, cpu_template_find("minimal"), 0, 1, 0, out, &e), 0);
	assert_int_equal(cpuid_find(out, 1, 0)->ecx & ~((1u << 31) | (1u << 21)), 0);
	free(host);
	free(out);
}

/* The KVM box: QEMU's software CPU (-cpu max, AMD SVM) under Debian's
 * kernel, as KVM_GET_SUPPORTED_CPUID reported it there (2026-12-05).
 * Leaf 1 EDX is 0f8bfbfd: no VME (QEMU's TCG does not emulate it), SS set;
 * ECX has no TSC-deadline. */
static struct kvm_cpuid2 *box_host(void)
{
	struct kvm_cpuid2 *c = cpuid_alloc();
	static const struct kvm_cpuid_entry2 e[] = {
		{ .function = 0, .eax = 0xd },
		{ .function = 1, .eax = 0x60fb1, .ebx = 0x00020800, .ecx = 0x76f83203,
		  .edx = 0x0f8bfbfd },
		{ .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
		  .ebx = 0x019803ab, .ecx = 0x0001020c, .edx = 0x20000000 },
		{ .function = 0x80000000, .eax = 0x8000000a },
		{ .function = 0x80000001, .eax = 0x60fb1, .ecx = 0x77, .edx = 0xedd3fbfd },
	};

	c->nent = sizeof(e) / sizeof(e[0]);
	memcpy(c->entries, e, sizeof(e));
	return c;
}

/* Every template holds on the KVM box, whose processor lacks VME (the
 * issue: minimal used to demand leaf 1 edx 078bfbff), and on the Intel
 * host above. */
static void test_templates_on_box(void **state)
{
	struct kvm_cpuid2 *hosts[] = { box_host(), fake_host() };
	struct kvm_cpuid2 *out = cpuid_alloc();
	struct error e = { 0 };

	for (int h = 0; h < 2; h++)
		for (int i = 0; i < cpu_templates_count; i++)
			if (cpuid_build(hosts[h], &cpu_templates[i], 0, 2, 0, out, &e))
				fail_msg("host %d, template %s: %s", h, cpu_templates[i].name, e.msg);
	assert_int_equal(cpuid_build(hosts[0], cpu_template_find("minimal"), 0, 1, 0, out, &e), 0);
	assert_int_equal(cpuid_find(out, 1, 0)->edx & (1u << 1), 0);   /* no VME to show */
	free(hosts[0]);
	free(hosts[1]);
	free(out);
}

/* Bits only legacy modes use are never required: a host without VME, DE,
 * PSE36 or SEP offers every template. */
static void test_legacy_bits_not_required(void **state)
{
	static const uint32_t legacy[] = { 1u << 1, 1u << 2, 1u << 17, 1u << 11 };
	struct kvm_cpuid2 *host = fake_host(), *out = cpuid_alloc();
	struct error e = { 0 };

	for (size_t b = 0; b < sizeof(legacy) / sizeof(legacy[0]); b++) {
		cpuid_find(host, 1, 0)->edx &= ~legacy[b];
		for (int i = 0; i < cpu_templates_count; i++)
			if (cpuid_build(host, &cpu_templates[i], 0, 1, 0, out, &e))
				fail_msg("edx bit %#x: template %s: %s", legacy[b],
					 cpu_templates[i].name, e.msg);
	}
	free(host);
	free(out);
}

/* What a 64-bit guest cannot do without is required, and a host without it
 * is refused by the feature's name. */
static void expect_needs(uint32_t leaf, int edx, uint32_t bit, const char *tmpl,
			 const char *msg)
{
	struct kvm_cpuid2 *host = fake_host(), *out = cpuid_alloc();
	struct kvm_cpuid_entry2 *en = cpuid_find(host, leaf, 0);
	struct error e = { 0 };

	if (edx)
		en->edx &= ~bit;
	else
		en->ecx &= ~bit;
	assert_int_equal(cpuid_build(host, cpu_template_find(tmpl), 0, 1, 0, out, &e), -1);
	assert_int_equal(e.status, EXIT_RESOURCE);
	assert_string_equal(e.msg, msg);
	free(host);
	free(out);
}

static void test_x86_64_minimum_required(void **state)
{
	const uint32_t ext = 0x80000001;

	expect_needs(ext, 1, 1u << 29, "minimal", "cpu template minimal needs lm, which this host lacks");
	expect_needs(ext, 1, 1u << 11, "host", "cpu template host needs syscall, which this host lacks");
	expect_needs(1, 1, 1u << 13, "minimal", "cpu template minimal needs pge, which this host lacks");
	expect_needs(1, 1, 1u << 6, "baseline", "cpu template baseline needs pae, which this host lacks");
	expect_needs(1, 1, 1u << 26, "minimal", "cpu template minimal needs sse2, which this host lacks");
	expect_needs(1, 1, 1u << 9, "minimal", "cpu template minimal needs apic, which this host lacks");
	/* x86-64-v2 includes LAHF/SAHF in 64-bit mode (glibc checks it too) */
	expect_needs(ext, 0, 1u << 0, "baseline",
		     "cpu template baseline needs lahf_lm, which this host lacks");
	expect_needs(ext, 1, 1u << 20, "baseline", "cpu template baseline needs nx, which this host lacks");
}

/* A template never requires what it then hides from the guest. */
static void test_required_within_allowed(void **state)
{
	for (int i = 0; i < cpu_templates_count; i++) {
		const struct cpu_template *t = &cpu_templates[i];

		assert_int_equal(t->req1_ecx & ~t->leaf1_ecx, 0);
		assert_int_equal(t->req1_edx & ~t->leaf1_edx, 0);
		assert_int_equal(t->req_ext1_ecx & ~t->ext1_ecx, 0);
		assert_int_equal(t->req_ext1_edx & ~t->ext1_edx, 0);
	}
}

/* baseline shows the guest the same processor on an Intel host and on the
 * KVM box: leaf 1 and 0x80000001 feature words, leaf 7 and XSAVE. */
static void test_baseline_same_everywhere(void **state)
{
	struct kvm_cpuid2 *intel = fake_host(), *box = box_host();
	struct kvm_cpuid2 *a = cpuid_alloc(), *b = cpuid_alloc();
	struct error e = { 0 };

	assert_int_equal(cpuid_build(intel, cpu_template_find("baseline"), 0, 2, 0, a, &e), 0);
	assert_int_equal(cpuid_build(box, cpu_template_find("baseline"), 0, 2, 0, b, &e), 0);
	/* KVM's in-kernel APIC gives x2APIC everywhere; the fake Intel table
	 * lacks TSC-deadline, which KVM only reports on some hosts */
	assert_int_equal(cpuid_find(a, 1, 0)->ecx & ~(1u << 24),
			 cpuid_find(b, 1, 0)->ecx & ~(1u << 24));
	assert_int_equal(cpuid_find(a, 1, 0)->edx, cpuid_find(b, 1, 0)->edx);
	assert_int_equal(cpuid_find(a, 0x80000001, 0)->ecx, cpuid_find(b, 0x80000001, 0)->ecx);
	assert_int_equal(cpuid_find(a, 0x80000001, 0)->edx, cpuid_find(b, 0x80000001, 0)->edx);
	assert_int_equal(cpuid_find(a, 7, 0)->ebx | cpuid_find(b, 7, 0)->ebx, 0);
	free(intel);
	free(box);
	free(a);
	free(b);
}

static void test_template_lookup(void **state)
{
	assert_string_equal(cpu_template_find(NULL)->name, "host");
	assert_non_null(cpu_template_find("baseline"));
	assert_null(cpu_template_find("pentium"));
	assert_true(cpu_templates_count >= 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filtering_and_topology),
		cmocka_unit_test(test_baseline_template),
		cmocka_unit_test(test_template_lookup),
		cmocka_unit_test(test_templates_on_box),
		cmocka_unit_test(test_legacy_bits_not_required),
		cmocka_unit_test(test_x86_64_minimum_required),
		cmocka_unit_test(test_required_within_allowed),
		cmocka_unit_test(test_baseline_same_everywhere),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
