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
 *     pages it asked for) and ends.
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
 * the destination holds the only running VM.  If the connection drops, the
 * VM is lost: the destination says how many pages were missing and exits
 * (70: its vCPUs wait in faults that nothing can serve, and zeros in their
 * place would corrupt the guest silently); the source keeps its copy
 * paused, never resumes it (it is older than what the destination ran),
 * and reports the migration failed with the count of pages never sent.
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
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "state/migrate.h"
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

void migrate_postcopy_put_list(struct state_writer *w, const uint64_t *bits, uint64_t pages)
{
	state_put_u64(w, pages);
	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		state_put_u64(w, bits[i]);
}

int migrate_postcopy_parse(uint64_t mem_size, const uint8_t *p, size_t len, uint64_t **bits,
			   uint64_t *missing, struct error *e)
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
	if (len != 8 + words * 8)
		return error_set(e, EXIT_BADSTATE, "incoming migration: the postcopy section is %zu "
				 "bytes, a list of %" PRIu64 " pages is %" PRIu64, len, pages,
				 8 + words * 8);
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
	*bits = b;
	*missing = n;
	return 0;
}

/* ---- the source ---- */

static int src_gone(struct migrate_pc_src *ps, uint64_t left, const char *why,
		    struct error *e)
{
	char w[400];

	snprintf(w, sizeof(w), "%.399s", why);      /* `why` may be e->msg */
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

int migrate_postcopy_serve(struct migrate_pc_src *ps, struct error *e)
{
	uint64_t left = 0, cursor = 0, arg = 0;
	uint8_t msg[16];
	char word[8];

	for (uint64_t i = 0; i < (ps->pages + 63) / 64; i++)
		left += (uint64_t)__builtin_popcountll(ps->bits[i]);
	log_info("migration to %s: post-copy: the destination runs the VM; %" PRIu64 " pages to "
		 "send", ps->uri, left);
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
			return error_set(e, EXIT_HOST, "migration to %s: post-copy: every page was "
					 "sent, but the destination went away before it said it had them "
					 "all: the VM may be lost there; it stays paused here, not resumed",
					 ps->uri);
		memcpy(word, msg, 8);
		if (!memcmp(word, MIGRATE_PC_FINISHED, 8))
			return 0;
		if (memcmp(word, MIGRATE_PC_REQUEST, 8))
			return src_gone(ps, 0, "the destination answered nonsense", e);
	}
}

/* ---- the destination ---- */

struct migrate_pc_dst {
	struct guest_mem *m;
	int uffd;
	uint64_t *missing, *asked;        /* bitmaps over the pages */
	uint64_t pages, left, total;      /* pages; missing now; missing at the switch */
	uint64_t demand, zero_fills;
	struct migrate_in in;             /* the connection, after the acknowledgement */
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
			 uint64_t missing, struct migrate_pc_dst **out, struct error *e)
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
	d->missing = bits;
	d->pages = m->size / PAGE;
	d->left = d->total = missing;
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
	log_error("incoming migration: post-copy: %s, with %" PRIu64 " of %" PRIu64 " pages still "
		  "missing (their only copy is in the source's memory): the VM cannot run on "
		  "and is stopped", why, d->left, d->total);
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
			memcpy(req, MIGRATE_PC_REQUEST, 8);
			memcpy(req + 8, &page, 8);
			if (migrate_io_send(d->in.fd, d->in.tls, req, sizeof(req)))
				dst_lost(d, "the connection to the source dropped (asking for a page)");
			d->demand++;
		}
	}
}

/* A "ram" section: place each missing page it brings. */
static void dst_ram(struct migrate_pc_dst *d, const uint8_t *p, size_t len)
{
	struct state_reader r;
	struct migrate_ram_rec rec;
	struct error e = { 0 };

	state_reader_init(&r, p, len);
	while (r.pos < r.len) {
		if (migrate_ram_next(&r, d->m->size, &rec, &e))   /* its "incoming migration: " off */
			dst_lost(d, strncmp(e.msg, "incoming migration: ", 20) ? e.msg : e.msg + 20);
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

static void *dst_thread(void *arg)
{
	struct migrate_pc_dst *d = arg;
	struct pollfd pfd[2] = { { .fd = d->uffd, .events = POLLIN },
				 { .fd = d->in.fd, .events = POLLIN } };
	time_t last = time(NULL);
	struct uffdio_range all = { .start = (uintptr_t)d->m->host, .len = d->m->size };
	uint8_t fin[16];

	seccomp_thread_enter(SECCOMP_POSTCOPY);
	for (;;) {
		/* Over TLS a read may have taken more records off the socket
		 * than it handed out: those bytes are ready though the socket
		 * polls empty. */
		bool buffered = migrate_io_pending(d->in.tls) > 0;
		int rc = poll(pfd, 2, buffered ? 0 : 1000);

		if (rc < 0 && errno != EINTR)
			dst_lost(d, "poll failed");
		if (buffered) {
			pfd[1].revents |= POLLIN;
			rc = rc > 0 ? rc : 1;
		}
		if (rc > 0 && pfd[0].revents)
			dst_faults(d);
		if (rc > 0 && pfd[1].revents) {
			char name[64];
			const uint8_t *p;
			size_t len;
			struct error e = { 0 };

			if (migrate_read_section(&d->in, name, &p, &len, &e)) {
				char why[300];

				snprintf(why, sizeof(why), "the connection to the source dropped (%.200s)",
					 e.msg);
				dst_lost(d, why);
			}
			last = time(NULL);
			if (!strcmp(name, "ram"))
				dst_ram(d, p, len);
			else if (!strcmp(name, "end") && !d->left)
				break;
			else
				dst_lost(d, !strcmp(name, "end") ? "the source ended the stream early" :
					 "the source sent an unexpected section");
		}
		if (time(NULL) - last > MIGRATE_IO_TIMEOUT_S)
			dst_lost(d, "nothing from the source for 30 s");
	}
	if (ioctl(d->uffd, UFFDIO_UNREGISTER, &all) < 0)
		log_warn("incoming migration: post-copy: unregistering guest memory: %s",
			 strerror(errno));
	memcpy(fin, MIGRATE_PC_FINISHED, 8);
	memcpy(fin + 8, &d->demand, 8);
	if (migrate_io_send(d->in.fd, d->in.tls, fin, sizeof(fin)))
		log_warn("incoming migration: post-copy: the source went away before our last word "
			 "(the VM has every page; it runs on here)");
	log_info("incoming migration: post-copy done: all %" PRIu64 " missing pages are here (%"
		 PRIu64 " asked for on demand, the rest pushed; %" PRIu64 " holes filled with "
		 "zeros); userfaultfd off", d->total, d->demand, d->zero_fills);
	migrate_io_close(d->in.fd, d->in.tls);
	migrate_in_free(&d->in);
	close(d->uffd);
	free(d->missing);
	free(d->asked);
	free(d);
	return NULL;
}

int migrate_postcopy_start(struct migrate_pc_dst *d, struct migrate_in *in, struct error *e)
{
	d->in = *in;
	memset(in, 0, sizeof(*in));
	in->fd = -1;
	if (pthread_create(&d->thread, NULL, dst_thread, d)) {
		*in = d->in;
		return error_set(e, EXIT_HOST, "incoming migration: post-copy: cannot start its "
				 "thread");
	}
	pthread_detach(d->thread);
	log_info("incoming migration: post-copy: the VM runs with %" PRIu64 " pages still at the "
		 "source", d->total);
	return 0;
}
