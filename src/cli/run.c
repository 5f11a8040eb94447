/*
 * run.c - `shoal run`: boot a VM in the foreground, in the manner of
 * `lkvm run`.  Flags and the JSON file of --config fill the same struct
 * vm_config (vmm/config.h); flags given on the command line override the
 * file.  Each device's flag is read by the device's own code
 * (devices/config_dev.h), straight into the struct.  The exit status is
 * the VM's (base/exitcode.h, docs/cli.md).
 */
#include "cli/run.h"
#include "base/size.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "boot/cidata.h"
#include "base/exitcode.h"
#include "base/log.h"
#include "base/seccomp.h"
#include "mem/page_hash.h"
#include "devices/config_dev.h"
#include "vmm/control.h"
#include "state/migrate.h"
#include "state/migrate_auth.h"
#include "state/snapshot.h"
#include "mem/zero_blocks.h"
#include "mem/idle_sample.h"
#include "vmm/vm.h"

#include <jansson.h>

const char run_usage[] =
"usage: shoal run [OPTIONS]\n"
"\n"
"Boot a virtual machine in the foreground.  The guest's serial console is\n"
"this terminal unless --console says otherwise; Ctrl-A x quits.\n"
"\n"
"  -k, --kernel PATH        kernel to boot: an ELF with a PVH entry note (Linux\n"
"                           vmlinux, build/shoal-guest) or a Linux bzImage\n"
"  -i, --initrd PATH        initial ramdisk (Linux)\n"
"  -p, --cmdline STR        kernel command line\n"
"      --firmware PATH      boot this BIOS image instead of a kernel; with --disk\n"
"                           and no --kernel, Debian's SeaBIOS is booted:\n"
"                           " VM_CONFIG_DEFAULT_FIRMWARE " (docs/boot.md)\n"
"  -c, --cpus N             number of vCPUs (default 1, at most 64)\n"
"  -m, --memory SIZE        guest RAM: 256M, 2G, 512 (MiB) ... (default 256M, at least 16M)\n"
"      --console KIND       stdio (default), file:PATH or none\n"
"      --cpu-template NAME  CPU model the guest sees: host (default), baseline,\n"
"                           minimal; `shoal cpu-templates` lists them\n"
"      --config FILE        read these settings from a JSON file; flags given on\n"
"                           the command line override it (docs/cli.md)\n"
"      --disk PATH[,readonly][,direct][,serial=ID][,queues=N][,cache=SIZE][,mode=M]\n"
"                           a virtio-blk disk (raw or qcow2 image); repeatable;\n"
"                           direct: O_DIRECT on the host, no page cache;\n"
"                           ,pristine=DIR[,pristine-size=SIZE]: the base image's\n"
"                           blocks shared with other VMMs through DIR (docs/block.md);\n"
"                           PATH store:https://...,store-cache=DIR,...: an image\n"
"                           streamed from a store server (docs/store.md)\n"
"      --net tap=NAME|fd=N[,mac=MAC][,queues=N][,mode=M]\n"
"                           a virtio-net interface on a TAP device; repeatable\n"
"      --rng                a virtio-rng device (host getrandom, rate-capped)\n"
"      --balloon            a virtio-balloon device: the control socket's balloon\n"
"                           command sets its target (docs/memory.md)\n"
"      --zero-scan PAGES|off\n"
"                           the zero-page layer: released 2 MiB blocks stay\n"
"                           unallocated when read; a scanner reads PAGES 4 KiB\n"
"                           pages/s to find zero blocks (0: no scanner, only\n"
"                           the balloon's blocks; off, the default: no layer;\n"
"                           no --live snapshots while on) (docs/memory.md)\n"
"      --vmgenid            an ACPI VM generation ID: a clone's guest is told to\n"
"                           reseed its random number generator (docs/snapshots.md)\n"
"      --vsock cid=N,socket=PATH\n"
"                           virtio-vsock; the host side is a Unix socket\n"
"                           (CONNECT <port> / OK <port>, as Firecracker)\n"
"      --fs tag=TAG,socket=PATH\n"
"                           a shared file tree (virtio-fs): the guest mounts\n"
"                           -t virtiofs TAG; served by a vhost-user-fs back end\n"
"                           (virtiofsd) on PATH; repeatable; no snapshots\n"
"      --cloud-init user-data=FILE,meta-data=FILE[,network-config=FILE]\n"
"                           attach a cloud-init NoCloud seed built from these\n"
"                           files: an ISO 9660 volume 'cidata', one more\n"
"                           read-only disk after the others (docs/linux-guests.md)\n"
"      --virtio-console file:PATH[,in=PATH]\n"
"                           a second console, virtio-console: output to a\n"
"                           file, input (optional) from another\n"
"                           (M, the virtio interface: transitional (default),\n"
"                           legacy or modern)\n"
"      --timeout SECONDS    stop the VM with status 82 if it is still running\n"
"      --exit-file PATH     when the VMM ends, write there one JSON line: its exit\n"
"                           status, the reason, and whether the VM left by a\n"
"                           completed live migration (\"migrated\"); opened\n"
"                           (emptied) at the start, so empty if it was killed\n"
"      --api-socket PATH    serve the control protocol on this Unix socket\n"
"                           (`shoal snapshot create --socket PATH DIR` saves the VM)\n"
"      --disk-overlay-dir DIR  with --restore: where each writable disk's new\n"
"                           overlay on the snapshot's disk goes (default: next\n"
"                           to that disk; docs/snapshots.md)\n"
"      --restore DIR        start the VM saved in snapshot DIR where it was; only\n"
"                           --console, --timeout, --api-socket, -v, --clone, --mac,\n"
"                           --cid, --tap, --vsock-socket and --disk-overlay-dir\n"
"                           go with it\n"
"      --clone              with --restore: map the snapshot's memory copy-on-write,\n"
"                           shared with every other clone, instead of copying it\n"
"                           (docs/vmm-control.md; used by shoald), and give the VM\n"
"                           new MACs and a new vsock CID (random unless given)\n"
"      --mem-recovery       memory errors in guest RAM: a page restored from the\n"
"                           snapshot's memory file and not written since is put\n"
"                           back from it (hash checked); any other becomes a\n"
"                           machine check for the guest (docs/memory.md)\n"
"      --mac MAC            with --restore: network card 0's new MAC (again for\n"
"                           card 1, ...); the snapshot's otherwise\n"
"      --cid N              with --restore: the vsock device's new CID (3 and up)\n"
"      --tap NAME           with --restore: network card 0's TAP instead of the\n"
"                           snapshot's (again for card 1, ...)\n"
"      --vsock-socket PATH  with --restore: the vsock device's host socket instead\n"
"                           of the snapshot's (a TAP or socket another VM holds is\n"
"                           refused: give each clone its own)\n"
"      --incoming unix:PATH|tcp:HOST:PORT[,key-file=FILE[,tls=on]]\n"
"                           wait there for a live migration (`shoal migrate`),\n"
"                           load it and run the VM it brings; give the source's\n"
"                           settings (memory, vCPUs, devices) (docs/migration.md);\n"
"                           with key-file, take only a source that proves it\n"
"                           knows that key (shoal migrate --key-file); tls=on:\n"
"                           the stream only over TLS 1.3 with it (--tls);\n"
"                           ,fail-limit=N,fail-window=S: refuse a peer for S s\n"
"                           after N failed handshakes in S s (default 5, 60);\n"
"                           ,recover-timeout=S: after a post-copy's connection\n"
"                           drops, wait S s for the source to resume (default\n"
"                           300; 0: none); ,accept-timeout=S: exit 70 if no\n"
"                           source connected within S s (default 0: wait)\n"
"      --seccomp on|off     per-thread syscall filters (default on, or\n"
"                           $SHOAL_SECCOMP); off is for debugging only and warns\n"
"                           on stderr each time (docs/security.md)\n"
"      --jail DIR[,uid=N][,gid=N][,bind=PATH]...\n"
"                           run the VMM jailed (needs root): its own namespaces,\n"
"                           an empty root on DIR holding only the bind= paths,\n"
"                           uid and gid N (default 65534), no capabilities\n"
"                           (docs/security.md)\n"
"      --print-config       print the resulting settings as JSON and exit\n"
"  -v, --verbose            more messages (-v info, -vv debug)\n"
"  -h, --help               this help\n"
"\n"
"exit status: 0 guest powered off; 1-63 the guest's code through the test\n"
"device (port 0xf4); 64 usage; 65 bad kernel; 66 missing file; 67 not enough\n"
"memory or vCPUs; 68 no usable KVM; 70 host error; 80 triple fault; 81 KVM\n"
"internal error; 82 guest misbehaved or timed out; 83 quit from the console;\n"
"84 a snapshot that is damaged or that this host cannot restore.\n";

