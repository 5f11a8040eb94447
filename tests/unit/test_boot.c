/*
 * test_boot.c - the kernel loaders and boot vCPU set-up, on guest memory
 * without KVM.
 *
 * Kernels are built in the test: a tiny PVH ELF (64- and 32-bit) whose
 * fields each test bends one at a time (no note, truncated anywhere, a
 * segment past the file or past RAM, absurd counts and offsets), and a tiny
 * bzImage header (bad magic, old protocol, no 64-bit entry, truncated setup
 * or kernel, setup_sects 0, init_size too big, command line too long).
 * Successful loads are checked field by field in start_info / boot_params;
 * failures by exit status and message.  A real Debian kernel is loaded too
 * when one is on this machine (skipped with the reason otherwise), and
 * refused when cut short.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <elf.h>
#include <glob.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "base/error.h"
#include "base/exitcode.h"
#include "boot/boot.h"
#include "boot/boot_priv.h"
#include "base/layout.h"

#define MiB (1ULL << 20)
#define MEM_SIZE (64 * MiB)

static struct guest_mem mem;

static int setup(void **state)
{
	struct error e;

	(void)state;
	return guest_mem_create_anon(&mem, MEM_SIZE, &e);
}

static int teardown(void **state)
{
	(void)state;
	guest_mem_destroy(&mem);
	return 0;
}

/* ---- a tiny PVH ELF ---- */

#define ELF_NOTE_OFF   0x100
#define ELF_CODE_OFF   0x200
#define ELF_CODE_LEN   0x100
#define ELF_LOAD_ADDR  0x100000
#define ELF_MEMSZ      0x3000
#define ELF_ENTRY      (ELF_LOAD_ADDR + 0x10)
#define ELF_LEN        (ELF_CODE_OFF + ELF_CODE_LEN)

struct elf_img {
	uint8_t b[ELF_LEN];
	size_t len;
};

/* A valid ELF64 (or ELF32) PVH kernel: PT_LOAD at 1 MiB, PT_NOTE with the
 * entry; `descsz` 4 or 8.  The file ends exactly with the loaded bytes. */
static void elf_make(struct elf_img *img, int is64, int descsz)
{
	uint8_t *n = img->b + ELF_NOTE_OFF;
	uint32_t note[3] = { 4, (uint32_t)descsz, XEN_ELFNOTE_PHYS32_ENTRY };
	uint64_t entry = ELF_ENTRY;
	size_t notelen = 12 + 4 + (size_t)descsz;

	memset(img, 0, sizeof(*img));
	img->len = ELF_LEN;
	memcpy(n, note, 12);
	memcpy(n + 12, "Xen", 4);
	memcpy(n + 16, &entry, (size_t)descsz);
	for (int i = 0; i < ELF_CODE_LEN; i++)
		img->b[ELF_CODE_OFF + i] = (uint8_t)(i * 7 + 1);
	if (is64) {
		Elf64_Ehdr eh = { .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = 1,
				  .e_entry = 0xffffffff81000000ULL, .e_phoff = sizeof(Elf64_Ehdr),
				  .e_ehsize = sizeof(Elf64_Ehdr), .e_phentsize = sizeof(Elf64_Phdr),
				  .e_phnum = 2 };
		Elf64_Phdr ph[2] = {
			{ .p_type = PT_LOAD, .p_offset = ELF_CODE_OFF, .p_paddr = ELF_LOAD_ADDR,
			  .p_vaddr = 0xffffffff81000000ULL, .p_filesz = ELF_CODE_LEN,
			  .p_memsz = ELF_MEMSZ },
			{ .p_type = PT_NOTE, .p_offset = ELF_NOTE_OFF, .p_filesz = notelen },
		};
		memcpy(eh.e_ident, ELFMAG, 4);
		eh.e_ident[EI_CLASS] = ELFCLASS64;
		eh.e_ident[EI_DATA] = ELFDATA2LSB;
		memcpy(img->b, &eh, sizeof(eh));
		memcpy(img->b + sizeof(eh), ph, sizeof(ph));
	} else {
		Elf32_Ehdr eh = { .e_type = ET_EXEC, .e_machine = EM_386, .e_version = 1,
				  .e_phoff = sizeof(Elf32_Ehdr), .e_ehsize = sizeof(Elf32_Ehdr),
				  .e_phentsize = sizeof(Elf32_Phdr), .e_phnum = 2 };
		Elf32_Phdr ph[2] = {
			{ .p_type = PT_LOAD, .p_offset = ELF_CODE_OFF, .p_paddr = ELF_LOAD_ADDR,
			  .p_filesz = ELF_CODE_LEN, .p_memsz = ELF_MEMSZ },
			{ .p_type = PT_NOTE, .p_offset = ELF_NOTE_OFF, .p_filesz = (uint32_t)notelen },
		};
		memcpy(eh.e_ident, ELFMAG, 4);
		eh.e_ident[EI_CLASS] = ELFCLASS32;
		eh.e_ident[EI_DATA] = ELFDATA2LSB;
		memcpy(img->b, &eh, sizeof(eh));
		memcpy(img->b + sizeof(eh), ph, sizeof(ph));
	}
}

