/*
 * host.h - shoald, the host daemon: the shared picture of a host.
 *
 * shoald keeps a table of VMs (struct hvm), persists every change to it in
 * SQLite (db.c), starts one VMM process per VM (`shoal run --api-socket`,
 * supervisor.c), talks to each over its control socket (vmctl.c), and
 * serves the HTTP API (api*.c) on a Unix socket.  The CLI verbs in
 * src/cli/vm.c & co. are clients of that API.
 *
 * Threads:
 *   - libmicrohttpd runs one thread per connection; handlers call the
 *     lifecycle functions below (lifecycle.c), which may block (a start
 *     waits for the VMM's control socket, a stop for the VMM to exit).
 *   - the supervisor thread waits on a pidfd per VM monitor process and
 *     records exits, and runs restart policies.
 *
 * Locking: host->lock guards the VM table and every field of every hvm.
 * It is never held across a blocking call (a control-socket round trip, a
 * wait, a fork): an operation marks the VM busy under the lock, drops it,
 * does its slow work, then takes it again to publish the result.  A second
 * operation on a busy VM is answered 503.  SQLite writes happen under the
 * lock, so the database order is the order of the in-memory changes.
 *
 * Invariants:
 *   - every VM in the table has a row in the database, and a VM is in the
 *     table before its row is written (create reserves the name first);
 *   - an hvm is freed only when its reference count drops to zero, so a
 *     handler holding a reference may use it after a concurrent delete
 *     (it then sees hvm->deleted).
 */
#ifndef SHOAL_HOST_HOST_H
#define SHOAL_HOST_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "host/hostutil.h"
#include "host/db.h"
#include "base/path_beneath.h"

#define SHOALD_VERSION "0.1.0"
#define HOST_NAME_MAX_LEN 63          /* VM names: [A-Za-z0-9][A-Za-z0-9._-]{0,62} */
#define HOST_BODY_MAX (1u << 20)      /* largest request body accepted */
#define HOST_MAX_GRANTS 64            /* --grant options */

/* An outgoing migration's last figures, from its VMM's migrate-status
 * (migration.c), shown as "migration" in the VM object while it runs. */
struct hvm_migration {
	bool on;
	char to[1024];              /* the destination daemon */
	char state[16];             /* "connecting", then the VMM's: active, completing ... */
	long long round, bytes, memory_bytes, dirty_pages;
	long long dirty_rate;       /* bytes/s the guest dirtied in the last round */
	double expected_downtime_ms;
	bool cancel;                /* DELETE /v1/vms/NAME/migration asked for it */
};

/* One VM as the daemon knows it.  All fields under host->lock. */
struct hvm {
	struct vm_record rec;       /* what the database keeps (db.h) */
	enum hvm_state state;       /* rec.state mirrors it as text */
	enum restart_policy restart;
	int cpus;                   /* from the spec, for inventory */
	uint64_t memory;            /* bytes, from the spec */
	const char *busy;           /* operation in progress ("starting", ...) or NULL */
	bool stop_requested;        /* the user stopped it: no restart */
	bool deleted;               /* removed from the table */
	int pidfd;                  /* pidfd of the monitor (or the VMM), or -1 */
	unsigned refs;              /* table reference + one per user */
	int64_t restart_window_ms;  /* start of the current crash-loop window */
	unsigned restart_count;     /* restarts in that window */
	unsigned jail_uid;          /* its VMM's jail uid and gid (supervisor.c), 0 none */
	struct hvm_migration mig;   /* an outgoing migration's progress (migration.c) */
	bool in_doubt;              /* came in by a migration whose source's go-ahead never
				     * came: held paused until a resume or a delete settles
				     * it (migration.c, "In doubt") */
};

/* What a caller may do (authz.c); each role includes the ones before. */
enum host_role {
	HOST_ROLE_NONE = 0,
	HOST_ROLE_READ,      /* GET: inventory, one VM, events, metrics */
	HOST_ROLE_OPERATE,   /* start, stop, pause, resume, console */
	HOST_ROLE_ADMIN,     /* create, delete; snapshot, restore, delete a snapshot */
};

/* One --grant user:NAME=ROLE or group:NAME=ROLE, resolved to an id. */
struct host_grant {
	bool group;
	unsigned id;                /* uid or gid */
	enum host_role role;
};

struct host_authz {
	struct host_grant g[HOST_MAX_GRANTS];
	int n;
};

