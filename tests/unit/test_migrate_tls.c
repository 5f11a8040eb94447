/*
 * test_migrate_tls.c - live migration over TLS (state/migrate_tls.c) and
 * the destination's limit on failed handshakes per peer
 * (state/migrate_auth.c), without KVM:
 *   - the TLS 1.3 handshake with the key as PSK succeeds (TLSv1.3,
 *     TLS_AES_256_GCM_SHA384); the source's relay carries a patterned
 *     stream from the "VMM" end to the destination's transport and the
 *     answer back; a tap between the two ends sees none of the pattern;
 *     the VMM end's close ends the relay, and a last word the VMM writes
 *     just before it closes still goes over (the relay ended at the
 *     VMM's hang-up, those bytes unread, in 7 of 8 runs before);
 *   - with another key both ends fail the handshake, each saying so;
 *   - migrate_auth_accept on a tls=on destination: a plain source is told
 *     to use --tls; a peer that failed fail-limit handshakes is refused at
 *     once (another peer is not), and may try again after fail-window;
 *   - --incoming options: tls=on without key-file, unknown options and
 *     bad numbers are refused;
 *   - migrate_link_open, the source's side for shoal migrate and shoald:
 *     with no key it hands back the connection itself; with a key over
 *     TLS (the "SHOALTLS" ask, agreed to) it starts the relay, and the
 *     test's cut at "SHOALACK" first SIGKILLs the process group it names,
 *     then cuts: the stream went over, the "VMM" end sees the connection
 *     end where the acknowledgement would have come, and the destination
 *     never hears the go-ahead.
 * Skipped where libssl.so.3 cannot be loaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/ssl_dl.h"
#include "state/migrate_auth.h"
#include "state/migrate_net.h"
#include "state/migrate_tls.h"

#define PATTERN "SHOAL-TLS-PATTERN-0123456789abcdef"
#define STREAM  (1u << 20)

static uint8_t key_a[MIGRATE_KEY_LEN], key_b[MIGRATE_KEY_LEN];

/* ---- a tap between source and destination: copies both ways, keeps
 * what the source sent ---- */
struct tap {
	int a, b;                    /* the source's side, the destination's */
	uint8_t *seen;
	size_t len, cap;
};

static void *tap_run(void *arg)
{
	struct tap *t = arg;
	uint8_t buf[65536];

	for (;;) {
		struct pollfd p[2] = { { .fd = t->a, .events = POLLIN }, { .fd = t->b, .events = POLLIN } };

		if (poll(p, 2, 10000) <= 0)
			break;
		if (p[0].revents) {
			ssize_t n = read(t->a, buf, sizeof(buf));

			if (n <= 0)
				break;
			if (t->len + (size_t)n > t->cap) {
				t->cap = (t->len + (size_t)n) * 2;
				t->seen = realloc(t->seen, t->cap);
			}
			memcpy(t->seen + t->len, buf, (size_t)n);
			t->len += (size_t)n;
			if (migrate_send_all(t->b, buf, (size_t)n))
				break;
		}
		if (p[1].revents) {
			ssize_t n = read(t->b, buf, sizeof(buf));

			if (n <= 0)
				break;
			if (migrate_send_all(t->a, buf, (size_t)n))
				break;
		}
	}
	shutdown(t->a, SHUT_RDWR);
	shutdown(t->b, SHUT_RDWR);
	return NULL;
}

/* ---- the destination, on a thread ---- */
struct dst {
	int fd;
	const uint8_t *key;
	int rc;
	struct error e;
	char desc[96];
	bool stream_ok, last_ok;
};

