/*
 * metrics.c - `shoal metrics [NAME]`: a host's and its VMs' figures from
 * shoald: vCPU time, exits, resident memory, device I/O; and for the host,
 * VMs by state and memory committed.
 *
 *   shoal metrics                      a table
 *   shoal metrics --output json        GET /v1/metrics as it is
 *   shoal metrics --output prometheus  GET /metrics (the text format)
 *   shoal metrics web1 [--output json] one VM
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

static const char metrics_usage[] =
"usage: shoal metrics [NAME] [--output json|prometheus] [--socket PATH]\n";

/* One VM's row. */
static void metrics_row(json_t *v)
{
	char rss[32] = "-", mem[32];
	json_t *r = json_object_get(v, "rss_bytes");

	cli_fmt_size(json_integer_value(json_object_get(v, "memory")), mem, sizeof(mem));
	if (json_is_integer(r))
		cli_fmt_size(json_integer_value(r), rss, sizeof(rss));
	printf("%-20s %-9s %4lld %7s %12.3f %10lld %9s\n",
	       json_string_value(json_object_get(v, "name")) ?: "?",
	       json_string_value(json_object_get(v, "state")) ?: "?",
	       (long long)json_integer_value(json_object_get(v, "cpus")), mem,
	       (double)json_integer_value(json_object_get(v, "vcpu_time_ns")) / 1e9,
	       (long long)json_integer_value(json_object_get(v, "exits")), rss);
}

/* Column titles of the VM table. */
static void metrics_header(void)
{
	printf("%-20s %-9s %4s %7s %12s %10s %9s\n", "NAME", "STATE", "CPUS", "MEMORY",
	       "VCPU-TIME(s)", "EXITS", "RESIDENT");
}

/* Host line, then one row per VM. */
static int metrics_print_host(json_t *j)
{
	json_t *h = json_object_get(j, "host"), *v;
	char mem[32];
	size_t i;

	cli_fmt_size(json_integer_value(json_object_get(h, "memory_committed_bytes")), mem,
		     sizeof(mem));
	printf("host: %lld VMs (%lld running, %lld paused), %s committed, %lld cpus\n\n",
	       (long long)json_integer_value(json_object_get(h, "vms")),
	       (long long)json_integer_value(json_object_get(json_object_get(h, "vms_by_state"), "running")),
	       (long long)json_integer_value(json_object_get(json_object_get(h, "vms_by_state"), "paused")),
	       mem, (long long)json_integer_value(json_object_get(h, "cpus")));
	metrics_header();
	json_array_foreach(json_object_get(j, "vms"), i, v)
		metrics_row(v);
	return 0;
}

/* One VM's row. */
static int metrics_print_vm(json_t *j)
{
	metrics_header();
	metrics_row(j);
	return 0;
}

/* `shoal metrics [NAME]`. */
int cmd_metrics(int argc, char **argv)
{
	enum { OPT_SOCKET = 256 };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_common cc = { 0 };
	struct client_resp r;
	const char *name = NULL;
	char path[256];
	struct error e;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET: cc.socket = optarg; break;
		case 'o': if (cli_set_output(&cc, optarg)) return EXIT_USAGE; break;
		case 'h': fputs(metrics_usage, stdout); return 0;
		default: fputs(metrics_usage, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc)
		name = argv[optind++];
	if (optind < argc || (name && cc.prometheus)) {
		fputs(metrics_usage, stderr);
		return EXIT_USAGE;
	}
	cc.socket = client_socket(cc.socket);
	if (cc.prometheus)
		snprintf(path, sizeof(path), "/metrics");
	else if (name)
		snprintf(path, sizeof(path), "/v1/vms/%s/metrics", name);
	else
		snprintf(path, sizeof(path), "/v1/metrics");
	if (client_request(cc.socket, "GET", path, NULL, 0, &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	if (cc.prometheus && r.status == 200) {
		fwrite(r.body, 1, r.len, stdout);
		rc = 0;
	} else {
		rc = cli_print_result(&cc, &r, name ? metrics_print_vm : metrics_print_host);
	}
	client_resp_free(&r);
	return rc;
}
