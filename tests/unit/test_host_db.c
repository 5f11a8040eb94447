/*
 * test_host_db.c - shoald's SQLite state (db.c) on a real database file: insert,
 * update, delete with their events in one transaction, name conflicts
 * rolled back whole, reopening, the event log, a version 2 database
 * upgraded (a clone's flag); and a random program of
 * operations checked against a naive in-memory reference model.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "host/db.h"

struct fixture {
	char dir[64];
	char path[128];
	struct db *s;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/shoal-db.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/shoald.db", f->dir);
	f->s = db_open(f->path, err, sizeof(err));
	assert_non_null(f->s);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[200];

	db_close(f->s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void record(struct vm_record *r, const char *name, const char *state)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->state, sizeof(r->state), "%s", state);
	r->spec = (char *)"{\"name\": \"x\"}";
	r->exit_status = -1;
	r->created_ms = 1000;
}

struct collected {
	struct vm_record r[64];
	int n;
};

static void collect(void *arg, struct vm_record *r)
{
	struct collected *c = arg;

	assert_true(c->n < 64);
	c->r[c->n++] = *r;        /* takes the strings */
}

static void collected_free(struct collected *c)
{
	for (int i = 0; i < c->n; i++)
		vm_record_free(&c->r[i]);
	c->n = 0;
}

static int count_events(struct db *s, const char *vm)
{
	struct db_event ev[256];
	int n = db_events_since(s, 0, vm, ev, 256);

	for (int i = 0; i < n; i++)
		db_event_free(&ev[i]);
	return n;
}

static void test_insert_update_delete(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct vm_record r;
	int64_t id = 0;

	record(&r, "web1", "created");
	assert_int_equal(db_vm_insert(f->s, &r, "created", NULL, &id), 0);
	assert_true(id > 0);
	/* the same name again: refused, and its event rolled back with it */
	assert_int_equal(db_vm_insert(f->s, &r, "created", NULL, NULL), -EEXIST);
	assert_int_equal(count_events(f->s, "web1"), 1);

	snprintf(r.state, sizeof(r.state), "running");
	r.vmm_pid = 4242;
	r.exit_reason = (char *)"guest exit code 3";
	r.exit_status = 3;
	assert_int_equal(db_vm_update(f->s, &r, "started", "{\"pid\": 4242}", NULL), 0);
	assert_int_equal(db_vm_load_all(f->s, collect, &c), 1);
	assert_string_equal(c.r[0].state, "running");
	assert_int_equal(c.r[0].vmm_pid, 4242);
	assert_int_equal(c.r[0].exit_status, 3);
	assert_string_equal(c.r[0].exit_reason, "guest exit code 3");
	assert_string_equal(c.r[0].spec, "{\"name\": \"x\"}");
	collected_free(&c);

	record(&r, "ghost", "running");
	assert_int_equal(db_vm_update(f->s, &r, "started", NULL, NULL), -ENOENT);
	assert_int_equal(count_events(f->s, "ghost"), 0);     /* rolled back */
	assert_int_equal(db_vm_delete(f->s, "ghost", "deleted", NULL, NULL), -ENOENT);
	assert_int_equal(db_vm_delete(f->s, "web1", "deleted", NULL, NULL), 0);
	assert_int_equal(db_vm_load_all(f->s, collect, &c), 0);
	assert_int_equal(count_events(f->s, "web1"), 3);
	assert_int_equal(db_check(f->s), 0);
}

static void test_order_and_reopen(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	const char *names[] = { "zeta", "alpha", "mid", "beta" };
	struct vm_record r;
	char err[256];

	for (int i = 0; i < 4; i++) {
		record(&r, names[i], "created");
		assert_int_equal(db_vm_insert(f->s, &r, "created", NULL, NULL), 0);
	}
	db_close(f->s);
	f->s = db_open(f->path, err, sizeof(err));
	assert_non_null(f->s);
	assert_int_equal(db_vm_load_all(f->s, collect, &c), 4);
	for (int i = 0; i < 4; i++)
		assert_string_equal(c.r[i].name, names[i]);   /* creation order */
	collected_free(&c);
	assert_int_equal(db_last_event_id(f->s), 4);
}

static void test_events_since(void **state)
{
	struct fixture *f = *state;
	struct db_event ev[8];
	int64_t id;
	int n;

	for (int i = 0; i < 5; i++)
		assert_int_equal(db_event_add(f->s, i % 2 ? "a" : "b", "started", "{\"i\": 1}", &id), 0);
	n = db_events_since(f->s, 2, NULL, ev, 8);
	assert_int_equal(n, 3);
	assert_int_equal(ev[0].id, 3);
	assert_string_equal(ev[0].vm, "b");
	assert_string_equal(ev[0].detail, "{\"i\": 1}");
	for (int i = 0; i < n; i++)
		db_event_free(&ev[i]);
	n = db_events_since(f->s, 0, "a", ev, 8);
	assert_int_equal(n, 2);
	assert_int_equal(ev[0].id, 2);
	assert_int_equal(ev[1].id, 4);
	for (int i = 0; i < n; i++)
		db_event_free(&ev[i]);
	assert_int_equal(db_events_since(f->s, 0, NULL, ev, 2), 2);   /* limit */
	db_event_free(&ev[0]);
	db_event_free(&ev[1]);
}

