/* test_vk_layer.c - the Vulkan layer operations (src/vulkan/ops_layer.h) against independent
 * references, on whatever Vulkan device the machine has (CI: lavapipe); no device is a failure.
 *  - attention: forward.c's attention (causal, grouped-query heads, scale 1/sqrt(head_dim),
 *    softmax in f32) on random queries, keys and values, for several key counts, past lengths,
 *    GQA ratios, one and many query rows, keys laid out as a slot's head-major cache and as the
 *    batch's own rows, and in several dispatches (a small scratch), against a double-precision
 *    evaluation of the same formula, within the bound derived at attn_bound();
 *  - row copies and adds: bit-exact (a copy moves bits; f32 addition is correctly rounded);
 *  - bad shapes and buffers too small fail with their messages. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "t_vk.h"
#include "vulkan/device.h"
#include "vulkan/ops_layer.h"

static clvk_dev *g_dev;

static float *rand_floats(size_t n, double scale) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; v && i < n; i++) v[i] = (float)(t_frand() * scale);
    return v;
}

#define U 5.9604644775390625e-08 /* 2^-24: f32's unit roundoff */

static double gamma_n(double n) {
    return n * U / (1 - n * U);
}

/* The bound on |out_e - exact_e| for one query row, from Vulkan's precision rules (the spec's
 * "Precision and Operation of SPIR-V Instructions": +, -, * correctly rounded; exp within
 * 3 + 2|x| ULP; 1/x within 2.5 ULP; an ULP at most 2u of the value):
 *  - each score s_k = (q·K_k)·scale is off by at most delta = gamma_{d+1} · scale · Σ|q_i K_ki|
 *    (the dot's d products and sums, the scale's product);
 *  - exp(s_k - max) has the relative error eta_k <= e^(delta_k + u|x| + (3 + 2|x|)·2u) - 1 (the
 *    argument's rounding and exp's own), the max being common to every key;
 *  - so a probability w_k·(1/Σw) is off relatively by rho = (1+eta)/(1-eta)·(1+gamma_n)·(1+5u)·
 *    (1+u) - 1 (the key-by-key sum of n weights — the parts and the tree add n terms in all —,
 *    the reciprocal, the product);
 *  - and out_e = Σ p_k V_ke, summed key by key, by rho·A + gamma_{n+1}·(1+rho)·A with
 *    A = Σ p_k |V_ke| (exact p). */
static double attn_bound(double eta, uint32_t n_keys, double A) {
    double rho = (1 + eta) / (1 - eta) * (1 + gamma_n(n_keys)) * (1 + 5 * U) * (1 + U) - 1;
    return rho * A + gamma_n(n_keys + 1) * (1 + rho) * A;
}

typedef struct {
    uint32_t n_head, n_head_kv, d, n_q, past;
    bool batch_layout; /* keys as the batch's own rows (row stride kv_dim), not head-major */
    uint32_t scratch_rows;
} attn_case;

