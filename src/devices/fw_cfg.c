/*
 * fw_cfg.c - QEMU's firmware configuration interface (fw_cfg), as SeaBIOS
 * and OVMF read it, and the firmware debug port.
 *
 * The guest picks an item by writing its 16-bit key to the selector port
 * 0x510; each byte read from the data port 0x511 then returns the item's
 * next byte.  Reading past the end of an item, or any item that does not
 * exist, returns zeros (as QEMU does); writes to the data port are ignored
 * (no item is writable).  Selecting resets the offset to 0.
 *
 * Items (all read-only, built when the device is made):
 *
 *   0x0000 signature   "QEMU"
 *   0x0001 id          le32 3: port interface and DMA
 *   0x0002 uuid        16 zero bytes
 *   0x0003 RAM size    le64 bytes
 *   0x0004 nographic   le16 1 (no display: SeaBIOS then also writes its
 *                      screen output to COM1, its "sercon")
 *   0x0005 nb_cpus     le16, 0x000f max_cpus le16
 *   0x0019 file dir    be32 count, then per file { be32 size, be16 key,
 *                      be16 0, char name[56] }, keys from 0x0020
 *   files              "etc/e820": { le64 addr, le64 len, le32 type } per
 *                      RAM region of guest_mem (type 1, RAM); the firmware
 *                      adds its own reservations.  Then the files the
 *                      caller gives fw_cfg_create_files: for a VM, the ACPI
 *                      tables, "etc/acpi/tables", "etc/acpi/rsdp" and
 *                      "etc/table-loader" (boot/acpi.h has their format)
 *
 * DMA (docs/specs/fw_cfg.txt in QEMU): the guest writes the guest-physical
 * address of a 16-byte descriptor { be32 control, be32 length, be64
 * address } as two big-endian 32-bit halves, high to 0x514, then low to
 * 0x518; the low write runs the transfer.  control: SELECT (key in the high
 * 16 bits) first, then READ (copy item bytes to `address`; bytes past the
 * item's end are zeros), or SKIP (advance the offset), or WRITE (refused:
 * ERROR).  When done, the control word is written back: 0, or ERROR.
 * Reads of 0x514-0x51b return the DMA signature "QEMU CFG".
 *
 * What a guest may not do: read or skip past an item (the offset stops at
 * its end), make DMA touch anything but guest RAM (a descriptor or a
 * target range that is not wholly inside one RAM region is refused with
 * ERROR, or ignored when the descriptor itself is not in RAM, since there
 * is nowhere to report it), or write an item.  Transfers are synchronous,
 * done on the vCPU thread under the device lock.
 *
 * The debug port 0x402 ("debugcon0"): reads return 0xe9, which is how
 * SeaBIOS tells the port exists; written bytes are collected into lines and
 * logged as "firmware: LINE" at info level (shoal run -v).
 */
#include "devices/fw_cfg.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"
#include "devices/device.h"

#define FW_CFG_MAX_ITEMS  (8 + FW_CFG_MAX_FILES)
#define FW_CFG_DIR_ENTRY  64

struct fw_item {
	uint16_t key;
	uint32_t len;
	uint8_t *data;
	char name[FW_CFG_NAME_MAX];   /* files only */
};

struct fw_cfg {
	struct fw_item items[FW_CFG_MAX_ITEMS];
	int nitems, nfiles;
	struct fw_item *cur;          /* selected item, NULL: none */
	uint16_t sel;
	uint32_t off;                 /* offset in *cur */
	uint32_t dma_hi;              /* latched high half of the DMA address */
};

static struct fw_item *fw_find(struct fw_cfg *s, uint16_t key)
{
	for (int i = 0; i < s->nitems; i++)
		if (s->items[i].key == key)
			return &s->items[i];
	return NULL;
}

static void fw_select(struct fw_cfg *s, uint16_t key)
{
	s->sel = key;
	s->off = 0;
	s->cur = fw_find(s, key);
}

