/* sched.c - the scheduler: the one thread that owns the engine. It loads the model when the first
 * task arrives (requests arriving meanwhile simply queue), refuses tasks over
 * --max-request-tokens, answers compressions and query vectors at once (through the batch, so that
 * running answers keep stepping), runs up to --parallel generation tasks as a continuous batch
 * (clara_batch: new ones join at the next step, finished ones leave), and unloads the model once
 * it has been idle for the keep-alive period (Ollama-style). A task whose client left or timed
 * out, or every task once the shutdown's grace period is over, is cancelled: the engine drops it
 * within a layer or a decoding step, and the rest of the batch goes on.
 *
 * The model file may change while the server runs. Every load re-validates it against the shape
 * the startup probe fixed (requests are validated and buffers sized by it) and logs whether it is
 * the file validated at startup; a pass checks the loaded files before it starts (changed: reload)
 * and after it ends (changed or truncated under the engine: its results are discarded, 503). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "dtype.h"
#include "model.h"
#include "pipeline.h"
#include "server.h"

#define SCHED_MAX_BATCH 64
/* Continuous batching (clara.h: clara_batch): while requests decode, compression and prefill go
 * in passes of at most SCHED_PIECE_ROWS rows (fewer where a layer of such a pass takes longer than
 * SCHED_YIELD_MS), and the decoding requests get a step between the layers so that they go at
 * most ~SCHED_YIELD_MS plus a layer without one, however much compression arrives. 640 rows hold
 * a typical request's documents (3-4 of ~180 rows); a request with more is not cut by a decoding
 * step between two pieces while a layer of its pass keeps that pace (clara.h). Without
 * decoding requests passes are as large as they can be (throughput). Measured:
 * docs/PERFORMANCE.md (Continuous batching). */
#define SCHED_PIECE_ROWS 640
#define SCHED_YIELD_MS   300

static struct {
    const srv_config *cfg;
    const srv_model_info *info;
    srv_queue *q;
    srv_state *st;
    pthread_t thread;
    bool started;
    clara_model *m; /* owned by the scheduler thread */
    clara_ctx *ctx;
    clara_batch *batch; /* the generation tasks in flight, on ctx (while the model is loaded) */
    srv_task *running[SCHED_MAX_BATCH]; /* those tasks */
    int n_running;
    atomic_bool abort; /* the grace period is over: every task is cancelled */
} S;

static void fill_info(const clara_model *m, const char *path, srv_model_info *info) {
    memset(info, 0, sizeof *info);
    info->n_mem = clara_model_n_mem(m);
    info->n_embd = clara_model_n_embd(m);
    info->n_vocab = clara_model_n_vocab(m);
    info->n_ctx = clara_model_n_ctx(m);
    info->can_retrieve = clara_model_can_retrieve(m) != 0;
    info->doc_max_length = clara_model_doc_max_length(m);
    info->generation_top_k = clara_model_generation_top_k(m);
    if (clara_model_fingerprint(m, info->fingerprint) != CLARA_OK) info->fingerprint[0] = '\0';
    snprintf(info->type, sizeof info->type, "%s",
             m->hp.n_layer ? clara_type_name(m->layers[0].w[CLARA_LIN_Q].type) : "?");
    const char *name = NULL;
    if (gguf_get_str(m->gguf, "general.name", &name) != CLARA_OK || !name) {
        name = strrchr(path, '/');
        name = name ? name + 1 : path;
    }
    snprintf(info->name, sizeof info->name, "%s", name);
    /* from the mappings, not the paths: the files as loaded, even if replaced since */
    info->file_bytes = gguf_file_size(m->gguf);
    gguf_file_id(m->gguf, &info->file_id);
    if (m->base) {
        info->base_file_bytes = gguf_file_size(m->base);
        gguf_file_id(m->base, &info->base_id);
    }
}

/* One model file, or a base GGUF plus a CLaRa add-on (two-file mode). */
static clara_status open_model(const srv_config *cfg, clara_model **m) {
    clara_model_params mp = clara_model_default_params();
    return cfg->base ? clara_model_load_pair(cfg->base, cfg->model, &mp, m)
                     : clara_model_load(cfg->model, &mp, m);
}

int srv_probe_model(const srv_config *cfg, srv_model_info *info) {
    clara_model *m = NULL;
    clara_status s = open_model(cfg, &m);
    if (s == CLARA_OK) s = clara_model_check_files(m); /* truncated while we read it */
    if (s != CLARA_OK) {
        fprintf(stderr, "clara-server: error: cannot load the model: %s\n", clara_last_error());
        clara_model_free(m);
        return -1;
    }
    fill_info(m, cfg->model, info);
    clara_model_free(m);
    return 0;
}

/* "X" or "X (base Y)": the files a load reads. */
static void files_label(char *out, size_t cap) {
    if (S.cfg->base)
        snprintf(out, cap, "%s (base %s)", S.cfg->model, S.cfg->base);
    else
        snprintf(out, cap, "%s", S.cfg->model);
}

