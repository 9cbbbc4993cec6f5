/* forward.c - one transformer pass over a batch of sequences (spec §4, §5):
 *   h = RMSNorm(x); q,k,v = Lin(h) (+LoRA); RoPE(q,k); attention within each sequence;
 *   x += Lin_o(att); h = RMSNorm(x); x += Lin_down(silu(Lin_gate(h)) * Lin_up(h)); out = RMSNorm(x)
 * Linear layers run once over all rows of the batch; LoRA deltas are added per sequence with that
 * sequence's adapters. The q/k weights are in llama.cpp's row order (docs/FORMAT.md), so RoPE
 * rotates adjacent pairs. Everything is f32 with f32 accumulation. */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "dtype.h"
#include "quant.h"
#ifdef CLARA_HAVE_VULKAN
#include "vulkan/engine.h"
#endif

/* Per-call view of the batch: where each sequence's rows start. */
typedef struct {
    clara_ctx *ctx;
    const clara_seq *seqs;
    uint32_t n_seqs, n_rows;
    uint32_t *row0; /* [n_seqs + 1] */
} batch;

void clara_kv_clear(clara_ctx *ctx, uint32_t slot) {
    if (slot < ctx->n_slots) ctx->slots[slot].n_past = ctx->slots[slot].dev_valid = 0;
}

void clara_embed_tokens(const clara_model *m, const int32_t *ids, uint32_t n, float *out) {
    size_t H = m->hp.n_embd;
    const clara_mat *E = &m->tok_embd;
    uint64_t row_bytes = 0;
    clara_type_row_bytes(E->type, E->cols, &row_bytes); /* checked when the model was loaded */
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)E->data + (uint64_t)ids[i] * row_bytes;
        clara_dequantize_row(E->type, row, E->cols, out + i * H); /* plain types convert too */
    }
}

/* HF's RMSNorm: mean of squares, scale by 1/sqrt(mean + eps), then multiply by the weight. The
 * squares are summed in double in 4 independent chains (one serial chain waits on the add
 * latency); the double sum's error (~1e-16 relative) moves the float mean only on rare ties. */
static void rmsnorm(float *out, const float *x, const float *w, size_t n, float eps) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * x[i];
        s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2];
        s3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) s0 += (double)x[i] * x[i];
    double ss = (s0 + s1) + (s2 + s3);
    float inv = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

/* Row-wise work (norms, activations, residual adds) split over the pool in row ranges; small
 * batches (decode) run on the calling thread. Each row is computed as it would be alone. */
typedef void (*rows_fn)(const void *arg, uint32_t r0, uint32_t r1);

typedef struct {
    rows_fn fn;
    const void *arg;
    uint32_t n, per;
} rows_job;

static void rows_task(void *arg, size_t task, int thread) {
    (void)thread;
    const rows_job *j = arg;
    uint32_t r0 = (uint32_t)task * j->per, r1 = r0 + j->per < j->n ? r0 + j->per : j->n;
    j->fn(j->arg, r0, r1);
}

static void parallel_rows(clara_ctx *ctx, uint32_t n, size_t row_elems, rows_fn fn,
                          const void *arg) {
    uint32_t threads = (uint32_t)clara_pool_threads(ctx->kc.pool);
    if (threads == 1 || (size_t)n * row_elems < (1u << 16)) {
        fn(arg, 0, n);
        return;
    }
    rows_job j = {fn, arg, n, (n + 4 * threads - 1) / (4 * threads)};
    clara_pool_run(ctx->kc.pool, (n + j.per - 1) / j.per, rows_task, &j);
}

typedef struct {
    float *out;
    const float *x, *w;
    size_t H;
    float eps;
} rmsnorm_args;

static void rmsnorm_range(const void *arg, uint32_t r0, uint32_t r1) {
    const rmsnorm_args *a = arg;
    for (uint32_t t = r0; t < r1; t++)
        rmsnorm(a->out + t * a->H, a->x + t * a->H, a->w, a->H, a->eps);
}

static void rmsnorm_rows(clara_ctx *ctx, float *out, const float *x, const float *w,
                         uint32_t rows) {
    rmsnorm_args a = {out, x, w, ctx->m->hp.n_embd, ctx->m->hp.rms_eps};
    parallel_rows(ctx, rows, a.H, rmsnorm_range, &a);
}

/* dst[r] += src[r] for rows of `width` values. */
typedef struct {
    float *dst;
    const float *src;
    size_t width;
} add_args;

static void add_range(const void *arg, uint32_t r0, uint32_t r1) {
    const add_args *a = arg;
    for (size_t i = r0 * a->width; i < r1 * a->width; i++) a->dst[i] += a->src[i];
}

static void add_rows(clara_ctx *ctx, float *dst, const float *src, uint32_t rows, size_t width) {
    add_args a = {dst, src, width};
    parallel_rows(ctx, rows, width, add_range, &a);
}

/* gate = silu(gate) * up: the reference's f32 expression with libm's expf at the scalar level. */
static void swiglu_range(const void *arg, uint32_t r0, uint32_t r1) {
    const add_args *a = arg; /* dst = gate, src = up */
    size_t i0 = r0 * a->width, n = (r1 - r0) * a->width;
    switch (clara_isa_active()) { /* the SIMD levels' own exponential (kernels_exp.inc) */
    case CLARA_ISA_AVX512:
        clara_swiglu_avx512(a->dst + i0, a->src + i0, n);
        return;
    case CLARA_ISA_AVX2:
        clara_swiglu_avx2(a->dst + i0, a->src + i0, n);
        return;
    default:
        break;
    }
    for (size_t i = r0 * a->width; i < r1 * a->width; i++) {
        float g = a->dst[i];
        a->dst[i] = g / (1.0f + expf(-g)) * a->src[i];
    }
}

/* x[t][perm[j]] for the n rows, in ctx->xperm (sized by clara_ctx_reserve_rows for models with
 * input permutations: act-order GPTQ imports). */
static const float *permuted_inputs(clara_ctx *ctx, const int32_t *perm, const float *x, uint32_t n,
                                    size_t cols) {
    CLARA_ASSERT((size_t)n * cols <= ctx->xperm_cap);
    for (uint32_t t = 0; t < n; t++)
        for (size_t j = 0; j < cols; j++) ctx->xperm[t * cols + j] = x[t * cols + perm[j]];
    return ctx->xperm;
}

