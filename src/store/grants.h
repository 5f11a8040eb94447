/*
 * grants.h - who may pull which image from a store (grants.c,
 * docs/store.md "The image server").
 *
 * A client is named by the SHA-256 of its public key (the DER
 * SubjectPublicKeyInfo of its certificate): the key pair is the client
 * host's identity, and a certificate renewed for the same key keeps its
 * grants.  A grant is (client, image); the grants live in DIR/grants.
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
bool store_granted(const struct store_grant *v, size_t n, const char *client, const char *image);

#endif
