/*
 * shoald_main.c - the `shoald` program: options, signals, and the life of
 * the daemon process.
 *
 *   shoald [--state-dir DIR] [--socket PATH] [--vmm PATH]
 *          [--allow-dir DIR]... [--grant user:NAME=ROLE|group:NAME=ROLE]...
 *          [--client-timeout S] [--request-timeout S] [--max-peer-connections N]
 *          [--stop-timeout S] [--start-timeout S]
 *          [--listen ADDR:PORT --tls-cert PEM --tls-key PEM --token-file FILE
 *           [--token-role ROLE]]
 *   shoald --list-routes
 *
 * It runs in the foreground (systemd runs it as a Type=notify service: it
 * says READY=1 once its API serves, sd_notify.c; tests run it directly).  SIGTERM or SIGINT stops serving and
 * exits; the VMs keep running and a later shoald reattaches to them.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/api.h"
#include "host/host.h"
#include "host/memmgr.h"
#include "host/sd_notify.h"
#include "base/size.h"
#include "base/log.h"
#include "base/exitcode.h"

/* The --help text. */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: shoald [OPTIONS]\n\n"
		"The Shoal host daemon: runs VMs (one `shoal run` process each) and serves\n"
		"the HTTP API (api/openapi.yaml) on a Unix socket.\n\n"
		"  --state-dir DIR      database, sockets, VM directories (default /var/lib/shoal)\n"
		"  --socket PATH        API socket (default STATE_DIR/shoald.sock)\n"
		"  --socket-group GROUP the API socket's group (name or gid; default: shoal, when\n"
		"                       the host has that group); its members may connect\n"
		"  --vmm PATH           the shoal binary to run VMs with (default: next to shoald)\n"
		"  --allow-dir DIR      files clients name (kernels, disks, backing files, sockets)\n"
		"                       must lie beneath DIR; repeatable (default STATE_DIR/images)\n"
		"  --grant WHO=ROLE     WHO user:NAME or group:NAME (or numeric ids), ROLE read,\n"
		"                       operate or admin; repeatable (root: always admin)\n"
		"  --jail on|off        run each VMM jailed: namespaces of its own, an empty\n"
		"                       root, a uid and gid of its own, no capabilities\n"
		"                       (default on when shoald is root; docs/security.md)\n"
		"  --jail-uid-base N    the VMs' jail uids and gids start at N (default 2000000)\n"
		"  --memory-budget SIZE memory the VMs may hold together: over it, the memory\n"
		"                       manager reclaims through their balloons by shares,\n"
		"                       idle memory taxed (docs/memory.md; default: off)\n"
		"  --idle-tax T         the tax on idle memory, 0 to 0.99 or 0%% to 99%% (0.75)\n"
		"  --memory-period S    seconds between the manager's rounds (default 5)\n"
		"  --client-timeout S   close a connection silent for S seconds (default 30)\n"
		"  --request-timeout S  close a connection whose request is not whole after S\n"
		"                       seconds (default 60)\n"
		"  --max-peer-connections N  connections one user (TCP: one address) may hold\n"
		"                       (default 128)\n"
		"  --stop-timeout S     default graceful stop timeout (default 10)\n"
		"  --start-timeout S    how long a starting VMM may take to answer (default 30)\n"
		"  --listen ADDR:PORT   also serve HTTPS on TCP; needs the three below\n"
		"  --tls-cert FILE      PEM certificate for --listen\n"
		"  --tls-key FILE       PEM private key for --listen\n"
		"  --token-file FILE    bearer token clients must send on TCP\n"
		"  --token-role ROLE    what a client with the token may do (default admin)\n"
		"  --log-level LEVEL    error, warn, info (default: with one access line per\n"
		"                       API call) or debug; lines carry a UTC timestamp, or a\n"
		"                       journald priority when stderr is the journal\n"
		"  --store DIR          the host's image store (made if missing): snapshots\n"
		"                       push into it and pull from it (docs/daemon.md)\n"
		"  --store-server URL   the image server snapshots are pulled from\n"
		"  --store-cert FILE    this host's certificate for it (its key pair is the\n"
		"                       host's identity there: grants name it)\n"
		"  --store-key FILE     this host's private key\n"
		"  --store-ca FILE      the CA of the server's certificate\n"
		"  --list-routes        print the API routes and exit\n");
}

