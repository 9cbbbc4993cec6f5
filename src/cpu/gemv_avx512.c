/* gemv_avx512.c - the decode GEMV kernels of gemv.h (AVX-512 F/BW/VL + VNNI). Each weight row is
 * read once with a prefetch pf_bytes ahead (cpu/params.h); T <= CLARA_GEMV_PASS_ROWS activation
 * rows share every load, and more rows take further passes over a few weight rows still in L1.
 * Compiled for AVX-512 (Makefile flags; the pragma covers builds with common flags). */
#if defined(__clang__)
#pragma clang attribute push(                                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")
#endif

#include <immintrin.h>
#include <string.h>

#include "cpu/gemv.h"
#include "cpu/kernels.h"
#include "cpu/repack.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Rows of more than this many super-blocks prefetch into L2 where g->pf_kq is set. */
#define KQ_WIDE_BLOCKS 32

/* Whether g's k-quant rows take the L2 prefetch (prefetch_ahead). */
ALWAYS_INLINE bool kq_prefetch_l2(const clara_gemv_args *g) {
    return g->pf_kq && g->nb > KQ_WIDE_BLOCKS;
}

/* The bytes of a k-quant block at p further on: pf_bytes into L1 or, for a row wider than
 * KQ_WIDE_BLOCKS where g->pf_kq is set, pf_kq bytes into L2 only (cpu/params.h). Every weight
 * row reads all of its activations again (per activation row and super-block 256 codes and 64
 * bytes of lane sums); a 14,336-wide row's are 18 KB, and on Zen 4 the weights prefetched into
 * L1 pushed them out (the L1 prefetch had to stay short there: 4 KB). Prefetched into L2, 8-32
 * KB ahead, such rows read much faster (alternating in one process, 2 threads, GB/s, L1 4 KB /
 * L2 16 KB: q4_k 4096 x 14336 29.8 / 41.2, q6_k 4096 x 14336 32.8 / 54.3), narrower ones not
 * (q4_k 4096 x 4096 43.2 / 42.5; in a 7B q4_k_m decode step the q, k, v, o, gate and up
 * products took 4-10% longer with it). The 7B's down projections took 34-42% less time per
 * decode step (5% in a slow minute of the VM's memory). */
ALWAYS_INLINE void prefetch_ahead(const clara_gemv_args *g, bool l2, const uint8_t *p,
                                  size_t bytes) {
    if (l2)
        for (size_t o = 0; o < bytes; o += 64)
            _mm_prefetch((const char *)(p + g->pf_kq + o), _MM_HINT_T1);
    else
        for (size_t o = 0; o < bytes; o += 64)
            _mm_prefetch((const char *)(p + g->pf_bytes + o), _MM_HINT_T0);
}

ALWAYS_INLINE void store_rows(int T, const clara_gemv_args *g, uint64_t r, const __m512 *acc) {
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        clara_gemm_store(g->y, g->ldy, (uint32_t)t, r, g->accumulate, g->alpha,
                         _mm512_reduce_add_ps(acc[t]));
}

/* ---- q4_0 / q8_0: 16 weight rows in the lanes (the packed GEMM's arithmetic) ---- */

#include "cpu/gemv_lanes.inc"

/* One group: weight rows r + off[i] / row_bytes (the last valid row repeated past `valid`), or
 * group r / 16 of the repacked copy (PK), activation rows [0, T) of g. */