/* Most LoRA deltas one linear layer fuses into its matmul: one per run of consecutive sequences
 * sharing an adapter (a compression batch needs one). */
#define LINEAR_FUSED_DELTAS 16

/* y = x·Wᵀ with the deltas (clara_matmul_lora), or with base_given, y already holding x·Wᵀ
 * (clara_matmul_group), only the deltas: the bits clara_matmul_lora gives with few rows, where it
 * adds them one by one after the base product. */
static void base_and_deltas(clara_ctx *ctx, const clara_mat *W, const float *xw, uint32_t n,
                            float *y, const clara_lora_delta *d, int nd, bool same_x,
                            bool base_given) {
    if (base_given)
        clara_lora_add(&ctx->kc, W->rows, y, d, nd);
    else
        clara_matmul_lora(&ctx->kc, W, xw, n, y, d, nd, same_x);
}

/* The end of the run of sequences from s on that share s's adapters (their rows are
 * consecutive: one x·Aᵀ product covers them all). */
static uint32_t adapter_run_end(const batch *b, uint32_t s) {
    uint32_t e = s + 1;
    while (e < b->n_seqs && clara_adapter_sets_equal(b->seqs[e].adapters, b->seqs[s].adapters)) e++;
    return e;
}

/* Linear layer over batch rows [r0, r0 + n) (x and y point at row r0) with each sequence's LoRA
 * deltas: y = x·Wᵀ + Σ scale·((x·Aᵀ)·Bᵀ). Every x·Aᵀ is computed first (into lora_t, one after
 * another; one product per run of sequences with the same adapters, so that a decoding step
 * reads each A once for all its rows: a row's products have the same bits at any number of rows,
 * cpu/kernels.h), then the base product with the deltas fused (clara_matmul_lora); past
 * LINEAR_FUSED_DELTAS the rest follow as separate products, in the same order. base_given: y
 * already holds x·Wᵀ (linear_group), only the deltas are added. */
static void linear_ex(const batch *b, uint32_t layer, int lin, const float *x, uint32_t r0,
                      uint32_t n, float *y, bool same_x, bool base_given) {
    clara_ctx *ctx = b->ctx;
    const clara_mat *W = &ctx->m->layers[layer].w[lin];
    const int32_t *perm = ctx->m->layers[layer].in_perm[lin];
    const float *xw = perm ? permuted_inputs(ctx, perm, x, n, (size_t)W->cols) : x;
    clara_lora_delta d[LINEAR_FUSED_DELTAS];
    int nd = 0;
    bool base_done = false;
    float *t = ctx->lora_t;
    for (uint32_t s = 0, s_end; s < b->n_seqs; s = s_end) {
        s_end = adapter_run_end(b, s);
        const clara_adapter_set *set = b->seqs[s].adapters;
        uint32_t a = b->row0[s] > r0 ? b->row0[s] : r0;
        uint32_t e = b->row0[s_end] < r0 + n ? b->row0[s_end] : r0 + n;
        for (int i = 0; set && a < e && i < set->n; i++) {
            const clara_adapter *ad = set->a[i];
            if (!ad->mods) continue; /* a fresh adapter: B = 0 */
            const clara_lora *lo = &ad->mods[layer * CLARA_N_LIN + lin];
            if (!lo->a.data) continue; /* module missing from the file: contributes zero */
            clara_matmul(&ctx->kc, &lo->a, x + (size_t)(a - r0) * W->cols, e - a, t, false, 1.0f);
            clara_lora_delta cur = {a - r0, e - a, t, &lo->b, ad->scale};
            t += (size_t)(e - a) * lo->a.rows;
            clara_lora_delta *last = nd ? &d[nd - 1] : NULL;
            if (!base_done && last && last->B == cur.B && last->scale == cur.scale &&
                last->t0 + last->n == cur.t0) {
                last->n += cur.n; /* the next sequence's rows (and t's), same adapter */
                continue;
            }
            if (!base_done && nd < LINEAR_FUSED_DELTAS) {
                d[nd++] = cur;
                continue;
            }
            if (!base_done) base_and_deltas(ctx, W, xw, n, y, d, nd, same_x && !perm, base_given);
            base_done = true;
            clara_lora_add(&ctx->kc, W->rows, y, &cur, 1);
        }
    }
    if (!base_done) base_and_deltas(ctx, W, xw, n, y, d, nd, same_x && !perm, base_given);
}

static void linear(const batch *b, uint32_t layer, int lin, const float *x, uint32_t r0, uint32_t n,
                   float *y, bool same_x) {
    linear_ex(b, layer, lin, x, r0, n, y, same_x, false);
}

/* Linear layers lins[0, count) of one input x over rows [r0, r0 + n) (decode: q, k, v; gate,
 * up): their base products in one parallel region where clara_matmul_group applies, then each
 * one's deltas; else linear() one after another. Same bits either way. */
static void linear_group(const batch *b, uint32_t layer, const int *lins, int count, const float *x,
                         uint32_t r0, uint32_t n, float *const *ys) {
    const clara_layer *L = &b->ctx->m->layers[layer];
    const clara_mat *W[CLARA_MATMUL_GROUP_MAX];
    bool grouped = count <= CLARA_MATMUL_GROUP_MAX;
    for (int i = 0; grouped && i < count; i++) {
        W[i] = &L->w[lins[i]];
        grouped = !L->in_perm[lins[i]]; /* act-order imports permute x per layer */
    }
    grouped = grouped && clara_matmul_group(&b->ctx->kc, W, count, x, n, ys);
    for (int i = 0; i < count; i++) linear_ex(b, layer, lins[i], x, r0, n, ys[i], i > 0, grouped);
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
    const batch *b;  /* keys and values: every row */
    const batch *qb; /* query rows: b, or its last-layer subset (the last rows of each sequence) */
    uint32_t layer;
    clara_isa isa;
    uint32_t t0, t1;  /* this round's query rows [t0, t1) of each sequence */
    const bool *skip; /* [n_seqs]: sequences cancelled since the layer began */
} attn_job;

/* Where a sequence's keys and values are for one layer: head h's key row k is at
 * K + h * head_step + k * stride (and the same for V). */
