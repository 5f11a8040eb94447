/*
 * test_fw_cfg.c - the fw_cfg device (devices/fw_cfg.c) driven through the
 * port bus of a fake device host: the selector/data protocol, the file
 * directory and "etc/e820", DMA, and what a hostile guest may try (reading
 * past an item, DMA outside guest RAM, writing an item).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "devices/fw_cfg.h"
#include "fake_host.h"

#define RAM (16ULL << 20)

struct fx {
	struct fake_host *f;
	struct device *fw;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	struct error e = { 0 };

	x->f = fake_host_new(RAM);
	assert_int_equal(guest_mem_create_anon(&x->f->mem, RAM, &e), 0);
	assert_int_equal(fw_cfg_create(&x->f->host, 2, &e), 0);
	x->fw = x->f->devices[0];
	assert_string_equal(x->fw->name, "fw_cfg0");
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	guest_mem_destroy(&x->f->mem);
	fake_host_free(x->f);
	free(x);
	return 0;
}

static void sel(struct fx *x, uint16_t key)
{
	bus_io(&x->f->iobus, FW_CFG_PORT_SEL, &key, 2, true);
}

static void rd(struct fx *x, void *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bus_io(&x->f->iobus, FW_CFG_PORT_DATA, (uint8_t *)buf + i, 1, false);
}

static uint32_t rd32(struct fx *x)
{
	uint32_t v;

	rd(x, &v, 4);
	return v;
}

/* Write a DMA descriptor at `at` and start it as SeaBIOS does. */
static uint32_t dma(struct fx *x, uint64_t at, uint32_t control, uint32_t len, uint64_t addr)
{
	uint32_t d[4] = { htobe32(control), htobe32(len), htobe32((uint32_t)(addr >> 32)),
			  htobe32((uint32_t)addr) };
	uint32_t hi = htobe32((uint32_t)(at >> 32)), lo = htobe32((uint32_t)at), res = 0xdead;

	if (at <= RAM - 16)
		assert_int_equal(guest_mem_write(&x->f->mem, at, d, 16), 0);
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA, &hi, 4, true);
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA + 4, &lo, 4, true);
	if (at <= RAM - 16)
		assert_int_equal(guest_mem_read(&x->f->mem, at, &res, 4), 0);
	return be32toh(res);
}

static void test_signature_and_id(void **state)
{
	struct fx *x = *state;
	char sig[5] = { 0 };
	uint64_t ram;
	uint16_t cpus;
	uint8_t dsig[8];

	sel(x, FW_CFG_SIGNATURE);
	rd(x, sig, 4);
	assert_string_equal(sig, "QEMU");
	sel(x, FW_CFG_ID);
	assert_int_equal(rd32(x), FW_CFG_VERSION | FW_CFG_VERSION_DMA);
	sel(x, FW_CFG_RAM_SIZE);
	rd(x, &ram, 8);
	assert_int_equal(ram, RAM);
	sel(x, FW_CFG_NB_CPUS);
	rd(x, &cpus, 2);
	assert_int_equal(cpus, 2);
	sel(x, FW_CFG_MAX_CPUS);
	rd(x, &cpus, 2);
	assert_int_equal(cpus, 2);
	/* the DMA registers read back as the DMA signature */
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA, dsig, 4, false);
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA + 4, dsig + 4, 4, false);
	assert_memory_equal(dsig, "QEMU CFG", 8);
	/* selecting again starts over */
	sel(x, FW_CFG_SIGNATURE);
	rd(x, sig, 2);
	sel(x, FW_CFG_SIGNATURE);
	rd(x, sig, 4);
	assert_string_equal(sig, "QEMU");
}

static void test_past_end_and_unknown_read_zero(void **state)
{
	struct fx *x = *state;
	uint8_t b[8], zero[8] = { 0 }, junk = 0x5a;

	sel(x, FW_CFG_SIGNATURE);
	rd(x, b, 4);
	memset(b, 0xff, sizeof(b));
	rd(x, b, 8);                           /* past the end */
	assert_memory_equal(b, zero, 8);
	sel(x, 0x1234);                        /* no such item */
	memset(b, 0xff, sizeof(b));
	rd(x, b, 8);
	assert_memory_equal(b, zero, 8);
	/* data port writes change nothing */
	sel(x, FW_CFG_SIGNATURE);
	bus_io(&x->f->iobus, FW_CFG_PORT_DATA, &junk, 1, true);
	sel(x, FW_CFG_SIGNATURE);
	rd(x, b, 4);
	assert_memory_equal(b, "QEMU", 4);
}

/* Find `name` in the directory: its key and size. */
static int find_file(struct fx *x, const char *name, uint16_t *key, uint32_t *size)
{
	uint32_t n;

	sel(x, FW_CFG_FILE_DIR);
	n = be32toh(rd32(x));
	for (uint32_t i = 0; i < n; i++) {
		uint8_t ent[64];
		uint16_t k;

		rd(x, ent, 64);
		if (strncmp((char *)ent + 8, name, 56))
			continue;
		memcpy(size, ent, 4);
		*size = be32toh(*size);
		memcpy(&k, ent + 4, 2);
		*key = be16toh(k);
		return 0;
	}
	return -1;
}

static void test_e820_file(void **state)
{
	struct fx *x = *state;
	uint16_t key;
	uint32_t size, type;
	uint64_t addr, len;

	assert_int_equal(find_file(x, "etc/e820", &key, &size), 0);
	assert_true(key >= FW_CFG_FILE_FIRST);
	assert_int_equal(size, 20u * (uint32_t)x->f->mem.nregions);
	sel(x, key);
	rd(x, &addr, 8);
	rd(x, &len, 8);
	rd(x, &type, 4);
	assert_int_equal(addr, 0);
	assert_int_equal(len, RAM);
	assert_int_equal(type, 1);
	assert_int_equal(find_file(x, "etc/none", &key, &size), -1);
}

