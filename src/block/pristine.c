/*
 * pristine.c - disk reads served from pristine copies (issue 13 item 6,
 * seed mechanism 19).
 *
 * Ten clones booted from one base image read the same blocks of it.  With
 * `--disk ...,pristine=DIR` the first read-only image of a disk's chain
 * (the backing file of a qcow2 overlay, or the disk itself when it is
 * read-only) gets a cache: a shared-memory file in DIR, one per image
 * identity, mapped MAP_SHARED by every VMM process that opens that image.
 * A read of that image first looks there; a block found intact is copied
 * out, with no file I/O; the others are read from the image and put in, for
 * the next clone.  The block layer counts hits, the bytes served from the
 * cache and the bytes read from files (pristine_stats).
 *
 * Only pristine bytes go in.  The cache sits under the read-only image,
 * reached only by reads (blockdev_read of a read-only top, and
 * blockdev_read_backing of an overlay); writes go to the overlay above it
 * and never come here.  What is put in is what img->ops->read returned from
 * the image's files.  The guest chooses only which offsets are read; it can
 * not put its own data in, and a block is keyed by its offset in the image,
 * so it comes back only for the same offset of the same image.
 *
 * A changed image is never served.  The file name is a 128-bit hash of the
 * identity of every file of the chain from the cached image down: device,
 * inode, size, modification, change and birth times (statx), format,
 * virtual size, and for qcow2 the chain identity (chain_id.c: id,
 * generation, and whether it is current).  Any write to a file changes its
 * change time, which no program can set back, so a base written since
 * (even by a program that keeps the old modification time) has another
 * name and starts empty; a base replaced by another file has another inode
 * or birth time.  While the chain is open the block layer's locks refuse
 * writers (block/lock.c); an open that lets others write (force_share,
 * share_writes) gets no cache.  The header repeats the identity, the
 * geometry and a checksum of both, checked at open.
 *
 * The clock's tick: the kernel stamps change times from a coarse clock, so
 * two writes within one tick (a few ms) may leave the same change time.  A
 * cache is therefore attached only once the coarse clock has passed the
 * newest change time of the chain's files (waiting up to a tick, once, for
 * an image written a moment ago): any later write is then stamped later and
 * names another cache.  A host clock set backwards breaks this, as it
 * breaks make.
 *
 * Shared without locks.  Slot i holds block number b with b % nslots == i
 * (direct mapped: an image no larger than the cache never evicts); a slot is
 * a tag (b + 1, 0 while being written), a 64-bit checksum and 4 KiB of data.
 * A writer stores tag 0, the data, the checksum (XXH3-64 of the data seeded
 * with the image identity and the tag), then the tag.  A reader loads the
 * tag, copies the data and the checksum, loads the tag again, and uses the
 * copy only if both tags are its block's and the checksum of the copy is
 * right.  So two writers racing on one slot, a writer racing a reader, or a
 * process killed at any instruction leaves at worst a slot whose checksum
 * does not match: it is counted as refused and read from the file, and the
 * next insert repairs it.  Nothing is ever held: there is no lock a killed
 * process could leave behind.  A new cache file is made whole under a
 * temporary name and linked into place, so no process maps a half-made
 * header; a file whose header is wrong is replaced by rename (processes
 * that map the old one keep it).
 *
 * Bounded: a cache holds at most max_bytes of data (default 256 MiB, never
 * more than the image), in a sparse file, so memory is spent only on blocks
 * read.  The files are not removed at exit (that is the point); the
 * operator owns DIR (mode 0700 is advised: anyone who can write DIR's files
 * can feed the VMMs data or truncate a file under them - SIGBUS), and
 * deletes it, or the caches of images gone, when they like.  Put DIR on a
 * tmpfs (/dev/shm) so the pages are memory.
 */
#include "block/pristine.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/log.h"

#define PC_MAGIC "SHOALPC1"
#define PC_VERSION 1u
#define PC_CHUNK 256			/* blocks looked up per pass */

struct pc_header {
	char magic[8];
	uint32_t version;
	uint32_t block;
	uint64_t nslots;
	uint64_t image_size;
	uint64_t ident[2];
	uint64_t sum;			/* XXH3-64 of the fields above */
};

struct pc_slot {
	_Atomic uint64_t tag;		/* block + 1; 0 empty or being written */
	_Atomic uint64_t sum;
};

struct pristine {
	char *path;
	uint8_t *map;
	size_t map_len;
	uint64_t nslots;
	struct pc_slot *slots;
	uint8_t *data;
	uint64_t seed;
	struct pristine_stats st;	/* updated with relaxed atomics */
};

