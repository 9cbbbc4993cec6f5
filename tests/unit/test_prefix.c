/* test_prefix.c - the prompt heads' cache (src/prefix.c) against prefills of whole prompts: every
 * request (answers from 0, 1 and 3 documents, from vectors, a retrieval, paraphrases) gets the
 * same ids and bit for bit the same first-step logits with the cache off (CLARA_PREFIX_CACHE=0)
 * and on, when its head is kept from the prefill (alone, or once for a batch) and when it comes
 * from the cache, after entries were evicted too; on the demo model (f32) and its q4_0 and q8_0
 * copies, at every instruction-set level this CPU has. The cache must have been used (rows reused =
 * the heads' lengths from the prompt builder), and sequences it must not touch are left alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/genmodel.h"
#include "clara.h"
#include "cpu/dispatch.h"
#include "cpu/matmul.h"
#include "ctx.h"
#include "forward.h"
#include "prefix.h"
#include "prompt.h"
#include "quantize.h"
#include "t.h"

static const clara_text k_docs[] = {
    {"Paris is the capital of France.", 31},
    {"The Rhine flows through Basel, Strasbourg and Cologne.", 54},
    {"Mount Everest is the highest mountain above sea level.", 54},
    {"Octopuses have three hearts and blue blood.", 43},
};

enum { NR = 8 }; /* requests */

static clara_gen_params ask(const char *q, size_t first_doc, size_t n_docs) {
    clara_gen_params p = clara_gen_default_params();
    p.query = q;
    p.query_len = strlen(q);
    p.docs = k_docs + first_doc;
    p.n_docs = n_docs;
    p.max_new_tokens = 6;
    return p;
}

/* Answers from 1 and 3 documents, from vectors (3 documents' worth in vec), without documents
 * (short and long question), a retrieval (an answer from 4 documents for a model without the
 * query reasoner) and two paraphrase templates. */
static void requests(const clara_model *m, clara_gen_params *p, const float *vec) {
    p[0] = ask("What is the capital of France?", 0, 1);
    p[1] = ask("Which river flows through Basel and where does it go next?", 0, 3);
    p[2] = ask("Answer from vectors: which mountain is the highest one?", 0, 3);
    p[2].docs = NULL, p[2].vectors = vec;
    p[3] = ask("Who?", 0, 0);
    p[4] = ask("Without any background at all, how many hearts does an octopus have?", 0, 0);
    p[5] = ask("Which is the highest mountain?", 0, 4);
    if (m->query) p[5].task = CLARA_TASK_RETRIEVE, p[5].top_k = 2;
    for (int i = 6; i < 8; i++) {
        p[i] = ask("unused", 1, 2);
        p[i].query = NULL, p[i].query_len = 0;
        p[i].task = CLARA_TASK_PARAPHRASE;
        p[i].paraphrase_template = i == 6 ? 4 : 11;
    }
}

typedef struct {
    clara_gen_result r;
    float *logits;
} answer;

static void set_cache(bool on) {
    setenv("CLARA_PREFIX_CACHE", on ? "1" : "0", 1);
}

/* Garbage in every position of every KV slot of ctx: what a pass reads there it wrote (or the
 * cache copied) itself, not what an earlier request with the same head left. */
static void scribble_slots(clara_ctx *ctx) {
    const clara_hparams *hp = &ctx->m->hp;
    for (uint32_t i = 0; i < ctx->n_slots; i++) {
        size_t n = (size_t)hp->n_layer * hp->n_head_kv * ctx->slots[i].cap * hp->head_dim;
        memset(ctx->slots[i].k, 0x7f, n * sizeof(float));
        memset(ctx->slots[i].v, 0x7f, n * sizeof(float));
    }
}

/* Runs requests p[0, n) as one batch on ctx, each with its own first-step logits. */
static void run(clara_ctx *ctx, clara_gen_params *p, size_t n, answer *out) {
    uint32_t V = ctx->m->hp.n_vocab;
    scribble_slots(ctx);
    clara_gen_result r[NR];
    clara_status st[NR];
    for (size_t i = 0; i < n; i++) p[i].first_logits = out[i].logits = malloc(V * sizeof(float));
    T_EQ_INT(clara_generate_batch(ctx, p, n, r, st), CLARA_OK);
    for (size_t i = 0; i < n; i++) {
        T_EQ_INT(st[i], CLARA_OK);
        out[i].r = r[i];
        p[i].first_logits = NULL;
    }
}

