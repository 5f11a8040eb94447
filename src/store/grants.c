/*
 * grants.c - the grants of an image store: which client may pull which
 * image from `shoal store serve` (docs/store.md "The image server").
 *
 * A client host has a key pair; it is named by the SHA-256 of its public
 * key in DER (the SubjectPublicKeyInfo of its certificate, what
 * `openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum`
 * prints).  The key, not the certificate, is the identity: a certificate
 * renewed for the same key keeps its grants, and a new key needs new
 * grants.  This file finds the SubjectPublicKeyInfo in a certificate with
 * a small DER walk (the certificate itself is verified by the TLS
 * library before its key is looked at; this only reads fields).
 *
 * DIR/grants is JSON: {"grants": [{"client": HEX, "image": NAME,
 * "added": SECONDS[, "vm": HEX, "vm_key": HEX]}, ...]}; a grant with "vm"
 * serves the client only for that VM (its Ed25519 key in "vm_key", whose
 * fingerprint "vm" must be; store/vmkey.c).  Changes take DIR/grants.lock (flock) and
 * replace the file by rename, so a reader (the server reads it on every
 * request) sees the old list or the new, never half of one; a revoke
 * takes effect at the next request.  A damaged file is an error naming
 * it, and the server then refuses everyone (it fails closed).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "base/exitcode.h"
#include "base/io.h"
#include "store/grants.h"
#include "store/store.h"
#include "store/vmkey.h"

#define PEM_MAX (1u << 20)

static void hex_of(const uint8_t h[32], char out[65])
{
	store_hash_hex(h, out);
}

/* One DER element at p[0..n): its header length and content length. */
static int der_elem(const uint8_t *p, size_t n, uint8_t *tag, size_t *hdr, size_t *len)
{
	size_t l, k;

	if (n < 2)
		return -1;
	*tag = p[0];
	if ((p[0] & 0x1f) == 0x1f)	/* multi-byte tags: not in the fields we read */
		return -1;
	if (p[1] < 0x80) {
		l = p[1];
		k = 2;
	} else {
		size_t nb = p[1] & 0x7f;

		if (!nb || nb > 4 || n < 2 + nb)
			return -1;
		l = 0;
		for (size_t i = 0; i < nb; i++)
			l = l << 8 | p[2 + i];
		k = 2 + nb;
	}
	if (l > n - k)
		return -1;
	*hdr = k;
	*len = l;
	return 0;
}

int store_fingerprint_cert_der(const uint8_t *der, size_t n, char out[65])
{
	uint8_t tag, md[32];
	size_t hdr, len;
	const uint8_t *p;

	/* Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
	 * OPTIONAL, serial INTEGER, signature SEQ, issuer SEQ, validity SEQ,
	 * subject SEQ, subjectPublicKeyInfo SEQ, ... }, ... } */
	if (der_elem(der, n, &tag, &hdr, &len) || tag != 0x30)
		return -1;
	p = der + hdr;
	n = len;
	if (der_elem(p, n, &tag, &hdr, &len) || tag != 0x30)
		return -1;
	p += hdr;
	n = len;
	for (int field = 0; field < 7; field++) {
		if (der_elem(p, n, &tag, &hdr, &len))
			return -1;
		if (field == 0 && tag != 0xa0)
			field++;	/* no version: v1 */
		if (field == 6) {
			if (tag != 0x30)
				return -1;
			store_hash(p, hdr + len, md);
			hex_of(md, out);
			return 0;
		}
		p += hdr + len;
		n -= hdr + len;
	}
	return -1;
}

static int b64v(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The DER of the first PEM block labelled `label` in text; free it. */
uint8_t *store_pem_block(const char *text, const char *label, size_t *out_len)
{
	char begin[64], end[64];
	const char *b, *z;
	uint8_t *der;
	uint32_t acc = 0;
	int bits = 0;
	size_t k = 0;

	snprintf(begin, sizeof(begin), "-----BEGIN %s-----", label);
	snprintf(end, sizeof(end), "-----END %s-----", label);
	b = strstr(text, begin);
	if (!b)
		return NULL;
	b += strlen(begin);
	z = strstr(b, end);
	if (!z)
		return NULL;
	der = malloc((size_t)(z - b) * 3 / 4 + 4);
	if (!der)
		return NULL;
	for (const char *c = b; c < z; c++) {
		int v = b64v((unsigned char)*c);

		if (*c == '=' || *c == '\n' || *c == '\r' || *c == ' ' || *c == '\t')
			continue;
		if (v < 0) {
			free(der);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			der[k++] = (uint8_t)(acc >> bits);
		}
	}
	*out_len = k;
	return der;
}

char *store_read_text(const char *path, size_t max, struct error *e)
{
	char *t;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0) {
		err = errno;
		error_set(e, err == ENOENT ? EXIT_NOINPUT : EXIT_USAGE, "%s: %s", path, strerror(err));
		errno = err;
		return NULL;
	}
	t = malloc(max + 1);
	if (!t) {
		close(fd);
		error_set(e, EXIT_HOST, "%s: out of memory", path);
		return NULL;
	}
	for (ssize_t r; n < max && (r = read(fd, t + n, max - n)) > 0;)
		n += (size_t)r;
	close(fd);
	t[n] = 0;
	return t;
}

