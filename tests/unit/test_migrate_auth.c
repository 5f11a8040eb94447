/*
 * test_migrate_auth.c - the key's challenge-response that opens a live
 * migration's connection (state/migrate_auth.c), over socket pairs:
 *   - key files: 32 bytes or 64 hex digits (and a newline) read; a file
 *     group or others may read, another size, a missing file refused,
 *     each naming the file and why;
 *   - --incoming's ",key-file=FILE" cut off the address, the key kept;
 *   - the right key: both ends accept, and the stream goes on after;
 *   - a source with another key refuses the destination's proof and gives
 *     none of its own; a source whose proof is wrong, one that sends its
 *     stream without any, and garbage are each refused with SHOALNAK and
 *     a reason, over TCP with bytes left unread (the reason still
 *     arrives: no reset before it); a destination that asks for no key is
 *     named as such.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/migrate_auth.h"
#include "state/migrate_net.h"

static const char hexkey[] =
	"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
static uint8_t key[MIGRATE_KEY_LEN];

static char *write_file(const char *data, size_t n, mode_t mode)
{
	static char path[64];
	int fd;

	snprintf(path, sizeof(path), "/tmp/test_migrate_auth.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	fchmod(fd, mode);
	close(fd);
	return path;
}

static void test_key_files(void **state)
{
	uint8_t k[MIGRATE_KEY_LEN], raw[MIGRATE_KEY_LEN];
	char hex[2 * MIGRATE_KEY_LEN + 2], *p;
	struct error e = { 0 };

	(void)state;
	for (int i = 0; i < MIGRATE_KEY_LEN; i++)
		raw[i] = (uint8_t)(i * 7 + 1);
	p = write_file((const char *)raw, sizeof(raw), 0600);
	assert_int_equal(migrate_key_read(p, k, &e), 0);
	assert_memory_equal(k, raw, sizeof(raw));
	unlink(p);

	snprintf(hex, sizeof(hex), "%s\n", hexkey);
	p = write_file(hex, strlen(hex), 0400);
	assert_int_equal(migrate_key_read(p, k, &e), 0);
	assert_memory_equal(k, key, sizeof(k));
	migrate_key_hex(k, hex);
	assert_string_equal(hex, hexkey);
	unlink(p);

	p = write_file(hexkey, strlen(hexkey), 0644);
	assert_int_equal(migrate_key_read(p, k, &e), -1);
	assert_non_null(strstr(e.msg, "chmod 600"));
	assert_non_null(strstr(e.msg, p));
	unlink(p);

	p = write_file("short\n", 6, 0600);
	assert_int_equal(migrate_key_read(p, k, &e), -1);
	assert_non_null(strstr(e.msg, "has 6 bytes"));
	unlink(p);

	memcpy(hex, hexkey, sizeof(hexkey));
	hex[5] = 'g';                   /* 64 characters, not all hex */
	p = write_file(hex, 64, 0600);
	assert_int_equal(migrate_key_read(p, k, &e), -1);
	unlink(p);

	assert_int_equal(migrate_key_read("/nonexistent/key", k, &e), -1);
	assert_non_null(strstr(e.msg, "/nonexistent/key"));
	assert_int_equal(migrate_key_from_hex("abc", k), -1);
	assert_int_equal(migrate_key_new(k, &e), 0);
}

static void test_incoming_option(void **state)
{
	char uri[200], *p;
	struct error e = { 0 };

	(void)state;
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:4444");
	assert_int_equal(migrate_incoming_key(uri, &e), 0);
	assert_false(migrate_incoming_keyed());
	assert_string_equal(uri, "tcp:127.0.0.1:4444");

	p = write_file(hexkey, strlen(hexkey), 0644);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:4444,key-file=%s", p);
	assert_int_equal(migrate_incoming_key(uri, &e), -1);   /* mode 0644 */
	assert_false(migrate_incoming_keyed());
	chmod(p, 0600);
	assert_int_equal(migrate_incoming_key(uri, &e), 0);
	assert_true(migrate_incoming_keyed());
	assert_string_equal(uri, "tcp:127.0.0.1:4444");
	unlink(p);
}

/* ---- the handshake: the destination on a thread ---- */

struct dst {
	int fd, rc;
	struct error e;
	char after[4];          /* what came after the handshake */
};

static void *dst_thread(void *arg)
{
	struct dst *d = arg;
	struct migrate_tls *tls;

	d->rc = migrate_auth_accept(d->fd, NULL, &tls, &d->e);   /* no peer: not counted */
	if (!d->rc && migrate_recv_all(d->fd, d->after, 3) != 1)
		d->rc = 99;
	return NULL;
}

static void start(struct dst *d, int sv[2], pthread_t *t)
{
	memset(d, 0, sizeof(*d));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	d->fd = sv[1];
	assert_int_equal(pthread_create(t, NULL, dst_thread, d), 0);
}

static void finish(struct dst *d, int sv[2], pthread_t t)
{
	close(sv[0]);
	pthread_join(t, NULL);
	close(sv[1]);
}