static void answer_free(answer *a) {
    clara_gen_result_free(&a->r);
    free(a->logits);
}

/* Same ids and the same first-step logits, bit for bit. */
static bool same_answer(const clara_model *m, const answer *a, const answer *b) {
    uint32_t V = m->hp.n_vocab;
    return a->r.n_ids == b->r.n_ids && a->r.n_ids > 0 &&
           memcmp(a->r.ids, b->r.ids, a->r.n_ids * sizeof(int32_t)) == 0 &&
           memcmp(a->logits, b->logits, V * sizeof(float)) == 0;
}

/* The ids of request p's prompt a cached head covers: the tokens before its first memory slot
 * (prompt builder, spec §8); without a slot, the answering head `qa` when the prompt starts with
 * it. None where head or rest would be under CLARA_MATMUL_BATCH_ROWS rows. */
static uint32_t head_of(const clara_model *m, const clara_gen_params *p, const clara_prompt *qa,
                        clara_ids *out) {
    size_t k = p->task == CLARA_TASK_RETRIEVE ? p->top_k : p->n_docs;
    clara_prompt pr;
    T_EQ_INT(clara_prompt_build(m, p->query, p->query_len, p->paraphrase_template, k, NULL, &pr),
             CLARA_OK);
    uint32_t head = pr.first_mem;
    if (k == 0)
        head = pr.ids.n > qa->first_mem &&
                       memcmp(pr.ids.ids, qa->ids.ids, qa->first_mem * sizeof(int32_t)) == 0
                   ? qa->first_mem
                   : 0;
    if (head < 8 || pr.ids.n - head < 8) head = 0;
    for (uint32_t i = 0; i < head; i++) clara_ids_push(out, pr.ids.ids[i]);
    clara_ids_free(&pr.ids);
    return head;
}

/* Distinct heads seen so far. */
typedef struct {
    clara_ids h[64];
    int n;
} head_list;

/* Adds the head of p to the list if it has one not there yet. */
static void note_head(const clara_model *m, const clara_gen_params *p, const clara_prompt *qa,
                      head_list *l) {
    clara_ids h = {0};
    head_of(m, p, qa, &h);
    for (int i = 0; i < l->n && h.n; i++)
        if (l->h[i].n == h.n && memcmp(l->h[i].ids, h.ids, h.n * sizeof(int32_t)) == 0)
            clara_ids_free(&h);
    if (h.n && l->n < 64)
        l->h[l->n++] = h;
    else
        clara_ids_free(&h);
}

static clara_ctx *new_ctx(clara_model *m) {
    clara_ctx_params cp = t_ctx_params();
    clara_ctx *ctx = NULL;
    T_EQ_INT(clara_ctx_create(m, &cp, &ctx), CLARA_OK);
    return ctx;
}

/* Each request alone twice (its head kept from the first prefill, then cached), all at once on
 * a warm cache and on a cold one (each head kept once for the batch), every template's
 * paraphrase: all as with the cache off, and each distinct head kept once. */
