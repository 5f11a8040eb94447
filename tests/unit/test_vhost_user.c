/*
 * test_vhost_user.c - the vhost-user back end (devices/vhost_user.c) driven
 * by a front end written here, over a real Unix socket: feature and
 * protocol negotiation, a memory table from a memfd, ring set-up, a request
 * through virtio-rng with kick and call eventfds, stopping a ring, packed
 * ring indices, ADD/REM_MEM_REG, config space through a toy model, and
 * hostile messages (sizes, fd counts, indices, addresses, overlaps, files
 * too small, framing) that must be refused without a crash or a leaked fd.
 * Disconnect resets the device and unmaps memory; the next front end is
 * served from scratch.
 *
 * The server runs its real event loop thread; the test is the front end
 * and uses REPLY_ACK to know when a message was handled.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/vhost_user.h"
#include "base/log.h"
#include "vmm/config.h"
#include "base/guest_mem.h"
#include "devices/device_host.h"

#define MEM_GPA   0x100000ull
#define MEM_SIZE  (1u << 20)
#define MEM_UVA   0x7f0000000000ull     /* the "front end's" address of MEM_GPA */
#define DESC_OFF  0x0
#define AVAIL_OFF 0x800
#define USED_OFF  0x1000
#define BUF_OFF   0x80000
#define QSIZE     8

struct fe {                              /* the test's front end */
	struct vu_server *s;
	char path[64];
	int sock;
	int memfd;
	uint8_t *mem;                        /* our view of guest RAM */
	int kick, call;
	struct vm_config cfg;
};

/* ---- the front end's side of the wire ---- */

static void fe_send(struct fe *f, uint32_t req, uint32_t flags, const void *p, uint32_t len,
		    const int *fds, int nfds)
{
	struct vu_hdr h = { .request = req, .flags = VHOST_USER_VERSION | flags, .size = len };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)p, len } };
	char cbuf[CMSG_SPACE(16 * sizeof(int))];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (nfds) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	assert_int_equal(sendmsg(f->sock, &mh, MSG_NOSIGNAL), (ssize_t)(sizeof(h) + len));
}

/* Read one reply into `p` (up to `max`); returns its payload size, or -1
 * when the connection closed, -2 on timeout. */
static int fe_recv(struct fe *f, uint32_t req, void *p, uint32_t max)
{
	struct pollfd pfd = { .fd = f->sock, .events = POLLIN };
	struct vu_hdr h;
	ssize_t n;

	if (poll(&pfd, 1, 3000) != 1)
		return -2;
	n = recv(f->sock, &h, sizeof(h), MSG_WAITALL);
	if (n <= 0)
		return -1;
	assert_int_equal(n, sizeof(h));
	assert_int_equal(h.request, req);
	assert_int_equal(h.flags, VHOST_USER_VERSION | VHOST_USER_REPLY);
	assert_true(h.size <= max);
	if (h.size)
		assert_int_equal(recv(f->sock, p, h.size, MSG_WAITALL), h.size);
	return (int)h.size;
}

/* Send with NEED_REPLY and return the REPLY_ACK value (0 done, 1 refused). */
static uint64_t fe_ack(struct fe *f, uint32_t req, const void *p, uint32_t len,
		       const int *fds, int nfds)
{
	uint64_t v = 99;

	fe_send(f, req, VHOST_USER_NEED_REPLY, p, len, fds, nfds);
	assert_int_equal(fe_recv(f, req, &v, sizeof(v)), 8);
	return v;
}

static uint64_t fe_get_u64(struct fe *f, uint32_t req)
{
	uint64_t v = 0;

	fe_send(f, req, 0, NULL, 0, NULL, 0);
	assert_int_equal(fe_recv(f, req, &v, sizeof(v)), 8);
	return v;
}

static uint64_t fe_state(struct fe *f, uint32_t req, uint32_t index, uint32_t num)
{
	struct vu_vring_state st = { index, num };

	return fe_ack(f, req, &st, sizeof(st), NULL, 0);
}

