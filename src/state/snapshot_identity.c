/*
 * snapshot_identity.c - a restored VM's new identity (see the header).
 *
 * Two VMs restored from one snapshot are the same machine: same MAC
 * addresses, same vsock CID.  A clone (`shoal run --restore DIR --clone`)
 * gets new ones unless given (--mac, --cid), and a plain restore gets them
 * only when given.  They are set in the settings the VM is built from;
 * the devices then keep them over the snapshot's saved state
 * (virtio_net.c: vm_net.new_mac; virtio_vsock.c takes its configured CID
 * and sends TRANSPORT_RESET after every restore, at which a running Linux
 * driver reads the CID again).  A running guest driver keeps the MAC it
 * read at probe: it sees the new one in config space (and at its next
 * probe), not in its interface until it is told (docs/snapshots.md).
 *
 * Invariants: a new CID is never the snapshot's and lies in 3..2^32-2; a
 * new MAC is unicast, and a random one locally administered.
 */
#include "state/snapshot_identity.h"

#include <stdint.h>
#include <sys/random.h>

#include "base/exitcode.h"
#include "devices/config_dev.h"

#define VSOCK_CID_MIN 3u
#define VSOCK_CID_MAX 0xfffffffeu

static int random_cid(uint32_t old, uint32_t *out, struct error *e)
{
	uint32_t r;

	do {
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			return error_set(e, EXIT_HOST, "vsock: no random bytes for a CID");
		r = VSOCK_CID_MIN + r % (VSOCK_CID_MAX - VSOCK_CID_MIN + 1);
	} while (r == old);
	*out = r;
	return 0;
}

int snapshot_new_identity(struct vm_config *cfg, const struct snapshot_overrides *ov,
			  struct error *e)
{
	char what[32];

	if (ov->nmacs > cfg->nnets)
		return error_set(e, EXIT_USAGE, "--mac: %d given, but the snapshot's VM has %d network "
				 "card%s", ov->nmacs, cfg->nnets, cfg->nnets == 1 ? "" : "s");
	if (ov->cid && !cfg->vsock_cid)
		return error_set(e, EXIT_USAGE, "--cid %u: the snapshot's VM has no vsock device",
				 ov->cid);
	for (int i = 0; i < cfg->nnets; i++) {
		snprintf(what, sizeof(what), "--mac (card %d)", i);
		if (i < ov->nmacs ? net_config_new_mac(&cfg->nets[i], ov->macs[i], what, e) :
		    ov->clone ? net_config_new_mac(&cfg->nets[i], NULL, what, e) : 0)
			return -1;
	}
	if (ov->cid)
		cfg->vsock_cid = ov->cid;
	else if (ov->clone && cfg->vsock_cid && random_cid(cfg->vsock_cid, &cfg->vsock_cid, e))
		return -1;
	return 0;
}