static uint64_t header_sum(const struct pc_header *h)
{
	return XXH3_64bits(h, offsetof(struct pc_header, sum));
}

static uint64_t slots_bytes(uint64_t nslots)
{
	return (nslots * sizeof(struct pc_slot) + 4095) & ~4095ull;
}

static uint64_t file_len(uint64_t nslots)
{
	return 4096 + slots_bytes(nslots) + nslots * PRISTINE_BLOCK;
}

/* The identity of img and the chain beneath it (see the top of the file);
 * *newest: the latest change time among its files. */
static int chain_ident(struct blockdev *img, XXH128_hash_t *out, struct timespec *newest,
		       struct error *e)
{
	XXH3_state_t *s = XXH3_createState();

	if (!s)
		return error_set(e, EXIT_HOST, "out of memory");
	XXH3_128bits_reset(s);
	*newest = (struct timespec){ 0 };
	for (struct blockdev *b = img; b; b = b->backing) {
		struct {
			uint32_t dev_major, dev_minor, format, current;
			uint64_t ino, size, vsize, generation;
			int64_t mtime_s, ctime_s, btime_s;
			uint32_t mtime_ns, ctime_ns, btime_ns, pad;
			char id[40];
		} r;
		struct statx sx;
		bool cur = false;

		memset(&r, 0, sizeof(r));
		if (b->fd < 0 || statx(b->fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_BTIME,
				       &sx) < 0) {
			XXH3_freeState(s);
			return error_set(e, EXIT_NOINPUT, "%s: pristine cache: cannot tell the "
					 "image's identity: %s", b->path,
					 b->fd < 0 ? "not a file" : strerror(errno));
		}
		r.dev_major = sx.stx_dev_major;
		r.dev_minor = sx.stx_dev_minor;
		r.ino = sx.stx_ino;
		r.size = sx.stx_size;
		r.mtime_s = sx.stx_mtime.tv_sec;
		r.mtime_ns = sx.stx_mtime.tv_nsec;
		r.ctime_s = sx.stx_ctime.tv_sec;
		r.ctime_ns = sx.stx_ctime.tv_nsec;
		if (r.ctime_s > newest->tv_sec ||
		    (r.ctime_s == newest->tv_sec && r.ctime_ns > newest->tv_nsec))
			*newest = (struct timespec){ r.ctime_s, r.ctime_ns };
		if (sx.stx_mask & STATX_BTIME) {
			r.btime_s = sx.stx_btime.tv_sec;
			r.btime_ns = sx.stx_btime.tv_nsec;
		}
		r.format = b->format;
		r.vsize = b->size;
		if (!blockdev_chain_id(b, r.id, &r.generation, &cur))
			r.current = cur ? 1 : 2;
		XXH3_128bits_update(s, &r, sizeof(r));
	}
	*out = XXH3_128bits_digest(s);
	XXH3_freeState(s);
	return 0;
}

static bool header_ok(const struct pc_header *h, const struct pc_header *want)
{
	return !memcmp(h, want, sizeof(*h)) && header_sum(h) == h->sum;
}

/* Make the cache file under a temporary name, then link it to `path`
 * (keeping one another process linked first) or, with replace, rename it
 * over a bad one. */
static int make_file(const char *dir, const char *path, const struct pc_header *h,
		     bool replace)
{
	char tmp[4200];
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), "%s/.new.XXXXXX", dir);
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0 || ftruncate(fd, file_len(h->nslots)) < 0)
		r = -errno;
	else if (pwrite(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h))
		r = -EIO;
	if (!r && replace && rename(tmp, path) < 0)
		r = -errno;
	if (!r && !replace && link(tmp, path) < 0 && errno != EEXIST)
		r = -errno;
	if (r || !replace)
		unlink(tmp);
	close(fd);
	return r;
}

