/*
 * cidata.h - the cloud-init NoCloud seed: an ISO 9660 volume labelled
 * "cidata" holding user-data, meta-data and, optionally, network-config,
 * built by Shoal before the VM starts and attached as one more read-only
 * virtio-blk disk (see cidata.c, docs/linux-guests.md).
 */
#ifndef SHOAL_BOOT_CIDATA_H
#define SHOAL_BOOT_CIDATA_H

#include <jansson.h>

#include "base/error.h"

#define CIDATA_VOLUME_ID   "cidata"
#define CIDATA_FILE_MAX    (16u << 20)   /* each input file, at most */

/* The seed's inputs: paths of files on the host (malloc'd, owned).  All
 * NULL: no seed.  Otherwise user_data and meta_data are both set. */
struct cidata_files {
	char *user_data;
	char *meta_data;
	char *network_config;          /* or NULL */
};

static inline int cidata_wanted(const struct cidata_files *f)
{
	return f->user_data || f->meta_data || f->network_config;
}

/* Parse `--cloud-init user-data=FILE,meta-data=FILE[,network-config=FILE]`
 * into *f (replacing what was there).  0, or -1 with `e` (EXIT_USAGE): an
 * unknown key, a key given twice, an empty value, user-data or meta-data
 * missing. */
int cidata_from_flags(struct cidata_files *f, const char *spec, struct error *e);

/* The JSON form, "cloud_init": {"user_data": PATH, "meta_data": PATH,
 * "network_config": PATH|null}, or null for none; the same rules.
 * `where` names the object in messages. */
int cidata_from_json(struct cidata_files *f, json_t *v, const char *where, struct error *e);
/* The object, or JSON null when no seed is wanted (a new reference). */
json_t *cidata_to_json(const struct cidata_files *f);

void cidata_copy(struct cidata_files *dst, const struct cidata_files *src);
void cidata_free(struct cidata_files *f);

/* Read the input files (each through path_open, so a confined process
 * reads only beneath its directories; a regular file of at most
 * CIDATA_FILE_MAX bytes) and write the seed to `fd` from offset 0: ISO
 * 9660 with Rock Ridge and Joliet, volume id "cidata", the files named
 * user-data, meta-data and network-config in the root, mode 0444.  0, or
 * -1 with `e`: EXIT_NOINPUT naming a file that cannot be read, EXIT_USAGE
 * for one that is not a regular file, is too large or lies outside a
 * confined process's directories, EXIT_HOST for the writer. */
int cidata_build(const struct cidata_files *f, int fd, struct error *e);

#endif
