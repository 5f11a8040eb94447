/*
 * abi/pv_protect.h - guest-set page protection: the paravirtual contract
 * between a guest program and the VMM (issue 13 item 7, vision
 * mechanism 6).  Shared by guest/ (freestanding) and src/, so it holds
 * only constants and fixed-layout structs.  Documented for users in
 * docs/memory.md ("Guest-set page protection").
 *
 * Port PV_PROTECT_PORT (4 bytes, always present):
 *   IN  32-bit: PV_PROTECT_MAGIC (the device is there).
 *   OUT 32-bit: the guest-physical address of a struct pv_protect_req
 *       (8-byte aligned, below 4 GiB, not in a protected range).  The VMM
 *       runs it before the OUT returns and writes `status`.
 *
 * Requests (op, a0..a2):
 *   REGISTER   a0 shared page gpa (4 KiB aligned, RAM), a1 GSI (must be
 *              PV_PROTECT_GSI; the guest routes that IOAPIC pin to its
 *              vector), a2 answer timeout in ms (0: the default, at most
 *              PV_PROTECT_TIMEOUT_MAX).  Again: moves the page (allowed
 *              only while no range is protected).
 *   PROTECT    a0 gpa, a1 length (both 4 KiB aligned, length > 0, inside
 *              one RAM region), a2 PV_PROTECT_READONLY or _NOACCESS.
 *   UNPROTECT  a0 gpa, a1 length: exactly a range PROTECT made.
 *   ANSWER     a0 a fault's seq, a1 PV_PROTECT_ALLOW or _REFUSE, a2 the
 *              value a refused read returns (its low `len` bytes).
 *   UNREGISTER no arguments: every range unprotected, no handler.
 *
 * A fault: a vCPU's access to a protected page (a write to a read-only
 * range; any access to an inaccessible one) stops that vCPU; the VMM
 * fills record[vcpu] of the shared page (state last), pulses the GSI and
 * waits for ANSWER with the record's seq (or the timeout: then refused,
 * and logged).  Allow: the access is done on RAM as the vCPU asked;
 * refuse: a write is dropped, a read returns a2.  Other vCPUs run on.
 */
#ifndef SHOAL_ABI_PV_PROTECT_H
#define SHOAL_ABI_PV_PROTECT_H

#include <stdint.h>

#define PV_PROTECT_PORT          0xf8
#define PV_PROTECT_MAGIC         0x50565052u     /* "PVPR" */
#define PV_PROTECT_VERSION       1
#define PV_PROTECT_GSI           22              /* IOAPIC pin, edge, active high */
#define PV_PROTECT_MAX_RANGES    16
#define PV_PROTECT_MAX_RECORDS   64              /* one per vCPU (GUEST_MAX_VCPUS) */
#define PV_PROTECT_TIMEOUT_MS    1000            /* default answer timeout */
#define PV_PROTECT_TIMEOUT_MAX   10000

enum pv_protect_op {
	PV_PROTECT_OP_REGISTER = 1,
	PV_PROTECT_OP_PROTECT = 2,
	PV_PROTECT_OP_UNPROTECT = 3,
	PV_PROTECT_OP_ANSWER = 4,
	PV_PROTECT_OP_UNREGISTER = 5,
};

/* Protection modes (PROTECT's a2). */
#define PV_PROTECT_READONLY      1
#define PV_PROTECT_NOACCESS      2

/* Verdicts (ANSWER's a1). */
#define PV_PROTECT_ALLOW         1
#define PV_PROTECT_REFUSE        2

/* Status codes (req.status): 0 is success. */
enum pv_protect_status {
	PV_PROTECT_OK = 0,
	PV_PROTECT_EINVAL = 1,      /* unknown op, bad mode/verdict/GSI/timeout, misaligned, length 0 */
	PV_PROTECT_ERANGE = 2,      /* not inside one RAM region (or wraps) */
	PV_PROTECT_EOVERLAP = 3,    /* overlaps a protected range */
	PV_PROTECT_ENOSPC = 4,      /* PV_PROTECT_MAX_RANGES already */
	PV_PROTECT_ENOENT = 5,      /* no such range / no fault waits with that seq */
	PV_PROTECT_ENOHANDLER = 6,  /* PROTECT or ANSWER before REGISTER */
	PV_PROTECT_ESHARED = 7,     /* the range holds the shared page */
	PV_PROTECT_EBUSY = 8,       /* migration tracks memory; or REGISTER again with ranges */
	PV_PROTECT_EHOST = 9,       /* the host could not change KVM's memory slots */
};

/* The request block (the OUT's address). */
struct pv_protect_req {
	uint32_t op;
	int32_t status;             /* written by the VMM */
	uint64_t a0, a1, a2;
};

/* Fault kinds (record.kind). */
#define PV_PROTECT_FAULT_READ    1
#define PV_PROTECT_FAULT_WRITE   2

/* record.state */
#define PV_PROTECT_REC_FREE      0
#define PV_PROTECT_REC_PENDING   1      /* waiting for ANSWER */
#define PV_PROTECT_REC_DONE      2      /* answered, or timed out */

struct pv_protect_record {      /* 32 bytes, record[vcpu index] */
	uint64_t seq;               /* this fault's number (from 1) */
	uint64_t gpa;               /* the address accessed */
	uint64_t data;              /* a write's bytes (little-endian, len of them) */
	uint16_t cpu;               /* vCPU index (its APIC id in Shoal) */
	uint8_t len;                /* access size, 1..8 */
	uint8_t kind;               /* PV_PROTECT_FAULT_* */
	uint32_t state;             /* PV_PROTECT_REC_*; written last */
};

/* The shared page (4096 bytes at REGISTER's a0), written by the VMM. */
struct pv_protect_page {
	uint32_t magic;             /* PV_PROTECT_MAGIC once registered */
	uint32_t version;           /* PV_PROTECT_VERSION */
	uint32_t nrecords;          /* PV_PROTECT_MAX_RECORDS */
	uint32_t pad;
	uint64_t seq;               /* the last fault's seq */
	uint64_t faults;            /* faults delivered */
	uint64_t timeouts;          /* faults refused for want of an answer */
	uint8_t rsvd[24];
	struct pv_protect_record record[PV_PROTECT_MAX_RECORDS];
};

#endif
