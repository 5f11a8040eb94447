/*
 * config_blk.c - a virtio-blk disk's settings (struct vm_disk): from
 * `--disk PATH[,readonly][,direct][,serial=ID][,queues=N][,cache=SIZE][,mode=M]`,
 * from its JSON object in "disks", and back to that object.
 *
 *   {"path": "/srv/d.img", "readonly": false, "mode": "transitional",
 *    "serial": "d0", "queues": 2, "cache": 8388608, "direct": true}
 *
 * "path" is required and non-empty; the rest is optional.  The JSON object
 * is read field by field with typed values (booleans are true or false,
 * "queues" an integer, "cache" a byte count or a size such as "8M",
 * "serial" a string or null), so a path may hold any character.  The flag
 * form splits on commas and so cannot carry a path with one: such a path
 * shows up as an unknown option, and the message says to use the JSON form.
 *
 * Limits, the same on both paths: serial at most 20 bytes (the
 * VIRTIO_BLK_T_GET_ID string), 1 to 16 queues, cache at least 64K.  The
 * image itself is not opened here: the block layer does that, and the
 * daemon's spec checks first confine it.
 */
#include "devices/config_dev.h"
#include "base/size.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"

#define DISK_SERIAL_MAX 20
#define DISK_CACHE_MIN  (64u << 10)

static int disk_set_serial(struct vm_disk *d, const char *what, const char *v, struct error *e)
{
	char *s;

	if (strlen(v) > DISK_SERIAL_MAX)
		return error_set(e, EXIT_USAGE, "%s: serial '%s' is longer than %d bytes", what, v,
				 DISK_SERIAL_MAX);
	s = strdup(v);
	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(d->serial);
	d->serial = s;
	return 0;
}

static int disk_set_cache(struct vm_disk *d, const char *what, const char *v, struct error *e)
{
	if (size_parse(v, &d->cache_bytes) || d->cache_bytes < DISK_CACHE_MIN)
		return error_set(e, EXIT_USAGE, "%s: cache '%s' is not a size of at least 64K", what, v);
	return 0;
}

static int disk_set_path(struct vm_disk *d, const char *v, struct error *e)
{
	char *s = strdup(v);

	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	free(d->path);
	d->path = s;
	return 0;
}

/* ---- flags ---- */

/* A store: disk's own options follow its URL as store-KEY=VALUE (the
 * block layer's store: driver takes store-cache= as cache=, and so on:
 * docs/store.md), so they never meet --disk's cache=SIZE: each is added
 * to the path as written. */
static int disk_store_opt(struct vm_disk *d, const char *k, const char *v, struct error *e)
{
	char *s;

	if (!v || !*v)
		return error_set(e, EXIT_USAGE, "--disk: %s needs a value", k);
	if (asprintf(&s, "%s,%s=%s", d->path, k, v) < 0)
		return error_set(e, EXIT_HOST, "out of memory");
	free(d->path);
	d->path = s;
	return 0;
}

static bool flag_on(const char *v)
{
	return !v || !strcmp(v, "on") || !strcmp(v, "true");
}

static int disk_flag_item(void *ctx, const char *k, const char *v, struct error *e)
{
	struct vm_disk *d = ctx;
	char *end;
	long n;

	if (!d->path && !v)
		return disk_set_path(d, k, e);
	if (!strcmp(k, "path") && v)
		return disk_set_path(d, v, e);
	if (d->path && !strncmp(d->path, "store:", 6) && !strncmp(k, "store-", 6))
		return disk_store_opt(d, k, v, e);
	if (!strcmp(k, "readonly") || !strcmp(k, "ro"))
		return d->readonly = flag_on(v), 0;
	if (!strcmp(k, "direct"))
		return d->direct = flag_on(v), 0;
	if (!strcmp(k, "serial") && v)
		return disk_set_serial(d, "--disk", v, e);
	if (!strcmp(k, "queues") && v) {
		n = strtol(v, &end, 10);
		return config_queues_check("--disk", *v && !*end ? n : 0, v, &d->queues, e);
	}
	if (!strcmp(k, "cache") && v)
		return disk_set_cache(d, "--disk", v, e);
	if (!strcmp(k, "mode") && v)
		return config_mode_parse("--disk", v, &d->mode, e);
	if (!strcmp(k, "pristine") && v && *v)   /* docs/block.md: flags only */
		return free(d->pristine), (d->pristine = strdup(v)) ? 0 :
			error_set(e, EXIT_HOST, "out of memory");
	if (!strcmp(k, "pristine-size") && v)
		return size_parse(v, &d->pristine_bytes) || d->pristine_bytes < 4096 ?
			error_set(e, EXIT_USAGE, "--disk: pristine-size '%s' is not a size of "
				  "at least 4K", v) : 0;
	if (!v)   /* a bare word after the path: most likely the rest of a value with a comma */
		return error_set(e, EXIT_USAGE,
				 "--disk: unknown option '%s' (--disk splits at commas: give a path or "
				 "value that holds one in a --config file's \"disks\")", k);
	return error_set(e, EXIT_USAGE, "--disk: unknown option '%s'", k);
}

