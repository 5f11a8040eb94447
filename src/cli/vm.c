/*
 * vm.c - `shoal vm`: create, list, show, start, stop, pause, resume,
 * delete, snapshot, restore and clone VMs through shoald's API (docs/daemon.md).  Every verb is one
 * HTTP request (client.c); errors print the API's message and exit 1.
 * Read verbs print tables, or the API's JSON with --output json.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "base/exitcode.h"
#include "base/size.h"
#include "base/log.h"

static const char vm_usage[] =
"usage: shoal vm COMMAND [OPTIONS] [NAME]\n"
"\n"
"Manage VMs through the host daemon (shoald).\n"
"\n"
"  create -f FILE|- [--start] [--name NAME]   define a VM from a JSON spec\n"
"  list                                       all VMs: state, size, uptime\n"
"  show NAME                                  one VM, its spec and live figures\n"
"  start NAME                                 boot it\n"
"  stop NAME [--force] [--timeout S]          power button, then force after S s\n"
"  pause NAME | resume NAME\n"
"  delete NAME [--force]                      remove it (--force stops it first)\n"
"  snapshot NAME [--as SNAP] [--live]         save the running VM (default SNAP:\n"
"                                             NAME-YYYYmmdd-HHMMSS, UTC); it goes on\n"
"                                             (--live: paused only for its state)\n"
"  restore SNAP --name NEW [--tap TAP]...     a new VM NEW, started where SNAP was\n"
"                                             (--tap: its cards' TAPs, in order;\n"
"                                             shoal snapshot list|show|delete)\n"
"  clone SNAP --count N [--prefix P] [--tap-prefix T]\n"
"                                             N new VMs P-1..P-N (default P: SNAP)\n"
"                                             sharing SNAP's memory copy-on-write\n"
"                                             (--tap-prefix: clone i's card on TAP Ti)\n"
"  edit NAME -f FILE|- [--patch]              replace the spec of a VM that is not\n"
"                                             running (--patch: a JSON merge patch)\n"
"  disk add NAME --image P [--readonly] [--id ID]\n"
"                                             add a disk (a running VM: hot-plugged,\n"
"                                             and kept in its spec; --id: its serial)\n"
"  disk remove NAME ID|P [--timeout S]        remove it (a running VM's guest has S s,\n"
"                                             default 10, to release it)\n"
"  disk-add NAME --path P | disk-remove NAME --path P   the same, older spelling\n"
"  reboot NAME [--timeout S]                  power button, then start it again\n"
"  reset NAME                                 forced stop, then start it again\n"
"  balloon NAME --target SIZE                 how much memory the guest should give\n"
"                                             back through its balloon (docs/memory.md)\n"
"  migrate NAME --to URL                      move the running VM live to another\n"
"                                             shoald (shoal vm migrate --help)\n"
"\n"
"  -o, --output json     print the API's JSON instead of a table\n"
"      --socket PATH     shoald's socket (default $SHOAL_SOCKET, then\n"
"                        " CLIENT_DEFAULT_SOCKET ")\n"
"\n"
"The spec is the `shoal run --config` object plus \"name\" and \"restart\"\n"
"(no, on-failure, always); relative paths are taken from this directory.\n";

enum { OPT_SOCKET = 256, OPT_START, OPT_NAME, OPT_FORCE, OPT_TIMEOUT, OPT_AS, OPT_LIVE,
       OPT_COUNT, OPT_PREFIX, OPT_PATCH, OPT_PATH, OPT_READONLY };

enum { OPT_TARGET = 400 };              /* vm balloon */
enum { OPT_ID = 420 };                  /* vm disk add --id */
enum { OPT_TAP = 410, OPT_TAP_PREFIX }; /* vm restore, vm clone */
#define VM_TAPS_MAX 8                   /* the API's limit (RestoreRequest.taps) */

