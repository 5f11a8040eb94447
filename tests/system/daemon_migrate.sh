#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# daemon_migrate.sh - live migration between two shoald (docs/daemon.md,
# "Live migration"), through the CLI and curl only:
#   - daemon A serves its Unix socket only; daemon B also serves HTTPS with
#     a token (--listen, a self-signed certificate for its address).  Each
#     has its own state directory and, where `ip netns` works here, its own
#     network namespace, joined by a veth pair (10.77.0.1 and 10.77.0.2):
#     A reaches B's API and B's incoming VMM over that link only (B listens
#     on 0.0.0.0 there, so A connects to its VMM at the URL's host);
#   - a test-guest VM on A fills 16 MiB with a seeded pattern and waits at
#     its shell;
#   - refused, each with a clear error, the VM still running on A (not
#     busy), nothing left on B: an unknown VM (404), an unreachable URL, a
#     certificate A does not trust, a wrong token (B's 401), a name B
#     already has (B's 409 name_taken), a VM whose disk B may not open (B's
#     403 path_not_allowed naming disks[0].path); A records
#     "migration-failed" events;
#   - shared storage: a VM with a writable disk moves to B (the source
#     VMM gives up the image's lock in the stop phase and B's takes it,
#     state/migrate.c) and runs there with it; one with a read-only disk
#     moves to B; one whose
#     vsock socket the source VMM listens on is refused by B (409 in_use:
#     its VMM would take the path over) and keeps its socket;
#   - --with-disks (issue 12): web-6's writable raw disk lies beneath an
#     --allow-dir B lacks, and its guest has written a sector pattern
#     (vblk, seed 7); where B has a stale file named like web-6's VM
#     directory, B refuses (409 in_use, cannot make its directory): web-6
#     runs on on A, B has no record and made nothing; with the file gone,
#     `--with-disks --auto-converge` moves it: B made an 8 MiB raw image
#     in B's VM directory and its spec names it, the guest there verifies
#     seed 7 (vblk-verify), writes seed 9 into it, and B's image holds
#     seed 9 while A's image still holds seed 7 (left for the operator);
#     on B, a client's VM naming that image is refused (403); web-7's
#     qcow2 disk moves the same way into a qcow2 image B makes (8 MiB,
#     no backing file) and the guest there verifies its pattern; web-8's
#     disk, a qcow2 overlay over a base in a directory both may use,
#     moves as an overlay B makes over that same base (same path, same
#     chain identity), with only the top layer sent (B's overlay holds
#     under 1 MiB; the base's 1 MiB pattern stayed), the guest there
#     verifies its pattern and the stopped chain reads as A's; web-8b's,
#     over a base only A has, comes whole into a flat image that reads as
#     A's chain;
#   - a clone (its memory is a snapshot's memory file mapped
#     copy-on-write) that wrote 8M of its own moves to B, where its guest
#     verifies both the file's pages and its own copies;
#   - a slow migration (--bandwidth 1M) cancelled with `shoal vm migrate
#     web-1 --cancel` (DELETE /v1/vms/web-1/migration): the cancel says
#     so, the migration fails saying cancelled, web-1 runs on on A, B
#     removes its half-made record ("migration-failed", "deleted"); a
#     second cancel is refused (none in progress);
#   - `shoal vm migrate web-1 --to https://B --to-token-file --to-cacert`
#     moves it: the CLI prints the downtime and total time; A's record (and
#     its directory) is gone with "migrating", "migrated" (figures) and
#     "deleted" events; B's record is running, its VMM started with
#     --incoming, with "created" (migration: incoming) and "started"
#     (migrated_in) events; the stream was authenticated (B's "created"
#     says so, B's VMM was started with --incoming ADDR,key-file=, and the
#     key's file is gone); typed "verify" on B's console, the guest finds
#     its pattern: the memory came along, and the guest runs on;
#   - back to A over A's Unix socket (`-o json`: downtime_ms, total_ms,
#     destination_state), and then back and forth until it has moved 10
#     times; at the end the guest on A still verifies its pattern, and
#     typed "exit 7" it exits 7 there;
#   - post-copy (postcopy_after): 31 is refused (400 naming postcopy_after)
#     and so is `--postcopy-after 0` (64); web-9, dirtying 8 MiB as fast as
#     it runs, moves to B over HTTPS (its stream, the page requests
#     included, in TLS) with --bandwidth 8M --postcopy-after 1: the
#     answer (a MigrateResult) and A's "migrated" event say post-copy, with
#     the pages fetched on demand and pushed adding up to those missing at
#     the switch; web-9 runs on B, and its guest there verifies its pattern.
#
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
require_kvm daemon_migrate
command -v openssl >/dev/null || { skip daemon_migrate "openssl missing"; finish; }