int disk_config_from_flags(struct vm_disk *d, const char *spec, struct error *e)
{
	int rc;

	memset(d, 0, sizeof(*d));
	rc = config_flags_each(spec, disk_flag_item, d, e);
	if (!rc && (!d->path || !*d->path))
		rc = error_set(e, EXIT_USAGE, "--disk '%s': no image path", spec);
	if (rc)
		disk_config_free(d);
	return rc;
}

/* ---- JSON ---- */

static int disk_json_key(struct vm_disk *d, const char *where, const char *k, json_t *v,
			 struct error *e)
{
	char num[32];
	long long n;

	if (!strcmp(k, "path"))
		return config_json_string(v, where, k, false, &d->path, e);
	if (!strcmp(k, "readonly") || !strcmp(k, "ro"))
		return config_json_bool(v, where, k, &d->readonly, e);
	if (!strcmp(k, "direct"))
		return config_json_bool(v, where, k, &d->direct, e);
	if (!strcmp(k, "serial")) {
		if (json_is_null(v))
			return free(d->serial), d->serial = NULL, 0;
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"serial\" must be a string or null", where);
		return disk_set_serial(d, where, json_string_value(v), e);
	}
	if (!strcmp(k, "queues")) {
		if (!json_is_integer(v))
			return error_set(e, EXIT_USAGE, "%s: \"queues\" must be an integer", where);
		n = json_integer_value(v);
		snprintf(num, sizeof(num), "%lld", n);
		return config_queues_check(where, n, num, &d->queues, e);
	}
	if (!strcmp(k, "cache")) {
		if (json_is_string(v))
			return disk_set_cache(d, where, json_string_value(v), e);
		if (!json_is_integer(v) || json_integer_value(v) < DISK_CACHE_MIN)
			return error_set(e, EXIT_USAGE,
					 "%s: \"cache\" must be a byte count or a size such as \"8M\", at least 64K",
					 where);
		d->cache_bytes = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!strcmp(k, "mode")) {
		if (!json_is_string(v))
			return error_set(e, EXIT_USAGE, "%s: \"mode\" must be a string", where);
		return config_mode_parse(where, json_string_value(v), &d->mode, e);
	}
	return error_set(e, EXIT_USAGE, "%s: unknown key \"%s\"", where, k);
}

int disk_config_from_json(struct vm_disk *d, json_t *o, const char *where, struct error *e)
{
	const char *k;
	json_t *v;
	int rc = 0;

	memset(d, 0, sizeof(*d));
	if (!json_is_object(o))
		return error_set(e, EXIT_USAGE, "%s: must be an object", where);
	json_object_foreach(o, k, v) {
		rc = disk_json_key(d, where, k, v, e);
		if (rc)
			break;
	}
	if (!rc && (!d->path || !*d->path))
		rc = error_set(e, EXIT_USAGE, "%s: no image path (\"path\")", where);
	if (rc)
		disk_config_free(d);
	return rc;
}

json_t *disk_config_to_json(const struct vm_disk *d)
{
	json_t *j = json_object();

	if (!j)
		return NULL;
	/* the order of the former renderer, so stored specs read the same */
	json_object_set_new(j, "path", json_string(d->path ? d->path : ""));
	json_object_set_new(j, "readonly", json_boolean(d->readonly));
	json_object_set_new(j, "mode", json_string(config_mode_name(d->mode)));
	if (d->serial)
		json_object_set_new(j, "serial", json_string(d->serial));
	if (d->queues)
		json_object_set_new(j, "queues", json_integer(d->queues));
	if (d->cache_bytes)
		json_object_set_new(j, "cache", json_integer((json_int_t)d->cache_bytes));
	if (d->direct)
		json_object_set_new(j, "direct", json_true());
	return j;
}

void disk_config_free(struct vm_disk *d)
{
	free(d->path);
	free(d->serial);
	free(d->pristine);
	memset(d, 0, sizeof(*d));
}

void disk_config_copy(struct vm_disk *dst, const struct vm_disk *src)
{
	*dst = *src;
	dst->path = src->path ? strdup(src->path) : NULL;
	dst->serial = src->serial ? strdup(src->serial) : NULL;
	dst->pristine = src->pristine ? strdup(src->pristine) : NULL;
}
