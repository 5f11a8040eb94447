/*
 * tap.c - TAP helpers for virtio-net; see tap.h.
 *
 * Opening a TAP by name needs CAP_NET_ADMIN only when the interface does
 * not exist yet or belongs to someone else; an interface made beforehand
 * with `ip tuntap add NAME mode tap user U [multi_queue]` opens without
 * privileges.  Passing an fd (`--net fd=N`) needs none at all.
 *
 * Offloads: TUNSETOFFLOAD names what the TAP may hand *us* (frames with a
 * partial checksum, TSO/UFO super-frames); the kernel always accepts such
 * frames from us when the header says so.  So the probe here decides the
 * GUEST_* features, and the vnet header alone the HOST_* ones.
 */
#include "devices/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "base/exitcode.h"

int tap_open(const char *name, bool multi_queue, struct error *e)
{
	struct ifreq ifr;
	int fd;

	if (!name || !*name || strlen(name) >= IFNAMSIZ)
		return error_set(e, EXIT_USAGE, "TAP name '%s' is empty or too long", name ? name : "");
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return error_set(e, EXIT_HOST, "cannot open /dev/net/tun: %s", strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int err = errno;

		close(fd);
		return error_set(e, EXIT_HOST, "TAP '%s': TUNSETIFF%s: %s", name,
				 multi_queue ? " (multi_queue)" : "", strerror(err));
	}
	return fd;
}

int tap_attached(const char *name)
{
	char path[64], c = 0;
	int fd;
	ssize_t n;

	if (!name || !*name || strlen(name) >= IFNAMSIZ || strchr(name, '/'))
		return -1;
	snprintf(path, sizeof(path), "/sys/class/net/%s/carrier", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, &c, 1);
	close(fd);
	return n == 1 && (c == '0' || c == '1') ? c == '1' : -1;
}

/* Does the TAP accept TUNSETOFFLOAD `flags`?  Leaves offloads off. */
static bool tap_offload_ok(int fd, unsigned int flags)
{
	bool ok = ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) == 0;

	ioctl(fd, TUNSETOFFLOAD, 0ul);
	return ok;
}

void tap_probe(int fd, struct tap_info *info)
{
	struct ifreq ifr;
	int fl = fcntl(fd, F_GETFL);

	memset(info, 0, sizeof(*info));
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return;                       /* a datagram socket or similar */
	info->is_tap = true;
	info->vnet_hdr = ifr.ifr_flags & IFF_VNET_HDR;
	info->multi_queue = ifr.ifr_flags & IFF_MULTI_QUEUE;
	snprintf(info->ifname, sizeof(info->ifname), "%.15s", ifr.ifr_name);
	if (!info->vnet_hdr)
		return;
	info->offload = tap_offload_ok(fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
	info->ufo = info->offload && tap_offload_ok(fd, TUN_F_CSUM | TUN_F_UFO);
}

int tap_set_vnet_hdr_len(int fd, const struct tap_info *info, int len)
{
	if (!info->vnet_hdr)
		return 0;
	return ioctl(fd, TUNSETVNETHDRSZ, &len) < 0 ? -errno : 0;
}

int tap_set_offload(int fd, const struct tap_info *info, unsigned int tun_flags)
{
	if (!info->offload)
		return 0;
	return ioctl(fd, TUNSETOFFLOAD, (unsigned long)tun_flags) < 0 ? -errno : 0;
}

int tap_set_queue_enabled(int fd, const struct tap_info *info, bool enabled)
{
	struct ifreq ifr;

	if (!info->multi_queue)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	/* EINVAL: already in that state */
	if (ioctl(fd, TUNSETQUEUE, &ifr) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}
