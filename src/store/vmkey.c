/*
 * vmkey.c - per-VM key pairs for the image server (mechanism 23 of the
 * vision: a secure channel to a VM repository with per-VM and per-client
 * key pairs; docs/store.md "Per-VM keys").
 *
 * A client host proves who it is with its TLS key pair (store/serve.c).
 * A VM has a key pair of its own, an Ed25519 key: a grant can name a VM
 * key besides the host (`shoal store grant DIR HOST IMAGE --vm VM.pub`),
 * and then the image is served to that host only for that VM, that is
 * only with a request that carries the VM's proof.  The proof is the VM
 * key's signature of a short statement, "the host whose key has
 * fingerprint CLIENT acts for VM VMFP until UNTIL", sent in the
 * Shoal-VM-Proof header of each request over the host's mutual-TLS
 * connection.  The VM key need not live on the host: its owner can sign
 * proofs elsewhere (`shoal store vm-proof`) and hand the host only those.
 *
 * Invariants, and what a client may not do:
 * - A proof names the host it was made for: the server checks it against
 *   the fingerprint of the certificate the connection authenticated, so a
 *   proof taken from one host is worthless on another.
 * - A proof past its time, or valid for longer than
 *   STORE_VMPROOF_MAX_LIFE from now, is refused; so is one for a VM key
 *   no grant of the store names (the server has no key to check it with).
 * - A malformed header or a bad signature is a refusal (401), never
 *   ignored: a client that sent a proof never gets less checked access.
 *
 * Keys are files as OpenSSL writes them (`openssl genpkey -algorithm
 * ed25519`, `openssl pkey -pubout`), so users can make and inspect them
 * with the usual tools; their DER is fixed for Ed25519, so reading them
 * needs only a comparison, and the signatures come from libcrypto
 * (base/crypto_dl.c: EVP_DigestSign/Verify).  Why Ed25519: small keys and
 * signatures, deterministic signing (no randomness needed on the VMM's
 * loader thread under seccomp), and fast checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto_dl.h"
#include "base/curl_dl.h"
#include "base/exitcode.h"
#include "base/io.h"
#include "store/grants.h"
#include "store/store.h"
#include "store/vmkey.h"

#define PEM_MAX 65536

/* The DER of an Ed25519 private key (PKCS#8 v1) and public key (SPKI),
 * each followed by its 32 key bytes (RFC 8410). */
static const uint8_t pkcs8_pre[16] = { 0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
				       0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20 };
static const uint8_t spki_pre[12] = { 0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
				      0x2b, 0x65, 0x70, 0x03, 0x21, 0x00 };

void store_vmkey_fingerprint(const uint8_t pub[32], char fp[65])
{
	uint8_t der[44], md[32];

	memcpy(der, spki_pre, 12);
	memcpy(der + 12, pub, 32);
	store_hash(der, sizeof(der), md);
	store_hash_hex(md, fp);
}

static int derive_public(struct store_vmkey *k, const char *what, struct error *e)
{
	const char *why = crypto_dl_error();
	EVP_PKEY *p;
	size_t n = 32;

	if (why)
		return error_set(e, EXIT_HOST, "%s: cannot use Ed25519 keys: %s", what, why);
	p = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, k->seed, 32);
	if (!p || !EVP_PKEY_get_raw_public_key(p, k->pub, &n) || n != 32) {
		EVP_PKEY_free(p);
		return error_set(e, EXIT_HOST, "%s: libcrypto would not make the Ed25519 key", what);
	}
	EVP_PKEY_free(p);
	store_vmkey_fingerprint(k->pub, k->fp);
	return 0;
}

int store_vmkey_load(const char *path, struct store_vmkey *k, struct error *e)
{
	char *t = store_read_text(path, PEM_MAX, e);
	uint8_t *der;
	size_t n = 0;
	int rc;

	if (!t)
		return -1;
	der = store_pem_block(t, "PRIVATE KEY", &n);
	free(t);
	if (!der)
		return error_set(e, EXIT_USAGE, "%s: no PEM private key in it", path);
	if (n != 48 || memcmp(der, pkcs8_pre, sizeof(pkcs8_pre))) {
		free(der);
		return error_set(e, EXIT_USAGE, "%s: not an Ed25519 private key (make one with `shoal store keygen` "
				 "or `openssl genpkey -algorithm ed25519`)", path);
	}
	memcpy(k->seed, der + 16, 32);
	explicit_bzero(der, n);
	free(der);
	rc = derive_public(k, path, e);
	return rc;
}

int store_vmkey_load_public(const char *path, uint8_t pub[32], char fp[65], struct error *e)
{
	char *t = store_read_text(path, PEM_MAX, e);
	uint8_t *der;
	size_t n = 0;

	if (!t)
		return -1;
	if (strstr(t, "-----BEGIN PRIVATE KEY-----")) {
		struct store_vmkey k;

		free(t);
		if (store_vmkey_load(path, &k, e))
			return -1;
		memcpy(pub, k.pub, 32);
		memcpy(fp, k.fp, 65);
		explicit_bzero(&k, sizeof(k));
		return 0;
	}
	der = store_pem_block(t, "PUBLIC KEY", &n);
	free(t);
	if (!der)
		return error_set(e, EXIT_USAGE, "%s: no PEM public key in it", path);
	if (n != 44 || memcmp(der, spki_pre, sizeof(spki_pre))) {
		free(der);
		return error_set(e, EXIT_USAGE, "%s: not an Ed25519 public key (a VM key is Ed25519)", path);
	}
	memcpy(pub, der + 12, 32);
	free(der);
	store_vmkey_fingerprint(pub, fp);
	return 0;
}

