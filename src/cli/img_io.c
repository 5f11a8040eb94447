/*
 * img_io.c - `shoal img io`: scripted I/O on an image, as qemu-io does.
 *
 * Commands (from -c, or one per line on stdin when no -c is given):
 *   read [-P PAT] OFF LEN       read; with -P verify every byte is PAT
 *   write [-P PAT] OFF LEN      write LEN bytes of PAT (default 0xcd)
 *   write -z OFF LEN            zero write
 *   write -s FILE OFF LEN       write LEN bytes taken from FILE
 *   discard OFF LEN             discard (reads back as zeros)
 *   flush                       flush; prints "flushed N" once durable
 * Each command prints one line; a failed command stops the script with a
 * non-zero status.  stdout is flushed after every line, so a test that
 * kills the process knows exactly which flushes were acknowledged.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/size.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "base/exitcode.h"

#define IO_MAX_LEN (256u << 20)
#define IO_MAX_ARGS 16

struct io_cmd {
	int argc;
	char *argv[IO_MAX_ARGS];
	int pattern;		/* -P, or -1 */
	bool zero;		/* -z */
	const char *src;	/* -s FILE */
	uint64_t off, len;
};

static uint64_t nb_flushes;

/* Split a command line and pick out the options. */
static int io_parse(char *line, struct io_cmd *c)
{
	char *save;

	memset(c, 0, sizeof(*c));
	c->pattern = -1;
	for (char *t = strtok_r(line, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
		if (c->argc == IO_MAX_ARGS)
			return -1;
		c->argv[c->argc++] = t;
	}
	for (int i = 1; i < c->argc; ) {
		if (!strcmp(c->argv[i], "-P") && i + 1 < c->argc) {
			c->pattern = strtol(c->argv[i + 1], NULL, 0) & 0xff;
		} else if (!strcmp(c->argv[i], "-s") && i + 1 < c->argc) {
			c->src = c->argv[i + 1];
		} else if (!strcmp(c->argv[i], "-z")) {
			c->zero = true;
			memmove(&c->argv[i], &c->argv[i + 1], (c->argc - i - 1) * sizeof(char *));
			c->argc--;
			continue;
		} else if (!strcmp(c->argv[i], "-q")) {
			memmove(&c->argv[i], &c->argv[i + 1], (c->argc - i - 1) * sizeof(char *));
			c->argc--;
			continue;
		} else {
			i++;
			continue;
		}
		memmove(&c->argv[i], &c->argv[i + 2], (c->argc - i - 2) * sizeof(char *));
		c->argc -= 2;
	}
	return 0;
}

static int io_range(struct io_cmd *c)
{
	if (c->argc != 3 || size_parse(c->argv[1], &c->off) ||
	    size_parse(c->argv[2], &c->len)) {
		fprintf(stderr, "shoal: io: %s: expected OFFSET LENGTH\n", c->argv[0]);
		return -1;
	}
	if (c->len > IO_MAX_LEN) {
		fprintf(stderr, "shoal: io: %s: length over %u\n", c->argv[0], IO_MAX_LEN);
		return -1;
	}
	return 0;
}

static int io_read(struct blockdev *bd, struct io_cmd *c, uint8_t *buf)
{
	if (io_range(c))
		return EXIT_USAGE;
	if (blockdev_read(bd, buf, c->off, c->len)) {
		fprintf(stderr, "shoal: io: read failed: %s\n", bd->err.msg);
		return EXIT_HOST;
	}
	for (uint64_t i = 0; c->pattern >= 0 && i < c->len; i++) {
		if (buf[i] != c->pattern) {
			printf("Pattern verification failed at offset %llu, %llu bytes\n",
			       (unsigned long long)(c->off + i), (unsigned long long)c->len);
			return 1;
		}
	}
	printf("read %llu/%llu bytes at offset %llu\n", (unsigned long long)c->len,
	       (unsigned long long)c->len, (unsigned long long)c->off);
	return 0;
}

static int io_load_src(struct io_cmd *c, uint8_t *buf)
{
	int fd = open(c->src, O_RDONLY);
	int r;

	if (fd < 0) {
		fprintf(stderr, "shoal: io: %s: %s\n", c->src, strerror(errno));
		return EXIT_NOINPUT;
	}
	r = bd_pread(fd, buf, c->len, 0, true);
	close(fd);
	return r ? EXIT_NOINPUT : 0;
}

static int io_write(struct blockdev *bd, struct io_cmd *c, uint8_t *buf)
{
	int r;

	if (io_range(c))
		return EXIT_USAGE;
	if (c->zero) {
		r = blockdev_write_zeroes(bd, c->off, c->len);
	} else {
		if (c->src && (r = io_load_src(c, buf)))
			return r;
		if (!c->src)
			memset(buf, c->pattern >= 0 ? c->pattern : 0xcd, c->len);
		r = blockdev_write(bd, buf, c->off, c->len);
	}
	if (r) {
		fprintf(stderr, "shoal: io: write failed: %s\n", bd->err.msg);
		return EXIT_HOST;
	}
	printf("wrote %llu/%llu bytes at offset %llu\n", (unsigned long long)c->len,
	       (unsigned long long)c->len, (unsigned long long)c->off);
	return 0;
}

/* Run one command line. */
static int io_run(struct blockdev *bd, char *line, uint8_t *buf)
{
	struct io_cmd c;
	int r = 0;

	if (io_parse(line, &c) < 0)
		return EXIT_USAGE;
	if (!c.argc || c.argv[0][0] == '#')
		return 0;
	if (!strcmp(c.argv[0], "read")) {
		r = io_read(bd, &c, buf);
	} else if (!strcmp(c.argv[0], "write")) {
		r = io_write(bd, &c, buf);
	} else if (!strcmp(c.argv[0], "discard") || !strcmp(c.argv[0], "aio_discard")) {
		if (io_range(&c))
			return EXIT_USAGE;
		if (blockdev_discard(bd, c.off, c.len)) {
			fprintf(stderr, "shoal: io: discard failed: %s\n", bd->err.msg);
			return EXIT_HOST;
		}
		printf("discard %llu/%llu bytes at offset %llu\n", (unsigned long long)c.len,
		       (unsigned long long)c.len, (unsigned long long)c.off);
	} else if (!strcmp(c.argv[0], "flush")) {
		if (blockdev_flush(bd)) {
			fprintf(stderr, "shoal: io: flush failed: %s\n", bd->err.msg);
			return EXIT_HOST;
		}
		printf("flushed %llu\n", (unsigned long long)++nb_flushes);
	} else {
		fprintf(stderr, "shoal: io: unknown command '%s'\n", c.argv[0]);
		return EXIT_USAGE;
	}
	fflush(stdout);
	return r;
}

int img_io(int argc, char **argv)
{
	static const struct option lo[] = { { "force", no_argument, 0, 'F' },
					    { "force-share", no_argument, 0, 'U' }, { 0 } };
	const char *fmt = NULL, *cmds[256];
	int nc = 0, c, r;
	bool force = false, ro = false;
	unsigned share = 0;
	struct blockdev *bd;
	uint8_t *buf;
	char line[4096];

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:c:rU", lo, NULL)) != -1) {
		if (c == 'f')
			fmt = optarg;
		else if (c == 'c' && nc < 256)
			cmds[nc++] = optarg;
		else if (c == 'F')
			force = true;
		else if (c == 'r')
			ro = true;
		else if (c == 'U')
			share = IMG_SHARE;
		else
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return img_usage("io: FILE expected");
	r = img_open(&bd, argv[optind], fmt, (ro ? 0 : IMG_RW) | (force ? IMG_FORCE : 0) | share);
	if (r)
		return r;
	buf = malloc(IO_MAX_LEN);
	if (!buf) {
		blockdev_close(bd);
		return EXIT_HOST;
	}
	for (int i = 0; !r && i < nc; i++) {
		snprintf(line, sizeof(line), "%s", cmds[i]);
		r = io_run(bd, line, buf);
	}
	while (!r && !nc && fgets(line, sizeof(line), stdin))
		r = io_run(bd, line, buf);
	free(buf);
	blockdev_close(bd);
	return r;
}