/* Open `path` and check its header against `want`; the fd, or -1. */
static int open_checked(const char *path, const struct pc_header *want)
{
	struct pc_header h;
	struct stat st;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != file_len(want->nslots) ||
	    pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || !header_ok(&h, want)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

int pristine_attach(struct blockdev *img, const char *dir, uint64_t max_bytes,
		    struct error *e)
{
	struct pc_header h;
	struct pristine *p;
	XXH128_hash_t id;
	char path[4200];
	int fd, tries;

	if (!max_bytes)
		max_bytes = PRISTINE_DEFAULT_BYTES;
	for (tries = 0;; tries++) {	/* see "the clock's tick" above */
		struct timespec newest = { 0 }, now;

		if (chain_ident(img, &id, &newest, e))
			return -1;
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > newest.tv_sec ||
		    (now.tv_sec == newest.tv_sec && now.tv_nsec > newest.tv_nsec))
			break;
		if (tries == 100)
			return error_set(e, EXIT_NOINPUT, "%s: pristine cache: the image's change "
					 "time stays in the future; check the clock", img->path);
		nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, PC_MAGIC, 8);
	h.version = PC_VERSION;
	h.block = PRISTINE_BLOCK;
	h.image_size = img->size;
	h.nslots = (img->size + PRISTINE_BLOCK - 1) / PRISTINE_BLOCK;
	if (h.nslots > max_bytes / PRISTINE_BLOCK)
		h.nslots = max_bytes / PRISTINE_BLOCK;
	if (!h.nslots)
		h.nslots = 1;
	h.ident[0] = id.low64;
	h.ident[1] = id.high64;
	h.sum = header_sum(&h);
	snprintf(path, sizeof(path), "%s/%016" PRIx64 "%016" PRIx64 ".pristine", dir,
		 id.high64, id.low64);
	fd = open_checked(path, &h);
	for (tries = 0; fd < 0 && tries < 3; tries++) {
		int r = make_file(dir, path, &h, errno == EINVAL);

		if (r)
			return error_set(e, EXIT_NOINPUT, "%s: pristine cache in %s: %s", img->path,
					 dir, strerror(-r));
		fd = open_checked(path, &h);
	}
	if (fd < 0)
		return error_set(e, EXIT_NOINPUT, "%s: pristine cache %s: cannot be opened or "
				 "made whole", img->path, path);
	p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strdup(path))) {
		free(p);
		close(fd);
		return error_set(e, EXIT_HOST, "out of memory");
	}
	p->nslots = h.nslots;
	p->map_len = file_len(h.nslots);
	p->map = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p->map == MAP_FAILED) {
		int err = errno;

		free(p->path);
		free(p);
		return error_set(e, EXIT_HOST, "%s: pristine cache %s: mmap: %s", img->path, path,
				 strerror(err));
	}
	p->slots = (struct pc_slot *)(p->map + 4096);
	p->data = p->map + 4096 + slots_bytes(h.nslots);
	p->seed = id.low64 ^ id.high64;
	pristine_close(img->pristine);
	img->pristine = p;
	return 0;
}

int pristine_attach_chain(struct blockdev *top, const struct blockdev_opts *o,
			  struct error *e)
{
	struct blockdev *img = top->readonly ? top : top->backing;

	if (!o->pristine_dir || !img || o->force_share || o->share_writes)
		return 0;
	for (struct blockdev *b = img; b; b = b->backing)
		if (b->fd < 0)		/* a SCHEME: image (store:) keeps its own cache */
			return 0;
	return pristine_attach(img, o->pristine_dir, o->pristine_bytes, e);
}

void pristine_close(struct pristine *p)
{
	if (!p)
		return;
	if (p->st.hits || p->st.file_bytes)
		log_info("pristine cache %s: %" PRIu64 " hits, %" PRIu64 " bytes served from "
			 "memory, %" PRIu64 " bytes read from the file, %" PRIu64 " refused",
			 p->path, p->st.hits, p->st.hit_bytes, p->st.file_bytes, p->st.refused);
	munmap(p->map, p->map_len);
	free(p->path);
	free(p);
}

static void count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t block_sum(const struct pristine *p, uint64_t tag, const void *d)
{
	return XXH3_64bits_withSeed(d, PRISTINE_BLOCK, p->seed ^ (tag * 0x9e3779b97f4a7c15ull));
}

/* Copy block blk into out if its slot holds it intact. */
static bool lookup(struct pristine *p, uint64_t blk, uint8_t *out)
{
	uint64_t i = blk % p->nslots, tag = blk + 1, t, sum;
	struct pc_slot *s = &p->slots[i];

	if (atomic_load_explicit(&s->tag, memory_order_acquire) != tag)
		return false;
	sum = atomic_load_explicit(&s->sum, memory_order_relaxed);
	memcpy(out, p->data + i * PRISTINE_BLOCK, PRISTINE_BLOCK);
	atomic_thread_fence(memory_order_acquire);
	t = atomic_load_explicit(&s->tag, memory_order_relaxed);
	if (t != tag)
		return false;		/* rewritten meanwhile: no verdict */
	if (block_sum(p, tag, out) != sum) {
		count(&p->st.refused, 1);
		return false;
	}
	return true;
}

