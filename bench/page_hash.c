/*
 * bench/page_hash.c - the CPU cost of --mem-recovery's page hashes
 * (mem/page_hash.c, docs/benchmarks.md "Page hashes").
 *
 *   page_hash [-n RUNS] [-m MIB]   hash MIB (default 256) of random pages,
 *                                  4 KiB at a time with XXH3-64 as the layer
 *                                  does at a restore, RUNS times (default 7);
 *                                  prints each run and the median as ms per
 *                                  GiB and GiB/s, and memcpy of the same
 *                                  bytes for scale
 *
 *   page_hash -p                   (root, a throwaway machine such as the
 *                                  KVM box: it poisons a page for good) the
 *                                  probe behind docs/memory.md: which steps
 *                                  put a good page back in place of a
 *                                  poisoned page of a MAP_SHARED memfd
 *
 * Random bytes, so nothing is cheaper than real memory; the buffer is
 * touched before the first run, so page faults are not counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mem/page_hash.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static sigjmp_buf probe_jmp;
static volatile int probe_code;

static void probe_sigbus(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	probe_code = si->si_code;
	siglongjmp(probe_jmp, 1);
}

/* Read the first byte of `p`: its value, or what the SIGBUS said. */
static void probe_read(const char *step, volatile uint8_t *p, int fd)
{
	uint8_t b = 0;
	ssize_t n = pread(fd, &b, 1, 4096);

	printf("  %-34s pread: %s", step, n == 1 ? "" : strerror(errno));
	if (n == 1)
		printf("0x%02x", b);
	if (sigsetjmp(probe_jmp, 1))
		printf("; load: SIGBUS code %d%s\n", probe_code,
		       probe_code == BUS_MCEERR_AR ? " (BUS_MCEERR_AR)" : "");
	else
		printf("; load: 0x%02x\n", *p);
}

static int probe(void)
{
	struct sigaction sa = { .sa_sigaction = probe_sigbus, .sa_flags = SA_SIGINFO };
	int fd = memfd_create("shoal-probe", 0);
	uint8_t *m, good[4096];

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	if (fd < 0 || ftruncate(fd, 3 * 4096) < 0)
		return perror("memfd"), 1;
	m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	memset(m, 0xaa, 3 * 4096);
	memset(good, 0xbb, sizeof(good));
	printf("probe: a MAP_SHARED memfd of 3 pages of 0xaa; page 1 poisoned\n");
	if (madvise(m + 4096, 4096, MADV_HWPOISON) < 0) {
		printf("  MADV_HWPOISON: %s (root and CONFIG_MEMORY_FAILURE needed)\n", strerror(errno));
		return 1;
	}
	probe_read("poisoned:", m + 4096, fd);
	printf("  punch: %d\n", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
	probe_read("after the punch:", m + 4096, fd);
	printf("  pwrite 0xbb: %zd\n", pwrite(fd, good, sizeof(good), 4096));
	probe_read("after the punch and pwrite:", m + 4096, fd);
	printf("  MADV_DONTNEED: %d\n", madvise(m + 4096, 4096, MADV_DONTNEED));
	probe_read("after MADV_DONTNEED too:", m + 4096, fd);
	printf("  neighbours: 0x%02x 0x%02x\n", m[0], m[2 * 4096]);
	return 0;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int runs = 7, c;
	unsigned long mib = 256;
	uint8_t *buf, *dst;
	uint64_t *out, pages, sum = 0;
	double t[64], tc[64], gib;

	while ((c = getopt(argc, argv, "n:m:p")) != -1) {
		if (c == 'p')
			return probe();
		if (c == 'n')
			runs = atoi(optarg);
		else if (c == 'm')
			mib = strtoul(optarg, NULL, 10);
		else {
			fprintf(stderr, "usage: page_hash [-n RUNS] [-m MIB] | -p\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 64 || mib < 1 || mib > 65536) {
		fprintf(stderr, "page_hash: -n 1..64, -m 1..65536\n");
		return 2;
	}
	pages = (uint64_t)mib * 256;
	gib = mib / 1024.0;
	buf = malloc(pages * 4096);
	dst = malloc(pages * 4096);
	out = malloc(pages * 8);
	if (!buf || !dst || !out) {
		fprintf(stderr, "page_hash: out of memory for %lu MiB\n", mib);
		return 1;
	}
	srand(1);
	for (uint64_t i = 0; i < pages * 4096 / 4; i++)
		((uint32_t *)buf)[i] = (uint32_t)rand() * 2654435761u;
	memset(dst, 1, pages * 4096);
	for (int r = 0; r < runs; r++) {
		double t0 = now();

		page_hash_pages(buf, pages, out);
		t[r] = now() - t0;
		sum += out[r % pages];
		t0 = now();
		memcpy(dst, buf, pages * 4096);
		tc[r] = now() - t0;
		sum += dst[r];
		printf("run %d: hash %.1f ms/GiB, memcpy %.1f ms/GiB\n", r, t[r] * 1e3 / gib,
		       tc[r] * 1e3 / gib);
	}
	qsort(t, (size_t)runs, sizeof(t[0]), cmp);
	qsort(tc, (size_t)runs, sizeof(tc[0]), cmp);
	printf("median: XXH3-64 per 4 KiB page: %.1f ms per GiB (%.2f GiB/s), memcpy %.1f ms per GiB; "
	       "%lu MiB, %d runs (checksum %llx)\n", t[runs / 2] * 1e3 / gib, gib / t[runs / 2],
	       tc[runs / 2] * 1e3 / gib, mib, runs, (unsigned long long)sum);
	free(buf);
	free(dst);
	free(out);
	return 0;
}
