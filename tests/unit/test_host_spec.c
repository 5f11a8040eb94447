/*
 * test_host_spec.c - the daemon's VM spec: the VMM's defaults filled in,
 * daemon keys split from the VMM's object, every kind of bad input refused
 * with 400 and a message that names the field; VM names; the API's pure
 * parsers (routes, query values, the stop body).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "host/api.h"
#include "host/cgroup.h"
#include "host/spec.h"
#include "boot/boot.h"

#define KERNEL "/bin/true"      /* any readable regular file will do here */

static void test_defaults_and_split(void **state)
{
	const char *text = "{\"name\": \"web1\", \"kernel\": \"" KERNEL "\", \"restart\": \"always\"}";
	struct host_spec s;
	struct api_err e;
	json_t *spec, *cfg;
	char *again;

	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &e), 0);
	assert_string_equal(s.name, "web1");
	assert_int_equal(s.restart, RESTART_ALWAYS);
	assert_int_equal(s.cfg.cpus, 1);                     /* the VMM's defaults */
	assert_int_equal(s.cfg.memory, 256ULL << 20);
	spec = json_loads(s.spec_json, 0, NULL);
	cfg = vm_config_to_json(&s.cfg);
	assert_string_equal(json_string_value(json_object_get(spec, "name")), "web1");
	assert_string_equal(json_string_value(json_object_get(spec, "restart")), "always");
	assert_int_equal(json_integer_value(json_object_get(spec, "memory")), 256 << 20);
	/* the VMM's object has no daemon keys: `shoal run --config` takes it */
	assert_null(json_object_get(cfg, "name"));
	assert_null(json_object_get(cfg, "restart"));
	assert_string_equal(json_string_value(json_object_get(cfg, "kernel")), KERNEL);
	json_decref(spec);
	json_decref(cfg);
	/* the stored form is canonical: read back, it renders the same */
	again = strdup(s.spec_json);
	host_spec_free(&s);
	assert_int_equal(host_spec_parse(again, strlen(again), true, &s, &e), 0);
	assert_string_equal(s.spec_json, again);
	host_spec_free(&s);
	free(again);
}

/* A disk path with a comma (issue 9): JSON carries any character, so the
 * spec is accepted, checked (the file is opened by that name) and stored
 * with the path whole; so are the other devices' values. */
static void test_comma_path(void **state)
{
	char dir[] = "/tmp/shoal-spec-XXXXXX", img[64], sock[64], text[512], *stored;
	struct host_spec s;
	struct api_err e;
	json_t *spec, *d;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(img, sizeof(img), "%s/a,b.img", dir);
	f = fopen(img, "w");
	assert_non_null(f);
	assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
	fclose(f);
	snprintf(text, sizeof(text),
		 "{\"name\": \"c\", \"kernel\": \"" KERNEL "\", \"disks\": [{\"path\": \"%s\", "
		 "\"readonly\": true, \"serial\": \"s,1\"}], \"nets\": [{\"tap\": \"tap,0\"}], "
		 "\"vsock\": {\"cid\": 3, \"socket\": \"%s/v,sock\"}}", img, dir);
	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &e), 0);
	assert_int_equal(s.cfg.ndisks, 1);
	assert_string_equal(s.cfg.disks[0].path, img);
	assert_true(s.cfg.disks[0].readonly);
	assert_string_equal(s.cfg.disks[0].serial, "s,1");
	assert_string_equal(s.cfg.nets[0].tap, "tap,0");
	spec = json_loads(s.spec_json, 0, NULL);
	assert_non_null(spec);
	d = json_array_get(json_object_get(spec, "disks"), 0);
	assert_string_equal(json_string_value(json_object_get(d, "path")), img);
	assert_string_equal(json_string_value(json_object_get(d, "serial")), "s,1");
	snprintf(sock, sizeof(sock), "%s/v,sock", dir);
	assert_string_equal(json_string_value(json_object_get(json_object_get(spec, "vsock"), "socket")),
			    sock);
	json_decref(spec);
	/* the stored text is read back whole, as at each start */
	stored = strdup(s.spec_json);
	host_spec_free(&s);
	assert_int_equal(host_spec_parse(stored, strlen(stored), true, &s, &e), 0);
	assert_string_equal(s.cfg.disks[0].path, img);
	assert_string_equal(s.spec_json, stored);
	host_spec_free(&s);
	free(stored);
	unlink(img);
	rmdir(dir);
}

