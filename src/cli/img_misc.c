/*
 * img_misc.c - `shoal img resize` and `shoal img snapshot`.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/size.h"
#include "block/qcow2.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "base/exitcode.h"

int img_resize(int argc, char **argv)
{
	static const struct option lo[] = { { "shrink", no_argument, 0, 'S' }, { 0 } };
	const char *fmt = NULL, *arg;
	struct blockdev *bd;
	struct error e = { 0 };
	uint64_t n, size;
	bool shrink = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:q", lo, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'S')
			shrink = true;
		else if (c != 'q')
			return EXIT_USAGE;
	}
	if (optind + 2 != argc)
		return img_usage("resize: FILE SIZE expected");
	arg = argv[optind + 1];
	if (size_parse(arg + (*arg == '+' || *arg == '-'), &n))
		return img_usage("resize: bad size '%s'", arg);
	r = img_open(&bd, argv[optind], fmt, IMG_RW | IMG_FORCE | IMG_NO_BACKING);
	if (r)
		return r;
	size = *arg == '+' ? bd->size + n : *arg == '-' ? bd->size - n : n;
	if (*arg == '-' && n > bd->size)
		size = 0;
	if (size < bd->size && !shrink) {
		blockdev_close(bd);
		return img_usage("resize: shrinking needs --shrink (data past the end is lost)");
	}
	if (bd->format == BD_FMT_QCOW2)
		r = qcow2_resize(bd, size, &e) ? img_fail(&e) : 0;
	else if (ftruncate(bd->fd, size) < 0) {
		fprintf(stderr, "shoal: %s: %s\n", bd->path, strerror(errno));
		r = EXIT_HOST;
	}
	blockdev_close(bd);
	if (!r)
		printf("Image resized.\n");
	return r;
}

static int snap_list(struct blockdev *bd)
{
	struct qcow2 *q = bd->priv;

	printf("Snapshot list:\n%-4s %-20s %10s %-19s\n", "ID", "TAG", "DISK SIZE", "DATE");
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct qcow2_snapshot *s = &q->snaps[i];
		time_t t = s->date_sec;
		char date[32];

		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime(&t));
		printf("%-4s %-20s %10llu %s\n", s->id, s->name,
		       (unsigned long long)s->disk_size, date);
	}
	return 0;
}

int img_snapshot(int argc, char **argv)
{
	const char *fmt = NULL, *name = NULL;
	struct blockdev *bd;
	struct error e = { 0 };
	unsigned share = 0;
	int c, r, op = 'l';

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:lc:a:d:qU", img_share_longopts, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'c' || c == 'a' || c == 'd')
			op = c, name = optarg;
		else if (c == 'l')
			op = 'l';
		else if (c == 'U')
			share = IMG_SHARE;
		else if (c != 'q')
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("snapshot: FILE expected");
	r = img_open(&bd, argv[optind], fmt, (op != 'l' ? IMG_RW : 0) | IMG_FORCE | IMG_NO_BACKING |
		     share);
	if (r)
		return r;
	if (bd->format != BD_FMT_QCOW2) {
		blockdev_close(bd);
		return img_usage("snapshot: %s is not a qcow2 image", argv[optind]);
	}
	switch (op) {
	case 'l': r = snap_list(bd); break;
	case 'c': r = qcow2_snapshot_create(bd, name, &e); break;
	case 'a': r = qcow2_snapshot_apply(bd, name, &e); break;
	default: r = qcow2_snapshot_delete(bd, name, &e); break;
	}
	if (r < 0)
		r = img_fail(&e);
	blockdev_close(bd);
	return r;
}
