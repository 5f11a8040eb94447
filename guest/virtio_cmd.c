/*
 * virtio_cmd.c - the glue between the command language and the virtio
 * drivers: the interface switch (`virtio-mode`), the device list
 * (`vdevs`), and opening a device for a command.
 *
 * Every virtio command starts from scratch: it resets the DMA pool and the
 * device, negotiates again in the current mode, sets up its queues, does
 * its work polling the used rings, and resets the device at the end.  So
 * commands can run in any order and `virtio-mode` can change between
 * them; nothing stays in flight between commands.
 */
#include "virtio_cmd.h"
#include "lib.h"
#include "report.h"

const char *virtio_mode_name(const struct virtio_dev *v)
{
	return v->modern ? "modern" : "legacy";
}

unsigned virtio_arg_dev(int *argc, char **argv)
{
	uint64_t n = 0;
	int i, j;

	for (i = 1; i < *argc; i++) {
		if (!str_starts(argv[i], "dev=") || !parse_u64(argv[i] + 4, &n))
			continue;
		for (j = i; j + 1 < *argc; j++)
			argv[j] = argv[j + 1];
		(*argc)--;
		break;
	}
	return (unsigned)n;
}

struct virtio_dev *virtio_open(const char *cmd, uint16_t type, unsigned index,
			       uint64_t wanted)
{
	struct virtio_dev *v;
	const char *why;

	vpool_reset();
	v = virtio_find(type, index);
	if (!v) {
		report("error %s: no virtio-%s device (index %u; pci access %s)", cmd,
		       virtio_type_name(type), index, pci_access);
		return NULL;
	}
	if (!virtio_start(v, wanted, &why)) {
		report("error %s: %02x:%02x.%u: %s", cmd, v->pci->bus, v->pci->dev, v->pci->fn,
		       why);
		virtio_reset(v);
		return NULL;
	}
	return v;
}

bool virtio_open_queue(const char *cmd, struct virtq *q, struct virtio_dev *v,
		       uint16_t index, uint16_t want)
{
	if (virtq_setup(q, v, index, want))
		return true;
	report("error %s: queue %u set-up failed (device max %u)", cmd, index,
	       virtio_queue_max(v, index));
	virtio_reset(v);
	return false;
}

bool virtio_cmd_mode(int argc, char **argv)
{
	if (argc == 2 && str_eq(argv[1], "legacy"))
		virtio_mode_wanted = VIRTIO_MODE_LEGACY;
	else if (argc == 2 && str_eq(argv[1], "modern"))
		virtio_mode_wanted = VIRTIO_MODE_MODERN;
	else if (argc == 2 && str_eq(argv[1], "auto"))
		virtio_mode_wanted = VIRTIO_MODE_AUTO;
	else {
		report("error virtio-mode: usage: legacy|modern|auto");
		return false;
	}
	report("virtio-mode %s", argv[1]);
	return true;
}

bool virtio_cmd_ring(int argc, char **argv)
{
	if (argc == 2 && (str_eq(argv[1], "split") || str_eq(argv[1], "packed"))) {
		virtq_packed_wanted = str_eq(argv[1], "packed");
		report("virtio-ring %s", argv[1]);
		return true;
	}
	report("error virtio-ring: usage: split|packed");
	return false;
}

static void devs_report_bars(const struct pci_dev *d, char *buf, size_t cap)
{
	size_t n = 0;
	unsigned i;

	buf[0] = 0;
	for (i = 0; i < 6; i++) {
		const struct pci_bar *b = &d->bar[i];

		if (!b->size)
			continue;
		n += fmt(buf + n, cap - n, " bar%u=%s:0x%lx+0x%lx%s", i, b->io ? "io" : "mem",
			 b->addr, b->size, b->assigned ? "*" : "");
	}
}

/*
 * Virtio 1.x 4.1.2.1: a transitional device's PCI device id is fixed by
 * its type (the subsystem id); drivers other than Linux's match on it.
 * Returns the id it must have, or 0 when the type has none.
 */
static uint16_t transitional_id(uint16_t type)
{
	switch (type) {
	case VIRTIO_ID_NET: return 0x1000;
	case VIRTIO_ID_BLK: return 0x1001;
	case 5: return 0x1002;			/* balloon */
	case VIRTIO_ID_CONSOLE: return 0x1003;
	case 8: return 0x1004;			/* SCSI */
	case VIRTIO_ID_RNG: return 0x1005;
	case 9: return 0x1009;			/* 9P */
	default: return 0;
	}
}

static bool devs_check_id(const struct virtio_dev *v)
{
	uint16_t want = transitional_id(v->type);

	if (v->pci->device >= 0x1040 || !want || v->pci->device == want)
		return true;
	report("error vdevs: %02x:%02x.%u: transitional device id 0x%04x, but its subsystem "
	       "id says %s, whose id is 0x%04x", v->pci->bus, v->pci->dev, v->pci->fn,
	       v->pci->device, virtio_type_name(v->type), want);
	return false;
}

bool virtio_cmd_devs(int argc, char **argv)
{
	struct virtio_dev *all[PCI_DEVS_MAX];
	unsigned n = virtio_all(all, PCI_DEVS_MAX), i;
	char bars[256];
	bool ok = true;

	if (argc == 2 && (str_eq(argv[1], "access=ports") || str_eq(argv[1], "access=ecam"))) {
		virtio_rescan(str_eq(argv[1], "access=ports"));
		n = virtio_all(all, PCI_DEVS_MAX);
	} else if (argc != 1) {
		report("error vdevs: usage: [access=ports|ecam]");
		return false;
	}
	for (i = 0; i < n; i++) {
		struct virtio_dev *v = all[i];

		devs_report_bars(v->pci, bars, sizeof(bars));
		report("vdev %02x:%02x.%u id=%04x:%04x type=%s legacy=%u modern=%u "
		       "notify_mult=%u%s", v->pci->bus, v->pci->dev, v->pci->fn, v->pci->vendor,
		       v->pci->device, virtio_type_name(v->type), v->has_legacy, v->has_modern,
		       v->notify_mult, bars);
		ok &= devs_check_id(v);
	}
	report("vdevs n=%u pci_devs=%u access=%s ecam=0x%lx", n, pci_ndevs, pci_access,
	       pci_ecam_base);
	return ok;
}
