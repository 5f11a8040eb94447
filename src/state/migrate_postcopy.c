/*
 * migrate_postcopy.c - post-copy live migration: the VM runs at the
 * destination before all of its memory is there.
 *
 * When pre-copy has run its N rounds (`--postcopy-after N`) without
 * converging, the source pauses the vCPUs and quiesces the devices as in
 * the stop phase, but instead of the last dirty pages it sends a
 * "postcopy" section: the bitmap of the pages that are not current at the
 * destination (every page dirtied since round 0 began).  Then the state
 * and "end" go as usual, and the destination, before it acknowledges,
 * punches those pages out of its memfd (their copy from an earlier round
 * is stale) and registers the whole of guest memory with a userfaultfd in
 * MISSING mode (shared memory: UFFD_FEATURE_MISSING_SHMEM).  After the
 * acknowledgement the VM runs there; one thread of the destination:
 *   - reads the fault messages: a missing page not yet asked for is asked
 *     for ("SHOALPRQ", u64 page index); a fault on a page that is not
 *     missing is a hole of the memfd (a zero page of the stream, or never
 *     written), filled with zeros at once;
 *   - reads "ram" sections from the source and places each missing page
 *     with UFFDIO_COPY, which wakes whoever waits for it (a vCPU inside
 *     KVM_RUN, or device emulation touching a virtqueue: any thread of the
 *     VMM but this one);
 *   - at "end", with no page missing, unregisters, says "SHOALFIN" (u64
 *     pages it asked for), and ends once the source confirms it
 *     ("SHOALBYE").  Without that word (a drop may have taken SHOALFIN,
 *     and the source then waits for a resume) the VM runs on, it has
 *     every page, and the thread listens on for recover-timeout: a source
 *     that reconnects gets an empty list, sends "end", and hears
 *     SHOALFIN again.
 * The source serves requests first and, between them, pushes the pages
 * still to send in address order, within --bandwidth.
 *
 * Invariants: a page is placed only while it is missing, once (a page the
 * source sends twice, or one the destination never lacked, is skipped);
 * this thread never touches guest memory itself (it would fault on its
 * own registration); the source never sends a page that is not in the
 * list, and never resumes its copy of the VM once the destination has
 * acknowledged.
 *
 * The point of no return moves to the acknowledgement of the switch: from
 * then on the source's memory holds the only copy of the missing pages and
 * the destination holds the only running VM.  If the connection drops,
 * neither gives up (QEMU's postcopy-recover): the destination keeps the VM
 * (a vCPU that faults on a missing page waits; the faults are still read,
 * holes still get zeros, missing pages are marked as asked for) and keeps
 * its --incoming listening socket for `recover-timeout` seconds; the
 * source keeps its copy paused (never resumed: it is older than what the
 * destination ran) and waits for `shoal migrate --resume URI` to hand it a
 * new connection.  On it the source sends "SHOALMIG" and a "recover"
 * section (memory size and the identity the "postcopy" section carried);
 * the destination, after the same key and TLS handshake as the first
 * connection, checks both, answers SHOALRCV and the bitmap of the pages
 * it still lacks (a page in flight when the connection dropped is among
 * them), and asks again for every page a fault still waits for; the
 * source makes that bitmap its list and serves on, then "end" and
 * SHOALFIN as usual.  A drop during recovery goes back to waiting, at
 * both ends.  A connection that is not this post-copy's (another VM's
 * size, another identity, no "recover") is refused with SHOALNAK and the
 * destination waits on.  While the source is connected, anything else
 * that connects there is refused at once (SHOALNAK, "a migration is
 * already coming in": migrate_refuse_busy; before the switch migrate.c's
 * door does the same).  Only when nothing reconnects within
 * recover-timeout is the VM lost: the destination says how many pages
 * were missing and exits (70: zeros in their place would corrupt the guest
 * silently); the source, still paused, is the operator's to stop.  The
 * source's go-ahead (SHOALRUN) after the acknowledgement starts the VM
 * here; without it (migrate_postcopy_held) the VM is held paused, never
 * run, while this thread waits for the source as after a drop: only a
 * source that had the acknowledgement comes back for a recovery, and the
 * first one releases the VM (a write to the caller's eventfd).  A source
 * that never had it runs on, and this copy stops after recover-timeout.
 *
 * The source may not: name a page past the end of RAM, send a record
 * outside it, or a list not of our size: each is refused before the
 * acknowledgement (the VM then stays at the source) or, after it, ends the
 * destination as above.  Over TLS the destination's one thread reads the
 * stream and sends its requests through the same TLS session (only that
 * thread touches it from the switch on), and before it waits on the
 * socket it takes what TLS has already read off it (SSL_pending): a poll
 * alone would not see those records, and the page they bring would wait
 * for the next one.
 */
