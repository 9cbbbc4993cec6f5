/* test_kernels.c - differential tests of clara_matmul's kernels (src/cpu/): for every weight type
 * and every instruction-set level this machine supports (forced with clara_isa_force):
 *  - the scalar reference equals a double-precision dot of the same (dequantized) weights within
 *    1e-5 of sum|w*x| (float types), and every SIMD level equals the reference within the same
 *    bound (quantized types: the reference integer dot, 1e-5 of the sum of |block terms|);
 *  - accumulate mode adds alpha * d to what y held;
 *  - results are bit-identical with 1 and 2 threads, and (float types) a token's row is
 *    bit-identical whether it is multiplied alone or in a batch;
 *  - the dispatch API: names, parsing, forcing a level the machine lacks falls back.
 * Shapes are odd on purpose: n = 1, 2, 3, 7, 33; columns not multiples of 8/16/64 where the type
 * allows. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"
#include "cpu/dispatch.h"
#include "cpu/gemv.h"
#include "cpu/kernels.h"
#include "cpu/kernels_ref.h"
#include "cpu/matmul.h"
#include "cpu/kctx.h"
#include "cpu/repack.h"
#include "dtype.h"
#include "quant.h"
#include "t.h"

/* A kernel context (cpu/kctx.h) over its own pool: all clara_matmul takes, no engine context. */
typedef struct {
    cpu_kctx kc;
} test_ctx;

static int ctx_init(test_ctx *c, int threads, size_t max_cols) {
    clara_pool *pool = NULL;
    memset(c, 0, sizeof *c);
    if (clara_pool_create(threads, &pool) != CLARA_OK) return -1;
    if (cpu_kctx_init(&c->kc, pool, max_cols) != CLARA_OK) {
        clara_pool_free(pool);
        return -1;
    }
    return 0;
}

static void ctx_free(test_ctx *c) {
    clara_pool_free(c->kc.pool);
    cpu_kctx_free(&c->kc);
}

/* A random weight matrix of type t and its dequantized values (what the kernels multiply). */
typedef struct {
    cpu_mat W;
    void *data;
    float *deq; /* [rows][cols] */
} test_mat;

static int mat_make(test_mat *m, clara_type t, uint64_t rows, uint64_t cols) {
    const clara_type_info *ti = clara_type_get((uint32_t)t);
    size_t row_bytes = (size_t)(cols / ti->block_size) * ti->type_size;
    float *src = malloc(rows * cols * sizeof(float));
    m->data = malloc(rows * row_bytes + 1);
    m->deq = malloc(rows * cols * sizeof(float));
    if (!src || !m->data || !m->deq) return -1;
    for (size_t i = 0; i < rows * cols; i++) src[i] = (float)t_frand();
    for (uint64_t r = 0; r < rows; r++) {
        uint8_t *dst = (uint8_t *)m->data + r * row_bytes;
        if (clara_quantize_row(t, src + r * cols, cols, dst, "w") != CLARA_OK ||
            clara_dequantize_row(t, dst, cols, m->deq + r * cols) != CLARA_OK)
            return -1;
    }
    free(src);
    m->W = (cpu_mat){m->data, t, rows, cols, NULL};
    return 0;
}

static void mat_free(test_mat *m) {
    free(m->data);
    free(m->deq);
}

static float *rand_vec(size_t n) {
    float *v = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; v && i < n; i++) v[i] = (float)t_frand();
    return v;
}

static bool is_float(clara_type t) {
    return t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16;
}

/* Bound on |kernel - truth| for element (t, r): 1e-5 of the sum of |terms|. For float types the
 * terms are w*x; for quantized ones the per-block terms of the integer dot are bounded by
 * |w_deq| * |x| * (1 + 1/127 quantization of x), so the same sum (scaled by 1.01) bounds them. */
static double elem_bound(const test_mat *m, const float *x, uint32_t t, uint64_t r) {
    size_t cols = (size_t)m->W.cols;
    double s = 0;
    for (size_t k = 0; k < cols; k++) s += fabs((double)m->deq[r * cols + k] * x[t * cols + k]);
    return 1e-5 * s * (is_float(m->W.type) ? 1.0 : 1.01) + 1e-30;
}

/* Truth for element (t, r): for float types a double-precision dot; for quantized types the
 * reference integer dot (the kernels' specification) against x quantized by clara_quantize_row. */
static double elem_truth(const test_mat *m, const float *x, uint32_t t, uint64_t r) {
    size_t cols = (size_t)m->W.cols;
    if (is_float(m->W.type)) {
        double s = 0;
        for (size_t k = 0; k < cols; k++) s += (double)m->deq[r * cols + k] * x[t * cols + k];
        return s;
    }
    const clara_type_info *ti = clara_type_get((uint32_t)m->W.type);
    size_t row_bytes = (size_t)(cols / ti->block_size) * ti->type_size;
    float d = NAN;
    if (clara_vec_dot_ref(m->W.type, (const uint8_t *)m->data + r * row_bytes, x + t * cols, cols,
                          &d) != CLARA_OK)
        return NAN;
    return d;
}

static int n_levels_run;

/* One (type, shape, n) case at every supported level and both thread counts. */
static void check_case(clara_type type, uint64_t rows, uint64_t cols, uint32_t n, test_ctx *c1,
                       test_ctx *c2) {
    test_mat m;
    if (mat_make(&m, type, rows, cols) != 0) {
        T_CHECK_MSG(0, "setup %s %llux%llu", clara_type_name(type), (unsigned long long)rows,
                    (unsigned long long)cols);
        return;
    }
    float *x = rand_vec((size_t)n * cols), *y1 = malloc((size_t)n * rows * sizeof(float)),
          *y2 = malloc((size_t)n * rows * sizeof(float)),
          *ys = malloc((size_t)rows * sizeof(float)), *ya = rand_vec((size_t)n * rows),
          *ya0 = malloc((size_t)n * rows * sizeof(float));
    memcpy(ya0, ya, (size_t)n * rows * sizeof(float));
    double *truth = malloc((size_t)n * rows * sizeof(double)),
           *bound = malloc((size_t)n * rows * sizeof(double));
    for (uint32_t t = 0; t < n; t++)
        for (uint64_t r = 0; r < rows; r++) {
            truth[t * rows + r] = elem_truth(&m, x, t, r);
            bound[t * rows + r] = elem_bound(&m, x, t, r);
        }
    for (int lv = 0; lv < CLARA_ISA_COUNT; lv++) {
        if (!clara_isa_supported((clara_isa)lv)) continue;
        clara_isa_force((clara_isa)lv);
        n_levels_run |= 1 << lv;
        clara_matmul(&c1->kc, &m.W, x, n, y1, false, 1.0f);
        clara_matmul(&c2->kc, &m.W, x, n, y2, false, 1.0f);
        int bad = 0, diff_threads = 0, diff_batch = 0, bad_acc = 0;
        size_t worst = 0;
        /* the scalar level runs the reference integer dot itself: exact for quantized types */
        bool exact = !is_float(type) && lv == CLARA_ISA_REF;
        for (size_t i = 0; i < (size_t)n * rows; i++) {
            if (!(fabs(y1[i] - truth[i]) <= (exact ? 0 : bound[i]))) bad++, worst = i;
            if (memcmp(&y1[i], &y2[i], 4) != 0) diff_threads++;
        }
        /* a token alone gives the same bits as in the batch (float types: one summation order) */
        uint32_t tsel = n / 2;
        clara_matmul(&c2->kc, &m.W, x + (size_t)tsel * cols, 1, ys, false, 1.0f);
        if (is_float(type) && memcmp(ys, y1 + (size_t)tsel * rows, rows * 4) != 0) diff_batch++;
        clara_matmul(&c2->kc, &m.W, x, n, ya, true, 0.5f);
        for (size_t i = 0; i < (size_t)n * rows; i++)
            if (!(fabs(ya[i] - (ya0[i] + 0.5f * y1[i])) <= 1e-6 * (1 + fabs(ya[i])))) bad_acc++;
        memcpy(ya, ya0, (size_t)n * rows * sizeof(float));
        T_CHECK_MSG(bad == 0, "%s %s %llux%llu n=%u: %d off, e.g. [%zu] %.9g vs %.9g (bound %g)",
                    clara_isa_name((clara_isa)lv), clara_type_name(type), (unsigned long long)rows,
                    (unsigned long long)cols, n, bad, worst, (double)y1[worst], truth[worst],
                    bound[worst]);
        T_CHECK_MSG(diff_threads == 0, "%s %s n=%u: %d elements differ between 1 and 2 threads",
                    clara_isa_name((clara_isa)lv), clara_type_name(type), n, diff_threads);
        T_CHECK_MSG(diff_batch == 0, "%s %s n=%u: token alone differs from batch",
                    clara_isa_name((clara_isa)lv), clara_type_name(type), n);
        T_CHECK_MSG(bad_acc == 0, "%s %s n=%u: accumulate off in %d", clara_isa_name((clara_isa)lv),
                    clara_type_name(type), n, bad_acc);
    }
    clara_isa_force(clara_isa_best());
    free(x), free(y1), free(y2), free(ys), free(ya), free(ya0), free(truth), free(bound);
    mat_free(&m);
}

