#!/bin/bash
# slow_linux_debian.sh - a Debian 12 image as users have them boots under
# `shoal run --disk IMAGE` with no --kernel, and configures itself with
# cloud-init from a NoCloud seed (issue 11: "Boot what users actually
# have"; docs/linux-guests.md).
# tier: kvm
# timeout: 1500
#
# The image is scripts/debian-image.sh's: mmdebstrap's Debian 12 with the
# cloud kernel, systemd and cloud-init, in an ext4 partition of a qcow2
# disk that GRUB boots through the BIOS (built on the host and cached; the
# KVM box has no network).  Each VM gets a qcow2 overlay of it, so the
# cached image is never written.
#
# Under Shoal (1 vCPU, 512 MiB, --cloud-init user-data=,meta-data=):
#   - SeaBIOS (Debian's) ran GRUB from the disk, and GRUB loaded Linux
#     ("grub: loading Linux" is GRUB's own echo);
#   - Linux found Shoal's ACPI tables, which SeaBIOS installed from fw_cfg
#     (a runcmd prints /sys/firmware/acpi/tables and the FADT's OEM id,
#     SHOAL);
#   - the login prompt on the serial console carries the hostname from
#     meta-data (local-hostname: shoal-ci): cloud-init ran and set it;
#   - user-data's write_files wrote a file and its runcmd printed it on
#     the console: "shoal-user-data: written-by-user-data on shoal-ci";
#   - cloud-init says it took the NoCloud seed from a virtio disk;
#   - user-data's power_state powers Linux off through ACPI, and `shoal
#     run` ends with status 0;
#   - the overlay is a clean qcow2 (qemu-img check);
#   - Shoal's own Debian package (scripts/build-deb.sh, built on the host
#     into $BUILD/deb by scripts/test.sh before the kvm-slow tier), on a
#     second disk labelled shoal-deb: `dpkg -i` installs it on this clean
#     systemd system, its postinst starts shoald, `systemctl is-active
#     shoald` says active with Type=notify (so shoald said READY=1), and
#     `shoal vm list` reaches the packaged daemon's default socket.
# Cross-check: the same image and the same seed (written by `shoal img
# cidata`) under QEMU (-accel kvm, its own SeaBIOS and ACPI) reach the
# same prompt and the same user-data line, and power off.
. "$(dirname "$0")/lib.sh"

NAME=slow_linux_debian
[ -x "$SHOAL" ] || { fail "$NAME" "$SHOAL is not built"; finish; }
[ -c /dev/kvm ] && [ -r /dev/kvm ] ||
	{ skip "$NAME" "/dev/kvm is not available; run it in the KVM box: scripts/kvm-box.sh -- bash $0"; finish; }
rc=0
env=$("$ROOT/scripts/debian-image.sh" -q 2>"$TMP/image.err") || rc=$?
if [ $rc = 3 ]; then
	skip "$NAME" "the Debian image cannot be built here: $(tail -1 "$TMP/image.err") (build it on the host first: scripts/debian-image.sh)"
	finish
elif [ $rc != 0 ]; then
	fail "$NAME: scripts/debian-image.sh" "exit $rc: $(tail -3 "$TMP/image.err")"
	finish
fi
eval "$env"
LIMIT=${LINUX_TIMEOUT:-600}

cat >"$TMP/user-data" <<'EOF'
#cloud-config
write_files:
  - path: /var/lib/shoal-marker
    content: "written-by-user-data"
runcmd:
  - [sh, -c, 'echo "shoal-user-data: $(cat /var/lib/shoal-marker) on $(hostname)" > /dev/ttyS0']
  - [sh, -c, 'echo "shoal-acpi: $(ls /sys/firmware/acpi/tables | tr "\n" " ")oem $(dd if=/sys/firmware/acpi/tables/FACP bs=1 skip=10 count=6 2>/dev/null)" > /dev/ttyS0']
  - [sh, -c, 'if [ -e /dev/disk/by-label/shoal-deb ]; then mkdir -p /mnt/deb && mount -o ro /dev/disk/by-label/shoal-deb /mnt/deb && dpkg -i /mnt/deb/shoal.deb > /var/log/shoal-dpkg.log 2>&1; echo "shoal-deb: dpkg $? active $(systemctl is-active shoald) type $(systemctl show -p Type --value shoald) list $(shoal vm list -o json 2>&1 | tr -d "\n" | head -c 100)" > /dev/ttyS0; tail -3 /var/log/shoal-dpkg.log > /dev/ttyS0; fi']
power_state:
  mode: poweroff
  condition: true
EOF
printf 'instance-id: shoal-test-1\nlocal-hostname: shoal-ci\n' >"$TMP/meta-data"
SEED="user-data=$TMP/user-data,meta-data=$TMP/meta-data"

# Shoal's .deb on a disk of its own (ext4, labelled shoal-deb), for the Shoal boot
DEB=$(ls "$BUILD"/deb/shoal_*_amd64.deb 2>/dev/null | tail -1)
DEBDISK=()
if [ -n "$DEB" ]; then
	mkdir -p "$TMP/debfs" && cp "$DEB" "$TMP/debfs/shoal.deb" && truncate -s 16M "$TMP/deb.img" &&
		mkfs.ext4 -q -F -L shoal-deb -d "$TMP/debfs" "$TMP/deb.img" && DEBDISK=(--disk "$TMP/deb.img,readonly")
fi

