/* gemv_amx.c - the q4_0 / q8_0 decode GEMV of gemv.h on Intel AMX (AMX-INT8 tiles), for CPUs
 * that have it. The weight side is the VNNI kernel's (gemv_lanes.inc): per block of 32 codes, 16
 * weight rows transposed so that 64 bytes hold 4 consecutive codes of each row — which is exactly
 * the layout AMX wants for its second operand. One TDPBSUD then takes the block's products for
 * every activation row at once (the prepared activation codes are the first operand, loaded
 * straight from their rows), where the VNNI kernel spends 8 dpbusd per activation row; the integer
 * sums are exact either way, and each is scaled and added in the same order with the same
 * operations, so the outputs have the same bits as the VNNI kernel's at any number of rows.
 * The tile state is configured per thread (rows = activation rows) and kept between calls.
 * Compiled for AVX-512 + AMX (Makefile flags; the pragma covers builds with common flags). */
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
#include "cpu/gemv.h"
#include "cpu/kernels.h"
#include "cpu/repack.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

#include "cpu/gemv_lanes.inc"

/* Tiles. A product's result is read back three blocks after it is issued, and its sums are
 * scaled one block later still: AMX's latencies (tile loads, the product, the store, and a vector
 * load of what a tile store wrote) are long, and only independent products in flight hide them.
 * C: four (activation rows x 16 int32); A: two (activation rows x 32 codes); B: two (8 x 64 bytes:
 * 32 codes x 16 weight rows). Numbers, not an enum: the tile intrinsics paste their arguments into
 * the instruction text. */
#define TILE_A_0     4
#define TILE_A_1     5
#define TILE_A_2     4
#define TILE_A_3     5
#define TILE_B_0     6
#define TILE_B_1     7
#define TILE_B_2     6
#define TILE_B_3     7
#define TILE_PREV3_0 1 /* the C tile of step k - 3 */
#define TILE_PREV3_1 2
#define TILE_PREV3_2 3
#define TILE_PREV3_3 0

/* The tiles for n activation rows (the calling thread's keep them between calls: cpu/amx.h). */
static void configure_tiles(uint32_t n) {
    if (cpu_amx_tiles_hold(n)) return;
    _Alignas(64) cpu_tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 4; i++) c.rows[i] = (uint8_t)n, c.colsb[i] = 64;
    for (int i = TILE_A_0; i <= TILE_A_1; i++) c.rows[i] = (uint8_t)n, c.colsb[i] = 32;
    for (int i = TILE_B_0; i <= TILE_B_1; i++) c.rows[i] = 8, c.colsb[i] = 64;
    cpu_amx_tiles_use(&c, n);
}

/* One group's state while its blocks go through the pipeline. */
typedef struct {
    const clara_gemv_args *g;
    lanes_src src;                                          /* where the group's blocks are */
    _Alignas(64) uint8_t codes[4][512];                     /* staged codes of blocks b (mod 4) */
    _Alignas(64) int32_t sums[2][CLARA_GEMV_MAX_ROWS * 16]; /* stored sums of blocks b (mod 2) */
} amx_pipe;

/* Block b's codes into B's layout (codes[b % 4]), and the bytes ahead prefetched. */
ALWAYS_INLINE void stage_codes(bool Q8, bool PK, amx_pipe *p, size_t b) {
    __m512i X[8];
    source_codes(Q8, PK, &p->src, b, X);
    uint8_t *dst = p->codes[b & 3];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) _mm512_store_si512((void *)(dst + 64 * k), X[k]);
    source_prefetch(PK, &p->src, p->g, b);
}

/* Scales block b's stored sums (sums[b % 2], 16 int32 per activation row) into acc. */
ALWAYS_INLINE void scale_block(bool PK, int T, const amx_pipe *p, size_t b, __m512 *acc) {
    const clara_gemv_args *g = p->g;
    __m512 s = source_scales(PK, &p->src, b);
    const int32_t *sums = p->sums[b & 1];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        __m512i v = _mm512_load_si512((const void *)(sums + 16 * t));
        v = _mm512_add_epi32(v, _mm512_set1_epi32(g->C[(size_t)t * g->c_stride + b]));
        acc[t] = lanes_fma(v, s, g->DA[(size_t)t * g->da_stride + b], acc[t]);
    }
}

