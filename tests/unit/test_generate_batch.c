/* test_generate_batch.c - clara_generate_batch against clara_generate: every request of a mixed
 * batch (QA from text, QA from precomputed vectors, E2E retrieval, paraphrase, different lengths
 * and limits, plus requests that must fail alone) gets exactly the result it gets alone; a
 * request cancelled at any point leaves the batch and the others still get exactly that; the
 * same for documents of clara_compress_ex and sequences of clara_forward_batch. Uses the demo
 * model that `make` builds (an E2E-style model with all three adapters). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clara.h"
#include "ctx.h"
#include "forward.h"
#include "t.h"

static clara_model *g_model;
static clara_ctx *g_ctx;

static clara_gen_params ask(const char *q, size_t first_doc, size_t n_docs, uint32_t max_new) {
    clara_gen_params p = clara_gen_default_params();
    p.query = q;
    p.query_len = q ? strlen(q) : 0;
    p.docs = t_docs + first_doc;
    p.n_docs = n_docs;
    p.max_new_tokens = max_new;
    return p;
}

static int same_result(const clara_gen_result *a, const clara_gen_result *b) {
    if (a->n_ids != b->n_ids || a->prompt_tokens != b->prompt_tokens || a->k != b->k) return 0;
    if (memcmp(a->ids, b->ids, a->n_ids * sizeof(int32_t)) != 0) return 0;
    if (strcmp(a->text, b->text) != 0) return 0;
    if (a->k && memcmp(a->top_k, b->top_k, a->k * sizeof(uint32_t)) != 0) return 0;
    return 1;
}

/* A cancellation callback that says yes from its fire_at-th call on, counts its calls and notes
 * how many positions KV slot `slot` held when it first said yes. */
typedef struct {
    int calls, fire_at, slot;
    uint32_t past_at_fire;
} probe;

static bool probe_fires(void *arg) {
    probe *c = arg;
    if (++c->calls != c->fire_at) return c->calls > c->fire_at;
    c->past_at_fire = (uint32_t)c->slot < g_ctx->n_slots ? g_ctx->slots[c->slot].n_past : 0;
    return true;
}

/* Five requests of every kind: documents shared between compression passes, a request from
 * vectors (3 documents' worth in vec), a retrieval (its own query pass), different lengths. */
static void five_requests(clara_gen_params *p, const float *vec) {
    p[0] = ask("What is the capital of France?", 0, 1, 12);
    p[1] = ask("Which river flows through Basel?", 0, 3, 10);
    p[2] = ask("How many hearts does an octopus have?", 2, 4, 16);
    p[3] = ask("Answer from vectors", 0, 0, 9);
    p[3].docs = NULL;
    p[3].vectors = vec;
    p[3].n_docs = 3;
    p[4] = ask("Which is the highest mountain?", 0, 6, 7);
    p[4].task = CLARA_TASK_RETRIEVE;
    p[4].top_k = 2;
}

static void test_mixed_batch_equals_single(void) {
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *vec = malloc(3 * per * sizeof(float));
    T_EQ_INT(clara_compress(g_ctx, t_docs + 1, 3, vec, NULL), CLARA_OK);
    enum { N = 8 };
    clara_gen_params p[N];
    five_requests(p, vec);
    p[1].max_new_tokens = 5;
    p[5] = ask(NULL, 1, 2, 6);
    p[5].query = NULL;
    p[5].query_len = 0;
    p[5].task = CLARA_TASK_PARAPHRASE;
    p[5].paraphrase_template = 4;
    p[6] = ask("bad <SEP> query", 0, 1, 4); /* must fail alone: special token */
    p[7] = ask("", 0, 1, 4);                /* must fail alone: empty query */
    clara_gen_result batch[N], single;
    clara_status st[N];
    T_EQ_INT(clara_generate_batch(g_ctx, p, N, batch, st), CLARA_OK);
    for (int i = 0; i < N; i++) {
        clara_status s1 = clara_generate(g_ctx, &p[i], &single);
        T_CHECK_MSG(st[i] == s1, "request %d: batch status %d, alone %d", i, st[i], s1);
        if (s1 == CLARA_OK && st[i] == CLARA_OK) {
            T_CHECK_MSG(same_result(&batch[i], &single), "request %d differs from its single run",
                        i);
            T_CHECK(batch[i].error == NULL);
        } else if (s1 != CLARA_OK) {
            T_CHECK_MSG(batch[i].error && strcmp(batch[i].error, clara_last_error()) == 0,
                        "request %d: error '%s' vs alone '%s'", i,
                        batch[i].error ? batch[i].error : "(none)", clara_last_error());
        }
        if (s1 == CLARA_OK) clara_gen_result_free(&single);
        clara_gen_result_free(&batch[i]);
    }
    T_CHECK(st[6] == CLARA_ERR_INVALID_ARG && st[7] == CLARA_ERR_INVALID_ARG);
    free(vec);
}

