#!/bin/bash
# daemon_snapshot.sh - snapshots through shoald (docs/daemon.md, "Snapshots"),
# through the CLI and curl only:
#   - a VM running the test guest fills 32 MiB with a seeded pattern and
#     waits at its shell; `shoal vm snapshot` saves it into the daemon's
#     state directory and records it (list, show, JSON fields, an event);
#     the VM goes on running and overwrites its pattern;
#   - `shoal vm restore SNAP --name NEW` makes a new VM whose VMM starts
#     with `shoal run --restore`: it runs, and typed "verify ...; exit 5"
#     (through the daemon's console attach) it finds the pattern as it was
#     at the snapshot and exits 5;
#   - deleting the snapshot while the restored VM runs is refused, naming
#     it; started again, the restored VM boots fresh from its config, and
#     the snapshot can then be deleted (its directory goes);
#   - a live snapshot (--live) of a second VM, which then overwrites its
#     pattern; `shoal vm clone` makes clones of it (--count, --prefix, the
#     default prefix), each started with --restore --clone, recorded as
#     clones with events, each finding the snapshot's pattern; bad counts,
#     prefixes and a name clash are refused with nothing made; deleting
#     the snapshot is refused while a clone runs, naming them;
#   - refused: a snapshot of a VM that is not running, a taken snapshot
#     name, a restore onto an existing VM's name, an unknown snapshot (404),
#     callers without the admin role (403; reading needs read).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_snapshot || finish

