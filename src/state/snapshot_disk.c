/*
 * snapshot_disk.c - the disk half of a snapshot (seed mechanism 4): the
 * disk of the snapshot instant is kept, the VM goes on writing a
 * copy-on-write overlay on it, and each restore writes an overlay of its
 * own, as QEMU's and Firecracker's external snapshots do.
 *
 * Taking a snapshot, for each writable disk, with the vCPUs parked and the
 * devices quiesced (virtio-blk has started nothing new and what was in
 * flight completed):
 *   1. create a qcow2 overlay next to the image in use, STEM-SNAP.qcow2,
 *      whose backing file is that image (by its absolute path) and which
 *      records the image's chain identity (docs/block.md);
 *   2. switch the device to it (vblk_push_overlay): the image is flushed,
 *      stays open under the overlay as its backing file, read-only from
 *      now on and locked as a backing file (write refused to others);
 *   3. record the image, now the snapshot's parent, in the manifest: its
 *      absolute path, format, virtual size, file size, inode, modification
 *      time and chain identity, and the overlay the VM writes from now on;
 *   4. point the VM's config at the overlay (a later snapshot stacks on it).
 * The parent is referenced in place, not copied: it is frozen at the
 * snapshot instant because nothing writes it any more (the VM's writes go
 * to the overlay, and the locks keep other writers off while the VM runs).
 * Read-only disks are recorded by size, inode and modification time.
 *
 * A jailed VMM sees no names (its root is an empty tmpfs), so shoald makes
 * the overlay file and sends it open with the request: step 1 then writes
 * the qcow2 header into that file from the disk's open image (size,
 * format, chain identity), step 2 opens the overlay from the file, and
 * step 3 reads the parent's identity from its open image; every file is
 * reached through a descriptor the VMM already holds.  One writable disk
 * per such snapshot (one file comes with a request).
 *
 * Restoring: every disk is checked before anything is made.  A parent
 * that changed since (another chain-identity generation or id, another
 * size, inode or modification time) is refused, naming it (EXIT_BADSTATE):
 * the memory of the snapshot would meet a disk of another instant.  Then
 * each writable disk gets a new qcow2 overlay on its parent, in the
 * overlay directory (--disk-overlay-dir, else next to the parent),
 * STEM-SNAP-rPID.qcow2, and the VM is built on it.  The snapshot and the
 * parent are never written, so one snapshot restores any number of times,
 * into VMs that each write their own overlay.
 *
 * A failure part way leaves the VM on the overlays already switched to
 * (their data is whole: overlay over parent) and removes the overlay of
 * the disk that failed; a restore that fails removes the overlays it made.
 *
 * The cloud-init seed (boot/cidata.c) is the one disk copied: its file is
 * removed as soon as the VM holds it open, so nothing could be referenced
 * in place.  It is small (an ISO of three text files), read-only to the
 * guest, and is copied from the device's open image into the snapshot
 * directory as cidata.img, checksummed like the memory and state files.
 */
#include "state/snapshot_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "base/log.h"
#include "block/blockdev.h"
#include "block/qcow2.h"
#include "boot/cidata.h"
#include "devices/device.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_pci.h"
#include "vmm/devices.h"
#include "vmm/vm.h"

struct snap_disks {
	json_t *list;                    /* the manifest's "disks" (a reference) */
	int seed;                        /* the seed disk's index, or -1 */
	int n;
	struct sd_disk {
		int index;
		char *parent;            /* absolute path of the image in use */
		char *overlay;           /* what the VM switches to */
		int fd;                  /* the overlay's file, given; -1: made here */
		bool switched;
	} d[VM_MAX_DISKS];
};

static json_int_t mtime_ns(const struct stat *st)
{
	return (json_int_t)((int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec);
}

/* "disk" for ".../disk.qcow2", into out. */
static void stem_of(const char *path, char *out, size_t len)
{
	const char *b = strrchr(path, '/');
	static const char *const exts[] = { ".qcow2", ".img", ".raw" };
	size_t n;

	b = b ? b + 1 : path;
	n = strlen(b);
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		size_t k = strlen(exts[i]);

		if (n > k && !strcmp(b + n - k, exts[i])) {
			n -= k;
			break;
		}
	}
	snprintf(out, len, "%.*s", (int)n, b);
}

/* The last component of a directory name, without trailing slashes. */
static void snap_name_of(const char *dir, char *out, size_t len)
{
	size_t n = strlen(dir);
	const char *b;

	while (n > 1 && dir[n - 1] == '/')
		n--;
	b = dir + n;
	while (b > dir && b[-1] != '/')
		b--;
	snprintf(out, len, "%.*s", (int)(dir + n - b), b);
}

