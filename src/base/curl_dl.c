/*
 * curl_dl.c - libcurl, loaded when a process first uses it.
 *
 * The CLI's remote client (cli/client.c) and shoald's calls to another
 * daemon (host/httpc.c, live migration) use libcurl; nothing else does.
 * But `shoal` is one binary, and a library it links is mapped, relocated
 * and partly resident in every process it starts: each VMM too.  libcurl
 * brings some thirty libraries of its own (TLS, Kerberos, LDAP, SSH, IDN,
 * ...), and linked directly they took a VMM's resident memory from about
 * 2 MiB to about 9 (docs/benchmarks.md, "VMM footprint").  So the binaries
 * do not link libcurl: this file defines the libcurl functions Shoal
 * calls, and the first call loads the real library (dlopen of
 * libcurl.so.4, Debian's libcurl4) and forwards to it.  No library does
 * this for us; the Linux loader's lazy binding still maps every DT_NEEDED
 * library at start.
 *
 * Invariants: the library is loaded once (base/dl_lib.c), with every
 * symbol below resolved or none used; where it cannot be loaded, each call fails
 * the way libcurl's own fail (CURLE_FAILED_INIT, a NULL handle) and
 * curl_dl_error() says why, naming the file and the package.  The
 * variadic setopt and getinfo forward their one argument by its type,
 * which libcurl encodes in the option's number range (curl.h's
 * CURLOPTTYPE_* and CURLINFO_* bases), as libcurl itself reads it.
 */
#define CURL_DISABLE_TYPECHECK 1
#include "base/curl_dl.h"

#include <stdarg.h>

#include "base/dl_lib.h"

/* The functions, in the order of `names` (a struct of function pointers
 * laid out as an array of pointers, filled by dl_lib). */
static struct {
	CURLcode (*global_init)(long);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	void (*easy_cleanup)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	const char *(*easy_strerror)(CURLcode);
	CURLcode (*easy_send)(CURL *, const void *, size_t, size_t *);
	CURLcode (*easy_recv)(CURL *, void *, size_t, size_t *);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
} f;
static const char *const names[] = {
	"curl_global_init", "curl_easy_init", "curl_easy_setopt", "curl_easy_perform",
	"curl_easy_cleanup", "curl_easy_getinfo", "curl_easy_strerror", "curl_easy_send",
	"curl_easy_recv", "curl_slist_append", "curl_slist_free_all",
};
_Static_assert(sizeof(f) == sizeof(names) / sizeof(names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib lib = DL_LIB_INIT("libcurl.so.4", "libcurl4", names, &f);

static bool ready(void)
{
	return dl_lib_ready(&lib);
}

const char *curl_dl_error(void)
{
	return ready() ? NULL : lib.why;
}

CURLcode curl_global_init(long flags)
{
	return ready() ? f.global_init(flags) : CURLE_FAILED_INIT;
}

CURL *curl_easy_init(void)
{
	return ready() ? f.easy_init() : NULL;
}

CURLcode curl_easy_setopt(CURL *c, CURLoption opt, ...)
{
	va_list ap;
	CURLcode rc;

	if (!ready())
		return CURLE_FAILED_INIT;
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT)              /* long (and values) */
		rc = f.easy_setopt(c, opt, va_arg(ap, long));
	else if (opt < CURLOPTTYPE_FUNCTIONPOINT)       /* object pointer */
		rc = f.easy_setopt(c, opt, va_arg(ap, void *));
	else if (opt < CURLOPTTYPE_OFF_T)               /* function pointer */
		rc = f.easy_setopt(c, opt, va_arg(ap, void (*)(void)));
	else if (opt < CURLOPTTYPE_BLOB)                /* curl_off_t */
		rc = f.easy_setopt(c, opt, va_arg(ap, curl_off_t));
	else                                            /* struct curl_blob * */
		rc = f.easy_setopt(c, opt, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

CURLcode curl_easy_perform(CURL *c)
{
	return ready() ? f.easy_perform(c) : CURLE_FAILED_INIT;
}

void curl_easy_cleanup(CURL *c)
{
	if (ready())
		f.easy_cleanup(c);
}

CURLcode curl_easy_getinfo(CURL *c, CURLINFO info, ...)
{
	va_list ap;
	void *out;

	if (!ready())
		return CURLE_FAILED_INIT;
	va_start(ap, info);
	out = va_arg(ap, void *);       /* every CURLINFO_* takes one pointer */
	va_end(ap);
	return f.easy_getinfo(c, info, out);
}

const char *curl_easy_strerror(CURLcode rc)
{
	return ready() ? f.easy_strerror(rc) : lib.why;
}

CURLcode curl_easy_send(CURL *c, const void *buf, size_t len, size_t *n)
{
	return ready() ? f.easy_send(c, buf, len, n) : CURLE_FAILED_INIT;
}

CURLcode curl_easy_recv(CURL *c, void *buf, size_t len, size_t *n)
{
	return ready() ? f.easy_recv(c, buf, len, n) : CURLE_FAILED_INIT;
}

struct curl_slist *curl_slist_append(struct curl_slist *l, const char *s)
{
	return ready() ? f.slist_append(l, s) : NULL;
}

void curl_slist_free_all(struct curl_slist *l)
{
	if (ready())
		f.slist_free_all(l);
}
