/*
 * memmgr.c - shoald's host memory manager: proportional shares with an
 * idle-memory tax, as in ESX (Waldspurger, OSDI'02, sections 5.1-5.3;
 * issue 13 item 3; docs/memory.md "Shares and the idle-memory tax").
 *
 * With `shoald --memory-budget SIZE`, one thread wakes every period
 * (--memory-period, default 5 s) and:
 *
 *  1. lists the running and paused VMs.  A VM whose spec has
 *     "balloon": true is managed: its allocation P is its memory less its
 *     balloon's target, between its spec's memory_min and memory_max
 *     (defaults 0 and its memory); any other VM counts its whole memory;
 *  2. asks each managed VM's VMM for {"cmd": "memory-activity"}: the
 *     sampled estimate of the fraction f of its memory the guest touched
 *     (mem/idle_sample.c), and its balloon's target now.  The active bytes
 *     are A = f x memory (a VM with no estimate yet counts as all active:
 *     no tax before there is evidence);
 *  3. computes the allocation (memmgr_allocate): start each managed VM at
 *     its max; while the sum is over the budget, take 1 MiB from the VM
 *     with the smallest rho = S / (A + k (P - A)) (shares per MiB, an idle
 *     MiB counting k = 1 / (1 - tau) times, tau = --idle-tax, default
 *     0.75) that is above its min.  Taking memory raises a VM's rho, so
 *     the end is the paper's balance: reclaim falls first on the VM with
 *     the fewest shares per active page, and idle pages cost their holder
 *     k times as much;
 *  4. sets each balloon target that moves by 1 MiB or more (less would
 *     chase the sampling noise), and records a "memory-reclaim" or
 *     "memory-return" event with the figures, reclaims in the order the
 *     allocation first took from each VM.
 *
 * Invariants: a target is never more than memory - memory_min; the sum of
 * managed allocations plus unmanaged memory is within the budget unless
 * every managed VM is at its min (the budget is then simply too small; a
 * warning is logged once).  The manager only sets targets: what a guest
 * really gives back is its balloon driver's business (`actual`), and a
 * guest without a driver gives nothing.  A target set by hand (`shoal vm
 * balloon`) on a managed VM is overridden at the next period.
 *
 * Threads and locks: the round runs on the manager's thread; it takes
 * host->lock to list VMs and to add events, never across a control-socket
 * call (each has a 2 s deadline, so a hung VMM delays one round only).  A
 * busy VM (an operation in progress: migration, snapshot) is counted at
 * its current allocation and left alone.  mm->lock guards the published
 * table that vm show and /metrics read.
 *
 * A guest can lower its own rho by idling and raise it by touching its
 * memory; it cannot touch another VM's figures.  A VMM's reply is
 * checked (numbers in range) before it is used.
 */
#include "host/memmgr.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/timespec.h"
#include "host/host.h"
#include "host/vmctl.h"

double memmgr_rho(uint32_t shares, uint64_t alloc, uint64_t active, double tau)
{
	double k = 1.0 / (1.0 - tau), a = (double)(active < alloc ? active : alloc);
	double w = (a + k * ((double)alloc - a)) / (double)(1 << 20);

	return w > 0 ? (double)shares / w : HUGE_VAL;
}

void memmgr_allocate(const struct memmgr_in *in, struct memmgr_out *out, size_t n,
		     uint64_t budget, double tau)
{
	uint64_t sum = 0;
	int rank = 0;

	for (size_t i = 0; i < n; i++) {
		out[i].alloc = in[i].managed ? in[i].max : in[i].memory;
		out[i].rank = 0;
		sum += out[i].alloc;
	}
	while (sum > budget) {
		size_t best = n;
		double br = 0;
		uint64_t d;

		for (size_t i = 0; i < n; i++) {
			double r;

			if (!in[i].managed || out[i].alloc <= in[i].min)
				continue;
			r = memmgr_rho(in[i].shares, out[i].alloc, in[i].active, tau);
			if (best == n || r < br)
				best = i, br = r;
		}
		if (best == n)
			break;          /* everyone at the minimum */
		d = MEMMGR_QUANTUM;
		if (d > out[best].alloc - in[best].min)
			d = out[best].alloc - in[best].min;
		if (d > sum - budget)
			d = sum - budget;
		out[best].alloc -= d;
		sum -= d;
		if (!out[best].rank)
			out[best].rank = ++rank;
	}
	for (size_t i = 0; i < n; i++)
		out[i].rho = memmgr_rho(in[i].shares, out[i].alloc, in[i].active, tau);
}

/* ---- the manager ---- */

