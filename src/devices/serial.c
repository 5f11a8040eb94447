/*
 * serial.c - a 16550A UART on COM1: the guest's console.
 *
 * Transmit is instant: a byte written to THR goes to the console backend at
 * once and THR is empty again, so LSR always shows THRE|TEMT.  Receive
 * comes from the console (event loop thread) into a ring buffer that stands
 * in for the FIFO; it is larger than a real FIFO so pasted text is not lost.
 *
 * Interrupts follow the 16550 priority rules for the sources we have:
 * received data (IIR 0x04) before THR empty (IIR 0x02).  The THRE interrupt
 * is "pending" from the moment THR empties (or ETBEI is enabled while it is
 * empty) until IIR is read with THRE as the source or THR is written.  The
 * IRQ line follows "any interrupt pending" as a level; KVM turns changes
 * into edges on the edge-triggered ISA pin.
 *
 * Loopback (MCR bit 4) is emulated because Linux's 8250 driver probes with
 * it: THR bytes loop to RBR and MSR mirrors the MCR outputs.
 *
 * Nothing the guest writes can break this device: every register value is
 * legal, so it has no broken state.
 */
#include "devices/device.h"

#include <stdlib.h>
#include <string.h>

#include "abi/testdev.h"
#include "base/exitcode.h"

#define SERIAL_STATE_VERSION 1
#define SERIAL_RX_SIZE 4096   /* power of two */

/* Register offsets */
enum { UART_RBR = 0, UART_IER = 1, UART_IIR = 2, UART_LCR = 3, UART_MCR = 4,
       UART_LSR = 5, UART_MSR = 6, UART_SCR = 7 };

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IIR_NONE  0x01
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_FIFO  0xc0
#define LCR_DLAB  0x80
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40
#define FCR_FIFO  0x01
#define FCR_CLRRX 0x02

struct serial {
	uint8_t ier, lcr, mcr, scr, fcr, lsr_oe;
	uint8_t dll, dlm;
	bool thri_pending;        /* THR-empty interrupt latched */
	int irq_level;            /* last level driven on the IRQ line */
	uint32_t rx_head, rx_tail; /* ring: tail == head is empty */
	uint8_t rx[SERIAL_RX_SIZE];
	uint64_t tx_bytes, rx_bytes, rx_dropped;
};

static uint32_t serial_rx_count(const struct serial *s)
{
	return s->rx_head - s->rx_tail;
}

static void serial_rx_push(struct serial *s, uint8_t ch)
{
	if (serial_rx_count(s) == SERIAL_RX_SIZE) {
		s->rx_dropped++;
		s->lsr_oe = LSR_OE;
		return;
	}
	s->rx[s->rx_head++ & (SERIAL_RX_SIZE - 1)] = ch;
	s->rx_bytes++;
}

static uint8_t serial_iir(const struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_FIFO) ? IIR_FIFO : 0;

	if ((s->ier & IER_RDI) && serial_rx_count(s))
		return IIR_RDI | fifo;
	if ((s->ier & IER_THRI) && s->thri_pending)
		return IIR_THRI | fifo;
	return IIR_NONE | fifo;
}

/* Drive the IRQ line to match the pending state. */
static void serial_update_irq(struct device *d)
{
	struct serial *s = d->priv;
	int level = !(serial_iir(s) & IIR_NONE);

	if (level != s->irq_level) {
		s->irq_level = level;
		device_host_irq_line(d->host, COM1_IRQ, level);
	}
}

static void serial_tx(struct device *d, uint8_t ch)
{
	struct serial *s = d->priv;

	s->tx_bytes++;
	if (s->mcr & MCR_LOOP)
		serial_rx_push(s, ch);
	else
		device_host_console_write(d->host, &ch, 1);
	s->thri_pending = true;
}

static uint8_t serial_read_reg(struct device *d, int reg)
{
	struct serial *s = d->priv;
	uint8_t v;

	switch (reg) {
	case UART_RBR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		if (!serial_rx_count(s))
			return 0;
		return s->rx[s->rx_tail++ & (SERIAL_RX_SIZE - 1)];
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR:
		v = serial_iir(s);
		if ((v & 0x0f) == IIR_THRI)
			s->thri_pending = false;
		return v;
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT | s->lsr_oe | (serial_rx_count(s) ? LSR_DR : 0);
		s->lsr_oe = 0;
		return v;
	case UART_MSR:
		if (s->mcr & MCR_LOOP)  /* DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
			return (uint8_t)(((s->mcr & 0x01) << 5) | ((s->mcr & 0x02) << 3) |
					 ((s->mcr & 0x04) << 4) | ((s->mcr & 0x08) << 4));
		return 0xb0;  /* DCD, DSR, CTS: a cable is attached */
	default:
		return s->scr;
	}
}