static const struct option vm_options[] = {
	{ "file", required_argument, NULL, 'f' },
	{ "output", required_argument, NULL, 'o' },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "start", no_argument, NULL, OPT_START },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "as", required_argument, NULL, OPT_AS },
	{ "live", no_argument, NULL, OPT_LIVE },
	{ "count", required_argument, NULL, OPT_COUNT },
	{ "prefix", required_argument, NULL, OPT_PREFIX },
	{ "patch", no_argument, NULL, OPT_PATCH },
	{ "path", required_argument, NULL, OPT_PATH },
	{ "image", required_argument, NULL, OPT_PATH },
	{ "id", required_argument, NULL, OPT_ID },
	{ "readonly", no_argument, NULL, OPT_READONLY },
	{ "target", required_argument, NULL, OPT_TARGET },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "tap-prefix", required_argument, NULL, OPT_TAP_PREFIX },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct vm_args {
	struct cli_common c;
	const char *file, *name_override, *as, *prefix, *path;
	const char *target;     /* vm balloon --target */
	const char *taps[VM_TAPS_MAX];  /* vm restore --tap, in order */
	size_t ntaps;
	const char *tap_prefix; /* vm clone --tap-prefix */
	bool start, force, live, patch, readonly;
	long count;             /* vm clone --count; 0: not given */
	long timeout;           /* -1: the daemon's default */
	const char *name;       /* positional */
	const char *id;         /* vm disk add --id; vm disk remove's ID|P */
};

/* ---- printing ---- */

/* One line of `vm list`. */
static void vm_print_row(json_t *v)
{
	char mem[32], up[32], pid[16] = "-", last[96] = "-";
	json_t *u = json_object_get(v, "uptime_s"), *x = json_object_get(v, "last_exit");
	const char *busy = json_string_value(json_object_get(v, "busy"));

	cli_fmt_size(json_integer_value(json_object_get(v, "memory")), mem, sizeof(mem));
	cli_fmt_duration(json_is_number(u) ? json_number_value(u) : -1, up, sizeof(up));
	if (json_is_integer(json_object_get(v, "pid")))
		snprintf(pid, sizeof(pid), "%lld", (long long)json_integer_value(json_object_get(v, "pid")));
	if (json_is_object(x))
		snprintf(last, sizeof(last), "%lld: %s",
			 (long long)json_integer_value(json_object_get(x, "status")),
			 json_string_value(json_object_get(x, "reason")) ?: "");
	printf("%-20s %-9s%s %4lld %7s %9s %8s  %s\n",
	       json_string_value(json_object_get(v, "name")),
	       json_string_value(json_object_get(v, "state")), busy ? "*" : " ",
	       (long long)json_integer_value(json_object_get(v, "cpus")), mem, up, pid, last);
}

/* The `vm list` table. */
static int vm_print_list(json_t *j)
{
	json_t *v;
	size_t i;

	printf("%-20s %-10s %4s %7s %9s %8s  %s\n", "NAME", "STATE", "CPUS", "MEMORY",
	       "UPTIME", "PID", "LAST EXIT");
	json_array_foreach(json_object_get(j, "vms"), i, v)
		vm_print_row(v);
	return 0;
}

/* The balloon's line of `vm show`, and the guest's own figures when its
 * driver reported any (docs/memory.md). */
static void vm_print_balloon(json_t *b)
{
	json_t *st = json_object_get(b, "stats");
	char t[32], a[32], r[32], fr[32], tot[32];

	if (!json_is_object(b))
		return;
	cli_fmt_size(json_integer_value(json_object_get(b, "target_bytes")), t, sizeof(t));
	cli_fmt_size(json_integer_value(json_object_get(b, "actual_bytes")), a, sizeof(a));
	cli_fmt_size(json_integer_value(json_object_get(b, "released_bytes")), r, sizeof(r));
	printf("balloon:    target %s, holds %s, %s given back to the host\n", t, a, r);
	if (json_is_integer(json_object_get(st, "free_memory")) &&
	    json_is_integer(json_object_get(st, "total_memory"))) {
		cli_fmt_size(json_integer_value(json_object_get(st, "free_memory")), fr, sizeof(fr));
		cli_fmt_size(json_integer_value(json_object_get(st, "total_memory")), tot, sizeof(tot));
		printf("guest mem:  %s free of %s (its balloon driver's figures, %lld ms old)\n", fr,
		       tot, (long long)json_integer_value(json_object_get(b, "stats_age_ms")));
	}
}

