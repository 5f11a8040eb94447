/*
 * fw_cfg.h - QEMU's firmware configuration device, for firmware boot.
 *
 * What a BIOS (SeaBIOS) reads to learn the machine: a signature, RAM size,
 * CPU counts and named files ("etc/e820"), through port 0x510 (selector),
 * 0x511 (data) and the DMA interface at 0x514.  Also the firmware's debug
 * port 0x402 (QEMU's "debugcon"): its lines go to the log as
 * "firmware: ..." at info level (-v).  See fw_cfg.c for the protocol.
 */
#ifndef SHOAL_DEVICES_FW_CFG_H
#define SHOAL_DEVICES_FW_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "devices/device_host.h"

#define FW_CFG_PORT_SEL     0x510   /* 16-bit selector (write) */
#define FW_CFG_PORT_DATA    0x511   /* 8-bit data (read) */
#define FW_CFG_PORT_DMA     0x514   /* DMA address, big-endian: high 0x514, low 0x518 */
#define FW_CFG_DEBUG_PORT   0x402   /* firmware debug output */

/* Selector keys (QEMU's include/standard-headers/linux/qemu_fw_cfg.h). */
#define FW_CFG_SIGNATURE    0x0000
#define FW_CFG_ID           0x0001
#define FW_CFG_UUID         0x0002
#define FW_CFG_RAM_SIZE     0x0003
#define FW_CFG_NOGRAPHIC    0x0004
#define FW_CFG_NB_CPUS      0x0005
#define FW_CFG_MAX_CPUS     0x000f
#define FW_CFG_FILE_DIR     0x0019
#define FW_CFG_FILE_FIRST   0x0020

#define FW_CFG_VERSION      0x01    /* ID bits: the port interface */
#define FW_CFG_VERSION_DMA  0x02    /*          and DMA */

/* DMA control bits (the control word is big-endian in guest memory). */
#define FW_CFG_DMA_ERROR    0x01
#define FW_CFG_DMA_READ     0x02
#define FW_CFG_DMA_SKIP     0x04
#define FW_CFG_DMA_SELECT   0x08
#define FW_CFG_DMA_WRITE    0x10

#define FW_CFG_MAX_FILES    16
#define FW_CFG_NAME_MAX     56      /* bytes of a file name, NUL included */

/* Create "fw_cfg0" on ports 0x510-0x511 and 0x514-0x51b, and "debugcon0"
 * on 0x402, for a guest with `ncpus` vCPUs and the RAM of host->mem (its
 * regions become "etc/e820").  0, or -1 with `e`. */
int fw_cfg_create(const struct device_host *host, int ncpus, struct error *e);

/* A read-only file for fw_cfg_create_files (the data is copied). */
struct fw_cfg_file {
	const char *name;
	const void *data;
	size_t len;
};

/* fw_cfg_create, with `nfiles` more files after "etc/e820" (the ACPI
 * tables and their loader, boot/acpi.h). */
int fw_cfg_create_files(const struct device_host *host, int ncpus,
			const struct fw_cfg_file *files, int nfiles, struct error *e);

/* Add a read-only file item (the data is copied).  0, or -1 when the name
 * is empty or too long, or FW_CFG_MAX_FILES are there. */
int fw_cfg_add_file(struct device *d, const char *name, const void *data, size_t len);

#endif