const char *host_role_name(enum host_role r);
int host_role_parse(const char *s);               /* -1 if unknown */
/* Add a grant from "user:NAME=ROLE" / "group:NAME=ROLE"; 0 or -1 with e. */
int host_authz_grant(struct host_authz *a, const char *spec, struct api_err *e);
/* The role of a caller: root and the daemon's uid are admin, else the
 * highest role a grant gives to `uid` or one of `gids`. */
enum host_role host_authz_role(const struct host_authz *a, uid_t uid, const gid_t *gids,
			       int ngids);

/* What a VM's cgroup may use (spec "limits"; cgroup.c); 0: the default. */
struct host_limits {
	double cpus;                /* CPUs' worth of time (cpu.max), 0: no cap */
	uint64_t memory_max;        /* bytes (memory.max), 0: guest memory + 25 % + 256M */
	/* io.max on the block device under each disk, 0: no cap (limits.io) */
	uint64_t read_bps, write_bps, read_iops, write_iops;
};

struct host_options {
	const char *state_dir;      /* --state-dir */
	const char *socket_path;    /* --socket, default STATE_DIR/shoald.sock */
	const char *socket_group;   /* --socket-group, default "shoal" if it exists */
	const char *vmm_path;       /* --vmm, default: `shoal` next to shoald */
	const char *monitor_exe;    /* re-exec'd as the monitor (shoald), or NULL: fork only */
	unsigned client_timeout_s;  /* idle/slow client timeout */
	unsigned stop_timeout_s;    /* default graceful stop timeout */
	unsigned start_timeout_s;   /* how long a VMM may take to answer at start */
	unsigned request_timeout_s; /* a request must arrive whole within this */
	unsigned max_peer_conns;    /* connections one uid (TCP: one address) may hold */
	const char *listen;         /* --listen ADDR:PORT (TCP+TLS), or NULL */
	const char *tls_cert, *tls_key, *token_file;
	enum host_role token_role;  /* what a TCP client with the token may do (admin) */
	const char *allow_dirs[PATH_MAX_ROOTS];  /* --allow-dir: where named files may be */
	int nallow_dirs;            /* 0: STATE_DIR/images */
	struct host_authz authz;    /* --grant */
	int jail;                   /* --jail: 1 on, -1 off, 0 default (on when root) */
	unsigned jail_uid_base;     /* --jail-uid-base: the first VM's uid and gid */
	/* --store DIR, --store-server URL, --store-cert/--store-key/--store-ca
	 * FILE: the host's image store and where it pulls from (api_store.c) */
	const char *store_dir, *store_server, *store_cert, *store_key, *store_ca;
};

#define HOST_JAIL_UID_BASE 2000000u

struct host {
	struct host_options opt;
	char *state_dir, *socket_path, *vmm_path, *vms_dir;
	char *allow_dirs[PATH_MAX_ROOTS];   /* the VMMs' "confine" and spec.c's checks */
	int nallow_dirs;
	int lock_fd;                /* flock on STATE_DIR/shoald.lock */
	struct db *db;
	pthread_mutex_t lock;       /* see the essay above */
	pthread_cond_t changed;     /* broadcast on every state change */
	struct hvm **vms;           /* the table, in creation order */
	size_t nvms, cap;
	pthread_cond_t event_cond;  /* broadcast when an event is added */
	int64_t last_event_id;
	int epfd;                   /* supervisor: pidfds */
	int wake_fd;                /* eventfd to stop the supervisor */
	pthread_t supervisor;
	bool supervisor_started;
	volatile bool stopping;     /* shutting down: streams end */
	void *api;                  /* api.c's server state */
	char *token;                /* bearer token for TCP, or NULL */
	int64_t started_ms;
	char *cgroup_dir;           /* cgroup.c: BASE of the VMs' cgroups, or NULL (off) */
	char cgroup_off[200];       /* why they are off */
	void *cgroup_watch;         /* cgroup.c's limit-event watcher, or NULL */
	char *snapshots_dir;        /* STATE_DIR/snapshots, 0700 */
	bool jail;                  /* VMMs run jailed (shoal run --jail) */
	char **snap_pending;        /* snapshot names being taken (snapshots.c) */
	size_t nsnap_pending;
	struct host_nets *nets;     /* the managed networks (net.c), or NULL */
	void *memmgr;               /* the memory manager (memmgr.c), or NULL: off */
	char *store_dir;            /* --store, absolute, or NULL: none (api_store.c) */
};

/* ---- daemon.c (errors, names, time and paths: hostutil.h) ---- */
int host_open(struct host *h, const struct host_options *opt, struct api_err *e);
void host_close(struct host *h);

