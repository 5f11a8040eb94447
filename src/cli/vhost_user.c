/*
 * vhost_user.c - `shoal vhost-user blk|net|rng`: serve one of Shoal's
 * virtio device models to another VMM (QEMU, Cloud Hypervisor) as a
 * vhost-user back end, in the foreground (docs/vhost-user.md).
 *
 *   shoal vhost-user blk --socket PATH --disk FILE[,readonly][,serial=ID]
 *   shoal vhost-user net --socket PATH --net tap=NAME|fd=N[,mac=MAC]
 *   shoal vhost-user rng --socket PATH [--rate BYTES_PER_S]
 *
 * The process listens on PATH, serves one front end at a time, logs a line
 * per connect and disconnect, and outlives its front ends (QEMU reconnects
 * with `-chardev socket,...,reconnect=1`).  SIGINT or SIGTERM ends it with
 * status 0 after the device is reset and the socket file removed.
 *
 * Threads: main parses, builds and then only waits for a signal (blocked
 * in every thread, taken with sigwait); the server's event loop thread
 * does the protocol; a model may have its own (virtio-blk's I/O thread).
 */
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/size.h"
#include "cli/commands.h"
#include "devices/vhost_user.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "vmm/config.h"

enum { OPT_SOCKET = 's', OPT_DISK = 'd', OPT_NET = 'n', OPT_RATE = 'r' };

struct vu_opts {
	const char *kind;              /* "blk", "net", "rng" */
	const char *socket;
	struct vm_config cfg;          /* disks[0], nets[0], rng_rate */
	int verbose;
	bool quiet;
};

static const struct option vu_options[] = {
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "net", required_argument, NULL, OPT_NET },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void vu_usage(FILE *f)
{
	fprintf(f,
		"usage: shoal vhost-user blk --socket PATH --disk FILE[,readonly][,serial=ID]\n"
		"       shoal vhost-user net --socket PATH --net tap=NAME|fd=N[,mac=MAC]\n"
		"       shoal vhost-user rng --socket PATH [--rate BYTES_PER_S]\n"
		"\n"
		"Serve a Shoal virtio device to QEMU or Cloud Hypervisor over vhost-user.\n"
		"Runs in the foreground; SIGINT or SIGTERM stops it.\n"
		"\n"
		"  --socket PATH   Unix socket to listen on (created; a stale one is replaced)\n"
		"  --disk SPEC     blk: raw or qcow2 image, readonly, serial=ID, queues=N\n"
		"  --net SPEC      net: a TAP by name (created if absent) or an open fd\n"
		"  --rate N        rng: bytes per second (default 1 MiB/s)\n"
		"  -v, --verbose   debug log: every protocol message\n"
		"  -q, --quiet     errors only\n");
}

/* Apply one option; 0 or -1 with `e`. */
static int vu_apply_opt(int c, const char *arg, struct vu_opts *o, struct error *e)
{
	uint64_t rate;

	switch (c) {
	case OPT_SOCKET:
		o->socket = arg;
		return 0;
	case OPT_DISK:
		if (o->cfg.ndisks)
			return error_set(e, EXIT_USAGE, "vhost-user blk serves one --disk");
		return vm_config_add_disk(&o->cfg, arg, e);
	case OPT_NET:
		if (o->cfg.nnets)
			return error_set(e, EXIT_USAGE, "vhost-user net serves one --net");
		return vm_config_add_net(&o->cfg, arg, e);
	case OPT_RATE:
		if (size_parse(arg, &rate) || !rate || rate > UINT32_MAX)
			return error_set(e, EXIT_USAGE, "--rate '%s': want 1..4G bytes per second", arg);
		o->cfg.rng_rate = (uint32_t)rate;
		return 0;
	case 'v':
		o->verbose++;
		return 0;
	case 'q':
		o->quiet = true;
		return 0;
	default:
		return error_set(e, EXIT_USAGE, "bad option (shoal vhost-user --help)");
	}
}

/* Check that the flags fit the device kind; 0 or -1 with `e`. */
static int vu_check_opts(const struct vu_opts *o, struct error *e)
{
	bool blk = !strcmp(o->kind, "blk"), net = !strcmp(o->kind, "net");

	if (!blk && !net && strcmp(o->kind, "rng"))
		return error_set(e, EXIT_USAGE, "'%s' is not a vhost-user device (blk, net, rng)",
				 o->kind);
	if (!o->socket)
		return error_set(e, EXIT_USAGE, "vhost-user %s: --socket PATH is required", o->kind);
	if (blk != (o->cfg.ndisks == 1))
		return error_set(e, EXIT_USAGE, blk ? "vhost-user blk: --disk FILE is required"
						    : "--disk is for vhost-user blk");
	if (net != (o->cfg.nnets == 1))
		return error_set(e, EXIT_USAGE, net ? "vhost-user net: --net SPEC is required"
						    : "--net is for vhost-user net");
	if (o->cfg.rng_rate && strcmp(o->kind, "rng"))
		return error_set(e, EXIT_USAGE, "--rate is for vhost-user rng");
	if (net && o->cfg.nets[0].fd >= 0 && fcntl(o->cfg.nets[0].fd, F_GETFD) < 0)
		return error_set(e, EXIT_USAGE, "--net fd=%d: not an open file descriptor",
				 o->cfg.nets[0].fd);
	return 0;
}

