/*
 * store.c - `shoal store`: the image store (src/store/, docs/store.md).
 *
 *   shoal store init DIR
 *   shoal store add DIR IMAGE [--name NAME] [-f raw|qcow2]   (alias: import)
 *   shoal store get DIR NAME OUT [--format raw|qcow2]         (alias: export)
 *   shoal store ls DIR [--output json]
 *   shoal store du DIR [--output json]
 *   shoal store rm DIR NAME
 *   shoal store gc DIR [--output json]
 *   shoal store verify DIR [--output json]
 *   shoal store serve DIR --listen HOST:PORT --cert F --key F --client-ca F
 *   shoal store grant|revoke DIR CLIENT IMAGE [--vm VMKEY]
 *   shoal store keygen FILE;  shoal store vm-proof VMKEY --client CERT|FP
 *   shoal store push DIR NAME --to DIR2
 *   shoal store grants DIR [--output json]
 *   shoal store pull DIR NAME --from https://HOST:PORT --cert F --key F --ca F
 *   shoal store import-snapshot DIR SNAPDIR --name NAME [--output json]
 *   shoal store export-snapshot DIR NAME OUTDIR
 *   shoal store pull-snapshot DIR NAME --from https://HOST:PORT --cert F --key F --ca F
 *
 * Images are read through the block layer, so a qcow2 chain goes in as the
 * guest sees it.  This file parses, prints and maps errors to exit
 * statuses; every error is one line naming the thing and the reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "block/qcow2.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "store/chain.h"
#include "store/grants.h"
#include "store/vmkey.h"
#include "store/pull.h"
#include "store/push.h"
#include "store/serve.h"
#include "store/snapobj.h"
#include "store/store.h"

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "shoal: store: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see `shoal store help`)\n");
	return EXIT_USAGE;
}

static int fail(struct error *e)
{
	fprintf(stderr, "shoal: %s\n", e->msg);
	return e->status ? e->status : EXIT_HOST;
}

/* Parse the options every subcommand shares: --name, --output, --format,
 * -f; the positional arguments go to pos[]. */
struct sargs {
	const char *name, *output, *format, *infmt, *vm;
	bool chain;
	const char *pos[4];
	int npos;
};

static int parse(int argc, char **argv, struct sargs *a, int want)
{
	static const struct option lo[] = { { "name", required_argument, 0, 'n' },
					    { "output", required_argument, 0, 'o' },
					    { "format", required_argument, 0, 'O' },
					    { "vm", required_argument, 0, 'v' },
					    { "chain", no_argument, 0, 'c' },
					    { "help", no_argument, 0, 'h' },
					    { 0 } };
	int c;

	memset(a, 0, sizeof(*a));
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:O:h", lo, NULL)) != -1) {
		switch (c) {
		case 'n': a->name = optarg; break;
		case 'o': a->output = optarg; break;
		case 'O': a->format = optarg; break;
		case 'f': a->infmt = optarg; break;
		case 'v': a->vm = optarg; break;
		case 'c': a->chain = true; break;
		default: return usage("%s: bad option", argv[0]);
		}
	}
	for (; optind < argc; optind++) {
		if (a->npos == 4)
			return usage("%s: too many arguments", argv[0]);
		a->pos[a->npos++] = argv[optind];
	}
	if (a->npos != want)
		return usage("%s: wrong number of arguments", argv[0]);
	if (a->output && strcmp(a->output, "json") && strcmp(a->output, "human"))
		return usage("--output %s: json or human", a->output);
	if (a->vm && strcmp(argv[0], "grant") && strcmp(argv[0], "revoke"))
		return usage("%s: --vm is for grant and revoke", argv[0]);
	if (a->chain && strcmp(argv[0], "add") && strcmp(argv[0], "import") && strcmp(argv[0], "get") &&
	    strcmp(argv[0], "export") && strcmp(argv[0], "export-snapshot"))
		return usage("%s: --chain is for add, get and export-snapshot", argv[0]);
	return 0;
}

static bool json_out(const struct sargs *a)
{
	return a->output && !strcmp(a->output, "json");
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void progress(void *opaque, uint64_t done, uint64_t total)
{
	img_progress(true, done, total);
}

static int s_init(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_init(a.pos[0], NULL, &e))
		return fail(&e);
	return 0;
}

/* add --chain: the layers under bd that carry a chain identity and are
 * not in the store yet go in first, bottom up, each named after its file
 * and read as the guest would see that layer, so that each image's parent
 * is the one below (store.c links an image to the image of its backing
 * file's identity). */
