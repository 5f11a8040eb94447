/*
 * bench/store.c - figures for the image store (docs/benchmarks.md, run by
 * scripts/bench-store.sh).
 *
 *   store images DIR A B [AVG...]  for each average chunk size (default
 *                                  4k 8k 16k 32k 64k; min avg/4, max avg*8):
 *                                  a fresh store in DIR/avgN, add A then B,
 *                                  get B; prints chunks, new bytes of B, the
 *                                  dedup ratio (bytes in / unique bytes kept),
 *                                  bytes on disk, add and get throughput
 *   store bloom [PER]              lookup cost of the two-dimensional Bloom
 *                                  array at 1k, 10k and 100k segments of PER
 *                                  chunks (default 1024, the store's segment
 *                                  limit), against a plain on-disk hash index
 *                                  (open addressing, 16-byte slots, mmap)
 *
 * Synthetic keys for the index: random 32-byte names, as SHA-256 names are.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/io.h"
#include "block/blockdev.h"
#include "store/bloom2d.h"
#include "store/store.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng = 0x1234567;

static uint64_t next64(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void key(uint64_t seed, uint8_t h[32])
{
	uint64_t save = rng;

	rng = seed * 0x2545F4914F6CDD1Dull;
	for (int i = 0; i < 4; i++) {
		uint64_t v = next64();

		memcpy(h + 8 * i, &v, 8);
	}
	rng = save;
}

static int add_one(const char *sdir, const char *img, const char *name, struct store_add_stats *st)
{
	struct store *s;
	struct blockdev *bd;
	struct blockdev_opts o = { .readonly = true, .caller_reports = true };
	struct error e = { 0 };

	if (blockdev_open(&bd, img, &o, &e) || store_open(&s, sdir, true, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
	int rc = store_add(s, bd, name, st, NULL, NULL, &e);
	store_close(s);
	blockdev_close(bd);
	if (rc) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
	return 0;
}

static int discard(void *o, const void *b, uint64_t off, uint64_t len, struct error *e)
{
	*(uint64_t *)o += len;
	return 0;
}

static int bench_images(int argc, char **argv)
{
	static const uint32_t def[] = { 4096, 8192, 16384, 32768, 65536 };
	const char *dir = argv[0], *a = argv[1], *b = argv[2];
	int n = argc > 3 ? argc - 3 : 5;

	printf("%-6s %8s %8s %12s %12s %7s %12s %9s %9s\n", "avg", "chunksA", "chunksB", "B new bytes",
	       "unique", "dedup", "on disk", "add MB/s", "get MB/s");
	for (int i = 0; i < n; i++) {
		uint32_t avg = argc > 3 ? (uint32_t)strtoul(argv[3 + i], NULL, 0) : def[i];
		struct store_params p;
		struct store_add_stats sa, sb;
		struct store_du du;
		struct error e = { 0 };
		char sdir[4096];
		struct store *s;
		uint64_t size, got = 0;

		store_params_default(&p);
		p.chunk = (struct chunker_params){ avg / 4, avg, avg * 8 };
		snprintf(sdir, sizeof(sdir), "%s/avg%u", dir, avg);
		if (store_init(sdir, &p, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return 1;
		}
		double t0 = now();
		add_one(sdir, a, "a", &sa);
		add_one(sdir, b, "b", &sb);
		double t1 = now();
		if (store_open(&s, sdir, false, &e) || store_du(s, &du, &e) ||
		    store_get(s, "b", &size, NULL, discard, &got, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return 1;
		}
		double t2 = now();
		store_close(s);
		double in = (double)(sa.image_bytes + sb.image_bytes);
		printf("%-6u %8llu %8llu %12llu %12llu %7.2f %12llu %9.0f %9.0f\n", avg,
		       (unsigned long long)sa.chunks, (unsigned long long)sb.chunks,
		       (unsigned long long)sb.new_bytes, (unsigned long long)du.chunk_bytes,
		       in / (double)du.chunk_bytes, (unsigned long long)du.segment_bytes,
		       in / (t1 - t0) / 1e6, (double)sb.image_bytes / (t2 - t1) / 1e6);
	}
	return 0;
}

/* A plain on-disk hash index: 2x as many 16-byte slots as keys (8 bytes of
 * the name, the segment id, a used mark), linear probing, mmap'd. */
struct plain {
	uint64_t *slot;	/* pairs: key, (seg << 1) | 1 */
	uint64_t n;
	int fd;
	size_t bytes;
};

static void plain_put(struct plain *p, const uint8_t h[32], uint32_t seg)
{
	uint64_t k;

	memcpy(&k, h, 8);
	for (uint64_t i = k % p->n;; i = (i + 1) % p->n)
		if (!p->slot[2 * i + 1]) {
			p->slot[2 * i] = k;
			p->slot[2 * i + 1] = ((uint64_t)seg << 1) | 1;
			return;
		}
}

