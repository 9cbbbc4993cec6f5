/* stream.c - the text of a task as it is generated (producer: the scheduler thread's on_token
 * hook) and the Server-Sent Events reply that sends it (consumer: the connection's thread).
 * stream.h says who does what; the events' shapes come from the endpoint (openai.c, and the
 * one below for /v1/answer and /v1/retrieve). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json_text.h"
#include "base/log.h"
#include "stream.h"

struct srv_stream {
    pthread_mutex_t *mu; /* the queue's mutex: guards what follows "under mu" */
    pthread_cond_t *cv;  /* the task's: signalled on new text and when the task ends */
    const clara_model *model;
    char *stops[SRV_STREAM_MAX_STOPS];
    size_t stop_len[SRV_STREAM_MAX_STOPS], n_stops;
    /* under mu */
    char *text; /* released so far: a prefix of the answer */
    size_t len, cap;
    bool started; /* the first id was generated */
    bool stopped; /* a stop sequence matched: text is the whole answer */
};

int srv_stream_attach(srv_server *s, srv_task *t) {
    srv_stream *st = calloc(1, sizeof *st);
    if (!st) return -1;
    st->mu = &s->queue.mu;
    st->cv = &t->cv;
    t->stream = st;
    return 0;
}

int srv_stream_add_stop(srv_stream *st, const char *text, size_t len) {
    if (st->n_stops == SRV_STREAM_MAX_STOPS || len == 0 || len > SRV_STREAM_MAX_STOP_BYTES)
        return -1;
    char *c = malloc(len);
    if (!c) return -1;
    memcpy(c, text, len);
    st->stops[st->n_stops] = c;
    st->stop_len[st->n_stops++] = len;
    return 0;
}

void srv_stream_free(srv_stream *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_stops; i++) free(st->stops[i]);
    free(st->text);
    free(st);
}

void srv_stream_bind(srv_stream *st, const clara_model *m) {
    st->model = m;
}

/* ---- the producer ------------------------------------------------------------------------- */

/* The first occurrence of needle[0..n) in text[0..len), or NULL (memmem is a GNU extension). */
static const char *find_bytes(const char *text, size_t len, const char *needle, size_t n) {
    for (const char *p = text; n && (size_t)(p - text) + n <= len; p++) {
        p = memchr(p, needle[0], len - n + 1 - (size_t)(p - text));
        if (!p) return NULL;
        if (memcmp(p, needle, n) == 0) return p;
    }
    return NULL;
}

/* Where the earliest stop sequence begins in text[0..len), or len when none does. */
static size_t find_stop(const srv_stream *st, const char *text, size_t len) {
    size_t at = len;
    for (size_t i = 0; i < st->n_stops; i++) {
        const char *p = find_bytes(text, len, st->stops[i], st->stop_len[i]);
        if (p && (size_t)(p - text) < at) at = (size_t)(p - text);
    }
    return at;
}

/* The longest suffix of text[0..len) that is a proper prefix of a stop sequence: held back until
 * the next ids say whether the sequence follows. */
static size_t held_back(const srv_stream *st, const char *text, size_t len) {
    size_t most = 0;
    for (size_t i = 0; i < st->n_stops; i++) {
        size_t k = st->stop_len[i] - 1 < len ? st->stop_len[i] - 1 : len;
        for (; k > most; k--)
            if (memcmp(text + len - k, st->stops[i], k) == 0) break;
        if (k > most) most = k;
    }
    return most;
}

/* Appends text[st->len..upto) (under mu). The decoded text of more ids extends that of fewer;
 * should it not, nothing more is released and the end sends the engine's text. */
static void release(srv_stream *st, const char *text, size_t upto) {
    if (upto <= st->len || memcmp(text, st->text ? st->text : "", st->len) != 0) return;
    if (upto > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < upto) cap *= 2;
        char *p = realloc(st->text, cap);
        if (!p) return; /* the end sends the rest */
        st->text = p;
        st->cap = cap;
    }
    memcpy(st->text + st->len, text + st->len, upto - st->len);
    st->len = upto;
}

