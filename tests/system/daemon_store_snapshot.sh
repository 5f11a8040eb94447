#!/bin/bash
# daemon_store_snapshot.sh - a snapshot pushed from one shoald is restored
# by another from the store (issue 14 item 6; docs/daemon.md "Snapshots
# through the store"), through the CLI and curl only, with the test guest:
#   - daemon A (--store sa; jailed VMMs, as root) runs a VM with a writable raw disk that fills
#     8 MiB of memory (seed 7) and writes a disk pattern (seed 7); it is
#     snapshotted (s1) and `shoal snapshot push s1` stores it (files, one
#     disk); pushed again: 409 name_taken naming the store; as "../x": 400;
#     an unknown snapshot: 404; s1 pushed again as s2 is pulled back
#     from A's own store (recorded, its disk moved out of the export);
#     then the VM overwrites memory and disk
#     (seed 9) and exits;
#   - `shoal store serve` of A's store, with B's host key granted s1 only
#     (s1 is pushed a second time as s2, ungranted);
#   - daemon B (its own state and store, --store-server with its key pair)
#     refuses, each with a clear error and nothing recorded: s1 from its
#     own store (404: not in the store), s2 from the server (502
#     pull_refused, the server's 403); a daemon without --store-server
#     would say so (409 no_server, checked on A);
#   - `shoal snapshot pull s1 --from-server` fetches it (fetched, one
#     disk), B records it (snapshot show: vm src; a snapshot-pulled
#     event), its disk in a
#     directory of its own beside B's first --allow-dir is the parent's
#     bytes; pulled again: 409
#     name_taken; `shoal vm restore s1 --name r1` on B runs it: the guest
#     finds seed 7 in memory and on its disk (verify ok, vblk-verify ok)
#     and exits 6;
#   - a damaged chunk in B's store: after s1 is deleted on B, a pull from
#     the store fails naming the segment, and leaves no row, no directory,
#     no disks (the deleted snapshot's disk directory stays); the
#     leftovers of a killed pull (.pull-*, .partial-*) are removed at B's
#     next start.
# B runs with --jail off: a jailed VMM cannot make the restore's overlay
# beside its disk (daemon_snapshot_disk.sh says the same).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
. "$(dirname "$0")/store_lib.bash"
need_daemon
need_kvm daemon_store_snapshot || finish
command -v openssl >/dev/null || { skip daemon_store_snapshot "openssl missing"; finish; }

T=$(cd "$TMP" && pwd -P)
cd "$T" || exit 1
store_certs hostb || { fail "setup: openssl made no certificates"; finish; }
SPID=
store_cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; daemon_cleanup; }
trap store_cleanup EXIT
A=0x1000000
jqq() { jq "$@" >/dev/null; }
on_a() { STATE=$T/a; export SHOAL_SOCKET=$T/a/shoald.sock; }
on_b() { STATE=$T/b; export SHOAL_SOCKET=$T/b/shoald.sock; }
# err CMD...: run a CLI command that must fail; its stderr in $T/err
err() { ! "$@" >"$T/out" 2>"$T/err"; }
has() { grep -qF -- "$1" "$T/err"; }

# ---- daemon A: a VM, a snapshot, pushed ----
on_a
A_JAIL=(); [ "$(id -u)" = 0 ] || A_JAIL=(--jail off)     # A: jailed VMMs where it can
start_daemon "${A_JAIL[@]}" --store "$T/sa" || { fail "daemon A starts"; finish; }
check "daemon A made its store" test -d "$T/sa/segments"
"$SHOAL" img create -f raw "$T/d.raw" 4M >/dev/null
check "A: create and start src (a writable raw disk)" "$SHOAL" vm create -f <(SPEC_MEMORY=32M spec src \
	"fill $A 8M 7; vblk 64 7; shell" "\"disks\": [{\"path\": \"$T/d.raw\"}]") --start
wait_console_long src "shoal>" || fail "src filled memory and disk" "$("$SHOAL" console src --show-log | tail -c 300)"
check "A: vm snapshot src --as s1" "$SHOAL" vm snapshot src --as s1
"$SHOAL" snapshot push s1 -o json >"$T/push.json" 2>"$T/err"
check "A: snapshot push s1: its files and its disk into the store" \
	jqq -e '.name == "s1" and .files >= 3 and .disks == 1 and .chunks > 0' "$T/push.json"
err "$SHOAL" snapshot push s1
check "A: pushed again: refused, the name is taken in the store" has "cannot push it as s1"
check "A: snapshot push s1 --as s2 (the same snapshot, another name)" "$SHOAL" snapshot push s1 --as s2
expect_error "A: push as \"../x\": 400" 400 invalid_request "as:" api POST /v1/snapshots/s1/push '{"as": "../x"}'
expect_error "A: push an unknown snapshot: 404" 404 not_found "snapshot nope" api POST /v1/snapshots/nope/push
expect_error "A: pull from a server A has none of: 409" 409 no_server "--store-server" \
	api POST /v1/snapshots/x/pull '{"from": "server"}'
"$SHOAL" snapshot pull s2 -o json >"$T/pull2.json" 2>"$T/err"
check "A: snapshot pull s2 (from its own store): recorded, its disk moved out of the export" \
	jqq -e --arg t "$T/snapshots-pulled/s2-" '.from == "store" and (.fetched | not) and
		(.disks[0].path | startswith($t)) and .vm == "src"' "$T/pull2.json"
