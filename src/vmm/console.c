/*
 * console.c - see console.h.
 *
 * Output is written as the guest produces it (a 16550 has no buffer worth
 * the name, and an interactive user wants each echo at once).  Input is
 * read on the event loop thread.  The saved termios lives in a static so
 * the signal handler and atexit can restore it.
 */
#include "vmm/console.h"
#include "vmm/jail.h"
#include "vmm/mtrace.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/log.h"
#include "base/eventloop.h"
#include "vmm/vm.h"

#define CONSOLE_ESCAPE 0x01   /* Ctrl-A */

#define CONSOLE_RING_SIZE (1u << 20)   /* power of two */

struct console {
	struct vm *vm;
	pthread_mutex_t lock;     /* ring and attached_fd: vCPU vs control threads */
	uint8_t *ring;            /* last CONSOLE_RING_SIZE bytes of output */
	uint64_t ring_total;      /* bytes ever written; ring holds the tail */
	int attached_fd;          /* control-socket client on the console, or -1 */
	bool file_capped;         /* out_fd is a regular file we keep bounded */
	uint64_t file_bytes;      /* bytes in that file now */
	uint64_t file_max;        /* trim it back to the ring's tail past this */
	enum console_kind kind;
	int out_fd;               /* -1 for none */
	bool own_out;             /* we opened out_fd */
	bool in_escape;           /* saw Ctrl-A */
	console_input_fn input_fn;
	void *input_opaque;
};

static struct termios saved_termios;
static volatile sig_atomic_t termios_saved;

void console_restore_terminal(void)
{
	if (termios_saved) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
		termios_saved = 0;
	}
}

static void console_fatal_signal(int sig)
{
	console_restore_terminal();
	jail_die_by_signal(sig);        /* raise(), or through a jail's waiter */
}

static void console_raw_mode(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return;
	t = saved_termios;
	cfmakeraw(&t);
	t.c_oflag |= OPOST | ONLCR;   /* keep "\n" -> "\r\n" for our own messages */
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) < 0)
		return;
	termios_saved = 1;
	atexit(console_restore_terminal);
	signal(SIGTERM, console_fatal_signal);
	signal(SIGHUP, console_fatal_signal);
	signal(SIGQUIT, console_fatal_signal);
}

#define CONSOLE_FILE_MAX (16ull << 20)

/* A console file must not grow without bound under a chatty guest run by
 * the daemon for weeks: past CONSOLE_FILE_MAX (or $SHOAL_CONSOLE_FILE_MAX,
 * a knob for tests) it is rewritten to the last 1 MiB the ring holds. */
