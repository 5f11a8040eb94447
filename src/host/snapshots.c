/*
 * snapshots.c - snapshots through the daemon: take one of a running VM,
 * restore one as a new VM or as N clones, delete one (docs/daemon.md,
 * "Snapshots").
 *
 * The VMM writes the snapshot itself (it holds the guest's memory): the
 * daemon sends its control socket {"cmd": "snapshot", "dir": DIR} with DIR
 * = STATE_DIR/snapshots/SNAP, a directory of the daemon's that no client
 * names, and records the result in the snapshots table (db.c) with a
 * "snapshotted" event, in one transaction.  The VM goes on running.  A
 * live one ("live": true) is answered once the guest runs again; the
 * daemon then polls "snapshot-status" until the memory is written, and
 * records the snapshot only then (the VM stays claimed meanwhile).
 *
 * A restore is a create and a start: the new VM's spec is the snapshot's
 * manifest "config" (the daemon's own keys taken out: "confine", and
 * console files turned back into names in the new VM's directory), checked
 * like any spec; its record names the snapshot (vms.snapshot) and the
 * generation whose VMM comes from it (vms.snapshot_gen), and the
 * supervisor starts that generation with `shoal run --restore DIR`.  A
 * later start (after the VM stopped or exited, a restart policy's
 * included) boots the VM fresh from its config, as a reboot would: the
 * snapshot is an instant, not a disk.  A restore whose start fails leaves
 * no VM behind.
 *
 * A clone is a restore with `--clone` (vms.snapshot_clone): its memory
 * is the snapshot's memory file mapped copy-on-write, so the snapshot is
 * in use while its VMM runs, as for a restore.  `shoal vm clone` makes N
 * of them, PREFIX-1..PREFIX-N: every name is checked free and every
 * record inserted under one hold of the lock before any starts, and if
 * one fails to start, all N go again (stopped and deleted), so a clone
 * request leaves all of its VMs or none.
 *
 * Disks (docs/snapshots.md, "Disks"): a snapshot moves each writable disk
 * of the VM onto a new qcow2 overlay beside it (state/snapshot_disk.c),
 * whose backing file, the disk of the snapshot instant, is then frozen.
 * The daemon follows: once the VMM has answered, it asks the VMM's status
 * which file each disk now is, and the VM's spec names that overlay, in
 * the same transaction as the snapshot's row (db_snapshot_insert_vm), so
 * a later start boots on the VM's newest writes, never on the frozen
 * parent.  A restore or clone of a snapshot with a writable disk writes an
 * overlay of its own, which its VMM makes beside the parent (a file
 * beneath the same --allow-dir, where the spec checks and the VMM's
 * confinement allow it): its spec names the parent read-only until the
 * daemon has read the overlay's name from the VMM, and then the overlay
 * (writable).  Every overlay the daemon had made for a VM is in its
 * record (vms.overlays: path, the snapshot it is on, and whether a
 * snapshot or a restore made it); a VM whose restore made an overlay on
 * a snapshot's parent keeps that snapshot in use for as long as the VM
 * exists (host_snapshot_users_locked), and deleting the VM removes its
 * overlays but those a snapshot still records as its parent
 * (host_vm_overlays_remove_locked).  The snapshot's row records the files
 * it depends on (snapshots.disks).  A jailed VMM cannot reach the
 * directory beside its disk once it runs, so a jailed VM with a writable
 * disk is not snapshotted (409, saying so).
 *
 * Host resources: a restored VM or clone gets its own vsock socket,
 * NEW.vsock beside the snapshot VM's (beneath the same --allow-dir), and
 * the TAPs the request names ("taps", or "tap_prefix" for clones), given
 * to its VMM as --vsock-socket and --tap (host_snapshot_restore_args,
 * called by the supervisor) and kept in its spec for later starts.  A
 * clone's new MAC and vsock CID are followed into its spec like its disk.
 *
 * Locking (host.h): a snapshot being taken is in h->snap_pending under
 * the lock, which reserves its name; the VM is claimed ("snapshot") so
 * that no other operation runs on it meanwhile.  Delete looks for users
 * under the lock, and a restore re-checks that its snapshot still exists
 * under the lock as it adds the new VM, so a delete and a restore of one
 * snapshot never both succeed.
 */
#include "host/host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "host/net.h"
#include "host/spec.h"
#include "host/vmctl.h"
#include "state/snapshot_disk.h"

#define SNAPSHOT_TIMEOUT_MS 600000      /* the VMM writes all of guest RAM */
#define SNAPSHOT_POLL_MS 50             /* snapshot-status while a live one writes */

/* Does the overlays list (vms.overlays) have one on snapshot `snap` made
 * by `by` ("restore" or "snapshot")? */
static bool overlays_on(const char *overlays, const char *snap, const char *by)
{
	json_t *a = overlays ? json_loads(overlays, 0, NULL) : NULL, *o;
	bool found = false;
	size_t i;

	json_array_foreach(a, i, o)
		if (!strcmp(json_string_value(json_object_get(o, "on")) ?: "", snap) &&
		    !strcmp(json_string_value(json_object_get(o, "by")) ?: "", by))
			found = true;
	json_decref(a);
	return found;
}

bool hvm_restored_now(const struct hvm *vm)
{
	return vm->rec.snapshot[0] && vm->rec.generation == vm->rec.snapshot_gen;
}

bool hvm_uses_snapshot(const struct hvm *vm, const char *snap)
{
	enum hvm_state s = vm->state;
	bool live = s == HVM_STARTING || s == HVM_RUNNING || s == HVM_PAUSED || s == HVM_STOPPING;
	bool restoring = vm->busy && !strcmp(vm->busy, "restoring");

	return !strcmp(vm->rec.snapshot, snap) &&
	       (restoring || (live && hvm_restored_now(vm)) ||
		overlays_on(vm->rec.overlays, snap, "restore"));
}

size_t host_snapshot_users_locked(struct host *h, const char *snap, char *buf, size_t size)
{
	size_t n = 0, len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < h->nvms; i++) {
		struct hvm *vm = h->vms[i];
		bool restoring = vm->busy && !strcmp(vm->busy, "restoring");

		if (!hvm_uses_snapshot(vm, snap))
			continue;
		if (len < size)
			len += (size_t)snprintf(buf + len, size - len, "%s%s (%s%s%s)", n ? ", " : "",
						vm->rec.name, vm->rec.snapshot_clone ? "clone, " : "",
						restoring ? "restoring" : hvm_state_name(vm->state),
						overlays_on(vm->rec.overlays, snap, "restore") ?
						", its disk overlay is on the snapshot's" : "");
		n++;
	}
	return n;
}

