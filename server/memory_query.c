/* memory_query.c - POST /v1/collections/{c}/query: answer a question from stored memories.
 *
 * 1. Chunks without vectors under the served model (added under another model, or imported
 *    without vectors) are compressed now and stored: lazily, once.
 * 2. Selection (store_select): with a query reasoner (E2E) by cosine with the query's vectors,
 *    exactly as /v1/retrieve ranks; without one by full-text relevance, or every chunk in the
 *    order added when they all fit the prompt (what /v1/answer does with the same texts).
 * 3. The answer is generated from the stored vectors of the selected chunks: nothing is
 *    recompressed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_text.h"
#include "base/log.h"
#include "memory.h"
#include "stream.h"

/* Chunks compressed per task while catching up on missing vectors. */
#define RECOMPRESS_BATCH 32
/* The prompt budget within which every chunk is used (the reference cuts prompts at 1,024 tokens;
 * the system text, template and a question take about 128 of them). */
#define PROMPT_BUDGET   1024
#define PROMPT_OVERHEAD 128

typedef struct {
    const char *query;
    size_t query_len;
    uint32_t max_new_tokens;
    long top_k;   /* 0 = not given */
    char *filter; /* JSON text or NULL */
    bool stream;  /* "stream": true: the answer as Server-Sent Events (stream.c) */
} query_req;

static int parse_query(srv_server *s, cJSON *root, query_req *q, srv_reply *r) {
    cJSON *qq = cJSON_GetObjectItemCaseSensitive(root, "query");
    if (!cJSON_IsString(qq) || !qq->valuestring[0] ||
        strlen(qq->valuestring) > SRV_MAX_QUERY_BYTES) {
        srv_reply_error(r, 422, "validation_error", "'query' must be a string of 1 to %u bytes",
                        SRV_MAX_QUERY_BYTES);
        return -1;
    }
    q->query = qq->valuestring;
    q->query_len = strlen(qq->valuestring);
    q->max_new_tokens = (uint32_t)s->cfg.max_new_tokens;
    struct {
        const char *key;
        long lo, hi;
        long *dst;
    } ints[] = {{"max_new_tokens", 1, SRV_MAX_NEW_TOKENS_LIMIT, NULL},
                {"top_k", 1, SRV_MAX_MEMORIES, &q->top_k}};
    long mnt = 0;
    ints[0].dst = &mnt;
    for (size_t i = 0; i < 2; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(root, ints[i].key);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            v->valuedouble < ints[i].lo || v->valuedouble > ints[i].hi) {
            srv_reply_error(r, 422, "validation_error", "'%s' must be an integer from %ld to %ld",
                            ints[i].key, ints[i].lo, ints[i].hi);
            return -1;
        }
        *ints[i].dst = (long)v->valuedouble;
    }
    if (mnt) q->max_new_tokens = (uint32_t)mnt;
    int stream = srv_stream_wanted(root, r);
    if (stream < 0) return -1;
    q->stream = stream == 1;
    cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "filter");
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsObject(f)) {
            srv_reply_error(r, 422, "validation_error",
                            "'filter' must be an object of metadata values to match");
            return -1;
        }
        char why[128];
        if (!store_json_plain(f, why, sizeof why)) {
            srv_reply_error(r, 422, "validation_error", "'filter' %s", why);
            return -1;
        }
        q->filter = cJSON_PrintUnformatted(f);
        if (!q->filter) {
            srv_reply_error(r, 500, "out_of_memory", "out of memory");
            return -1;
        }
    }
    return 0;
}

/* store_catch_up's compressor: a task through the scheduler, with the served model (which must
 * still be the one whose fingerprint the vectors are stored under). */
typedef struct {
    srv_server *s;
    const char *fp;
    double deadline;
    bool (*alive)(void *);
    void *arg;
    srv_reply *r;
} task_compressor;

static store_code compress_by_task(void *arg, const clara_text *texts, size_t n, float *vectors,
                                   store_err *err) {
    task_compressor *c = arg;
    srv_task *t = srv_task_new(SRV_EP_MEM_ADD);
    if (!t || !(t->docs = malloc(n * sizeof *t->docs))) {
        if (t) srv_task_release(t);
        return store_fail(err, STORE_NOMEM, "out of memory");
    }
    memcpy(t->docs, texts, n * sizeof *texts);
    t->n_docs = n;
    t->deadline = c->deadline;
    memcpy(t->expect_fingerprint, c->fp, sizeof t->expect_fingerprint);
    /* a failed task has filled the reply; STORE_IO only stops the catch-up */
    store_code rc = srv_run_task(c->s, t, c->alive, c->arg, c->r) == 0
                        ? STORE_OK
                        : store_fail(err, STORE_IO, "compression failed");
    if (rc == STORE_OK)
        memcpy(vectors, t->out_vectors, n * (size_t)t->n_mem * t->n_embd * sizeof(float));
    srv_task_release(t);
    return rc;
}

