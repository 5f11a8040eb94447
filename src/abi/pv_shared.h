/*
 * abi/pv_shared.h - which guest frames still share a template's page: the
 * paravirtual contract between a guest and the VMM (issue 13 item 4,
 * vision mechanism 12).  Shared by guest/ (freestanding) and src/, so it
 * holds only constants and fixed-layout structs.  Documented for users in
 * docs/memory.md ("Shared pages kept from guest eviction").
 *
 * A clone (`shoal run --restore DIR --clone`) maps its template's memory
 * file copy-on-write: a frame the clone has never written is the
 * template's page, shared by every clone of it, and costs the clone no
 * memory of its own.  Giving such a frame to the balloon frees nothing on
 * the host; giving a frame the clone wrote (a private copy) frees 4 KiB.
 * A guest that must give memory back should therefore give private frames
 * first.  This port tells it which are which.
 *
 * Port PV_SHARED_PORT (4 bytes, always present):
 *   IN  32-bit: PV_SHARED_MAGIC (the device is there).
 *   OUT 32-bit: the guest-physical address of a struct pv_shared_req
 *       (8-byte aligned, below 4 GiB, RAM).  The VMM answers it before
 *       the OUT returns: it writes `flags`, `shared` and `status` (last).
 *
 * Request QUERY (op 1): frames [gpa, gpa + npages * 4096) (gpa 4 KiB
 * aligned, 1 <= npages <= PV_SHARED_MAX_PAGES, all inside one RAM
 * region); `bitmap` the guest-physical address of ceil(npages / 8) bytes
 * of RAM.  The VMM writes bit i (byte i / 8, bit i % 8, least significant
 * first) = 1 when frame gpa / 4096 + i still shares the template's page,
 * 0 when the clone holds a private copy of it (the last byte's bits past
 * npages: 0); `shared` the number of 1 bits.  A VM that is not a clone shares nothing: every bit 0, and
 * `flags` lacks PV_SHARED_F_CLONE.  A frame the balloon took back (or the
 * VMM released otherwise) shares the template's page again.
 *
 * The answer is a snapshot: a frame the guest (or a device on its behalf)
 * writes afterwards becomes private.  The guest may not use it to learn
 * anything about other VMs: the bits say only what this VM wrote.
 */
#ifndef SHOAL_ABI_PV_SHARED_H
#define SHOAL_ABI_PV_SHARED_H

#include <stdint.h>

#define PV_SHARED_PORT           0xfc
#define PV_SHARED_MAGIC          0x50565348u     /* "PVSH" */
#define PV_SHARED_VERSION        1
#define PV_SHARED_MAX_PAGES      32768           /* 128 MiB of frames, a 4 KiB bitmap */

enum pv_shared_op {
	PV_SHARED_OP_QUERY = 1,
};

/* flags (written by the VMM) */
#define PV_SHARED_F_CLONE        1u     /* RAM is a template's copy-on-write mapping */

enum pv_shared_status {
	PV_SHARED_OK = 0,
	PV_SHARED_EINVAL = 1,       /* unknown op, gpa not aligned, npages 0 or too many */
	PV_SHARED_ERANGE = 2,       /* frames or bitmap not RAM (or the frames span regions) */
	PV_SHARED_EHOST = 3,        /* the host could not read its page tables */
};

/* The request block (the OUT's address), 48 bytes. */
struct pv_shared_req {
	uint32_t op;
	int32_t status;             /* written by the VMM, last */
	uint64_t gpa;               /* first frame's address */
	uint64_t npages;            /* frames asked about */
	uint64_t bitmap;            /* where the answer goes */
	uint64_t shared;            /* written: frames still shared */
	uint32_t flags;             /* written: PV_SHARED_F_* */
	uint32_t version;           /* written: PV_SHARED_VERSION */
};

#endif
