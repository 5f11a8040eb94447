/*
 * boot_bzimage.c - loading a Linux bzImage through the 64-bit boot protocol.
 *
 * A bzImage is a real-mode setup part ((setup_sects + 1) * 512 bytes,
 * starting with the boot sector and the setup header at 0x1f1) followed by
 * the protected-mode kernel (the decompressor with its payload).  A loader
 * that skips real mode, as Shoal does, follows Documentation/arch/x86/boot.rst
 * "64-bit boot protocol":
 *
 *   - check "HdrS", protocol >= 2.12 and XLF_KERNEL_64 in xloadflags;
 *   - check that the file holds the whole protected-mode kernel: syssize
 *     (in 16-byte units, 32 bits wide since 2.04) is its length as the
 *     kernel's build wrote it; a signed kernel carries its signature after
 *     that, so the file may be longer, never shorter;
 *   - copy the protected-mode kernel to 1 MiB; enter at 1 MiB + 0x200 in
 *     long mode with identity paging, RSI = boot_params (boot.c does that);
 *   - build a zeroed boot_params ("zero page") holding a copy of the setup
 *     header, then fill in the loader fields: type_of_loader 0xff,
 *     CAN_USE_HEAP, cmd_line_ptr, ramdisk_image/size, the e820 table, and
 *     acpi_rsdp_addr for protocol 2.14+.
 *
 * Memory footprint: a relocatable kernel decompresses at the load address
 * rounded up to kernel_alignment but no lower than pref_address
 * (LOAD_PHYSICAL_ADDR, usually 16 MiB), and needs init_size bytes there.
 * That whole range must be guest RAM, and the initrd goes above it, no
 * higher than initrd_addr_max.
 *
 * The header comes from an untrusted file: every field used is range
 * checked, the header copy is bounded by both the file and the setup_header
 * struct, and fields the kernel would follow as pointers (setup_data) are
 * cleared rather than passed through.
 */
#include "boot/boot_priv.h"

#include <string.h>

#include "base/exitcode.h"

#define BZ_DEFAULT_INITRD_MAX  0x37ffffffu   /* protocol < 2.03 */
#define BZ_HEAP_END            0xfe00        /* real-mode heap end, as boot.rst suggests */
#define BZ_MAX_ALIGN           (1u << 30)

/* Read the setup header, bounded by the file and by the header's own
 * declared length (0x202 + the jump's second byte). */
static int bz_read_header(const char *name, const uint8_t *k, size_t len,
			  struct setup_header *hdr, struct error *e)
{
	size_t end;

	if (len < offsetof(struct boot_params, hdr) + offsetof(struct setup_header, init_size) + 4)
		return error_set(e, EXIT_BADKERNEL, "%s: truncated bzImage setup header", name);
	memset(hdr, 0, sizeof(*hdr));
	end = 0x202 + k[0x201];
	if (end > BZ_HDR_OFFSET + sizeof(*hdr))
		end = BZ_HDR_OFFSET + sizeof(*hdr);
	if (end > len)
		end = len;
	memcpy(hdr, k + BZ_HDR_OFFSET, end - BZ_HDR_OFFSET);
	if (hdr->header != BZ_HDR_MAGIC)
		return error_set(e, EXIT_BADKERNEL, "%s: not a bzImage (no HdrS signature)", name);
	if (hdr->boot_flag != BZ_BOOT_FLAG)
		return error_set(e, EXIT_BADKERNEL, "%s: bzImage boot flag is 0x%04x, not 0xaa55",
				 name, hdr->boot_flag);
	if (hdr->version < BZ_MIN_VERSION)
		return error_set(e, EXIT_BADKERNEL, "%s: boot protocol %u.%02u is too old; "
				 "Shoal needs 2.12 or later (64-bit entry)", name,
				 hdr->version >> 8, hdr->version & 0xff);
	if (offsetof(struct setup_header, init_size) + 4 + BZ_HDR_OFFSET > end)
		return error_set(e, EXIT_BADKERNEL, "%s: setup header is too short for "
				 "protocol %u.%02u", name, hdr->version >> 8, hdr->version & 0xff);
	if (!(hdr->xloadflags & BZ_XLF_KERNEL_64))
		return error_set(e, EXIT_BADKERNEL, "%s: kernel has no 64-bit entry point "
				 "(XLF_KERNEL_64 not set)", name);
	return 0;
}

/* Guest-physical end of the memory the kernel needs from 1 MiB up: the
 * loaded image and the decompression buffer.  Fails on nonsense values. */
static int bz_kernel_end(const char *name, const struct setup_header *hdr,
			 uint64_t image_len, uint64_t *end, struct error *e)
{
	uint64_t align = hdr->kernel_alignment, base = BOOT_KERNEL_ADDR;

	if (hdr->relocatable_kernel) {
		if (align == 0 || (align & (align - 1)) || align > BZ_MAX_ALIGN)
			return error_set(e, EXIT_BADKERNEL, "%s: bad kernel_alignment 0x%llx",
					 name, (unsigned long long)align);
		base = (base + align - 1) & ~(align - 1);
	}
	if (hdr->pref_address > base)
		base = hdr->pref_address;
	if (base >= (1ULL << 40))
		return error_set(e, EXIT_BADKERNEL, "%s: pref_address 0x%llx is absurd",
				 name, (unsigned long long)hdr->pref_address);
	*end = base + hdr->init_size;
	if (*end < BOOT_KERNEL_ADDR + image_len)
		*end = BOOT_KERNEL_ADDR + image_len;
	return 0;
}

