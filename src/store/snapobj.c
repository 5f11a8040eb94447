/*
 * snapobj.c - snapshots as store objects: `shoal store import-snapshot`,
 * `export-snapshot`, and what ls, rm, gc, verify, serve and pull need of
 * them (docs/store.md, "Snapshots in the store").
 *
 * A snapshot object is a directory snapshots/NAME of the store:
 *
 *   snapshot.json   {"format": "shoal-store-snapshot", "version": 1,
 *                   "name", "added", "files": [{name, size}], "disks":
 *                   [{index, part | image, format, virtual_size[,
 *                   chain_id, generation]}]}
 *   PART.mf         one manifest per part, in the store's manifest format
 *                   (store.c): the ordered chunks of a file of the snapshot
 *                   directory (PART is its name: manifest.json, state,
 *                   memory, memory.zst, cidata.img) or of a disk
 *                   ("disk-N", the disk as the guest sees it)
 *
 * So a snapshot's memory is chunked and deduplicated like an image: the
 * snapshots of a clone family share most of their memory's chunks, and a
 * disk that has the chunks of a stored image costs only its own.  A
 * writable disk whose parent carries a chain identity (id and generation)
 * that an image in the store has is not read at all: the object refers to
 * that image ("image": NAME), and `rm` of the image is refused while a
 * snapshot refers to it.
 *
 * Invariants.
 *   - One namespace: a snapshot object and an image never share a name, so
 *     rm, grants and pull name either.
 *   - All or nothing: import builds snapshots/.NAME.tmp-PID and renames it
 *     to snapshots/NAME last; rm renames to .NAME.rm-PID first.  A writer's
 *     open (store.c) removes such leftovers of a killed writer; the chunks
 *     they added are unreferenced until gc.
 *   - Every part's chunks are read back checked against their SHA-256, as
 *     every store read is; a bad chunk names the segment, the chunk and
 *     "snapshot NAME/PART" among what it breaks.
 *   - Import reads the disks a snapshot's manifest names and refuses one
 *     that changed since the snapshot (size, inode or modification time),
 *     naming it: the object would pair the memory with another disk.
 *   - Export writes OUTDIR.partial-PID and renames it to OUTDIR last; the
 *     files come back byte for byte, disks as raw files, and manifest.json
 *     is rewritten only where it names the disks (path, format, size,
 *     inode, time; a raw disk has no chain identity), so `shoal run
 *     --restore OUTDIR` checks them as it checks any snapshot's disks.
 *   - Files named disk-* in a snapshot directory are not parts: they are
 *     an export's disks (imported as the disks manifest.json names) and
 *     the overlays restores made beside them, so an export imports again.
 *   - snapshot.json is parsed strictly: a part name is checked as an image
 *     name before it becomes a path, so an object cannot name a file
 *     outside its directory.
 */
#include "store/snapobj.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "store/chain.h"

#define SNAP_JSON "snapshot.json"
#define SNAP_JSON_MAX (1u << 20)

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* Make a snapshot object written in `tpath` (its parts' manifests there)
 * the store's snapshot `name`: its snapshot.json (`obj`) written and
 * synced, then the directory renamed into place, the last step, and the
 * rename synced. */
static int snap_commit(struct store *s, json_t *obj, const char *tpath, const char *name,
		       struct error *e)
{
	char path[PATH_MAX + 32], fin[PATH_MAX];

	snprintf(path, sizeof(path), "%s/" SNAP_JSON, tpath);
	if (!obj || json_dump_file(obj, path, JSON_INDENT(1) | JSON_SORT_KEYS) || fsync_path(path) ||
	    fsync_path(tpath))
		return error_set(e, EXIT_HOST, "%s: cannot write", path);
	snprintf(fin, sizeof(fin), "%s/snapshots/%s", store_dir(s), name);
	if (rename(tpath, fin))
		return error_set(e, EXIT_HOST, "%s: %s", fin, strerror(errno));
	snprintf(path, sizeof(path), "%s/snapshots", store_dir(s));
	fsync_path(path);
	return 0;
}

bool store_snap_exists(struct store *s, const char *name)
{
	char path[PATH_MAX];

	if (store_name_check(name, NULL))
		return false;
	snprintf(path, sizeof(path), "%s/snapshots/%s", store_dir(s), name);
	return !access(path, F_OK);
}

/* snapshots/NAME/snapshot.json, checked. */
static json_t *load_obj(struct store *s, const char *name, struct error *e)
{
	char path[PATH_MAX];
	json_error_t je;
	json_t *j, *files, *disks, *o;
	size_t i;

	if (store_name_check(name, e))
		return NULL;
	snprintf(path, sizeof(path), "%s/snapshots/%s/" SNAP_JSON, store_dir(s), name);
	if (access(path, F_OK)) {
		error_set(e, EXIT_NOINPUT, "%s: no snapshot named '%s' in the store", store_dir(s), name);
		return NULL;
	}
	j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		error_set(e, EXIT_BADSTATE, "%s: damaged (%s)", path, je.text);
		return NULL;
	}
	files = json_object_get(j, "files");
	disks = json_object_get(j, "disks");
	if (!json_is_string(json_object_get(j, "format")) ||
	    strcmp(json_string_value(json_object_get(j, "format")), "shoal-store-snapshot") ||
	    !json_is_array(files) || !json_is_array(disks))
		goto bad;
	json_array_foreach(files, i, o)
		if (!json_is_string(json_object_get(o, "name")) ||
		    store_name_check(json_string_value(json_object_get(o, "name")), NULL))
			goto bad;
	json_array_foreach(disks, i, o) {
		const char *part = json_string_value(json_object_get(o, "part"));
		const char *img = json_string_value(json_object_get(o, "image"));

		json_t *par = json_object_get(o, "parent");

		if (!json_is_integer(json_object_get(o, "index")) || !!part == !!img ||
		    store_name_check(part ? part : img, NULL))
			goto bad;
		if (par && (!part || !json_is_string(json_object_get(par, "image")) ||
			    store_name_check(json_string_value(json_object_get(par, "image")), NULL) ||
			    !json_is_string(json_object_get(par, "chain_id")) ||
			    strlen(json_string_value(json_object_get(par, "chain_id"))) != 36 ||
			    !json_is_integer(json_object_get(par, "generation"))))
			goto bad;
	}
	return j;
bad:
	json_decref(j);
	error_set(e, EXIT_BADSTATE, "%s: damaged (not a snapshot object)", path);
	return NULL;
}

