/*
 * db.h - shoald's state in SQLite: VM records, snapshots, networks and the
 * event log.
 *
 * One database file, STATE_DIR/shoald.db, in WAL mode.  Every change that
 * belongs together (a VM's record and the event that says what happened to
 * it) is written in one transaction, so a crash at any instant leaves
 * either the whole change or none of it.  The database knows nothing about
 * VMMs or HTTP; it is a plain table of records, usable from unit tests.
 *
 * Thread safety: one connection guarded by the database's own mutex.
 *
 * (This was store.c/store.h: "store" now names the image store.)
 */
#ifndef SHOAL_HOST_DB_H
#define SHOAL_HOST_DB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct db;

/* A VM's persistent record.  Strings are owned (malloc'd). */
struct vm_record {
	char name[64];
	char *spec;            /* the spec as accepted (JSON), daemon keys included */
	char state[16];        /* hvm_state_name() */
	pid_t monitor_pid;     /* the monitor process that waits for the VMM, or 0 */
	pid_t vmm_pid;         /* the VMM, or 0 */
	int64_t created_ms;    /* ms since the epoch */
	int64_t started_ms;    /* last start, or 0 */
	int64_t exited_ms;     /* last exit, or 0 */
	int exit_status;       /* last VMM exit status (docs/cli.md), -1 if none */
	char *exit_reason;     /* words for it, or NULL */
	unsigned restarts;     /* restarts made by the restart policy */
	unsigned generation;   /* bumped at each start */
	char snapshot[64];     /* the snapshot this VM was restored from, or "" */
	unsigned snapshot_gen; /* the generation whose VMM was started from it
				  (`shoal run --restore`); later starts boot fresh */
	bool snapshot_clone;   /* that start is a clone (`--restore --clone`) */
	char *overlays;        /* the disk overlays made for this VM (snapshots.c):
				  a JSON array of {"path", "on": SNAP, "by":
				  "snapshot" or "restore"}, or NULL for none */
	char *incoming;        /* a VM coming in by live migration: its VMM's
				  --incoming argument (migration.c) until the
				  stream completes, so that a restarted shoald
				  sees it through; NULL otherwise */
	char *outgoing;        /* a VM going out by live migration, while it
				  goes: JSON {"to", "token", "cacert"} (plain
				  `to` as written before), so that a restarted
				  shoald knows its VMM may have moved it and
				  can settle the destination (migration.c);
				  NULL otherwise */
};

/* A snapshot the daemon took (docs/daemon.md, "Snapshots").  Strings owned. */
struct snapshot_record {
	char name[64];
	char vm[64];           /* the VM it was taken of */
	char *dir;             /* STATE_DIR/snapshots/NAME */
	char *spec;            /* that VM's stored spec when it was taken */
	char *disks;           /* the files it depends on: a JSON array of
				  {"path", "writable"} (the manifest's disks,
				  a writable one's path its parent), or NULL */
	int64_t created_ms;
	int64_t size_bytes;    /* disk space of the directory (the memory file is sparse) */
	int64_t memory_bytes;  /* guest RAM */
	int64_t memory_data_bytes; /* of it written (pages that are not all zero) */
	int vcpus;
	double pause_ms;       /* how long the guest was paused */
	double total_ms;       /* the whole save */
};

/* An event: something that happened to a VM or the host. */
struct db_event {
	int64_t id;            /* increasing */
	int64_t ts_ms;
	char vm[64];           /* "" for host events */
	char type[32];         /* created, started, paused, resumed, stopping, exited, ... */
	char *detail;          /* JSON object text, or NULL */
};

void vm_record_free(struct vm_record *r);
int vm_record_copy(struct vm_record *dst, const struct vm_record *src);

/* Open (creating if needed) the database at `path`.  NULL with a message. */
struct db *db_open(const char *path, char *err, size_t errlen);
void db_close(struct db *s);

/* Insert `r` (a new name) and, if `ev_type`, an event, in one transaction.
 * -EEXIST if the name is taken, -EIO on another failure. */
int db_vm_insert(struct db *s, const struct vm_record *r, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id);
/* Update an existing record (and add an event) in one transaction. */
int db_vm_update(struct db *s, const struct vm_record *r, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id);
/* Delete a record (and add an event) in one transaction; -ENOENT if absent. */
int db_vm_delete(struct db *s, const char *name, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id);
/* Call fn for every record, in creation order.  Count or -EIO. */
int db_vm_load_all(struct db *s, void (*fn)(void *arg, struct vm_record *r),
		      void *arg);
/* Add an event on its own. */
int db_event_add(struct db *s, const char *vm, const char *type,
		    const char *detail, int64_t *id);
/* Up to `max` events with id > since (optionally for one VM) into `out`.
 * Returns the count or -EIO; free each with db_event_free. */
int db_events_since(struct db *s, int64_t since, const char *vm,
		       struct db_event *out, int max);
void db_event_free(struct db_event *ev);
int64_t db_last_event_id(struct db *s);
void snapshot_record_free(struct snapshot_record *r);
/* Insert a snapshot (a new name) and, if `ev_type`, an event on VM r->vm,
 * in one transaction.  -EEXIST if the name is taken, -EIO otherwise. */
int db_snapshot_insert(struct db *s, const struct snapshot_record *r, const char *ev_type,
		       const char *ev_detail, int64_t *ev_id);
/* The same, and in the same transaction the update of VM record `vm`
 * (the VM the snapshot moved onto new disk overlays), if not NULL. */
int db_snapshot_insert_vm(struct db *s, const struct snapshot_record *r,
			  const struct vm_record *vm, const char *ev_type, const char *ev_detail,
			  int64_t *ev_id);
/* Delete a snapshot (and add an event on `ev_vm`) in one transaction;
 * -ENOENT if absent. */
int db_snapshot_delete(struct db *s, const char *name, const char *ev_vm,
		       const char *ev_type, const char *ev_detail, int64_t *ev_id);
/* One snapshot into *out (free with snapshot_record_free): 0, -ENOENT, -EIO. */
int db_snapshot_get(struct db *s, const char *name, struct snapshot_record *out);
/* Call fn for every snapshot, oldest first (fn takes the strings).  Count or -EIO. */
int db_snapshot_load_all(struct db *s, void (*fn)(void *arg, struct snapshot_record *r),
			 void *arg);
/* A network the daemon manages (net.c, docs/networks.md). */
struct net_record {
	char name[64];
	char subnet[32];       /* "10.89.0.0/24" */
	bool isolated;         /* no NAT, no way to the host beyond the bridge */
	int64_t created_ms;
};
/* Insert a network (a new name): 0, -EEXIST, -EIO. */
int db_net_insert(struct db *s, const struct net_record *r);
/* Delete a network: 0, -ENOENT, -EIO. */
int db_net_delete(struct db *s, const char *name);
/* Call fn for every network, oldest first.  Count or -EIO. */
int db_net_load_all(struct db *s, void (*fn)(void *arg, const struct net_record *r), void *arg);
/* Run PRAGMA integrity_check; 0 if "ok". */
int db_check(struct db *s);

#endif
