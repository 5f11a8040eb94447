/*
 * api_peer.c - who is on the other end of each API connection, how many
 * connections each caller holds, and how long a request may take to
 * arrive.
 *
 * libmicrohttpd tells us when a connection opens and closes
 * (MHD_OPTION_NOTIFY_CONNECTION); each gets a struct api_peer as its socket
 * context, and every live one sits in one list:
 *
 *   open   -> SO_PEERCRED/SO_PEERGROUPS: uid, pid, groups -> role (authz.c)
 *             more than --max-peer-connections for this uid?
 *               -> a 429 written straight to the socket, our side shut
 *                  for writing, cut a second later (the client's request
 *                  may still arrive meanwhile: it is read and dropped, so
 *                  the client is not cut off mid-send and sees the 429)
 *             deadline = now + --request-timeout
 *   a handler starts (the request is whole) -> no deadline
 *   the answer is done (keep-alive)         -> deadline = now + timeout
 *   console attach (a raw stream now)       -> no deadline, for good
 *   close  -> out of the list
 *
 * The deadline thread wakes every quarter second and shuts down (shutdown(2),
 * not close: the descriptor stays libmicrohttpd's) every connection whose
 * deadline passed.  That bounds the whole time a request may take to
 * arrive, where --client-timeout only bounds silence: a client that sends a
 * byte every few seconds holds its slot no longer than the deadline, and
 * never more slots than the per-peer limit.  TCP connections have one
 * identity (the token), so libmicrohttpd's own per-address limit counts
 * them; they get the same deadline.
 *
 * Locking: ps->lock guards the list and every peer's deadline fields.
 * libmicrohttpd calls the open and close notifications from its listening
 * thread and each connection's thread; the close notification comes before
 * it closes the descriptor, so the deadline thread never shuts down a
 * reused descriptor.
 */
#include "host/api.h"
#include "base/log.h"
#include "base/timespec.h"

#include <errno.h>
#include "base/mhd_dl.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PEER_TICK_MS 250
#define PEER_MAX_GROUPS 256

struct api_peers {
	struct host *h;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct api_peer head;       /* list sentinel */
	bool stop;
	pthread_t thread;
	bool started;
};

/* Monotonic milliseconds (deadlines must not move with the wall clock). */
static int64_t peer_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline for a request that starts arriving now. */
static int64_t peer_deadline(const struct api_peers *ps)
{
	return peer_now_ms() + (int64_t)ps->h->opt.request_timeout_s * 1000;
}