/* ---- the pending list: names of snapshots being taken ---- */

static bool snap_pending_locked(struct host *h, const char *name)
{
	for (size_t i = 0; i < h->nsnap_pending; i++)
		if (!strcmp(h->snap_pending[i], name))
			return true;
	return false;
}

static int snap_pending_add_locked(struct host *h, char *name)
{
	char **t = realloc(h->snap_pending, (h->nsnap_pending + 1) * sizeof(*t));

	if (!t)
		return -1;
	h->snap_pending = t;
	h->snap_pending[h->nsnap_pending++] = name;
	return 0;
}

static void snap_pending_remove_locked(struct host *h, const char *name)
{
	for (size_t i = 0; i < h->nsnap_pending; i++)
		if (h->snap_pending[i] == name) {
			h->snap_pending[i] = h->snap_pending[--h->nsnap_pending];
			return;
		}
}

/* Is `name` taken (a recorded snapshot, or one being taken)?  Lock held. */
static int snap_taken_locked(struct host *h, const char *name, struct api_err *e)
{
	struct snapshot_record r;
	int rc;

	if (snap_pending_locked(h, name))
		return api_err_set(e, 409, "name_taken", "snapshot %s: already exists (being taken)",
				   name);
	rc = db_snapshot_get(h->db, name, &r);
	if (rc == 0) {
		snapshot_record_free(&r);
		return api_err_set(e, 409, "name_taken", "snapshot %s: already exists", name);
	}
	if (rc != -ENOENT)
		return api_err_set(e, 500, "internal", "snapshot %s: cannot read the store", name);
	return 0;
}

/* ---- taking one ---- */

/* The spec's virtio console writes to a file in the VM's directory, which
 * `shoal run --restore` cannot move to the new VM's: refused for now. */
static bool spec_has_vconsole_file(const char *spec)
{
	json_t *j = json_loads(spec ? spec : "{}", 0, NULL);
	const char *v = json_string_value(json_object_get(j, "virtio_console"));
	bool file = v && !strncmp(v, "file:", 5);

	json_decref(j);
	return file;
}

/* The path of the spec's first writable disk (malloc'd), or NULL, and
 * into *count how many it has.  A snapshot moves such a disk onto a new
 * overlay beside it, which a jailed VMM (its root a bare tmpfs) cannot
 * reach: shoald makes that file for it. */
static char *spec_writable_disk(const char *spec, int *count)
{
	json_t *j = json_loads(spec ? spec : "{}", 0, NULL), *d;
	char *path = NULL;
	size_t i;

	*count = 0;
	json_array_foreach(json_object_get(j, "disks"), i, d) {
		if (json_is_true(json_object_get(d, "readonly")) || json_is_true(json_object_get(d, "ro")))
			continue;
		if (!path)
			path = strdup(json_string_value(json_object_get(d, "path")) ?: "?");
		(*count)++;
	}
	json_decref(j);
	return path;
}

/* Does the VMM config `cfg` name `path` as a disk? */
static bool cfg_has_disk(json_t *cfg, const char *path)
{
	json_t *d;
	size_t i;

	json_array_foreach(json_object_get(cfg, "disks"), i, d)
		if (!strcmp(json_string_value(json_object_get(d, "path")) ?: "", path))
			return true;
	return false;
}

/* ---- following a VM's disks (and a clone's identity) ---- */

/* The "config" of VM `name`'s VMM, from its control socket's status (a
 * new reference), or NULL with a 500 in `e`. */
static json_t *snap_vmm_config(struct host *h, const char *name, struct api_err *e)
{
	char sock[4200], err[512];
	struct vmctl c;
	json_t *req, *reply = NULL, *cfg;
	int rc;

	host_vm_path(h, name, "control.sock", sock, sizeof(sock));
	if (vmctl_connect(&c, sock, 2000, err, sizeof(err)) < 0) {
		api_err_set(e, 500, "vmm_error", "vm \"%s\": reading its disks from its VMM: %s",
			    name, err);
		return NULL;
	}
	req = json_pack("{s:s}", "cmd", "status");
	rc = vmctl_request(&c, req, &reply, 10000, err, sizeof(err));
	json_decref(req);
	vmctl_close(&c);
	cfg = rc ? NULL : json_object_get(reply, "config");
	if (!json_is_object(cfg)) {
		api_err_set(e, 500, "vmm_error", "vm \"%s\": reading its disks from its VMM: %s",
			    name, rc ? err : "its status has no \"config\"");
		json_decref(reply);
		return NULL;
	}
	json_incref(cfg);
	json_decref(reply);
	return cfg;
}

/* Is `now` an overlay a snapshot or restore `snap` made on disk `was`:
 * STEM-SNAP.qcow2 or STEM-SNAP-rPID[-N].qcow2, STEM `was`'s name without
 * .qcow2, .img or .raw (state/snapshot_disk.c)?  Anything else is not
 * the daemon's to record, nor to remove with the VM. */
static bool overlay_of(const char *was, const char *now, const char *snap)
{
	static const char *const exts[] = { ".qcow2", ".img", ".raw" };
	const char *b = strrchr(was, '/'), *nb = strrchr(now, '/');
	size_t n, k, sl = strlen(snap), nl;

	b = b ? b + 1 : was;
	nb = nb ? nb + 1 : now;
	n = strlen(b);
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
		if (n > (k = strlen(exts[i])) && !strcmp(b + n - k, exts[i])) {
			n -= k;
			break;
		}
	nl = strlen(nb);
	return nl >= n + 1 + sl + 6 && !strncmp(nb, b, n) && nb[n] == '-' &&
	       !strncmp(nb + n + 1, snap, sl) && (nb[n + 1 + sl] == '.' || nb[n + 1 + sl] == '-') &&
	       !strcmp(nb + nl - 6, ".qcow2");
}

