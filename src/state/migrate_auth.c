/*
 * migrate_auth.c - a live migration's connection is taken only from a
 * source that knows the migration's key (docs/migration.md,
 * "Authentication"; docs/security.md).
 *
 * Without it, over TCP, whoever reached the destination VMM's port first
 * was taken: a third party could feed it a VM of its own making (which
 * then ran with the destination's disks and network), or, connecting
 * first, make the real migration fail.  With `--incoming
 * tcp:HOST:PORT,key-file=FILE` the destination runs, on each connection
 * it accepts, a challenge-response before it reads the stream:
 *
 *   source -> dest   "SHOALAUT", nonce_s (32 random bytes)
 *   dest -> source   "SHOALAUT", nonce_d, HMAC-SHA256(key, "shoal-migrate dst" nonce_s nonce_d)
 *   source -> dest   HMAC-SHA256(key, "shoal-migrate src" nonce_s nonce_d)
 *   dest -> source   "SHOALAOK", or "SHOALNAK", u32 length, the reason
 *
 * then the stream (migrate.c) over the same connection.  Each side's proof
 * covers both nonces, so no recorded answer serves again, and the labels
 * differ, so the destination's proof is no source's.  The source checks
 * the destination's proof before it gives its own: it hands its VM only
 * to a destination that knows the key.  The source side runs in the
 * process that connects (shoal migrate, shoald), before the socket is
 * handed to the VMM, which never sees the key.
 *
 * Invariants: a connection that fails the handshake (wrong proof, the
 * stream without one, garbage, silence for MIGRATE_AUTH_TIMEOUT_S) is
 * told why and closed, and the destination goes on waiting for another
 * (its VM is untouched: nothing of the stream was read); the source's VM
 * runs on, since its VMM never got the socket.  Proofs are compared in
 * constant time.  The key is 32 bytes from a file that only its owner may
 * read; it lives in this process's memory only.
 *
 * Not done: the stream itself is neither encrypted nor integrity-
 * protected after the handshake (its sections carry XXH3 checksums,
 * which catch damage, not tampering); someone who can read or rewrite
 * the packets between the hosts sees the guest's memory and could take
 * over the authenticated connection.  Use a network between the hosts
 * that only they reach, or a tunnel.
 */
#include "state/migrate_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto_dl.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "state/migrate_net.h"

#define NONCE 32
#define MAC   32

static uint8_t g_key[MIGRATE_KEY_LEN];
static bool g_keyed;

/* ---- keys ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int migrate_key_from_hex(const char *hex, uint8_t key[MIGRATE_KEY_LEN])
{
	if (!hex || strlen(hex) != 2 * MIGRATE_KEY_LEN)
		return -1;
	for (int i = 0; i < MIGRATE_KEY_LEN; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void migrate_key_hex(const uint8_t key[MIGRATE_KEY_LEN], char out[2 * MIGRATE_KEY_LEN + 1])
{
	for (int i = 0; i < MIGRATE_KEY_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", key[i]);
}

int migrate_key_new(uint8_t key[MIGRATE_KEY_LEN], struct error *e)
{
	size_t got = 0;

	while (got < MIGRATE_KEY_LEN) {
		ssize_t n = getrandom(key + got, MIGRATE_KEY_LEN - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return error_set(e, EXIT_HOST, "migration key: getrandom: %s", strerror(errno));
		got += (size_t)n;
	}
	return 0;
}

int migrate_key_read(const char *path, uint8_t key[MIGRATE_KEY_LEN], struct error *e)
{
	char buf[2 * MIGRATE_KEY_LEN + 2];
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "migration key file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return error_set(e, EXIT_USAGE, "migration key file %s: not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return error_set(e, EXIT_USAGE, "migration key file %s: group or others may read or "
				 "write it (mode %04o): chmod 600 it", path, (unsigned)(st.st_mode & 07777));
	}
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return error_set(e, EXIT_NOINPUT, "migration key file %s: %s", path, strerror(errno));
	if (n == MIGRATE_KEY_LEN && st.st_size == MIGRATE_KEY_LEN) {
		memcpy(key, buf, MIGRATE_KEY_LEN);
		explicit_bzero(buf, sizeof(buf));
		return 0;
	}
	if (st.st_size == n && (n == 2 * MIGRATE_KEY_LEN ||
				(n == 2 * MIGRATE_KEY_LEN + 1 && buf[2 * MIGRATE_KEY_LEN] == '\n'))) {
		buf[2 * MIGRATE_KEY_LEN] = 0;
		if (!migrate_key_from_hex(buf, key)) {
			explicit_bzero(buf, sizeof(buf));
			return 0;
		}
	}
	explicit_bzero(buf, sizeof(buf));
	return error_set(e, EXIT_USAGE, "migration key file %s: a key is 32 bytes, or 64 hex "
			 "digits (this file has %lld bytes; make one with: head -c 32 /dev/urandom)",
			 path, (long long)st.st_size);
}

int migrate_incoming_key(char *incoming, struct error *e)
{
	char *opt = strstr(incoming, ",key-file=");
	const char *why;

	if (!opt)
		return 0;
	if (migrate_key_read(opt + 10, g_key, e))
		return -1;
	why = crypto_dl_error();      /* load it now: no dlopen under seccomp or in the jail */
	if (why)
		return error_set(e, EXIT_HOST, "--incoming: key-file needs libcrypto: %s", why);
	*opt = 0;
	g_keyed = true;
	return 0;
}

