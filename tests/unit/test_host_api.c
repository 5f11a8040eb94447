/*
 * test_host_api.c - a real shoald (host + HTTP server) on a temporary state
 * directory and socket, driven by the CLI's own HTTP client: the inventory,
 * the error shape and status codes, a VMM that fails to start (here
 * /bin/false plays the VMM, so no KVM is needed), events, metrics, delete,
 * and a restart of the daemon that finds the same records; error answers
 * for paths that are not valid UTF-8 or encode a NUL (issue 16).  Also the
 * client's response parser on hand-made responses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/client.h"
#include "host/api.h"
#include "host/host.h"

struct fixture {
	char dir[64], sock[128];
	struct host h;
	struct host_options o;
};

static void daemon_up(struct fixture *f)
{
	struct api_err e;

	if (host_open(&f->h, &f->o, &e) || api_start(&f->h, &e))
		fail_msg("shoald: %s", e.msg);
}

static void daemon_down(struct fixture *f)
{
	api_stop(&f->h);
	host_close(&f->h);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/shoal-api.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
	f->o.state_dir = f->dir;
	f->o.socket_path = f->sock;
	f->o.vmm_path = "/bin/false";    /* a "VMM" that exits 1 at once */
	f->o.client_timeout_s = 5;
	f->o.allow_dirs[f->o.nallow_dirs++] = "/bin";   /* the specs' kernel */
	daemon_up(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	daemon_down(f);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* One request; returns the status and the parsed JSON body (or NULL). */
static int req(struct fixture *f, const char *method, const char *path, const char *body,
	       json_t **out)
{
	struct client_resp r;
	struct error e;
	int status;

	if (client_request(f->sock, method, path, body, body ? strlen(body) : 0, &r, &e))
		fail_msg("%s %s: %s", method, path, e.msg);
	status = r.status;
	if (out)
		*out = json_loadb(r.body, r.len, 0, NULL);
	client_resp_free(&r);
	return status;
}

/* The error shape with this code. */
static void assert_error(json_t *j, const char *code)
{
	json_t *err = json_object_get(j, "error");

	assert_non_null(err);
	assert_string_equal(json_string_value(json_object_get(err, "code")), code);
	assert_true(strlen(json_string_value(json_object_get(err, "message"))) > 0);
	assert_int_equal(json_object_size(j), 1);
	assert_int_equal(json_object_size(err), 2);
	json_decref(j);
}

static const char spec_a[] = "{\"name\": \"a\", \"kernel\": \"/bin/true\", \"memory\": \"64M\"}";

static void test_inventory_and_errors(void **state)
{
	struct fixture *f = *state;
	json_t *j;

	assert_int_equal(req(f, "GET", "/v1/version", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "api")), "v1");
	json_decref(j);
	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, &j), 201);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "created");
	assert_int_equal(json_integer_value(json_object_get(j, "memory")), 64 << 20);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "spec"), "cpus")), 1);
	json_decref(j);
	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, &j), 409);
	assert_error(j, "name_taken");
	assert_int_equal(req(f, "POST", "/v1/vms", "{\"name\": \"b\", \"kernel\": \"/bin/true\", \"cpus\": true}", &j), 400);
	assert_error(j, "invalid_spec");
	assert_int_equal(req(f, "POST", "/v1/vms", "{", &j), 400);
	assert_error(j, "invalid_json");
	assert_int_equal(req(f, "GET", "/v1/vms/nope", NULL, &j), 404);
	assert_error(j, "not_found");
	assert_int_equal(req(f, "GET", "/v2/vms", NULL, &j), 404);
	assert_error(j, "not_found");
	assert_int_equal(req(f, "PUT", "/v1/vms/a/pause", NULL, &j), 405);
	assert_error(j, "method_not_allowed");
	assert_int_equal(req(f, "POST", "/v1/vms/a/pause", NULL, &j), 409);
	assert_error(j, "wrong_state");
	assert_int_equal(req(f, "POST", "/v1/vms/a/stop", "{\"mode\": 1}", &j), 400);
	assert_error(j, "invalid_request");
	assert_int_equal(req(f, "GET", "/v1/vms", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "vms")), 1);
	json_decref(j);
}

