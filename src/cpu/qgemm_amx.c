/* qgemm_amx.c - the packed GEMM of qgemm.h on Intel AMX tiles, for the weight types with blocks of
 * 32 (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k). One TDPBSSD takes a block's products for 16
 * tokens x 16 weight rows, where the VNNI kernel spends 8 dpbusd per token; the integer sums are
 * exact either way (the panel's codes are signed, q - off, so a sum needs no offset correction),
 * and each is converted, scaled and added in the VNNI kernel's order with its operations, so the
 * outputs have the same bits. The activations come in tiles of 16 tokens, a block of a tile 512
 * consecutive bytes (clara_qg_acts.tile): rows 4096 bytes apart all fall in one set of the L1. A
 * product's sums are stored two blocks after it is issued and scaled two blocks later still: AMX's
 * latencies are long and only products in flight hide them. Tokens go in tiles of 16 (padded with
 * zero rows: qgemm.h), each tile through every group of the task's panels. Compiled for AVX-512 +
 * AMX (Makefile flags; the pragma covers builds with common flags). */
#if defined(__clang__)
#pragma clang attribute push(                                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c,amx-tile,amx-int8"))),    \
    apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c,amx-tile,amx-int8")
#endif

#include <immintrin.h>
#include <string.h>

#include "cpu/amx.h"
#include "cpu/qgemm.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

enum { TOK = 16, RG = 16 }; /* tokens per tile, weight rows per group */

/* Tiles 0-3: a block's sums (16 tokens x 16 int32), in turn; 4 / 5: the tokens' 32 codes of a
 * block; 6 / 7: a group's 32 codes of a block (8 rows of 4 codes x 16 weight rows). The codes'
 * tiles alternate with the block's parity, so a product need not wait for the one before it to
 * have read its operands. */
static void configure_tiles(void) {
    if (cpu_amx_tiles_hold(CPU_AMX_TILES_QGEMM)) return;
    _Alignas(64) cpu_tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 4; i++) c.rows[i] = TOK, c.colsb[i] = 64;
    for (int i = 4; i < 6; i++) c.rows[i] = TOK, c.colsb[i] = 32;
    for (int i = 6; i < 8; i++) c.rows[i] = 8, c.colsb[i] = 64;
    cpu_amx_tiles_use(&c, CPU_AMX_TILES_QGEMM);
}

/* One group of a panel against one tile of tokens. */
typedef struct {
    const int8_t *a;       /* the tile's codes (clara_qg_acts.tile = 16): block b at b * 16 * 32 */
    const uint8_t *w;      /* the group's codes of block 0: 8 rows wstride apart, blocks bstep */
    const float *s, *m;    /* the group's scales and mins of block 0, blocks sstep apart */
    const float *dx, *dxa; /* the tile's first token's block values (row stride nb) */
    size_t nb, wstride, bstep, sstep;
} amx_group;

/* Block b's product into tile C, from code tiles TA, TB (numbers: the tile intrinsics paste
 * their arguments into the instruction text). */
#define AMX_ISSUE(C, TA, TB, g, b)                                                                 \
    do {                                                                                           \
        _tile_zero(C);                                                                             \
        _tile_loadd(TA, (g)->a + (b) * (TOK * 32), 32);                                            \
        _tile_loadd(TB, (g)->w + (b) * (g)->bstep, (g)->wstride);                                  \
        _tile_dpbssd(C, TA, TB);                                                                   \
    } while (0)

/* acc[t] of block b from its stored sums: the VNNI kernel's fma(float(isum), s*dx, acc), then
 * its acc - m*(dx*asum) for types with a min. With super-blocks of SB blocks (q8_k activations,
 * qgemm.h) its qg_tile_sb instead: part = fma(float(isum), s, part) from part = 0 at a
 * super-block's first block (then part - m*asum), and acc = fma(part, dx, acc) after its last. */
ALWAYS_INLINE void amx_scale(bool MIN, int SB, const amx_group *g, const int32_t *sums, size_t b,
                             __m512 acc[TOK], __m512 part[TOK]) {
    const __m512 s = _mm512_loadu_ps(g->s + b * g->sstep);
    if (SB) {
        const bool first = b % (size_t)SB == 0, last = b % (size_t)SB == (size_t)SB - 1;
#pragma GCC unroll 16
        for (int t = 0; t < TOK; t++) {
            __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(sums + RG * t)));
            part[t] = _mm512_fmadd_ps(f, s, first ? _mm512_setzero_ps() : part[t]);
        }
        if (MIN) {
            const __m512 m = _mm512_loadu_ps(g->m + b * g->sstep);
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++)
                part[t] = _mm512_fnmadd_ps(m, _mm512_set1_ps(g->dxa[t * g->nb + b]), part[t]);
        }
        if (last)
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++)
                acc[t] = _mm512_fmadd_ps(part[t], _mm512_set1_ps(g->dx[t * g->nb + b]), acc[t]);
        return;
    }