static void check_model(clara_model *m, const char *label) {
    clara_ctx *off = new_ctx(m), *on = new_ctx(m), *cold = new_ctx(m);
    size_t per = (size_t)clara_model_n_mem(m) * clara_model_n_embd(m);
    float *vec = malloc(3 * per * sizeof(float));
    T_EQ_INT(clara_compress(off, k_docs + 1, 3, vec, NULL), CLARA_OK);
    clara_gen_params p[NR];
    requests(m, p, vec);
    clara_prompt qa;
    T_EQ_INT(clara_prompt_build(m, "q", 1, 0, 1, NULL, &qa), CLARA_OK);
    answer want[NR], got[NR];
    set_cache(false);
    for (int i = 0; i < NR; i++) run(off, &p[i], 1, &want[i]);
    T_CHECK(clara_prefix_stats_of(off).kept == 0 && clara_prefix_stats_of(off).hits == 0);
    set_cache(true);
    int differ = 0, reused_bad = 0;
    uint32_t expect_heads = 0;
    head_list heads = {.n = 0};
    for (int i = 0; i < NR; i++) {
        clara_ids ids = {0};
        uint32_t head = head_of(m, &p[i], &qa, &ids);
        clara_ids_free(&ids);
        note_head(m, &p[i], &qa, &heads);
        expect_heads += head > 0;
        for (int rep = 0; rep < 2; rep++) {
            clara_prefix_stats s0 = clara_prefix_stats_of(on);
            run(on, &p[i], 1, &got[i]);
            clara_prefix_stats s1 = clara_prefix_stats_of(on);
            differ += !same_answer(m, &got[i], &want[i]);
            /* the second time (and the first, for a head cached before) it starts after it */
            bool hit = s1.hits == s0.hits + 1 && s1.rows_reused == s0.rows_reused + head;
            bool kept = s1.kept == s0.kept + 1 && s1.hits == s0.hits;
            bool untouched = s1.kept == s0.kept && s1.hits == s0.hits;
            if (!(head ? hit || (rep == 0 && kept) : untouched) && reused_bad++ < 3)
                fprintf(stderr, "  %s request %d run %d: head %u, hits %llu, rows %llu\n", label, i,
                        rep, head, (unsigned long long)(s1.hits - s0.hits),
                        (unsigned long long)(s1.rows_reused - s0.rows_reused));
            answer_free(&got[i]);
        }
    }
    T_CHECK_MSG(differ == 0, "%s: %d answers differ with the cache", label, differ);
    T_CHECK_MSG(reused_bad == 0, "%s: the cache was not used as expected", label);
    T_CHECK_MSG(expect_heads >= 6, "%s: only %u requests have a head to reuse", label,
                expect_heads);
    T_EQ_INT(clara_prefix_stats_of(on).kept, heads.n);
    /* a batch is compared with the same batch: 8 rows of a decoding step take the quantized
     * weights' batch path, where one row alone takes the GEMV's */
    answer batch[NR];
    set_cache(false);
    run(off, p, NR, batch);
    set_cache(true);
    for (int warm = 1; warm >= 0; warm--) {
        clara_ctx *c = warm ? on : cold;
        run(c, p, NR, got);
        differ = 0;
        for (int i = 0; i < NR; i++) differ += !same_answer(m, &got[i], &batch[i]);
        for (int i = 0; i < NR; i++) answer_free(&got[i]);
        T_CHECK_MSG(differ == 0, "%s: %d answers of a %s batch differ", label, differ,
                    warm ? "warm" : "cold");
    }
    for (int i = 0; i < NR; i++) answer_free(&batch[i]);
    T_EQ_INT(clara_prefix_stats_of(cold).kept, heads.n); /* once each for the batch */
    /* every template (on the demo model most share the head that ends before {docs}) */
    clara_gen_params para = p[6];
    differ = 0;
    for (int t = 0; t < 13; t++) {
        para.paraphrase_template = t;
        note_head(m, &para, &qa, &heads);
        answer a, b;
        set_cache(false);
        run(off, &para, 1, &a);
        set_cache(true);
        run(on, &para, 1, &b);
        differ += !same_answer(m, &a, &b);
        answer_free(&a), answer_free(&b);
    }
    T_CHECK_MSG(differ == 0, "%s: %d paraphrases differ", label, differ);
    T_EQ_INT(clara_prefix_stats_of(on).kept, heads.n);
    T_CHECK(heads.n >= 3 && heads.n < CLARA_PREFIX_ENTRIES); /* none evicted here */
    for (int i = 0; i < heads.n; i++) clara_ids_free(&heads.h[i]);
    for (int i = 0; i < NR; i++) answer_free(&want[i]);
    clara_ids_free(&qa.ids);
    free(vec);
    clara_ctx_free(off), clara_ctx_free(on), clara_ctx_free(cold);
}

/* A forward sequence over `n` ids (positions 0..) in slot 0 with every row's hidden state. */
typedef struct {
    clara_ids ids;
    float *emb, *hidden, *logits;
    int32_t *pos;
} raw_seq;