static void *dst_run(void *arg)
{
	struct dst *d = arg;
	struct migrate_tls *t;
	uint8_t *buf;
	char word[8];

	d->rc = migrate_tls_accept(d->fd, d->key, &t, &d->e);
	if (d->rc) {
		close(d->fd);
		return NULL;
	}
	migrate_tls_describe(t, d->desc, sizeof(d->desc));
	buf = malloc(STREAM);
	d->stream_ok = buf && migrate_io_recv(d->fd, t, buf, STREAM) == 1;
	for (size_t i = 0; d->stream_ok && i < STREAM; i++)
		d->stream_ok = buf[i] == (uint8_t)PATTERN[i % (sizeof(PATTERN) - 1)];
	free(buf);
	if (migrate_io_send(d->fd, t, "SHOALACK", 8))
		d->stream_ok = false;
	d->last_ok = migrate_io_recv(d->fd, t, word, 8) == 1 && !memcmp(word, "SHOALRUN", 8);
	migrate_io_close(d->fd, t);
	return NULL;
}

static int setup(void **state)
{
	(void)state;
	if (ssl_dl_error()) {
		print_message("skipped: %s\n", ssl_dl_error());
		return 0;
	}
	for (int i = 0; i < MIGRATE_KEY_LEN; i++) {
		key_a[i] = (uint8_t)i;
		key_b[i] = (uint8_t)(i + 1);
	}
	return 0;
}

static void tls_relay(void **state)
{
	int src[2], dst_sp[2], vmm;
	struct tap tap = { 0 };
	struct dst d = { 0 };
	struct migrate_tls *t;
	struct error e = { 0 };
	pthread_t th_tap, th_dst;
	uint8_t *buf = malloc(STREAM);
	char ack[8];

	(void)state;
	if (ssl_dl_error())
		skip();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, src), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, dst_sp), 0);
	tap.a = src[1];
	tap.b = dst_sp[0];
	d.fd = dst_sp[1];
	d.key = key_a;
	assert_int_equal(pthread_create(&th_tap, NULL, tap_run, &tap), 0);
	assert_int_equal(pthread_create(&th_dst, NULL, dst_run, &d), 0);
	assert_int_equal(migrate_tls_connect(src[0], key_a, "test:", &t, &e), 0);
	vmm = migrate_tls_relay_start(t, &e);
	assert_true(vmm >= 0);
	for (size_t i = 0; i < STREAM; i++)
		buf[i] = (uint8_t)PATTERN[i % (sizeof(PATTERN) - 1)];
	assert_int_equal(migrate_send_all(vmm, buf, STREAM), 0);
	assert_int_equal(migrate_recv_all(vmm, ack, 8), 1);
	assert_memory_equal(ack, "SHOALACK", 8);
	/* a last word just before the VMM closes: it must still go over
	 * (the relay ends once it has, not at the VMM's hang-up) */
	assert_int_equal(migrate_send_all(vmm, "SHOALRUN", 8), 0);
	close(vmm);                  /* the VMM is done: the relay ends */
	migrate_tls_relay_end(t, 5000);
	pthread_join(th_dst, NULL);
	pthread_join(th_tap, NULL);
	assert_int_equal(d.rc, 0);
	assert_true(d.stream_ok);
	assert_true(d.last_ok);
	assert_string_equal(d.desc, "TLSv1.3 TLS_AES_256_GCM_SHA384");
	assert_true(tap.len > STREAM);  /* all of it went over, with TLS's framing */
	assert_null(memmem(tap.seen, tap.len, PATTERN, sizeof(PATTERN) - 1));
	assert_null(memmem(tap.seen, tap.len, "SHOALACK", 8));
	free(tap.seen);
	free(buf);
}

static void tls_wrong_key(void **state)
{
	int sp[2];
	struct dst d = { 0 };
	struct migrate_tls *t = NULL;
	struct error e = { 0 };
	pthread_t th;

	(void)state;
	if (ssl_dl_error())
		skip();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	d.fd = sp[1];
	d.key = key_a;
	assert_int_equal(pthread_create(&th, NULL, dst_run, &d), 0);
	assert_int_equal(migrate_tls_connect(sp[0], key_b, "tcp:dst:1", &t, &e), -1);
	close(sp[0]);
	pthread_join(th, NULL);
	assert_null(t);
	assert_int_equal(d.rc, -1);
	print_message("source: %s\ndestination: %s\n", e.msg, d.e.msg);
	assert_non_null(strstr(e.msg, "migration to tcp:dst:1: the TLS handshake failed"));
	assert_non_null(strstr(e.msg, "another key"));
	assert_non_null(strstr(d.e.msg, "the TLS handshake failed"));
	assert_non_null(strstr(d.e.msg, "the source's key is not ours"));
}