static void serial_write_reg(struct device *d, int reg, uint8_t v)
{
	struct serial *s = d->priv;

	switch (reg) {
	case UART_RBR:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			serial_tx(d, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thri_pending = true;  /* THR is always empty */
			s->ier = v & 0x0f;
		}
		break;
	case UART_IIR:  /* FCR */
		s->fcr = v & 0xc9;
		if (v & FCR_CLRRX)
			s->rx_tail = s->rx_head;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		break;
	case UART_SCR:
		s->scr = v;
		break;
	default:
		break;  /* LSR and MSR are read-only */
	}
}

static void serial_io_read(struct device *d, uint16_t port, void *data, int size)
{
	memset(data, 0, (size_t)size);
	*(uint8_t *)data = serial_read_reg(d, port - COM1_PORT);
	serial_update_irq(d);
}

static void serial_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	serial_write_reg(d, port - COM1_PORT, *(const uint8_t *)data);
	serial_update_irq(d);
}

void serial_receive(struct device *d, const uint8_t *buf, int len)
{
	pthread_mutex_lock(&d->lock);
	for (int i = 0; i < len; i++)
		serial_rx_push(d->priv, buf[i]);
	serial_update_irq(d);
	pthread_mutex_unlock(&d->lock);
}

static void serial_console_input(void *opaque, const uint8_t *buf, int len)
{
	serial_receive(opaque, buf, len);
}

static void serial_save(struct device *d, struct state_writer *w)
{
	struct serial *s = d->priv;
	uint32_t n = serial_rx_count(s);

	state_put_u8(w, s->ier); state_put_u8(w, s->lcr); state_put_u8(w, s->mcr);
	state_put_u8(w, s->scr); state_put_u8(w, s->fcr); state_put_u8(w, s->lsr_oe);
	state_put_u8(w, s->dll); state_put_u8(w, s->dlm);
	state_put_u8(w, s->thri_pending);
	state_put_u32(w, n);
	for (uint32_t i = 0; i < n; i++)
		state_put_u8(w, s->rx[(s->rx_tail + i) & (SERIAL_RX_SIZE - 1)]);
}

static int serial_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct serial *s = d->priv;
	uint32_t n;

	s->ier = state_get_u8(r); s->lcr = state_get_u8(r); s->mcr = state_get_u8(r);
	s->scr = state_get_u8(r); s->fcr = state_get_u8(r); s->lsr_oe = state_get_u8(r);
	s->dll = state_get_u8(r); s->dlm = state_get_u8(r);
	s->thri_pending = state_get_u8(r) != 0;
	n = state_get_u32(r);
	if (r->error || n > SERIAL_RX_SIZE)
		return -1;
	s->rx_head = s->rx_tail = 0;
	for (uint32_t i = 0; i < n; i++)
		serial_rx_push(s, state_get_u8(r));
	s->irq_level = -1;  /* force the line to be driven again */
	if (d->host)
		serial_update_irq(d);
	return r->error ? -1 : 0;
}

const struct device_ops serial_ops = {
	.type = "serial",
	.state_version = SERIAL_STATE_VERSION,
	.io_read = serial_io_read,
	.io_write = serial_io_write,
	.save = serial_save,
	.restore = serial_restore,
};

int serial_create(const struct device_host *host, struct error *e)
{
	struct serial *s = calloc(1, sizeof(*s));
	struct device *d = s ? device_new(host, &serial_ops, "serial0", s) : NULL;

	if (!d) {
		free(s);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	s->lsr_oe = 0;
	if (device_host_attach(host, d) || device_host_map(host, DEVICE_SPACE_IO, COM1_PORT, 8, d))
		return error_set(e, EXIT_HOST, "serial0: cannot claim ports 0x3f8-0x3ff");
	if (host->console_attach_input)
		host->console_attach_input(host, serial_console_input, d);
	return 0;
}