typedef struct {
    const float *K, *V;
    size_t head_step, stride;
    uint32_t n_past;
} seq_kv_view;

/* Sequence s's keys/values: its slot's cache (head-major, already holding the batch rows) or,
 * for a one-pass sequence, the batch's own k/v rows. */
static seq_kv_view seq_kv(const batch *b, uint32_t s, uint32_t layer) {
    const clara_ctx *ctx = b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    size_t d = hp->head_dim, kv_dim = (size_t)hp->n_head_kv * d;
    int slot = b->seqs[s].slot;
    if (slot < 0)
        return (seq_kv_view){ctx->k + (size_t)b->row0[s] * kv_dim,
                             ctx->v + (size_t)b->row0[s] * kv_dim, d, kv_dim, 0};
    const clara_kv_slot *sl = &ctx->slots[slot];
    size_t off = (size_t)layer * hp->n_head_kv * sl->cap * d;
    return (seq_kv_view){sl->k + off, sl->v + off, sl->cap * d, d, sl->n_past};
}

/* Query rows of a sequence from which attention copies the head's keys and values first. */
#define ATTN_COPY_MIN_ROWS 8

/* In the batch's own rows (one-pass sequences) one head's keys and values are rows kv_dim floats
 * apart (4 KB at 7B): every key then falls in the same L1 set and a few L2 sets, and each query's
 * pass over them misses the caches. For many query rows they are first copied to contiguous rows
 * of d floats; the arithmetic is the same. (A slot's cache is head-major: already contiguous.) */
static void attn_copy_head(const float *src, size_t stride, uint32_t n, uint32_t d, float *dst) {
    for (uint32_t k = 0; k < n; k++) memcpy(dst + (size_t)k * d, src + (size_t)k * stride, d * 4);
}

/* One head's keys and values for the queries of a sequence, and where its rows go. */
typedef struct {
    const float *K, *V; /* the head's first key / value row */
    size_t stride;      /* between key (value) rows */
    uint32_t d;
    clara_isa isa;
} attn_head;

/* sc[k] = q·K[k] · scale for keys k in [k0, k1). */
static void attn_scores(const attn_head *h, const float *q, uint32_t k0, uint32_t k1, float scale,
                        float *sc) {
    const float *K = h->K + (size_t)k0 * h->stride;
    if (h->isa == CLARA_ISA_AVX512)
        clara_attn_scores_avx512(q, K, h->stride, k1 - k0, h->d, scale, sc + k0);
    else if (h->isa == CLARA_ISA_AVX2)
        clara_attn_scores_avx2(q, K, h->stride, k1 - k0, h->d, scale, sc + k0);
    else
        for (uint32_t k = k0; k < k1; k++)
            sc[k] = clara_dot_f32(q, h->K + (size_t)k * h->stride, h->d) * scale;
}

/* The first n_keys scores of CLARA_ATTN_ROWS query rows together (SIMD levels only). */
static void attn_scores4(const attn_head *h, const float *q, size_t q_stride, uint32_t n_keys,
                         float scale, float *sc, size_t sc_stride) {
    if (h->isa == CLARA_ISA_AVX512)
        clara_attn_scores4_avx512(q, q_stride, h->K, h->stride, n_keys, h->d, scale, sc, sc_stride);
    else
        clara_attn_scores4_avx2(q, q_stride, h->K, h->stride, n_keys, h->d, scale, sc, sc_stride);
}

/* sc[0, n_keys) = softmax(sc[0, n_keys)): libm's expf at the scalar level, the level's own
 * exponential at the SIMD levels (kernels_exp.inc). */
static void attn_softmax(clara_isa isa, float *sc, uint32_t n_keys) {
    if (isa == CLARA_ISA_AVX512) {
        clara_softmax_avx512(sc, n_keys);
        return;
    }
    if (isa == CLARA_ISA_AVX2) {
        clara_softmax_avx2(sc, n_keys);
        return;
    }
    float mx = -INFINITY;
    for (uint32_t k = 0; k < n_keys; k++)
        if (sc[k] > mx) mx = sc[k];
    double sum = 0;
    for (uint32_t k = 0; k < n_keys; k++) {
        sc[k] = expf(sc[k] - mx);
        sum += sc[k];
    }
    float inv = (float)(1.0 / sum);
    for (uint32_t k = 0; k < n_keys; k++) sc[k] *= inv; /* here once, not per output block */
}

/* out = softmax(sc[0, n_keys)) · V (sc is overwritten by the probabilities). */
static void attn_softmax_values(const attn_head *h, float *sc, uint32_t n_keys, float *out) {
    attn_softmax(h->isa, sc, n_keys);
    if (h->isa == CLARA_ISA_AVX512) {
        clara_attn_values_avx512(sc, h->V, h->stride, n_keys, h->d, out);
    } else if (h->isa == CLARA_ISA_AVX2) {
        clara_attn_values_avx2(sc, h->V, h->stride, n_keys, h->d, out);
    } else {
        memset(out, 0, h->d * sizeof(float));
        for (uint32_t k = 0; k < n_keys; k++) {
            const float *vr = h->V + (size_t)k * h->stride;
            for (uint32_t e = 0; e < h->d; e++) out[e] += sc[k] * vr[e];
        }
    }
}

_Static_assert(CLARA_ATTN_ROWS == 4, "the 4-row attention kernels take 4 rows");

/* attn_softmax_values of CLARA_ATTN_ROWS rows (scores sc_stride apart, row r over
 * n_common + r*step keys) together, each value vector loaded once for all rows (SIMD levels). */
static void attn_softmax_values4(const attn_head *h, float *sc, size_t sc_stride, uint32_t n_common,
                                 uint32_t step, float *out, size_t out_stride) {
    for (uint32_t r = 0; r < CLARA_ATTN_ROWS; r++)
        attn_softmax(h->isa, sc + (size_t)r * sc_stride, n_common + r * step);
    if (h->isa == CLARA_ISA_AVX512)
        clara_attn_values4_avx512(sc, sc_stride, h->V, h->stride, n_common, step, h->d, out,
                                  out_stride);
    else
        clara_attn_values4_avx2(sc, sc_stride, h->V, h->stride, n_common, step, h->d, out,
                                out_stride);
}