/* DIR/STEM-SNAP.qcow2 for an image at absolute path `abs`. */
static char *overlay_name(const char *abs, const char *dir, const char *snap, const char *suffix)
{
	char stem[NAME_MAX + 1], *d = strdup(abs), *out = NULL;

	if (!d)
		return NULL;
	stem_of(abs, stem, sizeof(stem));
	if (asprintf(&out, "%s/%s-%s%s.qcow2", dir ? dir : dirname(d), stem, snap, suffix) < 0)
		out = NULL;
	free(d);
	return out;
}

char *snap_disk_overlay_path(const char *disk, const char *snap)
{
	return disk[0] == '/' ? overlay_name(disk, NULL, snap, "") : NULL;
}

static json_t *stat_entry(const char *path, const struct stat *st)
{
	return json_pack("{s:s, s:I, s:I, s:I}", "path", path, "size", (json_int_t)st->st_size,
			 "ino", (json_int_t)st->st_ino, "mtime_ns", mtime_ns(st));
}

/* Disk i is the cloud-init seed that `shoal run --cloud-init` attached:
 * the last disk, read-only, serial "cidata", in a VM with a seed. */
static bool is_seed(const struct vm_config *cfg, int i)
{
	const struct vm_disk *d = &cfg->disks[i];

	return cidata_wanted(&cfg->cloud_init) && i == cfg->ndisks - 1 && d->readonly &&
	       d->serial && !strcmp(d->serial, CIDATA_VOLUME_ID);
}


/* What disk i's file is: the device's open image when it has one (a
 * jailed VMM sees no names), else the name in the config. */
static int disk_stat(struct vm *vm, int i, struct stat *st)
{
	struct vblk *b = NULL;
	const struct blockdev *bd;

	if (vm_disk_device(vm, i, &b) && (bd = vblk_image(b)) && bd->fd >= 0)
		return fstat(bd->fd, st);
	return stat(vm->cfg.disks[i].path, st);
}

/* How many writable disks (the seed is read-only) the VM has. */
static int writable_disks(const struct vm_config *cfg)
{
	int n = 0;

	for (int i = 0; i < cfg->ndisks && i < VM_MAX_DISKS; i++)
		n += !cfg->disks[i].readonly;
	return n;
}

struct snap_disks *snap_disks_plan(struct vm *vm, const char *dir,
				   const struct snap_overlay_file *given, json_t **out,
				   struct error *e)
{
	const struct vm_config *cfg = &vm->cfg;
	struct snap_disks *p;
	char snap[NAME_MAX + 1];

	*out = NULL;
	if (given && (given->fd < 0 || !given->path || given->path[0] != '/' ||
		      writable_disks(cfg) != 1)) {
		error_set(e, EXIT_USAGE, "snapshot: an overlay file was given (%s), but %s",
			  given->path ? given->path : "no path",
			  writable_disks(cfg) != 1 ? "it serves a VM with exactly one writable disk" :
			  "its path must be absolute and its file open");
		return NULL;
	}
	if (!(p = calloc(1, sizeof(*p)))) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	p->list = json_array();
	p->seed = -1;
	snap_name_of(dir, snap, sizeof(snap));
	for (int i = 0; i < cfg->ndisks && i < VM_MAX_DISKS; i++) {
		const struct vm_disk *d = &cfg->disks[i];
		struct sd_disk *sd;
		struct stat st;
		char *abs;

		if (is_seed(cfg, i)) {          /* copied when the snapshot is written */
			p->seed = i;
			json_array_append_new(p->list, json_pack("{s:s, s:b, s:b}", "path",
								 SNAP_SEED_FILE, "seed", 1,
								 "writable", 0));
			continue;
		}
		if (disk_stat(vm, i, &st) < 0) {
			error_set(e, EXIT_HOST, "%s: %s", d->path, strerror(errno));
			goto fail;
		}
		if (d->readonly) {
			json_array_append_new(p->list, stat_entry(d->path, &st));
			continue;
		}
		sd = &p->d[p->n];
		sd->index = i;
		sd->fd = -1;
		/* given a file, the VMM may see no names: the config's is the
		 * name (shoald's specs give absolute paths) */
		abs = given && d->path[0] == '/' ? strdup(d->path) : realpath(d->path, NULL);
		sd->parent = abs;
		sd->overlay = !abs ? NULL : given ? strdup(given->path) :
			      overlay_name(abs, NULL, snap, "");
		if (!sd->overlay) {
			error_set(e, EXIT_HOST, "%s: %s", d->path, abs ? "out of memory" : strerror(errno));
			goto fail;
		}
		p->n++;
		if (given) {
			sd->fd = given->fd;
		} else if (access(sd->overlay, F_OK) == 0) {
			error_set(e, EXIT_USAGE, "%s: already exists (disk %d would switch to it for "
				  "snapshot %s; name the snapshot differently)", sd->overlay, i, snap);
			goto fail;
		}
		for (int k = 0; k < p->n - 1; k++)
			if (!strcmp(p->d[k].overlay, sd->overlay)) {
				error_set(e, EXIT_USAGE, "%s: disks %d and %d would both switch to "
					  "this overlay (images of one name in one directory)",
					  sd->overlay, p->d[k].index, i);
				goto fail;
			}
		/* filled in when the disk is switched, during the pause */
		json_array_append_new(p->list, json_pack("{s:s, s:b}", "path", abs, "writable", 1));
	}
	*out = json_incref(p->list);
	return p;
fail:
	snap_disks_free(p);
	return NULL;
}


