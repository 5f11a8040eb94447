/*
 * test_migrate_postcopy.c - post-copy's "postcopy" section
 * (state/migrate_postcopy.c) without a VM:
 *   - the list the source writes parses back to the same bitmap and its
 *     count of missing pages, for a page count that is a multiple of 64
 *     and one that is not;
 *   - a destination refuses, with status 84 and its own message, a list of
 *     another page count, one cut short or too long, and a bit set past
 *     the last page (which would name a page outside its RAM);
 *   - the destination's thread against a fake source on a socketpair, on
 *     a 16 MiB memfd (its first 64 pages in play): the stale copies of the missing pages are gone
 *     (the arm punched them); a host thread reading a missing page waits
 *     in the fault and the thread asks for it (SHOALPRQ and its index),
 *     gets it from a "ram" section and wakes the reader with its bytes; a
 *     hole that is not missing reads as zeros at once, unasked; the rest
 *     pushed and "end": the thread answers SHOALFIN with the count it
 *     asked for, and the memory holds the new pages where they were
 *     missing and the old ones elsewhere;
 *   - a source that goes away mid-way, with no listening socket to wait
 *     on: the destination process exits 70 (a child process), never
 *     letting a waiter read zeros;
 *   - the "recover" section: this post-copy's is taken, another size or
 *     identity, or a cut one, refused;
 *   - recovery (test_dst_recover): a drop with a page asked for, a fault
 *     while the source is away, a stranger refused, and the source's new
 *     connection answered with the pages still missing and both requests
 *     again; then the pages, "end", SHOALFIN, the listening path removed.
 * The whole path (faults, requests, pushes, a killed destination) is
 * tests/system/migrate_postcopy.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/log.h"
#include "base/state.h"
#include "state/migrate.h"
#include "state/migrate_net.h"
#include "state/migrate_postcopy.h"

static const uint8_t ID[MIGRATE_PC_ID_LEN] = "0123456789abcdef";

static void roundtrip(uint64_t pages)
{
	uint8_t id[MIGRATE_PC_ID_LEN] = { 0 };
	uint64_t words = (pages + 63) / 64, *src = calloc(words, 8), *got = NULL, missing = 0;
	uint64_t want = 0;
	struct state_writer w;
	struct error e = { 0 };

	assert_non_null(src);
	for (uint64_t p = 0; p < pages; p += 3) {      /* every third page, the last too */
		src[p / 64] |= 1ULL << (p % 64);
		want++;
	}
	if ((pages - 1) % 3) {
		src[(pages - 1) / 64] |= 1ULL << ((pages - 1) % 64);
		want++;
	}
	state_writer_init(&w);
	migrate_postcopy_put_list(&w, src, pages, ID);
	assert_false(w.error);
	assert_int_equal(w.len, 8 + words * 8 + MIGRATE_PC_ID_LEN);
	assert_int_equal(migrate_postcopy_parse(pages * 4096, w.data, w.len, &got, &missing, id,
						&e), 0);
	assert_non_null(got);
	assert_int_equal(missing, want);
	assert_memory_equal(got, src, words * 8);
	assert_memory_equal(id, ID, MIGRATE_PC_ID_LEN);
	free(got);
	free(src);
	state_writer_free(&w);
}

static void test_roundtrip(void **state)
{
	(void)state;
	roundtrip(32768);       /* 128 MiB */
	roundtrip(1000);        /* not a multiple of 64 */
	roundtrip(1);
}

