/* test_vk_engine.c - contexts on the Vulkan backend (vulkan/engine.h), on the demo model that
 * `make` builds, on whatever Vulkan device the machine has (CI: lavapipe; none is a failure):
 *  - placement: all layers, one layer (the rest on the CPU), more than the model has (all), and
 *    the report (clara_ctx_backend: device, layers, bytes in use);
 *  - answers and compressed vectors: all-device, mixed and CPU contexts give the same ids (the
 *    demo's greedy steps have no near ties) and vectors within 1e-4;
 *  - a document cancelled between device layers leaves as on the CPU: the others' vectors are
 *    unchanged and it is asked no more;
 *  - a layer's dispatches recorded as one batch (device.h): the same answer ids and bit-identical
 *    compressed vectors as with one submit per dispatch, the same dispatches, and per decoded
 *    token far fewer submits (one per device layer where device memory is mapped, as on
 *    lavapipe; the figures are printed);
 *  - a device lost mid-request (marked as the driver's VK_ERROR_DEVICE_LOST marks it): that
 *    request fails with an error naming the lost device; the context then runs on the CPU (the
 *    host KV slots hold every row) with the CPU's answer, and says so in its report;
 *  - backend names (cuda and mps mean the GPU) and a bad one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "t.h"
#include "vulkan/engine_internal.h"

static clara_model *g_model;

static clara_ctx *new_ctx(clara_backend_choice b, int layers) {
    clara_ctx_params cp = clara_ctx_default_params();
    cp.n_threads = 2, cp.backend = b, cp.gpu_layers = layers;
    clara_ctx *ctx = NULL;
    clara_status st = clara_ctx_create(g_model, &cp, &ctx);
    T_CHECK_MSG(st == CLARA_OK, "context (backend %d, %d layers): %s", (int)b, layers,
                clara_last_error());
    return ctx;
}

/* The answer of at most max_new tokens to a question about 3 documents: its ids (n_ids). */
static clara_status answer_n(clara_ctx *ctx, int max_new, int32_t *ids, size_t *n_ids) {
    clara_gen_params p = clara_gen_default_params();
    p.task = CLARA_TASK_ANSWER;
    p.query = "Which animal has three hearts?";
    p.query_len = strlen(p.query);
    p.docs = t_docs;
    p.n_docs = 3;
    p.max_new_tokens = max_new;
    clara_gen_result r = {0};
    clara_status st = clara_generate(ctx, &p, &r);
    *n_ids = st == CLARA_OK ? r.n_ids : 0;
    if (st == CLARA_OK) memcpy(ids, r.ids, r.n_ids * sizeof *ids);
    clara_gen_result_free(&r);
    return st;
}

static clara_status answer(clara_ctx *ctx, int32_t *ids, size_t *n_ids) {
    return answer_n(ctx, 16, ids, n_ids);
}

/* Submits and dispatches per decoded token of ctx's device: an answer of 16 tokens less one of
 * 1 token (the same prompt), over the tokens between them; its 16-token ids into ids. */
static void per_token(clara_ctx *ctx, double *submits, double *dispatches, int32_t *ids,
                      size_t *n) {
    clvk_dev *d = ctx->vk->dev;
    int32_t one[4];
    size_t n1 = 0;
    uint64_t s0 = clvk_submits(d), d0 = clvk_dispatches(d);
    T_EQ_INT(answer_n(ctx, 1, one, &n1), CLARA_OK);
    uint64_t s1 = clvk_submits(d), d1 = clvk_dispatches(d);
    T_EQ_INT(answer_n(ctx, 16, ids, n), CLARA_OK);
    uint64_t s2 = clvk_submits(d), d2 = clvk_dispatches(d);
    T_CHECK_MSG(n1 == 1 && *n > 1, "answers of %zu and %zu tokens", n1, *n);
    double steps = *n > n1 ? (double)(*n - n1) : 1;
    *submits = ((double)(s2 - s1) - (double)(s1 - s0)) / steps;
    *dispatches = ((double)(d2 - d1) - (double)(d1 - d0)) / steps;
}

