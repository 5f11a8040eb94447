/*
 * api_store.c - snapshots through the host's image store (docs/daemon.md,
 * "Snapshots through the store"; issue 14 item 6): one daemon pushes a
 * snapshot into its store, another pulls it (from its own store, or from
 * an image server into its store first) and restores it with `shoal vm
 * restore`.
 *
 *   POST /v1/snapshots/{name}/push {"as": STORE_NAME}
 *        store_snap_import of STATE_DIR/snapshots/NAME into the store, with
 *        the file shoald.json beside the snapshot's own (the VM's spec and
 *        the record's figures, for the daemon that pulls it).
 *   POST /v1/snapshots/{name}/pull {"from": "store" | "server"}
 *        with "server": store_pull_snapshot from --store-server with the
 *        host's key pair (--store-cert, --store-key, --store-ca) when the
 *        store lacks it; then store_snap_export into the daemon's own
 *        directory, the disks moved beside the first --allow-dir, and the
 *        snapshot recorded in SQLite as one this daemon took.
 *
 * What a client may name: a snapshot name (the route's, checked as a VM
 * name) and a store name (checked as an image name); never a path.  The
 * store is the daemon's --store DIR, the server the daemon's
 * --store-server: a client cannot make the root daemon read or write any
 * other file, nor talk to any other host.
 *
 * Invariants:
 *   - A pull is all or nothing: it exports into
 *     STATE_DIR/snapshots/.pull-NAME-PID (export itself writes
 *     .partial-PID and renames), moves the disks into
 *     ALLOW0/snapshots-pulled/.partial-NAME-MS (ALLOW0 the first
 *     --allow-dir, MS the time: each pull's disks have a directory of
 *     their own; every directory opened O_NOFOLLOW beneath ALLOW0, so a
 *     link a user of that directory planted is not followed), rewrites
 *     manifest.json to name NAME-MS/disk-N.raw, and then, under the host
 *     lock, renames .partial-NAME-MS to NAME-MS and the export to
 *     STATE_DIR/snapshots/NAME, and records the row, last.  A pull that
 *     fails removes what it made; one killed leaves no row, and its
 *     leftovers (.pull-*, .partial-*: nothing names them) are removed at
 *     the next start.
 *   - Nothing else is removed here: a pulled snapshot's NAME-MS stays
 *     when the snapshot is deleted (a restore's overlay, or a later
 *     snapshot's disk chain, may still lie on it; the daemon cannot tell).
 *   - The pulled manifest's "confine" (the pushing host's directories) is
 *     replaced by this daemon's --allow-dir list, and the restore's spec
 *     is checked like any spec (snapshots.c): a kernel or disk outside
 *     --allow-dir is 403, whatever the server sent.
 *   - One store operation at a time in this daemon (hstore_lock): a pull
 *     may run long, and the store's writer lock would make a second
 *     writer give up after 30 s.
 *   - A rename keeps a disk's inode and time, which the manifest records:
 *     STATE_DIR and ALLOW0 must be one file system (else 500, saying so).
 */
#include "host/hoststore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "host/spec.h"
#include "store/pull.h"
#include "store/snapobj.h"
#include "store/store.h"

#define HSTORE_DISKS "snapshots-pulled"     /* beneath the first --allow-dir */

static pthread_mutex_t hstore_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- the pure parts ---- */

char *hstore_meta_dump(const struct snapshot_record *r)
{
	json_t *spec = json_loads(r->spec ? r->spec : "{}", 0, NULL);
	json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:o, s:I, s:i, s:I, s:I, s:f, s:f}",
			      "format", "shoald-snapshot", "version", 1, "name", r->name,
			      "vm", r->vm, "spec", json_is_object(spec) ? spec : json_object(),
			      "created_ms", (json_int_t)r->created_ms, "vcpus", r->vcpus,
			      "memory_bytes", (json_int_t)r->memory_bytes, "memory_data_bytes",
			      (json_int_t)r->memory_data_bytes, "pause_ms", r->pause_ms,
			      "total_ms", r->total_ms);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

	if (!json_is_object(spec))
		json_decref(spec);
	json_decref(o);
	return text;
}

