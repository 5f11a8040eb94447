/*
 * migrate_net.h - the sockets of a live migration, shared by migrate.c's
 * source and destination (migrate_net.c).  migrate_parse_addr and
 * migrate_connect are in migrate.h.
 */
#ifndef SHOAL_STATE_MIGRATE_NET_H
#define SHOAL_STATE_MIGRATE_NET_H

#include <stddef.h>

#include "base/error.h"
#include "state/migrate.h"

#define MIGRATE_IO_TIMEOUT_S 30       /* a peer silent this long has failed */

/* 30 s send and receive timeouts, and TCP_NODELAY where it applies. */
void migrate_set_timeouts(int fd);
/* A socket listening on `a` (an old unix: socket file is replaced); the
 * descriptor, or -1 with `e`. */
int migrate_addr_listen(const struct migrate_addr *a, const char *uri, struct error *e);
/* Send all `len` bytes: 0 or -errno. */
int migrate_send_all(int fd, const void *buf, size_t len);
/* 1 when all `len` bytes came, 0 at end of stream before any, -1 with
 * errno (EPIPE: the stream ended part way). */
int migrate_recv_all(int fd, void *buf, size_t len);
/* A connection waiting on listening socket `lfd` while a migration is
 * already coming in on `uri` over another: accept it and refuse it at
 * once, with the stream's NAK ("a migration is already coming in on
 * URI"; the source's handshake or stream reads it as the destination's
 * refusal), without waiting on it: what the peer sent so far is read
 * first, so that the close does not reset our answer away.  Logged. */
void migrate_refuse_busy(int lfd, const char *uri);

#endif
