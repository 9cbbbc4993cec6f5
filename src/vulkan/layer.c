/* layer.c - one transformer layer on the device (engine.h: clvk_layer), with the semantics of
 * forward.c's attention_block and mlp_block: linear layers over all rows at once, each sequence's
 * LoRA deltas y += scale·(x·Aᵀ)·Bᵀ on its own rows (matmul's accumulate mode), RoPE from the
 * host's table, new keys and values into the slot's mirror and back to the host slot, attention
 * per sequence, the last layer's query rows pruned, cancellation polled where forward.c polls.
 * Operands that must start at a row other than the first are first copied to a scratch buffer
 * (the shaders index from a buffer's start). A layer's dispatches are recorded into one batch
 * (device.h), submitted once at the layer's end, and before each poll for cancellation between
 * rounds (so the host asks after the work so far has run, as when each dispatch waited); the new
 * key/value rows go back to the host slot after that submit. */
#include <math.h>
#include <string.h>

#include "base/status.h"
#include "vulkan/engine_internal.h"
#include "vulkan/ops.h"
#include "vulkan/ops_layer.h"

typedef struct {
    clara_ctx *ctx;
    clvk_engine *e;
    clvk_dev *dev;
    uint32_t layer, H;
} lctx;

/* Whether any sequence of b is left (the cancelled ones latch, as forward.c's poll). */
static bool any_left(const clvk_rowset *b) {
    bool left = false;
    for (uint32_t s = 0; s < b->n_seqs; s++) left |= !clara_cancel_poll(b->seqs[s].cancel);
    return left;
}

static clara_status copy_rows(clvk_dev *d, clvk_buf *src, uint64_t src_off, clvk_buf *dst,
                              uint64_t dst_off, uint32_t rows, uint32_t width) {
    clvk_rows_at s = {src_off, 0, width}, t = {dst_off, 0, width};
    return clvk_rows(d, CLVK_ROWS_COPY, src, s, dst, t, 1, rows, width);
}

/* One delta over the rows [a, e) of the linear layer's input in[a - r0 ...]: y += scale·(x·Aᵀ)·Bᵀ.
 */
typedef struct {
    const clara_adapter *ad;
    const clara_lora *lo;
    uint32_t a, e;
} lora_run;

static clara_status lora_apply(const lctx *c, int lin, const lora_run *r, clvk_buf *in, uint32_t r0,
                               clvk_buf *y) {
    const clara_mat *W = &c->ctx->m->layers[c->layer].w[lin];
    clvk_buf *A, *B;
    clvk_engine_lora(c->e, r->ad, c->layer, lin, &A, &B);
    if (!A || !B)
        return clara_fail(CLARA_ERR_INVALID_ARG, "vulkan: adapter %s is not on the device",
                          r->ad->name);
    clvk_buf *x = in, *out = y;
    uint32_t at = r->a - r0, m = r->e - r->a;
    clara_status st = CLARA_OK;
    if (at > 0) { /* the rows, moved to the start of scratch buffers */
        x = c->e->lora_in, out = c->e->lora_y;
        st = copy_rows(c->dev, in, (uint64_t)at * W->cols, x, 0, m, (uint32_t)W->cols);
        if (st == CLARA_OK)
            st = copy_rows(c->dev, y, (uint64_t)at * W->rows, out, 0, m, (uint32_t)W->rows);
    }
    const clara_lora *lo = r->lo;
    if (st == CLARA_OK)
        st = clvk_matmul(c->dev, A, lo->a.type, lo->a.rows, lo->a.cols, x, m, c->e->lora_t, false,
                         1.0f);
    if (st == CLARA_OK)
        st = clvk_matmul(c->dev, B, lo->b.type, lo->b.rows, lo->b.cols, c->e->lora_t, m, out, true,
                         r->ad->scale);
    if (st == CLARA_OK && at > 0)
        st = copy_rows(c->dev, out, 0, y, (uint64_t)at * W->rows, m, (uint32_t)W->rows);
    return st;
}

/* y[0, n) += the LoRA deltas of the rows [r0, r0 + n) of bb, whose inputs are in[0, n). Each row
 * gets its sequence's deltas in its adapters' order; consecutive sequences with the same single
 * adapter (a decoding batch) go as one run of rows: a row's result does not depend on the other
 * rows of a matmul. */