int hstore_meta_parse(const char *text, struct snapshot_record *r, char *err, size_t len)
{
	json_error_t je;
	json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je), *v;
	const char *fmt = json_string_value(json_object_get(o, "format"));
	const char *vm = json_string_value(json_object_get(o, "vm"));
	int rc = -1;

	r->spec = NULL;
	if (!o)
		snprintf(err, len, "not JSON (%s)", je.text);
	else if (!fmt || strcmp(fmt, "shoald-snapshot") ||
		 json_integer_value(json_object_get(o, "version")) != 1)
		snprintf(err, len, "not a shoald-snapshot description of version 1");
	else if (!json_is_object(json_object_get(o, "spec")))
		snprintf(err, len, "no \"spec\" object");
	else
		rc = 0;
	if (rc) {
		json_decref(o);
		return -1;
	}
	snprintf(r->vm, sizeof(r->vm), "%s", vm && host_name_valid(vm) ? vm : "-");
	r->spec = json_dumps(json_object_get(o, "spec"), JSON_COMPACT | JSON_PRESERVE_ORDER);
	r->created_ms = json_integer_value(json_object_get(o, "created_ms"));
	v = json_object_get(o, "vcpus");
	r->vcpus = json_is_integer(v) && json_integer_value(v) > 0 &&
		   json_integer_value(v) < 100000 ? (int)json_integer_value(v) : 0;
	r->memory_bytes = json_integer_value(json_object_get(o, "memory_bytes"));
	r->memory_data_bytes = json_integer_value(json_object_get(o, "memory_data_bytes"));
	r->pause_ms = json_number_value(json_object_get(o, "pause_ms"));
	r->total_ms = json_number_value(json_object_get(o, "total_ms"));
	json_decref(o);
	if (!r->spec) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	return 0;
}

/* Is `base` "disk-N.raw", N decimal digits? */
static bool disk_file_name(const char *base)
{
	size_t n = strlen(base);

	if (n < 10 || strncmp(base, "disk-", 5) || strcmp(base + n - 4, ".raw"))
		return false;
	for (size_t i = 5; i < n - 4; i++)
		if (base[i] < '0' || base[i] > '9')
			return false;
	return n - 9 <= 6;
}

int hstore_relocate(json_t *man, const char *from_dir, const char *to_dir,
		    const char *const *confine, int nconfine, char (*moved)[32], int max,
		    char *err, size_t len)
{
	json_t *disks = json_object_get(man, "disks"), *cfg = json_object_get(man, "config");
	json_t *d, *dirs;
	size_t i, fl = strlen(from_dir);
	int n = 0;

	if (!json_is_object(cfg)) {
		snprintf(err, len, "manifest.json has no \"config\" object");
		return -1;
	}
	if (disks && !json_is_array(disks)) {
		snprintf(err, len, "manifest.json: \"disks\" is not a list");
		return -1;
	}
	json_array_foreach(disks, i, d) {
		const char *p = json_string_value(json_object_get(d, "path"));
		json_t *cd = json_array_get(json_object_get(cfg, "disks"), i);
		const char *cp = json_string_value(json_object_get(cd, "path"));
		char to[PATH_MAX];

		if (!p || strncmp(p, from_dir, fl) || p[fl] != '/')
			continue;       /* not a file of the export: left as it is */
		if (!disk_file_name(p + fl + 1)) {
			snprintf(err, len, "manifest.json: disk %zu is %.200s, not disk-N.raw", i, p);
			return -1;
		}
		if (n == max) {
			snprintf(err, len, "manifest.json: more than %d disks", max);
			return -1;
		}
		if (snprintf(to, sizeof(to), "%s/%s", to_dir, p + fl + 1) >= (int)sizeof(to)) {
			snprintf(err, len, "%.200s: path too long", to_dir);
			return -1;
		}
		snprintf(moved[n++], 32, "%s", p + fl + 1);
		if (cp && !strcmp(cp, p))
			json_object_set_new(cd, "path", json_string(to));
		json_object_set_new(d, "path", json_string(to));
	}
	dirs = json_array();
	for (int k = 0; k < nconfine; k++)
		json_array_append_new(dirs, json_string(confine[k]));
	json_object_set_new(cfg, "confine", dirs);
	return n;
}

/* ---- helpers ---- */

