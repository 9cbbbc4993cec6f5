/* ctx.c - creating a context and sizing its buffers. Slots (per-sequence KV caches) grow,
 * preserving their contents; the pipeline reserves once per request so that the per-token loop
 * never allocates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "ctx.h"
#include "forward.h"
#include "prefix.h"

clara_ctx_params clara_ctx_default_params(void) {
    clara_ctx_params p = {0};
    p.backend = CLARA_BACKEND_AUTO;
    p.gpu_layers = -1; /* as many as fit */
    return p;
}

clara_status clara_ctx_create(clara_model *m, const clara_ctx_params *params, clara_ctx **out) {
    clara_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    ctx->m = m;
    int n = params && params->n_threads > 0 ? params->n_threads : clara_physical_cores();
    clara_pool *pool = NULL;
    clara_status s = clara_pool_create(n, &pool);
    const clara_hparams *hp = &m->hp;
    size_t cap = hp->n_embd; /* the longest weight row (columns) of the model */
    if (hp->n_ff > cap) cap = hp->n_ff;
    if ((size_t)hp->n_head * hp->head_dim > cap) cap = (size_t)hp->n_head * hp->head_dim;
    if (s == CLARA_OK) s = cpu_kctx_init(&ctx->kc, pool, cap);
    if (s == CLARA_OK) s = clara_ctx_device_init(ctx, params);
    if (s == CLARA_OK) { /* the layers this context runs on the CPU, in the kernels' order */
        clara_ctx_backend_info bi;
        clara_ctx_backend(ctx, &bi);
        clara_model_repack(m, bi.n_layer - bi.gpu_layers, pool);
    }
    if (s == CLARA_OK) {
        ctx->rope_inv_freq = malloc(hp->head_dim / 2 * sizeof(float));
        if (!ctx->rope_inv_freq) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    ctx->kc.pool = pool; /* freed with the context even when the buffers failed */
    if (s != CLARA_OK) {
        clara_ctx_free(ctx);
        return s;
    }
    /* inv_freq[i] = 1 / theta^(2i/d), formed in f32 as the reference does */
    for (uint32_t i = 0; i < hp->head_dim / 2; i++)
        ctx->rope_inv_freq[i] = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->head_dim);
    *out = ctx;
    return CLARA_OK;
}

void clara_ctx_free(clara_ctx *ctx) {
    if (!ctx) return;
    clara_ctx_device_free(ctx);
    if (ctx->kc.pool) clara_pool_free(ctx->kc.pool);
    cpu_kctx_free(&ctx->kc);
    for (uint32_t i = 0; i < ctx->n_slots; i++) {
        free(ctx->slots[i].k);
        free(ctx->slots[i].v);
    }
    free(ctx->slots);
    float *bufs[] = {ctx->x,
                     ctx->x_aside,
                     ctx->xn,
                     ctx->q,
                     ctx->k,
                     ctx->v,
                     ctx->att,
                     ctx->lora_t,
                     ctx->ff_gate,
                     ctx->ff_up,
                     ctx->scores,
                     ctx->attn_kv,
                     ctx->rope_inv_freq,
                     ctx->out_rows,
                     ctx->out_logits,
                     ctx->xperm};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    clara_prefix_free(ctx->prefix);
    free(ctx);
}