/* Set (or replace) item `key` with a copy of `data`. */
static int fw_set(struct fw_cfg *s, uint16_t key, const void *data, size_t len)
{
	struct fw_item *it = fw_find(s, key);
	uint8_t *copy;

	if (len > UINT32_MAX)
		return -1;
	if (!it && s->nitems == FW_CFG_MAX_ITEMS)
		return -1;
	copy = malloc(len ? len : 1);
	if (!copy)
		return -1;
	memcpy(copy, data, len);
	if (!it) {
		it = &s->items[s->nitems++];
		memset(it, 0, sizeof(*it));
		it->key = key;
	}
	free(it->data);
	it->data = copy;
	it->len = (uint32_t)len;
	return 0;
}

/* ---- the port interface ---- */

static uint8_t fw_next_byte(struct fw_cfg *s)
{
	if (!s->cur || s->off >= s->cur->len)
		return 0;
	return s->cur->data[s->off++];
}

static const char dma_signature[8] = { 'Q', 'E', 'M', 'U', ' ', 'C', 'F', 'G' };

static void fw_cfg_io_read(struct device *d, uint16_t port, void *data, int size)
{
	struct fw_cfg *s = d->priv;
	uint8_t *b = data;

	for (int i = 0; i < size; i++) {
		unsigned p = (unsigned)port + (unsigned)i;

		if (p == FW_CFG_PORT_DATA)
			b[i] = fw_next_byte(s);
		else if (p >= FW_CFG_PORT_DMA && p < FW_CFG_PORT_DMA + 8u)
			b[i] = (uint8_t)dma_signature[p - FW_CFG_PORT_DMA];
		else
			b[i] = 0;
	}
	/* A wider read at the data port returns that many successive bytes. */
}

/* Run the DMA descriptor at guest-physical `desc`. */
static void fw_cfg_dma(struct device *d, uint64_t desc)
{
	struct fw_cfg *s = d->priv;
	const struct guest_mem *m = d->host ? d->host->mem : NULL;
	uint32_t raw[4], control, len;
	uint64_t addr;
	uint32_t result = 0;

	if (!m || guest_mem_read(m, desc, raw, sizeof(raw))) {
		log_debug("fw_cfg: DMA descriptor at 0x%llx is not in guest RAM; ignored",
			  (unsigned long long)desc);
		return;
	}
	control = be32toh(raw[0]);
	len = be32toh(raw[1]);
	addr = ((uint64_t)be32toh(raw[2]) << 32) | be32toh(raw[3]);
	if (control & FW_CFG_DMA_SELECT)
		fw_select(s, (uint16_t)(control >> 16));
	if (control & FW_CFG_DMA_READ) {
		uint8_t *dst = len ? guest_mem_ptr(m, addr, len) : NULL;

		if (len && !dst) {
			result = FW_CFG_DMA_ERROR;
		} else if (len) {
			uint32_t have = s->cur && s->off < s->cur->len ? s->cur->len - s->off : 0;
			uint32_t n = len < have ? len : have;

			if (n)
				memcpy(dst, s->cur->data + s->off, n);
			memset(dst + n, 0, len - n);
			s->off += n;
		}
	} else if (control & FW_CFG_DMA_WRITE) {
		result = FW_CFG_DMA_ERROR;        /* no item is writable */
	} else if (control & FW_CFG_DMA_SKIP) {
		uint32_t have = s->cur && s->off < s->cur->len ? s->cur->len - s->off : 0;

		s->off += len < have ? len : have;
	}
	result = htobe32(result);
	if (guest_mem_write(m, desc, &result, 4))
		log_debug("fw_cfg: cannot write the DMA result at 0x%llx", (unsigned long long)desc);
}

