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
 * With tls=on (migrate_tls.c) the source asks "SHOALTLS" instead and the
 * exchange above gives way to a TLS 1.3 handshake keyed by the same key;
 * a destination with tls=on refuses the exchange in clear, one without
 * refuses "SHOALTLS", each saying so.
 *
 * Failed handshakes, per peer: every failure above (a wrong proof or
 * key, garbage, silence, the wrong one of clear and TLS) counts against
 * the peer's IP address; one that failed fail-limit (5) within
 * fail-window (60) seconds is refused at once, before any crypto, for
 * fail-window seconds, so a prober with a wrong key cannot keep the
 * destination busy, and the real source gets through after the window.
 *
 * Not done: without TLS the stream itself is neither encrypted nor
 * integrity-protected after the handshake (its sections carry XXH3
 * checksums, which catch damage, not tampering); someone who can read or
 * rewrite the packets between the hosts sees the guest's memory and could
 * take over the authenticated connection.  Use tls=on, a network between
 * the hosts that only they reach, or a tunnel.
 */
#include "state/migrate_auth.h"
#include "state/migrate_postcopy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include "state/migrate_tls.h"

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

/* --incoming's options after the address: key-file=FILE, tls=on|off,
 * fail-limit=N, fail-window=SECONDS, recover-timeout=SECONDS,
 * accept-timeout=SECONDS.  A path with a comma cannot be given. */
static bool g_tls;
static unsigned g_fail_limit = MIGRATE_FAIL_LIMIT, g_fail_window = MIGRATE_FAIL_WINDOW_S;
static unsigned g_recover_s = MIGRATE_RECOVER_TIMEOUT_S;   /* post-copy: migrate_postcopy.c */
static unsigned g_accept_s;                                 /* 0: wait for the source forever */

static int incoming_opt(const char *opt, const char **key_file, int *tls, struct error *e)
{
	const char *v = strchr(opt, '=');
	char *end;
	long n;

	if (!v || v == opt)
		return error_set(e, EXIT_USAGE, "--incoming: '%s' is not an option (key-file=FILE, "
				 "tls=on|off, fail-limit=N, fail-window=SECONDS, recover-timeout=SECONDS, "
				 "accept-timeout=SECONDS)", opt);
	v++;
	if (!strncmp(opt, "key-file=", 9)) {
		*key_file = v;
		return 0;
	}
	if (!strncmp(opt, "tls=", 4)) {
		if (strcmp(v, "on") && strcmp(v, "off"))
			return error_set(e, EXIT_USAGE, "--incoming: tls=%s is not on or off", v);
		*tls = !strcmp(v, "on");
		return 0;
	}
	n = strtol(v, &end, 10);
	if (!strncmp(opt, "fail-limit=", 11)) {
		if (!*v || *end || n < 1 || n > 1000)
			return error_set(e, EXIT_USAGE, "--incoming: fail-limit=%s is not 1 to 1000", v);
		g_fail_limit = (unsigned)n;
		return 0;
	}
	if (!strncmp(opt, "fail-window=", 12)) {
		if (!*v || *end || n < 1 || n > 86400)
			return error_set(e, EXIT_USAGE, "--incoming: fail-window=%s is not 1 to 86400 "
					 "seconds", v);
		g_fail_window = (unsigned)n;
		return 0;
	}
	if (!strncmp(opt, "recover-timeout=", 16)) {
		if (!*v || *end || n < 0 || n > 86400)
			return error_set(e, EXIT_USAGE, "--incoming: recover-timeout=%s is not 0 (no "
					 "recovery) to 86400 seconds", v);
		g_recover_s = (unsigned)n;
		return 0;
	}
	if (!strncmp(opt, "accept-timeout=", 15)) {
		if (!*v || *end || n < 0 || n > 86400)
			return error_set(e, EXIT_USAGE, "--incoming: accept-timeout=%s is not 0 (wait "
					 "forever) to 86400 seconds", v);
		g_accept_s = (unsigned)n;
		return 0;
	}
	return error_set(e, EXIT_USAGE, "--incoming: '%s' is not an option (key-file=FILE, "
			 "tls=on|off, fail-limit=N, fail-window=SECONDS, recover-timeout=SECONDS, "
				 "accept-timeout=SECONDS)", opt);
}

