/* openai.c - the OpenAI-compatible endpoints: GET /v1/models, POST /v1/chat/completions and
 * POST /v1/completions, in OpenAI's reply shapes (chat.completion, chat.completion.chunk,
 * text_completion) and error shape, streamed as Server-Sent Events when asked (stream.c). The
 * request is read by openai_request.c; docs/API.md "OpenAI-compatible API" says what is
 * supported. Our own figures go in an extension object "clara" that OpenAI clients ignore. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_text.h"
#include "openai.h"
#include "stream.h"

bool srv_openai_endpoint(srv_endpoint ep) {
    return ep == SRV_EP_OAI_MODELS || ep == SRV_EP_OAI_CHAT || ep == SRV_EP_OAI_COMPLETIONS;
}

/* ---- errors --------------------------------------------------------------------------------- */

static const char *error_type(int status) {
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static void error_reply(srv_reply *r, int status, const char *param, const char *code,
                        const char *msg) {
    cJSON *j = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", code);
    free(r->body);
    r->body = NULL;
    srv_reply_json(r, status, j);
    snprintf(r->note, sizeof r->note, "%.*s", (int)sizeof r->note - 1, msg);
}

void srv_openai_error(srv_reply *r, int status, const char *param, const char *code,
                      const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_reply(r, status, param, code, msg);
}

void srv_openai_error_shape(srv_reply *r) {
    if (r->status < 400 || !r->body) return;
    cJSON *j = cJSON_Parse(r->body);
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "error");
    cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "error_type");
    if (cJSON_IsString(msg) && cJSON_IsString(type)) /* ours; an OpenAI-shaped one stays */
        error_reply(r, r->status, NULL, type->valuestring, msg->valuestring);
    cJSON_Delete(j);
}

/* ---- replies -------------------------------------------------------------------------------- */

/* id, object, created, model, system_fingerprint: the head of every reply and chunk. */
static cJSON *head(srv_server *s, const oai_req *q, const char *object) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", q->id);
    cJSON_AddStringToObject(j, "object", object);
    cJSON_AddNumberToObject(j, "created", floor(q->created));
    cJSON_AddStringToObject(j, "model", s->info.name);
    char fp[32];
    snprintf(fp, sizeof fp, "clara-%.16s", s->info.fingerprint);
    cJSON_AddStringToObject(j, "system_fingerprint", fp);
    return j;
}

static cJSON *usage(const srv_task *t) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", t->gen.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)t->gen.n_ids);
    cJSON_AddNumberToObject(u, "total_tokens", (double)t->gen.prompt_tokens + t->gen.n_ids);
    return u;
}

static double ms2(double v) {
    return round(v * 100) / 100;
}

/* Our figures: the context used, the seed (to replay a sampled answer), the phases' times. */
static cJSON *clara_fields(const oai_req *q, const srv_task *t) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "context",
                            q->collection ? "collection"
                            : q->n_docs   ? "documents"
                                          : "none");
    if (q->n_docs) {
        cJSON_AddNumberToObject(c, "documents", (double)q->n_docs);
        cJSON_AddNumberToObject(c, "documents_from_cache", (double)q->n_cached);
    }
    if (q->collection) {
        cJSON_AddStringToObject(c, "collection", q->collection);
        for (cJSON *m = q->memories ? q->memories->child : NULL; m; m = m->next)
            cJSON_AddItemToObject(c, m->string, cJSON_Duplicate(m, true));
    }
    cJSON_AddNumberToObject(c, "seed", (double)t->seed);
    cJSON *tm = cJSON_AddObjectToObject(c, "timings");
    cJSON_AddNumberToObject(tm, "queue_ms", ms2(t->queue_ms));
    cJSON_AddNumberToObject(tm, "load_ms", ms2(t->load_ms));
    /* documents not in the cache were compressed by a task of their own, before this one */
    cJSON_AddNumberToObject(tm, "compress_ms", ms2(t->compress_ms + q->docs_compress_ms));
    cJSON_AddNumberToObject(tm, "generate_ms", ms2(t->generate_ms));
    cJSON_AddNumberToObject(tm, "prefill_ms", ms2(t->gen.prefill_ms)); /* generate_ms's two parts */
    cJSON_AddNumberToObject(tm, "decode_ms", ms2(t->gen.decode_ms));
    if (q->collection) {
        cJSON_AddNumberToObject(tm, "recompress_ms", ms2(q->select_ms[0]));
        cJSON_AddNumberToObject(tm, "query_ms", ms2(q->select_ms[1]));
        cJSON_AddNumberToObject(tm, "rank_ms", ms2(q->select_ms[2]));
    }
    cJSON_AddNumberToObject(tm, "total_ms", ms2((srv_mono() - q->t0) * 1e3));
    return c;
}