/* ---- vm table (lifecycle.c), all under host->lock ---- */
struct hvm *host_find_locked(struct host *h, const char *name);
/* Find and take a reference, or NULL with a 404 in `e`. */
struct hvm *host_get(struct host *h, const char *name, struct api_err *e);
void host_put(struct host *h, struct hvm *vm);
void hvm_put_locked(struct hvm *vm);
/* Persist vm's record and, if `type` is set, add an event, in one
 * transaction.  Under the lock. */
int host_persist_locked(struct host *h, struct hvm *vm, const char *type,
			const char *detail_json);
int host_event_locked(struct host *h, const char *vm, const char *type,
		      const char *detail_json);

/* ---- lifecycle.c: helpers the operations share (snapshots.c too) ---- */
struct host_spec;
void hvm_set_state(struct hvm *vm, enum hvm_state s);
/* Take `vm` for an operation `op`: not busy (503), state in `allowed`, a
 * mask of 1u << state (409).  Lock held. */
int hvm_claim_locked(struct hvm *vm, const char *op, unsigned allowed, struct api_err *e);
/* End an operation: clear busy and drop the caller's reference. */
void hvm_release(struct host *h, struct hvm *vm);
/* The same with h->lock held, which it releases; then it removes `trash`,
 * a removed record's directory (hvm_remove_claimed_locked; "": none). */
void hvm_release_unlock(struct host *h, struct hvm *vm, const char *trash);
int host_table_add_locked(struct host *h, struct hvm *vm);
/* A new VM's record into the store (event "created", with the JSON
 * `detail` or NULL) and the table, with h->lock held: 0, or -1 with `e`
 * (409 name_taken, 500). */
struct api_err;
int host_vm_insert_locked(struct host *h, struct hvm *vm, const char *detail,
			  struct api_err *e);
void host_table_remove_locked(struct host *h, struct hvm *vm);
/* A new hvm (state created, one reference) from a parsed spec; takes
 * s->spec_json.  NULL without memory. */
struct hvm *hvm_new(struct host_spec *s);
/* Remove a claimed VM from the store ("deleted" event) and the table; its
 * directory is renamed to `trash` (removed by the caller, outside the
 * lock, with host_rm_tree; trash[0] == 0 if there was none).  Lock held. */
int hvm_remove_claimed_locked(struct host *h, struct hvm *vm, char *trash, size_t size,
			      struct api_err *e);
/* Remove a directory tree, ignoring errors. */
void host_rm_tree(const char *path);

/* ---- lifecycle.c: the one internal command set the API calls ---- */
struct hvm *host_vm_create(struct host *h, const char *body, size_t len, struct api_err *e);
int host_vm_start(struct host *h, const char *name, struct api_err *e);
int host_vm_stop(struct host *h, const char *name, bool force, int timeout_s,
		 struct api_err *e);
int host_vm_pause(struct host *h, const char *name, bool pause, struct api_err *e);
int host_vm_delete(struct host *h, const char *name, bool force, struct api_err *e);
/* Start a VM already claimed by the caller (busy set): spawn, wait until its
 * control socket answers, publish "started".  Used by start and restart. */
int hvm_do_start(struct host *h, struct hvm *vm, struct api_err *e);

/* ---- snapshots.c (docs/daemon.md, "Snapshots") ---- */
/* Save the running or paused VM `name` into STATE_DIR/snapshots/SNAP
 * through its VMM's control socket and record it.  `snap` NULL: the
 * default name NAME-YYYYmmdd-HHMMSS (UTC).  `live`: a live checkpoint
 * (returns once its memory is written).  The snapshot's name into
 * out_name (HOST_NAME_MAX_LEN + 1 bytes). */
int host_vm_snapshot(struct host *h, const char *name, const char *snap, bool live,
		     char *out_name, struct api_err *e);
#define HOST_TAP_NAME_MAX 15     /* a network interface name (IFNAMSIZ - 1) */
/* Is `name` a TAP name a request may give (1 to 15 of [A-Za-z0-9._-])? */
bool host_tap_name_valid(const char *name);
/* Create VM `new_name` from snapshot `snap` and start its VMM with
 * `shoal run --restore`, its first cards on TAPs taps[0..ntaps) (the
 * others on the snapshot's).  A failed start removes the VM again. */
int host_snapshot_restore(struct host *h, const char *snap, const char *new_name,
			  char (*taps)[HOST_TAP_NAME_MAX + 1], size_t ntaps, struct api_err *e);
