/*
 * virtio_console.c - `vcon`: write a line to, and read from, port 0 of a
 * virtio-console device (no MULTIPORT: queue 0 receives, queue 1
 * transmits, for port 0 only).
 *
 * vcon [TEXT...] [wait=MS] [dev=N]
 *   Writes "TEXT\n" (default "shoal-guest vcon hello") on the transmit
 *   queue and waits for the device to consume it.  Then offers one
 *   receive buffer and waits up to MS milliseconds (default 500) for
 *   input; whatever arrives (up to one line, printable characters kept)
 *   is reported.  Under QEMU, `-chardev file,path=OUT,input-path=IN`
 *   with `-device virtconsole` connects both ends to files.
 *   Report: "vcon ok mode=M wrote=N read=N text=<input or -> ring=R".
 * Input is optional: an empty read is not a failure; a transmit that
 * the device never completes is.
 */
#include "virtio_cmd.h"
#include "lib.h"
#include "report.h"

#define VCON_BUF 256

static size_t vcon_text(int argc, char **argv, char *out, uint64_t *wait_ms)
{
	size_t n = 0;
	int i, words = 0;

	*wait_ms = 500;
	for (i = 1; i < argc; i++) {
		if (str_starts(argv[i], "wait=") && parse_u64(argv[i] + 5, wait_ms))
			continue;
		n += fmt(out + n, VCON_BUF - 1 - n, "%s%s", words++ ? " " : "", argv[i]);
	}
	if (!words)
		n = fmt(out, VCON_BUF - 1, "shoal-guest vcon hello");
	out[n++] = '\n';
	return n;
}

/* Keep printable input up to the first line end, for the report. */
static void vcon_clean(const uint8_t *in, uint32_t len, char *out)
{
	uint32_t i, n = 0;

	for (i = 0; i < len && n < 80 && in[i] != '\n' && in[i] != '\r'; i++)
		if (in[i] > 0x20 && in[i] < 0x7f)
			out[n++] = (char)in[i];
		else if (in[i] == ' ')
			out[n++] = '_';
	out[n] = 0;
}

bool vcon_cmd(int argc, char **argv)
{
	unsigned idx = virtio_arg_dev(&argc, argv);
	struct virtio_dev *v;
	struct virtq rx, tx;
	uint8_t *out, *in;
	uint64_t wait_ms;
	uint32_t rlen = 0, len;
	uint16_t head;
	char text[84];
	size_t n;

	if (!(v = virtio_open("vcon", VIRTIO_ID_CONSOLE, idx, VIRTIO_BIT(VIRTIO_F_EVENT_IDX))))
		return false;
	out = vpool_alloc(VCON_BUF, 64);
	in = vpool_alloc(VCON_BUF, 64);
	n = vcon_text(argc, argv, (char *)out, &wait_ms);
	if (!virtio_open_queue("vcon", &rx, v, 0, 16) || !virtio_open_queue("vcon", &tx, v, 1, 16))
		return false;
	virtio_driver_ok(v);
	{
		struct virtq_buf rb = { (uint64_t)in, VCON_BUF, true };
		struct virtq_buf tb = { (uint64_t)out, (uint32_t)n, false };

		virtq_add(&rx, &rb, 1, false);
		virtq_kick(&rx);
		virtq_add(&tx, &tb, 1, false);
		virtq_kick(&tx);
	}
	if (!virtq_wait(&tx, &head, &len, 2000000)) {
		report("error vcon: transmit not completed (status 0x%x)", virtio_status(v));
		virtio_reset(v);
		return false;
	}
	if (virtq_wait(&rx, &head, &len, wait_ms * 1000))
		rlen = len > VCON_BUF ? VCON_BUF : len;
	vcon_clean(in, rlen, text);
	(void)virtio_isr(v);
	virtio_reset(v);
	report("vcon ok mode=%s wrote=%lu read=%u text=%s ring=%s", virtio_mode_name(v), n, rlen,
	       text[0] ? text : "-", virtq_ring_name(&tx));
	return true;
}
