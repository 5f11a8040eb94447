/*
 * cmd.c - the command language: parsing, dispatch and the serial shell.
 *
 * A command list is split on ';' (and newlines); each command is split on
 * blanks into at most CMD_ARGS_MAX words; the first word picks an entry of
 * cmd_table.  Every command sends at least one report line.  A failing
 * command (bad usage, bad range, unknown name, verify mismatch) reports
 * "error ..." or "verify bad ..." and sets cmd_failed; the run goes on,
 * and the final exit code says 1.
 *
 * The shell (`shell`, or an empty kernel command line) prints "shoal> ",
 * echoes what it reads from COM1, handles backspace/DEL, ^C (drop line)
 * and ^D or `quit` (leave the shell, go on with the command list).  It
 * polls the UART (the guest takes no UART interrupts), sleeping on the
 * APIC timer between polls when idle.
 *
 * Boot CPU only, ring 3.
 */
#include "cmd.h"
#include "acpi.h"
#include "arch.h"
#include "bootinfo.h"
#include "lapic.h"
#include "lib.h"
#include "balloon.h"
#include "protect.h"
#include "report.h"
#include "serial.h"
#include "smp.h"
#include "tsc.h"
#include "virtio_cmd.h"
#include "work.h"

#define CMD_ARGS_MAX 16
#define LINE_MAX     512

bool cmd_failed;
static bool shell_quit;

struct cmd {
	const char *name;
	bool (*run)(int argc, char **argv);
	const char *usage;
};

static void cmd_list_run(char *list);

static bool fail(const char *f, const char *a, const char *b)
{
	report("error %s%s%s", f, a, b);
	return false;
}

static bool arg_num(const char *s, uint64_t *v, const char *cmd)
{
	if (parse_u64(s, v))
		return true;
	return fail(cmd, ": bad number: ", s);
}

/* Check a range the workload will write or read; reports why not. */
static bool range_ok(const char *cmd, uint64_t addr, uint64_t len, uint64_t align)
{
	const char *why;

	if ((addr | len) & (align - 1)) {
		report("error %s: addr and len must be multiples of %lu", cmd, align);
		return false;
	}
	if (mem_range_usable(addr, len, &why))
		return true;
	report("error %s: range 0x%lx+0x%lx: %s", cmd, addr, len, why);
	return false;
}

/* fill/verify ADDR LEN SEED */
static bool parse_fillverify(int argc, char **argv, struct work *w)
{
	if (argc != 4)
		return fail(argv[0], ": usage: ", "ADDR LEN SEED");
	if (!arg_num(argv[1], &w->addr, argv[0]) || !arg_num(argv[2], &w->len, argv[0]) ||
	    !arg_num(argv[3], &w->seed, argv[0]))
		return false;
	return range_ok(argv[0], w->addr, w->len, 8);
}

/* A tick interval in microseconds, from "US" or "tick=US" (work.c). */
static bool arg_tick(const char *s, uint64_t *us, const char *cmd)
{
	if (!arg_num(s, us, cmd))
		return false;
	if (!*us || *us > 10000000)
		return fail(cmd, ": tick interval out of range (1 us to 10 s): ", s);
	if (!tsc_khz)
		return fail(cmd, ": ", "no TSC frequency to tick by");
	return true;
}

