/*
 * migrate_disk.c - the disks of a live migration (`shoal migrate
 * --with-disks`, docs/migration.md): each writable disk of the source is
 * mirrored into the image the destination was started with, while the VM
 * runs, beside the memory rounds of state/migrate.c.
 *
 * Without --with-disks none of this runs: the destination opens the same
 * images (shared storage) and nothing of them is sent; only their write
 * locks move, at the switch-over (migrate_disks_inactivate at the source,
 * migrate_disks_activate at the destination, at the end of this file).  A
 * disk opened inactive (another process writes it) cannot take a mirror.
 *
 * The mirror.  Tracking starts on each writable disk (virtio-blk marks the
 * 64 KiB blocks every write, write-zeroes and discard touches when it
 * completes: block/dirty_bitmap.h); then the bulk copy reads every block
 * and sends it, ranges that read as zero (a hole of a raw file, a zero or
 * unallocated cluster of a qcow2 image without a backing file, or read
 * back all zero) as a flag without bytes.  Each memory round after it
 * takes the marks and sends those blocks again; the estimate of what is
 * left counts them.  In the stop phase the devices are quiesced (every
 * request in flight has completed and marked its blocks) and the last
 * marked blocks go before the device state.  A block is read after its
 * mark is taken, so what goes over is at least as new as the write that
 * marked it.  The disks are read and written only through their I/O
 * threads (vblk_call): the block device has one owner.  Read-only disks
 * are not sent: the destination opens its own copy.
 *
 * A qcow2 overlay whose backing image the destination has too (its disk
 * is an overlay over an image of the same chain identity, docs/block.md:
 * the same id and generation, not opened for writing by another program
 * since) is sent as its top layer only: the bulk copy skips the clusters
 * the overlay does not hold (the destination's base has them) and sends
 * the ones it holds; the blocks written later go as the guest sees them,
 * as for any disk.  The destination decides, per disk, and answers the
 * "disks" section with MIGRATE_DISK_ANSWER before anything else is sent.
 * Any other disk is sent as the guest sees it, whatever image holds it.
 *
 * The sections (state/migrate.c's framing: checksummed, version 1):
 *
 *   disks   u32 block size, u32 count, count x { u32 disk index (its
 *           --disk position), u64 size in bytes, u32 flags, and with flag
 *           1 the backing image's identity: 36 bytes of id, u64
 *           generation }; once, after "hello"; the destination answers
 *           "SHOALDSK", u32 count, count x u8 (1: send the top layer only)
 *   disk    u32 disk index, then records { u8 kind (1 zeroes, 2 data),
 *           u64 offset, u64 length[, length bytes] }; data records carry
 *           at most MIGRATE_DISK_CHUNK bytes
 *
 * The destination trusts nothing: the disks named must be its own, each
 * once, writable and of the source's size (a mismatch names both sizes);
 * a "disk" section must name a listed disk, and each of its records is
 * checked (kind, length, inside the disk, its bytes present) before any of
 * them is written.  Anything else is refused with one line, status 84,
 * and the VM never runs.  The disks are flushed before the destination
 * acknowledges.
 *
 * What the guest can do: write as fast as it likes.  Its writes only set
 * bits; a guest that writes faster than the stream carries keeps the
 * rounds going until MIGRATE_MAX_ROUNDS, and the stop phase sends the
 * rest with the VM paused.
 */
#include "state/migrate_disk.h"
#include "state/migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "block/blockdev.h"
#include "block/dirty_bitmap.h"
#include "devices/device.h"
#include "devices/virtio.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_pci.h"
#include "vmm/devices.h"
#include "vmm/vm.h"

/* The virtio-blk model of disk i, or NULL. */
static struct vblk *disk_vblk(struct vm *vm, int i)
{
	struct vblk *b = NULL;