bool migrate_incoming_keyed(void)
{
	return g_keyed;
}

/* ---- the handshake ---- */

/* HMAC-SHA256(key, label nonce_s nonce_d) into `out`: 0 or -1. */
static int proof(const uint8_t key[MIGRATE_KEY_LEN], const char *label, const uint8_t *ns,
		 const uint8_t *nd, uint8_t out[MAC])
{
	uint8_t msg[32 + 2 * NONCE];
	size_t l = strlen(label);
	unsigned int len = 0;

	memset(msg, 0, sizeof(msg));
	memcpy(msg, label, l < 32 ? l : 32);
	memcpy(msg + 32, ns, NONCE);
	memcpy(msg + 32 + NONCE, nd, NONCE);
	if (!HMAC(EVP_sha256(), key, MIGRATE_KEY_LEN, msg, sizeof(msg), out, &len) || len != MAC)
		return -1;
	return 0;
}

static bool same(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

static void io_timeout_ms(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Tell the peer why (SHOALNAK, u32 length, the reason), then read what it
 * still sends, for 300 ms or 8 MiB at most, before the caller closes: a
 * close with unread bytes resets the connection, and the peer's kernel
 * may then drop our reason before the peer reads it. */
static int refuse(int fd, struct error *e, const char *msg)
{
	uint32_t n = (uint32_t)strlen(msg);
	struct timespec t0, t;
	char sink[16384];
	size_t total = 0;

	if (!migrate_send_all(fd, "SHOALNAK", 8) && !migrate_send_all(fd, &n, 4))
		migrate_send_all(fd, msg, n);
	shutdown(fd, SHUT_WR);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	io_timeout_ms(fd, 100);
	for (;;) {
		ssize_t r = recv(fd, sink, sizeof(sink), 0);

		clock_gettime(CLOCK_MONOTONIC, &t);
		if (r <= 0 || (total += (size_t)r) > (8u << 20) ||
		    (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 300)
			break;
	}
	return error_set(e, EXIT_HOST, "%s", msg);
}

int migrate_auth_accept(int fd, struct error *e)
{
	uint8_t in[8 + NONCE], out[8 + NONCE + MAC], mac[MAC], want[MAC];
	const uint8_t *ns = in + 8, *nd = out + 8;
	int rc;

	if (!g_keyed)
		return 0;
	io_timeout_ms(fd, MIGRATE_AUTH_TIMEOUT_S * 1000);
	rc = migrate_recv_all(fd, in, sizeof(in));
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "incoming migration: a connection %s before it proved "
				 "it knows the key", rc == 0 || errno == EPIPE ? "ended" :
				 errno == EAGAIN ? "was silent for 5 s" : strerror(errno));
	if (!memcmp(in, "SHOALMIG", 8))
		return refuse(fd, e, "incoming migration: the source sent its stream without "
			      "authenticating: this destination takes only a source that knows its "
			      "key (shoal migrate --key-file FILE)");
	if (memcmp(in, MIGRATE_AUTH_MAGIC, 8))
		return refuse(fd, e, "incoming migration: a connection began with bytes that are no "
			      "Shoal migration's");
	memcpy(out, MIGRATE_AUTH_MAGIC, 8);
	if (migrate_key_new(out + 8, e) || proof(g_key, "shoal-migrate dst", ns, nd, out + 8 + NONCE) ||
	    proof(g_key, "shoal-migrate src", ns, nd, want))
		return refuse(fd, e, "incoming migration: cannot compute a proof (libcrypto)");
	if (migrate_send_all(fd, out, sizeof(out)))
		return error_set(e, EXIT_HOST, "incoming migration: a connection went away during "
				 "the key's challenge");
	rc = migrate_recv_all(fd, mac, MAC);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "incoming migration: a connection %s before its proof",
				 rc == 0 || errno == EPIPE ? "ended (the source refused our proof?)" :
				 errno == EAGAIN ? "was silent for 5 s" : strerror(errno));
	if (!same(mac, want, MAC))
		return refuse(fd, e, "incoming migration: the source's proof of the key is wrong "
			      "(another key, or not the source meant): refused");
	if (migrate_send_all(fd, MIGRATE_AUTH_OK, 8))
		return error_set(e, EXIT_HOST, "incoming migration: the source went away after its "
				 "proof");
	log_info("incoming migration: the source proved it knows the key (authenticated)");
	return 0;
}

/* The destination's NAK after `word`: its reason, into `e`. */
static int read_refusal(int fd, const char word[8], const char *uri, struct error *e)
{
	uint32_t n;
	char msg[600];

	if (memcmp(word, "SHOALNAK", 8) || migrate_recv_all(fd, &n, 4) <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: the destination answered the key's "
				 "challenge with nonsense", uri);
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	if (migrate_recv_all(fd, msg, n) <= 0)
		n = 0;
	msg[n] = 0;
	for (uint32_t i = 0; i < n; i++)
		if ((unsigned char)msg[i] < 0x20)
			msg[i] = '?';
	return error_set(e, EXIT_HOST, "migration to %s: the destination refused the connection: "
			 "%s%s", uri, n ? msg : "(no reason given)",
			 strstr(msg, "not a Shoal migration") ? " (it asks for no key: was it started "
			 "with --incoming ...,key-file=FILE?)" : "");
}

int migrate_auth_connect(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			 struct error *e)
{
	uint8_t out[8 + NONCE], in[8 + NONCE + MAC], mac[MAC], want[MAC];
	const uint8_t *ns = out + 8, *nd = in + 8;
	int rc;

	memcpy(out, MIGRATE_AUTH_MAGIC, 8);
	if (migrate_key_new(out + 8, e))
		return -1;
	if (migrate_send_all(fd, out, sizeof(out)))
		return error_set(e, EXIT_HOST, "migration to %s: sending the key's challenge: %s", uri,
				 strerror(errno));
	rc = migrate_recv_all(fd, in, 8);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: no answer to the key's challenge "
				 "(%s)", uri, rc == 0 || errno == EPIPE ? "the connection ended" :
				 strerror(errno));
	if (memcmp(in, MIGRATE_AUTH_MAGIC, 8))
		return read_refusal(fd, (const char *)in, uri, e);
	if (migrate_recv_all(fd, in + 8, NONCE + MAC) <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: the destination's answer to the "
				 "key's challenge is cut short", uri);
	if (proof(key, "shoal-migrate dst", ns, nd, want) ||
	    proof(key, "shoal-migrate src", ns, nd, mac))
		return error_set(e, EXIT_HOST, "migration to %s: cannot compute a proof: %s", uri,
				 crypto_dl_error() ?: "HMAC failed");
	if (!same(in + 8 + NONCE, want, MAC))
		return error_set(e, EXIT_HOST, "migration to %s: the destination's proof of the key is "
				 "wrong (another key, or not the destination meant): the VM stays here",
				 uri);
	if (migrate_send_all(fd, mac, MAC))
		return error_set(e, EXIT_HOST, "migration to %s: sending our proof: %s", uri,
				 strerror(errno));
	rc = migrate_recv_all(fd, in, 8);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: no answer to our proof (%s)", uri,
				 rc == 0 || errno == EPIPE ? "the connection ended" : strerror(errno));
	if (memcmp(in, MIGRATE_AUTH_OK, 8))
		return read_refusal(fd, (const char *)in, uri, e);
	return 0;
}
