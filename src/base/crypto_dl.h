/*
 * crypto_dl.h - OpenSSL's libcrypto loaded on first use (crypto_dl.c):
 * only the image store hashes with it (SHA-256), and linked it made up a
 * quarter of every VMM's resident memory.  Include <openssl/evp.h> and call
 * the EVP digest functions as usual; crypto_dl_error() first, to refuse
 * cleanly where the library cannot be loaded.
 */
#ifndef SHOAL_BASE_CRYPTO_DL_H
#define SHOAL_BASE_CRYPTO_DL_H

#include <openssl/evp.h>

/* NULL once libcrypto is loaded (this call loads it), else why not. */
const char *crypto_dl_error(void);

#endif
