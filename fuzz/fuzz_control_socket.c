/*
 * fuzz_control_socket.c - a hostile client against the control socket's
 * own reading (vmm/control.c): the real listener, accept and reader on a
 * real event loop thread, driven over a Unix socket the way a client
 * would, with the request bytes cut into chunks the input chooses.
 * fuzz_control covers the parser and the commands behind it, one line at
 * a time; this target covers what comes before: line splitting across
 * reads, several lines in one read, the 64 KiB line limit, and
 * descriptors passed with SCM_RIGHTS.
 *
 * The VM is the one fuzz_control builds (a struct vm without KVM, no
 * vCPUs, the builder's devices with a balloon on a fake device host), with
 * an event loop and control_start on a socket in a directory of its own.
 * One extra command, "fuzz-fd", takes the request's descriptor
 * (control_take_fd) and closes it.
 *
 * The input is a list of records, one client connection per input:
 *   u8 c, then
 *     c & 0x80: an oversize run: `{"cmd":"status","pad":"` and 'a's, 65472
 *        + (c & 0x7f) bytes in all, no newline (so the line ends on either
 *        side of the 64 KiB limit, as the records after it say)
 *     else: a chunk of c & 0x3f bytes (0x3f: u16 length first) taken from
 *        the input; with c & 0x40 one descriptor (a pipe's read end) goes
 *        with it as SCM_RIGHTS
 * Each chunk is sent on its own and the harness waits until the reader
 * has taken it off the socket (SIOCOUTQ 0) before the next, so the chunks
 * are the reads the reader sees (a big one arrives as several).  Then the
 * client shuts its side and reads every reply until the VMM closes.
 *
 * Checks, besides crashes, leaks and sanitizer reports:
 *   - every reply is one line of JSON with a boolean "ok";
 *   - the replies are exactly one per '\n' sent, unless a line reached 64
 *     KiB without one: then one per '\n' before it, then the "longer than
 *     64 KiB" refusal, and the connection is closed;
 *   - every passed descriptor is closed by the VMM by the end (the pipe's
 *     write end then sees EPIPE), and the process holds no more
 *     descriptors than before the input;
 *   - nothing hangs (10 s for any step).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/eventloop.h"
#include "base/log.h"
#include "devices/device.h"
#include "vmm/config.h"
#include "vmm/control.h"
#include "vmm/devices.h"
#include "vmm/vm.h"
#include "fuzz_vm.h"

#define LINE_LIMIT   (64 * 1024)          /* CONTROL_LINE_MAX in control.c */
#define OVERSIZE     (LINE_LIMIT - 64)
#define MAX_PIPES    64
#define REPLY_MAX    (32u << 20)        /* 4 KiB of "metrics" lines want ~1 MiB */
#define STEP_NS      (10ull * 1000000000ull)

static struct fake_host *host;
static struct vm *vm;
static char dir[] = "/tmp/shoal-fz-ctl.XXXXXX", path[64];
static char *oversize, *replybuf;
static const char *const refusal = "{\"ok\":false,\"error\":\"request line longer than 64 KiB\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *fuzz_fd_cmd(struct vm *v, json_t *req, void *opaque)
{
	int fd = control_take_fd();

	(void)v;
	(void)req;
	(void)opaque;
	if (fd < 0)
		return json_pack("{s:b, s:s}", "ok", 0, "error", "fuzz-fd: no descriptor came");
	close(fd);
	return json_pack("{s:b}", "ok", 1);
}

static void cleanup(void)
{
	if (vm) {
		/* The loop's thread first: control_stop frees the clients that
		 * thread may be reading from (at exit this raced it: ASan saw a
		 * client used after control_stop freed it). */
		eventloop_stop(vm->loop);
		control_stop(vm);
	}
	rmdir(dir);
}

static void setup(void)
{
	struct vm_config cfg;
	struct error e;
	size_t n;

	log_threshold = LOG_ERROR - 1;   /* quiet */
	signal(SIGPIPE, SIG_IGN);
	vm_config_init(&cfg);
	cfg.balloon = true;
	host = fake_host_new(cfg.memory);
	if (!host || fake_host_pci(host, &e) || devices_create_all(&host->host, &cfg, &e))
		abort();
	vm = fuzz_fake_vm(host, 0);
	vm_config_free(&vm->cfg);
	vm_config_copy(&vm->cfg, &cfg);
	vm_config_free(&cfg);
	bus_init(&vm->iobus, "io");
	bus_init(&vm->mmiobus, "mmio");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/s", dir);
	vm->loop = eventloop_new();
	if (!vm->loop || vm_add_command(vm, "fuzz-fd", fuzz_fd_cmd, NULL) ||
	    control_start(vm, path, &e) || eventloop_start(vm->loop)) {
		fprintf(stderr, "fuzz_control_socket: %s\n", e.msg);
		abort();
	}
	atexit(cleanup);
	n = strlen("{\"cmd\":\"status\",\"pad\":\"");
	oversize = malloc(OVERSIZE + 128);
	if (!oversize)
		abort();
	memset(oversize, 'a', OVERSIZE + 128);
	memcpy(oversize, "{\"cmd\":\"status\",\"pad\":\"", n);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What the client has read back. */
struct replies {
	char *buf;
	size_t len;
	bool eof;
};

/* Read what is there (all of it, until EOF, when `wait`). */
static void drain(int fd, struct replies *r, bool wait)
{
	uint64_t end = now_ns() + STEP_NS;

	while (!r->eof) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, wait ? 100 : 0) == 0) {
			if (!wait)
				return;
			if (now_ns() > end)
				abort();   /* the VMM neither answered nor closed */
			continue;
		}
		if (r->len == REPLY_MAX)
			abort();   /* far more than the requests could ask for */
		n = recv(fd, r->buf + r->len, REPLY_MAX - r->len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			r->eof = true;
			return;
		}
		r->len += (size_t)n;
	}
}

