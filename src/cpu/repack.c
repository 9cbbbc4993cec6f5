/* repack.c - q4_0 / q8_0 matrices into the decode kernels' group order (repack.h). */
#include "cpu/repack.h"

#include <string.h>

bool cpu_lanes_type(clara_type t) {
    return t == CLARA_TYPE_Q4_0 || t == CLARA_TYPE_Q8_0;
}

size_t cpu_lanes_group_bytes(const cpu_mat *W) {
    return (size_t)(W->cols / 32 + 1) / 2 * cpu_lanes_pair_bytes(W->type);
}

size_t cpu_lanes_bytes(const cpu_mat *W) {
    if (!cpu_lanes_type(W->type) || W->cols % 32 || W->rows == 0) return 0;
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

/* Group g of W into dst (the group's first pair); a missing last block of a pair zero. */
static void pack_group(const cpu_mat *W, uint64_t g, uint8_t *dst) {
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
