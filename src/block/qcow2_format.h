/*
 * qcow2_format.h - the qcow2 on-disk layout, as the specification draws it.
 *
 * Everything in this file describes bytes in an image file: packed structs
 * whose sizes are checked at compile time, flag bits, and the hard caps we
 * put on every table an image could inflate.  All multi-byte fields on disk
 * are big-endian; the structs here hold them raw (still big-endian) and
 * qcow2.c converts when it parses.  In-memory state lives in qcow2.h, never
 * here, so that a reader can compare this file against the spec line by line.
 *
 * Layout of an image (every unit is a cluster of 2^cluster_bits bytes):
 *
 *   cluster 0     header, header extensions, backing file name
 *   L1 table      one u64 per L2 table: offset of the L2 table | COPIED
 *   L2 tables     one u64 (or u64+u64 bitmap with extended L2) per guest
 *                 cluster: host offset | flags, or a compressed descriptor
 *   refcount table  one u64 per refcount block
 *   refcount blocks one 2^refcount_order-bit counter per host cluster
 *   snapshot table  variable-size entries, each naming a frozen L1 table
 */
#ifndef SHOAL_BLOCK_QCOW2_FORMAT_H
#define SHOAL_BLOCK_QCOW2_FORMAT_H

#include <assert.h>
#include <stdint.h>

#define QCOW2_MAGIC		0x514649fbu	/* "QFI\xfb" */
#define QCOW2_V2_HDR_LEN	72u
#define QCOW2_V3_HDR_LEN	104u		/* minimum for version 3 */
#define QCOW2_HDR_LEN_CT	112u		/* with compression_type + pad */

/* The header as it sits at offset 0 (version 3 layout; a v2 image stops
 * after snapshots_offset and the rest reads as the v2 defaults). */
struct qcow2_disk_header {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	/* version 3 */
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	/* header_length >= 105 */
	uint8_t compression_type;
	uint8_t padding[7];
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_header) == 112, "qcow2 header layout");
static_assert(__builtin_offsetof(struct qcow2_disk_header, incompatible_features) == 72,
	      "qcow2 v3 fields start at 72");
static_assert(__builtin_offsetof(struct qcow2_disk_header, compression_type) == 104,
	      "compression_type at 104");

/* Byte offsets of header fields we patch in place (never the whole header). */
#define QCOW2_OFF_SIZE		24
#define QCOW2_OFF_L1_SIZE	36
#define QCOW2_OFF_L1_OFFSET	40
#define QCOW2_OFF_REFTABLE	48	/* offset u64 + clusters u32, contiguous */
#define QCOW2_OFF_NB_SNAP	60	/* nb_snapshots u32 + snapshots_offset u64 */
#define QCOW2_OFF_INCOMPAT	72
#define QCOW2_OFF_AUTOCLEAR	88

/* Incompatible features: an image with a bit we do not know is refused. */
#define QCOW2_INCOMPAT_DIRTY		(1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT		(1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE	(1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION	(1ull << 3)
#define QCOW2_INCOMPAT_EXTL2		(1ull << 4)
#define QCOW2_INCOMPAT_KNOWN		0x1full
/* Compatible features: unknown ones are kept as they are. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS	(1ull << 0)
/* Autoclear features: a writer that does not maintain one clears it. */
#define QCOW2_AUTOCLEAR_BITMAPS		(1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW	(1ull << 1)
/* Shoal's own autoclear bit: "the chain-identity extension is current".
 * Any other writer clears it, which tells us the generation may be stale. */
#define QCOW2_AUTOCLEAR_SHOAL_CHAIN	(1ull << 63)
#define QCOW2_AUTOCLEAR_MAINTAINED	QCOW2_AUTOCLEAR_SHOAL_CHAIN

#define QCOW2_COMPRESS_ZLIB	0
#define QCOW2_COMPRESS_ZSTD	1

/* Header extensions: type u32, length u32, data padded to 8 bytes. */
struct qcow2_disk_ext {
	uint32_t type;
	uint32_t len;
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_ext) == 8, "extension header");

#define QCOW2_EXT_END		0x00000000u
#define QCOW2_EXT_BACKING_FMT	0xe2792acau
#define QCOW2_EXT_FEATURES	0x6803f857u
#define QCOW2_EXT_BITMAPS	0x23852875u
#define QCOW2_EXT_CRYPTO	0x0537be77u
#define QCOW2_EXT_DATA_FILE	0x44415441u
#define QCOW2_EXT_SHOAL_CHAIN	0x53484f4cu	/* "SHOL": chain identity */

/* One entry of the feature name table extension. */
struct qcow2_disk_feature {
	uint8_t type;		/* 0 incompatible, 1 compatible, 2 autoclear */
	uint8_t bit;
	char name[46];
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_feature) == 48, "feature name entry");

/* Shoal's chain identity extension (see chain_id.c). */
struct qcow2_disk_chain_id {
	uint8_t id[16];		/* this image's unique id */
	uint64_t generation;	/* bumped before the first change after open */
	uint8_t parent_id[16];	/* backing image's id, zero if none/unknown */
	uint64_t parent_generation;
	uint32_t flags;		/* CHAIN_F_* */
	uint32_t reserved;
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_chain_id) == 56, "chain id extension");
#define QCOW2_CHAIN_F_PARENT	1u	/* parent_id/parent_generation valid */

/* L1 and L2 entries. */
#define QCOW2_OFLAG_COPIED	(1ull << 63)	/* refcount is exactly 1 */
#define QCOW2_OFLAG_COMPRESSED	(1ull << 62)
#define QCOW2_OFLAG_ZERO	(1ull << 0)	/* v3 standard L2 only */
#define QCOW2_L1E_OFFSET_MASK	0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK	0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED	0x7f000000000001ffull
#define QCOW2_L2E_STD_RESERVED	0x3f000000000001feull
#define QCOW2_REFT_OFFSET_MASK	0xfffffffffffffe00ull
#define QCOW2_SUBCLUSTERS	32	/* per cluster with extended L2 */

/* Snapshot table entry, fixed part; followed by extra data, id, name. */
struct qcow2_disk_snapshot {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint16_t id_str_size;
	uint16_t name_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size;
	uint32_t extra_data_size;
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_snapshot) == 40, "snapshot entry");

struct qcow2_disk_snapshot_extra {
	uint64_t vm_state_size_large;
	uint64_t disk_size;
	uint64_t icount;
} __attribute__((packed));
static_assert(sizeof(struct qcow2_disk_snapshot_extra) == 24, "snapshot extra");

/*
 * Hard caps.  An image is untrusted input: each cap bounds an allocation
 * or a loop that a hostile header could otherwise make arbitrarily large.
 */
#define QCOW2_MIN_CLUSTER_BITS	9
#define QCOW2_MAX_CLUSTER_BITS	21
#define QCOW2_MAX_SIZE		(1ull << 55)		/* virtual disk size, 32 PiB */
#define QCOW2_MAX_L1_BYTES	(32u << 20)		/* 4 Mi entries */
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS	65536
#define QCOW2_MAX_SNAPSHOT_TABLE (64u << 20)
#define QCOW2_MAX_SNAP_EXTRA	1024
#define QCOW2_MAX_BACKING_NAME	1023
#define QCOW2_MAX_EXTENSIONS	64
#define QCOW2_MAX_CHAIN_DEPTH	32			/* backing chain */
#define QCOW2_MAX_CACHE_BYTES	(1ull << 32)

#endif
