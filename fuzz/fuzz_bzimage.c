/*
 * fuzz_bzimage.c - libFuzzer target for the bzImage (Linux 64-bit boot
 * protocol) loader.
 *
 * The input is a kernel file handed to boot_load_buf() on one 64 MiB guest
 * created once.  Inputs of at least 0x206 bytes get "HdrS" written at 0x202
 * so that every run reaches the setup-header checks rather than format
 * detection; the fuzzer still controls everything else.  An accepted image
 * must leave the kernel, its decompression area and the initrd in RAM and
 * apart.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static const uint8_t initrd[4097] = { 1 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct boot_info bi;
	struct error e;
	uint8_t *k;

	if (!mem.host && guest_mem_create_anon(&mem, 64 << 20, &e))
		abort();
	if (size > (1 << 20))
		return 0;
	k = malloc(size ? size : 1);
	if (!k)
		return 0;
	memcpy(k, data, size);
	if (size >= 0x206)
		memcpy(k + 0x202, "HdrS", 4);
	if (boot_load_buf(&mem, "fuzz", k, size, initrd, sizeof(initrd),
			  "console=ttyS0", 1, &bi, &e) == 0) {
		if (bi.proto != BOOT_LINUX64 || bi.kernel_start != BOOT_KERNEL_ADDR ||
		    bi.kernel_end > guest_mem_low_end(&mem) ||
		    bi.initrd_start < bi.kernel_end ||
		    bi.initrd_start + bi.initrd_size > guest_mem_low_end(&mem))
			abort();
	}
	free(k);
	return 0;
}
