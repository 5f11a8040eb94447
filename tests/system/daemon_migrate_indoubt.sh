#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# daemon_migrate_indoubt.sh - the source daemon settles a migration whose
# last words were lost (docs/migration.md, "In doubt: the last two words
# lost"; src/host/migration.c, dest_settle):
#   - two source daemons, A1 and A2, on A's network, and daemon B over
#     HTTPS with a token in its own namespace (as daemon_migrate.sh): the
#     stream goes over TCP in TLS 1.3, through the source daemon's relay;
#   - each source cuts its first connection where one word would pass (the
#     test's hook, SHOAL_TEST_MIGRATE_CUT_WORD in its environment: the box
#     kernel has no nft reject to drop one segment from outside):
#       - A1 where its VMM's go-ahead (SHOALRUN) goes: A1's VMM completed
#         and exits, B's VMM acknowledged and never heard it, so it holds
#         web-1 paused, in doubt (B's record: paused, in_doubt), its disk's
#         write lock given up.  A1 knows its copy is gone: it resumes web-1
#         at B (the answer says destination_settled resumed and running,
#         events migration-settled at A1 and resumed {in_doubt} at B), and
#         at B the guest verifies its memory and writes and reads its disk
#         on shared storage (the lock taken back);
#       - A2 where B's acknowledgement (SHOALACK) comes back: A2's VMM never
#         hears it and runs web-2 on, and B holds its copy in doubt.  A2
#         knows its copy runs: it deletes B's (the migration fails 500 and
#         says so, event migration-settled deleted), web-2 is gone from B,
#         and at A2 the guest verifies its memory and writes and reads its
#         disk;
#       - A3 where B's acknowledgement of a post-copy's switch (SHOALACK,
#         `--postcopy-after 1` on a guest dirtying faster than the 8 MiB/s
#         cap) comes back: A3's VMM never switches and runs web-3 on; B's
#         VMM holds its copy, never run, for a source that will not come
#         back (its record: starting, in_doubt).  A3 deletes it at once
#         (B's DELETE ?force=true of a held post-copy stops its VMM), not
#         after B's recover-timeout of 120 s: web-3 is gone from B, and
#         at A3 the guest verifies its memory;
#       - A4 as A2, but A4 does not settle (SHOAL_TEST_MIGRATE_NO_SETTLE,
#         as if B could not be reached): the answer says B holds a copy
#         in doubt to delete there; B's record says paused, in_doubt, and
#         `shoal vm show` says so; B, killed and started again, reads it
#         again off the VMM; its resume is 409 in_doubt (A4's copy holds
#         the shared disk's lock) and web-4 stays held; the operator
#         deletes it, and at A4 the guest verifies its memory and disk;
#       - A5 where B's acknowledgement comes back, but A5's relay first
#         kills A5's VMM (SHOAL_TEST_MIGRATE_KILL_VMM): B holds a whole
#         copy in doubt, the only one left, so A5 resumes it (the answer:
#         source_vmm_died, destination_settled resumed), A5's record goes
#         (exited, migration-settled, migrated), and at B the guest
#         verifies its memory and writes the shared disk (the dead VMM's
#         lock gone);
#       - A6's VMM killed as its stream begins (SHOALMIG): B undoes its
#         copy, and the migration fails saying the VM is lost; A6's record
#         says exited (no restart: it ended during the migration).
#   - and two source daemons that die (SIGKILL, the test's hook
#     SHOAL_TEST_MIGRATE_DIE_BEFORE_SETTLE) as their VMM's migration ends,
#     before they settle anything, and are started again (docs/daemon.md,
#     "A live migration across a restart"):
#       - A7 where its go-ahead goes (as A1), web-7 with restart "always":
#         A7's VMM completed, wrote so in its exit file, and exited; B
#         holds web-7 in doubt.  A7 restarted reads the exit file and the
#         destination's token (kept in its database while the migration
#         went), resumes B's copy, and removes its record without
#         restarting it (events exited, migration-settled, migrated with
#         reattached); at B the guest verifies its memory and disk;
#       - A8 where B's acknowledgement comes back (as A2): A8's VMM runs
#         web-8 on, B holds a copy in doubt.  A8 restarted follows its
#         VMM's migration, finds it failed past "end", and deletes B's
#         copy (migration-settled deleted, migration-failed reattached);
#         at A8 the guest verifies its memory and disk.
#
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
require_kvm daemon_migrate_indoubt
command -v openssl >/dev/null || { skip daemon_migrate_indoubt "openssl missing"; finish; }

