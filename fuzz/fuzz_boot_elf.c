/*
 * fuzz_boot_elf.c - libFuzzer target for the PVH ELF loader.
 *
 * The input is a kernel file handed to boot_load_buf() on one 64 MiB guest
 * (created once: the loader must not depend on fresh memory).  Inputs that
 * do not start with the ELF magic get it prepended, so every run reaches the
 * ELF parser instead of stopping at format detection.  Any crash, sanitizer
 * report or accepted load that leaves the promised invariants broken is a bug.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static const uint8_t initrd[] = "initrd";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct boot_info bi;
	struct error e;
	uint8_t *k;

	if (!mem.host && guest_mem_create_anon(&mem, 64 << 20, &e))
		abort();
	if (size > (1 << 20))
		return 0;
	k = malloc(size + 4);
	if (!k)
		return 0;
	memcpy(k, "\177ELF", 4);
	memcpy(k + 4, data, size);
	if (size >= 4 && !memcmp(data, "\177ELF", 4))
		memcpy(k, data, size);
	else
		size += 4;
	if (boot_load_buf(&mem, "fuzz", k, size, initrd, sizeof(initrd),
			  "console=ttyS0", 2, &bi, &e) == 0) {
		/* accepted: the promises of boot_elf_load must hold */
		if (bi.proto != BOOT_PVH || bi.kernel_start < BOOT_KERNEL_ADDR ||
		    bi.kernel_end > guest_mem_low_end(&mem) || bi.entry < bi.kernel_start ||
		    bi.entry >= bi.kernel_end || bi.initrd_start < bi.kernel_end)
			abort();
	}
	free(k);
	return 0;
}
