/*
 * img.c - `shoal img`: the disk image tool, and its create/info/check/map
 * subcommands.  Options follow qemu-img's where the two overlap (-f, -F,
 * -O, -b, -B, -c, -o key=value,..., --output json, -p) so habits carry
 * over.  Other subcommands live in img_io.c, img_convert.c, img_misc.c and
 * img_bench.c.  Everything goes through the block layer (block/blockdev.h);
 * this file only parses, prints and maps errors to exit statuses.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/size.h"
#include "block/qcow2.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "vmm/config.h"
#include "base/exitcode.h"

int img_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "shoal: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see `shoal img help`)\n");
	return EXIT_USAGE;
}

int img_fail(struct error *e)
{
	fprintf(stderr, "shoal: %s\n", e->msg);
	return e->status ? e->status : EXIT_HOST;
}

/* `shoal img --cache-size SIZE ...`: L2 + refcount cache for every image
 * the command opens (0: the block layer's default). */
static uint64_t img_cache_bytes;

const struct option img_share_longopts[] = { { "force-share", no_argument, 0, 'U' }, { 0 } };

/* Readers share a raw image with writers unless IMG_CONSISTENT, as
 * qemu-img's info, map, compare and qemu-io -r do (block/lock.c). */
int img_open(struct blockdev **bd, const char *path, const char *fmt, unsigned flags)
{
	/* caller_reports: every failure is printed once, from bd->err, by the
	 * subcommand; the block layer does not log it as well. */
	struct blockdev_opts o = { .readonly = !(flags & IMG_RW), .force = flags & IMG_FORCE,
				   .no_backing = flags & IMG_NO_BACKING,
				   .force_share = flags & IMG_SHARE,
				   .share_writes = !(flags & IMG_CONSISTENT),
				   .caller_reports = true, .cache_bytes = img_cache_bytes };
	struct error e = { 0 };

	if (fmt && blockdev_parse_format(fmt, &o.format)) {
		fprintf(stderr, "shoal: unknown format '%s' (raw or qcow2)\n", fmt);
		return EXIT_USAGE;
	}
	if (blockdev_open(bd, path, &o, &e))
		return img_fail(&e);
	return 0;
}

/* Progress on a terminal, like qemu-img -p. */
void img_progress(bool on, uint64_t done, uint64_t total)
{
	if (!on || !isatty(2))
		return;
	fprintf(stderr, "    (%6.2f/100%%)\r", total ? 100.0 * done / total : 100.0);
	if (done >= total)
		fprintf(stderr, "\n");
}

bool img_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!len)
		return true;
	return p[0] == 0 && !memcmp(p, p + 1, len - 1);
}

/* ---- create ---- */

/* One -o key=value for create (and convert -O qcow2). */
static int create_opt(struct create_args *a, char *kv)
{
	char *v = strchr(kv, '=');
	uint64_t n;

	if (!v)
		return img_usage("option '%s' needs a value", kv);
	*v++ = 0;
	if (!strcmp(kv, "cluster_size")) {
		if (size_parse(v, &n) || n > (2u << 20))
			return img_usage("bad cluster_size '%s'", v);
		a->q.cluster_size = n;
	} else if (!strcmp(kv, "compat")) {
		a->q.version = !strcmp(v, "0.10") || !strcmp(v, "v2") ? 2 : 3;
	} else if (!strcmp(kv, "refcount_bits")) {
		a->q.refcount_bits = atoi(v);
	} else if (!strcmp(kv, "extended_l2")) {
		a->q.ext_l2 = !strcmp(v, "on");
	} else if (!strcmp(kv, "lazy_refcounts")) {
		a->q.lazy_refcounts = !strcmp(v, "on");
	} else if (!strcmp(kv, "compression_type")) {
		if (strcmp(v, "zlib") && strcmp(v, "zstd"))
			return img_usage("compression_type must be zlib or zstd");
		a->q.compression_type = !strcmp(v, "zstd");
	} else if (!strcmp(kv, "preallocation")) {
		a->q.prealloc = !strcmp(v, "off") ? 0 : !strcmp(v, "metadata") ? 1 : 2;
		a->prealloc_raw = a->q.prealloc != 0;
	} else if (!strcmp(kv, "backing_file")) {
		a->backing = v;
	} else if (!strcmp(kv, "backing_fmt")) {
		a->bfmt = v;
	} else if (!strcmp(kv, "chain_id")) {
		a->q.chain_id = strcmp(v, "off") != 0;
	} else if (!strcmp(kv, "size")) {
		if (size_parse(v, &a->q.size))
			return img_usage("bad size '%s'", v);
	} else {
		return img_usage("unknown option '%s'", kv);
	}
	return 0;
}