/* dirty RATE_MIB_S SECONDS [ADDR LEN] [pattern=seq|random] [tick=US] */
static bool parse_dirty(int argc, char **argv, struct work *w)
{
	char *pos[4];
	int i, npos = 0;

	w->seed = rdtsc();
	for (i = 1; i < argc; i++) {
		if (str_eq(argv[i], "pattern=random"))
			w->random = true;
		else if (str_eq(argv[i], "pattern=seq"))
			w->random = false;
		else if (str_starts(argv[i], "tick=")) {
			if (!arg_tick(argv[i] + 5, &w->tick_us, "dirty"))
				return false;
		}
		else if (npos < 4)
			pos[npos++] = argv[i];
		else
			return fail("dirty: extra argument: ", argv[i], "");
	}
	if (npos != 2 && npos != 4)
		return fail("dirty: usage: ", "RATE_MIB_S SECONDS [ADDR LEN] ",
			    "[pattern=seq|random] [tick=US]");
	if (!arg_num(pos[0], &w->rate_mib, "dirty") || !arg_num(pos[1], &w->seconds, "dirty"))
		return false;
	if (npos == 2 && !mem_default_region(&w->addr, &w->len))
		return fail("dirty: ", "no free RAM", "");
	if (npos == 4 && (!arg_num(pos[2], &w->addr, "dirty") ||
			  !arg_num(pos[3], &w->len, "dirty")))
		return false;
	return range_ok("dirty", w->addr, w->len, 4096);
}

/* Fill *w from a workload command's words; false (reported) if bad. */
static bool work_parse(int argc, char **argv, struct work *w)
{
	*w = (struct work){ 0 };
	if (str_eq(argv[0], "fill") || str_eq(argv[0], "verify")) {
		w->kind = str_eq(argv[0], "fill") ? WORK_FILL : WORK_VERIFY;
		return parse_fillverify(argc, argv, w);
	}
	if (str_eq(argv[0], "dirty")) {
		w->kind = WORK_DIRTY;
		return parse_dirty(argc, argv, w);
	}
	if (str_eq(argv[0], "spin")) {
		w->kind = WORK_SPIN;
		if (argc != 2)
			return fail("spin: usage: ", "MS", "");
		return arg_num(argv[1], &w->ms, "spin");
	}
	if (str_eq(argv[0], "tick")) {
		w->kind = WORK_TICK;
		if (argc != 3)
			return fail("tick: usage: ", "US SECONDS", "");
		return arg_tick(argv[1], &w->tick_us, "tick") &&
		       arg_num(argv[2], &w->seconds, "tick");
	}
	return fail("allcpus: unknown workload: ", argv[0], "");
}

static bool cmd_work(int argc, char **argv)
{
	struct work w;
	struct work_result r;

	if (!work_parse(argc, argv, &w))
		return false;
	work_run(&w, &r);
	report("%s", r.line);
	return r.ok;
}

/* allcpus: one slice of the range per CPU, results collected per CPU. */
struct allcpus_job {
	struct work w;
	uint32_t n;
	struct work_result res[MAX_CPUS];
};

static void allcpus_slice(uint32_t cpu, void *arg)
{
	struct allcpus_job *j = arg;
	struct work w = j->w;
	uint64_t per = ALIGN_DOWN(j->w.len / j->n, 4096);

	if (w.kind != WORK_SPIN) {
		w.addr = j->w.addr + cpu * per;
		w.len = cpu == j->n - 1 ? j->w.len - cpu * per : per;
		w.seed = w.kind == WORK_DIRTY ? j->w.seed + cpu : j->w.seed;
	}
	work_run(&w, &j->res[cpu]);
}

static bool cmd_allcpus(int argc, char **argv)
{
	static struct allcpus_job job;
	uint64_t sum = 0, pages = 0;
	bool ok = true;
	uint32_t i;

	if (argc < 2)
		return fail("allcpus: usage: ", "WORKLOAD ARGS...", "");
	if (!work_parse(argc - 1, argv + 1, &job.w))
		return false;
	if (job.w.tick_us)
		return fail("allcpus: ", argv[1], ": ticks are the boot CPU's alone (the console)");
	job.n = cpus_online;
	smp_run_all(allcpus_slice, &job);
	for (i = 0; i < job.n; i++) {
		report("allcpus cpu=%u %s", i, job.res[i].line);
		ok &= job.res[i].ok;
		sum += job.res[i].sum;
		pages += job.res[i].pages;
	}
	if (job.w.kind == WORK_DIRTY)
		report("allcpus %s n=%u pages=%lu", ok ? "ok" : "bad", job.n, pages);
	else if (job.w.kind == WORK_SPIN)
		report("allcpus %s n=%u", ok ? "ok" : "bad", job.n);
	else
		report("allcpus %s n=%u sum=0x%016lx", ok ? "ok" : "bad", job.n, sum);
	return ok;
}

