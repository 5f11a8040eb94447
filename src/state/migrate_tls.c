/*
 * migrate_tls.c - a live migration's stream encrypted with TLS 1.3, the
 * migration's key (state/migrate_auth.c) as an external pre-shared key
 * (docs/migration.md, "Encryption"; docs/security.md).
 *
 * With `--incoming tcp:HOST:PORT,key-file=FILE,tls=on` at the destination
 * and `shoal migrate --key-file FILE --tls` at the source (shoald: always
 * over TCP), the connection opens with
 *
 *   source -> dest   "SHOALTLS"
 *   dest -> source   "SHOALTOK", or "SHOALNAK", u32 length, the reason
 *
 * then a TLS 1.3 handshake, psk_dhe_ke (the PSK and an ephemeral ECDHE
 * share: the key authenticates both ends, the ECDHE keeps recorded
 * traffic safe should the key leak later), TLS_AES_256_GCM_SHA384 only,
 * the PSK identity "shoal-migrate", no certificates and no session
 * tickets.  The source's binder proves it knows the key before the
 * destination answers; the destination's Finished proves the same to the
 * source before any of the VM goes.  A wrong key fails the handshake
 * (the destination: "binder does not verify"; the source: an alert).
 * Then the stream (state/migrate.c) goes inside TLS records as it would
 * go in clear; the HMAC challenge of migrate_auth.c is not run (TLS does
 * its job).
 *
 * Where it runs.  The destination VMM reads its key and loads libssl
 * before its jail and seccomp filters (migrate_incoming_key), and takes
 * the stream on its main thread before that thread's filter is installed
 * (cli/run.c: migrate_incoming comes before vm_run): no filter has to
 * allow OpenSSL anything.  The source VMM does not do TLS at all: the
 * process that connects (shoal migrate, shoald) does the handshake, then
 * hands the VMM one end of a Unix socket pair and relays between it and
 * the TLS connection on a thread (migrate_tls_relay_start).  So a source
 * VMM never maps libssl nor holds the key, its filters are unchanged (it
 * writes to a Unix socket as it always may), and the stream code does
 * not know TLS is there.  The cost is one more copy of the stream on the
 * source host (bench/migrate_tls.sh measures it against plain TCP).
 *
 * Invariants: a handshake failure is reported with OpenSSL's reason and
 * the connection is closed; nothing of the stream is read or written
 * before the handshake completed.  The relay never interprets the bytes;
 * it ends when the VMM closes its end or the destination's side fails,
 * and then shuts the other direction down, so the VMM sees an error as it
 * would on a dropped TCP connection (its VM runs on).  The key lives only
 * in this process (struct migrate_tls, wiped when freed).
 */
#include "state/migrate_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/ssl_dl.h"
#include "state/migrate_net.h"

#define IDENTITY "shoal-migrate"
#define RELAY_BUF (256u << 10)

struct migrate_tls {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;                      /* the TCP (or unix:) connection */
	int local;                   /* the relay's end of the pair, -1 */
	uint8_t key[MIGRATE_KEY_LEN];
	bool wrong_identity;         /* the server saw another identity */
	pthread_t thread;
	bool relaying;
	atomic_bool relay_over;      /* the thread ended by itself: all forwarded */
	int stop[2];                 /* a pipe: relay_end asks the thread to stop */
	char cut_word[9];            /* tests: cut the connection where this word would
				      * pass, either way (struct migrate_link_cut); "" */
	pid_t cut_kill;              /* tests: and SIGKILL this process group first; 0 */
};

static const unsigned char suite_id[2] = { 0x13, 0x02 };    /* TLS_AES_256_GCM_SHA384 */

/* OpenSSL writes its socket with write(), not send(MSG_NOSIGNAL): to a
 * peer that closed, that raises SIGPIPE, which would kill a VMM (only a
 * jailed one ignores it) or shoal migrate.  Around each call SIGPIPE is
 * blocked on this thread, and one it raised is taken back (the write has
 * failed with EPIPE, which is what we go by). */
