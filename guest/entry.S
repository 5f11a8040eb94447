/*
 * entry.S - everything of the test guest that must be assembly: the PVH
 * entry note, the 32-bit entry, the switch to long mode, the real-mode AP
 * trampoline, the static GDT and identity page tables, the trap stubs and
 * the drop to ring 3.
 *
 * Why so much is static data: ring-0 code is emulated one instruction at a
 * time on the project's KVM (about 650 ns each), so nothing here loops over
 * a large range.  The page tables that map the first 4 GiB with 2 MiB pages
 * (P|RW|US|PS: user-accessible, so ring 3 reaches RAM, the local APIC and
 * the page tables themselves) and the GDT are assembled into the image;
 * entering long mode is a dozen instructions.  Memory above 4 GiB is mapped
 * later, from ring 3, by writing entries into these same tables (boot.c).
 *
 * Boot CPU:  PVH loader -> pvh_entry32 (32-bit, paging off, EBX = start
 *            info) -> enter_long_mode -> entry64 -> boot_bsp (trap.c, C,
 *            ring 0) -> enter_user -> guest_main (main.c, ring 3).
 * Other CPUs: SIPI -> tramp_start (real mode, copied to TRAMPOLINE_PA by
 *            smp.c) -> ap_entry32 -> enter_long_mode -> entry64 -> boot_ap
 *            -> enter_user -> ap_main (smp.c, ring 3).  An AP takes its
 *            ring-0 stack and CPU index from ap_boot_rsp / ap_boot_cpu,
 *            which the boot CPU sets before each SIPI (one AP at a time).
 */
#include "layout.h"

/* ---- Xen PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen" ---- */
	.section .note.Xen, "a"
	.balign 4
	.long 4			/* namesz: "Xen\0" */
	.long 4			/* descsz: a 32-bit physical address */
	.long 18		/* type: XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long pvh_entry32

	.section .text.entry, "ax"
	.code32
/*
 * PVH entry: 32-bit protected mode, flat CS, paging off, interrupts off,
 * EBX = physical address of struct hvm_start_info.  No stack is needed
 * before long mode.  EDI says which CPU kind we are (0 = boot CPU).
 */
	.globl pvh_entry32
pvh_entry32:
	cli
	cld
	movl %ebx, %esi
	lgdt gdt_ptr
	ljmp $SEL_CODE32, $1f
1:	xorl %edi, %edi
	jmp enter_long_mode

/* APs arrive here from the trampoline, in 32-bit mode on our GDT. */
	.globl ap_entry32
ap_entry32:
	movl $1, %edi

/* Common: PAE, CR3, EFER.LME, then paging on, then a far jump to 64-bit. */
enter_long_mode:
	movw $SEL_KDATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl %cr4, %eax
	orl $0x20, %eax			/* CR4.PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* IA32_EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE, $entry64

	.code64
entry64:
	xorl %eax, %eax
	movw %ax, %fs
	movw %ax, %gs
	testl %edi, %edi
	jnz 2f
	leaq kstacks + KSTACK_SIZE(%rip), %rsp
	movl %esi, %edi			/* start info PA, zero-extended */
	call boot_bsp
	jmp halt_forever
2:	movq ap_boot_rsp(%rip), %rsp
	movl ap_boot_cpu(%rip), %edi
	call boot_ap
halt_forever:
	cli
	hlt
	jmp halt_forever

/*
 * enter_user(rip, rsp, arg): iretq to ring 3 at rip with stack rsp, first
 * argument arg, interrupts off.  RFLAGS asks for IOPL 3, but ring-3 port
 * access really rests on the TSS I/O bitmap (see trap.c).  Never returns.
 */
	.globl enter_user
enter_user:
	pushq $(SEL_UDATA | 3)
	pushq %rsi
	pushq $0x3002
	pushq $(SEL_UCODE | 3)
	pushq %rdi
	movq %rdx, %rdi
	iretq