static test_ctx g_c1, g_c2;

static void test_float_types(void) {
    static const clara_type types[] = {CLARA_TYPE_F32, CLARA_TYPE_F16, CLARA_TYPE_BF16};
    static const uint64_t shapes[][2] = {{1, 1},    {5, 7},    {13, 33},  {37, 100},
                                         {70, 257}, {9, 1029}, {130, 16}, {16, 600}};
    static const uint32_t ns[] = {1, 2, 3, 7, 33, 70}; /* 70: few rows split by tokens */
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
                check_case(types[ti], shapes[s][0], shapes[s][1], ns[k], &g_c1, &g_c2);
}

/* Every type with an integer dot product; columns are whole blocks (32 or 256). */
static void test_quant_types(void) {
    static const clara_type types[] = {CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_K,
                                       CLARA_TYPE_Q4_1, CLARA_TYPE_Q5_0, CLARA_TYPE_Q5_1,
                                       CLARA_TYPE_Q5_K, CLARA_TYPE_Q6_K, CLARA_TYPE_Q8_K};
    /* 128 and 1536 columns: whole groups of 4 blocks (the q4_0 AVX-512 decode kernel) */
    static const uint64_t shapes32[][2] = {{1, 32},    {7, 96},  {37, 320},
                                           {19, 1056}, {5, 128}, {41, 1536}};
    static const uint64_t shapes256[][2] = {{1, 256},   {7, 512}, {37, 768},
                                            {19, 1280}, {5, 256}, {41, 1536}};
    /* 8, 16: the decode GEMV in one and two passes (gemv.h); 33: the packed GEMM (qgemm.h) */
    static const uint32_t ns[] = {1, 2, 3, 4, 7, 8, 16, 33};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        bool k = clara_type_get((uint32_t)types[ti])->block_size == 256;
        for (size_t s = 0; s < sizeof shapes32 / sizeof shapes32[0]; s++)
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
                check_case(types[ti], k ? shapes256[s][0] : shapes32[s][0],
                           k ? shapes256[s][1] : shapes32[s][1], ns[j], &g_c1, &g_c2);
    }
}

/* Enough rows for the packed GEMM to give each task several panels (qgemm.c panels_per_task: 4
 * at 512 columns, the last task's 37 rows in 2 panels, one of them partial); the types of both
 * block sizes and the asymmetric ones. */
static void test_quant_multi_panel(void) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_K,
                                       CLARA_TYPE_Q6_K, CLARA_TYPE_Q5_1};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        check_case(types[ti], 1061, 512, 33, &g_c1, &g_c2);
}

/* clara_matmul_lora (LoRA deltas fused into the packed GEMM's panels) gives the bits of the base
 * product followed by one accumulate-matmul per delta, in order: deltas over a row split (two
 * sequences) and a second delta over rows that already had one; with one panel per task (70 rows)
 * and with several (1061 rows). */
static void lora_fused_case(uint64_t rows) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_K, CLARA_TYPE_Q8_0};
    const uint64_t cols = 512, rank = 16;
    const uint32_t n = 33;
    test_mat B[2];
    T_CHECK(mat_make(&B[0], CLARA_TYPE_BF16, rows, rank) == 0);
    T_CHECK(mat_make(&B[1], CLARA_TYPE_F32, rows, rank) == 0);
    float *x = rand_vec((size_t)n * cols), *t = rand_vec((size_t)n * rank * 2);
    float *xc = malloc((size_t)n * cols * sizeof(float));
    float *y1 = malloc((size_t)n * rows * sizeof(float)),
          *y2 = malloc((size_t)n * rows * sizeof(float));
    const clara_lora_delta d[3] = {{0, 10, t, &B[0].W, 0.5f},
                                   {10, 23, t + 10 * rank, &B[0].W, 0.5f},
                                   {4, 20, t + n * rank, &B[1].W, -2.0f}};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        test_mat m, m2;
        T_CHECK(mat_make(&m, types[ti], rows, cols) == 0);
        T_CHECK(mat_make(&m2, types[ti], rows, cols) == 0);
        for (int lv = 0; lv < CLARA_ISA_COUNT; lv++) {
            if (!clara_isa_supported((clara_isa)lv)) continue;
            clara_isa_force((clara_isa)lv);
            for (int th = 0; th < 2; th++) {
                cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
                clara_matmul(ctx, &m.W, x, n, y1, false, 1.0f);
                for (int i = 0; i < 3; i++)
                    clara_matmul(ctx, d[i].B, d[i].t, d[i].n, y1 + (size_t)d[i].t0 * rows, true,
                                 d[i].scale);
                clara_matmul_lora(ctx, &m.W, x, n, y2, d, 3, false);
                T_CHECK_MSG(memcmp(y1, y2, (size_t)n * rows * sizeof(float)) == 0,
                            "%s %s %d threads: fused LoRA deltas differ from separate products",
                            clara_isa_name((clara_isa)lv), clara_type_name(types[ti]), th + 1);
                /* another weight on the same input reuses its quantized activations (same_x) */
                clara_matmul(ctx, &m2.W, x, n, y1, false, 1.0f);
                clara_matmul_lora(ctx, &m.W, x, n, y2, NULL, 0, false);
                clara_matmul_lora(ctx, &m2.W, x, n, y2, NULL, 0, true);
                T_CHECK_MSG(memcmp(y1, y2, (size_t)n * rows * sizeof(float)) == 0,
                            "%s %s %d threads: reused activations give other results",
                            clara_isa_name((clara_isa)lv), clara_type_name(types[ti]), th + 1);
                /* new values at the same address: not same_x, so quantized again */
                for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = -x[i] * 0.5f;
                clara_matmul_lora(ctx, &m2.W, x, n, y2, NULL, 0, false);
                memcpy(xc, x, (size_t)n * cols * sizeof(float)); /* another address */
                clara_matmul(ctx, &m2.W, xc, n, y1, false, 1.0f);
                T_CHECK(memcmp(y1, y2, (size_t)n * rows * sizeof(float)) == 0);
            }
        }
        clara_isa_force(clara_isa_best());
        mat_free(&m), mat_free(&m2);
    }
    mat_free(&B[0]), mat_free(&B[1]);
    free(x), free(xc), free(t), free(y1), free(y2);
}