int img_parse_create_opts(struct create_args *a, char *list)
{
	for (char *save, *kv = strtok_r(list, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		int r = create_opt(a, kv);
		if (r)
			return r;
	}
	return 0;
}

int img_create(int argc, char **argv)
{
	static const struct option lo[] = { { "force", no_argument, 0, 'U' }, { 0 } };
	struct create_args a = { .fmt = "raw" };
	struct error e = { 0 };
	bool quiet = false;
	int c, r;

	a.q.chain_id = true;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:b:F:o:uq", lo, NULL)) != -1) {
		switch (c) {
		case 'f': a.fmt = optarg; break;
		case 'b': a.backing = optarg; break;
		case 'F': a.bfmt = optarg; break;
		case 'o': if ((r = img_parse_create_opts(&a, optarg))) return r; break;
		case 'U': case 'u': a.q.force = true; break;
		case 'q': quiet = true; break;
		default: return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return img_usage("create: FILE [SIZE] expected");
	if (optind + 1 < argc && size_parse(argv[optind + 1], &a.q.size))
		return img_usage("create: bad size '%s'", argv[optind + 1]);
	if (optind + 1 >= argc && !a.backing && !a.q.size)
		return img_usage("create: SIZE expected");
	if (!strcmp(a.fmt, "raw")) {
		if (a.backing)
			return img_usage("create: raw images cannot have a backing file");
		r = raw_create(argv[optind], a.q.size, a.prealloc_raw, &e);
	} else if (!strcmp(a.fmt, "qcow2")) {
		a.q.backing_file = a.backing;
		a.q.backing_format = a.bfmt;
		r = qcow2_create(argv[optind], &a.q, &e);
	} else {
		return img_usage("create: unknown format '%s' (raw or qcow2)", a.fmt);
	}
	if (r)
		return img_fail(&e);
	if (quiet)
		return 0;
	if (!a.q.size && a.backing)
		printf("Formatting '%s', fmt=%s size=(of the backing file) backing_file=%s\n",
		       argv[optind], a.fmt, a.backing);
	else
		printf("Formatting '%s', fmt=%s size=%llu%s%s\n", argv[optind], a.fmt,
		       (unsigned long long)a.q.size, a.backing ? " backing_file=" : "",
		       a.backing ? a.backing : "");
	return 0;
}

/* ---- info ---- */

static uint64_t disk_usage(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

static json_t *info_snapshots(struct qcow2 *q)
{
	json_t *arr = json_array();

	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct qcow2_snapshot *s = &q->snaps[i];
		json_array_append_new(arr, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}",
			"id", s->id, "name", s->name, "vm-state-size", (json_int_t)s->vm_state_size,
			"date-sec", (json_int_t)s->date_sec, "date-nsec", (json_int_t)s->date_nsec,
			"vm-clock-nsec", (json_int_t)s->vm_clock_nsec));
	}
	return arr;
}

static json_t *info_json(struct blockdev *bd)
{
	json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:b}", "filename", bd->path,
			      "format", blockdev_format_name(bd->format),
			      "virtual-size", (json_int_t)bd->size,
			      "actual-size", (json_int_t)disk_usage(bd->fd), "dirty-flag", 0);
	struct qcow2 *q = bd->priv;
	char id[37], pid[37];

	if (bd->format != BD_FMT_QCOW2)
		return o;
	json_object_set_new(o, "cluster-size", json_integer(q->cluster_size));
	if (q->backing_file)
		json_object_set_new(o, "backing-filename", json_string(q->backing_file));
	if (q->backing_format)
		json_object_set_new(o, "backing-filename-format", json_string(q->backing_format));
	json_object_set_new(o, "dirty-flag", json_boolean(q->incompat & QCOW2_INCOMPAT_DIRTY));
	json_object_set_new(o, "format-specific", json_pack("{s:s,s:{s:s,s:s,s:b,s:i,s:b,s:b}}",
		"type", "qcow2", "data", "compat", q->version == 2 ? "0.10" : "1.1",
		"compression-type", q->compression_type ? "zstd" : "zlib",
		"lazy-refcounts", !!(q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS),
		"refcount-bits", 1 << q->refcount_order, "corrupt", q->corrupt,
		"extended-l2", q->ext_l2));
	if (q->nb_snaps)
		json_object_set_new(o, "snapshots", info_snapshots(q));
	if (q->chain.present) {
		chain_id_format(q->chain.id, id);
		chain_id_format(q->chain.parent_id, pid);
		json_object_set_new(o, "shoal-chain", json_pack("{s:s,s:I,s:b}", "id", id,
			"generation", (json_int_t)q->chain.generation, "current", q->chain.current));
		if (q->chain.flags & QCOW2_CHAIN_F_PARENT) {
			json_object_set_new(json_object_get(o, "shoal-chain"), "parent-id",
					    json_string(pid));
			json_object_set_new(json_object_get(o, "shoal-chain"), "parent-generation",
					    json_integer(q->chain.parent_generation));
		}
	}
	return o;
}

