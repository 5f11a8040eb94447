/*
 * api_events.c - the API's event log: GET /v1/events, a page of the log
 * or (follow=true) a stream.
 *
 * Events are written by the lifecycle and the supervisor (host_event_locked,
 * host_persist_locked) into the database in the same transaction as the
 * change they tell of, and host->last_event_id is raised under host->lock;
 * this file only reads them back.
 *
 * Event stream (GET /v1/events?follow=true): newline-delimited JSON, one
 * event per line, from the database; the reader blocks on host->event_cond,
 * sending an empty line every 15 s so a vanished client is noticed.  Ids
 * only grow, so a client that reconnects with since=LAST misses nothing the
 * database still keeps (db.c trims the oldest).
 *
 * A stream holds no reference on a VM and no lock between reads; it reads
 * only host->db and the event counters, which outlive it: api_stop sets
 * host->stopping (every stream ends) and stops libmicrohttpd before
 * host_close closes the database.
 */
#include "host/api.h"

#include <errno.h>
#include <jansson.h>
#include "base/mhd_dl.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/spec.h"

#define EVENTS_BATCH 64
#define EVENTS_HEARTBEAT_S 15

/* ---- events ---- */

/* One event as JSON. */
static json_t *api_event_json(const struct db_event *ev)
{
	char t[64];
	json_t *d = ev->detail ? json_loads(ev->detail, 0, NULL) : NULL;

	host_format_time(ev->ts_ms, t, sizeof(t));
	return json_pack("{s:I, s:s, s:s, s:s, s:o}", "id", (json_int_t)ev->id, "time", t,
			 "vm", ev->vm, "type", ev->type, "detail", d ? d : json_object());
}

struct event_stream {
	struct host *h;
	int64_t last;           /* last id sent (or skipped) */
	char vm[HOST_NAME_MAX_LEN + 1];
	char *pending;          /* formatted lines not yet handed to MHD */
	size_t len, off;
};

/* Fetch the next batch into s->pending; 0 if none (s->last advanced). */
static size_t event_stream_fetch(struct event_stream *s)
{
	struct db_event evs[EVENTS_BATCH];
	int64_t seen;
	char *line;
	int n;

	pthread_mutex_lock(&s->h->lock);
	seen = s->h->last_event_id;
	pthread_mutex_unlock(&s->h->lock);
	n = db_events_since(s->h->db, s->last, s->vm[0] ? s->vm : NULL, evs, EVENTS_BATCH);
	free(s->pending);
	s->pending = NULL;
	s->len = s->off = 0;
	for (int i = 0; i < n; i++) {
		json_t *j = api_event_json(&evs[i]);
		line = api_json_text(j);
		json_decref(j);
		if (line) {
			size_t l = strlen(line);
			char *p = realloc(s->pending, s->len + l + 1);
			if (p) {
				s->pending = p;
				memcpy(p + s->len, line, l);
				p[s->len + l] = '\n';
				s->len += l + 1;
			}
			free(line);
		}
		s->last = evs[i].id;
		db_event_free(&evs[i]);
	}
	if (n <= 0 && seen > s->last)
		s->last = seen;
	return s->len;
}

/* Block until an event newer than s->last, shutdown, or the heartbeat. */
static bool event_stream_wait(struct event_stream *s)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += EVENTS_HEARTBEAT_S;
	pthread_mutex_lock(&s->h->lock);
	while (s->h->last_event_id <= s->last && !s->h->stopping)
		if (pthread_cond_timedwait(&s->h->event_cond, &s->h->lock, &ts) == ETIMEDOUT)
			break;
	stop = s->h->stopping;
	pthread_mutex_unlock(&s->h->lock);
	return stop;
}

/* libmicrohttpd's content reader for the stream. */
static ssize_t event_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct event_stream *s = cls;
	size_t n;

	while (s->off == s->len) {
		if (event_stream_fetch(s))
			break;
		if (event_stream_wait(s))
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (s->h->last_event_id <= s->last) {
			buf[0] = '\n';             /* heartbeat */
			return 1;
		}
	}
	n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(buf, s->pending + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

/* libmicrohttpd is done with the stream. */
static void event_stream_free(void *cls)
{
	struct event_stream *s = cls;

	free(s->pending);
	free(s);
}

/* The follow=true case. */
static int api_events_follow(struct api_call *c, int64_t since, const char *vm)
{
	struct event_stream *s = calloc(1, sizeof(*s));
	struct MHD_Response *r;
	int ret;

	if (!s)
		return MHD_NO;
	s->h = c->h;
	s->last = since;
	snprintf(s->vm, sizeof(s->vm), "%s", vm ? vm : "");
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, event_stream_read, s,
					      event_stream_free);
	if (!r) {
		free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/x-ndjson");
	ret = MHD_queue_response(c->conn, 200, r);
	api_access_log(c, 200, 0);
	MHD_destroy_response(r);
	return ret;
}

/* GET /v1/events: a page of the log, or (follow=true) the stream. */
int api_events(struct api_call *c)
{
	const char *q_since = api_query(c, "since"), *q_vm = api_query(c, "vm");
	const char *q_limit = api_query(c, "limit"), *q_follow = api_query(c, "follow");
	struct db_event *evs;
	long long since = -1, limit = 100;
	int follow = 0, n;
	struct api_err e;
	json_t *arr;

	if ((q_since && (since = api_parse_uint(q_since, INT64_MAX)) < 0) ||
	    (q_limit && ((limit = api_parse_uint(q_limit, EVENTS_BATCH * 16)) <= 0)) ||
	    (q_follow && (follow = api_parse_bool(q_follow)) < 0) ||
	    (q_vm && !host_name_valid(q_vm))) {
		api_err_set(&e, 400, "invalid_request",
			    "events: since must be an event id, limit 1 to %d, follow true or false, vm a VM name",
			    EVENTS_BATCH * 16);
		return api_reply_error(c, &e);
	}
	if (follow) {
		if (since < 0) {        /* from now on */
			pthread_mutex_lock(&c->h->lock);
			since = c->h->last_event_id;
			pthread_mutex_unlock(&c->h->lock);
		}
		return api_events_follow(c, since, q_vm);
	}
	evs = calloc((size_t)limit, sizeof(*evs));
	n = evs ? db_events_since(c->h->db, since < 0 ? 0 : since, q_vm, evs, (int)limit) : -1;
	if (n < 0) {
		free(evs);
		api_err_set(&e, 500, "internal", "events: cannot read the store");
		return api_reply_error(c, &e);
	}
	arr = json_array();
	for (int i = 0; i < n; i++) {
		json_array_append_new(arr, api_event_json(&evs[i]));
		db_event_free(&evs[i]);
	}
	since = n ? evs[n - 1].id : (since < 0 ? 0 : since);
	free(evs);
	return api_reply_json(c, 200, json_pack("{s:o, s:I}", "events", arr, "last_id",
						(json_int_t)since));
}