/* The memory manager's line of `vm show` (shoald --memory-budget). */
static void vm_print_memmgr(json_t *m)
{
	json_t *f = json_object_get(m, "active_fraction");
	char a[32], t[32];

	if (!json_is_object(m))
		return;
	cli_fmt_size(json_integer_value(json_object_get(m, "allocation_bytes")), a, sizeof(a));
	cli_fmt_size(json_integer_value(json_object_get(m, "balloon_target_bytes")), t, sizeof(t));
	printf("memory mgr: allocation %s (balloon target %s), %lld shares, ", a, t,
	       (long long)json_integer_value(json_object_get(m, "shares")));
	if (json_is_number(f))
		printf("active %.1f %%, ", 100 * json_number_value(f));
	else
		printf("active not sampled yet, ");
	printf("rho %.3g\n", json_number_value(json_object_get(m, "rho")));
}

/* `vm show` as "key: value" lines. */
static int vm_print_show(json_t *j)
{
	json_t *x = json_object_get(j, "last_exit"), *st = json_object_get(j, "stats");
	char *spec = json_dumps(json_object_get(j, "spec"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	char mem[32], up[32];
	json_t *u = json_object_get(j, "uptime_s");

	cli_fmt_size(json_integer_value(json_object_get(j, "memory")), mem, sizeof(mem));
	cli_fmt_duration(json_is_number(u) ? json_number_value(u) : -1, up, sizeof(up));
	printf("name:       %s\n", json_string_value(json_object_get(j, "name")));
	printf("state:      %s%s\n", json_string_value(json_object_get(j, "state")),
	       json_is_true(json_object_get(j, "in_doubt")) ? " (in doubt: came in by a migration "
	       "whose source's go-ahead never came; resume it if the source's copy stopped, "
	       "else delete it)" : "");
	printf("cpus:       %lld\nmemory:     %s\n",
	       (long long)json_integer_value(json_object_get(j, "cpus")), mem);
	printf("restart:    %s (%lld restarts)\n", json_string_value(json_object_get(j, "restart")),
	       (long long)json_integer_value(json_object_get(j, "restarts")));
	if (json_is_string(json_object_get(j, "restored_from")))
		printf("restored:   from snapshot %s%s\n",
		       json_string_value(json_object_get(j, "restored_from")),
		       json_is_true(json_object_get(j, "clone")) ? " (a clone)" : "");
	if (json_is_integer(json_object_get(j, "pid")))
		printf("pid:        %lld\n", (long long)json_integer_value(json_object_get(j, "pid")));
	printf("created:    %s\n", json_string_value(json_object_get(j, "created_at")) ?: "-");
	printf("started:    %s\nuptime:     %s\n",
	       json_string_value(json_object_get(j, "started_at")) ?: "-", up);
	if (json_is_object(x))
		printf("last exit:  status %lld, %s (%s)\n",
		       (long long)json_integer_value(json_object_get(x, "status")),
		       json_string_value(json_object_get(x, "reason")) ?: "",
		       json_string_value(json_object_get(x, "at")) ?: "");
	if (json_is_object(st)) {
		cli_fmt_size(json_integer_value(json_object_get(st, "rss_bytes")), mem, sizeof(mem));
		printf("vcpu time:  %.3f s\nexits:      %lld\nresident:   %s\n",
		       (double)json_integer_value(json_object_get(st, "vcpu_time_ns")) / 1e9,
		       (long long)json_integer_value(json_object_get(st, "exits")), mem);
		vm_print_balloon(json_object_get(st, "balloon"));
		vm_print_memmgr(json_object_get(st, "memory_manager"));
	}
	printf("spec:       %s\n", spec ? spec : "{}");
	free(spec);
	return 0;
}

/* ---- create ---- */

/* Make a relative path in spec[key] absolute against the working directory. */
static void vm_absolute(json_t *spec, const char *key, const char *prefix)
{
	const char *v = json_string_value(json_object_get(spec, key));
	char cwd[PATH_MAX], buf[PATH_MAX * 2 + 16];
	size_t pl = strlen(prefix);

	if (!v || strncmp(v, prefix, pl) || v[pl] == '/' || !v[pl] || !getcwd(cwd, sizeof(cwd)))
		return;
	snprintf(buf, sizeof(buf), "%s%s/%s", prefix, cwd, v + pl);
	json_object_set_new(spec, key, json_string(buf));
}

/* The virtio console's ",in=PATH" made absolute; its output file and the
 * serial console's are names inside the VM's directory on the daemon's
 * side, so they stay as they are. */
static void vm_absolute_vconsole_in(json_t *spec)
{
	const char *v = json_string_value(json_object_get(spec, "virtio_console"));
	const char *in = v ? strstr(v, ",in=") : NULL;
	char cwd[PATH_MAX], buf[PATH_MAX * 3];

	if (!in || in[4] == '/' || !in[4] || !getcwd(cwd, sizeof(cwd)))
		return;
	snprintf(buf, sizeof(buf), "%.*s,in=%s/%s", (int)(in - v), v, cwd, in + 4);
	json_object_set_new(spec, "virtio_console", json_string(buf));
}

/* Read the spec file (or stdin), fix paths and name, as JSON text. */
static char *vm_read_spec(const struct vm_args *a, struct error *e)
{
	json_error_t jerr;
	json_t *spec;
	char *text;

	spec = !strcmp(a->file, "-") ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr) :
				       json_load_file(a->file, JSON_REJECT_DUPLICATES, &jerr);
	if (!spec) {
		error_set(e, EXIT_USAGE, "%s: line %d: %s", a->file, jerr.line, jerr.text);
		return NULL;
	}
	if (json_is_object(spec)) {
		vm_absolute(spec, "kernel", "");
		vm_absolute(spec, "initrd", "");
		vm_absolute_vconsole_in(spec);
		if (json_is_object(json_object_get(spec, "vsock")))
			vm_absolute(json_object_get(spec, "vsock"), "socket", "");
		json_t *d;
		size_t i;
		json_array_foreach(json_object_get(spec, "disks"), i, d)
			vm_absolute(d, "path", "");
		if (a->name_override)
			json_object_set_new(spec, "name", json_string(a->name_override));
	}
	text = json_dumps(spec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(spec);
	return text;
}

/* One request with a JSON text body (or none).  Prints the API's error, or
 * with --output json its answer; else *out gets the parsed answer (an empty
 * object for a 204) for the caller to print.  Returns the exit status. */
static int vm_call_text(const struct vm_args *a, const char *method, const char *path,
			const char *text, json_t **out)
{
	struct client_resp r;
	struct error e;
	int rc;

	*out = NULL;
	if (client_request(a->c.socket, method, path, text, text ? strlen(text) : 0, &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = cli_print_result(&a->c, &r, NULL);
	if (!rc && !a->c.json) {
		*out = r.len ? json_loadb(r.body, r.len, 0, NULL) : json_object();
		if (!*out)
			*out = json_object();
	}
	client_resp_free(&r);
	return rc;
}

/* The same with a JSON body (taken; NULL for none). */
static int vm_call(const struct vm_args *a, const char *method, const char *path, json_t *body,
		   json_t **out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int rc;

	json_decref(body);
	rc = vm_call_text(a, method, path, text, out);
	free(text);
	return rc;
}

static const char *jstr(json_t *j, const char *key)
{
	return json_string_value(json_object_get(j, key)) ?: "?";
}

/* `vm create`: read the spec, POST it (with ?start=true for --start). */
static int vm_create(const struct vm_args *a)
{
	struct error e;
	json_t *j;
	char *spec;
	int rc;

	if (!a->file) {
		log_error("vm create: -f FILE (or -f - for stdin) is required");
		return EXIT_USAGE;
	}
	spec = vm_read_spec(a, &e);
	if (!spec) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = vm_call_text(a, "POST", a->start ? "/v1/vms?start=true" : "/v1/vms", spec, &j);
	free(spec);
	if (j)
		printf("%s: %s\n", jstr(j, "name"), jstr(j, "state"));
	json_decref(j);
	return rc;
}

/* ---- the others ---- */

/* POST /v1/vms/NAME/ACTION, printing "NAME: state". */
static int vm_action(const struct vm_args *a, const char *action)
{
	char path[256];
	json_t *body = NULL, *j;
	int rc;

	snprintf(path, sizeof(path), "/v1/vms/%s/%s", a->name, action);
	if (!strcmp(action, "stop") || !strcmp(action, "reboot")) {
		body = json_pack("{s:s}", "mode", a->force ? "force" : "graceful");
		if (a->timeout >= 0)
			json_object_set_new(body, "timeout_s", json_integer(a->timeout));
	}
	rc = vm_call(a, "POST", path, body, &j);
	if (j)
		printf("%s: %s\n", a->name, jstr(j, "state"));
	json_decref(j);
	return rc;
}

/* `vm edit NAME -f FILE [--patch]`: PUT (or PATCH) /v1/vms/NAME. */
static int vm_edit(const struct vm_args *a)
{
	char path[256], *spec;
	struct error e;
	json_t *j;
	int rc;

	if (!a->file) {
		log_error("vm edit %s: -f FILE (or -f - for stdin) is required", a->name);
		return EXIT_USAGE;
	}
	spec = vm_read_spec(a, &e);
	if (!spec) {
		log_error("%s", e.msg);
		return e.status;
	}
	snprintf(path, sizeof(path), "/v1/vms/%s", a->name);
	rc = vm_call_text(a, a->patch ? "PATCH" : "PUT", path, spec, &j);
	free(spec);
	if (j)
		printf("%s: edited\n", a->name);
	json_decref(j);
	return rc;
}

/* `vm disk add NAME --image P [--readonly] [--id ID]` (disk-add --path P):
 * POST /v1/vms/NAME/disks; `vm disk remove NAME ID|P [--timeout S]`
 * (disk-remove --path P): DELETE /v1/vms/NAME/disks?id=ID or ?path=P.  A
 * running VM gets the disk hot-plugged (docs/daemon.md). */
static int vm_disk(const struct vm_args *a, bool add)
{
	char path[PATH_MAX * 3 + 400], abs[PATH_MAX * 2], cwd[PATH_MAX], q[PATH_MAX * 3];
	const char *file = a->path;
	json_t *body = NULL, *j;
	int rc;

	/* remove's ID|P: a file that is there is a path, else an id */
	if (!add && !file && a->id && access(a->id, F_OK) == 0)
		file = a->id;
	if (add ? !file : !file && !a->id) {
		log_error("vm disk %s %s: %s", add ? "add" : "remove", a->name,
			  add ? "--image P names the disk's image" : "which disk? (ID or its image)");
		return EXIT_USAGE;
	}
	if (file && file[0] != '/' && getcwd(cwd, sizeof(cwd)))
		snprintf(abs, sizeof(abs), "%s/%s", cwd, file);
	else
		snprintf(abs, sizeof(abs), "%s", file ? file : a->id);
	if (add) {
		body = json_pack("{s:s}", "path", abs);
		if (a->readonly)
			json_object_set_new(body, "readonly", json_true());
		if (a->id)
			json_object_set_new(body, "serial", json_string(a->id));
		snprintf(path, sizeof(path), "/v1/vms/%s/disks", a->name);
	} else {
		int n;

		client_urlencode(abs, q, sizeof(q));
		n = snprintf(path, sizeof(path), "/v1/vms/%s/disks?%s=%s", a->name,
			     file ? "path" : "id", q);
		if (a->timeout >= 0 && n > 0 && (size_t)n < sizeof(path))
			snprintf(path + n, sizeof(path) - (size_t)n, "&timeout_s=%ld", a->timeout);
	}
	rc = vm_call(a, add ? "POST" : "DELETE", path, body, &j);
	if (j)
		printf("%s: disk %s %s%s\n", a->name, abs, add ? "added" : "removed",
		       json_is_string(json_object_get(j, "state")) &&
		       !strcmp(json_string_value(json_object_get(j, "state")), "running") ?
		       (add ? " (hot-plugged)" : " (the guest released it)") : "");
	json_decref(j);
	return rc;
}

/* `vm delete`: 204 is success. */
static int vm_delete(const struct vm_args *a)
{
	char path[256];
	json_t *j;
	int rc;

	snprintf(path, sizeof(path), "/v1/vms/%s%s", a->name, a->force ? "?force=true" : "");
	rc = vm_call(a, "DELETE", path, NULL, &j);
	if (j)
		printf("%s: deleted\n", a->name);
	json_decref(j);
	return rc;
}

/* `vm snapshot NAME [--as SNAP] [--live]`: POST /v1/vms/NAME/snapshot. */
static int vm_snapshot(const struct vm_args *a)
{
	char path[256], size[32], mem[32];
	json_t *body = a->as || a->live ? json_object() : NULL, *j;
	int rc;

	if (a->as)
		json_object_set_new(body, "name", json_string(a->as));
	if (a->live)
		json_object_set_new(body, "live", json_true());
	snprintf(path, sizeof(path), "/v1/vms/%s/snapshot", a->name);
	rc = vm_call(a, "POST", path, body, &j);
	if (j) {
		cli_fmt_size(json_integer_value(json_object_get(j, "size_bytes")), size, sizeof(size));
		cli_fmt_size(json_integer_value(json_object_get(j, "memory_bytes")), mem, sizeof(mem));
		printf("%s: snapshot %s taken%s: paused %.1f ms; memory %s, %s on disk\n", a->name,
		       jstr(j, "name"), a->live ? " live" : "",
		       json_number_value(json_object_get(j, "pause_ms")), mem, size);
	}
	json_decref(j);
	return rc;
}

/* `vm balloon NAME --target SIZE`: POST /v1/vms/NAME/balloon. */
static int vm_balloon(const struct vm_args *a)
{
	char path[256], target[32], actual[32];
	uint64_t bytes;
	json_t *j;
	int rc;

	if (!a->target) {
		log_error("vm balloon: --target SIZE is required (shoal vm balloon NAME --target 512M)");
		return EXIT_USAGE;
	}
	if (size_parse(a->target, &bytes)) {
		log_error("--target %s: expected a size such as 512M (a bare number is bytes)", a->target);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/v1/vms/%s/balloon", a->name);
	rc = vm_call(a, "POST", path, json_pack("{s:I}", "target", (json_int_t)bytes), &j);
	if (j) {
		cli_fmt_size(json_integer_value(json_object_get(j, "target_bytes")), target, sizeof(target));
		cli_fmt_size(json_integer_value(json_object_get(j, "actual_bytes")), actual, sizeof(actual));
		printf("%s: balloon target %s (the guest holds %s now)\n", a->name, target, actual);
	}
	json_decref(j);
	return rc;
}

/* `vm restore SNAP --name NEW`: POST /v1/snapshots/SNAP/restore. */
static int vm_restore(const struct vm_args *a)
{
	char path[256];
	json_t *body, *j;
	int rc;

	if (!a->name_override) {
		log_error("vm restore %s: --name NEW is required (the new VM's name)", a->name);
		return EXIT_USAGE;
	}
	body = json_pack("{s:s}", "name", a->name_override);
	if (a->ntaps) {
		json_t *taps = json_array();

		for (size_t i = 0; i < a->ntaps; i++)
			json_array_append_new(taps, json_string(a->taps[i]));
		json_object_set_new(body, "taps", taps);
	}
	snprintf(path, sizeof(path), "/v1/snapshots/%s/restore", a->name);
	rc = vm_call(a, "POST", path, body, &j);
	if (j)
		printf("%s: %s (restored from %s)\n", a->name_override, jstr(j, "state"), a->name);
	json_decref(j);
	return rc;
}

/* `vm clone SNAP --count N [--prefix P]`: POST /v1/snapshots/SNAP/clone. */
static int vm_clone(const struct vm_args *a)
{
	char path[256];
	json_t *body, *j, *v;
	size_t i;
	int rc;

	if (!a->count) {
		log_error("vm clone %s: --count N is required (how many clones)", a->name);
		return EXIT_USAGE;
	}
	body = json_pack("{s:I}", "count", (json_int_t)a->count);
	if (a->prefix)
		json_object_set_new(body, "prefix", json_string(a->prefix));
	if (a->tap_prefix)
		json_object_set_new(body, "tap_prefix", json_string(a->tap_prefix));
	snprintf(path, sizeof(path), "/v1/snapshots/%s/clone", a->name);
	rc = vm_call(a, "POST", path, body, &j);
	json_array_foreach(json_object_get(j, "vms"), i, v)
		printf("%s: %s (clone of %s)\n", jstr(v, "name"), jstr(v, "state"), a->name);
	json_decref(j);
	return rc;
}

/* GET path and print it with `print` (or as JSON). */
static int vm_get(const struct vm_args *a, const char *path, int (*print)(json_t *))
{
	struct client_resp r;
	struct error e;
	int rc;

	if (client_request(a->c.socket, "GET", path, NULL, 0, &r, &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	rc = cli_print_result(&a->c, &r, print);
	client_resp_free(&r);
	return rc;
}

/* Options shared by the vm subcommands, and the VM name. */
static int vm_parse(int argc, char **argv, struct vm_args *a, bool remove_arg)
{
	int c;

	memset(a, 0, sizeof(*a));
	a->timeout = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:o:h", vm_options, NULL)) != -1) {
		switch (c) {
		case 'f': a->file = optarg; break;
		case 'o': if (cli_set_output(&a->c, optarg)) return EXIT_USAGE; break;
		case OPT_SOCKET: a->c.socket = optarg; break;
		case OPT_START: a->start = true; break;
		case OPT_NAME: a->name_override = optarg; break;
		case OPT_AS: a->as = optarg; break;
		case OPT_LIVE: a->live = true; break;
		case OPT_PREFIX: a->prefix = optarg; break;
		case OPT_PATCH: a->patch = true; break;
		case OPT_PATH: a->path = optarg; break;
		case OPT_READONLY: a->readonly = true; break;
		case OPT_ID: a->id = optarg; break;
		case OPT_TARGET: a->target = optarg; break;
		case OPT_TAP:
			if (a->ntaps == VM_TAPS_MAX) {
				log_error("--tap %s: at most %d TAPs, one per network card", optarg,
					  VM_TAPS_MAX);
				return EXIT_USAGE;
			}
			a->taps[a->ntaps++] = optarg;
			break;
		case OPT_TAP_PREFIX: a->tap_prefix = optarg; break;
		case OPT_COUNT: {
			char *end;

			a->count = strtol(optarg, &end, 10);
			if (!*optarg || *end || a->count < 1 || a->count > 1000000) {
				log_error("--count %s: expected a number of clones, 1 or more", optarg);
				return EXIT_USAGE;
			}
			break;
		}
		case OPT_FORCE: a->force = true; break;
		case OPT_TIMEOUT:
			a->timeout = strtol(optarg, NULL, 10);
			if (a->timeout < 0 || a->timeout > 3600 || !*optarg) {
				log_error("--timeout %s: expected seconds from 0 to 3600", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h': fputs(vm_usage, stdout); exit(0);
		default: fputs(vm_usage, stderr); return EXIT_USAGE;
		}
	}
	a->c.socket = client_socket(a->c.socket);
	if (optind < argc)
		a->name = argv[optind++];
	if (optind < argc && remove_arg && !a->id && !a->path)  /* vm disk remove NAME ID|P */
		a->id = argv[optind++];
	if (optind < argc) {
		log_error("vm: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	return 0;
}

/* `shoal vm SUBCOMMAND`: dispatch. */
int cmd_vm(int argc, char **argv)
{
	static const char *const actions[] = { "start", "stop", "pause", "resume", "reboot", "reset" };
	const char *sub = argc > 1 ? argv[1] : NULL;
	char path[256];
	struct vm_args a;
	int rc;

	if (!sub || !strcmp(sub, "help") || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		fputs(vm_usage, sub ? stdout : stderr);
		return sub ? 0 : EXIT_USAGE;
	}
	if (!strcmp(sub, "migrate"))            /* options of its own: vm_migrate.c */
		return cmd_vm_migrate(argc - 1, argv + 1);
	if (!strcmp(sub, "disk") && argc > 2 && (!strcmp(argv[2], "add") ||
						 !strcmp(argv[2], "remove"))) {
		sub = !strcmp(argv[2], "add") ? "disk-add" : "disk-remove";   /* vm disk add|remove */
		argc--;
		argv++;
	}
	rc = vm_parse(argc - 1, argv + 1, &a, !strcmp(sub, "disk-remove"));
	if (rc)
		return rc;
	if (!strcmp(sub, "create"))
		return vm_create(&a);
	if (!strcmp(sub, "list"))
		return vm_get(&a, "/v1/vms", vm_print_list);
	if (a.ntaps && strcmp(sub, "restore")) {
		log_error("vm %s: --tap is for vm restore (the new VM's TAPs)", sub);
		return EXIT_USAGE;
	}
	if (a.tap_prefix && strcmp(sub, "clone")) {
		log_error("vm %s: --tap-prefix is for vm clone", sub);
		return EXIT_USAGE;
	}
	if (!a.name && !strcmp(sub, "restore")) {
		log_error("vm restore: which snapshot? (shoal vm restore SNAP --name NEW)");
		return EXIT_USAGE;
	}
	if (!a.name && !strcmp(sub, "clone")) {
		log_error("vm clone: which snapshot? (shoal vm clone SNAP --count N)");
		return EXIT_USAGE;
	}
	if (!a.name) {
		log_error("vm %s: which VM? (shoal vm %s NAME)", sub, sub);
		return EXIT_USAGE;
	}
	if (!strcmp(sub, "show")) {
		snprintf(path, sizeof(path), "/v1/vms/%s", a.name);
		return vm_get(&a, path, vm_print_show);
	}
	if (!strcmp(sub, "delete"))
		return vm_delete(&a);
	if (!strcmp(sub, "snapshot"))
		return vm_snapshot(&a);
	if (!strcmp(sub, "restore"))
		return vm_restore(&a);
	if (!strcmp(sub, "clone"))
		return vm_clone(&a);
	if (!strcmp(sub, "edit"))
		return vm_edit(&a);
	if (!strcmp(sub, "balloon"))
		return vm_balloon(&a);
	if (!strcmp(sub, "disk-add") || !strcmp(sub, "disk-remove"))
		return vm_disk(&a, !strcmp(sub, "disk-add"));
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		if (!strcmp(sub, actions[i]))
			return vm_action(&a, actions[i]);
	log_error("vm: '%s' is not a vm command (shoal vm help)", sub);
	return EXIT_USAGE;
}
