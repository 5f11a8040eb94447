/*
 * fuzz_virtio_console.c - a hostile virtio-console driver
 * (devices/virtio_console.c) on the virtio core, no transport.
 *
 * The input is, in order:
 *   u8  flags: bit 0 MULTIPORT, bit 1 EMERG_WRITE acked, bit 2 a legacy
 *       driver (no VERSION_1)
 *   u8  n, then n (mod 16) operations of 3 bytes {op, a, b}:
 *       0 kick queue a (receiveq 0, transmitq 1, control receiveq 2,
 *       control transmitq 3); 1 config write at a (1, 2 or 4 bytes of b:
 *       emerg_wr at 8); 2 config read; 3 a status write of a; 4 the host's
 *       input file grows by b bytes; 5 kick every queue
 *   u8  m: the first m bytes of the host's input file (IN)
 *   per queue (4): 8 descriptors, u16 avail idx, 8 x u16 ring
 *       (tests/ring_driver.h)
 *   then the bytes of guest memory at 0x10000 (up to 32 KiB): what the
 *       driver transmits, its control messages (DEVICE_READY, PORT_READY,
 *       PORT_OPEN...), whatever the descriptors point at
 * After the program every queue is kicked once more.
 *
 * The port is "file:/dev/null,in=IN": output goes nowhere, IN is a file
 * of the fuzzer's that holds input bytes.  Checks, besides crashes, leaks
 * and sanitizer reports: the state round trip of fuzz_virtio.h (bytes
 * counted, the input offset, the port's open flag and the control messages
 * waiting for buffers).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "devices/virtio_console.h"
#include "fuzz_virtio.h"

#define MEM_SIZE (16u << 20)

#define F_MULTIPORT   1
#define F_EMERG_WRITE 2

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static char spec[128];
static int in_fd = -1;
static char in_path[] = "/tmp/shoal-fz-vcon.XXXXXX";

static void *make_console(void)
{
	struct error e;
	struct vcon *c = virtio_console_new(spec, &e);

	if (!c) {
		fprintf(stderr, "fuzz_virtio_console: %s\n", e.msg);
		abort();
	}
	return c;
}

static void remove_in(void)
{
	unlink(in_path);
}

/* IN is opened by name by each device made; it stays for the whole run. */
static void setup(void)
{
	struct error e;

	if (guest_mem_create_anon(&mem, MEM_SIZE, &e))
		abort();
	in_fd = mkstemp(in_path);
	if (in_fd < 0)
		abort();
	atexit(remove_in);
	snprintf(spec, sizeof(spec), "file:/dev/null,in=%s", in_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct virtio_device_ops *ops = virtio_console_ops();
	struct virtio_device v;
	const uint8_t *prog, *p;
	size_t left, nops, m, blen;
	uint64_t want = 0, in_len;
	uint8_t f;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	if (size < 3)
		return 0;
	if (in_fd < 0)
		setup();
	memset(mem.host, 0, FUZZ_VIRTIO_MEM_USED);
	f = data[0];
	nops = data[1] % 16;
	if (size < 3 + 3 * nops)
		return 0;
	prog = data + 2;
	m = prog[3 * nops];
	p = prog + 3 * nops + 1;
	left = size - 3 - 3 * nops;
	if (m > left)
		m = left;
	if (ftruncate(in_fd, 0) || pwrite(in_fd, p, m, 0) != (ssize_t)m)
		abort();
	in_len = m;
	p += m;
	left -= m;
	want |= f & 1 ? VIRTIO_BIT(F_MULTIPORT) : 0;
	want |= f & 2 ? VIRTIO_BIT(F_EMERG_WRITE) : 0;
	want |= f & 4 ? 0 : VIRTIO_BIT(VIRTIO_F_VERSION_1);
	fuzz_virtio_init(&v, ops, make_console, &mem);
	fuzz_virtio_start(&v, &mem, want, f & 4, 4, &p, &left);
	blen = left < FUZZ_VIRTIO_BUF_MAX ? left : FUZZ_VIRTIO_BUF_MAX;
	guest_mem_write(&mem, FUZZ_VIRTIO_BUF_GPA, p, blen);
	for (size_t i = 0; i < nops; i++) {
		uint8_t op = prog[3 * i] % 6, a = prog[3 * i + 1], b = prog[3 * i + 2];
		uint8_t buf[4] = { b, b, b, b };
		uint32_t len = 1u << (b % 3);

		switch (op) {
		case 0: virtio_queue_notify(&v, a % 4); break;
		case 1: virtio_config_write(&v, a % 14, buf, len); break;
		case 2: virtio_config_read(&v, a % 14, buf, len); break;
		case 3: virtio_set_status(&v, a); break;
		case 4:
			if (pwrite(in_fd, data, b < size ? b : size, (off_t)in_len) > 0)
				in_len += b < size ? b : size;
			break;
		case 5:
			for (uint16_t q = 0; q < 4; q++)
				virtio_queue_notify(&v, q);
			break;
		}
	}
	for (uint16_t q = 0; q < 4; q++)
		virtio_queue_notify(&v, q);
	fuzz_virtio_roundtrip(&v, ops, make_console, &mem, data, size);
	virtio_device_destroy(&v);
	return 0;
}
