#!/bin/bash
# slow_deb.sh - Shoal's Debian package (issue 11, "Packaging and
# operations"; scripts/build-deb.sh, debian/, docs/install.md).  No KVM.
#
#   - scripts/build-deb.sh builds shoal_VERSION_amd64.deb with
#     dpkg-buildpackage and debhelper, VERSION the one `shoal --version`
#     prints;
#   - its Depends has the libraries dpkg-shlibdeps found (jansson, liburing,
#     ...) and, for each library a src/base/*_dl.c loads on first use (which
#     dpkg-shlibdeps cannot see), the Debian package that file names;
#   - it holds the programs, the manual pages, the bash completion and the
#     systemd unit, whose ExecStart is /usr/bin/shoald;
#   - the programs are built with Debian's hardening flags (the Makefile
#     takes CPPFLAGS and LDFLAGS from dh): PIE, full RELRO and bind-now,
#     fortified calls;
#   - its postinst, written by dh_installsystemd, enables shoald.service
#     and starts it where systemd runs;
#   - the packaged shoald, unpacked, starts and serves its API to the
#     packaged shoal.
# Not done here: installing it on a host whose PID 1 is systemd (the test
# machines have none) and `systemctl start shoald` there.
. "$(dirname "$0")/lib.sh"

for t in dpkg-deb readelf nm git; do
	command -v $t >/dev/null || { skip slow_deb.sh "$t missing (scripts/install-deps.sh)"; exit 0; }
done
ver=$("$SHOAL" --version | awk '{print $2}')
out=$("$ROOT/scripts/build-deb.sh" "$TMP/out" 2>&1)
deb=$TMP/out/shoal_${ver}_amd64.deb
if [ -f "$deb" ]; then
	pass "scripts/build-deb.sh builds shoal_${ver}_amd64.deb (the version shoal --version prints)"
else
	fail "scripts/build-deb.sh builds shoal_${ver}_amd64.deb" "$(tail -5 <<<"$out")"
	finish
fi

dep=$(dpkg-deb -f "$deb" Depends)
missing=""
for p in libc6 libjansson4 liburing2 libzstd1 zlib1g libxxhash0 libseccomp2 libsqlite3-0; do
	grep -qE "(^|, )$p( |,|$)" <<<"$dep" || missing="$missing $p"
done
check "Depends has what dpkg-shlibdeps found (libc6 libjansson4 liburing2 ...)${missing:+: missing$missing}" test -z "$missing"
missing=""
n=0
while read -r pkg; do
	n=$((n + 1))
	grep -qE "(^|, )$pkg( |,|$)" <<<"$dep" || missing="$missing $pkg"
done < <(grep -ho 'DL_LIB_INIT("[^"]*", "[^"]*"' "$ROOT"/src/*/*.c | sed 's/.*", "\(.*\)"$/\1/' | sort -u)
check "Depends names the package of each library loaded on first use ($n, from src/*/*.c's DL_LIB_INIT)${missing:+: missing$missing}" \
	test "$n" -ge 4 -a -z "$missing"

R=$TMP/root
dpkg-deb -x "$deb" "$R"
files="usr/bin/shoal usr/bin/shoald usr/share/man/man1/shoal.1.gz usr/share/man/man8/shoald.8.gz
	usr/share/bash-completion/completions/shoal lib/systemd/system/shoald.service usr/share/doc/shoal/copyright"
missing=""
for f in $files; do [ -e "$R/$f" ] || missing="$missing $f"; done
check "the package holds the programs, manual pages, completion, unit and copyright${missing:+: missing$missing}" test -z "$missing"
check "the unit starts /usr/bin/shoald" grep -q '^ExecStart=/usr/bin/shoald ' "$R/lib/systemd/system/shoald.service"

hard() {
	local b=$1 why=""
	readelf -h "$b" | grep -q 'Type:.*DYN' || why="$why not PIE;"
	readelf -l "$b" | grep -q GNU_RELRO || why="$why no RELRO;"
	readelf -d "$b" | grep -qE 'FLAGS.*BIND_NOW|\(BIND_NOW\)' || why="$why no BIND_NOW;"
	nm -D "$b" | grep -q ' U __[a-z]*_chk' || why="$why no fortified calls;"
	[ -z "$why" ] || { echo "$b:$why"; return 1; }
}
for b in shoal shoald; do
	check "$b is built with Debian's hardening (PIE, RELRO, bind-now, _FORTIFY_SOURCE)" hard "$R/usr/bin/$b"
done

mkdir -p "$TMP/ctl"
dpkg-deb -e "$deb" "$TMP/ctl"
check "postinst enables shoald.service (dh_installsystemd)" grep -q "deb-systemd-helper enable 'shoald.service'" "$TMP/ctl/postinst"
check "postinst starts it where systemd runs" grep -q "deb-systemd-invoke \$_dh_action 'shoald.service'" "$TMP/ctl/postinst"

# The packaged programs run: the daemon serves the packaged CLI.
"$R/usr/bin/shoald" --state-dir "$TMP/state" --socket "$TMP/shoald.sock" >"$TMP/shoald.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do [ -S "$TMP/shoald.sock" ] && break; sleep 0.1; done
out=$(SHOAL_SOCKET=$TMP/shoald.sock "$R/usr/bin/shoal" vm list -o json 2>&1)
check "the packaged shoald starts and answers the packaged shoal (vm list -o json: {\"vms\":[]})" test "$out" = '{"vms":[]}'
kill "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null
finish
