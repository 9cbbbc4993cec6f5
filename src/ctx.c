/* ctx.c - creating a context and sizing its buffers. The KV cache grows (preserving its
 * contents) when a longer sequence arrives; the pipeline reserves once per request so the
 * per-token loop never allocates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "ctx.h"
#include "forward.h"

clara_ctx_params clara_ctx_default_params(void) {
    clara_ctx_params p = {0};
    return p;
}

clara_status clara_ctx_create(clara_model *m, const clara_ctx_params *params, clara_ctx **out) {
    clara_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    ctx->m = m;
    int n = params && params->n_threads > 0 ? params->n_threads : clara_physical_cores();
    clara_status s = clara_pool_create(n, &ctx->pool);
    const clara_hparams *hp = &m->hp;
    size_t cap = hp->n_embd;
    if (hp->n_ff > cap) cap = hp->n_ff;
    if ((size_t)hp->n_head * hp->head_dim > cap) cap = (size_t)hp->n_head * hp->head_dim;
    ctx->row_cap = cap;
    if (s == CLARA_OK) {
        ctx->rowbuf = malloc((size_t)n * cap * sizeof(float));
        ctx->rope_inv_freq = malloc(hp->head_dim / 2 * sizeof(float));
        if (!ctx->rowbuf || !ctx->rope_inv_freq) s = clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    if (s != CLARA_OK) {
        clara_ctx_free(ctx);
        return s;
    }
    /* inv_freq[i] = 1 / theta^(2i/d), formed in f32 as the reference does */
    for (uint32_t i = 0; i < hp->head_dim / 2; i++)
        ctx->rope_inv_freq[i] =
            1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->head_dim);
    *out = ctx;
    return CLARA_OK;
}

void clara_ctx_free(clara_ctx *ctx) {
    if (!ctx) return;
    if (ctx->pool) clara_pool_free(ctx->pool);
    free(ctx->k_cache);
    free(ctx->v_cache);
    float *bufs[] = {ctx->x,  ctx->xn,      ctx->q,     ctx->k,      ctx->v,        ctx->att,
                     ctx->ff_gate, ctx->ff_up, ctx->lora_t, ctx->scores, ctx->rowbuf,
                     ctx->rope_inv_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(ctx);
}

static clara_status grow_kv(clara_ctx *ctx, uint32_t n_ctx) {
    const clara_hparams *hp = &ctx->m->hp;
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t per_layer = (size_t)n_ctx * kv_dim;
    float *k = malloc(per_layer * hp->n_layer * sizeof(float));
    float *v = malloc(per_layer * hp->n_layer * sizeof(float));
    float *sc = malloc((size_t)clara_pool_threads(ctx->pool) * n_ctx * sizeof(float));
    if (!k || !v || !sc) {
        free(k);
        free(v);
        free(sc);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory for a KV cache of %u positions", n_ctx);
    }
    for (uint32_t l = 0; l < hp->n_layer && ctx->n_past; l++) {
        memcpy(k + l * per_layer, ctx->k_cache + (size_t)l * ctx->kv_cap * kv_dim,
               (size_t)ctx->n_past * kv_dim * sizeof(float));
        memcpy(v + l * per_layer, ctx->v_cache + (size_t)l * ctx->kv_cap * kv_dim,
               (size_t)ctx->n_past * kv_dim * sizeof(float));
    }
    free(ctx->k_cache);
    free(ctx->v_cache);
    free(ctx->scores);
    ctx->k_cache = k;
    ctx->v_cache = v;
    ctx->scores = sc;
    ctx->kv_cap = n_ctx;
    return CLARA_OK;
}

static clara_status grow_rows(clara_ctx *ctx, uint32_t n) {
    const clara_hparams *hp = &ctx->m->hp;
    size_t H = hp->n_embd, q = (size_t)hp->n_head * hp->head_dim,
           kv = (size_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    size_t wide = H > q ? H : q;
    float **bufs[] = {&ctx->x, &ctx->xn, &ctx->q, &ctx->k, &ctx->v, &ctx->att, &ctx->ff_gate,
                      &ctx->ff_up, &ctx->lora_t};
    size_t rank = 1;
    for (int i = 0; i < ctx->m->n_file_adapters; i++)
        if (ctx->m->file_adapters[i].rank > rank) rank = ctx->m->file_adapters[i].rank;
    size_t widths[] = {H, wide, q, kv, kv, q, F, F, rank};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        float *p = realloc(*bufs[i], (size_t)n * widths[i] * sizeof(float));
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory for %u rows", n);
        *bufs[i] = p;
    }
    ctx->cap_tokens = n;
    return CLARA_OK;
}

clara_status clara_ctx_reserve(clara_ctx *ctx, uint32_t n_ctx, uint32_t n_tokens) {
    if (n_ctx > ctx->m->hp.n_ctx)
        return clara_fail(CLARA_ERR_INVALID_ARG,
                          "%u positions exceed the model's context of %u tokens", n_ctx,
                          ctx->m->hp.n_ctx);
    clara_status s = CLARA_OK;
    if (n_ctx > ctx->kv_cap) s = grow_kv(ctx, n_ctx);
    if (s == CLARA_OK && n_tokens > ctx->cap_tokens) s = grow_rows(ctx, n_tokens);
    return s;
}