/* Fill a parent's manifest object from its open image bd (the VM's, now
 * under the overlay: nothing writes it) as it is now. */
static int record_parent(json_t *o, const struct sd_disk *sd, const struct blockdev *bd,
			 struct error *e)
{
	struct stat st;
	char id[37];
	uint64_t gen;
	bool current;

	if (!bd || fstat(bd->fd, &st) < 0)
		return error_set(e, EXIT_HOST, "%s: %s", sd->parent,
				 bd ? strerror(errno) : "not open under the overlay");
	json_object_set_new(o, "format", json_string(blockdev_format_name(bd->format)));
	json_object_set_new(o, "virtual_size", json_integer((json_int_t)bd->size));
	json_object_set_new(o, "size", json_integer((json_int_t)st.st_size));
	json_object_set_new(o, "ino", json_integer((json_int_t)st.st_ino));
	json_object_set_new(o, "mtime_ns", json_integer(mtime_ns(&st)));
	if (!blockdev_chain_id(bd, id, &gen, &current) && current)
		json_object_set_new(o, "chain_id", json_pack("{s:s, s:I}", "id", id,
							      "generation", (json_int_t)gen));
	json_object_set_new(o, "overlay", json_string(sd->overlay));
	return 0;
}

/* A new, empty qcow2 overlay at `path` (which must not exist) on `parent`. */
static int create_overlay(const char *path, const char *parent, struct error *e)
{
	struct qcow2_create_opts o = { .backing_file = parent, .chain_id = true };
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0)
		return error_set(e, errno == EEXIST ? EXIT_USAGE : EXIT_HOST, "%s: %s", path,
				 strerror(errno));
	close(fd);
	if (qcow2_create(path, &o, e)) {
		unlink(path);
		return -1;
	}
	return 0;
}

int snap_disks_switch(struct snap_disks *p, struct vm *vm, struct error *e)
{
	for (int k = 0; k < p->n; k++) {
		struct sd_disk *sd = &p->d[k];
		struct vm_disk *disk = &vm->cfg.disks[sd->index];
		struct vblk *b = NULL;
		struct device *d = vm_disk_device(vm, sd->index, &b);
		char *path;
		int rc;

		if (!d)
			return error_set(e, EXIT_HOST, "disk %d: no virtio-blk device", sd->index);
		if (sd->fd >= 0) {      /* shoald's file: its header made from the open image */
			struct qcow2_create_opts o = { .backing_file = sd->parent, .chain_id = true };

			if (qcow2_create_fd(sd->fd, sd->overlay, &o, vblk_image(b), e))
				return -1;
		} else if (create_overlay(sd->overlay, sd->parent, e)) {
			return -1;
		}
		pthread_mutex_lock(&d->lock);
		rc = vblk_push_overlay(b, sd->overlay, sd->fd, disk->direct, disk->cache_bytes, e);
		pthread_mutex_unlock(&d->lock);
		if (rc) {
			if (sd->fd < 0)         /* (shoald removes its own) */
				unlink(sd->overlay);
			return -1;
		}
		sd->switched = true;
		path = strdup(sd->overlay);
		if (path) {
			free(disk->path);
			disk->path = path;
		}
		if (record_parent(json_array_get(p->list, (size_t)sd->index), sd,
				  vblk_image(b)->backing, e))
			return -1;
	}
	return 0;
}

/* A seed is an ISO of a few text files: a bound on what is read into
 * memory to copy it. */
#define SEED_MAX (64u << 20)

