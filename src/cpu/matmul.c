/* matmul.c - clara_matmul: splits the weight rows into blocks over the thread pool and runs each
 * block with the kernel of the active instruction-set level (dispatch.h): the scalar reference
 * here, or the AVX2 / AVX-512 kernels (kernels.h). Quantized weights multiply activations that
 * are quantized once per call to the weight type's partner format (kernels_ref.h). */
#include "cpu/matmul.h"

#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"
#include "base/log.h"
#include "cpu/dispatch.h"
#include "cpu/gemv.h"
#include "cpu/kernels.h"
#include "cpu/params.h"
#include "cpu/kernels_ref.h"
#include "cpu/qgemm.h"
#include "dtype.h"
#include "quant.h"

float clara_dot_f32(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

static bool is_float_type(clara_type t) {
    return t == CLARA_TYPE_F32 || t == CLARA_TYPE_F16 || t == CLARA_TYPE_BF16;
}

const float *clara_mat_row_f32(const cpu_mat *W, uint64_t r, float *buf) {
    size_t cols = (size_t)W->cols;
    const unsigned char *base = W->data;
    if (!is_float_type(W->type)) { /* a block type without an integer dot (q8_z) */
        uint64_t row_bytes = 0;
        clara_type_row_bytes(W->type, W->cols, &row_bytes);
        clara_dequantize_row(W->type, base + r * row_bytes, W->cols, buf);
        return buf;
    }
    if (W->type == CLARA_TYPE_F32) {
        const unsigned char *row = base + r * cols * 4;
        if (((uintptr_t)row & 3) == 0) return (const float *)row;
        memcpy(buf, row, cols * 4);
        return buf;
    }
    const unsigned char *row = base + r * cols * 2;
    for (size_t i = 0; i < cols; i++) {
        uint16_t h;
        memcpy(&h, row + 2 * i, 2);
        buf[i] = W->type == CLARA_TYPE_F16 ? clara_f16_to_f32(h) : clara_bf16_to_f32(h);
    }
    return buf;
}

/* The decode kernels' prefetch distance (cpu/params.h). */
static size_t pf_bytes(void) {
    return cpu_params_get()->pf_bytes;
}

typedef struct {
    cpu_kctx *kc;
    clara_isa isa;
    clara_gemm_args f;   /* float weights */
    clara_gemm_q_args q; /* quantized weights (activations already quantized) */
    uint64_t rows_per_task, rows;
} matmul_job;

/* Scalar reference for float weights: each row converted to f32 once, dotted with every x row. */
static void ref_float_rows(const matmul_job *j, uint64_t r0, uint64_t r1, int thread) {
    const clara_gemm_args *a = &j->f;
    float *buf = j->kc->rowbuf + (size_t)thread * j->kc->row_cap;
    size_t cols = (size_t)a->W->cols;
    for (uint64_t r = r0; r < r1; r++) {
        const float *w = clara_mat_row_f32(a->W, r, buf);
        for (uint32_t t = 0; t < a->n; t++) {
            float d = clara_dot_f32(a->x + (size_t)t * a->ldx, w, cols);
            clara_gemm_store(a->y, a->ldy, t, r, a->accumulate, a->alpha, d);
        }
    }
}

/* Scalar reference for quantized weights: the reference integer dot per (row, token). */
static void ref_quant_rows(const clara_gemm_q_args *a, uint64_t r0, uint64_t r1) {
    const clara_type_info *ti = clara_type_get((uint32_t)a->W->type);
    size_t row_bytes = (size_t)(a->W->cols / ti->block_size) * ti->type_size;
    const uint8_t *base = a->W->data;
    for (uint64_t r = r0; r < r1; r++)
        for (uint32_t t = 0; t < a->n; t++) {
            float d = clara_vec_dot_q_ref(a->W->type, base + r * row_bytes,
                                          a->xq + (size_t)t * a->xq_stride, a->W->cols);
            clara_gemm_store(a->y, a->ldy, t, r, a->accumulate, a->alpha, d);
        }
}

static void matmul_task(void *arg, size_t task, int thread) {
    const matmul_job *j = arg;
    uint64_t r0 = task * j->rows_per_task;
    uint64_t r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    if (j->f.W) {
        switch (is_float_type(j->f.W->type) ? j->isa : CLARA_ISA_REF) {
        case CLARA_ISA_AVX512:
            clara_gemm_f_avx512(&j->f, r0, r1);
            break;
        case CLARA_ISA_AVX2:
            clara_gemm_f_avx2(&j->f, r0, r1);
            break;
        default:
            ref_float_rows(j, r0, r1, thread);
        }
        return;
    }
    if (j->isa == CLARA_ISA_AVX512 && clara_gemm_q_has_avx512(j->q.W->type))
        clara_gemm_q_avx512(&j->q, r0, r1);
    else if (j->isa >= CLARA_ISA_AVX2 && clara_gemm_q_has_avx2(j->q.W->type))
        clara_gemm_q_avx2(&j->q, r0, r1);
    else
        ref_quant_rows(&j->q, r0, r1);
}

/* Below this many multiply-adds a matmul runs on the calling thread: waking the workers costs
 * more than it saves (tiny models, LoRA products of single decode rows). */
#define MATMUL_PARALLEL_MIN_MACS (1u << 18)

/* Multiples of 8 rows keep SIMD register blocks whole; results never depend on the split. The
 * tasks per thread (or a fixed count of rows) are cpu/params.h's. */
uint64_t clara_matmul_rows_per_task(const cpu_kctx *kc, const cpu_mat *W, uint32_t n) {
    const cpu_params *P = cpu_params_get();
    uint64_t per = P->rows_per_task
                       ? P->rows_per_task
                       : W->rows / ((uint64_t)clara_pool_threads(kc->pool) * P->tasks_per_thread);
    per = per < 8 ? 8 : (per + 7) / 8 * 8;
    return W->rows * W->cols * n < MATMUL_PARALLEL_MIN_MACS ? W->rows : per; /* small: one task */
}

/* Float weights with few rows (LoRA down-projections x·Aᵀ, rank rows) and many tokens: tasks take
 * token ranges with every row, so each reads its part of x once instead of every task reading all
 * of x. Same bits: each output's arithmetic does not depend on the token tiling. */
typedef struct {
    const matmul_job *j;
    uint32_t per;
} token_job;

static void token_task(void *arg, size_t task, int thread) {
    (void)thread;
    const token_job *tj = arg;
    clara_gemm_args a = tj->j->f;
    uint32_t t0 = (uint32_t)task * tj->per, t1 = t0 + tj->per < a.n ? t0 + tj->per : a.n;
    a.x += (size_t)t0 * a.ldx, a.y += (size_t)t0 * a.ldy, a.n = t1 - t0;
    if (tj->j->isa == CLARA_ISA_AVX512)
        clara_gemm_f_avx512(&a, 0, a.W->rows);
    else
        clara_gemm_f_avx2(&a, 0, a.W->rows);
}

static bool run_by_tokens(matmul_job *j) {
    const clara_gemm_args *a = &j->f;
    uint32_t threads = (uint32_t)clara_pool_threads(j->kc->pool);
    if (!a->W || !is_float_type(a->W->type) || j->isa < CLARA_ISA_AVX2 || threads == 1 ||
        a->W->rows > 32 || a->n < 64)
        return false;
    /* multiples of 6 tokens (the kernels' tile), at least 4 per task so none takes the GEMV path */
    uint32_t per = (a->n / (4 * threads) + 5) / 6 * 6;
    token_job tj = {j, per < 12 ? 12 : per};
    clara_pool_run(j->kc->pool, (a->n + tj.per - 1) / tj.per, token_task, &tj);
    return true;
}

static void run_job(matmul_job *j) {
    if (run_by_tokens(j)) return;
    const cpu_mat *W = j->f.W ? j->f.W : j->q.W;
    uint64_t per = clara_matmul_rows_per_task(j->kc, W, j->f.W ? j->f.n : j->q.n);
    j->rows_per_task = per;
    size_t n_tasks = (size_t)((j->rows + per - 1) / per);
    clara_pool_run(j->kc->pool, n_tasks, matmul_task, j);
}

bool clara_quantize_act(clara_isa isa, clara_type fmt, const float *x, uint64_t K, uint8_t *out) {
    if (isa == CLARA_ISA_AVX512 && clara_quantize_act_avx512(fmt, x, (size_t)K, out)) return true;
    if (isa == CLARA_ISA_AVX2 && clara_quantize_act_avx2(fmt, x, (size_t)K, out)) return true;
    return clara_quantize_row(fmt, x, K, out, "activations") == CLARA_OK;
}

/* Quantizes the n activation rows to fmt (the partner format) into buf; false if any row cannot
 * be quantized (a non-finite value). */
static bool quantize_acts(clara_isa isa, clara_type fmt, const float *x, uint32_t n, uint64_t cols,
                          uint8_t *buf, size_t stride) {
    for (uint32_t t = 0; t < n; t++)
        if (!clara_quantize_act(isa, fmt, x + (size_t)t * cols, cols, buf + (size_t)t * stride))
            return false;
    return true;
}

/* Fallback when the activations cannot be quantized (non-finite values, no memory): the float
 * reference dot, which lets NaN/inf propagate as the float path would. */
static void quant_float_fallback(const cpu_mat *W, const float *x, uint32_t n, float *y,
                                 bool accumulate, float alpha) {
    const clara_type_info *ti = clara_type_get((uint32_t)W->type);
    size_t row_bytes = (size_t)(W->cols / ti->block_size) * ti->type_size;
    for (uint64_t r = 0; r < W->rows; r++)
        for (uint32_t t = 0; t < n; t++) {
            float d = clara_vec_dot_f_ref(W->type, (const uint8_t *)W->data + r * row_bytes,
                                          x + (size_t)t * W->cols, W->cols);
            clara_gemm_store(y, W->rows, t, r, accumulate, alpha, d);
        }
}

/* From this many activation rows on, quantized weights go through the packed GEMM (qgemm.h);
 * below, through the decode GEMV (gemv.h) or the general integer-dot kernels. The two families
 * sum a row's block products in different orders (the GEMV per SIMD lane over k, the packed
 * GEMM block by block per output), while each family's order does not depend on the number of
 * rows: so a decoding batch keeps every row's bits as requests join and leave as long as it
 * stays below this size. Measured (14,336 x 4,096 q4_0, 2 threads, docs/PERFORMANCE.md: Decode
 * at n rows): the packed GEMM costs ~5.7 ms at 8 rows, mostly unpacking the weights, against
 * ~1.1 ms for the GEMV at 1 row; the GEMV at 16 rows (two passes) is still below the GEMM. */
#define QGEMM_MIN_ROWS CLARA_MATMUL_BATCH_ROWS
_Static_assert(CLARA_MATMUL_BATCH_ROWS == CLARA_GEMV_MAX_ROWS + 1,
               "the packed GEMM takes over where the decode GEMV's rows end");

static void matmul_quant(matmul_job *j, const float *x) {
    const cpu_mat *W = j->q.W;
    if (j->q.n >= QGEMM_MIN_ROWS && clara_qgemm(j->kc, j->isa, W, x, j->q.n, j->q.y,
                                                j->q.accumulate, j->q.alpha, NULL, 0, false))
        return;
    clara_type fmt = (clara_type)clara_vec_dot_type(W->type);
    uint64_t stride;
    CLARA_ASSERT((int)fmt >= 0 && clara_type_row_bytes(fmt, W->cols, &stride) == CLARA_OK);
    /* The per-thread f32 row buffers are unused on this path: small batches (decode) quantize
     * into them, larger ones into a per-call allocation. */
    size_t need = (size_t)stride * j->q.n;
    size_t have = (size_t)clara_pool_threads(j->kc->pool) * j->kc->row_cap * sizeof(float);
    uint8_t *buf = need <= have ? (uint8_t *)j->kc->rowbuf : malloc(need);
    bool ok = buf && quantize_acts(j->isa, fmt, x, j->q.n, W->cols, buf, (size_t)stride);
    bool done = ok && clara_gemv_quant(j->kc, j->isa, W, buf, (size_t)stride, j->q.n, j->q.y,
                                       j->q.accumulate, j->q.alpha);
    if (ok && !done) {
        j->q.xq = buf;
        j->q.xq_stride = (size_t)stride;
        run_job(j);
    } else if (!ok) {
        quant_float_fallback(W, x, j->q.n, j->q.y, j->q.accumulate, j->q.alpha);
    }
    if (buf != (uint8_t *)j->kc->rowbuf) free(buf);
}

void clara_matmul(cpu_kctx *kc, const cpu_mat *W, const float *x, uint32_t n, float *y,
                  bool accumulate, float alpha) {
    if (n == 0 || W->rows == 0) return;
    matmul_job j = {.kc = kc, .isa = clara_isa_active(), .rows = W->rows};
    /* float weights, and block types without an integer dot (rows dequantized to f32) */
    if (is_float_type(W->type) || clara_vec_dot_type(W->type) < 0) {
        j.f = (clara_gemm_args){W,          x,     (size_t)W->cols, n, y, (size_t)W->rows,
                                accumulate, alpha, pf_bytes()};
        run_job(&j);
        return;
    }
    j.q = (clara_gemm_q_args){W, NULL, 0, n, y, (size_t)W->rows, accumulate, alpha, pf_bytes()};
    matmul_quant(&j, x);
}

_Static_assert(CLARA_MATMUL_GROUP_MAX == CLARA_GEMV_GROUP_MAX, "one group size");
_Static_assert(CLARA_MATMUL_GROUP_ROWS == CLARA_GEMV_MAX_ROWS, "the group takes the GEMV's rows");
_Static_assert(CLARA_MATMUL_GROUP_ROWS < QGEMM_MIN_ROWS, "a group's rows never take the GEMM");

/* Float matmuls in one parallel region: part i's row tasks numbered from task0[i]. */
typedef struct {
    matmul_job j[CLARA_MATMUL_GROUP_MAX];
    size_t task0[CLARA_MATMUL_GROUP_MAX + 1];
} group_job;

static void group_task(void *arg, size_t task, int thread) {
    group_job *g = arg;
    int i = 0;
    while (task >= g->task0[i + 1]) i++;
    matmul_task(&g->j[i], task - g->task0[i], thread);
}

static bool float_group(cpu_kctx *kc, clara_isa isa, const cpu_mat *const *W, int count,
                        const float *x, uint32_t n, float *const *y) {
    group_job g = {.task0 = {0}};
    for (int i = 0; i < count; i++) {
        const cpu_mat *w = W[i];
        if (!is_float_type(w->type) || w->cols != W[0]->cols || w->rows == 0) return false;
        g.j[i] = (matmul_job){.kc = kc, .isa = isa, .rows = w->rows};
        g.j[i].f = (clara_gemm_args){w,     x,    (size_t)w->cols, n, y[i], (size_t)w->rows,
                                     false, 1.0f, pf_bytes()};
        g.j[i].rows_per_task = clara_matmul_rows_per_task(kc, w, n);
        g.task0[i + 1] =
            g.task0[i] + (size_t)((w->rows + g.j[i].rows_per_task - 1) / g.j[i].rows_per_task);
    }
    clara_pool_run(kc->pool, g.task0[count], group_task, &g);
    return true;
}

bool clara_matmul_group(cpu_kctx *kc, const cpu_mat *const *W, int count, const float *x,
                        uint32_t n, float *const *y) {
    clara_isa isa = clara_isa_active();
    if (n == 0 || n > CLARA_MATMUL_GROUP_ROWS || count < 1 || count > CLARA_GEMV_GROUP_MAX)
        return false;
    /* float weights: the row tasks of each clara_matmul (under 64 rows of x it splits by rows) */
    if (is_float_type(W[0]->type)) return float_group(kc, isa, W, count, x, n, y);
    if (isa != CLARA_ISA_AVX512) return false;
    /* each partner format's quantized rows once, in the per-thread row buffers (unused here) */
    clara_type fmt[CLARA_GEMV_GROUP_MAX];
    uint8_t *xq[CLARA_GEMV_GROUP_MAX];
    uint64_t stride[CLARA_GEMV_GROUP_MAX];
    int n_fmt = 0;
    size_t used = 0, have = (size_t)clara_pool_threads(kc->pool) * kc->row_cap * sizeof(float);
    clara_gemv_part parts[CLARA_GEMV_GROUP_MAX];
    for (int i = 0; i < count; i++) {
        int f = clara_vec_dot_type(W[i]->type), k = 0;
        if (is_float_type(W[i]->type) || f < 0 || W[i]->cols != W[0]->cols || W[i]->rows == 0)
            return false;
        while (k < n_fmt && fmt[k] != (clara_type)f) k++;
        if (k == n_fmt) {
            if (clara_type_row_bytes((clara_type)f, W[i]->cols, &stride[k]) != CLARA_OK ||
                used + stride[k] * n > have)
                return false;
            xq[k] = (uint8_t *)kc->rowbuf + used;
            used += (size_t)stride[k] * n;
            fmt[n_fmt++] = (clara_type)f;
            if (!quantize_acts(isa, fmt[k], x, n, W[i]->cols, xq[k], (size_t)stride[k]))
                return false; /* non-finite: each matmul's float fallback */
        }
        parts[i] = (clara_gemv_part){W[i], xq[k], (size_t)stride[k], y[i], false, 1.0f};
    }
    return clara_gemv_quant_group(kc, isa, parts, count, n);
}

void clara_matmul_lora(cpu_kctx *kc, const cpu_mat *W, const float *x, uint32_t n, float *y,
                       const clara_lora_delta *d, int n_d, bool same_x) {
    if (n == 0 || W->rows == 0) return;
    bool float_b = true;
    for (int i = 0; i < n_d; i++) float_b = float_b && is_float_type(d[i].B->type);
    if (float_b && n >= QGEMM_MIN_ROWS && !is_float_type(W->type) &&
        clara_qgemm(kc, clara_isa_active(), W, x, n, y, false, 1.0f, d, n_d, same_x))
        return;
    clara_matmul(kc, W, x, n, y, false, 1.0f);
    clara_lora_add(kc, W->rows, y, d, n_d);
}

void clara_lora_add(cpu_kctx *kc, uint64_t rows, float *y, const clara_lora_delta *d, int n_d) {
    for (int i = 0; i < n_d; i++)
        clara_matmul(kc, d[i].B, d[i].t, d[i].n, y + (size_t)d[i].t0 * rows, true, d[i].scale);
}
