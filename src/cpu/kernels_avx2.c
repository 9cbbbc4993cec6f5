/* kernels_avx2.c - AVX2 + FMA + F16C kernels behind clara_matmul: the float-weight GEMM/GEMV
 * from kernels_float.inc with 8 f32 lanes, and the quantized-weight kernels. Compiled for AVX2
 * (Makefile flags; the pragma below covers builds that compile every source with common flags,
 * like the fuzz targets); only called when dispatch.c found the features. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "base/fp16.h"
#include "cpu/kernels.h"

#define VEC            __m256
#define VLEN           8
#define V_ZERO()       _mm256_setzero_ps()
#define V_LOADU(p)     _mm256_loadu_ps(p)
#define V_SET1(x)      _mm256_set1_ps(x)
#define V_ADD(a, b)    _mm256_add_ps(a, b)
#define V_MUL(a, b)    _mm256_mul_ps(a, b)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_LOAD_F16(p)  _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define V_LOAD_BF16(p)                                                                             \
    _mm256_castsi256_ps(                                                                           \
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define V_HSUM(v)     hsum256(v)
#define V_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define KFN(name)     name##_avx2
#define RM            2 /* GEMM block: 2 weight rows x 6 activation rows = 12 accumulators of 16 ymm */
#define TM            6
#define RG_F32        1 /* GEMV rows per step: f32 weights */
#define RG_H          2 /* GEMV rows per step: f16/bf16 weights (one FMA chain per row and token) */

/* Fixed pairwise reduction: halves, then the last four lanes. */
static inline float hsum256(__m256 v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* r[i] lane j <-> r[j] lane i: 8 x 8 floats transposed in registers. */
static inline void transpose8_ps(__m256 r[8]) {
    __m256 t[8];
    /* rows 2i, 2i+1 interleaved: per half a0 b0 a1 b1 | a2 b2 a3 b3 */
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) /* r[4i + j], half b: column 4b + j of rows 4i..4i+3 */
        for (int h = 0; h < 2; h++) {
            __m256d lo = _mm256_castps_pd(t[4 * i + h]), hi = _mm256_castps_pd(t[4 * i + 2 + h]);
            r[4 * i + 2 * h] = _mm256_castpd_ps(_mm256_unpacklo_pd(lo, hi));
            r[4 * i + 2 * h + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(lo, hi));
        }
    for (int j = 0; j < 4; j++) { /* column j: low halves of r[j], r[4 + j]; 4 + j: high halves */
        t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
        t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
    }
    for (int i = 0; i < 8; i++) r[i] = t[i];
}
#define V_TRANSPOSE(r) transpose8_ps(r)

#include "cpu/kernels_float.inc"

#define DOT_US(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#define HSUM8(v)     hsum256(v)
#include "cpu/kernels_quant.inc"

/* maddubs saturates 16-bit pair sums: 2 * 127 * 127-bit codes fit, 8-bit codes (q8_0) do not */
#include "cpu/kernels_actq.inc"
/* values of 4 query rows: 4 x 2 accumulators of the 16 registers */
#define ATTN_V4_VECS 2
#include "cpu/kernels_attn.inc"

#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_ROUND(v)  _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2(n)                                                                                  \
    _mm256_castsi256_ps(                                                                           \
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
#define V_NAN_TO(y, e) _mm256_blendv_ps(e, y, _mm256_cmp_ps(y, y, _CMP_UNORD_Q))
#include "cpu/kernels_exp.inc"
#include "cpu/qgemm.h"
#define QG_RG       8
#define QG_LANES    NULL
#define QG_MAX_BITS 7
#define QVI         __m256i
#define QVF         __m256
#define QV_LOADI(p) _mm256_loadu_si256((const __m256i *)(p))
#define QV_SET1I(x) _mm256_set1_epi32(x)
#define QV_DPBUSD(c, u, s)                                                                         \
    _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define QV_CVT(i)        _mm256_cvtepi32_ps(i)
#define QV_LOADF(p)      _mm256_loadu_ps(p)
#define QV_SET1F(x)      _mm256_set1_ps(x)
#define QV_ADD(a, b)     _mm256_add_ps(a, b)
#define QV_MUL(a, b)     _mm256_mul_ps(a, b)
#define QV_FMA(a, b, c)  _mm256_fmadd_ps(a, b, c)
#define QV_FNMA(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define QV_ZEROF()       _mm256_setzero_ps()
#define QV_STOREF(p, v)  _mm256_storeu_ps(p, v)
#define QKFN(name)       name##_avx2

/* Rows [16][K] -> panel [K/4][16] u32: per 32-byte column chunk, two 8 x 8 u32 transposes. */
static void qg_interleave_avx2(const uint8_t *rows, size_t K, uint8_t *panel) {
    size_t c = 0;
    for (; c + 32 <= K; c += 32)
        for (int h = 0; h < 2; h++) {
            __m256i r[8], t[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_si256((const __m256i *)(rows + (size_t)(8 * h + i) * K + c));
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
                r[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
                r[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
                r[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
            }
            for (int i = 0; i < 4; i++) {
                t[i] = _mm256_permute2x128_si256(r[i], r[i + 4], 0x20);
                t[i + 4] = _mm256_permute2x128_si256(r[i], r[i + 4], 0x31);
            }
            for (int j = 0; j < 8; j++)
                _mm256_storeu_si256((__m256i *)(panel + ((c / 4 + (size_t)j) * 16 + 8 * h) * 4),
                                    t[j]);
        }
    for (size_t ks = c / 4; ks < K / 4; ks++)
        for (int i = 0; i < 16; i++) memcpy(panel + (ks * 16 + i) * 4, rows + i * K + ks * 4, 4);
}

#include "cpu/qgemm_kernel.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
