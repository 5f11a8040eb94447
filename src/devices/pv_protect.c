/*
 * pv_protect.c - guest-set page protection with a fault handler in the
 * guest (issue 13 item 7; the contract is abi/pv_protect.h, the user's
 * view docs/memory.md).
 *
 * A guest program registers a shared page and an interrupt (an IOAPIC
 * pin), then asks for ranges of its RAM to be made read-only or
 * inaccessible.  The backend (src/vmm/mem_protect.c) enforces a range with
 * KVM memory slots: a read-only slot makes a write exit as MMIO, a hole
 * makes every access exit as MMIO.  Such an exit at a RAM address comes
 * here (pv_protect_access): the device writes the fault record of that
 * vCPU into the shared page, pulses the pin and waits for the handler's
 * ANSWER, then does the access on RAM (allow), or drops the write / hands
 * the read the handler's value (refuse).  Only the faulting vCPU waits;
 * it counts as parked meanwhile (a pause or a slot change of another vCPU
 * does not wait for it), and it gives up after the registered timeout
 * (refused, logged) or when the VM stops.
 *
 * Invariants.
 *   - The table is sorted, its ranges are 4 KiB aligned, non-empty,
 *     inside one RAM region each, disjoint, at most PV_PROTECT_MAX_RANGES,
 *     and none holds the shared page; KVM's slots match it whenever no
 *     request is running (a request changes both while every other vCPU
 *     is held out of the guest, and puts the old slots back if KVM
 *     refuses the new ones).
 *   - A vCPU has at most one fault in flight (it waits for it), so record
 *     [vcpu] of the shared page is written by that fault only.
 *   - Requests and faults are serialized by the device lock; the lock is
 *     never held while this vCPU waits for the others (hold), so a vCPU
 *     blocked on it cannot keep a hold from completing.
 *
 * What the guest may not do.  Every address is checked against RAM
 * (guest_mem_ptr); a request block in protected memory is ignored (its
 * status could not be written without going around the protection); bad
 * requests get a status code and change nothing; a guest that never
 * answers costs one vCPU the timeout per fault.  What the guest protects
 * is its own business: protecting its page tables or code it runs can
 * stop the VM (KVM cannot emulate through a hole), never the host.
 * Device emulation (virtio DMA) writes RAM through the VMM's mapping and
 * is not subject to the protection.
 */
#include "devices/pv_protect.h"

#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "abi/pv_protect.h"
#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/timespec.h"
#include "base/log.h"
#include "devices/device.h"

#define PVP_STATE_VERSION 1
#define PVP_PAGE 4096ull

_Static_assert(sizeof(struct pv_protect_record) == 32, "record layout");
_Static_assert(sizeof(struct pv_protect_page) <= 4096, "shared page layout");
_Static_assert(sizeof(struct pv_protect_req) == 32, "request layout");

struct pvp_wait {                 /* the fault a vCPU waits on */
	uint64_t seq;                 /* 0: none */
	bool answered;
	uint32_t verdict;
	uint64_t value;
};

struct pvp {
	struct pv_protect_backend be;
	pthread_cond_t cond;          /* with d->lock: answers */
	bool registered;
	uint64_t page_gpa;
	uint32_t timeout_ms;
	uint64_t seq;
	int n;
	struct pv_protect_range r[PV_PROTECT_MAX_RANGES];
	struct pvp_wait w[PV_PROTECT_MAX_RECORDS];
	int inflight;
	uint64_t faults, allowed, refused, timeouts, requests, bad_requests, passed;
};

static struct pv_protect_page *pvp_page(struct device *d)
{
	struct pvp *p = d->priv;

	return p->registered ? guest_mem_ptr(d->host->mem, p->page_gpa, PVP_PAGE) : NULL;
}

/* The range holding any byte of [gpa, gpa+len), or NULL. */
static struct pv_protect_range *pvp_find(struct pvp *p, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < p->n; i++)
		if (gpa < p->r[i].gpa + p->r[i].len && p->r[i].gpa < gpa + len)
			return &p->r[i];
	return NULL;
}

/* ---- requests ---- */

/* Change the table to new[0..n) and the slots with it (see the essay):
 * called with d->lock held by the bus, returns with it held. */
