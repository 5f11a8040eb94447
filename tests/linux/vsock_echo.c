/*
 * vsock_echo.c - a Linux guest's end of the vsock checks in
 * tests/system/slow_linux_devices.sh.  Built static (no libc in the guest
 * kit's initramfs) by `make tests` into $(BUILD)/tests/linux/vsock_echo, and
 * put in the initramfs the test appends to the kit's.
 *
 *   vsock_echo connect CID PORT FILE
 *       connect to CID:PORT, send FILE's bytes and read as many back; exit 0
 *       when every byte came back as sent.  Sending and receiving are
 *       interleaved (poll), so an echo peer never waits on a full socket.
 *   vsock_echo serve PORT
 *       accept one connection on PORT (any CID), send back every byte it
 *       receives until the peer closes; exit 0 when the peer closed.
 *
 * Each prints one line, "vsock_echo: ...", with the byte counts.  An alarm
 * bounds every run (60 s): a stalled connection ends in a failure, never a
 * hang.  Busybox has no vsock client, hence this program.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define TIME_LIMIT_S 60
#define CHUNK 65536

/* read_file: the whole of PATH into a malloc'd buffer; NULL on error. */
static char *read_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	while (buf && got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r <= 0) {
			perror(path);
			free(buf);
			buf = NULL;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

static int vsock_socket(void)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (s < 0)
		perror("socket(AF_VSOCK)");
	return s;
}

/* echo_check: send buf while reading the echo; 0 if it all came back. */
static int echo_check(int s, const char *buf, size_t len)
{
	char *back = malloc(len + 1);
	size_t sent = 0, got = 0;
	int ok;

	if (!back)
		return -1;
	fcntl(s, F_SETFL, O_NONBLOCK);
	while (got < len) {
		struct pollfd p = { .fd = s, .events = POLLIN | (sent < len ? POLLOUT : 0) };
		ssize_t r;

		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		if (sent < len && (p.revents & POLLOUT)) {
			size_t n = len - sent < CHUNK ? len - sent : CHUNK;

			r = write(s, buf + sent, n);
			if (r > 0)
				sent += (size_t)r;
			else if (r < 0 && errno != EAGAIN)
				break;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			r = read(s, back + got, len - got);
			if (r == 0 || (r < 0 && errno != EAGAIN))
				break;
			if (r > 0)
				got += (size_t)r;
		}
	}
	ok = got == len && memcmp(buf, back, len) == 0;
	printf("vsock_echo: sent %zu, received %zu, %s\n", sent, got, ok ? "match" : "MISMATCH");
	fflush(stdout);
	free(back);
	return ok ? 0 : -1;
}

static int do_connect(const char *cid, const char *port, const char *path)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK };
	size_t len;
	char *buf = read_file(path, &len);
	int s, rc;

	if (!buf || (s = vsock_socket()) < 0)
		return 1;
	a.svm_cid = (unsigned)strtoul(cid, NULL, 0);
	a.svm_port = (unsigned)strtoul(port, NULL, 0);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		printf("vsock_echo: connect %s:%s: %s\n", cid, port, strerror(errno));
		return 1;
	}
	rc = echo_check(s, buf, len);
	close(s);
	free(buf);
	return rc == 0 ? 0 : 1;
}

/* copy_back: write all of buf to s; 0 on success. */
static int copy_back(int s, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(s, buf, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

static int do_serve(const char *port)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY };
	static char buf[CHUNK];
	unsigned long long total = 0;
	int l = vsock_socket(), s;
	ssize_t r;

	if (l < 0)
		return 1;
	a.svm_port = (unsigned)strtoul(port, NULL, 0);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0) {
		printf("vsock_echo: listen on port %s: %s\n", port, strerror(errno));
		return 1;
	}
	s = accept(l, NULL, NULL);
	if (s < 0) {
		printf("vsock_echo: accept: %s\n", strerror(errno));
		return 1;
	}
	while ((r = read(s, buf, sizeof(buf))) > 0) {
		if (copy_back(s, buf, (size_t)r) < 0)
			break;
		total += (unsigned long long)r;
	}
	printf("vsock_echo: echoed %llu bytes, peer %s\n", total, r == 0 ? "closed" : strerror(errno));
	close(s);
	close(l);
	return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	alarm(TIME_LIMIT_S);
	if (argc == 5 && strcmp(argv[1], "connect") == 0)
		return do_connect(argv[2], argv[3], argv[4]);
	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		return do_serve(argv[2]);
	fprintf(stderr, "usage: vsock_echo connect CID PORT FILE | vsock_echo serve PORT\n");
	return 2;
}