static void test_add_file(void **state)
{
	struct fx *x = *state;
	char name[80];
	uint16_t key;
	uint32_t size;
	uint8_t b[4];

	assert_int_equal(fw_cfg_add_file(x->fw, "bootorder", "/a\n", 3), 0);
	assert_int_equal(find_file(x, "bootorder", &key, &size), 0);
	assert_int_equal(size, 3);
	sel(x, key);
	rd(x, b, 4);
	assert_memory_equal(b, "/a\n\0", 4);
	assert_int_equal(fw_cfg_add_file(x->fw, "bootorder", "x", 1), -1);   /* twice */
	assert_int_equal(fw_cfg_add_file(x->fw, "", "x", 1), -1);
	memset(name, 'n', sizeof(name));
	name[FW_CFG_NAME_MAX] = 0;                                            /* 56 chars */
	assert_int_equal(fw_cfg_add_file(x->fw, name, "x", 1), -1);
	name[FW_CFG_NAME_MAX - 1] = 0;                                        /* 55 fit */
	assert_int_equal(fw_cfg_add_file(x->fw, name, "x", 1), 0);
	for (int i = 3; ; i++) {             /* e820, bootorder, the long one */
		snprintf(name, sizeof(name), "f%d", i);
		if (fw_cfg_add_file(x->fw, name, "x", 1))
			break;
		assert_true(i < FW_CFG_MAX_FILES);
	}
	assert_int_equal(find_file(x, "f15", &key, &size), 0);
}

static void test_dma_read(void **state)
{
	struct fx *x = *state;
	uint8_t buf[8];

	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(guest_mem_write(&x->f->mem, 0x2000, buf, 8), 0);
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_READ | FW_CFG_SIGNATURE << 16,
			     8, 0x2000), 0);
	assert_int_equal(guest_mem_read(&x->f->mem, 0x2000, buf, 8), 0);
	assert_memory_equal(buf, "QEMU\0\0\0\0", 8);   /* past the end: zeros */
	/* skip then read, on the current item */
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_SKIP | FW_CFG_SIGNATURE << 16,
			     2, 0), 0);
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_READ, 2, 0x3000), 0);
	assert_int_equal(guest_mem_read(&x->f->mem, 0x3000, buf, 2), 0);
	assert_memory_equal(buf, "MU", 2);
	/* and the port interface continues where DMA left off */
	assert_int_equal(rd32(x), 0);
	/* a skip past the end stops at the end */
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_SKIP | FW_CFG_ID << 16,
			     0xffffffffu, 0), 0);
	assert_int_equal(rd32(x), 0);
}

static void test_dma_hostile(void **state)
{
	struct fx *x = *state;
	uint8_t top[4];

	/* target outside RAM, or straddling its end: ERROR, nothing written */
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_READ, 4, 0xfec00000),
			 FW_CFG_DMA_ERROR);
	memset(top, 0x77, 4);
	assert_int_equal(guest_mem_write(&x->f->mem, RAM - 4, top, 4), 0);
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_READ, 8, RAM - 4),
			 FW_CFG_DMA_ERROR);
	assert_int_equal(guest_mem_read(&x->f->mem, RAM - 4, top, 4), 0);
	assert_memory_equal(top, "\x77\x77\x77\x77", 4);
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_READ, 0xffffffffu, 0x100),
			 FW_CFG_DMA_ERROR);
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_READ, 16, UINT64_MAX - 7),
			 FW_CFG_DMA_ERROR);
	/* writing an item is refused */
	assert_int_equal(dma(x, 0x1000, FW_CFG_DMA_SELECT | FW_CFG_DMA_WRITE, 4, 0x2000),
			 FW_CFG_DMA_ERROR);
	sel(x, FW_CFG_SIGNATURE);
	rd(x, top, 4);
	assert_memory_equal(top, "QEMU", 4);
	/* a descriptor outside RAM, or across its end: ignored, no crash */
	dma(x, 0xfec00000, FW_CFG_DMA_READ, 4, 0x2000);
	dma(x, RAM - 8, FW_CFG_DMA_READ, 4, 0x2000);
	dma(x, UINT64_MAX - 3, FW_CFG_DMA_READ, 4, 0x2000);
	/* odd widths and offsets on the ports do nothing */
	uint8_t b = 0x12;
	uint32_t w = 0;
	bus_io(&x->f->iobus, FW_CFG_PORT_SEL, &b, 1, true);
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA + 4, &b, 1, true);
	bus_io(&x->f->iobus, FW_CFG_PORT_DMA + 2, &w, 4, true);
	assert_false(x->fw->broken);
	assert_false(x->f->stopping);
}

static void test_debug_port(void **state)
{
	struct fx *x = *state;
	uint8_t v = 0;
	const char *msg = "SeaBIOS\n";

	bus_io(&x->f->iobus, FW_CFG_DEBUG_PORT, &v, 1, false);
	assert_int_equal(v, 0xe9);
	for (const char *p = msg; *p; p++)
		bus_io(&x->f->iobus, FW_CFG_DEBUG_PORT, (void *)p, 1, true);
	assert_string_equal(x->f->devices[1]->name, "debugcon0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_signature_and_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_past_end_and_unknown_read_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_e820_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_debug_port, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
