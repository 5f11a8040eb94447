/*
 * main.c - the `shoal` command: a table of verbs, one file each.
 *
 *   shoal run ...            boot a VM in the foreground (run.c)
 *   shoal cpu-templates      list CPU templates (cpu_templates.c)
 *   shoal img ...            disk image tool (img.c)
 *   shoal vhost-user ...     serve a device model to another VMM (vhost_user.c)
 *   shoal vm ...             manage VMs through shoald (vm.c)
 *   shoal console NAME       a VM's console through shoald (console.c)
 *   shoal events | metrics   shoald's event log and figures
 *   shoal version | help
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "base/exitcode.h"
#include "base/log.h"

#define SHOAL_VERSION "0.1.0"

/* shoal version [--output json] */
static int cmd_version(int argc, char **argv)
{
	bool json = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("usage: shoal version [--output text|json]\n");
			return 0;
		}
		if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc)
			a = argv[++i];
		else if (!strncmp(a, "--output=", 9))
			a += 9;
		else {
			fprintf(stderr, "shoal: version: unexpected argument '%s' (shoal version --help)\n", a);
			return EXIT_USAGE;
		}
		if (!strcmp(a, "json"))
			json = true;
		else if (strcmp(a, "text") && strcmp(a, "table")) {
			fprintf(stderr, "shoal: version: --output '%s' is not text or json\n", a);
			return EXIT_USAGE;
		}
	}
	if (json)
		printf("{\"name\": \"shoal\", \"version\": \"%s\"}\n", SHOAL_VERSION);
	else
		printf("shoal %s\n", SHOAL_VERSION);
	return 0;
}

static int cmd_help(int argc, char **argv);

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} verbs[] = {
	{ "run", cmd_run, "boot a VM in the foreground (shoal run --help)" },
	{ "snapshot", cmd_snapshot, "save a running VM to a directory (shoal snapshot help)" },
	{ "cpu-templates", cmd_cpu_templates, "list the CPU templates a VM can use" },
	{ "img", cmd_img, "create, inspect, check and convert disk images (shoal img help)" },
	{ "vhost-user", cmd_vhost_user, "serve a virtio device (blk, net, rng) to QEMU or Cloud Hypervisor" },
	{ "vm", cmd_vm, "manage VMs through the host daemon shoald (shoal vm help)" },
	{ "console", cmd_console, "attach to a VM's console, or print its log (--show-log)" },
	{ "events", cmd_events, "the host's event log (--follow to wait for more)" },
	{ "metrics", cmd_metrics, "host and VM figures: table, JSON or Prometheus text" },
	{ "version", cmd_version, "print the version" },
	{ "help", cmd_help, "this list" },
};

static int cmd_help(int argc, char **argv)
{
	printf("usage: shoal COMMAND [ARGS]\n\nShoal: virtual machines on KVM.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		printf("  %-15s %s\n", verbs[i].name, verbs[i].what);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		cmd_help(0, NULL);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(0, NULL);
	if (!strcmp(argv[1], "--version"))
		return cmd_version(0, NULL);
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	log_error("'%s' is not a shoal command (shoal help lists them)", argv[1]);
	return EXIT_USAGE;
}