/* snprintf for messages, which may be cut at the buffer's size (paths can be long). */
static void msgf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* Appends ", what" to a list being built in out. */
static void list_add(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void list_add(char *out, size_t cap, const char *fmt, ...) {
    size_t len = strlen(out);
    if (len && len + 2 < cap) {
        snprintf(out + len, cap - len, ", ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    if (len < cap) vsnprintf(out + len, cap - len, fmt, ap);
    va_end(ap);
}

/* What differs between the startup shape and a freshly loaded model's, as "n_mem 16 -> 2, ..."
 * (empty when nothing does). Requests were validated and buffers are sized by the startup shape,
 * so a model of another shape must not serve them. */
static void shape_diff(const srv_model_info *was, const srv_model_info *now, char *out,
                       size_t cap) {
    out[0] = '\0';
    if (now->n_mem != was->n_mem) list_add(out, cap, "n_mem %u -> %u", was->n_mem, now->n_mem);
    if (now->n_embd != was->n_embd) list_add(out, cap, "n_embd %u -> %u", was->n_embd, now->n_embd);
    if (now->n_vocab != was->n_vocab)
        list_add(out, cap, "vocabulary %u -> %u", was->n_vocab, now->n_vocab);
    if (now->n_ctx != was->n_ctx) list_add(out, cap, "context %u -> %u", was->n_ctx, now->n_ctx);
    if (now->can_retrieve != was->can_retrieve)
        list_add(out, cap, "retrieval %s -> %s", was->can_retrieve ? "yes" : "no",
                 now->can_retrieve ? "yes" : "no");
}

static bool same_file(const clara_file_id *a, const clara_file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* How a loaded file differs from the one the startup probe validated ("" when it is that one).
 * Inode numbers are reused, so a new file may carry the old one's: no guess at how it changed. */
static void file_change(const char *label, const clara_file_id *was, const clara_file_id *now,
                        char *out, size_t cap) {
    if (same_file(was, now)) return;
    list_add(out, cap, "%s changed since startup (inode %llu -> %llu, %llu -> %llu bytes%s)", label,
             (unsigned long long)was->ino, (unsigned long long)now->ino,
             (unsigned long long)was->size, (unsigned long long)now->size,
             was->mtime_ns != now->mtime_ns ? ", new modification time" : "");
}

/* Says on every load whether the files are those validated at startup or new files of the same
 * shape (a model replaced by renaming a new file over its path). */
static void log_loaded(const srv_model_info *now, double secs) {
    char change[512] = "";
    file_change(S.cfg->base ? "add-on" : "model file", &S.info->file_id, &now->file_id, change,
                sizeof change);
    if (S.cfg->base) file_change("base", &S.info->base_id, &now->base_id, change, sizeof change);
    char files[600];
    files_label(files, sizeof files);
    if (!change[0])
        CLARA_LOGI("model loaded in %.3f s: %s, the file validated at startup", secs, files);
    else
        CLARA_LOGI("model loaded in %.3f s: %s: %s, re-validated: the same shape "
                   "(n_mem %u, n_embd %u, vocabulary %u, context %u, retrieval %s), type %s",
                   secs, files, change, now->n_mem, now->n_embd, now->n_vocab, now->n_ctx,
                   now->can_retrieve ? "yes" : "no", now->type);
}

/* Opens the model and checks it is still what the server validated at startup: files unchanged
 * while being read, the startup shape. On failure err says why. */
static clara_status open_validated(srv_model_info *now, char *err, size_t cap) {
    clara_status s = open_model(S.cfg, &S.m);
    if (s == CLARA_OK) s = clara_model_check_files(S.m); /* truncated while we read it */
    if (s != CLARA_OK) {
        snprintf(err, cap, "%s", clara_last_error());
        return s;
    }
    fill_info(S.m, S.cfg->model, now);
    char diff[256];
    shape_diff(S.info, now, diff, sizeof diff);
    if (!diff[0]) return CLARA_OK;
    char files[600];
    files_label(files, sizeof files);
    msgf(err, cap, "model file %s changed since startup: %s; restart the server to serve it", files,
         diff);
    return CLARA_ERR_INVALID_ARG;
}

static int load_model(void) {
    srv_state *st = S.st;
    pthread_mutex_lock(&st->mu);
    st->loading = true;
    pthread_mutex_unlock(&st->mu);
    double t0 = srv_mono();
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = S.cfg->threads;
    cp.backend = (clara_backend_choice)S.cfg->backend;
    cp.gpu_layers = S.cfg->gpu_layers;
    srv_model_info now;
    char err[sizeof st->load_error];
    clara_status s = open_validated(&now, err, sizeof err);
    if (s == CLARA_OK && (s = clara_ctx_create(S.m, &cp, &S.ctx)) != CLARA_OK)
        snprintf(err, sizeof err, "%s", clara_last_error());
    clara_batch_params bp = clara_batch_default_params();
    bp.piece_rows = SCHED_PIECE_ROWS;
    bp.yield_ms = SCHED_YIELD_MS;
    if (s == CLARA_OK && (s = clara_batch_create(S.ctx, &bp, &S.batch)) != CLARA_OK)
        snprintf(err, sizeof err, "%s", clara_last_error());
    pthread_mutex_lock(&st->mu);
    st->loading = false;
    if (s != CLARA_OK) {
        snprintf(st->load_error, sizeof st->load_error, "%s", err);
        st->load_failed = true;
        pthread_mutex_unlock(&st->mu);
        CLARA_LOGE("loading %s failed: %s", S.cfg->model, err);
        clara_ctx_free(S.ctx);
        clara_model_free(S.m);
        S.ctx = NULL;
        S.m = NULL;
        return -1;
    }
    st->loaded = true;
    clara_ctx_backend(S.ctx, &st->backend);
    memcpy(st->fingerprint, now.fingerprint, sizeof st->fingerprint);
    st->load_failed = false;
    st->load_error[0] = '\0';
    st->load_time_s = srv_mono() - t0;
    st->loads++;
    pthread_mutex_unlock(&st->mu);
    srv_metrics_load(true);
    log_loaded(&now, srv_mono() - t0);
    return 0;
}

static void unload_model(const char *why) {
    if (!S.m) return;
    clara_batch_free(S.batch); /* empty: the model goes only when nothing runs */
    S.batch = NULL;
    clara_ctx_free(S.ctx);
    clara_model_free(S.m);
    S.ctx = NULL;
    S.m = NULL;
    pthread_mutex_lock(&S.st->mu);
    S.st->loaded = false;
    S.st->unload_at = -1;
    S.st->unloads++;
    pthread_mutex_unlock(&S.st->mu);
    srv_metrics_load(false);
    CLARA_LOGI("model unloaded (%s)", why);
}

static void task_fail(srv_task *t, int status, const char *type, const char *msg) {
    t->status = status;
    t->error_type = type;
    snprintf(t->error, sizeof t->error, "%s", msg);
}

/* Engine errors: bad input the validator could not see (special-token strings in a document, a
 * prompt longer than the context) is the client's (422); anything else is ours (500). */
static void task_fail_engine(srv_task *t, clara_status s) {
    if (s == CLARA_ERR_INVALID_ARG)
        task_fail(t, 422, "invalid_input", clara_last_error());
    else
        task_fail(t, 500, "engine_error", clara_last_error());
}

/* Whether task t is to stop: its client left or timed out (wait_task), or the shutdown's grace
 * period is over. Never goes back to false. */
static bool task_cancelled(srv_task *t) {
    return atomic_load(&t->cancelled) || atomic_load(&S.abort);
}

static bool task_live(srv_task *t) {
    return t->status == 0 && !task_cancelled(t);
}

/* The engine's cancellation callbacks: a generation request is a task; a document of a shared
 * compress pass belongs to owner[doc] (for one task alone, every entry is that task). */
static bool gen_cancelled(void *arg) {
    return task_cancelled(arg);
}

static bool doc_cancelled(void *arg, size_t doc) {
    return task_cancelled(((srv_task **)arg)[doc]);
}

static size_t n_tokens_of(const char *text, size_t len) {
    clara_ids ids = {0};
    size_t n = clara_tokenizer_encode(S.m->tok, text, len, &ids) == CLARA_OK ? ids.n : 0;
    clara_ids_free(&ids);
    return n;
}

/* Document i of task t is longer than doc_max_length tokens: the encoder cuts it (reported in
 * cut_documents). */
static void note_cut(srv_task *t, size_t i) {
    if (!t->cut && !(t->cut = malloc(t->n_docs * sizeof *t->cut))) return;
    t->cut[t->n_cut++] = (uint32_t)i;
}

/* What task t costs in tokens, the measure of --max-request-tokens: each document's encoder row
 * as the engine compresses it (<ENC><s>text</s> cut at doc_max_length + 3: the n_tokens that
 * /v1/compress reports), or n_mem per document sent as vectors; then, when it generates, the
 * query's tokens and max_new_tokens. Also fills original_tokens (the documents' own tokens,
 * uncut). Text the tokenizer rejects counts 0 here; the engine reports it. */
static uint64_t task_cost(srv_task *t, uint64_t *docs_cost, uint64_t *query_cost) {
    uint64_t cut = (uint64_t)S.m->meta.doc_max_length + 3;
    *docs_cost = t->in_vectors ? (uint64_t)t->n_docs * S.info->n_mem : 0;
    for (size_t i = 0; t->docs && i < t->n_docs; i++) {
        uint64_t n = n_tokens_of(t->docs[i].text, t->docs[i].len);
        t->original_tokens += n;
        /* read whole in chunks of doc_max_length tokens (3 more tokens each), or cut */
        uint64_t chunks = n ? (n + cut - 4) / (cut - 3) : 1;
        *docs_cost += t->split ? n + 3 * chunks : n + 3 < cut ? n + 3 : cut;
        if (!t->split && n > cut - 3) note_cut(t, i); /* the tokens are counted once, here */
    }
    bool generates = t->ep != SRV_EP_V1_COMPRESS && t->ep != SRV_EP_MEM_ADD;
    *query_cost = generates && t->query ? n_tokens_of(t->query, t->query_len) : 0;
    /* a conversation's earlier turns and system text are prompt tokens like the query */
    for (size_t i = 0; generates && i < t->n_turns; i++)
        *query_cost += n_tokens_of(t->turns[i].text, t->turns[i].len);
    if (generates && t->system) *query_cost += n_tokens_of(t->system, t->system_len);
    return *docs_cost + *query_cost + (generates ? t->max_new_tokens : 0);
}

/* Refuses task t (413 too_many_tokens) when it costs more than --max-request-tokens, before any
 * of the batch is compressed: the largest request the other limits let through (1,024 documents
 * of 4 KB, 512 new tokens) is hours of compute for a 7B model on a CPU. */
static void check_cost(srv_task *t) {
    uint64_t docs, query, cost = task_cost(t, &docs, &query);
    if (cost <= (uint64_t)S.cfg->max_request_tokens) return;
    char msg[300];
    snprintf(msg, sizeof msg,
             "the request costs %llu tokens (documents %llu, query and conversation %llu, "
             "max_new_tokens %u); "
             "the limit is %d (--max-request-tokens, CLARA_MAX_REQUEST_TOKENS)",
             (unsigned long long)cost, (unsigned long long)docs, (unsigned long long)query,
             t->ep != SRV_EP_V1_COMPRESS && t->ep != SRV_EP_MEM_ADD ? t->max_new_tokens : 0,
             S.cfg->max_request_tokens);
    task_fail(t, 413, "too_many_tokens", msg);
}

/* Task t's documents compressed alone (after a shared pass failed); a cancelled task is left as
 * it is (status 0). */
static void compress_task(srv_task *t) {
    size_t per = (size_t)t->n_mem * t->n_embd;
    t->out_vectors = malloc(t->n_docs * per * sizeof(float) + 1);
    t->enc_tokens = malloc(t->n_docs * sizeof(uint32_t) + 1);
    srv_task **owner = malloc(t->n_docs * sizeof *owner + 1);
    if (!t->out_vectors || !t->enc_tokens || !owner) {
        free(owner);
        task_fail(t, 500, "out_of_memory", "out of memory");
        return;
    }
    for (size_t i = 0; i < t->n_docs; i++) owner[i] = t;
    clara_compress_params cp = {doc_cancelled, owner};
    clara_status s =
        clara_batch_compress(S.batch, t->docs, t->n_docs, t->out_vectors, t->enc_tokens, &cp);
    if (s != CLARA_OK && s != CLARA_ERR_CANCELLED) task_fail_engine(t, s);
    free(owner);
}

/* Whether documents of task t go through the shared compress pass: only /v1/compress and the
 * store's additions, which return or keep the vectors. Generation tasks give their documents to
 * the batch, which compresses them in its own pieces. */
static bool wants_compress(const srv_task *t) {
    return t->docs && t->n_docs > 0 && (t->ep == SRV_EP_V1_COMPRESS || t->ep == SRV_EP_MEM_ADD);
}

/* Splits task t's documents into chunks of at most doc_max_length tokens, which then stand in
 * for them (the store's memories; /compress by default; /v1 requests that ask). */
static void split_docs(srv_task *t) {
    size_t n = 0, cap = t->n_docs;
    clara_text *docs = malloc(cap * sizeof *docs + 1);
    clara_chunk *chunks = malloc(cap * sizeof *chunks + 1);
    uint32_t *of = malloc(cap * sizeof *of + 1);
    bool ok = docs && chunks && of;
    for (size_t i = 0; ok && i < t->n_docs && t->status == 0; i++) {
        clara_chunk *c = NULL;
        size_t k = 0;
        /* the engine's own message for special tokens, naming the document as given */
        clara_status st = clara_check_text(S.m, "document", i, t->docs[i].text, t->docs[i].len);
        bool named = st != CLARA_OK; /* the message names the document already */
        if (st == CLARA_OK)
            st = clara_split_text(S.m, t->docs[i].text, t->docs[i].len, 0, SRV_MAX_CHUNKS, &c, &k);
        if (st == CLARA_OK && k == 0 && (c = realloc(c, sizeof *c))) {
            c[0] = (clara_chunk){0, t->docs[i].len, 0}; /* an empty document stays one */
            k = 1;
        }
        if (st != CLARA_OK) {
            char msg[sizeof t->error];
            if (named)
                snprintf(msg, sizeof msg, "%s", clara_last_error());
            else
                snprintf(msg, sizeof msg, "document %zu: %s", i, clara_last_error());
            task_fail(t, st == CLARA_ERR_NOMEM ? 413 : 422,
                      st == CLARA_ERR_NOMEM ? "too_large" : "invalid_input", msg);
            break;
        }
        if (n + k > cap) {
            cap = (n + k) * 2;
            clara_text *d2 = realloc(docs, cap * sizeof *docs);
            if (d2) docs = d2;
            clara_chunk *c2 = realloc(chunks, cap * sizeof *chunks);
            if (c2) chunks = c2;
            uint32_t *o2 = realloc(of, cap * sizeof *of);
            if (o2) of = o2;
            ok = d2 && c2 && o2;
        }
        for (size_t j = 0; ok && j < k; j++, n++) {
            docs[n] = (clara_text){t->docs[i].text + c[j].start, c[j].len};
            chunks[n] = c[j];
            of[n] = (uint32_t)i;
        }
        free(c);
    }
    if (!ok) task_fail(t, 500, "out_of_memory", "out of memory");
    if (t->status != 0) {
        free(docs);
        free(chunks);
        free(of);
        return;
    }
    t->texts = t->docs;
    t->docs = docs;
    t->n_docs = n;
    t->chunks = chunks;
    t->chunk_of = of;
}

static void prepare_docs(srv_task *t) {
    if (!t->docs || t->in_vectors || !task_live(t)) return;
    if (t->split) split_docs(t); /* otherwise task_cost listed the documents that are cut */
}

/* Query-reasoner vectors of every SRV_EP_QUERY_VEC task, in one pass. */
static void query_phase(srv_task **b, int n) {
    for (int i = 0; i < n; i++) {
        srv_task *t = b[i];
        if (t->ep != SRV_EP_QUERY_VEC || !task_live(t)) continue;
        size_t per = (size_t)S.info->n_mem * S.info->n_embd;
        t->query_vectors = malloc(per * sizeof(float));
        clara_text q = {t->query, t->query_len};
        double t0 = srv_mono();
        clara_status s = t->query_vectors ? clara_compress_queries(S.ctx, &q, 1, t->query_vectors)
                                          : CLARA_ERR_NOMEM;
        t->compress_ms = (srv_mono() - t0) * 1e3;
        if (s != CLARA_OK)
            task_fail_engine(t, s);
        else
            t->status = 200;
    }
}

/* One compression (through the batch, so that running streams keep stepping) over the documents of
 * every task that wants it, each document cancelled with its task; if it fails (one document is
 * rejected), each task still wanted is compressed alone so the error lands on the right one. Tasks
 * cancelled meanwhile get nothing (status 0). */
static void compress_phase(srv_task **b, int n) {
    size_t total = 0, per = (size_t)S.info->n_mem * S.info->n_embd;
    bool in[SCHED_MAX_BATCH]; /* taking part: fixed here, as liveness may change meanwhile */
    int n_tasks = 0, n_docs = 0;
    for (int i = 0; i < n; i++) {
        in[i] = task_live(b[i]) && wants_compress(b[i]);
        if (in[i]) total += b[i]->n_docs, n_tasks++;
    }
    if (n_tasks == 0) return;
    double t0 = srv_mono();
    clara_text *docs = malloc(total * sizeof *docs + 1);
    srv_task **owner = malloc(total * sizeof *owner + 1);
    float *vec = malloc(total * per * sizeof(float) + 1);
    uint32_t *ntok = malloc(total * sizeof(uint32_t) + 1);
    bool ok = docs && owner && vec && ntok;
    size_t at = 0;
    for (int i = 0; ok && i < n; i++) {
        if (!in[i]) continue;
        memcpy(docs + at, b[i]->docs, b[i]->n_docs * sizeof *docs);
        for (size_t d = 0; d < b[i]->n_docs; d++) owner[at + d] = b[i];
        at += b[i]->n_docs;
    }
    clara_compress_params cp = {doc_cancelled, owner};
    clara_status s =
        ok ? clara_batch_compress(S.batch, docs, total, vec, ntok, &cp) : CLARA_ERR_NOMEM;
    ok = s == CLARA_OK || s == CLARA_ERR_CANCELLED; /* the vectors of tasks still wanted are good */
    at = 0;
    for (int i = 0; i < n; i++) {
        srv_task *t = b[i];
        if (!in[i]) continue;
        at += t->n_docs;
        if (!task_live(t)) continue;
        if (!ok) {
            compress_task(t);
        } else {
            t->out_vectors = malloc(t->n_docs * per * sizeof(float) + 1);
            t->enc_tokens = malloc(t->n_docs * sizeof(uint32_t) + 1);
            if (!t->out_vectors || !t->enc_tokens) {
                task_fail(t, 500, "out_of_memory", "out of memory");
            } else {
                size_t first = at - t->n_docs;
                memcpy(t->out_vectors, vec + first * per, t->n_docs * per * sizeof(float));
                memcpy(t->enc_tokens, ntok + first, t->n_docs * sizeof(uint32_t));
            }
        }
        if (task_live(t)) n_docs += (int)t->n_docs; /* compressed, not cancelled or failed */
        t->compress_ms = (srv_mono() - t0) * 1e3;
    }
    srv_metrics_batch(n_tasks, n_docs);
    free(docs);
    free(owner);
    free(vec);
    free(ntok);
}

/* Token times of a task's answer: time to the first token (from arrival) and between tokens,
 * for /metrics; then its stream, if it has one, sends the text and says whether it goes on (a
 * stop sequence ends it). */
static bool on_token(void *arg, const int32_t *ids, size_t n) {
    srv_task *t = arg;
    double now = srv_mono();
    if (n == 1)
        srv_metrics_ttft((now - t->enqueued_at) * 1e3);
    else
        srv_metrics_itl((now - t->last_token_at) * 1e3);
    t->last_token_at = now;
    /* when each token was generated, whether or not its text can be sent yet (a token ending
     * inside a UTF-8 sequence waits for the next): bench/continuous.py reads these */
    CLARA_LOGD("token %zu of task %p at %.6f s", n, (void *)t, now);
    return t->stream ? srv_stream_on_token(t->stream, ids, n) : true;
}

static void set_params(srv_task *t, clara_gen_params *p) {
    *p = clara_gen_default_params();
    p->task = t->ep == SRV_EP_V1_RETRIEVE ? CLARA_TASK_RETRIEVE : CLARA_TASK_ANSWER;
    p->query = t->query;
    p->query_len = t->query_len;
    p->n_docs = t->n_docs;
    if (t->in_vectors)
        p->vectors = t->in_vectors;
    else
        p->docs = t->docs;
    p->max_new_tokens = t->max_new_tokens;
    p->top_k = t->top_k;
    p->cancelled = gen_cancelled;
    p->cancel_arg = t;
    p->on_token = on_token;
    p->token_arg = t;
    /* the OpenAI endpoints' options (openai.c); zero for the others, which keep the defaults */
    if (t->chat) p->task = CLARA_TASK_CHAT;
    p->turns = t->turns;
    p->n_turns = t->n_turns;
    p->system = t->system;
    p->system_len = t->system_len;
    p->temperature = t->temperature;
    if (t->top_p > 0) p->top_p = t->top_p;
    p->sample_top_k = t->sample_top_k;
    p->seed = t->seed;
    p->ignore_eos = t->ignore_eos;
    if (t->stream) srv_stream_bind(t->stream, S.m);
}

static bool generates(const srv_task *t) {
    return t->ep != SRV_EP_V1_COMPRESS && t->ep != SRV_EP_MEM_ADD && t->ep != SRV_EP_QUERY_VEC;
}

/* The generation tasks among the new ones join the running batch (their documents are compressed
 * and their prompts prefilled by the next steps); the others have their answer already. */
static void admit(srv_task **b, int n) {
    int added = 0, docs = 0;
    for (int i = 0; i < n; i++) {
        srv_task *t = b[i];
        if (!task_live(t)) continue;
        if (!generates(t)) {
            if (t->ep != SRV_EP_QUERY_VEC) t->status = 200;
            continue;
        }
        set_params(t, &t->params);
        if (clara_batch_add(S.batch, &t->params, &t->gen, t) != CLARA_OK) {
            task_fail(t, 500, "out_of_memory", clara_last_error());
            continue;
        }
        t->in_batch = true;
        S.running[S.n_running++] = t;
        added++;
        docs += t->in_vectors ? 0 : (int)t->n_docs;
    }
    if (added) srv_metrics_batch((int)clara_batch_size(S.batch), docs);
}

/* A generation task the batch returned: its result or error, and the engine's phase times
 * (shared passes count for each task in them). */
static void generated(srv_task *t, clara_status st) {
    t->in_batch = false;
    for (int i = 0; i < S.n_running; i++)
        if (S.running[i] == t) S.running[i] = S.running[--S.n_running];
    t->compress_ms = t->gen.compress_ms;
    t->generate_ms = t->gen.prefill_ms + t->gen.decode_ms;
    if (st == CLARA_ERR_CANCELLED) { /* status stays 0: finish_task says why */
        clara_gen_result_free(&t->gen);
        return;
    }
    if (st != CLARA_OK) {
        const char *msg = t->gen.error ? t->gen.error : clara_status_name(st);
        if (st == CLARA_ERR_INVALID_ARG)
            task_fail(t, 422, "invalid_input", msg);
        else
            task_fail(t, 500, "engine_error", msg);
        clara_gen_result_free(&t->gen);
        return;
    }
    t->has_gen = true;
    t->status = 200;
    srv_metrics_tokens(t->gen.prompt_tokens, t->gen.n_ids);
}

/* A loaded model whose files changed on disk since it was loaded (rewritten in place, truncated)
 * goes before the batch: the batch then loads, and validates, what is there now instead of
 * computing on pages that may be another model's or may vanish. */
static void drop_if_changed(void) {
    if (!S.m || clara_model_check_files(S.m) == CLARA_OK) return;
    CLARA_LOGW("%s; reloading the model", clara_last_error());
    unload_model("its file changed on disk");
}

static void discard_results(srv_task *t) {
    free(t->out_vectors);
    free(t->enc_tokens);
    t->out_vectors = NULL;
    t->enc_tokens = NULL;
    if (t->has_gen) clara_gen_result_free(&t->gen);
    t->has_gen = false;
}

/* Results computed while a model file changed under the engine may be garbage: pages that
 * vanished read as zeros (the SIGBUS guard), rewritten ones as another model's weights. Every
 * task of the batch that computed something fails with 503 and the model goes; the next request
 * loads and validates what is on disk then. */
static void discard_if_changed(srv_task **b, int n) {
    if (!S.m || clara_model_check_files(S.m) == CLARA_OK) return;
    char why[sizeof S.st->load_error], msg[sizeof b[0]->error];
    snprintf(why, sizeof why, "%s", clara_last_error());
    msgf(msg, sizeof msg,
         "the model file changed on disk while this request ran, so its result was discarded: "
         "%s (replace a model by renaming a new file over it)",
         why);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        /* a client error (bad input, gone) did not come from the weights and stays */
        if (b[i]->status >= 400 && b[i]->status < 500) continue;
        discard_results(b[i]);
        task_fail(b[i], 503, "model_unavailable", msg);
        failed++;
    }
    /* the tasks still in flight computed on the same pages: they fail too */
    clara_batch_free(S.batch); /* their results are freed but for the error message */
    S.batch = NULL;
    for (int i = 0; i < S.n_running; i++) {
        srv_task *t = S.running[i];
        clara_gen_result_free(&t->gen);
        t->in_batch = false;
        task_fail(t, 503, "model_unavailable", msg);
        srv_task_complete(S.q, t);
        srv_task_release(t);
        failed++;
    }
    S.n_running = 0;
    CLARA_LOGE("%s: %d request(s) failed", why, failed);
    unload_model("its file changed on disk");
}

/* Task t was cancelled before it finished: its client left or timed out (the handler has answered
 * already), or the grace period is over (the client gets 503). */
static void cancelled(srv_task *t) {
    bool client = atomic_load(&t->cancelled);
    CLARA_LOGI("%s request cancelled: %s", srv_endpoint_name(t->ep),
               client ? "its client left or timed out" : "the grace period is over");
    if (client)
        task_fail(t, 499, "client_closed", "the client went away");
    else
        task_fail(t, 503, "shutting_down",
                  "the server is shutting down: the request was cancelled after the grace period");
}

/* The last task's keep_alive (or the default) decides when the model goes. */
static void after_batch(srv_task **b, int n) {
    int ka = S.cfg->keep_alive;
    for (int i = 0; i < n; i++)
        if (b[i]->has_keep_alive) ka = b[i]->keep_alive;
    double now = srv_now();
    pthread_mutex_lock(&S.st->mu);
    S.st->last_activity = now;
    S.st->unload_at = !S.m ? -1 : ka < 0 ? -1 : now + ka;
    S.st->keep_alive = ka; /* what /status says: the schedule in force, whatever the endpoint */
    pthread_mutex_unlock(&S.st->mu);
}

/* Task t leaves the scheduler: a cancellation says why, its waiter wakes. */
static void finish_task(srv_task *t) {
    if (t->status == 0) cancelled(t);
    srv_task_complete(S.q, t);
    srv_task_release(t);
}

/* New tasks: arrival times, the model (loaded, or reloaded when its files changed while nothing
 * ran), the costs and documents; queries and compressions are answered now, generation tasks
 * join the batch. Those finished are handed back at once. */
static void start_tasks(srv_task **b, int n) {
    double now = srv_mono();
    for (int i = 0; i < n; i++) {
        b[i]->queue_ms = (now - b[i]->enqueued_at) * 1e3;
        b[i]->status = 0; /* 0 = still to run */
        b[i]->n_mem = S.info->n_mem;
        b[i]->n_embd = S.info->n_embd;
    }
    if (S.n_running == 0) drop_if_changed();
    if (!S.m) {
        double t0 = srv_mono();
        if (load_model() != 0) {
            char msg[sizeof b[0]->error];
            msgf(msg, sizeof msg, "the model cannot be loaded: %s", S.st->load_error);
            for (int i = 0; i < n; i++) task_fail(b[i], 503, "model_unavailable", msg);
        }
        for (int i = 0; i < n; i++) b[i]->load_ms = (srv_mono() - t0) * 1e3;
    }
    char fp[CLARA_FINGERPRINT_LEN + 1];
    pthread_mutex_lock(&S.st->mu);
    memcpy(fp, S.st->fingerprint, sizeof fp);
    pthread_mutex_unlock(&S.st->mu);
    for (int i = 0; S.m && i < n; i++) {
        memcpy(b[i]->fingerprint, fp, sizeof fp);
        /* vectors of another model (the file was replaced since they were made) */
        if (b[i]->expect_fingerprint[0] && strcmp(b[i]->expect_fingerprint, fp) != 0)
            task_fail(b[i], 503, "model_changed",
                      "the model changed while this request ran; retry it");
        if (task_live(b[i])) check_cost(b[i]);
        prepare_docs(b[i]);
    }
    if (S.m) {
        query_phase(b, n);
        compress_phase(b, n);
        admit(b, n);
        for (int i = 0; i < n; i++)
            b[i]->batch_size = (int)clara_batch_size(S.batch) + !b[i]->in_batch;
    }
    int k = 0; /* the tasks that are done now */
    for (int i = 0; i < n; i++)
        if (!b[i]->in_batch) b[k++] = b[i];
    discard_if_changed(b, k);
    if (k) after_batch(b, k);
    for (int i = 0; i < k; i++) finish_task(b[i]);
}

/* One step of the batch; the tasks it finished are handed back. */
static void step_batch(void) {
    clara_batch_done done[SCHED_MAX_BATCH];
    size_t k = 0;
    if (clara_batch_step(S.batch, done, SCHED_MAX_BATCH, &k) != CLARA_OK)
        CLARA_LOGE("a step of the batch failed: %s", clara_last_error());
    srv_metrics_running((int)clara_batch_size(S.batch));
    srv_task *b[SCHED_MAX_BATCH];
    for (size_t i = 0; i < k; i++) {
        b[i] = done[i].user;
        generated(b[i], done[i].status);
    }
    discard_if_changed(b, (int)k);
    if (k) after_batch(b, (int)k);
    for (size_t i = 0; i < k; i++) finish_task(b[i]);
    if (k) { /* where the layers run now (device memory grows; a failed device is dropped) */
        clara_ctx_backend_info bi;
        clara_ctx_backend(S.ctx, &bi);
        pthread_mutex_lock(&S.st->mu);
        S.st->backend = bi;
        pthread_mutex_unlock(&S.st->mu);
    }
}

static double unload_deadline(void) {
    pthread_mutex_lock(&S.st->mu);
    double at = S.st->unload_at;
    pthread_mutex_unlock(&S.st->mu);
    return S.m ? at : -1;
}

/* Called with q->mu held; returns with it held. */
static void idle_wait(srv_queue *q) {
    double at = unload_deadline();
    if (at >= 0 && srv_now() >= at) {
        pthread_mutex_unlock(&q->mu);
        unload_model("idle");
        pthread_mutex_lock(&q->mu);
        return;
    }
    if (at < 0) {
        pthread_cond_wait(&q->cv, &q->mu);
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
    int rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    (void)rc;
}

/* Requests sent together reach the queue a few hundred microseconds apart; a compression pass
 * that starts with the first of them makes the rest wait for it before theirs (they would join
 * the batch only after it). With nothing running, wait up to SCHED_GATHER_MS so that they share
 * their passes (called with q->mu held). */
#define SCHED_GATHER_MS 5
static void gather(srv_queue *q, int max) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += SCHED_GATHER_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (q->n < max && !q->stop)
        if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) != 0) break; /* timed out */
}

/* Takes new tasks from the queue (called with q->mu held, returns without it): up to what the
 * batch has room for; with nothing running, waiting a few milliseconds for requests sent
 * together. Tasks whose client left while queued cost nothing more; once stopping, none starts. */
static void take_new(srv_queue *q, int max) {
    srv_task *batch[SCHED_MAX_BATCH];
    if (S.n_running == 0) gather(q, max);
    bool stopping = q->stop || atomic_load(&S.abort);
    int room = stopping ? SCHED_MAX_BATCH : max - S.n_running;
    int n = room > 0 ? srv_queue_pop_locked(q, batch, room) : 0;
    pthread_mutex_unlock(&q->mu);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (atomic_load(&batch[i]->cancelled) || stopping) {
            task_fail(batch[i], stopping ? 503 : 499, stopping ? "shutting_down" : "client_closed",
                      stopping ? "the server is shutting down" : "the client went away");
            srv_task_complete(q, batch[i]);
            srv_task_release(batch[i]);
        } else {
            batch[k++] = batch[i];
        }
    }
    if (k > 0) start_tasks(batch, k);
}