static void console_setup_cap(struct console *c)
{
	struct stat st;
	const char *env = getenv("SHOAL_CONSOLE_FILE_MAX");

	if (fstat(c->out_fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	c->file_capped = true;
	c->file_max = env && atoll(env) > 0 ? (uint64_t)atoll(env) : CONSOLE_FILE_MAX;
}

static void console_file_trim(struct console *c)
{
	size_t keep = c->file_max / 2 < CONSOLE_RING_SIZE ? (size_t)(c->file_max / 2) : CONSOLE_RING_SIZE;
	uint8_t *buf = malloc(keep ? keep : 1);
	size_t n;

	if (!buf)
		return;
	n = console_log_copy(c, buf, keep);
	if (pwrite(c->out_fd, buf, n, 0) == (ssize_t)n && ftruncate(c->out_fd, (off_t)n) == 0 &&
	    lseek(c->out_fd, (off_t)n, SEEK_SET) == (off_t)n)
		c->file_bytes = n;
	free(buf);
}

struct console *console_open(struct vm *vm, enum console_kind kind, const char *path,
			     struct error *e)
{
	struct console *c = calloc(1, sizeof(*c));

	if (!c) {
		error_set(e, EXIT_HOST, "out of memory");
		return NULL;
	}
	c->vm = vm;
	c->kind = kind;
	c->out_fd = -1;
	c->attached_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	if (kind == CONSOLE_STDIO) {
		c->out_fd = STDOUT_FILENO;
	} else if (kind == CONSOLE_FILE) {
		c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0) {
			error_set(e, EXIT_NOINPUT, "console file %s: %s", path, strerror(errno));
			free(c);
			return NULL;
		}
		c->own_out = true;
		console_setup_cap(c);
	}
	return c;
}

void console_close(struct console *c)
{
	if (!c)
		return;
	if (c->kind == CONSOLE_STDIO)
		console_restore_terminal();
	if (c->own_out)
		close(c->out_fd);
	pthread_mutex_destroy(&c->lock);
	free(c->ring);
	free(c);
}

/* Keep output in the ring (allocated on first use) and copy it to an
 * attached control client without ever blocking the vCPU on it. */
static void console_record(struct console *c, const uint8_t *p, size_t len)
{
	pthread_mutex_lock(&c->lock);
	if (!c->ring)
		c->ring = malloc(CONSOLE_RING_SIZE);
	for (size_t i = 0; c->ring && i < len; i++)
		c->ring[(c->ring_total + i) & (CONSOLE_RING_SIZE - 1)] = p[i];
	c->ring_total += len;
	if (c->attached_fd >= 0 &&
	    send(c->attached_fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
	    errno != EAGAIN && errno != EWOULDBLOCK)
		c->attached_fd = -1;   /* gone; the control server closes it */
	pthread_mutex_unlock(&c->lock);
}

size_t console_log_copy(struct console *c, uint8_t *out, size_t max)
{
	uint64_t have, start;
	size_t n;

	pthread_mutex_lock(&c->lock);
	have = c->ring_total < CONSOLE_RING_SIZE ? c->ring_total : CONSOLE_RING_SIZE;
	n = have < max ? (size_t)have : max;
	start = c->ring_total - n;
	for (size_t i = 0; c->ring && i < n; i++)
		out[i] = c->ring[(start + i) & (CONSOLE_RING_SIZE - 1)];
	pthread_mutex_unlock(&c->lock);
	return c->ring ? n : 0;
}

int console_set_attached(struct console *c, int fd, bool force)
{
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	if (fd >= 0 && c->attached_fd >= 0 && !force)
		rc = -1;
	else
		c->attached_fd = fd;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int console_attached_fd(struct console *c)
{
	int fd;

	pthread_mutex_lock(&c->lock);
	fd = c->attached_fd;
	pthread_mutex_unlock(&c->lock);
	return fd;
}

void console_input(struct console *c, const uint8_t *buf, int len)
{
	if (c->input_fn)
		c->input_fn(c->input_opaque, buf, len);
}

void console_write(struct console *c, const void *buf, size_t len)
{
	const char *p = buf;

	mtrace_first(MTRACE_CONSOLE, "dst.console");    /* before the write */
	console_record(c, buf, len);
	while (c->out_fd >= 0 && len > 0) {
		ssize_t n = write(c->out_fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* The reader went away (closed pipe): drop output from now on. */
			c->out_fd = -1;
			return;
		}
		p += n;
		len -= (size_t)n;
		c->file_bytes += (uint64_t)n;
	}
	if (c->file_capped && c->file_bytes > c->file_max)
		console_file_trim(c);
}

static const char console_help[] =
	"\r\nshoal console: Ctrl-A x quit, Ctrl-A Ctrl-A send Ctrl-A, Ctrl-A h this help\r\n";

/* Handle the escape sequence; returns true when `ch` was consumed. */
static bool console_escape(struct console *c, uint8_t ch)
{
	if (!c->in_escape) {
		if (ch == CONSOLE_ESCAPE && termios_saved) {
			c->in_escape = true;
			return true;
		}
		return false;
	}
	c->in_escape = false;
	switch (ch) {
	case 'x': case 'X':
		vm_stop(c->vm, EXIT_ESCAPE, "console: quit by Ctrl-A x");
		return true;
	case 'h': case 'H': case '?':
		console_write(c, console_help, sizeof(console_help) - 1);
		return true;
	case CONSOLE_ESCAPE:
		return false;  /* pass one Ctrl-A through */
	default:
		return true;
	}
}

static int console_on_stdin(int fd, uint32_t events, void *opaque)
{
	struct console *c = opaque;
	uint8_t buf[256], out[256];
	ssize_t n = read(fd, buf, sizeof(buf));
	int m = 0;

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0)
		return -1;   /* EOF: stop watching stdin, the guest runs on */
	for (ssize_t i = 0; i < n; i++)
		if (!console_escape(c, buf[i]))
			out[m++] = buf[i];
	if (m && c->input_fn)
		c->input_fn(c->input_opaque, out, m);
	return 0;
}

int console_attach_input(struct console *c, console_input_fn fn, void *opaque)
{
	c->input_fn = fn;
	c->input_opaque = opaque;
	if (c->kind != CONSOLE_STDIO)
		return 0;
	console_raw_mode();
	if (termios_saved)
		log_info("console on this terminal; Ctrl-A x quits, Ctrl-A h for help");
	if (eventloop_add(c->vm->loop, STDIN_FILENO, EPOLLIN, console_on_stdin, c) < 0 &&
	    errno != EPERM)   /* EPERM: stdin is a regular file; no input then */
		log_warn("console: cannot read stdin: %s", strerror(errno));
	return 0;
}
