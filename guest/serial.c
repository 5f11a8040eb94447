/*
 * serial.c - COM1 (16550 UART at 0x3f8) from ring 3.
 *
 * Every port access is a VM exit (about 16 us here).  The FIFOs are left
 * off on purpose: enabling them resets the receive FIFO (in QEMU's model
 * too), which loses input that was typed or piped in before the guest
 * booted.  So output is one byte per transmitter-empty wait (LSR.THRE),
 * two exits a byte; bulk results travel on the report port instead.
 * serial_tick writes the `tick` workload's bytes: one exit a tick, the
 * byte alone, with no wait for THRE (Shoal's and QEMU's UARTs send a
 * byte at once, so the transmitter is empty by the next tick; a byte
 * written into a full one would be lost, which the host's reader sees as
 * a gap in the ticks' sequence).  Asked to look, it reads LSR once first
 * and says whether input waits (never a wait for THRE: a UART whose
 * transmitter stayed busy would hold a tick for 100000 status reads).
 * Input is polled (LSR.DR); the guest takes no serial interrupts.  Only the boot CPU uses the console (APs hand
 * their results to it), except a fatal trap, which may interleave.
 */
#include "serial.h"
#include "arch.h"
#include "abi/testdev.h"

#define UART_RBR 0	/* receive buffer (read) / transmit holding (write) */
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DR   0x01
#define LSR_THRE 0x20

void serial_init(void)
{
	outb(COM1_PORT + UART_IER, 0x00);	/* no interrupts */
	outb(COM1_PORT + UART_LCR, 0x80);	/* divisor latch */
	outb(COM1_PORT + 0, 0x01);		/* 115200 baud */
	outb(COM1_PORT + 1, 0x00);
	outb(COM1_PORT + UART_LCR, 0x03);	/* 8N1 */
	outb(COM1_PORT + UART_FCR, 0x00);	/* FIFOs stay off, see above */
	outb(COM1_PORT + UART_MCR, 0x03);	/* DTR, RTS */
}

/* Wait (boundedly: a missing UART reads 0xff) for an empty transmitter. */
static void serial_wait_tx(void)
{
	unsigned spins = 100000;

	while (!(inb(COM1_PORT + UART_LSR) & LSR_THRE) && --spins)
		cpu_relax();
}

void serial_write(const char *s, size_t n)
{
	while (n--) {
		serial_wait_tx();
		outb(COM1_PORT, (uint8_t)*s++);
	}
}

bool serial_tick(uint8_t c, bool look)
{
	uint8_t lsr = look ? inb(COM1_PORT + UART_LSR) : 0;

	outb(COM1_PORT, c);
	return lsr != 0xff && (lsr & LSR_DR);
}

int serial_getc(void)
{
	uint8_t lsr = inb(COM1_PORT + UART_LSR);

	if (lsr == 0xff || !(lsr & LSR_DR))
		return -1;
	return inb(COM1_PORT + UART_RBR);
}