/* The loop: new tasks join the batch, which takes a step whenever it holds any; with nothing to
 * do, the model unloads after its keep-alive. */
static void *sched_main(void *arg) {
    (void)arg;
    srv_queue *q = S.q;
    int max = S.cfg->parallel < SCHED_MAX_BATCH ? S.cfg->parallel : SCHED_MAX_BATCH;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (q->n == 0 && S.n_running == 0) {
            if (q->stop) break;
            idle_wait(q);
            continue;
        }
        if (q->n > 0)
            take_new(q, max);
        else
            pthread_mutex_unlock(&q->mu);
        if (S.n_running > 0) step_batch();
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    unload_model("stopping");
    return NULL;
}

int srv_sched_start(const srv_config *cfg, const srv_model_info *info, srv_queue *q,
                    srv_state *st) {
    S.cfg = cfg;
    S.info = info;
    S.q = q;
    S.st = st;
    atomic_init(&S.abort, false);
    if (pthread_create(&S.thread, NULL, sched_main, NULL) != 0) {
        fprintf(stderr, "clara-server: error: cannot start the scheduler thread: %s\n",
                strerror(errno));
        return -1;
    }
    S.started = true;
    return 0;
}

void srv_sched_cancel_all(void) {
    atomic_store(&S.abort, true);
}

void srv_sched_stop(void) {
    if (!S.started) return;
    pthread_mutex_lock(&S.q->mu);
    S.q->stop = true;
    pthread_cond_broadcast(&S.q->cv);
    pthread_mutex_unlock(&S.q->mu);
    pthread_join(S.thread, NULL);
    S.started = false;
}
