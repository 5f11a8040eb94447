#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# daemon_migrate_restart.sh - the destination daemon is killed and started
# again while a live migration is coming in (docs/daemon.md, "Restarting
# shoald"; src/host/supervisor.c, reattach; migration.c,
# host_migrate_incoming_reattach):
#   - daemon A on A's network, daemon B over HTTPS with a token in its own
#     namespace (as daemon_migrate.sh); web-1 fills 24M and migrates to B
#     with a 1 MiB/s cap, so that its stream lasts some 25 s;
#   - as the stream goes, B is killed (SIGKILL) and started again.  The
#     incoming VMM is its monitor's child, not B's, and the stream goes
#     from A's relay to that VMM, not through B's API, so it goes on;
#   - the restarted B reads the migration back from its database (the VMM's
#     --incoming, kept until the stream completes): web-1 is "starting",
#     busy "incoming", and B sees it through as if it had never stopped:
#       - cancelled from A: B removes its half-made web-1 (migration-failed,
#         deleted), and web-1 runs on on A;
#       - not cancelled: the stream completes, B records web-1 started
#         (migrated_in) and running, A's answer is 200 and its record goes,
#         and at B the guest verifies its 24M;
#   - B restarted once more finds web-1 an ordinary running VM: it is not
#     handed to the incoming thread again.
# Before this, a restarted B left web-1 "starting" for good: no thread saw
# its stream end, and A's answer never found it running.
#
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
require_kvm daemon_migrate_restart
command -v openssl >/dev/null || { skip daemon_migrate_restart "openssl missing"; finish; }

mig_two_hosts mrs 10.81.0

mkdir -p "$TMP/a" "$TMP/b"
mig_daemon a inA SHOAL_MRS_TEST=a || { fail "daemon A starts"; finish; }
BARGS=(--listen "$BLISTEN:$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"
	--token-file "$TMP/token")
mig_daemon b inB SHOAL_MRS_TEST=b "${BARGS[@]}" || { fail "daemon B starts"; finish; }
pass "daemon A and daemon B (HTTPS on $URL) start"