/* Parse `text`; expect 400 with `code` and `needle` in the message. */
static void expect_bad(const char *text, bool check_host, const char *code, const char *needle)
{
	struct host_spec s;
	struct api_err e;

	memset(&e, 0, sizeof(e));
	assert_int_equal(host_spec_parse(text, strlen(text), check_host, &s, &e), -1);
	assert_int_equal(e.http, 400);
	assert_string_equal(e.code, code);
	if (!strstr(e.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
}

/* Parse `text` with the host checks; expect 403 path_not_allowed. */
static void expect_refused(const char *text, const char *needle)
{
	struct host_spec s;
	struct api_err e;

	memset(&e, 0, sizeof(e));
	assert_int_equal(host_spec_parse(text, strlen(text), true, &s, &e), -1);
	assert_int_equal(e.http, 403);
	assert_string_equal(e.code, "path_not_allowed");
	if (!strstr(e.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
}

static void test_bad_specs(void **state)
{
	expect_bad("{\"name\": \"a\",", false, "invalid_json", "line 1");
	expect_bad("", false, "invalid_json", "spec");
	expect_bad("{\"name\": \"a\", \"name\": \"b\"}", false, "invalid_json", "duplicate");
	expect_bad("[]", false, "invalid_spec", "object");
	expect_bad("{\"kernel\": \"" KERNEL "\"}", false, "invalid_spec", "name: missing");
	expect_bad("{\"name\": 3}", false, "invalid_spec", "name");
	expect_bad("{\"name\": \"-x\", \"kernel\": \"k\"}", false, "invalid_spec", "name");
	expect_bad("{\"name\": \"a/b\", \"kernel\": \"k\"}", false, "invalid_spec", "name");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"restart\": \"yes\"}", false, "invalid_spec", "restart");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"colour\": 1}", false, "invalid_spec", "\"colour\"");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"cpus\": \"2\"}", false, "invalid_spec", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"cpus\": 0}", false, "invalid_spec", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"cpus\": 65}", false, "invalid_spec", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"memory\": \"1K\"}", false, "invalid_spec", "memory");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"memory\": \"99999T\"}", false, "invalid_spec", "memory");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"memory\": -1}", false, "invalid_spec", "memory");
	expect_bad("{\"name\": \"a\"}", false, "invalid_spec", "kernel");
	expect_bad("{\"name\": \"a\", \"kernel\": 1}", false, "invalid_spec", "kernel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"console\": \"tty\"}", false, "invalid_spec", "console");
	/* what only the host can tell */
	expect_bad("{\"name\": \"a\", \"kernel\": \"rel/vmlinux\"}", true, "invalid_spec", "not an absolute path");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/nonexistent\"}", true, "invalid_spec", "kernel: /nonexistent: No such file");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/tmp\"}", true, "invalid_spec", "not a regular file");
	expect_bad("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"initrd\": \"/nonexistent\"}", true,
		   "invalid_spec", "initrd");
	expect_bad("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"memory\": \"1000G\"}", true,
		   "invalid_spec", "more than this host has");
	/* console files are plain names in the VM's directory (issue 16) */
	expect_refused("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"console\": \"file:/etc/cron.d/x\"}",
		       "own directory");
	expect_refused("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"console\": \"file:../x\"}",
		       "own directory");
	expect_bad("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"console\": \"file:vmm.log\"}", true,
		   "invalid_spec", "daemon's own files");
	expect_bad("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"console\": \"file:.x\"}", true,
		   "invalid_spec", "console");
	expect_refused("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"virtio_console\": \"file:/tmp/x\"}",
		       "virtio_console");
	/* a TAP descriptor number would be one of the VMM's own files */
	expect_refused("{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"nets\": [{\"fd\": 5}]}", "fd=5");
	/* only the daemon confines */
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"confine\": [\"/\"]}", false,
		   "invalid_spec", "confine");
}