#pragma GCC unroll 16
    for (int t = 0; t < TOK; t++) {
        __m512 d = _mm512_set1_ps(g->dx[t * g->nb + b]);
        __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(sums + RG * t)));
        acc[t] = _mm512_fmadd_ps(f, _mm512_mul_ps(s, d), acc[t]);
    }
    if (MIN) {
        const __m512 m = _mm512_loadu_ps(g->m + b * g->sstep);
#pragma GCC unroll 16
        for (int t = 0; t < TOK; t++)
            acc[t] = _mm512_fnmadd_ps(m, _mm512_set1_ps(g->dxa[t * g->nb + b]), acc[t]);
    }
}

/* Step U of 4 (block b + U): issue block b + U + 2 into tile NEXT with code tiles TA, TB, store
 * block b + U's sums, scale block b + U - 2's. */
#define AMX_STEP(U, NEXT, TA, TB)                                                                  \
    do {                                                                                           \
        size_t bu = b + (U);                                                                       \
        if (bu >= nb) break;                                                                       \
        if (bu + 2 < nb) AMX_ISSUE(NEXT, TA, TB, g, bu + 2);                                       \
        _tile_stored(U, sums[U], 64);                                                              \
        if (bu >= 2) amx_scale(MIN, SB, g, sums[((U) + 2) % 4], bu - 2, acc, part);                \
    } while (0)

ALWAYS_INLINE void amx_group_pass(bool MIN, int SB, const amx_group *g, __m512 acc[TOK]) {
    _Alignas(64) int32_t sums[4][TOK * RG];
    __m512 part[TOK]; /* SB: the super-block's sum so far (amx_scale) */
    const size_t nb = g->nb;
#pragma GCC unroll 16
    for (int t = 0; t < TOK; t++) acc[t] = part[t] = _mm512_setzero_ps();
    AMX_ISSUE(0, 4, 6, g, 0);
    if (nb > 1) AMX_ISSUE(1, 5, 7, g, 1);
    for (size_t b = 0; b < nb; b += 4) {
        AMX_STEP(0, 2, 4, 6);
        AMX_STEP(1, 3, 5, 7);
        AMX_STEP(2, 0, 4, 6);
        AMX_STEP(3, 1, 5, 7);
    }
    if (nb >= 2) amx_scale(MIN, SB, g, sums[(nb - 2) % 4], nb - 2, acc, part);
    amx_scale(MIN, SB, g, sums[(nb - 1) % 4], nb - 1, acc, part);
}

ALWAYS_INLINE void amx_run(bool MIN, int SB, const clara_qg_panel *p, int np,
                           const clara_qg_acts *a, uint32_t n, float *y, size_t ldy, uint32_t valid,
                           bool accumulate, float alpha) {
    const size_t G = p[0].groups, nb = a->nb;
    configure_tiles();
    for (uint32_t t0 = 0; t0 < n; t0 += TOK) {
        const uint32_t tn = n - t0 < TOK ? n - t0 : TOK;
        for (int i = 0; i < np; i++) {
            _Alignas(64) float out[TOK][2 * RG];
            for (size_t gi = 0; gi < G; gi++) {
                const amx_group g = {.a = a->aq + (size_t)t0 * a->K,
                                     .w = p[i].codes + gi * 64,
                                     .s = p[i].s + gi * RG,
                                     .m = p[i].m + gi * RG,
                                     .dx = a->dx + (size_t)t0 * nb,
                                     .dxa = a->dxa + (size_t)t0 * nb,
                                     .nb = nb,
                                     .wstride = G * 64,
                                     .bstep = 8 * G * 64,
                                     .sstep = G * RG};
                __m512 acc[TOK];
                amx_group_pass(MIN, SB, &g, acc);
#pragma GCC unroll 16
                for (int t = 0; t < TOK; t++) _mm512_store_ps(out[t] + gi * RG, acc[t]);
            }
            const uint32_t first = (uint32_t)i * 2 * RG, left = valid - first;
            for (uint32_t t = 0; t < tn; t++)
                clara_qg_store_row_avx512(&p[i], t0 + t, out[t], y + first + (size_t)(t0 + t) * ldy,
                                          left < 2 * RG ? left : 2 * RG, accumulate, alpha);
        }
    }
}

void clara_qg_amx_sign_codes(uint8_t *codes, size_t bytes, int32_t off) {
    const __m512i o = _mm512_set1_epi8((char)off);
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) {
        __m512i c = _mm512_loadu_si512((const void *)(codes + i));
        _mm512_storeu_si512((void *)(codes + i), _mm512_sub_epi8(c, o));
    }
    for (; i < bytes; i++) codes[i] = (uint8_t)(codes[i] - (uint8_t)off);
}

void clara_qg_amx_kernel(const clara_qg_type *qt, const clara_qg_panel *p, int np,
                         const clara_qg_acts *a, uint32_t n, float *y, size_t ldy,
                         uint32_t rows_valid, bool accumulate, float alpha) {
    /* super-blocks of 8 blocks of 32: q4_k, q5_k (with a min) and q8_k */
    if (qt->has_min && qt->sb)
        amx_run(true, 8, p, np, a, n, y, ldy, rows_valid, accumulate, alpha);
    else if (qt->has_min)
        amx_run(true, 0, p, np, a, n, y, ldy, rows_valid, accumulate, alpha);
    else if (qt->sb)
        amx_run(false, 8, p, np, a, n, y, ldy, rows_valid, accumulate, alpha);
    else
        amx_run(false, 0, p, np, a, n, y, ldy, rows_valid, accumulate, alpha);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
