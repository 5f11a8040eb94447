/* bus.c - see bus.h. */
#include "vmm/bus.h"

#include <string.h>

#include "devices/device.h"
#include "base/log.h"

void bus_init(struct bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, struct device *dev)
{
	int i;

	if (b->n == BUS_MAX_RANGES || len == 0)
		return -1;
	for (i = 0; i < b->n; i++)
		if (base < b->r[i].base + b->r[i].len && b->r[i].base < base + len)
			return -1;
	/* keep sorted by base */
	for (i = b->n; i > 0 && b->r[i - 1].base > base; i--)
		b->r[i] = b->r[i - 1];
	b->r[i] = (struct bus_range){ .base = base, .len = len, .dev = dev };
	b->n++;
	return 0;
}

struct device *bus_find(const struct bus *b, uint64_t addr)
{
	int lo = 0, hi = b->n - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		const struct bus_range *r = &b->r[mid];

		if (addr < r->base)
			hi = mid - 1;
		else if (addr - r->base >= r->len)
			lo = mid + 1;
		else
			return r->dev;
	}
	return NULL;
}

/* Reads of unclaimed or broken ranges return all ones. */
static bool bus_unclaimed(struct bus *b, uint64_t addr, void *data, int size, bool is_write)
{
	b->unclaimed++;
	if (!is_write)
		memset(data, 0xff, (size_t)size);
	log_debug("%s bus: unclaimed %s of %d bytes at 0x%llx", b->name,
		  is_write ? "write" : "read", size, (unsigned long long)addr);
	return false;
}

/* The one dispatch body: find the owner, take its lock, call its handler
 * for the access kind (port or MMIO), count it.  A broken device, or one
 * with no read handler, reads as all ones; writes to it are dropped. */
static bool bus_access(struct bus *b, uint64_t addr, void *data, int size, bool is_write,
		       bool mmio)
{
	struct device *d = bus_find(b, addr);

	if (!d)
		return bus_unclaimed(b, addr, data, size, is_write);
	pthread_mutex_lock(&d->lock);
	if (d->broken) {
		if (!is_write)
			memset(data, 0xff, (size_t)size);
	} else if (is_write) {
		if (mmio) {
			d->stats.mmio_writes++;
			if (d->ops->mmio_write)
				d->ops->mmio_write(d, addr, data, size);
		} else {
			d->stats.io_writes++;
			if (d->ops->io_write)
				d->ops->io_write(d, (uint16_t)addr, data, size);
		}
	} else {
		if (mmio)
			d->stats.mmio_reads++;
		else
			d->stats.io_reads++;
		if (mmio && d->ops->mmio_read)
			d->ops->mmio_read(d, addr, data, size);
		else if (!mmio && d->ops->io_read)
			d->ops->io_read(d, (uint16_t)addr, data, size);
		else
			memset(data, 0xff, (size_t)size);
	}
	pthread_mutex_unlock(&d->lock);
	return true;
}

bool bus_io(struct bus *b, uint16_t port, void *data, int size, bool is_write)
{
	return bus_access(b, port, data, size, is_write, false);
}

bool bus_mmio(struct bus *b, uint64_t addr, void *data, int size, bool is_write)
{
	return bus_access(b, addr, data, size, is_write, true);
}
