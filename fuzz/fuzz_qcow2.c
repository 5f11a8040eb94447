/*
 * fuzz_qcow2.c - libFuzzer target for opening, reading, checking and
 * writing qcow2 images.
 *
 * The input is the image file itself, placed in a memfd.  Inputs that do
 * not start with the qcow2 magic get it prepended so every run reaches the
 * header parser.  The image is opened read-only with no backing file (an
 * image must never make the fuzzer open arbitrary paths), read at its start
 * and at offsets derived from the input, walked with block status, listed
 * and read through its snapshots, checked; then opened read-write and
 * written, zeroed and flushed (every write through the overlap guard),
 * snapshotted (narrow refcounts refuse and undo) and repaired.  Any crash,
 * hang or sanitizer report is a bug; errors are the expected outcome for
 * most inputs, and are not logged (caller_reports).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/blockdev.h"
#include "block/qcow2.h"
#include "base/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t buf[1 << 20];

/* Reads at the start and at input-derived offsets, plus a status walk. */
static void exercise_reads(struct blockdev *bd, const uint8_t *data, size_t size)
{
	uint64_t h = 1469598103934665603ull, off = 0;

	for (size_t i = 0; i < size && i < 4096; i++)
		h = (h ^ data[i]) * 1099511628211ull;
	if (!bd->size)
		return;
	blockdev_read(bd, buf, 0, bd->size < sizeof(buf) ? bd->size : sizeof(buf));
	for (int i = 0; i < 16; i++) {
		uint64_t o = (h = h * 6364136223846793005ull + 1) % bd->size;
		uint64_t n = 1 + (h >> 40) % 70000;
		blockdev_read(bd, buf, o, n > bd->size - o ? bd->size - o : n);
	}
	for (int i = 0; i < 256 && off < bd->size; i++) {
		struct bd_extent x;
		if (blockdev_block_status(bd, off, bd->size - off, &x) || !x.len)
			break;
		off += x.len;
	}
}

static void exercise_writes(struct blockdev *bd)
{
	if (bd->size < 8192)
		return;
	memset(buf, 0x5a, 8192);
	blockdev_write(bd, buf, bd->size / 2, 8192);
	blockdev_write(bd, buf, 100, 3000);
	blockdev_write_zeroes(bd, 0, bd->size < 200000 ? bd->size : 200000);
	blockdev_discard(bd, bd->size / 3, 4096);
	blockdev_flush(bd);
}

/* Metadata-wide changes: a snapshot (whose refcount walk may overflow and
 * be undone), then a repair. */
static void exercise_snapshot_repair(struct blockdev *bd)
{
	struct qcow2_check_result cr;
	struct error e;

	qcow2_snapshot_create(bd, "fuzz", &e);
	qcow2_check(bd, true, &cr, &e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct blockdev_opts o = { .format = BD_FMT_QCOW2, .readonly = true,
				   .no_backing = true, .no_aio = true, .caller_reports = true,
				   .cache_bytes = 1 << 20 };
	struct qcow2_check_result cr;
	struct error e;
	struct blockdev *bd;
	char path[64];
	int fd;

	log_threshold = LOG_ERROR;
	if (size > (4 << 20))
		return 0;
	fd = memfd_create("fuzz-qcow2", 0);
	if (fd < 0)
		return 0;
	if (size < 4 || memcmp(data, "QFI\xfb", 4))
		if (write(fd, "QFI\xfb", 4) != 4)
			goto out;
	if (write(fd, data, size) != (ssize_t)size)
		goto out;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!blockdev_open(&bd, path, &o, &e)) {
		struct qcow2 *q = bd->priv;
		exercise_reads(bd, data, size);
		qcow2_check(bd, false, &cr, &e);
		if (q->nb_snaps && q->snaps[0].name[0] && !qcow2_snapshot_view(bd, q->snaps[0].name, &e))
			exercise_reads(bd, data, size);
		blockdev_close(bd);
	}
	o.readonly = false;
	if (!blockdev_open(&bd, path, &o, &e)) {
		exercise_writes(bd);
		exercise_snapshot_repair(bd);
		blockdev_close(bd);
	}
out:
	close(fd);
	return 0;
}
