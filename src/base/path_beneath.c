/*
 * path_beneath.c - opening files that somebody less trusted named, without
 * letting the name lead anywhere else (see path_beneath.h).
 *
 * Why: shoald runs VMMs as root for API clients that are not root.  Every
 * file such a client names (a kernel, an initrd, a disk and every backing
 * file its qcow2 header names, a vsock socket) must be one the operator
 * allowed, and checking a name first and opening it later is no check at
 * all: the client owns the directory, and can swap a symbolic link or a
 * backing-file name in between.  So the check is the open itself, done by
 * whoever really opens the file (the VMM, the block layer), with the
 * kernel doing the resolution:
 *
 *   path "/srv/vm/alice/disk.qcow2"        backing "../../etc/shadow"
 *     root "/srv/vm" matches as text         "/srv/vm/alice/../../etc/shadow"
 *     openat2(fd of /srv/vm,                 openat2(fd of /srv/vm,
 *       "alice/disk.qcow2", BENEATH)           "alice/../../etc/shadow")
 *     -> the disk                            -> EXDEV: refused, nothing opened
 *
 * RESOLVE_BENEATH refuses "..", absolute symbolic links and mount jumps
 * that leave the directory, in every component and atomically with the
 * open; RESOLVE_NO_MAGICLINKS refuses /proc/self/root/... and friends.
 * Relative symbolic links that stay inside are followed.  The directory
 * part must be spelled as the operator gave it (or as realpath(3) spells
 * it): the prefix is matched as text, the rest is the kernel's business.
 *
 * Sockets cannot be opened, so a Unix socket is reached through an O_PATH
 * descriptor: bind(2) through its parent directory, connect(2) through the
 * socket itself, both as /proc/self/fd/N paths to descriptors that were
 * resolved beneath a root (the magic link there is ours, not the client's).
 *
 * Confined opens never wait for the other end of a FIFO (O_NONBLOCK for the
 * open only): a named pipe swapped in for a disk must not hang the daemon.
 *
 * Threads: the roots are set once (path_confine) before other threads open
 * anything and only read afterwards; the refusal text is per thread.
 */
#include "base/path_beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/exitcode.h"

/* One allowed directory.  A directory given as a path that is not its
 * realpath is listed twice, both spellings sharing one fd. */
struct path_root {
	char *text;        /* "/srv/vm", no trailing '/'; "" for "/" */
	size_t len;
	int fd;            /* O_PATH directory */
	bool owns_fd;      /* the first of the spellings closes it */
};

static struct path_root roots[2 * PATH_MAX_ROOTS];
static int nroots;
static bool confined;

static __thread char refusal[600];
static __thread bool refused;

const char *path_refusal(void)
{
	return refused ? refusal : NULL;
}

/* Record why a name was refused; errno is EACCES.  Returns -1. */
static int __attribute__((format(printf, 1, 2))) path_refuse(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(refusal, sizeof(refusal), fmt, ap);
	va_end(ap);
	refused = true;
	errno = EACCES;
	return -1;
}

bool path_confined(void)
{
	return confined;
}

/* Drop every root. */
static void path_roots_clear(void)
{
	for (int i = 0; i < nroots; i++) {
		if (roots[i].owns_fd)
			close(roots[i].fd);
		free(roots[i].text);
	}
	nroots = 0;
	confined = false;
}

/* Add one spelling of a root; `text` is normalized here. */
static int path_root_add(const char *text, int fd, bool owns_fd)
{
	struct path_root *r = &roots[nroots];
	size_t len = strlen(text);

	while (len > 0 && text[len - 1] == '/')
		len--;
	r->text = strndup(text, len);
	if (!r->text)
		return -1;
	r->len = len;
	r->fd = fd;
	r->owns_fd = owns_fd;
	nroots++;
	return 0;
}

/* Open one allowed directory and add its spellings. */
static int path_root_open(const char *dir, struct error *e)
{
	char real[PATH_MAX];
	int fd;

	if (dir[0] != '/')
		return error_set(e, EXIT_USAGE, "allowed directory '%s': not an absolute path", dir);
	fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "allowed directory %s: %s", dir, strerror(errno));
	if (path_root_add(dir, fd, true) < 0) {
		close(fd);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	if (realpath(dir, real) && strcmp(real, roots[nroots - 1].text) &&
	    path_root_add(real, fd, false) < 0)
		return error_set(e, EXIT_HOST, "out of memory");
	return 0;
}

