/* kernels_avx512.c - AVX-512 (F/BW/VL, VNNI for the integer dots) kernels behind clara_matmul:
 * the float-weight GEMM/GEMV from kernels_float.inc with 16 f32 lanes, and the quantized-weight
 * kernels. Compiled for AVX-512 (Makefile flags; the pragma below covers builds that compile
 * every source with common flags, like the fuzz targets); only called when dispatch.c found it. */
#if defined(__clang__)
#pragma clang attribute push(                                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "base/fp16.h"
#include "cpu/kernels.h"
#include "cpu/params.h"
#include "cpu/repack.h"

#define VEC            __m512
#define VLEN           16
#define V_ZERO()       _mm512_setzero_ps()
#define V_LOADU(p)     _mm512_loadu_ps(p)
#define V_SET1(x)      _mm512_set1_ps(x)
#define V_ADD(a, b)    _mm512_add_ps(a, b)
#define V_MUL(a, b)    _mm512_mul_ps(a, b)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_LOAD_F16(p)  _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define V_LOAD_BF16(p)                                                                             \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define V_HSUM(v)     hsum512(v)
#define V_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define KFN(name)     name##_avx512
#define RM            4 /* GEMM block: 4 weight rows x 6 activation rows = 24 accumulators of 32 zmm */
#define TM            6
#define RG_F32        4 /* GEMV rows per step: f32 weights */
#define RG_H          1 /* GEMV rows per step: f16/bf16 weights (one FMA chain per row and token) */

/* Fixed pairwise reduction: halves, then quarters, then the last four lanes. */
static inline float hsum512(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* Same tree for 8 lanes (the quantized kernels accumulate in 256-bit registers). */
static inline float hsum256(__m256 v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* 16 sums at once in hsum512's tree (halves, quarters, pairs, last two; float addition is
 * commutative, so only the pairing matters): accumulator ATTN_ACC(r, c) ends in out[4 r + c]. */
#define ATTN_ACC(r, c) (4 * (c) + (r))
static inline void hsum16x512(const __m512 a[16], float *out) {
    __m512 u[8], v[4], w[2];
    for (int j = 0; j < 8; j++) /* lanes i + (i + 8): a[2j] in lanes 0-7, a[2j + 1] in 8-15 */
        u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int m = 0; m < 4; m++) /* lanes i + (i + 4): a[4m + b] in 128-bit block b */
        v[m] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * m], u[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * m], u[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int p = 0; p < 2; p++) /* lanes i + (i + 2) within each block */
        w[p] = _mm512_add_ps(_mm512_shuffle_ps(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* the last pair: lane 4 b + j holds a[4 j + b] */
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                        _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1))));
}
#define ATTN_HSUM16(a, out) hsum16x512(a, out)

/* r[i] lane j <-> r[j] lane i: 16 x 16 floats transposed in registers (pairs, quads of rows,
 * then 128-bit blocks twice). */
