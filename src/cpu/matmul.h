/* matmul.h - y = x · Wᵀ for the plain weight types (f32, f16, bf16) with f32 accumulation,
 * split over the thread pool by blocks of weight rows (each weight row is read once per call and
 * reused for every input row). The SIMD and quantized kernels plug in here later. */
#ifndef CLARA_CPU_MATMUL_H
#define CLARA_CPU_MATMUL_H

#include <stdbool.h>

#include "cpu/dispatch.h"
#include "cpu/kctx.h"

/* From this many activation rows on, a matmul takes its batch path (the packed GEMM for quantized
 * weights), whose bits for a row do not depend on how many rows there are; with fewer, quantized
 * weights go through the GEMV kernels, whose f32 summation order differs for some types (q4_k,
 * q6_k, AVX2's kernels; q4_0 and q8_0 on AVX-512 agree with the GEMM). Passes that split a
 * sequence's rows (prefix.c) keep each part at this many rows or more. The decode GEMV takes up
 * to 16 rows (gemv.h: CLARA_GEMV_MAX_ROWS, checked in matmul.c). */
#define CLARA_MATMUL_BATCH_ROWS 17

/* For t < n, r < W->rows: y[t * W->rows + r] = d, or += alpha * d when accumulate, where
 * d = dot(x[t * W->cols ...], W[r]). */
void clara_matmul(cpu_kctx *kc, const cpu_mat *W, const float *x, uint32_t n, float *y,
                  bool accumulate, float alpha);

/* A LoRA delta added to rows [t0, t0 + n) of a matmul's output: y += scale * (t · Bᵀ), with
 * t = [n][B->cols] (x·Aᵀ, computed beforehand). */
typedef struct {
    uint32_t t0, n;
    const float *t;
    const cpu_mat *B;
    float scale;
} clara_lora_delta;

/* y = x · Wᵀ, then the deltas in list order, with the bits of clara_matmul(W) followed by one
 * clara_matmul(B, t, accumulate, scale) per delta. The packed GEMM (quantized weights, many
 * rows) applies them to each panel's outputs while they are still in cache instead of in
 * another pass over y. same_x: x is unchanged since the previous clara_matmul_lora on kc (its
 * quantized activations may be reused; q/k/v and gate/up share their input). */
void clara_matmul_lora(cpu_kctx *kc, const cpu_mat *W, const float *x, uint32_t n, float *y,
                       const clara_lora_delta *d, int n_d, bool same_x);

/* The deltas alone, in list order, onto y (rows outputs per row) already holding the base
 * product: one clara_matmul(B, t, accumulate, scale) each. */
void clara_lora_add(cpu_kctx *kc, uint64_t rows, float *y, const clara_lora_delta *d, int n_d);

/* y[i] = x · W[i]ᵀ for count <= 4 matrices of one width and n <= 16 rows of x (decode's q, k, v
 * and gate, up): the bits of clara_matmul(W[i]) each, with all rows in one parallel region (and
 * for quantized weights the activations quantized once). Either all float weights (any level) or
 * all of the AVX-512 decode GEMV's types. false (nothing written) where that path does not apply
 * (level, types, shapes): the caller then calls clara_matmul for each. */
#define CLARA_MATMUL_GROUP_MAX  4
#define CLARA_MATMUL_GROUP_ROWS 16
bool clara_matmul_group(cpu_kctx *kc, const cpu_mat *const *W, int count, const float *x,
                        uint32_t n, float *const *y);

/* Weight rows per pool task for W x n activation rows: ~8 tasks per thread (handed out
 * dynamically) in multiples of 8 rows, or all rows in one task when the product is too small to
 * be worth waking the workers. */
uint64_t clara_matmul_rows_per_task(const cpu_kctx *kc, const cpu_mat *W, uint32_t n);

/* Quantizes K activations to fmt with the SIMD quantizer of level isa where it applies, else
 * clara_quantize_row (same bytes either way); false if the row cannot be quantized. */
bool clara_quantize_act(clara_isa isa, clara_type fmt, const float *x, uint64_t K, uint8_t *out);

/* Dot product with a fixed summation order (8 partial sums) so results do not depend on the
 * thread count. */
float clara_dot_f32(const float *a, const float *b, size_t n);

/* W row r as f32: a pointer into the file for aligned f32 rows, else converted into buf. */
const float *clara_mat_row_f32(const cpu_mat *W, uint64_t r, float *buf);

#endif
