/* gemv.c - the decode GEMV driver (gemv.h): re-arranges the quantized activation rows for the
 * AVX-512 kernels (gemv_avx512.c) once per call and splits the weight rows over the pool with
 * matmul's rows-per-task rule. */
#include "cpu/gemv.h"

#include <string.h>

#include "base/fp16.h"
#include "cpu/matmul.h"

static int16_t i16at(const uint8_t *p) {
    return (int16_t)(uint16_t)(p[0] | p[1] << 8);
}

/* A 16-bit value in the low half of a 32-bit lane, 0 above: the lane vpdpwssd multiplies by a
 * weight-side lane that is (value, 0) as well. */
static int32_t lane16(int v) {
    return (int32_t)(uint16_t)(int16_t)v;
}

/* q8_0 row -> q4_0 / q8_0 layout: per block pair the codes in the order the kernel holds the
 * weights (q4_0: first halves of both blocks, then the second halves; q8_0: as they are). */
static void prep_q0(bool q8, const uint8_t *xq, size_t nb, int8_t *A, int32_t *C, float *DA) {
    int off = q8 ? 128 : 8;
    for (size_t p = 0; p < nb / 2; p++) {
        const int8_t *a0 = (const int8_t *)(xq + 2 * p * 34 + 2), *a1 = a0 + 34;
        int8_t *o = A + 64 * p;
        if (q8) {
            memcpy(o, a0, 32), memcpy(o + 32, a1, 32);
        } else {
            memcpy(o, a0, 16), memcpy(o + 16, a1, 16), memcpy(o + 32, a0 + 16, 16);
            memcpy(o + 48, a1 + 16, 16);
        }
        for (int l = 0; l < 16; l++)
            C[16 * p + l] = -off * (o[4 * l] + o[4 * l + 1] + o[4 * l + 2] + o[4 * l + 3]);
    }
    for (size_t b = 0; b < nb; b++) DA[b] = clara_f16_le(xq + 34 * b);
}

/* q8_k row (f32 d, 256 codes, 16 int16 bsums per block) -> q4_k layout: the nibbles of a
 * 64-byte load of q4_k codes are sub-blocks (0, 2) low, (1, 3) high; the next load's (4, 6),
 * (5, 7). |B_j| <= 32 * 128 fits 16 bits. */
static void prep_q4_k(const uint8_t *xq, size_t nb, int8_t *A, int32_t *C, float *DA) {
    static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = xq + 292 * b;
        for (int i = 0; i < 8; i++) memcpy(A + 256 * b + 32 * i, blk + 4 + 32 * order[i], 32);
        for (int j = 0; j < 8; j++) {
            C[16 * b + j] = 0;
            C[16 * b + 8 + j] = lane16(i16at(blk + 260 + 4 * j) + i16at(blk + 262 + 4 * j));
        }
        DA[2 * b] = clara_f32_le(blk), DA[2 * b + 1] = -clara_f32_le(blk);
    }
}

/* q8_k row -> q6_k layout: codes in order, the bsums (per 16, as the q6_k sub-blocks) negated. */
static void prep_q6_k(const uint8_t *xq, size_t nb, int8_t *A, int32_t *C, float *DA) {
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = xq + 292 * b;
        memcpy(A + 256 * b, blk + 4, 256);
        for (int j = 0; j < 16; j++) C[16 * b + j] = lane16(-i16at(blk + 260 + 2 * j));
        DA[b] = clara_f32_le(blk);
    }
}

typedef struct {
    clara_gemv_args g;
    uint64_t rows, rows_per_task;
} gemv_job;

static void gemv_task(void *arg, size_t task, int thread) {
    (void)thread;
    const gemv_job *j = arg;
    uint64_t r0 = task * j->rows_per_task;
    uint64_t r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    clara_gemv_avx512(&j->g, r0, r1);
}

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

bool clara_gemv_quant(clara_ctx *ctx, clara_isa isa, const clara_mat *W, const uint8_t *xq,
                      size_t xq_stride, uint32_t n, float *y, bool accumulate, float alpha) {
    if (isa != CLARA_ISA_AVX512 || n == 0 || n > 4) return false;
    /* per unit (a block pair, or a super-block): A bytes, 16 C lanes, DA floats */
    size_t units, a_per, da_per, nb;
    switch (W->type) {
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q8_0:
        nb = (size_t)W->cols / 32;
        if (nb % 4) return false;
        units = nb / 2, a_per = 64, da_per = 2;
        break;
    case CLARA_TYPE_Q4_K:
    case CLARA_TYPE_Q6_K:
        nb = (size_t)W->cols / 256;
        units = nb, a_per = 256, da_per = W->type == CLARA_TYPE_Q4_K ? 2 : 1;
        break;
    default:
        return false;
    }
    size_t a_b = align64(units * a_per), c_b = align64(units * 64),
           da_b = align64(units * da_per * 4);
    uint8_t *base = clara_ctx_scratch(ctx, (a_b + c_b + da_b) * n);
    if (!base) return false;
    ctx->qg_acts.valid = false; /* the packed GEMM's activations are overwritten */
    gemv_job j = {.rows = W->rows};
    j.g = (clara_gemv_args){.type = W->type,
                            .W = W->data,
                            .nb = nb,
                            .n = n,
                            .A = (const int8_t *)base,
                            .C = (const int32_t *)(base + a_b * n),
                            .DA = (const float *)(base + (a_b + c_b) * n),
                            .a_stride = a_b,
                            .c_stride = c_b / 4,
                            .da_stride = da_b / 4,
                            .y = y,
                            .ldy = (size_t)W->rows,
                            .accumulate = accumulate,
                            .alpha = alpha};
    for (uint32_t t = 0; t < n; t++) {
        const uint8_t *x = xq + t * xq_stride;
        int8_t *A = (int8_t *)base + t * a_b;
        int32_t *C = (int32_t *)(base + a_b * n) + t * j.g.c_stride;
        float *DA = (float *)(base + (a_b + c_b) * n) + t * j.g.da_stride;
        switch (W->type) {
        case CLARA_TYPE_Q4_K:
            prep_q4_k(x, nb, A, C, DA);
            break;
        case CLARA_TYPE_Q6_K:
            prep_q6_k(x, nb, A, C, DA);
            break;
        default:
            prep_q0(W->type == CLARA_TYPE_Q8_0, x, nb, A, C, DA);
        }
    }
    j.rows_per_task = clara_matmul_rows_per_task(ctx, W, n);
    clara_pool_run(ctx->pool, (size_t)((W->rows + j.rows_per_task - 1) / j.rows_per_task),
                   gemv_task, &j);
    return true;
}