/* The refusal the destination sent: its reason. */
static void read_nak(int fd, char *msg, size_t size)
{
	char word[8];
	uint32_t n;

	assert_int_equal(migrate_recv_all(fd, word, 8), 1);
	assert_memory_equal(word, "SHOALNAK", 8);
	assert_int_equal(migrate_recv_all(fd, &n, 4), 1);
	assert_true(n < size);
	assert_int_equal(migrate_recv_all(fd, msg, n), 1);
	msg[n] = 0;
}

static void test_right_key(void **state)
{
	struct dst d;
	struct error e = { 0 };
	pthread_t t;
	int sv[2];

	(void)state;
	start(&d, sv, &t);
	assert_int_equal(migrate_auth_connect(sv[0], key, "unix:test", &e), 0);
	assert_int_equal(migrate_send_all(sv[0], "MIG", 3), 0);
	finish(&d, sv, t);
	assert_int_equal(d.rc, 0);
	assert_memory_equal(d.after, "MIG", 3);
}

static void test_wrong_key(void **state)
{
	uint8_t other[MIGRATE_KEY_LEN];
	struct dst d;
	struct error e = { 0 };
	pthread_t t;
	int sv[2];

	(void)state;
	memcpy(other, key, sizeof(other));
	other[31] ^= 1;
	start(&d, sv, &t);
	assert_int_equal(migrate_auth_connect(sv[0], other, "unix:test", &e), -1);
	assert_non_null(strstr(e.msg, "the destination's proof of the key is wrong"));
	finish(&d, sv, t);
	assert_int_equal(d.rc, -1);
	assert_non_null(strstr(d.e.msg, "before its proof"));
}

static void test_wrong_proof(void **state)
{
	uint8_t hello[8 + 32], ans[8 + 32 + 32], bad[32] = { 0 };
	char msg[300];
	struct dst d;
	pthread_t t;
	int sv[2];

	(void)state;
	start(&d, sv, &t);
	memcpy(hello, MIGRATE_AUTH_MAGIC, 8);
	memset(hello + 8, 0x5a, 32);
	assert_int_equal(migrate_send_all(sv[0], hello, sizeof(hello)), 0);
	assert_int_equal(migrate_recv_all(sv[0], ans, sizeof(ans)), 1);
	assert_memory_equal(ans, MIGRATE_AUTH_MAGIC, 8);
	assert_int_equal(migrate_send_all(sv[0], bad, sizeof(bad)), 0);
	read_nak(sv[0], msg, sizeof(msg));
	assert_non_null(strstr(msg, "the source's proof of the key is wrong"));
	finish(&d, sv, t);
	assert_int_equal(d.rc, -1);
	assert_string_equal(d.e.msg, msg);
}

/* A connected TCP pair over 127.0.0.1: a close with unread bytes resets
 * it (unlike a socket pair), which must not lose the refusal. */
static void tcp_pair(int sv[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
	sv[0] = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(sv[0], (struct sockaddr *)&a, sizeof(a)), 0);
	sv[1] = accept(l, NULL, NULL);
	assert_true(sv[1] >= 0);
	close(l);
}

static void refused_first(const char *first, const char *why)
{
	char msg[300];
	struct dst d;
	pthread_t t;
	int sv[2];

	memset(&d, 0, sizeof(d));
	tcp_pair(sv);
	d.fd = sv[1];
	assert_int_equal(pthread_create(&t, NULL, dst_thread, &d), 0);
	/* more than the 40 bytes the destination reads before it refuses */
	assert_int_equal(migrate_send_all(sv[0], first, strlen(first)), 0);
	shutdown(sv[0], SHUT_WR);
	read_nak(sv[0], msg, sizeof(msg));
	assert_non_null(strstr(msg, why));
	finish(&d, sv, t);
	assert_int_equal(d.rc, -1);
}

static void test_no_proof(void **state)
{
	(void)state;
	refused_first("SHOALMIG and then a hello section......., and more of the stream",
		      "without authenticating");
	refused_first("GET / HTTP/1.1\r\nHost: x\r\n\r\n.............. and more garbage",
		      "no Shoal migration's");
}

static void test_unkeyed_destination(void **state)
{
	const char *why = "incoming migration: not a Shoal migration stream (bad magic)";
	uint32_t n = (uint32_t)strlen(why);
	struct error e = { 0 };
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(migrate_send_all(sv[1], "SHOALNAK", 8), 0);
	assert_int_equal(migrate_send_all(sv[1], &n, 4), 0);
	assert_int_equal(migrate_send_all(sv[1], why, n), 0);
	assert_int_equal(migrate_auth_connect(sv[0], key, "tcp:h:1", &e), -1);
	assert_non_null(strstr(e.msg, "refused the connection"));
	assert_non_null(strstr(e.msg, "key-file=FILE"));
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_files),
		cmocka_unit_test(test_incoming_option),
		cmocka_unit_test(test_right_key),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_wrong_proof),
		cmocka_unit_test(test_no_proof),
		cmocka_unit_test(test_unkeyed_destination),
	};

	assert_int_equal(migrate_key_from_hex(hexkey, key), 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
