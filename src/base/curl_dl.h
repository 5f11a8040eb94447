/*
 * curl_dl.h - libcurl loaded on first use (curl_dl.c): the binaries do not
 * link it, so that processes that never speak HTTP(S), each VMM above
 * all, do not map it and its thirty libraries.  Include <curl/curl.h> and
 * call libcurl as usual; where the library cannot be loaded, calls fail as
 * libcurl's own do and curl_dl_error() says why.
 */
#ifndef SHOAL_BASE_CURL_DL_H
#define SHOAL_BASE_CURL_DL_H

#include <curl/curl.h>

/* NULL once libcurl is loaded (this call loads it), else why it is not:
 * "libcurl.so.4: cannot open shared object file: ... (install Debian's
 * libcurl4)". */
const char *curl_dl_error(void);

#endif
