/*
 * boot_elf.c - loading an ELF kernel through the PVH boot protocol.
 *
 * PVH (Xen's "HVM direct boot", adopted by QEMU, Firecracker, Cloud
 * Hypervisor) starts a kernel in 32-bit protected mode with paging off at
 * the physical address found in its XEN_ELFNOTE_PHYS32_ENTRY note, with
 * EBX pointing at a struct hvm_start_info.  Linux's vmlinux carries the note
 * when built with CONFIG_PVH; so does Shoal's own test guest.  An ELF file
 * without it is refused: we do not guess an entry convention.
 *
 * Steps:  parse the ELF header (ELF64 or ELF32, little-endian x86)
 *         -> read the program headers into a normalized form
 *         -> find the PVH note in PT_NOTE segments
 *         -> copy PT_LOAD segments to p_paddr, zero their .bss tails
 *         -> place the initrd, write hvm_start_info + module + memory map.
 *
 * The file is hostile.  Invariants checked before any copy: the header, the
 * program header table and every segment's file range lie inside the file
 * (with overflow-safe arithmetic); p_filesz <= p_memsz; each loaded segment
 * lies in low guest RAM at or above 1 MiB (so it can reach neither our boot
 * structures below 1 MiB nor memory the 32-bit entry cannot address); the
 * entry point is inside a loaded segment; the program header count is capped.
 */
#include "boot/boot_priv.h"

#include <elf.h>
#include <string.h>

#include "base/exitcode.h"

#define ELF_MAX_PHDRS  64

/* A program header in a class-independent form. */
struct elf_seg {
	uint32_t type;
	uint64_t offset;
	uint64_t paddr;
	uint64_t filesz;
	uint64_t memsz;
};

/* The parts of the ELF header the loader uses. */
struct elf_hdr {
	int is64;
	uint64_t phoff;
	uint16_t phentsize;
	uint16_t phnum;
};

/* Does [off, off+len) lie inside a file of `size` bytes? */
static int elf_in_file(uint64_t off, uint64_t len, size_t size)
{
	return off <= size && len <= size - off;
}

static int elf_parse_header(const char *name, const uint8_t *k, size_t len,
			    struct elf_hdr *h, struct error *e)
{
	Elf64_Ehdr e64;
	Elf32_Ehdr e32;
	size_t need = EI_NIDENT;

	if (len >= EI_NIDENT)
		need = k[EI_CLASS] == ELFCLASS64 ? sizeof(e64) : sizeof(e32);
	if (len < need)
		return error_set(e, EXIT_BADKERNEL, "%s: truncated ELF header", name);
	if (k[EI_DATA] != ELFDATA2LSB)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF kernel is not little-endian", name);
	if (k[EI_CLASS] == ELFCLASS64) {
		memcpy(&e64, k, sizeof(e64));
		if (e64.e_machine != EM_X86_64)
			return error_set(e, EXIT_BADKERNEL, "%s: ELF kernel is not for x86-64 (e_machine %u)",
					 name, e64.e_machine);
		if (e64.e_type != ET_EXEC)
			return error_set(e, EXIT_BADKERNEL, "%s: ELF file is not an executable (e_type %u)",
					 name, e64.e_type);
		*h = (struct elf_hdr){ 1, e64.e_phoff, e64.e_phentsize, e64.e_phnum };
		return 0;
	}
	if (k[EI_CLASS] != ELFCLASS32)
		return error_set(e, EXIT_BADKERNEL, "%s: unknown ELF class %u", name, k[EI_CLASS]);
	memcpy(&e32, k, sizeof(e32));
	if (e32.e_machine != EM_386)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF32 kernel is not for i386 (e_machine %u)",
				 name, e32.e_machine);
	if (e32.e_type != ET_EXEC)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF file is not an executable (e_type %u)",
				 name, e32.e_type);
	*h = (struct elf_hdr){ 0, e32.e_phoff, e32.e_phentsize, e32.e_phnum };
	return 0;
}

