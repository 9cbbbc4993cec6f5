/* prefix.c - the prompt's constant head computed once (prefix.h): a few (adapter set, head ids)
 * entries per context, each holding the head's keys and values in the slot layout of ctx.h
 * ([layer][kv head][position][head_dim], with the head's length as the capacity). */
#include "prefix.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "cpu/matmul.h"

typedef struct {
    clara_adapter_set set;
    int32_t *ids;
    uint32_t n;   /* head rows; 0: a free entry */
    float *k, *v; /* [n_layer * n_head_kv][n][head_dim] */
    uint64_t used;
} prefix_entry;

struct clara_prefix_cache {
    prefix_entry e[CLARA_PREFIX_ENTRIES];
    uint64_t clock;
    clara_prefix_stats stats;
};

/* What apply does with one sequence. */
typedef struct {
    uint32_t head; /* rows the sequence starts after; 0: it is left as it is */
    int entry;     /* the cached head it copies, or -1: computed in this call */
    uint32_t from; /* for a computed head: the sequence in whose slot the head pass computes it */
} prefix_plan;

static bool cache_enabled(void) {
    const char *e = getenv("CLARA_PREFIX_CACHE");
    return !(e && strcmp(e, "0") == 0);
}

/* The same adapters in the same order (deltas are summed in list order: the order is in the
 * bits); NULL is the empty set. */
static bool same_set(const clara_adapter_set *a, const clara_adapter_set *b) {
    int na = a ? a->n : 0, nb = b ? b->n : 0;
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (a->a[i] != b->a[i]) return false;
    return true;
}

/* Whether sequence sq may start after its first `head` rows: a fresh slot that holds the whole
 * prompt, positions 0.. over the head, no output wanted from a head row, and head and rest both
 * on the matmuls' batch path (prefix.h). */
static bool qualifies(const clara_ctx *ctx, const clara_seq *sq, const clara_ids *ids,
                      uint32_t head) {
    if (sq->slot < 0 || (uint32_t)sq->slot >= ctx->n_slots || !ids || ids->n != sq->n) return false;
    const clara_kv_slot *sl = &ctx->slots[sq->slot];
    if (sl->n_past != 0 || sl->cap < sq->n || !sq->pos || !sq->embd) return false;
    if (head < CLARA_MATMUL_BATCH_ROWS || head > sq->n || sq->n - head < CLARA_MATMUL_BATCH_ROWS)
        return false;
    if (sq->out_from < head) return false; /* 0 too: every row's output is wanted */
    for (uint32_t t = 0; t < head; t++)
        if (sq->pos[t] != (int32_t)t) return false;
    return true;
}

/* Whether the head's input rows are the embeddings of its ids (and not, say, a memory vector
 * written over one): the cache is keyed by ids, so it must hold only what the ids determine. */
static bool head_is_tokens(const clara_ctx *ctx, const clara_seq *sq, const int32_t *ids,
                           uint32_t head) {
    size_t H = ctx->m->hp.n_embd;
    float *e = malloc((size_t)head * H * sizeof(float));
    if (!e) return false;
    clara_embed_tokens(ctx->m, ids, head, e);
    bool same = memcmp(e, sq->embd, (size_t)head * H * sizeof(float)) == 0;
    free(e);
    return same;
}

/* The cached head of `set` that is ids[0, head) (head > 0), or with head 0 the longest one the
 * ids start with that sq can start after; -1 if none. */
static int find_entry(const clara_ctx *ctx, const clara_seq *sq, const clara_ids *ids,
                      uint32_t head) {
    const struct clara_prefix_cache *c = ctx->prefix;
    int best = -1;
    for (int i = 0; i < CLARA_PREFIX_ENTRIES; i++) {
        const prefix_entry *e = &c->e[i];
        if (e->n == 0 || (head && e->n != head) || e->n > ids->n) continue;
        if (!same_set(&e->set, sq->adapters)) continue;
        if (memcmp(e->ids, ids->ids, e->n * sizeof(int32_t)) != 0) continue;
        if (head || ((best < 0 || e->n > c->e[best].n) && qualifies(ctx, sq, ids, e->n))) best = i;
    }
    return best;
}