/* Runs one case; returns the largest error relative to its bound. */
static double attn_run(const attn_case *c) {
    uint32_t d = c->d, n_keys = c->past + c->n_q, q_dim = c->n_head * d, kv_dim = c->n_head_kv * d;
    uint32_t cap = n_keys + 3; /* a slot's capacity beyond what is used */
    clvk_attn_shape s = {
        c->n_head, c->n_head_kv,          d, c->n_q, c->past + 1, 5, q_dim, 7, 0, 0, 0, 11,
        q_dim,     1.0f / sqrtf((float)d)};
    size_t kv_floats;
    if (c->batch_layout) {
        s.head_step = d, s.kv_stride = kv_dim;
        kv_floats = 7 + (size_t)n_keys * kv_dim;
    } else {
        s.head_step = cap * d, s.kv_stride = d;
        kv_floats = 7 + (size_t)c->n_head_kv * cap * d;
    }
    s.v_off = 7;
    float *q = rand_floats(5 + (size_t)c->n_q * q_dim, 1.0);
    float *K = rand_floats(kv_floats, 2.0), *V = rand_floats(kv_floats, 1.0);
    size_t out_n = 11 + (size_t)c->n_q * q_dim;
    float *out = malloc(out_n * sizeof(float));
    clvk_buf *bq = t_vk_floats(g_dev, q, 5 + (size_t)c->n_q * q_dim),
             *bk = t_vk_floats(g_dev, K, kv_floats);
    clvk_buf *bv = t_vk_floats(g_dev, V, kv_floats), *bo = t_vk_floats(g_dev, NULL, out_n);
    clvk_buf *bs = t_vk_floats(g_dev, NULL, clvk_attn_scratch_floats(&s, c->scratch_rows));
    double worst = INFINITY;
    clara_status st = bq && bk && bv && bo && bs
                          ? clvk_attention(g_dev, &s, 0, c->n_q, bq, bk, bv, bo, bs)
                          : CLARA_ERR_NOMEM;
    T_CHECK_MSG(st == CLARA_OK, "attention: %s", clara_last_error());
    if (st == CLARA_OK && clvk_download(g_dev, bo, 0, out, out_n * 4) == CLARA_OK) {
        worst = 0;
        double *sc = malloc(n_keys * sizeof(double));
        for (uint32_t t = 0; t < c->n_q; t++)
            for (uint32_t h = 0; h < c->n_head; h++) {
                uint32_t kvh = h / (c->n_head / c->n_head_kv), nk = s.keys0 + t;
                const float *qr = q + s.q_off + (size_t)t * q_dim + h * d;
                double mx = -INFINITY, sum = 0, delta = 0, xmax = 0;
                for (uint32_t k = 0; k < nk; k++) {
                    const float *kr = K + s.k_off + kvh * s.head_step + (size_t)k * s.kv_stride;
                    double dot = 0, mag = 0;
                    for (uint32_t e = 0; e < d; e++)
                        dot += (double)qr[e] * kr[e], mag += fabs((double)qr[e] * kr[e]);
                    sc[k] = dot * s.scale;
                    double dk = gamma_n(d + 1) * s.scale * mag;
                    if (dk > delta) delta = dk;
                    if (sc[k] > mx) mx = sc[k];
                }
                for (uint32_t k = 0; k < nk; k++) {
                    if (mx - sc[k] > xmax) xmax = mx - sc[k];
                    sc[k] = exp(sc[k] - mx);
                    sum += sc[k];
                }
                xmax += 2 * delta; /* the device's arguments: its scores are off by delta */
                double eta = exp(2 * delta + U * xmax + (3 + 2 * xmax) * 2 * U) - 1;
                for (uint32_t e = 0; e < d; e++) {
                    double ref = 0, A = 0;
                    for (uint32_t k = 0; k < nk; k++) {
                        double v = V[s.v_off + kvh * s.head_step + (size_t)k * s.kv_stride + e];
                        ref += sc[k] / sum * v;
                        A += sc[k] / sum * fabs(v);
                    }
                    double err = fabs(out[s.out_off + (size_t)t * q_dim + h * d + e] - ref);
                    double rel = err / attn_bound(eta, nk, A);
                    if (!(rel <= worst)) worst = rel; /* NaN stays */
                }
            }
        free(sc);
    }
    free(q), free(K), free(V), free(out);
    clvk_buf *bufs[] = {bq, bk, bv, bo, bs};
    for (int i = 0; i < 5; i++) clvk_buf_free(g_dev, bufs[i]);
    return worst;
}

