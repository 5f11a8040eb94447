#!/bin/bash
# scripts/bench-store.sh - the image store's figures (docs/benchmarks.md,
# "Image store"): two related ext4 images built here, dedup ratio and
# add/get throughput against the average chunk size, the same images
# through `casync make` where casync is installed, and the Bloom index's
# lookup cost at 1k, 10k and 100k segments against a plain hash index.
#
#   scripts/bench-store.sh [BUILD]      (BUILD defaults to build)
#
# Needs mkfs.ext4 (e2fsprogs); casync is optional (apt-get install casync)
# and not in scripts/install-deps.sh: no test needs it.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
BENCH=$BUILD/bench/store
[ -x "$BENCH" ] || make -C "$ROOT" BUILD="$BUILD" "$BUILD/bench/store" >/dev/null
W=$(mktemp -d /tmp/bench-store.XXXXXX)
trap 'rm -rf "$W"' EXIT

# Two file trees that share most files, as two releases of one system do:
# b drops some documentation, adds the time zone database and a file.
mkdir -p "$W/a"
cp -r /usr/share/doc /usr/lib/x86_64-linux-gnu/perl-base "$W/a/" 2>/dev/null || true
cp -a "$W/a" "$W/b"
cp -r /usr/share/zoneinfo "$W/b/"
rm -rf "$W"/b/doc/libc*
echo "a new file" >"$W/b/new.txt"
mkfs.ext4 -q -F -E root_owner=0:0 -d "$W/a" "$W/a.img" 192M
mkfs.ext4 -q -F -E root_owner=0:0 -d "$W/b" "$W/b.img" 192M
echo "inputs: a.img $(du -sh "$W/a" | cut -f1) of files, b.img $(du -sh "$W/b" | cut -f1); 192 MiB ext4 images each"

echo "== shoal store: dedup and throughput against the average chunk size (min avg/4, max avg*8) =="
mkdir "$W/st"
"$BENCH" images "$W/st" "$W/a.img" "$W/b.img"

if command -v casync >/dev/null; then
	echo "== casync make, same images (--chunk-size sets casync's average; its min avg/4, max avg*4) =="
	printf "%-6s %8s %12s %9s\n" avg chunks "store bytes" "add MB/s"
	for avg in 8192 65536; do
		rm -rf "$W/castr"
		t0=$(date +%s.%N)
		casync make --store="$W/castr" --chunk-size=$avg "$W/a.caibx" "$W/a.img" >/dev/null
		casync make --store="$W/castr" --chunk-size=$avg "$W/b.caibx" "$W/b.img" >/dev/null
		t1=$(date +%s.%N)
		n=$(find "$W/castr" -name '*.cacnk' | wc -l)
		bytes=$(find "$W/castr" -name '*.cacnk' -printf '%s\n' | awk '{s+=$1} END {print s}')
		printf "%-6s %8s %12s %9.0f\n" $avg "$n" "$bytes" "$(echo "2 * 192 * 1.048576 / ($t1 - $t0)" | bc -l)"
	done
else
	echo "== casync not installed: skipped =="
fi

echo "== Bloom index lookup: 16384 rows, k=7; per = chunks per segment =="
"$BENCH" bloom
