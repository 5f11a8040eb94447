/*
 * fuzz_memory_zstd.c - a hostile compressed snapshot memory file
 * (memory.zst, `shoal snapshot create --compress`) against
 * guest_mem_load_zstd, which a restore runs into a fresh VM's RAM.
 *
 * The input is
 *   u8  flags: bit 0 the rest of the input is the file itself (raw);
 *       else records the harness compresses: bit 1 leave out the end
 *       record, bit 2 put one more record after the end, bit 3 cut the
 *       compressed file short by the next byte's count of bytes
 *   [u8 cut, when bit 3 is set]
 *   then records until the input ends, each
 *     u16 page, u8 misalign (added to the offset when its bit 7 is set),
 *     u8 pages (0: an empty record), u8 seed of the data's bytes
 * against a VM of 16 MiB (4096 pages; pages up to 4200 reach past it).
 * The harness keeps its own model of what a loader that accepts the
 * records must leave in RAM.
 *
 * Checks, besides crashes, leaks and sanitizer reports:
 *   - records: the load succeeds exactly when every record is whole pages,
 *     not empty, after the one before, inside RAM, the end record is there
 *     and nothing follows it, and the file is whole; then RAM equals the
 *     model (zero where no record wrote) and the hash equals XXH3 of it;
 *     otherwise it fails with EXIT_BADSTATE;
 *   - raw: no crash; a load that succeeds gives the XXH3 of what RAM holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <xxhash.h>
#include <zstd.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"

#define RAM   (16u << 20)     /* the smallest VM */
#define PAGE  4096u
#define CAP   (4u << 20)      /* the records' stream, uncompressed */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem ram;
static uint8_t *model, *stream, *packed;
static int file = -1;

static void setup(void)
{
	struct error e = { 0 };

	if (file >= 0)
		return;
	log_threshold = LOG_ERROR - 1;   /* quiet */
	model = malloc(RAM);
	stream = malloc(CAP);
	packed = malloc(ZSTD_compressBound(CAP));
	file = memfd_create("memory.zst", MFD_CLOEXEC);
	if (!model || !stream || !packed || file < 0 || guest_mem_create(&ram, RAM, &e))
		abort();
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_file(const uint8_t *p, size_t n)
{
	if (ftruncate(file, 0) < 0 || (n && pwrite(file, p, n, 0) != (ssize_t)n))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct error e = { 0 };
	size_t len = 0, i = 1, cut = 0, packed_len;
	uint64_t next = 0, hash = 0;
	bool valid = true, raw;
	uint8_t flags;
	int rc;

	setup();
	if (size < 1)
		return 0;
	flags = data[0];
	raw = flags & 1;
	memset(ram.host, 0, RAM);
	if (raw) {
		put_file(data + 1, size - 1);
		if (guest_mem_load_zstd(&ram, file, &hash, &e) == 0 &&
		    hash != XXH3_64bits(ram.host, RAM))
			abort();
		return 0;
	}
	if (flags & 8 && i < size)
		cut = data[i++];
	memset(model, 0, RAM);
	while (i + 5 <= size && len + 16 + 255 * PAGE + 32 <= CAP) {
		uint64_t off = (uint64_t)(data[i] | data[i + 1] << 8) % 4200 * PAGE;
		uint8_t mis = data[i + 2], pages = data[i + 3], seed = data[i + 4];
		uint64_t n = (uint64_t)pages * PAGE;

		i += 5;
		if (mis & 0x80)
			off += mis & 0x7f;
		put64(stream + len, off);
		put64(stream + len + 8, n);
		len += 16;
		for (uint64_t k = 0; k < n; k++)
			stream[len + k] = (uint8_t)(seed + k * 7 + (k >> 12));
		if (off % PAGE || !n || off < next || off > RAM || n > RAM - off)
			valid = false;
		else
			memcpy(model + off, stream + len, n);
		next = off + n;
		len += n;
	}
	if (!(flags & 2)) {
		put64(stream + len, UINT64_MAX);
		put64(stream + len + 8, 0);
		len += 16;
	} else {
		valid = false;
	}
	if (flags & 4) {                /* a record after the end */
		put64(stream + len, 0);
		put64(stream + len + 8, PAGE);
		memset(stream + len + 16, 1, PAGE);
		len += 16 + PAGE;
		valid = false;
	}
	packed_len = ZSTD_compress(packed, ZSTD_compressBound(CAP), stream, len, 1);
	if (ZSTD_isError(packed_len))
		abort();
	if (cut) {
		packed_len = cut < packed_len ? packed_len - cut : 0;
		valid = false;
	}
	put_file(packed, packed_len);
	rc = guest_mem_load_zstd(&ram, file, &hash, &e);
	if (valid) {
		if (rc != 0 || memcmp(ram.host, model, RAM) || hash != XXH3_64bits(model, RAM))
			abort();
	} else if (rc != -1 || e.status != EXIT_BADSTATE) {
		abort();
	}
	return 0;
}
