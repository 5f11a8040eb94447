/*
 * eventloop.c - see eventloop.h.
 *
 * Handlers live in a fixed table (a VM has a handful of host fds); the
 * epoll data field carries the table index.  Registration happens before
 * the thread starts or on the loop thread itself, so the table needs no
 * lock.
 */
#include "base/eventloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/seccomp.h"

#define EVENTLOOP_MAX 64

struct eventloop_entry {
	int fd;                /* -1: free slot */
	eventloop_fn fn;
	void *opaque;
};

struct eventloop {
	int epfd;
	int stopfd;            /* eventfd: written by eventloop_stop */
	pthread_t thread;
	bool running;
	struct eventloop_entry e[EVENTLOOP_MAX];
};

struct eventloop *eventloop_new(void)
{
	struct eventloop *l = calloc(1, sizeof(*l));
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };

	if (!l)
		return NULL;
	for (int i = 0; i < EVENTLOOP_MAX; i++)
		l->e[i].fd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->epfd < 0 || l->stopfd < 0 ||
	    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->stopfd, &ev) < 0) {
		eventloop_free(l);
		return NULL;
	}
	return l;
}

void eventloop_free(struct eventloop *l)
{
	if (!l)
		return;
	if (l->running)
		eventloop_stop(l);
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->stopfd >= 0)
		close(l->stopfd);
	free(l);
}

int eventloop_add(struct eventloop *l, int fd, uint32_t events, eventloop_fn fn, void *opaque)
{
	struct epoll_event ev = { .events = events };

	for (uint32_t i = 0; i < EVENTLOOP_MAX; i++) {
		if (l->e[i].fd != -1)
			continue;
		ev.data.u32 = i;
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			return -1;
		l->e[i] = (struct eventloop_entry){ .fd = fd, .fn = fn, .opaque = opaque };
		return 0;
	}
	errno = ENOSPC;
	return -1;
}

void eventloop_del(struct eventloop *l, int fd)
{
	for (int i = 0; i < EVENTLOOP_MAX; i++)
		if (l->e[i].fd == fd) {
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
			l->e[i].fd = -1;
		}
}

static void *eventloop_thread(void *arg)
{
	struct eventloop *l = arg;
	struct epoll_event evs[16];

	seccomp_thread_enter(SECCOMP_EVENT);
	for (;;) {
		int n = epoll_wait(l->epfd, evs, 16, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("event loop: epoll_wait: %m");
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint32_t idx = evs[i].data.u32;
			struct eventloop_entry *en;

			if (idx == UINT32_MAX)
				return NULL;   /* stop requested */
			en = &l->e[idx];
			if (en->fd >= 0 && en->fn(en->fd, evs[i].events, en->opaque) < 0)
				eventloop_del(l, en->fd);
		}
	}
}

int eventloop_start(struct eventloop *l)
{
	if (pthread_create(&l->thread, NULL, eventloop_thread, l))
		return -1;
	l->running = true;
	return 0;
}

void eventloop_stop(struct eventloop *l)
{
	uint64_t one = 1;

	if (!l->running)
		return;
	if (write(l->stopfd, &one, sizeof(one)) < 0)
		log_error("event loop: cannot signal stop: %m");
	pthread_join(l->thread, NULL);
	l->running = false;
}
