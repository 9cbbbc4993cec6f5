/* bench_store.c - the memory store's ranking speed, recall and size (bench/store.sh runs it).
 *
 * Compressing 100,000 real passages takes days on 2 cores, so the stored vectors are synthesized
 * from real ones: a few hundred passages of the data file (and questions) are compressed once with
 * the model (cached in --vectors), then stored chunk i is a random convex combination of 2 or 3
 * real passage vectors (weights uniform, normalised to sum 1) plus Gaussian noise of --noise times
 * the mixture's RMS per element, rounded to f16 as the store keeps it: many chunks share a main
 * passage, so the top-k differ from their neighbours by small margins, the hard case for the
 * candidates' pre-selection by code (src/store/rank.h). Query vectors are the questions' encoder
 * vectors (the 1B bench model has no query reasoner).
 *
 * For each size N: the chunks go in through store_add (one chunk per memory, f16, batches of
 * 256), while the exact cosine of every query with every stored vector is computed on the side
 * with the engine's f16 GEMM (independent of the store's code). Then the store is closed (WAL
 * checkpoint), its file size compared with the raw f16 bytes plus the texts, it is opened again,
 * and every query runs store_select (cosine, top_k): the first after opening is "cold" (the index
 * is read from the database), the rest warm. Recall: the store's top-k set equals the brute-force
 * top-k set; a difference between chunks whose exact scores are within 1e-6 (a tie) is counted
 * apart.
 *
 *   bench_store --base B --clara C --data JSONL --work DIR [--vectors FILE] [--threads 2]
 *               [--passages 300] [--queries 200] [--sizes 10000,100000] [--top-k 5]
 *               [--noise 0.05] [--keep N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "base/fp16.h"
#include "clara.h"
#include "cpu/matmul.h"
#include "ctx.h"
#include "store/store.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) {
    return (double)(splitmix(s) >> 11) / 9007199254740992.0;
}

static double gauss(uint64_t *s) {
    double u = unif(s), v = unif(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static void die(const char *what) {
    fprintf(stderr, "bench_store: %s\n", what);
    exit(1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)n);
    return v[i < n ? i : n - 1];
}

/* ---- the real texts ---------------------------------------------------------------------- */

typedef struct {
    char **passages, **questions;
    size_t np, nq;
} texts;

static texts read_texts(const char *path, size_t np, size_t nq) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open the data file");
    texts t = {calloc(np, sizeof(char *)), calloc(nq, sizeof(char *)), 0, 0};
    char *line = NULL;
    size_t cap = 0;
    while ((t.np < np || t.nq < nq) && getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        cJSON *d = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "docs"), 0) : NULL;
        cJSON *q = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "question"), 0) : NULL;
        if (cJSON_IsString(d) && t.np < np) t.passages[t.np++] = strdup(d->valuestring);
        if (cJSON_IsString(q) && t.nq < nq) t.questions[t.nq++] = strdup(q->valuestring);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (t.np < np || t.nq < nq) die("the data file has too few passages or questions");
    return t;
}

/* Encoder vectors of the passages then the questions: from the cache file when it matches. */
static float *real_vectors(clara_ctx *ctx, const char *fp, const texts *t, size_t per,
                           const char *cache) {
    size_t n = t->np + t->nq;
    float *v = malloc(n * per * sizeof *v);
    char head[160];
    snprintf(head, sizeof head, "clara-bench-store 1 %s %zu %zu %zu\n", fp, t->np, t->nq, per);
    FILE *f = cache ? fopen(cache, "rb") : NULL;
    if (f) {
        char got[160] = {0};
        bool ok = fread(got, 1, strlen(head), f) == strlen(head) && !strcmp(got, head) &&
                  fread(v, sizeof *v, n * per, f) == n * per;
        fclose(f);
        if (ok) {
            printf("real vectors: %zu passages + %zu questions from %s\n", t->np, t->nq, cache);
            return v;
        }
    }
    printf("compressing %zu passages + %zu questions (once; cached in %s) ...\n", t->np, t->nq,
           cache ? cache : "-");
    fflush(stdout);
    double t0 = now();
    for (size_t i = 0; i < n; i += 16) {
        size_t b = n - i < 16 ? n - i : 16;
        clara_text docs[16];
        for (size_t j = 0; j < b; j++) {
            const char *s = i + j < t->np ? t->passages[i + j] : t->questions[i + j - t->np];
            docs[j] = (clara_text){s, strlen(s)};
        }
        if (clara_compress(ctx, docs, b, v + i * per, NULL) != CLARA_OK) die(clara_last_error());
        printf("  %zu/%zu texts, %.0f s\n", i + b, n, now() - t0);
        fflush(stdout);
    }
    f = cache ? fopen(cache, "wb") : NULL;
    if (f) {
        fwrite(head, 1, strlen(head), f);
        fwrite(v, sizeof *v, n * per, f);
        fclose(f);
    }
    return v;
}