/* The destination of migrate_link_open: agrees to the TLS ask, then as
 * dst_run. */
static void *dst_ask_run(void *arg)
{
	struct dst *d = arg;
	char ask[8];

	if (migrate_recv_all(d->fd, ask, 8) != 1 || memcmp(ask, MIGRATE_TLS_ASK, 8) ||
	    migrate_send_all(d->fd, MIGRATE_TLS_OK, 8)) {
		d->rc = -1;
		close(d->fd);
		return NULL;
	}
	return dst_run(d);
}

static void link_open_plain(void **state)
{
	struct migrate_tls *t = (struct migrate_tls *)&t;   /* set to NULL by the call */
	struct error e = { 0 };
	int sp[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(migrate_link_open(sp[0], NULL, false, "unix:x", NULL, &t, &e), sp[0]);
	assert_null(t);
	close(sp[0]);
	close(sp[1]);
}

static void link_open_cut_kill(void **state)
{
	struct migrate_link_cut cut = { "SHOALACK", 0 };
	int src[2], vmm, status = 0;
	struct migrate_tls *t = NULL;
	struct error e = { 0 };
	struct dst d = { 0 };
	pthread_t th;
	uint8_t *buf = malloc(STREAM);
	char ack[8];
	pid_t child;

	(void)state;
	if (ssl_dl_error())
		skip();
	child = fork();         /* the "VMM's monitor": a process group of its own */
	assert_true(child >= 0);
	if (child == 0) {
		setpgid(0, 0);
		for (;;)
			pause();
	}
	setpgid(child, child);
	cut.kill_first = child;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, src), 0);
	d.fd = src[1];
	d.key = key_a;
	assert_int_equal(pthread_create(&th, NULL, dst_ask_run, &d), 0);
	vmm = migrate_link_open(src[0], key_a, true, "test:", &cut, &t, &e);
	assert_true(vmm >= 0);
	assert_non_null(t);
	for (size_t i = 0; i < STREAM; i++)
		buf[i] = (uint8_t)PATTERN[i % (sizeof(PATTERN) - 1)];
	assert_int_equal(migrate_send_all(vmm, buf, STREAM), 0);
	/* the acknowledgement is cut: the connection ends where it was */
	assert_int_not_equal(migrate_recv_all(vmm, ack, 8), 1);
	for (int i = 0; i < 500 && waitpid(child, &status, WNOHANG) == 0; i++)
		usleep(10000);
	if (kill(child, 0) == 0) {  /* not killed: end it, and fail */
		kill(child, SIGTERM);
		waitpid(child, &status, 0);
		fail_msg("the cut did not kill the process group it named");
	}
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	close(vmm);
	migrate_tls_relay_end(t, 5000);
	pthread_join(th, NULL);
	assert_int_equal(d.rc, 0);
	assert_true(d.stream_ok);
	assert_false(d.last_ok);
	free(buf);
}

/* ---- the destination's handshake, per peer ---- */

static char key_path[64];

static int accept_from(const char *ip, const char *send, size_t len, struct error *e,
		       char *answer, size_t asize)
{
	struct sockaddr_in peer = { .sin_family = AF_INET };
	struct migrate_tls *t = NULL;
	int sp[2], rc;
	ssize_t n;

	inet_pton(AF_INET, ip, &peer.sin_addr);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	if (len)
		assert_int_equal(migrate_send_all(sp[0], send, len), 0);
	shutdown(sp[0], SHUT_WR);
	rc = migrate_auth_accept(sp[1], (struct sockaddr *)&peer, &t, e);
	close(sp[1]);
	n = read(sp[0], answer, asize - 1);
	answer[n > 0 ? n : 0] = 0;
	for (ssize_t i = 0; i < n; i++)
		if (!answer[i])
			answer[i] = ' ';
	close(sp[0]);
	assert_null(t);
	return rc;
}