static uint32_t be_bytes32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void fw_cfg_io_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct fw_cfg *s = d->priv;
	const uint8_t *b = data;

	if (port == FW_CFG_PORT_SEL && size == 2) {
		fw_select(s, (uint16_t)(b[0] | b[1] << 8));
		return;
	}
	if (port == FW_CFG_PORT_DMA && size == 4) {
		s->dma_hi = be_bytes32(b);
		return;
	}
	if (port == FW_CFG_PORT_DMA + 4 && size == 4) {
		fw_cfg_dma(d, (uint64_t)s->dma_hi << 32 | be_bytes32(b));
		s->dma_hi = 0;
		return;
	}
	/* data port writes, other widths and offsets: ignored */
}

static void fw_cfg_destroy(struct device *d)
{
	struct fw_cfg *s = d->priv;

	if (!s)
		return;
	for (int i = 0; i < s->nitems; i++)
		free(s->items[i].data);
	free(s);
}

static const struct device_ops fw_cfg_ops = {
	.type = "fw_cfg",
	.state_version = 1,
	.io_read = fw_cfg_io_read,
	.io_write = fw_cfg_io_write,
	.destroy = fw_cfg_destroy,
};

/* The file directory, rebuilt after each file is added. */
static int fw_rebuild_dir(struct fw_cfg *s)
{
	size_t len = 4 + (size_t)s->nfiles * FW_CFG_DIR_ENTRY;
	uint8_t *dir = calloc(1, len);
	uint32_t count = htobe32((uint32_t)s->nfiles);
	int n = 0, r;

	if (!dir)
		return -1;
	memcpy(dir, &count, 4);
	for (int i = 0; i < s->nitems; i++) {
		const struct fw_item *it = &s->items[i];
		uint8_t *ent = dir + 4 + (size_t)n * FW_CFG_DIR_ENTRY;
		uint32_t size = htobe32(it->len);
		uint16_t key = htobe16(it->key);

		if (it->key < FW_CFG_FILE_FIRST)
			continue;
		memcpy(ent, &size, 4);
		memcpy(ent + 4, &key, 2);
		memcpy(ent + 8, it->name, FW_CFG_NAME_MAX);
		n++;
	}
	r = fw_set(s, FW_CFG_FILE_DIR, dir, len);
	free(dir);
	return r;
}

int fw_cfg_add_file(struct device *d, const char *name, const void *data, size_t len)
{
	struct fw_cfg *s = d->priv;
	size_t nlen = strlen(name);
	uint16_t key = (uint16_t)(FW_CFG_FILE_FIRST + s->nfiles);

	if (!nlen || nlen >= FW_CFG_NAME_MAX || s->nfiles == FW_CFG_MAX_FILES)
		return -1;
	for (int i = 0; i < s->nitems; i++)
		if (s->items[i].key >= FW_CFG_FILE_FIRST && !strcmp(s->items[i].name, name))
			return -1;
	if (fw_set(s, key, data, len))
		return -1;
	memcpy(fw_find(s, key)->name, name, nlen + 1);
	s->nfiles++;
	return fw_rebuild_dir(s);
}

/* ---- the debug port ---- */

struct debugcon {
	char line[256];
	size_t n;
};

static void debugcon_flush(struct debugcon *c)
{
	if (!c->n)
		return;
	c->line[c->n] = 0;
	log_info("firmware: %s", c->line);
	c->n = 0;
}

static void debugcon_read(struct device *d, uint16_t port, void *data, int size)
{
	memset(data, 0, (size_t)size);
	*(uint8_t *)data = 0xe9;   /* QEMU's debugcon read-back value */
}

static void debugcon_write(struct device *d, uint16_t port, const void *data, int size)
{
	struct debugcon *c = d->priv;
	const uint8_t *b = data;

	for (int i = 0; i < size; i++) {
		if (b[i] == '\n') {
			debugcon_flush(c);
		} else if (b[i] != '\r') {
			c->line[c->n++] = (char)(b[i] >= 0x20 && b[i] < 0x7f ? b[i] : '.');
			if (c->n == sizeof(c->line) - 1)
				debugcon_flush(c);
		}
	}
}