static cJSON *text_of(const char *text, size_t len) {
    cJSON *j = json_text(text, len);
    return j ? j : cJSON_CreateString("");
}

/* A choice: chat {"index", "message" or "delta", "logprobs", "finish_reason"}, completions
 * {"text", "index", "logprobs", "finish_reason"}. content NULL: an empty delta. */
static cJSON *choice(const oai_req *q, const char *key, cJSON *content, const char *role,
                     const char *finish) {
    cJSON *c = cJSON_CreateObject();
    if (q->chat) {
        cJSON_AddNumberToObject(c, "index", 0);
        cJSON *m = cJSON_AddObjectToObject(c, key);
        if (role) cJSON_AddStringToObject(m, "role", role);
        if (content) cJSON_AddItemToObject(m, "content", content);
    } else {
        cJSON_AddItemToObject(c, "text", content ? content : cJSON_CreateString(""));
        cJSON_AddNumberToObject(c, "index", 0);
    }
    cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

static void whole_reply(srv_server *s, const oai_req *q, const srv_task *t, srv_reply *r) {
    size_t len;
    const char *finish;
    const char *text = srv_stream_answer(t, &len, &finish);
    cJSON *j = head(s, q, q->chat ? "chat.completion" : "text_completion");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"),
                         choice(q, "message", text_of(text, len), "assistant", finish));
    cJSON_AddItemToObject(j, "usage", usage(t));
    cJSON_AddItemToObject(j, "clara", clara_fields(q, t));
    r->tokens = t->gen.n_ids;
    srv_reply_json(r, 200, j);
}

/* ---- streamed replies ----------------------------------------------------------------------- */

typedef struct {
    srv_server *s;
    oai_req q;
} oai_stream;

static cJSON *chunk(const oai_stream *a, cJSON *choice_or_null) {
    cJSON *j = head(a->s, &a->q, a->q.chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(j, "choices");
    if (choice_or_null) cJSON_AddItemToArray(choices, choice_or_null);
    if (a->q.include_usage) cJSON_AddNullToObject(j, "usage"); /* as OpenAI: only the last */
    return j;
}

/* Chat: the first chunk says who speaks; completions have none. */
static cJSON *stream_first(void *arg) {
    oai_stream *a = arg;
    if (!a->q.chat) return NULL;
    return chunk(a, choice(&a->q, "delta", cJSON_CreateString(""), "assistant", NULL));
}

static cJSON *stream_delta(void *arg, const char *text, size_t len) {
    oai_stream *a = arg;
    return chunk(a, choice(&a->q, "delta", text_of(text, len), NULL, NULL));
}

static void stream_last(void *arg, const srv_task *t, const char *finish, cJSON *events) {
    oai_stream *a = arg;
    cJSON *j = chunk(a, choice(&a->q, "delta", NULL, NULL, finish));
    cJSON_AddItemToObject(j, "clara", clara_fields(&a->q, t));
    cJSON_AddItemToArray(events, j);
    if (!a->q.include_usage) return;
    j = chunk(a, NULL);
    cJSON_ReplaceItemInObjectCaseSensitive(j, "usage", usage(t));
    cJSON_AddItemToArray(events, j);
}

static void stream_free(void *arg) {
    oai_stream *a = arg;
    cJSON_Delete(a->q.memories);
    free(a);
}

static const srv_sse_kind k_stream = {stream_first, stream_delta, stream_last, stream_free};

/* ---- the endpoints -------------------------------------------------------------------------- */

static void make_id(oai_req *q) {
    static atomic_uint counter;
    unsigned n = atomic_fetch_add(&counter, 1);
    snprintf(q->id, sizeof q->id, "%s-%08llx%08x", q->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)(srv_now() * 1e3) & 0xffffffffull, n);
}

