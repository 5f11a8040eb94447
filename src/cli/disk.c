/*
 * disk.c - `shoal disk add|remove|list --socket SOCK ...`: disks plugged
 * into and unplugged from a running VM, through its VMM's control socket
 * (`shoal run --api-socket SOCK`; vmm/hotplug.c does the work, ACPI PCI
 * hotplug tells the guest; docs/devices.md).
 *
 * add sends the image's absolute path (the VMM may run elsewhere in the
 * file system tree than this command), prints the new disk's id.  remove
 * asks the guest to release the disk, then waits, polling disk-list, until
 * the VMM says the disk is gone (the guest ran the slot's _EJ0) or until
 * --timeout seconds passed: then it fails, saying the guest has not let go
 * (the request stays; a guest that answers later still gets the disk
 * removed).  The VMM's replies are trusted no further than as JSON to print.
 *
 * Exit status: 0 done; 70 the VMM refused or the guest did not release the
 * disk in time; 64 usage; 66 no VMM at SOCK.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "cli/commands.h"
#include "host/vmctl.h"

static const char disk_usage[] =
"usage: shoal disk add --socket SOCK FILE [--readonly] [--serial S] [-o json]\n"
"       shoal disk remove --socket SOCK ID [--timeout S] [-o json]\n"
"       shoal disk list --socket SOCK [-o json]\n"
"\n"
"Plug a disk image (raw or qcow2) into the running VM whose VMM serves the\n"
"control socket SOCK (shoal run --api-socket SOCK), or unplug one that was\n"
"plugged in this way.  The guest learns of both through ACPI PCI hotplug\n"
"(Linux: acpiphp, built into Debian's kernels).  add prints the disk's id\n"
"(virtio-blkN); remove asks the guest to release the disk and waits until it\n"
"has (it flushes and lets go) or --timeout passes.  See docs/devices.md.\n"
"\n"
"  -s, --socket SOCK     the VMM's control socket\n"
"      --readonly        add: the guest may not write the disk\n"
"      --serial S        add: the disk's serial number (up to 20 bytes)\n"
"      --timeout S       remove: seconds to wait for the guest (default 30)\n"
"  -o, --output json     the VMM's reply as JSON on stdout\n"
"  -h, --help            this help\n"
"\n"
"exit status: 0 done; 70 refused, or the guest did not release the disk in\n"
"time; 64 usage; 66 no VMM at SOCK.\n";

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* The entry of disk-list's reply for `id`, or NULL. */
static json_t *find_disk(json_t *list, const char *id)
{
	size_t i;
	json_t *d;

	json_array_foreach(json_object_get(list, "disks"), i, d)
		if (!strcmp(json_string_value(json_object_get(d, "id")) ?: "", id))
			return d;
	return NULL;
}

static int disk_remove_wait(struct vmctl *c, const char *id, double timeout, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:s}", "cmd", "disk-list"), *list = NULL;
	double end = now_s() + timeout;
	int rc = -1;

	for (;;) {
		json_decref(list);
		list = NULL;
		if (vmctl_request(c, req, &list, 10000, err, errlen) < 0)
			break;
		if (!find_disk(list, id)) {
			rc = 0;
			break;
		}
		if (now_s() >= end) {
			snprintf(err, errlen, "%s: the guest did not release it within %g s (it has not "
				 "run the slot's eject method: is the disk in use, or has the guest no ACPI "
				 "PCI hotplug?); it stays attached, and the request stands", id, timeout);
			break;
		}
		usleep(100 * 1000);
	}
	json_decref(list);
	json_decref(req);
	return rc;
}

static void print_list(json_t *list)
{
	size_t i;
	json_t *d;

	printf("%-14s %-9s %-5s %s\n", "ID", "STATE", "SLOT", "PATH");
	json_array_foreach(json_object_get(list, "disks"), i, d) {
		json_t *slot = json_object_get(d, "slot");
		char s[16] = "-";

		if (json_is_integer(slot))
			snprintf(s, sizeof(s), "%lld", (long long)json_integer_value(slot));
		printf("%-14s %-9s %-5s %s%s\n", json_string_value(json_object_get(d, "id")) ?: "?",
		       json_string_value(json_object_get(d, "state")) ?: "?", s,
		       json_string_value(json_object_get(d, "path")) ?: "?",
		       json_is_true(json_object_get(d, "readonly")) ? " (read-only)" : "");
	}
}

