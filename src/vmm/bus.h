/*
 * bus.h - address decoding for port I/O and MMIO exits.
 *
 * A bus is a small sorted array of non-overlapping ranges, each owned by a
 * device.  Ranges are registered while the VM is built and never change
 * while vCPUs run, so lookups take no lock.  An access no device claims
 * reads as all ones and is otherwise ignored, as on real hardware; it is
 * counted and logged at debug level.
 */
#ifndef SHOAL_VMM_BUS_H
#define SHOAL_VMM_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct device;

#define BUS_MAX_RANGES 64

struct bus_range {
	uint64_t base, len;
	struct device *dev;
};

struct bus {
	const char *name;                  /* "io" or "mmio", for messages */
	int n;
	struct bus_range r[BUS_MAX_RANGES];
	uint64_t unclaimed;                /* accesses no device took */
};

void bus_init(struct bus *b, const char *name);

/* Claim [base, base+len) for `dev`; -1 on overlap or when full. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, struct device *dev);

/* Find the device owning `addr`, or NULL. */
struct device *bus_find(const struct bus *b, uint64_t addr);

/* Dispatch one access.  Returns false when no device claimed it. */
bool bus_io(struct bus *b, uint16_t port, void *data, int size, bool is_write);
bool bus_mmio(struct bus *b, uint64_t addr, void *data, int size, bool is_write);

#endif