/* Print the route table, one "METHOD PATH" a line (daemon_openapi.sh reads it). */
static void list_routes(void)
{
	for (size_t i = 0; i < api_nroutes; i++)
		printf("%s %s\n", api_routes[i].method, api_routes[i].path);
}

/* Parse a seconds option, or die. */
static unsigned opt_seconds(const char *name, const char *v)
{
	long long s = api_parse_uint(v, 86400);

	if (s <= 0) {
		log_error("%s %s: expected seconds from 1 to 86400", name, v);
		exit(EXIT_USAGE);
	}
	return (unsigned)s;
}

/* A count option from 1 to max, or die. */
static unsigned opt_count(const char *name, const char *v, long long max)
{
	long long n = api_parse_uint(v, max);

	if (n <= 0) {
		log_error("%s %s: expected a number from 1 to %lld", name, v, max);
		exit(EXIT_USAGE);
	}
	return (unsigned)n;
}

/* The options that say who may do what and where; -1 on a bad one. */
static int parse_access_option(int c, const char *v, struct host_options *o)
{
	struct api_err e;
	int role;

	switch (c) {
	case 'A':
		if (o->nallow_dirs == PATH_MAX_ROOTS) {
			log_error("--allow-dir: at most %d directories", PATH_MAX_ROOTS);
			return -1;
		}
		o->allow_dirs[o->nallow_dirs++] = v;
		return 0;
	case 'G':
		if (host_authz_grant(&o->authz, v, &e) == 0)
			return 0;
		log_error("%s", e.msg);
		return -1;
	default:    /* 'R': --token-role */
		role = host_role_parse(v);
		if (role > 0) {
			o->token_role = (enum host_role)role;
			return 0;
		}
		log_error("--token-role %s: expected read, operate or admin", v);
		return -1;
	}
}

/* The memory manager's options (memmgr.c). */
static uint64_t mem_budget;
static double mem_tau = MEMMGR_DEFAULT_TAU;
static unsigned mem_period_ms = 5000;

static int parse_memory_option(int c, const char *v)
{
	char *end;
	double d;

	if (c == 'M') {
		if (size_parse(v, &mem_budget) || mem_budget < (1ull << 20)) {
			log_error("--memory-budget %s: expected a size such as \"8G\", at least 1M", v);
			return -1;
		}
		return 0;
	}
	errno = 0;
	d = strtod(v, &end);
	if (c == 'X' && end != v && *end == '%' && !end[1])
		d /= 100, end++;
	if (errno || end == v || *end || !(d >= 0) ||
	    (c == 'X' ? d > 0.99 : d < 0.1 || d > 3600)) {
		log_error(c == 'X' ? "--idle-tax %s: expected 0 to 0.99 (or 0%% to 99%%)" :
			  "--memory-period %s: expected seconds from 0.1 to 3600", v);
		return -1;
	}
	if (c == 'X')
		mem_tau = d;
	else
		mem_period_ms = (unsigned)(d * 1000 + 0.5);
	return 0;
}