int store_fingerprint_arg(const char *arg, char out[65], struct error *e)
{
	const char *p = arg;
	size_t k = 0;
	char *text;
	uint8_t *der;
	size_t len;

	if (!strncasecmp(p, "sha256:", 7))
		p += 7;
	for (; *p && k < 65; p++) {
		if (*p == ':')
			continue;
		if (!strchr("0123456789abcdefABCDEF", *p))
			break;
		out[k++] = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
	}
	if (!*p && k == 64) {
		out[64] = 0;
		return 0;
	}
	/* Not a fingerprint: a PEM file. */
	text = store_read_text(arg, PEM_MAX, e);
	if (!text)
		return error_set(e, EXIT_USAGE, "%s: neither a SHA-256 fingerprint (64 hex digits) nor a readable file (%s)",
				 arg, e && e->status == EXIT_HOST ? "out of memory" : strerror(errno));
	if ((der = store_pem_block(text, "CERTIFICATE", &len))) {
		int rc = store_fingerprint_cert_der(der, len, out);

		free(der);
		free(text);
		return rc ? error_set(e, EXIT_USAGE, "%s: the certificate does not parse", arg) : 0;
	}
	if ((der = store_pem_block(text, "PUBLIC KEY", &len))) {
		uint8_t md[32];

		store_hash(der, len, md);
		hex_of(md, out);
		free(der);
		free(text);
		return 0;
	}
	free(text);
	return error_set(e, EXIT_USAGE, "%s: no PEM certificate or public key in it (and not a 64-digit fingerprint)", arg);
}

static bool hex64(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (; *s; s++)
		if (!strchr("0123456789abcdef", *s))
			return false;
	return true;
}

/* A grant's "vm" and "vm_key", if it has them: the key's fingerprint
 * must be "vm". */
static int grant_vm_load(json_t *g, struct store_grant *out)
{
	const char *vm = json_string_value(json_object_get(g, "vm"));
	const char *key = json_string_value(json_object_get(g, "vm_key"));
	char fp[65];

	if (!vm && !key)
		return 0;
	if (!vm || !key || !hex64(vm) || !hex64(key))
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned x;

		if (sscanf(key + 2 * i, "%2x", &x) != 1)
			return -1;
		out->vm_pub[i] = (uint8_t)x;
	}
	store_vmkey_fingerprint(out->vm_pub, fp);
	if (strcmp(fp, vm))
		return -1;
	snprintf(out->vm, sizeof(out->vm), "%s", vm);
	return 0;
}

int store_grants_load(const char *dir, struct store_grant **out, size_t *n, struct error *e)
{
	char path[4096];
	json_error_t je;
	json_t *j, *arr;
	struct store_grant *v;
	size_t i;

	*out = NULL;
	*n = 0;
	snprintf(path, sizeof(path), "%s/grants", dir);
	if (access(path, F_OK) && errno == ENOENT) {
		*out = calloc(1, sizeof(**out));
		return *out ? 0 : error_set(e, EXIT_HOST, "%s: out of memory", path);
	}
	j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return error_set(e, EXIT_BADSTATE, "%s: damaged grants file (%s)", path, je.text);
	arr = json_object_get(j, "grants");
	if (!json_is_array(arr)) {
		json_decref(j);
		return error_set(e, EXIT_BADSTATE, "%s: damaged grants file (no \"grants\" list)", path);
	}
	v = calloc(json_array_size(arr) + 1, sizeof(*v));
	if (!v) {
		json_decref(j);
		return error_set(e, EXIT_HOST, "%s: out of memory", path);
	}
	for (i = 0; i < json_array_size(arr); i++) {
		json_t *g = json_array_get(arr, i);
		const char *c = json_string_value(json_object_get(g, "client"));
		const char *im = json_string_value(json_object_get(g, "image"));

		if (!c || !im || !hex64(c) || store_name_check(im, NULL)) {
			free(v);
			json_decref(j);
			return error_set(e, EXIT_BADSTATE, "%s: damaged grants file (entry %zu)", path, i);
		}
		snprintf(v[i].client, sizeof(v[i].client), "%s", c);
		snprintf(v[i].image, sizeof(v[i].image), "%s", im);
		v[i].added = (uint64_t)json_integer_value(json_object_get(g, "added"));
		if (grant_vm_load(g, &v[i])) {
			free(v);
			json_decref(j);
			return error_set(e, EXIT_BADSTATE, "%s: damaged grants file (entry %zu: its VM key)", path, i);
		}
	}
	json_decref(j);
	*out = v;
	*n = i;
	return 0;
}

bool store_grant_applies(const struct store_grant *g, const char *client, const char *vm)
{
	return !strcmp(g->client, client) && (!g->vm[0] || (vm && !strcmp(g->vm, vm)));
}

bool store_granted(const struct store_grant *v, size_t n, const char *client, const char *vm,
		   const char *image)
{
	for (size_t i = 0; i < n; i++)
		if (store_grant_applies(&v[i], client, vm) && !strcmp(v[i].image, image))
			return true;
	return false;
}

