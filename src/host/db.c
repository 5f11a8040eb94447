/*
 * db.c - shoald's state in SQLite (see db.h).
 *
 * Schema (version 6):
 *
 *   vms(name PRIMARY KEY, seq, spec, state, monitor_pid, vmm_pid,
 *       created_ms, started_ms, exited_ms, exit_status, exit_reason,
 *       restarts, generation, snapshot, snapshot_gen, snapshot_clone,
 *       overlays, incoming, outgoing)
 *   snapshots(name PRIMARY KEY, seq, vm, dir, spec, created_ms, size_bytes,
 *       memory_bytes, memory_data_bytes, vcpus, pause_ms, total_ms, disks)
 *   events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms, vm, type, detail)
 *   networks(name PRIMARY KEY, seq, subnet, isolated, created_ms)
 *   meta(key PRIMARY KEY, value)          -- schema_version
 *
 * Version 1 (no snapshots) is upgraded in place when opened: the two vms
 * columns are added (NULL and 0: not restored) in one transaction; so is
 * version 2 (no clones): snapshot_clone is added (0: a full restore); and
 * version 3 (no disk overlays followed): vms.overlays and snapshots.disks
 * are added, NULL (no overlays made; files not recorded); and version 4
 * (no managed networks) gets the networks table (empty); and version 5
 * (live migrations not kept) gets vms.incoming and vms.outgoing, NULL (none
 * coming in or going out).
 *
 * WAL mode with synchronous=NORMAL: a process crash (the SIGKILL test)
 * never loses a committed transaction; a power cut may lose the last few,
 * but never leaves a torn one.  The event log is trimmed to the newest
 * DB_EVENTS_KEEP rows so a long-lived host does not grow it forever.
 *
 * One connection, one mutex: shoald's writes are small and already
 * serialized by the host lock, so a pool would buy nothing.
 *
 * The database holds every VM's spec (file paths, command lines): it is
 * the daemon's alone.  The file is made 0600 before SQLite opens it (SQLite
 * gives -wal and -shm the main file's mode), and files an older daemon
 * left more open are narrowed to 0600.
 */
#include "host/db.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DB_SCHEMA_VERSION 6
#define DB_EVENTS_KEEP 10000

struct db {
	sqlite3 *conn;
	pthread_mutex_t lock;
	unsigned writes;        /* events added since the last trim */
};

/* The daemon's networks (net.c): a bridge each, NAT unless isolated. */
#define DB_NETWORKS_TABLE \
	"CREATE TABLE IF NOT EXISTS networks(" \
	" name TEXT PRIMARY KEY, seq INTEGER NOT NULL, subnet TEXT NOT NULL," \
	" isolated INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);"