/* ---- one size ---------------------------------------------------------------------------- */

typedef struct {
    clara_ctx *ctx;
    const clara_model *model;
    const texts *t;
    const float *pv; /* passage vectors [np][per] */
    const float *qv; /* query vectors [nq][per] */
    double *qnorm;
    size_t per, k;
    double noise;
    store_model m;
    const char *work;
    bool keep;
} bench;

/* Chunk i's vectors (f16-exact f32) into out, its main passage into *main. */
static void synth(const bench *b, size_t i, float *out, size_t *main) {
    uint64_t s = 0x5eed0000ull + i;
    size_t m = 2 + (splitmix(&s) % 2), idx[3];
    double w[3], sum = 0;
    for (size_t j = 0; j < m; j++) {
        idx[j] = splitmix(&s) % b->t->np;
        w[j] = unif(&s) + 1e-3;
        sum += w[j];
    }
    size_t best = 0;
    for (size_t j = 0; j < m; j++) {
        w[j] /= sum;
        if (w[j] > w[best]) best = j;
    }
    *main = idx[best];
    double ss = 0;
    for (size_t d = 0; d < b->per; d++) {
        double x = 0;
        for (size_t j = 0; j < m; j++) x += w[j] * b->pv[idx[j] * b->per + d];
        out[d] = (float)x;
        ss += x * x;
    }
    double sd = b->noise * sqrt(ss / (double)b->per);
    for (size_t d = 0; d < b->per; d++)
        out[d] = clara_f16_to_f32(clara_f32_to_f16(out[d] + (float)(sd * gauss(&s))));
}

typedef struct {
    double score;
    size_t i;
} hit;

/* Keeps the k best (score, index) of row q in top[q * k ...], sorted best first. */
static void offer(hit *top, size_t k, double score, size_t i) {
    if (score <= top[k - 1].score) return;
    size_t j = k - 1;
    while (j > 0 && top[j - 1].score < score) {
        top[j] = top[j - 1];
        j--;
    }
    top[j] = (hit){score, i};
}

static long long file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

#define BATCH 256

