/* sched.c - the scheduler: the one thread that owns the engine. It loads the model when the first
 * task arrives (requests arriving meanwhile simply queue), takes up to --parallel queued tasks at
 * a time, compresses the documents of all of them in one clara_compress call, answers each, and
 * unloads the model once it has been idle for the keep-alive period (Ollama-style). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/log.h"
#include "dtype.h"
#include "model.h"
#include "server.h"

#define SCHED_MAX_BATCH 64

static struct {
    const srv_config *cfg;
    const srv_model_info *info;
    srv_queue *q;
    srv_state *st;
    pthread_t thread;
    bool started;
    clara_model *m; /* owned by the scheduler thread */
    clara_ctx *ctx;
} S;

static void fill_info(const clara_model *m, const char *path, srv_model_info *info) {
    info->n_mem = clara_model_n_mem(m);
    info->n_embd = clara_model_n_embd(m);
    info->n_vocab = clara_model_n_vocab(m);
    info->n_ctx = clara_model_n_ctx(m);
    info->can_retrieve = clara_model_can_retrieve(m) != 0;
    snprintf(info->type, sizeof info->type, "%s",
             m->hp.n_layer ? clara_type_name(m->layers[0].w[CLARA_LIN_Q].type) : "?");
    const char *name = NULL;
    if (gguf_get_str(m->gguf, "general.name", &name) != CLARA_OK || !name) {
        name = strrchr(path, '/');
        name = name ? name + 1 : path;
    }
    snprintf(info->name, sizeof info->name, "%s", name);
    struct stat sb;
    info->file_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* One model file, or a base GGUF plus a CLaRa add-on (two-file mode). */
static clara_status open_model(const srv_config *cfg, clara_model **m) {
    clara_model_params mp = clara_model_default_params();
    return cfg->base ? clara_model_load_pair(cfg->base, cfg->model, &mp, m)
                     : clara_model_load(cfg->model, &mp, m);
}

int srv_probe_model(const srv_config *cfg, srv_model_info *info) {
    clara_model *m = NULL;
    if (open_model(cfg, &m) != CLARA_OK) {
        fprintf(stderr, "clara-server: error: cannot load the model: %s\n", clara_last_error());
        return -1;
    }
    fill_info(m, cfg->model, info);
    clara_model_free(m);
    return 0;
}

static int load_model(void) {
    srv_state *st = S.st;
    pthread_mutex_lock(&st->mu);
    st->loading = true;
    pthread_mutex_unlock(&st->mu);
    double t0 = srv_mono();
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = S.cfg->threads;
    clara_status s = open_model(S.cfg, &S.m);
    if (s == CLARA_OK) s = clara_ctx_create(S.m, &cp, &S.ctx);
    pthread_mutex_lock(&st->mu);
    st->loading = false;
    if (s != CLARA_OK) {
        snprintf(st->load_error, sizeof st->load_error, "%s", clara_last_error());
        st->load_failed = true;
        pthread_mutex_unlock(&st->mu);
        CLARA_LOGE("loading %s failed: %s", S.cfg->model, clara_last_error());
        clara_model_free(S.m);
        S.m = NULL;
        return -1;
    }
    st->loaded = true;
    st->load_failed = false;
    st->load_error[0] = '\0';
    st->load_time_s = srv_mono() - t0;
    st->loads++;
    pthread_mutex_unlock(&st->mu);
    srv_metrics_load(true);
    CLARA_LOGI("model loaded in %.3f s", srv_mono() - t0);
    return 0;
}

static void unload_model(void) {
    if (!S.m) return;
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
    CLARA_LOGI("model unloaded (idle)");
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

static bool task_live(srv_task *t) {
    return t->status == 0 && !atomic_load(&t->cancelled);
}

/* Real token counts of the documents as tokenized (no special tokens, no truncation). */
static void count_tokens(srv_task *t) {
    for (size_t i = 0; i < t->n_docs; i++) {
        clara_ids ids = {0};
        if (clara_tokenizer_encode(S.m->tok, t->docs[i].text, t->docs[i].len, &ids) == CLARA_OK)
            t->original_tokens += ids.n;
        clara_ids_free(&ids);
    }
}

static int compress_task(srv_task *t) {
    size_t per = (size_t)t->n_mem * t->n_embd;
    t->out_vectors = malloc(t->n_docs * per * sizeof(float) + 1);
    t->enc_tokens = malloc(t->n_docs * sizeof(uint32_t) + 1);
    if (!t->out_vectors || !t->enc_tokens) {
        task_fail(t, 500, "out_of_memory", "out of memory");
        return -1;
    }
    clara_status s = clara_compress(S.ctx, t->docs, t->n_docs, t->out_vectors, t->enc_tokens);
    if (s != CLARA_OK) task_fail_engine(t, s);
    return s == CLARA_OK ? 0 : -1;
}

/* Whether documents of task t go through the shared compress pass: only /v1/compress, which
 * returns the vectors. Generation tasks give their documents to clara_generate_batch, which
 * compresses the documents of all of them in shared passes itself. */
static bool wants_compress(const srv_task *t) {
    return t->docs && t->n_docs > 0 && t->ep == SRV_EP_V1_COMPRESS;
}

/* One clara_compress call over the documents of every task that wants it; if it fails (one
 * document is rejected), each task is compressed alone so the error lands on the right one. */
static void compress_phase(srv_task **b, int n) {
    size_t total = 0, per = (size_t)S.info->n_mem * S.info->n_embd;
    int n_tasks = 0;
    for (int i = 0; i < n; i++)
        if (task_live(b[i]) && wants_compress(b[i])) total += b[i]->n_docs, n_tasks++;
    if (n_tasks == 0) return;
    double t0 = srv_mono();
    clara_text *docs = malloc(total * sizeof *docs + 1);
    float *vec = malloc(total * per * sizeof(float) + 1);
    uint32_t *ntok = malloc(total * sizeof(uint32_t) + 1);
    bool ok = docs && vec && ntok;
    size_t at = 0;
    for (int i = 0; ok && i < n; i++) {
        if (!task_live(b[i]) || !wants_compress(b[i])) continue;
        memcpy(docs + at, b[i]->docs, b[i]->n_docs * sizeof *docs);
        at += b[i]->n_docs;
    }
    ok = ok && clara_compress(S.ctx, docs, total, vec, ntok) == CLARA_OK;
    at = 0;
    for (int i = 0; i < n; i++) {
        srv_task *t = b[i];
        if (!task_live(t) || !wants_compress(t)) continue;
        if (!ok) {
            compress_task(t);
        } else {
            t->out_vectors = malloc(t->n_docs * per * sizeof(float) + 1);
            t->enc_tokens = malloc(t->n_docs * sizeof(uint32_t) + 1);
            if (!t->out_vectors || !t->enc_tokens) {
                task_fail(t, 500, "out_of_memory", "out of memory");
            } else {
                memcpy(t->out_vectors, vec + at * per, t->n_docs * per * sizeof(float));
                memcpy(t->enc_tokens, ntok + at, t->n_docs * sizeof(uint32_t));
            }
            at += t->n_docs;
        }
        t->compress_ms = (srv_mono() - t0) * 1e3;
    }
    srv_metrics_batch(n_tasks, (int)total);
    free(docs);
    free(vec);
    free(ntok);
}

static void set_params(const srv_task *t, clara_gen_params *p) {
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
}

/* Every generation task of the pass in one clara_generate_batch call: shared compression
 * passes and decoding steps run together; each task gets its own result or error. */
static void generate_phase(srv_task **b, int n) {
    srv_task *tasks[SCHED_MAX_BATCH];
    clara_gen_params params[SCHED_MAX_BATCH];
    clara_gen_result results[SCHED_MAX_BATCH];
    clara_status st[SCHED_MAX_BATCH];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!task_live(b[i])) continue;
        if (b[i]->ep == SRV_EP_V1_COMPRESS) {
            b[i]->status = 200;
            continue;
        }
        tasks[k] = b[i];
        set_params(b[i], &params[k++]);
    }
    if (k == 0) return;
    int docs = 0;
    for (int i = 0; i < k; i++)
        if (params[i].docs) docs += (int)params[i].n_docs;
    double t0 = srv_mono();
    clara_status s = clara_generate_batch(S.ctx, params, (size_t)k, results, st);
    srv_metrics_batch(k, docs);
    double ms = (srv_mono() - t0) * 1e3;
    for (int i = 0; i < k; i++) {
        srv_task *t = tasks[i];
        t->generate_ms = ms;
        if (s != CLARA_OK) {
            task_fail_engine(t, s);
            continue;
        }
        if (st[i] != CLARA_OK) {
            const char *msg = results[i].error ? results[i].error : clara_status_name(st[i]);
            if (st[i] == CLARA_ERR_INVALID_ARG)
                task_fail(t, 422, "invalid_input", msg);
            else
                task_fail(t, 500, "engine_error", msg);
            clara_gen_result_free(&results[i]);
            continue;
        }
        t->gen = results[i];
        /* the engine's own phase times (shared passes count for each task in them) */
        t->compress_ms = t->gen.compress_ms;
        t->generate_ms = t->gen.prefill_ms + t->gen.decode_ms;
        t->has_gen = true;
        t->status = 200;
        srv_metrics_tokens(t->gen.prompt_tokens, t->gen.n_ids);
    }
}