struct pipe_guard {
	sigset_t old;
	bool pending;                /* one was pending before: not ours to take */
};

static void guard_on(struct pipe_guard *g)
{
	sigset_t s, p;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, &g->old);
	g->pending = !sigpending(&p) && sigismember(&p, SIGPIPE);
}

static void guard_off(struct pipe_guard *g)
{
	sigset_t s, p;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	if (!g->pending && !sigpending(&p) && sigismember(&p, SIGPIPE)) {
		struct timespec zero = { 0, 0 };

		sigtimedwait(&s, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int migrate_tls_load(struct error *e)
{
	const char *why = ssl_dl_error();

	if (why)
		return error_set(e, EXIT_HOST, "migration over TLS needs libssl: %s", why);
	return 0;
}

/* OpenSSL's reason for the last failure, or the system's. */
static const char *ssl_reason(char *buf, size_t size, int err)
{
	unsigned long code = ERR_get_error(), next;
	const char *p;

	while ((next = ERR_get_error()))     /* the first is the cause; drain the rest */
		(void)next;
	if (!code) {
		snprintf(buf, size, "%s", err ? strerror(err) : "the connection ended");
		return buf;
	}
	ERR_error_string_n(code, buf, size);
	p = strrchr(buf, ':');               /* "error:0A000...:SSL routines::REASON" */
	if (p && p[1])
		memmove(buf, p + 1, strlen(p + 1) + 1);
	return buf;
}

static SSL_SESSION *psk_session(SSL *ssl)
{
	struct migrate_tls *t = SSL_get_ex_data(ssl, 0);
	const SSL_CIPHER *c = SSL_CIPHER_find(ssl, suite_id);
	SSL_SESSION *s = t && c ? SSL_SESSION_new() : NULL;

	if (s && SSL_SESSION_set1_master_key(s, t->key, MIGRATE_KEY_LEN) &&
	    SSL_SESSION_set_cipher(s, c) && SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION))
		return s;
	if (s)
		SSL_SESSION_free(s);
	return NULL;
}

/* The client offers the PSK (OpenSSL takes the session). */
static int use_psk(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		   SSL_SESSION **sess)
{
	(void)md;                    /* one suite: its digest is the session's */
	*sess = psk_session(ssl);
	if (!*sess)
		return 0;
	*id = (const unsigned char *)IDENTITY;
	*idlen = strlen(IDENTITY);
	return 1;
}

/* The server finds it by its identity (OpenSSL takes the session). */
static int find_psk(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	struct migrate_tls *t = SSL_get_ex_data(ssl, 0);

	*sess = NULL;
	if (idlen != strlen(IDENTITY) || memcmp(id, IDENTITY, idlen)) {
		if (t)
			t->wrong_identity = true;
		return 1;            /* no PSK: the handshake fails (we have no certificate) */
	}
	*sess = psk_session(ssl);
	return *sess ? 1 : 0;
}

static void tls_free(struct migrate_tls *t)
{
	if (!t)
		return;
	if (t->ssl)
		SSL_free(t->ssl);
	if (t->ctx)
		SSL_CTX_free(t->ctx);
	if (t->fd >= 0)
		close(t->fd);
	if (t->local >= 0)
		close(t->local);
	explicit_bzero(t->key, sizeof(t->key));
	free(t);
}

static struct migrate_tls *tls_new(int fd, const uint8_t key[MIGRATE_KEY_LEN], bool server,
				   struct error *e)
{
	struct migrate_tls *t;

	if (migrate_tls_load(e))
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t) {
		error_set(e, EXIT_HOST, "migration over TLS: out of memory");
		return NULL;
	}
	t->fd = fd;
	t->local = t->stop[0] = t->stop[1] = -1;
	memcpy(t->key, key, MIGRATE_KEY_LEN);
	ERR_clear_error();
	t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(t->ctx, MIGRATE_TLS_SUITE))
		goto fail;
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server) {
		SSL_CTX_set_psk_find_session_callback(t->ctx, find_psk);
		SSL_CTX_set_num_tickets(t->ctx, 0);
	} else {
		SSL_CTX_set_psk_use_session_callback(t->ctx, use_psk);
	}
	t->ssl = SSL_new(t->ctx);
	if (!t->ssl || !SSL_set_fd(t->ssl, fd) || !SSL_set_ex_data(t->ssl, 0, t))
		goto fail;
	return t;
