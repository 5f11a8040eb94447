/*
 * migrate.c - live migration (pre-copy) of a running VM to another Shoal
 * process, over a Unix or TCP socket: the stream, the source's loop and
 * the destination's loader (its sockets: migrate_net.c; the disks:
 * migrate_disk.c).  Users' page: docs/migration.md.
 *
 * The stream.  "SHOALMIG", then sections in base/state.h's framing (magic
 * 'SDEV', name, version 1, length, payload), each followed by the XXH3-64
 * of the whole section:
 *
 *   hello   u64 memory bytes, u32 vCPUs, u32 page size, u32 n, n bytes of
 *           the source's settings as JSON (for the record), u32 m, m bytes
 *           of the CPU the guest saw as JSON (snapshot_cpu_json), which the
 *           destination checks against its own vCPU, then (since
 *           compression; an older destination ignores it) u32 k, k bytes
 *           of the stream's options as JSON: {"ram_compress": "zstd"} when
 *           ram records may be compressed, {} otherwise; a destination
 *           refuses a codec it does not know
 *   ram     records: u64 page offset in the memfd | kind (1: that many
 *           zero pages, nothing follows; 2: the pages follow; 3: u32 n,
 *           then n bytes, one zstd frame of exactly the pages, at most 256:
 *           state/migrate_compress.c), u32 pages.  A destination older
 *           than kind 3 refuses it (naming the kind), and the source VM
 *           runs on; post-copy's pages after the switch are never kind 3
 *   round   u32 round, u64 pages dirty at its start (informational)
 *   disks   with --with-disks, once after hello: the disks mirrored
 *   disk    blocks of a mirrored disk, zero ranges as a flag (both:
 *           state/migrate_disk.c)
 *   postcopy with --postcopy-after, in the stop phase instead of the last
 *           pages: u64 pages, the bitmap of those not current at the
 *           destination, sent after the switch (state/migrate_postcopy.c;
 *           a destination without post-copy refuses it as an unexpected
 *           section, and the source VM runs on), and its identity
 *   recover after post-copy's connection dropped, first on the new one
 *           (shoal migrate --resume): the memory size and the identity;
 *           the destination answers "SHOALRCV" and the pages it still
 *           lacks (state/migrate_postcopy.c)
 *   sync    empty, once, after the last round of pre-copy and before the
 *           pause: the destination answers "SHOALRDY" once it has applied
 *           everything before it
 *   clock   u64 the source's CLOCK_REALTIME (ns) just after it read the
 *           state below: the destination restores the guest's TSCs and
 *           kvmclock advanced by the time elapsed since (kvm_state.h), so
 *           the guest's clocks run on through the pause
 *   state   the snapshot's state sections ("kvm", "devices":
 *           state/snapshot.c's snapshot_state_save), sent once, paused
 *   end     empty: the stream is complete
 *
 * and back, from the destination: "SHOALDSK" and which disks it has the
 * base of, right after "disks" (migrate_disk.c); "SHOALRDY" after "sync";
 * "SHOALACK" once it has everything and has restored it, or "SHOALNAK",
 * u32 n, n bytes: why it refused.  The source answers SHOALACK with
 * "SHOALRUN" (MIGRATE_RUN), and only then does the destination run the
 * VM (await_run): without it the destination cannot tell whether its
 * acknowledgement arrived (if not, the source runs on), so it holds the VM
 * paused, in doubt, for its operator: no lost word runs the VM at both
 * ends.  Post-copy holds its VM too, and waits for the source as after a
 * drop: only a source past the switch comes back for its recovery, which
 * runs the VM (pc_release); else it stops, never run, after
 * recover-timeout (docs/migration.md, "In doubt").
 *
 * Pre-copy (the source, a thread of its own).  Dirty tracking starts
 * (vmm/dirty.c: KVM's log for the vCPUs, host-side marks for the
 * devices); round 0 sends all RAM (holes of the memfd and all-zero pages
 * as zero records); each further round sends the pages dirtied during the
 * one before, until what is dirty would go over in the downtime limit at
 * the bandwidth measured (or MIGRATE_MAX_ROUNDS).  Then "sync": the source
 * waits, the VM still running, until the destination has applied all it
 * was sent (the last round's pages still in the socket and in its buffer
 * would otherwise be applied during the pause, ahead of the state, and
 * where both ends share a CPU they take it from the source's stop phase).
 * Then the vCPUs park,
 * the event loop is held (no device callback runs), the devices are
 * quiesced, and the last dirty pages, the state and "end" go over.  With
 * --with-disks each writable disk is mirrored alongside (migrate_disk.c):
 * its bulk copy after round 0's RAM, the blocks written since in each
 * round after, the last ones in the stop phase, once the devices are
 * quiesced.
 *
 * Auto-converge (--auto-converge): after a round in which the guest
 * dirtied more than half of what the round sent, twice in a row, the
 * vCPUs are throttled (vmm/vcpu_throttle.h: 20 % of their time asleep,
 * then 10 points more each time, up to 99 %), and a timerfd on the event
 * loop kicks them out of KVM_RUN every slice so they see it.  The throttle
 * ends with the migration, however it ends.
 *
 * Shared storage (both ends open the same writable image): the
 * destination opened it inactive, without the write lock the source holds
 * (devices/virtio_blk.c); in the stop phase, once the devices are quiesced
 * and just before "end", the source flushes its disks and gives up their
 * locks (migrate_disks_inactivate, QEMU's inactivate), and the destination
 * takes them when "end" arrives, before it acknowledges.  If it cannot (a
 * third process took the image), it refuses, and the source, as after any
 * failure before the acknowledgement, takes its locks back (retrying for
 * 2 s while the destination lets go) and runs on.
 *
 * The point of no return is the destination's acknowledgement.  Before it,
 * any failure (a send or receive error, the destination gone or refusing,
 * a timeout, a cancel) turns tracking off, lets the devices and vCPUs go
 * on, and reports the error: the source VM runs on unharmed, its memory
 * never changed by any of this.  After it the source stops (status 0) and
 * the VM runs at the destination.  A cancel is honoured until "end" is
 * sent; from then on only the acknowledgement or a failure decides.
 *
 * The destination trusts nothing: every section is checksummed and
 * bounds-checked, every page range checked against its RAM, the version,
 * memory size and vCPU count must be its own, and the stream must end
 * with "state" then "end".  It refuses anything else with one line and
 * never runs the VM.
 */
#include "state/migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "base/timespec.h"
#include "state/migrate_auth.h"
#include "state/migrate_compress.h"
#include "state/migrate_disk.h"
#include "state/migrate_net.h"
#include "state/migrate_postcopy.h"
#include "state/migrate_tls.h"
#include "state/snapshot.h"
#include "vmm/control.h"
#include "vmm/config.h"
#include "vmm/dirty.h"
#include "vmm/kvm_state.h"
#include "vmm/mtrace.h"
#include "vmm/vcpu_throttle.h"
#include "vmm/vm.h"

#define PAGE          4096u
#define SECTION_PAGES 256u            /* data pages per "ram" section: 1 MiB */
/* A section header: magic, name length, a name of up to 63 bytes, version,
 * payload length. */
#define SECTION_HEAD_MAX (4 + 1 + 63 + 2 + 4)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- sections ---- */

size_t migrate_section_begin(struct state_writer *w, const char *name)
{
	return state_section_begin(w, name, 1);
}

void migrate_section_end(struct state_writer *w, size_t start, size_t mark)
{
	uint64_t h;

	state_section_end(w, mark);
	if (w->error)
		return;
	h = XXH3_64bits(w->data + start, w->len - start);
	state_put_u64(w, h);
}

int migrate_read_magic(struct migrate_in *in, struct error *e)
{
	char magic[8];
	int rc = migrate_io_recv(in->fd, in->tls, magic, 8);

	if (rc <= 0)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream ended before its "
				 "header (%s)", rc ? strerror(errno) : "nothing was sent");
	in->bytes += 8;
	if (!memcmp(magic, "SHOALTLS", 8))      /* state/migrate_tls.h's MIGRATE_TLS_ASK */
		return error_set(e, EXIT_BADSTATE, "incoming migration: the source asks for TLS "
				 "(SHOALTLS), which needs a key: start the destination with --incoming "
				 "ADDR,key-file=FILE,tls=on");
	if (memcmp(magic, MIGRATE_MAGIC, 8))
		return error_set(e, EXIT_BADSTATE, "incoming migration: not a Shoal migration stream "
				 "(bad magic)");
	return 0;
}

static int short_read(struct migrate_in *in, int rc, struct error *e)
{
	if (rc == 0 || errno == EPIPE)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream ended early, in "
				 "section %" PRIu64 " at byte %" PRIu64 " (the source went away?)",
				 in->sections, in->bytes);
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return error_set(e, EXIT_BADSTATE, "incoming migration: nothing from the source for "
				 "%d s (section %" PRIu64 ")", MIGRATE_IO_TIMEOUT_S, in->sections);
	return error_set(e, EXIT_BADSTATE, "incoming migration: reading the stream: %s",
			 strerror(errno));
}

static int in_reserve(struct migrate_in *in, size_t n, struct error *e)
{
	uint8_t *b;

	if (n <= in->cap)
		return 0;
	b = realloc(in->buf, n);
	if (!b)
		return error_set(e, EXIT_HOST, "incoming migration: out of memory");
	in->buf = b;
	in->cap = n;
	return 0;
}

int migrate_read_section(struct migrate_in *in, char name[64], const uint8_t **payload,
			 size_t *len, struct error *e)
{
	struct state_reader r, pr;
	uint32_t magic, plen;
	uint16_t ver;
	uint8_t nlen;
	size_t head, total;
	uint64_t want, got;
	int rc;

	if (in_reserve(in, SECTION_HEAD_MAX, e))   /* the longest header */
		return -1;
	rc = migrate_io_recv(in->fd, in->tls, in->buf, 5);
	if (rc <= 0)
		return short_read(in, rc, e);
	memcpy(&magic, in->buf, 4);
	nlen = in->buf[4];
	if (magic != STATE_SECTION_MAGIC || nlen > 63 || nlen == 0)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream is corrupt: no "
				 "section header at byte %" PRIu64 " (section %" PRIu64 ")",
				 in->bytes, in->sections);
	head = 5 + nlen + 2 + 4;
	rc = migrate_io_recv(in->fd, in->tls, in->buf + 5, head - 5);
	if (rc <= 0)
		return short_read(in, rc ? rc : -1, e);
	memcpy(&plen, in->buf + head - 4, 4);
	if (plen > STATE_SECTION_MAX)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream is corrupt: "
				 "section %" PRIu64 " claims %" PRIu32 " bytes (at most %u)",
				 in->sections, plen, STATE_SECTION_MAX);
	total = head + plen + 8;
	if (in_reserve(in, total, e))
		return -1;
	rc = migrate_io_recv(in->fd, in->tls, in->buf + head, plen + 8);
	if (rc <= 0)
		return short_read(in, rc ? rc : -1, e);
	state_reader_init(&r, in->buf, total - 8);
	if (state_section_read(&r, name, &ver, &pr) < 0)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream is corrupt: "
				 "section %" PRIu64 " at byte %" PRIu64 " is malformed", in->sections,
				 in->bytes);
	memcpy(&want, in->buf + total - 8, 8);
	got = XXH3_64bits(in->buf, total - 8);
	if (got != want)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the stream is corrupt: "
				 "section %" PRIu64 " (\"%s\") at byte %" PRIu64 " fails its checksum",
				 in->sections, name, in->bytes);
	if (ver != 1)
		return error_set(e, EXIT_BADSTATE, "incoming migration: section \"%s\" has version "
				 "%u, this Shoal reads 1", name, ver);
	in->bytes += total;
	in->sections++;
	*payload = pr.data;
	*len = pr.len;
	return 0;
}

