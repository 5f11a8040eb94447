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
# is refused before the VM starts; TMPDIR holds nothing afterwards.
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
finish