/* A layer's dispatches as one batch against one submit per dispatch (batching off). */
static void test_batched_like_alone(void) {
    clara_ctx *on = new_ctx(CLARA_BACKEND_VULKAN, -1), *off = new_ctx(CLARA_BACKEND_VULKAN, -1);
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *v0 = malloc(4 * per * sizeof(float)), *v1 = malloc(4 * per * sizeof(float));
    if (!on || !off || !v0 || !v1) goto done;
    clvk_set_batching(off->vk->dev, false);
    uint64_t c_on = clvk_submits(on->vk->dev), c_off = clvk_submits(off->vk->dev);
    T_EQ_INT(clara_compress(on, t_docs, 4, v0, NULL), CLARA_OK);
    T_EQ_INT(clara_compress(off, t_docs, 4, v1, NULL), CLARA_OK);
    c_on = clvk_submits(on->vk->dev) - c_on, c_off = clvk_submits(off->vk->dev) - c_off;
    T_CHECK_MSG(memcmp(v0, v1, 4 * per * sizeof(float)) == 0, "batched vectors differ");
    printf("a compression of 4 documents: %llu submits alone, %llu batched\n",
           (unsigned long long)c_off, (unsigned long long)c_on);
    T_CHECK(c_on < c_off);
    int32_t a[64], b[64];
    size_t na = 0, nb = 0;
    double s_on, s_off, d_on, d_off;
    per_token(on, &s_on, &d_on, a, &na);
    per_token(off, &s_off, &d_off, b, &nb);
    T_CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    uint32_t L = g_model->hp.n_layer;
    printf("per decoded token (%u device layers): %.1f dispatches; %.1f submits alone, %.1f "
           "batched\n",
           L, d_on, s_off, s_on);
    T_CHECK_MSG(d_on == d_off && d_on >= 10.0 * L, "dispatches per token: %.1f vs %.1f", d_on,
                d_off);
    T_CHECK_MSG(s_off == d_off, "alone: %.1f submits for %.1f dispatches", s_off, d_off);
    /* one submit per layer; a device whose memory is not mapped adds a copy per download */
    T_CHECK_MSG(s_on >= L && s_on <= 3.0 * L, "batched: %.1f submits per token", s_on);
done:
    free(v0), free(v1);
    clara_ctx_free(on), clara_ctx_free(off);
}

static void test_placement_and_answers(void) {
    clara_ctx *cpu = new_ctx(CLARA_BACKEND_CPU, -1), *vk = new_ctx(CLARA_BACKEND_VULKAN, -1);
    clara_ctx *mixed = new_ctx(CLARA_BACKEND_VULKAN, 1), *many = new_ctx(CLARA_BACKEND_VULKAN, 99);
    if (!cpu || !vk || !mixed || !many) goto done;
    uint32_t L = g_model->hp.n_layer;
    clara_ctx_backend_info bi;
    clara_ctx_backend(vk, &bi);
    T_EQ_STR(bi.backend, "vulkan");
    T_CHECK(bi.gpu_layers == L && bi.n_layer == L && bi.device[0] && bi.device_memory > 0);
    T_CHECK(bi.bytes_used > 0);
    clara_ctx_backend(mixed, &bi);
    T_CHECK(bi.gpu_layers == 1 && vk->vk->first == 0 && mixed->vk->first == L - 1);
    clara_ctx_backend(many, &bi);
    T_EQ_INT(bi.gpu_layers, L);
    clara_ctx_backend(cpu, &bi);
    T_EQ_STR(bi.backend, "cpu");
    int32_t a[64], b[64], c[64];
    size_t na = 0, nb = 0, nc = 0;
    T_EQ_INT(answer(cpu, a, &na), CLARA_OK);
    T_EQ_INT(answer(vk, b, &nb), CLARA_OK);
    T_EQ_INT(answer(mixed, c, &nc), CLARA_OK);
    T_CHECK(na > 0 && na == nb && memcmp(a, b, na * sizeof *a) == 0);
    T_CHECK(nb == nc && memcmp(b, c, nb * sizeof *b) == 0);
    /* a second request on the same contexts: the mirrors' rows are reused or refreshed */
    T_EQ_INT(answer(vk, b, &nb), CLARA_OK);
    T_CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *v0 = malloc(4 * per * sizeof(float)), *v1 = malloc(4 * per * sizeof(float));
    T_EQ_INT(clara_compress(cpu, t_docs, 4, v0, NULL), CLARA_OK);
    T_EQ_INT(clara_compress(mixed, t_docs, 4, v1, NULL), CLARA_OK);
    double worst = 0;
    for (size_t i = 0; i < 4 * per; i++)
        if (fabs((double)v0[i] - v1[i]) > worst) worst = fabs((double)v0[i] - v1[i]);
    T_CHECK_MSG(worst <= 1e-4, "vectors differ by %.3g", worst);
    free(v0), free(v1);
done:
    clara_ctx_free(cpu), clara_ctx_free(vk), clara_ctx_free(mixed), clara_ctx_free(many);
}