clara_status clara_ctx_reserve_slot(clara_ctx *ctx, uint32_t slot, uint32_t n_ctx) {
    const clara_hparams *hp = &ctx->m->hp;
    if (n_ctx > hp->n_ctx)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%u positions exceed the model's context of %u tokens", n_ctx, hp->n_ctx);
    if (slot >= ctx->n_slots) {
        clara_kv_slot *sl = realloc(ctx->slots, (slot + 1) * sizeof *sl);
        if (!sl) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        memset(sl + ctx->n_slots, 0, (slot + 1 - ctx->n_slots) * sizeof *sl);
        ctx->slots = sl;
        ctx->n_slots = slot + 1;
    }
    clara_kv_slot *sl = &ctx->slots[slot];
    if (n_ctx <= sl->cap) return CLARA_OK;
    size_t d = hp->head_dim, heads = (size_t)hp->n_layer * hp->n_head_kv;
    float *k = malloc(heads * n_ctx * d * sizeof(float));
    float *v = malloc(heads * n_ctx * d * sizeof(float));
    if (!k || !v) {
        free(k);
        free(v);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory for a KV cache of %u positions", n_ctx);
    }
    for (size_t h = 0; h < heads && sl->n_past; h++) { /* each (layer, head)'s rows move */
        memcpy(k + h * n_ctx * d, sl->k + h * sl->cap * d, sl->n_past * d * sizeof(float));
        memcpy(v + h * n_ctx * d, sl->v + h * sl->cap * d, sl->n_past * d * sizeof(float));
    }
    free(sl->k);
    free(sl->v);
    sl->k = k;
    sl->v = v;
    sl->cap = n_ctx;
    return CLARA_OK;
}

static clara_status grow(float **buf, size_t n) {
    float *p = realloc(*buf, n * sizeof(float));
    if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory for activations (%zu floats)", n);
    *buf = p;
    return CLARA_OK;
}

clara_status clara_ctx_reserve_rows(clara_ctx *ctx, uint32_t n, uint32_t n_keys) {
    const clara_hparams *hp = &ctx->m->hp;
    clara_status s = CLARA_OK;
    if (n_keys > ctx->scores_cap) {
        s = grow(&ctx->scores, (size_t)clara_pool_threads(ctx->kc.pool) * CLARA_ATTN_ROWS * n_keys);
        if (s != CLARA_OK) return s;
        ctx->scores_cap = n_keys;
    }
    uint32_t copy_keys = n_keys < CLARA_ATTN_COPY_KEYS ? n_keys : CLARA_ATTN_COPY_KEYS;
    if (copy_keys > ctx->attn_kv_cap) {
        s = grow(&ctx->attn_kv,
                 (size_t)clara_pool_threads(ctx->kc.pool) * 2 * copy_keys * hp->head_dim);
        if (s != CLARA_OK) return s;
        ctx->attn_kv_cap = copy_keys;
    }
    if (n <= ctx->cap_tokens) return CLARA_OK;
    size_t H = hp->n_embd, q = (size_t)hp->n_head * hp->head_dim,
           kv = (size_t)hp->n_head_kv * hp->head_dim, rank = 1;
    for (int i = 0; i < ctx->m->n_file_adapters; i++)
        if (ctx->m->file_adapters[i].rank > rank) rank = ctx->m->file_adapters[i].rank;
    float **bufs[] = {&ctx->x, &ctx->xn, &ctx->q, &ctx->k, &ctx->v, &ctx->att, &ctx->lora_t};
    /* lora_t: x·Aᵀ of every active adapter of a linear layer at once (fused LoRA, forward.c) */
    size_t widths[] = {H, H > q ? H : q, q, kv, kv, q, rank * CLARA_MAX_ACTIVE};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0] && s == CLARA_OK; i++)
        s = grow(bufs[i], (size_t)n * widths[i]);
    size_t ff_rows = n < CLARA_FFN_CHUNK_ROWS ? n : CLARA_FFN_CHUNK_ROWS;
    if (s == CLARA_OK) s = grow(&ctx->ff_gate, ff_rows * hp->n_ff);
    if (s == CLARA_OK) s = grow(&ctx->ff_up, ff_rows * hp->n_ff);
    /* gathered inputs: attention linears take n rows of up to max(H, q) values, the MLP chunks
     * of rows of n_ff values */
    size_t perm_need = (size_t)n * (H > q ? H : q);
    if ((size_t)CLARA_FFN_CHUNK_ROWS * hp->n_ff > perm_need)
        perm_need = (size_t)CLARA_FFN_CHUNK_ROWS * hp->n_ff;
    if (s == CLARA_OK && ctx->m->has_in_perm && perm_need > ctx->xperm_cap) {
        s = grow(&ctx->xperm, perm_need);
        if (s == CLARA_OK) ctx->xperm_cap = perm_need;
    }
    if (s == CLARA_OK) ctx->cap_tokens = n;
    return s;
}
