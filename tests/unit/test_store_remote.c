/*
 * test_store_remote.c - the store calls the image server and pull use
 * (store/store.c: store_chunk_put/has/read, store_manifest_put/get) and
 * the grants (store/grants.c), in a temporary directory: a chunk whose
 * bytes do not match its name is refused and nothing is kept; a manifest
 * that names a chunk not in the store, or whose lengths do not add up to
 * its size, is refused; a good one reads back equal and rebuilds the
 * bytes; a client's fingerprint is the SHA-256 of its public key, the
 * same from its certificate, its public key and the hex forms people
 * paste; grants add, list and remove, and a damaged grants file is an
 * error naming it.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/grants.h"
#include "store/store.h"

static char dir[] = "/tmp/test_store_remote.XXXXXX";
static char sdir[300];

/* A self-signed P-256 certificate made with openssl for this test, and
 * its public key; `openssl x509 -pubkey -noout | openssl pkey -pubin
 * -outform DER | sha256sum` printed FP. */
static const char cert_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBdTCCARugAwIBAgIUa6LsZhsXZRx8jgEvs3ikwRDx19wwCgYIKoZIzj0EAwIw\n"
	"DzENMAsGA1UEAwwEdW5pdDAgFw0yNjEyMDYxNDEwMDdaGA8yMTI2MTExMjE0MTAw\n"
	"N1owDzENMAsGA1UEAwwEdW5pdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABMaP\n"
	"2WVvTzNWWC87kGb9yY3wGDz7D0n3eZqpTcoZgEedYeLdSXM8GvjssakjOo3ChYFd\n"
	"7egUvKjVVLzpXe6BmICjUzBRMB0GA1UdDgQWBBSMNfitg7UnnEv/7yv9Ve0gn3Eo\n"
	"TDAfBgNVHSMEGDAWgBSMNfitg7UnnEv/7yv9Ve0gn3EoTDAPBgNVHRMBAf8EBTAD\n"
	"AQH/MAoGCCqGSM49BAMCA0gAMEUCIQDPu/gBV52TnOjUjrrYDHhyrJ8ZDVPGkwG4\n"
	"9nSZELqElgIgK2tcSXWC/sN+ytE5br+LhHZH/0odnOA0s1X5tfjI1CI=\n"
	"-----END CERTIFICATE-----\n";
