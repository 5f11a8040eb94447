#!/bin/bash
# scripts/check-layers.sh - fail when a lower layer includes a higher one.
#
# Shoal's layers point down only (docs/architecture.md):
#
#   0 base, abi   guest memory, state framing, the event loop, errors, logs;
#                 the test device's ABI
#   1 block       images: raw, qcow2, locks, io_uring
#   2 devices     device models and their transports; they see the host
#                 through struct device_host (devices/device.h), never the VM
#   3 boot        kernel loaders, e820, MP and ACPI tables
#   4 vmm         the VM: KVM, vCPUs, buses, configuration, control socket
#   5 state, mem, store   state streams, the memory layer, the image store
#   6 host        shoald: API, SQLite state, supervision
#   7 cli         the shoal command
#
# A file may include headers of its own layer and of the layers below.
# guest/ (the freestanding test guest) stands apart: it includes only its
# own headers and abi/.  tests/, fuzz/ and bench/ may include anything.
#
# Prints each offending line as FILE:LINE: LAYER includes HIGHER (HEADER)
# and exits 1 if there is one.
set -u
cd "$(dirname "$0")/.."

rank() {
	case $1 in
	base|abi) echo 0 ;; block) echo 1 ;; devices) echo 2 ;; boot) echo 3 ;;
	vmm) echo 4 ;; state|mem|store) echo 5 ;; host) echo 6 ;; cli) echo 7 ;;
	*) echo "" ;;
	esac
}

bad=0
for f in src/*/*.[ch]; do
	layer=${f#src/}; layer=${layer%%/*}
	r=$(rank "$layer")
	if [ -z "$r" ]; then
		echo "$f: the folder src/$layer is in no layer (add it to scripts/check-layers.sh and docs/architecture.md)"
		bad=1; continue
	fi
	while IFS=: read -r line inc; do
		dir=${inc%%/*}
		[ "$dir" = "$inc" ] && continue       # "x.h" beside it
		ir=$(rank "$dir")
		[ -z "$ir" ] && continue              # not one of ours
		if [ "$ir" -gt "$r" ]; then
			echo "$f:$line: $layer includes $dir ($inc)"
			bad=1
		fi
	done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/')
done
for f in guest/*.[chS]; do
	[ -e "$f" ] || continue
	grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]*/' "$f" | grep -v '"abi/' |
		sed "s#^#$f:#; s#\$# (guest/ includes only abi/ and its own headers)#" | grep . && bad=1
done
[ $bad = 0 ] && echo "layers: every include points down"
exit $bad
