/*
 * fuzz_api_request.c - libFuzzer target for the request side of shoald's
 * API that is Shoal's own code (libmicrohttpd parses the HTTP framing): the
 * route table and its {name} matching, query values, and the stop body;
 * the error answer for a path no route takes, with the path quoted in it
 * (the reply path where a byte that is not UTF-8 once made the daemon
 * read past a buffer); and for the CLI's HTTP response parser
 * (cli/client.c), which reads whatever comes back over the socket.
 *
 * Input: "METHOD PATH\n" then a body.  The same bytes are also handed to
 * the response parser whole, and the body to the error renderer as a
 * message.  Invariants: a matched route's {name} is a valid VM name and
 * re-matches the same route; an error answer is exactly its length, valid
 * JSON, of the one error shape; a parsed response has a status in 100-599
 * and a body no longer than the input.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"
#include "host/api.h"
#include "host/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The error body for `e` must be what api_reply_error sends: its length
 * its own, JSON, {"error": {"code", "message"}} and a newline, with e's own
 * code (not the fallback's "internal": every message must be encodable). */
static void fuzz_error_body(const struct api_err *e)
{
	size_t len = 0;
	char *body = api_error_body(e, &len);
	json_t *j, *err;

	if (!body)
		return;
	if (len != strlen(body) || len < 2 || body[len - 1] != '\n')
		abort();
	j = json_loadb(body, len, 0, NULL);
	err = json_object_get(j, "error");
	if (!json_is_string(json_object_get(err, "code")) ||
	    !json_is_string(json_object_get(err, "message")) || json_object_size(j) != 1 ||
	    strcmp(json_string_value(json_object_get(err, "code")), e->code))
		abort();
	json_decref(j);
	free(body);
}

/* Route the first line as "METHOD PATH". */
static void fuzz_route(const char *line)
{
	char method[16], path[512], name[HOST_NAME_MAX_LEN + 1], again[HOST_NAME_MAX_LEN + 1];
	const struct api_route *r;
	const char *sp = strchr(line, ' ');
	int status;

	if (!sp || (size_t)(sp - line) >= sizeof(method) || strlen(sp + 1) >= sizeof(path))
		return;
	memcpy(method, line, (size_t)(sp - line));
	method[sp - line] = '\0';
	strcpy(path, sp + 1);
	r = api_route_find(method, path, name, sizeof(name), &status);
	if (!r) {
		struct api_err e;

		if (status != 404 && status != 405)
			abort();
		api_route_error(method, path, status, &e);
		fuzz_error_body(&e);
		return;
	}
	if (strstr(r->path, "{name}") && !host_name_valid(name))
		abort();
	if (api_route_find(method, path, again, sizeof(again), &status) != r)
		abort();
	api_parse_bool(path);
	api_parse_uint(path, 1 << 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client_resp r;
	struct api_err ae;
	struct error e;
	bool force = false;
	int timeout = -1;
	char *buf, *nl;

	if (size > (256 << 10))
		return 0;
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	nl = memchr(buf, '\n', size);
	if (nl) {
		*nl = '\0';
		api_target_check(buf, NULL);
		fuzz_route(buf);
		api_err_set(&ae, 404, "not_found", "%s", nl + 1);   /* any bytes as a message */
		fuzz_error_body(&ae);
		if (api_parse_stop_body(nl + 1, size - (size_t)(nl + 1 - buf), &force, &timeout, &ae) == 0 &&
		    (timeout < -1 || timeout > 3600))
			abort();
		*nl = '\n';
	}
	if (client_parse_response(buf, size, &r, &e) == 0) {
		if (r.status < 100 || r.status > 599 || r.len > size || !r.body)
			abort();
		client_resp_free(&r);
	}
	free(buf);
	return 0;
}