/* Fill uid, pid and role from the kernel's view of a Unix socket peer. */
static void peer_identify_unix(struct api_peers *ps, struct api_peer *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t gids[PEER_MAX_GROUPS + 1];
	socklen_t glen = sizeof(gids) - sizeof(gid_t);
	int n = 0;

	p->uid = (uid_t)-1;
	p->role = HOST_ROLE_NONE;
	if (getsockopt(p->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		snprintf(p->who, sizeof(p->who), "unknown caller");
		return;
	}
	p->uid = cred.uid;
	p->pid = cred.pid;
	gids[n++] = cred.gid;
	if (getsockopt(p->fd, SOL_SOCKET, SO_PEERGROUPS, gids + 1, &glen) == 0)
		n += (int)(glen / sizeof(gid_t));
	p->role = host_authz_role(&ps->h->opt.authz, cred.uid, gids, n);
	snprintf(p->who, sizeof(p->who), "uid %u (pid %d)", (unsigned)cred.uid, (int)cred.pid);
}

/* How many connections `uid` holds besides `self` (lock held). */
static unsigned peer_count_locked(struct api_peers *ps, const struct api_peer *self)
{
	unsigned n = 0;

	for (struct api_peer *q = ps->head.next; q != &ps->head; q = q->next)
		if (q != self && !q->tcp && !q->refused && q->uid == self->uid)
			n++;
	return n;
}

/* Over the limit: answer 429 on the raw socket and end the connection:
 * the access handler drops whatever request follows, and the deadline
 * thread cuts the connection a second later at the most. */
static void peer_refuse(struct api_peers *ps, struct api_peer *p, unsigned held)
{
	char body[320], resp[640];
	int n;

	snprintf(body, sizeof(body),
		 "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"%s holds %u "
		 "connections to shoald, the most one caller may (--max-peer-connections)\"}}\n",
		 p->who, held);
	n = snprintf(resp, sizeof(resp), "HTTP/1.1 429 Too Many Requests\r\n"
		     "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
		     "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
	if (send(p->fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_warn("%s: 429 not sent: %s", p->who, strerror(errno));
	shutdown(p->fd, SHUT_WR);
	p->refused = true;
	p->deadline_ms = peer_now_ms() + 1000;
}

/* A connection opened: identify it, count it, start its deadline. */
static void peer_open(struct api_peers *ps, struct MHD_Connection *conn, void **ctx)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct api_peer *p = calloc(1, sizeof(*p));
	int domain = AF_UNIX;
	socklen_t len = sizeof(domain);
	unsigned held;

	*ctx = p;
	if (!p || !ci)
		return;
	p->set = ps;
	p->fd = ci->connect_fd;
	getsockopt(p->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
	p->tcp = domain != AF_UNIX;
	if (p->tcp) {
		p->uid = (uid_t)-1;
		p->role = HOST_ROLE_NONE;        /* until the token is seen */
		snprintf(p->who, sizeof(p->who), "TCP token client");
	} else {
		peer_identify_unix(ps, p);
	}
	pthread_mutex_lock(&ps->lock);
	p->deadline_ms = peer_deadline(ps);
	p->next = &ps->head;
	p->prev = ps->head.prev;
	ps->head.prev->next = p;
	ps->head.prev = p;
	held = p->tcp ? 0 : peer_count_locked(ps, p);
	if (!p->tcp && held >= ps->h->opt.max_peer_conns)
		peer_refuse(ps, p, held);
	pthread_mutex_unlock(&ps->lock);
}

/* A connection closed (its descriptor is still open): forget it. */
static void peer_close(struct api_peers *ps, struct api_peer *p)
{
	if (!p)
		return;
	if (p->set) {
		pthread_mutex_lock(&ps->lock);
		p->prev->next = p->next;
		p->next->prev = p->prev;
		pthread_mutex_unlock(&ps->lock);
	}
	free(p);
}

void api_peer_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
		     enum MHD_ConnectionNotificationCode toe)
{
	struct api_peers *ps = cls;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		peer_open(ps, conn, socket_context);
	else
		peer_close(ps, *socket_context);
	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		*socket_context = NULL;
}

struct api_peer *api_peer_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct api_peer *p = ci ? ci->socket_context : NULL;

	return p && p->set ? p : NULL;
}

void api_peer_handling(struct api_peer *p, bool handling)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->set->lock);
	if (!p->upgraded && !p->refused)
		p->deadline_ms = handling ? 0 : peer_deadline(p->set);
	pthread_mutex_unlock(&p->set->lock);
}

void api_peer_upgraded(struct api_peer *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->set->lock);
	p->upgraded = true;
	p->deadline_ms = 0;
	pthread_mutex_unlock(&p->set->lock);
}

/* Shut down every connection past its deadline (lock held). */
static void peers_cut_locked(struct api_peers *ps, int64_t now)
{
	for (struct api_peer *p = ps->head.next; p != &ps->head; p = p->next) {
		if (!p->deadline_ms || p->cut || now < p->deadline_ms)
			continue;
		shutdown(p->fd, SHUT_RDWR);
		p->cut = true;
		if (!p->refused)
			log_warn("%s: request not whole after %u s "
				"(--request-timeout): connection closed", p->who,
				ps->h->opt.request_timeout_s);
	}
}

/* The deadline thread. */
static void *peers_thread(void *arg)
{
	struct api_peers *ps = arg;
	struct timespec ts;

	pthread_mutex_lock(&ps->lock);
	while (!ps->stop) {
		ts = timespec_after_ms(CLOCK_MONOTONIC, PEER_TICK_MS);
		pthread_cond_timedwait(&ps->wake, &ps->lock, &ts);
		peers_cut_locked(ps, peer_now_ms());
	}
	pthread_mutex_unlock(&ps->lock);
	return NULL;
}

struct api_peers *api_peers_new(struct host *h)
{
	struct api_peers *ps = calloc(1, sizeof(*ps));
	pthread_condattr_t ca;

	if (!ps)
		return NULL;
	ps->h = h;
	ps->head.next = ps->head.prev = &ps->head;
	pthread_mutex_init(&ps->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ps->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&ps->thread, NULL, peers_thread, ps)) {
		api_peers_free(ps);
		return NULL;
	}
	ps->started = true;
	return ps;
}

void api_peers_free(struct api_peers *ps)
{
	if (!ps)
		return;
	if (ps->started) {
		pthread_mutex_lock(&ps->lock);
		ps->stop = true;
		pthread_cond_signal(&ps->wake);
		pthread_mutex_unlock(&ps->lock);
		pthread_join(ps->thread, NULL);
	}
	pthread_mutex_destroy(&ps->lock);
	pthread_cond_destroy(&ps->wake);
	free(ps);
}
