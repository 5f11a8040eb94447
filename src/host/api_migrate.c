/*
 * api_migrate.c - the live-migration routes (migration.c does the work;
 * docs/daemon.md, "Live migration"):
 *
 *   POST /v1/vms/{name}/migrate    on the source: {"to": URL, "token": T,
 *                                  "cacert": PEM, "downtime_ms": N,
 *                                  "bandwidth": B, "with_disks": bool,
 *                                  "auto_converge": bool, "postcopy_after":
 *                                  N, "compress": "zstd[:LEVEL]"}; answered
 *                                  once the VM
 *                                  runs at the destination (200, figures)
 *                                  or still runs here (an error)
 *   DELETE /v1/vms/{name}/migration  on the source: cancel that one; 200
 *                                  once it ended with the VM here, 409
 *                                  too_late once it migrated
 *   POST /v1/migrations/incoming   on the destination, from the source
 *                                  daemon: {"spec": SPEC, "disks": [...]};
 *                                  201 {"name",
 *                                  "address", "key"} once its VMM listens
 *                                  there (the key: migrate_auth.c);
 *                                  "disks" (with_disks) has one entry per
 *                                  spec disk: null (not sent: opened by
 *                                  its path) or {"size": BYTES, "format":
 *                                  "raw"|"qcow2"[, "base": {"path",
 *                                  "chain_id", "generation"}]}, the image
 *                                  the destination makes in the VM's
 *                                  directory (an overlay over that base
 *                                  where it has it: migration.c)
 *
 * The body parsers are pure (unit tests: tests/unit/test_host_migrate.c).
 * What a client may not send: a plain http:// destination (the token
 * would travel in clear), a token with control characters (it becomes a
 * header line), an address for the stream (the destination picks it).
 */
#include "host/api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/migrate_compress.h"

#include "state/migrate_postcopy.h"

#define API_CACERT_MAX (64 * 1024)

void api_migrate_req_free(struct host_migrate_req *r)
{
	free(r->cacert);
	r->cacert = NULL;
}

