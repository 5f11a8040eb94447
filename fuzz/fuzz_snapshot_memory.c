/*
 * fuzz_snapshot_memory.c - a hostile snapshot memory file against what
 * reads it without KVM: guest_mem_file_hash (the checksum a restore checks
 * first), guest_mem_load_file (a restore's copy into a fresh memfd),
 * guest_mem_map_file_private (a clone's copy-on-write mapping), and
 * snapshot_restore itself on a snapshot directory, up to the point where
 * KVM would be opened.  fuzz_snapshot covers the manifest and the state
 * file; this target the third file.
 *
 * The input is
 *   u8  flags: bit 0 the manifest gives the file's real size (else the
 *       VM's), bit 1 the manifest's checksum is the right one (else the
 *       next 8 bytes), bit 2 a VM of 32 MiB (else 16)
 *   [u64 a checksum, when bit 1 is clear]
 *   u32 the file's size: the VM's plus this (as an int32) modulo 1 MiB,
 *       so a little short or long, and not always whole pages
 *   then records until the input ends, the file built as they say:
 *     op % 3 == 0  write: u24 offset (modulo the size + 4 KiB: it may
 *                  extend the file), u8 n, n bytes
 *     op % 3 == 1  a hole: u16 page, u8 pages, punched (FALLOC_FL_PUNCH_HOLE)
 *     op % 3 == 2  truncate to u24 * 8 bytes, modulo the size + 1
 * The harness keeps its own copy of what the file holds.
 *
 * The snapshot directory has a manifest for a VM booted from firmware
 * whose image does not exist, so snapshot_restore, once the memory file
 * is accepted and loaded, fails reading the firmware: the step before
 * KVM is opened (vm_build), so no VM is ever made.
 *
 * Checks, besides crashes, leaks and sanitizer reports:
 *   - guest_mem_file_hash of the file equals XXH3 of the harness's copy;
 *   - guest_mem_load_file and guest_mem_map_file_private accept the file
 *     exactly when its size is the VM's, and then guest RAM holds what
 *     the file holds (holes as zeros);
 *   - snapshot_restore accepts the memory file exactly when its size is
 *     the manifest's and the VM's and its checksum the manifest's (it then
 *     stops at the firmware, EXIT_NOINPUT), and otherwise refuses it with
 *     EXIT_BADSTATE.
 * The clone path of snapshot_restore (overrides) is not driven: it needs
 * a new identity for the VM; its memory step is the mapping above.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"
#include "state/snapshot.h"
#include "vmm/vm.h"

#define VM_SMALL  (16u << 20)
#define VM_LARGE  (32u << 20)
#define SLACK     (1u << 20)
#define SHADOW    (VM_LARGE + SLACK + 8192u)
#define MAX_DIRTY 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/shoal-fz-snapmem.XXXXXX";
static char mem_path[64];
static int fd = -1;
static uint8_t *shadow;
static struct guest_mem ram[2];          /* 16 and 32 MiB, memfds */
static struct { uint64_t off, len; } dirty[MAX_DIRTY];
static int ndirty;
static bool dirty_all;

static void cleanup(void)
{
	char p[96];

	unlink(mem_path);
	snprintf(p, sizeof(p), "%s/state", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/manifest.json", dir);
	unlink(p);
	rmdir(dir);
}

static void setup(void)
{
	struct error e;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	shadow = calloc(1, SHADOW);
	if (!shadow || !mkdtemp(dir) || guest_mem_create(&ram[0], VM_SMALL, &e) ||
	    guest_mem_create(&ram[1], VM_LARGE, &e))
		abort();
	snprintf(mem_path, sizeof(mem_path), "%s/memory", dir);
	fd = open(mem_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	atexit(cleanup);
}

static void mark(uint64_t off, uint64_t len)
{
	if (ndirty == MAX_DIRTY)
		dirty_all = true;
	else
		dirty[ndirty++].off = off, dirty[ndirty - 1].len = len;
}

/* The shadow all zero again, cheaply. */
static void shadow_reset(void)
{
	if (dirty_all)
		memset(shadow, 0, SHADOW);
	else
		for (int i = 0; i < ndirty; i++)
			memset(shadow + dirty[i].off, 0, dirty[i].len);
	ndirty = 0;
	dirty_all = false;
}

static void write_file(const char *name, const void *p, size_t len)
{
	char path[96];
	int f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (f < 0 || write(f, p, len) != (ssize_t)len)
		abort();
	close(f);
}

static uint32_t get(const uint8_t **p, size_t *left, unsigned n)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint32_t)(*left ? (*left)--, *(*p)++ : 0) << (8 * i);
	return v;
}