enum { OPT_FIRMWARE = 1024 };

enum { OPT_CLOUD_INIT = 1200 };         /* boot/cidata.c's seed */

enum { OPT_INCOMING = 1100 };           /* state/migrate.c's destination */

enum { OPT_BALLOON = 1300 };            /* devices/virtio_balloon.c */

enum { OPT_VMGENID = 1400 };            /* devices/vmgenid.c */

enum { OPT_ZERO_SCAN = 1500 };          /* mem/zero_blocks.c */

enum { OPT_FS = 1600 };                 /* devices/vhost_user_fs.c */

enum { OPT_CONSOLE = 256, OPT_TEMPLATE, OPT_CONFIG, OPT_TIMEOUT, OPT_PRINT, OPT_API,
       OPT_DISK, OPT_NET, OPT_RNG, OPT_VSOCK, OPT_VCONSOLE, OPT_RESTORE, OPT_CLONE,
       OPT_SECCOMP, OPT_JAIL };

enum { OPT_MAC = 768, OPT_CID, OPT_TAP, OPT_VSOCK_SOCKET };  /* a restored VM's own */

enum { OPT_EXIT_FILE = 1800 };          /* the way it ended, for a supervisor */

enum { OPT_OVERLAY_DIR = 512 };

enum { OPT_MEM_RECOVERY = 1700 };       /* mem/page_hash.c */

