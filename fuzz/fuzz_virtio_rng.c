/*
 * fuzz_virtio_rng.c - a hostile virtio-rng driver (devices/virtio_rng.c)
 * on the virtio core, no transport: the model as virtio_rng_model makes it
 * (the vhost-user back end serves it that way; virtio-pci wraps the same).
 *
 * The input is, in order:
 *   u8  flags: bit 0 a legacy driver (no VERSION_1); bits 1-3 the rate cap
 *       (0: the default 1 MiB/s, else 2^(bits * 2) bytes per second, so a
 *       tiny bucket runs dry inside one input)
 *   u8  n, then n (mod 16) operations of 2 bytes {op, a}: 0 kick the
 *       queue; 1 a status write of a; 2 scribble a over the avail index
 *       (the driver posts more, or takes back); 3 kick the queue a % 4 + 1
 *       times
 *   the queue: 8 descriptors, u16 avail idx, 8 x u16 ring
 *       (tests/ring_driver.h)
 *   then the bytes of guest memory at 0x10000 (up to 32 KiB)
 *
 * Checks, besides crashes, leaks and sanitizer reports: every used entry
 * the device wrote names a head the driver could have posted and a length
 * no more than the rate cap (when no buffer could make the device's random
 * bytes land on the rings); the state round trip of fuzz_virtio.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "devices/device_host.h"
#include "devices/vhost_user.h"
#include "fuzz_virtio.h"

#define MEM_SIZE (16u << 20)
#define DESC_GPA 0x1000u
#define USED_GPA (DESC_GPA + 0xc00u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static struct device_host host;
static uint32_t rate;

static void *make_rng(void)
{
	const struct virtio_device_ops *ops;
	struct error e;
	void *priv;

	if (virtio_rng_model(&host, rate, NULL, &ops, &priv, &e))
		abort();
	return priv;
}

/* Could the device's random bytes land on the rings?  Not when no
 * descriptor is indirect or touches the rings' page.  Asked of the table
 * as the input lays it out, before DRIVER_OK: the device may fill the
 * posted buffers as soon as it starts, and its bytes may overwrite the
 * table itself (a table asked afterwards was once random bytes that
 * passed, and the used ring they left failed the check). */
static bool rings_safe(void)
{
	for (unsigned i = 0; i < FUZZ_VIRTIO_QSIZE; i++) {
		struct { uint64_t addr; uint32_t len; uint16_t flags, next; } d;

		guest_mem_read(&mem, DESC_GPA + 16u * i, &d, 16);
		if (d.flags & VIRTQ_DESC_F_INDIRECT ||
		    (d.addr < DESC_GPA + 0x1000u && d.addr + d.len > DESC_GPA))
			return false;
	}
	return true;
}

/* The used ring as the device left it: ids in range, lengths capped. */
static void check_used(void)
{
	uint16_t idx;

	guest_mem_read(&mem, USED_GPA + 2, &idx, 2);
	for (uint16_t i = 0; i < idx && i < FUZZ_VIRTIO_QSIZE; i++) {
		uint32_t ent[2];

		guest_mem_read(&mem, USED_GPA + 4 + 8u * i, ent, 8);
		if (ent[0] >= FUZZ_VIRTIO_QSIZE)
			abort();
		if (ent[1] > (rate ? rate : 1u << 20))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct virtio_device_ops *ops;
	struct virtio_device v;
	const uint8_t *prog, *p;
	size_t left, nops, blen;
	struct error e;
	void *priv;
	uint8_t f;
	bool safe;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (size < 2)
		return 0;
	if (!mem.host) {
		if (guest_mem_create_anon(&mem, MEM_SIZE, &e))
			abort();
		host = (struct device_host){ .mem = &mem, .ram_size = MEM_SIZE };
	}
	memset(mem.host, 0, FUZZ_VIRTIO_MEM_USED);
	f = data[0];
	rate = f >> 1 & 7 ? 1u << ((f >> 1 & 7) * 2) : 0;
	nops = data[1] % 16;
	if (size < 2 + 2 * nops)
		return 0;
	prog = data + 2;
	p = prog + 2 * nops;
	left = size - 2 - 2 * nops;
	if (virtio_rng_model(&host, rate, NULL, &ops, &priv, &e))
		abort();
	if (virtio_device_init(&v, ops, priv, &mem, "virtio-rng0"))
		abort();
	{       /* the table fuzz_virtio_start will lay out, looked at first */
		const uint8_t *q = p;
		size_t ql = left;

		ring_load_split(&mem, FUZZ_VIRTIO_QSIZE, DESC_GPA, DESC_GPA + 0x800, &q, &ql);
		safe = rings_safe();
	}
	fuzz_virtio_start(&v, &mem, f & 1 ? 0 : VIRTIO_BIT(VIRTIO_F_VERSION_1), f & 1, 1, &p, &left);
	blen = left < FUZZ_VIRTIO_BUF_MAX ? left : FUZZ_VIRTIO_BUF_MAX;
	guest_mem_write(&mem, FUZZ_VIRTIO_BUF_GPA, p, blen);
	for (size_t i = 0; i < nops; i++) {
		uint8_t op = prog[2 * i] % 4, a = prog[2 * i + 1];
		uint16_t idx;

		switch (op) {
		case 0: virtio_queue_notify(&v, 0); break;
		case 1: virtio_set_status(&v, a); break;
		case 2:
			guest_mem_read(&mem, DESC_GPA + 0x800 + 2, &idx, 2);
			idx = (uint16_t)(idx + (int8_t)a);
			guest_mem_write(&mem, DESC_GPA + 0x800 + 2, &idx, 2);
			break;
		case 3:
			for (int k = 0; k <= a % 4; k++)
				virtio_queue_notify(&v, 0);
			break;
		}
	}
	virtio_queue_notify(&v, 0);
	if (safe)
		check_used();
	fuzz_virtio_roundtrip(&v, ops, make_rng, &mem, data, size);
	virtio_device_destroy(&v);
	return 0;
}
