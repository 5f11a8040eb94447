#!/bin/bash
# daemon_store_refusal.sh - shoald refuses a store: disk with a clear error
# (docs/store.md, "Streaming into a VM"): its VMMs are jailed, and a store:
# disk fetches over the network and writes its cache at run time, which a
# jailed VMM cannot do yet.  A VM spec whose disk is a store: source, and
# one whose disk is a qcow2 overlay with a store: backing file, are each
# refused at `vm create` (400 invalid_spec naming the disk and what to do
# instead); no VMM is started.  Host only, no KVM.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"

need_daemon
[ -f "$GUEST" ] || { skip "daemon_store_refusal" "$GUEST missing"; finish; }
start_daemon || { fail "daemon starts"; finish; }
SRC="store:https://127.0.0.1:7443/fs,cache=$TMP/cache,cert=$TMP/c.pem,key=$TMP/c.key,ca=$TMP/ca.pem"

expect_error "a disk that is a store: source is refused (400), naming the disk and shoal store pull" \
	400 invalid_spec "disks[0].path: store:https://127.0.0.1:7443/fs" \
	api POST /v1/vms "$(spec s1 shell "\"disks\": [{\"path\": \"$SRC\", \"readonly\": true}]")"
jq -r .error.message "$TMP/body" | grep -q "not supported through shoald yet.*shoal store pull" &&
	pass "the refusal says why and what to do: $(jq -r .error.message "$TMP/body" | cut -c1-160)..." ||
	fail "the refusal says why" "$(body)"

# an overlay whose backing name is a store: source (no server listens: the
# name is written by rebase -u, whose check of the new backing then fails)
truncate -s 1M "$TMP/base.raw"
"$SHOAL" img create -q -f qcow2 -b "$TMP/base.raw" -F raw "$TMP/ov.qcow2" &&
	{ "$SHOAL" img rebase -u -b "$SRC" -F raw "$TMP/ov.qcow2" 2>/dev/null; true; } &&
	"$SHOAL" img info "$TMP/ov.qcow2" | grep -qF "backing file: $SRC" ||
	{ fail "an overlay named over a store: source" "$("$SHOAL" img info "$TMP/ov.qcow2" 2>&1)"; finish; }
expect_error "a qcow2 overlay whose backing file is a store: source is refused (400)" \
	400 invalid_spec "the backing file of $TMP/ov.qcow2" \
	api POST /v1/vms "$(spec s2 shell "\"disks\": [{\"path\": \"$TMP/ov.qcow2\"}]")"
[ "$(api GET /v1/vms)" = 200 ] && [ "$(jq '.vms | length' "$TMP/body")" = 0 ] &&
	pass "no VM was created" || fail "no VM was created" "$(body)"
finish
