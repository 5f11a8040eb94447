/*
 * test_vhost_user_fs.c - the vhost-user FRONT END (devices/vhost_user_fs.c)
 * on the host, without KVM: the device is built on a fake host with a real
 * memfd for guest RAM, a PCI bus and a running event loop, and its back end
 * is Shoal's own vhost-user back end (devices/vhost_user.c) serving
 * virtio-rng on a Unix socket.  The front end does not care which device
 * the back end serves: it negotiates, shares the memory table and hands
 * over rings, so a request the rng back end answers through the front
 * end's kick and call forwarding proves the whole path:
 *
 *   - create negotiates (features offered = the back end's & the ring
 *     features Shoal knows: no packed ring), and the config space holds
 *     the tag and one request queue;
 *   - DRIVER_OK hands queue 0 over; a kick reaches the back end, which
 *     fills the buffer in the shared memfd, and its call comes back as the
 *     device's interrupt (counted);
 *   - a queue enabled after DRIVER_OK is handed over at its first kick;
 *   - a reset takes the ring back (GET_VRING_BASE: the back end's queue
 *     stops), and the device can be brought up again;
 *   - the back end going away marks the device broken (DEVICE_NEEDS_RESET)
 *     while the test (the VMM) goes on; a new DRIVER_OK fails cleanly;
 *   - create refuses a socket nobody listens on, and a peer that answers
 *     garbage, with EXIT_NOINPUT and a message naming the tag and socket;
 *   - the flag and JSON readers (config_fs.c) and shoald's refusal of
 *     "fs" in a VM spec (host/spec.c: not offered through the daemon).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RING_CHECK(cond) assert_true(cond)
#include "fake_host.h"
#include "ring_driver.h"
#include "base/eventloop.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "devices/vhost_user.h"
#include "devices/vhost_user_fs.h"
#include "devices/virtio_pci.h"
#include "host/spec.h"

#define RAM      (16u << 20)
#define DESC     0x100000ull
#define AVAIL    0x102000ull
#define USED     0x103000ull
#define BUF      0x200000ull
#define QSIZE    16

struct t {
	struct fake_host *f;
	struct eventloop *loop;
	struct vu_server *s;
	char path[80];
};

static struct vu_server *rng_server(const char *path)
{
	struct error e;
	struct vu_model m = { .name = "test-rng" };
	struct vu_server *s = vu_server_new(&e);

	assert_non_null(s);
	assert_int_equal(virtio_rng_model(vu_server_host(s), 0, vu_server_lock(s), &m.ops, &m.priv,
					  &e), 0);
	assert_int_equal(vu_server_set_model(s, &m, &e), 0);
	assert_int_equal(vu_server_listen(s, path, &e), 0);
	assert_int_equal(vu_server_start(s), 0);
	return s;
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));
	struct error e;

	log_threshold = LOG_ERROR;
	t->f = fake_host_new(RAM);
	assert_int_equal(guest_mem_create(&t->f->mem, RAM, &e), 0);
	assert_int_equal(fake_host_pci(t->f, &e), 0);
	t->loop = eventloop_new();
	assert_non_null(t->loop);
	t->f->host.loop = t->loop;
	assert_int_equal(eventloop_start(t->loop), 0);
	snprintf(t->path, sizeof(t->path), "/tmp/shoal-vufs-test.%d.sock", getpid());
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	if (t->s)
		vu_server_free(t->s);
	eventloop_stop(t->loop);
	guest_mem_destroy(&t->f->mem);
	fake_host_free(t->f);        /* the device's destroy drops its fds from the loop */
	eventloop_free(t->loop);
	unlink(t->path);
	free(t);
	return 0;
}

