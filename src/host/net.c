/*
 * net.c - the networks shoald manages (net.h, docs/networks.md).
 *
 * What runs, per network NAME on subnet S with first address G:
 *   - `ip link add sb-NAME type bridge`, `ip addr replace G/P dev sb-NAME`,
 *     `ip link set sb-NAME up`.  iproute2's `ip`, not netlink written here:
 *     the bridge, its address and a TAP are six short commands that an
 *     operator reads and runs the same way, iproute2 is on every Debian
 *     system, and each step's error comes back in ip's own words.  A fork
 *     per step costs a few milliseconds, at network create and VM start
 *     only.
 *   - one nftables table, "inet shoal_NAME", replaced whole in one `nft -f`
 *     transaction (so it is never half there): NAT networks masquerade
 *     S to anywhere outside S and forward S out and the answers back in;
 *     isolated ones drop everything from the bridge to the host but DHCP
 *     and DNS to G, and forward nothing in or out.  Traffic between two
 *     VMs of one network is bridged, not routed: no rule sees it.  NAT also
 *     sets net.ipv4.ip_forward to 1 (left on at delete: other networks or
 *     the host may rely on it).
 *   - dnsmasq (Debian's dnsmasq-base) as a child of the daemon, bound to
 *     the bridge only, DHCP on S from the second address up, its lease
 *     file, pid file and log in STATE_DIR/networks/NAME/.  A watcher
 *     thread reaps it and starts it again when it dies; delete and the
 *     daemon's shutdown stop it (SIGTERM).  A dnsmasq a killed daemon left
 *     behind is found by its pid file and stopped before a new one starts.
 *
 * The database (db.c, table networks) is the truth; at daemon start every
 * network is brought up again (the bridge made if it is gone, the table
 * replaced, dnsmasq started).  Failures there are logged, not fatal: the
 * daemon serves its VMs regardless.
 *
 * Locking: nets->lock guards the list and serializes the commands of one
 * network operation (create, delete, a VM's TAPs); it is taken before
 * host->lock where both are needed (delete looks for the VMs that use the
 * network), never after it: host_spec_parse, which asks host_net_known,
 * is never called under host->lock, and host->lock is never held while
 * a command runs.
 *
 * What a client may not do: name an interface or a table other than its
 * own network's (names are [a-z0-9_-], prefixed), give a subnet that is
 * not private or overlaps another network (409), or delete a network a
 * VM's spec names (409, naming the VMs).
 */
#include "host/net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/timespec.h"
#include "host/api.h"
#include "vmm/config.h"

/* ---- pure parts ---- */

bool net_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > NET_NAME_MAX || !(islower((unsigned char)name[0]) ||
					    isdigit((unsigned char)name[0])))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) &&
		    name[i] != '_' && name[i] != '-')
			return false;
	return true;
}

static bool net_private(uint32_t a, int prefix)
{
	return ((a >> 24) == 10 && prefix >= 8) ||
	       ((a & 0xfff00000u) == 0xac100000u && prefix >= 12) ||
	       ((a & 0xffff0000u) == 0xc0a80000u && prefix >= 16);
}

int net_subnet_parse(const char *s, struct net_subnet *sn, char *why, size_t size)
{
	unsigned b[4], p;
	char tail;
	uint32_t a, mask;

	if (strlen(s) > 18 || sscanf(s, "%3u.%3u.%3u.%3u/%2u%c", &b[0], &b[1], &b[2], &b[3], &p,
				     &tail) != 5 || !isdigit((unsigned char)s[0])) {
		snprintf(why, size, "\"%.40s\" is not an IPv4 subnet such as 10.89.1.0/24", s);
		return -1;
	}
	for (const char *c = s; *c; c++)
		if (!isdigit((unsigned char)*c) && *c != '.' && *c != '/') {
			snprintf(why, size, "\"%.40s\" is not an IPv4 subnet such as 10.89.1.0/24", s);
			return -1;
		}
	if (b[0] > 255 || b[1] > 255 || b[2] > 255 || b[3] > 255) {
		snprintf(why, size, "\"%.40s\": each of the four numbers is 0 to 255", s);
		return -1;
	}
	if (p < 16 || p > 28) {
		snprintf(why, size, "\"%.40s\": the prefix must be 16 to 28 (a bridge, DHCP "
			 "addresses and at most 65536 VMs)", s);
		return -1;
	}
	a = b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
	mask = ~0u << (32 - p);
	if (a & ~mask) {
		snprintf(why, size, "\"%.40s\" has host bits set (the network is %u.%u.%u.%u/%u)", s,
			 (a & mask) >> 24, (a & mask) >> 16 & 255, (a & mask) >> 8 & 255,
			 (a & mask) & 255, p);
		return -1;
	}
	if (!net_private(a, (int)p)) {
		snprintf(why, size, "\"%.40s\" is not a private network (10.0.0.0/8, "
			 "172.16.0.0/12, 192.168.0.0/16)", s);
		return -1;
	}
	sn->addr = a;
	sn->prefix = (int)p;
	return 0;
}

