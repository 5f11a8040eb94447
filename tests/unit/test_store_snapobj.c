/*
 * test_store_snapobj.c - snapshot objects of the image store
 * (store/snapobj.c) in a temporary directory: a snapshot directory goes
 * in and comes back byte for byte (a memory file with zero pages as holes,
 * a state file of an odd length, manifest.json); a second clone of it adds
 * few new chunks; the object's layout (snapshot.json, PART.mf) and the
 * one namespace with images; the description a server sends passes its
 * own check, and a description naming a path outside the object, a disk
 * without its part or a part nothing names is refused; a damaged
 * snapshot.json is an error naming it; rm + gc frees the chunks only the
 * removed object had, and verify stays clean; a killed writer's leftover
 * object is removed by the next writer.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "store/snapobj.h"
#include "store/store.h"

#define MEM (4u << 20)
#define STATE 12345u

static char dir[] = "/tmp/test_store_snapobj.XXXXXX";
static char sdir[300], snap1[300], snap2[300];
static uint8_t *mem1, *mem2, *state;

static void fill_random(uint8_t *b, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		b[i] = (uint8_t)(seed >> 33);
	}
}

static void write_file(const char *path, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
	close(fd);
}

static uint8_t *read_whole(const char *path, size_t *n)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc(st.st_size + 1);
	assert_int_equal(read(fd, b, st.st_size), st.st_size);
	close(fd);
	*n = st.st_size;
	return b;
}

static void make_snap(const char *d, const uint8_t *mem)
{
	char p[400];

	assert_int_equal(mkdir(d, 0755), 0);
	snprintf(p, sizeof(p), "%s/memory", d);
	write_file(p, mem, MEM);
	snprintf(p, sizeof(p), "%s/state", d);
	write_file(p, state, STATE);
	snprintf(p, sizeof(p), "%s/manifest.json", d);
	write_file(p, "{\"format\": \"shoal-snapshot\", \"version\": 1, \"disks\": []}\n", 56);
}

static int setup(void **st)
{
	(void)st;
	if (!mkdtemp(dir))
		return -1;
	mem1 = calloc(1, MEM);
	mem2 = malloc(MEM);
	state = malloc(STATE);
	fill_random(mem1, MEM / 2, 7);			/* the upper half: zero pages */
	memcpy(mem2, mem1, MEM);
	fill_random(mem2 + (1 << 20), 64 << 10, 8);	/* the clone's own 64 KiB */
	fill_random(state, STATE, 9);
	snprintf(sdir, sizeof(sdir), "%s/store", dir);
	snprintf(snap1, sizeof(snap1), "%s/snap1", dir);
	snprintf(snap2, sizeof(snap2), "%s/snap2", dir);
	make_snap(snap1, mem1);
	make_snap(snap2, mem2);
	return store_init(sdir, NULL, NULL);
}

static int teardown(void **st)
{
	char cmd[400];

	(void)st;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	free(mem1);
	free(mem2);
	free(state);
	return system(cmd);
}

static void assert_file_is(const char *path, const void *want, size_t n)
{
	size_t got;
	uint8_t *b = read_whole(path, &got);

	assert_int_equal(got, n);
	assert_memory_equal(b, want, n);
	free(b);
}

