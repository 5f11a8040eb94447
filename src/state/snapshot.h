/*
 * snapshot.h - a VM's full state in a directory, and a VM started from one.
 *
 * The format and its guarantees are described in snapshot.c and, for
 * users, in docs/snapshots.md.
 */
#ifndef SHOAL_STATE_SNAPSHOT_H
#define SHOAL_STATE_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "vmm/config.h"

struct vm;

#define SNAPSHOT_FORMAT   "shoal-snapshot"
#define SNAPSHOT_VERSION  1

struct snapshot_stats {
	uint64_t pause_ns;          /* vCPUs out of the guest, as the guest sees it */
	uint64_t total_ns;          /* the whole command */
	uint64_t memory_bytes;      /* guest RAM */
	uint64_t memory_data_bytes; /* of it written (not all zero) */
	uint64_t state_bytes;       /* vCPU, KVM and device state */
	uint64_t waits;             /* live: guest writes that waited for their
	                             * chunk to be saved first */
	uint64_t memory_file_bytes; /* compressed: the memory file's size */
};

/* Take a snapshot of `vm` into `dir`, which must not exist (its parent
 * must).  The VM is paused for the whole snapshot and resumed afterwards
 * if it was running.  The snapshot is written under a temporary name and
 * renamed into place last, so a crash leaves either the complete
 * directory or none.  0, or -1 with `e` (nothing left behind). */
struct snap_overlay_file;               /* snapshot_disk.h; NULL: none */
/* `compress`: the memory goes zstd-compressed into memory.zst (smaller to
 * keep and copy; a restore decompresses it, and a --clone is refused, as
 * it cannot be mapped). */
int snapshot_create(struct vm *vm, const char *dir, const struct snap_overlay_file *given,
		    bool compress, struct snapshot_stats *st, struct error *e);

/* What `shoal run --restore` may change of a snapshot's settings: where
 * the console goes and the timeout; and whether the VM is a clone, whose
 * memory maps the snapshot's memory file copy-on-write (shared with every
 * other clone through the page cache) instead of reading it into a memfd.
 * A clone's start does not read the whole memory file, so its checksum is
 * not checked then (a full restore checks it).  Everything else is the
 * snapshot's. */
struct snapshot_overrides {
	bool console_set;
	enum console_kind console;
	const char *console_path;
	unsigned timeout_s;
	const char *disk_overlay_dir; /* where a writable disk's new overlay
	                               * goes (NULL: next to its parent) */
	bool clone;          /* memory copy-on-write from the snapshot's file,
	                        and a new identity (state/snapshot_identity.h) */
	const char *const *macs;  /* new MACs for cards 0..nmacs-1, or NULL */
	int nmacs;
	uint32_t cid;        /* a new vsock CID, or 0 (a clone: a random one) */
	const char *const *taps;  /* new TAP names for cards 0..ntaps-1, or NULL */
	int ntaps;
	const char *vsock_socket; /* the vsock device's new socket path, or NULL */
};

/* Check `dir` (manifest, checksums, sizes, the CPU) and build a VM from it,
 * ready for vm_run.  Every file is untrusted: a damaged or foreign
 * snapshot is refused with EXIT_BADSTATE and a message that names the
 * file and the reason; nothing in `dir` is changed.  NULL on failure. */
struct vm *snapshot_restore(const char *dir, const struct snapshot_overrides *ov,
			    struct error *e);

/* The VM's settings as `dir`'s manifest records them (parsed and checked
 * as snapshot_parse_manifest does, nothing else read), into `cfg`
 * (vm_config_init'ed by the caller, who frees it).  What a jailed restore
 * needs to know before the VM exists: its network cards and its vsock
 * socket (run.c).  0, or -1 with `e` (EXIT_BADSTATE or the read's). */
int snapshot_read_config(const char *dir, struct vm_config *cfg, struct error *e);

/* The manifest's text (`len` bytes of `text`, read from `dir`/manifest.json):
 * a JSON object of this format and version whose "config" is a valid
 * configuration, which fills `cfg`, and whose "vcpus" and "memory_bytes"
 * agree with it.  The manifest, or NULL with `e` (EXIT_BADSTATE) naming
 * the file and the reason.  snapshot_restore's first step; exposed for
 * the fuzzer (fuzz/fuzz_snapshot.c). */
json_t *snapshot_parse_manifest(const char *dir, const char *text, size_t len,
				struct vm_config *cfg, struct error *e);

/* The state sections of a paused, quiesced VM (base/state.h framing):
 * "kvm", every vCPU's and the VM's KVM state (vmm/kvm_state.c), and
 * "devices", one section per device.  Appended to `w`; 0, or -1 with `e`.
 * Migration sends the same sections (state/migrate.c). */
struct state_writer;
int snapshot_state_save(struct vm *vm, struct state_writer *w, struct error *e);

/* Restore those sections into a VM built for them (vm_create_restored)
 * and not yet run; `what` names their source in errors ("DIR/state").
 * Nothing in them is trusted (EXIT_BADSTATE).  0, or -1 with `e`. */
int snapshot_state_restore(struct vm *vm, const char *what, const void *buf, size_t len,
			   struct error *e);
/* The same into a VM that has never run and is destroyed should this fail
 * (a migration's destination): KVM's state is not read first to be put
 * back after a refusal part-way (kvm_state_restore_fresh).  `saved_rt`,
 * when not 0, is the source host's CLOCK_REALTIME (ns) at the save: the
 * guest's TSC and kvmclock then go on by the time elapsed since. */
int snapshot_state_restore_fresh(struct vm *vm, const char *what, const void *buf, size_t len,
				 uint64_t saved_rt, struct error *e);

/* Add the "snapshot" and "snapshot-status" commands to the VM's control
 * socket: {"cmd": "snapshot", "dir": PATH[, "live": true]}
 * (docs/vmm-control.md).  A live snapshot replies once the VM runs again;
 * its memory is written afterwards by a thread of its own. */
void snapshot_add_command(struct vm *vm);

/* Wait for a live snapshot still being written (before vm_destroy: it
 * reads the guest's memory), and free what snapshot_add_command made. */
void snapshot_wait(struct vm *vm);

/* The CPU a guest saw (mechanism 27): the feature words of vCPU 0's
 * CPUID as a JSON object, which a snapshot's manifest and a migration's
 * hello carry; NULL with `e`.  snapshot_check_cpu refuses (EXIT_RESOURCE,
 * each missing bit named after `where`) when the guest saw a feature this
 * host's vCPU, with the VM's template, lacks. */
json_t *snapshot_cpu_json(struct vm *vm, struct error *e);
int snapshot_check_cpu(struct vm *vm, const char *where, json_t *saved, struct error *e);

#endif