void migrate_in_free(struct migrate_in *in)
{
	free(in->buf);
	in->buf = NULL;
	in->cap = 0;
}

/* A record of any kind this Shoal reads; compressed ones (kind 3) only
 * where `zstd` says they may come. */
static int ram_next(struct state_reader *r, uint64_t mem_size, struct migrate_ram_rec *rec,
		    bool zstd, struct error *e)
{
	uint64_t word = state_get_u64(r), bytes;

	rec->off = word & ~(uint64_t)(PAGE - 1);
	rec->kind = (uint32_t)(word & (PAGE - 1));
	rec->pages = state_get_u32(r);
	rec->data = NULL;
	rec->clen = 0;
	bytes = (uint64_t)rec->pages * PAGE;
	if (r->error)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a ram record is cut short");
	if (rec->kind == MIGRATE_RAM_ZSTD && !zstd)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a ram record of compressed "
				 "pages (kind 3) where only plain ones may come");
	if (rec->kind != MIGRATE_RAM_ZERO && rec->kind != MIGRATE_RAM_DATA &&
	    rec->kind != MIGRATE_RAM_ZSTD)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a ram record of kind %u, "
				 "which this Shoal does not know (a newer source?)", rec->kind);
	if (!rec->pages || rec->off > mem_size || bytes > mem_size - rec->off)
		return error_set(e, EXIT_BADSTATE, "incoming migration: a ram record (kind %u, "
				 "%" PRIu32 " pages at %#" PRIx64 ") is outside the VM's %"
				 PRIu64 " MiB", rec->kind, rec->pages, rec->off, mem_size >> 20);
	if (rec->kind == MIGRATE_RAM_DATA) {
		if (bytes > r->len - r->pos)
			return error_set(e, EXIT_BADSTATE, "incoming migration: a ram record's "
					 "pages are cut short");
		rec->data = r->data + r->pos;
		r->pos += bytes;
	}
	if (rec->kind == MIGRATE_RAM_ZSTD) {
		if (rec->pages > MIGRATE_Z_MAX_PAGES)
			return error_set(e, EXIT_BADSTATE, "incoming migration: a compressed ram "
					 "record of %" PRIu32 " pages (at most %u)", rec->pages,
					 MIGRATE_Z_MAX_PAGES);
		rec->clen = state_get_u32(r);
		if (r->error || !rec->clen || rec->clen > r->len - r->pos)
			return error_set(e, EXIT_BADSTATE, "incoming migration: a compressed ram "
					 "record's frame is cut short");
		rec->data = r->data + r->pos;
		r->pos += rec->clen;
	}
	return 0;
}

int migrate_ram_next(struct state_reader *r, uint64_t mem_size, struct migrate_ram_rec *rec,
		     struct error *e)
{
	return ram_next(r, mem_size, rec, false, e);
}

int migrate_apply_ram(const struct guest_mem *m, const uint8_t *p, size_t len,
		      struct error *e)
{
	struct state_reader r;
	struct migrate_ram_rec rec;

	state_reader_init(&r, p, len);
	while (r.pos < r.len) {
		uint64_t bytes;

		if (ram_next(&r, m->size, &rec, true, e))
			return -1;
		bytes = (uint64_t)rec.pages * PAGE;
		if (rec.kind == MIGRATE_RAM_ZSTD) {
			const char *why;

			if (migrate_z_decode(m->host + rec.off, bytes, rec.data, rec.clen, &why))
				return error_set(e, EXIT_BADSTATE, "incoming migration: the zstd frame "
						 "of %" PRIu32 " pages at %#" PRIx64 " (%" PRIu32
						 " bytes) %s", rec.pages, rec.off, rec.clen, why);
			continue;
		}
		if (rec.data) {
			memcpy(m->host + rec.off, rec.data, bytes);
			continue;
		}
		if (m->fd < 0 || fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					   (off_t)rec.off, (off_t)bytes) < 0)
			memset(m->host + rec.off, 0, bytes);
	}
	return 0;
}

/* ---- the destination ---- */

/* hello's options: {"ram_compress": "zstd"} or {}. */
static int check_options(struct state_reader *r, struct error *e)
{
	uint32_t k = state_get_u32(r);
	json_t *o, *z;
	int rc = 0;

	if (r->error || k > r->len - r->pos)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the hello section's options "
				 "are cut short");
	o = json_loadb((const char *)r->data + r->pos, k, 0, NULL);
	z = json_object_get(o, "ram_compress");
	if (!json_is_object(o))
		rc = error_set(e, EXIT_BADSTATE, "incoming migration: the hello section's options "
			       "are not a JSON object");
	else if (z && (!json_is_string(z) || strcmp(json_string_value(z), MIGRATE_Z_NAME)))
		rc = error_set(e, EXIT_BADSTATE, "incoming migration: the source compresses its "
			       "pages with \"%.40s\", which this Shoal does not read (it reads "
			       MIGRATE_Z_NAME ")", json_is_string(z) ? json_string_value(z) : "?");
	else if (z)
		log_info("incoming migration: the source compresses its pages with "
			 MIGRATE_Z_NAME);
	json_decref(o);
	return rc;
}

int migrate_parse_hello(uint64_t mem_size, int ncpus, const uint8_t *p, size_t len,
			json_t **cpu, struct error *e)
{
	struct state_reader r;
	uint64_t mem;
	uint32_t vcpus, page, n;
	const char *text;

	*cpu = NULL;
	state_reader_init(&r, p, len);
	mem = state_get_u64(&r);
	vcpus = state_get_u32(&r);
	page = state_get_u32(&r);
	if (r.error)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the hello section is cut short");
	if (page != PAGE)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the source's pages are %" PRIu32
				 " bytes, ours %u", page, PAGE);
	if (mem != mem_size || vcpus != (uint32_t)ncpus)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the source's VM has %" PRIu64
				 " MiB and %" PRIu32 " vCPUs, this one %" PRIu64 " MiB and %d (start the "
				 "destination with the source's settings)", mem >> 20, vcpus,
				 mem_size >> 20, ncpus);
	n = state_get_u32(&r);               /* the settings, for the record: skipped */
	if (r.error || n > r.len - r.pos)
		r.error = true;
	else
		r.pos += n;
	n = state_get_u32(&r);               /* the CPU the guest saw */
	text = r.error || n > r.len - r.pos ? NULL : (const char *)r.data + r.pos;
	*cpu = text ? json_loadb(text, n, 0, NULL) : NULL;
	if (!*cpu)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the hello section does not "
				 "describe the source's vCPU");
	r.pos += n;
	if (r.pos < r.len && check_options(&r, e)) {   /* older sources send none */
		json_decref(*cpu);
		*cpu = NULL;
		return -1;
	}
	return 0;
}

static int check_hello(struct vm *vm, const uint8_t *p, size_t len, struct error *e)
{
	json_t *cpu;
	int rc;

	if (migrate_parse_hello(vm->mem.size, vm->ncpus, p, len, &cpu, e))
		return -1;
	rc = snapshot_check_cpu(vm, "incoming migration", cpu, e);
	json_decref(cpu);
	return rc;
}

struct door;
static void door_stop(struct door *d);

/* Read the stream after its magic into `vm`; `door` (or NULL) is told to
 * stop at "sync". */
static int incoming_read(struct vm *vm, struct migrate_in *in, struct door *door,
			 uint64_t **pc_bits, uint64_t *pc_missing, uint8_t pc_id[MIGRATE_PC_ID_LEN],
			 struct error *e)
{
	bool hello = false, state = false, synced = false;
	uint64_t rounds = 0, ram_sections = 0, saved_rt = 0;
	struct migrate_disk_target dt;

	if (migrate_disk_target_init(&dt, vm, e))
		return -1;
	for (;;) {
		char name[64];
		const uint8_t *p;
		size_t len;

		if (migrate_read_section(in, name, &p, &len, e))
			return -1;
		if (!hello && strcmp(name, "hello"))
			return error_set(e, EXIT_BADSTATE, "incoming migration: the stream begins with "
					 "section \"%s\", not \"hello\"", name);
		if (!strcmp(name, "hello")) {
			if (hello)
				return error_set(e, EXIT_BADSTATE, "incoming migration: a second hello section");
			if (check_hello(vm, p, len, e))
				return -1;
			/* what the restore asks KVM, asked now rather than paused */
			if (kvm_state_prepare(vm, e))
				return -1;
			hello = true;
		} else if (!strcmp(name, "ram") && !state) {
			if (migrate_apply_ram(&vm->mem, p, len, e))
				return -1;
			ram_sections++;
		} else if (!strcmp(name, "postcopy") && !state && !*pc_bits) {
			/* post-copy: these pages come after the switch */
			if (migrate_postcopy_parse(vm->mem.size, p, len, pc_bits, pc_missing, pc_id, e))
				return -1;
		} else if (!strcmp(name, "round") && !state) {
			rounds++;
		} else if (!strcmp(name, "disks") && !state) {
			struct state_writer w;
			int rc;

			if (migrate_disk_parse_list(&dt, p, len, e))
				return -1;
			state_writer_init(&w);
			migrate_disk_answer(&dt, &w);
			rc = w.error ? -ENOMEM : migrate_io_send(in->fd, in->tls, w.data, w.len);
			state_writer_free(&w);
			if (rc)
				return error_set(e, EXIT_HOST, "incoming migration: answering the disks "
						 "section: %s", strerror(-rc));
		} else if (!strcmp(name, "disk") && !state) {
			if (migrate_disk_apply(&dt, p, len, e))
				return -1;
		} else if (!strcmp(name, "sync") && !state && !synced) {
			/* The door's thread ends now, while the guest still runs
			 * at the source, rather than after the go-ahead, where
			 * waiting for it delayed the VM's start here (a source
			 * that connects from now on waits in the backlog until the
			 * stream ends: refused then, migrate_incoming) */
			if (door) {
				door_stop(door);
				mtrace("dst.door_stopped");
			}
			/* all before it is applied: the source may pause */
			if (migrate_io_send(in->fd, in->tls, MIGRATE_READY, 8))
				return error_set(e, EXIT_HOST, "incoming migration: the source went "
						 "away before our answer to \"sync\"");
			synced = true;
		} else if (!strcmp(name, "clock") && !state && !saved_rt) {
			struct state_reader r;

			state_reader_init(&r, p, len);
			saved_rt = state_get_u64(&r);
			if (len != 8 || r.error || !saved_rt)
				return error_set(e, EXIT_BADSTATE, "incoming migration: the clock section "
						 "is not a u64 time above 0 (%zu bytes)", len);
		} else if (!strcmp(name, "state") && !state) {
			/* never run, destroyed if this fails: no state to put back;
			 * its clocks go on by the time since the source saved them */
			if (snapshot_state_restore_fresh(vm, "incoming migration: the state section",
							 p, len, saved_rt, e)) {
				e->status = EXIT_BADSTATE;
				return -1;
			}
			mtrace("dst.state_loaded");
			state = true;
		} else if (!strcmp(name, "end") && state) {
			mtrace("dst.end");
			if (migrate_disk_target_flush(&dt, e))
				return -1;
			/* Shared storage: the source gave up its locks before
			 * "end"; take them (a third writer is refused here). */
			if (migrate_disks_activate(vm, false, e)) {
				char why[sizeof(e->msg)];

				snprintf(why, sizeof(why), "%s", e->msg);
				return error_set(e, EXIT_HOST, "incoming migration: cannot take the "
						 "disks' write locks: %.900s", why);
			}
			log_info("incoming migration: %" PRIu64 " bytes in %" PRIu64 " sections (%" PRIu64
				 " of RAM), %" PRIu64 " rounds; disks: %" PRIu64 " bytes written, %" PRIu64
				 " zeroed", in->bytes, in->sections, ram_sections, rounds, dt.data_bytes,
				 dt.zero_bytes);
			return 0;
		} else {
			return error_set(e, EXIT_BADSTATE, "incoming migration: unexpected section \"%s\" "
					 "(section %" PRIu64 ")%s", name, in->sections - 1,
					 !strcmp(name, "end") ? ": the stream ended without the VM's state" : "");
		}
	}
}

