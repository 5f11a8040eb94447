/*
 * vmgenid.c - the Virtual Machine Generation ID device: how a guest learns
 * that it may be a copy of itself.
 *
 * Every VM restored from one snapshot resumes the same machine, down to the
 * state of its kernel's random number generator, so two clones would hand
 * out the same "random" bytes (keys, nonces, UUIDs) until something reseeds
 * them.  Microsoft's "Virtual Machine Generation ID" specification gives the
 * guest a 128-bit ID that changes whenever the VM may have been duplicated;
 * Linux's vmgenid driver (drivers/virt/vmgenid.c) reads it at probe and,
 * told of a change, calls add_vmfork_randomness(), which mixes the new ID
 * into the pool and reseeds the RNG at once ("crng reseeded due to virtual
 * machine fork").  Windows uses the same device.
 *
 * What the guest sees (boot/acpi.h writes it; this file asks for it):
 *   - \_SB.VGEN, _CID "VM_GEN_COUNTER", whose ADDR is a package of two
 *     DWORDs, the low and high halves of the ID's guest-physical address;
 *   - the 16 bytes there, in the last page of the ACPI area below 1 MiB,
 *     which the e820 map marks reserved, so the guest never uses it as RAM
 *     and maps it only to read the ID;
 *   - \_SB.VGED, an ACPI Generic Event Device on its own interrupt
 *     (ACPI_VMGENID_GSI, edge, active high), whose _EVT does
 *     Notify(\_SB.VGEN, 0x80): the device pulses that line after the ID
 *     changed on a running guest.
 *
 * When the ID changes.  A fresh VM gets a random one.  A snapshot saves it
 * with its address (state version 1: u64 address, 16 bytes of ID); a plain
 * restore puts the same ID back, because it resumes the one machine that
 * was saved; a clone (`shoal run --restore DIR --clone`, state/
 * snapshot_identity.c sets vm_config.vmgenid_new) writes a new random ID
 * over it and notifies the guest.  The notification is sent from the event
 * loop once the VM runs, never during the restore itself: the in-kernel
 * IOAPIC and local APICs are restored from the snapshot as well, and would
 * forget an edge raised before them.  A guest whose driver has not bound
 * yet loses nothing: the driver reads the ID when it binds.
 *
 * Invariants: the ID always lies in [GUEST_EBDA_START, 1 MiB), 8-byte
 * aligned, never in guest RAM; a saved address outside it is refused.  The
 * guest cannot write to the device (it has no registers) and the ID is
 * rewritten only on create and restore; a guest that scribbles over its own
 * copy only confuses itself, and the next clone's restore overwrites it.
 * A random ID comes from getrandom(); a host without one fails the create
 * or the restore rather than reuse an ID.
 */
#include "devices/vmgenid.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/layout.h"
#include "base/log.h"
#include "devices/device.h"

#define VMGENID_STATE_VERSION 1

struct vmgenid {
	uint64_t gpa;                     /* where the guest reads the ID */
	uint8_t id[VMGENID_SIZE];
	bool new_on_restore;              /* a clone: a new ID over the saved one */
	unsigned gsi;                     /* the GED's interrupt */
	int notify_fd;                    /* eventfd: a notification owed, or -1 */
	struct eventloop *loop;           /* watching notify_fd, or NULL */
};

void vmgenid_format(const uint8_t id[VMGENID_SIZE], char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x", id[3], id[2], id[1], id[0], id[5], id[4],
		 id[7], id[6], id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
}

/* A random ID, shaped as a version 4 GUID; 0 or -1. */
static int vmgenid_random(uint8_t id[VMGENID_SIZE])
{
	if (getrandom(id, VMGENID_SIZE, 0) != VMGENID_SIZE)
		return -1;
	id[7] = (uint8_t)((id[7] & 0x0f) | 0x40);   /* data3's high nibble: version 4 */
	id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);   /* variant 10 */
	return 0;
}

/* Put the ID where the guest reads it; 0 or -1. */
static int vmgenid_store(struct device *d)
{
	struct vmgenid *v = d->priv;

	if (guest_mem_write(d->host->mem, v->gpa, v->id, VMGENID_SIZE))
		return -1;
	guest_mem_dirty_gpa(d->host->mem, v->gpa, VMGENID_SIZE);
	return 0;
}

/* The edge that runs the GED's _EVT, and so Notify(VGEN, 0x80). */
static void vmgenid_pulse(struct device *d)
{
	struct vmgenid *v = d->priv;

	device_host_irq_line(d->host, v->gsi, 1);
	device_host_irq_line(d->host, v->gsi, 0);
}

/* Event loop: the VM runs, its interrupt controllers are restored; tell
 * the guest.  Once: the fd leaves the loop. */