static void run_size(const bench *b, size_t N) {
    size_t per = b->per, nq = b->t->nq, k = b->k;
    char db[1024], line[1100];
    snprintf(db, sizeof db, "%s/store-%zu.db", b->work, N);
    unlink(db);
    snprintf(line, sizeof line, "%s-wal", db);
    unlink(line);
    store_options o = {db, 0, true, 0};
    store *st;
    store_err err = {0};
    if (store_open(&o, &st, &err) != STORE_OK) die(err.msg);

    float *v = malloc(BATCH * per * sizeof *v);
    uint16_t *h = malloc(BATCH * per * sizeof *h);
    float *y = malloc(nq * BATCH * sizeof *y);
    double *vnorm = malloc(BATCH * sizeof *vnorm);
    hit *top = malloc(nq * k * sizeof *top);
    for (size_t i = 0; i < nq * k; i++) top[i] = (hit){-2.0, SIZE_MAX};
    char **txt = calloc(BATCH, sizeof *txt);
    store_memory_in *mems = calloc(BATCH, sizeof *mems);
    clara_chunk *chunks = calloc(BATCH, sizeof *chunks);
    char(*ids)[24] = calloc(BATCH, sizeof *ids);
    uint32_t *ptok = calloc(b->t->np, sizeof *ptok);
    for (size_t p = 0; p < b->t->np; p++)
        clara_count_tokens(b->model, b->t->passages[p], strlen(b->t->passages[p]), &ptok[p]);
    long long text_bytes = 0;
    double t_synth = 0, t_bf = 0, t_add = 0, t0 = now();
    printf("N=%zu: inserting through store_add (f16) into %s ...\n", N, db);
    fflush(stdout);
    for (size_t i0 = 0; i0 < N; i0 += BATCH) {
        size_t nb = N - i0 < BATCH ? N - i0 : BATCH;
        double ta = now();
        for (size_t j = 0; j < nb; j++) {
            size_t mainp;
            synth(b, i0 + j, v + j * per, &mainp);
            for (size_t d = 0; d < per; d++) h[j * per + d] = clara_f32_to_f16(v[j * per + d]);
            double ss = 0;
            for (size_t d = 0; d < per; d++) ss += (double)v[j * per + d] * v[j * per + d];
            vnorm[j] = fmax(sqrt(ss), 1e-12);
            /* a unique word per chunk (server queries by full text use it), then the passage */
            size_t len = strlen(b->t->passages[mainp]) + 32;
            free(txt[j]);
            txt[j] = malloc(len);
            len = (size_t)snprintf(txt[j], len, "k%zu. %s", i0 + j, b->t->passages[mainp]);
            text_bytes += (long long)len;
            snprintf(ids[j], sizeof ids[j], "c%zu", i0 + j);
            chunks[j] = (clara_chunk){0, len, ptok[mainp] + 3};
            mems[j] =
                (store_memory_in){ids[j], txt[j], len, NULL, &chunks[j], 1, v + j * per, 0, 0};
        }
        double tb = now();
        /* brute force: y[q][j] = <q, v_j> with the engine's f16 GEMM over the stored bits */
        cpu_mat W = {h, CLARA_TYPE_F16, nb, per, NULL};
        clara_matmul(&b->ctx->kc, &W, b->qv, (uint32_t)nq, y, false, 1.0f);
        for (size_t q = 0; q < nq; q++)
            for (size_t j = 0; j < nb; j++)
                offer(top + q * k, k, y[q * nb + j] / (b->qnorm[q] * vnorm[j]), i0 + j);
        double tc = now();
        if (store_add(st, "bench", true, &b->m, STORE_F16, mems, nb, NULL, &err) != STORE_OK)
            die(err.msg);
        double td = now();
        t_synth += tb - ta;
        t_bf += tc - tb;
        t_add += td - tc;
        if ((i0 / BATCH) % 40 == 39 || i0 + nb == N) {
            printf("  %zu/%zu chunks, %.0f s (synthesis %.0f s, brute force %.0f s, store_add "
                   "%.0f s = %.0f chunks/s)\n",
                   i0 + nb, N, now() - t0, t_synth, t_bf, t_add, (double)(i0 + nb) / t_add);
            fflush(stdout);
        }
    }
    store_close(st); /* the last connection checkpoints the WAL */
    long long fb = file_bytes(db), wal = file_bytes(line);
    long long raw = (long long)N * (long long)per * 2;
    printf("N=%zu size: SQLite file %.1f MB (+ WAL %.1f MB) vs raw f16 vectors %.1f MB + texts "
           "%.1f MB = %.1f MB: ratio %.3f\n",
           N, fb / 1e6, wal / 1e6, raw / 1e6, text_bytes / 1e6, (raw + text_bytes) / 1e6,
           (double)(fb + wal) / (double)(raw + text_bytes));

    /* ranking: cold (first query after opening), then warm */
    if (store_open(&o, &st, &err) != STORE_OK) die(err.msg);
    double *ms = malloc(nq * sizeof *ms), *cands = malloc(nq * sizeof *cands);
    size_t strict = 0, ties = 0, worst_q = 0; /* misses: the first 5 are shown */
    double cold = 0;
    for (size_t q = 0; q <= nq; q++) { /* query 0 twice: cold, then warm */
        size_t qi = q == 0 ? 0 : q - 1;
        store_query sq = {"bench", &b->m, STORE_SELECT_COSINE, b->qv + qi * per, NULL, 0, k,
                          0,       NULL};
        store_selection sel;
        double ta = now();
        if (store_select(st, &sq, &sel, &err) != STORE_OK) die(err.msg);
        double dt = (now() - ta) * 1e3;
        if (q == 0) {
            cold = dt;
            store_selection_free(&sel);
            continue;
        }
        ms[qi] = dt;
        cands[qi] = (double)sel.candidates;
        const hit *tq = top + qi * k;
        size_t same = 0;
        for (size_t a = 0; a < sel.n; a++)
            for (size_t c = 0; c < k; c++)
                if ((size_t)atoll(sel.memory_ids[a] + 1) == tq[c].i) same++;
        if (same == k) {
            strict++;
        } else {
            /* a tie: every store pick scores (exactly) at least the k-th brute-force score */
            bool tie = sel.n == k;
            for (size_t a = 0; tie && a < sel.n; a++) tie = sel.scores[a] >= tq[k - 1].score - 1e-6;
            ties += tie;
            if (!tie && ++worst_q <= 5) {
                printf("  query %zu: store top-%zu shares %zu with brute force (kth exact %.6f, "
                       "store kth %.6f)\n",
                       qi, k, same, tq[k - 1].score, sel.scores[sel.n - 1]);
            }
        }
        store_selection_free(&sel);
    }
    double c_min = pct(cands, nq, 0), c_med = pct(cands, nq, 50), c_max = pct(cands, nq, 100);
    double p50 = pct(ms, nq, 50), p95 = pct(ms, nq, 95), mx = pct(ms, nq, 100);
    store_cache_stats cs;
    store_cache_stats_get(st, &cs);
    printf("N=%zu ranking (store_select cosine, top_k %zu, %zu queries): cold %.1f ms; warm "
           "median %.1f ms, p95 %.1f, max %.1f; candidates scored exactly min %.0f / median %.0f "
           "/ max %.0f; cache %.0f MB of %.0f, %zu hits %zu misses\n",
           N, k, nq, cold, p50, p95, mx, c_min, c_med, c_max, cs.bytes / 1e6, cs.limit / 1e6,
           cs.hits, cs.misses);
    printf("N=%zu recall: top-%zu equal to brute force on %zu/%zu queries (%.1f%%), %zu more "
           "differ only by exact ties, %zu miss\n",
           N, k, strict, nq, 100.0 * (double)strict / (double)nq, ties, worst_q);
    printf("RESULT size=%zu cold_ms=%.1f warm_p50_ms=%.1f warm_p95_ms=%.1f recall=%.4f "
           "recall_ties=%.4f cand_med=%.0f file_ratio=%.3f file_mb=%.1f raw_mb=%.1f\n",
           N, cold, p50, p95, (double)strict / (double)nq, (double)(strict + ties) / (double)nq,
           c_med, (double)(fb + wal) / (double)(raw + text_bytes), (fb + wal) / 1e6,
           (raw + text_bytes) / 1e6);
    fflush(stdout);
    store_close(st);
    if (!b->keep) unlink(db);
    for (size_t j = 0; j < BATCH; j++) free(txt[j]);
    free(txt);
    free(mems);
    free(chunks);
    free(ids);
    free(ptok);
    free(v);
    free(h);
    free(y);
    free(vnorm);
    free(top);
    free(ms);
    free(cands);
}