fail: {
	char why[256];

	error_set(e, EXIT_HOST, "migration over TLS: cannot set OpenSSL up: %s",
		  ssl_reason(why, sizeof(why), 0));
	t->fd = -1;                  /* the caller's still */
	tls_free(t);
	return NULL;
}
}

const char *migrate_tls_describe(const struct migrate_tls *t, char *buf, size_t size)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

	snprintf(buf, size, "%s %s", SSL_get_version(t->ssl), c ? SSL_CIPHER_get_name(c) : "?");
	return buf;
}

/* Run the handshake of s (server: accept; client: connect).  0 done; -1
 * failed, with why (a timeout on SO_*TIMEO says "timed out" and *err is
 * EAGAIN; otherwise OpenSSL's reason, or errno's for a socket error). */
static int tls_handshake(struct migrate_tls *s, bool server, char *why, size_t whylen, int *err)
{
	struct pipe_guard g;
	int rc, k;

	guard_on(&g);
	rc = server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
	guard_off(&g);
	if (rc == 1)
		return 0;
	*err = errno;
	k = SSL_get_error(s->ssl, rc);
	if (k == SSL_ERROR_WANT_READ || k == SSL_ERROR_WANT_WRITE) {   /* SO_*TIMEO */
		snprintf(why, whylen, "timed out");
		*err = EAGAIN;
	} else {
		ssl_reason(why, whylen, k == SSL_ERROR_SYSCALL ? *err : 0);
	}
	return -1;
}

int migrate_tls_accept(int fd, const uint8_t key[MIGRATE_KEY_LEN], struct migrate_tls **t,
		       struct error *e)
{
	struct migrate_tls *s = tls_new(fd, key, true, e);
	char why[256];
	int err = 0;

	*t = NULL;
	if (!s)
		return -1;
	if (tls_handshake(s, true, why, sizeof(why), &err) < 0) {
		error_set(e, EXIT_HOST, "incoming migration: the TLS handshake failed (%s)%s", why,
			  s->wrong_identity ? ": the source offered no key of ours" :
			  strstr(why, "binder") ? ": the source's key is not ours (another key, or "
			  "not the source meant): refused" : err == EAGAIN ?
			  ": the source was silent for 5 s" : "");
		s->fd = -1;          /* the caller closes it */
		tls_free(s);
		return -1;
	}
	*t = s;
	return 0;
}

int migrate_tls_connect(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			struct migrate_tls **t, struct error *e)
{
	struct migrate_tls *s = tls_new(fd, key, false, e);
	char why[256];
	int err = 0;

	*t = NULL;
	if (!s)
		return -1;
	if (tls_handshake(s, false, why, sizeof(why), &err) < 0) {
		error_set(e, EXIT_HOST, "migration to %s: the TLS handshake failed (%s)%s: the VM "
			  "stays here", uri, why,
			  strstr(why, "decrypt error") || strstr(why, "handshake failure") ||
			  strstr(why, "illegal parameter") ? ": the destination does not take our "
			  "key (another key?)" : strstr(why, "Finished") || strstr(why, "digest") ?
			  ": the destination does not know our key (not the destination meant?)" : "");
		s->fd = -1;
		tls_free(s);
		return -1;
	}
	*t = s;
	return 0;
}

/* ---- the transport ---- */