#include "state/migrate_postcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "state/migrate.h"
#include "state/migrate_auth.h"
#include "state/migrate_net.h"
#include "state/migrate_tls.h"
#include "vmm/jail.h"

#define PAGE 4096u
#define PUSH_PAGES 64u                 /* pages a background push sends at most */

static bool bit_get(const uint64_t *b, uint64_t p)
{
	return b[p / 64] >> (p % 64) & 1;
}

static void bit_clear(uint64_t *b, uint64_t p)
{
	b[p / 64] &= ~(1ULL << (p % 64));
}

/* ---- the section ---- */

void migrate_postcopy_put_list(struct state_writer *w, const uint64_t *bits, uint64_t pages,
			       const uint8_t id[MIGRATE_PC_ID_LEN])
{
	state_put_u64(w, pages);
	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		state_put_u64(w, bits[i]);
	state_put_bytes(w, id, MIGRATE_PC_ID_LEN);
}

int migrate_postcopy_parse(uint64_t mem_size, const uint8_t *p, size_t len, uint64_t **bits,
			   uint64_t *missing, uint8_t id[MIGRATE_PC_ID_LEN], struct error *e)
{
	struct state_reader r;
	uint64_t pages, words, *b, n = 0;

	*bits = NULL;
	*missing = 0;
	state_reader_init(&r, p, len);
	pages = state_get_u64(&r);
	if (r.error || pages != mem_size / PAGE)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the postcopy section lists "
				 "%" PRIu64 " pages, this VM has %" PRIu64, r.error ? 0 : pages,
				 mem_size / PAGE);
	words = (pages + 63) / 64;
	if (len != 8 + words * 8 + MIGRATE_PC_ID_LEN)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the postcopy section is %zu "
				 "bytes, a list of %" PRIu64 " pages is %" PRIu64, len, pages,
				 8 + words * 8 + MIGRATE_PC_ID_LEN);
	b = calloc(words ? words : 1, 8);
	if (!b)
		return error_set(e, EXIT_HOST, "incoming migration: out of memory");
	for (uint64_t i = 0; i < words; i++) {
		b[i] = state_get_u64(&r);
		n += (uint64_t)__builtin_popcountll(b[i]);
	}
	if (pages % 64 && b[words - 1] >> (pages % 64)) {
		free(b);
		return error_set(e, EXIT_BADSTATE, "incoming migration: the postcopy section lists "
				 "a page past the end of RAM");
	}
	memcpy(id, p + 8 + words * 8, MIGRATE_PC_ID_LEN);
	*bits = b;
	*missing = n;
	return 0;
}

void migrate_postcopy_put_recover(struct state_writer *w, uint64_t mem_size,
				  const uint8_t id[MIGRATE_PC_ID_LEN])
{
	state_put_u64(w, mem_size);
	state_put_u64(w, mem_size / PAGE);
	state_put_bytes(w, id, MIGRATE_PC_ID_LEN);
}

int migrate_postcopy_parse_recover(uint64_t mem_size, const uint8_t id[MIGRATE_PC_ID_LEN],
				   const uint8_t *p, size_t len, struct error *e)
{
	struct state_reader r;
	uint64_t mem, pages;

	state_reader_init(&r, p, len);
	mem = state_get_u64(&r);
	pages = state_get_u64(&r);
	if (r.error || len != 16 + MIGRATE_PC_ID_LEN)
		return error_set(e, EXIT_BADSTATE, "post-copy recovery: the recover section is %zu "
				 "bytes, not %d", len, 16 + MIGRATE_PC_ID_LEN);
	if (mem != mem_size || pages != mem_size / PAGE)
		return error_set(e, EXIT_BADSTATE, "post-copy recovery: the source's VM has %" PRIu64
				 " MiB, this one %" PRIu64 " MiB: not the VM in post-copy here",
				 mem >> 20, mem_size >> 20);
	if (memcmp(p + 16, id, MIGRATE_PC_ID_LEN))
		return error_set(e, EXIT_BADSTATE, "post-copy recovery: the source resumes another "
				 "migration than the one whose pages this VM waits for");
	return 0;
}

/* ---- the source ---- */

static int src_gone(struct migrate_pc_src *ps, uint64_t left, const char *why,
		    struct error *e)
{
	char w[400];

