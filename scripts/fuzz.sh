#!/bin/bash
# scripts/fuzz.sh - run Shoal's libFuzzer targets (fuzz/*.c) for as long as
# asked, keeping what they learn.
#
#   scripts/fuzz.sh                       every target, 10 minutes each
#   scripts/fuzz.sh -t 3600 fuzz_qcow2    one target for an hour
#   scripts/fuzz.sh -l                    list the targets
#
# Options: -t SECONDS per target (default 600); -b BUILD (default build-fuzz
# for a long run, so it does not disturb build/); -c DIR, the corpus, kept
# across runs (default ${SHOAL_CACHE:-~/.cache/shoal}/fuzz-corpus/TARGET; the
# seeds in fuzz/corpus/TARGET are read too, never written); -j N jobs per
# target (libFuzzer's -fork; default 1).
#
# Each target prints one line: "PASS: fuzz NAME (N runs in S s, corpus C
# inputs, coverage X)" or "FAIL: fuzz NAME" with the crash's input saved
# under the cache's fuzz-crash/ (reproduce: BUILD/fuzz/NAME FILE) and the
# end of libFuzzer's report.  Exit status: the number of failed targets.
# scripts/test.sh's fuzz tier is this script with -t ${FUZZ_SECONDS:-20}.
set -u
cd "$(dirname "$0")/.." || exit 1
SECS=600 JOBS=1 LIST=0
BUILD=${BUILD:-build-fuzz}
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
CORPUS=""
while getopts "t:b:c:j:lh" o; do
	case $o in
	t) SECS=$OPTARG ;;
	b) BUILD=$OPTARG ;;
	c) CORPUS=$OPTARG ;;
	j) JOBS=$OPTARG ;;
	l) LIST=1 ;;
	*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	esac
done
shift $((OPTIND - 1))
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -gt 0 ] || { echo "shoal: fuzz.sh: -t $SECS: expected seconds" >&2; exit 64; }
[[ $JOBS =~ ^[0-9]+$ ]] && [ "$JOBS" -gt 0 ] || { echo "shoal: fuzz.sh: -j $JOBS: expected a count" >&2; exit 64; }
if [ $LIST = 1 ]; then
	for f in fuzz/*.c; do basename "$f" .c; done
	exit 0
fi
for t in "$@"; do
	[ -f "fuzz/$t.c" ] || { echo "shoal: fuzz.sh: no target $t (scripts/fuzz.sh -l lists them)" >&2; exit 64; }
done
if ! make -j"$(nproc)" BUILD="$BUILD" fuzz >"/tmp/shoal-fuzz-build.$$.log" 2>&1; then
	echo "FAIL: fuzz targets did not build (make BUILD=$BUILD fuzz)"
	tail -30 "/tmp/shoal-fuzz-build.$$.log"; rm -f "/tmp/shoal-fuzz-build.$$.log"
	exit 1
fi
rm -f "/tmp/shoal-fuzz-build.$$.log"
[ $# -gt 0 ] || set -- $(for f in "$BUILD"/fuzz/*; do [ -x "$f" ] && basename "$f"; done)
CRASH=$CACHE/fuzz-crash
mkdir -p "$CRASH"
failed=0
for name in "$@"; do
	dir=${CORPUS:-$CACHE/fuzz-corpus}/$name
	mkdir -p "$dir"
	dirs=("$dir")
	[ -d "fuzz/corpus/$name" ] && dirs+=("fuzz/corpus/$name")
	log=/tmp/shoal-fuzz-$name.$$.log
	extra=()
	[ "$JOBS" -gt 1 ] && extra=(-fork="$JOBS" -ignore_crashes=0)
	if "$BUILD/fuzz/$name" -max_total_time="$SECS" -rss_limit_mb=2048 "${extra[@]}" \
		-artifact_prefix="$CRASH/$name-" "${dirs[@]}" >"$log" 2>&1; then
		runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | awk '{print $2 " runs in " $5 " s"}')
		cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
		echo "PASS: fuzz $name (${runs:-done}, corpus $(find "$dir" -type f | wc -l) inputs, coverage ${cov:-?})"
	else
		echo "FAIL: fuzz $name (crash input: $(grep -o "$CRASH/$name-[^ ]*" "$log" | tail -1))"
		tail -40 "$log"
		failed=$((failed + 1))
	fi
	rm -f "$log"
done
exit $failed
