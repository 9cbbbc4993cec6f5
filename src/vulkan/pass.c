/* pass.c - a forward pass's state on the device (engine.h): scratch sized for the batch, the
 * rotation table, the residual rows' trips, and the slots' mirrors brought up to date: the rows
 * [dev_valid, n_past) of each device layer are uploaded from the host slot, the truth. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "vulkan/engine_internal.h"

#define SCORES_MAX_BYTES (64ull << 20)

static uint64_t max3(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Scratch for n rows attending over up to max_keys positions. */
static clara_status size_scratch(clvk_engine *e, uint32_t n, uint32_t max_keys) {
    const clara_hparams *hp = &e->m->hp;
    uint64_t H = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim, F = hp->n_ff;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim, hq = H > q ? H : q;
    uint64_t ff_rows = n < CLARA_FFN_CHUNK_ROWS ? n : CLARA_FFN_CHUNK_ROWS;
    uint64_t per_row_scores = (uint64_t)hp->n_head * (max_keys ? max_keys : 1) * 4;
    uint64_t score_rows = SCORES_MAX_BYTES / per_row_scores;
    if (score_rows < 1) score_rows = 1;
    if (score_rows > n) score_rows = n;
    struct {
        clvk_buf **b;
        uint64_t bytes;
    } want[] = {
        {&e->xn, n * hq * 4},
        {&e->q, n * q * 4},
        {&e->k, n * kv * 4},
        {&e->v, n * kv * 4},
        {&e->att, n * hq * 4},
        {&e->tmp, n * H * 4},
        {&e->ff_gate, ff_rows * F * 4},
        {&e->ff_up, ff_rows * F * 4},
        {&e->lora_in, n * max3(H, q, F) * 4},
        {&e->lora_t, (uint64_t)n * clvk_engine_max_rank(e->m) * 4},
        {&e->lora_y, n * max3(q, H, F) * 4},
        {&e->scores, score_rows * per_row_scores},
    };
    clara_status st = CLARA_OK;
    for (size_t i = 0; i < sizeof want / sizeof want[0] && st == CLARA_OK; i++)
        st = clvk_engine_ensure(e, want[i].b, want[i].bytes);
    return st;
}

/* The (cos, sin) of each row's position and pair, formed as forward.c's rope() forms them. */
static clara_status rope_table(clara_ctx *ctx, const clvk_rowset *b, clvk_buf **dst) {
    clvk_engine *e = ctx->vk;
    uint32_t d = ctx->m->hp.head_dim;
    size_t need = (size_t)b->n_rows * d;
    if (need > e->host_cs_cap) {
        float *p = realloc(e->host_cs, need * sizeof(float));
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        e->host_cs = p, e->host_cs_cap = need;
    }
    for (uint32_t s = 0; s < b->n_seqs; s++)
        for (uint32_t r = 0; r < b->seqs[s].n; r++) {
            float *cs = e->host_cs + (size_t)(b->row0[s] + r) * d;
            for (uint32_t i = 0; i < d / 2; i++) {
                float angle = (float)b->seqs[s].pos[r] * ctx->rope_inv_freq[i];
                cs[2 * i] = (float)cos((double)angle);
                cs[2 * i + 1] = (float)sin((double)angle);
            }
        }
    clara_status st = clvk_engine_ensure(e, dst, need * 4);
    if (st == CLARA_OK && need) st = clvk_upload(e->dev, *dst, 0, e->host_cs, need * 4);
    return st;
}

clara_status clvk_pass_rope_q(clara_ctx *ctx, const clvk_rowset *qb) {
    return rope_table(ctx, qb, &ctx->vk->pass[ctx->in_between].cs_q);
}

