/*
 * fuzz_migrate.c - a hostile or damaged migration stream against the
 * destination's reader (state/migrate.c), up to where KVM would be asked.
 *
 * The input is
 *
 *   u8 flags | the stream, as the source sends it after connecting
 *
 * The stream (at most its first 64 KiB, so that it fits the socket's
 * buffer) is written into a socketpair and read back by the real reader:
 * migrate_read_magic, then migrate_read_section for each section (framing,
 * length, version, XXH3 checksum).  Its sections go where incoming_read
 * sends them, in that function's order rules (hello first and once; ram
 * and round before the state; the state once; end after it), written out
 * here because its CPU check and state restore need KVM:
 *
 *   hello  migrate_parse_hello, for a destination of 16 MiB and 1 to 4
 *          vCPUs (flags bits 0-1); the CPU it returns is only checked to
 *          be JSON (snapshot_check_cpu asks KVM for this host's)
 *   ram    migrate_apply_ram into 16 MiB of memfd guest RAM: zero, data
 *          and zstd-compressed records (kind 3: the frame must decode to
 *          exactly its pages; seed ram_zstd, whose hello also carries the
 *          options {"ram_compress": "zstd"})
 *   postcopy migrate_postcopy_parse (state/migrate_postcopy.c), once,
 *          before the state: the list must count exactly the bits it sets
 *          and none past the last page of the 16 MiB
 *   disks  migrate_disk_parse_list, and
 *   disk   migrate_disk_apply (state/migrate_disk.c), for a destination
 *          with two disks of 1 MiB, the second read-only, whose writes
 *          land in memory and abort if they reach outside a disk, a disk
 *          not listed, or the read-only one
 *   state  snapshot_state_restore on a VM without KVM (devices from the
 *          builder on a fake device host: a "devices" section before "kvm"
 *          reaches their restore), which must refuse it, and
 *          kvm_state_check on its "kvm" section for a host described by
 *          flags bits 2-4 (as fuzz_snapshot.c); the stream goes on only if
 *          that passes
 *
 * A checksum a mutation broke would stop every input at the reader, so
 * with flags bit 5 each section's checksum is set right before the stream
 * is sent (as far as its framing can be followed), and what lies inside
 * the sections is fuzzed too; without it the checksums are as given.
 *
 * Checks, besides crashes, leaks and sanitizer reports: every refusal has
 * a message and EXIT_BADSTATE (the source is closed after its last byte,
 * so a short stream must be refused, never waited on), and no descriptor
 * is left open.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"
#include "base/state.h"
#include "devices/device.h"
#include "state/migrate.h"
#include "state/migrate_disk.h"
#include "state/migrate_postcopy.h"
#include "state/snapshot.h"
#include "vmm/config.h"
#include "vmm/devices.h"
#include "vmm/kvm_state.h"
#include "vmm/vm.h"
#include "fuzz_vm.h"

#define MEM        (16u << 20)
#define STREAM_MAX (64u << 10)

static const uint32_t host_msrs[] = {
	0x10, 0x1b, 0x3a, 0x174, 0x175, 0x176, 0x1a0, 0x277, 0x6e0,
	0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,
	0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103, 0x4b564d00, 0x4b564d01,
};

static struct guest_mem mem = { .fd = -1 };

#define DISK (1u << 20)
static uint8_t disk_bytes[DISK];

static int disk_write(void *opaque, int disk, const void *buf, uint64_t off, uint64_t len)
{
	const struct migrate_disk_target *t = opaque;

	if (disk != 0 || !t->announced[0] || off > DISK || len > DISK - off || !len)
		abort();   /* only the writable, listed disk, inside it */
	if (buf)
		memcpy(disk_bytes + off, buf, len);
	else
		memset(disk_bytes + off, 0, len);
	return 0;
}

static void refused(const struct error *e)
{
	if (!e->msg[0] || e->status != EXIT_BADSTATE)
		abort();
}

/* Set the checksum after each section of `s` (the stream after its magic)
 * to that section's XXH3, as far as the framing can be followed. */
static void fix_checksums(uint8_t *s, size_t n)
{
	size_t pos = 8;

	while (pos + 5 <= n) {
		size_t head = 5u + s[pos + 4] + 2 + 4;
		uint32_t plen;
		uint64_t h;

		if (n - pos < head)
			return;
		memcpy(&plen, s + pos + head - 4, 4);
		if (plen > n - pos - head || n - pos - head - plen < 8)
			return;
		h = XXH3_64bits(s + pos, head + plen);
		memcpy(s + pos + head + plen, &h, 8);
		pos += head + plen + 8;
	}
}

/* The "state" section: 0 when a destination with KVM would go on to
 * apply it, -1 (with `e`) when it is refused before. */