const uint8_t *store_grants_vm_key(const struct store_grant *v, size_t n, const char *vm)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].vm, vm))
			return v[i].vm_pub;
	return NULL;
}

static int grants_save(const char *dir, const struct store_grant *v, size_t n, struct error *e)
{
	char path[4096], tmp[4200];
	json_t *arr = json_array(), *j;
	char *text;
	int fd, rc = -1;

	for (size_t i = 0; i < n; i++) {
		json_t *g = json_pack("{s:s, s:s, s:I}", "client", v[i].client, "image", v[i].image, "added",
				      (json_int_t)v[i].added);

		if (v[i].vm[0]) {
			char key[65];

			for (int b = 0; b < 32; b++)
				snprintf(key + 2 * b, 3, "%02x", v[i].vm_pub[b]);
			json_object_set_new(g, "vm", json_string(v[i].vm));
			json_object_set_new(g, "vm_key", json_string(key));
		}
		json_array_append_new(arr, g);
	}
	j = json_pack("{s:i, s:o}", "version", 1, "grants", arr);
	text = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	if (!text)
		return error_set(e, EXIT_HOST, "%s: out of memory", dir);
	snprintf(path, sizeof(path), "%s/grants", dir);
	snprintf(tmp, sizeof(tmp), "%s/grants.tmp", dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, text, strlen(text)) || write_all(fd, "\n", 1) || fsync(fd) ||
	    rename(tmp, path)) {
		error_set(e, EXIT_HOST, "%s: %s", tmp, strerror(errno));
		unlink(tmp);
	} else {
		int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (d >= 0) {
			fsync(d);
			close(d);
		}
		rc = 0;
	}
	if (fd >= 0)
		close(fd);
	free(text);
	return rc;
}

/* Read-modify-write under DIR/grants.lock. */
static int grants_change(const char *dir, const char *client, const char *image, const char *vm,
			 const uint8_t *vm_pub, bool add, struct error *e)
{
	char path[4096];
	struct store_grant *v, *nv;
	size_t n, i;
	int lock, rc = -1;

	if (!hex64(client))
		return error_set(e, EXIT_USAGE, "client '%s': not a SHA-256 fingerprint", client);
	if (store_name_check(image, e))
		return -1;
	if (!vm)
		vm = "";
	snprintf(path, sizeof(path), "%s/grants.lock", dir);
	lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock < 0)
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	if (flock(lock, LOCK_EX)) {
		close(lock);
		return error_set(e, EXIT_HOST, "%s: %s", path, strerror(errno));
	}
	if (store_grants_load(dir, &v, &n, e))
		goto out;
	for (i = 0; i < n; i++)
		if (!strcmp(v[i].client, client) && !strcmp(v[i].image, image) && !strcmp(v[i].vm, vm))
			break;
	if (add && i == n) {
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			error_set(e, EXIT_HOST, "%s: out of memory", dir);
			goto out;
		}
		v = nv;
		memset(&v[n], 0, sizeof(v[n]));
		snprintf(v[n].client, sizeof(v[n].client), "%s", client);
		snprintf(v[n].image, sizeof(v[n].image), "%s", image);
		snprintf(v[n].vm, sizeof(v[n].vm), "%s", vm);
		if (vm_pub)
			memcpy(v[n].vm_pub, vm_pub, 32);
		v[n].added = (uint64_t)time(NULL);
		n++;
	} else if (!add && i == n) {
		free(v);
		if (*vm)
			error_set(e, EXIT_NOINPUT, "%s: client %.16s... has no grant for image '%s' for VM key %.16s...",
				  dir, client, image, vm);
		else
			error_set(e, EXIT_NOINPUT, "%s: client %.16s... has no grant for image '%s'", dir, client, image);
		goto out;
	} else if (!add) {
		memmove(&v[i], &v[i + 1], (n - i - 1) * sizeof(*v));
		n--;
	} else {
		free(v);	/* already granted */
		rc = 0;
		goto out;
	}
	rc = grants_save(dir, v, n, e);
	free(v);
out:
	close(lock);
	return rc;
}

int store_grant_add(const char *dir, const char *client, const char *image, struct error *e)
{
	return grants_change(dir, client, image, NULL, NULL, true, e);
}

int store_grant_rm(const char *dir, const char *client, const char *image, struct error *e)
{
	return grants_change(dir, client, image, NULL, NULL, false, e);
}

int store_grant_vm_add(const char *dir, const char *client, const char *image, const char *vm,
		       const uint8_t vm_pub[32], struct error *e)
{
	if (!hex64(vm))
		return error_set(e, EXIT_USAGE, "VM key '%s': not a SHA-256 fingerprint", vm);
	return grants_change(dir, client, image, vm, vm_pub, true, e);
}

int store_grant_vm_rm(const char *dir, const char *client, const char *image, const char *vm,
		      struct error *e)
{
	if (!hex64(vm))
		return error_set(e, EXIT_USAGE, "VM key '%s': not a SHA-256 fingerprint", vm);
	return grants_change(dir, client, image, vm, NULL, false, e);
}
