#!/bin/bash
# install.sh - `make install` and `make uninstall` (issue 11, "Packaging and
# operations"), into a DESTDIR with PREFIX=/usr: every file lands where
# docs/install.md says and runs; each man page (written from the --help
# output by scripts/gen-man.sh) renders with man -l and groff -ww without a
# warning and names the options its --help names; the unit's ExecStart is
# PREFIX's; the bash completion completes verbs, img verbs, options, file
# names, and VM and snapshot names from a running shoald (no KVM needed:
# the VM is only defined), and nothing when no daemon answers; uninstall
# removes it all.  No KVM needed.
. "$(dirname "$0")/lib.sh"

[ -x "$SHOAL" ] && [ -x "$BUILD/shoald" ] || { fail "build" "$BUILD/shoal or shoald missing"; finish; }
for t in man groff bash; do
	command -v $t >/dev/null || { skip install.sh "$t missing (scripts/install-deps.sh)"; exit 0; }
done
D=$TMP/root
P=$D/usr
out=$(make -C "$ROOT" BUILD="$BUILD" PREFIX=/usr DESTDIR="$D" install 2>&1) &&
	pass "make install PREFIX=/usr DESTDIR=..." || { fail "make install" "$(tail -3 <<<"$out")"; finish; }

# every file, where it belongs
verbs=$("$SHOAL" help | awk '/^commands:/ {on=1; next} on && !/^  [a-z]/ {exit} on {print $1}' | grep -vx help)
imgverbs=$("$SHOAL" img help | awk '/^  [a-z]+ / {print $1}')
files="bin/shoal bin/shoald share/man/man1/shoal.1 share/man/man8/shoald.8
	share/bash-completion/completions/shoal share/bash-completion/completions/shoald
	lib/systemd/system/shoald.service share/doc/shoal/openapi.yaml share/doc/shoal/daemon.md"
for v in $verbs; do files="$files share/man/man1/shoal-$v.1"; done
for v in $imgverbs; do files="$files share/man/man1/shoal-img-$v.1"; done
missing=""
for f in $files; do [ -e "$P/$f" ] || missing="$missing $f"; done
[ -z "$missing" ] && pass "all $(wc -w <<<"$files") files installed" || fail "files installed" "missing:$missing"
[ "$(find "$D" -path "$D/usr" -prune -o -print | wc -l)" = 1 ] && pass "nothing outside PREFIX" ||
	fail "nothing outside PREFIX" "$(find "$D" -path "$D/usr" -prune -o -print | head -3)"

# the programs run
[ "$("$P/bin/shoal" version)" = "$("$SHOAL" version)" ] && pass "installed shoal runs" || fail "installed shoal runs"
"$P/bin/shoald" --help 2>&1 | grep -q "^usage: shoald" && pass "installed shoald runs" || fail "installed shoald runs"

# the unit names PREFIX's binaries and docs, and nothing under /usr/local
u=$P/lib/systemd/system/shoald.service
grep -q '^ExecStart=/usr/bin/shoald ' "$u" && pass "unit ExecStart=/usr/bin/shoald" ||
	fail "unit ExecStart" "$(grep ExecStart "$u")"
! grep -q /usr/local "$u" && pass "unit names no /usr/local path" || fail "unit names no /usr/local" "$(grep /usr/local "$u")"
grep -q '^Documentation=man:shoald(8) file:///usr/share/doc/shoal/daemon.md$' "$u" &&
	pass "unit Documentation= is PREFIX's" || fail "unit Documentation=" "$(grep Documentation "$u")"
grep -qx 'Type=notify' "$u" && grep -qx 'Delegate=yes' "$u" && grep -qx 'KillMode=process' "$u" &&
	pass "unit: Type=notify, Delegate=yes, KillMode=process" || fail "unit: Type=notify, Delegate=yes, KillMode=process" "$(grep -E '^(Type|Delegate|KillMode)=' "$u")"
# systemd's own check of every directive (the binary need not exist at
# /usr/bin here: that one message is expected, any other is a fault)
if command -v systemd-analyze >/dev/null; then
	out=$(systemd-analyze verify "$u" 2>&1 | grep -v 'Command /usr/bin/shoald is not executable' | grep -v "Command 'man shoald(8)' failed")
	check "systemd-analyze verify: no complaint about the unit's directives${out:+ ($out)}" test -z "$out"
else
	skip "install.sh: systemd-analyze verify" "systemd-analyze is not installed"
fi