int snap_disks_save_seed(struct snap_disks *p, struct vm *vm, int dirfd, uint64_t *size,
			 uint64_t *hash, struct error *e)
{
	struct vblk *b = NULL;
	struct stat st;
	uint8_t *buf;
	int in, out, rc;
	ssize_t got = 0;

	if (p->seed < 0)
		return 0;
	in = vm_disk_device(vm, p->seed, &b) ? vblk_raw_readonly_fd(b) : -1;
	if (in < 0)
		return error_set(e, EXIT_HOST, "disk %d (the cloud-init seed): not a read-only raw "
				 "image that can be copied", p->seed);
	if (fstat(in, &st) < 0)
		return error_set(e, EXIT_HOST, "the cloud-init seed: %s", strerror(errno));
	if ((uint64_t)st.st_size > SEED_MAX)
		return error_set(e, EXIT_HOST, "the cloud-init seed: %lld bytes, more than the %u a "
				 "snapshot copies", (long long)st.st_size, SEED_MAX);
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf)
		return error_set(e, EXIT_HOST, "out of memory");
	while (got < st.st_size) {
		ssize_t r = pread(in, buf + got, (size_t)(st.st_size - got), got);

		if (r <= 0) {
			free(buf);
			return error_set(e, EXIT_HOST, "the cloud-init seed: %s",
					 r < 0 ? strerror(errno) : "shorter than its size");
		}
		got += r;
	}
	out = openat(dirfd, SNAP_SEED_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	rc = out < 0 ? -errno : write_all(out, buf, (size_t)got);
	if (!rc && fsync(out) < 0)
		rc = -errno;
	if (out >= 0)
		close(out);
	*size = (uint64_t)got;
	*hash = XXH3_64bits(buf, (size_t)got);
	free(buf);
	if (rc)
		return error_set(e, EXIT_HOST, "%s: %s", SNAP_SEED_FILE, strerror(-rc));
	return 1;
}

void snap_disks_free(struct snap_disks *p)
{
	if (!p)
		return;
	for (int k = 0; k < p->n; k++) {
		free(p->d[k].parent);
		free(p->d[k].overlay);
	}
	json_decref(p->list);
	free(p);
}

/* ---- restore ---- */

/* The parent of a writable disk must be the file of the snapshot instant. */
static int check_parent(const char *path, json_t *o, struct error *e)
{
	struct blockdev_opts bo = { .readonly = true, .no_aio = true, .no_backing = true };
	json_t *cid = json_object_get(o, "chain_id");
	struct blockdev *bd;
	struct stat st;

	if (json_is_object(cid)) {
		const char *want = json_string_value(json_object_get(cid, "id"));
		json_t *jg = json_object_get(cid, "generation");
		char id[37];
		uint64_t gen;
		bool current;
		int bad;

		if (!want || !json_is_integer(jg))
			return error_set(e, EXIT_BADSTATE, "manifest.json: the chain identity of "
					 "%s has no id or generation", path);
		if (blockdev_open(&bd, path, &bo, e)) {
			e->status = e->status == EXIT_NOINPUT ? EXIT_BADSTATE : e->status;
			return error_prefix(e, "a parent disk of this snapshot");
		}
		bad = blockdev_chain_id(bd, id, &gen, &current);
		blockdev_close(bd);
		if (bad || strcmp(id, want))
			return error_set(e, EXIT_BADSTATE, "%s: not the parent disk of this snapshot "
					 "(chain identity %s, the snapshot recorded %s)", path,
					 bad ? "none" : id, want);
		if (gen != (uint64_t)json_integer_value(jg) || !current)
			return error_set(e, EXIT_BADSTATE, "%s: changed since the snapshot was taken "
					 "(chain identity generation %llu%s, the snapshot recorded %lld); "
					 "the snapshot's disk is gone", path, (unsigned long long)gen,
					 current ? "" : " and written by another program",
					 (long long)json_integer_value(jg));
	}
	if (stat(path, &st) < 0)
		return error_set(e, EXIT_BADSTATE, "%s: %s (a parent disk of this snapshot)", path,
				 strerror(errno));
	if ((json_int_t)st.st_size != json_integer_value(json_object_get(o, "size")) ||
	    (json_int_t)st.st_ino != json_integer_value(json_object_get(o, "ino")) ||
	    mtime_ns(&st) != json_integer_value(json_object_get(o, "mtime_ns")))
		return error_set(e, EXIT_BADSTATE, "%s: changed or replaced since the snapshot was "
				 "taken (size, inode or modification time differ); the snapshot's "
				 "disk is gone", path);
	return 0;
}