/* The memory layer's switches (docs/memory.md): "zero_scan" (a page rate
 * or "off") and "mem_recovery" are kept in the canonical spec, reach the
 * VMM's config, are refused when bad (400 naming the field), are not
 * taken together, and go on a restore's command line. */
static void test_memory_layer_keys(void **state)
{
	const char *z = "{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"zero_scan\": 5000}";
	const char *r = "{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"mem_recovery\": true}";
	const char *off = "{\"name\": \"a\", \"kernel\": \"" KERNEL "\", \"zero_scan\": \"off\"}";
	char *argv[4], buf[128];
	struct host_spec s;
	struct api_err e;
	json_t *spec;
	char *again;

	assert_int_equal(host_spec_parse(z, strlen(z), true, &s, &e), 0);
	assert_true(s.cfg.zero_on && !s.cfg.zero_off && !s.cfg.mem_recovery);
	assert_int_equal(s.cfg.zero_scan, 5000);
	spec = json_loads(s.spec_json, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(spec, "zero_scan")), 5000);
	assert_null(json_object_get(spec, "mem_recovery"));
	json_decref(spec);
	assert_int_equal(host_snapshot_restore_args("a", s.spec_json, argv, 4, buf, sizeof(buf)), 1);
	assert_string_equal(argv[0], "--zero-scan=5000");
	again = strdup(s.spec_json);
	host_spec_free(&s);
	assert_int_equal(host_spec_parse(again, strlen(again), true, &s, &e), 0);
	assert_string_equal(s.spec_json, again);
	assert_int_equal(s.cfg.zero_scan, 5000);
	host_spec_free(&s);
	free(again);

	assert_int_equal(host_spec_parse(r, strlen(r), true, &s, &e), 0);
	assert_true(s.cfg.mem_recovery && !s.cfg.zero_on);
	spec = json_loads(s.spec_json, 0, NULL);
	assert_true(json_is_true(json_object_get(spec, "mem_recovery")));
	assert_null(json_object_get(spec, "zero_scan"));
	json_decref(spec);
	assert_int_equal(host_snapshot_restore_args("a", s.spec_json, argv, 4, buf, sizeof(buf)), 1);
	assert_string_equal(argv[0], "--mem-recovery");
	host_spec_free(&s);

	/* "off" is the default: nothing kept, nothing on the command line */
	assert_int_equal(host_spec_parse(off, strlen(off), true, &s, &e), 0);
	assert_true(s.cfg.zero_off && !s.cfg.zero_on);
	assert_null(strstr(s.spec_json, "zero_scan"));
	assert_int_equal(host_snapshot_restore_args("a", s.spec_json, argv, 4, buf, sizeof(buf)), 0);
	host_spec_free(&s);

	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"zero_scan\": \"fast\"}", false,
		   "invalid_spec", "zero_scan");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"zero_scan\": -1}", false,
		   "invalid_spec", "zero_scan");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"zero_scan\": 10000001}", false,
		   "invalid_spec", "zero_scan");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"zero_scan\": 1.5}", false,
		   "invalid_spec", "zero_scan");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"mem_recovery\": \"yes\"}", false,
		   "invalid_spec", "mem_recovery");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"mem_recovery\": true, \"zero_scan\": 0}",
		   false, "invalid_spec", "mem_recovery: cannot go with zero_scan");
}

/* What the boot protocol cannot carry is refused at create, with the limit
 * `shoal run` applies (BOOT_CMDLINE_MAX), not when the VM starts. */
