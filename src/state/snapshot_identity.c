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
 * A clone of a VM with the VM generation ID device (--vmgenid) also gets
 * a new generation ID, and the guest is notified (devices/vmgenid.c), so
 * a Linux guest reseeds its random number generator; a plain restore
 * keeps the saved ID.
 *
 * Host resources are not identity but are shared the same way: a clone
 * would open the snapshot's TAP (a multi-queue TAP takes every opener's
 * queues, so two VMs would share its frames) and bind its vsock socket
 * path (replacing the other VM's listener, which then unlinks it when it
 * stops).  --tap NAME and --vsock-socket PATH give a restored VM its own,
 * and a TAP or socket that another VM holds is refused, naming it.
 *
 * Invariants: a new CID is never the snapshot's and lies in 3..2^32-2; a
 * new MAC is unicast, and a random one locally administered.
 */
#include "state/snapshot_identity.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/path_beneath.h"
#include "devices/config_dev.h"
#include "devices/tap.h"

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
	cfg->vmgenid_new = ov->clone && cfg->vmgenid;
	if (ov->cid)
		cfg->vsock_cid = ov->cid;
	else if (ov->clone && cfg->vsock_cid && random_cid(cfg->vsock_cid, &cfg->vsock_cid, e))
		return -1;
	return 0;
}

/* Does something listen on the Unix socket `path`?  A connect that is
 * accepted (or queued) says so; a stale socket file refuses it. */
static bool socket_listened(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	live = path_connect_unix(fd, path) == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return live;
}

static void set_str(char **dst, const char *v)
{
	char *n = strdup(v);

	if (n) {
		free(*dst);
		*dst = n;
	}
}

int snapshot_own_host_resources(const char *dir, struct vm_config *cfg,
				const struct snapshot_overrides *ov, struct error *e)
{
	const char *who = ov->clone ? "clone" : "VM";

	if (ov->ntaps > cfg->nnets)
		return error_set(e, EXIT_USAGE, "--tap: %d given, but the snapshot's VM has %d network "
				 "card%s", ov->ntaps, cfg->nnets, cfg->nnets == 1 ? "" : "s");
	if (ov->vsock_socket && !cfg->vsock_cid)
		return error_set(e, EXIT_USAGE, "--vsock-socket %s: the snapshot's VM has no vsock "
				 "device", ov->vsock_socket);
	for (int i = 0; i < ov->ntaps; i++) {
		if (!cfg->nets[i].tap)
			return error_set(e, EXIT_USAGE, "--tap %s: the snapshot's card %d has no TAP",
					 ov->taps[i], i);
		set_str(&cfg->nets[i].tap, ov->taps[i]);
	}
	if (ov->vsock_socket)
		set_str(&cfg->vsock_socket, ov->vsock_socket);
	for (int i = 0; i < cfg->nnets; i++) {
		if (!cfg->nets[i].tap || tap_attached(cfg->nets[i].tap) != 1)
			continue;
		if (i < ov->ntaps)
			return error_set(e, EXIT_USAGE, "%s: --tap %s is in use by another VM (a queue of "
					 "it is open); give this %s a free one", dir, cfg->nets[i].tap, who);
		return error_set(e, EXIT_USAGE, "%s: the snapshot's TAP %s (card %d) is in use by another "
				 "VM; give this %s its own with --tap NAME", dir, cfg->nets[i].tap, i, who);
	}
	if (cfg->vsock_cid && cfg->vsock_socket && socket_listened(cfg->vsock_socket)) {
		if (ov->vsock_socket)
			return error_set(e, EXIT_USAGE, "%s: --vsock-socket %s is in use by another VM "
					 "(something listens there); give this %s a free path", dir,
					 cfg->vsock_socket, who);
		return error_set(e, EXIT_USAGE, "%s: the snapshot's vsock socket %s is in use by another "
				 "VM; give this %s its own with --vsock-socket PATH", dir,
				 cfg->vsock_socket, who);
	}
	return 0;
}