/* A read-only disk must be the same file, unchanged. */
static int check_readonly(const char *path, json_t *o, struct error *e)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s (a disk of this snapshot)", path,
				 strerror(errno));
	if ((json_int_t)st.st_size != json_integer_value(json_object_get(o, "size")) ||
	    (json_int_t)st.st_ino != json_integer_value(json_object_get(o, "ino")) ||
	    mtime_ns(&st) != json_integer_value(json_object_get(o, "mtime_ns")))
		return error_set(e, EXIT_BADSTATE, "%s: changed or replaced since the snapshot "
				 "was taken (size, inode or modification time differ)", path);
	return 0;
}

void snap_disks_created_free(char **created, bool unlink_them)
{
	if (!created)
		return;
	for (char **c = created; *c; c++) {
		if (unlink_them)
			unlink(*c);
		free(*c);
	}
	free(created);
}

int snap_disks_check(const char *dir, json_t *disks, const struct vm_config *cfg,
		     struct error *e)
{
	size_t i;
	json_t *o;

	if (!json_is_array(disks) || json_array_size(disks) != (size_t)cfg->ndisks)
		return error_set(e, EXIT_BADSTATE, "%s/manifest.json: \"disks\" is not a list of "
				 "the config's %d disks", dir, cfg->ndisks);
	json_array_foreach(disks, i, o) {
		const char *path = json_string_value(json_object_get(o, "path"));
		bool writable = json_is_true(json_object_get(o, "writable"));

		if (!path || writable == cfg->disks[i].readonly ||
		    (writable && !json_string_value(json_object_get(o, "format"))))
			return error_set(e, EXIT_BADSTATE, "%s/manifest.json: disk %zu disagrees "
					 "with the config (no path, or not as writable)", dir, i);
		if (json_is_true(json_object_get(o, "seed"))) {   /* its checksum: the caller's */
			if (strcmp(path, SNAP_SEED_FILE) || !is_seed(cfg, (int)i))
				return error_set(e, EXIT_BADSTATE, "%s/manifest.json: disk %zu: a "
						 "seed disk is the VM's last, read-only, serial "
						 "\"%s\", in %s", dir, i, CIDATA_VOLUME_ID,
						 SNAP_SEED_FILE);
			continue;
		}
		if (writable ? check_parent(path, o, e) : check_readonly(path, o, e))
			return -1;
	}
	return 0;
}

int snap_disks_restore(const char *dir, json_t *disks, struct vm_config *cfg,
		       const char *overlay_dir, char ***created, struct error *e)
{
	char snap[NAME_MAX + 1], **made;
	size_t i, nmade = 0;
	json_t *o;

	*created = NULL;
	made = calloc(json_array_size(disks) + 1, sizeof(*made));
	if (!made)
		return error_set(e, EXIT_HOST, "out of memory");
	snap_name_of(dir, snap, sizeof(snap));
	json_array_foreach(disks, i, o) {
		const char *path = json_string_value(json_object_get(o, "path"));
		char suffix[32], *ov = NULL, *dup = NULL;

		if (json_is_true(json_object_get(o, "seed")) && i < (size_t)cfg->ndisks) {
			if (asprintf(&dup, "%s/%s", dir, SNAP_SEED_FILE) < 0) {
				snap_disks_created_free(made, true);
				return error_set(e, EXIT_HOST, "out of memory");
			}
			free(cfg->disks[i].path);
			cfg->disks[i].path = dup;
			continue;
		}
		if (!json_is_true(json_object_get(o, "writable")) || i >= (size_t)cfg->ndisks)
			continue;
		for (int n = 1; n < 1000; n++) {    /* a name nobody has taken */
			if (n == 1)
				snprintf(suffix, sizeof(suffix), "-r%d", (int)getpid());
			else
				snprintf(suffix, sizeof(suffix), "-r%d-%d", (int)getpid(), n);
			free(ov);
			ov = overlay_name(path, overlay_dir, snap, suffix);
			if (!ov || access(ov, F_OK) < 0)
				break;
		}
		if (!ov || !(dup = strdup(ov))) {
			free(ov);
			snap_disks_created_free(made, true);
			return error_set(e, EXIT_HOST, "out of memory");
		}
		if (create_overlay(ov, path, e)) {
			error_prefix(e, "disk %zu: cannot make the overlay the restored VM writes", i);
			e->status = EXIT_HOST;
			free(ov);
			free(dup);
			snap_disks_created_free(made, true);
			return -1;
		}
		made[nmade++] = ov;
		free(cfg->disks[i].path);
		cfg->disks[i].path = dup;
		log_info("disk %zu: writes to %s (over the snapshot's %s)", i, ov, path);
	}
	*created = made;
	return 0;
}
