/*
 * protect.c - the `protect` command: guest-set page protection through
 * the VMM's pv-protect port (abi/pv_protect.h, docs/memory.md), with the
 * fault handler on the boot CPU.
 *
 *   protect register [timeout=MS]   the shared page (this file's bss) and
 *                                   IOAPIC pin PV_PROTECT_GSI routed to
 *                                   VEC_PROTECT on the boot CPU
 *   protect ro|na ADDR LEN [expect=N]   read-only / inaccessible
 *   protect unprotect ADDR LEN [expect=N]
 *   protect write ADDR VALUE [cpu=N] [answer=allow|refuse|none]
 *   protect read ADDR [cpu=N] [answer=allow|refuse|none] [value=V]
 *   protect peek ADDR               the boot CPU reads 8 bytes
 *   protect bad ADDR                hostile requests, each status reported
 *   protect unregister
 *
 * write/read run the access on CPU N (default 1) while the boot CPU waits
 * in HLT: the pv-protect interrupt (trap.c counts it in protect_irqs)
 * wakes it, it reports each pending record of the shared page as
 * "protect fault gpa=0x... cpu=N write ..." and answers as told (none:
 * not at all, so the VMM's timeout refuses it).  The access's own CPU
 * sends the wake IPI when it is done, so the boot CPU never sleeps past
 * it.  Interrupts are off in ring 3; both arrive in user_wait_eq's HLT.
 */
#include "protect.h"
#include "abi/pv_protect.h"
#include "acpi.h"
#include "arch.h"
#include "bootinfo.h"
#include "lapic.h"
#include "lib.h"
#include "report.h"
#include "smp.h"
#include "trap.h"

#define IOAPIC_BASE 0xfec00000ull

volatile uint32_t protect_irqs;

static union {
	struct pv_protect_page p;
	uint8_t raw[4096];
} shared __attribute__((aligned(4096)));

static struct pv_protect_req req __attribute__((aligned(8)));
static uint64_t handled_seq;

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static int pvp_call(uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2)
{
	req = (struct pv_protect_req){ .op = op, .status = -1, .a0 = a0, .a1 = a1, .a2 = a2 };
	barrier();
	outl(PV_PROTECT_PORT, (uint32_t)(uint64_t)&req);
	barrier();
	return req.status;
}

static void ioapic_route(unsigned pin, unsigned vector, uint32_t apic_id)
{
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
	mmio_write32(IOAPIC_BASE + 0x10, apic_id << 24);
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, vector);	/* fixed, physical, edge, high, unmasked */
}

static bool opt_num(int argc, char **argv, const char *key, uint64_t *v)
{
	size_t n = strlen(key);

	for (int i = 2; i < argc; i++)
		if (str_starts(argv[i], key) && argv[i][n] == '=')
			return parse_u64(argv[i] + n + 1, v);
	return true;
}

static const char *opt_str(int argc, char **argv, const char *key, const char *dflt)
{
	size_t n = strlen(key);

	for (int i = 2; i < argc; i++)
		if (str_starts(argv[i], key) && argv[i][n] == '=')
			return argv[i] + n + 1;
	return dflt;
}

/* ---- the access on another CPU, the handler on this one ---- */

struct pvp_job {
	uint64_t addr, value, got;
	bool write;
	volatile uint32_t finished;
};

static void job_run(uint32_t cpu, void *arg)
{
	struct pvp_job *j = arg;

	if (j->write)
		*(volatile uint64_t *)j->addr = j->value;
	else
		j->got = *(volatile uint64_t *)j->addr;
	barrier();
	j->finished = 1;
	lapic_ipi(cpu_slots[0].apic_id, VEC_WAKE);
}

/* Report and answer every record not handled yet; returns how many. */
static unsigned handle_faults(const char *answer, uint64_t value)
{
	unsigned n = 0;

	for (unsigned i = 0; i < PV_PROTECT_MAX_RECORDS; i++) {
		struct pv_protect_record *r = &shared.p.record[i];
		uint32_t verdict;

		if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != PV_PROTECT_REC_PENDING ||
		    r->seq <= handled_seq)
			continue;
		report("protect fault gpa=0x%lx cpu=%u %s len=%u data=0x%lx seq=%lu answer=%s",
		       r->gpa, r->cpu, r->kind == PV_PROTECT_FAULT_WRITE ? "write" : "read",
		       r->len, r->data, r->seq, answer);
		if (r->seq > handled_seq)
			handled_seq = r->seq;
		n++;
		if (str_eq(answer, "none"))
			continue;
		verdict = str_eq(answer, "allow") ? PV_PROTECT_ALLOW : PV_PROTECT_REFUSE;
		if (pvp_call(PV_PROTECT_OP_ANSWER, r->seq, verdict, value))
			report("error protect: ANSWER %lu: status %d", r->seq, req.status);
	}
	return n;
}