ALWAYS_INLINE void q0_lanes_group(bool Q8, bool PK, int T, const clara_gemv_args *g, uint64_t r,
                                  uint32_t valid, const int32_t off[16]) {
    const lanes_src src = lanes_source(Q8, PK, g, r, off);
    __m512 acc[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < g->nb; b++) {
        source_prefetch(PK, &src, g, b);
        __m512i X[8];
        source_codes(Q8, PK, &src, b, X);
        __m512 s = source_scales(PK, &src, b);
        __m512i is[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) is[t] = _mm512_set1_epi32(g->C[(size_t)t * g->c_stride + b]);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                int32_t av;
                memcpy(&av, g->A + (size_t)t * g->a_stride + 32 * b + 4 * k, 4);
                is[t] = _mm512_dpbusd_epi32(is[t], X[k], _mm512_set1_epi32(av));
            }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            acc[t] = lanes_fma(is[t], s, g->DA[(size_t)t * g->da_stride + b], acc[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) lanes_store(g, (uint32_t)t, r, valid, acc[t]);
}

/* ---- q4_k / q6_k repacked (cpu/repack.h): 16 weight rows in the lanes, as q4_0 ---- */

#include "cpu/lanes_kq.inc"

/* A super-block's bytes of the group's stream prefetched pf_lanes ahead, in eighths: one per
 * block of 32 codes (288 bytes for q4_k, 424 for q6_k). */
ALWAYS_INLINE void kq_lanes_prefetch(const clara_gemv_args *g, const uint8_t *grp, size_t sb_bytes,
                                     size_t eighth) {
    if (!g->pf_lanes) return;
    const size_t share = sb_bytes / 8;
    const uint8_t *p = grp + eighth * share + g->pf_lanes;
    for (size_t o = 0; o < share; o += 64) _mm_prefetch((const char *)(p + o), _MM_HINT_T0);
}

/* Activation row t's exact integer sum of 4 * K4 codes from A against X[0..K4), from the start
 * value c (carrying CLARA_GEMV_MAGIC), as f32. */
ALWAYS_INLINE __m512 kq_lanes_sum(int K4, const __m512i *X, const int8_t *A, int32_t c) {
    __m512i is = _mm512_set1_epi32(c);
#pragma GCC unroll 8
    for (int k = 0; k < K4; k++) {
        int32_t av;
        memcpy(&av, A + 4 * k, 4);
        is = _mm512_dpbusd_epi32(is, X[k], _mm512_set1_epi32(av));
    }
    return _mm512_sub_ps(_mm512_castsi512_ps(is), _mm512_set1_ps(LANES_MAGIC_F));
}

/* The 8 blocks of 32 codes of q4_k super-block sb for activation rows [0, T): per block part =
 * fma(float(isum), d*sc, part), then part -= dmin*m * asum (asum: DA after dx). */
ALWAYS_INLINE void q4k_lanes_blocks(int T, const clara_gemv_args *g, const uint8_t *grp, size_t sb,
                                    __m512 part[]) {
    const uint8_t *head = grp + sb * CPU_LANES_KQ_SB_BYTES;
    const __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)head));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(head + 32)));
    __m512i SM[4];
    q4k_lanes_scale_bytes(head, SM);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const size_t b = 8 * sb + (size_t)j;
        kq_lanes_prefetch(g, grp, CPU_LANES_KQ_SB_BYTES, b);
        __m512i X[8];
        packed_codes(false, grp + cpu_lanes_kq_codes_off(b), X);
        const __m512 s = q4k_lanes_scaled(SM, j, d), m = q4k_lanes_scaled(SM + 2, j, dmin);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float *da = g->DA + (size_t)t * g->da_stride + 16 * sb;
            __m512 f =
                kq_lanes_sum(8, X, g->A + (size_t)t * g->a_stride + 32 * b, CLARA_GEMV_MAGIC);
            part[t] = _mm512_fmadd_ps(f, s, part[t]);
            part[t] = _mm512_fnmadd_ps(m, _mm512_set1_ps(da[1 + j]), part[t]);
        }
    }
}

/* The 16 blocks of 16 codes of a q6_k super-block, in pairs, for rows [0, T): per block part =
 * fma(float(isum), d*sc, part), isum from C's start value (-32 * the block's code sum). */