static Elf64_Phdr *elf_ph(struct elf_img *img, int i)
{
	return (Elf64_Phdr *)(img->b + sizeof(Elf64_Ehdr)) + i;
}

static Elf64_Ehdr *elf_eh(struct elf_img *img)
{
	return (Elf64_Ehdr *)img->b;
}

/* Load `k` and expect failure with `status` and `msg` in the message. */
static void expect_fail(const uint8_t *k, size_t len, const char *cmdline, int status,
			const char *msg)
{
	struct boot_info bi;
	struct error e = { 0 };

	assert_int_equal(boot_load_buf(&mem, "vmlinux", k, len, NULL, 0, cmdline, 1, &bi, &e), -1);
	if (e.status != status || !strstr(e.msg, msg))
		fail_msg("want status %d with \"%s\", got %d \"%s\"", status, msg, e.status, e.msg);
}

static void check_pvh(const struct boot_info *bi, const char *cmdline)
{
	struct hvm_start_info si;
	struct hvm_memmap_table_entry mm[E820_MAX];
	struct e820_entry ref[E820_MAX];
	const uint8_t *k = guest_mem_ptr(&mem, ELF_LOAD_ADDR, ELF_MEMSZ);
	int n = e820_build(&mem, ref, E820_MAX);

	assert_int_equal(bi->proto, BOOT_PVH);
	assert_int_equal(bi->entry, ELF_ENTRY);
	assert_int_equal(bi->boot_struct, BOOT_START_INFO_ADDR);
	assert_int_equal(bi->kernel_start, ELF_LOAD_ADDR);
	assert_int_equal(bi->kernel_end, ELF_LOAD_ADDR + ELF_MEMSZ);
	for (int i = 0; i < ELF_CODE_LEN; i++)
		assert_int_equal(k[i], (uint8_t)(i * 7 + 1));
	for (int i = ELF_CODE_LEN; i < ELF_MEMSZ; i++)
		assert_int_equal(k[i], 0);                     /* .bss cleared */
	assert_int_equal(guest_mem_read(&mem, BOOT_START_INFO_ADDR, &si, sizeof(si)), 0);
	assert_int_equal(si.magic, 0x336ec578);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.rsdp_paddr, bi->rsdp);
	assert_int_equal(bi->rsdp, BOOT_ACPI_ADDR);
	assert_string_equal((const char *)guest_mem_ptr(&mem, si.cmdline_paddr, 1), cmdline);
	assert_int_equal(si.memmap_entries, n);
	assert_int_equal(guest_mem_read(&mem, si.memmap_paddr, mm, sizeof(mm[0]) * n), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(mm[i].addr, ref[i].addr);
		assert_int_equal(mm[i].size, ref[i].size);
		assert_int_equal(mm[i].type, ref[i].type);
	}
}

static void load_ok(const struct elf_img *img, struct boot_info *bi, const char *cmdline)
{
	struct error e = { 0 };

	memset(mem.host, 0xaa, mem.size);
	if (boot_load_buf(&mem, "vmlinux", img->b, img->len, NULL, 0, cmdline, 2, bi, &e))
		fail_msg("load failed: %s", e.msg);
}

static void test_elf64_pvh(void **state)
{
	struct elf_img img;
	struct boot_info bi;
	struct hvm_start_info si;

	(void)state;
	elf_make(&img, 1, 4);
	load_ok(&img, &bi, "console=ttyS0 quiet");
	check_pvh(&bi, "console=ttyS0 quiet");
	guest_mem_read(&mem, BOOT_START_INFO_ADDR, &si, sizeof(si));
	assert_int_equal(si.nr_modules, 0);
	assert_int_equal(bi.initrd_start, 0);
}

static void test_elf64_pvh_note8(void **state)
{
	struct elf_img img;
	struct boot_info bi;

	(void)state;
	elf_make(&img, 1, 8);
	load_ok(&img, &bi, "");
	check_pvh(&bi, "");
}

static void test_elf32_pvh(void **state)
{
	struct elf_img img;
	struct boot_info bi;

	(void)state;
	elf_make(&img, 0, 4);
	load_ok(&img, &bi, "x");
	check_pvh(&bi, "x");
}