/* Send one chunk (with a descriptor when pfd >= 0) and wait until the
 * reader has taken all of it; false when the VMM has closed. */
static bool send_chunk(int fd, const char *p, size_t len, int pfd, struct replies *r)
{
	uint64_t end = now_ns() + STEP_NS;
	int queued;

	while (len) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} u;
		struct iovec iov = { (void *)p, len };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (pfd >= 0) {
			m.msg_control = u.b;
			m.msg_controllen = sizeof(u.b);
			CMSG_FIRSTHDR(&m)->cmsg_level = SOL_SOCKET;
			CMSG_FIRSTHDR(&m)->cmsg_type = SCM_RIGHTS;
			CMSG_FIRSTHDR(&m)->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(CMSG_FIRSTHDR(&m)), &pfd, sizeof(int));
		}
		n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			drain(fd, r, false);
			if (now_ns() > end)
				abort();
			sched_yield();
			continue;
		}
		if (n <= 0)
			return false;
		pfd = -1;
		p += n;
		len -= (size_t)n;
	}
	while (ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0) {
		drain(fd, r, false);
		if (r->eof)
			return false;
		if (now_ns() > end)
			abort();   /* the reader stopped reading */
		sched_yield();
	}
	return true;
}

/* Every reply line is a JSON object with a boolean "ok"; returns the count. */
static size_t check_replies(const struct replies *r, bool *last_refusal)
{
	size_t n = 0, at = 0;

	*last_refusal = false;
	while (at < r->len) {
		const char *nl = memchr(r->buf + at, '\n', r->len - at);
		json_t *o;

		if (!nl)
			abort();   /* a reply without its newline */
		o = json_loadb(r->buf + at, (size_t)(nl - (r->buf + at)), 0, NULL);
		if (!json_is_object(o) || !json_is_boolean(json_object_get(o, "ok")))
			abort();
		json_decref(o);
		*last_refusal = (size_t)(nl - (r->buf + at)) == strlen(refusal) &&
				!memcmp(r->buf + at, refusal, strlen(refusal));
		at = (size_t)(nl - r->buf) + 1;
		n++;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct replies r = { 0 };
	int wends[MAX_PIPES], npipes = 0, fd, fds_before;
	size_t at = 0, newlines = 0, line = 0, got;
	bool open = true, dropped = false, refused;

	if (!vm)
		setup();
	atomic_store(&vm->stopping, false);
	atomic_store(&vm->pause_requested, false);
	fds_before = fuzz_count_fds();
	if (!replybuf && !(replybuf = malloc(REPLY_MAX)))
		abort();
	r.buf = replybuf;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		abort();
	while (at < size && open) {
		uint8_t c = data[at++];
		const char *p;
		size_t len;
		int pfd = -1;

		if (c & 0x80) {
			p = oversize;
			len = OVERSIZE + (c & 0x7f);
		} else {
			len = c & 0x3f;
			if (len == 0x3f) {
				if (at + 2 > size)
					break;
				len = (size_t)(data[at] | data[at + 1] << 8);
				at += 2;
			}
			if (len > size - at)
				len = size - at;
			p = (const char *)data + at;
			at += len;
			if (c & 0x40 && len && npipes < MAX_PIPES) {
				int pp[2];

				if (pipe2(pp, O_CLOEXEC))
					abort();
				pfd = pp[0];
				wends[npipes++] = pp[1];
			}
		}
		/* What the reader must make of these bytes. */
		for (size_t i = 0; i < len && !dropped; i++) {
			if (p[i] == '\n') {
				newlines++;
				line = 0;
			} else if (++line >= LINE_LIMIT) {
				dropped = true;
			}
		}
		open = send_chunk(fd, p, len, pfd, &r);
		if (pfd >= 0)
			close(pfd);   /* the VMM has its own copy, or none */
	}
	if (open)
		shutdown(fd, SHUT_WR);
	drain(fd, &r, true);
	close(fd);
	got = check_replies(&r, &refused);
	if (dropped ? got != newlines + 1 || !refused : got != newlines)
		abort();
	/* The VMM closes the connection, then what was passed with it, so
	 * EOF may come a moment before the rest is gone: wait for it. */
	for (uint64_t end = now_ns() + STEP_NS;; sched_yield()) {
		bool held = false;

		for (int i = 0; i < npipes && !held; i++)
			held = wends[i] >= 0 && !(write(wends[i], "x", 1) == -1 && errno == EPIPE);
		if (!held && fuzz_count_fds() <= fds_before + npipes)
			break;
		if (now_ns() > end)
			abort();   /* the VMM still holds a descriptor passed to it, or leaked one */
	}
	for (int i = 0; i < npipes; i++)
		close(wends[i]);
	return 0;
}
