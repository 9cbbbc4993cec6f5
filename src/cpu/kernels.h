/* kernels.h - the SIMD kernel entry points behind clara_matmul, one set per instruction-set level
 * (kernels_avx2.c, kernels_avx512.c; each file is compiled for its own ISA and only called when
 * dispatch.c says the CPU has it).
 *
 * Float weights (f32, f16, bf16) x f32 activations: every output element is one dot product
 * accumulated in a single SIMD register of f32 lanes (lane i takes the elements k = i mod width,
 * in increasing k, by FMA; a zero-padded final step for the tail) and then reduced by a fixed
 * pairwise tree. That order does not depend on the row/token blocking, the K chunking, the number
 * of activation rows or the thread count, so a token gives bit-identical results alone or in a
 * batch, at any thread count (it does depend on the ISA level: the lane count differs). Rows of
 * at most 32 columns (LoRA up-projections) are the exception in method, not in that property:
 * each output is one FMA chain over k in increasing order (kernels_float.inc, gemm_short_k). */
#ifndef CLARA_CPU_KERNELS_H
#define CLARA_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/kctx.h"

/* Output of one block of weight rows for all n activation rows: for r0 <= r < r1, t < n:
 * y[t * ldy + r] = d, or += alpha * d when accumulate, d = dot(x[t * ldx ...], W row r). */
typedef struct {
    const cpu_mat *W;
    const float *x;
    size_t ldx;
    uint32_t n;
    float *y;
    size_t ldy;
    bool accumulate;
    float alpha;
    size_t pf_bytes; /* decode (GEMV) prefetch distance (cpu/params.h); no effect on the outputs */
} clara_gemm_args;

void clara_gemm_f_avx2(const clara_gemm_args *a, uint64_t r0, uint64_t r1);
void clara_gemm_f_avx512(const clara_gemm_args *a, uint64_t r0, uint64_t r1);

/* Quantized weights: the activations were quantized beforehand to the weight type's partner
 * format (clara_vec_dot_type), row t at xq + t * xq_stride. Result per element as the
 * reference integer dot (block integer sums exact; scales applied in f32, possibly in another
 * order). Returns false if this level has no kernel for the type (the caller uses the reference).
 */
typedef struct {
    const cpu_mat *W;
    const uint8_t *xq;
    size_t xq_stride;
    uint32_t n;
    float *y;
    size_t ldy;
    bool accumulate;
    float alpha;
    size_t pf_bytes; /* decode prefetch distance (cpu/params.h); no effect on the outputs */
} clara_gemm_q_args;

bool clara_gemm_q_has_avx2(clara_type t);
bool clara_gemm_q_has_avx512(clara_type t);
void clara_gemm_q_avx2(const clara_gemm_q_args *a, uint64_t r0, uint64_t r1);
void clara_gemm_q_avx512(const clara_gemm_q_args *a, uint64_t r0, uint64_t r1);

/* Quantizes K activations to fmt (q8_0, q8_1 or q8_k), byte-identical to clara_quantize_row;
 * false (out undefined) for other formats, non-finite values or blocks whose scale is not a
 * normal number: the caller then runs clara_quantize_row, which decides and reports. */
bool clara_quantize_act_avx2(clara_type fmt, const float *x, size_t K, uint8_t *out);
bool clara_quantize_act_avx512(clara_type fmt, const float *x, size_t K, uint8_t *out);

/* Attention inner loops (kernels_attn.inc): sc[k] = dot(q, K + k*stride, d) * scale, and
 * out[e] = sum_k p[k] * V[k*stride + e] (p: the probabilities), as FMA chains over the level's
 * lanes. */
void clara_attn_scores_avx2(const float *q, const float *K, size_t stride, uint32_t n_keys,
                            uint32_t d, float scale, float *sc);
void clara_attn_scores_avx512(const float *q, const float *K, size_t stride, uint32_t n_keys,
                              uint32_t d, float scale, float *sc);
/* The first n_keys scores of 4 query rows (q + r*q_stride) into sc + r*sc_stride: the same
 * bits as clara_attn_scores per row, with each key loaded once for the 4 queries. */
void clara_attn_scores4_avx2(const float *q, size_t q_stride, const float *K, size_t stride,
                             uint32_t n_keys, uint32_t d, float scale, float *sc, size_t sc_stride);
void clara_attn_scores4_avx512(const float *q, size_t q_stride, const float *K, size_t stride,
                               uint32_t n_keys, uint32_t d, float scale, float *sc,
                               size_t sc_stride);
void clara_attn_values_avx2(const float *p, const float *V, size_t stride, uint32_t n_keys,
                            uint32_t d, float *out);
void clara_attn_values_avx512(const float *p, const float *V, size_t stride, uint32_t n_keys,
                              uint32_t d, float *out);
/* The values of 4 query rows (p + r*p_stride into out + r*out_stride), row r over keys
 * [0, n_common + r*step): the same bits as clara_attn_values per row, each value vector loaded
 * once for the 4 rows. */
void clara_attn_values4_avx2(const float *p, size_t p_stride, const float *V, size_t stride,
                             uint32_t n_common, uint32_t step, uint32_t d, float *out,
                             size_t out_stride);
void clara_attn_values4_avx512(const float *p, size_t p_stride, const float *V, size_t stride,
                               uint32_t n_common, uint32_t step, uint32_t d, float *out,
                               size_t out_stride);

/* SwiGLU in place: gate[i] = gate[i] / (1 + e^-gate[i]) * up[i], with the level's vector
 * exponential (kernels_exp.inc: within 2 ulp; the scalar reference uses libm's expf). */
void clara_swiglu_avx2(float *gate, const float *up, size_t n);
void clara_swiglu_avx512(float *gate, const float *up, size_t n);
/* The attention softmax of sc[0, n) in place with the same exponential: the scalar reference's
 * arithmetic otherwise (forward.c), the probabilities within 3 ulp of it with a correctly rounded
 * exponential (2 measured). */
void clara_softmax_avx2(float *sc, uint32_t n);
void clara_softmax_avx512(float *sc, uint32_t n);

/* Stores d for (token t, row r) as the args ask (shared by all levels so the write is the same). */
static inline void clara_gemm_store(float *y, size_t ldy, uint32_t t, uint64_t r, bool accumulate,
                                    float alpha, float d) {
    float *o = &y[(size_t)t * ldy + r];
    if (accumulate)
        *o += alpha * d;
    else
        *o = d;
}

#endif
