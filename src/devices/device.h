/*
 * device.h - the device model: one ops table per device type.
 *
 * Every emulated device is a struct device with an ops table.  The parts are
 * the same for every device (style guide, practice 2): emulation (io/mmio
 * handlers), host-side events (through the host's event loop), metrics
 * (`stats`, and the `metrics` op for what only the device knows), and
 * save/restore with a versioned state layout.  Save/restore belongs to the
 * device; the VM only frames each device's state in a section named after
 * the instance (base/state.h).
 *
 * A device sees its host through `const struct device_host *`
 * (devices/device_host.h): guest memory, the event loop, interrupts, its
 * I/O ranges, stopping the machine.  It never sees the VM, so the same
 * model runs inside `shoal run`, behind the vhost-user back end, or alone
 * in a unit test or fuzzer.
 *
 * Threads: io/mmio handlers run on vCPU threads, host events on the event
 * loop thread.  The bus takes `lock` around every handler call, so a device
 * sees one caller at a time; a device that is fed from the event loop takes
 * the same lock there.
 *
 * The guest is hostile: a handler that sees nonsense marks the device
 * broken (device_mark_broken), logs one line, and from then on the bus
 * answers its ports with all-ones reads and dropped writes.  The VMM and the
 * other devices keep running.
 *
 * The builder that decides which devices a VM has, and with what
 * configuration, is above this layer: src/vmm/devices.c, one table a reader
 * can audit in one place.  Each constructor below takes the host and its
 * own configuration, never the VM's.
 */
#ifndef SHOAL_DEVICES_DEVICE_H
#define SHOAL_DEVICES_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/state.h"
#include "devices/device_host.h"

struct device;
struct json_t;                        /* jansson's json_t */

struct device_ops {
	const char *type;                 /* "serial", "i8042", ... */
	uint16_t state_version;           /* version written by save */
	/* Port I/O: size is 1, 2 or 4; data is little-endian. */
	void (*io_read)(struct device *d, uint16_t port, void *data, int size);
	void (*io_write)(struct device *d, uint16_t port, const void *data, int size);
	/* MMIO: size 1..8. */
	void (*mmio_read)(struct device *d, uint64_t addr, void *data, int size);
	void (*mmio_write)(struct device *d, uint64_t addr, const void *data, int size);
	/* Append the device's state payload (the VM writes the section frame). */
	void (*save)(struct device *d, struct state_writer *w);
	/* Load a payload written by `version` (<= state_version); 0 or -1. */
	int (*restore)(struct device *d, uint16_t version, struct state_reader *r);
	/* Add what only this device knows to the metrics reply, with d->lock
	 * held: keys into `dev` (this device's object under "devices"), entries
	 * into the arrays of `root` ("disks", "nets").  May be NULL. */
	void (*metrics)(struct device *d, struct json_t *dev, struct json_t *root);
	/* Stop (on) or let go on (off) touching guest memory from the
	 * device's own threads; on returns once nothing is in flight.  With
	 * d->lock held.  NULL: the device has no thread of its own. */
	void (*quiesce)(struct device *d, bool on);
	void (*destroy)(struct device *d);
};

struct device_stats {
	uint64_t io_reads, io_writes;     /* handler calls */
	uint64_t mmio_reads, mmio_writes;
};

struct device {
	const struct device_ops *ops;
	char name[32];                    /* instance name: "serial0" */
	const struct device_host *host;   /* what it may use of its host */
	void *priv;                       /* the device's own state */
	pthread_mutex_t lock;             /* held by the bus around handlers */
	bool broken;                      /* guest misbehaved; device is dead */
	struct device_stats stats;
};

/* Allocate a device of `ops` named `name` with `priv` on `host`; NULL on
 * ENOMEM. */
struct device *device_new(const struct device_host *host, const struct device_ops *ops,
			  const char *name, void *priv);
void device_free(struct device *d);

/* Mark `d` broken and log why (once). Called with d->lock held. */
void device_mark_broken(struct device *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Save every field of `d` as one section; restore the section into `d`. */
void device_save(struct device *d, struct state_writer *w);
int device_restore(struct device *d, uint16_t version, struct state_reader *r);

/* Save `n` devices as sections (each under its lock); restore sections by
 * instance name into them.  The state is untrusted: every section is
 * checked.  0, or -1 (with `e`: EXIT_GUEST_BAD). */
int devices_save(struct device *const *devs, int n, struct state_writer *w);
int devices_restore(struct device *const *devs, int n, const void *buf, size_t len,
		    struct error *e);

/* ---- constructors: each creates and attaches its instance on `host` ----
 * 0, or -1 with `e`. */
struct vm_disk;
struct vm_net;

int serial_create(const struct device_host *host, struct error *e);
int i8042_create(const struct device_host *host, struct error *e);
int rtc_create(const struct device_host *host, struct error *e);
int testdev_create(const struct device_host *host, struct error *e);
int acpi_pm_create(const struct device_host *host, struct error *e);
int legacy_create(const struct device_host *host, struct error *e);
/* virtio-rng0, capped at `rate` bytes a second (0: the default). */
int virtio_rng_create(const struct device_host *host, uint32_t rate, struct error *e);
/* virtio-net<index> for `net`. */
int virtio_net_create(const struct device_host *host, const struct vm_net *net, int index,
		      struct error *e);
/* virtio-vsock0 for guest CID `cid`, host side on the Unix socket `path`. */
int virtio_vsock_create(const struct device_host *host, uint32_t cid, const char *path,
			struct error *e);
/* virtio-blk<index> on `disk`. */
int virtio_blk_create(const struct device_host *host, const struct vm_disk *disk, int index,
		      struct error *e);
/* virtio-console0 on a "file:OUT[,in=IN]" spec. */
int virtio_console_create(const struct device_host *host, const char *spec, struct error *e);

/* Replace the RTC's host clock (tests use a fixed time). */
#include <time.h>
void rtc_set_clock(struct device *d, time_t (*now)(void));

/* Press the ACPI power button: PWRBTN_STS, and an SCI if enabled. */
void acpi_pm_power_button(struct device *d);

/* Serial input from the console (event loop thread). */
void serial_receive(struct device *d, const uint8_t *buf, int len);

#endif