/* Build the file from the records; returns its size. */
static uint64_t build(uint64_t fsize, const uint8_t *p, size_t left)
{
	if (ftruncate(fd, 0) || ftruncate(fd, (off_t)fsize))
		abort();
	while (left) {
		uint8_t op = *p++ % 3;

		left--;
		if (op == 0) {
			uint64_t off = get(&p, &left, 3) % (fsize + 4096);
			size_t n = get(&p, &left, 1);

			if (off > VM_LARGE + SLACK)   /* the shadow's end */
				off = VM_LARGE + SLACK;

			if (n > left)
				n = left;
			if (pwrite(fd, p, n, (off_t)off) != (ssize_t)n)
				abort();
			memcpy(shadow + off, p, n);
			mark(off, n);
			if (n && off + n > fsize)   /* a write of nothing extends nothing */
				fsize = off + n;
			p += n;
			left -= n;
		} else if (op == 1) {
			uint64_t pg = get(&p, &left, 2), np = get(&p, &left, 1);
			uint64_t off = pg * 4096, len = np * 4096;

			if (off >= fsize || !len)
				continue;
			if (len > fsize - off)
				len = fsize - off;
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				      (off_t)len))
				abort();
			memset(shadow + off, 0, len);
		} else {
			uint64_t to = (uint64_t)get(&p, &left, 3) * 8 % (fsize + 1);

			if (ftruncate(fd, (off_t)to))
				abort();
			memset(shadow + to, 0, fsize - to);
			fsize = to;
		}
	}
	return fsize;
}

/* The direct calls: hash, load, map. */
static uint64_t check_direct(uint64_t fsize, uint64_t vm_size, struct guest_mem *m)
{
	uint64_t want = XXH3_64bits(shadow, fsize), got;
	struct guest_mem pm;
	struct error e;
	struct stat st;

	if (fstat(fd, &st) || (uint64_t)st.st_size != fsize)
		abort();   /* the harness's own bookkeeping */
	if (guest_mem_file_hash(fd, fsize, &got, &e) || got != want)
		abort();
	if (guest_mem_discard(m, m->host, m->size))
		abort();
	if (!guest_mem_load_file(m, fd, &e) != (fsize == vm_size))
		abort();
	if (fsize == vm_size && (guest_mem_file_hash(m->fd, vm_size, &got, &e) || got != want))
		abort();   /* RAM is not what the file holds */
	if (!guest_mem_map_file_private(&pm, fd, vm_size, &e) != (fsize == vm_size))
		abort();
	if (fsize == vm_size && XXH3_64bits(pm.host, vm_size) != want)
		abort();
	guest_mem_destroy(&pm);
	return want;
}

static void check_restore(uint64_t vm_size, uint64_t man_size, uint64_t man_hash, bool good)
{
	char man[1024], hex[17], shex[17];
	uint64_t state_hash = XXH3_64bits("x", 1);
	struct error e = { 0 };
	struct vm *vm;

	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)man_hash);
	snprintf(shex, sizeof(shex), "%016llx", (unsigned long long)state_hash);
	snprintf(man, sizeof(man),
		 "{\"format\": \"shoal-snapshot\", \"version\": 1, \"vcpus\": 1, "
		 "\"memory_bytes\": %llu, \"disks\": [], \"config\": {\"cpus\": 1, "
		 "\"memory\": %llu, \"firmware\": \"%s/no-bios\"}, \"files\": {"
		 "\"memory\": {\"size\": %llu, \"xxh3\": \"%s\"}, "
		 "\"state\": {\"size\": 1, \"xxh3\": \"%s\"}}}",
		 (unsigned long long)vm_size, (unsigned long long)vm_size, dir,
		 (unsigned long long)man_size, hex, shex);
	write_file("manifest.json", man, strlen(man));
	vm = snapshot_restore(dir, NULL, &e);
	if (vm)
		abort();   /* there is no firmware: it cannot have got this far */
	if (good ? e.status != EXIT_NOINPUT || !strstr(e.msg, "no-bios")
		 : e.status != EXIT_BADSTATE) {
		fprintf(stderr, "fuzz_snapshot_memory: good %d, status %d: %s\n", good, e.status, e.msg);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	uint64_t vm_size, fsize, man_hash = 0, hash;
	int32_t delta;
	uint8_t f;

	if (size < 5)
		return 0;
	if (fd < 0) {
		setup();
		write_file("state", "x", 1);
	}
	shadow_reset();
	f = (uint8_t)get(&p, &left, 1);
	if (!(f & 2))
		man_hash = get(&p, &left, 4) | (uint64_t)get(&p, &left, 4) << 32;
	vm_size = f & 4 ? VM_LARGE : VM_SMALL;
	delta = (int32_t)get(&p, &left, 4) % (int32_t)SLACK;
	fsize = build(vm_size + (uint64_t)(int64_t)delta, p, left);
	hash = check_direct(fsize, vm_size, &ram[f & 4 ? 1 : 0]);
	if (f & 2)
		man_hash = hash;
	check_restore(vm_size, f & 1 ? fsize : vm_size, man_hash,
		      fsize == vm_size && man_hash == hash);
	return 0;
}
