/* forward.c - one transformer pass over the rows of a sequence (spec §4, §5):
 *   h = RMSNorm(x); q,k,v = Lin(h) (+LoRA); RoPE(q,k); attention over cache + causal rows;
 *   x += Lin_o(att); h = RMSNorm(x); x += Lin_down(silu(Lin_gate(h)) * Lin_up(h)); out = RMSNorm(x)
 * The q/k weights are in llama.cpp's row order (docs/FORMAT.md), so RoPE rotates adjacent pairs.
 * Everything is f32 with f32 accumulation. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/matmul.h"

void clara_kv_clear(clara_ctx *ctx) {
    ctx->n_past = 0;
}

void clara_embed_tokens(const clara_model *m, const int32_t *ids, uint32_t n, float *out) {
    size_t H = m->hp.n_embd;
    for (uint32_t i = 0; i < n; i++) {
        const float *row = clara_mat_row_f32(&m->tok_embd, (uint64_t)ids[i], out + i * H);
        if (row != out + i * H) memcpy(out + i * H, row, H * sizeof(float));
    }
}

/* HF's RMSNorm: mean of squares, scale by 1/sqrt(mean + eps), then multiply by the weight. */
static void rmsnorm(float *out, const float *x, const float *w, size_t n, float eps) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (size_t i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

/* Linear layer with the active LoRA deltas: y = x·Wᵀ + Σ scale·((x·Aᵀ)·Bᵀ). */
static void linear(clara_ctx *ctx, uint32_t layer, int lin, const float *x, uint32_t n, float *y,
                   const clara_adapter_set *set) {
    const clara_mat *W = &ctx->m->layers[layer].w[lin];
    clara_matmul(ctx, W, x, n, y, false, 1.0f);
    for (int i = 0; set && i < set->n; i++) {
        const clara_adapter *ad = set->a[i];
        if (!ad->mods) continue; /* a fresh adapter: B = 0 */
        const clara_lora *lo = &ad->mods[layer * CLARA_N_LIN + lin];
        if (!lo->a.data) continue; /* module missing from the file: contributes zero */
        clara_matmul(ctx, &lo->a, x, n, ctx->lora_t, false, 1.0f);
        clara_matmul(ctx, &lo->b, ctx->lora_t, n, y, true, ad->scale);
    }
}

/* Rotates adjacent pairs (2i, 2i+1) of every head by pos·inv_freq[i]. Angles are formed in f32
 * like the reference (position times f32 inverse frequency). */
static void rope(const clara_ctx *ctx, float *v, uint32_t n_heads, int32_t pos) {
    uint32_t d = ctx->m->hp.head_dim;
    for (uint32_t i = 0; i < d / 2; i++) {
        float angle = (float)pos * ctx->rope_inv_freq[i];
        float c = (float)cos((double)angle), s = (float)sin((double)angle);
        for (uint32_t h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * d + 2 * i;
            float a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = b * c + a * s;
        }
    }
}

typedef struct {
    clara_ctx *ctx;
    uint32_t layer, n;
} attn_job;

/* One query head over all rows: softmax(q·Kᵀ/sqrt(d)) · V with the causal limit per row. */
static void attn_task(void *arg, size_t head, int thread) {
    const attn_job *j = arg;
    clara_ctx *ctx = j->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t d = hp->head_dim, kv_dim = hp->n_head_kv * d;
    uint32_t kvh = (uint32_t)head / (hp->n_head / hp->n_head_kv);
    const float *K = ctx->k_cache + (size_t)j->layer * ctx->kv_cap * kv_dim;
    const float *V = ctx->v_cache + (size_t)j->layer * ctx->kv_cap * kv_dim;
    float *sc = ctx->scores + (size_t)thread * ctx->kv_cap;
    float scale = 1.0f / sqrtf((float)d);
    for (uint32_t t = 0; t < j->n; t++) {
        const float *q = ctx->q + (size_t)t * hp->n_head * d + head * d;
        uint32_t n_keys = ctx->n_past + t + 1;
        float mx = -INFINITY;
        for (uint32_t s = 0; s < n_keys; s++) {
            sc[s] = clara_dot_f32(q, K + (size_t)s * kv_dim + kvh * d, d) * scale;
            if (sc[s] > mx) mx = sc[s];
        }
        double sum = 0;
        for (uint32_t s = 0; s < n_keys; s++) {
            sc[s] = expf(sc[s] - mx);
            sum += sc[s];
        }
        float inv = (float)(1.0 / sum);
        float *out = ctx->att + (size_t)t * hp->n_head * d + head * d;
        memset(out, 0, d * sizeof(float));
        for (uint32_t s = 0; s < n_keys; s++) {
            const float *vr = V + (size_t)s * kv_dim + kvh * d;
            float p = sc[s] * inv;
            for (uint32_t e = 0; e < d; e++) out[e] += p * vr[e];
        }
    }
}

static void attention_block(clara_ctx *ctx, uint32_t layer, const clara_fwd *f) {
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t n = f->n, H = hp->n_embd, d = hp->head_dim;
    size_t q_dim = (size_t)hp->n_head * d, kv_dim = (size_t)hp->n_head_kv * d;
    const clara_layer *L = &ctx->m->layers[layer];
    for (uint32_t t = 0; t < n; t++)
        rmsnorm(ctx->xn + (size_t)t * H, ctx->x + (size_t)t * H, L->attn_norm, H, hp->rms_eps);
    linear(ctx, layer, CLARA_LIN_Q, ctx->xn, n, ctx->q, f->adapters);
    linear(ctx, layer, CLARA_LIN_K, ctx->xn, n, ctx->k, f->adapters);
    linear(ctx, layer, CLARA_LIN_V, ctx->xn, n, ctx->v, f->adapters);
    float *Kc = ctx->k_cache + ((size_t)layer * ctx->kv_cap + ctx->n_past) * kv_dim;
    float *Vc = ctx->v_cache + ((size_t)layer * ctx->kv_cap + ctx->n_past) * kv_dim;
    for (uint32_t t = 0; t < n; t++) {
        rope(ctx, ctx->q + t * q_dim, hp->n_head, f->pos[t]);
        rope(ctx, ctx->k + t * kv_dim, hp->n_head_kv, f->pos[t]);
    }
    memcpy(Kc, ctx->k, (size_t)n * kv_dim * sizeof(float));
    memcpy(Vc, ctx->v, (size_t)n * kv_dim * sizeof(float));
    attn_job j = {ctx, layer, n};
    clara_pool_run(ctx->pool, hp->n_head, attn_task, &j);
    /* x += o_proj(att); the projection goes to xn (free now), then the residual add */
    linear(ctx, layer, CLARA_LIN_O, ctx->att, n, ctx->xn, f->adapters);
    for (size_t i = 0; i < (size_t)n * H; i++) ctx->x[i] += ctx->xn[i];
}

static void mlp_block(clara_ctx *ctx, uint32_t layer, const clara_fwd *f) {
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t n = f->n, H = hp->n_embd, F = hp->n_ff;
    const clara_layer *L = &ctx->m->layers[layer];
    for (uint32_t t = 0; t < n; t++)
        rmsnorm(ctx->xn + (size_t)t * H, ctx->x + (size_t)t * H, L->ffn_norm, H, hp->rms_eps);
    linear(ctx, layer, CLARA_LIN_GATE, ctx->xn, n, ctx->ff_gate, f->adapters);
    linear(ctx, layer, CLARA_LIN_UP, ctx->xn, n, ctx->ff_up, f->adapters);
    for (size_t i = 0; i < (size_t)n * F; i++) {
        float g = ctx->ff_gate[i];
        ctx->ff_gate[i] = g / (1.0f + expf(-g)) * ctx->ff_up[i];
    }
    linear(ctx, layer, CLARA_LIN_DOWN, ctx->ff_gate, n, ctx->xn, f->adapters);
    for (size_t i = 0; i < (size_t)n * H; i++) ctx->x[i] += ctx->xn[i];
}

clara_status clara_forward(clara_ctx *ctx, const clara_fwd *f) {
    const clara_model *m = ctx->m;
    uint32_t H = m->hp.n_embd;
    if (f->n == 0) return CLARA_OK;
    clara_status s = clara_ctx_reserve(ctx, ctx->n_past + f->n, f->n);
    if (s != CLARA_OK) return s;
    memcpy(ctx->x, f->embd, (size_t)f->n * H * sizeof(float));
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        attention_block(ctx, l, f);
        mlp_block(ctx, l, f);
    }
    ctx->n_past += f->n;
    for (uint32_t t = 0; t < f->n; t++)
        rmsnorm(ctx->xn + (size_t)t * H, ctx->x + (size_t)t * H, m->output_norm, H, m->hp.rms_eps);
    if (f->hidden) memcpy(f->hidden, ctx->xn, (size_t)f->n * H * sizeof(float));
    if (f->logits) clara_matmul(ctx, &m->output, ctx->xn + (size_t)(f->n - 1) * H, 1, f->logits, false, 1.0f);
    return CLARA_OK;
}
