#!/bin/bash
# scripts/kvm-box.sh - run a command where /dev/kvm is real KVM, on a host
# that has none.
#
#   scripts/kvm-box.sh [options] [--] COMMAND [ARG...]
#
# The box is Debian's own generic kernel booted under QEMU's software CPU
# (TCG, `-cpu max`), which emulates AMD SVM with nested paging.  Inside it
# `kvm_amd` loads and /dev/kvm is the real Linux KVM, running on emulated
# hardware.  The host's root file system is shared read-write over 9p, so
# COMMAND runs in the same directory, with the same binaries and the same
# environment, as it would on the host; only /tmp, /run and /dev/shm are the
# box's own (fresh tmpfs: Unix sockets cannot be made on 9p).  Useful to
# anyone whose CI machines are VMs without nested virtualization.
#
# COMMAND's standard output and error stream back as it runs (two
# virtio-console ports), and its exit status is the script's.  On a
# terminal, the terminal is COMMAND's (keys, size and all), so an
# interactive `shoal run` works as it would on the host.  The box's
# own kernel log goes to a file, shown only when the box fails.
#
# Options (and the environment variables that set the same):
#   --timeout SECS   SHOAL_BOX_TIMEOUT   whole run, boot included (3600)
#   --cpus N         SHOAL_BOX_CPUS      box vCPUs (the host's cores, 2..4)
#   --memory MIB     SHOAL_BOX_MEMORY    box RAM in MiB (6144)
#   --cpu MODEL      SHOAL_BOX_CPU       QEMU's CPU model for the box (max);
#                    another must be AMD with SVM, e.g. EPYC,+svm: kvm_amd
#                    loads on AMD vendors only, and TCG emulates no VMX
#   --log FILE       SHOAL_BOX_LOG       keep the box's kernel log there
#   --check          boot the box, check /dev/kvm inside, exit 0 or 125
#   --kit            only build the box's kernel and initramfs; print paths
#   --auto           where /dev/kvm is usable here, just run COMMAND here
#   --usable         exit 0 if /dev/kvm here is usable, else 1 and say why:
#                    a readable and writable /dev/kvm that is not the
#                    kvm_pvm back end (/sys/module/kvm_pvm: it emulates the
#                    guest's ring 0 and brings no Linux guest to user
#                    space, docs/testing.md), unless SHOAL_KVM_PVM_OK=1
#   --quiet, -q      no progress lines on stderr
#
# Environment: SHOAL_BOX_APPEND, more words for the box kernel's command
# line; "unknown_nmi_panic panic_print=0x40" makes a timed-out box print
# every CPU's backtrace (see box_watch).
#
# Exit status: COMMAND's own; 124 when the timeout ended the box (first
# sending its kernel an NMI); 125 when the box itself could not run (no
# QEMU, no SVM emulation, no kernel package and no network, the box kernel
# failed, or it froze: no heartbeat on its serial line for SHOAL_BOX_HANG
# seconds, 300): the reason is printed as one line starting "kvm-box: ".
#
# The kernel and initramfs are built once into the cache, as the guest kit
# is (${SHOAL_CACHE:-$HOME/.cache/shoal}/box/): the package is resolved
# from linux-image-amd64 (the generic flavour: the cloud one has no 9p), and
# offline the box uses the kit it has.  A lock serializes builds, and
# a queue lets as many boxes run at once as the host's cores hold (one
# 2-vCPU box on two cores, or two 1-vCPU ones; SHOAL_BOX_NOLOCK=1 skips
# the queue).
#
# Not hardware figures: inside the box every instruction, host and guest
# alike, runs on the software CPU.  Compare Shoal with QEMU -accel kvm side
# by side in the same box, and report ratios.  See docs/testing.md.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
BOX=$CACHE/box
META=linux-image-amd64
# Modules the box loads, in this order (dependencies come along):
#   virtio_pci, 9pnet_virtio, 9p   the host's root file system
#   virtio_console                 the command's stdout and stderr
#   kvm_amd                        /dev/kvm (with kvm, irqbypass, ccp)
#   tun, vhost_net, vhost_vsock    TAP devices, QEMU's vhost back ends
#   bridge, veth                   test networks between VMs
#   loop, ext4                     a real block device (daemon_limits.sh's io.max)
#   nf_tables, nft_chain_nat,      shoald's networks: NAT and the isolated
#   nft_masq, nft_ct               networks' firewall (slow_linux_daemon_net.sh)
MODULES="virtio_pci 9pnet_virtio 9p virtio_console kvm_amd tun vhost_net vhost_vsock
	bridge veth loop ext4 nf_tables nft_chain_nat nft_masq nft_ct"

