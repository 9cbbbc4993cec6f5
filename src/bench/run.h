/* run.h - the timed parts of `clara bench`, through the public API only: document compression at
 * a batch size, and answering a question from precomputed document vectors (prefill and decode
 * timed by the engine itself, clara_gen_result's prefill_ms / decode_ms). */
#ifndef CLARA_BENCH_RUN_H
#define CLARA_BENCH_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "bench/modelinfo.h"
#include "clara.h"

typedef struct {
    uint32_t batch;
    double docs_per_s, tokens_per_s; /* medians over the repetitions */
    double mean_tokens;              /* mean n_tokens clara_compress reported */
    double flops_per_s;              /* bench_compress_flops of the batch / median time */
} bench_compress_result;

typedef struct {
    uint32_t prompt_tokens, gen_tokens;
    double prefill_ms, prefill_tok_s, decode_tok_s; /* medians */
} bench_answer_result;

/* clara_compress of docs[0, batch) once to warm up, then `reps` times. n_tokens[batch] receives
 * what clara_compress reported for each document. */
/* Optional progress of a run, called after each timed pass (`what` names it: "warm-up" or
 * "repetition"; done of total, and the pass's seconds), so that a long benchmark is never silent.
 */
typedef struct {
    void (*fn)(void *arg, const char *what, int done, int total, double seconds);
    void *arg;
} bench_progress;

clara_status bench_compress_run(clara_ctx *ctx, const clara_model *m, const clara_text *docs,
                                uint32_t batch, int reps, const bench_model_info *mi,
                                bench_compress_result *out, uint32_t *n_tokens,
                                const bench_progress *progress);

/* Compresses the n_docs documents, then answers `query` from their vectors (CLARA_TASK_ANSWER)
 * generating exactly gen_tokens (>= 2) tokens with ignore_eos: a short warm-up, then `reps`
 * timed runs. */
clara_status bench_answer_run(clara_ctx *ctx, const clara_model *m, const clara_text *docs,
                              size_t n_docs, const char *query, uint32_t gen_tokens, int reps,
                              bench_answer_result *out, const bench_progress *progress);

#endif
