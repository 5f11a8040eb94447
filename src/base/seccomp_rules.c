/*
 * seccomp_rules.c - the reviewed lists: which syscalls each kind of VMM
 * thread may make, and why (seccomp.h, docs/security.md).
 *
 * A kind is a list of groups; a group is the syscalls one job needs.  A
 * change here is a security review: say why the syscall is needed, and
 * check it by argument where the argument is what matters (ioctl by
 * request number, mmap/mprotect without PROT_EXEC, socket by family,
 * clone only for threads).  Not here, on purpose: execve, fork/vfork,
 * clone without CLONE_THREAD, ptrace, process_vm_*, socket other than
 * AF_UNIX (and AF_INET/AF_INET6 for a store: disk's threads alone), bpf, mount, setuid and friends, kexec, open_by_handle_at,
 * init_module, personality, keyctl, PROT_EXEC mappings.
 *
 * Threads started by a filtered thread inherit its filter: the event
 * loop starts the snapshot writer, fault and migration threads, so the
 * event list holds theirs, and blk-io's too, so that it could restart a disk's I/O
 * thread (tests/unit/test_seccomp.c checks it).
 *
 * Sanitizer builds (make SANITIZE=1) add the group `sanitizer`: ASan and
 * LeakSanitizer read /proc/self/maps, and LeakSanitizer's exit check
 * clones a tracer (no CLONE_THREAD) that ptraces the other threads.
 * Release builds never allow those.
 */
#include "base/seccomp.h"

#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>

