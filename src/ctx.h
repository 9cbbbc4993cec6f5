/* ctx.h - a context: the thread pool, the KV cache of the sequence being processed and scratch
 * buffers, all sized once per request (grow-only), never in the per-token loop. */
#ifndef CLARA_CTX_H
#define CLARA_CTX_H

#include "base/threadpool.h"
#include "model.h"

struct clara_ctx {
    clara_model *m;
    clara_pool *pool;
    /* KV cache of one sequence: [n_layer][kv_cap][n_head_kv * head_dim] */
    float *k_cache, *v_cache;
    uint32_t kv_cap, n_past;
    /* activations for up to cap_tokens rows */
    uint32_t cap_tokens;
    float *x, *xn, *q, *k, *v, *att, *ff_gate, *ff_up, *lora_t;
    float *scores;  /* [n_threads][kv_cap] attention scores */
    float *rowbuf;  /* [n_threads][row_cap] weight row converted to f32 */
    size_t row_cap; /* longest weight row (columns) of the model */
    float *rope_inv_freq; /* [head_dim / 2] */
};

/* Makes room for `n_ctx` cached positions and `n_tokens` rows per forward call. */
clara_status clara_ctx_reserve(clara_ctx *ctx, uint32_t n_ctx, uint32_t n_tokens);

#endif
