/*
 * ssl_dl.c - the TLS functions of OpenSSL's libssl, and the error queue of
 * its libcrypto, loaded when first called (base/dl_lib.c).
 *
 * Live migration can run its stream over TLS 1.3 with the migration's key
 * as an external pre-shared key (state/migrate_tls.c); nothing else in
 * Shoal uses libssl.  Linked, it (and the libcrypto it pulls in) would be
 * mapped and relocated in every process of the one `shoal` binary, each
 * VMM included, though few ever migrate.  So it is not linked: these
 * definitions forward to the real functions, loaded from libssl.so.3
 * (Debian's libssl3) on the first call, as crypto_dl.c does for libcrypto.
 *
 * Invariants: every function below is resolved or none is used; where the
 * library cannot be loaded, each fails as OpenSSL's own do (0, -1, NULL),
 * and ssl_dl_error() says why.  ssl_dl_error() also runs
 * OPENSSL_init_ssl once, which reads OpenSSL's configuration file: a
 * destination calls it before its jail and seccomp filters, so nothing
 * after needs to open a file or map code.  The source side runs in the
 * process that connects (shoal migrate, shoald), never in the source VMM.
 */
#include "base/ssl_dl.h"

#include <pthread.h>

#include "base/dl_lib.h"

static struct {
	const SSL_METHOD *(*client_method)(void);
	const SSL_METHOD *(*server_method)(void);
	SSL_CTX *(*ctx_new)(const SSL_METHOD *);
	void (*ctx_free)(SSL_CTX *);
	long (*ctx_ctrl)(SSL_CTX *, int, long, void *);
	int (*ctx_set_ciphersuites)(SSL_CTX *, const char *);
	void (*ctx_set_psk_use)(SSL_CTX *, SSL_psk_use_session_cb_func);
	void (*ctx_set_psk_find)(SSL_CTX *, SSL_psk_find_session_cb_func);
	int (*ctx_set_num_tickets)(SSL_CTX *, size_t);
	uint64_t (*ctx_set_options)(SSL_CTX *, uint64_t);
	SSL *(*ssl_new)(SSL_CTX *);
	void (*ssl_free)(SSL *);
	int (*set_fd)(SSL *, int);
	int (*connect)(SSL *);
	int (*accept)(SSL *);
	int (*read)(SSL *, void *, int);
	int (*write)(SSL *, const void *, int);
	int (*get_error)(const SSL *, int);
	int (*shutdown)(SSL *);
	int (*pending)(const SSL *);
	int (*set_ex_data)(SSL *, int, void *);
	void *(*get_ex_data)(const SSL *, int);
	SSL_SESSION *(*sess_new)(void);
	void (*sess_free)(SSL_SESSION *);
	int (*sess_set1_master_key)(SSL_SESSION *, const unsigned char *, size_t);
	int (*sess_set_cipher)(SSL_SESSION *, const SSL_CIPHER *);
	int (*sess_set_protocol_version)(SSL_SESSION *, int);
	const SSL_CIPHER *(*cipher_find)(SSL *, const unsigned char *);
	const SSL_CIPHER *(*get_current_cipher)(const SSL *);
	const char *(*cipher_get_name)(const SSL_CIPHER *);
	const char *(*get_version)(const SSL *);
	int (*init_ssl)(uint64_t, const OPENSSL_INIT_SETTINGS *);
} f;
static const char *const names[] = {
	"TLS_client_method", "TLS_server_method", "SSL_CTX_new", "SSL_CTX_free", "SSL_CTX_ctrl",
	"SSL_CTX_set_ciphersuites", "SSL_CTX_set_psk_use_session_callback",
	"SSL_CTX_set_psk_find_session_callback", "SSL_CTX_set_num_tickets", "SSL_CTX_set_options",
	"SSL_new", "SSL_free", "SSL_set_fd", "SSL_connect", "SSL_accept", "SSL_read", "SSL_write",
	"SSL_get_error", "SSL_shutdown", "SSL_pending", "SSL_set_ex_data", "SSL_get_ex_data",
	"SSL_SESSION_new", "SSL_SESSION_free", "SSL_SESSION_set1_master_key",
	"SSL_SESSION_set_cipher", "SSL_SESSION_set_protocol_version", "SSL_CIPHER_find",
	"SSL_get_current_cipher", "SSL_CIPHER_get_name", "SSL_get_version", "OPENSSL_init_ssl",
};
_Static_assert(sizeof(f) == sizeof(names) / sizeof(names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib lib = DL_LIB_INIT("libssl.so.3", "libssl3", names, &f);

static struct {
	unsigned long (*get_error)(void);
	void (*error_string_n)(unsigned long, char *, size_t);
	void (*clear_error)(void);
} g;
static const char *const err_names[] = { "ERR_get_error", "ERR_error_string_n", "ERR_clear_error" };
_Static_assert(sizeof(g) == sizeof(err_names) / sizeof(err_names[0]) * sizeof(void *),
	       "one function pointer per name");
static struct dl_lib crypto = DL_LIB_INIT("libcrypto.so.3", "libssl3", err_names, &g);

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok;

static void init(void)
{
	init_ok = f.init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS |
			     OPENSSL_INIT_LOAD_CONFIG, NULL) == 1;
}

static bool ready(void)
{
	return dl_lib_ready(&lib) && dl_lib_ready(&crypto);
}

const char *ssl_dl_error(void)
{
	if (!dl_lib_ready(&lib))
		return lib.why;
	if (!dl_lib_ready(&crypto))
		return crypto.why;
	pthread_once(&init_once, init);
	return init_ok ? NULL : "libssl.so.3: OPENSSL_init_ssl failed";
}

const SSL_METHOD *TLS_client_method(void) { return ready() ? f.client_method() : NULL; }
const SSL_METHOD *TLS_server_method(void) { return ready() ? f.server_method() : NULL; }
SSL_CTX *SSL_CTX_new(const SSL_METHOD *m) { return ready() ? f.ctx_new(m) : NULL; }

void SSL_CTX_free(SSL_CTX *c)
{
	if (ready())
		f.ctx_free(c);
}

long SSL_CTX_ctrl(SSL_CTX *c, int cmd, long larg, void *parg)
{
	return ready() ? f.ctx_ctrl(c, cmd, larg, parg) : 0;
}

int SSL_CTX_set_ciphersuites(SSL_CTX *c, const char *s)
{
	return ready() ? f.ctx_set_ciphersuites(c, s) : 0;
}

void SSL_CTX_set_psk_use_session_callback(SSL_CTX *c, SSL_psk_use_session_cb_func cb)
{
	if (ready())
		f.ctx_set_psk_use(c, cb);
}

void SSL_CTX_set_psk_find_session_callback(SSL_CTX *c, SSL_psk_find_session_cb_func cb)
{
	if (ready())
		f.ctx_set_psk_find(c, cb);
}

int SSL_CTX_set_num_tickets(SSL_CTX *c, size_t n) { return ready() ? f.ctx_set_num_tickets(c, n) : 0; }
uint64_t SSL_CTX_set_options(SSL_CTX *c, uint64_t op) { return ready() ? f.ctx_set_options(c, op) : 0; }
SSL *SSL_new(SSL_CTX *c) { return ready() ? f.ssl_new(c) : NULL; }

void SSL_free(SSL *s)
{
	if (ready())
		f.ssl_free(s);
}

int SSL_set_fd(SSL *s, int fd) { return ready() ? f.set_fd(s, fd) : 0; }
int SSL_connect(SSL *s) { return ready() ? f.connect(s) : -1; }
int SSL_accept(SSL *s) { return ready() ? f.accept(s) : -1; }
int SSL_read(SSL *s, void *buf, int n) { return ready() ? f.read(s, buf, n) : -1; }
int SSL_write(SSL *s, const void *buf, int n) { return ready() ? f.write(s, buf, n) : -1; }
int SSL_get_error(const SSL *s, int rc) { return ready() ? f.get_error(s, rc) : SSL_ERROR_SSL; }
int SSL_shutdown(SSL *s) { return ready() ? f.shutdown(s) : -1; }
int SSL_pending(const SSL *s) { return ready() ? f.pending(s) : 0; }
int SSL_set_ex_data(SSL *s, int idx, void *d) { return ready() ? f.set_ex_data(s, idx, d) : 0; }
void *SSL_get_ex_data(const SSL *s, int idx) { return ready() ? f.get_ex_data(s, idx) : NULL; }
SSL_SESSION *SSL_SESSION_new(void) { return ready() ? f.sess_new() : NULL; }

void SSL_SESSION_free(SSL_SESSION *s)
{
	if (ready())
		f.sess_free(s);
}

int SSL_SESSION_set1_master_key(SSL_SESSION *s, const unsigned char *in, size_t len)
{
	return ready() ? f.sess_set1_master_key(s, in, len) : 0;
}

int SSL_SESSION_set_cipher(SSL_SESSION *s, const SSL_CIPHER *c)
{
	return ready() ? f.sess_set_cipher(s, c) : 0;
}

int SSL_SESSION_set_protocol_version(SSL_SESSION *s, int v)
{
	return ready() ? f.sess_set_protocol_version(s, v) : 0;
}

const SSL_CIPHER *SSL_CIPHER_find(SSL *s, const unsigned char *p)
{
	return ready() ? f.cipher_find(s, p) : NULL;
}

const SSL_CIPHER *SSL_get_current_cipher(const SSL *s)
{
	return ready() ? f.get_current_cipher(s) : NULL;
}

const char *SSL_CIPHER_get_name(const SSL_CIPHER *c)
{
	return ready() ? f.cipher_get_name(c) : "(none)";
}

const char *SSL_get_version(const SSL *s) { return ready() ? f.get_version(s) : "(none)"; }

int OPENSSL_init_ssl(uint64_t opts, const OPENSSL_INIT_SETTINGS *settings)
{
	return ready() ? f.init_ssl(opts, settings) : 0;
}

unsigned long ERR_get_error(void) { return ready() ? g.get_error() : 0; }

void ERR_error_string_n(unsigned long e, char *buf, size_t len)
{
	if (ready())
		g.error_string_n(e, buf, len);
	else if (len)
		buf[0] = 0;
}

void ERR_clear_error(void)
{
	if (ready())
		g.clear_error();
}