#define HOST_CLONE_MAX 64       /* clones per request */
/* Create `count` clones of snapshot `snap`, PREFIX-1..PREFIX-count
 * (`prefix` NULL or "": the snapshot's name), each started with `shoal
 * run --restore --clone`: all of them, or none; with `tap_prefix`, clone
 * i's first card on TAP TAP_PREFIXi.  Their names into *names_out (count
 * entries, malloc'd) on success. */
int host_snapshot_clone(struct host *h, const char *snap, unsigned count, const char *prefix,
			const char *tap_prefix, char (**names_out)[HOST_NAME_MAX_LEN + 1],
			struct api_err *e);
/* Delete a snapshot and its directory; refused (409) while a VM whose VMM
 * was restored from it runs, or whose disk overlay a restore made on it. */
int host_snapshot_delete(struct host *h, const char *snap, struct api_err *e);
/* Names of the VMs whose current VMM was restored from `snap`, or whose
 * disk overlay a restore of it made, with their states, as "a (running),
 * b (exited, its disk overlay is on the snapshot's)" into buf ("" if
 * none).  Lock held. */
size_t host_snapshot_users_locked(struct host *h, const char *snap, char *buf, size_t size);
/* A VM leaves the table: remove the disk overlays made for it
 * (vms.overlays) but those a snapshot records as its disk.  Lock held. */
void host_vm_overlays_remove_locked(struct host *h, const struct hvm *vm);
/* `shoal run --restore` arguments for VM `vm`'s own host resources, from
 * its spec: "--vsock-socket=PATH", the memory layer's "--zero-scan=N" and
 * "--mem-recovery", and "--tap=NAME" per card (a card on a daemon network:
 * the TAP made for `vm` at this start, net.c), at most `max` pointers into
 * argv, their text in buf.  The count, or -1 if they do not fit. */
int host_snapshot_restore_args(const char *vm, const char *spec, char **argv, int max, char *buf,
			       size_t size);
/* Does `vm`'s current (or starting) VMM come from its snapshot? */
bool hvm_restored_now(const struct hvm *vm);
/* Does `vm` keep snapshot `snap` from being deleted: it is being restored
 * from it, its VMM running now was, or a restore of it made its disk
 * overlay?  Lock held. */
bool hvm_uses_snapshot(const struct hvm *vm, const char *snap);

/* ---- lifecycle.c: more shared helpers ---- */
/* The last line of the VM's vmm.log into out ("" if none). */
void hvm_log_tail(struct host *h, struct hvm *vm, char *out, size_t size);
/* Wait (lock held) until `vm` leaves `state` or timeout_ms pass. */
void hvm_wait_leave_locked(struct host *h, struct hvm *vm, enum hvm_state state,
			   int timeout_ms);

/* ---- migration.c (docs/daemon.md, "Live migration") ---- */
/* What POST /v1/vms/NAME/migrate asks for (api_migrate.c parses it). */
struct host_migrate_req {
	char to[1024];              /* the destination daemon: a socket path or https:// URL */
	char token[512];            /* its bearer token ("" none) */
	char *cacert;               /* PEM text of its CA or certificate, or NULL */
	long long downtime_ms;      /* 0: the VMM's default */
	long long bandwidth;        /* bytes per second, 0: no cap */
	bool with_disks;            /* mirror the writable disks into images the destination makes */
	bool auto_converge;         /* the VMM throttles a guest that does not converge */
	int postcopy_after;         /* switch to post-copy after N rounds (1..30), 0: never */
	int compress_level;         /* "compress": zstd at this level (1..19), 0: none */
};
/* The source: move running VM `name` to the daemon at r->to; the answer
 * (figures, the destination's state) into *result (a json_t *, the
 * caller's).  The VM's record is removed once the destination runs it;
 * any failure before leaves it running here. */
int host_vm_migrate(struct host *h, const char *name, const struct host_migrate_req *r,
		    void **result, struct api_err *e);
/* The destination: take VM spec `spec` (JSON text), create its record and
 * start its VMM with --incoming at an address of this host (TCP on the
 * --listen address when `tcp`, else a Unix socket in the VM's directory),
 * answered once that VMM listens; the address into addr, and the
 * migration's key (64 hex digits), which that VMM demands proof of, into
 * key_hex.  A thread then waits for the stream: the VM runs, or its
 * record goes again.  `disks` (NULL: none) is the JSON array of the
 * images to make for a --with-disks migration (api_migrate.c): each is
 * made in the VM's directory and the spec's disk path set to it. */