static struct device *last_device(struct t *t)
{
	return t->f->devices[t->f->ndevices - 1];
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Bring the device up as a driver would, queue 0 only (the rng back end
 * has one queue).  Returns the status after DRIVER_OK. */
static uint8_t bring_up(struct device *d, struct ring_drv *r)
{
	struct virtio_device *vd = virtio_pci_vdev(d);
	uint8_t st;

	pthread_mutex_lock(&d->lock);
	virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(virtio_set_features(vd, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			      VIRTIO_STATUS_FEATURES_OK);
	ring_drv_init(r, d->host->mem, QSIZE, false, DESC, AVAIL, USED, RING_RESTART);
	assert_int_equal(ring_attach(r, vd, 0), 0);
	st = virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	pthread_mutex_unlock(&d->lock);
	return st;
}

/* One 64-byte device-writable buffer, kicked; true when it came back used
 * with 64 bytes within 5 s. */
static bool one_request(struct device *d, struct ring_drv *r)
{
	struct ring_buf b = { .gpa = BUF, .len = 64, .write = true };
	uint16_t id;
	uint32_t len;

	memset(guest_mem_ptr(d->host->mem, BUF, 64), 0, 64);
	ring_add(r, &b, 1);
	pthread_mutex_lock(&d->lock);
	virtio_queue_notify(virtio_pci_vdev(d), 0);
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < 500; i++) {
		if (ring_used(r, &id, &len))
			return len == 64;
		sleep_ms(10);
	}
	return false;
}

static void test_serves_through_backend(void **state)
{
	struct t *t = *state;
	struct vm_fs fs = { .tag = "shared", .socket = t->path };
	struct error e = { 0 };
	struct virtio_device *vd;
	struct device *d;
	struct ring_drv r;
	uint8_t cfg[40];
	uint64_t irqs = 0;
	const uint8_t *buf;
	bool nonzero = false;

	t->s = rng_server(t->path);
	assert_int_equal(vhost_user_fs_create(&t->f->host, &fs, 0, &e), 0);
	d = last_device(t);
	assert_string_equal(d->name, "vhost-user-fs0");
	vd = virtio_pci_vdev(d);
	assert_int_equal(vd->ops->device_id, 26);
	assert_true(vd->host_features & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	assert_false(vd->host_features & VIRTIO_BIT(VIRTIO_F_RING_PACKED));
	assert_false(vd->host_features & VIRTIO_BIT(VHOST_USER_F_PROTOCOL_FEATURES));
	for (uint32_t i = 0; i < sizeof(cfg); i += 4)
		virtio_config_read(vd, i, cfg + i, 4);
	assert_memory_equal(cfg, "shared\0\0", 8);
	assert_int_equal(cfg[36] | cfg[37] << 8, 1);       /* num_request_queues */

	assert_true(bring_up(d, &r) & VIRTIO_STATUS_DRIVER_OK);
	assert_false(vd->broken);
	assert_true(one_request(d, &r));
	buf = guest_mem_ptr(d->host->mem, BUF, 64);
	for (int i = 0; i < 64; i++)
		nonzero |= buf[i] != 0;
	assert_true(nonzero);                              /* the back end's random bytes */
	for (int i = 0; i < 200 && !irqs; i++) {          /* its call, as our interrupt */
		pthread_mutex_lock(&d->lock);
		irqs = vd->stats.interrupts;
		pthread_mutex_unlock(&d->lock);
		if (!irqs)
			sleep_ms(10);
	}
	assert_true(irqs > 0);

	/* reset: the ring comes back from the back end */
	pthread_mutex_lock(&d->lock);
	virtio_set_status(vd, 0);
	assert_false(vd->broken);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_lock(vu_server_lock(t->s));
	assert_false(vu_server_vdev(t->s)->queues[0].started);
	pthread_mutex_unlock(vu_server_lock(t->s));

	/* up again, and served again */
	assert_true(bring_up(d, &r) & VIRTIO_STATUS_DRIVER_OK);
	assert_true(one_request(d, &r));

	/* the back end dies: the device breaks, we go on */
	vu_server_free(t->s);
	t->s = NULL;
	for (int i = 0; i < 500; i++) {
		bool broken;

		pthread_mutex_lock(&d->lock);
		broken = vd->broken;
		pthread_mutex_unlock(&d->lock);
		if (broken)
			break;
		sleep_ms(10);
	}
	pthread_mutex_lock(&d->lock);
	assert_true(vd->broken);
	assert_true(vd->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	virtio_set_status(vd, 0);                          /* the driver resets */
	pthread_mutex_unlock(&d->lock);
	bring_up(d, &r);
	pthread_mutex_lock(&d->lock);
	assert_true(vd->broken);                           /* no back end: refused again */
	pthread_mutex_unlock(&d->lock);
}

/* A driver may enable a queue after DRIVER_OK: it is handed over at its
 * first kick. */
static void test_queue_after_driver_ok(void **state)
{
	struct t *t = *state;
	struct vm_fs fs = { .tag = "late", .socket = t->path };
	struct error e = { 0 };
	struct virtio_device *vd;
	struct device *d;
	struct ring_drv r;
	const uint8_t ok = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			   VIRTIO_STATUS_FEATURES_OK;

	t->s = rng_server(t->path);
	assert_int_equal(vhost_user_fs_create(&t->f->host, &fs, 0, &e), 0);
	d = last_device(t);
	vd = virtio_pci_vdev(d);
	pthread_mutex_lock(&d->lock);
	virtio_set_status(vd, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(virtio_set_features(vd, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	virtio_set_status(vd, ok);
	assert_true(virtio_set_status(vd, ok | VIRTIO_STATUS_DRIVER_OK) & VIRTIO_STATUS_DRIVER_OK);
	ring_drv_init(&r, d->host->mem, QSIZE, false, DESC, AVAIL, USED, RING_RESTART);
	assert_int_equal(ring_attach(&r, vd, 0), 0);
	pthread_mutex_unlock(&d->lock);
	assert_true(one_request(d, &r));
	assert_false(vd->broken);
}

static void test_no_listener(void **state)
{
	struct t *t = *state;
	struct vm_fs fs = { .tag = "x", .socket = t->path };
	struct error e = { 0 };
	int n = t->f->ndevices;

	unlink(t->path);
	assert_int_equal(vhost_user_fs_create(&t->f->host, &fs, 0, &e), -1);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, "--fs x: "));
	assert_non_null(strstr(e.msg, t->path));
	assert_non_null(strstr(e.msg, "connect"));
	assert_int_equal(t->f->ndevices, n);               /* no device was plugged */
}

static void *garbage_peer(void *arg)
{
	int ls = *(int *)arg, c = accept(ls, NULL, NULL);
	static const char junk[] = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
	char buf[256];

	if (c >= 0) {
		(void)!read(c, buf, sizeof(buf));
		(void)!write(c, junk, sizeof(junk) - 1);
		sleep_ms(200);
		close(c);
	}
	return NULL;
}

static void test_garbage_peer(void **state)
{
	struct t *t = *state;
	struct vm_fs fs = { .tag = "junk", .socket = t->path };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct error e = { 0 };
	pthread_t th;
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->path);
	unlink(t->path);
	assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(pthread_create(&th, NULL, garbage_peer, &ls), 0);
	assert_int_equal(vhost_user_fs_create(&t->f->host, &fs, 0, &e), -1);
	pthread_join(th, NULL);
	close(ls);
	assert_int_equal(e.status, EXIT_NOINPUT);
	assert_non_null(strstr(e.msg, "not a usable vhost-user back end"));
	assert_non_null(strstr(e.msg, "not a vhost-user reply"));
}

static void test_config_flags(void **state)
{
	struct vm_fs f;
	struct error e;
	json_t *j;

	assert_int_equal(fs_config_from_flags(&f, "tag=data,socket=/run/v.sock", &e), 0);
	assert_string_equal(f.tag, "data");
	assert_string_equal(f.socket, "/run/v.sock");
	j = fs_config_to_json(&f);
	fs_config_free(&f);
	assert_int_equal(fs_config_from_json(&f, j, "vm.json: fs[0]", &e), 0);
	json_decref(j);
	assert_string_equal(f.tag, "data");
	fs_config_free(&f);
	assert_int_equal(fs_config_from_flags(&f, "tag=data", &e), -1);
	assert_non_null(strstr(e.msg, "needs both"));
	assert_int_equal(fs_config_from_flags(&f, "tag=1234567890123456789012345678901234567,socket=/s",
					      &e), -1);
	assert_non_null(strstr(e.msg, "1 to 36 bytes"));
	assert_int_equal(fs_config_from_flags(&f, "tag=a b,socket=/s", &e), -1);
	assert_int_equal(fs_config_from_flags(&f, "tag=a,socket=/s,ro", &e), -1);
	assert_null(f.tag);
}

/* shoald does not take "fs" yet: the VMM would connect to any socket a
 * client names.  The same spec without "fs" is accepted. */
static void test_daemon_refuses(void **state)
{
	const char *with = "{\"name\": \"v\", \"kernel\": \"/bin/true\", "
			   "\"fs\": [{\"tag\": \"t\", \"socket\": \"/run/x.sock\"}]}";
	const char *without = "{\"name\": \"v\", \"kernel\": \"/bin/true\"}";
	struct host_spec s;
	struct api_err e;

	assert_int_equal(host_spec_parse(with, strlen(with), true, &s, &e), -1);
	assert_int_equal(e.http, 400);
	assert_non_null(strstr(e.msg, "fs: shared file trees"));
	assert_int_equal(host_spec_parse(without, strlen(without), true, &s, &e), 0);
	host_spec_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_serves_through_backend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_after_driver_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_peer, setup, teardown),
		cmocka_unit_test(test_config_flags),
		cmocka_unit_test(test_daemon_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
