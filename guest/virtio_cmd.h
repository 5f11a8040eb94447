/*
 * virtio_cmd.h - the virtio commands of the command language (cmd.c
 * dispatches to these) and what the device drivers share for them.
 */
#ifndef GUEST_VIRTIO_CMD_H
#define GUEST_VIRTIO_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include "virtio_pci.h"
#include "virtq.h"

/* Commands: each reports and returns false on failure. */
bool virtio_cmd_mode(int argc, char **argv);	/* virtio-mode legacy|modern|auto */
bool virtio_cmd_ring(int argc, char **argv);	/* virtio-ring split|packed */
bool virtio_cmd_devs(int argc, char **argv);	/* vdevs */
bool vblk_cmd(int argc, char **argv);		/* vblk [SECTORS] [SEED] [dev=N] */
bool vblk_bench_cmd(int argc, char **argv);	/* vblk-bench [MS] [dev=N] */
bool vblk_verify_cmd(int argc, char **argv);	/* vblk-verify [SECTORS] [SEED] [dev=N] */
bool vnet_bench_cmd(int argc, char **argv);	/* vnet-bench MS [size=..] [dst=..] */
bool vnet_cmd(int argc, char **argv);		/* vnet [ip=..] [gw=..] [dev=N] */
bool vrng_cmd(int argc, char **argv);		/* vrng [BYTES] [dev=N] */
bool vcon_cmd(int argc, char **argv);		/* vcon [TEXT...] [wait=MS] [dev=N] */
bool vhostile_cmd(int argc, char **argv);	/* vhostile KIND */

/*
 * Reset the DMA pool, find the index-th device of this type and start it
 * (reset, features, mode): the shared first step of every command.
 * Reports "error CMD: ..." and returns NULL when it cannot.
 */
struct virtio_dev *virtio_open(const char *cmd, uint16_t type, unsigned index,
			       uint64_t wanted);

/* Set up queue `index` (size at most want, 0 = device's); reports errors. */
bool virtio_open_queue(const char *cmd, struct virtq *q, struct virtio_dev *v,
		       uint16_t index, uint16_t want);

const char *virtio_mode_name(const struct virtio_dev *v);

/* "dev=N" among argv[first..]: the device index (default 0); removes it. */
unsigned virtio_arg_dev(int *argc, char **argv);

#endif