/* One VM in the published table: the last round's view. */
struct mm_vm {
	char name[HOST_NAME_MAX_LEN + 1];
	struct memmgr_in in;
	struct memmgr_out out;
	uint64_t target;            /* balloon target set (or found) */
	double f;                   /* the VMM's estimate, or -1: none yet */
	double last, slow;          /* its last period's fraction and slow average */
	long long periods;
	bool busy;
};

struct memmgr {
	struct host *h;
	uint64_t budget;
	double tau;
	unsigned period_ms;
	pthread_t thread;
	pthread_mutex_t lock;       /* the fields below and the table */
	pthread_cond_t cond;
	bool stop;
	bool warned;                /* "budget too small" logged */
	struct mm_vm *vms;          /* the last round's table */
	size_t n;
	uint64_t rounds;
};

/* Read the spec's memory keys (canonical JSON: bytes).  -1: not managed. */
static void mm_spec(const char *spec, uint64_t memory, struct memmgr_in *in)
{
	json_t *s = json_loads(spec ? spec : "{}", 0, NULL), *v;

	in->memory = memory;
	in->shares = MEMMGR_DEFAULT_SHARES;
	in->min = 0;
	in->max = memory;
	in->managed = json_is_true(json_object_get(s, "balloon"));
	if (json_is_integer(v = json_object_get(s, "memory_shares")) && json_integer_value(v) > 0)
		in->shares = (uint32_t)json_integer_value(v);
	if (json_is_integer(v = json_object_get(s, "memory_min")) && json_integer_value(v) >= 0)
		in->min = (uint64_t)json_integer_value(v);
	if (json_is_integer(v = json_object_get(s, "memory_max")) && json_integer_value(v) >= 0)
		in->max = (uint64_t)json_integer_value(v);
	if (in->max > memory)
		in->max = memory;
	if (in->min > in->max)
		in->min = in->max;
	json_decref(s);
}

/* Ask one VMM for its estimate and balloon target; 0, or -1. */
static int mm_ask(struct host *h, struct mm_vm *v)
{
	char sock[4200], err[256];
	json_t *r = NULL, *x;
	double f;

	host_vm_path(h, v->name, "control.sock", sock, sizeof(sock));
	if (vmctl_call(sock, "memory-activity", &r, 2000, err, sizeof(err))) {
		log_debug("memory manager: vm %s: memory-activity: %s", v->name, err);
		return -1;
	}
	x = json_object_get(r, "balloon_target_bytes");
	if (json_is_integer(x) && json_integer_value(x) >= 0 &&
	    (uint64_t)json_integer_value(x) <= v->in.memory)
		v->target = (uint64_t)json_integer_value(x);
	x = json_object_get(r, "active_fraction");
	f = json_is_number(x) ? json_number_value(x) : -1;
	v->f = f >= 0 && f <= 1 ? f : -1;
	v->last = json_number_value(json_object_get(r, "last"));
	v->slow = json_number_value(json_object_get(r, "slow"));
	v->periods = json_integer_value(json_object_get(r, "periods"));
	json_decref(r);
	return 0;
}

static int mm_set_target(struct host *h, const char *name, uint64_t target, char *err,
			 size_t errlen)
{
	char sock[4200];
	struct vmctl ctl;
	json_t *req = json_pack("{s:s, s:I}", "cmd", "balloon", "target_bytes", (json_int_t)target);
	json_t *rep = NULL;
	int rc;

	host_vm_path(h, name, "control.sock", sock, sizeof(sock));
	rc = vmctl_connect(&ctl, sock, 2000, err, errlen);
	if (!rc) {
		rc = vmctl_request(&ctl, req, &rep, 2000, err, errlen);
		vmctl_close(&ctl);
	}
	json_decref(req);
	json_decref(rep);
	return rc;
}

/* The VMs of this round, from the table (under host->lock). */
static struct mm_vm *mm_list(struct host *h, size_t *count)
{
	struct mm_vm *v;
	size_t n = 0;

	pthread_mutex_lock(&h->lock);
	v = calloc(h->nvms ? h->nvms : 1, sizeof(*v));
	for (size_t i = 0; v && i < h->nvms; i++) {
		struct hvm *x = h->vms[i];

		if (x->deleted || (x->state != HVM_RUNNING && x->state != HVM_PAUSED))
			continue;
		snprintf(v[n].name, sizeof(v[n].name), "%s", x->rec.name);
		mm_spec(x->rec.spec, x->memory, &v[n].in);
		v[n].busy = x->busy != NULL;
		v[n].f = -1;
		n++;
	}
	pthread_mutex_unlock(&h->lock);
	*count = n;
	return v;
}

