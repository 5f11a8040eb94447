/*
 * mhd_dl.h - libmicrohttpd loaded on first use (mhd_dl.c): the binaries do
 * not link it, so that a process that serves no HTTP, each VMM and each
 * CLI command above all, does not map it and GnuTLS with its eight
 * libraries.  Include this instead of <microhttpd.h> and call
 * libmicrohttpd as usual; where the library cannot be loaded, calls fail
 * as libmicrohttpd's own do (NULL, MHD_NO) and mhd_dl_error() says why.
 */
#ifndef SHOAL_BASE_MHD_DL_H
#define SHOAL_BASE_MHD_DL_H

#include <sys/socket.h>
#include <stdarg.h>
#include <stdint.h>
#include <microhttpd.h>

/* NULL once libmicrohttpd is loaded (this call loads it), else why it is
 * not: "libmicrohttpd.so.12: cannot open shared object file: ... (install
 * Debian's libmicrohttpd12)". */
const char *mhd_dl_error(void);

#endif
