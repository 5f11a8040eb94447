/*
 * dirty_bitmap.c - the dirty block bitmap (dirty_bitmap.h): atomic marks
 * by the disk's writer, atomic takes by the copier.
 *
 * A mark sets the bits of every block a byte range touches, word by word
 * with __atomic_fetch_or; a take swaps each word with zero.  A block
 * written while a take runs is either taken now or left for the next:
 * the copier reads the block after taking its bit, so what it sends is at
 * least as new as the write that set the bit.
 */
#include "block/dirty_bitmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bd_dirty_init(struct bd_dirty *d, uint64_t size, uint32_t gran)
{
	memset(d, 0, sizeof(*d));
	if (gran < 512 || (gran & (gran - 1)))
		return -EINVAL;
	d->size = size;
	d->gran = gran;
	d->nbits = (size + gran - 1) / gran;
	d->words = (d->nbits + 63) / 64;
	d->bits = calloc(d->words ? d->words : 1, sizeof(uint64_t));
	return d->bits ? 0 : -ENOMEM;
}

void bd_dirty_free(struct bd_dirty *d)
{
	free(d->bits);
	memset(d, 0, sizeof(*d));
}

void bd_dirty_mark(struct bd_dirty *d, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!d->bits || !len || off >= d->size)
		return;
	if (len > d->size - off)
		len = d->size - off;
	first = off / d->gran;
	last = (off + len - 1) / d->gran;
	while (first <= last) {
		uint64_t w = first / 64, b = first % 64;
		uint64_t n = last - first + 1 < 64 - b ? last - first + 1 : 64 - b;
		uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;

		__atomic_fetch_or(&d->bits[w], mask, __ATOMIC_RELEASE);
		first += n;
	}
}

uint64_t bd_dirty_take(struct bd_dirty *d, uint64_t *out)
{
	uint64_t n = 0;

	for (uint64_t i = 0; d->bits && i < d->words; i++) {
		uint64_t v;

		if (!__atomic_load_n(&d->bits[i], __ATOMIC_RELAXED))
			continue;
		v = __atomic_exchange_n(&d->bits[i], 0, __ATOMIC_ACQ_REL);
		out[i] |= v;
		n += (uint64_t)__builtin_popcountll(v);
	}
	return n;
}

void bd_dirty_clear(struct bd_dirty *d)
{
	for (uint64_t i = 0; d->bits && i < d->words; i++)
		__atomic_store_n(&d->bits[i], 0, __ATOMIC_RELEASE);
}

bool bd_bits_next_run(const uint64_t *bits, uint64_t nbits, uint64_t *pos, uint64_t *n,
		      uint64_t max)
{
	uint64_t p = *pos, q;

	while (p < nbits) {
		if (!bits[p / 64]) {
			p = (p / 64 + 1) * 64;
			continue;
		}
		if (bits[p / 64] >> (p % 64) & 1)
			break;
		p++;
	}
	if (p >= nbits || !max)
		return false;
	for (q = p + 1; q < nbits && q - p < max && (bits[q / 64] >> (q % 64) & 1); q++)
		;
	*pos = p;
	*n = q - p;
	return true;
}

uint64_t bd_bits_count(const uint64_t *bits, uint64_t nbits)
{
	uint64_t n = 0, w = nbits / 64;

	for (uint64_t i = 0; i < w; i++)
		n += (uint64_t)__builtin_popcountll(bits[i]);
	if (nbits % 64)
		n += (uint64_t)__builtin_popcountll(bits[w] & ((1ULL << (nbits % 64)) - 1));
	return n;
}