static int add_lower_layers(struct store *s, struct blockdev *top, const char *top_name, json_t *layers,
			    struct error *e)
{
	struct blockdev *layer[33];
	int n = 0;

	for (struct blockdev *b = top->backing; b && n < 33; b = b->backing)
		layer[n++] = b;
	for (int i = n - 1; i >= 0; i--) {
		char id[37], have[65], nb[4096], *name;
		uint64_t gen;
		bool cur;
		struct blockdev *bd;
		struct store_add_stats st;
		int rc;

		if (blockdev_chain_id(layer[i], id, &gen, &cur) || !cur) {
			fprintf(stderr, "shoal: %s: no chain identity (%s): the chain is kept from the layer above it\n",
				layer[i]->path, layer[i]->format == BD_FMT_QCOW2 ? "made by another program, or "
				"written by one since" : "a raw image");
			continue;
		}
		if (!store_find_identity(s, id, gen, have)) {
			if (layers)
				json_array_append_new(layers, json_pack("{s:s, s:s, s:b}", "file", layer[i]->path,
									 "name", have, "added", 0));
			else
				printf("%s: in the store already as '%s'\n", layer[i]->path, have);
			continue;
		}
		snprintf(nb, sizeof(nb), "%s", layer[i]->path);
		name = basename(nb);
		if (!strcmp(name, top_name) || store_name_check(name, NULL) || store_name_free(s, name, NULL))
			return error_set(e, EXIT_USAGE, "%s: cannot keep the chain: the name '%s' is taken or not "
					 "an image name (add this layer first: shoal store add %s %s --chain --name OTHER)",
					 layer[i]->path, name, store_dir(s), layer[i]->path);
		rc = img_open(&bd, layer[i]->path, "qcow2", IMG_CONSISTENT);
		if (rc)
			return error_set(e, rc, "%s: cannot open this layer by itself", layer[i]->path);
		rc = store_add(s, bd, name, &st, isatty(2) ? progress : NULL, NULL, e);
		blockdev_close(bd);
		if (rc)
			return -1;
		if (layers)
			json_array_append_new(layers, json_pack("{s:s, s:s, s:b, s:I}", "file", layer[i]->path, "name",
								 name, "added", 1, "new_bytes", (json_int_t)st.new_bytes));
		else
			printf("%s: added as '%s' (a layer of the chain: %llu new bytes)\n", layer[i]->path, name,
			       (unsigned long long)st.new_bytes);
	}
	return 0;
}

static int s_add(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct blockdev *bd;
	struct store_add_stats st;
	struct stat sb;
	char namebuf[256];
	int rc = parse(argc, argv, &a, 2);

	if (rc)
		return rc;
	if (!a.name) {
		snprintf(namebuf, sizeof(namebuf), "%s", a.pos[1]);
		a.name = basename(namebuf);
	}
	if (store_name_check(a.name, &e))
		return fail(&e);
	if (stat(a.pos[1], &sb))
		return fprintf(stderr, "shoal: %s: %s\n", a.pos[1], strerror(errno)), EXIT_NOINPUT;
	if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode))
		return fprintf(stderr, "shoal: %s: not a disk image (not a regular file or block device)\n",
			       a.pos[1]), EXIT_NOINPUT;
	if (store_open(&s, a.pos[0], true, &e))
		return fail(&e);
	rc = img_open(&bd, a.pos[1], a.infmt, IMG_CONSISTENT);
	if (rc) {
		store_close(s);
		return rc;
	}
	/* A probed raw image is any file: take it only if it looks like a
	 * disk (whole 512-byte sectors); -f raw takes any file. */
	if (!a.infmt && bd->format == BD_FMT_RAW && (bd->size == 0 || bd->size % 512)) {
		fprintf(stderr, "shoal: %s: not a disk image (%llu bytes is no whole number of 512-byte sectors; -f raw takes it anyway)\n",
			a.pos[1], (unsigned long long)bd->size);
		blockdev_close(bd);
		store_close(s);
		return EXIT_NOINPUT;
	}
	json_t *layers = a.chain && json_out(&a) ? json_array() : NULL;

	rc = a.chain ? add_lower_layers(s, bd, a.name, layers, &e) : 0;
	if (!rc)
		rc = store_add(s, bd, a.name, &st, isatty(2) ? progress : NULL, NULL, &e);
	blockdev_close(bd);
	store_close(s);
	if (rc) {
		json_decref(layers);
		return fail(&e);
	}
	if (json_out(&a))
		print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o?}", "name", a.name, "size",
				     (json_int_t)st.image_bytes, "chunks", (json_int_t)st.chunks,
				     "zero_chunks", (json_int_t)st.zero_chunks, "new_chunks",
				     (json_int_t)st.new_chunks, "new_bytes", (json_int_t)st.new_bytes,
				     "stored_bytes", (json_int_t)st.stored_bytes, "layers", layers));
	else
		printf("%s: %llu bytes, %llu chunks (%llu zero), %llu new chunks, %llu new bytes, %llu stored after compression\n",
		       a.name, (unsigned long long)st.image_bytes, (unsigned long long)st.chunks,
		       (unsigned long long)st.zero_chunks, (unsigned long long)st.new_chunks,
		       (unsigned long long)st.new_bytes, (unsigned long long)st.stored_bytes);
	return 0;
}

