/*
 * stream.h - the `store:` block driver (stream.c, docs/store.md
 * "Streaming"): a read-only disk whose image streams from an image server
 * into a local store.
 */
#ifndef SHOAL_STORE_STREAM_H
#define SHOAL_STORE_STREAM_H

/* Register the store: scheme with the block layer (blockdev_register_scheme);
 * called once at start by each program that opens disks. */
void store_stream_register(void);

#endif