static void incoming_options(void **state)
{
	struct error e = { 0 };
	char a[160];

	(void)state;
	snprintf(key_path, sizeof(key_path), "/tmp/test_migrate_tls.%d.key", (int)getpid());
	FILE *f = fopen(key_path, "w");

	assert_non_null(f);
	fwrite(key_a, 1, sizeof(key_a), f);
	fclose(f);
	chmod(key_path, 0600);
	snprintf(a, sizeof(a), "tcp:127.0.0.1:7000,tls=on");
	assert_int_equal(migrate_incoming_key(a, &e), -1);
	assert_non_null(strstr(e.msg, "tls=on needs key-file"));
	snprintf(a, sizeof(a), "tcp:127.0.0.1:7000,key-file=%s,tls=maybe", key_path);
	assert_int_equal(migrate_incoming_key(a, &e), -1);
	assert_non_null(strstr(e.msg, "tls=maybe is not on or off"));
	snprintf(a, sizeof(a), "tcp:127.0.0.1:7000,key-file=%s,fail-limit=0", key_path);
	assert_int_equal(migrate_incoming_key(a, &e), -1);
	assert_non_null(strstr(e.msg, "fail-limit=0 is not 1 to 1000"));
	snprintf(a, sizeof(a), "tcp:127.0.0.1:7000,key-file=%s,colour=blue", key_path);
	assert_int_equal(migrate_incoming_key(a, &e), -1);
	assert_non_null(strstr(e.msg, "'colour=blue' is not an option"));
	assert_false(migrate_incoming_keyed());
}

static void fail_limit(void **state)
{
	struct error e = { 0 };
	char a[160], ans[600];

	(void)state;
	if (ssl_dl_error())
		skip();
	snprintf(a, sizeof(a), "tcp:127.0.0.1:7000,key-file=%s,tls=on,fail-limit=3,fail-window=1",
		 key_path);
	assert_int_equal(migrate_incoming_key(a, &e), 0);
	assert_string_equal(a, "tcp:127.0.0.1:7000");
	assert_true(migrate_incoming_keyed() && migrate_incoming_tls());
	/* a plain source: told to use TLS (and counted) */
	assert_int_equal(accept_from("10.0.0.1", "SHOALAUT", 8, &e, ans, sizeof(ans)), -1);
	assert_non_null(strstr(ans, "SHOALNAK"));
	assert_non_null(strstr(ans, "only over TLS"));
	assert_non_null(strstr(ans, "--tls"));
	/* garbage, twice: the third failure within the window */
	assert_int_equal(accept_from("10.0.0.1", "GARBAGE!", 8, &e, ans, sizeof(ans)), -1);
	assert_non_null(strstr(e.msg, "no Shoal migration's"));
	assert_int_equal(accept_from("10.0.0.1", "", 0, &e, ans, sizeof(ans)), -1);
	/* refused at once now, whatever it sends */
	assert_int_equal(accept_from("10.0.0.1", MIGRATE_TLS_ASK, 8, &e, ans, sizeof(ans)), -1);
	assert_non_null(strstr(ans, "10.0.0.1 failed 3 handshakes within 1 s: refused for another"));
	assert_null(strstr(ans, MIGRATE_TLS_OK));
	/* another peer is not */
	assert_int_equal(accept_from("10.0.0.2", "GARBAGE!", 8, &e, ans, sizeof(ans)), -1);
	assert_null(strstr(ans, "refused for another"));
	/* after the window, 10.0.0.1 is heard again (its TLS ask is agreed to) */
	usleep(1100 * 1000);
	assert_int_equal(accept_from("10.0.0.1", MIGRATE_TLS_ASK, 8, &e, ans, sizeof(ans)), -1);
	assert_non_null(strstr(ans, MIGRATE_TLS_OK));
	unlink(key_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tls_relay),
		cmocka_unit_test(tls_wrong_key),
		cmocka_unit_test(link_open_plain),
		cmocka_unit_test(link_open_cut_kill),
		cmocka_unit_test(incoming_options),
		cmocka_unit_test(fail_limit),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