/* get's output: a raw file or a new qcow2 image. */
struct out {
	const char *path, *format;
	int fd;
	struct blockdev *bd;
};

static int out_sized(void *opaque, uint64_t size, const char *format, struct error *e)
{
	struct out *o = opaque;

	if (!strcmp(o->format, "qcow2")) {
		struct qcow2_create_opts q = { .size = size, .chain_id = true };
		struct blockdev_opts bo = { .format = BD_FMT_QCOW2, .caller_reports = true };

		if (qcow2_create(o->path, &q, e) || blockdev_open(&o->bd, o->path, &bo, e))
			return -1;
		return 0;
	}
	o->fd = open(o->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->fd < 0)
		return error_set(e, EXIT_HOST, "%s: %s", o->path, strerror(errno));
	if (ftruncate(o->fd, (off_t)size))
		return error_set(e, EXIT_HOST, "%s: %s", o->path, strerror(errno));
	return 0;
}

static int out_write(void *opaque, const void *buf, uint64_t off, uint64_t len, struct error *e)
{
	struct out *o = opaque;

	if (o->bd) {
		int r = blockdev_write(o->bd, buf, off, len);

		return r ? error_set(e, EXIT_HOST, "%s: write: %s", o->path, strerror(-r)) : 0;
	}
	if (pwrite(o->fd, buf, len, (off_t)off) != (ssize_t)len)
		return error_set(e, EXIT_HOST, "%s: write: %s", o->path, strerror(errno));
	return 0;
}

/* get --chain's lines (store/chain.c). */
static void say_line(void *opaque, const char *line)
{
	(void)opaque;
	printf("%s\n", line);
}

static int s_get(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct out o = { .fd = -1 };
	uint64_t size;
	int rc = parse(argc, argv, &a, 3);

	if (rc)
		return rc;
	if (a.chain) {
		if (a.format && strcmp(a.format, "qcow2"))
			return usage("get --chain: the chain is written as qcow2 images (--format qcow2)");
		if (!access(a.pos[2], F_OK))
			return fprintf(stderr, "shoal: %s: already there (get writes a new file)\n", a.pos[2]), EXIT_USAGE;
		if (store_open(&s, a.pos[0], false, &e))
			return fail(&e);
		rc = store_get_chain(s, a.pos[1], a.pos[2], say_line, NULL, &e);
		store_close(s);
		return rc ? fail(&e) : 0;
	}
	o.path = a.pos[2];
	o.format = a.format ? a.format : "raw";
	if (strcmp(o.format, "raw") && strcmp(o.format, "qcow2"))
		return usage("--format %s: raw or qcow2", o.format);
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_get(s, a.pos[1], &size, out_sized, out_write, &o, &e);
	store_close(s);
	if (o.bd) {
		if (!rc && blockdev_flush(o.bd))
			rc = error_set(&e, EXIT_HOST, "%s: flush failed", o.path);
		blockdev_close(o.bd);
	}
	if (o.fd >= 0) {
		if (!rc && fsync(o.fd))
			rc = error_set(&e, EXIT_HOST, "%s: %s", o.path, strerror(errno));
		close(o.fd);
	}
	if (rc) {
		if (o.bd || o.fd >= 0)
			unlink(o.path);	/* no half-written image left behind */
		return fail(&e);
	}
	return 0;
}

