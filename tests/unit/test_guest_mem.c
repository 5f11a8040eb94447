/*
 * test_guest_mem.c - guest RAM layout around the 32-bit hole and the
 * bounds checks every guest-supplied address goes through; RAM saved to a
 * sparse file and loaded back (guest_mem_file.c, snapshots' memory file).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/exitcode.h"
#include "base/guest_mem.h"
#include "base/layout.h"

static void test_split_around_hole(void **state)
{
	struct guest_mem m;
	struct error e;
	uint8_t *lo_end, *hi;

	assert_int_equal(guest_mem_create(&m, 4ULL << 30, &e), 0);
	assert_true(m.fd >= 0);
	assert_int_equal(m.nregions, 2);
	assert_int_equal(guest_mem_low_end(&m), GUEST_MEM32_GAP_START);
	assert_int_equal(m.region[1].gpa, GUEST_MEM32_GAP_END);
	assert_int_equal(m.region[1].size, 1ULL << 30);
	lo_end = guest_mem_ptr(&m, GUEST_MEM32_GAP_START - 4096, 4096);
	hi = guest_mem_ptr(&m, GUEST_MEM32_GAP_END, 4096);
	assert_non_null(lo_end);
	assert_non_null(hi);
	assert_ptr_equal(lo_end + 4096, hi);            /* file offset == mapping offset */
	assert_null(guest_mem_ptr(&m, GUEST_MEM32_GAP_START, 1));        /* in the hole */
	assert_null(guest_mem_ptr(&m, GUEST_MEM32_GAP_START - 4096, 4097)); /* runs into it */
	assert_null(guest_mem_ptr(&m, GUEST_MEM32_GAP_END + (1ULL << 30) - 1, 2));
	assert_null(guest_mem_ptr(&m, UINT64_MAX, 2));
	assert_null(guest_mem_ptr(&m, 0, UINT64_MAX));
	assert_int_equal(guest_mem_write(&m, GUEST_MEM32_GAP_END, "abc", 3), 0);
	{
		char buf[3];

		assert_int_equal(guest_mem_read(&m, GUEST_MEM32_GAP_END, buf, 3), 0);
		assert_memory_equal(buf, "abc", 3);
	}
	assert_int_equal(guest_mem_write(&m, 0xd0000000, "x", 1), -1);
	guest_mem_destroy(&m);
}

static void test_sizes_refused(void **state)
{
	struct guest_mem m;
	struct error e;

	assert_int_equal(guest_mem_create(&m, 1 << 20, &e), -1);
	assert_non_null(strstr(e.msg, "too small"));
	assert_int_equal(guest_mem_create(&m, (64ULL << 20) + 1, &e), -1);
	assert_int_equal(guest_mem_create(&m, 2ULL << 40, &e), -1);
	assert_int_equal(e.status, EXIT_RESOURCE);
}

static void test_external_regions(void **state)
{
	struct guest_mem m;
	static uint8_t a[8192], b[4096];

	guest_mem_init_external(&m);
	assert_int_equal(guest_mem_add_region(&m, 0x10000, sizeof(a), a), 0);
	assert_int_equal(guest_mem_add_region(&m, 0x100000, sizeof(b), b), 0);
	assert_int_equal(guest_mem_add_region(&m, 0x11000, 4096, b), -1);   /* overlap */
	assert_int_equal(guest_mem_add_region(&m, UINT64_MAX - 10, 4096, b), -1);
	assert_ptr_equal(guest_mem_ptr(&m, 0x10000 + 100, 8), a + 100);
	assert_ptr_equal(guest_mem_ptr(&m, 0x100000, 4096), b);
	assert_null(guest_mem_ptr(&m, 0x10000 + 8190, 4));
	assert_null(guest_mem_ptr(&m, 0x20000, 1));
	guest_mem_destroy(&m);   /* does not free a or b */
	a[0] = 1;
}

/* Zero pages become holes; non-zero pages (in both regions, at the ends
 * of runs) come back exactly; a file of the wrong size is refused. */
static void test_save_load_file(void **state)
{
	const uint64_t size = (3ULL << 30) + (64ULL << 20);   /* both sides of the hole */
	struct guest_mem a, b;
	struct error e = { 0 };
	char path[] = "/tmp/shoal-memfile-XXXXXX";
	uint64_t data = 0, hash = 0, fhash = 1;
	struct stat st;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(guest_mem_create(&a, size, &e), 0);
	memset(a.host, 0xa5, 4096);                       /* first page */
	memset(a.host + 5 * 4096 + 100, 0x11, 3 * 4096);  /* a run over 4 pages */
	a.host[(3ULL << 30) - 1] = 7;                     /* last byte below the hole */
	a.host[size - 1] = 9;                             /* the very last byte */
	assert_int_equal(guest_mem_save_file(&a, fd, &data, &hash, &e), 0);
	assert_int_equal(data, 7 * 4096);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, size);
	assert_true((uint64_t)st.st_blocks * 512 < 1 << 20);   /* sparse */
	/* saving read no hole of the memfd: reading one would allocate it */
	assert_int_equal(fstat(a.fd, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 < 1 << 20);
	/* the file's checksum (holes as zeros) is the save's */
	assert_int_equal(guest_mem_file_hash(fd, size, &fhash, &e), 0);
	assert_true(fhash == hash);
	assert_int_equal(guest_mem_create(&b, size, &e), 0);
	assert_int_equal(guest_mem_load_file(&b, fd, &e), 0);
	assert_int_equal(fstat(b.fd, &st), 0);                 /* nor did loading */
	assert_true((uint64_t)st.st_blocks * 512 < 1 << 20);
	assert_true(XXH3_64bits(b.host, size) == hash);        /* of the whole image */
	assert_memory_equal(a.host, b.host, 64 << 20);
	assert_int_equal(b.host[(3ULL << 30) - 1], 7);
	assert_int_equal(b.host[size - 1], 9);
	assert_int_equal(b.host[size - 2], 0);
	guest_mem_destroy(&b);
	/* a file one page short is refused before anything is read */
	assert_int_equal(ftruncate(fd, (off_t)size - 4096), 0);
	assert_int_equal(guest_mem_create(&b, size, &e), 0);
	assert_int_equal(guest_mem_load_file(&b, fd, &e), -1);
	assert_int_equal(e.status, EXIT_BADSTATE);
	assert_non_null(strstr(e.msg, "memory file is"));
	guest_mem_destroy(&b);
	guest_mem_destroy(&a);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_around_hole),
		cmocka_unit_test(test_sizes_refused),
		cmocka_unit_test(test_external_regions),
		cmocka_unit_test(test_save_load_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