	return vm_disk_device(vm, i, &b) ? b : NULL;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* ---- run on a disk's I/O thread ---- */

/* Whether [off, off+len) reads as zero without reading it. */
static bool reads_zero(struct blockdev *bd, uint64_t off, uint64_t len)
{
	while (len) {
		struct bd_extent x;

		if (blockdev_block_status(bd, off, len, &x) || !x.len)
			return false;
		if (x.status != BD_ZERO && !(x.status == BD_UNALLOC && !bd->backing))
			return false;
		if (x.len >= len)
			return true;
		off += x.len;
		len -= x.len;
	}
	return true;
}

struct disk_io {
	void *buf;          /* read into / write from; NULL: zeroes (write) */
	uint64_t off, len;
	bool zero;          /* read: the range reads as zero, buf untouched */
};

static int read_fn(struct blockdev *bd, void *arg)
{
	struct disk_io *io = arg;

	io->zero = reads_zero(bd, io->off, io->len);
	return io->zero ? 0 : blockdev_read(bd, io->buf, io->off, io->len);
}

static int write_fn(struct blockdev *bd, void *arg)
{
	struct disk_io *io = arg;
	uint64_t off = io->off, end = io->off + io->len;

	if (io->buf)
		return blockdev_write(bd, io->buf, io->off, io->len);
	/* zeroes: leave what already reads as zero (a fresh image) alone */
	while (off < end) {
		struct bd_extent x;
		uint64_t n;
		int rc;

		if (blockdev_block_status(bd, off, end - off, &x) || !x.len)
			return blockdev_write_zeroes(bd, off, end - off);
		n = x.len < end - off ? x.len : end - off;
		if (x.status != BD_ZERO && !(x.status == BD_UNALLOC && !bd->backing)) {
			rc = blockdev_write_zeroes(bd, off, n);
			if (rc)
				return rc;
		}
		off += n;
	}
	return 0;
}

/* The backing image's chain identity, when it can be trusted. */
struct base_id {
	bool has;
	char id[37];
	uint64_t gen;
};

static int base_fn(struct blockdev *bd, void *arg)
{
	struct base_id *b = arg;
	bool current = false;

	b->has = bd->format == BD_FMT_QCOW2 && bd->backing &&
		 !blockdev_chain_id(bd->backing, b->id, &b->gen, &current) && current;
	return 0;
}

struct disk_status {
	uint64_t off, len;
	struct bd_extent ext;
};

static int status_fn(struct blockdev *bd, void *arg)
{
	struct disk_status *x = arg;

	return blockdev_block_status(bd, x->off, x->len, &x->ext);
}

static int flush_fn(struct blockdev *bd, void *arg)
{
	(void)arg;
	return blockdev_flush(bd);
}

/* ---- the destination ---- */

static int vm_write(void *opaque, int disk, const void *buf, uint64_t off, uint64_t len)
{
	struct migrate_disk_target *t = opaque;
	struct disk_io io = { .buf = (void *)buf, .off = off, .len = len };

	return vblk_call(t->dev[disk], write_fn, &io);
}

int migrate_disk_target_init(struct migrate_disk_target *t, struct vm *vm, struct error *e)
{
	memset(t, 0, sizeof(*t));
	t->n = vm->cfg.ndisks;
	for (int i = 0; i < t->n; i++) {
		struct vblk *b = disk_vblk(vm, i);
		struct base_id base = { 0 };

		if (!b)
			return error_set(e, EXIT_HOST, "incoming migration: disk %d has no device", i);
		t->dev[i] = b;
		vblk_call(b, base_fn, &base);
		t->has_base[i] = base.has;
		memcpy(t->base_id[i], base.id, sizeof(base.id));
		t->base_gen[i] = base.gen;
		t->size[i] = vblk_disk_size(b);
		t->writable[i] = !vblk_is_readonly(b);
		t->path[i] = vm->cfg.disks[i].path;
	}
	t->write = vm_write;
	t->opaque = t;
	return 0;
}

int migrate_disk_target_flush(struct migrate_disk_target *t, struct error *e)
{
	for (int i = 0; i < t->n; i++) {
		int rc;

		if (!t->announced[i] || !t->dev[i])
			continue;
		rc = vblk_call(t->dev[i], flush_fn, NULL);
		if (rc)
			return error_set(e, EXIT_HOST, "incoming migration: disk %d (%s): flush: %s", i,
					 t->path[i], strerror(-rc));
	}
	return 0;
}

int migrate_disk_parse_list(struct migrate_disk_target *t, const uint8_t *p, size_t len,
			    struct error *e)
{
	struct state_reader r;
	uint32_t gran, count;

