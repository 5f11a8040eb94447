/*
 * netutil.h - the few network byte helpers the guest's virtio-net commands
 * share (`vnet` in virtio_net.c, `vnet-bench` in virtio_net_bench.c):
 * big-endian 16-bit fields, the Internet checksum and dotted-quad parsing.
 */
#ifndef GUEST_NETUTIL_H
#define GUEST_NETUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void net_put16(uint8_t *p, uint16_t v);
uint16_t net_get16(const uint8_t *p);

/* Internet checksum (RFC 1071) over n bytes (an odd last byte is padded). */
uint16_t net_inet_sum(const uint8_t *p, size_t n);

/* Parse "A.B.C.D"; false when it is not exactly that. */
bool net_parse_ip(const char *s, uint8_t ip[4]);

#endif
