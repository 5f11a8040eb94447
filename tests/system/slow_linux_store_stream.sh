#!/bin/bash
# slow_linux_store_stream.sh - a Linux guest boots with a disk that streams
# from an image server (issue 14 item 4, docs/store.md "Streaming into a
# VM"): `shoal run` with its default sandboxing (seccomp on), a qcow2
# overlay whose backing file is a store: source, `shoal store serve` on
# loopback with client certificates made here.
# tier: kvm
#
# The image: a 32 MiB ext4 file system (mkfs.ext4 -d) holding 6 MiB of
# random files, a static program (tests/linux/vsock_echo) and SUMS, the
# SHA-256 of each file, imported into a store and granted to the client.
#   1. Prefetch off.  The guest mounts the overlay's ext4, checks 3 of the
#      files (not the two largest) with sha256sum -c, runs the program from the disk, writes
#      a file and powers off.  The VMM ends with status 0 (no seccomp kill:
#      its store threads fetched under their own filter), and its counters
#      line shows chunks fetched on demand only, less than the whole image.
#   2. Prefetch on (the overlay's backing name changed with img rebase -u),
#      the VMM waiting for the prefetch at its exit (test hook
#      SHOAL_TEST_STREAM_WAIT_PREFETCH).  The guest sees the first boot's
#      write, and all 5 files check.  Counters: nothing missing; the cache
#      then holds the image by name, and `shoal store get` from it is byte
#      for byte the image; the overlay alone holds the guest's write (the
#      store's image is unchanged, checked with debugfs on a flattened copy).
#      The same boot has a second disk, --disk store:.../fs2,store-cache=
#      DIR2,...,readonly (the --disk spelling of the driver's options; fs2
#      is the same image under another name, so its counters line is its
#      own): the guest mounts it read-only and checks 3 files.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/store_lib.bash"
. "$(dirname "$0")/linux_lib.bash"

linux_require
for t in mkfs.ext4 debugfs cpio openssl python3; do
	command -v $t >/dev/null || { skip "$(linux_script)" "$t is not installed"; exit 0; }
done
SPID=
stream_cleanup() {
	if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; fi
	linux_cleanup
}
trap stream_cleanup EXIT
cd "$TMP" || exit 1

# ---- keys and certificates (store_lib.bash) ----
store_certs || { fail "setup" "openssl"; finish; }