int path_confine(const char *const *dirs, int n, struct error *e)
{
	path_roots_clear();
	if (n > PATH_MAX_ROOTS)
		return error_set(e, EXIT_USAGE, "at most %d allowed directories", PATH_MAX_ROOTS);
	for (int i = 0; i < n; i++) {
		if (path_root_open(dirs[i], e)) {
			path_roots_clear();
			return -1;
		}
	}
	confined = n > 0;
	return 0;
}

int path_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned)flags,
		.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = -1;

	for (int tries = 0; tries < 16; tries++) {
		fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
		if (fd >= 0 || errno != EAGAIN)
			break;
	}
	return (int)fd;
}

/* The part of `path` below root `r`, or NULL if `r` does not hold it. */
static const char *path_below(const struct path_root *r, const char *path)
{
	const char *rest = path + r->len;

	if (strncmp(path, r->text, r->len) || (*rest && *rest != '/'))
		return NULL;
	while (*rest == '/')
		rest++;
	return *rest ? rest : ".";
}

/* Open beneath the first root that holds `path` and lets it resolve. */
static int path_open_confined(const char *path, int flags, mode_t mode)
{
	const char *rel, *where = NULL;
	int fd, err = 0;

	if (path[0] != '/')
		return path_refuse("%.200s: not an absolute path", path);
	for (int i = 0; i < nroots; i++) {
		rel = path_below(&roots[i], path);
		if (!rel)
			continue;
		fd = path_openat_beneath(roots[i].fd, rel, flags, mode);
		if (fd >= 0)
			return fd;
		if (errno != EXDEV && errno != ELOOP)
			err = errno;                    /* a plain error wins */
		else if (!err)
			where = roots[i].len ? roots[i].text : "/";
	}
	if (err) {
		errno = err;
		return -1;
	}
	if (where)
		return path_refuse("%.200s leads out of the allowed directory %.200s "
				   "(through '..', an absolute symbolic link, a mount or "
				   "a /proc magic link)", path, where);
	return path_refuse("%.200s is not beneath an allowed directory (%.200s%s)", path,
			   roots[0].len ? roots[0].text : "/", nroots > 1 ? ", ..." : "");
}

int path_open(const char *path, int flags, mode_t mode)
{
	int fd, fl;

	refused = false;
	if (!confined)
		return open(path, flags, mode);
	if (flags & O_PATH)
		return path_open_confined(path, flags, mode);
	fd = path_open_confined(path, flags | O_NONBLOCK, mode);
	if (fd >= 0 && !(flags & O_NONBLOCK) && (fl = fcntl(fd, F_GETFL)) >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

/* Split `path` into its directory (into `dir`) and last component. */
static const char *path_split(const char *path, char *dir, size_t size)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t n = slash ? (size_t)(slash - path) : 1;

	if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || n >= size) {
		errno = EINVAL;
		return NULL;
	}
	if (!slash)
		memcpy(dir, ".", 2);
	else if (n == 0)
		memcpy(dir, "/", 2);
	else
		snprintf(dir, size, "%.*s", (int)n, path);
	return base;
}

/* "/proc/self/fd/N[/base]" into sa; -1 (ENAMETOOLONG) if it does not fit. */
static int path_fd_addr(struct sockaddr_un *sa, int fd, const char *base)
{
	int n;

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	n = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d%s%s", fd,
		     base ? "/" : "", base ? base : "");
	if (n < 0 || (size_t)n >= sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* bind(2) or connect(2) `fd` to /proc/self/fd/PFD[/base]; closes PFD. */
static int path_fd_sockop(int fd, int pfd, const char *base, bool do_bind)
{
	struct sockaddr_un sa;
	int rc = -1, err;

	if (path_fd_addr(&sa, pfd, base) == 0)
		rc = do_bind ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) :
			       connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	err = errno;
	close(pfd);
	errno = err;
	return rc;
}

/* A plain sockaddr for `path`. */
static int path_plain_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

int path_bind_unix(int fd, const char *path)
{
	struct sockaddr_un sa;
	char dir[PATH_MAX];
	const char *base;
	struct stat st;
	int dfd;

	refused = false;
	if (!confined) {
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
		return path_plain_addr(&sa, path) ? -1 : bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	base = path_split(path, dir, sizeof(dir));
	if (!base)
		return -1;
	dfd = path_open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
	if (dfd < 0)
		return -1;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode))
		unlinkat(dfd, base, 0);
	return path_fd_sockop(fd, dfd, base, true);
}

int path_connect_unix(int fd, const char *path)
{
	struct sockaddr_un sa;
	int sfd;

	refused = false;
	if (!confined)
		return path_plain_addr(&sa, path) ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	sfd = path_open(path, O_PATH | O_CLOEXEC, 0);
	if (sfd < 0)
		return -1;
	return path_fd_sockop(fd, sfd, NULL, false);
}
