/*
 * main.h - the boot CPU's ring-3 entry.
 */
#ifndef GUEST_MAIN_H
#define GUEST_MAIN_H

#include <stdint.h>

void guest_main(uint64_t start_info_pa) __attribute__((noreturn));

#endif