/* Read the program header table into `segs` (at most ELF_MAX_PHDRS). */
static int elf_read_phdrs(const char *name, const uint8_t *k, size_t len,
			  const struct elf_hdr *h, struct elf_seg *segs, struct error *e)
{
	size_t entsz = h->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);

	if (h->phnum == 0)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF file has no program headers", name);
	if (h->phnum > ELF_MAX_PHDRS)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF file has %u program headers (at most %d)",
				 name, h->phnum, ELF_MAX_PHDRS);
	if (h->phentsize < entsz)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF program header entry size %u is too small",
				 name, h->phentsize);
	if (!elf_in_file(h->phoff, (uint64_t)h->phnum * h->phentsize, len))
		return error_set(e, EXIT_BADKERNEL, "%s: truncated ELF program header table", name);
	for (int i = 0; i < h->phnum; i++) {
		const uint8_t *p = k + h->phoff + (uint64_t)i * h->phentsize;
		if (h->is64) {
			Elf64_Phdr ph;
			memcpy(&ph, p, sizeof(ph));
			segs[i] = (struct elf_seg){ ph.p_type, ph.p_offset, ph.p_paddr,
						    ph.p_filesz, ph.p_memsz };
		} else {
			Elf32_Phdr ph;
			memcpy(&ph, p, sizeof(ph));
			segs[i] = (struct elf_seg){ ph.p_type, ph.p_offset, ph.p_paddr,
						    ph.p_filesz, ph.p_memsz };
		}
	}
	return 0;
}

static uint32_t elf_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* Scan one PT_NOTE segment for the PVH entry note.  Returns 1 and sets
 * *entry when found, 0 when not, -1 on a malformed note. */
static int elf_scan_notes(const char *name, const uint8_t *p, uint64_t len,
			  uint64_t *entry, struct error *e)
{
	uint64_t off = 0;

	while (len - off >= 12) {
		uint64_t namesz = elf_le32(p + off), descsz = elf_le32(p + off + 4);
		uint32_t type = elf_le32(p + off + 8);
		uint64_t name_off = off + 12;
		uint64_t desc_off = name_off + ((namesz + 3) & ~3ULL);
		uint64_t next = desc_off + ((descsz + 3) & ~3ULL);

		if (desc_off > len || next > len)
			return error_set(e, EXIT_BADKERNEL, "%s: truncated ELF note", name);
		if (namesz == 4 && !memcmp(p + name_off, "Xen", 4) &&
		    type == XEN_ELFNOTE_PHYS32_ENTRY) {
			if (descsz == 4)
				*entry = elf_le32(p + desc_off);
			else if (descsz == 8)
				memcpy(entry, p + desc_off, 8);
			else
				return error_set(e, EXIT_BADKERNEL,
						 "%s: PVH entry note has a %llu-byte value (want 4 or 8)",
						 name, (unsigned long long)descsz);
			return 1;
		}
		off = next;
	}
	return 0;
}

/* Find the PVH entry among all PT_NOTE segments. */
static int elf_find_pvh_entry(const char *name, const uint8_t *k, size_t len,
			      const struct elf_seg *segs, int n, uint64_t *entry,
			      struct error *e)
{
	for (int i = 0; i < n; i++) {
		int r;

		if (segs[i].type != PT_NOTE)
			continue;
		if (!elf_in_file(segs[i].offset, segs[i].filesz, len))
			return error_set(e, EXIT_BADKERNEL, "%s: ELF note segment is outside the file", name);
		r = elf_scan_notes(name, k + segs[i].offset, segs[i].filesz, entry, e);
		if (r)
			return r < 0 ? -1 : 0;
	}
	return error_set(e, EXIT_BADKERNEL,
			 "%s: ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
			 "Shoal boots ELF kernels through PVH only", name);
}

/* Check one PT_LOAD against the file and guest RAM. */
static int elf_check_load(struct boot_ctx *c, const struct elf_seg *s, size_t len,
			  struct error *e)
{
	uint64_t low_end = guest_mem_low_end(c->m);

	if (!elf_in_file(s->offset, s->filesz, len))
		return error_set(e, EXIT_BADKERNEL, "%s: ELF segment at file offset 0x%llx "
				 "(0x%llx bytes) runs past the end of the file", c->name,
				 (unsigned long long)s->offset, (unsigned long long)s->filesz);
	if (s->filesz > s->memsz)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF segment has p_filesz > p_memsz", c->name);
	if (s->paddr < BOOT_KERNEL_ADDR)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF segment at 0x%llx is below 1 MiB, "
				 "where Shoal keeps its boot structures", c->name,
				 (unsigned long long)s->paddr);
	if (s->paddr >= low_end || s->memsz > low_end - s->paddr)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF segment 0x%llx-0x%llx does not fit in "
				 "guest RAM below 0x%llx", c->name, (unsigned long long)s->paddr,
				 (unsigned long long)(s->paddr + s->memsz),
				 (unsigned long long)low_end);
	return 0;
}

