/*
 * config_fs.c - a vhost-user-fs device's settings: its mount tag and its
 * back end's socket, from `--fs tag=TAG,socket=PATH`, from one entry of the
 * JSON "fs" array, and back to it.
 *
 *   "fs": [ {"tag": "shared", "socket": "/run/virtiofsd.sock"} ]
 *
 * Both keys are needed.  The tag is what the guest names in `mount -t
 * virtiofs TAG DIR`: 1 to 36 bytes (the config space's field), printable
 * ASCII without spaces, commas or quotes, so it reads the same in a flag,
 * a JSON file and a shell.  The socket is a Unix socket path (at most 107
 * bytes, sun_path's limit).  The readers fill an empty slot and leave it
 * empty when they fail; X_from_json(X_to_json(x)) gives x back.
 *
 * The socket is not connected here: the device does that when the VM is
 * built (devices/vhost_user_fs.c).
 */
#include "devices/vhost_user_fs.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "base/exitcode.h"
#include "devices/config_dev.h"

static int fs_check(const struct vm_fs *f, const char *where, struct error *e)
{
	size_t n = f->tag ? strlen(f->tag) : 0;

	if (!f->tag || !f->socket)
		return error_set(e, EXIT_USAGE, "%s: needs both tag=TAG and socket=PATH", where);
	if (n == 0 || n > VUFS_TAG_MAX)
		return error_set(e, EXIT_USAGE, "%s: tag '%s' must be 1 to %d bytes", where, f->tag,
				 VUFS_TAG_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)f->tag[i];

		if (c <= ' ' || c >= 0x7f || c == ',' || c == '"' || c == '\'' || c == '\\')
			return error_set(e, EXIT_USAGE, "%s: tag '%s': printable ASCII only, no "
					 "spaces, commas or quotes", where, f->tag);
	}
	if (!f->socket[0] || strlen(f->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return error_set(e, EXIT_USAGE, "%s: socket '%s' must be a path of 1 to %zu bytes",
				 where, f->socket, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	return 0;
}

static int fs_flag_item(void *ctx, const char *k, const char *v, struct error *e)
{
	struct vm_fs *f = ctx;
	char **dst;

	if (!v)
		return error_set(e, EXIT_USAGE, "--fs: '%s' needs a value (tag=TAG,socket=PATH)", k);
	if (!strcmp(k, "tag"))
		dst = &f->tag;
	else if (!strcmp(k, "socket"))
		dst = &f->socket;
	else
		return error_set(e, EXIT_USAGE, "--fs: unknown option '%s' (tag=TAG,socket=PATH)", k);
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : error_set(e, EXIT_HOST, "out of memory");
}

int fs_config_from_flags(struct vm_fs *f, const char *spec, struct error *e)
{
	memset(f, 0, sizeof(*f));
	if (config_flags_each(spec, fs_flag_item, f, e) || fs_check(f, "--fs", e)) {
		fs_config_free(f);
		return -1;
	}
	return 0;
}

int fs_config_from_json(struct vm_fs *f, json_t *o, const char *where, struct error *e)
{
	const char *k;
	json_t *x;

	memset(f, 0, sizeof(*f));
	if (!json_is_object(o))
		return error_set(e, EXIT_USAGE, "%s: must be {\"tag\": TAG, \"socket\": PATH}", where);
	json_object_foreach(o, k, x) {
		if (strcmp(k, "tag") && strcmp(k, "socket")) {
			fs_config_free(f);
			return error_set(e, EXIT_USAGE, "%s: unknown key \"%s\"", where, k);
		}
		if (config_json_string(x, where, k, false, !strcmp(k, "tag") ? &f->tag : &f->socket,
				       e)) {
			fs_config_free(f);
			return -1;
		}
	}
	if (fs_check(f, where, e)) {
		fs_config_free(f);
		return -1;
	}
	return 0;
}

json_t *fs_config_to_json(const struct vm_fs *f)
{
	return json_pack("{s:s, s:s}", "tag", f->tag ? f->tag : "", "socket",
			 f->socket ? f->socket : "");
}

void fs_config_free(struct vm_fs *f)
{
	free(f->tag);
	free(f->socket);
	f->tag = f->socket = NULL;
}

void fs_config_copy(struct vm_fs *dst, const struct vm_fs *src)
{
	dst->tag = src->tag ? strdup(src->tag) : NULL;
	dst->socket = src->socket ? strdup(src->socket) : NULL;
}
