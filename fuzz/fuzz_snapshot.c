/*
 * fuzz_snapshot.c - a damaged or hostile snapshot against what `shoal run
 * --restore` reads before it touches KVM (state/snapshot.c,
 * vmm/kvm_state.c, base/state.c's framing, the device models' restore).
 *
 * The input is
 *
 *   u8 flags | u16 m | m bytes of manifest.json | the rest: the state file
 *
 * The manifest goes through snapshot_parse_manifest (JSON, format, version,
 * the "config" object as vm_config_from_json reads it, vcpus and
 * memory_bytes against it) and, for a config without disks, the shape
 * check of its "disks" list (snap_disks_check; a disk's path would be
 * opened, so configs naming disks stop after the parse).
 *
 * The state goes to snapshot_state_restore, the function a restore calls,
 * with a VM of 1 to 4 vCPUs (flags bits 0-1) that has no KVM: its devices
 * are those the builder makes for a default configuration on a fake device
 * host (tests/fake_host.h), so a "devices" section reaches their restore
 * code; its "kvm" section is refused where KVM would be asked about the
 * host.  So every "kvm" section is also given to kvm_state_check, the
 * checks a restore makes before it applies anything, for a host described
 * by flags bits 2-3 (no XSAVE, the 4 KiB area, a larger XSAVE2 area; XCRs
 * or not) that lists the MSRs below.
 *
 * Checks, besides crashes, leaks and sanitizer reports: a refused manifest
 * or state gives a message and, for the manifest, EXIT_BADSTATE; a state
 * without KVM is never accepted whole.  Seeds (fuzz/corpus/fuzz_snapshot)
 * hold a manifest as the writer makes it and a state with a valid "kvm"
 * section for each host shape and the devices' own saved sections.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/state.h"
#include "devices/device.h"
#include "state/snapshot.h"
#include "state/snapshot_disk.h"
#include "vmm/config.h"
#include "vmm/devices.h"
#include "vmm/kvm_state.h"
#include "vmm/vm.h"
#include "fuzz_vm.h"

/* The MSRs the pretend host's KVM lists (a subset of what a real one does). */
static const uint32_t host_msrs[] = {
	0x10, 0x1b, 0x3a, 0x174, 0x175, 0x176, 0x1a0, 0x277, 0x6e0,
	0xc0000080, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,
	0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103, 0x4b564d00, 0x4b564d01,
};

static void check_error(int rc, const struct error *e)
{
	if (rc && !e->msg[0])
		abort();   /* a refusal says why */
}

static void fuzz_manifest(const char *text, size_t len)
{
	struct vm_config cfg;
	struct error e = { 0 };
	json_t *m;

	vm_config_init(&cfg);
	m = snapshot_parse_manifest("fuzz", text, len, &cfg, &e);
	if (!m) {
		check_error(-1, &e);
		if (e.status != EXIT_BADSTATE)
			abort();
	} else if (cfg.ndisks == 0) {
		memset(&e, 0, sizeof(e));
		check_error(snap_disks_check("fuzz", json_object_get(m, "disks"), &cfg, &e), &e);
	}
	json_decref(m);
	vm_config_free(&cfg);
}

static void fuzz_state(uint8_t flags, const uint8_t *p, size_t len)
{
	static const uint32_t xsave_sizes[] = { 0, 4096, 4096, 8192 };
	struct fake_host *h = fake_host_new(256ULL << 20);
	struct state_reader r, payload;
	struct vm_config cfg;
	struct error e = { 0 };
	int ncpus = 1 + (flags & 3);
	struct vm *vm;
	char name[64];
	uint16_t ver;

	vm_config_init(&cfg);
	if (!h || devices_create_all(&h->host, &cfg, &e))
		abort();
	vm_config_free(&cfg);
	vm = fuzz_fake_vm(h, ncpus);
	if (!snapshot_state_restore(vm, "fuzz/state", p, len, &e))
		abort();   /* it cannot get through the "kvm" section without KVM */
	check_error(-1, &e);
	fuzz_fake_vm_free(vm);
	fake_host_free(h);

	state_reader_init(&r, p, len);
	while (r.pos < r.len && !state_section_read(&r, name, &ver, &payload)) {
		if (strcmp(name, "kvm"))
			continue;
		memset(&e, 0, sizeof(e));
		check_error(kvm_state_check(ncpus, xsave_sizes[flags >> 2 & 3], flags & 0x10,
					    host_msrs, sizeof(host_msrs) / sizeof(host_msrs[0]),
					    payload.data, payload.len, &e), &e);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint16_t m;
	uint8_t flags;
	char *text;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (size < 3)
		return 0;
	flags = data[0];
	memcpy(&m, data + 1, 2);
	data += 3;
	size -= 3;
	if (m > size)
		m = (uint16_t)size;
	text = malloc(m + 1u);
	if (!text)
		return 0;
	memcpy(text, data, m);
	text[m] = 0;
	fuzz_manifest(text, m);
	free(text);
	fuzz_state(flags, data + m, size - m);
	return 0;
}
