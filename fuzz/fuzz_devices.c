/*
 * fuzz_devices.c - a hostile guest's port I/O against every legacy device.
 *
 * The input is a program of port accesses (port, size, direction, value)
 * run through the I/O bus of a fake device host (tests/fake_host.h: no VM,
 * no KVM) holding every device the builder makes for a default
 * configuration; after the program, every device's state is saved,
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

static struct fake_host *fuzz_vm(void)
{
	struct fake_host *h = fake_host_new(256ULL << 20);
	struct vm_config cfg;
	struct error e;

	vm_config_init(&cfg);
	if (!h || devices_create_all(&h->host, &cfg, &e))
		abort();
	vm_config_free(&cfg);
	return h;
}

/* Ports worth hitting: every claimed range plus a few unclaimed ones. */
static const uint16_t ports[] = {
	0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x60, 0x64, 0x70, 0x71,
	0x600, 0x601, 0x602, 0x603, 0x604, 0x605, 0xf4, 0xf5, 0x80, 0xed, 0x92, 0x2f8, 0xcf8,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_host *a = fuzz_vm(), *b = fuzz_vm();
	struct state_writer w1, w2;
	struct error e;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	for (size_t i = 0; i + 6 <= size; i += 6) {
		uint16_t port = ports[data[i] % (sizeof(ports) / sizeof(ports[0]))];
		int sz = 1 << (data[i + 1] & 3);
		uint32_t v;

		if (sz == 8)
			sz = 4;
		memcpy(&v, data + i + 2, 4);
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