void net_subnet_addr(const struct net_subnet *sn, uint32_t n, char *out, size_t size)
{
	uint32_t a = sn->addr + n;

	snprintf(out, size, "%u.%u.%u.%u", a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255);
}

void net_subnet_format(const struct net_subnet *sn, char *out, size_t size)
{
	char a[16];

	net_subnet_addr(sn, 0, a, sizeof(a));
	snprintf(out, size, "%s/%d", a, sn->prefix);
}

bool net_subnet_overlap(const struct net_subnet *a, const struct net_subnet *b)
{
	int p = a->prefix < b->prefix ? a->prefix : b->prefix;
	uint32_t mask = ~0u << (32 - p);

	return (a->addr & mask) == (b->addr & mask);
}

void net_tap_name(const char *vm, int idx, char out[16])
{
	uint32_t h = 2166136261u;      /* FNV-1a */
	char head[7];
	size_t i;

	for (const char *c = vm; *c; c++)
		h = (h ^ (unsigned char)*c) * 16777619u;
	for (i = 0; i < 6 && vm[i]; i++)
		head[i] = vm[i];
	head[i] = '\0';
	snprintf(out, 16, "t%s-%06x%d", head, h & 0xffffff, idx & 7);
}

int net_spec_networks(const char *spec_json, char (*names)[NET_NAME_MAX + 1], int max)
{
	json_t *root = json_loads(spec_json ? spec_json : "{}", 0, NULL), *nets, *n;
	size_t i;
	int count = 0;

	nets = json_object_get(root, "nets");
	json_array_foreach(nets, i, n) {
		const char *v = json_string_value(json_object_get(n, "network"));

		if (count == max)
			break;
		snprintf(names[count++], NET_NAME_MAX + 1, "%s",
			 v && net_name_valid(v) ? v : "");
	}
	json_decref(root);
	return count;
}

/* ---- the daemon's networks ---- */

struct hnet {
	struct net_record rec;
	struct net_subnet sn;
	char bridge[IFNAMSIZ];
	pid_t dnsmasq;              /* our child, or 0 */
	unsigned restarts;          /* dnsmasq restarts by the watcher */
	char status[160];           /* "" up, else why not */
};

struct host_nets {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct hnet **v;
	size_t n;
	bool stop;
	pthread_t watcher;
	bool watching;
	char dir[4200];             /* STATE_DIR/networks */
};

static struct host *net_host;   /* the daemon's, for host_net_known */

static struct hnet *net_find(struct host_nets *ns, const char *name)
{
	for (size_t i = 0; i < ns->n; i++)
		if (!strcmp(ns->v[i]->rec.name, name))
			return ns->v[i];
	return NULL;
}

/* The absolute path of a system program, or its bare name. */
static const char *net_prog(const char *name, char *buf, size_t size)
{
	static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };

	for (size_t i = 0; i < 4; i++) {
		snprintf(buf, size, "%s/%s", dirs[i], name);
		if (access(buf, X_OK) == 0)
			return buf;
	}
	snprintf(buf, size, "%s", name);
	return buf;
}

/* Run argv (argv[0] a program's name), `input` on its stdin; 0, or -1 with
 * its last line of output (or why it did not run) in `e` (500). */