	snprintf(w, sizeof(w), "%.399s", why);      /* `why` may be e->msg */
	if (ps->wait_resume)
		return error_set(e, EXIT_HOST, "migration to %s: post-copy: %s, with %" PRIu64
				 " pages not yet sent: the VM waits for them there; it stays paused "
				 "here as it was at the switch, not resumed, until shoal migrate "
				 "--resume reconnects (if this VMM stops first, the VM is lost)",
				 ps->uri, w, left);
	return error_set(e, EXIT_HOST, "migration to %s: post-copy: %s, with %" PRIu64 " pages "
			 "not yet sent: the VM is lost there; it stays paused here as it was at "
			 "the switch, not resumed (the destination ran it on)", ps->uri, w, left);
}

/* One 16-byte word from the destination; -1 with `e` if it went away. */
static int src_word(struct migrate_pc_src *ps, uint64_t left, char word[8], uint64_t *arg,
		    struct error *e)
{
	uint8_t msg[16];
	int rc = migrate_recv_all(ps->fd, msg, sizeof(msg));

	if (rc <= 0)
		return src_gone(ps, left, rc == 0 || errno == EPIPE || errno == ECONNRESET ?
				"the destination closed the connection" : errno == EAGAIN ?
				"the destination said nothing for 30 s" : strerror(errno), e);
	memcpy(word, msg, 8);
	memcpy(arg, msg + 8, 8);
	return 0;
}

static uint64_t bits_count(const uint64_t *b, uint64_t pages)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(b[i]);
	return n;
}

/* Serve on ps->fd until the destination says it has every page. */
static int serve_once(struct migrate_pc_src *ps, struct error *e)
{
	uint64_t left = bits_count(ps->bits, ps->pages), cursor = 0, arg = 0;
	uint8_t msg[16];
	char word[8];

	while (left) {
		struct pollfd p = { .fd = ps->fd, .events = POLLIN };

		/* requests first: a vCPU or device waits on each */
		while (poll(&p, 1, 0) == 1) {
			if (src_word(ps, left, word, &arg, e))
				return -1;
			if (memcmp(word, MIGRATE_PC_REQUEST, 8) || arg >= ps->pages)
				return src_gone(ps, left, "the destination answered nonsense", e);
			if (!bit_get(ps->bits, arg))
				continue;             /* pushed already, in flight */
			bit_clear(ps->bits, arg);
			left--;
			if (ps->send(ps->opaque, arg, 1, true, e))
				return src_gone(ps, left + 1, e->msg, e);
		}
		if (!left)
			break;
		/* then the next run of pages still to send */
		while (!bit_get(ps->bits, cursor)) {
			if (!ps->bits[cursor / 64])
				cursor = (cursor / 64 + 1) * 64;
			else
				cursor++;
			if (cursor >= ps->pages)
				cursor = 0;
		}
		uint64_t n = 0;

		while (cursor + n < ps->pages && n < PUSH_PAGES && bit_get(ps->bits, cursor + n)) {
			bit_clear(ps->bits, cursor + n);
			n++;
		}
		left -= n;
		if (ps->send(ps->opaque, cursor, n, false, e))
			return src_gone(ps, left + n, e->msg, e);
		cursor += n;
		if (cursor >= ps->pages)
			cursor = 0;
	}
	if (ps->send_end(ps->opaque, e))
		return src_gone(ps, 0, e->msg, e);
	for (;;) {      /* requests sent before the pages arrived, then its word */
		if (migrate_recv_all(ps->fd, msg, sizeof(msg)) <= 0)
			return ps->wait_resume ?
				src_gone(ps, 0, "every page was sent, but the destination went away "
					 "before it said it had them all", e) :
				error_set(e, EXIT_HOST, "migration to %s: post-copy: every page was "
					  "sent, but the destination went away before it said it had "
					  "them all: the VM may be lost there; it stays paused here, not "
					  "resumed", ps->uri);
		memcpy(word, msg, 8);
		if (!memcmp(word, MIGRATE_PC_FINISHED, 8)) {
			/* we have it: the destination may stop waiting for a
			 * resume (lost, it waits recover-timeout, harmlessly) */
			memset(msg, 0, sizeof(msg));
			memcpy(msg, MIGRATE_PC_BYE, 8);
			if (migrate_send_all(ps->fd, msg, sizeof(msg)))
				log_warn("migration to %s: post-copy: the destination went away "
					 "before our last word (it has every page)", ps->uri);
			return 0;
		}
		if (memcmp(word, MIGRATE_PC_REQUEST, 8))
			return src_gone(ps, 0, "the destination answered nonsense", e);
	}
}

static int recover_fail(struct migrate_pc_src *ps, const char *why, struct error *e)
{
	char w[600];

	snprintf(w, sizeof(w), "%.599s", why);
	return error_set(e, EXIT_HOST, "migration to %s: post-copy recovery: %s; the VM stays "
			 "paused here, waiting for another shoal migrate --resume", ps->uri, w);
}