/* What both attention tasks start from for sequence s and key/value head kvh: the head's keys
 * and values, the thread's score rows, the scale, the query rows and the first one's keys. */
typedef struct {
    attn_head h;
    float *sc;
    float scale;
    uint32_t n_q, keys0;
} attn_start;

static attn_start attn_begin(const attn_job *j, uint32_t s, uint32_t kvh, int thread) {
    const batch *b = j->b;
    clara_ctx *ctx = b->ctx;
    uint32_t d = ctx->m->hp.head_dim;
    seq_kv_view kv = seq_kv(b, s, j->layer);
    uint32_t skip = b->seqs[s].n - j->qb->seqs[s].n; /* rows before the first query */
    return (attn_start){
        {kv.K + kvh * kv.head_step, kv.V + kvh * kv.head_step, kv.stride, d, j->isa},
        ctx->scores + (size_t)thread * CLARA_ATTN_ROWS * ctx->scores_cap,
        1.0f / sqrtf((float)d),
        j->qb->seqs[s].n,
        kv.n_past + skip + 1};
}

/* Task = (sequence, query head): softmax(q·Kᵀ/sqrt(d)) · V with the causal limit per row, for
 * the round's query rows. At the SIMD levels rows go 4 at a time (their common keys scored
 * together, a row's last 1-3 keys alone), at the scalar level one by one: the same bits either
 * way. */
static void attn_task(void *arg, size_t task, int thread) {
    const attn_job *j = arg;
    const batch *b = j->b;
    clara_ctx *ctx = b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t s = (uint32_t)(task / hp->n_head), head = (uint32_t)(task % hp->n_head);
    uint32_t d = hp->head_dim, q_dim = hp->n_head * d;
    if (j->skip[s] || j->t0 >= j->qb->seqs[s].n) return;
    attn_start a = attn_begin(j, s, head / (hp->n_head / hp->n_head_kv), thread);
    attn_head h = a.h;
    float *sc = a.sc, scale = a.scale;
    uint32_t n_q = a.n_q < j->t1 ? a.n_q : j->t1, keys0 = a.keys0;
    /* whether to copy is decided on all the sequence's rows, so each round does as one would */
    if (h.stride != d && a.n_q >= ATTN_COPY_MIN_ROWS && keys0 + a.n_q - 1 <= ctx->attn_kv_cap) {
        float *kc = ctx->attn_kv + (size_t)thread * 2 * ctx->attn_kv_cap * d;
        float *vc = kc + (size_t)ctx->attn_kv_cap * d;
        attn_copy_head(h.K, h.stride, keys0 + n_q - 1, d, kc);
        attn_copy_head(h.V, h.stride, keys0 + n_q - 1, d, vc);
        h = (attn_head){kc, vc, d, d, j->isa};
    }
    const float *q0 = ctx->q + (size_t)j->qb->row0[s] * q_dim + head * d;
    float *out0 = ctx->att + (size_t)j->qb->row0[s] * q_dim + head * d;
    uint32_t t = j->t0; /* a multiple of CLARA_ATTN_ROWS: rows group as in one round */
    if (j->isa != CLARA_ISA_REF)
        for (; t + CLARA_ATTN_ROWS <= n_q; t += CLARA_ATTN_ROWS) {
            uint32_t common = keys0 + t; /* row t + r has r more */
            attn_scores4(&h, q0 + (size_t)t * q_dim, q_dim, common, scale, sc, ctx->scores_cap);
            for (uint32_t r = 1; r < CLARA_ATTN_ROWS; r++)
                attn_scores(&h, q0 + (size_t)(t + r) * q_dim, common, common + r, scale,
                            sc + (size_t)r * ctx->scores_cap);
            attn_softmax_values4(&h, sc, ctx->scores_cap, common, 1, out0 + (size_t)t * q_dim,
                                 q_dim);
        }
    for (; t < n_q; t++) {
        attn_scores(&h, q0 + (size_t)t * q_dim, 0, keys0 + t, scale, sc);
        attn_softmax_values(&h, sc, keys0 + t, out0 + (size_t)t * q_dim);
    }
}

/* Task = (sequence, key/value head) for query rows fewer than CLARA_ATTN_ROWS (decoding): the
 * CLARA_ATTN_ROWS query heads that share the key/value head go together, over the same keys, so
 * each key and value row is read once for them instead of once per head (4 times at 7B), by
 * one thread. The same kernels, so the bits of attn_task. */
static void attn_group_task(void *arg, size_t task, int thread) {
    const attn_job *j = arg;
    clara_ctx *ctx = j->b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t s = (uint32_t)(task / hp->n_head_kv), kvh = (uint32_t)(task % hp->n_head_kv);
    uint32_t d = hp->head_dim, q_dim = hp->n_head * d;
    if (j->skip[s] || j->t0 >= j->qb->seqs[s].n) return;
    attn_start a = attn_begin(j, s, kvh, thread);
    size_t head0 = (size_t)kvh * CLARA_ATTN_ROWS * d; /* the group's first query head */
    for (uint32_t t = j->t0; t < a.n_q && t < j->t1; t++) {
        size_t row = (size_t)(j->qb->row0[s] + t) * q_dim + head0;
        attn_scores4(&a.h, ctx->q + row, d, a.keys0 + t, a.scale, a.sc, ctx->scores_cap);
        attn_softmax_values4(&a.h, a.sc, ctx->scores_cap, a.keys0 + t, 0, ctx->att + row, d);
    }
}

/* Whether attention goes by key/value head groups (attn_group_task): at the SIMD levels, when
 * every sequence has fewer query rows than the 4-row kernels take and the heads group by 4. */
static bool attn_grouped(const batch *qb, const clara_hparams *hp, clara_isa isa) {
    if (isa == CLARA_ISA_REF || hp->n_head != hp->n_head_kv * CLARA_ATTN_ROWS) return false;
    for (uint32_t s = 0; s < qb->n_seqs; s++)
        if (qb->seqs[s].n >= CLARA_ATTN_ROWS) return false;
    return true;
}

/* RoPE on the rows of q (n_heads per row, q_dim apart) or k. */
typedef struct {
    const batch *b;
    float *v;
    size_t dim;
    uint32_t n_heads;
} rope_args;