/* Compresses and stores the chunks of the collection that have no vectors under model m. */
static int catch_up(srv_server *s, store *st, const char *coll, const store_model *m,
                    double deadline, bool (*alive)(void *), void *arg, double *ms, srv_reply *r) {
    double t0 = srv_mono();
    task_compressor c = {s, m->fingerprint, deadline, alive, arg, r};
    int64_t done = 0;
    store_err err = {0};
    store_code rc = store_catch_up(st, coll, m, s->cfg.vectors_f32 ? STORE_F32 : STORE_F16,
                                   RECOMPRESS_BATCH, compress_by_task, &c, NULL, &done, &err);
    if (done)
        CLARA_LOGI("collection '%s': compressed %lld chunk(s) that had no vectors under model "
                   "%.12s",
                   coll, (long long)done, m->fingerprint);
    if (rc != STORE_OK) {
        if (!r->body) srv_mem_store_error(r, &err);
        return -1;
    }
    *ms = done ? (srv_mono() - t0) * 1e3 : 0; /* the check alone is not recompressing */
    return 0;
}

/* The query reasoner's vectors of the question ([n_mem][n_embd], malloc'd). */
static float *query_vectors(srv_server *s, const query_req *q, const char *fp, double deadline,
                            bool (*alive)(void *), void *arg, double *ms, srv_reply *r) {
    srv_task *t = srv_task_new(SRV_EP_QUERY_VEC);
    if (!t) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    t->deadline = deadline;
    t->query = q->query;
    t->query_len = q->query_len;
    memcpy(t->expect_fingerprint, fp, sizeof t->expect_fingerprint);
    float *v = NULL;
    if (srv_run_task(s, t, alive, arg, r) == 0) {
        v = t->query_vectors;
        t->query_vectors = NULL;
        *ms = t->compress_ms;
    }
    srv_task_release(t);
    return v;
}

static double ms2(double v) {
    return round(v * 100) / 100;
}

/* What the reply holds beside the answer: the selected memories, and the times taken before it
 * (under "timings"). Kept with a streamed answer's task until its final event. */
static cJSON *selection_json(const store_selection *sel, const double ph[3]) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    store_selection_add_json(j, sel);
    cJSON *tm = cJSON_AddObjectToObject(j, "timings");
    cJSON_AddNumberToObject(tm, "recompress_ms", ms2(ph[0]));
    cJSON_AddNumberToObject(tm, "query_ms", ms2(ph[1]));
    cJSON_AddNumberToObject(tm, "rank_ms", ms2(ph[2]));
    return j;
}

/* The reply: t's answer with the selection's fields (selection_json). */
static void answer_reply(const srv_task *t, const cJSON *selection, double latency_ms,
                         srv_reply *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", 1);
    json_add_text(j, "answer", t->gen.text, t->gen.text_len);
    cJSON *tm = NULL;
    for (const cJSON *c = selection->child; c; c = c->next) {
        cJSON *copy = cJSON_Duplicate(c, true);
        if (strcmp(c->string, "timings") == 0)
            tm = copy; /* at the end, as before */
        else
            cJSON_AddItemToObject(j, c->string, copy);
    }
    cJSON_AddStringToObject(j, "model", t->fingerprint);
    cJSON_AddNumberToObject(j, "prompt_tokens", t->gen.prompt_tokens);
    cJSON_AddNumberToObject(j, "generated_tokens", (double)t->gen.n_ids);
    cJSON_AddNumberToObject(j, "latency_ms", round(latency_ms * 10) / 10);
    if (!tm) tm = cJSON_CreateObject();
    cJSON_AddNumberToObject(tm, "queue_ms", ms2(t->queue_ms));
    cJSON_AddNumberToObject(tm, "load_ms", ms2(t->load_ms));
    cJSON_AddNumberToObject(tm, "generate_ms", ms2(t->generate_ms));
    cJSON_AddItemToObject(j, "timings", tm);
    r->tokens = t->gen.n_ids;
    srv_reply_json(r, 200, j);
}

/* A streamed answer's final event (srv_stream_ours): the selection rides on the task's root. */
static void streamed_reply(const srv_server *s, const srv_task *t, double latency_ms,
                           srv_reply *r) {
    (void)s;
    answer_reply(t, t->root, latency_ms, r);
}