ROLES=0
[ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && ROLES=1
if [ $ROLES = 1 ]; then
	chmod 0711 "$TMP"           # callers with other uids reach the socket by name
	start_daemon --grant user:65534=operate --grant user:65533=read || { fail "daemon starts"; finish; }
	chgrp 65534 "$SHOAL_SOCKET"
else
	start_daemon || { fail "daemon starts"; finish; }
fi
pass "daemon starts"

A=0x2000000

# --- a VM with a pattern in its memory ---
SPEC_MEMORY=128M
check "create and start web-1 (fill 32M, shell)" \
	"$SHOAL" vm create -f <(spec web-1 "fill $A 32M 7; echo filled; shell") --start
wait_console_long web-1 "shoal>" || fail "web-1 reaches its shell" "$("$SHOAL" console web-1 --show-log | tail -c 300)"

# --- snapshot it ---
out=$("$SHOAL" vm snapshot web-1 --as snap-a 2>&1); rc=$?
check "vm snapshot web-1 --as snap-a" test $rc -eq 0
check "vm snapshot prints what it took" bash -c "echo '$out' | grep -q '^web-1: snapshot snap-a taken: paused [0-9.]* ms'"
check "the VM goes on running" test "$(vm_field web-1 .state)" = running
D=$STATE/snapshots/snap-a
check "the snapshot is in the daemon's state directory" test -f "$D/manifest.json" -a -f "$D/memory" -a -f "$D/state"
"$SHOAL" snapshot show snap-a -o json >"$TMP/show.json"
jqq() { jq "$@" >/dev/null; }
check "snapshot show -o json: fields" jqq -e --arg d "$D" '.name == "snap-a" and .vm == "web-1" and .dir == $d
	and .vcpus == 1 and .memory_bytes == 134217728 and .memory_data_bytes >= 33554432
	and .size_bytes >= 33554432 and .size_bytes < 134217728 and .pause_ms > 0 and .total_ms >= .pause_ms
	and (.created_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")) and .spec.name == "web-1"
	and (.spec.cmdline | startswith("fill")) and .used_by == [] and .restored_vms == []' "$TMP/show.json"
check "snapshot show: a summary" bash -c "'$SHOAL' snapshot show snap-a | grep -qE '^vm: +web-1'"
check "snapshot list -o json" bash -c "'$SHOAL' snapshot list -o json | jq -e '.snapshots | length == 1 and .[0].name == \"snap-a\" and .[0].vm == \"web-1\" and (.[0] | has(\"spec\") | not)' >/dev/null"
check "snapshot list: a table" bash -c "'$SHOAL' snapshot list | grep -qE '^snap-a +web-1 '"
check "GET /v1/snapshots/snap-a" test "$(api GET /v1/snapshots/snap-a)" = 200
check "a snapshotted event on web-1" bash -c "'$SHOAL' events --vm web-1 -o json | jq -s -e 'map(select(.type == \"snapshotted\")) | length == 1 and .[0].detail.snapshot == \"snap-a\"' >/dev/null"
out=$("$SHOAL" vm snapshot web-1 --as snap-a 2>&1); rc=$?
check "a taken snapshot name is refused" test $rc -eq 1 -a "$out" = "shoal: snapshot snap-a: already exists"
out=$("$SHOAL" vm snapshot web-1 -o json); rc=$?
dflt=$(echo "$out" | jq -r .name)
check "the default name is NAME-YYYYmmdd-HHMMSS" bash -c "[ $rc -eq 0 ] && [[ '$dflt' =~ ^web-1-[0-9]{8}-[0-9]{6}$ ]]"
check "delete the second one" "$SHOAL" snapshot delete "$dflt"
check "its directory is gone" test ! -e "$STATE/snapshots/$dflt"

# the original goes on and overwrites its pattern: a restore that saw
# memory from later than the snapshot would find seed 9
type_console web-1 "fill $A 32M 9; verify $A 32M 9"$'\r'
if wait_console_long web-1 "verify ok"; then pass "web-1 went on and overwrote its pattern"
else fail "web-1 went on and overwrote its pattern" "$("$SHOAL" console web-1 --show-log | tail -c 300)"; fi

# --- restore it as a new VM ---
out=$("$SHOAL" vm restore snap-a --name web-2 2>&1); rc=$?
check "vm restore snap-a --name web-2" test $rc -eq 0 -a "$out" = "web-2: running (restored from snap-a)"
check "web-2 is running" test "$(vm_field web-2 .state)" = running
check "web-2 records where it came from" test "$(vm_field web-2 .restored_from)" = snap-a
check "web-2's spec is the snapshot's, renamed" test "$(vm_field web-2 '.spec.name + "|" + .spec.cmdline + "|" + (.spec.memory | tostring)')" = "web-2|fill $A 32M 7; echo filled; shell|134217728"
check "its VMM was started with --restore" bash -c "tr '\\0' ' ' </proc/$(vm_field web-2 .pid)/cmdline | grep -q -- '--restore $D '"
check "vm show web-2 says it was restored" bash -c "'$SHOAL' vm show web-2 | grep -qE '^restored: +from snapshot snap-a'"
check "snapshot show: used by web-2" bash -c "'$SHOAL' snapshot show snap-a -o json | jq -e '.used_by == [\"web-2\"] and .restored_vms == [\"web-2\"]' >/dev/null"
check "events: web-2 created from snap-a, started restored" bash -c "'$SHOAL' events --vm web-2 -o json | jq -s -e '(map(select(.type == \"created\"))[0].detail.snapshot == \"snap-a\") and (map(select(.type == \"started\"))[0].detail.restored_from == \"snap-a\")' >/dev/null"
out=$("$SHOAL" vm restore snap-a --name web-1 2>&1); rc=$?
check "restore onto an existing VM's name is refused" test $rc -eq 1 -a "$out" = 'shoal: vm "web-1" already exists'
out=$("$SHOAL" vm restore ghost --name web-9 2>&1); rc=$?
check "restore of an unknown snapshot is refused" test $rc -eq 1 -a "$out" = "shoal: snapshot ghost: not found"
check "unknown snapshot: 404 not_found" bash -c "[ \$(curl -s -o '$TMP/body' -w '%{http_code}' --unix-socket '$SHOAL_SOCKET' http://d/v1/snapshots/ghost) = 404 ] && jq -e '.error.code == \"not_found\"' '$TMP/body' >/dev/null"
expect_error "DELETE an unknown snapshot: 404" 404 not_found "ghost" api DELETE /v1/snapshots/ghost
expect_error "restore without a name: 400" 400 invalid_request "name" api POST /v1/snapshots/snap-a/restore '{}'

# --- deleting it while web-2 runs from it ---
out=$("$SHOAL" snapshot delete snap-a 2>&1); rc=$?
check "delete while a VM restored from it runs: refused, naming it" \
	test $rc -eq 1 -a "$out" = "shoal: snapshot snap-a: in use by VM web-2 (running)"
expect_error "  ... over HTTP: 409 in_use" 409 in_use "web-2 (running)" api DELETE /v1/snapshots/snap-a
check "the snapshot is still there" test -f "$D/memory"

# --- the restored guest finds the pattern of the snapshot's instant ---
type_console web-2 "verify $A 32M 7; exit 5"$'\r'
wait_state web-2 exited 600
check "web-2 ended with exit status 5" test "$(vm_field web-2 '.state + "|" + (.last_exit.status | tostring)')" = "exited|5"
if console_has web-2 "verify ok" && ! console_has web-2 "verify bad"; then
	pass "web-2's console shows verify ok (the pattern as at the snapshot)"
else
	fail "web-2's console shows verify ok" "$("$SHOAL" console web-2 --show-log | tail -c 400)"
fi

# --- started again, a restored VM boots fresh from its config ---
check "start web-2 again" "$SHOAL" vm start web-2
if wait_console_long web-2 "filled"; then pass "web-2 booted fresh (its config's cmdline ran again)"; else fail "web-2 booted fresh" "$("$SHOAL" console web-2 --show-log | tail -c 300)"; fi
check "the started event has no restored_from" bash -c "'$SHOAL' events --vm web-2 -o json | jq -s -e 'map(select(.type == \"started\")) | length == 2 and (.[1].detail | has(\"restored_from\") | not)' >/dev/null"
check "snapshot show: used by nobody now" bash -c "'$SHOAL' snapshot show snap-a -o json | jq -e '.used_by == [] and .restored_vms == [\"web-2\"]' >/dev/null"

# --- a second restore, then delete once it has stopped ---
check "restore snap-a again as web-3" "$SHOAL" vm restore snap-a --name web-3
out=$("$SHOAL" snapshot delete snap-a 2>&1); rc=$?
check "delete refused while web-3 runs" test $rc -eq 1 -a "$out" = "shoal: snapshot snap-a: in use by VM web-3 (running)"
check "stop web-3" "$SHOAL" vm stop web-3 --force
out=$("$SHOAL" snapshot delete snap-a 2>&1); rc=$?
check "delete after it stopped" test $rc -eq 0 -a "$out" = "snapshot snap-a: deleted"
check "the snapshot's directory is gone" test ! -e "$D"
check "snapshot list is empty" bash -c "'$SHOAL' snapshot list -o json | jq -e '.snapshots == []' >/dev/null"
check "a snapshot-deleted event" bash -c "'$SHOAL' events --vm web-1 -o json | jq -s -e 'map(select(.type == \"snapshot-deleted\" and .detail.snapshot == \"snap-a\")) | length == 1' >/dev/null"
check "web-3 keeps its record of where it came from" test "$(vm_field web-3 .restored_from)" = snap-a

# --- a VM that is not running cannot be snapshotted ---
check "stop web-1" "$SHOAL" vm stop web-1 --force
out=$("$SHOAL" vm snapshot web-1 2>&1); rc=$?
check "snapshot of a stopped VM: refused, saying why" \
	test $rc -eq 1 -a "$out" = 'shoal: vm "web-1" is exited: cannot snapshot it (a snapshot saves a running or paused VM)'
expect_error "  ... over HTTP: 409 wrong_state" 409 wrong_state "is exited" api POST /v1/vms/web-1/snapshot
expect_error "snapshot of an unknown VM: 404" 404 not_found "ghost" api POST /v1/vms/ghost/snapshot
expect_error "a bad snapshot name: 400" 400 invalid_request "name" api POST /v1/vms/web-2/snapshot '{"name": "../x"}'
# a writable disk of a jailed VM: the VMM cannot reach the directory beside
# its disk, so shoald makes the new overlay there and hands it over open
# (unjailed, the VMM makes it: daemon_snapshot_disk.sh)
if [ "$(id -u)" = 0 ]; then
	"$SHOAL" img create -f raw "$TMP/wd.raw" 4M >/dev/null
	check "create and start wd (a writable disk, jailed)" \
		"$SHOAL" vm create -f <(spec wd shell "\"disks\": [{\"path\": \"$TMP/wd.raw\"}]") --start
	wait_console_long wd "shoal>" || fail "wd reaches its shell" "$("$SHOAL" console wd --show-log | tail -c 300)"
	type_console wd "vblk 64 7"$'\r'
	wait_console_long wd "vblk ok" || fail "wd wrote its disk pattern (seed 7)" "$("$SHOAL" console wd --show-log | tail -c 300)"
	out=$("$SHOAL" vm snapshot wd --as ws 2>&1); rc=$?
	check "a jailed VM with a writable disk: the snapshot is taken" test $rc -eq 0 -a -d "$STATE/snapshots/ws"
	check "  ... wd now writes wd-ws.qcow2 beside its disk, a clean qcow2 on wd.raw" \
		test "$(vm_field wd '.spec.disks[0].path')" = "$TMP/wd-ws.qcow2" -a \
		"$(qemu-img info -U --output json "$TMP/wd-ws.qcow2" | jq -r '."backing-filename"')" = "$TMP/wd.raw"
	type_console wd "vblk 64 9; exit 4"$'\r'
	wait_state wd exited 300     # tries (15 s and more); a lost console line then fails here, not at the script's 600 s limit
	check "  ... wd overwrote its disk (seed 9) and exited 4" test "$(vm_field wd .last_exit.status)" = 4
	check "  ... the overlay checks clean" qemu-img check -q "$TMP/wd-ws.qcow2"
	check "restore ws as wr (jailed)" "$SHOAL" vm restore ws --name wr
	type_console wr "vblk-verify 64 7; exit 6"$'\r'
	wait_state wr exited 300
	check "  ... wr reads the disk of the snapshot (seed 7) and exits 6" \
		test "$(vm_field wr .last_exit.status)" = 6
	check "  ... vblk-verify said ok" console_has wr "vblk-verify ok sectors=64 seed=7"
	: >"$TMP/wd-ws-taken.qcow2"   # the name its next snapshot "taken" would use
	check "start wd again (a fresh boot on its overlay)" "$SHOAL" vm start wd
	expect_error "an overlay name that exists: 409, naming it, the file untouched" 409 snapshot_failed \
		"wd-ws-taken.qcow2: already exists" api POST /v1/vms/wd/snapshot '{"name": "taken"}'
	check "  ... the file is untouched and wd runs on" \
		test ! -s "$TMP/wd-ws-taken.qcow2" -a "$(vm_field wd .state)" = running
	"$SHOAL" img create -f raw "$TMP/wd2.raw" 4M >/dev/null
	"$SHOAL" img create -f raw "$TMP/wd3.raw" 4M >/dev/null
	check "create and start w2 (two writable disks, jailed)" "$SHOAL" vm create -f <(spec w2 shell \
		"\"disks\": [{\"path\": \"$TMP/wd2.raw\"}, {\"path\": \"$TMP/wd3.raw\"}]") --start
	expect_error "a jailed VM with two writable disks: 409, saying why" 409 snapshot_failed \
		"it has 2 writable disks and its VMM is jailed" api POST /v1/vms/w2/snapshot
	check "  ... no overlay was made beside its disks" test -z "$(ls "$TMP" | grep '^wd[23]-.*\.qcow2$')"
	for v in wr wd w2; do "$SHOAL" vm delete $v --force >/dev/null 2>&1; done
	"$SHOAL" snapshot delete ws >/dev/null 2>&1
	check "nothing was left in the snapshots directory" test -z "$(ls -A "$STATE/snapshots")"
else
	skip "daemon_snapshot jailed writable disk" "shoald jails its VMMs only as root"
fi

# --- a live snapshot through the daemon, then clones of it ---
SPEC_MEMORY=64M
check "create and start tmpl (fill 16M, shell)" \
	"$SHOAL" vm create -f <(spec tmpl "fill $A 16M 5; echo filled; shell") --start
wait_console_long tmpl "shoal>" || fail "tmpl reaches its shell" "$("$SHOAL" console tmpl --show-log | tail -c 300)"
out=$("$SHOAL" vm snapshot tmpl --as snap-l --live 2>&1); rc=$?
check "vm snapshot tmpl --as snap-l --live" test $rc -eq 0
check "it says it was live" bash -c "echo '$out' | grep -q '^tmpl: snapshot snap-l taken live: paused [0-9.]* ms'"
L=$STATE/snapshots/snap-l
check "the live snapshot's manifest says live, its memory is written" \
	jqq -e '.live == true and .files.memory.size == 67108864' "$L/manifest.json"
check "the snapshotted event says live" bash -c "'$SHOAL' events --vm tmpl -o json | jq -s -e 'map(select(.type == \"snapshotted\" and .detail.snapshot == \"snap-l\"))[0].detail.live == true' >/dev/null"
check "tmpl goes on running" test "$(vm_field tmpl .state)" = running
expect_error "live must be a boolean: 400" 400 invalid_request "live" api POST /v1/vms/tmpl/snapshot '{"live": 1}'
type_console tmpl "fill $A 16M 8; verify $A 16M 8"$'\r'
if wait_console_long tmpl "verify ok"; then pass "tmpl went on and overwrote its pattern"
else fail "tmpl went on and overwrote its pattern" "$("$SHOAL" console tmpl --show-log | tail -c 300)"; fi

out=$("$SHOAL" vm clone snap-l --count 2 --prefix c 2>&1); rc=$?
check "vm clone snap-l --count 2 --prefix c" test $rc -eq 0 -a "$out" = "c-1: running (clone of snap-l)
c-2: running (clone of snap-l)"
for c in c-1 c-2; do
	check "$c runs, a clone of snap-l" test "$(vm_field $c '.state + "|" + .restored_from + "|" + (.clone | tostring)')" = "running|snap-l|true"
	check "$c's VMM was started with --restore DIR --clone" bash -c "tr '\\0' ' ' </proc/$(vm_field $c .pid)/cmdline | grep -q -- '--restore $L --clone '"
done
check "vm show c-1 says it is a clone" bash -c "'$SHOAL' vm show c-1 | grep -qE '^restored: +from snapshot snap-l \\(a clone\\)'"
check "events: c-1 created as a clone of snap-l, started restored" bash -c "'$SHOAL' events --vm c-1 -o json | jq -s -e '(map(select(.type == \"created\"))[0].detail | .snapshot == \"snap-l\" and .clone == true) and (map(select(.type == \"started\"))[0].detail.clone == true)' >/dev/null"
"$SHOAL" vm clone snap-l --count 1 -o json >"$TMP/clone.json"; rc=$?
check "the default prefix is the snapshot's name (-o json)" \
	jqq -e '.snapshot == "snap-l" and (.vms | length == 1) and .vms[0].name == "snap-l-1" and .vms[0].clone == true and .vms[0].state == "running"' "$TMP/clone.json"

# bad input: nothing is created
out=$("$SHOAL" vm clone snap-l --count 0 2>&1); rc=$?
check "--count 0 is refused" test $rc -eq 64 -a "$out" = "shoal: --count 0: expected a number of clones, 1 or more"
out=$("$SHOAL" vm clone snap-l --prefix x 2>&1); rc=$?
check "clone without --count is refused" test $rc -eq 64 -a "$out" = "shoal: vm clone snap-l: --count N is required (how many clones)"
expect_error "count 0 over HTTP: 400" 400 invalid_request "count" api POST /v1/snapshots/snap-l/clone '{"count": 0}'
out=$("$SHOAL" vm clone snap-l --count 65 2>&1); rc=$?
check "too many clones are refused" test $rc -eq 1 -a "$out" = "shoal: count: expected 1 to 64 clones"
out=$("$SHOAL" vm clone snap-l --count 3 --prefix c 2>&1); rc=$?
check "a name clash (c-1 exists) is refused, naming it" test $rc -eq 1 -a "$out" = 'shoal: vm "c-1" already exists'
check "  ... and no c-3 was made" bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' --unix-socket '$SHOAL_SOCKET' http://d/v1/vms/c-3) = 404 ]"
long=$(printf 'p%.0s' $(seq 62))
expect_error "a prefix too long for its numbers: 400" 400 invalid_request "prefix" api POST /v1/snapshots/snap-l/clone "{\"count\": 2, \"prefix\": \"$long\"}"
expect_error "an unknown key: 400" 400 invalid_request "unknown key" api POST /v1/snapshots/snap-l/clone '{"count": 1, "name": "x"}'
expect_error "clone of an unknown snapshot: 404" 404 not_found "ghost" api POST /v1/snapshots/ghost/clone '{"count": 1}'
check "still three clones" test "$("$SHOAL" vm list -o json | jq '[.vms[] | select(.clone)] | length')" = 3

out=$("$SHOAL" snapshot delete snap-l 2>&1); rc=$?
check "delete while clones run: refused, naming them" test $rc -eq 1 -a "$out" = \
	"shoal: snapshot snap-l: in use by VMs c-1 (clone, running), c-2 (clone, running), snap-l-1 (clone, running)"

# each clone finds the memory of the snapshot's instant (seed 5, not 8)
for c in c-1 c-2; do
	type_console $c "verify $A 16M 5; exit 6"$'\r'
	wait_state $c exited 600
	check "$c ended with exit status 6" test "$(vm_field $c '.state + "|" + (.last_exit.status | tostring)')" = "exited|6"
	if console_has $c "verify ok" && ! console_has $c "verify bad"; then pass "$c verified the snapshot's pattern"
	else fail "$c verified the snapshot's pattern" "$("$SHOAL" console $c --show-log | tail -c 400)"; fi
done
out=$("$SHOAL" snapshot delete snap-l 2>&1); rc=$?
check "delete refused while one clone still runs" test $rc -eq 1 -a "$out" = "shoal: snapshot snap-l: in use by VM snap-l-1 (clone, running)"
check "stop snap-l-1 and tmpl" "$SHOAL" vm stop snap-l-1 --force
"$SHOAL" vm stop tmpl --force >/dev/null 2>&1
check "delete snap-l once no clone runs" "$SHOAL" snapshot delete snap-l
check "its directory is gone" test ! -e "$L"

# --- who may ---
if [ $ROLES = 1 ]; then
	as() { local uid=$1; shift; setpriv --reuid="$uid" --regid=65534 --clear-groups "$@"; }
	st() {      # UID METHOD PATH [BODY]: status on stdout, body in $TMP/body
		as "$1" curl -s -o - -w '\n%{http_code}' --unix-socket "$SHOAL_SOCKET" -X "$2" \
			${4:+--data-binary "$4"} "http://d$3" >"$TMP/resp"
		head -n -1 "$TMP/resp" >"$TMP/body"
		tail -n 1 "$TMP/resp"
	}
	check "start web-1 for the role checks" "$SHOAL" vm start web-1
	expect_error "operate may not snapshot (admin)" 403 forbidden '"admin"' st 65534 POST /v1/vms/web-1/snapshot
	check "read may list snapshots" test "$(st 65533 GET /v1/snapshots)" = 200
	check "root takes one" test "$(api POST /v1/vms/web-1/snapshot '{"name": "snap-b"}')" = 201
	check "read may show it" test "$(st 65533 GET /v1/snapshots/snap-b)" = 200
	expect_error "operate may not restore (admin)" 403 forbidden '"admin"' st 65534 POST /v1/snapshots/snap-b/restore '{"name": "x"}'
	expect_error "operate may not clone (admin)" 403 forbidden '"admin"' st 65534 POST /v1/snapshots/snap-b/clone '{"count": 1}'
	expect_error "operate may not delete a snapshot (admin)" 403 forbidden '"admin"' st 65534 DELETE /v1/snapshots/snap-b
	check "root deletes it" test "$(api DELETE /v1/snapshots/snap-b)" = 204
else
	skip "daemon_snapshot roles" "needs root and setpriv (callers run as other uids)"
fi
finish
