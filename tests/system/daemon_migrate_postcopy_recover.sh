#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# daemon_migrate_postcopy_recover.sh - a post-copy migration between two
# shoald whose connection drops after the switch is recovered by the
# daemons (docs/migration.md, "Post-copy"; src/host/migration.c):
#   - daemon A serves its Unix socket; daemon B also HTTPS with a token,
#     each with its own state directory and, where `ip netns` works, its
#     own network namespace joined by a veth pair (as daemon_migrate.sh):
#     the stream goes over TCP in TLS 1.3;
#   - a test-guest VM on A fills pattern A (seed 7), then, as the
#     migration starts, pattern B (seed 9) and dirties 8 MiB as fast as it
#     runs, so that `shoal vm migrate --bandwidth 8M --postcopy-after 1`
#     switches to post-copy with many pages still at A;
#   - a second source that connects to B's VMM while the stream comes in
#     is refused at once (SHOALNAK, "a migration is already coming in"),
#     under the VMM's seccomp filters and jail;
#   - A cuts the connection once pages flow after the switch
#     (SHOAL_TEST_MIGRATE_CUT_POSTCOPY=1 in A's environment, as soon as
#     its pages flow: shutdown() of
#     its TCP connection, both ends see it end; the box kernel has no
#     nft reject or sock_diag destroy to cut it from outside);
#   - the migration still completes: the answer says post-copy, with the
#     pages on demand and pushed at least those missing at the switch (a
#     page in flight at the drop goes twice); A recorded
#     "migration-paused" then "migration-resumed" then "migrated", and its
#     record is gone; B's record is running, B's VMM logged the drop and
#     its wait for the source (recover-timeout=120, with accept-timeout=60),
#     and its guest, told to, verifies both patterns there (nothing lost);
#   - a second source daemon, A2, kills its VMM once post-copy's pages
#     flow (SHOAL_TEST_MIGRATE_KILL_VMM with the same hook): the pages B
#     still lacked are gone, so the migration fails saying the VM is lost,
#     and A2's record says exited (migration-failed with vm_lost).
#
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
require_kvm daemon_migrate_postcopy_recover
command -v openssl >/dev/null || { skip daemon_migrate_postcopy_recover "openssl missing"; finish; }

mig_two_hosts pcr 10.78.0

mkdir -p "$TMP/a" "$TMP/b"
# A cuts its post-copy connection once (the test's hook in src/host/migration.c)
# as soon as its pages flow, or PCR_CUT pages later (PCR_CUT=256 and 64
# pass too).  A cut that takes the go-ahead (SHOALRUN) with it, still in
# A's relay, is recovered the same way: B runs the VM and waits for A.
mig_daemon a inA SHOAL_TEST_MIGRATE_CUT_POSTCOPY=${PCR_CUT:-1} || { fail "daemon A starts"; finish; }
mig_daemon a2 inA "SHOAL_TEST_MIGRATE_CUT_POSTCOPY=1 SHOAL_TEST_MIGRATE_KILL_VMM=1" || { fail "daemon A2 starts"; finish; }
mig_daemon b inB SHOAL_PCR_TEST=b --listen "$BLISTEN:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
	--token-file "$TMP/token" || { fail "daemon B starts"; finish; }
pass "daemons A and A2 (with the test's cut) and daemon B (HTTPS on $URL) start"

