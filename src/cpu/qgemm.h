/* qgemm.h - the prefill GEMM for quantized weights: y = x · Wᵀ for many activation rows at once,
 * as integer (u8 x s8) dot products on unpacked weight panels.
 *
 * Every supported weight type is viewed the same way: blocks of B elements (32, or 16 for q6_k)
 * whose values are x = s*(q - off) - m, with unsigned codes q (0..255), a per-type integer offset
 * off, and a per-(row, block) f32 scale s and min m (m = 0 except for the asymmetric types q4_1,
 * q5_1, q4_k, q5_k). A task unpacks a few weight rows once into a panel where the codes of RG
 * rows x 4 consecutive k are one vector, so one VNNI dpbusd computes RG rows x 4 k for one
 * activation row, with the activation's 4 bytes broadcast; a task takes up to 4 panels and runs
 * each tile of activation rows through all of them, reading the tile from memory once.
 * The activations are quantized to the weight type's partner format exactly as the reference
 * does (q8_0 / q8_1 / q8_k) and re-arranged into codes plus per-block scale dx, -off*sum(codes)
 * (the offset correction, folded into the integer sum's start value) and dx*sum(codes) (for the
 * min term).
 *
 * Per output element: for each block in increasing order, the exact integer sum of the block,
 * then acc = fma(float(isum), s*dx, acc), then acc -= m*(dx*asum) for asymmetric types. With
 * q8_k activations (q4_k, q5_k, q6_k, q8_k weights), whose scale dx is one per super-block of
 * 256, dx is applied once per super-block instead: part = fma(float(isum), s, part) (then part -=
 * m*asum) over its blocks from part = 0, then acc = fma(part, dx, acc); this saves the s*dx
 * product of every block (bench_matmul on Zen 4: q4_k +4%, q6_k +12%). That order does not depend
 * on the tiling, the number of activation rows or the thread count. It is the reference integer dot
 * with the scales applied per block in f32 (a different rounding order than the reference's sum;
 * the differential tests bound it). */
#ifndef CLARA_CPU_QGEMM_H
#define CLARA_CPU_QGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/dispatch.h"
#include "cpu/matmul.h"
#include "cpu/kctx.h"

/* How a weight type is unpacked. */
typedef struct {
    uint32_t B;    /* elements per scale block: 16 or 32 */
    int32_t off;   /* integer offset subtracted from the codes */
    bool has_min;  /* a per-block min term */
    int act_type;  /* partner activation format (clara_type) */
    uint32_t bits; /* largest code < 2^bits (8 for q8_0: the AVX2 kernel needs <= 7) */
    uint32_t sb;   /* blocks per super-block whose dx is applied once (q8_k partner), else 0;
                    * derived by clara_qg_type_get */
} clara_qg_type;

/* The unpacking of weight type t; false if the packed GEMM does not support it. */
bool clara_qg_type_get(clara_type t, clara_qg_type *out);

/* Activations re-arranged for the kernels: n rows of K codes, and per (row, block) arrays with
 * row stride nb = K / B; the rows are padded with zero rows (codes and per-block values 0) up to
 * a multiple of QG_TOKEN_PAD, which kernels working in whole tiles of tokens may read. The codes
 * are rows (row stride K) or, with tile = 16, tiles of 16 rows, block after block: token t's
 * block b at ((t / 16) * nb + b) * 16 * B + (t % 16) * B, so that a block of a tile is 16 * B
 * consecutive bytes. */
#define QG_TOKEN_PAD 16
typedef struct {
    const int8_t *aq;
    const float *dx;     /* block scale */
    const int32_t *aoff; /* -off * sum(codes): the start value of the block's integer sum */
    const float *dxa;    /* dx * sum(codes), for the min term (types with sb: sum(codes)) */
    size_t K, nb;
    uint32_t tile; /* 0: rows; QG_TOKEN_PAD: tiles */
} clara_qg_acts;

#define QG_DELTA_MAX_K 32 /* LoRA rank the packed GEMM fuses (larger: separate products) */

/* A LoRA delta on one panel's rows (clara_lora_delta): tokens [t0, t0 + n) of the call get
 * scale * (t[token] · Bᵀ), with the panel's rows of B as f32 transposed, bt[k][G*RG]. */
typedef struct {
    uint32_t t0, n, k;
    const float *t; /* [n][k] */
    const float *bt;
    float scale;
} clara_qg_delta;

/* One weight panel: G groups of RG rows, all K columns. codes: [K/4][G][RG][4] bytes;
 * s, m: [nb][G][RG] f32. Rows past the matrix have s = m = 0 (and B rows 0). */
typedef struct {
    const uint8_t *codes;
    const float *s, *m;
    uint32_t groups, group_rows;
    const clara_qg_delta *deltas; /* added to the outputs before they are stored */
    int n_deltas;
} clara_qg_panel;