TIMEOUT=${SHOAL_BOX_TIMEOUT:-3600}
MEMORY=${SHOAL_BOX_MEMORY:-6144}
CPUS=${SHOAL_BOX_CPUS:-}
BOXCPU=${SHOAL_BOX_CPU:-max}
LOG=${SHOAL_BOX_LOG:-}
QUIET=0
MODE=run
AUTO=0

say() { [ "$QUIET" -eq 1 ] || echo "kvm-box: $*" >&2; }

# kvm_usable_here: /dev/kvm on this host is one the tests and the demo can
# use as it is; else 1, with the reason on stderr.
kvm_usable_here() {
	if [ ! -c /dev/kvm ]; then
		echo "kvm-box: no /dev/kvm here" >&2; return 1
	elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		echo "kvm-box: /dev/kvm here is not readable and writable by $(id -un)" >&2; return 1
	elif [ -d /sys/module/kvm_pvm ] && [ "${SHOAL_KVM_PVM_OK:-}" != 1 ]; then
		echo "kvm-box: /dev/kvm here is the kvm_pvm back end, which emulates the guest's ring 0 and brings no Linux guest to user space (SHOAL_KVM_PVM_OK=1 uses it anyway)" >&2
		return 1
	fi
	return 0
}
# die MSG [STATUS]: one line naming the reason; 125 unless told.
die() { echo "kvm-box: $1" >&2; exit "${2:-125}"; }

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case $1 in
	--timeout) TIMEOUT=${2:?}; shift 2 ;;
	--cpus) CPUS=${2:?}; shift 2 ;;
	--memory) MEMORY=${2:?}; shift 2 ;;
	--cpu) BOXCPU=${2:?}; shift 2 ;;
	--log) LOG=${2:?}; shift 2 ;;
	--check) MODE=check; shift ;;
	--auto) AUTO=1; shift ;;
	--usable) MODE=usable; shift ;;
	--kit) MODE=kit; shift ;;
	-q|--quiet) QUIET=1; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (see --help)" 2 ;;
	*) break ;;
	esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die "--timeout: not a number of seconds: $TIMEOUT" 2
[[ $MEMORY =~ ^[0-9]+$ ]] && [ "$MEMORY" -ge 1024 ] || die "--memory: want MiB, at least 1024: $MEMORY" 2
if [ -z "$CPUS" ]; then
	CPUS=$(nproc)
	[ "$CPUS" -lt 2 ] && CPUS=2
	[ "$CPUS" -gt 4 ] && CPUS=4