static clara_status lora_deltas(const lctx *c, const clvk_rowset *bb, int lin, clvk_buf *in,
                                uint32_t r0, uint32_t n, clvk_buf *y) {
    clara_status st = CLARA_OK;
    lora_run run = {NULL, NULL, 0, 0};
    for (uint32_t s = 0; s < bb->n_seqs && st == CLARA_OK; s++) {
        const clara_adapter_set *set = bb->seqs[s].adapters;
        uint32_t a = bb->row0[s] > r0 ? bb->row0[s] : r0;
        uint32_t e = bb->row0[s + 1] < r0 + n ? bb->row0[s + 1] : r0 + n;
        for (int i = 0; set && a < e && i < set->n && st == CLARA_OK; i++) {
            const clara_adapter *ad = set->a[i];
            if (!ad->mods) continue; /* a fresh adapter: B = 0 */
            const clara_lora *lo = &ad->mods[c->layer * CLARA_N_LIN + lin];
            if (!lo->a.data) continue;
            if (run.lo == lo && run.e == a && set->n == 1) {
                run.e = e; /* the next sequence's rows, same adapter */
                continue;
            }
            if (run.lo) st = lora_apply(c, lin, &run, in, r0, y);
            run = (lora_run){ad, lo, a, e};
            if (set->n > 1 && st == CLARA_OK) { /* several adapters: each in turn, unmerged */
                st = lora_apply(c, lin, &run, in, r0, y);
                run.lo = NULL;
            }
        }
    }
    if (run.lo && st == CLARA_OK) st = lora_apply(c, lin, &run, in, r0, y);
    return st;
}

/* Linear layer `lin` over rows [r0, r0 + n) of bb: y[0, n) = in[0, n)·Wᵀ + the deltas. */
static clara_status linear(const lctx *c, const clvk_rowset *bb, int lin, clvk_buf *in, uint32_t r0,
                           uint32_t n, clvk_buf *y) {
    const clara_mat *W = &c->ctx->m->layers[c->layer].w[lin];
    clvk_buf *dw = c->e->layers[c->layer - c->e->first].w[lin];
    clara_status st = clvk_matmul(c->dev, dw, W->type, W->rows, W->cols, in, n, y, false, 1.0f);
    return st == CLARA_OK ? lora_deltas(c, bb, lin, in, r0, n, y) : st;
}

/* New key/value rows of the cached sequences into their mirrors (recorded in the layer's batch). */
static clara_status cache_kv(const lctx *c, const clvk_rowset *b) {
    clara_ctx *ctx = c->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t d = hp->head_dim, kv_dim = hp->n_head_kv * d, dl = c->layer - c->e->first;
    clara_status st = CLARA_OK;
    for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++) {
        const clara_seq *sq = &b->seqs[s];
        if (sq->slot < 0) continue;
        const clara_kv_slot *sl = &ctx->slots[sq->slot];
        const clvk_dev_slot *m = &c->e->slots[sq->slot];
        clvk_rows_at from = {(uint64_t)b->row0[s] * kv_dim, d, kv_dim};
        clvk_rows_at to = {(((uint64_t)dl * hp->n_head_kv) * m->cap + sl->n_past) * d,
                           (uint64_t)m->cap * d, d};
        st = clvk_rows(c->dev, CLVK_ROWS_COPY, c->e->k, from, m->k, to, hp->n_head_kv, sq->n, d);
        if (st == CLARA_OK)
            st =
                clvk_rows(c->dev, CLVK_ROWS_COPY, c->e->v, from, m->v, to, hp->n_head_kv, sq->n, d);
    }
    return st;
}

/* The new key/value rows of the cached sequences back to their host slots, after the layer's
 * batch ran: the host slot stays the truth (the layer writes no key/value scratch after
 * cache_kv; ctx->k/v are free host scratch). */
static clara_status kv_home(const lctx *c, const clvk_rowset *b) {
    clara_ctx *ctx = c->ctx;
    const clara_hparams *hp = &ctx->m->hp;
    uint32_t d = hp->head_dim, kv_dim = hp->n_head_kv * d;
    bool any = false;
    for (uint32_t s = 0; s < b->n_seqs; s++) any |= b->seqs[s].slot >= 0;
    if (!any) return CLARA_OK;
    size_t bytes = (size_t)b->n_rows * kv_dim * 4;
    clara_status st = clvk_download(c->dev, c->e->k, 0, ctx->k, bytes);
    if (st == CLARA_OK) st = clvk_download(c->dev, c->e->v, 0, ctx->v, bytes);
    for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++) {
        const clara_seq *sq = &b->seqs[s];
        if (sq->slot < 0) continue;
        clara_kv_slot *sl = &ctx->slots[sq->slot];
        for (uint32_t h = 0; h < hp->n_head_kv; h++) {
            size_t dst = (((size_t)c->layer * hp->n_head_kv + h) * sl->cap + sl->n_past) * d;
            for (uint32_t r = 0; r < sq->n; r++) {
                size_t src = (size_t)(b->row0[s] + r) * kv_dim + h * d;
                memcpy(sl->k + dst + r * d, ctx->k + src, d * sizeof(float));
                memcpy(sl->v + dst + r * d, ctx->v + src, d * sizeof(float));
            }
        }
    }
    return st;
}

