/*
 * trap.h - the ring-0 side of the guest: per-CPU descriptor tables, the
 * trap handler, and the calls that leave ring 0 for good.
 */
#ifndef GUEST_TRAP_H
#define GUEST_TRAP_H

#include <stdint.h>
#include "layout.h"

/* What trap_common (entry.S) pushes, lowest address first. */
struct trap_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;	/* pushed by the CPU */
};

/* Ring-0 entry points called from entry.S. */
void boot_bsp(uint64_t start_info_pa);
void boot_ap(uint32_t cpu);
void trap_handler(struct trap_frame *f);

/* entry.S */
void enter_user(void *rip, uint64_t rsp, uint64_t arg) __attribute__((noreturn));
void user_wait_eq(const volatile uint32_t *addr, uint32_t val);

/* Set by the boot CPU (ring 3) before each SIPI; read by the AP in ring 0. */
extern volatile uint64_t ap_boot_rsp;
extern volatile uint32_t ap_boot_cpu;

extern char kstacks[MAX_CPUS][KSTACK_SIZE];
uint64_t kstack_top(uint32_t cpu);
uint64_t ustack_top(uint32_t cpu);

#endif
