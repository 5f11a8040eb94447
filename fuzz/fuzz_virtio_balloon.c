/*
 * fuzz_virtio_balloon.c - a hostile virtio-balloon driver
 * (devices/virtio_balloon.c) on the virtio core, no transport.
 *
 * The input is, in order:
 *   u8  flags: bit 0 STATS_VQ, bit 1 PAGE_REPORTING, bit 2 DEFLATE_ON_OOM
 *       acked, bit 3 a legacy driver (no VERSION_1)
 *   u8  n, then n (mod 16) operations of 3 bytes {op, a, b}:
 *       0 kick queue a; 1 config write at a (1, 2 or 4 bytes of b);
 *       2 config read; 3 the host sets the target to (a | b << 8) * 16
 *       pages; 4 the host asks for statistics (gives the held buffer
 *       back); 5 the metrics (JSON) and the checks below; 6 a status
 *       write of a; 7 kick every queue
 *   per queue (inflate 0, deflate 1, then stats and reporting as acked):
 *       8 descriptors, u16 avail idx, 8 x u16 ring (tests/ring_driver.h)
 *   then the bytes of guest memory at 0x10000 (up to 32 KiB): PFN arrays,
 *       statistics, whatever the descriptors point at
 * After the program every queue is kicked once more.
 *
 * Guest RAM is 16 MiB in a memfd, as the VMM makes it, so a released page
 * really is punched out of it.  Checks, besides crashes, leaks and
 * sanitizer reports: every range the device asks to release is inside
 * guest RAM and whole pages (guest_mem_discard refuses anything else, and
 * the device counts that as a discard error, which must stay 0 on a
 * memfd); it releases no more than the pages the guest gave plus the bytes
 * it reported; then the state round trip of fuzz_virtio.h.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "devices/virtio_balloon.h"
#include "fuzz_virtio.h"

#define MEM_SIZE (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static struct device_host host;

static void *make_balloon(void)
{
	struct error e;
	struct balloon *b = virtio_balloon_new(&host, 0, &e);

	if (!b)
		abort();
	return b;
}

static long long info_int(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		abort();
	return json_integer_value(v);
}

/* The release checks, on the device's own counters. */
static void check(struct virtio_device *v)
{
	json_t *o = virtio_balloon_vdev_info(v);

	if (!o)
		abort();
	if (info_int(o, "discard_errors"))
		abort();   /* a range outside RAM or not whole pages was asked for */
	if ((unsigned long long)info_int(o, "released_bytes") >
	    (unsigned long long)info_int(o, "inflated_pages") * VIRTIO_BALLOON_PAGE +
	    (unsigned long long)info_int(o, "reported_bytes"))
		abort();   /* released more than the guest gave */
	json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct virtio_device_ops *ops = virtio_balloon_ops();
	struct virtio_device v;
	const uint8_t *prog, *p;
	size_t left, nops, blen;
	uint64_t want = 0;
	uint16_t nq;
	uint8_t f;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (size < 2)
		return 0;
	if (!mem.host) {
		struct error e;

		if (guest_mem_create(&mem, MEM_SIZE, &e))
			abort();
		host = (struct device_host){ .mem = &mem, .ram_size = MEM_SIZE };
	}
	memset(mem.host, 0, FUZZ_VIRTIO_MEM_USED);
	f = data[0];
	nops = data[1] % 16;
	if (size < 2 + 3 * nops)
		return 0;
	prog = data + 2;
	p = prog + 3 * nops;
	left = size - 2 - 3 * nops;
	want |= f & 1 ? VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ) : 0;
	want |= f & 2 ? VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_REPORTING) : 0;
	want |= f & 4 ? VIRTIO_BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM) : 0;
	want |= f & 8 ? 0 : VIRTIO_BIT(VIRTIO_F_VERSION_1);
	nq = (uint16_t)(2 + !!(f & 1) + !!(f & 2));
	fuzz_virtio_init(&v, ops, make_balloon, &mem);
	fuzz_virtio_start(&v, &mem, want, f & 8, nq, &p, &left);
	blen = left < FUZZ_VIRTIO_BUF_MAX ? left : FUZZ_VIRTIO_BUF_MAX;
	guest_mem_write(&mem, FUZZ_VIRTIO_BUF_GPA, p, blen);
	for (size_t i = 0; i < nops; i++) {
		uint8_t op = prog[3 * i] % 8, a = prog[3 * i + 1], b = prog[3 * i + 2];
		uint8_t buf[4] = { b, b, b, b };
		uint32_t len = 1u << (b % 3);

		switch (op) {
		case 0: virtio_queue_notify(&v, a % 4); break;
		case 1: virtio_config_write(&v, a % 10, buf, len); break;
		case 2: virtio_config_read(&v, a % 10, buf, len); break;
		case 3: virtio_balloon_vdev_set_target(&v, (uint32_t)(a | b << 8) * 16); break;
		case 4: virtio_balloon_request_stats(&v); break;
		case 5: check(&v); break;
		case 6: virtio_set_status(&v, a); break;
		case 7:
			for (uint16_t q = 0; q < 4; q++)
				virtio_queue_notify(&v, q);
			break;
		}
	}
	for (uint16_t q = 0; q < 4; q++)
		virtio_queue_notify(&v, q);
	check(&v);
	fuzz_virtio_roundtrip(&v, ops, make_balloon, &mem, data, size);
	virtio_device_destroy(&v);
	return 0;
}
