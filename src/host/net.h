/*
 * net.h - networks that shoald manages (docs/networks.md).
 *
 * A network is a Linux bridge, "sb-NAME", with the first address of its
 * subnet on the host's side; Debian's dnsmasq, started and supervised by
 * the daemon, answers DHCP and DNS on it.  A NAT network is masqueraded to
 * whatever interface the host routes out of (nftables), with IP
 * forwarding on; an isolated one has firewall rules that keep its VMs off
 * the host (DHCP and DNS to the bridge's address excepted) and off any
 * other network: its VMs reach each other only.
 *
 * A VM's card names a network ({"network": "NAME"} in "nets"); at each
 * start the daemon makes the card's TAP (net_tap_name: derived from the
 * VM's name and the card's index, 15 characters at most), attaches it to
 * the bridge, and the VMM opens it by name as it opens a TAP a spec names
 * (before its jail); the TAP is removed when the VMM has exited.
 *
 * The pure parsers (names, subnets, TAP names) are here for the unit
 * tests; what a client may send is checked by them before anything runs
 * with it: a network name and a subnet end up on `ip`'s, `nft`'s and
 * dnsmasq's command lines, so both are checked character by character.
 */
#ifndef SHOAL_HOST_NET_H
#define SHOAL_HOST_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host/host.h"

#define NET_NAME_MAX 12        /* "sb-" + NAME is a 15-character interface name */

/* An IPv4 subnet, host byte order: addr is the network address. */
struct net_subnet {
	uint32_t addr;
	int prefix;            /* 16 to 28 */
};

/* Is `name` a network name: 1 to NET_NAME_MAX of [a-z0-9_-], starting with
 * a letter or a digit? */
bool net_name_valid(const char *name);
/* Parse "A.B.C.D/P": a private (RFC 1918) IPv4 network, P from 16 to 28,
 * no host bits set.  0, or -1 with the reason in `why`. */
int net_subnet_parse(const char *s, struct net_subnet *sn, char *why, size_t size);
/* "A.B.C.D/P" of sn; the n-th address of it (1: the host's) as text. */
void net_subnet_format(const struct net_subnet *sn, char *out, size_t size);
void net_subnet_addr(const struct net_subnet *sn, uint32_t n, char *out, size_t size);
bool net_subnet_overlap(const struct net_subnet *a, const struct net_subnet *b);
/* The TAP of card `idx` of VM `vm`: "t" + up to 6 characters of the name
 * + "-" + 6 hex digits of a hash of the whole name + the card's index
 * (0-7): unique per VM and card but for a 24-bit hash collision between
 * two names with the same first six characters (the second VM's start is
 * refused, 409, while the first runs). */
void net_tap_name(const char *vm, int idx, char out[16]);

/* The cards of a stored spec that name a network: names[i] is the
 * network of card i ("" for a card on a TAP of its own).  Count of cards. */
int net_spec_networks(const char *spec_json, char (*names)[NET_NAME_MAX + 1], int max);

/* ---- the daemon's side (net.c) ---- */
/* Load the networks of the database and bring each up (bridge, firewall,
 * dnsmasq); a failure is logged, not fatal.  Starts the dnsmasq watcher. */
int host_nets_open(struct host *h, struct api_err *e);
/* Stop every dnsmasq and the watcher (bridges stay: VMs may run on). */
void host_nets_close(struct host *h);
/* Does network `name` exist?  (spec.c, at create; true without a daemon.) */
bool host_net_known(const char *name);
/* Make the TAPs of `vm`'s cards that name a network, attached to their
 * bridges (supervisor.c, at each start); remove them (after the VMM exits). */
int host_net_taps_up(struct host *h, const char *vm, const char *spec, struct api_err *e);
void host_net_taps_down(struct host *h, const char *vm, const char *spec);

/* The API's handlers (api_route.c). */
struct api_call;
int api_net_list(struct api_call *c);
int api_net_create(struct api_call *c);
int api_net_show(struct api_call *c);
int api_net_delete(struct api_call *c);

#endif