/* The same request twice in one batch, and a batch of one, change nothing. */
/* clara_seq.out_from: the last layer computing only the wanted rows gives those rows' hidden
 * states and the logits bit for bit as computing every row does, and leaves earlier rows of
 * hidden untouched; two sequences of different lengths in one batch (one-pass, no slot). */
static void test_last_layer_rows(void) {
    const clara_model *m = g_ctx->m;
    size_t H = m->hp.n_embd, V = m->hp.n_vocab;
    enum { N0 = 13, N1 = 7 };
    int32_t ids[N0 + N1], pos[N0 + N1];
    for (int i = 0; i < N0 + N1; i++) ids[i] = 3 + (i * 37) % 200, pos[i] = i < N0 ? i : i - N0;
    float *emb = malloc((N0 + N1) * H * sizeof(float));
    float *h_all = malloc((N0 + N1) * H * sizeof(float)),
          *h_cut = malloc((N0 + N1) * H * sizeof(float));
    float *l_all = malloc(2 * V * sizeof(float)), *l_cut = malloc(2 * V * sizeof(float));
    clara_embed_tokens(m, ids, N0 + N1, emb);
    memset(h_cut, 0x7f, (N0 + N1) * H * sizeof(float));
    const uint32_t from[2] = {9, 6};
    for (int cut = 0; cut < 2; cut++) {
        float *h = cut ? h_cut : h_all, *l = cut ? l_cut : l_all;
        clara_seq seqs[2] = {
            {N0, emb, pos, -1, NULL, h, l, cut ? from[0] : 0, NULL},
            {N1, emb + N0 * H, pos + N0, -1, NULL, h + N0 * H, l + V, cut ? from[1] : 0, NULL}};
        T_EQ_INT(clara_forward_batch(g_ctx, seqs, 2), CLARA_OK);
    }
    T_CHECK(memcmp(l_all, l_cut, 2 * V * sizeof(float)) == 0);
    T_CHECK(memcmp(h_all + from[0] * H, h_cut + from[0] * H, (N0 - from[0]) * H * sizeof(float)) ==
            0);
    T_CHECK(memcmp(h_all + (N0 + from[1]) * H, h_cut + (N0 + from[1]) * H,
                   (N1 - from[1]) * H * sizeof(float)) == 0);
    int untouched = 1;
    for (size_t i = 0; i < from[0] * H; i++) untouched &= h_cut[i] != h_all[i];
    T_CHECK(untouched);
    free(emb), free(h_all), free(h_cut), free(l_all), free(l_cut);
}

static void test_duplicates_and_determinism(void) {
    clara_gen_params p[3] = {ask("Where is Cologne?", 0, 2, 10), ask("Where is Cologne?", 0, 2, 10),
                             ask("Where is Cologne?", 0, 2, 10)};
    clara_gen_result r[3];
    clara_status st[3];
    T_EQ_INT(clara_generate_batch(g_ctx, p, 3, r, st), CLARA_OK);
    T_CHECK(st[0] == CLARA_OK && st[1] == CLARA_OK && st[2] == CLARA_OK);
    T_CHECK(same_result(&r[0], &r[1]) && same_result(&r[1], &r[2]));
    for (int i = 0; i < 3; i++) clara_gen_result_free(&r[i]);
}