static void info_human(json_t *o)
{
	json_t *fs = json_object_get(json_object_get(o, "format-specific"), "data");
	json_t *ch = json_object_get(o, "shoal-chain"), *snaps = json_object_get(o, "snapshots");
	size_t i;
	json_t *v;

	printf("image: %s\nfile format: %s\n", json_string_value(json_object_get(o, "filename")),
	       json_string_value(json_object_get(o, "format")));
	printf("virtual size: %lld bytes\ndisk size: %lld bytes\n",
	       (long long)json_integer_value(json_object_get(o, "virtual-size")),
	       (long long)json_integer_value(json_object_get(o, "actual-size")));
	if ((v = json_object_get(o, "cluster-size")))
		printf("cluster_size: %lld\n", (long long)json_integer_value(v));
	if ((v = json_object_get(o, "backing-filename")))
		printf("backing file: %s\n", json_string_value(v));
	if ((v = json_object_get(o, "backing-filename-format")))
		printf("backing file format: %s\n", json_string_value(v));
	if (snaps) {
		printf("Snapshot list:\nID        TAG\n");
		json_array_foreach(snaps, i, v)
			printf("%-9s %s\n", json_string_value(json_object_get(v, "id")),
			       json_string_value(json_object_get(v, "name")));
	}
	if (fs) {
		const char *k;
		printf("Format specific information:\n");
		json_object_foreach(fs, k, v) {
			char *s = json_dumps(v, JSON_ENCODE_ANY);
			printf("    %s: %s\n", k, s);
			free(s);
		}
	}
	if (ch) {
		printf("Chain identity:\n    id: %s\n    generation: %lld%s\n",
		       json_string_value(json_object_get(ch, "id")),
		       (long long)json_integer_value(json_object_get(ch, "generation")),
		       json_is_true(json_object_get(ch, "current")) ? "" :
		       " (stale: written by another program)");
		if ((v = json_object_get(ch, "parent-id")))
			printf("    parent id: %s\n    parent generation: %lld\n",
			       json_string_value(v), (long long)json_integer_value(
				       json_object_get(ch, "parent-generation")));
	}
}

int img_info(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "output", required_argument, 0, 'O' },
		{ "backing-chain", no_argument, 0, 'C' },
		{ "force-share", no_argument, 0, 'U' }, { 0 } };
	const char *fmt = NULL, *out = "human";
	struct blockdev *bd;
	bool chain = false;
	unsigned share = 0;
	json_t *arr;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:U", lo, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'O')
			out = optarg;
		else if (c == 'C')
			chain = true;
		else if (c == 'U')
			share = IMG_SHARE;
		else
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("info: FILE expected");
	r = img_open(&bd, argv[optind], fmt, IMG_FORCE | share | (chain ? 0 : IMG_NO_BACKING));
	if (r)
		return r;
	arr = json_array();
	for (struct blockdev *b = bd; b; b = b->backing)
		json_array_append_new(arr, info_json(b));
	if (!strcmp(out, "json")) {
		char *s = json_dumps(chain ? arr : json_array_get(arr, 0), JSON_INDENT(4));
		printf("%s\n", s);
		free(s);
	} else {
		size_t i;
		json_t *v;
		json_array_foreach(arr, i, v) {
			if (i)
				printf("\n");
			info_human(v);
		}
	}
	json_decref(arr);
	blockdev_close(bd);
	return 0;
}

/* ---- check ---- */

