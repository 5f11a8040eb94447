/*
 * config_dev.h - each configurable device reads and writes its own
 * settings: from a `shoal run` flag, from its JSON object, and back to JSON.
 *
 * One device kind, one file: config_blk.c (virtio-blk, struct vm_disk),
 * config_net.c (virtio-net, struct vm_net), config_vsock.c (virtio-vsock),
 * config_console.c (virtio-console), config_rng.c (virtio-rng) and
 * config_balloon.c (virtio-balloon); the
 * helpers they share are in config_dev.c.  The VM-level reader
 * (vmm/config.c) hands each device key's value to these and keeps the
 * arrays; the daemon's spec checks (host/spec.c) run on the structs that
 * come out.
 *
 * The three directions never go through text: flags -> struct,
 * JSON -> struct, struct -> JSON.  So a JSON value may hold any character,
 * a comma included ("path": "a,b.img"), and only the flag syntax, whose
 * separator is the comma, cannot carry one.  For every device kind,
 * X_from_json(X_to_json(x)) gives x back, and the flag and JSON readers
 * apply the same checks (the same helpers, the same limits) with messages
 * that name where the value came from: "--disk: ..." for a flag, the
 * `where` a caller passes ("vm.json: disks[0]") for JSON.
 *
 * Ownership: the strings of a struct filled here are malloc'd and owned by
 * the struct; X_free releases them, X_copy duplicates them.  The disk and
 * net readers fill a fresh struct (whatever it held is overwritten, not
 * freed: give them an empty slot) and leave it empty when they fail, never
 * half filled.  The vsock, console and rng readers replace the fields they
 * are given only when they succeed.  X_to_json returns a new reference (or
 * NULL when out of memory) and keeps no pointer into the struct.  The
 * json_t a reader is given is only read: no reference is taken or dropped.
 */
#ifndef SHOAL_DEVICES_CONFIG_DEV_H
#define SHOAL_DEVICES_CONFIG_DEV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "devices/devconfig.h"   /* struct vm_disk, struct vm_net, enum vm_virtio_mode */

/* ---- shared (config_dev.c) ---- */

/* Parse "256M", "2G", "1048576", "512K", "1T" (binary units). 0 or -1. */

/* "transitional", "legacy", "modern"; the error names `what`. */
int config_mode_parse(const char *what, const char *v, enum vm_virtio_mode *m,
		      struct error *e);
const char *config_mode_name(enum vm_virtio_mode m);

/* Queue (pair) count: 1 to 16.  `text` is how the user wrote it. */
int config_queues_check(const char *what, long long n, const char *text, int *q,
			struct error *e);

/* Split a flag spec "a,b=c,d" and call fn(ctx, key, value-or-NULL) for
 * each item; the strings are a private copy, valid during the call. */
typedef int (*config_item_fn)(void *ctx, const char *key, const char *value,
			      struct error *e);
int config_flags_each(const char *spec, config_item_fn fn, void *ctx, struct error *e);

/* JSON value helpers: `what` and `key` name the field in messages. */
int config_json_bool(json_t *v, const char *what, const char *key, bool *out,
		     struct error *e);
int config_json_string(json_t *v, const char *what, const char *key, bool nullable,
		       char **out, struct error *e);
int config_json_int(json_t *v, const char *what, const char *key, long long min,
		    long long max, long long *out, struct error *e);

/* ---- virtio-blk: config_blk.c ---- */

/* "PATH[,readonly][,direct][,serial=ID][,queues=N][,cache=SIZE][,mode=M]" */
int disk_config_from_flags(struct vm_disk *d, const char *spec, struct error *e);
/* {"path": P, "readonly": B, "direct": B, "serial": S, "queues": N,
 *  "cache": N|SIZE, "mode": M}; "path" required. */
int disk_config_from_json(struct vm_disk *d, json_t *o, const char *where, struct error *e);
json_t *disk_config_to_json(const struct vm_disk *d);
void disk_config_free(struct vm_disk *d);
void disk_config_copy(struct vm_disk *dst, const struct vm_disk *src);

/* ---- virtio-net: config_net.c ---- */

/* "tap=NAME|fd=N[,mac=MAC][,queues=N][,mode=M]" */
int net_config_from_flags(struct vm_net *n, const char *spec, struct error *e);
/* {"tap": NAME | "fd": N, "mac": MAC, "queues": N, "mode": M} */
int net_config_from_json(struct vm_net *n, json_t *o, const char *where, struct error *e);
json_t *net_config_to_json(const struct vm_net *n);
void net_config_free(struct vm_net *n);       /* leaves fd -1: an empty slot */
void net_config_copy(struct vm_net *dst, const struct vm_net *src);
/* Give a restored VM's card a new MAC (a clone's identity): `mac`, a
 * unicast address, or NULL for a random locally administered one.  The
 * device then keeps it over the one in the snapshot's state. */
int net_config_new_mac(struct vm_net *n, const char *mac, const char *what, struct error *e);

/* ---- virtio-vsock: config_vsock.c ----
 * cid 0 is "no device"; a device has a cid from 3 and a socket path. */

/* "cid=N,socket=PATH": both needed. */
int vsock_config_from_flags(uint32_t *cid, char **socket, const char *spec, struct error *e);
/* {"cid": N, "socket": PATH}, or null for none. */
int vsock_config_from_json(uint32_t *cid, char **socket, json_t *v, const char *where,
			   struct error *e);
json_t *vsock_config_to_json(uint32_t cid, const char *socket);   /* null for none */

/* ---- virtio-console: config_console.c ----
 * The port's spec is kept as the device reads it: "file:OUT[,in=IN]". */

int vconsole_config_from_flags(char **spec, const char *arg, struct error *e);
/* "file:OUT[,in=IN]", or null for none. */
int vconsole_config_from_json(char **spec, json_t *v, const char *where, struct error *e);
json_t *vconsole_config_to_json(const char *spec);                /* null for none */

/* ---- virtio-rng: config_rng.c ---- */

/* true, false, or {"rate": BYTES_PER_S} (rate 0: the device's default). */
int rng_config_from_json(bool *on, uint32_t *rate, json_t *v, const char *where,
			 struct error *e);
json_t *rng_config_to_json(bool on, uint32_t rate);

/* ---- virtio-balloon: config_balloon.c ---- */

/* true, false, or {"stats_interval": SECONDS} (0 kept: the default). */
int balloon_config_from_json(bool *on, uint32_t *stats_s, json_t *v, const char *where,
			     struct error *e);
json_t *balloon_config_to_json(bool on, uint32_t stats_s);

#endif
