#!/bin/bash
# bench/store_rootfs.sh - the image store against `casync make` on real
# images built here (issue 14, "Figures"; docs/benchmarks.md, "Debian root
# file systems against casync").  Host only: no KVM, no box.
#
#   bench/store_rootfs.sh [--runs N] [--avg SIZE[,SIZE...]] [--inputs-only]
#        BUILD=DIR (default build) names the Shoal build ($BUILD/shoal)
#
# The inputs, built once and kept in a cache outside the repository
# (${SHOAL_CACHE:-~/.cache/shoal}/bench-rootfs; a change of this script's
# package sets or sizes rebuilds them):
#   minbase.img  Debian 12 (bookworm) by mmdebstrap --variant=minbase
#   ssh.img      minbase + openssh-server, curl, python3
#   web.img      minbase + openssh-server, curl, git, nginx-light, vim-tiny
#   chain        a qcow2 chain: base.qcow2 is minbase.img, top.qcow2 an
#                overlay over it holding what ssh.img differs in (qemu-img
#                convert -B), so the chain's guest view is ssh.img's bytes
# Each root file system goes into a 1 GiB ext4 image made without a mount
# (mkfs.ext4 -d DIR), with a fixed UUID, hash seed and time
# (E2FSPROGS_FAKE_TIME, SOURCE_DATE_EPOCH for mmdebstrap), so a rebuild
# makes nearly the same bytes.  The .debs are cached beside them
# (mmdebstrap's sync-in/sync-out hooks), so the three builds download each
# package once.
#
# What each tool reads: `shoal store add` reads every image through
# Shoal's block layer, so for the chain it opens top.qcow2 and reads the
# guest's view through the backing file; casync reads a file's bytes, so it
# is given the chain flattened (qemu-img convert -O raw top.qcow2), which the
# script checks is byte for byte ssh.img's bytes (cmp) before it measures.
# Both tools see the same logical bytes for every input.
#
# For each average chunk size (default 8 KiB, Shoal's default, 16 KiB and 64 KiB):
# one fresh Shoal store and one fresh casync chunk store per run; the four
# inputs go in one after another (minbase, ssh, web, chain).  Both use the
# same chunk bounds: min avg/4, max avg*8 (Shoal's STORE file is edited
# after `shoal store init`, which has no size option; casync takes
# --chunk-size=MIN:AVG:MAX) and zstd (casync --compression=zstd; its default
# in Debian is xz).  Per input and in total: logical bytes (the image's
# size), stored bytes it added (Shoal: segment files, `shoal store du`;
# casync: the .cacnk chunk files), the dedup ratio (logical / stored, so it
# counts compression and the images' free space too), and the time and
# MB/s of the import (median of the runs; the two tools alternate which goes
# first).  Stored bytes are the same every run (checked).  The inputs are
# read once beforehand so both tools read them from the page cache.
# Nothing here is a pass/fail check; no figure has a threshold.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SHOAL=$BUILD/shoal
CACHE=${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
OUT=$CACHE/bench-rootfs
MIRROR=${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUNS=3
AVGS=8192,16384,65536
INPUTS_ONLY=0
SIZE=1G
EPOCH=1700000000
SET_minbase=""
SET_ssh="openssh-server,curl,python3"
SET_web="openssh-server,curl,git,nginx-light,vim-tiny"
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=$2; shift ;;
	--avg) AVGS=$2; shift ;;
	--inputs-only) INPUTS_ONLY=1 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "store_rootfs: unknown argument: $1" >&2; exit 1 ;;
	esac
	shift
