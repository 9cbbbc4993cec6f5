/* gemv.c - the decode GEMV driver (gemv.h): re-arranges the quantized activation rows for the
 * AVX-512 kernels (gemv_avx512.c) once per call and splits the weight rows over the pool with
 * matmul's rows-per-task rule. */
#include "cpu/gemv.h"

#include <string.h>

#include "base/fp16.h"
#include "cpu/matmul.h"
#include "cpu/params.h"
#include "cpu/repack.h"

static int16_t i16at(const uint8_t *p) {
    return (int16_t)(uint16_t)(p[0] | p[1] << 8);
}

/* A 16-bit value in the low half of a 32-bit lane, 0 above: the lane vpdpwssd multiplies by a
 * weight-side lane that is (value, 0) as well. */
static int32_t lane16(int v) {
    return (int32_t)(uint16_t)(int16_t)v;
}

/* q8_0 row -> the q4_0 / q8_0 lanes kernel's layout: per block of 32 the codes as they are, the
 * start value -off * (sum of the codes) of the block's integer sum, and the f32 scale, as the
 * packed GEMM's clara_qg_pack_act makes them (the same values, so the same sums). */
static void prep_q0(bool q8, const uint8_t *xq, size_t nb, int8_t *A, int32_t *C, float *DA) {
    int off = q8 ? 128 : 8;
    for (size_t b = 0; b < nb; b++) {
        const int8_t *a = (const int8_t *)(xq + 34 * b + 2);
        int32_t sum = 0;
        for (int l = 0; l < 32; l++) sum += a[l];
        memcpy(A + 32 * b, a, 32);
        C[b] = CLARA_GEMV_MAGIC - off * sum;
        DA[b] = clara_f16_le(xq + 34 * b);
    }
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

/* q8_k row -> the repacked q4_k kernel's layout: the codes in order, and per super-block DA the
 * scale d then the 8 sub-blocks' code sums as f32 (the packed GEMM's dx and its min term's
 * sum(codes), clara_qg_pack_act). C is not used. */
static void prep_q4_k_lanes(const uint8_t *xq, size_t nb, int8_t *A, float *DA) {
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = xq + 292 * b;
        const int8_t *q = (const int8_t *)(blk + 4);
        memcpy(A + 256 * b, q, 256);
        DA[16 * b] = clara_f32_le(blk);
        for (int j = 0; j < 8; j++) {
            int32_t sum = 0;
            for (int l = 0; l < 32; l++) sum += q[32 * j + l];
            DA[16 * b + 1 + j] = (float)sum;
        }
        for (int j = 9; j < 16; j++) DA[16 * b + j] = 0.f;
    }
}

/* q8_k row -> the repacked q6_k kernel's layout: the codes in order, C per block of 16 the start
 * value -32 * (sum of its codes) carrying CLARA_GEMV_MAGIC (the packed GEMM's aoff), DA d. */
static void prep_q6_k_lanes(const uint8_t *xq, size_t nb, int8_t *A, int32_t *C, float *DA) {
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = xq + 292 * b;
        const int8_t *q = (const int8_t *)(blk + 4);
        memcpy(A + 256 * b, q, 256);
        for (int j = 0; j < 16; j++) {
            int32_t sum = 0;
            for (int l = 0; l < 16; l++) sum += q[16 * j + l];
            C[16 * b + j] = CLARA_GEMV_MAGIC - 32 * sum;
        }
        DA[b] = clara_f32_le(blk);
    }
}

/* The prepared-activation layout of one weight type: per unit (a block of 32, or a super-block)
 * a_per code bytes, c_per C values and da_per scales; nb blocks per row. */
typedef struct {
    size_t nb, units, a_per, c_per, da_per;
} gemv_shape;

