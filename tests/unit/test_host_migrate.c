/*
 * test_host_migrate.c - live migration through shoald, the parts that
 * need no KVM (tests/system/daemon_migrate.sh runs the real thing):
 *   - the migrate body's parser: "to" a socket path or https:// (plain
 *     http:// refused, naming why), the token (no control characters: it
 *     becomes a header line; not for a socket), the CA as PEM text, the
 *     downtime, bandwidth and postcopy_after ranges, unknown keys;
 *   - the incoming body's parser: {"spec": OBJECT, "disks": [...]}, each
 *     disk null or {"size", "format": raw|qcow2} (qcow2 with an optional
 *     "base": absolute path, UUID, generation); with_disks and
 *     auto_converge in the migrate body, booleans;
 *   - where the source connects: the destination's address, its wildcard
 *     host replaced by the host of the destination's URL;
 *   - vms.outgoing read back after a restart: the destination, its token
 *     and CA, or the destination alone as schema 6 first kept it;
 *   - a real daemon: migrating an unknown VM is 404, one that is not
 *     running 409 (nothing recorded); an incoming VM whose spec names a
 *     file outside --allow-dir is 403, one whose name is taken 409, one
 *     whose vsock socket a live process listens on (on one host, the
 *     source VMM's) 409 in_use, and
 *     one whose VMM does not start (/bin/false plays the VMM) 500 with
 *     its record and directory gone again and "created", "exited",
 *     "migration-failed", "deleted" events;
 *   - an incoming VM with disks (--with-disks): a name taken or a VM
 *     directory that cannot be made is refused with no image made; a
 *     read-only disk given an image 400; one whose VMM does not start
 *     had its image made in its directory (the spec check took it) and
 *     it is gone again with the directory; a console file named disk-* 400.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/client.h"
#include "host/api.h"
#include "host/host.h"

/* ---- the parsers ---- */

static int parse(const char *body, struct host_migrate_req *r, struct api_err *e)
{
	return api_parse_migrate_body(body, strlen(body), r, e);
}

static void refused(const char *body, const char *text)
{
	struct host_migrate_req r;
	struct api_err e = { 0 };

	if (parse(body, &r, &e) == 0)
		fail_msg("accepted: %s", body);
	assert_int_equal(e.http, 400);
	if (!strstr(e.msg, text))
		fail_msg("%s: message \"%s\" does not say \"%s\"", body, e.msg, text);
}

