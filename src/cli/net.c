/*
 * net.c - `shoal net create|list|show|delete`: the networks shoald manages
 * (docs/networks.md), through its API.  Each verb is one HTTP request
 * (client.c); errors print the API's message and exit 1.  Read verbs
 * print a table, or the API's JSON with --output json.  The CLI checks
 * nothing the daemon checks (names, subnets): one place says no.
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

static const char net_usage[] =
"usage: shoal net COMMAND [OPTIONS] [NAME]\n"
"\n"
"Networks of the host daemon (shoald): a bridge with DHCP and DNS\n"
"(dnsmasq) and NAT to the host's uplink, or isolated.  A VM's card joins\n"
"one with {\"network\": \"NAME\"} in its spec's \"nets\" (docs/networks.md).\n"
"\n"
"  create NAME [--subnet 10.X.Y.0/24] [--isolated]\n"
"                 make it (default subnet: the first free 10.89.N.0/24;\n"
"                 --isolated: no NAT, its VMs reach each other only)\n"
"  list           every network: bridge, subnet, kind, dnsmasq\n"
"  show NAME      one network\n"
"  delete NAME    remove it (refused while a VM's spec names it)\n"
"\n"
"  -o, --output json     print the API's JSON instead of a table\n"
"      --socket PATH     shoald's socket (default $SHOAL_SOCKET, then\n"
"                        " CLIENT_DEFAULT_SOCKET ")\n";

static void net_print_row(json_t *n)
{
	printf("%-12s %-15s %-18s %-9s %8lld %8lld  %s\n",
	       json_string_value(json_object_get(n, "name")) ?: "?",
	       json_string_value(json_object_get(n, "bridge")) ?: "?",
	       json_string_value(json_object_get(n, "subnet")) ?: "?",
	       json_is_true(json_object_get(n, "isolated")) ? "isolated" : "nat",
	       (long long)json_integer_value(json_object_get(n, "dnsmasq_pid")),
	       (long long)json_integer_value(json_object_get(n, "dnsmasq_restarts")),
	       json_string_value(json_object_get(n, "status")) ?: "?");
}

static int net_print_list(json_t *j)
{
	json_t *n;
	size_t i;

	printf("%-12s %-15s %-18s %-9s %8s %8s  %s\n", "NAME", "BRIDGE", "SUBNET", "KIND",
	       "DNSMASQ", "RESTARTS", "STATUS");
	json_array_foreach(json_object_get(j, "networks"), i, n)
		net_print_row(n);
	return 0;
}

static int net_print_show(json_t *j)
{
	printf("name:      %s\n", json_string_value(json_object_get(j, "name")) ?: "?");
	printf("bridge:    %s\n", json_string_value(json_object_get(j, "bridge")) ?: "?");
	printf("subnet:    %s\n", json_string_value(json_object_get(j, "subnet")) ?: "?");
	printf("gateway:   %s\n", json_string_value(json_object_get(j, "gateway")) ?: "?");
	printf("kind:      %s\n", json_is_true(json_object_get(j, "isolated")) ?
	       "isolated (no NAT; its VMs reach each other only)" : "NAT to the host's uplink");
	printf("dnsmasq:   pid %lld, restarted %lld times\n",
	       (long long)json_integer_value(json_object_get(j, "dnsmasq_pid")),
	       (long long)json_integer_value(json_object_get(j, "dnsmasq_restarts")));
	printf("status:    %s\n", json_string_value(json_object_get(j, "status")) ?: "?");
	return 0;
}

int cmd_net(int argc, char **argv)
{
	enum { OPT_SOCKET = 256, OPT_SUBNET, OPT_ISOLATED };
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "subnet", required_argument, NULL, OPT_SUBNET },
		{ "isolated", no_argument, NULL, OPT_ISOLATED },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argc > 1 ? argv[1] : "", *name = NULL, *subnet = NULL, *method = "GET";
	struct cli_common c = { 0 };
	struct client_resp r;
	struct error e;
	bool isolated = false;
	char path[256], *body = NULL;
	int ch, rc;

	if (!strcmp(sub, "help") || !strcmp(sub, "--help") || !strcmp(sub, "-h") || !sub[0]) {
		fputs(net_usage, sub[0] ? stdout : stderr);
		return sub[0] ? 0 : EXIT_USAGE;
	}
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'o': if (cli_set_output(&c, optarg)) return EXIT_USAGE; break;
		case OPT_SOCKET: c.socket = optarg; break;
		case OPT_SUBNET: subnet = optarg; break;
		case OPT_ISOLATED: isolated = true; break;
		case 'h': fputs(net_usage, stdout); return 0;
		default: fputs(net_usage, stderr); return EXIT_USAGE;
		}
	}
	c.socket = client_socket(c.socket);
	if (optind < argc - 1)
		name = argv[1 + optind++];
	if (optind < argc - 1) {
		log_error("net %s: unexpected argument '%s'", sub, argv[1 + optind]);
		return EXIT_USAGE;
	}
	if ((subnet || isolated) && strcmp(sub, "create")) {
		log_error("net %s: --subnet and --isolated are for net create", sub);
		return EXIT_USAGE;
	}
	if (!strcmp(sub, "list")) {
		if (name) {
			log_error("net list: unexpected argument '%s'", name);
			return EXIT_USAGE;
		}
		snprintf(path, sizeof(path), "/v1/networks");
	} else if (!strcmp(sub, "create") || !strcmp(sub, "show") || !strcmp(sub, "delete")) {
		if (!name) {
			log_error("net %s: which network? (shoal net %s NAME)", sub, sub);
			return EXIT_USAGE;
		}
		if (!strcmp(sub, "create")) {
			json_t *o = json_pack("{s:s, s:b}", "name", name, "isolated", isolated);

			if (subnet)
				json_object_set_new(o, "subnet", json_string(subnet));
			body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
			json_decref(o);
			method = "POST";
			snprintf(path, sizeof(path), "/v1/networks");
		} else {
			char enc[200];

			client_urlencode(name, enc, sizeof(enc));
			snprintf(path, sizeof(path), "/v1/networks/%s", enc);
			if (!strcmp(sub, "delete"))
				method = "DELETE";
		}
	} else {
		log_error("net: unknown command '%s' (shoal net help)", sub);
		return EXIT_USAGE;
	}
	rc = client_request(c.socket, method, path, body, body ? strlen(body) : 0, &r, &e);
	free(body);
	if (rc) {
		log_error("%s", e.msg);
		return e.status;
	}
	if (!strcmp(sub, "delete")) {
		rc = r.status == 204 ? 0 : client_print_error(&r);
		if (!rc && !c.json)
			printf("network %s: deleted\n", name);
	} else {
		rc = cli_print_result(&c, &r, strcmp(sub, "list") ? net_print_show : net_print_list);
	}
	client_resp_free(&r);
	return rc;
}
