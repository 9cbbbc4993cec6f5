/* test_batch.c - continuous batching (clara_batch): requests that join a running batch at any
 * step, leave when done or cancelled, and get exactly the ids they get alone; long compression
 * and prefill passes that let the decoding requests step between their layers (yield_ms), with
 * the same bits; clara_batch_compress's vectors equal clara_compress's. Demo model. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clara.h"
#include "quantize.h"
#include "t.h"

static clara_model *g_model;
static clara_ctx *g_ctx;

typedef struct {
    int tokens; /* ids chosen so far */
} counter;

static bool count_token(void *arg, const int32_t *ids, size_t n) {
    (void)ids;
    ((counter *)arg)->tokens = (int)n;
    return true;
}

static clara_gen_params ask(const char *q, size_t first, size_t n_docs, uint32_t max_new,
                            counter *c) {
    clara_gen_params p = clara_gen_default_params();
    p.query = q;
    p.query_len = strlen(q);
    p.docs = t_docs + first;
    p.n_docs = n_docs;
    p.max_new_tokens = max_new;
    p.ignore_eos = 1;
    p.on_token = count_token;
    p.token_arg = c;
    return p;
}

static bool same(const clara_gen_result *a, const clara_gen_result *b) {
    return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * 4) == 0 &&
           strcmp(a->text, b->text) == 0;
}

/* Steps b until `want` requests came back; done[i] records the order (user = index). */
static int run_until(clara_batch *b, size_t want, clara_status *st) {
    size_t got = 0;
    int steps = 0;
    while (got < want && steps < 10000) {
        clara_batch_done d[8];
        size_t k = 0;
        if (clara_batch_step(b, d, 8, &k) != CLARA_OK) return -1;
        for (size_t i = 0; i < k; i++) st[(size_t)d[i].user] = d[i].status;
        got += k;
        steps++;
    }
    return steps;
}

/* Each request finished and got exactly the ids and text it got alone; frees both results. */
static void expect_as_alone(const clara_status *st, clara_gen_result *r, clara_gen_result *alone,
                            int n) {
    for (int i = 0; i < n; i++) {
        T_EQ_INT(st[i], CLARA_OK);
        T_CHECK_MSG(same(&r[i], &alone[i]), "request %d differs from alone", i);
        clara_gen_result_free(&r[i]);
        clara_gen_result_free(&alone[i]);
    }
}

/* A batch on the test context with these piece rows and yield (clara_batch_params). */
static clara_batch *new_batch(uint32_t piece_rows, float yield_ms) {
    clara_batch_params bp = clara_batch_default_params();
    bp.piece_rows = piece_rows;
    bp.yield_ms = yield_ms;
    clara_batch *b = NULL;
    T_EQ_INT(clara_batch_create(g_ctx, &bp, &b), CLARA_OK);
    return b;
}

static void test_join_running_batch(void) {
    counter c[4] = {{0}};
    clara_gen_params p[4] = {ask("What is the capital of France?", 0, 1, 40, &c[0]),
                             ask("Which river flows through Basel?", 1, 3, 12, &c[1]),
                             ask("How many hearts does an octopus have?", 2, 4, 20, &c[2]),
                             ask("Tell me about honey.", 3, 2, 5, &c[3])};
    clara_gen_result alone[4], r[4];
    for (int i = 0; i < 4; i++) T_EQ_INT(clara_generate(g_ctx, &p[i], &alone[i]), CLARA_OK);
    for (int i = 0; i < 4; i++) c[i].tokens = 0;
    clara_batch *b = new_batch(64, 0);
    clara_status st[4] = {-1, -1, -1, -1};
    T_EQ_INT(clara_batch_add(b, &p[0], &r[0], (void *)0), CLARA_OK);
    /* request 0 decodes alone for a while, then the others join one by one */
    for (int i = 0; i < 6; i++) {
        size_t k = 9;
        T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK);
        T_EQ_INT(k, 0);
    }
    T_CHECK(c[0].tokens >= 3);
    T_EQ_INT(clara_batch_decoding(b), 1);
    int before = c[0].tokens;
    T_EQ_INT(clara_batch_add(b, &p[1], &r[1], (void *)1), CLARA_OK);
    size_t k = 0;
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK);
    T_EQ_INT(c[0].tokens, before + 1); /* a step for it while 1's documents are compressed */
    T_EQ_INT(clara_batch_add(b, &p[2], &r[2], (void *)2), CLARA_OK);
    T_EQ_INT(clara_batch_add(b, &p[3], &r[3], (void *)3), CLARA_OK);
    T_EQ_INT(clara_batch_size(b), 4);
    T_CHECK(run_until(b, 4, st) > 0);
    expect_as_alone(st, r, alone, 4);
    T_EQ_INT(clara_batch_size(b), 0);
    clara_batch_free(b);
}