/* A VM's spec edited while it is not running (edit.c): PUT replaces,
 * PATCH merges (null removes), disks are added and removed, a rename and a
 * bad value are refused and change nothing, reboot wants a running VM. */
static void test_edit(void **state)
{
	struct fixture *f = *state;
	json_t *j, *sp;
	char *text;

	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, &j), 201);
	json_decref(j);
	assert_int_equal(req(f, "PUT", "/v1/vms/a",
			     "{\"kernel\": \"/bin/true\", \"cpus\": 3, \"memory\": \"32M\"}", &j), 200);
	sp = json_object_get(j, "spec");
	assert_int_equal(json_integer_value(json_object_get(sp, "cpus")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "cpus")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "memory")), 32 << 20);
	json_decref(j);
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "{\"memory\": \"48M\", \"cmdline\": \"x\"}", &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "memory")), 48 << 20);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "spec"), "cpus")), 3);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "spec"), "cmdline")), "x");
	json_decref(j);
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "{\"cmdline\": null}", &j), 200);
	/* removed: back to the default */
	assert_string_not_equal(json_string_value(json_object_get(json_object_get(j, "spec"), "cmdline")) ?: "", "x");
	json_decref(j);
	/* refused: a rename, a bad value, a file outside --allow-dir; nothing changes */
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "{\"name\": \"b\"}", &j), 400);
	assert_error(j, "invalid_spec");
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "{\"cpus\": \"many\"}", &j), 400);
	assert_error(j, "invalid_spec");
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "{\"kernel\": \"/etc/passwd\"}", &j), 403);
	json_decref(j);
	assert_int_equal(req(f, "PATCH", "/v1/vms/a", "[1]", &j), 400);
	json_decref(j);
	assert_int_equal(req(f, "GET", "/v1/vms/a", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(j, "memory")), 48 << 20);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "spec"), "kernel")), "/bin/true");
	json_decref(j);
	/* disks */
	assert_int_equal(req(f, "POST", "/v1/vms/a/disks", "{\"path\": \"/bin/true\", \"readonly\": true}", &j), 200);
	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "spec"), "disks")), 1);
	json_decref(j);
	assert_int_equal(req(f, "POST", "/v1/vms/a/disks", "{\"readonly\": true}", &j), 400);
	json_decref(j);
	assert_int_equal(req(f, "DELETE", "/v1/vms/a/disks?path=/bin/nope", NULL, &j), 404);
	assert_error(j, "not_found");
	assert_int_equal(req(f, "DELETE", "/v1/vms/a/disks?path=/bin/true", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(json_object_get(j, "spec"), "disks")), 0);
	json_decref(j);
	/* reboot and reset need a running VM */
	assert_int_equal(req(f, "POST", "/v1/vms/a/reboot", NULL, &j), 409);
	assert_error(j, "wrong_state");
	assert_int_equal(req(f, "POST", "/v1/vms/a/reset", NULL, &j), 409);
	assert_error(j, "wrong_state");
	assert_int_equal(req(f, "PUT", "/v1/vms/ghost", "{}", &j), 404);
	assert_error(j, "not_found");
	/* the edit is an event */
	assert_int_equal(req(f, "GET", "/v1/events?vm=a", NULL, &j), 200);
	text = json_dumps(j, 0);
	assert_non_null(strstr(text, "edited"));
	free(text);
	json_decref(j);
}

/* Reals in answers read as written: uptime_s 0.149, not 0.14899999999999999 */
static void test_json_reals(void **state)
{
	json_t *j = json_pack("{s:f, s:f, s:I}", "uptime_s", 0.149, "big", 123456.789,
			      "n", (json_int_t)1 << 52);
	char *t = api_json_text(j);

	(void)state;
	assert_non_null(t);
	assert_string_equal(t, "{\"uptime_s\":0.149,\"big\":123456.789,\"n\":4503599627370496}");
	free(t);
	json_decref(j);
}