static int net_run(const char *const *argv, const char *input, struct api_err *e)
{
	char prog[64], out[512] = "", cmd[256] = "";
	int in[2] = { -1, -1 }, op[2], status;
	ssize_t n, len = 0;
	pid_t pid;

	for (int i = 0; argv[i]; i++)
		snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), "%s%s", i ? " " : "", argv[i]);
	net_prog(argv[0], prog, sizeof(prog));
	if (pipe2(op, O_CLOEXEC) < 0 || (input && pipe2(in, O_CLOEXEC) < 0))
		return api_err_set(e, 500, "internal", "%s: pipe: %s", cmd, strerror(errno));
	pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(input ? in[0] : nul, 0);
		dup2(op[1], 1);
		dup2(op[1], 2);
		execv(prog, (char *const *)argv);
		dprintf(2, "cannot run %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	close(op[1]);
	if (input) {
		close(in[0]);
		if (pid > 0 && write(in[1], input, strlen(input)) < 0)
			log_warn("%s: writing its input: %s", cmd, strerror(errno));
		close(in[1]);
	}
	if (pid < 0) {
		close(op[0]);
		return api_err_set(e, 500, "internal", "%s: fork: %s", cmd, strerror(errno));
	}
	while ((n = read(op[0], out + len, sizeof(out) - 1 - (size_t)len)) > 0 &&
	       len + n < (ssize_t)sizeof(out) - 1)
		len += n;
	if (n > 0)
		len += n;
	out[len] = '\0';
	close(op[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	while (len > 0 && out[len - 1] == '\n')
		out[--len] = '\0';
	char *last = strrchr(out, '\n');
	return api_err_set(e, 500, "network_failed", "%.120s: %s", cmd,
			   out[0] ? (last ? last + 1 : out) : "failed");
}

static bool net_link_exists(const char *ifname)
{
	return if_nametoindex(ifname) != 0;
}

/* The nftables table of `n`, replaced whole (nft -f is one transaction). */
static int net_firewall(const struct hnet *n, struct api_err *e)
{
	static const char *const argv[] = { "nft", "-f", "-", NULL };
	char sub[32], gw[16], script[2048];
	const char *br = n->bridge, *nm = n->rec.name;

	net_subnet_format(&n->sn, sub, sizeof(sub));
	net_subnet_addr(&n->sn, 1, gw, sizeof(gw));
	if (n->rec.isolated)
		snprintf(script, sizeof(script),
			 "table inet shoal_%s\ndelete table inet shoal_%s\n"
			 "table inet shoal_%s {\n"
			 " chain input { type filter hook input priority -10; policy accept;\n"
			 "  iifname \"%s\" udp dport 67 accept\n"
			 "  iifname \"%s\" ip daddr %s udp dport 53 accept\n"
			 "  iifname \"%s\" ip daddr %s tcp dport 53 accept\n"
			 "  iifname \"%s\" drop\n }\n"
			 " chain forward { type filter hook forward priority -10; policy accept;\n"
			 "  iifname \"%s\" drop\n  oifname \"%s\" drop\n }\n"
			 " chain output { type filter hook output priority -10; policy accept;\n"
			 "  oifname \"%s\" udp sport 67 accept\n"
			 "  oifname \"%s\" ip saddr %s udp sport 53 accept\n"
			 "  oifname \"%s\" ip saddr %s tcp sport 53 accept\n"
			 "  oifname \"%s\" drop\n }\n}\n",
			 nm, nm, nm, br, br, gw, br, gw, br, br, br, br, br, gw, br, gw, br);
	else
		snprintf(script, sizeof(script),
			 "table inet shoal_%s\ndelete table inet shoal_%s\n"
			 "table inet shoal_%s {\n"
			 " chain forward { type filter hook forward priority -10; policy accept;\n"
			 "  iifname \"%s\" ip saddr %s accept\n"
			 "  oifname \"%s\" ct state established,related accept\n"
			 "  iifname \"%s\" drop\n  oifname \"%s\" drop\n }\n"
			 " chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
			 "  ip saddr %s ip daddr != %s masquerade\n }\n}\n",
			 nm, nm, nm, br, sub, br, br, br, sub, sub);
	const char *const *a = argv;
	int rc;
	/* nft reads the script from stdin */
	rc = net_run(a, script, e);
	if (rc)
		return rc;
	if (!n->rec.isolated) {
		int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);

		if (fd < 0 || write(fd, "1", 1) != 1) {
			if (fd >= 0)
				close(fd);
			return api_err_set(e, 500, "network_failed",
					   "net.ipv4.ip_forward: %s", strerror(errno));
		}
		close(fd);
	}
	return 0;
}

static void net_dir(const struct host_nets *ns, const char *name, const char *file,
		    char *out, size_t size)
{
	snprintf(out, size, "%s/%s%s%s", ns->dir, name, file ? "/" : "", file ? file : "");
}

/* Stop a dnsmasq a killed daemon left running on this network (its pid
 * file names it, and /proc says it is a dnsmasq). */
static void net_stop_stale(const struct host_nets *ns, const struct hnet *n)
{
	char path[4300], comm[32] = "";
	FILE *f;
	int pid = 0;

	net_dir(ns, n->rec.name, "dnsmasq.pid", path, sizeof(path));
	f = fopen(path, "re");
	if (!f)
		return;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	if (pid <= 1)
		return;
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	f = fopen(path, "re");
	if (f) {
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = '\0';
		fclose(f);
	}
	if (!strncmp(comm, "dnsmasq", 7)) {
		log_info("network %s: stopping dnsmasq pid %d left from an earlier daemon",
			 n->rec.name, pid);
		kill(pid, SIGTERM);
		for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
			usleep(20000);
	}
}

/* Start dnsmasq for `n` as our child.  Lock held. */
static int net_dnsmasq_start(struct host_nets *ns, struct hnet *n, struct api_err *e)
{
	char prog[64], dir[4300], lease[4400], pidf[4400], logf[4400], iface[40], range[96],
	     listen[48], router[48];
	char gw[16], lo[16], hi[16], mask[16];
	uint32_t size = 1u << (32 - n->sn.prefix);
	struct net_subnet m = { ~0u << (32 - n->sn.prefix), 32 };
	pid_t pid;

	net_dir(ns, n->rec.name, NULL, dir, sizeof(dir));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return api_err_set(e, 500, "internal", "%s: %s", dir, strerror(errno));
	net_dir(ns, n->rec.name, "leases", lease, sizeof(lease));
	net_dir(ns, n->rec.name, "dnsmasq.pid", pidf, sizeof(pidf));
	net_dir(ns, n->rec.name, "dnsmasq.log", logf, sizeof(logf));
	net_subnet_addr(&n->sn, 1, gw, sizeof(gw));
	net_subnet_addr(&n->sn, 2, lo, sizeof(lo));
	net_subnet_addr(&n->sn, size - 2, hi, sizeof(hi));
	m.addr = ~0u << (32 - n->sn.prefix);
	net_subnet_addr(&m, 0, mask, sizeof(mask));
	snprintf(iface, sizeof(iface), "--interface=%s", n->bridge);
	snprintf(range, sizeof(range), "--dhcp-range=%s,%s,%s,1h", lo, hi, mask);
	snprintf(listen, sizeof(listen), "--listen-address=%s", gw);
	/* isolated: no default route offered (option 3 empty) */
	snprintf(router, sizeof(router), n->rec.isolated ? "--dhcp-option=3" : "--dhcp-option=3,%s", gw);
	char lf[4420], pf[4420];
	snprintf(lf, sizeof(lf), "--dhcp-leasefile=%s", lease);
	snprintf(pf, sizeof(pf), "--pid-file=%s", pidf);
	const char *argv[] = {
		"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--log-facility=-",
		"--bind-interfaces", "--except-interface=lo", iface, listen, range, router,
		"--dhcp-authoritative", "--log-dhcp", lf, pf, "--user=root",
		n->rec.isolated ? "--no-resolv" : "--domain-needed", NULL,
	};
	net_prog("dnsmasq", prog, sizeof(prog));
	if (access(prog, X_OK) < 0)
		return api_err_set(e, 500, "network_failed",
				   "network %s: dnsmasq is not installed (Debian's dnsmasq-base; "
				   "scripts/install-deps.sh)", n->rec.name);
	pid = fork();
	if (pid < 0)
		return api_err_set(e, 500, "internal", "fork: %s", strerror(errno));
	if (pid == 0) {
		int log = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600),
		    nul = open("/dev/null", O_RDONLY);

		setsid();
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		dup2(nul, 0);
		dup2(log, 1);
		dup2(log, 2);
		syscall(SYS_close_range, 3, ~0U, 0);
		execv(prog, (char *const *)argv);
		_exit(127);
	}
	n->dnsmasq = pid;
	return 0;
}

