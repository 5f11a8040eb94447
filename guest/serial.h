/*
 * serial.h - the COM1 16550 console.
 */
#ifndef GUEST_SERIAL_H
#define GUEST_SERIAL_H

#include <stddef.h>

void serial_init(void);
void serial_write(const char *s, size_t n);
/* One received byte, or -1 when none is waiting.  Never blocks. */
int serial_getc(void);

#endif