# man pages: render without warnings, and say what --help says
bad=""
for f in "$P"/share/man/man1/*.1 "$P"/share/man/man8/*.8; do
	w=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
	w2=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null)
	r=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$f" 2>/dev/null)
	[ -z "$w$w2" ] && [ -n "$r" ] || bad="$bad $(basename "$f"): ${w:-$w2}"
done
[ -z "$bad" ] && pass "every man page renders without warnings" || fail "man pages render" "$bad"
page() { LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$P/share/man/$1" 2>/dev/null | sed "s/.\x08//g"; }
pg=$(page man1/shoal-run.1)
missing=""
for o in $("$SHOAL" run --help | grep -oE '^ +(-[a-z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+'); do
	grep -qF -- "$o" <<<"$pg" || missing="$missing $o"
done
[ -z "$missing" ] && pass "shoal-run(1) names every option of run --help" ||
	fail "shoal-run(1) options" "missing:$missing"
grep -q "^NAME" <<<"$pg" && grep -q "shoal-run - boot a VM in the foreground" <<<"$pg" &&
	pass "shoal-run(1) NAME from shoal help" || fail "shoal-run(1) NAME" "$(grep -A1 NAME <<<"$pg")"
page man1/shoal-img-convert.1 | grep -qF -- "shoal img convert [-f fmt] [-O fmt]" &&
	pass "shoal-img-convert(1) synopsis" || fail "shoal-img-convert(1) synopsis"
page man8/shoald.8 | grep -qF -- "--allow-dir DIR" && pass "shoald(8) options" || fail "shoald(8) options"

# bash completion: source the installed file, drive its function
cat >"$TMP/comp.bash" <<EOF
PATH=$P/bin:\$PATH
. $P/share/bash-completion/completions/shoal
comp() { COMP_WORDS=("\$@"); COMP_CWORD=\$((\$# - 1)); COMPREPLY=(); _shoal; echo "\${COMPREPLY[*]}"; }
EOF
comp() { (cd "$TMP" && bash -c '. ./comp.bash; comp "$@"' comp "$@"); }
expect() { local want=$1; shift; got=$(comp "$@")
	[ "$got" = "$want" ] && pass "complete '$*' -> '$want'" || fail "complete '$*'" "got '$got', want '$want'"; }
expect img shoal im
expect convert shoal img con
expect "commit compare convert" shoal img co
expect "commit compare convert" shoal img --cache-size 8M co
expect "--kernel" shoal run --ke
expect "--timeout" shoal vm stop --ti
expect "start stop" shoal vm st
expect "create delete list pull push show" shoal snapshot ""
mkdir -p "$TMP/dir.d" && : >"$TMP/disk.img"
expect "disk.img dir.d" shoal run --kernel di
expect "disk.img dir.d" shoal img info di
expect "dir.d" shoal run --restore di
expect "" shoal run -c ""
# VM and snapshot names come from the daemon; none, quietly, without one
export SHOAL_SOCKET=$TMP/state/shoald.sock
got=$(comp shoal vm show "" 2>&1)
[ -z "$got" ] && pass "no daemon: no VM names, no message" || fail "no daemon: no VM names" "got '$got'"
mkdir -p "$TMP/state" "$TMP/img"
"$P/bin/shoald" --state-dir "$TMP/state" --allow-dir "$TMP/img" >"$TMP/shoald.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do [ -S "$SHOAL_SOCKET" ] && break; sleep 0.1; done
cp "$GUEST" "$TMP/img/guest" 2>/dev/null || : >"$TMP/img/guest"
for n in web1 web2 db; do
	echo "{\"name\": \"$n\", \"kernel\": \"$TMP/img/guest\"}" | "$P/bin/shoal" vm create -f - >/dev/null ||
		fail "vm create $n" "$(tail -2 "$TMP/shoald.log")"
done
expect "web1 web2" shoal vm show we
expect "db web1 web2" shoal vm delete ""
expect "db" shoal console d
expect "web2" shoal vm --socket "$SHOAL_SOCKET" start web2
expect "" shoal vm restore we
kill "$dpid"; wait "$dpid" 2>/dev/null

out=$(make -C "$ROOT" BUILD="$BUILD" PREFIX=/usr DESTDIR="$D" uninstall 2>&1) &&
	pass "make uninstall" || fail "make uninstall" "$(tail -3 <<<"$out")"
left=$(find "$D" -type f -o -type l)
[ -z "$left" ] && pass "uninstall removes every file" || fail "uninstall removes every file" "left: $left"
finish