static void test_elf_initrd(void **state)
{
	struct elf_img img;
	struct boot_info bi;
	struct hvm_start_info si;
	struct hvm_modlist_entry mod;
	struct error e = { 0 };
	size_t ilen = 10000;
	uint8_t *initrd = malloc(ilen);

	(void)state;
	for (size_t i = 0; i < ilen; i++)
		initrd[i] = (uint8_t)(i ^ (i >> 8));
	elf_make(&img, 1, 4);
	assert_int_equal(boot_load_buf(&mem, "vmlinux", img.b, img.len, initrd, ilen,
				       NULL, 1, &bi, &e), 0);
	assert_int_equal(bi.initrd_start % 4096, 0);
	assert_int_equal(bi.initrd_size, ilen);
	/* as high as possible: the last page-aligned slot below the end of RAM */
	assert_int_equal(bi.initrd_start, (MEM_SIZE - ilen) & ~4095ULL);
	assert_memory_equal(guest_mem_ptr(&mem, bi.initrd_start, ilen), initrd, ilen);
	guest_mem_read(&mem, BOOT_START_INFO_ADDR, &si, sizeof(si));
	assert_int_equal(si.nr_modules, 1);
	guest_mem_read(&mem, si.modlist_paddr, &mod, sizeof(mod));
	assert_int_equal(mod.paddr, bi.initrd_start);
	assert_int_equal(mod.size, ilen);
	free(initrd);
}

static void test_elf_initrd_too_big(void **state)
{
	struct elf_img img;
	struct boot_info bi;
	struct error e = { 0 };
	size_t ilen = MEM_SIZE - 1 * MiB;   /* overlaps the kernel */
	uint8_t *initrd = calloc(1, ilen);

	(void)state;
	elf_make(&img, 1, 4);
	assert_int_equal(boot_load_buf(&mem, "vmlinux", img.b, img.len, initrd, ilen,
				       NULL, 1, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_BADKERNEL);
	assert_non_null(strstr(e.msg, "initrd"));
	free(initrd);
}

static void test_elf_no_note(void **state)
{
	struct elf_img img;

	(void)state;
	elf_make(&img, 1, 4);
	elf_ph(&img, 1)->p_type = PT_NULL;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL,
		    "vmlinux: ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
		    "Shoal boots ELF kernels through PVH only");
	elf_make(&img, 1, 4);
	img.b[ELF_NOTE_OFF + 8] = 17;                    /* another Xen note */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "no PVH entry note");
	elf_make(&img, 1, 4);
	img.b[ELF_NOTE_OFF + 12] = 'Y';                  /* another owner */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "no PVH entry note");
}

/* Every proper prefix of a valid kernel is refused, none crashes. */
static void test_elf_truncated(void **state)
{
	struct elf_img img;

	(void)state;
	for (int is64 = 0; is64 <= 1; is64++) {
		elf_make(&img, is64, 4);
		for (size_t len = 0; len < img.len; len++) {
			struct boot_info bi;
			struct error e = { 0 };
			if (boot_load_buf(&mem, "vmlinux", img.b, len, NULL, 0, NULL, 1, &bi, &e) != -1)
				fail_msg("truncated at %zu bytes was accepted", len);
			assert_int_equal(e.status, EXIT_BADKERNEL);
		}
	}
	elf_make(&img, 1, 4);
	expect_fail(img.b, 40, NULL, EXIT_BADKERNEL, "truncated ELF header");
	expect_fail(img.b, 64 + 56, NULL, EXIT_BADKERNEL, "truncated ELF program header table");
	expect_fail(img.b, ELF_CODE_OFF + 1, NULL, EXIT_BADKERNEL, "past the end of the file");
}

static void test_elf_bad_segments(void **state)
{
	struct elf_img img;

	(void)state;
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_filesz = UINT64_MAX;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "past the end of the file");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_offset = UINT64_MAX - 8;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "past the end of the file");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_memsz = ELF_CODE_LEN - 1;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "p_filesz > p_memsz");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_memsz = MEM_SIZE;             /* runs past RAM */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "does not fit in guest RAM");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_memsz = UINT64_MAX;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "does not fit in guest RAM");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_paddr = 0x7000;               /* over our boot structures */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "below 1 MiB");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_paddr = 5ULL << 30;           /* not RAM at all */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "does not fit in guest RAM");
	elf_make(&img, 1, 4);
	elf_ph(&img, 1)->p_offset = img.len;             /* note past the file */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "note segment is outside the file");
	elf_make(&img, 1, 4);
	memcpy(img.b + ELF_NOTE_OFF, &(uint32_t){ 0xfffffff0 }, 4);  /* huge namesz */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "truncated ELF note");
	elf_make(&img, 1, 4);
	img.b[ELF_NOTE_OFF + 4] = 2;                     /* 2-byte entry */
	elf_ph(&img, 1)->p_filesz = 20;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "2-byte value");
	elf_make(&img, 1, 4);
	elf_ph(&img, 0)->p_type = PT_NULL;               /* nothing to load */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "no loadable segments");
	elf_make(&img, 1, 4);
	memcpy(img.b + ELF_NOTE_OFF + 16, &(uint32_t){ ELF_LOAD_ADDR + ELF_MEMSZ }, 4);
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "not inside a loadable segment");
}