/* Twenty full-length documents (doc_max_length ids + n_mem memory rows each) in one call: the
 * batch spans several compression passes, and each pass's down projection goes in parts
 * (CLARA_DOWN_ROWS); every document's memory vectors are still those it gets alone. */
static void test_compress_many_equals_single(void) {
    enum { N = 20 };
    static char text[N][2400];
    clara_text docs[N];
    for (int i = 0; i < N; i++) {
        size_t len = 0;
        for (int r = 0; r < 40; r++)
            len += (size_t)snprintf(text[i] + len, sizeof text[i] - len,
                                    "Document %d says the river %d flows north. ", i, r * 7 + i);
        docs[i] = (clara_text){text[i], len};
    }
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *all = malloc(N * per * sizeof(float)), *one = malloc(per * sizeof(float));
    uint32_t n_tok[N], n_one;
    T_EQ_INT(clara_compress(g_ctx, docs, N, all, n_tok), CLARA_OK);
    uint32_t rows = 0;
    int differ = 0;
    for (int i = 0; i < N; i++) {
        rows += n_tok[i] + clara_model_n_mem(g_model);
        T_EQ_INT(clara_compress(g_ctx, &docs[i], 1, one, &n_one), CLARA_OK);
        differ += n_one != n_tok[i] || memcmp(one, all + i * per, per * sizeof(float)) != 0;
    }
    T_CHECK_MSG(rows > 2 * CLARA_DOWN_ROWS, "only %u rows: the batch should need several passes",
                rows);
    T_CHECK_MSG(differ == 0, "%d of %d documents differ from their single compression", differ, N);
    free(all);
    free(one);
}

/* The special-token error names the document once (it used to say "document 1: document 1"). */
static void test_special_token_message(void) {
    const clara_text docs[] = {{"fine", 4}, {"bad <MEM0> here", 15}};
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *vec = malloc(2 * per * sizeof(float));
    T_EQ_INT(clara_compress(g_ctx, docs, 2, vec, NULL), CLARA_ERR_INVALID_ARG);
    T_EQ_STR(clara_last_error(), "document 1 contains the special token '<MEM0>' at byte 4; "
                                 "special-token strings are not allowed in input text");
    clara_gen_params p = ask("q", 0, 0, 4);
    p.docs = docs;
    p.n_docs = 2;
    clara_gen_result r;
    T_EQ_INT(clara_generate(g_ctx, &p, &r), CLARA_ERR_INVALID_ARG);
    T_EQ_STR(clara_last_error(), "document 1 contains the special token '<MEM0>' at byte 4; "
                                 "special-token strings are not allowed in input text");
    free(vec);
}

enum { NC = 5 }; /* the cancellation tests run five_requests */

/* Request `target` cancelled at its k-th poll, for every k its uncancelled run polls: in the
 * compression passes, between phases, in the prefill and between decoding steps. It ends
 * CLARA_ERR_CANCELLED, is not asked again, its KV slot stops growing, and every other request
 * gets exactly the ids it gets alone. With a callback that never fires, nothing changes. */