int cmd_disk(int argc, char **argv)
{
	enum { OPT_READONLY = 256, OPT_SERIAL, OPT_TIMEOUT };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "readonly", no_argument, NULL, OPT_READONLY },
		{ "serial", required_argument, NULL, OPT_SERIAL },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL, *serial = NULL, *sub;
	bool readonly = false, json = false;
	double timeout = 30;
	json_t *req = NULL, *reply = NULL;
	struct vmctl c;
	char err[1400], *endp;
	int opt, rc;

	if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(disk_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	sub = argv[1];
	if (strcmp(sub, "add") && strcmp(sub, "remove") && strcmp(sub, "list")) {
		fprintf(stderr, "shoal disk: '%s' is not add, remove or list\n%s", sub, disk_usage);
		return EXIT_USAGE;
	}
	argc--;
	argv++;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "s:o:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': sock = optarg; break;
		case OPT_READONLY: readonly = true; break;
		case OPT_SERIAL: serial = optarg; break;
		case OPT_TIMEOUT:
			timeout = strtod(optarg, &endp);
			if (*endp || endp == optarg || !(timeout > 0) || timeout > 86400) {
				fprintf(stderr, "shoal disk: --timeout: '%s' is not a number of seconds "
					"from 0 to 86400\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'o':
			if (strcmp(optarg, "json") && strcmp(optarg, "table") && strcmp(optarg, "text")) {
				fprintf(stderr, "shoal disk: --output: '%s' is not json or table\n", optarg);
				return EXIT_USAGE;
			}
			json = !strcmp(optarg, "json");
			break;
		case 'h': fputs(disk_usage, stdout); return 0;
		default: fputs(disk_usage, stderr); return EXIT_USAGE;
		}
	}
	if (!sock) {
		fprintf(stderr, "shoal disk %s: --socket SOCK is required (the VMM's --api-socket)\n", sub);
		return EXIT_USAGE;
	}
	if (optind != argc - (strcmp(sub, "list") ? 1 : 0)) {
		fprintf(stderr, "shoal disk %s: expected %s\n%s", sub,
			!strcmp(sub, "add") ? "one image FILE" : !strcmp(sub, "remove") ? "one disk ID"
			: "no argument", disk_usage);
		return EXIT_USAGE;
	}
	if (!strcmp(sub, "add")) {
		char abs[PATH_MAX];

		if (!realpath(argv[optind], abs)) {
			fprintf(stderr, "shoal disk add: %s: %m\n", argv[optind]);
			return EXIT_NOINPUT;
		}
		req = json_pack("{s:s, s:s, s:b}", "cmd", "disk-add", "path", abs, "readonly", readonly);
		if (serial)
			json_object_set_new(req, "serial", json_string(serial));
	} else if (!strcmp(sub, "remove")) {
		req = json_pack("{s:s, s:s}", "cmd", "disk-remove", "id", argv[optind]);
	} else {
		req = json_pack("{s:s}", "cmd", "disk-list");
	}
	if (vmctl_connect(&c, sock, 5000, err, sizeof(err)) < 0) {
		fprintf(stderr, "shoal disk %s: %s\n", sub, err);
		json_decref(req);
		return EXIT_NOINPUT;
	}
	rc = vmctl_request(&c, req, &reply, 30000, err, sizeof(err));
	json_decref(req);
	if (rc < 0) {
		fprintf(stderr, "shoal: %s\n", err);
		vmctl_close(&c);
		return EXIT_HOST;
	}
	if (!strcmp(sub, "remove")) {
		const char *id = json_string_value(json_object_get(reply, "id")) ?: argv[optind];

		if (disk_remove_wait(&c, id, timeout, err, sizeof(err)) < 0) {
			fprintf(stderr, "shoal: disk remove %s\n", err);
			json_decref(reply);
			vmctl_close(&c);
			return EXIT_HOST;
		}
		json_object_set_new(reply, "state", json_string("removed"));
	}
	vmctl_close(&c);
	if (json) {
		char *s = json_dumps(reply, JSON_COMPACT);

		if (s)
			puts(s);
		free(s);
	} else if (!strcmp(sub, "add")) {
		printf("%s\n", json_string_value(json_object_get(reply, "id")) ?: "?");
	} else if (!strcmp(sub, "remove")) {
		printf("%s removed\n", json_string_value(json_object_get(reply, "id")) ?: "?");
	} else {
		print_list(reply);
	}
	json_decref(reply);
	return 0;
}