bool srv_stream_on_token(void *arg, const int32_t *ids, size_t n_ids) {
    srv_stream *st = arg;
    char *text = NULL;
    size_t len = 0;
    /* only text the next ids cannot change goes out; a failed decode releases nothing now: the
     * end sends the engine's own text */
    bool decoded =
        st->model && clara_detokenize_stable(st->model, ids, n_ids, &text, &len) == CLARA_OK;
    size_t stable = decoded ? len : 0;
    size_t stop_at = decoded ? find_stop(st, text, stable) : 0;
    bool stop = decoded && stop_at < stable;
    pthread_mutex_lock(st->mu);
    st->started = true;
    if (stop) { /* the answer ends before the stop sequence: exactly that text, whatever came */
        st->len = 0;
        release(st, text, stop_at);
        st->stopped = st->len == stop_at;
    } else if (decoded) {
        release(st, text, stable - held_back(st, text, stable));
    }
    pthread_cond_broadcast(st->cv);
    pthread_mutex_unlock(st->mu);
    free(text);
    return !stop;
}

const char *srv_stream_answer(const srv_task *t, size_t *len, const char **finish_reason) {
    const srv_stream *st = t->stream;
    if (st && st->stopped) { /* read after the task ended: the producer is done */
        *len = st->len;
        *finish_reason = "stop";
        return st->text ? st->text : "";
    }
    const char *text = t->gen.text ? t->gen.text : "";
    *len = t->gen.text ? t->gen.text_len : 0;
    *finish_reason = t->gen.finish == CLARA_FINISH_LENGTH ? "length" : "stop";
    return text;
}

/* ---- running a streamed task ---------------------------------------------------------------- */

