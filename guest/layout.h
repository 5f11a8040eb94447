/*
 * layout.h - constants shared by entry.S and the C code: GDT selectors,
 * per-CPU limits, stack sizes, interrupt vectors and fixed low addresses.
 *
 * Included from assembly, so only #defines outside the __ASSEMBLER__ guard.
 */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define GUEST_LOAD_PA   0x100000	/* linked and loaded at 1 MiB */
#define MAX_CPUS        64

/* GDT: fixed descriptors, then one 16-byte TSS descriptor per CPU. */
#define SEL_CODE32      0x08
#define SEL_KDATA       0x10
#define SEL_KCODE       0x18
#define SEL_UDATA       0x20
#define SEL_UCODE       0x28
#define SEL_TSS0        0x30

#define KSTACK_SIZE     8192		/* ring-0 stack per CPU (traps only) */
#define USTACK_SIZE     32768		/* ring-3 stack per CPU */

/* Real-mode AP trampoline: one page below 1 MiB, SIPI vector = PA >> 12. */
#define TRAMPOLINE_PA   0x8000

/* Interrupt vectors besides the 32 exceptions. */
#define VEC_WAKE        0xf0		/* IPI that wakes a sleeping CPU */
#define VEC_SPURIOUS    0xff		/* local APIC spurious vector */
#define VEC_PROTECT     0xe0		/* pv-protect faults (protect.c), IOAPIC pin 22 */
#define TRAP_STUB_SIZE  16		/* bytes between stubs in trap_stubs */
#define TRAP_STUBS      35		/* 0..31, VEC_WAKE, VEC_SPURIOUS, VEC_PROTECT */

/*
 * Virtio drivers: rings, request headers and small buffers come from a
 * static pool in the image's bss (virtq.c), reset by each command.  The
 * image then ends below 10 MiB, clear of the 16 MiB the tests fill.
 */
#define VIRTIO_POOL_SIZE (4u << 20)

#endif
