/*
 * config_console.c - the virtio console's settings: one port whose output
 * goes to a file and whose input (optional) comes from another, from
 * `--virtio-console file:OUT[,in=IN]`, from the JSON "virtio_console"
 * value (the same string, or null for none), and back to it.
 *
 * The value is kept whole in struct vm_config's `vconsole`, as the device
 * reads it (devices/virtio_console.c splits OUT from IN at ",in="), so the
 * checks here are those the device makes again: it starts with "file:",
 * OUT is not empty, and an IN, when given, is not empty.  Because ",in="
 * is the separator inside the value, OUT cannot contain that sequence on
 * either path.  The readers replace the caller's string only when they
 * succeed.
 *
 * The serial console ("console": stdio, none, file:PATH) is the VM's, not
 * a device setting: vmm/config.c reads it.
 */
#include "devices/config_dev.h"

#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

/* "file:OUT[,in=IN]" with OUT and IN not empty. */
static bool vconsole_valid(const char *s)
{
	const char *in;

	if (strncmp(s, "file:", 5) || !s[5])
		return false;
	in = strstr(s, ",in=");
	return !in || (in > s + 5 && in[4]);
}

static int vconsole_set(char **spec, const char *v, struct error *e)
{
	char *s = strdup(v);

	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(*spec);
	*spec = s;
	return 0;
}

int vconsole_config_from_flags(char **spec, const char *arg, struct error *e)
{
	if (!vconsole_valid(arg))
		return error_set(e, EXIT_USAGE, "--virtio-console: '%s' is not file:PATH[,in=PATH]", arg);
	return vconsole_set(spec, arg, e);
}

int vconsole_config_from_json(char **spec, json_t *v, const char *where, struct error *e)
{
	if (json_is_null(v)) {
		free(*spec);
		*spec = NULL;
		return 0;
	}
	if (!json_is_string(v) || !vconsole_valid(json_string_value(v)))
		return error_set(e, EXIT_USAGE,
				 "%s: \"virtio_console\" must be \"file:PATH\" (with \",in=PATH\" for input) or null",
				 where);
	return vconsole_set(spec, json_string_value(v), e);
}

json_t *vconsole_config_to_json(const char *spec)
{
	return spec ? json_string(spec) : json_null();
}