done
die() { echo "store_rootfs: $*" >&2; exit 1; }
say() { echo "store_rootfs: $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, apt-get)"
for t in mmdebstrap mkfs.ext4 qemu-img python3; do
	command -v $t >/dev/null || die "$t is not installed"
done
if ! command -v casync >/dev/null; then
	say "installing casync (apt-get)"
	apt-get install -y casync >/dev/null 2>&1 ||
		{ apt-get update >/dev/null 2>&1 && apt-get install -y casync >/dev/null 2>&1; } ||
		die "casync: apt-get install failed"
fi
[ -x "$SHOAL" ] || die "$SHOAL is not built (make BUILD=$BUILD)"

# ---- inputs ----
stamp=$(printf '%s\n' "$SET_minbase" "$SET_ssh" "$SET_web" "$SIZE" "$EPOCH" v1 | md5sum | cut -c1-12)
mkdir -p "$OUT/debs"
exec 9>"$OUT.lock"
flock 9

# rootfs NAME UUID: mmdebstrap into a directory, then a 1 GiB ext4 image of it
rootfs() {
	local name=$1 uuid=$2 set work
	set=$(eval echo "\$SET_$name")
	[ -s "$OUT/$name.img" ] && [ "$(cat "$OUT/$name.stamp" 2>/dev/null)" = "$stamp" ] && return 0
	work=$(mktemp -d "$OUT/work.XXXXXX")
	say "$name: mmdebstrap bookworm minbase${set:+ + $set}"
	if ! SOURCE_DATE_EPOCH=$EPOCH mmdebstrap --quiet --variant=minbase ${set:+--include="$set"} \
		--aptopt='Acquire::Retries "3"' \
		--skip=download/empty --skip=essential/unlink \
		--setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
		--setup-hook="sync-in $OUT/debs /var/cache/apt/archives/" \
		--customize-hook="sync-out /var/cache/apt/archives $OUT/debs" \
		bookworm "$work/root" "$MIRROR" >"$work/log" 2>&1; then
		tail -5 "$work/log" >&2
		rm -rf "$work"
		die "$name: mmdebstrap failed"
	fi
	E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -U "$uuid" -E "hash_seed=$uuid,root_owner=0:0" \
		-L "$name" -d "$work/root" "$work/$name.img" "$SIZE" >/dev/null
	mv "$work/$name.img" "$OUT/$name.img"
	echo "$stamp" >"$OUT/$name.stamp"
	rm -rf "$work"
}
rootfs minbase 6b8b4567-0000-4000-8000-000000000001
rootfs ssh 6b8b4567-0000-4000-8000-000000000002
rootfs web 6b8b4567-0000-4000-8000-000000000003
if [ ! -s "$OUT/top.qcow2" ] || [ "$(cat "$OUT/chain.stamp" 2>/dev/null)" != "$stamp" ] ||
	[ "$OUT/top.qcow2" -ot "$OUT/ssh.img" ]; then
	say "chain: base.qcow2 (minbase) and top.qcow2 (ssh's differences over it)"
	rm -f "$OUT/base.qcow2" "$OUT/top.qcow2" "$OUT/chain-flat.raw"
	qemu-img convert -O qcow2 "$OUT/minbase.img" "$OUT/base.qcow2"
	(cd "$OUT" && qemu-img convert -O qcow2 -B base.qcow2 -F qcow2 ssh.img top.qcow2)
	qemu-img convert -O raw "$OUT/top.qcow2" "$OUT/chain-flat.raw"
	echo "$stamp" >"$OUT/chain.stamp"
fi
flock -u 9
cmp -s "$OUT/chain-flat.raw" "$OUT/ssh.img" || die "chain-flat.raw differs from ssh.img"

echo "== inputs ($OUT) =="
for n in minbase ssh web; do
	set=$(eval echo "\$SET_$n")
	printf '%-8s %s ext4 image, %s MiB allocated; packages: minbase%s\n' "$n" "$SIZE" \
		$(( $(du -k "$OUT/$n.img" | cut -f1) / 1024 )) "${set:+ + $set}"
done
printf '%-8s base.qcow2 %s MiB + top.qcow2 %s MiB (shoal reads top.qcow2; casync reads chain-flat.raw = ssh.img, cmp checked)\n' \
	chain $(( $(stat -c %s "$OUT/base.qcow2") / 1048576 )) $(( $(stat -c %s "$OUT/top.qcow2") / 1048576 ))
[ $INPUTS_ONLY = 1 ] && exit 0

# ---- the runs ----
W=$(mktemp -d /tmp/store-rootfs.XXXXXX)
trap 'rm -rf "$W"' EXIT
NAMES=(minbase ssh web chain)
SHOAL_IN=("$OUT/minbase.img" "$OUT/ssh.img" "$OUT/web.img" "$OUT/top.qcow2")
CASYNC_IN=("$OUT/minbase.img" "$OUT/ssh.img" "$OUT/web.img" "$OUT/chain-flat.raw")
cat "${CASYNC_IN[@]}" "$OUT/base.qcow2" "$OUT/top.qcow2" >/dev/null
REC=$W/records   # tool avg run input seconds logical stored_total
: >"$REC"
now() { date +%s.%N; }

run_shoal() {  # AVG RUN
	local avg=$1 r=$2 i t0 t1 st=$W/st
	rm -rf "$st"
	"$SHOAL" store init "$st" >/dev/null
	python3 - "$st/STORE" "$avg" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1])); a = int(sys.argv[2])
