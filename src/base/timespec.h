/*
 * timespec.h - a deadline `ms` milliseconds from now, as the struct
 * timespec that pthread_cond_timedwait and friends want.
 *
 * Several threads (the daemon's peer, network and memory-manager loops,
 * its lifecycle waits, a migration's control, the pv-protect device) wait
 * on a condition until such a deadline.  Each used to add the milliseconds
 * to clock_gettime's answer and carry the nanoseconds over by hand; this
 * is that once.  `clk` must be the clock the wait uses: CLOCK_REALTIME for
 * a condition variable with default attributes, CLOCK_MONOTONIC for one
 * made with pthread_condattr_setclock, or a loop that compares against
 * clock_gettime(CLOCK_MONOTONIC) itself.  `ms` must not be negative.
 */
#ifndef SHOAL_BASE_TIMESPEC_H
#define SHOAL_BASE_TIMESPEC_H

#include <time.h>

static inline struct timespec timespec_after_ms(clockid_t clk, long long ms)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

#endif
