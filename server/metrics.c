/* metrics.c - request, latency, batch and token counters, rendered as Prometheus text for
 * GET /metrics. One mutex: updates are a handful of additions per request. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define MAX_STATUS_SLOTS 64
static const double g_lat_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,     2.5,  5,     10,   30,  60};
#define N_LAT (sizeof g_lat_buckets / sizeof g_lat_buckets[0])
static const int g_batch_buckets[] = {1, 2, 4, 8, 16, 32, 64};
/* token latencies: time to the first token spans compression and prefill (up to minutes for many
 * documents on a 7B), between tokens a decoding step (tens to hundreds of milliseconds) */
static const double g_tok_buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define N_TOK (sizeof g_tok_buckets / sizeof g_tok_buckets[0])

typedef struct {
    uint64_t count, bucket[N_TOK];
    double sum;
} tok_hist;
#define N_BATCH (sizeof g_batch_buckets / sizeof g_batch_buckets[0])

static struct {
    pthread_mutex_t mu;
    struct {
        int ep, status;
        uint64_t n;
    } by_status[MAX_STATUS_SLOTS];
    int n_slots;
    uint64_t lat_count[SRV_EP_COUNT], lat_bucket[SRV_EP_COUNT][N_LAT];
    double lat_sum[SRV_EP_COUNT];
    uint64_t batch_count, batch_bucket[N_BATCH], batch_sum, docs;
    uint64_t prompt_tokens, generated_tokens;
    int loaded;
    tok_hist ttft, itl;
    int running;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* In srv_endpoint's order; store endpoints by their route pattern (bounded label values). */
static const char *g_ep_names[SRV_EP_COUNT] = {
    "/compress",
    "/v1/compress",
    "/v1/answer",
    "/v1/retrieve",
    "GET /v1/collections",
    "GET /v1/collections/{c}",
    "DELETE /v1/collections/{c}",
    "POST /v1/collections/{c}/memories",
    "GET /v1/collections/{c}/memories",
    "GET /v1/collections/{c}/memories/{id}",
    "PUT /v1/collections/{c}/memories/{id}",
    "DELETE /v1/collections/{c}/memories/{id}",
    "POST /v1/collections/{c}/query",
    "query vectors",
    "/health",
    "/status",
    "/metrics",
    "/openapi.json",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "web page",
    "other",
};

const char *srv_endpoint_name(srv_endpoint ep) {
    return ep < SRV_EP_COUNT ? g_ep_names[ep] : "other";
}

void srv_metrics_request(srv_endpoint ep, int status, double ms) {
    pthread_mutex_lock(&M.mu);
    int i = 0;
    while (i < M.n_slots && !(M.by_status[i].ep == (int)ep && M.by_status[i].status == status)) i++;
    if (i == M.n_slots && M.n_slots < MAX_STATUS_SLOTS) {
        M.by_status[i].ep = (int)ep;
        M.by_status[i].status = status;
        M.n_slots++;
    }
    if (i < M.n_slots) M.by_status[i].n++;
    M.lat_count[ep]++;
    M.lat_sum[ep] += ms / 1e3;
    for (size_t b = 0; b < N_LAT; b++)
        if (ms / 1e3 <= g_lat_buckets[b]) M.lat_bucket[ep][b]++;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_batch(int tasks, int docs) {
    pthread_mutex_lock(&M.mu);
    M.batch_count++;
    M.batch_sum += (uint64_t)tasks;
    M.docs += (uint64_t)docs;
    for (size_t b = 0; b < N_BATCH; b++)
        if (tasks <= g_batch_buckets[b]) M.batch_bucket[b]++;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_tokens(uint64_t prompt, uint64_t generated) {
    pthread_mutex_lock(&M.mu);
    M.prompt_tokens += prompt;
    M.generated_tokens += generated;
    pthread_mutex_unlock(&M.mu);
}

static void tok_observe(tok_hist *h, double ms) {
    pthread_mutex_lock(&M.mu);
    h->count++;
    h->sum += ms / 1e3;
    for (size_t b = 0; b < N_TOK; b++)
        if (ms / 1e3 <= g_tok_buckets[b]) h->bucket[b]++;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_ttft(double ms) {
    tok_observe(&M.ttft, ms);
}

void srv_metrics_itl(double ms) {
    tok_observe(&M.itl, ms);
}

void srv_metrics_running(int n) {
    pthread_mutex_lock(&M.mu);
    M.running = n;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_load(bool loaded) {
    pthread_mutex_lock(&M.mu);
    M.loaded = loaded;
    pthread_mutex_unlock(&M.mu);
}

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)k;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void render_requests(buf *b) {
    bprintf(b, "# HELP clara_requests_total HTTP requests by endpoint and status.\n"
               "# TYPE clara_requests_total counter\n");
    for (int i = 0; i < M.n_slots; i++)
        bprintf(b, "clara_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                g_ep_names[M.by_status[i].ep], M.by_status[i].status,
                (unsigned long long)M.by_status[i].n);
    bprintf(b, "# HELP clara_request_duration_seconds Request latency.\n"
               "# TYPE clara_request_duration_seconds histogram\n");
    for (int e = 0; e < SRV_EP_COUNT; e++) {
        if (!M.lat_count[e]) continue;
        for (size_t k = 0; k < N_LAT; k++)
            bprintf(b, "clara_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                    g_ep_names[e], g_lat_buckets[k], (unsigned long long)M.lat_bucket[e][k]);
        bprintf(b, "clara_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                g_ep_names[e], (unsigned long long)M.lat_count[e]);
        bprintf(b, "clara_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", g_ep_names[e],
                M.lat_sum[e]);
        bprintf(b, "clara_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", g_ep_names[e],
                (unsigned long long)M.lat_count[e]);
    }
}

static void render_tok(buf *b, const char *name, const char *help, const tok_hist *h) {
    bprintf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t k = 0; k < N_TOK; k++)
        bprintf(b, "%s_bucket{le=\"%g\"} %llu\n", name, g_tok_buckets[k],
                (unsigned long long)h->bucket[k]);
    bprintf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
            (unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

static void render_engine(buf *b) {
    render_tok(b, "clara_time_to_first_token_seconds",
               "From a generation request's arrival to its first token.", &M.ttft);
    render_tok(b, "clara_inter_token_latency_seconds",
               "Between two consecutive tokens of one answer.", &M.itl);
    bprintf(b,
            "# HELP clara_running_requests Generation requests in the running batch.\n"
            "# TYPE clara_running_requests gauge\nclara_running_requests %d\n",
            M.running);
    bprintf(b, "# HELP clara_batch_tasks Requests in the batch when new ones join it.\n"
               "# TYPE clara_batch_tasks histogram\n");
    for (size_t k = 0; k < N_BATCH; k++)
        bprintf(b, "clara_batch_tasks_bucket{le=\"%d\"} %llu\n", g_batch_buckets[k],
                (unsigned long long)M.batch_bucket[k]);
    bprintf(b, "clara_batch_tasks_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)M.batch_count);
    bprintf(b, "clara_batch_tasks_sum %llu\nclara_batch_tasks_count %llu\n",
            (unsigned long long)M.batch_sum, (unsigned long long)M.batch_count);
    bprintf(b,
            "# HELP clara_documents_compressed_total Documents compressed.\n"
            "# TYPE clara_documents_compressed_total counter\n"
            "clara_documents_compressed_total %llu\n",
            (unsigned long long)M.docs);
    bprintf(b,
            "# HELP clara_prompt_tokens_total Decoder prompt tokens.\n"
            "# TYPE clara_prompt_tokens_total counter\nclara_prompt_tokens_total %llu\n",
            (unsigned long long)M.prompt_tokens);
    bprintf(b,
            "# HELP clara_generated_tokens_total Generated tokens.\n"
            "# TYPE clara_generated_tokens_total counter\nclara_generated_tokens_total %llu\n",
            (unsigned long long)M.generated_tokens);
}

char *srv_metrics_render(srv_queue *q, srv_state *st) {
    buf b = {malloc(4096), 0, 4096, false};
    if (!b.p) return NULL;
    int depth = srv_queue_depth(q);
    pthread_mutex_lock(&st->mu);
    uint64_t loads = st->loads, unloads = st->unloads;
    pthread_mutex_unlock(&st->mu);
    pthread_mutex_lock(&M.mu);
    render_requests(&b);
    render_engine(&b);
    int loaded = M.loaded;
    pthread_mutex_unlock(&M.mu);
    bprintf(&b,
            "# HELP clara_queue_depth Tasks waiting for the scheduler.\n"
            "# TYPE clara_queue_depth gauge\nclara_queue_depth %d\n",
            depth);
    bprintf(&b,
            "# HELP clara_model_loaded 1 when the model is in memory.\n"
            "# TYPE clara_model_loaded gauge\nclara_model_loaded %d\n",
            loaded);
    bprintf(&b,
            "# HELP clara_model_loads_total Model loads.\n"
            "# TYPE clara_model_loads_total counter\nclara_model_loads_total %llu\n"
            "# HELP clara_model_unloads_total Model unloads.\n"
            "# TYPE clara_model_unloads_total counter\nclara_model_unloads_total %llu\n",
            (unsigned long long)loads, (unsigned long long)unloads);
    bprintf(&b,
            "# HELP clara_resident_memory_bytes Resident set size of the process.\n"
            "# TYPE clara_resident_memory_bytes gauge\nclara_resident_memory_bytes %llu\n",
            (unsigned long long)srv_rss_bytes());
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