/* ---- import ---- */

static void add_stats(struct store_snap_stats *st, const struct store_add_stats *a)
{
	st->raw_bytes += a->image_bytes;
	st->chunks += a->chunks;
	st->zero_chunks += a->zero_chunks;
	st->new_chunks += a->new_chunks;
	st->new_bytes += a->new_bytes;
	st->stored_bytes += a->stored_bytes;
}

static int store_part(struct store *s, const char *tmp, const char *part, const char *path,
		      enum blockdev_format fmt, struct store_snap_stats *st, store_progress_fn progress,
		      void *opaque, struct blockdev **keep, struct error *e)
{
	struct blockdev_opts bo = { .format = fmt, .readonly = true, .no_aio = true,
				    .caller_reports = true };
	struct store_add_stats a;
	struct blockdev *bd;
	char rel[PATH_MAX];
	int rc;

	if (blockdev_open(&bd, path, &bo, e))
		return -1;
	snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", tmp, part);
	rc = store_add_at(s, bd, rel, &a, progress, opaque, e);
	if (!rc)
		add_stats(st, &a);
	if (keep && !rc)
		*keep = bd;
	else
		blockdev_close(bd);
	return rc;
}

static json_int_t mtime_ns(const struct stat *st)
{
	return (json_int_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int import_disk(struct store *s, const char *tmp, size_t i, json_t *d, json_t *out,
		       struct store_snap_stats *st, store_progress_fn progress, void *opaque,
		       struct error *e)
{
	const char *path = json_string_value(json_object_get(d, "path"));
	json_t *cid = json_object_get(d, "chain_id");
	struct blockdev *bd = NULL;
	char part[32], img[65];
	struct stat sb;
	json_t *o;

	if (!path)
		return error_set(e, EXIT_BADSTATE, "manifest.json: disk %zu has no path", i);
	if (stat(path, &sb))
		return error_set(e, EXIT_NOINPUT, "%s: %s (disk %zu of the snapshot)", path, strerror(errno), i);
	if ((json_int_t)sb.st_size != json_integer_value(json_object_get(d, "size")) ||
	    (json_int_t)sb.st_ino != json_integer_value(json_object_get(d, "ino")) ||
	    mtime_ns(&sb) != json_integer_value(json_object_get(d, "mtime_ns")))
		return error_set(e, EXIT_BADSTATE, "%s: changed or replaced since the snapshot was taken "
				 "(size, inode or modification time differ): not the snapshot's disk", path);
	o = json_pack("{s:I}", "index", (json_int_t)i);
	json_array_append_new(out, o);
	if (json_is_object(cid) && json_is_string(json_object_get(cid, "id")) &&
	    !store_find_identity(s, json_string_value(json_object_get(cid, "id")),
				 (uint64_t)json_integer_value(json_object_get(cid, "generation")), img)) {
		json_object_set_new(o, "image", json_string(img));
		json_object_set(o, "chain_id", cid);
		st->disks_by_ref++;
		st->disks++;
		return 0;
	}
	snprintf(part, sizeof(part), "disk-%zu", i);
	if (store_part(s, tmp, part, path, BD_FMT_AUTO, st, progress, opaque, &bd, e))
		return error_prefix(e, "disk %zu", i);
	json_object_set_new(o, "part", json_string(part));
	json_object_set_new(o, "format", json_string(blockdev_format_name(bd->format)));
	json_object_set_new(o, "virtual_size", json_integer((json_int_t)bd->size));
	if (json_is_object(cid))
		json_object_set(o, "chain_id", cid);
	{	/* its backing file an image of the store: the disk's chain is kept
		 * (the part is stored as the guest sees it; export --chain writes it
		 * as an overlay over that image) */
		char pid[37];
		uint64_t pgen;
		bool cur;

		if (bd->backing && bd->backing->format == BD_FMT_QCOW2 &&
		    !blockdev_chain_id(bd->backing, pid, &pgen, &cur) && cur && !store_find_identity(s, pid, pgen, img))
			json_object_set_new(o, "parent", json_pack("{s:s, s:s, s:I}", "image", img, "chain_id", pid,
								   "generation", (json_int_t)pgen));
	}
	blockdev_close(bd);
	st->disks++;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int store_snap_import(struct store *s, const char *snapdir, const char *name,
		      struct store_snap_stats *st, store_progress_fn progress, void *opaque,
		      struct error *e)
{
	char tmp[128], path[2 * PATH_MAX + 64], tpath[PATH_MAX], **names = NULL;
	json_t *man = NULL, *obj = NULL, *files, *disks, *d;
	json_error_t je;
	size_t nn = 0, i;
	struct dirent *de;
	DIR *dir;
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (store_name_check(name, e) || store_name_free(s, name, e))
		return -1;
	snprintf(path, sizeof(path), "%s/manifest.json", snapdir);
	man = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!man)
		return error_set(e, access(path, F_OK) ? EXIT_NOINPUT : EXIT_BADSTATE,
				 "%s: not a snapshot directory (manifest.json: %s)", snapdir, je.text);
	if (!json_is_string(json_object_get(man, "format")) ||
	    strcmp(json_string_value(json_object_get(man, "format")), "shoal-snapshot")) {
		json_decref(man);
		return error_set(e, EXIT_BADSTATE, "%s: not a snapshot directory (manifest.json is no "
				 "shoal-snapshot manifest)", snapdir);
	}
	dir = opendir(snapdir);
	if (!dir) {
		json_decref(man);
		return error_set(e, EXIT_NOINPUT, "%s: %s", snapdir, strerror(errno));
	}
	while ((de = readdir(dir))) {
		struct stat sb;
		char **nv;

		/* disk-*: an export's disks (stored as the disks the manifest
		 * names) and the overlays restores of it made beside them */
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strncmp(de->d_name, "disk-", 5))
			continue;
		snprintf(path, sizeof(path), "%s/%s", snapdir, de->d_name);
		if (lstat(path, &sb) || !S_ISREG(sb.st_mode) || store_name_check(de->d_name, NULL)) {
			error_set(e, EXIT_BADSTATE, "%s: not a file a snapshot has (a regular file named "
				  "1..64 of [A-Za-z0-9._-])", path);
			closedir(dir);
			goto out;
		}
		nv = realloc(names, (nn + 1) * sizeof(*names));
		if (!nv || !(nv[nn] = strdup(de->d_name))) {
			names = nv ? nv : names;
			closedir(dir);
			error_set(e, EXIT_HOST, "out of memory");
			goto out;
		}
		names = nv;
		nn++;
	}
	closedir(dir);
	qsort(names, nn, sizeof(*names), name_cmp);

	snprintf(path, sizeof(path), "%s/snapshots", store_dir(s));
	if (mkdir(path, 0755) && errno != EEXIST) {
		error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		goto out;
	}
	snprintf(tmp, sizeof(tmp), ".%s.tmp-%d", name, (int)getpid());
	snprintf(tpath, sizeof(tpath), "%s/snapshots/%s", store_dir(s), tmp);
	if (mkdir(tpath, 0755)) {
		error_set(e, EXIT_HOST, "%s: %s", tpath, strerror(errno));
		goto out;
	}
	obj = json_pack("{s:s, s:i, s:s, s:I, s:[], s:[]}", "format", "shoal-store-snapshot", "version", 1,
			"name", name, "added", (json_int_t)time(NULL), "files", "disks");
	files = json_object_get(obj, "files");
	for (i = 0; i < nn; i++) {
		struct stat sb;

		snprintf(path, sizeof(path), "%s/%s", snapdir, names[i]);
		if (store_part(s, tmp, names[i], path, BD_FMT_RAW, st, progress, opaque, NULL, e)) {
			error_prefix(e, "snapshot %s", snapdir);
			goto out;
		}
		stat(path, &sb);
		json_array_append_new(files, json_pack("{s:s, s:I}", "name", names[i],
						       "size", (json_int_t)sb.st_size));
		st->files++;
	}
	disks = json_object_get(man, "disks");
	json_array_foreach(disks, i, d) {
		if (json_is_true(json_object_get(d, "seed")))
			continue;	/* cidata.img: a file of the directory */
		if (import_disk(s, tmp, i, d, json_object_get(obj, "disks"), st, progress, opaque, e))
			goto out;
	}
	if (snap_commit(s, obj, tpath, name, e))
		goto out;
	rc = 0;
out:
	if (rc && obj)
		store_rm_dir(s, tmp);
	for (i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	json_decref(obj);
	json_decref(man);
	return rc;
}

/* ---- export ---- */

struct out_file {
	const char *path;
	int fd;
};

static int out_sized(void *opaque, uint64_t size, const char *format, struct error *e)
{
	struct out_file *o = opaque;

	(void)format;
	o->fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (o->fd < 0)
		return error_set(e, EXIT_HOST, "%s: %s", o->path, strerror(errno));
	if (ftruncate(o->fd, (off_t)size))
		return error_set(e, EXIT_HOST, "%s: %s", o->path, strerror(errno));
	return 0;
}

static int out_write(void *opaque, const void *buf, uint64_t off, uint64_t len, struct error *e)
{
	struct out_file *o = opaque;

	if (pwrite(o->fd, buf, len, (off_t)off) != (ssize_t)len)
		return error_set(e, EXIT_HOST, "%s: write: %s", o->path, strerror(errno));
	return 0;
}

/* Rebuild part or image `what` of the store into `path`. */
static int write_out(struct store *s, const char *rel, const char *label, const char *path,
		     struct error *e)
{
	struct out_file o = { .path = path, .fd = -1 };
	uint64_t size;
	int rc = store_get_at(s, rel, label, &size, out_sized, out_write, &o, e);

	if (o.fd >= 0) {
		if (!rc && fsync(o.fd))
			rc = error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		close(o.fd);
	}
	return rc;
}

int store_snap_export(struct store *s, const char *name, const char *outdir, struct error *e)
{
	return store_snap_export_chain(s, name, outdir, false, NULL, NULL, e);
}

/* A disk of a snapshot as the qcow2 chain it was (export --chain): into
 * dir/disk-N.qcow2 over its parent image's files beside it.  1 when
 * written so, 0 when the disk has no chain to keep (no identity), -1 on
 * a failure. */
static int export_disk_chain(struct store *s, const char *name, json_t *o, json_t *md, const char *dir,
			     const char *file, store_chain_note_fn note, void *opaque, struct error *e)
{
	const char *img = json_string_value(json_object_get(o, "image"));
	const char *p = json_string_value(json_object_get(o, "part"));
	json_t *par = json_object_get(o, "parent");
	json_t *cid = json_object_get(md, "chain_id");
	const char *id = json_string_value(json_object_get(cid, "id"));
	uint64_t gen = (uint64_t)json_integer_value(json_object_get(cid, "generation"));
	char path[2 * PATH_MAX], rel[PATH_MAX], label[160];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (img)	/* an image of the store, with its own chain */
		return store_get_chain(s, img, path, note, opaque, e) ? -1 : 1;
	if (!par || !id)
		return 0;
	snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", name, p);
	snprintf(label, sizeof(label), "snapshot %s/%s", name, p);
	return store_get_chain_at(s, rel, label, json_string_value(json_object_get(par, "image")),
				  json_string_value(json_object_get(par, "chain_id")),
				  (uint64_t)json_integer_value(json_object_get(par, "generation")), id, gen, path,
				  note, opaque, e) ? -1 : 1;
}

int store_snap_export_chain(struct store *s, const char *name, const char *outdir, bool chain,
			    store_chain_note_fn note, void *opaque, struct error *e)
{
	char part[64], tmp[PATH_MAX], path[2 * PATH_MAX + 64], rel[PATH_MAX], label[160];
	char abs[PATH_MAX], pbuf[PATH_MAX], bbuf[PATH_MAX];
	json_t *obj = load_obj(s, name, e), *man = NULL, *o;
	json_error_t je;
	size_t i;
	int rc = -1;

	if (!obj)
		return -1;
	if (!access(outdir, F_OK)) {
		json_decref(obj);
		return error_set(e, EXIT_USAGE, "%s: already exists (export-snapshot makes a new directory)",
				 outdir);
	}
	/* The absolute path the disks will have, for manifest.json. */
	snprintf(pbuf, sizeof(pbuf), "%s", outdir);
	snprintf(bbuf, sizeof(bbuf), "%s", outdir);
	if (!realpath(dirname(pbuf), abs)) {
		json_decref(obj);
		return error_set(e, EXIT_NOINPUT, "%s: %s", outdir, strerror(errno));
	}
	{
		size_t k = strlen(abs);

		snprintf(abs + k, sizeof(abs) - k, "/%s", basename(bbuf));
	}
	snprintf(tmp, sizeof(tmp), "%s.partial-%d", outdir, (int)getpid());
	if (mkdir(tmp, 0700)) {
		json_decref(obj);
		return error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
	}
	json_array_foreach(json_object_get(obj, "files"), i, o) {
		const char *f = json_string_value(json_object_get(o, "name"));

		snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", name, f);
		snprintf(label, sizeof(label), "snapshot %s/%s", name, f);
		snprintf(path, sizeof(path), "%s/%s", tmp, f);
		if (write_out(s, rel, label, path, e))
			goto out;
	}
	snprintf(path, sizeof(path), "%s/manifest.json", tmp);
	man = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!man) {
		error_set(e, EXIT_BADSTATE, "snapshot %s/manifest.json: %s", name, je.text);
		goto out;
	}
	json_array_foreach(json_object_get(obj, "disks"), i, o) {
		json_int_t idx = json_integer_value(json_object_get(o, "index"));
		json_t *md = json_array_get(json_object_get(man, "disks"), (size_t)idx);
		json_t *cd = json_array_get(json_object_get(json_object_get(man, "config"), "disks"),
					    (size_t)idx);
		const char *img = json_string_value(json_object_get(o, "image"));
		struct stat sb;

		if (!json_is_object(md)) {
			error_set(e, EXIT_BADSTATE, "snapshot %s: disk %lld is not in its manifest.json",
				  name, (long long)idx);
			goto out;
		}
		if (img) {
			snprintf(rel, sizeof(rel), "images/%s", img);
			snprintf(label, sizeof(label), "image %s (disk %lld of snapshot %s)", img,
				 (long long)idx, name);
		} else {
			const char *p = json_string_value(json_object_get(o, "part"));

			snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", name, p);
			snprintf(label, sizeof(label), "snapshot %s/%s", name, p);
		}
		int kept = 0;

		if (chain) {
			snprintf(part, sizeof(part), "disk-%lld.qcow2", (long long)idx);
			kept = export_disk_chain(s, name, o, md, tmp, part, note, opaque, e);
			if (kept < 0)
				goto out;
		}
		if (!kept) {
			snprintf(part, sizeof(part), "disk-%lld.raw", (long long)idx);
			snprintf(path, sizeof(path), "%s/%s", tmp, part);
			if (write_out(s, rel, label, path, e))
				goto out;
		}
		snprintf(path, sizeof(path), "%s/%s", tmp, part);
		if (stat(path, &sb)) {
			error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
			goto out;
		}
		/* The rename of the directory keeps inode and time. */
		snprintf(path, sizeof(path), "%s/%s", abs, part);
		json_object_set_new(md, "path", json_string(path));
		json_object_set_new(md, "format", json_string(kept ? "qcow2" : "raw"));
		json_object_set_new(md, "size", json_integer((json_int_t)sb.st_size));
		json_object_set_new(md, "ino", json_integer((json_int_t)sb.st_ino));
		json_object_set_new(md, "mtime_ns", json_integer(mtime_ns(&sb)));
		if (!kept)	/* a chain keeps its identity (store/chain.c); a raw file has none */
			json_object_del(md, "chain_id");
		if (json_is_object(cd) && json_object_get(cd, "path"))
			json_object_set_new(cd, "path", json_string(path));
	}
	if (json_array_size(json_object_get(obj, "disks"))) {
		snprintf(path, sizeof(path), "%s/manifest.json", tmp);
		if (json_dump_file(man, path, JSON_INDENT(2)) || fsync_path(path)) {
			error_set(e, EXIT_HOST, "%s: cannot write", path);
			goto out;
		}
	}
	if (fsync_path(tmp) || rename(tmp, outdir)) {
		error_set(e, EXIT_HOST, "%s: %s", outdir, strerror(errno));
		goto out;
	}
	snprintf(pbuf, sizeof(pbuf), "%s", outdir);
	fsync_path(dirname(pbuf));
	rc = 0;
out:
	if (rc) {
		DIR *d = opendir(tmp);
		struct dirent *de;

		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlinkat(dirfd(d), de->d_name, 0);
		if (d)
			closedir(d);
		rmdir(tmp);
	}
	json_decref(man);
	json_decref(obj);
	return rc;
}

/* ---- ls, rm ---- */

int store_snap_list(struct store *s, struct store_snap_info **out, size_t *n, struct error *e)
{
	char **names;
	size_t k;
	struct store_snap_info *v;

	*out = NULL;
	*n = 0;
	if (store_snapshot_names(s, &names, &k, e))
		return -1;
	v = calloc(k + 1, sizeof(*v));
	if (!v) {
		store_names_free(names, k);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	for (size_t i = 0; i < k; i++) {
		json_t *obj = load_obj(s, names[i], e), *o;
		size_t j;

		if (!obj) {
			free(v);
			store_names_free(names, k);
			return -1;
		}
		snprintf(v[i].name, sizeof(v[i].name), "%s", names[i]);
		v[i].added = (uint64_t)json_integer_value(json_object_get(obj, "added"));
		v[i].files = json_array_size(json_object_get(obj, "files"));
		v[i].disks = json_array_size(json_object_get(obj, "disks"));
		json_array_foreach(json_object_get(obj, "files"), j, o)
			v[i].bytes += (uint64_t)json_integer_value(json_object_get(o, "size"));
		json_array_foreach(json_object_get(obj, "disks"), j, o) {
			struct store_manifest m;
			char rel[PATH_MAX];
			const char *p = json_string_value(json_object_get(o, "part"));

			if (!p)
				continue;
			snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", names[i], p);
			if (!store_manifest_get_at(s, rel, rel, &m, NULL)) {
				v[i].bytes += m.size;
				v[i].chunks += m.n;
				store_manifest_free(&m);
			}
		}
		json_array_foreach(json_object_get(obj, "files"), j, o) {
			struct store_manifest m;
			char rel[PATH_MAX];

			snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", names[i],
				 json_string_value(json_object_get(o, "name")));
			if (!store_manifest_get_at(s, rel, rel, &m, NULL)) {
				v[i].chunks += m.n;
				store_manifest_free(&m);
			}
		}
		json_decref(obj);
	}
	store_names_free(names, k);
	*out = v;
	*n = k;
	return 0;
}

int store_snap_rm(struct store *s, const char *name, struct error *e)
{
	char from[PATH_MAX], to[PATH_MAX], sub[128];

	if (!store_snap_exists(s, name))
		return error_set(e, EXIT_NOINPUT, "%s: no snapshot named '%s' in the store",
				 store_dir(s), name);
	snprintf(sub, sizeof(sub), ".%s.rm-%d", name, (int)getpid());
	snprintf(from, sizeof(from), "%s/snapshots/%s", store_dir(s), name);
	snprintf(to, sizeof(to), "%s/snapshots/%s", store_dir(s), sub);
	if (rename(from, to))
		return error_set(e, EXIT_HOST, "%s: %s", from, strerror(errno));
	snprintf(from, sizeof(from), "%s/snapshots", store_dir(s));
	fsync_path(from);
	store_rm_dir(s, sub);
	return 0;
}

void store_snap_users_of(struct store *s, const char *image, char *out, size_t len)
{
	char **names;
	size_t k, w = 0;

	out[0] = 0;
	if (store_snapshot_names(s, &names, &k, NULL))
		return;
	for (size_t i = 0; i < k; i++) {
		json_t *obj = load_obj(s, names[i], NULL), *o;
		size_t j;

		json_array_foreach(json_object_get(obj, "disks"), j, o) {
			const char *img = json_string_value(json_object_get(o, "image"));
			const char *par = json_string_value(json_object_get(json_object_get(o, "parent"), "image"));

			if ((img && !strcmp(img, image)) || (par && !strcmp(par, image))) {
				int r = snprintf(out + w, len - w, "%s%s", w ? ", " : "", names[i]);

				if (r > 0 && (size_t)r < len - w)
					w += r;
				break;
			}
		}
		json_decref(obj);
	}
	store_names_free(names, k);
}

/* ---- the image server and pull (serve.c, pull.c) ---- */

static void free_parts(char **pn, struct store_manifest *pm, size_t n);

/* The manifest of every part of object `obj` (`name`), as parallel arrays
 * of part names and manifests; a disk that refers to an image is part
 * "disk-N" with that image's manifest. */
static int load_parts(struct store *s, const char *name, json_t *obj, char ***pn,
		      struct store_manifest **pm, size_t *n, struct error *e)
{
	size_t nf = json_array_size(json_object_get(obj, "files"));
	size_t nd = json_array_size(json_object_get(obj, "disks"));
	char **names = calloc(nf + nd + 1, sizeof(*names)), rel[PATH_MAX], label[160];
	struct store_manifest *m = calloc(nf + nd + 1, sizeof(*m));
	size_t k = 0, i;
	json_t *o;

	*pn = names;
	*pm = m;
	*n = 0;
	if (!names || !m)
		return error_set(e, EXIT_HOST, "out of memory");
	json_array_foreach(json_object_get(obj, "files"), i, o) {
		const char *f = json_string_value(json_object_get(o, "name"));

		snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", name, f);
		snprintf(label, sizeof(label), "snapshot %s/%s", name, f);
		if (!(names[k] = strdup(f)) || store_manifest_get_at(s, rel, label, &m[k], e))
			return -1;
		*n = ++k;
	}
	json_array_foreach(json_object_get(obj, "disks"), i, o) {
		const char *img = json_string_value(json_object_get(o, "image"));
		const char *p = json_string_value(json_object_get(o, "part"));
		char dn[32];

		snprintf(dn, sizeof(dn), "disk-%lld", (long long)json_integer_value(json_object_get(o, "index")));
		if (img) {
			snprintf(rel, sizeof(rel), "images/%s", img);
			snprintf(label, sizeof(label), "image %s (disk of snapshot %s)", img, name);
		} else {
			snprintf(rel, sizeof(rel), "snapshots/%s/%s.mf", name, p);
			snprintf(label, sizeof(label), "snapshot %s/%s", name, p);
		}
		if (!(names[k] = strdup(dn)) || store_manifest_get_at(s, rel, label, &m[k], e))
			return -1;
		*n = ++k;
	}
	return 0;
}

int store_snap_part_manifest(struct store *s, const char *name, const char *part,
			     struct store_manifest *m, struct error *e)
{
	json_t *obj = load_obj(s, name, e);
	struct store_manifest *pm = NULL;
	char **pn = NULL;
	size_t n = 0;
	int rc = -1;

	memset(m, 0, sizeof(*m));
	if (!obj)
		return -1;
	if (!load_parts(s, name, obj, &pn, &pm, &n, e)) {
		for (size_t i = 0; i < n && rc; i++)
			if (!strcmp(pn[i], part)) {
				*m = pm[i];
				memset(&pm[i], 0, sizeof(pm[i]));
				rc = 0;
			}
		if (rc)
			error_set(e, EXIT_NOINPUT, "no part '%s' in snapshot %s", part, name);
	}
	free_parts(pn, pm, n);
	json_decref(obj);
	return rc;
}

static void free_parts(char **pn, struct store_manifest *pm, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(pn[i]);
		store_manifest_free(&pm[i]);
	}
	free(pn);
	free(pm);
}