static void rope_range(const void *arg, uint32_t r0, uint32_t r1) {
    const rope_args *a = arg;
    const batch *b = a->b;
    uint32_t s = 0;
    for (uint32_t r = r0; r < r1; r++) {
        while (b->row0[s + 1] <= r) s++;
        rope(b->ctx, a->v + r * a->dim, a->n_heads, b->seqs[s].pos[r - b->row0[s]]);
    }
}

static void rope_rows(const batch *b, float *v, size_t dim, uint32_t n_heads) {
    rope_args a = {b, v, dim, n_heads};
    parallel_rows(b->ctx, b->n_rows, dim, rope_range, &a);
}

/* The k/v rows of cached sequences go into their slots, each head's part to that head's rows. */
static void cache_kv(const batch *b, uint32_t layer) {
    clara_ctx *ctx = b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    size_t d = hp->head_dim, kv_dim = (size_t)hp->n_head_kv * d;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        const clara_seq *sq = &b->seqs[s];
        if (sq->slot < 0) continue;
        clara_kv_slot *sl = &ctx->slots[sq->slot];
        for (uint32_t h = 0; h < hp->n_head_kv; h++) {
            size_t dst = (((size_t)layer * hp->n_head_kv + h) * sl->cap + sl->n_past) * d;
            for (uint32_t r = 0; r < sq->n; r++) {
                size_t src = (size_t)(b->row0[s] + r) * kv_dim + h * d;
                memcpy(sl->k + dst + r * d, ctx->k + src, d * sizeof(float));
                memcpy(sl->v + dst + r * d, ctx->v + src, d * sizeof(float));
            }
        }
    }
}

/* Query rows per sequence that attention takes in one round when sequences can be cancelled:
 * between rounds the batch is asked again, so a long prompt stops within a round rather than a
 * layer (17,500 rows of the demo model: ~1 s per layer, almost all attention). A multiple of
 * CLARA_ATTN_ROWS, so rows group as in one round; compression rows (at most 275 per sequence)
 * always fit in one round. */
#define ATTN_ROUND_ROWS 512

uint32_t clara_attn_round_rows(const clara_seq *seqs, const clara_seq *qseqs, uint32_t n_seqs,
                               uint32_t *most) {
    bool can_cancel = false;
    *most = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        if (qseqs[s].n > *most) *most = qseqs[s].n;
        can_cancel |= seqs[s].cancel != NULL;
    }
    return can_cancel ? ATTN_ROUND_ROWS : *most;
}

/* Polls the sequences of b not yet cancelled; skip[s] is set for those cancelled now. Returns
 * whether any sequence is left. */
static bool poll_cancelled(const batch *b, bool *skip) {
    bool left = false;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        if (!skip[s] && clara_cancel_poll(b->seqs[s].cancel)) skip[s] = true;
        left |= !skip[s];
    }
    return left;
}

/* Attention of the batch in rounds of query rows (one round when no sequence can be cancelled).
 * Returns false when every sequence was cancelled on the way (the layer is abandoned); rows of
 * sequences cancelled meanwhile are zeros, and leave the batch at the next layer. */
static bool attention_rounds(const batch *b, const batch *qb, uint32_t layer, bool *skip) {
    clara_ctx *ctx = b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t most, step = clara_attn_round_rows(b->seqs, qb->seqs, b->n_seqs, &most);
    attn_job j = {b, qb, layer, clara_isa_active(), 0, 0, skip};
    bool grouped = attn_grouped(qb, hp, j.isa);
    for (uint32_t t0 = 0; t0 < most; t0 += step) {
        if (t0 > 0 && !poll_cancelled(b, skip)) return false;
        j.t0 = t0;
        j.t1 = most - t0 < step ? most : t0 + step;
        if (grouped)
            clara_pool_run(ctx->kc.pool, (size_t)b->n_seqs * hp->n_head_kv, attn_group_task, &j);
        else
            clara_pool_run(ctx->kc.pool, (size_t)b->n_seqs * hp->n_head, attn_task, &j);
    }
    size_t q_dim = (size_t)hp->n_head * hp->head_dim;
    for (uint32_t s = 0; s < b->n_seqs; s++)
        if (skip[s]) /* defined values for the rest of the layer, which nobody reads */
            memset(ctx->att + (size_t)qb->row0[s] * q_dim, 0,
                   qb->seqs[s].n * q_dim * sizeof(float));
    return true;
}

/* Self-attention with the residual add. Keys and values come from every row of b; queries,
 * outputs and the residual from the rows of qb (b itself, or for the last layer the rows whose
 * outputs are wanted, whose residual rows x are then moved to qb's compact positions). Returns
 * false when every sequence was cancelled during the attention (the layer stops there). */
static bool attention_block(const batch *b, const batch *qb, uint32_t layer, bool *skip) {
    clara_ctx *ctx = b->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t n = b->n_rows, nq = qb->n_rows;
    size_t H = hp->n_embd, q_dim = (size_t)hp->n_head * hp->head_dim;
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    rmsnorm_rows(ctx, ctx->xn, ctx->x, ctx->m->layers[layer].attn_norm, n);
    const float *qin = ctx->xn;
    if (qb != b) { /* the query rows' normed inputs, compact, in att (free until attention) */
        for (uint32_t s = 0; s < b->n_seqs; s++)
            memcpy(ctx->att + (size_t)qb->row0[s] * H,
                   ctx->xn + (size_t)(b->row0[s + 1] - qb->seqs[s].n) * H,
                   qb->seqs[s].n * H * sizeof(float));
        qin = ctx->att;
    }
    if (qb == b) {
        static const int qkv[] = {CLARA_LIN_Q, CLARA_LIN_K, CLARA_LIN_V};
        float *ys[] = {ctx->q, ctx->k, ctx->v};
        linear_group(b, layer, qkv, 3, ctx->xn, 0, n, ys);
    } else {
        linear(qb, layer, CLARA_LIN_Q, qin, 0, nq, ctx->q, false);
        linear(b, layer, CLARA_LIN_K, ctx->xn, 0, n, ctx->k, true);
        linear(b, layer, CLARA_LIN_V, ctx->xn, 0, n, ctx->v, true);
    }
    rope_rows(qb, ctx->q, q_dim, hp->n_head);
    rope_rows(b, ctx->k, kv_dim, hp->n_head_kv);
    cache_kv(b, layer);
    if (!attention_rounds(b, qb, layer, skip)) return false;
    /* x += o_proj(att); the projection goes to xn (free now), then the residual add */
    linear(qb, layer, CLARA_LIN_O, ctx->att, 0, nq, ctx->xn, false);
    if (qb != b) /* compact positions are never after the original ones */
        for (uint32_t s = 0; s < b->n_seqs; s++)
            memmove(ctx->x + (size_t)qb->row0[s] * H,
                    ctx->x + (size_t)(b->row0[s + 1] - qb->seqs[s].n) * H,
                    qb->seqs[s].n * H * sizeof(float));
    add_rows(ctx, ctx->x, ctx->xn, nq, H);
    return true;
}

