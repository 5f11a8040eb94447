/*
 * store.c - the image store: a log of chunk segments, their tables, the
 * Bloom index over them, and the image manifests (docs/store.md).
 *
 * A store directory holds:
 *   STORE                 its parameters (JSON): chunk sizes, segment
 *                         capacity, the index's rows and hash count
 *   lock                  flock: writers exclusive, readers shared
 *   segments/XXXXXXXX.seg the log: records of a 48-byte header (magic,
 *                         flags, raw and stored length, SHA-256) and the
 *                         chunk, zstd-compressed unless that did not help
 *   segments/XXXXXXXX.tab the segment's own table: its committed length,
 *                         and (hash, offset, lengths) sorted by hash, with
 *                         a SHA-256 of the file
 *   index.bloom           the two-dimensional Bloom array (bloom2d.c): one
 *                         column per segment
 *   images/NAME           a manifest: size, format, chain identity, and
 *                         the ordered (hash, length, flags) of its chunks,
 *                         with a SHA-256 of the file
 *
 * Commit order, and why a SIGKILL anywhere loses nothing committed:
 * records are appended to a segment past its table's committed length;
 * then the segment is fsynced and its table written to a temporary file,
 * fsynced and renamed over the old one; then the Bloom index the same way;
 * then the manifest the same way, and the directories are fsynced.  Until
 * a table's rename, the bytes past its old length are not part of the
 * store: the next writer truncates them (store_open with write).  A table
 * names only chunks whose bytes are on disk before it; a manifest names
 * only chunks in some table before it.  The Bloom file is a cache of the
 * tables: open compares each column's count with its table and rebuilds
 * a column that differs, so a crash between a table and the index leaves
 * no false negative.  gc (store_gc) copies live chunks into new segments,
 * commits their tables and the index, and only then unlinks the old table
 * (from then on the old segment is not part of the store) and the old
 * segment; a crash in between leaves a chunk in two segments, which is
 * harmless and which the next gc removes.
 *
 * What a damaged store does: every chunk read is checked (its header
 * against the table, its bytes against its SHA-256 after decompression).
 * A bad chunk is an error naming the segment, the chunk and the images it
 * breaks; the other chunks of that segment and every other image read on.
 * Manifests, tables and the index carry their own SHA-256; a bad index is
 * rebuilt from the tables, a bad table or manifest is an error naming it.
 * An image name is checked (store_name_check) before it becomes a path.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/crypto_dl.h"
#include "base/exitcode.h"
#include "base/io.h"
#include "store/bloom2d.h"
#include "store/store.h"

#define REC_MAGIC 0x314b4353u	/* "SCK1" */
#define REC_ZSTD 1u
#define TAB_MAGIC "SHSEGTB1"
#define MF_MAGIC "SHSTMF01"
#define MF_ZERO 1u		/* the chunk is all zeros and not stored */
#define READ_BLOCK (4u << 20)
#define MAX_CANDS 256

struct rec_hdr {
	uint32_t magic, flags, rlen, clen;
	uint8_t hash[32];
};

struct tab_ent {
	uint8_t hash[32];
	uint64_t off;
	uint32_t clen, rlen;
};

struct tab_hdr {
	char magic[8];
	uint32_t id, n;
	uint64_t len;
};

struct seg {
	uint32_t id;
	uint32_t n;		/* entries (committed, or so far for the active one) */
	uint64_t len;		/* committed bytes (so far for the active one) */
	struct tab_ent *ent;	/* NULL until loaded */
	uint32_t cap;
	bool sorted, dirty, dead;
	int fd;			/* -1 until opened */
};

struct mf_hdr {
	char magic[8];
	uint32_t version, nchunks;
	uint64_t size, added, generation;
	char format[16];
	char chain_id[40];
	uint32_t chain_current, pad;
};

struct mf_ent {
	uint8_t hash[32];
	uint32_t len, flags;
};

/* Version 2 manifests (an image whose parent in a chain is an image of
 * the store) carry this between the header and the entries. */
struct mf_parent {
	char name[72];
	char chain_id[40];
	uint64_t generation;
};

struct manifest {
	struct mf_hdr h;
	struct mf_parent par;	/* name "" (and version 1 on disk) without a parent */
	struct mf_ent *ent;
};

struct store {
	char *dir;
	bool write;
	int lock_fd;
	struct store_params p;
	struct bloom2d bloom;
	struct seg *segs;	/* sorted by id */
	size_t nsegs, capsegs;
	int active;		/* index in segs of the segment being appended, or -1 */
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;		/* compressed record buffer */
	size_t zcap;
};

/* ---- small helpers ---- */

void store_hash(const void *buf, size_t len, uint8_t out[32])
{
	EVP_Digest(buf, len, out, NULL, EVP_sha256(), NULL);
}