static void cancel_sweep(int target, const clara_gen_result *alone, const float *vec) {
    clara_gen_params p[NC];
    five_requests(p, vec);
    probe pr = {0, 1 << 30, target, 0};
    p[target].cancelled = probe_fires;
    p[target].cancel_arg = &pr;
    clara_gen_result r[NC];
    clara_status st[NC];
    T_EQ_INT(clara_generate_batch(g_ctx, p, NC, r, st), CLARA_OK);
    int polls = pr.calls, differ = 0;
    uint32_t full_past = g_ctx->slots[target].n_past;
    for (int i = 0; i < NC; i++) {
        differ += st[i] != CLARA_OK || !same_result(&r[i], &alone[i]);
        clara_gen_result_free(&r[i]);
    }
    T_CHECK_MSG(differ == 0, "target %d: a callback that never fires changed %d results", target,
                differ);
    T_CHECK_MSG(polls > 20, "target %d: only %d polls", target, polls);
    int bad = 0;
    for (int k = 1; k <= polls; k++) {
        pr = (probe){0, k, target, 0};
        clara_kv_clear(g_ctx, (uint32_t)target);
        T_EQ_INT(clara_generate_batch(g_ctx, p, NC, r, st), CLARA_OK);
        /* its slot holds what it held when cancelled: nothing computed for it afterwards */
        bool ok = st[target] == CLARA_ERR_CANCELLED && pr.calls == k && r[target].error &&
                  strcmp(r[target].error, "the request was cancelled") == 0 &&
                  r[target].ids == NULL && g_ctx->slots[target].n_past == pr.past_at_fire &&
                  pr.past_at_fire <= full_past;
        for (int i = 0; i < NC; i++)
            if (i != target) ok &= st[i] == CLARA_OK && same_result(&r[i], &alone[i]);
        if (!ok && bad++ < 3)
            fprintf(stderr,
                    "  target %d cancelled at poll %d of %d: status %d, %d calls, "
                    "n_past %u of %u\n",
                    target, k, polls, st[target], pr.calls, g_ctx->slots[target].n_past, full_past);
        for (int i = 0; i < NC; i++) clara_gen_result_free(&r[i]);
    }
    T_CHECK_MSG(bad == 0, "target %d: %d of %d cancellation points went wrong", target, bad, polls);
}

static void test_cancel_requests(void) {
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *vec = malloc(3 * per * sizeof(float));
    T_EQ_INT(clara_compress(g_ctx, t_docs + 1, 3, vec, NULL), CLARA_OK);
    clara_gen_params p[NC];
    five_requests(p, vec);
    clara_gen_result alone[NC];
    for (int i = 0; i < NC; i++) T_EQ_INT(clara_generate(g_ctx, &p[i], &alone[i]), CLARA_OK);
    cancel_sweep(1, alone, vec); /* documents in the shared passes */
    cancel_sweep(4, alone, vec); /* retrieval: documents and the query pass */
    cancel_sweep(0, alone, vec); /* the first sequence of every pass */
    /* every request cancelled: no error for the batch, each one cancelled */
    probe pr = {0, 1, 0, 0};
    for (int i = 0; i < NC; i++) p[i].cancelled = probe_fires, p[i].cancel_arg = &pr;
    clara_gen_result r[NC];
    clara_status st[NC];
    T_EQ_INT(clara_generate_batch(g_ctx, p, NC, r, st), CLARA_OK);
    for (int i = 0; i < NC; i++) {
        T_EQ_INT(st[i], CLARA_ERR_CANCELLED);
        clara_gen_result_free(&r[i]);
        clara_gen_result_free(&alone[i]);
    }
    free(vec);
}

/* Whether v[0, n) still holds the 0x7f bytes it was filled with. */
static bool untouched(const float *v, size_t n) {
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n * sizeof(float); i++)
        if (b[i] != 0x7f) return false;
    return true;
}

/* Per-document cancellation of clara_compress_ex. */
typedef struct {
    size_t doc;  /* the document that is cancelled (or SIZE_MAX: every document) */
    int fire_at; /* at the document's fire_at-th poll (every document's: all polls) */
    int calls, calls_after;
} doc_probe;

static bool doc_probe_fires(void *arg, size_t doc) {
    doc_probe *c = arg;
    if (c->doc != SIZE_MAX && doc != c->doc) return false;
    if (c->calls >= c->fire_at) c->calls_after++;
    return ++c->calls >= c->fire_at;
}

/* One document cancelled in a shared pass (before its first layer, before its second): the
 * others' vectors are those of the uncancelled call, bit for bit, the cancelled one's are not
 * written. Every document cancelled: the call stops (nothing written, each document polled at
 * most once after the cancellation), on a batch of several passes. */