/* The spec and overlays list (vms.overlays) of a VM once it follows its
 * VMM's `cfg`: a disk whose file the VMM changed (a snapshot's switch, a
 * restore's new overlay) is named by the new path, writable (a restore's
 * spec named the parent read-only until now), and listed as an overlay
 * {"path", "on": snap, "by": by}; with `identity`, the cards' MACs and the
 * vsock CID are the VMM's too (a clone's new ones).  *spec_out and
 * *ov_out malloc'd, or both NULL when nothing changed.  0, or -1 (out of
 * memory). */
static int snap_follow(const char *spec, const char *overlays, json_t *cfg, const char *snap,
		       const char *by, bool identity, char **spec_out, char **ov_out)
{
	json_t *js = json_loads(spec ? spec : "{}", 0, NULL);
	json_t *ov = overlays ? json_loads(overlays, 0, NULL) : NULL;
	json_t *d, *vd, *n, *vn;
	bool changed = false;
	size_t i;
	int rc = 0;

	*spec_out = *ov_out = NULL;
	if (!json_is_array(ov)) {
		json_decref(ov);
		ov = json_array();
	}
	json_array_foreach(json_object_get(js, "disks"), i, d) {
		const char *was = json_string_value(json_object_get(d, "path"));
		const char *now;

		vd = json_array_get(json_object_get(cfg, "disks"), i);
		now = json_string_value(json_object_get(vd, "path"));
		if (!was || !now || !strcmp(was, now) || json_is_true(json_object_get(vd, "readonly")) ||
		    !overlay_of(was, now, snap))
			continue;
		json_array_append_new(ov, json_pack("{s:s, s:s, s:s}", "path", now, "on", snap,
						    "by", by));
		json_object_set_new(d, "path", json_string(now));
		json_object_del(d, "ro");
		json_object_set_new(d, "readonly", json_false());
		changed = true;
	}
	json_array_foreach(identity ? json_object_get(js, "nets") : NULL, i, n) {
		vn = json_object_get(json_array_get(json_object_get(cfg, "nets"), i), "mac");
		if (json_is_string(vn) && !json_equal(vn, json_object_get(n, "mac"))) {
			json_object_set(n, "mac", vn);
			changed = true;
		}
	}
	n = json_object_get(js, "vsock");
	vn = json_object_get(json_object_get(cfg, "vsock"), "cid");
	if (identity && json_is_object(n) && json_is_integer(vn) &&
	    !json_equal(vn, json_object_get(n, "cid"))) {
		json_object_set(n, "cid", vn);
		changed = true;
	}
	if (changed) {
		*spec_out = json_dumps(js, JSON_COMPACT | JSON_PRESERVE_ORDER);
		*ov_out = json_array_size(ov) ? json_dumps(ov, JSON_COMPACT) : NULL;
		if (!*spec_out || (json_array_size(ov) && !*ov_out)) {
			free(*spec_out);
			free(*ov_out);
			*spec_out = *ov_out = NULL;
			rc = -1;
		}
	}
	json_decref(js);
	json_decref(ov);
	return rc;
}

/* Swap a followed spec and overlays list into `vm`'s record (lock held);
 * the old ones are freed. */
static void snap_follow_set_locked(struct hvm *vm, char *spec, char *overlays)
{
	free(vm->rec.spec);
	free(vm->rec.overlays);
	vm->rec.spec = spec;
	vm->rec.overlays = overlays;
}

/* A restored VM or clone, its VMM just started: its spec follows the
 * VMM's disks (its own overlays) and identity, persisted.  0, or -1 with e. */
static int snap_follow_restored(struct host *h, struct hvm *vm, const char *snap,
				struct api_err *e)
{
	char *spec = NULL, *ov = NULL;
	json_t *cfg = snap_vmm_config(h, vm->rec.name, e);
	int rc;

	if (!cfg)
		return -1;
	pthread_mutex_lock(&h->lock);
	rc = snap_follow(vm->rec.spec, vm->rec.overlays, cfg, snap, "restore", true, &spec, &ov);
	if (rc) {
		api_err_set(e, 500, "internal", "out of memory");
	} else if (spec) {
		snap_follow_set_locked(vm, spec, ov);
		if (host_persist_locked(h, vm, NULL, NULL))
			rc = api_err_set(e, 500, "internal", "vm \"%s\": cannot write the store",
					 vm->rec.name);
	}
	pthread_mutex_unlock(&h->lock);
	json_decref(cfg);
	return rc;
}

/* Is `path` a file snapshot `r` depends on (its "disks")? */
static bool snap_depends_on(const struct snapshot_record *r, const char *path)
{
	json_t *a = r->disks ? json_loads(r->disks, 0, NULL) : NULL, *o;
	bool found = false;
	size_t i;

	json_array_foreach(a, i, o)
		if (!strcmp(json_string_value(json_object_get(o, "path")) ?: "", path))
			found = true;
	json_decref(a);
	return found;
}

struct snap_needs {
	const char *path;
	char snap[HOST_NAME_MAX_LEN + 1];       /* the first snapshot that does */
};

static void snap_needs_one(void *arg, struct snapshot_record *r)
{
	struct snap_needs *n = arg;

	if (!n->snap[0] && snap_depends_on(r, n->path))
		snprintf(n->snap, sizeof(n->snap), "%s", r->name);
	snapshot_record_free(r);
}

void host_vm_overlays_remove_locked(struct host *h, const struct hvm *vm)
{
	json_t *a = vm->rec.overlays ? json_loads(vm->rec.overlays, 0, NULL) : NULL, *o;
	size_t i;

	json_array_foreach(a, i, o) {
		struct snap_needs n = { .path = json_string_value(json_object_get(o, "path")) };

		if (!n.path)
			continue;
		if (db_snapshot_load_all(h->db, snap_needs_one, &n) < 0 || n.snap[0]) {
			log_info("vm \"%s\": disk overlay %s kept: snapshot %s records it as its "
				 "disk", vm->rec.name, n.path, n.snap[0] ? n.snap : "(store unreadable)");
			continue;
		}
		if (unlink(n.path) < 0 && errno != ENOENT)
			log_warn("vm \"%s\": removing its disk overlay %s: %s", vm->rec.name, n.path,
				 strerror(errno));
	}
	json_decref(a);
}

/* The files snapshot `dir` depends on, from its manifest's "disks": a
 * JSON array of {"path", "writable"} as text (malloc'd), or NULL. */