/*
 * user_wait_eq(addr, val), called from ring 3: HLT there raises #GP, which
 * trap.c recognizes; with interrupts off it re-reads *(u32 *)addr and, if
 * it still equals val, halts until an interrupt (the wake IPI).  So a
 * wake-up sent between the caller's check and the HLT is never lost.
 */
	.globl user_wait_eq
user_wait_eq:
	hlt
	ret

/* ---- trap stubs: TRAP_STUB_SIZE bytes apart, see trap.c ---- */
.macro STUB vec, has_err
	.balign TRAP_STUB_SIZE
	.if \has_err == 0
	pushq $0
	.endif
	pushq $\vec
	jmp trap_common
.endm

	.balign TRAP_STUB_SIZE
	.globl trap_stubs
trap_stubs:
	STUB 0,0;  STUB 1,0;  STUB 2,0;  STUB 3,0;  STUB 4,0;  STUB 5,0
	STUB 6,0;  STUB 7,0;  STUB 8,1;  STUB 9,0;  STUB 10,1; STUB 11,1
	STUB 12,1; STUB 13,1; STUB 14,1; STUB 15,0; STUB 16,0; STUB 17,1
	STUB 18,0; STUB 19,0; STUB 20,0; STUB 21,1; STUB 22,0; STUB 23,0
	STUB 24,0; STUB 25,0; STUB 26,0; STUB 27,0; STUB 28,0; STUB 29,1
	STUB 30,1; STUB 31,0
	STUB VEC_WAKE,0
	STUB VEC_SPURIOUS,0
	STUB VEC_PROTECT,0

/* Save the general registers as struct trap_frame (trap.h), call C. */
trap_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	cld
	call trap_handler
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp			/* vector, error code */
	iretq

/*
 * ---- AP trampoline: copied to TRAMPOLINE_PA; starts in real mode at
 * CS:IP = (TRAMPOLINE_PA >> 4):0.  Loads our GDT (its pseudo-descriptor is
 * inside the copy, addressed absolutely with DS = 0), sets PE and jumps to
 * ap_entry32 in the image.
 */
	.section .rodata, "a"
	.code16
	.globl tramp_start, tramp_end
tramp_start:
	cli
	cld
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl TRAMPOLINE_PA + (tramp_gdtr - tramp_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $SEL_CODE32, $ap_entry32
	.balign 8
tramp_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
tramp_end:
	.code64

/* ---- static data: identity page tables and the GDT ---- */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl pml4, pdpt
pml4:
	.quad pdpt + 0x7		/* P | RW | US */
	.fill 511, 8, 0
pdpt:					/* 4 x 1 GiB via pd_low; more in boot.c */
	.quad pd_low + 0x0007
	.quad pd_low + 0x1007
	.quad pd_low + 0x2007
	.quad pd_low + 0x3007
	.fill 508, 8, 0
pd_low:					/* 2048 x 2 MiB pages: P|RW|US|PS */
	.set addr, 0
	.rept 2048
	.quad addr + 0x87
	.set addr, addr + 0x200000
	.endr

	.section .data, "aw"
	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08 32-bit code, ring 0 */
	.quad 0x00cf92000000ffff	/* 0x10 data, ring 0 */
	.quad 0x00af9a000000ffff	/* 0x18 64-bit code, ring 0 */
	.quad 0x00cff2000000ffff	/* 0x20 data, ring 3 */
	.quad 0x00affa000000ffff	/* 0x28 64-bit code, ring 3 */
	.fill 2 * MAX_CPUS, 8, 0	/* 0x30: TSS descriptors, trap.c */
	.globl gdt_end
gdt_end:
	.balign 8
gdt_ptr:				/* read as 6 bytes by the 32-bit LGDT */
	.word gdt_end - gdt - 1
	.quad gdt
	.section .note.GNU-stack, "", @progbits