static void test_cancel_compress(void) {
    enum { N = 20 };
    static char text[N][2400];
    clara_text docs[N];
    for (int i = 0; i < N; i++) {
        size_t len = 0;
        for (int r = 0; r < (i % 3 == 0 ? 40 : 3); r++)
            len += (size_t)snprintf(text[i] + len, sizeof text[i] - len,
                                    "Document %d says the river %d flows north. ", i, r * 7 + i);
        docs[i] = (clara_text){text[i], len};
    }
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *all = malloc(N * per * sizeof(float)), *got = malloc(N * per * sizeof(float));
    uint32_t n_all[N], n_got[N];
    T_EQ_INT(clara_compress(g_ctx, docs, N, all, n_all), CLARA_OK);
    uint32_t n_layer = g_ctx->m->hp.n_layer;
    for (size_t target = 0; target < N; target += 7)
        for (int at = 1; at <= (int)n_layer; at++) {
            doc_probe c = {target, at, 0, 0};
            clara_compress_params cp = {doc_probe_fires, &c};
            memset(got, 0x7f, N * per * sizeof(float));
            T_EQ_INT(clara_compress_ex(g_ctx, docs, N, got, n_got, &cp), CLARA_ERR_CANCELLED);
            T_EQ_STR(clara_last_error(), "1 of 20 documents were cancelled");
            T_CHECK(c.calls == at && c.calls_after == 0);
            int differ = 0;
            for (size_t i = 0; i < N; i++)
                if (i != target)
                    differ += n_got[i] != n_all[i] ||
                              memcmp(got + i * per, all + i * per, per * sizeof(float)) != 0;
            T_CHECK_MSG(differ == 0, "doc %zu cancelled at poll %d: %d others differ", target, at,
                        differ);
            T_CHECK_MSG(untouched(got + target * per, per),
                        "doc %zu cancelled at poll %d: its vectors were written", target, at);
        }
    /* every document from the 3rd poll on (the first pass's first layer): that pass stops before
     * its next layer, the later one before its first */
    doc_probe c = {SIZE_MAX, 3, 0, 0};
    clara_compress_params cp = {doc_probe_fires, &c};
    memset(got, 0x7f, N * per * sizeof(float));
    T_EQ_INT(clara_compress_ex(g_ctx, docs, N, got, NULL, &cp), CLARA_ERR_CANCELLED);
    T_EQ_STR(clara_last_error(), "20 of 20 documents were cancelled");
    T_CHECK_MSG(c.calls_after <= N, "%d polls after the cancellation", c.calls_after);
    T_CHECK(untouched(got, N * per));
    free(all);
    free(got);
}

/* Fills the keys and values of KV slot `slot` with 0x7f bytes. */
static void fill_slot(uint32_t slot) {
    const clara_hparams *hp = &g_ctx->m->hp;
    size_t n = (size_t)hp->n_layer * hp->n_head_kv * g_ctx->slots[slot].cap * hp->head_dim;
    memset(g_ctx->slots[slot].k, 0x7f, n * sizeof(float));
    memset(g_ctx->slots[slot].v, 0x7f, n * sizeof(float));
}

/* Whether layer `layer`'s keys and values in KV slot `slot` are still the 0x7f fill: nothing of
 * that layer was computed for the slot's sequence. */
static bool slot_layer_untouched(uint32_t slot, uint32_t layer) {
    const clara_hparams *hp = &g_ctx->m->hp;
    size_t n = (size_t)hp->n_head_kv * g_ctx->slots[slot].cap * hp->head_dim;
    return untouched(g_ctx->slots[slot].k + layer * n, n) &&
           untouched(g_ctx->slots[slot].v + layer * n, n);
}

/* clara_forward_batch: a long prompt's attention goes in rounds when it can be cancelled, with
 * the bits of one round; a sequence cancelled between two rounds of the first layer leaves the
 * batch (no later layer is computed for it: its slot's keys and values there stay unwritten),
 * and the other's logits and KV slot are those it gets alone; when every sequence is cancelled
 * the pass stops there and nothing is written. */