static void test_steps_between_layers(void) {
    counter c[2] = {{0}};
    clara_gen_params p[2] = {ask("What is the capital of France?", 0, 1, 60, &c[0]),
                             ask("Which is the highest mountain?", 0, 6, 6, &c[1])};
    clara_gen_result alone[2], r[2];
    for (int i = 0; i < 2; i++) T_EQ_INT(clara_generate(g_ctx, &p[i], &alone[i]), CLARA_OK);
    c[0].tokens = 0;
    /* one pass for all six documents; a step between every two layers */
    clara_batch *b = new_batch(4096, 1e-6f);
    clara_status st[2] = {-1, -1};
    T_EQ_INT(clara_batch_add(b, &p[0], &r[0], (void *)0), CLARA_OK);
    size_t k = 0;
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* its document */
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* prefill, first tokens */
    T_EQ_INT(clara_batch_decoding(b), 1);
    T_EQ_INT(clara_batch_add(b, &p[1], &r[1], (void *)1), CLARA_OK);
    int before = c[0].tokens;
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* the six documents in one pass */
    /* the demo model has several layers: request 0 stepped between them, and once after */
    T_CHECK_MSG(c[0].tokens > before + 1, "%d tokens during the compression pass",
                c[0].tokens - before);
    T_CHECK(run_until(b, 2, st) > 0);
    expect_as_alone(st, r, alone, 2);
    /* a compression through the batch while a request decodes: the same vectors */
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *v1 = malloc(6 * per * sizeof(float)), *v2 = malloc(6 * per * sizeof(float));
    T_EQ_INT(clara_compress(g_ctx, t_docs, 6, v1, NULL), CLARA_OK);
    c[0].tokens = 0;
    T_EQ_INT(clara_batch_add(b, &p[0], &r[0], (void *)0), CLARA_OK);
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* its document */
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* its prefill */
    T_EQ_INT(clara_batch_decoding(b), 1);
    before = c[0].tokens;
    T_EQ_INT(clara_batch_compress(b, t_docs, 6, v2, NULL, NULL), CLARA_OK);
    T_CHECK(c[0].tokens > before);
    T_CHECK(memcmp(v1, v2, 6 * per * sizeof(float)) == 0);
    T_CHECK(run_until(b, 1, st) > 0);
    T_EQ_INT(st[0], CLARA_OK);
    T_CHECK(r[0].n_ids == 60);
    clara_gen_result_free(&r[0]);
    free(v1);
    free(v2);
    clara_batch_free(b);
}

/* A request's documents go in one pass when a layer of it keeps the pace (yield_ms, measured on
 * the passes before), even past piece_rows: a decoding step between two pieces of them would
 * delay its first token by a step. */
static void test_documents_kept_together(void) {
    counter c[2] = {{0}};
    clara_gen_params p[2] = {ask("What is the capital of France?", 0, 1, 30, &c[0]),
                             ask("Which river flows through Basel?", 1, 4, 8, &c[1])};
    clara_gen_result alone[2], r[2];
    for (int i = 0; i < 2; i++) T_EQ_INT(clara_generate(g_ctx, &p[i], &alone[i]), CLARA_OK);
    for (int i = 0; i < 2; i++) c[i].tokens = 0;
    /* one document per pass, were piece_rows the only bound; a pace the demo model's layers
     * keep at any size */
    clara_batch *b = new_batch(1, 1e6f);
    clara_status st[2] = {-1, -1};
    T_EQ_INT(clara_batch_add(b, &p[0], &r[0], (void *)0), CLARA_OK);
    size_t k = 0;
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* its document: the pace measured */
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* prefill, first token */
    T_EQ_INT(clara_batch_decoding(b), 1);
    T_EQ_INT(clara_batch_add(b, &p[1], &r[1], (void *)1), CLARA_OK);
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* its 4 documents, prefill, a step */
    T_EQ_INT(clara_batch_decoding(b), 2);
    T_EQ_INT(c[1].tokens, 2);
    T_CHECK(run_until(b, 2, st) > 0);
    expect_as_alone(st, r, alone, 2);
    clara_batch_free(b);
}

/* With nothing decoding yet, a pass takes every waiting request's documents that fit (throughput),
 * whatever piece_rows says. */
static void test_first_pass_whole(void) {
    counter c[3] = {{0}};
    clara_gen_params p[3] = {ask("What is the capital of France?", 0, 2, 4, &c[0]),
                             ask("Which river flows through Basel?", 1, 3, 4, &c[1]),
                             ask("Tell me about honey.", 3, 2, 4, &c[2])};
    clara_batch *b = new_batch(1, 1e6f);
    clara_gen_result r[3];
    for (int i = 0; i < 3; i++)
        T_EQ_INT(clara_batch_add(b, &p[i], &r[i], (void *)(intptr_t)i), CLARA_OK);
    size_t k = 0;
    T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK); /* all 7 documents, the 3 prefills */
    T_EQ_INT(clara_batch_decoding(b), 3);
    clara_status st[3] = {-1, -1, -1};
    T_CHECK(run_until(b, 3, st) > 0);
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(st[i], CLARA_OK);
        clara_gen_result_free(&r[i]);
    }
    clara_batch_free(b);
}

static bool cancel_flag(void *arg) {
    return *(bool *)arg;
}

