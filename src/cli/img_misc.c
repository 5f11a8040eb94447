/*
 * img_misc.c - `shoal img resize`, `shoal img snapshot` and `shoal img cidata`.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/size.h"
#include "block/qcow2.h"
#include "boot/cidata.h"
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

/* `shoal img cidata OUT user-data=FILE,meta-data=FILE[,network-config=FILE]`:
 * the NoCloud seed `shoal run --cloud-init` attaches, written to a file, for
 * another hypervisor (QEMU's -cdrom) or to look at.  OUT is made new: an
 * existing file is not overwritten, so a typo cannot clobber an image. */
int img_cidata(int argc, char **argv)
{
	struct cidata_files f = { 0 };
	struct error e = { 0 };
	int fd, r;

	if (argc != 3)
		return img_usage("cidata: OUT user-data=FILE,meta-data=FILE[,network-config=FILE] expected");
	if (cidata_from_flags(&f, argv[2], &e))
		return img_fail(&e);
	fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "shoal: %s: %s\n", argv[1],
			errno == EEXIST ? "already exists (cidata makes a new file)" : strerror(errno));
		cidata_free(&f);
		return errno == EEXIST ? EXIT_USAGE : EXIT_HOST;
	}
	r = cidata_build(&f, fd, &e);
	if (!r && fsync(fd) < 0)
		r = error_set(&e, EXIT_HOST, "%s: fsync: %s", argv[1], strerror(errno));
	close(fd);
	cidata_free(&f);
	if (r) {
		unlink(argv[1]);
		return img_fail(&e);
	}
	return 0;
}