void store_hash_hex(const uint8_t h[32], char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static const char *short_hex(const uint8_t h[32], char out[17])
{
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
	return out;
}

void store_params_default(struct store_params *p)
{
	*p = (struct store_params){
		.chunk = { CHUNK_MIN_DEFAULT, CHUNK_AVG_DEFAULT, CHUNK_MAX_DEFAULT },
		.segment_bytes = 4u << 20,
		.segment_chunks = 1024,
		.bloom_bits = 16384,
		.bloom_k = 7,
		.zstd_level = 3,
	};
}

const struct store_params *store_get_params(const struct store *s)
{
	return &s->p;
}

int store_name_check(const char *name, struct error *e)
{
	size_t n = strlen(name);

	if (!n || n > 64 || name[0] == '.')
		return error_set(e, EXIT_USAGE, "image name '%s': 1 to 64 characters, not starting with '.'", name);
	for (size_t i = 0; i < n; i++)
		if (!(name[i] >= 'a' && name[i] <= 'z') && !(name[i] >= 'A' && name[i] <= 'Z') &&
		    !(name[i] >= '0' && name[i] <= '9') && !strchr("._-", name[i]))
			return error_set(e, EXIT_USAGE, "image name '%s': only letters, digits, '.', '_' and '-'", name);
	return 0;
}

static char *pathf(const struct store *s, char *buf, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static char *pathf(const struct store *s, char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int k = snprintf(buf, n, "%s/", s->dir);

	va_start(ap, fmt);
	vsnprintf(buf + k, n - k, fmt, ap);
	va_end(ap);
	return buf;
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* Write buf to path atomically: path.tmp, its SHA-256 appended when
 * `sum`, fsync, rename. */
static int write_atomic(const char *path, const void *a, size_t alen, const void *b, size_t blen,
			bool sum, struct error *e)
{
	char tmp[4200];
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
	if (write_all(fd, a, alen) || (blen && write_all(fd, b, blen)))
		goto fail;
	if (sum) {
		uint8_t md[32];
		EVP_MD_CTX *c = EVP_MD_CTX_new();

		EVP_DigestInit_ex(c, EVP_sha256(), NULL);
		EVP_DigestUpdate(c, a, alen);
		if (blen)
			EVP_DigestUpdate(c, b, blen);
		EVP_DigestFinal_ex(c, md, NULL);
		EVP_MD_CTX_free(c);
		if (write_all(fd, md, 32))
			goto fail;
	}
	if (fsync(fd))
		goto fail;
	close(fd);
	fd = -1;
	if (rename(tmp, path))
		goto fail;
	return 0;
fail:
	rc = error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

/* Read a whole file whose last 32 bytes are the SHA-256 of the rest. */
static int read_summed(const char *path, uint8_t **out, size_t *len, const char *what,
		       struct error *e)
{
	struct stat st;
	uint8_t md[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*out = NULL;
	if (fd < 0)
		return error_set(e, errno == ENOENT ? EXIT_NOINPUT : EXIT_HOST, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || st.st_size < 32 || st.st_size > (1ll << 32)) {
		close(fd);
		return error_set(e, EXIT_BADSTATE, "%s: damaged %s (size)", path, what);
	}
	*out = malloc(st.st_size);
	if (!*out || pread(fd, *out, st.st_size, 0) != st.st_size) {
		close(fd);
		free(*out);
		*out = NULL;
		return error_set(e, EXIT_HOST, "%s: cannot read", path);
	}
	close(fd);
	store_hash(*out, st.st_size - 32, md);
	if (memcmp(md, *out + st.st_size - 32, 32)) {
		free(*out);
		*out = NULL;
		return error_set(e, EXIT_BADSTATE, "%s: damaged %s (checksum mismatch)", path, what);
	}
	*len = st.st_size - 32;
	return 0;
}

/* ---- parameters ---- */

int store_init(const char *dir, const struct store_params *pp, struct error *e)
{
	struct store_params p;
	char path[4096];
	DIR *d;
	struct dirent *de;

	if (crypto_dl_error())          /* chunks are named by SHA-256 */
		return error_set(e, EXIT_HOST, "%s: SHA-256: %s", dir, crypto_dl_error());
	if (pp)
		p = *pp;
	else
		store_params_default(&p);
	if (chunker_params_check(&p.chunk))
		return error_set(e, EXIT_USAGE, "%s: unusable chunk sizes %u/%u/%u", dir, p.chunk.min,
				 p.chunk.avg, p.chunk.max);
	if (mkdir(dir, 0755) && errno != EEXIST)
		return error_set(e, EXIT_HOST, "%s: %s", dir, strerror(errno));
	d = opendir(dir);
	if (!d)
		return error_set(e, EXIT_HOST, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			return error_set(e, EXIT_USAGE, "%s: not empty (a store is made in a new or empty directory)", dir);
		}
	closedir(d);
	snprintf(path, sizeof(path), "%s/segments", dir);
	if (mkdir(path, 0755))
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/images", dir);
	if (mkdir(path, 0755))
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	json_t *j = json_pack("{s:I, s:{s:I, s:I, s:I}, s:I, s:I, s:{s:I, s:I}, s:I}", "version", (json_int_t)1,
			      "chunk", "min", (json_int_t)p.chunk.min, "avg", (json_int_t)p.chunk.avg,
			      "max", (json_int_t)p.chunk.max, "segment_bytes", (json_int_t)p.segment_bytes,
			      "segment_chunks", (json_int_t)p.segment_chunks, "bloom", "bits",
			      (json_int_t)p.bloom_bits, "k", (json_int_t)p.bloom_k, "zstd_level",
			      (json_int_t)p.zstd_level);
	char *txt = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	snprintf(path, sizeof(path), "%s/STORE", dir);
	int rc = write_atomic(path, txt, strlen(txt), "\n", 1, false, e);
	free(txt);
	if (rc)
		return rc;
	struct bloom2d b;
	if (bloom2d_init(&b, p.bloom_bits, p.bloom_k, e))
		return -1;
	snprintf(path, sizeof(path), "%s/index.bloom", dir);
	rc = bloom2d_save(&b, path, e);
	bloom2d_free(&b);
	return rc ? rc : fsync_dir(dir) ? error_set(e, EXIT_HOST, "%s: %s", dir, strerror(errno)) : 0;
}

static int read_params(struct store *s, struct error *e)
{
	char path[4096];
	json_error_t je;
	json_t *j;
	json_int_t v = 0, mn = 0, av = 0, mx = 0, sb = 0, sc = 0, bb = 0, bk = 0, zl = 0;

	pathf(s, path, sizeof(path), "STORE");
	j = json_load_file(path, 0, &je);
	if (!j) {
		if (access(path, F_OK))
			return error_set(e, EXIT_NOINPUT, "%s: not a Shoal store (no STORE file; make one with `shoal store init`)", s->dir);
		return error_set(e, EXIT_BADSTATE, "%s: %s", path, je.text);
	}
	int rc = json_unpack(j, "{s:I, s:{s:I, s:I, s:I}, s:I, s:I, s:{s:I, s:I}, s:I}", "version", &v,
			     "chunk", "min", &mn, "avg", &av, "max", &mx, "segment_bytes", &sb,
			     "segment_chunks", &sc, "bloom", "bits", &bb, "k", &bk, "zstd_level", &zl);
	json_decref(j);
	s->p = (struct store_params){ { (uint32_t)mn, (uint32_t)av, (uint32_t)mx }, (uint32_t)sb,
				      (uint32_t)sc, (uint32_t)bb, (uint32_t)bk, (int)zl };
	if (rc || v != 1 || chunker_params_check(&s->p.chunk) || sb < 65536 || sb > (1 << 30) || sc < 1 ||
	    sc > (1 << 20))
		return error_set(e, EXIT_BADSTATE, "%s: not a version-1 store description", path);
	return 0;
}

/* ---- segment tables ---- */

static int seg_cmp_id(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* qsort and bsearch with a count that may be 0 over an array not yet
 * allocated (NULL): C leaves that undefined, and UBSan stops on it. */
static void sort_n(void *v, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	if (n)
		qsort(v, n, size, cmp);
}

static void *find_n(const void *key, const void *v, size_t n, size_t size,
		    int (*cmp)(const void *, const void *))
{
	return n ? bsearch(key, v, n, size, cmp) : NULL;
}

static struct seg *seg_by_id(struct store *s, uint32_t id)
{
	struct seg key = { .id = id };

	return find_n(&key, s->segs, s->nsegs, sizeof(*s->segs), seg_cmp_id);
}

static int ent_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static int tab_load(struct store *s, struct seg *g, struct error *e)
{
	char path[4096];
	uint8_t *buf;
	size_t len;
	struct tab_hdr h;

	if (g->ent || !g->n)
		return 0;
	pathf(s, path, sizeof(path), "segments/%08x.tab", g->id);
	if (read_summed(path, &buf, &len, "segment table", e))
		return -1;
	memcpy(&h, buf, sizeof(h));
	if (len != sizeof(h) + (size_t)h.n * sizeof(struct tab_ent) || h.id != g->id || h.n != g->n) {
		free(buf);
		return error_set(e, EXIT_BADSTATE, "%s: damaged segment table (size)", path);
	}
	g->ent = malloc((size_t)h.n * sizeof(struct tab_ent));
	if (!g->ent) {
		free(buf);
		return error_set(e, EXIT_HOST, "%s: out of memory", path);
	}
	memcpy(g->ent, buf + sizeof(h), (size_t)h.n * sizeof(struct tab_ent));
	g->cap = h.n;
	g->sorted = true;
	free(buf);
	return 0;
}

static int tab_save(struct store *s, struct seg *g, struct error *e)
{
	char path[4096];
	struct tab_hdr h = { .id = g->id, .n = g->n, .len = g->len };

	memcpy(h.magic, TAB_MAGIC, 8);
	if (!g->sorted) {
		sort_n(g->ent, g->n, sizeof(*g->ent), ent_cmp);
		g->sorted = true;
	}
	if (g->fd >= 0 && fsync(g->fd))
		return error_set(e, EXIT_HOST, "segment %08x: fsync: %s", g->id, strerror(errno));
	pathf(s, path, sizeof(path), "segments/%08x.tab", g->id);
	if (write_atomic(path, &h, sizeof(h), g->ent, (size_t)g->n * sizeof(*g->ent), true, e))
		return -1;
	g->dirty = false;
	return 0;
}

static struct tab_ent *seg_find(struct seg *g, const uint8_t hash[32])
{
	if (g->sorted)
		return find_n(hash, g->ent, g->n, sizeof(*g->ent), ent_cmp);
	for (uint32_t i = 0; i < g->n; i++)
		if (!memcmp(g->ent[i].hash, hash, 32))
			return &g->ent[i];
	return NULL;
}

/* Where chunk `hash` is: through the Bloom index to the candidate segments,
 * confirmed by each one's table.  NULL if in none.  A table that cannot be
 * loaded is skipped here (verify reports it). */
static struct tab_ent *lookup(struct store *s, const uint8_t hash[32], struct seg **where)
{
	uint32_t cand[MAX_CANDS];
	size_t n = bloom2d_lookup(&s->bloom, hash, cand, MAX_CANDS);

	if (n > MAX_CANDS)
		n = MAX_CANDS;
	for (size_t i = 0; i < n; i++) {
		struct seg *g = seg_by_id(s, s->bloom.seg[cand[i]]);
		struct tab_ent *t;

		if (!g || g->dead || tab_load(s, g, NULL))
			continue;
		t = seg_find(g, hash);
		if (t) {
			*where = g;
			return t;
		}
	}
	return NULL;
}

/* ---- manifests ---- */

/* A manifest at `rel` (a path under the store: images/NAME, or a part of
 * a snapshot object, snapshots/NAME/PART.mf); `label` names it in errors. */
static int mf_load_rel(struct store *s, const char *rel, const char *label, struct manifest *m,
		       struct error *e)
{
	char path[4096];
	uint8_t *buf;
	size_t len;

	memset(m, 0, sizeof(*m));
	pathf(s, path, sizeof(path), "%s", rel);
	if (read_summed(path, &buf, &len, "manifest", e)) {
		if (e && e->status == EXIT_NOINPUT)
			error_set(e, EXIT_NOINPUT, "%s: no %s in the store", s->dir, label);
		return -1;
	}
	memcpy(&m->h, buf, len < sizeof(m->h) ? len : sizeof(m->h));
	size_t hl = sizeof(m->h) + (m->h.version == 2 ? sizeof(m->par) : 0);
	if (len < sizeof(m->h) || memcmp(m->h.magic, MF_MAGIC, 8) || (m->h.version != 1 && m->h.version != 2) ||
	    len != hl + (size_t)m->h.nchunks * sizeof(struct mf_ent)) {
		free(buf);
		return error_set(e, EXIT_BADSTATE, "%s: damaged manifest (size)", path);
	}
	if (m->h.version == 2) {
		memcpy(&m->par, buf + sizeof(m->h), sizeof(m->par));
		m->par.name[71] = m->par.chain_id[39] = 0;
		if (store_name_check(m->par.name, NULL)) {
			free(buf);
			return error_set(e, EXIT_BADSTATE, "%s: damaged manifest (its parent's name)", path);
		}
	}
	m->ent = malloc((size_t)m->h.nchunks * sizeof(*m->ent) + 1);
	if (!m->ent) {
		free(buf);
		return error_set(e, EXIT_HOST, "%s: out of memory", path);
	}
	memcpy(m->ent, buf + hl, (size_t)m->h.nchunks * sizeof(*m->ent));
	m->h.format[15] = m->h.chain_id[39] = 0;
	free(buf);
	return 0;
}

static int mf_load(struct store *s, const char *name, struct manifest *m, struct error *e)
{
	char rel[128], label[128];

	snprintf(rel, sizeof(rel), "images/%s", name);
	snprintf(label, sizeof(label), "image named '%s'", name);
	return mf_load_rel(s, rel, label, m, e);
}

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in the store's directory `sub`, sorted (free each and the
 * array): only valid names, so neither ".", ".." nor a writer's temporary
 * (".NAME.tmp-PID" for snapshots; `skip_tmp`: anything with ".tmp", the
 * images' "NAME.tmp").  A missing directory is empty where `missing_ok`. */
static int dir_names(struct store *s, const char *sub, bool skip_tmp, bool missing_ok, char ***out,
		     size_t *n, struct error *e)
{
	char path[4096];
	DIR *d = opendir(pathf(s, path, sizeof(path), "%s", sub));
	struct dirent *de;
	char **v = NULL;
	size_t k = 0;

	*out = NULL;
	*n = 0;
	if (!d)
		return missing_ok && errno == ENOENT ? 0 :
		       error_set(e, EXIT_BADSTATE, "%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		if (store_name_check(de->d_name, NULL) || (skip_tmp && strstr(de->d_name, ".tmp")))
			continue;
		char **nv = realloc(v, (k + 1) * sizeof(*v));

		if (!nv || !(nv[k] = strdup(de->d_name))) {
			closedir(d);
			free_names(nv ? nv : v, k);
			return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		}
		v = nv;
		k++;
	}
	closedir(d);
	sort_n(v, k, sizeof(*v), name_cmp);
	*out = v;
	*n = k;
	return 0;
}

/* The image names, sorted; free each and the array. */
static int list_names(struct store *s, char ***out, size_t *n, struct error *e)
{
	return dir_names(s, "images", true, false, out, n, e);
}

/* Every manifest of the store: the images' (label "NAME", rel
 * "images/NAME"), then each snapshot object's parts (label "snapshot
 * NAME/PART", rel "snapshots/NAME/PART.mf"); rels[i] pairs labels[i]. */
static int list_manifests(struct store *s, char ***labels, char ***rels, size_t *n, struct error *e)
{
	char **names, **snaps = NULL, path[4096];
	size_t k, ns = 0, cap;
	char **lv, **rv;

	if (list_names(s, &names, &k, e))
		return -1;
	if (store_snapshot_names(s, &snaps, &ns, e)) {
		free_names(names, k);
		return -1;
	}
	cap = k + 1;
	lv = calloc(cap, sizeof(*lv));
	rv = calloc(cap, sizeof(*rv));
	*n = 0;
	if (!lv || !rv)
		goto oom;
	for (size_t i = 0; i < k; i++) {
		lv[*n] = strdup(names[i]);
		if (asprintf(&rv[*n], "images/%s", names[i]) < 0)
			rv[*n] = NULL;
		if (!lv[*n] || !rv[(*n)++])
			goto oom;
	}
	for (size_t i = 0; i < ns; i++) {
		DIR *d = opendir(pathf(s, path, sizeof(path), "snapshots/%s", snaps[i]));
		struct dirent *de;

		while (d && (de = readdir(d))) {
			size_t l = strlen(de->d_name);

			if (l < 4 || strcmp(de->d_name + l - 3, ".mf") || de->d_name[0] == '.')
				continue;
			if (*n + 1 >= cap) {
				char **a = realloc(lv, 2 * cap * sizeof(*lv)), **b;

				if (a)
					lv = a;
				b = realloc(rv, 2 * cap * sizeof(*rv));
				if (b)
					rv = b;
				if (!a || !b) {
					closedir(d);
					goto oom;
				}
				cap *= 2;
			}
			lv[*n] = rv[*n] = NULL;
			if (asprintf(&lv[*n], "snapshot %s/%.*s", snaps[i], (int)(l - 3), de->d_name) < 0)
				lv[*n] = NULL;
			if (asprintf(&rv[*n], "snapshots/%s/%s", snaps[i], de->d_name) < 0)
				rv[*n] = NULL;
			if (!lv[*n] || !rv[(*n)++]) {
				closedir(d);
				goto oom;
			}
		}
		if (d)
			closedir(d);
	}
	free_names(names, k);
	free_names(snaps, ns);
	*labels = lv;
	*rels = rv;
	return 0;
oom:
	free_names(names, k);
	free_names(snaps, ns);
	if (lv)
		free_names(lv, *n);
	if (rv)
		free_names(rv, *n);
	return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
}

int store_snapshot_names(struct store *s, char ***out, size_t *n, struct error *e)
{
	return dir_names(s, "snapshots", false, true, out, n, e);
}

void store_names_free(char **v, size_t n)
{
	free_names(v, n);
}

/* "a, snapshot s/memory" - what uses chunk `hash`, for error messages. */
static void images_using(struct store *s, const uint8_t hash[32], char *out, size_t len)
{
	char **labels, **rels;
	size_t n, k = 0;

	snprintf(out, len, "none");
	if (list_manifests(s, &labels, &rels, &n, NULL))
		return;
	for (size_t i = 0; i < n; i++) {
		struct manifest m;

		if (mf_load_rel(s, rels[i], labels[i], &m, NULL))
			continue;
		for (uint32_t c = 0; c < m.h.nchunks; c++)
			if (!memcmp(m.ent[c].hash, hash, 32)) {
				int w = snprintf(out + k, len - k, "%s%s", k ? ", " : "", labels[i]);

				if (w > 0 && (size_t)w < len - k)
					k += w;
				break;
			}
		free(m.ent);
	}
	free_names(labels, n);
	free_names(rels, n);
}

/* ---- open, reconcile, close ---- */

static int seg_push(struct store *s, uint32_t id, uint32_t n, uint64_t len)
{
	if (s->nsegs == s->capsegs) {
		size_t cap = s->capsegs ? 2 * s->capsegs : 64;
		struct seg *v = realloc(s->segs, cap * sizeof(*v));

		if (!v)
			return -1;
		s->segs = v;
		s->capsegs = cap;
	}
	s->segs[s->nsegs++] = (struct seg){ .id = id, .n = n, .len = len, .fd = -1, .sorted = true };
	return 0;
}

/* Remove snapshots/SUB and the files in it (a snapshot object is one
 * level deep). */
int store_rm_dir(struct store *s, const char *sub)
{
	char path[4096];
	DIR *d = opendir(pathf(s, path, sizeof(path), "snapshots/%s", sub));
	struct dirent *de;

	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	if (d)
		closedir(d);
	return rmdir(path);
}

/* Read the tables' headers; in write mode clear what a killed writer left
 * (temporary files, segments without a table, bytes past a table's length);
 * make the Bloom index agree with the tables. */
static int reconcile(struct store *s, struct error *e)
{
	char path[4096];
	DIR *d = opendir(pathf(s, path, sizeof(path), "segments"));
	struct dirent *de;
	bool changed = false;

	if (!d)
		return error_set(e, EXIT_BADSTATE, "%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		unsigned id;
		char ext[8];
		struct tab_hdr h;

		if (strstr(de->d_name, ".tmp")) {
			if (s->write)
				unlink(pathf(s, path, sizeof(path), "segments/%s", de->d_name));
			continue;
		}
		if (sscanf(de->d_name, "%8x.%3s", &id, ext) != 2 || strcmp(ext, "tab"))
			continue;
		int fd = open(pathf(s, path, sizeof(path), "segments/%s", de->d_name), O_RDONLY | O_CLOEXEC);
		if (fd < 0 || pread(fd, &h, sizeof(h), 0) != sizeof(h) || memcmp(h.magic, TAB_MAGIC, 8) ||
		    h.id != id) {
			if (fd >= 0)
				close(fd);
			closedir(d);
			return error_set(e, EXIT_BADSTATE, "%s: damaged segment table (header)", path);
		}
		close(fd);
		if (seg_push(s, id, h.n, h.len)) {
			closedir(d);
			return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		}
	}
	closedir(d);
	sort_n(s->segs, s->nsegs, sizeof(*s->segs), seg_cmp_id);
	if (s->write) {
		d = opendir(pathf(s, path, sizeof(path), "segments"));
		while (d && (de = readdir(d))) {
			unsigned id;
			char ext[8];
			struct stat st;

			if (sscanf(de->d_name, "%8x.%3s", &id, ext) != 2 || strcmp(ext, "seg"))
				continue;
			struct seg *g = seg_by_id(s, id);
			pathf(s, path, sizeof(path), "segments/%s", de->d_name);
			if (!g)
				unlink(path);	/* never committed, or gc's old one */
			else if (!stat(path, &st) && (uint64_t)st.st_size > g->len && truncate(path, g->len)) {
				closedir(d);
				return error_set(e, EXIT_HOST, "%s: truncate: %s", path, strerror(errno));
			}
		}
		if (d)
			closedir(d);
	}
	struct error be;
	if (bloom2d_load(&s->bloom, pathf(s, path, sizeof(path), "index.bloom"), &be) ||
	    s->bloom.m != s->p.bloom_bits || s->bloom.k != s->p.bloom_k) {
		bloom2d_free(&s->bloom);
		if (bloom2d_init(&s->bloom, s->p.bloom_bits, s->p.bloom_k, e))
			return -1;
		changed = true;
	}
	for (uint32_t c = 0; c < s->bloom.ncols;) {
		if (!seg_by_id(s, s->bloom.seg[c])) {
			bloom2d_drop_column(&s->bloom, c);
			changed = true;
		} else {
			c++;
		}
	}
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];
		int c = bloom2d_column(&s->bloom, g->id);

		if (c >= 0 && s->bloom.count[c] == g->n)
			continue;
		if (c < 0)
			c = bloom2d_add_column(&s->bloom, g->id);
		if (c < 0)
			return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		bloom2d_clear_column(&s->bloom, c);
		if (tab_load(s, g, e))
			return -1;
		for (uint32_t k = 0; k < g->n; k++)
			bloom2d_add(&s->bloom, c, g->ent[k].hash);
		changed = true;
	}
	if (changed && s->write && bloom2d_save(&s->bloom, pathf(s, path, sizeof(path), "index.bloom"), e))
		return -1;
	if (s->write) {
		d = opendir(pathf(s, path, sizeof(path), "images"));
		while (d && (de = readdir(d)))
			if (strstr(de->d_name, ".tmp"))
				unlinkat(dirfd(d), de->d_name, 0);
		if (d)
			closedir(d);
		/* A snapshot object a killed writer was making or removing:
		 * "snapshots/.NAME.tmp-PID" or ".NAME.rm-PID", one level deep. */
		d = opendir(pathf(s, path, sizeof(path), "snapshots"));
		while (d && (de = readdir(d)))
			if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				store_rm_dir(s, de->d_name);
		if (d)
			closedir(d);
	}
	return 0;
}

int store_open(struct store **out, const char *dir, bool write, struct error *e)
{
	struct store *s = calloc(1, sizeof(*s));
	char path[4096];
	struct stat st;

	*out = NULL;
	if (crypto_dl_error()) {        /* every chunk read is checked by SHA-256 */
		free(s);
		return error_set(e, EXIT_HOST, "%s: SHA-256: %s", dir, crypto_dl_error());
	}
	if (!s)
		return error_set(e, EXIT_HOST, "%s: out of memory", dir);
	s->dir = strdup(dir);
	s->write = write;
	s->active = -1;
	s->lock_fd = -1;
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		error_set(e, EXIT_NOINPUT, "%s: no such store (not a directory)", dir);
		goto fail;
	}
	if (read_params(s, e))
		goto fail;
	s->lock_fd = open(pathf(s, path, sizeof(path), "lock"), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lock_fd < 0 && !write)
		s->lock_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->lock_fd < 0) {
		error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		goto fail;
	}
	/* Wait up to 30 s for another writer (or, for a writer, readers). */
	for (int i = 0; flock(s->lock_fd, (write ? LOCK_EX : LOCK_SH) | LOCK_NB); i++) {
		if (errno != EWOULDBLOCK || i == 600) {
			error_set(e, EXIT_HOST, "%s: %s", dir,
				  errno == EWOULDBLOCK ? "busy: another `shoal store` command holds it (waited 30 s)"
						       : strerror(errno));
			goto fail;
		}
		usleep(50000);
	}
	if (reconcile(s, e))
		goto fail;
	*out = s;
	return 0;
fail:
	store_close(s);
	return -1;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nsegs; i++) {
		free(s->segs[i].ent);
		if (s->segs[i].fd >= 0)
			close(s->segs[i].fd);
	}
	free(s->segs);
	bloom2d_free(&s->bloom);
	ZSTD_freeCCtx(s->cctx);
	ZSTD_freeDCtx(s->dctx);
	free(s->zbuf);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->dir);
	free(s);
}

