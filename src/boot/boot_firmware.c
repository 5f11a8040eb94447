/*
 * boot_firmware.c - booting a BIOS image (SeaBIOS) instead of a kernel.
 *
 * The image (Debian's /usr/share/seabios/bios-256k.bin by default) is read
 * whole into a page-aligned buffer that the VMM gives KVM as a read-only
 * memory slot ending at 4 GiB, where the reset vector 0xfffffff0 is.  Its
 * last 256 KiB (all of a smaller image) are also copied into guest RAM just
 * below 1 MiB, 0xc0000-0xfffff for bios-256k.bin: the reset vector jumps to
 * F000:E05B, real-mode code that runs from there, and SeaBIOS's 32-bit code
 * runs from its copy below 1 MiB too.  On QEMU the chipset shows only the
 * last 128 KiB there at reset, and SeaBIOS copies the rest itself (from
 * the image at address + 0xfff00000) once it has opened the i440FX or Q35
 * PAM registers.  Shoal's host bridge has none: SeaBIOS logs "Unable to
 * unlock ram - bridge not found" and copies nothing, so the copy is made
 * here, into plain writable RAM, which is what its later writes (its
 * variables, option ROMs) need.  Nothing locks it read-only after boot: a
 * guest OS could overwrite its BIOS; nothing of Shoal's depends on it.
 *
 * The vCPU starts in the x86 reset state: real mode, CS selector 0xf000
 * with base 0xffff0000, IP 0xfff0.  Nothing else is written to guest
 * memory: no e820 in the zero page, no ACPI, no MP table; the firmware
 * learns the machine through fw_cfg (devices/fw_cfg.c) and builds its own
 * MP table, and places Shoal's ACPI tables, which fw_cfg serves with their
 * loader script (acpi_build_fw_cfg, boot/acpi.h).
 *
 * Checks: the file must exist (a missing one names the package that has
 * it) and be 64 KiB to 16 MiB, a multiple of 4 KiB: anything else is no
 * BIOS image KVM could map.  16 MiB keeps it above the LAPIC at
 * 0xfee00000.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/layout.h"
#include "boot/boot_priv.h"

int boot_firmware_read(const char *path, struct boot_info *out, struct error *e)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	void *map;
	struct stat st = { 0 };

	memset(out, 0, sizeof(*out));
	if (stat(path, &st) < 0 && errno == ENOENT)
		return error_set(e, EXIT_NOINPUT, "firmware %s: no such file (Debian's package "
				 "seabios has the BIOS; or name one with --firmware PATH)", path);
	if (S_ISREG(st.st_mode) && ((uint64_t)st.st_size < BOOT_FIRMWARE_MIN ||
				    (uint64_t)st.st_size > BOOT_FIRMWARE_MAX))
		return error_set(e, EXIT_BADKERNEL, "firmware %s: %lld bytes is no BIOS image "
				 "(64 KiB to 16 MiB, a multiple of 4 KiB)", path, (long long)st.st_size);
	if (boot_read_file(path, BOOT_FIRMWARE_MAX, &buf, &len, e))
		return error_prefix(e, "firmware");
	if (len < BOOT_FIRMWARE_MIN || len > BOOT_FIRMWARE_MAX || len % 4096) {
		free(buf);
		return error_set(e, EXIT_BADKERNEL, "firmware %s: %zu bytes is no BIOS image "
				 "(64 KiB to 16 MiB, a multiple of 4 KiB)", path, len);
	}
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		free(buf);
		return error_set(e, EXIT_RESOURCE, "firmware %s: cannot map %zu bytes: %s",
				 path, len, strerror(errno));
	}
	memcpy(map, buf, len);
	free(buf);
	out->proto = BOOT_FIRMWARE;
	out->firmware = map;
	out->firmware_size = len;
	out->entry = 0xfffffff0ULL;
	return 0;
}

int boot_firmware_load(struct guest_mem *m, const char *path, struct boot_info *out,
		       struct error *e)
{
	uint64_t low;

	if (boot_firmware_read(path, out, e))
		return -1;
	low = out->firmware_size < BOOT_FIRMWARE_LOW ? out->firmware_size : BOOT_FIRMWARE_LOW;
	if (guest_mem_write(m, GUEST_HIGH_START - low, out->firmware + out->firmware_size - low, low)) {
		boot_info_release(out);
		return error_set(e, EXIT_HOST, "firmware %s: cannot copy it below 1 MiB", path);
	}
	return 0;
}

void boot_info_release(struct boot_info *bi)
{
	if (bi->firmware)
		munmap(bi->firmware, bi->firmware_size);
	bi->firmware = NULL;
	bi->firmware_size = 0;
}

static struct kvm_segment reset_seg(uint16_t sel, uint64_t base, uint8_t type)
{
	return (struct kvm_segment){ .base = base, .limit = 0xffff, .selector = sel,
				     .type = type, .present = 1, .s = 1 };
}

int boot_firmware_reset_state(struct kvm_regs *regs, struct kvm_sregs *sregs)
{
	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x2;
	regs->rip = 0xfff0;
	sregs->cs = reset_seg(0xf000, 0xffff0000ULL, 0xb);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = reset_seg(0, 0, 0x3);
	sregs->cr0 = 0x60000010ULL;   /* CD, NW, ET */
	sregs->cr3 = sregs->cr4 = sregs->efer = 0;
	sregs->gdt.base = sregs->idt.base = 0;
	sregs->gdt.limit = sregs->idt.limit = 0xffff;
	return 0;
}