static void deadline_in(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += ms * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

#define POLL_MS 50 /* how often a waiting connection checks its client and the deadline */

int srv_stream_run(srv_server *s, srv_task *t, bool (*alive)(void *), void *arg, srv_reply *r) {
    if (srv_submit(s, t, r) != 0) return -2;
    double deadline = t->deadline;
    int why = 0; /* 1: the client left, 2: timed out */
    pthread_mutex_lock(&s->queue.mu);
    while (!t->done && !t->stream->started) {
        struct timespec ts;
        deadline_in(&ts, POLL_MS);
        pthread_cond_timedwait(&t->cv, &s->queue.mu, &ts);
        if (t->done || t->stream->started) break;
        pthread_mutex_unlock(&s->queue.mu); /* alive() is a syscall: not under the lock */
        why = alive && !alive(arg) ? 1 : srv_mono() > deadline ? 2 : 0;
        pthread_mutex_lock(&s->queue.mu);
        if (why && !t->done) {
            atomic_store(&t->cancelled, true);
            break;
        }
        why = 0;
    }
    bool failed = t->done && t->status != 200;
    pthread_mutex_unlock(&s->queue.mu);
    if (why == 1) {
        srv_reply_error(r, 499, "client_closed", "the client went away");
    } else if (why == 2) {
        srv_reply_error(r, 504, "timeout", "the request did not finish within %d s",
                        s->cfg.request_timeout);
    } else if (failed) {
        srv_reply_error(r, t->status, t->error_type ? t->error_type : "error", "%s", t->error);
        if (t->status == 503) r->retry_after = 1;
    }
    return why || failed ? -1 : 0;
}

/* ---- the SSE reply ------------------------------------------------------------------------- */

struct srv_sse {
    srv_server *s;
    srv_task *t;
    const srv_sse_kind *kind;
    void *arg;
    bool (*alive)(void *);
    void *alive_arg;
    double t0, deadline;
    size_t sent; /* bytes of the answer sent as deltas */
    bool began;  /* the first event is out */
    bool ended;  /* [DONE] is queued: what is in out is the rest */
    bool gone;   /* the client left */
    char *out;   /* bytes to send: out[off..len) */
    size_t off, len, cap;
    uint64_t *tokens_out; /* where the tokens generated go when the task is done (the log) */
};

void srv_sse_count_into(srv_sse *e, uint64_t *tokens) {
    e->tokens_out = tokens;
}

srv_sse *srv_sse_new(srv_server *s, srv_task *t, const srv_sse_kind *kind, void *arg,
                     bool (*alive)(void *), void *alive_arg, double t0) {
    srv_sse *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->s = s;
    e->t = t;
    e->kind = kind;
    e->arg = arg;
    e->alive = alive;
    e->alive_arg = alive_arg;
    e->t0 = t0;
    e->deadline = t->deadline;
    pthread_mutex_lock(&s->queue.mu);
    t->refs++; /* the reply's own: it outlives the handler */
    pthread_mutex_unlock(&s->queue.mu);
    return e;
}

void srv_sse_free(srv_sse *e) {
    if (!e) return;
    /* a reply dropped before its end (the client left): nobody wants the rest */
    if (!e->ended) atomic_store(&e->t->cancelled, true);
    if (e->kind->free) e->kind->free(e->arg);
    srv_task_release(e->t);
    free(e->out);
    free(e);
}

static void put(srv_sse *e, const char *data, size_t n) {
    if (e->len + n > e->cap) {
        size_t cap = e->cap ? e->cap : 1024;
        while (cap < e->len + n) cap *= 2;
        char *p = realloc(e->out, cap);
        if (!p) return; /* a lost event; the stream still ends with [DONE] when that fits */
        e->out = p;
        e->cap = cap;
    }
    memcpy(e->out + e->len, data, n);
    e->len += n;
}

/* Sends j as one event and frees it. */
static void put_event(srv_sse *e, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return;
    put(e, "data: ", 6);
    put(e, s, strlen(s));
    put(e, "\n\n", 2);
    free(s);
}

static void put_done(srv_sse *e) {
    put(e, "data: [DONE]\n\n", 14);
    e->ended = true;
}

/* An error after the stream began: OpenAI's error object as an event, then [DONE]. */
static void put_error(srv_sse *e, int status, const char *type, const char *msg) {
    cJSON *j = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(err, "message", msg);
    cJSON_AddStringToObject(err, "type", status >= 500 ? "server_error" : "invalid_request_error");
    cJSON_AddNullToObject(err, "param");
    cJSON_AddStringToObject(err, "code", type);
    cJSON_AddNumberToObject(j, "status", status);
    put_event(e, j);
    put_done(e);
    srv_count_request(e->s, false, (srv_mono() - e->t0) * 1e3);
    clara_log(CLARA_LOG_INFO, "streamed reply ended by an error %d: %s", status, msg);
}

static void put_delta(srv_sse *e, const char *text, size_t n) {
    if (n) put_event(e, e->kind->delta(e->arg, text, n));
}

/* The task ended: the rest of its answer and the final events, or the error. */
static void put_end(srv_sse *e) {
    srv_task *t = e->t;
    if (t->status != 200) {
        put_error(e, t->status, t->error_type ? t->error_type : "error", t->error);
        return;
    }
    size_t len;
    const char *finish;
    const char *text = srv_stream_answer(t, &len, &finish);
    if (len >= e->sent && memcmp(text, t->stream->text ? t->stream->text : "", e->sent) == 0)
        put_delta(e, text + e->sent, len - e->sent);
    else /* cannot happen while decoding more ids only extends the text; said if it does */
        CLARA_LOGW("streamed text is not a prefix of the answer; the rest was not sent");
    cJSON *events = cJSON_CreateArray();
    e->kind->last(e->arg, t, finish, events);
    while (events && events->child) put_event(e, cJSON_DetachItemViaPointer(events, events->child));
    cJSON_Delete(events);
    put_done(e);
    srv_count_request(e->s, true, (srv_mono() - e->t0) * 1e3);
}

/* Waits (at most POLL_MS) for more of the answer or the task's end and queues what there is. */
static void produce(srv_sse *e) {
    srv_task *t = e->t;
    srv_stream *st = t->stream;
    pthread_mutex_lock(&e->s->queue.mu);
    if (!t->done && st->len <= e->sent) {
        struct timespec ts;
        deadline_in(&ts, POLL_MS);
        pthread_cond_timedwait(&t->cv, &e->s->queue.mu, &ts);
    }
    bool done = t->done;
    char *piece = NULL;
    size_t n = 0;
    if (!done && st->len > e->sent && (piece = malloc(st->len - e->sent))) {
        n = st->len - e->sent;
        memcpy(piece, st->text + e->sent, n);
    }
    pthread_mutex_unlock(&e->s->queue.mu);
    if (!e->began && e->kind->first) put_event(e, e->kind->first(e->arg));
    e->began = true;
    if (done) {
        put_end(e); /* the task is done: its fields are no longer written */
        if (e->tokens_out) *e->tokens_out = t->gen.n_ids;
    } else if (n) {
        put_delta(e, piece, n);
        e->sent += n;
    } else if (e->alive && !e->alive(e->alive_arg)) {
        atomic_store(&t->cancelled, true); /* the scheduler drops it within a step */
        e->gone = true;
    } else if (srv_mono() > e->deadline) {
        atomic_store(&t->cancelled, true);
        char msg[96];
        snprintf(msg, sizeof msg, "the request did not finish within %d s",
                 e->s->cfg.request_timeout);
        put_error(e, 504, "timeout", msg);
    }
    free(piece);
}

ssize_t srv_sse_read(srv_sse *e, char *buf, size_t max) {
    while (e->off == e->len) {
        if (e->ended) return 0;
        if (e->gone) return -1;
        e->off = e->len = 0;
        produce(e);
    }
    size_t n = e->len - e->off < max ? e->len - e->off : max;
    memcpy(buf, e->out + e->off, n);
    e->off += n;
    return (ssize_t)n;
}

int srv_stream_wanted(cJSON *root, srv_reply *r) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) {
        srv_reply_error(r, 422, "validation_error", "'stream' must be true or false");
        return -1;
    }
    return cJSON_IsTrue(v) ? 1 : 0;
}

