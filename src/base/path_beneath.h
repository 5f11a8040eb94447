/*
 * path_beneath.h - opening files that somebody less trusted named, only
 * beneath the directories they may use (see path_beneath.c).
 *
 * A process confines itself once, before its threads open anything:
 * path_confine(dirs).  From then on every path_* call resolves a name
 * beneath one of those directories with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS), or refuses with EACCES.  An unconfined process
 * (the default; `shoal run` and `shoal img` as the user runs them) opens
 * names as open(2) would, so the call sites need no second path.
 */
#ifndef SHOAL_BASE_PATH_BENEATH_H
#define SHOAL_BASE_PATH_BENEATH_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/error.h"

#define PATH_MAX_ROOTS 16

/* Confine this process to `dirs` (absolute paths of existing directories;
 * n == 0 lifts the confinement).  Replaces an earlier set.  Not to be
 * called while other threads open files.  0, or -1 with `e`. */
int path_confine(const char *const *dirs, int n, struct error *e);

/* Is this process confined? */
bool path_confined(void);

/* open(2) for a name given by somebody else.  Confined: `path` must be
 * absolute and spelled beneath one of the directories, and the rest of it
 * is resolved without leaving that directory (no "..", absolute symlink or
 * /proc magic link out of it).  Confined or not, an open never waits for a
 * FIFO's other end.  An fd, or -1 with errno (EACCES for a refusal, and
 * path_refusal() says why). */
int path_open(const char *path, int flags, mode_t mode);

/* openat2(dirfd, rel, ...) that cannot leave `dirfd`: the building block
 * of path_open, for callers that hold a directory themselves.  Retries the
 * kernel's EAGAIN (a rename raced the lookup).  An fd, or -1 with errno. */
int path_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode);

/* bind(2) or connect(2) the Unix socket `fd` to `path`; confined, through
 * its parent directory opened as path_open would.  bind first removes a
 * stale socket (only a socket) of that name.  0, or -1 with errno. */
int path_bind_unix(int fd, const char *path);
int path_connect_unix(int fd, const char *path);

/* Why the last path_* call on this thread refused ("/etc/shadow is not
 * beneath an allowed directory (/srv/vm)"), or NULL if it did not. */
const char *path_refusal(void);

#endif
