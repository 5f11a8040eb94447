#!/bin/bash
# cli_consistency.sh - the CLI behaves the same in every command (issue 11,
# "A consistent CLI"): `--help` works on every verb and every `shoal img`
# verb (exit 0, a usage line on stdout); `--output json` works on the
# commands that print without a daemon (version, cpu-templates) and an
# unknown --output value is refused; one size parser: "0100M" is decimal,
# "1GiB" is taken by img create as by run --memory, and a bare --memory
# counts MiB. No KVM needed.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] || { fail "build" "build/shoal missing"; finish; }
cd "$TMP" || exit 1

# every verb the top-level help lists, and every img verb its help lists
verbs=$("$SHOAL" help | awk '/^commands:/{on=1; next} on && !NF {exit} on {print $1}')
[ -n "$verbs" ] || fail "verbs listed" "shoal help printed no verbs"
for v in $verbs; do
	[ "$v" = help ] && continue
	out=$("$SHOAL" "$v" --help 2>&1); rc=$?
	if [ $rc -eq 0 ] && grep -qi "usage" <<<"$out"; then pass "$v --help"
	else fail "$v --help" "exit $rc: $(head -1 <<<"$out")"; fi
done
imgverbs=$("$SHOAL" img help | awk '/^  [a-z]+ /{print $1}' | grep -v -- '^-')
[ "$(wc -w <<<"$imgverbs")" -ge 10 ] || fail "img verbs listed" "only: $imgverbs"
for v in $imgverbs; do
	out=$("$SHOAL" img "$v" --help 2>&1); rc=$?
	if [ $rc -eq 0 ] && grep -q "^usage: shoal img $v" <<<"$out"; then pass "img $v --help"
	else fail "img $v --help" "exit $rc: $(head -1 <<<"$out")"; fi
done

# --output json where a command prints
v=$("$SHOAL" version --output json | jq -r .version) && [ -n "$v" ] && [ "$v" != null ] &&
	pass "version --output json ($v)" || fail "version --output json"
[ "$("$SHOAL" version)" = "shoal $v" ] && pass "version text agrees" || fail "version text agrees"
n=$("$SHOAL" cpu-templates -o json | jq 'length') && [ "$n" -ge 3 ] &&
	pass "cpu-templates --output json ($n templates)" || fail "cpu-templates --output json"
[ "$("$SHOAL" cpu-templates -o json | jq -r '.[0].name')" = "$("$SHOAL" cpu-templates | awk 'NR==2{print $1}')" ] &&
	pass "cpu-templates json and table agree" || fail "cpu-templates json and table agree"
for c in version cpu-templates; do
	out=$("$SHOAL" $c --output yaml 2>&1); rc=$?
	[ $rc -eq 64 ] && grep -q "yaml" <<<"$out" && pass "$c --output yaml refused (64)" ||
		fail "$c --output yaml refused" "exit $rc: $out"
	out=$("$SHOAL" $c stray 2>&1); rc=$?
	[ $rc -eq 64 ] && pass "$c stray argument refused (64)" || fail "$c stray argument refused" "exit $rc"
done

# one size parser
check "img create 1GiB" "$SHOAL" img create -f qcow2 a.qcow2 1GiB
[ "$("$SHOAL" img info --output json a.qcow2 | jq '."virtual-size"')" = $((1 << 30)) ] &&
	pass "1GiB is 2^30 bytes" || fail "1GiB is 2^30 bytes"
check "img create 0100M" "$SHOAL" img create -f raw b.raw 0100M
[ "$(stat -c %s b.raw)" = $((100 << 20)) ] && pass "0100M is decimal (100 MiB)" ||
	fail "0100M is decimal" "size $(stat -c %s b.raw)"
mem() { "$SHOAL" run --kernel "$GUEST" --memory "$1" --print-config 2>&1 | jq -r .memory; }
[ "$(mem 512)" = $((512 << 20)) ] && pass "run --memory 512 is 512 MiB" ||
	fail "run --memory 512 is 512 MiB" "$(mem 512)"
[ "$(mem 0100M)" = $((100 << 20)) ] && pass "run --memory 0100M is 100 MiB" ||
	fail "run --memory 0100M" "$(mem 0100M)"
[ "$(mem 1GiB)" = $((1 << 30)) ] && pass "run --memory 1GiB" || fail "run --memory 1GiB" "$(mem 1GiB)"
out=$("$SHOAL" run --kernel "$GUEST" --memory 12Q 2>&1); rc=$?
[ $rc -eq 64 ] && grep -q "12Q" <<<"$out" && pass "run --memory 12Q refused naming it" ||
	fail "run --memory 12Q refused" "exit $rc: $out"
finish
