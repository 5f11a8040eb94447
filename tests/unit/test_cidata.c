/*
 * test_cidata.c - the cloud-init NoCloud seed (boot/cidata.c): a seed
 * built from files is read back by an independent reader, genisoimage's
 * isoinfo (volume id, Rock Ridge and Joliet, the file names, each file's
 * exact bytes through both); the flag and JSON forms and their errors
 * (unknown key, a key twice, user-data or meta-data missing); files that
 * are missing, not regular, too large, or outside a confined process's
 * directories; the JSON form through vm_config; the daemon's spec checks
 * (paths absolute, regular, beneath its allowed directories: 400 and 403).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/path_beneath.h"
#include "boot/cidata.h"
#include "host/spec.h"
#include "vmm/config.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test_cidata-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* dir/name with these bytes; its path into `path`. */
static void put(const char *name, const void *buf, size_t len, char *path, size_t size)
{
	int fd;

	snprintf(path, size, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* Run `cmd` and return its whole output (malloc'd), its length in *len. */
static char *run_cmd(const char *cmd, size_t *len)
{
	FILE *p = popen(cmd, "r");
	char *out = malloc(1 << 20);
	size_t n = 0, r;

	assert_non_null(p);
	assert_non_null(out);
	while ((r = fread(out + n, 1, (1 << 20) - 1 - n, p)) > 0)
		n += r;
	out[n] = '\0';
	assert_int_equal(pclose(p), 0);
	if (len)
		*len = n;
	return out;
}

static void build_seed(const struct cidata_files *f, const char *path)
{
	struct error e = { 0 };
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	if (cidata_build(f, fd, &e))
		fail_msg("cidata_build: %s", e.msg);
	close(fd);
}

/* File `name` of the seed through Rock Ridge (-R) or Joliet (-J) equals buf. */
static void expect_file(const char *iso, const char *opt, const char *name, const void *buf,
			size_t len)
{
	char cmd[512];
	size_t n;
	char *out;

	snprintf(cmd, sizeof(cmd), "isoinfo -i %s %s -x /%s", iso, opt, name);
	out = run_cmd(cmd, &n);
	assert_int_equal(n, len);
	assert_memory_equal(out, buf, len);
	free(out);
}

static void test_seed_read_back(void **state)
{
	/* every byte value, and a line cloud-init would read */
	unsigned char ud[600];
	const char md[] = "instance-id: iid-shoal-1\nlocal-hostname: shoaltest\n";
	const char nc[] = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";
	char pu[256], pm[256], pn[256], iso[256], cmd[512];
	struct cidata_files f;
	char *out;

	memcpy(ud, "#cloud-config\n", 14);
	for (size_t i = 14; i < sizeof(ud); i++)
		ud[i] = (unsigned char)i;
	put("ud", ud, sizeof(ud), pu, sizeof(pu));
	put("md", md, strlen(md), pm, sizeof(pm));
	put("nc", nc, strlen(nc), pn, sizeof(pn));
	snprintf(iso, sizeof(iso), "%s/seed.iso", dir);
	f = (struct cidata_files){ pu, pm, pn };
	build_seed(&f, iso);

	snprintf(cmd, sizeof(cmd), "isoinfo -d -i %s", iso);
	out = run_cmd(cmd, NULL);
	assert_non_null(strstr(out, "Volume id: cidata\n"));
	assert_non_null(strstr(out, "Rock Ridge signatures"));
	assert_non_null(strstr(out, "Joliet"));
	free(out);
	/* the names, as Rock Ridge lists them, with root's mode 0444 */
	snprintf(cmd, sizeof(cmd), "isoinfo -i %s -R -l | awk '/^-/ {print $1, $3, $4, $5, $NF}'",
		 iso);
	out = run_cmd(cmd, NULL);
	snprintf(cmd, sizeof(cmd), "-r--r--r-- 0 0 %zu meta-data\n-r--r--r-- 0 0 %zu network-config\n"
		 "-r--r--r-- 0 0 %zu user-data\n", strlen(md), strlen(nc), sizeof(ud));
	assert_string_equal(out, cmd);
	free(out);
	expect_file(iso, "-R", "user-data", ud, sizeof(ud));
	expect_file(iso, "-R", "meta-data", md, strlen(md));
	expect_file(iso, "-R", "network-config", nc, strlen(nc));
	expect_file(iso, "-J", "user-data", ud, sizeof(ud));
	expect_file(iso, "-J", "meta-data", md, strlen(md));
}

/* Without network-config only the two files; an empty meta-data is kept
 * empty; a second build into the same fd replaces the first. */
static void test_seed_two_files_empty(void **state)
{
	char pu[256], pm[256], iso[256], cmd[512];
	struct cidata_files f;
	char *out;

	put("u2", "#!/bin/sh\necho hi\n", 19, pu, sizeof(pu));
	put("m2", "", 0, pm, sizeof(pm));
	snprintf(iso, sizeof(iso), "%s/seed2.iso", dir);
	put("seed2.iso", "x", 1, iso, sizeof(iso));
	/* a big file there first: the build truncates it */
	assert_int_equal(truncate(iso, 8 << 20), 0);
	f = (struct cidata_files){ pu, pm, NULL };
	build_seed(&f, iso);
	snprintf(cmd, sizeof(cmd), "isoinfo -i %s -R -l | awk '/^-/ {print $NF}'", iso);
	out = run_cmd(cmd, NULL);
	assert_string_equal(out, "meta-data\nuser-data\n");
	free(out);
	expect_file(iso, "-R", "meta-data", "", 0);
	expect_file(iso, "-R", "user-data", "#!/bin/sh\necho hi\n", 19);
	struct stat st;

	assert_int_equal(stat(iso, &st), 0);
	assert_true(st.st_size < (1 << 20));
}

static void expect_build_error(const struct cidata_files *f, int status, const char *msg)
{
	struct error e = { 0 };
	char iso[256];
	int fd;

	snprintf(iso, sizeof(iso), "%s/bad.iso", dir);
	fd = open(iso, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(cidata_build(f, fd, &e), -1);
	close(fd);
	assert_int_equal(e.status, status);
	if (!strstr(e.msg, msg))
		fail_msg("'%s' does not hold '%s'", e.msg, msg);
}

static void test_seed_bad_files(void **state)
{
	char pu[256], pm[256], missing[256], fifo[256], big[256], msg[600];
	struct cidata_files f;

	put("u3", "u", 1, pu, sizeof(pu));
	put("m3", "m", 1, pm, sizeof(pm));
	snprintf(missing, sizeof(missing), "%s/no-such-file", dir);
	f = (struct cidata_files){ pu, missing, NULL };
	snprintf(msg, sizeof(msg), "cloud-init meta-data: %s: No such file or directory", missing);
	expect_build_error(&f, EXIT_NOINPUT, msg);
	f = (struct cidata_files){ dir, pm, NULL };
	snprintf(msg, sizeof(msg), "cloud-init user-data: %s: not a regular file", dir);
	expect_build_error(&f, EXIT_USAGE, msg);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	f = (struct cidata_files){ pu, pm, fifo };     /* refused, never waited on */
	snprintf(msg, sizeof(msg), "cloud-init network-config: %s: not a regular file", fifo);
	expect_build_error(&f, EXIT_USAGE, msg);
	put("big", "", 0, big, sizeof(big));
	assert_int_equal(truncate(big, CIDATA_FILE_MAX + 1), 0);
	f = (struct cidata_files){ big, pm, NULL };
	expect_build_error(&f, EXIT_USAGE, "more than the 16 MiB a seed file may hold");
	f = (struct cidata_files){ pu, NULL, NULL };
	expect_build_error(&f, EXIT_USAGE, "meta-data is missing");
}

/* A confined process (shoald's VMM) reads only beneath its directories. */
static void test_seed_confined(void **state)
{
	char sub[128], pu[256], pm[256], out_of[256], iso[256];
	const char *roots[1] = { sub };
	struct cidata_files f;
	struct error e;

	snprintf(sub, sizeof(sub), "%s/allowed", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(pu, sizeof(pu), "%s/u", sub);
	snprintf(pm, sizeof(pm), "%s/m", sub);
	put("allowed/u", "u", 1, pu, sizeof(pu));
	put("allowed/m", "m", 1, pm, sizeof(pm));
	put("outside", "secret", 6, out_of, sizeof(out_of));
	assert_int_equal(path_confine(roots, 1, &e), 0);
	f = (struct cidata_files){ pu, out_of, NULL };
	expect_build_error(&f, EXIT_USAGE, "is not beneath an allowed directory");
	f = (struct cidata_files){ pu, pm, NULL };
	snprintf(iso, sizeof(iso), "%s/ok.iso", dir);  /* the output is ours: not confined */
	build_seed(&f, iso);
	assert_int_equal(path_confine(NULL, 0, &e), 0);
	expect_file(iso, "-R", "meta-data", "m", 1);
}

static void expect_flag_error(const char *spec, const char *msg)
{
	struct cidata_files f = { 0 };
	struct error e = { 0 };

	assert_int_equal(cidata_from_flags(&f, spec, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	if (strcmp(e.msg, msg))
		fail_msg("'%s' is not '%s'", e.msg, msg);
	assert_null(f.user_data);
}

static void test_flags(void **state)
{
	struct cidata_files f = { 0 };
	struct error e;

	assert_int_equal(cidata_from_flags(&f, "meta-data=/a/m,user-data=/a/u", &e), 0);
	assert_string_equal(f.user_data, "/a/u");
	assert_string_equal(f.meta_data, "/a/m");
	assert_null(f.network_config);
	assert_int_equal(cidata_from_flags(&f, "user-data=u,meta-data=m,network-config=n", &e), 0);
	assert_string_equal(f.network_config, "n");
	assert_string_equal(f.user_data, "u");
	cidata_free(&f);
	expect_flag_error("user-data=u,meta-data=m,vendor-data=v",
			  "--cloud-init: unknown key 'vendor-data' (user-data=FILE, meta-data=FILE, "
			  "network-config=FILE)");
	expect_flag_error("user-data=u,user-data=v,meta-data=m",
			  "--cloud-init: user-data is given twice");
	expect_flag_error("user-data=u",
			  "--cloud-init: meta-data is missing: cloud-init's NoCloud seed needs both "
			  "user-data and meta-data (an empty file will do; meta-data usually holds "
			  "instance-id: NAME)");
	expect_flag_error("meta-data=m", "--cloud-init: user-data is missing: cloud-init's NoCloud "
			  "seed needs both user-data and meta-data (an empty file will do; meta-data "
			  "usually holds instance-id: NAME)");
	expect_flag_error("user-data,meta-data=m", "--cloud-init: user-data needs a value "
			  "(user-data=FILE)");
	expect_flag_error("user-data=,meta-data=m", "--cloud-init: user-data is empty (give a "
			  "file's path)");
}

static void expect_json_error(const char *text, const char *msg)
{
	struct vm_config c;
	struct error e = { 0 };

	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", text, &e), -1);
	assert_int_equal(e.status, EXIT_USAGE);
	if (strcmp(e.msg, msg))
		fail_msg("'%s' is not '%s'", e.msg, msg);
	vm_config_free(&c);
}

static void test_json(void **state)
{
	struct vm_config c, d;
	struct error e;
	char *text;

	vm_config_init(&c);
	assert_int_equal(vm_config_from_json_text(&c, "vm.json",
		"{\"cloud_init\": {\"user_data\": \"/s/u,1\", \"meta_data\": \"/s/m\", "
		"\"network_config\": null}}", &e), 0);
	assert_string_equal(c.cloud_init.user_data, "/s/u,1");
	assert_null(c.cloud_init.network_config);
	/* struct -> JSON -> struct, and a copy, keep it */
	text = vm_config_to_json_text(&c);
	assert_non_null(strstr(text, "\"cloud_init\""));
	vm_config_init(&d);
	assert_int_equal(vm_config_from_json_text(&d, "again", text, &e), 0);
	assert_string_equal(d.cloud_init.user_data, "/s/u,1");
	assert_string_equal(d.cloud_init.meta_data, "/s/m");
	free(text);
	vm_config_free(&d);
	vm_config_copy(&d, &c);
	assert_string_equal(d.cloud_init.meta_data, "/s/m");
	assert_ptr_not_equal(d.cloud_init.meta_data, c.cloud_init.meta_data);
	vm_config_free(&d);
	/* null: no seed; and a config without one renders no "cloud_init" */
	assert_int_equal(vm_config_from_json_text(&c, "vm.json", "{\"cloud_init\": null}", &e), 0);
	assert_false(cidata_wanted(&c.cloud_init));
	text = vm_config_to_json_text(&c);
	assert_null(strstr(text, "cloud_init"));
	free(text);
	vm_config_free(&c);
	expect_json_error("{\"cloud_init\": {\"user_data\": \"/u\"}}",
			  "vm.json: cloud_init: meta_data is missing: cloud-init's NoCloud seed needs "
			  "both user-data and meta-data (an empty file will do; meta-data usually holds "
			  "instance-id: NAME)");
	expect_json_error("{\"cloud_init\": {\"user_data\": \"/u\", \"meta_data\": \"/m\", "
			  "\"vendor_data\": \"/v\"}}",
			  "vm.json: cloud_init: unknown key \"vendor_data\" (user_data, meta_data, "
			  "network_config)");
	expect_json_error("{\"cloud_init\": {\"user_data\": 1, \"meta_data\": \"/m\"}}",
			  "vm.json: cloud_init: \"user_data\" must be a path (a string)");
	expect_json_error("{\"cloud_init\": \"/u\"}",
			  "vm.json: cloud_init: must be an object (user_data, meta_data, "
			  "network_config: paths) or null");
}

/* One spec with this cloud_init value; its parse answer (0 or the HTTP
 * status) and message. */
static int spec_with(const char *kernel, const char *ci, char *msg, size_t size)
{
	struct host_spec s;
	struct api_err e;
	char text[1024];
	int rc;

	memset(&e, 0, sizeof(e));
	snprintf(text, sizeof(text), "{\"name\": \"v\", \"kernel\": \"%s\", \"cloud_init\": %s}",
		 kernel, ci);
	rc = host_spec_parse(text, strlen(text), true, &s, &e);
	snprintf(msg, size, "%s", rc ? e.msg : s.spec_json);
	if (!rc)
		host_spec_free(&s);
	return rc ? e.http : 0;
}

static void test_daemon_spec(void **state)
{
	char ok[128], k[256], u[256], m[256], out_of[256], ci[1024], msg[1200];
	const char *roots[1] = { ok };
	struct error e;

	snprintf(ok, sizeof(ok), "%s/daemon", dir);
	assert_int_equal(mkdir(ok, 0700), 0);
	put("daemon/k", "k", 1, k, sizeof(k));
	put("daemon/u", "u", 1, u, sizeof(u));
	put("daemon/m", "m", 1, m, sizeof(m));
	put("secret", "s", 1, out_of, sizeof(out_of));
	assert_int_equal(path_confine(roots, 1, &e), 0);
	snprintf(ci, sizeof(ci), "{\"user_data\": \"%s\", \"meta_data\": \"%s\"}", u, m);
	assert_int_equal(spec_with(k, ci, msg, sizeof(msg)), 0);
	snprintf(ci, sizeof(ci), "\"cloud_init\":{\"user_data\":\"%s\",\"meta_data\":\"%s\"}", u, m);
	if (!strstr(msg, ci))
		fail_msg("stored spec \"%s\" lacks %s", msg, ci);
	snprintf(ci, sizeof(ci), "{\"user_data\": \"%s\", \"meta_data\": \"%s\"}", u, out_of);
	assert_int_equal(spec_with(k, ci, msg, sizeof(msg)), 403);
	assert_non_null(strstr(msg, "cloud_init.meta_data: "));
	assert_non_null(strstr(msg, "is not beneath an allowed directory"));
	snprintf(ci, sizeof(ci), "{\"user_data\": \"u\", \"meta_data\": \"%s\"}", m);
	assert_int_equal(spec_with(k, ci, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "cloud_init.user_data: \"u\" is not an absolute path"));
	snprintf(ci, sizeof(ci), "{\"user_data\": \"%s\", \"meta_data\": \"%s\", "
		 "\"network_config\": \"%s\"}", u, m, ok);
	assert_int_equal(spec_with(k, ci, msg, sizeof(msg)), 400);
	snprintf(ci, sizeof(ci), "cloud_init.network_config: %s: not a regular file", ok);
	assert_non_null(strstr(msg, ci));
	assert_int_equal(spec_with(k, "{\"user_data\": \"/x\"}", msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "cloud_init: meta_data is missing"));
	assert_int_equal(path_confine(NULL, 0, &e), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_read_back),
		cmocka_unit_test(test_seed_two_files_empty),
		cmocka_unit_test(test_seed_bad_files),
		cmocka_unit_test(test_seed_confined),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_daemon_spec),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