fi
[[ $CPUS =~ ^[0-9]+$ ]] && [ "$CPUS" -ge 1 ] || die "--cpus: not a count: $CPUS" 2
[[ $BOXCPU =~ ^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$ ]] || die "--cpu: not a QEMU CPU model: $BOXCPU" 2
if [ "$MODE" = run ] && [ $# -eq 0 ]; then
	usage >&2
	exit 2
fi

. "$ROOT/scripts/debkernel.bash"

# write_init FILE: the box's /init.  It never exits (the kernel panics when
# init dies): it powers the box off.  It reports on the serial line, which
# the host side reads:
#   shoal-box: kvm ok | shoal-box: no-kvm REASON
#   shoal-box: exit STATUS
write_init() {
	cat >"$1" <<'EOF'
#!/bin/sh
# /init of Shoal's KVM box (written by scripts/kvm-box.sh).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "shoal-box: $*" >/dev/ttyS0; }
off() { sync; poweroff -f; sleep 10; }
run=""; check=0; tty=""; beat=30
for w in $(cat /proc/cmdline); do
	case $w in
	box.run=*) run=${w#box.run=} ;;
	box.check) check=1 ;;
	box.tty=*) tty=${w#box.tty=} ;;
	box.beat=*) beat=${w#box.beat=} ;;
	esac
done
for m in $(cat /etc/kit-modules); do
	modprobe "$m" 2>/tmp/modprobe.err || say "modprobe $m failed: $(cat /tmp/modprobe.err)"
done
if [ ! -c /dev/kvm ]; then
	say "no-kvm kvm_amd did not give /dev/kvm ($(grep -o -m1 -w svm /proc/cpuinfo || echo 'no svm flag in the box CPU'); $(dmesg | grep -i -m1 -e 'kvm' -e 'svm' || echo 'no kvm line in dmesg'))"
	off
fi
say "kvm ok: $(dmesg | grep -m1 'Nested Paging' || echo 'kvm_amd loaded')"
[ $check = 1 ] && { say "exit 0"; off; }
# The heartbeat: the host side (box_watch) ends a box whose serial line
# stays silent for SHOAL_BOX_HANG seconds: a box kernel that froze.
( while sleep "$beat"; do echo "shoal-box: alive" >/dev/ttyS0; done ) &
ip link set lo up
mkdir -p /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=262144 hostroot /newroot; then
	say "no-root cannot mount the host's root over 9p"
	off
fi
# /usr again, read-only and with cache=loose: the box's page cache keeps
# what it has read, so a program started many times (bash's tools, curl,
# jq, python3 with its modules, the shared libraries) is read over 9p
# once, not at each start.  cache=mmap above re-reads a file at each open
# (python3 -c 1 took 10 s in the box).  /usr does not change while a box
# runs; the rest of the root, which the tests write, stays coherent.
if ! mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=262144,ro hostusr /newroot/usr; then
	say "cannot mount /usr with caching over 9p; the box runs from the uncached root (slower)"
fi
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
mkdir -p /dev/pts /dev/shm
# What udev would make: bash's <(...) needs /dev/fd.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mount --bind /dev /newroot/dev
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount --bind /newroot/dev/pts/ptmx /newroot/dev/ptmx
for d in /tmp /run /dev/shm; do
	mount -t tmpfs -o mode=1777,size=75% tmpfs "/newroot$d"
done
hostname shoal-box
# The keeper: one KVM VM with an irqchip and a vCPU that never runs, held
# for the box's life.  Creating the first VM (and LAPIC) of a host flips
# static keys (preempt notifiers, apic_sw_disabled), which the kernel does
# by patching its own text with int3; QEMU's multi-threaded software CPU
# sometimes leaves a CPU looping on such a half-patched site in __schedule
# with interrupts off, and the box stops dead (seen every few hundred VM
# starts).  With the keeper's VM alive the keys never go back to zero, so
# every VM a test makes only moves a count: no more patching.
chroot /newroot /usr/bin/python3 -c '
import fcntl, os, time
kvm = os.open("/dev/kvm", os.O_RDWR)
vm = fcntl.ioctl(kvm, 0xAE01, 0)     # KVM_CREATE_VM
fcntl.ioctl(vm, 0xAE60, 0)           # KVM_CREATE_IRQCHIP
fcntl.ioctl(vm, 0xAE41, 0)           # KVM_CREATE_VCPU 0
open("/run/box-keeper", "w").close()
while True:
    time.sleep(86400)
' </dev/null >/dev/ttyS0 2>&1 &
n=0
while [ ! -e /newroot/run/box-keeper ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
[ -e /newroot/run/box-keeper ] || say "keeper did not start; static keys may flip under the tests"
rm -f /newroot/run/box-keeper
if [ -n "$tty" ]; then
	# Interactive: hvc0 is the user's terminal (QEMU passes keys through
	# raw), the command's controlling tty, with the terminal's size.
	stty -F /dev/hvc0 sane rows "${tty%x*}" cols "${tty#*x}"
	setsid -c chroot /newroot /bin/bash "$run" </dev/hvc0 >/dev/hvc0 2>&1
else
	# Output bytes as the command wrote them: no CR added before each LF.
	# The ports stay open here, since hvc resets a tty's settings on its
	# last close.
	exec 3>/dev/hvc0 4>/dev/hvc1
	stty -F /dev/hvc0 raw -echo
	stty -F /dev/hvc1 raw -echo
	chroot /newroot /bin/bash "$run" </dev/null >&3 2>&4 3>&- 4>&-
fi
say "exit $?"
off
EOF
	chmod 755 "$1"
}

kit_complete() {
	[ -f "$BOX/stamp" ] && [ -s "$BOX/vmlinuz" ] && [ -s "$BOX/initrd.cpio.gz" ]
}

# build_kit PKG VER: the box's kernel and initramfs, built in a scratch
# folder and moved into place whole.
build_kit() {
	local pkg=$1 ver=$2 digest=$3 work new kver
	work=$(mktemp -d "$CACHE/box-work.XXXXXX")
	new=$work/new
	mkdir -p "$new"
	trap 'rm -rf "$work"' EXIT
	kver=$(dk_fetch "$pkg" "$ver" "$work") || exit $?
	cp "$work/pkg/boot/vmlinuz-$kver" "$new/vmlinuz"
	dk_initrd_root "$work/ird"
	# shellcheck disable=SC2086
	dk_add_modules "$work/pkg" "$kver" "$work/ird" $MODULES
	write_init "$work/ird/init"
	dk_pack "$work/ird" "$new/initrd.cpio.gz"
	echo "$pkg $ver $digest" >"$new/stamp"
	rm -rf "$BOX"
	mv "$new" "$BOX"
	rm -rf "$work"
	trap - EXIT
	say "box kernel $pkg $ver ready in $BOX"
}

# ensure_kit: build or refresh the box's kernel and initramfs.
ensure_kit() {
	local pv
	mkdir -p "$CACHE"
	exec 8>"$CACHE/box-build.lock"
	flock 8
	dk_need_tools
	pv=$(dk_resolve_or_update "$META") || pv=""
	if [ -z "$pv" ]; then
		kit_complete && { say "cannot resolve $META (offline?); using the box kernel in $BOX"; return 0; }
		die "cannot resolve $META to a kernel package (no apt lists or no network), and no box kernel is cached"
	fi
	# The stamp names the package and a digest of what this script puts in
	# the initramfs, so a change to /init or the modules rebuilds it.
	pv="$pv $({ declare -f write_init; echo "$MODULES"; } | md5sum | cut -c1-12)"
	if ! kit_complete || [ "$(cat "$BOX/stamp")" != "$pv" ]; then
		# shellcheck disable=SC2086
		(build_kit $pv) || die "could not build the box kernel from $pv"
	fi
	exec 8>&-
}

# need_qemu: QEMU for x86-64 with 9p (qemu-system-x86 on Debian).
need_qemu() {
	command -v qemu-system-x86_64 >/dev/null 2>&1 ||
		"$ROOT/scripts/install-deps.sh" >&2 ||
		die "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
	command -v qemu-system-x86_64 >/dev/null 2>&1 ||
		die "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
}

# write_run FILE: the script the box runs: the caller's directory, its
# exported environment, then COMMAND.
write_run() {
	local f=$1 a
	{
		echo "# written by scripts/kvm-box.sh for one run"
		export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_|HOSTNAME|TERM|TMPDIR|SHOAL_BOX_[A-Z]*)(=|$)'
		echo "export SHOAL_IN_BOX=1 TERM=dumb"
		# Debian's programs before the caller's own (a pyenv shim is a
		# bash script that runs a dozen programs, and a python under
		# $HOME is read over uncached 9p: python3 -c 1 took 10 s in the
		# box, Debian's from the cached /usr far less).
		echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH'
		printf 'cd %q || exit 125\n' "$PWD"
		printf 'exec'
		for a in "${CMD[@]}"; do printf ' %q' "$a"; done
		echo
	} >"$f"
}

