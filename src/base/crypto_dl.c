/*
 * crypto_dl.c - the EVP digest functions of OpenSSL's libcrypto, loaded
 * when first called (base/dl_lib.c).
 *
 * The image store (src/store) names chunks by SHA-256 through OpenSSL's
 * EVP interface, and live migration's challenge-response (state/
 * migrate_auth.c) proves knowledge of its key with HMAC-SHA256, and the
 * store's per-VM keys (store/vmkey.c) sign and check with Ed25519; nothing
 * else in Shoal uses libcrypto.  Linked, the
 * library (4.6 MB, thousands of relocations) cost every process of the
 * one `shoal` binary about 1.4 MiB of resident memory, each VMM included,
 * a quarter of a VMM's own.  So it is not linked: these definitions
 * forward to the real functions, loaded from libcrypto.so.3 (Debian's
 * libssl3) on the first call.  No library offers that for us.
 *
 * Invariants: every function below is resolved or none is used; where the
 * library cannot be loaded, each fails as OpenSSL's own do (0, NULL), and
 * crypto_dl_error() says why.  Callers check crypto_dl_error() before
 * they rely on a digest (store_open, store_init).
 */
#include "base/crypto_dl.h"

#include "base/dl_lib.h"

static struct {
	int (*digest)(const void *, size_t, unsigned char *, unsigned int *, const EVP_MD *,
		      ENGINE *);
	int (*digest_init_ex)(EVP_MD_CTX *, const EVP_MD *, ENGINE *);
	int (*digest_update)(EVP_MD_CTX *, const void *, size_t);
	int (*digest_final_ex)(EVP_MD_CTX *, unsigned char *, unsigned int *);
	EVP_MD_CTX *(*ctx_new)(void);
	void (*ctx_free)(EVP_MD_CTX *);
	const EVP_MD *(*sha256)(void);
	unsigned char *(*hmac)(const EVP_MD *, const void *, int, const unsigned char *, size_t,
			       unsigned char *, unsigned int *);
	EVP_PKEY *(*new_raw_private)(int, ENGINE *, const unsigned char *, size_t);
	EVP_PKEY *(*new_raw_public)(int, ENGINE *, const unsigned char *, size_t);
	int (*get_raw_public)(const EVP_PKEY *, unsigned char *, size_t *);
	void (*pkey_free)(EVP_PKEY *);
	int (*sign_init)(EVP_MD_CTX *, EVP_PKEY_CTX **, const EVP_MD *, ENGINE *, EVP_PKEY *);
	int (*sign)(EVP_MD_CTX *, unsigned char *, size_t *, const unsigned char *, size_t);
	int (*verify_init)(EVP_MD_CTX *, EVP_PKEY_CTX **, const EVP_MD *, ENGINE *, EVP_PKEY *);
	int (*verify)(EVP_MD_CTX *, const unsigned char *, size_t, const unsigned char *, size_t);
} f;
static const char *const names[] = {
	"EVP_Digest", "EVP_DigestInit_ex", "EVP_DigestUpdate", "EVP_DigestFinal_ex",
	"EVP_MD_CTX_new", "EVP_MD_CTX_free", "EVP_sha256", "HMAC",
	"EVP_PKEY_new_raw_private_key", "EVP_PKEY_new_raw_public_key", "EVP_PKEY_get_raw_public_key",
	"EVP_PKEY_free", "EVP_DigestSignInit", "EVP_DigestSign", "EVP_DigestVerifyInit", "EVP_DigestVerify",
};
_Static_assert(sizeof(f) == sizeof(names) / sizeof(names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib lib = DL_LIB_INIT("libcrypto.so.3", "libssl3", names, &f);

const char *crypto_dl_error(void)
{
	return dl_lib_ready(&lib) ? NULL : lib.why;
}

int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
	       const EVP_MD *type, ENGINE *impl)
{
	return dl_lib_ready(&lib) ? f.digest(data, count, md, size, type, impl) : 0;
}

int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
{
	return dl_lib_ready(&lib) ? f.digest_init_ex(ctx, type, impl) : 0;
}

int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
{
	return dl_lib_ready(&lib) ? f.digest_update(ctx, d, cnt) : 0;
}

int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
{
	return dl_lib_ready(&lib) ? f.digest_final_ex(ctx, md, s) : 0;
}

EVP_MD_CTX *EVP_MD_CTX_new(void)
{
	return dl_lib_ready(&lib) ? f.ctx_new() : NULL;
}

void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
{
	if (dl_lib_ready(&lib))
		f.ctx_free(ctx);
}

const EVP_MD *EVP_sha256(void)
{
	return dl_lib_ready(&lib) ? f.sha256() : NULL;
}

unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *data,
		    size_t data_len, unsigned char *md, unsigned int *md_len)
{
	return dl_lib_ready(&lib) ? f.hmac(evp_md, key, key_len, data, data_len, md, md_len) : NULL;
}

EVP_PKEY *EVP_PKEY_new_raw_private_key(int type, ENGINE *e, const unsigned char *priv, size_t len)
{
	return dl_lib_ready(&lib) ? f.new_raw_private(type, e, priv, len) : NULL;
}

EVP_PKEY *EVP_PKEY_new_raw_public_key(int type, ENGINE *e, const unsigned char *pub, size_t len)
{
	return dl_lib_ready(&lib) ? f.new_raw_public(type, e, pub, len) : NULL;
}

int EVP_PKEY_get_raw_public_key(const EVP_PKEY *pkey, unsigned char *pub, size_t *len)
{
	return dl_lib_ready(&lib) ? f.get_raw_public(pkey, pub, len) : 0;
}

void EVP_PKEY_free(EVP_PKEY *pkey)
{
	if (dl_lib_ready(&lib))
		f.pkey_free(pkey);
}

int EVP_DigestSignInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey)
{
	return dl_lib_ready(&lib) ? f.sign_init(ctx, pctx, type, e, pkey) : 0;
}

int EVP_DigestSign(EVP_MD_CTX *ctx, unsigned char *sig, size_t *siglen, const unsigned char *tbs, size_t tbslen)
{
	return dl_lib_ready(&lib) ? f.sign(ctx, sig, siglen, tbs, tbslen) : 0;
}

int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey)
{
	return dl_lib_ready(&lib) ? f.verify_init(ctx, pctx, type, e, pkey) : 0;
}

int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
		     size_t tbslen)
{
	return dl_lib_ready(&lib) ? f.verify(ctx, sig, siglen, tbs, tbslen) : 0;
}