/* The record's "disks" ({"path", "writable"} of each manifest disk). */
static char *disks_of(json_t *man)
{
	json_t *out = json_array(), *d;
	char *text;
	size_t i;

	json_array_foreach(json_object_get(man, "disks"), i, d)
		json_array_append_new(out, json_pack("{s:s, s:b}", "path",
			json_string_value(json_object_get(d, "path")) ?: "", "writable",
			json_is_true(json_object_get(d, "writable"))));
	text = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	return text;
}

/* Write `text` to DIR/NAME by a temporary file and a rename. */
static int write_in(const char *dir, const char *name, const char *text, struct api_err *e)
{
	char tmp[PATH_MAX + 100], path[PATH_MAX + 100];
	size_t n = strlen(text);
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%d", dir, name, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) || close(fd) ||
	    rename(tmp, path)) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		unlink(tmp);
		return api_err_set(e, 500, "internal", "%s: %s", path, strerror(err));
	}
	return 0;
}

/* Open (making it, mode 0711, when `create`) directory `name` beneath the
 * directory fd `at`, never through a symbolic link. */
static int dir_beneath(int at, const char *name, bool create)
{
	if (create && mkdirat(at, name, 0711) < 0 && errno != EEXIST)
		return -1;
	return openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Remove directory `name` beneath `at` and the files in it (a killed or
 * failed pull's disks, or those of a deleted snapshot of that name); no
 * link is followed.  0, or -1 with errno. */
static int rm_beneath(int at, const char *name)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *d;
	DIR *D;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	D = fdopendir(fd);
	if (!D) {
		close(fd);
		return -1;
	}
	while ((d = readdir(D)))
		if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
			unlinkat(fd, d->d_name, 0);
	closedir(D);
	return unlinkat(at, name, AT_REMOVEDIR);
}

/* A body with at most the one string key `key`, into out ("" absent). */
static int parse_body(const char *body, size_t len, const char *key, char *out, size_t size,
		      struct api_err *e)
{
	const char *k;
	json_t *o, *v;
	int rc = 0;

	out[0] = '\0';
	if (len == 0)
		return 0;
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, k, v) {
		if (strcmp(k, key)) {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", k);
			break;
		}
		if (!json_is_string(v) || json_string_length(v) >= size) {
			rc = api_err_set(e, 400, "invalid_request", "%s: expected a string of at most "
					 "%zu bytes", key, size - 1);
			break;
		}
		snprintf(out, size, "%s", json_string_value(v));
	}
	json_decref(o);
	return rc;
}

/* ---- setup ---- */

/* Remove STATE_DIR/snapshots/.pull-* and ALLOW0/snapshots-pulled/.partial-*
 * (a pull killed part way: nothing names them). */