/* A string member: 1 to max bytes, no control characters. */
static bool plain_string(json_t *v, size_t max)
{
	const char *s = json_string_value(v);
	size_t n = s ? json_string_length(v) : 0;

	if (!s || n == 0 || n > max || strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int api_parse_migrate_body(const char *body, size_t len, struct host_migrate_req *r,
			   struct api_err *e)
{
	const char *key;
	json_t *o, *v;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	if (len == 0)
		return api_err_set(e, 400, "invalid_request", "body: expected {\"to\": URL}");
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, key, v) {
		if (!strcmp(key, "to")) {
			const char *s = json_string_value(v);

			if (!plain_string(v, sizeof(r->to) - 1) ||
			    (s[0] != '/' && strncmp(s, "https://", 8) && strncmp(s, "http://", 7))) {
				rc = api_err_set(e, 400, "invalid_request", "to: expected the destination "
						 "shoald's socket (an absolute path) or https://HOST:PORT");
				break;
			}
			if (!strncmp(s, "http://", 7)) {
				rc = api_err_set(e, 400, "invalid_request", "to: %.200s: shoald serves TCP "
						 "only over TLS (the token would travel in clear): use "
						 "https://", s);
				break;
			}
			snprintf(r->to, sizeof(r->to), "%s", s);
		} else if (!strcmp(key, "token")) {
			if (!plain_string(v, sizeof(r->token) - 1)) {
				rc = api_err_set(e, 400, "invalid_request", "token: expected the "
						 "destination's bearer token, 1 to %zu characters, no "
						 "control characters", sizeof(r->token) - 1);
				break;
			}
			snprintf(r->token, sizeof(r->token), "%s", json_string_value(v));
		} else if (!strcmp(key, "cacert")) {
			const char *s = json_string_value(v);

			if (!s || json_string_length(v) > API_CACERT_MAX || strlen(s) != json_string_length(v) ||
			    !strstr(s, "-----BEGIN ")) {
				rc = api_err_set(e, 400, "invalid_request", "cacert: expected the PEM text "
						 "of the destination's certificate or its CA (at most %d "
						 "bytes)", API_CACERT_MAX);
				break;
			}
			free(r->cacert);
			r->cacert = strdup(s);
		} else if (!strcmp(key, "downtime_ms")) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    json_integer_value(v) > 3600000) {
				rc = api_err_set(e, 400, "invalid_request", "downtime_ms: expected an "
						 "integer from 1 to 3600000");
				break;
			}
			r->downtime_ms = json_integer_value(v);
		} else if (!strcmp(key, "bandwidth")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > (1LL << 50)) {
				rc = api_err_set(e, 400, "invalid_request", "bandwidth: expected bytes "
						 "per second, an integer from 0 (no cap) to 2^50");
				break;
			}
			r->bandwidth = json_integer_value(v);
		} else if (!strcmp(key, "postcopy_after")) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    json_integer_value(v) > MIGRATE_POSTCOPY_MAX_AFTER) {
				rc = api_err_set(e, 400, "invalid_request", "postcopy_after: expected "
						 "a number of pre-copy rounds, an integer from 1 to %d",
						 MIGRATE_POSTCOPY_MAX_AFTER);
				break;
			}
			r->postcopy_after = (int)json_integer_value(v);
		} else if (!strcmp(key, "compress")) {
			struct error ze = { 0 };

			if (!json_is_string(v)) {
				rc = api_err_set(e, 400, "invalid_request", "compress: expected \"zstd\" "
						 "or \"zstd:LEVEL\"");
				break;
			}
			if (migrate_z_parse(json_string_value(v), &r->compress_level, &ze)) {
				/* "migrate: --compress: '...': ..." without the CLI's words */
				const char *m = strstr(ze.msg, "'");

				rc = api_err_set(e, 400, "invalid_request", "compress: %s", m ? m : ze.msg);
				break;
			}
		} else if (!strcmp(key, "with_disks") || !strcmp(key, "auto_converge")) {
			if (!json_is_boolean(v)) {
				rc = api_err_set(e, 400, "invalid_request", "%s: expected true or false",
						 key);
				break;
			}
			*(key[0] == 'w' ? &r->with_disks : &r->auto_converge) = json_is_true(v);
		} else {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", key);
			break;
		}
	}
	json_decref(o);
	if (!rc && !r->to[0])
		rc = api_err_set(e, 400, "invalid_request", "to: missing (the destination shoald)");
	if (!rc && r->token[0] && r->to[0] == '/')
		rc = api_err_set(e, 400, "invalid_request", "token: only for an https:// destination "
				 "(a Unix socket's callers are known by their uid)");
	if (rc)
		api_migrate_req_free(r);
	return rc;
}

/* "disks" of an incoming body: an array of at most VM_MAX_DISKS entries,
 * each null or {"size": 1..2^50 bytes, "format": "raw"|"qcow2"}, a qcow2
 * one with an optional "base": {"path", "chain_id", "generation"}. */
static int incoming_disks(json_t *v, struct api_err *e)
{
	size_t i;
	json_t *d;

	if (!json_is_array(v) || json_array_size(v) > 16)
		return api_err_set(e, 400, "invalid_request", "disks: expected an array of at most "
				   "16 entries, one per disk of the spec");
	json_array_foreach(v, i, d) {
		json_t *size = json_object_get(d, "size");
		const char *fmt = json_string_value(json_object_get(d, "format"));

		if (json_is_null(d))
			continue;
		json_t *b = json_object_get(d, "base");
		const char *bp = json_string_value(json_object_get(b, "path"));
		const char *bid = json_string_value(json_object_get(b, "chain_id"));
		json_t *bgen = json_object_get(b, "generation");

		if (!json_is_object(d) || json_object_size(d) != (b ? 3u : 2u) || !json_is_integer(size) ||
		    json_integer_value(size) < 1 || json_integer_value(size) > (1LL << 50) ||
		    !fmt || (strcmp(fmt, "raw") && strcmp(fmt, "qcow2")))
			return api_err_set(e, 400, "invalid_request", "disks[%zu]: expected null or "
					   "{\"size\": BYTES (1 to 2^50), \"format\": \"raw\" or "
					   "\"qcow2\"[, \"base\": {...}]}", i);
		if (b && (strcmp(fmt, "qcow2") || !json_is_object(b) || json_object_size(b) != 3 || !bp ||
			  bp[0] != '/' || strlen(bp) >= 4096 || !bid || strlen(bid) != 36 ||
			  !json_is_integer(bgen) || json_integer_value(bgen) < 0))
			return api_err_set(e, 400, "invalid_request", "disks[%zu].base: expected {\"path\": "
					   "an absolute path, \"chain_id\": a UUID, \"generation\": N} on a "
					   "qcow2 disk", i);
	}
	return 0;
}