static int check_state(uint8_t flags, int ncpus, const uint8_t *p, size_t len, struct error *e)
{
	static const uint32_t xsave_sizes[] = { 0, 4096, 4096, 8192 };
	struct fake_host *h = fake_host_new(256ULL << 20);
	struct state_reader r, payload;
	struct vm_config cfg;
	struct vm *vm;
	struct error e2 = { 0 };
	char name[64];
	uint16_t ver;
	int rc = 0, nkvm = 0;

	vm_config_init(&cfg);
	if (!h || devices_create_all(&h->host, &cfg, e))
		abort();
	vm_config_free(&cfg);
	vm = fuzz_fake_vm(h, ncpus);
	if (!snapshot_state_restore(vm, "incoming migration: the state section", p, len, &e2))
		abort();   /* without KVM its "kvm" section cannot be applied */
	if (!e2.msg[0])
		abort();
	fuzz_fake_vm_free(vm);
	fake_host_free(h);

	state_reader_init(&r, p, len);
	while (!rc && r.pos < r.len) {
		if (state_section_read(&r, name, &ver, &payload))
			return error_set(e, EXIT_BADSTATE, "the state section is damaged");
		if (!strcmp(name, "kvm") && nkvm++ == 0 &&
		    kvm_state_check(ncpus, xsave_sizes[flags >> 2 & 3], flags & 0x10, host_msrs,
				    sizeof(host_msrs) / sizeof(host_msrs[0]), payload.data,
				    payload.len, e)) {
			if (!e->msg[0])
				abort();
			e->status = EXIT_BADSTATE;
			rc = -1;
		}
	}
	if (!rc && nkvm != 1)
		rc = error_set(e, EXIT_BADSTATE, "no single kvm section");
	return rc;
}

/* incoming_read's order rules; 0 when the stream is complete. */
static int read_stream(uint8_t flags, struct migrate_in *in, struct error *e)
{
	int ncpus = 1 + (flags & 3);
	bool hello = false, state = false, pc = false;
	struct migrate_disk_target dt = { .n = 2, .size = { DISK, DISK }, .writable = { true, false },
					  .path = { "d0", "d1" }, .write = disk_write };

	dt.opaque = &dt;
	if (migrate_read_magic(in, e))
		return -1;
	for (;;) {
		char name[64];
		const uint8_t *p;
		size_t len;

		if (migrate_read_section(in, name, &p, &len, e))
			return -1;
		if (!hello && strcmp(name, "hello"))
			return error_set(e, EXIT_BADSTATE, "does not begin with hello");
		if (!strcmp(name, "hello")) {
			json_t *cpu;

			if (hello)
				return error_set(e, EXIT_BADSTATE, "a second hello");
			if (migrate_parse_hello(mem.size, ncpus, p, len, &cpu, e))
				return -1;
			if (!cpu)
				abort();
			json_decref(cpu);
			hello = true;
		} else if (!strcmp(name, "ram") && !state) {
			if (migrate_apply_ram(&mem, p, len, e))
				return -1;
		} else if (!strcmp(name, "postcopy") && !state && !pc) {
			uint64_t *bits, missing, n = 0;
			uint8_t id[MIGRATE_PC_ID_LEN];

			if (migrate_postcopy_parse(mem.size, p, len, &bits, &missing, id, e))
				return -1;
			for (uint64_t i = 0; i < mem.size / 4096 / 64; i++)
				n += (uint64_t)__builtin_popcountll(bits[i]);
			if (n != missing)
				abort();
			free(bits);
			pc = true;
		} else if (!strcmp(name, "round") && !state) {
			continue;
		} else if (!strcmp(name, "disks") && !state) {
			if (migrate_disk_parse_list(&dt, p, len, e))
				return -1;
		} else if (!strcmp(name, "disk") && !state) {
			if (migrate_disk_apply(&dt, p, len, e))
				return -1;
		} else if (!strcmp(name, "state") && !state) {
			if (check_state(flags, ncpus, p, len, e))
				return -1;
			state = true;
		} else if (!strcmp(name, "end") && state) {
			return 0;
		} else {
			return error_set(e, EXIT_BADSTATE, "unexpected section \"%s\"", name);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct migrate_in in = { .fd = -1 };
	struct error e = { 0 };
	int fds[2], before;
	uint8_t flags, *stream;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (!mem.host && guest_mem_create(&mem, MEM, &e))
		abort();
	if (size < 1)
		return 0;
	flags = data[0];
	data++;
	size--;
	if (size > STREAM_MAX)
		size = STREAM_MAX;
	stream = malloc(size + 1);
	if (!stream)
		return 0;
	memcpy(stream, data, size);
	if (flags & 0x20)
		fix_checksums(stream, size);
	before = fuzz_count_fds();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		abort();
	if (size && write(fds[1], stream, size) != (ssize_t)size)
		abort();
	free(stream);
	close(fds[1]);   /* the source is gone after its last byte */
	in.fd = fds[0];
	if (read_stream(flags, &in, &e))
		refused(&e);
	close(in.fd);
	migrate_in_free(&in);
	if (fuzz_count_fds() != before)
		abort();
	return 0;
}
