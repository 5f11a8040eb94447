/*
 * migrate.c - `shoal migrate --socket SOCK URI`: ask a running VMM,
 * through its control socket (`shoal run --api-socket SOCK`), to migrate
 * its VM live to a destination VMM started with `shoal run --incoming
 * URI` (state/migrate.c does the work inside the VMM; docs/migration.md).
 *
 * This command starts the migration, shows its progress on a terminal
 * (round, bytes sent, dirty pages, expected downtime), and reports how it
 * ended: the total time and the downtime the source measured (its vCPUs
 * paused until the destination acknowledged), or the error; with
 * --cancel it cancels the one in progress.  With --with-disks the VMM
 * mirrors each writable disk into the destination's own image as well
 * (state/migrate_disk.c); without it the destination opens the same
 * images (shared storage).  With --key-file it runs the key's challenge-
 * response (state/migrate_auth.c) on the connection it made before the
 * VMM gets it; with --tls instead the TLS 1.3 handshake with the key as
 * its PSK (state/migrate_tls.c), and then it relays the stream: the VMM
 * gets one end of a Unix socket pair, a thread here encrypts what comes
 * out of it, so this command must run until the migration ends.  It trusts the VMM's replies
 * no further than as JSON it prints.  Exit status: 0 migrated (or
 * cancelled, with --cancel), 70 the migration failed or was cancelled,
 * 64 usage, 66 no VMM at SOCK.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "host/vmctl.h"
#include "state/migrate.h"
#include "state/migrate_auth.h"
#include "state/migrate_compress.h"
#include "state/migrate_postcopy.h"
#include "state/migrate_tls.h"

static const char migrate_usage[] =
"usage: shoal migrate --socket SOCK unix:PATH|tcp:HOST:PORT [--downtime-ms N]\n"
"                     [--bandwidth RATE] [--with-disks] [--auto-converge]\n"
"                     [--postcopy-after N] [--compress zstd[:LEVEL]]\n"
"                     [--key-file FILE [--tls]] [--output json]\n"
"       shoal migrate --socket SOCK --cancel\n"
"       shoal migrate --socket SOCK --resume unix:PATH|tcp:HOST:PORT\n"
"                     [--key-file FILE [--tls]] [--output json]\n"
"\n"
"Move the running VM whose VMM serves the control socket SOCK (shoal run\n"
"--api-socket SOCK) to the VMM waiting at the address (shoal run --incoming\n"
"ADDR, started with the same memory, vCPUs and devices).  Memory is copied\n"
"while the VM runs, in rounds, until what is left fits the downtime limit;\n"
"then the VM pauses, the rest and its vCPU and device state go over, and\n"
"once the destination acknowledges, the source VMM exits (status 0) and the\n"
"VM runs there.  Any failure before the acknowledgement leaves the VM\n"
"running at the source.  A terminal shows the progress; the end prints the\n"
"total time and the downtime measured.  See docs/migration.md.\n"
"\n"
"  -s, --socket SOCK     the source VMM's control socket\n"
"      --downtime-ms N   the longest pause to aim for (default 300)\n"
"      --bandwidth RATE  bytes per second at most: 100M, 1G ... (default: no limit)\n"
"      --with-disks      copy each writable disk into the image the destination\n"
"                        was started with (--disk DEST, of the same size); without\n"
"                        it both ends use the same images (shared storage)\n"
"      --auto-converge   when the rounds do not converge (the guest dirties memory\n"
"                        faster than it goes over), slow the vCPUs down: 20 %\n"
"                        of their time asleep, then 10 points more each time,\n"
"                        up to 99 %, until it converges (off by default: the\n"
"                        guest runs slower while it migrates)\n"
"      --postcopy-after N  when N rounds have not converged, switch to post-copy:\n"
"                        the VM runs at the destination at once and fetches the\n"
"                        pages it lacks from here; past the switch a dropped\n"
"                        connection pauses it until --resume (docs/migration.md)\n"
"      --compress zstd[:LEVEL]  compress the memory pages with zstd (level 1 to\n"
"                        19, default 1) where that makes them smaller; the\n"
"                        destination needs a Shoal that reads it\n"
"      --key-file FILE   prove to the destination (started with --incoming\n"
"                        ADDR,key-file=FILE) that we know its key, and have it\n"
"                        prove the same, before the VM goes (docs/migration.md)\n"
"      --tls             encrypt the stream: TLS 1.3 with the key as a pre-shared\n"
"                        key, to a destination started with ,tls=on (this\n"
"                        command relays the stream: it must run to the end)\n"
"      --cancel          cancel the migration in progress (the VM stays)\n"
"      --resume          a post-copy whose connection dropped (migrate-status:\n"
"                        postcopy-paused): reconnect to the destination, which\n"
"                        waits for it on its --incoming address, and finish it\n"
"  -o, --output json     the result as JSON on stdout\n"
"  -h, --help            this help\n"
"\n"
"exit status: 0 migrated (--cancel: cancelled); 70 the migration failed or was\n"
"cancelled; 64 usage; 66 no VMM at SOCK.\n";

static void progress(json_t *st)
{
	long long bytes = json_integer_value(json_object_get(st, "bytes"));
	long long mem = json_integer_value(json_object_get(st, "memory_bytes"));

	fprintf(stderr, "\r\033[Kround %lld: %lld MiB sent (RAM %lld MiB), %lld pages dirty "
		"(dirtied at %.1f MiB/s), ",
		(long long)json_integer_value(json_object_get(st, "round")), bytes >> 20, mem >> 20,
		(long long)json_integer_value(json_object_get(st, "dirty_pages")),
		(double)json_integer_value(json_object_get(st, "dirty_rate")) / (1 << 20));
	if (json_is_true(json_object_get(st, "with_disks")))
		fprintf(stderr, "disks %lld of %lld MiB, %lld blocks dirty, ",
			(long long)(json_integer_value(json_object_get(st, "disk_bytes")) +
				    json_integer_value(json_object_get(st, "disk_zero_bytes"))) >> 20,
			(long long)json_integer_value(json_object_get(st, "disk_size")) >> 20,
			(long long)json_integer_value(json_object_get(st, "disk_dirty_blocks")));
	if (json_integer_value(json_object_get(st, "throttle_pct")))
		fprintf(stderr, "vCPUs throttled %lld %%, ",
			(long long)json_integer_value(json_object_get(st, "throttle_pct")));
	fprintf(stderr, "expected downtime %.0f ms",
		json_real_value(json_object_get(st, "expected_downtime_ms")));
}

/* Poll "migrate-status" until it ends; the last status in *out. */
static int wait_end(struct vmctl *c, json_t **out, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:s}", "cmd", "migrate-status"), *st = NULL;
	bool tty = isatty(2);
	int rc;

	for (;;) {
		const char *state;

		json_decref(st);
		st = NULL;
		rc = vmctl_request(c, req, &st, 30000, err, errlen);
		if (rc < 0)
			break;
		state = json_string_value(json_object_get(st, "state")) ?: "";
		if (strcmp(state, "active") && strcmp(state, "completing") && strcmp(state, "postcopy"))
			break;
		if (tty)
			progress(st);
		usleep(100 * 1000);
	}
	if (tty)
		fputs("\r\033[K", stderr);
	json_decref(req);
	if (rc < 0) {
		char why[256];

		json_decref(st);
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "the VMM went away before it reported how the migration ended "
			 "(%s)", why);
		return -1;
	}
	*out = st;
	return 0;
}

