/*
 * snapshot_store.c - `shoal snapshot push SNAP [--as NAME]` and `shoal
 * snapshot pull NAME [--from-server]`: a daemon's snapshot into the host's
 * image store, and one from the store (or, through it, from the image
 * server) into the daemon, where `shoal vm restore NAME --name NEW` runs
 * it (docs/daemon.md, "Snapshots through the store").  Thin clients of
 * POST /v1/snapshots/{name}/push and /pull: the daemon names the store
 * and the server (shoald --store, --store-server), the client names only
 * the snapshot.  Errors print the API's message and exit 1.
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

static const char snapshot_store_usage[] =
"usage: shoal snapshot push SNAP [--as NAME] [-o json] [--socket PATH]\n"
"       shoal snapshot pull NAME [--from-server] [-o json] [--socket PATH]\n"
"\n"
"Through the host's image store (shoald --store DIR; docs/daemon.md):\n"
"  push SNAP       store the daemon's snapshot SNAP (memory, state, disks and\n"
"                  the VM's spec) in the store, as NAME (default SNAP)\n"
"  pull NAME       make the store's snapshot NAME a snapshot of this daemon,\n"
"                  which `shoal vm restore NAME --name NEW` restores; with\n"
"                  --from-server, fetch it from the daemon's image server\n"
"                  (shoald --store-server) into the store first if it is\n"
"                  not there\n"
"\n"
"  -o, --output json     print the API's JSON\n"
"      --socket PATH     shoald's socket (default $SHOAL_SOCKET, then\n"
"                        " CLIENT_DEFAULT_SOCKET ")\n";

static int push_print(json_t *j)
{
	printf("snapshot %s: pushed into the store %s as %s: %lld files, %lld disks, %lld bytes "
	       "in %lld chunks, %lld new (%lld bytes stored)\n",
	       json_string_value(json_object_get(j, "snapshot")) ?: "?",
	       json_string_value(json_object_get(j, "store")) ?: "?",
	       json_string_value(json_object_get(j, "name")) ?: "?",
	       (long long)json_integer_value(json_object_get(j, "files")),
	       (long long)json_integer_value(json_object_get(j, "disks")),
	       (long long)json_integer_value(json_object_get(j, "bytes")),
	       (long long)json_integer_value(json_object_get(j, "chunks")),
	       (long long)json_integer_value(json_object_get(j, "new_chunks")),
	       (long long)json_integer_value(json_object_get(j, "stored_bytes")));
	return 0;
}

static int pull_print(json_t *j)
{
	const char *name = json_string_value(json_object_get(j, "name")) ?: "?";

	if (json_is_true(json_object_get(j, "fetched")))
		printf("snapshot %s: fetched from the server: %lld chunks, %lld were here, %lld "
		       "fetched (%lld bytes)\n", name,
		       (long long)json_integer_value(json_object_get(j, "chunks")),
		       (long long)json_integer_value(json_object_get(j, "present_chunks")),
		       (long long)json_integer_value(json_object_get(j, "fetched_chunks")),
		       (long long)json_integer_value(json_object_get(j, "fetched_bytes")));
	printf("snapshot %s: pulled from the store (of VM %s, %zu disks); restore it with "
	       "`shoal vm restore %s --name NEW`\n", name,
	       json_string_value(json_object_get(j, "vm")) ?: "?",
	       json_array_size(json_object_get(j, "disks")), name);
	return 0;
}

int cmd_snapshot_store(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "as", required_argument, NULL, 'a' },
		{ "from-server", no_argument, NULL, 'f' },
		{ "output", required_argument, NULL, 'o' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argv[1], *as = NULL, *name;
	struct cli_common c = { 0 };
	struct client_resp r;
	struct error e;
	bool push = !strcmp(sub, "push"), server = false;
	char path[256];
	json_t *body;
	char *text;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'a': as = optarg; break;
		case 'f': server = true; break;
		case 'o': if (cli_set_output(&c, optarg)) return EXIT_USAGE; break;
		case 's': c.socket = optarg; break;
		case 'h': fputs(snapshot_store_usage, stdout); return 0;
		default: fputs(snapshot_store_usage, stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc - 2) {
		log_error("snapshot %s: %s (shoal snapshot %s)", sub, optind < argc - 2 ?
			  "one snapshot name, no more" : "which snapshot?",
			  push ? "push SNAP [--as NAME]" : "pull NAME [--from-server]");
		return EXIT_USAGE;
	}
	name = argv[1 + optind];
	if ((push && server) || (!push && as)) {
		log_error("snapshot %s: %s is for snapshot %s", sub, push ? "--from-server" : "--as",
			  push ? "pull" : "push");
		return EXIT_USAGE;
	}
	c.socket = client_socket(c.socket);
	if (strlen(name) > 100) {
		log_error("snapshot %s: %.40s...: too long a name", sub, name);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/v1/snapshots/%s/%s", name, sub);
	body = push ? (as ? json_pack("{s:s}", "as", as) : json_object()) :
		      json_pack("{s:s}", "from", server ? "server" : "store");
	text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		log_error("out of memory");
		return EXIT_HOST;
	}
	rc = client_request(c.socket, "POST", path, text, strlen(text), &r, &e);
	free(text);
	if (rc) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = cli_print_result(&c, &r, push ? push_print : pull_print);
	client_resp_free(&r);
	return rc;
}