/* The "door": while the stream of a migration is read, with the listening
 * socket kept (recover-timeout above 0), a thread refuses any other source
 * that connects at once (migrate_refuse_busy) rather than leave it in the
 * backlog, until "sync" (door_stop: its thread ends before the pause, off
 * the path to the VM's start).  One that connects after that is refused
 * once the stream ends: by post-copy's own thread, which takes over from
 * the switch on (migrate_postcopy.c), or, pre-copy, before the listening
 * socket closes (refuse_backlog). */
struct door {
	pthread_t thread;
	int lfd, stop[2];
	const char *uri;
	bool stopped;
};

static void *door_thread(void *arg)
{
	struct door *d = arg;

	seccomp_thread_enter(SECCOMP_POSTCOPY);     /* accept4 and the stream's calls */
	for (;;) {
		struct pollfd p[2] = { { .fd = d->lfd, .events = POLLIN },
				       { .fd = d->stop[0], .events = POLLIN } };

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents)
			migrate_refuse_busy(d->lfd, d->uri);
	}
	return NULL;
}

static bool door_open(struct door *d, int lfd, const char *uri)
{
	d->lfd = lfd;
	d->uri = uri;
	d->stopped = false;
	if (pipe2(d->stop, O_CLOEXEC))
		return false;
	if (pthread_create(&d->thread, NULL, door_thread, d)) {
		close(d->stop[0]);
		close(d->stop[1]);
		return false;
	}
	return true;
}

/* Tell the door's thread to end (once); door_close waits for it. */
static void door_stop(struct door *d)
{
	char c = 0;

	if (d->stopped)
		return;
	d->stopped = true;
	if (write(d->stop[1], &c, 1) != 1)
		log_warn("incoming migration: cannot stop the thread that refuses other sources");
}

static void door_close(struct door *d)
{
	door_stop(d);
	pthread_join(d->thread, NULL);
	close(d->stop[0]);
	close(d->stop[1]);
}

/* Sources that connected after the door's thread ended (at "sync"): each
 * refused as the door would have, before the listening socket `lfd`
 * (non-blocking) closes; at most 64, in case accept keeps failing. */
static void refuse_backlog(int lfd, const char *uri)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	for (int i = 0; i < 64 && poll(&p, 1, 0) > 0 && (p.revents & POLLIN); i++)
		migrate_refuse_busy(lfd, uri);
}

/* Accept the source on `lfd`: with a key, a connection without its proof
 * is refused and the wait goes on; with accept-timeout, until then.  0
 * with in->fd, or -1 with `e`. */
static int incoming_accept(int lfd, const char *uri, struct migrate_in *in, struct error *e)
{
	unsigned accept_s = migrate_incoming_accept_timeout();
	uint64_t deadline = now_ns() + (uint64_t)accept_s * 1000000000ULL;

	for (;;) {
		struct sockaddr_storage peer;
		socklen_t plen;
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int rc;

		if (accept_s) {
			uint64_t now = now_ns();

			rc = now >= deadline ? 0 : poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc < 0)
				return error_set(e, EXIT_HOST, "%s: poll: %s", uri, strerror(errno));
			if (!rc)
				return error_set(e, EXIT_HOST, "incoming migration: no source connected "
						 "to %s within %u s (accept-timeout)", uri, accept_s);
		}
		plen = sizeof(peer);
		memset(&peer, 0, sizeof(peer));
		in->fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (in->fd < 0 && errno == EINTR)
			continue;
		if (in->fd < 0)
			return error_set(e, EXIT_HOST, "%s: accept: %s", uri, strerror(errno));
		if (!migrate_auth_accept(in->fd, (struct sockaddr *)&peer, &in->tls, e))
			return 0;
		log_warn("%s; still waiting on %s", e->msg, uri);
		close(in->fd);
		in->fd = -1;
	}
}

/* "resume" of a VM held in doubt: only with its disks' write locks back
 * (given up when it was held).  Where the source ran on, it holds them,
 * and the resume is refused: the locks settle the doubt. */
static int indoubt_gate(struct vm *vm, struct error *e)
{
	char why[sizeof(e->msg)];

	if (migrate_disks_activate(vm, false, e)) {
		snprintf(why, sizeof(why), "%s", e->msg);
		return error_set(e, EXIT_HOST, "not resumed: this VM came in by a migration that "
				 "ended in doubt, and its disks' write locks are held elsewhere (the "
				 "source's VM ran on?): %.700s", why);
	}
	vm->resume_gate = NULL;
	log_info("incoming migration: the VM held in doubt is resumed by its operator");
	return 0;
}

/* "resume" of a post-copy VM held for want of the go-ahead: refused,
 * the source's recovery releases it (pc_release). */
static int pc_held_gate(struct vm *vm, struct error *e)
{
	return error_set(e, EXIT_HOST, "not resumed: this VM came in by a post-copy migration "
			 "whose go-ahead did not come; it waits, never run here, for the source to "
			 "reconnect (a source past the switch does: shoal migrate --resume), which "
			 "runs it; else it stops after recover-timeout");
}

/* The event loop: post-copy's source reconnected (migrate_postcopy_held),
 * so it had our acknowledgement and stopped its copy for good: the disks'
 * locks back, then the VM runs. */
static int pc_release(int fd, uint32_t events, void *opaque)
{
	struct vm *vm = opaque;
	struct error e = { 0 };
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	eventloop_del(vm->loop, fd);
	close(fd);
	if (migrate_disks_activate(vm, true, &e)) {
		vm->resume_gate = indoubt_gate;     /* the operator's, once they are free */
		log_error("incoming migration: post-copy: the source reconnected, but the disks' "
			  "write locks cannot be taken back: %s; the VM stays paused (resume it once "
			  "they are free)", e.msg);
		return 0;
	}
	vm->resume_gate = NULL;
	vm_resume(vm);
	return 0;
}

/* After our acknowledgement: the source's go-ahead (MIGRATE_RUN), which
 * says it stopped its copy for good.  Without it (the connection dropped
 * or 30 s passed) we cannot tell whether our acknowledgement reached it:
 * if not, its VM runs on there.  So ours must not run on its own: it is
 * held paused ("in doubt") for the operator.  Post-copy is held too, and
 * waits for the source as after a drop: a source past the switch comes
 * back for its recovery, which releases it.  0, or -1 with `e` when the
 * VM cannot be kept. */
static int await_run(struct vm *vm, struct migrate_in *in, struct migrate_pc_dst *pc,
		     bool can_wait, struct error *e)
{
	char word[8], why[200];
	int rc = migrate_io_recv(in->fd, in->tls, word, 8);

	if (rc > 0 && !memcmp(word, MIGRATE_RUN, 8)) {
		mtrace("dst.go_ahead");
		mtrace_arm(MTRACE_ALL);     /* the first KVM_RUN, console byte, ... */
		return 0;
	}
	snprintf(why, sizeof(why), "the source's go-ahead did not come after our acknowledgement "
		 "(%s)", rc > 0 ? "another word came" : rc == 0 || errno == EPIPE ||
		 errno == ECONNRESET ? "the connection closed" : errno == EPROTO ?
		 "the TLS connection was cut, without its close" : errno == EAGAIN ?
		 "nothing for 30 s" : strerror(errno));
	if (pc && !can_wait)
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: %s, and with "
				 "recover-timeout=0 nothing can "
				 "settle whether it stopped its copy: this one, which never ran, is "
				 "stopped", why);
	if (pc) {
		/* Post-copy waits for the source as after a drop, the VM held
		 * paused: only a source past the switch (it had our
		 * acknowledgement) comes back for its recovery, and that
		 * releases it (pc_release).  One that did not get it runs on,
		 * and this copy, never run, stops after recover-timeout. */
		int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

		if (efd < 0 || eventloop_add(vm->loop, efd, EPOLLIN, pc_release, vm) < 0) {
			if (efd >= 0)
				close(efd);
			return error_set(e, EXIT_HOST, "incoming migration: post-copy: %s, and the VM "
					 "cannot be held for the source's recovery: %s", why,
					 strerror(errno));
		}
		vm_pause_at_start(vm);
		vm->resume_gate = pc_held_gate;     /* migrate-status: incoming_postcopy_held */
		if (migrate_disks_inactivate(vm, e))
			log_warn("incoming migration: post-copy: held, the disks' write locks are "
				 "kept: %s", e->msg);
		log_warn("incoming migration: post-copy: %s: the VM is held paused, never run here, "
			 "its disks' write locks given up, until the source reconnects: a source past "
			 "the switch comes back for its recovery; one whose acknowledgement was lost "
			 "runs on, and this copy stops after recover-timeout", why);
		migrate_postcopy_held(pc, "the connection to the source dropped before its "
				      "go-ahead", efd);
		return 0;
	}
	vm_pause_at_start(vm);
	vm->resume_gate = indoubt_gate;     /* migrate-status: incoming_in_doubt */
	/* the disks' locks go back, for a source that runs on to take */
	if (migrate_disks_inactivate(vm, e))
		log_warn("incoming migration: in doubt, the disks' write locks are kept: %s", e->msg);
	log_warn("incoming migration: %s: whether it reached the source is not known here. If "
		 "it did not, the VM runs on at the source. "
		 "So it is held paused here, in doubt, its disks' write locks given up: once the "
		 "source's VMM is known to be gone (it exits 0 after a completed migration), resume "
		 "it here (control command \"resume\": it takes the locks back, and is refused "
		 "while another process holds them); else stop this one", why);
	return 0;
}

