/*
 * test_cpuid.c - CPUID filtering, topology and templates on a synthetic
 * "host" table (a modern Intel part's leaves), no KVM needed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "util/exitcode.h"
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
