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
#         at A3 the guest verifies its memory.
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
mig_daemon b inB SHOAL_MID_TEST=b --allow-dir "$TMP/shared" --listen "$BLISTEN:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
	--token-file "$TMP/token" || { fail "daemon B starts"; finish; }
pass "daemons A1, A2 and A3 (each with the test's cut) and daemon B (HTTPS on $URL) start"

SA1=$TMP/a1/shoald.sock SA2=$TMP/a2/shoald.sock SA3=$TMP/a3/shoald.sock
onA1() { SHOAL_SOCKET=$SA1 "$@"; }
onA2() { SHOAL_SOCKET=$SA2 "$@"; }
onA3() { SHOAL_SOCKET=$SA3 "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }
field() { curl -s --unix-socket "$1" "http://d/v1/vms/$2" | jq -r "$3"; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --unix-socket "$1" "http://d/v1/vms/$2"; }
event_of() { curl -s --unix-socket "$1" "http://d/v1/events?vm=$2" | jq -c --arg t "$3" '[.events[] | select(.type == $t)] | last | .detail'; }
TO=(--to "$URL" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem")
A=0x2000000
SPEC_MEMORY=128M
truncate -s 1M "$TMP/shared/run.img" "$TMP/shared/ack.img"

# --- the go-ahead lost: A1's copy stopped, B's is resumed ---
check "create and start web-1 on A1 (fill 16M, a writable disk on shared storage)" \
	onA1 "$SHOAL" vm create -f <(spec web-1 "fill $A 16M 7; echo filled; shell" "\"disks\": [{\"path\": \"$TMP/shared/run.img\"}]") --start
onA1 wait_console_long web-1 "shoal>" || fail "web-1 reaches its shell" "$(onA1 "$SHOAL" console web-1 --show-log | tail -c 300)"
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
onB type_console web-1 "verify $A 16M 7; vblk 64 9; vblk-verify 64 9"$'\r'
onB wait_console_long web-1 "vblk-verify ok sectors=64 seed=9" ||
	fail "on B web-1 writes its disk" "$(onB "$SHOAL" console web-1 --show-log | tail -c 400)"
check "on B web-1's memory is A1's (verify ok) and it wrote and read its shared disk (the lock taken back)" bash -c \
	"SHOAL_SOCKET='$SB' '$SHOAL' console web-1 --show-log | grep -qE 'verify ok sum=0x[0-9a-f]+ addr=$A len=16777216 seed=7' &&
	 SHOAL_SOCKET='$SB' '$SHOAL' console web-1 --show-log | grep -q 'vblk ok'"
check "stop and delete web-1 on B" onB "$SHOAL" vm delete web-1 --force

# --- the acknowledgement lost: A2's copy runs on, B's is deleted ---
check "create and start web-2 on A2 (fill 16M, a writable disk on shared storage)" \
	onA2 "$SHOAL" vm create -f <(spec web-2 "fill $A 16M 7; echo filled; shell" "\"disks\": [{\"path\": \"$TMP/shared/ack.img\"}]") --start
onA2 wait_console_long web-2 "shoal>" || fail "web-2 reaches its shell" "$(onA2 "$SHOAL" console web-2 --show-log | tail -c 300)"
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
onA2 type_console web-2 "verify $A 16M 7; vblk 64 5; vblk-verify 64 5"$'\r'
onA2 wait_console_long web-2 "vblk-verify ok sectors=64 seed=5" ||
	fail "on A2 web-2 writes its disk" "$(onA2 "$SHOAL" console web-2 --show-log | tail -c 400)"
check "on A2 web-2 verifies its memory and wrote and read its disk" \
	onA2 console_has web-2 "verify ok sum="
check "stop and delete web-2 on A2" onA2 "$SHOAL" vm delete web-2 --force

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
finish
