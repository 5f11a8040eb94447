/*
 * test_host_store.c - the pure parts of shoald's snapshots through the
 * store (src/host/api_store.c): the description a pushed snapshot carries
 * (round trip; refused when it is not one; a "vm" that is no VM name
 * becomes "-"), and the exported manifest made this host's (the export's
 * disk-N.raw records, and the config's disk at the same index, point into
 * the new directory; other disks are left alone; "confine" is this
 * host's; a file of the export that is not disk-N.raw is refused); the
 * routes exist with the admin role.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/api.h"
#include "host/hoststore.h"

static void test_meta_round_trip(void **state)
{
	struct snapshot_record r = { 0 }, b = { 0 };
	char err[200], *text;
	json_t *spec;

	(void)state;
	snprintf(r.name, sizeof(r.name), "s1");
	snprintf(r.vm, sizeof(r.vm), "web-1");
	r.spec = "{\"name\": \"web-1\", \"kernel\": \"/k\", \"restart\": \"always\"}";
	r.created_ms = 1765000000123;
	r.vcpus = 2;
	r.memory_bytes = 64 << 20;
	r.memory_data_bytes = 16 << 20;
	r.pause_ms = 12.5;
	r.total_ms = 40.25;
	text = hstore_meta_dump(&r);
	assert_non_null(text);
	assert_int_equal(hstore_meta_parse(text, &b, err, sizeof(err)), 0);
	assert_string_equal(b.vm, "web-1");
	assert_int_equal(b.created_ms, r.created_ms);
	assert_int_equal(b.vcpus, 2);
	assert_int_equal(b.memory_bytes, 64 << 20);
	assert_int_equal(b.memory_data_bytes, 16 << 20);
	assert_true(b.pause_ms == 12.5 && b.total_ms == 40.25);
	spec = json_loads(b.spec, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(spec, "restart")), "always");
	json_decref(spec);
	free(b.spec);
	free(text);
}

static void test_meta_refused(void **state)
{
	static const char *const bad[] = {
		"not json",
		"[]",
		"{\"format\": \"shoal-snapshot\", \"version\": 1, \"spec\": {}}",
		"{\"format\": \"shoald-snapshot\", \"version\": 2, \"spec\": {}}",
		"{\"format\": \"shoald-snapshot\", \"version\": 1, \"spec\": \"x\"}",
		"{\"format\": \"shoald-snapshot\", \"version\": 1}",
	};
	struct snapshot_record b = { 0 };
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(hstore_meta_parse(bad[i], &b, err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
		assert_null(b.spec);
	}
	assert_int_equal(hstore_meta_parse("{\"format\": \"shoald-snapshot\", \"version\": 1, "
					   "\"vm\": \"../etc\", \"vcpus\": -3, \"spec\": {}}",
					   &b, err, sizeof(err)), 0);
	assert_string_equal(b.vm, "-");
	assert_int_equal(b.vcpus, 0);
	free(b.spec);
}

static void test_relocate(void **state)
{
	const char *text =
		"{\"format\": \"shoal-snapshot\", \"disks\": ["
		"{\"path\": \"/st/snapshots/.pull-s1-9/disk-0.raw\", \"writable\": true},"
		"{\"path\": \"/srv/base.img\", \"writable\": false},"
		"{\"path\": \"/st/snapshots/.pull-s1-9/disk-2.raw\", \"writable\": false}],"
		"\"config\": {\"confine\": [\"/other/host\"], \"disks\": ["
		"{\"path\": \"/st/snapshots/.pull-s1-9/disk-0.raw\"}, {\"path\": \"/srv/base.img\"},"
		"{\"path\": \"/st/snapshots/.pull-s1-9/disk-2.raw\"}]}}";
	const char *confine[2] = { "/srv/a", "/srv/b" };
	char moved[4][32], err[200];
	json_t *m = json_loads(text, 0, NULL), *cfg;

	(void)state;
	assert_int_equal(hstore_relocate(m, "/st/snapshots/.pull-s1-9", "/srv/a/snapshots-pulled/s1",
					 confine, 2, moved, 4, err, sizeof(err)), 2);
	assert_string_equal(moved[0], "disk-0.raw");
	assert_string_equal(moved[1], "disk-2.raw");
	cfg = json_object_get(m, "config");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(m, "disks"), 0), "path")),
			    "/srv/a/snapshots-pulled/s1/disk-0.raw");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(m, "disks"), 1), "path")),
			    "/srv/base.img");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(cfg, "disks"), 2), "path")),
			    "/srv/a/snapshots-pulled/s1/disk-2.raw");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(cfg, "disks"), 1), "path")),
			    "/srv/base.img");
	assert_int_equal(json_array_size(json_object_get(cfg, "confine")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(cfg, "confine"), 1)), "/srv/b");
	json_decref(m);

	/* a file of the export that is not disk-N.raw; more disks than room; no config */
	m = json_loads("{\"disks\": [{\"path\": \"/x/manifest.json\"}], \"config\": {}}", 0, NULL);
	assert_int_equal(hstore_relocate(m, "/x", "/y", confine, 1, moved, 4, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not disk-N.raw"));
	json_decref(m);
	m = json_loads("{\"disks\": [{\"path\": \"/x/disk-0.raw\"}, {\"path\": \"/x/disk-1.raw\"}], "
		       "\"config\": {}}", 0, NULL);
	assert_int_equal(hstore_relocate(m, "/x", "/y", confine, 1, moved, 1, err, sizeof(err)), -1);
	json_decref(m);
	m = json_loads("{\"disks\": []}", 0, NULL);
	assert_int_equal(hstore_relocate(m, "/x", "/y", confine, 1, moved, 1, err, sizeof(err)), -1);
	json_decref(m);
	/* a prefix that is not the directory: /x2/disk-0.raw is not in /x */
	m = json_loads("{\"disks\": [{\"path\": \"/x2/disk-0.raw\"}], \"config\": {}}", 0, NULL);
	assert_int_equal(hstore_relocate(m, "/x", "/y", confine, 1, moved, 1, err, sizeof(err)), 0);
	json_decref(m);
}

static void test_routes(void **state)
{
	char name[HOST_NAME_MAX_LEN + 1];
	const struct api_route *r;
	int status;

	(void)state;
	r = api_route_find("POST", "/v1/snapshots/s1/push", name, sizeof(name), &status);
	assert_non_null(r);
	assert_int_equal(r->need, HOST_ROLE_ADMIN);
	assert_string_equal(name, "s1");
	r = api_route_find("POST", "/v1/snapshots/s1/pull", name, sizeof(name), &status);
	assert_non_null(r);
	assert_int_equal(r->need, HOST_ROLE_ADMIN);
	assert_null(api_route_find("GET", "/v1/snapshots/s1/pull", name, sizeof(name), &status));
	assert_int_equal(status, 405);
	assert_null(api_route_find("POST", "/v1/snapshots/..%2f/pull", name, sizeof(name), &status));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_meta_round_trip),
		cmocka_unit_test(test_meta_refused),
		cmocka_unit_test(test_relocate),
		cmocka_unit_test(test_routes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