static int vu_parse(int argc, char **argv, struct vu_opts *o, struct error *e)
{
	int c;

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
			return 1;
		return error_set(e, EXIT_USAGE, "which device? (shoal vhost-user blk|net|rng ...)");
	}
	o->kind = argv[1];
	optind = 2;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vqh", vu_options, NULL)) != -1) {
		if (c == 'h')
			return 1;
		if (c == '?' || c == ':')
			return error_set(e, EXIT_USAGE, "%s '%s' (shoal vhost-user --help)",
					 c == ':' ? "missing value for" : "unknown option",
					 argv[optind - 1]);
		if (vu_apply_opt(c, optarg, o, e))
			return -1;
	}
	if (optind < argc)
		return error_set(e, EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	return vu_check_opts(o, e);
}

/* ---- the three models ---- */

static void vu_blk_drain(void *priv)
{
	vblk_drain(priv);
}

static int vu_blk_setup(struct vu_server *s, const struct vu_opts *o, struct error *e)
{
	struct vblk *b;
	int rc;
	struct vu_model m = { .name = "vhost-user-blk0", .drain = vu_blk_drain };

	if (vblk_new(&b, &o->cfg.disks[0], m.name, e))
		return -1;
	m.ops = vblk_ops(b);
	m.priv = b;
	if (vu_server_set_model(s, &m, e))
		return -1;              /* b is freed with the server */
	rc = vblk_start(b, vu_server_lock(s));
	if (rc)
		return error_set(e, EXIT_HOST, "%s: I/O thread: %s", m.name, strerror(-rc));
	return 0;
}

/* "52:54:00:12:34:56" -> 6 bytes; 0 or -1. */
static int vu_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char end;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

static int vu_net_setup(struct vu_server *s, const struct vu_opts *o, struct error *e)
{
	const struct vm_net *c = &o->cfg.nets[0];
	uint8_t mac[6];
	struct virtio_net_params p = { .tap = c->tap, .fd = c->fd,
				       .queues = c->queues ? c->queues : 1 };
	struct vu_model m = { .name = "vhost-user-net0", .event_fd = virtio_net_event_fd,
			      .poll = virtio_net_poll };

	if (c->mac) {
		if (vu_parse_mac(c->mac, mac))
			return error_set(e, EXIT_USAGE, "bad MAC '%s'", c->mac);
		p.mac = mac;
	}
	m.ops = virtio_net_new(&p, &m.priv, e);
	if (!m.ops)
		return -1;
	return vu_server_set_model(s, &m, e);
}

static int vu_rng_setup(struct vu_server *s, const struct vu_opts *o, struct error *e)
{
	struct vu_model m = { .name = "vhost-user-rng0" };

	if (virtio_rng_model(vu_server_host(s), o->cfg.rng_rate, vu_server_lock(s), &m.ops, &m.priv, e))
		return -1;
	return vu_server_set_model(s, &m, e);
}

/* Build the server for `o` and listen; NULL with `e`. */
static struct vu_server *vu_build(const struct vu_opts *o, struct error *e)
{
	struct vu_server *s = vu_server_new(e);
	int rc;

	if (!s)
		return NULL;
	if (!strcmp(o->kind, "blk"))
		rc = vu_blk_setup(s, o, e);
	else if (!strcmp(o->kind, "net"))
		rc = vu_net_setup(s, o, e);
	else
		rc = vu_rng_setup(s, o, e);
	if (rc == 0)
		rc = vu_server_listen(s, o->socket, e);
	if (rc == 0 && vu_server_start(s))
		rc = error_set(e, EXIT_HOST, "cannot start the event loop thread");
	if (rc) {
		vu_server_free(s);
		return NULL;
	}
	return s;
}

int cmd_vhost_user(int argc, char **argv)
{
	struct vu_opts o = { 0 };
	struct error e = { 0 };
	struct vu_server *s;
	sigset_t set;
	int rc, sig = 0;

	vm_config_init(&o.cfg);
	rc = vu_parse(argc, argv, &o, &e);
	if (rc) {
		if (rc > 0)
			vu_usage(stdout);
		else
			log_error("%s", e.msg);
		vm_config_free(&o.cfg);
		return rc > 0 ? 0 : e.status;
	}
	log_threshold = o.quiet ? LOG_ERROR : o.verbose ? LOG_DEBUG : LOG_INFO;
	/* Block the stop signals before any thread exists, so all inherit it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	s = vu_build(&o, &e);
	if (!s) {
		log_error("%s", e.msg);
		vm_config_free(&o.cfg);
		return e.status ? e.status : EXIT_HOST;
	}
	log_info("vhost-user %s: listening on %s", o.kind, o.socket);
	sigwait(&set, &sig);
	log_info("vhost-user %s: %s; stopping", o.kind, strsignal(sig));
	vu_server_free(s);
	vm_config_free(&o.cfg);
	return 0;
}