/* The mirror of slot `slot` holds at least the host slot's capacity; a new one is empty. */
static clara_status mirror_of(clara_ctx *ctx, uint32_t slot, clvk_dev_slot **out) {
    clvk_engine *e = ctx->vk;
    if (slot >= e->n_slots) {
        clvk_dev_slot *p = realloc(e->slots, (slot + 1) * sizeof *p);
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
        memset(p + e->n_slots, 0, (slot + 1 - e->n_slots) * sizeof *p);
        e->slots = p, e->n_slots = slot + 1;
    }
    clvk_dev_slot *m = &e->slots[slot];
    clara_kv_slot *sl = &ctx->slots[slot];
    if (m->cap < sl->cap) {
        const clara_hparams *hp = &ctx->m->hp;
        uint64_t bytes = (uint64_t)e->n_dev * hp->n_head_kv * sl->cap * hp->head_dim * 4;
        m->cap = 0;
        clara_status st = clvk_engine_ensure(e, &m->k, bytes);
        if (st == CLARA_OK) st = clvk_engine_ensure(e, &m->v, bytes);
        if (st != CLARA_OK) return st;
        m->cap = sl->cap;
        sl->dev_valid = 0; /* a new mirror holds nothing yet */
    }
    *out = m;
    return CLARA_OK;
}

/* Uploads the rows [dev_valid, n_past) of each device layer and head of slot `slot`. */
static clara_status mirror_sync(clara_ctx *ctx, uint32_t slot) {
    clvk_engine *e = ctx->vk;
    clvk_dev_slot *m = NULL;
    clara_status st = mirror_of(ctx, slot, &m);
    clara_kv_slot *sl = &ctx->slots[slot];
    if (st != CLARA_OK || sl->dev_valid >= sl->n_past) return st;
    const clara_hparams *hp = &ctx->m->hp;
    size_t d = hp->head_dim, a = sl->dev_valid, rows = sl->n_past - a;
    for (uint32_t dl = 0; dl < e->n_dev && st == CLARA_OK; dl++)
        for (uint32_t h = 0; h < hp->n_head_kv && st == CLARA_OK; h++) {
            size_t host = (((size_t)(e->first + dl) * hp->n_head_kv + h) * sl->cap + a) * d;
            size_t dev = (((size_t)dl * hp->n_head_kv + h) * m->cap + a) * d;
            st = clvk_upload(e->dev, m->k, dev * 4, sl->k + host, rows * d * 4);
            if (st == CLARA_OK) st = clvk_upload(e->dev, m->v, dev * 4, sl->v + host, rows * d * 4);
        }
    if (st == CLARA_OK) sl->dev_valid = sl->n_past;
    return st;
}

clara_status clvk_pass_begin(clara_ctx *ctx, const clvk_rowset *b, uint32_t max_keys) {
    clvk_engine *e = ctx->vk;
    clvk_dev_pass *p = &e->pass[ctx->in_between];
    clara_status st = size_scratch(e, b->n_rows, max_keys);
    if (st == CLARA_OK)
        st = clvk_engine_ensure(e, &p->x, (uint64_t)b->n_rows * ctx->m->hp.n_embd * 4);
    if (st == CLARA_OK) st = rope_table(ctx, b, &p->cs);
    for (uint32_t s = 0; s < b->n_seqs && st == CLARA_OK; s++)
        if (b->seqs[s].slot >= 0) st = mirror_sync(ctx, (uint32_t)b->seqs[s].slot);
    return st;
}

clara_status clvk_x_up(clara_ctx *ctx, const float *x, uint32_t rows) {
    clvk_engine *e = ctx->vk;
    size_t bytes = (size_t)rows * ctx->m->hp.n_embd * 4;
    return bytes ? clvk_upload(e->dev, e->pass[ctx->in_between].x, 0, x, bytes) : CLARA_OK;
}

clara_status clvk_x_down(clara_ctx *ctx, float *x, uint32_t rows) {
    clvk_engine *e = ctx->vk;
    size_t bytes = (size_t)rows * ctx->m->hp.n_embd * 4;
    return bytes ? clvk_download(e->dev, e->pass[ctx->in_between].x, 0, x, bytes) : CLARA_OK;
}
