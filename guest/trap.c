/*
 * trap.c - the guest's entire ring-0 C code: the IDT, one TSS per CPU, the
 * trap handler, and the hand-off to ring 3.
 *
 * Ring 0 is emulated instruction by instruction on the project's KVM, so
 * this file does as little as it can: 35 IDT gates (exceptions, the wake
 * IPI, the spurious vector, pv-protect's interrupt) are written once by
 * the boot CPU, each CPU writes its own TSS descriptor and loads its
 * tables, and then it leaves for ring 3 and never comes back except
 * through a trap.  VEC_PROTECT is counted in protect_irqs (protect.c).
 *
 * Port I/O from ring 3: each TSS carries a full, all-zero I/O permission
 * bitmap, so every port is open to ring 3.  RFLAGS.IOPL=3 alone is not
 * enough here: on the kvm_pvm hosts the IOPL given by IRETQ (or POPFQ) does
 * not reach ring 3 (it reads back as 0 and OUT faults).  The bitmap works
 * there and on real KVM.  It is bss (zero) already; only the 0xff byte the
 * CPU wants after it is written.
 *
 * Traps while in ring 3:
 *  - #GP on a HLT byte (0xf4) is a request to sleep (user_wait_eq): with
 *    interrupts still off, re-check the watched word and sleep (below) only
 *    if it still holds the expected value; then resume after the HLT.
 *  - VEC_WAKE is the wake-up IPI, or the one-shot APIC timer of
 *    lapic_sleep_us: EOI and return.
 *  - #MC (18), a machine check the VMM delivers for a memory error in a
 *    page with no good copy (docs/memory.md): "mce addr=0x..." (the
 *    bank's MCi_ADDR), the bank and MCG_STATUS cleared, and this CPU stops
 *    for good (the access it interrupted cannot go on); the VM runs on.
 *    CR4.MCE is set on every CPU, without which a machine check would be
 *    a shutdown.
 *  - anything else is fatal: vector, error code, RIP (and CR2) go to the
 *    console and as a "fatal ..." report, then exit code 2 on port 0xf4.
 *
 * Interrupts are off in ring 3 (RFLAGS.IF=0): an IPI or timer that
 * arrives early stays pending in the local APIC until the sleep takes it.
 * The sleep is STI;NOP;HLT, and an interrupt taken before the HLT (at its
 * address, where the STI's shadow puts the one already pending, or at the
 * NOP's, where a CPU that ignores the shadow would) returns past it
 * (skip_user_hlt).  It does not lean on the STI shadow
 * covering the HLT, the classic STI;HLT: in the nested KVM box (QEMU's
 * software SVM under Linux's KVM) an interrupt already pending at an
 * STI;HLT was sometimes never delivered, and the vCPU slept in the kernel
 * for good, an idle guest that no longer read its console (seen as the
 * flaky daemon_snapshot.sh of 2026-12-07: 3 of 5 idle test VMs stuck, with
 * their exit counts still, fresh and restored alike).  Real hardware
 * takes STI;HLT as documented; the NOP costs nothing there.
 */
#include "trap.h"
#include "arch.h"
#include "report.h"
#include "smp.h"
#include "main.h"
#include "acpi.h"
#include "tsc.h"
#include "protect.h"

struct idt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type;		/* 0x8e: present, DPL 0, interrupt gate */
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t zero;
} __attribute__((packed));

/* 64-bit TSS: only rsp0 (stack for traps from ring 3) is used. */
struct tss {
	uint32_t rsvd0;
	uint64_t rsp[3];
	uint64_t rsvd1;
	uint64_t ist[7];
	uint64_t rsvd2;
	uint16_t rsvd3;
	uint16_t iomap;		/* offset of iobitmap */
	uint8_t iobitmap[8192];	/* all zero: every port open to ring 3 */
	uint8_t iobitmap_end;	/* 0xff, as the CPU requires */
} __attribute__((packed));

struct table_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

_Static_assert(__builtin_offsetof(struct tss, iobitmap) == 104, "TSS layout");
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate layout");

extern uint64_t gdt[];
extern char trap_stubs[];

static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct tss tss[MAX_CPUS] __attribute__((aligned(16)));
/* entry.S uses kstacks[0] as the boot CPU's stack before any C runs. */
char kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(16)));
static char ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));

volatile uint64_t ap_boot_rsp;
volatile uint32_t ap_boot_cpu;

uint64_t kstack_top(uint32_t cpu)
{
	return (uint64_t)&kstacks[cpu][KSTACK_SIZE];
}

uint64_t ustack_top(uint32_t cpu)
{
	return (uint64_t)&ustacks[cpu][USTACK_SIZE];
}

static void idt_set(unsigned vec, uint64_t handler)
{
	struct idt_gate *g = &idt[vec];

	g->off_lo = (uint16_t)handler;
	g->sel = SEL_KCODE;
	g->ist = 0;
	g->type = 0x8e;
	g->off_mid = (uint16_t)(handler >> 16);
	g->off_hi = (uint32_t)(handler >> 32);
}

/* Boot CPU only: 35 gates, the rest stay not-present (a #GP, then fatal). */
static void idt_init(void)
{
	uint64_t base = (uint64_t)trap_stubs;
	unsigned i;

	for (i = 0; i < 32; i++)
		idt_set(i, base + i * TRAP_STUB_SIZE);
	idt_set(VEC_WAKE, base + 32 * TRAP_STUB_SIZE);
	idt_set(VEC_SPURIOUS, base + 33 * TRAP_STUB_SIZE);
	idt_set(VEC_PROTECT, base + 34 * TRAP_STUB_SIZE);
}