static void test_migrate_body(void **state)
{
	struct host_migrate_req r;
	struct api_err e;

	(void)state;
	assert_int_equal(parse("{\"to\": \"/run/b/shoald.sock\"}", &r, &e), 0);
	assert_string_equal(r.to, "/run/b/shoald.sock");
	assert_string_equal(r.token, "");
	assert_null(r.cacert);
	assert_int_equal(r.downtime_ms, 0);
	assert_int_equal(r.bandwidth, 0);
	assert_false(r.with_disks);
	assert_false(r.auto_converge);
	assert_int_equal(r.postcopy_after, 0);
	api_migrate_req_free(&r);
	assert_int_equal(parse("{\"to\": \"/s\", \"postcopy_after\": 1}", &r, &e), 0);
	assert_int_equal(r.postcopy_after, 1);
	api_migrate_req_free(&r);
	assert_int_equal(parse("{\"to\": \"/s\", \"postcopy_after\": 30}", &r, &e), 0);
	assert_int_equal(r.postcopy_after, 30);
	api_migrate_req_free(&r);
	assert_int_equal(parse("{\"to\": \"/s\", \"with_disks\": true, \"auto_converge\": true}",
			       &r, &e), 0);
	assert_true(r.with_disks);
	assert_true(r.auto_converge);
	api_migrate_req_free(&r);
	assert_int_equal(parse("{\"to\": \"/s\", \"with_disks\": false, \"auto_converge\": true}",
			       &r, &e), 0);
	assert_false(r.with_disks);
	assert_true(r.auto_converge);
	api_migrate_req_free(&r);
	assert_int_equal(parse("{\"to\": \"https://10.0.0.2:8443\", \"token\": \"abcdefabcdefabcdef\", "
			       "\"cacert\": \"-----BEGIN CERTIFICATE-----\\nxx\\n\", \"downtime_ms\": 50, "
			       "\"bandwidth\": 104857600}", &r, &e), 0);
	assert_string_equal(r.to, "https://10.0.0.2:8443");
	assert_string_equal(r.token, "abcdefabcdefabcdef");
	assert_non_null(strstr(r.cacert, "BEGIN CERTIFICATE"));
	assert_int_equal(r.downtime_ms, 50);
	assert_int_equal(r.bandwidth, 104857600);
	api_migrate_req_free(&r);

	refused("", "expected {\"to\": URL}");
	refused("[]", "expected a JSON object");
	refused("{}", "to: missing");
	refused("{\"to\": 5}", "to: expected");
	refused("{\"to\": \"\"}", "to: expected");
	refused("{\"to\": \"relative.sock\"}", "to: expected");
	refused("{\"to\": \"ftp://x\"}", "to: expected");
	refused("{\"to\": \"http://10.0.0.2:8443\"}", "only over TLS");
	refused("{\"to\": \"/a\\nb\"}", "to: expected");
	refused("{\"to\": \"https://h:1\", \"token\": \"a\\r\\nX-Evil: 1\"}", "no control characters");
	refused("{\"to\": \"https://h:1\", \"token\": \"\"}", "token: expected");
	refused("{\"to\": \"/s\", \"token\": \"abcdefabcdefabcdef\"}", "only for an https://");
	refused("{\"to\": \"https://h:1\", \"cacert\": \"not pem\"}", "cacert: expected the PEM");
	refused("{\"to\": \"/s\", \"downtime_ms\": 0}", "downtime_ms: expected");
	refused("{\"to\": \"/s\", \"downtime_ms\": 3600001}", "downtime_ms: expected");
	refused("{\"to\": \"/s\", \"downtime_ms\": \"5\"}", "downtime_ms: expected");
	refused("{\"to\": \"/s\", \"bandwidth\": -1}", "bandwidth: expected");
	refused("{\"to\": \"/s\", \"bandwidth\": 1.5}", "bandwidth: expected");
	refused("{\"to\": \"/s\", \"with_disks\": 1}", "with_disks: expected true or false");
	refused("{\"to\": \"/s\", \"auto_converge\": \"yes\"}", "auto_converge: expected true or false");
	refused("{\"to\": \"/s\", \"postcopy_after\": 0}", "postcopy_after: expected");
	refused("{\"to\": \"/s\", \"postcopy_after\": 31}", "postcopy_after: expected");
	refused("{\"to\": \"/s\", \"postcopy_after\": \"1\"}", "postcopy_after: expected");
	refused("{\"to\": \"/s\", \"postcopy_after\": 1.5}", "postcopy_after: expected");
	refused("{\"to\": \"/s\", \"mirror\": true}", "unknown key \"mirror\"");
	refused("{\"to\": \"/s\", \"to\": \"/t\"}", "duplicate");
}

static char *in_disks;      /* the last parse_in's "disks" */

static int parse_in(const char *body, char **spec, struct api_err *e)
{
	free(in_disks);
	return api_parse_incoming_body(body, strlen(body), spec, &in_disks, e);
}