/* zero ADDR LEN: write zeros (memory the guest frees, for the host's
 * zero-page scanner, docs/memory.md). */
static bool cmd_zero(int argc, char **argv)
{
	uint64_t addr, len;

	if (argc != 3 || !arg_num(argv[1], &addr, "zero") || !arg_num(argv[2], &len, "zero"))
		return argc == 3 ? false : fail("zero", ": usage: zero ADDR LEN", "");
	if (!range_ok("zero", addr, len, 8))
		return false;
	for (uint64_t a = addr; a < addr + len; a += 8)
		*(volatile uint64_t *)a = 0;
	report("zero addr=0x%lx len=%lu", addr, len);
	return true;
}

/* readall: read every 8-byte word of every RAM entry below the identity
 * map's top (the guest's own image included): what a memory scanner does.
 * Reports the bytes read, the words that are not zero and their sum. */
static bool cmd_readall(int argc, char **argv)
{
	uint64_t bytes = 0, nonzero = 0, sum = 0;

	for (unsigned i = 0; i < mem_map_n; i++) {
		uint64_t a = mem_map[i].addr, end = mem_map[i].addr + mem_map[i].len;
		if (mem_map[i].type != 1)
			continue;
		if (end > mapped_top)
			end = mapped_top;
		for (a = ALIGN_UP(a, 8); a + 8 <= end; a += 8) {
			uint64_t v = *(volatile uint64_t *)a;
			nonzero += v != 0;
			sum += v;
		}
		bytes += end > mem_map[i].addr ? end - mem_map[i].addr : 0;
	}
	report("readall bytes=%lu nonzero_words=%lu sum=0x%016lx", bytes, nonzero, sum);
	return true;
}

static bool cmd_info(int argc, char **argv)
{
	report("info cpus=%u mem=%lu tsc_khz=%lu cpus_found=%u tsc_source=%s",
	       cpus_online, mem_total, tsc_khz, cpus_found, tsc_source);
	return true;
}

/* ioseq N: the numbers 1 to N on the console, one a line, no report
 * between them: a stream of port writes (and LSR reads) that a snapshot or
 * a pause lands in the middle of (tests/system/snapshot_midio.sh). */
static bool cmd_ioseq(int argc, char **argv)
{
	uint64_t n;

	if (argc != 2 || !arg_num(argv[1], &n, "ioseq"))
		return argc == 2 ? false : fail("ioseq", ": usage: ioseq N", "");
	for (uint64_t i = 1; i <= n; i++)
		console_printf("%lu\n", i);
	report("ioseq done n=%lu", n);
	return true;
}

static bool cmd_echo(int argc, char **argv)
{
	char buf[LINE_MAX];
	size_t n = 0;
	int i;

	buf[0] = 0;
	for (i = 1; i < argc; i++)
		n += fmt(buf + n, sizeof(buf) - n, "%s%s", i > 1 ? " " : "", argv[i]);
	report("%s", buf);
	return true;
}

static bool cmd_exit(int argc, char **argv)
{
	uint64_t code = 0;

	if (argc > 2 || (argc == 2 && !arg_num(argv[1], &code, "exit")))
		return false;
	report("exit code=%lu", code);
	guest_exit((int)code);
}

static bool cmd_poweroff(int argc, char **argv)
{
	report("poweroff");
	guest_poweroff();
}

/* Test hook for the fatal path: a load from a non-canonical address (#GP). */
static bool cmd_fault(int argc, char **argv)
{
	report("fault: loading from a non-canonical address");
	return *(volatile uint64_t *)0x8000000000000000ull != 0;
}

