/*
 * config_dev.c - what the device configuration readers share (see
 * config_dev.h): sizes, the virtio mode, queue counts, the flag splitter
 * and typed JSON values.
 *
 * Each helper checks one kind of value the same way for a flag and for a
 * JSON field, so the two front ends cannot drift apart: a limit lives here
 * once.  Messages start with `what` (the flag, "--disk", or the JSON
 * location, "vm.json: disks[0]") and then name the field, so a user can
 * find the value that was refused.
 *
 * Nothing here keeps state or takes a reference: a helper writes its
 * output only when it succeeds (an error leaves *out as it was).
 */
#include "devices/config_dev.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

int config_mode_parse(const char *what, const char *v, enum vm_virtio_mode *m,
		      struct error *e)
{
	if (!strcmp(v, "transitional"))
		*m = VM_VIRTIO_TRANSITIONAL;
	else if (!strcmp(v, "legacy"))
		*m = VM_VIRTIO_LEGACY;
	else if (!strcmp(v, "modern"))
		*m = VM_VIRTIO_MODERN;
	else
		return error_set(e, EXIT_USAGE, "%s: mode '%s' is not transitional, legacy or modern",
				 what, v);
	return 0;
}

const char *config_mode_name(enum vm_virtio_mode m)
{
	return m == VM_VIRTIO_LEGACY ? "legacy" : m == VM_VIRTIO_MODERN ? "modern" : "transitional";
}

int config_queues_check(const char *what, long long n, const char *text, int *q,
			struct error *e)
{
	if (n < 1 || n > 16)
		return error_set(e, EXIT_USAGE, "%s: queues '%s' is not a number from 1 to 16",
				 what, text);
	*q = (int)n;
	return 0;
}

int config_flags_each(const char *spec, config_item_fn fn, void *ctx, struct error *e)
{
	char *copy = strdup(spec), *save = NULL;
	int rc = 0;

	if (!copy)
		return error_set(e, EXIT_HOST, "out of memory");
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');

		if (eq)
			*eq++ = '\0';
		rc = fn(ctx, item, eq, e);
		if (rc)
			break;
	}
	free(copy);
	return rc;
}

int config_json_bool(json_t *v, const char *what, const char *key, bool *out,
		     struct error *e)
{
	if (!json_is_boolean(v))
		return error_set(e, EXIT_USAGE, "%s: \"%s\" must be true or false", what, key);
	*out = json_is_true(v);
	return 0;
}

int config_json_string(json_t *v, const char *what, const char *key, bool nullable,
		       char **out, struct error *e)
{
	char *s;

	if (nullable && json_is_null(v)) {
		free(*out);
		*out = NULL;
		return 0;
	}
	if (!json_is_string(v))
		return error_set(e, EXIT_USAGE, "%s: \"%s\" must be a string%s", what, key,
				 nullable ? " or null" : "");
	s = strdup(json_string_value(v));
	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(*out);
	*out = s;
	return 0;
}

int config_json_int(json_t *v, const char *what, const char *key, long long min,
		    long long max, long long *out, struct error *e)
{
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return error_set(e, EXIT_USAGE, "%s: \"%s\" must be an integer from %lld to %lld",
				 what, key, min, max);
	*out = json_integer_value(v);
	return 0;
}