static void test_incoming_body(void **state)
{
	struct api_err e;
	char *spec;
	json_t *j;

	(void)state;
	assert_int_equal(parse_in("{\"spec\": {\"name\": \"a\", \"cpus\": 2}}", &spec, &e), 0);
	j = json_loads(spec, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "a");
	assert_int_equal(json_integer_value(json_object_get(j, "cpus")), 2);
	json_decref(j);
	free(spec);
	assert_null(in_disks);
	assert_int_equal(parse_in("{\"spec\": {\"name\": \"a\"}, \"disks\": [null, {\"size\": 1048576, "
				  "\"format\": \"raw\"}, {\"format\": \"qcow2\", \"size\": 65536}]}", &spec, &e), 0);
	j = json_loads(in_disks, 0, NULL);
	assert_int_equal(json_array_size(j), 3);
	assert_true(json_is_null(json_array_get(j, 0)));
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 1), "size")), 1048576);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 2), "format")), "qcow2");
	json_decref(j);
	free(spec);
	/* a qcow2 overlay names its base */
	assert_int_equal(parse_in("{\"spec\": {}, \"disks\": [{\"size\": 65536, \"format\": \"qcow2\", \"base\": "
				  "{\"path\": \"/srv/b.qcow2\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\", "
				  "\"generation\": 2}}]}", &spec, &e), 0);
	j = json_loads(in_disks, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(j, 0), "base"), "path")),
			    "/srv/b.qcow2");
	json_decref(j);
	free(spec);
	static const char *const bad_disks[] = {
#define B(fmt, base) "[{\"size\": 5, \"format\": \"" fmt "\", \"base\": " base "}]"
		B("raw", "{\"path\": \"/b\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\", \"generation\": 1}"),
		B("qcow2", "{\"path\": \"b\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\", \"generation\": 1}"),
		B("qcow2", "{\"path\": \"/b\", \"chain_id\": \"0855409e\", \"generation\": 1}"),
		B("qcow2", "{\"path\": \"/b\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\", \"generation\": -1}"),
		B("qcow2", "{\"path\": \"/b\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\"}"),
		B("qcow2", "{\"path\": \"/b\", \"chain_id\": \"0855409e-3053-4136-82ae-9de69ecb4c2c\", \"generation\": 1, \"x\": 1}"),
		B("qcow2", "\"/b\""),
#undef B
		"{}", "[{\"size\": 0, \"format\": \"raw\"}]", "[{\"size\": 5, \"format\": \"vmdk\"}]",
		"[{\"size\": 5}]", "[{\"size\": 5, \"format\": \"raw\", \"path\": \"/etc/x\"}]",
		"[{\"size\": \"5\", \"format\": \"raw\"}]",
		"[null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null]",
	};
	for (size_t i = 0; i < sizeof(bad_disks) / sizeof(bad_disks[0]); i++) {
		char body[512];

		snprintf(body, sizeof(body), "{\"spec\": {}, \"disks\": %s}", bad_disks[i]);
		if (parse_in(body, &spec, &e) == 0)
			fail_msg("accepted: %s", body);
		assert_int_equal(e.http, 400);
		assert_non_null(strstr(e.msg, "disks"));
		assert_null(spec);
		assert_null(in_disks);
	}
	assert_int_equal(api_parse_incoming_body("", 0, &spec, &in_disks, &e), -1);
	assert_null(spec);
	assert_int_equal(parse_in("{}", &spec, &e), -1);
	assert_non_null(strstr(e.msg, "spec: missing"));
	assert_int_equal(parse_in("{\"spec\": []}", &spec, &e), -1);
	assert_non_null(strstr(e.msg, "an object"));
	assert_int_equal(parse_in("{\"spec\": {}, \"address\": \"tcp:1.2.3.4:5\"}", &spec, &e), -1);
	assert_non_null(strstr(e.msg, "unknown key \"address\""));
	assert_null(spec);
	free(in_disks);
	in_disks = NULL;
}

static void test_connect_addr(void **state)
{
	static const char *const cases[][3] = {
		{ "https://node8:8443", "tcp:0.0.0.0:4000", "tcp:node8:4000" },
		{ "https://10.0.0.2:8443/", "tcp:0.0.0.0:5", "tcp:10.0.0.2:5" },
		{ "https://10.0.0.2", "tcp:0.0.0.0:6", "tcp:10.0.0.2:6" },
		{ "https://node8:8443", "tcp:10.1.1.1:4000", "tcp:10.1.1.1:4000" },
		{ "/run/b/shoald.sock", "unix:/run/b/vms/x/migrate.sock", "unix:/run/b/vms/x/migrate.sock" },
		{ "/run/b/shoald.sock", "tcp:0.0.0.0:7", "tcp:0.0.0.0:7" },
	};
	char out[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		host_migrate_connect_addr(cases[i][0], cases[i][1], out, sizeof(out));
		assert_string_equal(out, cases[i][2]);
	}
}

/* vms.outgoing as a restarted source reads it: the destination, its token
 * and CA (JSON), or `to` alone as schema 6 wrote it before the token was
 * kept */
static void test_outgoing_req(void **state)
{
	struct host_migrate_req r;

	(void)state;
	assert_int_equal(host_migrate_outgoing_req("{\"to\": \"https://b:8443\", \"token\": \"s3cret\", "
						   "\"cacert\": \"-----BEGIN CERTIFICATE-----\"}", &r), 0);
	assert_string_equal(r.to, "https://b:8443");
	assert_string_equal(r.token, "s3cret");
	assert_string_equal(r.cacert, "-----BEGIN CERTIFICATE-----");
	free(r.cacert);
	assert_int_equal(host_migrate_outgoing_req("{\"to\": \"/run/b/shoald.sock\"}", &r), 0);
	assert_string_equal(r.to, "/run/b/shoald.sock");
	assert_string_equal(r.token, "");
	assert_null(r.cacert);
	assert_int_equal(host_migrate_outgoing_req("https://b:8443", &r), 0);
	assert_string_equal(r.to, "https://b:8443");
	assert_string_equal(r.token, "");
	assert_null(r.cacert);
}