# queue_wait: wait for this caller's turn, first come first served.  flock
# alone lets a busy caller take the box again and again while others
# starve, so each caller takes a numbered ticket and runs when its ticket is
# among the lowest SLOTS whose owners are alive.  SLOTS is how many boxes of
# this many vCPUs the host's cores hold (SHOAL_BOX_SLOTS sets it): on two
# cores, two 1-vCPU boxes run side by side as fast as one alone, while two
# 2-vCPU boxes take more than twice as long each (their software vCPUs
# spin on each other's locks; see docs/testing.md), so those wait.
TICKET=""
queue_wait() {
	local q=$CACHE/box-queue n said=0 t ahead slots
	slots=${SHOAL_BOX_SLOTS:-$(( $(nproc) / CPUS ))}
	[ "$slots" -ge 1 ] 2>/dev/null || slots=1
	mkdir -p "$q"
	exec 6>"$q.lock"
	flock 6
	n=$(( $(cat "$q.next" 2>/dev/null || echo 0) + 1 ))
	echo "$n" >"$q.next"
	TICKET=$(printf '%s/%012d.%s' "$q" "$n" "$$")
	: >"$TICKET"
	flock -u 6
	while :; do
		ahead=0
		for t in "$q"/*; do
			[ -e "$t" ] || continue
			[ "$t" = "$TICKET" ] && break
			kill -0 "${t##*.}" 2>/dev/null || { rm -f "$t"; continue; }
			ahead=$((ahead + 1))
		done
		[ "$ahead" -lt "$slots" ] && break
		[ $said = 1 ] || { say "waiting for another box to finish"; said=1; }
		sleep 1
	done
}

# box_watch MONITOR SERIAL: wait for QEMU (QEMU_PID) to end and return its
# status, or 124 once the timeout has passed, or 123 once the box's serial
# line (SERIAL) has said nothing for SHOAL_BOX_HANG seconds (300; 0: never):
# its init prints a heartbeat every 30 s (box.beat=), so silence means the
# box kernel froze.  A CI run lost a whole tier to a box that hung with
# nothing said until its 3000 s timeout; now the box ends in 5 minutes and
# scripts/test.sh runs what it had not finished in a fresh box.  At the timeout the box first gets an
# NMI; booted with SHOAL_BOX_APPEND="unknown_nmi_panic panic_print=0x40"
# its kernel then prints what every CPU was doing (a hung box is otherwise
# silent).  Those words are not the default: nested guests' NMIs sometimes
# reach the box kernel as unknown NMIs under QEMU's software SVM, and the
# panic they then caused ended a CI run's box half-way.  Then QEMU is
# ended.  SIGTERM, SIGINT or SIGHUP to this script end QEMU too, so a
# killed caller leaves no box behind.
QEMU_PID=""
box_watch() {
	local mon=$1 serial=$2 deadline=$((SECONDS + TIMEOUT)) n hang=${SHOAL_BOX_HANG:-300} hung=0
	trap 'kill "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; exit 143' TERM INT HUP
	while kill -0 "$QEMU_PID" 2>/dev/null; do
		if [ "$hang" -gt 0 ] && [ -e "$serial" ] &&
			[ $(( $(date +%s) - $(stat -c %Y "$serial") )) -ge "$hang" ]; then
			hung=1
		fi
		if [ "$SECONDS" -ge "$deadline" ] || [ $hung = 1 ]; then
			python3 -c 'import socket,sys,time
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"nmi\n"); time.sleep(1)' "$mon" 2>/dev/null
			for n in $(seq 20); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
			kill "$QEMU_PID" 2>/dev/null
			sleep 2
			kill -9 "$QEMU_PID" 2>/dev/null
			wait "$QEMU_PID" 2>/dev/null
			[ $hung = 1 ] && return 123
			return 124
		fi
		sleep 1
	done
	wait "$QEMU_PID"
}

# box_status LOG: the status the init reported, or nothing.
box_status() { sed -n 's/.*shoal-box: exit \([0-9]*\)$/\1/p' "$1" | tail -1; }

run_box() {
	local run rc st serial extra=""
	need_qemu
	ensure_kit
	case $PWD/ in
	/tmp/*|/run/*|/dev/shm/*)
		[ "$MODE" = run ] && die "$PWD: the box has its own /tmp, /run and /dev/shm; run from a folder outside them" 2 ;;
	esac
	mkdir -p "$BOX-runs"
	[ "${SHOAL_BOX_NOLOCK:-0}" != 1 ] && queue_wait
	run=$(mktemp -d "$BOX-runs/run.XXXXXX")
	trap 'rm -rf "$run" ${TICKET:+"$TICKET"}' EXIT
	serial=$run/serial.log
	if [ "$MODE" = check ]; then
		extra="box.check"
	else
		write_run "$run/run.sh"
		extra="box.run=$run/run.sh"
	fi
	# Two output ports (stdout, stderr) with no input; or, on a terminal,
	# one port that is the terminal, keys included (Ctrl-A reaches the
	# command: QEMU's stdio is not multiplexed here).
	local ports=(-chardev file,id=out,path=/dev/fd/1,append=on -device virtconsole,chardev=out
		-chardev file,id=err,path=/dev/fd/2,append=on -device virtconsole,chardev=err)
	local stdin=/dev/null
	if [ "$MODE" = run ] && [ -t 0 ] && [ -t 1 ]; then
		ports=(-chardev stdio,id=out,signal=off -device virtconsole,chardev=out)
		stdin=/dev/stdin
		extra="$extra box.tty=$(stty size | tr ' ' x)"
	fi
	say "booting the box ($CPUS vCPUs of $BOXCPU, $MEMORY MiB) for: ${CMD[*]:-check}"
	# The kernel's own console goes to a file; with the soft-lockup and RCU
	# stall watchdogs off, a host starved of CPU time slows the box down
	# instead of filling that file with lockup reports.  QEMU runs in
	# the background of this script but in its process group, so on a
	# terminal it stays in the foreground and may set it raw.
	qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu "$BOXCPU" -smp "$CPUS" -m "$MEMORY" \
		-nographic -no-reboot -nodefaults \
		-monitor "unix:$run/monitor.sock,server=on,wait=off" \
		-kernel "$BOX/vmlinuz" -initrd "$BOX/initrd.cpio.gz" \
		-append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off nowatchdog nosoftlockup rcupdate.rcu_cpu_stall_suppress=1 ${SHOAL_BOX_APPEND:-} $extra" \
		-serial "file:$serial" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap,id=hr \
		-virtfs local,path=/usr,mount_tag=hostusr,security_model=passthrough,readonly=on,multidevs=remap,id=hu \
		-device virtio-serial-pci "${ports[@]}" <"$stdin" 6>&- 7>&- &
	QEMU_PID=$!
	box_watch "$run/monitor.sock" "$serial"
	rc=$?
	# The serial log has CRs and the firmware's terminal escapes.
	tr -d '\r' <"$serial" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >"$serial.txt"
	serial=$serial.txt
	[ -n "$LOG" ] && cp "$serial" "$LOG"
	if grep -q 'shoal-box: no-' "$serial"; then
		die "$(sed -n 's/.*shoal-box: no-[a-z]* //p' "$serial" | head -1)"
	fi
	if [ "$rc" -eq 124 ]; then
		echo "kvm-box: timed out after ${TIMEOUT}s; the box kernel's last lines (with every CPU's backtrace if it took the NMI):" >&2
		grep -v '^shoal-box: alive$' "$serial" | tail -60 >&2
		exit 124
	fi
	if [ "$rc" -eq 123 ]; then
		echo "kvm-box: the box stopped answering: nothing on its serial line for ${SHOAL_BOX_HANG:-300}s (no heartbeat), so it was ended; its kernel's last lines (with every CPU's backtrace if it took the NMI):" >&2
		grep -v '^shoal-box: alive$' "$serial" | tail -40 >&2
		exit 125
	fi
	st=$(box_status "$serial")
	if [ -z "$st" ]; then
		echo "kvm-box: the box stopped without a status (QEMU exit $rc); its last lines:" >&2
		grep -m1 -B2 -A3 'Kernel panic' "$serial" >&2
		tail -15 "$serial" >&2
		exit 125
	fi
	[ "$MODE" = check ] && say "$(sed -n 's/.*shoal-box: kvm ok: //p' "$serial" | head -1)"
	exit "$st"
}

CMD=("$@")
if [ "$MODE" = usable ]; then
	kvm_usable_here
	exit
fi
if [ "$AUTO" = 1 ] && [ "$MODE" = run ] && kvm_usable_here 2>/dev/null; then
	exec "${CMD[@]}"
fi
case $MODE in
kit) ensure_kit; echo "SHOAL_BOX_KERNEL=$BOX/vmlinuz"; echo "SHOAL_BOX_INITRD=$BOX/initrd.cpio.gz" ;;
*) run_box ;;
esac