/* Is `entry` inside one of the loaded segments? */
static int elf_entry_loaded(const struct elf_seg *segs, int n, uint64_t entry)
{
	for (int i = 0; i < n; i++)
		if (segs[i].type == PT_LOAD && entry >= segs[i].paddr &&
		    entry - segs[i].paddr < segs[i].memsz)
			return 1;
	return 0;
}

/* Check every PT_LOAD and the entry point, then copy the segments; sets
 * bi->kernel_start/end.  Nothing is written unless everything checks out. */
static int elf_load_segments(struct boot_ctx *c, const uint8_t *k, size_t len,
			     const struct elf_seg *segs, int n, uint64_t entry,
			     struct error *e)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (int i = 0; i < n; i++) {
		const struct elf_seg *s = &segs[i];
		if (s->type != PT_LOAD || s->memsz == 0)
			continue;
		if (elf_check_load(c, s, len, e))
			return -1;
		lo = s->paddr < lo ? s->paddr : lo;
		hi = s->paddr + s->memsz > hi ? s->paddr + s->memsz : hi;
	}
	if (hi == 0)
		return error_set(e, EXIT_BADKERNEL, "%s: ELF file has no loadable segments", c->name);
	if (!elf_entry_loaded(segs, n, entry))
		return error_set(e, EXIT_BADKERNEL, "%s: PVH entry point 0x%llx is not inside a "
				 "loadable segment", c->name, (unsigned long long)entry);
	for (int i = 0; i < n; i++) {
		const struct elf_seg *s = &segs[i];
		uint8_t *dst;
		if (s->type != PT_LOAD || s->memsz == 0)
			continue;
		dst = guest_mem_ptr(c->m, s->paddr, s->memsz);
		memcpy(dst, k + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	c->bi->kernel_start = lo;
	c->bi->kernel_end = hi;
	return 0;
}

/* Write hvm_start_info, the module list and the memory map. */
static int elf_write_start_info(struct boot_ctx *c, struct error *e)
{
	struct hvm_start_info si = {
		.magic = HVM_START_MAGIC, .version = HVM_START_VERSION,
		.cmdline_paddr = BOOT_CMDLINE_ADDR, .rsdp_paddr = c->bi->rsdp,
		.memmap_paddr = BOOT_START_INFO_MEMMAP, .memmap_entries = (uint32_t)c->ne820,
	};
	struct hvm_memmap_table_entry mm[E820_MAX];

	_Static_assert(BOOT_START_INFO_MEMMAP + sizeof(mm) <= BOOT_START_INFO_ADDR + 4096,
		       "PVH memory map overflows its page");
	if (c->bi->initrd_size) {
		struct hvm_modlist_entry mod = { .paddr = c->bi->initrd_start,
						 .size = c->bi->initrd_size };
		si.nr_modules = 1;
		si.modlist_paddr = BOOT_START_INFO_MODLIST;
		if (guest_mem_write(c->m, BOOT_START_INFO_MODLIST, &mod, sizeof(mod)))
			return error_set(e, EXIT_HOST, "cannot write the PVH module list");
	}
	for (int i = 0; i < c->ne820; i++)
		mm[i] = (struct hvm_memmap_table_entry){ c->e820[i].addr, c->e820[i].size,
							 c->e820[i].type, 0 };
	if (guest_mem_write(c->m, BOOT_START_INFO_MEMMAP, mm, sizeof(mm[0]) * (size_t)c->ne820) ||
	    guest_mem_write(c->m, BOOT_START_INFO_ADDR, &si, sizeof(si)))
		return error_set(e, EXIT_HOST, "cannot write hvm_start_info");
	c->bi->boot_struct = BOOT_START_INFO_ADDR;
	return 0;
}

int boot_elf_load(struct boot_ctx *c, const uint8_t *k, size_t len, struct error *e)
{
	struct elf_seg segs[ELF_MAX_PHDRS];
	struct elf_hdr h = { 0 };
	uint64_t entry = 0;

	if (elf_parse_header(c->name, k, len, &h, e) ||
	    elf_read_phdrs(c->name, k, len, &h, segs, e) ||
	    elf_find_pvh_entry(c->name, k, len, segs, h.phnum, &entry, e))
		return -1;
	if (elf_load_segments(c, k, len, segs, h.phnum, entry, e))
		return -1;
	if (boot_place_initrd(c, guest_mem_low_end(c->m), e))
		return -1;
	c->bi->proto = BOOT_PVH;
	c->bi->entry = entry;
	return elf_write_start_info(c, e);
}