int api_parse_incoming_body(const char *body, size_t len, char **spec, char **disks,
			    struct api_err *e)
{
	const char *key;
	json_t *o, *v;
	int rc = 0;

	*spec = NULL;
	*disks = NULL;
	if (len == 0)
		return api_err_set(e, 400, "invalid_request", "body: expected {\"spec\": SPEC}");
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, key, v) {
		char **out = !strcmp(key, "spec") ? spec : !strcmp(key, "disks") ? disks : NULL;

		if (!out) {
			rc = api_err_set(e, 400, "invalid_request", "unknown key \"%.64s\"", key);
			break;
		}
		if (out == spec && !json_is_object(v)) {
			rc = api_err_set(e, 400, "invalid_request", "spec: expected the VM's spec, "
					 "an object");
			break;
		}
		if (out == disks && incoming_disks(v, e)) {
			rc = -1;
			break;
		}
		free(*out);
		*out = json_dumps(v, JSON_COMPACT);
		if (!*out) {
			rc = api_err_set(e, 500, "internal", "out of memory");
			break;
		}
	}
	json_decref(o);
	if (!rc && !*spec)
		rc = api_err_set(e, 400, "invalid_request", "spec: missing (the VM's spec)");
	if (rc) {
		free(*spec);
		free(*disks);
		*spec = *disks = NULL;
	}
	return rc;
}

/* POST /v1/vms/NAME/migrate: 200 with the figures once it runs there. */
int api_vm_migrate(struct api_call *c)
{
	struct host_migrate_req r;
	struct api_err e;
	void *res = NULL;
	int rc;

	if (api_parse_migrate_body(c->body, c->body_len, &r, &e))
		return api_reply_error(c, &e);
	rc = host_vm_migrate(c->h, c->name, &r, &res, &e);
	api_migrate_req_free(&r);
	if (rc)
		return api_reply_error(c, &e);
	return api_reply_json(c, 200, res);
}

/* DELETE /v1/vms/NAME/migration: cancel the one in progress; 200 once it
 * has ended with the VM running here. */
int api_vm_migrate_cancel(struct api_call *c)
{
	struct api_err e;

	if (host_vm_migrate_cancel(c->h, c->name, &e))
		return api_reply_error(c, &e);
	return api_reply_json(c, 200, json_pack("{s:s, s:s}", "name", c->name, "state",
						"cancelled"));
}

/* POST /v1/migrations/incoming: 201 {"name", "address", "key"} once the
 * VMM listens.  The stream's address is TCP when the caller came over
 * TCP; "key" is the secret the source proves it knows when it connects
 * there (state/migrate_auth.c), for this caller only (HTTPS with the
 * token, or the Unix socket). */
int api_migration_incoming(struct api_call *c)
{
	char *spec, *disks, name[HOST_NAME_MAX_LEN + 1] = "", addr[160], key[65] = "";
	struct api_err e;
	int rc;

	if (api_parse_incoming_body(c->body, c->body_len, &spec, &disks, &e))
		return api_reply_error(c, &e);
	rc = host_migrate_incoming(c->h, spec, strlen(spec), disks, c->peer && c->peer->tcp, name,
				   sizeof(name), addr, sizeof(addr), key, &e);
	free(spec);
	free(disks);
	if (rc)
		return api_reply_error(c, &e);
	rc = api_reply_json(c, 201, json_pack("{s:s, s:s, s:s}", "name", name, "address", addr,
					      "key", key));
	explicit_bzero(key, sizeof(key));
	return rc;
}