/* Sequence s's attention shape: its keys in its slot's mirror or in the batch's own rows. */
static clvk_attn_shape attn_shape(const lctx *c, const clvk_rowset *b, const clvk_rowset *qb,
                                  uint32_t s, clvk_buf **K, clvk_buf **V) {
    const clara_hparams *hp = &c->ctx->m->hp;
    uint32_t d = hp->head_dim, q_dim = hp->n_head * d, kv_dim = hp->n_head_kv * d;
    const clara_seq *sq = &b->seqs[s];
    uint32_t skip = sq->n - qb->seqs[s].n; /* rows before the first query */
    clvk_attn_shape a = {hp->n_head, hp->n_head_kv,
                         d,          qb->seqs[s].n,
                         skip + 1,   qb->row0[s] * q_dim,
                         q_dim,      0,
                         0,          0,
                         0,          qb->row0[s] * q_dim,
                         q_dim,      1.0f / sqrtf((float)d)};
    if (sq->slot < 0) {
        *K = c->e->k, *V = c->e->v;
        a.k_off = a.v_off = b->row0[s] * kv_dim;
        a.head_step = d, a.kv_stride = kv_dim;
    } else {
        const clvk_dev_slot *m = &c->e->slots[sq->slot];
        *K = m->k, *V = m->v;
        a.keys0 += c->ctx->slots[sq->slot].n_past;
        a.k_off = a.v_off = (c->layer - c->e->first) * hp->n_head_kv * m->cap * d;
        a.head_step = m->cap * d, a.kv_stride = d;
    }
    return a;
}

/* Attention of every sequence in rounds of query rows (one round when none can be cancelled). */
static clara_status attention(const lctx *c, const clvk_rowset *b, const clvk_rowset *qb,
                              bool *left) {
    uint32_t most, step = clara_attn_round_rows(b->seqs, qb->seqs, b->n_seqs, &most);
    clara_status st = CLARA_OK;
    for (uint32_t t0 = 0; t0 < most && st == CLARA_OK; t0 += step) {
        if (t0 > 0 && (st = clvk_batch_flush(c->dev)) != CLARA_OK) return st;
        if (t0 > 0 && !(*left = any_left(b))) return CLARA_OK;
        for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++) {
            clvk_buf *K, *V;
            clvk_attn_shape a = attn_shape(c, b, qb, s, &K, &V);
            st = clvk_attention(c->dev, &a, t0, t0 + step, c->e->q, K, V, c->e->att, c->e->scores);
        }
    }
    return st;
}

/* forward.c's attention_block: x[0, nq) = x[query rows] + o_proj(attention). */
static clara_status attention_block(const lctx *c, const clvk_rowset *b, const clvk_rowset *qb,
                                    bool *left) {
    clara_ctx *ctx = c->ctx;
    clvk_engine *e = c->e;
    const clara_hparams *hp = &ctx->m->hp;
    const clvk_dev_layer *D = &e->layers[c->layer - e->first];
    clvk_dev_pass *p = &e->pass[ctx->in_between];
    uint32_t n = b->n_rows, nq = qb->n_rows, H = c->H;
    clara_status st = clvk_rmsnorm(c->dev, p->x, D->attn_norm, e->xn, n, H, hp->rms_eps);
    clvk_buf *qin = e->xn;
    if (qb != b) { /* the query rows' normed inputs, compact, in att (free until attention) */
        for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++)
            st = copy_rows(c->dev, e->xn, (uint64_t)(b->row0[s + 1] - qb->seqs[s].n) * H, e->att,
                           (uint64_t)qb->row0[s] * H, qb->seqs[s].n, H);
        qin = e->att;
    }
    if (st == CLARA_OK) st = linear(c, qb, CLARA_LIN_Q, qin, 0, nq, e->q);
    if (st == CLARA_OK) st = linear(c, b, CLARA_LIN_K, e->xn, 0, n, e->k);
    if (st == CLARA_OK) st = linear(c, b, CLARA_LIN_V, e->xn, 0, n, e->v);
    if (st == CLARA_OK)
        st = clvk_rope(c->dev, e->q, qb == b ? p->cs : p->cs_q, nq, hp->n_head, hp->head_dim);
    if (st == CLARA_OK) st = clvk_rope(c->dev, e->k, p->cs, n, hp->n_head_kv, hp->head_dim);
    if (st == CLARA_OK) st = cache_kv(c, b);
    if (st == CLARA_OK) st = attention(c, b, qb, left);
    if (st != CLARA_OK || !*left) return st;
    st = linear(c, qb, CLARA_LIN_O, e->att, 0, nq, e->xn);
    if (qb != b) { /* the query rows' residuals to their compact positions, through tmp */
        for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++)
            st = copy_rows(c->dev, p->x, (uint64_t)(b->row0[s + 1] - qb->seqs[s].n) * H, e->tmp,
                           (uint64_t)qb->row0[s] * H, qb->seqs[s].n, H);
        if (st == CLARA_OK) st = copy_rows(c->dev, e->tmp, 0, p->x, 0, nq, H);
    }
    clvk_rows_at all = {0, 0, H};
    if (st == CLARA_OK) st = clvk_rows(c->dev, CLVK_ROWS_ADD, e->xn, all, p->x, all, 1, nq, H);
    return st;
}