static char *snap_disks_of(const char *dir)
{
	char path[4500], *text;
	json_t *m, *out = json_array(), *d;
	size_t i;

	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	m = json_load_file(path, 0, NULL);
	json_array_foreach(json_object_get(m, "disks"), i, d)
		json_array_append_new(out, json_pack("{s:s, s:b}", "path",
			json_string_value(json_object_get(d, "path")) ?: "", "writable",
			json_is_true(json_object_get(d, "writable"))));
	json_decref(m);
	text = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	return text;
}

int host_snapshot_restore_args(const char *vm, const char *spec, char **argv, int max, char *buf,
			       size_t size)
{
	json_t *js = json_loads(spec ? spec : "{}", 0, NULL), *n;
	const char *vs = json_string_value(json_object_get(json_object_get(js, "vsock"), "socket"));
	size_t len = 0, i;
	int argc = 0;

	if (vs && argc < max && len < size) {
		argv[argc++] = buf + len;
		len += (size_t)snprintf(buf + len, size - len, "--vsock-socket=%s", vs) + 1;
	}
	/* the memory layer's switches: a restore reads no config.json */
	if (json_is_integer(n = json_object_get(js, "zero_scan")) && argc < max && len < size) {
		argv[argc++] = buf + len;
		len += (size_t)snprintf(buf + len, size - len, "--zero-scan=%lld",
					(long long)json_integer_value(n)) + 1;
	}
	if (json_is_true(json_object_get(js, "mem_recovery")) && argc < max && len < size) {
		argv[argc++] = buf + len;
		len += (size_t)snprintf(buf + len, size - len, "--mem-recovery") + 1;
	}
	json_array_foreach(json_object_get(js, "nets"), i, n) {
		const char *tap = json_string_value(json_object_get(n, "tap"));
		char own[16];

		if (!tap && json_is_string(json_object_get(n, "network"))) {
			net_tap_name(vm, (int)i, own);  /* made for it at this start (net.c) */
			tap = own;
		}
		if (!tap)
			break;          /* --tap goes to the cards in order */
		if (argc == max || len >= size) {
			argc = -1;
			break;
		}
		argv[argc++] = buf + len;
		len += (size_t)snprintf(buf + len, size - len, "--tap=%s", tap) + 1;
	}
	json_decref(js);
	return len > size ? -1 : argc;
}

/* The default name: VM-YYYYmmdd-HHMMSS (UTC), the VM's name cut to fit,
 * and -2, -3, ... after it if two are taken in one second.  Lock held. */
static int snap_default_name_locked(struct host *h, const char *vm, char *out,
				    struct api_err *e)
{
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	for (int n = 1; n < 100; n++) {
		char suffix[8] = "";
		struct api_err ignore;

		if (n > 1)
			snprintf(suffix, sizeof(suffix), "-%d", n);
		snprintf(out, HOST_NAME_MAX_LEN + 1, "%.*s-%s%s",
			 (int)(HOST_NAME_MAX_LEN - 1 - strlen(stamp) - strlen(suffix)), vm, stamp,
			 suffix);
		if (!snap_taken_locked(h, out, &ignore))
			return 0;
	}
	return api_err_set(e, 409, "name_taken", "vm \"%s\": no free default snapshot name; "
			   "give one", vm);
}

/* A live snapshot's memory is being written: poll "snapshot-status" until
 * it is done (its figures, with the live reply's pause_ms, replace *reply)
 * or failed (-EPROTO, the VMM's words in err). */
static int snap_vmm_wait_live(struct vmctl *c, json_t **reply, char *err, size_t errlen)
{
	double pause_ms = json_number_value(json_object_get(*reply, "pause_ms"));
	json_t *req = json_pack("{s:s}", "cmd", "snapshot-status"), *st = NULL;
	int64_t deadline = host_now_ms() + SNAPSHOT_TIMEOUT_MS;
	const char *state = NULL;
	int rc;

	for (;;) {
		json_decref(st);
		st = NULL;
		rc = vmctl_request(c, req, &st, 10000, err, errlen);
		state = rc ? NULL : json_string_value(json_object_get(st, "state"));
		if (rc || !state || strcmp(state, "writing"))
			break;
		if (host_now_ms() > deadline) {
			snprintf(err, errlen, "live snapshot: memory not written after %d s",
				 SNAPSHOT_TIMEOUT_MS / 1000);
			rc = -ETIMEDOUT;
			break;
		}
		usleep(SNAPSHOT_POLL_MS * 1000);
	}
	json_decref(req);
	if (!rc && strcmp(state ?: "", "done")) {
		snprintf(err, errlen, "%s", json_string_value(json_object_get(st, "error")) ?:
			 "live snapshot: no longer in progress");
		rc = -EPROTO;
	}
	if (rc) {
		json_decref(st);
		return rc;
	}
	json_object_set_new(st, "pause_ms", json_real(pause_ms));
	json_decref(*reply);
	*reply = st;
	return 0;
}

/* Send the VMM the snapshot command; its reply in *reply (live: once
 * the memory is written). */
/* ovfd >= 0: the overlay file made for a jailed VMM's writable disk, sent
 * with the request, which names it `ovpath`. */
static int snap_vmm_save(struct host *h, const char *vmname, const char *dir, bool live,
			 int ovfd, const char *ovpath, json_t **reply, struct api_err *e)
{
	char sock[4200], err[512];
	struct vmctl c;
	json_t *req;
	int rc;

	host_vm_path(h, vmname, "control.sock", sock, sizeof(sock));
	if (vmctl_connect(&c, sock, 2000, err, sizeof(err)) < 0)
		return api_err_set(e, 500, "vmm_error", "vm \"%s\": snapshot: %s", vmname, err);
	req = json_pack("{s:s, s:s, s:b}", "cmd", "snapshot", "dir", dir, "live", live);
	if (ovfd >= 0)
		json_object_set_new(req, "overlay", json_string(ovpath));
	rc = ovfd >= 0 ? vmctl_request_fd(&c, req, ovfd, reply, SNAPSHOT_TIMEOUT_MS, err, sizeof(err)) :
			 vmctl_request(&c, req, reply, SNAPSHOT_TIMEOUT_MS, err, sizeof(err));
	json_decref(req);
	if (!rc && live)
		rc = snap_vmm_wait_live(&c, reply, err, sizeof(err));
	vmctl_close(&c);
	if (rc == -EPROTO)        /* the VMM refused or failed: its words */
		return api_err_set(e, 409, "snapshot_failed", "vm \"%s\": snapshot: %s", vmname, err);
	if (rc)
		return api_err_set(e, 500, "vmm_error", "vm \"%s\": snapshot: %s", vmname, err);
	return 0;
}