/* Stop `n`'s dnsmasq and reap it.  Lock held. */
static void net_dnsmasq_stop(struct hnet *n)
{
	int status;

	if (n->dnsmasq <= 0)
		return;
	kill(n->dnsmasq, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(n->dnsmasq, &status, WNOHANG) != 0)
			goto done;
		usleep(10000);
	}
	kill(n->dnsmasq, SIGKILL);
	waitpid(n->dnsmasq, &status, 0);
done:
	n->dnsmasq = 0;
}

/* Bridge, address, firewall, dnsmasq.  Lock held. */
static int net_up(struct host_nets *ns, struct hnet *n, struct api_err *e)
{
	char addr[40], gw[16];
	const char *br = n->bridge;

	net_subnet_addr(&n->sn, 1, gw, sizeof(gw));
	snprintf(addr, sizeof(addr), "%s/%d", gw, n->sn.prefix);
	if (!net_link_exists(br)) {
		const char *const a1[] = { "ip", "link", "add", br, "type", "bridge", NULL };

		if (net_run(a1, NULL, e))
			return -1;
	}
	const char *const a2[] = { "ip", "addr", "replace", addr, "dev", br, NULL };
	const char *const a3[] = { "ip", "link", "set", br, "up", NULL };
	if (net_run(a2, NULL, e) || net_run(a3, NULL, e) || net_firewall(n, e))
		return -1;
	if (n->dnsmasq <= 0) {
		net_stop_stale(ns, n);
		if (net_dnsmasq_start(ns, n, e))
			return -1;
	}
	return 0;
}

/* dnsmasq, the table, the bridge.  Lock held. */
static void net_down(struct host_nets *ns, struct hnet *n)
{
	char tbl[32], dir[4300];
	struct api_err e;

	net_dnsmasq_stop(n);
	net_stop_stale(ns, n);
	snprintf(tbl, sizeof(tbl), "shoal_%.12s", n->rec.name);
	const char *const a1[] = { "nft", "delete", "table", "inet", tbl, NULL };
	const char *const a2[] = { "ip", "link", "del", n->bridge, NULL };
	if (net_run(a1, NULL, &e))
		log_warn("network %s: %s", n->rec.name, e.msg);
	if (net_link_exists(n->bridge) && net_run(a2, NULL, &e))
		log_warn("network %s: %s", n->rec.name, e.msg);
	net_dir(ns, n->rec.name, NULL, dir, sizeof(dir));
	host_rm_tree(dir);
}

