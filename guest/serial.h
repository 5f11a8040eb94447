/*
 * serial.h - the COM1 16550 console.
 */
#ifndef GUEST_SERIAL_H
#define GUEST_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void serial_init(void);
void serial_write(const char *s, size_t n);
/* Write c with one port access, no wait for THRE (serial.c); with look, read
 * LSR once first and return true if a received byte waits (LSR.DR).  The
 * byte stays unread. */
bool serial_tick(uint8_t c, bool look);
/* One received byte, or -1 when none is waiting.  Never blocks. */
int serial_getc(void);

#endif
