/*
 * grants.h - who may pull which image from a store (grants.c,
 * docs/store.md "The image server").
 *
 * A client is named by the SHA-256 of its public key (the DER
 * SubjectPublicKeyInfo of its certificate): the key pair is the client
 * host's identity, and a certificate renewed for the same key keeps its
 * grants.  A grant is (client, image), or (client, image, VM key): then
 * the client gets the image only for that VM, in a request carrying the
 * VM's proof (store/vmkey.h).  The grants live in DIR/grants.
 */
#ifndef SHOAL_STORE_GRANTS_H
#define SHOAL_STORE_GRANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct store_grant {
	char client[65];	/* 64 lowercase hex digits */
	char image[65];
	uint64_t added;		/* seconds since the epoch */
	char vm[65];		/* "": for the host; else only for this VM key (store/vmkey.h) */
	uint8_t vm_pub[32];	/* that VM key, to check its proofs with */
};

/* A client's fingerprint from the command line: 64 hex digits (colons,
 * case and a "sha256:" prefix allowed), or a PEM file holding a
 * certificate or a public key. */
int store_fingerprint_arg(const char *arg, char out[65], struct error *e);
/* The fingerprint of a DER certificate; -1 if it does not parse. */
int store_fingerprint_cert_der(const uint8_t *der, size_t len, char out[65]);

/* Every grant of the store in dir (none when DIR/grants is missing). */
int store_grants_load(const char *dir, struct store_grant **v, size_t *n, struct error *e);
/* Add or remove one (under DIR/grants.lock, written by rename).  Add of
 * one already there is no change; remove of one not there is an error
 * (EXIT_NOINPUT). */
int store_grant_add(const char *dir, const char *client, const char *image, struct error *e);
int store_grant_rm(const char *dir, const char *client, const char *image, struct error *e);
/* The same for a grant to one VM of that client: vm is the VM key's
 * fingerprint, vm_pub the key. */
int store_grant_vm_add(const char *dir, const char *client, const char *image, const char *vm,
		       const uint8_t vm_pub[32], struct error *e);
int store_grant_vm_rm(const char *dir, const char *client, const char *image, const char *vm,
		      struct error *e);
/* Does grant g serve a request of `client` acting for VM `vm` ("" or
 * NULL: for no VM)?  A host's grant serves all its requests; a VM's only
 * those with that VM's proof. */
bool store_grant_applies(const struct store_grant *g, const char *client, const char *vm);
bool store_granted(const struct store_grant *v, size_t n, const char *client, const char *vm,
		   const char *image);
/* The key of VM `vm` as some grant records it, or NULL. */
const uint8_t *store_grants_vm_key(const struct store_grant *v, size_t n, const char *vm);
/* A small text file (a PEM key or certificate): at most max bytes of it,
 * NUL-terminated; free() it.  NULL with e (naming the file) if it cannot
 * be read. */
char *store_read_text(const char *path, size_t max, struct error *e);
/* The DER of the first PEM block labelled `label` in text; free() it. */
uint8_t *store_pem_block(const char *text, const char *label, size_t *out_len);

#endif