static void test_elf_bad_header(void **state)
{
	struct elf_img img;

	(void)state;
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_phoff = UINT64_MAX - 10;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "truncated ELF program header table");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_phoff = img.len - 10;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "truncated ELF program header table");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_phnum = 0xffff;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "65535 program headers");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_phnum = 0;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "no program headers");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_phentsize = 8;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "entry size 8 is too small");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_machine = EM_AARCH64;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "not for x86-64");
	elf_make(&img, 1, 4);
	elf_eh(&img)->e_type = ET_DYN;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "not an executable");
	elf_make(&img, 1, 4);
	img.b[EI_DATA] = ELFDATA2MSB;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "not little-endian");
	elf_make(&img, 1, 4);
	img.b[EI_CLASS] = 7;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "unknown ELF class");
}

/* ---- a tiny bzImage ---- */

#define BZ_SETUP_SECTS 3
#define BZ_PAYLOAD     4096
#define BZ_INIT_SIZE   (8 * MiB)
#define BZ_PREF        (16 * MiB)

struct bz_img {
	uint8_t b[(15 + 1) * 512 + BZ_PAYLOAD];
	size_t len;
	size_t setup_len;
};

static struct setup_header *bz_hdr(struct bz_img *img)
{
	return (struct setup_header *)(img->b + BZ_HDR_OFFSET);
}

static void bz_make(struct bz_img *img, int setup_sects)
{
	struct setup_header *h = bz_hdr(img);
	int sects = setup_sects ? setup_sects : 4;

	memset(img, 0, sizeof(*img));
	img->setup_len = (size_t)(sects + 1) * 512;
	img->len = img->setup_len + BZ_PAYLOAD;
	h->setup_sects = (uint8_t)setup_sects;
	h->syssize = BZ_PAYLOAD / 16;                    /* the payload, as Linux's build writes it */
	h->boot_flag = 0xaa55;
	h->jump = (uint16_t)(0xeb | ((0x26c - 0x202) << 8));
	h->header = BZ_HDR_MAGIC;
	h->version = 0x020f;
	h->loadflags = BZ_LOADED_HIGH;
	h->initrd_addr_max = 0x7fffffff;
	h->kernel_alignment = 0x200000;
	h->relocatable_kernel = 1;
	h->xloadflags = BZ_XLF_KERNEL_64 | 0x2;
	h->cmdline_size = 2047;
	h->pref_address = BZ_PREF;
	h->init_size = BZ_INIT_SIZE;
	h->setup_data = 0xdeadbeef;                      /* must not be passed on */
	for (int i = 0; i < BZ_PAYLOAD; i++)
		img->b[img->setup_len + i] = (uint8_t)(i * 13 + 5);
}

static void bz_load_ok(struct bz_img *img, const uint8_t *initrd, size_t ilen,
		       const char *cmdline, struct boot_info *bi, struct boot_params *bp)
{
	struct error e = { 0 };

	memset(mem.host, 0xaa, 2 * MiB);
	if (boot_load_buf(&mem, "bzImage", img->b, img->len, initrd, ilen, cmdline, 1, bi, &e))
		fail_msg("bzImage load failed: %s", e.msg);
	assert_int_equal(guest_mem_read(&mem, BOOT_ZERO_PAGE_ADDR, bp, sizeof(*bp)), 0);
}

static void test_bz_ok(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;
	struct e820_entry ref[E820_MAX];
	int n = e820_build(&mem, ref, E820_MAX);
	const uint8_t *k;

	(void)state;
	bz_make(&img, BZ_SETUP_SECTS);
	bz_load_ok(&img, NULL, 0, "root=/dev/vda", &bi, &bp);
	assert_int_equal(bi.proto, BOOT_LINUX64);
	assert_int_equal(bi.entry, 0x100200);
	assert_int_equal(bi.boot_struct, BOOT_ZERO_PAGE_ADDR);
	assert_int_equal(bi.kernel_start, 1 * MiB);
	assert_int_equal(bi.kernel_end, BZ_PREF + BZ_INIT_SIZE);
	k = guest_mem_ptr(&mem, 1 * MiB, BZ_PAYLOAD);
	for (int i = 0; i < BZ_PAYLOAD; i++)
		assert_int_equal(k[i], (uint8_t)(i * 13 + 5));
	assert_int_equal(bp.hdr.header, BZ_HDR_MAGIC);
	assert_int_equal(bp.hdr.version, 0x020f);
	assert_int_equal(bp.hdr.type_of_loader, 0xff);
	assert_true(bp.hdr.loadflags & BZ_CAN_USE_HEAP);
	assert_true(bp.hdr.loadflags & BZ_LOADED_HIGH);
	assert_int_not_equal(bp.hdr.heap_end_ptr, 0);
	assert_int_equal(bp.hdr.setup_data, 0);
	assert_int_equal(bp.hdr.cmd_line_ptr, BOOT_CMDLINE_ADDR);
	assert_string_equal((const char *)guest_mem_ptr(&mem, BOOT_CMDLINE_ADDR, 1), "root=/dev/vda");
	assert_int_equal(bp.hdr.ramdisk_image, 0);
	assert_int_equal(bp.hdr.ramdisk_size, 0);
	assert_int_equal(bp.sentinel, 0);
	assert_int_equal(bp.acpi_rsdp_addr, bi.rsdp);
	assert_int_equal(bp.e820_entries, n);
	assert_memory_equal(bp.e820_table, ref, sizeof(ref[0]) * n);
	/* everything outside the header and the fields we own stays zero */
	assert_int_equal(bp.screen_info[0x0f], 0);
	assert_int_equal(bp.ext_cmd_line_ptr, 0);
}