int main(int argc, char **argv) {
    const char *base = NULL, *clara = NULL, *data = NULL, *work = NULL, *cache = NULL;
    const char *sizes = "10000,100000";
    size_t np = 300, nq = 200, k = 5, keep = 0;
    int threads = 2;
    double noise = 0.05;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--base"))
            base = v;
        else if (!strcmp(a, "--clara"))
            clara = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--work"))
            work = v;
        else if (!strcmp(a, "--vectors"))
            cache = v;
        else if (!strcmp(a, "--sizes"))
            sizes = v;
        else if (!strcmp(a, "--passages"))
            np = (size_t)atol(v);
        else if (!strcmp(a, "--queries"))
            nq = (size_t)atol(v);
        else if (!strcmp(a, "--top-k"))
            k = (size_t)atol(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--noise"))
            noise = atof(v);
        else if (!strcmp(a, "--keep"))
            keep = (size_t)atol(v);
        else
            die("unknown option (see the comment at the top of bench/bench_store.c)");
    }
    if (!base || !clara || !data || !work) die("--base, --clara, --data and --work are needed");
    clara_model_params mp = clara_model_default_params();
    clara_model *model;
    if (clara_model_load_pair(base, clara, &mp, &model) != CLARA_OK) die(clara_last_error());
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = threads;
    clara_ctx *ctx;
    if (clara_ctx_create(model, &cp, &ctx) != CLARA_OK) die(clara_last_error());
    char fp[CLARA_FINGERPRINT_LEN + 1];
    if (clara_model_fingerprint(model, fp) != CLARA_OK) die(clara_last_error());
    texts t = read_texts(data, np, nq);
    size_t per = (size_t)clara_model_n_mem(model) * clara_model_n_embd(model);
    float *rv = real_vectors(ctx, fp, &t, per, cache);
    bench b = {ctx,
               model,
               &t,
               rv,
               rv + np * per,
               malloc(nq * sizeof(double)),
               per,
               k,
               noise,
               {fp, "bench", clara_model_n_mem(model), clara_model_n_embd(model)},
               work,
               false};
    for (size_t q = 0; q < nq; q++) {
        double ss = 0;
        for (size_t d = 0; d < per; d++) ss += (double)b.qv[q * per + d] * b.qv[q * per + d];
        b.qnorm[q] = fmax(sqrt(ss), 1e-12);
    }
    printf("synthesized chunks: convex mixtures of 2-3 of %zu real passage vectors + %.0f%% "
           "noise, f16; %zu question vectors as queries; top_k %zu; %d threads\n",
           np, noise * 100, nq, k, threads);
    for (const char *p = sizes; *p;) {
        size_t n = (size_t)strtoull(p, (char **)&p, 10);
        if (n) {
            b.keep = n == keep;
            run_size(&b, n);
        }
        if (*p) p++;
    }
    clara_ctx_free(ctx);
    clara_model_free(model);
    return 0;
}