static void shell_run(void);

static bool cmd_shell(int argc, char **argv)
{
	shell_run();
	return true;
}

static bool cmd_quit(int argc, char **argv)
{
	shell_quit = true;
	return true;
}

static bool cmd_help(int argc, char **argv);

static const struct cmd cmd_table[] = {
	{ "info", cmd_info, "" },
	{ "fill", cmd_work, "ADDR LEN SEED" },
	{ "verify", cmd_work, "ADDR LEN SEED" },
	{ "dirty", cmd_work, "RATE_MIB_S SECONDS [ADDR LEN] [pattern=seq|random] [tick=US]" },
	{ "allcpus", cmd_allcpus, "fill|verify|dirty|spin ARGS..." },
	{ "spin", cmd_work, "MS" },
	{ "tick", cmd_work, "US SECONDS (a byte on COM1 every US us, until input)" },
	{ "echo", cmd_echo, "TEXT" },
	{ "zero", cmd_zero, "ADDR LEN" },
	{ "readall", cmd_readall, "(read every word of RAM)" },
	{ "ioseq", cmd_ioseq, "N (print 1..N on the console)" },
	{ "help", cmd_help, "" },
	{ "poweroff", cmd_poweroff, "" },
	{ "exit", cmd_exit, "[N]" },
	{ "fault", cmd_fault, "(test the fatal-exception path: exit 2)" },
	{ "shell", cmd_shell, "" },
	{ "quit", cmd_quit, "(leave the shell)" },
	{ "virtio-mode", virtio_cmd_mode, "legacy|modern|auto" },
	{ "virtio-ring", virtio_cmd_ring, "split|packed (packed: modern only, if offered)" },
	{ "vdevs", virtio_cmd_devs, "[access=ports|ecam] (list virtio PCI devices)" },
	{ "vblk", vblk_cmd, "[SECTORS] [SEED] [dev=N]" },
	{ "vblk-bench", vblk_bench_cmd, "[MS_PER_RUN] [dev=N] (overwrites the disk)" },
	{ "vblk-verify", vblk_verify_cmd, "[SECTORS] [SEED] [dev=N] (reads only)" },
	{ "vnet", vnet_cmd, "[ip=A.B.C.D] [gw=A.B.C.D] [dev=N]" },
	{ "vnet-bench", vnet_bench_cmd, "MS [size=BYTES] [dst=A.B.C.D] [port=N] [ip=A.B.C.D] [dev=N]" },
	{ "vrng", vrng_cmd, "[BYTES] [dev=N]" },
	{ "vcon", vcon_cmd, "[TEXT...] [wait=MS] [dev=N]" },
	{ "vhostile", vhostile_cmd, "loop|oob|len|nested|badhead|all" },
	{ "vballoon", vballoon_cmd, "ADDR LEN [hint=0|1] [wait=S] [dev=N] (inflate to the host's target, private first)" },
	{ "pvshared", pvshared_cmd, "ADDR LEN (frames still shared with the template)" },
	{ "protect", protect_cmd, "register|ro|na|unprotect|write|read|peek|bad|unregister ARGS (pv-protect)" },
};

static bool cmd_help(int argc, char **argv)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cmd_table); i++)
		console_printf("  %s %s\n", cmd_table[i].name, cmd_table[i].usage);
	report("help info fill verify dirty allcpus spin echo help poweroff exit fault shell quit "
	       "virtio-mode virtio-ring vdevs vblk vblk-bench vblk-verify vnet vnet-bench vrng vcon vhostile");
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Split s in place into words; returns the count (extra words dropped). */
static int split_words(char *s, char **argv)
{
	int argc = 0;

	for (;;) {
		while (is_blank(*s))
			*s++ = 0;
		if (!*s)
			return argc;
		if (argc < CMD_ARGS_MAX)
			argv[argc++] = s;
		while (*s && !is_blank(*s))
			s++;
	}
}