/* PEM of der under label, into out (at least 200 bytes for our keys). */
static size_t pem_write(const uint8_t *der, size_t n, const char *label, char *out, size_t cap)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t k = (size_t)snprintf(out, cap, "-----BEGIN %s-----\n", label), col = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)der[i] << 16 | (i + 1 < n ? (uint32_t)der[i + 1] << 8 : 0) |
			     (i + 2 < n ? der[i + 2] : 0);

		out[k++] = b64[v >> 18 & 63];
		out[k++] = b64[v >> 12 & 63];
		out[k++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		out[k++] = i + 2 < n ? b64[v & 63] : '=';
		if ((col += 4) == 64) {
			out[k++] = '\n';
			col = 0;
		}
	}
	if (col)
		out[k++] = '\n';
	k += (size_t)snprintf(out + k, cap - k, "-----END %s-----\n", label);
	return k;
}

static int write_new(const char *path, const char *text, size_t n, mode_t mode, struct error *e)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);

	if (fd < 0)
		return error_set(e, errno == EEXIST ? EXIT_BADSTATE : EXIT_HOST, "%s: %s", path,
				 errno == EEXIST ? "already there (a key is not overwritten)" : strerror(errno));
	if (write_all(fd, text, n) || fsync(fd)) {
		error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

int store_vmkey_generate(const char *path, struct store_vmkey *k, struct error *e)
{
	uint8_t der[48];
	char pem[300], pubpath[4200];
	size_t n;

	if (getrandom(k->seed, 32, 0) != 32)
		return error_set(e, EXIT_HOST, "%s: getrandom: %s", path, strerror(errno));
	if (derive_public(k, path, e))
		return -1;
	snprintf(pubpath, sizeof(pubpath), "%s.pub", path);
	memcpy(der, pkcs8_pre, 16);
	memcpy(der + 16, k->seed, 32);
	n = pem_write(der, 48, "PRIVATE KEY", pem, sizeof(pem));
	explicit_bzero(der, sizeof(der));
	if (write_new(path, pem, n, 0600, e)) {
		explicit_bzero(pem, sizeof(pem));
		return -1;
	}
	explicit_bzero(pem, sizeof(pem));
	memcpy(der, spki_pre, 12);
	memcpy(der + 12, k->pub, 32);
	n = pem_write(der, 44, "PUBLIC KEY", pem, sizeof(pem));
	if (write_new(pubpath, pem, n, 0644, e)) {
		unlink(path);
		return -1;
	}
	return 0;
}

static size_t statement(char *out, size_t cap, const char *client, const char *vm, uint64_t until)
{
	return (size_t)snprintf(out, cap, "shoal-vm-proof v1\nclient %s\nvm %s\nuntil %" PRIu64 "\n", client,
				vm, until);
}

int store_vmproof_make(const struct store_vmkey *k, const char *client, uint64_t until,
		       char out[STORE_VMPROOF_MAX], struct error *e)
{
	char msg[256];
	uint8_t sig[64];
	size_t n = statement(msg, sizeof(msg), client, k->fp, until), sl = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY *p = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, k->seed, 32);
	int ok = ctx && p && EVP_DigestSignInit(ctx, NULL, NULL, NULL, p) == 1 &&
		 EVP_DigestSign(ctx, sig, &sl, (const uint8_t *)msg, n) == 1 && sl == 64;
	int len;

	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(p);
	if (!ok)
		return error_set(e, EXIT_HOST, "VM key %.16s...: libcrypto would not sign", k->fp);
	len = snprintf(out, STORE_VMPROOF_MAX, "v1 %s %" PRIu64 " ", k->fp, until);
	for (int i = 0; i < 64; i++)
		len += snprintf(out + len, (size_t)(STORE_VMPROOF_MAX - len), "%02x", sig[i]);
	return 0;
}

static int unhex(const char *p, size_t nbytes, uint8_t *out)
{
	for (size_t i = 0; i < nbytes; i++) {
		int v = 0;

		for (int j = 0; j < 2; j++) {
			char c = p[2 * i + j];

			if (c >= '0' && c <= '9')
				v = v << 4 | (c - '0');
			else if (c >= 'a' && c <= 'f')
				v = v << 4 | (c - 'a' + 10);
			else
				return -1;
		}
		out[i] = (uint8_t)v;
	}
	return 0;
}

