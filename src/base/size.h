/*
 * size.h - the one parser of sizes for every command and file Shoal reads.
 *
 * A size is a decimal number (leading zeros do not make it octal: "0100M"
 * is 100 MiB), or a 0x hexadecimal one, then an optional binary unit:
 * k, M, G, T, P in either case, each optionally followed by "i" and/or
 * "B" ("64k", "2G", "2GiB", "512MB" and "1gib" all work; every unit is a
 * power of 1024, as in qemu-img).  A lone "B" means bytes.  Nothing else
 * may follow, and a value that does not fit in 64 bits is refused.
 *
 * A number with no unit means bytes for size_parse, and the given unit for
 * size_parse_unit: `shoal run --memory 512` is 512 MiB, as in QEMU's -m
 * and lkvm's.
 */
#ifndef SHOAL_BASE_SIZE_H
#define SHOAL_BASE_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* 0 and *out set, or -1 (*out untouched) when s is not a size. */
int size_parse(const char *s, uint64_t *out);
/* The same, a bare number counted in units of (1 << bare_shift) bytes. */
int size_parse_unit(const char *s, unsigned bare_shift, uint64_t *out);

#endif
