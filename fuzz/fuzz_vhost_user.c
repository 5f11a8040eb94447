/*
 * fuzz_vhost_user.c - a hostile vhost-user front end against the message
 * handlers of devices/vhost_user.c, serving the real virtio-rng model.
 *
 * Input: a sequence of records, each
 *
 *   u8 request | u8 flags | u16 size | u8 fds | payload[size]
 *
 * `flags` bit 0 asks for NEED_REPLY, bit 7 sends the byte itself as the
 * header flags (a bad version); `fds` bits 0-1 are how many fds ride along
 * (0-3), bits 2-4 say which are memfds (64 KiB, holding the input's bytes,
 * so rings and descriptors in "guest memory" are fuzzer-chosen) and which
 * eventfds.  Each record goes through vu_server_handle as if it had been
 * read off the socket; replies go to a socketpair that is drained.  After
 * the input the front end is dropped, which must bring the server back to
 * its first state (checked: no region mapped, device reset, no fd kept).
 *
 * A crash, a sanitizer report, an fd leak or a state left behind is a
 * finding.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/vhost_user.h"
#include "base/log.h"
#include "vmm/config.h"
#include "base/guest_mem.h"
#include "devices/device_host.h"
#include "fuzz_vm.h"

#define MEMFD_SIZE (64u << 10)

static struct vu_server *srv;
static int peer = -1;                  /* the front end's end of the socketpair */

static void setup(void)
{
	static struct vm_config cfg;
	struct error e;
	struct vu_model m = { .name = "fuzz-rng" };

	log_threshold = LOG_ERROR;
	vm_config_init(&cfg);
	srv = vu_server_new(&e);
	if (!srv || virtio_rng_model(vu_server_host(srv), cfg.rng_rate, vu_server_lock(srv), &m.ops,
				     &m.priv, &e) || vu_server_set_model(srv, &m, &e))
		abort();
}

/* An fd for the message: a memfd holding `data`, or an eventfd. */
static int make_fd(bool mem, const uint8_t *data, size_t n)
{
	int fd;

	if (!mem)
		return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, MEMFD_SIZE) < 0)
		abort();
	if (n && pwrite(fd, data, n < MEMFD_SIZE ? n : MEMFD_SIZE, 0) < 0)
		abort();
	return fd;
}

static void drain_replies(void)
{
	char buf[8192];

	while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vu_msg m;
	int sp[2], base_fds;
	size_t pos = 0;

	if (!srv)
		setup();
	base_fds = fuzz_count_fds();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 ||
	    vu_server_add_conn(srv, sp[1]))
		abort();
	peer = sp[0];
	while (pos + 5 <= size) {
		uint8_t req = data[pos], fl = data[pos + 1], fdspec = data[pos + 4];
		uint32_t len = (uint32_t)(data[pos + 2] | data[pos + 3] << 8);
		int fds[3], nfds = fdspec & 3;

		pos += 5;
		if (len > size - pos)
			len = (uint32_t)(size - pos);
		memset(&m, 0, sizeof(m));
		m.hdr.request = req;
		m.hdr.flags = fl & 0x80 ? fl : VHOST_USER_VERSION | (fl & 1 ? VHOST_USER_NEED_REPLY : 0);
		m.hdr.size = len;
		memcpy(m.p.bytes, data + pos, len < VU_MAX_PAYLOAD ? len : VU_MAX_PAYLOAD);
		pos += len;
		for (int i = 0; i < nfds; i++)
			fds[i] = make_fd(fdspec >> (2 + i) & 1, data, size);
		if (vu_server_handle(srv, &m, fds, nfds) == -EPROTO)
			break;
		drain_replies();
	}
	vu_server_disconnect(srv);
	close(peer);
	if (vu_server_host(srv)->mem->nregions != 0 || vu_server_vdev(srv)->status != 0 ||
	    vu_server_connected(srv) || fuzz_count_fds() != base_fds) {
		fprintf(stderr, "state left behind: %d regions, status %#x, %d fds (base %d)\n",
			vu_server_host(srv)->mem->nregions, vu_server_vdev(srv)->status, fuzz_count_fds(),
			base_fds);
		abort();
	}
	return 0;
}