/* ---- reading a chunk ---- */

static int seg_fd(struct store *s, struct seg *g, struct error *e)
{
	char path[4096];

	if (g->fd >= 0)
		return g->fd;
	g->fd = open(pathf(s, path, sizeof(path), "segments/%08x.seg", g->id),
		     (s->write ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0644);
	if (g->fd < 0)
		return error_set(e, EXIT_BADSTATE, "segment %08x: %s: %s", g->id, path, strerror(errno));
	return g->fd;
}

static int zbuf_room(struct store *s, size_t n)
{
	if (s->zcap >= n)
		return 0;
	uint8_t *b = realloc(s->zbuf, n);
	if (!b)
		return -1;
	s->zbuf = b;
	s->zcap = n;
	return 0;
}

/* Read chunk t of segment g into out (t->rlen bytes), checked.  The error
 * says "segment X: chunk H: why". */
static int read_chunk(struct store *s, struct seg *g, const struct tab_ent *t, uint8_t *out,
		      struct error *e)
{
	struct rec_hdr h;
	char hx[17];
	uint8_t md[32];
	int fd = seg_fd(s, g, e);

	short_hex(t->hash, hx);
	if (fd < 0)
		return -1;
	if (t->rlen > s->p.chunk.max || t->clen > ZSTD_compressBound(s->p.chunk.max) ||
	    zbuf_room(s, t->clen))
		return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: bad lengths in its table", g->id, hx);
	if (pread(fd, &h, sizeof(h), t->off) != sizeof(h) ||
	    pread(fd, s->zbuf, t->clen, t->off + sizeof(h)) != (ssize_t)t->clen)
		return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: short read (segment truncated?)", g->id, hx);
	if (h.magic != REC_MAGIC || h.rlen != t->rlen || h.clen != t->clen || memcmp(h.hash, t->hash, 32))
		return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: record header does not match the segment table", g->id, hx);
	if (h.flags & REC_ZSTD) {
		if (!s->dctx)
			s->dctx = ZSTD_createDCtx();
		size_t r = ZSTD_decompressDCtx(s->dctx, out, t->rlen, s->zbuf, t->clen);
		if (ZSTD_isError(r) || r != t->rlen)
			return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: does not decompress (%s)", g->id, hx,
					 ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong length");
	} else {
		if (t->clen != t->rlen)
			return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: bad lengths", g->id, hx);
		memcpy(out, s->zbuf, t->rlen);
	}
	store_hash(out, t->rlen, md);
	if (memcmp(md, t->hash, 32))
		return error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: content does not match its SHA-256", g->id, hx);
	return 0;
}

/* ---- appending ---- */

static struct seg *new_segment(struct store *s, struct error *e)
{
	uint32_t id = s->nsegs ? s->segs[s->nsegs - 1].id + 1 : 1;

	if (seg_push(s, id, 0, 0)) {
		error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		return NULL;
	}
	struct seg *g = &s->segs[s->nsegs - 1];
	g->dirty = true;
	if (bloom2d_add_column(&s->bloom, id) < 0) {
		error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		return NULL;
	}
	s->active = (int)(s->nsegs - 1);
	return g;
}

/* Append a record (already compressed when flags has REC_ZSTD). */
static int append(struct store *s, const uint8_t hash[32], const void *data, uint32_t clen,
		  uint32_t rlen, uint32_t flags, bool fresh_ok, struct error *e)
{
	struct seg *g = s->active >= 0 ? &s->segs[s->active] : NULL;

	if (g && (g->len + sizeof(struct rec_hdr) + clen > s->p.segment_bytes || g->n >= s->p.segment_chunks)) {
		if (tab_save(s, g, e))
			return -1;
		g = NULL;
	}
	if (!g && !(g = new_segment(s, e)))
		return -1;
	(void)fresh_ok;
	if (tab_load(s, g, e))
		return -1;
	if (g->n == g->cap) {
		uint32_t cap = g->cap ? 2 * g->cap : 256;
		struct tab_ent *v = realloc(g->ent, cap * sizeof(*v));

		if (!v)
			return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		g->ent = v;
		g->cap = cap;
	}
	int fd = seg_fd(s, g, e);
	if (fd < 0)
		return -1;
	struct rec_hdr h = { REC_MAGIC, flags, rlen, clen, { 0 } };
	memcpy(h.hash, hash, 32);
	if (pwrite(fd, &h, sizeof(h), g->len) != sizeof(h) ||
	    pwrite(fd, data, clen, g->len + sizeof(h)) != (ssize_t)clen)
		return error_set(e, EXIT_HOST, "segment %08x: write: %s", g->id, errno ? strerror(errno) : "short");
	struct tab_ent *t = &g->ent[g->n++];
	memcpy(t->hash, hash, 32);
	t->off = g->len;
	t->clen = clen;
	t->rlen = rlen;
	g->len += sizeof(h) + clen;
	g->sorted = false;
	g->dirty = true;
	bloom2d_add(&s->bloom, (uint32_t)bloom2d_column(&s->bloom, g->id), hash);
	return 0;
}

static int put_chunk(struct store *s, const uint8_t hash[32], const uint8_t *data, uint32_t len,
		     uint64_t *stored, struct error *e)
{
	if (!s->cctx)
		s->cctx = ZSTD_createCCtx();
	if (zbuf_room(s, ZSTD_compressBound(s->p.chunk.max)) || !s->cctx)
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	size_t c = ZSTD_compressCCtx(s->cctx, s->zbuf, s->zcap, data, len, s->p.zstd_level);

	if (!ZSTD_isError(c) && c < len) {
		*stored += c;
		return append(s, hash, s->zbuf, (uint32_t)c, len, REC_ZSTD, true, e);
	}
	*stored += len;
	return append(s, hash, data, len, len, 0, true, e);
}

/* Commit every segment written since open, then the index. */
static int commit_segments(struct store *s, struct error *e)
{
	char path[4096];

	for (size_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].dirty && !s->segs[i].dead && tab_save(s, &s->segs[i], e))
			return -1;
	if (fsync_dir(pathf(s, path, sizeof(path), "segments")))
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	return bloom2d_save(&s->bloom, pathf(s, path, sizeof(path), "index.bloom"), e);
}

