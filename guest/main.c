/*
 * main.c - what the boot CPU does once it is in ring 3.
 *
 *   console up -> start info copied -> identity map above 4 GiB -> TSC
 *   frequency -> ACPI/MP tables -> APs started -> "ready" report ->
 *   the command line's commands (or the interactive shell) -> the end.
 *
 * The end (when no `exit` or `poweroff` command ended the run first): exit
 * code 1 through port 0xf4 if any command failed, otherwise an ACPI
 * poweroff (falling back to exit code 0 where there is no PM1a port).
 */
#include "main.h"
#include "acpi.h"
#include "bootinfo.h"
#include "cmd.h"
#include "report.h"
#include "serial.h"
#include "smp.h"
#include "tsc.h"

static void announce(void)
{
	if (cpus_online == cpus_found || cpus_found == 0)
		report("ready cpus=%u mem=%lu", cpus_online, mem_total);
	else
		report("ready cpus=%u mem=%lu cpus_found=%u", cpus_online, mem_total,
		       cpus_found);
	console_printf(REPORT_PREFIX "cpus from %s (APs started in %lu us), tsc %lu kHz "
		       "from %s, %u memory map entries, mapped to 0x%lx, cmdline \"%s\"\n",
		       cpu_source, smp_start_us, tsc_khz, tsc_source, mem_map_n,
		       mapped_top, boot_cmdline);
}

void guest_main(uint64_t start_info_pa)
{
	serial_init();
	if (!bootinfo_init(start_info_pa)) {
		report("fatal bad start_info at 0x%lx", start_info_pa);
		guest_exit(2);
	}
	mem_map_high();
	tsc_init();
	acpi_init(boot_rsdp);
	smp_start();
	announce();
	cmd_run_boot(boot_cmdline);
	if (cmd_failed)
		guest_exit(1);
	guest_poweroff();
}
