/*
 * snapshot.c - `shoal snapshot create --socket SOCK DIR`: ask a running
 * VMM, through its control socket (`shoal run --api-socket SOCK`), to save
 * the VM into the new directory DIR.  `shoal run --restore DIR` starts a
 * VM from it (run.c; the format is state/snapshot.c's).
 *
 * The VMM writes the snapshot itself (it holds the guest's memory), so DIR
 * is made absolute here: the VMM's working directory is not ours.
 */
#include <getopt.h>
#include <stdbool.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "cli/commands.h"
#include "host/vmctl.h"

static const char snapshot_usage[] =
"usage: shoal snapshot create --socket SOCK DIR [--live | --compress] [--output json]\n"
"       shoal snapshot list|show SNAP|delete SNAP   (shoald's snapshots)\n"
"       shoal snapshot push SNAP [--as NAME] | pull NAME [--from-server]   (shoald's store)\n"
"\n"
"Save the VM whose VMM serves the control socket SOCK (shoal run\n"
"--api-socket SOCK) into DIR, a new directory: its vCPU, KVM and device\n"
"state and its memory.  The VM is paused while it is saved and then goes\n"
"on.  With --live it is paused only to save its vCPU and device state and\n"
"to write-protect its memory; the memory of that instant is written while\n"
"the VM runs (a progress line on a terminal).  With --compress its memory\n"
"is written zstd-compressed (memory.zst: smaller to keep and copy; it can\n"
"be restored but not cloned).  Start a VM from it with\n"
"`shoal run --restore DIR`.  See docs/snapshots.md.\n";

/* An absolute form of `dir` (its parent must exist). */
static int absolute_dir(const char *dir, char *out, size_t size)
{
	char cwd[PATH_MAX];

	if (dir[0] == '/')
		return snprintf(out, size, "%s", dir) < (int)size ? 0 : -1;
	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	return snprintf(out, size, "%s/%s", cwd, dir) < (int)size ? 0 : -1;
}

/* Poll "snapshot-status" until the live snapshot is written; a progress
 * line on stderr when it is a terminal.  The final status replaces *reply
 * (its pause_ms is the live one's). */
static int wait_live(struct vmctl *c, json_t **reply, char *err, size_t errlen)
{
	double pause_ms = json_real_value(json_object_get(*reply, "pause_ms"));
	bool tty = isatty(2);
	json_t *req = json_pack("{s:s}", "cmd", "snapshot-status"), *st = NULL;
	int rc;

	for (;;) {
		const char *state;

		json_decref(st);
		st = NULL;
		rc = vmctl_request(c, req, &st, 10000, err, errlen);
		if (rc < 0)
			break;
		state = json_string_value(json_object_get(st, "state"));
		if (!state || strcmp(state, "writing"))
			break;
		if (tty) {
			long long done = json_integer_value(json_object_get(st, "done_bytes"));
			long long all = json_integer_value(json_object_get(st, "memory_bytes"));

			fprintf(stderr, "\rwriting memory: %lld of %lld MiB (%d%%)", done >> 20, all >> 20,
				all ? (int)(done * 100 / all) : 0);
		}
		usleep(100 * 1000);
	}
	if (tty)
		fputs("\r\033[K", stderr);
	json_decref(req);
	if (rc < 0) {
		json_decref(st);
		return rc;
	}
	if (strcmp(json_string_value(json_object_get(st, "state")) ?: "", "done")) {
		json_object_set_new(st, "ok", json_false());
		if (!json_object_get(st, "error"))
			json_object_set_new(st, "error", json_string("live snapshot: no longer in progress"));
	} else {
		json_object_set_new(st, "pause_ms", json_real(pause_ms));
		json_object_set_new(st, "live", json_true());
	}
	json_decref(*reply);
	*reply = st;
	return 0;
}

static int snapshot_create_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "output", required_argument, NULL, 'o' },
		{ "live", no_argument, NULL, 'l' },
		{ "compress", no_argument, NULL, 'z' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL, *output = "text";
	char dir[PATH_MAX], err[512];
	json_t *req, *reply = NULL;
	struct vmctl c;
	int ch, rc;
	bool live = false, compress = false;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":s:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 's': sock = optarg; break;
		case 'o': output = optarg; break;
		case 'l': live = true; break;
		case 'z': compress = true; break;
		case 'h': fputs(snapshot_usage, stdout); return 0;
		default:
			log_error("snapshot create: %s %s (shoal snapshot help)", argv[optind - 1],
				  ch == ':' ? "needs a value" : "is not an option");
			return EXIT_USAGE;
		}
	}
	if (strcmp(output, "json") && strcmp(output, "text")) {
		log_error("--output: '%s' is not json or text", output);
		return EXIT_USAGE;
	}
	if (live && compress) {
		log_error("snapshot create: --live and --compress cannot go together (a live "
			  "snapshot writes memory in the order the guest touches it)");
		return EXIT_USAGE;
	}
	if (!sock || optind != argc - 1) {
		log_error("snapshot create: give --socket SOCK and one directory (shoal snapshot help)");
		return EXIT_USAGE;
	}
	if (absolute_dir(argv[optind], dir, sizeof(dir))) {
		log_error("%s: path too long", argv[optind]);
		return EXIT_USAGE;
	}
	if (vmctl_connect(&c, sock, 2000, err, sizeof(err)) < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_NOINPUT;
	}
	req = json_pack("{s:s, s:s, s:b}", "cmd", "snapshot", "dir", dir, "live", live);
	if (compress)
		json_object_set_new(req, "compress", json_true());
	rc = vmctl_request(&c, req, &reply, 600000, err, sizeof(err));
	json_decref(req);
	if (rc >= 0 && live && json_is_true(json_object_get(reply, "ok")))
		rc = wait_live(&c, &reply, err, sizeof(err));
	vmctl_close(&c);
	if (rc < 0) {
		log_error("%s: %s", sock, err);
		return EXIT_HOST;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		log_error("%s", json_string_value(json_object_get(reply, "error")) ?: "snapshot failed");
		json_decref(reply);
		return EXIT_HOST;
	}
	if (!strcmp(output, "json")) {
		json_object_del(reply, "ok");
		json_object_del(reply, "state");
		json_dumpf(reply, stdout, JSON_SORT_KEYS);
		putchar('\n');
	} else {
		printf("snapshot %s: paused %.1f ms, %.1f ms in all; memory %lld MiB, %lld MiB "
		       "written (zero pages are holes); state %lld bytes\n", dir,
		       json_real_value(json_object_get(reply, "pause_ms")),
		       json_real_value(json_object_get(reply, "total_ms")),
		       (long long)json_integer_value(json_object_get(reply, "memory_bytes")) >> 20,
		       (long long)json_integer_value(json_object_get(reply, "memory_data_bytes")) >> 20,
		       (long long)json_integer_value(json_object_get(reply, "state_bytes")));
		if (json_integer_value(json_object_get(reply, "memory_file_bytes")))
			printf("memory compressed (zstd): %lld MiB on disk\n",
			       (long long)json_integer_value(json_object_get(reply, "memory_file_bytes")) >> 20);
	}
	json_decref(reply);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "-h")) {
		fputs(snapshot_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "create"))
		return snapshot_create_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "list") || !strcmp(argv[1], "show") || !strcmp(argv[1], "delete"))
		return cmd_snapshot_api(argc, argv);
	if (!strcmp(argv[1], "push") || !strcmp(argv[1], "pull"))
		return cmd_snapshot_store(argc, argv);
	log_error("snapshot: unknown command '%s' (shoal snapshot help)", argv[1]);
	return EXIT_USAGE;
}