static void expect_refused(uint64_t mem, const struct state_writer *w, const char *words)
{
	uint64_t *bits = (uint64_t *)1, missing = 7;
	uint8_t id[MIGRATE_PC_ID_LEN];
	struct error e = { 0 };

	assert_int_equal(migrate_postcopy_parse(mem, w->data, w->len, &bits, &missing, id, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_null(bits);
	assert_int_equal(missing, 0);
	if (!strstr(e.msg, words))
		fail_msg("'%s' does not say '%s'", e.msg, words);
}

static void test_refused(void **state)
{
	uint64_t bits[2] = { 1, 0 };
	struct state_writer w;

	(void)state;
	state_writer_init(&w);
	migrate_postcopy_put_list(&w, bits, 100, ID);   /* 100 pages: 2 words */
	/* another VM size */
	expect_refused(200 * 4096, &w, "lists 100 pages, this VM has 200");
	/* cut short, and one byte too many */
	w.len -= 1;
	expect_refused(100 * 4096, &w, "is 39 bytes, a list of 100 pages is 40");
	w.len += 1;
	state_put_u8(&w, 0);
	expect_refused(100 * 4096, &w, "is 41 bytes");
	w.len -= 1;
	/* a bit past page 99 */
	w.data[8 + 8 + 4] = 0x10;                      /* bit 36 of word 1: page 100 */
	expect_refused(100 * 4096, &w, "past the end of RAM");
	/* nothing at all */
	w.len = 4;
	expect_refused(100 * 4096, &w, "lists 0 pages");
	state_writer_free(&w);
}

/* The "recover" section: this post-copy's is taken; another VM's size,
 * another identity, a cut or padded one are refused, saying which. */
static void test_recover(void **state)
{
	static const uint8_t other[MIGRATE_PC_ID_LEN] = "0123456789abcdeX";
	struct state_writer w;
	struct error e = { 0 };

	(void)state;
	state_writer_init(&w);
	migrate_postcopy_put_recover(&w, 128u << 20, ID);
	assert_false(w.error);
	assert_int_equal(w.len, 16 + MIGRATE_PC_ID_LEN);
	assert_int_equal(migrate_postcopy_parse_recover(128u << 20, ID, w.data, w.len, &e), 0);
	assert_int_equal(migrate_postcopy_parse_recover(64u << 20, ID, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "128 MiB, this one 64 MiB"));
	assert_int_equal(migrate_postcopy_parse_recover(128u << 20, other, w.data, w.len, &e), -1);
	assert_non_null(strstr(e.msg, "another migration"));
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_int_equal(migrate_postcopy_parse_recover(128u << 20, ID, w.data, w.len - 1, &e), -1);
	assert_non_null(strstr(e.msg, "is 31 bytes, not 32"));
	state_put_u8(&w, 0);
	assert_int_equal(migrate_postcopy_parse_recover(128u << 20, ID, w.data, w.len, &e), -1);
	assert_int_equal(migrate_postcopy_parse_recover(128u << 20, ID, w.data, 4, &e), -1);
	state_writer_free(&w);
}

/* ---- the destination's thread against a fake source ---- */

#define PAGES 64u                        /* the pages in play */
#define PG 4096u
#define MEMSZ (16u << 20)                /* the smallest guest memory */

static uint8_t old_byte(uint64_t p) { return (uint8_t)(0x10 + p); }
static uint8_t new_byte(uint64_t p) { return (uint8_t)(0x80 + p); }

/* >= 0: dst_setup_l starts the thread held for the go-ahead, releasing
 * through this eventfd (migrate_postcopy_held), as after a lost SHOALRUN. */
static int held_fd = -1;

/* Memory whose first 64 pages are each filled with old_byte; the missing ones (every
 * odd page) are to come as new_byte; page 2 is a hole.  Armed and started
 * on one end of a socketpair, the other in *src.  -1: no userfaultfd
 * here (skipped). */
static int dst_setup_l(struct guest_mem *m, int *src, int lfd, const char *path)
{
	uint64_t *bits = calloc(MEMSZ / PG / 64, 8), missing = 0;
	struct migrate_pc_dst *d;
	struct migrate_in in = { .fd = -1 };
	struct error e = { 0 };
	int sv[2];

	assert_non_null(bits);
	assert_int_equal(guest_mem_create(m, MEMSZ, &e), 0);
	for (uint64_t p = 0; p < PAGES; p++) {
		memset(m->host + p * PG, old_byte(p), PG);
		if (p % 2) {
			*bits |= 1ULL << p;
			missing++;
		}
	}
	assert_int_equal(fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * PG, PG), 0);
	if (migrate_postcopy_arm(m, false, false, bits, missing, ID, &d, &e)) {
		print_message("skipped: %s\n", e.msg);
		guest_mem_destroy(m);
		return -1;
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	in.fd = sv[0];
	if (held_fd >= 0) {
		migrate_postcopy_held(d, "the go-ahead did not come (test)", held_fd);
	}
	assert_int_equal(migrate_postcopy_start(d, &in, lfd, "unix:test", path, 10, &e), 0);
	assert_int_equal(in.fd, -1);         /* the thread's now */
	*src = sv[1];
	return 0;
}

/* dst_setup_l with a listening socket at DIR/in.sock (`dir` a mkdtemp
 * template, `path` 108 bytes), as --incoming's.  -1: skipped (no
 * userfaultfd), everything removed. */
static int dst_setup_listening(struct guest_mem *m, int *src, char *dir, char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int lfd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, 108, "%s/in.sock", dir);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	if (!dst_setup_l(m, src, lfd, path))
		return 0;
	close(lfd);
	unlink(path);
	rmdir(dir);
	return -1;
}

static int dst_setup(struct guest_mem *m, int *src)
{
	return dst_setup_l(m, src, -1, NULL);
}

/* The fake source: one "ram" section with pages [first, first+n), new. */
static void send_pages(int fd, uint64_t first, uint64_t n)
{
	struct state_writer w;
	size_t mark;
	uint8_t page[PG];

	state_writer_init(&w);
	mark = migrate_section_begin(&w, "ram");
	state_put_u64(&w, first * PG | MIGRATE_RAM_DATA);
	state_put_u32(&w, (uint32_t)n);
	for (uint64_t p = first; p < first + n; p++) {
		memset(page, new_byte(p), PG);
		state_put_bytes(&w, page, PG);
	}
	migrate_section_end(&w, 0, mark);
	assert_false(w.error);
	assert_int_equal(migrate_send_all(fd, w.data, w.len), 0);
	state_writer_free(&w);
}

/* The fake source's last word: it has SHOALFIN. */
static void send_bye(int fd)
{
	uint8_t msg[16] = { 0 };

	memcpy(msg, MIGRATE_PC_BYE, 8);
	assert_int_equal(migrate_send_all(fd, msg, sizeof(msg)), 0);
}

struct reader {
	const uint8_t *at;
	uint8_t first, last;
};

static void *read_page(void *arg)
{
	struct reader *r = arg;

	r->first = r->at[0];                 /* waits in the fault until placed */
	r->last = r->at[PG - 1];
	return NULL;
}

/* Every page as the migration leaves it: the missing ones (odd) new,
 * page 2 a hole (zeros), the rest as they were. */
static void check_pages(const struct guest_mem *m)
{
	for (uint64_t p = 0; p < PAGES; p++) {
		uint8_t want = p == 2 ? 0 : p % 2 ? new_byte(p) : old_byte(p);

		if (m->host[p * PG] != want || m->host[p * PG + PG - 1] != want)
			fail_msg("page %u holds 0x%x, not 0x%x", (unsigned)p, m->host[p * PG], want);
	}
}

/* The thread is done: it removed the listening socket's path. */
static void wait_path_gone(const char *path)
{
	for (int i = 0; i < 100 && access(path, F_OK) == 0; i++)
		usleep(10000);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_dst_thread(void **state)
{
	struct guest_mem m;
	struct reader r5, r2;
	pthread_t t5, t2;
	uint8_t msg[16];
	uint64_t arg;
	int src;
	struct state_writer w;
	size_t mark;

	(void)state;
	log_threshold = LOG_ERROR;
	if (dst_setup(&m, &src))
		skip();
	/* a hole, not missing: zeros, and nothing asked */
	r2 = (struct reader){ .at = m.host + 2 * PG };
	assert_int_equal(pthread_create(&t2, NULL, read_page, &r2), 0);
	pthread_join(t2, NULL);
	assert_int_equal(r2.first, 0);
	assert_int_equal(r2.last, 0);
	/* a missing page: asked for, and the reader waits for it */
	r5 = (struct reader){ .at = m.host + 5 * PG, .first = 0xee };
	assert_int_equal(pthread_create(&t5, NULL, read_page, &r5), 0);
	assert_int_equal(migrate_recv_all(src, msg, 16), 1);
	assert_memory_equal(msg, MIGRATE_PC_REQUEST, 8);
	memcpy(&arg, msg + 8, 8);
	assert_int_equal(arg, 5);
	usleep(20000);
	assert_int_equal(r5.first, 0xee);     /* still waiting, not zeros */
	send_pages(src, 5, 1);
	pthread_join(t5, NULL);
	assert_int_equal(r5.first, new_byte(5));
	assert_int_equal(r5.last, new_byte(5));
	/* the rest pushed (page 5 again: skipped), then the end */
	for (uint64_t p = 1; p < PAGES; p += 2)
		send_pages(src, p, 1);
	state_writer_init(&w);
	mark = migrate_section_begin(&w, "end");
	migrate_section_end(&w, 0, mark);
	assert_int_equal(migrate_send_all(src, w.data, w.len), 0);
	state_writer_free(&w);
	assert_int_equal(migrate_recv_all(src, msg, 16), 1);
	assert_memory_equal(msg, MIGRATE_PC_FINISHED, 8);
	memcpy(&arg, msg + 8, 8);
	assert_int_equal(arg, 1);             /* one page asked for */
	send_bye(src);
	check_pages(&m);
	close(src);
	guest_mem_destroy(&m);
}

static void test_dst_source_lost(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct guest_mem m;
		struct reader r;
		int src;

		log_threshold = LOG_ERROR;
		if (dst_setup(&m, &src))
			_exit(77);
		send_pages(src, 1, 1);
		close(src);                       /* the source goes away */
		r = (struct reader){ .at = m.host + 3 * PG };
		read_page(&r);                    /* waits: the process ends first */
		_exit(r.first == new_byte(3) ? 0 : 1);   /* never reached */
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		skip();
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), EXIT_HOST);
}