/* The watcher: dnsmasq died, start it again. */
static void *net_watch(void *arg)
{
	struct host_nets *ns = arg;
	struct timespec ts;
	struct api_err e;
	int status;

	pthread_mutex_lock(&ns->lock);
	while (!ns->stop) {
		ts = timespec_after_ms(CLOCK_REALTIME, 250);
		pthread_cond_timedwait(&ns->wake, &ns->lock, &ts);
		if (ns->stop)
			break;
		for (size_t i = 0; i < ns->n; i++) {
			struct hnet *n = ns->v[i];

			if (n->dnsmasq <= 0 || waitpid(n->dnsmasq, &status, WNOHANG) != n->dnsmasq)
				continue;
			log_warn("network %s: dnsmasq (pid %d) %s %d; starting it again", n->rec.name,
				 (int)n->dnsmasq, WIFSIGNALED(status) ? "was killed by signal" :
				 "exited with status", WIFSIGNALED(status) ? WTERMSIG(status) :
				 WEXITSTATUS(status));
			n->dnsmasq = 0;
			n->restarts++;
			if (n->restarts > 1000 || net_dnsmasq_start(ns, n, &e)) {
				snprintf(n->status, sizeof(n->status), "dnsmasq is not running%s",
					 n->restarts > 1000 ? " (restarted too often)" : "");
				continue;
			}
		}
	}
	pthread_mutex_unlock(&ns->lock);
	return NULL;
}

static struct hnet *net_new(const struct net_record *r, struct api_err *e)
{
	struct hnet *n = calloc(1, sizeof(*n));
	char why[160];

	if (!n) {
		api_err_set(e, 500, "internal", "out of memory");
		return NULL;
	}
	n->rec = *r;
	if (!net_name_valid(r->name) || net_subnet_parse(r->subnet, &n->sn, why, sizeof(why))) {
		api_err_set(e, 500, "internal", "network %s: bad record (%s)", r->name, r->subnet);
		free(n);
		return NULL;
	}
	snprintf(n->bridge, sizeof(n->bridge), "sb-%.12s", r->name);
	return n;
}

static int net_add(struct host_nets *ns, struct hnet *n)
{
	struct hnet **v = realloc(ns->v, (ns->n + 1) * sizeof(*v));

	if (!v)
		return -1;
	ns->v = v;
	ns->v[ns->n++] = n;
	return 0;
}

static void net_load_one(void *arg, const struct net_record *r)
{
	struct host_nets *ns = arg;
	struct api_err e;
	struct hnet *n = net_new(r, &e);

	if (!n) {
		log_error("%s", e.msg);
		return;
	}
	if (net_add(ns, n))
		free(n);
}

int host_nets_open(struct host *h, struct api_err *e)
{
	struct host_nets *ns = calloc(1, sizeof(*ns));

	if (!ns)
		return api_err_set(e, 500, "internal", "out of memory");
	pthread_mutex_init(&ns->lock, NULL);
	pthread_cond_init(&ns->wake, NULL);
	snprintf(ns->dir, sizeof(ns->dir), "%s/networks", h->state_dir);
	h->nets = ns;
	if (mkdir(ns->dir, 0700) < 0 && errno != EEXIST)
		return api_err_set(e, 500, "internal", "%s: %s", ns->dir, strerror(errno));
	if (db_net_load_all(h->db, net_load_one, ns) < 0)
		return api_err_set(e, 500, "internal", "cannot read the network table");
	pthread_mutex_lock(&ns->lock);
	for (size_t i = 0; i < ns->n; i++) {
		struct api_err ue;

		if (net_up(ns, ns->v[i], &ue)) {
			snprintf(ns->v[i]->status, sizeof(ns->v[i]->status), "%.150s", ue.msg);
			log_error("network %s is not up: %s", ns->v[i]->rec.name, ue.msg);
		}
	}
	pthread_mutex_unlock(&ns->lock);
	if (pthread_create(&ns->watcher, NULL, net_watch, ns) == 0)
		ns->watching = true;
	net_host = h;
	return 0;
}