/* One size format in every table: `vm show` and `vm list` agree */
static void test_fmt_size(void **state)
{
	char b[32];

	(void)state;
	cli_fmt_size(512, b, sizeof(b)); assert_string_equal(b, "512");
	cli_fmt_size(64 << 20, b, sizeof(b)); assert_string_equal(b, "64M");
	cli_fmt_size(12025856, b, sizeof(b)); assert_string_equal(b, "11.5M");
	cli_fmt_size(1536, b, sizeof(b)); assert_string_equal(b, "1.5K");
	cli_fmt_size(3LL << 40, b, sizeof(b)); assert_string_equal(b, "3T");
	cli_fmt_size(5LL << 50, b, sizeof(b)); assert_string_equal(b, "5P");
}

static void test_too_large(void **state)
{
	struct fixture *f = *state;
	size_t n = HOST_BODY_MAX + 10;
	char *big = malloc(n + 1);
	json_t *j;

	memset(big, ' ', n);
	big[n] = '\0';
	assert_int_equal(req(f, "POST", "/v1/vms", big, &j), 413);
	assert_error(j, "too_large");
	free(big);
	assert_int_equal(req(f, "GET", "/v1/vms", NULL, &j), 200);   /* still serving */
	assert_int_equal(json_array_size(json_object_get(j, "vms")), 0);
	json_decref(j);
}

static void test_start_failure_recorded(void **state)
{
	struct fixture *f = *state;
	json_t *j, *ev;
	size_t i;
	bool exited = false;

	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, NULL), 201);
	assert_int_equal(req(f, "POST", "/v1/vms/a/start", NULL, &j), 500);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
			       "guest exit code 1"));
	assert_error(j, "start_failed");
	assert_int_equal(req(f, "GET", "/v1/vms/a", NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "exited");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "last_exit"), "status")), 1);
	json_decref(j);
	assert_int_equal(req(f, "GET", "/v1/events?vm=a", NULL, &j), 200);
	json_array_foreach(json_object_get(j, "events"), i, ev)
		exited |= !strcmp(json_string_value(json_object_get(ev, "type")), "exited");
	assert_true(exited);
	json_decref(j);
	/* the monitor left the VMM's exit status and its log */
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/vms/a/exit", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(req(f, "DELETE", "/v1/vms/a", NULL, NULL), 204);
	snprintf(path, sizeof(path), "%s/vms/a", f->dir);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(req(f, "DELETE", "/v1/vms/a", NULL, &j), 404);
	assert_error(j, "not_found");
}

static void test_metrics(void **state)
{
	struct fixture *f = *state;
	struct client_resp r;
	struct error e;
	json_t *j;

	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, NULL), 201);
	assert_int_equal(req(f, "GET", "/v1/metrics", NULL, &j), 200);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "host"), "vms")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(j, "host"),
			 "vms_by_state"), "created")), 1);
	json_decref(j);
	assert_int_equal(client_request(f->sock, "GET", "/metrics", NULL, 0, &r, &e), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "shoal_host_vms{state=\"created\"} 1\n"));
	assert_non_null(strstr(r.body, "shoal_vm_up{vm=\"a\"} 0\n"));
	assert_string_equal(r.ctype, "text/plain; version=0.0.4");   /* the whole value, no line end */
	client_resp_free(&r);
}

static void test_restart_keeps_records(void **state)
{
	struct fixture *f = *state;
	json_t *j;

	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, NULL), 201);
	assert_int_equal(req(f, "POST", "/v1/vms", "{\"name\": \"b\", \"kernel\": \"/bin/true\"}", NULL), 201);
	daemon_down(f);
	daemon_up(f);
	assert_int_equal(req(f, "GET", "/v1/vms", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "vms")), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "vms"), 1), "name")), "b");
	json_decref(j);
	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, NULL), 409);   /* still taken */
}

/* A path byte that is not UTF-8 (%ff) used to make the error answer
 * unencodable: the fallback was sent with 58 bytes for a 55-byte buffer
 * (a heap over-read; ASan aborted the daemon).  Now: the one error shape,
 * with the bad byte shown as '?', and a body whose length is its own. */