static void test_lora_fused(void) {
    lora_fused_case(70);
    lora_fused_case(1061);
}

/* clara_matmul_group (decode's q/k/v and gate/up in one parallel region) gives each matrix the
 * bits of its own clara_matmul: quantized sets at AVX-512 with shared and separate activation
 * preparations (same type; another type of the same partner format; two partner formats), float
 * sets at every level; 1 and 2 threads, n = 1..16. Where it does not apply (quantized weights at
 * another level, n > 16, float and quantized mixed, widths that differ, non-finite inputs to
 * quantized weights) it returns false and leaves y as it was. */
static void test_matmul_group(void) {
    static const clara_type sets[][3] = {{CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_0},
                                         {CLARA_TYPE_Q4_K, CLARA_TYPE_Q4_K, CLARA_TYPE_Q6_K},
                                         {CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0},
                                         {CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_K, CLARA_TYPE_Q6_K},
                                         {CLARA_TYPE_Q4_0, CLARA_TYPE_F16, CLARA_TYPE_Q4_0},
                                         {CLARA_TYPE_F16, CLARA_TYPE_F16, CLARA_TYPE_F16},
                                         {CLARA_TYPE_F32, CLARA_TYPE_BF16, CLARA_TYPE_F16},
                                         {CLARA_TYPE_F16, CLARA_TYPE_Q4_0, CLARA_TYPE_F16}};
    static const uint64_t rows[3] = {70, 37, 130};
    const uint64_t cols = 512;
    const uint32_t nmax = CLARA_MATMUL_GROUP_ROWS + 1;
    float *x = rand_vec((size_t)nmax * cols), *y1 = malloc(nmax * rows[2] * sizeof(float));
    float *y2[3], sentinel = -12345.0f;
    for (int i = 0; i < 3; i++) y2[i] = malloc(nmax * rows[2] * sizeof(float));
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        test_mat m[3];
        const cpu_mat *W[3];
        int n_float = 0; /* all float: any level; all quantized: AVX-512; mixed: never */
        for (int i = 0; i < 3; i++) {
            T_CHECK(mat_make(&m[i], sets[si][i], rows[i], cols) == 0);
            W[i] = &m[i].W;
            n_float += is_float(sets[si][i]);
        }
        bool has_float = n_float > 0;
        for (int lv = 0; lv < CLARA_ISA_COUNT; lv++) {
            if (!clara_isa_supported((clara_isa)lv)) continue;
            clara_isa_force((clara_isa)lv);
            for (uint32_t n = 1; n <= nmax; n++)
                for (int th = 0; th < 2; th++) {
                    cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
                    for (int i = 0; i < 3; i++)
                        for (size_t e = 0; e < nmax * rows[2]; e++) y2[i][e] = sentinel;
                    bool ok = clara_matmul_group(ctx, W, 3, x, n, y2);
                    bool expect = n <= CLARA_MATMUL_GROUP_ROWS &&
                                  (n_float == 3 || (lv == CLARA_ISA_AVX512 && !n_float));
                    T_CHECK_MSG(ok == expect, "%s set %zu n=%u: group %s", clara_isa_name(lv), si,
                                n, ok ? "ran" : "declined");
                    for (int i = 0; i < 3; i++) {
                        size_t len = (size_t)n * rows[i];
                        if (ok) {
                            clara_matmul(ctx, W[i], x, n, y1, false, 1.0f);
                            T_CHECK_MSG(memcmp(y1, y2[i], len * sizeof(float)) == 0,
                                        "set %zu matrix %d (%s) n=%u %d threads: group differs "
                                        "from clara_matmul",
                                        si, i, clara_type_name(sets[si][i]), n, th + 1);
                        }
                        size_t touched = 0;
                        for (size_t e = ok ? len : 0; e < nmax * rows[2]; e++)
                            touched += y2[i][e] != sentinel;
                        T_CHECK_MSG(touched == 0,
                                    "set %zu matrix %d n=%u: %zu values written "
                                    "outside its output",
                                    si, i, n, touched);
                    }
                }
            /* widths that differ: declined, nothing written; non-finite inputs: declined for
             * quantized weights (each matmul's float fallback follows), float weights run */
            if ((lv == CLARA_ISA_AVX512 && !has_float) || n_float == 3) {
                cpu_mat narrow = m[1].W;
                narrow.cols = 256;
                const cpu_mat *Wn[3] = {W[0], &narrow, W[2]};
                y2[0][0] = sentinel;
                T_CHECK(!clara_matmul_group(&g_c2.kc, Wn, 3, x, 1, y2) && y2[0][0] == sentinel);
                float keep = x[cols + 3];
                x[cols + 3] = NAN;
                bool ran = clara_matmul_group(&g_c2.kc, W, 3, x, 2, y2);
                T_CHECK_MSG(ran == (n_float == 3), "set %zu: NaN input %s", si,
                            ran ? "ran" : "declined");
                if (ran) {
                    clara_matmul(&g_c2.kc, W[2], x, 2, y1, false, 1.0f);
                    T_CHECK(memcmp(y1, y2[2], 2 * rows[2] * sizeof(float)) == 0 &&
                            isnan(y2[2][rows[2]]));
                } else {
                    T_CHECK(y2[0][0] == sentinel);
                }
                x[cols + 3] = keep;
            }
        }
        clara_isa_force(clara_isa_best());
        for (int i = 0; i < 3; i++) mat_free(&m[i]);
    }
    free(x), free(y1);
    for (int i = 0; i < 3; i++) free(y2[i]);
}

/* A row's output does not depend on how many rows are multiplied with it, up to the decode
 * bound (a decoding batch grows and shrinks step by step; matmul.c QGEMM_MIN_ROWS): for every
 * quantized type with an integer dot (the AVX-512 GEMV's four and the general kernels' others)
 * and a float type, at every level and 1 and 2 threads, clara_matmul of the first n of 16 rows
 * (n = 1..16) gives those rows the bits they get among all 16, and each row alone its bits in
 * the batch; clara_matmul_lora with a delta over a row split does too. */
