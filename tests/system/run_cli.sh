#!/bin/bash
# run_cli.sh - `shoal run` as a user meets it: flags, --config, the console,
# exit statuses, and one clear line for every kind of bad input.
#
# tier: kvm (scripts/test.sh runs it in the KVM box on hosts without /dev/kvm)
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] && [ -f "$GUEST" ] || { fail "build" "build/shoal or build/shoal-guest missing"; finish; }

# expect_status NAME STATUS NEEDLE CMD...: CMD exits STATUS and prints exactly
# one line on stderr, which starts with "shoal: " and contains NEEDLE.
expect_status() {
	local name=$1 want=$2 needle=$3; shift 3
	"$@" >"$TMP/out" 2>"$TMP/err" </dev/null; local rc=$?
	local lines; lines=$(grep -c . "$TMP/err")
	if [ "$rc" -ne "$want" ]; then fail "$name" "exit $rc, expected $want: $(head -3 "$TMP/err")"
	elif [ "$lines" -ne 1 ]; then fail "$name" "expected one line on stderr, got $lines: $(head -3 "$TMP/err")"
	elif ! grep -q "^shoal: .*$needle" "$TMP/err"; then fail "$name" "message lacks '$needle': $(cat "$TMP/err")"
	else pass "$name"; fi
}

# --help documents every flag
"$SHOAL" run --help >"$TMP/help"; rc=$?
missing=""
for f in --kernel --initrd --cmdline --cpus --memory --console --cpu-template --config --timeout; do
	grep -q -- "$f" "$TMP/help" || missing="$missing $f"
done
[ $rc -eq 0 ] && [ -z "$missing" ] && pass "run --help documents every flag" || fail "run --help" "missing:$missing"

# the guest's exit code through the test device, console to a file
"$SHOAL" run --kernel "$GUEST" --cmdline "info; exit 5" --console "file:$TMP/con" --timeout 60 </dev/null; rc=$?
[ $rc -eq 5 ] && pass "guest exit code 5 is shoal's status" || fail "exit code" "got $rc"
grep -q "shoal-guest: ready cpus=1" "$TMP/con" && pass "console file:PATH gets the serial output" || fail "console file"

# a console file stays bounded: past the cap it keeps the newest output
CMD=$(for i in $(seq 50); do printf 'echo line-%03d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; ' "$i"; done; echo "exit 0")
SHOAL_CONSOLE_FILE_MAX=2048 "$SHOAL" run --kernel "$GUEST" --cmdline "$CMD" --console "file:$TMP/capped" --timeout 60 </dev/null 2>/dev/null
size=$(stat -c %s "$TMP/capped")
if [ "$size" -le 2048 ] && tail -1 "$TMP/capped" | grep -q "exit code=0" && grep -q "^shoal-guest: line-050" "$TMP/capped" \
   && ! grep -q "^shoal-guest: ready" "$TMP/capped"; then
	pass "console file capped: $size bytes kept, the newest output"
else
	fail "console file cap" "size=$size $(tail -1 "$TMP/capped")"
fi

# power-off is status 0; console none prints nothing
out=$("$SHOAL" run --kernel "$GUEST" --cmdline poweroff --console none --timeout 60 </dev/null 2>&1); rc=$?
[ $rc -eq 0 ] && [ -z "$out" ] && pass "poweroff exits 0 quietly" || fail "poweroff" "rc=$rc out=$out"

# stdio console: serial output on stdout
out=$("$SHOAL" run --kernel "$GUEST" --cpus 2 --memory 128M --cmdline "exit 0" --timeout 60 </dev/null 2>/dev/null)
echo "$out" | grep -q "ready cpus=2 mem=" && pass "console on stdout" || fail "console stdio" "$out"

# interactive commands typed on the serial console (stdin is a pipe here)
out=$(printf 'info\nexit 4\n' | "$SHOAL" run --kernel "$GUEST" --cmdline shell --timeout 60 2>/dev/null); rc=$?
[ $rc -eq 4 ] && echo "$out" | grep -q "info cpus=1" && pass "commands typed on the serial console" \
	|| fail "serial input" "rc=$rc $(echo "$out" | tail -3)"

# --config gives the same VM as flags, and flags override it
cat >"$TMP/vm.json" <<JSON
{ "kernel": "$GUEST", "cpus": 2, "memory": "64M", "cmdline": "exit 6", "console": "file:$TMP/con2", "timeout": 60 }
JSON
"$SHOAL" run --config "$TMP/vm.json" </dev/null; rc=$?
[ $rc -eq 6 ] && grep -q "ready cpus=2" "$TMP/con2" && pass "--config vm.json" || fail "--config" "rc=$rc"
"$SHOAL" run --config "$TMP/vm.json" --cpus 3 --cmdline "exit 7" </dev/null; rc=$?
[ $rc -eq 7 ] && grep -q "ready cpus=3" "$TMP/con2" && pass "flags override --config" || fail "override" "rc=$rc"
"$SHOAL" run --config "$TMP/vm.json" --print-config >"$TMP/printed.json"
"$SHOAL" run --config "$TMP/printed.json" </dev/null; rc=$?
[ $rc -eq 6 ] && pass "--print-config output is a valid --config" || fail "print-config round trip" "rc=$rc"

