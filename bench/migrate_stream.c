/*
 * bench/migrate_stream.c - the live migration stream's transport alone,
 * in clear against TLS (docs/benchmarks.md, "Migration over TLS"; run by
 * bench/migrate_tls.sh after its VM figures, or by hand):
 *
 *   migrate_stream [MIB] [ROUNDS]     (default 1024 MiB, 5 rounds)
 *
 * Each round, each variant once (the order alternated), over TCP on
 * 127.0.0.1: a "VMM" thread writes MIB MiB of non-zero bytes in 1 MiB
 * pieces (migrate_send_all, as the source VMM's sender writes its
 * sections), and a destination thread reads them in 1 MiB pieces and
 * acknowledges with 8 bytes.  Plain: the VMM writes the TCP socket.  TLS:
 * the handshake of state/migrate_tls.c (timed apart), then the VMM
 * writes into the relay's Unix socket pair as it does under `shoal
 * migrate --tls`, the relay thread encrypts into TCP, and the destination
 * reads through migrate_io_recv (TLS 1.3, TLS_AES_256_GCM_SHA384).  The
 * time runs from the first byte written to the acknowledgement read.
 * Prints the medians (MiB/s) and the ratio.  No KVM needed: on the host
 * it shows what the CPU's AES costs, where the KVM box (TCG, whose AES-NI
 * is emulated) cannot.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/ssl_dl.h"
#include "state/migrate_net.h"
#include "state/migrate_tls.h"

#define PIECE (1u << 20)

static uint8_t key[MIGRATE_KEY_LEN];

struct dst {
	int fd;
	bool tls;
	size_t mib;
	int rc;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *dst_run(void *arg)
{
	struct dst *d = arg;
	struct migrate_tls *t = NULL;
	struct error e = { 0 };
	uint8_t *buf = malloc(PIECE);

	d->rc = -1;
	if (!buf || (d->tls && migrate_tls_accept(d->fd, key, &t, &e))) {
		fprintf(stderr, "destination: %s\n", e.msg);
		close(d->fd);
		free(buf);
		return NULL;
	}
	for (size_t i = 0; i < d->mib; i++)
		if (migrate_io_recv(d->fd, t, buf, PIECE) != 1)
			goto out;
	d->rc = migrate_io_send(d->fd, t, "SHOALACK", 8);
out:
	migrate_io_close(d->fd, t);
	free(buf);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One transfer: MiB/s, and the handshake's ms into *hs_ms (TLS). */
static double run(bool tls, size_t mib, const uint8_t *data, double *hs_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct dst d = { .tls = tls, .mib = mib };
	struct migrate_tls *t = NULL;
	struct error e = { 0 };
	pthread_t th;
	double t0, t1;
	char ack[8];
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), vm;

	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&sa, &sl) || connect(c, (struct sockaddr *)&sa, sl) ||
	    (d.fd = accept(l, NULL, NULL)) < 0) {
		perror("migrate_stream: sockets");
		exit(1);
	}
	close(l);
	migrate_set_timeouts(c);
	migrate_set_timeouts(d.fd);
	pthread_create(&th, NULL, dst_run, &d);
	vm = c;
	if (tls) {
		t0 = now_s();
		if (migrate_tls_connect(c, key, "bench", &t, &e) ||
		    (vm = migrate_tls_relay_start(t, &e)) < 0) {
			fprintf(stderr, "migrate_stream: %s\n", e.msg);
			exit(1);
		}
		*hs_ms = (now_s() - t0) * 1e3;
	}
	t0 = now_s();
	for (size_t i = 0; i < mib; i++)
		if (migrate_send_all(vm, data, PIECE)) {
			fprintf(stderr, "migrate_stream: the send failed\n");
			exit(1);
		}
	if (migrate_recv_all(vm, ack, 8) != 1 || memcmp(ack, "SHOALACK", 8)) {
		fprintf(stderr, "migrate_stream: no acknowledgement\n");
		exit(1);
	}
	t1 = now_s();
	close(vm);
	if (t)
		migrate_tls_relay_end(t, 2000);
	pthread_join(th, NULL);
	if (d.rc) {
		fprintf(stderr, "migrate_stream: the destination failed\n");
		exit(1);
	}
	return (double)mib / (t1 - t0);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	double plain[64], tls[64], hs[64];
	uint8_t *data = malloc(PIECE);

	if (ssl_dl_error()) {
		printf("skipped: %s\n", ssl_dl_error());
		return 77;
	}
	if (!data || !mib || rounds < 1 || rounds > 64) {
		fprintf(stderr, "usage: migrate_stream [MIB] [ROUNDS (1 to 64)]\n");
		return 64;
	}
	for (size_t i = 0; i < PIECE; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	for (int i = 0; i < MIGRATE_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	for (int r = 0; r < rounds; r++) {
		if (r % 2 == 0) {
			plain[r] = run(false, mib, data, NULL);
			tls[r] = run(true, mib, data, &hs[r]);
		} else {
			tls[r] = run(true, mib, data, &hs[r]);
			plain[r] = run(false, mib, data, NULL);
		}
		printf("round %d: plain %.0f MiB/s, TLS %.0f MiB/s (handshake %.2f ms)\n", r, plain[r],
		       tls[r], hs[r]);
	}
	double p = median(plain, rounds), q = median(tls, rounds);

	printf("stream over TCP on 127.0.0.1, %zu MiB, %d rounds: median plain %.0f MiB/s, "
	       "TLS %.0f MiB/s (handshake %.2f ms); ratio TLS/plain %.2f\n", mib, rounds, p, q,
	       median(hs, rounds), q / p);
	free(data);
	return 0;
}