/* Write this CPU's TSS descriptor and load GDT-resident TSS and the IDT. */
static void cpu_tables_load(uint32_t cpu)
{
	uint64_t base = (uint64_t)&tss[cpu];
	unsigned slot = (SEL_TSS0 >> 3) + 2 * cpu;
	struct table_ptr idtr = { sizeof(idt) - 1, (uint64_t)idt };
	uint16_t sel = SEL_TSS0 + 16 * cpu;

	tss[cpu].rsp[0] = kstack_top(cpu);
	tss[cpu].iomap = __builtin_offsetof(struct tss, iobitmap);
	tss[cpu].iobitmap_end = 0xff;
	gdt[slot] = (sizeof(struct tss) - 1) | ((base & 0xffffff) << 16) |
		    (0x89ull << 40) | (((base >> 24) & 0xff) << 56);
	gdt[slot + 1] = base >> 32;
	__asm__ volatile("ltr %0" : : "r"(sel));
	__asm__ volatile("lidt %0" : : "m"(idtr));
}

/*
 * If the hypervisor is KVM with kvmclock and does not publish the TSC rate
 * in CPUID 0x40000010 (QEMU by default), register the boot CPU's pvclock
 * page (one WRMSR, which ring 3 cannot do); tsc.c reads the rate from it.
 */
static void kvmclock_enable(void)
{
	uint32_t r[4];

	cpuid(0x40000000, 0, r);
	if (r[1] != 0x4b4d564b || r[0] < 0x40000001 || r[0] >= 0x40000010)
		return;					/* "KVMK" */
	cpuid(0x40000001, 0, r);
	if (r[0] & (1u << 3))				/* CLOCKSOURCE2 */
		__asm__ volatile("wrmsr" : : "c"(0x4b564d01),
				 "a"((uint32_t)(uint64_t)&kvmclock | 1), "d"(0));
}

static uint64_t rdmsr64(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (uint64_t)hi << 32 | lo;
}

static void wrmsr64(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static void cr4_set_mce(void)
{
	uint64_t cr4;

	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 0x40));	/* CR4.MCE */
}

/* #MC: report the first valid bank's address and stop this CPU. */
static void trap_mce(struct trap_frame *f)
{
	unsigned banks = (unsigned)(rdmsr64(0x179) & 0xff), b;	/* MCG_CAP */
	uint64_t addr = 0, status = 0;

	for (b = 0; b < banks; b++) {
		status = rdmsr64(0x401 + 4 * b);			/* MCi_STATUS */
		if (status >> 63) {					/* VAL */
			addr = rdmsr64(0x402 + 4 * b);			/* MCi_ADDR */
			wrmsr64(0x401 + 4 * b, 0);
			break;
		}
	}
	wrmsr64(0x17a, 0);						/* MCG_STATUS */
	report("mce addr=0x%lx bank=%u status=0x%lx rip=0x%lx", addr, b, status, f->rip);
	for (;;)
		__asm__ volatile("cli; hlt");
}

void boot_bsp(uint64_t start_info_pa)
{
	cr4_set_mce();
	kvmclock_enable();
	idt_init();
	cpu_tables_load(0);
	enter_user((void *)guest_main, ustack_top(0), start_info_pa);
}

void boot_ap(uint32_t cpu)
{
	cr4_set_mce();
	cpu_tables_load(cpu);
	enter_user((void *)ap_main, ustack_top(cpu), cpu);
}

/* The HLT of trap_user_hlt's sleep (its asm's label). */
extern const char user_hlt_insn[];

/* HLT executed in ring 3: sleep if the watched word is unchanged.  Not
 * inlined: its asm defines the one user_hlt_insn. */
static __attribute__((noinline)) void trap_user_hlt(struct trap_frame *f)
{
	f->rip++;
	if (*(volatile uint32_t *)f->rdi == (uint32_t)f->rsi)
		__asm__ volatile("sti; nop\n.globl user_hlt_insn\nuser_hlt_insn: hlt; cli" ::: "memory");
}

/* An interrupt taken in the sleep's STI;NOP, before its HLT: it was the
 * wake-up, so return past the HLT instead of into it.  At the HLT is where
 * the STI's shadow puts it; at the NOP is where a CPU that does not honour
 * the shadow does (the box's software SVM, we suspect: with the skip at the
 * HLT only, idle guests still stalled there). */
static void skip_user_hlt(struct trap_frame *f)
{
	if (f->rip == (uint64_t)user_hlt_insn || f->rip + 1 == (uint64_t)user_hlt_insn)
		f->rip = (uint64_t)user_hlt_insn + 1;
}

static void trap_fatal(struct trap_frame *f)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	report("fatal exception vector=%lu error=0x%lx rip=0x%lx cr2=0x%lx rsp=0x%lx cs=0x%lx rflags=0x%lx",
	       f->vector, f->error, f->rip, cr2, f->rsp, f->cs, f->rflags);
	guest_exit(2);
}

void trap_handler(struct trap_frame *f)
{
	skip_user_hlt(f);       /* any interrupt that came before the sleep's HLT */
	switch (f->vector) {
	case VEC_WAKE:
		mmio_write32(lapic_base + 0xb0, 0);	/* EOI */
		return;
	case VEC_SPURIOUS:
		return;
	case 18:
		trap_mce(f);
		return;
	case VEC_PROTECT:			/* a pv-protect fault record waits */
		protect_irqs++;
		mmio_write32(lapic_base + 0xb0, 0);	/* EOI */
		return;
	case 13:
		if ((f->cs & 3) == 3 && *(const uint8_t *)f->rip == 0xf4) {
			trap_user_hlt(f);
			return;
		}
		break;
	}
	trap_fatal(f);
}