void host_nets_close(struct host *h)
{
	struct host_nets *ns = h->nets;

	if (!ns)
		return;
	if (net_host == h)
		net_host = NULL;
	pthread_mutex_lock(&ns->lock);
	ns->stop = true;
	pthread_cond_broadcast(&ns->wake);
	pthread_mutex_unlock(&ns->lock);
	if (ns->watching)
		pthread_join(ns->watcher, NULL);
	for (size_t i = 0; i < ns->n; i++) {
		net_dnsmasq_stop(ns->v[i]);
		free(ns->v[i]);
	}
	free(ns->v);
	pthread_cond_destroy(&ns->wake);
	pthread_mutex_destroy(&ns->lock);
	free(ns);
	h->nets = NULL;
}

bool host_net_known(const char *name)
{
	struct host *h = net_host;
	bool known;

	if (!h || !h->nets)
		return true;            /* no daemon: the start checks again */
	pthread_mutex_lock(&h->nets->lock);
	known = net_find(h->nets, name) != NULL;
	pthread_mutex_unlock(&h->nets->lock);
	return known;
}

/* Another VM that is not stopped whose card has TAP `tap` (two names with
 * the same first six characters and the same 24-bit hash): its name into
 * `who`, true.  Takes host->lock (never held by the caller). */
static bool net_tap_taken(struct host *h, const char *vm, const char *tap, char *who,
			  size_t size)
{
	char names[VM_MAX_NETS][NET_NAME_MAX + 1], other[16];
	bool taken = false;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nvms && !taken; i++) {
		struct hvm *o = h->vms[i];

		if (!strcmp(o->rec.name, vm) || o->state == HVM_CREATED || o->state == HVM_EXITED)
			continue;
		int count = net_spec_networks(o->rec.spec, names, VM_MAX_NETS);
		for (int k = 0; k < count && !taken; k++) {
			net_tap_name(o->rec.name, k, other);
			if (names[k][0] && !strcmp(other, tap)) {
				snprintf(who, size, "%s", o->rec.name);
				taken = true;
			}
		}
	}
	pthread_mutex_unlock(&h->lock);
	return taken;
}

int host_net_taps_up(struct host *h, const char *vm, const char *spec, struct api_err *e)
{
	char names[VM_MAX_NETS][NET_NAME_MAX + 1], tap[16];
	struct host_nets *ns = h->nets;
	int count = net_spec_networks(spec, names, VM_MAX_NETS);
	json_t *root = NULL;
	char who[HOST_NAME_MAX_LEN + 1];

	/* first: none of its TAPs is another running VM's (nothing made yet,
	 * nothing of the other VM's removed) */
	for (int i = 0; i < count; i++) {
		net_tap_name(vm, i, tap);
		if (names[i][0] && net_tap_taken(h, vm, tap, who, sizeof(who)))
			return api_err_set(e, 409, "in_use", "vm \"%s\": nets[%d]: its TAP %s is VM "
					   "\"%s\"'s (their names hash alike); rename one", vm, i, tap, who);
	}
	for (int i = 0; i < count; i++) {
		struct hnet *n;
		int queues;

		if (!names[i][0])
			continue;
		if (!ns)
			return api_err_set(e, 500, "internal", "networks are not set up");
		if (!root)
			root = json_loads(spec, 0, NULL);
		queues = (int)json_integer_value(json_object_get(
			json_array_get(json_object_get(root, "nets"), (size_t)i), "queues"));
		net_tap_name(vm, i, tap);
		pthread_mutex_lock(&ns->lock);
		n = net_find(ns, names[i]);
		if (!n) {
			pthread_mutex_unlock(&ns->lock);
			json_decref(root);
			host_net_taps_down(h, vm, spec);
			return api_err_set(e, 404, "not_found", "vm \"%s\": nets[%d]: no network \"%s\" "
					   "(shoal net list)", vm, i, names[i]);
		}
		const char *const del[] = { "ip", "link", "del", tap, NULL };
		const char *const add[] = { "ip", "tuntap", "add", "dev", tap, "mode", "tap",
					    "vnet_hdr", queues > 1 ? "multi_queue" : NULL, NULL };
		const char *const set[] = { "ip", "link", "set", tap, "master", n->bridge, "up", NULL };
		struct api_err ig;
		int rc = 0;

		if (net_link_exists(tap))       /* a crash's leftover */
			net_run(del, NULL, &ig);
		if (!net_link_exists(n->bridge))
			rc = net_up(ns, n, e);
		if (!rc)
			rc = net_run(add, NULL, e) || net_run(set, NULL, e);
		pthread_mutex_unlock(&ns->lock);
		if (rc) {
			json_decref(root);
			host_net_taps_down(h, vm, spec);
			return -1;
		}
	}
	json_decref(root);
	return 0;
}

void host_net_taps_down(struct host *h, const char *vm, const char *spec)
{
	char names[VM_MAX_NETS][NET_NAME_MAX + 1], tap[16];
	int count = net_spec_networks(spec, names, VM_MAX_NETS);
	struct api_err e;

	(void)h;
	for (int i = 0; i < count; i++) {
		if (!names[i][0])
			continue;
		net_tap_name(vm, i, tap);
		const char *const del[] = { "ip", "link", "del", tap, NULL };
		if (net_link_exists(tap) && net_run(del, NULL, &e))
			log_warn("vm %s: %s", vm, e.msg);
	}
}

