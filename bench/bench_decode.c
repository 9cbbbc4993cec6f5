/* bench_decode.c - the cost of one decode step at n rows: clara_forward_batch over n sequences of
 * one row each, every one continuing its own KV slot (a 64-token prompt prefilled once) with a
 * LoRA adapter active as in generation and the logits of every row, at n = 1, 2, 4, 8, 16. The
 * row counts are measured in alternating rounds (n = 1, 2, ..., 16, then again) so that a noisy
 * shared machine affects them alike; each round times STEPS steps per n; the report gives per n
 * the median step time over the rounds, its spread (min-max), and the ratio to n = 1's median.
 *
 *   bench_decode BASE.gguf CLARA.gguf [THREADS=2] [ROUNDS=5] [STEPS=8]
 *
 * The adapter is the model's decoder when it has weights (the `all` policy loads it), else the
 * first loaded adapter with weights, so the LoRA deltas are computed even on random models whose
 * decoder is the hf policy's zero adapter; BENCH_ADAPTER=0 runs without one (the deltas' share of
 * a step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clara.h"
#include "cpu/dispatch.h"
#include "ctx.h"
#include "forward.h"
#include "model.h"

#define MAX_ROWS 16
/* Prompt tokens each slot holds before the steps: BENCH_PROMPT (default 64, at most
 * MAX_PROMPT), so that attention reads as much context as a served answer does. */
#define MAX_PROMPT 2048
static uint32_t PROMPT = 64;

/* The row counts timed: BENCH_ROWS (a comma list, each 1 to MAX_ROWS), default 1,2,4,8,16. */
static uint32_t k_rows[MAX_ROWS] = {1, 2, 4, 8, 16};
static int N_COUNTS = 5;

static int parse_rows(const char *list) {
    N_COUNTS = 0;
    for (const char *p = list; *p && N_COUNTS < MAX_ROWS; p += *p == ',') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > MAX_ROWS || (*end && *end != ',')) return -1;
        k_rows[N_COUNTS++] = (uint32_t)v;
        p = end;
    }
    return N_COUNTS > 0 ? 0 : -1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static clara_adapter_set active_adapter(const clara_model *m) {
    clara_adapter_set s = {{0}, 0};
    const clara_adapter *a = m->decoder && m->decoder->mods ? m->decoder : NULL;
    for (int i = 0; !a && i < m->n_loaded; i++)
        if (m->loaded[i]->mods) a = m->loaded[i];
    if (a) s.a[s.n++] = a;
    return s;
}

typedef struct {
    clara_ctx *ctx;
    clara_adapter_set set;
    float *emb, *logits;
    int32_t pos[MAX_ROWS];
    uint32_t step; /* steps taken since the prompts: positions PROMPT + step */
} bench;

/* One decode step of rows [0, n): slot i continues at position PROMPT + step. */
static clara_status step(bench *b, uint32_t n) {
    const clara_model *m = b->ctx->m;
    uint32_t H = m->hp.n_embd, V = m->hp.n_vocab;
    clara_seq seqs[MAX_ROWS];
    for (uint32_t i = 0; i < n; i++) {
        b->pos[i] = (int32_t)(PROMPT + b->step);
        int32_t id = (int32_t)((7 * i + b->step) % 100 + 10);
        clara_embed_tokens(m, &id, 1, b->emb + (size_t)i * H);
        seqs[i] = (clara_seq){1,    b->emb + (size_t)i * H,    &b->pos[i], (int)i, &b->set,
                              NULL, b->logits + (size_t)i * V, 0,          NULL};
    }
    return clara_forward_batch(b->ctx, seqs, n);
}

/* Prefills every slot with the same PROMPT tokens; the slots are then cut back to the prompt
 * before each round so that every round decodes over the same cache lengths. */