static void mm_round(struct memmgr *mm)
{
	struct host *h = mm->h;
	size_t n;
	struct mm_vm *v = mm_list(h, &n);
	struct memmgr_in *in;
	struct memmgr_out *out;
	int *order;
	uint64_t floor = 0;

	if (!v)
		return;
	in = calloc(n ? n : 1, sizeof(*in));
	out = calloc(n ? n : 1, sizeof(*out));
	order = calloc(n ? n : 1, sizeof(*order));
	if (!in || !out || !order)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (v[i].in.managed && (v[i].busy || mm_ask(h, &v[i]))) {
			/* left alone this round: counted as it is */
			v[i].in.managed = false;
			v[i].in.memory -= v[i].target;
		}
		v[i].in.active = v[i].f >= 0 ? (uint64_t)(v[i].f * (double)v[i].in.memory) :
			v[i].in.memory;
		in[i] = v[i].in;
		floor += in[i].managed ? in[i].min : in[i].memory;
	}
	memmgr_allocate(in, out, n, mm->budget, mm->tau);
	if (floor > mm->budget && !mm->warned)
		log_warn("memory manager: the budget (%llu MiB) is below what the VMs need at "
			 "their memory_min (%llu MiB)", (unsigned long long)(mm->budget >> 20),
			 (unsigned long long)(floor >> 20));
	mm->warned = floor > mm->budget;
	/* reclaims in the order the allocation took from them, then returns */
	for (size_t i = 0; i < n; i++)
		order[i] = (int)i;
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0; j--) {
			int a = out[order[j - 1]].rank, b = out[order[j]].rank;

			if ((a ? a : 1 << 30) <= (b ? b : 1 << 30))
				break;
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (size_t oi = 0; oi < n; oi++) {
		size_t i = (size_t)order[oi];
		uint64_t cur = v[i].in.memory - v[i].target, want = out[i].alloc;
		uint64_t diff = cur > want ? cur - want : want - cur;
		char err[256], detail[512];

		v[i].out = out[i];
		if (!in[i].managed)
			continue;
		/* under 1 MiB is sampling noise, except to reach a bound exactly */
		if (diff == 0 || (diff < MEMMGR_QUANTUM && want != in[i].min && want != in[i].max))
			continue;
		if (mm_set_target(h, v[i].name, v[i].in.memory - want, err, sizeof(err))) {
			log_warn("memory manager: vm %s: balloon target: %s", v[i].name, err);
			continue;
		}
		v[i].target = v[i].in.memory - want;
		snprintf(detail, sizeof(detail), "{\"allocation_bytes\": %llu, \"previous_bytes\": "
			 "%llu, \"bytes\": %llu, \"balloon_target_bytes\": %llu, \"rho\": %.4g, "
			 "\"active_fraction\": %.4f, \"shares\": %u, \"rank\": %d}",
			 (unsigned long long)want, (unsigned long long)cur, (unsigned long long)diff,
			 (unsigned long long)v[i].target, out[i].rho, v[i].f >= 0 ? v[i].f : 1.0,
			 in[i].shares, out[i].rank);
		pthread_mutex_lock(&h->lock);
		host_event_locked(h, v[i].name, want < cur ? "memory-reclaim" : "memory-return",
				  detail);
		pthread_mutex_unlock(&h->lock);
		log_info("memory manager: vm %s: %s %llu KiB (allocation %llu KiB, rho %.3g, "
			 "active %.1f %%)", v[i].name, want < cur ? "reclaimed" : "returned",
			 (unsigned long long)(diff >> 10), (unsigned long long)(want >> 10), out[i].rho,
			 100 * (v[i].f >= 0 ? v[i].f : 1.0));
	}
	for (size_t i = 0; i < n; i++)   /* the figures at the allocation now in force */
		if (in[i].managed)
			v[i].out.rho = memmgr_rho(in[i].shares, in[i].memory - v[i].target,
						  in[i].active, mm->tau);
	pthread_mutex_lock(&mm->lock);
	free(mm->vms);
	mm->vms = v;
	mm->n = n;
	mm->rounds++;
	v = NULL;
	pthread_mutex_unlock(&mm->lock);
out:
	free(v);
	free(in);
	free(out);
	free(order);
}