/* The size of the fewest equal parts of n rows with at most `most` rows each (0 for no rows). */
static uint32_t equal_part(uint32_t n, uint32_t most) {
    uint32_t parts = (n + most - 1) / most;
    return parts ? (n + parts - 1) / parts : 0;
}

/* The feed-forward block in chunks of rows, so that only [chunk][n_ff] buffers are needed. The
 * sequences of `all` (b itself, or the whole batch whose query rows b holds) are asked between
 * chunks whether they were cancelled: a long prompt's feed-forward is several chunks (on a 7B
 * model about half a second each), so it stops within one. Returns false when none is left (the
 * layer is abandoned); rows of those cancelled meanwhile are computed to the end of the layer
 * and leave the batch at the next one. */
static bool mlp_block(const batch *all, const batch *b, uint32_t layer, bool *skip) {
    clara_ctx *ctx = b->ctx;
    size_t H = ctx->m->hp.n_embd, F = ctx->m->hp.n_ff;
    rmsnorm_rows(ctx, ctx->xn, ctx->x, ctx->m->layers[layer].ffn_norm, b->n_rows);
    /* equal chunks (272 rows: one chunk, not 256 + 16, each unpacking the weights) */
    uint32_t chunk = equal_part(b->n_rows, CLARA_FFN_CHUNK_ROWS);
    for (uint32_t r0 = 0; r0 < b->n_rows; r0 += chunk) {
        if (r0 > 0 && !poll_cancelled(all, skip)) return false;
        uint32_t n = b->n_rows - r0 < chunk ? b->n_rows - r0 : chunk;
        float *xn = ctx->xn + (size_t)r0 * H;
        static const int gate_up[] = {CLARA_LIN_GATE, CLARA_LIN_UP};
        float *ys[] = {ctx->ff_gate, ctx->ff_up};
        linear_group(b, layer, gate_up, 2, xn, r0, n, ys);
        add_args g = {ctx->ff_gate, ctx->ff_up, F};
        parallel_rows(ctx, n, F, swiglu_range, &g);
        /* the chunk's normed input is consumed: its rows receive the down projection, in equal
         * parts of at most CLARA_DOWN_ROWS rows */
        uint32_t per = equal_part(n, CLARA_DOWN_ROWS);
        for (uint32_t d0 = 0; d0 < n; d0 += per) {
            uint32_t m = n - d0 < per ? n - d0 : per;
            linear(b, layer, CLARA_LIN_DOWN, ctx->ff_gate + (size_t)d0 * F, r0 + d0, m,
                   xn + (size_t)d0 * H, false);
        }
        add_rows(ctx, ctx->x + (size_t)r0 * H, xn, n, H);
    }
    return true;
}

/* Whether sequence s of b was cancelled (its outputs are not written). */
static bool seq_dropped(const batch *b, uint32_t s) {
    return b->seqs[s].cancel && b->seqs[s].cancel->hit;
}

/* Final norm, hidden-state capture and logits of each sequence's last row (one matmul for all),
 * for the sequences not cancelled. */
static clara_status outputs(const batch *b) {
    clara_ctx *ctx = b->ctx;
    const clara_model *m = ctx->m;
    size_t H = m->hp.n_embd, V = m->hp.n_vocab;
    rmsnorm_rows(ctx, ctx->xn, ctx->x, m->output_norm, b->n_rows);
    uint32_t n_log = 0;
    for (uint32_t s = 0; s < b->n_seqs; s++) n_log += b->seqs[s].logits && !seq_dropped(b, s);
    if (n_log > ctx->out_cap) { /* grow-only: decoding steps reuse the buffers */
        float *r = realloc(ctx->out_rows, n_log * H * sizeof(float));
        if (r) ctx->out_rows = r;
        float *l = realloc(ctx->out_logits, n_log * V * sizeof(float));
        if (l) ctx->out_logits = l;
        if (!r || !l) return clara_fail(CLARA_ERR_NOMEM, "out of memory for logits");
        ctx->out_cap = n_log;
    }
    for (uint32_t s = 0, i = 0; s < b->n_seqs; s++) {
        const clara_seq *sq = &b->seqs[s];
        if (seq_dropped(b, s)) continue;
        if (sq->hidden)
            memcpy(sq->hidden, ctx->xn + (size_t)b->row0[s] * H, sq->n * H * sizeof(float));
        if (sq->logits)
            memcpy(ctx->out_rows + i++ * H, ctx->xn + (size_t)(b->row0[s + 1] - 1) * H,
                   H * sizeof(float));
    }
    if (!n_log) return CLARA_OK;
    clara_matmul(&ctx->kc, &m->output, ctx->out_rows, n_log, ctx->out_logits, false, 1.0f);
    for (uint32_t s = 0, i = 0; s < b->n_seqs; s++)
        if (b->seqs[s].logits && !seq_dropped(b, s))
            memcpy(b->seqs[s].logits, ctx->out_logits + (size_t)i++ * V, V * sizeof(float));
    return CLARA_OK;
}