static void raw_make(const clara_model *m, uint32_t n, uint32_t seed, raw_seq *r) {
    size_t H = m->hp.n_embd;
    memset(r, 0, sizeof *r);
    for (uint32_t i = 0; i < n; i++) clara_ids_push(&r->ids, 3 + (int32_t)((i * 37 + seed) % 900));
    r->emb = malloc(n * H * sizeof(float));
    r->hidden = calloc(n * H, sizeof(float));
    r->logits = malloc(m->hp.n_vocab * sizeof(float));
    r->pos = malloc(n * sizeof(int32_t));
    for (uint32_t i = 0; i < n; i++) r->pos[i] = (int32_t)i;
    clara_embed_tokens(m, r->ids.ids, n, r->emb);
}

static bool always(void *arg) {
    (void)arg;
    return true;
}

static void raw_free(raw_seq *r) {
    clara_ids_free(&r->ids);
    free(r->emb), free(r->hidden), free(r->logits), free(r->pos);
}

/* clara_prefix_apply on one sequence with head `head` (out_from `from`), then the forward pass
 * (hidden rows from `from` and the logits into r; cancelled at its first poll with `cancel`) and
 * clara_prefix_keep: the rows the sequence started after. */
static uint32_t raw_run_ex(clara_ctx *ctx, raw_seq *r, uint32_t head, uint32_t from,
                           const clara_adapter_set *set, bool cancel) {
    uint32_t n = (uint32_t)r->ids.n;
    T_EQ_INT(clara_ctx_reserve_slot(ctx, 0, n), CLARA_OK);
    clara_kv_clear(ctx, 0);
    scribble_slots(ctx);
    clara_cancel stop = {always, NULL, false};
    clara_seq sq = {n, r->emb, r->pos, 0, set, r->hidden, r->logits, from, cancel ? &stop : NULL};
    const clara_ids *ids = &r->ids;
    T_EQ_INT(clara_prefix_apply(ctx, &sq, 1, &ids, &head), CLARA_OK);
    uint32_t past = ctx->slots[0].n_past;
    T_CHECK(sq.n == n - past && sq.out_from == from - past && sq.pos == r->pos + past &&
            sq.embd == r->emb + past * ctx->m->hp.n_embd);
    T_EQ_INT(clara_forward_batch(ctx, &sq, 1), CLARA_OK);
    clara_prefix_keep(ctx);
    return past;
}

static uint32_t raw_run_set(clara_ctx *ctx, raw_seq *r, uint32_t head, uint32_t from,
                            const clara_adapter_set *set) {
    return raw_run_ex(ctx, r, head, from, set, false);
}

static uint32_t raw_run(clara_ctx *ctx, raw_seq *r, uint32_t head, uint32_t from) {
    return raw_run_ex(ctx, r, head, from, NULL, false);
}

/* Sequences left as they are: head or rest under CLARA_MATMUL_BATCH_ROWS (B) rows, an output wanted
 * from a head row, positions not from 0, a head row that is not its token's embedding; and one
 * taken, with the hidden states from out_from bit for bit those of the whole pass. */
