/*
 * vhost_user_fs.h - a vhost-user-fs device (virtio-fs, virtio id 26) whose
 * file system is served by an outside back end: Debian's virtiofsd
 * (qemu-system-common, /usr/lib/qemu/virtiofsd) or any vhost-user-fs
 * back end listening on a Unix socket.
 *
 * `shoal run --fs tag=TAG,socket=PATH` (or "fs": [{"tag": T, "socket": P}]
 * in the JSON config) gives the guest one such device per entry; the guest
 * mounts it with `mount -t virtiofs TAG DIR`.  The back end owns the file
 * system and all its state, so a VM with one cannot be snapshotted or
 * migrated (refused, naming the device).  docs/devices.md is the user's
 * page; vhost_user_fs.c has the protocol and the invariants.
 */
#ifndef SHOAL_DEVICES_VHOST_USER_FS_H
#define SHOAL_DEVICES_VHOST_USER_FS_H

#include <jansson.h>

#include "base/error.h"

struct device_host;

#define VM_MAX_FS       4      /* --fs devices per VM */
#define VUFS_TAG_MAX    36     /* bytes of the tag in the config space */
#define VIRTIO_ID_FS    26

/* One shared file tree: the mount tag the guest names and the back end's
 * vhost-user socket.  Strings are owned by the struct. */
struct vm_fs {
	char *tag;
	char *socket;
};

/* ---- config_fs.c: the settings, as config_dev.h's readers ---- */

/* "tag=TAG,socket=PATH": both needed.  Fills an empty slot, or leaves it
 * empty on failure. */
int fs_config_from_flags(struct vm_fs *f, const char *spec, struct error *e);
/* {"tag": TAG, "socket": PATH} */
int fs_config_from_json(struct vm_fs *f, json_t *o, const char *where, struct error *e);
json_t *fs_config_to_json(const struct vm_fs *f);
void fs_config_free(struct vm_fs *f);
void fs_config_copy(struct vm_fs *dst, const struct vm_fs *src);

/* ---- vhost_user_fs.c ---- */

/* vhost-user-fs<index> for `fs`: connects to its socket now and
 * negotiates features with the back end (a socket that does not answer as
 * a vhost-user back end is refused here, EXIT_NOINPUT), then plugs a
 * modern-only virtio PCI function.  0, or -1 with `e`. */
int vhost_user_fs_create(const struct device_host *host, const struct vm_fs *fs, int index,
			 struct error *e);

#endif
