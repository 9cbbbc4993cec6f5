/* repack.c - q4_0 / q8_0 / q4_k / q6_k matrices into the decode kernels' group order (repack.h). */
#include "cpu/repack.h"

#include <string.h>

bool cpu_lanes_type(clara_type t) {
    return t == CLARA_TYPE_Q4_0 || t == CLARA_TYPE_Q8_0 || t == CLARA_TYPE_Q4_K ||
           t == CLARA_TYPE_Q6_K;
}

size_t cpu_lanes_group_bytes(const cpu_mat *W) {
    if (W->type == CLARA_TYPE_Q4_K) return (size_t)(W->cols / 256) * CPU_LANES_KQ_SB_BYTES;
    if (W->type == CLARA_TYPE_Q6_K) return (size_t)(W->cols / 256) * CPU_LANES_Q6_SB_BYTES;
    return (size_t)(W->cols / 32 + 1) / 2 * cpu_lanes_pair_bytes(W->type);
}

size_t cpu_lanes_bytes(const cpu_mat *W) {
    const uint64_t unit = W->type == CLARA_TYPE_Q4_K || W->type == CLARA_TYPE_Q6_K ? 256 : 32;
    if (!cpu_lanes_type(W->type) || W->cols % unit || W->rows == 0) return 0;
    uint64_t groups = (W->rows + CPU_LANES_ROWS - 1) / CPU_LANES_ROWS;
    return (size_t)groups * cpu_lanes_group_bytes(W);
}

/* Block b of the 16 rows of group g into its place in the group at dst. */
static void pack_block(const cpu_mat *W, uint64_t g, size_t b, uint8_t *dst) {
    const bool q8 = W->type == CLARA_TYPE_Q8_0;
    const size_t bb = q8 ? 34 : 18, nb = (size_t)W->cols / 32, cb = cpu_lanes_code_bytes(W->type);
    uint8_t *scales = dst + cpu_lanes_scales_off(W->type, b);
    uint8_t *codes = dst + cpu_lanes_codes_off(W->type, b);
    for (uint64_t i = 0; i < CPU_LANES_ROWS; i++) {
        uint64_t r = g * CPU_LANES_ROWS + i;
        if (r >= W->rows) r = W->rows - 1;
        const uint8_t *blk = (const uint8_t *)W->data + (r * nb + b) * bb;
        memcpy(scales + 2 * i, blk, 2);
        for (size_t v = 0; v < cb / 64; v++)
            for (int j = 0; j < 4; j++) {
                uint8_t c = blk[2 + 4 * v + j];
                codes[64 * v + 4 * i + j] = q8 ? (uint8_t)(c ^ 0x80) : c;
            }
    }
}

/* Row i's 32 codes (4 bits kept of each) as q4_0's 4 nibble vectors at vecs (repack.h): byte
 * 4i+c of vector v = code 4v+c (low nibble) and code 16+4v+c (high). */
static void put_nibble_pairs(const uint8_t code[32], uint64_t i, uint8_t *vecs) {
    for (int v = 0; v < 4; v++)
        for (int c = 0; c < 4; c++)
            vecs[64 * v + 4 * i + c] =
                (uint8_t)((code[4 * v + c] & 15) | (code[16 + 4 * v + c] & 15) << 4);
}

/* Code l (0..31) of sub-block j of a q4_k super-block: 64-code chunk j / 2, low nibbles for
 * even j, high for odd. */
static uint8_t q4k_code(const uint8_t *blk, int j, int l) {
    uint8_t byte = blk[16 + 32 * (j / 2) + l];
    return (uint8_t)(j % 2 ? byte >> 4 : byte & 15);
}

/* Super-block sb of the 16 rows of group g into its place in the group at dst. */
static void pack_kq_super_block(const cpu_mat *W, uint64_t g, size_t sb, uint8_t *dst) {
    const size_t nsb = (size_t)W->cols / 256;
    uint8_t *head = dst + sb * CPU_LANES_KQ_SB_BYTES;
    for (uint64_t i = 0; i < CPU_LANES_ROWS; i++) {
        uint64_t r = g * CPU_LANES_ROWS + i;
        if (r >= W->rows) r = W->rows - 1;
        const uint8_t *blk = (const uint8_t *)W->data + (r * nsb + sb) * 144;
        memcpy(head + 2 * i, blk, 2);
        memcpy(head + 32 + 2 * i, blk + 2, 2);
        for (int k = 0; k < 3; k++) memcpy(head + 64 * (k + 1) + 4 * i, blk + 4 + 4 * k, 4);
        for (int j = 0; j < 8; j++) {
            uint8_t code[32];
            for (int l = 0; l < 32; l++) code[l] = q4k_code(blk, j, l);
            put_nibble_pairs(code, i, dst + cpu_lanes_kq_codes_off(8 * sb + (size_t)j));
        }
    }
}

