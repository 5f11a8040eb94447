#!/bin/bash
# daemon_snapshot_disk.sh - the daemon follows a VM's disk onto its
# overlays, and gives restored VMs and clones host resources of their own
# (docs/daemon.md, "Snapshots"; docs/snapshots.md, "Disks"), through the
# CLI and curl only, with the test guest:
#   - a VM with a writable raw disk and a vsock device writes a sector
#     pattern (seed 7); `shoal vm snapshot` is accepted, the disk moves
#     onto d-s1.qcow2 beside it and the VM's spec names that overlay; the
#     snapshot records the disk it depends on (the parent);
#   - the guest overwrites its disk (seed 9) and exits; started again (a
#     fresh boot from its spec) it reads seed 9: the newer writes survive,
#     and the parent still holds seed 7;
#   - a restore and two clones, running at once: each writes an overlay
#     of its own on the parent, named in its spec, and binds a vsock
#     socket of its own beside the template's; the restored VM reads the
#     snapshot's disk (seed 7);
#   - bad TAP names and more TAPs than cards are refused (400);
#   - a VM on a TAP, snapshotted: `vm restore --tap` and `vm clone
#     --tap-prefix` put the restore and the clones on TAPs of their own,
#     each held by its VMM, while the first VM holds its own; clones of a
#     VM on a daemon network are on it too, each on a TAP made for it;
#   - deleting the snapshot is refused while they exist, naming them, even
#     stopped; deleted, their overlays are gone and the snapshot can go;
#     deleting the source VM removes its overlay too.
# The daemon runs with --jail off: a jailed VMM cannot reach the directory
# beside its disk to make the overlay (daemon_snapshot.sh checks that
# refusal, jailed).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_snapshot_disk || finish

start_daemon --jail off || { fail "daemon starts"; finish; }
pass "daemon starts (--jail off)"

T=$(cd "$TMP" && pwd -P)
jqq() { [ -s "${*: -1}" ] && jq "$@" >/dev/null; }     # ... FILE: not on an empty file
# pattern DISK SEED: the first 64 sectors of raw DISK hold the guest's vblk pattern
pattern() {
	python3 - "$1" "$2" <<'PY'
import sys
data = open(sys.argv[1], "rb").read(64 * 512)
seed = sys.argv[2]
for s in range(64):
    want = (f"shoal vblk seed={seed} sector={s}".ljust(511, ".") + "\n").encode()
    if data[s * 512:(s + 1) * 512] != want:
        print(f"sector {s}: {data[s * 512:s * 512 + 40]!r}"); sys.exit(1)
PY
}
# run_guest NAME COMMANDS STATUS: type COMMANDS (which end with "exit STATUS")
# and wait for the VM to exit with that status
run_guest() {
	type_console "$1" "$2"$'\r'
	wait_state "$1" exited 600
	test "$(vm_field "$1" '.state + "|" + (.last_exit.status | tostring)')" = "exited|$3"
}

# --- a VM with a writable disk and a vsock device ---
"$SHOAL" img create -f raw "$T/d.raw" 8M >/dev/null
check "create and start src (a writable raw disk, vsock)" "$SHOAL" vm create -f <(spec src shell \
	"\"disks\": [{\"path\": \"$T/d.raw\"}], \"vsock\": {\"cid\": 7, \"socket\": \"$T/v.sock\"}") --start
wait_console_long src "shoal>" || fail "src reaches its shell" "$("$SHOAL" console src --show-log | tail -c 300)"
type_console src "vblk 64 7"$'\r'
wait_console_long src "vblk ok" || fail "src wrote its disk pattern" "$("$SHOAL" console src --show-log | tail -c 300)"

out=$("$SHOAL" vm snapshot src --as s1 2>&1); rc=$?
check "snapshot of a VM with a writable disk: accepted" test $rc -eq 0 -a -d "$STATE/snapshots/s1"
check "src's spec names the overlay it writes now, d-s1.qcow2 beside its disk" \
	test "$(vm_field src '.spec.disks[0].path + "|" + (.spec.disks[0].readonly | tostring)')" = "$T/d-s1.qcow2|false"
check "the overlay is there" test -f "$T/d-s1.qcow2"
"$SHOAL" snapshot show s1 -o json >"$TMP/s1.json"
check "the snapshot records the disk it depends on (the parent)" \
	jqq -e --arg p "$T/d.raw" '.disks == [{"path": $p, "writable": true}]' "$TMP/s1.json"