/* ---- a real daemon, /bin/false as its VMM ---- */

struct fixture {
	char dir[64], sock[128];
	struct host h;
	struct host_options o;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct api_err e;

	snprintf(f->dir, sizeof(f->dir), "/tmp/shoal-mig.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
	f->o.state_dir = f->dir;
	f->o.socket_path = f->sock;
	f->o.vmm_path = "/bin/false";
	f->o.client_timeout_s = 5;
	f->o.start_timeout_s = 5;
	f->o.allow_dirs[f->o.nallow_dirs++] = "/bin";
	f->o.allow_dirs[f->o.nallow_dirs++] = f->dir;   /* a vsock socket */
	if (host_open(&f->h, &f->o, &e) || api_start(&f->h, &e))
		fail_msg("shoald: %s", e.msg);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	api_stop(&f->h);
	host_close(&f->h);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int req(struct fixture *f, const char *method, const char *path, const char *body,
	       json_t **out)
{
	struct client_resp r;
	struct error e;
	int status;

	if (client_request(f->sock, method, path, body, body ? strlen(body) : 0, &r, &e))
		fail_msg("%s %s: %s", method, path, e.msg);
	status = r.status;
	*out = json_loadb(r.body, r.len, 0, NULL);
	client_resp_free(&r);
	return status;
}

static void expect(struct fixture *f, const char *method, const char *path, const char *body,
		   int status, const char *code, const char *text)
{
	json_t *j, *err;
	int got = req(f, method, path, body, &j);

	err = json_object_get(j, "error");
	if (got != status || !err ||
	    strcmp(json_string_value(json_object_get(err, "code")) ?: "", code) ||
	    !strstr(json_string_value(json_object_get(err, "message")) ?: "", text)) {
		char *t = json_dumps(j, 0);

		fail_msg("%s %s: got %d %s; wanted %d %s \"%s\"", method, path, got, t ? t : "",
			 status, code, text);
	}
	json_decref(j);
}

/* The types of the events of VM `name`, space-separated. */
static void events_of(struct fixture *f, const char *name, char *out, size_t size)
{
	char path[128];
	json_t *j, *ev;
	size_t i, n = 0;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/v1/events?vm=%s", name);
	assert_int_equal(req(f, "GET", path, NULL, &j), 200);
	json_array_foreach(json_object_get(j, "events"), i, ev)
		n += (size_t)snprintf(out + n, size - n, "%s%s", n ? " " : "",
				      json_string_value(json_object_get(ev, "type")));
	json_decref(j);
}

static void test_daemon_refusals(void **state)
{
	struct fixture *f = *state;
	char ev[512], body[512];
	json_t *j;

	expect(f, "POST", "/v1/vms/ghost/migrate", "{\"to\": \"/nowhere.sock\"}", 404, "not_found",
	       "ghost");
	assert_int_equal(req(f, "POST", "/v1/vms",
			     "{\"name\": \"a\", \"kernel\": \"/bin/true\", \"memory\": \"64M\"}", &j), 201);
	json_decref(j);
	expect(f, "POST", "/v1/vms/a/migrate", "{\"to\": \"/nowhere.sock\"}", 409, "wrong_state",
	       "is created: cannot migrate it");
	expect(f, "POST", "/v1/vms/a/migrate", "{\"to\": \"http://x:1\"}", 400, "invalid_request",
	       "only over TLS");
	events_of(f, "a", ev, sizeof(ev));
	assert_string_equal(ev, "created");

	/* the destination's side */
	expect(f, "POST", "/v1/migrations/incoming",
	       "{\"spec\": {\"name\": \"a\", \"kernel\": \"/bin/true\"}}", 409, "name_taken", "\"a\"");
	expect(f, "POST", "/v1/migrations/incoming",
	       "{\"spec\": {\"name\": \"b\", \"kernel\": \"/etc/hostname\"}}", 403, "path_not_allowed",
	       "kernel");
	expect(f, "POST", "/v1/migrations/incoming",
	       "{\"spec\": {\"name\": \"b\", \"kernel\": \"/bin/true\", \"disks\": "
	       "[{\"path\": \"/bin/no-such-disk\"}]}}", 400, "invalid_spec", "disks[0].path");
	expect(f, "POST", "/v1/migrations/incoming", "{\"spec\": {\"kernel\": \"/bin/true\"}}", 400,
	       "invalid_spec", "name");
	{       /* a vsock socket someone listens on: on one host, the source VMM's */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int lfd = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/v.sock", f->dir);
		assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(lfd, 4), 0);
		snprintf(body, sizeof(body), "{\"spec\": {\"name\": \"v\", \"kernel\": \"/bin/true\", "
			 "\"vsock\": {\"cid\": 3, \"socket\": \"%s\"}}}", sa.sun_path);
		expect(f, "POST", "/v1/migrations/incoming", body, 409, "in_use", "vsock socket");
		close(lfd);
		expect(f, "GET", "/v1/vms/v", NULL, 404, "not_found", "\"v\"");
	}
	snprintf(body, sizeof(body), "{\"spec\": {\"name\": \"c\", \"kernel\": \"/bin/true\", "
		 "\"memory\": \"64M\"}}");
	expect(f, "POST", "/v1/migrations/incoming", body, 500, "start_failed", "did not start");
	expect(f, "GET", "/v1/vms/c", NULL, 404, "not_found", "\"c\"");
	events_of(f, "c", ev, sizeof(ev));
	assert_string_equal(ev, "created exited migration-failed deleted");
	{
		char dir[256];

		snprintf(dir, sizeof(dir), "%s/vms/c", f->dir);
		assert_int_equal(access(dir, F_OK), -1);       /* its directory went too */
	}

	/* --with-disks: the destination makes the images */
	{
		static const char wd[] = "{\"spec\": {\"name\": \"%s\", \"kernel\": \"/bin/true\", "
			"\"memory\": \"64M\", \"disks\": [{\"path\": \"/src/only/d.img\"}%s]}, "
			"\"disks\": [{\"size\": 1048576, \"format\": \"%s\"}%s]}";
		char path[400];
		FILE *fp;

		snprintf(body, sizeof(body), wd, "a", "", "raw", "");
		expect(f, "POST", "/v1/migrations/incoming", body, 409, "name_taken", "\"a\"");
		snprintf(path, sizeof(path), "%s/vms/a/disk-0.raw", f->dir);
		assert_int_equal(access(path, F_OK), -1);
		snprintf(path, sizeof(path), "%s/vms/d", f->dir);       /* a stale file of its name */
		fp = fopen(path, "w");
		assert_non_null(fp);
		fclose(fp);
		snprintf(body, sizeof(body), wd, "d", "", "raw", "");
		expect(f, "POST", "/v1/migrations/incoming", body, 409, "in_use",
		       "cannot make its directory");
		expect(f, "GET", "/v1/vms/d", NULL, 404, "not_found", "\"d\"");
		unlink(path);
		snprintf(body, sizeof(body), wd, "d", ", {\"path\": \"/bin/true\", \"readonly\": true}",
			 "raw", ", {\"size\": 4096, \"format\": \"raw\"}");
		expect(f, "POST", "/v1/migrations/incoming", body, 400, "invalid_request",
		       "not a writable disk");
		assert_int_equal(access(path, F_OK), -1);       /* its directory went again */
		/* the image made, the spec took it; the VMM (/bin/false) did
		 * not start, and the image went again with the directory */
		snprintf(body, sizeof(body), wd, "d", ", {\"path\": \"/bin/true\", \"readonly\": true}",
			 "qcow2", ", null");
		expect(f, "POST", "/v1/migrations/incoming", body, 500, "start_failed", "did not start");
		expect(f, "GET", "/v1/vms/d", NULL, 404, "not_found", "\"d\"");
		assert_int_equal(access(path, F_OK), -1);
		events_of(f, "d", ev, sizeof(ev));
		assert_string_equal(ev, "created exited migration-failed deleted");
		/* a client may not have the VMM make a file of such a name
		 * (this daemon allows its whole state directory: that another
		 * VM's image is refused, daemon_migrate.sh checks) */
		snprintf(body, sizeof(body), "{\"name\": \"e\", \"kernel\": \"/bin/true\", "
			 "\"console\": \"file:disk-0.raw\"}");
		expect(f, "POST", "/v1/vms", body, 400, "invalid_spec", "disk-*");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_migrate_body),
		cmocka_unit_test(test_incoming_body),
		cmocka_unit_test(test_connect_addr),
		cmocka_unit_test(test_outgoing_req),
		cmocka_unit_test_setup_teardown(test_daemon_refusals, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