static void fe_connect(struct fe *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	strcpy(sa.sun_path, f->path);
	f->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(f->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* Negotiate REPLY_ACK first: every later message can then be awaited. */
	assert_int_equal(fe_get_u64(f, VHOST_USER_GET_FEATURES) >> VHOST_USER_F_PROTOCOL_FEATURES & 1, 1);
	fe_send(f, VHOST_USER_SET_OWNER, 0, NULL, 0, NULL, 0);
	{
		uint64_t pf = VIRTIO_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
			      VIRTIO_BIT(VHOST_USER_PROTOCOL_F_MQ) |
			      VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

		fe_send(f, VHOST_USER_SET_PROTOCOL_FEATURES, 0, &pf, 8, NULL, 0);
	}
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int fe_setup_rng(void **state)
{
	struct fe *f = calloc(1, sizeof(*f));
	struct error e;
	struct vu_model m = { .name = "test-rng" };

	log_threshold = LOG_ERROR;
	vm_config_init(&f->cfg);
	f->s = vu_server_new(&e);
	assert_non_null(f->s);
	assert_int_equal(virtio_rng_model(vu_server_host(f->s), f->cfg.rng_rate, vu_server_lock(f->s),
					  &m.ops, &m.priv, &e), 0);
	assert_int_equal(vu_server_set_model(f->s, &m, &e), 0);
	snprintf(f->path, sizeof(f->path), "/tmp/shoal-vu-test.%d.sock", getpid());
	assert_int_equal(vu_server_listen(f->s, f->path, &e), 0);
	assert_int_equal(vu_server_start(f->s), 0);
	f->memfd = memfd_create("guest", MFD_CLOEXEC);
	assert_int_equal(ftruncate(f->memfd, MEM_SIZE + 4096), 0);
	f->mem = mmap(NULL, MEM_SIZE + 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
	assert_true(f->mem != MAP_FAILED);
	f->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	f->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fe_connect(f);
	*state = f;
	return 0;
}

static int fe_teardown(void **state)
{
	struct fe *f = *state;

	close(f->sock);
	vu_server_free(f->s);
	munmap(f->mem, MEM_SIZE + 4096);
	close(f->memfd);
	close(f->kick);
	close(f->call);
	vm_config_free(&f->cfg);
	free(f);
	return 0;
}

/* SET_MEM_TABLE: one region of the memfd at `offset`, gpa MEM_GPA. */
static uint64_t fe_mem_table(struct fe *f, uint64_t offset, uint64_t size)
{
	struct vu_mem_table t = { .nregions = 1 };

	t.regions[0] = (struct vu_mem_region){ MEM_GPA, size, MEM_UVA, offset };
	return fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 32, &f->memfd, 1);
}

static uint64_t fe_fd_msg(struct fe *f, uint32_t req, uint32_t index, int fd)
{
	uint64_t u = index | (fd < 0 ? VU_VRING_NOFD_MASK : 0);

	return fe_ack(f, req, &u, 8, &fd, fd < 0 ? 0 : 1);
}

/* Features, memory, one split ring of QSIZE at DESC/AVAIL/USED_OFF. */
static void fe_ring_setup(struct fe *f, uint64_t features, uint32_t base)
{
	struct vu_vring_addr a = { .index = 0, .desc = MEM_UVA + DESC_OFF,
				   .avail = MEM_UVA + AVAIL_OFF, .used = MEM_UVA + USED_OFF };

	assert_int_equal(fe_ack(f, VHOST_USER_SET_FEATURES, &features, 8, NULL, 0), 0);
	assert_int_equal(fe_mem_table(f, 0, MEM_SIZE), 0);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_NUM, 0, QSIZE), 0);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_BASE, 0, base), 0);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 0);
	assert_int_equal(fe_fd_msg(f, VHOST_USER_SET_VRING_CALL, 0, f->call), 0);
	assert_int_equal(fe_fd_msg(f, VHOST_USER_SET_VRING_KICK, 0, f->kick), 0);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_ENABLE, 0, 1), 0);
}