	if (t->listed)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a second disks section");
	state_reader_init(&r, p, len);
	gran = state_get_u32(&r);
	count = state_get_u32(&r);
	if (r.error || count > VM_MAX_DISKS)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the disks section is "
				 "malformed (%zu bytes, %" PRIu32 " disks)", len, r.error ? 0 : count);
	if (gran < 512 || (gran & (gran - 1)))
		return error_set(e, EXIT_BADSTATE, "incoming migration: the disks section's block "
				 "size %" PRIu32 " is not a power of two of at least 512", gran);
	for (uint32_t k = 0; k < count; k++) {
		uint32_t i = state_get_u32(&r), flags;
		uint64_t size = state_get_u64(&r), gen = 0;
		char id[37] = "";

		flags = state_get_u32(&r);
		if (flags & MIGRATE_DISK_F_BASE) {
			state_get_bytes(&r, id, 36);
			gen = state_get_u64(&r);
		}
		if (r.error)
			return error_set(e, EXIT_BADSTATE, "incoming migration: the disks section is "
					 "malformed (%zu bytes, cut short in disk %" PRIu32 " of %" PRIu32
					 ")", len, k + 1, count);
		if (i >= (uint32_t)t->n)
			return error_set(e, EXIT_BADSTATE, "incoming migration: the source mirrors its "
					 "disk %" PRIu32 ", and this VM has %d disk%s (start it with a "
					 "--disk for each of the source's)", i, t->n,
					 t->n == 1 ? "" : "s");
		if (t->announced[i])
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 " is "
					 "listed twice", i);
		if (!t->writable[i])
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 " (%s) is "
					 "read-only here, and the source mirrors it", i, t->path[i]);
		if (t->dev[i] && vblk_is_inactive(t->dev[i]))
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 " (%s) is "
					 "written by another process (opened inactive, as shared "
					 "storage): it cannot take the source's mirror", i, t->path[i]);
		if (flags & ~(uint32_t)MIGRATE_DISK_F_BASE)
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": "
					 "unknown flags 0x%" PRIx32, i, flags);
		if (size != t->size[i])
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": the "
					 "source's disk is %" PRIu64 " bytes (%" PRIu64 " MiB), this one "
					 "(%s) %" PRIu64 " bytes (%" PRIu64 " MiB): create it with the "
					 "source's size", i, size, size >> 20, t->path[i], t->size[i],
					 t->size[i] >> 20);
		t->announced[i] = true;
		t->top_only[i] = (flags & MIGRATE_DISK_F_BASE) && t->has_base[i] &&
				 !memcmp(id, t->base_id[i], 36) && gen == t->base_gen[i];
		t->order[t->nlisted++] = (int)i;
	}
	if (r.pos != r.len)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the disks section is "
				 "malformed (%zu bytes after its %" PRIu32 " disks)", r.len - r.pos, count);
	t->listed = true;
	return 0;
}

void migrate_disk_answer(const struct migrate_disk_target *t, struct state_writer *w)
{
	state_put_bytes(w, MIGRATE_DISK_ANSWER, 8);
	state_put_u32(w, (uint32_t)t->nlisted);
	for (int k = 0; k < t->nlisted; k++)
		state_put_u8(w, t->top_only[t->order[k]]);
}

/* Check (apply false) or apply every record of a "disk" payload. */
static int disk_records(struct migrate_disk_target *t, const uint8_t *p, size_t len,
			bool apply, struct error *e)
{
	struct state_reader r;
	uint32_t i;
	uint64_t n = 0;

	state_reader_init(&r, p, len);
	i = state_get_u32(&r);
	if (r.error)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a disk section is cut short");
	if (i >= (uint32_t)t->n || !t->announced[i])
		return error_set(e, EXIT_BADSTATE, "incoming migration: a disk section for disk %"
				 PRIu32 ", which the disks section did not list", i);
	while (r.pos < r.len) {
		size_t at = r.pos;
		uint8_t kind = state_get_u8(&r);
		uint64_t off = state_get_u64(&r), rlen = state_get_u64(&r);
		int rc;

		n++;
		if (r.error)
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": record %"
					 PRIu64 " (byte %zu of its section) is cut short", i, n, at);
		if (kind != MIGRATE_DISK_ZERO && kind != MIGRATE_DISK_DATA)
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": record %"
					 PRIu64 " has an unknown kind %u", i, n, kind);
		if (!rlen || off > t->size[i] || rlen > t->size[i] - off)
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": record %"
					 PRIu64 " covers bytes %" PRIu64 "+%" PRIu64 ", outside the disk "
					 "(%" PRIu64 " bytes)", i, n, off, rlen, t->size[i]);
		if (kind == MIGRATE_DISK_DATA &&
		    (rlen > MIGRATE_DISK_CHUNK || rlen > r.len - r.pos))
			return error_set(e, EXIT_BADSTATE, "incoming migration: disk %" PRIu32 ": record %"
					 PRIu64 " claims %" PRIu64 " bytes of data, and %zu follow (at "
					 "most %u)", i, n, rlen, r.len - r.pos, MIGRATE_DISK_CHUNK);
		if (apply) {
			rc = t->write(t->opaque, (int)i, kind == MIGRATE_DISK_DATA ? r.data + r.pos : NULL,
				      off, rlen);
			if (rc)
				return error_set(e, EXIT_HOST, "incoming migration: disk %" PRIu32 " (%s): "
						 "cannot write %" PRIu64 " bytes at %" PRIu64 ": %s", i,
						 t->path[i] ? t->path[i] : "?", rlen, off, strerror(-rc));
			if (kind == MIGRATE_DISK_DATA)
				t->data_bytes += rlen;
			else
				t->zero_bytes += rlen;
		}
		if (kind == MIGRATE_DISK_DATA)
			r.pos += (size_t)rlen;
	}
	return 0;
}