/* A lost device fails the request it happens in; the context goes on on the CPU. */
static void test_lost_device(void) {
    clara_ctx *cpu = new_ctx(CLARA_BACKEND_CPU, -1), *vk = new_ctx(CLARA_BACKEND_VULKAN, -1);
    int32_t a[64], b[64];
    size_t na = 0, nb = 0;
    if (!cpu || !vk) goto done;
    T_EQ_INT(answer(cpu, a, &na), CLARA_OK);
    T_EQ_INT(answer(vk, b, &nb), CLARA_OK); /* slots and mirrors in use */
    clvk_mark_lost(vk->vk->dev);
    T_CHECK(answer(vk, b, &nb) != CLARA_OK && err_has("device was lost"));
    clara_ctx_backend_info bi;
    T_EQ_INT(answer(vk, b, &nb), CLARA_OK);
    T_CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    clara_ctx_backend(vk, &bi);
    T_CHECK(strcmp(bi.backend, "cpu") == 0 && strstr(bi.note, "failed") != NULL);
done:
    clara_ctx_free(cpu), clara_ctx_free(vk);
}

/* Document 0 of a compression asked `calls` times; it leaves at the fire_at-th. */
typedef struct {
    int calls, fire_at;
} doc_probe;

static bool doc0_fires(void *arg, size_t doc) {
    doc_probe *p = arg;
    return doc == 0 && ++p->calls >= p->fire_at;
}

/* A document cancelled at each of its polls (between device layers, where x is on the device):
 * the others' vectors are exactly those of the run without the cancellation, and the cancelled
 * one is asked no more. */
static void test_cancel_between_device_layers(void) {
    clara_ctx *vk = new_ctx(CLARA_BACKEND_VULKAN, -1);
    size_t per = (size_t)clara_model_n_mem(g_model) * clara_model_n_embd(g_model);
    float *all = malloc(4 * per * sizeof(float)), *got = malloc(4 * per * sizeof(float));
    if (!vk || !all || !got) goto done;
    T_EQ_INT(clara_compress(vk, t_docs, 4, all, NULL), CLARA_OK);
    int points = 0;
    for (int k = 1; k <= 16; k++) { /* until the document is asked fewer than k times */
        doc_probe pr = {0, k};
        clara_compress_params cp = {doc0_fires, &pr};
        clara_status st = clara_compress_ex(vk, t_docs, 4, got, NULL, &cp);
        T_CHECK_MSG(memcmp(got + per, all + per, 3 * per * sizeof(float)) == 0,
                    "cancelled at poll %d: the other documents' vectors changed", k);
        if (st == CLARA_OK) break;
        points++;
        T_EQ_INT(st, CLARA_ERR_CANCELLED);
        T_CHECK_MSG(pr.calls == k, "cancelled at poll %d: asked %d times", k, pr.calls);
    }
    /* asked before each layer: the last layer's poll is between device layers */
    T_CHECK_MSG(points >= (int)g_model->hp.n_layer, "only %d cancellation points", points);
done:
    free(all), free(got);
    clara_ctx_free(vk);
}

static void test_names(void) {
    clara_backend_choice c = CLARA_BACKEND_CPU;
    T_CHECK(clara_backend_parse("CUDA", &c) == CLARA_OK && c == CLARA_BACKEND_GPU);
    T_CHECK(clara_backend_parse("mps", &c) == CLARA_OK && c == CLARA_BACKEND_GPU);
    T_CHECK(clara_backend_parse("gpu", &c) == CLARA_OK && c == CLARA_BACKEND_GPU);
    T_CHECK(clara_backend_parse("auto", &c) == CLARA_OK && c == CLARA_BACKEND_AUTO);
    T_CHECK(clara_backend_parse("tpu", &c) == CLARA_ERR_INVALID_ARG && err_has("unknown backend"));
    char dev[300];
    T_CHECK(clara_backend_probe(CLARA_BACKEND_VULKAN, dev, sizeof dev) == CLARA_OK && dev[0]);
    /* cuda / mps / gpu: a GPU or an error, never the CPU device that vulkan may take; auto names
     * the GPU it would take, "" for none */
    char gpu[300];
    T_CHECK(clara_backend_probe(CLARA_BACKEND_AUTO, gpu, sizeof gpu) == CLARA_OK);
    clara_status st = clara_backend_probe(CLARA_BACKEND_GPU, dev, sizeof dev);
    if (gpu[0])
        T_CHECK(st == CLARA_OK && strcmp(dev, gpu) == 0);
    else
        T_CHECK(st == CLARA_ERR_NOT_FOUND && err_has("GPU"));
}

int main(void) {
    const char *build = getenv("BUILD");
    char path[1024];
    snprintf(path, sizeof path, "%s/demo/clara-demo.gguf", build && *build ? build : "build");
    clara_model_params mp = clara_model_default_params();
    if (clara_model_load(path, &mp, &g_model) != CLARA_OK) {
        fprintf(stderr, "FAIL: cannot load %s: %s\n", path, clara_last_error());
        return 1;
    }
    T_RUN(test_names);
    T_RUN(test_placement_and_answers);
    T_RUN(test_batched_like_alone);
    T_RUN(test_cancel_between_device_layers);
    T_RUN(test_lost_device);
    clara_model_free(g_model);
    return t_report("test_vk_engine");
}