/* Post one 64-byte device-writable buffer as avail entry `slot`. */
static void fe_post(struct fe *f, uint16_t slot)
{
	struct virtq_desc d = { MEM_GPA + BUF_OFF + 64u * slot, 64, VIRTQ_DESC_F_WRITE, 0 };
	uint16_t idx = slot + 1, head = slot % QSIZE;
	uint64_t one = 1;

	memcpy(f->mem + DESC_OFF + 16 * head, &d, sizeof(d));
	memcpy(f->mem + AVAIL_OFF + 4 + 2 * (slot % QSIZE), &head, 2);
	__atomic_store_n((uint16_t *)(f->mem + AVAIL_OFF + 2), idx, __ATOMIC_RELEASE);
	assert_int_equal(write(f->kick, &one, 8), 8);
}

/* Wait up to `ms` for the call eventfd; true when it fired. */
static bool fe_wait_call_ms(struct fe *f, int ms)
{
	struct pollfd pfd = { .fd = f->call, .events = POLLIN };
	uint64_t n;

	if (poll(&pfd, 1, ms) != 1)
		return false;
	return read(f->call, &n, 8) == 8;
}

static bool fe_wait_call(struct fe *f)
{
	return fe_wait_call_ms(f, 3000);
}

static uint16_t used_idx(struct fe *f)
{
	return __atomic_load_n((uint16_t *)(f->mem + USED_OFF + 2), __ATOMIC_ACQUIRE);
}

/* ---- tests ---- */

static void test_negotiation(void **state)
{
	struct fe *f = *state;
	uint64_t feat = fe_get_u64(f, VHOST_USER_GET_FEATURES);
	uint64_t pf = fe_get_u64(f, VHOST_USER_GET_PROTOCOL_FEATURES);
	struct virtio_device *d = vu_server_vdev(f->s);

	assert_true(feat & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	assert_false(feat & VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM));
	assert_true(pf & VIRTIO_BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK));
	assert_false(pf & VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIG));   /* rng has no config */
	assert_int_equal(fe_get_u64(f, VHOST_USER_GET_QUEUE_NUM), 1);
	assert_int_equal(fe_get_u64(f, VHOST_USER_GET_MAX_MEM_SLOTS), VU_MAX_MEM_REGIONS);
	/* Not offered: refused, and the device stays unconfigured. */
	feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(50);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_FEATURES, &feat, 8, NULL, 0), 1);
	assert_false(d->status & VIRTIO_STATUS_DRIVER_OK);
	pf = VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIG);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0), 1);
	/* Accepted: the device is live without any status register. */
	feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) |
	       VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_FEATURES, &feat, 8, NULL, 0), 0);
	assert_true(d->status & VIRTIO_STATUS_DRIVER_OK);
	assert_true(d->status & VIRTIO_STATUS_FEATURES_OK);
	assert_true(virtio_has_feature(d, VIRTIO_RING_F_EVENT_IDX));
}

static void test_rng_request(void **state)
{
	struct fe *f = *state;
	struct virtq_used_elem ue;
	uint8_t zero[64] = { 0 };

	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	fe_post(f, 0);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 1);
	memcpy(&ue, f->mem + USED_OFF + 4, sizeof(ue));
	assert_int_equal(ue.id, 0);
	assert_int_equal(ue.len, 64);
	assert_memory_not_equal(f->mem + BUF_OFF, zero, 64);
	fe_post(f, 1);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 2);
	/* Changing the ring under a running queue is refused. */
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_NUM, 0, 4), 1);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_BASE, 0, 0), 1);
	assert_true(vu_server_stats(f->s)->kicks >= 2);
}