/* A naive model: names present and their pid, checked after every step. */
struct model {
	char name[16][8];
	int pid[16];
	bool present[16];
};

static void model_check(struct db *s, const struct model *m)
{
	struct collected c = { .n = 0 };
	int want = 0;

	for (int i = 0; i < 16; i++)
		want += m->present[i];
	assert_int_equal(db_vm_load_all(s, collect, &c), want);
	for (int k = 0; k < c.n; k++) {
		int i = atoi(c.r[k].name + 1);
		assert_true(m->present[i]);
		assert_int_equal(c.r[k].vmm_pid, m->pid[i]);
	}
	collected_free(&c);
}

static void test_random_program(void **state)
{
	struct fixture *f = *state;
	struct model m = { 0 };
	struct vm_record r;
	unsigned seed = 12345;
	int rc, events = 0;

	for (int i = 0; i < 16; i++)
		snprintf(m.name[i], sizeof(m.name[i]), "v%d", i);
	for (int step = 0; step < 600; step++) {
		seed = seed * 1103515245 + 12345;
		int i = (int)(seed >> 16) % 16, op = (int)(seed >> 8) % 3;
		record(&r, m.name[i], "created");
		r.vmm_pid = step;
		if (op == 0) {
			rc = db_vm_insert(f->s, &r, "created", NULL, NULL);
			assert_int_equal(rc, m.present[i] ? -EEXIST : 0);
			if (!rc) {
				m.present[i] = true;
				m.pid[i] = step;
			}
		} else if (op == 1) {
			rc = db_vm_update(f->s, &r, "started", NULL, NULL);
			assert_int_equal(rc, m.present[i] ? 0 : -ENOENT);
			if (!rc)
				m.pid[i] = step;
		} else {
			rc = db_vm_delete(f->s, m.name[i], "deleted", NULL, NULL);
			assert_int_equal(rc, m.present[i] ? 0 : -ENOENT);
			m.present[i] = false;
		}
		events += rc == 0;
		if (step % 50 == 0)
			model_check(f->s, &m);
	}
	model_check(f->s, &m);
	/* one event per successful change, none for the refused ones */
	assert_int_equal(db_last_event_id(f->s), events);
	assert_int_equal(db_check(f->s), 0);
}

/* Write c's one record, close `s`, open `path` again and load it back
 * into c: the database open now. */
static struct db *update_reopen(struct db *s, const char *path, struct collected *c)
{
	char err[256];

	assert_int_equal(db_vm_update(s, &c->r[0], NULL, NULL, NULL), 0);
	collected_free(c);
	db_close(s);
	s = db_open(path, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(db_vm_load_all(s, collect, c), 1);
	return s;
}

/* A version 2 database (before clones) opens upgraded to the last
 * version: its VM keeps its snapshot, is not a clone, and can be recorded
 * as one from then on; it has no live migration coming in or going out
 * (version 6), and each is kept across a reopen, and its clearing too. */
static void test_upgrade_2_3(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	char path[160], err[256];
	sqlite3 *conn;
	struct db *s;

	snprintf(path, sizeof(path), "%s/v2.db", f->dir);
	assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
	assert_int_equal(sqlite3_exec(conn,
		"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
		"CREATE TABLE vms(name TEXT PRIMARY KEY, seq INTEGER NOT NULL, spec TEXT NOT NULL,"
		" state TEXT NOT NULL, monitor_pid INTEGER NOT NULL DEFAULT 0,"
		" vmm_pid INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,"
		" started_ms INTEGER NOT NULL DEFAULT 0, exited_ms INTEGER NOT NULL DEFAULT 0,"
		" exit_status INTEGER NOT NULL DEFAULT -1, exit_reason TEXT,"
		" restarts INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0,"
		" snapshot TEXT, snapshot_gen INTEGER NOT NULL DEFAULT 0);"
		"INSERT INTO meta VALUES('schema_version', '2');"
		"INSERT INTO vms(name, seq, spec, state, created_ms, snapshot, snapshot_gen)"
		" VALUES('old', 1, '{}', 'exited', 5, 'snap', 1);", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(conn);

	s = db_open(path, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(db_vm_load_all(s, collect, &c), 1);
	assert_string_equal(c.r[0].snapshot, "snap");
	assert_int_equal(c.r[0].snapshot_gen, 1);
	assert_false(c.r[0].snapshot_clone);
	assert_null(c.r[0].incoming);       /* version 6's columns: none coming in, */
	assert_null(c.r[0].outgoing);       /* none going out */
	c.r[0].snapshot_clone = true;
	c.r[0].incoming = strdup("unix:/run/in.sock,key-file=/run/k");
	c.r[0].outgoing = strdup("https://b.example:7443");
	s = update_reopen(s, path, &c);
	assert_true(c.r[0].snapshot_clone);
	assert_string_equal(c.r[0].incoming, "unix:/run/in.sock,key-file=/run/k");
	assert_string_equal(c.r[0].outgoing, "https://b.example:7443");
	free(c.r[0].incoming);
	free(c.r[0].outgoing);
	c.r[0].incoming = c.r[0].outgoing = NULL;   /* ended: cleared, and kept so */
	s = update_reopen(s, path, &c);
	assert_null(c.r[0].incoming);
	assert_null(c.r[0].outgoing);
	collected_free(&c);
	assert_int_equal(db_check(s), 0);
	db_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_insert_update_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events_since, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_program, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_2_3, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