static int mf_save_rel(struct store *s, const char *rel, const struct manifest *m, struct error *e)
{
	char path[4096], *slash;
	struct {
		struct mf_hdr h;
		struct mf_parent par;
	} hp;
	size_t hl = sizeof(m->h);

	hp.h = m->h;
	hp.h.version = 1;
	if (m->par.name[0]) {	/* version 2 only where it is needed: old readers read the rest */
		hp.h.version = 2;
		hp.par = m->par;
		hl = sizeof(hp);
	}
	_Static_assert(sizeof(hp) == sizeof(struct mf_hdr) + sizeof(struct mf_parent), "no padding");
	if (write_atomic(pathf(s, path, sizeof(path), "%s", rel), &hp, hl, m->ent,
			 (size_t)m->h.nchunks * sizeof(*m->ent), true, e))
		return -1;
	slash = strrchr(path, '/');
	*slash = 0;
	if (fsync_dir(path))
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	return 0;
}

int store_name_free(struct store *s, const char *name, struct error *e)
{
	char path[4096];

	if (!access(pathf(s, path, sizeof(path), "images/%s", name), F_OK))
		return error_set(e, EXIT_USAGE, "%s: an image named '%s' is already in the store (rm it first)", s->dir, name);
	if (!access(pathf(s, path, sizeof(path), "snapshots/%s", name), F_OK))
		return error_set(e, EXIT_USAGE, "%s: a snapshot named '%s' is already in the store (rm it first)", s->dir, name);
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

static int add_core(struct store *s, struct blockdev *bd, const char *rel, struct store_add_stats *st,
		    store_progress_fn progress, void *opaque, struct error *e)
{
	struct manifest m = { 0 };
	size_t cap_ent = 0, have = 0, pos = 0, bufsz = READ_BLOCK + s->p.chunk.max;
	uint64_t off = 0, size = bd->size, next_progress = 0;
	uint8_t *buf = NULL;
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	buf = malloc(bufsz);
	if (!buf)
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	/* Keep appending to the last segment if it has room. */
	if (s->nsegs) {
		struct seg *g = &s->segs[s->nsegs - 1];

		if (g->len + 4096 < s->p.segment_bytes && g->n < s->p.segment_chunks && !tab_load(s, g, NULL))
			s->active = (int)(s->nsegs - 1);
	}
	st->image_bytes = size;
	for (;;) {
		/* Refill: keep the unchunked tail, read up to READ_BLOCK more. */
		if (pos) {
			memmove(buf, buf + pos, have - pos);
			have -= pos;
			pos = 0;
		}
		if (off < size && have < s->p.chunk.max) {
			uint64_t n = size - off < READ_BLOCK ? size - off : READ_BLOCK;
			int r = blockdev_read(bd, buf + have, off, n);

			if (r) {
				error_set(e, EXIT_HOST, "%s: read at %llu: %s", bd->path,
					  (unsigned long long)off, bd->err.msg[0] ? bd->err.msg : strerror(-r));
				goto out;
			}
			off += n;
			have += n;
		}
		if (!have)
			break;
		bool last = off >= size;
		while (pos < have) {
			size_t n = chunker_next(&s->p.chunk, buf + pos, have - pos, last);

			if (!n)
				break;
			if (m.h.nchunks == cap_ent) {
				cap_ent = cap_ent ? 2 * cap_ent : 1024;
				struct mf_ent *v = realloc(m.ent, cap_ent * sizeof(*v));
				if (!v) {
					error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
					goto out;
				}
				m.ent = v;
			}
			struct mf_ent *me = &m.ent[m.h.nchunks++];
			me->len = (uint32_t)n;
			me->flags = 0;
			st->chunks++;
			if (all_zero(buf + pos, n)) {
				memset(me->hash, 0, 32);
				me->flags = MF_ZERO;
				st->zero_chunks++;
			} else {
				struct seg *g;

				store_hash(buf + pos, n, me->hash);
				if (!lookup(s, me->hash, &g)) {
					if (put_chunk(s, me->hash, buf + pos, (uint32_t)n, &st->stored_bytes, e))
						goto out;
					st->new_chunks++;
					st->new_bytes += n;
				}
			}
			pos += n;
		}
		if (progress && off >= next_progress) {
			progress(opaque, off, size);
			next_progress = off + (64u << 20);
		}
		if (last && pos == have)
			break;
	}
	if (progress)
		progress(opaque, size, size);
	memcpy(m.h.magic, MF_MAGIC, 8);
	m.h.version = 1;
	m.h.size = size;
	m.h.added = (uint64_t)time(NULL);
	snprintf(m.h.format, sizeof(m.h.format), "%s", blockdev_format_name(bd->format));
	{
		char id[37];
		uint64_t gen;
		bool cur;

		if (!blockdev_chain_id(bd, id, &gen, &cur)) {
			snprintf(m.h.chain_id, sizeof(m.h.chain_id), "%s", id);
			m.h.generation = gen;
			m.h.chain_current = cur;
		}
		/* An image whose backing file is an image of the store (the
		 * same chain identity) keeps that link: it is that image's
		 * child in a chain, and `get --chain` rebuilds the overlay. */
		if (!strncmp(rel, "images/", 7) && bd->backing &&
		    !blockdev_chain_id(bd->backing, id, &gen, &cur) && cur) {
			char pname[65];

			if (!store_find_identity(s, id, gen, pname)) {
				snprintf(m.par.name, sizeof(m.par.name), "%s", pname);
				snprintf(m.par.chain_id, sizeof(m.par.chain_id), "%s", id);
				m.par.generation = gen;
			}
		}
	}
	if (commit_segments(s, e) || mf_save_rel(s, rel, &m, e))
		goto out;
	rc = 0;
out:
	free(m.ent);
	free(buf);
	return rc;
}

int store_add(struct store *s, struct blockdev *bd, const char *name, struct store_add_stats *st,
	      store_progress_fn progress, void *opaque, struct error *e)
{
	char rel[128];

	memset(st, 0, sizeof(*st));
	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	if (store_name_check(name, e) || store_name_free(s, name, e))
		return -1;
	snprintf(rel, sizeof(rel), "images/%s", name);
	return add_core(s, bd, rel, st, progress, opaque, e);
}

int store_add_at(struct store *s, struct blockdev *bd, const char *rel, struct store_add_stats *st,
		 store_progress_fn progress, void *opaque, struct error *e)
{
	return add_core(s, bd, rel, st, progress, opaque, e);
}

/* ---- get, ls, du, rm ---- */

static int get_core(struct store *s, struct manifest *mp, const char *name, uint64_t *size_out,
		    int (*sized)(void *opaque, uint64_t size, const char *format, struct error *e),
		    store_write_fn write_fn, void *opaque, struct error *e)
{
	struct manifest m = *mp;
	uint8_t *buf;
	uint64_t off = 0;
	int rc = -1;

	*size_out = m.h.size;
	buf = malloc(s->p.chunk.max);
	if (!buf) {
		free(m.ent);
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	}
	if (sized && sized(opaque, m.h.size, m.h.format, e))
		goto out;
	for (uint32_t i = 0; i < m.h.nchunks; off += m.ent[i].len, i++) {
		struct seg *g;
		struct tab_ent *t;
		char hx[17], users[512];

		if (m.ent[i].flags & MF_ZERO)
			continue;
		t = lookup(s, m.ent[i].hash, &g);
		if (!t) {
			images_using(s, m.ent[i].hash, users, sizeof(users));
			error_set(e, EXIT_BADSTATE, "%s: chunk %s at offset %llu is in no segment (lost; it breaks images: %s)",
				  name, short_hex(m.ent[i].hash, hx), (unsigned long long)off, users);
			goto out;
		}
		if (t->rlen != m.ent[i].len || read_chunk(s, g, t, buf, e)) {
			if (t->rlen != m.ent[i].len)
				error_set(e, EXIT_BADSTATE, "segment %08x: chunk %s: length differs from the manifest",
					  g->id, short_hex(t->hash, hx));
			images_using(s, m.ent[i].hash, users, sizeof(users));
			error_prefix(e, "%s at offset %llu", name, (unsigned long long)off);
			size_t k = strlen(e->msg);
			snprintf(e->msg + k, sizeof(e->msg) - k, " (it breaks images: %s)", users);
			goto out;
		}
		if (write_fn(opaque, buf, off, t->rlen, e))
			goto out;
	}
	rc = 0;
out:
	free(buf);
	free(m.ent);
	return rc;
}

int store_get(struct store *s, const char *name, uint64_t *size_out,
	      int (*sized)(void *opaque, uint64_t size, const char *format, struct error *e),
	      store_write_fn write_fn, void *opaque, struct error *e)
{
	struct manifest m;
	char label[128];

	if (store_name_check(name, e) || mf_load(s, name, &m, e))
		return -1;
	snprintf(label, sizeof(label), "image %s", name);
	return get_core(s, &m, label, size_out, sized, write_fn, opaque, e);
}

int store_get_at(struct store *s, const char *rel, const char *label, uint64_t *size_out,
		 int (*sized)(void *opaque, uint64_t size, const char *format, struct error *e),
		 store_write_fn write_fn, void *opaque, struct error *e)
{
	struct manifest m;

	if (mf_load_rel(s, rel, label, &m, e))
		return -1;
	return get_core(s, &m, label, size_out, sized, write_fn, opaque, e);
}

struct hash_img {
	uint8_t hash[32];
	uint32_t img, len;
};

static int hi_cmp(const void *a, const void *b)
{
	const struct hash_img *x = a, *y = b;
	int c = memcmp(x->hash, y->hash, 32);

	return c ? c : x->img < y->img ? -1 : x->img > y->img;
}

int store_list(struct store *s, struct store_image **list, size_t *n, struct error *e)
{
	char **names;
	size_t k, nh = 0;
	struct hash_img *hi = NULL;
	struct store_image *v;

	*list = NULL;
	*n = 0;
	if (list_names(s, &names, &k, e))
		return -1;
	v = calloc(k + 1, sizeof(*v));
	for (size_t i = 0; i < k; i++) {
		struct manifest m;

		if (mf_load(s, names[i], &m, e)) {
			free(v);
			free(hi);
			free_names(names, k);
			return -1;
		}
		snprintf(v[i].name, sizeof(v[i].name), "%s", names[i]);
		v[i].size = m.h.size;
		snprintf(v[i].format, sizeof(v[i].format), "%s", m.h.format);
		memcpy(v[i].chain_id, m.h.chain_id, sizeof(v[i].chain_id) - 1);
		v[i].generation = m.h.generation;
		v[i].added = m.h.added;
		v[i].chunks = m.h.nchunks;
		snprintf(v[i].parent, sizeof(v[i].parent), "%.64s", m.par.name);
		hi = realloc(hi, (nh + m.h.nchunks + 1) * sizeof(*hi));
		for (uint32_t c = 0; c < m.h.nchunks; c++) {
			if (m.ent[c].flags & MF_ZERO) {
				v[i].zero_chunks++;
				continue;
			}
			memcpy(hi[nh].hash, m.ent[c].hash, 32);
			hi[nh].img = (uint32_t)i;
			hi[nh++].len = m.ent[c].len;
		}
		free(m.ent);
	}
	sort_n(hi, nh, sizeof(*hi), hi_cmp);
	for (size_t a = 0; a < nh;) {
		size_t b = a + 1;
		bool one = true;

		while (b < nh && !memcmp(hi[b].hash, hi[a].hash, 32)) {
			if (hi[b].img != hi[a].img)
				one = false;
			b++;
		}
		if (one)
			v[hi[a].img].unique_bytes += hi[a].len;
		a = b;
	}
	free(hi);
	free_names(names, k);
	*list = v;
	*n = k;
	return 0;
}

int store_du(struct store *s, struct store_du *du, struct error *e)
{
	char path[4096];
	struct stat st;

	memset(du, 0, sizeof(*du));
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];

		if (g->dead)
			continue;
		du->segments++;
		if (!stat(pathf(s, path, sizeof(path), "segments/%08x.seg", g->id), &st))
			du->segment_bytes += st.st_size;
		if (tab_load(s, g, e))
			return -1;
		du->chunks += g->n;
		for (uint32_t k = 0; k < g->n; k++)
			du->chunk_bytes += g->ent[k].rlen;
	}
	return 0;
}

