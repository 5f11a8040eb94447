/*
 * test_vmgenid.c - the ACPI VM generation ID device (devices/vmgenid.c)
 * and its SSDT (boot/acpi.c), on a fake device host over guest memory
 * where acpi_build() wrote the machine's tables, as `shoal run` does:
 *
 *   - the SSDT is listed in a new XSDT the RSDP points at, checksums
 *     right, and its AML holds \_SB.VGEN (_CID "VM_GEN_COUNTER", ADDR =
 *     the ID's address as two DWORDs) and the GED that notifies it;
 *     adding it again (a restored VM) changes nothing; a firmware boot's
 *     memory is refused, an empty one (incoming migration) left alone;
 *   - a fresh VM has a random ID in reserved memory, another VM another;
 *   - state round trip: a plain restore puts the saved ID back and
 *     notifies nothing; a clone's restore writes a new one and pulses the
 *     GED's line once; two clones differ;
 *   - bad state (short, an address in RAM or unaligned, a newer version)
 *     is refused and leaves the guest's ID as it was;
 *   - the settings: "vmgenid" in JSON, refused with firmware boot, and a
 *     clone's identity asks for a new ID where a plain restore does not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/layout.h"
#include "boot/acpi.h"
#include "vmm/devices.h"
#include "boot/boot.h"
#include "boot/boot_priv.h"
#include "devices/vmgenid.h"
#include "fake_host.h"
#include "state/snapshot.h"
#include "state/snapshot_identity.h"
#include "vmm/config.h"

#define MEM_SIZE (64ULL << 20)

/* Rising edges seen on each line (fake_host keeps only the last level). */
static int edges[FAKE_HOST_IRQS];

static void count_irq(const struct device_host *h, unsigned gsi, int level)
{
	struct fake_host *f = h->opaque;

	if (gsi < FAKE_HOST_IRQS && level && !f->irq[gsi])
		edges[gsi]++;
	fake_host_irq_line(h, gsi, level);
}

/* A host with guest memory holding acpi_build()'s tables. */
static struct fake_host *machine(void)
{
	struct fake_host *f = fake_host_new(MEM_SIZE);
	struct error e;

	assert_non_null(f);
	assert_int_equal(guest_mem_create_anon(&f->mem, MEM_SIZE, &e), 0);
	assert_int_not_equal(acpi_build(&f->mem, 1, &e), 0);
	f->host.irq_line = count_irq;
	return f;
}

static void machine_free(struct fake_host *f)
{
	guest_mem_destroy(&f->mem);
	fake_host_free(f);
}

static struct device *vmgenid_dev(struct fake_host *f)
{
	for (int i = 0; i < f->ndevices; i++)
		if (!strcmp(f->devices[i]->name, "vmgenid0"))
			return f->devices[i];
	fail_msg("no vmgenid0");
	return NULL;
}

