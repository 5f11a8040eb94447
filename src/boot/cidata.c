/*
 * cidata.c - the cloud-init NoCloud seed (see cidata.h).
 *
 * cloud-init's NoCloud data source looks for a vfat or ISO 9660 file
 * system whose volume label is "cidata" and reads /user-data and
 * /meta-data from its root ("Both files are required to be present for
 * it to be considered a valid seed ISO", cloud-init's nocloud.rst);
 * /network-config is optional.  So both are required here as well: a seed
 * without meta-data is refused rather than given an invented instance-id,
 * since the instance-id is what tells cloud-init that this is a new
 * instance, and an empty meta-data file is a valid choice the user makes.
 *
 * The volume is written by libisofs (Debian's libisofs-dev), with Rock
 * Ridge and Joliet, so that the names keep their lower case and dash under
 * any reader (plain ISO 9660 level 1 would show USER_DAT.;1).  Ownership,
 * modes and the input files' times are replaced (root, 0444 files, 0555
 * directory) so that nothing of the host's users leaks into the guest.
 *
 * Trust: the input paths come from the user or, through shoald, from an API
 * client.  They are opened with path_open, so a confined VMM reads them
 * only beneath its allowed directories; each must be a regular file of at
 * most CIDATA_FILE_MAX bytes (a FIFO or a device is refused, never read).
 * The contents are copied into the image as bytes: nothing here parses
 * them, and the guest reads them as its own input.
 */
#include "boot/cidata.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/isofs_dl.h"       /* libisofs, loaded on first use */
#include "base/io.h"
#include "base/path_beneath.h"

/* One input: the flag's key, the JSON key, the file name in the seed. */
static const struct cidata_key {
	const char *flag, *json, *name;
	size_t off;
} cidata_keys[] = {
	{ "user-data", "user_data", "user-data", offsetof(struct cidata_files, user_data) },
	{ "meta-data", "meta_data", "meta-data", offsetof(struct cidata_files, meta_data) },
	{ "network-config", "network_config", "network-config",
	  offsetof(struct cidata_files, network_config) },
};
#define NKEYS (sizeof(cidata_keys) / sizeof(cidata_keys[0]))

static char **slot(struct cidata_files *f, size_t i)
{
	return (char **)((char *)f + cidata_keys[i].off);
}

static const char *cslot(const struct cidata_files *f, size_t i)
{
	return *(char *const *)((const char *)f + cidata_keys[i].off);
}

void cidata_free(struct cidata_files *f)
{
	for (size_t i = 0; i < NKEYS; i++)
		free(*slot(f, i));
	memset(f, 0, sizeof(*f));
}

void cidata_copy(struct cidata_files *dst, const struct cidata_files *src)
{
	for (size_t i = 0; i < NKEYS; i++)
		*slot(dst, i) = cslot(src, i) ? strdup(cslot(src, i)) : NULL;
}

/* Both required files are there; `what` names the form in the message. */
static int cidata_check_required(const struct cidata_files *f, const char *what, bool json,
				 struct error *e)
{
	for (size_t i = 0; i < 2; i++)
		if (!cslot(f, i))
			return error_set(e, EXIT_USAGE,
					 "%s: %s is missing: cloud-init's NoCloud seed needs both "
					 "user-data and meta-data (an empty file will do; meta-data "
					 "usually holds instance-id: NAME)", what,
					 json ? cidata_keys[i].json : cidata_keys[i].flag);
	return 0;
}

static int cidata_set(struct cidata_files *f, size_t i, const char *what, const char *key,
		      const char *v, struct error *e)
{
	if (*slot(f, i))
		return error_set(e, EXIT_USAGE, "%s: %s is given twice", what, key);
	if (!*v)
		return error_set(e, EXIT_USAGE, "%s: %s is empty (give a file's path)", what, key);
	*slot(f, i) = strdup(v);
	if (!*slot(f, i))
		return error_set(e, EXIT_HOST, "out of memory");
	return 0;
}