static void rm_pull_leftovers(struct host *h)
{
	char path[PATH_MAX + 300];
	struct dirent *d;
	int allow = open(h->allow_dirs[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int pulled = allow < 0 ? -1 : dir_beneath(allow, HSTORE_DISKS, false);
	DIR *D = pulled < 0 ? NULL : fdopendir(dup(pulled));

	while (D && (d = readdir(D)))
		if (!strncmp(d->d_name, ".partial-", 9)) {
			log_info("removing %s/%s/%s, left by a pull that did not finish",
				 h->allow_dirs[0], HSTORE_DISKS, d->d_name);
			rm_beneath(pulled, d->d_name);
		}
	if (D)
		closedir(D);
	if (pulled >= 0)
		close(pulled);
	if (allow >= 0)
		close(allow);
	D = opendir(h->snapshots_dir);

	while (D && (d = readdir(D)))
		if (!strncmp(d->d_name, ".pull-", 6)) {
			snprintf(path, sizeof(path), "%s/%s", h->snapshots_dir, d->d_name);
			log_info("removing %s, left by a pull that did not finish", path);
			host_rm_tree(path);
		}
	if (D)
		closedir(D);
}

int host_store_open(struct host *h, struct api_err *e)
{
	const struct host_options *o = &h->opt;
	const char *files[3] = { o->store_cert, o->store_key, o->store_ca };
	static const char *const fopt[3] = { "--store-cert", "--store-key", "--store-ca" };
	int nsrv = !!o->store_server + !!o->store_cert + !!o->store_key + !!o->store_ca;
	struct store *s;
	struct error err = { 0 }, err2 = { 0 };

	if (!o->store_dir)
		return nsrv ? api_err_set(e, 400, "invalid_request", "--store-server, --store-cert, "
					  "--store-key and --store-ca need --store DIR") : 0;
	if (nsrv && nsrv != 4)
		return api_err_set(e, 400, "invalid_request", "--store-server URL needs "
				   "--store-cert, --store-key (this host's key pair) and --store-ca "
				   "(the server's CA), and they need it");
	if (o->store_server && strncmp(o->store_server, "https://", 8))
		return api_err_set(e, 400, "invalid_request", "--store-server %.200s: an https:// "
				   "URL", o->store_server);
	for (int i = 0; i < 3 && nsrv; i++)
		if (access(files[i], R_OK) < 0)
			return api_err_set(e, 400, "invalid_request", "%s %.200s: %s", fopt[i],
					   files[i], strerror(errno));
	if (access(o->store_dir, F_OK) < 0) {
		if (store_init(o->store_dir, NULL, &err))
			return api_err_set(e, 500, "internal", "--store %.200s: %s", o->store_dir,
					   err.msg);
		log_info("made the image store %s", o->store_dir);
	} else if (store_open(&s, o->store_dir, false, &err)) {
		if (store_init(o->store_dir, NULL, &err2))      /* an empty directory */
			return api_err_set(e, 400, "invalid_request", "--store %.200s: %s", o->store_dir,
					   err.msg);
		log_info("made the image store %s", o->store_dir);
	} else {
		store_close(s);
	}
	h->store_dir = realpath(o->store_dir, NULL);
	if (!h->store_dir)
		return api_err_set(e, 500, "internal", "--store %.200s: %s", o->store_dir,
				   strerror(errno));
	rm_pull_leftovers(h);
	log_info("image store %s%s%s (snapshots push into it and pull from it)", h->store_dir,
		 o->store_server ? ", pulling from " : "", o->store_server ? o->store_server : "");
	return 0;
}

/* ---- push ---- */

int api_snapshot_push(struct api_call *c)
{
	struct host *h = c->h;
	char as[80];
	struct snapshot_record r;
	struct store_snap_stats st;
	struct error err = { 0 };
	struct api_err e;
	struct store *s = NULL;
	char *meta;
	int rc;

	if (parse_body(c->body, c->body_len, "as", as, sizeof(as), &e))
		return api_reply_error(c, &e);
	if (!as[0])
		snprintf(as, sizeof(as), "%s", c->name);
	if (store_name_check(as, &err)) {
		api_err_set(&e, 400, "invalid_request", "as: %s", err.msg);
		return api_reply_error(c, &e);
	}
	if (!h->store_dir) {
		api_err_set(&e, 409, "no_store", "snapshot %s: this daemon has no image store "
			    "(start shoald with --store DIR)", c->name);
		return api_reply_error(c, &e);
	}
	rc = db_snapshot_get(h->db, c->name, &r);
	if (rc) {
		api_err_set(&e, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "not_found" : "internal",
			    "snapshot %s: %s", c->name, rc == -ENOENT ? "not found" :
			    "cannot read the store");
		return api_reply_error(c, &e);
	}
	meta = hstore_meta_dump(&r);
	rc = meta ? write_in(r.dir, HSTORE_META, meta, &e) :
		    api_err_set(&e, 500, "internal", "out of memory");
	free(meta);
	if (!rc) {
		pthread_mutex_lock(&hstore_lock);
		if (store_open(&s, h->store_dir, true, &err)) {
			rc = api_err_set(&e, 500, "store_error", "store %s: %s", h->store_dir, err.msg);
		} else if (store_name_free(s, as, &err)) {
			rc = api_err_set(&e, 409, "name_taken", "snapshot %s: cannot push it as %s: %s",
					 c->name, as, err.msg);
		} else if (store_snap_import(s, r.dir, as, &st, NULL, NULL, &err)) {
			rc = api_err_set(&e, err.status == EXIT_BADSTATE ? 409 : 500, "push_failed",
					 "snapshot %s: pushing it into the store %s as %s: %s", c->name,
					 h->store_dir, as, err.msg);
		}
		if (s)
			store_close(s);
		pthread_mutex_unlock(&hstore_lock);
	}
	snapshot_record_free(&r);
	if (rc)
		return api_reply_error(c, &e);
	log_info("snapshot %s: pushed into the store %s as %s (%llu new chunks, %llu bytes)",
		 c->name, h->store_dir, as, (unsigned long long)st.new_chunks,
		 (unsigned long long)st.stored_bytes);
	return api_reply_json(c, 201, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
						"s:I, s:I, s:I}", "snapshot", c->name, "name", as,
						"store", h->store_dir,
						"files", (json_int_t)st.files, "disks", (json_int_t)st.disks,
						"disks_by_reference", (json_int_t)st.disks_by_ref,
						"bytes", (json_int_t)st.raw_bytes,
						"chunks", (json_int_t)st.chunks,
						"zero_chunks", (json_int_t)st.zero_chunks,
						"new_chunks", (json_int_t)st.new_chunks,
						"new_bytes", (json_int_t)st.new_bytes,
						"stored_bytes", (json_int_t)st.stored_bytes));
}

/* ---- pull ---- */

/* Is snapshot `name` taken on this daemon (a row, or one being taken)?
 * Lock held.  0, or -1 with a 409 or 500. */
static int taken_locked(struct host *h, const char *name, struct api_err *e)
{
	struct snapshot_record r;
	int rc;

	for (size_t i = 0; i < h->nsnap_pending; i++)
		if (!strcmp(h->snap_pending[i], name))
			return api_err_set(e, 409, "name_taken", "snapshot %s: already exists on this "
					   "host (being taken)", name);
	rc = db_snapshot_get(h->db, name, &r);
	if (!rc) {
		snapshot_record_free(&r);
		return api_err_set(e, 409, "name_taken", "snapshot %s: already exists on this host "
				   "(delete it first: shoal snapshot delete %s)", name, name);
	}
	return rc == -ENOENT ? 0 : api_err_set(e, 500, "internal", "snapshot %s: cannot read the "
					       "database", name);
}

/* Fetch `name` from the server into the store unless it is there.
 * *fetched: whether it was fetched.  0, or -1 with e. */
static int pull_from_server(struct host *h, const char *name, struct store_pull_stats *ps,
			    bool *fetched, struct api_err *e)
{
	struct store_pull_opts o = { 0 };
	struct error err = { 0 };
	struct store *s;
	bool there;

	*fetched = false;
	if (store_open(&s, h->store_dir, false, &err))
		return api_err_set(e, 500, "store_error", "store %s: %s", h->store_dir, err.msg);
	there = store_snap_exists(s, name);
	store_close(s);
	if (there)
		return 0;
	o.dir = h->store_dir;
	o.name = name;
	o.from = h->opt.store_server;
	o.cert = h->opt.store_cert;
	o.key = h->opt.store_key;
	o.ca = h->opt.store_ca;
	if (store_pull_snapshot(&o, ps, &err)) {
		if (err.status == EXIT_NOINPUT)
			return api_err_set(e, 404, "not_found", "snapshot %s: not on the server %s: %s",
					   name, o.from, err.msg);
		return api_err_set(e, 502, err.status == EXIT_USAGE ? "pull_refused" : "pull_failed",
				   "snapshot %s: pulling it from %s: %s", name, o.from, err.msg);
	}
	*fetched = true;
	return 0;
}

/* A pull's disk directory: ALLOW0/snapshots-pulled/SUB, SUB "NAME-MS";
 * *pulled the open snapshots-pulled (the caller's to close), the disks
 * first in .partial-SUB (renamed to SUB under the lock, just before the
 * row is recorded). */
struct pull_disks {
	int pulled;
	char sub[HOST_NAME_MAX_LEN + 32], partial[HOST_NAME_MAX_LEN + 48];
};

/* Export `name` from the store into `tmp`, its disks into a new
 * d->partial, manifest.json made this host's (naming d->sub); the
 * record's fields from shoald.json into r (r->disks too).  0, or -1 with
 * e (and nothing of d's left). */
static int pull_export(struct host *h, const char *name, const char *tmp,
		       struct snapshot_record *r, struct pull_disks *d, struct api_err *e)
{
	char path[PATH_MAX + 100], to[PATH_MAX + 100], why[300], moved[16][32];
	struct error err = { 0 };
	json_error_t je;
	struct store *s;
	json_t *man = NULL;
	char *text = NULL;
	int allow = -1, nd = -1, tfd = -1, n, rc = -1;
	FILE *f;

	d->pulled = -1;
	snprintf(d->sub, sizeof(d->sub), "%s-%lld", name, (long long)host_now_ms());
	snprintf(d->partial, sizeof(d->partial), ".partial-%s", d->sub);

	if (store_open(&s, h->store_dir, false, &err))
		return api_err_set(e, 500, "store_error", "store %s: %s", h->store_dir, err.msg);
	if (!store_snap_exists(s, name)) {
		store_close(s);
		return api_err_set(e, 404, "not_found", "snapshot %s: not in the store %s (push it "
				   "there, or pull it from the server)", name, h->store_dir);
	}
	rc = store_snap_export(s, name, tmp, &err);
	store_close(s);
	if (rc)
			return api_err_set(e, 500, "export_failed",
				   "snapshot %s: exporting it from the store %s: %s", name,
				   h->store_dir, err.msg);
	rc = -1;
	snprintf(path, sizeof(path), "%s/%s", tmp, HSTORE_META);
	f = fopen(path, "re");
	if (f) {
		text = calloc(1, 1 << 20);
		if (text && (fread(text, 1, (1 << 20) - 1, f) == 0 || ferror(f))) {
			free(text);
			text = NULL;
		}
		fclose(f);
	}
	if (!text || hstore_meta_parse(text, r, why, sizeof(why))) {
		api_err_set(e, 409, "not_a_daemon_snapshot", "snapshot %s: the store's object has no "
			    "usable %s (%s): push it with `shoal snapshot push`, not `shoal store "
			    "import-snapshot`", name, HSTORE_META, text ? why : strerror(errno));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/manifest.json", tmp);
	man = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	snprintf(to, sizeof(to), "%s/%s/%s", h->allow_dirs[0], HSTORE_DISKS, d->sub);
	n = man ? hstore_relocate(man, tmp, to, (const char *const *)h->allow_dirs, h->nallow_dirs,
				  moved, 16, why, sizeof(why)) : -1;
	if (n < 0) {
		api_err_set(e, 500, "export_failed", "snapshot %s: %s", name, man ? why : je.text);
		goto out;
	}
	if (n) {        /* the disks, beneath ALLOW0, no link followed */
		allow = open(h->allow_dirs[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		d->pulled = allow < 0 ? -1 : dir_beneath(allow, HSTORE_DISKS, true);
		if (d->pulled >= 0 && mkdirat(d->pulled, d->partial, 0711) == 0)
			nd = dir_beneath(d->pulled, d->partial, false);
		tfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (nd < 0 || tfd < 0) {
			api_err_set(e, 500, "internal", "snapshot %s: %s: %s", name, to, strerror(errno));
			goto out;
		}
		for (int i = 0; i < n; i++)
			if (renameat(tfd, moved[i], nd, moved[i]) < 0) {
				api_err_set(e, 500, "internal", "snapshot %s: moving its disk %s into %s: "
					    "%s%s", name, moved[i], to, strerror(errno), errno == EXDEV ?
					    " (the state directory and the first --allow-dir must be "
					    "one file system)" : "");
				goto out;
			}
	}
	free(text);
	text = json_dumps(man, JSON_INDENT(2));
	if (!text || write_in(tmp, "manifest.json", text, e))
		goto out;
	r->disks = disks_of(man);
	rc = 0;
out:
	if (rc && d->pulled >= 0) {
		rm_beneath(d->pulled, d->partial);
		close(d->pulled);
		d->pulled = -1;
	}
	if (tfd >= 0)
		close(tfd);
	if (nd >= 0)
		close(nd);
	if (allow >= 0)
		close(allow);
	json_decref(man);
	free(text);
	return rc;
}

int api_snapshot_pull(struct api_call *c)
{
	struct host *h = c->h;
	char from[16], tmp[PATH_MAX], dir[PATH_MAX], detail[200];
	struct store_pull_stats ps = { 0 };
	struct snapshot_record r = { 0 };
	struct pull_disks d = { .pulled = -1 };
	struct api_err e;
	bool server, fetched = false;
	int64_t id = 0;
	int rc;

	if (parse_body(c->body, c->body_len, "from", from, sizeof(from), &e))
		return api_reply_error(c, &e);
	if (from[0] && strcmp(from, "store") && strcmp(from, "server")) {
		api_err_set(&e, 400, "invalid_request", "from: \"store\" or \"server\"");
		return api_reply_error(c, &e);
	}
	server = !strcmp(from, "server");
	if (!h->store_dir) {
		api_err_set(&e, 409, "no_store", "snapshot %s: this daemon has no image store "
			    "(start shoald with --store DIR)", c->name);
		return api_reply_error(c, &e);
	}
	if (server && !h->opt.store_server) {
		api_err_set(&e, 409, "no_server", "snapshot %s: this daemon pulls from no server "
			    "(start shoald with --store-server URL --store-cert F --store-key F "
			    "--store-ca F)", c->name);
		return api_reply_error(c, &e);
	}
	pthread_mutex_lock(&h->lock);
	rc = taken_locked(h, c->name, &e);
	pthread_mutex_unlock(&h->lock);
	if (rc)
		return api_reply_error(c, &e);

	pthread_mutex_lock(&hstore_lock);
	snprintf(tmp, sizeof(tmp), "%s/.pull-%s-%d", h->snapshots_dir, c->name, (int)getpid());
	snprintf(dir, sizeof(dir), "%s/%s", h->snapshots_dir, c->name);
	host_rm_tree(tmp);
	rc = server ? pull_from_server(h, c->name, &ps, &fetched, &e) : 0;
	if (!rc)
		rc = pull_export(h, c->name, tmp, &r, &d, &e);
	if (!rc) {
		snprintf(r.name, sizeof(r.name), "%s", c->name);
		r.dir = strdup(dir);
		snprintf(detail, sizeof(detail), "{\"snapshot\": \"%s\", \"from\": \"%s\"}", c->name,
			 server ? "server" : "store");
		pthread_mutex_lock(&h->lock);
		rc = taken_locked(h, c->name, &e);      /* not taken meanwhile */
		if (!rc && d.pulled >= 0 && renameat(d.pulled, d.partial, d.pulled, d.sub) < 0)
			rc = api_err_set(&e, 500, "internal", "snapshot %s: %s/%s/%s: %s", c->name,
					 h->allow_dirs[0], HSTORE_DISKS, d.sub, strerror(errno));
		if (!rc) {
			host_rm_tree(dir);      /* a directory without a row: a leftover */
			if (!r.dir || rename(tmp, dir) < 0)
				rc = api_err_set(&e, 500, "internal", "snapshot %s: %s: %s", c->name,
						 dir, r.dir ? strerror(errno) : "out of memory");
		}
		if (!rc) {
			r.size_bytes = host_dir_size(dir);
			if (db_snapshot_insert(h->db, &r, "snapshot-pulled", detail, &id)) {
				rc = api_err_set(&e, 500, "internal", "snapshot %s: cannot write the "
						 "database", c->name);
				host_rm_tree(dir);
			} else {
				h->last_event_id = id;
				pthread_cond_broadcast(&h->event_cond);
			}
		}
		pthread_mutex_unlock(&h->lock);
		if (rc && d.pulled >= 0 && rm_beneath(d.pulled, d.sub) < 0 &&
		    rm_beneath(d.pulled, d.partial) < 0)
			log_warn("snapshot %s: removing %s/%s/%s again: %s", c->name,
				 h->allow_dirs[0], HSTORE_DISKS, d.sub, strerror(errno));
	}
	if (d.pulled >= 0)
		close(d.pulled);
	host_rm_tree(tmp);
	pthread_mutex_unlock(&hstore_lock);
	if (rc) {
		snapshot_record_free(&r);
		return api_reply_error(c, &e);
	}
	log_info("snapshot %s: pulled from the %s%s into %s (vm %s)", c->name,
		 server ? "server " : "store ", server ? h->opt.store_server : h->store_dir, dir,
		 r.vm);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I}", "name", c->name,
			      "vm", r.vm, "dir", dir, "from", server ? "server" : "store",
			      "fetched", fetched, "chunks", (json_int_t)ps.chunks,
			      "present_chunks", (json_int_t)ps.present,
			      "fetched_chunks", (json_int_t)ps.fetched,
			      "fetched_bytes", (json_int_t)ps.fetched_bytes);
	json_t *disks = json_loads(r.disks ? r.disks : "[]", 0, NULL);

	json_object_set_new(o, "disks", disks ? disks : json_array());
	snapshot_record_free(&r);
	return api_reply_json(c, 201, o);
}