static clara_status prefill(bench *b, uint32_t steps_per_round) {
    const clara_model *m = b->ctx->m;
    uint32_t H = m->hp.n_embd;
    static int32_t ids[MAX_PROMPT], pos[MAX_PROMPT];
    float *emb = malloc((size_t)PROMPT * H * sizeof(float));
    if (!emb) return CLARA_ERR_NOMEM;
    for (uint32_t i = 0; i < PROMPT; i++) ids[i] = 10 + (i * 13) % 200, pos[i] = i;
    clara_embed_tokens(m, ids, PROMPT, emb);
    clara_status s = CLARA_OK;
    for (uint32_t i = 0; s == CLARA_OK && i < MAX_ROWS; i++) {
        s = clara_ctx_reserve_slot(b->ctx, i, PROMPT + steps_per_round * N_COUNTS + 1);
        if (s != CLARA_OK) break;
        clara_kv_clear(b->ctx, i);
        clara_seq q = {PROMPT, emb, pos, (int)i, &b->set, NULL, b->logits, PROMPT - 1, NULL};
        s = clara_forward_batch(b->ctx, &q, 1);
    }
    free(emb);
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BASE.gguf CLARA.gguf [THREADS=2] [ROUNDS=5] [STEPS=8]\n",
                argv[0]);
        return 2;
    }
    const char *bp = getenv("BENCH_PROMPT");
    if (bp) PROMPT = (uint32_t)atoi(bp);
    if (PROMPT < 1 || PROMPT > MAX_PROMPT) {
        fprintf(stderr, "BENCH_PROMPT: 1 to %d tokens\n", MAX_PROMPT);
        return 2;
    }
    if (getenv("BENCH_ROWS") && parse_rows(getenv("BENCH_ROWS")) != 0) {
        fprintf(stderr, "BENCH_ROWS: a comma list of row counts, each 1 to %d\n", MAX_ROWS);
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 2, rounds = argc > 4 ? atoi(argv[4]) : 5;
    uint32_t steps = argc > 5 ? (uint32_t)atoi(argv[5]) : 8;
    if (threads < 1 || rounds < 1 || rounds > 100 || steps < 1 || steps > 1000) {
        fprintf(stderr, "bad THREADS, ROUNDS or STEPS\n");
        return 2;
    }
    clara_model_params mp = clara_model_default_params();
    mp.adapter_policy = CLARA_ADAPTER_POLICY_ALL;
    clara_model *m = NULL;
    clara_ctx *ctx = NULL;
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = threads;
    if (clara_model_load_pair(argv[1], argv[2], &mp, &m) != CLARA_OK ||
        clara_ctx_create(m, &cp, &ctx) != CLARA_OK) {
        fprintf(stderr, "%s\n", clara_last_error());
        return 1;
    }
    bench b = {ctx, active_adapter(m), NULL, NULL, {0}, 0};
    const char *ba = getenv("BENCH_ADAPTER");
    if (ba && strcmp(ba, "0") == 0) b.set.n = 0;
    b.emb = malloc((size_t)MAX_ROWS * m->hp.n_embd * sizeof(float));
    b.logits = malloc((size_t)MAX_ROWS * m->hp.n_vocab * sizeof(float));
    double *ms = malloc((size_t)N_COUNTS * rounds * sizeof(double));
    if (!b.emb || !b.logits || !ms || prefill(&b, steps) != CLARA_OK) {
        fprintf(stderr, "setup failed: %s\n", clara_last_error());
        return 1;
    }
    printf("isa %s, %d threads, adapter %s, %u layers, n_embd %u, vocab %u, prompt %u\n",
           clara_isa_name(clara_isa_active()), threads, b.set.n ? "active" : "none", m->hp.n_layer,
           m->hp.n_embd, m->hp.n_vocab, PROMPT);
    b.step = 0;
    (void)step(&b, MAX_ROWS); /* warm-up: page in the weights */
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < N_COUNTS; c++) {
            for (uint32_t i = 0; i < MAX_ROWS; i++)
                ctx->slots[i].n_past = PROMPT; /* back to the prompt */
            b.step = 0;
            double t0 = now_ms();
            for (uint32_t s = 0; s < steps; s++, b.step++)
                if (step(&b, k_rows[c]) != CLARA_OK) {
                    fprintf(stderr, "%s\n", clara_last_error());
                    return 1;
                }
            ms[c * rounds + r] = (now_ms() - t0) / steps;
        }
    double base = 0;
    printf("rows  step ms (median, min-max over %d rounds)  x one row  row-steps/s\n", rounds);
    for (int c = 0; c < N_COUNTS; c++) {
        double *v = ms + c * rounds;
        qsort(v, (size_t)rounds, sizeof *v, cmp_double);
        double med = rounds % 2 ? v[rounds / 2] : (v[rounds / 2 - 1] + v[rounds / 2]) / 2;
        if (c == 0) base = med;
        printf("%4u  %8.2f (%.2f-%.2f)  %5.2fx  %8.1f\n", k_rows[c], med, v[0], v[rounds - 1],
               med / base, k_rows[c] * 1e3 / med);
    }
    free(ms), free(b.emb), free(b.logits);
    clara_ctx_free(ctx);
    clara_model_free(m);
    return 0;
}