/* Copies `rows` positions of every (layer, kv head) from src (capacity src_cap per head) to dst
 * (capacity dst_cap). */
static void copy_kv(const clara_ctx *ctx, float *dk, float *dv, uint32_t dst_cap, const float *sk,
                    const float *sv, uint32_t src_cap, uint32_t rows) {
    const clara_hparams *hp = &ctx->m->hp;
    size_t d = hp->head_dim, heads = (size_t)hp->n_layer * hp->n_head_kv;
    for (size_t h = 0; h < heads; h++) {
        memcpy(dk + h * dst_cap * d, sk + h * src_cap * d, rows * d * sizeof(float));
        memcpy(dv + h * dst_cap * d, sv + h * src_cap * d, rows * d * sizeof(float));
    }
}

/* Keeps the head that sequence sq's slot now holds in its first `head` positions, in a free
 * entry or the least recently used one. Best effort: without memory nothing is kept. */
static void store(clara_ctx *ctx, const clara_seq *sq, const int32_t *ids, uint32_t head) {
    struct clara_prefix_cache *c = ctx->prefix;
    const clara_hparams *hp = &ctx->m->hp;
    prefix_entry *e = &c->e[0];
    for (int i = 1; i < CLARA_PREFIX_ENTRIES && e->n; i++)
        if (c->e[i].n == 0 || c->e[i].used < e->used) e = &c->e[i];
    free(e->ids), free(e->k), free(e->v);
    memset(e, 0, sizeof *e);
    size_t floats = (size_t)hp->n_layer * hp->n_head_kv * head * hp->head_dim;
    e->ids = malloc(head * sizeof(int32_t));
    e->k = malloc(floats * sizeof(float));
    e->v = malloc(floats * sizeof(float));
    if (!e->ids || !e->k || !e->v) {
        free(e->ids), free(e->k), free(e->v);
        memset(e, 0, sizeof *e);
        return;
    }
    const clara_kv_slot *sl = &ctx->slots[sq->slot];
    copy_kv(ctx, e->k, e->v, head, sl->k, sl->v, sl->cap, head);
    memcpy(e->ids, ids, head * sizeof(int32_t));
    if (sq->adapters) e->set = *sq->adapters;
    e->n = head;
    e->used = ++c->clock;
}

/* The plan of sequence i: a cached head, a head to compute (in the slot of the first sequence
 * with the same one), or nothing. */
static prefix_plan plan_one(const clara_ctx *ctx, const clara_seq *seqs, uint32_t i,
                            const clara_ids *const *ids, const uint32_t *head_len,
                            const prefix_plan *earlier) {
    const clara_seq *sq = &seqs[i];
    uint32_t head = head_len[i];
    prefix_plan none = {0, -1, 0};
    if (!ids[i] || (head && !qualifies(ctx, sq, ids[i], head))) return none;
    int e = find_entry(ctx, sq, ids[i], head);
    if (e >= 0) head = ctx->prefix->e[e].n;
    if (head == 0 || !head_is_tokens(ctx, sq, ids[i]->ids, head)) return none;
    if (e >= 0) return (prefix_plan){head, e, 0};
    for (uint32_t j = 0; j < i; j++) /* computed once for the batch */
        if (earlier[j].entry < 0 && earlier[j].head == head && earlier[j].from == j &&
            same_set(seqs[j].adapters, sq->adapters) &&
            memcmp(ids[j]->ids, ids[i]->ids, head * sizeof(int32_t)) == 0)
            return (prefix_plan){head, -1, j};
    return (prefix_plan){head, -1, i};
}

