/*
 * chunker.c - a gear rolling hash with FastCDC's normalized chunking.
 *
 * Why our own: the chunker is thirty lines, and the store's names depend
 * on its every bit, so it must not change under us with a library's
 * version.  Debian has no C library for it (casync's is inside casync), and
 * rsync-style Rabin fingerprints cost a multiply and a table lookup per
 * byte in and out of the window, where gear costs a shift, an add and one
 * lookup per byte (Xia et al., "FastCDC", USENIX ATC '16).
 *
 * The hash: h = (h << 1) + G[byte], with G 256 random 64-bit words.  Bit i
 * of h depends on the last i+1 bytes only, so the top bits see a 64-byte
 * window and forget everything older: a cut depends on the 64 bytes before
 * it.  A cut is where the top bits under a mask are all zero.
 *
 * Normalized chunking: before avg bytes the mask has log2(avg)+2 bits
 * (a cut is 4x less likely), after it log2(avg)-2 (4x more likely), which
 * pulls sizes towards avg; nothing is cut before min, and max is cut
 * whatever the bytes.  A long run of one byte value (zeros) makes h a
 * constant after 64 bytes (-G[b]); with this G it is not zero under the
 * default masks (test_store_chunker checks it), so a run of zeros becomes
 * max-size chunks, which the store keeps as a flag, not as bytes.
 *
 * G comes from splitmix64 with a fixed seed: the same table in every
 * build, so every Shoal cuts the same bytes the same way.  Changing the
 * seed or the masks renames every chunk: do not.
 */
#include <pthread.h>

#include "store/chunker.h"

static uint64_t gear[256];
static pthread_once_t gear_once = PTHREAD_ONCE_INIT;

static void gear_init(void)
{
	uint64_t x = 0x53686f616c434443ull;	/* "ShoalCDC" */

	for (int i = 0; i < 256; i++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		gear[i] = z ^ (z >> 31);
	}
}

static int log2u(uint32_t v)
{
	int n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

/* The top `bits` bits of a 64-bit word. */
static uint64_t top_mask(int bits)
{
	return bits <= 0 ? 0 : bits >= 64 ? ~0ull : ((1ull << bits) - 1) << (64 - bits);
}

int chunker_params_check(const struct chunker_params *p)
{
	if (p->min < 64 || p->min >= p->avg || p->avg >= p->max || p->max > (16u << 20))
		return -1;
	if (p->avg & (p->avg - 1))
		return -1;
	if (log2u(p->avg) < 8)
		return -1;
	return 0;
}

size_t chunker_next(const struct chunker_params *p, const uint8_t *buf, size_t len, int last)
{
	pthread_once(&gear_once, gear_init);
	int bits = log2u(p->avg);
	uint64_t mask_s = top_mask(bits + 2), mask_l = top_mask(bits - 2);
	size_t n = len < p->max ? len : p->max;
	size_t norm = p->avg < n ? p->avg : n;
	uint64_t h = 0;
	size_t i;

	if (len <= p->min)
		return last ? len : 0;
	/* The window is 64 bytes: start hashing 64 bytes before min so a cut
	 * at min already sees a full window. */
	for (i = p->min - 64; i < p->min; i++)
		h = (h << 1) + gear[buf[i]];
	for (; i < norm; i++) {
		h = (h << 1) + gear[buf[i]];
		if (!(h & mask_s))
			return i + 1;
	}
	for (; i < n; i++) {
		h = (h << 1) + gear[buf[i]];
		if (!(h & mask_l))
			return i + 1;
	}
	if (n == p->max || last)
		return n;
	return 0;
}
