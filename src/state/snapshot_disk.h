/*
 * snapshot_disk.h - the disk half of a snapshot: a copy-on-write overlay
 * switched in during the pause, the parent image kept in place as part of
 * the snapshot, and a new overlay on it for each restore (see
 * snapshot_disk.c and docs/snapshots.md).
 */
#ifndef SHOAL_STATE_SNAPSHOT_DISK_H
#define SHOAL_STATE_SNAPSHOT_DISK_H

#include <jansson.h>

#include "base/error.h"
#include "vmm/config.h"

struct vm;
struct snap_disks;

/* Before the pause: the manifest's "disks" list (*out: one object per
 * disk, in the VM's order; a read-only one recorded whole, a writable one
 * filled in by snap_disks_switch) and the overlay each writable disk will
 * switch to, next to it: STEM-SNAPNAME.qcow2, where STEM is the image's
 * name without .qcow2/.img/.raw and SNAPNAME the name of the snapshot
 * directory `dir`.  An overlay name that is taken refuses the snapshot.
 * `given` (NULL: none) is the overlay file shoald made for a jailed VMM,
 * which cannot create files beside its disk or see their names: the VM's
 * one writable disk switches to it (a VM with another number of writable
 * disks is refused), and names are taken from the config, files from the
 * devices' open images.  NULL with `e`. */
/* The overlay a snapshot named `snap` switches the disk at absolute path
 * `disk` to: DIR/STEM-SNAP.qcow2 beside it (malloc'd; NULL for a relative
 * path or out of memory).  shoald makes it for a jailed VMM. */
char *snap_disk_overlay_path(const char *disk, const char *snap);

struct snap_overlay_file {
	int fd;                 /* open for writing, empty; not taken */
	const char *path;       /* its absolute name on the host */
};
struct snap_disks *snap_disks_plan(struct vm *vm, const char *dir,
				   const struct snap_overlay_file *given, json_t **out,
				   struct error *e);

/* With the VM paused and its devices quiesced: for each writable disk,
 * create its overlay (backing file: the image in use), switch the
 * virtio-blk device to it (the image is flushed and stays open under it,
 * read-only), record the image (now the snapshot's parent: frozen) in its
 * manifest object, and point the VM's config at the overlay.  0, or -1
 * with `e`; a disk switched before the failure stays switched (its data
 * is whole: the overlay over its parent). */
int snap_disks_switch(struct snap_disks *p, struct vm *vm, struct error *e);

void snap_disks_free(struct snap_disks *p);

/* The cloud-init seed disk (`shoal run --cloud-init`: the last disk, read
 * only, serial "cidata") is a temporary file that is gone once the VM
 * holds it open, so a snapshot keeps a copy: SNAP_SEED_FILE in the
 * snapshot directory (`dirfd`), read from the device's open image, with
 * its manifest entry {"path": SNAP_SEED_FILE, "seed": true}.  The copy's
 * size and XXH3 go to *size and *hash for the manifest's "files" (which
 * a restore checks: the copy travels with the snapshot, so its inode and
 * time are not).  1 when a seed was copied, 0 when the VM has none, -1
 * with `e`.  A restore points the disk at DIR/SNAP_SEED_FILE. */
#define SNAP_SEED_FILE "cidata.img"
int snap_disks_save_seed(struct snap_disks *p, struct vm *vm, int dirfd, uint64_t *size,
			 uint64_t *hash, struct error *e);

/* Restore, first: check every disk of the manifest `disks` against the
 * config `cfg` and the files: a read-only disk unchanged (size, inode,
 * modification time); a writable disk's parent unchanged (those, and its
 * chain identity when it has one); the seed's copy is checked by the
 * caller, against "files".  A changed file is refused with
 * EXIT_BADSTATE, naming it.  0, or -1 with `e`. */
int snap_disks_check(const char *dir, json_t *disks, const struct vm_config *cfg,
		     struct error *e);

/* Restore, then: a new qcow2 overlay on each writable disk's parent, in
 * `overlay_dir` (NULL: next to the parent), STEM-SNAP-rPID.qcow2, and
 * cfg's disk pointed at it; the seed disk pointed at DIR/SNAP_SEED_FILE.  The snapshot and the parents are never
 * written.  `*created`: a NULL-terminated list of the overlays made, for
 * snap_disks_created_free (which deletes them when asked: the restore
 * failed).  0, or -1 with `e` and nothing left behind. */
int snap_disks_restore(const char *dir, json_t *disks, struct vm_config *cfg,
		       const char *overlay_dir, char ***created, struct error *e);
void snap_disks_created_free(char **created, bool unlink_them);

#endif