static void cmd_one(char *s)
{
	char *argv[CMD_ARGS_MAX];
	int argc = split_words(s, argv);
	size_t i;

	if (!argc)
		return;
	for (i = 0; i < ARRAY_SIZE(cmd_table); i++) {
		if (str_eq(argv[0], cmd_table[i].name)) {
			if (!cmd_table[i].run(argc, argv))
				cmd_failed = true;
			return;
		}
	}
	report("error unknown command: %s", argv[0]);
	cmd_failed = true;
}

static void cmd_list_run(char *list)
{
	char *s = list;

	while (*s && !shell_quit) {
		char *e = s;

		while (*e && *e != ';' && *e != '\n')
			e++;
		if (*e) {
			*e = 0;
			cmd_one(s);
			s = e + 1;
		} else {
			cmd_one(s);
			s = e;
		}
	}
}

/*
 * Wait for a byte from COM1.  Polls flat out for 10 ms after the last byte
 * (pasted or piped input), then sleeps in HLT between polls: 1 ms, and
 * 10 ms once idle for 200 ms, so an idle prompt costs the host little (each
 * sleep is a few hundred emulated ring-0 instructions, ~0.2 ms of CPU).
 */
/*
 * The ACPI power button, polled while the prompt is idle (the guest takes
 * no SCI): PWRBTN_STS (bit 8 of PM1a status) set means the host asked for
 * a graceful stop, so acknowledge it and power off.  A machine without a
 * PM1a event block (QEMU microvm) never has it set.
 */
#define PM1_PWRBTN_STS 0x0100

static void shell_check_power_button(void)
{
	uint16_t sts;

	if (!acpi_pm1a_evt_port)
		return;
	sts = inw(acpi_pm1a_evt_port);
	if (sts == 0xffff || !(sts & PM1_PWRBTN_STS))
		return;
	outw(acpi_pm1a_evt_port, PM1_PWRBTN_STS);
	report("power button");
	guest_poweroff();
}

static int shell_getc(void)
{
	uint64_t idle_since = rdtsc(), idle;
	int c;

	while ((c = serial_getc()) < 0) {
		idle = tsc_us_since(idle_since);
		if (idle > 200000)
			lapic_sleep_us(10000);
		else if (idle > 10000)
			lapic_sleep_us(1000);
		if (idle > 10000)
			shell_check_power_button();
	}
	return c;
}

/* Read one line with echo; returns its length, or -1 on ^D at line start. */
static int shell_readline(char *buf, size_t cap)
{
	static bool last_cr;
	size_t n = 0;

	for (;;) {
		int c = shell_getc();
		bool cr = last_cr;

		last_cr = c == '\r';
		if (c == '\n' && cr)
			continue;
		if (c == '\r' || c == '\n') {
			console_write("\n", 1);
			buf[n] = 0;
			return (int)n;
		}
		if ((c == 0x7f || c == 0x08) && n) {
			n--;
			console_write("\b \b", 3);
		} else if (c == 0x04 && !n) {
			console_write("\n", 1);
			return -1;
		} else if (c == 0x03) {
			console_write("^C\n", 3);
			buf[0] = 0;
			return 0;
		} else if (c >= 0x20 && c < 0x7f && n < cap - 1) {
			buf[n++] = (char)c;
			console_write((const char *)&buf[n - 1], 1);
		}
	}
}

static void shell_run(void)
{
	static char line[LINE_MAX];

	shell_quit = false;
	while (!shell_quit) {
		console_write("shoal> ", 7);
		if (shell_readline(line, sizeof(line)) < 0)
			break;
		cmd_list_run(line);
	}
	shell_quit = false;
}

void cmd_run_boot(char *cmdline)
{
	char *p = cmdline;

	while (is_blank(*p))
		p++;
	if (!*p)
		shell_run();
	else
		cmd_list_run(cmdline);
}