static void run_batch(srv_task **b, int n) {
    double now = srv_mono();
    for (int i = 0; i < n; i++) {
        b[i]->queue_ms = (now - b[i]->enqueued_at) * 1e3;
        b[i]->batch_size = n;
        b[i]->status = 0; /* 0 = still to run */
        b[i]->n_mem = S.info->n_mem;
        b[i]->n_embd = S.info->n_embd;
    }
    if (!S.m) {
        double t0 = srv_mono();
        if (load_model() != 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "the model cannot be loaded: %s", S.st->load_error);
            for (int i = 0; i < n; i++) task_fail(b[i], 503, "model_unavailable", msg);
            return;
        }
        for (int i = 0; i < n; i++) b[i]->load_ms = (srv_mono() - t0) * 1e3;
    }
    for (int i = 0; i < n; i++)
        if (task_live(b[i]) && b[i]->docs) count_tokens(b[i]);
    compress_phase(b, n);
    generate_phase(b, n);
    for (int i = 0; i < n; i++)
        if (b[i]->status == 0) task_fail(b[i], 499, "client_closed", "the client went away");
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
    pthread_mutex_unlock(&S.st->mu);
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
        unload_model();
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

/* Requests sent together reach the queue a few hundred microseconds apart; a pass runs to
 * completion, so one that starts with the first of them makes the rest wait a whole pass. Wait
 * up to SCHED_GATHER_MS for the pass to fill (called with q->mu held). */
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

