/*
 * testdev.c - the test/exit device: how the test guest talks to the VMM.
 *
 * Port 0xf4 stops the VM with the written value as the exit status (QEMU's
 * isa-debug-exit uses the same port).  Port 0xf5 takes a byte stream of
 * report lines; each complete line goes to the VM's report callback (test
 * harnesses, benchmarks) and to the log at info level.  A line longer than
 * TESTDEV_REPORT_MAX is cut there and the rest of it dropped, so a guest
 * that never sends '\n' costs a bounded buffer.  See src/abi/testdev.h.
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>

#include "abi/testdev.h"
#include "base/exitcode.h"
#include "base/log.h"

#define TESTDEV_STATE_VERSION 1

struct testdev {
	char line[TESTDEV_REPORT_MAX + 1];
	uint32_t len;
	bool overflow;          /* dropping the rest of an over-long line */
	uint64_t reports;
};

static void testdev_report_byte(struct device *d, uint8_t ch)
{
	struct testdev *t = d->priv;

	if (ch != '\n') {
		if (t->len < TESTDEV_REPORT_MAX)
			t->line[t->len++] = (char)ch;
		else
			t->overflow = true;
		return;
	}
	t->line[t->len] = '\0';
	t->reports++;
	log_info("guest report: %s%s", t->line, t->overflow ? " [cut]" : "");
	device_host_report(d->host, t->line);
	t->len = 0;
	t->overflow = false;
}

static void testdev_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	uint32_t v = 0;

	memcpy(&v, data, (size_t)size);
	if (port == TESTDEV_PORT_EXIT) {
		device_host_stop(d->host, (int)(v & 0xff),
				"guest exited with code %u through the test device", v & 0xff);
		return;
	}
	for (int i = 0; i < size; i++)
		testdev_report_byte(d, (uint8_t)(v >> (8 * i)));
}

static void testdev_io_read(struct device *d, uint16_t port, void *data, int size)
{
	memset(data, 0, (size_t)size);   /* present, nothing to read */
}

static void testdev_save(struct device *d, struct state_writer *w)
{
	struct testdev *t = d->priv;

	state_put_u32(w, t->len);
	state_put_bytes(w, t->line, t->len);
	state_put_u8(w, t->overflow);
}

static int testdev_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct testdev *t = d->priv;

	t->len = state_get_u32(r);
	if (t->len > TESTDEV_REPORT_MAX)
		return -1;
	state_get_bytes(r, t->line, t->len);
	t->overflow = state_get_u8(r) != 0;
	return 0;
}

const struct device_ops testdev_ops = {
	.type = "testdev",
	.state_version = TESTDEV_STATE_VERSION,
	.io_read = testdev_io_read,
	.io_write = testdev_io_write,
	.save = testdev_save,
	.restore = testdev_restore,
};

int testdev_create(const struct device_host *host, struct error *e)
{
	struct testdev *t = calloc(1, sizeof(*t));
	struct device *d = t ? device_new(host, &testdev_ops, "testdev", t) : NULL;

	if (!d) {
		free(t);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, TESTDEV_PORT_EXIT, 2, d))
		return error_set(e, EXIT_HOST, "cannot claim ports 0xf4-0xf5");
	return 0;
}