static void test_error_text_not_utf8(void **state)
{
	struct fixture *f = *state;
	char path[512];
	json_t *j;

	assert_int_equal(req(f, "GET", "/v1/vms/%ff", NULL, &j), 404);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
				"message")), "/v1/vms/?"));
	assert_error(j, "not_found");
	assert_int_equal(req(f, "PUT", "/v1/vms/%c3", NULL, &j), 404);
	assert_error(j, "not_found");
	/* a valid "é" that "%.200s" cuts in half: 199 bytes, then C3 A9 */
	memset(path, 'a', 199);
	path[0] = '/';
	strcpy(path + 199, "%C3%A9");
	assert_int_equal(req(f, "GET", path, NULL, &j), 404);
	assert_error(j, "not_found");
	/* the same through 405, whose message quotes the path as well */
	snprintf(path, sizeof(path), "/v1/vms");
	assert_int_equal(req(f, "PATCH", path, NULL, &j), 405);
	assert_error(j, "method_not_allowed");
	assert_int_equal(req(f, "GET", "/v1/version", NULL, &j), 200);   /* still serving */
	json_decref(j);
}

/* "a%00b" decodes to "a" as a C string: it must be a 400, not an action on
 * VM "a" (the raw target is looked at before libmicrohttpd decodes it). */
static void test_nul_in_path(void **state)
{
	struct fixture *f = *state;
	json_t *j;

	assert_int_equal(req(f, "POST", "/v1/vms", spec_a, NULL), 201);
	assert_int_equal(req(f, "GET", "/v1/vms/a%00b", NULL, &j), 400);
	assert_error(j, "invalid_request");
	assert_int_equal(req(f, "DELETE", "/v1/vms/a%00b", NULL, &j), 400);
	assert_error(j, "invalid_request");
	assert_int_equal(req(f, "DELETE", "/v1/vms/a?force=true%00x", NULL, &j), 400);
	assert_error(j, "invalid_request");
	assert_int_equal(req(f, "GET", "/v1/vms/a", NULL, &j), 200);      /* untouched */
	json_decref(j);
}

/* Files a spec names must lie beneath the allowed directories (/bin here):
 * 403 path_not_allowed, and nothing created. */
static void test_files_outside_refused(void **state)
{
	struct fixture *f = *state;
	json_t *j;

	assert_int_equal(req(f, "POST", "/v1/vms", "{\"name\": \"x\", \"kernel\": \"/etc/passwd\"}",
			     &j), 403);
	assert_error(j, "path_not_allowed");
	assert_int_equal(req(f, "POST", "/v1/vms",
			     "{\"name\": \"x\", \"kernel\": \"/bin/../etc/passwd\"}", &j), 403);
	assert_error(j, "path_not_allowed");
	assert_int_equal(req(f, "POST", "/v1/vms", "{\"name\": \"x\", \"kernel\": \"/bin/true\", "
			     "\"disks\": [{\"path\": \"/proc/self/root/etc/passwd\"}]}", &j), 403);
	assert_error(j, "path_not_allowed");
	assert_int_equal(req(f, "GET", "/v1/vms", NULL, &j), 200);
	assert_int_equal(json_array_size(json_object_get(j, "vms")), 0);
	json_decref(j);
}

static void test_response_parser(void **state)
{
	struct client_resp r;
	struct error e;
	const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
			       "Content-Type: application/json\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
	const char sized[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}trailing";

	assert_int_equal(client_parse_response(chunked, sizeof(chunked) - 1, &r, &e), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"a\":1}");
	assert_string_equal(r.ctype, "application/json");
	client_resp_free(&r);
	assert_int_equal(client_parse_response(sized, sizeof(sized) - 1, &r, &e), 0);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.len, 2);
	client_resp_free(&r);
	assert_int_equal(client_parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", 40, &r, &e), -1);
	assert_int_equal(client_parse_response("garbage\r\n\r\n", 11, &r, &e), -1);
	assert_int_equal(client_parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 50, &r, &e), -1);
	assert_int_equal(client_parse_response("HTTP/1.1 200 OK\r\n", 17, &r, &e), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_inventory_and_errors, setup, teardown),
		cmocka_unit_test(test_json_reals),
		cmocka_unit_test_setup_teardown(test_edit, setup, teardown),
		cmocka_unit_test(test_fmt_size),
		cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_failure_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_keeps_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_text_not_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_in_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_files_outside_refused, setup, teardown),
		cmocka_unit_test(test_response_parser),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
