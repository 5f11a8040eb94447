/*
 * vmkey.h - per-VM key pairs for the image server (vmkey.c,
 * docs/store.md "Per-VM keys"): a VM's own Ed25519 key, and the proof a
 * client host sends that it acts for that VM.
 */
#ifndef SHOAL_STORE_VMKEY_H
#define SHOAL_STORE_VMKEY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define STORE_VMPROOF_HEADER "Shoal-VM-Proof"
#define STORE_VMPROOF_MAX 256		/* the header's value, NUL included */
#define STORE_VMPROOF_MAX_LIFE (7u * 86400)	/* the server refuses proofs valid longer */

struct store_vmkey {
	uint8_t seed[32];	/* the private key (RFC 8032's 32-byte secret) */
	uint8_t pub[32];
	char fp[65];		/* SHA-256 of the public key's SubjectPublicKeyInfo */
};

/* A new key pair: the private key in `path` (PKCS#8 PEM, 0600, as
 * `openssl genpkey -algorithm ed25519` writes it) and the public key in
 * `path`.pub (SubjectPublicKeyInfo PEM).  Refuses to overwrite. */
int store_vmkey_generate(const char *path, struct store_vmkey *k, struct error *e);
/* The private key in `path` (a PEM "PRIVATE KEY" of an Ed25519 key). */
int store_vmkey_load(const char *path, struct store_vmkey *k, struct error *e);
/* The public key in `path` (a PEM "PUBLIC KEY", or the private key's
 * file), and its fingerprint. */
int store_vmkey_load_public(const char *path, uint8_t pub[32], char fp[65], struct error *e);
/* The fingerprint of a raw Ed25519 public key. */
void store_vmkey_fingerprint(const uint8_t pub[32], char fp[65]);

/* The proof that the host whose key has fingerprint `client` acts for
 * VM k until `until` (seconds since the epoch), as the header's value:
 * "v1 VMFP UNTIL SIG", SIG the Ed25519 signature (128 hex digits) of
 * "shoal-vm-proof v1\nclient CLIENT\nvm VMFP\nuntil UNTIL\n". */
int store_vmproof_make(const struct store_vmkey *k, const char *client, uint64_t until,
		       char out[STORE_VMPROOF_MAX], struct error *e);
/* Its parts, checked for form only: 0, or -1 with why. */
int store_vmproof_parse(const char *v, char vm[65], uint64_t *until, uint8_t sig[64], char *why,
			size_t n);
/* Is sig the VM key pub's signature for (client, vm, until), and is the
 * proof current at `now`?  0, or -1 with why. */
int store_vmproof_check(const uint8_t pub[32], const char *client, const char *vm, uint64_t until,
			const uint8_t sig[64], uint64_t now, char *why, size_t n);

/* A client's source of proofs: none, a VM key (proofs made as needed,
 * valid STORE_VMPROOF_CLIENT_LIFE), or a proof given whole (made by the
 * VM key's owner elsewhere, `shoal store vm-proof`).  Thread-safe. */
#define STORE_VMPROOF_CLIENT_LIFE 3600u
struct store_vmproof_src {
	pthread_mutex_t mu;
	int mode;		/* 0 none, 1 key, 2 given */
	struct store_vmkey k;
	char client[65];
	uint64_t until;
	char value[STORE_VMPROOF_MAX];
};
/* vm_key: a private key file, or NULL; vm_proof: a proof, or NULL (not
 * both); cert: this host's certificate (the proof names its key). */
int store_vmproof_src_init(struct store_vmproof_src *src, const char *vm_key, const char *vm_proof,
			   const char *cert, struct error *e);
/* "Shoal-VM-Proof: VALUE", current, into line: 1; 0 without a source;
 * -1 with e. */
int store_vmproof_src_line(struct store_vmproof_src *src, char line[STORE_VMPROOF_MAX + 32],
			   struct error *e);
/* The same as the header list for a libcurl request: *out NULL without
 * a source; free it with curl_slist_free_all.  0, or -1 with e. */
struct curl_slist;
int store_vmproof_src_curl(struct store_vmproof_src *src, struct curl_slist **out, struct error *e);
void store_vmproof_src_fini(struct store_vmproof_src *src);

#endif