static void test_bz_setup_sects_zero(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;
	const uint8_t *k;

	(void)state;
	bz_make(&img, 0);                                /* means 4 */
	bz_load_ok(&img, NULL, 0, NULL, &bi, &bp);
	k = guest_mem_ptr(&mem, 1 * MiB, 16);
	assert_int_equal(k[0], 5);
	assert_int_equal(k[1], 18);
	assert_int_equal(bp.hdr.setup_sects, 0);
}

/* A signed kernel carries its signature after the syssize bytes: the file
 * may be longer than the header says, never shorter. */
static void test_bz_longer_than_syssize(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;

	(void)state;
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->syssize = (BZ_PAYLOAD - 512) / 16;
	bz_load_ok(&img, NULL, 0, NULL, &bi, &bp);
	assert_int_equal(bi.proto, BOOT_LINUX64);
}

static void test_bz_initrd(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;
	size_t ilen = 3 * 4096 + 5;
	uint8_t *initrd = malloc(ilen);

	(void)state;
	memset(initrd, 0x5a, ilen);
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->initrd_addr_max = 48 * MiB - 1;    /* below the 64 MiB of RAM */
	bz_load_ok(&img, initrd, ilen, NULL, &bi, &bp);
	assert_int_equal(bp.hdr.ramdisk_image, bi.initrd_start);
	assert_int_equal(bp.hdr.ramdisk_size, ilen);
	assert_int_equal(bi.initrd_start, (48 * MiB - ilen) & ~4095ULL);
	assert_true(bi.initrd_start >= bi.kernel_end);
	assert_memory_equal(guest_mem_ptr(&mem, bi.initrd_start, ilen), initrd, ilen);
	free(initrd);
}

static void test_bz_rejects(void **state)
{
	struct bz_img img;

	(void)state;
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->header = 0x12345678;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "not a kernel");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->version = 0x0209;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "boot protocol 2.09 is too old");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->xloadflags = 0;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "XLF_KERNEL_64");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->boot_flag = 0;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "boot flag");
	bz_make(&img, BZ_SETUP_SECTS);
	expect_fail(img.b, img.setup_len, NULL, EXIT_BADKERNEL, "truncated bzImage");
	expect_fail(img.b, 0x230, NULL, EXIT_BADKERNEL, "truncated bzImage setup header");
	/* cut inside the protected-mode kernel: syssize says what is missing */
	expect_fail(img.b, img.len - 16, NULL, EXIT_BADKERNEL,
		    "truncated bzImage: the header says the kernel after the setup is 4096 "
		    "bytes but the file has 4080");
	expect_fail(img.b, img.setup_len + 1, NULL, EXIT_BADKERNEL, "truncated bzImage");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->setup_sects = 0xff;                /* setup larger than the file */
	expect_fail(img.b, sizeof(img.b), NULL, EXIT_BADKERNEL, "truncated bzImage");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->jump = 0x10eb;                     /* header claims to end at 0x212 */
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "too short");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->init_size = MEM_SIZE;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "init_size");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->pref_address = UINT64_MAX;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "pref_address");
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->kernel_alignment = 0x300000;
	expect_fail(img.b, img.len, NULL, EXIT_BADKERNEL, "kernel_alignment");
}

static void test_bz_cmdline_size(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;

	(void)state;
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->cmdline_size = 16;
	expect_fail(img.b, img.len, "0123456789abcdefg", EXIT_USAGE,
		    "command line is 17 bytes; this kernel accepts at most 16");
	bz_load_ok(&img, NULL, 0, "0123456789abcdef", &bi, &bp);
	assert_int_equal(bp.hdr.cmdline_size, 16);
}

/* Protocol 2.12 has no acpi_rsdp_addr: the field stays zero. */
static void test_bz_old_rsdp(void **state)
{
	struct bz_img img;
	struct boot_info bi;
	struct boot_params bp;

	(void)state;
	bz_make(&img, BZ_SETUP_SECTS);
	bz_hdr(&img)->version = 0x020c;
	bz_load_ok(&img, NULL, 0, NULL, &bi, &bp);
	assert_int_equal(bp.acpi_rsdp_addr, 0);
	assert_int_equal(bi.rsdp, BOOT_ACPI_ADDR);
}

/* ---- generic checks ---- */