/* One forward pass over the heads to compute, each in its own sequence's slot. */
static clara_status compute_heads(clara_ctx *ctx, const clara_seq *seqs, const prefix_plan *p,
                                  uint32_t n) {
    clara_seq *heads = malloc(n * sizeof *heads);
    if (!heads) return clara_fail(CLARA_ERR_NOMEM, "out of memory");
    uint32_t nh = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (p[i].head == 0 || p[i].entry >= 0 || p[i].from != i) continue;
        /* only keys and values are wanted: no logits, and one row in the last layer */
        heads[nh++] =
            (clara_seq){p[i].head, seqs[i].embd, seqs[i].pos,   seqs[i].slot, seqs[i].adapters,
                        NULL,      NULL,         p[i].head - 1, NULL};
    }
    clara_status s = nh ? clara_forward_batch(ctx, heads, nh) : CLARA_OK;
    free(heads);
    return s;
}

clara_status clara_prefix_apply(clara_ctx *ctx, clara_seq *seqs, uint32_t n,
                                const clara_ids *const *prompt_ids, const uint32_t *head_len) {
    if (n == 0 || !cache_enabled()) return CLARA_OK;
    if (!ctx->prefix) ctx->prefix = calloc(1, sizeof *ctx->prefix);
    prefix_plan *p = malloc(n * sizeof *p);
    if (!ctx->prefix || !p) { /* no cache: every prompt is computed whole */
        free(p);
        return CLARA_OK;
    }
    for (uint32_t i = 0; i < n; i++) p[i] = plan_one(ctx, seqs, i, prompt_ids, head_len, p);
    clara_status s = compute_heads(ctx, seqs, p, n);
    struct clara_prefix_cache *c = ctx->prefix;
    size_t H = ctx->m->hp.n_embd;
    for (uint32_t i = 0; s == CLARA_OK && i < n; i++) { /* cached heads first: store evicts */
        if (p[i].head == 0 || p[i].entry < 0) continue;
        prefix_entry *e = &c->e[p[i].entry];
        clara_kv_slot *sl = &ctx->slots[seqs[i].slot];
        copy_kv(ctx, sl->k, sl->v, sl->cap, e->k, e->v, e->n, e->n);
        sl->n_past = e->n;
        e->used = ++c->clock;
    }
    for (uint32_t i = 0; s == CLARA_OK && i < n; i++) {
        if (p[i].head == 0 || p[i].entry >= 0) continue;
        clara_kv_slot *sl = &ctx->slots[seqs[i].slot];
        if (p[i].from == i) {
            store(ctx, &seqs[i], prompt_ids[i]->ids, p[i].head);
            c->stats.computed++;
            CLARA_LOGD("prompt head of %u rows computed and cached", p[i].head);
            continue;
        }
        const clara_kv_slot *src = &ctx->slots[seqs[p[i].from].slot];
        copy_kv(ctx, sl->k, sl->v, sl->cap, src->k, src->v, src->cap, p[i].head);
        sl->n_past = p[i].head;
    }
    for (uint32_t i = 0; s == CLARA_OK && i < n; i++) {
        uint32_t h = p[i].head;
        if (h == 0) continue;
        clara_seq *sq = &seqs[i];
        sq->n -= h, sq->embd += (size_t)h * H, sq->pos += h, sq->out_from -= h;
        if (sq->hidden) sq->hidden += (size_t)h * H;
        if (p[i].entry >= 0 || p[i].from != i) c->stats.hits++, c->stats.rows_reused += h;
    }
    free(p);
    return s;
}

clara_prefix_stats clara_prefix_stats_of(const clara_ctx *ctx) {
    clara_prefix_stats none = {0, 0, 0};
    return ctx->prefix ? ctx->prefix->stats : none;
}

void clara_prefix_free(struct clara_prefix_cache *c) {
    if (!c) return;
    for (int i = 0; i < CLARA_PREFIX_ENTRIES; i++)
        free(c->e[i].ids), free(c->e[i].k), free(c->e[i].v);
    free(c);
}