onA() { SHOAL_SOCKET=$SA "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }
field() { curl -s --unix-socket "$1" "http://d/v1/vms/$2" | jq -r "$3"; }
status_of() { curl -s -o /dev/null -w '%{http_code}' --unix-socket "$1" "http://d/v1/vms/$2"; }
events_of() { curl -s --unix-socket "$1" "http://d/v1/events?vm=$2" | jq -c '[.events[].type]'; }
TO=(--to "$URL" --to-token-file "$TMP/token" --to-cacert "$TMP/cert.pem")
A=0x2000000
SPEC_MEMORY=128M

check "create and start web-1 on A (fill 24M)" \
	onA "$SHOAL" vm create -f <(spec web-1 "fill $A 24M 7; echo filled; shell") --start
onA wait_console_long web-1 "shoal>" ||
	fail "web-1 reaches its shell" "$(onA "$SHOAL" console web-1 --show-log | tail -c 300)"

# restart_b_midstream OUT: migrate web-1 to B at 1 MiB/s in the
# background (its output into OUT, its pid in $mig); once its stream is
# under way (B has web-1 starting, A's VMM sends), kill B and start it
# again.  The stream lasts some 25 s; B starts again within a few.
restart_b_midstream() {
	local bpid
	onA "$SHOAL" vm migrate web-1 "${TO[@]}" --bandwidth 1M -o json >"$1" 2>&1 &
	mig=$!
	for _ in $(seq 600); do
		[ "$(field "$SA" web-1 '.migration.state // "-"')" = active ] &&
			[ "$(field "$SB" web-1 .state)" = starting ] && break
		sleep 0.05
	done
	check "the migration of web-1 is under way (A's VMM sends), B has it starting" bash -c \
		"[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-1 | jq -r '.migration.state')\" = active ] &&
		 [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -r .state)\" = starting ]"
	bpid=$(pgrep -f -- "--state-dir $TMP/b ")
	kill -9 $bpid
	for _ in $(seq 100); do kill -0 $bpid 2>/dev/null || break; sleep 0.05; done
	mig_daemon b inB SHOAL_MRS_TEST=b "${BARGS[@]}" || { fail "daemon B restarts"; finish; }
}

# --- B restarted mid-stream, then the migration cancelled ---
restart_b_midstream "$TMP/cancel.out"
check "B, killed and started again mid-stream, has web-1 starting, busy incoming, and says it sees it through" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -c '[.state, .busy]')\" = '[\"starting\",\"incoming\"]' ] &&
	 grep -q 'web-1: reattached still coming in by a live migration' '$TMP/b.log'" ||
	{ curl -s --unix-socket "$SB" http://d/v1/vms/web-1; tail -n 5 "$TMP/b.log"; }
out=$(onA "$SHOAL" vm migrate web-1 --cancel 2>&1); rc=$?
wait $mig; mrc=$?
check "cancelled from A: the migration fails, saying cancelled" bash -c \
	"[ $rc = 0 ] && [ $mrc != 0 ] && grep -q cancelled '$TMP/cancel.out'" || { echo "$out"; cat "$TMP/cancel.out"; }
for _ in $(seq 200); do [ "$(status_of "$SB" web-1)" = 404 ] && break; sleep 0.05; done
check "the restarted B removed its half-made web-1 (migration-failed, deleted)" bash -c \
	"[ $(status_of "$SB" web-1) = 404 ] && jq -e '.[-2:] == [\"migration-failed\", \"deleted\"]' <<<'$(events_of "$SB" web-1)' >/dev/null" ||
	{ events_of "$SB" web-1; curl -s --unix-socket "$SB" http://d/v1/vms/web-1; }
check "web-1 runs on on A" test "$(field "$SA" web-1 .state)" = running

# --- B restarted mid-stream, and the migration completes ---
restart_b_midstream "$TMP/done.json"
check "B restarted again mid-stream has web-1 starting, busy incoming" \
	test "$(field "$SB" web-1 '[.state, .busy] | @csv')" = '"starting","incoming"'
wait $mig; rc=$?
check "web-1 moves to B all the same: 200, B says running" bash -c \
	"[ $rc = 0 ] && jq -e '.destination_state == \"running\"' '$TMP/done.json' >/dev/null" ||
	{ cat "$TMP/done.json"; tail -n 20 "$TMP/a.log"; tail -n 20 "$TMP/b.log"; }
check "A's record of web-1 is gone" test "$(status_of "$SA" web-1)" = 404
check "B recorded web-1 started (migrated_in) after its reattach, and it runs" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' 'http://d/v1/events?vm=web-1' | jq -c '[.events[] | select(.type == \"reattached\" or .type == \"started\") | [.type, .detail.migrated_in]] | .[-2:]')\" = '[[\"reattached\",null],[\"started\",true]]' ] &&
	 [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -c '[.state, .busy]')\" = '[\"running\",null]' ]" ||
	curl -s --unix-socket "$SB" 'http://d/v1/events?vm=web-1' | jq -c '[.events[] | [.type, .detail]]'
onB type_console web-1 "verify $A 24M 7"$'\r'
onB wait_console_long web-1 "verify ok sum=" ||
	fail "on B web-1 verifies its memory" "$(onB "$SHOAL" console web-1 --show-log | tail -c 400)"
check "on B web-1's memory is A's: its 24M pattern verifies (nothing lost)" \
	onB console_has web-1 "len=25165824 seed=7"

# --- B restarted once more: web-1 is an ordinary running VM now ---
bpid=$(pgrep -f -- "--state-dir $TMP/b ")
kill -9 $bpid
for _ in $(seq 100); do kill -0 $bpid 2>/dev/null || break; sleep 0.05; done
mig_daemon b inB SHOAL_MRS_TEST=b "${BARGS[@]}" || { fail "daemon B restarts"; finish; }
check "B restarted a third time reattaches web-1 running, not as an incoming migration" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -c '[.state, .busy]')\" = '[\"running\",null]' ] &&
	 [ \$(grep -c 'web-1: reattached still coming in' '$TMP/b.log') = 2 ]"
check "stop and delete web-1 on B" onB "$SHOAL" vm delete web-1 --force
finish
