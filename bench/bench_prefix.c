/* bench_prefix.c - the prompt heads' cache (src/prefix.c) on a real-size model: the prefill of a
 * 5-document answer with the cache off (CLARA_PREFIX_CACHE=0) and with the head cached, on one
 * context; and the first answer of a fresh context (its buffers touched for the first time) with
 * the cache off and on (cache empty: the head computed with the prompt, then kept). In alternating
 * rounds (shared machines drift); every answer's ids and first-step logits must be bit for bit
 * those of the first answer without the cache, or the program fails.
 *
 *   bench_prefix MODEL.gguf | BASE.gguf CLARA.gguf
 * Environment: ROUNDS (default 3), THREADS (default 2), TEXT (default the project's passages,
 * tests/data/wiki-passages-qa.jsonl; absent: generated sentences). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/docs.h"
#include "clara.h"
#include "ctx.h"
#include "prefix.h"

enum { N_DOCS = 5, GEN = 4, MAX_ROUNDS = 32 };

typedef struct {
    int32_t ids[GEN];
    size_t n_ids;
    float *logits;
    double prefill_ms;
    uint32_t prompt;
} answer;

static int env_int(const char *name, int def, int lo, int hi) {
    const char *e = getenv(name);
    int v = e && *e ? atoi(e) : def;
    return v < lo ? lo : v > hi ? hi : v;
}

static clara_ctx *new_ctx(clara_model *m, int threads) {
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = threads;
    clara_ctx *ctx = NULL;
    return clara_ctx_create(m, &cp, &ctx) == CLARA_OK ? ctx : NULL;
}

/* One answer from the vectors on ctx with the cache on or off. */
static int answer_on(clara_ctx *ctx, clara_gen_params p, bool cache, answer *out) {
    setenv("CLARA_PREFIX_CACHE", cache ? "1" : "0", 1);
    p.first_logits = out->logits;
    clara_gen_result r;
    if (clara_generate(ctx, &p, &r) != CLARA_OK) {
        fprintf(stderr, "answer failed: %s\n", clara_last_error());
        return -1;
    }
    out->n_ids = r.n_ids < GEN ? r.n_ids : GEN;
    memcpy(out->ids, r.ids, out->n_ids * sizeof(int32_t));
    out->prefill_ms = r.prefill_ms;
    out->prompt = r.prompt_tokens;
    clara_gen_result_free(&r);
    return 0;
}

static bool same(const answer *a, const answer *b, uint32_t V) {
    return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof(int32_t)) == 0 &&
           memcmp(a->logits, b->logits, V * sizeof(float)) == 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench_prefix MODEL.gguf | BASE.gguf CLARA.gguf\n");
        return 2;
    }
    int rounds = env_int("ROUNDS", 3, 1, MAX_ROUNDS), threads = env_int("THREADS", 2, 1, 256);
    const char *text = getenv("TEXT") ? getenv("TEXT") : "tests/data/wiki-passages-qa.jsonl";
    clara_model_params mp = clara_model_default_params();
    clara_model *m = NULL;
    clara_status s = argc == 3 ? clara_model_load_pair(argv[1], argv[2], &mp, &m)
                               : clara_model_load(argv[1], &mp, &m);
    bench_docs docs;
    bench_docs_params dp = {argv[argc - 1], text, false, N_DOCS, 256};
    if (s == CLARA_OK) s = bench_docs_build(&dp, &docs);
    clara_ctx *warm = s == CLARA_OK ? new_ctx(m, threads) : NULL;
    uint32_t V = m ? clara_model_n_vocab(m) : 0;
    size_t per = m ? (size_t)clara_model_n_mem(m) * clara_model_n_embd(m) : 0;
    float *vec = malloc(N_DOCS * per * sizeof(float) + 1);
    if (s != CLARA_OK || !warm || !vec ||
        clara_compress(warm, docs.docs, N_DOCS, vec, NULL) != CLARA_OK) {
        fprintf(stderr, "bench_prefix: %s\n", clara_last_error());
        return 1;
    }
    clara_gen_params p = clara_gen_default_params();
    p.query = docs.query;
    p.query_len = strlen(docs.query);
    p.vectors = vec;
    p.n_docs = N_DOCS;
    p.max_new_tokens = GEN;
    p.ignore_eos = 1;
    answer first = {.logits = malloc(V * sizeof(float))}, a = {.logits = malloc(V * sizeof(float))};
    double t[4][MAX_ROUNDS];
    int differ = 0;
    if (!first.logits || !a.logits || answer_on(warm, p, false, &first) != 0) return 1;
    if (answer_on(warm, p, true, &a) != 0) return 1; /* fills warm's cache */
    differ += !same(&a, &first, V);
    printf("%u prompt tokens, %d threads, %s\n", first.prompt, threads, docs.source);
    printf("round  off ms  cached ms  fresh: off ms  kept ms\n");
    for (int r = 0; r < rounds; r++) {
        for (int mode = 0; mode < 4; mode++) { /* off, cached; fresh context: off, kept */
            clara_ctx *fresh = mode >= 2 ? new_ctx(m, threads) : NULL;
            if ((mode >= 2 && !fresh) || answer_on(fresh ? fresh : warm, p, mode % 2, &a) != 0)
                return 1;
            t[mode][r] = a.prefill_ms, differ += !same(&a, &first, V);
            clara_ctx_free(fresh);
        }
        printf("%5d  %6.0f  %9.0f  %13.0f  %11.0f\n", r + 1, t[0][r], t[1][r], t[2][r], t[3][r]);
        fflush(stdout);
    }
    clara_prefix_stats st = clara_prefix_stats_of(warm);
    printf("median %6.0f  %9.0f  %13.0f  %11.0f\n", median(t[0], rounds), median(t[1], rounds),
           median(t[2], rounds), median(t[3], rounds));
    printf("head rows reused per cached answer: %llu; answers identical to the first: %s\n",
           st.hits ? (unsigned long long)(st.rows_reused / st.hits) : 0ull, differ ? "NO" : "yes");
    clara_ctx_free(warm);
    clara_model_free(m);
    bench_docs_free(&docs);
    free(vec), free(first.logits), free(a.logits);
    return differ ? 1 : 0;
}
