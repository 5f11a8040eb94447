#!/bin/bash
# cidata.sh - `shoal run --cloud-init` and a config's "cloud_init" (the
# NoCloud seed, boot/cidata.c) as the command line sees them, and the seed
# disk as the test guest's virtio-blk driver sees it in a confined VMM (the
# way shoald runs one: "confine" in --config).
#
# Without KVM: bad flags (a key missing, unknown, twice; a missing file;
# with --restore) exit 64 or 66 with one line naming it, --print-config
# shows the files, and no seed directory is left behind.  With KVM: the
# guest's `vblk dev=1` finds the seed after the user's disk (serial cidata,
# read-only, its one write refused); a file outside the confined directory
# is refused before the VM starts; TMPDIR holds nothing afterwards.  A
# snapshot of a VM with a seed keeps a copy of it (cidata.img, checksummed);
# restored from a copy of the snapshot directory, the guest reads the seed
# again; a damaged copy is refused (84).
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] && [ -f "$GUEST" ] || { skip "cidata" "build/shoal or build/shoal-guest not built"; finish; }

OK=$TMP/ok
SEEDTMP=$TMP/seedtmp
mkdir -p "$OK" "$SEEDTMP"
printf '#cloud-config\nhostname: t\n' >"$OK/user-data"
printf 'instance-id: iid-1\n' >"$OK/meta-data"
printf 'secret\n' >"$TMP/outside"
"$SHOAL" img create -f raw "$OK/disk.img" 1M >/dev/null || { fail "shoal img create"; finish; }
export TMPDIR=$SEEDTMP

# expect WHAT STATUS TEXT CMD...: CMD exits STATUS, its one line has TEXT
expect() {
	local what=$1 want=$2 text=$3 out rc
	shift 3
	out=$("$@" </dev/null 2>&1); rc=$?
	if [ "$rc" = "$want" ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | grep -qF -- "$text"; then
		pass "$what"
	else
		fail "$what" "status $rc, wanted $want; output: $(echo "$out" | head -3)"
	fi
}
K=(--kernel "$GUEST" --console none --timeout 60)
expect "meta-data missing: 64" 64 "--cloud-init: meta-data is missing: cloud-init's NoCloud seed needs both" \
	"$SHOAL" run "${K[@]}" --cloud-init "user-data=$OK/user-data"
expect "an unknown key: 64" 64 "--cloud-init: unknown key 'vendor-data'" \
	"$SHOAL" run "${K[@]}" --cloud-init "user-data=$OK/user-data,meta-data=$OK/meta-data,vendor-data=x"
expect "a key twice: 64" 64 "--cloud-init: meta-data is given twice" \
	"$SHOAL" run "${K[@]}" --cloud-init "user-data=$OK/user-data,meta-data=$OK/meta-data,meta-data=y"
expect "a missing file: 66, named" 66 "cloud-init user-data: $TMP/nope: No such file or directory" \
	"$SHOAL" run "${K[@]}" --cloud-init "user-data=$TMP/nope,meta-data=$OK/meta-data"
expect "with --restore: 64" 64 "--cloud-init cannot go with it" \
	"$SHOAL" run --restore "$TMP" --cloud-init "user-data=$OK/user-data,meta-data=$OK/meta-data"
out=$("$SHOAL" run "${K[@]}" --cloud-init "user-data=$OK/user-data,meta-data=$OK/meta-data" --print-config)
if [ "$(echo "$out" | jq -c .cloud_init)" = "{\"user_data\":\"$OK/user-data\",\"meta_data\":\"$OK/meta-data\"}" ]; then
	pass "--print-config shows cloud_init"
else
	fail "--print-config shows cloud_init" "$(echo "$out" | jq -c .cloud_init)"
fi
check "no seed directory left behind by the refusals" test -z "$(ls -A "$SEEDTMP")"

# `shoal img cidata OUT ...`: the same seed as a file (for QEMU's -cdrom)
"$SHOAL" img cidata "$TMP/seed.iso" "user-data=$OK/user-data,meta-data=$OK/meta-data"
check "img cidata writes the seed: an ISO 9660 volume 'cidata' with user-data and meta-data" bash -c \
	"[ \"\$(dd if='$TMP/seed.iso' bs=1 skip=32808 count=6 2>/dev/null)\" = cidata ] &&
	 isoinfo -R -i '$TMP/seed.iso' -x /user-data | cmp -s - '$OK/user-data' &&
	 isoinfo -R -i '$TMP/seed.iso' -x /meta-data | cmp -s - '$OK/meta-data'"
out=$("$SHOAL" img cidata "$TMP/seed.iso" "user-data=$OK/user-data,meta-data=$OK/meta-data" 2>&1); rc=$?
check "img cidata does not overwrite a file: 64, saying so ($out)" bash -c "[ $rc = 64 ] && grep -q 'already exists' <<<'$out'"
out=$("$SHOAL" img cidata "$TMP/seed2.iso" "user-data=$TMP/none,meta-data=$OK/meta-data" 2>&1); rc=$?
check "img cidata of a missing file: 66 naming it, no file left ($out)" bash -c "[ $rc = 66 ] && grep -q '$TMP/none' <<<'$out' && [ ! -e '$TMP/seed2.iso' ]"

[ -c /dev/kvm ] && [ -r /dev/kvm ] || { skip "cidata: the seed in a VM" "/dev/kvm is not available"; finish; }

# config VALUE-OF-META-DATA: a confined VM config, as shoald writes one
config() {
	cat >"$TMP/vm.json" <<EOF
{ "kernel": "$OK/guest", "cmdline": "vblk 16 1 dev=1; exit 0", "memory": "64M",
  "console": "file:$OK/con", "timeout": 60,
  "disks": [ { "path": "$OK/disk.img" } ],
  "cloud_init": { "user_data": "$OK/user-data", "meta_data": "$1" },
  "confine": [ "$OK" ] }
EOF
}
cp "$GUEST" "$OK/guest"
config "$OK/meta-data"
"$SHOAL" run --config "$TMP/vm.json" </dev/null >"$TMP/vmm" 2>&1; rc=$?
if [ $rc = 0 ] && grep -q "vblk ok .*serial=cidata ro=1" "$OK/con"; then
	pass "confined VMM: the guest's second disk is the seed (serial cidata, read-only), status 0"
else
	fail "confined VMM: the guest's second disk is the seed" "status $rc; $(grep -m2 vblk "$OK/con"); $(head -2 "$TMP/vmm")"
fi
check "the seed's directory is gone after the run" test -z "$(ls -A "$SEEDTMP")"
config "$TMP/outside"
expect "confined VMM: meta-data outside its directory is refused" 64 \
	"cloud-init meta-data: $TMP/outside: $TMP/outside is not beneath an allowed directory" \
	"$SHOAL" run --config "$TMP/vm.json"

# --- a snapshot keeps a copy of the seed (its file is gone), and restores ---
ctl() {          # ctl SOCKET JSON: one control request, its reply line
	python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); print(s.makefile("rb").readline().decode().strip())
PY
}
wait_for() {     # wait_for FILE TEXT: up to 60 s
	for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1
}
# restore_typed DIR TYPED: restore DIR, type TYPED once it runs; its status
restore_typed() {
	rm -f "$TMP/in" "$TMP/r.sock" && mkfifo "$TMP/in"
	"$SHOAL" run --restore "$1" --console stdio --api-socket "$TMP/r.sock" --timeout 120 \
		<"$TMP/in" >"$TMP/r.con" 2>"$TMP/r.err" &
	local pid=$! rc
	exec 8>"$TMP/in"
	for _ in $(seq 300); do
		ctl "$TMP/r.sock" '{"cmd": "status"}' 2>/dev/null | grep -q '"running"' && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	printf '%s\r' "$2" >&8 2>/dev/null
	wait $pid; rc=$?
	exec 8>&-
	return $rc
}
"$SHOAL" run --kernel "$GUEST" --cmdline "vblk 16 1 dev=1; shell" --memory 64M \
	--disk "$OK/disk.img" --cloud-init "user-data=$OK/user-data,meta-data=$OK/meta-data" \
	--console "file:$TMP/s.con" --api-socket "$TMP/s.sock" --timeout 120 </dev/null 2>"$TMP/s.err" &
