/*
 * events.c - `shoal events`: what happened to the VMs on a host (created,
 * started, paused, resumed, stopping, exited with its reason, restarting,
 * reattached, deleted), from shoald's event log.
 *
 *   shoal events                     the last 100 events
 *   shoal events --follow            then wait for new ones (Ctrl-C ends)
 *   shoal events --vm web1 --since 42 --output json
 *
 * With --follow the API streams newline-delimited JSON; empty lines are the
 * daemon's heartbeats and are skipped.
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

static const char events_usage[] =
"usage: shoal events [--follow] [--since ID] [--vm NAME] [--limit N]\n"
"                    [--output json] [--socket PATH]\n";

/* One event as a line of text. */
static void event_print(json_t *ev, bool json)
{
	char *detail;

	if (json) {
		char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (s)
			puts(s);
		free(s);
		fflush(stdout);
		return;
	}
	detail = json_dumps(json_object_get(ev, "detail"), JSON_COMPACT | JSON_PRESERVE_ORDER);
	printf("%6lld  %s  %-16s %-18s %s\n", (long long)json_integer_value(json_object_get(ev, "id")),
	       json_string_value(json_object_get(ev, "time")) ?: "",
	       json_string_value(json_object_get(ev, "vm")) ?: "",
	       json_string_value(json_object_get(ev, "type")) ?: "",
	       detail && strcmp(detail, "{}") ? detail : "");
	free(detail);
	fflush(stdout);
}

struct line_buf {
	char buf[65536];
	size_t len;
	bool json;
};

/* client_stream callback: split into lines, print each event. */
static int events_piece(void *arg, const char *data, size_t n)
{
	struct line_buf *lb = arg;

	for (size_t i = 0; i < n; i++) {
		if (data[i] != '\n') {
			if (lb->len < sizeof(lb->buf) - 1)
				lb->buf[lb->len++] = data[i];
			continue;
		}
		if (lb->len) {
			json_t *ev = json_loadb(lb->buf, lb->len, 0, NULL);
			if (ev)
				event_print(ev, lb->json);
			json_decref(ev);
		}
		lb->len = 0;
	}
	return 0;
}

/* `shoal events`: a page of the log, or the stream with --follow. */
int cmd_events(int argc, char **argv)
{
	enum { OPT_SOCKET = 256, OPT_FOLLOW, OPT_SINCE, OPT_VM, OPT_LIMIT };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "follow", no_argument, NULL, OPT_FOLLOW },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "vm", required_argument, NULL, OPT_VM },
		{ "limit", required_argument, NULL, OPT_LIMIT },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_common cc = { 0 };
	const char *since = NULL, *vm = NULL, *limit = NULL;
	struct line_buf *lb;
	struct client_resp r;
	char path[512], enc[200];
	bool follow = false;
	struct error e;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET: cc.socket = optarg; break;
		case OPT_FOLLOW: follow = true; break;
		case OPT_SINCE: since = optarg; break;
		case OPT_VM: vm = optarg; break;
		case OPT_LIMIT: limit = optarg; break;
		case 'o': if (cli_set_output(&cc, optarg)) return EXIT_USAGE; break;
		case 'h': fputs(events_usage, stdout); return 0;
		default: fputs(events_usage, stderr); return EXIT_USAGE;
		}
	}
	cc.socket = client_socket(cc.socket);
	snprintf(path, sizeof(path), "/v1/events?follow=%s", follow ? "true" : "false");
	if (since) {
		client_urlencode(since, enc, sizeof(enc));
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "&since=%s", enc);
	}
	if (vm) {
		client_urlencode(vm, enc, sizeof(enc));
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "&vm=%s", enc);
	}
	if (limit) {
		client_urlencode(limit, enc, sizeof(enc));
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "&limit=%s", enc);
	}
	lb = calloc(1, sizeof(*lb));
	if (!lb)
		return EXIT_HOST;
	lb->json = cc.json;
	if (follow) {
		rc = client_stream(cc.socket, path, events_piece, lb, &r, &e);
	} else {
		rc = client_request(cc.socket, "GET", path, NULL, 0, &r, &e);
		if (!rc && r.status == 200) {
			json_t *j = json_loadb(r.body, r.len, 0, NULL), *ev;
			size_t i;
			json_array_foreach(json_object_get(j, "events"), i, ev)
				event_print(ev, cc.json);
			json_decref(j);
		}
	}
	free(lb);
	if (rc) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = r.status && (r.status < 200 || r.status > 299) ? client_print_error(&r) : 0;
	client_resp_free(&r);
	return rc;
}
