/*
 * pv_shared.c - the pv-shared device: tells a guest which of its frames
 * still share its template's page (issue 13 item 4, vision mechanism 12;
 * the contract is abi/pv_shared.h, the user's view docs/memory.md).
 *
 * A clone maps its template's memory file MAP_PRIVATE: a frame it never
 * wrote is the file's page, one copy for all the clones; a frame it wrote
 * is an anonymous copy of its own.  Ballooning the first frees nothing on
 * the host (MADV_DONTNEED drops a mapping of a page cache page that stays
 * cached for the others), ballooning the second frees 4 KiB.  The guest
 * asks for a range and gets one bit per frame.
 *
 * How the VMM knows: /proc/self/pagemap, read by the backend (the VMM's
 * src/vmm/mem_shared.c) for the VMM's own mapping of guest RAM.  It is
 * exact and costs 8 bytes of pread per frame asked, only when asked: an
 * entry says whether the page is present, swapped, and a file page
 * (PM_FILE) or anonymous, and a private mapping's page is anonymous
 * exactly when it was copied on a write (pv_shared_entry_shared).  KVM's
 * writes go through the same page tables (its EPT faults are resolved
 * through the VMM's mapping), so a guest write shows there too.  The
 * alternatives are worse: mincore says resident, not private; tracking
 * first writes ourselves needs KVM's dirty log on from the restore (every
 * page write-protected, a fault per first write) for an answer the kernel
 * already keeps; smaps gives only totals.  A VM that is not a clone has no
 * backend and shares nothing.
 *
 * The guest is hostile.  A request block that is not 8-byte aligned RAM
 * is ignored (no status can be written) and counted; frames or a bitmap
 * outside RAM, a misaligned gpa, npages 0 or over PV_SHARED_MAX_PAGES get
 * a status and nothing else.  The device never allocates on a request:
 * the bitmap is built in a fixed 4 KiB buffer of the device, the entries
 * in a 512-entry array on the stack, and written to the guest once built.
 * Nothing the guest sends breaks the device or reaches the host beyond a
 * bounded pread of the VMM's own pagemap.
 *
 * No state of its own (version 1 saves only the common header): every
 * answer is computed when asked.
 */
#include "devices/pv_shared.h"

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "abi/pv_shared.h"
#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"
#include "devices/device.h"

#define PVS_CHUNK 512            /* pagemap entries read at once */

struct pvs {
	struct pv_shared_backend be;
	bool have_be;
	uint8_t bits[PV_SHARED_MAX_PAGES / 8];
	uint64_t requests, bad_requests, frames_asked, frames_shared;
};

uint64_t pv_shared_bits(const uint64_t *ent, uint64_t n, uint8_t *bits, uint64_t first)
{
	uint64_t shared = 0;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t b = first + i;
		uint8_t m = (uint8_t)(1u << (b % 8));

		if (pv_shared_entry_shared(ent[i])) {
			bits[b / 8] |= m;
			shared++;
		} else {
			bits[b / 8] &= (uint8_t)~m;
		}
	}
	return shared;
}

/* Answer a QUERY into p->bits; a status. */
static int pvs_query(struct device *d, const struct pv_shared_req *q, uint64_t *shared)
{
	struct pvs *p = d->priv;
	uint64_t ent[PVS_CHUNK], nbytes;
	const uint8_t *hva;

	if (q->gpa & 0xfff || !q->npages || q->npages > PV_SHARED_MAX_PAGES)
		return PV_SHARED_EINVAL;
	nbytes = (q->npages + 7) / 8;
	hva = guest_mem_ptr(d->host->mem, q->gpa, q->npages * 4096);
	if (!hva || !guest_mem_ptr(d->host->mem, q->bitmap, nbytes))
		return PV_SHARED_ERANGE;
	memset(p->bits, 0, nbytes);
	*shared = 0;
	for (uint64_t i = 0; p->have_be && i < q->npages; i += PVS_CHUNK) {   /* else nothing shared */
		uint64_t n = q->npages - i < PVS_CHUNK ? q->npages - i : PVS_CHUNK;

		if (p->be.pagemap(p->be.opaque, hva + i * 4096, n, ent) < 0) {
			log_warn("pv-shared: cannot read the page tables: %s", strerror(errno));
			return PV_SHARED_EHOST;
		}
		*shared += pv_shared_bits(ent, n, p->bits, i);
	}
	return guest_mem_write(d->host->mem, q->bitmap, p->bits, nbytes) ? PV_SHARED_ERANGE
									    : PV_SHARED_OK;
}

