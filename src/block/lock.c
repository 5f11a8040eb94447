/*
 * lock.c - image locking, spoken the way QEMU speaks it, so that Shoal and
 * QEMU (qemu-system, qemu-io, qemu-img) keep each other off an image the
 * other is writing.
 *
 * Why: two writers of one qcow2 image each allocate clusters from their
 * own idea of the refcounts and hand out the same cluster twice; even a
 * reader of a qcow2 image that someone else writes follows L2 entries that
 * are rewritten under it.  Nothing in the file format prevents it, so QEMU
 * (since 2.10) takes advisory locks on the image file, and so do we.
 *
 * The scheme (QEMU's block/file-posix.c, "raw_apply_lock_bytes" and
 * "raw_check_lock_bytes"): there are four permissions, numbered 0..3 as in
 * lock.h - consistent read, write, write unchanged, resize.  An opener
 *
 *   - takes a shared (read) lock on byte 100 + n for each permission n it
 *     holds, and on byte 200 + n for each permission n it refuses to share;
 *   - then asks the kernel, for each permission n it holds, whether anybody
 *     else has byte 200 + n locked (somebody refuses it: QEMU says 'Failed
 *     to get "write" lock'), and for each permission n it refuses, whether
 *     anybody else has byte 100 + n (somebody holds it: 'Failed to get
 *     shared "write" lock').  The question is F_OFD_GETLK with a write
 *     lock, which conflicts with any read lock of another holder.
 *
 * Every lock is a shared lock, so any number of openers hold the same byte;
 * only the test is exclusive.  Bytes 0..99 are left alone (libvirt's
 * virtlockd uses byte 0).  Locks past the end of the file are fine: they are
 * advisory and no I/O ever goes there.
 *
 * Invariants:
 *   1. Lock first, test second.  Of two openers racing for the same image,
 *      each has its bytes locked before it tests the other's, so at least
 *      one of them sees the other: both may be refused, never both let in.
 *      A refused lock_set() unlocks what it added, leaving *st as it was.
 *   2. *st is what the kernel holds for this open file description: a bit
 *      is set only after its byte was locked and cleared only after it was
 *      unlocked.
 *   3. The locks are OFD locks (F_OFD_SETLK): they belong to the open file
 *      description, not to the process.  So they last exactly as long as
 *      the fd (closing some other fd of the same file, which drops a
 *      classic POSIX lock, does nothing to them); they conflict between two
 *      opens in one process (commit opens its base twice, and the unit test
 *      plays both sides in one process); and they vanish with the last fd
 *      of the description, at close or at a crash: there are no stale locks
 *      to clean up.  A test through our own fd never sees our own locks.
 *   4. blockdev.c takes the locks after the file is known to be a regular
 *      file or a block device and before the format reads past its magic or
 *      writes anything (a qcow2 open may repair a dirty image), and drops
 *      them after the last flush at close.
 *
 * What Shoal asks for is blockdev.c's policy (open_lock), QEMU's in effect:
 * a writer holds consistent read, write and resize and shares only
 * consistent read and write unchanged (bytes 100, 101, 103, 201, 203, as a
 * QEMU qcow2 writer); a reader holds consistent read and refuses write and
 * resize (100, 201, 203); backing files are readers.  `-U` (force share)
 * and `shoal img`'s readers of raw images share everything (byte 100 only),
 * as qemu-img's do.  docs/block.md has the table and the interplay.
 *
 * QEMU before 6.2 had a fifth permission (graph modification, bytes 104
 * and 204) that 7.2 no longer has; we never take it, which an older QEMU
 * reads as "not held, not refused", the same as from a QEMU 7.2.
 *
 * Threads: none; callers lock and release from the thread that owns the
 * image.  Load: a handful of fcntl calls per image per open.
 */
#include "block/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>

#include "base/exitcode.h"

const char *lock_perm_name(unsigned bit)
{
	switch (bit) {
	case LOCK_PERM_CONSISTENT_READ: return "consistent read";
	case LOCK_PERM_WRITE: return "write";
	case LOCK_PERM_WRITE_UNCHANGED: return "write unchanged";
	case LOCK_PERM_RESIZE: return "resize";
	}
	return "unknown";
}

/* F_OFD_SETLK of `type` (F_RDLCK or F_UNLCK) on `len` bytes at `off`. */
static int byte_lock(int fd, int off, int len, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = len };

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 if another open file description has a lock on byte `off`, 0 if not,
 * or -errno. */
static int byte_taken(int fd, int off)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* Move the bytes of one base from *have to `want`: lock what is missing;
 * with `drop`, unlock what is no longer wanted.  *have tracks every step,
 * so a failure part way leaves it true.  Returns 0, or the failing byte's
 * -errno with *bad set to it. */