static void test_cancel_forward_rounds(void) {
    const clara_model *m = g_ctx->m;
    size_t H = m->hp.n_embd, V = m->hp.n_vocab;
    enum { NA = 1100, NB = 600 }; /* several rounds of attention rows */
    int32_t *ids = malloc((NA + NB) * sizeof(int32_t)), *pos = malloc(NA * sizeof(int32_t));
    for (int i = 0; i < NA + NB; i++) ids[i] = 3 + (i * 37) % 900;
    for (int i = 0; i < NA; i++) pos[i] = i;
    float *emb = malloc((NA + NB) * H * sizeof(float));
    clara_embed_tokens(m, ids, NA + NB, emb);
    float *la = malloc(V * sizeof(float)), *lb = malloc(V * sizeof(float));
    float *la1 = malloc(V * sizeof(float)), *lb1 = malloc(V * sizeof(float));
    T_EQ_INT(clara_ctx_reserve_slot(g_ctx, 0, NA + 1), CLARA_OK);
    T_EQ_INT(clara_ctx_reserve_slot(g_ctx, 1, NB + 1), CLARA_OK);
    /* alone, without a callback: one round */
    clara_kv_clear(g_ctx, 0);
    clara_seq a = {NA, emb, pos, 0, NULL, NULL, la, NA - 1, NULL};
    T_EQ_INT(clara_forward_batch(g_ctx, &a, 1), CLARA_OK);
    clara_kv_clear(g_ctx, 1);
    clara_seq b = {NB, emb + NA * H, pos, 1, NULL, NULL, lb, NB - 1, NULL};
    T_EQ_INT(clara_forward_batch(g_ctx, &b, 1), CLARA_OK);
    /* together, with callbacks that never fire: rounds */
    probe pa = {0, 1 << 30, 0, 0}, pb = {0, 1 << 30, 1, 0};
    clara_cancel ca = {probe_fires, &pa, false}, cb = {probe_fires, &pb, false};
    clara_seq two[2] = {{NA, emb, pos, 0, NULL, NULL, la1, NA - 1, &ca},
                        {NB, emb + NA * H, pos, 1, NULL, NULL, lb1, NB - 1, &cb}};
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    T_EQ_INT(clara_forward_batch(g_ctx, two, 2), CLARA_OK);
    T_CHECK(memcmp(la, la1, V * sizeof(float)) == 0 && memcmp(lb, lb1, V * sizeof(float)) == 0);
    T_CHECK_MSG(pa.calls > (int)m->hp.n_layer, "%d polls: the attention went in one round",
                pa.calls);
    /* a cancelled between its first two rounds */
    pa = (probe){0, 2, 0, 0}, pb = (probe){0, 1 << 30, 1, 0};
    ca.hit = cb.hit = false;
    memset(la1, 0x7f, V * sizeof(float)), memset(lb1, 0x7f, V * sizeof(float));
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    fill_slot(0), fill_slot(1);
    T_EQ_INT(clara_forward_batch(g_ctx, two, 2), CLARA_OK);
    T_CHECK(ca.hit && !cb.hit && pa.calls == 2);
    T_CHECK(!slot_layer_untouched(0, 0) && slot_layer_untouched(0, 1));
    T_CHECK(!slot_layer_untouched(1, 1));
    T_CHECK(memcmp(lb, lb1, V * sizeof(float)) == 0);
    T_CHECK(untouched(la1, V));
    T_EQ_INT(g_ctx->slots[0].n_past, 0);
    T_EQ_INT(g_ctx->slots[1].n_past, NB);
    /* both cancelled in the first layer: no error, nothing written, no slot extended */
    pa = (probe){0, 2, 0, 0}, pb = (probe){0, 2, 1, 0};
    ca.hit = cb.hit = false;
    memset(lb1, 0x7f, V * sizeof(float));
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    fill_slot(0), fill_slot(1);
    T_EQ_INT(clara_forward_batch(g_ctx, two, 2), CLARA_OK);
    T_CHECK(ca.hit && cb.hit && pa.calls == 2 && pb.calls == 2);
    T_CHECK(slot_layer_untouched(0, 1) && slot_layer_untouched(1, 1));
    T_CHECK(untouched(lb1, V));
    T_CHECK(g_ctx->slots[0].n_past == 0 && g_ctx->slots[1].n_past == 0);
    free(ids), free(pos), free(emb), free(la), free(lb), free(la1), free(lb1);
}

/* A prompt of more than one feed-forward chunk (CLARA_FFN_CHUNK_ROWS) is asked between chunks
 * too: with callbacks that never fire, the same bits as without and, per layer but the last, one
 * poll before it, one between attention rounds, one between feed-forward chunks; both sequences
 * cancelled at the first layer's feed-forward poll stop there (nothing of the second layer
 * written). */