static int vmgenid_on_notify(int fd, uint32_t events, void *opaque)
{
	struct device *d = opaque;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0)
		return -1;
	pthread_mutex_lock(&d->lock);
	vmgenid_pulse(d);
	pthread_mutex_unlock(&d->lock);
	return -1;
}

/* Owe the guest a notification: on the event loop when there is one (so
 * after the restore is complete), at once otherwise (unit tests). */
static int vmgenid_notify_later(struct device *d)
{
	struct vmgenid *v = d->priv;
	uint64_t one = 1;

	if (!d->host->loop) {
		vmgenid_pulse(d);
		return 0;
	}
	if (v->notify_fd < 0) {
		v->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->notify_fd < 0)
			return -1;
	}
	if (write(v->notify_fd, &one, sizeof(one)) != sizeof(one))
		return -1;
	if (!v->loop) {
		if (eventloop_add(d->host->loop, v->notify_fd, EPOLLIN, vmgenid_on_notify, d) < 0)
			return -1;
		v->loop = d->host->loop;
	}
	return 0;
}

static void vmgenid_save(struct device *d, struct state_writer *w)
{
	struct vmgenid *v = d->priv;

	state_put_u64(w, v->gpa);
	state_put_bytes(w, v->id, VMGENID_SIZE);
}

static int vmgenid_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct vmgenid *v = d->priv;
	uint8_t id[VMGENID_SIZE];
	uint64_t gpa;

	gpa = state_get_u64(r);
	state_get_bytes(r, id, VMGENID_SIZE);
	if (r->error)
		return -1;
	if (gpa % 8 || gpa < GUEST_EBDA_START || gpa > GUEST_HIGH_START - VMGENID_SIZE) {
		log_error("%s: saved address 0x%llx is not 8-byte aligned in the reserved "
			  "area below 1 MiB",
			  d->name, (unsigned long long)gpa);
		return -1;
	}
	v->gpa = gpa;
	memcpy(v->id, id, VMGENID_SIZE);
	if (v->new_on_restore && vmgenid_random(v->id)) {
		log_error("%s: no random bytes for a new generation ID", d->name);
		return -1;
	}
	if (vmgenid_store(d)) {
		log_error("%s: no guest memory at 0x%llx", d->name, (unsigned long long)gpa);
		return -1;
	}
	if (v->new_on_restore && vmgenid_notify_later(d)) {
		log_error("%s: cannot queue the guest's notification", d->name);
		return -1;
	}
	return 0;
}

static void vmgenid_metrics(struct device *d, json_t *dev, json_t *root)
{
	struct vmgenid *v = d->priv;
	char s[37];

	(void)root;
	vmgenid_format(v->id, s);
	json_object_set_new(dev, "generation_id", json_string(s));
	json_object_set_new(dev, "address", json_integer((json_int_t)v->gpa));
}

static void vmgenid_destroy(struct device *d)
{
	struct vmgenid *v = d->priv;

	if (v->loop)
		eventloop_del(v->loop, v->notify_fd);
	if (v->notify_fd >= 0)
		close(v->notify_fd);
	free(v);
}

static const struct device_ops vmgenid_ops = {
	.type = "vmgenid",
	.state_version = VMGENID_STATE_VERSION,
	.save = vmgenid_save,
	.restore = vmgenid_restore,
	.metrics = vmgenid_metrics,
	.destroy = vmgenid_destroy,
};

void vmgenid_get(struct device *d, uint8_t id[VMGENID_SIZE], uint64_t *gpa)
{
	struct vmgenid *v = d->priv;

	pthread_mutex_lock(&d->lock);
	memcpy(id, v->id, VMGENID_SIZE);
	if (gpa)
		*gpa = v->gpa;
	pthread_mutex_unlock(&d->lock);
}

int vmgenid_create(const struct device_host *host, uint64_t gpa, unsigned gsi, bool fresh,
		   bool new_on_restore, struct error *e)
{
	struct vmgenid *v = calloc(1, sizeof(*v));
	struct device *d;

	if (!v)
		return error_set(e, EXIT_HOST, "out of memory");
	*v = (struct vmgenid){ .gpa = gpa, .new_on_restore = new_on_restore,
			       .gsi = gsi, .notify_fd = -1 };
	if (vmgenid_random(v->id)) {
		free(v);
		return error_set(e, EXIT_HOST, "VM generation ID: no random bytes from getrandom");
	}
	d = device_new(host, &vmgenid_ops, "vmgenid0", v);
	if (!d) {
		free(v);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	/* A fresh VM reads its new ID; a restored one (the SSDT was in its
	 * memory) gets the saved ID, or a clone's, when its state is restored. */
	if (fresh && vmgenid_store(d)) {
		device_free(d);
		return error_set(e, EXIT_HOST, "VM generation ID: no guest memory at 0x%llx",
				 (unsigned long long)gpa);
	}
	if (device_host_attach(host, d))
		return error_set(e, EXIT_HOST, "cannot attach the VM generation ID device");
	return 0;
}
