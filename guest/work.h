/*
 * work.h - the memory and CPU workloads, runnable on any CPU in ring 3.
 */
#ifndef GUEST_WORK_H
#define GUEST_WORK_H

#include <stdbool.h>
#include <stdint.h>

enum work_kind { WORK_FILL, WORK_VERIFY, WORK_DIRTY, WORK_SPIN, WORK_TICK };

struct work {
	enum work_kind kind;
	uint64_t addr, len;	/* fill, verify, dirty: checked by the caller */
	uint64_t seed;		/* fill, verify; dirty's random walk */
	uint64_t rate_mib;	/* dirty: MiB of pages per second, 0 = flat out */
	uint64_t seconds;	/* dirty */
	bool random;		/* dirty: random pages instead of in order */
	uint64_t ms;		/* spin */
	uint64_t tick_us;	/* tick, dirty: a tick on COM1 every tick_us us
				 * of TSC time, 0 = none (boot CPU only) */
};

struct work_result {
	bool ok;		/* false: verify found a mismatch */
	uint64_t sum;		/* fill, verify: sum of the words */
	uint64_t pages;		/* dirty: pages written */
	uint64_t ticks;		/* tick, dirty with tick_us: ticks written */
	char line[192];		/* the report line, without newline */
};

/* Run w on the calling CPU and describe the outcome in *r. */
void work_run(const struct work *w, struct work_result *r);

/* The pattern word stored at address addr (8-byte aligned) for seed. */
uint64_t work_pattern(uint64_t addr, uint64_t seed);

#endif