static void insert(struct pristine *p, uint64_t blk, const uint8_t *d)
{
	uint64_t i = blk % p->nslots, tag = blk + 1;
	struct pc_slot *s = &p->slots[i];

	atomic_store_explicit(&s->tag, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	memcpy(p->data + i * PRISTINE_BLOCK, d, PRISTINE_BLOCK);
	atomic_store_explicit(&s->sum, block_sum(p, tag, d), memory_order_relaxed);
	atomic_store_explicit(&s->tag, tag, memory_order_release);
}

/* Blocks [b0, b0+n) of img: hit[] says which were found; read the runs of
 * the others from the file, put them in, and copy the requested part out. */
static int fill_misses(struct pristine *p, struct blockdev *img, uint8_t *buf,
		       uint64_t off, uint64_t len, uint64_t b0, uint64_t n, const bool *hit,
		       uint64_t *file_bytes)
{
	for (uint64_t k = 0; k < n;) {
		uint64_t r0, r1, start, end, want, lo, hi;
		uint8_t *tmp;
		int r;

		if (hit[k]) {
			k++;
			continue;
		}
		for (r0 = k; k < n && !hit[k]; k++)
			;
		r1 = k;
		start = (b0 + r0) * PRISTINE_BLOCK;
		end = (b0 + r1) * PRISTINE_BLOCK;
		want = (end < img->size ? end : img->size) - start;
		tmp = bd_memalign(end - start);
		if (!tmp)
			return -ENOMEM;
		r = img->ops->read(img, tmp, start, want);
		if (r) {
			free(tmp);
			return r;
		}
		memset(tmp + want, 0, end - start - want);
		count(&p->st.file_bytes, want);
		if (file_bytes)
			*file_bytes += want;
		for (uint64_t j = r0; j < r1; j++)
			insert(p, b0 + j, tmp + (j - r0) * PRISTINE_BLOCK);
		lo = start > off ? start : off;
		hi = end < off + len ? end : off + len;
		memcpy(buf + (lo - off), tmp + (lo - start), hi - lo);
		free(tmp);
	}
	return 0;
}

int pristine_read(struct pristine *p, struct blockdev *img, void *buf, uint64_t off,
		  uint64_t len, uint64_t *file_bytes)
{
	uint8_t *out = buf, blk[PRISTINE_BLOCK] __attribute__((aligned(64)));
	uint64_t end = off + len;

	if (file_bytes)
		*file_bytes = 0;
	while (off < end) {
		uint64_t b0 = off / PRISTINE_BLOCK, bend = (end + PRISTINE_BLOCK - 1) / PRISTINE_BLOCK;
		uint64_t n = bend - b0 > PC_CHUNK ? PC_CHUNK : bend - b0;
		uint64_t cend = (b0 + n) * PRISTINE_BLOCK < end ? (b0 + n) * PRISTINE_BLOCK : end;
		bool hit[PC_CHUNK];
		int r;

		for (uint64_t k = 0; k < n; k++) {
			uint64_t bs = (b0 + k) * PRISTINE_BLOCK, lo = bs > off ? bs : off;
			uint64_t hi = bs + PRISTINE_BLOCK < cend ? bs + PRISTINE_BLOCK : cend;

			hit[k] = lookup(p, b0 + k, blk);
			if (!hit[k])
				continue;
			memcpy(out + (lo - off), blk + (lo - bs), hi - lo);
			count(&p->st.hits, 1);
			count(&p->st.hit_bytes, hi - lo);
		}
		r = fill_misses(p, img, out, off, cend - off, b0, n, hit, file_bytes);
		if (r)
			return r;
		out += cend - off;
		off = cend;
	}
	return 0;
}

int blockdev_pristine_stats(const struct blockdev *bd, struct pristine_stats *st)
{
	for (; bd; bd = bd->backing) {
		const struct pristine_stats *s;

		if (!bd->pristine)
			continue;
		s = &bd->pristine->st;
		st->hits = __atomic_load_n(&s->hits, __ATOMIC_RELAXED);
		st->hit_bytes = __atomic_load_n(&s->hit_bytes, __ATOMIC_RELAXED);
		st->file_bytes = __atomic_load_n(&s->file_bytes, __ATOMIC_RELAXED);
		st->refused = __atomic_load_n(&s->refused, __ATOMIC_RELAXED);
		return 0;
	}
	return -1;
}

const char *pristine_file(const struct pristine *p)
{
	return p->path;
}

uint64_t pristine_data_offset(const struct pristine *p, uint64_t blk)
{
	return 4096 + slots_bytes(p->nslots) + (blk % p->nslots) * PRISTINE_BLOCK;
}
