/*
 * guest_mem.h - guest RAM: one memfd, mapped once into the VMM.
 *
 * Design rule (docs/vision.md): guest memory is a memfd.  Snapshots, template
 * clones (MAP_PRIVATE of a memory file), vhost-user back ends and migration
 * all map or send this same file.  RAM is split around the 32-bit PCI hole
 * (layout.h): the memfd holds the low part at file offset 0 and the high part
 * right after it, and the host mapping is one contiguous range of `size`
 * bytes, so a file offset equals a host-mapping offset.
 *
 * Every access from device code goes through guest_mem_ptr(), which checks
 * both ends of the range: guest-supplied addresses are never trusted.
 */
#ifndef SHOAL_BASE_GUEST_MEM_H
#define SHOAL_BASE_GUEST_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

#define GUEST_MEM_MAX_REGIONS 8   /* 2 for a VM; vhost-user tables up to 8 */

struct guest_region {
	uint64_t gpa;        /* guest-physical start */
	uint64_t size;       /* bytes */
	uint64_t offset;     /* offset in the memfd and in `host` */
	uint8_t *hva;        /* host address of gpa */
};

struct guest_mem {
	int fd;              /* the memfd, -1 for a plain anonymous buffer (tests) */
	uint8_t *host;       /* host mapping of the whole file */
	uint64_t size;       /* total RAM bytes */
	int nregions;
	struct guest_region region[GUEST_MEM_MAX_REGIONS];
	bool private_map;    /* a copy-on-write mapping of a file (a clone's
	                      * memory): fd is -1, host is munmap'd */
	/* Pages written by host threads (device emulation) while migration
	 * tracks them: one bit per 4 KiB page of the mapping, set after the
	 * write.  NULL when nothing tracks (the usual case: one atomic load
	 * per write).  The array, once made, lives until guest_mem_destroy. */
	uint64_t *_Atomic dirty;
	uint64_t *dirty_alloc;
	/* Called by guest_mem_discard after it punched [off, off+len) of the
	 * memfd (the zero-page layer, src/mem/zero_blocks.c, installs it to
	 * keep whole released 2 MiB blocks unallocated on a read).  NULL:
	 * nothing listens.  Set and cleared while no device runs. */
	void (*released)(void *opaque, uint64_t off, uint64_t len);
	void *released_opaque;
};

/* Create `size` bytes of guest RAM in a memfd (MAP_SHARED, MAP_NORESERVE).
 * Fails with EXIT_RESOURCE when the size is out of range or the host cannot
 * give it.  Returns 0 or -1 with `e` filled. */
int guest_mem_create(struct guest_mem *m, uint64_t size, struct error *e);

/* Same layout over malloc'd memory: for unit tests and fuzzers, no memfd. */
int guest_mem_create_anon(struct guest_mem *m, uint64_t size, struct error *e);

void guest_mem_destroy(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len) or NULL when any byte of it is not RAM
 * or the range crosses from one region into another. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy in/out with the same checks; return 0 or -1 when out of range. */
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);

/* A guest_mem made of regions mapped by someone else (a vhost-user back
 * end maps the front end's memory table): start empty, add regions.  The
 * regions are not owned; guest_mem_destroy does not unmap them. */
void guest_mem_init_external(struct guest_mem *m);
int guest_mem_add_region(struct guest_mem *m, uint64_t gpa, uint64_t size, void *hva);

/* guest_mem_file.c: RAM to and from a file that is an image of the memfd.
 * Save writes every page that is not all zero and leaves zero pages as
 * holes (`*data_bytes`: the bytes written; `*hash`: XXH3-64 of the whole
 * image); load checks the file's size against the VM's (EXIT_BADSTATE)
 * and reads its data extents.  Neither reads a hole of the memfd or the
 * file: on shared memory, reading a hole allocates it, and a snapshot
 * would make its VM's memory all resident.  0 or -1. */
