/*
 * serve.h - `shoal store serve`: the image server over HTTPS with client
 * certificates (serve.c, docs/store.md "The image server").
 */
#ifndef SHOAL_STORE_SERVE_H
#define SHOAL_STORE_SERVE_H

#include "base/error.h"

struct store_serve_opts {
	const char *dir;		/* the store */
	const char *listen;		/* HOST:PORT, [V6]:PORT; port 0 picks one */
	const char *cert, *key;		/* the server's certificate and key (PEM) */
	const char *client_ca;		/* the CA whose clients may connect (PEM) */
	unsigned max_connections;	/* at once; 0: 64 */
	unsigned timeout_s;		/* an idle connection is closed; 0: 30 */
};

/* Serve until SIGINT or SIGTERM; prints "serving DIR on https://HOST:PORT"
 * on stdout once listening.  0 on a clean stop. */
int store_serve(const struct store_serve_opts *o, struct error *e);

#endif