static const struct option run_options[] = {
	{ "kernel", required_argument, NULL, 'k' },
	{ "firmware", required_argument, NULL, OPT_FIRMWARE },
	{ "initrd", required_argument, NULL, 'i' },
	{ "cmdline", required_argument, NULL, 'p' },
	{ "cpus", required_argument, NULL, 'c' },
	{ "memory", required_argument, NULL, 'm' },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "cpu-template", required_argument, NULL, OPT_TEMPLATE },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "print-config", no_argument, NULL, OPT_PRINT },
	{ "api-socket", required_argument, NULL, OPT_API },
	{ "disk-overlay-dir", required_argument, NULL, OPT_OVERLAY_DIR },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "net", required_argument, NULL, OPT_NET },
	{ "rng", no_argument, NULL, OPT_RNG },
	{ "balloon", no_argument, NULL, OPT_BALLOON },
	{ "vmgenid", no_argument, NULL, OPT_VMGENID },
	{ "zero-scan", required_argument, NULL, OPT_ZERO_SCAN },
	{ "vsock", required_argument, NULL, OPT_VSOCK },
	{ "fs", required_argument, NULL, OPT_FS },
	{ "virtio-console", required_argument, NULL, OPT_VCONSOLE },
	{ "cloud-init", required_argument, NULL, OPT_CLOUD_INIT },
	{ "restore", required_argument, NULL, OPT_RESTORE },
	{ "clone", no_argument, NULL, OPT_CLONE },
	{ "mem-recovery", no_argument, NULL, OPT_MEM_RECOVERY },
	{ "mac", required_argument, NULL, OPT_MAC },
	{ "cid", required_argument, NULL, OPT_CID },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "vsock-socket", required_argument, NULL, OPT_VSOCK_SOCKET },
	{ "incoming", required_argument, NULL, OPT_INCOMING },
	{ "exit-file", required_argument, NULL, OPT_EXIT_FILE },
	{ "seccomp", required_argument, NULL, OPT_SECCOMP },
	{ "jail", required_argument, NULL, OPT_JAIL },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};
static const char run_shortopts[] = ":k:i:p:c:m:vh";

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
}

static int parse_int(const char *flag, const char *v, long max, long *out, struct error *e)
{
	char *end;
	long n = strtol(v, &end, 10);

	if (!*v || *end || n < 0 || n > max)
		return error_set(e, EXIT_USAGE, "%s: '%s' is not a number from 0 to %ld", flag, v, max);
	*out = n;
	return 0;
}

static int run_apply_opt(int c, const char *arg, struct vm_config *cfg, struct run_opts *o,
			 struct error *e)
{
	long n;