/* The destination's answer to "recover": the pages it still lacks, which
 * become ours to send (a page sent before the drop that never arrived is
 * among them).  0, or -1 with `e`. */
static int src_recovered(struct migrate_pc_src *ps, struct error *e)
{
	uint64_t pages, words = (ps->pages + 63) / 64;
	char word[8], msg[600];
	uint32_t n;
	int rc = migrate_recv_all(ps->fd, word, 8);

	if (rc <= 0)
		return recover_fail(ps, "the destination did not answer (is it still waiting? its "
				    "recover-timeout may have passed)", e);
	if (!memcmp(word, "SHOALNAK", 8)) {
		if (migrate_recv_all(ps->fd, &n, 4) <= 0)
			n = 0;
		if (n >= sizeof(msg))
			n = sizeof(msg) - 1;
		if (n && migrate_recv_all(ps->fd, msg, n) <= 0)
			n = 0;
		msg[n] = 0;
		return recover_fail(ps, n ? msg : "the destination refused it", e);
	}
	if (memcmp(word, MIGRATE_PC_RECOVER, 8) || migrate_recv_all(ps->fd, &pages, 8) <= 0 ||
	    pages != ps->pages || migrate_recv_all(ps->fd, ps->bits, words * 8) <= 0 ||
	    (pages % 64 && ps->bits[words - 1] >> (pages % 64))) {
		memset(ps->bits, 0, words * 8);
		return recover_fail(ps, "the destination answered nonsense", e);
	}
	return 0;
}

int migrate_postcopy_serve(struct migrate_pc_src *ps, struct error *e)
{
	log_info("migration to %s: post-copy: the destination runs the VM; %" PRIu64 " pages to "
		 "send", ps->uri, bits_count(ps->bits, ps->pages));
	for (unsigned resumed = 1;; resumed++) {
		char why[sizeof(e->msg)];

		if (!serve_once(ps, e))
			return 0;
		if (!ps->wait_resume)
			return -1;
		for (;;) {      /* until a new connection recovers, or the VMM stops */
			int fd;

			snprintf(why, sizeof(why), "%s", e->msg);
			fd = ps->wait_resume(ps->opaque, why, e);
			if (fd < 0)
				return -1;
			ps->fd = fd;
			if (!src_recovered(ps, e))
				break;
		}
		log_info("migration to %s: post-copy resumed (recovery %u): the destination still "
			 "lacks %" PRIu64 " pages", ps->uri, resumed, bits_count(ps->bits, ps->pages));
	}
}

/* ---- the destination ---- */

struct migrate_pc_dst {
	struct guest_mem *m;
	int uffd;
	uint64_t *missing, *asked;        /* bitmaps over the pages */
	uint64_t pages, left, total;      /* pages; missing now; missing at the switch */
	uint64_t demand, zero_fills;
	uint8_t id[MIGRATE_PC_ID_LEN];    /* the "postcopy" section's identity */
	struct migrate_in in;             /* the connection, after the acknowledgement; fd -1
					   * while the source is away */
	int lfd;                          /* the listening socket, -1: no recovery */
	char uri[256], path[108];         /* --incoming's address; a unix: socket's path */
	unsigned recover_s, recoveries;
	time_t deadline;                  /* the source is away: wait for it until then */
	const char *broken;               /* a request could not be sent: the connection is gone */
	int release_fd;                   /* held for the go-ahead: an eventfd that the first
					   * recovery releases the VM with; -1 */
	pthread_t thread;
};

static const uint8_t zero_page[PAGE] __attribute__((aligned(PAGE)));

void migrate_postcopy_free(struct migrate_pc_dst *d)
{
	if (!d)
		return;
	if (d->uffd >= 0)
		close(d->uffd);          /* unregisters */
	free(d->missing);
	free(d->asked);
	free(d);
}