static bool gemv_shape_of(const cpu_mat *W, gemv_shape *s) {
    size_t nb;
    switch (W->type) {
    case CLARA_TYPE_Q4_0:
    case CLARA_TYPE_Q8_0:
        nb = (size_t)W->cols / 32;
        *s = (gemv_shape){nb, nb, 32, 1, 1};
        return true;
    case CLARA_TYPE_Q4_K:
        nb = (size_t)W->cols / 256;
        *s = W->lanes ? (gemv_shape){nb, nb, 256, 0, 16} : (gemv_shape){nb, nb, 256, 16, 2};
        return true;
    case CLARA_TYPE_Q6_K:
        nb = (size_t)W->cols / 256;
        *s = (gemv_shape){nb, nb, 256, 16, 1};
        return true;
    default:
        return false;
    }
}

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

/* Bytes of n prepared rows: A, C and DA arrays, each row's 64-byte aligned. */
static size_t prep_bytes(const gemv_shape *s, uint32_t n) {
    return (align64(s->units * s->a_per) + align64(s->units * s->c_per * 4) +
            align64(s->units * s->da_per * 4)) *
           n;
}

/* Prepares the n rows of xq for W's kernel at base (prep_bytes long) and fills g but for y. */
static void prep_rows(const cpu_mat *W, const gemv_shape *s, const uint8_t *xq, size_t xq_stride,
                      uint32_t n, uint8_t *base, clara_gemv_args *g) {
    size_t a_b = align64(s->units * s->a_per), c_b = align64(s->units * s->c_per * 4);
    size_t da_b = align64(s->units * s->da_per * 4);
    *g = (clara_gemv_args){.type = W->type,
                           .W = W->data,
                           .lanes = W->lanes,
                           .group_bytes = cpu_lanes_group_bytes(W),
                           .nb = s->nb,
                           .n = n,
                           .A = (const int8_t *)base,
                           .C = (const int32_t *)(base + a_b * n),
                           .DA = (const float *)(base + (a_b + c_b) * n),
                           .a_stride = a_b,
                           .c_stride = c_b / 4,
                           .da_stride = da_b / 4};
    for (uint32_t t = 0; t < n; t++) {
        const uint8_t *x = xq + t * xq_stride;
        int8_t *A = (int8_t *)base + t * a_b;
        int32_t *C = (int32_t *)(base + a_b * n) + t * g->c_stride;
        float *DA = (float *)(base + (a_b + c_b) * n) + t * g->da_stride;
        switch (W->type) {
        case CLARA_TYPE_Q4_K:
            if (W->lanes)
                prep_q4_k_lanes(x, s->nb, A, DA);
            else
                prep_q4_k(x, s->nb, A, C, DA);
            break;
        case CLARA_TYPE_Q6_K:
            if (W->lanes)
                prep_q6_k_lanes(x, s->nb, A, C, DA);
            else
                prep_q6_k(x, s->nb, A, C, DA);
            break;
        default:
            prep_q0(W->type == CLARA_TYPE_Q8_0, x, s->nb, A, C, DA);
        }
    }
}

/* matmul's rule; for the lanes kernels (q4_0 / q8_0, repacked q4_k / q6_k) whole groups of 16
 * rows, so that no task ends in a partial group that wastes lanes and the repacked kernels start
 * at a group (the outputs do not depend on the split). */
static uint64_t rows_per_task(const cpu_kctx *kc, const cpu_mat *W, uint32_t n) {
    uint64_t per = clara_matmul_rows_per_task(kc, W, n);
    if (W->type == CLARA_TYPE_Q4_0 || W->type == CLARA_TYPE_Q8_0 || W->lanes)
        per = (per + 15) / 16 * 16;
    return per;
}

/* One parallel region over the rows of several matrices: part i's rows in tasks of
 * rows_per_task[i] rows, numbered from task0[i]. */
typedef struct {
    clara_gemv_args g[CLARA_GEMV_GROUP_MAX];
    uint64_t rows[CLARA_GEMV_GROUP_MAX], rows_per_task[CLARA_GEMV_GROUP_MAX];
    size_t task0[CLARA_GEMV_GROUP_MAX + 1];
    bool amx; /* q4_0 / q8_0 parts on AMX tiles */
} gemv_job;