int cidata_from_flags(struct cidata_files *f, const char *spec, struct error *e)
{
	struct cidata_files n = { 0 };
	char *copy = strdup(spec), *save = NULL, *tok;
	int rc = 0;

	if (!copy)
		return error_set(e, EXIT_HOST, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		size_t i;

		if (eq)
			*eq = '\0';
		for (i = 0; i < NKEYS && strcmp(tok, cidata_keys[i].flag); i++)
			;
		if (i == NKEYS)
			rc = error_set(e, EXIT_USAGE, "--cloud-init: unknown key '%s' (user-data=FILE, "
				       "meta-data=FILE, network-config=FILE)", tok);
		else if (!eq)
			rc = error_set(e, EXIT_USAGE, "--cloud-init: %s needs a value (%s=FILE)", tok,
				       tok);
		else
			rc = cidata_set(&n, i, "--cloud-init", tok, eq + 1, e);
	}
	free(copy);
	if (!rc)
		rc = cidata_check_required(&n, "--cloud-init", false, e);
	if (rc) {
		cidata_free(&n);
		return -1;
	}
	cidata_free(f);
	*f = n;
	return 0;
}

int cidata_from_json(struct cidata_files *f, json_t *v, const char *where, struct error *e)
{
	struct cidata_files n = { 0 };
	char what[300];
	const char *k;
	json_t *x;
	int rc = 0;

	snprintf(what, sizeof(what), "%s: cloud_init", where);
	if (json_is_null(v)) {
		cidata_free(f);
		return 0;
	}
	if (!json_is_object(v))
		return error_set(e, EXIT_USAGE, "%s: must be an object (user_data, meta_data, "
				 "network_config: paths) or null", what);
	json_object_foreach(v, k, x) {
		size_t i;

		for (i = 0; i < NKEYS && strcmp(k, cidata_keys[i].json); i++)
			;
		if (i == NKEYS)
			rc = error_set(e, EXIT_USAGE, "%s: unknown key \"%s\" (user_data, meta_data, "
				       "network_config)", what, k);
		else if (i == 2 && json_is_null(x))
			continue;
		else if (!json_is_string(x))
			rc = error_set(e, EXIT_USAGE, "%s: \"%s\" must be a path (a string)", what, k);
		else
			rc = cidata_set(&n, i, what, k, json_string_value(x), e);
		if (rc)
			break;
	}
	if (!rc)
		rc = cidata_check_required(&n, what, true, e);
	if (rc) {
		cidata_free(&n);
		return -1;
	}
	cidata_free(f);
	*f = n;
	return 0;
}

json_t *cidata_to_json(const struct cidata_files *f)
{
	json_t *o;

	if (!cidata_wanted(f))
		return json_null();
	o = json_object();
	for (size_t i = 0; o && i < NKEYS; i++)
		if (cslot(f, i))
			json_object_set_new(o, cidata_keys[i].json, json_string(cslot(f, i)));
	return o;
}

/* ---- building the volume ---- */

/* The whole of input `i` into a malloc'd buffer (at least 1 byte, so an
 * empty file is a valid buffer for libisofs). */
static int cidata_read(const struct cidata_files *f, size_t i, unsigned char **buf,
		       size_t *len, struct error *e)
{
	const char *path = cslot(f, i), *name = cidata_keys[i].name;
	struct stat st;
	size_t got = 0;
	/* O_NONBLOCK: a FIFO is refused below, never waited on (an
	 * unconfined path_open is a plain open) */
	int fd = path_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);

	*buf = NULL;
	if (fd < 0)
		return error_set(e, errno == EACCES && path_refusal() ? EXIT_USAGE : EXIT_NOINPUT,
				 "cloud-init %s: %s: %s", name, path,
				 path_refusal() ? path_refusal() : strerror(errno));
	if (fstat(fd, &st) < 0) {
		int err = errno;

		close(fd);
		return error_set(e, EXIT_NOINPUT, "cloud-init %s: %s: %s", name, path, strerror(err));
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > CIDATA_FILE_MAX) {
		close(fd);
		if (!S_ISREG(st.st_mode))
			return error_set(e, EXIT_USAGE, "cloud-init %s: %s: not a regular file", name,
					 path);
		return error_set(e, EXIT_USAGE, "cloud-init %s: %s: %llu bytes, more than the "
				 "%u MiB a seed file may hold", name, path,
				 (unsigned long long)st.st_size, CIDATA_FILE_MAX >> 20);
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		close(fd);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, *buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : 0;

			close(fd);
			free(*buf);
			*buf = NULL;
			return error_set(e, EXIT_NOINPUT, "cloud-init %s: %s: %s", name, path,
					 err ? strerror(err) : "the file shrank while it was read");
		}
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return 0;
}

