/*
 * idle_sample.h - how much of its memory a guest is using: a few hundred
 * random pages per period, each unmapped at the start and checked for a
 * fault at the end (issue 13 item 3; docs/memory.md, "Idle memory").
 *
 * The core works on any MAP_SHARED mapping (a memfd's: the VM's RAM, or a
 * unit test's) through the process's own /proc/self/pagemap; the VMM's
 * control command "memory-activity" drives it, one period per call.
 */
#ifndef SHOAL_MEM_IDLE_SAMPLE_H
#define SHOAL_MEM_IDLE_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

struct vm;

#define IDLE_SAMPLE_DEFAULT 400      /* pages per period */
#define IDLE_SAMPLE_MAX     4096

struct idle_sampler {
	int pagemap_fd;             /* /proc/self/pagemap, opened before the jail */
	uint8_t *base;              /* the MAP_SHARED mapping sampled */
	uint64_t size;              /* its bytes (whole 4 KiB pages) */
	uint64_t rng;               /* xorshift64 state, never 0 */
	uint64_t pages[IDLE_SAMPLE_MAX];   /* this period's sampled page numbers */
	int n;                      /* how many; 0: no period open */
	/* The averages, as fractions 0..1 (valid once periods > 0). */
	double last, fast, slow;
	uint64_t periods;
	uint64_t last_touched, last_sampled;
};

/* Open /proc/self/pagemap for a mapping of `size` bytes at `base`.  0, or
 * -1 with `e` (and s->pagemap_fd -1). */
int idle_sampler_open(struct idle_sampler *s, void *base, uint64_t size, struct error *e);
void idle_sampler_close(struct idle_sampler *s);

/* Close the open period, if any (count the sampled pages mapped again
 * since it began, and fold the fraction into the averages), then open the
 * next one with `npages` fresh random pages (at most one per 64 KiB, so
 * the kernel's fault-around of one cannot map another).  0, or -1 with
 * `e` (the period is then dropped). */
int idle_sampler_period(struct idle_sampler *s, int npages, struct error *e);

/* The estimate of the active fraction: the larger of the slow and the
 * fast average (ESX's rule: up fast, down slowly). */
double idle_sampler_estimate(const struct idle_sampler *s);

/* Fold one period's fraction into the averages (exposed for tests). */
void idle_sampler_fold(struct idle_sampler *s, double fraction);

/* Register {"cmd": "memory-activity"} on the VM's control socket (and
 * open pagemap now, before the jail takes /proc away).  Logs and goes on
 * when there is no room or pagemap cannot be opened (the command then
 * answers the reason). */
void idle_sample_add_command(struct vm *vm);

#endif