int migrate_io_send(int fd, struct migrate_tls *t, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!t)
		return migrate_send_all(fd, buf, len);
	while (len) {
		struct pipe_guard g;
		int n;

		guard_on(&g);
		n = SSL_write(t->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
		guard_off(&g);

		if (n <= 0) {
			int err = errno, k = SSL_get_error(t->ssl, n);

			ERR_clear_error();
			if (k == SSL_ERROR_WANT_WRITE || k == SSL_ERROR_WANT_READ)
				return -EAGAIN;      /* the send timeout */
			return k == SSL_ERROR_SYSCALL && err ? -err : -EPIPE;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int migrate_io_recv(int fd, struct migrate_tls *t, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;

	if (!t)
		return migrate_recv_all(fd, buf, len);
	while (got < len) {
		struct pipe_guard g;
		int n;

		guard_on(&g);            /* a read may write: an alert, a key update */
		n = SSL_read(t->ssl, p + got, len - got > INT_MAX ? INT_MAX : (int)(len - got));
		guard_off(&g);

		if (n <= 0) {
			int err = errno, k = SSL_get_error(t->ssl, n);

			ERR_clear_error();
			if (k == SSL_ERROR_ZERO_RETURN || (k == SSL_ERROR_SYSCALL && !err)) {
				if (!got)
					return 0;
				errno = EPIPE;
				return -1;
			}
			errno = k == SSL_ERROR_WANT_READ || k == SSL_ERROR_WANT_WRITE ? EAGAIN :
				k == SSL_ERROR_SYSCALL ? err : EPROTO;   /* EAGAIN: the timeout */
			return -1;
		}
		got += (size_t)n;
	}
	return 1;
}

int migrate_io_pending(struct migrate_tls *t)
{
	return t ? SSL_pending(t->ssl) : 0;
}

void migrate_io_send_nak(int fd, struct migrate_tls *t, const char *msg)
{
	uint32_t n = (uint32_t)strlen(msg);

	if (!migrate_io_send(fd, t, "SHOALNAK", 8) && !migrate_io_send(fd, t, &n, 4))
		migrate_io_send(fd, t, msg, n);
}

void migrate_io_close(int fd, struct migrate_tls *t)
{
	if (t) {
		struct pipe_guard g;

		guard_on(&g);
		SSL_shutdown(t->ssl);
		guard_off(&g);
		ERR_clear_error();
		tls_free(t);         /* closes t->fd, which is fd */
		return;
	}
	if (fd >= 0)
		close(fd);
}

/* ---- the source's relay ---- */

static void nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Tests (struct migrate_link_cut): the length of buf[0..len) to pass on,
 * all of it unless the cut's word is in it: then what comes before the
 * word, and *cut is set (once). */
static size_t cut_before(struct migrate_tls *t, const uint8_t *buf, size_t len, bool *cut)
{
	const uint8_t *w;

	if (!t->cut_word[0] || !(w = memmem(buf, len, t->cut_word, strlen(t->cut_word))))
		return len;
	*cut = true;
	return (size_t)(w - buf);
}

/* Tests: is process `pid` gone, or a zombie (it runs no more)? */
static bool proc_gone(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	bool gone = true;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "re")))
		return true;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[1] == ' ')
		gone = p[2] == 'Z' || p[2] == 'X';
	fclose(f);
	return gone;
}

/* Tests: the bytes before the word went; the connection goes now, as a
 * network that fails would take it (both ends see it end). */
static void cut_now(struct migrate_tls *t, const char *dir, bool *net_eof, bool *net_dead,
		    bool *cut)
{
	if (t->cut_kill > 0) {
		log_warn("migration over TLS: test: killing the source VMM (process group %d) where "
			 "\"%s\" would pass %s the destination (SHOAL_TEST_MIGRATE_KILL_VMM)",
			 (int)t->cut_kill, t->cut_word, dir);
		kill(-t->cut_kill, SIGKILL);
		/* its leader gone or a zombie, and a moment for the rest, before
		 * the cut: the VMM never sees it */
		for (int i = 0; i < 200 && !proc_gone(t->cut_kill); i++)
			usleep(10000);
		usleep(100000);
	}
	log_warn("migration over TLS: test: cutting the connection where \"%s\" would pass %s the "
		 "destination (SHOAL_TEST_MIGRATE_CUT_WORD)", t->cut_word, dir);
	shutdown(t->fd, SHUT_RDWR);
	t->cut_word[0] = '\0';
	*net_eof = *net_dead = true;
	*cut = false;
}