int store_find_identity(struct store *s, const char *chain_id, uint64_t generation, char name[65])
{
	char **names;
	size_t k;
	int rc = -1;

	if (!chain_id[0] || list_names(s, &names, &k, NULL))
		return -1;
	for (size_t i = 0; i < k && rc; i++) {
		struct manifest m;

		if (mf_load(s, names[i], &m, NULL))
			continue;
		if (!strcmp(m.h.chain_id, chain_id) && m.h.generation == generation) {
			snprintf(name, 65, "%s", names[i]);
			rc = 0;
		}
		free(m.ent);
	}
	free_names(names, k);
	return rc;
}

bool store_image_has_identity(struct store *s, const char *name, const char *chain_id, uint64_t generation)
{
	struct manifest m;
	bool same;

	if (!name || !name[0] || !chain_id || !chain_id[0] || store_name_check(name, NULL) ||
	    mf_load(s, name, &m, NULL))
		return false;
	same = !strcmp(m.h.chain_id, chain_id) && m.h.generation == generation;
	free(m.ent);
	return same;
}

void store_children_of(struct store *s, const char *name, char *out, size_t n)
{
	char **names;
	size_t k, len = 0;

	out[0] = 0;
	if (list_names(s, &names, &k, NULL))
		return;
	for (size_t i = 0; i < k; i++) {
		struct manifest m;

		if (mf_load(s, names[i], &m, NULL))
			continue;
		if (!strcmp(m.par.name, name) && len + strlen(names[i]) + 3 < n)
			len += (size_t)snprintf(out + len, n - len, "%s%s", len ? ", " : "", names[i]);
		free(m.ent);
	}
	free_names(names, k);
}

