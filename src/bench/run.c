/* run.c - timing document compression and answering for `clara bench` (run.h). */
#include "bench/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "bench/roofline.h"

#define MAX_REPS 1000

static size_t vector_floats(const clara_model *m, size_t n_docs) {
    return n_docs * clara_model_n_mem(m) * clara_model_n_embd(m);
}

/* Random weights that overflow somewhere show up as non-finite vectors: worth a warning, since
 * every figure would then time NaN arithmetic. */
static void check_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            CLARA_LOGW("document vectors are not finite (value %zu); the model's weights are not "
                       "sane",
                       i);
            return;
        }
}

static void tell(const bench_progress *p, const char *what, int done, int total, double sec) {
    if (p && p->fn) p->fn(p->arg, what, done, total, sec);
}

clara_status bench_compress_run(clara_ctx *ctx, const clara_model *m, const clara_text *docs,
                                uint32_t batch, int reps, const bench_model_info *mi,
                                bench_compress_result *out, uint32_t *n_tokens,
                                const bench_progress *progress) {
    if (reps < 1 || reps > MAX_REPS || batch == 0)
        return clara_fail(CLARA_ERR_INVALID_ARG, "bad batch or repetition count");
    float *vec = malloc(vector_floats(m, batch) * sizeof(float));
    double t[MAX_REPS];
    if (!vec) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    double t0 = bench_now();
    clara_status s = clara_compress(ctx, docs, batch, vec, n_tokens);
    if (s == CLARA_OK) check_finite(vec, vector_floats(m, batch));
    if (s == CLARA_OK) tell(progress, "warm-up", 1, 1, bench_now() - t0);
    for (int r = 0; r < reps && s == CLARA_OK; r++) {
        t0 = bench_now();
        s = clara_compress(ctx, docs, batch, vec, NULL);
        t[r] = bench_now() - t0;
        if (s == CLARA_OK) tell(progress, "repetition", r + 1, reps, t[r]);
    }
    free(vec);
    if (s != CLARA_OK) return s;
    double sec = bench_median(t, (size_t)reps), tokens = 0, flops = 0;
    for (uint32_t i = 0; i < batch; i++) {
        tokens += n_tokens[i];
        flops += bench_compress_flops(mi, n_tokens[i]);
    }
    *out = (bench_compress_result){batch, batch / sec, tokens / sec, tokens / batch, flops / sec};
    return CLARA_OK;
}

static clara_status answer_once(clara_ctx *ctx, clara_gen_params *p, uint32_t gen_tokens,
                                double *prefill_ms, double *decode_tok_s, uint32_t *prompt) {
    clara_gen_result r;
    p->max_new_tokens = gen_tokens;
    clara_status s = clara_generate(ctx, p, &r);
    if (s != CLARA_OK) return s;
    if (r.n_ids != gen_tokens)
        s = clara_fail(CLARA_ERR_INVALID_ARG, "generated %zu tokens instead of %u", r.n_ids,
                       gen_tokens);
    *prefill_ms = r.prefill_ms;
    /* the first token comes from the prefill pass; each later one from one decode step */
    *decode_tok_s = r.decode_ms > 0 ? (double)(r.n_ids - 1) * 1e3 / r.decode_ms : 0;
    *prompt = r.prompt_tokens;
    clara_gen_result_free(&r);
    return s;
}

clara_status bench_answer_run(clara_ctx *ctx, const clara_model *m, const clara_text *docs,
                              size_t n_docs, const char *query, uint32_t gen_tokens, int reps,
                              bench_answer_result *out, const bench_progress *progress) {
    if (reps < 1 || reps > MAX_REPS || gen_tokens < 2)
        return clara_fail(CLARA_ERR_INVALID_ARG, "bad generation length or repetition count");
    float *vec = malloc(vector_floats(m, n_docs) * sizeof(float));
    if (!vec) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    clara_status s = clara_compress(ctx, docs, n_docs, vec, NULL);
    clara_gen_params p = clara_gen_default_params();
    p.task = CLARA_TASK_ANSWER;
    p.query = query;
    p.query_len = strlen(query);
    p.vectors = vec;
    p.n_docs = n_docs;
    p.ignore_eos = 1;
    double pre[MAX_REPS], dec[MAX_REPS];
    uint32_t prompt = 0;
    double t0 = bench_now();
    if (s == CLARA_OK) s = answer_once(ctx, &p, 2, &pre[0], &dec[0], &prompt); /* warm-up */
    if (s == CLARA_OK) tell(progress, "warm-up", 1, 1, bench_now() - t0);
    for (int r = 0; r < reps && s == CLARA_OK; r++) {
        t0 = bench_now();
        s = answer_once(ctx, &p, gen_tokens, &pre[r], &dec[r], &prompt);
        if (s == CLARA_OK) tell(progress, "repetition", r + 1, reps, bench_now() - t0);
    }
    free(vec);
    if (s != CLARA_OK) return s;
    out->prompt_tokens = prompt;
    out->gen_tokens = gen_tokens;
    out->prefill_ms = bench_median(pre, (size_t)reps);
    out->prefill_tok_s = out->prefill_ms > 0 ? prompt * 1e3 / out->prefill_ms : 0;
    out->decode_tok_s = bench_median(dec, (size_t)reps);
    return CLARA_OK;
}