/* The fewest equal parts of n rows with at most `most` each (forward.c's equal_part). */
static uint32_t equal_part(uint32_t n, uint32_t most) {
    uint32_t parts = (n + most - 1) / most;
    return parts ? (n + parts - 1) / parts : 0;
}

/* forward.c's mlp_block over qb's rows, in chunks, the sequences of b polled between them. */
static clara_status mlp_block(const lctx *c, const clvk_rowset *b, const clvk_rowset *qb,
                              bool *left) {
    clvk_engine *e = c->e;
    const clara_hparams *hp = &c->ctx->m->hp;
    clvk_dev_pass *p = &e->pass[c->ctx->in_between];
    uint32_t H = c->H, F = hp->n_ff;
    clara_status st = clvk_rmsnorm(c->dev, p->x, e->layers[c->layer - e->first].ffn_norm, e->xn,
                                   qb->n_rows, H, hp->rms_eps);
    uint32_t chunk = equal_part(qb->n_rows, CLARA_FFN_CHUNK_ROWS);
    for (uint32_t r0 = 0; r0 < qb->n_rows && st == CLARA_OK; r0 += chunk) {
        if (r0 > 0 && (st = clvk_batch_flush(c->dev)) != CLARA_OK) return st;
        if (r0 > 0 && !(*left = any_left(b))) return CLARA_OK;
        uint32_t n = qb->n_rows - r0 < chunk ? qb->n_rows - r0 : chunk;
        clvk_buf *in = e->xn;
        if (r0 > 0) { /* the chunk's inputs to the start of att (free in this block) */
            in = e->att;
            st = copy_rows(c->dev, e->xn, (uint64_t)r0 * H, in, 0, n, H);
        }
        if (st == CLARA_OK) st = linear(c, qb, CLARA_LIN_GATE, in, r0, n, e->ff_gate);
        if (st == CLARA_OK) st = linear(c, qb, CLARA_LIN_UP, in, r0, n, e->ff_up);
        if (st == CLARA_OK) st = clvk_swiglu(c->dev, e->ff_gate, e->ff_up, (uint64_t)n * F);
        if (st == CLARA_OK) st = linear(c, qb, CLARA_LIN_DOWN, e->ff_gate, r0, n, e->tmp);
        clvk_rows_at from = {0, 0, H}, to = {(uint64_t)r0 * H, 0, H};
        if (st == CLARA_OK) st = clvk_rows(c->dev, CLVK_ROWS_ADD, e->tmp, from, p->x, to, 1, n, H);
    }
    return st;
}

clara_status clvk_layer(clara_ctx *ctx, const clvk_rowset *b, const clvk_rowset *qb, uint32_t layer,
                        bool *left) {
    lctx c = {ctx, ctx->vk, ctx->vk->dev, layer, ctx->m->hp.n_embd};
    *left = true;
    clara_status st = CLARA_OK;
    if (qb != b) st = clvk_pass_rope_q(ctx, qb); /* an upload: before the batch */
    if (st == CLARA_OK) st = clvk_batch_begin(c.dev);
    if (st != CLARA_OK) return st;
    st = attention_block(&c, b, qb, left);
    if (st == CLARA_OK && *left) st = mlp_block(&c, b, qb, left);
    if (st == CLARA_OK) {
        st = clvk_batch_end(c.dev);
    } else { /* the pass fails and the device is given up: what is left need not run */
        clvk_batch_discard(c.dev);
        return st;
    }
    return st == CLARA_OK ? kv_home(&c, b) : st;
}