int migrate_incoming_key(char *incoming, struct error *e)
{
	static const char *const names[] = { ",key-file=", ",tls=", ",fail-limit=", ",fail-window=",
					     ",recover-timeout=", ",accept-timeout=" };
	char *opts = NULL, *save = NULL, *tok, *copy;
	const char *key_file = NULL, *why;
	int tls = 0, rc = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *o = strstr(incoming, names[i]);

		if (o && (!opts || o < opts))
			opts = o;
	}
	if (!opts)
		return 0;
	copy = strdup(opts + 1);
	if (!copy)
		return error_set(e, EXIT_HOST, "--incoming: out of memory");
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save))
		rc = incoming_opt(tok, &key_file, &tls, e);
	if (!rc && tls && !key_file)
		rc = error_set(e, EXIT_USAGE, "--incoming: tls=on needs key-file=FILE (the key is "
			       "TLS's pre-shared key)");
	if (!rc && key_file && migrate_key_read(key_file, g_key, e))
		rc = -1;
	free(copy);
	if (rc)
		return -1;
	if (!key_file) {             /* fail-limit, the timeouts alone: nothing to count */
		*opts = 0;
		return 0;
	}
	why = crypto_dl_error();      /* load it now: no dlopen under seccomp or in the jail */
	if (why)
		return error_set(e, EXIT_HOST, "--incoming: key-file needs libcrypto: %s", why);
	if (tls && migrate_tls_load(e))  /* libssl too, and OpenSSL's configuration */
		return -1;
	*opts = 0;
	g_keyed = true;
	g_tls = tls;
	return 0;
}

unsigned migrate_incoming_recover_timeout(void)
{
	return g_recover_s;
}

unsigned migrate_incoming_accept_timeout(void)
{
	return g_accept_s;
}

bool migrate_incoming_keyed(void)
{
	return g_keyed;
}

bool migrate_incoming_tls(void)
{
	return g_tls;
}

/* ---- failed handshakes, per peer ----
 *
 * A peer (an IP address; the port is the peer's to change) that failed
 * g_fail_limit handshakes within g_fail_window seconds is refused, without
 * any crypto, for g_fail_window seconds after the last of them.  A Unix
 * peer is not counted (a local process may as well be the source).  The
 * table holds the last PEERS peers seen failing; the oldest goes first. */
#define PEERS 256

static struct peer {
	char addr[INET6_ADDRSTRLEN];
	uint64_t first_ns, last_ns, until_ns;
	unsigned count;
} g_peers[PEERS];

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool peer_name(const struct sockaddr *sa, char out[INET6_ADDRSTRLEN])
{
	if (sa && sa->sa_family == AF_INET)
		return inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out,
				 INET6_ADDRSTRLEN) != NULL;
	if (sa && sa->sa_family == AF_INET6)
		return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out,
				 INET6_ADDRSTRLEN) != NULL;
	return false;
}

static struct peer *peer_find(const char *addr, bool make)
{
	struct peer *old = &g_peers[0];

	for (int i = 0; i < PEERS; i++) {
		if (g_peers[i].addr[0] && !strcmp(g_peers[i].addr, addr))
			return &g_peers[i];
		if (g_peers[i].last_ns < old->last_ns)
			old = &g_peers[i];
	}
	if (!make)
		return NULL;
	memset(old, 0, sizeof(*old));
	snprintf(old->addr, sizeof(old->addr), "%s", addr);
	return old;
}

static void peer_failed(const char *addr)
{
	uint64_t now = mono_ns(), win = (uint64_t)g_fail_window * 1000000000ULL;
	struct peer *p;

	if (!addr[0])
		return;
	p = peer_find(addr, true);
	if (!p->count || now - p->first_ns > win) {
		p->first_ns = now;
		p->count = 0;
	}
	p->last_ns = now;
	if (++p->count >= g_fail_limit) {
		p->until_ns = now + win;
		p->count = 0;
		log_warn("incoming migration: %s failed %u handshakes within %u s: refused for %u s",
			 addr, g_fail_limit, g_fail_window, g_fail_window);
	}
}