static void send_end(int fd)
{
	struct state_writer w;
	size_t mark;

	state_writer_init(&w);
	mark = migrate_section_begin(&w, "end");
	migrate_section_end(&w, 0, mark);
	assert_int_equal(migrate_send_all(fd, w.data, w.len), 0);
	state_writer_free(&w);
}

/* The fake source pushes every missing page and ends the stream; the
 * destination's SHOALFIN comes back: its count of pages asked for. */
static uint64_t push_rest_and_end(int fd)
{
	uint8_t word[8];
	uint64_t n;

	for (uint64_t p = 1; p < PAGES; p += 2)
		send_pages(fd, p, 1);
	send_end(fd);
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_FINISHED, 8);
	assert_int_equal(migrate_recv_all(fd, &n, 8), 1);
	return n;
}

/* A new connection to `path`: "SHOALMIG" and a "recover" section of
 * identity `id` (and `mem` bytes). */
static int reconnect(const char *path, uint64_t mem, const uint8_t *id)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct state_writer w;
	size_t mark;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	state_writer_init(&w);
	state_put_bytes(&w, MIGRATE_MAGIC, 8);
	mark = migrate_section_begin(&w, "recover");
	migrate_postcopy_put_recover(&w, mem, id);
	migrate_section_end(&w, 8, mark);
	assert_false(w.error);
	assert_int_equal(migrate_send_all(fd, w.data, w.len), 0);
	state_writer_free(&w);
	return fd;
}