static void test_rows_invariant(void) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_K,
                                       CLARA_TYPE_Q6_K, CLARA_TYPE_Q5_K, CLARA_TYPE_Q4_1,
                                       CLARA_TYPE_F16};
    enum { N = 16, ROWS = 37, COLS = 512, RANK = 8 };
    float *x = rand_vec((size_t)N * COLS), *all = malloc((size_t)N * ROWS * sizeof(float));
    float *some = malloc((size_t)N * ROWS * sizeof(float)), *t = rand_vec((size_t)N * RANK);
    test_mat B;
    T_CHECK(mat_make(&B, CLARA_TYPE_F32, ROWS, RANK) == 0);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        test_mat m;
        T_CHECK(mat_make(&m, types[ti], ROWS, COLS) == 0);
        for (int lv = 0; lv < CLARA_ISA_COUNT; lv++) {
            if (!clara_isa_supported((clara_isa)lv)) continue;
            clara_isa_force((clara_isa)lv);
            for (int th = 0; th < 2; th++) {
                cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
                int differ = 0, differ_lora = 0;
                clara_matmul(ctx, &m.W, x, N, all, false, 1.0f);
                for (uint32_t n = 1; n <= N; n++) {
                    clara_matmul(ctx, &m.W, x, n, some, false, 1.0f);
                    differ += memcmp(some, all, (size_t)n * ROWS * sizeof(float)) != 0;
                    clara_matmul(ctx, &m.W, x + (size_t)(n - 1) * COLS, 1, some, false, 1.0f);
                    differ += memcmp(some, all + (size_t)(n - 1) * ROWS, ROWS * sizeof(float)) != 0;
                }
                /* the same with a LoRA delta on rows from 1 on (a second sequence) */
                clara_lora_delta d = {1, N - 1, t, &B.W, 0.5f};
                clara_matmul_lora(ctx, &m.W, x, N, all, &d, 1, false);
                for (uint32_t n = 2; n <= N; n++) {
                    d.n = n - 1;
                    clara_matmul_lora(ctx, &m.W, x, n, some, &d, 1, false);
                    differ_lora += memcmp(some, all, (size_t)n * ROWS * sizeof(float)) != 0;
                }
                T_CHECK_MSG(differ == 0, "%s %s %d threads: %d row counts change a row's bits",
                            clara_isa_name((clara_isa)lv), clara_type_name(types[ti]), th + 1,
                            differ);
                T_CHECK_MSG(differ_lora == 0,
                            "%s %s %d threads: with LoRA, %d row counts change a row's bits",
                            clara_isa_name((clara_isa)lv), clara_type_name(types[ti]), th + 1,
                            differ_lora);
            }
        }
        clara_isa_force(clara_isa_best());
        mat_free(&m);
    }
    mat_free(&B);
    free(x), free(all), free(some), free(t);
}

/* q4_0 and q8_0 at AVX-512: the decode GEMV (16 weight rows in the lanes) sums in the packed
 * GEMM's order, so a row has the same bits at any number of rows, past the GEMV's 16 too: each
 * of n = 1..16 rows (GEMV) against the same rows among 40 (packed GEMM), 1 and 2 threads, 37 and
 * 70 weight rows (a partial group of 16; tasks of several groups), plain, accumulating and with
 * a LoRA delta over a row split. */
static void test_rows_gemm_bits(void) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0};
    static const uint64_t rows[] = {37, 70};
    enum { N = 40, COLS = 480, RANK = 8 };
    if (!clara_isa_supported(CLARA_ISA_AVX512)) return;
    clara_isa_force(CLARA_ISA_AVX512);
    float *x = rand_vec((size_t)N * COLS), *t = rand_vec((size_t)N * RANK);
    float *all = malloc((size_t)N * 70 * sizeof(float)),
          *some = malloc((size_t)N * 70 * sizeof(float));
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t ri = 0; ri < 2; ri++) {
            test_mat m, B;
            T_CHECK(mat_make(&m, types[ti], rows[ri], COLS) == 0);
            T_CHECK(mat_make(&B, CLARA_TYPE_F32, rows[ri], RANK) == 0);
            size_t R = (size_t)rows[ri];
            for (int th = 0; th < 2; th++) {
                cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
                int differ = 0;
                clara_matmul(ctx, &m.W, x, N, all, false, 1.0f);
                for (uint32_t n = 1; n <= 16; n++) {
                    clara_matmul(ctx, &m.W, x, n, some, false, 1.0f);
                    differ += memcmp(some, all, (size_t)n * R * sizeof(float)) != 0;
                }
                /* accumulating: y + alpha*dot on the same start values */
                for (size_t i = 0; i < (size_t)N * R; i++) some[i] = all[i] = (float)i * 0.25f;
                clara_matmul(ctx, &m.W, x, N, all, true, -0.75f);
                clara_matmul(ctx, &m.W, x, 9, some, true, -0.75f);
                differ += memcmp(some, all, (size_t)9 * R * sizeof(float)) != 0;
                clara_lora_delta d = {1, N - 1, t, &B.W, 0.5f};
                clara_matmul_lora(ctx, &m.W, x, N, all, &d, 1, false);
                for (uint32_t n = 2; n <= 16; n++) {
                    d.n = n - 1;
                    clara_matmul_lora(ctx, &m.W, x, n, some, &d, 1, false);
                    differ += memcmp(some, all, (size_t)n * R * sizeof(float)) != 0;
                }
                T_CHECK_MSG(differ == 0, "%s %zu rows %d threads: %d cases differ from the GEMM",
                            clara_type_name(types[ti]), R, th + 1, differ);
            }
            mat_free(&m);
            mat_free(&B);
        }
    clara_isa_force(clara_isa_best());
    free(x), free(t), free(all), free(some);
}

/* q4_0 and q8_0 on AMX tiles (where the CPU has AMX-INT8): the same bits as the VNNI kernel, at
 * every row count that takes them (9..16), block counts odd and even (a pair loop and its odd
 * last block), weight rows in partial groups of 16, 1 and 2 threads, plain and accumulating. */
static void test_amx_bits(void) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0};
    static const uint64_t shapes[][2] = {{37, 480}, {70, 32}, {33, 96}, {48, 2048}};
    enum { N = 16 };
    if (!clara_isa_supported(CLARA_ISA_AVX512) || !clara_amx_force(true)) {
        fprintf(stderr, "kernels: this CPU (or its kernel) has no AMX-INT8: the AMX GEMV is "
                        "not run here (it is on Intel Xeon 4th generation and later)\n");
        clara_amx_force(false);
        return;
    }
    clara_isa_force(CLARA_ISA_AVX512);
    float *x = rand_vec((size_t)N * 2048);
    float *vnni = malloc((size_t)N * 70 * sizeof(float)),
          *amx = malloc((size_t)N * 70 * sizeof(float));
    int cases = 0;
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            test_mat m;
            T_CHECK(mat_make(&m, types[ti], shapes[si][0], shapes[si][1]) == 0);
            size_t R = (size_t)shapes[si][0];
            for (int th = 0; th < 2; th++) {
                cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
                int differ = 0;
                for (uint32_t n = CLARA_GEMV_AMX_MIN_ROWS; n <= N; n++)
                    for (int acc = 0; acc < 2; acc++, cases++) {
                        for (size_t i = 0; i < (size_t)n * R; i++) vnni[i] = amx[i] = (float)i;
                        clara_amx_force(false);
                        clara_matmul(ctx, &m.W, x, n, vnni, acc, -0.75f);
                        clara_amx_force(true);
                        clara_matmul(ctx, &m.W, x, n, amx, acc, -0.75f);
                        differ += memcmp(vnni, amx, (size_t)n * R * sizeof(float)) != 0;
                    }
                T_CHECK_MSG(differ == 0, "%s %zux%llu %d threads: AMX and VNNI differ in %d cases",
                            clara_type_name(types[ti]), R, (unsigned long long)shapes[si][1],
                            th + 1, differ);
            }
            mat_free(&m);
        }
    fprintf(stderr, "kernels: AMX GEMV checked against VNNI in %d cases\n", cases);
    clara_isa_force(clara_isa_best());
    free(x), free(vnni), free(amx);
}

/* The packed GEMM on AMX tiles (where the CPU has AMX-INT8) gives the VNNI kernel's bits: every
 * type with blocks of 32, token counts around its tiles of 16 (17, 31, 32, 33, 100), one block
 * and odd block counts, weight rows in partial groups and panels, 1 and 2 threads, plain,
 * accumulating and with a LoRA delta on part of the tokens. */