mig_two_hosts mid 10.79.0

mkdir -p "$TMP/a1" "$TMP/a2" "$TMP/b" "$TMP/shared"
mig_daemon a1 inA SHOAL_TEST_MIGRATE_CUT_WORD=SHOALRUN --allow-dir "$TMP/shared" || { fail "daemon A1 starts"; finish; }
mig_daemon a2 inA SHOAL_TEST_MIGRATE_CUT_WORD=SHOALACK --allow-dir "$TMP/shared" || { fail "daemon A2 starts"; finish; }
mig_daemon a3 inA SHOAL_TEST_MIGRATE_CUT_WORD=SHOALACK || { fail "daemon A3 starts"; finish; }
mig_daemon a4 inA "SHOAL_TEST_MIGRATE_CUT_WORD=SHOALACK SHOAL_TEST_MIGRATE_NO_SETTLE=1" --allow-dir "$TMP/shared" ||
	{ fail "daemon A4 starts"; finish; }
mig_daemon a5 inA "SHOAL_TEST_MIGRATE_CUT_WORD=SHOALACK SHOAL_TEST_MIGRATE_KILL_VMM=1" --allow-dir "$TMP/shared" ||
	{ fail "daemon A5 starts"; finish; }
mig_daemon a6 inA "SHOAL_TEST_MIGRATE_CUT_WORD=SHOALMIG SHOAL_TEST_MIGRATE_KILL_VMM=1" || { fail "daemon A6 starts"; finish; }
BARGS=(--allow-dir "$TMP/shared" --listen "$BLISTEN:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"
	--token-file "$TMP/token")
mig_daemon b inB SHOAL_MID_TEST=b "${BARGS[@]}" || { fail "daemon B starts"; finish; }
pass "daemons A1 to A6 (each with the test's cut) and daemon B (HTTPS on $URL) start"