static void *mm_thread(void *arg)
{
	struct memmgr *mm = arg;
	struct timespec ts;

	pthread_mutex_lock(&mm->lock);
	while (!mm->stop) {
		pthread_mutex_unlock(&mm->lock);
		mm_round(mm);
		pthread_mutex_lock(&mm->lock);
		ts = timespec_after_ms(CLOCK_MONOTONIC, mm->period_ms);
		while (!mm->stop && pthread_cond_timedwait(&mm->cond, &mm->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&mm->lock);
	return NULL;
}

int memmgr_start(struct host *h, uint64_t budget, double tau, unsigned period_ms,
		 struct api_err *e)
{
	struct memmgr *mm;
	pthread_condattr_t ca;

	h->memmgr = NULL;
	if (!budget)
		return 0;
	mm = calloc(1, sizeof(*mm));
	if (!mm)
		return api_err_set(e, 500, "internal", "memory manager: out of memory");
	mm->h = h;
	mm->budget = budget;
	mm->tau = tau;
	mm->period_ms = period_ms ? period_ms : 5000;
	pthread_mutex_init(&mm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&mm->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&mm->thread, NULL, mm_thread, mm)) {
		free(mm);
		return api_err_set(e, 500, "internal", "memory manager: cannot start its thread");
	}
	h->memmgr = mm;
	log_info("memory manager: budget %llu MiB, idle tax %.0f %%, every %u ms",
		 (unsigned long long)(budget >> 20), tau * 100, mm->period_ms);
	return 0;
}

void memmgr_stop(struct host *h)
{
	struct memmgr *mm = h->memmgr;

	if (!mm)
		return;
	pthread_mutex_lock(&mm->lock);
	mm->stop = true;
	pthread_cond_broadcast(&mm->cond);
	pthread_mutex_unlock(&mm->lock);
	pthread_join(mm->thread, NULL);
	free(mm->vms);
	free(mm);
	h->memmgr = NULL;
}

json_t *memmgr_vm_json(struct host *h, const char *name)
{
	struct memmgr *mm = h->memmgr;
	json_t *o = NULL;

	if (!mm)
		return NULL;
	pthread_mutex_lock(&mm->lock);
	for (size_t i = 0; i < mm->n; i++) {
		struct mm_vm *v = &mm->vms[i];

		if (strcmp(v->name, name) || !v->in.managed)
			continue;
		o = json_pack("{s:I, s:I, s:I, s:f, s:i, s:I, s:I, s:f, s:I}",
			      "allocation_bytes", (json_int_t)(v->in.memory - v->target),
			      "balloon_target_bytes", (json_int_t)v->target,
			      "active_bytes", (json_int_t)v->in.active,
			      "rho", isfinite(v->out.rho) ? v->out.rho : 0.0,
			      "shares", (int)v->in.shares,
			      "min_bytes", (json_int_t)v->in.min, "max_bytes", (json_int_t)v->in.max,
			      "idle_tax", mm->tau, "periods", (json_int_t)v->periods);
		json_object_set_new(o, "active_fraction", v->f >= 0 ? json_real(v->f) : json_null());
		if (v->f >= 0) {
			json_object_set_new(o, "last_fraction", json_real(v->last));
			json_object_set_new(o, "slow_fraction", json_real(v->slow));
		}
		break;
	}
	pthread_mutex_unlock(&mm->lock);
	return o;
}

char *memmgr_prom_text(struct host *h)
{
	struct memmgr *mm = h->memmgr;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	if (mm) {
		pthread_mutex_lock(&mm->lock);
		fprintf(f, "# HELP shoal_host_memory_budget_bytes The memory manager's budget "
			"(shoald --memory-budget).\n# TYPE shoal_host_memory_budget_bytes gauge\n"
			"shoal_host_memory_budget_bytes %llu\n", (unsigned long long)mm->budget);
		fprintf(f, "# HELP shoal_vm_memory_allocation_bytes Memory the manager lets a "
			"VM keep (its memory less its balloon target).\n"
			"# TYPE shoal_vm_memory_allocation_bytes gauge\n");
		for (size_t i = 0; i < mm->n; i++)
			if (mm->vms[i].in.managed)
				fprintf(f, "shoal_vm_memory_allocation_bytes{vm=\"%s\"} %llu\n",
					mm->vms[i].name, (unsigned long long)(mm->vms[i].in.memory -
									     mm->vms[i].target));
		fprintf(f, "# HELP shoal_vm_memory_active_ratio The sampled estimate of the "
			"fraction of a VM's memory in active use.\n"
			"# TYPE shoal_vm_memory_active_ratio gauge\n");
		for (size_t i = 0; i < mm->n; i++)
			if (mm->vms[i].in.managed && mm->vms[i].f >= 0)
				fprintf(f, "shoal_vm_memory_active_ratio{vm=\"%s\"} %.4f\n",
					mm->vms[i].name, mm->vms[i].f);
		fprintf(f, "# HELP shoal_vm_memory_shares_per_mib The VM's shares per MiB with "
			"idle MiB taxed (rho); reclaim takes from the lowest.\n"
			"# TYPE shoal_vm_memory_shares_per_mib gauge\n");
		for (size_t i = 0; i < mm->n; i++)
			if (mm->vms[i].in.managed && isfinite(mm->vms[i].out.rho))
				fprintf(f, "shoal_vm_memory_shares_per_mib{vm=\"%s\"} %.6g\n",
					mm->vms[i].name, mm->vms[i].out.rho);
		pthread_mutex_unlock(&mm->lock);
	}
	fclose(f);
	return buf;
}
