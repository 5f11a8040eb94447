#!/bin/bash
# scripts/test.sh - run Shoal's test tiers and print one closing line
# "N passed, N failed, N skipped".
#
#   scripts/test.sh fast        unit, guest and fast system tests (make test)
#   scripts/test.sh all         installs dependencies, builds, runs the fast
#                               tiers, the slow system tests (Linux guests,
#                               crash loops), the fuzzers briefly, and the
#                               sanitizer build's unit and guest tests.  This
#                               is the README's test command and CI's.
#   scripts/test.sh NAME...     the named tiers, each where it belongs (a KVM
#                               tier in the box where there is no /dev/kvm)
#   scripts/test.sh tier NAME   one tier, here, whatever it needs; what the
#                               KVM box runs inside
#
# Tiers.  The ones marked KVM need /dev/kvm:
#   unit         tests/unit cmocka binaries
#   guest        tests/guest cmocka binaries (the test guest)           KVM
#   system       tests/system/*.sh that need no KVM, slow_* excepted
#   kvm-system   tests/system/*.sh marked "# tier: kvm", slow_* excepted KVM
#   slow         slow_*.sh that need no KVM
#   kvm-slow     slow_*.sh marked "# tier: kvm" (Linux guests)          KVM
#   fuzz         every libFuzzer target for FUZZ_SECONDS each (20; 4 under
#                "all", where the fuzzers run beside a KVM box on two cores)
#   san-unit     tests/unit built with ASan+UBSan+LeakSanitizer
#   san-guest    tests/guest built with ASan+UBSan                      KVM
#
# Where the KVM tiers run.  With a usable /dev/kvm (scripts/kvm-box.sh
# --usable: real KVM, not the kvm_pvm back end) they run here, like the
# others.  Without one they run inside the KVM box (scripts/kvm-box.sh: real
# KVM under QEMU's software CPU), in 1-vCPU boxes, one per tier (two for
# kvm-system under "all"), and their counts are added to the same closing
# line, which also says how many ran in the box.  There "all" runs its
# tiers in two lanes side by side, one per host core (run_lanes).
# Only on a machine with neither /dev/kvm nor a working box are they
# skipped, each with a SKIP line that says why.  SHOAL_TEST_BOX=always
# sends them to the box even where /dev/kvm exists (to try the box);
# SHOAL_TEST_BOX=never runs them here whatever happens.
#
# Test programs: cmocka binaries are counted from their own summary; system
# scripts print PASS/FAIL/SKIP lines (tests/system/lib.sh).  A skip is
# printed with its reason and never counted as a pass.
set -u
MODE=${1:-fast}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Absolute, so tests that change directory still find the binaries.
BUILD=$(realpath -m "${BUILD:-$ROOT/build}")
SAN_BUILD=$(realpath -m "${SAN_BUILD:-$ROOT/build-san}")
export BUILD
PASSED=0; FAILED=0; SKIPPED=0
BOX_P=0; BOX_F=0; BOX_S=0
FAILS=()
TIMES=()

# already_done PROG: PROG finished in an earlier box of this tier (listed
# in $SHOAL_TEST_DONE by box_tier, which counted it then).
# SHOAL_TEST_ONLY and SHOAL_TEST_SKIP (names, space-separated) narrow a
# tier the same way: box_tier uses them to give one script its own box.
already_done() {
	local n
	n=$(basename "$1")
	if [ -n "${SHOAL_TEST_ONLY:-}" ]; then case " $SHOAL_TEST_ONLY " in *" $n "*) ;; *) return 0 ;; esac; fi
	case " ${SHOAL_TEST_SKIP:-} " in *" $n "*) return 0 ;; esac
	[ -n "${SHOAL_TEST_DONE:-}" ] && [ -r "$SHOAL_TEST_DONE" ] && grep -qxF "$n" "$SHOAL_TEST_DONE"
}

