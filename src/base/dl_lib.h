/*
 * dl_lib.h - a shared library loaded on first use (dl_lib.c), for the
 * libraries only some commands need (libcurl: base/curl_dl.c; libcrypto:
 * base/crypto_dl.c).  `shoal` is one binary: a library it links is mapped
 * and relocated in every process it starts, each VMM included, so those
 * are not linked; a shim defines the functions Shoal calls and forwards
 * them to the real library, loaded here the first time one is called.
 */
#ifndef SHOAL_BASE_DL_LIB_H
#define SHOAL_BASE_DL_LIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct dl_lib {
	const char *file;               /* "libcurl.so.4" */
	const char *package;            /* Debian's package that has it */
	const char *const *names;       /* the symbols, in the order of ptrs */
	void **ptrs;                    /* filled when loaded */
	size_t n;
	/* state */
	pthread_mutex_t lock;
	bool tried, ok;
	char why[300];
};
#define DL_LIB_INIT(file_, package_, names_, ptrs_)                                      \
	{ .file = (file_), .package = (package_), .names = (names_), .ptrs = (void **)(ptrs_), \
	  .n = sizeof(names_) / sizeof((names_)[0]), .lock = PTHREAD_MUTEX_INITIALIZER }

/* Load the library (once; later calls answer at once): true when every
 * symbol was found, else false with l->why saying what is missing
 * ("libcurl.so.4: cannot open shared object file: ... (install Debian's
 * libcurl4)"). */
bool dl_lib_ready(struct dl_lib *l);

#endif