int host_migrate_incoming(struct host *h, const char *spec, size_t len, const char *disks,
			  bool tcp, char *name, size_t name_size, char *addr, size_t addr_size,
			  char key_hex[65], struct api_err *e);
/* Reattach (supervisor.c): `vm`, recorded starting with its --incoming
 * kept (rec.incoming) and its monitor alive, is still coming in; claim it
 * "incoming" again and start the thread that sees it through.  False when
 * it is not such a VM (the caller reattaches it as any other). */
bool host_migrate_incoming_reattach(struct host *h, struct hvm *vm);
/* Reattach (supervisor.c): `vm`, recorded going out (rec.outgoing), its
 * VMM answering, may still be migrating: claim it "migrate" and follow
 * the VMM's migration to its end (moved: the record goes; else it runs on
 * here).  False when it is not such a VM or is busy. */
bool host_migrate_outgoing_reattach(struct host *h, struct hvm *vm);
/* vms.outgoing's text (migration.c keeps the destination, its token and
 * CA there while a migration goes) into r (r->cacert malloc'd, the
 * caller's); 0, or -1 out of memory (r->to is set). */
int host_migrate_outgoing_req(const char *text, struct host_migrate_req *r);
/* Reattach (supervisor.c): `vm`'s VMM ended while shoald was down,
 * during its migration to r, and its exit file says whether it migrated
 * the VM (its record already exited, without the restart policy when it
 * did).  A thread asks the destination and settles a copy held there in
 * doubt: migrated, it is resumed and our record goes ("migrated",
 * reattached); not migrated, it is deleted (ours ran on). */
void host_migrate_outgoing_gone(struct host *h, struct hvm *vm, const struct host_migrate_req *r,
				bool migrated);
/* The source: cancel the migration of `name` in progress (before the
 * point of no return the VM runs on here, and the destination, its
 * stream cut, removes what it made); waits until it has ended.  0 when it
 * was cancelled; -1 with `e`: 404, 409 wrong_state (none in progress),
 * 409 too_late (it migrated all the same). */
int host_vm_migrate_cancel(struct host *h, const char *name, struct api_err *e);
/* The destination: end a post-copy held in doubt (`vm` "starting", its
 * VMM waiting, never run, for a source that will not come back: that
 * source's daemon knows its VM ran on there).  Kills the VMM; the
 * incoming thread removes the record.  0 once the record is gone; 1 when
 * `vm` is no such held copy (the caller goes on); -1 with `e` (500) when
 * the record stayed. */
int host_migrate_incoming_drop(struct host *h, struct hvm *vm, struct api_err *e);
/* A VM's VMM, asked on its control socket `sock`: its pid and whether it
 * is paused ("status"), and, paused, whether it holds an incoming VM in
 * doubt and a post-copy waiting for its source ("migrate-status":
 * incoming_in_doubt, incoming_postcopy_held).  0, or -1 with `err` when
 * it does not answer. */
int host_vmm_state(const char *sock, pid_t *pid, bool *paused, bool *doubt, bool *held,
		   char *err, size_t size);
/* Where the source connects for the destination's answer `addr`: addr
 * itself, but a TCP address on the wildcard host (a destination started
 * with --listen 0.0.0.0:PORT) takes the host of the destination's URL `to`. */
void host_migrate_connect_addr(const char *to, const char *addr, char *out, size_t size);

/* ---- supervisor.c ---- */
int supervisor_start(struct host *h);
void supervisor_stop(struct host *h);
/* Fork the monitor and the VMM for `vm` (its dir and config are written). */
int supervisor_spawn(struct host *h, struct hvm *vm, struct api_err *e);
/* SHOAL_SECCOMP=off in shoald's environment, which its VMMs inherit: their
 * seccomp filters are off (docs/security.md), warned at each start. */
bool supervisor_seccomp_off(void);
/* Watch `vm`'s monitor (or VMM) pid; takes a reference. */
int supervisor_watch(struct host *h, struct hvm *vm, pid_t pid);
/* Called on start: reattach VMs whose VMM still runs, record the others. */
void supervisor_reattach(struct host *h);
/* `shoald --monitor EXITFILE LOGFILE VMM ARGS...`: the monitor process
 * (never returns on success). */
int supervisor_monitor_main(int argc, char **argv);
/* Map a VMM exit status to words ("guest powered off", ...). */
const char *supervisor_exit_reason(int status, char *buf, size_t size);

#endif
