#!/bin/bash
# slow_linux_virtiofs.sh - one host directory shared by two Linux guests at
# once through `shoal run --fs tag=TAG,socket=PATH` (devices/vhost_user_fs.c,
# a vhost-user front end) and Debian's virtiofsd as the back end.
# tier: kvm
#
# The host makes a tree (a 192 KiB random file, a text file in a
# subdirectory) and starts one virtiofsd per VM on the same tree (the C
# virtiofsd serves one front end per process).  VM 1 (Debian's cloud
# kernel, the kit loads fuse and virtiofs) mounts `-t virtiofs shared
# /mnt`, reports the SHA-256 of the random file and the listing, and
# writes a file.  While it runs, `shoal snapshot create` is refused with a
# message naming virtiofsd (the back end holds the state), and VM 2 starts,
# mounts the same tree, reads the same bytes, sees VM 1's file and writes
# its own, then powers off (status 0).  The host checks both writes arrived
# with the guests' bytes.  Then VM 1's virtiofsd is killed: the VMM logs
# that the device is broken and keeps running, and a forced stop through
# the control socket ends it with status 0.  Before all that, `shoal run
# --fs` on a socket nobody listens on, and on VM 1's control socket (a
# peer that answers JSON), fails at once with status 66 naming the socket.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/linux_lib.bash"

VIRTIOFSD=${VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
linux_require
for t in cpio python3 jq; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done
if [ ! -x "$VIRTIOFSD" ]; then
	skip "$(linux_script)" "$VIRTIOFSD is not installed (Debian package qemu-system-common)"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	skip "$(linux_script)" "virtiofsd needs root for its sandbox"
	exit 0
fi

TREE=$TMP/tree
API=$TMP/api.sock
mkdir -p "$TREE/sub"
head -c 196608 /dev/urandom >"$TREE/a.bin"
echo "hello from the host" >"$TREE/sub/b.txt"
VFS_PIDS=()

vfs_cleanup() {
	local p
	for p in "${VFS_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	[ -n "${VM1_PID:-}" ] && { kill -9 "$VM1_PID" 2>/dev/null; wait "$VM1_PID" 2>/dev/null; }
	linux_cleanup
}
trap vfs_cleanup EXIT

# start_virtiofsd N: a back end on $TMP/vfs<N>.sock for the tree; FAIL if
# its socket does not appear.
start_virtiofsd() {
	local sock=$TMP/vfs$1.sock i
	"$VIRTIOFSD" --socket-path="$sock" -o source="$TREE" -o cache=auto \
		>"$TMP/virtiofsd$1.txt" 2>&1 &
	VFS_PIDS[$1]=$!
	disown "$!"        # killed on purpose below: no "Killed" line from bash
	for i in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
	fail "virtiofsd $1 listens on $sock" "$(tail -2 "$TMP/virtiofsd$1.txt")"
	finish
}

linux_initrd "$TMP/initrd" '
id=$(sed -n "s/.*vfs.id=\([0-9]\).*/\1/p" /proc/cmdline)
mkdir -p /mnt/fs
if mount -t virtiofs shared /mnt/fs 2>/tmp/mount.err; then
	t "mount ok"
	t "a.bin $(sha /mnt/fs/a.bin)"
	t "b.txt $(cat /mnt/fs/sub/b.txt)"
	t "tree $(cd /mnt/fs && find . -path ./from-vm\* -prune -o -print | sort | tr "\n" " ")"
	[ "$id" = 2 ] && t "peer $(cat /mnt/fs/from-vm1.txt 2>&1)"
	echo "written by vm$id" >/mnt/fs/from-vm$id.txt && sync && t "write ok"
else
	t "mount failed: $(cat /tmp/mount.err)"
fi
t "ready"
[ "$id" = 2 ] && poweroff
exec sleep 600'

# Refused at start, status 66 and a message naming the socket and why.
refused() {   # refused WHAT SOCKET REASON
	local out rc
	out=$("$SHOAL" run --kernel "$SHOAL_KIT_VMLINUX" --memory 64M --console none \
		--fs "tag=x,socket=$2" 2>&1 </dev/null); rc=$?
	if [ $rc -eq 66 ] && [[ $out == *"$2: not a usable vhost-user back end: "*"$3"* ]]; then
		pass "$1 is refused at start ($out)"
	else
		fail "$1 is refused at start" "status $rc: $out"
	fi
}
refused "a socket nobody listens on" "$TMP/none.sock" "connect: "

start_virtiofsd 1
start_virtiofsd 2
want_sha=$(sha "$TREE/a.bin")
want_tree=". ./a.bin ./sub ./sub/b.txt "

base_cmdline=$LINUX_CMDLINE
LINUX_CMDLINE="$base_cmdline vfs.id=1"
linux_start vm1 "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --cpus 1 --memory 256M \
	--api-socket "$API" --fs "tag=shared,socket=$TMP/vfs1.sock"
VM1_PID=$LINUX_PID
if linux_wait vm1 ready; then
	pass "vm1: guest ready"
else
	fail "vm1: guest ready" "$(linux_why vm1)"
fi
linux_same "vm1: mount -t virtiofs shared" "$(linux_fact vm1 mount)" "ok"
linux_same "vm1: a.bin has the host's bytes (SHA-256)" "$(linux_fact vm1 a.bin)" "$want_sha"
linux_same "vm1: sub/b.txt reads" "$(linux_fact vm1 b.txt)" "hello from the host"
linux_same "vm1: the tree lists as on the host" "$(linux_fact vm1 tree)" "$want_tree"
linux_same "vm1: a write from the guest" "$(linux_fact vm1 write)" "ok"
check "vm1's file is on the host with its bytes" \
	test "$(cat "$TREE/from-vm1.txt" 2>/dev/null)" = "written by vm1"

# VM 1's control socket speaks JSON, not vhost-user: a peer to refuse
refused "a peer that is not vhost-user (a control socket)" "$API" "GET_FEATURES: "

out=$("$SHOAL" snapshot create --socket "$API" "$TMP/snap" 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *virtiofsd* ]] && [ ! -e "$TMP/snap" ]; then
	pass "snapshot of a VM with --fs is refused ($out)"