int store_rm(struct store *s, const char *name, struct error *e)
{
	char path[4096], kids[512];

	if (store_name_check(name, e))
		return -1;
	store_children_of(s, name, kids, sizeof(kids));
	if (kids[0])
		return error_set(e, EXIT_USAGE, "%s: image '%s' is the parent of %s in a chain (rm them first)",
				 s->dir, name, kids);
	if (unlink(pathf(s, path, sizeof(path), "images/%s", name)))
		return error_set(e, errno == ENOENT ? EXIT_NOINPUT : EXIT_HOST, "%s: %s",
				 errno == ENOENT ? s->dir : path,
				 errno == ENOENT ? "no such image in the store" : strerror(errno));
	if (fsync_dir(pathf(s, path, sizeof(path), "images")))
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	return 0;
}

/* ---- gc ---- */

/* The sorted distinct hashes of every image's and snapshot part's stored
 * chunks. */
static int live_set(struct store *s, uint8_t (**out)[32], size_t *n, struct error *e)
{
	char **names, **rels;
	size_t k, nh = 0;
	uint8_t(*v)[32] = NULL;

	if (list_manifests(s, &names, &rels, &k, e))
		return -1;
	for (size_t i = 0; i < k; i++) {
		struct manifest m;

		if (mf_load_rel(s, rels[i], names[i], &m, e)) {
			free(v);
			free_names(names, k);
			free_names(rels, k);
			return -1;
		}
		v = realloc(v, (nh + m.h.nchunks + 1) * 32);
		for (uint32_t c = 0; c < m.h.nchunks; c++)
			if (!(m.ent[c].flags & MF_ZERO))
				memcpy(v[nh++], m.ent[c].hash, 32);
		free(m.ent);
	}
	free_names(names, k);
	free_names(rels, k);
	sort_n(v, nh, 32, ent_cmp);
	size_t d = 0;
	for (size_t i = 0; i < nh; i++)
		if (!d || memcmp(v[d - 1], v[i], 32))
			memcpy(v[d++], v[i], 32);
	*out = v;
	*n = d;
	return 0;
}