static void pvs_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct pvs *p = d->priv;
	struct pv_shared_req q;
	uint32_t gpa = 0, flags, version = PV_SHARED_VERSION;
	uint64_t shared = 0;
	int32_t status;

	(void)port;
	if (size != 4) {
		p->bad_requests++;
		return;
	}
	memcpy(&gpa, data, 4);
	if (gpa & 7 || guest_mem_read(d->host->mem, gpa, &q, sizeof(q))) {
		p->bad_requests++;      /* no status can be written: ignored */
		log_debug("pv-shared: request at 0x%x ignored (not aligned, or not RAM)", gpa);
		return;
	}
	p->requests++;
	status = q.op == PV_SHARED_OP_QUERY ? pvs_query(d, &q, &shared) : PV_SHARED_EINVAL;
	if (status) {
		p->bad_requests++;
		shared = 0;
	} else {
		p->frames_asked += q.npages;
		p->frames_shared += shared;
	}
	flags = p->have_be ? PV_SHARED_F_CLONE : 0;
	log_debug("pv-shared: op %u (0x%llx, %llu frames): status %d, %llu shared", q.op,
		  (unsigned long long)q.gpa, (unsigned long long)q.npages, status,
		  (unsigned long long)shared);
	guest_mem_write(d->host->mem, gpa + offsetof(struct pv_shared_req, shared), &shared, 8);
	guest_mem_write(d->host->mem, gpa + offsetof(struct pv_shared_req, flags), &flags, 4);
	guest_mem_write(d->host->mem, gpa + offsetof(struct pv_shared_req, version), &version, 4);
	guest_mem_write(d->host->mem, gpa + offsetof(struct pv_shared_req, status), &status, 4);
}

static void pvs_io_read(struct device *d, uint16_t port, void *data, int size)
{
	uint32_t magic = PV_SHARED_MAGIC;

	(void)d;
	(void)port;
	memset(data, 0, (size_t)size);
	memcpy(data, &magic, size < 4 ? (size_t)size : 4);
}

static void pvs_metrics(struct device *d, json_t *dev, json_t *root)
{
	struct pvs *p = d->priv;

	(void)root;
	json_object_set_new(dev, "clone", json_boolean(p->have_be));
	json_object_set_new(dev, "requests", json_integer((json_int_t)p->requests));
	json_object_set_new(dev, "bad_requests", json_integer((json_int_t)p->bad_requests));
	json_object_set_new(dev, "frames_asked", json_integer((json_int_t)p->frames_asked));
	json_object_set_new(dev, "frames_shared", json_integer((json_int_t)p->frames_shared));
}

static void pvs_destroy(struct device *d)
{
	struct pvs *p = d->priv;

	if (p->have_be && p->be.release)
		p->be.release(p->be.opaque);
	free(p);
}

static const struct device_ops pv_shared_ops = {
	.type = "pv-shared",
	.state_version = 1,              /* only the common header: nothing of its own */
	.io_read = pvs_io_read,
	.io_write = pvs_io_write,
	.metrics = pvs_metrics,
	.destroy = pvs_destroy,
};

int pv_shared_create(const struct device_host *host, const struct pv_shared_backend *be,
		     struct device **out, struct error *e)
{
	struct pvs *p = calloc(1, sizeof(*p));
	struct device *d;

	if (!p) {
		if (be && be->release)
			be->release(be->opaque);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (be) {
		p->be = *be;
		p->have_be = true;
	}
	d = device_new(host, &pv_shared_ops, "pv-shared", p);
	if (!d) {
		pvs_destroy(&(struct device){ .priv = p });
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(host, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, PV_SHARED_PORT, 4, d))
		return error_set(e, EXIT_HOST, "pv-shared: cannot claim ports 0x%x-0x%x",
				 PV_SHARED_PORT, PV_SHARED_PORT + 3);
	if (out)
		*out = d;
	return 0;
}
