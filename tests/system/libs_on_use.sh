#!/bin/bash
# libs_on_use.sh - libcurl, libcrypto and libisofs are loaded when first
# used (src/base/dl_lib.c and its shims), not linked: every process of the
# one shoal binary, each VMM included, would map them (docs/benchmarks.md,
# "VMM footprint").  Checks:
#   - neither shoal nor shoald lists them as NEEDED;
#   - they still work where used: the image store hashes (libcrypto), the
#     cloud-init seed is written (libisofs) (their own tests cover them in
#     depth; daemon_tls.sh covers libcurl);
#   - where one cannot be loaded (hidden in a mount namespace of the test's
#     own, root only), the command that needs it fails with a clear error
#     naming the file and Debian's package, and nothing else is affected.
. "$(dirname "$0")/lib.sh"
[ -x "$SHOAL" ] && [ -x "$BUILD/shoald" ] && [ -f "$GUEST" ] ||
	{ fail "build" "$SHOAL, $BUILD/shoald or $GUEST missing: make tests first"; finish; }

for b in "$SHOAL" "$BUILD/shoald"; do
	check "$(basename "$b") does not link libcurl, libcrypto or libisofs" \
		bash -c "! readelf -d '$b' | grep -E 'NEEDED.*(libcurl|libcrypto|libisofs)'"
done
check "shoal store init works (SHA-256 from libcrypto, loaded on use)" "$SHOAL" store init "$TMP/st"
echo "instance-id: t" >"$TMP/md"; echo "#cloud-config" >"$TMP/ud"

# hidden LIB CMD...: run CMD with the library LIB made unloadable
hidden() {
	local lib=$1 path
	shift
	path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
	[ -n "$path" ] || { echo "no $lib on this host"; return 99; }
	unshare -m --propagation private sh -c 'mount --bind /dev/null "$0" && exec "$@"' "$path" "$@"
}
# says RC OUT WANT_RC TEXT...: status WANT_RC and every TEXT in OUT
says() {
	local rc=$1 out=$2 want=$3 t
	shift 3
	[ "$rc" -eq "$want" ] || return 1
	for t in "$@"; do grep -qF -- "$t" <<<"$out" || return 1; done
}
if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
	skip "a library that cannot be loaded" "needs root and mount namespaces to hide one"
	finish
fi
out=$(hidden libcrypto.so.3 "$SHOAL" store init "$TMP/st2" 2>&1); rc=$?
check "libcrypto hidden: store init refused (70), naming it and libssl3" \
	says $rc "$out" 70 "SHA-256: /" "libcrypto.so.3" "(install Debian's libssl3)"
check "  ... and nothing was made" test ! -e "$TMP/st2/params.json"
out=$(hidden libisofs.so.6 "$SHOAL" run --kernel "$GUEST" --cmdline "exit 3" --timeout 5 \
	--cloud-init "user-data=$TMP/ud,meta-data=$TMP/md" 2>&1); rc=$?
check "libisofs hidden: shoal run --cloud-init refused (70), naming it and libisofs6" \
	says $rc "$out" 70 "cloud-init seed: libisofs: /" "libisofs.so.6" "(install Debian's libisofs6)"
out=$(hidden libcurl.so.4 "$SHOAL" --host https://localhost:1 --token-file "$TMP/md" vm list 2>&1); rc=$?
check "libcurl hidden: a remote call refused (70), naming it and libcurl4" \
	says $rc "$out" 70 "libcurl: /" "libcurl.so.4" "(install Debian's libcurl4)"
out=$(hidden libcurl.so.4 "$SHOAL" store ls "$TMP/st" 2>&1); rc=$?
check "libcurl hidden: commands that do not need it are unaffected (store ls)" test $rc -eq 0
finish