# claimed_elsewhere SCRIPT: with $SHOAL_TEST_CLAIM (a folder shared by the
# two lanes of "all", see run_lanes), each script of a tier both lanes run
# goes to whichever lane asks first: the lane that makes the folder
# CLAIM/NAME (mkdir is atomic, over the box's 9p too) runs it, and writes
# its lane's name there; the other lane passes it by.
claimed_elsewhere() {
	[ -n "${SHOAL_TEST_CLAIM:-}" ] || return 1
	local n
	n=$(basename "$1")
	mkdir "$SHOAL_TEST_CLAIM/$n" 2>/dev/null || return 0
	echo "${SHOAL_TEST_LANE:-}" >"$SHOAL_TEST_CLAIM/$n/lane"
	return 1
}

# run_cmocka BIN: run one cmocka binary and add its counts.
run_cmocka() {
	local bin=$1 out p f s t0=$SECONDS
	already_done "$bin" && return 0
	out=$(timeout "${SHOAL_TEST_CMOCKA_TIMEOUT:-900}" "$bin" 2>&1); local rc=$?
	echo "$out" | grep -E '^\[ *(RUN|  OK|  FAILED|  SKIPPED|  PASSED|  ERROR) *\]|SKIP|skip' | sed "s|^|  $(basename "$bin"): |" | grep -v ' RUN ' || true
	p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	s=$(echo "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
	p=${p:-0}; f=${f:-0}; s=${s:-0}
	# A crash or a missing summary is a failure, whatever was printed.
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$out" | tail -20; fi
	[ "$f" -gt 0 ] && { FAILS+=("$(basename "$bin")"); while IFS= read -r l; do FAILS+=("$(basename "$bin"): $l"); done < <(echo "$out" | sed -n 's/^\[  FAILED  \] \(test_[A-Za-z0-9_]*\)$/\1/p' | head -20); echo "$out" | grep -B5 -A5 -E 'FAILED|ERROR|Failure' | head -60; }
	PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
	echo "$(basename "$bin"): $p passed, $f failed, $s skipped ($((SECONDS - t0)) s)"
}

# exec_script SCRIPT: run it once, its output in $out and its status in $rc.
# The output goes to a file, not through a pipe: a process the script left
# behind that still holds its stdout can then not make the runner wait for
# ever (a CI run lost a box that way, its tier killed at 3000 s with nothing
# said about which script).  The script runs under a tag in its environment,
# SHOAL_TEST_TAG, which every process it starts inherits (shoald's VMMs and
# monitors too, though they leave its session): whatever still carries the
# tag when the script has ended is named and killed.  A script that runs
# past SHOAL_TEST_SCRIPT_TIMEOUT (600 s, or more where its header says
# "# timeout: SECONDS") is killed and says so.
exec_script() {
	local sc=$1 f tag left limit=${SHOAL_TEST_SCRIPT_TIMEOUT:-600} own
	# a script that needs longer says so in its header: "# timeout: SECONDS"
	own=$(header "$sc" | sed -n 's/^# timeout: \([0-9][0-9]*\)$/\1/p' | head -1)
	[ -n "$own" ] && [ "$own" -gt "$limit" ] && limit=$own
	f=$(mktemp /tmp/shoal-script-out.XXXXXX)
	tag="$(basename "$sc").$$.$RANDOM"
	SHOAL_TEST_TAG=$tag timeout -k 20 "$limit" bash "$sc" >"$f" 2>&1 </dev/null; rc=$?
	out=$(cat "$f"); rm -f "$f"
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		out+=$'\n'"FAIL: $(basename "$sc") ran past ${limit} s and was killed (status $rc); its last lines are above"
	fi
	left=$(timeout 20 grep -lsz -- "^SHOAL_TEST_TAG=$tag\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx "$$" | tr '\n' ' ')
	if [ -n "$left" ]; then
		echo "note: $(basename "$sc") left processes behind, killed now: $(for p in $left; do printf '%s(%s) ' "$p" "$(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | cut -c1-80)"; done)"
		kill -9 $left 2>/dev/null
	fi
}

# run_script SCRIPT [retry]: run one system test script and count its lines.
# With "retry" (the KVM scripts in the KVM box: guests under nested KVM under
# QEMU's software CPU, where a Linux guest has once reset itself and a test
# guest clone once triple-faulted, for no reason we could find yet, see
# docs/testing.md), a script that fails is
# run once more and the second run counts; the first run's failures and
# output tail are printed, marked "first try", never hidden.  A script
# that hung (killed at its time limit) is not run again: a hang is a defect
# to find, and a second one would cost the box's own time limit.
run_script() {
	local sc=$1 out rc p f s t0=$SECONDS
	already_done "$sc" && return 0
	claimed_elsewhere "$sc" && return 0
	echo "start: $(basename "$sc") at $(elapsed)" >>"${SHOAL_TEST_STARTS:-/dev/null}"
	exec_script "$sc"
	if [ "${2:-}" = retry ] && [ "$rc" != 124 ] && [ "$rc" != 137 ] &&
		{ [ "$rc" -ne 0 ] || echo "$out" | grep -q '^FAIL:'; }; then
		echo "note: $(basename "$sc") failed (status $rc) in the KVM box; its first try's failures and output tail follow, and it runs once more"
		echo "$out" | grep '^FAIL:' | sed "s|^|  first try: $(basename "$sc"): |"
		echo "$out" | grep -v '^PASS:' | tail -25 | sed 's|^|  first try: |'
		exec_script "$sc"
	fi
	echo "$out" | grep -E '^(PASS|FAIL|SKIP):' | sed "s|^|  $(basename "$sc"): |"
	p=$(echo "$out" | grep -c '^PASS:'); f=$(echo "$out" | grep -c '^FAIL:'); s=$(echo "$out" | grep -c '^SKIP:')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1; echo "$out" | tail -30; FAILS+=("$(basename "$sc"): exit status $rc with no FAIL line")
	else
		# Each failure's detail: the lines that follow its FAIL line.
		[ "$f" -gt 0 ] && echo "$out" | awk '/^FAIL:/ { n = 25 } n > 0 && !/^PASS:/ { print; n-- }' |
			grep -v '^FAIL:' | head -150 | sed "s|^|  $(basename "$sc") (detail): |"
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			echo "$out" | grep -v '^PASS:' | tail -30 | sed "s|^|  $(basename "$sc") (killed): |"
		fi
	fi
	# Each failed case by name, so that the closing lines say what failed.
	while IFS= read -r l; do FAILS+=("$(basename "$sc"): ${l#FAIL: }"); done < <(echo "$out" | grep '^FAIL:' | head -20)
	PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
	echo "$(basename "$sc"): $p passed, $f failed, $s skipped ($((SECONDS - t0)) s)"
}

# header SCRIPT: its opening comment, up to its first line of code (a
# fixed count of lines once lost a "# tier: kvm" that a longer essay had
# pushed past it: the script then skipped outside the box).
header() { sed -n '1,/^[^#]/p' "$1"; }

# needs_kvm SCRIPT: the script declares "# tier: kvm" in its header.
needs_kvm() { header "$1" | grep -q '^# tier: kvm'; }

# The longest kvm-system and kvm-slow scripts (in a box, the clean-clone
# run of 2026-12-06; slow_linux_vmgenid.sh, 316 s, had run last), run
# first, so that the two lanes that share the tier (run_lanes) end close
# together rather than one waiting on a long script begun last.
LONG_FIRST="daemon_snapshot.sh daemon_migrate.sh jail.sh snapshot.sh daemon_snapshot_disk.sh daemon_badinput.sh
	migrate_converge.sh daemon_lifecycle.sh daemon_concurrency.sh migrate.sh daemon_openapi.sh virtio_blk.sh
	daemon_memmgr.sh daemon_restart.sh
	slow_linux_debian.sh slow_linux_vmgenid.sh slow_linux_daemon_net.sh slow_linux_snapshot.sh slow_linux_balloon.sh
	slow_linux_net.sh slow_linux_boot.sh slow_linux_disk.sh slow_linux_devices.sh slow_linux_daemon.sh"

# scripts_of KIND: the system scripts of a tier, one per line.
scripts_of() {
	local t slow kvm
	local long
	long=$(echo $LONG_FIRST)
	case $1 in kvm-system|kvm-slow)
		for t in $long; do
			case $t in slow_*) slow=1 ;; *) slow=0 ;; esac
			[ -f "tests/system/$t" ] || continue
			[ "$1" = kvm-slow ] && [ $slow = 1 ] && echo "tests/system/$t"
			[ "$1" = kvm-system ] && [ $slow = 0 ] && echo "tests/system/$t"
		done ;;
	esac
	for t in tests/system/*.sh; do
		case $1 in kvm-system|kvm-slow) case " $long " in *" $(basename "$t") "*) continue ;; esac ;; esac
		# "# tier: manual": run by hand only; its header says why
		header "$t" | grep -q '^# tier: manual' && continue
		case $(basename "$t") in lib.sh) continue ;; slow_*) slow=1 ;; *) slow=0 ;; esac
		needs_kvm "$t" && kvm=1 || kvm=0
		case $1 in
		system) [ $slow = 0 ] && [ $kvm = 0 ] && echo "$t" ;;
		kvm-system) [ $slow = 0 ] && [ $kvm = 1 ] && echo "$t" ;;
		slow) [ $slow = 1 ] && [ $kvm = 0 ] && echo "$t" ;;
		kvm-slow) [ $slow = 1 ] && [ $kvm = 1 ] && echo "$t" ;;
		esac
	done
}

tier_fuzz() {
	local line
	# scripts/fuzz.sh: one PASS or FAIL line per target, the corpus under BUILD
	while IFS= read -r line; do
		echo "$line"
		case $line in
		PASS:*) PASSED=$((PASSED + 1)) ;;
		FAIL:*) FAILED=$((FAILED + 1)); FAILS+=("${line#FAIL: }") ;;
		esac
	done < <(SHOAL_CACHE="$BUILD" scripts/fuzz.sh -t "${FUZZ_SECONDS:-20}" -b "$BUILD")
}

# The layers point down only (docs/architecture.md): one counted line.
check_layers() {
	local out
	if out=$(make -s -C "$ROOT" check-layers 2>&1); then
		echo "PASS: check-layers: every include points down"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL: check-layers: a lower layer includes a higher one"
		echo "$out" | sed 's/^/  /'
		FAILED=$((FAILED + 1)); FAILS+=("make check-layers")
	fi
}

# run_tier NAME: run one tier here, adding to the counts.
run_tier() {
	local t
	case $1 in
	unit) check_layers
		for t in "$BUILD"/tests/unit/*; do [ -x "$t" ] && run_cmocka "$t"; done ;;
	guest) for t in "$BUILD"/tests/guest/*; do [ -x "$t" ] && run_cmocka "$t"; done ;;
	system|slow)
		for t in $(scripts_of "$1"); do run_script "$t"; done ;;
	kvm-system|kvm-slow)
		for t in $(scripts_of "$1"); do run_script "$t" ${SHOAL_IN_BOX:+retry}; done ;;
	fuzz) tier_fuzz ;;
	san-unit)
		for t in "$SAN_BUILD"/tests/unit/*; do
			[ -x "$t" ] && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} BUILD=$SAN_BUILD run_cmocka "$t"
		done ;;
	san-guest)
		for t in "$SAN_BUILD"/tests/guest/*; do
			[ -x "$t" ] && BUILD=$SAN_BUILD run_cmocka "$t"
		done ;;
	*) echo "test.sh: unknown tier $1" >&2; exit 2 ;;
	esac
}

is_kvm_tier() { case $1 in guest|kvm-system|kvm-slow|san-guest) return 0 ;; esac; return 1; }

# Where the KVM tiers go: "here", "box", or "skip: REASON".
KVM_WHERE=${SHOAL_TEST_KVM_WHERE:-}   # "all" decides once for both its lanes
kvm_where() {
	[ -n "$KVM_WHERE" ] && return
	local why
	if [ "${SHOAL_TEST_BOX:-}" = never ] ||
		{ [ "${SHOAL_TEST_BOX:-}" != always ] && scripts/kvm-box.sh --usable 2>/dev/null; }; then
		KVM_WHERE=here
	elif why=$(scripts/kvm-box.sh --check -q 2>&1); then
		KVM_WHERE=box
		echo "note: no usable /dev/kvm here ($(scripts/kvm-box.sh --usable 2>&1 | sed 's/^kvm-box: //')); the KVM tiers run in the KVM box (scripts/kvm-box.sh)"
	else
		KVM_WHERE="skip: no /dev/kvm here and the KVM box does not work: $(echo "$why" | grep 'kvm-box:' | tail -1 | sed 's/^kvm-box: //')"
	fi
}

# box_count P F S: add counts that came from the box (to the totals and to
# the box's own share of them).
box_count() {
	PASSED=$((PASSED + $1)); FAILED=$((FAILED + $2)); SKIPPED=$((SKIPPED + $3))
	BOX_P=$((BOX_P + $1)); BOX_F=$((BOX_F + $2)); BOX_S=$((BOX_S + $3))
}

# box_tier NAME: run a KVM tier in one box and add its closing line.  The
# box has SHOAL_TEST_BOX_CPUS vCPUs, one by default: a 1-vCPU box keeps one
# host core busy and runs the tests as fast as a 2-vCPU one (virtio_blk.sh:
# 131 s and 135 s), so two of them side by side on two cores each take
# about the time one takes alone (126 s and 138 s for two scripts), where
# two 2-vCPU boxes took more than twice as long (309 s and 268 s: their
# software vCPUs spin on each other's locks).  With many VMMs at once a
# 2-vCPU box kernel also crashed in most runs ("corrupted stack end
# detected inside scheduler"), a 1-vCPU one never.  See docs/testing.md.
# build_kits [TIER]: the guest kits the Linux tests boot, from Debian's
# cloud kernel and (slow_linux_vmgenid.sh) its generic one; for kvm-slow
# also the Debian 12 disk image (slow_linux_debian.sh), which "all" starts
# building in the background at its start (a few minutes of downloads),
# and Shoal's .deb in $BUILD/deb (20 s), which that test installs in it;
# a no-op when cached.
build_kits() {
	local k
	for k in "" --generic; do
		scripts/guest-kit.sh -q $k >/dev/null 2>/tmp/shoal-kit.log ||
			echo "note: the guest kit${k:+ ($k)} could not be built here: $(tail -1 /tmp/shoal-kit.log)"
	done
	if [ "${1:-}" = kvm-slow ]; then
		scripts/debian-image.sh -q >/dev/null 2>>/tmp/shoal-debian-image.log ||
			echo "note: the Debian image could not be built here: $(tail -1 /tmp/shoal-debian-image.log)"
		# Shoal's own .deb, which slow_linux_debian.sh installs in that
		# image (made once per build directory; the box cannot build it)
		ls "$BUILD"/deb/shoal_*_amd64.deb >/dev/null 2>&1 ||
			scripts/build-deb.sh "$BUILD/deb" >/tmp/shoal-build-deb.log 2>&1 ||
			echo "note: the Debian package could not be built here: $(tail -1 /tmp/shoal-build-deb.log)"
	fi
}

box_tier() {
	local log done starts p f s rc try line name c
	log=$(mktemp /tmp/shoal-box-tier.XXXXXX)
	done=$(mktemp "$BUILD/box-done.XXXXXX")   # seen from inside the box (its /tmp is its own)
	starts=$(mktemp "$BUILD/box-starts.XXXXXX")   # "start: NAME at TIME", one per script begun
	echo "== tier $1 (in the KVM box, at $(elapsed))"
	# The box has no network: the Linux tests' guest kit is fetched here
	# first (where that fails too, they skip and say why).
	case $1 in kvm-system|kvm-slow) build_kits "$1" ;; esac
	for try in 1 2; do
		scripts/kvm-box.sh -q --cpus "${SHOAL_TEST_BOX_CPUS:-1}" --timeout "${SHOAL_TEST_BOX_TIMEOUT:-3000}" -- \
			env BUILD="$BUILD" SAN_BUILD="$SAN_BUILD" FUZZ_SECONDS="${FUZZ_SECONDS:-20}" \
			SHOAL_TEST_DONE="$done" SHOAL_TEST_STARTS="$starts" SHOAL_TEST_T0="$SHOAL_TEST_T0" SHOAL_TEST_ONLY="${SHOAL_TEST_ONLY:-}" SHOAL_TEST_SKIP="${SHOAL_TEST_SKIP:-}" \
			SHOAL_TEST_CLAIM="${SHOAL_TEST_CLAIM:-}" SHOAL_TEST_LANE="${SHOAL_TEST_LANE:-}" \
			scripts/test.sh tier "$1" 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
		p=""
		read -r p f s < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$log" | tail -1)
		# The box's own "failed:" lines name each failed case: keep them.
		while IFS= read -r line; do FAILS+=("${line#failed: } (in the KVM box)"); done < <(grep '^failed: ' "$log")
		[ -n "${p:-}" ] && break
		# No closing line: the box itself died.  Keep what each finished
		# program reported; where the box kernel panicked (QEMU's software
		# CPU under nested KVM has crashed it a few times, see
		# docs/testing.md), the programs not yet finished run again, once,
		# in a fresh box.  The panic is said, never hidden.
		while IFS= read -r line; do
			name=${line%%: *}
			read -r p f s < <(echo "$line" | sed -n 's/^[^:]*: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped (.*$/\1 \2 \3/p')
			echo "$name" >>"$done"
			[ "$f" -gt 0 ] && FAILS+=("$name (tier $1, in the KVM box)")
			box_count "$p" "$f" "$s"
		done < <(grep -E '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped \([0-9]+ s\)$' "$log")
		# Which scripts it had begun and not finished: said, and named in
		# the closing lines (the box's own output may be far above them).
		while IFS= read -r line; do
			name=$(echo "$line" | sed -n 's/^start: \([^ ]*\) at .*/\1/p')
			[ -n "$name" ] && ! grep -qxF "$name" "$done" || continue
			echo "FAIL: the KVM box ended (kvm-box.sh status $rc) while $name ran (${line#start: $name })"
			FAILS+=("$name: unfinished when the KVM box ended (tier $1)")
		done <"$starts"
		p=""
		if [ "$try" = 1 ] && [ "$rc" = 125 ] && grep -qE 'Kernel panic|kvm-box: the box stopped answering' "$log"; then
			if grep -q 'Kernel panic' "$log"; then
				name="panicked ($(grep -m1 -o 'Kernel panic - not syncing: .*' "$log"))"
			else
				name="froze (no heartbeat on its serial line)"
			fi
			echo "note: the KVM box's kernel $name during tier $1; the programs it had not finished run again in a fresh box"
			# What this lane had claimed and not finished is free again.
			if [ -n "${SHOAL_TEST_CLAIM:-}" ]; then
				for c in "$SHOAL_TEST_CLAIM"/*/lane; do
					[ -e "$c" ] && [ "$(cat "$c")" = "${SHOAL_TEST_LANE:-}" ] || continue
					name=$(basename "$(dirname "$c")")
					grep -qxF "$name" "$done" || rm -rf "$SHOAL_TEST_CLAIM/$name"
				done
			fi
			continue
		fi
		break
	done
	rm -f "$log" "$done" "$starts"
	if [ -z "${p:-}" ]; then
		echo "FAIL: tier $1 in the KVM box: no closing line (kvm-box.sh status $rc)"
		p=0; f=1; s=0
	fi
	[ "$f" -gt 0 ] && FAILS+=("tier $1 (in the KVM box)")
	box_count "$p" "$f" "$s"
}

# elapsed: the time since this run began (the lanes of "all" count from
# their parent's start, $SHOAL_TEST_T0), as 12m34s.
SHOAL_TEST_T0=${SHOAL_TEST_T0:-$(date +%s)}
export SHOAL_TEST_T0
elapsed() { local t=$(( $(date +%s) - SHOAL_TEST_T0 )); printf '%dm%02ds' $((t / 60)) $((t % 60)); }

# tier NAME: run a tier where it belongs, timed.
tier() {
	local t0=$SECONDS
	if is_kvm_tier "$1"; then
		kvm_where
		case $KVM_WHERE in
		here) echo "== tier $1 (at $(elapsed))"; run_tier "$1" ;;
		box) box_tier "$1" ;;
		*) echo "SKIP: tier $1: ${KVM_WHERE#skip: }"; SKIPPED=$((SKIPPED + 1)) ;;
		esac
	else
		echo "== tier $1 (at $(elapsed))"
		run_tier "$1"
	fi
	TIMES+=("$1 $((SECONDS - t0))s")
}

# run_lanes: "all" where the KVM tiers go to the box.  Two lanes run side
# by side, one per host core (see box_tier: a 1-vCPU box keeps one core
# busy):
#   a: guest, kvm-system, kvm-slow, san-guest      (all in boxes)
#   b: unit, system, slow, fuzz, san-unit, kvm-system, kvm-slow
# Both lanes run the KVM tiers, the longest, and each of their scripts
# goes to the lane that asks first (claimed_elsewhere): lane b does its
# own tiers first and then helps, so the two lanes end close together.  Each lane is this script with its tiers named; its lines
# stream as they come, marked [a] or [b], and its closing lines are added
# up here.  SHOAL_TEST_LANES=1 runs the tiers one after another instead.
run_lanes() {
	local claim la lb pa pb lane log p f s bp bf bs line re
	claim=$(mktemp -d "$BUILD/claims.XXXXXX")
	la=$(mktemp /tmp/shoal-lane-a.XXXXXX); lb=$(mktemp /tmp/shoal-lane-b.XXXXXX)
	echo "note: two lanes side by side from $(elapsed): [a] guest kvm-system kvm-slow san-guest; [b] unit system slow fuzz san-unit kvm-system kvm-slow"
	export SHOAL_TEST_CLAIM=$claim SHOAL_TEST_KVM_WHERE=box SAN_BUILD
	{ SHOAL_TEST_LANE=a "$ROOT/scripts/test.sh" guest kvm-system kvm-slow san-guest 2>&1 | tee "$la" | sed -u 's/^/[a] /'; } &
	pa=$!
	{ SHOAL_TEST_LANE=b "$ROOT/scripts/test.sh" unit system slow fuzz san-unit kvm-system kvm-slow 2>&1 | tee "$lb" | sed -u 's/^/[b] /'; } &
	pb=$!
	wait "$pa" "$pb"
	re='^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped\( (of which in the KVM box: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped)\)\{0,1\}$'
	for lane in a b; do
		log=$la; [ $lane = b ] && log=$lb
		p=""
		read -r p f s bp bf bs < <(sed -n "s/$re/\\1 \\2 \\3 \\5 \\6 \\7/p" "$log" | tail -1)
		if [ -z "$p" ]; then
			echo "FAIL: lane $lane ended without a closing line"
			FAILED=$((FAILED + 1)); FAILS+=("lane $lane: no closing line")
			continue
		fi
		PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
		BOX_P=$((BOX_P + ${bp:-0})); BOX_F=$((BOX_F + ${bf:-0})); BOX_S=$((BOX_S + ${bs:-0}))
		# The lane's own "failed:" lines follow its "tier times:" line (a
		# box's inner ones, already counted in the lane's, come before).
		while IFS= read -r line; do FAILS+=("[$lane] ${line#failed: }"); done < <(sed -n '/^tier times: /,$p' "$log" | grep '^failed: ')
		line=$(sed -n 's/^tier times: //p' "$log" | tail -1)
		[ -n "$line" ] && TIMES+=("[$lane] $line")
	done
	TIMES+=("both lanes ended at $(elapsed)")
	rm -rf "$claim" "$la" "$lb"
}

case $MODE in
tier)
	shift
	[ $# -gt 0 ] || { echo "usage: scripts/test.sh tier NAME..." >&2; exit 2; }
	for t in "$@"; do run_tier "$t"; done ;;
fast)
	for t in unit guest system kvm-system; do tier "$t"; done ;;
unit|guest|system|kvm-system|slow|kvm-slow|fuzz|san-unit|san-guest)
	# Named tiers, each where it belongs (the KVM ones in the box here).
	for t in "$@"; do tier "$t"; done ;;
all)
	scripts/install-deps.sh || { echo "install-deps failed"; exit 1; }
	# The Debian image for kvm-slow (build_kits), meanwhile.
	scripts/debian-image.sh -q >/dev/null 2>/tmp/shoal-debian-image.log &
	# The OpenAPI validators, from npm (tests/system/api_openapi.sh): in
	# CI a validator that cannot be installed is a failure, not a skip.
	export SHOAL_REQUIRE_API_TOOLS=1
	# The fuzzers run their committed corpus and explore briefly: 21
	# targets at 20 s were 7.4 of lane b's 15 minutes before it joined the
	# KVM tiers (clean-clone run of 2026-12-06), 29 at 8 s were 4.9 (CI of
	# 2026-12-07, whose 59 minutes were too near the hour).  The corpus is
	# the regression guard; longer exploration: scripts/fuzz.sh.
	export FUZZ_SECONDS=${FUZZ_SECONDS:-4}
	scripts/api-tools.sh -q >/dev/null || echo "note: scripts/api-tools.sh failed; api_openapi.sh will fail"
	make -j"$(nproc)" tests || { echo "build failed"; exit 1; }
	if ! make -j"$(nproc)" SANITIZE=1 BUILD="$SAN_BUILD" tests >/tmp/shoal-san-build.log 2>&1; then
		echo "FAIL: sanitizer build"; tail -30 /tmp/shoal-san-build.log; FAILED=$((FAILED + 1)); FAILS+=("sanitizer build")
		SAN_BUILD=/nonexistent
	fi
	echo "note: dependencies and builds took $(elapsed)"
	kvm_where
	if [ "$KVM_WHERE" = box ] && [ "${SHOAL_TEST_LANES:-2}" = 2 ]; then
		build_kits
		run_lanes
	else
		for t in unit guest system kvm-system slow kvm-slow fuzz san-unit san-guest; do tier "$t"; done
	fi ;;
*) echo "usage: scripts/test.sh fast|all|TIER...|tier NAME..." >&2; exit 2 ;;
esac

[ ${#TIMES[@]} -gt 0 ] && echo "tier times: $(IFS=,; echo "${TIMES[*]}" | sed 's/,/, /g')"
[ ${#FAILS[@]} -gt 0 ] && printf 'failed: %s\n' "${FAILS[@]}"
if [ "$MODE" != tier ] && [ "$KVM_WHERE" = box ]; then
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped (of which in the KVM box: $BOX_P passed, $BOX_F failed, $BOX_S skipped)"
else
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
fi
[ "$FAILED" -eq 0 ]