int migrate_incoming(struct vm *vm, const char *uri, struct error *e)
{
	struct migrate_addr a;
	struct migrate_in in = { .fd = -1 };
	struct migrate_pc_dst *pc = NULL;
	uint64_t *pc_bits = NULL, pc_missing = 0;
	uint8_t pc_id[MIGRATE_PC_ID_LEN] = { 0 };
	unsigned recover_s = migrate_incoming_recover_timeout();
	struct door door;
	bool door_on = false;
	int lfd, rc;

	if (migrate_parse_addr(uri, &a, e))
		return -1;
	lfd = migrate_addr_listen(&a, uri, e);
	if (lfd < 0)
		return -1;
	log_info("incoming migration: waiting on %s%s", uri,
		 migrate_incoming_tls() ? " for a source that knows the key, over TLS" :
		 migrate_incoming_keyed() ? " for a source that knows the key" : "");
	if (incoming_accept(lfd, uri, &in, e)) {
		close(lfd);
		if (!a.tcp)
			unlink(a.path);
		return -1;
	}
	/* The listening socket stays until the stream is read: a post-copy
	 * keeps it for the source to reconnect on if the connection drops,
	 * and meanwhile another source is refused at once (the door).  With
	 * recover-timeout=0 it goes now (a second source finds nobody
	 * listening), and a drop after the switch loses the VM. */
	if (!recover_s) {
		close(lfd);
		lfd = -1;
		if (!a.tcp)
			unlink(a.path);
	} else {
		/* its accepts follow a poll: a peer gone meanwhile must not block them */
		fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
		door_on = door_open(&door, lfd, uri);
		if (!door_on)
			log_warn("incoming migration: cannot start the thread that refuses other "
				 "sources: they wait in the backlog");
	}
	migrate_set_timeouts(in.fd);
	rc = migrate_read_magic(&in, e);
	if (!rc)
		rc = incoming_read(vm, &in, door_on ? &door : NULL, &pc_bits, &pc_missing, pc_id, e);
	if (!rc && pc_bits) {    /* post-copy: the missing pages fault from here */
		rc = migrate_postcopy_arm(&vm->mem, in.tls != NULL,
					  vm->cfg.zero_on && !vm->cfg.zero_off, pc_bits, pc_missing,
					  pc_id, &pc, e);
		pc_bits = NULL;
	}
	free(pc_bits);
	if (!rc && migrate_io_send(in.fd, in.tls, "SHOALACK", 8))
		rc = error_set(e, EXIT_HOST, "incoming migration: the source went away before our "
			       "acknowledgement (it keeps the VM)");
	if (!rc) {
		mtrace("dst.ack_sent");
		rc = await_run(vm, &in, pc, lfd >= 0, e);
	}
	if (door_on)            /* post-copy's thread refuses them from here on */
		door_close(&door);
	mtrace("dst.door_closed");
	if (!rc && pc && !migrate_postcopy_start(pc, &in, lfd, uri, a.tcp ? NULL : a.path,
						 recover_s, e)) {
		pc = NULL;               /* its thread has the connection now */
		lfd = -1;                /* and the listening socket */
	} else if (!rc && pc) {
		rc = -1;
	}
	if (lfd >= 0) {
		if (door_on)
			refuse_backlog(lfd, uri);
		close(lfd);
		if (!a.tcp)
			unlink(a.path);
	}
	migrate_postcopy_free(pc);
	if (rc)
		migrate_io_send_nak(in.fd, in.tls, e->msg);
	if (in.fd >= 0)
		migrate_io_close(in.fd, in.tls);     /* TLS: close_notify, then the fd */
	in.tls = NULL;
	migrate_in_free(&in);
	mtrace("dst.incoming_done");
	return rc;
}

/* ---- the source ---- */

/* Where the downtime goes, piece by piece (migrate-status's
 * "downtime_phases_ms"): parking the vCPUs and holding the event loop, the
 * devices' quiesce, the last dirty-log read, the last pages (or post-copy's
 * list), the disks' last blocks, the device and vCPU state (saved and
 * sent), and "end" until the destination's answer (its restore, its
 * acknowledgement, and the disks' locks handed over). */
enum { PH_PAUSE, PH_QUIESCE, PH_SYNC, PH_PAGES, PH_DISKS, PH_STATE, PH_ANSWER, PH_N };
static const char *const ph_names[PH_N] = { "pause", "quiesce", "dirty_sync", "pages", "disks",
					     "state", "answer" };

struct migrate_stats {
	uint64_t total_ns, downtime_ns, bytes, pages_sent, zero_pages;
	uint64_t ram_raw, ram_data, zpages; /* data pages' bytes: as pages, as sent; compressed */
	uint64_t ph_ns[PH_N];             /* the downtime's pieces, when done */
	uint64_t round, dirty_pages, remaining_ns;
	uint64_t dirty_rate;              /* bytes/s the guest dirtied in the last round */
	int throttle_pct, throttle_max_pct; /* --auto-converge: now, at most */
	bool postcopy;                    /* switched to post-copy: the destination
					   * acknowledged the switch (before, a
					   * failure leaves the VM running here) */
	uint64_t pc_pages, pc_demand, pc_pushed; /* missing at the switch; sent asked, pushed */
	struct migrate_disk_stats disk;   /* --with-disks */
};

/* A VM's migration (one at a time).  Under `lock`: everything but the
 * thread's own working state; `cancel` is also read without it. */
struct mig_ctl {
	struct vm *vm;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, joined;
	const char *state;           /* none, active, completing, postcopy, postcopy-paused,
				      * done, failed, cancelled */
	char uri[512], error[1024];
	uint64_t downtime_ms, bandwidth;
	bool with_disks;             /* mirror the writable disks */
	bool auto_converge;          /* throttle the vCPUs when rounds do not converge */
	uint32_t postcopy_after;     /* switch to post-copy after this many rounds, 0 never */
	int compress_level;          /* --compress zstd:LEVEL, 0 off */
	int tick_fd;                 /* timerfd on the event loop: kicks throttled vCPUs */
	atomic_bool cancel;
	bool past_cancel;            /* "end" sent: a cancel comes too late */
	bool inactive;               /* the disks' locks given up (before "end") */
	int fd;                      /* the connection, -1 */
	int given_fd;                /* the socket the request brought, -1: connect to uri */
	bool reported;               /* "done" was read by the origin's status request */
	uint64_t origin;             /* the control connection that asked (0: none) */
	struct migrate_stats st;
	/* the event loop, held during the stop phase */
	int hold_fd;
	bool hold, held;
};

/* Wait on c->cond (c->lock held) for at most 50 ms. */
static void ctl_wait_50ms(struct mig_ctl *c)
{
	struct timespec ts = timespec_after_ms(CLOCK_REALTIME, 50);

	pthread_cond_timedwait(&c->cond, &c->lock, &ts);
}

/* ---- auto-converge ---- */

/* The vCPUs see the throttle only when they leave KVM_RUN: kick them each
 * slice while it is on (the event loop runs this). */
static int on_tick(int fd, uint32_t events, void *opaque)
{
	struct mig_ctl *c = opaque;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0)
		return 0;
	if (vcpu_throttle_get() > 0)
		for (int i = 0; i < c->vm->ncpus; i++)
			vcpu_kick(&c->vm->vcpus[i]);
	return 0;
}

static void throttle_set(struct mig_ctl *c, int pct)
{
	long ns = pct ? VCPU_THROTTLE_SLICE_MS * 1000000L : 0;
	struct itimerspec its = { .it_interval = { 0, ns }, .it_value = { 0, ns } };

	vcpu_throttle_set(pct);
	if (c->tick_fd >= 0)
		timerfd_settime(c->tick_fd, 0, &its, NULL);
	pthread_mutex_lock(&c->lock);
	c->st.throttle_pct = vcpu_throttle_get();
	if (c->st.throttle_pct > c->st.throttle_max_pct)
		c->st.throttle_max_pct = c->st.throttle_pct;
	pthread_mutex_unlock(&c->lock);
}

/* After a round (QEMU's cpu-throttle): the guest dirtied more than half
 * of what the round sent, twice, so it outruns the stream: throttle it,
 * 20 % first, then 10 points more each time up to 99 %. */
static void auto_converge(struct mig_ctl *c, uint64_t dirty_bytes, uint64_t sent_bytes,
			  int *high)
{
	int pct = vcpu_throttle_get();

	if (dirty_bytes <= sent_bytes / 2 || ++*high < 2)
		return;
	*high = 0;
	pct = pct ? pct + MIGRATE_THROTTLE_STEP : MIGRATE_THROTTLE_FIRST;
	if (pct > VCPU_THROTTLE_MAX)
		pct = VCPU_THROTTLE_MAX;
	if (pct == vcpu_throttle_get())
		return;
	throttle_set(c, pct);
	log_info("migration to %s: the guest dirties %" PRIu64 " KiB a round against %" PRIu64
		 " KiB sent: its vCPUs are throttled to %d %%", c->uri, dirty_bytes >> 10,
		 sent_bytes >> 10, pct);
}

/* The thread's working state. */
struct mig_src {
	struct mig_ctl *c;
	struct vm *vm;
	int fd;
	struct state_writer w;
	uint64_t *bits, words;
	uint64_t t0, bytes;
	struct migrate_disks *md;    /* --with-disks, else NULL */
	struct migrate_z *z;         /* --compress, else NULL */
	uint64_t raw, zdata, zpages; /* data pages: their bytes, as sent, compressed pages */
	bool postcopy;               /* the stop phase switches to post-copy */
	uint8_t pc_id[MIGRATE_PC_ID_LEN]; /* post-copy's identity, for a recovery */
	uint64_t ph_ns[PH_N];        /* the stop phase's pieces (ph_names) */
	uint64_t ph_t;               /* when the current piece began */
};

/* End the stop phase's current piece `ph` and begin the next. */
static void ph_mark(struct mig_src *s, int ph)
{
	uint64_t t = now_ns();

	s->ph_ns[ph] = t - s->ph_t;
	s->ph_t = t;
}

static int src_fail(struct mig_src *s, struct error *e, const char *what, int err)
{
	return error_set(e, EXIT_HOST, "migration to %s: %s: %s", s->c->uri, what,
			 err == EPIPE || err == ECONNRESET ? "the destination closed the connection" :
			 err == EAGAIN ? "the destination is not reading (timed out)" : strerror(err));
}

static bool cancelled(struct mig_src *s, struct error *e)
{
	if (!atomic_load(&s->c->cancel))
		return false;
	error_set(e, EXIT_HOST, "migration to %s: cancelled", s->c->uri);
	return true;
}

/* Keep to --bandwidth: sleep until the bytes sent are due. */
static void throttle(struct mig_src *s)
{
	uint64_t bw = s->c->bandwidth, due, el;

	if (!bw)
		return;
	due = (uint64_t)((double)s->bytes / (double)bw * 1e9);
	el = now_ns() - s->t0;
	if (due > el) {
		uint64_t d = due - el;
		struct timespec ts = { .tv_sec = (time_t)(d / 1000000000ULL),
				       .tv_nsec = (long)(d % 1000000000ULL) };

		nanosleep(&ts, NULL);
	}
}

/* Send the section in s->w (begun at 0 with `mark`) and empty it. */
static int src_flush(struct mig_src *s, size_t mark, struct error *e)
{
	int rc;

	migrate_section_end(&s->w, 0, mark);
	if (s->w.error)
		return error_set(e, EXIT_HOST, "migration: out of memory");
	rc = migrate_send_all(s->fd, s->w.data, s->w.len);
	if (rc)
		return src_fail(s, e, "sending", -rc);
	s->bytes += s->w.len;
	pthread_mutex_lock(&s->c->lock);
	s->c->st.bytes = s->bytes;
	pthread_mutex_unlock(&s->c->lock);
	s->w.len = 0;
	throttle(s);
	return cancelled(s, e) ? -1 : 0;
}

