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
#   - the source daemon A killed mid-stream: to B's API socket (two
#     daemons on one host) A's VMM has the connection itself, so its
#     stream goes on; web-2 and web-3 have restart "always":
#       - A started again while the stream goes reattaches web-2 running,
#         busy migrate, follows its VMM's migration (vms.outgoing) to its
#         end, and removes its record (migrated, reattached), never
#         restarting it; at B the guest verifies its 24M;
#       - A started again only after its VMM moved web-3 and exited reads
#         the VMM's exit file (shoal run --exit-file), which says it
#         migrated web-3: the record goes (exited, migrated with
#         reattached), and web-3 is never restarted (no second copy);
#       - the same with web-5, its VMM's exit file emptied as a VMM killed
#         by a signal leaves it: whether it moved is not known, so A keeps
#         the record exited, saying it may run at B, and does not restart
#         it;
#       - A started again while web-4's stream goes, and the migration
#         cancelled there: A passes the cancel on to its VMM, web-4 runs
#         on at A (migration-failed, reattached) and verifies its 24M, and
#         B removes its copy.
# Before this, a restarted B left web-1 "starting" for good: no thread saw
# its stream end, and A's answer never found it running; and a restarted
# A took web-2's and web-3's VMMs' clean exits for the guests' own and
# restarted them, with the VM already running at B, and could not cancel
# web-4's migration.
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
	mig_kill b
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
mig_kill b
mig_daemon b inB SHOAL_MRS_TEST=b "${BARGS[@]}" || { fail "daemon B restarts"; finish; }
check "B restarted a third time reattaches web-1 running, not as an incoming migration" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-1 | jq -c '[.state, .busy]')\" = '[\"running\",null]' ] &&
	 [ \$(grep -c 'web-1: reattached still coming in' '$TMP/b.log') = 2 ]"
check "stop and delete web-1 on B" onB "$SHOAL" vm delete web-1 --force

# --- the source daemon A killed mid-stream ---
# To B's API socket (two daemons on one host) A's VMM is handed the
# connection itself, so its stream goes on without A.  web-2 and web-3
# have restart "always": a VM that moved must not start again here.
for n in 2 3 4 5; do
	check "create and start web-$n on A (fill 24M, restart always)" \
		onA "$SHOAL" vm create -f <(spec web-$n "fill $A 24M 7; echo filled; shell" '"restart": "always"') --start
	onA wait_console_long web-$n "shoal>" ||
		fail "web-$n reaches its shell" "$(onA "$SHOAL" console web-$n --show-log | tail -c 300)"
done
a_migrates() {      # NAME: to B's socket at 1 MiB/s, in the background; killed once under way
	onA "$SHOAL" vm migrate "$1" --to "$SB" --bandwidth 1M >/dev/null 2>&1 &
	for _ in $(seq 600); do
		[ "$(field "$SA" "$1" '.migration.state // "-"')" = active ] &&
			[ "$(field "$SB" "$1" .state)" = starting ] && break
		sleep 0.05
	done
	check "the migration of $1 to B's socket is under way" test "$(field "$SB" "$1" .state)" = starting
	mig_kill a
}

