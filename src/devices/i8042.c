/*
 * i8042.c - the PS/2 keyboard controller, as far as a VM needs it.
 *
 * Shoal has no keyboard; the controller exists because guests reset the
 * machine through it (command 0xfe, or clearing bit 0 of the output port)
 * and because Linux probes it at boot.  It answers the probe commands
 * (self test, interface test, controller configuration byte) and reports
 * an empty, working controller.  A reset request stops the VM with status
 * 0, as Firecracker does: Shoal does not reboot a guest in place.
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

#define I8042_DATA    0x60
#define I8042_CMD     0x64
#define I8042_STATE_VERSION 1

#define STR_OBF       0x01   /* output buffer full */
#define STR_SYS       0x04   /* system flag: passed self test */
#define STR_CMD       0x08   /* last write was a command */
#define CTR_KBDINT    0x01
#define I8042_IRQ     1

struct i8042 {
	uint8_t ctr;           /* controller configuration byte */
	uint8_t status;
	uint8_t out;           /* output buffer */
	uint8_t pending_cmd;   /* command waiting for its data byte */
	uint8_t outport;
};

static void i8042_output(struct device *d, uint8_t v)
{
	struct i8042 *k = d->priv;

	k->out = v;
	k->status |= STR_OBF;
	if ((k->ctr & CTR_KBDINT) && d->host) {
		device_host_irq_line(d->host, I8042_IRQ, 1);
		device_host_irq_line(d->host, I8042_IRQ, 0);
	}
}

static void i8042_reset_request(struct device *d)
{
	if (d->host)
		device_host_stop(d->host, EXIT_POWEROFF, "guest requested a reset through the i8042; stopping");
}

static void i8042_command(struct device *d, uint8_t cmd)
{
	struct i8042 *k = d->priv;

	k->status |= STR_CMD;
	switch (cmd) {
	case 0x20: i8042_output(d, k->ctr); break;          /* read CTR */
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
		k->pending_cmd = cmd; break;                  /* command with data */
	case 0xa7: k->ctr |= 0x20; break;                   /* disable aux */
	case 0xa8: k->ctr &= ~0x20; break;                  /* enable aux */
	case 0xa9: i8042_output(d, 0x00); break;            /* aux interface test */
	case 0xaa: k->status |= STR_SYS; i8042_output(d, 0x55); break;  /* self test */
	case 0xab: i8042_output(d, 0x00); break;            /* kbd interface test */
	case 0xad: k->ctr |= 0x10; break;                   /* disable kbd */
	case 0xae: k->ctr &= ~0x10; break;                  /* enable kbd */
	case 0xd0: i8042_output(d, k->outport); break;      /* read output port */
	case 0xfe: i8042_reset_request(d); break;           /* pulse reset */
	default: break;
	}
}

static void i8042_data(struct device *d, uint8_t v)
{
	struct i8042 *k = d->priv;
	uint8_t cmd = k->pending_cmd;

	k->status &= ~STR_CMD;
	k->pending_cmd = 0;
	switch (cmd) {
	case 0x60: k->ctr = v; break;
	case 0xd1:
		k->outport = v;
		if (!(v & 0x01))
			i8042_reset_request(d);
		break;
	case 0xd2: case 0xd3: i8042_output(d, v); break;    /* echo as if from device */
	case 0xd4: i8042_output(d, 0xfe); break;            /* no mouse: resend */
	default: i8042_output(d, 0xfa); break;              /* keyboard ACK */
	}
}

static void i8042_io_read(struct device *d, uint16_t port, void *data, int size)
{
	struct i8042 *k = d->priv;

	memset(data, 0, (size_t)size);
	if (port == I8042_DATA) {
		*(uint8_t *)data = k->out;
		k->status &= ~STR_OBF;
	} else {
		*(uint8_t *)data = k->status;
	}
}

static void i8042_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	uint8_t v = *(const uint8_t *)data;

	if (port == I8042_CMD)
		i8042_command(d, v);
	else
		i8042_data(d, v);
}

static void i8042_save(struct device *d, struct state_writer *w)
{
	struct i8042 *k = d->priv;

	state_put_u8(w, k->ctr); state_put_u8(w, k->status); state_put_u8(w, k->out);
	state_put_u8(w, k->pending_cmd); state_put_u8(w, k->outport);
}

static int i8042_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct i8042 *k = d->priv;

	k->ctr = state_get_u8(r); k->status = state_get_u8(r); k->out = state_get_u8(r);
	k->pending_cmd = state_get_u8(r); k->outport = state_get_u8(r);
	return 0;
}

const struct device_ops i8042_ops = {
	.type = "i8042",
	.state_version = I8042_STATE_VERSION,
	.io_read = i8042_io_read,
	.io_write = i8042_io_write,
	.save = i8042_save,
	.restore = i8042_restore,
};

int i8042_create(const struct device_host *host, struct error *e)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	struct device *d = k ? device_new(host, &i8042_ops, "i8042", k) : NULL;

	if (!d) {
		free(k);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	k->ctr = 0x47 & ~CTR_KBDINT;  /* translate, sys flag, interrupts off */
	k->status = STR_SYS;
	k->outport = 0x03;            /* reset line high, A20 on */
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, I8042_DATA, 1, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, I8042_CMD, 1, d))
		return error_set(e, EXIT_HOST, "cannot claim ports 0x60/0x64");
	return 0;
}