static inline void transpose16_ps(__m512 r[16]) {
    __m512 t[16];
    /* rows 2i, 2i+1 interleaved: per block a0 b0 a1 b1 | a2 b2 a3 b3 */
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) /* r[4i + j], block b: column 4b + j of rows 4i..4i+3 */
        for (int h = 0; h < 2; h++) {
            __m512d lo = _mm512_castps_pd(t[4 * i + h]), hi = _mm512_castps_pd(t[4 * i + 2 + h]);
            r[4 * i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
            r[4 * i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
        }
    /* column 4b + j: block b of r[j], r[4 + j], r[8 + j], r[12 + j] */
    for (int j = 0; j < 4; j++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88); /* blocks 0, 2 of each */
        __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD); /* blocks 1, 3 */
        __m512 v0 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(u0, v0, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(u0, v0, 0xDD);
        t[4 + j] = _mm512_shuffle_f32x4(u1, v1, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u1, v1, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}
#define V_TRANSPOSE(r) transpose16_ps(r)

#include "cpu/kernels_float.inc"

#define DOT_US(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#define HSUM8(v)     hsum256(v)
#include "cpu/kernels_quant.inc"

#include "cpu/kernels_actq.inc"
/* values of 4 query rows: 4 x 4 accumulators, 4 value vectors, 1 broadcast */
#define ATTN_V4_VECS 4
#include "cpu/kernels_attn.inc"

#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_ROUND(v)  _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2(n)                                                                                  \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
#define V_NAN_TO(y, e) _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), y)
#include "cpu/kernels_exp.inc"
#include "cpu/qgemm.h"
#define QG_RG              16
#define QG_T_WIDE          6 /* 2 x 6 sums and 2 x 6 accumulators in 32 registers */
#define QG_MAX_BITS        8
#define QVI                __m512i
#define QVF                __m512
#define QV_LOADI(p)        _mm512_loadu_si512((const void *)(p))
#define QV_SET1I(x)        _mm512_set1_epi32(x)
#define QV_DPBUSD(c, u, s) _mm512_dpbusd_epi32(c, u, s)
#define QV_CVT(i)          _mm512_cvtepi32_ps(i)
#define QV_LOADF(p)        _mm512_loadu_ps(p)
#define QV_SET1F(x)        _mm512_set1_ps(x)
#define QV_ADD(a, b)       _mm512_add_ps(a, b)
#define QV_MUL(a, b)       _mm512_mul_ps(a, b)
#define QV_FMA(a, b, c)    _mm512_fmadd_ps(a, b, c)
#define QV_FNMA(a, b, c)   _mm512_fnmadd_ps(a, b, c)
#define QV_ZEROF()         _mm512_setzero_ps()
#define QV_STOREF(p, v)    _mm512_storeu_ps(p, v)
#define QKFN(name)         name##_avx512

#include "cpu/lanes_kq.inc"

/* The panel's 8 code vectors of one block of 32 (k4 = 8b + v for group gi: dst at
 * codes + (16b + gi) * 64, vector v at dst + 128v) from the repacked copy's vectors at c: q8_0's 8
 * as they are, q4_0's and q4_k's 4 nibble vectors as the low (v < 4) and high (v + 4) nibbles. */
static void qg_lanes_codes(bool q8, const uint8_t *c, uint8_t *dst) {
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int v = 0; v < (q8 ? 8 : 4); v++) {
        __m512i x = _mm512_load_si512((const void *)(c + 64 * v));
        if (q8) {
            _mm512_storeu_si512((void *)(dst + 128 * v), x);
        } else {
            _mm512_storeu_si512((void *)(dst + 128 * v), _mm512_and_si512(x, m4));
            _mm512_storeu_si512((void *)(dst + 128 * (v + 4)),
                                _mm512_and_si512(_mm512_srli_epi16(x, 4), m4));
        }
    }
}

/* qg_lanes_avx512 for q4_k: per super-block its scale and min bytes unpacked once, then per
 * sub-block the scales d * sc and mins dmin * m as the unpacking makes them (lanes_kq.inc). */
static void qg_lanes_q4k(const uint8_t *grp, size_t K, uint32_t gi, uint8_t *codes, float *s,
                         float *m) {
    for (size_t sb = 0; sb < K / 256; sb++) {
        const uint8_t *head = grp + sb * CPU_LANES_KQ_SB_BYTES;
        __m512i SM[4];
        q4k_lanes_scale_bytes(head, SM);
        const __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)head));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(head + 32)));
        for (int j = 0; j < 8; j++) {
            const size_t b = 8 * sb + (size_t)j;
            _mm512_storeu_ps(s + 32 * b + 16 * gi, q4k_lanes_scaled(SM, j, d));
            _mm512_storeu_ps(m + 32 * b + 16 * gi, q4k_lanes_scaled(SM + 2, j, dmin));
            qg_lanes_codes(false, grp + cpu_lanes_kq_codes_off(b), codes + (16 * b + gi) * 64);
        }
    }
}