json_t *store_snap_describe(struct store *s, const char *name, struct error *e)
{
	json_t *obj = load_obj(s, name, e), *parts, *disks, *o;
	struct store_manifest *pm = NULL;
	char **pn = NULL, hex[65];
	size_t n = 0, i;

	if (!obj)
		return NULL;
	if (load_parts(s, name, obj, &pn, &pm, &n, e)) {
		free_parts(pn, pm, n);
		json_decref(obj);
		return NULL;
	}
	parts = json_object();
	for (i = 0; i < n; i++) {
		json_t *arr = json_array();

		for (uint32_t c = 0; c < pm[i].n; c++) {
			if (pm[i].c[c].flags & STORE_CHUNK_ZERO) {
				json_array_append_new(arr, json_pack("{s:I, s:b}", "len", (json_int_t)pm[i].c[c].len,
								     "zero", 1));
				continue;
			}
			store_hash_hex(pm[i].c[c].hash, hex);
			json_array_append_new(arr, json_pack("{s:s, s:I}", "hash", hex, "len",
							     (json_int_t)pm[i].c[c].len));
		}
		json_object_set_new(parts, pn[i], json_pack("{s:I, s:s, s:o}", "size", (json_int_t)pm[i].size,
							    "format", pm[i].format, "chunks", arr));
	}
	/* Disks that refer to an image travel as parts of their own. */
	disks = json_object_get(obj, "disks");
	json_array_foreach(disks, i, o) {
		char dn[32];

		const char *img = json_string_value(json_object_get(o, "image"));
		struct store_manifest im;

		snprintf(dn, sizeof(dn), "disk-%lld", (long long)json_integer_value(json_object_get(o, "index")));
		/* the image's own parent in a chain goes with it */
		if (img && !store_manifest_get(s, img, &im, NULL)) {
			if (im.parent[0])
				json_object_set_new(o, "parent", json_pack("{s:s, s:s, s:I}", "image", im.parent,
									   "chain_id", im.parent_chain_id, "generation",
									   (json_int_t)im.parent_generation));
			store_manifest_free(&im);
		}
		json_object_del(o, "image");
		json_object_set_new(o, "part", json_string(dn));
	}
	json_object_set_new(obj, "parts", parts);
	free_parts(pn, pm, n);
	return obj;
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

int store_snap_hashes(struct store *s, const char *name, uint8_t (**out)[32], size_t *nout,
		      struct error *e)
{
	json_t *obj = load_obj(s, name, e);
	struct store_manifest *pm = NULL;
	char **pn = NULL;
	size_t n = 0, total = 0, k = 0;
	uint8_t(*h)[32];

	*out = NULL;
	*nout = 0;
	if (!obj)
		return -1;
	if (load_parts(s, name, obj, &pn, &pm, &n, e)) {
		free_parts(pn, pm, n);
		json_decref(obj);
		return -1;
	}
	json_decref(obj);
	for (size_t i = 0; i < n; i++)
		total += pm[i].n;
	h = malloc((total + 1) * 32);
	if (!h) {
		free_parts(pn, pm, n);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		for (uint32_t c = 0; c < pm[i].n; c++)
			if (!(pm[i].c[c].flags & STORE_CHUNK_ZERO))
				memcpy(h[k++], pm[i].c[c].hash, 32);
	free_parts(pn, pm, n);
	qsort(h, k, 32, hash_cmp);
	*out = h;
	*nout = k;
	return 0;
}

int store_snap_check_desc(json_t *desc, const char *where, struct error *e)
{
	json_t *parts = json_object_get(desc, "parts"), *o;
	size_t i;

	if (!json_is_object(parts) || !json_is_array(json_object_get(desc, "files")) ||
	    !json_is_array(json_object_get(desc, "disks")) || json_object_size(parts) > 4096)
		return error_set(e, EXIT_BADSTATE, "%s: not a snapshot description (files, disks, parts)", where);
	json_array_foreach(json_object_get(desc, "files"), i, o) {
		const char *f = json_string_value(json_object_get(o, "name"));

		if (!f || store_name_check(f, NULL) || !strncmp(f, "disk-", 5) || !json_object_get(parts, f))
			return error_set(e, EXIT_BADSTATE, "%s: file %zu: a bad name, or no part for it", where, i);
	}
	json_array_foreach(json_object_get(desc, "disks"), i, o) {
		const char *p = json_string_value(json_object_get(o, "part"));
		json_t *ix = json_object_get(o, "index");
		char dn[32];

		snprintf(dn, sizeof(dn), "disk-%lld", (long long)json_integer_value(ix));
		if (!json_is_integer(ix) || json_integer_value(ix) < 0 || json_integer_value(ix) > 64 ||
		    !p || strcmp(p, dn) || !json_object_get(parts, p))
			return error_set(e, EXIT_BADSTATE, "%s: disk %zu: no index, or no part for it", where, i);
	}
	if (json_object_size(parts) != json_array_size(json_object_get(desc, "files")) +
					     json_array_size(json_object_get(desc, "disks")))
		return error_set(e, EXIT_BADSTATE, "%s: parts that no file or disk names", where);
	return 0;
}

int store_snap_put(struct store *s, const char *name, json_t *desc, const char *const *pn,
		   const struct store_manifest *pm, size_t n, struct error *e)
{
	char tmp[128], tpath[PATH_MAX], path[2 * PATH_MAX + 64], label[160];
	json_t *obj = NULL, *o;
	size_t i;
	int rc = -1;

	if (store_name_check(name, e) || store_name_free(s, name, e))
		return -1;
	snprintf(path, sizeof(path), "%s/snapshots", store_dir(s));
	if (mkdir(path, 0755) && errno != EEXIST)
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	snprintf(tmp, sizeof(tmp), ".%s.tmp-%d", name, (int)getpid());
	snprintf(tpath, sizeof(tpath), "%s/snapshots/%s", store_dir(s), tmp);
	if (mkdir(tpath, 0755))
		return error_set(e, EXIT_HOST, "%s: %s", tpath, strerror(errno));
	for (i = 0; i < n; i++) {
		if (store_name_check(pn[i], e))
			goto out;
		snprintf(path, sizeof(path), "snapshots/%s/%s.mf", tmp, pn[i]);
		snprintf(label, sizeof(label), "snapshot %s/%s", name, pn[i]);
		if (store_manifest_put_at(s, path, label, &pm[i], e))
			goto out;
	}
	obj = json_pack("{s:s, s:i, s:s, s:O, s:O, s:[]}", "format", "shoal-store-snapshot", "version", 1,
			"name", name, "added", json_object_get(desc, "added"),
			"files", json_object_get(desc, "files"), "disks");
	json_array_foreach(json_object_get(desc, "disks"), i, o) {
		json_t *c = json_deep_copy(o), *par = json_object_get(c, "parent");

		/* a disk's parent image is kept only where this store has it,
		 * the same (pull the base first); else the disk stands alone */
		if (!store_image_has_identity(s, json_string_value(json_object_get(par, "image")),
					      json_string_value(json_object_get(par, "chain_id")),
					      (uint64_t)json_integer_value(json_object_get(par, "generation"))))
			json_object_del(c, "parent");
		json_array_append_new(json_object_get(obj, "disks"), c);
	}
	if (snap_commit(s, obj, tpath, name, e))
		goto out;
	rc = 0;
out:
	if (rc)
		store_rm_dir(s, tmp);
	json_decref(obj);
	return rc;
}