static int s_ls(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_image *v;
	struct store_snap_info *sv = NULL;
	size_t n, ns = 0;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_list(s, &v, &n, &e);
	if (!rc && (rc = store_snap_list(s, &sv, &ns, &e)))
		free(v);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a)) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s?, s:s?, s:I, s:I, s:I, s:I, s:I}",
				"name", v[i].name, "size", (json_int_t)v[i].size, "format", v[i].format,
				"parent", v[i].parent[0] ? v[i].parent : NULL,
				"chain_id", v[i].chain_id[0] ? v[i].chain_id : NULL, "generation",
				(json_int_t)v[i].generation, "added", (json_int_t)v[i].added,
				"chunks", (json_int_t)v[i].chunks, "zero_chunks",
				(json_int_t)v[i].zero_chunks, "unique_bytes",
				(json_int_t)v[i].unique_bytes));
		for (size_t i = 0; i < ns; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "name",
				sv[i].name, "kind", "snapshot", "size", (json_int_t)sv[i].bytes, "files",
				(json_int_t)sv[i].files, "disks", (json_int_t)sv[i].disks, "chunks",
				(json_int_t)sv[i].chunks, "added", (json_int_t)sv[i].added));
		print_json(arr);
	} else {
		printf("%-24s %14s %-6s %9s %14s  %-36s  %s\n", "NAME", "SIZE", "FORMAT", "CHUNKS", "UNIQUE", "CHAIN",
		       "PARENT");
		for (size_t i = 0; i < n; i++)
			printf("%-24s %14llu %-6s %9llu %14llu  %-36s  %s\n", v[i].name, (unsigned long long)v[i].size,
			       v[i].format, (unsigned long long)v[i].chunks,
			       (unsigned long long)v[i].unique_bytes, v[i].chain_id[0] ? v[i].chain_id : "-",
			       v[i].parent[0] ? v[i].parent : "-");
		for (size_t i = 0; i < ns; i++)
			printf("%-24s %14llu %-6s %9llu %14s  %llu files, %llu disks\n", sv[i].name,
			       (unsigned long long)sv[i].bytes, "snap", (unsigned long long)sv[i].chunks, "-",
			       (unsigned long long)sv[i].files, (unsigned long long)sv[i].disks);
	}
	free(v);
	free(sv);
	return 0;
}

static int s_du(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_du du;
	struct store_image *v = NULL;
	struct store_snap_info *sv = NULL;
	size_t n = 0, ns = 0;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_du(s, &du, &e);
	if (!rc)
		rc = store_list(s, &v, &n, &e) || store_snap_list(s, &sv, &ns, &e) ? -1 : 0;
	store_close(s);
	free(v);
	free(sv);
	if (rc)
		return fail(&e);
	if (json_out(&a))
		print_json(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "segments", (json_int_t)du.segments,
				     "segment_bytes", (json_int_t)du.segment_bytes, "chunks",
				     (json_int_t)du.chunks, "chunk_bytes", (json_int_t)du.chunk_bytes,
				     "images", (json_int_t)n, "snapshots", (json_int_t)ns));
	else
		printf("%llu segments, %llu bytes on disk; %llu chunks, %llu bytes uncompressed; %zu images, %zu snapshots\n",
		       (unsigned long long)du.segments, (unsigned long long)du.segment_bytes,
		       (unsigned long long)du.chunks, (unsigned long long)du.chunk_bytes, n, ns);
	return 0;
}

static int s_rm(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	int rc = parse(argc, argv, &a, 2);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], true, &e))
		return fail(&e);
	if (store_snap_exists(s, a.pos[1])) {
		rc = store_snap_rm(s, a.pos[1], &e);
	} else {
		char users[512];

		store_snap_users_of(s, a.pos[1], users, sizeof(users));
		if (users[0])
			rc = error_set(&e, EXIT_USAGE, "%s: image '%s' is a disk of snapshots: %s (rm them first)",
				       a.pos[0], a.pos[1], users);
		else
			rc = store_rm(s, a.pos[1], &e);
	}
	store_close(s);
	return rc ? fail(&e) : 0;
}

static int s_gc(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_gc_stats st;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], true, &e))
		return fail(&e);
	rc = store_gc(s, &st, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a))
		print_json(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "live_chunks", (json_int_t)st.live_chunks,
				     "dead_chunks", (json_int_t)st.dead_chunks, "segments_rewritten",
				     (json_int_t)st.segments_rewritten, "segments_removed",
				     (json_int_t)st.segments_removed, "bytes_before",
				     (json_int_t)st.bytes_before, "bytes_after", (json_int_t)st.bytes_after));
	else
		printf("gc: %llu live chunks, %llu dropped; %llu segments rewritten; %llu -> %llu bytes\n",
		       (unsigned long long)st.live_chunks, (unsigned long long)st.dead_chunks,
		       (unsigned long long)st.segments_rewritten, (unsigned long long)st.bytes_before,
		       (unsigned long long)st.bytes_after);
	return 0;
}

static void bad_line(void *opaque, const char *line)
{
	json_t *arr = opaque;

	if (arr)
		json_array_append_new(arr, json_string(line));
	else
		fprintf(stderr, "shoal: %s\n", line);
}