static const char db_schema[] =
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS vms("
	" name TEXT PRIMARY KEY, seq INTEGER NOT NULL, spec TEXT NOT NULL,"
	" state TEXT NOT NULL, monitor_pid INTEGER NOT NULL DEFAULT 0,"
	" vmm_pid INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
	" started_ms INTEGER NOT NULL DEFAULT 0, exited_ms INTEGER NOT NULL DEFAULT 0,"
	" exit_status INTEGER NOT NULL DEFAULT -1, exit_reason TEXT,"
	" restarts INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0,"
	" snapshot TEXT, snapshot_gen INTEGER NOT NULL DEFAULT 0,"
	" snapshot_clone INTEGER NOT NULL DEFAULT 0, overlays TEXT, incoming TEXT,"
	" outgoing TEXT);"
	"CREATE TABLE IF NOT EXISTS snapshots("
	" name TEXT PRIMARY KEY, seq INTEGER NOT NULL, vm TEXT NOT NULL, dir TEXT NOT NULL,"
	" spec TEXT NOT NULL, created_ms INTEGER NOT NULL, size_bytes INTEGER NOT NULL,"
	" memory_bytes INTEGER NOT NULL, memory_data_bytes INTEGER NOT NULL,"
	" vcpus INTEGER NOT NULL, pause_ms REAL NOT NULL, total_ms REAL NOT NULL, disks TEXT);"
	"CREATE TABLE IF NOT EXISTS events("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL,"
	" vm TEXT NOT NULL, type TEXT NOT NULL, detail TEXT);"
	"CREATE INDEX IF NOT EXISTS events_vm ON events(vm, id);"
	DB_NETWORKS_TABLE
	"INSERT OR IGNORE INTO meta VALUES('schema_version', '6');";

/* Version 1 to 2: the vms table learns which snapshot a VM came from. */
static const char db_upgrade_1_2[] =
	"BEGIN IMMEDIATE;"
	"ALTER TABLE vms ADD COLUMN snapshot TEXT;"
	"ALTER TABLE vms ADD COLUMN snapshot_gen INTEGER NOT NULL DEFAULT 0;"
	"UPDATE meta SET value = '2' WHERE key = 'schema_version';"
	"COMMIT;";

/* Version 2 to 3: a VM restored from a snapshot may be a clone of it
 * (its memory mapped copy-on-write from the snapshot's memory file). */
static const char db_upgrade_2_3[] =
	"BEGIN IMMEDIATE;"
	"ALTER TABLE vms ADD COLUMN snapshot_clone INTEGER NOT NULL DEFAULT 0;"
	"UPDATE meta SET value = '3' WHERE key = 'schema_version';"
	"COMMIT;";

/* Version 3 to 4: the daemon follows a VM's disk onto the overlays a
 * snapshot or a restore makes (vms.overlays), and a snapshot records the
 * files it depends on (snapshots.disks).  Each column is added where it
 * is missing: the snapshots table of a version 1 database was just made
 * by db_schema, with it. */
static const char *const db_upgrade_3_4[][2] = {
	{ "vms", "ALTER TABLE vms ADD COLUMN overlays TEXT;" },
	{ "snapshots", "ALTER TABLE snapshots ADD COLUMN disks TEXT;" },
};

/* Version 4 to 5: networks (made by db_schema already, which runs first
 * with IF NOT EXISTS; the statement is repeated for clarity). */
static const char db_upgrade_4_5[] =
	"BEGIN IMMEDIATE;"
	DB_NETWORKS_TABLE
	"UPDATE meta SET value = '5' WHERE key = 'schema_version';"
	"COMMIT;";

/* Version 5 to 6: a VM coming in by live migration keeps its VMM's
 * --incoming argument until the stream completes (vms.incoming), and one
 * going out its destination (vms.outgoing), so that a shoald restarted
 * meanwhile sees each through (supervisor.c, reattach).  Added where they
 * are missing: the vms table of a database whose version is older still
 * was just made by db_schema, with them. */
static int db_upgrade_5_6(struct db *s, char **msg);

/* Does `table` have column `col`? */
static bool db_has_column(struct db *s, const char *table, const char *col)
{
	char sql[96];
	sqlite3_stmt *st = NULL;
	bool found = false;

	snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", table);
	if (sqlite3_prepare_v2(s->conn, sql, -1, &st, NULL) != SQLITE_OK)
		return false;
	while (!found && sqlite3_step(st) == SQLITE_ROW)
		found = !strcmp((const char *)sqlite3_column_text(st, 1) ?: "", col);
	sqlite3_finalize(st);
	return found;
}

/* Version 3 to 4 in one transaction; SQLITE_OK or an error with *msg. */
static int db_upgrade_to_4(struct db *s, char **msg)
{
	static const char *const cols[] = { "overlays", "disks" };
	int rc = sqlite3_exec(s->conn, "BEGIN IMMEDIATE", NULL, NULL, msg);

	for (size_t i = 0; rc == SQLITE_OK && i < 2; i++)
		if (!db_has_column(s, db_upgrade_3_4[i][0], cols[i]))
			rc = sqlite3_exec(s->conn, db_upgrade_3_4[i][1], NULL, NULL, msg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->conn, "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
				  "COMMIT;", NULL, NULL, msg);
	return rc;
}

static int db_upgrade_5_6(struct db *s, char **msg)
{
	int rc = sqlite3_exec(s->conn, "BEGIN IMMEDIATE", NULL, NULL, msg);

	if (rc == SQLITE_OK && !db_has_column(s, "vms", "incoming"))
		rc = sqlite3_exec(s->conn, "ALTER TABLE vms ADD COLUMN incoming TEXT;", NULL, NULL,
				  msg);
	if (rc == SQLITE_OK && !db_has_column(s, "vms", "outgoing"))
		rc = sqlite3_exec(s->conn, "ALTER TABLE vms ADD COLUMN outgoing TEXT;", NULL, NULL,
				  msg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->conn, "UPDATE meta SET value = '6' WHERE key = 'schema_version';"
				  "COMMIT;", NULL, NULL, msg);
	return rc;
}

void vm_record_free(struct vm_record *r)
{
	free(r->spec);
	free(r->exit_reason);
	free(r->overlays);
	free(r->incoming);
	free(r->outgoing);
	r->spec = NULL;
	r->exit_reason = NULL;
	r->overlays = NULL;
	r->incoming = NULL;
	r->outgoing = NULL;
}

/* Deep copy; -ENOMEM leaves dst empty. */
int vm_record_copy(struct vm_record *dst, const struct vm_record *src)
{
	*dst = *src;
	dst->spec = src->spec ? strdup(src->spec) : NULL;
	dst->exit_reason = src->exit_reason ? strdup(src->exit_reason) : NULL;
	dst->overlays = src->overlays ? strdup(src->overlays) : NULL;
	dst->incoming = src->incoming ? strdup(src->incoming) : NULL;
	dst->outgoing = src->outgoing ? strdup(src->outgoing) : NULL;
	if ((src->spec && !dst->spec) || (src->exit_reason && !dst->exit_reason) ||
	    (src->overlays && !dst->overlays) || (src->incoming && !dst->incoming) ||
	    (src->outgoing && !dst->outgoing)) {
		vm_record_free(dst);
		return -ENOMEM;
	}
	return 0;
}

/* Run SQL with no results; 0 or -EIO. */
static int db_exec(struct db *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->conn, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("db: %s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

/* Make the database file (and -wal, -shm if they exist) owner-only. */
static int db_private(const char *path, char *err, size_t errlen)
{
	static const char *const suffix[] = { "-wal", "-shm" };
	char side[4200];
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0 || fchmod(fd, 0600) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	for (int i = 0; i < 2; i++) {
		snprintf(side, sizeof(side), "%s%s", path, suffix[i]);
		if (chmod(side, 0600) < 0 && errno != ENOENT) {
			snprintf(err, errlen, "%s: %s", side, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Bring an older database to DB_SCHEMA_VERSION; 0, or -1 with a message. */
static int db_upgrade(struct db *s, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char *msg = NULL;
	int version = 0;

	if (sqlite3_prepare_v2(s->conn, "SELECT value FROM meta WHERE key = 'schema_version'",
			       -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		version = atoi((const char *)sqlite3_column_text(st, 0) ?: "0");
	sqlite3_finalize(st);
	if (version == DB_SCHEMA_VERSION)
		return 0;
	if (version == 1 && sqlite3_exec(s->conn, db_upgrade_1_2, NULL, NULL, &msg) == SQLITE_OK)
		version = 2;
	if (version == 2 && !msg &&
	    sqlite3_exec(s->conn, db_upgrade_2_3, NULL, NULL, &msg) == SQLITE_OK)
		version = 3;
	if (version == 3 && !msg && db_upgrade_to_4(s, &msg) == SQLITE_OK)
		version = 4;
	if (version == 4 && !msg &&
	    sqlite3_exec(s->conn, db_upgrade_4_5, NULL, NULL, &msg) == SQLITE_OK)
		version = 5;
	if (version == 5 && !msg && db_upgrade_5_6(s, &msg) == SQLITE_OK)
		return 0;
	if (version >= 1 && version <= 5) {
		snprintf(err, errlen, "%s: upgrading the schema from version %d: %s", path, version,
			 msg ? msg : sqlite3_errmsg(s->conn));
		sqlite3_free(msg);
		sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	snprintf(err, errlen, "%s: schema version %d, this shoald knows %d", path, version,
		 DB_SCHEMA_VERSION);
	return -1;
}

struct db *db_open(const char *path, char *err, size_t errlen)
{
	struct db *s = calloc(1, sizeof(*s));
	char *msg = NULL;

	if (!s) {
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	if (db_private(path, err, errlen)) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	if (sqlite3_open_v2(path, &s->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, s->conn ? sqlite3_errmsg(s->conn) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->conn, 5000);
	if (sqlite3_exec(s->conn, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			 "PRAGMA foreign_keys=ON;", NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(s->conn, db_schema, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(s->conn));
		sqlite3_free(msg);
		goto fail;
	}
	if (db_upgrade(s, path, err, errlen))
		goto fail;
	return s;
fail:
	sqlite3_close(s->conn);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return NULL;
}

void db_close(struct db *s)
{
	if (!s)
		return;
	sqlite3_close(s->conn);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Prepare `sql`; NULL on failure (logged). */
static sqlite3_stmt *db_prepare(struct db *s, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(s->conn, sql, -1, &st, NULL) != SQLITE_OK) {
		log_error("db: %s: %s", sql, sqlite3_errmsg(s->conn));
		return NULL;
	}
	return st;
}

/* Step a statement that returns no rows and finalize it: 0, -EEXIST, -EIO. */
static int db_step_done(struct db *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_finalize(st);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc == SQLITE_CONSTRAINT)
		return -EEXIST;
	log_error("db: %s", sqlite3_errmsg(s->conn));
	return -EIO;
}

/* Add an event inside the caller's transaction; trims the log now and then. */
static int db_event_insert(struct db *s, const char *vm, const char *type,
			      const char *detail, int64_t *id)
{
	sqlite3_stmt *st = db_prepare(s,
		"INSERT INTO events(ts_ms, vm, type, detail) VALUES(?, ?, ?, ?)");
	struct timespec ts;
	int rc;

	if (!st)
		return -EIO;
	clock_gettime(CLOCK_REALTIME, &ts);
	sqlite3_bind_int64(st, 1, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	sqlite3_bind_text(st, 2, vm ? vm : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, type, -1, SQLITE_TRANSIENT);
	if (detail)
		sqlite3_bind_text(st, 4, detail, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 4);
	rc = db_step_done(s, st);
	if (rc)
		return rc;
	if (id)
		*id = sqlite3_last_insert_rowid(s->conn);
	if (++s->writes >= 1000) {
		s->writes = 0;
		char sql[128];
		snprintf(sql, sizeof(sql), "DELETE FROM events WHERE id <= %lld",
			 (long long)sqlite3_last_insert_rowid(s->conn) - DB_EVENTS_KEEP);
		return db_exec(s, sql);
	}
	return 0;
}

/* Bind a record's fields to the INSERT/UPDATE statement's parameters 1..18. */
static void db_bind_record(sqlite3_stmt *st, const struct vm_record *r)
{
	sqlite3_bind_text(st, 1, r->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, r->spec ? r->spec : "{}", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, r->state, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, r->monitor_pid);
	sqlite3_bind_int64(st, 5, r->vmm_pid);
	sqlite3_bind_int64(st, 6, r->created_ms);
	sqlite3_bind_int64(st, 7, r->started_ms);
	sqlite3_bind_int64(st, 8, r->exited_ms);
	sqlite3_bind_int64(st, 9, r->exit_status);
	if (r->exit_reason)
		sqlite3_bind_text(st, 10, r->exit_reason, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 10);
	sqlite3_bind_int64(st, 11, r->restarts);
	sqlite3_bind_int64(st, 12, r->generation);
	if (r->snapshot[0])
		sqlite3_bind_text(st, 13, r->snapshot, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 13);
	sqlite3_bind_int64(st, 14, r->snapshot_gen);
	sqlite3_bind_int64(st, 15, r->snapshot_clone);
	if (r->overlays)
		sqlite3_bind_text(st, 16, r->overlays, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 16);
	if (r->incoming)
		sqlite3_bind_text(st, 17, r->incoming, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 17);
	if (r->outgoing)
		sqlite3_bind_text(st, 18, r->outgoing, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 18);
}

/* Update a VM record, bound by db_bind_record. */
#define DB_VM_UPDATE_SQL \
	"UPDATE vms SET spec = ?2, state = ?3, monitor_pid = ?4, vmm_pid = ?5," \
	" created_ms = ?6, started_ms = ?7, exited_ms = ?8, exit_status = ?9," \
	" exit_reason = ?10, restarts = ?11, generation = ?12, snapshot = ?13," \
	" snapshot_gen = ?14, snapshot_clone = ?15, overlays = ?16, incoming = ?17," \
	" outgoing = ?18" \
	" WHERE name = ?1"

/* End a transaction begun with BEGIN IMMEDIATE (lock held by the caller):
 * when `rc` is 0, add the event (if `ev_type`) and commit; on any failure,
 * the commit's included, roll back.  The result. */
static int db_tx_end(struct db *s, int rc, const char *ev_vm, const char *ev_type,
		     const char *ev_detail, int64_t *ev_id)
{
	if (!rc && ev_type)
		rc = db_event_insert(s, ev_vm, ev_type, ev_detail, ev_id);
	if (!rc)
		rc = db_exec(s, "COMMIT");
	if (rc)
		db_exec(s, "ROLLBACK");
	return rc;
}

/* Write one record (insert or update) plus an optional event, atomically. */
static int db_vm_write(struct db *s, const char *sql, const struct vm_record *r,
			  const char *ev_type, const char *ev_detail, int64_t *ev_id,
			  int want_change)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = db_exec(s, "BEGIN IMMEDIATE");
	if (rc)
		goto out;
	st = db_prepare(s, sql);
	if (!st) {
		rc = -EIO;
		goto end;
	}
	db_bind_record(st, r);
	rc = db_step_done(s, st);
	if (!rc && want_change && sqlite3_changes(s->conn) == 0)
		rc = -ENOENT;
end:
	rc = db_tx_end(s, rc, r->name, ev_type, ev_detail, ev_id);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_vm_insert(struct db *s, const struct vm_record *r, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id)
{
	return db_vm_write(s,
		"INSERT INTO vms(name, spec, state, monitor_pid, vmm_pid, created_ms,"
		" started_ms, exited_ms, exit_status, exit_reason, restarts, generation,"
		" snapshot, snapshot_gen, snapshot_clone, overlays, incoming, outgoing, seq)"
		" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
		" ?18,"
		" (SELECT IFNULL(MAX(seq), 0) + 1 FROM vms))",
		r, ev_type, ev_detail, ev_id, 0);
}

int db_vm_update(struct db *s, const struct vm_record *r, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id)
{
	return db_vm_write(s,
		DB_VM_UPDATE_SQL,
		r, ev_type, ev_detail, ev_id, 1);
}

int db_vm_delete(struct db *s, const char *name, const char *ev_type,
		    const char *ev_detail, int64_t *ev_id)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = db_exec(s, "BEGIN IMMEDIATE");
	if (rc)
		goto out;
	st = db_prepare(s, "DELETE FROM vms WHERE name = ?");
	if (!st) {
		rc = -EIO;
		goto end;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	rc = db_step_done(s, st);
	if (!rc && sqlite3_changes(s->conn) == 0)
		rc = -ENOENT;
end:
	rc = db_tx_end(s, rc, name, ev_type, ev_detail, ev_id);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Copy column `i` as a malloc'd string, or NULL. */
static char *db_col_strdup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? strdup((const char *)t) : NULL;
}

/* Fill `r` from the current row of the SELECT in db_vm_load_all. */
static void db_row_record(sqlite3_stmt *st, struct vm_record *r)
{
	const unsigned char *t;

	memset(r, 0, sizeof(*r));
	t = sqlite3_column_text(st, 0);
	snprintf(r->name, sizeof(r->name), "%s", t ? (const char *)t : "");
	r->spec = db_col_strdup(st, 1);
	t = sqlite3_column_text(st, 2);
	snprintf(r->state, sizeof(r->state), "%s", t ? (const char *)t : "");
	r->monitor_pid = (pid_t)sqlite3_column_int64(st, 3);
	r->vmm_pid = (pid_t)sqlite3_column_int64(st, 4);
	r->created_ms = sqlite3_column_int64(st, 5);
	r->started_ms = sqlite3_column_int64(st, 6);
	r->exited_ms = sqlite3_column_int64(st, 7);
	r->exit_status = (int)sqlite3_column_int64(st, 8);
	r->exit_reason = db_col_strdup(st, 9);
	r->restarts = (unsigned)sqlite3_column_int64(st, 10);
	r->generation = (unsigned)sqlite3_column_int64(st, 11);
	t = sqlite3_column_text(st, 12);
	snprintf(r->snapshot, sizeof(r->snapshot), "%s", t ? (const char *)t : "");
	r->snapshot_gen = (unsigned)sqlite3_column_int64(st, 13);
	r->snapshot_clone = sqlite3_column_int64(st, 14) != 0;
	r->overlays = db_col_strdup(st, 15);
	r->incoming = db_col_strdup(st, 16);
	r->outgoing = db_col_strdup(st, 17);
}

int db_vm_load_all(struct db *s, void (*fn)(void *arg, struct vm_record *r),
		      void *arg)
{
	sqlite3_stmt *st;
	struct vm_record r;
	int rc, n = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "SELECT name, spec, state, monitor_pid, vmm_pid, created_ms,"
			   " started_ms, exited_ms, exit_status, exit_reason, restarts,"
			   " generation, snapshot, snapshot_gen, snapshot_clone, overlays,"
			   " incoming, outgoing FROM vms ORDER BY seq");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		db_row_record(st, &r);
		fn(arg, &r);      /* takes ownership of r's strings */
		n++;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return rc == SQLITE_DONE ? n : -EIO;
}

/* ---- snapshots ---- */

void snapshot_record_free(struct snapshot_record *r)
{
	free(r->dir);
	free(r->spec);
	free(r->disks);
	r->dir = r->spec = r->disks = NULL;
}

/* Run `st` (prepared, bound) and, if it changed a row and `ev_type` is
 * set, add an event on `ev_vm`, in one transaction (lock held by caller). */
static int db_write_with_event(struct db *s, sqlite3_stmt *st, bool want_change,
			       const char *ev_vm, const char *ev_type, const char *ev_detail,
			       int64_t *ev_id)
{
	int rc = db_exec(s, "BEGIN IMMEDIATE");

	if (rc) {
		sqlite3_finalize(st);
		return rc;
	}
	rc = db_step_done(s, st);
	if (!rc && want_change && sqlite3_changes(s->conn) == 0)
		rc = -ENOENT;
	return db_tx_end(s, rc, ev_vm, ev_type, ev_detail, ev_id);
}

int db_snapshot_insert(struct db *s, const struct snapshot_record *r, const char *ev_type,
		       const char *ev_detail, int64_t *ev_id)
{
	return db_snapshot_insert_vm(s, r, NULL, ev_type, ev_detail, ev_id);
}

int db_snapshot_insert_vm(struct db *s, const struct snapshot_record *r,
			  const struct vm_record *vm, const char *ev_type, const char *ev_detail,
			  int64_t *ev_id)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = db_exec(s, "BEGIN IMMEDIATE");
	if (rc)
		goto out;
	st = db_prepare(s,
		"INSERT INTO snapshots(name, vm, dir, spec, created_ms, size_bytes, memory_bytes,"
		" memory_data_bytes, vcpus, pause_ms, total_ms, disks, seq)"
		" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
		" (SELECT IFNULL(MAX(seq), 0) + 1 FROM snapshots))");
	if (!st) {
		rc = -EIO;
		goto end;
	}
	sqlite3_bind_text(st, 1, r->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, r->vm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, r->dir ? r->dir : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, r->spec ? r->spec : "{}", -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, r->created_ms);
	sqlite3_bind_int64(st, 6, r->size_bytes);
	sqlite3_bind_int64(st, 7, r->memory_bytes);
	sqlite3_bind_int64(st, 8, r->memory_data_bytes);
	sqlite3_bind_int64(st, 9, r->vcpus);
	sqlite3_bind_double(st, 10, r->pause_ms);
	sqlite3_bind_double(st, 11, r->total_ms);
	if (r->disks)
		sqlite3_bind_text(st, 12, r->disks, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 12);
	rc = db_step_done(s, st);
	if (!rc && vm) {
		st = db_prepare(s, DB_VM_UPDATE_SQL);
		if (!st) {
			rc = -EIO;
			goto end;
		}
		db_bind_record(st, vm);
		rc = db_step_done(s, st);
		if (!rc && sqlite3_changes(s->conn) == 0)
			rc = -ENOENT;
	}
end:
	rc = db_tx_end(s, rc, r->vm, ev_type, ev_detail, ev_id);
out:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_snapshot_delete(struct db *s, const char *name, const char *ev_vm,
		       const char *ev_type, const char *ev_detail, int64_t *ev_id)
{
	sqlite3_stmt *st;
	int rc = -EIO;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "DELETE FROM snapshots WHERE name = ?");
	if (st) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
		rc = db_write_with_event(s, st, true, ev_vm, ev_type, ev_detail, ev_id);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

#define DB_SNAPSHOT_COLUMNS "name, vm, dir, spec, created_ms, size_bytes, memory_bytes," \
	" memory_data_bytes, vcpus, pause_ms, total_ms, disks"

/* Fill `r` from a row of DB_SNAPSHOT_COLUMNS. */
static void db_row_snapshot(sqlite3_stmt *st, struct snapshot_record *r)
{
	const unsigned char *t;

	memset(r, 0, sizeof(*r));
	t = sqlite3_column_text(st, 0);
	snprintf(r->name, sizeof(r->name), "%s", t ? (const char *)t : "");
	t = sqlite3_column_text(st, 1);
	snprintf(r->vm, sizeof(r->vm), "%s", t ? (const char *)t : "");
	r->dir = db_col_strdup(st, 2);
	r->spec = db_col_strdup(st, 3);
	r->created_ms = sqlite3_column_int64(st, 4);
	r->size_bytes = sqlite3_column_int64(st, 5);
	r->memory_bytes = sqlite3_column_int64(st, 6);
	r->memory_data_bytes = sqlite3_column_int64(st, 7);
	r->vcpus = (int)sqlite3_column_int64(st, 8);
	r->pause_ms = sqlite3_column_double(st, 9);
	r->total_ms = sqlite3_column_double(st, 10);
	r->disks = db_col_strdup(st, 11);
}

int db_snapshot_get(struct db *s, const char *name, struct snapshot_record *out)
{
	sqlite3_stmt *st;
	int rc = -EIO;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "SELECT " DB_SNAPSHOT_COLUMNS " FROM snapshots WHERE name = ?");
	if (st) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			db_row_snapshot(st, out);
			rc = (!out->dir || !out->spec) ? -ENOMEM : 0;
			if (rc)
				snapshot_record_free(out);
		} else {
			rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
		}
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_snapshot_load_all(struct db *s, void (*fn)(void *arg, struct snapshot_record *r),
			 void *arg)
{
	struct snapshot_record r;
	sqlite3_stmt *st;
	int rc, n = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "SELECT " DB_SNAPSHOT_COLUMNS " FROM snapshots ORDER BY seq");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		db_row_snapshot(st, &r);
		fn(arg, &r);
		n++;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return rc == SQLITE_DONE ? n : -EIO;
}

int db_event_add(struct db *s, const char *vm, const char *type,
		    const char *detail, int64_t *id)
{
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = db_event_insert(s, vm, type, detail, id);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_events_since(struct db *s, int64_t since, const char *vm,
		       struct db_event *out, int max)
{
	sqlite3_stmt *st;
	const unsigned char *t;
	int rc, n = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, vm ?
		"SELECT id, ts_ms, vm, type, detail FROM events WHERE id > ? AND vm = ? ORDER BY id LIMIT ?" :
		"SELECT id, ts_ms, vm, type, detail FROM events WHERE id > ? ORDER BY id LIMIT ?");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	sqlite3_bind_int64(st, 1, since);
	if (vm)
		sqlite3_bind_text(st, 2, vm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, vm ? 3 : 2, max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct db_event *ev = &out[n++];

		memset(ev, 0, sizeof(*ev));
		ev->id = sqlite3_column_int64(st, 0);
		ev->ts_ms = sqlite3_column_int64(st, 1);
		t = sqlite3_column_text(st, 2);
		snprintf(ev->vm, sizeof(ev->vm), "%s", t ? (const char *)t : "");
		t = sqlite3_column_text(st, 3);
		snprintf(ev->type, sizeof(ev->type), "%s", t ? (const char *)t : "");
		ev->detail = db_col_strdup(st, 4);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return n;
}

void db_event_free(struct db_event *ev)
{
	free(ev->detail);
	ev->detail = NULL;
}

int64_t db_last_event_id(struct db *s)
{
	sqlite3_stmt *st;
	int64_t id = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "SELECT IFNULL(MAX(id), 0) FROM events");
	if (st && sqlite3_step(st) == SQLITE_ROW)
		id = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return id;
}

int db_check(struct db *s)
{
	sqlite3_stmt *st;
	int ok = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "PRAGMA integrity_check");
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		ok = t && !strcmp((const char *)t, "ok");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return ok ? 0 : -EIO;
}

/* ---- networks (net.c) ---- */

int db_net_insert(struct db *s, const struct net_record *r)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "INSERT INTO networks(name, subnet, isolated, created_ms, seq)"
			" VALUES(?, ?, ?, ?, (SELECT IFNULL(MAX(seq), 0) + 1 FROM networks))");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->subnet, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, r->isolated);
	sqlite3_bind_int64(st, 4, r->created_ms);
	rc = db_step_done(s, st);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_net_delete(struct db *s, const char *name)
{
	sqlite3_stmt *st;
	int rc;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "DELETE FROM networks WHERE name = ?");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = db_step_done(s, st);
	if (!rc && sqlite3_changes(s->conn) == 0)
		rc = -ENOENT;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int db_net_load_all(struct db *s, void (*fn)(void *arg, const struct net_record *r), void *arg)
{
	struct net_record r;
	sqlite3_stmt *st;
	int rc, n = 0;

	pthread_mutex_lock(&s->lock);
	st = db_prepare(s, "SELECT name, subnet, isolated, created_ms FROM networks ORDER BY seq");
	if (!st) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&r, 0, sizeof(r));
		snprintf(r.name, sizeof(r.name), "%s", (const char *)sqlite3_column_text(st, 0) ?: "");
		snprintf(r.subnet, sizeof(r.subnet), "%s", (const char *)sqlite3_column_text(st, 1) ?: "");
		r.isolated = sqlite3_column_int(st, 2) != 0;
		r.created_ms = sqlite3_column_int64(st, 3);
		fn(arg, &r);
		n++;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return rc == SQLITE_DONE ? n : -EIO;
}
