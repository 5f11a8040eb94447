/*
 * snapshot_identity.h - a restored VM's new identity (a clone's): new
 * MAC addresses for its network cards and a new vsock CID
 * (docs/snapshots.md, "A clone's identity").
 */
#ifndef SHOAL_STATE_SNAPSHOT_IDENTITY_H
#define SHOAL_STATE_SNAPSHOT_IDENTITY_H

#include "base/error.h"
#include "state/snapshot.h"
#include "vmm/config.h"

/* Change `cfg` (the snapshot's settings, before the VM is built) as `ov`
 * asks: card i gets ov->macs[i], or with ov->clone a random locally
 * administered MAC; the vsock device gets ov->cid, or with ov->clone a
 * random CID other than the snapshot's.  A MAC or CID for a device the
 * snapshot does not have is refused (EXIT_USAGE).  0 or -1 with `e`. */
int snapshot_new_identity(struct vm_config *cfg, const struct snapshot_overrides *ov,
			  struct error *e);

/* Give `cfg` the host resources `ov` names (ov->taps[i] for card i,
 * ov->vsock_socket), then refuse (EXIT_USAGE) a TAP or vsock socket that
 * another running VM holds: a TAP with carrier (some process has a queue
 * of it open) or a Unix socket path where something listens.  Two VMs
 * would otherwise share the TAP's frames, or the second would take the
 * socket path over from the first.  `dir` names the snapshot in the
 * message.  0 or -1 with `e`. */
int snapshot_own_host_resources(const char *dir, struct vm_config *cfg,
				const struct snapshot_overrides *ov, struct error *e);

#endif