static int s_verify(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	uint64_t checked;
	json_t *arr = NULL;
	int rc = parse(argc, argv, &a, 1), n;

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	if (json_out(&a))
		arr = json_array();
	n = store_verify(s, bad_line, arr, &checked, &e);
	store_close(s);
	if (n < 0) {
		json_decref(arr);
		return fail(&e);
	}
	if (arr)
		print_json(json_pack("{s:I, s:o}", "chunks_checked", (json_int_t)checked, "problems", arr));
	else if (!n)
		printf("%s: %llu chunks checked, all good\n", a.pos[0], (unsigned long long)checked);
	else
		fprintf(stderr, "shoal: %s: %d problems in %llu chunks\n", a.pos[0], n,
			(unsigned long long)checked);
	return n ? EXIT_BADSTATE : 0;
}

/* ---- the image server and its client (store/serve.c, store/pull.c) ---- */

/* Options of serve and pull: --NAME VALUE pairs into val[] (by the order
 * of names[]), positional arguments into pos[]. */
static int parse_kv(int argc, char **argv, const char *const *names, const char **val, size_t nn,
		    const char **pos, int want)
{
	int npos = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq;
		size_t k;

		if (strncmp(a, "--", 2)) {
			if (npos == want)
				return usage("%s: too many arguments", argv[0]);
			pos[npos++] = a;
			continue;
		}
		eq = strchr(a, '=');
		for (k = 0; k < nn; k++)
			if (eq ? (strlen(names[k]) == (size_t)(eq - a - 2) && !strncmp(a + 2, names[k], eq - a - 2))
			       : !strcmp(a + 2, names[k]))
				break;
		if (k == nn)
			return usage("%s: unknown option %s", argv[0], a);
		if (eq)
			val[k] = eq + 1;
		else if (i + 1 < argc)
			val[k] = argv[++i];
		else
			return usage("%s: %s needs a value", argv[0], a);
	}
	if (npos != want)
		return usage("%s: wrong number of arguments", argv[0]);
	return 0;
}

static int s_serve(int argc, char **argv)
{
	static const char *const names[] = { "listen", "cert", "key", "client-ca", "max-connections", "timeout" };
	const char *v[6] = { 0 }, *pos[1];
	struct store_serve_opts o = { 0 };
	struct error e = { 0 };
	char *end;
	int rc = parse_kv(argc, argv, names, v, 6, pos, 1);

	if (rc)
		return rc;
	for (int i = 0; i < 4; i++)
		if (!v[i])
			return usage("serve: --%s is needed", names[i]);
	o.dir = pos[0];
	o.listen = v[0];
	o.cert = v[1];
	o.key = v[2];
	o.client_ca = v[3];
	if (v[4]) {
		unsigned long n = strtoul(v[4], &end, 10);

		if (*end || !n || n > 10000)
			return usage("--max-connections %s: 1 to 10000", v[4]);
		o.max_connections = (unsigned)n;
	}
	if (v[5]) {
		unsigned long n = strtoul(v[5], &end, 10);

		if (*end || !n || n > 3600)
			return usage("--timeout %s: 1 to 3600 seconds", v[5]);
		o.timeout_s = (unsigned)n;
	}
	return store_serve(&o, &e) ? fail(&e) : 0;
}

/* grant and revoke: DIR CLIENT IMAGE [--vm VMKEY]. */
static int s_grant_change(int argc, char **argv, bool add)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_manifest m = { 0 };
	char fp[65], vm[65] = "";
	uint8_t vm_pub[32];
	int rc = parse(argc, argv, &a, 3);

	if (rc)
		return rc;
	if (store_fingerprint_arg(a.pos[1], fp, &e))
		return fail(&e);
	if (a.vm && add && store_vmkey_load_public(a.vm, vm_pub, vm, &e))
		return fail(&e);
	if (a.vm && !add && store_fingerprint_arg(a.vm, vm, &e))	/* revoke: the fingerprint will do */
		return fail(&e);
	if (add) {	/* the image (or snapshot) must be there, and DIR a store */
		if (store_open(&s, a.pos[0], false, &e))
			return fail(&e);
		rc = store_snap_exists(s, a.pos[2]) ? 0 : store_manifest_get(s, a.pos[2], &m, &e);
		store_close(s);
		if (rc)
			return fail(&e);
		store_manifest_free(&m);
	}
	if (a.vm ? (add ? store_grant_vm_add(a.pos[0], fp, a.pos[2], vm, vm_pub, &e)
			: store_grant_vm_rm(a.pos[0], fp, a.pos[2], vm, &e))
		 : (add ? store_grant_add : store_grant_rm)(a.pos[0], fp, a.pos[2], &e))
		return fail(&e);
	if (a.vm)
		printf("%s %s: client %s, image %s, for VM key %s\n", a.pos[0], add ? "granted" : "revoked", fp,
		       a.pos[2], vm);
	else
		printf("%s %s: client %s, image %s\n", a.pos[0], add ? "granted" : "revoked", fp, a.pos[2]);
	return 0;
}