static clara_status prepare(clara_ctx *ctx, batch *b) {
    uint32_t max_keys = 0;
    b->row0[0] = 0;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        const clara_seq *sq = &b->seqs[s];
        uint32_t past = 0;
        if (sq->slot >= 0) {
            if ((uint32_t)sq->slot >= ctx->n_slots)
                return clara_fail(CLARA_ERR_INVALID_ARG, "KV slot %d was not reserved", sq->slot);
            clara_kv_slot *sl = &ctx->slots[sq->slot];
            past = sl->n_past;
            if (past + sq->n > sl->cap)
                return clara_fail(CLARA_ERR_INVALID_ARG, "KV slot %d holds %u positions, needs %u",
                                  sq->slot, sl->cap, past + sq->n);
        }
        if (past + sq->n > max_keys) max_keys = past + sq->n;
        b->row0[s + 1] = b->row0[s] + sq->n;
    }
    b->n_rows = b->row0[b->n_seqs];
    return clara_ctx_reserve_rows(ctx, b->n_rows, max_keys);
}

/* The last layer's query batch: each sequence's rows [out_from, n), with their positions and
 * output pointers; NULL (qb = b) when every row is wanted. */
static bool last_layer_rows(const batch *b, clara_seq *qseqs, uint32_t *qrow0, batch *qb) {
    bool pruned = false;
    qrow0[0] = 0;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        clara_seq q = b->seqs[s];
        uint32_t from = q.out_from < q.n ? q.out_from : 0;
        pruned |= from > 0;
        q.n -= from, q.pos += from, q.embd = NULL, q.out_from = 0;
        if (q.hidden) q.hidden += (size_t)from * b->ctx->m->hp.n_embd;
        qseqs[s] = q;
        qrow0[s + 1] = qrow0[s] + q.n;
    }
    *qb = (batch){b->ctx, qseqs, b->n_seqs, qrow0[b->n_seqs], qrow0};
    return pruned;
}

/* Drops the sequences of b that are cancelled now (poll: asks them; else they were just asked): the
 * rows of the others move together to the front of x, in order (a row never moves to a later
 * position). Rows are computed independently of each other, so the rest of the batch gives the same
 * bits. Returns how many are left. */
static uint32_t drop_cancelled(batch *b, clara_seq *seqs, bool poll) {
    size_t H = b->ctx->m->hp.n_embd;
    uint32_t k = 0, row = 0;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        if (poll ? clara_cancel_poll(seqs[s].cancel) : seqs[s].cancel && seqs[s].cancel->hit)
            continue;
        uint32_t from = b->row0[s]; /* read before row0[k <= s] is rewritten */
        if (from != row)
            memmove(b->ctx->x + (size_t)row * H, b->ctx->x + (size_t)from * H,
                    seqs[s].n * H * sizeof(float));
        seqs[k] = seqs[s];
        b->row0[k++] = row;
        row += seqs[s].n;
    }
    b->row0[k] = row;
    b->n_seqs = k;
    b->n_rows = row;
    return k;
}

/* Lets the context's between-layers work run (ctx.h) with the paused pass's residual rows kept
 * aside: the inner work gets x_aside as its x. If an inner pass grew the row buffers, the paused
 * rows' buffer grows with them (realloc keeps them), so x always holds cap_tokens rows. Without
 * memory for that, the work waits for the end of the pass (it is never required). */
static void between_layers(clara_ctx *ctx) {
    if (!ctx->between_layers || ctx->in_between) return;
    size_t H = ctx->m->hp.n_embd;
    uint32_t cap = ctx->cap_tokens;
    if (ctx->x_aside_cap < cap) {
        float *p = realloc(ctx->x_aside, (size_t)cap * H * sizeof(float));
        if (!p) return;
        ctx->x_aside = p;
        ctx->x_aside_cap = cap;
    }
    float *paused = ctx->x;
    ctx->x = ctx->x_aside;
    ctx->in_between = true;
    ctx->between_layers(ctx->between_arg);
    ctx->in_between = false;
    ctx->x_aside = ctx->x;
    ctx->x_aside_cap = ctx->cap_tokens;
    ctx->x = paused;
    cpu_kctx_forget_acts(&ctx->kc); /* the scratch served other inputs meanwhile */
    if (ctx->cap_tokens > cap) {
        float *p = realloc(ctx->x, (size_t)ctx->cap_tokens * H * sizeof(float));
        if (p) {
            ctx->x = p;
        } else { /* swap instead: the paused rows fit in the grown buffer */
            memcpy(ctx->x_aside, ctx->x, (size_t)cap * H * sizeof(float));
            float *t = ctx->x;
            ctx->x = ctx->x_aside;
            ctx->x_aside = t;
            ctx->x_aside_cap = cap;
        }
    }
}

/* Layers on a Vulkan device (vulkan/engine.h): the residual rows x go to the device before the
 * first device layer of a run and come back before a CPU layer or the outputs; they stay there
 * across consecutive device layers. Without the backend every layer runs here. */
typedef struct {
    bool x_dev;        /* x lives on the device now */
    uint32_t dev_seqs; /* b's sequences when the device last saw the batch (0: not yet) */
} dev_state;

#ifdef CLARA_HAVE_VULKAN
static bool layer_on_device(const clara_ctx *ctx, uint32_t l) {
    return ctx->vk && !ctx->vk_broken && clvk_engine_has_layer(ctx->vk, l);
}

static clvk_rowset rowset_of(const batch *b) {
    return (clvk_rowset){b->seqs, b->n_seqs, b->n_rows, b->row0};
}

/* Brings x back to the host when it is on the device. */
static clara_status dev_x_home(const batch *b, dev_state *ds) {
    if (!ds->x_dev) return CLARA_OK;
    ds->x_dev = false;
    clara_status st = clvk_x_down(b->ctx, b->ctx->x, b->n_rows);
    if (st != CLARA_OK) b->ctx->vk_broken = true;
    return st;
}

/* Layer l on the device: the pass's device state (again after sequences left), x sent there. */
static clara_status dev_layer(const batch *b, const batch *q, uint32_t l, dev_state *ds,
                              bool *left) {
    clara_ctx *ctx = b->ctx;
    clvk_rowset rb = rowset_of(b), rq = rowset_of(q);
    clara_status st = CLARA_OK;
    if (ds->dev_seqs != b->n_seqs) {
        uint32_t max_keys = 0;
        for (uint32_t s = 0; s < b->n_seqs; s++) {
            int slot = b->seqs[s].slot;
            uint32_t k = b->seqs[s].n + (slot >= 0 ? ctx->slots[slot].n_past : 0);
            if (k > max_keys) max_keys = k;
        }
        st = clvk_pass_begin(ctx, &rb, max_keys);
        ds->dev_seqs = b->n_seqs;
    }
    if (st == CLARA_OK && !ds->x_dev) {
        st = clvk_x_up(ctx, ctx->x, b->n_rows);
        ds->x_dev = st == CLARA_OK;
    }
    if (st == CLARA_OK) st = clvk_layer(ctx, &rb, q == b ? &rb : &rq, l, left);
    if (st != CLARA_OK) ctx->vk_broken = true;
    return st;
}