int store_gc(struct store *s, struct store_gc_stats *st, struct error *e)
{
	uint8_t(*live)[32] = NULL;
	size_t nlive, nold = s->nsegs;
	uint8_t *placed = NULL, *buf = NULL;
	bool *rewrite = NULL;
	char path[4096];
	int rc = -1;

	memset(st, 0, sizeof(*st));
	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	if (live_set(s, &live, &nlive, e))
		return -1;
	placed = calloc(nlive + 1, 1);
	rewrite = calloc(nold + 1, sizeof(*rewrite));
	buf = malloc(s->p.chunk.max);
	if (!placed || !rewrite || !buf) {
		error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
		goto out;
	}
	/* Which segments hold a dead chunk (or a second copy of a live one). */
	for (size_t i = 0; i < nold; i++) {
		struct seg *g = &s->segs[i];
		struct stat sst;

		st->bytes_before += stat(pathf(s, path, sizeof(path), "segments/%08x.seg", g->id), &sst) ? 0 : sst.st_size;
		if (tab_load(s, g, e))
			goto out;
		for (uint32_t k = 0; k < g->n; k++) {
			uint8_t(*l)[32] = find_n(g->ent[k].hash, live, nlive, 32, ent_cmp);

			if (!l || placed[l - live]) {
				rewrite[i] = true;
				st->dead_chunks++;
			}
		}
		if (!rewrite[i])
			for (uint32_t k = 0; k < g->n; k++)
				placed[(uint8_t(*)[32])find_n(g->ent[k].hash, live, nlive, 32, ent_cmp) - live] = 1;
	}
	/* Copy the live chunks of the others into new segments. */
	s->active = -1;
	for (size_t i = 0; i < nold; i++) {
		if (!rewrite[i])
			continue;
		for (uint32_t k = 0; k < s->segs[i].n; k++) {
			struct seg *g = &s->segs[i];
			struct tab_ent t = g->ent[k];
			uint8_t(*l)[32] = find_n(t.hash, live, nlive, 32, ent_cmp);

			if (!l || placed[l - live])
				continue;
			if (read_chunk(s, g, &t, buf, e)) {
				char users[512];

				images_using(s, t.hash, users, sizeof(users));
				size_t n = strlen(e->msg);
				snprintf(e->msg + n, sizeof(e->msg) - n, " (it breaks images: %s); gc stopped, nothing removed",
					 users);
				goto out;
			}
			placed[l - live] = 1;
			uint64_t dummy = 0;
			/* put_chunk may grow s->segs: g is not used after it */
			if (put_chunk(s, t.hash, buf, t.rlen, &dummy, e))
				goto out;
		}
		st->segments_rewritten++;
	}
	/* Commit the new segments and an index without the old ones... */
	for (size_t i = 0; i < nold; i++)
		if (rewrite[i]) {
			int c = bloom2d_column(&s->bloom, s->segs[i].id);

			s->segs[i].dead = true;
			if (c >= 0)
				bloom2d_drop_column(&s->bloom, c);
		}
	if (commit_segments(s, e))
		goto out;
	/* ...then unlink the old ones: the table first (from then on the
	 * segment is no part of the store), then the log file. */
	for (size_t i = 0; i < nold; i++) {
		if (!rewrite[i])
			continue;
		unlink(pathf(s, path, sizeof(path), "segments/%08x.tab", s->segs[i].id));
		unlink(pathf(s, path, sizeof(path), "segments/%08x.seg", s->segs[i].id));
		st->segments_removed++;
	}
	if (fsync_dir(pathf(s, path, sizeof(path), "segments"))) {
		error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < s->nsegs; i++) {
		struct stat sst;

		if (!s->segs[i].dead &&
		    !stat(pathf(s, path, sizeof(path), "segments/%08x.seg", s->segs[i].id), &sst))
			st->bytes_after += sst.st_size;
	}
	st->live_chunks = nlive;
	rc = 0;
out:
	free(live);
	free(placed);
	free(rewrite);
	free(buf);
	return rc;
}

/* ---- verify ---- */

int store_verify(struct store *s, void (*bad)(void *opaque, const char *line), void *opaque,
		 uint64_t *checked, struct error *e)
{
	uint8_t *buf = malloc(s->p.chunk.max);
	char line[2048], users[512], hx[17];
	char **names, **rels;
	size_t k;
	int problems = 0;

	*checked = 0;
	if (!buf)
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];
		struct error ce = { 0 };

		if (tab_load(s, g, &ce)) {
			snprintf(line, sizeof(line), "%s", ce.msg);
			bad(opaque, line);
			problems++;
			continue;
		}
		for (uint32_t c = 0; c < g->n; c++) {
			(*checked)++;
			if (!read_chunk(s, g, &g->ent[c], buf, &ce))
				continue;
			images_using(s, g->ent[c].hash, users, sizeof(users));
			snprintf(line, sizeof(line), "%s (it breaks images: %s)", ce.msg, users);
			bad(opaque, line);
			problems++;
		}
	}
	free(buf);
	if (list_manifests(s, &names, &rels, &k, e))
		return -1;
	for (size_t i = 0; i < k; i++) {
		struct manifest m;
		struct error me = { 0 };
		uint64_t off = 0;

		if (mf_load_rel(s, rels[i], names[i], &m, &me)) {
			bad(opaque, me.msg);
			problems++;
			continue;
		}
		for (uint32_t c = 0; c < m.h.nchunks; off += m.ent[c].len, c++) {
			struct seg *g;

			if (m.ent[c].flags & MF_ZERO || lookup(s, m.ent[c].hash, &g))
				continue;
			snprintf(line, sizeof(line), "%s%s: chunk %s at offset %llu is in no segment",
				 strncmp(rels[i], "images/", 7) ? "" : "image ", names[i],
				 short_hex(m.ent[c].hash, hx), (unsigned long long)off);
			bad(opaque, line);
			problems++;
		}
		if (m.par.name[0]) {	/* its parent in a chain: there, the same image */
			struct manifest pm;

			if (mf_load(s, m.par.name, &pm, NULL)) {
				snprintf(line, sizeof(line), "image %s: its parent '%.64s' is not in the store", names[i],
					 m.par.name);
				bad(opaque, line);
				problems++;
			} else {
				if (strcmp(pm.h.chain_id, m.par.chain_id) || pm.h.generation != m.par.generation) {
					snprintf(line, sizeof(line), "image %s: its parent '%.64s' has chain identity %s "
						 "generation %llu, not %s generation %llu", names[i], m.par.name,
						 pm.h.chain_id, (unsigned long long)pm.h.generation, m.par.chain_id,
						 (unsigned long long)m.par.generation);
					bad(opaque, line);
					problems++;
				}
				free(pm.ent);
			}
		}
		free(m.ent);
	}
	free_names(names, k);
	free_names(rels, k);
	return problems;
}