static int s_grant(int argc, char **argv)
{
	return s_grant_change(argc, argv, true);
}

static int s_revoke(int argc, char **argv)
{
	return s_grant_change(argc, argv, false);
}

static int s_grants(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store_grant *v;
	size_t n;
	struct stat sb;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (stat(a.pos[0], &sb) || !S_ISDIR(sb.st_mode))
		return fprintf(stderr, "shoal: %s: no such store (not a directory)\n", a.pos[0]), EXIT_NOINPUT;
	if (store_grants_load(a.pos[0], &v, &n, &e))
		return fail(&e);
	if (json_out(&a)) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:s?}", "client", v[i].client, "image",
							     v[i].image, "added", (json_int_t)v[i].added, "vm",
							     v[i].vm[0] ? v[i].vm : NULL));
		print_json(arr);
	} else {
		printf("%-64s  %-24s  %s\n", "CLIENT (SHA-256 of its public key)", "IMAGE", "VM KEY");
		for (size_t i = 0; i < n; i++)
			printf("%-64s  %-24s  %s\n", v[i].client, v[i].image, v[i].vm[0] ? v[i].vm : "-");
	}
	free(v);
	return 0;
}

static int pull_common(int argc, char **argv, bool snap)
{
	static const char *const names[] = { "from", "cert", "key", "ca", "output", "vm-key", "vm-proof" };
	const char *v[7] = { 0 }, *pos[2];
	struct store_pull_opts o = { 0 };
	struct store_pull_stats st;
	struct error e = { 0 };
	int rc = parse_kv(argc, argv, names, v, 7, pos, 2);

	if (rc)
		return rc;
	if (!v[0])
		return usage("pull: --from https://HOST:PORT is needed");
	if (v[4] && strcmp(v[4], "json") && strcmp(v[4], "human"))
		return usage("--output %s: json or human", v[4]);
	o.dir = pos[0];
	o.name = pos[1];
	o.from = v[0];
	o.cert = v[1];
	o.key = v[2];
	o.ca = v[3];
	o.vm_key = v[5];
	o.vm_proof = v[6];
	o.progress = isatty(2) ? progress : NULL;
	if ((snap ? store_pull_snapshot : store_pull)(&o, &st, &e))
		return fail(&e);
	if (v[4] && !strcmp(v[4], "json"))
		print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "name", o.name, "size",
				     (json_int_t)st.size, "chunks", (json_int_t)st.chunks, "zero_chunks",
				     (json_int_t)st.zero_chunks, "present", (json_int_t)st.present, "fetched",
				     (json_int_t)st.fetched, "fetched_bytes", (json_int_t)st.fetched_bytes,
				     "up_to_date", st.up_to_date));
	else if (st.up_to_date)
		printf("%s: already in %s, the same\n", o.name, o.dir);
	else
		printf("%s: %llu bytes, %llu chunks (%llu zero): %llu were here, %llu fetched (%llu bytes)\n", o.name,
		       (unsigned long long)st.size, (unsigned long long)st.chunks,
		       (unsigned long long)st.zero_chunks, (unsigned long long)st.present,
		       (unsigned long long)st.fetched, (unsigned long long)st.fetched_bytes);
	return 0;
}

/* ---- snapshots (store/snapobj.c) ---- */

static int s_import_snapshot(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_snap_stats st;
	int rc = parse(argc, argv, &a, 2);

	if (rc)
		return rc;
	if (!a.name)
		return usage("import-snapshot: --name NAME is needed");
	if (store_open(&s, a.pos[0], true, &e))
		return fail(&e);
	rc = store_snap_import(s, a.pos[1], a.name, &st, isatty(2) ? progress : NULL, NULL, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a))
		print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", a.name,
				     "files", (json_int_t)st.files, "disks", (json_int_t)st.disks,
				     "disks_by_reference", (json_int_t)st.disks_by_ref, "bytes",
				     (json_int_t)st.raw_bytes, "chunks", (json_int_t)st.chunks, "zero_chunks",
				     (json_int_t)st.zero_chunks, "new_chunks", (json_int_t)st.new_chunks,
				     "new_bytes", (json_int_t)st.new_bytes, "stored_bytes",
				     (json_int_t)st.stored_bytes));
	else
		printf("%s: %llu files and %llu disks (%llu by reference), %llu bytes, %llu chunks (%llu zero), %llu new chunks, %llu new bytes, %llu stored after compression\n",
		       a.name, (unsigned long long)st.files, (unsigned long long)st.disks,
		       (unsigned long long)st.disks_by_ref, (unsigned long long)st.raw_bytes,
		       (unsigned long long)st.chunks, (unsigned long long)st.zero_chunks,
		       (unsigned long long)st.new_chunks, (unsigned long long)st.new_bytes,
		       (unsigned long long)st.stored_bytes);
	return 0;
}

