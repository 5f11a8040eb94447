/*
 * virtio_console.h - the virtio-console device model's private interface,
 * for the unit test: its ops table and a port made from a
 * "file:OUT[,in=IN]" spec, to drive through the virtio core directly.
 */
#ifndef SHOAL_DEVICES_VIRTIO_CONSOLE_H
#define SHOAL_DEVICES_VIRTIO_CONSOLE_H

#include "devices/virtio.h"
#include "base/error.h"

struct vcon;

/* The ops table (two queues: receiveq 0, transmitq 1). */
const struct virtio_device_ops *virtio_console_ops(void);

/* A port on `spec`; NULL with `e` (EXIT_USAGE, EXIT_NOINPUT).  Freed by
 * ops->destroy through virtio_device_destroy. */
struct vcon *virtio_console_new(const char *spec, struct error *e);

#endif