/* Re-arranges one activation row already quantized to the partner format (xq) into row t of
 * the acts arrays (writable views of clara_qg_acts): its block b's codes at aq + b * block_stride
 * (B for a row of the row layout). */
void clara_qg_pack_act(const clara_qg_type *qt, const uint8_t *xq, size_t K, int8_t *aq,
                       size_t block_stride, float *dx, int32_t *aoff, float *dxa);

/* Kernel: for tokens [0, n) of acts and the G*RG rows of each of the np panels p[0..np) (rows
 * counted on across them: panel i's row j is row i*G*RG + j), out[t * ldo + row] = dot(row,
 * token t) for row < rows_valid (> (np - 1)*G*RG), plus each panel's LoRA deltas with the
 * arithmetic of the float short-K kernel (an FMA chain over k from 0, then out + scale * chain).
 * Tokens go in tiles, each tile through all np panels before the next: its activations are read
 * from memory once per np panels. */
typedef void (*clara_qg_kernel_fn)(const clara_qg_type *qt, const clara_qg_panel *p, int np,
                                   const clara_qg_acts *a, uint32_t n, float *y, size_t ldy,
                                   uint32_t rows_valid, bool accumulate, float alpha);

/* Unpacks weight row `row` of a type clara_qg_type_get accepts (K columns) into codes[K] and
 * the per-block s[K/B], m[K/B]. */
typedef void (*clara_qg_unpack_fn)(clara_type t, const uint8_t *row, size_t K, uint8_t *codes,
                                   float *s, float *m);
/* rows [2 * group_rows][K] codes -> the panel's [K/4][2 * group_rows] u32 layout. */
typedef void (*clara_qg_interleave_fn)(const uint8_t *rows, size_t K, uint8_t *panel);

/* One group of 16 rows of a repacked q4_0 / q8_0 / q4_k / q6_k matrix (cpu/repack.h: grp, K
 * columns) as group gi of a 2-group panel: its codes into codes[K/4][2][16][4], its 16 scales
 * into s[b][2][16] (b: the type's blocks of 32, or 16 for q6_k) and, for q4_k, its mins into
 * m[b][2][16] (rows repeated past the matrix's end keep theirs: the caller zeroes them). */
typedef void (*clara_qg_lanes_fn)(clara_type t, const uint8_t *grp, size_t K, uint32_t gi,
                                  uint8_t *codes, float *s, float *m);

typedef struct {
    uint32_t group_rows;
    clara_qg_kernel_fn kernel;
    clara_qg_unpack_fn unpack;
    clara_qg_interleave_fn interleave;
    clara_qg_lanes_fn lanes; /* NULL where the level's groups are not the repacked ones */
    /* NULL, or the kernel takes the panel's codes as q - off (int8): this makes them so */
    void (*sign_codes)(uint8_t *codes, size_t bytes, int32_t off);
    uint32_t act_tile; /* the activations' layout the kernel reads (clara_qg_acts.tile) */
} clara_qg_level;

/* The kernels of a level for type qt; false if the level has none. */
bool clara_qg_level_avx512(const clara_qg_type *qt, clara_qg_level *out);
bool clara_qg_level_avx2(const clara_qg_type *qt, clara_qg_level *out);

/* The AVX-512 level's output step for kernels in other files: token tok's outputs of a panel
 * (v: its 2 groups' 2 * 16 floats) plus its LoRA deltas, to rows [0, valid) at o. */
void clara_qg_store_row_avx512(const clara_qg_panel *p, uint32_t tok, const float *v, float *o,
                               uint32_t valid, bool accumulate, float alpha);

/* The packed GEMM on Intel AMX tiles (qgemm_amx.c) for B = 32 types, 2-group panels of 16 rows
 * with signed codes (clara_qg_amx_sign_codes) and activations in tiles (clara_qg_acts.tile =
 * QG_TOKEN_PAD): the AVX-512 level's kernel with the same bits. */
void clara_qg_amx_sign_codes(uint8_t *codes, size_t bytes, int32_t off);
void clara_qg_amx_kernel(const clara_qg_type *qt, const clara_qg_panel *p, int np,
                         const clara_qg_acts *a, uint32_t n, float *y, size_t ldy,
                         uint32_t rows_valid, bool accumulate, float alpha);

/* y[t * W->rows + r] = dot (or += alpha * dot) for t < n, r < W->rows, with the packed kernels of
 * level isa, then the LoRA deltas d (clara_matmul_lora) on each panel's rows. same_x: x holds
 * what it held at the previous call on kc, so activations quantized then for the same
 * pointer, rows, columns and format are reused. False (nothing
 * written) when the type or level has no kernel, memory runs out or an activation row is not
 * finite: the caller then uses another path. */
bool clara_qgemm(cpu_kctx *kc, clara_isa isa, const cpu_mat *W, const float *x, uint32_t n,
                 float *y, bool accumulate, float alpha, const clara_lora_delta *d, int n_d,
                 bool same_x);

#endif