int host_vm_snapshot(struct host *h, const char *name, const char *snap, bool live,
		     char *out_name, struct api_err *e)
{
	struct snapshot_record r = { 0 };
	char *pending = NULL, *wdisk = NULL, dir[4400], stage[4400], detail[256];
	char *overlays = NULL, *new_spec = NULL, *new_ov = NULL, *ovpath = NULL;
	struct hvm *vm = host_get(h, name, e);
	json_t *reply = NULL, *cfg = NULL;
	bool follow = false, ov_used = false;
	int64_t id = 0;
	int rc, nwd = 0, ovfd = -1;

	if (!vm)
		return -1;
	if (snap && !host_name_valid(snap)) {
		host_put(h, vm);
		return api_err_set(e, 400, "invalid_request", "snapshot name \"%.80s\": 1 to 63 "
				   "letters, digits, '.', '_' or '-', not starting with one of the last three",
				   snap);
	}
	pthread_mutex_lock(&h->lock);
	if (vm->state != HVM_RUNNING && vm->state != HVM_PAUSED && !vm->busy && !vm->deleted) {
		rc = api_err_set(e, 409, "wrong_state", "vm \"%s\" is %s: cannot snapshot it "
				 "(a snapshot saves a running or paused VM)", name,
				 hvm_state_name(vm->state));
	} else if (h->jail && (wdisk = spec_writable_disk(vm->rec.spec, &nwd)) && nwd > 1) {
		rc = api_err_set(e, 409, "snapshot_failed", "vm \"%s\": it has %d writable disks "
				 "and its VMM is jailed: shoald makes the new overlay beside one "
				 "writable disk only for a jailed VMM, which cannot reach the "
				 "directories of its disks (run shoald --jail off, or make all disks "
				 "but one readonly)", name, nwd);
	} else if (spec_has_vconsole_file(vm->rec.spec)) {
		rc = api_err_set(e, 409, "snapshot_failed", "vm \"%s\": its virtio console writes "
				 "to a file in its directory, which a restored VM cannot take over yet",
				 name);
	} else {
		rc = hvm_claim_locked(vm, "snapshot", 1u << HVM_RUNNING | 1u << HVM_PAUSED, e);
	}
	if (!rc) {
		if (snap) {
			snprintf(r.name, sizeof(r.name), "%s", snap);
			rc = snap_taken_locked(h, r.name, e);
		} else {
			rc = snap_default_name_locked(h, name, r.name, e);
		}
		if (!rc && (!(pending = strdup(r.name)) || snap_pending_add_locked(h, pending))) {
			free(pending);
			pending = NULL;
			rc = api_err_set(e, 500, "internal", "out of memory");
		}
		if (rc)
			vm->busy = NULL;
	}
	if (!rc) {
		snprintf(r.vm, sizeof(r.vm), "%s", name);
		r.spec = vm->rec.spec ? strdup(vm->rec.spec) : NULL;
		r.vcpus = vm->cpus;
		overlays = vm->rec.overlays ? strdup(vm->rec.overlays) : NULL;
		free(wdisk);
		follow = (wdisk = spec_writable_disk(vm->rec.spec, &nwd)) != NULL;
	}
	pthread_mutex_unlock(&h->lock);
	if (!rc && h->jail && follow) {
		/* the jailed VMM cannot make it: the file is made here, empty,
		 * and sent open with the request (state/snapshot_disk.h) */
		ovpath = snap_disk_overlay_path(wdisk, r.name);
		if (!ovpath)
			rc = api_err_set(e, 409, "snapshot_failed", "vm \"%s\": its disk %.200s is "
					 "not an absolute path", name, wdisk);
		else if ((ovfd = open(ovpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
			rc = api_err_set(e, errno == EEXIST ? 409 : 500, errno == EEXIST ?
					 "snapshot_failed" : "internal", "vm \"%s\": snapshot %s: its "
					 "disk's new overlay %.200s: %s", name, r.name, ovpath,
					 errno == EEXIST ? "already exists (name the snapshot "
					 "differently)" : strerror(errno));
		if (rc) {       /* the name and the VM are claimed: give them back */
			pthread_mutex_lock(&h->lock);
			snap_pending_remove_locked(h, pending);
			pthread_mutex_unlock(&h->lock);
			free(pending);
			free(overlays);
			free(ovpath);
			free(wdisk);
			snapshot_record_free(&r);
			hvm_release(h, vm);
			return -1;
		}
	}
	free(wdisk);
	if (rc) {
		host_put(h, vm);
		return -1;
	}

	/* the name is ours: a directory without a row is a leftover (a daemon
	 * that died between the VMM's rename and the insert) */
	snprintf(dir, sizeof(dir), "%s/%s", h->snapshots_dir, r.name);
	host_rm_tree(dir);
	if (h->jail) {  /* a jailed VMM writes only in VMDIR/snap (supervisor.c) */
		host_vm_path(h, name, "snap", stage, sizeof(stage));
		mkdir(stage, 0700);             /* there already when the VMM is jailed */
		snprintf(stage + strlen(stage), sizeof(stage) - strlen(stage), "/%s", r.name);
		host_rm_tree(stage);
	}
	r.created_ms = host_now_ms();
	rc = r.spec ? snap_vmm_save(h, name, h->jail ? stage : dir, live, ovfd, ovpath, &reply, e) :
		      api_err_set(e, 500, "internal", "out of memory");
	if (!rc && h->jail && rename(stage, dir) < 0)
		rc = api_err_set(e, 500, "internal", "snapshot %s: moving %s to %s: %s", r.name,
				 stage, dir, strerror(errno));
	if (follow) {   /* the VMM moved (or, failing part way, may have moved) its disks */
		struct api_err fe;

		cfg = snap_vmm_config(h, name, rc ? &fe : e);
		if (!cfg && !rc)
			rc = -1;
		ov_used = cfg && ovpath && cfg_has_disk(cfg, ovpath);
		if (cfg && snap_follow(r.spec, overlays, cfg, r.name, "snapshot", false, &new_spec,
				       &new_ov) && !rc)
			rc = api_err_set(e, 500, "internal", "out of memory");
		json_decref(cfg);
	}
	if (!rc) {
		r.dir = strdup(dir);
		r.disks = snap_disks_of(dir);
		r.size_bytes = host_dir_size(dir);
		r.memory_bytes = json_integer_value(json_object_get(reply, "memory_bytes"));
		r.memory_data_bytes = json_integer_value(json_object_get(reply, "memory_data_bytes"));
		r.pause_ms = json_number_value(json_object_get(reply, "pause_ms"));
		r.total_ms = json_number_value(json_object_get(reply, "total_ms"));
		snprintf(detail, sizeof(detail), "{\"snapshot\": \"%s\", \"pause_ms\": %.3f, "
			 "\"size_bytes\": %lld, \"live\": %s}", r.name, r.pause_ms,
			 (long long)r.size_bytes, live ? "true" : "false");
	}
	json_decref(reply);

	pthread_mutex_lock(&h->lock);
	if (!rc) {
		struct vm_record nr = { 0 };
		int d = !r.dir ? -ENOMEM : new_spec ? vm_record_copy(&nr, &vm->rec) : 0;

		if (!d && new_spec) {   /* the record names the overlays, with the snapshot */
			free(nr.spec);
			free(nr.overlays);
			nr.spec = new_spec;
			nr.overlays = new_ov;
		}
		if (!d)
			d = db_snapshot_insert_vm(h->db, &r, new_spec ? &nr : NULL, "snapshotted",
						  detail, &id);
		if (d) {
			rc = api_err_set(e, 500, "internal", "snapshot %s: cannot write the store", r.name);
			if (new_spec && nr.spec == new_spec) {
				vm_record_free(&nr);
				new_spec = new_ov = NULL;
			}
		} else {
			if (new_spec) {
				snap_follow_set_locked(vm, new_spec, new_ov);
				nr.spec = nr.overlays = NULL;
				vm_record_free(&nr);
			}
			new_spec = new_ov = NULL;
			h->last_event_id = id;
			pthread_cond_broadcast(&h->event_cond);
		}
	} else if (new_spec) {  /* failed part way, some disks switched: follow them */
		snap_follow_set_locked(vm, new_spec, new_ov);
		new_spec = new_ov = NULL;
		host_persist_locked(h, vm, NULL, NULL);
	}
	snap_pending_remove_locked(h, pending);
	pthread_mutex_unlock(&h->lock);
	if (rc) {
		host_rm_tree(dir);      /* a VMM that failed leaves none; a store that failed, ours */
		if (h->jail)
			host_rm_tree(stage);
		if (ovpath && !ov_used) /* made here, and the VM does not write it */
			unlink(ovpath);
	} else {
		snprintf(out_name, HOST_NAME_MAX_LEN + 1, "%s", r.name);
	}
	if (ovfd >= 0)
		close(ovfd);
	free(ovpath);
	free(pending);
	free(overlays);
	free(new_spec);
	free(new_ov);
	snapshot_record_free(&r);
	hvm_release(h, vm);
	return rc ? -1 : 0;
}

/* ---- restoring one ---- */

/* A "file:PATH" console value as "file:BASENAME" (the VM's directory is
 * the daemon's to place); the virtio console's ",in=PATH" is kept. */
static void spec_console_to_name(json_t *spec, const char *key)
{
	const char *v = json_string_value(json_object_get(spec, key));
	const char *in, *base;
	char buf[8400], file[4200];
	size_t len;

	if (!v || strncmp(v, "file:", 5))
		return;
	in = strstr(v, ",in=");
	len = in ? (size_t)(in - (v + 5)) : strlen(v + 5);
	snprintf(file, sizeof(file), "%.*s", (int)len, v + 5);
	base = strrchr(file, '/');
	snprintf(buf, sizeof(buf), "file:%s%s", base ? base + 1 : file, in ? in : "");
	json_object_set_new(spec, key, json_string(buf));
}

/* A restored VM's own host resources in its spec `cfg`: a vsock socket
 * NEW.vsock beside the snapshot VM's (beneath the same allowed directory),
 * and TAPs taps[0..ntaps) for its first cards.  0, or -1 with a 400. */
static int snap_own_resources(json_t *cfg, const char *snap, const char *new_name,
			      char (*taps)[HOST_TAP_NAME_MAX + 1], size_t ntaps, struct api_err *e)
{
	json_t *vsock = json_object_get(cfg, "vsock"), *nets = json_object_get(cfg, "nets");
	const char *sock = json_string_value(json_object_get(vsock, "socket"));
	size_t nnets = json_array_size(nets);

	if (sock) {
		const char *slash = strrchr(sock, '/');
		char path[4200];

		if (!slash || snprintf(path, sizeof(path), "%.*s/%s.vsock", (int)(slash - sock), sock,
				       new_name) >= 108)
			return api_err_set(e, 400, "invalid_request", "vm \"%s\": its vsock socket "
					   "beside snapshot %s's (%.200s) would be longer than a Unix "
					   "socket path may be; choose a shorter name", new_name, snap, sock);
		json_object_set_new(vsock, "socket", json_string(path));
	}
	if (ntaps > nnets)
		return api_err_set(e, 400, "invalid_request", "taps: %zu given for vm \"%s\", but "
				   "snapshot %s's VM has %zu network card%s", ntaps, new_name, snap,
				   nnets, nnets == 1 ? "" : "s");
	for (size_t i = 0; i < ntaps; i++)
		json_object_set_new(json_array_get(nets, i), "tap", json_string(taps[i]));
	return 0;
}

/* The new VM's spec from the snapshot's manifest: malloc'd JSON text.
 * Its writable disks are named read-only until its VMM has made its own
 * overlays on them (snap_follow_restored): the parent is the snapshot's
 * frozen disk, which no start may write. */
static char *snap_restore_spec(const struct snapshot_record *sr, const char *new_name,
			       char (*taps)[HOST_TAP_NAME_MAX + 1], size_t ntaps,
			       struct api_err *e)
{
	json_t *d;
	size_t i;
	char path[4400];
	json_error_t jerr;
	json_t *m, *cfg, *parent;
	const char *restart;
	char *text = NULL;

	snprintf(path, sizeof(path), "%s/manifest.json", sr->dir);
	m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	cfg = json_object_get(m, "config");
	if (!json_is_object(cfg)) {
		api_err_set(e, 500, "internal", "snapshot %s: %s: %s", sr->name, path,
			    m ? "no \"config\" object" : jerr.text);
		json_decref(m);
		return NULL;
	}
	cfg = json_deep_copy(cfg);
	json_decref(m);
	parent = json_loads(sr->spec ? sr->spec : "{}", 0, NULL);
	restart = json_string_value(json_object_get(parent, "restart"));
	json_object_del(cfg, "confine");
	spec_console_to_name(cfg, "console");
	spec_console_to_name(cfg, "virtio_console");
	json_object_set_new(cfg, "name", json_string(new_name));
	json_object_set_new(cfg, "restart", json_string(restart ? restart : "no"));
	json_array_foreach(json_object_get(cfg, "disks"), i, d) {
		json_object_del(d, "ro");
		json_object_set_new(d, "readonly", json_true());
	}
	/* a card the snapshot's VM had on a daemon network (its TAP was made
	 * for that VM) is on the network again, with a TAP made for this one */
	json_array_foreach(json_object_get(cfg, "nets"), i, d) {
		json_t *net = json_object_get(json_array_get(json_object_get(parent, "nets"), i),
					      "network");

		if (json_is_string(net) && i >= ntaps) {
			json_object_del(d, "tap");
			json_object_set(d, "network", net);
		}
	}
	if (!snap_own_resources(cfg, sr->name, new_name, taps, ntaps, e)) {
		text = json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!text)
			api_err_set(e, 500, "internal", "out of memory");
	}
	json_decref(cfg);
	json_decref(parent);
	return text;
}

/* An error about snapshot `snap` from the store: 404 or 500. */
static int snap_get_err(struct api_err *e, const char *snap, int rc)
{
	return api_err_set(e, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "not_found" : "internal",
			   "snapshot %s: %s", snap, rc == -ENOENT ? "not found" : "cannot read the store");
}

/* A new VM `name` (not yet in the table) from snapshot `sr`, claimed
 * "restoring", its first start restoring it (a clone's with --clone). */
static struct hvm *snap_new_vm(const struct snapshot_record *sr, const char *name, bool clone,
			       char (*taps)[HOST_TAP_NAME_MAX + 1], size_t ntaps, struct api_err *e)
{
	struct host_spec s;
	struct hvm *vm;
	char *text = snap_restore_spec(sr, name, taps, ntaps, e);
	int rc;

	if (!text)
		return NULL;
	rc = host_spec_parse(text, strlen(text), true, &s, e);
	free(text);
	if (rc) {       /* the snapshot's config no longer passes (a file moved, say) */
		char msg[sizeof(e->msg)];

		snprintf(msg, sizeof(msg), "%s", e->msg);
		snprintf(e->msg, sizeof(e->msg), "snapshot %s: %.900s", sr->name, msg);
		return NULL;
	}
	vm = hvm_new(&s);
	host_spec_free(&s);
	if (!vm) {
		api_err_set(e, 500, "internal", "out of memory");
		return NULL;
	}
	snprintf(vm->rec.snapshot, sizeof(vm->rec.snapshot), "%s", sr->name);
	vm->rec.snapshot_gen = 1;       /* the first start (generation 1) restores */
	vm->rec.snapshot_clone = clone;
	vm->busy = "restoring";
	return vm;
}

/* Remove VMs vms[0..n) again after a failed restore or clone: those in
 * the table are stopped if they run and deleted; each loses its claim and
 * the caller's reference. */
static void snap_undo(struct host *h, struct hvm **vms, size_t n, const bool *inserted)
{
	for (size_t i = 0; i < n; i++) {
		struct hvm *vm = vms[i];
		char trash[4400] = "", name[HOST_NAME_MAX_LEN + 1];
		struct api_err ignore;
		bool gone = false;

		if (!vm)
			continue;
		snprintf(name, sizeof(name), "%s", vm->rec.name);
		pthread_mutex_lock(&h->lock);
		if (inserted[i] && (vm->state == HVM_CREATED || vm->state == HVM_EXITED))
			gone = !hvm_remove_claimed_locked(h, vm, trash, sizeof(trash), &ignore);
		hvm_release_unlock(h, vm, trash);
		if (inserted[i] && !gone)       /* it started: stop it, then delete it */
			host_vm_delete(h, name, true, &ignore);
	}
}

/* Create VMs names[0..n) from snapshot `snap` (clones if `clone`) and
 * start them: all of them, or none (see the top of the file). */
static int snap_restore_n(struct host *h, const char *snap, char (*names)[HOST_NAME_MAX_LEN + 1],
			  size_t n, bool clone, char (*taps)[HOST_TAP_NAME_MAX + 1],
			  size_t taps_each, struct api_err *e)
{
	struct snapshot_record sr;
	struct hvm **vms = calloc(n, sizeof(*vms));
	bool *inserted = calloc(n, sizeof(*inserted));
	char detail[160];
	size_t i;
	int rc;

	if (!vms || !inserted) {
		free(vms);
		free(inserted);
		return api_err_set(e, 500, "internal", "out of memory");
	}
	rc = db_snapshot_get(h->db, snap, &sr);
	if (rc) {
		snap_get_err(e, snap, rc);
		goto out;
	}
	for (i = 0; i < n && !rc; i++)
		if (!(vms[i] = snap_new_vm(&sr, names[i], clone, taps ? taps + i * taps_each : NULL,
					   taps_each, e)))
			rc = -1;
	snapshot_record_free(&sr);
	if (rc)
		goto undo;
	snprintf(detail, sizeof(detail), "{\"snapshot\": \"%s\"%s}", snap,
		 clone ? ", \"clone\": true" : "");

	pthread_mutex_lock(&h->lock);
	rc = db_snapshot_get(h->db, snap, &sr);         /* not deleted meanwhile */
	if (rc) {
		snap_get_err(e, snap, rc);
	} else {
		snapshot_record_free(&sr);
		for (i = 0; i < n && !rc; i++)          /* every name free, before any insert */
			if (host_find_locked(h, names[i]))
				rc = api_err_set(e, 409, "name_taken", "vm \"%s\" already exists",
						 names[i]);
	}
	for (i = 0; i < n && !rc; i++) {
		rc = host_vm_insert_locked(h, vms[i], detail, e);
		if (!rc) {
			inserted[i] = true;
			vms[i]->refs++;         /* ours, until released */
		}
	}
	pthread_mutex_unlock(&h->lock);
	if (rc)
		goto undo;

	for (i = 0; i < n && !rc; i++) {
		rc = hvm_do_start(h, vms[i], e);
		if (!rc)        /* its own overlays, MAC and CID, into its spec */
			rc = snap_follow_restored(h, vms[i], snap, e);
	}
	if (rc) {
		if (n > 1) {    /* say which, and that the others went too */
			char msg[sizeof(e->msg)];

			snprintf(msg, sizeof(msg), "%s", e->msg);
			snprintf(e->msg, sizeof(e->msg), "%.900s (all %zu clones removed again)", msg, n);
		}
		goto undo;
	}
	for (i = 0; i < n; i++)
		hvm_release(h, vms[i]);
	rc = 0;
	goto out;
undo:
	/* nothing half-made stays: the VMs go again (the error has the
	 * VMM's last words from its log) */
	snap_undo(h, vms, n, inserted);
	rc = -1;
out:
	free(vms);
	free(inserted);
	return rc;
}

int host_snapshot_restore(struct host *h, const char *snap, const char *new_name,
			  char (*taps)[HOST_TAP_NAME_MAX + 1], size_t ntaps, struct api_err *e)
{
	char name[1][HOST_NAME_MAX_LEN + 1];

	snprintf(name[0], sizeof(name[0]), "%s", new_name);
	return snap_restore_n(h, snap, name, 1, false, ntaps ? taps : NULL, ntaps, e);
}

bool host_tap_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > HOST_TAP_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || strchr("._-", name[i])))
			return false;
	return true;
}