p["chunk"] = {"min": a // 4, "avg": a, "max": a * 8}
json.dump(p, open(sys.argv[1], "w"), indent=2)
EOF
	for i in 0 1 2 3; do
		t0=$(now)
		"$SHOAL" store add "$st" "${SHOAL_IN[$i]}" --name "${NAMES[$i]}" --output json >"$W/add.json"
		t1=$(now)
		printf 'shoal %s %s %s %s %s %s\n' "$avg" "$r" "${NAMES[$i]}" "$(echo "$t1 - $t0" | bc -l)" \
			"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["size"])' "$W/add.json")" \
			"$("$SHOAL" store du "$st" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["segment_bytes"])')" >>"$REC"
	done
	rm -rf "$st"
}

run_casync() {  # AVG RUN
	local avg=$1 r=$2 i t0 t1 cs=$W/cs
	rm -rf "$cs" "$W"/*.caibx
	for i in 0 1 2 3; do
		t0=$(now)
		casync make --store="$cs" --compression=zstd --chunk-size=$((avg / 4)):$avg:$((avg * 8)) \
			"$W/${NAMES[$i]}.caibx" "${CASYNC_IN[$i]}" >/dev/null
		t1=$(now)
		printf 'casync %s %s %s %s %s %s\n' "$avg" "$r" "${NAMES[$i]}" "$(echo "$t1 - $t0" | bc -l)" \
			"$(stat -c %s "${CASYNC_IN[$i]}")" \
			"$(find "$cs" -name '*.cacnk' -printf '%s\n' | awk '{s += $1} END {print s + 0}')" >>"$REC"
	done
	rm -rf "$cs"
}

for avg in ${AVGS//,/ }; do
	for r in $(seq "$RUNS"); do
		say "avg $avg, run $r of $RUNS"
		if [ $((r % 2)) = 1 ]; then run_shoal "$avg" "$r"; run_casync "$avg" "$r"
		else run_casync "$avg" "$r"; run_shoal "$avg" "$r"; fi
	done
done

python3 - "$REC" <<'EOF'
import sys, statistics
from collections import defaultdict
rec = defaultdict(list)          # (avg, tool, input) -> [(secs, logical, total)]
order = []
for line in open(sys.argv[1]):
    tool, avg, run, name, secs, logical, total = line.split()
    k = (int(avg), tool, name)
    if k not in rec and (int(avg), name) not in order:
        order.append((int(avg), name))
    rec[k].append((float(secs), int(logical), int(total)))
avgs = sorted({a for a, _ in order})
names = []
for _, n in order:
    if n not in names:
        names.append(n)
def mb(x): return x / 1e6
print("medians of %d runs; MB = 10^6 bytes; dedup = logical / stored (cumulative in the 'total' row)"
      % len(next(iter(rec.values()))))
hdr = "%-6s %-8s %10s | %10s %7s %7s %7s | %10s %7s %7s %7s" % (
    "avg", "input", "logical MB", "shoal +MB", "dedup", "s", "MB/s", "casync +MB", "dedup", "s", "MB/s")
for avg in avgs:
    print(hdr)
    tot = {"shoal": [0, 0.0, 0], "casync": [0, 0.0, 0]}
    prev = {"shoal": 0, "casync": 0}
    cells = []
    for n in names:
        row = "%-6s %-8s" % (avg, n)
        first = True
        for tool in ("shoal", "casync"):
            v = rec[(avg, tool, n)]
            totals = {t for _, _, t in v}
            if len(totals) != 1:
                print("note: %s %s %s: stored totals differ between runs: %s" % (tool, avg, n, sorted(totals)))
            secs = statistics.median(s for s, _, _ in v)
            logical = v[0][1]
            total = max(totals)
            added = total - prev[tool]
            prev[tool] = total
            tot[tool][0] += logical; tot[tool][1] += secs; tot[tool][2] = total
            if first:
                row += " %10.1f |" % mb(logical)
                first = False
            ratio = logical / added if added else float("inf")
            row += " %10.1f %7s %7.2f %7.0f |" % (mb(added), "%.1f" % ratio if added else "all", secs, mb(logical) / secs)
        print(row.rstrip("|"))
    row = "%-6s %-8s %10.1f |" % (avg, "total", mb(tot["shoal"][0]))
    for tool in ("shoal", "casync"):
        lg, s, t = tot[tool]
        row += " %10.1f %7.2f %7.2f %7.0f |" % (mb(t), lg / t, s, mb(lg) / s)
    print(row.rstrip("|"))
    print()
EOF