static int pvp_commit(struct device *d, const struct pv_protect_range *nr, int n)
{
	struct pvp *p = d->priv;
	char why[160] = "";

	if (p->be.set(p->be.opaque, nr, n, why, sizeof(why))) {
		log_warn("pv-protect: cannot change the memory slots: %s", why);
		return PV_PROTECT_EHOST;
	}
	if (n)
		memcpy(p->r, nr, sizeof(*nr) * (size_t)n);
	p->n = n;
	return PV_PROTECT_OK;
}

static int pvp_protect(struct device *d, uint64_t gpa, uint64_t len, uint64_t mode)
{
	struct pvp *p = d->priv;
	struct pv_protect_range nr[PV_PROTECT_MAX_RANGES];
	int i, k = 0;

	if (!p->registered)
		return PV_PROTECT_ENOHANDLER;
	if ((gpa | len) & (PVP_PAGE - 1) || !len ||
	    (mode != PV_PROTECT_READONLY && mode != PV_PROTECT_NOACCESS))
		return PV_PROTECT_EINVAL;
	if (gpa + len < gpa || !guest_mem_ptr(d->host->mem, gpa, len))
		return PV_PROTECT_ERANGE;
	if (p->page_gpa < gpa + len && gpa < p->page_gpa + PVP_PAGE)
		return PV_PROTECT_ESHARED;
	if (pvp_find(p, gpa, len))
		return PV_PROTECT_EOVERLAP;
	if (p->n == PV_PROTECT_MAX_RANGES)
		return PV_PROTECT_ENOSPC;
	if (atomic_load(&d->host->mem->dirty))
		return PV_PROTECT_EBUSY;    /* migration tracks memory (slots with the log) */
	for (i = 0; i < p->n && p->r[i].gpa < gpa; i++)
		nr[k++] = p->r[i];
	nr[k++] = (struct pv_protect_range){ gpa, len, (int)mode };
	for (; i < p->n; i++)
		nr[k++] = p->r[i];
	return pvp_commit(d, nr, k);
}

static int pvp_unprotect(struct device *d, uint64_t gpa, uint64_t len)
{
	struct pvp *p = d->priv;
	struct pv_protect_range nr[PV_PROTECT_MAX_RANGES];
	int k = 0, found = 0;

	for (int i = 0; i < p->n; i++) {
		if (p->r[i].gpa == gpa && p->r[i].len == len)
			found = 1;
		else
			nr[k++] = p->r[i];
	}
	return found ? pvp_commit(d, nr, k) : PV_PROTECT_ENOENT;
}

/* Wake every waiting fault with a refusal (UNREGISTER). */
static void pvp_refuse_all(struct pvp *p)
{
	for (int i = 0; i < PV_PROTECT_MAX_RECORDS; i++)
		if (p->w[i].seq && !p->w[i].answered)
			p->w[i] = (struct pvp_wait){ p->w[i].seq, true, PV_PROTECT_REFUSE, 0 };
	pthread_cond_broadcast(&p->cond);
}

static int pvp_register(struct device *d, uint64_t gpa, uint64_t gsi, uint64_t timeout)
{
	struct pvp *p = d->priv;
	struct pv_protect_page *pg;

	if (gpa & (PVP_PAGE - 1) || gsi != PV_PROTECT_GSI || timeout > PV_PROTECT_TIMEOUT_MAX)
		return PV_PROTECT_EINVAL;
	pg = guest_mem_ptr(d->host->mem, gpa, PVP_PAGE);
	if (!pg)
		return PV_PROTECT_ERANGE;
	if (p->n || p->inflight)
		return PV_PROTECT_EBUSY;
	p->registered = true;
	p->page_gpa = gpa;
	p->timeout_ms = timeout ? (uint32_t)timeout : PV_PROTECT_TIMEOUT_MS;
	memset(pg, 0, sizeof(*pg));
	pg->version = PV_PROTECT_VERSION;
	pg->nrecords = PV_PROTECT_MAX_RECORDS;
	pg->seq = p->seq;
	__atomic_store_n(&pg->magic, PV_PROTECT_MAGIC, __ATOMIC_RELEASE);
	return PV_PROTECT_OK;
}