/* qg_lanes_avx512 for q6_k: per pair of blocks of 16 its 8 code vectors (lanes_kq.inc) as the
 * panel's k4 = 8p..8p+7, and the two blocks' scales d * sc. */
static void qg_lanes_q6k(const uint8_t *grp, size_t K, uint32_t gi, uint8_t *codes, float *s) {
    for (size_t p = 0; p < K / 32; p++) {
        const __m512 d = _mm512_cvtph_ps(
            _mm256_load_si256((const __m256i *)(grp + p / 8 * CPU_LANES_Q6_SB_BYTES)));
        for (size_t b = 2 * p; b < 2 * p + 2; b++)
            _mm512_storeu_ps(s + 32 * b + 16 * gi,
                             q6k_lanes_scaled(grp + cpu_lanes_q6_scales_off(b), d));
        __m512i X[8];
        q6k_lanes_codes(grp + cpu_lanes_q6_codes_off(p), X);
        uint8_t *dst = codes + (16 * p + gi) * 64; /* k4 = 8p + v: ((8p + v) * 2 + gi) * 64 */
        for (int v = 0; v < 8; v++) _mm512_storeu_si512((void *)(dst + 128 * v), X[v]);
    }
}

/* Group gi of a panel from a repacked group (qgemm.h, clara_qg_lanes_fn): the code vectors are
 * the panel's already (block b's vector v is k4 = 8b + v), the f16 scales widened; q4_k and q6_k
 * above. */
static void qg_lanes_avx512(clara_type t, const uint8_t *grp, size_t K, uint32_t gi, uint8_t *codes,
                            float *s, float *m) {
    if (t == CLARA_TYPE_Q4_K) {
        qg_lanes_q4k(grp, K, gi, codes, s, m);
        return;
    }
    if (t == CLARA_TYPE_Q6_K) {
        qg_lanes_q6k(grp, K, gi, codes, s);
        return;
    }
    for (size_t b = 0; b < K / 32; b++) {
        __m256i h = _mm256_load_si256((const __m256i *)(grp + cpu_lanes_scales_off(t, b)));
        _mm512_storeu_ps(s + 32 * b + 16 * gi, _mm512_cvtph_ps(h));
        qg_lanes_codes(t == CLARA_TYPE_Q8_0, grp + cpu_lanes_codes_off(t, b),
                       codes + (16 * b + gi) * 64); /* k4 = 8b: ((8b + v) * 2 + gi) * 64 */
    }
}
#define QG_LANES qg_lanes_avx512

/* Rows [32][K] -> panel [K/4][32] u32: per 64-byte column chunk, two 16 x 16 u32 transposes
 * (unpack 32-bit, unpack 64-bit, two 128-bit lane shuffles). */
static void qg_interleave_avx512(const uint8_t *rows, size_t K, uint8_t *panel) {
    size_t c = 0;
    for (; c + 64 <= K; c += 64)
        for (int h = 0; h < 2; h++) {
            __m512i r[16], t[16];
            for (int i = 0; i < 16; i++)
                r[i] = _mm512_loadu_si512((const void *)(rows + (size_t)(16 * h + i) * K + c));
            for (int i = 0; i < 16; i += 2) {
                t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) {
                r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
                r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
                r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
                r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
            }
            for (int i = 0; i < 4; i++) {
                t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
                t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
                t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
                t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
            }
            for (int i = 0; i < 8; i++) {
                r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
                r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
            }
            for (int j = 0; j < 16; j++)
                _mm512_storeu_si512((void *)(panel + ((c / 4 + (size_t)j) * 32 + 16 * h) * 4),
                                    r[j]);
        }
    for (size_t ks = c / 4; ks < K / 4; ks++) /* a tail of fewer than 64 columns */
        for (int i = 0; i < 32; i++) memcpy(panel + (ks * 32 + i) * 4, rows + i * K + ks * 4, 4);
}

#define QG_STORE_ROW
#include "cpu/qgemm_kernel.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