	switch (c) {   /* the VM's own settings, which a snapshot brings */
	case 'k': case 'i': case 'p': case 'c': case 'm': case OPT_TEMPLATE: case OPT_CONFIG:
	case OPT_DISK: case OPT_NET: case OPT_RNG: case OPT_VSOCK: case OPT_VCONSOLE:
	case OPT_FIRMWARE: case OPT_CLOUD_INIT: case OPT_VMGENID: case OPT_FS:
		if (!o->vm_flag)
			o->vm_flag = c;
		break;
	case OPT_CONSOLE:
		o->console_set = true;
		break;
	}
	switch (c) {
	case OPT_OVERLAY_DIR: set_str(&o->disk_overlay_dir, arg); return 0;
	case 'k': set_str(&cfg->kernel, arg); return 0;
	case OPT_FIRMWARE: set_str(&cfg->firmware, arg); return 0;
	case 'i': set_str(&cfg->initrd, arg); return 0;
	case 'p': set_str(&cfg->cmdline, arg); return 0;
	case 'c':
		if (parse_int("--cpus", arg, 1 << 20, &n, e))
			return -1;
		cfg->cpus = (int)n;
		return 0;
	case 'm':
		if (size_parse_unit(arg, 20, &cfg->memory))
			return error_set(e, EXIT_USAGE, "--memory: '%s' is not a size (256M, 2G, ...)", arg);
		return 0;
	case OPT_CONSOLE: return vm_config_set_console(cfg, arg, e);
	case OPT_TEMPLATE: set_str(&cfg->cpu_template, arg); return 0;
	case OPT_TIMEOUT:
		if (parse_int("--timeout", arg, 1 << 30, &n, e))
			return -1;
		cfg->timeout_s = (unsigned)n;
		return 0;
	case OPT_PRINT: o->print_config = true; return 0;
	case OPT_API: set_str(&o->api_socket, arg); return 0;
	case OPT_RESTORE: set_str(&o->restore, arg); return 0;
	case OPT_INCOMING: set_str(&o->incoming, arg); return 0;
	case OPT_EXIT_FILE: set_str(&o->exit_file, arg); return 0;
	case OPT_CLONE: o->clone = true; return 0;
	case OPT_MEM_RECOVERY: o->mem_recovery = true; return 0;
	case OPT_MAC: {
		struct vm_net check = { .fd = -1 };
		int rc;

		if (o->nmacs == VM_MAX_NETS)
			return error_set(e, EXIT_USAGE, "--mac: at most %d (one per network card)",
					 VM_MAX_NETS);
		o->macs[o->nmacs++] = arg;
		rc = net_config_new_mac(&check, arg, "--mac", e);     /* checks it */
		net_config_free(&check);
		return rc;
	}
	case OPT_TAP:
		if (o->ntaps == VM_MAX_NETS)
			return error_set(e, EXIT_USAGE, "--tap: at most %d (one per network card)",
					 VM_MAX_NETS);
		o->taps[o->ntaps++] = arg;
		return 0;
	case OPT_VSOCK_SOCKET: o->vsock_socket = arg; return 0;
	case OPT_CID:
		if (parse_int("--cid", arg, 4294967294L, &n, e))
			return -1;
		if (n < 3)
			return error_set(e, EXIT_USAGE, "--cid: %ld is reserved; a guest's CID is 3 or more",
					 n);
		o->cid = (uint32_t)n;
		return 0;
	case OPT_SECCOMP:
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return error_set(e, EXIT_USAGE, "--seccomp: '%s' is not on or off", arg);
		o->seccomp = !strcmp(arg, "on") ? 1 : -1;
		return 0;
	case OPT_JAIL: return jail_parse(&o->jail, arg, e);
	case OPT_DISK: return vm_config_add_disk(cfg, arg, e);
	case OPT_NET: return vm_config_add_net(cfg, arg, e);
	case OPT_RNG: cfg->rng = true; return 0;
	case OPT_BALLOON: cfg->balloon = true; return 0;
	case OPT_VMGENID: cfg->vmgenid = true; return 0;
	case OPT_ZERO_SCAN: {
		char *end;
		unsigned long long rate;
		if (!strcmp(arg, "off")) {
			cfg->zero_off = true;
			cfg->zero_on = false;
			return 0;
		}
		errno = 0;
		rate = strtoull(arg, &end, 10);
		if (errno || end == arg || *end || rate > 10000000)
			return error_set(e, EXIT_USAGE, "--zero-scan: '%s' is not off or a page rate "
					 "(0 to 10000000 pages/s)", arg);
		cfg->zero_scan = (uint32_t)rate;
		cfg->zero_off = false;
		cfg->zero_on = true;
		return 0;
	}
	case OPT_VSOCK: return vm_config_set_vsock(cfg, arg, e);
	case OPT_FS: return vm_config_add_fs(cfg, arg, e);
	case OPT_VCONSOLE: return vconsole_config_from_flags(&cfg->vconsole, arg, e);
	case OPT_CLOUD_INIT: return cidata_from_flags(&cfg->cloud_init, arg, e);
	case 'v': o->verbose++; return 0;
	case 'h': o->help = true; return 0;
	case OPT_CONFIG: return 0;   /* handled in the first pass */
	default: return error_set(e, EXIT_USAGE, "internal: unhandled option %d", c);
	}
}

/* "--disk" for OPT_DISK, "-k/--kernel" for 'k'. */
static const char *run_flag_name(int c)
{
	static char buf[40];

	for (const struct option *op = run_options; op->name; op++)
		if (op->val == c) {
			snprintf(buf, sizeof(buf), "--%s", op->name);
			return buf;
		}
	return "an option";
}

static int run_bad_opt(int c, char **argv, struct error *e)
{
	const char *word = argv[optind - 1];

	if (c == ':')
		return error_set(e, EXIT_USAGE, "run: option %s needs a value (shoal run --help)", word);
	return error_set(e, EXIT_USAGE, "run: unknown option %s (shoal run --help)", word);
}

int run_parse_args(int argc, char **argv, struct vm_config *cfg, struct run_opts *o,
		   struct error *e)
{
	int c;

	memset(o, 0, sizeof(*o));
	opterr = 0;
	/* Pass 1: --config, so that the other flags override the file. */
	optind = 0;
	while ((c = getopt_long(argc, argv, run_shortopts, run_options, NULL)) != -1) {
		if (c == '?' || c == ':')
			return run_bad_opt(c, argv, e);
		if (c == OPT_CONFIG && vm_config_load_file(cfg, optarg, e))
			return -1;
	}
	if (optind < argc)
		return error_set(e, EXIT_USAGE, "run: unexpected argument '%s' (shoal run --help)",
				 argv[optind]);
	optind = 0;
	while ((c = getopt_long(argc, argv, run_shortopts, run_options, NULL)) != -1)
		if (run_apply_opt(c, optarg, cfg, o, e))
			return -1;
	/* A disk and no kernel: boot the disk as a PC does, through a BIOS. */
	if (!cfg->kernel && !cfg->firmware && cfg->ndisks > 0 && !o->restore)
		set_str(&cfg->firmware, VM_CONFIG_DEFAULT_FIRMWARE);
	return 0;
}

