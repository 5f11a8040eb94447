/*
 * snapshot_live.h - guest memory of one instant, written while the guest
 * runs (userfaultfd write-protection; see snapshot_live.c).
 */
#ifndef SHOAL_STATE_SNAPSHOT_LIVE_H
#define SHOAL_STATE_SNAPSHOT_LIVE_H

#include <stdint.h>

#include "base/error.h"
#include "base/guest_mem.h"

struct live_mem;

/* With the VM paused: write-protect all of `m` and start the fault thread
 * that saves a chunk into `out_fd` before the guest's first write to it.
 * NULL with `e` (EXIT_HOST, saying why) where the kernel cannot. */
struct live_mem *live_mem_arm(const struct guest_mem *m, int out_fd, struct error *e);

/* With the VM running: write every chunk not yet saved (zero pages stay
 * holes) and lift all protection.  `*data_bytes`: bytes written.  0 or -1
 * with `e`; either way nothing stays protected. */
int live_mem_write(struct live_mem *lm, uint64_t *data_bytes, struct error *e);

/* Bytes of guest memory saved so far, and guest writes that waited. */
uint64_t live_mem_done_bytes(const struct live_mem *lm);
uint64_t live_mem_faults(const struct live_mem *lm);

/* Lift any protection left, stop the fault thread, free. */
void live_mem_free(struct live_mem *lm);

#endif
