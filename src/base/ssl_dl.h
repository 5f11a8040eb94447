/*
 * ssl_dl.h - OpenSSL's libssl loaded on first use (ssl_dl.c): only live
 * migration over TLS uses it (state/migrate_tls.c), so a VMM that does not
 * take a TLS migration never maps it.  Include this and call the SSL_*
 * functions listed in ssl_dl.c as usual; ssl_dl_error() first, to refuse
 * cleanly where the library cannot be loaded.
 */
#ifndef SHOAL_BASE_SSL_DL_H
#define SHOAL_BASE_SSL_DL_H

#include <openssl/err.h>
#include <openssl/ssl.h>

/* NULL once libssl (and the error functions of libcrypto) are loaded and
 * initialised (this call does it, reading OpenSSL's configuration: call it
 * before seccomp and the jail), else why not. */
const char *ssl_dl_error(void);

#endif