static void test_attention(void) {
    static const attn_case cases[] = {
        {4, 4, 8, 1, 0, false, 1},    /* one row, one key */
        {4, 2, 16, 1, 37, false, 1},  /* decoding: one row over a past */
        {8, 2, 64, 1, 300, false, 1}, /* 7B's 4:1 grouping, long past */
        {4, 1, 32, 9, 0, true, 16},   /* a one-pass sequence (compression) */
        {6, 3, 16, 70, 5, false, 16}, /* many rows after a past, several dispatches */
        {2, 2, 128, 65, 0, true, 65}, /* head_dim 128, more rows than the workgroup width */
        {8, 4, 24, 130, 200, false, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const attn_case *c = &cases[i];
        double w = attn_run(c);
        T_CHECK_MSG(w <= 1.0,
                    "attention %u/%u heads of %u, %u rows after %u: error %.3g of the bound",
                    c->n_head, c->n_head_kv, c->d, c->n_q, c->past, w);
        printf(
            "attention %u/%u heads of %u, %u query rows after %u: worst error %.3f of the bound\n",
            c->n_head, c->n_head_kv, c->d, c->n_q, c->past, w);
    }
}

/* Copies and adds of strided blocks are exact. */
static void test_rows(void) {
    enum { N = 4000 };
    float *a = rand_floats(N, 3.0), *b = rand_floats(N, 3.0), *o = malloc(N * sizeof(float));
    clvk_buf *ba = t_vk_floats(g_dev, a, N), *bb = t_vk_floats(g_dev, b, N);
    if (!ba || !bb) goto done;
    /* 3 planes of 5 rows of 7: from a (planes 300 apart, rows 20) to b (planes 100, rows 9) */
    clvk_rows_at s = {13, 300, 20}, t = {2, 100, 9};
    T_CHECK(clvk_rows(g_dev, CLVK_ROWS_ADD, ba, s, bb, t, 3, 5, 7) == CLARA_OK);
    T_CHECK(clvk_rows(g_dev, CLVK_ROWS_COPY, ba, (clvk_rows_at){1000, 0, 0}, bb,
                      (clvk_rows_at){3000, 0, 0}, 1, 1, 900) == CLARA_OK);
    if (clvk_download(g_dev, bb, 0, o, N * 4) != CLARA_OK) goto done;
    float *want = malloc(N * sizeof(float));
    memcpy(want, b, N * sizeof(float));
    for (int p = 0; p < 3; p++)
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < 7; i++)
                want[2 + p * 100 + r * 9 + i] += a[13 + p * 300 + r * 20 + i];
    memcpy(want + 3000, a + 1000, 900 * sizeof(float));
    T_CHECK(memcmp(want, o, N * sizeof(float)) == 0);
    free(want);
    /* a block reaching past the buffer's end */
    T_CHECK(clvk_rows(g_dev, CLVK_ROWS_COPY, ba, (clvk_rows_at){3990, 0, 0}, bb,
                      (clvk_rows_at){0, 0, 0}, 1, 1, 11) == CLARA_ERR_INVALID_ARG &&
            err_has("row copy source"));
done:
    clvk_buf_free(g_dev, ba), clvk_buf_free(g_dev, bb);
    free(a), free(b), free(o);
}

static void test_attention_errors(void) {
    clvk_buf *b = t_vk_floats(g_dev, NULL, 64), *sc = t_vk_floats(g_dev, NULL, 4);
    if (!b || !sc) return;
    clvk_attn_shape s = {3, 2, 4, 1, 1, 0, 12, 0, 0, 4, 4, 0, 12, 0.5f};
    T_CHECK(clvk_attention(g_dev, &s, 0, 1, b, b, b, b, sc) == CLARA_ERR_INVALID_ARG &&
            err_has("3 query heads over 2"));
    s.n_head = 4, s.n_q = 9; /* 9 rows of 16 floats: more than 64 */
    s.q_stride = 16;
    T_CHECK(clvk_attention(g_dev, &s, 0, 9, b, b, b, b, sc) == CLARA_ERR_INVALID_ARG &&
            err_has("attention queries"));
    s.n_q = 1, s.keys0 = 3; /* 4 heads x 3 keys: 12 floats a row, the scratch holds 4 */
    T_CHECK(clvk_attention(g_dev, &s, 0, 1, b, b, b, b, sc) == CLARA_ERR_INVALID_ARG &&
            err_has("holds no row"));
    clvk_buf_free(g_dev, b), clvk_buf_free(g_dev, sc);
}

int main(void) {
    if (!(g_dev = t_vk_open())) return 1;
    T_RUN(test_attention);
    T_RUN(test_rows);
    T_RUN(test_attention_errors);
    clvk_close(g_dev);
    return t_report("test_vk_layer");
}
