/*
 * mhd_dl.c - libmicrohttpd, loaded when a process first uses it.
 *
 * shoald's API (host/api*.c) and `shoal store serve` (store/serve.c) speak
 * HTTP through libmicrohttpd; nothing else does.  But `shoal` is one
 * binary, and a library it links is mapped and relocated in every process
 * it starts: libmicrohttpd brings GnuTLS and with it p11-kit, nettle,
 * hogweed, gmp, libtasn1, libidn2, libunistring and libffi, whose loading
 * and constructors cost each `shoal` start about 1 ms here and 110 ms in
 * the KVM box, each VMM included.  So no binary links it: this file
 * defines the functions Shoal calls, and the first call loads the real
 * library (dlopen of libmicrohttpd.so.12, Debian's libmicrohttpd12) and
 * forwards to it, as base/curl_dl.c does for libcurl.
 *
 * Invariants: the library is loaded once (base/dl_lib.c), with every
 * symbol below resolved or none used; where it cannot be loaded, each call
 * fails the way libmicrohttpd's own fail (NULL, MHD_NO) and mhd_dl_error()
 * says why.  The variadic functions: MHD_start_daemon forwards its option
 * list whole through MHD_start_daemon_va; MHD_get_connection_info,
 * MHD_get_daemon_info and MHD_upgrade_action take extra arguments only for
 * kinds Shoal does not ask for, so none is forwarded.
 */
#include "base/mhd_dl.h"

#include <stdarg.h>

#include "base/dl_lib.h"

/* The functions, in the order of `names` (a struct of function pointers
 * laid out as an array of pointers, filled by dl_lib). */
static struct {
	struct MHD_Daemon *(*start_daemon_va)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
					      MHD_AccessHandlerCallback, void *, va_list);
	void (*stop_daemon)(struct MHD_Daemon *);
	const union MHD_DaemonInfo *(*get_daemon_info)(struct MHD_Daemon *, enum MHD_DaemonInfoType, ...);
	const union MHD_ConnectionInfo *(*get_connection_info)(struct MHD_Connection *,
							      enum MHD_ConnectionInfoType, ...);
	const char *(*lookup_connection_value)(struct MHD_Connection *, enum MHD_ValueKind, const char *);
	enum MHD_Result (*queue_response)(struct MHD_Connection *, unsigned int, struct MHD_Response *);
	struct MHD_Response *(*create_response_from_buffer)(size_t, void *, enum MHD_ResponseMemoryMode);
	struct MHD_Response *(*create_response_from_callback)(uint64_t, size_t, MHD_ContentReaderCallback,
							       void *, MHD_ContentReaderFreeCallback);
	struct MHD_Response *(*create_response_for_upgrade)(MHD_UpgradeHandler, void *);
	enum MHD_Result (*add_response_header)(struct MHD_Response *, const char *, const char *);
	void (*destroy_response)(struct MHD_Response *);
	enum MHD_Result (*upgrade_action)(struct MHD_UpgradeResponseHandle *, enum MHD_UpgradeAction, ...);
} f;
static const char *const names[] = {
	"MHD_start_daemon_va", "MHD_stop_daemon", "MHD_get_daemon_info", "MHD_get_connection_info",
	"MHD_lookup_connection_value", "MHD_queue_response", "MHD_create_response_from_buffer",
	"MHD_create_response_from_callback", "MHD_create_response_for_upgrade", "MHD_add_response_header",
	"MHD_destroy_response", "MHD_upgrade_action",
};
_Static_assert(sizeof(f) == sizeof(names) / sizeof(names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib lib = DL_LIB_INIT("libmicrohttpd.so.12", "libmicrohttpd12", names, &f);

static bool ready(void)
{
	return dl_lib_ready(&lib);
}

const char *mhd_dl_error(void)
{
	return ready() ? NULL : lib.why;
}

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc, void *apc_cls,
				    MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
	struct MHD_Daemon *d;
	va_list ap;

	if (!ready())
		return NULL;
	va_start(ap, dh_cls);
	d = f.start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
	va_end(ap);
	return d;
}

void MHD_stop_daemon(struct MHD_Daemon *d)
{
	if (ready())
		f.stop_daemon(d);
}

const union MHD_DaemonInfo *MHD_get_daemon_info(struct MHD_Daemon *d, enum MHD_DaemonInfoType t, ...)
{
	return ready() ? f.get_daemon_info(d, t) : NULL;
}

const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *c, enum MHD_ConnectionInfoType t, ...)
{
	return ready() ? f.get_connection_info(c, t) : NULL;
}

const char *MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind, const char *key)
{
	return ready() ? f.lookup_connection_value(c, kind, key) : NULL;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *c, unsigned int status, struct MHD_Response *r)
{
	return ready() ? f.queue_response(c, status, r) : MHD_NO;
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buf, enum MHD_ResponseMemoryMode mode)
{
	return ready() ? f.create_response_from_buffer(size, buf, mode) : NULL;
}

struct MHD_Response *MHD_create_response_from_callback(uint64_t size, size_t block, MHD_ContentReaderCallback crc,
						       void *crc_cls, MHD_ContentReaderFreeCallback crfc)
{
	return ready() ? f.create_response_from_callback(size, block, crc, crc_cls, crfc) : NULL;
}

struct MHD_Response *MHD_create_response_for_upgrade(MHD_UpgradeHandler h, void *cls)
{
	return ready() ? f.create_response_for_upgrade(h, cls) : NULL;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *r, const char *header, const char *content)
{
	return ready() ? f.add_response_header(r, header, content) : MHD_NO;
}

void MHD_destroy_response(struct MHD_Response *r)
{
	if (ready())
		f.destroy_response(r);
}

enum MHD_Result MHD_upgrade_action(struct MHD_UpgradeResponseHandle *urh, enum MHD_UpgradeAction action, ...)
{
	return ready() ? f.upgrade_action(urh, action) : MHD_NO;
}