int migrate_postcopy_arm(struct guest_mem *m, bool tls, bool zero_layer, uint64_t *bits,
			 uint64_t missing, const uint8_t id[MIGRATE_PC_ID_LEN],
			 struct migrate_pc_dst **out, struct error *e)
{
	struct migrate_pc_dst *d = calloc(1, sizeof(*d));
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM };
	struct uffdio_register reg;

	*out = NULL;
	if (!d) {
		free(bits);
		return error_set(e, EXIT_HOST, "incoming migration: out of memory");
	}
	d->m = m;
	d->uffd = -1;
	d->lfd = -1;
	d->release_fd = -1;
	d->missing = bits;
	d->pages = m->size / PAGE;
	d->left = d->total = missing;
	memcpy(d->id, id, MIGRATE_PC_ID_LEN);
	d->asked = calloc((d->pages + 63) / 64 + 1, 8);
	if (!d->asked) {
		migrate_postcopy_free(d);
		return error_set(e, EXIT_HOST, "incoming migration: out of memory");
	}
	(void)tls;	/* over TLS too: dst_thread sees what TLS has buffered */
	if (zero_layer || m->fd < 0) {
		migrate_postcopy_free(d);
		return error_set(e, EXIT_BADSTATE, "incoming migration: post-copy is not done %s",
				 zero_layer ? "with the zero-page layer on (start the destination "
					      "without it)" : "for memory that is not a memfd");
	}
	d->uffd = jail_userfaultfd(O_CLOEXEC | O_NONBLOCK);
	if (d->uffd < 0) {
		int err = errno;

		migrate_postcopy_free(d);
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: userfaultfd: %s%s",
				 strerror(err), err == EPERM ? " (needs CAP_SYS_PTRACE, "
				 "vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)" : "");
	}
	if (ioctl(d->uffd, UFFDIO_API, &api) < 0) {
		migrate_postcopy_free(d);
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: this kernel's "
				 "userfaultfd cannot serve shared memory (UFFD_FEATURE_MISSING_SHMEM)");
	}
	/* The copies from earlier rounds are stale: out of the memfd with them,
	 * so that the next access faults. */
	for (uint64_t p = 0; p < d->pages; ) {
		uint64_t q;

		if (!bit_get(bits, p)) {
			p++;
			continue;
		}
		for (q = p + 1; q < d->pages && bit_get(bits, q); q++)
			;
		if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(p * PAGE),
			      (off_t)((q - p) * PAGE)) < 0) {
			int err = errno;

			migrate_postcopy_free(d);
			return error_set(e, EXIT_HOST, "incoming migration: post-copy: dropping the "
					 "stale pages: %s", strerror(err));
		}
		p = q;
	}
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)m->host, .len = m->size },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg) < 0 ||
	    !(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
		int err = errno ? errno : ENOTSUP;

		migrate_postcopy_free(d);
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: cannot register guest "
				 "memory with userfaultfd: %s", strerror(err));
	}
	*out = d;
	return 0;
}

/* The VM cannot go on: its missing pages exist only at the source. */
static _Noreturn void dst_lost(struct migrate_pc_dst *d, const char *why)
{
	if (d->release_fd >= 0)      /* held: it never ran here */
		log_error("incoming migration: post-copy: %s, and its go-ahead never came: our "
			  "acknowledgement may not have reached it, and its VM may run on there. "
			  "This copy, held paused, never ran here, and is stopped", why);
	else
		log_error("incoming migration: post-copy: %s, with %" PRIu64 " of %" PRIu64 " pages "
			  "still missing (their only copy is in the source's memory): the VM cannot "
			  "run on and is stopped", why, d->left, d->total);
	if (d->lfd >= 0 && d->path[0])
		unlink(d->path);
	_exit(EXIT_HOST);
}

/* Place a page (src: its bytes) and wake whoever waits for it. */
static int place(struct migrate_pc_dst *d, uint64_t page, const void *src)
{
	struct uffdio_copy c = { .dst = (uintptr_t)d->m->host + page * PAGE,
				 .src = (uintptr_t)src, .len = PAGE, .mode = 0 };

	while (ioctl(d->uffd, UFFDIO_COPY, &c) < 0) {
		if (errno == EEXIST) {       /* there already: wake the waiters */
			struct uffdio_range r = { .start = c.dst, .len = PAGE };

			return ioctl(d->uffd, UFFDIO_WAKE, &r);
		}
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		c.copy = 0;
	}
	return 0;
}

static void dst_faults(struct migrate_pc_dst *d)
{
	struct uffd_msg msg[16];
	ssize_t n;

	while ((n = read(d->uffd, msg, sizeof(msg))) > 0) {
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msg[0]); i++) {
			uint64_t addr = msg[i].arg.pagefault.address, off, page;
			uint8_t req[16];

			if (msg[i].event != UFFD_EVENT_PAGEFAULT || addr < (uintptr_t)d->m->host)
				continue;
			off = addr - (uintptr_t)d->m->host;
			if (off >= d->m->size)
				continue;
			page = off / PAGE;
			if (!bit_get(d->missing, page)) {     /* a hole: zeros */
				if (place(d, page, zero_page) < 0)
					dst_lost(d, "placing a zero page failed");
				d->zero_fills++;
				continue;
			}
			if (bit_get(d->asked, page))
				continue;
			d->asked[page / 64] |= 1ULL << (page % 64);
			d->demand++;
			if (d->in.fd < 0 || d->broken)
				continue;     /* asked for again once the source is back */
			memcpy(req, MIGRATE_PC_REQUEST, 8);
			memcpy(req + 8, &page, 8);
			if (migrate_io_send(d->in.fd, d->in.tls, req, sizeof(req)))
				d->broken = "the connection to the source dropped (asking for a page)";
		}
	}
}