int img_check(int argc, char **argv)
{
	static const struct option lo[] = { { "output", required_argument, 0, 'O' },
					    { "force-share", no_argument, 0, 'U' }, { 0 } };
	const char *fmt = NULL, *out = "human", *repair = NULL;
	struct qcow2_check_result res;
	struct error e = { 0 };
	struct blockdev *bd;
	unsigned share = 0;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:r:qU", lo, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'O')
			out = optarg;
		else if (c == 'r')
			repair = optarg;
		else if (c == 'U')
			share = IMG_SHARE;
		else if (c != 'q')
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("check: FILE expected");
	r = img_open(&bd, argv[optind], fmt, (repair ? IMG_RW : 0) | IMG_FORCE | IMG_NO_BACKING |
		     share);
	if (r)
		return r;
	if (bd->format != BD_FMT_QCOW2) {
		printf("%s: raw images have nothing to check\n", bd->path);
		blockdev_close(bd);
		return 0;
	}
	r = qcow2_check(bd, repair != NULL, &res, &e);
	if (r < 0) {
		blockdev_close(bd);
		fprintf(stderr, "shoal: %s\n", e.msg);
		return 1;
	}
	if (!strcmp(out, "json")) {
		json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "filename", bd->path,
			"format", "qcow2", "corruptions", (json_int_t)res.corruptions,
			"leaks", (json_int_t)res.leaks, "corruptions-fixed", (json_int_t)
			(repair ? res.fixed : 0), "allocated-clusters", (json_int_t)
			res.allocated_clusters, "total-clusters", (json_int_t)res.total_clusters,
			"fragmented-clusters", (json_int_t)res.fragmented,
			"compressed-clusters", (json_int_t)res.compressed_clusters);
		char *s = json_dumps(o, JSON_INDENT(4));
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		if (repair && res.fixed)
			printf("Repaired %llu refcount(s).\n", (unsigned long long)res.fixed);
		if (res.corruptions)
			printf("%llu errors were found on the image%s%s%s.\n",
			       (unsigned long long)res.corruptions,
			       res.first_problem[0] ? " (first: " : "", res.first_problem,
			       res.first_problem[0] ? ")" : "");
		if (res.leaks)
			printf("%llu leaked clusters were found on the image.\n",
			       (unsigned long long)res.leaks);
		if (!res.corruptions && !res.leaks)
			printf("No errors were found on the image.\n");
		printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed "
		       "clusters\n", (unsigned long long)res.allocated_clusters,
		       (unsigned long long)res.total_clusters, res.total_clusters ?
		       100.0 * res.allocated_clusters / res.total_clusters : 0.0,
		       res.allocated_clusters ? 100.0 * res.fragmented / res.allocated_clusters : 0.0,
		       res.allocated_clusters ? 100.0 * res.compressed_clusters /
		       res.allocated_clusters : 0.0);
	}
	blockdev_close(bd);
	/* qemu-img's statuses: 2 corruptions remain, 3 only leaks remain. */
	return res.corruptions ? 2 : res.leaks ? 3 : 0;
}

/* ---- map ---- */

/* Status of `off` looking down the chain; ext->depth says where. */
int img_chain_status(struct blockdev *bd, uint64_t off, uint64_t len, struct bd_extent *x,
			const char **file)
{
	int depth = 0;

	for (struct blockdev *b = bd; b; b = b->backing, depth++) {
		if (off >= b->size) {
			x->status = BD_ZERO;
			x->len = len;
			x->depth = depth;
			*file = b->path;
			return 0;
		}
		if (len > b->size - off)
			len = b->size - off;
		if (b->ops->block_status(b, off, len, x))
			return -1;
		len = x->len;
		x->depth = depth;
		*file = b->path;
		if (x->status != BD_UNALLOC)
			return 0;
	}
	x->status = BD_ZERO;	/* unallocated all the way down: zeros */
	return 0;
}