static void test_cmdline_limit(void **state)
{
	size_t n = 900 << 10;
	char *text = malloc(n + 128), *p;
	struct host_spec s;
	struct api_err e;

	p = text + sprintf(text, "{\"name\": \"a\", \"kernel\": \"k\", \"cmdline\": \"");
	memset(p, 'x', n);
	strcpy(p + n, "\"}");
	expect_bad(text, false, "invalid_spec", "cmdline: 921600 bytes");
	strcpy(p + BOOT_CMDLINE_MAX, "\"}");
	expect_bad(text, false, "invalid_spec", "at most 4095");
	strcpy(p + BOOT_CMDLINE_MAX - 1, "\"}");
	assert_int_equal(host_spec_parse(text, strlen(text), false, &s, &e), 0);
	host_spec_free(&s);
	free(text);
}

/* limits.io: sizes and counts taken, each rendered back (null where not
 * set); bad values and unknown keys refused naming them; and the disk
 * device io.max needs is refused, with the file system named, where there
 * is none. */
static void test_io_limits(void **state)
{
	const char *text = "{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": "
			   "{\"read_bps\": \"2M\", \"write_iops\": 40, \"read_iops\": null}}}";
	const char *none = "{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"cpus\": 1}}";
	char why[256];
	unsigned maj, min;
	struct statfs sf;
	struct host_spec s;
	struct api_err e;
	json_t *spec, *io;

	assert_int_equal(host_spec_parse(text, strlen(text), false, &s, &e), 0);
	assert_int_equal(s.limits.read_bps, 2 << 20);
	assert_int_equal(s.limits.write_iops, 40);
	assert_int_equal(s.limits.write_bps, 0);
	assert_int_equal(s.limits.read_iops, 0);
	spec = json_loads(s.spec_json, 0, NULL);
	io = json_object_get(json_object_get(spec, "limits"), "io");
	assert_int_equal(json_integer_value(json_object_get(io, "read_bps")), 2 << 20);
	assert_int_equal(json_integer_value(json_object_get(io, "write_iops")), 40);
	assert_true(json_is_null(json_object_get(io, "write_bps")));
	assert_true(json_is_null(json_object_get(io, "read_iops")));
	json_decref(spec);
	host_spec_free(&s);
	assert_int_equal(host_spec_parse(none, strlen(none), false, &s, &e), 0);
	spec = json_loads(s.spec_json, 0, NULL);
	assert_true(json_is_null(json_object_get(json_object_get(spec, "limits"), "io")));
	json_decref(spec);
	host_spec_free(&s);
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": 5}}", false,
		   "invalid_spec", "limits.io: must be an object");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": {\"rbps\": 1}}}", false,
		   "invalid_spec", "limits.io: unknown key \"rbps\"");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": {\"write_bps\": 0}}}", false,
		   "invalid_spec", "limits.io.write_bps: must be bytes per second");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": {\"read_bps\": \"fast\"}}}", false,
		   "invalid_spec", "limits.io.read_bps");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": {\"read_iops\": \"5\"}}}", false,
		   "invalid_spec", "limits.io.read_iops: must be a whole number");
	expect_bad("{\"name\": \"a\", \"kernel\": \"k\", \"limits\": {\"io\": {\"write_iops\": 1.5}}}", false,
		   "invalid_spec", "limits.io.write_iops");
	/* /proc has no block device; a missing file is named as such */
	assert_int_equal(host_cgroup_disk_device("/proc/self/status", &maj, &min, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "has no block device"));
	assert_int_equal(host_cgroup_disk_device("/nonexistent", &maj, &min, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "cannot stat it"));
	if (!statfs("/dev/shm", &sf) && sf.f_type == TMPFS_MAGIC) {
		assert_int_equal(host_cgroup_disk_device("/dev/shm", &maj, &min, why, sizeof(why)), -1);
		assert_non_null(strstr(why, "tmpfs"));
	}
}

static void test_names(void **state)
{
	char long_name[80];

	assert_true(host_name_valid("web1"));
	assert_true(host_name_valid("a"));
	assert_true(host_name_valid("A.b_c-9"));
	assert_false(host_name_valid(""));
	assert_false(host_name_valid(".hidden"));
	assert_false(host_name_valid("-x"));
	assert_false(host_name_valid("a b"));
	assert_false(host_name_valid("a/b"));
	assert_false(host_name_valid(".."));
	memset(long_name, 'a', 63);
	long_name[63] = '\0';
	assert_true(host_name_valid(long_name));
	long_name[63] = 'a';
	long_name[64] = '\0';
	assert_false(host_name_valid(long_name));
}