"$SHOAL" cpu-templates >"$TMP/t"; grep -q '^host' "$TMP/t" && grep -q '^baseline' "$TMP/t" && grep -q '^minimal' "$TMP/t" \
	&& pass "cpu-templates lists host, baseline, minimal" || fail "cpu-templates"

# ---- bad input ----
# Every check on the user's input comes before /dev/kvm is opened, so each
# case below gets its own status on any host, with or without KVM.  Where
# /dev/kvm exists (in the KVM box, on a KVM host) no_kvm hides it: the case
# runs in a private mount namespace with /dev/null over /dev/kvm, where
# reaching KVM would end in status 68 instead of the one expected.
no_kvm() {
	if [ -e /dev/kvm ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
		unshare --mount sh -c 'mount --bind /dev/null /dev/kvm && exec "$@"' no_kvm "$@"
	else
		"$@"
	fi
}
printf '#!/bin/sh\necho not a kernel\n' >"$TMP/script"
head -c 2000 "$GUEST" >"$TMP/truncated.elf"
head -c 600 /dev/urandom >"$TMP/random.bin"
chmod 000 "$TMP/script.unreadable" 2>/dev/null; cp "$TMP/script" "$TMP/unreadable"; chmod 000 "$TMP/unreadable"
long=$(head -c 9000 /dev/zero | tr '\0' a)
G=(--kernel "$GUEST" --console none --timeout 30)
expect_status "missing kernel"           66 "nonexistent"       no_kvm "$SHOAL" run --kernel /nonexistent/vmlinux
if [ "$(id -u)" -ne 0 ]; then
	expect_status "unreadable kernel"    66 "Permission denied" no_kvm "$SHOAL" run --kernel "$TMP/unreadable"
elif command -v setpriv >/dev/null; then
	chmod 755 "$TMP"   # let nobody reach the file, not read it
	expect_status "unreadable kernel"    66 "Permission denied" no_kvm setpriv --reuid=65534 --regid=65534 --clear-groups "$SHOAL" run --kernel "$TMP/unreadable"
else
	skip "unreadable kernel" "running as root without setpriv, and root reads any file"
fi
expect_status "no kernel flag"           64 "no kernel"         no_kvm "$SHOAL" run --cpus 1
expect_status "not a kernel"             65 "script"            no_kvm "$SHOAL" run --kernel "$TMP/script"
expect_status "random bytes"             65 "random.bin"        no_kvm "$SHOAL" run --kernel "$TMP/random.bin"
expect_status "truncated ELF"            65 "truncated.elf"     no_kvm "$SHOAL" run --kernel "$TMP/truncated.elf"
expect_status "zero vCPUs"               64 "cpus"              no_kvm "$SHOAL" run "${G[@]}" --cpus 0
expect_status "too many vCPUs"           64 "more than Shoal supports" no_kvm "$SHOAL" run "${G[@]}" --cpus 500
expect_status "memory too small"         64 "too small"         no_kvm "$SHOAL" run "${G[@]}" --memory 1M
expect_status "memory larger than host"  67 "more than this host has" no_kvm "$SHOAL" run "${G[@]}" --memory 900G

# --exit-file: how the VMM ended, one JSON line, a failure before the VM runs included
"$SHOAL" run --kernel "$GUEST" --cmdline "exit 5" --console none --timeout 60 --exit-file "$TMP/exit.json" </dev/null 2>/dev/null; rc=$?
check "--exit-file: the guest's exit 5, not migrated, with the reason" bash -c \
	'[ "$1" = 5 ] && jq -se "length == 1 and (.[0] | .status == 5 and .migrated == false and .reason == \"guest exited with code 5 through the test device\")" "$2" >/dev/null' _ "$rc" "$TMP/exit.json" ||
	cat "$TMP/exit.json"
no_kvm "$SHOAL" run --kernel /nonexistent/vmlinux --exit-file "$TMP/exit66.json" </dev/null 2>/dev/null; rc=$?
check "--exit-file: a kernel that is missing, status 66, and the reason naming it" bash -c \
	'[ "$1" = 66 ] && jq -se "length == 1 and (.[0] | .status == 66 and .migrated == false and (.reason | contains(\"/nonexistent/vmlinux\")))" "$2" >/dev/null' _ "$rc" "$TMP/exit66.json" ||
	cat "$TMP/exit66.json"
if [ "$(id -u)" = 0 ]; then     # the jail closes inherited descriptors: it must keep this one
	mkdir -p "$TMP/jroot"
	"$SHOAL" run --kernel "$GUEST" --cmdline "exit 6" --console none --timeout 60 --jail "$TMP/jroot" \
		--exit-file "$TMP/exitj.json" </dev/null 2>/dev/null; rc=$?
	check "--exit-file with --jail: written from inside the jail (status 6)" bash -c \
		'[ "$1" = 6 ] && jq -se "length == 1 and .[0].status == 6" "$2" >/dev/null' _ "$rc" "$TMP/exitj.json" ||
		cat "$TMP/exitj.json"
else
	skip "--exit-file with --jail" "the jail needs root"
fi
expect_status "--exit-file that cannot be written" 66 "exit-file: /nonexistent/dir/f" no_kvm "$SHOAL" run "${G[@]}" --exit-file /nonexistent/dir/f
expect_status "memory not a size"        64 "not a size"        no_kvm "$SHOAL" run "${G[@]}" --memory lots
expect_status "command line too long"    64 "command line"      no_kvm "$SHOAL" run "${G[@]}" --cmdline "$long"
expect_status "unknown CPU template"     64 "unknown CPU template 'pentium'" no_kvm "$SHOAL" run "${G[@]}" --cpu-template pentium
expect_status "unknown flag"             64 "unknown option --frobnicate" no_kvm "$SHOAL" run --frobnicate
expect_status "bad console"              64 "console"           no_kvm "$SHOAL" run "${G[@]}" --console tty
expect_status "missing disk image"       66 "nonexistent/disk.img" no_kvm "$SHOAL" run "${G[@]}" --disk /nonexistent/disk.img
expect_status "bad disk option"          64 "queues '99'"       no_kvm "$SHOAL" run "${G[@]}" --disk "$TMP/random.bin,queues=99"
expect_status "bad net option"           64 "unicast MAC"       no_kvm "$SHOAL" run "${G[@]}" --net tap=t0,mac=01:00:5e:00:00:01
# the early exits free what they hold (an ASan build with detect_leaks=1
# adds a LeakSanitizer report to stderr otherwise)
expect_status "early exit with --api-socket" 66 "nonexistent"   no_kvm "$SHOAL" run --api-socket "$TMP/api.sock" --kernel /nonexistent/vmlinux
echo '{"kernel": 5}' >"$TMP/bad.json"
expect_status "config wrong type"        64 "bad.json"          no_kvm "$SHOAL" run --config "$TMP/bad.json"
echo '{"cpus": 2,' >"$TMP/broken.json"
expect_status "config broken JSON"       64 "broken.json: line"  no_kvm "$SHOAL" run --config "$TMP/broken.json"
expect_status "unknown command"          64 "not a shoal command" "$SHOAL" frobnicate

# A guest that triple-faults: status 80, a reason line and a register dump.
if gcc -c -o "$TMP/triple.o" "$ROOT/tests/system/fixtures/triple.S" && \
   ld -n -o "$TMP/triple.elf" -Ttext=0x100000 -e start "$TMP/triple.o" 2>/dev/null; then
	"$SHOAL" run --kernel "$TMP/triple.elf" --console none --timeout 60 </dev/null 2>"$TMP/err"; rc=$?
	if [ $rc -eq 80 ] && grep -q "^shoal: vcpu0: guest triple fault" "$TMP/err" && grep -q "rip" "$TMP/err"; then
		pass "triple fault: status 80, reason and register dump"
	else
		fail "triple fault" "rc=$rc $(head -3 "$TMP/err")"
	fi
else
	fail "triple fault fixture" "could not assemble tests/system/fixtures/triple.S"
fi
# An instruction KVM cannot emulate: status 81, the reason and a register dump.
if gcc -c -o "$TMP/internal.o" "$ROOT/tests/system/fixtures/internal.S" && \
   ld -n -o "$TMP/internal.elf" -Ttext=0x100000 -e start "$TMP/internal.o" 2>/dev/null; then
	"$SHOAL" run --kernel "$TMP/internal.elf" --console none --timeout 60 </dev/null 2>"$TMP/err"; rc=$?
	if [ $rc -eq 81 ] && grep -q "^shoal: vcpu0: KVM internal error 1 (emulation failure" "$TMP/err" && grep -q "rip" "$TMP/err"; then
		pass "KVM internal error: status 81, reason and register dump"
	elif [ $rc -eq 80 ]; then
		skip "KVM internal error" "this KVM runs ring-0 xrstor natively, so there is no emulation failure to provoke"
	else
		fail "KVM internal error" "rc=$rc $(head -3 "$TMP/err")"
	fi
fi
finish