static void amx_gemm_case(const test_mat *m, const float *x, const float *t, const cpu_mat *B,
                          float *vnni, float *amx, int *differ, int *cases) {
    static const uint32_t ns[] = {17, 31, 32, 33, 100};
    size_t R = (size_t)m->W.rows;
    for (int th = 0; th < 2; th++) {
        cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int mode = 0; mode < 3; mode++, (*cases)++) {
                uint32_t n = ns[ni];
                clara_lora_delta d = {3, n - 5, t, B, 0.5f};
                float *out[2] = {vnni, amx};
                for (int a = 0; a < 2; a++) {
                    for (size_t i = 0; i < (size_t)n * R; i++) out[a][i] = (float)i * 0.25f;
                    clara_amx_force(a == 1);
                    if (mode == 2)
                        clara_matmul_lora(ctx, &m->W, x, n, out[a], &d, 1, false);
                    else
                        clara_matmul(ctx, &m->W, x, n, out[a], mode == 1, -0.75f);
                }
                *differ += memcmp(vnni, amx, (size_t)n * R * sizeof(float)) != 0;
            }
    }
}

static void test_amx_gemm_bits(void) {
    static const clara_type types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q4_1, CLARA_TYPE_Q5_0,
                                       CLARA_TYPE_Q5_1, CLARA_TYPE_Q8_0, CLARA_TYPE_Q4_K,
                                       CLARA_TYPE_Q5_K};
    static const uint64_t shapes[][2] = {{37, 480}, {70, 32}, {33, 768}, {150, 256}};
    enum { N = 100, RANK = 8 };
    if (!clara_isa_supported(CLARA_ISA_AVX512) || !clara_amx_force(true)) {
        fprintf(stderr, "kernels: this CPU (or its kernel) has no AMX-INT8: the AMX GEMM is "
                        "not run here (it is on Intel Xeon 4th generation and later)\n");
        clara_amx_force(false);
        return;
    }
    clara_isa_force(CLARA_ISA_AVX512);
    float *x = rand_vec((size_t)N * 768), *t = rand_vec((size_t)N * RANK);
    float *vnni = malloc((size_t)N * 150 * sizeof(float)),
          *amx = malloc((size_t)N * 150 * sizeof(float));
    int cases = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            if (shapes[si][1] % clara_type_get((uint32_t)types[ti])->block_size) continue;
            test_mat m, B;
            T_CHECK(mat_make(&m, types[ti], shapes[si][0], shapes[si][1]) == 0);
            T_CHECK(mat_make(&B, CLARA_TYPE_F32, shapes[si][0], RANK) == 0);
            int differ = 0;
            amx_gemm_case(&m, x, t, &B.W, vnni, amx, &differ, &cases);
            T_CHECK_MSG(differ == 0, "%s %llux%llu: the AMX GEMM and VNNI differ in %d cases",
                        clara_type_name(types[ti]), (unsigned long long)shapes[si][0],
                        (unsigned long long)shapes[si][1], differ);
            mat_free(&m);
            mat_free(&B);
        }
    clara_amx_force(false);
    fprintf(stderr, "kernels: the AMX GEMM checked against VNNI in %d cases\n", cases);
    clara_isa_force(clara_isa_best());
    free(x), free(t), free(vnni), free(amx);
}

/* Weights repacked for the AVX-512 kernels (cpu/repack.h) give the same bits as the file's rows:
 * the decode GEMV at every row count (VNNI, and AMX where the CPU has it), the packed GEMM that
 * takes its panels from the repacked copy, plain, accumulating and with a LoRA delta; rows in
 * partial groups, odd block counts (a half pair), 1 and 2 threads. */
static void lanes_case(const test_mat *m, const cpu_mat *L, const float *x, const float *t,
                       const cpu_mat *B, float *want, float *got, int *differ) {
    size_t R = (size_t)m->W.rows;
    for (int th = 0; th < 2; th++) {
        cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
        for (uint32_t n = 1; n <= 40; n += n < 16 ? 1 : 24)
            for (int acc = 0; acc < 3; acc++) {
                for (size_t i = 0; i < (size_t)n * R; i++) want[i] = got[i] = (float)i;
                clara_lora_delta d = {0, n, t, B, 0.5f};
                if (acc == 2) {
                    clara_matmul_lora(ctx, &m->W, x, n, want, &d, 1, false);
                    clara_matmul_lora(ctx, L, x, n, got, &d, 1, false);
                } else {
                    clara_matmul(ctx, &m->W, x, n, want, acc, -0.75f);
                    clara_matmul(ctx, L, x, n, got, acc, -0.75f);
                }
                *differ += memcmp(want, got, (size_t)n * R * sizeof(float)) != 0;
            }
    }
}

/* One case of a repacked matrix L (m's copy): adds to *differ the comparisons that differ. */
typedef void (*lanes_case_fn)(const test_mat *m, const cpu_mat *L, const float *x, const float *t,
                              const cpu_mat *B, float *want, float *got, int *differ);

/* The size of W's repacked copy by the layouts of cpu/repack.h: groups of 16 rows x (q4_0 /
 * q8_0) pairs of 32-column blocks x (64 bytes of scales + 2 blocks of codes), or (q4_k / q6_k)
 * 16 rows x super-blocks x 144 or 212 bytes. */
static size_t lanes_bytes_want(const cpu_mat *W) {
    const size_t groups = (size_t)(W->rows + 15) / 16;
    switch (W->type) {
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q8_0:
        return groups * (size_t)((W->cols / 32 + 1) / 2) *
               (64 + 2 * (W->type == CLARA_TYPE_Q8_0 ? 512 : 256));
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q6_K:
        return groups * 16 * (size_t)(W->cols / 256) * (W->type == CLARA_TYPE_Q6_K ? 212 : 144);
    default:
        return 0;
    }
}

/* Runs fn on every type x shape with the matrix's repacked copy, on VNNI and, where the CPU has
 * it, on AMX tiles; returns the number of matrices checked. */
static int lanes_cases(const clara_type *types, size_t n_types, const uint64_t (*shapes)[2],
                       size_t n_shapes, lanes_case_fn fn, const char *against) {
    enum { N = 40, RANK = 8 };
    float *x = rand_vec((size_t)N * 2048), *t = rand_vec((size_t)N * RANK);
    float *want = malloc((size_t)N * 70 * sizeof(float)),
          *got = malloc((size_t)N * 70 * sizeof(float));
    int matrices = 0;
    clara_isa_force(CLARA_ISA_AVX512);
    for (int amx = 0; amx < 2; amx++) {
        if (amx && !clara_amx_force(true)) break;
        for (size_t ti = 0; ti < n_types; ti++)
            for (size_t si = 0; si < n_shapes; si++, matrices++) {
                test_mat m, B;
                T_CHECK(mat_make(&m, types[ti], shapes[si][0], shapes[si][1]) == 0);
                T_CHECK(mat_make(&B, CLARA_TYPE_F32, shapes[si][0], RANK) == 0);
                size_t bytes = cpu_lanes_bytes(&m.W);
                T_CHECK_MSG(bytes == lanes_bytes_want(&m.W) && bytes % 64 == 0,
                            "%s: %zu bytes repacked", clara_type_name(types[ti]), bytes);
                uint8_t *lanes = aligned_alloc(64, bytes);
                cpu_lanes_pack(&m.W, lanes, g_c2.kc.pool);
                cpu_mat L = m.W;
                L.lanes = lanes;
                int differ = 0;
                fn(&m, &L, x, t, &B.W, want, got, &differ);
                T_CHECK_MSG(
                    differ == 0, "%s %llux%llu%s: the repacked copy and %s differ in %d cases",
                    clara_type_name(types[ti]), (unsigned long long)shapes[si][0],
                    (unsigned long long)shapes[si][1], amx ? " (AMX)" : "", against, differ);
                free(lanes);
                mat_free(&m);
                mat_free(&B);
            }
    }
    clara_amx_force(false);
    clara_isa_force(clara_isa_best());
    free(x), free(t), free(want), free(got);
    return matrices;
}

