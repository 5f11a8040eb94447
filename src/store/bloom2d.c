/*
 * bloom2d.c - the two-dimensional Bloom-filter bit array of the image store
 * (mechanism 18 of the vision's table).
 *
 * The array has m rows and one column per log segment.  Column c is a Bloom
 * filter of the chunk hashes in segment seg[c]: a hash sets k bits of it,
 * rows h_0..h_{k-1}.  Rows are stored one after the other, each a bit
 * vector across the columns, so a lookup reads k rows and ANDs them: the
 * set bits left are the candidate segments.  That costs k * cols/64 word
 * operations, sequential in memory, where k separate filters would cost k
 * scattered probes per segment.  The segment's own table confirms a
 * candidate (store.c); a false positive costs one table search, a false
 * negative cannot happen (a bit once set in a column stays set until the
 * column is cleared or dropped).
 *
 * The k positions come from the hash itself, which is SHA-256 and so
 * already uniform: h_i = (a + i*b) mod m with a and b its first two 64-bit
 * words (double hashing, Kirsch and Mitzenmacher).  A client who chooses
 * image content cannot choose SHA-256 outputs, so cannot aim at columns.
 *
 * On disk (DIR/index.bloom): "SHBLOOM1", m, k, ncols, then ncols pairs
 * (segment id, count), then the rows, each ceil(ncols/64) words, then the
 * SHA-256 of all of it.  A file that fails any check is refused; the store
 * then rebuilds the array from the segment tables (store.c), so the file is
 * a cache of them and never the only copy of anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "store/bloom2d.h"

#define BLOOM_MAGIC "SHBLOOM1"

static size_t row_words(uint32_t cap)
{
	return cap / 64;
}

int bloom2d_init(struct bloom2d *b, uint32_t m, uint32_t k, struct error *e)
{
	memset(b, 0, sizeof(*b));
	if (m < 64 || m > (1u << 24) || k < 1 || k > 32)
		return error_set(e, EXIT_USAGE, "bloom index: %u bits and %u hashes is no usable filter", m, k);
	b->m = m;
	b->k = k;
	return 0;
}

void bloom2d_free(struct bloom2d *b)
{
	free(b->seg);
	free(b->count);
	free(b->bits);
	memset(b, 0, sizeof(*b));
}

static int grow(struct bloom2d *b, uint32_t want)
{
	uint32_t cap = b->cap ? b->cap : 64;

	while (cap < want)
		cap *= 2;
	if (cap == b->cap)
		return 0;
	uint32_t *seg = realloc(b->seg, cap * sizeof(*seg));
	if (!seg)
		return -1;
	b->seg = seg;
	uint32_t *count = realloc(b->count, cap * sizeof(*count));
	if (!count)
		return -1;
	b->count = count;
	uint64_t *bits = calloc((size_t)b->m * row_words(cap), sizeof(*bits));
	if (!bits)
		return -1;
	for (uint32_t r = 0; r < b->m && b->cap; r++)
		memcpy(bits + (size_t)r * row_words(cap), b->bits + (size_t)r * row_words(b->cap),
		       row_words(b->cap) * sizeof(*bits));
	free(b->bits);
	b->bits = bits;
	b->cap = cap;
	return 0;
}

int bloom2d_add_column(struct bloom2d *b, uint32_t seg)
{
	if (grow(b, b->ncols + 1))
		return -1;
	b->seg[b->ncols] = seg;
	b->count[b->ncols] = 0;
	bloom2d_clear_column(b, b->ncols);
	return (int)b->ncols++;
}

int bloom2d_column(const struct bloom2d *b, uint32_t seg)
{
	for (uint32_t c = 0; c < b->ncols; c++)
		if (b->seg[c] == seg)
			return (int)c;
	return -1;
}

void bloom2d_clear_column(struct bloom2d *b, uint32_t col)
{
	size_t w = row_words(b->cap);
	uint64_t bit = 1ull << (col % 64);

	for (uint32_t r = 0; r < b->m; r++)
		b->bits[r * w + col / 64] &= ~bit;
	b->count[col] = 0;
}

void bloom2d_drop_column(struct bloom2d *b, uint32_t col)
{
	uint32_t last = b->ncols - 1;
	size_t w = row_words(b->cap);

	if (col != last) {
		for (uint32_t r = 0; r < b->m; r++) {
			uint64_t *row = b->bits + r * w;
			uint64_t v = (row[last / 64] >> (last % 64)) & 1;

			row[col / 64] = (row[col / 64] & ~(1ull << (col % 64))) | (v << (col % 64));
		}
		b->seg[col] = b->seg[last];
		b->count[col] = b->count[last];
	}
	bloom2d_clear_column(b, last);
	b->ncols--;
}

static void positions(const struct bloom2d *b, const uint8_t hash[32], uint32_t *pos)
{
	uint64_t a, d;

	memcpy(&a, hash, 8);
	memcpy(&d, hash + 8, 8);
	d |= 1;
	for (uint32_t i = 0; i < b->k; i++)
		pos[i] = (uint32_t)((a + i * d) % b->m);
}

void bloom2d_add(struct bloom2d *b, uint32_t col, const uint8_t hash[32])
{
	uint32_t pos[32];
	size_t w = row_words(b->cap);

	positions(b, hash, pos);
	for (uint32_t i = 0; i < b->k; i++)
		b->bits[pos[i] * w + col / 64] |= 1ull << (col % 64);
	b->count[col]++;
}

size_t bloom2d_lookup(const struct bloom2d *b, const uint8_t hash[32], uint32_t *out, size_t max)
{
	uint32_t pos[32];
	size_t w = row_words(b->cap), used = (b->ncols + 63) / 64, n = 0;

	if (!b->ncols)
		return 0;
	positions(b, hash, pos);
	for (size_t j = 0; j < used; j++) {
		uint64_t v = ~0ull;

		for (uint32_t i = 0; i < b->k && v; i++)
			v &= b->bits[pos[i] * w + j];
		if (j == used - 1 && b->ncols % 64)
			v &= (1ull << (b->ncols % 64)) - 1;
		while (v) {
			uint32_t c = (uint32_t)(j * 64 + __builtin_ctzll(v));

			if (n < max)
				out[n] = c;
			n++;
			v &= v - 1;
		}
	}
	return n;
}

double bloom2d_fp_rate(uint32_t m, uint32_t k, uint64_t n)
{
	return pow(1.0 - exp(-(double)k * (double)n / (double)m), k);
}

struct bhdr {
	char magic[8];
	uint32_t m, k, ncols, pad;
};

int bloom2d_save(const struct bloom2d *b, const char *path, struct error *e)
{
	char tmp[4096];
	struct bhdr h = { .m = b->m, .k = b->k, .ncols = b->ncols };
	size_t used = (b->ncols + 63) / 64, w = row_words(b->cap);
	unsigned char md[32];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int fd, rc = -1;

	memcpy(h.magic, BLOOM_MAGIC, 8);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || !ctx) {
		error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
#define PUT(p, n)                                                               \
	do {                                                                    \
		EVP_DigestUpdate(ctx, (p), (n));                                \
		if (write_all(fd, (p), (n))) {                                  \
			error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno)); \
			goto out;                                               \
		}                                                               \
	} while (0)
	PUT(&h, sizeof(h));
	for (uint32_t c = 0; c < b->ncols; c++) {
		uint32_t pair[2] = { b->seg[c], b->count[c] };

		PUT(pair, sizeof(pair));
	}
	for (uint32_t r = 0; r < b->m && used; r++)
		PUT(b->bits + (size_t)r * w, used * sizeof(uint64_t));
#undef PUT
	EVP_DigestFinal_ex(ctx, md, NULL);
	if (write_all(fd, md, sizeof(md)) || fsync(fd)) {
		error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path)) {
		error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc)
		unlink(tmp);
	EVP_MD_CTX_free(ctx);
	return rc;
}

int bloom2d_load(struct bloom2d *b, const char *path, struct error *e)
{
	struct bhdr h;
	unsigned char md[32];
	uint8_t *buf = NULL;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;

	memset(b, 0, sizeof(*b));
	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || st.st_size < (off_t)(sizeof(h) + 32) || st.st_size > (1ll << 34)) {
		error_set(e, EXIT_BADSTATE, "%s: not a bloom index (size)", path);
		goto out;
	}
	buf = malloc(st.st_size);
	if (!buf || pread(fd, buf, st.st_size, 0) != st.st_size) {
		error_set(e, EXIT_HOST, "%s: cannot read", path);
		goto out;
	}
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, BLOOM_MAGIC, 8) || bloom2d_init(b, h.m, h.k, NULL)) {
		error_set(e, EXIT_BADSTATE, "%s: not a bloom index (header)", path);
		goto out;
	}
	size_t used = (h.ncols + 63) / 64;
	uint64_t want = sizeof(h) + (uint64_t)h.ncols * 8 + (uint64_t)h.m * used * 8 + 32;
	if (want != (uint64_t)st.st_size) {
		error_set(e, EXIT_BADSTATE, "%s: truncated or padded bloom index", path);
		goto out;
	}
	EVP_Digest(buf, st.st_size - 32, md, NULL, EVP_sha256(), NULL);
	if (memcmp(md, buf + st.st_size - 32, 32)) {
		error_set(e, EXIT_BADSTATE, "%s: bloom index checksum mismatch", path);
		goto out;
	}
	if (grow(b, h.ncols ? h.ncols : 1)) {
		error_set(e, EXIT_HOST, "%s: out of memory", path);
		goto out;
	}
	const uint8_t *p = buf + sizeof(h);
	for (uint32_t c = 0; c < h.ncols; c++, p += 8) {
		memcpy(&b->seg[c], p, 4);
		memcpy(&b->count[c], p + 4, 4);
	}
	for (uint32_t r = 0; r < h.m && used; r++, p += used * 8)
		memcpy(b->bits + (size_t)r * row_words(b->cap), p, used * 8);
	b->ncols = h.ncols;
	rc = 0;
out:
	if (rc)
		bloom2d_free(b);
	free(buf);
	close(fd);
	return rc;
}