/* ---- the API ---- */

static json_t *net_json(const struct hnet *n)
{
	char sub[32], gw[16];

	net_subnet_format(&n->sn, sub, sizeof(sub));
	net_subnet_addr(&n->sn, 1, gw, sizeof(gw));
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:i, s:I, s:s}",
			 "name", n->rec.name, "bridge", n->bridge, "subnet", sub, "gateway", gw,
			 "isolated", n->rec.isolated, "created_ms", (json_int_t)n->rec.created_ms,
			 "dnsmasq_pid", (int)n->dnsmasq, "dnsmasq_restarts",
			 (json_int_t)n->restarts, "status", n->status[0] ? n->status : "up");
}

/* Network names are [a-z0-9_-]{1,12}; the route's {name} allows more. */
static struct hnet *net_lookup(struct host_nets *ns, const char *name, struct api_err *e)
{
	struct hnet *n = ns ? net_find(ns, name) : NULL;

	if (!n)
		api_err_set(e, 404, "not_found", "network \"%.64s\" does not exist", name);
	return n;
}

int api_net_list(struct api_call *c)
{
	struct host_nets *ns = c->h->nets;
	json_t *arr = json_array();

	if (ns) {
		pthread_mutex_lock(&ns->lock);
		for (size_t i = 0; i < ns->n; i++)
			json_array_append_new(arr, net_json(ns->v[i]));
		pthread_mutex_unlock(&ns->lock);
	}
	return api_reply_json(c, 200, json_pack("{s:o}", "networks", arr));
}

int api_net_show(struct api_call *c)
{
	struct host_nets *ns = c->h->nets;
	struct api_err e;
	json_t *j = NULL;

	if (ns)
		pthread_mutex_lock(&ns->lock);
	struct hnet *n = net_lookup(ns, c->name, &e);
	if (n)
		j = net_json(n);
	if (ns)
		pthread_mutex_unlock(&ns->lock);
	return j ? api_reply_json(c, 200, j) : api_reply_error(c, &e);
}

/* The body {"name", "subnet" (optional), "isolated" (optional)}. */
static int net_parse_body(const char *body, size_t len, struct net_record *r, bool *has_subnet,
			  struct api_err *e)
{
	json_t *o, *v;
	const char *k;
	char why[200];
	struct net_subnet sn;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	*has_subnet = false;
	if (api_body_object(body, len, &o, e))
		return -1;
	json_object_foreach(o, k, v) {
		if (!strcmp(k, "name")) {
			if (!json_is_string(v) || !net_name_valid(json_string_value(v))) {
				rc = api_err_set(e, 400, "invalid_request",
						 "name: %s%.40s%s is not a network name (1 to %d of a-z, "
						 "0-9, '_' and '-', starting with a letter or digit)",
						 json_is_string(v) ? "\"" : "",
						 json_is_string(v) ? json_string_value(v) : "a non-string",
						 json_is_string(v) ? "\"" : "", NET_NAME_MAX);
				break;
			}
			snprintf(r->name, sizeof(r->name), "%s", json_string_value(v));
		} else if (!strcmp(k, "subnet")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v)) {
				rc = api_err_set(e, 400, "invalid_request", "subnet: must be a string");
				break;
			}
			if (net_subnet_parse(json_string_value(v), &sn, why, sizeof(why))) {
				rc = api_err_set(e, 400, "invalid_request", "subnet: %s", why);
				break;
			}
			net_subnet_format(&sn, r->subnet, sizeof(r->subnet));
			*has_subnet = true;
		} else if (!strcmp(k, "isolated")) {
			if (!json_is_boolean(v)) {
				rc = api_err_set(e, 400, "invalid_request", "isolated: must be true or false");
				break;
			}
			r->isolated = json_is_true(v);
		} else {
			rc = api_err_set(e, 400, "invalid_request",
					 "unknown key \"%.64s\" (name, subnet, isolated)", k);
			break;
		}
	}
	json_decref(o);
	if (!rc && !r->name[0])
		rc = api_err_set(e, 400, "invalid_request", "name: missing");
	return rc;
}