static int s_export_snapshot(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	int rc = parse(argc, argv, &a, 3);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_snap_export_chain(s, a.pos[1], a.pos[2], a.chain, say_line, NULL, &e);
	store_close(s);
	return rc ? fail(&e) : 0;
}

/* push DIR NAME --to DIR2: an image or a snapshot into another store. */
static int s_push(int argc, char **argv)
{
	static const char *const names[] = { "to", "output" };
	const char *v[2] = { 0 }, *pos[2];
	struct store_push_stats st;
	struct error e = { 0 };
	int rc = parse_kv(argc, argv, names, v, 2, pos, 2);

	if (rc)
		return rc;
	if (!v[0])
		return usage("push: --to DIR (the other store) is needed");
	if (v[1] && strcmp(v[1], "json") && strcmp(v[1], "human"))
		return usage("--output %s: json or human", v[1]);
	if (store_push(pos[0], pos[1], v[0], &st, isatty(2) ? progress : NULL, NULL, &e))
		return fail(&e);
	if (v[1] && !strcmp(v[1], "json"))
		print_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "name", pos[1], "kind",
				     st.snapshot ? "snapshot" : "image", "to", v[0], "size", (json_int_t)st.size,
				     "chunks", (json_int_t)st.chunks, "zero_chunks", (json_int_t)st.zero_chunks,
				     "present", (json_int_t)st.present, "copied", (json_int_t)st.copied,
				     "copied_bytes", (json_int_t)st.copied_bytes, "kept_parent", st.kept_parent));
	else
		printf("%s: %s pushed to %s: %llu chunks (%llu zero): %llu were there, %llu copied (%llu bytes)%s\n",
		       pos[1], st.snapshot ? "snapshot" : "image", v[0], (unsigned long long)st.chunks,
		       (unsigned long long)st.zero_chunks, (unsigned long long)st.present,
		       (unsigned long long)st.copied, (unsigned long long)st.copied_bytes,
		       st.kept_parent ? "; linked to its parent there" : "");
	return 0;
}

static int s_pull(int argc, char **argv)
{
	return pull_common(argc, argv, false);
}

static int s_pull_snapshot(int argc, char **argv)
{
	return pull_common(argc, argv, true);
}

/* ---- per-VM keys (store/vmkey.c) ---- */

static int s_keygen(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store_vmkey k;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_vmkey_generate(a.pos[0], &k, &e))
		return fail(&e);
	explicit_bzero(k.seed, sizeof(k.seed));
	if (json_out(&a))
		print_json(json_pack("{s:s, s:s+, s:s}", "key", a.pos[0], "public_key", a.pos[0], ".pub",
				     "fingerprint", k.fp));
	else
		printf("%s: a new Ed25519 key pair (public key in %s.pub), fingerprint %s\n", a.pos[0], a.pos[0], k.fp);
	return 0;
}

/* vm-proof VMKEY --client CERT|FP [--valid SECONDS | --until EPOCH]:
 * print a proof for a host made with the VM's key, elsewhere. */
static int s_vm_proof(int argc, char **argv)
{
	static const char *const names[] = { "client", "valid", "until" };
	const char *v[3] = { 0 }, *pos[1];
	struct store_vmkey k;
	struct error e = { 0 };
	char client[65], out[STORE_VMPROOF_MAX], *end;
	uint64_t until = (uint64_t)time(NULL) + STORE_VMPROOF_CLIENT_LIFE;
	int rc = parse_kv(argc, argv, names, v, 3, pos, 1);

	if (rc)
		return rc;
	if (!v[0])
		return usage("vm-proof: --client CERT|FINGERPRINT is needed (the host the proof is for)");
	if (v[1] && v[2])
		return usage("vm-proof: --valid or --until, not both");
	if (v[1]) {
		unsigned long long s = strtoull(v[1], &end, 10);

		if (*end || !s || s > STORE_VMPROOF_MAX_LIFE)
			return usage("--valid %s: 1 to %u seconds", v[1], STORE_VMPROOF_MAX_LIFE);
		until = (uint64_t)time(NULL) + s;
	}
	if (v[2]) {
		until = strtoull(v[2], &end, 10);
		if (*end || v[2][0] == '-' || !v[2][0])
			return usage("--until %s: seconds since the epoch", v[2]);
	}
	if (store_fingerprint_arg(v[0], client, &e) || store_vmkey_load(pos[0], &k, &e))
		return fail(&e);
	rc = store_vmproof_make(&k, client, until, out, &e);
	explicit_bzero(&k, sizeof(k));
	if (rc)
		return fail(&e);
	printf("%s\n", out);
	return 0;
}