int img_map(int argc, char **argv)
{
	static const struct option lo[] = { { "output", required_argument, 0, 'O' },
					    { "force-share", no_argument, 0, 'U' }, { 0 } };
	static const char *names[] = { "unallocated", "zero", "data", "compressed" };
	const char *fmt = NULL, *out = "human";
	struct blockdev *bd;
	unsigned share = 0;
	json_t *arr;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:U", lo, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'O')
			out = optarg;
		else if (c == 'U')
			share = IMG_SHARE;
		else
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("map: FILE expected");
	r = img_open(&bd, argv[optind], fmt, IMG_FORCE | share);
	if (r)
		return r;
	arr = json_array();
	if (strcmp(out, "json"))
		printf("%-16s %-16s %-16s %-5s %-12s %s\n", "Offset", "Length", "Mapped to",
		       "Depth", "Status", "File");
	for (uint64_t off = 0; off < bd->size; ) {
		struct bd_extent x = { 0 };
		const char *file = bd->path;

		if (img_chain_status(bd, off, bd->size - off, &x, &file) || !x.len) {
			fprintf(stderr, "shoal: %s\n", bd->err.msg);
			r = EXIT_HOST;
			break;
		}
		if (!strcmp(out, "json"))
			json_array_append_new(arr, json_pack("{s:I,s:I,s:i,s:b,s:b,s:s}", "start",
				(json_int_t)off, "length", (json_int_t)x.len, "depth", x.depth,
				"data", x.status == BD_DATA || x.status == BD_COMPRESSED,
				"zero", x.status == BD_ZERO, "status", names[x.status]));
		else
			printf("0x%-14llx 0x%-14llx 0x%-14llx %-5d %-12s %s\n",
			       (unsigned long long)off, (unsigned long long)x.len,
			       (unsigned long long)x.host_off, x.depth, names[x.status], file);
		off += x.len;
	}
	if (!strcmp(out, "json")) {
		char *s = json_dumps(arr, JSON_INDENT(2));
		printf("%s\n", s);
		free(s);
	}
	json_decref(arr);
	blockdev_close(bd);
	return r;
}

/* ---- dispatch ---- */

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} img_cmds[] = {
	{ "create", img_create, "create [-f fmt] [-b backing [-F fmt]] [-o opts] FILE [SIZE]" },
	{ "info", img_info, "info [-f fmt] [-U] [--output json] [--backing-chain] FILE" },
	{ "check", img_check, "check [-f fmt] [-U | -r leaks|all] [--output json] FILE" },
	{ "map", img_map, "map [-f fmt] [-U] [--output json] FILE" },
	{ "io", img_io, "io [-f fmt] [-r [-U]] [--force] [-c CMD]... FILE   (CMDs from stdin "
			  "without -c): read [-P pat] OFF LEN | write [-P pat | -z | -s FILE] "
			  "OFF LEN | discard OFF LEN | flush" },
	{ "compare", img_compare, "compare [-f fmt] [-F fmt] [-s] [-U] FILE1 FILE2" },
	{ "convert", img_convert, "convert [-f fmt] [-O fmt] [-c] [-o opts] [-B backing] "
				  "[-l snapshot] [-p] [-U] SRC DST" },
	{ "commit", img_commit, "commit [-f fmt] [-d] [-p] FILE" },
	{ "rebase", img_rebase, "rebase [-f fmt] [-u] [-b backing] [-F fmt] [-p] [-U] FILE" },
	{ "resize", img_resize, "resize [-f fmt] [--shrink] FILE [+|-]SIZE" },
	{ "snapshot", img_snapshot, "snapshot [-l [-U] | -c NAME | -a NAME | -d NAME] FILE" },
	{ "bench", img_bench, "bench [-f fmt] [-w | -U] [-d depth] [-s size] [-c count] "
			      "[-S step] [-o offset] [--compare-qemu [--rounds N]] FILE" },
	{ "cidata", img_cidata, "cidata OUT user-data=FILE,meta-data=FILE[,network-config=FILE]   "
				"(the cloud-init seed --cloud-init attaches, as an ISO file)" },
};

int cmd_img(int argc, char **argv)
{
	size_t n = sizeof(img_cmds) / sizeof(img_cmds[0]);

	if (argc >= 3 && !strcmp(argv[1], "--cache-size")) {
		if (size_parse(argv[2], &img_cache_bytes) || img_cache_bytes < (64u << 10))
			return img_usage("--cache-size '%s' is not a size of at least 64K", argv[2]);
		argv[2] = argv[0];
		return cmd_img(argc - 2, argv + 2);
	}
	if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
		printf("usage: shoal img [--cache-size SIZE] COMMAND ...\n"
		       "  --cache-size SIZE   L2 table and refcount block cache per image (default 4M)\n"
		       "  -U, --force-share   (verbs that only read) open an image another process\n"
		       "                      is writing, as qemu-img -U; what is read may be stale\n");
		for (size_t i = 0; i < n; i++)
			printf("  %s\n", img_cmds[i].help);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(argv[1], img_cmds[i].name))
			continue;
		/* `shoal img VERB --help` (or -h) prints the verb's usage, wherever it stands */
		for (int a = 2; a < argc && strcmp(argv[a], "--"); a++)
			if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
				printf("usage: shoal img %s\n", img_cmds[i].help);
				return 0;
			}
		return img_cmds[i].fn(argc - 1, argv + 1);
	}
	return img_usage("unknown command '%s'", argv[1]);
}