/* Build the zero page in `bp` from the header and what boot.c placed. */
static void bz_fill_params(struct boot_ctx *c, const struct setup_header *hdr,
			   struct boot_params *bp)
{
	memset(bp, 0, sizeof(*bp));
	bp->hdr = *hdr;
	bp->hdr.type_of_loader = 0xff;
	bp->hdr.loadflags |= BZ_CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = BZ_HEAP_END;
	bp->hdr.cmd_line_ptr = (uint32_t)BOOT_CMDLINE_ADDR;
	bp->hdr.ramdisk_image = (uint32_t)c->bi->initrd_start;
	bp->hdr.ramdisk_size = (uint32_t)c->bi->initrd_size;
	bp->hdr.setup_data = 0;
	bp->hdr.code32_start = (uint32_t)BOOT_KERNEL_ADDR;
	bp->ext_ramdisk_image = (uint32_t)(c->bi->initrd_start >> 32);
	bp->ext_ramdisk_size = (uint32_t)(c->bi->initrd_size >> 32);
	if (hdr->version >= 0x020e)
		bp->acpi_rsdp_addr = c->bi->rsdp;
	for (int i = 0; i < c->ne820 && i < BZ_E820_MAX; i++)
		bp->e820_table[i] = c->e820[i];
	bp->e820_entries = (uint8_t)c->ne820;
}

/* Check the command line against the kernel's cmdline_size. */
static int bz_check_cmdline(struct boot_ctx *c, const struct setup_header *hdr, struct error *e)
{
	uint64_t max = hdr->version >= 0x0206 ? hdr->cmdline_size : 255;

	if (c->cmdline_len > max)
		return error_set(e, EXIT_USAGE, "command line is %zu bytes; this kernel accepts at most %llu",
				 c->cmdline_len, (unsigned long long)max);
	return 0;
}

int boot_bzimage_load(struct boot_ctx *c, const uint8_t *k, size_t len, struct error *e)
{
	uint64_t low_end = guest_mem_low_end(c->m), setup_len, image_len, kend = 0, ilimit;
	struct setup_header hdr;
	struct boot_params bp;

	if (bz_read_header(c->name, k, len, &hdr, e) || bz_check_cmdline(c, &hdr, e))
		return -1;
	setup_len = ((uint64_t)(hdr.setup_sects ? hdr.setup_sects : 4) + 1) * 512;
	if (setup_len >= len)
		return error_set(e, EXIT_BADKERNEL, "%s: truncated bzImage: setup is %llu bytes "
				 "but the file has %zu", c->name, (unsigned long long)setup_len, len);
	image_len = len - setup_len;
	if (image_len < (uint64_t)hdr.syssize * 16)
		return error_set(e, EXIT_BADKERNEL, "%s: truncated bzImage: the header says the "
				 "kernel after the setup is %llu bytes but the file has %llu",
				 c->name, (unsigned long long)hdr.syssize * 16,
				 (unsigned long long)image_len);
	if (bz_kernel_end(c->name, &hdr, image_len, &kend, e))
		return -1;
	if (kend > low_end)
		return error_set(e, EXIT_BADKERNEL, "%s: kernel needs guest RAM up to %llu MiB "
				 "(init_size 0x%x) but low RAM ends at %llu MiB", c->name,
				 (unsigned long long)((kend + (1 << 20) - 1) >> 20), hdr.init_size,
				 (unsigned long long)(low_end >> 20));
	if (guest_mem_write(c->m, BOOT_KERNEL_ADDR, k + setup_len, image_len))
		return error_set(e, EXIT_BADKERNEL, "%s: kernel does not fit in guest RAM", c->name);
	c->bi->kernel_start = BOOT_KERNEL_ADDR;
	c->bi->kernel_end = kend;
	ilimit = (uint64_t)(hdr.version >= 0x0203 && hdr.initrd_addr_max ?
			    hdr.initrd_addr_max : BZ_DEFAULT_INITRD_MAX) + 1;
	if (boot_place_initrd(c, ilimit < low_end ? ilimit : low_end, e))
		return -1;
	bz_fill_params(c, &hdr, &bp);
	if (guest_mem_write(c->m, BOOT_ZERO_PAGE_ADDR, &bp, sizeof(bp)))
		return error_set(e, EXIT_HOST, "cannot write boot_params");
	c->bi->proto = BOOT_LINUX64;
	c->bi->entry = BOOT_KERNEL_ADDR + BZ_ENTRY64_OFFSET;
	c->bi->boot_struct = BOOT_ZERO_PAGE_ADDR;
	return 0;
}