int migrate_disk_apply(struct migrate_disk_target *t, const uint8_t *p, size_t len,
		       struct error *e)
{
	if (!t->listed)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a disk section before the "
				 "disks section");
	if (disk_records(t, p, len, false, e))
		return -1;
	return disk_records(t, p, len, true, e);
}

/* ---- the source ---- */

struct mdisk {
	int index;                  /* --disk position */
	struct vblk *b;
	struct base_id base;        /* the backing image's identity, if any */
	bool top_only;              /* the destination has the base: send the top */
	uint64_t size, nbits;
	uint64_t *bits;             /* blocks waiting to be sent */
};

struct migrate_disks {
	int n;
	struct mdisk d[VM_MAX_DISKS];
	uint8_t *buf;               /* MIGRATE_DISK_CHUNK */
	struct migrate_disk_stats st;
};

void migrate_disks_end(struct migrate_disks *md)
{
	if (!md)
		return;
	for (int k = 0; k < md->n; k++) {
		vblk_dirty_stop(md->d[k].b);
		free(md->d[k].bits);
	}
	free(md->buf);
	free(md);
}

int migrate_disks_start(struct vm *vm, struct migrate_disks **out, struct error *e)
{
	struct migrate_disks *md = calloc(1, sizeof(*md));

	*out = NULL;
	if (!md || !(md->buf = malloc(MIGRATE_DISK_CHUNK))) {
		free(md);
		return error_set(e, EXIT_HOST, "migration: out of memory");
	}
	for (int i = 0; i < vm->cfg.ndisks; i++) {
		struct vblk *b = disk_vblk(vm, i);
		struct mdisk *d;
		int rc;

		if (!b || vblk_is_readonly(b))
			continue;          /* the destination opens its own copy */
		d = &md->d[md->n];
		d->index = i;
		d->b = b;
		d->size = vblk_disk_size(b);
		d->nbits = (d->size + MIGRATE_DISK_BLOCK - 1) / MIGRATE_DISK_BLOCK;
		vblk_call(b, base_fn, &d->base);
		d->bits = calloc((d->nbits + 63) / 64 + 1, sizeof(uint64_t));
		rc = d->bits ? vblk_dirty_start(b, MIGRATE_DISK_BLOCK) : -ENOMEM;
		if (rc) {
			free(d->bits);
			migrate_disks_end(md);
			return error_set(e, EXIT_HOST, "migration: disk %d: cannot track its writes: %s",
					 i, strerror(-rc));
		}
		md->n++;
		md->st.disks++;
		md->st.size += d->size;
	}
	*out = md;
	return 0;
}

void migrate_disks_get_stats(const struct migrate_disks *md, struct migrate_disk_stats *st)
{
	if (md)
		*st = md->st;
	else
		memset(st, 0, sizeof(*st));
}

int migrate_disks_send_list(struct migrate_disks *md, const struct migrate_disk_out *o,
			    struct error *e)
{
	size_t mark = state_section_begin(o->w, "disks", 1);

	state_put_u32(o->w, MIGRATE_DISK_BLOCK);
	state_put_u32(o->w, (uint32_t)md->n);
	for (int k = 0; k < md->n; k++) {
		const struct mdisk *d = &md->d[k];

		state_put_u32(o->w, (uint32_t)d->index);
		state_put_u64(o->w, d->size);
		state_put_u32(o->w, d->base.has ? MIGRATE_DISK_F_BASE : 0);
		if (d->base.has) {
			state_put_bytes(o->w, d->base.id, 36);
			state_put_u64(o->w, d->base.gen);
		}
	}
	return o->flush(o->opaque, mark, e);
}

