# tests/system/lib.sh - sourced by every system test script.
#
# A system test prints one line per check:  "PASS: name", "FAIL: name: why"
# or "SKIP: name: reason", and exits non-zero if any check failed.
# scripts/test.sh counts these lines.  Scripts named slow_*.sh only run in
# the full suite (scripts/test.sh all), not in the fast one.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SHOAL=$BUILD/shoal
GUEST=$BUILD/shoal-guest
T_FAILED=0
TMP=$(mktemp -d /tmp/shoal-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# SHOAL_TEST_STAMP=1 ends each PASS and FAIL line with the seconds since
# the script began ("[+12.3 s]"), to find where a slow script spends them.
T_START=$EPOCHREALTIME
# (Without it no subshell is made: ${VAR:+...} expands only when set.)
t_stamp() { awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf " [+%.1f s]", b - a }'; }
pass() { echo "PASS: $1${SHOAL_TEST_STAMP:+$(t_stamp)}"; }
fail() { echo "FAIL: $1${2:+: $2}${SHOAL_TEST_STAMP:+$(t_stamp)}"; T_FAILED=1; }
skip() { echo "SKIP: $1: $2"; }
# check NAME CMD...: PASS if CMD exits 0, FAIL otherwise; returns 1 then,
# so that `check ... || { what to print on failure; }` prints it.
check() { local n=$1; shift; if "$@"; then pass "$n"; else fail "$n" "command failed: $*"; return 1; fi; }
finish() { exit $T_FAILED; }

# jq 1.6 exits 0 under -e (--exit-status) when its input holds no value
# at all, so `curl ... | jq -e CHECK` would pass on a daemon that answered
# nothing, and `jq -e CHECK FILE` on an empty file.  Here -e that prints
# nothing is a failure (status 4, as jq 1.7 has it).  Exported: checks run
# it under `bash -c` too.
jq() {
	local a e=0 out rc
	for a in "$@"; do
		case $a in
		--exit-status) e=1 ;;
		--*) ;;
		-[a-zA-Z]*) [[ $a == *e* ]] && e=1 ;;
		esac
	done
	[ $e = 0 ] && { command jq "$@"; return; }
	out=$(command jq "$@"); rc=$?
	if [ $rc = 0 ] && [ -z "$out" ]; then
		echo "jq: -e: no value in its input" >&2
		return 4
	fi
	[ -n "$out" ] && printf '%s\n' "$out"
	return $rc
}
export -f jq

# require_kvm NAME: end the script with a SKIP where /dev/kvm is missing
# or not usable (scripts/kvm-box.sh --usable: the kvm_pvm back end is not)
# (the scripts marked "# tier: kvm" need it), saying how to run it anyway.
require_kvm() {
	local why
	why=$("$ROOT/scripts/kvm-box.sh" --usable 2>&1) && return 0
	skip "$1" "${why#kvm-box: }; run it in the KVM box: scripts/kvm-box.sh -- bash tests/system/$(basename "$0") (scripts/test.sh does that by itself)"
	exit 0
}
