/*
 * device.h - the device model: one ops table per device type.
 *
 * Every emulated device is a struct device with an ops table.  The parts are
 * the same for every device (style guide, practice 2): emulation (io/mmio
 * handlers), host-side events (through the VM's event loop), metrics
 * (`stats`), and save/restore with a versioned state layout.  Save/restore
 * belongs to the device; the VM only frames each device's state in a
 * section named after the instance (base/state.h).
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
 * The registry of device types is src/devices/registry.c: one table a
 * reader can audit in one place.
 */
#ifndef SHOAL_DEVICES_DEVICE_H
#define SHOAL_DEVICES_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/state.h"

struct vm;
struct device;

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
	void (*destroy)(struct device *d);
};

struct device_stats {
	uint64_t io_reads, io_writes;     /* handler calls */
	uint64_t mmio_reads, mmio_writes;
};

struct device {
	const struct device_ops *ops;
	char name[32];                    /* instance name: "serial0" */
	struct vm *vm;
	void *priv;                       /* the device's own state */
	pthread_mutex_t lock;             /* held by the bus around handlers */
	bool broken;                      /* guest misbehaved; device is dead */
	struct device_stats stats;
};

/* Allocate a device of `ops` named `name` with `priv`; NULL on ENOMEM. */
struct device *device_new(struct vm *vm, const struct device_ops *ops,
			  const char *name, void *priv);
void device_free(struct device *d);

/* Mark `d` broken and log why (once). Called with d->lock held. */
void device_mark_broken(struct device *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Save every field of `d` as one section; restore the section into `d`. */
void device_save(struct device *d, struct state_writer *w);
int device_restore(struct device *d, uint16_t version, struct state_reader *r);

/* ---- the registry (registry.c) ---- */

struct vm_config;

struct device_type {
	const char *type;
	const char *what;                 /* one line for --help and docs */
	/* Create and attach instances for this VM; 0 or -1 with `e`. */
	int (*create)(struct vm *vm, const struct vm_config *cfg, struct error *e);
};

extern const struct device_type device_types[];

/* Create every registered built-in device for `vm`. */
int devices_create_all(struct vm *vm, const struct vm_config *cfg, struct error *e);

/* Per-type constructors, one per device file. */
int serial_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int i8042_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int rtc_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int testdev_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int acpi_pm_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int legacy_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int virtio_rng_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int virtio_net_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int virtio_vsock_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int virtio_blk_create(struct vm *vm, const struct vm_config *cfg, struct error *e);
int virtio_console_create(struct vm *vm, const struct vm_config *cfg, struct error *e);

/* Replace the RTC's host clock (tests use a fixed time). */
#include <time.h>
void rtc_set_clock(struct device *d, time_t (*now)(void));

/* Press the ACPI power button: PWRBTN_STS, and an SCI if enabled. */
void acpi_pm_power_button(struct device *d);

/* Serial input from the console (event loop thread). */
void serial_receive(struct device *d, const uint8_t *buf, int len);

#endif