mig_two_hosts mig 10.77.0
echo wrong-token-wrong-token-wrong >"$TMP/bad-token"

# Files: the test guest ($BUILD) and $TMP/shared for both; $TMP/aonly for A only.
mkdir -p "$TMP/a" "$TMP/b" "$TMP/shared" "$TMP/aonly"
mig_daemon a inA SHOAL_MIG_DAEMON=a --allow-dir "$TMP/shared" --allow-dir "$TMP/aonly" || { fail "daemon A starts"; finish; }
mig_daemon b inB SHOAL_MIG_DAEMON=b --allow-dir "$TMP/shared" --listen "$BLISTEN:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
	--token-file "$TMP/token" || { fail "daemon B starts"; finish; }
pass "daemon A (Unix socket) and daemon B (Unix socket and $URL) start"

onA() { SHOAL_SOCKET=$SA "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }
last_event() { curl -s --unix-socket "$1" "http://d/v1/events?vm=$2" | jq -c --arg t "$3" '[.events[] | select(.type == $t)] | last'; }
wait_field() {      # SOCK NAME JQ VALUE
	for _ in $(seq 200); do [ "$(field "$1" "$2" "$3")" = "$4" ] && return 0; sleep 0.05; done
	return 1
}
TO=(--to "$URL" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem")
# schema_ok SCHEMA FILE: the JSON object in FILE has the keys api/openapi.yaml's
# SCHEMA requires, no others, and values of the documented types.
schema_ok() {
	python3 - "$ROOT/api/openapi.yaml" "$1" "$2" <<'PY'
import json, sys, yaml
s = yaml.safe_load(open(sys.argv[1]))["components"]["schemas"][sys.argv[2]]
v = json.load(open(sys.argv[3]))
types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict}
errs = ["%s missing" % k for k in s.get("required", []) if k not in v]
errs += ["%s undocumented" % k for k in v if k not in s["properties"]]
for k, p in s["properties"].items():
    t = p.get("type")
    if k in v and t and (not isinstance(v[k], types[t]) or isinstance(v[k], bool) != (t == "boolean")):
        errs.append("%s: %r is not %s" % (k, v[k], t))
if errs:
    print(sys.argv[2] + ": " + "; ".join(errs))
sys.exit(1 if errs else 0)
PY
}

A=0x2000000
SPEC_MEMORY=128M
check "create and start web-1 on A (fill 16M, shell)" \
	onA "$SHOAL" vm create -f <(spec web-1 "fill $A 16M 7; echo filled; shell") --start
onA wait_console_long web-1 "shoal>" || fail "web-1 reaches its shell" "$(onA "$SHOAL" console web-1 --show-log | tail -c 300)"

# still_on_a WHAT: web-1 runs on A, not busy, and B has no record of it.
still_on_a() {
	if [ "$(field "$SA" web-1 '.state + "/" + (.busy // "-")')" = "running/-" ] &&
	   [ "$(status_of "$SB" web-1)" = 404 ]; then
		pass "$1: web-1 still runs on A, nothing on B"
	else
		fail "$1: web-1 still runs on A, nothing on B" "A: $(field "$SA" web-1 .state) B: $(status_of "$SB" web-1) $(tail -3 "$TMP/b.log")"
	fi
}
# refused WHAT TEXT CMD...: exit 1 and the message has TEXT.
refused() {
	local what=$1 text=$2 out rc
	shift 2
	out=$("$@" 2>&1); rc=$?
	if [ $rc = 1 ] && grep -qF -- "$text" <<<"$out"; then pass "$what: refused ($text)"
	else fail "$what: refused ($text)" "rc $rc: $out"; fi
}

# --- the refusals ---
refused "an unknown VM" 'vm "ghost" not found' onA "$SHOAL" vm migrate ghost "${TO[@]}"
refused "an unreachable URL" "cannot reach the destination shoald at https://$BADDR:1" \
	onA "$SHOAL" vm migrate web-1 --to "https://$BADDR:1" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem"
still_on_a "unreachable"
refused "a certificate A does not trust" "cannot reach the destination shoald" \
	onA "$SHOAL" vm migrate web-1 --to "$URL" --to-token-file "$TMP/token"
still_on_a "untrusted certificate"
refused "a wrong token" "refused it: 401 unauthorized" \
	onA "$SHOAL" vm migrate web-1 --to "$URL" --to-token-file "$TMP/bad-token" --to-cacert "$TMP/cert.pem"
still_on_a "wrong token"
refused "plain http://" "only over TLS" onA "$SHOAL" vm migrate web-1 --to "http://$BADDR:$PORT"
check "B has a VM of its own named web-1 (created)" onB "$SHOAL" vm create -f <(spec web-1)
refused "a name B already has" 'refused it: 409 name_taken: vm "web-1" already exists' \
	onA "$SHOAL" vm migrate web-1 "${TO[@]}"
check "the refusal left B's own web-1 alone" test "$(field "$SB" web-1 .state)" = created
check "delete B's web-1" onB "$SHOAL" vm delete web-1
still_on_a "name clash"
# a clone: its memory is s1's memory file mapped copy-on-write; both its
# own copies (what it wrote since) and the file's pages go
C=0x4000000
check "snapshot web-1 and clone it as c-1 on A" bash -c "SHOAL_SOCKET='$SA' '$SHOAL' vm snapshot web-1 --as s1 >/dev/null && SHOAL_SOCKET='$SA' '$SHOAL' vm clone s1 --count 1 --prefix c >/dev/null"
onA type_console c-1 "fill $C 8M 9; verify $C 8M 9"$'\r'
onA wait_console_long c-1 "len=8388608 seed=9" || fail "c-1 writes 8M of its own" "$(onA "$SHOAL" console c-1 --show-log | tail -c 300)"
out=$(onA "$SHOAL" vm migrate c-1 "${TO[@]}" 2>&1); rc=$?
check "c-1, a clone (its memory copy-on-write over s1's file), moves to B" test $rc = 0 || echo "$out"
check "c-1 is gone from A and runs on B" bash -c "[ $(status_of "$SA" c-1) = 404 ] && [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/c-1 | jq -r .state)\" = running ]"
onB type_console c-1 "verify $A 16M 7; verify $C 8M 9"$'\r'
onB wait_console_long c-1 "len=8388608 seed=9" || fail "c-1 verifies on B" "$(onB "$SHOAL" console c-1 --show-log | tail -c 400)"
check "on B c-1 verifies the file's pages (web-1's 16M) and its own copies (8M it wrote as a clone)" bash -c \
	"SHOAL_SOCKET='$SB' '$SHOAL' console c-1 --show-log | grep -qE 'verify ok sum=0x[0-9a-f]+ addr=$A len=16777216 seed=7' &&
	 SHOAL_SOCKET='$SB' '$SHOAL' console c-1 --show-log | grep -qE 'verify ok sum=0x[0-9a-f]+ addr=$C len=8388608 seed=9'" ||
	echo "  $(onB "$SHOAL" console c-1 --show-log | tail -c 400)"
check "delete c-1 on B and the snapshot on A" bash -c "SHOAL_SOCKET='$SB' '$SHOAL' vm delete c-1 --force >/dev/null && SHOAL_SOCKET='$SA' '$SHOAL' snapshot delete s1"
truncate -s 1M "$TMP/aonly/d.img"
check "create and start web-2 on A with a disk beneath an --allow-dir B lacks" \
	onA "$SHOAL" vm create -f <(spec web-2 shell "\"disks\": [{\"path\": \"$TMP/aonly/d.img\", \"readonly\": true}]") --start
refused "a disk B may not open" "403 path_not_allowed: disks[0].path" onA "$SHOAL" vm migrate web-2 "${TO[@]}"
check "web-2 still runs on A" test "$(field "$SA" web-2 .state)" = running
check "B has no VM" test "$(curl -s --unix-socket "$SB" http://d/v1/vms | jq -c '[.vms[].name]')" = '[]'
check "A recorded each failure (migrating, migration-failed)" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-1' | jq '[.events[] | select(.type == \"migration-failed\")] | length')\" = 4 ] &&
	 curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-1' | jq -e '[.events[] | select(.type == \"migration-failed\")][0].detail | .to == \"https://$BADDR:1\" and .direction == \"outgoing\" and (.error | length > 0)' >/dev/null"
check "stop and delete web-2" onA "$SHOAL" vm delete web-2 --force
# shared storage: both daemons see $TMP/shared.  A disk open for writing
# is the source VMM's alone (its lock) until the stop phase, when it hands
# the lock to B's VMM: web-3 moves with it; a read-only disk is shared,
# and web-4 moves with it.
truncate -s 1M "$TMP/shared/rw.img" "$TMP/shared/ro.img"
check "create and start web-3 on A with a writable disk on shared storage" \
	onA "$SHOAL" vm create -f <(spec web-3 shell "\"disks\": [{\"path\": \"$TMP/shared/rw.img\"}]") --start
check "web-3 moves to B with its writable disk (the write lock handed over)" \
	onA "$SHOAL" vm migrate web-3 "${TO[@]}"
check "web-3 runs on B, with its disk; gone from A" bash -c "[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-3 | jq -r '.state + \" \" + .spec.disks[0].path')\" = 'running $TMP/shared/rw.img' ] && [ \"\$(curl -s -o /dev/null -w '%{http_code}' --unix-socket '$SA' http://d/v1/vms/web-3)\" = 404 ]"
check "stop and delete web-3 on B" onB "$SHOAL" vm delete web-3 --force
check "create and start web-4 on A with a read-only disk on shared storage" \
	onA "$SHOAL" vm create -f <(spec web-4 shell "\"disks\": [{\"path\": \"$TMP/shared/ro.img\", \"readonly\": true}]") --start
check "web-4 moves to B with its read-only disk" onA "$SHOAL" vm migrate web-4 "${TO[@]}"
check "web-4 runs on B, with its disk" bash -c "[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-4 | jq -r '.state + \" \" + .spec.disks[0].path')\" = 'running $TMP/shared/ro.img' ] && [ \"\$(curl -s -o /dev/null -w '%{http_code}' --unix-socket '$SA' http://d/v1/vms/web-4)\" = 404 ]"
check "stop and delete web-4 on B" onB "$SHOAL" vm delete web-4 --force
# a vsock socket on one host is the source VMM's: B refuses, A's stays
check "create and start web-5 on A with a vsock socket" \
	onA "$SHOAL" vm create -f <(spec web-5 shell "\"vsock\": {\"cid\": 5, \"socket\": \"$TMP/shared/v5.sock\"}") --start
refused "a vsock socket the source VMM listens on" "refused it: 409 in_use: vm \"web-5\": its vsock socket $TMP/shared/v5.sock is in use" \
	onA "$SHOAL" vm migrate web-5 "${TO[@]}"
check "web-5 still runs on A, its vsock socket in place" bash -c "[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-5 | jq -r .state)\" = running ] && [ -S '$TMP/shared/v5.sock' ]"
check "stop and delete web-5" onA "$SHOAL" vm delete web-5 --force

# --- --with-disks: B makes the disk's image in the VM's own directory ---
TB=$(cd "$TMP/b" && pwd -P)
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
"$SHOAL" img create -f raw "$TMP/aonly/w6.raw" 8M >/dev/null
check "create and start web-6 on A with a writable raw disk beneath an --allow-dir B lacks" \
	onA "$SHOAL" vm create -f <(spec web-6 shell "\"disks\": [{\"path\": \"$TMP/aonly/w6.raw\"}]") --start
onA wait_console_long web-6 "shoal>" || fail "web-6 reaches its shell" "$(onA "$SHOAL" console web-6 --show-log | tail -c 300)"
onA type_console web-6 "vblk 64 7"$'\r'
onA wait_console_long web-6 "vblk ok" || fail "web-6 wrote its disk pattern (seed 7)" "$(onA "$SHOAL" console web-6 --show-log | tail -c 300)"
touch "$TB/vms/web-6"           # a stale file where B would make web-6's directory
refused "--with-disks where B cannot make the VM's directory" \
	"refused it: 409 in_use: vm \"web-6\": cannot make its directory $TB/vms/web-6 for its disk images" \
	onA "$SHOAL" vm migrate web-6 "${TO[@]}" --with-disks
check "web-6 still runs on A; B has no record and made nothing (only the stale file)" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-6 | jq -r '.state + \"/\" + (.busy // \"-\")')\" = running/- ] &&
	 [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms | jq -c '[.vms[].name]')\" = '[]' ] &&
	 [ -f '$TB/vms/web-6' ] && [ ! -s '$TB/vms/web-6' ] && [ \"\$(ls -A '$TB/vms')\" = web-6 ]"
rm -f "$TB/vms/web-6"
out=$(onA "$SHOAL" vm migrate web-6 "${TO[@]}" --with-disks --auto-converge 2>&1); rc=$?
check "web-6 moves to B with --with-disks --auto-converge" test $rc = 0 || echo "$out"
check "A's migrating event says with_disks and auto_converge" bash -c \
	"curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-6' | jq -e '[.events[] | select(.type == \"migrating\")] | last | .detail | .with_disks == true and .auto_converge == true' >/dev/null"
check "web-6 runs on B; B's spec names the image in B's VM directory; gone from A" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-6 | jq -r '.state + \" \" + .spec.disks[0].path')\" = 'running $TB/vms/web-6/disk-0.raw' ] &&
	 [ \"\$(curl -s -o /dev/null -w '%{http_code}' --unix-socket '$SA' http://d/v1/vms/web-6)\" = 404 ]"
check "B's image is a raw file of the source's size (8 MiB)" test "$(stat -c %s "$TB/vms/web-6/disk-0.raw" 2>&1)" = 8388608
onB type_console web-6 "vblk-verify 64 7; vblk 64 9; vblk-verify 64 9"$'\r'
onB wait_console_long web-6 "vblk-verify ok sectors=64 seed=9" ||
	fail "on B web-6 writes seed 9 and reads it back" "$(onB "$SHOAL" console web-6 --show-log | tail -c 400)"
check "on B the guest found A's pattern on its disk (vblk-verify seed 7 ok)" onB console_has web-6 "vblk-verify ok sectors=64 seed=7"
check "B's image holds the guest's new writes (seed 9)" pattern "$TB/vms/web-6/disk-0.raw" 9
check "A's image is left as it was (seed 7: the operator deletes it)" pattern "$TMP/aonly/w6.raw" 7
refused "on B, a client's VM naming web-6's image" "is not beneath an allowed directory" \
	onB "$SHOAL" vm create -f <(spec x-6 shell "\"disks\": [{\"path\": \"$TB/vms/web-6/disk-0.raw\"}]")
check "stop and delete web-6 on B (its image with it)" bash -c \
	"SHOAL_SOCKET='$SB' '$SHOAL' vm delete web-6 --force && [ ! -e '$TB/vms/web-6' ]"
# a qcow2 disk: B makes a qcow2 image of its size
"$SHOAL" img create -f qcow2 "$TMP/aonly/w7.qcow2" 8M >/dev/null
check "create and start web-7 on A with a writable qcow2 disk" \
	onA "$SHOAL" vm create -f <(spec web-7 shell "\"disks\": [{\"path\": \"$TMP/aonly/w7.qcow2\"}]") --start
onA wait_console_long web-7 "shoal>" || fail "web-7 reaches its shell" "$(onA "$SHOAL" console web-7 --show-log | tail -c 300)"
onA type_console web-7 "vblk 64 5"$'\r'
onA wait_console_long web-7 "vblk ok" || fail "web-7 wrote its disk pattern (seed 5)" "$(onA "$SHOAL" console web-7 --show-log | tail -c 300)"
out=$(onA "$SHOAL" vm migrate web-7 "${TO[@]}" --with-disks 2>&1); rc=$?
check "web-7 moves to B with --with-disks" test $rc = 0 || echo "$out"
check "B's spec names a qcow2 image B made: 8 MiB, no backing file" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-7 | jq -r '.state + \" \" + .spec.disks[0].path')\" = 'running $TB/vms/web-7/disk-0.qcow2' ] &&
	 '$SHOAL' img info -U --output json '$TB/vms/web-7/disk-0.qcow2' | jq -e '.format == \"qcow2\" and .\"virtual-size\" == 8388608 and (has(\"backing-filename\") | not)' >/dev/null"
onB type_console web-7 "vblk-verify 64 5"$'\r'
if onB wait_console_long web-7 "vblk-verify ok sectors=64 seed=5"; then pass "on B web-7's guest finds its pattern (seed 5) in the qcow2 image"
else fail "on B web-7's guest finds its pattern (seed 5)" "$(onB "$SHOAL" console web-7 --show-log | tail -c 400)"; fi
check "stop and delete web-7 on B" onB "$SHOAL" vm delete web-7 --force
# a qcow2 overlay over a base B has too (the same path and chain identity,
# beneath an --allow-dir of B's): B makes an overlay over it, only the top comes
"$SHOAL" img create -f qcow2 "$TMP/shared/base8.qcow2" 8M >/dev/null &&
	"$SHOAL" img io -c "write -P 0x5a 4M 1M" "$TMP/shared/base8.qcow2" >/dev/null &&
	"$SHOAL" img create -f qcow2 -b "$TMP/shared/base8.qcow2" -F qcow2 "$TMP/aonly/w8.qcow2" >/dev/null
check "create and start web-8 on A whose disk is a qcow2 overlay over a shared base" \
	onA "$SHOAL" vm create -f <(spec web-8 shell "\"disks\": [{\"path\": \"$TMP/aonly/w8.qcow2\"}]") --start
onA wait_console_long web-8 "shoal>" || fail "web-8 reaches its shell" "$(onA "$SHOAL" console web-8 --show-log | tail -c 300)"
onA type_console web-8 "vblk 64 4"$'\r'
onA wait_console_long web-8 "vblk ok" || fail "web-8 wrote its disk pattern (seed 4)" "$(onA "$SHOAL" console web-8 --show-log | tail -c 300)"
out=$(onA "$SHOAL" vm migrate web-8 "${TO[@]}" --with-disks 2>&1); rc=$?
check "web-8 (a qcow2 overlay) moves to B with --with-disks" test $rc = 0 || echo "$out"
# top DISK: bytes of data DISK itself holds (not its base)
top() { qemu-img map -U --output json "$1" | jq '[.[] | select(.data and .depth == 0) | .length] | add // 0'; }
t8=$(top "$TB/vms/web-8/disk-0.qcow2" 2>&1) TS=$(cd "$TMP/shared" && pwd -P)
check "B made an overlay over the base at the same path, and only the top came ($t8 bytes in it, under 1 MiB: not the base's 1 MiB pattern)" bash -c \
	"'$SHOAL' img info -U --output json '$TB/vms/web-8/disk-0.qcow2' | jq -e '.\"backing-filename\" == \"$TS/base8.qcow2\"' >/dev/null &&
	 [ '$t8' -gt 0 ] && [ '$t8' -lt 1048576 ]"
onB type_console web-8 "vblk-verify 64 4"$'\r'
if onB wait_console_long web-8 "vblk-verify ok sectors=64 seed=4"; then pass "on B web-8's guest finds its pattern (seed 4) in the overlay"
else fail "on B web-8's guest finds its pattern (seed 4)" "$(onB "$SHOAL" console web-8 --show-log | tail -c 400)"; fi
check "stopped, B's chain reads as A's (shoal img compare), and then web-8 is deleted on B" bash -c \
	"SHOAL_SOCKET='$SB' '$SHOAL' vm stop web-8 --force >/dev/null && '$SHOAL' img compare -U '$TB/vms/web-8/disk-0.qcow2' '$TMP/aonly/w8.qcow2' >/dev/null &&
	 SHOAL_SOCKET='$SB' '$SHOAL' vm delete web-8 --force"
# an overlay whose base B does not have comes whole, base and all
"$SHOAL" img create -f qcow2 "$TMP/aonly/base8b.qcow2" 8M >/dev/null &&
	"$SHOAL" img io -c "write -P 0x6b 4M 1M" "$TMP/aonly/base8b.qcow2" >/dev/null &&
	"$SHOAL" img create -f qcow2 -b "$TMP/aonly/base8b.qcow2" -F qcow2 "$TMP/aonly/w8b.qcow2" >/dev/null
check "create and start web-8b on A whose disk is an overlay over a base only A has" \
	onA "$SHOAL" vm create -f <(spec web-8b shell "\"disks\": [{\"path\": \"$TMP/aonly/w8b.qcow2\"}]") --start
onA wait_console_long web-8b "shoal>" || fail "web-8b reaches its shell" "$(onA "$SHOAL" console web-8b --show-log | tail -c 300)"
out=$(onA "$SHOAL" vm migrate web-8b "${TO[@]}" --with-disks 2>&1); rc=$?
check "web-8b moves to B with --with-disks" test $rc = 0 || echo "$out"
check "B made a whole image (no backing file) holding the base's data too; stopped, it reads as A's chain" bash -c \
	"'$SHOAL' img info -U --output json '$TB/vms/web-8b/disk-0.qcow2' | jq -e 'has(\"backing-filename\") | not' >/dev/null &&
	 SHOAL_SOCKET='$SB' '$SHOAL' vm stop web-8b --force >/dev/null &&
	 '$SHOAL' img compare -U '$TB/vms/web-8b/disk-0.qcow2' '$TMP/aonly/w8b.qcow2' >/dev/null"
check "delete web-8b on B" onB "$SHOAL" vm delete web-8b --force

# --- a cancel through the daemon, before the point of no return ---
onA "$SHOAL" vm migrate web-1 "${TO[@]}" --bandwidth 1M >"$TMP/cancel.out" 2>&1 &
mig=$!
for _ in $(seq 600); do [ "$(field "$SA" web-1 '.migration.state // "-"')" = active ] && break; sleep 0.05; done
check "a slow migration of web-1 (1 MiB/s) is under way" test "$(field "$SA" web-1 '.migration.state // "-"')" = active
out=$(onA "$SHOAL" vm migrate web-1 --cancel 2>&1); rc=$?
wait $mig; mrc=$?
check "vm migrate web-1 --cancel (DELETE .../migration): 0, says cancelled" bash -c "[ $rc = 0 ] && grep -q 'migration cancelled' <<<'$out'" || echo "$out"
check "... the migration itself fails, saying cancelled" bash -c "[ $mrc != 0 ] && grep -q cancelled '$TMP/cancel.out'" || cat "$TMP/cancel.out"
for _ in $(seq 200); do [ "$(status_of "$SB" web-1)" = 404 ] && break; sleep 0.05; done
still_on_a "cancelled"
check "B removed its half-made web-1 (migration-failed, deleted)" bash -c "jq -e '.[-2:] == [\"migration-failed\", \"deleted\"]' <<<'$(events_of "$SB" web-1)' >/dev/null"
check "B's migration-failed for web-1 says why (incoming, with an error)" bash -c "curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-1' | jq -e '[.events[] | select(.type == \"migration-failed\")] | last | .detail | .direction == \"incoming\" and (.error | length > 0)' >/dev/null"
refused "a cancel with no migration in progress" "no migration of it is in progress" \
	onA "$SHOAL" vm migrate web-1 --cancel

# --- A to B over HTTPS ---
# meanwhile A's VM object shows the progress ("migration")
( for _ in $(seq 400); do
	o=$(curl -s --unix-socket "$SA" http://d/v1/vms/web-1)
	jq -ce '.migration // empty' <<<"$o" >"$TMP/progress" 2>/dev/null && break
	jq -e .error <<<"$o" >/dev/null && break           # gone: too late
	sleep 0.01
  done ) &
poller=$!
out=$(onA "$SHOAL" vm migrate web-1 "${TO[@]}" 2>&1); rc=$?
wait $poller
echo "$out"
check "meanwhile A's VM object had its migration's progress (VmMigration)" schema_ok VmMigration "$TMP/progress"
check "vm migrate web-1 --to $URL" test $rc = 0
check "it prints the downtime and total time" bash -c "grep -qE '^web-1: migrated to $URL: downtime [0-9.]+ ms, total [0-9]+ ms, [0-9]+ rounds, .*there it is running\$' <<<'$out'"
check "A's record is gone" test "$(status_of "$SA" web-1)" = 404
check "A's VM directory is gone" test ! -e "$TMP/a/vms/web-1"
check "B's record is running" test "$(field "$SB" web-1 .state)" = running
check "B's VMM took the migration on B's --listen address ($BLISTEN)" \
	grep -q "web-1: incoming migration: its VMM listens on tcp:$BLISTEN:" "$TMP/b.log"
ev=$(events_of "$SA" web-1)
check "A's events: migrating ... migrated, deleted" bash -c "jq -e '.[-2:] == [\"migrated\", \"deleted\"] and index(\"migrating\") != null' <<<'$ev' >/dev/null"
check "A's migrated event has the figures" bash -c "curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-1' | jq -e '[.events[] | select(.type == \"migrated\")] | last | .detail | .to == \"$URL\" and .downtime_ms > 0 and .total_ms >= .downtime_ms and .bytes > 16777216' >/dev/null"
ev=$(events_of "$SB" web-1)
check "B's events: created, started (after its own web-1's)" bash -c "jq -e '.[-2:] == [\"created\", \"started\"]' <<<'$ev' >/dev/null"
check "B's created says an incoming migration; started says migrated_in" bash -c \
	"curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-1' | jq -e '.events[-2].detail.migration == \"incoming\" and .events[-1].detail.migrated_in == true' >/dev/null"
check "the stream was authenticated and encrypted: B's created says so, B's VMM has --incoming ...,key-file=...,tls=on, the key's file is gone" bash -c \
	"curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-1' | jq -e '.events[-2].detail.authenticated == true and .events[-2].detail.encrypted == true' >/dev/null &&
	 pgrep -f -- ',key-file=$TMP/b/vms/web-1/migrate.key,tls=on' >/dev/null &&
	 [ ! -e '$TMP/b/vms/web-1/migrate.key' ]"
onB type_console web-1 "verify $A 16M 7"$'\r'
if onB wait_console_long web-1 "verify ok"; then pass "on B the guest finds its pattern (console continues there)"
else fail "on B the guest finds its pattern" "$(onB "$SHOAL" console web-1 --show-log | tail -c 300; stuck_report "$TMP/b/vms/web-1")"; fi

# --- back to A over its Unix socket, then back and forth: 10 moves in all ---
out=$(onB "$SHOAL" vm migrate web-1 --to "$SA" -o json 2>"$TMP/err"); rc=$?
check "B to A over A's Unix socket, -o json" bash -c "[ $rc = 0 ] && jq -e '.name == \"web-1\" and .to == \"$SA\" and .downtime_ms > 0 and .total_ms >= .downtime_ms and .rounds >= 1 and .bytes > 0 and .destination_state == \"running\"' <<<'$out' >/dev/null" || cat "$TMP/err"
echo "$out" >"$TMP/result.json"
check "the answer is a MigrateResult" schema_ok MigrateResult "$TMP/result.json"
check "B's record is gone, A's runs" bash -c "[ $(status_of "$SB" web-1) = 404 ] && [ $(field "$SA" web-1 .state) = running ]"
moves=2 bad=0
while [ $moves -lt 10 ]; do
	# each move bounded: a stuck one is reported (both VMMs' threads) and ends the loop
	if [ $((moves % 2)) = 0 ]; then
		onA timeout 180 "$SHOAL" vm migrate web-1 "${TO[@]}" >>"$TMP/moves" 2>&1 || bad=1
		[ $bad = 0 ] && { wait_field "$SB" web-1 .state running || bad=1; }
	else
		onB timeout 180 "$SHOAL" vm migrate web-1 --to "$SA" >>"$TMP/moves" 2>&1 || bad=1
		[ $bad = 0 ] && { wait_field "$SA" web-1 .state running || bad=1; }
	fi
	[ $bad = 1 ] && { echo "move $((moves + 1)) failed:"; stuck_report "$TMP/a/vms/web-1" "$TMP/b/vms/web-1"; } >>"$TMP/moves"
	[ $bad = 1 ] && break
	moves=$((moves + 1))
done
check "moved 10 times between A and B" bash -c "[ $bad = 0 ] && [ $moves = 10 ]" || cat "$TMP/moves"
grep -hoE 'downtime [0-9.]+ ms, total [0-9]+ ms' "$TMP/moves" | sed 's/^/  /'
check "it is on A (once), not on B" bash -c "[ $(status_of "$SB" web-1) = 404 ] && [ $(curl -s --unix-socket "$SA" http://d/v1/vms | jq '[.vms[] | select(.name == "web-1")] | length') = 1 ]"
onA type_console web-1 "verify $A 16M 7; exit 7"$'\r'
if wait_field "$SA" web-1 .state exited && [ "$(field "$SA" web-1 .last_exit.status)" = 7 ] &&
   onA console_has web-1 "verify ok"; then
	pass "after 10 moves the guest on A verifies its pattern and exits 7"
else
	fail "after 10 moves the guest verifies its pattern and exits 7" "$(onA "$SHOAL" console web-1 --show-log | tail -c 300)"
fi

# --- post-copy through the daemons ---
out=$(curl -s -w ' %{http_code}' --unix-socket "$SA" -X POST -d "{\"to\": \"$SB\", \"postcopy_after\": 31}" \
	http://d/v1/vms/web-9/migrate)
check "postcopy_after 31 is refused: 400 naming postcopy_after" bash -c \
	'[ "${1##* }" = 400 ] && jq -e ".error.message | startswith(\"postcopy_after: \")" <<<"${1% *}" >/dev/null' _ "$out" || echo "$out"
onA "$SHOAL" vm migrate web-9 --to "$SB" --postcopy-after 0 >/dev/null 2>&1
check "vm migrate --postcopy-after 0 is a usage error (64)" test $? = 64
check "create and start web-9 on A (fill 16M, then dirty 8 MiB for 30 s: still at it at the switch, over TLS in the box)" onA "$SHOAL" vm create -f \
	<(spec web-9 "fill $A 16M 7; echo filled; dirty 0 30 0x5000000 8M; verify $A 16M 7; shell") --start
onA wait_console_long web-9 "filled" || fail "web-9 filled its pattern" "$(onA "$SHOAL" console web-9 --show-log | tail -c 300)"
out=$(onA "$SHOAL" vm migrate web-9 "${TO[@]}" --bandwidth 8M --postcopy-after 1 -o json 2>"$TMP/err"); rc=$?
echo "$out" >"$TMP/pc.json"
jq -r '"  post-copy: \(.rounds) rounds, downtime \(.downtime_ms) ms, \(.postcopy_pages) pages missing, \(.postcopy_demand_pages) on demand, \(.postcopy_pushed_pages) pushed"' "$TMP/pc.json" 2>/dev/null
check "web-9 moves to B with post-copy: the answer says so, on demand + pushed = missing" bash -c \
	"[ $rc = 0 ] && jq -e '.postcopy == true and .postcopy_pages > 0 and .postcopy_demand_pages > 0 and .postcopy_demand_pages + .postcopy_pushed_pages == .postcopy_pages and .destination_state == \"running\"' '$TMP/pc.json' >/dev/null" || cat "$TMP/err"
check "the post-copy answer is a MigrateResult" schema_ok MigrateResult "$TMP/pc.json"
check "A's migrated event for web-9 says post-copy with its pages" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-9' | jq -c '[.events[] | select(.type == \"migrated\")] | last | .detail | [.postcopy, .postcopy_pages, .postcopy_demand_pages + .postcopy_pushed_pages]')\" = \"\$(jq -c '[true, .postcopy_pages, .postcopy_pages]' '$TMP/pc.json')\" ]"
check "web-9 runs on B, gone from A" bash -c "[ $(field "$SB" web-9 .state) = running ] && [ $(status_of "$SA" web-9) = 404 ]"
if onB wait_console_long web-9 "verify ok" 300; then pass "on B web-9's guest ran on after post-copy and verifies its pattern"
else fail "on B web-9's guest verifies its pattern" "$(onB "$SHOAL" console web-9 --show-log | tail -c 300)"; fi
check "stop and delete web-9 on B" onB "$SHOAL" vm delete web-9 --force
left=$(pgrep -af -- "$TMP/b/vms/"; ls -A "$TMP/b/vms")
check "nothing left on B: no VMM, no VM directory" test -z "$left" || echo "$left"
finish