# --- the source's newer writes survive a stop and a start ---
check "src overwrites its disk (seed 9) and exits 4" run_guest src "vblk 64 9; exit 4" 4
check "the parent still holds the snapshot's disk (seed 7)" pattern "$T/d.raw" 7
check "start src again (a fresh boot from its spec)" "$SHOAL" vm start src
wait_console_long src "shoal>" || fail "src reaches its shell again" "$("$SHOAL" console src --show-log | tail -c 300)"
check "  ... it reads its newer writes (seed 9) and exits 5" run_guest src "vblk-verify 64 9; exit 5" 5
check "  ... vblk-verify said ok" console_has src "vblk-verify ok sectors=64 seed=9"

# --- a restore and two clones, at once ---
check "restore s1 as r1" "$SHOAL" vm restore s1 --name r1
out=$("$SHOAL" vm clone s1 --count 2 --prefix c 2>&1); rc=$?
check "clone s1 twice (c-1, c-2): both start" test $rc -eq 0
for v in r1 c-1 c-2; do
	check "$v runs" test "$(vm_field $v .state)" = running
	p=$(vm_field $v '.spec.disks[0].path'); ro=$(vm_field $v '.spec.disks[0].readonly')
	if [[ $p == "$T"/d-s1-r*.qcow2 ]] && [ -f "$p" ] && [ "$ro" = false ]; then
		pass "$v's spec names an overlay of its own beside the parent, writable"
	else fail "$v's spec names an overlay of its own beside the parent, writable" "$p readonly=$ro"; fi
	check "$v's vsock socket is its own, $v.vsock beside the template's, and bound" \
		test "$(vm_field $v '.spec.vsock.socket')" = "$T/$v.vsock" -a -S "$T/$v.vsock"
done
check "three distinct overlays" test "$(for v in r1 c-1 c-2; do vm_field $v '.spec.disks[0].path'; done | sort -u | wc -l)" = 3
check "the template's vsock socket is untouched" test -S "$T/v.sock" -o ! -e "$T/v.sock"
check "r1 reads the snapshot's disk (seed 7), writes its own (seed 11), exits 6" \
	run_guest r1 "vblk-verify 64 7; vblk 64 11; exit 6" 6
check "  ... vblk-verify said ok" console_has r1 "vblk-verify ok sectors=64 seed=7"
check "the parent is unchanged (seed 7)" pattern "$T/d.raw" 7

# --- TAPs: names checked, no more than the cards ---
expect_error "restore: a bad TAP name: 400" 400 invalid_request "taps[0]" \
	api POST /v1/snapshots/s1/restore '{"name": "t1", "taps": ["bad/name"]}'
expect_error "restore: a TAP for a card the VM does not have: 400" 400 invalid_request \
	"0 network cards" api POST /v1/snapshots/s1/restore '{"name": "t1", "taps": ["tap-x"]}'
expect_error "clone: a tap_prefix too long for its numbers: 400" 400 invalid_request "tap_prefix" \
	api POST /v1/snapshots/s1/clone '{"count": 2, "tap_prefix": "abcdefghijklmno"}'
check "  ... nothing was made" test "$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms/t1 -o /dev/null -w '%{http_code}')" = 404

# --- the snapshot is in use while their overlays exist ---
out=$("$SHOAL" snapshot delete s1 2>&1); rc=$?
ov="its disk overlay is on the snapshot's"
check "delete s1 is refused, naming r1, c-1 and c-2 and why" test $rc -eq 1 -a "$out" = \
	"shoal: snapshot s1: in use by VMs r1 (exited, $ov), c-1 (clone, running, $ov), c-2 (clone, running, $ov)"