static bool protect_access(int argc, char **argv, bool write)
{
	struct pvp_job j = { .write = write };
	uint64_t cpu = 1, value = 0;
	const char *answer = opt_str(argc, argv, "answer", "allow");
	uint32_t seen;
	unsigned faults = 0;

	if (argc < (write ? 4 : 3) || !parse_u64(argv[2], &j.addr) ||
	    (write && !parse_u64(argv[3], &j.value)) || !opt_num(argc, argv, "cpu", &cpu) ||
	    !opt_num(argc, argv, "value", &value) || (j.addr & 7)) {
		report("error protect: usage: protect write ADDR VALUE | read ADDR [cpu=N] "
		       "[answer=allow|refuse|none] [value=V] (ADDR 8-byte aligned)");
		return false;
	}
	if (cpu == 0 || cpu >= cpus_online) {
		report("error protect: cpu=%lu: needs another online CPU (%u online)", cpu, cpus_online);
		return false;
	}
	if (shared.p.magic != PV_PROTECT_MAGIC) {
		report("error protect: not registered (protect register)");
		return false;
	}
	seen = protect_irqs;
	{
		struct cpu_slot *s = &cpu_slots[cpu];

		s->fn = job_run;
		s->arg = &j;
		barrier();
		s->go = s->done + 1;
		lapic_ipi(s->apic_id, VEC_WAKE);
	}
	while (!j.finished) {
		if (protect_irqs != seen) {
			seen = protect_irqs;
			faults += handle_faults(answer, value);
			continue;
		}
		user_wait_eq(&protect_irqs, seen);
	}
	faults += handle_faults(answer, value);   /* one whose interrupt came late */
	while (cpu_slots[cpu].done != cpu_slots[cpu].go)
		cpu_relax();
	if (write)
		report("protect write addr=0x%lx value=0x%lx cpu=%lu faults=%u timeouts=%lu",
		       j.addr, j.value, cpu, faults, shared.p.timeouts);
	else
		report("protect read addr=0x%lx got=0x%lx cpu=%lu faults=%u timeouts=%lu",
		       j.addr, j.got, cpu, faults, shared.p.timeouts);
	return true;
}

/* ---- requests ---- */

static bool protect_register(int argc, char **argv)
{
	uint64_t timeout = 0;
	int st;

	if (inl(PV_PROTECT_PORT) != PV_PROTECT_MAGIC) {
		report("error protect: no pv-protect device at port 0x%x", PV_PROTECT_PORT);
		return false;
	}
	if (!opt_num(argc, argv, "timeout", &timeout))
		return false;
	ioapic_route(PV_PROTECT_GSI, VEC_PROTECT, cpu_slots[0].apic_id);
	st = pvp_call(PV_PROTECT_OP_REGISTER, (uint64_t)&shared, PV_PROTECT_GSI, timeout);
	report("protect register page=0x%lx gsi=%u status=%d magic=%s", (uint64_t)&shared,
	       PV_PROTECT_GSI, st, shared.p.magic == PV_PROTECT_MAGIC ? "ok" : "missing");
	return st == 0;
}

static bool protect_range(int argc, char **argv, uint32_t op, uint64_t mode)
{
	uint64_t addr, len, expect = 0;
	int st;

	if (argc < 4 || !parse_u64(argv[2], &addr) || !parse_u64(argv[3], &len) ||
	    !opt_num(argc, argv, "expect", &expect)) {
		report("error protect: usage: protect %s ADDR LEN [expect=STATUS]", argv[1]);
		return false;
	}
	st = pvp_call(op, addr, len, mode);
	report("protect %s addr=0x%lx len=0x%lx status=%d", argv[1], addr, len, st);
	return st == (int)expect;
}