static void test_what_is_left_alone(clara_model *m) {
    clara_ctx *ctx = new_ctx(m);
    size_t H = m->hp.n_embd;
    set_cache(true);
    raw_seq r, w;
    enum { B = CLARA_MATMUL_BATCH_ROWS, L = 2 * B + 14, HD = B + 3, FROM = L - 10 };
    raw_make(m, L, 0, &r);
    raw_make(m, L, 0, &w);
    T_EQ_INT(raw_run(ctx, &r, B - 1, L - 1), 0);     /* head of B - 1 rows */
    T_EQ_INT(raw_run(ctx, &r, L - B + 1, L - 1), 0); /* rest of B - 1 rows */
    T_EQ_INT(raw_run(ctx, &r, L + 10, L + 15), 0);   /* a head past the end (and so out_from) */
    T_EQ_INT(raw_run(ctx, &r, HD, HD - 1), 0);       /* a head row's output wanted */
    T_EQ_INT(raw_run(ctx, &r, HD, 0), 0);            /* every row's */
    r.pos[3] = 4;
    T_EQ_INT(raw_run(ctx, &r, HD, L - 1), 0);
    r.pos[3] = 3;
    float kept = r.emb[5 * H + 1];
    r.emb[5 * H + 1] = kept + 1.0f; /* a memory vector written over row 5 */
    T_EQ_INT(raw_run(ctx, &r, HD, L - 1), 0);
    r.emb[5 * H + 1] = kept;
    T_CHECK(clara_prefix_stats_of(ctx).kept == 0);
    set_cache(false);
    T_EQ_INT(raw_run(ctx, &w, HD, FROM), 0);
    set_cache(true);
    T_EQ_INT(raw_run_ex(ctx, &r, HD, FROM, NULL, true), 0); /* cancelled in the pass: not kept */
    T_CHECK(clara_prefix_stats_of(ctx).kept == 0);
    T_EQ_INT(raw_run(ctx, &r, HD, FROM), 0); /* computed whole, the head kept */
    T_CHECK(clara_prefix_stats_of(ctx).kept == 1);
    T_CHECK(memcmp(r.hidden + FROM * H, w.hidden + FROM * H, 10 * H * sizeof(float)) == 0);
    memset(r.hidden, 0, L * H * sizeof(float));
    T_EQ_INT(raw_run(ctx, &r, HD, FROM), HD); /* cached */
    T_CHECK(memcmp(r.hidden + FROM * H, w.hidden + FROM * H, 10 * H * sizeof(float)) == 0);
    T_CHECK(memcmp(r.logits, w.logits, m->hp.n_vocab * sizeof(float)) == 0);
    /* without a head length: the cached head the ids start with */
    memset(r.logits, 0, m->hp.n_vocab * sizeof(float));
    T_EQ_INT(raw_run(ctx, &r, 0, FROM), HD);
    T_CHECK(memcmp(r.logits, w.logits, m->hp.n_vocab * sizeof(float)) == 0);
    T_CHECK(clara_prefix_stats_of(ctx).kept == 1 && clara_prefix_stats_of(ctx).hits == 2);
    /* the same ids under other adapters (a model without decoder_adapter answers from text with
     * the encoder's, from vectors with all of them): their own heads, in order */
    const clara_adapter_set sets[4] = {{{m->decoder}, 1},
                                       {{m->encoder}, 1},
                                       {{m->decoder, m->encoder}, 2},
                                       {{m->encoder, m->decoder}, 2}}; /* summed in list order */
    for (int i = 0; i < 4 && m->decoder && m->encoder; i++) {
        const clara_adapter_set *set = &sets[i];
        set_cache(false);
        raw_run_set(ctx, &w, HD, FROM, set);
        set_cache(true);
        uint64_t c0 = clara_prefix_stats_of(ctx).kept;
        T_EQ_INT(raw_run_set(ctx, &r, HD, FROM, set), 0);
        T_CHECK(clara_prefix_stats_of(ctx).kept == c0 + 1);
        T_CHECK(memcmp(r.logits, w.logits, m->hp.n_vocab * sizeof(float)) == 0);
        T_EQ_INT(raw_run_set(ctx, &r, HD, FROM, set), HD);
        T_CHECK(memcmp(r.logits, w.logits, m->hp.n_vocab * sizeof(float)) == 0);
    }
    raw_free(&r), raw_free(&w);
    clara_ctx_free(ctx);
}

/* More heads than entries: the least recently used goes (kept again when it comes back),
 * the others stay; every answer as without the cache. */
static void test_eviction(clara_model *m) {
    clara_ctx *ctx = new_ctx(m);
    enum { N = CLARA_PREFIX_ENTRIES + 1, HD = CLARA_MATMUL_BATCH_ROWS + 3, L = 2 * HD };
    raw_seq r[N], w;
    int differ = 0;
    uint32_t order[N + 2], skipped[N + 2];
    for (uint32_t i = 0; i < N; i++) raw_make(m, L, 1 + i, &r[i]), order[i] = i;
    order[N] = 1, order[N + 1] = 0; /* 1 is still cached; 0 was the least recently used */
    for (uint32_t k = 0; k < N + 2; k++) {
        raw_seq *q = &r[order[k]];
        raw_make(m, L, 1 + order[k], &w);
        set_cache(false);
        raw_run(ctx, &w, HD, L - 1);
        set_cache(true);
        uint64_t c0 = clara_prefix_stats_of(ctx).kept;
        skipped[k] = raw_run(ctx, q, HD, L - 1);
        skipped[k] += clara_prefix_stats_of(ctx).kept != c0 ? 100 : 0;
        differ += memcmp(q->logits, w.logits, m->hp.n_vocab * sizeof(float)) != 0;
        raw_free(&w);
    }
    for (uint32_t k = 0; k < N; k++) T_EQ_INT(skipped[k], 100); /* computed whole, kept */
    T_EQ_INT(skipped[N], HD);                                   /* cached */
    T_EQ_INT(skipped[N + 1], 100);                              /* evicted, kept again */
    T_CHECK_MSG(differ == 0, "%d of %d answers differ", differ, N + 2);
    for (uint32_t i = 0; i < N; i++) raw_free(&r[i]);
    clara_ctx_free(ctx);
}

