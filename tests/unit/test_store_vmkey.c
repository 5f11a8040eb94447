/*
 * test_store_vmkey.c - per-VM keys (store/vmkey.c) and grants to a VM
 * (store/grants.c): a key made here reads back the same; a proof made for
 * (host, VM, time) checks for exactly that and for nothing else (another
 * host, another VM, another time, a flipped bit, out of time, valid too
 * long); malformed proofs are refused by form; a grant for a VM applies
 * only to requests acting for that VM, a host's grant to all of the
 * host's requests; VM grants survive a save and load, and one whose key
 * does not match its fingerprint is a damaged file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/grants.h"
#include "store/vmkey.h"

static char dir[] = "/tmp/test_store_vmkey.XXXXXX";

#define HOST1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HOST2 "2222222222222222222222222222222222222222222222222222222222222222"

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[200];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) ? -1 : 0;
}

static void newkey(const char *name, struct store_vmkey *k)
{
	char path[300];
	struct error e = { 0 };

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(store_vmkey_generate(path, k, &e), 0);
}

static void test_keys(void **state)
{
	struct store_vmkey k, r;
	struct error e = { 0 };
	char path[300], fp[65];
	uint8_t pub[32];

	(void)state;
	newkey("k", &k);
	snprintf(path, sizeof(path), "%s/k", dir);
	assert_int_equal(store_vmkey_load(path, &r, &e), 0);
	assert_memory_equal(k.seed, r.seed, 32);
	assert_memory_equal(k.pub, r.pub, 32);
	assert_string_equal(k.fp, r.fp);
	assert_int_equal(store_vmkey_load_public(path, pub, fp, &e), 0);	/* the private file will do */
	assert_memory_equal(pub, k.pub, 32);
	snprintf(path, sizeof(path), "%s/k.pub", dir);
	assert_int_equal(store_vmkey_load_public(path, pub, fp, &e), 0);
	assert_memory_equal(pub, k.pub, 32);
	assert_string_equal(fp, k.fp);
	snprintf(path, sizeof(path), "%s/k", dir);
	assert_int_equal(store_vmkey_generate(path, &r, &e), -1);	/* never overwritten */
	assert_non_null(strstr(e.msg, "already there"));
	snprintf(path, sizeof(path), "%s/k.pub", dir);
	assert_int_equal(store_vmkey_load(path, &r, &e), -1);
	assert_non_null(strstr(e.msg, "no PEM private key"));
}

static void test_proofs(void **state)
{
	struct store_vmkey k, other;
	struct error e = { 0 };
	char p[STORE_VMPROOF_MAX], vm[65], why[300];
	uint8_t sig[64];
	uint64_t until, now = 1800000000;

	(void)state;
	newkey("p1", &k);
	newkey("p2", &other);
	assert_int_equal(store_vmproof_make(&k, HOST1, now + 60, p, &e), 0);
	assert_int_equal(store_vmproof_parse(p, vm, &until, sig, why, sizeof(why)), 0);
	assert_string_equal(vm, k.fp);
	assert_int_equal(until, now + 60);
	assert_int_equal(store_vmproof_check(k.pub, HOST1, vm, until, sig, now, why, sizeof(why)), 0);
	/* for exactly that host, VM and time */
	assert_int_equal(store_vmproof_check(k.pub, HOST2, vm, until, sig, now, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "bad signature"));
	assert_int_equal(store_vmproof_check(other.pub, HOST1, other.fp, until, sig, now, why, sizeof(why)), -1);
	assert_int_equal(store_vmproof_check(k.pub, HOST1, vm, until + 1, sig, now, why, sizeof(why)), -1);
	sig[10] ^= 1;
	assert_int_equal(store_vmproof_check(k.pub, HOST1, vm, until, sig, now, why, sizeof(why)), -1);
	sig[10] ^= 1;
	/* in time only */
	assert_int_equal(store_vmproof_check(k.pub, HOST1, vm, until, sig, now + 61, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "ran out 1 s ago"));
	assert_int_equal(store_vmproof_make(&k, HOST1, now + STORE_VMPROOF_MAX_LIFE + 1, p, &e), 0);
	assert_int_equal(store_vmproof_parse(p, vm, &until, sig, why, sizeof(why)), 0);
	assert_int_equal(store_vmproof_check(k.pub, HOST1, vm, until, sig, now, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "more than"));
	/* malformed */
	static const char *const bad[] = {
		"", "v1", "v2 " HOST1 " 1 00", "v1 " HOST1 " 1",
		"v1 " HOST1 " -1 " HOST1 HOST1, "v1 " HOST1 " x " HOST1 HOST1,
		"v1 " HOST1 " 1 " HOST1 HOST1 "00", "v1 " HOST1 "  1 " HOST1 HOST1,
		"v1 AAAA111111111111111111111111111111111111111111111111111111111111 1 " HOST1 HOST1,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = 0;
		assert_int_equal(store_vmproof_parse(bad[i], vm, &until, sig, why, sizeof(why)), -1);
		assert_non_null(strstr(why, "malformed"));
	}
}

static void test_vm_grants(void **state)
{
	struct store_vmkey k;
	struct error e = { 0 };
	struct store_grant *v;
	size_t n;
	char sdir[300], path[400], cmd[900];
	FILE *f;

	(void)state;
	newkey("g", &k);
	snprintf(sdir, sizeof(sdir), "%s/st", dir);
	assert_int_equal(system((snprintf(cmd, sizeof(cmd), "mkdir -p %s", sdir), cmd)), 0);
	assert_int_equal(store_grant_add(sdir, HOST1, "host-img", &e), 0);
	assert_int_equal(store_grant_vm_add(sdir, HOST1, "vm-img", k.fp, k.pub, &e), 0);
	assert_int_equal(store_grant_vm_add(sdir, HOST1, "vm-img", "nothex", k.pub, &e), -1);
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), 0);
	assert_int_equal(n, 2);
	/* a host's grant serves all its requests; a VM's only that VM's */
	assert_true(store_granted(v, n, HOST1, NULL, "host-img"));
	assert_true(store_granted(v, n, HOST1, k.fp, "host-img"));
	assert_false(store_granted(v, n, HOST1, NULL, "vm-img"));
	assert_false(store_granted(v, n, HOST1, HOST2, "vm-img"));
	assert_true(store_granted(v, n, HOST1, k.fp, "vm-img"));
	assert_false(store_granted(v, n, HOST2, k.fp, "vm-img"));
	assert_non_null(store_grants_vm_key(v, n, k.fp));
	assert_memory_equal(store_grants_vm_key(v, n, k.fp), k.pub, 32);
	assert_null(store_grants_vm_key(v, n, HOST2));
	free(v);
	/* revoke: the host's grant and the VM's are different grants */
	assert_int_equal(store_grant_rm(sdir, HOST1, "vm-img", &e), -1);
	assert_int_equal(store_grant_vm_rm(sdir, HOST1, "vm-img", k.fp, &e), 0);
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), 0);
	assert_int_equal(n, 1);
	free(v);
	/* a VM key that does not match its fingerprint: damaged */
	snprintf(path, sizeof(path), "%s/grants", sdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "{\"grants\": [{\"client\": \"%s\", \"image\": \"a\", \"vm\": \"%s\", \"vm_key\": \"%s\"}]}", HOST1,
		HOST2, HOST1);
	fclose(f);
	assert_int_equal(store_grants_load(sdir, &v, &n, &e), -1);
	assert_non_null(strstr(e.msg, "entry 0: its VM key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_proofs),
		cmocka_unit_test(test_vm_grants),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