/* Hostile requests, each with the status it must get. */
static bool protect_bad(int argc, char **argv)
{
	uint64_t a, shared_pa = (uint64_t)&shared;
	int mis, zero, mode, outside, huge, shpage, overlap, nospc = -1, noent, answer, gsi, again;
	int ignored, i, n;
	bool ok;

	if (argc < 3 || !parse_u64(argv[2], &a) || (a & 0xfff)) {
		report("error protect: usage: protect bad ADDR (page aligned, 40 pages free)");
		return false;
	}
	mis = pvp_call(PV_PROTECT_OP_PROTECT, a + 8, 4096, PV_PROTECT_READONLY);
	zero = pvp_call(PV_PROTECT_OP_PROTECT, a, 0, PV_PROTECT_READONLY);
	mode = pvp_call(PV_PROTECT_OP_PROTECT, a, 4096, 7);
	outside = pvp_call(PV_PROTECT_OP_PROTECT, 0x100000000000ull, 4096, PV_PROTECT_READONLY);
	huge = pvp_call(PV_PROTECT_OP_PROTECT, a, 0xfffffffffffff000ull, PV_PROTECT_NOACCESS);
	shpage = pvp_call(PV_PROTECT_OP_PROTECT, shared_pa & ~0xfffull, 8192, PV_PROTECT_READONLY);
	pvp_call(PV_PROTECT_OP_PROTECT, a, 4096, PV_PROTECT_READONLY);
	overlap = pvp_call(PV_PROTECT_OP_PROTECT, a, 8192, PV_PROTECT_NOACCESS);
	for (i = 1, n = 1; i <= PV_PROTECT_MAX_RANGES; i++) {   /* one more than allowed */
		int st = pvp_call(PV_PROTECT_OP_PROTECT, a + (uint64_t)i * 8192, 4096,
				  i % 2 ? PV_PROTECT_NOACCESS : PV_PROTECT_READONLY);
		if (st == 0)
			n++;
		else
			nospc = st;
	}
	noent = pvp_call(PV_PROTECT_OP_UNPROTECT, a, 8192, 0);
	answer = pvp_call(PV_PROTECT_OP_ANSWER, 999999, PV_PROTECT_ALLOW, 0);
	gsi = pvp_call(PV_PROTECT_OP_REGISTER, shared_pa, 5, 0);
	again = pvp_call(PV_PROTECT_OP_REGISTER, shared_pa, PV_PROTECT_GSI, 0);
	/* a request block that is not 8-byte aligned: ignored, status untouched */
	{
		static uint8_t blk[48] __attribute__((aligned(8)));
		struct pv_protect_req *q = (struct pv_protect_req *)(blk + 4);

		q->op = PV_PROTECT_OP_UNREGISTER;
		q->status = 77;
		barrier();
		outl(PV_PROTECT_PORT, (uint32_t)(uint64_t)q);
		barrier();
		ignored = q->status == 77 && shared.p.magic == PV_PROTECT_MAGIC;
	}
	for (i = 0; i <= PV_PROTECT_MAX_RANGES; i++)
		if (pvp_call(PV_PROTECT_OP_UNPROTECT, a + (uint64_t)i * 8192, 4096, 0) == 0)
			n--;
	ok = mis == PV_PROTECT_EINVAL && zero == PV_PROTECT_EINVAL && mode == PV_PROTECT_EINVAL &&
	     outside == PV_PROTECT_ERANGE && huge == PV_PROTECT_ERANGE &&
	     shpage == PV_PROTECT_ESHARED && overlap == PV_PROTECT_EOVERLAP &&
	     nospc == PV_PROTECT_ENOSPC && noent == PV_PROTECT_ENOENT &&
	     answer == PV_PROTECT_ENOENT && gsi == PV_PROTECT_EINVAL && again == PV_PROTECT_EBUSY &&
	     ignored && n == 0;
	report("protect bad misaligned=%d zero_len=%d mode=%d outside=%d huge=%d shared=%d "
	       "overlap=%d nospc=%d noent=%d answer=%d gsi=%d again=%d ignored=%d left=%d %s",
	       mis, zero, mode, outside, huge, shpage, overlap, nospc, noent, answer, gsi, again,
	       ignored, n, ok ? "ok" : "bad");
	return ok;
}

static bool protect_peek(int argc, char **argv)
{
	uint64_t a;

	if (argc < 3 || !parse_u64(argv[2], &a) || (a & 7)) {
		report("error protect: usage: protect peek ADDR (8-byte aligned)");
		return false;
	}
	report("protect peek addr=0x%lx value=0x%lx", a, *(volatile uint64_t *)a);
	return true;
}

bool protect_cmd(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (str_eq(sub, "register"))
		return protect_register(argc, argv);
	if (str_eq(sub, "ro"))
		return protect_range(argc, argv, PV_PROTECT_OP_PROTECT, PV_PROTECT_READONLY);
	if (str_eq(sub, "na"))
		return protect_range(argc, argv, PV_PROTECT_OP_PROTECT, PV_PROTECT_NOACCESS);
	if (str_eq(sub, "unprotect"))
		return protect_range(argc, argv, PV_PROTECT_OP_UNPROTECT, 0);
	if (str_eq(sub, "write"))
		return protect_access(argc, argv, true);
	if (str_eq(sub, "read"))
		return protect_access(argc, argv, false);
	if (str_eq(sub, "peek"))
		return protect_peek(argc, argv);
	if (str_eq(sub, "bad"))
		return protect_bad(argc, argv);
	if (str_eq(sub, "unregister")) {
		int st = pvp_call(PV_PROTECT_OP_UNREGISTER, 0, 0, 0);

		report("protect unregister status=%d", st);
		return st == 0;
	}
	report("error protect: usage: protect register|ro|na|unprotect|write|read|peek|bad|unregister ...");
	return false;
}
