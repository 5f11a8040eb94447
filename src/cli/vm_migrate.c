/*
 * vm_migrate.c - `shoal vm migrate NAME --to URL`: ask shoald to move its
 * running VM NAME live to another shoald (POST /v1/vms/NAME/migrate;
 * docs/daemon.md, "Live migration").  The source daemon does the work and
 * answers once the VM runs at the destination, or runs on here after a
 * failure.  Meanwhile, on a terminal, this shows the progress the source
 * reports in the VM object ("migration": round, bytes, dirty pages,
 * expected downtime), polled from a second thread; at the end it prints
 * the downtime and the total time (--output json: the API's answer).
 * --with-disks and --auto-converge ask the daemons for the VMM's own
 * (docs/migration.md): the destination daemon makes the disk images in
 * the VM's directory there; --postcopy-after N has the VMM switch to
 * post-copy after N rounds that did not converge (range as `shoal
 * migrate`'s).  With --cancel it cancels NAME's migration in progress (DELETE
 * /v1/vms/NAME/migration), answered once it has ended.
 *
 * The destination's token and CA are read here (--to-token-file,
 * --to-cacert) and travel in the request body to the source daemon, over
 * its Unix socket or TLS; neither is printed.  Exit status: 0 migrated; 1
 * the API's error (printed: the VM still runs at the source); 64 usage;
 * 66 a file that cannot be read; 69 no daemon.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "state/migrate_compress.h"
#include "state/migrate_postcopy.h"

static const char vm_migrate_usage[] =
"usage: shoal vm migrate NAME --to URL [--to-token-file FILE] [--to-cacert FILE]\n"
"                        [--downtime-ms N] [--bandwidth RATE] [--with-disks]\n"
"                        [--auto-converge] [--postcopy-after N]\n"
"                        [--compress zstd[:LEVEL]] [-o json]\n"
"                        [--socket PATH]"
"       shoal vm migrate NAME --cancel [--socket PATH]\n"
"\n"
"Move the running VM NAME, live, to the shoald at URL: its API socket (a path,\n"
"two daemons on one host) or https://HOST:PORT (a daemon started with --listen).\n"
"This daemon copies the VM's memory while it runs and pauses it only for the\n"
"rest; once the destination runs it, its record here is gone.  Any failure\n"
"before leaves it running here.  Disks must be shared (the destination opens\n"
"the same paths), or sent with --with-disks.  See docs/daemon.md, \"Live\n"
"migration\".\n"
"\n"
"      --to URL             the destination shoald\n"
"      --to-token-file FILE its bearer token (https://)\n"
"      --to-cacert FILE     its certificate or CA, PEM (default: the system's CAs)\n"
"      --downtime-ms N      the longest pause to aim for (default 300)\n"
"      --bandwidth RATE     bytes per second at most: 100M, 1G ... (default: no cap)\n"
"      --with-disks         send each writable disk too: the destination makes its\n"
"                           image in the VM's directory there; the images here stay\n"
"                           (yours to delete once it runs there)\n"
"      --auto-converge      slow the guest's vCPUs down if the rounds do not converge\n"
"      --postcopy-after N   when N rounds have not converged, switch to post-copy:\n"
"                           the VM runs there at once and fetches the rest of its\n"
"                           memory from here (1 to 30; not over https://: the\n"
"                           destination refuses it over TLS).  A connection lost\n"
"                           after the switch loses the VM (it stays paused here)\n"
"      --compress zstd[:LEVEL]  compress the memory pages where that makes them\n"
"                           smaller (level 1 to 19, default 1)\n"
"      --cancel             cancel NAME's migration in progress: before the point of\n"
"                           no return the VM runs on here, the destination cleans up\n"
"  -o, --output json        the API's answer as JSON\n"
"      --socket PATH        this shoald's socket or URL (default $SHOAL_SOCKET)\n";

enum { OPT_TO = 300, OPT_TO_TOKEN, OPT_TO_CACERT, OPT_DOWNTIME, OPT_BANDWIDTH, OPT_SOCK,
       OPT_CANCEL, OPT_WITH_DISKS, OPT_AUTO_CONVERGE, OPT_POSTCOPY, OPT_COMPRESS };

/* The request, run on its own thread while the main one shows progress. */
struct mig_call {
	const char *socket, *path;
	char *body;
	struct client_resp r;
	struct error e;
	int rc;
	atomic_bool done;
};

