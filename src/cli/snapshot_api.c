/*
 * snapshot_api.c - `shoal snapshot list|show SNAP|delete SNAP`: the
 * snapshots shoald took (`shoal vm snapshot`), through its API
 * (docs/daemon.md, "Snapshots").  `shoal snapshot create --socket` (a VMM
 * without a daemon) is snapshot.c's; its dispatcher hands these three here.
 * Read verbs print a table, or the API's JSON with --output json; errors
 * print the API's message and exit 1.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "base/exitcode.h"
#include "base/log.h"

static const char snapshot_api_usage[] =
"usage: shoal snapshot list|show SNAP|delete SNAP [-o json] [--socket PATH]\n"
"\n"
"The snapshots the host daemon (shoald) keeps, taken with\n"
"`shoal vm snapshot NAME [--as SNAP]` and restored with\n"
"`shoal vm restore SNAP --name NEW`.\n"
"\n"
"  list          every snapshot: its VM, when, size, pause\n"
"  show SNAP     one snapshot and the spec of the VM it was taken of\n"
"  delete SNAP   remove it and its directory (refused while a VM restored\n"
"                from it runs)\n"
"\n"
"  -o, --output json     print the API's JSON instead of a table\n"
"      --socket PATH     shoald's socket (default $SHOAL_SOCKET, then\n"
"                        " CLIENT_DEFAULT_SOCKET ")\n";

/* One line of `snapshot list`. */
static void snap_print_row(json_t *s)
{
	char mem[32], size[32], used[256] = "-";
	json_t *u = json_object_get(s, "used_by"), *v;
	size_t i, len = 0;

	cli_fmt_size(json_integer_value(json_object_get(s, "memory_bytes")), mem, sizeof(mem));
	cli_fmt_size(json_integer_value(json_object_get(s, "size_bytes")), size, sizeof(size));
	json_array_foreach(u, i, v)
		if (len < sizeof(used))
			len += (size_t)snprintf(used + len, sizeof(used) - len, "%s%s", i ? "," : "",
						json_string_value(v) ?: "?");
	printf("%-28s %-20s %-24s %5lld %7s %8s %9.1f  %s\n",
	       json_string_value(json_object_get(s, "name")) ?: "?",
	       json_string_value(json_object_get(s, "vm")) ?: "?",
	       json_string_value(json_object_get(s, "created_at")) ?: "-",
	       (long long)json_integer_value(json_object_get(s, "vcpus")), mem, size,
	       json_number_value(json_object_get(s, "pause_ms")), used);
}

static int snap_print_list(json_t *j)
{
	json_t *s;
	size_t i;

	printf("%-28s %-20s %-24s %5s %7s %8s %9s  %s\n", "NAME", "VM", "CREATED", "CPUS",
	       "MEMORY", "SIZE", "PAUSE_MS", "USED BY");
	json_array_foreach(json_object_get(j, "snapshots"), i, s)
		snap_print_row(s);
	return 0;
}

static int snap_print_show(json_t *j)
{
	char *spec = json_dumps(json_object_get(j, "spec"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	char *restored = json_dumps(json_object_get(j, "restored_vms"), JSON_COMPACT);
	char *used = json_dumps(json_object_get(j, "used_by"), JSON_COMPACT);
	char mem[32], data[32], size[32];

	cli_fmt_size(json_integer_value(json_object_get(j, "memory_bytes")), mem, sizeof(mem));
	cli_fmt_size(json_integer_value(json_object_get(j, "memory_data_bytes")), data, sizeof(data));
	cli_fmt_size(json_integer_value(json_object_get(j, "size_bytes")), size, sizeof(size));
	printf("name:       %s\n", json_string_value(json_object_get(j, "name")) ?: "?");
	printf("vm:         %s\n", json_string_value(json_object_get(j, "vm")) ?: "?");
	printf("created:    %s\n", json_string_value(json_object_get(j, "created_at")) ?: "-");
	printf("dir:        %s\n", json_string_value(json_object_get(j, "dir")) ?: "-");
	printf("cpus:       %lld\nmemory:     %s (%s not zero)\nsize:       %s on disk\n",
	       (long long)json_integer_value(json_object_get(j, "vcpus")), mem, data, size);
	printf("paused:     %.1f ms (%.1f ms in all)\n",
	       json_number_value(json_object_get(j, "pause_ms")),
	       json_number_value(json_object_get(j, "total_ms")));
	printf("restored:   %s\nused by:    %s\n", restored ? restored : "[]", used ? used : "[]");
	printf("spec:       %s\n", spec ? spec : "{}");
	free(spec);
	free(restored);
	free(used);
	return 0;
}

int cmd_snapshot_api(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argc > 1 ? argv[1] : "";
	struct cli_common c = { 0 };
	struct client_resp r;
	struct error e;
	const char *name = NULL;
	char path[256];
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'o': if (cli_set_output(&c, optarg)) return EXIT_USAGE; break;
		case 's': c.socket = optarg; break;
		case 'h': fputs(snapshot_api_usage, stdout); return 0;
		default: fputs(snapshot_api_usage, stderr); return EXIT_USAGE;
		}
	}
	c.socket = client_socket(c.socket);
	if (optind < argc - 1)
		name = argv[1 + optind++];
	if (optind < argc - 1) {
		log_error("snapshot %s: unexpected argument '%s'", sub, argv[1 + optind]);
		return EXIT_USAGE;
	}
	if (!strcmp(sub, "list")) {
		if (name) {
			log_error("snapshot list: unexpected argument '%s'", name);
			return EXIT_USAGE;
		}
		snprintf(path, sizeof(path), "/v1/snapshots");
	} else if (!strcmp(sub, "show") || !strcmp(sub, "delete")) {
		if (!name) {
			log_error("snapshot %s: which snapshot? (shoal snapshot %s SNAP)", sub, sub);
			return EXIT_USAGE;
		}
		snprintf(path, sizeof(path), "/v1/snapshots/%s", name);
	} else {
		log_error("snapshot: unknown command '%s' (shoal snapshot help)", sub);
		return EXIT_USAGE;
	}
	if (client_request(c.socket, strcmp(sub, "delete") ? "GET" : "DELETE", path, NULL, 0,
			   &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	if (!strcmp(sub, "delete")) {
		rc = r.status == 204 ? 0 : client_print_error(&r);
		if (!rc && !c.json)
			printf("snapshot %s: deleted\n", name);
	} else {
		rc = cli_print_result(&c, &r, strcmp(sub, "list") ? snap_print_show : snap_print_list);
	}
	client_resp_free(&r);
	return rc;
}
