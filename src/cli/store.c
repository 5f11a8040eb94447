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
#include <unistd.h>

#include "base/exitcode.h"
#include "block/qcow2.h"
#include "cli/commands.h"
#include "cli/img.h"
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
	const char *name, *output, *format, *infmt;
	const char *pos[4];
	int npos;
};

static int parse(int argc, char **argv, struct sargs *a, int want)
{
	static const struct option lo[] = { { "name", required_argument, 0, 'n' },
					    { "output", required_argument, 0, 'o' },
					    { "format", required_argument, 0, 'O' },
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
	rc = store_add(s, bd, a.name, &st, isatty(2) ? progress : NULL, NULL, &e);
	blockdev_close(bd);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a))
		print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "name", a.name, "size",
				     (json_int_t)st.image_bytes, "chunks", (json_int_t)st.chunks,
				     "zero_chunks", (json_int_t)st.zero_chunks, "new_chunks",
				     (json_int_t)st.new_chunks, "new_bytes", (json_int_t)st.new_bytes,
				     "stored_bytes", (json_int_t)st.stored_bytes));
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
	size_t n;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_list(s, &v, &n, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a)) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s?, s:I, s:I, s:I, s:I, s:I}",
				"name", v[i].name, "size", (json_int_t)v[i].size, "format", v[i].format,
				"chain_id", v[i].chain_id[0] ? v[i].chain_id : NULL, "generation",
				(json_int_t)v[i].generation, "added", (json_int_t)v[i].added,
				"chunks", (json_int_t)v[i].chunks, "zero_chunks",
				(json_int_t)v[i].zero_chunks, "unique_bytes",
				(json_int_t)v[i].unique_bytes));
		print_json(arr);
	} else {
		printf("%-24s %14s %-6s %9s %14s  %s\n", "NAME", "SIZE", "FORMAT", "CHUNKS", "UNIQUE", "CHAIN");
		for (size_t i = 0; i < n; i++)
			printf("%-24s %14llu %-6s %9llu %14llu  %s\n", v[i].name, (unsigned long long)v[i].size,
			       v[i].format, (unsigned long long)v[i].chunks,
			       (unsigned long long)v[i].unique_bytes, v[i].chain_id[0] ? v[i].chain_id : "-");
	}
	free(v);
	return 0;
}

static int s_du(int argc, char **argv)
{
	struct sargs a;
	struct error e = { 0 };
	struct store *s;
	struct store_du du;
	int rc = parse(argc, argv, &a, 1);

	if (rc)
		return rc;
	if (store_open(&s, a.pos[0], false, &e))
		return fail(&e);
	rc = store_du(s, &du, &e);
	store_close(s);
	if (rc)
		return fail(&e);
	if (json_out(&a))
		print_json(json_pack("{s:I, s:I, s:I, s:I}", "segments", (json_int_t)du.segments,
				     "segment_bytes", (json_int_t)du.segment_bytes, "chunks",
				     (json_int_t)du.chunks, "chunk_bytes", (json_int_t)du.chunk_bytes));
	else
		printf("%llu segments, %llu bytes on disk; %llu chunks, %llu bytes uncompressed\n",
		       (unsigned long long)du.segments, (unsigned long long)du.segment_bytes,
		       (unsigned long long)du.chunks, (unsigned long long)du.chunk_bytes);
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
	rc = store_rm(s, a.pos[1], &e);
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

static int s_help(int argc, char **argv)
{
	printf("usage: shoal store SUBCOMMAND DIR ...\n"
	       "  init DIR                              make an empty store\n"
	       "  add DIR IMAGE [--name NAME] [-f FMT]  add a raw or qcow2 image (alias: import)\n"
	       "  get DIR NAME OUT [--format raw|qcow2] rebuild an image (alias: export)\n"
	       "  ls DIR [--output json]                the images\n"
	       "  du DIR [--output json]                segments and bytes\n"
	       "  rm DIR NAME                           forget an image (gc frees its chunks)\n"
	       "  gc DIR [--output json]                drop unreferenced chunks, compact segments\n"
	       "  verify DIR [--output json]            re-hash every chunk\n");
	return 0;
}

int cmd_store(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} sub[] = { { "init", s_init }, { "add", s_add },   { "import", s_add }, { "get", s_get },
		    { "export", s_get },  { "ls", s_ls },     { "du", s_du },       { "rm", s_rm },
		    { "gc", s_gc },       { "verify", s_verify }, { "help", s_help } };

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