/* Runs the task: the whole reply, or the SSE reply from its first token on. Returns
 * srv_run_task's codes; a stream that began is counted when it ends. */
static int run(srv_server *s, srv_task *t, oai_stream *a, bool (*alive)(void *), void *arg,
               srv_reply *r, bool *streaming) {
    if (!a->q.stream) {
        int rc = srv_run_task(s, t, alive, arg, r);
        if (rc == 0) whole_reply(s, &a->q, t, r);
        return rc;
    }
    int rc = srv_stream_run(s, t, alive, arg, r);
    if (rc != 0) return rc;
    r->sse = srv_sse_new(s, t, &k_stream, a, alive, arg, a->q.t0);
    if (!r->sse) {
        atomic_store(&t->cancelled, true);
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    *streaming = true;
    r->status = 200;
    r->content_type = "text/event-stream";
    return 0;
}

static void completion(srv_server *s, srv_endpoint ep, const char *body, size_t len,
                       bool (*alive)(void *), void *arg, srv_reply *r) {
    double t0 = srv_mono();
    srv_task *t = srv_task_new(ep);
    oai_stream *a = calloc(1, sizeof *a);
    if (!t || !a) {
        if (t) srv_task_release(t);
        free(a);
        srv_openai_error(r, 500, NULL, "out_of_memory", "out of memory");
        return;
    }
    t->deadline = t0 + s->cfg.request_timeout;
    a->s = s;
    a->q.chat = ep == SRV_EP_OAI_CHAT;
    a->q.t0 = t0;
    a->q.created = srv_now();
    make_id(&a->q);
    bool streaming = false;
    if (srv_parse_body(s, body, len, t0, alive, arg, &t->root, r) == 0 &&
        srv_openai_parse(s, t, &a->q, r) == 0) {
        int rc = srv_openai_context(s, t, &a->q, alive, arg, r);
        if (rc == 0) rc = run(s, t, a, alive, arg, r, &streaming);
        /* refused before queueing is not counted as served or failed; a stream counts at its end */
        if (rc != -2 && !streaming) srv_count_request(s, r->status == 200, (srv_mono() - t0) * 1e3);
    }
    if (!streaming) stream_free(a); /* else the SSE reply has it */
    srv_task_release(t);
    srv_openai_error_shape(r);
}

/* The served model, by the name /status gives it. */
static void models(srv_server *s, srv_reply *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "data"), m);
    cJSON_AddStringToObject(m, "id", s->info.name);
    cJSON_AddStringToObject(m, "object", "model");
    /* the model file's modification time: when this model came to be, as far as we know */
    cJSON_AddNumberToObject(m, "created", floor((double)s->info.file_id.mtime_ns / 1e9));
    cJSON_AddStringToObject(m, "owned_by", "clara-server");
    srv_reply_json(r, 200, j);
}

void srv_openai_route(srv_server *s, srv_endpoint ep, const char *body, size_t len,
                      bool (*alive)(void *), void *alive_arg, srv_reply *r) {
    if (ep == SRV_EP_OAI_MODELS)
        models(s, r);
    else
        completion(s, ep, body, len, alive, alive_arg, r);
}
