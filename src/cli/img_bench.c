/*
 * img_bench.c - `shoal img bench`: queue-depth I/O benchmark, with the
 * options and access pattern of `qemu-img bench` so the two can run side
 * by side on the same file (--compare-qemu).
 *
 * Pattern (as qemu-img bench): request i goes to offset + i*step, wrapped
 * to stay inside the image; step = size gives sequential I/O, a large
 * step not dividing the image gives a scattered ("random-like") pattern.
 * Requests go through the block layer's async path (io_uring when the
 * kernel has it), `depth` of them in flight.
 *
 * With --compare-qemu the same run is repeated `rounds` times alternating
 * Shoal and qemu-img bench, and the medians and their ratio are printed
 * (timings on shared machines are noisy: never use them as pass/fail).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/size.h"
#include "cli/commands.h"
#include "cli/img.h"
#include "base/exitcode.h"

struct bench {
	const char *path, *fmt;
	bool write;
	unsigned share;		/* -U: IMG_SHARE */
	int depth;
	uint64_t count, size, step, offset;
	int rounds;
	bool compare_qemu;
	/* run state */
	struct blockdev *bd;
	uint64_t next, submitted, completed;
	uint64_t image_size;
	int err;
};

struct bench_slot {
	struct bd_req req;
	struct iovec iov;
	struct bench *b;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Offset of the next request, wrapped like qemu-img bench's. */
static uint64_t bench_next_off(struct bench *b)
{
	uint64_t off = b->next;

	b->next += b->step;
	if (b->image_size <= b->size)
		b->next = 0;
	else
		b->next %= b->image_size - b->size;
	return off;
}

static void bench_submit(struct bench_slot *s);

static void bench_done(struct bd_req *req, int ret)
{
	struct bench_slot *s = req->opaque;
	struct bench *b = s->b;

	if (ret && !b->err)
		b->err = ret;
	b->completed++;
	if (b->submitted < b->count && !b->err)
		bench_submit(s);
}

static void bench_submit(struct bench_slot *s)
{
	struct bench *b = s->b;

	s->req = (struct bd_req){ .op = b->write ? BD_OP_WRITE : BD_OP_READ,
		.off = bench_next_off(b), .len = b->size, .iov = &s->iov, .iovcnt = 1,
		.done = bench_done, .opaque = s };
	b->submitted++;
	if (blockdev_submit(b->bd, &s->req) < 0 && !b->err) {
		b->err = -EIO;
		b->completed++;
	}
}

/* One Shoal run; returns seconds or a negative value on error. */
static double bench_run_shoal(struct bench *b, bool verbose)
{
	struct bench_slot *slots = calloc(b->depth, sizeof(*slots));
	uint8_t *mem = bd_memalign((size_t)b->depth * ((b->size + 4095) & ~4095ull));
	double t0, t;
	int r;

	if (!slots || !mem)
		return -1;
	r = img_open(&b->bd, b->path, b->fmt, (b->write ? IMG_RW : 0) | IMG_FORCE | b->share);
	if (r) {
		free(slots);
		free(mem);
		return -1;
	}
	memset(mem, 0xa5, (size_t)b->depth * ((b->size + 4095) & ~4095ull));
	b->image_size = b->bd->size;
	b->next = b->offset;
	b->submitted = b->completed = 0;
	b->err = 0;
	if (verbose)
		printf("Sending %llu requests, %llu bytes each, %d in parallel (starting at "
		       "offset %llu, step size %llu), engine %s\n", (unsigned long long)b->count,
		       (unsigned long long)b->size, b->depth, (unsigned long long)b->offset,
		       (unsigned long long)b->step, blockdev_engine_name(b->bd));
	t0 = now();
	for (int i = 0; i < b->depth && b->submitted < b->count; i++) {
		slots[i].b = b;
		slots[i].iov.iov_base = mem + (size_t)i * ((b->size + 4095) & ~4095ull);
		slots[i].iov.iov_len = b->size;
		bench_submit(&slots[i]);
	}
	while (b->completed < b->submitted && !b->err)
		if (blockdev_poll(b->bd, 1) < 0)
			b->err = -EIO;
	while (blockdev_inflight(b->bd) > 0 && blockdev_poll(b->bd, 1) > 0)
		;
	t = now() - t0;		/* like qemu-img bench: the closing flush is not timed */
	if (b->write && !b->err)
		b->err = blockdev_flush(b->bd);
	if (b->err)
		fprintf(stderr, "shoal: bench: %s: %s\n", b->path,
			b->bd->err.msg[0] ? b->bd->err.msg : strerror(-b->err));
	blockdev_close(b->bd);
	free(slots);
	free(mem);
	return b->err ? -1 : t;
}

/* One qemu-img bench run with the same parameters; seconds or -1. */
static double bench_run_qemu(struct bench *b)
{
	char cmd[1024], line[256];
	double t = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "qemu-img bench %s%s %s -c %llu -d %d -s %llu -S %llu "
		 "-o %llu -t writeback '%s' 2>&1", b->fmt ? "-f " : "", b->fmt ? b->fmt : "",
		 b->write ? "-w" : "", (unsigned long long)b->count, b->depth,
		 (unsigned long long)b->size, (unsigned long long)b->step,
		 (unsigned long long)b->offset, b->path);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (fgets(line, sizeof(line), p))
		if (sscanf(line, "Run completed in %lf seconds", &t) == 1)
			break;
	while (fgets(line, sizeof(line), p))
		;
	pclose(p);
	return t;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int bench_compare(struct bench *b)
{
	double s[32], q[32], ms, mq;
	int n = b->rounds > 32 ? 32 : b->rounds;

	/* warm-up, not counted: first-touch allocation and the page cache */
	if (bench_run_shoal(b, true) < 0 || bench_run_qemu(b) < 0)
		return EXIT_HOST;
	for (int i = 0; i < n; i++) {
		s[i] = bench_run_shoal(b, false);
		q[i] = bench_run_qemu(b);
		if (s[i] < 0 || q[i] < 0) {
			fprintf(stderr, "shoal: bench: round %d failed (%s)\n", i,
				s[i] < 0 ? "shoal" : "qemu-img bench");
			return EXIT_HOST;
		}
	}
	ms = median(s, n);
	mq = median(q, n);
	printf("shoal:    median %.3f s  %.0f IOPS  %.1f MiB/s  (%d rounds)\n", ms,
	       b->count / ms, b->count * (double)b->size / ms / 1048576, n);
	printf("qemu-img: median %.3f s  %.0f IOPS  %.1f MiB/s\n", mq, b->count / mq,
	       b->count * (double)b->size / mq / 1048576);
	printf("ratio (qemu-img time / shoal time): %.2f\n", mq / ms);
	return 0;
}

int img_bench(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "compare-qemu", no_argument, 0, 'Q' },
		{ "rounds", required_argument, 0, 'R' },
		{ "force-share", no_argument, 0, 'U' }, { 0 } };
	struct bench b = { .depth = 64, .count = 75000, .size = 4096, .rounds = 3 };
	bool step_set = false;
	double t;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "f:wd:c:s:S:o:t:nqU", lo, NULL)) != -1) {
		switch (c) {
		case 'f': b.fmt = optarg; break;
		case 'w': b.write = true; break;
		case 'd': b.depth = atoi(optarg); break;
		case 'c': b.count = strtoull(optarg, NULL, 0); break;
		case 's': if (size_parse(optarg, &b.size)) return img_usage("bad -s"); break;
		case 'S': if (size_parse(optarg, &b.step)) return img_usage("bad -S");
			  step_set = true; break;
		case 'o': if (size_parse(optarg, &b.offset)) return img_usage("bad -o"); break;
		case 'Q': b.compare_qemu = true; break;
		case 'R': b.rounds = atoi(optarg); break;
		case 'U': b.share = IMG_SHARE; break;
		case 't': case 'n': case 'q': break;
		default: return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return img_usage("bench: FILE expected");
	if (b.depth < 1 || b.depth > 1024 || !b.size || b.size > (64u << 20) || b.rounds < 1)
		return img_usage("bench: depth 1..1024, size up to 64M, rounds >= 1");
	if (!step_set)
		b.step = b.size;
	b.path = argv[optind];
	if (b.compare_qemu)
		return bench_compare(&b);
	t = bench_run_shoal(&b, true);
	if (t < 0)
		return EXIT_HOST;
	printf("Run completed in %.3f seconds (%.0f IOPS, %.1f MiB/s).\n", t, b.count / t,
	       b.count * (double)b.size / t / 1048576);
	return 0;
}
