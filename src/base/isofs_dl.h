/*
 * isofs_dl.h - libisofs loaded on first use (isofs_dl.c): only the
 * cloud-init seed (boot/cidata.c) writes ISO 9660, and linked the library
 * cost every VMM memory.  Include this instead of <libisofs/libisofs.h>
 * and call libisofs as usual; where it cannot be loaded, calls fail with
 * ISO_FATAL_ERROR and iso_error_to_msg() says why.
 */
#ifndef SHOAL_BASE_ISOFS_DL_H
#define SHOAL_BASE_ISOFS_DL_H

#include <stdint.h>
#include <sys/types.h>
#define LIBISOFS_WITHOUT_LIBBURN 1   /* its copy of struct burn_source */
#include <libisofs/libisofs.h>

/* (libisofs.h declares these two without a prototype) */
int iso_init(void);
void iso_finish(void);

/* NULL once libisofs is loaded (this call loads it), else why not. */
const char *isofs_dl_error(void);

#endif
