/*
 * boot.c - the boot layer's front door: read the kernel and initrd, describe
 * the machine, hand the image to the right loader, set up the boot vCPU.
 *
 * Sequence of boot_load_buf() (boot_load() only reads the files first):
 *
 *   check ncpus and the command line length
 *   write the BIOS data area words Linux reads (EBDA segment, base memory)
 *   e820_build -> mptable_build -> acpi_build (RSDP address)
 *   write the command line at BOOT_CMDLINE_ADDR
 *   "\x7fELF"            -> boot_elf_load      (PVH)
 *   "HdrS" at 0x202      -> boot_bzimage_load  (Linux 64-bit boot protocol)
 *   anything else        -> EXIT_BADKERNEL
 *
 * Each loader copies the kernel, then calls back boot_place_initrd() with
 * the highest address its protocol allows, then writes its boot structure.
 * Nothing here touches KVM: the result is guest memory plus a boot_info,
 * and boot_setup_bsp() turns a boot_info into register state later.
 *
 * Guest memory below 1 MiB is ours: GDT at 0x500, start_info at 0x6000,
 * zero page at 0x7000, page tables from 0x9000, command line at 0x20000,
 * MP floating pointer at 0x9fc00, ACPI and the MP configuration table in
 * 0xe0000-0xfffff.  Loaders refuse kernels that would land below 1 MiB.
 *
 * Files are read whole into host memory (capped at the guest's RAM size,
 * since nothing larger could be loaded) rather than mapped, so a file
 * truncated under us cannot SIGBUS the VMM.
 */
#include "boot/boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/path_beneath.h"
#include "boot/boot_priv.h"
#include "base/layout.h"

#define BDA_EBDA_SEGMENT   0x40e   /* BIOS data area: EBDA segment */
#define BDA_BASE_MEM_KB    0x413   /* BIOS data area: base memory in KiB */
#define PAGE_SIZE_4K       4096ULL

uint8_t boot_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + b[i]);
	return (uint8_t)-sum;
}

int boot_place_initrd(struct boot_ctx *c, uint64_t limit, struct error *e)
{
	uint64_t at;

	c->bi->initrd_start = 0;
	c->bi->initrd_size = 0;
	if (!c->initrd || c->initrd_len == 0)
		return 0;
	if (c->initrd_len > limit || limit - c->initrd_len < c->bi->kernel_end)
		return error_set(e, EXIT_BADKERNEL, "initrd: %zu bytes do not fit in guest RAM "
				 "between the kernel (ends 0x%llx) and 0x%llx", c->initrd_len,
				 (unsigned long long)c->bi->kernel_end, (unsigned long long)limit);
	at = (limit - c->initrd_len) & ~(PAGE_SIZE_4K - 1);
	if (at < c->bi->kernel_end || guest_mem_write(c->m, at, c->initrd, c->initrd_len))
		return error_set(e, EXIT_BADKERNEL, "initrd: %zu bytes do not fit in guest RAM "
				 "between the kernel (ends 0x%llx) and 0x%llx", c->initrd_len,
				 (unsigned long long)c->bi->kernel_end, (unsigned long long)limit);
	c->bi->initrd_start = at;
	c->bi->initrd_size = c->initrd_len;
	return 0;
}

/* The two BIOS data area words Linux consults to find the EBDA. */
static int boot_write_bda(struct guest_mem *m, struct error *e)
{
	uint16_t seg = (uint16_t)(GUEST_EBDA_START >> 4);
	uint16_t kb = (uint16_t)(GUEST_EBDA_START >> 10);

	if (guest_mem_write(m, BDA_EBDA_SEGMENT, &seg, 2) ||
	    guest_mem_write(m, BDA_BASE_MEM_KB, &kb, 2))
		return error_set(e, EXIT_HOST, "cannot write the BIOS data area");
	return 0;
}

/* Everything that does not depend on the kernel: BDA, e820, MP, ACPI, and
 * the command line. */
static int boot_describe_machine(struct boot_ctx *c, const char *cmdline, struct error *e)
{
	if (boot_write_bda(c->m, e))
		return -1;
	c->ne820 = e820_build(c->m, c->e820, E820_MAX);
	if (mptable_build(c->m, c->ncpus, e))
		return -1;
	c->bi->rsdp = acpi_build(c->m, c->ncpus, e);
	if (!c->bi->rsdp)
		return -1;
	if (guest_mem_write(c->m, BOOT_CMDLINE_ADDR, cmdline, c->cmdline_len + 1))
		return error_set(e, EXIT_HOST, "cannot write the command line");
	return 0;
}

