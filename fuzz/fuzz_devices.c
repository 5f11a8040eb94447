/*
 * fuzz_devices.c - a hostile guest's port I/O against every legacy device.
 *
 * The input is a program of 6-byte records {port, flags, u32 value}: a
 * port access (the port from the list below, the size from flags bits
 * 0-1, a write when bit 6 is set) run through the I/O bus of a fake device
 * host (tests/fake_host.h: no VM, no KVM) holding every device the builder
 * makes for a configuration that boots firmware, so that fw_cfg and the
 * firmware's debug port are there besides the default devices; or, with
 * flags bit 5, a guest write of the value at byte 4 * port of guest RAM
 * (16 MiB in a memfd, zero at the start of each input), which is
 * where fw_cfg's DMA interface finds the descriptors the program points it
 * at (high half to 0x514, low half to 0x518, big-endian: the low write
 * runs it).  After the program, every device's state is saved,
 * restored into a second host's devices and saved again, and the two state
 * images must be identical.  Finally the input itself is fed to
 * devices_restore() as a corrupt state image.  Crashes, sanitizer
 * reports or a state mismatch are findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/device.h"
#include "base/log.h"
#include "vmm/config.h"
#include "vmm/devices.h"
#include "../tests/fake_host.h"

#define MEM_SIZE (16u << 20)

static struct guest_mem mem;   /* made once; the hosts borrow it */

static struct fake_host *fuzz_vm(void)
{
	struct fake_host *h = fake_host_new(256ULL << 20);
	struct vm_config cfg;
	struct error e;

	if (!mem.host && guest_mem_create(&mem, MEM_SIZE, &e))
		abort();
	vm_config_init(&cfg);
	cfg.firmware = strdup("fuzz-bios");   /* never read: fw_cfg is made for it */
	if (!h || !cfg.firmware)
		abort();
	h->mem = mem;                          /* fake_host_free leaves it */
	if (devices_create_all(&h->host, &cfg, &e))
		abort();
	vm_config_free(&cfg);
	return h;
}

/* Ports worth hitting: every claimed range plus a few unclaimed ones. */
static const uint16_t ports[] = {
	0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x60, 0x64, 0x70, 0x71,
	0x600, 0x601, 0x602, 0x603, 0x604, 0x605, 0xf4, 0xf5, 0x80, 0xed, 0x92, 0x2f8, 0xcf8,
	0x510, 0x511, 0x512, 0x514, 0x515, 0x518, 0x51b, 0x51c, 0x402,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_host *a = fuzz_vm(), *b = fuzz_vm();
	struct state_writer w1, w2;
	struct error e;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (guest_mem_discard(&mem, mem.host, MEM_SIZE))   /* all zero again, cheaply */
		abort();
	for (size_t i = 0; i + 6 <= size; i += 6) {
		uint16_t port = ports[data[i] % (sizeof(ports) / sizeof(ports[0]))];
		int sz = 1 << (data[i + 1] & 3);
		uint32_t v;

		if (sz == 8)
			sz = 4;
		memcpy(&v, data + i + 2, 4);
		if (data[i + 1] & 0x20) {
			memcpy(mem.host + 4u * data[i], &v, 4);
			continue;
		}
		if (port == 0xf4 && (data[i + 1] & 0x80))
			continue;  /* exit: covered, but would end the program early */
		bus_io(&a->iobus, port, &v, sz, (data[i + 1] & 0x40) != 0);
	}
	state_writer_init(&w1);
	state_writer_init(&w2);
	if (devices_save(a->devices, a->ndevices, &w1) ||
	    devices_restore(b->devices, b->ndevices, w1.data, w1.len, &e) ||
	    devices_save(b->devices, b->ndevices, &w2))
		abort();
	if (w1.len != w2.len || memcmp(w1.data, w2.data, w1.len))
		abort();
	/* the raw input as a (corrupt) state image must be refused or loaded, never crash */
	devices_restore(b->devices, b->ndevices, data, size, &e);
	state_writer_free(&w1);
	state_writer_free(&w2);
	fake_host_free(a);
	fake_host_free(b);
	return 0;
}