/* Generates the answer from the selected chunks' vectors (made by model fp). */
static void answer(srv_server *s, const query_req *q, store_selection *sel, const char *fp,
                   const double ph[3], double t0, double deadline, bool (*alive)(void *), void *arg,
                   srv_reply *r) {
    srv_task *t = srv_task_new(SRV_EP_MEM_QUERY);
    if (!t) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    t->query = q->query;
    t->query_len = q->query_len;
    t->max_new_tokens = q->max_new_tokens;
    t->in_vectors = sel->vectors; /* the task frees them */
    sel->vectors = NULL;
    t->n_docs = sel->n;
    t->deadline = deadline;
    memcpy(t->expect_fingerprint, fp, sizeof t->expect_fingerprint);
    t->root = selection_json(sel, ph); /* the task frees it */
    if (!t->root)
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
    else if (q->stream)
        srv_stream_ours(s, t, t0, alive, arg, streamed_reply, r);
    else if (srv_run_task(s, t, alive, arg, r) == 0)
        answer_reply(t, t->root, (srv_mono() - t0) * 1e3, r);
    srv_task_release(t);
}

/* Selections tried when the collection changes under one (STORE_CHANGED). */
#define SELECT_TRIES 3

int srv_mem_select(srv_server *s, store *st, const srv_mem_selector *q, bool (*alive)(void *),
                   void *arg, char fp[CLARA_FINGERPRINT_LEN + 1], store_selection *sel,
                   double ph[3], srv_reply *r) {
    pthread_mutex_lock(&s->state.mu);
    memcpy(fp, s->state.fingerprint, CLARA_FINGERPRINT_LEN + 1);
    pthread_mutex_unlock(&s->state.mu);
    store_model m;
    srv_mem_model(s, fp, &m);
    float *qv = NULL;
    query_req qr = {q->query, q->query_len, 0, q->top_k, NULL, false};
    if (catch_up(s, st, q->collection, &m, q->deadline, alive, arg, &ph[0], r) != 0 ||
        (s->info.can_retrieve &&
         !(qv = query_vectors(s, &qr, fp, q->deadline, alive, arg, &ph[1], r))))
        return -1;
    size_t k = q->top_k ? (size_t)q->top_k : s->info.generation_top_k;
    store_query sq = {q->collection,
                      &m,
                      qv ? STORE_SELECT_COSINE : STORE_SELECT_FULLTEXT,
                      qv,
                      q->query,
                      q->query_len,
                      k ? k : 5,
                      q->top_k ? 0 : (PROMPT_BUDGET - PROMPT_OVERHEAD) / (s->info.n_mem + 1),
                      q->filter,
                      true};
    store_err err = {0};
    int rc = -1;
    /* chunks another model's writer added since the catch-up are left out (after_catch_up);
     * a chunk replaced or deleted between the ranking and the reads of its vectors and text
     * (another request or replica) makes the selection STORE_CHANGED: catch up, select again */
    store_code sc = store_select(st, &sq, sel, &err);
    for (int again = 1; sc == STORE_CHANGED && again < SELECT_TRIES; again++) {
        double ms = 0;
        if (catch_up(s, st, q->collection, &m, q->deadline, alive, arg, &ms, r) != 0) {
            free(qv);
            return -1;
        }
        ph[0] += ms;
        sc = store_select(st, &sq, sel, &err);
    }
    if (sc != STORE_OK) {
        srv_mem_store_error(r, &err);
    } else if (sel->n == 0) {
        srv_reply_error(r, 422, "no_memories",
                        q->filter ? "no memory of collection '%s' matches the filter"
                                  : "collection '%s' holds no memories",
                        q->collection);
        store_selection_free(sel);
    } else {
        ph[2] = sel->rank_ms;
        rc = 0;
    }
    free(qv);
    return rc;
}

void srv_mem_query(srv_server *s, store *st, const char *coll, cJSON *root, double deadline,
                   bool (*alive)(void *), void *arg, srv_reply *r) {
    double t0 = srv_mono(), ph[3] = {0, 0, 0}; /* recompress, query vectors, ranking */
    query_req q = {0};
    if (parse_query(s, root, &q, r) != 0) return;
    srv_mem_selector sq = {coll, q.query, q.query_len, q.top_k, q.filter, deadline};
    char fp[CLARA_FINGERPRINT_LEN + 1];
    store_selection sel;
    if (srv_mem_select(s, st, &sq, alive, arg, fp, &sel, ph, r) == 0) {
        answer(s, &q, &sel, fp, ph, t0, deadline, alive, arg, r);
        store_selection_free(&sel);
    }
    free(q.filter);
}