/* /ms left of a peer's refusal, 0 when it may try. */
static uint64_t peer_refused_ms(const char *addr)
{
	struct peer *p = addr[0] ? peer_find(addr, false) : NULL;
	uint64_t now = mono_ns();

	return p && p->until_ns > now ? (p->until_ns - now) / 1000000 + 1 : 0;
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

/* The handshake on a connection: 0 (and *tls with TLS) or -1 with `e`. */
static int handshake(int fd, struct migrate_tls **tls, struct error *e)
{
	uint8_t in[8 + NONCE], out[8 + NONCE + MAC], mac[MAC], want[MAC];
	const uint8_t *ns = in + 8, *nd = out + 8;
	char desc[96];
	int rc;

	io_timeout_ms(fd, MIGRATE_AUTH_TIMEOUT_S * 1000);
	rc = migrate_recv_all(fd, in, 8);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "incoming migration: a connection %s before it proved "
				 "it knows the key", rc == 0 || errno == EPIPE ? "ended" :
				 errno == EAGAIN ? "was silent for 5 s" : strerror(errno));
	if (!memcmp(in, "SHOALMIG", 8))
		return refuse(fd, e, g_tls ? "incoming migration: the source sent its stream in clear: "
			      "this destination takes it only over TLS (tls=on): shoal migrate "
			      "--key-file FILE --tls" : "incoming migration: the source sent its stream "
			      "without authenticating: this destination takes only a source that knows "
			      "its key (shoal migrate --key-file FILE)");
	if (g_tls && !memcmp(in, MIGRATE_AUTH_MAGIC, 8))
		return refuse(fd, e, "incoming migration: the source asked for the key's challenge in "
			      "clear: this destination takes the stream only over TLS (tls=on): shoal "
			      "migrate --key-file FILE --tls");
	if (!g_tls && !memcmp(in, MIGRATE_TLS_ASK, 8))
		return refuse(fd, e, "incoming migration: the source asks for TLS, which this "
			      "destination was not started with (--incoming ADDR,key-file=FILE,tls=on)");
	if (g_tls && !memcmp(in, MIGRATE_TLS_ASK, 8)) {
		if (migrate_send_all(fd, MIGRATE_TLS_OK, 8))
			return error_set(e, EXIT_HOST, "incoming migration: a connection went away "
					 "before its TLS handshake");
		if (migrate_tls_accept(fd, g_key, tls, e))
			return -1;
		log_info("incoming migration: the source proved it knows the key (TLS handshake: "
			 "%s)", migrate_tls_describe(*tls, desc, sizeof(desc)));
		return 0;
	}
	if (memcmp(in, MIGRATE_AUTH_MAGIC, 8))
		return refuse(fd, e, "incoming migration: a connection began with bytes that are no "
			      "Shoal migration's");
	rc = migrate_recv_all(fd, in + 8, NONCE);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "incoming migration: a connection %s before it proved "
				 "it knows the key", rc == 0 || errno == EPIPE ? "ended" :
				 errno == EAGAIN ? "was silent for 5 s" : strerror(errno));
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

int migrate_auth_accept(int fd, const struct sockaddr *peer, struct migrate_tls **tls,
			struct error *e)
{
	char addr[INET6_ADDRSTRLEN] = "";
	uint64_t ms;

	*tls = NULL;
	if (!g_keyed)
		return 0;
	if (!peer_name(peer, addr))
		addr[0] = 0;
	ms = peer_refused_ms(addr);
	if (ms) {
		char msg[300];

		snprintf(msg, sizeof(msg), "incoming migration: %s failed %u handshakes within %u s: "
			 "refused for another %llu s (a wrong key? fail-limit=, fail-window=)", addr,
			 g_fail_limit, g_fail_window, (unsigned long long)(ms + 999) / 1000);
		io_timeout_ms(fd, 100);
		return refuse(fd, e, msg);
	}
	if (!handshake(fd, tls, e))
		return 0;
	peer_failed(addr);
	return -1;
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
			 strstr(msg, "not a Shoal migration") || strstr(msg, "SHOALTLS") ?
			 " (it asks for no key: was it started with --incoming ...,key-file=FILE?)" : "");
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

int migrate_auth_connect_tls(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			     struct migrate_tls **t, struct error *e)
{
	char in[8];
	int rc;

	*t = NULL;
	if (migrate_send_all(fd, MIGRATE_TLS_ASK, 8))
		return error_set(e, EXIT_HOST, "migration to %s: asking for TLS: %s", uri,
				 strerror(errno));
	rc = migrate_recv_all(fd, in, 8);
	if (rc <= 0)
		return error_set(e, EXIT_HOST, "migration to %s: no answer to our asking for TLS (%s)",
				 uri, rc == 0 || errno == EPIPE ? "the connection ended" : strerror(errno));
	if (memcmp(in, MIGRATE_TLS_OK, 8))
		return read_refusal(fd, in, uri, e);
	return migrate_tls_connect(fd, key, uri, t, e);
}
