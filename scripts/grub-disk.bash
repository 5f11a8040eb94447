# scripts/grub-disk.bash - sourced: a disk that a PC's BIOS boots, built
# from a directory without root, loop devices or mounts (used by
# scripts/boot-image.sh and scripts/debian-image.sh; docs/boot.md,
# "Firmware boot").
#
#   grub_disk_check             0 when this host can build one; otherwise 1
#                               with the reason in GRUB_DISK_WHY
#   grub_disk_build IMG MIB DIR LABEL
#                               make IMG, MIB MiB, raw and sparse:
#     sector 0      GRUB's boot.img (its first 440 bytes), then the MBR
#                   partition table: one Linux (0x83) partition, active,
#                   from sector 2048 to the end
#     sectors 1..   GRUB's core.img (grub-mkimage -O i386-pc: biosdisk,
#                   part_msdos, ext2, linux, normal, configfile, serial...),
#                   in the gap before the partition; boot.img's default
#                   block list already points at sector 1, core.img's at 2
#     partition 1   ext4 labelled LABEL, made by `mkfs.ext4 -d DIR -E
#                   offset=`: DIR's tree, which holds /boot/grub/grub.cfg
#                   (GRUB's prefix is (hd0,msdos1)/boot/grub)
#                               1 with the reason in GRUB_DISK_WHY on failure
#
# Debian's grub-pc-bin provides /usr/lib/grub/i386-pc and grub-mkimage;
# e2fsprogs 1.43 and later have mkfs.ext4 -d.

GRUB_DISK_DIR=/usr/lib/grub/i386-pc
GRUB_DISK_PART_START=2048          # sectors: 1 MiB, GRUB's core.img before it
GRUB_DISK_MODULES="biosdisk part_msdos ext2 linux normal configfile serial terminal echo test search search_label"
GRUB_DISK_WHY=""

grub_disk_check() {
	if [ ! -r "$GRUB_DISK_DIR/boot.img" ] || ! command -v grub-mkimage >/dev/null; then
		GRUB_DISK_WHY="GRUB for BIOS is not installed ($GRUB_DISK_DIR/boot.img, grub-mkimage: Debian's grub-pc-bin)"
		return 1
	fi
	if ! { mkfs.ext4 2>&1 || :; } | grep -q -- '-d root'; then
		GRUB_DISK_WHY="mkfs.ext4 with -d (e2fsprogs 1.43 or later) is needed"
		return 1
	fi
}

# grub_disk_le32 N: N as 4 little-endian bytes.
grub_disk_le32() {
	# shellcheck disable=SC2059  # the escapes are the data
	printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}

grub_disk_build() {
	local img=$1 mib=$2 dir=$3 label=$4 sectors psize core core_sectors
	sectors=$((mib * 2048))
	psize=$((sectors - GRUB_DISK_PART_START))
	core=$img.core
	rm -f "$img"
	truncate -s "${mib}M" "$img" || { GRUB_DISK_WHY="cannot make $img"; return 1; }
	mkfs.ext4 -q -F -L "$label" -d "$dir" -E offset=$((GRUB_DISK_PART_START * 512)) "$img" "$((psize / 2))k" ||
		{ GRUB_DISK_WHY="mkfs.ext4 of $dir failed"; return 1; }
	# shellcheck disable=SC2086  # one word per module
	grub-mkimage -O i386-pc -o "$core" -p '(hd0,msdos1)/boot/grub' $GRUB_DISK_MODULES ||
		{ GRUB_DISK_WHY="grub-mkimage failed"; return 1; }
	core_sectors=$(( ($(stat -c %s "$core") + 511) / 512 ))
	[ "$core_sectors" -lt "$GRUB_DISK_PART_START" ] ||
		{ GRUB_DISK_WHY="core.img ($core_sectors sectors) does not fit before the partition"; return 1; }
	dd if="$core" of="$img" bs=512 seek=1 conv=notrunc status=none
	rm -f "$core"
	# Sector 0: boot.img's code (440 bytes), then the table.  Its block
	# list (offset 0x5c, the sector of core.img) says 1 already; boot
	# drive 0xff (offset 0x64) means "the drive the BIOS booted from".
	dd if="$GRUB_DISK_DIR/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
	{
		printf '\x53\x48\x4f\x4c\x00\x00'            # disk signature "SHOL", 2 bytes 0
		printf '\x80\xfe\xff\xff\x83\xfe\xff\xff'    # active, CHS unused, type 0x83
		grub_disk_le32 $GRUB_DISK_PART_START
		grub_disk_le32 $psize
		head -c 48 /dev/zero                         # entries 2-4: empty
		printf '\x55\xaa'
	} | dd of="$img" bs=1 seek=440 conv=notrunc status=none
	[ "$(od -An -tx1 -j510 -N2 "$img" | tr -d ' ')" = 55aa ] || { GRUB_DISK_WHY="the MBR was not written"; return 1; }
	GRUB_DISK_CORE_SECTORS=$core_sectors
}