int boot_load_buf(struct guest_mem *m, const char *name,
		  const uint8_t *kernel, size_t kernel_len,
		  const uint8_t *initrd, size_t initrd_len,
		  const char *cmdline, int ncpus,
		  struct boot_info *out, struct error *e)
{
	struct boot_ctx c = { .m = m, .name = name ? name : "kernel", .initrd = initrd,
			      .initrd_len = initrd_len, .ncpus = ncpus, .bi = out };

	memset(out, 0, sizeof(*out));
	if (!cmdline)
		cmdline = "";
	c.cmdline_len = strnlen(cmdline, BOOT_CMDLINE_MAX);
	if (c.cmdline_len >= BOOT_CMDLINE_MAX)
		return error_set(e, EXIT_USAGE, "command line is %zu bytes; at most %d fit",
				 strlen(cmdline), BOOT_CMDLINE_MAX - 1);
	if (ncpus < 1 || ncpus > GUEST_MAX_VCPUS)
		return error_set(e, EXIT_USAGE, "%d vCPUs is out of range (1..%d)",
				 ncpus, GUEST_MAX_VCPUS);
	if (boot_describe_machine(&c, cmdline, e))
		return -1;
	if (kernel_len >= 4 && !memcmp(kernel, "\177ELF", 4))
		return boot_elf_load(&c, kernel, kernel_len, e);
	if (kernel_len >= 0x206 && !memcmp(kernel + 0x202, "HdrS", 4))
		return boot_bzimage_load(&c, kernel, kernel_len, e);
	return error_set(e, EXIT_BADKERNEL, "%s: not a kernel (neither an ELF file nor a bzImage)",
			 c.name);
}

/* Read a whole regular file of at most `max` bytes into a malloc'd buffer. */
int boot_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *len,
			  struct error *e)
{
	struct stat st;
	size_t got = 0;
	int fd = path_open(path, O_RDONLY | O_CLOEXEC, 0);   /* confined for shoald */

	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return error_set(e, EXIT_NOINPUT, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return error_set(e, EXIT_BADKERNEL, "%s: %lld bytes is larger than guest RAM",
				 path, (long long)st.st_size);
	}
	*buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!*buf) {
		close(fd);
		return error_set(e, EXIT_RESOURCE, "%s: cannot allocate %lld bytes",
				 path, (long long)st.st_size);
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, *buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int err = r < 0 ? errno : 0;
			close(fd);
			free(*buf);
			*buf = NULL;
			return error_set(e, EXIT_NOINPUT, "%s: read failed: %s", path,
					 err ? strerror(err) : "file shrank while reading");
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return 0;
}

int boot_load(struct guest_mem *m, const struct boot_request *req,
	      struct boot_info *out, struct error *e)
{
	uint8_t *kernel = NULL, *initrd = NULL;
	size_t klen = 0, ilen = 0;
	int r = -1;

	memset(out, 0, sizeof(*out));
	if (req->firmware_path)
		return boot_firmware_load(m, req->firmware_path, out, e);
	if (!req->kernel_path)
		return error_set(e, EXIT_USAGE, "no kernel given");
	if (boot_read_file(req->kernel_path, m->size, &kernel, &klen, e))
		goto out;
	if (req->initrd_path) {
		if (boot_read_file(req->initrd_path, m->size, &initrd, &ilen, e))
			goto out;
		if (ilen == 0) {
			error_set(e, EXIT_BADKERNEL, "%s: initrd is empty", req->initrd_path);
			goto out;
		}
	}
	r = boot_load_buf(m, req->kernel_path, kernel, klen, initrd, ilen,
			  req->cmdline, req->ncpus, out, e);
out:
	free(kernel);
	free(initrd);
	return r;
}

/* ---- boot vCPU state ---- */

#define BOOT_CS        0x10
#define BOOT_DS        0x18
#define BOOT_TSS       0x20
#define BOOT_GDT_ENTRIES 6       /* null, null, code, data, TSS (16 bytes) */

#define CR0_PE  (1ULL << 0)
#define CR0_ET  (1ULL << 4)
#define CR0_PG  (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define PTE_P   0x1ULL
#define PTE_RW  0x2ULL
#define PTE_PS  0x80ULL