/* migrate_disk.c's sections go out here, with its figures. */
static int disk_flush(void *opaque, size_t mark, struct error *e)
{
	struct mig_src *s = opaque;
	int rc = src_flush(s, mark, e);

	pthread_mutex_lock(&s->c->lock);
	migrate_disks_get_stats(s->md, &s->c->st.disk);
	pthread_mutex_unlock(&s->c->lock);
	return rc;
}

static int src_simple(struct mig_src *s, const char *name, const void *p, size_t n,
		      struct error *e)
{
	size_t mark = migrate_section_begin(&s->w, name);

	state_put_bytes(&s->w, p, n);
	return src_flush(s, mark, e);
}

/* A "ram" section being filled; `z`: its data pages may be compressed
 * (pre-copy with --compress; post-copy's pages never are). */
struct ram_out {
	size_t mark;
	size_t data_bytes;
	bool open, z;
};

static int ram_record(struct mig_src *s, struct ram_out *o, uint64_t off, uint32_t pages,
		      int kind, struct error *e)
{
	const void *frame = NULL;
	size_t flen = 0, body;

	if (kind == MIGRATE_RAM_DATA && o->z) {     /* frames of a chunk each */
		while (pages > MIGRATE_Z_CHUNK_PAGES) {
			if (ram_record(s, o, off, MIGRATE_Z_CHUNK_PAGES, kind, e))
				return -1;
			off += (uint64_t)MIGRATE_Z_CHUNK_PAGES * PAGE;
			pages -= MIGRATE_Z_CHUNK_PAGES;
		}
		flen = migrate_z_compress(s->z, s->vm->mem.host + off, (size_t)pages * PAGE, &frame);
		if (flen)
			kind = MIGRATE_RAM_ZSTD;   /* else raw: it did not get smaller */
	}
	body = kind == MIGRATE_RAM_ZSTD ? 4 + flen : kind == MIGRATE_RAM_DATA ?
		(size_t)pages * PAGE : 0;
	if (o->open && body && o->data_bytes + body > SECTION_PAGES * PAGE) {
		if (src_flush(s, o->mark, e))
			return -1;
		o->open = false;
	}
	if (!o->open) {
		o->mark = migrate_section_begin(&s->w, "ram");
		o->data_bytes = 0;
		o->open = true;
	}
	state_put_u64(&s->w, off | (uint64_t)kind);
	state_put_u32(&s->w, pages);
	if (kind == MIGRATE_RAM_ZSTD) {
		state_put_u32(&s->w, (uint32_t)flen);
		state_put_bytes(&s->w, frame, flen);
		s->zpages += pages;
	} else if (kind == MIGRATE_RAM_DATA) {
		state_put_bytes(&s->w, s->vm->mem.host + off, (size_t)pages * PAGE);
	}
	if (kind != MIGRATE_RAM_ZERO) {
		s->raw += (uint64_t)pages * PAGE;
		s->zdata += body;
	}
	o->data_bytes += body;
	return 0;
}

static int ram_close(struct mig_src *s, struct ram_out *o, struct error *e)
{
	if (!o->open)
		return 0;
	o->open = false;
	return src_flush(s, o->mark, e);
}

/* Pages [first, first+n) of the memfd: runs of all-zero and data pages. */
static int send_pages(struct mig_src *s, struct ram_out *o, uint64_t first, uint64_t n,
		      struct error *e)
{
	uint64_t p = first, end = first + n, zeros = 0, sent = 0;

	while (p < end) {
		bool zero = guest_mem_page_zero(s->vm->mem.host + p * PAGE);
		uint64_t q = p + 1;

		while (q < end && q - p < SECTION_PAGES &&
		       guest_mem_page_zero(s->vm->mem.host + q * PAGE) == zero)
			q++;
		if (ram_record(s, o, p * PAGE, (uint32_t)(q - p),
			       zero ? MIGRATE_RAM_ZERO : MIGRATE_RAM_DATA, e))
			return -1;
		if (zero)
			zeros += q - p;
		sent += q - p;
		p = q;
	}
	pthread_mutex_lock(&s->c->lock);
	s->c->st.pages_sent += sent;
	s->c->st.zero_pages += zeros;
	s->c->st.ram_raw = s->raw;
	s->c->st.ram_data = s->zdata;
	s->c->st.zpages = s->zpages;
	pthread_mutex_unlock(&s->c->lock);
	return 0;
}

/* Round 0: all of RAM; the memfd's holes as zero records, unread. */
static int send_all_ram(struct mig_src *s, struct error *e)
{
	struct ram_out o = { .z = s->z != NULL };
	uint64_t size = s->vm->mem.size, off = 0;
	int fd = s->vm->mem.fd;

	while (off < size) {
		off_t data = fd >= 0 ? lseek(fd, (off_t)off, SEEK_DATA) : (off_t)off;
		off_t hole;

		if (data < 0 || (uint64_t)data > size)
			data = (off_t)size;           /* ENXIO: holes to the end */
		data &= ~(off_t)(PAGE - 1);
		if ((uint64_t)data > off) {
			uint64_t pages = ((uint64_t)data - off) / PAGE;

			pthread_mutex_lock(&s->c->lock);
			s->c->st.zero_pages += pages;
			s->c->st.pages_sent += pages;
			pthread_mutex_unlock(&s->c->lock);
			while (pages) {
				uint32_t n = pages > (1u << 30) ? 1u << 30 : (uint32_t)pages;

				if (ram_record(s, &o, off, n, MIGRATE_RAM_ZERO, e))
					return -1;
				off += (uint64_t)n * PAGE;
				pages -= n;
			}
			continue;
		}
		hole = fd >= 0 ? lseek(fd, (off_t)off, SEEK_HOLE) : (off_t)size;
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		hole = (hole + PAGE - 1) & ~(off_t)(PAGE - 1);
		if ((uint64_t)hole <= off)
			hole = (off_t)(off + PAGE);
		if (send_pages(s, &o, off / PAGE, ((uint64_t)hole - off) / PAGE, e))
			return -1;
		off = (uint64_t)hole;
	}
	return ram_close(s, &o, e);
}

static uint64_t count_bits(const uint64_t *bits, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(bits[i]);
	return n;
}

/* The pages set in s->bits, which it clears. */
static int send_dirty(struct mig_src *s, struct error *e)
{
	struct ram_out o = { .z = s->z != NULL };
	uint64_t pages = s->vm->mem.size / PAGE;

	for (uint64_t p = 0; p < pages; ) {
		uint64_t q;

		if (!s->bits[p / 64]) {
			p = (p / 64 + 1) * 64;
			continue;
		}
		if (!(s->bits[p / 64] >> (p % 64) & 1)) {
			p++;
			continue;
		}
		for (q = p + 1; q < pages && q - p < SECTION_PAGES && (s->bits[q / 64] >> (q % 64) & 1);
		     q++)
			;
		if (send_pages(s, &o, p, q - p, e))
			return -1;
		p = q;
	}
	memset(s->bits, 0, s->words * 8);
	return ram_close(s, &o, e);
}