static void run_report_exit(const struct vm *vm, int status)
{
	if (status == 0)
		log_info("%s", vm->exit_reason);
	else if (status <= EXIT_GUEST_MAX)
		log_warn("%s", vm->exit_reason);
	else
		log_error("%s", vm->exit_reason);
}

/* --exit-file: opened (emptied) before anything, while every path is
 * still ours (the jail's root is empty and read-only), and kept through
 * the jail's sweep of inherited descriptors; -1 without it.  A
 * supervisor reads it after the VMM is gone: empty, the VMM never got to
 * say (killed, or the file was not opened). */
static int run_exit_file_open(const struct run_opts *o, struct error *e)
{
	int fd;

	if (!o->exit_file)
		return -1;
	fd = open(o->exit_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		error_set(e, EXIT_NOINPUT, "--exit-file: %s: %s", o->exit_file, strerror(errno));
	return fd;
}

/* One line: {"status", "reason", "migrated"}, made durable (a supervisor
 * that died meanwhile reads it after a crash of the host too).  A failure
 * is logged: the exit status stands either way. */
static void run_exit_file_write(int *fdp, const struct run_opts *o, const char *reason,
				bool migrated, int status)
{
	int fd = *fdp;
	json_t *j;
	char *text;
	size_t len;

	if (fd < 0)
		return;
	*fdp = -1;
	j = json_pack("{s:i, s:s, s:b}", "status", status, "reason", reason, "migrated", migrated);
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	len = text ? strlen(text) : 0;
	if (text)
		text[len++] = '\n';    /* json_dumps' NUL becomes the newline */
	if (!text || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
		log_warn("--exit-file: %s: %s", o->exit_file, text ? strerror(errno) :
			 "out of memory");
	free(text);
	close(fd);
}

/* The VM from the snapshot --restore names, with the settings that may
 * go with it (struct snapshot_overrides). */
static struct vm *run_restore(const struct vm_config *cfg, const struct run_opts *o,
			      struct error *e)
{
	struct snapshot_overrides ov = {
		.console_set = o->console_set, .console = cfg->console,
		.console_path = cfg->console_path, .timeout_s = cfg->timeout_s,
		.macs = o->macs, .nmacs = o->nmacs, .cid = o->cid,
		.clone = o->clone, .disk_overlay_dir = o->disk_overlay_dir,
		.taps = o->taps, .ntaps = o->ntaps, .vsock_socket = o->vsock_socket,
	};

	return snapshot_restore(o->restore, &ov, e);
}

/* Seccomp (docs/security.md): --seccomp, else $SHOAL_SECCOMP, else
 * RUN_SECCOMP_DEFAULT (on).  `why` names what chose it (NULL: the
 * default); off is only ever asked for, and warned about. */
#define RUN_SECCOMP_DEFAULT true

static int run_seccomp_on(const struct run_opts *o, bool *on, const char **why, struct error *e)
{
	const char *env = getenv("SHOAL_SECCOMP");

	*on = RUN_SECCOMP_DEFAULT;
	*why = NULL;
	if (o->seccomp) {
		*on = o->seccomp > 0;
		*why = *on ? "--seccomp=on" : "--seccomp=off";
	} else if (env && *env) {
		if (strcmp(env, "on") && strcmp(env, "off"))
			return error_set(e, EXIT_USAGE, "SHOAL_SECCOMP: '%s' is not on or off", env);
		*on = !strcmp(env, "on");
		*why = *on ? "SHOAL_SECCOMP=on" : "SHOAL_SECCOMP=off";
	}
	return 0;
}

/* The cloud-init seed (boot/cidata.c): built into a private directory
 * (mkdtemp, mode 0700) before the VM, attached as one more read-only disk
 * after the user's, and removed as soon as the VM holds it open (or when
 * building the VM failed).  A confined VMM (shoald's) reads the inputs
 * only beneath its directories, and may open the seed because its
 * directory joins them. */
struct run_seed {
	char dir[PATH_MAX - 16];
	char path[PATH_MAX];
};

static void run_seed_remove(struct run_seed *s)
{
	if (s->path[0])
		unlink(s->path);
	if (s->dir[0])
		rmdir(s->dir);
	s->path[0] = s->dir[0] = '\0';
}

static int run_seed_build(struct vm_config *cfg, struct run_seed *s, struct error *e)
{
	const char *tmp = getenv("TMPDIR");
	struct vm_disk *d;
	int fd, rc;

	if (cfg->ndisks == VM_MAX_DISKS)
		return error_set(e, EXIT_USAGE, "--cloud-init: the seed is one more disk, and the VM "
				 "already has the most there may be (%d)", VM_MAX_DISKS);
	if (cfg->nconfine == PATH_MAX_ROOTS)
		return error_set(e, EXIT_USAGE, "--cloud-init: the seed's directory would be one "
				 "\"confine\" directory too many (at most %d)", PATH_MAX_ROOTS);
	if (snprintf(s->dir, sizeof(s->dir), "%s/shoal-cidata-XXXXXX",
		     tmp && *tmp ? tmp : "/tmp") >= (int)sizeof(s->dir) || !mkdtemp(s->dir)) {
		rc = error_set(e, EXIT_HOST, "cloud-init seed: %s: %s", s->dir, strerror(errno));
		s->dir[0] = '\0';
		return rc;
	}
	snprintf(s->path, sizeof(s->path), "%s/cidata.iso", s->dir);
	fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = error_set(e, EXIT_HOST, "cloud-init seed: %s: %s", s->path, strerror(errno));
		s->path[0] = '\0';
		return rc;
	}
	rc = cfg->nconfine ? path_confine((const char *const *)cfg->confine, cfg->nconfine, e) : 0;
	if (!rc)
		rc = cidata_build(&cfg->cloud_init, fd, e);
	close(fd);
	if (rc)
		return -1;
	if (cfg->nconfine && !(cfg->confine[cfg->nconfine++] = strdup(s->dir)))
		return error_set(e, EXIT_HOST, "out of memory");
	d = &cfg->disks[cfg->ndisks++];
	memset(d, 0, sizeof(*d));
	d->path = strdup(s->path);
	d->readonly = true;
	d->serial = strdup(CIDATA_VOLUME_ID);
	if (!d->path || !d->serial)
		return error_set(e, EXIT_HOST, "out of memory");
	log_info("cloud-init seed: %s, disk %d (read-only, serial %s)", s->path, cfg->ndisks - 1,
		 CIDATA_VOLUME_ID);
	return 0;
}

/* What the jail needs to know before the VM exists: whether it may have a
 * network namespace of its own (no network card, no migration over TCP),
 * and the vsock socket's directory, where the guest's connections to host
 * ports are made at run time.  A restored VM's cards and vsock socket are
 * the snapshot's (its manifest is read for them here, and again, checked
 * whole, by the restore), but --vsock-socket's path replaces the socket. */
static int run_jail_prepare(const struct vm_config *cfg, struct run_opts *o, struct error *e)
{
	struct vm_config snap;
	const char *vs;
	int rc = 0;

	vm_config_init(&snap);
	if (o->restore) {
		if (snapshot_read_config(o->restore, &snap, e)) {
			vm_config_free(&snap);
			return -1;
		}
		cfg = &snap;
	}
	vs = o->vsock_socket ? o->vsock_socket : cfg->vsock_cid ? cfg->vsock_socket : NULL;
	o->jail.netns = cfg->nnets == 0 && !(o->incoming && !strncmp(o->incoming, "tcp:", 4));
	for (int i = 0; !o->restore && i < cfg->nnets && o->jail.nkeep < JAIL_MAX_BINDS; i++)
		if (cfg->nets[i].fd >= 0)
			o->jail.keep_fds[o->jail.nkeep++] = cfg->nets[i].fd;
	if (vs && *vs) {        /* PATH_PORT is made beside PATH, whatever PATH links to */
		char name[PATH_MAX], dir[PATH_MAX], *slash;

		snprintf(name, sizeof(name), "%s", vs);
		slash = strrchr(name, '/');
		if (slash)
			*slash = '\0';
		if (!realpath(!slash ? "." : name[0] ? name : "/", dir))
			rc = error_set(e, EXIT_NOINPUT, "--jail: the vsock socket's directory "
				       "(%s): %s", vs, strerror(errno));
		else
			rc = jail_add_bind(&o->jail, dir, e);  /* "/" is refused */
	}
	vm_config_free(&snap);
	return rc;
}

/* The zero-page layer (mem/zero_blocks.h) over the VM's memfd: with
 * --zero-scan N (0: the balloon's blocks only).  Not with --balloon alone:
 * a live snapshot cannot share the mapping with it yet, and is refused
 * while it is on (state/snapshot.c).  Started here, before
 * vm_run installs the main thread's seccomp filter: its threads need
 * userfaultfd ioctls no filter kind allows.  A clone's private mapping has
 * no memfd (no layer); the VMM has no vhost-user devices (a back end would
 * map the memfd and write behind the layer: it must be turned off then).
 * A failure only logs: the balloon still punches holes. */
static struct zero_blocks *run_zero_start(struct vm *vm, const struct vm_config *cfg)
{
	struct zero_blocks *z = NULL;
	struct error e = { 0 };

	if (cfg->zero_off || !cfg->zero_on)
		return NULL;
	if (vm->mem.fd < 0) {
		log_info("zero-page layer: off (guest memory is a copy-on-write mapping, no memfd)");
		return NULL;
	}
	if (zero_blocks_start(&z, &vm->mem, cfg->zero_scan, &e)) {
		log_warn("%s; released memory is allocated again when read", e.msg);
		return NULL;
	}
	log_info("zero-page layer: on, scanner %u pages/s", cfg->zero_scan);
	return z;
}

static void run_zero_stop(struct zero_blocks *z)
{
	struct zero_blocks_stats st;

	if (!z)
		return;
	zero_blocks_get_stats(z, &st);
	log_info("zero-page layer: %llu of %llu blocks zero; released %llu (scanner %llu), "
		 "read faults %llu, write faults %llu, raced pages %llu, VMA-limited %llu",
		 (unsigned long long)st.zero_blocks, (unsigned long long)st.blocks,
		 (unsigned long long)st.released, (unsigned long long)st.scan_released,
		 (unsigned long long)st.read_faults, (unsigned long long)st.write_faults,
		 (unsigned long long)st.raced_pages, (unsigned long long)st.vma_limited);
	zero_blocks_stop(z);
}

/* --mem-recovery (mem/page_hash.h): a restored VM's good copy is its
 * snapshot's plain memory file (a clone's and a compressed one's: none). */
static int run_mem_recovery(struct vm *vm, const struct run_opts *o, struct page_hash **ph)
{
	char path[4096];
	struct error e = { 0 };

	*ph = NULL;
	if (!o->mem_recovery)
		return 0;
	snprintf(path, sizeof(path), "%s/memory", o->restore ? o->restore : "");
	if (page_hash_start(ph, vm, o->restore && !o->clone && access(path, R_OK) == 0 ? path : NULL,
			    &e)) {
		log_error("%s", e.msg);
		return e.status;
	}
	return 0;
}

/* Build the VM (or restore it), serve the control socket when asked, run
 * the guest to its end; returns the exit status (docs/cli.md).  The VM is
 * destroyed on every way out.  Its end goes to --exit-file's `exit_fd`;
 * a failure before the VM runs leaves it to the caller, with `err`. */
static int run_vm_body(const struct vm_config *cfg, const struct run_opts *o,
		       struct run_seed *seed, int *exit_fd, struct error *err)
{
	const char *api_socket = o->api_socket, *why = NULL;
	struct vm *vm;
	int status;
	bool on;

	if (run_seccomp_on(o, &on, &why, err)) {
		log_error("%s", err->msg);
		return err->status;
	}
	/* Filters are compiled and no_new_privs set before any thread exists;
	 * each thread installs its own as it starts (base/seccomp.h). */
	if (!on)
		log_warn("seccomp is OFF (%s): the VMM's threads run with no syscall filter; a "
			 "guest that breaks a device model gets every syscall. For debugging only",
			 why);
	else if (on && seccomp_enable(err)) {
		log_error("%s", err->msg);
		return err->status;
	}
	/* Namespaces before any thread; the parent stays outside and waits. */
	if (o->jail.on && jail_stage1(&o->jail, err)) {
		log_error("%s", err->msg);
		return err->status;
	}
	if (o->incoming)
		migrate_incoming_prepare();     /* shared disks open inactive */
	vm = o->restore ? run_restore(cfg, o, err) :
		o->incoming ? vm_create_incoming(cfg, err) : vm_create(cfg, err);
	run_seed_remove(seed);          /* the VM holds it open now, or failed */
	if (!vm) {
		log_error("%s", err->msg);
		return err->status;
	}
	struct page_hash *ph;
	if ((status = run_mem_recovery(vm, o, &ph))) {
		vm_destroy(vm);
		return status;
	}
	if (o->incoming && migrate_incoming(vm, o->incoming, err)) {
		log_error("%s", err->msg);
		page_hash_stop(ph);
		vm_destroy(vm);
		return err->status;
	}
	struct zero_blocks *zb = run_zero_start(vm, cfg);
	snapshot_add_command(vm);
	migrate_add_command(vm);
	idle_sample_add_command(vm);   /* opens /proc/self/pagemap: before the jail */
	if (api_socket && control_start(vm, api_socket, err)) {
		log_error("%s", err->msg);
		migrate_wait(vm);
		snapshot_wait(vm);
		zero_blocks_stop(zb);
		page_hash_stop(ph);
		vm_destroy(vm);
		return err->status;
	}
	/* Every file open and socket bound: into the empty root, unprivileged. */
	if (o->jail.on && jail_stage2(&o->jail, err)) {
		log_error("%s", err->msg);
		control_stop(vm);
		migrate_wait(vm);
		snapshot_wait(vm);
		zero_blocks_stop(zb);
		page_hash_stop(ph);
		vm_destroy(vm);
		return err->status;
	}
	if (!o->jail.on)
		jail_probe();           /* the test probe's unjailed baseline */
	status = vm_run(vm);
	control_stop(vm);
	migrate_wait(vm);
	snapshot_wait(vm);
	run_report_exit(vm, status);
	run_exit_file_write(exit_fd, o, vm->exit_reason, atomic_load(&vm->migrated), status);
	run_zero_stop(zb);
	page_hash_stop(ph);
	vm_destroy(vm);
	return status;
}


static int run_vm(const struct vm_config *cfg, struct run_opts *o, struct run_seed *seed)
{
	struct error e = { 0 };
	int fd = run_exit_file_open(o, &e), status;

	if (o->exit_file && fd < 0) {
		log_error("%s", e.msg);
		return e.status;
	}
	/* the jail closes every descriptor it is not told to keep */
	if (fd >= 0 && o->jail.on && o->jail.nkeep >= JAIL_MAX_BINDS) {
		log_error("--exit-file: the jail keeps at most %d inherited descriptors, and the "
			  "network cards' take them all", JAIL_MAX_BINDS);
		close(fd);
		return EXIT_USAGE;
	}
	if (fd >= 0 && o->jail.on)
		o->jail.keep_fds[o->jail.nkeep++] = fd;
	status = run_vm_body(cfg, o, seed, &fd, &e);
	/* it failed before the VM ran: the reason is that */
	run_exit_file_write(&fd, o, e.msg[0] ? e.msg : "the VMM failed before the VM ran",
			    false, status);
	return status;
}

/* `shoal run`: every way out, early ones included (a bad flag, --help,
 * --print-config, a VM that cannot be built), goes through `out`, which
 * frees what the parsed arguments hold. */
int cmd_run(int argc, char **argv)
{
	struct vm_config cfg;
	struct run_opts o;
	struct run_seed seed = { 0 };
	struct error e = { 0 };
	int status = 0;

	vm_config_init(&cfg);
	if (run_parse_args(argc, argv, &cfg, &o, &e)) {
		log_error("%s", e.msg);
		status = e.status;
		goto out;
	}
	if (o.help) {
		fputs(run_usage, stdout);
		goto out;
	}
	log_threshold = o.verbose >= 2 ? LOG_DEBUG : o.verbose ? LOG_INFO : LOG_WARN;
	if (o.print_config) {
		char *s = vm_config_to_json_text(&cfg);

		puts(s);
		free(s);
		goto out;
	}
	if (o.disk_overlay_dir && !o.restore) {
		log_error("run: --disk-overlay-dir goes with --restore DIR");
		status = EXIT_USAGE;
		goto out;
	}
	if (o.incoming && o.restore) {
		log_error("run: --incoming takes the VM from a migration; --restore cannot go with it");
		status = EXIT_USAGE;
		goto out;
	}
	if (o.incoming && migrate_incoming_key(o.incoming, &e)) {  /* before the jail */
		log_error("%s", e.msg);
		status = e.status;
		goto out;
	}
	o.mem_recovery |= cfg.mem_recovery;     /* --config's "mem_recovery" */
	if (o.mem_recovery && cfg.zero_on) {
		log_error("run: --mem-recovery cannot go with --zero-scan yet (a zero block's "
			  "pages are the kernel's shared zero page, not the memfd's)");
		status = EXIT_USAGE;
		goto out;
	}
	if (o.clone && !o.restore) {
		log_error("run: --clone goes with --restore DIR");
		status = EXIT_USAGE;
		goto out;
	}
	if ((o.nmacs || o.cid || o.ntaps || o.vsock_socket) && !o.restore) {
		log_error("run: %s goes with --restore DIR (a new VM's are --net ...,mac=, --net tap= "
			  "and --vsock cid=,socket=)", o.nmacs ? "--mac" : o.cid ? "--cid" :
			  o.ntaps ? "--tap" : "--vsock-socket");
		status = EXIT_USAGE;
		goto out;
	}
	if (o.restore && o.vm_flag) {
		log_error("run: --restore takes the VM's settings from the snapshot; %s cannot "
			  "go with it (only --console, --timeout, --api-socket and -v)",
			  run_flag_name(o.vm_flag));
		status = EXIT_USAGE;
		goto out;
	}
	if (o.jail.on && run_jail_prepare(&cfg, &o, &e)) {
		log_error("%s", e.msg);
		status = e.status;
		goto out;
	}
	if (cidata_wanted(&cfg.cloud_init) && run_seed_build(&cfg, &seed, &e)) {
		log_error("%s", e.msg);
		status = e.status;
		goto out;
	}
	status = run_vm(&cfg, &o, &seed);
out:
	run_seed_remove(&seed);
	vm_config_free(&cfg);
	free(o.api_socket);
	free(o.restore);
	free(o.incoming);
	free(o.exit_file);
	free(o.disk_overlay_dir);
	jail_opts_free(&o.jail);
	return status;
}
