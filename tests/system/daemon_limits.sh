#!/bin/bash
# daemon_limits.sh - what a VM spec's limits add beyond daemon_cgroup.sh's
# cpu.max and memory.max (issue 15, cgroups):
# - limits.io becomes one io.max line on the whole disk under each disk: a
#   disk file on an ext4 partition of a loop device gets the loop device's
#   MAJ:MIN (io.max takes no partition), the guest's disk I/O is counted
#   on that device in the VM's cgroup (io.stat), and what the guest's
#   vblk-bench gets done stays within the limits (twice the limit and two
#   operations allowed: a slow box only does less; unlimited, the box
#   does thirty times more);
# - a disk on tmpfs cannot be limited: the start is refused (409
#   no_cgroups) naming the disk and tmpfs, and no VMM runs;
# - a busy guest under limits.cpus gets "limit" events for cpu.max: one per
#   5 s look at most, each counting the throttles since the last one (so
#   fewer events than throttles), and no more throttles than cpu.stat has.
# The io part needs a loop device and mkfs.ext4 (the KVM box loads loop
# and ext4); without them it is skipped, saying so.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
need_kvm daemon_limits || finish
[ -f /sys/fs/cgroup/cgroup.controllers ] || { skip daemon_limits "no cgroup v2 at /sys/fs/cgroup"; finish; }
MNT=$TMP/mnt LOOP=
limits_cleanup() {
	daemon_cleanup              # the VMMs first: they hold the disk open
	if [ -n "$LOOP" ]; then
		umount "$MNT" 2>/dev/null
		losetup -d "$LOOP" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap limits_cleanup EXIT
# a VMM held to a fifth of a CPU starts slowly in a software-CPU box (jailed, too)
start_daemon --stop-timeout 2 --start-timeout 120 || { fail "daemon starts"; finish; }
base=$(sed -n 's/.*cgroups: each VM in \(.*\)\/vm-NAME$/\1/p' "$TMP/shoald.log" | tail -1)
check "the daemon says where the VMs' cgroups are" test -d "$base"

# jq_true JSON EXPR: EXPR holds for JSON
jq_true() { jq -e "$2" <<<"$1" >/dev/null; }
# limit_events VM LIMIT: that VM's "limit" events for LIMIT, a JSON array
limit_events() {
	curl -s --unix-socket "$SHOAL_SOCKET" "http://d/v1/events?vm=$1&limit=1000" |
		jq -c --arg l "$2" '[.events[] | select(.type == "limit" and .detail.limit == $l)]'
}

# ---- cpu.max events: a guest spinning on 20 % of a CPU ----
SPEC_MEMORY=32M spec l1 shell '"limits": {"cpus": 0.2}' >"$TMP/l1.json"
check "create and start l1 (limits.cpus 0.2)" bash -c "'$SHOAL' vm create -f '$TMP/l1.json' --start >/dev/null"
wait_console l1 "shoal>" || fail "l1 prompt"
printf 'spin 60000\n' | "$SHOAL" console l1 --linger 1 >/dev/null 2>&1
ev='[]'
for _ in $(seq 240); do         # two looks at the least: 10 s; generous for a slow box
	ev=$(limit_events l1 cpu.max)
	[ "$(jq length <<<"$ev")" -ge 2 ] && break
	sleep 0.5
done
n=$(jq length <<<"$ev")
check "a throttled guest gets cpu.max limit events (got $n)" test "$n" -ge 2
check "each names the limit, a count and the 5 s period" jq_true "$ev" \
	'all(.[]; .detail.count > 0 and .detail.period_s == 5 and
		(.detail.message | test("^throttled [0-9]+ times \\([0-9.]+ s held back\\) in the last 5 s$")))'
sum=$(jq '[.[].detail.count] | add' <<<"$ev")
thr=$(sed -n 's/^nr_throttled //p' "$base/vm-l1/cpu.stat")
check "rate-limited: $n events stand for $sum throttles" test "$n" -lt "$sum"
check "the counts come from cpu.stat ($sum <= nr_throttled $thr)" test "$sum" -le "$thr"
"$SHOAL" vm stop l1 --force >/dev/null 2>&1

