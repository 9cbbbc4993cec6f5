/* gemv.h - the AVX-512 decode GEMV: quantized weights (q4_0, q8_0, q4_k, q6_k) times up to
 * CLARA_GEMV_MAX_ROWS activation rows already quantized to the partner format (q8_0 or q8_k).
 * Decode reads every weight once per token, so the kernels are built to keep up with memory: the
 * activations are re-arranged once per call (gemv.c) into the order in which a 64-byte load of
 * weight codes yields its bytes, and each weight block costs a few masks, shifts, permutes and one
 * vpdpbusd per 64 codes. Integer sums per block are exact; only the f32 summation order differs
 * from the reference dot (kernels_ref.c). */
#ifndef CLARA_CPU_GEMV_H
#define CLARA_CPU_GEMV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/dispatch.h"
#include "cpu/kctx.h"
#include "dtype.h"

/* Activation rows one pass over a weight row multiplies (each row keeps two or four zmm
 * accumulators: 8 rows fill most of the 32 registers), and the most rows a call takes: rows past
 * the first 8 are further passes over a few weight rows at a time, read again from L1. */
#define CLARA_GEMV_PASS_ROWS 8
#define CLARA_GEMV_MAX_ROWS  16

/* The q4_0 / q8_0 kernel converts a block's integer sum v (|v| < 2^22) to f32 exactly as
 * the float with the bits CLARA_GEMV_MAGIC + v, minus 1.5 * 2^23 (a subtraction, which can run
 * on either vector port, instead of a convert, which competes with the dpbusd for one):
 * the prepared start values C carry the magic. */
#define CLARA_GEMV_MAGIC 0x4B400000

/* Activations prepared per row t (gemv.c):
 *  q4_0 / q8_0 (per block pair): A the codes in the weights' byte order, C the -off * (sum of
 *    4 codes) start value of each dpbusd lane, DA the f32 block scales;
 *  q4_k (per super-block): A the codes with sub-blocks in the order 0 2 1 3 4 6 5 7 (the
 *    nibbles of two 64-byte loads), C 16 int32 lanes: 0 in lanes 0..7, the sub-block sums
 *    B_j (as 16-bit) in lanes 8+j, DA the pair (d, -d); repacked (lanes set): A the codes in
 *    order, no C, DA 16 floats: d, then the 8 sub-blocks' code sums;
 *  q6_k (per super-block): A the codes as they are, C the 16 bsums negated (as 16-bit), DA d;
 *    repacked: C per block of 16 CLARA_GEMV_MAGIC - 32 * (sum of its codes). */
typedef struct {
    clara_type type;
    const uint8_t *W;     /* rows */
    const uint8_t *lanes; /* W repacked (cpu/repack.h), or NULL */
    size_t group_bytes;   /* bytes of one group of 16 rows in lanes */
    size_t nb;            /* blocks per row: of 32 (q4_0, q8_0; a multiple of 4) or 256 */
    uint32_t n;
    const int8_t *A;
    const int32_t *C;
    const float *DA;
    size_t a_stride, c_stride, da_stride; /* per activation row, in elements */
    float *y;
    size_t ldy;
    bool accumulate;
    float alpha;
    size_t pf_bytes, pf_groups, pf_lanes; /* prefetch distances (cpu/params.h); no effect on the
                                             outputs */
    size_t pf_kq; /* q4_k / q6_k wide rows: L2 prefetch distance, 0: pf_bytes (cpu/params.h) */
} clara_gemv_args;

/* Output rows [r0, r1) of g (kernels in gemv_avx512.c). Same value per element whatever n is. */
void clara_gemv_avx512(const clara_gemv_args *g, uint64_t r0, uint64_t r1);

/* The same for q4_0 / q8_0 on AMX tiles (gemv_amx.c), with the same bits; only where
 * clara_amx_active() (dispatch.h), and used from CLARA_GEMV_AMX_MIN_ROWS activation rows on:
 * where the VNNI kernel needs a second pass over the weights. Up to one pass (8 rows) the VNNI
 * kernel keeps up with memory, while each AMX block waits on tile loads, the product and its
 * store. Measured on an Intel Xeon with AMX-INT8 ("Intel(R) Xeon(R) Processor", family 6 model
 * 167), decode steps of the random 1B q4_0 pair (bench_decode, 2 threads, medians of 3, two
 * rounds, VNNI / AMX ms): 1 row 34.0 / 35.7 and 35.0 / 34.3 (AMX not used there), 8 rows
 * 48.5 / 52.0 and 50.7 / 49.7, 10 rows 61.6 / 56.9 and 63.1 / 55.9, 12 rows 68.1 / 62.0,
 * 14 rows 74.3 / 68.9, 16 rows 81.4 / 73.3 and 83.6 / 74.0. */
#define CLARA_GEMV_AMX_MIN_ROWS (CLARA_GEMV_PASS_ROWS + 1)
void clara_gemv_amx_q0(const clara_gemv_args *g, uint64_t r0, uint64_t r1);

/* y[t * W->rows + r] = dot (or += alpha * dot) for t < n <= CLARA_GEMV_MAX_ROWS, xq's rows at xq +
 * t*xq_stride in the weight type's partner format; false (nothing written) when the kernel does not
 * apply (other type or level, shape, no memory): the caller then runs the general kernels. */
bool clara_gemv_quant(cpu_kctx *kc, clara_isa isa, const cpu_mat *W, const uint8_t *xq,
                      size_t xq_stride, uint32_t n, float *y, bool accumulate, float alpha);

/* Several such products in one parallel region (decode's q, k, v and gate, up: one wake-up and
 * one tail instead of one per matrix); parts with the same type, width and xq share one
 * re-arrangement of the activations. Same bits as clara_gemv_quant per part; false (nothing
 * written) when any part does not apply. */
#define CLARA_GEMV_GROUP_MAX 4

typedef struct {
    const cpu_mat *W;
    const uint8_t *xq;
    size_t xq_stride;
    float *y;
    bool accumulate;
    float alpha;
} clara_gemv_part;

bool clara_gemv_quant_group(cpu_kctx *kc, clara_isa isa, const clara_gemv_part *parts, int count,
                            uint32_t n);

#endif