ALWAYS_INLINE void q6k_lanes_blocks(int T, const clara_gemv_args *g, const uint8_t *grp, size_t sb,
                                    __m512 part[]) {
    const __m512 d =
        _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(grp + sb * CPU_LANES_Q6_SB_BYTES)));
    for (size_t p = 8 * sb; p < 8 * sb + 8; p++) {
        kq_lanes_prefetch(g, grp, CPU_LANES_Q6_SB_BYTES, p);
        __m512i X[8];
        q6k_lanes_codes(grp + cpu_lanes_q6_codes_off(p), X);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const size_t b = 2 * p + (size_t)h;
            const __m512 s = q6k_lanes_scaled(grp + cpu_lanes_q6_scales_off(b), d);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int32_t c = g->C[(size_t)t * g->c_stride + b];
                __m512 f = kq_lanes_sum(4, X + 4 * h, g->A + (size_t)t * g->a_stride + 16 * b, c);
                part[t] = _mm512_fmadd_ps(f, s, part[t]);
            }
        }
    }
}

/* One group of a repacked q4_k or q6_k matrix for activation rows [0, T) of g (prepared by
 * gemv.c: A the q8_k codes in order; DA per super-block dx (q4_k: then the 8 sub-blocks' code
 * sums); q6_k: C per block of 16 the start value). Per output, as the packed GEMM (qgemm.h): per
 * super-block part = 0, part over its blocks, then acc = fma(part, dx, acc). Each activation
 * row costs per 16 x 32 codes 8 dpbusd and 3 (q4_k) or 4 (q6_k) other operations, where the
 * row-by-row kernels below pay per row about twice the instructions per code. */
ALWAYS_INLINE void kq_lanes_group(bool Q6, int T, const clara_gemv_args *g, uint64_t r,
                                  uint32_t valid) {
    const uint8_t *grp = g->lanes + r / 16 * g->group_bytes;
    __m512 acc[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (size_t sb = 0; sb < g->nb; sb++) {
        __m512 part[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) part[t] = _mm512_setzero_ps();
        if (Q6)
            q6k_lanes_blocks(T, g, grp, sb, part);
        else
            q4k_lanes_blocks(T, g, grp, sb, part);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float dx = g->DA[(size_t)t * g->da_stride + (Q6 ? 1 : 16) * sb];
            acc[t] = _mm512_fmadd_ps(part[t], _mm512_set1_ps(dx), acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) lanes_store(g, (uint32_t)t, r, valid, acc[t]);
}

/* ---- k-quants: the lanes of 4 x 64 codes, each lane sum scaled by its sub-block's scale ---- */

/* start + sum over the 4 vectors of (the exact dpbusd lane sums of X[u] . A[64u..], each times
 * the lane's scale in S[u] as (sc, 0) by vpdpwssd); two chains for latency. */
ALWAYS_INLINE __m512i scaled_sums(const __m512i X[4], const __m512i S[4], const int8_t *A,
                                  __m512i start) {
    __m512i i[2] = {start, _mm512_setzero_si512()};
#pragma GCC unroll 4
    for (int u = 0; u < 4; u++) {
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), X[u],
                                        _mm512_loadu_si512((const void *)(A + 64 * u)));
        i[u / 2] = _mm512_dpwssd_epi32(i[u / 2], p, S[u]);
    }
    return _mm512_add_epi32(i[0], i[1]);
}

/* ---- q4_k: one super-block (144 bytes) per step ---- */

/* The 8 scales and 8 mins of a q4_k block as bytes [sc0..7, m0..7], from the block's first 16
 * bytes (f16 d, f16 dmin, S[12]; quant.h): sc_j = S[j] & 63, m_j = S[j+4] & 63 for j < 4; for
 * j >= 4 the low (sc) or high (m) nibble of S[j+4] below the top 2 bits of S[j-4] (sc) or S[j]. */
ALWAYS_INLINE __m128i q4k_scales_mins(__m128i hdr) {
    const __m128i sh_a = _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m128i sh_b = _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11);
    const __m128i m_a = _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f);
    /* [S0-3, S8-11, S4-7, S8-11], the last word's high nibbles moved down */
    __m128i a = _mm_srlv_epi32(_mm_shuffle_epi8(hdr, sh_a), _mm_setr_epi32(0, 0, 0, 4));
    /* [0, S0-3, 0, S4-7]: their top 2 bits to bits 4-5 */
    __m128i b = _mm_srli_epi16(_mm_shuffle_epi8(hdr, sh_b), 2);
    return _mm_or_si128(_mm_and_si128(a, m_a), _mm_and_si128(b, _mm_set1_epi8(0x30)));
}