spid=$!
wait_for "$TMP/s.con" "shoal> " || fail "the VM with a seed reaches its shell" "$(tail -3 "$TMP/s.con")"
out=$("$SHOAL" snapshot create --socket "$TMP/s.sock" "$TMP/snap" 2>&1); rc=$?
check "a VM with a cloud-init seed is saved (status $rc: $out)" [ $rc = 0 ]
check "the snapshot holds the seed's copy: an ISO 9660 volume 'cidata' (cidata.img)" \
	test "$(dd if="$TMP/snap/cidata.img" bs=1 skip=32808 count=6 2>/dev/null)" = cidata
check "its manifest: the last disk is the seed, with the copy's checksum" \
	jq -e '.disks[-1].seed == true and .disks[-1].path == "cidata.img" and (.files["cidata.img"].xxh3 | length) == 16' "$TMP/snap/manifest.json"
ctl "$TMP/s.sock" '{"cmd": "stop", "mode": "force"}' >/dev/null
wait $spid
cp -a "$TMP/snap" "$TMP/snap-moved"          # a snapshot travels: no path of the host's
rm -rf "$TMP/snap"
restore_typed "$TMP/snap-moved" "vblk 16 1 dev=1; exit 4"; rc=$?
if [ $rc = 4 ] && grep -q "vblk ok .*serial=cidata ro=1" "$TMP/r.con"; then
	pass "restored from a copied snapshot, the guest reads the seed again (serial cidata, read-only)"
else
	fail "restored, the guest reads the seed again" "status $rc; $(grep -m2 vblk "$TMP/r.con"); $(tail -2 "$TMP/r.err")"
fi
printf 'X' | dd of="$TMP/snap-moved/cidata.img" bs=1 seek=40000 conv=notrunc 2>/dev/null
out=$("$SHOAL" run --restore "$TMP/snap-moved" --console none --timeout 30 </dev/null 2>&1); rc=$?
if [ $rc = 84 ] && echo "$out" | grep -q "cidata.img: checksum .* (the file is damaged)"; then
	pass "a damaged seed copy is refused (84), naming it"
else
	fail "a damaged seed copy is refused (84), naming it" "status $rc: $out"
fi
finish