static void gemv_task(void *arg, size_t task, int thread) {
    (void)thread;
    const gemv_job *j = arg;
    int i = 0;
    while (task >= j->task0[i + 1]) i++;
    uint64_t r0 = (task - j->task0[i]) * j->rows_per_task[i];
    uint64_t r1 = r0 + j->rows_per_task[i] < j->rows[i] ? r0 + j->rows_per_task[i] : j->rows[i];
    const clara_gemv_args *g = &j->g[i];
    if (j->amx && (g->type == CLARA_TYPE_Q4_0 || g->type == CLARA_TYPE_Q8_0))
        clara_gemv_amx_q0(g, r0, r1);
    else
        clara_gemv_avx512(g, r0, r1);
}

bool clara_gemv_quant_group(cpu_kctx *kc, clara_isa isa, const clara_gemv_part *parts, int count,
                            uint32_t n) {
    if (isa != CLARA_ISA_AVX512 || n == 0 || n > CLARA_GEMV_MAX_ROWS || count < 1 ||
        count > CLARA_GEMV_GROUP_MAX)
        return false;
    gemv_shape sh[CLARA_GEMV_GROUP_MAX];
    int prep_of[CLARA_GEMV_GROUP_MAX]; /* the part whose prepared rows part i uses */
    size_t off[CLARA_GEMV_GROUP_MAX], total = 0;
    for (int i = 0; i < count; i++) {
        if (!gemv_shape_of(parts[i].W, &sh[i])) return false;
        prep_of[i] = i;
        for (int k = 0; k < i; k++)
            if (prep_of[k] == k && parts[k].W->type == parts[i].W->type &&
                parts[k].W->cols == parts[i].W->cols && !parts[k].W->lanes == !parts[i].W->lanes &&
                parts[k].xq == parts[i].xq && parts[k].xq_stride == parts[i].xq_stride) {
                prep_of[i] = k;
                break;
            }
        if (prep_of[i] == i) off[i] = total, total += prep_bytes(&sh[i], n);
    }
    uint8_t *base = cpu_kctx_scratch(kc, total);
    if (!base) return false;
    kc->acts.valid = false; /* the packed GEMM's activations are overwritten */
    gemv_job j = {.task0 = {0}, .amx = n >= CLARA_GEMV_AMX_MIN_ROWS && clara_amx_active()};
    const cpu_params *P = cpu_params_get();
    for (int i = 0; i < count; i++) {
        const clara_gemv_part *p = &parts[i];
        if (prep_of[i] == i)
            prep_rows(p->W, &sh[i], p->xq, p->xq_stride, n, base + off[i], &j.g[i]);
        else { /* the same type, width and rows of x */
            j.g[i] = j.g[prep_of[i]], j.g[i].W = p->W->data, j.g[i].lanes = p->W->lanes;
        }
        j.g[i].y = p->y, j.g[i].ldy = (size_t)p->W->rows;
        j.g[i].accumulate = p->accumulate, j.g[i].alpha = p->alpha;
        j.g[i].pf_bytes = P->pf_bytes, j.g[i].pf_groups = P->pf_groups;
        j.g[i].pf_kq = P->pf_kq;
        j.g[i].pf_lanes = P->pf_lanes;
        j.rows[i] = p->W->rows;
        j.rows_per_task[i] = rows_per_task(kc, p->W, n);
        j.task0[i + 1] =
            j.task0[i] + (size_t)((j.rows[i] + j.rows_per_task[i] - 1) / j.rows_per_task[i]);
    }
    clara_pool_run(kc->pool, j.task0[count], gemv_task, &j);
    return true;
}

bool clara_gemv_quant(cpu_kctx *kc, clara_isa isa, const cpu_mat *W, const uint8_t *xq,
                      size_t xq_stride, uint32_t n, float *y, bool accumulate, float alpha) {
    clara_gemv_part p = {W, xq, xq_stride, y, accumulate, alpha};
    return clara_gemv_quant_group(kc, isa, &p, 1, n);
}