/* VMM -> TLS (up) and TLS -> VMM (down), until the VMM closes its end or
 * asks to stop; the TLS side failing or ending shuts the VMM's side down
 * (it then fails its migration as on a dropped connection). */
static void *relay(void *arg)
{
	struct migrate_tls *t = arg;
	uint8_t *up = malloc(RELAY_BUF), down[16384];
	size_t ulen = 0, uoff = 0, dlen = 0, doff = 0;
	bool vm_eof = false, net_eof = false, net_dead = false, down_shut = false;
	bool w_wants_r = false, w_wants_w = false, r_wants_w = false;
	bool cut_up = false, cut_down = false;   /* tests: cut once these bytes went */
	sigset_t nopipe;

	sigemptyset(&nopipe);        /* this thread's own writes: EPIPE, not a signal */
	sigaddset(&nopipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &nopipe, NULL);
	if (!up)
		goto out;
	nonblock(t->fd);
	nonblock(t->local);
	for (;;) {
		bool moved = false;

		/* up: what the VMM wrote, into TLS records */
		if (uoff < ulen && !net_dead) {
			size_t n = ulen - uoff;
			int k = SSL_write(t->ssl, up + uoff, n > INT_MAX ? INT_MAX : (int)n);

			w_wants_r = w_wants_w = false;
			if (k > 0) {
				uoff += (size_t)k;
				moved = true;
			} else {
				int why = SSL_get_error(t->ssl, k);

				if (why == SSL_ERROR_WANT_WRITE)
					w_wants_w = true;
				else if (why == SSL_ERROR_WANT_READ)
					w_wants_r = true;
				else
					net_dead = true;
				ERR_clear_error();
			}
		}
		if (net_dead)
			uoff = ulen;         /* the VMM's bytes go nowhere now */
		if (uoff == ulen)
			uoff = ulen = 0;
		if (!ulen && !vm_eof) {
			ssize_t n = read(t->local, up, RELAY_BUF);

			if (n > 0) {
				ulen = cut_before(t, up, (size_t)n, &cut_up);
				moved = true;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				vm_eof = true;
			}
		}
		if (cut_up && uoff == ulen)
			cut_now(t, "to", &net_eof, &net_dead, &cut_up);
		if (vm_eof && !ulen)
			break;               /* the VMM is done with the stream */
		/* down: the destination's answers, to the VMM */
		r_wants_w = false;
		if (doff == dlen && !net_eof) {
			int k = SSL_read(t->ssl, down, sizeof(down));

			if (k > 0) {
				dlen = cut_before(t, down, (size_t)k, &cut_down);
				doff = 0;
				moved = true;
			} else {
				int why = SSL_get_error(t->ssl, k);

				if (why == SSL_ERROR_WANT_WRITE)
					r_wants_w = true;
				else if (why != SSL_ERROR_WANT_READ)
					net_eof = true;
				ERR_clear_error();
			}
		}
		if (doff < dlen) {
			ssize_t n = send(t->local, down + doff, dlen - doff, MSG_NOSIGNAL);

			if (n > 0) {
				doff += (size_t)n;
				moved = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				doff = dlen;  /* the VMM is gone: its read side will tell */
			}
		}
		if (cut_down && doff == dlen)
			cut_now(t, "from", &net_eof, &net_dead, &cut_down);
		if (net_eof && doff == dlen && !down_shut) {
			shutdown(t->local, SHUT_WR);     /* the VMM reads the end */
			down_shut = true;
		}
		if (net_eof && !net_dead && uoff == ulen)
			net_dead = net_eof;  /* nothing more goes over a closed connection */
		if (moved)
			continue;
		struct pollfd p[3] = {
			{ .fd = t->fd, .events = (short)((!net_eof && doff == dlen ? POLLIN : 0) |
							 (w_wants_r ? POLLIN : 0) |
							 (w_wants_w || r_wants_w ? POLLOUT : 0)) },
			{ .fd = t->local, .events = (short)((!vm_eof && !ulen ? POLLIN : 0) |
							    (doff < dlen ? POLLOUT : 0)) },
			{ .fd = t->stop[0], .events = POLLIN },
		};

		for (int i = 0; i < 2; i++)
			if (!p[i].events)
				p[i].fd = -1;    /* a hung-up fd we wait on for nothing would spin */

		if (SSL_pending(t->ssl) > 0)
			continue;
		if (poll(p, 3, -1) < 0 && errno != EINTR)
			break;
		if (p[2].revents)
			break;
		if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL) && !(p[0].revents & POLLIN))
			net_eof = net_dead = true;
	}
	if (!net_dead) {
		SSL_shutdown(t->ssl);        /* close_notify: the stream ended here */
		ERR_clear_error();
	}
