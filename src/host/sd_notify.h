/*
 * sd_notify.h - tell systemd how the daemon is doing (Type=notify).  See
 * sd_notify.c.
 */
#ifndef SHOAL_HOST_SD_NOTIFY_H
#define SHOAL_HOST_SD_NOTIFY_H

/* Send `state` (e.g. "READY=1\nSTATUS=serving") to $NOTIFY_SOCKET.  0 when
 * sent, 1 when there is no such socket (not run by systemd), -1 with errno
 * on a failure (which a caller logs and survives). */
int sd_notify_send(const char *state);

#endif