static void test_round_trip_and_dedup(void **st)
{
	struct store *s;
	struct store_snap_stats a, b;
	struct error e = { 0 };
	char out[400], p[500];
	struct stat sb;

	(void)st;
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_snap_import(s, snap1, "one", &a, NULL, NULL, &e), 0);
	assert_int_equal(a.files, 3);
	assert_int_equal(a.disks, 0);
	assert_int_equal(a.raw_bytes, MEM + STATE + 56);
	assert_true(a.zero_chunks > 0);		/* the zero half is not stored */
	assert_true(a.new_bytes < MEM / 2 + STATE + 56 + (64u << 10));	/* + a chunk across the edge */
	assert_int_equal(store_snap_import(s, snap2, "two", &b, NULL, NULL, &e), 0);
	assert_true(b.new_bytes < 256u << 10);	/* the clone's own pages and their neighbours */
	/* the layout: snapshots/NAME/{snapshot.json, PART.mf} */
	snprintf(p, sizeof(p), "%s/snapshots/one/snapshot.json", sdir);
	assert_int_equal(stat(p, &sb), 0);
	snprintf(p, sizeof(p), "%s/snapshots/one/memory.mf", sdir);
	assert_int_equal(stat(p, &sb), 0);
	store_close(s);

	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	snprintf(out, sizeof(out), "%s/out-two", dir);
	assert_int_equal(store_snap_export(s, "two", out, &e), 0);
	snprintf(p, sizeof(p), "%s/memory", out);
	assert_file_is(p, mem2, MEM);
	assert_int_equal(stat(p, &sb), 0);
	assert_true((uint64_t)sb.st_blocks * 512 < MEM * 3 / 4);	/* holes where zero */
	snprintf(p, sizeof(p), "%s/state", out);
	assert_file_is(p, state, STATE);
	/* an existing OUTDIR is refused */
	assert_int_equal(store_snap_export(s, "two", out, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	assert_non_null(strstr(e.msg, "already exists"));
	/* an unknown name */
	snprintf(out, sizeof(out), "%s/out-x", dir);
	assert_int_equal(store_snap_export(s, "nosuch", out, &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, "no snapshot named 'nosuch'"));
	assert_int_not_equal(access(out, F_OK), 0);

	struct store_snap_info *v;
	size_t n;

	assert_int_equal(store_snap_list(s, &v, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "one");
	assert_int_equal(v[1].bytes, MEM + STATE + 56);
	free(v);
	store_close(s);
}

static void test_one_namespace(void **st)
{
	struct store *s;
	struct store_snap_stats a;
	struct error e = { 0 };

	(void)st;
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_snap_import(s, snap1, "one", &a, NULL, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "a snapshot named 'one' is already in the store"));
	/* an image may not take the name either */
	struct store_manifest m = { .size = 0, .n = 0 };

	assert_int_equal(store_manifest_put(s, "one", &m, &e), -1);
	assert_non_null(strstr(e.msg, "a snapshot named 'one'"));
	assert_int_equal(store_snap_import(s, dir, "bad", &a, NULL, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "not a snapshot directory"));
	store_close(s);
}

static void test_description(void **st)
{
	struct store *s;
	struct error e = { 0 };
	json_t *d, *x;

	(void)st;
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	d = store_snap_describe(s, "one", &e);
	assert_non_null(d);
	assert_int_equal(store_snap_check_desc(d, "t", &e), 0);
	assert_int_equal(json_object_size(json_object_get(d, "parts")), 3);
	/* a file named as a path out of the object */
	x = json_deep_copy(d);
	json_object_set_new(json_array_get(json_object_get(x, "files"), 0), "name", json_string("../evil"));
	assert_int_equal(store_snap_check_desc(x, "t", &e), -1);
	json_decref(x);
	/* a part that no file or disk names */
	x = json_deep_copy(d);
	json_object_set(json_object_get(x, "parts"), "extra", json_object_get(json_object_get(x, "parts"), "state"));
	assert_int_equal(store_snap_check_desc(x, "t", &e), -1);
	json_decref(x);
	/* a disk without its part */
	x = json_deep_copy(d);
	json_array_append_new(json_object_get(x, "disks"), json_pack("{s:i, s:s}", "index", 0, "part", "disk-0"));
	assert_int_equal(store_snap_check_desc(x, "t", &e), -1);
	assert_non_null(strstr(e.msg, "disk 0"));
	json_decref(x);
	/* the chunks it lists are the ones a server may send for it */
	uint8_t(*h)[32];
	size_t n;

	assert_int_equal(store_snap_hashes(s, "one", &h, &n, &e), 0);
	assert_true(n > 0);
	free(h);
	json_decref(d);
	store_close(s);
}

static void test_rm_gc_damage(void **st)
{
	struct store *s;
	struct store_gc_stats g;
	struct error e = { 0 };
	char p[500], out[400];
	uint64_t checked;

	(void)st;
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_equal(store_snap_rm(s, "two", &e), 0);
	assert_false(store_snap_exists(s, "two"));
	assert_int_equal(store_snap_rm(s, "two", &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_int_equal(store_gc(s, &g, &e), 0);
	assert_true(g.dead_chunks > 0);		/* two's own pages */
	store_close(s);
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	assert_int_equal(store_verify(s, NULL, NULL, &checked, &e), 0);
	snprintf(out, sizeof(out), "%s/out-one", dir);
	assert_int_equal(store_snap_export(s, "one", out, &e), 0);
	snprintf(p, sizeof(p), "%s/memory", out);
	assert_file_is(p, mem1, MEM);
	store_close(s);

	/* a damaged snapshot.json: an error naming it */
	snprintf(p, sizeof(p), "%s/snapshots/one/snapshot.json", sdir);
	write_file(p, "{\"format\": 1}", 13);
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	snprintf(out, sizeof(out), "%s/out-bad", dir);
	assert_int_equal(store_snap_export(s, "one", out, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_non_null(strstr(e.msg, "snapshots/one/snapshot.json: damaged"));
	assert_int_not_equal(access(out, F_OK), 0);
	store_close(s);

	/* a killed writer's leftover goes at the next writer's open */
	snprintf(p, sizeof(p), "%s/snapshots/.x.tmp-1", sdir);
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	assert_int_not_equal(access(p, F_OK), 0);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_and_dedup),
		cmocka_unit_test(test_one_namespace),
		cmocka_unit_test(test_description),
		cmocka_unit_test(test_rm_gc_damage),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