/* ---- chunks and manifests one at a time (store/serve.c, store/pull.c) ---- */

const char *store_dir(const struct store *s)
{
	return s->dir;
}

static int manifest_export(struct store *s, struct manifest *mp, struct store_manifest *out,
			   struct error *e);

int store_manifest_get(struct store *s, const char *name, struct store_manifest *out, struct error *e)
{
	struct manifest m;

	memset(out, 0, sizeof(*out));
	if (store_name_check(name, e) || mf_load(s, name, &m, e))
		return -1;
	return manifest_export(s, &m, out, e);
}

int store_manifest_get_at(struct store *s, const char *rel, const char *label,
			  struct store_manifest *out, struct error *e)
{
	struct manifest m;

	memset(out, 0, sizeof(*out));
	if (mf_load_rel(s, rel, label, &m, e))
		return -1;
	return manifest_export(s, &m, out, e);
}

static int manifest_export(struct store *s, struct manifest *mp, struct store_manifest *out,
			   struct error *e)
{
	struct manifest m = *mp;
	EVP_MD_CTX *c;

	out->c = calloc((size_t)m.h.nchunks + 1, sizeof(*out->c));
	c = EVP_MD_CTX_new();
	if (!out->c || !c) {
		free(m.ent);
		free(out->c);
		out->c = NULL;
		EVP_MD_CTX_free(c);
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	}
	/* The identity: the same SHA-256 the file carries (header, parent,
	 * entries). */
	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	EVP_DigestUpdate(c, &m.h, sizeof(m.h));
	if (m.h.version == 2)
		EVP_DigestUpdate(c, &m.par, sizeof(m.par));
	EVP_DigestUpdate(c, m.ent, (size_t)m.h.nchunks * sizeof(*m.ent));
	EVP_DigestFinal_ex(c, out->sum, NULL);
	EVP_MD_CTX_free(c);
	out->size = m.h.size;
	out->added = m.h.added;
	out->generation = m.h.generation;
	snprintf(out->format, sizeof(out->format), "%s", m.h.format);
	snprintf(out->chain_id, sizeof(out->chain_id), "%.36s", m.h.chain_id);
	out->chain_current = m.h.chain_current;
	snprintf(out->parent, sizeof(out->parent), "%.64s", m.par.name);
	snprintf(out->parent_chain_id, sizeof(out->parent_chain_id), "%.36s", m.par.chain_id);
	out->parent_generation = m.par.generation;
	out->n = m.h.nchunks;
	for (uint32_t i = 0; i < m.h.nchunks; i++) {
		memcpy(out->c[i].hash, m.ent[i].hash, 32);
		out->c[i].len = m.ent[i].len;
		out->c[i].flags = m.ent[i].flags & MF_ZERO ? STORE_CHUNK_ZERO : 0;
	}
	free(m.ent);
	return 0;
}

void store_manifest_free(struct store_manifest *m)
{
	free(m->c);
	m->c = NULL;
	m->n = 0;
}

bool store_chunk_has(struct store *s, const uint8_t hash[32])
{
	struct seg *g;

	return lookup(s, hash, &g) != NULL;
}

int store_chunk_read(struct store *s, const uint8_t hash[32], uint8_t *buf, uint32_t *len,
		     struct error *e)
{
	struct seg *g;
	struct tab_ent *t = lookup(s, hash, &g);
	char hx[17], users[512];

	if (!t)
		return error_set(e, EXIT_NOINPUT, "%s: chunk %s: not in the store", s->dir, short_hex(hash, hx));
	if (read_chunk(s, g, t, buf, e)) {
		if (e) {
			size_t k = strlen(e->msg);

			images_using(s, hash, users, sizeof(users));
			snprintf(e->msg + k, sizeof(e->msg) - k, " (it breaks images: %s)", users);
		}
		return -1;
	}
	*len = t->rlen;
	return 0;
}

/* A writer's first append goes on in the last segment if it has room. */
static void resume_last_segment(struct store *s)
{
	if (s->active < 0 && s->nsegs) {
		struct seg *g = &s->segs[s->nsegs - 1];

		if (!g->dead && g->len + 4096 < s->p.segment_bytes && g->n < s->p.segment_chunks &&
		    !tab_load(s, g, NULL))
			s->active = (int)(s->nsegs - 1);
	}
}

int store_chunk_put(struct store *s, const uint8_t hash[32], const void *data, uint32_t len,
		    struct error *e)
{
	uint8_t md[32];
	uint64_t stored = 0;
	char hx[17];

	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	if (!len || len > s->p.chunk.max)
		return error_set(e, EXIT_BADSTATE, "chunk %s: %u bytes (this store takes 1 to %u)",
				 short_hex(hash, hx), len, s->p.chunk.max);
	store_hash(data, len, md);
	if (memcmp(md, hash, 32))
		return error_set(e, EXIT_BADSTATE, "chunk %s: its bytes do not match its SHA-256",
				 short_hex(hash, hx));
	if (store_chunk_has(s, hash))
		return 0;
	resume_last_segment(s);
	return put_chunk(s, hash, data, len, &stored, e);
}

int store_commit(struct store *s, struct error *e)
{
	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	return commit_segments(s, e);
}

static int manifest_put(struct store *s, const char *rel, const char *name,
			const struct store_manifest *in, struct error *e);

int store_manifest_put(struct store *s, const char *name, const struct store_manifest *in,
		       struct error *e)
{
	char rel[128], label[128];

	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	if (store_name_check(name, e) || store_name_free(s, name, e))
		return -1;
	snprintf(rel, sizeof(rel), "images/%s", name);
	snprintf(label, sizeof(label), "image %s", name);
	return manifest_put(s, rel, label, in, e);
}

int store_manifest_put_at(struct store *s, const char *rel, const char *label,
			  const struct store_manifest *in, struct error *e)
{
	if (!s->write)
		return error_set(e, EXIT_USAGE, "%s: store opened read-only", s->dir);
	return manifest_put(s, rel, label, in, e);
}

static int manifest_put(struct store *s, const char *rel, const char *name,
			const struct store_manifest *in, struct error *e)
{
	char hx[17];
	struct manifest m = { 0 };
	uint64_t total = 0;
	int rc;

	m.ent = calloc((size_t)in->n + 1, sizeof(*m.ent));
	if (!m.ent)
		return error_set(e, EXIT_HOST, "%s: out of memory", s->dir);
	for (uint32_t i = 0; i < in->n; i++) {
		bool zero = in->c[i].flags & STORE_CHUNK_ZERO;

		if (!in->c[i].len || in->c[i].len > s->p.chunk.max ||
		    (!zero && !store_chunk_has(s, in->c[i].hash))) {
			free(m.ent);
			return error_set(e, EXIT_BADSTATE, "%s: chunk %s (#%u): %s", name,
					 short_hex(in->c[i].hash, hx), i,
					 in->c[i].len && in->c[i].len <= s->p.chunk.max ? "not in the store" : "bad length");
		}
		memcpy(m.ent[i].hash, in->c[i].hash, 32);
		if (zero)
			memset(m.ent[i].hash, 0, 32);
		m.ent[i].len = in->c[i].len;
		m.ent[i].flags = zero ? MF_ZERO : 0;
		total += in->c[i].len;
	}
	if (total != in->size) {
		free(m.ent);
		return error_set(e, EXIT_BADSTATE, "%s: its chunks add up to %llu bytes, not its size %llu",
				 name, (unsigned long long)total, (unsigned long long)in->size);
	}
	memcpy(m.h.magic, MF_MAGIC, 8);
	m.h.version = 1;
	m.h.nchunks = in->n;
	m.h.size = in->size;
	m.h.added = in->added ? in->added : (uint64_t)time(NULL);
	m.h.generation = in->generation;
	snprintf(m.h.format, sizeof(m.h.format), "%s", in->format);
	snprintf(m.h.chain_id, sizeof(m.h.chain_id), "%s", in->chain_id);
	m.h.chain_current = in->chain_current;
	/* A parent is kept only where this store has that image, with the
	 * same identity (a pulled child of a base not pulled stands alone). */
	if (!strncmp(rel, "images/", 7) &&
	    store_image_has_identity(s, in->parent, in->parent_chain_id, in->parent_generation)) {
		snprintf(m.par.name, sizeof(m.par.name), "%s", in->parent);
		snprintf(m.par.chain_id, sizeof(m.par.chain_id), "%s", in->parent_chain_id);
		m.par.generation = in->parent_generation;
	}
	rc = commit_segments(s, e) || mf_save_rel(s, rel, &m, e) ? -1 : 0;
	free(m.ent);
	return rc;
}
