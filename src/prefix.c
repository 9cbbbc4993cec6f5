/* prefix.c - the prompt's constant head computed once (prefix.h): a few (adapter set, head ids)
 * entries per context, each holding the head's keys and values in the slot layout of ctx.h
 * ([layer][kv head][position][head_dim], with the head's length as the capacity), taken from
 * the slot of a prefill that computed the whole prompt. */
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

/* A head apply found missing: its sequence computes the whole prompt, and keep takes the head's
 * keys and values from its slot afterwards. */
typedef struct {
    int slot;
    clara_adapter_set set;
    int32_t *ids;
    uint32_t n;
} prefix_pending;

struct clara_prefix_cache {
    prefix_entry e[CLARA_PREFIX_ENTRIES];
    prefix_pending pend[CLARA_PREFIX_ENTRIES]; /* more misses in one prefill wait for the next */
    int n_pend;
    uint64_t clock;
    clara_prefix_stats stats;
};

static bool cache_enabled(void) {
    const char *e = getenv("CLARA_PREFIX_CACHE");
    return !(e && strcmp(e, "0") == 0);
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
        if (!clara_adapter_sets_equal(&e->set, sq->adapters)) continue;
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

/* Keeps the head of `set` and ids[0, head) that slot `slot` holds in its first positions, in a
 * free entry or the least recently used one. Best effort: without memory nothing is kept. */
static void store(clara_ctx *ctx, int slot, const clara_adapter_set *set, const int32_t *ids,
                  uint32_t head) {
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
    const clara_kv_slot *sl = &ctx->slots[slot];
    copy_kv(ctx, e->k, e->v, head, sl->k, sl->v, sl->cap, head);
    memcpy(e->ids, ids, head * sizeof(int32_t));
    e->set = *set;
    e->n = head;
    e->used = ++c->clock;
}

static void drop_pending(struct clara_prefix_cache *c) {
    for (int i = 0; i < c->n_pend; i++) free(c->pend[i].ids);
    c->n_pend = 0;
}

/* Notes sequence sq's head ids[0, head) as missing, once per (adapter set, ids). */
static void note_missing(struct clara_prefix_cache *c, const clara_seq *sq, const int32_t *ids,
                         uint32_t head) {
    clara_adapter_set set = {{0}, 0};
    if (sq->adapters) set = *sq->adapters;
    for (int i = 0; i < c->n_pend; i++)
        if (c->pend[i].n == head && clara_adapter_sets_equal(&c->pend[i].set, &set) &&
            memcmp(c->pend[i].ids, ids, head * sizeof(int32_t)) == 0)
            return;
    int32_t *copy = c->n_pend < CLARA_PREFIX_ENTRIES ? malloc(head * sizeof(int32_t)) : NULL;
    if (!copy) return;
    memcpy(copy, ids, head * sizeof(int32_t));
    c->pend[c->n_pend++] = (prefix_pending){sq->slot, set, copy, head};
}

/* The head sequence sq starts after (its rows), copied into its slot from the cache; 0 when it
 * does not qualify or the head is not cached (then noted as missing). */
static uint32_t start_after_head(clara_ctx *ctx, const clara_seq *sq, const clara_ids *ids,
                                 uint32_t head) {
    struct clara_prefix_cache *c = ctx->prefix;
    if (!ids || (head && !qualifies(ctx, sq, ids, head))) return 0;
    int e = find_entry(ctx, sq, ids, head);
    if (e >= 0) head = c->e[e].n;
    if (head == 0 || !head_is_tokens(ctx, sq, ids->ids, head)) return 0;
    if (e < 0) {
        note_missing(c, sq, ids->ids, head);
        return 0;
    }
    prefix_entry *en = &c->e[e];
    clara_kv_slot *sl = &ctx->slots[sq->slot];
    copy_kv(ctx, sl->k, sl->v, sl->cap, en->k, en->v, en->n, en->n);
    sl->n_past = en->n;
    sl->dev_valid = 0; /* rewritten here: the device's mirror (if any) is stale */
    en->used = ++c->clock;
    c->stats.hits++, c->stats.rows_reused += head;
    return head;
}

clara_status clara_prefix_apply(clara_ctx *ctx, clara_seq *seqs, uint32_t n,
                                const clara_ids *const *prompt_ids, const uint32_t *head_len) {
    if (ctx->prefix) drop_pending(ctx->prefix); /* a prefill keep was not called for */
    if (n == 0 || !cache_enabled()) return CLARA_OK;
    if (!ctx->prefix && !(ctx->prefix = calloc(1, sizeof *ctx->prefix)))
        return CLARA_OK; /* no cache: every prompt is computed whole */
    size_t H = ctx->m->hp.n_embd;
    for (uint32_t i = 0; i < n; i++) {
        clara_seq *sq = &seqs[i];
        uint32_t h = start_after_head(ctx, sq, prompt_ids[i], head_len[i]);
        if (h == 0) continue;
        sq->n -= h, sq->embd += (size_t)h * H, sq->pos += h, sq->out_from -= h;
        if (sq->hidden) sq->hidden += (size_t)h * H;
    }
    return CLARA_OK;
}

void clara_prefix_keep(clara_ctx *ctx) {
    struct clara_prefix_cache *c = ctx->prefix;
    if (!c) return;
    for (int i = 0; i < c->n_pend; i++) {
        const prefix_pending *p = &c->pend[i];
        /* a sequence cancelled in the pass, or a failed pass, left its slot short */
        if ((uint32_t)p->slot >= ctx->n_slots || ctx->slots[p->slot].n_past < p->n) continue;
        store(ctx, p->slot, &p->set, p->ids, p->n);
        c->stats.kept++;
        CLARA_LOGD("prompt head of %u rows kept for later prompts", p->n);
    }
    drop_pending(c);
}

clara_prefix_stats clara_prefix_stats_of(const clara_ctx *ctx) {
    clara_prefix_stats none = {0, 0, 0};
    return ctx->prefix ? ctx->prefix->stats : none;
}

void clara_prefix_free(struct clara_prefix_cache *c) {
    if (!c) return;
    drop_pending(c);
    for (int i = 0; i < CLARA_PREFIX_ENTRIES; i++)
        free(c->e[i].ids), free(c->e[i].k), free(c->e[i].v);
    free(c);
}