static int s_help(int argc, char **argv)
{
	printf("usage: shoal store SUBCOMMAND DIR ...\n"
	       "  init DIR                              make an empty store\n"
	       "  add DIR IMAGE [--name NAME] [-f FMT] [--chain]\n"
	       "                                        add a raw or qcow2 image (alias: import); --chain: its\n"
	       "                                        backing chain's layers too, each its own image\n"
	       "  get DIR NAME OUT [--format raw|qcow2] [--chain]\n"
	       "                                        rebuild an image (alias: export); --chain: as a qcow2\n"
	       "                                        overlay over its parent, beside OUT, with their identities\n"
	       "  ls DIR [--output json]                the images\n"
	       "  du DIR [--output json]                segments and bytes\n"
	       "  rm DIR NAME                           forget an image (gc frees its chunks)\n"
	       "  gc DIR [--output json]                drop unreferenced chunks, compact segments\n"
	       "  verify DIR [--output json]            re-hash every chunk\n"
	       "  serve DIR --listen HOST:PORT --cert F --key F --client-ca F [--max-connections N] [--timeout S]\n"
	       "                                        serve images over HTTPS to clients with certificates\n"
	       "  grant|revoke DIR CLIENT IMAGE [--vm VMKEY]\n"
	       "                                        let a client (fingerprint, or its certificate or public key) pull an\n"
	       "                                        image; with --vm, only for that VM (its key's public half)\n"
	       "  keygen FILE [--output json]           a VM's key pair: FILE (private) and FILE.pub\n"
	       "  vm-proof VMKEY --client CERT|FP [--valid S | --until T]\n"
	       "                                        a proof that host CLIENT acts for the VM (for --vm-proof)\n"
	       "  grants DIR [--output json]            the grants\n"
	       "  push DIR NAME --to DIR2 [--output json]\n"
	       "                                        copy an image or a snapshot into another store (its missing chunks)\n"
	       "  pull DIR NAME --from https://HOST:PORT --cert F --key F --ca F [--vm-key F | --vm-proof P] [--output json]\n"
	       "                                        fetch an image's missing chunks from a server\n"
	       "  import-snapshot DIR SNAPDIR --name NAME [--output json]\n"
	       "                                        store a snapshot directory (memory, state, disks)\n"
	       "  export-snapshot DIR NAME OUTDIR [--chain]\n"
	       "                                        rebuild it as a directory `shoal run --restore` takes; --chain:\n"
	       "                                        a disk that was a qcow2 chain as that chain\n"
	       "  pull-snapshot DIR NAME --from https://HOST:PORT --cert F --key F --ca F [--vm-key F | --vm-proof P]\n"
	       "                [--output json]\n"
	       "                                        fetch a snapshot's missing chunks from a server\n");
	return 0;
}

int cmd_store(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} sub[] = { { "init", s_init }, { "add", s_add },   { "import", s_add }, { "get", s_get },
		    { "export", s_get },  { "ls", s_ls },     { "du", s_du },       { "rm", s_rm },
		    { "gc", s_gc },       { "verify", s_verify }, { "help", s_help },
		    { "serve", s_serve }, { "grant", s_grant }, { "revoke", s_revoke },
		    { "grants", s_grants }, { "pull", s_pull },
		    { "import-snapshot", s_import_snapshot }, { "export-snapshot", s_export_snapshot },
		    { "pull-snapshot", s_pull_snapshot }, { "keygen", s_keygen }, { "vm-proof", s_vm_proof },
		    { "push", s_push } };

	if (argc < 2)
		return s_help(0, NULL), EXIT_USAGE;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return s_help(0, NULL);
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (!strcmp(argv[1], sub[i].name))
			return sub[i].fn(argc - 1, argv + 1);
	return usage("unknown subcommand '%s'", argv[1]);
}