/* A "ram" section: place each missing page it brings. */
static void dst_ram(struct migrate_pc_dst *d, const uint8_t *p, size_t len)
{
	struct state_reader r;
	struct migrate_ram_rec rec;
	static _Thread_local struct error e;

	state_reader_init(&r, p, len);
	while (r.pos < r.len) {
		if (migrate_ram_next(&r, d->m->size, &rec, &e)) {  /* its "incoming migration: " off */
			d->broken = strncmp(e.msg, "incoming migration: ", 20) ? e.msg : e.msg + 20;
			return;
		}
		for (uint32_t i = 0; i < rec.pages; i++) {
			uint64_t page = rec.off / PAGE + i;
			const uint8_t *src = rec.data ? rec.data + (size_t)i * PAGE : zero_page;

			if (!bit_get(d->missing, page))
				continue;
			if (place(d, page, src) < 0)
				dst_lost(d, "placing a page failed");
			bit_clear(d->missing, page);
			d->left--;
		}
	}
}

/* The connection to the source is gone (`why`): without a listening
 * socket the VM is lost; else close it and wait for the source. */
static void dst_drop(struct migrate_pc_dst *d, const char *why)
{
	if (d->lfd < 0)
		dst_lost(d, why);
	migrate_io_close(d->in.fd, d->in.tls);
	d->in.fd = -1;
	d->in.tls = NULL;
	d->broken = NULL;
	d->deadline = time(NULL) + (time_t)d->recover_s;
	log_warn("incoming migration: post-copy: %s, with %" PRIu64 " of %" PRIu64 " pages still "
		 "missing: the VM waits for them (%s); waiting up to %u s for the source to "
		 "reconnect on %s (shoal migrate --socket SOCK --resume %s)", why, d->left, d->total,
		 d->release_fd >= 0 ? "held paused, never run here, until the source reconnects: "
		 "only a source past the switch does" : "its vCPUs wait in their faults",
		 d->recover_s, d->uri, d->uri);
}

/* A connection on the listening socket, while the source is away: the
 * same key and TLS as the first, then "SHOALMIG" and a "recover" section
 * of this post-copy; our answer is the list of pages still missing, and
 * the requests of the faults that still wait go again.  0 with d->in
 * connected, or -1 (refused, logged: wait on). */
static int dst_accept(struct migrate_pc_dst *d)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct migrate_in in = { .fd = -1 };
	struct error e = { 0 };
	char name[64];
	const uint8_t *p;
	size_t len;
	uint8_t *ans;
	uint64_t words = (d->pages + 63) / 64, reasked = 0;
	int rc;

	memset(&peer, 0, sizeof(peer));
	in.fd = accept4(d->lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
	if (in.fd < 0)
		return -1;
	if (migrate_auth_accept(in.fd, (struct sockaddr *)&peer, &in.tls, &e)) {
		log_warn("%s; still waiting on %s", e.msg, d->uri);
		close(in.fd);
		return -1;
	}
	migrate_set_timeouts(in.fd);
	rc = migrate_read_magic(&in, &e);
	if (!rc)
		rc = migrate_read_section(&in, name, &p, &len, &e);
	if (!rc && strcmp(name, "recover"))
		rc = error_set(&e, EXIT_BADSTATE, "post-copy recovery: the stream begins with \"%s\", "
			       "not \"recover\" (a VM waits for its pages here)", name);
	if (!rc)
		rc = migrate_postcopy_parse_recover(d->m->size, d->id, p, len, &e);
	if (rc) {
		migrate_io_send_nak(in.fd, in.tls, e.msg);
		log_warn("incoming migration: %s; refused, still waiting on %s",
			 strncmp(e.msg, "incoming migration: ", 20) ? e.msg : e.msg + 20, d->uri);
		migrate_io_close(in.fd, in.tls);
		migrate_in_free(&in);
		return -1;
	}
	ans = malloc(16 + words * 8);
	if (ans) {
		memcpy(ans, MIGRATE_PC_RECOVER, 8);
		memcpy(ans + 8, &d->pages, 8);
		memcpy(ans + 16, d->missing, words * 8);
	}
	if (!ans || migrate_io_send(in.fd, in.tls, ans, 16 + words * 8)) {
		free(ans);
		log_warn("incoming migration: post-copy recovery: the source went away before our "
			 "answer; still waiting on %s", d->uri);
		migrate_io_close(in.fd, in.tls);
		migrate_in_free(&in);
		return -1;
	}
	free(ans);
	migrate_in_free(&d->in);
	d->in = in;
	d->recoveries++;
	/* the faults that wait were read before the drop: ask again */
	for (uint64_t page = 0; page < d->pages && !d->broken; page++) {
		uint8_t req[16];

		if (!(d->asked[page / 64] & d->missing[page / 64])) {
			page |= 63;
			continue;
		}
		if (!bit_get(d->asked, page) || !bit_get(d->missing, page))
			continue;
		memcpy(req, MIGRATE_PC_REQUEST, 8);
		memcpy(req + 8, &page, 8);
		if (migrate_io_send(d->in.fd, d->in.tls, req, sizeof(req)))
			d->broken = "the connection to the source dropped (asking again for a page)";
		reasked++;
	}
	log_info("incoming migration: post-copy: the source reconnected (recovery %u): %" PRIu64
		 " pages still missing, %" PRIu64 " asked for again", d->recoveries, d->left,
		 reasked);
	if (d->release_fd >= 0) {    /* it had our acknowledgement: the VM is ours to run */
		uint64_t one = 1;

		if (write(d->release_fd, &one, sizeof(one)) != sizeof(one))
			log_error("incoming migration: post-copy: cannot release the held VM: %s",
				  strerror(errno));
		else
			log_info("incoming migration: post-copy: the source came back for its "
				 "recovery, so it is past the switch: the held VM runs here now");
		d->release_fd = -1;     /* the caller's, closed there */
	}
	return 0;
}