static const char pub_pem[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExo/ZZW9PM1ZYLzuQZv3JjfAYPPsP\n"
	"Sfd5mqlNyhmAR51h4t1Jczwa+OyxqSM6jcKFgV3t6BS8qNVUvOld7oGYgA==\n"
	"-----END PUBLIC KEY-----\n";
#define FP "37f4d9e82766e0ca6875a13cbc43c42c7a467b6ba3215448ec333d36ef27ca40"

static void write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int setup(void **state)
{
	struct error e = { 0 };

	if (!mkdtemp(dir))
		return -1;
	snprintf(sdir, sizeof(sdir), "%s/st", dir);
	return store_init(sdir, NULL, &e);
}

static int teardown(void **state)
{
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static struct {
	uint8_t *buf;
	uint64_t size;
} out;

static int sized(void *opaque, uint64_t size, const char *format, struct error *e)
{
	out.buf = calloc(1, size + 1);
	out.size = size;
	return 0;
}

static int wr(void *opaque, const void *buf, uint64_t off, uint64_t len, struct error *e)
{
	memcpy(out.buf + off, buf, len);
	return 0;
}

static void test_chunks_and_manifests(void **state)
{
	struct error e = { 0 };
	struct store *s;
	uint8_t a[5000], b[3000], ha[32], hb[32], buf[65536];
	struct store_chunk_ref c[3];
	struct store_manifest m = { .size = 5000 + 4096 + 3000, .n = 3, .c = c }, got;
	uint32_t len;
	uint64_t size;

	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (uint8_t)(i * 13 + 5);
	store_hash(a, sizeof(a), ha);
	store_hash(b, sizeof(b), hb);
	snprintf(m.format, sizeof(m.format), "raw");
	memcpy(c[0].hash, ha, 32);
	c[0].len = sizeof(a);
	c[0].flags = 0;
	memset(c[1].hash, 0, 32);
	c[1].len = 4096;
	c[1].flags = STORE_CHUNK_ZERO;
	memcpy(c[2].hash, hb, 32);
	c[2].len = sizeof(b);
	c[2].flags = 0;

	assert_int_equal(store_open(&s, sdir, true, &e), 0);
	/* b's bytes under a's name: refused, not kept */
	assert_int_equal(store_chunk_put(s, ha, b, sizeof(b), &e), -1);
	assert_non_null(strstr(e.msg, "do not match its SHA-256"));
	assert_false(store_chunk_has(s, ha));
	assert_int_equal(store_chunk_put(s, ha, a, sizeof(a), &e), 0);
	assert_true(store_chunk_has(s, ha));
	assert_int_equal(store_chunk_put(s, ha, a, sizeof(a), &e), 0);	/* again: no change */
	/* b is not in the store yet */
	assert_int_equal(store_manifest_put(s, "img", &m, &e), -1);
	assert_non_null(strstr(e.msg, "not in the store"));
	assert_int_equal(store_chunk_put(s, hb, b, sizeof(b), &e), 0);
	m.size++;
	assert_int_equal(store_manifest_put(s, "img", &m, &e), -1);
	assert_non_null(strstr(e.msg, "add up to"));
	m.size--;
	assert_int_equal(store_manifest_put(s, "img", &m, &e), 0);
	assert_int_equal(store_manifest_put(s, "img", &m, &e), -1);	/* the name is taken */
	assert_non_null(strstr(e.msg, "already in the store"));
	store_close(s);

	/* read back: a new open sees the committed chunks and manifest */
	assert_int_equal(store_open(&s, sdir, false, &e), 0);
	assert_int_equal(store_manifest_get(s, "img", &got, &e), 0);
	assert_int_equal(got.n, 3);
	assert_int_equal(got.size, m.size);
	assert_string_equal(got.format, "raw");
	assert_memory_equal(got.c[0].hash, ha, 32);
	assert_int_equal(got.c[1].flags, STORE_CHUNK_ZERO);
	assert_int_equal(got.c[2].len, sizeof(b));
	store_manifest_free(&got);
	assert_int_equal(store_chunk_read(s, hb, buf, &len, &e), 0);
	assert_int_equal(len, sizeof(b));
	assert_memory_equal(buf, b, sizeof(b));
	memset(buf, 0xee, 32);
	assert_int_equal(store_chunk_read(s, buf, buf + 64, &len, &e), -1);
	assert_non_null(strstr(e.msg, "not in the store"));
	assert_int_equal(store_get(s, "img", &size, sized, wr, NULL, &e), 0);
	assert_int_equal(out.size, m.size);
	assert_memory_equal(out.buf, a, sizeof(a));
	for (int i = 0; i < 4096; i++)
		assert_int_equal(out.buf[sizeof(a) + i], 0);
	assert_memory_equal(out.buf + sizeof(a) + 4096, b, sizeof(b));
	free(out.buf);
	assert_int_equal(store_manifest_get(s, "nosuch", &got, &e), -1);
	store_close(s);
}

static void test_fingerprints(void **state)
{
	struct error e = { 0 };
	char fp[65], path[400];

	snprintf(path, sizeof(path), "%s/c.pem", dir);
	write_text(path, cert_pem);
	assert_int_equal(store_fingerprint_arg(path, fp, &e), 0);
	assert_string_equal(fp, FP);
	snprintf(path, sizeof(path), "%s/k.pub", dir);
	write_text(path, pub_pem);
	assert_int_equal(store_fingerprint_arg(path, fp, &e), 0);
	assert_string_equal(fp, FP);
	assert_int_equal(store_fingerprint_arg("SHA256:37:F4:D9:E8:27:66:E0:CA:68:75:A1:3C:BC:43:C4:2C:"
					       "7A:46:7B:6B:A3:21:54:48:EC:33:3D:36:EF:27:CA:40", fp, &e), 0);
	assert_string_equal(fp, FP);
	assert_int_equal(store_fingerprint_arg(FP "00", fp, &e), -1);	/* too long, and no file */
	snprintf(path, sizeof(path), "%s/junk", dir);
	write_text(path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
	assert_int_equal(store_fingerprint_arg(path, fp, &e), -1);
	assert_non_null(strstr(e.msg, "does not parse"));
}

static void test_grants(void **state)
{
	struct error e = { 0 };
	struct store_grant *v;
	size_t n;
	char path[400];

	assert_int_equal(store_grants_load(sdir, &v, &n, &e), 0);	/* no file: none */
	assert_int_equal(n, 0);
	free(v);
	assert_int_equal(store_grant_add(sdir, FP, "img", &e), 0);
	assert_int_equal(store_grant_add(sdir, FP, "img", &e), 0);	/* again: one */
	assert_int_equal(store_grant_add(sdir, FP, "other", &e), 0);
	assert_int_equal(store_grant_add(sdir, "abc", "img", &e), -1);
	assert_int_equal(store_grant_add(sdir, FP, "../x", &e), -1);
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_true(store_granted(v, n, FP, NULL, "img"));
	assert_false(store_granted(v, n, FP, NULL, "third"));
	free(v);
	assert_int_equal(store_grant_rm(sdir, FP, "img", &e), 0);
	assert_int_equal(store_grant_rm(sdir, FP, "img", &e), -1);
	assert_non_null(strstr(e.msg, "has no grant for image 'img'"));
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_false(store_granted(v, n, FP, NULL, "img"));
	free(v);
	snprintf(path, sizeof(path), "%s/grants", sdir);
	write_text(path, "{\"grants\": [{\"client\": \"zz\", \"image\": \"a\"}]}");
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), -1);
	assert_non_null(strstr(e.msg, "damaged grants file"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunks_and_manifests),
		cmocka_unit_test(test_fingerprints),
		cmocka_unit_test(test_grants),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
