#!/bin/bash
# scripts/gen-man.sh - write the man pages of shoal and shoald from the
# programs' own --help output, so that the two never disagree.
#
#   scripts/gen-man.sh BUILD OUTDIR
#
# BUILD holds the built shoal and shoald; OUTDIR receives (and is emptied
# of any older pages first):
#   shoal.1                  `shoal help`
#   shoal-VERB.1             `shoal VERB --help`, for every verb `shoal help`
#                            lists (help itself excepted)
#   shoal-img-VERB.1         `shoal img VERB --help`, for every verb
#                            `shoal img help` lists
#   shoald.8                 `shoald --help`
# Each page is NAME, SYNOPSIS (the usage lines), DESCRIPTION (the rest of
# the help text, as printed: no-fill, so its columns stay) and SEE ALSO.
# The one-line description in NAME is the verb's line in `shoal help`.
# Run by `make man` (and so by `make install`); the pages are never
# committed.  tests/system/install.sh renders each one with man -l.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD OUTDIR" >&2; exit 64; }
BUILD=$1 OUT=$2
SHOAL=$BUILD/shoal SHOALD=$BUILD/shoald
for b in "$SHOAL" "$SHOALD"; do
	[ -x "$b" ] || { echo "gen-man.sh: $b: missing or not executable (run make first)" >&2; exit 66; }
done
VERSION=$("$SHOAL" version)            # "shoal 0.1.0"
mkdir -p "$OUT"
rm -f "$OUT"/*.1 "$OUT"/*.8

# roff_text: help text on stdin -> roff-safe lines: backslashes escaped,
# a leading . or ' made literal, every - a hyphen-minus (\-), so that
# options copied from a rendered page still work.
roff_text() {
	sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

# page NAME SECTION DESC SEEALSO: the help text on stdin becomes
# $OUT/NAME.SECTION.  Lines up to the first blank one that begin with
# "usage:" (or continue one, indented) are the synopsis.
page() {
	local name=$1 sect=$2 desc=$3 seealso=$4 text syn body
	text=$(cat)
	syn=$(awk 'NR==1 && /^usage:/ {on=1} on && (NR==1 || /^ +[a-z]/) {sub(/^usage: /, ""); sub(/^ +/, ""); print; next} {exit}' <<<"$text")
	body=$(awk 'NR==1 && /^usage:/ {skip=1} skip && (NR==1 || /^ +[a-z]/) {next} {skip=0; print}' <<<"$text" |
		sed '/./,$!d')        # drop leading blank lines
	[ -n "$syn" ] || { echo "gen-man.sh: $name: --help printed no usage line" >&2; exit 70; }
	{
		printf '.TH %s %s "" "%s" "Shoal Manual"\n' "$(tr a-z A-Z <<<"$name" | roff_text)" "$sect" "$VERSION"
		printf '.SH NAME\n%s \\- %s\n' "$(roff_text <<<"$name")" "$(roff_text <<<"$desc")"
		printf '.SH SYNOPSIS\n.nf\n%s\n.fi\n' "$(roff_text <<<"$syn")"
		if [ -n "$body" ]; then
			printf '.SH DESCRIPTION\n.nf\n%s\n.fi\n' "$(roff_text <<<"$body")"
		fi
		printf '.SH SEE ALSO\n%s\n' "$seealso"
	} >"$OUT/$name.$sect"
}

help=$("$SHOAL" help)
verbs=$(awk '/^commands:/ {on=1; next} on && !/^  [a-z]/ {exit} on {print $1}' <<<"$help" | grep -vx help)
[ -n "$verbs" ] || { echo "gen-man.sh: shoal help listed no verbs" >&2; exit 70; }
imgverbs=$("$SHOAL" img help | awk '/^  [a-z]+ / {print $1}')
[ -n "$imgverbs" ] || { echo "gen-man.sh: shoal img help listed no verbs" >&2; exit 70; }

see=()
for v in $verbs; do see+=("\\fBshoal\\-${v//-/\\-}\\fR(1),"); done
page shoal 1 "virtual machines on KVM" "$(printf '%s\n' "${see[@]}" '\fBshoald\fR(8)')" <<<"$help"

for v in $verbs; do
	desc=$(awk -v v="$v" '/^commands:/ {on=1; next} on && !/^  [a-z]/ {exit} on && $1 == v {$1 = ""; sub(/^ +/, ""); print; exit}' <<<"$help")
	see=('\fBshoal\fR(1)')
	[ "$v" = img ] && for iv in $imgverbs; do see+=("\\fBshoal\\-img\\-$iv\\fR(1)"); done
	"$SHOAL" "$v" --help | page "shoal-$v" 1 "$desc" "$(printf '%s,\n' "${see[@]}" | sed '$s/,$//')"
done
for iv in $imgverbs; do
	"$SHOAL" img "$iv" --help | page "shoal-img-$iv" 1 "shoal img $iv: see shoal-img(1)" '\fBshoal\-img\fR(1), \fBshoal\fR(1)'
done
"$SHOALD" --help | page shoald 8 "the Shoal host daemon" '\fBshoal\fR(1), \fBshoal\-vm\fR(1)'