/* Code e (0..255, 6 bits) of a q6_k super-block (ql[128], qh[64], scales[16], f16 d): in each
 * half of 128, its quarter q = r / 32 takes the low (q < 2) or high nibble of ql[64h + 32(q & 1)
 * + l] and bits 2q..2q+1 of qh[32h + l]. */
static uint8_t q6k_code(const uint8_t *blk, int e) {
    int h = e / 128, q = e % 128 / 32, l = e % 32;
    uint8_t lo = blk[64 * h + 32 * (q & 1) + l];
    lo = (uint8_t)(q < 2 ? lo & 15 : lo >> 4);
    return (uint8_t)(lo | ((blk[128 + 32 * h + l] >> (2 * q)) & 3) << 4);
}

/* Super-block sb of the 16 rows of group g (q6_k) into its place in the group at dst. */
static void pack_q6_super_block(const cpu_mat *W, uint64_t g, size_t sb, uint8_t *dst) {
    const size_t nsb = (size_t)W->cols / 256;
    uint8_t *head = dst + sb * CPU_LANES_Q6_SB_BYTES;
    memset(head + 32, 0, 32);
    for (uint64_t i = 0; i < CPU_LANES_ROWS; i++) {
        uint64_t r = g * CPU_LANES_ROWS + i;
        if (r >= W->rows) r = W->rows - 1;
        const uint8_t *blk = (const uint8_t *)W->data + (r * nsb + sb) * 210;
        memcpy(head + 2 * i, blk + 208, 2);
        for (int j = 0; j < 16; j++)
            dst[cpu_lanes_q6_scales_off(16 * sb + (size_t)j) + i] = blk[192 + j];
        for (int p = 0; p < 8; p++) {
            uint8_t *codes = dst + cpu_lanes_q6_codes_off(8 * sb + (size_t)p), code[32];
            for (int l = 0; l < 32; l++) code[l] = q6k_code(blk, 32 * p + l);
            put_nibble_pairs(code, i, codes);
            for (int h = 0; h < 2; h++)
                for (int c = 0; c < 4; c++) {
                    uint8_t bits = 0;
                    for (int k = 0; k < 4; k++)
                        bits |= (uint8_t)((code[16 * h + 4 * k + c] >> 4) << 2 * k);
                    codes[256 + 64 * h + 4 * i + c] = bits;
                }
        }
    }
}

/* Group g of W into dst (the group's first pair); a missing last block of a pair zero. */
static void pack_group(const cpu_mat *W, uint64_t g, uint8_t *dst) {
    if (W->type == CLARA_TYPE_Q4_K || W->type == CLARA_TYPE_Q6_K) {
        for (size_t sb = 0; sb < (size_t)W->cols / 256; sb++)
            if (W->type == CLARA_TYPE_Q4_K)
                pack_kq_super_block(W, g, sb, dst);
            else
                pack_q6_super_block(W, g, sb, dst);
        return;
    }
    const size_t nb = (size_t)W->cols / 32;
    for (size_t b = 0; b < nb; b++) pack_block(W, g, b, dst);
    if (nb % 2) { /* block nb, the missing one */
        memset(dst + cpu_lanes_scales_off(W->type, nb), 0, 32);
        memset(dst + cpu_lanes_codes_off(W->type, nb), 0, cpu_lanes_code_bytes(W->type));
    }
}

typedef struct {
    const cpu_mat *W;
    uint8_t *dst;
    uint64_t groups, per_task;
} pack_job;

static void pack_task(void *arg, size_t task, int thread) {
    (void)thread;
    const pack_job *j = arg;
    size_t group_bytes = cpu_lanes_group_bytes(j->W);
    uint64_t g1 = (task + 1) * j->per_task < j->groups ? (task + 1) * j->per_task : j->groups;
    for (uint64_t g = task * j->per_task; g < g1; g++)
        pack_group(j->W, g, j->dst + g * group_bytes);
}

void cpu_lanes_pack(const cpu_mat *W, uint8_t *dst, clara_pool *pool) {
    pack_job j = {W, dst, (W->rows + CPU_LANES_ROWS - 1) / CPU_LANES_ROWS, 64};
    size_t tasks = (size_t)((j.groups + j.per_task - 1) / j.per_task);
    if (pool) {
        clara_pool_run(pool, tasks, pack_task, &j);
    } else {
        for (size_t t = 0; t < tasks; t++) pack_task(&j, t, 0);
    }
}