# ---- io.max: a disk file on a partition of a loop device ----
io_ready() {
	modprobe loop 2>/dev/null; modprobe ext4 2>/dev/null
	[ -e /dev/loop-control ] && command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null &&
		grep -qw io "$base/cgroup.subtree_control"
}
if io_ready; then
	img=$TMP/loop.img
	truncate -s 32M "$img"
	# an MBR with one Linux partition: sectors 2048..65535
	printf '\x00\x00\x00\x00\x83\x00\x00\x00\x00\x08\x00\x00\x00\xf8\x00\x00' |
		dd of="$img" bs=1 seek=446 conv=notrunc status=none
	printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
	LOOP=$(losetup -f --show -P "$img")
	for _ in $(seq 100); do [ -b "${LOOP}p1" ] && break; sleep 0.05; done
	mkdir -p "$MNT"
	if mkfs.ext4 -q "${LOOP}p1" && mount "${LOOP}p1" "$MNT"; then
		dev=$(cat "/sys/block/$(basename "$LOOP")/dev")
		part=$(cat "/sys/block/$(basename "$LOOP")/$(basename "$LOOP")p1/dev")
		# written, not sparse: a read of a hole does no device I/O
		dd if=/dev/zero of="$MNT/d.img" bs=1M count=8 status=none
		SPEC_MEMORY=32M spec l2 shell "\"disks\": [{\"path\": \"$MNT/d.img\", \"direct\": true}],
			\"limits\": {\"io\": {\"read_bps\": \"4M\", \"write_bps\": 4194304, \"write_iops\": 50}}" >"$TMP/l2.json"
		check "create and start l2 (limits.io, disk on $part)" bash -c "'$SHOAL' vm create -f '$TMP/l2.json' --start >/dev/null"
		got=$(cat "$base/vm-l2/io.max" 2>&1)
		want="$dev rbps=4194304 wbps=4194304 riops=max wiops=50"
		if [ "$got" = "$want" ]; then pass "io.max is set on the whole disk $dev, not the partition $part"
		else fail "io.max is set on the whole disk $dev, not the partition $part" "got '$got', want '$want'"; fi
		check "the spec shows limits.io" test "$(vm_field l2 '.spec.limits.io | [.read_bps, .write_bps, .read_iops, .write_iops] | tostring')" = '[4194304,4194304,null,50]'
		wait_console l2 "shoal>" || fail "l2 prompt"
		out=$(printf 'vblk 64 7\n' | "$SHOAL" console l2 --linger 4 2>&1)
		check "the guest's disk works under io.max" grep -q "vblk ok" <<<"$out"
		stat=$(grep "^$dev " "$base/vm-l2/io.stat")
		check "its I/O is counted on $dev in its cgroup: $stat" \
			bash -c "grep -Eq ' [rw]ios=[1-9]' <<<'$stat'"
		# the guest's own count of what it did in the time it measured,
		# against the limit with room to spare (a slow box only does less;
		# unlimited, this box does some 1500 writes/s and 250 MiB/s)
		printf 'vblk-bench 500\n' | "$SHOAL" console l2 --linger 0.5 >/dev/null 2>&1
		for _ in $(seq 240); do
			log=$("$SHOAL" console l2 --show-log 2>/dev/null)
			grep -q "vblk-bench ok" <<<"$log" && break
			sleep 0.5
		done
		rw=$(grep -o 'vblk-bench randwrite bs=4096 qd=1 ops=[0-9]* ms=[0-9]*' <<<"$log")
		sw=$(grep -o 'vblk-bench seqwrite bs=1048576 qd=2 ops=[0-9]* ms=[0-9]*' <<<"$log")
		sr=$(grep -o 'vblk-bench seqread bs=1048576 qd=2 ops=[0-9]* ms=[0-9]*' <<<"$log")
		# within_limit LINE BYTES_PER_OP LIMIT_PER_S: ops * BYTES <= 2 * LIMIT * s + 2 ops
		within_limit() {
			local ops ms
			ops=$(sed 's/.*ops=\([0-9]*\).*/\1/' <<<"$1"); ms=${1##*ms=}
			[ -n "$ops" ] && [ -n "$ms" ] && [ "$ops" -gt 0 ] &&
				[ $((ops * $2)) -le $((2 * $3 * ms / 1000 + 2 * $2)) ]
		}
		check "write_iops 50 holds the guest's 4 KiB writes ($rw)" within_limit "$rw" 1 50
		check "write_bps 4M holds its 1 MiB writes ($sw)" within_limit "$sw" 1048576 4194304
		check "read_bps 4M holds its 1 MiB reads ($sr)" within_limit "$sr" 1048576 4194304
		"$SHOAL" vm stop l2 --force >/dev/null 2>&1
	else
		fail "mkfs.ext4 and mount ${LOOP}p1"
	fi
else
	skip "io.max on a real disk" "no loop device, mkfs.ext4 or io controller here"
fi

# ---- a disk on tmpfs cannot be limited: the start is refused ----
truncate -s 1M "$TMP/t.img"
st=$(api POST /v1/vms "$(SPEC_MEMORY=32M spec l3 shell "\"disks\": [{\"path\": \"$TMP/t.img\"}], \"limits\": {\"io\": {\"write_iops\": 10}}")")
check "l3 (limits.io, disk on tmpfs) is created" test "$st" = 201
expect_error "its start is refused (409), naming the disk and tmpfs" 409 no_cgroups \
	"limits.io cannot be enforced on disk $TMP/t.img: its file system (tmpfs) has no block device" \
	api POST /v1/vms/l3/start
check "no VMM ran for l3" test "$(vm_field l3 .state)" = created
finish