/* Fill `o` from the command line; -1 on a bad option. */
static int parse_options(int argc, char **argv, struct host_options *o)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "socket", required_argument, NULL, 's' },
		{ "socket-group", required_argument, NULL, 'g' },
		{ "vmm", required_argument, NULL, 'm' },
		{ "client-timeout", required_argument, NULL, 'c' },
		{ "stop-timeout", required_argument, NULL, 't' },
		{ "start-timeout", required_argument, NULL, 'S' },
		{ "listen", required_argument, NULL, 'l' },
		{ "tls-cert", required_argument, NULL, 'C' },
		{ "tls-key", required_argument, NULL, 'K' },
		{ "token-file", required_argument, NULL, 'T' },
		{ "token-role", required_argument, NULL, 'R' },
		{ "allow-dir", required_argument, NULL, 'A' },
		{ "grant", required_argument, NULL, 'G' },
		{ "jail", required_argument, NULL, 'J' },
		{ "jail-uid-base", required_argument, NULL, 'B' },
		{ "memory-budget", required_argument, NULL, 'M' },
		{ "idle-tax", required_argument, NULL, 'X' },
		{ "memory-period", required_argument, NULL, 'P' },
		{ "request-timeout", required_argument, NULL, 'q' },
		{ "max-peer-connections", required_argument, NULL, 'p' },
		{ "store", required_argument, NULL, 256 },
		{ "store-server", required_argument, NULL, 257 },
		{ "store-cert", required_argument, NULL, 258 },
		{ "store-key", required_argument, NULL, 259 },
		{ "store-ca", required_argument, NULL, 260 },
		{ "list-routes", no_argument, NULL, 'L' },
		{ "log-level", required_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': o->state_dir = optarg; break;
		case 's': o->socket_path = optarg; break;
		case 'g': o->socket_group = optarg; break;
		case 'm': o->vmm_path = optarg; break;
		case 'c': o->client_timeout_s = opt_seconds("--client-timeout", optarg); break;
		case 't': o->stop_timeout_s = opt_seconds("--stop-timeout", optarg); break;
		case 'S': o->start_timeout_s = opt_seconds("--start-timeout", optarg); break;
		case 'l': o->listen = optarg; break;
		case 'C': o->tls_cert = optarg; break;
		case 'K': o->tls_key = optarg; break;
		case 'T': o->token_file = optarg; break;
		case 'q': o->request_timeout_s = opt_seconds("--request-timeout", optarg); break;
		case 'p': o->max_peer_conns = opt_count("--max-peer-connections", optarg, 100000); break;
		case 'A': case 'G': case 'R':
			if (parse_access_option(c, optarg, o))
				return -1;
			break;
		case 'V':
			if (log_level_parse(optarg, &log_threshold)) {
				log_error("--log-level %s: expected error, warn, info or debug", optarg);
				return -1;
			}
			break;
		case 'J':
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				log_error("--jail %s: expected on or off", optarg);
				return -1;
			}
			o->jail = !strcmp(optarg, "on") ? 1 : -1;
			break;
		case 'B':
			o->jail_uid_base = opt_count("--jail-uid-base", optarg, 4000000000U);
			break;
		case 'M': case 'X': case 'P':
			if (parse_memory_option(c, optarg))
				return -1;
			break;
		case 256: o->store_dir = optarg; break;         /* api_store.c */
		case 257: o->store_server = optarg; break;
		case 258: o->store_cert = optarg; break;
		case 259: o->store_key = optarg; break;
		case 260: o->store_ca = optarg; break;
		case 'L': list_routes(); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		log_error("unexpected argument '%s'", argv[optind]);
		return -1;
	}
	return 0;
}

/* Open the host, serve, wait for SIGTERM/SIGINT; the monitor mode if asked. */
int main(int argc, char **argv)
{
	struct host_options o = { 0 };
	struct api_err e;
	struct host h;
	sigset_t set;
	int sig;

	if (argc > 1 && !strcmp(argv[1], "--monitor"))
		return supervisor_monitor_main(argc, argv);
	o.monitor_exe = "/proc/self/exe";
	log_daemon_mode("shoald");      /* levels, and timestamps or journald priorities */
	log_threshold = LOG_INFO;
	if (parse_options(argc, argv, &o))
		return EXIT_USAGE;
	/* Signals are taken synchronously by this thread; every other thread
	 * (libmicrohttpd's, the supervisor) inherits the blocked mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (host_open(&h, &o, &e)) {
		log_error("%s", e.msg);
		return e.http == 409 ? EXIT_RESOURCE : EXIT_HOST;
	}
	if (api_start(&h, &e)) {
		log_error("%s", e.msg);
		host_close(&h);
		return e.http == 400 ? EXIT_USAGE : EXIT_HOST;
	}
	if (memmgr_start(&h, mem_budget, mem_tau, mem_period_ms, &e)) {
		log_error("%s", e.msg);
		api_stop(&h);
		host_close(&h);
		return EXIT_HOST;
	}
	log_info("serving on %s (state in %s, %zu VMs)", h.socket_path,
		h.state_dir, h.nvms);
	if (sd_notify_send("READY=1\nSTATUS=serving") < 0)
		log_warn("cannot tell systemd it is ready ($NOTIFY_SOCKET): %s", strerror(errno));
	do {
		if (sigwait(&set, &sig))
			break;
	} while (sig == SIGHUP);
	log_info("%s: stopping; VMs keep running", strsignal(sig));
	sd_notify_send("STOPPING=1");
	api_stop(&h);           /* no handler reads the manager's table after this */
	memmgr_stop(&h);
	host_close(&h);
	return 0;
}