static int iso_fail(struct error *e, const char *what, int ret)
{
	return error_set(e, EXIT_HOST, "cloud-init seed: %s: %s", what, iso_error_to_msg(ret));
}

/* The image's tree: each input as a file in the root. */
static int cidata_fill(IsoImage *img, const struct cidata_files *f, struct error *e)
{
	IsoDir *root = iso_image_get_root(img);

	for (size_t i = 0; i < NKEYS; i++) {
		IsoStream *st;
		IsoFile *file;
		unsigned char *buf;
		size_t len = 0;
		int ret;

		if (!cslot(f, i))
			continue;
		if (cidata_read(f, i, &buf, &len, e))
			return -1;
		ret = iso_memory_stream_new(buf, len, &st);   /* takes buf */
		if (ret < 0) {
			free(buf);
			return iso_fail(e, "memory stream", ret);
		}
		ret = iso_tree_add_new_file(root, cidata_keys[i].name, st, &file);
		if (ret < 0) {
			iso_stream_unref(st);
			return iso_fail(e, cidata_keys[i].name, ret);
		}
	}
	return 0;
}

/* Read the image out of the burn source into fd, sector by sector. */
static int cidata_write_out(struct burn_source *bs, int fd, struct error *e)
{
	unsigned char sec[2048];
	int n;

	for (;;) {
		n = bs->read ? bs->read(bs, sec, sizeof(sec)) : bs->read_xt(bs, sec, sizeof(sec));
		if (n == 0)
			return 0;
		if (n < 0) {
			if (bs->version >= 1 && bs->cancel)
				bs->cancel(bs);
			return error_set(e, EXIT_HOST, "cloud-init seed: the ISO writer failed");
		}
		if (write_all(fd, sec, (size_t)n)) {
			int err = errno;

			if (bs->version >= 1 && bs->cancel)
				bs->cancel(bs);
			return error_set(e, EXIT_HOST, "cloud-init seed: write: %s", strerror(err));
		}
	}
}

int cidata_build(const struct cidata_files *f, int fd, struct error *e)
{
	IsoImage *img = NULL;
	IsoWriteOpts *opts = NULL;
	struct burn_source *bs = NULL;
	int ret, rc = -1;

	if (!f->user_data || !f->meta_data)
		return cidata_check_required(f, "cloud-init", false, e);
	ret = iso_init();
	if (ret < 0)
		return iso_fail(e, "libisofs", ret);
	iso_set_msgs_severities("NEVER", "NEVER", "shoal");   /* errors come back as codes */
	ret = iso_image_new(CIDATA_VOLUME_ID, &img);
	if (ret < 0) {
		iso_fail(e, "image", ret);
		goto out;
	}
	iso_image_set_volume_id(img, CIDATA_VOLUME_ID);
	if (cidata_fill(img, f, e))
		goto out;
	ret = iso_write_opts_new(&opts, 0);
	if (ret < 0) {
		iso_fail(e, "options", ret);
		goto out;
	}
	iso_write_opts_set_rockridge(opts, 1);
	iso_write_opts_set_joliet(opts, 1);
	iso_write_opts_set_relaxed_vol_atts(opts, 1);   /* "cidata" as written, not CIDATA */
	iso_write_opts_set_omit_version_numbers(opts, 2);  /* Joliet: "user-data", */
	iso_write_opts_set_no_force_dots(opts, 2);         /* not "user-data.;1" */
	iso_write_opts_set_replace_mode(opts, 2, 2, 2, 2);
	iso_write_opts_set_default_dir_mode(opts, 0555);
	iso_write_opts_set_default_file_mode(opts, 0444);
	iso_write_opts_set_default_uid(opts, 0);
	iso_write_opts_set_default_gid(opts, 0);
	ret = iso_image_create_burn_source(img, opts, &bs);
	if (ret < 0) {
		iso_fail(e, "writer", ret);
		goto out;
	}
	if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		error_set(e, EXIT_HOST, "cloud-init seed: truncate: %s", strerror(errno));
		if (bs->version >= 1 && bs->cancel)
			bs->cancel(bs);
		goto out;
	}
	rc = cidata_write_out(bs, fd, e);
out:
	if (bs) {
		bs->free_data(bs);     /* joins the writer thread */
		free(bs);
	}
	iso_write_opts_free(opts);
	if (img)
		iso_image_unref(img);
	iso_finish();
	return rc;
}
