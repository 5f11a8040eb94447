/*
 * eventloop.h - the VMM's host-event thread: epoll over file descriptors.
 *
 * Devices and the console register fds with a callback; the loop thread
 * sleeps in epoll_wait and never polls.  Timers are timerfds registered
 * the same way.  eventloop_stop() wakes the thread through an eventfd.
 * Callbacks run on the loop thread, one at a time.
 */
#ifndef SHOAL_BASE_EVENTLOOP_H
#define SHOAL_BASE_EVENTLOOP_H

#include <stdint.h>

struct eventloop;

/* Called with the fd's epoll events.  Return 0 to keep the fd, -1 to
 * remove it from the loop. */
typedef int (*eventloop_fn)(int fd, uint32_t events, void *opaque);

struct eventloop *eventloop_new(void);
void eventloop_free(struct eventloop *l);

/* Watch `fd` for `events` (EPOLLIN...). 0 or -1 with errno. */
int eventloop_add(struct eventloop *l, int fd, uint32_t events, eventloop_fn fn, void *opaque);
void eventloop_del(struct eventloop *l, int fd);

/* Start the loop thread; stop and join it. */
int eventloop_start(struct eventloop *l);
void eventloop_stop(struct eventloop *l);

#endif
