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
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "store/stream.h"

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
	{ "migrate", cmd_migrate, "move a running VM to another VMM, live (shoal migrate --help)" },
	{ "disk", cmd_disk, "plug a disk into a running VM, or unplug it (shoal disk help)" },
	{ "cpu-templates", cmd_cpu_templates, "list the CPU templates a VM can use" },
	{ "img", cmd_img, "create, inspect, check and convert disk images (shoal img help)" },
	{ "vhost-user", cmd_vhost_user, "serve a virtio device (blk, net, rng) to QEMU or Cloud Hypervisor" },
	{ "vm", cmd_vm, "manage VMs through the host daemon shoald (shoal vm help)" },
	{ "console", cmd_console, "attach to a VM's console, or print its log (--show-log)" },
	{ "events", cmd_events, "the host's event log (--follow to wait for more)" },
	{ "metrics", cmd_metrics, "host and VM figures: table, JSON or Prometheus text" },
	{ "store", cmd_store, "the image store: deduplicated images (shoal store help)" },
	{ "net", cmd_net, "networks of shoald: bridge, DHCP, NAT or isolated (shoal net help)" },
	{ "version", cmd_version, "print the version" },
	{ "help", cmd_help, "this list" },
};

static int cmd_help(int argc, char **argv)
{
	printf("usage: shoal [--host URL [--token-file FILE] [--cacert FILE]] COMMAND [ARGS]\n\n"
	       "Shoal: virtual machines on KVM.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		printf("  %-15s %s\n", verbs[i].name, verbs[i].what);
	printf("\nA remote daemon (the daemon-client commands: vm, snapshot list/show/delete,\n"
	       "console, events, metrics):\n"
	       "  --host URL          https://HOST:PORT of a shoald started with --listen\n"
	       "                      (or $SHOAL_HOST); default: the local Unix socket\n"
	       "  --token-file FILE   its bearer token (or $SHOAL_TOKEN_FILE, $SHOAL_TOKEN)\n"
	       "  --cacert FILE       the CA or certificate to check it with (or $SHOAL_CACERT)\n");
	return 0;
}

/* `shoal --host URL --token-file F --cacert F VERB ...`: the global options
 * become the environment the client reads (client.h), so every verb has them. */
static int global_options(int *argc, char ***argv)
{
	static const char *const opts[][2] = { { "--host", "SHOAL_HOST" },
					      { "--token-file", "SHOAL_TOKEN_FILE" },
					      { "--cacert", "SHOAL_CACERT" } };

	while (*argc > 1 && !strncmp((*argv)[1], "--", 2)) {
		const char *a = (*argv)[1], *v = NULL;
		size_t i, n;

		for (i = 0; i < 3; i++) {
			n = strlen(opts[i][0]);
			if (!strncmp(a, opts[i][0], n) && (a[n] == '=' || !a[n]))
				break;
		}
		if (i == 3)
			return 0;
		if (a[n] == '=') {
			v = a + n + 1;
		} else if (*argc > 2) {
			v = (*argv)[2];
			(*argc)--;
			(*argv)++;
		}
		if (!v || !*v) {
			log_error("%s needs a value", opts[i][0]);
			return -1;
		}
		if (i == 0 && strncmp(v, "https://", 8)) {
			log_error("--host %s: expected https://HOST:PORT (shoald serves TCP only over TLS)", v);
			return -1;
		}
		setenv(opts[i][1], v, 1);
		(*argc)--;
		(*argv)++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	store_stream_register();	/* --disk store:... and shoal img store:... */
	if (global_options(&argc, &argv))
		return EXIT_USAGE;
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