static void ctl_set(struct mig_ctl *c, const char *state)
{
	pthread_mutex_lock(&c->lock);
	c->state = state;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* Hold the event loop thread in a callback of ours (it feeds the
 * devices), or let it go.  Gives up when the VM stops. */
static int hold_loop(struct mig_ctl *c, bool on)
{
	uint64_t one = 1;

	pthread_mutex_lock(&c->lock);
	c->hold = on;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (!on)
		return 0;
	if (write(c->hold_fd, &one, sizeof(one)) < 0)
		return -1;
	pthread_mutex_lock(&c->lock);
	while (!c->held && !atomic_load(&c->vm->stopping))
		ctl_wait_50ms(c);
	pthread_mutex_unlock(&c->lock);
	return c->held ? 0 : -1;
}

static int on_hold(int fd, uint32_t events, void *opaque)
{
	struct mig_ctl *c = opaque;
	uint64_t v;

	(void)events;
	if (read(fd, &v, sizeof(v)) < 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (c->hold) {
		c->held = true;
		pthread_cond_broadcast(&c->cond);
		while (c->hold)
			pthread_cond_wait(&c->cond, &c->lock);
		c->held = false;
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* The destination's refusal after its word `word`: -1 with its reason. */
static int read_nak(struct mig_src *s, const char word[8], struct error *e)
{
	uint32_t n;
	char msg[900];

	if (memcmp(word, "SHOALNAK", 8) || migrate_recv_all(s->fd, &n, 4) <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: the destination answered nonsense",
				 s->c->uri);
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	if (migrate_recv_all(s->fd, msg, n) <= 0)
		n = 0;
	msg[n] = 0;
	return error_set(e, EXIT_HOST, "migration to %s: the destination refused the stream: %s",
			 s->c->uri, n ? msg : "(no reason given)");
}

/* The destination's answer after "end": 0 (ACK) or -1 with its reason. */
static int read_answer(struct mig_src *s, struct error *e)
{
	char word[8];
	int rc = migrate_recv_all(s->fd, word, 8);

	if (rc <= 0)
		return src_fail(s, e, "waiting for the acknowledgement", rc ? errno : EPIPE);
	if (!memcmp(word, "SHOALACK", 8))
		return 0;
	return read_nak(s, word, e);
}

/* "sync", and wait (the VM running) until the destination has applied
 * everything sent so far: SHOALRDY, or its refusal. */
static int sync_dest(struct mig_src *s, struct error *e)
{
	char word[8];
	int rc;

	if (src_simple(s, "sync", NULL, 0, e))
		return -1;
	rc = migrate_recv_all(s->fd, word, 8);
	if (rc <= 0)
		return src_fail(s, e, "waiting for the destination to apply the pages",
				rc ? errno : EPIPE);
	if (memcmp(word, MIGRATE_READY, 8))
		return read_nak(s, word, e);
	return cancelled(s, e) ? -1 : 0;
}

/* The destination's answer to "disks": which it has the base of. */
static int read_disk_answer(struct mig_src *s, struct error *e)
{
	char word[8];
	uint8_t modes[VM_MAX_DISKS];
	uint32_t n;
	int rc = migrate_recv_all(s->fd, word, 8);

	if (rc <= 0)
		return src_fail(s, e, "waiting for the destination's disks", rc ? errno : EPIPE);
	if (memcmp(word, MIGRATE_DISK_ANSWER, 8))
		return read_nak(s, word, e);
	if (migrate_recv_all(s->fd, &n, 4) <= 0 || n > VM_MAX_DISKS || (n && migrate_recv_all(s->fd, modes, n) <= 0))
		return error_set(e, EXIT_HOST, "migration to %s: the destination's answer about the "
				 "disks is cut short or too long", s->c->uri);
	return migrate_disks_set_modes(s->md, modes, n, e);
}

/* After a send failed: the destination may have said why (a NAK). */
static void better_reason(struct mig_src *s, struct error *e)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN };
	struct error e2 = { 0 };

	if (poll(&p, 1, 200) == 1 && read_answer(s, &e2) && strstr(e2.msg, "refused"))
		*e = e2;
}

static int hello(struct mig_src *s, struct error *e)
{
	char *cfg = vm_config_to_json_text(&s->vm->cfg);
	size_t mark = migrate_section_begin(&s->w, "hello");
	uint32_t n = cfg ? (uint32_t)strlen(cfg) : 0;

	state_put_u64(&s->w, s->vm->mem.size);
	state_put_u32(&s->w, (uint32_t)s->vm->ncpus);
	state_put_u32(&s->w, PAGE);
	/* vCPU 0's CPUID, read with the vCPUs parked for it: KVM_GET_CPUID2
	 * waits for the vCPU's mutex, which KVM_RUN holds, so read while the
	 * guest runs it waited for its next exit to user space (a guest busy
	 * in memory made none for the 90 s of bench/migrate.sh's dirtying). */
	bool was_paused = vm_is_paused(s->vm);

	if (!was_paused)
		vm_pause(s->vm);
	json_t *cpu = snapshot_cpu_json(s->vm, e);
	if (!was_paused)
		vm_resume(s->vm);
	char *ct = cpu ? json_dumps(cpu, JSON_COMPACT) : NULL;
	uint32_t m = ct ? (uint32_t)strlen(ct) : 0;

	json_decref(cpu);
	state_put_u32(&s->w, n);
	state_put_bytes(&s->w, cfg ? cfg : "", n);
	state_put_u32(&s->w, m);
	state_put_bytes(&s->w, ct ? ct : "", m);
	/* the stream's options (an older destination ignores them) */
	const char *opt = s->z ? "{\"ram_compress\":\"" MIGRATE_Z_NAME "\"}" : "{}";

	state_put_u32(&s->w, (uint32_t)strlen(opt));
	state_put_bytes(&s->w, opt, strlen(opt));
	free(cfg);
	free(ct);
	if (!ct)
		return error_set(e, EXIT_HOST, "migration: cannot describe the vCPU: %s",
				 e->msg[0] ? e->msg : "out of memory");
	return src_flush(s, mark, e);
}

static int send_round(struct mig_src *s, uint32_t round, uint64_t dirty, struct error *e)
{
	size_t mark = migrate_section_begin(&s->w, "round");

	state_put_u32(&s->w, round);
	state_put_u64(&s->w, dirty);
	return src_flush(s, mark, e);
}

/* Post-copy: the pages dirty now go after the switch; say which. */
static int send_postcopy_list(struct mig_src *s, struct error *e)
{
	size_t mark = migrate_section_begin(&s->w, "postcopy");
	uint64_t n = count_bits(s->bits, s->words), seed[4] = { now_ns(), (uint64_t)getpid(),
							      (uint64_t)(uintptr_t)s, s->bytes };
	XXH128_hash_t id = XXH3_128bits(seed, sizeof(seed));

	/* unique, not secret (the key, if any, authenticates a recovery) */
	memcpy(s->pc_id, &id, sizeof(id));
	migrate_postcopy_put_list(&s->w, s->bits, s->vm->mem.size / PAGE, s->pc_id);
	pthread_mutex_lock(&s->c->lock);
	s->c->st.pc_pages = n;          /* `postcopy` waits for the switch's answer */
	pthread_mutex_unlock(&s->c->lock);
	log_info("migration to %s: post-copy after %" PRIu64 " rounds: %" PRIu64 " pages go after "
		 "the switch", s->c->uri, s->c->st.round + 1, n);
	return src_flush(s, mark, e);
}

static int pc_send(void *opaque, uint64_t first, uint64_t n, bool demand, struct error *e)
{
	struct mig_src *s = opaque;
	struct ram_out o = { 0 };

	if (send_pages(s, &o, first, n, e) || ram_close(s, &o, e))
		return -1;
	pthread_mutex_lock(&s->c->lock);
	if (demand)
		s->c->st.pc_demand += n;
	else
		s->c->st.pc_pushed += n;
	pthread_mutex_unlock(&s->c->lock);
	return 0;
}

static int pc_end(void *opaque, struct error *e)
{
	return src_simple(opaque, "end", NULL, 0, e);
}

/* Post-copy's connection dropped (`why`): paused ("postcopy-paused"),
 * wait for `shoal migrate --resume` to hand a new one over (migrate_cmd),
 * and open the recovery on it.  The new fd, or -1 when the VMM stops. */
static int pc_wait_resume(void *opaque, const char *why, struct error *e)
{
	struct mig_src *s = opaque;
	struct mig_ctl *c = s->c;
	size_t mark;
	int fd;

	log_error("%s", why);
	pthread_mutex_lock(&c->lock);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = s->fd = -1;
	snprintf(c->error, sizeof(c->error), "%s", why);
	c->state = "postcopy-paused";
	pthread_cond_broadcast(&c->cond);
	while (c->given_fd < 0 && !atomic_load(&c->vm->stopping))
		ctl_wait_50ms(c);
	fd = c->given_fd;
	c->given_fd = -1;
	c->fd = fd;
	pthread_mutex_unlock(&c->lock);
	if (fd < 0)
		return error_set(e, EXIT_HOST, "%s; the VMM stops with the post-copy paused: the VM "
				 "is lost", why);
	s->fd = fd;
	migrate_set_timeouts(fd);
	log_info("migration to %s: post-copy: resuming over a new connection", c->uri);
	s->w.len = 0;
	if (migrate_send_all(fd, MIGRATE_MAGIC, 8))
		return pc_wait_resume(s, "migration: post-copy recovery: the destination closed the "
				      "new connection at once", e);
	mark = migrate_section_begin(&s->w, "recover");
	migrate_postcopy_put_recover(&s->w, s->vm->mem.size, s->pc_id);
	if (src_flush(s, mark, e)) {
		char w[sizeof(e->msg)];

		snprintf(w, sizeof(w), "%s", e->msg);
		return pc_wait_resume(s, w, e);
	}
	return fd;
}

/* After the switch's acknowledgement: the destination runs the VM. */
static int postcopy_serve(struct mig_src *s, struct error *e)
{
	struct migrate_pc_src ps = { .fd = s->fd, .uri = s->c->uri, .bits = s->bits,
				     .pages = s->vm->mem.size / PAGE, .send = pc_send,
				     .send_end = pc_end, .wait_resume = pc_wait_resume,
				     .opaque = s };

	return migrate_postcopy_serve(&ps, e);
}

/* The stop phase, with the VM paused and quiet: the last pages, the state,
 * "end", and the answer.  0 means the destination has the VM. */
static int stop_phase(struct mig_src *s, struct error *e)
{
	struct state_writer st;
	int rc;

	if (vm_dirty_sync(s->vm, s->bits, e))
		return -1;
	ph_mark(s, PH_SYNC);
	mtrace("src.dirty_synced");
	if (send_round(s, (uint32_t)s->c->st.round + 1, count_bits(s->bits, s->words), e) ||
	    (s->postcopy ? send_postcopy_list(s, e) : send_dirty(s, e)))
		return -1;
	ph_mark(s, PH_PAGES);
	mtrace("src.pages_sent");
	if (s->md) {             /* quiesced: every write has completed and marked */
		struct migrate_disk_out o = { .w = &s->w, .flush = disk_flush, .opaque = s };

		migrate_disks_sync(s->md);
		if (migrate_disks_send_dirty(s->md, &o, e))
			return -1;
	}
	ph_mark(s, PH_DISKS);
	state_writer_init(&st);
	rc = snapshot_state_save(s->vm, &st, e);
	if (!rc) {           /* when the clocks were read, for the destination */
		struct timespec ts;
		size_t mark = migrate_section_begin(&s->w, "clock");

		clock_gettime(CLOCK_REALTIME, &ts);
		state_put_u64(&s->w, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
		rc = src_flush(s, mark, e);
	}
	if (!rc)
		rc = src_simple(s, "state", st.data, st.len, e);
	state_writer_free(&st);
	if (rc)
		return -1;
	ph_mark(s, PH_STATE);
	mtrace("src.state_sent");
	pthread_mutex_lock(&s->c->lock);
	if (atomic_load(&s->c->cancel)) {
		pthread_mutex_unlock(&s->c->lock);
		return error_set(e, EXIT_HOST, "migration to %s: cancelled", s->c->uri);
	}
	s->c->past_cancel = true;    /* from here the answer decides */
	s->c->st.round++;            /* the stop phase is the last round */
	pthread_mutex_unlock(&s->c->lock);
	/* Shared storage: flush and give up the disks' locks, so that the
	 * destination takes them before it answers (QEMU's inactivate). */
	if (migrate_disks_inactivate(s->vm, e))
		return -1;
	s->c->inactive = true;
	if (src_simple(s, "end", NULL, 0, e) && !strstr(e->msg, "cancelled"))
		return -1;
	mtrace("src.end_sent");
	rc = read_answer(s, e);
	ph_mark(s, PH_ANSWER);
	if (!rc)
		mtrace("src.ack");
	/* Past the point of no return: the go-ahead.  Lost, the destination
	 * holds the VM paused, in doubt (await_run); ours stops all the same. */
	if (!rc && migrate_send_all(s->fd, MIGRATE_RUN, 8))
		log_warn("migration to %s: the destination acknowledged, but our go-ahead could not "
			 "be sent (%s): the VM waits paused there, in doubt, for its operator to resume "
			 "it (this copy stops)", s->c->uri, strerror(errno));
	else if (!rc) {
		mtrace("src.go_ahead_sent");
		mtrace_arm(MTRACE_DESTROY | MTRACE_DESTROYED);   /* our VM's teardown */
	}
	return rc;
}

static int precopy(struct mig_src *s, struct error *e)
{
	struct mig_ctl *c = s->c;
	uint64_t limit_ns = c->downtime_ms * 1000000ULL;
	struct migrate_disk_out o = { .w = &s->w, .flush = disk_flush, .opaque = s };
	int high = 0;                /* rounds in a row that did not converge */

	if (migrate_send_all(s->fd, MIGRATE_MAGIC, 8))
		return src_fail(s, e, "sending", errno);
	s->bytes = 8;
	if (hello(s, e))
		return -1;
	if (kvm_state_prepare(s->vm, e))   /* what the save asks KVM, asked now */
		return -1;
	if (c->with_disks &&
	    (migrate_disks_start(s->vm, &s->md, e) || migrate_disks_send_list(s->md, &o, e) ||
	     read_disk_answer(s, e)))
		return -1;
	if (vm_dirty_start(s->vm, e))
		return -1;
	for (uint32_t round = 0;; round++) {
		uint64_t t = now_ns(), b = s->bytes, dirty, rate, remaining;

		pthread_mutex_lock(&c->lock);
		c->st.round = round;
		pthread_mutex_unlock(&c->lock);
		if (round == 0) {
			if (send_round(s, 0, s->vm->mem.size / PAGE, e) || send_all_ram(s, e) ||
			    (s->md && migrate_disks_send_all(s->md, &o, e)))
				return -1;
		} else {
			if (send_round(s, round, count_bits(s->bits, s->words), e) || send_dirty(s, e) ||
			    (s->md && migrate_disks_send_dirty(s->md, &o, e)))
				return -1;
		}
		/* bytes per second of this round, at least 1 MB/s for the estimate */
		rate = (uint64_t)((double)(s->bytes - b) * 1e9 / (double)(now_ns() - t + 1));
		if (rate < 1000000)
			rate = 1000000;
		if (c->bandwidth && rate > c->bandwidth)
			rate = c->bandwidth;
		if (vm_dirty_sync(s->vm, s->bits, e))
			return -1;
		dirty = count_bits(s->bits, s->words);
		/* a page costs what pages have cost so far (compressed or not) */
		remaining = (uint64_t)(((double)dirty * (s->raw ? (double)PAGE * (double)s->zdata /
							     (double)s->raw : PAGE) + 12.0 * dirty +
					(double)migrate_disks_sync(s->md) * (MIGRATE_DISK_BLOCK + 17)) *
				       1e9 / (double)rate);
		pthread_mutex_lock(&c->lock);
		migrate_disks_get_stats(s->md, &c->st.disk);
		c->st.dirty_pages = dirty;
		c->st.dirty_rate = (uint64_t)((double)dirty * PAGE * 1e9 / (double)(now_ns() - t + 1));
		c->st.remaining_ns = remaining;
		pthread_mutex_unlock(&c->lock);
		if (remaining <= limit_ns)
			break;
		if (c->postcopy_after && round + 1 >= c->postcopy_after) {
			s->postcopy = true;  /* not converged: the rest after the switch */
			break;
		}
		if (round + 1 >= MIGRATE_MAX_ROUNDS)
			break;
		if (c->auto_converge && round > 0)
			auto_converge(c, dirty * PAGE + c->st.disk.dirty_blocks * MIGRATE_DISK_BLOCK,
				      s->bytes - b, &high);
	}
	mtrace("src.converged");        /* the last round: "sync", then the pause */
	return sync_dest(s, e);
}

/* Record how the migration ended (`tp`: the downtime, when done). */
static void ctl_ended(struct mig_ctl *c, const struct mig_src *s, bool done, uint64_t tp,
		      const char *msg)
{
	pthread_mutex_lock(&c->lock);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->st.total_ns = now_ns() - s->t0;
	if (done) {
		c->st.downtime_ns = tp;
		memcpy(c->st.ph_ns, s->ph_ns, sizeof(c->st.ph_ns));
	}
	c->st.bytes = s->bytes;
	if (!done)
		snprintf(c->error, sizeof(c->error), "%s", msg);
	c->state = done ? "done" : atomic_load(&c->cancel) ? "cancelled" : "failed";
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void *migrate_thread(void *arg)
{
	struct mig_ctl *c = arg;
	struct vm *vm = c->vm;
	struct mig_src s = { .c = c, .vm = vm, .fd = -1 };
	struct error e = { 0 };
	bool paused = false, quiesced = false, tracking = false, done = false, lost = false;
	uint64_t tp = 0;
	int rc;

	s.t0 = now_ns();
	s.words = vm_dirty_words(vm);
	state_writer_init(&s.w);
	s.bits = calloc(s.words ? s.words : 1, 8);
	rc = s.bits ? 0 : error_set(&e, EXIT_HOST, "migration: out of memory");
	if (!rc && c->compress_level) {
		s.z = migrate_z_new(c->compress_level, &e);
		rc = s.z ? 0 : -1;
	}
	seccomp_thread_enter(SECCOMP_MIGRATE);
	if (c->given_fd >= 0) {
		s.fd = c->given_fd;      /* handed over with the request: ours now */
		c->given_fd = -1;
		migrate_set_timeouts(s.fd);
	}
	if (!rc && s.fd >= 0) {
		pthread_mutex_lock(&c->lock);
		c->fd = s.fd;
		pthread_mutex_unlock(&c->lock);
		rc = cancelled(&s, &e) ? -1 : precopy(&s, &e);
		tracking = true;
		if (!rc) {
			ctl_set(c, "completing");
			mtrace("src.pause");
			tp = s.ph_t = now_ns();
			vm_pause(vm);
			paused = true;
			mtrace("src.paused");
			if (hold_loop(c, true))
				rc = error_set(&e, EXIT_HOST, "migration: the VM is stopping");
			else {
				ph_mark(&s, PH_PAUSE);
				vm_quiesce_devices(vm, true);
				quiesced = true;
				ph_mark(&s, PH_QUIESCE);
				mtrace("src.quiesced");
				rc = stop_phase(&s, &e);
			}
			done = rc == 0;
			tp = now_ns() - tp;       /* the downtime: paused until the answer */
			if (done && s.postcopy) {
				/* Past the point of no return: the destination runs the VM
				 * and our memory holds its missing pages.  The event loop
				 * goes (the control socket answers); devices and vCPUs stay
				 * stopped, here for good. */
				pthread_mutex_lock(&c->lock);
				c->st.downtime_ns = tp;
				c->st.postcopy = true;   /* switched: the VM runs there */
				pthread_mutex_unlock(&c->lock);
				ctl_set(c, "postcopy");
				hold_loop(c, false);
				if (postcopy_serve(&s, &e)) {
					done = false;
					lost = true;
				}
			}
		}
		if (lost)
			;                         /* e says it all */
		else if (rc && atomic_load(&c->cancel))
			error_set(&e, EXIT_HOST, "migration to %s: cancelled", c->uri);
		else if (rc && !strstr(e.msg, "refused"))
			better_reason(&s, &e);
	} else {
		if (!rc)         /* migrate_check refused a request without one */
			error_set(&e, EXIT_HOST, "migration to %s: no connection was handed over",
				  c->uri);
		rc = -1;
		if (s.fd >= 0)
			close(s.fd);
	}
	if (c->auto_converge)
		throttle_set(c, 0);   /* the VM at full speed again, here or there */
	migrate_disks_end(s.md);  /* the disks' tracking off */
	s.md = NULL;
	if (lost) {              /* after it: the VM stays paused, never resumed */
		c->inactive = false;
		vm_dirty_stop(vm);
	} else if (!done) {      /* before the point of no return: the VM goes on */
		struct error e2 = { 0 };

		if (c->inactive && migrate_disks_activate(vm, true, &e2)) {
			size_t n = strlen(e.msg);

			log_error("migration failed, and the disks' locks cannot be taken back: %s; "
				  "the VM goes on without them", e2.msg);
			if (n < 600)
				snprintf(e.msg + n, sizeof(e.msg) - n, "; the disks' locks could not "
					 "be taken back (%.300s)", e2.msg);
		}
		c->inactive = false;
		if (tracking)
			vm_dirty_stop(vm);
		if (paused) {
			if (quiesced)
				vm_quiesce_devices(vm, false);
			hold_loop(c, false);
			vm_resume(vm);
		}
	} else {
		hold_loop(c, false);
	}
	ctl_ended(c, &s, done, tp, e.msg);
	migrate_z_free(s.z);
	free(s.bits);
	state_writer_free(&s.w);
	if (lost) {
		log_error("%s", e.msg);
		return NULL;
	}
	if (!done) {
		log_warn("%s; the VM goes on here", e.msg);
		return NULL;
	}
	fprintf(stderr, "shoal: the VM migrated to %s (%.1f ms down, %.0f ms in all, %" PRIu64
		" MiB sent)\n", c->uri, c->st.downtime_ns / 1e6, c->st.total_ns / 1e6,
		c->st.bytes >> 20);
	/* Give `shoal migrate` a moment to read how it ended, then stop. */
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < 100 && !c->reported && !atomic_load(&vm->stopping); i++)
		ctl_wait_50ms(c);
	pthread_mutex_unlock(&c->lock);
	mtrace("src.stop");
	atomic_store(&vm->migrated, true);      /* --exit-file says so */
	vm_stop(vm, 0, "the VM migrated to %s", c->uri);
	return NULL;
}

/* ---- the control commands ---- */

static json_t *fail_json(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* Why a migrate request cannot start, or NULL.  `given` is the socket
 * the request brought (-1: none). */
static json_t *migrate_check(struct vm *vm, json_t *req, const char *uri, bool busy, int given)
{
	json_t *dt = json_object_get(req, "downtime_ms"), *bw = json_object_get(req, "bandwidth");
	json_t *wd = json_object_get(req, "with_disks"), *ac = json_object_get(req, "auto_converge");
	json_t *pa = json_object_get(req, "postcopy_after");
	json_t *cz = json_object_get(req, "compress"), *cl = json_object_get(req, "compress_level");
	struct migrate_addr a;
	struct error e = { 0 };
	int type = 0;
	socklen_t tl = sizeof(type);

	if (busy)
		return fail_json("migrate: a migration of this VM is in progress");
	if (migrate_parse_addr(uri, &a, &e))
		return fail_json(e.msg);
	if ((dt && (!json_is_integer(dt) || json_integer_value(dt) < 1 ||
		    json_integer_value(dt) > 3600000)) ||
	    (bw && (!json_is_integer(bw) || json_integer_value(bw) < 0)))
		return fail_json("migrate: \"downtime_ms\" is 1 to 3600000 and \"bandwidth\" bytes/s "
				 "is 0 or more");
	if (wd && !json_is_boolean(wd))
		return fail_json("migrate: \"with_disks\" is true or false");
	if (ac && !json_is_boolean(ac))
		return fail_json("migrate: \"auto_converge\" is true or false");
	if (pa && (!json_is_integer(pa) || json_integer_value(pa) < 1 ||
		   json_integer_value(pa) > MIGRATE_POSTCOPY_MAX_AFTER))
		return fail_json("migrate: \"postcopy_after\" is 1 to 30 rounds");
	if (cz && !json_is_null(cz) && (!json_is_string(cz) ||
					(strcmp(json_string_value(cz), MIGRATE_Z_NAME) &&
					 strcmp(json_string_value(cz), "none")))) {
		char msg[160];
		char *t = json_dumps(cz, JSON_ENCODE_ANY | JSON_COMPACT);

		snprintf(msg, sizeof(msg), "migrate: \"compress\" is \"zstd\" or \"none\", not %.60s",
			 t ? t : "that");
		free(t);
		return fail_json(msg);
	}
	if (cl && (!json_is_integer(cl) || json_integer_value(cl) < 1 ||
		   json_integer_value(cl) > MIGRATE_Z_LEVEL_MAX))
		return fail_json("migrate: \"compress_level\" is 1 to 19 (zstd's levels)");
	if (vm_is_paused(vm))
		return fail_json("migrate: the VM is paused");
	if (given >= 0 && (getsockopt(given, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM))
		return fail_json("migrate: the descriptor sent with the request is not a stream socket");
	/* The VMM opens no connection itself (under seccomp its filters allow
	 * no network socket, and in a jail of its own network namespace none
	 * would reach the destination): the client connects and hands the
	 * socket over, whatever the filters. */
	if (given < 0)
		return fail_json("migrate: the VMM opens no connection itself: send the connected "
				 "socket with the request (SCM_RIGHTS), as shoal migrate does");
	return NULL;
}

/* {"cmd": "migrate", "resume": true, "uri": URI} with a new connection:
 * hand it to the post-copy paused after a drop (pc_wait_resume).  Called
 * with c->lock held; lets it go. */
static json_t *resume_cmd(struct mig_ctl *c, const char *uri, int given)
{
	int type = 0;
	socklen_t tl = sizeof(type);
	const char *why = NULL;

	if (!c->running || strcmp(c->state, "postcopy-paused"))
		why = !strcmp(c->state, "postcopy") ? "migrate: resume: the post-copy is not paused: "
			"its connection is up" : "migrate: resume: no post-copy migration is paused "
			"after a dropped connection: nothing to resume";
	else if (given < 0)
		why = "migrate: resume: send the new connection's socket with the request "
			"(SCM_RIGHTS), as shoal migrate --resume does";
	else if (getsockopt(given, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM)
		why = "migrate: the descriptor sent with the request is not a stream socket";
	if (why) {
		pthread_mutex_unlock(&c->lock);
		if (given >= 0)
			close(given);
		return fail_json(why);
	}
	if (uri)
		snprintf(c->uri, sizeof(c->uri), "%s", uri);
	c->given_fd = given;
	c->state = "postcopy";
	c->error[0] = 0;
	c->reported = false;
	c->origin = control_client_serial();
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	log_info("migration to %s: post-copy: resume asked", c->uri);
	return json_pack("{s:b, s:s, s:s}", "ok", 1, "state", "postcopy", "uri", c->uri);
}

/* {"cmd": "migrate", "uri": URI[, "downtime_ms": N][, "bandwidth": BYTES_S]}
 * or {"cmd": "migrate", "cancel": true}, or {"cmd": "migrate", "resume": true,
 * "uri": URI} (resume_cmd). */
static json_t *migrate_cmd(struct vm *vm, json_t *req, void *opaque)
{
	struct mig_ctl *c = opaque;
	const char *uri = json_string_value(json_object_get(req, "uri"));
	json_t *dt = json_object_get(req, "downtime_ms"), *bw = json_object_get(req, "bandwidth");
	int given = control_take_fd();
	json_t *r;
	bool busy;

	pthread_mutex_lock(&c->lock);
	busy = c->running && (!strcmp(c->state, "active") || !strcmp(c->state, "completing") ||
			      !strcmp(c->state, "postcopy") || !strcmp(c->state, "postcopy-paused"));
	if (json_is_true(json_object_get(req, "resume")))
		return resume_cmd(c, uri, given);     /* c->lock: it lets go */
	if (json_is_true(json_object_get(req, "cancel"))) {
		if (given >= 0)
			close(given);
		if (!busy)
			r = fail_json("migrate: no migration in progress");
		else if (c->past_cancel)
			r = fail_json("migrate: too late to cancel: the destination has the whole "
				      "stream and its answer decides");
		else {
			atomic_store(&c->cancel, true);
			if (c->fd >= 0)
				shutdown(c->fd, SHUT_RDWR);
			r = json_pack("{s:b, s:s}", "ok", 1, "state", "cancelling");
		}
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	pthread_mutex_unlock(&c->lock);
	r = migrate_check(vm, req, uri, busy, given);
	if (r) {
		if (given >= 0)
			close(given);
		return r;
	}
	if (c->running && !c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
	}
	if (c->hold_fd < 0) {
		c->hold_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (c->hold_fd < 0 || eventloop_add(vm->loop, c->hold_fd, EPOLLIN, on_hold, c) < 0) {
			if (c->hold_fd >= 0)
				close(c->hold_fd);
			c->hold_fd = -1;
			if (given >= 0)
				close(given);
			return fail_json("migrate: cannot set up the event loop's hold");
		}
	}
	if (c->tick_fd < 0 && json_is_true(json_object_get(req, "auto_converge"))) {
		c->tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (c->tick_fd < 0 || eventloop_add(vm->loop, c->tick_fd, EPOLLIN, on_tick, c) < 0) {
			if (c->tick_fd >= 0)
				close(c->tick_fd);
			c->tick_fd = -1;
			if (given >= 0)
				close(given);
			return fail_json("migrate: cannot set up the throttle's timer");
		}
	}
	pthread_mutex_lock(&c->lock);
	snprintf(c->uri, sizeof(c->uri), "%s", uri);
	c->downtime_ms = dt ? (uint64_t)json_integer_value(dt) : MIGRATE_DOWNTIME_MS_DEFAULT;
	c->bandwidth = bw ? (uint64_t)json_integer_value(bw) : 0;
	c->with_disks = json_is_true(json_object_get(req, "with_disks"));
	c->auto_converge = json_is_true(json_object_get(req, "auto_converge"));
	c->postcopy_after = json_is_integer(json_object_get(req, "postcopy_after")) ?
		(uint32_t)json_integer_value(json_object_get(req, "postcopy_after")) : 0;
	c->compress_level = !json_is_string(json_object_get(req, "compress")) ||
		strcmp(json_string_value(json_object_get(req, "compress")), MIGRATE_Z_NAME) ? 0 :
		json_is_integer(json_object_get(req, "compress_level")) ?
		(int)json_integer_value(json_object_get(req, "compress_level")) :
		MIGRATE_Z_LEVEL_DEFAULT;
	memset(&c->st, 0, sizeof(c->st));
	c->error[0] = 0;
	c->reported = false;
	c->origin = control_client_serial();
	c->past_cancel = false;
	c->inactive = false;
	atomic_store(&c->cancel, false);
	c->state = "active";
	c->running = true;
	c->joined = false;
	c->given_fd = given;
	if (pthread_create(&c->thread, NULL, migrate_thread, c)) {
		if (given >= 0)
			close(given);
		c->given_fd = -1;
		c->running = false;
		c->state = "failed";
		snprintf(c->error, sizeof(c->error), "migrate: cannot start its thread");
		pthread_mutex_unlock(&c->lock);
		return fail_json(c->error);
	}
	pthread_mutex_unlock(&c->lock);
	log_info("migration to %s: started", uri);
	return json_pack("{s:b, s:s, s:s}", "ok", 1, "state", "active", "uri", uri);
}

static json_t *migrate_status_cmd(struct vm *vm, json_t *req, void *opaque)
{
	struct mig_ctl *c = opaque;
	json_t *o;

	(void)req;
	pthread_mutex_lock(&c->lock);
	o = json_pack("{s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:I}",
		      "ok", 1, "state", c->state, "uri", c->uri,
		      "round", (json_int_t)c->st.round, "bytes", (json_int_t)c->st.bytes,
		      "pages_sent", (json_int_t)c->st.pages_sent,
		      "zero_pages", (json_int_t)c->st.zero_pages,
		      "dirty_pages", (json_int_t)c->st.dirty_pages,
		      "dirty_rate", (json_int_t)c->st.dirty_rate,
		      "expected_downtime_ms", c->st.remaining_ns / 1e6,
		      "total_ms", c->st.total_ns / 1e6, "downtime_ms", c->st.downtime_ns / 1e6,
		      "memory_bytes", (json_int_t)vm->mem.size);
	if (o && (vm->resume_gate == indoubt_gate || vm->resume_gate == pc_held_gate))
		json_object_set_new(o, "incoming_in_doubt", json_true());   /* held paused */
	if (o && vm->resume_gate == pc_held_gate)   /* until post-copy's source is back */
		json_object_set_new(o, "incoming_postcopy_held", json_true());
	if (o && c->past_cancel)   /* "end" went: a destination may hold the VM in doubt */
		json_object_set_new(o, "end_sent", json_true());
	if (o && c->with_disks) {
		json_t *d = json_pack(
			"{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "with_disks", 1,
			"disks", (json_int_t)c->st.disk.disks,
			"disk_size", (json_int_t)c->st.disk.size,
			"disk_bytes", (json_int_t)c->st.disk.data_bytes,
			"disk_zero_bytes", (json_int_t)c->st.disk.zero_bytes,
			"disk_dirty_blocks", (json_int_t)c->st.disk.dirty_blocks,
			"disk_resent_blocks", (json_int_t)c->st.disk.resent_blocks,
			"disks_top_only", (json_int_t)c->st.disk.top_only,
			"disk_base_bytes", (json_int_t)c->st.disk.base_bytes);

		json_object_update(o, d);
		json_decref(d);
	}
	if (o && c->st.downtime_ns) {
		json_t *ph = json_object();

		for (int i = 0; ph && i < PH_N; i++)
			json_object_set_new(ph, ph_names[i], json_real(c->st.ph_ns[i] / 1e6));
		json_object_set_new(o, "downtime_phases_ms", ph);
	}
	if (o) {
		json_object_set_new(o, "compress", json_string(c->compress_level ? MIGRATE_Z_NAME :
								   "none"));
		if (c->compress_level)
			json_object_set_new(o, "compress_level", json_integer(c->compress_level));
		json_object_set_new(o, "ram_raw_bytes", json_integer((json_int_t)c->st.ram_raw));
		json_object_set_new(o, "ram_data_bytes", json_integer((json_int_t)c->st.ram_data));
		json_object_set_new(o, "compressed_pages", json_integer((json_int_t)c->st.zpages));
	}
	if (o) {
		json_object_set_new(o, "auto_converge", json_boolean(c->auto_converge));
		json_object_set_new(o, "throttle_pct", json_integer(c->st.throttle_pct));
		json_object_set_new(o, "throttle_max_pct", json_integer(c->st.throttle_max_pct));
	}
	if (o && c->postcopy_after) {
		json_t *d = json_pack("{s:I, s:b, s:I, s:I, s:I}",
				      "postcopy_after", (json_int_t)c->postcopy_after,
				      "postcopy", c->st.postcopy,
				      "postcopy_pages", (json_int_t)c->st.pc_pages,
				      "postcopy_demand_pages", (json_int_t)c->st.pc_demand,
				      "postcopy_pushed_pages", (json_int_t)c->st.pc_pushed);

		json_object_update(o, d);
		json_decref(d);
	}
	if (c->error[0])
		json_object_set_new(o, "error", json_string(c->error));
	/* Only the asker's own reading lets the VMM stop early: another
	 * client watching the status must not take the report from it. */
	if (!strcmp(c->state, "done") && (!c->origin || control_client_serial() == c->origin)) {
		c->reported = true;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return o;
}

static struct mig_ctl *mig_ctl_of(struct vm *vm)
{
	for (int i = 0; i < vm->ncommands; i++)
		if (vm->commands[i].fn == migrate_status_cmd)
			return vm->commands[i].opaque;
	return NULL;
}

void migrate_add_command(struct vm *vm)
{
	struct mig_ctl *c = calloc(1, sizeof(*c));

	if (!c)
		return;
	c->vm = vm;
	c->fd = c->hold_fd = c->given_fd = c->tick_fd = -1;
	c->state = "none";
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (vm_add_command(vm, "migrate", migrate_cmd, c) ||
	    vm_add_command(vm, "migrate-status", migrate_status_cmd, c)) {
		log_warn("migrate: the control socket has no room for its commands");
		if (!mig_ctl_of(vm)) {
			if (vm->ncommands && vm->commands[vm->ncommands - 1].fn == migrate_cmd)
				vm->ncommands--;
			pthread_mutex_destroy(&c->lock);
			pthread_cond_destroy(&c->cond);
			free(c);
		}
	}
}

void migrate_wait(struct vm *vm)
{
	struct mig_ctl *c = mig_ctl_of(vm);

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->running && !c->joined && !c->past_cancel) {
		atomic_store(&c->cancel, true);
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
	}
	c->hold = false;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (c->running && !c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
	}
	if (c->hold_fd >= 0)
		close(c->hold_fd);
	if (c->tick_fd >= 0)
		close(c->tick_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}