int migrate_disks_set_modes(struct migrate_disks *md, const uint8_t *modes, uint32_t n,
			    struct error *e)
{
	if (n != (uint32_t)md->n)
		return error_set(e, EXIT_HOST, "migration: the destination answered for %" PRIu32
				 " disks, and %d were listed", n, md->n);
	for (int k = 0; k < md->n; k++) {
		if (modes[k] > 1 || (modes[k] && !md->d[k].base.has))
			return error_set(e, EXIT_HOST, "migration: the destination's answer for disk %d "
					 "makes no sense (%u)", md->d[k].index, modes[k]);
		md->d[k].top_only = modes[k];
		md->st.top_only += modes[k];
		if (modes[k])
			log_info("migration: disk %d: the destination has its base (%s, generation %"
				 PRIu64 "): only the top layer goes", md->d[k].index, md->d[k].base.id,
				 md->d[k].base.gen);
	}
	return 0;
}

/* A "disk" section being filled. */
struct disk_out {
	const struct migrate_disk_out *o;
	size_t mark;
	bool open;
	int disk;                   /* index in md->d */
	uint64_t data;              /* data bytes in it */
	/* a zero record not yet written, to merge with the next */
	uint64_t zoff, zlen;
};

static void put_record(struct disk_out *s, uint8_t kind, uint64_t off, uint64_t len,
		       const void *data)
{
	state_put_u8(s->o->w, kind);
	state_put_u64(s->o->w, off);
	state_put_u64(s->o->w, len);
	if (data)
		state_put_bytes(s->o->w, data, (size_t)len);
}

static int section_close(struct migrate_disks *md, struct disk_out *s, struct error *e)
{
	if (s->zlen) {
		put_record(s, MIGRATE_DISK_ZERO, s->zoff, s->zlen, NULL);
		s->zlen = 0;
	}
	if (!s->open)
		return 0;
	s->open = false;
	(void)md;
	return s->o->flush(s->o->opaque, s->mark, e);
}

static void section_open(struct migrate_disks *md, struct disk_out *s, int k)
{
	s->mark = state_section_begin(s->o->w, "disk", 1);
	state_put_u32(s->o->w, (uint32_t)md->d[k].index);
	s->open = true;
	s->disk = k;
	s->data = 0;
}

/* Add a record for disk k: zeroes (data NULL) or `len` bytes of data. */
static int add_record(struct migrate_disks *md, struct disk_out *s, int k, uint64_t off,
		      uint64_t len, const uint8_t *data, struct error *e)
{
	if (s->open && (s->disk != k || (data && s->data + len > MIGRATE_DISK_CHUNK)) &&
	    section_close(md, s, e))
		return -1;
	if (!s->open)
		section_open(md, s, k);
	if (!data) {
		md->st.zero_bytes += len;
		if (s->zlen && s->zoff + s->zlen == off) {
			s->zlen += len;
			return 0;
		}
		if (s->zlen)
			put_record(s, MIGRATE_DISK_ZERO, s->zoff, s->zlen, NULL);
		s->zoff = off;
		s->zlen = len;
		return 0;
	}
	if (s->zlen) {
		put_record(s, MIGRATE_DISK_ZERO, s->zoff, s->zlen, NULL);
		s->zlen = 0;
	}
	put_record(s, MIGRATE_DISK_DATA, off, len, data);
	s->data += len;
	md->st.data_bytes += len;
	return 0;
}

/* Read [off, off+len) of disk k (len <= MIGRATE_DISK_CHUNK) and add it:
 * zero blocks as a flag, runs of data blocks as bytes. */
static int send_range(struct migrate_disks *md, struct disk_out *s, int k, uint64_t off,
		      uint64_t len, struct error *e)
{
	struct mdisk *d = &md->d[k];
	struct disk_io io = { .buf = md->buf, .off = off, .len = len };
	int rc = vblk_call(d->b, read_fn, &io);
	uint64_t p = 0;

	if (rc)
		return error_set(e, EXIT_HOST, "migration: disk %d: cannot read %" PRIu64 " bytes at %"
				 PRIu64 ": %s", d->index, len, off, strerror(-rc));
	if (io.zero)
		return add_record(md, s, k, off, len, NULL, e);
	while (p < len) {
		uint64_t q = p, n;
		bool zero;

		n = MIGRATE_DISK_BLOCK - (off + p) % MIGRATE_DISK_BLOCK;
		if (n > len - p)
			n = len - p;
		zero = all_zero(md->buf + p, (size_t)n);
		q = p + n;
		while (q < len) {
			uint64_t m = MIGRATE_DISK_BLOCK < len - q ? MIGRATE_DISK_BLOCK : len - q;

			if (all_zero(md->buf + q, (size_t)m) != zero)
				break;
			q += m;
		}
		if (add_record(md, s, k, off + p, q - p, zero ? NULL : md->buf + p, e))
			return -1;
		p = q;
	}
	return 0;
}