/* q4_k and q6_k repacked (cpu/repack.h): their decode GEMV sums in the packed GEMM's order, so
 * each of n = 1..16 rows from the repacked copy has the bits the file's rows get among 40 (the
 * packed GEMM, panels unpacked from the file), and the packed GEMM with panels from the repacked
 * copy has them too; plain, accumulating and with a LoRA delta over a row split; partial groups,
 * one and several super-blocks, 1 and 2 threads, and on AMX tiles where the CPU has them. */
static void kq_lanes_case(const test_mat *m, const cpu_mat *L, const float *x, const float *t,
                          const cpu_mat *B, float *want, float *got, int *differ) {
    const size_t R = (size_t)m->W.rows;
    enum { N = 40 };
    for (int th = 0; th < 2; th++) {
        cpu_kctx *ctx = th ? &g_c2.kc : &g_c1.kc;
        clara_matmul(ctx, &m->W, x, N, want, false, 1.0f);
        for (uint32_t n = 1; n <= N; n += n < 16 ? 1 : 24) {
            clara_matmul(ctx, L, x, n, got, false, 1.0f);
            *differ += memcmp(want, got, (size_t)n * R * sizeof(float)) != 0;
        }
        for (size_t i = 0; i < (size_t)N * R; i++) want[i] = got[i] = (float)i * 0.25f;
        clara_matmul(ctx, &m->W, x, N, want, true, -0.75f);
        clara_matmul(ctx, L, x, 9, got, true, -0.75f);
        *differ += memcmp(want, got, (size_t)9 * R * sizeof(float)) != 0;
        clara_lora_delta d = {1, N - 1, t, B, 0.5f};
        clara_matmul_lora(ctx, &m->W, x, N, want, &d, 1, false);
        for (uint32_t n = 2; n <= N; n += n < 16 ? 1 : 24) {
            d.n = n - 1;
            clara_matmul_lora(ctx, L, x, n, got, &d, 1, false);
            *differ += memcmp(want, got, (size_t)n * R * sizeof(float)) != 0;
        }
    }
}

/* Both families of repacked weights: q4_0 / q8_0 against the file's rows (lanes_case), q4_k /
 * q6_k against the GEMM (kq_lanes_case). */
static void test_lanes_bits(void) {
    static const clara_type q0_types[] = {CLARA_TYPE_Q4_0, CLARA_TYPE_Q8_0};
    static const uint64_t q0_shapes[][2] = {{37, 480}, {70, 32}, {33, 96}, {48, 2048}, {16, 128}};
    static const clara_type kq_types[] = {CLARA_TYPE_Q4_K, CLARA_TYPE_Q6_K};
    static const uint64_t kq_shapes[][2] = {{37, 512}, {70, 256}, {33, 768}, {48, 2048}, {16, 256}};
    if (!clara_isa_supported(CLARA_ISA_AVX512)) {
        fprintf(stderr, "kernels: no AVX-512 here: the repacked weights are not used\n");
        return;
    }
    int n = lanes_cases(q0_types, 2, q0_shapes, sizeof q0_shapes / sizeof q0_shapes[0], lanes_case,
                        "the file's rows");
    fprintf(stderr,
            "kernels: repacked q4_0 / q8_0 weights checked against the file's rows in %d "
            "cases\n",
            n * 2 * 18 * 3);
    n = lanes_cases(kq_types, 2, kq_shapes, sizeof kq_shapes / sizeof kq_shapes[0], kq_lanes_case,
                    "the GEMM");
    fprintf(stderr, "kernels: repacked q4_k / q6_k weights checked against the GEMM in %d cases\n",
            n * 2 * (18 + 1 + 17));
}

/* The SIMD activation quantizers give the bytes of clara_quantize_row (the reference) for
 * ordinary rows, exact .5 ties, zero rows, tied +-max, huge and subnormal values. */
static void test_act_quant(void) {
    static const clara_type fmts[] = {CLARA_TYPE_Q8_0, CLARA_TYPE_Q8_1, CLARA_TYPE_Q8_K};
    enum { K = 512, CASES = 9 };
    static float x[K];
    uint8_t ref[K * 2], got[K * 2];
    for (int c = 0; c < CASES; c++) {
        for (int i = 0; i < K; i++) {
            double r = t_frand();
            switch (c) {
            case 0:
                x[i] = (float)r;
                break;
            case 1:
                x[i] = (float)(r * 1e4);
                break;
            case 2:
                x[i] = (float)(r * 1e-3);
                break;
            case 3:
                x[i] = (float)((int)(r * 254) / 2.0);
                break; /* halves: .5 ties */
            case 4:
                x[i] = 0.f;
                break;
            case 5:
                x[i] = i % 7 == 0 ? (i % 2 ? 3.f : -3.f) : (float)r;
                break; /* tied +-max */
            case 6:
                x[i] = (float)(r * 1e-39);
                break; /* subnormal */
            case 7:
                x[i] = i == 5 ? 1.f : 0.f;
                break;
            default:
                x[i] = (float)(r * 6e6);
                break; /* f16 scale overflow for q8_0 */
            }
        }
        for (size_t f = 0; f < 3; f++) {
            clara_status want = clara_quantize_row(fmts[f], x, K, ref, "x");
            uint64_t bytes = 0;
            clara_type_row_bytes(fmts[f], K, &bytes);
            for (int lv = 1; lv < CLARA_ISA_COUNT; lv++) {
                if (!clara_isa_supported((clara_isa)lv)) continue;
                memset(got, 0xcd, sizeof got);
                bool ok = clara_quantize_act((clara_isa)lv, fmts[f], x, K, got);
                T_CHECK_MSG(ok == (want == CLARA_OK), "%s %s case %d: status %d vs %d",
                            clara_isa_name((clara_isa)lv), clara_type_name(fmts[f]), c, ok, want);
                if (ok && want == CLARA_OK)
                    T_CHECK_MSG(memcmp(got, ref, bytes) == 0, "%s %s case %d: bytes differ",
                                clara_isa_name((clara_isa)lv), clara_type_name(fmts[f]), c);
            }
        }
    }
}

/* The attention loops of each SIMD level against double-precision truth: within 1e-5 of the sum
 * of |terms| (as the float GEMM), odd head sizes and key counts included. */