type_console src "fill $A 8M 9; vblk 64 9; exit 4"$'\r'
wait_state src exited 600 || fail "src overwrote memory and disk (seed 9) and exited"

# ---- the server: A's store, B's key granted s1 ----
check "grant s1 to B's host key" "$SHOAL" store grant "$T/sa" hostb.pem s1
store_serve "$T/sa" || { fail "store serve" "$(cat serve.err)"; finish; }

# ---- daemon B: refusals, then pull and restore ----
on_b
start_daemon --jail off --store "$T/sb" --store-server "https://127.0.0.1:$PORT" \
	--store-cert hostb.pem --store-key hostb.key --store-ca ca.pem || { fail "daemon B starts"; finish; }
err "$SHOAL" snapshot pull s1
check "B: pull s1 from its own store: refused, not in the store (exit 1)" has "snapshot s1: not in the store $T/sb"
err "$SHOAL" snapshot pull s2 --from-server
check "B: pull s2 (not granted) from the server: refused, the server's 403 named" has "403"
expect_error "  ... the API says 502 pull_refused" 502 pull_refused "s2" \
	api POST /v1/snapshots/s2/pull '{"from": "server"}'
check "  ... nothing recorded, nothing in B's store" \
	test "$("$SHOAL" snapshot list -o json | jq '.snapshots | length')" = 0 -a -z "$("$SHOAL" store ls "$T/sb" | grep s2)"
"$SHOAL" snapshot pull s1 --from-server -o json >"$T/pull.json" 2>"$T/err"
check "B: snapshot pull s1 --from-server: fetched, one disk" \
	jqq -e '.name == "s1" and .fetched and .fetched_chunks > 0 and (.disks | length) == 1' "$T/pull.json"
check "  ... a snapshot-pulled event on src, from the server" bash -c "'$SHOAL' events --vm src -o json |
	jq -s -e 'map(select(.type == \"snapshot-pulled\" and .detail.snapshot == \"s1\" and .detail.from == \"server\")) | length == 1' >/dev/null"
check "  ... B records it, taken of VM src" \
	test "$("$SHOAL" snapshot show s1 -o json | jq -r '.vm + "|" + .dir')" = "src|$T/b/snapshots/s1"
PD=$(jq -r '.disks[0].path' "$T/pull.json")
check "  ... its disk, in a directory of its own beside B's first --allow-dir, holds the parent's bytes" \
	bash -c "[[ \"$PD\" == \"$T\"/snapshots-pulled/s1-*/disk-0.raw ]] && cmp \"$PD\" \"$T/d.raw\""
check "  ... no leftovers" test -z "$(ls -A "$T/b/snapshots" | grep '^\.')"
err "$SHOAL" snapshot pull s1 --from-server
check "B: pulled again: refused, the name is taken" has "snapshot s1: already exists on this host"
check "B: vm restore s1 --name r1" "$SHOAL" vm restore s1 --name r1
type_console r1 "verify $A 8M 7; vblk-verify 64 7; exit 6"$'\r'
wait_state r1 exited 600
check "r1 found the snapshot's memory and disk (seed 7) and exited 6" \
	test "$(vm_field r1 '.state + "|" + (.last_exit.status | tostring)')" = "exited|6"
check "  ... verify ok, vblk-verify ok" bash -c "\"$SHOAL\" console r1 --show-log | grep -q 'verify ok' &&
	\"$SHOAL\" console r1 --show-log | grep -q 'vblk-verify ok sectors=64 seed=7' &&
	! \"$SHOAL\" console r1 --show-log | grep -q 'verify bad'"

# ---- a damaged chunk in B's store; a killed pull's leftovers ----
"$SHOAL" vm delete r1 --force >/dev/null 2>&1
check "B: snapshot delete s1" "$SHOAL" snapshot delete s1
python3 - "$T/sb" <<'EOF'
import glob, sys
for path in sorted(glob.glob(sys.argv[1] + '/segments/*.seg')):
    b = bytearray(open(path, 'rb').read())
    for k in range(1, 8):   # flip bytes at 1/8 .. 7/8: some chunk of every part
        o = len(b) * k // 8
        b[o:o + 16] = bytes(x ^ 0xff for x in b[o:o + 16])
    open(path, 'wb').write(b)
EOF
err "$SHOAL" snapshot pull s1
check "B: pull s1 from a damaged store: refused, naming the segment" has "segment 0000"
check "  ... no row, no directory, no disks, no leftovers" test "$("$SHOAL" snapshot list -o json |
	jq '.snapshots | length')" = 0 -a ! -e "$T/b/snapshots/s1" -a "$(ls -A "$T/snapshots-pulled" |
	grep '^s1-\|^\.')" = "$(basename "$(dirname "$PD")")" -a -z "$(ls -A "$T/b/snapshots" | grep '^\.')"
mkdir -p "$T/b/snapshots/.pull-s9-1234" "$T/snapshots-pulled/.partial-s9-1234"
touch "$T/snapshots-pulled/.partial-s9-1234/disk-0.raw"
kill "$DPID"; wait "$DPID" 2>/dev/null
start_daemon --jail off --store "$T/sb" || fail "daemon B starts again"
check "B's restart removed a killed pull's leftovers" \
	test ! -e "$T/b/snapshots/.pull-s9-1234" -a ! -e "$T/snapshots-pulled/.partial-s9-1234"
[ "$T_FAILED" = 1 ] && { echo "--- shoald log"; tail -40 "$T/shoald.log"; cat "$T/err"; }
finish
