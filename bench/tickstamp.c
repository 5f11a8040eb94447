/*
 * bench/tickstamp.c - timestamp a VM's console output as it arrives, for
 * the downtime as the guest sees it (bench/migrate.sh, docs/benchmarks.md
 * "Live migration: Shoal against QEMU").
 *
 *   tickstamp LOG STAMPS < console
 *
 * Reads a VMM's serial console (its stdout, a pipe) until end of file.
 * Every byte goes to LOG as it came, one write per read, so that a script
 * can wait for text in LOG as it would in a console file.  Every byte of
 * 0x80 and above is a tick of the test guest's `tick` workload (0x80 |
 * its sequence number, seven bits; guest/work.c): for each, one line
 * "SEQ NS" goes to STAMPS, NS the CLOCK_MONOTONIC time in nanoseconds at
 * which the read that brought it returned (Python's time.monotonic() is
 * the same clock, so the script can place its own events among them).
 * Ticks that arrive in one read share its time.
 *
 * The clock is the host's, outside both guests, and the same for the
 * source's and the destination's consoles: the gap between the source's
 * last tick and the destination's first is the pause as the guest lived
 * it, whatever either VMM did with the guest's TSC.  What the figure
 * cannot see: the VMM's own write of each byte and this reader's wake-up,
 * a few microseconds on hardware (the same at both ends), more in a box
 * whose CPU is emulated.  STAMPS is written per read too, so nothing is
 * lost if the script kills this process rather than waiting for its end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Write all of buf to fd; 0, or -1 with errno. */
static int write_all(int fd, const char *buf, size_t n)
{
	while (n) {
		ssize_t w = write(fd, buf, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char in[65536], out[32768];
	int log, stamps;

	if (argc != 3) {
		fprintf(stderr, "usage: tickstamp LOG STAMPS < console\n");
		return 64;
	}
	log = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	stamps = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log < 0 || stamps < 0) {
		fprintf(stderr, "tickstamp: %s: %s\n", log < 0 ? argv[1] : argv[2], strerror(errno));
		return 1;
	}
	for (;;) {
		struct timespec ts;
		ssize_t n = read(STDIN_FILENO, in, sizeof(in));
		size_t used = 0;
		unsigned long long ns;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "tickstamp: reading the console: %s\n", strerror(errno));
			return 1;
		}
		if (n == 0)
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ns = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
		for (ssize_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)in[i];

			if (c < 0x80)
				continue;
			used += (size_t)snprintf(out + used, sizeof(out) - used, "%u %llu\n",
						 c & 0x7fu, ns);
			if (sizeof(out) - used < 32) {
				if (write_all(stamps, out, used) < 0)
					goto werr;
				used = 0;
			}
		}
		if (write_all(log, in, (size_t)n) < 0 || write_all(stamps, out, used) < 0)
			goto werr;
	}
werr:
	fprintf(stderr, "tickstamp: writing: %s\n", strerror(errno));
	return 1;
}