static void *mig_call_main(void *arg)
{
	struct mig_call *m = arg;

	m->rc = client_request(m->socket, "POST", m->path, m->body, strlen(m->body), &m->r, &m->e);
	atomic_store(&m->done, true);
	return NULL;
}

/* A whole small file (a token's first line, a PEM) into a malloc'd string. */
static char *read_small(const char *path, bool first_line, size_t max)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f) {
		log_error("%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = calloc(1, max + 1);
	n = buf ? fread(buf, 1, max, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	buf[n] = '\0';
	if (first_line)
		buf[strcspn(buf, "\r\n")] = '\0';
	if (!buf[0]) {
		log_error("%s: empty", path);
		free(buf);
		return NULL;
	}
	return buf;
}

/* One progress line from the VM object's "migration". */
static void show_progress(const char *sock, const char *name)
{
	char path[128];
	struct client_resp r;
	struct error e;
	json_t *v, *m;

	snprintf(path, sizeof(path), "/v1/vms/%s", name);
	if (client_request(sock, "GET", path, NULL, 0, &r, &e))
		return;
	v = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	m = json_object_get(v, "migration");
	if (json_is_object(m))
		fprintf(stderr, "\r\033[K%s: round %lld: %lld MiB sent (RAM %lld MiB), %lld pages "
			"dirty (dirtied at %.1f MiB/s), expected downtime %.0f ms",
			json_string_value(json_object_get(m, "state")) ?: "",
			(long long)json_integer_value(json_object_get(m, "round")),
			(long long)json_integer_value(json_object_get(m, "bytes")) >> 20,
			(long long)json_integer_value(json_object_get(m, "memory_bytes")) >> 20,
			(long long)json_integer_value(json_object_get(m, "dirty_pages")),
			(double)json_integer_value(json_object_get(m, "dirty_rate")) / (1 << 20),
			json_number_value(json_object_get(m, "expected_downtime_ms")));
	json_decref(v);
	client_resp_free(&r);
}

static int mig_print(json_t *j)
{
	if (json_is_true(json_object_get(j, "source_vmm_died"))) {
		/* no figures: the VMM that kept them died (host/migration.c,
		 * source_died) */
		printf("%s: its VMM here died during the migration (%s), but the destination had "
		       "the whole VM%s: it moved to %s, and there it is %s\n",
		       json_string_value(json_object_get(j, "name")) ?: "?",
		       json_string_value(json_object_get(j, "source_exit")) ?: "?",
		       json_is_string(json_object_get(j, "destination_settled")) ?
		       " and held it in doubt, so it was resumed there" : "",
		       json_string_value(json_object_get(j, "to")) ?: "?",
		       json_string_value(json_object_get(j, "destination_state")) ?: "?");
		return 0;
	}
	printf("%s: migrated to %s: downtime %.1f ms, total %.0f ms, %lld rounds, %lld MiB sent "
	       "(%lld pages, %lld of them zero); there it is %s\n",
	       json_string_value(json_object_get(j, "name")) ?: "?",
	       json_string_value(json_object_get(j, "to")) ?: "?",
	       json_number_value(json_object_get(j, "downtime_ms")),
	       json_number_value(json_object_get(j, "total_ms")),
	       (long long)json_integer_value(json_object_get(j, "rounds")),
	       (long long)json_integer_value(json_object_get(j, "bytes")) >> 20,
	       (long long)json_integer_value(json_object_get(j, "pages_sent")),
	       (long long)json_integer_value(json_object_get(j, "zero_pages")),
	       json_string_value(json_object_get(j, "destination_state")) ?: "?");
	if (json_is_string(json_object_get(j, "destination_settled")))
		printf("the destination held it paused, in doubt (our go-ahead did not reach it): "
		       "%s there\n", json_string_value(json_object_get(j, "destination_settled")));
	if (json_integer_value(json_object_get(j, "ram_data_bytes")))
		printf("compression: zstd: %lld MiB of pages sent as %lld MiB\n",
		       (long long)json_integer_value(json_object_get(j, "ram_raw_bytes")) >> 20,
		       (long long)json_integer_value(json_object_get(j, "ram_data_bytes")) >> 20);
	if (json_is_true(json_object_get(j, "postcopy")))
		printf("post-copy: %lld pages missing at the switch: %lld fetched on demand, "
		       "%lld pushed\n",
		       (long long)json_integer_value(json_object_get(j, "postcopy_pages")),
		       (long long)json_integer_value(json_object_get(j, "postcopy_demand_pages")),
		       (long long)json_integer_value(json_object_get(j, "postcopy_pushed_pages")));
	return 0;
}

static int cancel_print(json_t *j)
{
	printf("%s: migration cancelled; the VM runs on here\n",
	       json_string_value(json_object_get(j, "name")) ?: "?");
	return 0;
}

/* --cancel: DELETE /v1/vms/NAME/migration, answered once it ended. */
static int cancel_migration(const struct cli_common *cc, const char *name)
{
	struct client_resp r;
	struct error e = { 0 };
	char path[128];
	int rc;

	snprintf(path, sizeof(path), "/v1/vms/%s/migration", name);
	if (client_request(cc->socket, "DELETE", path, NULL, 0, &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = cli_print_result(cc, &r, cancel_print);
	client_resp_free(&r);
	return rc;
}

int cmd_vm_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "to", required_argument, NULL, OPT_TO },
		{ "to-token-file", required_argument, NULL, OPT_TO_TOKEN },
		{ "to-cacert", required_argument, NULL, OPT_TO_CACERT },
		{ "downtime-ms", required_argument, NULL, OPT_DOWNTIME },
		{ "bandwidth", required_argument, NULL, OPT_BANDWIDTH },
		{ "output", required_argument, NULL, 'o' },
		{ "socket", required_argument, NULL, OPT_SOCK },
		{ "cancel", no_argument, NULL, OPT_CANCEL },
		{ "with-disks", no_argument, NULL, OPT_WITH_DISKS },
		{ "auto-converge", no_argument, NULL, OPT_AUTO_CONVERGE },
		{ "postcopy-after", required_argument, NULL, OPT_POSTCOPY },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *to = NULL, *token_file = NULL, *cacert_file = NULL, *name;
	struct cli_common cc = { 0 };
	struct mig_call m = { 0 };
	long downtime = 0, postcopy_after = 0;
	const char *compress = NULL;    /* --compress zstd[:LEVEL], checked */
	uint64_t bw = 0;
	char path[128];
	json_t *body;
	pthread_t t;
	bool cancel = false, with_disks = false, auto_converge = false;
	int ch, rc;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
		switch (ch) {
		case OPT_TO: to = optarg; break;
		case OPT_TO_TOKEN: token_file = optarg; break;
		case OPT_TO_CACERT: cacert_file = optarg; break;
		case OPT_SOCK: cc.socket = optarg; break;
		case OPT_CANCEL: cancel = true; break;
		case OPT_WITH_DISKS: with_disks = true; break;
		case OPT_AUTO_CONVERGE: auto_converge = true; break;
		case OPT_COMPRESS: {
			struct error ze = { 0 };
			int level;

			if (migrate_z_parse(optarg, &level, &ze)) {
				log_error("vm %s", ze.msg);
				return EXIT_USAGE;
			}
			compress = optarg;
			break;
		}
		case 'o':
			if (cli_set_output(&cc, optarg))
				return EXIT_USAGE;
			break;
		case OPT_DOWNTIME:
			if (cli_parse_downtime_ms(optarg, &downtime))
				return EXIT_USAGE;
			break;
		case OPT_BANDWIDTH:
			if (cli_parse_bandwidth(optarg, &bw))
				return EXIT_USAGE;
			break;
		case OPT_POSTCOPY: {
			char *end;

			errno = 0;
			postcopy_after = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || postcopy_after < 1 ||
			    postcopy_after > MIGRATE_POSTCOPY_MAX_AFTER) {
				log_error("vm migrate: --postcopy-after: '%s' is not a number of rounds, "
					  "1 to %d", optarg, MIGRATE_POSTCOPY_MAX_AFTER);
				return EXIT_USAGE;
			}
			break;
		}
		case 'h': fputs(vm_migrate_usage, stdout); return 0;
		default:
			log_error("vm migrate: %s %s (shoal vm migrate --help)", argv[optind - 1],
				  ch == ':' ? "needs a value" : "is not an option");
			return EXIT_USAGE;
		}
	}
	if (cancel && optind == argc - 1 && !to && !token_file && !cacert_file && !downtime && !bw &&
	    !with_disks && !auto_converge && !postcopy_after && !compress)
	{
		cc.socket = client_socket(cc.socket);
		return cancel_migration(&cc, argv[optind]);
	}
	if (cancel || optind != argc - 1 || !to) {
		if (cancel) {
			log_error("vm migrate: --cancel takes the VM's name only (shoal vm migrate NAME "
				  "--cancel)");
			return EXIT_USAGE;
		}
		log_error("vm migrate: give the VM's name and --to URL (shoal vm migrate NAME --to URL)");
		return EXIT_USAGE;
	}
	name = argv[optind];
	cc.socket = client_socket(cc.socket);
	body = json_pack("{s:s}", "to", to);
	if (token_file) {
		char *tok = read_small(token_file, true, 600);

		if (!tok) {
			json_decref(body);
			return EXIT_NOINPUT;
		}
		json_object_set_new(body, "token", json_string(tok));
		free(tok);
	}
	if (cacert_file) {
		char *pem = read_small(cacert_file, false, 64 * 1024);

		if (!pem) {
			json_decref(body);
			return EXIT_NOINPUT;
		}
		json_object_set_new(body, "cacert", json_string(pem));
		free(pem);
	}
	if (downtime)
		json_object_set_new(body, "downtime_ms", json_integer(downtime));
	if (bw)
		json_object_set_new(body, "bandwidth", json_integer((json_int_t)bw));
	if (with_disks)
		json_object_set_new(body, "with_disks", json_true());
	if (auto_converge)
		json_object_set_new(body, "auto_converge", json_true());
	if (postcopy_after)
		json_object_set_new(body, "postcopy_after", json_integer(postcopy_after));
	if (compress)
		json_object_set_new(body, "compress", json_string(compress));
	m.body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	snprintf(path, sizeof(path), "/v1/vms/%s/migrate", name);
	m.socket = cc.socket;
	m.path = path;
	if (!m.body || pthread_create(&t, NULL, mig_call_main, &m)) {
		free(m.body);
		log_error("vm migrate: out of memory");
		return EXIT_HOST;
	}
	if (isatty(2)) {
		while (!atomic_load(&m.done)) {
			struct timespec ts = { 0, 200 * 1000000L };

			nanosleep(&ts, NULL);
			if (!atomic_load(&m.done))
				show_progress(cc.socket, name);
		}
		fputs("\r\033[K", stderr);
	}
	pthread_join(t, NULL);
	free(m.body);
	if (m.rc) {
		log_error("%s", m.e.msg);
		return m.e.status;
	}
	rc = cli_print_result(&cc, &m.r, mig_print);
	client_resp_free(&m.r);
	return rc;
}
