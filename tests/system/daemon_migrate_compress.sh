#!/bin/bash
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
# daemon_migrate_compress.sh - `shoal vm migrate NAME --to URL --compress
# zstd` through two shoald on this host, each on its Unix socket
# (docs/daemon.md "Live migration", docs/migration.md "Compression"):
#   - wrong values are refused, naming them: the CLI's --compress lz4
#     (64), the API's "compress": "zstd:0" (400 invalid_request), and the
#     VM runs on on A;
#   - a test-guest VM on A that filled 16 MiB with its (incompressible)
#     pattern and wrote one word into each page of 2 MiB more moves to B
#     with --compress zstd: the answer (-o json) is a MigrateResult with
#     compress "zstd" and fewer ram_data_bytes than ram_raw_bytes, B runs
#     it, and its guest there verifies its pattern.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/daemon_lib.bash"
need_daemon
require_kvm daemon_migrate_compress

SA=$TMP/a/shoald.sock
SB=$TMP/b/shoald.sock
mkdir -p "$TMP/a" "$TMP/b"
BUILDDIR=$(cd "$BUILD" && pwd)
start() {           # NAME: a daemon on $TMP/NAME, waited for
	local sock=$TMP/$1/shoald.sock
	"$SHOALD" --state-dir "$TMP/$1" --allow-dir "$BUILDDIR" >>"$TMP/$1.log" 2>&1 &
	for _ in $(seq 200); do
		curl -s --unix-socket "$sock" http://d/v1/version >/dev/null && return 0
		sleep 0.05
	done
	echo "shoald $1 did not start:"; cat "$TMP/$1.log"; return 1
}
start a || { fail "daemon A starts"; finish; }
start b || { fail "daemon B starts"; finish; }
pass "daemons A and B start"
onA() { SHOAL_SOCKET=$SA "$@"; }
onB() { SHOAL_SOCKET=$SB "$@"; }

A=0x2000000 B=0x3000000
SPEC_MEMORY=64M
check "create and start web-z on A (fill 16M, one word per page of 2 MiB)" \
	onA "$SHOAL" vm create -f <(spec web-z "fill $A 16M 7; dirty 0 2 $B 2M; echo ready; shell") --start
onA wait_console_long web-z "shoal>" || fail "web-z reaches its shell" "$(onA "$SHOAL" console web-z --show-log | tail -c 300)"

out=$(onA "$SHOAL" vm migrate web-z --to "$SB" --compress lz4 2>&1); rc=$?
check "vm migrate --compress lz4: refused (64), naming the value" \
	bash -c "[ $rc = 64 ] && grep -qF \"'lz4'\" <<<\"\$1\"" _ "$out"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$SA" -X POST \
	-H 'Content-Type: application/json' --data-binary "{\"to\": \"$SB\", \"compress\": \"zstd:0\"}" \
	http://d/v1/vms/web-z/migrate)
check "the API refuses \"compress\": \"zstd:0\" (400, naming it)" \
	bash -c "[ $code = 400 ] && jq -e '.error.code == \"invalid_request\" and (.error.message | contains(\"zstd:0\"))' '$TMP/body' >/dev/null || { cat '$TMP/body'; false; }"
check "... and web-z runs on on A" bash -c "[ \"\$(curl -s --unix-socket '$SA' http://d/v1/vms/web-z | jq -r .state)\" = running ]"

out=$(onA timeout 180 "$SHOAL" vm migrate web-z --to "$SB" --compress zstd -o json 2>"$TMP/err"); rc=$?
echo "$out" >"$TMP/result.json"
check "A to B with --compress zstd: the answer says zstd, fewer bytes than the pages' own" \
	bash -c "[ $rc = 0 ] && jq -e '.compress == \"zstd\" and .ram_data_bytes > 0 and .ram_data_bytes < .ram_raw_bytes and .destination_state == \"running\"' '$TMP/result.json' >/dev/null || { cat '$TMP/result.json' '$TMP/err'; false; }"
echo "note: $(jq -r '"\(.ram_raw_bytes / 1024 | floor) KiB of data pages sent as \(.ram_data_bytes / 1024 | floor) KiB, \(.bytes / 1024 | floor) KiB in all"' "$TMP/result.json" 2>/dev/null) (a figure)"
check "the answer is a MigrateResult (api/openapi.yaml)" python3 - "$ROOT/api/openapi.yaml" "$TMP/result.json" <<'PY'
import json, sys, yaml
s = yaml.safe_load(open(sys.argv[1]))["components"]["schemas"]["MigrateResult"]
v = json.load(open(sys.argv[2]))
errs = [k + " missing" for k in s.get("required", []) if k not in v]
errs += [k + " undocumented" for k in v if k not in s["properties"]]
print("; ".join(errs)) if errs else None
sys.exit(1 if errs else 0)
PY
check "B runs web-z, A's record is gone" bash -c \
	"[ \"\$(curl -s --unix-socket '$SB' http://d/v1/vms/web-z | jq -r .state)\" = running ] && [ \"\$(curl -s -o /dev/null -w '%{http_code}' --unix-socket '$SA' http://d/v1/vms/web-z)\" = 404 ]"
onB type_console web-z "verify $A 16M 7"$'\r'
if onB wait_console_long web-z "verify ok"; then pass "on B the guest finds its pattern"
else fail "on B the guest finds its pattern" "$(onB "$SHOAL" console web-z --show-log | tail -c 300)"; fi
finish