# A started again while its VMM still streams: it follows it to the end
a_migrates web-2
mig_daemon a inA SHOAL_MRS_TEST=a || { fail "daemon A restarts"; finish; }
check "A, killed and started again mid-stream, has web-2 running, busy migrate, following its VMM's migration" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-2 | jq -c '[.state, .busy]')\" = '[\"running\",\"migrate\"]' ] &&
	 grep -q 'web-2: reattached during its migration to $SB' '$TMP/a.log'" ||
	{ curl -s --unix-socket "$SA" http://d/v1/vms/web-2; tail -n 5 "$TMP/a.log"; }
for _ in $(seq 1200); do [ "$(status_of "$SA" web-2)" = 404 ] && break; sleep 0.05; done
check "web-2 moved: A's record goes with a migrated event (reattached), and A never restarted it" bash -c \
	"[ $(status_of "$SA" web-2) = 404 ] &&
	 curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-2' | jq -e '([.events[] | select(.type == \"restarting\")] | length == 0) and ([.events[-2:][].type] == [\"migrated\", \"deleted\"]) and .events[-2].detail.reattached == true' >/dev/null" ||
	{ events_of "$SA" web-2; tail -n 10 "$TMP/a.log"; }
for _ in $(seq 200); do [ "$(field "$SB" web-2 .state)" = running ] && break; sleep 0.05; done
onB type_console web-2 "verify $A 24M 7"$'\r'
onB wait_console_long web-2 "verify ok sum=" ||
	fail "on B web-2 verifies its memory" "$(onB "$SHOAL" console web-2 --show-log | tail -c 400)"
check "on B web-2 runs and its 24M pattern verifies" onB console_has web-2 "len=25165824 seed=7"
check "stop and delete web-2 on B" onB "$SHOAL" vm delete web-2 --force

# A started again only after its VMM moved the VM and exited: the VMM's
# exit file says it migrated, so the record goes, and it is not restarted
a_migrates web-3
for _ in $(seq 1200); do [ -e "$TMP/a/vms/web-3/exit" ] && break; sleep 0.05; done
check "meanwhile web-3 moved: B runs it, and A's VMM exited, its exit file saying it migrated" bash -c \
	"[ -e '$TMP/a/vms/web-3/exit' ] && [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-3 | jq -r .state)\" = running ] &&
	 jq -se 'length == 1 and .[0].migrated == true and .[0].status == 0' '$TMP/a/vms/web-3/vmm-exit' >/dev/null"
mig_daemon a inA SHOAL_MRS_TEST=a || { fail "daemon A restarts"; finish; }
for _ in $(seq 200); do [ "$(status_of "$SA" web-3)" = 404 ] && break; sleep 0.05; done
check "A started again removes web-3's record (exited, then migrated: reattached, B's copy running) and never restarted it" bash -c \
	"[ $(status_of "$SA" web-3) = 404 ] &&
	 curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-3' | jq -e '([.events[] | select(.type == \"restarting\")] | length == 0) and ([.events[-3:][].type] == [\"exited\", \"migrated\", \"deleted\"]) and .events[-2].detail.reattached == true and .events[-2].detail.destination_state == \"running\"' >/dev/null" ||
	{ events_of "$SA" web-3; tail -n 5 "$TMP/a.log"; }
check "delete web-3 on B" onB "$SHOAL" vm delete web-3 --force

# The same, but the VMM's exit file empty, as a VMM killed by a signal
# leaves it: whether it moved is not known, so the record stays exited,
# and it is not restarted
a_migrates web-5
for _ in $(seq 1200); do [ -e "$TMP/a/vms/web-5/exit" ] && break; sleep 0.05; done
: >"$TMP/a/vms/web-5/vmm-exit"
check "meanwhile web-5 moved: B runs it, and A's VMM exited (its exit file emptied by the test)" bash -c \
	"[ -e '$TMP/a/vms/web-5/exit' ] && [ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-5 | jq -r .state)\" = running ]"
mig_daemon a inA SHOAL_MRS_TEST=a || { fail "daemon A restarts"; finish; }
sleep 1
check "A started again has web-5 exited, saying it may run at B, and did not restart it (restart always)" bash -c \
	"curl -s --unix-socket '$SA' http://d/v1/vms/web-5 | jq -e '.state == \"exited\" and (.last_exit.reason | test(\"during its live migration to .*: it may run there now; look there before starting it here\"))' >/dev/null &&
	 curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-5' | jq -e '[.events[] | select(.type == \"restarting\")] | length == 0' >/dev/null" ||
	{ curl -s --unix-socket "$SA" http://d/v1/vms/web-5; events_of "$SA" web-5; }
check "delete web-5's record on A, and web-5 on B" bash -c \
	"SHOAL_SOCKET='$SA' '$SHOAL' vm delete web-5 && SHOAL_SOCKET='$SB' '$SHOAL' vm delete web-5 --force"

# A started again while its VMM streams, then the migration cancelled there
a_migrates web-4
mig_daemon a inA SHOAL_MRS_TEST=a || { fail "daemon A restarts"; finish; }
out=$(onA "$SHOAL" vm migrate web-4 --cancel 2>&1); rc=$?
check "A, started again mid-stream, cancels web-4's migration: 0, says cancelled" bash -c \
	"[ $rc = 0 ] && grep -q 'migration cancelled' <<<'$out'" || { echo "$out"; tail -n 5 "$TMP/a.log"; }
for _ in $(seq 200); do [ "$(status_of "$SB" web-4)" = 404 ] && break; sleep 0.05; done
check "web-4 runs on on A, not busy (migration-failed, reattached), and B removed its copy" bash -c \
	"[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-4 | jq -c '[.state, .busy]')\" = '[\"running\",null]' ] &&
	 curl -s --unix-socket '$SA' 'http://d/v1/events?vm=web-4' | jq -e '.events[-1] | .type == \"migration-failed\" and .detail.reattached == true' >/dev/null &&
	 [ $(status_of "$SB" web-4) = 404 ]" || events_of "$SA" web-4
onA type_console web-4 "verify $A 24M 7"$'\r'
onA wait_console_long web-4 "verify ok sum=" ||
	fail "on A web-4 verifies its memory" "$(onA "$SHOAL" console web-4 --show-log | tail -c 400)"
check "on A web-4's 24M pattern verifies after the cancel" onA console_has web-4 "len=25165824 seed=7"
check "stop and delete web-4 on A" onA "$SHOAL" vm delete web-4 --force
finish