static void test_attention(void) {
    static const uint32_t ds[] = {8, 13, 64, 128, 136};
    static const uint32_t nks[] = {1, 3, 4, 7, 33, 16};
    enum { STRIDE = 300 };
    float *q = rand_vec(4 * STRIDE), *K = rand_vec(36 * STRIDE), *V = rand_vec(36 * STRIDE);
    float sc[33], p[33], out[STRIDE];
    for (size_t di = 0; di < 5; di++)
        for (size_t ni = 0; ni < sizeof nks / sizeof nks[0]; ni++) {
            uint32_t d = ds[di], nk = nks[ni];
            float scale = 0.37f, inv = 0.21f;
            for (uint32_t k = 0; k < nk; k++) p[k] = (float)(0.5 + 0.5 * t_frand());
            for (int lv = CLARA_ISA_AVX2; lv < CLARA_ISA_COUNT; lv++) {
                if (!clara_isa_supported((clara_isa)lv)) continue;
                bool z = lv == CLARA_ISA_AVX512;
                (z ? clara_attn_scores_avx512 : clara_attn_scores_avx2)(q, K, STRIDE, nk, d, scale,
                                                                        sc);
                float pin[33];
                for (uint32_t k = 0; k < nk; k++) pin[k] = p[k] * inv;
                (z ? clara_attn_values_avx512 : clara_attn_values_avx2)(pin, V, STRIDE, nk, d, out);
                int bad_s = 0, bad_v = 0, alone = 0;
                for (uint32_t k = 0; k < nk; k++) {
                    float one; /* a key scored alone: the same bits as in a group of 4 or 16 */
                    (z ? clara_attn_scores_avx512 : clara_attn_scores_avx2)(
                        q, K + (size_t)k * STRIDE, STRIDE, 1, d, scale, &one);
                    alone += memcmp(&one, &sc[k], 4) != 0;
                    double t = 0, m = 0;
                    for (uint32_t i = 0; i < d; i++) {
                        t += (double)q[i] * K[(size_t)k * STRIDE + i];
                        m += fabs((double)q[i] * K[(size_t)k * STRIDE + i]);
                    }
                    if (!(fabs(sc[k] - t * scale) <= 1e-5 * m * scale + 1e-30)) bad_s++;
                }
                for (uint32_t e = 0; e < d; e++) {
                    double t = 0, m = 0;
                    for (uint32_t k = 0; k < nk; k++) {
                        double w = (double)(p[k] * inv) * V[(size_t)k * STRIDE + e];
                        t += w, m += fabs(w);
                    }
                    if (!(fabs(out[e] - t) <= 1e-5 * m + 1e-30)) bad_v++;
                }
                T_CHECK_MSG(bad_s == 0, "%s attention scores d=%u keys=%u: %d off",
                            clara_isa_name((clara_isa)lv), d, nk, bad_s);
                T_CHECK_MSG(alone == 0, "%s attention scores d=%u keys=%u: %d differ from alone",
                            clara_isa_name((clara_isa)lv), d, nk, alone);
                T_CHECK_MSG(bad_v == 0, "%s attention values d=%u keys=%u: %d off",
                            clara_isa_name((clara_isa)lv), d, nk, bad_v);
                /* 4 queries (rows of K used as queries, STRIDE apart) scored together: the
                 * bits of each scored alone */
                float sc4[4][33], one4[33];
                (z ? clara_attn_scores4_avx512 : clara_attn_scores4_avx2)(q, STRIDE, K, STRIDE, nk,
                                                                          d, scale, sc4[0], 33);
                int differ4 = 0;
                for (int r = 0; r < 4; r++) {
                    (z ? clara_attn_scores_avx512 : clara_attn_scores_avx2)(
                        q + (size_t)r * STRIDE, K, STRIDE, nk, d, scale, one4);
                    differ4 += memcmp(one4, sc4[r], nk * sizeof(float)) != 0;
                }
                T_CHECK_MSG(differ4 == 0, "%s 4-query scores d=%u keys=%u: %d rows differ",
                            clara_isa_name((clara_isa)lv), d, nk, differ4);
                /* values of 4 rows, row r over nk + r*step keys (probability rows of 36;
                 * step 1: consecutive positions, 0: the query heads of one key/value head): the
                 * bits of each row alone */
                float p4[4][36], out4[4][STRIDE], one_v[STRIDE];
                for (int r = 0; r < 4; r++)
                    for (uint32_t k = 0; k < nk + 3; k++) p4[r][k] = (float)(0.5 + 0.5 * t_frand());
                for (uint32_t step = 0; step <= 1; step++) {
                    (z ? clara_attn_values4_avx512 : clara_attn_values4_avx2)(
                        p4[0], 36, V, STRIDE, nk, step, d, out4[0], STRIDE);
                    int differ_v4 = 0;
                    for (uint32_t r = 0; r < 4; r++) {
                        (z ? clara_attn_values_avx512
                           : clara_attn_values_avx2)(p4[r], V, STRIDE, nk + r * step, d, one_v);
                        differ_v4 += memcmp(one_v, out4[r], d * sizeof(float)) != 0;
                    }
                    T_CHECK_MSG(differ_v4 == 0,
                                "%s 4-row values d=%u keys=%u step %u: %d rows differ",
                                clara_isa_name((clara_isa)lv), d, nk, step, differ_v4);
                }
            }
        }
    free(q), free(K), free(V);
}

/* Distance in units in the last place between floats of the same sign (0 if equal). */
static double ulps(float a, float b) {
    if (a == b) return 0;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if ((ia < 0) != (ib < 0)) return 1e9;
    return fabs((double)ia - (double)ib);
}

/* The SIMD SwiGLU (its own exponential) against the same f32 expression with a correctly rounded
 * exponential: within 2 ulp over gates from -120 to 120 (subnormal and overflowing exponentials
 * included), exact special cases, and a value's result independent of its position (tails). */
static void test_swiglu(void) {
    enum { N = 4003 };
    static float g[N], u[N], out[N], one[1];
    for (int i = 0; i < N; i++) {
        g[i] = i < 3000 ? -120.0f + 240.0f * (float)i / 2999 : (float)(t_frand() * 12);
        u[i] = i % 3 ? 1.0f : (float)(0.5 + t_frand());
    }
    g[0] = 0.0f, g[1] = -0.0f, g[2] = INFINITY, g[3] = -INFINITY, g[4] = NAN, g[5] = 88.0f,
    g[6] = -88.0f, g[7] = -87.5f, g[8] = 104.5f, g[9] = 1e-30f;
    for (int lv = CLARA_ISA_AVX2; lv < CLARA_ISA_COUNT; lv++) {
        if (!clara_isa_supported((clara_isa)lv)) continue;
        void (*fn)(float *, const float *, size_t) =
            lv == CLARA_ISA_AVX512 ? clara_swiglu_avx512 : clara_swiglu_avx2;
        memcpy(out, g, sizeof g);
        fn(out, u, N);
        int bad = 0, moved = 0;
        double worst = 0;
        for (int i = 0; i < N; i++) {
            /* the reference's f32 expression with a correctly rounded exponential (which
             * overflows to inf, and the result to -0, for gates below -88.7 as expf does) */
            float e = (float)exp(-(double)g[i]);
            float w = g[i] / (1.0f + e) * u[i];
            bool ok = isnan(w) ? isnan(out[i]) : ulps(out[i], w) <= 2;
            if (!isnan(w) && !isinf(w) && ulps(out[i], w) > worst) worst = ulps(out[i], w);
            bad += !ok;
            one[0] = g[i]; /* alone, as a tail of one value */
            fn(one, u + i, 1);
            moved += memcmp(one, out + i, 4) != 0;
        }
        T_CHECK_MSG(bad == 0, "%s swiglu: %d of %d values off by more than 2 ulp (worst %.0f)",
                    clara_isa_name((clara_isa)lv), bad, N, worst);
        T_CHECK_MSG(moved == 0, "%s swiglu: %d values differ when computed alone",
                    clara_isa_name((clara_isa)lv), moved);
        T_CHECK(out[2] == INFINITY && out[0] == 0.0f && isnan(out[3]) && isnan(out[4]));
    }
}

/* The K chunking of the GEMM (512 columns) and row blocks of 64 are crossed by this shape. */
static void test_large_float(void) {
    check_case(CLARA_TYPE_F16, 200, 1500, 13, &g_c1, &g_c2);
    check_case(CLARA_TYPE_F32, 67, 2048, 40, &g_c1, &g_c2);
}

/* Short rows (LoRA's up-projections: K = rank <= 32) have an exact specification at the SIMD
 * levels: out = fmaf(x[K-1], w[K-1], ... fmaf(x[0], w[0], 0)) in increasing k, accumulated as
 * y + alpha * out. Every row count around the vector widths, K around them, 1 and 5 tokens. */
