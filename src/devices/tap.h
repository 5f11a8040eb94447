/*
 * tap.h - the host side of a virtio-net device: a Linux TAP interface, or
 * any file descriptor that reads and writes whole Ethernet frames.
 *
 * A TAP opened here always has IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: every
 * frame read or written is preceded by a virtio-net header (10 or 12 bytes,
 * TUNSETVNETHDRSZ), which is how offloads (checksum, TSO, UFO) cross the
 * boundary without a copy or a software segmentation in the VMM.
 *
 * An fd handed in by the caller (`--net fd=N`) needs no privileges in the
 * VMM.  It may be a TAP queue (TUNGETIFF answers, and tells whether it has
 * IFF_VNET_HDR) or anything else that carries one frame per read/write: a
 * socketpair(AF_UNIX, SOCK_DGRAM) in tests, a passt/slirp-like helper.  For
 * those there is no vnet header and no offload; `struct tap_info` says which.
 *
 * Threads: these are plain system-call wrappers with no state of their own.
 */
#ifndef SHOAL_DEVICES_TAP_H
#define SHOAL_DEVICES_TAP_H

#include <stdbool.h>

#include "base/error.h"

#define TAP_MAX_QUEUES 16

/* What an fd turned out to be. */
struct tap_info {
	bool is_tap;              /* TUNGETIFF answered */
	bool vnet_hdr;            /* frames carry a virtio-net header */
	bool multi_queue;         /* IFF_MULTI_QUEUE */
	bool offload;             /* TUNSETOFFLOAD takes CSUM and TSO4/6 */
	bool ufo;                 /* ... and UFO */
	char ifname[16];          /* interface name, "" when not a TAP */
};

/* Open queue `index` of TAP `name` (created if absent and we may), with a
 * vnet header; `multi_queue` adds IFF_MULTI_QUEUE.  The fd is non-blocking
 * and close-on-exec.  Returns the fd, or -1 with `e` (EXIT_HOST). */
int tap_open(const char *name, bool multi_queue, struct error *e);

/* Is TAP `name` open elsewhere?  1 when it has carrier (Linux turns a
 * TAP's carrier on when a process attaches a queue and off when the last
 * one closes), 0 when it has none, -1 when that cannot be told (no such
 * interface, or it is down: /sys/class/net/NAME/carrier answers only for
 * an interface that is up). */
int tap_attached(const char *name);

/* Find out what `fd` is (see struct tap_info) and make it non-blocking.
 * Probes offloads on a TAP with a vnet header and leaves them off. */
void tap_probe(int fd, struct tap_info *info);

/* TUNSETVNETHDRSZ; 0 or -errno.  No-op (0) when `info` says no header. */
int tap_set_vnet_hdr_len(int fd, const struct tap_info *info, int len);

/* TUNSETOFFLOAD with TUN_F_* bits; 0 or -errno.  No-op without offload. */
int tap_set_offload(int fd, const struct tap_info *info, unsigned int tun_flags);

/* Attach (true) or detach a queue of a multi-queue TAP; 0 or -errno.
 * No-op (0) for any other fd. */
int tap_set_queue_enabled(int fd, const struct tap_info *info, bool enabled);

#endif
