/*
 * migrate_auth.h - the challenge-response that opens a live migration's
 * connection when the two ends share a key (migrate_auth.c;
 * docs/migration.md, "Authentication").
 */
#ifndef SHOAL_STATE_MIGRATE_AUTH_H
#define SHOAL_STATE_MIGRATE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define MIGRATE_KEY_LEN 32
#define MIGRATE_AUTH_MAGIC "SHOALAUT"   /* both ends' first word */
#define MIGRATE_AUTH_OK    "SHOALAOK"   /* the destination took the source */
#define MIGRATE_AUTH_TIMEOUT_S 5        /* the destination's wait for a proof */
#define MIGRATE_FAIL_LIMIT 5            /* failed handshakes a peer may make ... */
#define MIGRATE_FAIL_WINDOW_S 60        /* ... within this, before it is refused as long */

struct sockaddr;
struct migrate_tls;

/* Read a key file: 32 bytes, or 64 hex digits and an optional newline.
 * Refused: a file group or others may read or write, another size.
 * 0, or -1 with `e` (EXIT_USAGE or EXIT_NOINPUT) naming the file. */
int migrate_key_read(const char *path, uint8_t key[MIGRATE_KEY_LEN], struct error *e);
/* A fresh random key (getrandom); 0 or -1 with `e`. */
int migrate_key_new(uint8_t key[MIGRATE_KEY_LEN], struct error *e);
/* As 64 lowercase hex digits; and back (0, or -1 when not exactly that). */
void migrate_key_hex(const uint8_t key[MIGRATE_KEY_LEN], char out[2 * MIGRATE_KEY_LEN + 1]);
int migrate_key_from_hex(const char *hex, uint8_t key[MIGRATE_KEY_LEN]);

/* The destination, before anything is built: `incoming` is --incoming's
 * value; its options (",key-file=FILE", ",tls=on|off", ",fail-limit=N",
 * ",fail-window=SECONDS", ",recover-timeout=SECONDS",
 * ",accept-timeout=SECONDS") are cut off it (the rest is the address), the
 * key read and libcrypto (with tls=on, libssl) loaded before seccomp and
 * the jail, so that migrate_auth_accept demands the proof.  0, or -1 with
 * `e` (EXIT_USAGE for a bad option, tls=on without a key). */
int migrate_incoming_key(char *incoming, struct error *e);
/* Whether migrate_incoming_key set a key; and TLS. */
bool migrate_incoming_keyed(void);
/* --incoming ...,recover-timeout=SECONDS: how long a destination in
 * post-copy waits for the source to reconnect after a drop (default
 * MIGRATE_RECOVER_TIMEOUT_S, state/migrate_postcopy.h); 0: no recovery
 * (the listening socket closes once the source is accepted). */
unsigned migrate_incoming_recover_timeout(void);
/* --incoming ...,accept-timeout=SECONDS: how long the destination waits
 * for a source that proves it knows the key before it gives up (exit 70,
 * naming the address); 0 (the default): as long as it takes. */
unsigned migrate_incoming_accept_timeout(void);
bool migrate_incoming_tls(void);

/* The destination, on a connection just accepted from `peer`: with no
 * key, 0 at once; else the handshake (MIGRATE_AUTH_TIMEOUT_S at most): 0
 * when the source proved it knows the key (with tls=on, *tls is the TLS
 * session the stream goes through, migrate_tls.h), or -1 with `e` saying
 * why (the source was told, with SHOALNAK and the reason, or a TLS alert)
 * and the caller closes the connection and waits for another.  A TCP peer
 * that failed fail-limit handshakes within fail-window seconds is refused
 * at once for fail-window seconds. */
int migrate_auth_accept(int fd, const struct sockaddr *peer, struct migrate_tls **tls,
			struct error *e);

/* The source (shoal migrate, shoald), on the connection it made to `uri`
 * before it hands it to its VMM: the handshake with `key`.  0 when both
 * ends proved they know it; -1 with `e` (EXIT_HOST) naming the reason:
 * the destination refused our proof, failed its own, or asks for none. */
int migrate_auth_connect(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			 struct error *e);
/* The same with TLS (migrate_tls.c): ask for it ("SHOALTLS"), and on the
 * destination's "SHOALTOK" the TLS 1.3 handshake with `key` as the PSK.
 * 0 and *t (which owns `fd` then), or -1 with `e` (the caller closes
 * `fd`): refused (the reason the destination gave), or the handshake
 * failed (a wrong key). */
int migrate_auth_connect_tls(int fd, const uint8_t key[MIGRATE_KEY_LEN], const char *uri,
			     struct migrate_tls **t, struct error *e);

#endif