static uint64_t request(int fd)
{
	uint8_t msg[16];
	uint64_t arg;

	assert_int_equal(migrate_recv_all(fd, msg, 16), 1);
	assert_memory_equal(msg, MIGRATE_PC_REQUEST, 8);
	memcpy(&arg, msg + 8, 8);
	return arg;
}

/* Recovery: the connection drops with page 5 asked for; page 7 faults
 * while the source is away; a stranger (another identity) is refused
 * and the thread waits on; the source's new connection gets the list of
 * the pages still missing and both requests again; the pages wake their
 * readers; the rest and "end" finish it and the listening path goes. */
static void test_dst_recover(void **state)
{
	static const uint8_t other[MIGRATE_PC_ID_LEN] = "another-migratio";
	char dir[] = "/tmp/test_pc_recover.XXXXXX", path[108];
	struct guest_mem m;
	struct reader r5, r7;
	pthread_t t5, t7;
	uint64_t want[MEMSZ / PG / 64] = { 0 }, got[MEMSZ / PG / 64], pages, n;
	uint8_t word[8];
	int src, fd;

	(void)state;
	log_threshold = LOG_ERROR;
	if (dst_setup_listening(&m, &src, dir, path))
		skip();
	r5 = (struct reader){ .at = m.host + 5 * PG, .first = 0xee };
	assert_int_equal(pthread_create(&t5, NULL, read_page, &r5), 0);
	assert_int_equal(request(src), 5);
	close(src);                               /* the connection drops */
	usleep(20000);
	r7 = (struct reader){ .at = m.host + 7 * PG, .first = 0xee };
	assert_int_equal(pthread_create(&t7, NULL, read_page, &r7), 0);
	usleep(20000);
	assert_int_equal(r5.first, 0xee);         /* both wait: not zeros */
	assert_int_equal(r7.first, 0xee);
	/* a stranger: refused, and the thread waits on */
	fd = reconnect(path, MEMSZ, other);
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, "SHOALNAK", 8);
	close(fd);
	/* the source again: the missing pages (every odd one of the first 64)
	 * and the two requests once more */
	fd = reconnect(path, MEMSZ, ID);
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_RECOVER, 8);
	assert_int_equal(migrate_recv_all(fd, &pages, 8), 1);
	assert_int_equal(pages, MEMSZ / PG);
	assert_int_equal(migrate_recv_all(fd, got, sizeof(got)), 1);
	want[0] = 0xaaaaaaaaaaaaaaaaULL;
	assert_memory_equal(got, want, sizeof(want));
	assert_int_equal(request(fd), 5);
	assert_int_equal(request(fd), 7);
	send_pages(fd, 5, 1);
	send_pages(fd, 7, 1);
	pthread_join(t5, NULL);
	pthread_join(t7, NULL);
	assert_int_equal(r5.first, new_byte(5));
	assert_int_equal(r7.last, new_byte(7));
	n = push_rest_and_end(fd);
	assert_int_equal(n, 2);                   /* pages 5 and 7 */
	send_bye(fd);
	check_pages(&m);
	wait_path_gone(path);
	close(fd);
	rmdir(dir);
	guest_mem_destroy(&m);
}