onA() { SHOAL_SOCKET=$SA "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }
TO=(--to "$URL" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem")

A=0x2000000 B=0x3000000 C=0x5000000
SPEC_MEMORY=128M
check "create and start web-1 on A (pattern A, then B and 8 MiB dirtied for 15 s as it moves)" \
	onA "$SHOAL" vm create -f <(spec web-1 "fill $A 16M 7; echo filled; fill $B 16M 9; dirty 0 15 $C 8M; verify $B 16M 9; verify $A 16M 7; shell") --start
onA wait_console_long web-1 "filled" || fail "web-1 filled pattern A" "$(onA "$SHOAL" console web-1 --show-log | tail -c 300)"
onA "$SHOAL" vm migrate web-1 "${TO[@]}" --bandwidth 8M --postcopy-after 1 -o json >"$TMP/pc.json" 2>"$TMP/err" &
mpid=$!
# A second source that connects to B's VMM while the stream comes in is
# refused at once (its seccomp filter and jail included), and the
# migration goes on.
for _ in $(seq 300); do [ "$(field "$SA" web-1 .migration.state)" = active ] && break; sleep 0.1; done
baddr=$(curl -s --unix-socket "$SB" 'http://d/v1/events?vm=web-1' | jq -r '[.events[] | select(.type == "created")][0].detail.address // empty')
port=${baddr##*:}
second=$(inA timeout 20 python3 - "$BADDR" "$port" <<'PY' 2>&1
import socket, struct, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"SHOALTLS")
got = b""
while len(got) < 12 or len(got) < 12 + struct.unpack("<I", got[8:12])[0]:
    b = c.recv(4096)
    if not b:
        break
    got += b
print(got[:8].decode(errors="replace"), got[12:].decode(errors="replace"))
PY
)
check "a second source connecting to B's VMM mid-migration is refused at once: SHOALNAK, a migration is already coming in" \
	bash -c '[[ "$1" == "SHOALNAK incoming migration: a migration is already coming in on tcp:"*"this connection is refused" ]]' _ "$second" || echo "  $baddr: $second"
wait $mpid; rc=$?
out=$(cat "$TMP/pc.json")
jq -r '"  post-copy: \(.rounds) rounds, downtime \(.downtime_ms) ms, total \(.total_ms) ms, \(.postcopy_pages) pages missing, \(.postcopy_demand_pages) on demand, \(.postcopy_pushed_pages) pushed"' "$TMP/pc.json" 2>/dev/null
check "web-1 moves to B with post-copy though its connection was cut: on demand + pushed >= missing" bash -c \
	"[ $rc = 0 ] && jq -e '.postcopy == true and .postcopy_pages > 0 and .postcopy_demand_pages + .postcopy_pushed_pages >= .postcopy_pages and .destination_state == \"running\"' '$TMP/pc.json' >/dev/null" ||
	{ cat "$TMP/err"; tail -n 20 "$TMP/a.log"; }
check "A cut post-copy's connection (the test's hook)" grep -q "cutting post-copy's connection" "$TMP/a.log"
ev=$(curl -s --unix-socket "$SA" 'http://d/v1/events?vm=web-1' |
	jq -c '[.events[].type | select(. == "migration-paused" or . == "migration-resumed" or . == "migrated" or . == "migration-failed")]')
check "A's events: migration-paused, migration-resumed, migrated" test "$ev" = '["migration-paused","migration-resumed","migrated"]' || echo "  $ev"
check "the migration-paused event names the destination and why" bash -c \
	"curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-1' | jq -e '[.events[] | select(.type == \"migration-paused\")][0].detail | (.to == \"$URL\") and (.error | length > 0) and .recover_timeout_s > 0' >/dev/null"
check "web-1 is gone from A and runs on B" bash -c "[ $(status_of "$SA" web-1) = 404 ] && [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -r .state)\" = running ]"
# B's VMM logs warnings under shoald: the drop it waited through
if grep -q "post-copy: the connection to the source dropped.*waiting up to 120 s for the source to reconnect" \
	"$TMP/b/vms/web-1/vmm.log"; then
	pass "B's VMM saw the connection drop and waited for the source to reconnect"
else
	fail "B's VMM saw the connection drop and waited" "$(tail -n 15 "$TMP/b/vms/web-1/vmm.log" 2>&1)"
fi
check "B's VMM was started with recover-timeout and accept-timeout" bash -c \
	"pgrep -af -- '$TMP/b/vms/web-1/' | grep -q 'recover-timeout=120,accept-timeout=60'"
# The guest verifies both patterns once more at B, told to now: its own
# verifies after the dirtying may have run at A before the switch (a slow
# box makes the migration outlast the 15 s of dirtying), and then B's
# console has nothing of them.
onB type_console web-1 "verify $B 16M 9; verify $A 16M 7"$'\r'
both_ok() {      # the guest at B verified pattern B (seed 9) and pattern A (seed 7)
	local log
	log=$(onB "$SHOAL" console web-1 --show-log 2>/dev/null)
	grep -qE "verify ok sum=0x[0-9a-f]+ addr=$B len=16777216 seed=9" <<<"$log" &&
		grep -qE "verify ok sum=0x[0-9a-f]+ addr=$A len=16777216 seed=7" <<<"$log"
}
for _ in $(seq 300); do both_ok && break; onB console_has web-1 "verify bad" && break; sleep 0.2; done
if both_ok && ! onB console_has web-1 "verify bad"; then
	pass "on B the guest ran on after the recovered post-copy and verifies both patterns"
else
	fail "on B the guest verifies both patterns" "$(onB "$SHOAL" console web-1 --show-log | tail -c 400
		field "$SB" web-1 .state; tail -n 12 "$TMP/b/vms/web-1/vmm.log")"
fi
check "stop and delete web-1 on B" onB "$SHOAL" vm delete web-1 --force

# A2's VMM is killed past the switch (the hook, with SHOAL_TEST_MIGRATE_KILL_VMM):
# the pages B lacked died with it, so the VM is lost, and A2 says so
SA2=$TMP/a2/shoald.sock
onA2() { SHOAL_SOCKET=$SA2 "$@"; }
check "create and start web-2 on A2 (as web-1)" \
	onA2 "$SHOAL" vm create -f <(spec web-2 "fill $A 16M 7; echo filled; fill $B 16M 9; dirty 0 15 $C 8M; shell") --start
onA2 wait_console_long web-2 "filled" || fail "web-2 filled pattern A" "$(onA2 "$SHOAL" console web-2 --show-log | tail -c 300)"
out=$(onA2 "$SHOAL" vm migrate web-2 "${TO[@]}" --bandwidth 8M --postcopy-after 1 2>&1); rc=$?
check "the migration of web-2 fails: A2's VMM died past the switch, the VM is lost, and it says so" bash -c \
	'[ "$1" != 0 ] && [[ "$2" == *"post-copy migration to"*"failed: its VMM here died ("*") after the switch, and with it the pages the destination still lacked: the VM is lost"* ]]' _ "$rc" "$out" ||
	{ echo "  rc=$rc: $out"; tail -n 20 "$TMP/a2.log"; }
check "A2 killed its VMM past the switch (the test's hook)" grep -q "killing our VMM (process group [0-9]*) past post-copy's switch" "$TMP/a2.log"
lost=$(curl -s --unix-socket "$SA2" 'http://d/v1/events?vm=web-2' | jq -c '[.events[] | select(.type == "migration-failed")] | last | .detail.vm_lost')
check "A2's record of web-2 says exited, not busy; its migration-failed event has vm_lost" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA2' http://d/v1/vms/web-2 | jq -c '[.state, .busy]')\" = '[\"exited\",null]' ] && [ '$lost' = true ]" ||
	echo "  $lost"
check "delete web-2 on A2, and B's copy, left to its recover-timeout" bash -c \
	"SHOAL_SOCKET='$SA2' '$SHOAL' vm delete web-2 >/dev/null && SHOAL_SOCKET='$SB' '$SHOAL' vm delete web-2 --force >/dev/null"
finish