/* Codes: the low / high nibbles of the two 64-byte loads hold sub-blocks (0,2), (1,3), (4,6),
 * (5,7), 8 dpbusd lanes each; each lane (|sum| <= 4*15*128) is scaled by vpdpwssd against the
 * lane's scale as (sc, 0). The mins term sum_j m_j*B_j is one more vpdpwssd. */
ALWAYS_INLINE void q4k_gemv(int T, const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i P[4] = {_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2),
                          _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3),
                          _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6),
                          _mm512_setr_epi32(5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7)};
    const size_t nb = g->nb, row_bytes = nb * 144;
    const bool l2 = kq_prefetch_l2(g);
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *w = g->W + r * row_bytes;
        __m512 acc[CLARA_GEMV_PASS_ROWS], accm[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[t] = accm[t] = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *wb = w + 144 * b;
            prefetch_ahead(g, l2, wb, 144);
            __m128i hdr = _mm_loadu_si128((const __m128i *)wb);
            __m512i sc32 = _mm512_cvtepu8_epi32(q4k_scales_mins(hdr)); /* sc 0..7, m 8..15 */
            __m512i q0 = _mm512_loadu_si512((const void *)(wb + 16));
            __m512i q1 = _mm512_loadu_si512((const void *)(wb + 80));
            __m512i X[4] = {
                _mm512_and_si512(q0, m4), _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
                _mm512_and_si512(q1, m4), _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4)};
            __m512i S[4];
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) S[v] = _mm512_permutexvar_epi32(P[v], sc32);
            __m128 dd = _mm_cvtph_ps(hdr); /* d, dmin */
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int8_t *A = g->A + (size_t)t * g->a_stride + 256 * b;
                const int32_t *C = g->C + (size_t)t * g->c_stride + 16 * b;
                __m512i isum = scaled_sums(X, S, A, _mm512_setzero_si512());
                __m512i mn = _mm512_dpwssd_epi32(_mm512_setzero_si512(), sc32,
                                                 _mm512_loadu_si512((const void *)C));
                __m128 D =
                    _mm_mul_ps(dd, _mm_castpd_ps(_mm_load_sd((
                                       const double *)(g->DA + (size_t)t * g->da_stride + 2 * b))));
                acc[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(D), acc[t]);
                accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn),
                                          _mm512_broadcastss_ps(_mm_movehdup_ps(D)), accm[t]);
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[t] = _mm512_add_ps(acc[t], accm[t]);
        store_rows(T, g, r, acc);
    }
}

/* ---- q6_k: one super-block (210 bytes) per step ---- */

/* Codes: low / high nibbles of ql[64h..64h+63] with 2 bits of qh[32h..32h+31] each (shifted into
 * bits 4-5 by per-half variable shifts) are the elements 128h + 0..63 / 64..127, i.e. sub-blocks
 * in order, 4 dpbusd lanes each (|sum| <= 4*63*128). Lanes are scaled by vpdpwssd against
 * (sc, 0); the -32 offset is one more vpdpwssd of (32*sc, 0) against the negated bsums. */