/* The source is away: serve the faults (holes get zeros, missing pages
 * are marked to be asked for) and wait for it on the listening socket
 * until the deadline, then the VM is lost. */
static void dst_wait_source(struct migrate_pc_dst *d)
{
	struct pollfd pfd[2] = { { .fd = d->uffd, .events = POLLIN },
				 { .fd = d->lfd, .events = POLLIN } };

	while (time(NULL) < d->deadline) {
		int rc = poll(pfd, 2, 1000);

		if (rc < 0 && errno != EINTR)
			dst_lost(d, "poll failed");
		if (rc > 0 && pfd[0].revents)
			dst_faults(d);
		if (rc > 0 && pfd[1].revents && !dst_accept(d))
			return;
	}
	char why[160];

	snprintf(why, sizeof(why), "the source did not reconnect within %u s (recover-timeout)",
		 d->recover_s);
	dst_lost(d, why);
}

/* Every page is here: say SHOALFIN and wait for the source's SHOALBYE.
 * NULL once it came, else why not (the connection is then unusable). */
static const char *dst_finish(struct migrate_pc_dst *d)
{
	uint8_t fin[16];

	memcpy(fin, MIGRATE_PC_FINISHED, 8);
	memcpy(fin + 8, &d->demand, 8);
	if (migrate_io_send(d->in.fd, d->in.tls, fin, sizeof(fin)))
		return "the source went away before our last word";
	if (migrate_io_recv(d->in.fd, d->in.tls, fin, sizeof(fin)) <= 0 ||
	    memcmp(fin, MIGRATE_PC_BYE, 8))
		return "the source did not confirm our last word (a drop may have lost it)";
	return NULL;
}

/* Our last word may be lost (`why`): the source then waits, paused, for
 * a resume.  Listen on for recover-timeout: a source that reconnects
 * gets an empty list and sends "end" at once, for SHOALFIN again.  0 when
 * it is back (d->in), -1 when it did not come (the VM runs on anyway). */
static int dst_linger(struct migrate_pc_dst *d, const char *why)
{
	time_t deadline = time(NULL) + (time_t)d->recover_s;
	struct pollfd pfd = { .fd = d->lfd, .events = POLLIN };

	migrate_io_close(d->in.fd, d->in.tls);
	d->in.fd = -1;
	d->in.tls = NULL;
	log_warn("incoming migration: post-copy: %s: the VM has every page and runs on; waiting "
		 "up to %u s on %s for the source to reconnect and hear it", why, d->recover_s,
		 d->uri);
	while (time(NULL) < deadline) {
		char name[64];
		const uint8_t *p;
		size_t len;
		struct error e = { 0 };

		if (poll(&pfd, 1, 1000) != 1 || dst_accept(d))
			continue;
		if (!migrate_read_section(&d->in, name, &p, &len, &e) && !strcmp(name, "end"))
			return 0;
		log_warn("incoming migration: post-copy: the reconnected source did not end the "
			 "stream (%s); still waiting on %s", e.msg[0] ? e.msg : name, d->uri);
		migrate_io_close(d->in.fd, d->in.tls);
		d->in.fd = -1;
		d->in.tls = NULL;
	}
	log_warn("incoming migration: post-copy: the source did not reconnect within %u s; it may "
		 "still wait in postcopy-paused (stop it: the VM runs here)", d->recover_s);
	return -1;
}