static void test_stop_and_resume(void **state)
{
	struct fe *f = *state;
	struct vu_vring_state st = { 0, 0 };
	uint64_t one = 1;

	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	fe_post(f, 0);
	assert_true(fe_wait_call(f));
	fe_send(f, VHOST_USER_GET_VRING_BASE, 0, &st, sizeof(st), NULL, 0);
	assert_int_equal(fe_recv(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st)), 8);
	assert_int_equal(st.num, 1);
	/* Stopped: a buffer posted now is not served, even with a kick. */
	fe_post(f, 1);
	assert_false(fe_wait_call_ms(f, 100));
	assert_int_equal(used_idx(f), 1);
	/* Restart where it stopped: the pending buffer is served. */
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_BASE, 0, 1), 0);
	assert_int_equal(fe_fd_msg(f, VHOST_USER_SET_VRING_KICK, 0, f->kick), 0);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 2);
	/* Disabled: not served until enabled again. */
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_ENABLE, 0, 0), 0);
	fe_post(f, 2);
	assert_int_equal(write(f->kick, &one, 8), 8);
	usleep(100 * 1000);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_ENABLE, 0, 1), 0);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 3);
}

static void test_packed_base(void **state)
{
	struct fe *f = *state;
	struct vu_vring_state st = { 0, 0 };
	uint32_t base = 3u | 1u << 15 | 5u << 16;        /* avail 3 wrap 1, used 5 wrap 0 */

	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_PACKED) |
			 VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), base);
	assert_true(vu_server_vdev(f->s)->queues[0].packed);
	assert_int_equal(vu_server_vdev(f->s)->queues[0].last_avail, 3);
	assert_int_equal(vu_server_vdev(f->s)->queues[0].used_idx, 5);
	fe_send(f, VHOST_USER_GET_VRING_BASE, 0, &st, sizeof(st), NULL, 0);
	assert_int_equal(fe_recv(f, VHOST_USER_GET_VRING_BASE, &st, sizeof(st)), 8);
	assert_int_equal(st.num, base);
}

static void test_mem_slots(void **state)
{
	struct fe *f = *state;
	struct vu_mem_single r = { .region = { MEM_GPA, MEM_SIZE / 2, MEM_UVA, 0 } };
	struct vu_mem_single r2 = { .region = { MEM_GPA + MEM_SIZE / 2, MEM_SIZE / 2,
						MEM_UVA + MEM_SIZE / 2, MEM_SIZE / 2 } };
	const struct device_host *host = vu_server_host(f->s);
	uint32_t magic = 0x5a5aa5a5, got = 0;

	assert_int_equal(fe_ack(f, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), &f->memfd, 1), 0);
	assert_int_equal(fe_ack(f, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), &f->memfd, 1), 1);  /* overlap */
	assert_int_equal(fe_ack(f, VHOST_USER_ADD_MEM_REG, &r2, sizeof(r2), &f->memfd, 1), 0);
	assert_int_equal(host->mem->nregions, 2);
	/* Both regions show the same bytes as our mapping. */
	memcpy(f->mem + MEM_SIZE / 2 + 16, &magic, 4);
	assert_int_equal(guest_mem_read(host->mem, MEM_GPA + MEM_SIZE / 2 + 16, &got, 4), 0);
	assert_int_equal(got, magic);
	assert_int_equal(fe_ack(f, VHOST_USER_REM_MEM_REG, &r, sizeof(r), NULL, 0), 0);
	assert_int_equal(fe_ack(f, VHOST_USER_REM_MEM_REG, &r, sizeof(r), NULL, 0), 1);  /* gone */
	assert_int_equal(host->mem->nregions, 1);
	assert_null(guest_mem_ptr(host->mem, MEM_GPA, 1));
}

/* A memory table at a non-zero offset in the fd, read through guest_mem. */
static void test_mem_table_offset(void **state)
{
	struct fe *f = *state;
	const struct device_host *host = vu_server_host(f->s);
	uint32_t magic = 0xfeedf00d, got = 0;

	memcpy(f->mem + 4096 + 8, &magic, 4);
	assert_int_equal(fe_mem_table(f, 4096, MEM_SIZE), 0);
	assert_int_equal(guest_mem_read(host->mem, MEM_GPA + 8, &got, 4), 0);
	assert_int_equal(got, magic);
	assert_int_equal(fe_mem_table(f, 8192, MEM_SIZE), 1);   /* past the file's end */
	assert_int_equal(host->mem->nregions, 1);                  /* old table kept */
}