int api_net_create(struct api_call *c)
{
	struct host_nets *ns = c->h->nets;
	struct net_record r;
	struct net_subnet sn;
	struct api_err e;
	struct hnet *n = NULL;
	bool has_subnet;
	char why[200];
	int rc;

	if (net_parse_body(c->body, c->body_len, &r, &has_subnet, &e))
		return api_reply_error(c, &e);
	if (!ns) {
		api_err_set(&e, 500, "internal", "networks are not set up");
		return api_reply_error(c, &e);
	}
	pthread_mutex_lock(&ns->lock);
	if (net_find(ns, r.name)) {
		api_err_set(&e, 409, "name_taken", "network \"%s\" already exists", r.name);
		goto fail;
	}
	/* no subnet given: the first free 10.89.N.0/24 */
	for (unsigned k = 0; !has_subnet && k < 256; k++) {
		snprintf(r.subnet, sizeof(r.subnet), "10.89.%u.0/24", k);
		net_subnet_parse(r.subnet, &sn, why, sizeof(why));
		size_t i;
		for (i = 0; i < ns->n && !net_subnet_overlap(&sn, &ns->v[i]->sn); i++)
			;
		has_subnet = i == ns->n;
	}
	if (!has_subnet) {
		api_err_set(&e, 409, "subnet_taken", "no free subnet in 10.89.0.0/16: give --subnet");
		goto fail;
	}
	net_subnet_parse(r.subnet, &sn, why, sizeof(why));
	for (size_t i = 0; i < ns->n; i++)
		if (net_subnet_overlap(&sn, &ns->v[i]->sn)) {
			char other[32];

			net_subnet_format(&ns->v[i]->sn, other, sizeof(other));
			api_err_set(&e, 409, "subnet_taken", "subnet %s overlaps network \"%s\"'s %s",
				    r.subnet, ns->v[i]->rec.name, other);
			goto fail;
		}
	r.created_ms = host_now_ms();
	n = net_new(&r, &e);
	if (!n)
		goto fail;
	if (net_link_exists(n->bridge)) {
		api_err_set(&e, 409, "in_use", "network %s: the host already has an interface %s",
			    r.name, n->bridge);
		goto fail;
	}
	if (net_up(ns, n, &e)) {
		net_down(ns, n);
		goto fail;
	}
	rc = db_net_insert(c->h->db, &r);
	if (rc || net_add(ns, n)) {
		net_down(ns, n);
		api_err_set(&e, rc == -EEXIST ? 409 : 500, rc == -EEXIST ? "name_taken" : "internal",
			    "network \"%s\": %s", r.name, rc == -EEXIST ? "already exists" :
			    "cannot write the store");
		if (!rc)
			db_net_delete(c->h->db, r.name);
		goto fail;
	}
	json_t *j = net_json(n);
	pthread_mutex_unlock(&ns->lock);
	log_info("network %s: bridge %s on %s%s", r.name, n->bridge, r.subnet,
		 r.isolated ? ", isolated" : ", NAT");
	return api_reply_json(c, 201, j);
fail:
	pthread_mutex_unlock(&ns->lock);
	free(n);
	return api_reply_error(c, &e);
}

/* "a (running), b (created)" of the VMs whose spec names network `name`. */
static size_t net_users(struct host *h, const char *name, char *buf, size_t size)
{
	char names[VM_MAX_NETS][NET_NAME_MAX + 1];
	size_t len = 0;

	buf[0] = '\0';
	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->nvms; i++) {
		int count = net_spec_networks(h->vms[i]->rec.spec, names, VM_MAX_NETS);

		for (int k = 0; k < count; k++)
			if (!strcmp(names[k], name)) {
				len += (size_t)snprintf(buf + len, len < size ? size - len : 0, "%s%s (%s)",
							len ? ", " : "", h->vms[i]->rec.name,
							h->vms[i]->rec.state);
				break;
			}
		if (len >= size)
			break;
	}
	pthread_mutex_unlock(&h->lock);
	return len;
}

int api_net_delete(struct api_call *c)
{
	struct host_nets *ns = c->h->nets;
	struct api_err e;
	char users[512];
	struct hnet *n;

	if (ns)
		pthread_mutex_lock(&ns->lock);
	n = net_lookup(ns, c->name, &e);
	if (!n)
		goto fail;
	if (net_users(c->h, c->name, users, sizeof(users))) {
		api_err_set(&e, 409, "in_use", "network \"%s\" is used by %s: delete them or "
			    "change their specs first", c->name, users);
		goto fail;
	}
	if (db_net_delete(c->h->db, c->name) < 0) {
		api_err_set(&e, 500, "internal", "network \"%s\": cannot write the store", c->name);
		goto fail;
	}
	net_down(ns, n);
	for (size_t i = 0; i < ns->n; i++)
		if (ns->v[i] == n) {        /* the list keeps creation order */
			memmove(&ns->v[i], &ns->v[i + 1], (ns->n - i - 1) * sizeof(*ns->v));
			ns->n--;
			break;
		}
	pthread_mutex_unlock(&ns->lock);
	log_info("network %s deleted", c->name);
	free(n);
	return api_reply_raw(c, 204, "application/json", NULL, 0);
fail:
	if (ns)
		pthread_mutex_unlock(&ns->lock);
	return api_reply_error(c, &e);
}