static void test_not_a_kernel(void **state)
{
	static const char text[] = "#!/bin/sh\necho this is not a kernel\n";
	uint8_t zeros[4096] = { 0 };

	(void)state;
	expect_fail((const uint8_t *)text, sizeof(text), NULL, EXIT_BADKERNEL, "not a kernel");
	expect_fail(zeros, sizeof(zeros), NULL, EXIT_BADKERNEL, "not a kernel");
	expect_fail(zeros, 0, NULL, EXIT_BADKERNEL, "not a kernel");
}

static void test_cmdline_and_cpus(void **state)
{
	struct elf_img img;
	struct boot_info bi;
	struct error e = { 0 };
	char *big = malloc(BOOT_CMDLINE_MAX + 1);

	(void)state;
	memset(big, 'a', BOOT_CMDLINE_MAX);
	big[BOOT_CMDLINE_MAX] = 0;
	elf_make(&img, 1, 4);
	expect_fail(img.b, img.len, big, EXIT_USAGE, "command line is 4096 bytes");
	big[BOOT_CMDLINE_MAX - 1] = 0;                   /* 4095 + NUL fits */
	assert_int_equal(boot_load_buf(&mem, "k", img.b, img.len, NULL, 0, big, 1, &bi, &e), 0);
	assert_int_equal(boot_load_buf(&mem, "k", img.b, img.len, NULL, 0, NULL, 0, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_int_equal(boot_load_buf(&mem, "k", img.b, img.len, NULL, 0, NULL,
				       GUEST_MAX_VCPUS + 1, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	free(big);
}

/* ---- boot_load on files ---- */

static char tmpdir[] = "/tmp/shoal-test-boot-XXXXXX";

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

static void test_boot_load_files(void **state)
{
	struct elf_img img;
	struct boot_info bi;
	struct error e = { 0 };
	char kpath[128], ipath[128], tpath[128], epath[128];
	struct boot_request req = { .ncpus = 1 };

	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	snprintf(kpath, sizeof(kpath), "%s/vmlinux", tmpdir);
	snprintf(ipath, sizeof(ipath), "%s/initrd", tmpdir);
	snprintf(tpath, sizeof(tpath), "%s/notes.txt", tmpdir);
	snprintf(epath, sizeof(epath), "%s/empty", tmpdir);
	elf_make(&img, 1, 4);
	write_file(kpath, img.b, img.len);
	write_file(ipath, "INITRD", 6);
	write_file(tpath, "hello\n", 6);
	write_file(epath, "", 0);

	req.kernel_path = "/nonexistent/vmlinux";
	assert_int_equal(boot_load(&mem, &req, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, "/nonexistent/vmlinux"));
	req.kernel_path = tmpdir;                        /* a directory */
	assert_int_equal(boot_load(&mem, &req, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	req.kernel_path = tpath;
	assert_int_equal(boot_load(&mem, &req, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_BADKERNEL);
	assert_non_null(strstr(e.msg, "notes.txt: not a kernel"));
	req.kernel_path = kpath;
	req.initrd_path = "/nonexistent/initrd";
	assert_int_equal(boot_load(&mem, &req, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	req.initrd_path = epath;
	assert_int_equal(boot_load(&mem, &req, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_BADKERNEL);
	req.initrd_path = ipath;
	req.cmdline = "console=ttyS0";
	if (boot_load(&mem, &req, &bi, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(bi.proto, BOOT_PVH);
	assert_int_equal(bi.initrd_size, 6);
	assert_memory_equal(guest_mem_ptr(&mem, bi.initrd_start, 6), "INITRD", 6);

	unlink(kpath), unlink(ipath), unlink(tpath), unlink(epath);
	rmdir(tmpdir);
}

/* ---- boot vCPU ---- */

/* Decode GDT entry `sel` and compare with the cached segment. */
static void check_desc(const struct kvm_segment *s)
{
	uint64_t d, lim;

	assert_int_equal(guest_mem_read(&mem, BOOT_GDT_ADDR + s->selector, &d, 8), 0);
	lim = (d & 0xffff) | ((d >> 32) & 0xf0000);
	if ((d >> 55) & 1)
		lim = (lim << 12) | 0xfff;
	assert_int_equal(lim, s->limit);
	assert_int_equal(((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000), s->base);
	assert_int_equal((d >> 40) & 0xf, s->type);
	assert_int_equal((d >> 44) & 1, s->s);
	assert_int_equal((d >> 47) & 1, s->present);
	assert_int_equal((d >> 53) & 1, s->l);
	assert_int_equal((d >> 54) & 1, s->db);
	assert_int_equal((d >> 55) & 1, s->g);
}

static void test_bsp_pvh(void **state)
{
	struct boot_info bi = { .proto = BOOT_PVH, .entry = 0x100010,
				.boot_struct = BOOT_START_INFO_ADDR };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct error e;

	(void)state;
	memset(&regs, 0x11, sizeof(regs));
	memset(&sregs, 0, sizeof(sregs));
	sregs.apic_base = 0xfee00900;
	sregs.efer = 0x500;
	assert_int_equal(boot_setup_bsp(&mem, &bi, &regs, &sregs, &e), 0);
	assert_int_equal(regs.rip, 0x100010);
	assert_int_equal(regs.rbx, BOOT_START_INFO_ADDR);
	assert_int_equal(regs.rflags, 2);
	assert_int_equal(sregs.cr0 & 0x80000001, 1);
	assert_int_equal(sregs.efer, 0);
	assert_int_equal(sregs.apic_base, 0xfee00900);   /* untouched */
	assert_int_equal(sregs.cs.db, 1);
	assert_int_equal(sregs.cs.l, 0);
	assert_int_equal(sregs.gdt.base, BOOT_GDT_ADDR);
	assert_true(sregs.gdt.limit >= sregs.tr.selector + 7);
	check_desc(&sregs.cs);
	check_desc(&sregs.ds);
	check_desc(&sregs.ss);
	check_desc(&sregs.tr);
	assert_int_equal(sregs.ds.type & 0x8, 0);        /* data */
	assert_int_equal(sregs.cs.type & 0x8, 0x8);      /* code */
}

/* Walk the guest's 4-level tables for `va`; returns the physical address. */
static uint64_t walk(uint64_t cr3, uint64_t va)
{
	uint64_t e;

	for (int level = 3; level >= 0; level--) {
		uint64_t idx = (va >> (12 + 9 * level)) & 511;
		assert_int_equal(guest_mem_read(&mem, (cr3 & ~0xfffULL) + idx * 8, &e, 8), 0);
		assert_true(e & 1);
		if (level == 1 && (e & 0x80))
			return (e & ~0x1fffffULL & ((1ULL << 52) - 1)) | (va & 0x1fffff);
		assert_true(level > 0);
		cr3 = e & ~0xfffULL & ((1ULL << 52) - 1);
	}
	return 0;
}

static void test_bsp_linux64(void **state)
{
	struct boot_info bi = { .proto = BOOT_LINUX64, .entry = 0x100200,
				.boot_struct = BOOT_ZERO_PAGE_ADDR };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct error e;
	static const uint64_t probes[] = { 0, 0x7000, 0x100200, 0x3ffffff, 0xc0000000,
					   0xfee00000, 0xffffffff };

	(void)state;
	memset(&regs, 0x11, sizeof(regs));
	memset(&sregs, 0, sizeof(sregs));
	assert_int_equal(boot_setup_bsp(&mem, &bi, &regs, &sregs, &e), 0);
	assert_int_equal(regs.rip, 0x100200);
	assert_int_equal(regs.rsi, BOOT_ZERO_PAGE_ADDR);
	assert_int_equal(regs.rflags, 2);
	assert_int_equal(sregs.efer & 0x500, 0x500);
	assert_int_equal(sregs.cr0 & 0x80000001, 0x80000001);
	assert_int_equal(sregs.cr4 & 0x20, 0x20);
	assert_int_equal(sregs.cr3, BOOT_PML4_ADDR);
	assert_int_equal(sregs.cs.selector, 0x10);
	assert_int_equal(sregs.ds.selector, 0x18);
	assert_int_equal(sregs.cs.l, 1);
	assert_int_equal(sregs.cs.db, 0);
	check_desc(&sregs.cs);
	check_desc(&sregs.ds);
	check_desc(&sregs.tr);
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		assert_int_equal(walk(sregs.cr3, probes[i]), probes[i]);
}

static void test_bsp_bad_proto(void **state)
{
	struct boot_info bi = { 0 };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct error e;

	(void)state;
	assert_int_equal(boot_setup_bsp(&mem, &bi, &regs, &sregs, &e), -1);
}

/* ---- a real kernel, when this machine has one ---- */

/* The last path matching `pattern`, if any. */
static int find_kernel(const char *pattern, char *out, size_t n)
{
	glob_t g;
	int found = 0;

	if (glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0) {
		snprintf(out, n, "%s", g.gl_pathv[g.gl_pathc - 1]);
		found = 1;
	}
	globfree(&g);
	return found;
}

/* The kit directory (built by another script) or NULL. */
static const char *kit_dir(char *buf, size_t n)
{
	const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

	if (cache && *cache)
		snprintf(buf, n, "%s/shoal/kit", cache);
	else
		snprintf(buf, n, "%s/.cache/shoal/kit", home ? home : "/root");
	return access(buf, R_OK) ? NULL : buf;
}

/* Load `kernel` (+ `initrd`) into `m` and check the protocol's basics. */
static void real_load(struct guest_mem *m, const char *kernel, const char *initrd)
{
	struct boot_request req = { .kernel_path = kernel, .initrd_path = initrd,
				    .cmdline = "console=ttyS0 earlyprintk=serial", .ncpus = 2 };
	struct boot_info bi;
	struct error e = { 0 };

	if (boot_load(m, &req, &bi, &e))
		fail_msg("%s", e.msg);
	print_message("loaded %s: %s entry 0x%llx kernel 0x%llx-0x%llx initrd 0x%llx+%llu\n",
		      kernel, bi.proto == BOOT_PVH ? "PVH" : "LINUX64",
		      (unsigned long long)bi.entry, (unsigned long long)bi.kernel_start,
		      (unsigned long long)bi.kernel_end, (unsigned long long)bi.initrd_start,
		      (unsigned long long)bi.initrd_size);
	assert_true(bi.kernel_end > bi.kernel_start);
	assert_true(initrd ? bi.initrd_start >= bi.kernel_end : bi.initrd_size == 0);
	if (bi.proto == BOOT_LINUX64) {
		struct boot_params bp;
		guest_mem_read(m, BOOT_ZERO_PAGE_ADDR, &bp, sizeof(bp));
		assert_true(bp.hdr.version >= 0x020c);
		assert_int_equal(bp.hdr.type_of_loader, 0xff);
		assert_int_equal(bp.hdr.ramdisk_image, bi.initrd_start);
		assert_true(bp.hdr.ramdisk_image + bp.hdr.ramdisk_size <= bp.hdr.initrd_addr_max + 1ULL);
		assert_int_equal(bp.hdr.cmd_line_ptr, BOOT_CMDLINE_ADDR);
		assert_true(bp.e820_entries >= 3);
	} else {
		struct hvm_start_info si;
		guest_mem_read(m, BOOT_START_INFO_ADDR, &si, sizeof(si));
		assert_int_equal(si.magic, HVM_START_MAGIC);
		assert_int_equal(si.nr_modules, initrd ? 1 : 0);
		assert_true(bi.entry >= bi.kernel_start && bi.entry < bi.kernel_end);
	}
}

/* The bzImage at `path` cut short by a page, in the middle of its
 * compressed kernel: refused as truncated (syssize), not loaded. */
static void real_truncated(struct guest_mem *m, const char *path)
{
	FILE *f = fopen(path, "rb");
	struct boot_info bi;
	struct error e = { 0 };
	uint8_t *buf;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len > 65536);
	rewind(f);
	buf = malloc((size_t)len);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	assert_int_equal(boot_load_buf(m, path, buf, (size_t)len - 4096, NULL, 0, NULL, 1, &bi, &e), -1);
	assert_int_equal(e.status, EXIT_BADKERNEL);
	assert_non_null(strstr(e.msg, "truncated bzImage"));
	free(buf);
}

static void test_real_kernel(void **state)
{
	char kit[256], path[512], kpath[600], ipath[600];
	struct guest_mem big;
	struct error e = { 0 };
	int tried = 0;

	(void)state;
	assert_int_equal(guest_mem_create_anon(&big, 512 * MiB, &e), 0);
	if (find_kernel("/boot/vmlinuz-*", path, sizeof(path)) && !access(path, R_OK)) {
		real_load(&big, path, NULL);
		real_truncated(&big, path);
		tried++;
	}
	if (kit_dir(kit, sizeof(kit))) {
		snprintf(ipath, sizeof(ipath), "%s/initrd.cpio.gz", kit);
		const char *initrd = access(ipath, R_OK) ? NULL : ipath;
		snprintf(kpath, sizeof(kpath), "%s/bzImage", kit);
		if (!access(kpath, R_OK)) {
			real_load(&big, kpath, initrd);
			real_truncated(&big, kpath);
			tried++;
		}
		snprintf(kpath, sizeof(kpath), "%s/vmlinux", kit);
		if (!access(kpath, R_OK))
			real_load(&big, kpath, initrd), tried++;
	}
	guest_mem_destroy(&big);
	if (!tried) {
		print_message("no /boot/vmlinuz-* and no kit in ~/.cache/shoal/kit: skipping\n");
		skip();
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_elf64_pvh),
		cmocka_unit_test(test_elf64_pvh_note8),
		cmocka_unit_test(test_elf32_pvh),
		cmocka_unit_test(test_elf_initrd),
		cmocka_unit_test(test_elf_initrd_too_big),
		cmocka_unit_test(test_elf_no_note),
		cmocka_unit_test(test_elf_truncated),
		cmocka_unit_test(test_elf_bad_segments),
		cmocka_unit_test(test_elf_bad_header),
		cmocka_unit_test(test_bz_ok),
		cmocka_unit_test(test_bz_setup_sects_zero),
		cmocka_unit_test(test_bz_longer_than_syssize),
		cmocka_unit_test(test_bz_initrd),
		cmocka_unit_test(test_bz_rejects),
		cmocka_unit_test(test_bz_cmdline_size),
		cmocka_unit_test(test_bz_old_rsdp),
		cmocka_unit_test(test_not_a_kernel),
		cmocka_unit_test(test_cmdline_and_cpus),
		cmocka_unit_test(test_boot_load_files),
		cmocka_unit_test(test_bsp_pvh),
		cmocka_unit_test(test_bsp_linux64),
		cmocka_unit_test(test_bsp_bad_proto),
		cmocka_unit_test(test_real_kernel),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