out:
	free(up);
	shutdown(t->fd, SHUT_RDWR);
	shutdown(t->local, SHUT_RDWR);
	atomic_store(&t->relay_over, true);
	return NULL;
}

int migrate_tls_relay_start(struct migrate_tls *t, struct error *e)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return error_set(e, EXIT_HOST, "migration over TLS: socketpair: %s", strerror(errno));
	if (pipe2(t->stop, O_CLOEXEC) < 0) {
		close(sv[0]);
		close(sv[1]);
		return error_set(e, EXIT_HOST, "migration over TLS: pipe: %s", strerror(errno));
	}
	t->local = sv[0];
	if (pthread_create(&t->thread, NULL, relay, t)) {
		close(sv[1]);
		return error_set(e, EXIT_HOST, "migration over TLS: cannot start the relay's thread");
	}
	t->relaying = true;
	return sv[1];
}

int migrate_link_open(int fd, const uint8_t *key, bool tls, const char *uri,
		      const struct migrate_link_cut *cut, struct migrate_tls **t, struct error *e)
{
	int vfd;

	*t = NULL;
	if (!key)
		return fd;
	if (!tls) {
		if (migrate_auth_connect(fd, key, uri, e)) {
			close(fd);
			return -1;
		}
		return fd;
	}
	if (migrate_auth_connect_tls(fd, key, uri, t, e)) {
		close(fd);
		*t = NULL;
		return -1;
	}
	if (cut && cut->word) {     /* before the relay's thread reads it */
		snprintf((*t)->cut_word, sizeof((*t)->cut_word), "%s", cut->word);
		(*t)->cut_kill = cut->kill_first;
	}
	vfd = migrate_tls_relay_start(*t, e);
	if (vfd < 0) {
		migrate_tls_relay_end(*t, 0);   /* closes fd */
		*t = NULL;
	}
	return vfd;
}

void migrate_tls_relay_end(struct migrate_tls *t, int ms)
{
	if (!t)
		return;
	if (t->relaying) {
		int waited = 0;

		/* The relay ends by itself once the VMM closed its end and all it
		 * wrote went over (the last word, SHOALRUN or SHOALBYE, can come
		 * just before the VMM exits): wait for that, not for the VMM's
		 * hang-up, which comes with those bytes still unread. */
		while (waited < ms && !atomic_load(&t->relay_over)) {
			poll(NULL, 0, 10);
			waited += 10;
		}
		if (write(t->stop[1], "x", 1) < 0)
			log_warn("migration over TLS: cannot stop the relay: %s", strerror(errno));
		pthread_join(t->thread, NULL);
		t->relaying = false;
	}
	if (t->stop[0] >= 0)
		close(t->stop[0]);
	if (t->stop[1] >= 0)
		close(t->stop[1]);
	tls_free(t);
}