static int bytes_move(int fd, int base, unsigned want, unsigned *have, bool drop, int *bad)
{
	for (int n = 0; n < LOCK_NPERMS; n++) {
		unsigned bit = 1u << n;
		int r = 0;

		if ((want & bit) && !(*have & bit)) {
			r = byte_lock(fd, base + n, 1, F_RDLCK);
			if (!r)
				*have |= bit;
		} else if (drop && (*have & bit) && !(want & bit)) {
			r = byte_lock(fd, base + n, 1, F_UNLCK);
			if (!r)
				*have &= ~bit;
		}
		if (r) {
			*bad = base + n;
			return r;
		}
	}
	return 0;
}

/* Both bases at once: see bytes_move. */
static int state_move(int fd, const struct lock_state *want, struct lock_state *st, bool drop,
		      int *bad)
{
	int r = bytes_move(fd, LOCK_BYTE_HELD, want->held, &st->held, drop, bad);

	return r ? r : bytes_move(fd, LOCK_BYTE_UNSHARED, want->unshared, &st->unshared, drop, bad);
}

/* The first permission n of `mask` whose byte base + n another open file
 * description has locked: 1 with *which = n, 0 if none, or -errno with
 * *which = the byte that could not be tested. */
static int first_taken(int fd, int base, unsigned mask, int *which)
{
	for (int n = 0; n < LOCK_NPERMS; n++) {
		int t = (mask & (1u << n)) ? byte_taken(fd, base + n) : 0;

		if (t) {
			*which = t < 0 ? base + n : n;
			return t;
		}
	}
	return 0;
}

/* Test the bytes opposite to `want` (invariant 1's second half), in QEMU's
 * order: what we hold, then what we refuse.  The refusal, or 0. */
static int conflicts(int fd, const char *path, const struct lock_state *want, struct error *e)
{
	int n = 0, t = first_taken(fd, LOCK_BYTE_UNSHARED, want->held, &n);
	const char *name = t > 0 ? lock_perm_name(1u << n) : NULL;

	if (name)
		return error_set(e, EXIT_NOINPUT, "%s: Failed to get \"%s\" lock: another "
				 "process has the image open and does not share \"%s\". Is "
				 "another process using the image?", path, name, name);
	if (!t)
		t = first_taken(fd, LOCK_BYTE_HELD, want->unshared, &n);
	name = t > 0 ? lock_perm_name(1u << n) : NULL;
	if (name)
		return error_set(e, EXIT_NOINPUT, "%s: Failed to get shared \"%s\" lock: "
				 "another process has the image open for \"%s\". Is another "
				 "process using the image?", path, name, name);
	if (t < 0)
		return error_set(e, EXIT_NOINPUT, "%s: cannot test lock byte %d: %s", path, n,
				 strerror(-t));
	return 0;
}

int lock_set(int fd, const char *path, unsigned perm, unsigned shared,
	     struct lock_state *st, struct error *e)
{
	struct lock_state want = { perm & LOCK_PERM_ALL, ~shared & LOCK_PERM_ALL };
	struct lock_state old = *st, both = { old.held | want.held,
					     old.unshared | want.unshared };
	int bad = 0, r = state_move(fd, &both, st, false, &bad);

	if (r)
		error_set(e, EXIT_NOINPUT, "%s: cannot lock byte %d: %s", path, bad,
			  r == -EAGAIN || r == -EACCES ? "another process holds an "
			  "exclusive lock on it" : strerror(-r));
	else
		r = conflicts(fd, path, &want, e);
	if (r) {
		state_move(fd, &old, st, true, &bad);	/* only unlocks */
		return -1;
	}
	state_move(fd, &want, st, true, &bad);		/* only unlocks */
	return 0;
}

void lock_release(int fd, struct lock_state *st)
{
	if (!st->held && !st->unshared)
		return;
	byte_lock(fd, LOCK_BYTE_HELD, LOCK_BYTE_UNSHARED + LOCK_NPERMS - LOCK_BYTE_HELD, F_UNLCK);
	st->held = st->unshared = 0;
}

int lock_query(int fd, struct lock_state *others)
{
	others->held = others->unshared = 0;
	for (int n = 0; n < LOCK_NPERMS; n++) {
		int h = byte_taken(fd, LOCK_BYTE_HELD + n);
		int u = byte_taken(fd, LOCK_BYTE_UNSHARED + n);

		if (h < 0 || u < 0)
			return h < 0 ? h : u;
		others->held |= h ? 1u << n : 0;
		others->unshared |= u ? 1u << n : 0;
	}
	return 0;
}