#define R(name, why) { SYS_##name, SC_ANY, NULL, why }
#define RA(name, arg, why) { SYS_##name, arg, NULL, why }
#define RI(list, why) { SYS_ioctl, SC_IOCTL, list, why }
#define GROUP(var, label) \
	static const struct seccomp_group var = { label, var##_rules, \
		sizeof(var##_rules) / sizeof(var##_rules[0]) }

/* ---- ioctl requests ---- */

/* The console: isatty, and raw mode set and restored (console.c, also
 * from its fatal-signal handler, which runs on any thread). */
static const unsigned long ioctl_tty[] = { TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ, 0 };

/* What runs while the guest runs: KVM_RUN, interrupts, the register
 * dump of a failing vCPU, and what a device does when the guest
 * programs it (BARs become memory slots, ioeventfds and irqfds, MSI
 * routes, the tap's offloads as negotiated, a multi-queue tap's queues
 * attached and detached as the guest enables them).  The main thread needs the
 * same to tear devices down (ioeventfds and irqfds are deassigned). */
static const unsigned long ioctl_run[] = {
	KVM_RUN, KVM_IRQ_LINE, KVM_GET_REGS, KVM_GET_SREGS, KVM_SET_USER_MEMORY_REGION,
	KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_GSI_ROUTING, KVM_CHECK_EXTENSION,
	TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUNSETQUEUE, 0
};

/* Interrupts raised from an I/O thread (INTx goes through KVM_IRQ_LINE). */
static const unsigned long ioctl_irq[] = { KVM_IRQ_LINE, 0 };

/* A snapshot reads every vCPU's and the VM's state (kvm_state.c); a live
 * one write-protects guest memory through userfaultfd. */
static const unsigned long ioctl_save[] = {
	KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_FPU, KVM_GET_MSRS, KVM_GET_LAPIC,
	KVM_GET_XSAVE, KVM_GET_XSAVE2, KVM_GET_XCRS, KVM_GET_VCPU_EVENTS, KVM_GET_MP_STATE,
	KVM_GET_DEBUGREGS, KVM_GET_CPUID2, KVM_GET_CLOCK, KVM_GET_IRQCHIP, KVM_GET_PIT2,
	KVM_GET_TSC_KHZ, KVM_GET_MSR_INDEX_LIST, KVM_CHECK_EXTENSION,
	UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_WRITEPROTECT,
	USERFAULTFD_IOC_NEW,    /* a jailed VMM's userfaultfd, from /dev/userfaultfd */
	0
};

/* The logical block size of a host block device opened O_DIRECT
 * (bd_dio_align in block/blockdev.c). */
static const unsigned long ioctl_dio[] = { BLKSSZGET, 0 };

/* The live snapshot threads: lift write protection. */
static const unsigned long ioctl_uffd[] = { UFFDIO_WRITEPROTECT, 0 };

/* Post-copy's destination thread: place a missing page (or zeros in a
 * hole), wake its waiters, and unregister guest memory once all is there. */
static const unsigned long ioctl_uffd_pc[] = { UFFDIO_COPY, UFFDIO_WAKE, UFFDIO_UNREGISTER, 0 };

/* Live migration's dirty tracking (vmm/dirty.c): the vCPUs' dirty log is
 * read and cleared, and memory slots get KVM_MEM_LOG_DIRTY_PAGES turned on
 * and off (KVM_SET_USER_MEMORY_REGION). */
static const unsigned long ioctl_dirty[] = { KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, 0 };

/* Memory errors (vmm/mce.c, mem/page_hash.c): a vCPU's SIGBUS handler
 * reads the dirty log to know whether the page has a good copy, and the
 * vCPU injects the machine check into itself. */
static const unsigned long ioctl_mce[] = { KVM_GET_DIRTY_LOG, KVM_X86_SET_MCE, 0 };
/* The same handler on the other threads that load guest memory in user
 * space (a bounced O_DIRECT request, a snapshot's zero-page check). */
static const unsigned long ioctl_mce_log[] = { KVM_GET_DIRTY_LOG, 0 };

/* ---- groups ---- */

static const struct seccomp_rule g_base_rules[] = {
	R(read, "eventfds, pipes, the console"),
	R(write, "log lines to stderr (log.c), eventfds, the SIGSYS message"),
	R(close, "closing what a thread opened"),
	R(futex, "mutexes and condition variables"),
	R(exit, "a thread's end"),
	R(exit_group, "the process's end (exit, a fatal error)"),
	R(rt_sigreturn, "return from a signal handler (SIGUSR1 kick, SIGSYS)"),
	R(rt_sigprocmask, "glibc masks signals around thread and handler work"),
	R(rt_sigaction, "the console's and SIGSYS handler's reset to SIG_DFL"),
	R(restart_syscall, "a syscall interrupted by a signal"),
	R(getpid, "raise(), the SIGSYS handler"),
	R(gettid, "raise(), the SIGSYS handler"),
	R(tgkill, "vCPU kicks (pthread_kill SIGUSR1), raise(), the SIGSYS handler"),
	R(sched_yield, "spin-then-wait in glibc and liburing"),
	R(clock_gettime, "timestamps and timeouts, when the vDSO falls back"),
	R(clock_nanosleep, "short waits"),
	R(nanosleep, "short waits"),
	R(gettimeofday, "time, when the vDSO falls back"),
	R(brk, "malloc"),
	RA(mmap, SC_NO_EXEC, "malloc and thread stacks; never executable"),
	RA(mprotect, SC_NO_EXEC, "malloc arenas and stack guards; never executable"),
	R(munmap, "free"),
	R(mremap, "realloc"),
	R(madvise, "free, and glibc returning a thread's stack"),
	R(fstat, "stdio's first write to a stream"),
	R(newfstatat, "stdio's first write to a stream (fstat in glibc 2.33+)"),
	RI(ioctl_tty, "the console's terminal modes (TCGETS/TCSETS*, TIOCGWINSZ)"),
	RA(clone3, SC_ENOSYS, "glibc tries clone3 first; ENOSYS makes it use clone, "
			      "whose flags a filter can check"),
};
GROUP(g_base, "base");

static const struct seccomp_rule g_fileio_rules[] = {
	R(readv, "tap and Unix socket reads, disk reads"),
	R(writev, "tap and Unix socket writes, console output"),
	R(pread64, "disk images, guest memory file"),
	R(pwrite64, "disk images, snapshot files"),
	R(preadv, "disk images"),
	R(pwritev, "disk images"),
	R(preadv2, "disk images"),
	R(pwritev2, "disk images"),
	R(lseek, "SEEK_DATA/SEEK_HOLE over images and guest memory"),
	R(fsync, "flushes of disk images and snapshot files"),
	R(fdatasync, "flushes of disk images (virtio-blk FLUSH)"),
	R(fallocate, "qcow2 allocation, discard (punch hole)"),
	R(ftruncate, "growing a qcow2 image, sizing a snapshot's memory file"),
	R(fcntl, "O_NONBLOCK on accepted sockets, file flags"),
	R(getrandom, "virtio-rng's entropy"),
};
GROUP(g_fileio, "fileio");

static const struct seccomp_rule g_poll_rules[] = {
	R(epoll_wait, "the event loop's wait"),
	R(epoll_pwait, "the event loop's wait (glibc may use it)"),
	R(epoll_ctl, "devices add and remove their fds on the event loop"),
	R(poll, "waits on an fd with a timeout"),
	R(ppoll, "waits on an fd with a timeout (glibc may use it)"),
	R(eventfd2, "kick and ioeventfd/irqfd eventfds made when the guest enables a queue"),
	R(timerfd_create, "device timers (virtio-rng's rate)"),
	R(timerfd_settime, "device timers, the --timeout timer"),
	R(timerfd_gettime, "device timers"),
	R(mincore, "the metrics' guest resident memory (control.c)"),
};
GROUP(g_poll, "poll");

static const struct seccomp_rule g_uring_rules[] = {
	R(io_uring_enter, "virtio-blk's io_uring submissions and completions"),
	R(io_uring_setup, "a ring made on first use"),
	R(io_uring_register, "registered eventfd and buffers"),
};
GROUP(g_uring, "io_uring");

static const struct seccomp_rule g_unix_rules[] = {
	RA(socket, SC_AF_UNIX, "vsock's host side and the control socket: Unix only"),
	R(connect, "vsock's guest-initiated connections to PATH_PORT"),
	R(accept4, "control socket and vsock listener"),
	R(bind, "vsock listener"),
	R(listen, "vsock listener"),
	R(sendmsg, "Unix sockets"),
	R(recvmsg, "Unix sockets"),
	R(sendto, "Unix sockets (send)"),
	R(recvfrom, "Unix sockets (recv)"),
	R(shutdown, "vsock half-close"),
	R(getsockopt, "SO_ERROR of a non-blocking connect"),
	R(setsockopt, "socket buffers"),
	R(getsockname, "socket addresses"),
	R(getpeername, "socket addresses"),
};
GROUP(g_unix, "unix");

static const struct seccomp_rule g_files_rules[] = {
	R(openat, "snapshot files, /proc/self/fd paths (path_beneath.c)"),
	R(openat2, "confined opens beneath a directory (path_beneath.c)"),
	R(mkdirat, "a snapshot's directory"),
	R(mkdir, "a snapshot's directory"),
	R(rmdir, "a failed snapshot's partial directory"),
	R(access, "does a snapshot or overlay exist already"),
	R(faccessat, "does a snapshot or overlay exist already"),
	R(faccessat2, "does a snapshot or overlay exist already"),
	R(getcwd, "realpath of a relative disk path (a snapshot's disks)"),
	R(unlinkat, "a replaced snapshot file, the control socket on stop"),
	R(renameat, "a snapshot's files put in place atomically"),
	R(renameat2, "a snapshot's files put in place atomically"),
	R(rename, "a snapshot's files put in place atomically"),
	R(unlink, "the control socket on stop"),
	R(statx, "file checks"),
	R(fstatfs, "file system checks (O_DIRECT, tmpfs)"),
	R(getdents64, "snapshot directories"),
	R(fchmod, "snapshot files' modes"),
	R(readlink, "paths under /proc/self/fd"),
	R(dup, "a file handed to a snapshot job"),
};
GROUP(g_files, "files");

static const struct seccomp_rule g_reply_rules[] = {
	R(sendto, "the live writer answers the control client that waits for it"),
	R(sendmsg, "the live writer answers the control client that waits for it"),
};
GROUP(g_reply, "reply");

static const struct seccomp_rule g_threads_rules[] = {
	RA(clone, SC_CLONE_THREAD, "start the snapshot threads: threads only, never a process"),
	R(set_robust_list, "a new thread's first step (glibc)"),
	R(rseq, "a new thread's first step (glibc)"),
	R(seccomp, "a new thread installs its own, narrower, filter"),
	R(userfaultfd, "a live snapshot write-protects guest memory"),
	R(sched_getaffinity, "glibc thread start"),
	R(prctl, "thread names (PR_SET_NAME)"),
};
GROUP(g_threads, "threads");

static const struct seccomp_rule g_kvm_run_rules[] = {
	RI(ioctl_run, "KVM_RUN, interrupts, memory slots, ioeventfd/irqfd, tap offloads"),
};
GROUP(g_kvm_run, "kvm_run");

static const struct seccomp_rule g_kvm_irq_rules[] = {
	RI(ioctl_irq, "INTx interrupts from I/O completions"),
};
GROUP(g_kvm_irq, "kvm_irq");

static const struct seccomp_rule g_mce_rules[] = {
	RI(ioctl_mce, "memory errors: the dirty log, the guest's machine check"),
};
GROUP(g_mce, "mce");

static const struct seccomp_rule g_mce_log_rules[] = {
	RI(ioctl_mce_log, "memory errors: the dirty log (has the page a good copy?)"),
};
GROUP(g_mce_log, "mce_log");

/* The jail (vmm/jail.c) drops the process's gid and uid after the disks'
 * I/O threads have started, and glibc makes every thread change its own
 * ids, each in a signal handler (its setxid broadcast).  Once dropped,
 * these can only set ids the thread already has.  The event loop has them
 * too, as the creator of a disk's restarted I/O thread. */
static const struct seccomp_rule g_setxid_rules[] = {
	R(setgroups, "the jail's drop: supplementary groups emptied on every thread"),
	R(setresgid, "the jail's drop: every thread to the jail's gid"),
	R(setresuid, "the jail's drop: every thread to the jail's uid"),
};
GROUP(g_setxid, "setxid");

/* An image opened O_DIRECT: a request off the file's alignment (a qcow2
 * metadata update of 8 bytes, an odd-sized raw image's tail) is bounced
 * through aligned blocks, and the bounce asks the file for its alignment
 * (bd_dio_align): statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN), or
 * BLKSSZGET on a block device.  Without it a qcow2 image opened with
 * ,direct died on its first cluster allocation: "thread blk-io made
 * forbidden syscall statx" (test_seccomp's blk_dio_bounce). */
static const struct seccomp_rule g_dio_rules[] = {
	R(statx, "an O_DIRECT image's alignment (STATX_DIOALIGN) for a bounced request"),
	RI(ioctl_dio, "an O_DIRECT block device's logical block size (BLKSSZGET)"),
};
GROUP(g_dio, "dio");

static const struct seccomp_rule g_save_rules[] = {
	RI(ioctl_save, "KVM state of vCPUs and VM for a snapshot; userfaultfd set-up"),
};
GROUP(g_save, "save");

static const struct seccomp_rule g_uffd_rules[] = {
	RI(ioctl_uffd, "lift the write protection of a saved chunk"),
};
GROUP(g_uffd, "uffd");

static const struct seccomp_rule g_uffd_pc_rules[] = {
	RI(ioctl_uffd_pc, "post-copy: place the pages the source sends, wake the faults"),
};
GROUP(g_uffd_pc, "uffd-postcopy");

static const struct seccomp_rule g_dirty_rules[] = {
	RI(ioctl_dirty, "live migration: the dirty log of guest memory"),
};
GROUP(g_dirty, "dirty");

/* The migration sender writes the stream to, and reads the answer from, a
 * socket it was handed (`shoal migrate` connects, the VMM never opens a
 * network socket): send/recv on a connected socket, its timeouts, and a
 * cancel's shutdown.  No socket() and no connect(). */
static const struct seccomp_rule g_stream_rules[] = {
	R(sendto, "the migration stream"),
	R(sendmsg, "the migration stream"),
	R(recvfrom, "the destination's answer"),
	R(recvmsg, "the destination's answer"),
	R(setsockopt, "send and receive timeouts, TCP_NODELAY"),
	R(getsockopt, "socket errors"),
	R(shutdown, "a cancelled migration"),
};
GROUP(g_stream, "stream");

/* The destination's post-copy thread writes its page requests into a TLS
 * session (state/migrate_tls.c): SIGPIPE is blocked around each TLS call,
 * and one the write raised is taken before the mask comes back. */
static const struct seccomp_rule g_sigpipe_rules[] = {
	R(rt_sigpending, "TLS: was SIGPIPE raised by this write?"),
	R(rt_sigtimedwait, "TLS: take that SIGPIPE before the old mask returns"),
};
GROUP(g_sigpipe, "tls-sigpipe");

/* A post-copy destination whose connection dropped waits for the source
 * on the --incoming socket it kept listening (state/migrate_postcopy.c):
 * it accepts there (then the key's handshake, TLS, the stream: what the
 * groups above allow) and, once every page is in, removes a unix:
 * socket's path. */
static const struct seccomp_rule g_pc_recover_rules[] = {
	R(accept4, "post-copy recovery: the source's new connection"),
	R(unlink, "post-copy's end: the unix: listening socket's path"),
	R(unlinkat, "post-copy's end: the unix: listening socket's path"),
};
GROUP(g_pc_recover, "postcopy-recover");

/* A store: disk (store/stream.c): its loader and prefetch threads fetch
 * chunks from the image server over HTTPS with libcurl and OpenSSL, and
 * put them in the local cache store (new segment files, their tables, the
 * index, renamed into place).  The server's name was resolved before any
 * filter (CURLOPT_RESOLVE), so no resolver thread and no NSS; libcurl and
 * libcrypto were loaded then too (no executable mappings).  Only these
 * threads have it, and they exist only while a store: disk is open. */
static const struct seccomp_rule g_inet_rules[] = {
	RA(socket, SC_AF_INET, "the image server's TCP connection: AF_INET or AF_INET6 only"),
	RA(socketpair, SC_AF_UNIX, "libcurl's wake-up pair of its multi handle"),
	R(connect, "the image server"),
	R(sendto, "HTTPS requests (and the store's writes try send first)"),
	R(recvfrom, "HTTPS answers"),
	R(sendmsg, "HTTPS requests"),
	R(recvmsg, "HTTPS answers"),
	R(setsockopt, "TCP_NODELAY, keep-alive"),
	R(getsockopt, "SO_ERROR of the non-blocking connect"),
	R(getsockname, "libcurl records the connection's addresses"),
	R(getpeername, "libcurl records the connection's addresses"),
	R(shutdown, "a connection closed"),
};
GROUP(g_inet, "inet");

static const struct seccomp_rule g_cache_rules[] = {
	R(openat, "the cache's new segment files, tables and index; the client's certificate, "
		  "key and CA files when a connection is made"),
	R(rename, "the cache's files put in place atomically"),
	R(renameat, "the cache's files put in place atomically"),
	R(renameat2, "the cache's files put in place atomically"),
	R(mkdir, "the cache's streams/ directory (the read-order file)"),
	R(mkdirat, "the cache's streams/ directory (the read-order file)"),
	R(unlink, "a temporary file left by a failed write"),
	R(unlinkat, "a temporary file left by a failed write"),
	R(getdents64, "the cache's segment directory"),
	R(statx, "file checks"),
	R(access, "is the image recorded in the cache already"),
	R(faccessat, "is the image recorded in the cache already"),
	R(faccessat2, "is the image recorded in the cache already"),
};
GROUP(g_cache, "cache");

#ifdef __SANITIZE_ADDRESS__
static const struct seccomp_rule g_sanitizer_rules[] = {
	R(openat, "ASan/LSan read /proc/self/maps and /proc/self/task"),
	R(readlink, "ASan symbolizing"),
	R(getdents64, "LSan lists /proc/self/task"),
	R(prctl, "LSan's tracer (PR_SET_PTRACER, PR_SET_PDEATHSIG)"),
	R(sigaltstack, "ASan's alternate signal stack"),
	R(clone, "LSan's tracer is a clone without CLONE_THREAD"),
	R(ptrace, "LSan's tracer stops the other threads"),
	R(wait4, "LSan waits for its tracer"),
	R(sched_getaffinity, "ASan"),
	R(prlimit64, "ASan"),
	R(getrlimit, "ASan"),
	R(pread64, "ASan reading /proc"),
	R(lseek, "ASan reading /proc"),
	R(uname, "ASan"),
	R(kill, "ASan"),
	R(getppid, "LSan's tracer checks its parent"),
	R(exit, "LSan's tracer"),
};
GROUP(g_sanitizer, "sanitizer");
#define SAN &g_sanitizer,
#else
#define SAN
#endif

const struct seccomp_kind_def seccomp_kinds[SECCOMP_NKINDS] = {
	[SECCOMP_MAIN] = { "main", { &g_base, &g_fileio, &g_poll, &g_uring, &g_files, &g_unix,
				    &g_kvm_run, &g_dio, SAN NULL } },
	[SECCOMP_VCPU] = { "vcpu", { &g_base, &g_fileio, &g_poll, &g_unix, &g_kvm_run, &g_mce,
				    SAN NULL } },
	[SECCOMP_EVENT] = { "event", { &g_base, &g_fileio, &g_poll, &g_uring, &g_unix, &g_files, &g_threads,
				      &g_kvm_run, &g_save, &g_dio, &g_dirty, &g_setxid, SAN NULL } },
	[SECCOMP_BLK_IO] = { "blk-io", { &g_base, &g_fileio, &g_poll, &g_uring, &g_kvm_irq, &g_dio,
					&g_setxid, &g_mce_log, SAN NULL } },
	[SECCOMP_SNAP_WRITER] = { "snap-writer", { &g_base, &g_fileio, &g_poll, &g_files, &g_save,
						  &g_reply, &g_mce_log, SAN NULL } },
	[SECCOMP_SNAP_FAULT] = { "snap-fault", { &g_base, &g_fileio, &g_poll, &g_uffd, &g_mce_log,
						SAN NULL } },
	[SECCOMP_MIGRATE] = { "migrate", { &g_base, &g_fileio, &g_poll, &g_stream, &g_save, &g_dirty,
					  &g_kvm_run, SAN NULL } },
	/* started by the main thread before its own filter, in migrate_incoming;
	 * under shoald the jail drops the ids after that (setxid broadcast) */
	[SECCOMP_POSTCOPY] = { "postcopy", { &g_base, &g_fileio, &g_poll, &g_stream, &g_uffd_pc,
					    &g_sigpipe, &g_pc_recover, &g_setxid, &g_mce_log, SAN NULL } },
	/* started by the main thread at build, before any filter, when a
	 * store: disk opens; each installs this filter first thing */
	[SECCOMP_STORE] = { "store", { &g_base, &g_fileio, &g_poll, &g_inet, &g_cache, SAN NULL } },
};
