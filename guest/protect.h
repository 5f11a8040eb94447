/*
 * protect.h - the `protect` command (protect.c): guest-set page
 * protection through the VMM's pv-protect port, the handler on CPU 0.
 */
#ifndef GUEST_PROTECT_H
#define GUEST_PROTECT_H

#include <stdbool.h>
#include <stdint.h>

/* pv-protect interrupts taken (VEC_PROTECT, counted by trap.c). */
extern volatile uint32_t protect_irqs;

bool protect_cmd(int argc, char **argv);

#endif