/* Step b of the pipeline, k = b % 4: block b's product into tile C k (its codes staged two steps
 * ago), block b+2's codes staged, block b-4's sums scaled, block b-3's sums stored. */
#define AMX_STEP(k)                                                                                \
    do {                                                                                           \
        if (b < nb) {                                                                              \
            _tile_zero(k);                                                                         \
            _tile_loadd(TILE_A_##k, g->A + 32 * b, g->a_stride);                                   \
            _tile_loadd(TILE_B_##k, p->codes[k], 64);                                              \
            _tile_dpbsud(k, TILE_A_##k, TILE_B_##k);                                               \
            if (b + 2 < nb) stage_codes(Q8, PK, p, b + 2);                                         \
        }                                                                                          \
        if (b >= 4) scale_block(PK, T, p, b - 4, acc);                                             \
        if (b >= 3 && b - 3 < nb) _tile_stored(TILE_PREV3_##k, p->sums[(b - 3) & 1], 64);          \
    } while (0)

/* One group of 16 weight rows (as q0_lanes_group in gemv_avx512.c) for all T activation rows. */
ALWAYS_INLINE void amx_group(bool Q8, bool PK, int T, const clara_gemv_args *g, uint64_t r,
                             uint32_t valid, const int32_t off[16]) {
    _Alignas(64) amx_pipe pipe;
    amx_pipe *p = &pipe;
    p->g = g, p->src = lanes_source(Q8, PK, g, r, off);
    const size_t nb = g->nb;
    __m512 acc[CLARA_GEMV_MAX_ROWS];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < 2 && b < nb; b++) stage_codes(Q8, PK, p, b);
    for (size_t b = 0; b < nb + 4; b++) {
        switch (b & 3) {
        case 0:
            AMX_STEP(0);
            break;
        case 1:
            AMX_STEP(1);
            break;
        case 2:
            AMX_STEP(2);
            break;
        default:
            AMX_STEP(3);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) lanes_store(g, (uint32_t)t, r, valid, acc[t]);
}

#define AMX_CASE(Q8, PK, T)                                                                        \
    case T:                                                                                        \
        amx_group(Q8, PK, T, g, r, valid, off);                                                    \
        break;
#define AMX_CASES(Q8, PK)                                                                          \
    switch (g->n) {                                                                                \
        AMX_CASE(Q8, PK, 9)                                                                        \
        AMX_CASE(Q8, PK, 10)                                                                       \
        AMX_CASE(Q8, PK, 11)                                                                       \
        AMX_CASE(Q8, PK, 12)                                                                       \
        AMX_CASE(Q8, PK, 13)                                                                       \
        AMX_CASE(Q8, PK, 14)                                                                       \
        AMX_CASE(Q8, PK, 15)                                                                       \
    default:                                                                                       \
        amx_group(Q8, PK, 16, g, r, valid, off);                                                   \
    }

_Static_assert(CLARA_GEMV_MAX_ROWS == 16 && CLARA_GEMV_AMX_MIN_ROWS == 9,
               "AMX_CASES instantiates 9..16 rows");

void clara_gemv_amx_q0(const clara_gemv_args *g, uint64_t r0, uint64_t r1) {
    if (g->n < CLARA_GEMV_AMX_MIN_ROWS) { /* not instantiated: the VNNI kernel is faster there */
        clara_gemv_avx512(g, r0, r1);
        return;
    }
    const bool q8 = g->type == CLARA_TYPE_Q8_0, pk = g->lanes && r0 % 16 == 0;
    const size_t row_bytes = g->nb * (q8 ? 34 : 18);
    configure_tiles(g->n);
    for (uint64_t r = r0; r < r1; r += 16) {
        uint32_t valid = r1 - r < 16 ? (uint32_t)(r1 - r) : 16;
        _Alignas(64) int32_t off[16];
        for (uint32_t i = 0; i < 16; i++)
            off[i] = (int32_t)((i < valid ? i : valid - 1) * row_bytes);
        if (q8 && pk) {
            AMX_CASES(true, true)
        } else if (q8) {
            AMX_CASES(true, false)
        } else if (pk) {
            AMX_CASES(false, true)
        } else {
            AMX_CASES(false, false)
        }
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