static void test_hostile_messages(void **state)
{
	struct fe *f = *state;
	struct vu_mem_table t = { .nregions = 2 };
	struct vu_vring_addr a = { .index = 0, .desc = 0x1000, .avail = MEM_UVA, .used = MEM_UVA };
	int two[2] = { f->memfd, f->kick }, before = open_fds();
	uint64_t u = 0;
	uint8_t junk[64] = { 0 };

	/* Index out of range, everywhere an index is taken. */
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_NUM, 1, QSIZE), 1);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_BASE, 7, 0), 1);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_ENABLE, 255, 1), 1);
	assert_int_equal(fe_fd_msg(f, VHOST_USER_SET_VRING_KICK, 200, f->kick), 1);
	assert_int_equal(fe_fd_msg(f, VHOST_USER_SET_VRING_CALL, 9, f->call), 1);
	/* Ring sizes: zero and over the device's maximum. */
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_NUM, 0, 0), 1);
	assert_int_equal(fe_state(f, VHOST_USER_SET_VRING_NUM, 0, 65536), 1);
	/* Ring addresses outside the table (and no table at all yet). */
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 1);
	assert_int_equal(fe_mem_table(f, 0, MEM_SIZE), 0);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 1);
	a.desc = MEM_UVA + MEM_SIZE;                          /* one past the end */
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), 1);
	/* Wrong fd counts. */
	t.regions[0] = (struct vu_mem_region){ MEM_GPA, 4096, MEM_UVA, 0 };
	t.regions[1] = (struct vu_mem_region){ MEM_GPA + 8192, 4096, MEM_UVA + 8192, 0 };
	assert_int_equal(fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 64, &f->memfd, 1), 1);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_KICK, &u, 8, two, 2), 1);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_KICK, &u, 8, NULL, 0), 1);
	u = VU_VRING_NOFD_MASK;
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_CALL, &u, 8, &f->call, 1), 1);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_OWNER, &u, 8, &f->call, 1), 1);
	/* Overlapping regions, a region of size 0, a wrapping region, a table
	 * claiming more regions than it carries. */
	t.regions[1].gpa = MEM_GPA + 2048;
	assert_int_equal(fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 64, two, 2), 1);
	t.regions[1] = (struct vu_mem_region){ MEM_GPA + 8192, 0, MEM_UVA + 8192, 0 };
	assert_int_equal(fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 64, two, 2), 1);
	t.regions[1] = (struct vu_mem_region){ ~0ull - 4095, 8192, MEM_UVA + 8192, 0 };
	assert_int_equal(fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, 8 + 64, two, 2), 1);
	t.nregions = 9;
	assert_int_equal(fe_ack(f, VHOST_USER_SET_MEM_TABLE, &t, sizeof(t), NULL, 0), 1);
	/* Wrong payload sizes, unknown bits, unknown requests. */
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_NUM, junk, 4, NULL, 0), 1);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_FEATURES, junk, 16, NULL, 0), 1);
	u = 1ull << 20;
	assert_int_equal(fe_ack(f, VHOST_USER_SET_VRING_CALL, &u, 8, &f->call, 1), 1);
	assert_int_equal(fe_ack(f, 99, junk, 64, NULL, 0), 1);
	assert_int_equal(fe_ack(f, VHOST_USER_SET_LOG_BASE, junk, 16, &f->memfd, 1), 1);
	fe_send(f, VHOST_USER_GET_CONFIG, 0, junk, 8, NULL, 0);      /* too short: empty reply */
	assert_int_equal(fe_recv(f, VHOST_USER_GET_CONFIG, junk, sizeof(junk)), 0);
	/* Every fd those messages carried was closed by the server. */
	assert_int_equal(open_fds(), before);
	assert_true(vu_server_stats(f->s)->refused >= 25);
	/* And the connection still works. */
	assert_int_equal(fe_get_u64(f, VHOST_USER_GET_QUEUE_NUM), 1);
}