int migrate_disks_send_all(struct migrate_disks *md, const struct migrate_disk_out *o,
			   struct error *e)
{
	struct disk_out s = { .o = o };

	for (int k = 0; k < md->n; k++) {
		struct mdisk *d = &md->d[k];

		for (uint64_t off = 0, n; off < d->size; off += n) {
			struct disk_status x = { .off = off };

			n = x.len = d->size - off < MIGRATE_DISK_CHUNK ? d->size - off : MIGRATE_DISK_CHUNK;
			if (d->top_only && !vblk_call(d->b, status_fn, &x) && x.ext.len) {
				/* only what the top layer holds: the rest is the base's */
				if (x.ext.len < n)
					n = x.ext.len;
				if (x.ext.status == BD_UNALLOC) {
					md->st.base_bytes += n;
					continue;
				}
				if (x.ext.status == BD_ZERO) {
					if (add_record(md, &s, k, off, n, NULL, e))
						return -1;
					continue;
				}
			}
			if (send_range(md, &s, k, off, n, e))
				return -1;
		}
	}
	return section_close(md, &s, e);
}

uint64_t migrate_disks_sync(struct migrate_disks *md)
{
	uint64_t n = 0;

	for (int k = 0; md && k < md->n; k++) {
		vblk_dirty_take(md->d[k].b, md->d[k].bits);
		n += bd_bits_count(md->d[k].bits, md->d[k].nbits);
	}
	if (md)
		md->st.dirty_blocks = n;
	return n;
}

int migrate_disks_send_dirty(struct migrate_disks *md, const struct migrate_disk_out *o,
			     struct error *e)
{
	struct disk_out s = { .o = o };

	for (int k = 0; k < md->n; k++) {
		struct mdisk *d = &md->d[k];
		uint64_t pos = 0, n;

		while (bd_bits_next_run(d->bits, d->nbits, &pos, &n,
					MIGRATE_DISK_CHUNK / MIGRATE_DISK_BLOCK)) {
			uint64_t off = pos * MIGRATE_DISK_BLOCK, len = n * MIGRATE_DISK_BLOCK;

			if (len > d->size - off)
				len = d->size - off;
			if (send_range(md, &s, k, off, len, e))
				return -1;
			md->st.resent_blocks += n;
			pos += n;
		}
		memset(d->bits, 0, (d->nbits + 63) / 64 * sizeof(uint64_t));
	}
	md->st.dirty_blocks = 0;
	return section_close(md, &s, e);
}

/* ---- shared storage: the write lock moves ---- */

void migrate_incoming_prepare(void)
{
	vblk_set_incoming(true);
}

int migrate_disks_inactivate(struct vm *vm, struct error *e)
{
	for (int i = 0; i < vm->cfg.ndisks; i++) {
		struct vblk *b = disk_vblk(vm, i);

		if (b && vblk_inactivate(b, e)) {
			struct error e2 = { 0 };

			while (--i >= 0)
				if ((b = disk_vblk(vm, i)) && vblk_activate(b, &e2))
					log_error("disk %d: %s", i, e2.msg);
			return -1;
		}
	}
	return 0;
}

int migrate_disks_activate(struct vm *vm, bool retry, struct error *e)
{
	for (int i = 0; i < vm->cfg.ndisks; i++) {
		struct vblk *b = disk_vblk(vm, i);
		int rc, tries = retry ? 20 : 1;

		if (!b)
			continue;
		while ((rc = vblk_activate(b, e)) && --tries > 0)
			usleep(100000);   /* a destination that refused may still hold it */
		if (rc) {
			struct error e2 = { 0 };

			while (--i >= 0)
				if ((b = disk_vblk(vm, i)) && vblk_inactivate(b, &e2))
					log_error("disk %d: %s", i, e2.msg);
			return -1;
		}
	}
	return 0;
}
