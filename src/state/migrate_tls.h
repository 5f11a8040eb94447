/*
 * migrate_tls.h - a live migration's stream over TLS 1.3 with the
 * migration's key as an external pre-shared key (migrate_tls.c;
 * docs/migration.md, "Encryption"), and the transport that reads and
 * writes a connection plain or through TLS.
 */
#ifndef SHOAL_STATE_MIGRATE_TLS_H
#define SHOAL_STATE_MIGRATE_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "state/migrate_auth.h"

#define MIGRATE_TLS_ASK "SHOALTLS"   /* the source: TLS follows, if you agree */
#define MIGRATE_TLS_OK  "SHOALTOK"   /* the destination: go on with the handshake */
#define MIGRATE_TLS_SUITE "TLS_AES_256_GCM_SHA384"

struct migrate_tls;

/* Load libssl and initialise OpenSSL (reads its configuration): 0, or -1
 * with `e` (EXIT_HOST) saying why.  The destination calls it before its
 * jail and seccomp filters. */
int migrate_tls_load(struct error *e);

/* The destination, on a connection whose source asked for TLS and was
 * told MIGRATE_TLS_OK: the server's handshake with `key` as the PSK (the
 * socket's timeouts bound it).  0 and *t, or -1 with `e` naming why (a
 * wrong key: the source's binder does not verify). */
int migrate_tls_accept(int fd, const uint8_t key[MIGRATE_KEY_LEN], struct migrate_tls **t,
		       struct error *e);

/* The source (shoal migrate, shoald), on the connection it made to `uri`
 * once the destination agreed to TLS: the client's handshake.  0 and *t
 * (which owns `fd` from then on), or -1 with `e` (EXIT_HOST; the caller
 * still owns and closes `fd`). */
int migrate_tls_connect(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			struct migrate_tls **t, struct error *e);

/* The source: a Unix socket pair and a thread that relays between it and
 * the TLS connection, so that the VMM, which gets the returned end, writes
 * the stream in clear to us and never maps libssl nor holds the key.  The
 * VMM's end, or -1 with `e`.  The relay ends when the VMM closes its end
 * (after the migration, or a cancel) or the destination's side fails; it
 * then shuts the other direction down. */
int migrate_tls_relay_start(struct migrate_tls *t, struct error *e);
/* Tests only (shoald's SHOAL_TEST_MIGRATE_CUT_WORD): the relay cuts the
 * connection where `word` (up to 8 bytes, e.g. "SHOALRUN" from the VMM or
 * "SHOALACK" to it) would pass, once: what came before it goes over, the
 * word and the rest do not.  With `kill_first` (> 0;
 * SHOAL_TEST_MIGRATE_KILL_VMM) it SIGKILLs that process group, the source
 * VMM's monitor's, just before the cut: a VMM that dies there. */
struct migrate_link_cut {
	const char *word;           /* NULL: no cut */
	pid_t kill_first;
};

/* The source's side of a migration connection, for shoal migrate and
 * shoald alike: `fd`, connected to the destination VMM at `uri`, proves
 * `key` there (NULL: no key, the stream goes unproven), with TLS 1.3 when
 * `tls` (then a relay thread, *t, which owns `fd`), else with the
 * challenge-response.  The descriptor the source VMM is to write its
 * stream into (`fd` itself, or the relay's end), or -1 with `e`: `fd` is
 * closed and *t NULL.  `cut` (tests; NULL for none) applies with TLS. */
int migrate_link_open(int fd, const uint8_t *key, bool tls, const char *uri,
		      const struct migrate_link_cut *cut, struct migrate_tls **t, struct error *e);
/* Wait for the relay to end (at most `ms`; 0 or less: no wait), stop it,
 * and free everything (the connection is closed). */
void migrate_tls_relay_end(struct migrate_tls *t, int ms);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs. */
const char *migrate_tls_describe(const struct migrate_tls *t, char *buf, size_t size);

/* The transport (the destination's stream code goes through these): with
 * `t` NULL, migrate_send_all/migrate_recv_all on `fd`; else through TLS.
 * Same returns: send 0 or -errno; receive 1, 0 at a clean end before any
 * byte, -1 with errno. */
int migrate_io_send(int fd, struct migrate_tls *t, const void *buf, size_t len);
int migrate_io_recv(int fd, struct migrate_tls *t, void *buf, size_t len);
/* Bytes TLS has already read from fd and not handed out (a poll on fd
 * does not see them); 0 without TLS. */
int migrate_io_pending(struct migrate_tls *t);
/* The destination's refusal: "SHOALNAK", u32 n, n bytes of `msg` (best
 * effort: the peer may be gone). */
void migrate_io_send_nak(int fd, struct migrate_tls *t, const char *msg);
/* Close the destination's connection: TLS's close_notify, then the fd. */
void migrate_io_close(int fd, struct migrate_tls *t);

#endif
