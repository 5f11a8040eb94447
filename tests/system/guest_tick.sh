#!/bin/bash
# guest_tick.sh - the test guest's ticks (guest/work.c), which
# bench/migrate.sh times on the host for the downtime as the guest sees
# it: `tick US SECONDS` and `dirty ... tick=US` write one byte, 0x80 | a
# 7-bit sequence number, on COM1 per interval, in sequence from 0, as many
# as their report's ticks=N says; `tick` stops once a byte waits on its
# input and leaves it to the shell; without tick= dirty writes no tick
# (its report as before); `allcpus` refuses ticks, and bad intervals are
# refused; bench/tickstamp passes the console through and stamps each
# tick, in order, once.  No timing is checked.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

TS=$BUILD/bench/tickstamp
[ -x "$SHOAL" ] && [ -f "$GUEST" ] && [ -x "$TS" ] ||
	{ fail "build" "build/shoal, build/shoal-guest or build/bench/tickstamp missing"; finish; }
require_kvm "guest ticks"

# run NAME CMDLINE [INPUT]: the guest on a stdio console through tickstamp
# into $TMP/NAME.log and $TMP/NAME.stamps; shoal's status in $TMP/NAME.rc.
run() {
	printf '%s' "${3-}" | "$SHOAL" run --kernel "$GUEST" --cmdline "$2" --memory 256M --cpus 2 \
		--console stdio --timeout 60 2>"$TMP/$1.err" | "$TS" "$TMP/$1.log" "$TMP/$1.stamps"
	echo "${PIPESTATUS[1]}" >"$TMP/$1.rc"
}

# ticks NAME WORD: the ticks in $TMP/NAME.log are 0, 1, 2... (mod 128), as
# many as the "shoal-guest: WORD ..." report's ticks=N (N > 0), and the
# stamps the same sequence with times that never go back.  Says why not.
ticks() {
	python3 - "$TMP/$1.log" "$TMP/$1.stamps" "$2" <<'PY'
import re, sys
con = open(sys.argv[1], "rb").read()
seq = [b & 0x7f for b in con if b >= 0x80]
m = re.search(rb"shoal-guest: " + sys.argv[3].encode() + rb".* ticks=(\d+) max_gap_us=\d+ cost_ns=(\d+)", con)
if not m: sys.exit(f"no '{sys.argv[3]} ... ticks=N max_gap_us=G cost_ns=C' report: {con[-300:]!r}")
n = int(m.group(1))
if n == 0 or len(seq) != n: sys.exit(f"report says {n} ticks, the console has {len(seq)}")
bad = [i for i, s in enumerate(seq) if s != i % 128]
if bad: sys.exit(f"tick {bad[0]} is {seq[bad[0]]}, not {bad[0] % 128}")
st = [l.split() for l in open(sys.argv[2])]
if [int(s) for s, _ in st] != seq: sys.exit(f"stamps: {len(st)} lines, not the console's {n} ticks in order")
t = [int(ns) for _, ns in st]
if any(b < a for a, b in zip(t, t[1:])): sys.exit("stamps go back in time")
PY
}

# tick for a second: the ticks, then the report; the shell never ran
run tick "tick 1000 1; exit 0"
why=$(ticks tick "tick us=1000 seconds=1 stopped=time") && [ "$(cat "$TMP/tick.rc")" = 0 ] &&
	pass "tick 1000 1: ticks 0, 1, 2... as many as reported, stamped by tickstamp in order" ||
	fail "tick 1000 1" "status $(cat "$TMP/tick.rc"); $why; $(tail -c 300 "$TMP/tick.err")"
grep -q "^shoal-guest: ready cpus=2" "$TMP/tick.log" && grep -q "shoal-guest: exit code=0" "$TMP/tick.log" &&
	pass "tickstamp passes the console's text through" || fail "tickstamp's log" "$(tail -c 300 "$TMP/tick.log")"

# dirty with ticks, and without (no tick byte, the report as before)
run dirty "dirty 10 1 0x2000000 16M tick=1000; exit 0"
why=$(ticks dirty "dirty pages=[0-9]+ seconds=1 rate_mib_s=10 addr=0x2000000 len=16777216 pattern=seq") &&
	pass "dirty ... tick=1000: ticks in sequence while it dirties, as many as reported" ||
	fail "dirty tick=1000" "$why"
run plain "dirty 10 1 0x2000000 16M; exit 0"
if grep -aq "shoal-guest: dirty pages=[0-9]* seconds=1 rate_mib_s=10 addr=0x2000000 len=16777216 pattern=seq$" \
	"$TMP/plain.log" && ! [ -s "$TMP/plain.stamps" ]; then
	pass "dirty without tick=: no tick byte, its report unchanged"
else
	fail "dirty without tick=" "$(wc -l <"$TMP/plain.stamps") ticks; $(grep -a 'dirty pages' "$TMP/plain.log")"
fi

# input waiting stops tick (600 s, past shoal's 60 s timeout otherwise); the
# shell then reads the line, so the guest exits 4
run input "tick 1000 600; shell" $'\rexit 4\r'
if [ "$(cat "$TMP/input.rc")" = 4 ] && grep -aq "shoal-guest: tick us=1000 seconds=600 stopped=input ticks=[1-9]" "$TMP/input.log"; then
	pass "tick stops once input waits and leaves it to the shell (exit 4)"
else
	fail "tick stopped by input" "status $(cat "$TMP/input.rc"); $(grep -a 'tick us' "$TMP/input.log")"
fi

# refusals: ticks on other CPUs, intervals out of range
run bad "allcpus dirty 1 1 tick=1000; allcpus tick 1000 1; tick 0 1; tick 20000000 1; dirty 1 1 tick=x; tick 1000; exit 0"
for want in "error allcpus: dirty: ticks are the boot CPU's alone (the console)" \
	"error allcpus: tick: ticks are the boot CPU's alone (the console)" \
	"error tick: tick interval out of range (1 us to 10 s): 0" \
	"error tick: tick interval out of range (1 us to 10 s): 20000000" \
	"error dirty: bad number: x" "error tick: usage: US SECONDS"; do
	grep -aqF "shoal-guest: $want" "$TMP/bad.log" && pass "refused: $want" || fail "refused: $want" "$(tail -c 400 "$TMP/bad.log")"
done
[ -s "$TMP/bad.stamps" ] && fail "refused commands wrote no tick" "$(wc -l <"$TMP/bad.stamps") ticks" ||
	pass "refused commands wrote no tick"
finish