"$SHOAL" snapshot show s1 -o json >"$TMP/s1.json"
check "snapshot show: used_by r1, c-1, c-2" jqq -e '(.used_by | sort) == ["c-1", "c-2", "r1"]' "$TMP/s1.json"
ovs=$(for v in r1 c-1 c-2; do vm_field $v '.spec.disks[0].path'; done)
for v in r1 c-1 c-2; do "$SHOAL" vm delete $v --force >/dev/null 2>&1; done
check "deleted, their overlays are gone" bash -c "! ls $(echo $ovs) 2>/dev/null | grep -q ."
check "  ... and no other overlay of s1 is left" test -z "$(ls "$T" | grep '^d-s1-r')"
out=$("$SHOAL" snapshot delete s1 2>&1); rc=$?
check "then delete s1 is accepted" test $rc -eq 0 -a ! -e "$STATE/snapshots/s1"
check "src's own overlay stays while src exists" test -f "$T/d-s1.qcow2"
# --- TAPs through the CLI: vm restore --tap, vm clone --tap-prefix ---
# carrier TAP: 1 while a VMM holds a queue of TAP (Linux sets it on open)
carrier() { [ "$(cat /sys/class/net/$1/carrier 2>/dev/null)" = 1 ]; }
if [ "$(id -u)" = 0 ] && ip tuntap add dev stap0 mode tap 2>/dev/null; then
	for t in stap1 ctap1 ctap2; do ip tuntap add dev $t mode tap; done
	for t in stap0 stap1 ctap1 ctap2; do ip link set $t up; done
	check "a VM on TAP stap0 (nets) starts" "$SHOAL" vm create -f <(spec n shell '"nets": [{"tap": "stap0"}]') --start
	wait_console_long n "shoal>" || fail "n reaches its shell" "$("$SHOAL" console n --show-log | tail -c 300)"
	check "snapshot n as sn" "$SHOAL" vm snapshot n --as sn
	check "vm restore sn --name nr --tap stap1: accepted while n holds stap0" \
		"$SHOAL" vm restore sn --name nr --tap stap1
	check "  ... nr's spec names stap1, and its VMM holds it" \
		test "$(vm_field nr '.spec.nets[0].tap')" = stap1 -a "$(carrier stap1; echo $?)" = 0
	check "vm clone sn --count 2 --prefix nc --tap-prefix ctap: both start" \
		"$SHOAL" vm clone sn --count 2 --prefix nc --tap-prefix ctap
	check "  ... nc-1 on ctap1, nc-2 on ctap2, each held" \
		test "$(vm_field nc-1 '.spec.nets[0].tap')|$(vm_field nc-2 '.spec.nets[0].tap')|$(carrier ctap1; echo $?)$(carrier ctap2; echo $?)" = "ctap1|ctap2|00"
	out=$("$SHOAL" vm restore sn --name nr2 --tap a --tap b 2>&1); rc=$?
	check "vm restore with two --tap for one card: refused by the daemon (400), nothing made" \
		test $rc -ne 0 -a "$(curl -s --unix-socket "$SHOAL_SOCKET" http://d/v1/vms/nr2 -o /dev/null -w '%{http_code}')" = 404
	check "  ... the error says the VM has one card" grep -q "1 network card" <<<"$out"
	out=$("$SHOAL" vm start n --tap x 2>&1); rc=$?
	check "--tap on another verb: usage error (64), naming it" test $rc -eq 64 -a "$out" = \
		"shoal: vm start: --tap is for vm restore (the new VM's TAPs)"
	out=$("$SHOAL" vm restore sn --name nr3 --tap-prefix x 2>&1); rc=$?
	check "--tap-prefix on vm restore: usage error (64)" test $rc -eq 64 -a "$out" = \
		"shoal: vm restore: --tap-prefix is for vm clone"
	# a VM on a daemon network: its restore and clones are on the network
	# too, each on a TAP made for it (not the snapshot VM's)
	if "$SHOAL" net create sn0 --subnet 10.231.9.0/24 --isolated >"$TMP/net.out" 2>&1; then
		check "a VM on network sn0 starts" "$SHOAL" vm create -f <(spec w shell '"nets": [{"network": "sn0"}]') --start
		wait_console_long w "shoal>" || fail "w reaches its shell" "$("$SHOAL" console w --show-log | tail -c 300)"
		check "snapshot w as sw" "$SHOAL" vm snapshot w --as sw
		check "vm clone sw --count 2 --prefix wc: both start while w runs" \
			"$SHOAL" vm clone sw --count 2 --prefix wc
		check "  ... each clone's spec names network sn0, not a TAP" \
			test "$(vm_field wc-1 '.spec.nets[0].network + "|" + (.spec.nets[0].tap // "-")')|$(vm_field wc-2 '.spec.nets[0].network')" = "sn0|-|sn0"
		n=0
		for t in $(ip -o link show master sb-sn0 | awk -F': ' '{print $2}' | cut -d@ -f1); do
			carrier "$t" && n=$((n + 1))
		done
		check "  ... three TAPs on the bridge, each held by its VMM (w's and one per clone)" test $n = 3
		for v in wc-1 wc-2 w; do "$SHOAL" vm delete $v --force >/dev/null 2>&1; done
		"$SHOAL" snapshot delete sw >/dev/null 2>&1
		"$SHOAL" net delete sn0 >/dev/null 2>&1
	else
		skip "clones of a VM on a daemon network" "shoal net create: $(tail -1 "$TMP/net.out")"
	fi
	for v in nr nc-1 nc-2 n; do "$SHOAL" vm delete $v --force >/dev/null 2>&1; done
	"$SHOAL" snapshot delete sn >/dev/null 2>&1
	for t in stap0 stap1 ctap1 ctap2; do ip link del $t 2>/dev/null; done
else
	skip "TAPs through vm restore and vm clone" "not root, or no TAP device here (ip tuntap add failed)"
fi

check "delete src" "$SHOAL" vm delete src
check "  ... its overlay is gone, its own disk stays" test ! -e "$T/d-s1.qcow2" -a -f "$T/d.raw"
finish