static void debugcon_destroy(struct device *d)
{
	if (d->priv)
		debugcon_flush(d->priv);
	free(d->priv);
}

static const struct device_ops debugcon_ops = {
	.type = "debugcon",
	.state_version = 1,
	.io_read = debugcon_read,
	.io_write = debugcon_write,
	.destroy = debugcon_destroy,
};

/* ---- set-up ---- */

static int fw_cfg_fill(struct device *d, const struct device_host *host, int ncpus)
{
	struct fw_cfg *s = d->priv;
	const struct guest_mem *m = host->mem;
	uint32_t id = htole32(FW_CFG_VERSION | FW_CFG_VERSION_DMA);
	uint64_t ram = htole64(m && m->size ? m->size : host->ram_size);
	uint16_t cpus = htole16((uint16_t)ncpus), nogfx = htole16(1);
	uint8_t uuid[16] = { 0 };
	uint8_t e820[GUEST_MEM_MAX_REGIONS * 20];
	size_t ne = 0;

	for (int i = 0; m && i < m->nregions; i++) {
		uint64_t a = htole64(m->region[i].gpa), l = htole64(m->region[i].size);
		uint32_t t = htole32(1);

		memcpy(e820 + ne * 20, &a, 8);
		memcpy(e820 + ne * 20 + 8, &l, 8);
		memcpy(e820 + ne * 20 + 16, &t, 4);
		ne++;
	}
	if (fw_set(s, FW_CFG_SIGNATURE, "QEMU", 4) || fw_set(s, FW_CFG_ID, &id, 4) ||
	    fw_set(s, FW_CFG_UUID, uuid, 16) || fw_set(s, FW_CFG_RAM_SIZE, &ram, 8) ||
	    fw_set(s, FW_CFG_NOGRAPHIC, &nogfx, 2) || fw_set(s, FW_CFG_NB_CPUS, &cpus, 2) ||
	    fw_set(s, FW_CFG_MAX_CPUS, &cpus, 2) || fw_rebuild_dir(s) ||
	    fw_cfg_add_file(d, "etc/e820", e820, ne * 20))
		return -1;
	return 0;
}

int fw_cfg_create(const struct device_host *host, int ncpus, struct error *e)
{
	return fw_cfg_create_files(host, ncpus, NULL, 0, e);
}

int fw_cfg_create_files(const struct device_host *host, int ncpus,
			const struct fw_cfg_file *files, int nfiles, struct error *e)
{
	struct fw_cfg *s = calloc(1, sizeof(*s));
	struct debugcon *c = calloc(1, sizeof(*c));
	struct device *d = s ? device_new(host, &fw_cfg_ops, "fw_cfg0", s) : NULL;
	struct device *dc;

	if (!d) {
		free(s);
		free(c);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (fw_cfg_fill(d, host, ncpus)) {
		device_free(d);
		free(c);
		return error_set(e, EXIT_HOST, "fw_cfg: cannot build its items (out of memory)");
	}
	for (int i = 0; i < nfiles; i++)
		if (fw_cfg_add_file(d, files[i].name, files[i].data, files[i].len)) {
			device_free(d);
			free(c);
			return error_set(e, EXIT_HOST, "fw_cfg: cannot add the file %s", files[i].name);
		}
	if (device_host_attach(host, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, FW_CFG_PORT_SEL, 2, d) ||
	    device_host_map(host, DEVICE_SPACE_IO, FW_CFG_PORT_DMA, 8, d)) {
		free(c);
		return error_set(e, EXIT_HOST, "cannot claim ports 0x510-0x511, 0x514-0x51b");
	}
	dc = c ? device_new(host, &debugcon_ops, "debugcon0", c) : NULL;
	if (!dc) {
		free(c);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (device_host_attach(host, dc) || device_host_map(host, DEVICE_SPACE_IO, FW_CFG_DEBUG_PORT, 1, dc))
		return error_set(e, EXIT_HOST, "cannot claim port 0x402");
	return 0;
}