/* ---- /v1/answer and /v1/retrieve streamed -----------------------------------------------------
 */

typedef struct {
    void (*result)(const srv_server *s, const srv_task *t, double latency_ms, srv_reply *r);
    const srv_server *s;
    double t0;
} ours_arg;

/* j's "choices": [{"index": 0}], the choice returned for the caller to fill. */
static cJSON *add_choice(cJSON *j) {
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    return choice;
}

static cJSON *ours_delta(void *arg, const char *text, size_t len) {
    (void)arg;
    cJSON *j = cJSON_CreateObject();
    cJSON *choice = add_choice(j);
    cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
    json_add_text(delta, "content", text, len);
    cJSON_AddNullToObject(choice, "finish_reason");
    return j;
}

/* The final event: the non-streamed reply's object, with the finishing choice. */
static void ours_last(void *arg, const srv_task *t, const char *finish, cJSON *events) {
    ours_arg *a = arg;
    srv_reply r = {0};
    a->result(a->s, t, (srv_mono() - a->t0) * 1e3, &r);
    cJSON *j = r.body ? cJSON_Parse(r.body) : NULL;
    free(r.body);
    if (!j) return;
    cJSON *choice = add_choice(j);
    cJSON_AddObjectToObject(choice, "delta");
    cJSON_AddStringToObject(choice, "finish_reason", finish);
    cJSON_AddItemToArray(events, j);
}

/* The first event, as soon as the first token exists (its text may come with a later one: a
 * lone space, a part of a UTF-8 sequence): a delta with the role, as OpenAI's streams begin. */
static cJSON *ours_first(void *arg) {
    (void)arg;
    cJSON *j = cJSON_CreateObject();
    cJSON *choice = add_choice(j);
    cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
    cJSON_AddStringToObject(delta, "role", "assistant");
    cJSON_AddStringToObject(delta, "content", "");
    cJSON_AddNullToObject(choice, "finish_reason");
    return j;
}

static const srv_sse_kind k_ours = {ours_first, ours_delta, ours_last, free};

int srv_stream_ours(srv_server *s, srv_task *t, double t0, bool (*alive)(void *), void *arg,
                    void (*result)(const srv_server *s, const srv_task *t, double latency_ms,
                                   srv_reply *r),
                    srv_reply *r) {
    ours_arg *a = malloc(sizeof *a);
    if (!a || srv_stream_attach(s, t) != 0) {
        free(a);
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    *a = (ours_arg){result, s, t0};
    int rc = srv_stream_run(s, t, alive, arg, r);
    if (rc != 0) {
        free(a);
        return rc;
    }
    r->sse = srv_sse_new(s, t, &k_ours, a, alive, arg, t0);
    if (!r->sse) {
        free(a);
        atomic_store(&t->cancelled, true);
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    r->status = 200;
    r->content_type = "text/event-stream";
    return 0;
}