int host_snapshot_clone(struct host *h, const char *snap, unsigned count, const char *prefix,
			const char *tap_prefix, char (**names_out)[HOST_NAME_MAX_LEN + 1],
			struct api_err *e)
{
	char (*names)[HOST_NAME_MAX_LEN + 1];
	char (*taps)[HOST_TAP_NAME_MAX + 1] = NULL;
	const char *p = prefix && prefix[0] ? prefix : snap;
	char digits[16];
	int rc;

	*names_out = NULL;
	if (count < 1 || count > HOST_CLONE_MAX)
		return api_err_set(e, 400, "invalid_request", "count %u: from 1 to %d clones at a "
				   "time", count, HOST_CLONE_MAX);
	snprintf(digits, sizeof(digits), "-%u", count);
	if (!host_name_valid(p) || strlen(p) + strlen(digits) > HOST_NAME_MAX_LEN)
		return api_err_set(e, 400, "invalid_request", "prefix \"%.80s\": clones are named "
				   "PREFIX-1..PREFIX-%u, which must be 1 to 63 letters, digits, '.', '_' "
				   "or '-', starting with a letter or digit", p, count);
	names = calloc(count, sizeof(*names));
	if (!names)
		return api_err_set(e, 500, "internal", "out of memory");
	for (unsigned i = 0; i < count; i++)
		snprintf(names[i], sizeof(names[i]), "%s-%u", p, i + 1);
	if (tap_prefix && tap_prefix[0]) {      /* clone i's card: TAP_PREFIX<i> */
		snprintf(digits, sizeof(digits), "%u", count);
		if (!host_tap_name_valid(tap_prefix) ||
		    strlen(tap_prefix) + strlen(digits) > HOST_TAP_NAME_MAX) {
			free(names);
			return api_err_set(e, 400, "invalid_request", "tap_prefix \"%.80s\": the "
					   "clones' TAPs are TAP_PREFIX1..TAP_PREFIX%u, which must be 1 "
					   "to %d letters, digits, '.', '_' or '-'", tap_prefix, count,
					   HOST_TAP_NAME_MAX);
		}
		taps = calloc(count, sizeof(*taps));
		if (!taps) {
			free(names);
			return api_err_set(e, 500, "internal", "out of memory");
		}
		for (unsigned i = 0; i < count; i++)
			snprintf(taps[i], sizeof(taps[i]), "%s%u", tap_prefix, i + 1);
	}
	rc = snap_restore_n(h, snap, names, count, true, taps, taps ? 1 : 0, e);
	free(taps);
	if (rc) {
		free(names);
		return -1;
	}
	*names_out = names;
	return 0;
}