ALWAYS_INLINE void q6k_gemv(int T, const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const __m512i lo16 = _mm512_set1_epi32(0xffff);
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512i P[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
        P[v] = _mm512_add_epi32(_mm512_set1_epi32(4 * v),
                                _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
    const size_t nb = g->nb, row_bytes = nb * 210;
    const bool l2 = kq_prefetch_l2(g);
    for (uint64_t r = r0; r < r1; r++) {
        const uint8_t *w = g->W + r * row_bytes;
        __m512 acc[CLARA_GEMV_PASS_ROWS];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *wb = w + 210 * b;
            prefetch_ahead(g, l2, wb, 210);
            __m512i H = _mm512_loadu_si512((const void *)(wb + 128)), X[4];
#pragma GCC unroll 4
            for (int h = 0; h < 2; h++) {
                __m512i L = _mm512_loadu_si512((const void *)(wb + 64 * h));
                __m512i Hh =
                    h ? _mm512_shuffle_i64x2(H, H, 0xee) : _mm512_shuffle_i64x2(H, H, 0x44);
                /* a | (b & c): the nibble, and qh's 2 bits in bits 4-5 */
                X[2 * h] = _mm512_ternarylogic_epi32(_mm512_and_si512(L, m4),
                                                     _mm512_sllv_epi16(Hh, shl), m30, 0xf8);
                X[2 * h + 1] =
                    _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                              _mm512_srlv_epi16(Hh, shr), m30, 0xf8);
            }
            __m512i sc32 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wb + 192)));
            __m512i sc5 = _mm512_and_si512(_mm512_slli_epi32(sc32, 5), lo16);
            sc32 = _mm512_and_si512(sc32, lo16);
            __m512i S[4];
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) S[v] = _mm512_permutexvar_epi32(P[v], sc32);
            uint16_t dh;
            memcpy(&dh, wb + 208, 2);
            __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(dh));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const int8_t *A = g->A + (size_t)t * g->a_stride + 256 * b;
                const int32_t *C = g->C + (size_t)t * g->c_stride + 16 * b;
                __m512i isum =
                    scaled_sums(X, S, A,
                                _mm512_dpwssd_epi32(_mm512_setzero_si512(), sc5,
                                                    _mm512_loadu_si512((const void *)C)));
                __m128 D = _mm_mul_ss(d, _mm_load_ss(g->DA + (size_t)t * g->da_stride + b));
                acc[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(D), acc[t]);
            }
        }
        store_rows(T, g, r, acc);
    }
}

#define GEMV_CASE(CALL, T)                                                                         \
    case T:                                                                                        \
        CALL(T);                                                                                   \
        break;
#define GEMV_CASES(CALL, N)                                                                        \
    switch (N) {                                                                                   \
        GEMV_CASE(CALL, 1)                                                                         \
        GEMV_CASE(CALL, 2)                                                                         \
        GEMV_CASE(CALL, 3)                                                                         \
        GEMV_CASE(CALL, 4)                                                                         \
        GEMV_CASE(CALL, 5)                                                                         \
        GEMV_CASE(CALL, 6)                                                                         \
        GEMV_CASE(CALL, 7)                                                                         \
    default:                                                                                       \
        CALL(8);                                                                                   \
    }

_Static_assert(CLARA_GEMV_PASS_ROWS == 8, "GEMV_CASES instantiates 1..8 rows");

/* One pass: rows [r0, r1) of W for the g->n <= CLARA_GEMV_PASS_ROWS activation rows of g. */
static void gemv_pass(const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    switch (g->type) {
    case CLARA_TYPE_Q4_K:
#define CALL(T) q4k_gemv(T, g, r0, r1)
        GEMV_CASES(CALL, g->n)
#undef CALL
        break;
    case CLARA_TYPE_Q6_K:
#define CALL(T) q6k_gemv(T, g, r0, r1)
        GEMV_CASES(CALL, g->n)
#undef CALL
        break;
    default: /* q4_0 / q8_0 go through q0_lanes; clara_gemv_quant admits no other type */
        break;
    }
}

/* Weight rows per chunk when the activation rows take several passes: a chunk's rows are read
 * from memory by the first pass and from L1 by the others (4 rows of the widest decode matrix,
 * the 14,336-column down projection, are 32 KB of q4_0, 56 KB of q8_0: L1 or L2). */
#define GEMV_CHUNK_ROWS 4

/* The activation rows of g from row t0 on, at most CLARA_GEMV_PASS_ROWS of them. */
static clara_gemv_args pass_rows(const clara_gemv_args *g, uint32_t t0) {
    clara_gemv_args p = *g;
    p.n = g->n - t0 < CLARA_GEMV_PASS_ROWS ? g->n - t0 : CLARA_GEMV_PASS_ROWS;
    p.A += t0 * g->a_stride, p.C += t0 * g->c_stride, p.DA += t0 * g->da_stride;
    p.y += t0 * g->ldy;
    return p;
}