SA1=$TMP/a1/shoald.sock SA2=$TMP/a2/shoald.sock SA3=$TMP/a3/shoald.sock
SA4=$TMP/a4/shoald.sock SA5=$TMP/a5/shoald.sock SA6=$TMP/a6/shoald.sock
onA1() { SHOAL_SOCKET=$SA1 "$@"; }
onA2() { SHOAL_SOCKET=$SA2 "$@"; }
onA3() { SHOAL_SOCKET=$SA3 "$@"; }
onA4() { SHOAL_SOCKET=$SA4 "$@"; }
onA5() { SHOAL_SOCKET=$SA5 "$@"; }
onA6() { SHOAL_SOCKET=$SA6 "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }
event_of() { curl -s --unix-socket "$1" "http://d/v1/events?vm=$2" | jq -c --arg t "$3" '[.events[] | select(.type == $t)] | last | .detail'; }
TO=(--to "$URL" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem")
A=0x2000000
SPEC_MEMORY=128M
truncate -s 1M "$TMP/shared/run.img" "$TMP/shared/ack.img" "$TMP/shared/op.img" "$TMP/shared/die.img" \
	"$TMP/shared/run7.img" "$TMP/shared/ack8.img"

# start_filled ONFN NAME [DISK [EXTRA]]: NAME created and started on ONFN's
# daemon (fill 16M with seed 7, then a shell; DISK: a writable disk on
# shared storage, $TMP/shared/DISK; EXTRA: more members of its spec), up
# to its shell.
start_filled() {
	local on=$1 name=$2 disks=""
	[ -n "${3:-}" ] && disks="\"disks\": [{\"path\": \"$TMP/shared/$3\"}]${4:+, $4}"
	check "create and start $name on ${on#on} (fill 16M${3:+, a writable disk on shared storage})" \
		"$on" "$SHOAL" vm create -f <(spec "$name" "fill $A 16M 7; echo filled; shell" "$disks") --start
	"$on" wait_console_long "$name" "shoal>" ||
		fail "$name reaches its shell" "$("$on" "$SHOAL" console "$name" --show-log | tail -c 300)"
}

# disk_verified ONFN NAME SEED WHAT: NAME's guest, on ONFN's daemon,
# verifies its 16M pattern and writes and reads back 64 sectors of its
# disk with SEED (check WHAT); then NAME is stopped and deleted there.
disk_verified() {
	local on=$1 name=$2 seed=$3
	"$on" type_console "$name" "verify $A 16M 7; vblk 64 $seed; vblk-verify 64 $seed"$'\r'
	"$on" wait_console_long "$name" "vblk-verify ok sectors=64 seed=$seed" ||
		fail "on ${on#on} $name writes its disk" "$("$on" "$SHOAL" console "$name" --show-log | tail -c 400)"
	check "$4" "$on" bash -c '"$1" console "$2" --show-log | grep -qE "verify ok sum=0x[0-9a-f]+ addr=$3 len=16777216 seed=7" &&
		"$1" console "$2" --show-log | grep -q "vblk ok"' _ "$SHOAL" "$name" "$A"
	check "stop and delete $name on ${on#on}" "$on" "$SHOAL" vm delete "$name" --force
}

# --- the go-ahead lost: A1's copy stopped, B's is resumed ---
start_filled onA1 web-1 run.img
onA1 "$SHOAL" vm migrate web-1 "${TO[@]}" -o json >"$TMP/run.json" 2>"$TMP/run.err"; rc=$?
check "web-1 moves to B though A1's go-ahead was cut: B held it in doubt, A1 resumed it there" bash -c \
	"[ $rc = 0 ] && jq -e '.destination_settled == \"resumed\" and .destination_state == \"running\"' '$TMP/run.json' >/dev/null" ||
	{ cat "$TMP/run.json" "$TMP/run.err"; tail -n 20 "$TMP/a1.log"; }
check "A1 cut the connection where its go-ahead would pass (the test's hook)" \
	grep -q 'cutting the connection where "SHOALRUN" would pass to the destination' "$TMP/a1.log"
check "B's VMM held web-1 in doubt: the go-ahead did not come" \
	grep -q "the source's go-ahead did not come" "$TMP/b/vms/web-1/vmm.log"
check "B recorded web-1 started in doubt, then resumed, settling it" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-1' | jq -c '[.events[] | select(.type == \"started\" or .type == \"resumed\") | [.type, .detail.in_doubt]]')\" = '[[\"started\",true],[\"resumed\",true]]' ]"
settled=$(event_of "$SA1" web-1 migration-settled | jq -c '[.action, .destination_state, .to]')
types=$(curl -s --unix-socket "$SA1" 'http://d/v1/events?vm=web-1' | jq -c '[.events[].type | select(startswith("migrat"))]')
check "A1 recorded migrated, then migration-settled: resumed, running" \
	test "$settled $types" = "[\"resumed\",\"running\",\"$URL\"] [\"migrating\",\"migrated\",\"migration-settled\"]" ||
	echo "  $settled $types"
check "web-1 is gone from A1 and runs on B, no longer in doubt" bash -c \
	"[ $(status_of "$SA1" web-1) = 404 ] && [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -c '[.state, .in_doubt]')\" = '[\"running\",null]' ]"
disk_verified onB web-1 9 "on B web-1's memory is A1's (verify ok) and it wrote and read its shared disk (the lock taken back)"

# --- the acknowledgement lost: A2's copy runs on, B's is deleted ---
start_filled onA2 web-2 ack.img
out=$(onA2 "$SHOAL" vm migrate web-2 "${TO[@]}" 2>&1); rc=$?
check "the migration of web-2 fails (B's acknowledgement cut) and says B's copy, held in doubt, was deleted" bash -c \
	'[ "$1" != 0 ] && [[ "$2" == *"waiting for the acknowledgement"*"the VM runs on here; the destination'"'"'s copy, held in doubt, was deleted"* ]]' _ "$rc" "$out" ||
	{ echo "  rc=$rc: $out"; tail -n 20 "$TMP/a2.log"; }
check "A2 cut the connection where B's acknowledgement would pass (the test's hook)" \
	grep -q 'cutting the connection where "SHOALACK" would pass from the destination' "$TMP/a2.log"
settled=$(event_of "$SA2" web-2 migration-settled | jq -c '[.action, .destination_state]')
types=$(curl -s --unix-socket "$SA2" 'http://d/v1/events?vm=web-2' | jq -c '[.events[].type | select(startswith("migrat"))]')
check "A2 recorded migration-settled: deleted, then migration-failed" \
	test "$settled $types" = '["deleted","gone"] ["migrating","migration-settled","migration-failed"]' ||
	echo "  $settled $types"
check "B had web-2 started in doubt, and deleted it" bash -c \
	"[ $(status_of "$SB" web-2) = 404 ] &&
	 [ \"\$(curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-2' | jq -c '[.events[] | select(.type == \"started\")][0].detail.in_doubt')\" = true ]"
check "web-2 runs on A2, not busy" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA2' http://d/v1/vms/web-2 | jq -c '[.state, .busy]')\" = '[\"running\",null]' ]"
disk_verified onA2 web-2 5 "on A2 web-2 verifies its memory and wrote and read its disk"

# --- post-copy's acknowledgement lost: A3's copy runs on, B's held one goes at once ---
C=0x4000000
check "create and start web-3 on A3 (fill 16M, then dirty 16 MiB/s for 25 s)" \
	onA3 "$SHOAL" vm create -f <(spec web-3 "fill $A 16M 7; echo filled; dirty 16 25 $C 8M; verify $A 16M 7; shell") --start
onA3 wait_console_long web-3 "filled" || fail "web-3 fills its pattern" "$(onA3 "$SHOAL" console web-3 --show-log | tail -c 300)"
out=$(onA3 "$SHOAL" vm migrate web-3 "${TO[@]}" --bandwidth 8M --postcopy-after 1 2>&1); rc=$?
check "post-copy's switch: the migration fails (B's acknowledgement cut) and says B's copy, held, was deleted" bash -c \
	'[ "$1" != 0 ] && [[ "$2" == *"the VM runs on here; the destination'"'"'s copy, held in doubt, was deleted"* ]]' _ "$rc" "$out" ||
	{ echo "  rc=$rc: $out"; tail -n 20 "$TMP/a3.log"; }
check "B's VMM held web-3, never run, for its source; B stopped it on A3's request" bash -c \
	"grep -q 'held paused, never run here, until the source reconnects' '$TMP/b.log' &&
	 grep -q 'web-3: the held post-copy is deleted by request' '$TMP/b.log'"
settled=$(event_of "$SA3" web-3 migration-settled | jq -c '[.action, .destination_state]')
check "A3 recorded migration-settled: deleted" test "$settled" = '["deleted","gone"]' || echo "  $settled"
check "web-3 is gone from B as the migration ends (not after B's 120 s recover-timeout)" \
	test "$(status_of "$SB" web-3)" = 404
check "web-3 runs on A3" test "$(field "$SA3" web-3 .state)" = running
onA3 wait_console_long web-3 "verify ok" 900 ||
	fail "on A3 web-3 verifies its memory" "$(onA3 "$SHOAL" console web-3 --show-log | tail -c 400)"
check "on A3 web-3 verified its memory after the dirtying (nothing lost)" \
	onA3 console_has web-3 "verify ok sum="
check "stop and delete web-3 on A3" onA3 "$SHOAL" vm delete web-3 --force

# --- left to the operator: A4 does not settle (the test's hook), B holds web-4 in doubt ---
start_filled onA4 web-4 op.img
out=$(onA4 "$SHOAL" vm migrate web-4 "${TO[@]}" 2>&1); rc=$?
check "the migration of web-4 fails (B's acknowledgement cut) and says B holds a copy in doubt, to delete there" bash -c \
	'[ "$1" != 0 ] && [[ "$2" == *"the VM runs on here; the destination holds a copy paused, in doubt, that was not deleted: delete that one there"* ]]' _ "$rc" "$out" ||
	{ echo "  rc=$rc: $out"; tail -n 20 "$TMP/a4.log"; }
check "B holds web-4 paused, in doubt" test "$(field "$SB" web-4 '[.state, .in_doubt] | @csv')" = '"paused",true'
check "shoal vm show on B says web-4 is in doubt, and what to do" bash -c \
	"SHOAL_SOCKET='$SB' '$SHOAL' vm show web-4 | grep -q '^state: *paused (in doubt: came in by a migration whose source.s go-ahead never came; resume it if the source.s copy stopped, else delete it)'"
mig_kill b
mig_daemon b inB SHOAL_MID_TEST=b "${BARGS[@]}" || { fail "daemon B restarts"; finish; }
check "B restarted (SIGKILL, then started again) still holds web-4 paused, in doubt: its VMM says so" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-4 | jq -c '[.state, .in_doubt]')\" = '[\"paused\",true]' ] &&
	 grep -q 'web-4: reattached held paused, in doubt' '$TMP/b.log'"
resp=$(curl -s -X POST --unix-socket "$SB" -w '\n%{http_code}' http://d/v1/vms/web-4/resume)
check "B refuses to resume web-4: 409 in_doubt, its disk's write lock is held elsewhere (A4's copy runs on)" bash -c \
	'[ "$(tail -n 1 <<<"$1")" = 409 ] && head -n 1 <<<"$1" | jq -e ".error.code == \"in_doubt\" and (.error.message | test(\"write locks are held elsewhere\"))" >/dev/null' _ "$resp" ||
	echo "  $resp"
check "web-4 stays paused and in doubt on B after the refusal" test "$(field "$SB" web-4 '[.state, .in_doubt] | @csv')" = '"paused",true'
check "the operator deletes B's copy" onB "$SHOAL" vm delete web-4 --force
disk_verified onA4 web-4 4 "on A4 web-4 verifies its memory and wrote and read its disk"

# --- A5's VMM dies where B's acknowledgement comes: B's copy, whole, is the VM ---
start_filled onA5 web-5 die.img
onA5 "$SHOAL" vm migrate web-5 "${TO[@]}" -o json >"$TMP/die.json" 2>"$TMP/die.err"; rc=$?
check "web-5 moves to B though A5's VMM died before B's acknowledgement reached it: A5 resumed B's copy" bash -c \
	"[ $rc = 0 ] && jq -e '.source_vmm_died == true and .destination_settled == \"resumed\" and .destination_state == \"running\"' '$TMP/die.json' >/dev/null" ||
	{ cat "$TMP/die.json" "$TMP/die.err"; tail -n 20 "$TMP/a5.log"; }
check "A5 killed its VMM where B's acknowledgement would pass (the test's hook)" \
	grep -q 'killing the source VMM (process group [0-9]*) where "SHOALACK" would pass from the destination' "$TMP/a5.log"
types=$(curl -s --unix-socket "$SA5" 'http://d/v1/events?vm=web-5' | jq -c '[.events[].type | select(startswith("migrat") or . == "exited")]')
died=$(event_of "$SA5" web-5 migrated | jq -c '.source_vmm_died')
check "A5 recorded its VMM's exit, migration-settled and migrated (source_vmm_died); web-5 is gone from A5" bash -c \
	"[ '$types $died' = '[\"migrating\",\"exited\",\"migration-settled\",\"migrated\"] true' ] && [ $(status_of "$SA5" web-5) = 404 ]" ||
	echo "  $types $died"
check "B had web-5 started in doubt, then resumed" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-5' | jq -c '[.events[] | select(.type == \"started\" or .type == \"resumed\") | [.type, .detail.in_doubt]]')\" = '[[\"started\",true],[\"resumed\",true]]' ]"
disk_verified onB web-5 6 "on B web-5's memory is A5's (verify ok) and it wrote and read its shared disk (the dead VMM's lock gone)"

# --- A6's VMM dies as its stream begins: no whole copy anywhere, the VM is lost ---
start_filled onA6 web-6
out=$(onA6 "$SHOAL" vm migrate web-6 "${TO[@]}" 2>&1); rc=$?
check "the migration of web-6 fails: A6's VMM died as its stream began, B has no copy, the VM is lost (and says so)" bash -c \
	'[ "$1" != 0 ] && [[ "$2" == *"its VMM here died ("*"), and the destination has no whole copy (there it is gone): the VM is lost, its record here exited"* ]]' _ "$rc" "$out" ||
	{ echo "  rc=$rc: $out"; tail -n 20 "$TMP/a6.log"; }
lost=$(event_of "$SA6" web-6 migration-failed | jq -c '[.vm_lost, .destination_state]')
check "A6's record of web-6 says exited, not busy, its migration-failed event vm_lost; B has none" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA6' http://d/v1/vms/web-6 | jq -c '[.state, .busy]')\" = '[\"exited\",null]' ] &&
	 [ '$lost' = '[true,\"gone\"]' ] && [ $(status_of "$SB" web-6) = 404 ]" || echo "  $lost"
check "delete web-6 on A6" onA6 "$SHOAL" vm delete web-6

# wait_for WHAT TRIES CMD...: CMD true within TRIES tenths of a second.
wait_for() {
	local what=$1 n=$2
	shift 2
	for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
	echo "  gave up waiting: $what"
	return 1
}
held_in_doubt() { [ "$(field "$SB" "$1" '[.state, .in_doubt] | @csv')" = '"paused",true' ]; }
gone_from() { [ "$(status_of "$1" "$2")" = 404 ]; }
not_busy() { [ "$(field "$1" "$2" .busy)" = null ]; }

# --- A7 dies as its VMM completes, its go-ahead cut: restarted, it resumes B's copy ---
mig_daemon a7 inA "SHOAL_TEST_MIGRATE_CUT_WORD=SHOALRUN SHOAL_TEST_MIGRATE_DIE_BEFORE_SETTLE=1" \
	--allow-dir "$TMP/shared" || { fail "daemon A7 starts"; finish; }
SA7=$TMP/a7/shoald.sock
onA7() { SHOAL_SOCKET=$SA7 "$@"; }
start_filled onA7 web-7 run7.img '"restart": "always"'
out=$(onA7 "$SHOAL" vm migrate web-7 "${TO[@]}" 2>&1); rc=$?
check "A7 dies as web-7's migration ends, its go-ahead cut, before it settles anything (the test's hooks)" bash -c \
	"[ $rc != 0 ] && grep -q 'cutting the connection where \"SHOALRUN\" would pass' '$TMP/a7.log' &&
	 grep -q 'web-7: dying before the migration is settled' '$TMP/a7.log'" || { echo "  rc=$rc: $out"; tail -n 5 "$TMP/a7.log"; }
check "B holds web-7 paused, in doubt" wait_for "web-7 in doubt at B" 100 held_in_doubt web-7
check "A7's VMM wrote in its exit file that it migrated web-7 (status 0), and exited" \
	wait_for "A7's VMM's exit file" 100 jq -se 'length == 1 and .[0].migrated == true and .[0].status == 0' "$TMP/a7/vms/web-7/vmm-exit"
mig_kill a7 2>/dev/null
mig_daemon a7 inA SHOAL_MID_TEST=a7 --allow-dir "$TMP/shared" || { fail "daemon A7 restarts"; finish; }
check "A7 restarted removes its record of web-7" wait_for "web-7 gone from A7" 300 gone_from "$SA7" web-7
types=$(curl -s --unix-socket "$SA7" 'http://d/v1/events?vm=web-7' | jq -c '[.events[].type | select(startswith("migrat") or . == "exited" or . == "restarting")]')
mig=$(event_of "$SA7" web-7 migrated | jq -c '[.reattached, .destination_settled, .destination_state]')
check "A7 recorded web-7 exited, migration-settled and migrated (reattached, resumed, running), never restarting it" \
	test "$types $mig" = '["migrating","exited","migration-settled","migrated"] [true,"resumed","running"]' ||
	{ echo "  $types $mig"; event_of "$SA7" web-7 exited; tail -n 10 "$TMP/a7.log"; }
check "web-7 runs on B, no longer in doubt" \
	test "$(curl -s --unix-socket "$SB" http://d/v1/vms/web-7 | jq -c '[.state, .in_doubt]')" = '["running",null]'
disk_verified onB web-7 7 "on B web-7's memory is A7's (verify ok) and it wrote and read its shared disk"

# --- A8 dies as its VMM's migration fails past "end": restarted, it deletes B's copy ---
mig_daemon a8 inA "SHOAL_TEST_MIGRATE_CUT_WORD=SHOALACK SHOAL_TEST_MIGRATE_DIE_BEFORE_SETTLE=1" \
	--allow-dir "$TMP/shared" || { fail "daemon A8 starts"; finish; }
SA8=$TMP/a8/shoald.sock
onA8() { SHOAL_SOCKET=$SA8 "$@"; }
start_filled onA8 web-8 ack8.img
out=$(onA8 "$SHOAL" vm migrate web-8 "${TO[@]}" 2>&1); rc=$?
check "A8 dies as web-8's migration fails, B's acknowledgement cut, before it settles anything (the test's hooks)" bash -c \
	"[ $rc != 0 ] && grep -q 'web-8: dying before the migration is settled' '$TMP/a8.log'" || { echo "  rc=$rc: $out"; tail -n 5 "$TMP/a8.log"; }
check "B holds web-8 paused, in doubt" wait_for "web-8 in doubt at B" 100 held_in_doubt web-8
mig_kill a8 2>/dev/null
mig_daemon a8 inA SHOAL_MID_TEST=a8 --allow-dir "$TMP/shared" || { fail "daemon A8 restarts"; finish; }
check "A8 restarted follows web-8's migration to its end, and B's copy goes" wait_for "web-8 gone from B" 300 gone_from "$SB" web-8
wait_for "web-8 not busy at A8" 100 not_busy "$SA8" web-8
settled=$(event_of "$SA8" web-8 migration-settled | jq -c '[.action, .destination_state]')
failed=$(event_of "$SA8" web-8 migration-failed | jq -c '.reattached')
check "A8 recorded migration-settled (deleted, gone) and migration-failed (reattached)" \
	test "$settled $failed" = '["deleted","gone"] true' || { echo "  $settled $failed"; tail -n 10 "$TMP/a8.log"; }
check "web-8 runs on A8, not busy" \
	test "$(curl -s --unix-socket "$SA8" http://d/v1/vms/web-8 | jq -c '[.state, .busy]')" = '["running",null]'
disk_verified onA8 web-8 8 "on A8 web-8 verifies its memory and wrote and read its disk"
finish
