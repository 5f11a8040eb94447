# tests/system/metrics_lib.bash - sourced by the daemon_metrics*.sh tests
# (after lib.sh).  Not a test itself (scripts/test.sh runs *.sh only).

# prom_check NAME FILE: FILE, a GET /metrics answer, passes
# `promtool check metrics` (Debian's prometheus package; a SKIP without it)
# and is written family by family: each family once, HELP then TYPE, then
# all of its series together.
prom_check() {
	local name=$1 file=$2 out
	if command -v promtool >/dev/null; then
		if out=$(promtool check metrics <"$file" 2>&1); then
			pass "$name: promtool check metrics"
		else
			fail "$name: promtool check metrics" "$(echo "$out" | head -8 | tr '\n' ';')"
		fi
	else
		skip "$name: promtool check metrics" "promtool missing (Debian's prometheus package, scripts/install-deps.sh)"
	fi
	if out=$(python3 - "$file" <<'PY'
import re, sys
seen, fam, help_of, errs = set(), None, None, []
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.rstrip("\n")
    m = re.match(r"# (HELP|TYPE) (\S+) ?(.*)$", line)
    if m:
        kind, name = m.group(1), m.group(2)
        if kind == "HELP":
            if name in seen:
                errs.append("line %d: family %s again" % (n, name))
            seen.add(name)
            help_of, fam = name, None
        elif help_of != name:
            errs.append("line %d: TYPE of %s without its HELP just before" % (n, name))
        else:
            fam = name
    elif line:
        metric = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        if metric != fam:
            errs.append("line %d: %s is not in the family being written (%s)" % (n, metric, fam))
if not seen:
    errs.append("no family at all")
print("; ".join(errs[:5]))
sys.exit(1 if errs else 0)
PY
	); then
		pass "$name: each family written once and whole (HELP, TYPE, its series)"
	else
		fail "$name: each family written once and whole" "$out"
	fi
}