/* q4_0 / q8_0: groups of 16 weight rows (the last one partial, its last row repeated in the
 * lanes past the end and not stored), each group through every pass of activation rows while
 * its rows are still in L1/L2; from the repacked copy where there is one (tasks start at whole
 * groups: gemv.c). */
static void q0_lanes(const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    const bool q8 = g->type == CLARA_TYPE_Q8_0, pk = g->lanes && r0 % 16 == 0;
    const size_t row_bytes = g->nb * (q8 ? 34 : 18);
    for (uint64_t r = r0; r < r1; r += 16) {
        uint32_t valid = r1 - r < 16 ? (uint32_t)(r1 - r) : 16;
        _Alignas(64) int32_t off[16];
        for (uint32_t i = 0; i < 16; i++)
            off[i] = (int32_t)((i < valid ? i : valid - 1) * row_bytes);
        for (uint32_t t0 = 0; t0 < g->n; t0 += CLARA_GEMV_PASS_ROWS) {
            clara_gemv_args p = pass_rows(g, t0);
            const clara_gemv_args *gp = &p;
            if (q8 && pk) {
#define CALL(T) q0_lanes_group(true, true, T, gp, r, valid, off)
                GEMV_CASES(CALL, gp->n)
#undef CALL
            } else if (q8) {
#define CALL(T) q0_lanes_group(true, false, T, gp, r, valid, off)
                GEMV_CASES(CALL, gp->n)
#undef CALL
            } else if (pk) {
#define CALL(T) q0_lanes_group(false, true, T, gp, r, valid, off)
                GEMV_CASES(CALL, gp->n)
#undef CALL
            } else {
#define CALL(T) q0_lanes_group(false, false, T, gp, r, valid, off)
                GEMV_CASES(CALL, gp->n)
#undef CALL
            }
        }
    }
}

/* q4_k / q6_k from the repacked copy: groups of 16 weight rows (the last one partial), each
 * through every pass of activation rows while its bytes are still in L1/L2. */
static void kq_lanes(const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    const bool q6 = g->type == CLARA_TYPE_Q6_K;
    for (uint64_t r = r0; r < r1; r += 16) {
        uint32_t valid = r1 - r < 16 ? (uint32_t)(r1 - r) : 16;
        for (uint32_t t0 = 0; t0 < g->n; t0 += CLARA_GEMV_PASS_ROWS) {
            clara_gemv_args p = pass_rows(g, t0);
            if (q6) {
#define CALL(T) kq_lanes_group(true, T, &p, r, valid)
                GEMV_CASES(CALL, p.n)
#undef CALL
            } else {
#define CALL(T) kq_lanes_group(false, T, &p, r, valid)
                GEMV_CASES(CALL, p.n)
#undef CALL
            }
        }
    }
}

/* Each pass's activation rows are those of g from row t0 on: a row's arithmetic is the same in
 * every pass and at every pass size, so its output does not depend on how many rows there are. */
void clara_gemv_avx512(const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    if (g->type == CLARA_TYPE_Q4_0 || g->type == CLARA_TYPE_Q8_0) {
        q0_lanes(g, r0, r1);
        return;
    }
    if (g->lanes) { /* q4_k / q6_k repacked; gemv.c: tasks start at whole groups */
        kq_lanes(g, r0, r1);
        return;
    }
    if (g->n <= CLARA_GEMV_PASS_ROWS) {
        gemv_pass(g, r0, r1);
        return;
    }
    for (uint64_t c0 = r0; c0 < r1; c0 += GEMV_CHUNK_ROWS) {
        uint64_t c1 = c0 + GEMV_CHUNK_ROWS < r1 ? c0 + GEMV_CHUNK_ROWS : r1;
        for (uint32_t t0 = 0; t0 < g->n; t0 += CLARA_GEMV_PASS_ROWS) {
            clara_gemv_args p = pass_rows(g, t0);
            gemv_pass(&p, c0, c1);
        }
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
