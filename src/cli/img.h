/*
 * img.h - helpers shared by the `shoal img` subcommands (img*.c).
 */
#ifndef SHOAL_CLI_IMG_H
#define SHOAL_CLI_IMG_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/blockdev.h"
#include "block/qcow2.h"

/* create -o options, shared with convert -O qcow2. */
struct create_args {
	const char *fmt, *backing, *bfmt;
	struct qcow2_create_opts q;
	bool prealloc_raw;
};
int img_parse_create_opts(struct create_args *a, char *list);

/* How img_open opens an image. */
enum img_open_flags {
	IMG_RW = 1 << 0,		/* for writing */
	IMG_FORCE = 1 << 1,		/* despite a chain-identity mismatch */
	IMG_NO_BACKING = 1 << 2,	/* the image alone, not its chain */
	IMG_SHARE = 1 << 3,		/* -U: share it with writers (read-only) */
	IMG_CONSISTENT = 1 << 4,	/* read-only, but a raw image must not be
					 * written by others meanwhile (convert's
					 * source, as in qemu-img) */
};
int img_open(struct blockdev **bd, const char *path, const char *fmt, unsigned flags);
/* The long options of a verb whose only one is --force-share (-U). */
extern const struct option img_share_longopts[];
int img_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int img_fail(struct error *e);
void img_progress(bool on, uint64_t done, uint64_t total);
bool img_is_zero(const void *buf, size_t len);
int img_chain_status(struct blockdev *bd, uint64_t off, uint64_t len, struct bd_extent *x,
		     const char **file);

int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_map(int argc, char **argv);
int img_io(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_commit(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_snapshot(int argc, char **argv);
int img_bench(int argc, char **argv);
int img_cidata(int argc, char **argv);

#endif
