/*
 * isofs_dl.c - the libisofs functions Shoal calls, loaded from
 * libisofs.so.6 when first called (base/dl_lib.c).
 *
 * Only `shoal run --cloud-init` uses libisofs: it writes the NoCloud seed
 * as an ISO 9660 volume (boot/cidata.c).  Linked, the library and its
 * relocations cost every process of the one `shoal` binary about 0.4 MiB
 * of resident memory, each VMM included, most of which never builds a
 * seed.  So it is not linked; these definitions forward to the real
 * functions.  No library offers that for us.
 *
 * Invariants: every function below is resolved or none is used; where the
 * library cannot be loaded, each fails as libisofs's own do
 * (ISO_FATAL_ERROR, NULL, nothing), and iso_error_to_msg() returns why
 * ("libisofs.so.6: cannot open shared object file: ... (install Debian's
 * libisofs6)"), so boot/cidata.c's messages name the cause.
 */
#include "base/isofs_dl.h"

#include "base/dl_lib.h"

static struct {
	int (*init)(void);
	void (*finish)(void);
	int (*set_msgs_severities)(char *, char *, char *);
	const char *(*error_to_msg)(int);
	int (*image_new)(const char *, IsoImage **);
	void (*image_unref)(IsoImage *);
	void (*image_set_volume_id)(IsoImage *, const char *);
	IsoDir *(*image_get_root)(const IsoImage *);
	int (*image_create_burn_source)(IsoImage *, IsoWriteOpts *, struct burn_source **);
	int (*memory_stream_new)(unsigned char *, size_t, IsoStream **);
	void (*stream_unref)(IsoStream *);
	int (*tree_add_new_file)(IsoDir *, const char *, IsoStream *, IsoFile **);
	int (*write_opts_new)(IsoWriteOpts **, int);
	void (*write_opts_free)(IsoWriteOpts *);
	int (*write_opts_set_rockridge)(IsoWriteOpts *, int);
	int (*write_opts_set_joliet)(IsoWriteOpts *, int);
	int (*write_opts_set_relaxed_vol_atts)(IsoWriteOpts *, int);
	int (*write_opts_set_omit_version_numbers)(IsoWriteOpts *, int);
	int (*write_opts_set_no_force_dots)(IsoWriteOpts *, int);
	int (*write_opts_set_replace_mode)(IsoWriteOpts *, int, int, int, int);
	int (*write_opts_set_default_dir_mode)(IsoWriteOpts *, mode_t);
	int (*write_opts_set_default_file_mode)(IsoWriteOpts *, mode_t);
	int (*write_opts_set_default_uid)(IsoWriteOpts *, uid_t);
	int (*write_opts_set_default_gid)(IsoWriteOpts *, gid_t);
} f;
static const char *const names[] = {
	"iso_init",
	"iso_finish",
	"iso_set_msgs_severities",
	"iso_error_to_msg",
	"iso_image_new",
	"iso_image_unref",
	"iso_image_set_volume_id",
	"iso_image_get_root",
	"iso_image_create_burn_source",
	"iso_memory_stream_new",
	"iso_stream_unref",
	"iso_tree_add_new_file",
	"iso_write_opts_new",
	"iso_write_opts_free",
	"iso_write_opts_set_rockridge",
	"iso_write_opts_set_joliet",
	"iso_write_opts_set_relaxed_vol_atts",
	"iso_write_opts_set_omit_version_numbers",
	"iso_write_opts_set_no_force_dots",
	"iso_write_opts_set_replace_mode",
	"iso_write_opts_set_default_dir_mode",
	"iso_write_opts_set_default_file_mode",
	"iso_write_opts_set_default_uid",
	"iso_write_opts_set_default_gid",
};
_Static_assert(sizeof(f) == sizeof(names) / sizeof(names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib lib = DL_LIB_INIT("libisofs.so.6", "libisofs6", names, &f);

const char *isofs_dl_error(void)
{
	return dl_lib_ready(&lib) ? NULL : lib.why;
}

int iso_init(void)
{
	return dl_lib_ready(&lib) ? f.init() : (int)ISO_FATAL_ERROR;
}

void iso_finish(void)
{
	if (dl_lib_ready(&lib))
		f.finish();
}

int iso_set_msgs_severities(char *queue_severity, char *print_severity, char *print_id)
{
	return dl_lib_ready(&lib) ? f.set_msgs_severities(queue_severity, print_severity, print_id) : (int)ISO_FATAL_ERROR;
}

const char *iso_error_to_msg(int errcode)
{
	return dl_lib_ready(&lib) ? f.error_to_msg(errcode) : lib.why;
}

int iso_image_new(const char *name, IsoImage **image)
{
	return dl_lib_ready(&lib) ? f.image_new(name, image) : (int)ISO_FATAL_ERROR;
}

void iso_image_unref(IsoImage *image)
{
	if (dl_lib_ready(&lib))
		f.image_unref(image);
}

void iso_image_set_volume_id(IsoImage *image, const char *volume_id)
{
	if (dl_lib_ready(&lib))
		f.image_set_volume_id(image, volume_id);
}

IsoDir *iso_image_get_root(const IsoImage *image)
{
	return dl_lib_ready(&lib) ? f.image_get_root(image) : NULL;
}

int iso_image_create_burn_source(IsoImage *image, IsoWriteOpts *opts, struct burn_source **burn_src)
{
	return dl_lib_ready(&lib) ? f.image_create_burn_source(image, opts, burn_src) : (int)ISO_FATAL_ERROR;
}

int iso_memory_stream_new(unsigned char *buf, size_t size, IsoStream **stream)
{
	return dl_lib_ready(&lib) ? f.memory_stream_new(buf, size, stream) : (int)ISO_FATAL_ERROR;
}

void iso_stream_unref(IsoStream *stream)
{
	if (dl_lib_ready(&lib))
		f.stream_unref(stream);
}

int iso_tree_add_new_file(IsoDir *parent, const char *name, IsoStream *stream, IsoFile **file)
{
	return dl_lib_ready(&lib) ? f.tree_add_new_file(parent, name, stream, file) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_new(IsoWriteOpts **opts, int profile)
{
	return dl_lib_ready(&lib) ? f.write_opts_new(opts, profile) : (int)ISO_FATAL_ERROR;
}

void iso_write_opts_free(IsoWriteOpts *opts)
{
	if (dl_lib_ready(&lib))
		f.write_opts_free(opts);
}

int iso_write_opts_set_rockridge(IsoWriteOpts *opts, int enable)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_rockridge(opts, enable) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_joliet(IsoWriteOpts *opts, int enable)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_joliet(opts, enable) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_relaxed_vol_atts(IsoWriteOpts *opts, int allow)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_relaxed_vol_atts(opts, allow) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_omit_version_numbers(IsoWriteOpts *opts, int omit)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_omit_version_numbers(opts, omit) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_no_force_dots(IsoWriteOpts *opts, int no)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_no_force_dots(opts, no) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_replace_mode(IsoWriteOpts *opts, int dir_mode, int file_mode, int uid, int gid)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_replace_mode(opts, dir_mode, file_mode, uid, gid) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_default_dir_mode(IsoWriteOpts *opts, mode_t dir_mode)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_default_dir_mode(opts, dir_mode) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_default_file_mode(IsoWriteOpts *opts, mode_t file_mode)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_default_file_mode(opts, file_mode) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_default_uid(IsoWriteOpts *opts, uid_t uid)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_default_uid(opts, uid) : (int)ISO_FATAL_ERROR;
}

int iso_write_opts_set_default_gid(IsoWriteOpts *opts, gid_t gid)
{
	return dl_lib_ready(&lib) ? f.write_opts_set_default_gid(opts, gid) : (int)ISO_FATAL_ERROR;
}