static void test_routes(void **state)
{
	char name[64];
	int status;
	const struct api_route *r;

	r = api_route_find("GET", "/v1/vms/web1", name, sizeof(name), &status);
	assert_non_null(r);
	assert_string_equal(r->path, "/v1/vms/{name}");
	assert_string_equal(name, "web1");
	r = api_route_find("POST", "/v1/vms/web1/stop", name, sizeof(name), &status);
	assert_non_null(r);
	assert_string_equal(r->path, "/v1/vms/{name}/stop");
	assert_null(api_route_find("PUT", "/v1/vms", name, sizeof(name), &status));
	assert_int_equal(status, 405);
	assert_null(api_route_find("GET", "/v1/nothing", name, sizeof(name), &status));
	assert_int_equal(status, 404);
	assert_null(api_route_find("GET", "/v1/vms/../etc", name, sizeof(name), &status));
	assert_int_equal(status, 404);
	assert_null(api_route_find("GET", "/v1/vms/a/b/c", name, sizeof(name), &status));
	assert_null(api_route_find("GET", "/v1/vms/", name, sizeof(name), &status));
	assert_null(api_route_find("GET", "/v1/vmsx", name, sizeof(name), &status));
	/* every route's template matches itself with a name filled in */
	for (size_t i = 0; i < api_nroutes; i++) {
		char path[128], *p;
		snprintf(path, sizeof(path), "%s", api_routes[i].path);
		if ((p = strstr(path, "{name}")))
			memmove(p + 1, p + 6, strlen(p + 6) + 1), *p = 'x';
		assert_ptr_equal(api_route_find(api_routes[i].method, path, name, sizeof(name), &status),
				 &api_routes[i]);
	}
}

static void test_query_and_stop_body(void **state)
{
	struct api_err e;
	bool force = false;
	int t = -1;

	assert_int_equal(api_parse_bool("true"), 1);
	assert_int_equal(api_parse_bool("0"), 0);
	assert_int_equal(api_parse_bool("maybe"), -1);
	assert_int_equal(api_parse_uint("42", 100), 42);
	assert_int_equal(api_parse_uint("101", 100), -1);
	assert_int_equal(api_parse_uint("-1", 100), -1);
	assert_int_equal(api_parse_uint("4x", 100), -1);
	assert_int_equal(api_parse_uint("", 100), -1);
	assert_int_equal(api_parse_stop_body("", strlen(""), &force, &t, &e), 0);
	assert_false(force);
	assert_int_equal(t, -1);
	assert_int_equal(api_parse_stop_body("{\"mode\": \"force\", \"timeout_s\": 7}", strlen("{\"mode\": \"force\", \"timeout_s\": 7}"), &force, &t, &e), 0);
	assert_true(force);
	assert_int_equal(t, 7);
	assert_int_equal(api_parse_stop_body("{\"mode\": \"hard\"}", strlen("{\"mode\": \"hard\"}"), &force, &t, &e), -1);
	assert_non_null(strstr(e.msg, "mode"));
	assert_int_equal(api_parse_stop_body("{\"timeout_s\": 99999}", strlen("{\"timeout_s\": 99999}"), &force, &t, &e), -1);
	assert_non_null(strstr(e.msg, "timeout_s"));
	assert_int_equal(api_parse_stop_body("{\"x\": 1}", strlen("{\"x\": 1}"), &force, &t, &e), -1);
	assert_int_equal(api_parse_stop_body("[", strlen("["), &force, &t, &e), -1);
	assert_string_equal(e.code, "invalid_json");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_split),
		cmocka_unit_test(test_bad_specs),
		cmocka_unit_test(test_memory_layer_keys),
		cmocka_unit_test(test_comma_path),
		cmocka_unit_test(test_cmdline_limit),
		cmocka_unit_test(test_io_limits),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_query_and_stop_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