static void *sched_main(void *arg) {
    (void)arg;
    srv_queue *q = S.q;
    srv_task *batch[SCHED_MAX_BATCH];
    int max = S.cfg->parallel < SCHED_MAX_BATCH ? S.cfg->parallel : SCHED_MAX_BATCH;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (q->n == 0) {
            if (q->stop) break;
            idle_wait(q);
            continue;
        }
        gather(q, max);
        bool stopping = q->stop;
        int n = srv_queue_pop_locked(q, batch, stopping ? SCHED_MAX_BATCH : max);
        pthread_mutex_unlock(&q->mu);
        /* Tasks whose client left while queued cost nothing more. */
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (atomic_load(&batch[i]->cancelled) || stopping) {
                task_fail(batch[i], stopping ? 503 : 499,
                          stopping ? "shutting_down" : "client_closed",
                          stopping ? "the server is shutting down" : "the client went away");
                srv_task_complete(q, batch[i]);
                srv_task_release(batch[i]);
            } else {
                batch[k++] = batch[i];
            }
        }
        if (k > 0) {
            run_batch(batch, k);
            after_batch(batch, k);
        }
        for (int i = 0; i < k; i++) {
            srv_task_complete(q, batch[i]);
            srv_task_release(batch[i]);
        }
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    unload_model();
    return NULL;
}

int srv_sched_start(const srv_config *cfg, const srv_model_info *info, srv_queue *q,
                    srv_state *st) {
    S.cfg = cfg;
    S.info = info;
    S.q = q;
    S.st = st;
    if (pthread_create(&S.thread, NULL, sched_main, NULL) != 0) {
        fprintf(stderr, "clara-server: error: cannot start the scheduler thread: %s\n",
                strerror(errno));
        return -1;
    }
    S.started = true;
    return 0;
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