int store_vmproof_parse(const char *v, char vm[65], uint64_t *until, uint8_t sig[64], char *why, size_t n)
{
	uint8_t fp[32];
	const char *p;
	char *end;

	if (strncmp(v, "v1 ", 3) || strlen(v) < 3 + 64 + 1 + 1 + 1 + 128 || unhex(v + 3, 32, fp) || v[67] != ' ') {
		snprintf(why, n, "%s: malformed (\"v1 VM-FINGERPRINT UNTIL SIGNATURE\", lowercase hex)",
			 STORE_VMPROOF_HEADER);
		return -1;
	}
	memcpy(vm, v + 3, 64);
	vm[64] = 0;
	p = v + 68;
	errno = 0;
	*until = strtoull(p, &end, 10);
	if (*p < '0' || *p > '9' || errno || *end != ' ' || strlen(end + 1) != 128 || unhex(end + 1, 64, sig)) {
		snprintf(why, n, "%s: malformed (\"v1 VM-FINGERPRINT UNTIL SIGNATURE\", lowercase hex)",
			 STORE_VMPROOF_HEADER);
		return -1;
	}
	return 0;
}

int store_vmproof_check(const uint8_t pub[32], const char *client, const char *vm, uint64_t until,
			const uint8_t sig[64], uint64_t now, char *why, size_t n)
{
	char msg[256];
	size_t len = statement(msg, sizeof(msg), client, vm, until);
	EVP_MD_CTX *ctx;
	EVP_PKEY *p;
	int ok;

	if (until < now) {
		snprintf(why, n, "the proof for VM key %.16s... ran out %" PRIu64 " s ago", vm, now - until);
		return -1;
	}
	if (until - now > STORE_VMPROOF_MAX_LIFE) {
		snprintf(why, n, "the proof for VM key %.16s... is valid for %" PRIu64 " s, more than the %u s this server takes",
			 vm, until - now, STORE_VMPROOF_MAX_LIFE);
		return -1;
	}
	ctx = EVP_MD_CTX_new();
	p = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
	ok = ctx && p && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, p) == 1 &&
	     EVP_DigestVerify(ctx, sig, 64, (const uint8_t *)msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(p);
	if (!ok) {
		snprintf(why, n, "the proof for VM key %.16s... has a bad signature (made for another host, "
			 "another time, or with another key)", vm);
		return -1;
	}
	return 0;
}

int store_vmproof_src_init(struct store_vmproof_src *src, const char *vm_key, const char *vm_proof,
			   const char *cert, struct error *e)
{
	char vm[65], why[300];
	uint8_t sig[64];

	memset(src, 0, sizeof(*src));
	pthread_mutex_init(&src->mu, NULL);
	if (vm_key && vm_proof)
		return error_set(e, EXIT_USAGE, "a VM key or a VM proof, not both");
	if (vm_proof) {
		if (strlen(vm_proof) >= STORE_VMPROOF_MAX ||
		    store_vmproof_parse(vm_proof, vm, &src->until, sig, why, sizeof(why)))
			return error_set(e, EXIT_USAGE, "the VM proof given: %s", why);
		snprintf(src->value, sizeof(src->value), "%s", vm_proof);
		src->mode = 2;
		return 0;
	}
	if (!vm_key)
		return 0;
	if (!cert)
		return error_set(e, EXIT_USAGE, "%s: a VM key needs this host's certificate too (the proof names it)", vm_key);
	if (store_vmkey_load(vm_key, &src->k, e) || store_fingerprint_arg(cert, src->client, e))
		return -1;
	src->mode = 1;
	/* the first proof now: libcrypto's first use reads its configuration,
	 * which a VMM's loader thread under seccomp could not */
	src->until = (uint64_t)time(NULL) + STORE_VMPROOF_CLIENT_LIFE;
	return store_vmproof_make(&src->k, src->client, src->until, src->value, e);
}

int store_vmproof_src_line(struct store_vmproof_src *src, char line[STORE_VMPROOF_MAX + 32], struct error *e)
{
	uint64_t now = (uint64_t)time(NULL);
	int rc = 1;

	if (!src->mode)
		return 0;
	pthread_mutex_lock(&src->mu);
	if (src->mode == 1 && src->until < now + STORE_VMPROOF_CLIENT_LIFE / 2) {
		src->until = now + STORE_VMPROOF_CLIENT_LIFE;
		if (store_vmproof_make(&src->k, src->client, src->until, src->value, e))
			rc = -1;
	}
	if (rc == 1)
		snprintf(line, STORE_VMPROOF_MAX + 32, "%s: %s", STORE_VMPROOF_HEADER, src->value);
	pthread_mutex_unlock(&src->mu);
	return rc;
}

int store_vmproof_src_curl(struct store_vmproof_src *src, struct curl_slist **out, struct error *e)
{
	char line[STORE_VMPROOF_MAX + 32];
	int vr = store_vmproof_src_line(src, line, e);

	*out = NULL;
	if (vr <= 0)
		return vr;
	*out = curl_slist_append(NULL, line);
	return *out ? 0 : error_set(e, EXIT_HOST, "out of memory");
}

void store_vmproof_src_fini(struct store_vmproof_src *src)
{
	explicit_bzero(&src->k, sizeof(src->k));
	pthread_mutex_destroy(&src->mu);
}