/* Broken framing ends the connection; the device is reset, memory
 * unmapped, and the next front end is served from scratch. */
static void test_framing_and_reconnect(void **state)
{
	struct fe *f = *state;
	const struct device_host *host = vu_server_host(f->s);
	static uint8_t big[VU_MAX_PAYLOAD + 8];
	struct vu_hdr bad = { VHOST_USER_GET_FEATURES, 2, 0 };

	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	assert_int_equal(host->mem->nregions, 1);
	fe_send(f, VHOST_USER_SET_CONFIG, 0, big, sizeof(big), NULL, 0);
	assert_int_equal(fe_recv(f, 0, NULL, 0), -1);                  /* closed */
	close(f->sock);
	for (int i = 0; i < 100 && vu_server_connected(f->s); i++)
		usleep(10000);
	pthread_mutex_lock(vu_server_lock(f->s));
	assert_false(vu_server_connected(f->s));
	assert_int_equal(host->mem->nregions, 0);
	assert_int_equal(vu_server_vdev(f->s)->status, 0);
	pthread_mutex_unlock(vu_server_lock(f->s));
	/* Second front end: works from the start; then a bad version byte. */
	fe_connect(f);
	memset(f->mem + USED_OFF, 0, 8);
	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	fe_post(f, 0);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(send(f->sock, &bad, sizeof(bad), MSG_NOSIGNAL), sizeof(bad));
	assert_int_equal(fe_recv(f, 0, NULL, 0), -1);
	assert_int_equal(vu_server_stats(f->s)->connects, 2);
}

/* A new memory table under a running ring (the ring is halted, the maps
 * swapped, the ring run again where it was); then RESET_DEVICE. */
static void test_remap_and_reset(void **state)
{
	struct fe *f = *state;

	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 0);
	fe_post(f, 0);
	assert_true(fe_wait_call(f));
	assert_int_equal(fe_mem_table(f, 0, MEM_SIZE), 0);
	assert_true(vu_server_vdev(f->s)->queues[0].started);
	fe_post(f, 1);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(fe_ack(f, VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0), 0);
	assert_int_equal(vu_server_vdev(f->s)->status, 0);
	assert_false(vu_server_vdev(f->s)->queues[0].started);
	fe_post(f, 2);
	assert_false(fe_wait_call_ms(f, 100));
	assert_int_equal(used_idx(f), 2);
	/* Set up again from scratch on the same connection: served. */
	fe_ring_setup(f, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES), 2);
	assert_true(fe_wait_call(f));
	assert_int_equal(used_idx(f), 3);
}

/* More fds than any message may carry: the kernel truncates them, the
 * server closes what it got and the connection. */
static void test_too_many_fds(void **state)
{
	struct fe *f = *state;
	int many[12], before;
	uint64_t u = 0;

	for (int i = 0; i < 12; i++)
		many[i] = eventfd(0, EFD_CLOEXEC);
	before = open_fds();
	fe_send(f, VHOST_USER_SET_VRING_CALL, VHOST_USER_NEED_REPLY, &u, 8, many, 12);
	assert_int_equal(fe_recv(f, 0, NULL, 0), -1);
	for (int i = 0; i < 100 && vu_server_connected(f->s); i++)
		usleep(10000);
	assert_false(vu_server_connected(f->s));
	assert_int_equal(open_fds(), before - 1);   /* its end of the connection too */
	for (int i = 0; i < 12; i++)
		close(many[i]);
}

/* ---- config space through a toy model ---- */

struct toy {
	uint8_t cfg[16];
};

static uint64_t toy_features(struct virtio_device *d)
{
	return 0;
}

static void toy_config_read(struct virtio_device *d, uint32_t off, void *data, uint32_t len)
{
	memcpy(data, ((struct toy *)d->priv)->cfg + off, len);
}

