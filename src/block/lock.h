/*
 * lock.h - image locking that QEMU understands: one-byte OFD locks on the
 * image file, one byte per permission held and one per permission refused
 * to others.  The scheme, its invariants and how blockdev.c uses it are in
 * the essay at the top of lock.c.
 */
#ifndef SHOAL_BLOCK_LOCK_H
#define SHOAL_BLOCK_LOCK_H

#include "base/error.h"

/* The permissions, numbered as QEMU numbers its BLK_PERM_* bits: the number
 * of a bit is its offset from each base below.  The numbering is the wire
 * format between processes, so it never changes. */
enum lock_perm {
	LOCK_PERM_CONSISTENT_READ = 1u << 0,	/* reads see data that only this user changes */
	LOCK_PERM_WRITE = 1u << 1,		/* writes that may change what a reader sees */
	LOCK_PERM_WRITE_UNCHANGED = 1u << 2,	/* writes that leave the data as it was */
	LOCK_PERM_RESIZE = 1u << 3,		/* changes the size of the file */
	LOCK_PERM_ALL = (1u << 4) - 1,
};

#define LOCK_NPERMS 4
#define LOCK_BYTE_HELD 100	/* byte 100 + n: permission n is held */
#define LOCK_BYTE_UNSHARED 200	/* byte 200 + n: permission n is refused to others */

/* The bytes one open file description has locked, as two masks of perms. */
struct lock_state {
	unsigned held;		/* bytes LOCK_BYTE_HELD + n */
	unsigned unshared;	/* bytes LOCK_BYTE_UNSHARED + n */
};

/* Hold `perm` on the file behind fd and let others hold only `shared`,
 * from whatever *st says is locked now (zero for a fresh fd).  Refuses with
 * a message naming `path`, the permission and the reason (status 66) when
 * another open file description holds what we refuse or refuses what we
 * hold; *st is then as it was.  Returns 0 or -1. */
int lock_set(int fd, const char *path, unsigned perm, unsigned shared,
	     struct lock_state *st, struct error *e);

/* Drop every lock *st records on fd; *st becomes zero. */
void lock_release(int fd, struct lock_state *st);

/* What the other open file descriptions of fd's file hold and refuse (a
 * byte counts when a write lock on it through fd would conflict).
 * Returns 0 or -errno. */
int lock_query(int fd, struct lock_state *others);

/* "consistent read", "write", "write unchanged", "resize": QEMU's names. */
const char *lock_perm_name(unsigned bit);

#endif