/* ---- deleting one ---- */

int host_snapshot_delete(struct host *h, const char *snap, struct api_err *e)
{
	struct snapshot_record sr;
	char users[512], trash[4400] = "", detail[128];
	int64_t id = 0;
	int rc;

	pthread_mutex_lock(&h->lock);
	if (snap_pending_locked(h, snap)) {
		rc = api_err_set(e, 503, "busy", "snapshot %s: being taken; try again", snap);
		goto out;
	}
	rc = db_snapshot_get(h->db, snap, &sr);
	if (rc) {
		rc = api_err_set(e, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "not_found" : "internal",
				 "snapshot %s: %s", snap, rc == -ENOENT ? "not found" : "cannot read the store");
		goto out;
	}
	size_t n = host_snapshot_users_locked(h, snap, users, sizeof(users));
	if (n) {
		rc = api_err_set(e, 409, "in_use", "snapshot %s: in use by VM%s %s", snap,
				 n > 1 ? "s" : "", users);
	} else {
		snprintf(detail, sizeof(detail), "{\"snapshot\": \"%s\"}", snap);
		rc = db_snapshot_delete(h->db, snap, sr.vm, "snapshot-deleted", detail, &id);
		if (rc) {
			rc = api_err_set(e, 500, "internal", "snapshot %s: cannot delete from the store",
					 snap);
		} else {
			h->last_event_id = id;
			pthread_cond_broadcast(&h->event_cond);
			snprintf(trash, sizeof(trash), "%s/.deleted-%s-%lld", h->snapshots_dir, snap,
				 (long long)id);
			if (rename(sr.dir, trash) < 0)
				trash[0] = '\0';
		}
	}
	snapshot_record_free(&sr);
out:
	pthread_mutex_unlock(&h->lock);
	if (trash[0])
		host_rm_tree(trash);
	return rc ? -1 : 0;
}