bool guest_mem_page_zero(const uint8_t *page);   /* all 4096 bytes zero */
int guest_mem_save_file(const struct guest_mem *m, int fd, uint64_t *data_bytes,
			uint64_t *hash, struct error *e);
int guest_mem_load_file(const struct guest_mem *m, int fd, struct error *e);
/* XXH3-64 of the `size` bytes of file `fd` (holes hashed as zeros, not
 * read); 0 or -1 with `e`. */
int guest_mem_file_hash(int fd, uint64_t size, uint64_t *hash, struct error *e);
/* The compressed memory file (zstd, `level`): the pages that are not all
 * zero as records (guest_mem_file.c), reading only the memfd's data; the
 * RAM's data bytes, the file's size and the XXH3-64 of all of RAM (as
 * guest_mem_file_hash of the plain file would give).  Load checks every
 * record against the VM's RAM before it copies it (EXIT_BADSTATE for a
 * damaged or cut file) and gives the same hash of what it loaded, for the
 * caller to compare.  0, or -1 with `e`. */
int guest_mem_save_zstd(const struct guest_mem *m, int fd, int level, uint64_t *data_bytes,
			uint64_t *file_bytes, uint64_t *hash, struct error *e);
int guest_mem_load_zstd(const struct guest_mem *m, int fd, uint64_t *hash, struct error *e);
/* Write the pages of [off, end) that are not all zero, reading only the
 * memfd's data, at their offsets in `fd` (the live writer's chunks); add
 * the bytes written to *data.  0, or -1 with errno. */
int guest_mem_write_data(const struct guest_mem *m, int fd, uint64_t off, uint64_t end,
			 uint64_t *data);

/* RAM of `size` bytes that is a copy-on-write (MAP_PRIVATE) mapping of the
 * file `fd`, an image of a memfd: pages are read from the file (its page
 * cache, shared by every mapping of it) until the guest writes them, and
 * the file is never written.  The file must be exactly `size` bytes
 * (EXIT_BADSTATE).  No memfd: what needs one (vhost-user) cannot use it. */
int guest_mem_map_file_private(struct guest_mem *m, int fd, uint64_t size, struct error *e);

/* Host-side dirty tracking, for live migration.  guest_mem_dirty_track
 * turns it on (a zeroed bitmap; 0, or -1 when out of memory) or off.
 * guest_mem_dirty_hva marks [p, p+len) of the host mapping, and
 * guest_mem_dirty_gpa a guest range, as written; both are no-ops while
 * tracking is off or for memory outside the mapping.  A writer marks
 * after it wrote, so a page harvested (guest_mem_dirty_take: OR the marks
 * into `out`, one bit per page, and clear them) before its write is
 * marked again.  Safe from any thread. */
int guest_mem_dirty_track(struct guest_mem *m, bool on);
void guest_mem_dirty_hva(const struct guest_mem *m, const void *p, uint64_t len);
void guest_mem_dirty_gpa(const struct guest_mem *m, uint64_t gpa, uint64_t len);
void guest_mem_dirty_take(const struct guest_mem *m, uint64_t *out);

/* Give the host back the whole pages of [p, p+len) of the mapping (the
 * balloon's inflated and reported pages): a punched hole in the memfd
 * (fallocate PUNCH_HOLE|KEEP_SIZE), or MADV_DONTNEED on a private mapping
 * (its pages fall back to the file's).  The range reads as zeros (a
 * private map: the file's bytes) afterwards and is marked dirty for
 * migration.  Note that a later read of a hole through the shared mapping
 * allocates a zeroed page again (docs/memory.md), unless m->released (the
 * zero-page layer) takes the range over: it is called after the punch.  `p` and `len` must be
 * 4 KiB aligned and inside the mapping.  0, or -1 with errno (EINVAL,
 * EOPNOTSUPP for memory that is not ours: malloc'd or external). */
int guest_mem_discard(const struct guest_mem *m, void *p, uint64_t len);

/* End of low RAM (exclusive): min(size, 3 GiB). */
uint64_t guest_mem_low_end(const struct guest_mem *m);

#endif
