/* forward.h - the transformer forward pass (Mistral/Llama: RMSNorm, GQA attention with RoPE,
 * SwiGLU) over the rows of one sequence, appending to its KV cache, with LoRA applied per call. */
#ifndef CLARA_FORWARD_H
#define CLARA_FORWARD_H

#include "ctx.h"

typedef struct {
    uint32_t n;            /* rows in this call */
    const float *embd;     /* [n][n_embd] input embeddings (token rows or injected vectors) */
    const int32_t *pos;    /* [n] absolute RoPE positions */
    const clara_adapter_set *adapters; /* LoRA deltas summed over these (may be empty) */
    float *hidden;         /* optional [n][n_embd]: final-norm states of every row */
    float *logits;         /* optional [n_vocab]: logits of the last row */
} clara_fwd;

/* Rows attend to the n_past cached positions and causally to each other; on return they are
 * cached too (ctx->n_past += n). Call clara_kv_clear to start a new sequence. */
clara_status clara_forward(clara_ctx *ctx, const clara_fwd *f);
void clara_kv_clear(clara_ctx *ctx);

/* out[i] = token_embd[ids[i]] as f32. */
void clara_embed_tokens(const clara_model *m, const int32_t *ids, uint32_t n, float *out);

#endif
