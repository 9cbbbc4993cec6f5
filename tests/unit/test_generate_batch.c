/* test_generate_batch.c - clara_generate_batch against clara_generate: every request of a mixed
 * batch (QA from text, QA from precomputed vectors, E2E retrieval, paraphrase, different lengths
 * and limits, plus requests that must fail alone) gets exactly the result it gets alone. Uses the
 * demo model that `make` builds (an E2E-style model with all three adapters). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clara.h"
#include "ctx.h"
#include "forward.h"
#include "t.h"

static clara_model *g_model;
static clara_ctx *g_ctx;

static const clara_text k_docs[] = {
    {"Paris is the capital of France.", 31},
    {"The Rhine flows through Basel, Strasbourg and Cologne.", 54},
    {"Mount Everest is the highest mountain above sea level.", 54},
    {"Honey never spoils; jars from ancient tombs were still edible.", 62},
    {"Octopuses have three hearts and blue blood.", 43},
    {"The Great Wall of China is thousands of kilometres long.", 56},
};

static clara_gen_params ask(const char *q, size_t first_doc, size_t n_docs, uint32_t max_new) {
    clara_gen_params p = clara_gen_default_params();
    p.query = q;
    p.query_len = q ? strlen(q) : 0;
    p.docs = k_docs + first_doc;
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

static void test_mixed_batch_equals_single(void) {
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *vec = malloc(3 * per * sizeof(float));
    T_EQ_INT(clara_compress(g_ctx, k_docs + 1, 3, vec, NULL), CLARA_OK);
    enum { N = 8 };
    clara_gen_params p[N];
    p[0] = ask("What is the capital of France?", 0, 1, 12);
    p[1] = ask("Which river flows through Basel?", 0, 3, 5);
    p[2] = ask("How many hearts does an octopus have?", 2, 4, 16);
    p[3] = ask("Answer from vectors", 0, 0, 9);
    p[3].docs = NULL;
    p[3].vectors = vec;
    p[3].n_docs = 3;
    p[4] = ask("Which is the highest mountain?", 0, 6, 7);
    p[4].task = CLARA_TASK_RETRIEVE;
    p[4].top_k = 2;
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
            {N0, emb, pos, -1, NULL, h, l, cut ? from[0] : 0},
            {N1, emb + N0 * H, pos + N0, -1, NULL, h + N0 * H, l + V, cut ? from[1] : 0}};
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

int main(void) {
    const char *build = getenv("BUILD");
    char path[1024];
    snprintf(path, sizeof path, "%s/demo/clara-demo.gguf", build && *build ? build : "build");
    clara_model_params mp = clara_model_default_params();
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = 2;
    if (clara_model_load(path, &mp, &g_model) != CLARA_OK ||
        clara_ctx_create(g_model, &cp, &g_ctx) != CLARA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, clara_last_error());
        return 1;
    }
    T_RUN(test_mixed_batch_equals_single);
    T_RUN(test_duplicates_and_determinism);
    T_RUN(test_last_layer_rows);
    T_RUN(test_compress_many_equals_single);
    T_RUN(test_special_token_message);
    clara_ctx_free(g_ctx);
    clara_model_free(g_model);
    return t_report("test_generate_batch");
}