/* Whether a sequence of b is cancelled now (polled: the answer latches). */
static bool any_cancelled(const batch *b) {
    bool hit = false;
    for (uint32_t s = 0; s < b->n_seqs; s++) hit |= clara_cancel_poll(b->seqs[s].cancel);
    return hit;
}
#else
static bool layer_on_device(const clara_ctx *ctx, uint32_t l) {
    (void)ctx, (void)l;
    return false;
}
static clara_status dev_x_home(const batch *b, dev_state *ds) {
    (void)b, (void)ds;
    return CLARA_OK;
}
static clara_status dev_layer(const batch *b, const batch *q, uint32_t l, dev_state *ds,
                              bool *left) {
    (void)b, (void)q, (void)l, (void)ds, (void)left;
    return CLARA_ERR_UNSUPPORTED;
}
static bool any_cancelled(const batch *b) {
    (void)b;
    return false;
}
#endif

/* The layers over the batch (live: its sequences, rewritten as they leave). Before each layer
 * the cancelled sequences leave; between rounds of attention they stop being computed. *out
 * receives the last layer's query batch, whose rows are the outputs (on the device when
 * ds->x_dev). Returns false when no sequence is left or a device call failed (*st). */
static bool run_layers(batch *b, clara_seq *live, clara_seq *qseqs, bool *skip, batch *out,
                       dev_state *ds, clara_status *st) {
    clara_ctx *ctx = b->ctx;
    const clara_model *m = ctx->m;
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        between_layers(ctx);             /* also before the first: passes follow each other */
        if (ds->x_dev && ctx->vk_broken) /* a pass in between failed on the device */
            *st = clara_fail(CLARA_ERR_IO, "vulkan: the device failed during this pass");
        /* with x on the device, the sequences are asked once here; x comes home only when one
         * leaves (each is asked once per layer, as on the CPU) */
        bool asked = ds->x_dev, leave = false;
        if (*st == CLARA_OK && asked && (leave = any_cancelled(b))) *st = dev_x_home(b, ds);
        if (*st != CLARA_OK) return false;
        if ((!asked || leave) && drop_cancelled(b, live, !asked) == 0) return false;
        memset(skip, 0, b->n_seqs * sizeof *skip);
        batch qb; /* its row starts follow b's */
        bool pruned =
            l + 1 == m->hp.n_layer && last_layer_rows(b, qseqs, b->row0 + b->n_seqs + 1, &qb);
        const batch *q = pruned ? &qb : b;
        if (layer_on_device(ctx, l)) {
            bool left = true;
            *st = dev_layer(b, q, l, ds, &left);
            if (*st != CLARA_OK || !left) return false;
        } else {
            if ((*st = dev_x_home(b, ds)) != CLARA_OK) return false;
            if (!attention_block(b, q, l, skip) || !mlp_block(b, q, l, skip)) return false;
        }
        *out = *q;
    }
    return true;
}

/* A context whose device failed (vk_broken) goes on on the CPU: the host slots hold every row,
 * so nothing is lost. Done at the start of an outermost pass, never inside another. */
static void drop_broken_device(clara_ctx *ctx) {
#ifdef CLARA_HAVE_VULKAN
    if (!ctx->vk || !ctx->vk_broken || ctx->in_between) return;
    clvk_engine_free(ctx->vk);
    ctx->vk = NULL;
    ctx->vk_broken = false;
    snprintf(ctx->backend_note, sizeof ctx->backend_note,
             "the Vulkan device failed during a request; running on the CPU since");
    CLARA_LOGW("vulkan: the device failed during a request; this context runs on the CPU now");
#else
    (void)ctx;
#endif
}

clara_status clara_forward_batch(clara_ctx *ctx, const clara_seq *seqs, uint32_t n_seqs) {
    const clara_model *m = ctx->m;
    size_t H = m->hp.n_embd;
    uint32_t *row0 = malloc(2 * (n_seqs + 1) * sizeof(uint32_t));
    clara_seq *qseqs = malloc((n_seqs ? n_seqs : 1) * sizeof *qseqs);
    clara_seq *live = malloc((n_seqs ? n_seqs : 1) * sizeof *live);
    bool *skip = malloc((n_seqs ? n_seqs : 1) * sizeof *skip);
    if (!row0 || !qseqs || !live || !skip) {
        free(row0), free(qseqs), free(live), free(skip);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    }
    if (n_seqs) memcpy(live, seqs, n_seqs * sizeof *live);
    batch b = {ctx, live, n_seqs, 0, row0};
    drop_broken_device(ctx);
    clara_status s = prepare(ctx, &b);
    if (s == CLARA_OK && b.n_rows > 0) {
        for (uint32_t i = 0; i < n_seqs; i++)
            memcpy(ctx->x + (size_t)row0[i] * H, seqs[i].embd, seqs[i].n * H * sizeof(float));
        batch ob = b;
        dev_state ds = {false, 0};
        if (run_layers(&b, live, qseqs, skip, &ob, &ds, &s) &&
            (s = dev_x_home(&ob, &ds)) == CLARA_OK) {
            for (uint32_t i = 0; i < b.n_seqs; i++) { /* live[i] and ob.seqs[i]: one sequence */
                if (live[i].slot < 0 || seq_dropped(&ob, i)) continue;
                clara_kv_slot *sl = &ctx->slots[live[i].slot];
                /* the device layers wrote these rows to the mirror as well */
                if (ds.dev_seqs && sl->dev_valid == sl->n_past) sl->dev_valid += live[i].n;
                sl->n_past += live[i].n;
            }
            s = outputs(&ob);
        }
    }
    free(row0);
    free(qseqs);
    free(live);
    free(skip);
    return s;
}
