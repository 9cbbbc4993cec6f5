/* kernels_ref.h - scalar reference dot products of a quantized weight row with activations, the
 * truth the SIMD kernels are tested against. Two flavours per weight type:
 *  - the integer way ggml computes it: the activations are quantized to the weight type's
 *    partner format (q8_0 for q4_0/q5_0/q8_0, q8_1 for q4_1/q5_1, q8_k for the K-quants), the
 *    codes are multiplied in integers per block and the block scales are applied in f32;
 *  - the float way: dequantize the weight row and take an f32 dot product with the activations.
 * Integer sums cannot overflow int32 for any block bytes (bounds noted at each kernel).
 * One deliberate difference from ggml: for q4_1/q5_1 the min term uses the exact integer sum of
 * the q8_1 codes, not q8_1's f16-rounded s field (which would cost up to 2^-11 relative), so the
 * integer dot equals dequantize-then-dot to f32 rounding. */
#ifndef CLARA_CPU_KERNELS_REF_H
#define CLARA_CPU_KERNELS_REF_H

#include <stdint.h>

#include "clara.h"

/* The activation format of the integer dot product for weight type t: CLARA_TYPE_Q8_0, _Q8_1 or
 * _Q8_K; -1 if t has no integer kernel (plain float types, q8_1, or unsupported types). */
int clara_vec_dot_type(clara_type t);

/* Integer dot product of n elements: w is a row of weight type t, a the activations already
 * quantized to clara_vec_dot_type(t). n must be a multiple of t's block size and t must have
 * an integer kernel (programmer errors: asserted). */
float clara_vec_dot_q_ref(clara_type t, const void *w, const void *a, uint64_t n);

/* Float dot product: dequantizes w (any type clara_dequantize_row supports) block by block and
 * accumulates w[i]*x[i] in f32, in element order. */
float clara_vec_dot_f_ref(clara_type t, const void *w, const float *x, uint64_t n);

/* Convenience: quantizes x to the partner format (into a temporary) and runs the integer kernel.
 * Fails if x cannot be quantized (non-finite values) or memory runs out. */
clara_status clara_vec_dot_ref(clara_type t, const void *w, const float *x, uint64_t n, float *out);

#endif