/* The GDT descriptor whose cached form is `s`. */
static uint64_t boot_seg_to_desc(const struct kvm_segment *s)
{
	uint64_t lim = s->g ? s->limit >> 12 : s->limit;

	return (lim & 0xffffULL) | ((uint64_t)(s->base & 0xffffff) << 16) |
	       ((uint64_t)(s->type & 0xf) << 40) | ((uint64_t)(s->s & 1) << 44) |
	       ((uint64_t)(s->dpl & 3) << 45) | ((uint64_t)(s->present & 1) << 47) |
	       (((lim >> 16) & 0xfULL) << 48) | ((uint64_t)(s->avl & 1) << 52) |
	       ((uint64_t)(s->l & 1) << 53) | ((uint64_t)(s->db & 1) << 54) |
	       ((uint64_t)(s->g & 1) << 55) | ((uint64_t)((s->base >> 24) & 0xff) << 56);
}

/* Flat 4 GiB segment of `type` at `sel`; `l` selects 64-bit code. */
static struct kvm_segment boot_flat_seg(uint16_t sel, uint8_t type, int l)
{
	return (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel,
				     .type = type, .present = 1, .dpl = 0, .db = l ? 0 : 1,
				     .s = 1, .l = (uint8_t)l, .g = 1 };
}

/* Write the GDT and load matching cached segments into `sregs`. */
static int boot_setup_segments(struct guest_mem *m, struct kvm_sregs *sregs, int long_mode)
{
	struct kvm_segment code = boot_flat_seg(BOOT_CS, 0xb, long_mode);
	struct kvm_segment data = boot_flat_seg(BOOT_DS, 0x3, 0);
	struct kvm_segment tss = { .base = 0, .limit = 0x67, .selector = BOOT_TSS,
				   .type = 0xb, .present = 1 };
	uint64_t gdt[BOOT_GDT_ENTRIES] = { 0 };

	gdt[BOOT_CS >> 3] = boot_seg_to_desc(&code);
	gdt[BOOT_DS >> 3] = boot_seg_to_desc(&data);
	gdt[BOOT_TSS >> 3] = boot_seg_to_desc(&tss);
	if (guest_mem_write(m, BOOT_GDT_ADDR, gdt, sizeof(gdt)))
		return -1;
	sregs->gdt.base = BOOT_GDT_ADDR;
	sregs->gdt.limit = sizeof(gdt) - 1;
	sregs->idt.base = 0;
	sregs->idt.limit = 0;
	sregs->cs = code;
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = tss;
	return 0;
}

/* Identity-map the first 4 GiB with 2 MiB pages at BOOT_PML4_ADDR:
 * PML4, one PDPT, four page directories (six pages, up to 0xf000). */
static int boot_setup_page_tables(struct guest_mem *m)
{
	uint64_t pdpt = BOOT_PML4_ADDR + 0x1000, pd = BOOT_PML4_ADDR + 0x2000;
	uint64_t *t = guest_mem_ptr(m, BOOT_PML4_ADDR, 6 * 0x1000);

	if (!t)
		return -1;
	memset(t, 0, 6 * 0x1000);
	t[0] = pdpt | PTE_P | PTE_RW;
	for (int i = 0; i < 4; i++)
		t[512 + i] = (pd + (uint64_t)i * 0x1000) | PTE_P | PTE_RW;
	for (uint64_t i = 0; i < 4 * 512; i++)
		t[1024 + i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;
	return 0;
}

int boot_setup_bsp(struct guest_mem *m, const struct boot_info *bi,
		   struct kvm_regs *regs, struct kvm_sregs *sregs, struct error *e)
{
	int long_mode = bi->proto == BOOT_LINUX64;

	if (bi->proto == BOOT_FIRMWARE)
		return boot_firmware_reset_state(regs, sregs);
	if (bi->proto != BOOT_PVH && bi->proto != BOOT_LINUX64)
		return error_set(e, EXIT_HOST, "boot: unknown protocol %d", (int)bi->proto);
	if (boot_setup_segments(m, sregs, long_mode))
		return error_set(e, EXIT_HOST, "boot: cannot write the GDT");
	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x2;
	regs->rip = bi->entry;
	if (long_mode) {
		if (boot_setup_page_tables(m))
			return error_set(e, EXIT_HOST, "boot: cannot write the page tables");
		sregs->cr3 = BOOT_PML4_ADDR;
		sregs->cr4 = CR4_PAE;
		sregs->cr0 = CR0_PE | CR0_ET | CR0_PG;
		sregs->efer = EFER_LME | EFER_LMA;
		regs->rsi = bi->boot_struct;
	} else {
		sregs->cr0 = CR0_PE | CR0_ET;
		sregs->cr3 = 0;
		sregs->cr4 = 0;
		sregs->efer = 0;
		regs->rbx = bi->boot_struct;
	}
	return 0;
}