# boot VMM: run the image under VMM (shoal or qemu), console in $TMP/VMM.log,
# status in $TMP/VMM.rc
boot() {
	local v=$1 rc t0=$SECONDS
	"$SHOAL" img create -f qcow2 -b "$SHOAL_DEBIAN_IMAGE" -F qcow2 "$TMP/$v.qcow2" >/dev/null ||
		{ fail "$v: an overlay of the image" "shoal img create failed"; return 1; }
	if [ "$v" = shoal ]; then
		timeout $((LIMIT + 30)) "$SHOAL" run --disk "$TMP/$v.qcow2" "${DEBDISK[@]}" --memory 512M --cpus 1 \
			--cloud-init "$SEED" --console "file:$TMP/$v.log" --timeout "$LIMIT" >"$TMP/$v.vmm" 2>&1
	else
		timeout "$LIMIT" qemu-system-x86_64 -accel kvm -cpu host -m 512 -smp 1 -nographic \
			-nodefaults -no-reboot -serial "file:$TMP/$v.log" \
			-drive "file=$TMP/$v.qcow2,if=virtio" \
			-drive "file=$TMP/seed.iso,if=virtio,format=raw,readonly=on" >"$TMP/$v.vmm" 2>&1
	fi
	rc=$?
	echo $rc >"$TMP/$v.rc"
	echo "  $v: from start to power-off in $((SECONDS - t0)) s (status $rc)"
	[ -n "${LINUX_KEEP:-}" ] && mkdir -p "$LINUX_KEEP" && cp "$TMP/$v.log" "$TMP/$v.vmm" "$LINUX_KEEP/" 2>/dev/null
	return 0
}
quiet() { "$@" >/dev/null 2>&1; }
# has VMM TEXT: the console has TEXT (fixed string)
has() { tr -d '\r' <"$TMP/$1.log" | grep -qF -- "$2"; }
why() { echo "status $(cat "$TMP/$1.rc" 2>/dev/null); console tail: $(tr -d '\r' <"$TMP/$1.log" | tail -c 600); $(tail -3 "$TMP/$1.vmm")"; }
judge() {
	local v=$1 what=$2 text=$3
	if has "$v" "$text"; then pass "$v: $what"; else fail "$v: $what" "$(why "$v")"; fi
}

boot shoal
judge shoal "SeaBIOS ran GRUB from the disk, and GRUB loaded Linux" "grub: loading Linux $SHOAL_DEBIAN_KVER"
if tr -d '\r' <"$TMP/shoal.log" | grep -qE '^shoal-acpi: .*DSDT .*FACP .*oem SHOAL'; then
	pass "shoal: Linux found Shoal's ACPI tables, installed by SeaBIOS from fw_cfg ($(tr -d '\r' <"$TMP/shoal.log" | grep -m1 '^shoal-acpi:'))"
else
	fail "shoal: Linux found Shoal's ACPI tables" "$(tr -d '\r' <"$TMP/shoal.log" | grep -m1 '^shoal-acpi:' || why shoal)"
fi
judge shoal "the login prompt carries meta-data's hostname (cloud-init set it)" "shoal-ci login:"
judge shoal "user-data's write_files and runcmd ran" "shoal-user-data: written-by-user-data on shoal-ci"
judge shoal "cloud-init took the NoCloud seed from a virtio disk" "Datasource DataSourceNoCloud [seed=/dev/vd"
check "shoal: cloud-init's power_state ended shoal run with status 0 (got $(cat "$TMP/shoal.rc"))" test "$(cat "$TMP/shoal.rc")" = 0
check "shoal: the overlay is a clean qcow2 (qemu-img check)" quiet qemu-img check -q "$TMP/shoal.qcow2"
if [ ${#DEBDISK[@]} -gt 0 ]; then
	line=$(tr -d '\r' <"$TMP/shoal.log" | grep -m1 '^shoal-deb:')
	case $line in
	"shoal-deb: dpkg 0 active active type notify list "*'"vms"'*)
		pass "shoal: its .deb installs with dpkg on systemd, shoald runs as a Type=notify service, shoal vm list reaches it ($line)" ;;
	*) fail "shoal: its .deb installed and shoald started by systemd" "${line:-no shoal-deb line}; $(tr -d '\r' <"$TMP/shoal.log" | grep -A3 '^shoal-deb:' | tail -3)" ;;
	esac
else
	skip "$NAME: the .deb on systemd" "no $BUILD/deb/shoal_*_amd64.deb (scripts/build-deb.sh $BUILD/deb makes it; scripts/test.sh does before kvm-slow)"
fi

if command -v qemu-system-x86_64 >/dev/null; then
	if "$SHOAL" img cidata "$TMP/seed.iso" "$SEED" 2>"$TMP/seed.err"; then
		boot qemu
		judge qemu "the same image: GRUB loaded Linux" "grub: loading Linux $SHOAL_DEBIAN_KVER"
		judge qemu "the same seed: the login prompt carries meta-data's hostname" "shoal-ci login:"
		judge qemu "the same seed: user-data ran" "shoal-user-data: written-by-user-data on shoal-ci"
		check "qemu: powered off, status 0 (got $(cat "$TMP/qemu.rc"))" test "$(cat "$TMP/qemu.rc")" = 0
	else
		fail "shoal img cidata for QEMU's seed" "$(cat "$TMP/seed.err")"
	fi
else
	skip "$NAME: the QEMU cross-check" "qemu-system-x86_64 is not installed"
fi
finish
