/* stream.h - a task's answer as it is generated, and the Server-Sent Events reply that carries it
 * (stream.c).
 *
 * Producer: the scheduler thread. The task's on_token hook decodes the ids so far, applies the
 * stop sequences and releases the text that can no longer change: never a trailing incomplete
 * UTF-8 sequence (it decodes as U+FFFD until complete), never a suffix that could begin a stop
 * sequence. A stop sequence that appears ends the request there, the stop text excluded.
 * Consumer: the connection thread, which turns what was released into events. Both use the
 * queue's mutex and the task's condition variable, so the consumer waits for text and for the
 * task's end in one place. */
#ifndef CLARA_SERVER_STREAM_H
#define CLARA_SERVER_STREAM_H

#include <sys/types.h>

#include "server.h"

#define SRV_STREAM_MAX_STOPS      4    /* OpenAI's limit */
#define SRV_STREAM_MAX_STOP_BYTES 1024 /* per stop sequence */

typedef struct srv_stream srv_stream;

/* A stream for task t (t->stream takes it). -1 when out of memory. */
int srv_stream_attach(srv_server *s, srv_task *t);
/* Adds a stop sequence (1..SRV_STREAM_MAX_STOP_BYTES bytes, at most SRV_STREAM_MAX_STOPS). */
int srv_stream_add_stop(srv_stream *st, const char *text, size_t len);
void srv_stream_free(srv_stream *st);

/* After the task succeeded: the whole answer (cut before the stop sequence that ended it, else
 * the engine's text) and OpenAI's finish_reason for it ("stop" or "length"). */
const char *srv_stream_answer(const srv_task *t, size_t *len, const char **finish_reason);

/* Queues t and waits until its first token was generated or it ended. 0: go on streaming (or it
 * succeeded already); -1 with *r filled (an error before the stream began keeps its HTTP
 * status); -2 when it was refused before queueing (shutting down, queue full). */
int srv_stream_run(srv_server *s, srv_task *t, bool (*alive)(void *), void *arg, srv_reply *r);

/* How one endpoint shapes its events (each a JSON object, sent as "data: {json}\n\n"). */
typedef struct {
    cJSON *(*first)(void *arg);                               /* before any text, or NULL */
    cJSON *(*delta)(void *arg, const char *text, size_t len); /* a piece of the answer */
    /* After the last piece: appends the final events (finish_reason, usage, our fields). */
    void (*last)(void *arg, const srv_task *t, const char *finish_reason, cJSON *events);
    void (*free)(void *arg);
} srv_sse_kind;

typedef struct srv_sse srv_sse;

/* The SSE reply of a task srv_stream_run started (takes a reference to t, and arg). Its events:
 * first, deltas, last, then "data: [DONE]"; an error after the stream began is an event
 * {"error": {...}} and [DONE]. alive() is polled while waiting; a client that left, or the
 * request timeout, cancels the task. */
srv_sse *srv_sse_new(srv_server *s, srv_task *t, const srv_sse_kind *kind, void *arg,
                     bool (*alive)(void *), void *alive_arg, double t0);
/* Copies up to max bytes of the reply into buf, waiting for them. Returns the count, 0 at the
 * end, or -1 when the client left (the connection is to be closed). */
ssize_t srv_sse_read(srv_sse *e, char *buf, size_t max);
/* Where the reply writes the number of tokens generated once its task is done (read only while
 * the reply is being sent: the request's log line). */
void srv_sse_count_into(srv_sse *e, uint64_t *tokens);
void srv_sse_free(srv_sse *e);

/* "stream": true|false in a request (false when absent or null). 1, 0, or -1 with *r filled. */
int srv_stream_wanted(cJSON *root, srv_reply *r);

/* POST /v1/answer and /v1/retrieve with "stream": true: runs t and sets r->sse, whose final
 * event holds what result() puts in the non-streamed reply. Returns srv_run_task's codes. */
int srv_stream_ours(srv_server *s, srv_task *t, double t0, bool (*alive)(void *), void *arg,
                    void (*result)(const srv_server *s, const srv_task *t, double latency_ms,
                                   srv_reply *r),
                    srv_reply *r);

#endif