/* SHOALFIN lost in a drop: the source never confirms it, so the thread
 * listens on (the VM runs: every page is here); the source reconnects,
 * gets an empty list, sends "end" and hears SHOALFIN again; its
 * SHOALBYE ends the wait and the listening path goes. */
static void test_dst_fin_lost(void **state)
{
	char dir[] = "/tmp/test_pc_finlost.XXXXXX", path[108];
	struct guest_mem m;
	uint64_t none[MEMSZ / PG / 64] = { 0 }, got[MEMSZ / PG / 64], pages;
	uint8_t word[8];
	int src, fd;

	(void)state;
	log_threshold = LOG_ERROR;
	if (dst_setup_listening(&m, &src, dir, path))
		skip();
	for (uint64_t p = 1; p < PAGES; p += 2)
		send_pages(src, p, 1);
	send_end(src);
	assert_int_equal(migrate_recv_all(src, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_FINISHED, 8);
	close(src);                               /* dropped: no SHOALBYE */
	usleep(50000);
	assert_int_equal(access(path, F_OK), 0);  /* it listens on */
	fd = reconnect(path, MEMSZ, ID);
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_RECOVER, 8);
	assert_int_equal(migrate_recv_all(fd, &pages, 8), 1);
	assert_int_equal(pages, MEMSZ / PG);
	assert_int_equal(migrate_recv_all(fd, got, sizeof(got)), 1);
	assert_memory_equal(got, none, sizeof(none));    /* nothing missing */
	send_end(fd);
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_FINISHED, 8);
	assert_int_equal(migrate_recv_all(fd, &pages, 8), 1);
	send_bye(fd);
	wait_path_gone(path);
	check_pages(&m);
	close(fd);
	rmdir(dir);
	guest_mem_destroy(&m);
}

/* The go-ahead lost after the switch: the thread waits for the source as
 * after a drop, and the VM is held (its release eventfd unwritten) through
 * a stranger's refused attempt; the source's recovery releases it (1,
 * once), and the migration finishes as any other. */
static void test_dst_held(void **state)
{
	static const uint8_t other[MIGRATE_PC_ID_LEN] = "another-migratio";
	char dir[] = "/tmp/test_pc_held.XXXXXX", path[108];
	struct guest_mem m;
	uint64_t got[MEMSZ / PG / 64], pages, n = 0;
	uint8_t word[8];
	int src, fd, efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	(void)state;
	log_threshold = LOG_ERROR;
	assert_true(efd >= 0);
	held_fd = efd;
	if (dst_setup_listening(&m, &src, dir, path)) {
		held_fd = -1;
		close(efd);
		skip();
	}
	held_fd = -1;
	assert_int_equal(migrate_recv_all(src, word, 8), 0);   /* dropped: it waits */
	close(src);
	fd = reconnect(path, MEMSZ, other);                    /* a stranger: refused */
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, "SHOALNAK", 8);
	close(fd);
	usleep(20000);
	assert_int_equal(read(efd, &n, 8), -1);                /* still held */
	assert_int_equal(errno, EAGAIN);
	fd = reconnect(path, MEMSZ, ID);                       /* the source is back */
	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, MIGRATE_PC_RECOVER, 8);
	assert_int_equal(migrate_recv_all(fd, &pages, 8), 1);
	assert_int_equal(migrate_recv_all(fd, got, sizeof(got)), 1);
	for (int i = 0; i < 200 && read(efd, &n, 8) != 8; i++)
		usleep(10000);
	assert_int_equal(n, 1);                                /* released, once */
	pages = push_rest_and_end(fd);
	send_bye(fd);
	wait_path_gone(path);
	assert_int_equal(read(efd, &n, 8), -1);                /* and only once */
	check_pages(&m);
	close(fd);
	close(efd);
	rmdir(dir);
	guest_mem_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_recover),
		cmocka_unit_test(test_dst_thread),
		cmocka_unit_test(test_dst_source_lost),
		cmocka_unit_test(test_dst_recover),
		cmocka_unit_test(test_dst_fin_lost),
		cmocka_unit_test(test_dst_held),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