static void toy_config_write(struct virtio_device *d, uint32_t off, const void *data, uint32_t len)
{
	memcpy(((struct toy *)d->priv)->cfg + off, data, len);
}

static void toy_destroy(struct virtio_device *d)
{
	free(d->priv);
}

static const struct virtio_device_ops toy_ops = {
	.device_id = 99, .name = "toy", .num_queues = 2, .queue_max_size = 16,
	.config_size = 16, .features = toy_features, .config_read = toy_config_read,
	.config_write = toy_config_write, .destroy = toy_destroy,
};

static void test_config_space(void **state)
{
	struct error e;
	struct vu_server *s = vu_server_new(&e);
	struct toy *t = calloc(1, sizeof(*t));
	struct vu_model m = { .ops = &toy_ops, .priv = t, .name = "toy0" };
	struct fe f = { .s = s };
	struct vu_config c = { .offset = 0, .size = 20 };

	log_threshold = LOG_ERROR;
	for (int i = 0; i < 16; i++)
		t->cfg[i] = (uint8_t)(i + 1);
	assert_int_equal(vu_server_set_model(s, &m, &e), 0);
	snprintf(f.path, sizeof(f.path), "/tmp/shoal-vu-toy.%d.sock", getpid());
	assert_int_equal(vu_server_listen(s, f.path, &e), 0);
	assert_int_equal(vu_server_start(s), 0);
	fe_connect(&f);
	assert_true(fe_get_u64(&f, VHOST_USER_GET_PROTOCOL_FEATURES) &
		    VIRTIO_BIT(VHOST_USER_PROTOCOL_F_CONFIG));
	assert_int_equal(fe_get_u64(&f, VHOST_USER_GET_QUEUE_NUM), 2);
	/* 20 bytes from 0: 16 of config, then zeros. */
	fe_send(&f, VHOST_USER_GET_CONFIG, 0, &c, 12 + 20, NULL, 0);
	assert_int_equal(fe_recv(&f, VHOST_USER_GET_CONFIG, &c, sizeof(c)), 12 + 20);
	assert_int_equal(c.data[0], 1);
	assert_int_equal(c.data[15], 16);
	assert_int_equal(c.data[16], 0);
	/* A write inside, and one past the end (refused). */
	c = (struct vu_config){ .offset = 4, .size = 2, .data = { 0xaa, 0xbb } };
	assert_int_equal(fe_ack(&f, VHOST_USER_SET_CONFIG, &c, 12 + 2, NULL, 0), 0);
	assert_int_equal(t->cfg[4], 0xaa);
	c.offset = 15;
	assert_int_equal(fe_ack(&f, VHOST_USER_SET_CONFIG, &c, 12 + 2, NULL, 0), 1);
	c.flags = 7;
	c.offset = 0;
	assert_int_equal(fe_ack(&f, VHOST_USER_SET_CONFIG, &c, 12 + 2, NULL, 0), 1);
	/* Sizes that do not add up: an empty reply. */
	c = (struct vu_config){ .offset = 250, .size = 10 };
	fe_send(&f, VHOST_USER_GET_CONFIG, 0, &c, 12 + 10, NULL, 0);
	assert_int_equal(fe_recv(&f, VHOST_USER_GET_CONFIG, &c, sizeof(c)), 0);
	c = (struct vu_config){ .offset = 0, .size = 8 };
	fe_send(&f, VHOST_USER_GET_CONFIG, 0, &c, 12 + 4, NULL, 0);
	assert_int_equal(fe_recv(&f, VHOST_USER_GET_CONFIG, &c, sizeof(c)), 0);
	close(f.sock);
	vu_server_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_negotiation, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_rng_request, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_stop_and_resume, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_packed_base, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_mem_slots, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_mem_table_offset, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_hostile_messages, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_framing_and_reconnect, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_remap_and_reset, fe_setup_rng, fe_teardown),
		cmocka_unit_test_setup_teardown(test_too_many_fds, fe_setup_rng, fe_teardown),
		cmocka_unit_test(test_config_space),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