static void *dst_thread(void *arg)
{
	struct migrate_pc_dst *d = arg;
	time_t last = time(NULL);
	struct uffdio_range all = { .start = (uintptr_t)d->m->host, .len = d->m->size };

	seccomp_thread_enter(SECCOMP_POSTCOPY);
	for (;;) {
		if (d->broken)
			dst_drop(d, d->broken);
		if (d->in.fd < 0) {
			dst_wait_source(d);
			last = time(NULL);
			continue;
		}
		/* another source on the listening socket: refused at once */
		struct pollfd pfd[3] = { { .fd = d->uffd, .events = POLLIN },
					 { .fd = d->in.fd, .events = POLLIN },
					 { .fd = d->lfd, .events = POLLIN } };
		/* Over TLS a read may have taken more records off the socket
		 * than it handed out: those bytes are ready though the socket
		 * polls empty. */
		bool buffered = migrate_io_pending(d->in.tls) > 0;
		int rc = poll(pfd, 3, buffered ? 0 : 1000);

		if (rc < 0 && errno != EINTR)
			dst_lost(d, "poll failed");
		if (buffered) {
			pfd[1].revents |= POLLIN;
			rc = rc > 0 ? rc : 1;
		}
		if (rc > 0 && pfd[0].revents)
			dst_faults(d);
		if (rc > 0 && pfd[2].revents)
			migrate_refuse_busy(d->lfd, d->uri);
		if (d->broken)
			continue;
		if (rc > 0 && pfd[1].revents) {
			char name[64];
			const uint8_t *p;
			size_t len;
			struct error e = { 0 };

			if (migrate_read_section(&d->in, name, &p, &len, &e)) {
				char why[300];

				snprintf(why, sizeof(why), "the connection to the source dropped (%.200s)",
					 e.msg);
				dst_drop(d, why);
				continue;
			}
			last = time(NULL);
			if (!strcmp(name, "ram"))
				dst_ram(d, p, len);
			else if (!strcmp(name, "end") && !d->left)
				break;
			else
				dst_drop(d, !strcmp(name, "end") ? "the source ended the stream early" :
					 "the source sent an unexpected section");
			continue;
		}
		if (time(NULL) - last > MIGRATE_IO_TIMEOUT_S)
			dst_drop(d, "nothing from the source for 30 s");
	}
	if (ioctl(d->uffd, UFFDIO_UNREGISTER, &all) < 0)
		log_warn("incoming migration: post-copy: unregistering guest memory: %s",
			 strerror(errno));
	for (;;) {      /* until the source has our last word, or stops coming */
		const char *why = dst_finish(d);

		if (!why)
			break;
		if (d->lfd < 0) {
			log_warn("incoming migration: post-copy: %s (the VM has every page; it runs "
				 "on here)", why);
			break;
		}
		if (dst_linger(d, why))
			break;
	}
	log_info("incoming migration: post-copy done: all %" PRIu64 " missing pages are here (%"
		 PRIu64 " asked for on demand, the rest pushed; %" PRIu64 " holes filled with "
		 "zeros; %u recoveries after a dropped connection); userfaultfd off", d->total,
		 d->demand, d->zero_fills, d->recoveries);
	migrate_io_close(d->in.fd, d->in.tls);
	migrate_in_free(&d->in);
	if (d->lfd >= 0) {
		close(d->lfd);
		if (d->path[0])
			unlink(d->path);
	}
	close(d->uffd);
	free(d->missing);
	free(d->asked);
	free(d);
	return NULL;
}

void migrate_postcopy_held(struct migrate_pc_dst *d, const char *why, int release_fd)
{
	d->broken = why;
	d->release_fd = release_fd;
}

int migrate_postcopy_start(struct migrate_pc_dst *d, struct migrate_in *in, int lfd,
			   const char *uri, const char *unlink_path, unsigned recover_s,
			   struct error *e)
{
	d->in = *in;
	memset(in, 0, sizeof(*in));
	in->fd = -1;
	d->lfd = lfd;
	snprintf(d->uri, sizeof(d->uri), "%s", uri ? uri : "");
	snprintf(d->path, sizeof(d->path), "%s", unlink_path ? unlink_path : "");
	d->recover_s = recover_s;
	if (pthread_create(&d->thread, NULL, dst_thread, d)) {
		*in = d->in;
		d->lfd = -1;
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: cannot start its "
				 "thread");
	}
	pthread_detach(d->thread);
	log_info("incoming migration: post-copy: the VM runs with %" PRIu64 " pages still at the "
		 "source%s", d->total, lfd >= 0 ? "; if the connection drops, it waits for the "
		 "source to reconnect" : "");
	return 0;
}