static void guest_id(struct fake_host *f, uint8_t id[VMGENID_SIZE])
{
	assert_int_equal(guest_mem_read(&f->mem, ACPI_VMGENID_GUID, id, VMGENID_SIZE), 0);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static const uint8_t *find(const uint8_t *p, size_t n, const void *what, size_t wn)
{
	for (size_t i = 0; i + wn <= n; i++)
		if (!memcmp(p + i, what, wn))
			return p + i;
	return NULL;
}

/* RSDP -> XSDT -> the last entry, the SSDT; its AML and length. */
static const uint8_t *ssdt(struct fake_host *f, uint32_t *len)
{
	const uint8_t *r = guest_mem_ptr(&f->mem, BOOT_ACPI_ADDR, 36), *x, *s;
	uint64_t xsdt, ent;
	uint32_t xl;

	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(sum(r, 20), 0);
	assert_int_equal(sum(r, 36), 0);
	memcpy(&xsdt, r + 24, 8);
	assert_int_equal(xsdt, ACPI_VMGENID_XSDT);
	x = guest_mem_ptr(&f->mem, xsdt, 36);
	assert_memory_equal(x, "XSDT", 4);
	memcpy(&xl, x + 4, 4);
	assert_int_equal(xl, 36 + 4 * 8);           /* FADT, MADT, MCFG, SSDT */
	x = guest_mem_ptr(&f->mem, xsdt, xl);
	assert_int_equal(sum(x, xl), 0);
	memcpy(&ent, x + 36 + 3 * 8, 8);
	assert_int_equal(ent, ACPI_VMGENID_SSDT);
	s = guest_mem_ptr(&f->mem, ent, 36);
	assert_memory_equal(s, "SSDT", 4);
	memcpy(len, s + 4, 4);
	assert_true(*len > 36 && ent + *len <= ACPI_VMGENID_XSDT);
	s = guest_mem_ptr(&f->mem, ent, *len);
	assert_int_equal(sum(s, *len), 0);
	assert_memory_equal(s + 16, ACPI_VMGENID_OEM_TABLE, 8);
	return s;
}

static void test_ssdt_describes_the_device(void **state)
{
	struct fake_host *f = machine();
	struct error e;
	const uint8_t *s;
	uint8_t before[4096];
	uint32_t len, lo = (uint32_t)ACPI_VMGENID_GUID;
	uint8_t addr[] = { 'A', 'D', 'D', 'R', 0x12, 0, 2, 0x0c, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0 };
	static const uint8_t notify[] = { 0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'V', 'G', 'E',
					  'N', 0x0a, 0x80 };
	static const uint8_t irq[] = { 0x89, 0x06, 0x00, 0x03, 0x01, ACPI_VMGENID_GSI, 0, 0, 0 };

	(void)state;
	assert_int_equal(devices_add_vmgenid(&f->host, false, &e), 0);
	s = ssdt(f, &len);
	assert_non_null(find(s, len, "\x08_CID\x0dVM_GEN_COUNTER", 20));
	assert_non_null(find(s, len, "\x5b\x82", 2));                /* Device() */
	assert_non_null(find(s, len, "VGEN", 4));
	/* Name(ADDR, Package(2) { DWord lo, DWord hi }) */
	memcpy(addr + 8, &lo, 4);
	{
		const uint8_t *a = find(s, len, "ADDR", 4);

		assert_non_null(a);
		addr[5] = a[5];                             /* PkgLength */
		assert_memory_equal(a, addr, sizeof(addr));
	}
	assert_non_null(find(s, len, "\x08_HID\x0d" "ACPI0013", 14));
	assert_non_null(find(s, len, irq, sizeof(irq)));
	assert_non_null(find(s, len, "_EVT\x01", 5));
	assert_non_null(find(s, len, notify, sizeof(notify)));

	/* Again, as on a restored VM: nothing changes. */
	memcpy(before, guest_mem_ptr(&f->mem, ACPI_VMGENID_PAGE, 4096), 4096);
	assert_int_equal(acpi_add_vmgenid(&f->mem, ACPI_VMGENID_GUID, ACPI_VMGENID_GSI, &e), 1);
	assert_memory_equal(before, guest_mem_ptr(&f->mem, ACPI_VMGENID_PAGE, 4096), 4096);
	machine_free(f);
}

static void test_no_ssdt_without_the_device(void **state)
{
	struct fake_host *f = machine();
	uint64_t xsdt;
	uint32_t xl;

	(void)state;
	assert_int_equal(guest_mem_read(&f->mem, BOOT_ACPI_ADDR + 24, &xsdt, 8), 0);
	assert_true(xsdt < ACPI_VMGENID_PAGE);
	assert_int_equal(guest_mem_read(&f->mem, xsdt + 4, &xl, 4), 0);
	assert_int_equal(xl, 36 + 3 * 8);
	machine_free(f);
}

static void test_firmware_memory_refused(void **state)
{
	struct fake_host *f = fake_host_new(MEM_SIZE);
	struct error e;
	uint8_t junk[64];

	(void)state;
	assert_int_equal(guest_mem_create_anon(&f->mem, MEM_SIZE, &e), 0);
	/* Empty RAM (an incoming migration's, filled later): nothing written. */
	assert_int_equal(devices_add_vmgenid(&f->host, false, &e), 0);
	assert_int_equal(f->ndevices, 1);
	assert_int_equal(guest_mem_read(&f->mem, ACPI_VMGENID_GUID, junk, 16), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(junk[i], 0);
	/* A BIOS image there instead of our RSDP. */
	memset(junk, 0xcb, sizeof(junk));
	assert_int_equal(guest_mem_write(&f->mem, BOOT_ACPI_ADDR, junk, sizeof(junk)), 0);
	assert_int_equal(devices_add_vmgenid(&f->host, false, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_non_null(strstr(e.msg, "firmware"));
	guest_mem_destroy(&f->mem);
	fake_host_free(f);
}

static void test_fresh_id_random_and_in_memory(void **state)
{
	struct fake_host *a = machine(), *b = machine();
	struct error e;
	uint8_t ia[16], ib[16], ma[16], zero[16] = { 0 };
	uint64_t gpa;
	char text[37];

	(void)state;
	assert_int_equal(devices_add_vmgenid(&a->host, false, &e), 0);
	assert_int_equal(devices_add_vmgenid(&b->host, false, &e), 0);
	vmgenid_get(vmgenid_dev(a), ia, &gpa);
	vmgenid_get(vmgenid_dev(b), ib, NULL);
	assert_int_equal(gpa, ACPI_VMGENID_GUID);
	assert_true(gpa >= GUEST_EBDA_START && gpa + 16 <= GUEST_HIGH_START);
	guest_id(a, ma);
	assert_memory_equal(ia, ma, 16);
	assert_memory_not_equal(ia, zero, 16);
	assert_memory_not_equal(ia, ib, 16);
	vmgenid_format(ia, text);
	assert_int_equal(strlen(text), 36);
	assert_int_equal(text[14], '4');            /* version 4 */
	machine_free(a);
	machine_free(b);
}

/* Save vmgenid0 of `f` as the VM does (one section). */
static void save(struct fake_host *f, struct state_writer *w)
{
	state_writer_init(w);
	assert_int_equal(devices_save(&f->devices[0], 1, w), 0);
}

/* A VM restored from `w`: `clone` as `--clone` sets it.  Its memory has
 * the tables and the SSDT already (as a snapshot's memory would). */
static struct fake_host *restored(struct state_writer *w, bool clone, int *rc)
{
	struct fake_host *f = machine();
	struct error e;

	assert_int_equal(acpi_add_vmgenid(&f->mem, ACPI_VMGENID_GUID, ACPI_VMGENID_GSI, &e), 0);
	memset(edges, 0, sizeof(edges));
	assert_int_equal(devices_add_vmgenid(&f->host, clone, &e), 0);
	*rc = devices_restore(&f->devices[0], 1, w->data, w->len, &e);
	return f;
}

static void test_plain_restore_keeps_id(void **state)
{
	struct fake_host *src = machine(), *r;
	struct state_writer w;
	struct error e;
	uint8_t want[16], got[16], mem[16];
	int rc;

	(void)state;
	assert_int_equal(devices_add_vmgenid(&src->host, false, &e), 0);
	vmgenid_get(vmgenid_dev(src), want, NULL);
	save(src, &w);
	r = restored(&w, false, &rc);
	assert_int_equal(rc, 0);
	vmgenid_get(vmgenid_dev(r), got, NULL);
	guest_id(r, mem);
	assert_memory_equal(got, want, 16);
	assert_memory_equal(mem, want, 16);
	assert_int_equal(edges[ACPI_VMGENID_GSI], 0);  /* the same machine: no news */
	state_writer_free(&w);
	machine_free(src);
	machine_free(r);
}

static void test_clone_gets_new_id_and_notify(void **state)
{
	struct fake_host *src = machine(), *c1, *c2;
	struct state_writer w;
	struct error e;
	uint8_t old[16], n1[16], n2[16], mem[16];
	int rc;

	(void)state;
	assert_int_equal(devices_add_vmgenid(&src->host, false, &e), 0);
	vmgenid_get(vmgenid_dev(src), old, NULL);
	save(src, &w);
	c1 = restored(&w, true, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(edges[ACPI_VMGENID_GSI], 1);  /* one Notify(VGEN, 0x80) */
	assert_int_equal(c1->irq[ACPI_VMGENID_GSI], 0); /* an edge: the line is low again */
	c2 = restored(&w, true, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(edges[ACPI_VMGENID_GSI], 1);
	vmgenid_get(vmgenid_dev(c1), n1, NULL);
	vmgenid_get(vmgenid_dev(c2), n2, NULL);
	guest_id(c1, mem);
	assert_memory_equal(mem, n1, 16);
	assert_memory_not_equal(n1, old, 16);
	assert_memory_not_equal(n2, old, 16);
	assert_memory_not_equal(n1, n2, 16);
	state_writer_free(&w);
	machine_free(src);
	machine_free(c1);
	machine_free(c2);
}

/* A section "vmgenid0" of `version` with `payload` (after the broken byte). */
static void section(struct state_writer *w, uint16_t version, const void *payload, size_t n)
{
	size_t mark;

	state_writer_init(w);
	mark = state_section_begin(w, "vmgenid0", version);
	state_put_u8(w, 0);
	state_put_bytes(w, payload, n);
	state_section_end(w, mark);
}

static void test_bad_state_refused(void **state)
{
	struct fake_host *f = machine();
	struct state_writer w;
	struct error e;
	uint8_t before[16], after[16], p[24] = { 0 };
	const uint64_t bad[] = { GUEST_HIGH_START, 0x200000, ACPI_VMGENID_GUID + 4, 0,
				 GUEST_HIGH_START - 8 };

	(void)state;
	assert_int_equal(devices_add_vmgenid(&f->host, true, &e), 0);
	memset(edges, 0, sizeof(edges));
	guest_id(f, before);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(p, &bad[i], 8);
		section(&w, 1, p, sizeof(p));
		assert_int_equal(devices_restore(&f->devices[0], 1, w.data, w.len, &e), -1);
		assert_non_null(strstr(e.msg, "vmgenid0"));
		state_writer_free(&w);
	}
	memcpy(p, &(uint64_t){ ACPI_VMGENID_GUID }, 8);
	section(&w, 1, p, 20);                          /* 4 bytes short */
	assert_int_equal(devices_restore(&f->devices[0], 1, w.data, w.len, &e), -1);
	state_writer_free(&w);
	section(&w, 2, p, sizeof(p));                   /* a newer layout */
	assert_int_equal(devices_restore(&f->devices[0], 1, w.data, w.len, &e), -1);
	state_writer_free(&w);
	guest_id(f, after);
	assert_memory_equal(before, after, 16);         /* nothing written */
	assert_int_equal(edges[ACPI_VMGENID_GSI], 0);
	machine_free(f);
}

static void test_config(void **state)
{
	struct vm_config c, back;
	struct error e;
	struct snapshot_overrides plain = { .clone = false }, clone = { .clone = true };
	json_t *j;

	(void)state;
	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "t", "{\"kernel\": \"k\", \"vmgenid\": true}",
						  &e), 0);
	assert_true(c.vmgenid);
	assert_int_equal(vm_config_validate(&c, &e), 0);
	j = vm_config_to_json(&c);
	assert_true(json_is_true(json_object_get(j, "vmgenid")));
	vm_config_init(&back);
	assert_int_equal(vm_config_from_json(&back, "t", j, &e), 0);
	assert_true(back.vmgenid);
	json_decref(j);
	vm_config_free(&back);
	assert_int_equal(vm_config_from_json_text(&c, "t", "{\"vmgenid\": 1}", &e), -1);
	assert_non_null(strstr(e.msg, "vmgenid"));

	assert_int_equal(snapshot_new_identity(&c, &plain, &e), 0);
	assert_false(c.vmgenid_new);
	assert_int_equal(snapshot_new_identity(&c, &clone, &e), 0);
	assert_true(c.vmgenid_new);
	c.vmgenid = false;
	assert_int_equal(snapshot_new_identity(&c, &clone, &e), 0);
	assert_false(c.vmgenid_new);
	vm_config_free(&c);

	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "t", "{\"firmware\": \"bios.bin\", "
						  "\"vmgenid\": true}", &e), 0);
	assert_int_equal(vm_config_validate(&c, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_non_null(strstr(e.msg, "--vmgenid"));
	j = vm_config_to_json(&c);
	c.vmgenid = false;
	json_decref(j);
	j = vm_config_to_json(&c);
	assert_null(json_object_get(j, "vmgenid"));  /* absent when off */
	json_decref(j);
	vm_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ssdt_describes_the_device),
		cmocka_unit_test(test_no_ssdt_without_the_device),
		cmocka_unit_test(test_firmware_memory_refused),
		cmocka_unit_test(test_fresh_id_random_and_in_memory),
		cmocka_unit_test(test_plain_restore_keeps_id),
		cmocka_unit_test(test_clone_gets_new_id_and_notify),
		cmocka_unit_test(test_bad_state_refused),
		cmocka_unit_test(test_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