static void test_cancel_leaves_next_step(void) {
    counter c[2] = {{0}};
    clara_gen_params p[2] = {ask("What is the capital of France?", 0, 1, 50, &c[0]),
                             ask("Which river flows through Basel?", 1, 2, 30, &c[1])};
    bool gone = false;
    p[0].cancelled = cancel_flag;
    p[0].cancel_arg = &gone;
    clara_gen_result alone, r[2];
    T_EQ_INT(clara_generate(g_ctx, &p[1], &alone), CLARA_OK);
    clara_batch *b = NULL;
    T_EQ_INT(clara_batch_create(g_ctx, NULL, &b), CLARA_OK);
    T_EQ_INT(clara_batch_add(b, &p[0], &r[0], (void *)0), CLARA_OK);
    T_EQ_INT(clara_batch_add(b, &p[1], &r[1], (void *)1), CLARA_OK);
    size_t k = 0;
    clara_batch_done d[2];
    for (int i = 0; i < 5; i++) T_EQ_INT(clara_batch_step(b, d, 2, &k), CLARA_OK);
    gone = true; /* the client of request 0 left: it comes back at the next step */
    int at = c[0].tokens;
    T_EQ_INT(clara_batch_step(b, d, 2, &k), CLARA_OK);
    T_EQ_INT(k, 1);
    T_CHECK(d[0].user == (void *)0 && d[0].status == CLARA_ERR_CANCELLED);
    T_EQ_INT(c[0].tokens, at);
    T_EQ_INT(clara_batch_decoding(b), 1);
    clara_status st[2] = {-1, -1};
    T_CHECK(run_until(b, 1, st) > 0);
    T_EQ_INT(st[1], CLARA_OK);
    T_CHECK(same(&r[1], &alone));
    clara_gen_result_free(&r[0]);
    clara_gen_result_free(&r[1]);
    clara_gen_result_free(&alone);
    clara_batch_free(b);
}

/* More requests decoding than one pass of the decode GEMV takes (16 rows), on a q4_0 model (the
 * quantized kernels have several paths by row count): each gets exactly its answer alone. */
static void test_many_quantized(const char *q4_path) {
    clara_model *m = NULL;
    clara_ctx *ctx = NULL;
    clara_model_params mp = clara_model_default_params();
    clara_ctx_params cp = t_ctx_params();
    T_EQ_INT(clara_model_load(q4_path, &mp, &m), CLARA_OK);
    T_EQ_INT(clara_ctx_create(m, &cp, &ctx), CLARA_OK);
    enum { N = 21 };
    static const char *qs[] = {
        "What is the capital?", "Which river?",          "How many hearts?", "Which mountain?",
        "Tell me about honey.", "How long is the wall?", "Where is Basel?"};
    counter c[N];
    clara_gen_params p[N];
    clara_gen_result alone[N], r[N];
    clara_status st[N];
    for (int i = 0; i < N; i++) {
        c[i].tokens = 0;
        p[i] = ask(qs[i % 7], (size_t)i % 5, 1 + (size_t)i % 2, 10 + (uint32_t)i, &c[i]);
        T_EQ_INT(clara_generate(ctx, &p[i], &alone[i]), CLARA_OK);
        st[i] = (clara_status)-1;
    }
    clara_batch *b = NULL;
    T_EQ_INT(clara_batch_create(ctx, NULL, &b), CLARA_OK);
    for (int i = 0; i < N; i++)
        T_EQ_INT(clara_batch_add(b, &p[i], &r[i], (void *)(intptr_t)i), CLARA_OK);
    size_t k = 0; /* the documents, then the prompts in passes of at most 2,200 rows */
    for (int i = 0; i < 4 && clara_batch_decoding(b) < N; i++)
        T_EQ_INT(clara_batch_step(b, NULL, 0, &k), CLARA_OK);
    T_EQ_INT(clara_batch_decoding(b), N);
    T_CHECK(run_until(b, N, st) > 0);
    for (int i = 0; i < N; i++) {
        T_EQ_INT(st[i], CLARA_OK);
        T_CHECK_MSG(same(&r[i], &alone[i]), "request %d differs from alone", i);
        clara_gen_result_free(&r[i]);
        clara_gen_result_free(&alone[i]);
    }
    clara_batch_free(b);
    clara_ctx_free(ctx);
    clara_model_free(m);
}

int main(void) {
    char path[1024];
    if (t_load_demo(&g_model, &g_ctx, path, sizeof path) != 0) return 1;
    T_RUN(test_join_running_batch);
    T_RUN(test_steps_between_layers);
    T_RUN(test_documents_kept_together);
    T_RUN(test_first_pass_whole);
    T_RUN(test_cancel_leaves_next_step);
    char q4[1100]; /* beside the demo model */
    snprintf(q4, sizeof q4, "%.*s-q4_0-batch.gguf", (int)(strlen(path) - 5), path);
    clara_quantize_opts qo = {false, NULL};
    T_EQ_INT(clara_quantize_file(path, q4, "q4_0", &qo), CLARA_OK);
    test_many_quantized(q4);
    remove(q4);
    clara_ctx_free(g_ctx);
    clara_model_free(g_model);
    return t_report("test_batch");
}