static int pvp_answer(struct device *d, uint64_t seq, uint64_t verdict, uint64_t value)
{
	struct pvp *p = d->priv;

	if (!p->registered)
		return PV_PROTECT_ENOHANDLER;
	if (verdict != PV_PROTECT_ALLOW && verdict != PV_PROTECT_REFUSE)
		return PV_PROTECT_EINVAL;
	for (int i = 0; seq && i < PV_PROTECT_MAX_RECORDS; i++) {
		if (p->w[i].seq != seq || p->w[i].answered)
			continue;
		p->w[i].answered = true;
		p->w[i].verdict = (uint32_t)verdict;
		p->w[i].value = value;
		pthread_cond_broadcast(&p->cond);
		return PV_PROTECT_OK;
	}
	return PV_PROTECT_ENOENT;
}

/* Requests that change the slots run while the other vCPUs are held:
 * drop the lock the bus holds, hold them, take it again (essay). */
static int pvp_run(struct device *d, const struct pv_protect_req *q)
{
	struct pvp *p = d->priv;
	int rc;

	switch (q->op) {
	case PV_PROTECT_OP_REGISTER:
		return pvp_register(d, q->a0, q->a1, q->a2);
	case PV_PROTECT_OP_ANSWER:
		return pvp_answer(d, q->a0, q->a1, q->a2);
	case PV_PROTECT_OP_PROTECT:
	case PV_PROTECT_OP_UNPROTECT:
	case PV_PROTECT_OP_UNREGISTER:
		break;
	default:
		return PV_PROTECT_EINVAL;
	}
	pthread_mutex_unlock(&d->lock);
	p->be.hold(p->be.opaque, true);
	pthread_mutex_lock(&d->lock);
	if (q->op == PV_PROTECT_OP_PROTECT) {
		rc = pvp_protect(d, q->a0, q->a1, q->a2);
	} else if (q->op == PV_PROTECT_OP_UNPROTECT) {
		rc = pvp_unprotect(d, q->a0, q->a1);
	} else {
		rc = p->n ? pvp_commit(d, p->r, 0) : PV_PROTECT_OK;
		if (rc == PV_PROTECT_OK) {
			p->registered = false;
			pvp_refuse_all(p);
		}
	}
	pthread_mutex_unlock(&d->lock);
	p->be.hold(p->be.opaque, false);
	pthread_mutex_lock(&d->lock);
	return rc;
}

static void pvp_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct pvp *p = d->priv;
	struct pv_protect_req q;
	uint32_t gpa = 0;
	int32_t status;

	if (size != 4) {
		p->bad_requests++;
		return;
	}
	memcpy(&gpa, data, 4);
	if (gpa & 7 || guest_mem_read(d->host->mem, gpa, &q, sizeof(q)) ||
	    pvp_find(p, gpa, sizeof(q))) {
		p->bad_requests++;      /* no status can be written: ignored */
		log_debug("pv-protect: request at 0x%x ignored (not aligned, not RAM, or protected)", gpa);
		return;
	}
	p->requests++;
	status = pvp_run(d, &q);
	if (status)
		p->bad_requests++;
	log_debug("pv-protect: op %u (0x%llx 0x%llx 0x%llx): status %d", q.op,
		  (unsigned long long)q.a0, (unsigned long long)q.a1, (unsigned long long)q.a2, status);
	/* (a PROTECT of the block's own page still gets its status: the
	 * guest asked for both) */
	guest_mem_write(d->host->mem, gpa + offsetof(struct pv_protect_req, status), &status, 4);
}

static void pvp_io_read(struct device *d, uint16_t port, void *data, int size)
{
	uint32_t magic = PV_PROTECT_MAGIC;

	memset(data, 0, (size_t)size);
	memcpy(data, &magic, size < 4 ? (size_t)size : 4);
}

/* ---- faults ---- */

static void pvp_do_access(uint8_t *ram, void *data, int len, bool write)
{
	if (write)
		memcpy(ram, data, (size_t)len);
	else
		memcpy(data, ram, (size_t)len);
}