static void test_short_k_bits(void) {
    static const uint64_t rows_set[] = {1, 7, 8, 9, 15, 16, 17, 33, 130};
    static const uint64_t ks[] = {1, 5, 8, 16, 17, 31, 32};
    static const clara_type types[] = {CLARA_TYPE_F32, CLARA_TYPE_F16, CLARA_TYPE_BF16};
    for (int lv = CLARA_ISA_AVX2; lv < CLARA_ISA_COUNT; lv++) {
        if (!clara_isa_supported((clara_isa)lv)) continue;
        clara_isa_force((clara_isa)lv);
        int bad = 0, cases = 0;
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t ri = 0; ri < sizeof rows_set / sizeof rows_set[0]; ri++)
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                    for (uint32_t n = 1; n <= 5; n += 4) {
                        uint64_t rows = rows_set[ri], K = ks[ki];
                        test_mat m;
                        if (mat_make(&m, types[ti], rows, K) != 0) {
                            T_CHECK_MSG(0, "setup short-K %llux%llu", (unsigned long long)rows,
                                        (unsigned long long)K);
                            return;
                        }
                        float *x = rand_vec((size_t)n * K), *y = rand_vec((size_t)n * rows),
                              *y0 = malloc((size_t)n * rows * sizeof(float));
                        memcpy(y0, y, (size_t)n * rows * sizeof(float));
                        clara_matmul(&g_c2.kc, &m.W, x, n, y, true, -0.75f);
                        for (uint32_t t = 0; t < n; t++)
                            for (uint64_t r = 0; r < rows; r++) {
                                float c = 0.0f;
                                for (uint64_t k = 0; k < K; k++)
                                    c = fmaf(x[t * K + k], m.deq[r * K + k], c);
                                float scaled = -0.75f * c, want = y0[t * rows + r] + scaled;
                                bad += memcmp(&want, &y[t * rows + r], 4) != 0;
                            }
                        cases++;
                        free(x), free(y), free(y0);
                        mat_free(&m);
                    }
        T_CHECK_MSG(bad == 0, "%s short-K GEMM: %d outputs differ from the FMA chain (%d cases)",
                    clara_isa_name((clara_isa)lv), bad, cases);
    }
    clara_isa_force(clara_isa_best());
}

static void test_dispatch(void) {
    T_EQ_STR(clara_isa_name(CLARA_ISA_REF), "ref");
    T_EQ_STR(clara_isa_name(CLARA_ISA_AVX2), "avx2");
    T_EQ_STR(clara_isa_name(CLARA_ISA_AVX512), "avx512");
    T_EQ_INT(clara_isa_parse("AVX512"), CLARA_ISA_AVX512);
    T_EQ_INT(clara_isa_parse("sse"), -1);
    T_CHECK(clara_isa_supported(CLARA_ISA_REF));
    /* AVX-512 here implies AVX2 (every AVX-512 CPU has AVX2/FMA/F16C) */
    T_CHECK(!clara_isa_supported(CLARA_ISA_AVX512) || clara_isa_supported(CLARA_ISA_AVX2));
    clara_isa best = clara_isa_best();
    T_EQ_INT(clara_isa_force(CLARA_ISA_AVX512), best);
    T_EQ_INT(clara_isa_active(), best);
    T_EQ_INT(clara_isa_force(CLARA_ISA_REF), CLARA_ISA_REF);
    T_EQ_INT(clara_isa_active(), CLARA_ISA_REF);
    clara_isa_force(best);
    const clara_cpu_features *f = clara_cpu_get_features();
    T_CHECK(f != NULL);
    fprintf(stderr, "kernels: best level %s (avx512 vnni %d bf16 %d, avx-vnni %d, amx-int8 %d)\n",
            clara_isa_name(best), f->avx512vnni, f->avx512bf16, f->avx_vnni, f->amx_int8);
}

/* The SIMD softmax against the scalar reference's arithmetic with a correctly rounded
 * exponential (e = exp(x - max) rounded to float, their sum in double, one multiply by the
 * float 1/sum): within 3 ulp (2 from the exponential, the rest from 1/sum), over row lengths
 * that leave every tail size; a NaN score makes the whole row NaN, as in the reference. */
static void test_softmax(void) {
    static const uint32_t ns[] = {1, 2, 7, 15, 16, 17, 33, 100, 273, 1000};
    static float x[1000], got[1000];
    for (int lv = CLARA_ISA_AVX2; lv < CLARA_ISA_COUNT; lv++) {
        if (!clara_isa_supported((clara_isa)lv)) continue;
        void (*fn)(float *, uint32_t) =
            lv == CLARA_ISA_AVX512 ? clara_softmax_avx512 : clara_softmax_avx2;
        int bad = 0;
        double worst = 0;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            uint32_t n = ns[ni];
            for (uint32_t k = 0; k < n; k++) x[k] = (float)(t_frand() * (ni % 2 ? 40 : 4));
            memcpy(got, x, n * sizeof(float));
            fn(got, n);
            float mx = -INFINITY;
            for (uint32_t k = 0; k < n; k++) mx = x[k] > mx ? x[k] : mx;
            double sum = 0;
            for (uint32_t k = 0; k < n; k++) sum += (float)exp((double)(x[k] - mx));
            float inv = (float)(1.0 / sum);
            for (uint32_t k = 0; k < n; k++) {
                float want = (float)exp((double)(x[k] - mx)) * inv;
                double u = ulps(got[k], want);
                if (u > worst) worst = u;
                bad += !(u <= 3);
            }
        }
        T_CHECK_MSG(bad == 0, "%s softmax: %d probabilities off by more than 3 ulp (worst %.0f)",
                    clara_isa_name((clara_isa)lv), bad, worst);
        for (uint32_t k = 0; k < 20; k++) x[k] = (float)t_frand();
        x[13] = NAN;
        fn(x, 20);
        int nan = 0;
        for (uint32_t k = 0; k < 20; k++) nan += isnan(x[k]);
        T_CHECK_MSG(nan == 20, "%s softmax: %d of 20 probabilities NaN after a NaN score",
                    clara_isa_name((clara_isa)lv), nan);
    }
}

int main(void) {
    /* row buffers for 16 rows of two partner formats (a group declines what does not fit) */
    if (ctx_init(&g_c1, 1, 8192) != 0 || ctx_init(&g_c2, 2, 8192) != 0) {
        fprintf(stderr, "test_kernels: setup failed\n");
        return 1;
    }
    T_RUN(test_dispatch);
    T_RUN(test_float_types);
    T_RUN(test_large_float);
    T_RUN(test_short_k_bits);
    T_RUN(test_quant_types);
    T_RUN(test_quant_multi_panel);
    T_RUN(test_act_quant);
    T_RUN(test_lora_fused);
    T_RUN(test_matmul_group);
    T_RUN(test_rows_invariant);
    T_RUN(test_rows_gemm_bits);
    T_RUN(test_amx_bits);
    T_RUN(test_amx_gemm_bits);
    T_RUN(test_lanes_bits);
    T_RUN(test_attention);
    T_RUN(test_swiglu);
    T_RUN(test_softmax);
    ctx_free(&g_c1);
    ctx_free(&g_c2);
    fprintf(stderr, "kernels: levels tested:%s%s%s\n", n_levels_run & 1 ? " ref" : "",
            n_levels_run & 2 ? " avx2" : "", n_levels_run & 4 ? " avx512" : "");
    return t_report("kernels");
}
