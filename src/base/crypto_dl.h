/*
 * crypto_dl.h - OpenSSL's libcrypto loaded on first use (crypto_dl.c):
 * only the image store (SHA-256) and live migration's challenge-response
 * (HMAC-SHA256) use it, and linked it made up a quarter of every VMM's
 * resident memory.  Include this and call the EVP digest functions and
 * HMAC() as usual; crypto_dl_error() first, to refuse cleanly where the
 * library cannot be loaded.
 */
#ifndef SHOAL_BASE_CRYPTO_DL_H
#define SHOAL_BASE_CRYPTO_DL_H

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* NULL once libcrypto is loaded (this call loads it), else why not. */
const char *crypto_dl_error(void);

#endif