static bool pvp_timed_out(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* Wait (d->lock held) for the answer to fault `cpu`, in slices so a
 * stopping VM is noticed.  True when answered. */
static bool pvp_wait_answer(struct device *d, int cpu)
{
	struct pvp *p = d->priv;
	struct timespec deadline;

	deadline = timespec_after_ms(CLOCK_MONOTONIC, p->timeout_ms);
	while (!p->w[cpu].answered && !pvp_timed_out(&deadline) &&
	       !(p->be.stopping && p->be.stopping(p->be.opaque))) {
		struct timespec slice = timespec_after_ms(CLOCK_MONOTONIC, 100);

		if (slice.tv_sec > deadline.tv_sec ||
		    (slice.tv_sec == deadline.tv_sec && slice.tv_nsec > deadline.tv_nsec))
			slice = deadline;
		pthread_cond_timedwait(&p->cond, &d->lock, &slice);
	}
	return p->w[cpu].answered;
}

bool pv_protect_access(struct device *d, int cpu, uint64_t gpa, void *data, int len,
		       bool write)
{
	struct pvp *p = d->priv;
	uint8_t *ram = guest_mem_ptr(d->host->mem, gpa, (uint64_t)len);
	struct pv_protect_range *r;
	struct pv_protect_page *pg;
	struct pv_protect_record rec;
	bool answered, allow;
	uint64_t seq, value = 0;

	if (!ram || len < 1 || len > 8)
		return false;
	pthread_mutex_lock(&d->lock);
	r = pvp_find(p, gpa, (uint64_t)len);
	pg = pvp_page(d);
	if (!r || (r->mode == PV_PROTECT_READONLY && !write) || !pg ||
	    cpu < 0 || cpu >= PV_PROTECT_MAX_RECORDS) {
		/* not protected (any more): a range went away between KVM's
		 * exit and here, or a cpu we cannot record: do it on RAM */
		if (r && !(r->mode == PV_PROTECT_READONLY && !write))
			log_warn("pv-protect: vcpu%d: fault at 0x%llx cannot be recorded; allowed",
				 cpu, (unsigned long long)gpa);
		pvp_do_access(ram, data, len, write);
		p->passed++;
		pthread_mutex_unlock(&d->lock);
		return true;
	}
	seq = ++p->seq;
	rec = (struct pv_protect_record){ .seq = seq, .gpa = gpa, .cpu = (uint16_t)cpu,
		.len = (uint8_t)len, .kind = write ? PV_PROTECT_FAULT_WRITE : PV_PROTECT_FAULT_READ,
		.state = PV_PROTECT_REC_FREE };
	if (write)
		memcpy(&rec.data, data, (size_t)len);
	memcpy(&pg->record[cpu], &rec, sizeof(rec));
	pg->seq = seq;
	pg->faults = ++p->faults;
	__atomic_store_n(&pg->record[cpu].state, PV_PROTECT_REC_PENDING, __ATOMIC_RELEASE);
	p->w[cpu] = (struct pvp_wait){ .seq = seq };
	p->inflight++;
	pthread_mutex_unlock(&d->lock);

	device_host_irq_line(d->host, PV_PROTECT_GSI, 1);   /* an edge */
	device_host_irq_line(d->host, PV_PROTECT_GSI, 0);
	p->be.wait(p->be.opaque, true);

	pthread_mutex_lock(&d->lock);
	answered = pvp_wait_answer(d, cpu);
	allow = answered && p->w[cpu].verdict == PV_PROTECT_ALLOW;
	value = answered ? p->w[cpu].value : 0;
	if (!answered && !(p->be.stopping && p->be.stopping(p->be.opaque))) {
		p->timeouts++;
		log_warn("pv-protect: vcpu%d: no answer to fault %llu (%s of %d bytes at 0x%llx) "
			 "in %u ms: refused", cpu, (unsigned long long)seq, write ? "write" : "read",
			 len, (unsigned long long)gpa, p->timeout_ms);
	}
	if (allow)
		p->allowed++;
	else
		p->refused++;
	pg = pvp_page(d);
	if (pg) {
		pg->timeouts = p->timeouts;
		__atomic_store_n(&pg->record[cpu].state, PV_PROTECT_REC_DONE, __ATOMIC_RELEASE);
	}
	if (allow)
		pvp_do_access(ram, data, len, write);
	else if (!write)
		memcpy(data, &value, (size_t)len);
	p->w[cpu] = (struct pvp_wait){ 0 };
	p->inflight--;
	pthread_mutex_unlock(&d->lock);
	p->be.wait(p->be.opaque, false);
	return true;
}

int pv_protect_busy(struct device *d, char *why, size_t len)
{
	struct pvp *p = d->priv;
	int n;

	pthread_mutex_lock(&d->lock);
	n = p->n + p->inflight;
	if (n && why)
		snprintf(why, len, "the guest has %d protected page range%s and %d fault%s "
			 "waiting (pv-protect, docs/memory.md); they cannot be saved: the guest "
			 "must remove them first", p->n, p->n == 1 ? "" : "s", p->inflight,
			 p->inflight == 1 ? "" : "s");
	pthread_mutex_unlock(&d->lock);
	return n;
}

/* ---- state, metrics ---- */

static void pvp_save(struct device *d, struct state_writer *w)
{
	struct pvp *p = d->priv;

	/* ranges are never saved: snapshots and migration refuse them */
	state_put_u8(w, p->registered);
	state_put_u64(w, p->page_gpa);
	state_put_u32(w, p->timeout_ms);
	state_put_u64(w, p->seq);
}

static int pvp_restore(struct device *d, uint16_t version, struct state_reader *r)
{
	struct pvp *p = d->priv;
	bool reg = state_get_u8(r) != 0;
	uint64_t gpa = state_get_u64(r);
	uint32_t t = state_get_u32(r);
	uint64_t seq = state_get_u64(r);

	if (reg && (gpa & (PVP_PAGE - 1) || !guest_mem_ptr(d->host->mem, gpa, PVP_PAGE) ||
		    !t || t > PV_PROTECT_TIMEOUT_MAX))
		return -1;
	p->registered = reg;
	p->page_gpa = reg ? gpa : 0;
	p->timeout_ms = reg ? t : 0;
	p->seq = seq;
	return 0;
}

static void pvp_metrics(struct device *d, json_t *dev, json_t *root)
{
	struct pvp *p = d->priv;

	json_object_set_new(dev, "registered", json_boolean(p->registered));
	json_object_set_new(dev, "ranges", json_integer(p->n));
	json_object_set_new(dev, "faults", json_integer((json_int_t)p->faults));
	json_object_set_new(dev, "allowed", json_integer((json_int_t)p->allowed));
	json_object_set_new(dev, "refused", json_integer((json_int_t)p->refused));
	json_object_set_new(dev, "timeouts", json_integer((json_int_t)p->timeouts));
	json_object_set_new(dev, "requests", json_integer((json_int_t)p->requests));
	json_object_set_new(dev, "bad_requests", json_integer((json_int_t)p->bad_requests));
}

static void pvp_destroy(struct device *d)
{
	struct pvp *p = d->priv;

	pthread_cond_destroy(&p->cond);
	free(p);
}

static const struct device_ops pv_protect_ops = {
	.type = "pv-protect",
	.state_version = PVP_STATE_VERSION,
	.io_read = pvp_io_read,
	.io_write = pvp_io_write,
	.save = pvp_save,
	.restore = pvp_restore,
	.metrics = pvp_metrics,
	.destroy = pvp_destroy,
};

int pv_protect_create(const struct device_host *host, const struct pv_protect_backend *be,
		      struct device **out, struct error *e)
{
	struct pvp *p = calloc(1, sizeof(*p));
	struct device *d;
	pthread_condattr_t ca;

	if (!p)
		return error_set(e, EXIT_HOST, "out of memory");
	p->be = *be;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	d = device_new(host, &pv_protect_ops, "pv-protect", p);
	if (!d) {
		pthread_cond_destroy(&p->cond);
		free(p);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(host, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, PV_PROTECT_PORT, 4, d))
		return error_set(e, EXIT_HOST, "pv-protect: cannot claim ports 0x%x-0x%x",
				 PV_PROTECT_PORT, PV_PROTECT_PORT + 3);
	*out = d;
	return 0;
}