static int64_t plain_get(const struct plain *p, const uint8_t h[32])
{
	uint64_t k;

	memcpy(&k, h, 8);
	for (uint64_t i = k % p->n; p->slot[2 * i + 1]; i = (i + 1) % p->n)
		if (p->slot[2 * i] == k)
			return (int64_t)(p->slot[2 * i + 1] >> 1);
	return -1;
}

static int bench_bloom(int argc, char **argv)
{
	static const uint32_t sizes[] = { 1000, 10000, 100000 };
	uint32_t per = argc > 0 ? (uint32_t)strtoul(argv[0], NULL, 0) : 1024;
	const uint32_t Q = 20000;
	uint32_t *out = malloc(200000 * sizeof(*out));

	printf("%8s %6s %10s %11s %11s %9s %10s %11s %11s %10s\n", "segments", "per", "bloom MiB",
	       "hit ns", "miss ns", "cands", "fp formula", "plain MiB", "plain ns", "build s");
	for (int si = 0; si < 3; si++) {
		uint32_t S = sizes[si];
		struct bloom2d b;
		uint8_t h[32];
		double t0 = now();

		bloom2d_init(&b, 16384, 7, NULL);
		for (uint32_t c = 0; c < S; c++) {
			bloom2d_add_column(&b, c);
			for (uint32_t i = 0; i < per; i++) {
				key((uint64_t)c * per + i, h);
				bloom2d_add(&b, c, h);
			}
		}
		double build = now() - t0;
		/* present keys (random columns) and absent ones, after a warm-up
		 * pass that faults the array in */
		uint64_t cands = 0;
		for (uint32_t q = 0; q < Q; q++) {
			key(((uint64_t)1 << 52) + q, h);
			bloom2d_lookup(&b, h, out, 200000);
		}
		double t1 = now();
		for (uint32_t q = 0; q < Q; q++) {
			key((uint64_t)(next64() % S) * per + next64() % per, h);
			cands += bloom2d_lookup(&b, h, out, 200000);
		}
		double hit = (now() - t1) / Q * 1e9;
		t1 = now();
		for (uint32_t q = 0; q < Q; q++) {
			key(((uint64_t)1 << 50) + q, h);
			cands += bloom2d_lookup(&b, h, out, 200000);
		}
		double miss = (now() - t1) / Q * 1e9;
		double mib = (double)b.m * (b.cap / 8) / (1 << 20);
		bloom2d_free(&b);

		/* The plain index of the same keys. */
		struct plain p = { .n = 2ull * S * per };
		char path[] = "/tmp/bench-store-plain.XXXXXX";
		double pmib = (double)p.n * 16 / (1 << 20), pns = 0;
		p.fd = mkstemp(path);
		p.bytes = p.n * 16;
		/* Built in memory, written out in one pass, then mapped from
		 * the file for the lookups (page cache warm, as the Bloom
		 * array is in memory). */
		p.slot = mmap(NULL, p.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p.fd >= 0 && p.slot != MAP_FAILED) {
			for (uint32_t c = 0; c < S; c++)
				for (uint32_t i = 0; i < per; i++) {
					key((uint64_t)c * per + i, h);
					plain_put(&p, h, c);
				}
			int wr = write_all(p.fd, p.slot, p.bytes);
			munmap(p.slot, p.bytes);
			p.slot = wr ? MAP_FAILED : mmap(NULL, p.bytes, PROT_READ, MAP_SHARED, p.fd, 0);
		}
		if (p.slot != MAP_FAILED) {
			int64_t sink = 0;
			for (uint32_t q = 0; q < Q; q++) {
				key(((uint64_t)1 << 52) + q, h);
				sink += plain_get(&p, h);
			}
			t1 = now();
			for (uint32_t q = 0; q < Q; q++) {
				key((uint64_t)(next64() % S) * per + next64() % per, h);
				sink += plain_get(&p, h);
			}
			pns = (now() - t1) / Q * 1e9;
			if (sink == 42)
				printf(" ");
			munmap(p.slot, p.bytes);
		}
		if (p.fd >= 0)
			close(p.fd);
		unlink(path);
		printf("%8u %6u %10.1f %11.0f %11.0f %9.3f %10.2e %11.1f %11.0f %10.1f\n", S, per, mib, hit,
		       miss, (double)cands / (2.0 * Q), bloom2d_fp_rate(16384, 7, per) * S, pmib, pns,
		       build);
		fflush(stdout);
	}
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "images"))
		return bench_images(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "bloom"))
		return bench_bloom(argc - 2, argv + 2);
	fprintf(stderr, "usage: %s images DIR A B [AVG...] | bloom [PER]\n", argv[0]);
	return 64;
}