# ---- the ext4 image with real files ----
mkdir -p src/bin src/data
cp "$LINUX_BINS/vsock_echo" src/bin/ || { fail "setup" "no $LINUX_BINS/vsock_echo"; finish; }
head -c 2M /dev/urandom >src/data/a.bin
head -c 3M /dev/urandom >src/data/b.bin
head -c 1M /dev/urandom >src/data/c.bin
seq 1 20000 >src/data/numbers.txt
(cd src && sha256sum bin/vsock_echo data/* >SUMS && grep -v 'a.bin\|b.bin' SUMS >SUMS1)
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d src fs.img 32M >/dev/null 2>mkfs.err ||
	{ fail "setup" "mkfs.ext4: $(cat mkfs.err)"; finish; }
"$SHOAL" store init st >/dev/null && "$SHOAL" store add st fs.img --name fs >/dev/null &&
	"$SHOAL" store add st fs.img --name fs2 >/dev/null &&
	"$SHOAL" store grant st c1.pem fs >/dev/null && "$SHOAL" store grant st c1.pem fs2 >/dev/null || { fail "setup" "store add/grant"; finish; }
store_serve st || { fail "serve" "$(cat serve.err)"; finish; }
SRC="store:https://127.0.0.1:$PORT/fs,cache=$TMP/cache,cert=$TMP/c1.pem,key=$TMP/c1.key,ca=$TMP/ca.pem"
"$SHOAL" img create -f qcow2 -b "$SRC,prefetch=off" -F raw ov.qcow2 >/dev/null 2>create.err &&
	pass "setup: a 32 MiB ext4 image in the store (as fs and fs2), served on port $PORT; a qcow2 overlay over $SRC,prefetch=off" ||
	{ fail "overlay over a store: source" "$(cat create.err)"; finish; }
# counters from the line printed at close: demand prefetch bytes missing
counts() { sed -n 's/.*fetched \([0-9]*\) chunks on demand, \([0-9]*\) by prefetch, \([0-9]*\) bytes .*; \([0-9]*\) of .*/\1 \2 \3 \4/p' "$1" | tail -1; }

CHECK='
mkdir -p /mnt/s
mount -t ext4 /dev/vda /mnt/s || t "mount failed"
cd /mnt/s
if sha256sum -c $SUMS >/tmp/check 2>&1; then t "verify ok $(wc -l <$SUMS) files"
else t "verify FAILED: $(grep -v ": OK" /tmp/check | head -3 | tr "\n" " ")"; fi
./bin/vsock_echo >/tmp/run 2>&1; t "ran $? $(head -c 20 /tmp/run)"
'
linux_initrd "$TMP/b1.img" "SUMS=SUMS1$CHECK"'
echo "written by the streamed guest" >written
cd /
umount /mnt/s && t "umount ok"
poweroff'
linux_initrd "$TMP/b2.img" "SUMS=SUMS$CHECK"'
t "written $(cat written)"
mkdir -p /mnt/r
mount -t ext4 -o ro,noload /dev/vdb /mnt/r || t "mount-vdb failed"
cd /mnt/r && sha256sum -c SUMS1 >/dev/null 2>&1 && t "ro-verify ok"
cd /
umount /mnt/r
umount /mnt/s && t "umount ok"
poweroff'

# ---- 1: prefetch off ----
T0=$SECONDS
linux_start b1 "$SHOAL_KIT_BZIMAGE" "$TMP/b1.img" --disk ov.qcow2
linux_wait b1 "umount ok" 120
linux_poweroff_ok b1
linux_same "b1: the guest checks 3 files of the streamed disk against their SHA-256 ($((SECONDS - T0)) s boot)" "$(linux_fact b1 verify)" "ok 3 files"
linux_same "b1: the guest runs a program from the streamed disk (its usage, status 2)" \
	"$(linux_fact b1 ran)" "2 usage: vsock_echo co"
read -r dem pre bytes miss < <(counts "$TMP/b1.vmm")
size=$(stat -c %s fs.img)
if [ -n "$dem" ] && [ "$dem" -gt 0 ] && [ "$pre" -eq 0 ] && [ "$miss" -gt 0 ] && [ "$bytes" -lt $((size / 2)) ]; then
	pass "b1: only part of the image was fetched, on demand: $dem chunks, $bytes of $size bytes ($(awk -v a="$bytes" -v b="$size" 'BEGIN { printf "%.1f", 100 * a / b }') %), $miss chunks never fetched"
else
	fail "b1: only part of the image was fetched, on demand" "counters: '$dem $pre $bytes $miss'; $(grep -v '^$' "$TMP/b1.vmm" | tail -3 | tr '\n' ' ')"
fi
grep -q "forbidden syscall" "$TMP/b1.vmm" && fail "b1: no seccomp kill" "$(grep forbidden "$TMP/b1.vmm")"

# ---- 2: prefetch on, waited for at exit ----
T0=$SECONDS
"$SHOAL" img rebase -u -b "$SRC" -F raw ov.qcow2 2>rebase.err ||
	fail "img rebase -u to prefetch on" "$(cat rebase.err)"
SHOAL_TEST_STREAM_WAIT_PREFETCH=1 linux_start b2 "$SHOAL_KIT_BZIMAGE" "$TMP/b2.img" --disk ov.qcow2 \
	--disk "store:https://127.0.0.1:$PORT/fs2,store-cache=$TMP/cache2,store-cert=$TMP/c1.pem,store-key=$TMP/c1.key,store-ca=$TMP/ca.pem,store-prefetch=off,cache=1M,readonly"
linux_wait b2 "umount ok" 120
linux_poweroff_ok b2
linux_same "b2: the first boot's write is on the overlay" "$(linux_fact b2 written)" "written by the streamed guest"
linux_same "b2: all 5 files check" "$(linux_fact b2 verify)" "ok 5 files"
read -r dem2 pre2 bytes2 miss2 < <(grep '/fs:' "$TMP/b2.vmm" | counts /dev/stdin)
if [ -n "$miss2" ] && [ "$miss2" -eq 0 ] && [ "$pre2" -gt 0 ]; then
	pass "b2: the prefetch fetched the other $pre2 chunks ($dem2 on demand): nothing missing ($((SECONDS - T0)) s boot)"
else
	fail "b2: the prefetch completes the disk" "counters: '$dem2 $pre2 $bytes2 $miss2'; $(grep -v '^$' "$TMP/b2.vmm" | tail -3 | tr '\n' ' ')"
fi
"$SHOAL" store get cache fs got.img 2>get.err && cmp -s got.img fs.img &&
	pass "the cache records image fs: store get from it equals the image byte for byte" ||
	fail "the cache records the image" "$(cat get.err) $(cmp got.img fs.img 2>&1)"
"$SHOAL" img convert -O raw ov.qcow2 flat.img 2>conv.err &&
	[ "$(debugfs -R "cat /written" flat.img 2>/dev/null)" = "written by the streamed guest" ] &&
	[ -z "$(debugfs -R "cat /written" got.img 2>/dev/null)" ] &&
	pass "the guest's write is in the overlay (debugfs on it flattened), not in the store's image" ||
	fail "the write went to the overlay" "$(cat conv.err)"

# ---- the second disk: --disk store:...,store-cache=DIR,...,readonly ----
read -r dem3 pre3 bytes3 miss3 < <(grep '/fs2:' "$TMP/b2.vmm" | counts /dev/stdin)
[ "$(linux_fact b2 ro-verify)" = ok ] && [ "${dem3:-0}" -gt 0 ] && [ "$pre3" = 0 ] && [ "$miss3" -gt 0 ] &&
	pass "b2: --disk store:.../fs2,store-cache=...,store-prefetch=off,cache=1M,readonly: the guest reads 3 files from it read-only ($dem3 chunks on demand, $miss3 never fetched)" ||
	fail "b2: a read-only --disk store: disk" "verify '$(linux_fact b2 ro-verify)' counters '$dem3 $pre3 $bytes3 $miss3'; $(grep fs2 "$TMP/b2.vmm" | head -3)"
finish