else
	fail "snapshot of a VM with --fs is refused" "status $rc: $out"
fi

# VM 2, on the same tree, while VM 1 still runs
LINUX_CMDLINE="$base_cmdline vfs.id=2"
linux_start vm2 "$SHOAL_KIT_VMLINUX" "$TMP/initrd" --cpus 1 --memory 256M \
	--fs "tag=shared,socket=$TMP/vfs2.sock"
if linux_wait vm2 ready; then
	pass "vm2: guest ready while vm1 runs"
else
	fail "vm2: guest ready while vm1 runs" "$(linux_why vm2)"
fi
linux_same "vm2: a.bin has the host's bytes (SHA-256)" "$(linux_fact vm2 a.bin)" "$want_sha"
linux_same "vm2: the tree lists as on the host" "$(linux_fact vm2 tree)" "$want_tree"
linux_same "vm2: sees vm1's write" "$(linux_fact vm2 peer)" "written by vm1"
linux_same "vm2: a write from the guest" "$(linux_fact vm2 write)" "ok"
check "vm2's file is on the host with its bytes" \
	test "$(cat "$TREE/from-vm2.txt" 2>/dev/null)" = "written by vm2"
linux_poweroff_ok vm2

# VM 1's back end dies: the device breaks, the VMM goes on
LINUX_PID=$VM1_PID
kill -9 "${VFS_PIDS[1]}"
if linux_wait_file "$TMP/vm1.vmm" "vhost-user-fs0: vhost-user back end" 30; then
	pass "vm1: the back end's death is logged ($(grep -m1 'vhost-user-fs0: vhost-user back end' "$TMP/vm1.vmm"))"
else
	fail "vm1: the back end's death is logged" "$(tail -3 "$TMP/vm1.vmm")"
fi
check "vm1: the VMM still runs after its back end died" kill -0 "$VM1_PID"
reply=$(hostside control "$API" '{"cmd": "stop", "mode": "force"}')
echo "$reply" | jq -e '.ok == true' >/dev/null 2>&1 || fail "control socket: forced stop" "$reply"
if linux_wait_exit 60; then
	pass "vm1: forced stop ends shoal run with status 0"
else
	fail "vm1: forced stop ends shoal run with status 0" "$(linux_why vm1)"
fi
VM1_PID=""
finish
