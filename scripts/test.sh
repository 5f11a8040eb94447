#!/bin/bash
# scripts/test.sh - run Shoal's test tiers and print one closing line
# "N passed, N failed, N skipped".
#
#   scripts/test.sh fast   unit + guest + fast system tests (make test)
#   scripts/test.sh all    installs dependencies, builds, runs fast tier,
#                          slow system tests (Linux boot), the fuzzers
#                          briefly, and the sanitizer build's unit tests.
#                          This is the README's test command and CI's.
#
# Test programs: cmocka binaries (tests/unit, tests/guest) are counted from
# their own summary; system scripts (tests/system/*.sh) print PASS/FAIL/SKIP
# lines (see tests/system/lib.sh).  A skip is printed with its reason and
# never counted as a pass.
set -u
MODE=${1:-fast}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export BUILD=${BUILD:-$ROOT/build}
PASSED=0; FAILED=0; SKIPPED=0
FAILS=()

if [ "$MODE" = all ]; then
	scripts/install-deps.sh || { echo "install-deps failed"; exit 1; }
	make -j"$(nproc)" tests || { echo "build failed"; exit 1; }
fi

# run_cmocka BIN: run one cmocka binary and add its counts.
run_cmocka() {
	local bin=$1 out p f s
	out=$(timeout 600 "$bin" 2>&1); local rc=$?
	echo "$out" | grep -E '^\[ *(RUN|  OK|  FAILED|  SKIPPED|  PASSED|  ERROR) *\]|SKIP|skip' | sed "s|^|  $(basename "$bin"): |" | grep -v ' RUN ' || true
	p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	s=$(echo "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
	p=${p:-0}; f=${f:-0}; s=${s:-0}
	# A crash or a missing summary is a failure, whatever was printed.
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$out" | tail -20; fi
	[ "$f" -gt 0 ] && { FAILS+=("$bin"); echo "$out" | grep -B5 -A5 -E 'FAILED|ERROR|Failure' | head -60; }
	PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
	echo "$(basename "$bin"): $p passed, $f failed, $s skipped"
}

# run_script SCRIPT: run one system test script and count its lines.
run_script() {
	local sc=$1 out rc p f s
	out=$(timeout 1800 bash "$sc" 2>&1); rc=$?
	echo "$out" | grep -E '^(PASS|FAIL|SKIP):' | sed "s|^|  $(basename "$sc"): |"
	p=$(echo "$out" | grep -c '^PASS:'); f=$(echo "$out" | grep -c '^FAIL:'); s=$(echo "$out" | grep -c '^SKIP:')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$out" | tail -30; fi
	[ "$f" -gt 0 ] && FAILS+=("$sc")
	PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
}

for t in "$BUILD"/tests/unit/*; do [ -x "$t" ] && run_cmocka "$t"; done
if [ -c /dev/kvm ] && [ -r /dev/kvm ]; then
	for t in "$BUILD"/tests/guest/*; do [ -x "$t" ] && run_cmocka "$t"; done
else
	echo "SKIP: guest tests: /dev/kvm is not available"; SKIPPED=$((SKIPPED + 1))
fi
for t in tests/system/*.sh; do
	case $(basename "$t") in slow_*) continue ;; esac
	run_script "$t"
done

if [ "$MODE" = all ]; then
	for t in tests/system/slow_*.sh; do [ -f "$t" ] && run_script "$t"; done
	# Fuzz every target briefly (libFuzzer), then the unit tests under ASan/UBSan.
	if make -j"$(nproc)" fuzz >/tmp/shoal-fuzz-build.log 2>&1; then
		for fz in "$BUILD"/fuzz/*; do
			[ -x "$fz" ] || continue
			name=$(basename "$fz")
			dirs=("$BUILD/fuzz-corpus/$name")
			mkdir -p "${dirs[0]}"
			[ -d "fuzz/corpus/$name" ] && dirs+=("fuzz/corpus/$name")
			if "$fz" -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 "${dirs[@]}" \
				>/tmp/shoal-fuzz.log 2>&1; then
				echo "PASS: fuzz $name ($(grep -o 'Done [0-9]* runs in [0-9]* second' /tmp/shoal-fuzz.log | tail -1)s)"
				PASSED=$((PASSED + 1))
			else
				echo "FAIL: fuzz $name"; tail -40 /tmp/shoal-fuzz.log; FAILED=$((FAILED + 1)); FAILS+=("$fz")
			fi
		done
	else
		echo "FAIL: fuzz targets did not build"; tail -30 /tmp/shoal-fuzz-build.log; FAILED=$((FAILED + 1))
	fi
	if make -j"$(nproc)" SANITIZE=1 BUILD="$ROOT/build-san" tests >/tmp/shoal-san-build.log 2>&1; then
		for t in "$ROOT"/build-san/tests/unit/* "$ROOT"/build-san/tests/guest/*; do
			[ -x "$t" ] && BUILD="$ROOT/build-san" run_cmocka "$t"
		done
	else
		echo "FAIL: sanitizer build"; tail -30 /tmp/shoal-san-build.log; FAILED=$((FAILED + 1))
	fi
fi

[ ${#FAILS[@]} -gt 0 ] && printf 'failed: %s\n' "${FAILS[@]}"
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