/* The model to test: the demo model as it is or quantized to `mix`, or (tiny) the random tiny
 * model of `clara bench --generate`, whose 256-wide rows take the AVX-512 decode GEMV (the
 * demo's 64-wide ones do not). Files go under BUILD/tests and are removed afterwards. */
static clara_model *load(const char *build, const char *mix, bool tiny, char *made, size_t cap) {
    char demo[1024];
    snprintf(demo, sizeof demo, "%s/demo/clara-demo.gguf", build);
    made[0] = '\0';
    clara_status s = CLARA_OK;
    char base[1200], addon[1200];
    if (tiny) {
        snprintf(made, cap, "%s/tests/prefix-tiny-%s", build, mix);
        bench_gen_params g = {"tiny", mix, made, 7, false};
        s = bench_generate(&g);
        snprintf(base, sizeof base, "%s/base.gguf", made);
        snprintf(addon, sizeof addon, "%s/clara.gguf", made);
    } else if (mix) {
        snprintf(made, cap, "%s/tests/prefix-demo.%s.gguf", build, mix);
        clara_quantize_opts qo = {false, NULL};
        s = clara_quantize_file(demo, made, mix, &qo);
    }
    clara_model_params mp = clara_model_default_params();
    clara_model *m = NULL;
    if (s == CLARA_OK)
        s = tiny ? clara_model_load_pair(base, addon, &mp, &m)
                 : clara_model_load(made[0] ? made : demo, &mp, &m);
    if (s != CLARA_OK)
        fprintf(stderr, "cannot make the %s model: %s\n", mix ? mix : "f32", clara_last_error());
    return m;
}

/* Removes what load made. */
static void unmake(const char *made, bool tiny) {
    char f[1300];
    if (!made[0]) return;
    if (!tiny) {
        remove(made);
        return;
    }
    snprintf(f, sizeof f, "%s/base.gguf", made), remove(f);
    snprintf(f, sizeof f, "%s/clara.gguf", made), remove(f);
    remove(made);
}

int main(void) {
    const char *env = getenv("BUILD");
    const char *build = env && *env ? env : "build";
    const struct {
        const char *mix;
        bool tiny;
    } models[] = {
        {NULL, false}, {"q4_0", false}, {"q8_0", false}, {"q4_0", true}, {"q4_k_m", true}};
    for (size_t t = 0; t < sizeof models / sizeof models[0]; t++) {
        char made[1100];
        clara_model *m = load(build, models[t].mix, models[t].tiny, made, sizeof made);
        T_CHECK(m != NULL);
        for (int isa = CLARA_ISA_REF; m && isa < CLARA_ISA_COUNT; isa++) {
            /* the tiny models are there for the SIMD kernels (the scalar level: ~30 s each) */
            if (!clara_isa_supported((clara_isa)isa) || (models[t].tiny && isa == CLARA_ISA_REF))
                continue;
            clara_isa_force((clara_isa)isa);
            char label[64];
            snprintf(label, sizeof label, "%s%s at %s", models[t].tiny ? "tiny " : "",
                     models[t].mix ? models[t].mix : "f32", clara_isa_name((clara_isa)isa));
            int f0 = t_failed;
            check_model(m, label);
            test_what_is_left_alone(m);
            test_eviction(m);
            if (t_failed != f0) fprintf(stderr, "  in %s\n", label);
        }
        clara_isa_force(clara_isa_best());
        clara_model_free(m);
        unmake(made, models[t].tiny);
    }
    return t_report("test_prefix");
}
