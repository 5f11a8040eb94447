/*
 * legacy.c - the little PC ports every guest pokes at boot.
 *
 *   0x80  POST diagnostic port: guests write it as an I/O delay; ignored.
 *   0xed  alternative I/O delay port; ignored.
 *   0x92  System Control Port A: bit 1 A20 gate (always on), bit 0 fast
 *         reset, which stops the VM like the i8042 reset.
 *
 * Claiming them keeps the unclaimed-access counter meaningful: what is left
 * there is what a guest touched that Shoal really does not have.
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

static void legacy_io_read(struct device *d, uint16_t port, void *data, int size)
{
	memset(data, port == 0x92 ? 0x02 : 0xff, (size_t)size);
	if (port == 0x92)
		memset((uint8_t *)data + 1, 0, (size_t)size - 1);
}

static void legacy_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	if (port == 0x92 && (*(const uint8_t *)data & 0x01) && d->host)
		device_host_stop(d->host, EXIT_POWEROFF, "guest requested a reset through port 0x92; stopping");
}

const struct device_ops legacy_ops = {
	.type = "legacy",
	.state_version = 1,
	.io_read = legacy_io_read,
	.io_write = legacy_io_write,
};

int legacy_create(const struct device_host *host, struct error *e)
{
	struct device *d = device_new(host, &legacy_ops, "legacy", NULL);

	if (!d)
		return error_set(e, EXIT_HOST, "out of memory");
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, 0x80, 1, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, 0xed, 1, d) || device_host_map(host, DEVICE_SPACE_IO, 0x92, 1, d))
		return error_set(e, EXIT_HOST, "cannot claim ports 0x80, 0xed, 0x92");
	return 0;
}