static int cancel(struct vmctl *c, const char *sock)
{
	json_t *req = json_pack("{s:s, s:b}", "cmd", "migrate", "cancel", 1), *reply = NULL;
	char err[512];
	int rc = vmctl_request(c, req, &reply, 10000, err, sizeof(err));

	json_decref(req);
	if (rc < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_HOST;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		log_error("%s", json_string_value(json_object_get(reply, "error")) ?: "cancel failed");
		json_decref(reply);
		return EXIT_HOST;
	}
	json_decref(reply);
	/* wait until the VM runs at the source again */
	if (wait_end(c, &reply, err, sizeof(err)) < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_HOST;
	}
	rc = strcmp(json_string_value(json_object_get(reply, "state")) ?: "", "cancelled") ? EXIT_HOST : 0;
	if (rc)
		log_error("the migration was not cancelled: it %s", json_string_value(
				  json_object_get(reply, "state")) ?: "ended");
	else
		printf("migration cancelled; the VM runs on at the source\n");
	json_decref(reply);
	return rc;
}

int cmd_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "downtime-ms", required_argument, NULL, 'd' },
		{ "bandwidth", required_argument, NULL, 'b' },
		{ "cancel", no_argument, NULL, 'c' },
		{ "resume", no_argument, NULL, 'R' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "tls", no_argument, NULL, 'T' },
		{ "with-disks", no_argument, NULL, 'D' },
		{ "auto-converge", no_argument, NULL, 'A' },
		{ "postcopy-after", required_argument, NULL, 'P' },
		{ "compress", required_argument, NULL, 'Z' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL, *output = "text", *uri, *key_file = NULL;
	uint8_t key[MIGRATE_KEY_LEN];
	long downtime = 300, postcopy_after = 0;
	int zlevel = 0;                 /* --compress zstd[:LEVEL]; 0 off */
	uint64_t bw = 0;
	bool do_cancel = false, with_disks = false, auto_converge = false, tls = false;
	bool resume = false;
	struct migrate_tls *t = NULL;
	char err[512];
	json_t *req, *reply = NULL;
	struct error e = { 0 };
	struct vmctl c;
	int dest;
	int ch, rc;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":s:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 's': sock = optarg; break;
		case 'o': output = optarg; break;
		case 'c': do_cancel = true; break;
		case 'R': resume = true; break;
		case 'k': key_file = optarg; break;
		case 'T': tls = true; break;
		case 'D': with_disks = true; break;
		case 'A': auto_converge = true; break;
		case 'Z':
			if (migrate_z_parse(optarg, &zlevel, &e)) {
				log_error("%s", e.msg);
				return EXIT_USAGE;
			}
			break;
		case 'P': {
			char *end;

			errno = 0;
			postcopy_after = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || postcopy_after < 1 ||
			    postcopy_after > MIGRATE_POSTCOPY_MAX_AFTER) {
				log_error("migrate: --postcopy-after: '%s' is not a number of rounds, 1 to %d",
					  optarg, MIGRATE_POSTCOPY_MAX_AFTER);
				return EXIT_USAGE;
			}
			break;
		}
		case 'd':
			if (cli_parse_downtime_ms(optarg, &downtime))
				return EXIT_USAGE;
			break;
		case 'b':
			if (cli_parse_bandwidth(optarg, &bw))
				return EXIT_USAGE;
			break;
		case 'h': fputs(migrate_usage, stdout); return 0;
		default:
			log_error("migrate: %s %s (shoal migrate --help)", argv[optind - 1],
				  ch == ':' ? "needs a value" : "is not an option");
			return EXIT_USAGE;
		}
	}
	if (strcmp(output, "json") && strcmp(output, "text")) {
		log_error("--output: '%s' is not json or text", output);
		return EXIT_USAGE;
	}
	if (resume && (do_cancel || with_disks || auto_converge || postcopy_after)) {
		log_error("migrate: --resume takes no --cancel, --with-disks, --auto-converge or "
			  "--postcopy-after (it goes on with the migration as it was asked)");
		return EXIT_USAGE;
	}
	if (do_cancel && (with_disks || auto_converge || postcopy_after || zlevel)) {
		log_error("migrate: --cancel takes no --with-disks, --auto-converge, --postcopy-after "
			  "or --compress");
		return EXIT_USAGE;
	}
	if (!sock || (do_cancel ? optind != argc : optind != argc - 1)) {
		log_error("migrate: give --socket SOCK and one address, or --socket SOCK --cancel "
			  "(shoal migrate --help)");
		return EXIT_USAGE;
	}
	uri = do_cancel ? NULL : argv[optind];
	if (uri && strncmp(uri, "unix:", 5) && strncmp(uri, "tcp:", 4)) {
		log_error("migrate: '%s' is not an address (unix:PATH or tcp:HOST:PORT)", uri);
		return EXIT_USAGE;
	}
	if (tls && (do_cancel || !key_file)) {
		log_error("migrate: --tls %s", do_cancel ? "goes with a migration, not --cancel" :
			  "needs --key-file FILE (the key is TLS's pre-shared key)");
		return EXIT_USAGE;
	}
	if (key_file && (do_cancel || migrate_key_read(key_file, key, &e))) {
		log_error("%s", do_cancel ? "migrate: --cancel takes no --key-file" : e.msg);
		return do_cancel ? EXIT_USAGE : e.status;
	}
	if (vmctl_connect(&c, sock, 2000, err, sizeof(err)) < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_NOINPUT;
	}
	if (do_cancel) {
		rc = cancel(&c, sock);
		vmctl_close(&c);
		return rc;
	}
	/* We connect, and the VMM streams over our socket: under seccomp it
	 * may open no network connection itself. */
	/* With TLS the VMM writes the stream in clear into a Unix socket
	 * whose other end our relay thread encrypts (state/migrate_tls.c); it
	 * never maps libssl nor sees the key.  A failure closes the
	 * connection before the VMM had it: the VM runs on. */
	dest = migrate_connect(uri, &e);
	if (dest >= 0)
		dest = migrate_link_open(dest, key_file ? key : NULL, tls, uri, NULL, &t, &e);
	explicit_bzero(key, sizeof(key));
	if (dest < 0) {
		vmctl_close(&c);
		log_error("%s", e.msg);
		return EXIT_HOST;
	}
	if (resume)         /* the migration goes on as it was asked, over this connection */
		req = json_pack("{s:s, s:s, s:b}", "cmd", "migrate", "uri", uri, "resume", 1);
	else
		req = json_pack("{s:s, s:s, s:I, s:I, s:b, s:b}", "cmd", "migrate", "uri", uri,
				"downtime_ms", (json_int_t)downtime, "bandwidth", (json_int_t)bw,
				"with_disks", with_disks, "auto_converge", auto_converge);
	if (req && postcopy_after)
		json_object_set_new(req, "postcopy_after", json_integer(postcopy_after));
	if (req && zlevel) {
		json_object_set_new(req, "compress", json_string(MIGRATE_Z_NAME));
		json_object_set_new(req, "compress_level", json_integer(zlevel));
	}
	rc = vmctl_request_fd(&c, req, dest, &reply, 30000, err, sizeof(err));
	close(dest);
	json_decref(req);
	if (rc >= 0 && json_is_true(json_object_get(reply, "ok"))) {
		json_decref(reply);
		reply = NULL;
		rc = wait_end(&c, &reply, err, sizeof(err));
	}
	vmctl_close(&c);
	migrate_tls_relay_end(t, 2000);     /* the VMM closed its end: the relay ends */
	if (rc < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_HOST;
	}
	if (!json_is_true(json_object_get(reply, "ok")) ||
	    strcmp(json_string_value(json_object_get(reply, "state")) ?: "", "done")) {
		log_error("%s", json_string_value(json_object_get(reply, "error")) ?: "migration failed");
		if (!strcmp(output, "json")) {
			json_dumpf(reply, stdout, JSON_SORT_KEYS);
			putchar('\n');
		}
		json_decref(reply);
		return EXIT_HOST;
	}
	if (!strcmp(output, "json")) {
		json_object_del(reply, "ok");
		json_object_del(reply, "expected_downtime_ms");
		json_dumpf(reply, stdout, JSON_SORT_KEYS);
		putchar('\n');
	} else {
		printf("migrated to %s: downtime %.1f ms, total %.0f ms, %lld rounds, %lld MiB sent "
		       "(%lld pages, %lld of them zero)\n", uri,
		       json_real_value(json_object_get(reply, "downtime_ms")),
		       json_real_value(json_object_get(reply, "total_ms")),
		       (long long)json_integer_value(json_object_get(reply, "round")) + 1,
		       (long long)json_integer_value(json_object_get(reply, "bytes")) >> 20,
		       (long long)json_integer_value(json_object_get(reply, "pages_sent")),
		       (long long)json_integer_value(json_object_get(reply, "zero_pages")));
		if (zlevel) {
			long long raw = json_integer_value(json_object_get(reply, "ram_raw_bytes"));
			long long sent = json_integer_value(json_object_get(reply, "ram_data_bytes"));

			printf("compression: zstd level %d: %lld MiB of pages sent as %lld MiB (%.1fx), "
			       "%lld pages compressed\n", zlevel, raw >> 20, sent >> 20,
			       sent ? (double)raw / (double)sent : 0.0,
			       (long long)json_integer_value(json_object_get(reply, "compressed_pages")));
		}
		if (auto_converge)
			printf("auto-converge: the vCPUs were throttled up to %lld %%\n",
			       (long long)json_integer_value(json_object_get(reply, "throttle_max_pct")));
		if (json_is_true(json_object_get(reply, "postcopy")))
			printf("post-copy: %lld pages missing at the switch: %lld fetched on demand, "
			       "%lld pushed\n",
			       (long long)json_integer_value(json_object_get(reply, "postcopy_pages")),
			       (long long)json_integer_value(json_object_get(reply, "postcopy_demand_pages")),
			       (long long)json_integer_value(json_object_get(reply, "postcopy_pushed_pages")));
		if (with_disks)
			printf("disks: %lld mirrored (%lld as their top layer only), %lld MiB of data and "
			       "%lld MiB of zeroes sent, %lld blocks sent again\n",
			       (long long)json_integer_value(json_object_get(reply, "disks")),
			       (long long)json_integer_value(json_object_get(reply, "disks_top_only")),
			       (long long)json_integer_value(json_object_get(reply, "disk_bytes")) >> 20,
			       (long long)json_integer_value(json_object_get(reply, "disk_zero_bytes")) >> 20,
			       (long long)json_integer_value(json_object_get(reply, "disk_resent_blocks")));
	}
	json_decref(reply);
	return 0;
}