static void test_cancel_forward_ffn_chunks(void) {
    const clara_model *m = g_ctx->m;
    size_t H = m->hp.n_embd, V = m->hp.n_vocab;
    enum { NA = 2000, NB = 600 }; /* 2,600 rows: two chunks of 1,300; four attention rounds */
    int32_t *ids = malloc((NA + NB) * sizeof(int32_t)), *pos = malloc(NA * sizeof(int32_t));
    for (int i = 0; i < NA + NB; i++) ids[i] = 5 + (i * 53) % 900;
    for (int i = 0; i < NA; i++) pos[i] = i;
    float *emb = malloc((NA + NB) * H * sizeof(float));
    clara_embed_tokens(m, ids, NA + NB, emb);
    float *la = malloc(V * sizeof(float)), *lb = malloc(V * sizeof(float));
    float *la1 = malloc(V * sizeof(float)), *lb1 = malloc(V * sizeof(float));
    T_EQ_INT(clara_ctx_reserve_slot(g_ctx, 0, NA + 1), CLARA_OK);
    T_EQ_INT(clara_ctx_reserve_slot(g_ctx, 1, NB + 1), CLARA_OK);
    clara_seq plain[2] = {{NA, emb, pos, 0, NULL, NULL, la, NA - 1, NULL},
                          {NB, emb + NA * H, pos, 1, NULL, NULL, lb, NB - 1, NULL}};
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    T_EQ_INT(clara_forward_batch(g_ctx, plain, 2), CLARA_OK);
    probe pa = {0, 1 << 30, 0, 0}, pb = {0, 1 << 30, 1, 0};
    clara_cancel ca = {probe_fires, &pa, false}, cb = {probe_fires, &pb, false};
    clara_seq two[2] = {{NA, emb, pos, 0, NULL, NULL, la1, NA - 1, &ca},
                        {NB, emb + NA * H, pos, 1, NULL, NULL, lb1, NB - 1, &cb}};
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    T_EQ_INT(clara_forward_batch(g_ctx, two, 2), CLARA_OK);
    T_CHECK(memcmp(la, la1, V * sizeof(float)) == 0 && memcmp(lb, lb1, V * sizeof(float)) == 0);
    /* the last layer computes only the rows whose outputs are wanted: one poll before it */
    int per_layer = 1 + (NA + 511) / 512 - 1 + 1;
    T_CHECK_MSG(pa.calls == ((int)m->hp.n_layer - 1) * per_layer + 1, "%d polls, want %d x %d + 1",
                pa.calls, (int)m->hp.n_layer - 1, per_layer);
    pa = (probe){0, per_layer, 0, 0}, pb = (probe){0, per_layer, 1, 0};
    ca.hit = cb.hit = false;
    clara_kv_clear(g_ctx, 0), clara_kv_clear(g_ctx, 1);
    fill_slot(0), fill_slot(1);
    T_EQ_INT(clara_forward_batch(g_ctx, two, 2), CLARA_OK);
    T_CHECK(ca.hit && cb.hit && pa.calls == per_layer && pb.calls == per_layer);
    T_CHECK(slot_layer_untouched(0, 1) && slot_layer_untouched(1, 1));
    T_CHECK(g_ctx->slots[0].n_past == 0 && g_ctx->slots[1].n_past == 0);
    free(ids), free(pos), free(emb), free(la), free(lb), free(la1), free(lb1);
}

int main(void) {
    if (t_load_demo(&g_model, &g_ctx, NULL, 0) != 0) return 1;
    T_RUN(test_mixed_batch_equals_single);
    T_RUN(test_duplicates_and_determinism);
    T_RUN(test_last_layer_rows);
    T_RUN(test_compress_many_equals_single);
    T_RUN(test_special_token_message);
    T_RUN(test_cancel_requests);
    T_RUN(test_cancel_compress);
    T_RUN(test_cancel_forward_rounds);
    T_RUN(test_cancel_forward_ffn_chunks);
    clara_ctx_free(g_ctx);
    clara_model_free(g_model);
    return t_report("test_generate_batch");
}
